"""Iterating epochs does not grow private memory: the mapped corpus is the cache."""

from __future__ import annotations

import gc

import psutil
import pytest

import cellarrow
from pkg_fixtures import DATA, convert


def private_mb() -> float:
    """Private (anonymous + private dirty) memory of this process, in MB: USS excludes the
    shared, file-backed pages of the mapped corpus."""
    return psutil.Process().memory_full_info().uss / 1e6


def test_epochs_do_not_grow_private_memory(workdir):
    corpus = cellarrow.open(
        convert([DATA / "scanpy_10x_10k_subset_mouse_counts.h5ad"], workdir / "mouse10k.corpus", "--part-cells", "4000")
    )
    loader = corpus.loader(batch_size=256, seed=0, values="f32", threads=2)

    def epoch():
        n = 0
        for batch in loader:
            n += batch.to_scipy().nnz
        return n

    assert epoch() == corpus.nnz  # warm-up: allocator pools, imports, page cache
    gc.collect()
    before = private_mb()
    for _ in range(3):
        assert epoch() == corpus.nnz
    gc.collect()
    grown = private_mb() - before
    print(f"private memory: {before:.0f} MB before, +{grown:.1f} MB after 3 epochs of {corpus.n_cells} cells")
    # One epoch's worth of batches held would be > 10 MB here (691,914 f32 values + indices).
    assert grown < 8, f"private memory grew by {grown:.1f} MB over 3 epochs"
