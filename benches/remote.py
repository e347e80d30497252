"""Reading a corpus from object storage: cells/s from a local S3 server, with and without an
added delay per request, cold and warm node cache, next to the same corpus on local disk.

The server is moto in server mode behind the proxy of tests/it/store_server.py (the test
suite's own), which holds every GET ``--delay-ms`` milliseconds: a stand-in for a distant
object store; or, with ``--server s3s-fs``, the S3 server of the s3s-fs crate (Rust; install
with ``cargo install s3s-fs@0.14.1 --features binary --root ~/.cache/cellarrow/tools``) behind
the delaying proxy of benches/proxy/delay_proxy.rs (``cargo build --release --example delay_proxy``),
so that neither the server nor the proxy is a Python process on the same two cores. The corpus is converted from the synthetic 50,000 x 20,000 file of
benches/convert.py (cached under ~/.cache/cellarrow/bench-data). For each (delay, sampler):

- ``open``: ``cellarrow.open(url)``: the manifest, the tables' snapshot and, for the hot
  layout, the matrix parts whole; for the cold layout only the parts' footers (its chunks are
  fetched by the loader, a batch's chunks at once) (cold: an empty cache directory; warm: the
  cache a previous open and epoch filled);
- ``epoch``: one epoch of the native loader (batches of 256, 2 threads), cells/s;
- ``cold epoch``: cells / (open + epoch) with a cold cache: what the first epoch of a job costs.

    python benches/remote.py [--delay-ms 0,20] [--samplers random,shuffle,groups]
                             [--layouts hot,cold] [--server moto|s3s-fs] [--json FILE]

Run with the test venv's Python (scripts/env.sh), which has moto and the cellarrow package.
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
ROOT = HERE.parent
sys.path[:0] = [str(HERE / "data")]

BUCKET = "cellarrow-bench"


class Server:
    """tests/it/store_server.py as a child process, driven by its line commands."""

    def __init__(self):
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "it" / "store_server.py")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        words = self.proc.stdout.readline().split()
        if len(words) != 3 or words[0] != "READY":
            sys.exit(f"the S3 server did not start: {words}")
        self.moto_port, self.proxy_port = int(words[1]), int(words[2])

    def cmd(self, line: str) -> list:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        words = self.proc.stdout.readline().split()
        if not words or words[0] != "OK":
            sys.exit(f"{line}: {words}")
        return words[1:]

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(30)

    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    def set_delay(self, ms: int) -> None:
        self.cmd(f"delay {ms}")

    def put(self, local: pathlib.Path, convert: list, prefix: str) -> None:
        self.cmd(f"upload {local} {BUCKET} {prefix}")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3sFs:
    """s3s-fs (`cargo install s3s-fs --features binary`, an S3 server in Rust serving a local
    directory) and, for a delay, the delaying TCP proxy of benches/proxy/delay_proxy.rs in front of
    it; the corpora are put there by `cellarrow convert -o s3://…`."""

    def __init__(self, binary: str, proxy: str, root: pathlib.Path):
        self.proxy_bin, self.port, self.proxy = proxy, free_port(), None
        (root / BUCKET).mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [binary, "--host", "127.0.0.1", "--port", str(self.port), "--access-key", "testing",
             "--secret-key", "testing", str(root)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        import socket

        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            sys.exit("s3s-fs did not start")
        self.proxy_port = self.port

    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    def set_delay(self, ms: int) -> None:
        if self.proxy:
            self.proxy.kill()
            self.proxy.wait()
            self.proxy = None
        self.proxy_port = self.port
        if ms:
            self.proxy = subprocess.Popen([self.proxy_bin, str(self.port), str(ms)], stdout=subprocess.PIPE, text=True)
            words = self.proxy.stdout.readline().split()
            if len(words) != 2 or words[0] != "READY":
                sys.exit(f"the delaying proxy did not start: {words}")
            self.proxy_port = int(words[1])
        os.environ["AWS_ENDPOINT_URL"] = self.endpoint()

    def put(self, local: pathlib.Path, convert: list, prefix: str) -> None:
        # Through cellarrow itself: the same conversion, uploaded with its manifest last.
        self.set_delay(0)
        subprocess.run(convert + ["-o", f"s3://{BUCKET}/{prefix}", "--overwrite"], check=True)

    def close(self):
        self.set_delay(0)
        self.proc.kill()
        self.proc.wait()


READ_AHEAD = None


def epoch(corpus, sampler: str) -> tuple:
    """(cells, seconds) of one epoch of the native loader."""
    kw = dict(batch_size=256, seed=1, threads=2)
    if READ_AHEAD is not None:
        kw["read_ahead"] = READ_AHEAD
    if sampler == "groups":
        kw.update(group_size=32, batch_size=8)
    t = time.perf_counter()
    cells = 0
    for b in corpus.loader(sampler, **kw):
        cells += len(b)
    return cells, time.perf_counter() - t


def label_entropy(corpus, sampler: str, label: str = "cell_type") -> float:
    """Mean entropy (bits) of `label` over the batches of one epoch: how mixed the batches of
    this sampler are (it does not depend on where the corpus is stored)."""
    import numpy as np

    codes = corpus.table("obs", [label]).column(label).combine_chunks()
    codes = np.asarray(codes.indices if hasattr(codes, "indices") else codes.dictionary_encode().indices)
    kw = dict(batch_size=256, seed=1, threads=2)
    if sampler == "groups":
        kw.update(group_size=32, batch_size=8)
    total = n = 0
    for b in corpus.loader(sampler, **kw):
        _, counts = np.unique(codes[np.asarray(b.cells, dtype=np.int64)], return_counts=True)
        p = counts / counts.sum()
        total += float(-(p * np.log2(p)).sum())
        n += 1
    return total / max(n, 1)


def measure(a, server, tmp, local, url, layout, sampler) -> list:
    """The rows of one (layout, sampler): one per delay."""
    import cellarrow

    rows = []
    here = [epoch(cellarrow.open(local), sampler) for _ in range(a.repeat)]
    local_rate = statistics.median(c / s for c, s in here)
    entropy = label_entropy(cellarrow.open(local), sampler)
    for delay in [int(d) for d in a.delay_ms.split(",")]:
        server.set_delay(delay)
        cold_open, warm_open, cold_rate, warm_rate, first = [], [], [], [], []
        for _ in range(a.repeat):
            cache = tmp / "cache"
            shutil.rmtree(cache, ignore_errors=True)
            os.environ["CELLARROW_CACHE"] = str(cache)
            t = time.perf_counter()
            c = cellarrow.open(url)
            cold_open.append(time.perf_counter() - t)
            n, s = epoch(c, sampler)
            cold_rate.append(n / s)
            first.append(n / (cold_open[-1] + s))
            del c
            t = time.perf_counter()
            c = cellarrow.open(url)
            warm_open.append(time.perf_counter() - t)
            n, s = epoch(c, sampler)
            warm_rate.append(n / s)
            del c
        row = dict(
            layout=layout, sampler=sampler, delay_ms=delay,
            cold_open_s=statistics.median(cold_open), warm_open_s=statistics.median(warm_open),
            cold_epoch_cells_s=statistics.median(first),
            epoch_cells_s_after_cold_open=statistics.median(cold_rate),
            warm_epoch_cells_s=statistics.median(warm_rate), local_cells_s=local_rate,
            warm_over_local=statistics.median(warm_rate) / local_rate,
            label_entropy_bits=entropy,
        )
        rows.append(row)
        print(
            f"{layout:<4} {sampler:<8} delay {delay:>3} ms: open cold {row['cold_open_s']:.2f} s warm "
            f"{row['warm_open_s']:.3f} s | first epoch (cold, open included) "
            f"{row['cold_epoch_cells_s']:,.0f} cells/s | warm epoch {row['warm_epoch_cells_s']:,.0f} "
            f"| local {local_rate:,.0f} ({row['warm_over_local']:.2f}x) | cell_type entropy {entropy:.2f} bits",
            flush=True,
        )
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--delay-ms", default="0,20")
    p.add_argument("--samplers", default="random,shuffle,groups")
    p.add_argument("--layouts", default="hot,cold")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--cells", type=int, default=50_000)
    p.add_argument("--bin", default=None, help="cellarrow binary for the conversion (default: on PATH)")
    p.add_argument("--data", default=os.path.expanduser("~/.cache/cellarrow/bench-data"))
    p.add_argument("--server", choices=["moto", "s3s-fs"], default="moto",
                   help="moto behind the test suite's proxy (Python), or s3s-fs behind delay_proxy (Rust)")
    p.add_argument("--s3s-fs", default=os.path.expanduser("~/.cache/cellarrow/tools/bin/s3s-fs"))
    p.add_argument("--proxy", default=None,
                   help="the delay_proxy example (default: beside --bin, in ../examples)")
    p.add_argument("--read-ahead", type=int, default=None,
                   help="the loader's read_ahead (batches fetched ahead; default: the library's)")
    p.add_argument("--json")
    a = p.parse_args()
    global READ_AHEAD
    READ_AHEAD = a.read_ahead
    if a.proxy is None and a.bin:
        a.proxy = str(pathlib.Path(a.bin).resolve().parent / "examples" / "delay_proxy")

    data = pathlib.Path(a.data)
    data.mkdir(parents=True, exist_ok=True)
    src = data / f"syn_{a.cells}x20000_0.05.h5ad"
    if not src.exists():
        from make_synthetic import make

        make(a.cells, 20_000, 0.05, 0).write_h5ad(src)
    rows = []
    root = tempfile.TemporaryDirectory(dir=data)
    if a.server == "moto":
        server = Server()
    else:
        server = S3sFs(a.s3s_fs, a.proxy, pathlib.Path(root.name))
    try:
        with tempfile.TemporaryDirectory(dir=data) as tmp:
            tmp = pathlib.Path(tmp)
            os.environ.update(
                AWS_ENDPOINT_URL=server.endpoint(), AWS_ALLOW_HTTP="true",
                AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_REGION="us-east-1",
            )
            for layout in a.layouts.split(","):
                local = tmp / f"corpus-{layout}"
                convert = [a.bin or "cellarrow", "convert", str(src), "--quiet", "--part-cells", "16384",
                           "--layout", layout]
                subprocess.run(convert + ["-o", str(local)], check=True)
                server.put(local, convert, f"syn-{layout}")
                url = f"s3://{BUCKET}/syn-{layout}"
                for sampler in a.samplers.split(","):
                    rows.extend(measure(a, server, tmp, local, url, layout, sampler))
    finally:
        server.close()
        root.cleanup()
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
