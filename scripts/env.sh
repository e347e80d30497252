# Sourced by the other scripts: installs what is missing and sets CARGO_TARGET_DIR and PY.
# Everything cached lives under ~/.cache/cellarrow, keyed by the lock files, so an empty cache
# only costs time.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${CELLARROW_CACHE:-$HOME/.cache/cellarrow}"
mkdir -p "$CACHE"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# HDF5 C library for the hdf5-metno crate.
if ! dpkg -s libhdf5-dev >/dev/null 2>&1 || ! command -v pkg-config >/dev/null 2>&1; then
    say "installing libhdf5-dev (apt)"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libhdf5-dev pkg-config >/dev/null
fi

key() { cat "$@" | sha256sum | cut -c1-16; }

# Cargo target dir keyed by the lock file and the compiler.
RUST_KEY="$(key "$ROOT/Cargo.lock" <(rustc -V))"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target-$RUST_KEY}"

# Python venv keyed by the pinned requirements.
PY_KEY="$(key "$ROOT/tests/requirements.txt" <(python3 -V 2>&1))"
VENV="$CACHE/venv-$PY_KEY"
if [ ! -x "$VENV/bin/python" ] || [ ! -f "$VENV/.complete" ]; then
    say "creating the Python venv $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q -r "$ROOT/tests/requirements.txt"
    touch "$VENV/.complete"
fi
export PY="$VENV/bin/python"
export VIRTUAL_ENV="$VENV"  # where `maturin develop` installs the Python package
export CELLARROW_PYTHON="$PY"
export PATH="$VENV/bin:$PATH"
