#!/usr/bin/env bash
# The GPU check: does `scion train --device cuda` give the CPU's accuracy, and how fast?
#
# Runs on a GPU machine from the pack scripts/gpu-pack.sh makes (.gpu/: the CUDA-enabled
# binary and what it needs, no Rust toolchain or registry wanted there):
#
#   bash .gpu/gpu-check.sh            # from the repository root, .gpu/ carried along
#
# It trains the same model four times on the same machine: a head alone (`--head mlp:256`,
# so burn trains it; a linear head is solved on the CPU either way) and `--unfreeze last:2`,
# each on `--device cpu` and `--device cuda`. It prints top-1 and images/s of each run and
# exits 1 when a CUDA run fails or its top-1 is more than --max-gap points (default 1) from
# the CPU's. Logs and gpu-check.json go to $OUT (the device tool's) or ./gpu-check-out.
set -euo pipefail

max_gap=1
budget=170 # seconds per training run; four runs must fit one 10-minute device call
while [ $# -gt 0 ]; do
  case "$1" in
  --max-gap) max_gap=$2; shift 2 ;;
  --budget) budget=$2; shift 2 ;;
  *) echo "gpu-check: unknown argument '$1' (expected --max-gap POINTS or --budget S)" >&2; exit 2 ;;
  esac
done
pack=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-$PWD/gpu-check-out}
work=${TMPDIR:-/tmp}/scion-gpu-check
rm -rf "$work" && mkdir -p "$work/lib" "$out"
say() { printf 'gpu-check: %s\n' "$*" | tee -a "$out/summary.txt" >&2; }

say "pack of commit $(cat "$pack/commit" 2>/dev/null || echo '?'); $(nproc) cores"
started=$(date +%s)
for f in "$pack"/*.xz; do
  name=$(basename "${f%.xz}")
  case "$name" in
  lib-*) xz -dc "$f" >"$work/lib/${name#lib-}" ;;
  *) xz -dc "$f" >"$work/$name" ;;
  esac
done
tar -xf "$pack/fmnist.tar" -C "$work"
chmod +x "$work/scion"
export LD_LIBRARY_PATH="$work/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export ORT_DYLIB_PATH="$work/libonnxruntime.so"
say "unpacked in $(($(date +%s) - started)) s"
if ! "$work/scion" --version >/dev/null; then
  say "the binary does not start here:"; ldd "$work/scion" | tee -a "$out/summary.txt" >&2; exit 1
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 |
  sed 's/^/gpu: /' | tee -a "$out/summary.txt" >&2 || true

failed=0
train() { # NAME DEVICE ARGS...
  local name=$1 device=$2
  shift 2
  say "train $name on $device: $*"
  local began rc=0
  began=$(date +%s)
  timeout "$budget" "$work/scion" train \
    --backbone "$work/efficientnet-lite0.onnx" --data "$work/fmnist" \
    --out "$work/$name-$device.onnx" --report "$work/$name-$device.report" \
    --cache "$work/cache-$device" --device "$device" --seed 0 "$@" \
    >"$out/$name-$device.log" 2>&1 || rc=$?
  say "  exit $rc after $(($(date +%s) - began)) s"
  if [ "$rc" -ne 0 ]; then
    tail -n 15 "$out/$name-$device.log" >&2
    failed=1
  fi
}
for device in cpu cuda; do
  train head "$device" --head mlp:256 --epochs 30
  train last2 "$device" --unfreeze last:2 --epochs 3
done

python3 - "$work" "$out" "$max_gap" <<'EOF' | tee -a "$out/summary.txt" || failed=1
import json, pathlib, sys
work, out, max_gap = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), float(sys.argv[3])
runs, bad = {}, []
for name in ("head", "last2"):
    for device in ("cpu", "cuda"):
        report = work / f"{name}-{device}.report" / "run.json"
        if report.exists():
            r = json.loads(report.read_text())
            runs[f"{name}-{device}"] = {k: r.get(k) for k in (
                "top1", "train_images", "val_images", "epochs", "feature_seconds",
                "fit_seconds", "train_images_per_second", "peak_rss_bytes")}
print(f"{'run':<12} {'top-1':>7} {'features s':>11} {'fit s':>8} {'train img/s':>12}")
for key, r in runs.items():
    print(f"{key:<12} {100 * r['top1']:6.1f}% {r['feature_seconds']:11.1f} "
          f"{r['fit_seconds']:8.1f} {r['train_images_per_second']:12.1f}")
for name in ("head", "last2"):
    cpu, cuda = runs.get(f"{name}-cpu"), runs.get(f"{name}-cuda")
    if not (cpu and cuda):
        bad.append(f"{name}: a run is missing")
        continue
    gap = 100 * abs(cpu["top1"] - cuda["top1"])
    speed = cuda["train_images_per_second"] / max(cpu["train_images_per_second"], 1e-9)
    print(f"{name}: CUDA top-1 {gap:.1f} points from the CPU's (at most {max_gap}); "
          f"training {speed:.1f}x the CPU's images/s")
    if gap > max_gap:
        bad.append(f"{name}: top-1 gap {gap:.1f} points")
(out / "gpu-check.json").write_text(json.dumps({"runs": runs, "failures": bad}, indent=2))
for b in bad:
    print(f"FAILED {b}")
sys.exit(1 if bad else 0)
EOF
say "done in $(($(date +%s) - started)) s: $([ "$failed" -eq 0 ] && echo passed || echo FAILED)"
exit "$failed"
