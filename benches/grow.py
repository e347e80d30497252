"""Growing a corpus: what an append and a merge cost next to converting everything again.

Writes synthetic files (50,000 x 20,000 at 5% by default, one seed each, cached under
~/.cache/cellarrow/bench-data) and, with the given cellarrow binary, measures medians of
wall time and peak RSS of:

- ``convert f1 f2 f3``: rebuilding a three-file corpus from scratch;
- ``append f3`` onto the corpus of ``f1 f2`` (a fresh copy each run): the same result;
- ``append small`` (a bundled 1,107-cell fixture) onto the corpus of ``f1 f2 f3``;
- ``merge A B`` of two corpora of one gene set (every part linked);
- ``merge S A`` with a corpus of other genes first (A's parts rewritten with new gene ids).

    python benches/grow.py --bin target/release/cellarrow [--repeat 3] [--cells 50000]

Prints a table and, with ``--json FILE``, writes the records.
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

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
SMALL = ROOT / "tests" / "data" / "scanpy_10x_v3_chr21_counts.h5ad"

sys.path[:0] = [str(HERE), str(HERE / "data")]
from convert import run_measured  # noqa: E402


def synthetic(data: pathlib.Path, cells: int, genes: int, density: float, seed: int) -> pathlib.Path:
    src = data / f"syn_{cells}x{genes}_{density}_seed{seed}.h5ad"
    if not src.exists():
        # In a child process: a driver grown by the data would be counted in the peak RSS of
        # every process it forks afterwards.
        tmp = src.with_suffix(".tmp.h5ad")
        code = (
            "import sys; sys.path.insert(0, sys.argv[1]); from make_synthetic import make; "
            "make(*map(int, sys.argv[3:5]), float(sys.argv[5]), int(sys.argv[6])).write_h5ad(sys.argv[2])"
        )
        subprocess.run([sys.executable, "-c", code, str(HERE / "data"), str(tmp), str(cells), str(genes),
                        str(density), str(seed)], check=True)
        os.replace(tmp, src)
    return src


def median(xs):
    return statistics.median(xs)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", required=True)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--cells", type=int, default=50_000)
    p.add_argument("--genes", type=int, default=20_000)
    p.add_argument("--density", type=float, default=0.05)
    p.add_argument("--data", default=os.path.expanduser("~/.cache/cellarrow/bench-data"))
    p.add_argument("--json")
    a = p.parse_args()
    data = pathlib.Path(a.data)
    data.mkdir(parents=True, exist_ok=True)
    f1, f2, f3 = (synthetic(data, a.cells, a.genes, a.density, s) for s in (1, 2, 3))
    cellarrow = [a.bin]
    rows = []

    def record(name, runs, extra=None):
        walls = [w for w, _ in runs]
        rss = [r for _, r in runs]
        row = {"operation": name, "seconds": median(walls), "runs": walls, "peak_rss_mb": max(rss)}
        row.update(extra or {})
        rows.append(row)
        print(f"{name:<44} {row['seconds']:8.2f} s  (runs {', '.join(f'{w:.2f}' for w in walls)})  "
              f"peak RSS {row['peak_rss_mb']:7.0f} MB" + (f"  {extra}" if extra else ""), flush=True)

    with tempfile.TemporaryDirectory(dir=data) as tmp:
        tmp = pathlib.Path(tmp)

        def convert(files, out):
            return run_measured(cellarrow + ["convert", *map(str, files), "-o", str(out), "--quiet", "--overwrite"])

        # Rebuild from scratch, and the same result by an append.
        record("convert f1 f2 f3 (rebuild)", [convert([f1, f2, f3], tmp / "all") for _ in range(a.repeat)])
        convert([f1, f2], tmp / "base")
        runs = []
        for _ in range(a.repeat):
            shutil.rmtree(tmp / "grown", ignore_errors=True)
            shutil.copytree(tmp / "base", tmp / "grown")
            runs.append(run_measured(cellarrow + ["append", str(tmp / "grown"), str(f3), "--quiet"]))
        record("append f3 onto (f1 f2)", runs)
        runs = []
        for _ in range(a.repeat):
            shutil.rmtree(tmp / "grown", ignore_errors=True)
            shutil.copytree(tmp / "all", tmp / "grown")
            runs.append(run_measured(cellarrow + ["append", str(tmp / "grown"), str(SMALL), "--quiet"]))
        record("append 1,107 cells onto (f1 f2 f3)", runs)

        # Merges: one gene set (links), then another gene set first (rewrites).
        convert([f1], tmp / "A")
        convert([f2], tmp / "B")
        convert([SMALL], tmp / "S")

        def merge(inputs, out):
            cmd = cellarrow + ["merge", *map(str, inputs), "-o", str(out), "--overwrite", "--json"]
            wall_rss = run_measured(cmd)
            report = json.loads(subprocess.run(cmd, check=True, capture_output=True).stdout)
            return wall_rss, report

        for name, inputs in [("merge A B (one gene set)", ["A", "B"]), ("merge S A (A rewritten)", ["S", "A"])]:
            runs, report = [], None
            for _ in range(a.repeat):
                r, report = merge([tmp / i for i in inputs], tmp / "merged")
                runs.append(r)
            record(name, runs, {
                k: report[k] for k in ("parts_linked", "bytes_linked", "parts_rewritten", "bytes_rewritten", "bytes")
            })
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
