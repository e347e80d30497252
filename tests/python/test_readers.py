"""The corpus opens without cellarrow: pyarrow, polars, DuckDB and Hugging Face `datasets`
read every table (a dataset of Parquet files, `TABLE/*.parquet`) and matrix part and agree
with each other, also on a corpus grown by appends; pyarrow maps parts with no copy."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import anndata as ad
import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from conftest import DATA
from corpus_check import assert_sample_matches, read_corpus, read_part

SOURCES = ["scanpy_pbmc68k_reduced.modern.h5ad", "squidpy_visium_mouse_brain_49spots.h5ad"]
PART_CELLS = 300


def read(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ad.read_h5ad(path)


@pytest.fixture(scope="module")
def corpus_dir(convert_cached) -> Path:
    return convert_cached("readers", *(DATA / s for s in SOURCES), "--part-cells", PART_CELLS)


@pytest.fixture(scope="module")
def adatas():
    return {s[: -len(".h5ad")]: read(DATA / s) for s in SOURCES}


def files(corpus_dir: Path, table: str) -> str:
    """The glob of a table's files, as a user types it for polars and DuckDB."""
    return f"{corpus_dir}/{table}/*.parquet"


def parts(corpus_dir: Path) -> list[Path]:
    return sorted((corpus_dir / "matrix").glob("part-*.arrow"))


def test_parts_split_and_round_trip(corpus_dir, adatas):
    corpus = read_corpus(corpus_dir)
    listed = [corpus_dir / p["path"] for p in corpus.manifest["matrix"]["parts"]]
    assert listed == parts(corpus_dir)
    expected_parts = sum(-(-a.n_obs // PART_CELLS) for a in adatas.values())
    assert len(listed) == expected_parts, "a part never spans two samples and holds at most part_cells cells"
    for p in corpus.manifest["matrix"]["parts"]:
        assert p["n_cells"] <= PART_CELLS
    for sid, a in adatas.items():
        assert_sample_matches(corpus, sid, a)


def test_table_schemas_follow_the_format(corpus_dir):
    obs = pq.read_table(corpus_dir / "obs").schema
    want = {
        "cell": pa.uint64(),
        "obs_name": pa.string(),
        "source_row": pa.uint64(),
        "nnz": pa.uint32(),
        "total": pa.float64(),
        "x": pa.float64(),
        "y": pa.float64(),
    }
    assert obs.names[:4] == ["cell", "sample_id", "obs_name", "source_row"]
    for name, t in want.items():
        assert obs.field(name).type == t, (name, obs.field(name).type)
    st = obs.field("sample_id").type
    assert st == pa.string() or (pa.types.is_dictionary(st) and st.value_type == pa.string())
    assert pa.types.is_dictionary(obs.field("bulk_labels").type), "categoricals stay dictionary-encoded"
    genes = pq.read_table(corpus_dir / "genes").schema
    assert [genes.field(n).type for n in ("gene", "name")] == [pa.uint32(), pa.string()]
    counts = pq.read_table(corpus_dir / "gene_counts").schema
    assert [counts.field(n).type for n in ("gene", "n_samples", "n_cells")] == [
        pa.uint32(),
        pa.uint32(),
        pa.uint64(),
    ]
    samples = pq.read_table(corpus_dir / "samples").schema
    for col in (
        "sample_id",
        "source_path",
        "source_sha256",
        "first_cell",
        "n_cells",
        "nnz",
        "matrix_source",
        "n_source_genes",
        "n_genes_outside_vocab",
        "nnz_outside_vocab",
        "spatial_dims",
    ):
        assert col in samples.names, col


def assert_same_tables(corpus_dir: Path, table: str) -> pa.Table:
    """pyarrow (a directory, a dataset), polars and DuckDB (a glob) read the files of `table` as
    one table with the same rows, columns and values; returns pyarrow's."""
    t = pq.read_table(corpus_dir / table)
    assert pads.dataset(corpus_dir / table, format="parquet").to_table().equals(t)
    path = files(corpus_dir, table)
    df = pl.read_parquet(path)
    assert df.height == t.num_rows
    assert df.columns == t.column_names
    for name in t.column_names:
        col = t.column(name)
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        assert df[name].cast(pl.String).to_list() == pl.from_arrow(col).cast(pl.String).to_list(), name
        assert df[name].to_list() == col.to_pylist(), name
    n = duckdb.sql(f"SELECT count(*) FROM '{path}'").fetchall()[0][0]
    assert n == t.num_rows
    cols = duckdb.sql(f"DESCRIBE SELECT * FROM '{path}'").fetchall()
    assert [c[0] for c in cols] == t.column_names
    return t


@pytest.mark.parametrize("table", ["obs", "genes", "samples", "gene_counts"])
def test_polars_and_duckdb_read_the_tables_like_pyarrow(table, corpus_dir):
    assert_same_tables(corpus_dir, table)


def test_duckdb_group_by_agrees_with_anndata(corpus_dir, adatas):
    obs = files(corpus_dir, "obs")
    rows = duckdb.sql(
        f"SELECT sample_id, count(*) AS n, sum(nnz) AS nnz FROM '{obs}' GROUP BY sample_id ORDER BY sample_id"
    ).fetchall()
    samples = pq.read_table(corpus_dir / "samples").to_pylist()
    want = sorted((s["sample_id"], s["n_cells"]) for s in samples)
    assert [(r[0], r[1]) for r in rows] == want
    assert {r[0]: r[1] for r in rows} == {k: a.n_obs for k, a in adatas.items()}
    pbmc = adatas["scanpy_pbmc68k_reduced.modern"]
    got = dict(
        duckdb.sql(
            f"SELECT bulk_labels, count(*) FROM '{obs}' WHERE bulk_labels IS NOT NULL GROUP BY bulk_labels"
        ).fetchall()
    )
    want = {str(k): int(v) for k, v in pbmc.obs["bulk_labels"].value_counts().items() if v > 0}
    assert got == want
    # The same question in polars.
    pl_counts = (
        pl.read_parquet(obs)
        .filter(pl.col("bulk_labels").is_not_null())
        .group_by("bulk_labels")
        .len()
        .to_dicts()
    )
    assert {str(r["bulk_labels"]): r["len"] for r in pl_counts} == want
    spatial = duckdb.sql(f"SELECT count(*) FROM '{obs}' WHERE x IS NOT NULL AND y IS NOT NULL").fetchall()[0][0]
    assert spatial == adatas["squidpy_visium_mouse_brain_49spots"].n_obs


def test_every_part_reads_the_same_in_pyarrow_polars_and_datasets(corpus_dir):
    import datasets

    manifest_parts = read_corpus(corpus_dir).manifest["matrix"]["parts"]
    for entry in manifest_parts:
        path = corpus_dir / entry["path"]
        table = pa.Table.from_batches(read_part(path))
        assert table.num_rows == entry["n_cells"]
        lens = pc.list_value_length(table.column("indices")).to_numpy()
        assert int(lens.sum()) == entry["nnz"]
        flat_idx = pc.list_flatten(table.column("indices")).to_numpy()
        flat_val = pc.list_flatten(table.column("values")).to_numpy()

        # polars, over the pyarrow memory-mapped stream.
        with pa.memory_map(str(path)) as src:
            df = pl.from_arrow(pa.ipc.open_stream(src).read_all())
        assert df.height == entry["n_cells"]
        assert np.array_equal(df["indices"].list.len().to_numpy(), lens)
        assert np.array_equal(df["values"].list.len().to_numpy(), lens)
        assert np.array_equal(df["indices"].explode().drop_nulls().to_numpy(), flat_idx)
        assert np.array_equal(df["values"].explode().drop_nulls().to_numpy(), flat_val)

        # Hugging Face datasets opens the stream as it is.
        ds = datasets.Dataset.from_file(str(path))
        assert ds.num_rows == entry["n_cells"]
        assert ds.column_names == ["indices", "values"]
        hf = ds.data.table
        for name in ("indices", "values"):
            assert hf.schema.field(name).type.value_type == table.schema.field(name).type.value_type
            assert np.array_equal(pc.list_value_length(hf.column(name)).to_numpy(), lens)
            flat = pc.list_flatten(hf.column(name)).to_numpy()
            assert np.array_equal(flat, flat_idx if name == "indices" else flat_val)
        for i in (0, ds.num_rows // 2, ds.num_rows - 1):
            row = ds[i]
            assert row["indices"] == table.column("indices")[i].as_py()
            assert row["values"] == table.column("values")[i].as_py()


def test_pyarrow_reads_parts_with_no_copy(corpus_dir):
    path = max(parts(corpus_dir), key=lambda p: p.stat().st_size)
    size = path.stat().st_size
    assert size > 1 << 20, f"test setup: the largest part is only {size} bytes"
    with pa.memory_map(str(path)) as src:
        base = src.read_buffer(size).address
        src.seek(0)
        before = pa.total_allocated_bytes()
        table = pa.ipc.open_stream(src).read_all()
        grown = pa.total_allocated_bytes() - before
        assert grown < size // 100, f"reading a {size}-byte part allocated {grown} bytes"
        n_buffers = 0
        for name in ("indices", "values"):
            for chunk in table.column(name).chunks:
                for buf in chunk.buffers() + chunk.values.buffers():
                    if buf is None or buf.size == 0:
                        continue
                    n_buffers += 1
                    assert base <= buf.address < base + size, f"{name}: a buffer lies outside the mapping"
                    assert (buf.address - base) % 64 == 0, f"{name}: a buffer is not 64-byte aligned"
        assert n_buffers >= 4
        del table


@pytest.fixture(scope="module")
def appended_dir(run_cellarrow, session_tmp) -> Path:
    """pbmc68k converted, then the Visium file and the chr21 counts appended one at a time:
    every table is a dataset of several files."""
    out = session_tmp / "readers-appended.corpus"
    if not (out / "manifest.json").exists():
        run_cellarrow("convert", DATA / SOURCES[0], "-o", out, "--quiet")
        run_cellarrow("append", out, DATA / SOURCES[1], "--quiet")
        run_cellarrow("append", out, DATA / "scanpy_10x_v3_chr21_counts.h5ad", "--quiet")
    return out


@pytest.mark.parametrize("table", ["obs", "genes", "samples", "gene_counts"])
def test_every_reader_reads_an_appended_table_as_one(table, appended_dir, adatas):
    import json

    manifest = json.loads((appended_dir / "manifest.json").read_text())
    listed = manifest["tables"][table]
    on_disk = sorted(str(p.relative_to(appended_dir)) for p in (appended_dir / table).glob("*.parquet"))
    assert [f["path"] for f in listed] == on_disk
    if table != "genes":
        # genes gets a file per append too, unless an append gave an existing gene a new key
        # or ortholog: then the table is written again as one file (docs/FORMAT.md).
        assert len(listed) >= 2, f"{table}: one file per conversion or append"
    t = assert_same_tables(appended_dir, table)
    assert t.num_rows == sum(f["rows"] for f in listed)
    total = {"obs": manifest["n_cells"], "genes": manifest["n_genes"], "samples": len(manifest["samples"])}
    if table in total:
        assert t.num_rows == total[table]
    if table == "obs":
        # Rows in cell order across the files; every sample's cells where the manifest says.
        assert t.column("cell").to_pylist() == list(range(manifest["n_cells"]))
        counts = dict(
            duckdb.sql(f"SELECT sample_id, count(*) FROM '{files(appended_dir, 'obs')}' GROUP BY sample_id").fetchall()
        )
        assert counts == {s["sample_id"]: s["n_cells"] for s in manifest["samples"]}
        assert counts[SOURCES[1][: -len(".h5ad")]] == adatas[SOURCES[1][: -len(".h5ad")]].n_obs
    if table == "genes":
        assert t.column("gene").to_pylist() == list(range(manifest["n_genes"]))


def test_datafusion_reads_an_appended_corpus_like_duckdb(appended_dir, run_cellarrow, session_tmp):
    """cellarrow's SQL (DataFusion over the listed files) agrees with DuckDB over the globs."""
    out = session_tmp / "appended-query.csv"
    sql = "SELECT sample_id, count(*) AS n, sum(nnz) AS nnz, count(x) AS spatial FROM obs GROUP BY sample_id ORDER BY sample_id"
    run_cellarrow("query", appended_dir, sql, "--format", "csv", "-o", out)
    ours = pl.read_csv(out).rows()
    theirs = duckdb.sql(sql.replace("FROM obs", f"FROM '{files(appended_dir, 'obs')}'")).fetchall()
    assert ours == [tuple(r) for r in theirs]
    out = session_tmp / "appended-genes.csv"
    run_cellarrow("query", appended_dir, "SELECT count(*) AS n, sum(n_samples) AS s, sum(n_cells) AS c FROM genes", "--format", "csv", "-o", out)
    n, s, c = pl.read_csv(out).row(0)
    g = duckdb.sql(
        f"SELECT count(DISTINCT gene), sum(n_samples), sum(n_cells) FROM '{files(appended_dir, 'gene_counts')}'"
    ).fetchall()[0]
    assert n == duckdb.sql(f"SELECT count(*) FROM '{files(appended_dir, 'genes')}'").fetchall()[0][0]
    assert (s, c) == (g[1], g[2])


def cold_part_rows(path: Path, index_width: int, value_dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A cold part read with pyarrow and numpy alone, as README shows: per chunk, join the byte
    planes of the deltas and the values, then the prefix sums of each cell's deltas."""
    reader = pa.ipc.open_file(pa.memory_map(str(path)))
    lengths, genes, values = [], [], []
    for k in range(reader.num_record_batches):
        chunk = reader.get_batch(k)

        def joined(name, width, dtype):
            planes = [pc.list_flatten(chunk.column(f"{name}_byte{p}")).to_numpy() for p in range(width)]
            return np.stack(planes, axis=1).copy().view(np.dtype(dtype).newbyteorder("<")).ravel()

        n = pc.list_value_length(chunk.column(0)).to_numpy()
        total = np.cumsum(joined("index_deltas", index_width, f"u{index_width}").astype(np.int64))
        # Each cell's ids: the running total less the total before the cell's first delta.
        ids = total - np.repeat(np.r_[0, total][np.cumsum(n) - n], n)
        lengths.append(n)
        genes.append(ids)
        values.append(joined("values", np.dtype(value_dtype).itemsize, value_dtype))
    return np.concatenate(lengths), np.concatenate(genes), np.concatenate(values)


def test_a_cold_part_reads_with_pyarrow_and_numpy_alone(convert_cached, corpus_dir):
    cold = convert_cached(
        "readers-cold", *(DATA / s for s in SOURCES), "--part-cells", PART_CELLS, "--layout", "cold", "--chunk-cells", 64
    )
    hot_parts = read_corpus(corpus_dir).manifest["matrix"]["parts"]
    cold_parts = json.loads((cold / "manifest.json").read_text())["matrix"]["parts"]
    assert [p["n_cells"] for p in cold_parts] == [p["n_cells"] for p in hot_parts]
    for h, c in zip(hot_parts, cold_parts):
        assert c["layout"] == "cold"
        table = pa.Table.from_batches(read_part(corpus_dir / h["path"]))
        width = table.schema.field("indices").type.value_type.bit_width // 8
        dtype = table.schema.field("values").type.value_type.to_pandas_dtype()
        lengths, genes, values = cold_part_rows(cold / c["path"], width, dtype)
        assert np.array_equal(lengths, pc.list_value_length(table.column("indices")).to_numpy())
        assert np.array_equal(genes, pc.list_flatten(table.column("indices")).to_numpy().astype(np.int64))
        assert np.array_equal(values, pc.list_flatten(table.column("values")).to_numpy())
