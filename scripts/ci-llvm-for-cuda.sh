#!/usr/bin/env bash
# CI only: let `cargo build -p scion-trainer --features cuda` build offline.
#
# burn's CUDA backend pulls cubecl-llvm, whose build dependency tracel-llvm-bundler downloads
# an LLVM 23.1 bundle from GitHub. CI reaches only the package registries, so this stands
# Debian's LLVM 22 in for the bundle: the bundler skips its download when the bundle's folder
# holds `.tracel-llvm-installed`, and then asks that folder's `bin/llvm-config` for the link
# flags. Ours forwards to Debian's and turns the absolute `libz3.so` path Debian's prints into
# `-lz3` (the bundler would otherwise pass `-llibz3`). Users with internet get the real bundle
# and need none of this. Idempotent: a second run changes nothing.
set -euo pipefail

say() { printf 'ci-llvm: %s\n' "$*" >&2; }

LLVM=22
BUNDLE="tracel-llvm-23.1.0-4" # tracel-llvm-bundler 23.1.0-4, as in Cargo.lock
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

missing=()
for pkg in "llvm-$LLVM-dev" "libpolly-$LLVM-dev" libzstd-dev libz3-dev libxml2-dev; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

real="/usr/lib/llvm-$LLVM/bin/llvm-config"
[ -x "$real" ] || { say "$real is missing after installing llvm-$LLVM-dev"; exit 1; }

dir="${XDG_DATA_HOME:-$HOME/.local/share}/tracel/$BUNDLE"
mkdir -p "$dir/bin"
cat >"$dir/bin/llvm-config.next" <<WRAPPER
#!/bin/sh
# Written by scion's scripts/ci-llvm-for-cuda.sh: Debian's LLVM $LLVM standing in for $BUNDLE.
"$real" "\$@" | sed -e 's|[^ ]*/lib\([A-Za-z0-9_+-]*\)\.so\b|-l\1|g'
WRAPPER
chmod +x "$dir/bin/llvm-config.next"
mv "$dir/bin/llvm-config.next" "$dir/bin/llvm-config"
touch "$dir/.tracel-llvm-installed"
say "llvm-config for $BUNDLE: $dir/bin/llvm-config -> $real ($("$dir/bin/llvm-config" --version))"
"$dir/bin/llvm-config" --link-static --system-libs >&2
