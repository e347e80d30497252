"""A corpus in an S3 bucket (moto in server mode on 127.0.0.1), read by the `cellarrow` CLI
through `s3://` with credentials and endpoint from the usual environment variables, compared
with the same corpus on local disk; bad URLs give clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.ipc as ipc
import pytest

BUCKET = "cellarrow-py"


def upload(endpoint: str, corpus: Path, bucket: str, prefix: str) -> int:
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    if bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        s3.create_bucket(Bucket=bucket)
    n = 0
    for path in sorted(corpus.rglob("*")):
        if path.is_file():
            s3.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(corpus).as_posix()}")
            n += 1
    return n


@pytest.fixture()
def remote_corpus(s3_env, convert_cached, data_dir):
    local = convert_cached(
        "store_chr21", data_dir / "scanpy_10x_v3_chr21_counts.h5ad", "--part-cells", "150"
    )
    assert upload(s3_env, local, BUCKET, "chr21") >= 5
    return local, f"s3://{BUCKET}/chr21"


def read_stream(path: Path) -> pa.Table:
    with ipc.open_stream(pa.memory_map(str(path))) as r:
        return r.read_all()


def test_inspect_over_s3_matches_local(remote_corpus, run_cellarrow):
    local, url = remote_corpus
    a = json.loads(run_cellarrow("inspect", url, "--json").stdout)
    b = json.loads(run_cellarrow("inspect", local, "--json").stdout)
    a.pop("path"), b.pop("path")
    assert a == b


def test_sample_over_s3_matches_local_cell_by_cell(remote_corpus, run_cellarrow, tmp_path):
    local, url = remote_corpus
    out_remote, out_local = tmp_path / "remote.arrow", tmp_path / "local.arrow"
    for corpus, out in ((url, out_remote), (local, out_local)):
        run_cellarrow("sample", corpus, "--batch-size", "64", "--seed", "3", "-o", out)
    a, b = read_stream(out_remote), read_stream(out_local)
    assert a.num_rows == b.num_rows > 0
    assert a.equals(b)


def test_a_second_open_uses_the_cache(remote_corpus, run_cellarrow, s3_env, tmp_path):
    local, url = remote_corpus
    run_cellarrow("inspect", url, "--json")
    # With the bucket's matrix parts gone, the parts still come from the node-local cache.
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_env,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    for obj in s3.list_objects_v2(Bucket=BUCKET, Prefix="chr21/matrix/")["Contents"]:
        s3.delete_object(Bucket=BUCKET, Key=obj["Key"])
    again = json.loads(run_cellarrow("inspect", url, "--json").stdout)
    assert again["n_cells"] == json.loads(run_cellarrow("inspect", local, "--json").stdout)["n_cells"]


def test_appended_corpus_over_s3_matches_local(s3_env, run_cellarrow, data_dir, tmp_path):
    # An append leaves two files in obs, samples and gene_counts: every one is fetched.
    local = tmp_path / "grown"
    run_cellarrow(
        "convert", data_dir / "scanpy_10x_v3_chr21_counts.h5ad", "-o", local,
        "--part-cells", "150", "--quiet",
    )
    run_cellarrow("append", local, data_dir / "debian_sctransform_pbmc_counts.h5ad", "--quiet")
    tables = json.loads((local / "manifest.json").read_text())["tables"]
    assert [len(tables[t]) for t in ("obs", "samples", "gene_counts")] == [2, 2, 2]
    upload(s3_env, local, BUCKET, "grown")
    url = f"s3://{BUCKET}/grown"
    for sql in (
        "SELECT * FROM obs ORDER BY cell",
        "SELECT * FROM samples ORDER BY sample_id",
        "SELECT * FROM genes ORDER BY gene",
        "SELECT * FROM gene_counts ORDER BY gene, n_cells",
    ):
        got = []
        for corpus in (url, local):
            out = tmp_path / "q.arrow"
            run_cellarrow("query", corpus, sql, "-f", "arrow", "-o", out)
            got.append(feather.read_table(out))
        assert got[0].num_rows > 0 and got[0].equals(got[1]), sql
    out_remote, out_local = tmp_path / "remote.arrow", tmp_path / "local.arrow"
    for corpus, out in ((url, out_remote), (local, out_local)):
        run_cellarrow("sample", corpus, "--batch-size", "64", "--seed", "3", "-o", out)
    assert read_stream(out_remote).equals(read_stream(out_local))


@pytest.mark.parametrize(
    "url, needle",
    [
        (f"s3://no-such-bucket-{__name__.replace('_', '-')}/x", "not a cellarrow corpus"),
        ("ftp://host/corpus", "unsupported URL scheme"),
        ("s3:///corpus", "names no bucket"),
    ],
)
def test_bad_urls_are_clear_errors(s3_env, run_cellarrow, url, needle):
    proc = run_cellarrow("inspect", url, check=False)
    assert proc.returncode != 0
    assert needle in proc.stderr and url.rstrip("/") in proc.stderr, proc.stderr
    assert "panicked" not in proc.stderr


def test_no_credentials_is_a_clear_error(s3_env, run_cellarrow, monkeypatch):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    proc = run_cellarrow("inspect", f"s3://{BUCKET}/chr21", check=False)
    assert proc.returncode != 0
    assert "no credentials" in proc.stderr and f"s3://{BUCKET}/chr21" in proc.stderr, proc.stderr


def _rows(ds_batches) -> dict:
    """Each delivered cell's row of the dense matrix, by cell id."""
    out = {}
    for b in ds_batches:
        x = b["X"].to_dense().numpy()
        for i, cell in enumerate(b["cell"].tolist()):
            assert cell not in out, f"cell {cell} delivered twice"
            out[cell] = x[i]
    return out


def test_python_opens_a_corpus_url_as_a_local_corpus(remote_corpus):
    import cellarrow

    local, url = remote_corpus
    a, b = cellarrow.open(url), cellarrow.open(local)
    assert a.location == url and "s3://" in repr(a)
    assert (a.n_cells, a.n_genes, a.nnz) == (b.n_cells, b.n_genes, b.nnz)
    for name in ("obs", "genes", "samples"):
        assert a.table(name).equals(b.table(name)), name
    q = "SELECT sample_id, count(*) AS n, sum(total) AS t FROM obs GROUP BY sample_id"
    assert a.query(q).equals(b.query(q))
    got = [x.to_scipy() for x in a.loader(batch_size=100, seed=4)]
    want = [x.to_scipy() for x in b.loader(batch_size=100, seed=4)]
    assert len(got) == len(want) > 1
    for g, w in zip(got, want):
        assert (g != w).nnz == 0


def test_celldataset_with_two_workers_reads_a_corpus_url(remote_corpus):
    from cellarrow.torch import CellDataset

    local, url = remote_corpus
    kw = dict(batch_size=64, seed=7)
    remote = _rows(CellDataset(url, **kw).dataloader(num_workers=2, multiprocessing_context="fork"))
    here = _rows(CellDataset(local, **kw).dataloader(num_workers=0))
    assert sorted(remote) == sorted(here) == list(range(len(here)))
    for cell, row in here.items():
        assert (remote[cell] == row).all(), cell


def test_hf_iterable_reads_a_corpus_url(remote_corpus):
    import cellarrow
    from cellarrow.hf import to_hf_iterable

    local, url = remote_corpus

    def rows(corpus):
        out = {}
        for r in to_hf_iterable(cellarrow.open(corpus), batch_size=50, seed=2, num_shards=2):
            out[r["cell"]] = (list(r["indices"]), list(r["values"]))
        return out

    a, b = rows(url), rows(local)
    assert len(a) == len(b) == cellarrow.open(local).n_cells
    assert a == b
