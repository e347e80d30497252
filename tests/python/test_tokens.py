"""Gene statistics and tokenized batches on the real fixtures, against plain NumPy.

The corpus is read back independently (pyarrow over the matrix parts and the gene_stats table),
the statistics and both tokenization rules are recomputed with NumPy, cell by cell, and the
loader's batches (``tokens="rank"`` / ``tokens="bins"``, in the corpus's gene ids or in a model
vocabulary's positions with ``genes=``) and the torch adapter's tensors must match them.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

cellarrow = pytest.importorskip("cellarrow")
torch = pytest.importorskip("torch")

SHIFT = 52 - 6  # sketch bins keep 6 mantissa bits


@pytest.fixture(scope="module")
def corpus_path(convert_cached, data_dir, tmp_path_factory):
    """Two human samples and one mouse sample, species from an input manifest."""
    d = tmp_path_factory.mktemp("tokens-inputs")
    rows = [
        ("chr21", data_dir / "scanpy_10x_v3_chr21_counts.h5ad", "human"),
        ("debian", data_dir / "debian_sctransform_pbmc_counts.h5ad", "human"),
        ("mouse", data_dir / "scanpy_10x_10k_subset_mouse_counts.h5ad", "mouse"),
    ]
    manifest = d / "inputs.csv"
    manifest.write_text("path,sample_id,species\n" + "".join(f"{p},{s},{sp}\n" for s, p, sp in rows))
    return convert_cached("tokens-species", manifest)


@pytest.fixture(scope="module")
def scaled_path(convert_cached, data_dir):
    """Scaled float values, negative ones included, and no species column."""
    return convert_cached("tokens-scaled", data_dir / "scanpy_pbmc68k_reduced.h5ad")


def read_matrix(path):
    """(indptr, indices, values) of every cell, read from the parts with pyarrow."""
    m = json.loads((path / "manifest.json").read_text())
    indptr, indices, values = [np.zeros(1, np.int64)], [], []
    at = 0
    for part in m["matrix"]["parts"]:
        with pa.memory_map(str(path / part["path"])) as f:
            t = pa.ipc.open_stream(f).read_all()
        for b in t.to_batches():
            lst = b.column("indices")
            off = lst.offsets.to_numpy().astype(np.int64)
            indptr.append(off[1:] - off[0] + at)
            at += off[-1] - off[0]
            indices.append(lst.values.to_numpy()[off[0] : off[-1]].astype(np.int64))
            values.append(b.column("values").values.to_numpy()[off[0] : off[-1]])
    return np.concatenate(indptr), np.concatenate(indices), np.concatenate(values)


def truncate(x):
    """The sketch's rounding: toward zero to 7 significant bits."""
    x = np.asarray(x, np.float64)
    bits = (np.abs(x).view(np.uint64) >> np.uint64(SHIFT)) << np.uint64(SHIFT)
    return np.sign(x) * bits.view(np.float64)


def bin_value(code):
    code = np.asarray(code, np.int64)
    mag = (((np.abs(code) - 1).astype(np.uint64)) << np.uint64(SHIFT)).view(np.float64)
    return np.where(code < 0, -mag, mag)


def stats_table(path):
    """The gene_stats table, read with pyarrow from the file the manifest lists."""
    m = json.loads((path / "manifest.json").read_text())
    (f,) = m["tables"]["gene_stats"]
    return pq.read_table(path / f["path"])


def medians_from_table(path, n_genes):
    """Each gene's median over every species: the sketches merged, the lower median's bin."""
    t = stats_table(path)
    genes = t.column("gene").to_numpy()
    bins = t.column("sketch_bins").to_pylist()
    counts = t.column("sketch_counts").to_pylist()
    merged = {}
    for g, b, c in zip(genes, bins, counts):
        d = merged.setdefault(int(g), {})
        for code, n in zip(b, c):
            d[code] = d.get(code, 0) + n
    out = np.full(n_genes, np.nan)
    for g, d in merged.items():
        codes = np.array(sorted(d))
        cum = np.cumsum([d[c] for c in codes])
        rank = (cum[-1] - 1) // 2
        out[g] = bin_value(codes[np.searchsorted(cum, rank, side="right")])
    return out


def rank_ref(idx, val, med32, k, lut=None):
    """Rank-value tokens; with ``lut`` (corpus gene -> vocabulary position, -1 outside it) only
    the vocabulary's genes compete, while the total still sums every value, in storage order."""
    total = np.float32(np.cumsum(val.astype(np.float64))[-1] if len(val) else 0.0)
    v = val.astype(np.float32)
    m = med32[idx]
    t = idx if lut is None else lut[idx]
    keep = (v > 0) & (m > 0) & (t >= 0)
    key = v[keep] / m[keep]
    t = t[keep]
    order = np.lexsort((t, -key))[:k]
    return t[order], key[order] / total


def bins_ref(idx, val, n_bins, k, lut=None):
    """Binned tokens; with ``lut`` the genes outside the vocabulary are dropped before binning
    and the tokens are vocabulary positions, in increasing order."""
    x = val.astype(np.float64)
    t = idx if lut is None else lut[idx]
    nz = (x != 0) & ~np.isnan(x) & (t >= 0)
    x, t = x[nz], t[nz]
    if len(x) == 0:
        return t, np.zeros(0, np.int64)
    edges = np.quantile(x, np.linspace(0, 1, n_bins - 1))
    b = np.digitize(x, edges)
    if len(x) > k:
        keep = np.lexsort((t, -x))[:k]
        t, b = t[keep], b[keep]
    order = np.argsort(t, kind="stable")
    return t[order], b[order]


def padded(tokens, values, k, value_dtype):
    t = np.full(k, -1, np.int32)
    v = np.zeros(k, value_dtype)
    t[: len(tokens)] = tokens
    v[: len(values)] = values
    mask = np.zeros(k, bool)
    mask[: len(tokens)] = True
    return t, v, mask


def test_gene_stats_match_the_matrix(corpus_path):
    corpus = cellarrow.open(corpus_path)
    indptr, indices, values = read_matrix(corpus_path)
    samples = corpus.samples.to_pydict()
    species_of = dict(zip(samples["sample_id"], samples["species"]))
    m = json.loads((corpus_path / "manifest.json").read_text())
    cell_species = np.empty(corpus.n_cells, object)
    for s in m["samples"]:
        cell_species[s["first_cell"] : s["first_cell"] + s["n_cells"]] = species_of[s["sample_id"]]
    row_species = np.repeat(cell_species, np.diff(indptr))
    t = stats_table(corpus_path).to_pydict()
    assert len(t["gene"]) > 0
    assert sorted(set(t["species"])) == ["human", "mouse"]
    got = {(s, g): i for i, (s, g) in enumerate(zip(t["species"], t["gene"]))}
    n_rows = 0
    for sp in ("human", "mouse"):
        sel = (row_species == sp) & (values != 0)
        g, v = indices[sel], values[sel].astype(np.float64)
        order = np.lexsort((v, g))
        g, v = g[order], v[order]
        uniq, start, count = np.unique(g, return_index=True, return_counts=True)
        n_rows += len(uniq)
        sums = np.add.reduceat(v, start)
        sq = np.add.reduceat(v * v, start)
        lower = v[start + (count - 1) // 2]
        for j, gene in enumerate(uniq):
            i = got[(sp, gene)]
            assert t["n_cells"][i] == count[j]
            assert np.isclose(t["sum"][i], sums[j], rtol=1e-12)
            assert np.isclose(t["sum_sq"][i], sq[j], rtol=1e-12)
            assert t["median_nonzero"][i] == truncate(lower[j])
    assert n_rows == len(t["gene"])
    # The query engine sees the table.
    q = corpus.query("SELECT species, count(*) AS n FROM gene_stats GROUP BY species ORDER BY species").to_pydict()
    assert q["species"] == ["human", "mouse"] and sum(q["n"]) == n_rows


@pytest.mark.parametrize("k", [16, 4096])
def test_rank_tokens_match_numpy(corpus_path, k):
    corpus = cellarrow.open(corpus_path)
    indptr, indices, values = read_matrix(corpus_path)
    med32 = medians_from_table(corpus_path, corpus.n_genes).astype(np.float32)
    seen = 0
    padded_rows = 0
    for batch in corpus.loader(batch_size=500, seed=3, tokens="rank", top_k=k):
        assert batch.is_tokens
        tok, val, mask = batch.tokens, batch.token_values, batch.attention_mask
        assert tok.shape == (batch.num_rows, k) and tok.dtype == np.int32 and val.dtype == np.float32
        for r, c in enumerate(batch.cells):
            lo, hi = indptr[c], indptr[c + 1]
            et, ev, em = padded(*rank_ref(indices[lo:hi], values[lo:hi], med32, k), k, np.float32)
            np.testing.assert_array_equal(tok[r], et)
            np.testing.assert_array_equal(mask[r], em)
            np.testing.assert_allclose(val[r], ev, rtol=1e-6)
            padded_rows += int(not em.all())
        seen += batch.num_rows
    assert seen == corpus.n_cells
    # k = 16 truncates every cell with more genes, k = 4096 pads every cell.
    assert (padded_rows < seen) if k == 16 else (padded_rows == seen)


@pytest.mark.parametrize("n_bins,k", [(51, 64), (7, 4096)])
def test_bins_tokens_match_numpy(scaled_path, corpus_path, n_bins, k):
    for path in (scaled_path, corpus_path):
        corpus = cellarrow.open(path)
        indptr, indices, values = read_matrix(path)
        cells = np.arange(corpus.n_cells)[:: max(1, corpus.n_cells // 1500)]
        for batch in corpus.loader(cohort=cells, batch_size=256, seed=1, tokens="bins", n_bins=n_bins, top_k=k):
            tok, val, mask = batch.tokens, batch.token_values, batch.attention_mask
            assert val.dtype == np.int32
            for r, c in enumerate(batch.cells):
                lo, hi = indptr[c], indptr[c + 1]
                et, ev, em = padded(*bins_ref(indices[lo:hi], values[lo:hi], n_bins, k), k, np.int32)
                np.testing.assert_array_equal(tok[r], et)
                np.testing.assert_array_equal(val[r], ev)
                np.testing.assert_array_equal(mask[r], em)
                assert val[r][em].min(initial=n_bins) >= 1 and val[r].max() <= n_bins - 1


def test_a_medians_table_replaces_the_corpus_statistics(corpus_path, tmp_path):
    corpus = cellarrow.open(corpus_path)
    names = corpus.gene_names
    rng = np.random.default_rng(0)
    med = rng.uniform(0.5, 5.0, len(names))
    listed = rng.random(len(names)) < 0.7  # the others take no part
    table = tmp_path / "medians.tsv"
    table.write_text("gene\tmedian\n" + "".join(f"{n}\t{float(m)!r}\n" for n, m, keep in zip(names, med, listed) if keep))
    med32 = np.where(listed, med, np.nan).astype(np.float32)
    indptr, indices, values = read_matrix(corpus_path)
    batch = next(iter(corpus.loader(batch_size=300, seed=5, tokens="rank", top_k=32, gene_medians=table)))
    for r, c in enumerate(batch.cells):
        lo, hi = indptr[c], indptr[c + 1]
        et, ev, em = padded(*rank_ref(indices[lo:hi], values[lo:hi], med32, 32), 32, np.float32)
        np.testing.assert_array_equal(batch.tokens[r], et)
        np.testing.assert_allclose(batch.token_values[r], ev, rtol=1e-6)


def shuffled_vocabulary(corpus, rng):
    """Two thirds of the corpus genes and three names it lacks, by name, in a random order; and
    the map corpus gene -> vocabulary position (-1 outside it)."""
    names = np.array(corpus.gene_names, dtype=object)
    keep = rng.random(len(names)) < 2 / 3
    vocab = list(names[keep]) + [f"NOT_A_GENE_{i}" for i in range(3)]
    vocab = [vocab[i] for i in rng.permutation(len(vocab))]
    position = {n: i for i, n in enumerate(vocab)}
    lut = np.array([position.get(n, -1) for n in names], np.int64)
    return vocab, lut


def assert_row(batch, r, expected) -> None:
    """Row ``r`` of a token batch is ``expected``: (tokens, values, attention mask)."""
    tokens, values, mask = expected
    np.testing.assert_array_equal(batch.tokens[r], tokens)
    np.testing.assert_array_equal(batch.token_values[r], values)
    np.testing.assert_array_equal(batch.attention_mask[r], mask)


@pytest.mark.parametrize("k", [16, 4096])
def test_rank_tokens_in_a_vocabulary_match_numpy(corpus_path, k):
    corpus = cellarrow.open(corpus_path)
    indptr, indices, values = read_matrix(corpus_path)
    med32 = medians_from_table(corpus_path, corpus.n_genes).astype(np.float32)
    vocab, lut = shuffled_vocabulary(corpus, np.random.default_rng(7))
    loader = corpus.loader(batch_size=500, seed=3, tokens="rank", top_k=k, genes=vocab)
    assert loader.genes_present["present"] == len(vocab) - 3
    seen = left_out = 0
    for batch in loader:
        for r, c in enumerate(batch.cells):
            lo, hi = indptr[c], indptr[c + 1]
            assert_row(batch, r, padded(*rank_ref(indices[lo:hi], values[lo:hi], med32, k, lut), k, np.float32))
            left_out += int((lut[indices[lo:hi]] < 0).sum())
        seen += batch.num_rows
    assert seen == corpus.n_cells and left_out > 0


@pytest.mark.parametrize("n_bins,k", [(51, 64), (7, 4096)])
def test_bins_tokens_in_a_vocabulary_match_numpy(scaled_path, corpus_path, n_bins, k):
    for seed, path in enumerate((scaled_path, corpus_path)):
        corpus = cellarrow.open(path)
        indptr, indices, values = read_matrix(path)
        vocab, lut = shuffled_vocabulary(corpus, np.random.default_rng(seed))
        cells = np.arange(corpus.n_cells)[:: max(1, corpus.n_cells // 1500)]
        loader = corpus.loader(cohort=cells, batch_size=256, seed=1, tokens="bins", n_bins=n_bins, top_k=k, genes=vocab)
        for batch in loader:
            for r, c in enumerate(batch.cells):
                lo, hi = indptr[c], indptr[c + 1]
                assert_row(batch, r, padded(*bins_ref(indices[lo:hi], values[lo:hi], n_bins, k, lut), k, np.int32))


def test_a_vocabulary_with_a_gene_twice_is_refused_with_tokens(corpus_path, tmp_path):
    corpus = cellarrow.open(corpus_path)
    a, b = corpus.gene_names[:2]
    dup = tmp_path / "dup_vocab.txt"
    dup.write_text(f"{a}\n{b}\n{a}\n")
    for tokens in ("rank", "bins"):
        with pytest.raises(ValueError, match=rf"dup_vocab\.txt.*\"{a}\" twice"):
            corpus.loader(tokens=tokens, genes=dup)
        with pytest.raises(ValueError, match=rf"\"{b}\" twice"):
            corpus.loader(tokens=tokens, genes=[b, a, b])


def test_torch_gets_tokens_in_a_vocabulary(corpus_path, tmp_path):
    from cellarrow.torch import CellDataset

    corpus = cellarrow.open(corpus_path)
    vocab, _ = shuffled_vocabulary(corpus, np.random.default_rng(11))
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n")
    expected = [b.tokens.copy() for b in corpus.loader(batch_size=128, seed=2, tokens="rank", top_k=256, genes=vocab)]
    for workers in (0, 1):
        ds = CellDataset(corpus_path, batch_size=128, seed=2, tokens="rank", top_k=256, genes=path)
        got = list(ds.dataloader(num_workers=workers))
        assert len(got) == len(expected)
        for b, e in zip(got, expected):
            np.testing.assert_array_equal(b["tokens"].numpy(), e)
            assert int(b["tokens"].max()) < len(vocab)


def test_torch_gets_token_tensors(corpus_path):
    from cellarrow.torch import CellDataset

    corpus = cellarrow.open(corpus_path)
    expected = [b.tokens.copy() for b in corpus.loader(batch_size=128, seed=2, tokens="rank", top_k=256)]
    for workers in (0, 1):
        ds = CellDataset(corpus_path, batch_size=128, seed=2, tokens="rank", top_k=256)
        got = list(ds.dataloader(num_workers=workers))
        assert len(got) == len(expected)
        for b, e in zip(got, expected):
            assert set(b) >= {"tokens", "values", "attention_mask", "cell"} and "X" not in b
            assert b["tokens"].dtype == torch.int32 and b["values"].dtype == torch.float32
            assert b["attention_mask"].dtype == torch.bool and b["tokens"].shape == (len(e), 256)
            np.testing.assert_array_equal(b["tokens"].numpy(), e)
            np.testing.assert_array_equal(b["attention_mask"].numpy(), e >= 0)
    bins = next(iter(CellDataset(corpus_path, batch_size=8, tokens="bins", top_k=64)))
    assert bins["values"].dtype == torch.int32 and bins["values"].shape == (8, 64)


def test_bad_token_settings_are_clear_errors(corpus_path, tmp_path):
    corpus = cellarrow.open(corpus_path)
    with pytest.raises(ValueError, match="unknown tokens 'words'|unknown tokens \"words\""):
        corpus.loader(tokens="words")
    with pytest.raises(ValueError, match="top_k"):
        corpus.loader(tokens="rank", top_k=0)
    with pytest.raises(ValueError, match="n_bins must be at least 2"):
        corpus.loader(tokens="bins", n_bins=1)
    with pytest.raises(ValueError, match="tokens and dense"):
        corpus.loader(tokens="rank", dense="all")
    missing = tmp_path / "nope.tsv"
    with pytest.raises(OSError, match="nope.tsv"):
        corpus.loader(tokens="rank", gene_medians=missing)
    dup = tmp_path / "dup.tsv"
    name = corpus.gene_names[0]
    dup.write_text(f"gene\tmedian\n{name}\t1\n{name}\t2\n")
    with pytest.raises(ValueError, match="dup.tsv.*listed twice|listed twice.*dup.tsv"):
        corpus.loader(tokens="rank", gene_medians=dup)


def test_a_corpus_without_statistics_names_what_is_missing(corpus_path, tmp_path):
    import shutil

    old = tmp_path / "old.corpus"
    shutil.copytree(corpus_path, old)
    m = json.loads((old / "manifest.json").read_text())
    (f,) = m["tables"].pop("gene_stats")
    m["files"] = [e for e in m["files"] if e["path"] != f["path"]]
    (old / "manifest.json").write_text(json.dumps(m))
    (old / f["path"]).unlink()
    corpus = cellarrow.open(old)
    with pytest.raises(ValueError, match="gene_stats table.*gene_medians"):
        corpus.loader(tokens="rank")
    # Binning needs no statistics.
    assert next(iter(corpus.loader(tokens="bins", batch_size=4))).tokens.shape == (4, 2048)
