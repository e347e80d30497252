"""`cellarrow.ray.convert` on a real Ray cluster equals a single-machine `cellarrow convert`.

The cluster is two Ray nodes on this machine, both started with the `ray start` command line:
a head (`ray start --head --node-ip-address 127.0.0.1 --port P --num-cpus 1`) and a second
node joining it (`ray start --address 127.0.0.1:P --num-cpus 1`), each as a child process of
the test (`--block`), stopped at teardown. One CPU each, so that the conversion tasks run on
both nodes and this 2-core machine holds them.

Checked: the same cells in the same order, values, genes (but `matched_by`), obs and samples
tables and SQL answers as `cellarrow convert` of the same files, read with pyarrow alone; every part of the
result linked from the tasks' corpora (none rewritten); a task killed once (SIGKILL at a
deterministic kill point of the conversion) is retried by Ray and the result is the same; with
no retries the run fails and leaves no corpus and no staging directory; a run that died (its
staging directory left behind) is simply run again.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from corpus_check import read_corpus

# Installed by the test setup (tests/requirements.txt): missing on CI is a failure.
ray = __import__("ray") if os.environ.get("CI") else pytest.importorskip("ray")
import cellarrow  # noqa: E402
import cellarrow.ray as cray  # noqa: E402

pytestmark = pytest.mark.slow

FILES = [
    "scanpy_10x_v3_chr21_counts.h5ad",
    "debian_sctransform_pbmc_counts.h5ad",
    "scvi_pbmc_5k_protein_v3_200cells.h5ad",
]

# Startup of a Ray node on a loaded 2-core machine: a bound on waiting, not a timed assertion.
READY_WITHIN_S = 180


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_start(*args: str, env: dict) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--block", "--disable-usage-stats", *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait(what: str, ready, procs) -> None:
    deadline = time.monotonic() + READY_WITHIN_S
    while not ready():
        for p in procs:
            if p.poll() is not None:
                pytest.fail(f"{what}: `ray start` exited with {p.returncode}:\n{p.stdout.read()}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not ready within {READY_WITHIN_S} s")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def cluster():
    """A head and a second node started with `ray start`; the driver connected to the head."""
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    os.environ.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    # Short: Ray puts Unix sockets under it.
    temp = tempfile.mkdtemp(prefix="car-", dir="/tmp")
    port = _free_port()
    address = f"127.0.0.1:{port}"
    procs = [
        _ray_start(
            "--head",
            "--node-ip-address",
            "127.0.0.1",
            "--port",
            str(port),
            "--num-cpus",
            "1",
            "--include-dashboard",
            "false",
            "--temp-dir",
            temp,
            env=env,
        )
    ]
    try:

        def connected() -> bool:
            try:
                ray.init(address=address, logging_level="warning")
                return True
            except Exception:
                return False

        _wait("the head node", connected, procs)
        procs.append(_ray_start("--address", address, "--node-ip-address", "127.0.0.1", "--num-cpus", "1", env=env))
        _wait("the second node", lambda: sum(n["Alive"] for n in ray.nodes()) == 2, procs)
        yield address
    finally:
        ray.shutdown()
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(120)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def files(data_dir) -> list[str]:
    return [str(data_dir / f) for f in FILES]


@pytest.fixture(scope="module")
def single(files, run_cellarrow, tmp_path_factory) -> Path:
    """The same files converted by one `cellarrow convert` on this machine."""
    out = tmp_path_factory.mktemp("single") / "single.corpus"
    run_cellarrow("convert", *files, "-o", out, "--quiet")
    return out


def _table(t: pa.Table) -> dict:
    return {name: t.column(name).combine_chunks() for name in sorted(t.column_names)}


def assert_same_corpus(got: Path, want: Path) -> None:
    g, w = read_corpus(got), read_corpus(want)
    for key in ("n_cells", "n_genes", "nnz", "index_type", "value_type", "samples"):
        assert g.manifest[key] == w.manifest[key], key
    assert g.gene_names() == w.gene_names()
    # Cells and values, compared in gene-name space (the ids agree too, but the names are what
    # must agree).
    names = np.array(g.gene_names(), dtype=object)
    assert g.matrix.shape == w.matrix.shape
    assert np.array_equal(g.matrix.indptr, w.matrix.indptr)
    assert np.array_equal(names[g.matrix.indices], np.array(w.gene_names(), dtype=object)[w.matrix.indices])
    assert np.array_equal(g.matrix.data, w.matrix.data)
    for name, a, b in (("genes", g.genes, w.genes), ("obs", g.obs, w.obs), ("samples", g.samples, w.samples)):
        ta, tb = _table(a), _table(b)
        # `matched_by` also records each piece's joins to the planned gene order, which one
        # conversion never makes.
        ta.pop("matched_by", None), tb.pop("matched_by", None)
        assert ta.keys() == tb.keys(), name
        for col in ta:
            assert ta[col].type == tb[col].type, f"{name}.{col}"
            assert ta[col].equals(tb[col]), f"{name}.{col}"
    queries = [
        "SELECT sample_id, count(*) AS n, sum(total) AS t, sum(nnz) AS z FROM obs GROUP BY sample_id ORDER BY sample_id",
        "SELECT name, n_samples, n_cells FROM genes WHERE n_cells > 0 ORDER BY n_cells DESC, name LIMIT 50",
        "SELECT cell, obs_name, source_row FROM obs WHERE nnz > 100 ORDER BY cell",
    ]
    cg, cw = cellarrow.open(got), cellarrow.open(want)
    for q in queries:
        a, b = _decoded(cg.query(q)), _decoded(cw.query(q))
        assert a.num_rows > 0, q
        assert a.equals(b), q


def _decoded(t: pa.Table) -> pa.Table:
    """Dictionary columns as their values: a query's dictionaries are built in whatever order
    its parallel scan met the values, which is not part of the answer."""
    cols = [
        c.cast(c.type.value_type) if pa.types.is_dictionary(c.type) else c for c in t.columns
    ]
    return pa.table(cols, names=t.column_names)


def _part_count(corpus: Path) -> int:
    return len(read_corpus(corpus).manifest["matrix"]["parts"])


def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def test_ray_convert_equals_a_single_machine_convert(cluster, files, single, tmp_path):
    assert sum(n["Alive"] for n in ray.nodes()) == 2
    out = tmp_path / "ray.corpus"
    report = cray.convert(files, out, files_per_task=1)
    assert report["tasks"] == len(files)
    assert report["nodes"] == 2, "the tasks ran on both nodes"
    assert report["parts_rewritten"] == 0 and report["parts_copied"] == 0
    assert report["parts_linked"] == _part_count(out)
    assert_same_corpus(out, single)
    assert _leftovers(out) == []
    # The planned vocabulary is that of the conversion, from the var tables alone.
    assert cray.plan_genes(files) == read_corpus(single).gene_names()


def test_ray_convert_writes_the_cold_layout(cluster, files, single, tmp_path):
    out = tmp_path / "cold.corpus"
    cray.convert(files, out, layout="cold", chunk_cells=64)
    # The cold part is an Arrow IPC file (not a stream), so the manifest is read on its own.
    parts = json.loads((out / "manifest.json").read_text())["matrix"]["parts"]
    assert parts and all(p["layout"] == "cold" and p["chunk_cells"] == 64 and "footer" in p for p in parts)
    got, want = cellarrow.open(out), cellarrow.open(single)
    assert got.gene_names == want.gene_names
    cells = np.arange(want.n_cells)
    g, w = got.get(cells).to_scipy(), want.get(cells).to_scipy()
    assert g.shape == w.shape and (g != w).nnz == 0
    with pytest.raises(ValueError, match="layout"):
        cray.convert(files, tmp_path / "bad.corpus", layout="warm")


def test_a_killed_task_is_retried_and_a_failed_run_leaves_nothing(cluster, files, single, tmp_path):
    out = tmp_path / "retried.corpus"
    marker = tmp_path / "killed-once"
    kill_once = {"runtime_env": {"env_vars": {"CELLARROW_KILL_AT": "part-written", "CELLARROW_KILL_ONCE": str(marker)}}}

    # No retries: the killed task fails the run, which leaves no corpus and no staging.
    with pytest.raises(Exception) as failed:
        cray.convert(files, out, max_retries=0, ray_options=kill_once)
    assert marker.exists(), "a task reached the kill point"
    assert "died" in str(failed.value).lower() or "crash" in str(failed.value).lower(), failed.value
    assert not out.exists()
    assert _leftovers(out) == []

    # With retries, the killed task runs again and the result is the single conversion's.
    marker.unlink()
    report = cray.convert(files, out, max_retries=2, ray_options=kill_once)
    assert marker.exists(), "a task was killed"
    assert report["parts_rewritten"] == 0
    assert_same_corpus(out, single)
    assert _leftovers(out) == []


def test_a_run_that_died_is_run_again(cluster, files, single, tmp_path):
    out = tmp_path / "again.corpus"
    # What a driver killed mid-run leaves: its staging directory, owned by a process that is gone.
    staging = tmp_path / f".{out.name}.cellarrow-ray"
    (staging / "piece-000000.corpus").mkdir(parents=True)
    (staging / "piece-000000.corpus" / "half-written").write_bytes(b"x")
    (staging / "owner").write_text(f"{socket.gethostname()} 4194304\n")
    cray.convert(files[:2], out, files_per_task=2)
    assert _leftovers(out) == []
    got = read_corpus(out)
    assert got.manifest["n_cells"] == sum(s["n_cells"] for s in read_corpus(single).manifest["samples"][:2])
    # An existing output is refused unless overwrite, before any task runs.
    with pytest.raises(cellarrow.CellarrowError, match="already exists"):
        cray.convert(files, out)
    report = cray.convert(files, out, overwrite=True)
    assert report["n_samples"] == 3
    assert_same_corpus(out, single)


def test_ray_convert_uploads_to_a_url(cluster, files, single, s3_env, tmp_path):
    import boto3

    s3 = boto3.client(
        "s3", endpoint_url=s3_env, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket="cellarrow-ray")

    def objects() -> list[str]:
        return sorted(o["Key"] for o in s3.list_objects_v2(Bucket="cellarrow-ray", Prefix="cohort/").get("Contents", []))

    url = "s3://cellarrow-ray/cohort"
    with pytest.raises(ValueError, match="staging_dir"):
        cray.convert(files, url)
    with pytest.raises(Exception, match="cellarrow-no-such-bucket"):
        cray.convert(files, "s3://cellarrow-no-such-bucket/x", staging_dir=tmp_path / "never")
    assert not (tmp_path / "never").exists(), "the destination is checked before any work"

    stage = tmp_path / "stage"
    stage.mkdir()
    report = cray.convert(files, url, staging_dir=stage)
    assert report["tasks"] == len(files)
    got, want = cellarrow.open(url), cellarrow.open(single)
    manifest = json.loads(s3.get_object(Bucket="cellarrow-ray", Key="cohort/manifest.json")["Body"].read())
    listed = sorted(["cohort/manifest.json"] + [f"cohort/{f['path']}" for f in manifest["files"]])
    assert objects() == listed and report["upload"]["files"] == len(listed)
    assert got.gene_names == want.gene_names
    cells = np.arange(want.n_cells)
    g, w = got.get(cells).to_scipy(), want.get(cells).to_scipy()
    assert g.shape == w.shape and (g != w).nnz == 0
    assert list(stage.iterdir()) == [], "nothing is left in the staging directory"
    # A second run is refused before any task runs, unless overwrite.
    with pytest.raises(Exception, match="already holds a corpus"):
        cray.convert(files, url, staging_dir=stage)
    cray.convert(files, url, staging_dir=stage, overwrite=True, layout="cold")
    manifest = json.loads(s3.get_object(Bucket="cellarrow-ray", Key="cohort/manifest.json")["Body"].read())
    assert all(p["layout"] == "cold" for p in manifest["matrix"]["parts"])
    listed = sorted(["cohort/manifest.json"] + [f"cohort/{f['path']}" for f in manifest["files"]])
    assert objects() == listed, "no object of the replaced corpus is left"
    assert cellarrow.open(url).n_cells == want.n_cells
