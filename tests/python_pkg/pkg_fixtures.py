"""Helpers of the Python package tests: the `cellarrow` binary, conversion, and h5ad files
written by the real anndata (the oracle)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DATA = ROOT / "tests" / "data"


def cellarrow_bin() -> Path:
    value = os.environ.get("CELLARROW_BIN")
    if not value:
        target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
        value = os.path.join(target, "debug", "cellarrow")
    path = Path(value)
    if not path.is_file():
        pytest.fail(
            f"no cellarrow binary at {path}: build it (cargo build --bin cellarrow) and set CELLARROW_BIN",
            pytrace=False,
        )
    return path


def convert(inputs, out: Path, *extra: str) -> Path:
    cmd = [str(cellarrow_bin()), "convert", *map(str, inputs), "-o", str(out), "--quiet", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"`{' '.join(cmd)}` failed:\n{proc.stdout}\n{proc.stderr}", pytrace=False)
    return out


def write_sample(path: Path, n_cells: int, genes, seed: int, origin: float):
    """A spatial h5ad with integer counts (CSR), obs cell_type / niche / score and a grid."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    dense = rng.poisson(0.4, size=(n_cells, len(genes))).astype(np.float32)
    dense[rng.random(dense.shape) < 0.5] = 0
    side = int(np.ceil(np.sqrt(n_cells)))
    coords = np.array([[origin + (i % side), (i // side)] for i in range(n_cells)], dtype=np.float64)
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(rng.choice(["T", "B", "NK", "Mono"], size=n_cells)),
            "niche": pd.Categorical([f"n{(i // side) // 3}" for i in range(n_cells)]),
            "score": rng.random(n_cells),
        },
        index=[f"{path.stem}_c{i}" for i in range(n_cells)],
    )
    adata = ad.AnnData(X=sp.csr_matrix(dense), obs=obs, var=pd.DataFrame(index=list(genes)))
    adata.obsm["spatial"] = coords
    adata.write_h5ad(path)
    return path
