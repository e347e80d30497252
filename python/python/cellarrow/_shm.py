"""Batches from ``DataLoader`` worker processes through a persistent shared-memory ring.

torch sends every tensor a worker yields through a fresh shared-memory segment and passes its
file descriptor over a socket; per batch that costs milliseconds of page faults and messages.
Here each worker process owns one anonymous memory file (``memfd``) cut into a few slots,
created once and reused for every batch:

- the worker's loader gathers a batch straight into a free slot (:func:`free_slot`), or the
  worker converts the batch's arrays (described by :class:`Array` and :class:`CSR`: a source
  and the tensor type) into one; either way it yields a :class:`SharedBatch`, a dict that
  pickles as a small descriptor (segment, slot, dtype/shape/offset of each array, and the
  values that travel by value, such as lists of strings);
- unpickling in the consumer opens ``/proc/<worker pid>/fd/<fd>`` once per segment, maps it and
  rebuilds the dict of tensors as views of the slot. The views hold a lease on the slot; when
  the last one is gone the lease clears the slot's flag byte and the worker may reuse it;
- the worker never waits: with no free slot it yields the batch as a plain dict and torch's own
  transport carries it. A batch larger than a slot starts a larger segment (a new generation);
  the old one is closed once all its slots are free.

Nothing has a name in a file system, so nothing can be left behind: the memory goes away with
the worker's descriptor and the consumer's last mapping. The consumer keeps the newest segment
of each worker mapped until that worker exits (a thread waits on a pidfd) and its last view
dies.

Segment layout: one flag byte per slot (0 free, 1 in use) in the first page, then the slots,
each a multiple of the page size.
"""

from __future__ import annotations

import copy
import ctypes
import math
import mmap
import os
import select
import sys
import threading
import warnings
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import numpy as np
import torch

SUPPORTED = sys.platform.startswith("linux") and hasattr(os, "memfd_create")

_PAGE = mmap.PAGESIZE
_ALIGN = 64
_HEADER = _PAGE
# A slot is sized from the first batch with this much room for larger ones.
_HEADROOM = 1.5

# (offset in the slot, numpy type string, shape)
ArraySpec = Tuple[int, str, Tuple[int, ...]]
# A worker's segment: (pid, fd, inode, bytes, generation)
Ident = Tuple[int, int, int, int, int]

_counts = {"shared": 0, "received": 0, "mapped": 0, "copied": 0}


def stats() -> Dict[str, int]:
    """Counters of this process: ``shared`` batches written to its ring (in a worker),
    ``received`` batches rebuilt from a worker's ring, ``mapped`` segments mapped and
    ``copied`` bytes of the received batches that their worker copied into the slot rather
    than gathered there (in the consumer)."""
    return dict(_counts)


# -- what a batch is made of ------------------------------------------------------------------


class Array(NamedTuple):
    """A tensor to make: ``source`` as ``dtype`` (a view when the types agree)."""

    source: np.ndarray
    dtype: np.dtype


class CSR(NamedTuple):
    """A sparse CSR tensor to make from three :class:`Array`."""

    shape: Tuple[int, int]
    crow: Array
    col: Array
    values: Array


def tensors(parts: Dict[str, Any]) -> Dict[str, Any]:
    """``parts`` (values :class:`Array`, :class:`CSR` or anything else, kept as it is) as
    tensors in this process, sharing the sources' memory where the types agree."""

    def tensor(a: Array) -> torch.Tensor:
        src = a.source
        return torch.from_numpy(src if src.dtype == a.dtype else src.astype(a.dtype))

    out: Dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # read-only sources: torch must not write
        for key, part in parts.items():
            if isinstance(part, CSR):
                part = _csr(part.shape, tensor(part.crow), tensor(part.col), tensor(part.values))
            elif isinstance(part, Array):
                part = tensor(part)
            out[key] = part
    return out


class PortableBatch(dict):
    """A batch dict that crosses to another process through torch's own transport with its
    sparse CSR tensors taken apart: the receiver rebuilds them with ``check_invariants=False``
    (the library made them canonical), where torch's own rebuild would warn on every process
    that "sparse invariant checks are implicitly disabled". Unpickled, it is a plain dict."""

    def __copy__(self) -> "PortableBatch":
        # torch's default_convert copies mappings; copy's default would go through __reduce__.
        return PortableBatch(self)

    def __reduce__(self):
        items = []
        for key, value in self.items():
            if isinstance(value, torch.Tensor) and value.layout == torch.sparse_csr:
                value = _SparseParts(tuple(value.shape), value.crow_indices(), value.col_indices(), value.values())
            items.append((key, value))
        return (_rebuild_portable, (items,))


class _SparseParts(NamedTuple):
    shape: Tuple[int, int]
    crow: torch.Tensor
    col: torch.Tensor
    values: torch.Tensor


def _rebuild_portable(items) -> Dict[str, Any]:
    return {key: _csr(v.shape, v.crow, v.col, v.values) if isinstance(v, _SparseParts) else v for key, v in items}


def portable(batch: Dict[str, Any]) -> "PortableBatch":
    """``batch`` as a :class:`PortableBatch`, for torch's transport."""
    return PortableBatch(batch)


_csr_warned = False


def _csr(shape: Tuple[int, int], crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    global _csr_warned
    if _csr_warned:
        return torch.sparse_csr_tensor(crow, col, values, size=shape, check_invariants=False)
    # torch warns "sparse CSR support is in beta" on the first CSR tensor of a process only;
    # catching warnings on every call would cost more than making the tensor.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        out = torch.sparse_csr_tensor(crow, col, values, size=shape, check_invariants=False)
    _csr_warned = True
    return out


# -- worker side ------------------------------------------------------------------------------


class _Ring:
    """A segment of this worker process: ``slots`` slots of ``slot_size`` bytes. A larger one
    replaces it when a batch does not fit; ``generation`` counts them."""

    def __init__(self, slots: int, slot_size: int, generation: int):
        size = _HEADER + slots * slot_size
        fd = os.memfd_create("cellarrow-batches", os.MFD_CLOEXEC)
        try:
            # Reserving the pages now turns a full memory limit into an error here rather than
            # a SIGBUS on some later write.
            os.posix_fallocate(fd, 0, size)
            self.mm = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            raise
        self.fd, self.slots, self.slot_size = fd, slots, slot_size
        self.pid = os.getpid()
        self.ident = (self.pid, fd, os.fstat(fd).st_ino, size, generation)
        self.addr = ctypes.addressof(ctypes.c_char.from_buffer(self.mm))
        self.flags = np.asarray(_View(self.mm, self.addr, "|u1", (slots,)))
        self.next = 0

    def all_free(self) -> bool:
        return not self.flags.any()

    def take(self) -> Optional[int]:
        for k in range(self.slots):
            i = (self.next + k) % self.slots
            if self.flags[i] == 0:
                self.flags[i] = 1
                self.next = i + 1
                return i
        return None

    def free(self, slot: int) -> None:
        self.flags[slot] = 0

    def slot(self, claim: "_Claim") -> np.ndarray:
        """``claim``'s slot as a uint8 array, which keeps it taken while it (or a view) lives."""
        return np.asarray(_View(claim, self.addr + _HEADER + claim.slot * self.slot_size, "|u1", (self.slot_size,)))

    def close(self) -> None:
        # Only the descriptor: the mapping goes with this object, once no view of a slot is left.
        os.close(self.fd)


_ring: Optional[_Ring] = None
# Replaced rings whose slots are not all free yet: their descriptors may still be on the way.
_retired: List[_Ring] = []
_ring_failed = False


def _own_ring() -> Optional[_Ring]:
    """This process's current ring, if it has made one (not one inherited through fork)."""
    global _ring
    if _ring is not None and _ring.pid != os.getpid():  # inherited through fork: the parent's
        for r in _retired + [_ring]:
            r.close()
        _ring, _retired[:] = None, []
    for r in [r for r in _retired if r.all_free()]:
        r.close()
        _retired.remove(r)
    return _ring


def _worker_ring(slots: int, need: int) -> Optional[_Ring]:
    """This process's ring with at least ``slots`` slots of ``need`` bytes (a new generation
    when the current one is smaller); None when it cannot be created."""
    global _ring, _ring_failed
    ring = _own_ring()
    if ring is not None and need <= ring.slot_size and slots <= ring.slots:
        return ring
    if _ring_failed:
        return None
    size = max(need, ring.slot_size if ring is not None else 0)
    slot_size = max(1, -(-int(size * _HEADROOM) // _PAGE)) * _PAGE
    slots = max(slots, ring.slots if ring is not None else 0)
    try:
        new = _Ring(slots, slot_size, 0 if ring is None else ring.ident[4] + 1)
    except OSError as e:
        _ring_failed = True
        warnings.warn(
            f"cellarrow: no shared-memory batch ring in DataLoader worker {os.getpid()} "
            f"({slots} x {slot_size} bytes: {e}); its batches go through torch's own transport",
            RuntimeWarning,
        )
        return None
    if ring is not None:
        if ring.all_free():
            ring.close()
        else:
            _retired.append(ring)
    _ring = new
    return new


class _Claim:
    """A slot written in this worker. Its arrays in this process hold it; when they are gone
    it is free again, unless its descriptor was sent: then the receiver's lease frees it."""

    __slots__ = ("ring", "slot", "sent")

    def __init__(self, ring: _Ring, slot: int):
        self.ring, self.slot, self.sent = ring, slot, False

    def __del__(self):
        try:
            if not self.sent and self.ring.pid == os.getpid():
                self.ring.free(self.slot)
        except (AttributeError, TypeError):  # module globals already gone at interpreter exit
            pass


class SharedBatch(dict):
    """A batch dict whose tensors are views of a slot of this worker's ring. To code in the
    worker it is a plain dict; pickled, it becomes the slot's descriptor, and unpickling
    rebuilds the dict over the slot. With other tensors put under its keys it pickles as a
    plain dict (through torch's transport)."""

    __slots__ = ("_claim", "_layout", "_copied")

    def __copy__(self) -> "SharedBatch":
        # torch's default_convert copies mappings: the copy shares the slot.
        c = SharedBatch(self)
        c._claim, c._layout, c._copied = self._claim, self._layout, self._copied
        return c

    def __deepcopy__(self, memo) -> dict:
        return copy.deepcopy(dict(self), memo)

    def __reduce__(self):
        claim = self._claim
        if claim.sent or not self._unchanged():
            return PortableBatch(self).__reduce__()
        claim.sent = True
        entries = tuple((key, ("v", self[key]) if spec is None else spec) for key, spec, _ in self._layout)
        return (_rebuild, (claim.ring.ident, claim.slot, claim.ring.slot_size, entries, self._copied))

    def _unchanged(self) -> bool:
        if len(self) != len(self._layout):
            return False
        for key, spec, tensor in self._layout:
            if key not in self or (spec is not None and dict.__getitem__(self, key) is not tensor):
                return False
        return True


def free_slot() -> Optional[np.ndarray]:
    """In a worker: a free slot of this process's ring, taken, as a writable uint8 array over
    the whole slot that keeps it taken while the array (or a batch gathered into it) lives;
    None before the first batch made the ring, or with every slot taken. Give it to
    :func:`share` with the batch gathered into it."""
    ring = _own_ring()
    slot = None if ring is None else ring.take()
    if slot is None:
        return None
    return ring.slot(_Claim(ring, slot))


def _same_bits(a: np.dtype, b: np.dtype) -> bool:
    """Whether an array of type ``a`` serves as one of type ``b`` as it is (ids stored as
    uint64 are the same bits as int64 ones)."""
    return a == b or (a.kind in "iu" and b.kind in "iu" and a.itemsize == b.itemsize)


def _place(parts: Dict[str, Any], used: Optional[Tuple[int, int]] = None):
    """Where each array of ``parts`` goes in a slot: (layout, [(spec, source)] to copy, bytes,
    [spec] of every array). A layout entry is (key, spec), spec None for a part that travels
    by value. ``used``: (address, bytes) of the start of the slot that already holds arrays
    gathered there; those of ``parts`` stay where they are, the others go after them."""
    copies: List[Tuple[ArraySpec, np.ndarray]] = []
    specs: List[ArraySpec] = []
    end = 0 if used is None else -(-used[1] // _ALIGN) * _ALIGN

    def place(a: Array) -> ArraySpec:
        nonlocal end
        src, dtype = a.source, np.dtype(a.dtype)
        if used is not None and src.size and src.flags.c_contiguous and _same_bits(src.dtype, dtype):
            at = src.__array_interface__["data"][0] - used[0]
            if 0 <= at and at + src.nbytes <= used[1]:
                specs.append((at, dtype.str, tuple(src.shape)))
                return specs[-1]
        spec = (end, dtype.str, tuple(src.shape))
        copies.append((spec, src))
        specs.append(spec)
        end += -(-src.size * dtype.itemsize // _ALIGN) * _ALIGN
        return spec

    layout = []
    for key, part in parts.items():
        if isinstance(part, CSR):
            spec = ("csr", tuple(part.shape), place(part.crow), place(part.col), place(part.values))
        elif isinstance(part, Array):
            spec = ("t", place(part))
        else:
            spec = None
        layout.append((key, spec))
    return layout, copies, end, specs


def share(parts: Dict[str, Any], slots: int, gathered: Optional[np.ndarray] = None, used: int = 0) -> Dict[str, Any]:
    """In a worker: the batch ``parts`` describe (see :func:`tensors`) in a slot of this
    process's ring, as a :class:`SharedBatch`; made in process memory (:func:`tensors`) when
    no slot is free.

    ``gathered``: the :func:`free_slot` the batch was gathered into, of which it took the first
    ``used`` bytes. Its arrays there are used as they are and the others are copied after them;
    when they do not fit, the batch is converted into another slot."""
    if gathered is not None:
        claim = gathered.base.owner
        layout, copies, need, specs = _place(parts, (gathered.__array_interface__["data"][0], used))
        if need <= claim.ring.slot_size:
            return _fill(parts, claim, layout, copies, specs)
    layout, copies, need, specs = _place(parts)
    ring = _worker_ring(slots, need)
    slot = None if ring is None else ring.take()
    if slot is None:
        return portable(tensors(parts))
    return _fill(parts, _Claim(ring, slot), layout, copies, specs)


def _fill(parts: Dict[str, Any], claim: "_Claim", layout, copies, specs) -> "SharedBatch":
    """The :class:`SharedBatch` of ``parts`` in ``claim``'s slot, after copying ``copies``."""
    slot = claim.ring.slot(claim)
    written = {spec: _array(slot, spec) for spec in specs}  # empty arrays share an offset
    for spec, source in copies:
        np.copyto(written[spec], source, casting="unsafe")
    # The batch handed on in this worker is made of views of the slot: what code in the worker
    # changes in place is what the consumer receives, and the slot stays taken while any of
    # them lives (torch's queue pickles in a background thread, maybe after the batch changed).
    out = SharedBatch()
    view = lambda spec: torch.from_numpy(written[spec])  # noqa: E731
    for key, spec in layout:
        dict.__setitem__(out, key, parts[key] if spec is None else _from_spec(spec, view))
    out._claim = claim
    out._layout = [(key, spec, dict.__getitem__(out, key)) for key, spec in layout]
    out._copied = sum(source.nbytes for _, source in copies)
    _counts["shared"] += 1
    return out


def _array(slot: np.ndarray, spec: ArraySpec) -> np.ndarray:
    """The array ``spec`` describes, a view of ``slot`` (a uint8 array)."""
    off, typestr, shape = spec
    dtype = np.dtype(typestr)
    return slot[off : off + dtype.itemsize * math.prod(shape)].view(dtype).reshape(shape)


def _from_spec(spec, view: Callable[[ArraySpec], torch.Tensor]) -> torch.Tensor:
    """The tensor a slot's ``spec`` (``"t"`` or ``"csr"``) describes, over arrays ``view`` gives."""
    if spec[0] == "t":
        return view(spec[1])
    return _csr(spec[1], *(view(a) for a in spec[2:]))


# -- consumer side ----------------------------------------------------------------------------


class _Mapping:
    """A worker's segment mapped in this process."""

    def __init__(self, ident: Ident):
        pid, fd, ino, size, _ = ident
        self.ident = ident
        path = f"/proc/{pid}/fd/{fd}"
        f = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            st = os.fstat(f)
            if st.st_ino != ino or st.st_size < size:
                raise OSError(f"{path} is not the segment the worker sent (inode {st.st_ino}, expected {ino})")
            self.mm = mmap.mmap(f, size)
        finally:
            os.close(f)
        # The address is taken once; no buffer export is kept, so the mapping lives exactly as
        # long as this object (the cache entry and the leases hold it).
        self.addr = ctypes.addressof(ctypes.c_char.from_buffer(self.mm))
        self.pid = os.getpid()

    def free(self, slot: int) -> None:
        if self.pid == os.getpid():  # a forked child's copy of a lease must not free the slot
            self.mm[slot] = 0


_lock = threading.Lock()
_mapped: Dict[int, Tuple[_Mapping, int]] = {}  # worker pid -> (its newest mapping, pidfd)


def _attach(ident: Ident) -> _Mapping:
    """The mapping of the segment ``ident`` names; the newest generation of each worker is
    kept until that worker exits."""
    entry = _mapped.get(ident[0])
    if entry is not None and entry[0].ident == ident:
        return entry[0]
    pid = ident[0]
    with _lock:
        entry = _mapped.get(pid)
        if entry is not None and _exited(entry):  # the pid now names another process
            del _mapped[pid]
            entry = None
        if entry is not None:
            if entry[0].ident == ident:
                return entry[0]
            if entry[0].ident[4] > ident[4]:
                # A batch of a replaced generation still on its way: mapped for its views only.
                return _Mapping(ident)
            m = _Mapping(ident)
            _mapped[pid] = (m, entry[1])
            _counts["mapped"] += 1
            return m
        # The pidfd is opened before the segment, so it cannot name a later process that
        # happens to reuse the pid.
        pidfd = os.pidfd_open(pid) if hasattr(os, "pidfd_open") else -1
        try:
            m = _Mapping(ident)
        except BaseException:
            if pidfd >= 0:
                os.close(pidfd)
            raise
        _mapped[pid] = (m, pidfd)
        _counts["mapped"] += 1
    if pidfd >= 0:
        threading.Thread(target=_forget_on_exit, args=(pid, pidfd), name="cellarrow-shm", daemon=True).start()
    return m


def _exited(entry: Tuple[_Mapping, int]) -> bool:
    mapping, pidfd = entry
    if pidfd >= 0:
        return bool(select.select([pidfd], [], [], 0)[0])
    pid, fd, ino = mapping.ident[:3]
    try:
        return os.stat(f"/proc/{pid}/fd/{fd}").st_ino != ino
    except OSError:
        return True


def _forget_on_exit(pid: int, pidfd: int) -> None:
    """Drops the cache entry of ``pid`` once that process has exited."""
    try:
        select.select([pidfd], [], [])
    finally:
        with _lock:
            entry = _mapped.get(pid)
            if entry is not None and entry[1] == pidfd:
                del _mapped[pid]
        os.close(pidfd)


def _forget_all_in_child() -> None:
    # A forked child has none of the threads that wait on these pidfds.
    global _lock
    _lock = threading.Lock()
    for _, pidfd in _mapped.values():
        if pidfd >= 0:
            try:
                os.close(pidfd)
            except OSError:
                pass
    _mapped.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_all_in_child)


class _Lease:
    """Holds one slot while views of it live."""

    __slots__ = ("mapping", "slot")

    def __init__(self, mapping: _Mapping, slot: int):
        self.mapping, self.slot = mapping, slot

    def __del__(self):
        try:
            self.mapping.free(self.slot)
        except (AttributeError, TypeError, ValueError):  # module globals already gone at exit
            pass


class _View:
    """An array's memory in a mapping, for ``np.asarray``: the array keeps this, and so
    ``owner`` (the ring, a claim or a lease), as its base."""

    __slots__ = ("__array_interface__", "owner")

    def __init__(self, owner: Any, addr: int, typestr: str, shape: Tuple[int, ...]):
        self.__array_interface__ = {"data": (addr, False), "typestr": typestr, "shape": shape, "version": 3}
        self.owner = owner


def _rebuild(ident, slot: int, slot_size: int, entries, copied: int) -> Dict[str, Any]:
    """Unpickles a :class:`SharedBatch`: its dict of tensors as views of the slot."""
    try:
        mapping = _attach(ident)
    except OSError as e:
        raise RuntimeError(
            f"cellarrow: cannot map the shared-memory batch ring of DataLoader worker {ident[0]} "
            f"(/proc/{ident[0]}/fd/{ident[1]}): {e}. Create the dataset with "
            "CellDataset(..., shared_memory=False) to send batches through torch's own transport."
        ) from e
    memory = np.asarray(_View(_Lease(mapping, slot), mapping.addr + _HEADER + slot * slot_size, "|u1", (slot_size,)))

    def tensor(spec: ArraySpec) -> torch.Tensor:
        return torch.from_numpy(_array(memory, spec))

    out = {key: spec[1] if spec[0] == "v" else _from_spec(spec, tensor) for key, spec in entries}
    _counts["received"] += 1
    _counts["copied"] += copied
    return out
