"""TileDB-SOMA: `tiledbsoma.io.from_h5ad` into a SOMA Experiment (measurement "RNA").

Reading: `X["data"].read(coords=(ids,)).tables()` (COO Arrow tables, soma_joinid = source row),
turned into CSR in the requested order. Its PyTorch loader lives in the separate
`tiledbsoma-ml` package, not installed here, so the torch rows are n/a.
"""

from __future__ import annotations

NAME = "tiledbsoma"
NO_TORCH = "the PyTorch loader is the separate tiledbsoma-ml package (not installed)"


def convert(h5ad: str, outdir: str) -> None:
    import tiledbsoma.io

    tiledbsoma.io.from_h5ad(outdir, h5ad, measurement_name="RNA")


class _Handle:
    def __init__(self, outdir):
        import tiledbsoma

        self.exp = tiledbsoma.Experiment.open(outdir)
        ms = self.exp.ms["RNA"]
        self.X = ms.X["data"]
        var = ms.var.read(column_names=["soma_joinid", "var_id"]).concat().to_pandas()
        self.genes = var.sort_values("soma_joinid")["var_id"].to_numpy()


def open(outdir: str, h5ad: str):
    return _Handle(outdir)


def genes(h):
    return h.genes


def fetch_cells(h, ids):
    import numpy as np
    import scipy.sparse as sp

    ids = np.asarray(ids, dtype=np.int64)
    uniq, inv = np.unique(ids, return_inverse=True)
    t = h.X.read(coords=(uniq,)).tables().concat()
    r = t.column("soma_dim_0").to_numpy()
    c = t.column("soma_dim_1").to_numpy()
    v = t.column("soma_data").to_numpy()
    pos = np.searchsorted(uniq, r)
    m = sp.csr_matrix((v, (pos, c)), shape=(len(uniq), len(h.genes)))
    return m[inv]
