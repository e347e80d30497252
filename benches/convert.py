"""Conversion benchmark: wall time, peak RSS and bytes on disk per non-zero.

Writes the synthetic 50,000 x 20,000 (5%) cohort through anndata (cached under
~/.cache/cellarrow/bench-data), plain and gzip, and converts each with the given cellarrow
binary, several times, reporting medians.

    python benches/convert.py --bin target/release/cellarrow [--repeat 3] [--cells 50000]
"""

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent


def run_measured(cmd):
    """Runs cmd; returns (seconds, peak RSS in MB) of that child alone."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed:\n{err}")
    return wall, usage.ru_maxrss / 1024.0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", required=True)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--cells", type=int, default=50_000)
    p.add_argument("--genes", type=int, default=20_000)
    p.add_argument("--density", type=float, default=0.05)
    p.add_argument("--data", default=os.path.expanduser("~/.cache/cellarrow/bench-data"))
    a = p.parse_args()
    data = pathlib.Path(a.data)
    data.mkdir(parents=True, exist_ok=True)
    rows = []
    for compression in [None, "gzip"]:
        name = f"syn_{a.cells}x{a.genes}_{a.density}" + (f"_{compression}" if compression else "") + ".h5ad"
        src = data / name
        if not src.exists():
            cmd = [sys.executable, str(HERE / "data" / "make_synthetic.py"), str(src) + ".tmp",
                   "--cells", str(a.cells), "--genes", str(a.genes), "--density", str(a.density)]
            if compression:
                cmd += ["--compression", compression]
            subprocess.run(cmd, check=True)
            os.replace(str(src) + ".tmp", src)
        walls, rss = [], []
        with tempfile.TemporaryDirectory(dir=data) as tmp:
            out = pathlib.Path(tmp) / "corpus"
            for _ in range(a.repeat):
                if out.exists():
                    shutil.rmtree(out)
                w, r = run_measured([a.bin, "convert", str(src), "-o", str(out), "--quiet"])
                walls.append(w)
                rss.append(r)
            info = json.loads(subprocess.run([a.bin, "inspect", str(out), "--json"], check=True, capture_output=True).stdout)
        rows.append({
            "input": name,
            "input_mb": src.stat().st_size / 1e6,
            "median_s": statistics.median(walls),
            "runs_s": walls,
            "peak_rss_mb": max(rss),
            "bytes_per_nnz": info["bytes_per_nnz"],
            "matrix_bytes_per_nnz": info["matrix_bytes"] / info["nnz"],
            "nnz": info["nnz"],
            "value_type": info["value_type"],
            "index_type": info["index_type"],
        })
    print("| input | size MB | median s (runs) | peak RSS MB | bytes/nnz (all files) | matrix bytes/nnz | types |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        runs = ", ".join(f"{w:.2f}" for w in r["runs_s"])
        print(f"| {r['input']} | {r['input_mb']:.0f} | {r['median_s']:.2f} ({runs}) | {r['peak_rss_mb']:.0f} | "
              f"{r['bytes_per_nnz']:.2f} | {r['matrix_bytes_per_nnz']:.2f} | {r['index_type']}/{r['value_type']} |")


if __name__ == "__main__":
    main()
