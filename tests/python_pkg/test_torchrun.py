"""A real `torchrun --nproc_per_node=2` job (gloo, CPU): disjoint ranks, complete epoch, equal
shard sizes under drop_last, and a resumed job that continues exactly."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str) -> None:
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
        "--master_addr=127.0.0.1", f"--master_port={free_port()}",
        str(HERE / "torchrun_worker.py"), *args,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"


def load(out: Path, name: str):
    return [json.loads((out / f"{name}{r}.json").read_text()) for r in range(2)]


def test_torchrun_two_ranks_partition_the_epoch_and_resume_exactly(synth, tmp_path):
    corpus = str(synth[0])
    torchrun(corpus, str(tmp_path), "--workers", "2")
    full = load(tmp_path, "full")
    assert [f["rank"] for f in full] == [f["env_rank"] for f in full] == [0, 1]
    assert all(f["world_size"] == 2 for f in full)
    per_rank = [[c for b in f["batches"] for c in b] for f in full]
    assert not set(per_rank[0]) & set(per_rank[1]), "ranks are disjoint"
    # drop_last: 220 cells / 4 shards (2 ranks x 2 workers) = 55 each; nothing dropped here.
    assert len(per_rank[0]) == len(per_rank[1]) == 110
    assert sorted(per_rank[0] + per_rank[1]) == list(range(220)), "their union is the epoch"

    # Stop each rank after 4 batches, then resume from the saved state.
    torchrun(corpus, str(tmp_path), "--workers", "2", "--stop-after", "4")
    torchrun(corpus, str(tmp_path), "--workers", "2", "--resume")
    head, resumed = load(tmp_path, "head"), load(tmp_path, "resumed")
    for r in range(2):
        assert head[r]["batches"] == full[r]["batches"][:4]
        got = head[r]["batches"] + resumed[r]["batches"]
        # 4 is a multiple of the worker count, so the round robin continues in the same order
        assert got == full[r]["batches"], f"rank {r} continues exactly"
