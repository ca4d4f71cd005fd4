# Sourced by the benchmarks/gpu_*.sh scripts (run from the repository root): `gpu_prologue NAME`.
# Makes $OUT and $WORK absolute (WORK defaults to a fresh temporary folder), starts $OUT/train_log.txt, defines
# `log MESSAGE` (timestamped, "[NAME hh:mm:ss]", to stdout and the log) and logs the work folder and the GPU.
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
