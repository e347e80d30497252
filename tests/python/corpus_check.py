"""Reading a corpus with pyarrow only, and comparing it with the AnnData source.

Nothing here uses cellarrow: the corpus is read as plain Parquet and Arrow IPC streams, the
source with the real `anndata` package.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

RESERVED_OBS = ["cell", "sample_id", "obs_name", "source_row", "nnz", "total", "x", "y", "z"]

ARROW_VALUE_TYPES = {
    "uint16": pa.uint16(),
    "uint32": pa.uint32(),
    "float32": pa.float32(),
    "float64": pa.float64(),
}


@dataclass
class Corpus:
    root: Path
    manifest: dict
    genes: pa.Table
    samples: pa.Table
    obs: pa.Table
    matrix: sp.csr_matrix  # (n_cells, n_genes), float64 values, exactly as stored
    index_arrow_type: pa.DataType
    value_arrow_type: pa.DataType

    def gene_names(self) -> list[str]:
        return self.genes.column("name").to_pylist()

    def gene_ids(self) -> dict[str, int]:
        names = self.gene_names()
        ids = self.genes.column("gene").to_pylist()
        return dict(zip(names, ids))

    def sample_row(self, sample_id: str) -> dict:
        rows = [r for r in self.samples.to_pylist() if r["sample_id"] == sample_id]
        assert len(rows) == 1, f"samples.parquet has {len(rows)} rows for {sample_id!r}"
        return rows[0]

    def sample_obs(self, sample_id: str) -> pa.Table:
        row = self.sample_row(sample_id)
        first, n = row["first_cell"], row["n_cells"]
        return self.obs.slice(first, n)

    def sample_ids(self) -> list[str]:
        return self.samples.column("sample_id").to_pylist()


def read_part(path: Path) -> list[pa.RecordBatch]:
    """Record batches of a matrix part, memory-mapped."""
    with pa.ipc.open_stream(pa.memory_map(str(path))) as reader:
        return list(reader)


def list_column_to_csr_pieces(col: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets starting at 0, flat child values) of a List array, honouring slicing."""
    offsets = np.asarray(col.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
    start, end = int(offsets[0]), int(offsets[-1])
    child = col.values.slice(start, end - start)
    return offsets - start, child.to_numpy(zero_copy_only=False)


def read_table(root: Path, manifest: dict, name: str) -> pa.Table:
    """A corpus table with pyarrow alone: the one file of format 1, the directory of files of
    format 2; genes of format 2 gets the summed ``gene_counts`` as ``n_samples``/``n_cells``."""
    if manifest.get("format_version", 1) < 2:
        return pq.read_table(root / f"{name}.parquet")
    t = pq.read_table(root / name)
    if name == "genes":
        counts = pq.read_table(root / "gene_counts")
        n_samples = np.zeros(t.num_rows, dtype=np.uint32)
        n_cells = np.zeros(t.num_rows, dtype=np.uint64)
        genes = counts.column("gene").to_numpy()
        np.add.at(n_samples, genes, counts.column("n_samples").to_numpy())
        np.add.at(n_cells, genes, counts.column("n_cells").to_numpy())
        t = t.append_column("n_samples", pa.array(n_samples)).append_column("n_cells", pa.array(n_cells))
    return t


def read_corpus(root: Path) -> Corpus:
    root = Path(root)
    manifest = json.loads((root / "manifest.json").read_text())
    genes = read_table(root, manifest, "genes")
    samples = read_table(root, manifest, "samples")
    obs = read_table(root, manifest, "obs")
    n_cells, n_genes = manifest["n_cells"], manifest["n_genes"]

    indptr = [np.zeros(1, dtype=np.int64)]
    indices, values = [], []
    nnz_so_far = 0
    next_cell = 0
    for part in manifest["matrix"]["parts"]:
        assert part["first_cell"] == next_cell, f"parts are not contiguous at {part}"
        batches = read_part(root / part["path"])
        cells = 0
        # Types are per part in format 2 (an append or a merge may add wider parts).
        index_type = value_type = None
        for b in batches:
            assert b.schema.names == ["indices", "values"], b.schema
            it = b.schema.field("indices").type.value_type
            vt = b.schema.field("values").type.value_type
            index_type = index_type or it
            value_type = value_type or vt
            assert it == index_type and vt == value_type, "every batch has the same schema"
            assert b.num_rows <= manifest["matrix"]["batch_rows"], "a batch holds at most batch_rows cells"
            for name in ("indices", "values"):
                assert b.column(name).offset == 0 and b.column(name).offsets[0].as_py() == 0, (
                    f"{part['path']}: list offsets of a batch start at 0"
                )
                assert b.column(name).null_count == 0
            io, iv = list_column_to_csr_pieces(b.column("indices"))
            vo, vv = list_column_to_csr_pieces(b.column("values"))
            assert np.array_equal(io, vo), "indices and values share offsets"
            indptr.append(io[1:] + nnz_so_far)
            indices.append(iv.astype(np.int64))
            values.append(vv.astype(np.float64))
            nnz_so_far += len(iv)
            cells += b.num_rows
        assert cells == part["n_cells"], f"{part['path']}: {cells} cells, manifest says {part['n_cells']}"
        next_cell += cells
    assert next_cell == n_cells, f"parts hold {next_cell} cells, manifest says {n_cells}"
    indptr = np.concatenate(indptr)
    indices = np.concatenate(indices) if indices else np.zeros(0, dtype=np.int64)
    values = np.concatenate(values) if values else np.zeros(0)
    matrix = sp.csr_matrix((values, indices, indptr), shape=(n_cells, n_genes))
    return Corpus(
        root=root,
        manifest=manifest,
        genes=genes,
        samples=samples,
        obs=obs,
        matrix=matrix,
        index_arrow_type=index_type,
        value_arrow_type=value_type,
    )


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def to_csr64(x) -> sp.csr_matrix:
    """Any AnnData matrix as float64 CSR with explicit zeros removed."""
    if sp.issparse(x):
        m = sp.csr_matrix(x)
    else:
        m = sp.csr_matrix(np.asarray(x))
    m = m.astype(np.float64)
    m.eliminate_zeros()
    return m


def expected_rows(x, var_names, gene_ids: dict[str, int], n_genes: int, source_rows: np.ndarray):
    """The source matrix in corpus coordinates: rows `source_rows`, columns mapped by gene name.

    Genes missing from `gene_ids` (outside a fixed vocabulary) are dropped; columns that map to
    the same gene (duplicate names) are summed; zeros (explicit, or from sums) are dropped.
    """
    m = to_csr64(x)[np.asarray(source_rows, dtype=np.int64)]
    col_map = np.array([gene_ids.get(str(g), -1) for g in var_names], dtype=np.int64)
    coo = m.tocoo()
    keep = col_map[coo.col] >= 0
    out = sp.csr_matrix(
        (coo.data[keep], (coo.row[keep], col_map[coo.col[keep]])),
        shape=(m.shape[0], n_genes),
    )
    out.sum_duplicates()
    out.eliminate_zeros()
    out.sort_indices()
    return out


def assert_csr_equal(got: sp.csr_matrix, want: sp.csr_matrix, names: list[str], what: str):
    """Exact equality, cell by cell; the first differing cell is named in the failure."""
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    if (
        np.array_equal(got.indptr, want.indptr)
        and np.array_equal(got.indices, want.indices)
        and np.array_equal(got.data, want.data)
    ):
        return
    for r in range(got.shape[0]):
        g = got.indices[got.indptr[r] : got.indptr[r + 1]], got.data[got.indptr[r] : got.indptr[r + 1]]
        w = want.indices[want.indptr[r] : want.indptr[r + 1]], want.data[want.indptr[r] : want.indptr[r + 1]]
        if not (np.array_equal(g[0], w[0]) and np.array_equal(g[1], w[1])):
            gd = dict(zip(g[0].tolist(), g[1].tolist()))
            wd = dict(zip(w[0].tolist(), w[1].tolist()))
            diff = {k: (gd.get(k), wd.get(k)) for k in sorted(set(gd) | set(wd)) if gd.get(k) != wd.get(k)}
            raise AssertionError(
                f"{what}: cell {names[r]!r} (row {r} of the sample) differs; "
                f"{len(diff)} genes as (corpus, anndata): {dict(list(diff.items())[:10])}"
            )
    raise AssertionError(f"{what}: CSR structure differs")


def assert_indices_strictly_increasing(m: sp.csr_matrix, what: str):
    d = np.diff(m.indices)
    row_starts = m.indptr[1:-1]
    ok = np.ones(len(d), dtype=bool)
    ok[:] = d > 0
    # Differences across a row boundary do not count.
    boundary = row_starts[(row_starts > 0) & (row_starts < len(m.indices))] - 1
    ok[boundary] = True
    assert ok.all(), f"{what}: gene ids not strictly increasing within a cell"


def expected_value_type(values: np.ndarray) -> str:
    """The narrowest lossless value type of FORMAT.md, derived from the source values."""
    v = np.asarray(values, dtype=np.float64)
    v = v[v != 0]
    if len(v) == 0:
        return "uint16"
    if np.all(np.floor(v) == v) and v.min() >= 0:
        if v.max() <= 65535:
            return "uint16"
        if v.max() <= 2**32 - 1:
            return "uint32"
    if np.all(v.astype(np.float32).astype(np.float64) == v):
        return "float32"
    return "float64"


def source_values(x) -> np.ndarray:
    """The stored non-zero values of a source matrix, as float64."""
    return to_csr64(x).data


def obs_column_name(name: str) -> str:
    return f"obs_{name}" if name in RESERVED_OBS else name


def expected_obs_values(series: pd.Series, rows: np.ndarray) -> list:
    """A source obs column as Python values with None for missing, in corpus order."""
    s = series.iloc[rows]
    out = []
    if isinstance(s.dtype, pd.CategoricalDtype):
        for v in s.astype(object):
            out.append(None if (v is None or (isinstance(v, float) and math.isnan(v))) else str(v))
        return out
    for v in s.astype(object):
        if v is pd.NA or v is None or (isinstance(v, float) and math.isnan(v)):
            out.append(None)
        elif isinstance(v, (np.bool_, bool)):
            out.append(bool(v))
        elif isinstance(v, (np.integer, int)):
            out.append(int(v))
        elif isinstance(v, (np.floating, float)):
            out.append(float(v))
        else:
            out.append(str(v))
    return out


def corpus_obs_values(col: pa.ChunkedArray) -> list:
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    out = []
    for v in col.to_pylist():
        if isinstance(v, float) and math.isnan(v):
            out.append(None)
        else:
            out.append(v)
    return out


# The shape of a stable gene id (Ensembl, FlyBase, WormBase) with an optional version.
_GENE_ID = re.compile(r"^(ENS[A-Z]{0,6}G\d{11}|FBgn\d{7}|WBGene\d{8})(\.\d+)?$")
_ID_COLUMNS = ("gene_ids", "gene_id", "ensembl_id", "ensembl_ids", "gene_ensembl_id", "feature_id", "gene_stable_id")


def gene_keys(adata, raw: bool = False) -> list:
    """The corpus gene name of each var row under the default ``--gene-key id`` (docs/FORMAT.md,
    Gene identity): the stable id without its version, from var_names or a gene_ids-style
    column, where the row has one; else its var_name."""
    var = adata.raw.var if raw else adata.var
    names = [str(g) for g in (adata.raw.var_names if raw else adata.var_names)]
    columns = [[str(v) for v in var[c]] for c in _ID_COLUMNS if c in var.columns]
    keys = []
    for j, name in enumerate(names):
        m = next((m for m in (_GENE_ID.match(c[j].strip()) for c in [names, *columns]) if m), None)
        keys.append(m.group(1) if m else name.strip())
    return keys


_SYMBOL_COLUMNS = ("gene_symbols", "gene_symbol", "feature_name", "gene_name", "gene_names", "symbol", "symbols", "gene_short_name")


def gene_identities(adata) -> list:
    """(id without version or None, symbol or None) of each var row (docs/FORMAT.md)."""
    names = [str(g).strip() for g in adata.var_names]
    id_cols = [[str(v).strip() for v in adata.var[c]] for c in _ID_COLUMNS if c in adata.var.columns]
    sym_cols = [[str(v).strip() for v in adata.var[c]] for c in _SYMBOL_COLUMNS if c in adata.var.columns]
    out = []
    for j, name in enumerate(names):
        m = next((m for m in (_GENE_ID.match(c[j]) for c in [names, *id_cols]) if m), None)
        symbol = next((c[j] for c in [names, *sym_cols] if c[j] and not _GENE_ID.match(c[j])), None)
        out.append((m.group(1) if m else None, symbol))
    return out


def joint_gene_keys(adatas) -> list:
    """The corpus gene name of each var row of each file converted together under the default
    ``--gene-key id``: its id; else, for a gene without one, the id of the one gene of any file
    with its symbol; else its symbol."""
    idents = [gene_identities(a) for a in adatas]
    ids_of_symbol: dict = {}
    for f in idents:
        for gid, sym in f:
            if gid is not None and sym is not None:
                ids_of_symbol.setdefault(sym, set()).add(gid)
    keys = []
    for f in idents:
        k = []
        for gid, sym in f:
            ids = ids_of_symbol.get(sym, set())
            k.append(gid if gid is not None else (next(iter(ids)) if len(ids) == 1 else sym))
        keys.append(k)
    return keys


def assert_sample_matches(
    corpus: Corpus,
    sample_id: str,
    adata,
    x=None,
    var_names=None,
    source: str = "X",
    spatial_key: str | None = "spatial",
    source_path: Path | None = None,
):
    """Every cell of `sample_id` equals the AnnData object: values, obs, counts, coordinates."""
    x = adata.X if x is None else x
    var_names = gene_keys(adata) if var_names is None else list(var_names)
    row = corpus.sample_row(sample_id)
    obs = corpus.sample_obs(sample_id)
    n = adata.n_obs
    assert row["n_cells"] == n, f"{sample_id}: samples.parquet n_cells {row['n_cells']} != {n}"
    assert obs.num_rows == n
    first = row["first_cell"]
    assert obs.column("cell").to_pylist() == list(range(first, first + n))
    assert set(obs.column("sample_id").to_pylist()) == {sample_id}
    src_rows = np.asarray(obs.column("source_row").to_pylist(), dtype=np.int64)
    assert sorted(src_rows.tolist()) == list(range(n)), f"{sample_id}: source_row is not a permutation"
    obs_names = obs.column("obs_name").to_pylist()
    assert obs_names == [str(adata.obs_names[r]) for r in src_rows], f"{sample_id}: obs_name"

    # Values, cell by cell.
    gene_ids = corpus.gene_ids()
    want = expected_rows(x, var_names, gene_ids, len(gene_ids), src_rows)
    got = corpus.matrix[first : first + n]
    got.sort_indices()
    assert_indices_strictly_increasing(corpus.matrix[first : first + n], sample_id)
    assert_csr_equal(got, want, obs_names, f"{sample_id} values")

    # Per-cell nnz and total over all source genes.
    full = to_csr64(x)[src_rows]
    want_nnz = np.diff(full.indptr)
    got_nnz = np.asarray(obs.column("nnz").to_pylist())
    assert np.array_equal(got_nnz, want_nnz), f"{sample_id}: obs.nnz differs from anndata"
    want_total = np.asarray(full.sum(axis=1)).ravel()
    got_total = np.asarray(obs.column("total").to_pylist(), dtype=np.float64)
    scale = np.asarray(abs(full).sum(axis=1)).ravel()
    # Sums of the same values in another order differ only by rounding.
    assert np.all(np.abs(got_total - want_total) <= 1e-12 * scale + 1e-300), f"{sample_id}: obs.total"

    # samples.parquet.
    assert row["nnz"] == want.nnz, f"{sample_id}: samples.nnz {row['nnz']} != {want.nnz}"
    assert row["n_source_genes"] == len(var_names)
    assert row["matrix_source"] == source
    outside = [g for g in var_names if g not in gene_ids]
    assert row["n_genes_outside_vocab"] == len(outside)
    if source_path is not None:
        assert row["source_sha256"] == sha256(source_path)

    # obs columns.
    for name in adata.obs.columns:
        cname = obs_column_name(name)
        assert cname in obs.column_names, f"{sample_id}: obs column {name!r} missing ({obs.column_names})"
        got_v = corpus_obs_values(obs.column(cname))
        want_v = expected_obs_values(adata.obs[name], src_rows)
        assert got_v == want_v, f"{sample_id}: obs column {name!r} differs"
        dtype = adata.obs[name].dtype
        ctype = obs.schema.field(cname).type
        if isinstance(dtype, pd.CategoricalDtype):
            assert pa.types.is_dictionary(ctype), f"{name}: categorical stored as {ctype}"
        elif pd.api.types.is_bool_dtype(dtype):
            assert pa.types.is_boolean(ctype), f"{name}: bool stored as {ctype}"
        elif pd.api.types.is_integer_dtype(dtype):
            assert pa.types.is_integer(ctype), f"{name}: integer stored as {ctype}"
        elif pd.api.types.is_float_dtype(dtype):
            assert pa.types.is_floating(ctype), f"{name}: float stored as {ctype}"

    # Coordinates.
    dims = 0
    if spatial_key is not None and spatial_key in adata.obsm:
        coords = np.asarray(adata.obsm[spatial_key], dtype=np.float64)
        dims = coords.shape[1]
        for d, axis in enumerate("xyz"[:dims]):
            got_c = np.asarray(obs.column(axis).to_pylist(), dtype=np.float64)
            assert np.array_equal(got_c, coords[src_rows, d], equal_nan=True), f"{sample_id}: {axis}"
    else:
        assert src_rows.tolist() == list(range(n)), f"{sample_id}: non-spatial cells keep source order"
        for axis in "xyz":
            if axis in obs.column_names:
                assert obs.column(axis).null_count == n, f"{sample_id}: {axis} not null"
    assert row["spatial_dims"] == dims
    return want
