"""Small AnnData files written by the real `anndata` package, for the encoding tests."""

from __future__ import annotations

import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp


def values_for(dtype: str, rng: np.random.Generator, n: int) -> np.ndarray:
    """Non-zero values that exercise each dtype (and each corpus value type)."""
    if dtype == "float32":
        v = rng.normal(0, 3, n).astype(np.float32)  # negative, fractional: Float32
    elif dtype == "float64":
        v = rng.normal(0, 3, n)  # not representable in f32: Float64
    elif dtype == "int32":
        v = rng.integers(-50, 50, n).astype(np.int32)  # negative integers: Float32
    elif dtype == "int64":
        v = rng.integers(1, 1000, n).astype(np.int64)
        v[:: max(1, n // 7)] = 2**33 + 1  # above 2^24 and 2^32: Float64
    elif dtype == "uint16":
        v = rng.integers(1, 65535, n, endpoint=True).astype(np.uint16)
        v[0] = 65535
    elif dtype == "uint32":
        v = rng.integers(1, 4_000_000_000, n).astype(np.uint32)  # above u16: UInt32
    elif dtype == "counts":
        v = rng.integers(1, 30, n).astype(np.float32)
    else:
        raise ValueError(dtype)
    v[v == 0] = 1
    return v


def random_csr(rng, n_obs, n_vars, dtype="counts", density=0.2, explicit_zeros=0) -> sp.csr_matrix:
    """A CSR matrix with some empty rows and, optionally, explicit zeros among the stored values."""
    mask = rng.random((n_obs, n_vars)) < density
    mask[::9] = False  # empty cells
    rows, cols = np.nonzero(mask)
    vals = values_for(dtype, rng, len(rows))
    m = sp.csr_matrix((vals, (rows, cols)), shape=(n_obs, n_vars), dtype=vals.dtype)
    m.sort_indices()
    if explicit_zeros and m.nnz:
        idx = rng.choice(m.nnz, size=min(explicit_zeros, m.nnz), replace=False)
        m.data[idx] = 0
    return m


def make_adata(x, prefix: str, genes=None, obs: pd.DataFrame | None = None) -> ad.AnnData:
    n_obs, n_vars = x.shape
    genes = [f"gene{j}" for j in range(n_vars)] if genes is None else list(genes)
    obs_index = pd.Index([f"{prefix}-cell{i}" for i in range(n_obs)])
    if obs is None:
        obs = pd.DataFrame(index=obs_index)
    else:
        obs = obs.copy()
        obs.index = obs_index
    return ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=pd.Index(genes)))


def write(adata: ad.AnnData, path: Path, **kwargs) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata.write_h5ad(path, **kwargs)
    return path


def read(path: Path) -> ad.AnnData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ad.read_h5ad(path)
