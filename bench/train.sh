#!/usr/bin/env bash
# Benchmark of `scion train` (issue 3's targets), each figure against a baseline run in this
# same script:
#
#   bench/train.sh
#
# 1. Accuracy: Fashion-MNIST, 100 training images per class (1,000) and the first 1,000
#    images of the official test set as validation; frozen EfficientNet-Lite0 + linear head.
#    Baseline: scikit-learn's LogisticRegression on the *same cached features and split*,
#    read straight from scion's feature cache (Python in the bench only).
# 2. Feature cache: the same `scion train` run with a cold cache, then again warm
#    (end to end, parity checks included); prints both and the ratio.
# 3. Loader vs engine at 224 px on 2 threads: camera-size JPEGs (bench/.data, made by
#    bench/classify.sh's recipe) with augmented views, as `scion train` reports them.
# Needs scripts/setup.sh to have run. Installs the baseline's packages in bench/.venv.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
scion=$root/target/release/scion
backbone=$root/models/efficientnet-lite0.onnx
work=$root/bench/.data/train
venv=$root/bench/.venv
export ORT_DYLIB_PATH=$(ls "$root"/assets/onnxruntime/libonnxruntime.so.* | head -n1)
[ -x "$scion" ] && [ -s "$backbone" ] || { echo "run scripts/setup.sh first" >&2; exit 1; }
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import sklearn, PIL' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check onnxruntime==1.32.0 pillow numpy scikit-learn
fi
py=$venv/bin/python
mkdir -p "$work"

data=$work/fmnist
if [ ! -d "$data/val" ]; then
  "$scion" data import-idx --preset fashion-mnist --per-class 100 --out "$data/train"
  "$scion" data import-idx --preset fashion-mnist --set test --first 1000 --out "$data/val"
fi

timed() { # label, command...: runs it, prints its wall time, keeps its output in $work/<label>.log
  local label=$1; shift
  local t0=$(date +%s.%N)
  "$@" >"$work/$label.log" 2>&1 || { cat "$work/$label.log"; exit 1; }
  local t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc
}

echo "== 1+2. Fashion-MNIST 1000/1000, cold then warm feature cache"
rm -rf "$work/cache"
train=("$scion" train --backbone "$backbone" --data "$data" --cache "$work/cache" --threads 2)
cold=$(timed cold "${train[@]}" --out "$work/fmnist.onnx")
warm=$(timed warm "${train[@]}" --out "$work/fmnist.onnx")
# Warm features but a different head: the export's parity checks run again in full.
changed=$(timed changed "${train[@]}" --lr 0.002 --out "$work/fmnist-lr2.onnx")
grep -E "^(train|val|trained|parity on|validation)" "$work/cold.log"
printf 'cold cache: %.1f s   warm cache: %.1f s   speed-up: %.1fx\n' "$cold" "$warm" "$(echo "$cold / $warm" | bc -l)"
printf 'warm features, new head (parity re-checked on both engines): %.1f s\n' "$changed"

echo "== 1. the same cached features and split in scikit-learn's LogisticRegression"
"$py" - "$work/cache" "$data" "$work/fmnist.report/metrics.json" <<'PY'
import hashlib, json, os, struct, sys
import numpy as np
from sklearn.linear_model import LogisticRegression
cache, data, metrics = sys.argv[1:4]
# scion's feature cache: <key>/features.bin = "SCIONFC1", u32 dim, then [sha256][dim x f32].
feats = {}
for key in os.listdir(cache):
    if not os.path.exists(os.path.join(cache, key, "key.json")):
        continue  # e.g. the parity records
    with open(os.path.join(cache, key, "key.json")) as f:
        if json.load(f)["view"] != "eval":
            continue
    raw = open(os.path.join(cache, key, "features.bin"), "rb").read()
    assert raw[:8] == b"SCIONFC1"
    dim = struct.unpack("<I", raw[8:12])[0]
    rec = 32 + 4 * dim
    for i in range(12, len(raw) - rec + 1, rec):
        feats[raw[i:i + 32]] = np.frombuffer(raw[i + 32:i + rec], dtype="<f4")
def split(name):
    root = os.path.join(data, name)
    classes = sorted(os.listdir(root))
    X, y = [], []
    for c, cls in enumerate(classes):
        for f in sorted(os.listdir(os.path.join(root, cls))):
            h = hashlib.sha256(open(os.path.join(root, cls, f), "rb").read()).digest()
            X.append(feats[h]); y.append(c)
    return np.stack(X), np.array(y)
Xt, yt = split("train"); Xv, yv = split("val")
scion = json.load(open(metrics))["top1"]
best = 0.0
for C in (0.1, 0.3, 1.0, 3.0):
    acc = LogisticRegression(C=C, max_iter=3000).fit(Xt, yt).score(Xv, yv)
    best = max(best, acc)
    print(f"sklearn LogisticRegression C={C:<4}: top-1 {100 * acc:.1f}%")
print(f"scion linear head             : top-1 {100 * scion:.1f}%  (best sklearn {100 * best:.1f}%, difference {100 * (scion - best):+.1f} points)")
PY

echo "== 3. loader vs engine at 224 px, 2 threads, camera-size JPEGs with augmented views"
photos=$root/bench/.data
if ! ls "$photos"/*.jpg >/dev/null 2>&1; then
  echo "no camera-size JPEGs in bench/.data: run bench/classify.sh once to make them" >&2; exit 1
fi
jpegs=$work/jpegs
rm -rf "$jpegs" "$work/cache-jpeg"
mkdir -p "$jpegs/even" "$jpegs/odd"
i=0; for f in "$photos"/*.jpg; do ln -sf "$f" "$jpegs/$([ $((i % 2)) = 0 ] && echo even || echo odd)/"; i=$((i + 1)); done
"$scion" train --backbone "$backbone" --data "$jpegs" --out "$work/jpegs.onnx" --cache "$work/cache-jpeg" \
  --threads 2 --aug-views 2 --epochs 2 >"$work/loader.log" 2>&1 || { cat "$work/loader.log"; exit 1; }
grep -E "loader .* images/s" "$work/loader.log"
