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
# the run's first half, VmHWM at its end).
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
out=$work/frames.jsonl
rm -f "$out"; : > "$out"
"$edge" -q serve --model "$root/models/efficientnet-lite0.onnx" --engine "$engine" \
  --source 'gst://videotestsrc pattern=ball is-live=true ! video/x-raw,width=640,height=480,framerate=30/1' \
  --max-frames "$frames" --output "$out" &
pid=$!
while [ "$(wc -l < "$out" 2>/dev/null || echo 0)" -lt $((frames / 2)) ]; do sleep 0.2; done
rss=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
hwm=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
wait $pid
python3 - "$out" "$rss" "$hwm" "$engine" <<'PY'
import json, statistics, sys
path, rss, hwm, engine = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
frames = [r for r in map(json.loads, open(path)) if r["type"] == "frame"]
frames = frames[10:]  # the first frames include the engine's warm-up
total = sorted(f["latency"]["total_ms"] for f in frames)
infer = sorted(f["latency"]["inference_ms"] for f in frames)
p = lambda v, q: v[min(len(v) - 1, round(q * (len(v) - 1)))]
dropped = sum(f["dropped"] for f in frames)
print(f"engine {engine}, {len(frames)} frames measured")
print(f"latency median {p(total, .5):.1f} ms, p99 {p(total, .99):.1f} ms; "
      f"one inference median {p(infer, .5):.1f} ms, p99 {p(infer, .99):.1f} ms")
print(f"p99 latency / median inference: {p(total, .99) / p(infer, .5):.2f} (goal < 1.5)")
print(f"dropped frames: {dropped} of {dropped + len(frames)} "
      f"({100 * dropped / (dropped + len(frames)):.1f}%: frames that arrived while the model was busy)")
print(f"resident memory while serving: {rss / 1024:.0f} MiB (peak {hwm / 1024:.0f} MiB)")
PY
