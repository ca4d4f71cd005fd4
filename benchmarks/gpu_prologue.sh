# Sourced by the benchmarks/gpu_*.sh scripts (run from the repository root): `gpu_prologue NAME`.
# Makes $OUT and $WORK absolute (WORK defaults to a fresh temporary folder), starts $OUT/train_log.txt, defines
# `log MESSAGE` (timestamped, "[NAME hh:mm:ss]", to stdout and the log) and logs the work folder and the GPU.
# Also defines, on sourcing: `quiet` (a filter for the tools' output before it goes to the log: drops warnings,
# the source lines Python prints under them, carriage-return progress and blank lines) and `fail MESSAGE` (logs
# "error: MESSAGE" and exits 1; needs gpu_prologue's `log`).
quiet() { grep -v -E "Warning|warnings.warn|^ +(fx|cx|c2w|mask|self\._apply|@custom)" | tr '\r' '\n' | grep -v '^\s*$' || true; }
fail() { log "error: $*"; exit 1; }
gpu_prologue() {
  local name=$1
  mkdir -p "$OUT"
  OUT=$(cd "$OUT" && pwd)
  WORK=${WORK:-$(mktemp -d)}
  mkdir -p "$WORK"
  WORK=$(cd "$WORK" && pwd)
  LOG="$OUT/train_log.txt"
  : >"$LOG"
  eval "log() { echo \"[$name \$(date +%H:%M:%S)] \$*\" | tee -a \"\$LOG\"; }"
  log "work folder $WORK; $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo 'no GPU')"
}
