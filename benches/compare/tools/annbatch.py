"""annbatch: pre-shuffled, sharded zarr stores (`DatasetCollection.add_adatas`) read by `Loader`.

Runs in its own Python 3.12 venv. Conversion: `DatasetCollection(out).add_adatas([h5ad])` with the
defaults (shuffle=True; fixed rng for reproducibility), zarr with the zarrs codec pipeline as the
documentation asks for local disks. Random ids are served with `anndata.io.sparse_dataset` over
each shuffled dataset's X (mapped from source rows through obs names). The "own loader" rows use
`Loader(batch_size=256, chunk_size=32, preload_nchunks=256, shuffle=True)` as in its README, and
again with chunk_size=1 (true per-cell randomness); X only, no obs columns (as the README advises).
"""

from __future__ import annotations

import pathlib
import sys

NAME = "annbatch"
NO_TORCH = "the annbatch Loader is the iterable itself (see its own-loader rows); no torch in its 3.12 venv"


def _zarrs():
    import zarr

    zarr.config.set({"codec_pipeline.path": "zarrs.ZarrsCodecPipeline"})


def convert(h5ad: str, outdir: str) -> None:
    import numpy as np
    from annbatch import DatasetCollection

    _zarrs()
    DatasetCollection(str(pathlib.Path(outdir) / "collection.zarr")).add_adatas(
        adata_paths=[h5ad], shuffle=True, rng=np.random.default_rng(0))


def _load_x(g):
    import anndata as ad

    obs = ad.io.read_elem(g["obs"])
    return ad.AnnData(X=ad.io.sparse_dataset(g["X"]), obs=obs[[]])


class _Handle:
    def __init__(self, outdir, h5ad):
        import anndata as ad
        import numpy as np
        import zarr

        sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
        from common import h5ad_names

        _zarrs()
        self.root = pathlib.Path(outdir) / "collection.zarr"
        self.collection_path = str(self.root)
        grp = zarr.open_group(str(self.root), mode="r")
        keys = sorted(k for k in grp.group_keys())
        src_obs, self.genes = h5ad_names(h5ad)
        where = {n: i for i, n in enumerate(src_obs)}
        self.xs, n_total = [], 0
        self.ds_of = np.empty(len(src_obs), dtype=np.int64)
        self.row_of = np.empty(len(src_obs), dtype=np.int64)
        self.src_of_global = []
        for d, k in enumerate(keys):
            g = grp[k]
            self.xs.append(ad.io.sparse_dataset(g["X"]))
            names = ad.io.read_elem(g["obs"]).index
            src = np.array([where[n] for n in names], dtype=np.int64)
            self.ds_of[src] = d
            self.row_of[src] = np.arange(len(src))
            self.src_of_global.append(src)
            var = ad.io.read_elem(g["var"]).index.to_numpy()
            self.genes = var
        self.src_of_global = np.concatenate(self.src_of_global)
        self.np = np


def open(outdir: str, h5ad: str):
    return _Handle(outdir, h5ad)


def genes(h):
    return h.genes


def fetch_cells(h, ids):
    import numpy as np
    import scipy.sparse as sp

    ids = np.asarray(ids, dtype=np.int64)
    ds, rows = h.ds_of[ids], h.row_of[ids]
    parts, order = [], []
    for d in np.unique(ds):
        sel = np.nonzero(ds == d)[0]
        r = rows[sel]
        uniq, inv = np.unique(r, return_inverse=True)
        parts.append(sp.csr_matrix(h.xs[d][uniq])[inv])
        order.append(sel)
    m = sp.vstack(parts).tocsr()
    perm = np.empty(len(ids), dtype=np.int64)
    perm[np.concatenate(order)] = np.arange(len(ids))
    return m[perm]


def _loader(h, chunk_size, batch_size, return_index=False, seed=0):
    import anndata as ad
    import numpy as np
    from annbatch import DatasetCollection, Loader

    kw = dict(batch_size=batch_size, chunk_size=chunk_size or 32, preload_nchunks=256, shuffle=True,
              preload_to_gpu=False, rng=np.random.default_rng(seed), return_index=return_index)
    with ad.settings.override(remove_unused_categories=False):
        return Loader(**kw).use_collection(DatasetCollection(h.collection_path), load_adata=_load_x)


def own_batches(h, n_batches, batch_size, opts):
    from common import touch

    loader = _loader(h, opts.get("chunk_size"), batch_size)
    for k, b in enumerate(loader):
        touch(b["X"])
        if k + 1 >= n_batches:
            break


def check_own_batches(h, h5ad, ref_genes):
    import numpy as np
    from common import compare, reference_rows, to_gene_space

    b = next(iter(_loader(h, None, 256, return_index=True, seed=1)))
    src = h.src_of_global[np.asarray(b["index"], dtype=np.int64)]
    got = to_gene_space(b["X"], h.genes, ref_genes)
    return compare(got, reference_rows(h5ad, src))
