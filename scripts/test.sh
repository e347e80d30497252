#!/usr/bin/env bash
# The whole test suite: Rust unit, integration and doc tests, then the Python tests.
# Every stage runs even if an earlier one failed; the exit status is non-zero if any failed.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
# Loaders map obs columns from a cache (src/corpus/columns.rs): the tests fill one of their own.
CELLARROW_CACHE="$(mktemp -d -t cellarrow-test-cache.XXXXXX)"
export CELLARROW_CACHE
trap 'rm -rf "$CELLARROW_CACHE"' EXIT
failed=()
stage() {
    local name="$1"; shift
    say "$name"
    if ! "$@"; then
        failed+=("$name")
    fi
}

stage "cargo test (library, binary and integration tests)" cargo test --lib --bins --tests --no-fail-fast
stage "cargo test --doc" cargo test --doc
stage "benches compile" cargo test --benches --no-run --quiet
stage "cellarrow builds without the sql feature" cargo check --lib --no-default-features --quiet

stage "building the cellarrow binary" cargo build --bin cellarrow
export CELLARROW_BIN="$CARGO_TARGET_DIR/debug/cellarrow"

# The Python package (PyO3 extension, dev profile, same target dir) installed into the venv.
stage "python package (maturin develop)" "$PY" -m maturin develop --quiet -m python/Cargo.toml

# pytest exits 5 when it collected nothing: that fails the stage like any other non-zero code.
stage "pytest" "$PY" -m pytest -q tests/python tests/python_pkg

if [ ${#failed[@]} -gt 0 ]; then
    printf '\nFAILED stages: %s\n' "${failed[*]}" >&2
    exit 1
fi
printf '\nall stages passed\n' >&2
