"""Python-side throughput of cellarrow (numbers only; nothing is asserted).

Measures, warm page cache, batch 256, fully random cells:
  1. a plain Python loop over `corpus.loader()` converting every batch to scipy CSR;
  2. `torch.utils.data.DataLoader` over `cellarrow.torch.CellDataset` (CSR tensors): 0 workers
     (2 Rust gathering threads, or `threads=0`: the process gathers on its own thread) vs 2
     workers: by default each worker gathers on its own thread straight into a slot of its
     shared-memory ring; with 1 Rust thread per worker, gathered then copied into the ring;
     or through torch's own transport. The settings run interleaved, `--rounds` times; the
     figures are medians, the ratios medians of each round's ratio to the one-process setting
     with as many Rust threads (`threads=0` for the default), with the share of CPU time a
     virtual machine's host took meanwhile (steal; Linux). The one-process figures depend on
     the allocator's state (after the plain loop, freed batch memory is reused without page
     faults); --fresh measures each setting in a new process;
     Beside them, the ceiling of this machine: a dataset that only burns as much CPU time per
     batch as one `threads=0` process spends on a cellarrow batch here, and yields a plain
     int (no transport cost at all), through the same `DataLoader` with 0 and 2 workers;
  3. memory over whole epochs, each in a fresh process: the anonymous memory of the process
     (and of its DataLoader workers) after a warm-up epoch and after two more, for the plain
     loop and for `DataLoader(CellDataset)` with 2 workers (Linux: /proc/PID/smaps_rollup);
  4. `corpus.to_hf_dataset()` open time (and on a second, larger corpus with --large);
  5. with --cellfm DIR (the same cohort converted by cellfm-datasets, e.g. the comparison
     harness's `compare-work/full/syn-50k/cellfm_datasets`): its raw `fetch_cell` on random
     cells and its Hugging Face path (`load_hf_cell_dataset`, streaming), interleaved with the
     plain loop, and the plain loop's ratios to both.

usage:
  python benches/python_loop.py CORPUS_OR_H5AD [--large CORPUS_OR_H5AD] [--cells N] [--rounds R] [--fresh]
                                [--cellfm DIR] [--ceiling-us 1000,2000] [--obs COL,COL]

An .h5ad argument is converted once with the `cellarrow` binary ($CELLARROW_BIN) into
`<file>.corpus` next to it. Build the extension in release mode for meaningful figures:
  CARGO_TARGET_DIR=$HOME/.cache/cellarrow/target-bench maturin build --release -m python/Cargo.toml
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Optional

import psutil
import torch

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


# (label, workers, Rust threads per process (None: CellDataset's default), shared-memory ring)
DATALOADER_SETTINGS = [
    ("0 workers, 2 threads", 0, 2, False),
    ("0 workers, threads=0", 0, 0, False),
    ("2 workers, gathered into the ring (default)", 2, None, True),
    ("2 workers, 1 thread each, copied into the ring", 2, 1, True),
    ("2 workers, torch transport", 2, 0, False),
]


def cpu_times() -> list:
    """The machine's CPU time counters (Linux /proc/stat: user ... steal), else []."""
    try:
        with open("/proc/stat") as f:
            return [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return []


def steal_share(before: list, after: list) -> float:
    """The share of CPU time the hypervisor gave to other guests between two cpu_times()."""
    d = [b - a for a, b in zip(before, after)]
    return d[7] / sum(d) if len(d) > 7 and sum(d) else float("nan")


def dataloader(path: Path, workers: int, threads: Optional[int], ring: bool, cells: int) -> tuple:
    """(cells/s, host steal share) over whole epochs after a first one (worker start-up, each
    process's first touch of the corpus and of the ring are not throughput)."""
    ds = CellDataset(path, batch_size=256, seed=0, threads=threads, shared_memory=ring)
    kw = dict(persistent_workers=True, multiprocessing_context="fork") if workers else {}
    dl = ds.dataloader(num_workers=workers, **kw)
    for _ in dl:
        pass
    n, epoch, c0, t0 = 0, 1, cpu_times(), time.perf_counter()
    while n < cells:
        ds.set_epoch(epoch)
        epoch += 1
        for b in dl:
            n += len(b["cell"])
    return n / (time.perf_counter() - t0), steal_share(c0, cpu_times())


class Burn(torch.utils.data.IterableDataset):
    """`batches` items, each after `us` microseconds of this thread's CPU time; the workers
    of a DataLoader split them."""

    def __init__(self, us: float, batches: int):
        self.us, self.batches = us, batches

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        for i in range(worker, self.batches, workers):
            end = time.thread_time() + self.us * 1e-6
            while time.thread_time() < end:
                pass
            yield i


def burn_rate(us: float, workers: int, batches: int) -> float:
    """Items per second of `Burn` through a DataLoader, after a first epoch."""
    ds = Burn(us, batches)
    kw = dict(persistent_workers=True, multiprocessing_context="fork") if workers else {}
    dl = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers, **kw)
    for _ in dl:
        pass
    t0 = time.perf_counter()
    n = sum(1 for _ in dl)
    return n / (time.perf_counter() - t0)


def anon_mb(pid: int) -> float:
    """Anonymous memory of a process (heap, stacks, private copies; not the mapped corpus)."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Anonymous:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no Anonymous line in /proc/{pid}/smaps_rollup")


def epoch_memory(path: Path, workers: int, obs: list) -> tuple:
    """(MB after a warm-up epoch, MB after two more, cells per epoch): this process plus its
    DataLoader workers, over whole epochs of batches of 256 random cells as CSR tensors (0
    workers: the plain loop with `to_scipy`), with the obs columns `obs` (and the
    coordinates, when there are obs columns) in the DataLoader's batches."""
    import gc

    if workers:
        ds = CellDataset(path, batch_size=256, seed=0, obs=obs, coords=bool(obs))
        dl = ds.dataloader(num_workers=workers, persistent_workers=True, multiprocessing_context="fork")

        def epoch(e: int) -> int:
            ds.set_epoch(e)
            return sum(len(b["cell"]) for b in dl)

    else:
        loader = cellarrow.open(path).loader(batch_size=256, seed=0, threads=2)

        def epoch(e: int) -> int:
            loader.set_epoch(e)
            return sum(b.to_scipy().shape[0] for b in loader)

    def total() -> float:
        gc.collect()
        me = psutil.Process()
        return sum(anon_mb(p.pid) for p in [me] + me.children())

    n = epoch(0)
    before = total()
    for e in (1, 2):
        assert epoch(e) == n
    return before, total(), n


def hf_open(path: Path) -> tuple:
    import datasets  # noqa: F401 - the import is not part of the open time

    corpus = cellarrow.open(path)
    t0 = time.perf_counter()
    ds = corpus.to_hf_dataset()
    return time.perf_counter() - t0, ds.num_rows, len(corpus.part_paths)


def cellfm_rates(root: str, n_cells: int, cells: int) -> tuple:
    """cellfm-datasets on the same cohort: (raw `fetch_cell` on random cells, its streaming
    Hugging Face path), in cells/s."""
    from cellfm_dataset.hf import load_hf_cell_dataset

    from loader_vs_cellfm import cellfm_sample, fetch_cell_rate

    fetch = fetch_cell_rate(cellfm_sample(root), n_cells, min(cells, 50_000))
    hf_cells = min(cells, 20_000)
    n, t0 = 0, time.perf_counter()
    for _ in load_hf_cell_dataset(dataset_root=root, streaming=True):
        n += 1
        if n >= hf_cells:
            break
    return fetch, n / (time.perf_counter() - t0)


def compare_cellfm(corpus, root: str, cells: int, rounds: int) -> None:
    runs = {"loop0": [], "loop2": [], "fetch": [], "hf": []}
    for _ in range(rounds):
        runs["loop0"].append(plain_loop(corpus, cells, 0))
        runs["loop2"].append(plain_loop(corpus, cells, 2))
        fetch, hf = cellfm_rates(root, corpus.n_cells, cells)
        runs["fetch"].append(fetch)
        runs["hf"].append(hf)
    med = {k: statistics.median(v) for k, v in runs.items()}
    print(f"cellfm-datasets fetch_cell, random cells: {med['fetch']:,.0f} cells/s; its HF path (streaming): {med['hf']:,.0f} cells/s")
    for k, label in (("loop0", "0 Rust threads"), ("loop2", "2 Rust threads")):
        print(
            f"plain loop + to_scipy, {label}: {med[k]:,.0f} cells/s = x{med[k] / med['fetch']:.1f} cellfm fetch_cell, "
            f"x{med[k] / med['hf']:.1f} its HF path (medians of {rounds} interleaved rounds)"
        )


def main() -> None:
    warnings.filterwarnings("ignore", message="Sparse")  # torch's beta / invariant-check notices
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus")
    ap.add_argument("--large", help="a larger corpus for the to_hf_dataset open time")
    ap.add_argument("--cells", type=int, default=200_000, help="cells per measurement (DataLoader: at least)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the DataLoader settings")
    ap.add_argument(
        "--fresh",
        action="store_true",
        help="each DataLoader measurement in a new Python process (no allocator state from the ones before)",
    )
    ap.add_argument("--cellfm", help="the same cohort converted by cellfm-datasets: ratios to its fetch_cell and HF path")
    ap.add_argument(
        "--ceiling-us",
        type=lambda v: [float(x) for x in v.split(",")],
        default=[],
        help="more CPU costs per batch (microseconds, comma-separated) for the DataLoader ceiling",
    )
    ap.add_argument("--setting", type=int, help=argparse.SUPPRESS)  # one measurement, for --fresh
    ap.add_argument("--memory", type=int, help=argparse.SUPPRESS)  # epoch_memory(workers), fresh process
    ap.add_argument(
        "--obs",
        type=lambda v: v.split(","),
        default=[],
        help="obs columns (comma-separated) for one more memory measurement: a 2-worker DataLoader "
        "whose batches carry them and the coordinates (a spatial corpus)",
    )
    args = ap.parse_args()

    path = corpus_path(args.corpus)
    if args.memory is not None:
        print(json.dumps(epoch_memory(path, args.memory, args.obs)))
        return
    if args.setting is not None:
        _, workers, threads, ring = DATALOADER_SETTINGS[args.setting]
        print(json.dumps(dataloader(path, workers, threads, ring, args.cells)))
        return
    corpus = cellarrow.open(path)
    warm(corpus)
    print(f"corpus {path}: {corpus.n_cells} cells x {corpus.n_genes} genes, nnz {corpus.nnz}")
    cells = min(args.cells, corpus.n_cells)  # the plain loop reads one epoch at most
    plain_loop(corpus, min(cells, 20_000), 2)  # warm-up
    for threads in (0, 2):
        print(f"plain loop + to_scipy, batch 256, random, {threads} Rust threads: {plain_loop(corpus, cells, threads):,.0f} cells/s")
    if args.cellfm:
        compare_cellfm(corpus, args.cellfm, cells, args.rounds)
    rates = {label: [] for label, *_ in DATALOADER_SETTINGS}
    steal = {label: [] for label, *_ in DATALOADER_SETTINGS}
    for _ in range(args.rounds):
        for i, (label, workers, threads, ring) in enumerate(DATALOADER_SETTINGS):
            if args.fresh:
                cmd = [sys.executable, __file__, str(path), "--cells", str(args.cells), "--setting", str(i)]
                rate, stolen = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            else:
                rate, stolen = dataloader(path, workers, threads, ring, args.cells)
            rates[label].append(rate)
            steal[label].append(stolen)
    for label, workers, threads, _ in DATALOADER_SETTINGS:
        # Against the one-process setting of the same round: the machine drifts between rounds.
        base = rates["0 workers, 2 threads" if threads else "0 workers, threads=0"]
        ratio = statistics.median(r / b for r, b in zip(rates[label], base))
        runs = " ".join(f"{r:,.0f}" for r in rates[label])
        stolen = " ".join(f"{s:.0%}" for s in steal[label])
        print(
            f"DataLoader(CellDataset) CSR tensors, {label}: {statistics.median(rates[label]):,.0f} cells/s, "
            f"x{ratio:.2f} one process (runs {runs}; host steal {stolen})"
        )
    # The machine's ceiling for 2 workers at the cost of a batch measured above (and others).
    measured = 256 / statistics.median(rates["0 workers, threads=0"]) * 1e6
    for us in [measured] + args.ceiling_us:
        batches = max(200, int(1e6 / us))  # about a second of work per measurement
        ratios = []
        for _ in range(args.rounds):
            one, two = burn_rate(us, 0, batches), burn_rate(us, 2, batches)
            ratios.append(two / one)
        print(
            f"DataLoader ceiling here: a dataset burning {us:.0f} us of CPU per batch and yielding an int, "
            f"2 workers x{statistics.median(ratios):.2f} one process (runs {' '.join(f'{r:.2f}' for r in ratios)})"
        )
    for p in [path] + ([corpus_path(args.large)] if args.large else []):
        runs = [(0, [], "plain loop + to_scipy"), (2, [], "DataLoader(CellDataset), 2 workers, all processes")]
        if args.obs:
            runs.append((2, args.obs, f"the same with obs {','.join(args.obs)} and coordinates"))
        for workers, obs, what in runs:
            cmd = [sys.executable, __file__, str(p), "--memory", str(workers)] + (["--obs", ",".join(obs)] if obs else [])
            before, after, n = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            print(
                f"anonymous memory, {what}: {before:.1f} MB after one epoch of {n:,} cells, "
                f"{after:.1f} MB after two more ({after - before:+.1f} MB) {p}"
            )
    for p in [path] + ([corpus_path(args.large)] if args.large else []):
        secs, rows, parts = hf_open(p)
        print(f"to_hf_dataset open: {secs * 1e3:.1f} ms ({rows} rows, {parts} parts) {p}")


if __name__ == "__main__":
    main()
