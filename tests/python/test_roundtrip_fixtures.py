"""Round trip of every real fixture in tests/data: each value, obs column and count of the
corpus (read with pyarrow) equals what anndata reads from the source file."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pyarrow as pa
import pytest

from conftest import DATA
from corpus_check import (
    ARROW_VALUE_TYPES,
    assert_sample_matches,
    gene_keys,
    joint_gene_keys,
    expected_value_type,
    read_corpus,
    sha256,
    source_values,
    to_csr64,
)

FIXTURES = sorted(p.name for p in DATA.glob("*.h5ad"))
RAW_FIXTURES = ["scanpy_pbmc68k_reduced.h5ad", "scanpy_pbmc68k_reduced.modern.h5ad"]


def stem(name: str) -> str:
    return name[: -len(".h5ad")]


def read(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ad.read_h5ad(path)


def test_fixtures_are_present():
    assert len(FIXTURES) == 7, FIXTURES


@pytest.mark.parametrize("name", FIXTURES)
def test_round_trip_each_fixture(name, convert_cached):
    path = DATA / name
    out = convert_cached(f"single-{stem(name)}", path)
    corpus = read_corpus(out)
    adata = read(path)
    m = corpus.manifest
    assert m["format"] == "cellarrow" and m["format_version"] == 2
    assert m["n_cells"] == adata.n_obs
    assert m["n_genes"] == adata.n_vars
    assert sorted(corpus.gene_names()) == sorted(gene_keys(adata))
    assert corpus.genes.column("gene").to_pylist() == list(range(adata.n_vars))
    assert corpus.sample_ids() == [stem(name)]
    want = assert_sample_matches(corpus, stem(name), adata, source_path=path)
    assert m["nnz"] == want.nnz

    # Narrowest lossless types, derived from the source values.
    vt = expected_value_type(source_values(adata.X))
    assert m["value_type"] == vt
    # One conversion: every part has the manifest's types.
    assert all(p["index_type"] == m["index_type"] and p["value_type"] == vt for p in m["matrix"]["parts"])
    assert corpus.value_arrow_type == ARROW_VALUE_TYPES[vt]
    assert corpus.index_arrow_type == (pa.uint16() if adata.n_vars <= 65536 else pa.uint32())

    # The genes table (with the sums of gene_counts) counts cells with a non-zero per gene.
    x = to_csr64(adata.X)
    per_gene = np.bincount(x.indices, minlength=adata.n_vars)
    ids = corpus.gene_ids()
    got = np.asarray(corpus.genes.column("n_cells").to_pylist())
    want_cells = np.zeros(adata.n_vars, dtype=np.int64)
    for j, g in enumerate(gene_keys(adata)):
        want_cells[ids[g]] = per_gene[j]
    assert np.array_equal(got, want_cells)
    assert set(corpus.genes.column("n_samples").to_pylist()) == {1}


@pytest.mark.parametrize("name", RAW_FIXTURES)
def test_round_trip_raw(name, convert_cached):
    path = DATA / name
    out = convert_cached(f"raw-{stem(name)}", path, "--raw")
    corpus = read_corpus(out)
    adata = read(path)
    assert adata.raw is not None
    raw_x = adata.raw.X
    assert corpus.manifest["n_genes"] == adata.raw.n_vars
    assert sorted(corpus.gene_names()) == sorted(map(str, adata.raw.var_names))
    assert_sample_matches(
        corpus, stem(name), adata, x=raw_x, var_names=adata.raw.var_names, source="raw/X", source_path=path
    )
    assert corpus.manifest["value_type"] == expected_value_type(source_values(raw_x))


def test_legacy_and_modern_layouts_give_the_same_corpus_content(convert_cached):
    legacy = read_corpus(convert_cached("single-scanpy_pbmc68k_reduced", DATA / "scanpy_pbmc68k_reduced.h5ad"))
    modern = read_corpus(
        convert_cached("single-scanpy_pbmc68k_reduced.modern", DATA / "scanpy_pbmc68k_reduced.modern.h5ad")
    )
    assert legacy.gene_names() == modern.gene_names()
    assert (legacy.matrix != modern.matrix).nnz == 0
    drop = ["sample_id"]
    assert legacy.obs.drop_columns(drop).equals(modern.obs.drop_columns(drop))


def test_all_fixtures_in_one_corpus(convert_cached):
    paths = [DATA / n for n in FIXTURES]
    out = convert_cached("all-fixtures", *paths)
    corpus = read_corpus(out)
    adatas = [read(p) for p in paths]
    assert corpus.sample_ids() == [stem(n) for n in FIXTURES], "samples keep the input order"
    # Files with ids and files of symbols only: genes join by id, else by symbol.
    keys = joint_gene_keys(adatas)
    union = set()
    for k in keys:
        union |= set(k)
    assert set(corpus.gene_names()) == union
    assert len(corpus.gene_names()) == len(union)
    first = 0
    for name, path, a, k in zip(FIXTURES, paths, adatas, keys):
        row = corpus.sample_row(stem(name))
        assert row["first_cell"] == first
        first += a.n_obs
        assert_sample_matches(corpus, stem(name), a, var_names=k, source_path=path)
    assert corpus.manifest["n_cells"] == first
    values = np.concatenate([source_values(a.X) for a in adatas])
    assert corpus.manifest["value_type"] == expected_value_type(values)
    # A gene's n_samples counts the files that measure it.
    gene_sets = [set(k) for k in keys]
    n_samples = {g: sum(g in s for s in gene_sets) for g in union}
    got = dict(zip(corpus.gene_names(), corpus.genes.column("n_samples").to_pylist()))
    assert got == n_samples
    # Obs columns absent from a sample are null there.
    for name, a in zip(FIXTURES, adatas):
        obs = corpus.sample_obs(stem(name))
        for col in ("bulk_labels", "leiden", "in_tissue"):
            if col in corpus.obs.column_names and col not in a.obs.columns:
                assert obs.column(col).null_count == a.n_obs, (name, col)


def test_samples_parquet_records_the_source(convert_cached):
    path = DATA / "squidpy_visium_mouse_brain_49spots.h5ad"
    corpus = read_corpus(convert_cached(f"single-{stem(path.name)}", path))
    row = corpus.sample_row(stem(path.name))
    assert row["source_sha256"] == sha256(path)
    assert row["source_path"].endswith(path.name)
    assert row["spatial_dims"] == 2
    assert row["n_genes_outside_vocab"] == 0 and row["nnz_outside_vocab"] == 0
    m = corpus.manifest
    assert [s["sample_id"] for s in m["samples"]] == corpus.sample_ids()
    assert m["samples"][0]["n_cells"] == row["n_cells"] and m["samples"][0]["nnz"] == row["nnz"]
    assert m["samples"][0]["spatial_dims"] == 2
    for f in m["files"]:
        assert ".." not in f["path"] and not f["path"].startswith("/")
        p = corpus.root / f["path"]
        assert p.stat().st_size == f["bytes"]
        assert sha256(p) == f["sha256"], f["path"]
