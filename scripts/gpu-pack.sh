#!/usr/bin/env bash
# Pack what scripts/gpu-check.sh needs on a GPU machine that has the NVIDIA driver, CUDA and
# Python but no Rust toolchain and no registry: the `scion` binary built with `--features
# cuda` (xz), ONNX Runtime's CPU library (xz), the EfficientNet-Lite0 backbone (xz) and a
# small Fashion-MNIST set as PNGs. Run it here after the README's first block (it needs
# data/fmnist and models/efficientnet-lite0.onnx); it writes .gpu/ (ignored by git) and
# prints the call that runs the check there.
#
#   scripts/gpu-pack.sh [--per-class N] [--val N]    # defaults: 50 per class, 500 val
set -euo pipefail
cd "$(dirname "$0")/.."

per_class=50
val=500
while [ $# -gt 0 ]; do
  case "$1" in
  --per-class) per_class=$2; shift 2 ;;
  --val) val=$2; shift 2 ;;
  *) echo "gpu-pack: unknown argument '$1' (expected --per-class N or --val N)" >&2; exit 2 ;;
  esac
done
say() { printf 'gpu-pack: %s\n' "$*" >&2; }
for need in models/efficientnet-lite0.onnx data/fmnist/train data/fmnist/val; do
  [ -e "$need" ] || { say "$need is missing: run the README's first block first"; exit 1; }
done
ort=$(ls assets/onnxruntime/libonnxruntime.so.* 2>/dev/null | head -1)
[ -n "$ort" ] || { say "assets/onnxruntime/libonnxruntime.so.* is missing: run scripts/setup.sh"; exit 1; }

# Offline, Debian's LLVM stands in for the bundle burn's CUDA backend downloads.
[ -e "${XDG_DATA_HOME:-$HOME/.local/share}/tracel/tracel-llvm-23.1.0-4/.tracel-llvm-installed" ] ||
  scripts/ci-llvm-for-cuda.sh
say "building scion with --features cuda (release)"
cargo build --release --locked -p scion-trainer --features cuda
bin=target/release/scion
if ldd "$bin" | grep -q "not found"; then
  say "$bin needs libraries this machine lacks:"; ldd "$bin" | grep "not found" >&2; exit 1
fi

rm -rf .gpu && mkdir -p .gpu
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >>.git/info/exclude
say "compressing (xz -6, all cores)"
# Without its debug info the binary is a fifth of the size.
strip -o .gpu/scion.stripped "$bin"
xz -T0 -6 -c .gpu/scion.stripped >.gpu/scion.xz &
xz -T0 -6 -c "$ort" >.gpu/libonnxruntime.so.xz &
xz -T0 -6 -c models/efficientnet-lite0.onnx >.gpu/efficientnet-lite0.onnx.xz &
wait
rm .gpu/scion.stripped
# The libraries the binary links that a plain Ubuntu image may lack travel beside it.
ldd "$bin" | awk '/=> \// {print $3}' | while read -r lib; do
  case "$(basename "$lib")" in
  libz3.so* | libxml2.so* | libicu*.so* | libzstd.so* | libLLVM*.so* | libPolly*.so*)
    xz -T0 -6 -c "$lib" >".gpu/lib-$(basename "$lib").xz" ;;
  esac
done

# The data set: the first N images of each class, and the first --val validation images
# spread over the classes (path order, so every pack holds the same images).
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
for split in train val; do
  for class_dir in data/fmnist/$split/*/; do
    class=$(basename "$class_dir")
    n=$per_class
    [ "$split" = val ] && n=$((val / $(ls -d data/fmnist/val/*/ | wc -l)))
    mkdir -p "$stage/fmnist/$split/$class"
    find "$class_dir" -maxdepth 1 -type f -name '*.png' | sort | head -n "$n" |
      xargs -r cp -t "$stage/fmnist/$split/$class"
  done
done
tar -C "$stage" -cf .gpu/fmnist.tar fmnist
cp scripts/gpu-check.sh .gpu/
git rev-parse --short HEAD >.gpu/commit 2>/dev/null || true

size=$(du -cb .gpu/* | tail -1 | cut -f1)
tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
say "$(printf '.gpu/ is %.1f MiB, the tracked tree %.1f MiB (64 MiB travel in all)' \
  "$(echo "$size / 1048576" | bc -l)" "$(echo "$tree / 1048576" | bc -l)")"
ls -l .gpu >&2
if [ $((size + tree)) -gt $((64 * 1048576)) ]; then
  say "too large to travel: use fewer images (--per-class, --val)"; exit 1
fi
cat <<'EOF'
Run it on the GPU machine with the device tool:
  run(command = "bash .gpu/gpu-check.sh", carry = [".gpu"], timeout_s = 540)
EOF
