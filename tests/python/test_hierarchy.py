"""Sampling by hierarchy and multi-hot ancestors from Python, on the real PBMC fixture with the
real Cell Ontology.

``tests/fixtures/label_pbmc68k.py`` writes the 700 real cells' bulk labels as Cell Ontology
ids, labels and synonyms (``cell_type``). The expected classes and rows are computed here with
cellxgene-ontology-guide's own ``OntologyParser``, which reads the same CL file independently of
cellarrow's reader: each cell's term, its ancestors and their distances, and from those the
depth of a term and its ancestor at a level.
"""

from __future__ import annotations

import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

cellarrow = pytest.importorskip("cellarrow")
guide = pytest.importorskip("cellxgene_ontology_guide")
from cellxgene_ontology_guide.ontology_parser import OntologyParser  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

# The term each bulk label names in the fixture (tests/fixtures/label_pbmc68k.py).
TERMS = {
    "CD14+ Monocyte": "CL:0001054",
    "CD19+ B": "CL:0000236",
    "CD34+": "CL:0000037",
    "CD4+/CD25 T Reg": "CL:0000815",
    "CD4+/CD45RA+/CD25- Naive T": "CL:0000895",
    "CD4+/CD45RO+ Memory": "CL:0000897",
    "CD56+ NK": "CL:0000623",
    "CD8+ Cytotoxic T": "CL:0000794",
    "CD8+/CD45RA+ Naive Cytotoxic": "CL:0000900",
    "Dendritic": "CL:0000451",
}


@pytest.fixture(scope="module")
def parser():
    return OntologyParser()


@pytest.fixture(scope="module")
def cl_file(parser) -> str:
    """The CL file the parser reads, so that both sides answer from one version."""
    version = parser.cxg_schema.supported_ontologies["CL"]["version"]
    path = Path(guide.__file__).parent / "data" / f"CL-ontology-{version}.json.zst"
    assert path.is_file(), path
    return str(path)


@pytest.fixture(scope="module")
def corpus_path(convert_cached, data_dir, tmp_path_factory) -> Path:
    h5ad = tmp_path_factory.mktemp("hierarchy") / "pbmc_cl.h5ad"
    script = ROOT / "tests" / "fixtures" / "label_pbmc68k.py"
    subprocess.run([sys.executable, str(script), str(data_dir / "scanpy_pbmc68k_reduced.modern.h5ad"), str(h5ad)], check=True)
    return convert_cached("pbmc-cell-types", h5ad)


@pytest.fixture(scope="module")
def corpus(corpus_path):
    return cellarrow.open(corpus_path)


@pytest.fixture(scope="module")
def cell_terms(corpus) -> list:
    """The term of each cell, from its bulk label."""
    obs = corpus.table("obs", ["cell", "bulk_labels"]).to_pylist()
    assert [r["cell"] for r in obs] == list(range(700))
    return [TERMS[r["bulk_labels"]] for r in obs]


class Lineages:
    """Depths, ancestors and cuts from OntologyParser's answers."""

    def __init__(self, parser):
        self.p = parser
        self._anc: dict = {}

    def ancestors(self, t: str) -> dict:
        if t not in self._anc:
            self._anc[t] = self.p.get_term_ancestors_with_distances(t)
        return self._anc[t]

    def depth(self, t: str) -> int:
        anc = self.ancestors(t)
        if not anc:
            return 0
        return min(d for a, d in anc.items() if not self.ancestors(a))

    def cut(self, t: str, level: int) -> str:
        """The ancestor at `level` (the deepest at or above it, then the nearest, then the
        smallest id); the term itself when it is no deeper."""
        if self.depth(t) <= level:
            return t
        above = [(a, d) for a, d in self.ancestors(t).items() if self.depth(a) <= level]
        return min(above, key=lambda ad: (-self.depth(ad[0]), ad[1], ad[0]))[0]


@pytest.fixture(scope="module")
def lineages(parser):
    return Lineages(parser)


def assert_balanced(served: Counter, k: int) -> None:
    """Every class within 6 standard deviations of the binomial expectation n / k."""
    assert len(served) == k, served
    n = sum(served.values())
    mean, sd = n / k, math.sqrt(n * (1 / k) * (1 - 1 / k))
    for cls, got in served.items():
        assert abs(got - mean) <= 6 * sd, (cls, got, mean, served)


def test_balanced_classes_at_a_level_and_their_report(corpus, cl_file, cell_terms, lineages):
    level = 3
    classes = [lineages.cut(t, level) for t in cell_terms]
    sizes = Counter(classes)
    loader = corpus.loader(balance="cell_type", ontology=cl_file, level=level, seed=5, batch_size=100)
    report = loader.balance
    assert {c["class"]: c["cells"] for c in report["classes"]} == dict(sizes)
    for c in report["classes"]:
        assert c["weight"] == pytest.approx(1 / c["cells"])
        assert c["probability"] == pytest.approx(1 / len(sizes))
    assert report["cells"] == report["draws"] == len(loader.corpus) == 700
    assert report["own_label"] == sum(1 for t in cell_terms if lineages.depth(t) < level)
    assert report["effective_classes"] == pytest.approx(len(sizes))
    shares = [n / 700 for n in sizes.values()]
    assert report["effective_classes_unbalanced"] == pytest.approx(math.exp(-sum(p * math.log(p) for p in shares)))
    assert loader.settings["level"] == level and loader.settings["balance"] == "cell_type"

    served: Counter = Counter()
    for epoch in range(10):
        loader.set_epoch(epoch)
        cells = [int(c) for b in loader for c in b.cells]
        assert len(cells) == 700
        served.update(classes[c] for c in cells)
    assert_balanced(served, len(sizes))


def test_chosen_terms_as_a_list_leave_out_the_cells_under_none(corpus, cl_file, cell_terms, lineages):
    chosen = ["B cell", "CL:0000084", "monocyte", "dendritic cell", "NK cell"]
    ids = {"CL:0000236", "CL:0000084", "CL:0000576", "CL:0000451", "CL:0000623"}
    loader = corpus.loader(balance="cell_type", ontology=cl_file, balance_terms=chosen, seed=2)
    report = loader.balance
    assert {c["class"] for c in report["classes"]} == ids
    under = [[i for i in ids if i == t or i in lineages.ancestors(t)] for t in cell_terms]
    assert all(len(u) <= 1 for u in under), "none of the fixture's types is under two"
    assert report["left_out_outside"] == sum(1 for u in under if not u) == 13
    served: Counter = Counter()
    for epoch in range(10):
        loader.set_epoch(epoch)
        for b in loader:
            for c in b.cells:
                (cls,) = under[int(c)]
                served[cls] += 1
    assert_balanced(served, 5)


def test_shards_and_resume_serve_the_single_stream(corpus, cl_file):
    settings = dict(balance="cell_type", ontology=cl_file, level=3, seed=9, batch_size=32, epoch=1)
    single = [int(c) for b in corpus.loader(**settings) for c in b.cells]
    merged = [None] * len(single)
    for rank in range(2):
        for worker in range(2):
            shard = corpus.loader(rank=rank, world_size=2, worker=worker, num_workers=2, **settings)
            cells = [int(c) for b in shard for c in b.cells]
            g = rank * 2 + worker
            for i, c in enumerate(cells):
                merged[g + 4 * i] = c
            shard.load_state_dict({"epoch": 1, "position": 64})
            assert [int(c) for b in shard for c in b.cells] == cells[64:]
    assert merged == single


def test_multi_hot_rows_are_each_cells_term_and_its_ancestors(corpus, cl_file, cell_terms, lineages):
    lineage = [{t, *lineages.ancestors(t)} for t in cell_terms]
    reached = set().union(*lineage)
    want_terms = sorted((t for t in reached if lineages.depth(t) <= 4), key=lambda t: (lineages.depth(t), t))
    loader = corpus.loader(multi_hot="cell_type", ontology=cl_file, multi_hot_level=4, batch_size=128, seed=1)
    assert loader.multi_hot_terms == want_terms
    assert loader.multi_hot_labels[want_terms.index("CL:0000000")] == "cell"
    rows = 0
    for batch in loader:
        mh = batch.multi_hot
        assert mh.dtype == np.uint8 and mh.shape == (len(batch), len(want_terms))
        want = np.array([[t in lineage[int(c)] for t in want_terms] for c in batch.cells], dtype=np.uint8)
        np.testing.assert_array_equal(mh, want)
        assert "multi_hot" not in batch.obs.column_names
        rows += len(batch)
    assert rows == 700

    listed = corpus.loader(multi_hot="cell_type", ontology=cl_file, multi_hot_terms=["lymphocyte", "myeloid cell"], batch_size=700)
    assert listed.multi_hot_terms == ["CL:0000542", "CL:0000763"]
    (batch,) = list(listed)
    want = np.array([["CL:0000542" in lineage[int(c)], "CL:0000763" in lineage[int(c)]] for c in batch.cells], dtype=np.uint8)
    np.testing.assert_array_equal(batch.multi_hot, want)

    torch = pytest.importorskip("torch")
    from cellarrow.torch import collate

    t = collate(batch)["multi_hot"]
    assert t.dtype == torch.uint8
    np.testing.assert_array_equal(t.numpy(), want)


def test_an_ontology_name_finds_the_installed_package(corpus, monkeypatch):
    monkeypatch.delenv("CELLARROW_ONTOLOGY_DIR", raising=False)
    loader = corpus.loader(balance="cell_type", ontology="CL", level=2, batch_size=700)
    assert loader.balance["ontology"].startswith("CL v")
    assert Path(loader.settings["ontology"]).name.startswith("CL-ontology-")


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(balance="bulk_labels", ontology="CLFILE"), r"'Dendritic' \(240 cells\)"),
        (dict(multi_hot="bulk_labels", ontology="CLFILE"), r"'CD34\+' \(13 cells\)"),
        (dict(balance="cell_type", level=3), "level needs ontology"),
        (dict(balance="cell_type", ontology="CLFILE", balance_terms=["B cell", "B cells"]), "'B cells'"),
        (dict(multi_hot="cell_type", ontology="CLFILE", multi_hot_terms=["T cell", "T lymphocyte"]), "name the same term"),
        (dict(balance="no_such_column"), "obs has no column"),
    ],
)
def test_bad_label_settings_are_value_errors(corpus, cl_file, settings, message):
    settings = {k: (cl_file if v == "CLFILE" else v) for k, v in settings.items()}
    with pytest.raises(ValueError, match=message):
        corpus.loader(**settings)


def test_term_lists_must_be_strings(corpus, cl_file):
    with pytest.raises(TypeError, match="balance_terms"):
        corpus.loader(balance="cell_type", ontology=cl_file, balance_terms=[236])


def test_the_torch_dataset_carries_the_multi_hot_rows_through_its_workers(corpus_path, cl_file, cell_terms, lineages):
    torch = pytest.importorskip("torch")
    from cellarrow.torch import CellDataset

    lineage = [{t, *lineages.ancestors(t)} for t in cell_terms]
    ds = CellDataset(corpus_path, multi_hot="cell_type", ontology=cl_file, multi_hot_terms=["lymphocyte", "myeloid cell"], batch_size=100, seed=3)
    rows = {}
    for batch in ds.dataloader(num_workers=2):
        assert batch["multi_hot"].dtype == torch.uint8
        for c, r in zip(batch["cell"].tolist(), batch["multi_hot"].tolist()):
            rows[c] = r
    assert sorted(rows) == list(range(700))
    for c, r in rows.items():
        assert r == [int("CL:0000542" in lineage[c]), int("CL:0000763" in lineage[c])], c
