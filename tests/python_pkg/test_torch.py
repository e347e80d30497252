"""cellarrow.torch.CellDataset under torch.utils.data.DataLoader: workers, epochs, resume."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import cellarrow
from cellarrow.torch import CellDataset, collate, consumed_per_worker

SAMPLERS = {
    "random": dict(batch_size=16),
    "shuffle": dict(batch_size=16, shuffle_run=8, shuffle_window=4),
    "groups": dict(group_size=8, batch_size=2),
    "regions": dict(label="niche", batch_size=2),
    "blocks": dict(block_size=4.0, batch_size=3),
}


def epoch_items(loader, grouped: bool):
    """(cells in order, group ids in order of first appearance, cells per group)."""
    cells, groups, members = [], [], collections.defaultdict(list)
    for b in loader:
        c = b["cell"].tolist()
        cells.extend(c)
        if grouped:
            for g, cell in zip(b["group"].tolist(), c):
                if g not in members:
                    groups.append(g)
                members[g].append(cell)
    return cells, groups, members


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_two_workers_serve_every_item_of_the_epoch_once(synth, sampler):
    ds = CellDataset(synth[0], sampler, seed=7, **SAMPLERS[sampler])
    loader = DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context="fork")
    grouped = sampler not in ("random", "shuffle")
    epoch_len = cellarrow.open(synth[0]).loader(sampler, seed=7, **SAMPLERS[sampler]).epoch_len
    orders = []
    for epoch in range(2):
        ds.set_epoch(epoch)
        cells, groups, members = epoch_items(loader, grouped)
        if grouped:
            assert sorted(groups) == list(range(epoch_len)), "every group of the epoch exactly once"
            orders.append(groups)
            if sampler == "groups":
                assert all(len(m) == 8 for m in members.values())
            else:  # regions and tiling blocks partition the cells
                assert sorted(cells) == list(range(220))
        else:
            assert sorted(cells) == list(range(220)), "every cell exactly once"
            orders.append(cells)
    e0 = [c for b in DataLoader(CellDataset(synth[0], sampler, seed=7, **SAMPLERS[sampler]), batch_size=None) for c in b["cell"].tolist()]
    e1 = [c for b in DataLoader(CellDataset(synth[0], sampler, seed=7, epoch=1, **SAMPLERS[sampler]), batch_size=None) for c in b["cell"].tolist()]
    assert e0 != e1, "a second epoch gives a different order"
    assert sorted(orders[0]) == sorted(orders[1])


def test_persistent_workers_follow_set_epoch(synth):
    ds = CellDataset(synth[0], batch_size=32, seed=1)
    loader = ds.dataloader(num_workers=2, persistent_workers=True, multiprocessing_context="fork")
    seen = []
    for epoch in range(3):
        ds.set_epoch(epoch)
        cells = [c for b in loader for c in b["cell"].tolist()]
        assert sorted(cells) == list(range(220))
        seen.append(sorted_order(cells))
    assert seen[0] != seen[1] != seen[2]
    # Same epoch in a fresh dataset, one process: the same cells per epoch (order interleaves).
    ds2 = CellDataset(synth[0], batch_size=32, seed=1, epoch=2)
    assert sorted(c for b in ds2 for c in b["cell"].tolist()) == list(range(220))


def sorted_order(cells):
    return tuple(cells)


def test_spawn_workers_with_dense_output(synth):
    corpus = cellarrow.open(synth[0])
    genes = corpus.gene_names[:5]
    ds = CellDataset(synth[0], batch_size=50, seed=3, dense=genes, output="dense", obs=["cell_type", "score"])
    loader = ds.dataloader(num_workers=2, multiprocessing_context="spawn")
    cells = []
    for b in loader:
        assert b["X"].shape == (len(b["cell"]), 5) and b["X"].dtype == torch.float32
        assert isinstance(b["cell_type"], list) and b["score"].dtype == torch.float64
        cells.extend(b["cell"].tolist())
    assert sorted(cells) == list(range(220))


def test_csr_tensors_cross_worker_processes(synth):
    ds = CellDataset(synth[0], batch_size=40, seed=0, values="f32")
    for b in ds.dataloader(num_workers=2, multiprocessing_context="fork"):
        x = b["X"]
        assert x.layout == torch.sparse_csr and x.shape == (len(b["cell"]), 55)
        direct = collate(next(iter(cellarrow.open(synth[0]).loader(cohort=b["cell"].numpy(), batch_size=40, seed=0))))
        # the same cells have the same rows, whichever process gathered them
        a, d = np.argsort(b["cell"].numpy()), np.argsort(direct["cell"].numpy())
        np.testing.assert_array_equal(b["cell"].numpy()[a], direct["cell"].numpy()[d])
        np.testing.assert_array_equal(x.to_dense().numpy()[a], direct["X"].to_dense().numpy()[d])


def test_consumed_per_worker_follows_the_dataloader_round_robin():
    assert consumed_per_worker([3, 3], 0) == [0, 0]
    assert consumed_per_worker([3, 3], 3) == [2, 1]
    assert consumed_per_worker([4, 1, 2], 6) == [3, 1, 2]
    with pytest.raises(ValueError):
        consumed_per_worker([1, 1], 3)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_serves_exactly_the_rest_of_the_epoch(synth, num_workers):
    kw = dict(batch_size=12, seed=5, epoch=1)
    ctx = "fork" if num_workers else None
    full = [b["cell"].tolist() for b in CellDataset(synth[0], **kw).dataloader(num_workers=num_workers, multiprocessing_context=ctx)]
    ds = CellDataset(synth[0], **kw)
    head = []
    for i, b in enumerate(ds.dataloader(num_workers=num_workers, multiprocessing_context=ctx)):
        head.append(b["cell"].tolist())
        if i == 6:
            break
    state = ds.state_dict(batches_seen=None if num_workers == 0 else 7)
    assert state["epoch"] == 1 and state["batches_seen"] == 7
    ds2 = CellDataset(synth[0], **kw)
    ds2.load_state_dict(state)
    tail = [b["cell"].tolist() for b in ds2.dataloader(num_workers=num_workers, multiprocessing_context=ctx)]
    assert sorted(sum(head + tail, [])) == list(range(220))
    if num_workers == 0:
        assert head + tail == full
    else:
        assert sorted(map(tuple, head + tail)) == sorted(map(tuple, full))


def test_rank_and_world_size_come_from_the_environment(synth, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    ds = CellDataset(synth[0], batch_size=20, seed=0)
    assert (ds.rank, ds.world_size) == (1, 2)
    mine = [c for b in ds for c in b["cell"].tolist()]
    other = [c for b in CellDataset(synth[0], batch_size=20, seed=0, rank=0) for c in b["cell"].tolist()]
    assert len(mine) == len(other) == 110
    assert sorted(mine + other) == list(range(220))


@pytest.mark.parametrize("kw", [dict(), dict(values="f32"), dict(obs=["cell_type", "score"], coords=True)])
def test_collate_has_the_types_and_values_of_batch_to_torch(synth, kw):
    corpus = cellarrow.open(synth[0])
    obs = corpus.table("obs", ["cell_type", "score"]).to_pydict() if "obs" in kw else None
    for batch in corpus.loader("groups", group_size=8, batch_size=3, seed=1, **kw):
        out = collate(batch)
        want = batch.to_torch()
        x = out["X"]
        assert x.layout == torch.sparse_csr and x.shape == want.shape
        for part in ("crow_indices", "col_indices", "values"):
            a, b = getattr(x, part)(), getattr(want, part)()
            assert a.dtype == b.dtype and torch.equal(a, b), part
        assert torch.equal(collate(batch, "dense")["X"], want.to_dense())
        cells = batch.cells.astype(np.int64)
        assert out["cell"].dtype == torch.int64 and out["cell"].tolist() == cells.tolist()
        assert out["group"].dtype == torch.int64 and out["group"].tolist() == batch.groups.tolist()
        if obs is not None:
            assert out["cell_type"] == [obs["cell_type"][c] for c in cells]
            assert out["score"].dtype == torch.float64 and out["score"].tolist() == [obs["score"][c] for c in cells]
            assert out["x"].dtype == torch.float64 and len(out["x"]) == len(cells)


def test_dictionary_labels_by_code_equal_the_decoded_column():
    import pyarrow as pa

    from cellarrow.torch import _labels

    small = pa.array(["T", "B", "T", "NK"]).dictionary_encode()
    # A dictionary far larger than the batch takes the per-code path.
    big = pa.DictionaryArray.from_arrays(pa.array([7, 999, 7], pa.int32()), pa.array([f"c{i}" for i in range(1000)]))
    for col in (small, big, small.slice(1, 2), big.slice(1)):
        assert _labels(col) == col.dictionary_decode().to_pylist()
