"""Run under torchrun: each rank iterates its shard of one epoch of a CellDataset and writes the
cell ids it served to OUT/rank<R>.json. With STOP_AFTER it stops early and saves its state; with
RESUME it loads the saved state first and serves the rest.

usage: torchrun_worker.py CORPUS OUT [--stop-after N] [--resume] [--workers W]
"""

import argparse
import json
import os
from pathlib import Path

import torch.distributed as dist

from cellarrow.torch import CellDataset

p = argparse.ArgumentParser()
p.add_argument("corpus")
p.add_argument("out")
p.add_argument("--stop-after", type=int)
p.add_argument("--resume", action="store_true")
p.add_argument("--workers", type=int, default=0)
p.add_argument("--policy", default="drop_last")
args = p.parse_args()

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
ds = CellDataset(args.corpus, batch_size=10, seed=11, epoch=3, policy=args.policy)
out = Path(args.out)
state_file = out / f"state{rank}.json"
if args.resume:
    ds.load_state_dict(json.loads(state_file.read_text()))
loader = ds.dataloader(num_workers=args.workers, multiprocessing_context="fork" if args.workers else None)
cells, n = [], 0
for batch in loader:
    cells.append(batch["cell"].tolist())
    n += 1
    if args.stop_after is not None and n == args.stop_after:
        state_file.write_text(json.dumps(ds.state_dict(batches_seen=n)))
        break
name = "resumed" if args.resume else ("head" if args.stop_after is not None else "full")
(out / f"{name}{rank}.json").write_text(
    json.dumps({"rank": rank, "world_size": world, "env_rank": int(os.environ["RANK"]), "batches": cells})
)
dist.barrier()
dist.destroy_process_group()
