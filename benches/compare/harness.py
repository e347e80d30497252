"""Side-by-side loader comparison: cellarrow against other single-cell stores.

Normally started by run.sh, which prepares the venvs and the cellarrow binary:

    benches/compare/run.sh [--quick] [--tools cellarrow,anndata_backed,...] [--repeat N]

Every (tool, workload, cohort) runs in a fresh subprocess (worker.py) so that time and memory
figures are isolated; the random ids are drawn once per run with a fixed seed and shared by all
tools. Prints one markdown table of medians with ratios to cellarrow; the full mode also writes
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import pathlib
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import dir_bytes, h5ad_coords, h5ad_shape_nnz  # noqa: E402

# tool module -> (display name, venv: "311" or "312", pip distribution names for versions)
TOOLS = {
    "cellarrow": ("cellarrow", "311", ["pyarrow"]),
    "anndata_backed": ("anndata backed", "311", ["anndata", "h5py"]),
    "hf_datasets": ("HF datasets", "311", ["datasets", "pyarrow"]),
    "cellfm_datasets": ("cellfm-datasets", "311", ["cellfm-datasets"]),
    "bionemo_scdl": ("bionemo-scdl", "311", ["bionemo-scdl"]),
    "annbatch": ("annbatch", "312", ["annbatch", "zarr", "zarrs", "anndata"]),
    "tiledbsoma": ("tiledbsoma", "311", ["tiledbsoma"]),
}
OPTIONAL_DIST = {"bionemo_scdl": "bionemo-scdl", "tiledbsoma": "tiledbsoma"}

WORKLOADS = [
    # key, label, unit, higher is better
    ("convert_s", "conversion wall time", "s", False),
    ("convert_rss", "conversion peak RSS", "MB", False),
    ("bytes_nnz", "bytes on disk per nnz", "B", False),
    ("single", "random single cells (warm)", "cells/s", True),
    ("batch", "random batches of 256 (warm)", "cells/s", True),
    ("own", "own loader, batches of 256", "cells/s", True),
    ("own1", "own loader, chunk size 1", "cells/s", True),
    ("groups", "groups of 64 from one sample", "cells/s", True),
    ("blocks", "spatial blocks (~64 cells)", "cells/s", True),
    ("torch0", "torch DataLoader, 0 workers", "cells/s", True),
    ("torch2", "torch DataLoader, 2 workers", "cells/s", True),
    ("mem", "anonymous memory after 256-cell batches", "MB", False),
]


def log(msg):
    print(f"[harness {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def ensure_synthetic(data: pathlib.Path, cells, genes, density, root: pathlib.Path) -> pathlib.Path:
    """Same file names as benches/convert.py, so both share the cache."""
    src = data / f"syn_{cells}x{genes}_{density}.h5ad"
    if not src.exists():
        log(f"writing {src.name} through anndata")
        tmp = str(src) + ".tmp"
        subprocess.run([sys.executable, str(root / "benches/data/make_synthetic.py"), tmp, "--cells", str(cells),
                        "--genes", str(genes), "--density", str(density)], check=True)
        os.replace(tmp, src)
    return src


def draw_ids(h5ad: pathlib.Path, n_cells: int, sizes: dict, seed: int, path: pathlib.Path):
    rng = np.random.default_rng(seed)
    out = {}
    out["single"] = rng.integers(0, n_cells, sizes["single"])
    b = rng.integers(0, n_cells, sizes["batches"] * 256)
    out["batches"], out["batches_ptr"] = b, np.arange(0, len(b) + 1, 256)
    # Groups: 64 distinct cells of one sample (each cohort here is one source file = one sample).
    g = [np.sort(rng.choice(n_cells, 64, replace=False)) for _ in range(sizes["groups"])]
    out["groups"], out["groups_ptr"] = np.concatenate(g), np.arange(0, 64 * len(g) + 1, 64)
    # Spatial blocks: squares holding ~64 cells at the cohort's mean density, cells in source order.
    xy = h5ad_coords(str(h5ad))
    blocks = []
    if xy is not None and np.isfinite(xy).all():
        lo, hi = xy.min(0), xy.max(0)
        side = float(np.sqrt(64 * np.prod(hi - lo) / n_cells))
        tries = 0
        while len(blocks) < sizes["blocks"] and tries < 100 * sizes["blocks"]:
            tries += 1
            c0 = lo + rng.random(2) * np.maximum(hi - lo - side, 0)
            sel = np.nonzero(((xy >= c0) & (xy < c0 + side)).all(1))[0]
            if len(sel) >= 16:
                blocks.append(sel)
    out["blocks"] = np.concatenate(blocks) if blocks else np.empty(0, np.int64)
    out["blocks_ptr"] = np.concatenate([[0], np.cumsum([len(x) for x in blocks])]).astype(np.int64)
    out["loader"] = rng.permutation(n_cells)[: sizes["loader"]]
    chk = rng.choice(n_cells, min(n_cells, sizes["check"]), replace=False)
    out["check"] = np.concatenate([[0, n_cells - 1], chk])
    np.savez(path, **{k: np.asarray(v, dtype=np.int64) for k, v in out.items()})
    return {"blocks": len(blocks)}


class Runner:
    def __init__(self, a):
        self.a = a
        self.py = {"311": sys.executable, "312": a.py312}
        self.logdir = pathlib.Path(a.work) / "logs"
        self.logdir.mkdir(parents=True, exist_ok=True)

    def worker(self, tool, workload, cohort, h5ad, outdir, ids, options=None, timeout=3600):
        """Runs worker.py; returns (result dict, wall s, peak RSS MB of the worker and its children)."""
        py = self.py[TOOLS[tool][1]]
        if not py:
            return {"error": self.a.py312_reason}, None, None
        spec = {"tool": tool, "workload": workload, "h5ad": str(h5ad), "outdir": str(outdir), "ids": str(ids),
                "repeats": self.a.repeat, "options": options or {}, "bin": self.a.bin}
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(spec, f)
        logf = self.logdir / f"{cohort}.{tool}.{workload}{'.' + str(options.get('chunk_size')) if options else ''}.log"
        t0 = time.perf_counter()
        env = dict(os.environ, PYTHONPATH=str(HERE), CELLARROW_BIN=self.a.bin)
        with open(logf, "w") as lf:
            proc = subprocess.Popen([py, str(HERE / "worker.py"), f.name], stdout=subprocess.PIPE, stderr=lf,
                                    cwd=str(HERE), env=env)
            try:
                out, _ = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                return {"error": f"timed out after {timeout} s"}, None, None
        wall = time.perf_counter() - t0
        # communicate() reaped the child; its rusage (children included) is in RUSAGE_CHILDREN,
        # so take the per-child peak from /proc-free accounting via wait4 bookkeeping below.
        os.unlink(f.name)
        res = None
        for line in out.decode(errors="replace").splitlines():
            if line.startswith("RESULT "):
                res = json.loads(line[7:])
        if res is None:
            tail = logf.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            res = {"error": f"exit {proc.returncode}: {tail[0][:300]}"}
        return res, wall, None

    def measured_convert(self, tool, cohort, h5ad, outdir, ids):
        """Conversion in its own process, timed and with peak RSS from wait4 (children included)."""
        py = self.py[TOOLS[tool][1]]
        if not py:
            return {"error": self.a.py312_reason}
        spec = {"tool": tool, "workload": "convert", "h5ad": str(h5ad), "outdir": str(outdir), "ids": str(ids),
                "repeats": 1, "bin": self.a.bin}
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(spec, f)
        logf = self.logdir / f"{cohort}.{tool}.convert.log"
        env = dict(os.environ, PYTHONPATH=str(HERE), CELLARROW_BIN=self.a.bin)
        with open(logf, "w") as lf:
            t0 = time.perf_counter()
            proc = subprocess.Popen([py, str(HERE / "worker.py"), f.name], stdout=subprocess.PIPE, stderr=lf,
                                    cwd=str(HERE), env=env)
            out = proc.stdout.read()
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - t0
        os.unlink(f.name)
        res = None
        for line in out.decode(errors="replace").splitlines():
            if line.startswith("RESULT "):
                res = json.loads(line[7:])
        if res is None:
            tail = logf.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            res = {"error": f"exit {os.waitstatus_to_exitcode(status)}: {tail[0][:300]}"}
        res["wall"], res["rss"] = wall, usage.ru_maxrss / 1024.0
        return res


def versions(py, dists):
    code = ("import importlib.metadata as m, json, sys\nout={'python': sys.version.split()[0]}\n"
            "for d in sys.argv[1:]:\n  try: out[d]=m.version(d)\n  except Exception: out[d]=None\nprint(json.dumps(out))")
    try:
        r = subprocess.run([py, "-c", code, *dists], capture_output=True, text=True, timeout=120)
        return json.loads(r.stdout)
    except Exception as e:
        return {"error": str(e)}


def machine():
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory": mem, "kernel": platform.release(),
            "os": platform.platform()}


def fmt(v, unit):
    if v is None:
        return None
    if unit == "cells/s":
        return f"{v:,.0f}"
    if unit == "s":
        return f"{v:.2f}"
    if unit == "B":
        return f"{v:.2f}"
    return f"{v:,.0f}"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--root", required=True)
    p.add_argument("--py312")
    p.add_argument("--py312-error")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--tools", default=",".join(TOOLS))
    p.add_argument("--cohorts", default=None, help="comma-separated subset of cohort names")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--convert-repeat", type=int, default=None,
                   help="conversions per tool (default: --repeat for cohorts up to 100,000 cells, else 1)")
    p.add_argument("--seed", type=int, default=20240601)
    p.add_argument("--reuse", action="store_true", help="reuse existing conversions (no conversion timing)")
    p.add_argument("--doc", default=None, help="write the markdown document here (full mode: docs/benchmarks.md)")
    a = p.parse_args()
    a.py312_reason = None
    if not a.py312:
        a.py312_reason = (pathlib.Path(a.py312_error).read_text().strip() if a.py312_error else "no Python 3.12 venv")
    a.repeat = max(3, a.repeat)
    root = pathlib.Path(a.root)
    data = pathlib.Path(a.data)
    data.mkdir(parents=True, exist_ok=True)
    mode = "quick" if a.quick else "full"
    work = pathlib.Path(a.work) / mode
    work.mkdir(parents=True, exist_ok=True)
    a.work = str(work)
    load_start = os.getloadavg()
    started = datetime.datetime.now(datetime.timezone.utc)

    mouse = root / "tests/data/scanpy_10x_10k_subset_mouse_counts.h5ad"
    if a.quick:
        cohorts = [("syn-10k", (10_000, 2_000, 0.05)), ("syn-100k", (100_000, 2_000, 0.01)), ("mouse-10k", mouse)]
        sizes = {"single": 300, "batches": 8, "groups": 16, "blocks": 16, "loader": 2048, "check": 100}
        mem_pair = ("syn-10k", "syn-100k")
    else:
        cohorts = [("mouse-10k", mouse), ("syn-50k", (50_000, 20_000, 0.05)), ("syn-1m", (1_000_000, 2_000, 0.01))]
        sizes = {"single": 500, "batches": 40, "groups": 64, "blocks": 64, "loader": 10240, "check": 300}
        mem_pair = ("syn-50k", "syn-1m")
    if a.cohorts:
        keep = set(a.cohorts.split(","))
        cohorts = [c for c in cohorts if c[0] in keep]
    tools = [t for t in a.tools.split(",") if t]
    runner = Runner(a)
    venv = pathlib.Path(sys.prefix)
    not_installed = {}
    for t, dist in OPTIONAL_DIST.items():
        err = venv / "optional" / f"{dist}.error"
        if err.exists():
            not_installed[t] = "pip: " + err.read_text().strip()

    vers = {"harness (3.11)": versions(sys.executable, sorted({d for t in tools for d in TOOLS[t][2] if TOOLS[t][1] == "311"} | {"numpy", "scipy", "torch", "h5py"}))}
    if a.py312:
        vers["annbatch venv (3.12)"] = versions(a.py312, ["annbatch", "zarr", "zarrs", "anndata", "numpy", "scipy"])
    try:
        vers["cellarrow"] = subprocess.run([a.bin, "--version"], capture_output=True, text=True).stdout.strip()
        vers["cellarrow commit"] = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                                                  capture_output=True, text=True).stdout.strip()
    except Exception:
        pass
    tool_mod = __import__("tools.cellarrow", fromlist=["backend"])

    def emit(final):
        doc = render(mode, cohorts, tools, results, meta, mem_pair, vers, machine(), load_start, os.getloadavg(),
                     started, tool_mod.backend(), not_installed, a)
        if not final:
            doc += "\n_(partial: the run was still going when this was written)_\n"
        (work / "table.md").write_text(doc)
        # The document in the repository changes once, whole: a partial one there could be
        # committed while a run is going (the work folder's copy shows the progress).
        if a.doc and final:
            tmp = pathlib.Path(a.doc).with_suffix(".md.tmp")
            tmp.write_text(doc)
            tmp.replace(a.doc)
        return doc

    results = {}  # (cohort, tool) -> {workload: value or {"na": reason}}
    meta = {}
    for cname, spec in cohorts:
        h5ad = spec if isinstance(spec, pathlib.Path) else ensure_synthetic(data, *spec, root)
        n_cells, n_genes, nnz = h5ad_shape_nnz(str(h5ad))
        ids = work / f"{cname}.ids.npz"
        info = draw_ids(h5ad, n_cells, sizes, a.seed, ids)
        meta[cname] = {"h5ad": h5ad.name, "cells": n_cells, "genes": n_genes, "nnz": nnz,
                       "h5ad_mb": h5ad.stat().st_size / 1e6, "blocks": info["blocks"]}
        log(f"cohort {cname}: {n_cells} x {n_genes}, {nnz} nnz, {info['blocks']} blocks")
        conv_repeat = a.convert_repeat or (a.repeat if n_cells <= 100_000 and not a.quick else 1)
        meta[cname]["convert_repeats"] = conv_repeat
        for tool in tools:
            r = results.setdefault((cname, tool), {})
            if tool in not_installed:
                r["all"] = {"na": not_installed[tool]}
                continue
            mod_src = (HERE / "tools" / f"{tool}.py").read_text()
            no_convert = "NO_CONVERT" in mod_src
            outdir = work / cname / tool
            if no_convert:
                for k in ("convert_s", "convert_rss"):
                    r[k] = {"na": "none: reads the .h5ad"}
                r["bytes_nnz"] = h5ad.stat().st_size / nnz
            elif a.reuse and outdir.exists():
                r["convert_s"] = r["convert_rss"] = {"na": "reused"}
                r["bytes_nnz"] = dir_bytes(str(outdir)) / nnz
            else:
                walls, rss = [], []
                for _ in range(conv_repeat):
                    if outdir.exists():
                        shutil.rmtree(outdir)
                    log(f"{cname} {tool} convert")
                    res = runner.measured_convert(tool, cname, h5ad, outdir, ids)
                    if "error" in res:
                        break
                    walls.append(res["wall"])
                    rss.append(res["rss"])
                if "error" in res:
                    log(f"{cname} {tool} convert failed: {res['error']}")
                    r["all"] = {"na": "convert failed: " + res["error"]}
                    continue
                r["convert_s"] = statistics.median(walls)
                r["convert_s_runs"] = walls
                r["convert_rss"] = max(rss)
                r["bytes_nnz"] = dir_bytes(str(outdir)) / nnz
            # Correctness first: a tool that returns wrong values gets no throughput figures.
            chk, _, _ = runner.worker(tool, "check", cname, h5ad, outdir, ids)
            r["check"] = chk
            if not chk.get("ok"):
                log(f"{cname} {tool} CHECK FAILED: {chk.get('error') or chk.get('detail')}")
                r["all"] = {"na": "wrong values: " + str(chk.get("error") or chk.get("detail"))}
                continue
            log(f"{cname} {tool} check ok: {chk['detail']}")
            wl = ["single", "batch", "groups", "blocks", "torch0", "torch2"]
            if cname in mem_pair:
                wl.append("memory")
            src = (HERE / "tools" / f"{tool}.py").read_text()
            for w in wl:
                if w == "blocks" and not meta[cname]["blocks"]:
                    r[w] = {"na": "no coordinates"}
                    continue
                if w.startswith("torch") and "def torch_dataset" not in src:
                    r[w] = {"na": getattr_reason(src, "NO_TORCH") or "no torch dataset"}
                    continue
                log(f"{cname} {tool} {w}")
                res, _, _ = runner.worker(tool, w, cname, h5ad, outdir, ids)
                if "error" in res:
                    log(f"  error: {res['error']}")
                    r["mem" if w == "memory" else w] = {"na": "error: " + res["error"]}
                elif "skip" in res:
                    r[w] = {"na": res["skip"]}
                elif w == "memory":
                    r["mem"] = res["mem_abs"]["anon"]
                    r["mem_detail"] = res
                else:
                    r[w] = res["median"]
                    r[w + "_runs"] = res["rates"]
            if "def own_batches" in src:
                for key, cs in own_rows(tool):
                    log(f"{cname} {tool} own loader chunk_size={cs}")
                    res, _, _ = runner.worker(tool, "own", cname, h5ad, outdir, ids,
                                              options={"chunk_size": cs, "n_batches": sizes["batches"]})
                    r[key] = {"na": "error: " + res["error"]} if "error" in res else res["median"]
                    if "rates" in res:
                        r[key + "_runs"] = res["rates"]
        save(work, results, meta)
        emit(final=False)

    print(emit(final=True))
    if a.doc:
        log(f"wrote {a.doc}")


def own_rows(tool):
    """The "own loader" rows of a tool: its OWN_ROWS, else the default chunk size and 1."""
    mod = importlib.import_module(f"tools.{tool}")
    return getattr(mod, "OWN_ROWS", (("own", None), ("own1", 1)))


def getattr_reason(src, name):
    for line in src.splitlines():
        if line.startswith(name + " ="):
            return line.split("=", 1)[1].strip().strip('"')
    return None


def save(work, results, meta):
    ser = {f"{c}|{t}": v for (c, t), v in results.items()}
    (work / "results.json").write_text(json.dumps({"results": ser, "meta": meta}, indent=1, default=str))


def cell(r, key, unit, base, higher):
    if "all" in r:
        return "n/a"
    v = r.get(key)
    if v is None:
        return "—"
    if isinstance(v, dict):
        return "n/a" + (f": {v['na']}" if len(v.get("na", "")) < 40 else "¹")
    s = fmt(v, unit)
    if isinstance(base, (int, float)) and base:
        ratio = v / base
        s += f" ({ratio:.2f}×)" if ratio >= 0.1 else f" ({ratio:.2g}×)"
    return s


def render(mode, cohorts, tools, results, meta, mem_pair, vers, mach, l0, l1, started, backend, not_installed, a):
    L = []
    L.append("# Side-by-side loader benchmarks\n")
    L.append(f"Generated by `benches/compare/run.sh{' --quick' if mode == 'quick' else ''}` on "
             f"{started.strftime('%Y-%m-%d %H:%M UTC')} ({mode} mode). Every figure is a median over "
             f"{a.repeat} timed passes after one untimed warm-up pass (warm page cache), each "
             "(tool, workload, cohort) in its own process; all figures come from the same run. "
             "In parentheses: the tool's value divided by cellarrow's (throughput: above 1 means faster "
             "than cellarrow; time, memory and bytes: above 1 means larger). n/a: the workload does not exist "
             "for that tool or failed; the footnotes give the reason.\n")
    L.append("## How to run\n")
    L.append("```\nbenches/compare/run.sh --quick   # a few minutes: small cohorts, results in ~/.cache/cellarrow/compare-work/quick\n"
             "benches/compare/run.sh           # full: the cohorts below; rewrites docs/benchmarks.md\n```\n")
    L.append("run.sh creates the venvs (`~/.cache/cellarrow/compare-venv-<hash>` from Python 3.11 with "
             "`requirements.txt` and, one by one, `requirements-optional.txt`; `compare-venv-py312-<hash>` for "
             "annbatch), builds the `cellarrow` Python package (release wheel, installed in the 3.11 venv) and CLI, writes the synthetic "
             "cohorts through anndata (`benches/data/make_synthetic.py`, cached in `~/.cache/cellarrow/bench-data`) "
             "and runs `harness.py`. One adapter per tool lives in `benches/compare/tools/`.\n")
    L.append("## Workloads\n")
    L.append("- Ids are source rows of the h5ad, drawn once per run with a fixed seed and shared by every tool; "
             "stores that reorder cells (cellarrow's Z-order for spatial samples, annbatch's pre-shuffle) map them.")
    L.append("- Every fetched batch is turned into a `scipy.sparse.csr_matrix` in the store's gene space and every "
             "value and gene index is summed (nothing lazy can skip work). One untimed pass warms the page cache.")
    L.append("- *random single cells*: one call per cell. *random batches of 256*: uniformly random ids. "
             "*groups of 64 from one sample*: 64 distinct cells of one sample, sorted (each cohort is one file, "
             "so one sample). *spatial blocks*: the cells inside random squares sized to hold ~64 cells at the "
             "mean density, computed from `obsm['spatial']` and fetched through each tool's id access (no tool's own "
             "block sampler is used, so every tool reads the same cells).")
    L.append("- *own loader*: the tool's own recommended random iterator where it has one that cannot take "
             "given ids: cellarrow's `corpus.loader(batch_size=256)` (fully random cells, two Rust threads), "
             "annbatch's `Loader` over its pre-shuffled collection (chunk_size 32 and 1); its cells are "
             "not the shared ids, so one of its batches is checked against the source rows of its cell ids.")
    L.append("- *torch DataLoader*: `DataLoader(dataset, batch_size=256, sampler=<shared random ids>, num_workers=0|2)`, "
             "the tool's own torch dataset and collate function where it has one (bionemo-scdl), otherwise a "
             "map-style dataset with a batched `__getitems__` over the adapter's fetch; workers persist across "
             "passes, so the warm-up pass pays their start-up.")
    L.append("- *conversion*: wall time and peak RSS (`wait4`, children included) of a process running the tool's "
             "own converter; *bytes per nnz*: every file of the output (for anndata backed: the h5ad itself).")
    L.append("- *memory*: anonymous memory (`smaps_rollup`) of the reader process after opening the store and "
             "fetching the random batches.\n")
    L.append("## Machine\n")
    L.append(f"- CPU: {mach['cpu']}, {mach['cores']} cores; memory {mach['memory']}; Linux {mach['kernel']}")
    L.append(f"- Load average (1/5/15 min) at start {l0[0]:.2f}/{l0[1]:.2f}/{l0[2]:.2f}, at end "
             f"{l1[0]:.2f}/{l1[1]:.2f}/{l1[2]:.2f}. The cores are shared with other builds, so absolute "
             "numbers are noisy; ratios within one run are the meaningful part.")
    L.append(f"- cellarrow reader in this run: {backend}\n")
    L.append("## Versions\n")
    for k, v in vers.items():
        L.append(f"- {k}: `{json.dumps(v) if isinstance(v, dict) else v}`")
    L.append("")
    L.append("## Cohorts\n")
    for c, _ in cohorts:
        m = meta.get(c)
        if m:
            L.append(f"- **{c}**: `{m['h5ad']}`, {m['cells']:,} cells x {m['genes']:,} genes, {m['nnz']:,} non-zeros, "
                     f"{m['h5ad_mb']:.0f} MB h5ad; {m['blocks']} spatial blocks; conversions timed "
                     f"{m['convert_repeats']}x")
    L.append("")
    names = [TOOLS[t][0] for t in tools]
    foot = []
    for c, _ in cohorts:
        if c not in meta:
            continue
        L.append(f"## {c}\n")
        L.append("| workload | unit | " + " | ".join(names) + " |")
        L.append("|---|---|" + "---|" * len(names))
        base_r = results.get((c, "cellarrow"), {})
        for key, label, unit, higher in WORKLOADS:
            if key == "mem" and c not in mem_pair:
                continue
            row = []
            for t in tools:
                r = results.get((c, t), {})
                base = base_r.get(key) if t != "cellarrow" else None
                s = cell(r, key, unit, base, higher)
                reason = (r.get("all") or {}).get("na") if "all" in r else (r.get(key) or {}).get("na") if isinstance(r.get(key), dict) else None
                if reason and (s.endswith("¹") or s == "n/a"):
                    note = f"{c} / {TOOLS[t][0]}: {reason}" if "all" in r else f"{c} / {TOOLS[t][0]} / {label}: {reason}"
                    if note not in foot:
                        foot.append(note)
                    s = f"n/a [{foot.index(note) + 1}]"
                row.append(s)
            L.append(f"| {label} | {unit} | " + " | ".join(row) + " |")
        L.append("")
    if mem_pair[0] in meta and mem_pair[1] in meta:
        L.append(f"## Memory at {meta[mem_pair[0]]['cells']:,} vs {meta[mem_pair[1]]['cells']:,} cells\n")
        L.append("Anonymous and private memory (MB, from /proc/self/smaps_rollup) of a reader process after "
                 "opening the store and fetching the random 256-cell batches; includes the interpreter and the "
                 "tool's imports. A reader whose memory does not grow with the corpus has equal columns.\n")
        L.append("| tool | anon " + mem_pair[0] + " | anon " + mem_pair[1] + " | private " + mem_pair[0] +
                 " | private " + mem_pair[1] + " |")
        L.append("|---|---|---|---|---|")
        for t in tools:
            vals = []
            for field in ("anon", "private"):
                for c in mem_pair:
                    d = results.get((c, t), {}).get("mem_detail")
                    vals.append(f"{d['mem_abs'][field]:,.0f}" if d else "n/a")
            L.append(f"| {TOOLS[t][0]} | " + " | ".join([vals[0], vals[1], vals[2], vals[3]]) + " |")
        L.append("")
    L.append("## Correctness\n")
    L.append("Before any timing, each tool fetches the same random cell ids (plus the first and last cell); "
             "its values are mapped to the source gene names and compared with rows read straight from the "
             "HDF5 CSR arrays. A tool that fails gets no figures.\n")
    for c, _ in cohorts:
        for t in tools:
            r = results.get((c, t), {})
            chk = r.get("check")
            if chk:
                status = "ok" if chk.get("ok") else "FAILED"
                L.append(f"- {c} / {TOOLS[t][0]}: {status}: {chk.get('detail') or chk.get('error')}"
                         + (f"; own loader: {chk.get('own_detail')}" if chk.get('own_detail') else ""))
    L.append("")
    if foot:
        L.append("## Notes\n")
        for i, f in enumerate(foot, 1):
            L.append(f"{i}. {f}")
        L.append("")
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    main()
