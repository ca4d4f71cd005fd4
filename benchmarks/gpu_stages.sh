# shellcheck shell=bash
# Sourced by the benchmarks/gpu_*.sh scripts that can split one run over chained device calls sharing a WORK
# folder (a warm device machine keeps its /tmp between calls that follow within ~30 s): gpu_dvr.sh, gpu_occluders.sh.
#   stages_init NAME "ALL STAGES": STAGES (environment) defaults to all of them; an unknown name exits 2.
#   has_stage STAGE: true when STAGES names it.
#   steps_done RUN: training steps in RUN's newest checkpoint, 0 without one.
#   knobs_differ MARKER KNOBS: true when MARKER exists and records other knobs than KNOBS (the caller refuses).
#   stage_record TSV FIRST LAST BUDGET WALL: appends one training stage (steps at start and end, budget and wall s).
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
