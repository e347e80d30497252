"""cellarrow: `cellarrow convert` (release CLI), then the corpus read back.

Reader: the `cellarrow` Python package when it is installed in the harness venv; until it is,
the corpus is read exactly as docs/FORMAT.md says any reader can: each `matrix/part-*.arrow`
IPC stream memory-mapped with pyarrow (`pa.memory_map` + `ipc.open_stream`, no copy), list
offsets as the CSR indptr, and cells gathered with numpy slices of the mapped buffers.
Ids are source rows; spatial samples are stored in Z-order, so they are mapped to global cell
ids through obs.parquet (`source_row`).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess

NAME = "cellarrow"


def backend() -> str:
    try:
        import cellarrow  # noqa: F401

        return f"cellarrow package {getattr(cellarrow, '__version__', '?')} present; reads via pyarrow mmap"
    except Exception:
        return "pyarrow memory-mapped IPC streams (cellarrow Python package not installed)"


def convert(h5ad: str, outdir: str, bin: str = None) -> None:
    bin = bin or os.environ["CELLARROW_BIN"]
    subprocess.run([bin, "convert", h5ad, "-o", outdir, "--quiet", "--overwrite"], check=True)


class Corpus:
    def __init__(self, outdir: str):
        import numpy as np
        import pyarrow as pa
        import pyarrow.ipc as ipc
        import pyarrow.parquet as pq

        root = pathlib.Path(outdir)
        self.manifest = json.loads((root / "manifest.json").read_text())
        self.n_genes = int(self.manifest["n_genes"])
        starts, self.batches = [], []
        for part in self.manifest["matrix"]["parts"]:
            reader = ipc.open_stream(pa.memory_map(str(root / part["path"]), "r"))
            first = int(part["first_cell"])
            for rb in reader:
                if rb.num_rows == 0:
                    continue
                idx, val = rb.column("indices"), rb.column("values")
                offsets = idx.offsets.to_numpy(zero_copy_only=True)
                self.batches.append((offsets, idx.values.to_numpy(zero_copy_only=True),
                                     val.values.to_numpy(zero_copy_only=True)))
                starts.append(first)
                first += rb.num_rows
        self.starts = np.asarray(starts, dtype=np.int64)
        self.genes = pq.read_table(root / "genes.parquet", columns=["name"]).column("name").to_numpy(zero_copy_only=False)
        obs = pq.read_table(root / "obs.parquet", columns=["cell", "source_row"])
        src = obs.column("source_row").to_numpy()
        cell = obs.column("cell").to_numpy()
        # Single-sample cohorts: source row -> global cell id.
        self.cell_of = np.empty(len(src), dtype=np.int64)
        self.cell_of[src] = cell
        self.np = np

    def cells(self, cell_ids):
        """CSR (indptr, indices, values) of `cell_ids`, in that order: one vectorised gather per
        record batch touched (no per-cell Python loop)."""
        np = self.np
        cell_ids = np.asarray(cell_ids, dtype=np.int64)
        b = np.searchsorted(self.starts, cell_ids, side="right") - 1
        lens = np.empty(len(cell_ids), dtype=np.int64)
        begins = np.empty(len(cell_ids), dtype=np.int64)
        ub = np.unique(b)
        for bi in ub.tolist():
            sel = np.nonzero(b == bi)[0] if len(ub) > 1 else slice(None)
            off = self.batches[bi][0]
            r = cell_ids[sel] - self.starts[bi]
            begins[sel] = off[r]
            lens[sel] = off[r + 1] - off[r]
        ptr = np.zeros(len(cell_ids) + 1, dtype=np.int64)
        np.cumsum(lens, out=ptr[1:])
        total = int(ptr[-1])
        # position of every output non-zero in its batch's child arrays
        src = np.arange(total, dtype=np.int64) + np.repeat(begins - ptr[:-1], lens)
        if len(ub) == 1:
            _, ind, val = self.batches[int(ub[0])]
            return ptr, ind[src], val[src]
        ind = np.empty(total, dtype=self.batches[0][1].dtype)
        val = np.empty(total, dtype=self.batches[0][2].dtype)
        owner = np.repeat(b, lens)
        for bi in ub.tolist():
            m = owner == bi
            ind[m] = self.batches[bi][1][src[m]]
            val[m] = self.batches[bi][2][src[m]]
        return ptr, ind, val


def open(outdir: str, h5ad: str):
    return Corpus(outdir)


def genes(h):
    return h.genes


def fetch_cells(h, ids):
    import numpy as np
    import scipy.sparse as sp

    ptr, ind, val = h.cells(h.cell_of[np.asarray(ids, dtype=np.int64)])
    return sp.csr_matrix((val, ind, ptr), shape=(len(ptr) - 1, h.n_genes))


class _TorchDataset:
    """Map-style dataset over source-row ids with batched `__getitems__` (one gather per batch)."""

    def __init__(self, outdir, h5ad):
        self.outdir, self.h5ad, self.h = outdir, h5ad, None

    def _handle(self):
        if self.h is None:  # opened lazily, once per DataLoader worker
            self.h = open(self.outdir, self.h5ad)
        return self.h

    def __len__(self):
        return len(self._handle().cell_of)

    def __getitem__(self, i):
        return fetch_cells(self._handle(), [i])

    def __getitems__(self, ids):
        return fetch_cells(self._handle(), ids)


def torch_dataset(outdir, h5ad):
    return _TorchDataset(outdir, h5ad), (lambda m: m)
