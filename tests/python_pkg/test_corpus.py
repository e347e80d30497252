"""Corpus tables through pyarrow and polars, SQL and cohorts."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import cellarrow


@pytest.fixture(scope="module")
def corpus(synth):
    return cellarrow.open(synth[0])


def test_tables_equal_what_pyarrow_and_polars_read_from_the_files(corpus):
    for name in ("obs", "genes", "samples", "gene_counts"):
        ours = corpus.table(name)
        files = pq.read_table(corpus.path / name)
        # genes as served adds the summed gene counts to the identity files' columns.
        assert ours.select(files.column_names).equals(files)
        df = corpus.table(name, format="polars")
        assert isinstance(df, pl.DataFrame)
        assert df.select(files.column_names).equals(pl.read_parquet(f"{corpus.path}/{name}/*.parquet"))
        assert corpus.scan(name).collect().equals(df)
        assert corpus.table_paths(name) == sorted((corpus.path / name).glob("*.parquet"))
    assert corpus.genes.column_names == ["gene", "name", "n_samples", "n_cells"]
    assert corpus.obs.num_rows == corpus.n_cells == 220
    assert corpus.genes.column("name").to_pylist() == corpus.gene_names
    assert corpus.samples.column("sample_id").to_pylist() == ["sa", "sb"]


def test_query_agrees_with_polars_and_pyarrow(corpus):
    q = corpus.query(
        "SELECT sample_id, cell_type, COUNT(*) AS n, SUM(nnz) AS nnz FROM obs "
        "GROUP BY sample_id, cell_type ORDER BY sample_id, cell_type"
    )
    assert isinstance(q, pa.Table)
    got = pl.DataFrame(q).with_columns(pl.col("sample_id", "cell_type").cast(pl.String))
    expect = (
        corpus.scan("obs")
        .group_by("sample_id", "cell_type")
        .agg(pl.len().alias("n"), pl.col("nnz").cast(pl.Int64).sum().alias("nnz"))
        .with_columns(pl.col("sample_id", "cell_type").cast(pl.String))
        .sort("sample_id", "cell_type")
        .collect()
    )
    assert got.select("sample_id", "cell_type", "n").rows() == expect.select("sample_id", "cell_type", "n").rows()
    assert [int(x) for x in got["nnz"]] == [int(x) for x in expect["nnz"]]
    obs = pq.read_table(corpus.path / "obs")
    big = pa.compute.sum(pa.compute.greater(obs.column("nnz"), 5)).as_py()
    assert corpus.query("SELECT COUNT(*) AS n FROM obs WHERE nnz > 5", format="polars")["n"][0] == big


def test_cohort_and_where_select_the_cells_of_the_predicate(corpus):
    obs = corpus.table("obs", ["cell", "cell_type"], format="polars")
    expect = obs.filter(pl.col("cell_type").cast(pl.String) == "T")["cell"].to_numpy()
    t = corpus.where("cell_type = 'T'")
    np.testing.assert_array_equal(t.cells, np.sort(expect))
    t2 = corpus.cohort("SELECT cell, nnz FROM obs WHERE cell_type = 'T'")
    np.testing.assert_array_equal(t2.cells, t.cells)
    assert t.table("obs", ["cell_type"]).column(0).combine_chunks().dictionary_decode().to_pylist() == ["T"] * len(t)
    with pytest.raises(Exception, match="cell"):
        corpus.cohort("SELECT nnz FROM obs")


def test_matrix_table_is_the_mapped_parts(corpus):
    m = corpus.matrix
    assert m.num_rows == corpus.n_cells
    assert m.column_names == ["indices", "values"]
    n = sum(len(x) for x in m.column("values").to_pylist())
    assert n == corpus.nnz


def test_bad_inputs_are_clear_errors(corpus, tmp_path):
    with pytest.raises(Exception, match="manifest"):
        cellarrow.open(tmp_path)
    with pytest.raises(ValueError, match="sampler"):
        corpus.loader("nope")
    with pytest.raises(ValueError, match="block_size"):
        len(corpus.loader("blocks"))
    with pytest.raises(ValueError, match="no column"):
        len(corpus.loader(obs=["nope"]))
    with pytest.raises(ValueError, match="rank"):
        len(corpus.loader(rank=2, world_size=2))
