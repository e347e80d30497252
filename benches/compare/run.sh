#!/usr/bin/env bash
# Side-by-side comparison of cellarrow with other single-cell loaders.
#
#   benches/compare/run.sh [--quick] [--setup-only] [harness options...]
#
# Creates (or reuses) the harness venvs under ~/.cache/cellarrow, keyed by a hash of the
# pinned requirements, builds the cellarrow CLI and Python package in release mode, generates
# the synthetic cohorts (cached in ~/.cache/cellarrow/bench-data) and runs harness.py. Full mode writes docs/benchmarks.md.
#
# Environment: PY311, PY312 (interpreters), CELLARROW_CACHE (default ~/.cache/cellarrow),
# CARGO_TARGET_DIR_BENCH (release target dir, default $CELLARROW_CACHE/target-bench-sql).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CACHE="${CELLARROW_CACHE:-$HOME/.cache/cellarrow}"
PY311="${PY311:-$(command -v python3.11 || echo /root/.pyenv/versions/3.11.7/bin/python)}"
PY312="${PY312:-/root/.pyenv/versions/3.12.1/bin/python}"
mkdir -p "$CACHE"

SETUP_ONLY=0
ARGS=()
for a in "$@"; do
  case "$a" in
    --setup-only) SETUP_ONLY=1 ;;
    *) ARGS+=("$a") ;;
  esac
done

log() { echo "[compare] $*" >&2; }

hash_of() { cat "$@" | sha256sum | cut -c1-12; }

# make_venv DIR PYTHON REQUIREMENTS: creates DIR once (marked complete by DIR/.complete).
make_venv() {
  local dir="$1" py="$2" req="$3"
  if [[ -f "$dir/.complete" ]]; then return 0; fi
  log "creating $dir from $req ($("$py" --version 2>&1))"
  [[ -x "$dir/bin/python" ]] || "$py" -m venv "$dir"
  "$dir/bin/python" -m pip install --quiet --upgrade pip 2>&1 | tail -1 || true
  if ! "$dir/bin/python" -m pip install -r "$req" >"$dir/install.log" 2>&1; then
    grep -E '^ERROR' "$dir/install.log" | head -3 >&2 || tail -5 "$dir/install.log" >&2
    return 1
  fi
  touch "$dir/.complete"
}

# install_optional DIR FILE: installs each pinned line on its own; a failure leaves
# DIR/optional/NAME.error with the pip error line, read by the harness for the table.
install_optional() {
  local dir="$1" file="$2"
  mkdir -p "$dir/optional"
  grep -vE '^\s*(#|$)' "$file" | while read -r spec; do
    local name="${spec%%=*}"
    [[ -f "$dir/optional/$name.ok" || -f "$dir/optional/$name.error" ]] && continue
    log "installing optional $spec"
    if "$dir/bin/python" -m pip install "$spec" >"$dir/optional/$name.log" 2>&1; then
      touch "$dir/optional/$name.ok"
    else
      (grep -E '^ERROR' "$dir/optional/$name.log" | head -1 || tail -1 "$dir/optional/$name.log") >"$dir/optional/$name.error"
      log "optional $spec failed: $(cat "$dir/optional/$name.error")"
    fi
  done
}

VENV="$CACHE/compare-venv-$(hash_of "$HERE/requirements.txt" "$HERE/requirements-optional.txt")"
VENV312="$CACHE/compare-venv-py312-$(hash_of "$HERE/requirements-py312.txt")"

make_venv "$VENV" "$PY311" "$HERE/requirements.txt"
install_optional "$VENV" "$HERE/requirements-optional.txt"
PY312_ARG=()
if [[ -x "$PY312" ]] && make_venv "$VENV312" "$PY312" "$HERE/requirements-py312.txt"; then
  PY312_ARG=(--py312 "$VENV312/bin/python")
  rm -f "$CACHE/compare-py312.error"
else
  mkdir -p "$CACHE"
  echo "no Python 3.12 venv: $PY312 missing or its install failed (see $VENV312/install.log)" >"$CACHE/compare-py312.error"
  PY312_ARG=(--py312-error "$CACHE/compare-py312.error")
fi

# The cellarrow CLI and Python package, release, in one target dir so that they share the
# dependencies' builds (DataFusion takes ~25 min on 2 cores the first time).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR_BENCH:-$CACHE/target-bench-sql}"
stamp="$VENV/cellarrow-pkg.stamp"
rev="$(cd "$ROOT" && git rev-parse HEAD 2>/dev/null || echo none)$(cd "$ROOT" && git status --porcelain python src | sha256sum | cut -c1-8)"
if [[ "$(cat "$stamp" 2>/dev/null)" != "$rev" ]]; then
  log "building the cellarrow Python package (release) from $ROOT/python"
  "$VENV/bin/python" -m pip install --quiet "maturin>=1.5,<2"
  wheels="$CACHE/compare-wheels"
  rm -rf "$wheels"
  (cd "$ROOT" && "$VENV/bin/maturin" build --quiet --release -m python/Cargo.toml -i "$VENV/bin/python" -o "$wheels")
  "$VENV/bin/python" -m pip install --quiet --force-reinstall --no-deps "$wheels"/cellarrow-*.whl
  echo "$rev" >"$stamp"
fi
# --workspace resolves the dependencies' features as for the extension (pyo3-arrow adds
# arrow's C data interface), so the CLI reuses the extension's build instead of a second one.
log "building the cellarrow CLI (release)"
(cd "$ROOT" && cargo build --quiet --release --workspace --bin cellarrow)
BIN="$CARGO_TARGET_DIR/release/cellarrow"

if [[ "$SETUP_ONLY" == 1 ]]; then log "setup done: $VENV"; exit 0; fi

DOC=()
case " ${ARGS[*]-} " in
  *" --quick "*) ;;
  *) DOC=(--doc "$ROOT/docs/benchmarks.md") ;;
esac

exec "$VENV/bin/python" "$HERE/harness.py" --bin "$BIN" --data "$CACHE/bench-data" \
  --work "$CACHE/compare-work" --root "$ROOT" "${PY312_ARG[@]}" ${DOC[@]+"${DOC[@]}"} ${ARGS[@]+"${ARGS[@]}"}
