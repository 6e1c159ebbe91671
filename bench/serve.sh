#!/usr/bin/env bash
# Benchmark of `scion-edge serve` (issue 5's latency target), measured in this script:
#
#   bench/serve.sh [FRAMES] [ENGINE]
#
# The live GStreamer test source at 30 fps, 640x480, EfficientNet-Lite0 on ONNX Runtime
# (or ENGINE, e.g. tract) on this machine's cores. From the service's own JSON lines:
# frame latency (arrival in scion -> result) median and p99, against the median of one
# inference in the same run (the goal: p99 under 1.5x one inference, no queue growth);
# the dropped-frame rate; and the service's resident memory while serving (VmRSS after
# the run's first half, VmHWM at its end). Twice: the engine's default threads (every core),
# then one core left to capture; then the idle memory.
# Needs scripts/setup.sh to have run.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
edge=$root/target/release/scion-edge
frames=${1:-300}
engine=${2:-ort-cpu}
work=$root/bench/.data/serve
export ORT_DYLIB_PATH=$(ls "$root"/assets/onnxruntime/libonnxruntime.so.* | head -n1)
[ -x "$edge" ] || { echo "run scripts/setup.sh first" >&2; exit 1; }
mkdir -p "$work"
model=$root/models/efficientnet-lite0.onnx
live='gst://videotestsrc pattern=ball is-live=true ! video/x-raw,width=640,height=480,framerate=30/1'

# One run at 30 fps with the given engine threads (0: the engine's default).
run_case() {
  local threads=$1 out=$work/frames-$1.jsonl
  rm -f "$out"; : > "$out"
  "$edge" -q serve --model "$model" --engine "$engine" --threads "$threads" --source "$live" \
    --listen 127.0.0.1:0 --max-frames "$frames" --output "$out" &
  local pid=$!
  while [ "$(wc -l < "$out" 2>/dev/null || echo 0)" -lt $((frames / 2)) ]; do sleep 0.2; done
  local rss hwm
  rss=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
  hwm=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
  wait $pid
  python3 - "$out" "$rss" "$hwm" "$engine" "$threads" <<'PY'
import json, sys
path, rss, hwm, engine, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
frames = [r for r in map(json.loads, open(path)) if r["type"] == "frame"]
frames = frames[10:]  # the first frames include the engine's warm-up
total = sorted(f["latency"]["total_ms"] for f in frames)
infer = sorted(f["latency"]["inference_ms"] for f in frames)
p = lambda v, q: v[min(len(v) - 1, round(q * (len(v) - 1)))]
dropped = sum(f["dropped"] for f in frames)
print(f"engine {engine}, threads {threads} ({'the engine default, every core' if threads == '0' else 'one core left to capture'}), {len(frames)} frames measured")
print(f"  latency median {p(total, .5):.1f} ms, p99 {p(total, .99):.1f} ms; "
      f"one inference median {p(infer, .5):.1f} ms, p99 {p(infer, .99):.1f} ms")
print(f"  p99 latency / median inference: {p(total, .99) / p(infer, .5):.2f} (goal < 1.5)")
over = sorted(f["latency"]["total_ms"] - f["latency"]["inference_ms"] for f in frames)
print(f"  the service's own share (latency minus inference): median {p(over, .5):.2f} ms, p99 {p(over, .99):.2f} ms")
print(f"  dropped frames: {dropped} of {dropped + len(frames)} "
      f"({100 * dropped / (dropped + len(frames)):.1f}%: frames that arrived while the model was busy)")
print(f"  resident memory while serving: {rss / 1024:.0f} MiB (peak {hwm / 1024:.0f} MiB)")
PY
}

# Idle: the model loaded, the HTTP API up, a 1 fps source; VmRSS after 5 s.
idle_rss() {
  "$edge" -q serve --model "$model" --engine "$engine" --listen 127.0.0.1:0 --output /dev/null \
    --source 'gst://videotestsrc pattern=ball is-live=true ! video/x-raw,width=640,height=480,framerate=1/1' &
  local pid=$!
  sleep 5
  echo "idle (1 fps, HTTP API up): resident memory $(awk '/VmRSS/ {printf "%.0f", $2 / 1024}' /proc/$pid/status) MiB"
  kill -TERM $pid; wait $pid
}

cores=$(nproc)
run_case 0
run_case $((cores > 1 ? cores - 1 : 1))
idle_rss
