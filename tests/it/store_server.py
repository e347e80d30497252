"""An S3-compatible server on 127.0.0.1 for the object-storage tests, with a fault proxy.

Starts moto's ThreadedMotoServer on a free port and, in front of it, a small HTTP proxy (also on
a free port) whose faults are switched on by commands, so that every fault is deterministic:
it hits exactly the next N matching GET requests, whatever their timing.

Prints ``READY <moto_port> <proxy_port>`` on stdout, then reads one command per line on stdin
and answers each with one line starting with ``OK`` (or ``ERR``):

    upload DIR BUCKET PREFIX      create BUCKET if needed, upload every file under DIR
    fail N STATUS [SUBSTR]        answer the next N GETs (whose path contains SUBSTR) with STATUS
    short N [SUBSTR]              send only half of the next N GET bodies, then close
    corrupt N [SUBSTR]            flip one byte in the middle of the next N GET bodies
    delay MS                      hold every GET MS milliseconds before answering (0: off)
    count                         ``OK <GETs forwarded> <GETs faulted>``
    reset                         clear faults and counts

Exits when stdin closes. Used by tests/it/store.rs, tests/python/test_store.py and
benches/remote.py (which adds the delay of a distant object store).
"""

from __future__ import annotations

import http.client
import logging
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from moto.server import ThreadedMotoServer

HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade", "te"}


class Faults:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.rules: list[list] = []  # [kind, remaining, status, substring]
        self.forwarded = 0
        self.faulted = 0
        self.delay_s = 0.0

    def take(self, path: str):
        """The fault for this GET, if any (consumes one of its count)."""
        with self.lock:
            self.forwarded += 1
            for rule in self.rules:
                kind, remaining, status, sub = rule
                if remaining > 0 and (not sub or sub in path):
                    rule[1] -= 1
                    self.faulted += 1
                    return kind, status
            return None


FAULTS = Faults()
UPSTREAM: tuple[str, int] = ("127.0.0.1", 0)


class Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def forward(self) -> tuple[int, list[tuple[str, str]], bytes]:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        conn = http.client.HTTPConnection(*UPSTREAM, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        out = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP]
        conn.close()
        return resp.status, out, data

    def reply(self, status: int, headers, data: bytes, send_len: int | None = None) -> None:
        self.send_response(status)
        for k, v in headers:
            if k.lower() != "content-length":
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data if send_len is None else data[:send_len])
        self.wfile.flush()

    def do_GET(self) -> None:
        fault = FAULTS.take(self.path)
        if FAULTS.delay_s:
            time.sleep(FAULTS.delay_s)
        if fault and fault[0] == "fail":
            body = f"<Error><Code>Injected</Code><Message>injected {fault[1]}</Message></Error>"
            self.reply(fault[1], [("Content-Type", "application/xml")], body.encode())
            return
        status, headers, data = self.forward()
        if fault and fault[0] == "short" and len(data) > 1:
            self.reply(status, headers, data, send_len=len(data) // 2)
            self.close_connection = True
            return
        if fault and fault[0] == "corrupt" and data:
            mid = len(data) // 2
            data = data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1 :]
        self.reply(status, headers, data)

    def do_HEAD(self) -> None:
        status, headers, _ = self.forward()
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()

    def other(self) -> None:
        status, headers, data = self.forward()
        self.reply(status, headers, data)

    do_PUT = do_POST = do_DELETE = other


def upload(directory: str, bucket: str, prefix: str, endpoint: str) -> int:
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        s3.create_bucket(Bucket=bucket)
    n = 0
    root = Path(directory)
    for path in sorted(root.rglob("*")):
        if path.is_file():
            key = "/".join(filter(None, [prefix.strip("/"), path.relative_to(root).as_posix()]))
            s3.upload_file(str(path), bucket, key)
            n += 1
    return n


def main() -> None:
    global UPSTREAM
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    UPSTREAM = moto.get_host_and_port()
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    proxy.daemon_threads = True
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{UPSTREAM[1]}"
    print(f"READY {UPSTREAM[1]} {proxy.server_address[1]}", flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        try:
            cmd = words[0]
            if cmd == "upload":
                n = upload(words[1], words[2], words[3] if len(words) > 3 else "", endpoint)
                print(f"OK {n}", flush=True)
            elif cmd in ("fail", "short", "corrupt"):
                n = int(words[1])
                status = int(words[2]) if cmd == "fail" else 0
                rest = words[3:] if cmd == "fail" else words[2:]
                with FAULTS.lock:
                    FAULTS.rules.append([cmd, n, status, rest[0] if rest else ""])
                print("OK", flush=True)
            elif cmd == "delay":
                with FAULTS.lock:
                    FAULTS.delay_s = int(words[1]) / 1000.0
                print("OK", flush=True)
            elif cmd == "count":
                with FAULTS.lock:
                    print(f"OK {FAULTS.forwarded} {FAULTS.faulted}", flush=True)
            elif cmd == "reset":
                with FAULTS.lock:
                    FAULTS.reset()
                print("OK", flush=True)
            else:
                print(f"ERR unknown command {cmd}", flush=True)
        except Exception as e:  # reported to the test, which fails with it
            print(f"ERR {type(e).__name__}: {e}".replace("\n", " "), flush=True)
    proxy.shutdown()
    moto.stop()
    os._exit(0)


if __name__ == "__main__":
    main()
