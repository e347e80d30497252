"""`cellarrow validate` (alone and --against the sources) and `cellarrow inspect --json`."""

from __future__ import annotations

import json
import shutil
import warnings

import anndata as ad
import numpy as np
import pytest

from conftest import DATA
from corpus_check import joint_gene_keys, to_csr64

FIXTURES = sorted(p.name for p in DATA.glob("*.h5ad"))


def read(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ad.read_h5ad(path)


@pytest.mark.parametrize("name", FIXTURES)
def test_validate_against_each_fixture(name, convert_cached, run_cellarrow):
    path = DATA / name
    out = convert_cached(f"single-{name[:-5]}", path)
    proc = run_cellarrow("validate", out)
    assert "valid" in proc.stdout
    run_cellarrow("validate", out, "--against", path)


def test_validate_against_the_raw_matrix(convert_cached, run_cellarrow):
    path = DATA / "scanpy_pbmc68k_reduced.h5ad"
    out = convert_cached("raw-scanpy_pbmc68k_reduced", path, "--raw")
    run_cellarrow("validate", out, "--against", path)


def test_validate_against_a_multi_sample_corpus(convert_cached, run_cellarrow):
    paths = [DATA / n for n in FIXTURES]
    out = convert_cached("all-fixtures", *paths)
    run_cellarrow("validate", out)
    run_cellarrow("validate", out, "--against", *paths)


def test_validate_against_the_wrong_source_fails(convert_cached, run_cellarrow):
    a = DATA / "scanpy_pbmc68k_reduced.modern.h5ad"
    out = convert_cached("single-scanpy_pbmc68k_reduced.modern", a)
    proc = run_cellarrow("validate", out, "--against", DATA / "debian_sctransform_pbmc_counts.h5ad", check=False)
    assert proc.returncode != 0, proc.stdout
    assert "panicked" not in proc.stderr


def test_validate_refuses_a_damaged_corpus(convert_cached, run_cellarrow, session_tmp):
    src = convert_cached("single-scanpy_10x_v3_chr21_counts", DATA / "scanpy_10x_v3_chr21_counts.h5ad")
    bad = session_tmp / "damaged.corpus"
    shutil.copytree(src, bad)
    part = sorted((bad / "matrix").glob("*.arrow"))[0]
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF
    part.write_bytes(bytes(data))
    proc = run_cellarrow("validate", bad, check=False)
    assert proc.returncode != 0
    assert part.name in proc.stderr, proc.stderr
    assert "panicked" not in proc.stderr


def test_inspect_json_counts_equal_anndata(convert_cached, run_cellarrow):
    paths = [DATA / n for n in FIXTURES]
    out = convert_cached("all-fixtures", *paths)
    info = json.loads(run_cellarrow("inspect", out, "--json").stdout)
    adatas = [read(p) for p in paths]
    assert info["n_cells"] == sum(a.n_obs for a in adatas)
    genes = set()
    for keys in joint_gene_keys(adatas):
        genes |= set(keys)
    assert info["n_genes"] == len(genes)
    nnz = [to_csr64(a.X).nnz for a in adatas]
    assert info["nnz"] == sum(nnz)
    assert [s["sample_id"] for s in info["samples"]] == [n[:-5] for n in FIXTURES]
    assert [s["n_cells"] for s in info["samples"]] == [a.n_obs for a in adatas]
    assert [s["nnz"] for s in info["samples"]] == nnz
    assert [s["spatial_dims"] for s in info["samples"]] == [
        a.obsm["spatial"].shape[1] if "spatial" in a.obsm else 0 for a in adatas
    ]
    assert info["spatial_samples"] == sum("spatial" in a.obsm for a in adatas)
    cols = {c["name"] for c in info["obs_columns"]}
    for a in adatas:
        assert set(a.obs.columns) <= cols
    disk = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert info["disk_bytes"] == disk
    assert info["n_parts"] == len(list((out / "matrix").glob("*.arrow")))
    # The text form names the same counts.
    text = run_cellarrow("inspect", out).stdout
    assert str(info["n_cells"]) in text.replace(",", "")
