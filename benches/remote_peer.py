"""TileDB-SOMA reading the same synthetic corpus from the same local S3 server as
benches/remote.py, with the same delays: the peer column of docs/benchmarks.md's object-storage
table.

The h5ad is converted with `tiledbsoma.io.from_h5ad` on local disk, the experiment is uploaded
to s3s-fs (boto3), and read back through `s3://` with TileDB's own S3 client
(`vfs.s3.endpoint_override`), a fresh context (so a cold cache) for each measurement:

- ``random``: batches of 256 random cells, `X.read(coords=(ids,))` as the comparison harness
  does (benches/compare/tools/tiledbsoma.py);
- ``shuffle``: batches of 4 runs of 64 consecutive cells (the block shuffle's reads);
- ``groups``: batches of 8 runs of 32 consecutive cells (random groups of cellarrow's
  ``groups`` sampler are the same size).

Each measurement reads ``--batches`` batches and reports cells/s (the open included, as in
remote.py's first-epoch column). Run with a venv that has tiledbsoma, anndata, scipy and boto3
(`pip install tiledbsoma==2.3.0 anndata boto3`):

    python benches/remote_peer.py --bin target/release/cellarrow [--delay-ms 0,20] [--json FILE]

``--bin`` locates the delay proxy beside the release binary (../examples/delay_proxy).
"""

import argparse
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE / "data")]

from remote import BUCKET, S3sFs  # noqa: E402

PREFIX = "soma"


def upload(endpoint: str, local: pathlib.Path) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    for path in sorted(local.rglob("*")):
        if path.is_file():
            s3.upload_file(str(path), BUCKET, f"{PREFIX}/{path.relative_to(local).as_posix()}")


def context(endpoint: str):
    import tiledbsoma

    host = endpoint.removeprefix("http://")
    return tiledbsoma.SOMATileDBContext(tiledb_config={
        "vfs.s3.endpoint_override": host,
        "vfs.s3.scheme": "http",
        "vfs.s3.use_virtual_addressing": "false",
        "vfs.s3.region": "us-east-1",
        "vfs.s3.aws_access_key_id": "testing",
        "vfs.s3.aws_secret_access_key": "testing",
    })


def batches(kind: str, n_cells: int, n: int, rng) -> list:
    out = []
    for _ in range(n):
        if kind == "random":
            out.append(np.sort(rng.choice(n_cells, 256, replace=False)))
        else:
            run, runs = (64, 4) if kind == "shuffle" else (32, 8)
            starts = rng.integers(0, n_cells - run, runs)
            out.append(np.concatenate([np.arange(s, s + run) for s in starts]))
    return out


def measure(endpoint: str, kind: str, n_cells: int, n_batches: int, seed: int) -> float:
    import tiledbsoma

    plan = batches(kind, n_cells, n_batches, np.random.default_rng(seed))
    t = time.perf_counter()
    exp = tiledbsoma.Experiment.open(f"s3://{BUCKET}/{PREFIX}", context=context(endpoint))
    X = exp.ms["RNA"].X["data"]
    cells = 0
    for ids in plan:
        tbl = X.read(coords=(np.unique(ids),)).tables().concat()
        assert tbl.num_rows > 0
        cells += len(ids)
    s = time.perf_counter() - t
    exp.close()
    return cells / s


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--delay-ms", default="0,20")
    p.add_argument("--samplers", default="random,shuffle,groups")
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--cells", type=int, default=50_000)
    p.add_argument("--bin", required=True, help="the release cellarrow binary (locates the delay proxy)")
    p.add_argument("--s3s-fs", default=os.path.expanduser("~/.cache/cellarrow/tools/bin/s3s-fs"))
    p.add_argument("--data", default=os.path.expanduser("~/.cache/cellarrow/bench-data"))
    p.add_argument("--json")
    a = p.parse_args()
    proxy = str(pathlib.Path(a.bin).resolve().parent / "examples" / "delay_proxy")

    data = pathlib.Path(a.data)
    src = data / f"syn_{a.cells}x20000_0.05.h5ad"
    if not src.exists():
        sys.exit(f"{src} is missing: run benches/remote.py first (it makes it)")
    soma = data / f"soma_{a.cells}"
    if not soma.exists():
        import tiledbsoma.io

        tiledbsoma.io.from_h5ad(str(soma), str(src), measurement_name="RNA")
    rows = []
    with tempfile.TemporaryDirectory(dir=data) as root:
        server = S3sFs(a.s3s_fs, proxy, pathlib.Path(root))
        try:
            server.set_delay(0)
            upload(server.endpoint(), soma)
            for delay in [int(d) for d in a.delay_ms.split(",")]:
                server.set_delay(delay)
                for kind in a.samplers.split(","):
                    runs = [measure(server.endpoint(), kind, a.cells, a.batches, seed) for seed in range(a.repeat)]
                    row = dict(tool="tiledbsoma", sampler=kind, delay_ms=delay,
                               cold_cells_s=statistics.median(runs), runs=runs)
                    rows.append(row)
                    print(f"tiledbsoma {kind:<8} delay {delay:>3} ms: {row['cold_cells_s']:,.0f} cells/s "
                          f"(runs {' '.join(f'{r:,.0f}' for r in runs)})", flush=True)
        finally:
            server.close()
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
