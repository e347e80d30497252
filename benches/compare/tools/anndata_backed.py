"""anndata backed mode: `anndata.read_h5ad(path, backed='r')` on the source file itself.

No conversion. Rows are read with `adata.X[sorted ids]` (h5py fancy indexing needs increasing
indices) and put back in the requested order.
"""

from __future__ import annotations

NAME = "anndata-backed"
NO_CONVERT = "reads the .h5ad itself"


def open(outdir: str, h5ad: str):
    import anndata as ad

    return ad.read_h5ad(h5ad, backed="r")


def genes(h):
    return h.var_names.to_numpy()


def fetch_cells(h, ids):
    import numpy as np
    import scipy.sparse as sp

    ids = np.asarray(ids, dtype=np.int64)
    uniq, inv = np.unique(ids, return_inverse=True)
    m = h.X[uniq]
    m = sp.csr_matrix(m)
    return m[inv] if len(uniq) != len(ids) or (inv != np.arange(len(ids))).any() else m


class _TorchDataset:
    def __init__(self, h5ad):
        self.h5ad, self.h = h5ad, None

    def _handle(self):
        if self.h is None:
            self.h = open(None, self.h5ad)
        return self.h

    def __len__(self):
        return self._handle().n_obs

    def __getitem__(self, i):
        return fetch_cells(self._handle(), [i])

    def __getitems__(self, ids):
        return fetch_cells(self._handle(), ids)


def torch_dataset(outdir, h5ad):
    return _TorchDataset(h5ad), (lambda m: m)
