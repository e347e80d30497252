"""Fixtures of the Python package tests: small corpora converted by the real `cellarrow` binary
from h5ad files written by the real anndata (the oracle), plus a real fixture from tests/data.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pkg_fixtures import DATA, convert, write_sample  # noqa: E402

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
