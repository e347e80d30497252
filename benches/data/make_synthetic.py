"""Write a synthetic h5ad cohort through the real anndata package, for benchmarks.

Integer counts stored as float32 CSR, three categorical obs columns drawn at random (cell_type,
donor, tissue), 2-D coordinates in obsm['spatial'] on a square section and the spatial domain
of each cell (domain, an 8 x 8 grid), gene names GENE00000.... Rows are written
in blocks so memory stays well below the file size.

    python make_synthetic.py OUT.h5ad --cells 50000 --genes 20000 --density 0.05 [--compression gzip]
"""

import argparse

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp


def make(cells: int, genes: int, density: float, seed: int, extra_obs: int = 0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    per_row = rng.binomial(genes, density, size=cells).astype(np.int64)
    indptr = np.zeros(cells + 1, dtype=np.int64)
    np.cumsum(per_row, out=indptr[1:])
    nnz = int(indptr[-1])
    indices = np.empty(nnz, dtype=np.int32)
    block = 4096
    for r0 in range(0, cells, block):
        r1 = min(cells, r0 + block)
        for r in range(r0, r1):
            k = per_row[r]
            # Sorted distinct gene ids: a random subset via a partial shuffle of a sorted draw.
            cols = np.unique(rng.integers(0, genes, size=int(k * 1.2) + 8))
            if len(cols) < k:
                cols = np.sort(rng.choice(genes, size=k, replace=False))
            else:
                cols = np.sort(rng.choice(cols, size=k, replace=False))
            indices[indptr[r]:indptr[r + 1]] = cols
    values = (1 + rng.poisson(1.5, size=nnz)).astype(np.float32)
    if nnz < 2**31:
        indptr = indptr.astype(np.int32)
    X = sp.csr_matrix((values, indices, indptr), shape=(cells, genes))
    types = np.array([f"type_{i}" for i in range(30)])
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(types[rng.integers(0, 30, cells)]),
            "donor": pd.Categorical(np.array([f"D{i}" for i in range(8)])[rng.integers(0, 8, cells)]),
            "tissue": pd.Categorical(np.array(["brain", "lung", "liver", "blood"])[rng.integers(0, 4, cells)]),
        },
        index=[f"cell{i}" for i in range(cells)],
    )
    # Extra columns of the kinds real obs tables hold: QC numbers, flags, batches.
    kinds = ["float", "int", "bool", "category"]
    for i in range(extra_obs):
        kind = kinds[i % len(kinds)]
        name = f"{kind}_{i}"
        if kind == "float":
            obs[name] = rng.normal(0.0, 1.0, cells)
        elif kind == "int":
            obs[name] = rng.integers(0, 1000, cells)
        elif kind == "bool":
            obs[name] = rng.random(cells) < 0.5
        else:
            obs[name] = pd.Categorical(np.array([f"batch{j}" for j in range(100)])[rng.integers(0, 100, cells)])
    var = pd.DataFrame(index=[f"GENE{i:05d}" for i in range(genes)])
    adata = ad.AnnData(X=X, obs=obs, var=var)
    side = float(np.sqrt(cells)) * 10.0
    adata.obsm["spatial"] = rng.uniform(0, side, size=(cells, 2))
    # A spatial domain per cell (an 8 x 8 grid over the section): a label that follows the
    # storage order of a spatial sample, as tissue regions and cell types do in real sections.
    cell_of_grid = np.minimum((adata.obsm["spatial"] / side * 8).astype(np.int64), 7)
    adata.obs["domain"] = pd.Categorical([f"domain_{i}" for i in cell_of_grid[:, 0] * 8 + cell_of_grid[:, 1]])
    return adata


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--cells", type=int, default=50_000)
    p.add_argument("--genes", type=int, default=20_000)
    p.add_argument("--density", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compression", choices=["gzip", "lzf"], default=None)
    p.add_argument("--extra-obs", type=int, default=0, help="obs columns beyond the three categoricals")
    a = p.parse_args()
    adata = make(a.cells, a.genes, a.density, a.seed, a.extra_obs)
    adata.write_h5ad(a.out, compression=a.compression)


if __name__ == "__main__":
    main()
