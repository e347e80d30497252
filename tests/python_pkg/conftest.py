"""Fixtures of the Python package tests: small corpora converted by the real `cellarrow` binary
from h5ad files written by the real anndata (the oracle), plus a real fixture from tests/data.
"""

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


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cellarrow_pkg")


@pytest.fixture(scope="session")
def synth(workdir):
    """Two spatial samples (130 and 90 cells), parts of 40 cells: (corpus path, [h5ad paths])."""
    genes_a = [f"g{i}" for i in range(40)]
    genes_b = [f"g{i}" for i in range(20, 55)][::-1]
    a = write_sample(workdir / "sa.h5ad", 130, genes_a, 1, 0.0)
    b = write_sample(workdir / "sb.h5ad", 90, genes_b, 2, 100.0)
    corpus = convert([a, b], workdir / "synth.corpus", "--part-cells", "40")
    return corpus, [a, b]


@pytest.fixture(scope="session")
def chr21(workdir):
    """The real 10x v3 chr21 fixture (1,107 cells x 507 genes): (corpus path, h5ad path)."""
    src = DATA / "scanpy_10x_v3_chr21_counts.h5ad"
    return convert([src], workdir / "chr21.corpus", "--part-cells", "300"), src
