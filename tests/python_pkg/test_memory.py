"""Iterating epochs does not grow private memory: the mapped corpus is the cache."""

from __future__ import annotations

import gc
import subprocess
import sys

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


# Run in a fresh interpreter: what a DataLoader worker or a reader process pays to open a
# corpus, read an obs column and take batches as numpy/scipy. pyarrow's `to_numpy()` and
# `pa.table()` would set up its conversion machinery here, about 30 MB for the process's life.
_LEAN_READER = """
import sys
import numpy as np, scipy.sparse
import cellarrow

def anon_mb():
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            if line.startswith("Anonymous:"):
                return int(line.split()[1]) / 1024
    raise SystemExit("no Anonymous line in smaps_rollup")

before = anon_mb()
corpus = cellarrow.open(sys.argv[1])
rows = corpus.table("obs", ["source_row"]).column("source_row")
assert sum(len(c) for c in rows.chunks) == corpus.n_cells
nnz = 0
for ids in np.array_split(np.arange(corpus.n_cells), 20):
    nnz += corpus.get(ids).to_scipy().nnz
assert nnz == corpus.nnz
for batch in corpus.loader(batch_size=256, seed=0, threads=0):
    assert batch.indices.flags.writeable is False and len(batch.values) == batch.indptr[-1]
print(anon_mb() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps_rollup")
def test_reading_tables_and_batches_keeps_the_process_lean(workdir):
    path = convert([DATA / "scanpy_10x_10k_subset_mouse_counts.h5ad"], workdir / "mouse10k-lean.corpus")
    out = subprocess.run([sys.executable, "-c", _LEAN_READER, str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    grown = float(out.stdout.split()[-1])
    print(f"anonymous memory: +{grown:.1f} MB to open, read obs and take every cell as batches")
    # The Rust side holds a few MB of batch buffers; pyarrow's conversion set-up alone is ~30 MB.
    assert grown < 15, f"anonymous memory grew by {grown:.1f} MB"
