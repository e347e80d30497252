"""Batches of DataLoader workers through the shared-memory ring (cellarrow._shm): real torch,
real worker processes. Every received batch is compared value for value with the batch the
same shard gathers in this process, and the ring's counters show which path carried it."""

from __future__ import annotations

import collections
import gc
import os
import time

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from cellarrow import _shm
from cellarrow.torch import CellDataset, collate

pytestmark = pytest.mark.skipif(not _shm.SUPPORTED, reason="the ring needs Linux memfd")

SAMPLERS = {
    "random": dict(batch_size=16),
    "shuffle": dict(batch_size=16, shuffle_run=8, shuffle_window=4),
    "groups": dict(group_size=8, batch_size=2),
    "regions": dict(label="niche", batch_size=2),
    "blocks": dict(block_size=4.0, batch_size=3),
}
OBS = dict(obs=["cell_type", "score"], coords=True)


def in_process(ds: CellDataset, num_workers: int) -> dict:
    """Every batch of every worker's shard, collated here, by its cell ids."""
    out = {}
    for w in range(num_workers):
        for b in ds._loader(w, num_workers, threads=0):
            c = collate(b, ds.output)
            key = tuple(c["cell"].tolist())
            assert key not in out
            out[key] = c
    return out


def assert_same_batch(got: dict, want: dict) -> None:
    assert type(got) is dict
    assert list(got) == list(want), "same keys in the same order"
    for key, w in want.items():
        g = got[key]
        if isinstance(w, torch.Tensor):
            assert isinstance(g, torch.Tensor), key
            assert (g.layout, g.dtype, g.shape) == (w.layout, w.dtype, w.shape), key
            if w.layout == torch.sparse_csr:
                for part in ("crow_indices", "col_indices", "values"):
                    a, b = getattr(g, part)(), getattr(w, part)()
                    assert a.dtype == b.dtype and torch.equal(a, b), (key, part)
            else:
                assert torch.equal(g, w), key
        else:
            assert g == w, key


def received() -> int:
    return _shm.stats()["received"]


def check_epoch(loader, expected: dict, hold: bool = False) -> tuple:
    """Consumes one epoch, checks every batch against ``expected`` and that each arrives once;
    returns (batches, batches that came through the ring, the batches if ``hold``)."""
    r0, seen, held = received(), set(), []
    for b in loader:
        key = tuple(b["cell"].tolist())
        assert key in expected and key not in seen, "every batch of the epoch exactly once"
        seen.add(key)
        assert_same_batch(b, expected[key])
        if hold:
            held.append(b)
    assert seen == set(expected)
    return len(seen), received() - r0, held


@pytest.mark.parametrize("output", ["csr", "dense"])
@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_ring_batches_equal_the_in_process_batches(synth, sampler, output):
    ds = CellDataset(synth[0], sampler, seed=4, output=output, **SAMPLERS[sampler], **OBS)
    expected = in_process(ds, 2)
    n, ring, _ = check_epoch(ds.dataloader(num_workers=2, multiprocessing_context="fork"), expected)
    assert ring == n, "every batch came through the ring"


def test_dense_gene_subset_and_f32_values_through_the_ring(synth):
    import cellarrow

    genes = cellarrow.open(synth[0]).gene_names[3:9]
    for kw in (dict(dense=genes, output="dense"), dict(values="f32")):
        ds = CellDataset(synth[0], batch_size=24, seed=2, **kw, **OBS)
        n, ring, _ = check_epoch(ds.dataloader(num_workers=2, multiprocessing_context="fork"), in_process(ds, 2))
        assert ring == n


def test_every_cell_arrives_once_through_the_ring_with_two_workers(chr21):
    ds = CellDataset(chr21[0], batch_size=64, seed=11)
    loader = ds.dataloader(num_workers=2, multiprocessing_context="fork")
    r0 = received()
    cells = [c for b in loader for c in b["cell"].tolist()]
    assert sorted(cells) == list(range(1107))
    assert received() - r0 == -(-553 // 64) + -(-554 // 64)


def test_slots_are_reused_over_a_long_epoch(chr21):
    # 1,107 cells in batches of 8: 140 batches through 3 slots per worker (prefetch_factor 1).
    ds = CellDataset(chr21[0], batch_size=8, seed=3)
    loader = ds.dataloader(num_workers=2, prefetch_factor=1, multiprocessing_context="fork")
    assert loader.dataset.ring_slots == 3 and ds.ring_slots == 4, "the dataset itself is not changed"
    before = _shm.stats()
    n, ring, _ = check_epoch(loader, in_process(ds, 2))
    after = _shm.stats()
    assert n == 140 and ring == n, "no batch needed torch's transport"
    # Each worker maps one segment, or a few when a larger batch made it grow.
    assert 2 <= after["mapped"] - before["mapped"] <= 6


def batch_bytes(b: dict) -> int:
    """Bytes of the tensors of a received batch."""
    n = 0
    for t in b.values():
        if isinstance(t, torch.Tensor):
            parts = [t.crow_indices(), t.col_indices(), t.values()] if t.layout == torch.sparse_csr else [t]
            n += sum(p.numel() * p.element_size() for p in parts)
    return n


@pytest.mark.parametrize("cohort, kw", [("chr21", dict(batch_size=64)), ("synth", dict(batch_size=16, **OBS))])
def test_workers_gather_their_batches_straight_into_the_ring(request, cohort, kw):
    path = request.getfixturevalue(cohort)[0]
    ds = CellDataset(path, seed=8, **kw)
    expected = in_process(ds, 2)
    loader = ds.dataloader(num_workers=2, multiprocessing_context="fork")
    c0, r0 = _shm.stats()["copied"], received()
    sizes, obs_bytes = [], 0
    for b in loader:
        assert_same_batch(b, expected.pop(tuple(b["cell"].tolist())))
        sizes.append(batch_bytes(b))
        obs_bytes += sum(b[k].numel() * b[k].element_size() for k in ("x", "y", "score") if k in b)
    copied = _shm.stats()["copied"] - c0
    assert not expected and received() - r0 == len(sizes) == sum(ds.worker_batches(2))
    # Each worker's first batch makes its ring and is copied there; every later batch is
    # gathered into a slot, all but the obs columns, which are copied after the matrix.
    assert copied <= sizes[0] + sizes[1] + obs_bytes < sum(sizes)

    # With loader threads in the workers, every batch is gathered first and copied after.
    threaded = CellDataset(path, seed=8, threads=1, **kw)
    c0 = _shm.stats()["copied"]
    check_epoch(threaded.dataloader(num_workers=2, multiprocessing_context="fork"), in_process(threaded, 2))
    assert _shm.stats()["copied"] - c0 == sum(sizes)


def test_holding_every_batch_falls_back_to_torch_and_stays_correct(synth):
    ds = CellDataset(synth[0], batch_size=8, seed=9, **OBS)
    loader = ds.dataloader(num_workers=2, multiprocessing_context="fork")
    n, ring, held = check_epoch(loader, in_process(ds, 2), hold=True)
    # 28 batches; each worker's 4 slots stay taken, its later batches go through torch.
    assert n == 28 and ring == 2 * ds.ring_slots
    # The held ring batches still hold their data after the workers are gone.
    expected = in_process(ds, 2)
    for b in held:
        assert_same_batch(b, expected[tuple(b["cell"].tolist())])


def test_spawn_start_method(synth):
    import cellarrow

    genes = cellarrow.open(synth[0]).gene_names[:7]
    ds = CellDataset(synth[0], "groups", seed=1, group_size=8, batch_size=3, dense=genes, output="dense", **OBS)
    loader = ds.dataloader(num_workers=2, multiprocessing_context="spawn")
    n, ring, _ = check_epoch(loader, in_process(ds, 2))
    assert ring == n > 0


def test_persistent_workers_free_the_slots_of_an_abandoned_epoch(synth):
    ds = CellDataset(synth[0], batch_size=10, seed=6, **OBS)
    loader = ds.dataloader(num_workers=2, persistent_workers=True, multiprocessing_context="fork")
    for i, b in enumerate(loader):
        if i == 2:
            break
    del b
    ds.set_epoch(1)
    n, ring, _ = check_epoch(loader, in_process(ds, 2))
    # The batches in flight at the break are received (and dropped) when the next epoch starts.
    assert n == 22 and n < ring <= n + 2 * 2
    ds.set_epoch(2)
    n, ring, _ = check_epoch(loader, in_process(ds, 2))
    assert ring == n == 22, "their slots were released"


def test_resume_through_the_ring(synth):
    kw = dict(batch_size=12, seed=5, epoch=1)
    ds = CellDataset(synth[0], **kw)
    head = []
    for i, b in enumerate(ds.dataloader(num_workers=2, multiprocessing_context="fork")):
        head.append(b["cell"].tolist())
        if i == 6:
            break
    ds2 = CellDataset(synth[0], **kw)
    ds2.load_state_dict(ds.state_dict(batches_seen=7))
    r0 = received()
    tail = [b["cell"].tolist() for b in ds2.dataloader(num_workers=2, multiprocessing_context="fork")]
    assert received() - r0 == len(tail) > 0
    assert sorted(sum(head + tail, [])) == list(range(220))


def test_shared_memory_false_leaves_the_transport_to_torch(synth):
    ds = CellDataset(synth[0], batch_size=16, seed=0, shared_memory=False, **OBS)
    n, ring, _ = check_epoch(ds.dataloader(num_workers=2, multiprocessing_context="fork"), in_process(ds, 2))
    assert n == 14 and ring == 0


def test_a_failed_attach_names_the_option(synth, monkeypatch):
    def refuse(ident):
        raise PermissionError(13, "Permission denied", f"/proc/{ident[0]}/fd/{ident[1]}")

    monkeypatch.setattr(_shm, "_Mapping", refuse)
    ds = CellDataset(synth[0], batch_size=16, seed=0)
    with pytest.raises(RuntimeError, match=r"shared_memory=False") as e:
        next(iter(ds.dataloader(num_workers=2, multiprocessing_context="fork")))
    assert "Permission denied" in str(e.value) and "DataLoader worker" in str(e.value)


class Growing(torch.utils.data.IterableDataset):
    """Batches of one array, the fourth 10x and the fifth 50x the first."""

    SIZES = [1000, 1200, 1100, 10_000, 50_000, 9000]

    def __iter__(self):
        for i, n in enumerate(self.SIZES):
            a = np.arange(n, dtype=np.int64) * (i + 1)
            yield _shm.share({"i": i, "a": _shm.Array(a, np.dtype(np.float32))}, 4)


def test_a_larger_batch_starts_a_new_generation_of_the_ring():
    before = _shm.stats()
    # All batches are held, so the smaller generations' slots are still taken when they grow.
    held = list(DataLoader(Growing(), batch_size=None, num_workers=1, multiprocessing_context="fork"))
    after = _shm.stats()
    assert after["received"] - before["received"] == 6, "no batch needed torch's transport"
    assert after["mapped"] - before["mapped"] == 3, "three generations: 1000, 10000 and 50000 values"
    for i, (b, n) in enumerate(zip(held, Growing.SIZES)):
        assert b["i"] == i and b["a"].dtype == torch.float32
        assert torch.equal(b["a"], torch.arange(n, dtype=torch.float32) * (i + 1))


class Empty(torch.utils.data.IterableDataset):
    """A CSR batch of two cells with no non-zero, and an empty float column."""

    def __iter__(self):
        crow = np.zeros(3, np.int32)
        yield _shm.share(
            {
                "X": _shm.CSR((2, 5), _shm.Array(crow, crow.dtype), _shm.Array(np.zeros(0, np.uint16), np.dtype(np.int32)),
                              _shm.Array(np.zeros(0, np.uint16), np.dtype(np.float32))),
                "e": _shm.Array(np.zeros(0), np.dtype(np.float64)),
            },
            4,
        )


@pytest.mark.parametrize("collate_fn, by_ring", [(None, True), (dict, False)])
def test_empty_arrays_keep_their_types(collate_fn, by_ring):
    """Through the ring, and as the worker's own views (a plain dict copy goes through torch)."""
    r0 = received()
    (b,) = list(DataLoader(Empty(), batch_size=None, num_workers=1, collate_fn=collate_fn, multiprocessing_context="fork"))
    assert received() - r0 == (1 if by_ring else 0)
    x = b["X"]
    assert x.layout == torch.sparse_csr and x.shape == (2, 5)
    assert x.col_indices().dtype == torch.int32 and x.values().dtype == torch.float32
    assert b["e"].dtype == torch.float64 and b["e"].shape == (0,)
    assert torch.equal(x.to_dense(), torch.zeros(2, 5))


def double_in_place(batch):
    batch["score"].mul_(2)
    return batch


def double_replaced(batch):
    batch["score"] = batch["score"] * 2
    return batch


def double_in_new_dict(batch):
    return {k: v * 2 if k == "score" else v for k, v in batch.items()}


@pytest.mark.parametrize(
    "collate_fn, by_ring", [(double_in_place, True), (double_replaced, False), (double_in_new_dict, False)]
)
def test_code_in_the_worker_sees_a_dict_and_its_changes_arrive(synth, collate_fn, by_ring):
    """A changed tensor arrives changed: in place through the ring, a replaced one (or a new
    dict) through torch's transport."""
    ds = CellDataset(synth[0], batch_size=16, seed=0, **OBS)
    expected = in_process(ds, 2)
    r0, n = received(), 0
    for b in DataLoader(ds, batch_size=None, num_workers=2, collate_fn=collate_fn, multiprocessing_context="fork"):
        want = dict(expected[tuple(b["cell"].tolist())])
        want["score"] = want["score"] * 2
        assert_same_batch(b, want)
        n += 1
    assert n == 14 and received() - r0 == (n if by_ring else 0)


def ring_maps() -> list:
    with open("/proc/self/maps") as f:
        return [line for line in f if "cellarrow-batches" in line]


@pytest.mark.parametrize("persistent", [False, True])
def test_nothing_is_left_after_the_loader_is_gone(synth, persistent):
    def open_fds():
        out = set()
        for f in os.listdir("/proc/self/fd"):
            try:
                out.add((f, os.readlink(f"/proc/self/fd/{f}")))
            except FileNotFoundError:  # the listing's own descriptor
                pass
        return out

    gc.collect()  # earlier tests' datasets hold torch shared-memory descriptors
    shm_before, fds_before = set(os.listdir("/dev/shm")), open_fds()
    assert not ring_maps()
    ds = CellDataset(synth[0], batch_size=8, seed=2, **OBS)
    loader = ds.dataloader(num_workers=2, persistent_workers=persistent, multiprocessing_context="fork")
    r0 = received()
    for epoch in range(2):
        ds.set_epoch(epoch)
        held = collections.deque(loader, maxlen=3)
        assert ring_maps(), "the segments are mapped while batches are alive"
    assert received() - r0 > 28
    del loader, held, ds
    gc.collect()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (ring_maps() or open_fds() != fds_before):
        time.sleep(0.05)
        gc.collect()
    assert not ring_maps(), "no mapping of a worker's segment is left"
    assert open_fds() == fds_before, "no descriptor is left (segments, pidfds)"
    assert set(os.listdir("/dev/shm")) == shm_before
