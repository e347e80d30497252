"""Batches: values equal anndata's, zero-copy views, scipy / torch / polars conversions."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import torch

import cellarrow
from pkg_oracle import Oracle


@pytest.fixture(scope="module")
def synth_corpus(synth):
    return cellarrow.open(synth[0]), Oracle(cellarrow.open(synth[0]), synth[1])


@pytest.fixture(scope="module")
def chr21_corpus(chr21):
    corpus = cellarrow.open(chr21[0])
    return corpus, Oracle(corpus, [chr21[1]])


@pytest.mark.parametrize("which", ["synth", "chr21"])
def test_csr_batches_equal_anndata(which, synth_corpus, chr21_corpus):
    corpus, oracle = synth_corpus if which == "synth" else chr21_corpus
    seen = []
    for batch in corpus.loader(batch_size=97, seed=3):
        X = batch.to_scipy()
        assert X.shape == (batch.num_rows, corpus.n_genes)
        np.testing.assert_array_equal(X.toarray(), oracle.dense(batch.cells, corpus.n_genes))
        seen.extend(batch.cells.tolist())
    assert sorted(seen) == list(range(corpus.n_cells))


def test_map_style_access_equals_anndata_in_the_order_asked(synth_corpus):
    corpus, oracle = synth_corpus
    ids = [7, 0, corpus.n_cells - 1, 7, 3]
    batch = corpus.get(ids)
    assert batch.cells.tolist() == ids
    np.testing.assert_array_equal(batch.to_scipy().toarray(), oracle.dense(ids, corpus.n_genes))
    assert corpus[-1].cells.tolist() == [corpus.n_cells - 1]
    assert corpus[2:6].cells.tolist() == [2, 3, 4, 5]
    assert corpus[np.array([4, 1], dtype=np.int32)].cells.tolist() == [4, 1]
    assert corpus.get([]).num_rows == 0
    with pytest.raises(IndexError, match="out of range"):
        corpus[corpus.n_cells]
    # One rule for ids: negative ones count from the end, as corpus[-1] does.
    assert corpus.get([1, -2]).cells.tolist() == [1, corpus.n_cells - 2]
    with pytest.raises(IndexError, match=f"out of range: the corpus has {corpus.n_cells} cells"):
        corpus.get([corpus.n_cells + 5])
    with pytest.raises(TypeError, match="integers"):
        corpus.get([1.5])


@pytest.mark.parametrize("indices", ["i32", "native"])
def test_to_scipy_is_the_matrix_scipy_builds_and_passes_its_full_check(indices, synth_corpus):
    import pickle

    import scipy.sparse as sp

    corpus, oracle = synth_corpus
    batches = [corpus.get([9, 2, 9, 0]), next(iter(corpus.loader(batch_size=33, seed=2, indices=indices))), corpus.get([])]
    for batch in batches:
        X = batch.to_scipy(values="native")
        ref = sp.csr_matrix(
            (batch.values, np.asarray(batch.indices, dtype=np.int32), batch.indptr), shape=(batch.num_rows, corpus.n_genes)
        )
        assert type(X) is sp.csr_matrix and X.shape == ref.shape and X.dtype == ref.dtype
        assert X.indices.dtype == X.indptr.dtype == np.int32
        X.check_format(full_check=True)  # scipy's own validation of what it was not asked to check
        assert X.has_canonical_format and X.has_sorted_indices
        assert (X != ref).nnz == 0
        v = np.arange(corpus.n_genes, dtype=np.float64)
        np.testing.assert_array_equal(X @ v, ref @ v)
        np.testing.assert_array_equal(X.sum(axis=0), ref.sum(axis=0))
        np.testing.assert_array_equal(X.tocsc().toarray(), oracle.dense(batch.cells, corpus.n_genes))
        np.testing.assert_array_equal(pickle.loads(pickle.dumps(X)).toarray(), ref.toarray())
        if batch.num_rows:
            np.testing.assert_array_equal(X[1].toarray(), ref[1].toarray())
        Y = batch.to_scipy(copy=True, values="native")
        Y.data *= 2  # owns its arrays
        np.testing.assert_array_equal(Y.toarray(), 2 * ref.toarray())


@pytest.mark.parametrize("which", ["synth", "chr21"])
def test_int32_and_native_gene_ids_give_the_same_matrices(which, synth_corpus, chr21_corpus):
    corpus, oracle = synth_corpus if which == "synth" else chr21_corpus
    stored = np.dtype(corpus.manifest["index_type"])
    wide, narrow = (corpus.loader(batch_size=50, seed=1, indices=i) for i in ("i32", "native"))
    for a, b in zip(wide, narrow):
        assert a.indices.dtype == np.int32 and b.indices.dtype == stored
        X = a.to_scipy()
        # scipy takes int32 gene ids as they are: no widened copy.
        assert np.shares_memory(X.indices, a.indices)
        np.testing.assert_array_equal(X.toarray(), b.to_scipy().toarray())
        np.testing.assert_array_equal(X.toarray(), oracle.dense(a.cells, corpus.n_genes))
        t = a.to_torch()
        assert t.col_indices().data_ptr() == a.indices.ctypes.data
        np.testing.assert_array_equal(t.to_dense().numpy(), X.toarray())
    with pytest.raises(ValueError, match="unknown index type"):
        corpus.loader(indices="i16").schema


def test_map_style_batches_match_loader_batches(synth_corpus):
    corpus, _ = synth_corpus
    loaded = next(iter(corpus.loader(batch_size=20, seed=5)))
    got = corpus.get(loaded.cells)
    assert got.indices.dtype == np.int32 and got.values.dtype == np.dtype(corpus.manifest["value_type"])
    assert pa.record_batch(got).schema == loaded.record_batch.schema
    assert pa.record_batch(got).equals(loaded.record_batch)
    assert pl.DataFrame(got).equals(pl.DataFrame(loaded))
    assert torch.equal(got.to_torch(dense=True), loaded.to_torch(dense=True))


def test_scipy_views_are_read_only_and_copies_are_not(synth_corpus):
    corpus, oracle = synth_corpus
    batch = corpus.get([3, 1])
    view = batch.to_scipy(values="native")
    with pytest.raises(ValueError, match="read-only"):
        view.data[:] = 0
    f32 = next(iter(corpus.loader(batch_size=4, values="f32"))).to_scipy()
    with pytest.raises(ValueError, match="read-only"):
        f32.data[:] = 0
    owned = batch.to_scipy(copy=True)
    owned.data[:] = 0
    owned.eliminate_zeros()
    assert owned.nnz == 0
    # the batch is untouched
    np.testing.assert_array_equal(batch.to_scipy().toarray(), oracle.dense([3, 1], corpus.n_genes))


def test_dense_gene_subset_equals_anndata_columns(synth_corpus):
    corpus, oracle = synth_corpus
    genes = ["g30", "g0", "g54", "g21"]
    ids = [corpus.gene_names.index(g) for g in genes]
    for batch in corpus.loader(batch_size=64, seed=0, dense=genes):
        expect = oracle.dense(batch.cells, corpus.n_genes)[:, ids]
        np.testing.assert_array_equal(batch.dense, expect)
        t = batch.to_torch()
        assert t.shape == (batch.num_rows, 4) and t.layout == torch.strided
        np.testing.assert_array_equal(t.numpy(), expect)
    batch = next(iter(corpus.loader(batch_size=8, dense=[ids[0], ids[1]])))
    assert batch.dense.shape == (8, 2)


def test_views_share_the_batch_buffers(synth_corpus):
    corpus, _ = synth_corpus
    batch = next(iter(corpus.loader(batch_size=32, seed=1, values="f32")))
    rb = batch.record_batch

    def addr(arr: pa.Array) -> int:
        return arr.buffers()[1].address

    values = rb.column("values").values
    assert batch.values.ctypes.data == addr(values)
    assert batch.indices.ctypes.data == addr(rb.column("indices").values)
    assert batch.indptr.ctypes.data == rb.column("indices").buffers()[1].address
    assert batch.cells.ctypes.data == addr(rb.column("cell"))
    # Through the PyCapsule interface: the same memory in pyarrow and polars.
    again = pa.record_batch(batch)
    assert addr(again.column("values").values) == addr(values)
    df = pl.DataFrame(batch)
    assert df.height == 32
    # torch: the CSR values tensor is a view of the same buffer.
    t = batch.to_torch()
    assert t.layout == torch.sparse_csr
    assert t.values().data_ptr() == addr(values)
    assert t.crow_indices().data_ptr() == batch.indptr.ctypes.data
    dense_batch = next(iter(corpus.loader(batch_size=8, dense="all")))
    assert dense_batch.to_torch().data_ptr() == dense_batch.record_batch.column("dense").values.buffers()[1].address


def test_torch_csr_equals_scipy(chr21_corpus):
    corpus, oracle = chr21_corpus
    batch = next(iter(corpus.loader(batch_size=50, seed=9)))
    np.testing.assert_array_equal(batch.to_torch(dense=True).numpy(), batch.to_scipy().toarray())
    np.testing.assert_array_equal(batch.to_torch().to_dense().numpy(), oracle.dense(batch.cells, corpus.n_genes))


def test_obs_and_coordinates_follow_the_cells(synth_corpus):
    corpus, _ = synth_corpus
    obs = corpus.table("obs", ["cell", "cell_type", "x", "y"], format="polars")
    for batch in corpus.loader(batch_size=50, seed=5, obs=["cell_type", "score"], coords=True):
        cells = batch.cells
        expect = obs[cells.astype(np.int64)]
        assert batch.obs["cell_type"].to_pylist() == expect["cell_type"].cast(pl.String).to_list()
        np.testing.assert_array_equal(batch.obs["x"].to_numpy(), expect["x"].to_numpy())
        assert sorted(batch.obs.column_names) == ["cell", "cell_type", "score", "x", "y"]


def test_blocks_with_bounds_carry_the_box_and_normalised_coordinates(synth_corpus):
    from cellarrow.torch import collate

    corpus, _ = synth_corpus
    n = 0
    for batch in corpus.loader("blocks", block_size=4.0, batch_size=3, bounds=True):
        rb = pa.record_batch(batch)
        groups = rb.column("group").to_numpy()
        for axis in ("x", "y"):
            v, lo, hi, norm = (rb.column(c).to_numpy() for c in (axis, f"min_{axis}", f"max_{axis}", f"{axis}_norm"))
            np.testing.assert_allclose(hi - lo, 4.0)
            assert ((lo <= v) & (v < hi)).all(), "every cell lies in its block"
            np.testing.assert_allclose(norm, (v - lo) / 4.0)
            assert ((0 <= norm) & (norm < 1)).all()
            for g in np.unique(groups):  # one box per group
                assert len(np.unique(lo[groups == g])) == 1
        t = collate(batch)
        assert t["x_norm"].dtype == torch.float64 and t["x_norm"].shape == (batch.num_rows,)
        n += batch.num_rows
    assert n == corpus.n_cells, "a tiling serves every cell"
    with pytest.raises(ValueError, match="bounds need groups with a box"):
        corpus.loader("random", bounds=True).schema


def test_loader_epochs_state_and_resume(synth_corpus):
    corpus, _ = synth_corpus
    loader = corpus.loader(batch_size=16, seed=2)
    e0 = np.concatenate([b.cells for b in loader])
    again = np.concatenate([b.cells for b in loader])  # iter() restarts the current epoch
    np.testing.assert_array_equal(again, e0)
    loader.set_epoch(1)
    e1 = np.concatenate([b.cells for b in loader])
    assert sorted(e0) == sorted(e1) == list(range(220))
    assert not np.array_equal(e0, e1)
    loader.set_epoch(0)
    it = iter(loader)
    head = [next(it).cells for _ in range(5)]
    state = loader.state_dict()
    assert state == {"epoch": 0, "position": 80}
    # A pass broken off and begun again starts the epoch afresh, as torch's DataLoader does.
    np.testing.assert_array_equal(next(iter(loader)).cells, e0[:16])
    resumed = corpus.loader(batch_size=16, seed=2)
    resumed.load_state_dict(state)
    resumed.set_epoch(0)  # the resume of the same epoch is kept
    assert len(resumed) == 14 - 5
    tail = [b.cells for b in resumed]
    np.testing.assert_array_equal(np.concatenate(head + tail), e0)
    # The resume was for one pass: the next starts the epoch.
    np.testing.assert_array_equal(np.concatenate([b.cells for b in resumed]), e0)
    resumed.load_state_dict(state)
    resumed.set_epoch(1)  # another epoch drops the resume
    np.testing.assert_array_equal(np.concatenate([b.cells for b in resumed]), e1)


def test_cohort_loader_serves_only_the_cohort(synth_corpus):
    corpus, _ = synth_corpus
    t = corpus.where("sample_id = 'sb' AND cell_type <> 'NK'")
    cells = np.concatenate([b.cells for b in t.loader(batch_size=7, seed=0)])
    assert sorted(cells.tolist()) == t.cells.tolist()
    # Any integer sequence (or a pyarrow array) is a cohort too.
    cells2 = np.concatenate([b.cells for b in cellarrow.Loader(corpus, cohort=pa.array(t.cells), batch_size=7, seed=0)])
    np.testing.assert_array_equal(cells, cells2)


def test_shards_partition_the_epoch(synth_corpus):
    corpus, _ = synth_corpus
    parts = [
        np.concatenate([b.cells for b in corpus.loader(batch_size=10, seed=4, rank=r, world_size=3)])
        for r in range(3)
    ]
    assert sorted(np.concatenate(parts).tolist()) == list(range(220))
    assert {len(p) for p in parts} <= {73, 74}


def test_the_gil_is_released_while_rust_gathers(chr21_corpus):
    import threading

    corpus, _ = chr21_corpus
    ticks, stop = [0], threading.Event()

    def spin():
        while not stop.is_set():
            ticks[0] += 1

    t = threading.Thread(target=spin)
    t.start()
    try:
        during = []
        for seed in range(3):
            loader = iter(corpus.loader(batch_size=1024, seed=seed, threads=0, dense="all"))
            before = ticks[0]
            next(loader)  # gathered on this thread, inside Rust, with the GIL released
            during.append(ticks[0] - before)
    finally:
        stop.set()
        t.join()
    assert sum(during) > 0, "a Python thread ran while batches were gathered"
