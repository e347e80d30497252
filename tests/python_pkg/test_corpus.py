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
    identity = ["id", "id_version", "symbol", "species", "ortholog_id", "ortholog_symbol", "ortholog_species", "matched_by"]
    assert corpus.genes.column_names == ["gene", "name", *identity, "n_samples", "n_cells"]
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


def test_an_appended_corpus_with_parts_of_two_value_types_serves_one(workdir):
    """Integer counts, then log-normalised values appended: the parts keep uint16 and float32,
    and get(), the Arrow matrix view and a loader serve every cell in float32, equal to the
    sources."""
    import subprocess

    from pkg_fixtures import DATA, cellarrow_bin, convert
    from pkg_oracle import Oracle

    counts, logs = DATA / "scanpy_10x_v3_chr21_counts.h5ad", DATA / "squidpy_visium_mouse_brain_49spots.h5ad"
    out = workdir / "appended-types.corpus"
    if not out.exists():
        convert([counts], out)
        proc = subprocess.run(
            [str(cellarrow_bin()), "append", str(out), str(logs), "--quiet"], capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr
    corpus = cellarrow.open(out)
    m = corpus.manifest
    assert m["value_type"] == "float32"
    assert {p["value_type"] for p in m["matrix"]["parts"]} == {"uint16", "float32"}
    oracle = Oracle(corpus, [counts, logs])
    ids = np.arange(corpus.n_cells)
    batch = corpus.get(ids)
    assert batch.values.dtype == np.float32
    np.testing.assert_array_equal(batch.to_scipy().toarray(), oracle.dense(ids, corpus.n_genes))
    matrix = corpus.matrix
    assert matrix.schema.field("values").type.value_type == pa.float32()
    assert matrix.num_rows == corpus.n_cells
    first = oracle.row_of(0)
    assert matrix.column("indices")[0].as_py() == first[0].tolist()
    assert matrix.column("values")[0].as_py() == first[1].tolist()
    seen = 0
    for b in corpus.loader("random", batch_size=256, seed=3):
        dense = b.to_scipy().toarray()
        np.testing.assert_array_equal(dense, oracle.dense(b.cells, corpus.n_genes))
        seen += len(b)
    assert seen == corpus.n_cells
    # Hugging Face: the uint16 parts are cast to the manifest's float32 so the parts concatenate.
    ds = corpus.to_hf_dataset()
    assert ds.num_rows == corpus.n_cells
    for c in (0, corpus.n_cells - 1):
        g, v = oracle.row_of(c)
        assert ds[c]["indices"] == g.tolist() and ds[c]["values"] == v.tolist()
