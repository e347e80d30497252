"""Python-side throughput of cellarrow (numbers only; nothing is asserted).

Measures, warm page cache, batch 256, fully random cells:
  1. a plain Python loop over `corpus.loader()` converting every batch to scipy CSR;
  2. `torch.utils.data.DataLoader` over `cellarrow.torch.CellDataset` (CSR tensors), 0 vs 2 workers;
  3. `corpus.to_hf_dataset()` open time (and on a second, larger corpus with --large).

usage:
  python benches/python_loop.py CORPUS_OR_H5AD [--large CORPUS_OR_H5AD] [--cells N]

An .h5ad argument is converted once with the `cellarrow` binary ($CELLARROW_BIN) into
`<file>.corpus` next to it. Build the extension in release mode for meaningful figures:
  CARGO_TARGET_DIR=$HOME/.cache/cellarrow/target-bench maturin build --release -m python/Cargo.toml
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
import warnings
from pathlib import Path

import cellarrow
from cellarrow.torch import CellDataset


def corpus_path(arg: str) -> Path:
    p = Path(arg)
    if p.suffix != ".h5ad":
        return p
    out = p.with_suffix(".corpus")
    if not (out / "manifest.json").exists():
        binary = os.environ.get("CELLARROW_BIN", "cellarrow")
        subprocess.run([binary, "convert", str(p), "-o", str(out), "--quiet"], check=True)
    return out


def warm(corpus: cellarrow.Corpus) -> None:
    """Reads every part once so the page cache holds the corpus."""
    for p in corpus.part_paths:
        with open(p, "rb") as f:
            while f.read(1 << 24):
                pass


def plain_loop(corpus, cells: int, threads: int) -> float:
    loader = corpus.loader(batch_size=256, seed=0, threads=threads)
    n, t0 = 0, time.perf_counter()
    for batch in loader:
        X = batch.to_scipy()
        n += X.shape[0]
        if n >= cells:
            break
    return n / (time.perf_counter() - t0)


def dataloader(path: Path, workers: int, cells: int) -> float:
    ds = CellDataset(path, batch_size=256, seed=0, threads=1 if workers else 2)
    dl = ds.dataloader(num_workers=workers, multiprocessing_context="fork" if workers else None)
    it = iter(dl)
    next(it)  # worker start-up is not throughput
    n, t0 = 0, time.perf_counter()
    for b in it:
        n += len(b["cell"])
        if n >= cells:
            break
    return n / (time.perf_counter() - t0)


def hf_open(path: Path) -> tuple:
    import datasets  # noqa: F401 - the import is not part of the open time

    corpus = cellarrow.open(path)
    t0 = time.perf_counter()
    ds = corpus.to_hf_dataset()
    return time.perf_counter() - t0, ds.num_rows, len(corpus.part_paths)


def main() -> None:
    warnings.filterwarnings("ignore", message="Sparse")  # torch's beta / invariant-check notices
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus")
    ap.add_argument("--large", help="a larger corpus for the to_hf_dataset open time")
    ap.add_argument("--cells", type=int, default=200_000, help="cells per measurement")
    args = ap.parse_args()

    path = corpus_path(args.corpus)
    corpus = cellarrow.open(path)
    warm(corpus)
    print(f"corpus {path}: {corpus.n_cells} cells x {corpus.n_genes} genes, nnz {corpus.nnz}")
    cells = min(args.cells, corpus.n_cells)
    plain_loop(corpus, min(cells, 20_000), 2)  # warm-up
    for threads in (0, 2):
        print(f"plain loop + to_scipy, batch 256, random, {threads} Rust threads: {plain_loop(corpus, cells, threads):,.0f} cells/s")
    for workers in (0, 2):
        print(f"DataLoader(CellDataset) CSR tensors, {workers} workers: {dataloader(path, workers, cells):,.0f} cells/s")
    for p in [path] + ([corpus_path(args.large)] if args.large else []):
        secs, rows, parts = hf_open(p)
        print(f"to_hf_dataset open: {secs * 1e3:.1f} ms ({rows} rows, {parts} parts) {p}")


if __name__ == "__main__":
    main()
