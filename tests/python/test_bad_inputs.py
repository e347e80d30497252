"""Bad inputs through the CLI: a non-zero exit, an error that names the file (and the object),
no panic, and nothing written: no output directory and no hidden temporary directory."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.sparse as sp

from conftest import DATA
from corpus_check import (
    assert_csr_equal,
    assert_sample_matches,
    expected_rows,
    expected_value_type,
    read_corpus,
    sha256,
    to_csr64,
)
from synth import make_adata, random_csr, read, write

GOOD = DATA / "scanpy_10x_v3_chr21_counts.h5ad"


@pytest.fixture
def case(session_tmp, request) -> Path:
    d = session_tmp / "bad" / request.node.name.replace("[", "_").replace("]", "")
    d.mkdir(parents=True)
    return d


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".cellarrow-tmp-" in p.name or ".cellarrow-old-" in p.name)


def assert_refused(proc, out: Path, *names: str):
    assert proc.returncode != 0, f"exit 0 for a bad input\n{proc.stdout}\n{proc.stderr}"
    assert "panicked" not in proc.stderr and "RUST_BACKTRACE" not in proc.stderr, proc.stderr
    for n in names:
        assert n in proc.stderr, f"stderr does not name {n!r}:\n{proc.stderr}"
    assert not out.exists(), f"{out} was written by a failed conversion"
    assert leftovers(out.parent) == [], f"temporary directories left: {leftovers(out.parent)}"


def small_csr_file(path: Path, seed=0, n_obs=30, n_vars=12) -> Path:
    rng = np.random.default_rng(seed)
    return write(make_adata(random_csr(rng, n_obs, n_vars, density=0.5), path.stem), path)


def test_not_hdf5(case, run_cellarrow):
    bad = case / "notes.h5ad"
    bad.write_text("this is a text file, not HDF5\n" * 20)
    out = case / "out.corpus"
    assert_refused(run_cellarrow("convert", bad, "-o", out, check=False), out, "notes.h5ad")


def test_empty_file(case, run_cellarrow):
    bad = case / "empty.h5ad"
    bad.write_bytes(b"")
    out = case / "out.corpus"
    assert_refused(run_cellarrow("convert", bad, "-o", out, check=False), out, "empty.h5ad")


def test_truncated_file(case, run_cellarrow):
    bad = case / "truncated.h5ad"
    data = GOOD.read_bytes()
    bad.write_bytes(data[: len(data) * 6 // 10])
    out = case / "out.corpus"
    assert_refused(run_cellarrow("convert", bad, "-o", out, check=False), out, "truncated.h5ad")


def test_missing_x(case, run_cellarrow):
    bad = small_csr_file(case / "nox.h5ad")
    with h5py.File(bad, "r+") as f:
        del f["X"]
    out = case / "out.corpus"
    proc = run_cellarrow("convert", bad, "-o", out, check=False)
    assert_refused(proc, out, "nox.h5ad", "X")


def test_indptr_not_monotone(case, run_cellarrow):
    bad = small_csr_file(case / "badindptr.h5ad", n_obs=30)
    with h5py.File(bad, "r+") as f:
        ip = f["X/indptr"][...]
        k = 20
        assert ip[k + 1] > 0, "test setup"
        ip[k] = ip[k + 1] + 5
        f["X/indptr"][...] = ip
        assert np.any(np.diff(f["X/indptr"][...]) < 0)
    good = small_csr_file(case / "fine.h5ad", seed=1)
    out = case / "out.corpus"
    proc = run_cellarrow("convert", good, bad, "-o", out, check=False)
    assert_refused(proc, out, "badindptr.h5ad", "X/indptr")


def test_indices_out_of_range(case, run_cellarrow):
    bad = small_csr_file(case / "badindices.h5ad", n_vars=12)
    with h5py.File(bad, "r+") as f:
        idx = f["X/indices"][...]
        idx[len(idx) // 2] = 12 + 1000
        f["X/indices"][...] = idx
    out = case / "out.corpus"
    proc = run_cellarrow("convert", bad, "-o", out, check=False)
    assert_refused(proc, out, "badindices.h5ad", "X/indices")


def test_unknown_encoding_type(case, run_cellarrow):
    bad = small_csr_file(case / "weird.h5ad")
    with h5py.File(bad, "r+") as f:
        f["X"].attrs["encoding-type"] = "fancy_matrix"
    out = case / "out.corpus"
    proc = run_cellarrow("convert", bad, "-o", out, check=False)
    assert_refused(proc, out, "weird.h5ad", "X", "fancy_matrix")


def dup_file(path: Path) -> Path:
    rng = np.random.default_rng(5)
    genes = ["ACTB", "DUPGENE_A", "CD3E", "DUPGENE_B", "DUPGENE_A", "MS4A1", "DUPGENE_B", "GAPDH"]
    x = random_csr(rng, 40, len(genes), density=0.6)
    x = x.tolil()
    # Two duplicate columns whose sum leaves the u16 range in one cell.
    x[3, 1] = 40000
    x[3, 4] = 40000
    return write(make_adata(sp.csr_matrix(x, dtype=np.float32), "dup", genes=genes), path)


def test_duplicate_genes_are_listed(case, run_cellarrow):
    bad = dup_file(case / "dups.h5ad")
    out = case / "out.corpus"
    proc = run_cellarrow("convert", bad, "-o", out, check=False)
    assert_refused(proc, out, "dups.h5ad", "DUPGENE_A", "DUPGENE_B")
    assert "ACTB" not in proc.stderr and "GAPDH" not in proc.stderr, "only the duplicates are listed"


def test_duplicate_genes_sum(case, run_cellarrow):
    path = dup_file(case / "dups.h5ad")
    out = case / "sum.corpus"
    run_cellarrow("convert", path, "-o", out, "--duplicate-genes", "sum", "--quiet")
    corpus = read_corpus(out)
    a = read(path)
    assert sorted(corpus.gene_names()) == sorted(set(a.var_names))
    want = assert_sample_matches(corpus, "dups", a)
    assert want.max() == 80000, "test setup: one summed value leaves the u16 range"
    assert corpus.manifest["value_type"] == expected_value_type(want.data)


def test_existing_corpus_is_refused_and_untouched(case, run_cellarrow):
    out = case / "out.corpus"
    run_cellarrow("convert", GOOD, "-o", out, "--quiet")
    before = {p.relative_to(out): sha256(p) for p in out.rglob("*") if p.is_file()}
    mtime = (out / "manifest.json").stat().st_mtime_ns
    other = small_csr_file(case / "other.h5ad")
    proc = run_cellarrow("convert", other, "-o", out, check=False)
    assert proc.returncode != 0
    assert "panicked" not in proc.stderr
    assert "out.corpus" in proc.stderr, proc.stderr
    after = {p.relative_to(out): sha256(p) for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert (out / "manifest.json").stat().st_mtime_ns == mtime
    assert leftovers(case) == []
    # --overwrite replaces it, atomically, with the new content.
    run_cellarrow("convert", other, "-o", out, "--overwrite", "--quiet")
    assert read_corpus(out).sample_ids() == ["other"]
    assert leftovers(case) == []


def test_existing_non_corpus_directory_is_never_replaced(case, run_cellarrow):
    out = case / "precious"
    out.mkdir()
    (out / "thesis.txt").write_text("do not delete")
    for extra in ([], ["--overwrite"]):
        proc = run_cellarrow("convert", GOOD, "-o", out, *extra, check=False)
        assert proc.returncode != 0, extra
        assert "precious" in proc.stderr
        assert sorted(p.name for p in out.iterdir()) == ["thesis.txt"]
        assert (out / "thesis.txt").read_text() == "do not delete"
        assert leftovers(case) == []


def test_path_like_sample_id(case, run_cellarrow):
    good = shutil.copy(GOOD, case / "good.h5ad")
    manifest = case / "inputs.csv"
    manifest.write_text(f"path,sample_id,tissue\n{good},../evil,brain\n")
    out = case / "out.corpus"
    proc = run_cellarrow("convert", manifest, "-o", out, check=False)
    assert_refused(proc, out, "../evil")
    assert "good.h5ad" in proc.stderr or "inputs.csv" in proc.stderr, proc.stderr
    assert not (case / "evil").exists() and not (case.parent / "evil").exists()


def test_two_inputs_with_the_same_sample_id(case, run_cellarrow):
    (case / "a").mkdir()
    (case / "b").mkdir()
    one = small_csr_file(case / "a" / "same.h5ad", seed=1)
    two = small_csr_file(case / "b" / "same.h5ad", seed=2)
    out = case / "out.corpus"
    proc = run_cellarrow("convert", one, two, "-o", out, check=False)
    assert_refused(proc, out, "same")
    assert "same.h5ad" in proc.stderr


def test_manifest_names_a_missing_file(case, run_cellarrow):
    good = shutil.copy(GOOD, case / "good.h5ad")
    manifest = case / "inputs.csv"
    manifest.write_text(f"path,sample_id\n{good},ok\nmissing_sample.h5ad,gone\n")
    out = case / "out.corpus"
    proc = run_cellarrow("convert", manifest, "-o", out, check=False)
    assert_refused(proc, out, "missing_sample.h5ad")


def test_missing_input_file(case, run_cellarrow):
    out = case / "out.corpus"
    proc = run_cellarrow("convert", GOOD, case / "nowhere.h5ad", "-o", out, check=False)
    assert_refused(proc, out, "nowhere.h5ad")


def test_input_manifest_metadata_is_stored(case, run_cellarrow):
    one = small_csr_file(case / "one.h5ad", seed=1)
    two = small_csr_file(case / "two.h5ad", seed=2)
    manifest = case / "inputs.csv"
    manifest.write_text("path,sample_id,tissue,donor\none.h5ad,s1,brain,D1\ntwo.h5ad,s2,liver,D2\n")
    out = case / "out.corpus"
    run_cellarrow("convert", manifest, "-o", out, "--quiet")
    corpus = read_corpus(out)
    rows = {r["sample_id"]: r for r in corpus.samples.to_pylist()}
    assert list(rows) == ["s1", "s2"]
    assert (rows["s1"]["tissue"], rows["s1"]["donor"]) == ("brain", "D1")
    assert (rows["s2"]["tissue"], rows["s2"]["donor"]) == ("liver", "D2")
    assert_sample_matches(corpus, "s1", read(one), source_path=one)
    assert_sample_matches(corpus, "s2", read(two), source_path=two)


def test_duplicate_genes_first(case, run_cellarrow):
    path = dup_file(case / "dups.h5ad")
    out = case / "first.corpus"
    run_cellarrow("convert", path, "-o", out, "--duplicate-genes", "first", "--quiet")
    corpus = read_corpus(out)
    a = read(path)
    first_cols = [j for j, g in enumerate(a.var_names) if g not in list(a.var_names)[:j]]
    kept = a[:, first_cols]
    assert len(first_cols) == len(set(a.var_names))
    obs = corpus.obs
    src = np.asarray(obs.column("source_row").to_pylist())
    want = expected_rows(kept.X, kept.var_names, corpus.gene_ids(), len(corpus.gene_names()), src)
    got = corpus.matrix.copy()
    got.sort_indices()
    assert_csr_equal(got, want, obs.column("obs_name").to_pylist(), "first of the duplicates")
    # nnz and total cover every source column, the dropped duplicates too.
    full = to_csr64(a.X)[src]
    assert obs.column("nnz").to_pylist() == np.diff(full.indptr).tolist()
    assert np.allclose(obs.column("total").to_numpy(), np.asarray(full.sum(axis=1)).ravel(), rtol=1e-12, atol=0)


def test_failure_while_writing_leaves_nothing(case, run_cellarrow):
    """An obs table shorter than X is found only after the sample's parts are written."""
    good = small_csr_file(case / "fine.h5ad", seed=1, n_obs=50)
    bad = small_csr_file(case / "shortobs.h5ad", seed=2, n_obs=50)
    with h5py.File(bad, "r+") as f:
        index = f["obs/_index"][...]
        attrs = dict(f["obs/_index"].attrs)
        del f["obs/_index"]
        d = f["obs"].create_dataset("_index", data=index[:40], dtype=h5py.string_dtype())
        for k, v in attrs.items():
            d.attrs[k] = v
    out = case / "out.corpus"
    proc = run_cellarrow("convert", good, bad, "-o", out, check=False)
    assert_refused(proc, out, "shortobs.h5ad", "obs")


def test_failed_overwrite_keeps_the_old_corpus(case, run_cellarrow):
    out = case / "out.corpus"
    run_cellarrow("convert", GOOD, "-o", out, "--quiet")
    before = {p.relative_to(out): sha256(p) for p in out.rglob("*") if p.is_file()}
    bad = small_csr_file(case / "broken.h5ad")
    with h5py.File(bad, "r+") as f:
        f["X/indptr"][3] = 10**6
    proc = run_cellarrow("convert", bad, "-o", out, "--overwrite", check=False)
    assert proc.returncode != 0 and "broken.h5ad" in proc.stderr, proc.stderr
    assert "panicked" not in proc.stderr
    after = {p.relative_to(out): sha256(p) for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert leftovers(case) == []


def test_require_spatial(case, run_cellarrow):
    plain = small_csr_file(case / "flat.h5ad")
    out = case / "out.corpus"
    proc = run_cellarrow("convert", plain, "-o", out, "--require-spatial", check=False)
    assert_refused(proc, out, "flat.h5ad", "spatial")


def test_spatial_with_wrong_column_count(case, run_cellarrow):
    rng = np.random.default_rng(3)
    a = make_adata(random_csr(rng, 20, 6), "s4")
    a.obsm["spatial"] = rng.normal(size=(20, 4))
    p = write(a, case / "fourd.h5ad")
    out = case / "out.corpus"
    proc = run_cellarrow("convert", p, "-o", out, check=False)
    assert_refused(proc, out, "fourd.h5ad", "spatial")


def test_duplicate_genes_sum_of_floats(case, run_cellarrow):
    """Two f32 values whose sum is not an f32: the summed value is stored exactly."""
    genes = ["A", "DUP", "B", "DUP"]
    x = np.zeros((6, 4), dtype=np.float32)
    x[:, 0] = 2.5
    x[1, 1], x[1, 3] = 1.0, 2.0**-30
    x[4, 1], x[4, 3] = 0.75, 0.5
    path = write(make_adata(sp.csr_matrix(x), "fdup", genes=genes), case / "fdups.h5ad")
    out = case / "sum.corpus"
    run_cellarrow("convert", path, "-o", out, "--duplicate-genes", "sum", "--quiet")
    corpus = read_corpus(out)
    want = assert_sample_matches(corpus, "fdups", read(path))
    assert corpus.manifest["value_type"] == expected_value_type(want.data)


def test_non_finite_values(case, run_cellarrow):
    rng = np.random.default_rng(4)
    x = rng.random((8, 5)).astype(np.float32)
    x[2, 1] = np.nan
    x[5, 3] = np.inf
    bad = write(make_adata(x, "nanx"), case / "nanvalues.h5ad")
    out = case / "out.corpus"
    proc = run_cellarrow("convert", bad, "-o", out, check=False)
    assert_refused(proc, out, "nanvalues.h5ad", "X")
