"""cellarrow: `cellarrow convert` (release CLI), read back with the `cellarrow` Python package.

Random ids go through `Corpus.get(ids)` (one Rust gather per call, the map-style access that
per-cell readers offer) and `Batch.to_scipy()`; the "own loader" row iterates
`corpus.loader(batch_size=256)` (fully random cells, gathered ahead by two Rust threads) and
converts every batch to scipy CSR. The torch rows use a map-style dataset whose
`__getitems__` is one `Corpus.get` per batch, so that every tool sees the same sampler.
Ids are source rows; spatial samples are stored in Z-order, so they are mapped to global cell
ids through obs.parquet (`source_row`).
"""

from __future__ import annotations

import os
import subprocess

NAME = "cellarrow"
# cellarrow's loader is per-cell random already: no chunked variant to report.
OWN_ROWS = (("own", None),)


def backend() -> str:
    import cellarrow

    return f"cellarrow Python package {cellarrow.__version__}"


def convert(h5ad: str, outdir: str, bin: str = None) -> None:
    bin = bin or os.environ["CELLARROW_BIN"]
    subprocess.run([bin, "convert", h5ad, "-o", outdir, "--quiet", "--overwrite"], check=True)


class _Handle:
    def __init__(self, outdir: str):
        import cellarrow
        import numpy as np

        self.corpus = cellarrow.open(outdir)
        # Single-sample cohorts: obs row c is cell c, so `source_row` is cell -> source row,
        # and its inverse source row -> cell. int32 halves what this map adds to the process's
        # memory (8 bytes per cell in all), which no other tool needs.
        n = self.corpus.n_cells
        assert n < 2**31
        # Through DLPack: pyarrow's to_numpy sets up its conversion machinery (about 30 MB).
        col = self.corpus.table("obs", ["source_row"]).column("source_row")
        self.src_of = np.concatenate([np.from_dlpack(c) for c in col.chunks]).astype(np.int32)
        assert len(self.src_of) == n
        self.cell_of = np.empty(n, dtype=np.int32)
        self.cell_of[self.src_of] = np.arange(n, dtype=np.int32)


def open(outdir: str, h5ad: str):
    return _Handle(outdir)


def genes(h):
    import numpy as np

    return np.asarray(h.corpus.gene_names, dtype=object)


def fetch_cells(h, ids):
    import numpy as np

    return h.corpus.get(h.cell_of[np.asarray(ids)]).to_scipy()


def _loader(h, seed=0):
    return h.corpus.loader("random", batch_size=256, seed=seed, threads=2)


def own_batches(h, n_batches, batch_size, opts):
    from common import touch

    for k, b in enumerate(_loader(h)):
        touch(b.to_scipy())
        if k + 1 >= n_batches:
            break


def check_own_batches(h, h5ad, ref_genes):
    import numpy as np
    from common import compare, reference_rows, to_gene_space

    b = next(iter(_loader(h, seed=1)))
    got = to_gene_space(b.to_scipy(), genes(h), ref_genes)
    return compare(got, reference_rows(h5ad, h.src_of[b.cells.astype(np.int64)]))


class _TorchDataset:
    """Map-style dataset over source-row ids with batched `__getitems__` (one gather per batch)."""

    def __init__(self, outdir):
        self.outdir, self.h = outdir, None

    def _handle(self):
        if self.h is None:  # opened lazily, once per DataLoader worker
            self.h = _Handle(self.outdir)
        return self.h

    def __len__(self):
        return len(self._handle().cell_of)

    def __getitem__(self, i):
        return fetch_cells(self._handle(), [i])

    def __getitems__(self, ids):
        return fetch_cells(self._handle(), ids)


def torch_dataset(outdir, h5ad):
    return _TorchDataset(outdir), (lambda m: m)
