"""Hugging Face ``datasets`` adapters.

- :func:`to_hf_dataset`: a map-style ``datasets.Dataset`` over the corpus matrix. The parts
  are Arrow IPC streams, which ``Dataset.from_file`` memory-maps: nothing is copied into the
  HF cache and no data is hashed, so opening costs the same at any corpus size.
- :func:`to_hf_iterable`: a ``datasets.IterableDataset`` over any sampler, split into
  ``num_shards`` disjoint shards of the epoch: ``DataLoader(num_workers=N)`` hands each worker
  whole shards and ``datasets.distributed.split_dataset_by_node`` each node whole shards (when
  ``num_shards`` divides by the world size; otherwise it keeps every ``world_size``-th example,
  which is still disjoint and complete).

>>> ds = corpus.to_hf_dataset()                                 # doctest: +SKIP
>>> ds[0]["indices"], ds[0]["values"]                           # doctest: +SKIP
>>> it = corpus.to_hf_iterable("random", seed=0, num_shards=8)   # doctest: +SKIP
>>> next(iter(it))                                               # doctest: +SKIP
{'cell': 123, 'indices': [...], 'values': [...]}
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np
import pyarrow as pa

from . import _native
from ._core import CheckedCells, Corpus, Loader, cohort_cells

__all__ = ["to_hf_dataset", "to_hf_iterable"]

DEFAULT_SHARDS = 64


def to_hf_dataset(corpus: Any, obs: Optional[Sequence[str]] = None):
    """A ``datasets.Dataset`` with one row per cell (in cell id order): ``cell`` (its id, as
    the rows of :func:`to_hf_iterable` carry it), ``indices`` and ``values`` (the cell's
    non-zeros), memory-mapped from the matrix parts.

    ``obs``: obs columns to add; these are read into memory (O(cells)), unlike the matrix, and
    so is the ``cell`` column (8 bytes a cell).

    >>> ds = cellarrow.open("my.corpus").to_hf_dataset()   # doctest: +SKIP
    >>> ds.num_rows == corpus.n_cells                       # doctest: +SKIP
    True
    """
    import datasets
    import numpy as np

    if not isinstance(corpus, Corpus):
        corpus = Corpus(corpus)
    parts = [datasets.Dataset.from_file(os.fspath(p)) for p in corpus.part_paths]
    if any(p.features != parts[0].features for p in parts[1:]):
        # Parts of a grown corpus may store narrower types than the manifest's (to which all
        # widen): those parts are cast (into the datasets cache), the others stay mapped.
        target = _matrix_features(corpus.manifest)
        parts = [p if p.features == target else p.cast(target) for p in parts]
    ds = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    matrix = list(ds.column_names)
    ds = ds.add_column("cell", np.arange(corpus.n_cells, dtype=np.uint64), feature=datasets.Value("uint64"))
    for name in obs or ():
        col = corpus.table("obs", [name]).column(0).combine_chunks()
        if str(col.type).startswith("dictionary"):
            col = col.dictionary_decode()
        ds = ds.add_column(name, col.to_pylist())
    return ds.select_columns(["cell", *matrix, *(obs or ())])


def _matrix_features(manifest):
    """The ``datasets.Features`` of the matrix in the manifest's index and value types."""
    import datasets

    def items(name):
        return pa.list_(pa.field("item", pa.from_numpy_dtype(np.dtype(name)), nullable=False))

    schema = pa.schema(
        [
            pa.field("indices", items(manifest["index_type"]), nullable=False),
            pa.field("values", items(manifest["value_type"]), nullable=False),
        ]
    )
    return datasets.Features.from_arrow_schema(schema)


def _features(schema):
    """The ``datasets.Features`` of the rows of batches of ``schema``: categorical columns
    arrive as their values (``to_pylist`` decodes them)."""
    import datasets
    import pyarrow as pa

    def plain(t):
        if pa.types.is_dictionary(t):
            return plain(t.value_type)
        if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
            return pa.list_(plain(t.value_type))
        return t

    return datasets.Features.from_arrow_schema(pa.schema([pa.field(f.name, plain(f.type)) for f in schema]))


def _generate(shards: List[int], spec: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
    corpus = Corpus(spec["path"])
    for shard in shards:
        loader = Loader(
            corpus,
            spec["sampler"],
            cohort=None if spec["cells"] is None else CheckedCells(spec["cells"]),
            rank=shard,
            world_size=spec["num_shards"],
            epoch=spec["epoch"],
            **spec["options"],
        )
        for batch in loader:
            yield from batch.record_batch.to_pylist()


def to_hf_iterable(
    corpus: Any,
    sampler: str = "random",
    *,
    cohort: Any = None,
    num_shards: int = DEFAULT_SHARDS,
    epoch: int = 0,
    **options: Any,
):
    """A ``datasets.IterableDataset`` of cells (one example per cell: ``cell``, ``group`` for
    grouped samplers, ``indices``, ``values`` or ``dense``, and the requested obs columns) in
    the order of ``sampler`` for ``epoch``.

    The epoch is cut into ``num_shards`` disjoint shards (pick a multiple of
    ``world_size * num_workers``); each ``DataLoader`` worker and each node iterates whole
    shards, so the union over all of them is the epoch, each item once.

    ``options`` are the :class:`cellarrow.Loader` options (``seed``, ``batch_size`` ...;
    ``threads`` defaults to 1 here).

    >>> from datasets.distributed import split_dataset_by_node
    >>> it = to_hf_iterable(corpus, "groups", group_size=16, seed=1, num_shards=8)   # doctest: +SKIP
    >>> mine = split_dataset_by_node(it, rank=0, world_size=2)                      # doctest: +SKIP
    """
    import datasets

    if not isinstance(corpus, Corpus):
        corpus = Corpus(corpus)
    for key in ("rank", "world_size", "worker", "num_workers"):
        if key in options:
            raise TypeError(f"{key}: the iterable dataset is split by datasets (num_shards), not by {key}")
    if int(num_shards) <= 0:
        raise ValueError(f"num_shards must be positive (an integer > 0), got {num_shards!r}")
    cells = cohort_cells(cohort, corpus.n_cells)
    for name, value in _native.Loader.front_end_defaults("hf").items():
        options.setdefault(name, value)
    spec = {
        "path": corpus.location,
        "sampler": sampler,
        "cells": None if cells is None else cells.to_numpy(zero_copy_only=False),
        "num_shards": int(num_shards),
        "epoch": int(epoch),
        "options": dict(options),
    }
    # Fail here, not in a worker, on bad settings.
    probe = Loader(corpus, sampler, cohort=cells, rank=0, world_size=int(num_shards), epoch=int(epoch), **{**options, "threads": 0})
    return datasets.IterableDataset.from_generator(
        _generate, features=_features(probe.schema), gen_kwargs={"shards": list(range(int(num_shards))), "spec": spec}
    )
