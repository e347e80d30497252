"""The Rust loader against cellfm-datasets on the same cohort, side by side in one run.

Each round runs, one after the other on the same machine:
  - `cellarrow bench --json` on the corpus: fully random cells in batches of 256 and groups of
    64 cells of one sample (`--batch-size 4 --group-size 64`), each with one loader thread
    (one consumer reading every value) and as 1 and 2 shards (each thread gathering and
    reading its own shard);
  - cellfm-datasets on the same cohort converted by its own converter: `fetch_cell` on random
    cells, and `fetch_rows` on 64 random cells of the sample (sorted, the call its group
    datasets make), each result's arrays touched.
The figures are medians over the rounds, the ratios medians of each round's ratio, so that the
machine's drift between rounds cancels.

usage:
  python benches/loader_vs_cellfm.py CORPUS CELLFM_DIR [--rounds 3] [--epochs 8] [--bin PATH]

CELLFM_DIR is cellfm-datasets' conversion of the same h5ad, e.g. the comparison harness's
`compare-work/full/syn-50k/cellfm_datasets`; run with the harness's venv, which has
cellfm-datasets. Build the CLI in release mode:
  cargo build --release --no-default-features --bin cellarrow
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time

import numpy as np


def cellarrow_bench(binary: str, corpus: str, epochs: int, extra: list) -> list:
    """The `run` records of one `cellarrow bench --json` invocation."""
    cmd = [binary, "bench", corpus, "--json", "--epochs", str(epochs), *extra]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [r for r in map(json.loads, out.splitlines()) if r["record"] == "run"]


def cellfm_sample(root: str):
    from cellfm_dataset import MemmapDataset

    ds = MemmapDataset(root)
    if len(ds.samples) != 1:
        raise SystemExit(f"{root}: expected one sample, found {len(ds.samples)}")
    return next(iter(ds.samples.values()))


def fetch_cell_rate(sample, n_cells: int, cells: int, seed: int = 0) -> float:
    """cellfm-datasets' `fetch_cell` on random cells, in cells/s (each cell's arrays summed)."""
    ids = np.random.default_rng(seed).integers(0, n_cells, cells)
    sink = 0.0
    t0 = time.perf_counter()
    for i in ids:
        c = sample.fetch_cell(int(i))
        sink += float(c["gene_values"].sum())
    return len(ids) / (time.perf_counter() - t0)


def fetch_rows_rate(sample, n_cells: int, groups: int, size: int = 64, seed: int = 0) -> float:
    """cellfm-datasets' `fetch_rows` on groups of `size` random cells of the sample, sorted, in
    cells/s (each group's values summed)."""
    rng = np.random.default_rng(seed)
    draws = [np.sort(rng.choice(n_cells, size, replace=False)) for _ in range(groups)]
    sink = 0.0
    t0 = time.perf_counter()
    for g in draws:
        _, _, _, values = sample.fetch_rows(g)
        sink += float(values.sum())
    return groups * size / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus")
    ap.add_argument("cellfm", help="the same cohort converted by cellfm-datasets")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=8, help="epochs per cellarrow measurement")
    ap.add_argument("--cells", type=int, default=30_000, help="cells per cellfm-datasets measurement")
    ap.add_argument("--bin", default=os.environ.get("CELLARROW_BIN", "cellarrow"))
    args = ap.parse_args()

    sample = cellfm_sample(args.cellfm)
    n = int(sample.metadata.n_cells)
    with open(os.path.join(args.corpus, "manifest.json")) as f:
        if json.load(f)["n_cells"] != n:
            raise SystemExit(f"{args.corpus} and {args.cellfm} hold different cell counts")
    runs: dict = {}

    def add(key, value):
        runs.setdefault(key, []).append(value)

    fetch_cell_rate(sample, n, 2_000)  # warm-up: imports and the first pages
    for r in range(args.rounds):
        for rec in cellarrow_bench(args.bin, args.corpus, args.epochs,
                                   ["--samplers", "random", "--threads", "1", "--shards", "1,2"]):
            add(("random", rec["threads"], rec["shards"]), rec)
        for rec in cellarrow_bench(args.bin, args.corpus, args.epochs,
                                   ["--samplers", "groups", "--batch-size", "4", "--group-size", "64",
                                    "--threads", "1", "--shards", "1,2"]):
            add(("groups", rec["threads"], rec["shards"]), rec)
        add("fetch_cell", fetch_cell_rate(sample, n, args.cells, seed=r))
        add("fetch_rows", fetch_rows_rate(sample, n, args.cells // 64, seed=r))

    med = lambda xs: statistics.median(xs)  # noqa: E731
    fetch, rows = runs["fetch_cell"], runs["fetch_rows"]
    print(f"cellfm-datasets fetch_cell, random cells: {med(fetch):,.0f} cells/s (runs {' '.join(f'{x:,.0f}' for x in fetch)})")
    print(f"cellfm-datasets fetch_rows, groups of 64: {med(rows):,.0f} cells/s (runs {' '.join(f'{x:,.0f}' for x in rows)})")
    for key in sorted((k for k in runs if isinstance(k, tuple)), key=lambda k: (k[0], k[2] or 0)):
        sampler, threads, shards = key
        recs = runs[key]
        base = fetch if sampler == "random" else rows
        rates = [x["cells_per_s"] for x in recs]
        ratio = med([x / b for x, b in zip(rates, base)])
        run = f"{threads} loader thread" if threads is not None else f"{shards} shard{'s' * (shards > 1)}"
        memcpy = med([x["memcpy_ratio"] for x in recs])
        print(
            f"cellarrow {sampler:<6} {run:<16} {med(rates):>12,.0f} cells/s  x{ratio:.1f} cellfm "
            f"{'fetch_cell' if sampler == 'random' else 'fetch_rows'}  memcpy ratio {memcpy:.2f}  "
            f"(runs {' '.join(f'{x:,.0f}' for x in rates)})"
        )
    for sampler in ("random", "groups"):
        one, two = runs.get((sampler, None, 1)), runs.get((sampler, None, 2))
        if one and two:
            s = med([b["cells_per_s"] / a["cells_per_s"] for a, b in zip(one, two)])
            print(f"cellarrow {sampler}: 2 shards = x{s:.2f} one shard")


if __name__ == "__main__":
    main()
