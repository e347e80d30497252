#!/usr/bin/env bash
# The whole test suite: Rust unit, integration and doc tests, then the Python tests.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"

say "cargo test (all targets and doc tests)"
cargo test --all-targets --no-fail-fast 2>&1
cargo test --doc 2>&1

say "building the cellarrow binary for the Python tests"
cargo build --bin cellarrow
export CELLARROW_BIN="$CARGO_TARGET_DIR/debug/cellarrow"

say "pytest"
set +e
"$PY" -m pytest -q tests/python
rc=$?
set -e
# Exit 5 means no test was collected: that is a failure of the suite too.
exit $rc
