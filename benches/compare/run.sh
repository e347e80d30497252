#!/usr/bin/env bash
# Side-by-side comparison of cellarrow with other single-cell loaders.
#
#   benches/compare/run.sh [--quick] [--setup-only] [harness options...]
#
# Creates (or reuses) the harness venvs under ~/.cache/cellarrow, keyed by a hash of the
# pinned requirements, builds the cellarrow CLI in release mode (no `sql` feature) and the
# cellarrow Python package when python/ holds one, generates the synthetic cohorts (cached in
# ~/.cache/cellarrow/bench-data) and runs harness.py. Full mode writes docs/benchmarks.md.
#
# Environment: PY311, PY312 (interpreters), CELLARROW_CACHE (default ~/.cache/cellarrow),
# COMPARE_BUILD_PY=1 to build and use the cellarrow Python package (slow: default features).
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

# The cellarrow CLI, release, without the `sql` feature (DataFusion makes a release build slow).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR_BENCH:-$CACHE/target-bench}"
log "building the cellarrow CLI (release, --no-default-features)"
(cd "$ROOT" && cargo build --quiet --release --no-default-features --bin cellarrow)
BIN="$CARGO_TARGET_DIR/release/cellarrow"

# The cellarrow Python package. Its extension depends on the cellarrow crate with default
# features (DataFusion), a ~25 min release build on 2 cores, so it is built only when asked
# (COMPARE_BUILD_PY=1); otherwise the adapter reads the corpus with pyarrow memory-mapping
# (see tools/cellarrow.py), or uses a cellarrow package already installed in the venv.
if [[ "${COMPARE_BUILD_PY:-0}" == 1 && -f "$ROOT/python/pyproject.toml" ]]; then
  stamp="$VENV/cellarrow-pkg.stamp"
  rev="$(cd "$ROOT" && git rev-parse HEAD 2>/dev/null || echo none)"
  if [[ "$(cat "$stamp" 2>/dev/null)" != "$rev" ]]; then
    log "building the cellarrow Python package from $ROOT/python"
    if "$VENV/bin/python" -m pip install --quiet "maturin>=1.5,<2" >/dev/null 2>&1 &&
       (cd "$ROOT/python" && "$VENV/bin/python" -m pip install . >"$VENV/cellarrow-pkg.log" 2>&1); then
      echo "$rev" >"$stamp"
    else
      log "cellarrow Python package did not build (see $VENV/cellarrow-pkg.log); using pyarrow directly"
      "$VENV/bin/python" -m pip uninstall -y cellarrow >/dev/null 2>&1 || true
    fi
  fi
fi

if [[ "$SETUP_ONLY" == 1 ]]; then log "setup done: $VENV"; exit 0; fi

DOC=()
case " ${ARGS[*]-} " in
  *" --quick "*) ;;
  *) DOC=(--doc "$ROOT/docs/benchmarks.md") ;;
esac

exec "$VENV/bin/python" "$HERE/harness.py" --bin "$BIN" --data "$CACHE/bench-data" \
  --work "$CACHE/compare-work" --root "$ROOT" "${PY312_ARG[@]}" ${DOC[@]+"${DOC[@]}"} ${ARGS[@]+"${ARGS[@]}"}
