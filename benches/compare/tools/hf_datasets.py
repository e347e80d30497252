"""Hugging Face `datasets`: one row per cell with `indices` and `values` list columns.

Conversion follows the library's documented path for data that does not fit in memory:
`Dataset.from_generator` over the h5ad read in backed row chunks, then `save_to_disk`.
Reading: `load_from_disk` (memory-mapped Arrow) with `.with_format("arrow")`, so a batch of
rows comes back as one Arrow table whose list offsets are the CSR indptr.
"""

from __future__ import annotations

import pathlib
import shutil

NAME = "hf-datasets"


def convert(h5ad: str, outdir: str) -> None:
    import anndata as ad
    import datasets
    import numpy as np
    import scipy.sparse as sp

    out = pathlib.Path(outdir)
    cache = out.parent / (out.name + ".hf-cache")
    def gen(path):
        # Opened inside the generator: `from_generator` pickles its arguments to fingerprint them.
        adata = ad.read_h5ad(path, backed="r")
        n = adata.n_obs
        for r0 in range(0, n, 8192):
            m = sp.csr_matrix(adata.X[r0:min(n, r0 + 8192)])
            for r in range(m.shape[0]):
                s, e = m.indptr[r], m.indptr[r + 1]
                yield {"indices": m.indices[s:e].astype(np.int32), "values": m.data[s:e].astype(np.float32)}

    features = datasets.Features({
        "indices": datasets.Sequence(datasets.Value("int32")),
        "values": datasets.Sequence(datasets.Value("float32")),
    })
    ds = datasets.Dataset.from_generator(gen, features=features, cache_dir=str(cache), gen_kwargs={"path": str(h5ad)})
    ds.save_to_disk(str(out))
    var = ad.read_h5ad(h5ad, backed="r").var_names
    (out / "genes.txt").write_text("\n".join(map(str, var)) + "\n")
    del ds
    shutil.rmtree(cache, ignore_errors=True)


class _Handle:
    def __init__(self, outdir):
        import datasets

        self.ds = datasets.load_from_disk(outdir).with_format("arrow")
        self.genes = (pathlib.Path(outdir) / "genes.txt").read_text().split()


def open(outdir: str, h5ad: str):
    return _Handle(outdir)


def genes(h):
    import numpy as np

    return np.asarray(h.genes, dtype=object)


def _to_csr(t, n_genes):
    import numpy as np
    import pyarrow as pa
    import scipy.sparse as sp

    ind = t.column("indices").combine_chunks() if isinstance(t.column("indices"), pa.ChunkedArray) else t.column("indices")
    val = t.column("values").combine_chunks() if isinstance(t.column("values"), pa.ChunkedArray) else t.column("values")
    off = ind.offsets.to_numpy()
    base = off[0]
    return sp.csr_matrix(
        (val.values.to_numpy()[val.offsets.to_numpy()[0]:val.offsets.to_numpy()[-1]],
         ind.values.to_numpy()[base:off[-1]], off - base),
        shape=(len(off) - 1, n_genes),
    )


def fetch_cells(h, ids):
    return _to_csr(h.ds[[int(i) for i in ids]], len(h.genes))


class _TorchDataset:
    def __init__(self, outdir):
        self.outdir, self.h = outdir, None

    def _handle(self):
        if self.h is None:
            self.h = _Handle(self.outdir)
        return self.h

    def __len__(self):
        return len(self._handle().ds)

    def __getitem__(self, i):
        return fetch_cells(self._handle(), [i])

    def __getitems__(self, ids):
        return fetch_cells(self._handle(), ids)


def torch_dataset(outdir, h5ad):
    return _TorchDataset(outdir), (lambda m: m)
