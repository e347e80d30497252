"""The anndata oracle: expected CSR rows of corpus cells, read from the source h5ad files."""

from __future__ import annotations

import numpy as np


class Oracle:
    """Maps global cell ids to (h5ad file, source row) through the obs table and reads the rows
    with anndata, re-indexed into the corpus vocabulary."""

    def __init__(self, corpus, sources):
        import anndata as ad

        obs = corpus.table("obs", ["cell", "sample_id", "source_row"])
        self.sample = obs.column("sample_id").to_pylist()
        self.row = obs.column("source_row").to_numpy()
        vocab = {g: i for i, g in enumerate(corpus.gene_names)}
        self.data = {}
        for path in sources:
            a = ad.read_h5ad(path)
            X = a.X.toarray() if hasattr(a.X, "toarray") else np.asarray(a.X)
            # A gene is named by its stable id where the file has one (`gene_ids`, version
            # dropped; docs/FORMAT.md, Gene identity), else by its var_name.
            ids = [str(g).split(".")[0] for g in a.var["gene_ids"]] if "gene_ids" in a.var.columns else None
            cols = np.array([vocab[ids[j]] if ids and ids[j] in vocab else vocab[g] for j, g in enumerate(a.var_names)])
            self.data[path.stem] = (X, cols)

    def row_of(self, cell: int):
        """(gene ids, values) of `cell`, gene ids increasing, zeros left out."""
        X, cols = self.data[self.sample[cell]]
        r = X[self.row[cell]]
        nz = r != 0
        g, v = cols[nz], r[nz]
        order = np.argsort(g)
        return g[order], v[order]

    def dense(self, cells, n_genes: int) -> np.ndarray:
        out = np.zeros((len(cells), n_genes), dtype=np.float64)
        for i, c in enumerate(cells):
            g, v = self.row_of(int(c))
            out[i, g] = v
        return out
