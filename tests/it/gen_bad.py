"""Writes the bad (and borderline) h5ad inputs of the Rust reliability suite with the real
anndata and h5py packages. Usage: gen_bad.py OUTDIR. Deterministic; prints nothing on success.

Every file starts from `base()`: 20 cells x 10 genes, CSR float32 with whole-number values,
row i holding column i % 10 (value i + 1) and column (i + 3) % 10 (value 2), obs names
cell0..cell19, genes gene0..gene9, obsm['spatial'] 20 x 2.
"""

import os
import sys
import warnings

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

warnings.simplefilter("ignore")
OUT = sys.argv[1]
os.makedirs(OUT, exist_ok=True)
N, M = 20, 10


def matrix(n=N, m=M, dtype=np.float32):
    rows, cols, vals = [], [], []
    for i in range(n):
        for c, v in sorted({i % m: i + 1, (i + 3) % m: 2}.items()) if m else []:
            rows.append(i)
            cols.append(c)
            vals.append(v)
    return sp.csr_matrix((np.array(vals, dtype=dtype), (rows, cols)), shape=(n, m))


def adata(X=None, obs_names=None, genes=None, spatial=True):
    X = matrix() if X is None else X
    n, m = X.shape
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical([["T", "B"][i % 2] for i in range(n)]),
         "depth": np.arange(n, dtype=np.float64)},
        index=obs_names if obs_names is not None else [f"cell{i}" for i in range(n)],
    )
    var = pd.DataFrame(
        {"symbol": [f"SYM{j}" for j in range(m)]},
        index=genes if genes is not None else [f"gene{j}" for j in range(m)],
    )
    a = ad.AnnData(X=X, obs=obs, var=var)
    if spatial:
        a.obsm["spatial"] = np.stack([np.arange(n, dtype=np.float64), np.arange(n, dtype=np.float64) * 2], axis=1)
    return a


def write(name, a, **kw):
    p = os.path.join(OUT, name + ".h5ad")
    a.write_h5ad(p, **kw)
    return p


write("base", adata())
write("no_spatial", adata(spatial=False))

p = write("missing_x", adata())
with h5py.File(p, "r+") as f:
    del f["X"]

p = write("x_unknown_encoding", adata())
with h5py.File(p, "r+") as f:
    f["X"].attrs["encoding-type"] = "awkward-array"

p = write("x_strings", adata())
with h5py.File(p, "r+") as f:
    del f["X"]
    d = f.create_dataset("X", data=np.array([["a"] * M] * N, dtype=object), dtype=h5py.string_dtype())
    d.attrs["encoding-type"] = "array"
    d.attrs["encoding-version"] = "0.2.0"

p = write("indptr_not_monotone", adata())
with h5py.File(p, "r+") as f:
    ip = f["X/indptr"][...]
    ip[6] = ip[7] + 1
    f["X/indptr"][...] = ip

p = write("indptr_short", adata())
with h5py.File(p, "r+") as f:
    ip = f["X/indptr"][...]
    del f["X/indptr"]
    f["X"].create_dataset("indptr", data=ip[:-1])

p = write("indices_out_of_range", adata())
with h5py.File(p, "r+") as f:
    ix = f["X/indices"][...]
    ix[5] = M
    f["X/indices"][...] = ix

p = write("csc_row_out_of_range", adata(X=sp.csc_matrix(matrix())))
with h5py.File(p, "r+") as f:
    ix = f["X/indices"][...]
    ix[0] = N
    f["X/indices"][...] = ix

# Row 0 holds columns 0 and 3 (values 1 and 2): store them as (3, 0) and (2, 2).
p = write("unsorted_indices", adata())
with h5py.File(p, "r+") as f:
    ix = f["X/indices"][...]
    d = f["X/data"][...]
    ix[0], ix[1] = ix[1], ix[0]
    d[0], d[1] = d[1], d[0]
    f["X/indices"][...] = ix
    f["X/data"][...] = d

p = write("duplicate_indices", adata())
with h5py.File(p, "r+") as f:
    ix = f["X/indices"][...]
    ix[1] = ix[0]  # row 0: column 0 twice, values 1 and 2
    f["X/indices"][...] = ix

p = write("shape_mismatch", adata())
with h5py.File(p, "r+") as f:
    f["X"].attrs["shape"] = np.array([N + 5, M])

X = matrix()
X.data[4] = np.nan
write("nan_values", adata(X=X))
X = matrix()
X.data[7] = np.inf
write("inf_values", adata(X=X))
X = matrix()
X.data[2] = -3
write("negative_values", adata(X=X))

write("duplicate_genes", adata(genes=[f"gene{j % 8}" for j in range(M)]))
write("duplicate_obs", adata(obs_names=[f"cell{i % 5}" for i in range(N)]))
write("empty_var", adata(X=sp.csr_matrix((N, 0), dtype=np.float32)))
a = adata(X=sp.csr_matrix((0, M), dtype=np.float32), spatial=False)
write("zero_cells", a)

a = adata()
a.obsm["spatial"] = np.arange(N, dtype=np.float64).reshape(N, 1)
write("spatial_one_column", a)
a = adata()
s = a.obsm["spatial"].copy()
s[3] = np.nan
s[11, 1] = np.nan
a.obsm["spatial"] = s
write("spatial_nan_rows", a)

p = write("obs_complex_column", adata())
with h5py.File(p, "r+") as f:
    f["obs"].create_dataset("phase", data=np.arange(N) * (1 + 1j))
    f["obs"].attrs["column-order"] = np.array(["cell_type", "depth", "phase"], dtype=object)

p = write("obs_unknown_encoding", adata())
with h5py.File(p, "r+") as f:
    f["obs/cell_type"].attrs["encoding-type"] = "ragged-thing"

p = write("categorical_code_out_of_range", adata())
with h5py.File(p, "r+") as f:
    c = f["obs/cell_type/codes"][...]
    c[2] = 9
    f["obs/cell_type/codes"][...] = c

p = write("unknown_filter", adata())
with h5py.File(p, "r+") as f:
    v = f["X/data"][...]
    del f["X/data"]
    d = f["X"].create_dataset(
        "data", shape=v.shape, dtype=v.dtype, chunks=v.shape, compression=32001, allow_unknown_filter=True
    )
    d.id.write_direct_chunk((0,), b"\x00" * 16)

write("lzf", adata(), compression="lzf")
write("gzip", adata(), compression="gzip")
