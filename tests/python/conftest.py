"""Fixtures shared by the conversion tests.

The tests drive the real `cellarrow` binary (``CELLARROW_BIN``) and check what it writes with
independent readers: anndata/h5py for the source, pyarrow, polars, DuckDB and Hugging Face
`datasets` for the corpus.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DATA = ROOT / "tests" / "data"

if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

BUILD_HINT = (
    "set CELLARROW_BIN to the built cellarrow binary, e.g.\n"
    "  export CARGO_TARGET_DIR=$HOME/.cache/cellarrow/target\n"
    "  cargo build --bin cellarrow\n"
    "  export CELLARROW_BIN=$CARGO_TARGET_DIR/debug/cellarrow\n"
    "or run scripts/test.sh, which does this."
)


@pytest.fixture(scope="session")
def cellarrow_bin() -> Path:
    """The `cellarrow` binary under test. A missing binary is an error, not a skip."""
    value = os.environ.get("CELLARROW_BIN")
    if not value:
        pytest.fail("CELLARROW_BIN is not set: " + BUILD_HINT, pytrace=False)
    path = Path(value)
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(f"CELLARROW_BIN={value} is not an executable file: " + BUILD_HINT, pytrace=False)
    return path


@pytest.fixture(scope="session")
def session_tmp(tmp_path_factory) -> Path:
    """One temporary directory for the whole session (corpora shared between tests)."""
    return tmp_path_factory.mktemp("cellarrow")


@pytest.fixture(scope="session")
def run_cellarrow(cellarrow_bin):
    """``run_cellarrow(*args, check=True)`` runs the binary and returns the CompletedProcess.

    With ``check`` a non-zero exit fails the test and shows stdout and stderr.
    """

    def run(*args, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        cmd = [str(cellarrow_bin), *map(str, args)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            pytest.fail(
                f"`{' '.join(cmd)}` exited with {proc.returncode}\n"
                f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}",
                pytrace=False,
            )
        return proc

    return run


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def convert_cached(run_cellarrow, session_tmp):
    """Converts once per distinct argument list in a session; returns the corpus path.

    ``convert_cached(name, *inputs_and_options)`` writes ``session_tmp/corpora/<name>``.
    """
    cache: dict[tuple, Path] = {}
    root = session_tmp / "corpora"
    root.mkdir(exist_ok=True)

    def convert(name: str, *args) -> Path:
        key = (name, *map(str, args))
        if key not in cache:
            out = root / name
            assert not out.exists(), f"two different conversions named {name}"
            run_cellarrow("convert", *args, "-o", out, "--quiet")
            cache[key] = out
        return cache[key]

    return convert


def pytest_configure(config):
    # `slow`: long tests (a real Ray cluster); they run in scripts/test.sh like every other
    # test, and `-m "not slow"` leaves them out of a quick run.
    config.addinivalue_line("markers", "slow: a long test (run by scripts/test.sh; deselect with -m 'not slow')")


@pytest.fixture(scope="session")
def s3_server():
    """An S3-compatible server (moto in server mode) on 127.0.0.1 at a free port, for the
    session; yields its endpoint URL. Buckets are made by the tests."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture()
def s3_env(s3_server, monkeypatch, tmp_path):
    """The environment variables that point cellarrow (and boto3) at ``s3_server``, with a
    fresh node-local cache; returns the endpoint URL."""
    for key, value in {
        "AWS_ENDPOINT_URL": s3_server,
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "CELLARROW_CACHE": str(tmp_path / "cache"),
    }.items():
        monkeypatch.setenv(key, value)
    return s3_server
