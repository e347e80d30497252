"""Type stubs of the cellarrow package."""

import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Literal, Optional, Sequence, Union

import numpy as np
import pyarrow as pa

__version__: str

PathLike = Union[str, os.PathLike[str]]
TableFormat = Literal["arrow", "polars"]
SamplerName = Literal["random", "cells", "shuffle", "groups", "regions", "blocks"]

class CellarrowError(Exception): ...

def open(path: PathLike) -> Corpus: ...

class Corpus:
    def __init__(self, path: PathLike) -> None: ...
    @property
    def path(self) -> Path: ...
    @property
    def location(self) -> str: ...
    @property
    def n_cells(self) -> int: ...
    @property
    def n_genes(self) -> int: ...
    @property
    def nnz(self) -> int: ...
    @property
    def manifest(self) -> Dict[str, Any]: ...
    @property
    def gene_names(self) -> List[str]: ...
    @property
    def part_paths(self) -> List[Path]: ...
    def __len__(self) -> int: ...
    def table(self, name: str, columns: Optional[Sequence[str]] = None, *, format: TableFormat = "arrow") -> Any: ...
    @property
    def obs(self) -> pa.Table: ...
    @property
    def genes(self) -> pa.Table: ...
    @property
    def samples(self) -> pa.Table: ...
    def scan(self, name: str) -> Any:
        """A ``polars.LazyFrame`` over a corpus table."""
    @property
    def matrix(self) -> pa.Table: ...
    def query(self, sql: str, *, format: TableFormat = "arrow") -> Any: ...
    def cohort(self, cells: Union[str, Sequence[int], np.ndarray]) -> Cohort: ...
    def where(self, predicate: str) -> Cohort: ...
    def cells(self, cells: Sequence[int]) -> Cohort:
        """Deprecated: ``Corpus.cohort(ids)``."""
    def get(self, cells: Union[int, Sequence[int], np.ndarray]) -> Batch: ...
    def __getitem__(self, key: Union[int, slice, Sequence[int], np.ndarray]) -> Batch: ...
    def loader(self, sampler: SamplerName = "random", **settings: Any) -> Loader:
        """Batches over every cell; the settings of :class:`Loader`."""
    def to_hf_dataset(self, obs: Optional[Sequence[str]] = None) -> Any:
        """A ``datasets.Dataset`` memory-mapping the matrix parts, with a ``cell`` column."""
    def to_hf_iterable(
        self, sampler: SamplerName = "random", *, num_shards: int = 64, epoch: int = 0, **settings: Any
    ) -> Any:
        """A ``datasets.IterableDataset`` over a sampler."""

class Cohort:
    corpus: Corpus
    cells: np.ndarray
    def __init__(self, corpus: Corpus, cells: Any) -> None: ...
    def __len__(self) -> int: ...
    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray: ...
    def to_arrow(self) -> pa.Array: ...
    def table(self, name: str = "obs", columns: Optional[Sequence[str]] = None, *, format: TableFormat = "arrow") -> Any: ...
    @property
    def obs(self) -> pa.Table: ...
    def loader(self, sampler: SamplerName = "random", **settings: Any) -> Loader: ...
    def to_hf_iterable(
        self, sampler: SamplerName = "random", *, num_shards: int = 64, epoch: int = 0, **settings: Any
    ) -> Any: ...

class Loader:
    """The defaults shown are the library's; a keyword not given takes the library default."""

    corpus: Corpus
    sampler: str
    def __init__(
        self,
        corpus: Union[Corpus, PathLike],
        sampler: SamplerName = "random",
        *,
        cohort: Any = None,
        batch_size: Optional[int] = None,
        drop_last: bool = False,
        seed: int = 0,
        epoch: int = 0,
        position: int = 0,
        rank: int = 0,
        world_size: int = 1,
        worker: int = 0,
        num_workers: int = 1,
        policy: Literal["even", "drop_last", "pad"] = "even",
        shuffle_run: int = 64,
        shuffle_window: int = 64,
        group_size: int = ...,
        label: Optional[str] = None,
        label_mode: Literal["none", "class_balanced", "stratified"] = "none",
        balance: Optional[str] = None,
        level: Optional[int] = None,
        balance_terms: Union[None, PathLike, Sequence[str]] = None,
        ontology: Optional[PathLike] = None,
        regions: Optional[PathLike] = None,
        min_cells: int = 1,
        max_cells: Optional[int] = None,
        block_size: Optional[float] = None,
        stride: Optional[float] = None,
        where: Optional[str] = None,
        blocks_sql: Optional[str] = None,
        regions_sql: Optional[str] = None,
        values: Literal["native", "f32", "f64"] = "native",
        indices: Literal["i32", "native"] = "i32",
        dense: Union[None, str, Sequence[str], Sequence[int]] = None,
        genes: Union[None, PathLike, Sequence[str]] = None,
        tokens: Optional[Literal["rank", "bins"]] = None,
        top_k: int = 2048,
        n_bins: int = 51,
        gene_medians: Optional[PathLike] = None,
        obs: Union[str, Sequence[str]] = (),
        coords: bool = False,
        bounds: bool = False,
        multi_hot: Optional[str] = None,
        multi_hot_level: Optional[int] = None,
        multi_hot_terms: Union[None, PathLike, Sequence[str]] = None,
        threads: int = ...,
        prefetch: int = ...,
        read_ahead: int = ...,
    ) -> None: ...
    genes_present: Optional[Dict[str, Any]]
    balance: Optional[Dict[str, Any]]
    """With ``balance=``: ``column``, ``ontology``, ``cut``, ``classes`` (each ``class``,
    ``label``, ``cells``, ``weight``, ``probability``), ``cells``, ``draws``, ``own_label``,
    ``left_out_null``, ``left_out_outside``, ``effective_classes``,
    ``effective_classes_unbalanced``."""
    multi_hot_terms: Optional[List[str]]
    """With ``multi_hot=``: the term ids of :attr:`Batch.multi_hot`'s columns, in order."""
    multi_hot_labels: Optional[List[str]]
    @property
    def settings(self) -> Dict[str, Any]: ...
    @property
    def epoch(self) -> int: ...
    def set_epoch(self, epoch: int) -> None: ...
    @property
    def epoch_len(self) -> int: ...
    @property
    def n_items(self) -> int: ...
    def __len__(self) -> int: ...
    def state_dict(self) -> Dict[str, int]: ...
    def load_state_dict(self, state: Dict[str, int]) -> None: ...
    @property
    def schema(self) -> pa.Schema: ...
    def __iter__(self) -> Iterator[Batch]: ...

ValuesType = Literal["f32", "f64", "native"]

class Batch:
    n_genes: int
    @property
    def record_batch(self) -> pa.RecordBatch: ...
    dense_genes: Optional[np.ndarray]
    def __arrow_c_array__(self, requested_schema: Any = None) -> Any: ...
    def __arrow_c_schema__(self) -> Any: ...
    def __len__(self) -> int: ...
    @property
    def num_rows(self) -> int: ...
    @property
    def is_dense(self) -> bool: ...
    def column(self, name: str) -> pa.Array: ...
    @property
    def cells(self) -> np.ndarray: ...
    @property
    def groups(self) -> Optional[np.ndarray]: ...
    @property
    def indptr(self) -> np.ndarray: ...
    @property
    def indices(self) -> np.ndarray: ...
    @property
    def values(self) -> np.ndarray: ...
    @property
    def dense(self) -> np.ndarray: ...
    @property
    def is_tokens(self) -> bool: ...
    @property
    def tokens(self) -> np.ndarray:
        """``(num_rows, top_k)`` int32: corpus gene ids, or vocabulary positions with
        ``genes=``; -1 in padding."""
    @property
    def token_values(self) -> np.ndarray: ...
    @property
    def attention_mask(self) -> np.ndarray: ...
    @property
    def multi_hot(self) -> np.ndarray:
        """``(num_rows, n_terms)`` uint8: each cell's term and its ancestors."""
    @property
    def obs(self) -> pa.Table: ...
    def to_arrow(self) -> pa.RecordBatch: ...
    def to_pyarrow(self) -> pa.RecordBatch:
        """Deprecated: ``to_arrow()``."""
    def to_polars(self) -> Any:
        """A ``polars.DataFrame`` over the same buffers."""
    def to_scipy(self, copy: bool = False, values: ValuesType = "f32") -> Any:
        """A ``scipy.sparse.csr_matrix``."""
    def to_numpy(self, values: ValuesType = "f32") -> np.ndarray: ...
    def to_torch(self, dense: Optional[bool] = None, values: ValuesType = "f32") -> Any:
        """A ``torch.Tensor`` (sparse CSR, or dense over the gene subset)."""
