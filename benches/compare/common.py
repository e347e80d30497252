"""Helpers shared by the harness and the per-tool workers (numpy, scipy and h5py only).

Cell ids throughout the harness are source rows of the (single) h5ad file of a cohort; an
adapter whose store reorders cells maps them itself. Values are compared through gene names.
"""

from __future__ import annotations

import os
import pathlib

import h5py
import numpy as np
import scipy.sparse as sp


def _index_of(group: h5py.Group) -> np.ndarray:
    key = group.attrs.get("_index", "_index")
    arr = group[key][...]
    return np.array([a.decode() if isinstance(a, bytes) else str(a) for a in arr], dtype=object)


def h5ad_names(h5ad: str) -> tuple[np.ndarray, np.ndarray]:
    """(obs_names, var_names) of an h5ad file."""
    with h5py.File(h5ad, "r") as f:
        return _index_of(f["obs"]), _index_of(f["var"])


def h5ad_shape_nnz(h5ad: str) -> tuple[int, int, int]:
    with h5py.File(h5ad, "r") as f:
        x = f["X"]
        shape = tuple(int(s) for s in x.attrs["shape"])
        return shape[0], shape[1], int(x["data"].shape[0])


def h5ad_coords(h5ad: str, key: str = "spatial") -> np.ndarray | None:
    with h5py.File(h5ad, "r") as f:
        if "obsm" in f and key in f["obsm"]:
            return np.asarray(f["obsm"][key][...], dtype=np.float64)
    return None


def reference_rows(h5ad: str, ids: np.ndarray) -> sp.csr_matrix:
    """Rows `ids` of X read straight from the HDF5 CSR arrays (no loader involved)."""
    with h5py.File(h5ad, "r") as f:
        x = f["X"]
        enc = x.attrs.get("encoding-type", "csr_matrix")
        enc = enc.decode() if isinstance(enc, bytes) else enc
        if enc != "csr_matrix":
            raise ValueError(f"{h5ad}: X is {enc}; the harness expects CSR")
        n_genes = int(x.attrs["shape"][1])
        indptr = x["indptr"][...]
        data, indices, out_ptr = [], [], [0]
        for i in ids:
            s, e = int(indptr[i]), int(indptr[i + 1])
            data.append(x["data"][s:e])
            indices.append(x["indices"][s:e])
            out_ptr.append(out_ptr[-1] + (e - s))
    m = sp.csr_matrix(
        (np.concatenate(data).astype(np.float64), np.concatenate(indices), np.asarray(out_ptr)),
        shape=(len(ids), n_genes),
    )
    m.eliminate_zeros()
    m.sort_indices()
    return m


def to_gene_space(m: sp.csr_matrix, genes: np.ndarray, target: np.ndarray) -> sp.csr_matrix:
    """Re-expresses m (columns named `genes`) in the column space named `target`."""
    pos = {g: i for i, g in enumerate(target)}
    remap = np.array([pos.get(str(g), -1) for g in genes], dtype=np.int64)
    m = sp.csr_matrix(m)
    cols = remap[m.indices]
    if (cols < 0).any():
        raise ValueError("a non-zero falls on a gene outside the reference vocabulary")
    # A fresh indptr: the tool's may be a read-only view, and eliminate_zeros writes it.
    out = sp.csr_matrix((m.data.astype(np.float64), cols, m.indptr.copy()), shape=(m.shape[0], len(target)))
    out.eliminate_zeros()
    out.sort_indices()
    return out


def compare(got: sp.csr_matrix, ref: sp.csr_matrix) -> tuple[bool, str]:
    if got.shape != ref.shape:
        return False, f"shape {got.shape} != {ref.shape}"
    diff = abs(got - ref)
    mx = float(diff.max()) if diff.nnz else 0.0
    if got.nnz != ref.nnz or mx > 1e-5 * max(1.0, float(abs(ref).max() if ref.nnz else 1.0)):
        bad = np.unique(diff.nonzero()[0])[:5]
        return False, f"nnz {got.nnz} vs {ref.nnz}, max |diff| {mx:g}, first bad rows {bad.tolist()}"
    return True, f"{got.shape[0]} cells, {got.nnz} non-zeros equal"


def dir_bytes(path: str) -> int:
    p = pathlib.Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and not f.is_symlink())


def memory_mb() -> dict:
    """Anonymous, private and resident memory of this process (MB), from smaps_rollup."""
    out = {}
    try:
        with open(f"/proc/{os.getpid()}/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                    out[parts[0][:-1]] = int(parts[1]) / 1024.0
    except OSError:
        pass
    return {
        "anon": out.get("Anonymous", float("nan")),
        "private": out.get("Private_Clean", 0.0) + out.get("Private_Dirty", 0.0),
        "private_dirty": out.get("Private_Dirty", float("nan")),
        "rss": out.get("Rss", float("nan")),
    }


def touch(m) -> float:
    """Reads every stored value (and index) of a batch so lazy readers cannot skip work."""
    m = sp.csr_matrix(m) if not sp.issparse(m) else m
    return float(np.asarray(m.data, dtype=np.float64).sum()) + float(m.indices.sum())
