"""The Rust extension module (use the `cellarrow` package API instead)."""

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

__version__: str

class CellarrowError(Exception): ...
class InvalidInputError(CellarrowError, ValueError): ...
class CellarrowIOError(CellarrowError, OSError): ...
class CellarrowIndexError(CellarrowError, IndexError): ...
class CellarrowTypeError(CellarrowError, TypeError): ...

class Corpus:
    def __init__(self, path: str) -> None: ...
    path: str
    n_cells: int
    n_genes: int
    nnz: int
    manifest_json: str
    def parts(self) -> List[Tuple[str, int, int]]: ...
    def read_table(self, name: str, columns: Optional[Sequence[str]] = None) -> Any: ...
    def gene_names(self) -> List[str]: ...
    def matrix(self) -> Any: ...
    def query(self, sql: str) -> Any: ...
    def cohort(self, sql: str) -> Any: ...
    def cohort_where(self, predicate: str) -> Any: ...
    def gather_csr(self, cells: bytes, signed: bool = False) -> Tuple[bytes, bytes, bytes]: ...

class Loader:
    """A keyword not given takes the library's default (``...`` here)."""

    def __init__(
        self,
        corpus: Corpus,
        cells: Any = None,
        *,
        sampler: str = ...,
        batch_size: Optional[int] = ...,
        drop_last: bool = ...,
        seed: int = ...,
        epoch: int = ...,
        position: int = ...,
        rank: int = ...,
        world_size: int = ...,
        worker: int = ...,
        num_workers: int = ...,
        policy: str = ...,
        shuffle_run: int = ...,
        shuffle_window: int = ...,
        group_size: int = ...,
        label: Optional[str] = ...,
        label_mode: str = ...,
        balance: Optional[str] = ...,
        level: Optional[int] = ...,
        balance_terms: Union[None, str, Sequence[str]] = ...,
        ontology: Optional[str] = ...,
        regions: Optional[str] = ...,
        min_cells: int = ...,
        max_cells: Optional[int] = ...,
        block_size: Optional[float] = ...,
        stride: Optional[float] = ...,
        where: Optional[str] = ...,
        blocks_sql: Optional[str] = ...,
        regions_sql: Optional[str] = ...,
        values: str = ...,
        indices: str = ...,
        dense: Optional[Sequence[Any]] = ...,
        genes: Union[None, str, Sequence[str]] = ...,
        tokens: Optional[str] = ...,
        top_k: int = ...,
        n_bins: int = ...,
        gene_medians: Optional[str] = ...,
        obs: Sequence[str] = ...,
        coords: bool = ...,
        bounds: bool = ...,
        multi_hot: Optional[str] = ...,
        multi_hot_level: Optional[int] = ...,
        multi_hot_terms: Union[None, str, Sequence[str]] = ...,
        threads: int = ...,
        prefetch: int = ...,
        read_ahead: int = ...,
    ) -> None: ...
    @staticmethod
    def setting_names() -> List[str]: ...
    @staticmethod
    def default_settings() -> Dict[str, Any]: ...
    @staticmethod
    def check_settings(**settings: Any) -> None: ...
    @staticmethod
    def front_end_defaults(name: str) -> Dict[str, Any]: ...
    settings: Dict[str, Any]
    epoch_len: int
    n_items: int
    start_position: int
    items_per_batch: int
    grouped: bool
    dense_width: int
    dense_genes: List[int]
    n_genes: int
    vocab_overlap: Optional[Tuple[int, int, List[str]]]
    multi_hot_terms: Optional[List[str]]
    multi_hot_labels: Optional[List[str]]
    balance: Optional[Dict[str, Any]]
    n_batches: int
    batches_done: int
    def empty_batch(self) -> Any: ...
    def __iter__(self) -> "Loader": ...
    def __next__(self) -> Any: ...
    def next_into(self, memory: Any) -> Optional[Tuple[Any, int]]: ...

def locate_ontology(spec: str, directory: Optional[str] = None) -> str: ...
def shard_len(epoch_len: int, rank: int, world_size: int, worker: int = 0, num_workers: int = 1, policy: str = "even") -> int: ...

_Input = Tuple[str, str, Dict[str, str]]

def resolve_inputs(paths: Sequence[str]) -> List[_Input]: ...
def plan_genes(
    inputs: Sequence[_Input],
    *,
    out: Optional[str] = None,
    layer: Optional[str] = None,
    raw: bool = False,
    gene_column: Optional[str] = None,
    gene_key: str = "id",
    gene_order: Optional[str] = None,
    duplicate_genes: str = "error",
    threads: int = 0,
) -> List[str]: ...
def convert(
    inputs: Sequence[_Input],
    output: str,
    *,
    layer: Optional[str] = None,
    raw: bool = False,
    gene_column: Optional[str] = None,
    gene_key: str = "id",
    gene_order: Optional[str] = None,
    duplicate_genes: str = "error",
    obs_columns: Optional[Sequence[str]] = None,
    ontology: Sequence[str] = ...,
    spatial_key: Optional[str] = None,
    part_cells: Optional[int] = None,
    overwrite: bool = False,
    threads: int = 0,
) -> str: ...
def merge(
    inputs: Sequence[str],
    output: str,
    *,
    on_duplicate: str = "error",
    overwrite: bool = False,
    threads: int = 0,
) -> str: ...
def publish(local: str, url: str, *, overwrite: bool = False, check_only: bool = False) -> str: ...
