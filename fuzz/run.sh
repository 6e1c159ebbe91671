#!/usr/bin/env bash
# Run fuzz targets the way fuzz/README.md's table was made: at most 1,000,000 executions or
# --minutes each (whichever comes first), 1 s and 512 MiB per allocation (the RSS limit sits
# higher: AddressSanitizer alone holds ~260 MiB and its quarantine grows), the committed seeds and
# the target's dictionary, one libFuzzer process per target, --jobs targets at a time.
# The last line of each log (fuzz/logs/<target>.log) gives executions and coverage.
#
#   fuzz/run.sh [--minutes M] [--jobs N] [TARGET...]     # default: every target, 30 min, 2
set -euo pipefail
cd "$(dirname "$0")"

minutes=30
jobs=2
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
  --minutes) minutes=$2; shift 2 ;;
  --jobs) jobs=$2; shift 2 ;;
  -*) echo "fuzz/run.sh: unknown option '$1' (--minutes M, --jobs N)" >&2; exit 2 ;;
  *) targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)

dict_of() {
  case "$1" in
  onnx_model | onnx_graph) echo dict/onnx.dict ;;
  edge_config) echo dict/toml.dict ;;
  card_json) echo dict/card.dict ;;
  esac
}

# The embeddings target needs the trainer crate (burn); the others build without it.
features=()
[[ " ${targets[*]} " == *" embeddings "* ]] && features=(--features trainer)
cargo +nightly fuzz build -O --debug-assertions "${features[@]}"
mkdir -p logs
run_one() {
  local target=$1 dict
  dict=$(dict_of "$target")
  mkdir -p "corpus/$target"
  # The working corpus grows in target/; the committed seeds stay as they are.
  local work="target/corpus/$target"
  mkdir -p "$work"
  cargo +nightly fuzz run -O --debug-assertions $features "$target" "$work" "corpus/$target" -- \
    -runs=1000000 -max_total_time=$((minutes * 60)) -timeout=1 -malloc_limit_mb=512 -rss_limit_mb=1536 \
    -max_len=262144 -print_final_stats=1 ${dict:+-dict=$dict} \
    >"logs/$target.log" 2>&1 && echo "$target: done" || echo "$target: FOUND SOMETHING (see fuzz/logs/$target.log and fuzz/artifacts/$target)"
  grep -E "^stat::number_of_executed_units|^#[0-9]+.*(DONE|cov)" "logs/$target.log" | tail -2
}
export -f run_one dict_of
export minutes
features="${features[*]}"
export features
printf '%s\n' "${targets[@]}" | xargs -P "$jobs" -I{} bash -c 'run_one {}'
