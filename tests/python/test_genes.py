"""Gene identity from Python: the human and mouse fixtures in one gene space through an ortholog
table, the genes table read with pyarrow and SQL, and ``loader(..., genes=VOCAB)``.

The ortholog table is built here from the fixtures' own ids: a mouse gene of the Visium brain
file is paired, as a one-to-one ortholog, with the gene of the human 10x chr21 file whose
symbol is the mouse symbol in capitals (``S100b`` and ``S100B``). Expected values come from
anndata, not from cellarrow.
"""

from __future__ import annotations

import json
import logging
import re
import warnings

import anndata as ad
import numpy as np
import pyarrow.dataset as pds
import pytest

import cellarrow
from conftest import DATA

HUMAN = DATA / "scanpy_10x_v3_chr21_counts.h5ad"
MOUSE = DATA / "squidpy_visium_mouse_brain_49spots.h5ad"


def read(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ad.read_h5ad(path)


@pytest.fixture(scope="module")
def both(tmp_path_factory, run_cellarrow):
    """(corpus path, human AnnData, mouse AnnData, {mouse id: human id})."""
    work = tmp_path_factory.mktemp("genes")
    human, mouse = read(HUMAN), read(MOUSE)
    by_symbol = {str(s): str(i) for s, i in zip(human.var_names, human.var["gene_ids"])}
    pairs = {}
    lines = ["human_gene_id\tmouse_gene_id\thuman_symbol\tmouse_symbol\thomology_type"]
    for sym, mid in zip(map(str, mouse.var_names), map(str, mouse.var["gene_ids"])):
        hid = by_symbol.get(sym.upper())
        if hid is not None:
            pairs[mid] = hid
            lines.append(f"{hid}\t{mid}\t{sym.upper()}\t{sym}\tortholog_one2one")
    table = work / "orthologs.tsv"
    table.write_text("\n".join(lines) + "\n")
    out = work / "both.corpus"
    run_cellarrow("convert", HUMAN, MOUSE, "-o", out, "--orthologs", table, "--quiet")
    return out, human, mouse, pairs


def genes_table(path):
    """The genes table as pyarrow reads it without cellarrow: the files the manifest lists,
    with each gene's counts summed over the gene_counts files."""
    m = json.loads((path / "manifest.json").read_text())
    read = lambda t: pds.dataset([str(path / f["path"]) for f in m["tables"][t]], format="parquet").to_table()
    sums = read("gene_counts").group_by("gene").aggregate([("n_samples", "sum"), ("n_cells", "sum")]).to_pylist()
    by_gene = {r["gene"]: r for r in sums}
    rows = read("genes").to_pylist()
    for g in rows:
        c = by_gene.get(g["gene"], {})
        g["n_samples"] = c.get("n_samples_sum", 0)
        g["n_cells"] = c.get("n_cells_sum", 0)
    return rows


def test_the_genes_table_joins_mouse_genes_to_their_human_orthologs(both):
    out, human, mouse, pairs = both
    genes = genes_table(out)
    assert len(pairs) > 10
    assert len(genes) == human.n_vars + mouse.n_vars - len(pairs)
    by_id = {g["id"]: g for g in genes}
    for mid, hid in pairs.items():
        g = by_id[hid]
        assert (g["species"], g["ortholog_id"], g["n_samples"]) == ("human", mid, 2)
        assert "ortholog" in g["matched_by"]
        assert mid not in by_id
    assert sum(g["species"] == "mouse" for g in genes) == mouse.n_vars - len(pairs)

    corpus = cellarrow.open(out)
    assert corpus.query("SELECT count(*) AS n FROM genes").column("n").to_pylist() == [len(genes)]
    samples = corpus.query("SELECT species, n_genes_ortholog_mapped AS m FROM samples ORDER BY first_cell").to_pylist()
    assert samples == [{"species": "human", "m": None}, {"species": "mouse", "m": len(pairs)}]

    # A mouse gene by its human ortholog: cells expressing it, per sample, against anndata.
    mid, hid = sorted(pairs.items())[0]
    hsym = str(human.var_names[list(human.var["gene_ids"]).index(hid)])
    rows = corpus.query(
        f"SELECT sample_id, count(*) AS n FROM obs WHERE expr(cell, '{hsym}') > 0 GROUP BY sample_id ORDER BY sample_id"
    ).to_pylist()
    got = {r["sample_id"]: r["n"] for r in rows}
    for a, path, gid in ((human, HUMAN, hid), (mouse, MOUSE, mid)):
        col = list(map(str, a.var["gene_ids"])).index(gid)
        x = a.X.tocsc() if hasattr(a.X, "tocsc") else np.asarray(a.X)
        n = int((x[:, col] != 0).sum())
        assert got.get(path.stem, 0) == n, (path.stem, gid, rows)


def vocabulary(corpus_path, human, rng):
    """A model vocabulary: corpus genes by symbol or by versioned id in a random order, plus
    two genes the corpus lacks; and the corpus gene id behind each entry (None when absent)."""
    genes = genes_table(corpus_path)
    symbols = [g["symbol"] for g in genes]
    entries, targets = ["NOT_A_GENE"], [None]
    for g in rng.permutation(len(genes))[: len(genes) // 3]:
        gene = genes[int(g)]
        if gene["symbol"] and symbols.count(gene["symbol"]) == 1 and g % 2:
            entries.append(gene["symbol"])
        elif gene["id"]:
            entries.append(gene["id"] + ".3")
        else:
            continue
        targets.append(int(g))
    entries.append("ENSG99999999999")
    targets.append(None)
    return entries, targets


def test_loader_batches_come_out_in_the_vocabulary_order(both, caplog, tmp_path):
    out, human, _, _ = both
    corpus = cellarrow.open(out)
    vocab, targets = vocabulary(out, human, np.random.default_rng(3))
    pos_of = {t: p for p, t in enumerate(targets) if t is not None}
    with caplog.at_level(logging.INFO, logger="cellarrow"):
        loader = corpus.loader(batch_size=64, seed=5, genes=vocab)
        plain = corpus.loader(batch_size=64, seed=5)
        batches = [b.to_scipy() for b in loader]
        batches += [b.to_scipy() for b in loader]  # a second pass reports nothing again
    present = len(pos_of)
    reports = [r.getMessage() for r in caplog.records if "vocabulary genes present" in r.getMessage()]
    assert reports == [f"{present} of {len(vocab)} vocabulary genes present"]
    assert loader.genes_present == {"present": present, "total": len(vocab), "missing": ["NOT_A_GENE", "ENSG99999999999"]}

    kept = 0
    for got, ref in zip(batches, (b.to_scipy() for b in plain)):
        assert got.shape == (ref.shape[0], len(vocab))
        for r in range(ref.shape[0]):
            lo, hi = ref.indptr[r], ref.indptr[r + 1]
            want = sorted((pos_of[g], v) for g, v in zip(ref.indices[lo:hi], ref.data[lo:hi]) if g in pos_of)
            glo, ghi = got.indptr[r], got.indptr[r + 1]
            assert list(zip(got.indices[glo:ghi], got.data[glo:ghi])) == want
            kept += len(want)
    assert kept > 0

    # The same vocabulary from a file; a file with a gene twice is an error naming both.
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n")
    from_file = next(iter(corpus.loader(batch_size=64, seed=5, genes=path))).to_scipy()
    assert (from_file != batches[0]).nnz == 0
    dup = tmp_path / "dup_vocab.txt"
    dup.write_text(f"{vocab[1]}\n{vocab[2]}\n{vocab[1]}\n")
    with pytest.raises(ValueError, match=rf"dup_vocab\.txt.*{re.escape(repr(vocab[1]).replace(chr(39), chr(34)))} twice"):
        corpus.loader(genes=dup)
    with pytest.raises(ValueError, match="twice"):
        corpus.loader(genes=["A", "B", "A"])
    with pytest.raises(TypeError, match="genes"):
        corpus.loader(genes=[1, 2])


def test_torch_batches_take_the_vocabulary_width(both):
    torch = pytest.importorskip("torch")
    from cellarrow.torch import CellDataset

    out, human, _, _ = both
    vocab, targets = vocabulary(out, human, np.random.default_rng(4))
    ds = CellDataset(out, batch_size=32, seed=0, genes=vocab)
    batch = next(iter(ds))
    X = batch["X"]
    assert X.layout == torch.sparse_csr and X.shape[1] == len(vocab)
    ref = next(iter(cellarrow.open(out).loader(batch_size=32, seed=0, genes=vocab))).to_scipy()
    np.testing.assert_array_equal(X.to_dense().numpy(), ref.toarray())
    # Through a DataLoader worker (batches cross processes in shared memory).
    first = next(iter(ds.dataloader(num_workers=1)))["X"]
    assert first.shape[1] == len(vocab)
    assert first.to_dense().sum().item() == pytest.approx(float(ref.sum()))
