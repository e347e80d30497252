"""Corpus, cohorts, loaders and batches: the pythonic face of ``cellarrow._native``."""

from __future__ import annotations

import json
import logging
import os
import re
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import pyarrow as pa

from . import _errors, _native, _settings
from ._errors import CellIndexError, CorpusNotFoundError, NotACorpusError

PathLike = Union[str, "os.PathLike[str]"]

TABLES = ("obs", "genes", "samples", "gene_counts", "gene_stats")


_log = logging.getLogger("cellarrow")


def _gene_vocab(genes: Any) -> Any:
    """A model vocabulary as the native loader takes it: a file path as a string, or a list
    of gene ids/symbols (any sequence of strings, numpy arrays too); None stays None."""
    if genes is None:
        return None
    if isinstance(genes, (str, os.PathLike)):
        return os.fspath(genes)
    if isinstance(genes, np.ndarray):
        genes = genes.tolist()
    try:
        values = list(genes)
    except TypeError:
        raise _errors.SettingTypeError(f"genes must be a list of gene ids or symbols, or a file path, not {type(genes).__name__}") from None
    for v in values:
        if not isinstance(v, str):
            raise _errors.SettingTypeError(f"genes must be gene ids or symbols (strings), found {v!r}")
    return values


def _term_list(name: str, terms: Any) -> Any:
    """A list of ontology terms as the native loader takes it: a file path as a string (one
    term per line), or a list of term ids, labels or synonyms; None stays None."""
    if terms is None:
        return None
    if isinstance(terms, (str, os.PathLike)):
        return os.fspath(terms)
    try:
        values = list(terms)
    except TypeError:
        raise _errors.SettingTypeError(f"{name} must be a list of terms or a file path, not {type(terms).__name__}") from None
    for v in values:
        if not isinstance(v, str):
            raise _errors.SettingTypeError(f"{name} must be term ids, labels or synonyms (strings), found {v!r}")
    return values


def _ontology_file(ontology: Any) -> Any:
    """The ontology setting, with a name (``"CL"``) found among the files of the
    cellxgene-ontology-guide package when ``CELLARROW_ONTOLOGY_DIR`` is not set and the package
    is installed; otherwise as given (the native loader looks it up, or explains what to set)."""
    if ontology is None:
        return None
    ontology = os.fspath(ontology)
    looks_like_path = os.sep in ontology or "/" in ontology or ontology.endswith((".obo", ".json", ".zst"))
    if os.environ.get("CELLARROW_ONTOLOGY_DIR") or looks_like_path or os.path.isfile(ontology):
        return ontology
    import importlib.util

    spec = importlib.util.find_spec("cellxgene_ontology_guide")
    if spec is None or not spec.submodule_search_locations:
        return ontology
    data = Path(list(spec.submodule_search_locations)[0]) / "data"
    if not data.is_dir():
        return ontology
    return os.fspath(_native.locate_ontology(ontology, os.fspath(data)))


def _arrow_table(stream: Any) -> pa.Table:
    """A ``pyarrow.Table`` from a native table (Arrow PyCapsule stream), with no copy.

    Read as a stream rather than through ``pa.table()``, which sets up Arrow's compute
    function registry on first use: about 30 MB of resident memory for the life of the
    process, on every DataLoader worker, for nothing that reading a table needs.
    """
    return pa.RecordBatchReader.from_stream(stream).read_all()


def open(path: PathLike) -> "Corpus":  # noqa: A001 - the natural name, like io.open
    """Opens a corpus directory written by ``cellarrow convert``, or a corpus URL in object
    storage (``s3://bucket/prefix``, ``gs://``, ``az://``, ``http(s)://``, ``file://``).

    The matrix parts are memory-mapped and their structure is checked; nothing is read into
    memory until it is asked for. A URL takes its endpoint and credentials from the usual
    environment variables (``AWS_ENDPOINT_URL``, ``AWS_ALLOW_HTTP``, ``AWS_ACCESS_KEY_ID``
    ...); its tables are fetched once into a node-local snapshot and its parts through the
    node-local cache (``$CELLARROW_CACHE/store``), both checked against the manifest's sha256.

    >>> import cellarrow
    >>> corpus = cellarrow.open("my.corpus")              # doctest: +SKIP
    >>> corpus.n_cells, corpus.n_genes                     # doctest: +SKIP
    (1107, 507)
    >>> remote = cellarrow.open("s3://bucket/my.corpus")  # doctest: +SKIP
    """
    return Corpus(path)


class Corpus:
    """A memory-mapped cellarrow corpus.

    Tables come as ``pyarrow.Table`` (``corpus.obs``, ``corpus.genes``, ``corpus.samples``), as
    ``polars.DataFrame`` (``corpus.table("obs", format="polars")``) or lazily
    (``corpus.scan("obs")``); ``corpus.query(sql)`` runs the SQL of ``cellarrow query``.

    >>> corpus = cellarrow.open("my.corpus")                                   # doctest: +SKIP
    >>> corpus.query("SELECT sample_id, COUNT(*) AS n FROM obs GROUP BY 1")     # doctest: +SKIP
    >>> t = corpus.cohort("SELECT cell FROM obs WHERE cell_type = 'T cell'")   # doctest: +SKIP
    >>> for batch in t.loader(batch_size=256, seed=0):                         # doctest: +SKIP
    ...     X = batch.to_scipy()
    """

    def __init__(self, path: PathLike):
        location = os.fspath(path)
        if not is_url(location):
            _check_corpus_path(Path(location))
        self._location = location
        self._native = _native.Corpus(location)
        # Where the tables are read: the directory itself, or a remote corpus's snapshot.
        self._path = Path(self._native.path)
        self._manifest: Optional[dict] = None
        self._gene_names: Optional[List[str]] = None

    # -- identity --------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        """The corpus directory (for a corpus URL: the node-local snapshot of its manifest and
        tables)."""
        return self._path

    @property
    def location(self) -> str:
        """What the corpus was opened from, a path or a URL: what other processes (DataLoader
        workers, ``datasets`` generators) open again."""
        return self._location

    @property
    def n_cells(self) -> int:
        return self._native.n_cells

    @property
    def n_genes(self) -> int:
        return self._native.n_genes

    @property
    def nnz(self) -> int:
        return self._native.nnz

    @property
    def manifest(self) -> dict:
        """``manifest.json`` as a dict."""
        if self._manifest is None:
            self._manifest = json.loads(self._native.manifest_json)
        return self._manifest

    @property
    def gene_names(self) -> List[str]:
        """Gene names in id order (the column order of ``to_scipy()``)."""
        if self._gene_names is None:
            self._gene_names = self._native.gene_names()
        return self._gene_names

    @property
    def part_paths(self) -> List[Path]:
        """The matrix parts (Arrow IPC streams), in cell order."""
        return [Path(p) for p, _, _ in self._native.parts()]

    def __len__(self) -> int:
        return self.n_cells

    def __repr__(self) -> str:
        return f"Corpus({self._location!r}, n_cells={self.n_cells}, n_genes={self.n_genes}, nnz={self.nnz})"

    # -- tables ----------------------------------------------------------------------------
    def table(self, name: str, columns: Optional[Sequence[str]] = None, *, format: str = "arrow"):
        """A corpus table (``obs``, ``genes``, ``samples``, ``gene_counts``, ``gene_stats``).

        ``format="arrow"`` gives a ``pyarrow.Table``, ``"polars"`` a ``polars.DataFrame``
        (from the same Arrow buffers, no copy).

        >>> corpus.table("obs", ["cell", "sample_id"], format="polars")   # doctest: +SKIP
        """
        t = self._native.read_table(name, None if columns is None else list(columns))
        if t is None:
            # No rows: the schema of the table's files.
            import pyarrow.dataset as ds

            t = ds.dataset([os.fspath(p) for p in self.table_paths(name)], format="parquet").to_table(
                columns=None if columns is None else list(columns)
            )
        else:
            t = _arrow_table(t)
        return _format(t, format)

    @property
    def obs(self) -> pa.Table:
        """The ``obs`` table: one row per cell (``cell``, ``sample_id``, ..., source obs columns)."""
        return self.table("obs")

    @property
    def genes(self) -> pa.Table:
        """The ``genes`` table: the gene vocabulary (identity columns, ``n_samples``, ``n_cells``); row ``i`` is gene id ``i``."""
        return self.table("genes")

    @property
    def samples(self) -> pa.Table:
        """The ``samples`` table: one row per source h5ad file."""
        return self.table("samples")

    def table_paths(self, name: str) -> List[Path]:
        """The Parquet files of a corpus table, in row order: ``NAME.parquet`` in a format-1
        corpus, the files the manifest lists under ``tables[NAME]`` in format 2 (one per
        conversion or append; every reader takes them together as one table). Empty when the
        corpus has no such table."""
        m = self.manifest
        if m.get("format_version", 1) >= 2:
            return [self._path / f["path"] for f in m.get("tables", {}).get(name, [])]
        single = self._path / f"{name}.parquet"
        return [single] if single.exists() else []

    def scan(self, name: str):
        """A lazy ``polars.LazyFrame`` over a corpus table (projection and predicate push-down),
        every file of the table as one frame. ``genes`` of a format-2 corpus is read eagerly
        (one row per gene), as :meth:`table` serves it, with ``n_samples`` and ``n_cells``.

        >>> corpus.scan("obs").filter(pl.col("nnz") > 100).select("cell").collect()  # doctest: +SKIP
        """
        import polars as pl

        if name not in TABLES:
            raise ValueError(f"{name!r} is not a corpus table; expected one of {', '.join(TABLES)}")
        paths = self.table_paths(name)
        if not paths:
            raise ValueError(f"the corpus has no {name} table ({self._path / name})")
        if name == "genes" and self.manifest.get("format_version", 1) >= 2:
            return self.table("genes", format="polars").lazy()
        return pl.scan_parquet([os.fspath(p) for p in paths])

    @property
    def matrix(self) -> pa.Table:
        """The expression matrix as one Arrow table over the mapped parts, with no copy:
        ``indices`` and ``values`` list columns, row ``i`` is cell ``i``."""
        return _arrow_table(self._native.matrix())

    # -- SQL -------------------------------------------------------------------------------
    def query(self, sql: str, *, format: str = "arrow"):
        """Runs one SQL statement over the corpus tables (``obs``, ``genes``, ``samples``,
        ``regions``; ``blocks(size[, stride])``, ``expr(cell, gene)``), as ``cellarrow query``.

        Rows come in the order the query gives: without ``ORDER BY`` that order is not defined
        and may change from call to call (``GROUP BY``, joins and scans run in parallel), as
        in any SQL engine. Add ``ORDER BY`` for a stable order.

        >>> corpus.query("SELECT cell_type, COUNT(*) AS n FROM obs GROUP BY 1 ORDER BY n DESC")  # doctest: +SKIP
        >>> corpus.query("SELECT * FROM genes LIMIT 5", format="polars")                         # doctest: +SKIP
        """
        t = self._native.query(sql)
        return _format(_arrow_table(t), format)

    def cohort(self, cells: Union[str, Sequence[int], np.ndarray]) -> "Cohort":
        """A cohort: the sorted distinct cell ids of the ``cell`` column of an SQL query, or of
        a sequence of cell ids (negative ids count from the end, as in Python; an id out of
        range is an ``IndexError``).

        >>> t = corpus.cohort("SELECT cell FROM obs WHERE cell_type = 'T cell'")  # doctest: +SKIP
        >>> corpus.cohort([0, 5, -1])                                            # doctest: +SKIP
        """
        if not isinstance(cells, str):
            return Cohort(self, cells)
        ids = self._native.cohort(cells)
        return Cohort._trusted(self, _cells_numpy(ids))

    def where(self, predicate: str) -> "Cohort":
        """The cohort of cells whose obs row satisfies an SQL predicate.

        >>> corpus.where("sample_id = 'donor1' AND nnz > 200")  # doctest: +SKIP
        """
        ids = self._native.cohort_where(predicate)
        return Cohort._trusted(self, _cells_numpy(ids))

    def cells(self, cells: Sequence[int]) -> "Cohort":
        """Deprecated: ``corpus.cohort(ids)`` (``cells`` is the name of an id array, as in
        :attr:`Cohort.cells`)."""
        _deprecated("Corpus.cells(ids)", "Corpus.cohort(ids)")
        return Cohort(self, cells)

    # -- random access -----------------------------------------------------------------------
    def get(self, cells: Union[int, Sequence[int], np.ndarray]) -> "Batch":
        """The given cells, in that order (repeats allowed), as one CSR :class:`Batch`.

        Map-style access for code written against per-cell readers (``fetch_cell``,
        ``dataset[i]``): one Rust gather per call, straight into the batch's memory, with the
        GIL released. Gene ids come as ``int32`` and values in the stored type (so
        :meth:`Batch.to_scipy` takes the gene ids as they are, and the values too with
        ``values="native"``; by default it converts them to float32). Ids follow Python's
        indexing: negative ones count from the end, one out of range is an ``IndexError``.
        For training loops, a :meth:`loader` gathers ahead on its own threads and is faster.

        >>> corpus.get([5, 2, 5]).to_scipy().shape              # doctest: +SKIP
        (3, 507)
        """
        ids = np.asarray(cells)
        if ids.size == 0:
            ids = ids.astype(np.uint64)  # [] arrives as float64
        kind = ids.dtype.kind
        if kind not in "iu":
            raise TypeError(f"cell ids must be integers, not {ids.dtype}")
        # Signed ids go over as int64 and Rust refuses negative and out-of-range ones, so no
        # numpy reduction runs here: a one-cell call is dominated by such fixed costs. Only a
        # refused call pays for the ids rule (negative ids count from the end).
        ids = np.ascontiguousarray(ids.reshape(-1), dtype=np.int64 if kind == "i" else np.uint64)
        try:
            indptr, indices, values = self._native.gather_csr(ids.tobytes(), kind == "i")
        except (IndexError, ValueError):
            checked = cell_ids(ids, self.n_cells, sort=False)
            if np.array_equal(checked, ids):
                raise
            ids = checked
            indptr, indices, values = self._native.gather_csr(ids.tobytes(), False)
        return Batch._from_csr(
            ids.view(np.uint64),
            np.frombuffer(indptr, np.int32),
            np.frombuffer(indices, np.int32),
            np.frombuffer(values, self._value_dtype),
            self.n_genes,
        )

    @property
    def _value_dtype(self) -> np.dtype:
        return np.dtype(self.manifest["value_type"])

    def __getitem__(self, key: Union[int, slice, Sequence[int], np.ndarray]) -> "Batch":
        """``corpus[i]``, ``corpus[-1]``, ``corpus[10:20]`` or ``corpus[[3, 1, 4]]``: the cells as
        one :class:`Batch` (see :meth:`get`); integers and slices follow Python's indexing."""
        n = self.n_cells
        if isinstance(key, slice):
            return self.get(np.arange(*key.indices(n), dtype=np.int64))
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            i = int(key)
            if not -n <= i < n:
                raise CellIndexError(_out_of_range(i, n))
            return self.get([i % n])
        return self.get(key)

    # -- loading ---------------------------------------------------------------------------
    def loader(self, sampler: str = "random", **options: Any) -> "Loader":
        """Batches over every cell; see :class:`Loader` for the options.

        >>> for batch in corpus.loader(batch_size=256, seed=1, epoch=0):  # doctest: +SKIP
        ...     X = batch.to_scipy()
        """
        return Loader(self, sampler=sampler, **options)

    def to_hf_dataset(self, obs: Optional[Sequence[str]] = None):
        """A Hugging Face ``datasets.Dataset`` over the mapped matrix parts; see
        :func:`cellarrow.hf.to_hf_dataset`."""
        from .hf import to_hf_dataset

        return to_hf_dataset(self, obs=obs)

    def to_hf_iterable(self, sampler: str = "random", **options: Any):
        """A Hugging Face ``datasets.IterableDataset`` over a sampler; see
        :func:`cellarrow.hf.to_hf_iterable`."""
        from .hf import to_hf_iterable

        return to_hf_iterable(self, sampler=sampler, **options)


class Cohort:
    """A set of cells of a corpus (sorted distinct ids), from SQL or a list of ids.

    >>> t = corpus.where("cell_type = 'T cell'")          # doctest: +SKIP
    >>> t.cells[:5], len(t)                               # doctest: +SKIP
    >>> t.obs                                             # doctest: +SKIP
    >>> loader = t.loader("groups", group_size=16)         # doctest: +SKIP
    """

    def __init__(self, corpus: Corpus, cells: Any):
        self.corpus = corpus
        #: The cell ids (sorted, distinct, ``uint64``).
        self.cells = cell_ids(cells, corpus.n_cells)

    @classmethod
    def _trusted(cls, corpus: Corpus, cells: np.ndarray) -> "Cohort":
        """A cohort of ids that are sorted, distinct and in range (from the query engine)."""
        c = cls.__new__(cls)
        c.corpus, c.cells = corpus, np.asarray(cells, dtype=np.uint64)
        return c

    def __len__(self) -> int:
        return int(self.cells.shape[0])

    def __repr__(self) -> str:
        return f"Cohort({len(self)} cells of {self.corpus!r})"

    def __array__(self, dtype=None, copy=None):
        return self.cells if dtype is None else self.cells.astype(dtype)

    def to_arrow(self) -> pa.Array:
        """The cell ids as a ``pyarrow.UInt64Array`` (no copy)."""
        return pa.array(self.cells, type=pa.uint64())

    def table(self, name: str = "obs", columns: Optional[Sequence[str]] = None, *, format: str = "arrow"):
        """The ``obs`` rows of the cohort's cells (in cell id order), optionally only some
        columns, as :meth:`Corpus.table` gives tables.

        >>> t.table("obs", ["cell", "cell_type"], format="polars")   # doctest: +SKIP
        """
        if name != "obs":
            raise ValueError(f"a cohort has one table per cell, 'obs'; {name!r} is a corpus table: corpus.table({name!r})")
        t = self.corpus.table("obs", columns)
        return _format(t.take(pa.array(self.cells.astype(np.int64))), format)

    @property
    def obs(self) -> pa.Table:
        """The obs rows of the cohort's cells (in cell id order), as ``Corpus.obs`` for every
        cell; some columns: ``cohort.table("obs", columns)``."""
        return _CallableTable(self.table("obs"), lambda columns=None: self.table("obs", columns), "Cohort.obs(columns)", 'Cohort.table("obs", columns)')

    def loader(self, sampler: str = "random", **options: Any) -> "Loader":
        """Batches over the cohort; see :class:`Loader` for the options."""
        return Loader(self.corpus, sampler=sampler, cohort=self, **options)

    def to_hf_iterable(self, sampler: str = "random", **options: Any):
        """A Hugging Face ``IterableDataset`` over the cohort; see :func:`cellarrow.hf.to_hf_iterable`."""
        from .hf import to_hf_iterable

        return to_hf_iterable(self.corpus, sampler=sampler, cohort=self, **options)


class _CallableTable:
    """A ``pyarrow.Table`` that, for one release, may also be called the way the name was a
    method before (with a ``DeprecationWarning``). Attributes, ``len``, indexing, equality and
    the Arrow PyCapsule stream (``pa.table(x)``, ``polars.DataFrame(x)``) are the table's;
    ``.table`` is the ``pyarrow.Table`` itself."""

    __slots__ = ("table", "_call", "_old", "_new")

    def __init__(self, table: pa.Table, call: Callable[..., Any], old: str, new: str):
        self.table, self._call, self._old, self._new = table, call, old, new

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        _deprecated(self._old, self._new)
        return self._call(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.table, name)

    def __arrow_c_stream__(self, requested_schema: Any = None) -> Any:
        return self.table.__arrow_c_stream__(requested_schema)

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, key: Any) -> Any:
        return self.table[key]

    def __eq__(self, other: Any) -> bool:
        return self.table == (other.table if isinstance(other, _CallableTable) else other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(self.table)


def _out_of_range(cell: int, n_cells: int) -> str:
    return f"cell id {cell} is out of range: the corpus has {n_cells} cells (ids 0 to {n_cells - 1}, or -{n_cells} to -1 from the end)"


def cell_ids(cells: Any, n_cells: int, sort: bool = True) -> np.ndarray:
    """Cell ids as ``uint64`` under the one rule of the package: integers, negative ones count
    from the end as in Python, and one out of range is an ``IndexError`` naming the corpus
    size. ``sort``: sorted and distinct (a cohort), else in the order given."""
    if isinstance(cells, (pa.Array, pa.ChunkedArray)):
        cells = cells.to_numpy(zero_copy_only=False)
    ids = np.asarray(cells)
    if ids.size == 0:
        return np.zeros(0, dtype=np.uint64)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"cell ids must be integers, not {ids.dtype}")
    ids = ids.reshape(-1)
    if ids.dtype.kind == "i":
        ids = ids.astype(np.int64, copy=False)
        low = ids.min()
        if low < 0:
            if low < -n_cells:
                raise CellIndexError(_out_of_range(int(low), n_cells))
            ids = np.where(ids < 0, ids + n_cells, ids)
    high = ids.max()
    if high >= n_cells:
        raise CellIndexError(_out_of_range(int(high), n_cells))
    ids = ids.astype(np.uint64, copy=False)
    return np.unique(ids) if sort else ids


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"{old} is deprecated and will be removed in the next release; use {new}", DeprecationWarning, stacklevel=3)


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(location: str) -> bool:
    """Whether ``location`` is a corpus URL (``s3://...``) rather than a path."""
    return bool(_URL.match(location))


def _check_corpus_path(path: Path) -> None:
    """Raises an ``OSError`` that says what ``path`` is when it cannot be a corpus: missing, a
    file (an ``.h5ad`` one still to be converted), or a directory without ``manifest.json``."""
    if not path.exists():
        raise CorpusNotFoundError(f"no corpus at {path}: the path does not exist")
    if not path.is_dir():
        if path.suffix.lower() in (".h5ad", ".h5"):
            raise NotACorpusError(
                f"{path} is an AnnData file, not a cellarrow corpus: convert it first with "
                f"`cellarrow convert {path} -o {path.with_suffix('.corpus')}`, then open the corpus"
            )
        raise NotACorpusError(f"{path} is a file, not a cellarrow corpus (a directory written by `cellarrow convert`)")
    if not (path / "manifest.json").exists():
        h5ad = sorted(p.name for p in path.glob("*.h5ad"))[:3]
        hint = f"; it holds .h5ad files ({', '.join(h5ad)}): convert them with `cellarrow convert`" if h5ad else ""
        raise CorpusNotFoundError(
            f"{path} is a directory but not a cellarrow corpus: it has no manifest.json{hint}"
        )


def _view(array: pa.Array) -> np.ndarray:
    """A read-only numpy view of a primitive Arrow array without nulls (DLPack, no copy).

    ``Array.to_numpy`` gives the same view but first sets up pyarrow's conversion machinery:
    about 30 MB of resident memory in every process that touches a batch.
    """
    return np.from_dlpack(array)


def _cells_numpy(native_array) -> np.ndarray:
    return _view(pa.array(native_array))


def _format(t: pa.Table, format: str):
    if format == "arrow":
        return t
    if format == "polars":
        import polars as pl

        return pl.DataFrame(t)
    raise ValueError(f"unknown format {format!r}; expected 'arrow' or 'polars'")


class CheckedCells:
    """Cell ids already made a cohort's (sorted, distinct, in range), without their corpus:
    what a pickled dataset carries to its workers, so that they are not checked again."""

    __slots__ = ("cells",)

    def __init__(self, cells: np.ndarray):
        self.cells = cells

    def to_arrow(self) -> pa.Array:
        return pa.array(self.cells, type=pa.uint64())


def cohort_cells(cohort: Any, n_cells: int) -> Optional[pa.Array]:
    """Cell ids of a :class:`Cohort` or any integer sequence (ids rule of :func:`cell_ids`)
    as an Arrow array, or None for every cell."""
    if cohort is None:
        return None
    if isinstance(cohort, (Cohort, CheckedCells)):
        return cohort.to_arrow()
    if hasattr(cohort, "cells") and not callable(cohort.cells):
        cohort = cohort.cells
    return pa.array(cell_ids(cohort, n_cells), type=pa.uint64())


class Loader:
    """Batches of one shard of one epoch of a sampler, gathered ahead by Rust threads.

    Iterating yields :class:`Batch` objects. Each ``iter()`` serves the current epoch from its
    start, as PyTorch's ``DataLoader`` and Hugging Face datasets do: move to the next epoch
    with :meth:`set_epoch`. The one exception is a resume the caller asked for: after
    :meth:`load_state_dict` (or ``position=``), the next ``iter()`` serves the rest of that
    epoch. The Rust threads gather with the GIL released.

    The settings are checked when the loader is made: an unknown keyword is a ``TypeError``
    that lists the valid ones, a zero or negative size a ``ValueError`` naming it, and an obs
    column the corpus lacks or a spatial sampler on a corpus without coordinates fail here,
    not at the first batch. Settings not given take the library's defaults;
    ``repr(loader)`` and :attr:`settings` show them.

    Sampler settings:

    - ``sampler``: ``"random"`` (a fresh permutation of the cells per epoch), ``"shuffle"``
      (for cold storage: runs of ``shuffle_run`` consecutive cells, default 64, shuffled as
      blocks and mixed ``shuffle_window`` runs at a time, default 64), ``"groups"``
      (``group_size`` random cells of one sample; ``label``/``label_mode`` for
      ``"class_balanced"`` or ``"stratified"``), ``"regions"`` (``regions=`` a regions file,
      or ``label=`` an obs column whose values are regions),
      ``"blocks"`` (square tissue blocks of ``block_size``, optional ``stride``).
    - ``batch_size``: cells per batch (random, default 256) or groups per batch (default 1).
    - ``seed``, ``epoch``, ``drop_last``, ``min_cells``, ``max_cells``.
    - ``rank``, ``world_size``, ``worker``, ``num_workers``, ``policy`` (``"even"``,
      ``"drop_last"``, ``"pad"``): the shard; ``position``: items of the shard already served
      (to resume).
    - SQL (where the native library offers it): ``where`` (an obs predicate choosing the
      cells), ``blocks_sql``, ``regions_sql`` (queries choosing the blocks or regions).
    - ``balance`` (random sampler): an obs label column whose classes are drawn equally
      often: each cell weighs ``1 / cells of its class``, an epoch is as many draws (with
      replacement) as cells with a class. With ``ontology`` (an OBO or ontology JSON file,
      or a name such as ``"CL"`` looked up in ``$CELLARROW_ONTOLOGY_DIR``, else among the
      files of the installed cellxgene-ontology-guide package) the values are term ids,
      labels or exact synonyms (a value that names no term is an error listing it) and
      classes are terms: cut at ``level`` (a depth; a label above it is its own class) or
      to ``balance_terms`` (a file of one term per line, or a list; cells under none are
      left out). The classes, their cells and weights, and the effective number of classes
      are in :attr:`balance`.

    Output settings: ``obs`` (obs columns to add), ``coords`` (x, y, z), ``bounds`` (blocks,
    and regions given as boxes: each cell's group box ``min_x`` ... ``max_y`` and its
    coordinates normalised to it, ``x_norm``, ``y_norm``; implies ``coords``), ``dense`` (``"all"``
    or a list of gene names or ids: a dense ``n_cells x len(dense)`` output instead of CSR),
    ``genes`` (a model's gene vocabulary: a list of gene ids or symbols, or a file of them, one
    per line or JSON; CSR batches come out in its order and id space, ``n_genes`` wide, corpus
    genes outside it left out; the overlap is logged once and kept in ``genes_present``),
    ``values`` (the type of the gathered values: ``"native"``, the stored type, by default;
    ``"f32"`` or ``"f64"``: converted while gathering), ``indices`` (``"i32"``, the default
    here, which scipy and torch take with no copy, or ``"native"``: the stored uint16/uint32,
    fewer bytes), ``tokens`` (``"rank"``: rank-value encoding, Geneformer-style, with the gene
    medians of the corpus's ``gene_stats`` table or of ``gene_medians=``, a table of gene and
    median; ``"bins"``: per-cell quantile bins of the non-zero values, scGPT-style, ``n_bins``
    bins, default 51): each cell becomes ``top_k`` (default 2048) tokens, see
    :attr:`Batch.tokens`, :attr:`Batch.token_values`, :attr:`Batch.attention_mask`. With
    ``genes``, token ids are positions in the vocabulary and genes outside it never become
    tokens: ``"rank"`` still divides by the cell's total over all its genes, ``"bins"`` bins
    only the vocabulary's genes (src/loader/tokens.rs has the exact rules).
    ``multi_hot`` (an obs label column, with ``ontology``): each cell's term and its
    ancestors as a ``cells x terms`` uint8 matrix, :attr:`Batch.multi_hot`, over every term
    the corpus's labels reach, those of depth ``<= multi_hot_level``, or ``multi_hot_terms``
    (a file or a list, in that order); :attr:`multi_hot_terms` gives the column order.
    Loader settings: ``threads`` (0 gathers on the calling thread), ``prefetch``, and for a
    corpus URL with cold parts ``read_ahead`` (batches whose chunks are being fetched at once).

    Whatever ``values`` is, :meth:`Batch.to_scipy`, :meth:`Batch.to_torch` and
    :meth:`Batch.to_numpy` give float32 values unless asked for ``values="native"``; a loader
    with ``values="f32"`` hands them over with no conversion.

    >>> loader = corpus.loader("random", batch_size=256, seed=0, obs=["cell_type"])  # doctest: +SKIP
    >>> loader                                                                       # doctest: +SKIP
    Loader('random', batch_size=256, seed=0, obs=['cell_type'], ...)
    >>> for epoch in range(3):                                                       # doctest: +SKIP
    ...     loader.set_epoch(epoch)
    ...     for batch in loader:
    ...         X = batch.to_torch()
    """

    def __init__(self, corpus: Union[Corpus, PathLike], sampler: str = "random", *, cohort: Any = None, **options: Any):
        if not isinstance(corpus, Corpus):
            corpus = Corpus(corpus)
        _settings.check_keywords(options, _settings.native_keywords() - {"sampler"} | {"cohort"}, "Loader()")
        # A model vocabulary's own type check names what it takes (a path or gene names).
        if options.get("genes") is not None:
            options["genes"] = _gene_vocab(options["genes"])
        for name in ("balance_terms", "multi_hot_terms"):
            if options.get(name) is not None:
                options[name] = _term_list(name, options[name])
        if options.get("ontology") is not None:
            options["ontology"] = _ontology_file(options["ontology"])
        _settings.check_values(options, sampler)
        if isinstance(options.get("dense"), str):
            options["dense"] = [options["dense"]]
        if isinstance(options.get("obs"), str):
            options["obs"] = [options["obs"]]
        if options.get("regions") is not None:
            options["regions"] = os.fspath(options["regions"])
        for name, value in _native.Loader.front_end_defaults("python").items():
            options.setdefault(name, value)
        self.corpus = corpus
        self.sampler = sampler
        self._cells = cohort_cells(cohort, corpus.n_cells)
        self._options = dict(options)
        self._epoch = int(self._options.pop("epoch", 0))
        position = self._options.pop("position", None)
        # Items of the shard served by the current (or last) pass, and the position the next
        # iter() resumes from when the caller asked for a resume (None: from the start).
        self._position = 0
        self._resume: Optional[int] = None if not position else int(position)
        self._probe: Optional[Any] = None
        self._probe_key: Optional[tuple] = None
        self._probe_used = False
        # Built now, on the calling thread and without gathering: every setting is checked.
        probe = self._current()
        # The overlap with a model vocabulary, reported once per loader (not per epoch).
        self.genes_present = None
        overlap = getattr(probe, "vocab_overlap", None)
        if overlap is not None:
            present, size, missing = overlap
            self.genes_present = {"present": present, "total": size, "missing": list(missing)}
            level = logging.INFO if present == size else logging.WARNING
            _log.log(level, "%d of %d vocabulary genes present", present, size)
        # The classes of a balanced sampler and the multi-hot terms, once per loader too.
        self.balance: Optional[Dict[str, Any]] = getattr(probe, "balance", None)
        if self.balance is not None:
            b = self.balance
            _log.info(
                "balancing %s: %d classes over %d cells, effective number of classes %.2f (%.2f without balancing)",
                b["column"], len(b["classes"]), b["cells"], b["effective_classes"], b["effective_classes_unbalanced"],
            )
        terms = getattr(probe, "multi_hot_terms", None)
        self.multi_hot_terms: Optional[List[str]] = None if terms is None else list(terms)
        labels = getattr(probe, "multi_hot_labels", None)
        self.multi_hot_labels: Optional[List[str]] = None if labels is None else list(labels)

    def _make(self, epoch: int, position: int, threads: Optional[int] = None):
        options = dict(self._options)
        if threads is not None:
            options["threads"] = threads
        return _native.Loader(self.corpus._native, self._cells, sampler=self.sampler, epoch=epoch, position=position, **options)

    def _start(self) -> int:
        return self._resume if self._resume is not None else 0

    def _current(self):
        """A native loader for the next pass that gathers nothing (threads=0): its counts,
        its schema, and the loader of that pass when the caller asked for threads=0."""
        key = (self._epoch, self._start())
        if self._probe is None or self._probe_key != key or self._probe_used:
            self._probe = self._make(*key, threads=0)
            self._probe_key, self._probe_used = key, False
        return self._probe

    # -- settings --------------------------------------------------------------------------
    @property
    def settings(self) -> Dict[str, Any]:
        """The loader's settings: the library's effective ones when the native module reports
        them, else those given (the others at the library's defaults)."""
        native = getattr(self._current(), "settings", None)
        if isinstance(native, Mapping):
            out = dict(native)
        else:
            out = {"sampler": self.sampler, **self._options}
        out.pop("position", None)
        out["epoch"] = self._epoch
        return out

    def __repr__(self) -> str:
        settings = self.settings
        settings.pop("sampler", None)
        items = "".join(f", {k}={v!r}" for k, v in settings.items() if k not in ("threads", "prefetch", "read_ahead") or k in self._options)
        cohort = "every cell" if self._cells is None else f"{len(self._cells)} cells"
        return f"Loader({self.sampler!r}{items}, cohort={cohort} of {self.corpus.location!r})"

    # -- epoch and state -------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Serves ``epoch`` on the next iteration, from its start; a resume that
        :meth:`load_state_dict` set up for this same epoch is kept."""
        _settings.check_values({"epoch": epoch})
        epoch = int(epoch)
        if epoch != self._epoch:
            self._resume = None
        self._epoch = epoch
        self._position = 0

    @property
    def epoch_len(self) -> int:
        """Items (cells or groups) of the epoch over all shards."""
        return self._current().epoch_len

    @property
    def n_items(self) -> int:
        """Items (cells or groups) the next iteration serves."""
        return self._current().n_items

    def __len__(self) -> int:
        """Number of batches of the next iteration."""
        return self._current().n_batches

    def state_dict(self) -> Dict[str, int]:
        """Where the loader stands: ``{"epoch", "position"}`` (items of the shard served in
        the current or last pass of the epoch; a pending resume's position before it starts)."""
        position = self._resume if self._resume is not None else self._position
        return {"epoch": self._epoch, "position": position}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        """Continues from a :meth:`state_dict`: the next iteration resumes the epoch exactly
        (a state saved at the end of an epoch gives an empty pass; :meth:`set_epoch` moves on)."""
        _settings.check_values({"epoch": state["epoch"], "position": state["position"]})
        self._epoch = int(state["epoch"])
        self._position = int(state["position"])
        self._resume = self._position

    @property
    def schema(self) -> pa.Schema:
        """The Arrow schema of every batch."""
        return pa.record_batch(self._current().empty_batch()).schema

    def __iter__(self) -> Iterator["Batch"]:
        for batch, _, _ in self._batches(None):
            yield batch

    def _batches(self, memory: Optional[Callable[[], Any]]) -> Iterator[Tuple["Batch", Any, int]]:
        """The batches of the next pass as ``(batch, where, bytes used)``. ``memory``, for a
        loader with ``threads=0``: called before each batch, it gives a writable uint8 array to
        gather the batch into (see ``_native.Loader.next_into``), or None for the loader's own
        memory; ``where`` is what it gave."""
        start = self._start()
        if self._options.get("threads") == 0:
            native = self._current()
            self._probe_used = True  # a native loader iterates once
        else:
            native = self._make(self._epoch, start)
        self._resume = None
        self._position = start
        n_genes = getattr(native, "n_genes", self.corpus.n_genes)
        dense_genes = np.asarray(native.dense_genes, dtype=np.uint32) if native.dense_width else None
        per_batch = native.items_per_batch
        end = native.start_position + native.n_items
        while True:
            where = None if memory is None else memory()
            if where is None:
                rb, used = next(native, None), 0
            else:
                rb, used = native.next_into(where) or (None, 0)
            if rb is None:
                break
            batch = Batch(pa.record_batch(rb), n_genes, dense_genes)
            self._position = min(self._position + per_batch, end)
            yield batch, where, used


class Batch:
    """One batch: an Arrow record batch over Rust-owned buffers, with zero-copy views.

    Columns: ``cell`` (UInt64), ``group`` (grouped samplers), ``indices`` and ``values`` (CSR,
    list columns whose shared offsets are the indptr) or ``dense`` (FixedSizeList), ``x``/``y``
    (/``z``) with ``coords``, and the requested obs columns.

    ``pyarrow.record_batch(batch)`` and ``polars.DataFrame(batch)`` take it through the Arrow
    PyCapsule interface with no copy; ``indptr``, ``indices``, ``values``, ``dense`` and
    ``cells`` are read-only numpy views of the same memory.

    >>> batch = next(iter(corpus.loader(batch_size=4)))   # doctest: +SKIP
    >>> batch.cells, batch.indptr                          # doctest: +SKIP
    >>> batch.to_scipy().shape                             # doctest: +SKIP
    (4, 507)
    """

    __slots__ = ("_rb", "_csr", "n_genes", "dense_genes")

    def __init__(self, record_batch: pa.RecordBatch, n_genes: int, dense_genes: Optional[np.ndarray] = None):
        self._rb = record_batch
        self._csr: Optional[tuple] = None
        self.n_genes = int(n_genes)
        self.dense_genes = dense_genes

    @classmethod
    def _from_csr(cls, cells: np.ndarray, indptr: np.ndarray, indices: np.ndarray, values: np.ndarray, n_genes: int) -> "Batch":
        """A CSR batch over numpy arrays (:meth:`Corpus.get`); its record batch is built on
        first use, over the same memory."""
        b = cls.__new__(cls)
        b._rb = None
        b._csr = (cells, indptr, indices, values)
        b.n_genes = int(n_genes)
        b.dense_genes = None
        return b

    @property
    def record_batch(self) -> pa.RecordBatch:
        """The batch as a ``pyarrow.RecordBatch`` (no copy)."""
        if self._rb is None:
            cells, indptr, indices, values = self._csr
            offsets = pa.array(indptr)
            columns = [pa.array(cells)]
            fields = [pa.field("cell", pa.uint64(), nullable=False)]
            for name, child in (("indices", indices), ("values", values)):
                child = pa.array(child)
                t = pa.list_(pa.field("item", child.type, nullable=False))
                columns.append(pa.ListArray.from_arrays(offsets, child, type=t))
                fields.append(pa.field(name, t, nullable=False))
            self._rb = pa.RecordBatch.from_arrays(columns, schema=pa.schema(fields))
        return self._rb

    def __arrow_c_array__(self, requested_schema=None):
        return self.record_batch.__arrow_c_array__(requested_schema)

    def __arrow_c_schema__(self):
        return self.record_batch.schema.__arrow_c_schema__()

    def __len__(self) -> int:
        return self.num_rows

    def __repr__(self) -> str:
        return f"Batch({self.num_rows} cells, columns={self.record_batch.schema.names})"

    @property
    def num_rows(self) -> int:
        if self._csr is not None:
            return len(self._csr[0])
        return self._rb.num_rows

    @property
    def is_dense(self) -> bool:
        return self._csr is None and "dense" in self._rb.schema.names

    def column(self, name: str) -> pa.Array:
        """A column of the batch (``pyarrow.RecordBatch.column``); a missing one is a
        ``KeyError`` that names the columns there are and how to ask for an obs column."""
        rb = self.record_batch
        if name not in rb.schema.names:
            raise KeyError(
                f"the batch has no column {name!r} (it has {', '.join(rb.schema.names)}): obs columns come with "
                f"batches when the loader is asked for them, e.g. corpus.loader(..., obs=[{name!r}])"
            )
        return rb.column(name)

    @property
    def cells(self) -> np.ndarray:
        """Global cell ids (uint64 view)."""
        if self._csr is not None:
            return self._csr[0]
        return _view(self.column("cell"))

    @property
    def groups(self) -> Optional[np.ndarray]:
        """Group id of each cell (uint64 view), or None for the random sampler."""
        if self._csr is not None or "group" not in self._rb.schema.names:
            return None
        return _view(self.column("group"))

    @property
    def indptr(self) -> np.ndarray:
        """CSR row pointers (int32 view of the list offsets)."""
        if self._csr is not None:
            return self._csr[1]
        return _view(self.column("indices").offsets)

    @property
    def indices(self) -> np.ndarray:
        """Gene ids of the non-zeros (view; int32 unless the loader asked for ``indices="native"``,
        the stored uint16 or uint32)."""
        if self._csr is not None:
            return self._csr[2]
        return _view(self.column("indices").values)

    @property
    def values(self) -> np.ndarray:
        """The non-zero values (view, in the stored or requested type)."""
        if self._csr is not None:
            return self._csr[3]
        return _view(self.column("values").values)

    @property
    def dense(self) -> np.ndarray:
        """The dense output as a ``(num_rows, n_dense_genes)`` view (``dense=`` loaders)."""
        col = self.column("dense")
        width = col.type.list_size
        return _view(col.values).reshape(len(col), width)

    @property
    def is_tokens(self) -> bool:
        """Whether the batch holds tokens (a loader made with ``tokens=``) instead of a matrix."""
        return self._csr is None and "tokens" in self._rb.schema.names

    def _rows(self, name: str) -> np.ndarray:
        col = self.column(name)
        return _view(col.values).reshape(len(col), col.type.list_size)

    @property
    def tokens(self) -> np.ndarray:
        """Token ids as a ``(num_rows, top_k)`` int32 view: corpus gene ids, or positions in
        the vocabulary of a ``genes=`` loader; -1 in padding (``tokens=`` loaders)."""
        return self._rows("tokens")

    @property
    def token_values(self) -> np.ndarray:
        """The value of each token as a ``(num_rows, top_k)`` view: float32 (``tokens="rank"``:
        the value over the cell's total and the gene's median) or int32 (``tokens="bins"``: the
        bin, 1 to ``n_bins - 1``); 0 in padding."""
        return self._rows("token_values")

    @property
    def attention_mask(self) -> np.ndarray:
        """1 for a token, 0 for padding, as a ``(num_rows, top_k)`` bool view."""
        return self._rows("attention_mask").view(np.bool_)

    @property
    def multi_hot(self) -> np.ndarray:
        """Each cell's term and its ancestors as a ``(num_rows, n_terms)`` uint8 view of 0 and 1
        (``multi_hot=`` loaders; the columns are ``Loader.multi_hot_terms``)."""
        return self._rows("multi_hot")

    @property
    def obs(self) -> pa.Table:
        """The per-cell columns of the batch other than the matrix, as a ``pyarrow.Table``
        (as ``Corpus.obs`` and ``Cohort.obs`` are): ``cell``, the ``obs=`` columns, and the
        ``group``, coordinate and box columns of the loader. One column as numpy:
        ``batch.obs["cell_type"].to_numpy()``, or :meth:`column` for the Arrow array."""
        rb = self.record_batch
        names = [n for n in rb.schema.names if n not in _MATRIX_COLUMNS]
        return _CallableTable(pa.Table.from_batches([rb.select(names)]), self._obs_numpy, "Batch.obs(name)", "Batch.obs[name] or Batch.column(name)")

    def _obs_numpy(self, name: str) -> np.ndarray:
        """One column as numpy, categories decoded (what ``Batch.obs(name)`` gave)."""
        col = self.column(name)
        if pa.types.is_dictionary(col.type):
            col = col.dictionary_decode()
        return col.to_numpy(zero_copy_only=False)

    def to_arrow(self) -> pa.RecordBatch:
        """The batch as a ``pyarrow.RecordBatch`` (no copy)."""
        return self.record_batch

    def to_pyarrow(self) -> pa.RecordBatch:
        """Deprecated: :meth:`to_arrow` (the name polars uses)."""
        _deprecated("Batch.to_pyarrow()", "Batch.to_arrow()")
        return self.record_batch

    def to_polars(self):
        """A ``polars.DataFrame`` over the same buffers."""
        import polars as pl

        return pl.DataFrame(self.record_batch)

    def to_scipy(self, copy: bool = False, values: str = "f32"):
        """The batch as a ``scipy.sparse.csr_matrix`` of ``num_rows x n_genes`` (dense loaders:
        ``num_rows x n_dense_genes``).

        ``values``: ``"f32"`` (the default: arithmetic on counts stored as uint16 must not wrap
        around), ``"f64"``, or ``"native"``, the type the batch holds (a view). Gene ids and
        row pointers are read-only views of the batch (``int32`` gene ids are taken as they
        are; ``indices="native"`` ones are widened), and so are the values when no conversion
        is needed (a loader made with ``values="f32"``), so in-place scipy operations
        (``X.data *= 2``, ``X.eliminate_zeros()``) may raise ``ValueError: ... read-only``;
        ``copy=True`` gives a matrix that owns its arrays."""
        import scipy.sparse as sp

        if self.is_dense:
            X = sp.csr_matrix(_converted(self.dense, values))
        else:
            X = _scipy_csr(_converted(self.values, values), self.indices, self.indptr, (self.num_rows, self.n_genes))
        return X.copy() if copy else X

    def to_numpy(self, values: str = "f32") -> np.ndarray:
        """The batch as a dense ``num_rows x n_genes`` array (dense loaders: the dense gene
        subset), float32 unless ``values`` says ``"f64"`` or ``"native"`` (the batch's type;
        for a dense loader a read-only view)."""
        if self.is_dense:
            return _converted(self.dense, values)
        out = np.zeros((self.num_rows, self.n_genes), dtype=_converted(self.values[:0], values).dtype)
        rows = np.repeat(np.arange(self.num_rows), np.diff(self.indptr))
        out[rows, self.indices] = self.values
        return out

    def to_torch(self, dense: Optional[bool] = None, values: str = "f32"):
        """The batch as a torch tensor: a sparse CSR tensor ``num_rows x n_genes``, or the dense
        ``num_rows x n_dense_genes`` tensor of a ``dense=`` loader (a view when no conversion
        is needed).

        ``dense=True`` on a CSR batch expands it to ``num_rows x n_genes``. Row pointers and
        ``int32`` gene ids are shared (``indices="native"`` ones are widened: torch has no
        uint16 index type). ``values``: ``"f32"`` by default, ``"f64"``, or ``"native"`` (the
        batch's type; torch takes integers but computes in floats); ask the loader for
        ``values="f32"`` to share the value buffer too.

        The tensor is made without torch's invariant checks (``check_invariants=False``): the
        library builds every batch canonical (sorted, distinct, in-range gene ids per row)."""
        import torch

        if self.is_dense:
            dense_values = self.column("dense").values
            if _converted(self.dense[:0], values).dtype == self.dense.dtype:
                return _torch_view(dense_values).reshape(self.num_rows, -1)
            return _torch_from_numpy(_converted(self.dense, values))
        vals = _torch_from_numpy(_converted(self.values, values))
        crow = _torch_from_numpy(self.indptr)
        col = _torch_from_numpy(np.asarray(self.indices, dtype=np.int32))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
            t = torch.sparse_csr_tensor(crow, col, vals, size=(self.num_rows, self.n_genes), check_invariants=False)
        return t.to_dense() if dense else t


_MATRIX_COLUMNS = ("indices", "values", "dense", "tokens", "token_values", "attention_mask", "multi_hot")
_VALUE_TYPES = {"f32": np.dtype(np.float32), "f64": np.dtype(np.float64)}


def _converted(a: np.ndarray, values: str) -> np.ndarray:
    """``a`` with the value type ``values`` names (``"native"``: as it is)."""
    if values == "native":
        return a
    dtype = _VALUE_TYPES.get(values)
    if dtype is None:
        raise ValueError(f"unknown values {values!r}; expected 'f32', 'f64' or 'native'")
    return a if a.dtype == dtype else a.astype(dtype)


# The instance attributes of a scipy csr_matrix, as scipy's own constructor leaves them.
_CSR_ATTRIBUTES = {"_shape", "maxprint", "indices", "indptr", "data"}
_csr_template: Any = None  # those attributes of an empty matrix; False: use the constructor


def _scipy_csr(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, shape: tuple):
    """A ``scipy.sparse.csr_matrix`` over these arrays, which are canonical by construction
    (gene ids sorted, distinct and in range in every row; row pointers from 0 to nnz).

    scipy's constructor checks all of that again in Python, about 50 us a call: more than
    gathering a small batch. So the matrix is made like scipy's ``copy`` makes one, from the
    attributes of a matrix that scipy itself built; a scipy whose matrices hold other
    attributes than the five known ones gets its constructor."""
    global _csr_template
    import scipy.sparse as sp

    if indices.dtype != indptr.dtype:  # scipy wants one index type for both
        indices = indices.astype(indptr.dtype)
    if _csr_template is None:
        empty = sp.csr_matrix((np.zeros(0, np.float32), np.zeros(0, np.int32), np.zeros(2, np.int32)), shape=(1, 1))
        _csr_template = dict(vars(empty)) if set(vars(empty)) == _CSR_ATTRIBUTES else False
    if _csr_template is False:
        return sp.csr_matrix((data, indices, indptr), shape=shape)
    X = sp.csr_matrix.__new__(sp.csr_matrix)
    vars(X).update(_csr_template)
    X.data, X.indices, X.indptr, X._shape = data, indices, indptr, (int(shape[0]), int(shape[1]))
    return X


def _torch_from_numpy(a: np.ndarray):
    """A torch tensor over a (possibly read-only) numpy array, with no copy."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # read-only memory: torch must not write it
        return torch.from_numpy(a)


def _torch_view(array: pa.Array):
    """A torch tensor over an Arrow primitive array's buffer (DLPack, no copy)."""
    import torch

    try:
        return torch.from_dlpack(array)
    except (TypeError, RuntimeError, BufferError, AttributeError):
        # DLPack refused this array, so numpy's DLPack import would too.
        return _torch_from_numpy(array.to_numpy(zero_copy_only=True))
