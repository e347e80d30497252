"""Hugging Face adapters: a memory-mapped Dataset and a sharded IterableDataset."""

from __future__ import annotations

import collections
import time

import datasets
import numpy as np
import pyarrow as pa
import pytest
from datasets.distributed import split_dataset_by_node
from torch.utils.data import DataLoader

import cellarrow


def test_hf_dataset_maps_the_parts_without_copy(synth, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    corpus = cellarrow.open(synth[0])
    ds = corpus.to_hf_dataset()
    assert ds.num_rows == corpus.n_cells
    # the Arrow data is the corpus's own files, mapped: nothing written to the cache
    assert {f["filename"] for f in ds.cache_files} == {str(p) for p in corpus.part_paths}
    assert not (tmp_path / "hf-cache").exists() or not any((tmp_path / "hf-cache").rglob("*.arrow"))
    m = corpus.matrix
    for i in (0, 39, 40, 131, 219):
        assert ds[i]["indices"] == m.column("indices")[i].as_py()
        assert ds[i]["values"] == m.column("values")[i].as_py()
    with_obs = corpus.to_hf_dataset(obs=["cell_type"])
    assert with_obs[5]["cell_type"] == corpus.obs.column("cell_type")[5].as_py()


def test_hf_dataset_open_time_does_not_read_the_data(chr21):
    corpus = cellarrow.open(chr21[0])
    t0 = time.perf_counter()
    ds = corpus.to_hf_dataset()
    elapsed = time.perf_counter() - t0
    assert ds.num_rows == corpus.n_cells
    print(f"to_hf_dataset: {elapsed * 1e3:.1f} ms for {len(corpus.part_paths)} parts")


@pytest.mark.parametrize("sampler,kw", [("random", dict(batch_size=32)), ("blocks", dict(block_size=4.0))])
def test_hf_iterable_with_two_workers_serves_the_epoch_once(synth, sampler, kw):
    corpus = cellarrow.open(synth[0])
    it = corpus.to_hf_iterable(sampler, seed=2, num_shards=4, **kw)
    assert isinstance(it, datasets.IterableDataset) and it.num_shards == 4
    rows = list(DataLoader(it, batch_size=None, num_workers=2))
    cells = [int(r["cell"]) for r in rows]
    assert sorted(cells) == list(range(220))
    if sampler == "blocks":
        n_groups = corpus.loader("blocks", seed=2, **kw).epoch_len
        assert sorted({int(r["group"]) for r in rows}) == list(range(n_groups))


def test_hf_iterable_split_by_node_is_disjoint_and_complete(synth):
    corpus = cellarrow.open(synth[0])
    t = corpus.where("sample_id = 'sa'")
    parts = []
    for rank in range(2):
        it = split_dataset_by_node(t.to_hf_iterable(seed=0, num_shards=4), rank=rank, world_size=2)
        parts.append([r["cell"] for r in it])
    assert not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == t.cells.tolist()
    # Even when the shards do not divide among the nodes, nothing is lost or repeated.
    odd = [[r["cell"] for r in split_dataset_by_node(t.to_hf_iterable(seed=0, num_shards=3), rank=r, world_size=2)] for r in range(2)]
    assert sorted(odd[0] + odd[1]) == t.cells.tolist()
