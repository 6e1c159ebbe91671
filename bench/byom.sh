#!/usr/bin/env bash
# Benchmark of bringing your own model (issue 15), every figure measured in this script:
#
#   bench/byom.sh
#
# 1. Import: `scion-edge import onnx` of a full-width ResNet-50 at 224 px (25.6 M weights,
#    seeded random; both export styles): wall time and peak RSS, normalisation and the
#    four engine checks included.
# 2. Training speed at 224 px for ResNet-18 and MobileNet V2 (full width, torch style):
#    the engine's forward-only images/s (head-only feature extraction on ONNX Runtime,
#    uncached) against forward + backward images/s of `--unfreeze last:2` in the
#    interpreter, on 200 Fashion-MNIST images; the ratio is what fine-tuning costs.
# Needs scripts/setup.sh to have run.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
scion=$root/target/release/scion
edge=$root/target/release/scion-edge
work=$root/bench/.data/byom
export ORT_DYLIB_PATH=$(ls "$root"/assets/onnxruntime/libonnxruntime.so.* | head -n1)
[ -x "$scion" ] || { echo "run scripts/setup.sh first" >&2; exit 1; }
command -v /usr/bin/time >/dev/null || { echo "needs /usr/bin/time (apt-get install time)" >&2; exit 1; }
mkdir -p "$work"
data=$work/fmnist
if [ ! -d "$data/val" ]; then
  "$scion" data import-idx --preset fashion-mnist --per-class 20 --out "$data/train" >/dev/null
  "$scion" data import-idx --preset fashion-mnist --set test --first 100 --out "$data/val" >/dev/null
fi
measure() { # label, command...: prints wall seconds and peak RSS
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$work/time.txt" "$@" >"$work/out.txt" 2>&1 || { cat "$work/out.txt"; exit 1; }
  read -r wall kib <"$work/time.txt"
  printf '%-34s %7.2f s  %6d MiB\n' "$label" "$wall" $((kib / 1024))
}

echo "== 1. import onnx of ResNet-50 (224 px, 25.6 M weights)"
for style in torch caffe2; do
  src=$work/resnet50-$style.src.onnx
  [ -s "$src" ] || "$edge" import zoo:resnet50 --style "$style" --out "$src" 2>/dev/null >/dev/null
  preset=torchvision; [ "$style" = caffe2 ] && preset=caffe
  measure "resnet50 ($style style)" "$edge" import onnx "$src" --out "$work/resnet50-$style.onnx" --preset "$preset"
  grep -E "check|changed" "$work/out.txt" | sed 's/^/    /'
done

echo "== 2. images/s at 224 px: forward only (engine) vs --unfreeze last:2 forward + backward"
printf '%-16s %18s %22s %8s\n' model "forward (ort-cpu)" "fwd+bwd (last:2)" ratio
for arch in resnet18 mobilenet-v2; do
  src=$work/$arch.src.onnx
  [ -s "$src" ] || "$edge" import zoo:$arch --classes 1000 --out "$src" 2>/dev/null >/dev/null
  model=$work/$arch.onnx
  "$edge" import onnx "$src" --out "$model" >/dev/null
  rm -rf "$work/cache"
  "$scion" train --backbone "$model" --data "$data" --out "$work/$arch.head.onnx" --epochs 1 \
    --cache "$work/cache" >"$work/head.txt" 2>&1
  forward=$(grep -m1 -o 'engine [0-9.]* images/s' "$work/head.txt" | awk '{print $2}')
  "$scion" train --backbone "$model" --data "$data" --out "$work/$arch.ft.onnx" --epochs 1 \
    --unfreeze last:2 --cache "$work/cache" >"$work/ft.txt" 2>&1
  tuned=$(python3 -c "import json;print(round(json.load(open('$work/$arch.ft.report/run.json'))['train_images_per_second'],1))")
  printf '%-16s %18s %22s %8s\n' "$arch" "$forward" "$tuned" \
    "$(python3 -c "print(f'{$tuned / $forward:.2f}x')")"
done
