#!/usr/bin/env python3
"""Writes the h5ad files of the append tests with the real anndata package.

    gen_append.py OUTDIR

narrow_a.h5ad and narrow_b.h5ad: 40 and 25 cells over genes g0..g49, integer counts, the same
obs columns (so an append of one to the other adds table files and rewrites none).
wide.h5ad: 30 cells over 70,000 genes g0..g69999 listed in a shuffled order, integer counts,
the same obs columns: appended after the narrow files, the vocabulary passes 65,536 genes.
Deterministic (fixed seeds).
"""

import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp


def obs(rng, n, prefix):
    return pd.DataFrame(
        {
            "cell_type": pd.Categorical(rng.choice(["T", "B", "NK"], n)),
            "score": rng.random(n),
        },
        index=[f"{prefix}{i}" for i in range(n)],
    )


def counts(rng, n, m, per_cell):
    rows, cols, vals = [], [], []
    for r in range(n):
        c = rng.choice(m, size=per_cell, replace=False)
        rows.extend([r] * per_cell)
        cols.extend(c)
        vals.extend(rng.integers(1, 30, per_cell))
    return sp.csr_matrix((np.array(vals, dtype=np.float32), (rows, cols)), shape=(n, m))


def main(out):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, n, seed in [("narrow_a", 40, 1), ("narrow_b", 25, 2)]:
        rng = np.random.default_rng(seed)
        a = ad.AnnData(
            X=counts(rng, n, 50, 8),
            obs=obs(rng, n, name),
            var=pd.DataFrame(index=[f"g{i}" for i in range(50)]),
        )
        a.write_h5ad(out / f"{name}.h5ad")
    rng = np.random.default_rng(3)
    m = 70_000
    order = rng.permutation(m)
    a = ad.AnnData(
        X=counts(rng, 30, m, 40),
        obs=obs(rng, 30, "wide"),
        var=pd.DataFrame(index=[f"g{i}" for i in order]),
    )
    a.write_h5ad(out / "wide.h5ad")


if __name__ == "__main__":
    main(sys.argv[1])
