"""PyTorch adapter: :class:`CellDataset`, an ``IterableDataset`` of ready-made batches.

Each ``(rank, worker)`` pair is one shard of the sampler's epoch: the rank and world size come
from ``torch.distributed`` (or the ``RANK`` / ``WORLD_SIZE`` environment of ``torchrun``), the
worker and worker count from ``torch.utils.data.get_worker_info()``. Every shard computes only
its own part of the epoch; the shards of one epoch are disjoint and their union is the epoch
(shard sizes follow ``policy``: ``"even"`` differ by at most one item, ``"drop_last"`` and
``"pad"`` are equal).

The dataset yields whole batches, so give the ``DataLoader`` ``batch_size=None``
(:meth:`CellDataset.dataloader` does):

>>> from cellarrow.torch import CellDataset
>>> ds = CellDataset("my.corpus", batch_size=256, seed=0, obs=["cell_type"])   # doctest: +SKIP
>>> loader = ds.dataloader(num_workers=2, persistent_workers=True)             # doctest: +SKIP
>>> for epoch in range(10):                                                    # doctest: +SKIP
...     ds.set_epoch(epoch)
...     for batch in loader:
...         x = batch["X"]          # torch.sparse_csr_tensor, cells x genes
...         ids = batch["cell"]

Epoch and resume state live in a shared-memory tensor, so :meth:`set_epoch` and
:meth:`load_state_dict` reach persistent workers, under both the fork and the spawn start
methods; the dataset pickles as its settings (the corpus is opened in each worker).

On Linux, workers hand their batches to the main process through a shared-memory ring of a few
reused slots per worker (see ``cellarrow._shm``): each worker gathers a batch straight into a
free slot, the batch arrives as views of the slot with no copy on either side, and the slot is
reused once they are gone. ``CellDataset(..., shared_memory=False)`` leaves the transport to
torch.
"""

from __future__ import annotations

import copy
import functools
import os
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from . import _native, _settings, _shm
from ._core import Batch, CheckedCells, Corpus, Loader, PathLike, _view, cohort_cells

__all__ = ["CellDataset", "collate", "consumed_per_worker"]

# Slots of the shared state tensor: the epoch; batches the loop took to resume from (0: from
# the start); workers of the last pass (0: in process); workers the resume state was saved
# with; 1 when the last pass ran in workers whose batches nobody counted.
_EPOCH, _SEEN, _WORKERS, _RESUME_WORKERS, _UNFOLLOWED = range(5)
_SLOTS = 5


def collate(batch: Batch, output: str = "csr") -> Dict[str, Any]:
    """Turns a :class:`cellarrow.Batch` into a dict of tensors.

    - ``"X"``: ``output="csr"``: a ``torch.sparse_csr_tensor`` ``cells x genes`` (int32 gene
      ids; integer values as float32, floating ones as gathered: a :class:`CellDataset`
      gathers float32 unless given ``values=``);
      ``output="dense"``: a dense tensor (the loader's ``dense=`` gene subset as a view with no
      copy, else the CSR batch expanded to all genes).
    - with a ``tokens=`` loader, instead of ``"X"``: ``"tokens"`` (int32 gene ids, or
      vocabulary positions with ``genes=``; -1 in padding), ``"values"`` (float32 for ``"rank"``, int32 bins for ``"bins"``) and
      ``"attention_mask"`` (bool), each ``cells x top_k`` and sharing the gathered buffers.
    - with a ``multi_hot=`` loader: ``"multi_hot"``, the ``cells x terms`` uint8 tensor of
      each cell's term and its ancestors.
    - ``"cell"`` (int64), ``"group"`` (int64, grouped samplers), ``"x"``/``"y"``/``"z"`` and
      numeric obs columns as tensors (unsigned integer columns as int64, which torch computes
      with; a uint64 column with a value above the int64 range stays uint64); string and
      categorical obs columns as lists of str.

    >>> collate(next(iter(corpus.loader(batch_size=4))), "dense")["X"].shape   # doctest: +SKIP
    torch.Size([4, 507])
    """
    return _shm.tensors(_parts(batch, output))


def _parts(batch: Batch, output: str) -> Dict[str, Any]:
    """What :func:`collate` makes, before any copy: each tensor as the batch's array and the
    tensor's type, so a DataLoader worker can convert it straight into shared memory."""
    if output not in ("csr", "dense"):
        raise ValueError(f"unknown output {output!r}; expected 'csr' or 'dense'")
    rb = batch.record_batch
    out: Dict[str, Any] = {"cell": _shm.Array(batch.cells, np.dtype(np.int64))}
    if batch.groups is not None:
        out["group"] = _shm.Array(batch.groups, np.dtype(np.int64))
    if batch.is_tokens:
        for key, a in (("tokens", batch.tokens), ("values", batch.token_values), ("attention_mask", batch.attention_mask)):
            out[key] = _shm.Array(a, a.dtype)
    elif batch.is_dense:
        dense = batch.dense
        out["X"] = _shm.Array(dense, dense.dtype)
    elif output == "dense":
        x = batch.to_torch(dense=True).numpy()
        out["X"] = _shm.Array(x, x.dtype)
    else:
        values = batch.values
        out["X"] = _shm.CSR(
            (batch.num_rows, batch.n_genes),
            _shm.Array(batch.indptr, batch.indptr.dtype),
            _shm.Array(batch.indices, np.dtype(np.int32)),
            _shm.Array(values, values.dtype if values.dtype.kind == "f" else np.dtype(np.float32)),
        )
    if "multi_hot" in rb.schema.names:
        mh = batch.multi_hot
        out["multi_hot"] = _shm.Array(mh, mh.dtype)
    for name in rb.schema.names:
        if name in ("cell", "group", "indices", "values", "dense", "tokens", "token_values", "attention_mask", "multi_hot"):
            continue
        col = rb.column(name)
        t = col.type
        if pa_is_numeric(t) and col.null_count == 0:
            # A view through DLPack: `to_numpy()` would first set up pyarrow's conversion
            # machinery, about 25 MB in every worker. Booleans are bit-packed: no view.
            a = col.to_numpy(zero_copy_only=False) if pa.types.is_boolean(t) else _view(col)
            out[name] = _shm.Array(a, _torch_type(a))
        elif pa.types.is_dictionary(t) and col.null_count == 0:
            out[name] = _labels(col)
        else:
            if pa.types.is_dictionary(t):
                col = col.dictionary_decode()
            out[name] = col.to_pylist()
    return out


def _torch_type(a: np.ndarray) -> np.dtype:
    """The tensor type of a numeric column: unsigned integers wider than a byte become int64
    (most torch operations refuse uint16/32/64), unless a uint64 value does not fit."""
    if a.dtype.kind == "u" and a.dtype.itemsize > 1:
        if a.dtype.itemsize < 8 or a.size == 0 or a.max() <= np.iinfo(np.int64).max:
            return np.dtype(np.int64)
    return a.dtype


def _labels(col) -> List[Any]:
    """The values of a dictionary array without nulls, looked up by code: decoding it would
    go through pyarrow's compute kernels, which cost every worker memory to set up. A
    dictionary much larger than the batch (a categorical of barcodes, say) is not converted
    whole for each batch.

    >>> import pyarrow as pa
    >>> _labels(pa.array(["T", "B", "T"]).dictionary_encode())
    ['T', 'B', 'T']
    """
    codes = _view(col.indices).tolist()
    d = col.dictionary
    if len(d) <= 4 * len(codes):
        labels = d.to_pylist()
        return [labels[k] for k in codes]
    return [d[k].as_py() for k in codes]


def pa_is_numeric(t) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)


def consumed_per_worker(counts: Sequence[int], seen: int) -> List[int]:
    """Batches each ``DataLoader`` worker had produced when the loop had consumed ``seen``
    batches: the ``DataLoader`` takes batches from its workers in turn (worker 0, 1, ...),
    skipping workers whose shard is exhausted.

    >>> consumed_per_worker([3, 2], 4)
    [2, 2]
    >>> consumed_per_worker([3, 1], 4)
    [3, 1]
    """
    c = [0] * len(counts)
    remaining = int(seen)
    while remaining > 0:
        active = [w for w in range(len(counts)) if c[w] < counts[w]]
        if not active:
            raise ValueError(f"{seen} batches seen, but the workers only have {sum(counts)}")
        full = min(min(counts[w] - c[w] for w in active), remaining // len(active))
        if full > 0:
            for w in active:
                c[w] += full
            remaining -= full * len(active)
            continue
        for w in active:
            if remaining == 0:
                break
            c[w] += 1
            remaining -= 1
    return c


def _distributed() -> tuple:
    """(rank, world size) from torch.distributed, else RANK / WORLD_SIZE, else (0, 1)."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except Exception:  # pragma: no cover - a broken distributed setup falls back to the env
        pass
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class CellDataset(IterableDataset):
    """An ``IterableDataset`` of batches (dicts of tensors, see :func:`collate`) over one
    sampler of a corpus or cohort.

    Args:
        corpus: a corpus directory or :class:`cellarrow.Corpus`.
        sampler: ``"random"``, ``"shuffle"``, ``"groups"``, ``"regions"`` or ``"blocks"``.
        cohort: a :class:`cellarrow.Cohort` (or cell ids) to draw from; default every cell.
        output: ``"csr"`` (sparse CSR tensors) or ``"dense"``; with ``dense=[genes]`` the
            dense tensor is a view of the gathered buffer.
        rank, world_size: override ``torch.distributed`` / the environment.
        threads, prefetch: Rust threads that gather batches ahead, and how many batches ahead.
            By default 1 thread without ``DataLoader`` workers, and none in workers with the
            shared-memory ring: each worker gathers its batch straight into a slot of the
            ring (worker processes are the parallelism there). Threads in workers gather
            into their own memory, and each batch is copied into the ring.
        shared_memory: ``DataLoader`` workers pass batches through a shared-memory ring (Linux,
            the default there); ``False`` leaves it to torch's own transport.
        **options: the :class:`cellarrow.Loader` settings (``batch_size``, ``seed``, ``epoch``,
            ``policy``, ``drop_last``, ``group_size``, ``label``, ``block_size``, ``obs``,
            ``coords``, ``dense``, ``values`` (default ``"f32"`` here), ``tokens``, ``top_k``,
            ``n_bins``, ``gene_medians``, ``genes`` (a model vocabulary: CSR gene ids or
            token ids become positions in it), ``balance``, ``ontology``, ``level``,
            ``multi_hot`` ...), checked here: an
            unknown one is a ``TypeError``, a zero or negative size a ``ValueError``.

    Length: :meth:`dataloader` gives a ``DataLoader`` whose ``len()`` is exactly the number of
    batches it delivers, with any ``num_workers``. ``len(dataset)`` is the number of batches
    served in one process (``num_workers`` 0 or 1); with more workers each has its own last,
    partial batch, so a plain ``DataLoader(dataset, num_workers=N)`` may deliver more.

    Resume: ``state = ds.state_dict()`` records the epoch and how many batches this rank's
    loop took from the data loader; ``ds.load_state_dict(state)`` makes the next iteration
    serve exactly the rest of that epoch (with the same ``num_workers``, world size and
    settings). The dataset counts the batches itself when it is iterated in this process or
    through :meth:`dataloader`; after an iteration in the workers of another ``DataLoader``
    it cannot, and ``state_dict()`` raises unless given ``batches_seen``.

    Epochs: each iteration serves the current epoch from its start, unless a resume is
    pending (the first iteration after :meth:`load_state_dict`); :meth:`set_epoch` moves on.
    """

    def __init__(
        self,
        corpus: Union[PathLike, Corpus],
        sampler: str = "random",
        *,
        cohort: Any = None,
        output: str = "csr",
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
        threads: Optional[int] = None,
        prefetch: Optional[int] = None,
        shared_memory: bool = _shm.SUPPORTED,
        **options: Any,
    ):
        super().__init__()
        corpus = corpus if isinstance(corpus, Corpus) else Corpus(corpus)
        self.path = corpus.location
        self.sampler = sampler
        for key in ("worker", "num_workers"):
            if key in options:
                raise TypeError(f"{key} comes from torch.utils.data.get_worker_info(), not an argument")
        valid = _settings.native_keywords() - {"sampler", "worker", "num_workers", "rank", "world_size", "threads", "prefetch", "position"}
        _settings.check_keywords(options, valid, "CellDataset()")
        _settings.check_values({"rank": rank, "world_size": world_size, "threads": threads, "prefetch": prefetch, **options}, sampler)
        cells = cohort_cells(cohort, corpus.n_cells)
        self.cells = None if cells is None else cells.to_numpy(zero_copy_only=False)
        if output not in ("csr", "dense"):
            raise ValueError(f"unknown output {output!r}; expected 'csr' or 'dense'")
        self.output = output
        self._rank = rank
        self._world_size = world_size
        self.threads = threads
        self.prefetch = prefetch
        if shared_memory and not _shm.SUPPORTED:
            raise ValueError("shared_memory=True needs Linux (memfd_create); pass shared_memory=False")
        self.shared_memory = bool(shared_memory)
        # Batches of one worker alive at once: the DataLoader's prefetch_factor (2) in flight,
        # the one the loop holds and the one being received.
        self.ring_slots = 4
        # torch computes in floats: the Rust threads convert while gathering, so the tensors
        # share the gathered buffer instead of being converted again.
        for name, value in _native.Loader.front_end_defaults("torch").items():
            options.setdefault(name, value)
        epoch = int(options.pop("epoch", 0))
        self.options = options
        # Shared with workers, forked or spawned (see the slots above).
        self._state = torch.zeros(_SLOTS, dtype=torch.int64).share_memory_()
        self._state[_EPOCH] = epoch
        # This process only: batches of the current epoch the loop took (see state_dict).
        self._progress = _Progress()
        # Set in the workers of a DataLoader made by dataloader(), which counts their batches.
        self._followed = False
        self._corpus: Optional[Corpus] = corpus
        # Every setting is checked now, not in a worker at the first batch.
        self._loader(0, 1, threads=0)

    # -- pickling: settings only -------------------------------------------------------------
    def __getstate__(self):
        d = dict(self.__dict__)
        d["_corpus"] = None
        return d

    @property
    def corpus(self) -> Corpus:
        if self._corpus is None:
            self._corpus = Corpus(self.path)
        return self._corpus

    # -- shard -------------------------------------------------------------------------------
    @property
    def rank(self) -> int:
        return self._rank if self._rank is not None else _distributed()[0]

    @property
    def world_size(self) -> int:
        return self._world_size if self._world_size is not None else _distributed()[1]

    @property
    def epoch(self) -> int:
        return int(self._state[_EPOCH])

    def set_epoch(self, epoch: int) -> None:
        """Serves ``epoch`` from its start on the next iteration (also in persistent workers);
        a resume that :meth:`load_state_dict` set up for this same epoch is kept."""
        _settings.check_values({"epoch": epoch})
        if int(epoch) != self.epoch:
            self._state[_SEEN] = 0
        self._state[_EPOCH] = int(epoch)
        self._progress.seen = int(self._state[_SEEN])

    def _loader(self, worker: int, num_workers: int, position: int = 0, threads: Optional[int] = 1) -> Loader:
        kw = dict(self.options)
        if threads is not None:
            kw["threads"] = threads
        if self.prefetch is not None:
            kw["prefetch"] = self.prefetch
        return Loader(
            self.corpus,
            self.sampler,
            cohort=None if self.cells is None else CheckedCells(self.cells),
            epoch=self.epoch,
            position=position,
            rank=self.rank,
            world_size=self.world_size,
            worker=worker,
            num_workers=num_workers,
            **kw,
        )

    def worker_batches(self, num_workers: int) -> List[int]:
        """Batches of each DataLoader worker of this rank for the whole current epoch (with
        ``num_workers`` 0 the one process serves them all)."""
        num_workers = max(int(num_workers), 1)
        return [len(self._loader(w, num_workers, threads=0)) for w in range(num_workers)]

    def _len(self, num_workers: int) -> int:
        """Batches the next iteration under ``num_workers`` workers delivers."""
        return sum(self.worker_batches(num_workers)) - int(self._state[_SEEN])

    def __len__(self) -> int:
        """Batches of this rank the next iteration serves in one process (``num_workers`` 0
        or 1); :meth:`dataloader` gives a ``DataLoader`` whose ``len()`` holds for its workers."""
        return self._len(1)

    # -- iteration ---------------------------------------------------------------------------
    def __iter__(self):
        info = get_worker_info()
        worker, num_workers = (0, 1) if info is None else (info.id, info.num_workers)
        in_main = info is None
        seen = int(self._state[_SEEN])
        if in_main:
            self._state[_WORKERS] = 0
            self._state[_UNFOLLOWED] = 0
            # The resume is taken by this pass; the next one starts the epoch afresh.
            self._state[_SEEN] = 0
            self._progress.seen = seen
        else:
            self._state[_WORKERS] = num_workers
            if not self._followed:
                self._state[_UNFOLLOWED] = 1
        start = 0
        if seen:
            _check_resume_workers(int(self._state[_RESUME_WORKERS]), 0 if in_main else num_workers)
            counts = self.worker_batches(num_workers)
            start = consumed_per_worker(counts, seen)[worker]
        ring = self.shared_memory and not in_main
        threads = self.threads if self.threads is not None else (0 if ring else 1)
        loader = self._loader(worker, num_workers, threads=threads)
        per = loader._current().items_per_batch
        loader.load_state_dict({"epoch": self.epoch, "position": start * per})
        into_slots = ring and threads == 0
        for batch, slot, used in loader._batches(_shm.free_slot if into_slots else None):
            parts = _parts(batch, self.output)
            if in_main:
                self._progress.seen += 1
                yield _shm.tensors(parts)
            elif ring:
                yield _shm.share(parts, self.ring_slots, slot, used)
            else:
                yield _shm.portable(_shm.tensors(parts))

    # -- state -------------------------------------------------------------------------------
    def state_dict(self, batches_seen: Optional[int] = None) -> Dict[str, int]:
        """The resumable state: epoch, batches this rank's loop took in it, workers.

        The dataset counts the batches when it is iterated in this process or through a
        :meth:`dataloader`. ``batches_seen``: the count, for a loop over another
        ``DataLoader`` with workers (without it, the call then raises: the dataset cannot
        know how far that loop got).
        """
        if batches_seen is None:
            if int(self._state[_UNFOLLOWED]):
                raise RuntimeError(
                    "the last pass over this dataset ran in the workers of a DataLoader it cannot follow: "
                    "iterate ds.dataloader(...) (which counts the batches it hands out), or pass "
                    "state_dict(batches_seen=N) with the batches your loop took this epoch"
                )
            seen = self._progress.seen
        else:
            seen = int(batches_seen)
        return {
            "epoch": self.epoch,
            "batches_seen": seen,
            "num_workers": int(self._state[_WORKERS]),
            "rank": self.rank,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: Dict[str, int]) -> None:
        """Resumes from :meth:`state_dict`: the next iteration serves the rest of the epoch.
        It must run with the ``num_workers`` the state was saved with (0 and 1 are alike)."""
        if int(state.get("world_size", self.world_size)) != self.world_size:
            raise ValueError(
                f"the state was saved with world_size {state['world_size']}, this job has {self.world_size}"
            )
        _settings.check_values({"epoch": state["epoch"]})
        if int(state["batches_seen"]) < 0:
            raise ValueError(f"batches_seen must not be negative, got {state['batches_seen']!r}")
        self._state[_EPOCH] = int(state["epoch"])
        self._state[_SEEN] = int(state["batches_seen"])
        self._state[_RESUME_WORKERS] = int(state.get("num_workers", 0))
        self._progress.seen = int(state["batches_seen"])

    def dataloader(self, **kwargs: Any) -> DataLoader:
        """A ``torch.utils.data.DataLoader`` over this dataset (``batch_size=None``: the
        dataset yields whole batches) whose ``len()`` is exactly the batches it delivers with
        its ``num_workers``, and which counts the batches it hands out, so that
        :meth:`state_dict` needs no ``batches_seen``. The dataset itself is not changed."""
        return _FollowedLoader(self, **kwargs)


class _Progress:
    """Batches of the current epoch the loop took, counted in the process that runs it."""

    __slots__ = ("seen",)

    def __init__(self) -> None:
        self.seen = 0


def _check_resume_workers(saved: int, now: int) -> None:
    """Raises when a resume state saved under ``saved`` workers is used under ``now``: the
    batches a loop took under one worker count are not a prefix of the order of another."""
    if max(saved, 1) != max(now, 1):
        raise ValueError(
            f"the resume state was saved with num_workers={saved}, this DataLoader has num_workers={now}: "
            "resume with the same number of workers"
        )


def _follow_worker(init: Optional[Any], worker_id: int) -> None:
    """``worker_init_fn`` of :meth:`CellDataset.dataloader`: marks the worker's dataset as one
    whose batches the main process counts, then runs the caller's ``worker_init_fn``."""
    info = get_worker_info()
    if info is not None and isinstance(info.dataset, CellDataset):
        info.dataset._followed = True
    if init is not None:
        init(worker_id)


class _FollowedLoader(DataLoader):
    """The ``DataLoader`` of :meth:`CellDataset.dataloader`: an exact ``len()`` for its worker
    count, and a count of the batches it hands out in the dataset's progress."""

    def __init__(self, dataset: CellDataset, **kwargs: Any):
        kwargs.setdefault("batch_size", None)
        workers = int(kwargs.get("num_workers") or 0)
        ds = copy.copy(dataset)  # shares the state tensor and the progress, not the ring size
        if workers:
            ds.ring_slots = (kwargs.get("prefetch_factor") or 2) + 2
            kwargs["worker_init_fn"] = functools.partial(_follow_worker, kwargs.get("worker_init_fn"))
        self._owner = dataset
        self._workers = workers
        super().__init__(ds, **kwargs)

    def __len__(self) -> int:
        n = self._owner._len(self._workers)
        self._IterableDataset_len_called = n  # what torch checks the delivered count against
        return n

    def __iter__(self):
        state = self._owner._state
        if not self._workers:
            yield from super().__iter__()  # the dataset counts in this process
            return
        seen = int(state[_SEEN])
        if seen:
            _check_resume_workers(int(state[_RESUME_WORKERS]), self._workers)
        progress = self._owner._progress
        progress.seen = seen
        state[_WORKERS] = self._workers
        state[_UNFOLLOWED] = 0
        try:
            for batch in super().__iter__():
                progress.seen += 1
                yield batch
        finally:
            # The resume belonged to this pass: the next one starts the epoch afresh.
            state[_SEEN] = 0
