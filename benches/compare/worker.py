"""Runs one (tool, workload) in a fresh process and prints one JSON line with the result.

    python worker.py SPEC.json

SPEC: tool, workload, h5ad, outdir, ids (an .npz of shared ids), repeats, options.
"""

from __future__ import annotations

import importlib
import json
import pathlib
import statistics
import sys
import time
import traceback

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

from common import compare, memory_mb, reference_rows, to_gene_space, touch, h5ad_names  # noqa: E402


def touch_any(b):
    """touch() for a scipy matrix, a torch tensor (sparse CSR or dense) or a dict holding one."""
    if isinstance(b, dict):
        b = b.get("X", next(iter(b.values())))
    mod = type(b).__module__
    if mod.startswith("torch"):
        import torch

        if b.layout == torch.sparse_csr:
            return float(b.values().double().sum()) + float(b.col_indices().sum())
        return float(b.double().sum())
    return touch(b)


def timed_passes(fn, units, repeats):
    """One untimed warm-up pass, then `repeats` timed passes; returns units/s per pass."""
    fn()
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        rates.append(units / (time.perf_counter() - t0))
    return rates


def run(spec):
    tool = importlib.import_module(f"tools.{spec['tool']}")
    w = spec["workload"]
    h5ad, outdir = spec["h5ad"], spec["outdir"]
    opts = spec.get("options", {})
    if w == "convert":
        if spec["tool"] == "cellarrow":
            tool.convert(h5ad, outdir, bin=spec["bin"])
        else:
            tool.convert(h5ad, outdir)
        return {}
    ids = np.load(spec["ids"])
    mem0 = memory_mb()
    h = tool.open(outdir, h5ad)
    reps = spec["repeats"]
    out = {}
    if w == "check":
        check = ids["check"]
        ref = reference_rows(h5ad, check)
        _, ref_genes = h5ad_names(h5ad)
        got = to_gene_space(tool.fetch_cells(h, check), tool.genes(h), ref_genes)
        ok, msg = compare(got, ref)
        out = {"ok": ok, "detail": msg}
        if hasattr(tool, "own_batches"):
            ok2, msg2 = tool.check_own_batches(h, h5ad, ref_genes)
            out["own_ok"], out["own_detail"] = ok2, msg2
    elif w == "single":
        cells = ids["single"]
        out["rates"] = timed_passes(lambda: [touch(tool.fetch_cells(h, [i])) for i in cells], len(cells), reps)
    elif w in ("batch", "groups", "blocks"):
        key = {"batch": "batches", "groups": "groups", "blocks": "blocks"}[w]
        arr, ptr = ids[key], ids[key + "_ptr"]
        lists = [arr[ptr[k]:ptr[k + 1]] for k in range(len(ptr) - 1)]
        if not lists:
            return {"skip": "no such groups in this cohort"}
        n = int(ptr[-1])
        out["rates"] = timed_passes(lambda: [touch(tool.fetch_cells(h, b)) for b in lists], n, reps)
    elif w == "own":
        # The tool's own recommended batch iterator (annbatch Loader); option chunk_size.
        n_batches = int(opts.get("n_batches", 40))
        out["rates"] = timed_passes(lambda: tool.own_batches(h, n_batches, 256, opts), n_batches * 256, reps)
    elif w.startswith("torch"):
        import torch
        from torch.utils.data import DataLoader

        torch.set_num_threads(1)
        workers = int(w[len("torch"):])
        ds, collate = tool.torch_dataset(outdir, h5ad)
        sampler = [int(i) for i in ids["loader"]]

        # One loader for all passes; with workers they persist, so the warm-up pass pays their
        # start-up and the timed passes measure the steady state.
        dl = DataLoader(ds, batch_size=256, sampler=sampler, num_workers=workers, collate_fn=collate,
                        persistent_workers=workers > 0)

        def epoch():
            for b in dl:
                touch_any(b)

        out["rates"] = timed_passes(epoch, len(sampler), reps)
    elif w == "memory":
        arr, ptr = ids["batches"], ids["batches_ptr"]
        for k in range(len(ptr) - 1):
            touch(tool.fetch_cells(h, arr[ptr[k]:ptr[k + 1]]))
        mem1 = memory_mb()
        out["mem"] = {k: mem1[k] - mem0[k] for k in mem1}
        out["mem_abs"] = mem1
    else:
        raise ValueError(f"unknown workload {w}")
    if "rates" in out:
        out["median"] = statistics.median(out["rates"])
    return out


def main():
    spec = json.loads(pathlib.Path(sys.argv[1]).read_text())
    try:
        res = run(spec)
    except Exception as e:  # reported in the table, with the exception line
        res = {"error": f"{type(e).__name__}: {e}".splitlines()[0][:300], "trace": traceback.format_exc()[-2000:]}
    print("RESULT " + json.dumps(res))


if __name__ == "__main__":
    main()
