#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time and reports executions and findings.
#
#   scripts/fuzz.sh [--seconds N] [TARGET...]     (default: 60 s each, all targets)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`); on a stable toolchain the sanitizer flags are
# enabled with RUSTC_BOOTSTRAP=1. Crashing inputs land in fuzz/artifacts/TARGET/; copy them to
# fuzz/regressions/TARGET/ so that `cargo test --test it` replays them forever.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECONDS_EACH=60
TARGETS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) SECONDS_EACH="$2"; shift 2 ;;
        --seconds=*) SECONDS_EACH="${1#*=}"; shift ;;
        -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
        *) TARGETS+=("$1"); shift ;;
    esac
done
cd "$ROOT/fuzz"
if [ ${#TARGETS[@]} -eq 0 ]; then
    mapfile -t TARGETS < <(cargo fuzz list)
fi
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR_FUZZ:-$HOME/.cache/cellarrow/target-fuzz}"
cargo fuzz build -O >&2

status=0
printf '%-14s %10s %10s %8s  %s\n' target seconds execs exec/s findings
for t in "${TARGETS[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    # Seeds (checked in) first, then the working corpus.
    seeds=()
    [ -d "seeds/$t" ] && seeds+=("seeds/$t")
    log="$(mktemp)"
    before=$(find "artifacts/$t" -type f | wc -l)
    set +e
    cargo fuzz run -O "$t" "corpus/$t" "${seeds[@]}" -- \
        -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -timeout=10 \
        -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    after=$(find "artifacts/$t" -type f | wc -l)
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    found=$((after - before))
    printf '%-14s %10s %10s %8s  %s\n' "$t" "$SECONDS_EACH" "$execs" "$rate" "$found"
    if [ $rc -ne 0 ] || [ $found -gt 0 ]; then
        status=1
        echo "--- $t: exit $rc; new artifacts:" >&2
        find "artifacts/$t" -type f -newer "$log" >&2 || true
        grep -m5 -E 'panicked at|ERROR: AddressSanitizer|ERROR: libFuzzer|SUMMARY' "$log" >&2 || true
    fi
    rm -f "$log"
done
exit $status
