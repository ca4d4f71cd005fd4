# shellcheck shell=bash
# Sourced by the benchmarks/gpu_*.sh scripts that can split one run over chained device calls sharing a WORK
# folder (a warm device machine keeps its /tmp between calls that follow within ~30 s): gpu_dvr.sh, gpu_occluders.sh.
#   stages_init NAME "ALL STAGES": STAGES (environment) defaults to all of them; an unknown name exits 2.
#   has_stage STAGE: true when STAGES names it.
#   steps_done RUN: training steps in RUN's newest checkpoint, 0 without one.
#   knobs_differ MARKER KNOBS: true when MARKER exists and records other knobs than KNOBS (the caller refuses).
#   stage_record TSV FIRST LAST BUDGET WALL: appends one training stage (steps at start and end, budget and wall s).
#   train_stage_done RUN FIRST BUDGET START WHAT: after a training stage begun at SECONDS=START with FIRST steps
#     done: fails without a new checkpoint in RUN, else appends the stage to STAGES_TSV and logs it as WHAT.
#   data_stage MARKER KNOBS WHAT GENERATE: the data stage. Data of other knobs is refused; with `data` in STAGES,
#     GENERATE (a function of the caller) runs unless MARKER shows WORK holds the data already; then WORK must hold
#     data unless only the summary runs. Needs the caller's log and fail functions.
stages_init() {
  local name=$1 all=$2 stage
  STAGES=${STAGES:-$all}
  for stage in $STAGES; do
    case " $all " in
      *" $stage "*) ;;
      *) echo "$name: STAGES='$STAGES': unknown stage '$stage' (expected some of: $all)" >&2; exit 2 ;;
    esac
  done
}
has_stage() { case " $STAGES " in *" $1 "*) return 0 ;; *) return 1 ;; esac }
# The plugin trainer names a checkpoint after its last trained step, counted from 0 (step-N.ckpt holds N + 1 steps).
steps_done() {
  local newest
  newest=$(find "$1/nerfstudio_models" -maxdepth 1 -name 'step-*.ckpt' 2>/dev/null | sort | tail -n 1 || true)
  if [ -z "$newest" ]; then echo 0; return; fi
  newest=${newest##*/step-}
  echo $((10#${newest%.ckpt} + 1))
}
knobs_differ() { [ -f "$1" ] && [ "$(cat "$1")" != "$2" ]; }
stage_record() { printf '%s\t%s\t%s\t%s\n' "$2" "$3" "$4" "$5" >>"$1"; }
data_stage() {
  local marker=$1 knobs=$2 what=$3 generate=$4
  if knobs_differ "$marker" "$knobs"; then
    fail "$what was generated with '$(cat "$marker")', this call asks for '$knobs'; use another WORK"
  fi
  if has_stage data; then
    if [ -f "$marker" ]; then
      log "data: kept from an earlier call ($knobs)"
    else
      "$generate"
      echo "$knobs" >"$marker"  # written last: an interrupted generation is redone
    fi
  fi
  [ -f "$marker" ] || [ "$STAGES" = summary ] \
    || fail "$WORK holds no generated data: run the data stage first (a fresh device machine has an empty /tmp)"
}
train_stage_done() {
  local run=$1 first=$2 budget=$3 start=$4 what=$5 wall last
  wall=$((SECONDS - start))
  last=$(steps_done "$run")
  [ "$last" -gt "$first" ] || fail "train: no new checkpoint in $run/nerfstudio_models (see $LOG)"
  stage_record "$STAGES_TSV" "$first" "$last" "$budget" "$wall"
  log "$what steps $first -> $last ($((last - first)) steps) in $wall s wall (budget $budget s);" \
    "training stage $(wc -l <"$STAGES_TSV") of this run"
}
