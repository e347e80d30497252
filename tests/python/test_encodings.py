"""Files written during the test by the real anndata package, one per encoding, converted and
compared value by value with what anndata reads back."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import scipy.sparse as sp

from corpus_check import (
    ARROW_VALUE_TYPES,
    assert_sample_matches,
    expected_value_type,
    read_corpus,
    source_values,
    to_csr64,
)
from synth import make_adata, random_csr, read, values_for, write

DTYPES = ["float32", "float64", "int32", "int64", "uint16", "uint32"]


@pytest.fixture(scope="module")
def work(session_tmp):
    d = session_tmp / "encodings"
    d.mkdir(exist_ok=True)
    return d


@pytest.mark.parametrize("dtype", DTYPES)
def test_csr_csc_dense_of_each_dtype(dtype, work, run_cellarrow):
    rng = np.random.default_rng(DTYPES.index(dtype))
    base = random_csr(rng, 40, 25, dtype=dtype, explicit_zeros=3)
    matrices = {"csr": base, "csc": base.tocsc(), "dense": base.toarray()}
    paths = []
    for enc, x in matrices.items():
        p = write(make_adata(x, f"{dtype}-{enc}"), work / f"{dtype}_{enc}.h5ad")
        with h5py.File(p, "r") as f:
            want_enc = {"csr": "csr_matrix", "csc": "csc_matrix", "dense": "array"}[enc]
            got_enc = f["X"].attrs.get("encoding-type")
            assert got_enc == want_enc, f"test setup: X of {p.name} is {got_enc}"
            dset = f["X"] if enc == "dense" else f["X/data"]
            assert dset.dtype == np.dtype(dtype), f"test setup: {p.name} stores {dset.dtype}"
        paths.append(p)
    out = work / f"{dtype}.corpus"
    run_cellarrow("convert", *paths, "-o", out, "--quiet")
    corpus = read_corpus(out)
    for p in paths:
        a = read(p)
        assert_sample_matches(corpus, p.stem, a, source_path=p)
    vt = expected_value_type(source_values(base))
    assert corpus.manifest["value_type"] == vt
    assert corpus.value_arrow_type == ARROW_VALUE_TYPES[vt]
    assert corpus.index_arrow_type == pa.uint16()


def test_value_types_cover_the_format(work):
    """The dtype cases above reach every value type of FORMAT.md (a check of the test data)."""
    rng = np.random.default_rng(0)
    seen = {expected_value_type(values_for(d, rng, 200)) for d in DTYPES + ["counts"]}
    assert seen == {"uint16", "uint32", "float32", "float64"}


def test_int64_indptr(work, run_cellarrow):
    rng = np.random.default_rng(11)
    x = random_csr(rng, 60, 30)
    x.indptr = x.indptr.astype(np.int64)
    x.indices = x.indices.astype(np.int64)
    p = work / "indptr64.h5ad"
    write(make_adata(x, "i64"), p)
    with h5py.File(p, "r+") as f:
        if f["X/indptr"].dtype != np.int64:
            ip = f["X/indptr"][...].astype(np.int64)
            del f["X/indptr"]
            f["X"].create_dataset("indptr", data=ip)
        assert f["X/indptr"].dtype == np.int64
    out = work / "indptr64.corpus"
    run_cellarrow("convert", p, "-o", out, "--quiet")
    assert_sample_matches(read_corpus(out), "indptr64", read(p))


def test_layer_counts(work, run_cellarrow):
    rng = np.random.default_rng(12)
    counts = random_csr(rng, 50, 40)
    norm = counts.multiply(1.0 / np.maximum(counts.sum(axis=1), 1)).tocsr().astype(np.float32) * 1e4
    a = make_adata(sp.csr_matrix(norm, dtype=np.float32), "layer")
    a.layers["counts"] = counts
    p = write(a, work / "layered.h5ad")
    out = work / "layered.corpus"
    run_cellarrow("convert", p, "-o", out, "--layer", "counts", "--quiet")
    back = read(p)
    corpus = read_corpus(out)
    assert_sample_matches(corpus, "layered", back, x=back.layers["counts"], source="layers/counts")
    assert corpus.manifest["value_type"] == "uint16"
    # Without --layer the normalised X is stored.
    out_x = work / "layered-x.corpus"
    run_cellarrow("convert", p, "-o", out_x, "--quiet")
    cx = read_corpus(out_x)
    assert_sample_matches(cx, "layered", back)
    assert cx.manifest["value_type"] == expected_value_type(source_values(back.X))


def test_missing_layer_is_an_error(work, run_cellarrow):
    a = make_adata(random_csr(np.random.default_rng(1), 10, 5), "nolayer")
    p = write(a, work / "nolayer.h5ad")
    out = work / "nolayer.corpus"
    proc = run_cellarrow("convert", p, "-o", out, "--layer", "counts", check=False)
    assert proc.returncode != 0
    assert "nolayer.h5ad" in proc.stderr and "counts" in proc.stderr, proc.stderr
    assert not out.exists()


def test_raw(work, run_cellarrow):
    rng = np.random.default_rng(13)
    raw_counts = random_csr(rng, 45, 50)
    raw_genes = [f"g{j}" for j in range(50)]
    a = make_adata(raw_counts, "raw", genes=raw_genes)
    a.raw = a
    sub = a[:, 10:30].copy()
    sub.X = sp.csr_matrix(np.log1p(sub.X.toarray()).astype(np.float32))
    p = write(sub, work / "withraw.h5ad")
    back = read(p)
    assert back.raw is not None and back.raw.n_vars == 50 and back.n_vars == 20
    out = work / "withraw.corpus"
    run_cellarrow("convert", p, "-o", out, "--raw", "--quiet")
    corpus = read_corpus(out)
    assert corpus.manifest["n_genes"] == 50
    assert_sample_matches(corpus, "withraw", back, x=back.raw.X, var_names=back.raw.var_names, source="raw/X")
    assert corpus.manifest["value_type"] == "uint16"


def test_obs_column_types(work, run_cellarrow):
    rng = np.random.default_rng(14)
    n = 30
    x = random_csr(rng, n, 12)
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(rng.choice(["T", "B", "NK"], n)),
            "cat_with_na": pd.Categorical(["a" if i % 4 else None for i in range(n)], categories=["a", "zz"]),
            "donor": [f"D{i % 3}" for i in range(n)],
            "count_i64": rng.integers(-(2**40), 2**40, n),
            "count_i32": rng.integers(-100, 100, n).astype(np.int32),
            "u8": rng.integers(0, 255, n).astype(np.uint8),
            "f32": rng.normal(size=n).astype(np.float32),
            "f64_nan": np.where(np.arange(n) % 5 == 0, np.nan, rng.normal(size=n)),
            "flag": np.arange(n) % 2 == 0,
            "nullable_int": pd.array([None if i % 3 == 0 else i * 7 for i in range(n)], dtype="Int64"),
            "nullable_bool": pd.array([None if i % 4 == 1 else bool(i % 2) for i in range(n)], dtype="boolean"),
            "total": rng.normal(size=n),  # clashes with a reserved column
        }
    )
    p = write(make_adata(x, "obs", obs=obs), work / "obstypes.h5ad")
    back = read(p)
    assert back.obs["nullable_int"].dtype == "Int64" and back.obs["nullable_int"].isna().sum() == 10
    assert back.obs["nullable_bool"].dtype == "boolean" and back.obs["nullable_bool"].isna().sum() > 0
    out = work / "obstypes.corpus"
    run_cellarrow("convert", p, "-o", out, "--quiet")
    corpus = read_corpus(out)
    assert_sample_matches(corpus, "obstypes", back)
    obs_t = corpus.obs
    assert obs_t.column("nullable_int").null_count == int(back.obs["nullable_int"].isna().sum())
    assert obs_t.column("nullable_bool").null_count == int(back.obs["nullable_bool"].isna().sum())
    assert obs_t.column("cat_with_na").null_count == int(back.obs["cat_with_na"].isna().sum())
    assert pa.types.is_boolean(obs_t.schema.field("nullable_bool").type)
    assert pa.types.is_integer(obs_t.schema.field("nullable_int").type)
    # The reserved `total` is cellarrow's; the source column is kept as obs_total.
    assert "obs_total" in obs_t.column_names
    row_sums = np.asarray(to_csr64(back.X).sum(axis=1)).ravel()
    assert np.allclose(obs_t.column("total").to_numpy(), row_sums, rtol=1e-12, atol=0)


def test_obs_columns_option(work, run_cellarrow):
    rng = np.random.default_rng(15)
    obs = pd.DataFrame({"a": np.arange(20), "b": pd.Categorical(["x", "y"] * 10), "c": [1.5] * 20})
    p = write(make_adata(random_csr(rng, 20, 8), "sel", obs=obs), work / "select.h5ad")
    out = work / "select.corpus"
    run_cellarrow("convert", p, "-o", out, "--obs-columns", "b,c", "--quiet")
    cols = read_corpus(out).obs.column_names
    assert "b" in cols and "c" in cols and "a" not in cols


@pytest.mark.parametrize("compression", ["gzip", "lzf"])
def test_compression_filters(compression, work, run_cellarrow):
    rng = np.random.default_rng(16)
    x = random_csr(rng, 70, 40)
    obs = pd.DataFrame({"group": pd.Categorical(rng.choice(["u", "v"], 70))})
    p_csr = write(make_adata(x, "c", obs=obs), work / f"{compression}_csr.h5ad", compression=compression)
    p_dense = write(
        make_adata(x.toarray(), "d", obs=obs), work / f"{compression}_dense.h5ad", compression=compression
    )
    with h5py.File(p_csr, "r") as f:
        assert f["X/data"].compression == compression, "test setup: filter not applied"
    with h5py.File(p_dense, "r") as f:
        assert f["X"].compression == compression, "test setup: filter not applied"
    out = work / f"{compression}.corpus"
    run_cellarrow("convert", p_csr, p_dense, "-o", out, "--quiet")
    corpus = read_corpus(out)
    for p in (p_csr, p_dense):
        assert_sample_matches(corpus, p.stem, read(p), source_path=p)


def morton(coords: list[int], bits: int) -> int:
    key = 0
    for b in range(bits):
        for d, c in enumerate(coords):
            key |= ((c >> b) & 1) << (b * len(coords) + d)
    return key


def test_spatial_2d_3d_and_plain_in_one_corpus(work, run_cellarrow):
    rng = np.random.default_rng(17)
    # 2-D: a shuffled 8x8 grid. 3-D: a shuffled 4x4x4 grid. Equal spans on every axis, so
    # Z-order of the quantised coordinates is the Morton order of the grid indices.
    grid2 = np.array([(i, j) for i in range(8) for j in range(8)])
    grid2 = grid2[rng.permutation(len(grid2))]
    grid3 = np.array([(i, j, k) for i in range(4) for j in range(4) for k in range(4)])
    grid3 = grid3[rng.permutation(len(grid3))]
    a2 = make_adata(random_csr(rng, len(grid2), 20), "s2")
    a2.obsm["spatial"] = 100.0 + 12.5 * grid2
    a3 = make_adata(random_csr(rng, len(grid3), 20), "s3")
    a3.obsm["spatial"] = -3.0 + 0.25 * grid3
    plain = make_adata(random_csr(rng, 15, 20), "plain")
    p2, p3, pp = (write(a, work / f"{n}.h5ad") for a, n in ((a2, "sp2d"), (a3, "sp3d"), (plain, "plain")))
    out = work / "spatial.corpus"
    run_cellarrow("convert", p2, pp, p3, "-o", out, "--quiet")
    corpus = read_corpus(out)
    b2, b3, bp = read(p2), read(p3), read(pp)
    assert_sample_matches(corpus, "sp2d", b2)
    assert_sample_matches(corpus, "sp3d", b3)
    assert_sample_matches(corpus, "plain", bp)
    assert "z" in corpus.obs.column_names
    assert corpus.sample_obs("sp2d").column("z").null_count == b2.n_obs
    for col in "xyz":
        assert corpus.sample_obs("plain").column(col).null_count == bp.n_obs
    # Storage order is the Z-order of the coordinates.
    for sid, grid, bits in (("sp2d", grid2, 3), ("sp3d", grid3, 2)):
        src = np.asarray(corpus.sample_obs(sid).column("source_row").to_pylist())
        keys = [morton(list(map(int, grid[r])), bits) for r in src]
        assert keys == sorted(keys), f"{sid}: cells are not stored in Z-order"
    dims = {r["sample_id"]: r["spatial_dims"] for r in corpus.samples.to_pylist()}
    assert dims == {"sp2d": 2, "plain": 0, "sp3d": 3}


def test_overlapping_gene_sets_union(work, run_cellarrow):
    rng = np.random.default_rng(18)
    gene_sets = [
        [f"G{j}" for j in range(0, 60)],
        [f"G{j}" for j in rng.permutation(np.arange(30, 90))],
        [f"G{j}" for j in rng.permutation(np.r_[0:10, 80:100])] + ["ONLY_C"],
    ]
    paths = []
    for k, genes in enumerate(gene_sets):
        x = random_csr(rng, 25 + 5 * k, len(genes), density=0.3)
        paths.append(write(make_adata(x, f"s{k}", genes=genes), work / f"overlap{k}.h5ad"))
    out = work / "overlap.corpus"
    run_cellarrow("convert", *paths, "-o", out, "--quiet")
    corpus = read_corpus(out)
    union = set().union(*map(set, gene_sets))
    names = corpus.gene_names()
    assert len(names) == len(union) and set(names) == union
    assert dict(zip(names, corpus.genes.column("n_samples").to_pylist())) == {
        g: sum(g in set(s) for s in gene_sets) for g in union
    }
    total_cells = {g: 0 for g in union}
    for p in paths:
        a = read(p)
        assert_sample_matches(corpus, p.stem, a)
        # The (gene name -> value) dict of each cell, straight from anndata.
        x = to_csr64(a.X)
        obs = corpus.sample_obs(p.stem)
        first = corpus.sample_row(p.stem)["first_cell"]
        for pos, src in enumerate(obs.column("source_row").to_pylist()):
            lo, hi = x.indptr[src], x.indptr[src + 1]
            want = {str(a.var_names[j]): v for j, v in zip(x.indices[lo:hi], x.data[lo:hi])}
            row = corpus.matrix[first + pos]
            got = {names[j]: v for j, v in zip(row.indices, row.data)}
            assert got == want, f"{p.stem} cell {a.obs_names[src]}"
            for g in want:
                total_cells[g] += 1
    assert dict(zip(names, corpus.genes.column("n_cells").to_pylist())) == total_cells


def test_fixed_vocabulary(work, run_cellarrow):
    rng = np.random.default_rng(19)
    genes_a = [f"V{j}" for j in range(30)]
    genes_b = [f"V{j}" for j in range(20, 45)]
    pa_ = write(make_adata(random_csr(rng, 40, 30, density=0.4), "va", genes=genes_a), work / "vocab_a.h5ad")
    pb_ = write(make_adata(random_csr(rng, 35, 25, density=0.4), "vb", genes=genes_b), work / "vocab_b.h5ad")
    vocab = [f"V{j}" for j in rng.permutation(np.arange(5, 25))] + ["NOT_MEASURED"]
    vocab_file = work / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n")
    out = work / "vocab.corpus"
    proc = run_cellarrow("convert", pa_, pb_, "-o", out, "--vocab", vocab_file)
    corpus = read_corpus(out)
    assert corpus.gene_names() == vocab, "a fixed vocabulary keeps its ids"
    assert "warning" in proc.stderr.lower(), proc.stderr
    vset = set(vocab)
    for p in (pa_, pb_):
        a = read(p)
        assert_sample_matches(corpus, p.stem, a)
        x = to_csr64(a.X)
        outside_cols = [j for j, g in enumerate(a.var_names) if g not in vset]
        want_outside_nnz = int(x[:, outside_cols].nnz)
        row = corpus.sample_row(p.stem)
        assert row["n_genes_outside_vocab"] == len(outside_cols)
        assert row["nnz_outside_vocab"] == want_outside_nnz
        assert want_outside_nnz > 0, "test setup: some non-zeros fall outside the vocabulary"
        assert p.stem in proc.stderr, f"the warning names {p.stem}: {proc.stderr}"
    counts = dict(zip(corpus.gene_names(), corpus.genes.column("n_samples").to_pylist()))
    assert counts["NOT_MEASURED"] == 0


def test_gene_column(work, run_cellarrow, data_dir):
    path = data_dir / "scanpy_10x_v3_chr21_counts.h5ad"
    out = work / "gene_ids.corpus"
    run_cellarrow("convert", path, "-o", out, "--gene-column", "gene_ids", "--quiet")
    corpus = read_corpus(out)
    a = read(path)
    ids = list(map(str, a.var["gene_ids"]))
    assert set(corpus.gene_names()) == set(ids) and len(corpus.gene_names()) == len(ids)
    assert_sample_matches(corpus, path.stem, a, var_names=ids)


def test_vocab_from_another_corpus(work, run_cellarrow):
    rng = np.random.default_rng(20)
    first = write(make_adata(random_csr(rng, 30, 40), "f", genes=[f"K{j}" for j in range(40)]), work / "voc1.h5ad")
    second_genes = [f"K{j}" for j in rng.permutation(np.arange(20, 60))]
    second = write(make_adata(random_csr(rng, 30, 40), "s", genes=second_genes), work / "voc2.h5ad")
    out1 = work / "voc1.corpus"
    run_cellarrow("convert", first, "-o", out1, "--quiet")
    out2 = work / "voc2.corpus"
    run_cellarrow("convert", second, "-o", out2, "--vocab", out1, "--quiet")
    c1, c2 = read_corpus(out1), read_corpus(out2)
    assert c2.gene_names() == c1.gene_names(), "corpora share gene ids"
    b = read(second)
    assert_sample_matches(c2, "voc2", b)
    row = c2.sample_row("voc2")
    outside = [j for j, g in enumerate(b.var_names) if g not in set(c1.gene_names())]
    assert row["n_genes_outside_vocab"] == len(outside) == 20
    assert row["nnz_outside_vocab"] == to_csr64(b.X)[:, outside].nnz


def test_non_finite_coordinates_go_last(work, run_cellarrow):
    rng = np.random.default_rng(21)
    n = 30
    coords = rng.uniform(0, 100, size=(n, 2))
    bad_rows = [3, 11, 17]
    coords[3, 0] = np.nan
    coords[11, 1] = np.inf
    coords[17] = np.nan
    a = make_adata(random_csr(rng, n, 10), "nf")
    a.obsm["spatial"] = coords
    p = write(a, work / "nonfinite.h5ad")
    out = work / "nonfinite.corpus"
    run_cellarrow("convert", p, "-o", out, "--quiet")
    corpus = read_corpus(out)
    b = read(p)
    assert_sample_matches(corpus, "nonfinite", b)
    src = corpus.sample_obs("nonfinite").column("source_row").to_pylist()
    assert src[-3:] == bad_rows, "cells with non-finite coordinates come last, in source order"


def test_unicode_names(work, run_cellarrow):
    rng = np.random.default_rng(22)
    genes = ["Gène-β", "ACTB", "基因", "TP53", "Ω-1"]
    obs = pd.DataFrame({"région": pd.Categorical(["cortex-é", "海马"] * 6)})
    a = make_adata(random_csr(rng, 12, len(genes), density=0.6), "zelle-ä", genes=genes, obs=obs)
    p = write(a, work / "unicode.h5ad")
    out = work / "unicode.corpus"
    run_cellarrow("convert", p, "-o", out, "--quiet")
    corpus = read_corpus(out)
    assert sorted(corpus.gene_names()) == sorted(genes)
    assert_sample_matches(corpus, "unicode", read(p))
