#!/usr/bin/env bash
# The service under load and attack, on loopback (issue 19; the checks are listed in
# bench/attack.py):
#
#   bench/attack.sh [SECONDS] [CLIENTS]
#
# 50 clients for 120 s by default, against `scion-edge serve` with EfficientNet-Lite0 on
# ONNX Runtime and a live 10 fps test source. Prints each kind of request with its answers,
# fps idle and under load, memory, threads and descriptors before and after, and one line
# per check; exits 1 when a check fails. Needs scripts/setup.sh to have run; takes about
# 3 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
edge=$root/target/release/scion-edge
[ -x "$edge" ] || { echo "run scripts/setup.sh first" >&2; exit 1; }
export ORT_DYLIB_PATH=$(ls "$root"/assets/onnxruntime/libonnxruntime.so.* | head -n1)
# glibc's malloc set as the systemd unit (edge/dist/scion-edge.service) sets it; with its
# defaults memory creeps under this load and the "memory levels off" check fails.
export MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=262144
exec python3 bench/attack.py --edge "$edge" --model "$root/models/efficientnet-lite0.onnx" \
  --photos "$root/assets/photos" --work "$root/bench/.data/attack" \
  --seconds "${1:-120}" --clients "${2:-50}"
