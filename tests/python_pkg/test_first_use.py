"""What a new user meets first: settings checked when a loader is made, exact lengths and
resume with DataLoader workers, float32 conversions, errors that say what to change, and one
meaning per name."""

from __future__ import annotations

import ast
import itertools
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from torch.utils.data import DataLoader

import cellarrow
from cellarrow.torch import CellDataset, collate
from pkg_fixtures import DATA, ROOT
from pkg_oracle import Oracle

PKG = Path(cellarrow.__file__).resolve().parent


@pytest.fixture(scope="module")
def synth_corpus(synth):
    return cellarrow.open(synth[0])


@pytest.fixture(scope="module")
def chr21_corpus(chr21):
    return cellarrow.open(chr21[0])


# -- settings checked at once -------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw,name",
    [
        (dict(batch_size=0), "batch_size"),
        (dict(batch_size=-1), "batch_size"),
        (dict(epoch=-1), "epoch"),
        (dict(seed=-3), "seed"),
        (dict(world_size=0), "world_size"),
        (dict(sampler="groups", group_size=0), "group_size"),
        (dict(sampler="blocks", block_size=-2.0), "block_size"),
    ],
)
def test_zero_and_negative_sizes_are_errors_naming_the_argument(synth, synth_corpus, kw, name):
    kw = dict(kw)
    sampler = kw.pop("sampler", "random")
    with pytest.raises(ValueError, match=name):
        synth_corpus.loader(sampler, **kw)
    with pytest.raises(ValueError, match=name):
        CellDataset(synth[0], sampler, **kw)


def test_an_unknown_keyword_is_a_type_error_naming_it_and_the_valid_ones(synth, synth_corpus):
    with pytest.raises(TypeError, match=r"'batch_sise'.*did you mean 'batch_size'.*valid ones are: .*group_size"):
        synth_corpus.loader(batch_sise=64)
    with pytest.raises(TypeError, match="'seeed'"):
        synth_corpus.loader(seeed=1)
    with pytest.raises(TypeError, match="'batch_sise'"):
        CellDataset(synth[0], batch_sise=64)
    with pytest.raises(TypeError, match="'batch_sise'"):
        synth_corpus.to_hf_iterable(batch_sise=64)


def test_settings_the_corpus_cannot_serve_fail_when_the_loader_is_made(chr21, chr21_corpus):
    # chr21 has neither a cell_type column nor coordinates: nothing is iterated here.
    with pytest.raises(ValueError, match="cell_type"):
        chr21_corpus.loader(obs=["cell_type"])
    with pytest.raises(ValueError, match="coordinates"):
        chr21_corpus.loader("blocks", block_size=10.0)
    with pytest.raises(ValueError, match="cell_type"):
        CellDataset(chr21[0], obs=["cell_type"])


def test_what_the_package_refuses_is_a_cellarrow_error(synth_corpus, tmp_path):
    for call in (
        lambda: synth_corpus.loader(batch_sise=1),
        lambda: synth_corpus.loader(batch_size=0),
        lambda: synth_corpus.loader("nope"),
        lambda: synth_corpus[[99999]],
        lambda: cellarrow.open(tmp_path / "nowhere"),
    ):
        with pytest.raises(cellarrow.CellarrowError):
            call()


def test_repr_of_a_loader_shows_its_settings(synth_corpus):
    text = repr(synth_corpus.loader("groups", batch_size=4, group_size=8, seed=1, obs=["cell_type"]))
    for part in ("'groups'", "batch_size=4", "group_size=8", "seed=1", "obs=['cell_type']", "epoch=0", "synth.corpus"):
        assert part in text, (part, text)
    assert "cohort=3 cells" in repr(synth_corpus.cohort([0, 1, 2]).loader())


# -- exact lengths and resume with workers ------------------------------------------------------


def _delivered(loader) -> int:
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Length of IterableDataset")  # torch's own check
        return sum(1 for _ in loader)


@pytest.mark.parametrize("workers", [0, 1, 2, 3])
def test_dataloader_len_equals_the_batches_delivered(synth, synth_corpus, workers):
    ctx = "fork" if workers else None
    cases = itertools.product([False, True], [5, 16], [13, 37])  # drop_last, batch size, cohort size
    for drop_last, batch_size, n in cases:
        cohort = np.arange(0, 2 * n, 2)
        ds = CellDataset(synth[0], cohort=cohort, batch_size=batch_size, drop_last=drop_last, seed=n)
        loader = ds.dataloader(num_workers=workers, multiprocessing_context=ctx)
        assert len(loader) == _delivered(loader), (workers, drop_last, batch_size, n)
    # Groups: batches of whole groups.
    ds = CellDataset(synth[0], "groups", group_size=4, batch_size=3, seed=1)
    loader = ds.dataloader(num_workers=workers, multiprocessing_context=ctx)
    assert len(loader) == _delivered(loader)


def test_state_dict_with_workers_needs_no_count(synth):
    kw = dict(batch_size=8, seed=5, epoch=1)
    ds = CellDataset(synth[0], **kw)
    head = []
    for i, b in enumerate(ds.dataloader(num_workers=2, multiprocessing_context="fork")):
        head.append(b["cell"].tolist())
        if i == 9:
            break
    state = ds.state_dict()
    assert state["batches_seen"] == 10 and state["num_workers"] == 2 and state["epoch"] == 1
    ds2 = CellDataset(synth[0], **kw)
    ds2.load_state_dict(state)
    loader = ds2.dataloader(num_workers=2, multiprocessing_context="fork")
    assert len(loader) == 28 - 10
    tail = [b["cell"].tolist() for b in loader]
    assert len(tail) == 18
    assert sorted(sum(head + tail, [])) == list(range(220)), "no cell lost or repeated"
    # A resume state is for the workers it was saved with.
    ds3 = CellDataset(synth[0], **kw)
    ds3.load_state_dict(state)
    with pytest.raises(ValueError, match="num_workers"):
        next(iter(ds3.dataloader(num_workers=3, multiprocessing_context="fork")))


def test_state_dict_without_workers_says_so(synth):
    ds = CellDataset(synth[0], batch_size=8, seed=5)
    for i, _ in enumerate(ds.dataloader()):
        if i == 2:
            break
    assert ds.state_dict()["num_workers"] == 0 and ds.state_dict()["batches_seen"] == 3


def test_state_dict_after_workers_it_cannot_follow_fails_loudly(synth):
    ds = CellDataset(synth[0], batch_size=8, seed=5)
    for i, _ in enumerate(DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context="fork")):
        if i == 9:
            break
    with pytest.raises(RuntimeError, match="batches_seen"):
        ds.state_dict()
    assert ds.state_dict(batches_seen=10)["batches_seen"] == 10


def test_dataloader_does_not_change_the_dataset(synth):
    ds = CellDataset(synth[0], batch_size=8, seed=5)
    before = {k: v for k, v in vars(ds).items() if k not in ("_state", "_progress", "_corpus")}
    loader = ds.dataloader(num_workers=3, prefetch_factor=4, multiprocessing_context="fork")
    after = {k: v for k, v in vars(ds).items() if k not in ("_state", "_progress", "_corpus")}
    assert after == before
    assert loader.dataset is not ds and loader.dataset.ring_slots == 6


# -- values that do not wrap around ---------------------------------------------------------------


def test_conversions_give_float32_values_by_default(chr21, chr21_corpus):
    corpus = chr21_corpus
    assert corpus.manifest["value_type"] == "uint16"
    oracle = Oracle(corpus, [chr21[1]])
    batch = next(iter(corpus.loader(batch_size=400, seed=0)))
    expect = oracle.dense(batch.cells, corpus.n_genes)
    k = 65536 // int(expect.max()) + 1  # enough to wrap a uint16 around
    X = batch.to_scipy()
    assert X.dtype == np.float32
    assert (X * k).max() == expect.max() * k
    assert batch.to_torch().values().dtype == torch.float32
    assert batch.to_torch(dense=True).dtype == torch.float32
    assert batch.to_numpy().dtype == np.float32
    np.testing.assert_array_equal(batch.to_numpy(), expect)
    got = corpus.get([0, 1]).to_scipy()
    assert got.dtype == np.float32
    # The stored type, when asked for by name.
    assert batch.to_scipy(values="native").dtype == np.uint16
    assert batch.to_numpy(values="native").dtype == np.uint16
    assert batch.to_torch(values="f64").values().dtype == torch.float64
    dense = next(iter(corpus.loader(batch_size=4, dense="all")))
    assert dense.to_numpy().dtype == np.float32 and dense.to_torch().dtype == torch.float32
    with pytest.raises(ValueError, match="values"):
        batch.to_scipy(values="f16")


# -- errors that say what to do -----------------------------------------------------------------


def test_opening_says_what_the_path_is(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        cellarrow.open(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="directory but not a cellarrow corpus.*no manifest.json"):
        cellarrow.open(tmp_path)
    csv = tmp_path / "demo.csv"
    csv.write_text("a,b\n1,2\n")
    with pytest.raises(NotADirectoryError, match="is a file, not a cellarrow corpus"):
        cellarrow.open(csv)
    h5ad = DATA / "scanpy_10x_v3_chr21_counts.h5ad"
    with pytest.raises(NotADirectoryError, match="cellarrow convert"):
        cellarrow.open(h5ad)


def test_sql_on_an_unknown_table_lists_the_tables(synth_corpus):
    for call in (lambda: synth_corpus.query("SELECT * FROM cells"), lambda: synth_corpus.cohort("SELECT cell FROM cells")):
        with pytest.raises(Exception, match=r"cells' not found.*the tables of .* are obs, genes, samples"):
            call()


def test_one_rule_for_cell_ids_checked_when_the_cohort_is_made(synth, synth_corpus):
    corpus = synth_corpus
    n = corpus.n_cells
    with pytest.raises(IndexError, match=f"99999 is out of range: the corpus has {n} cells"):
        corpus[[0, 99999]]
    with pytest.raises(IndexError, match=f"the corpus has {n} cells"):
        corpus[99999]
    assert corpus[[-1]].cells.tolist() == corpus[-1].cells.tolist() == [n - 1]
    assert corpus.cohort([-5, 3]).cells.tolist() == [3, n - 5]
    for bad in ([99999], [-n - 1]):
        with pytest.raises(IndexError, match=f"the corpus has {n} cells"):
            corpus.cohort(bad)
        with pytest.raises(IndexError, match=f"the corpus has {n} cells"):
            corpus.loader(cohort=bad)
        with pytest.raises(IndexError, match=f"the corpus has {n} cells"):
            CellDataset(synth[0], cohort=bad)
    with pytest.warns(DeprecationWarning):
        with pytest.raises(IndexError, match=f"the corpus has {n} cells"):
            corpus.cells([99999])
    cells = [b.cells.tolist() for b in corpus.loader(cohort=[-1, -2], batch_size=8)]
    assert sorted(sum(cells, [])) == [n - 2, n - 1]


def test_a_missing_batch_column_suggests_obs(synth_corpus):
    batch = next(iter(synth_corpus.loader(batch_size=4)))
    with pytest.raises(KeyError, match=r"obs=\['sample_id'\]"):
        batch.column("sample_id")
    with pytest.warns(DeprecationWarning):
        with pytest.raises(KeyError, match=r"obs=\['sample_id'\]"):
            batch.obs("sample_id")


# -- parity and surprises -----------------------------------------------------------------------


def test_hf_dataset_and_iterable_both_carry_cell_and_declare_features(synth_corpus):
    import datasets

    corpus = synth_corpus
    ds = corpus.to_hf_dataset(obs=["cell_type"])
    assert ds.column_names == ["cell", "indices", "values", "cell_type"]
    assert ds["cell"][:5] == [0, 1, 2, 3, 4] and ds[219]["cell"] == 219
    assert ds.features["cell"] == datasets.Value("uint64")
    it = corpus.to_hf_iterable(seed=0, num_shards=2, obs=["cell_type", "score"])
    assert it.features is not None
    row = next(iter(it))
    assert set(it.features) == set(row) and "cell" in row
    assert it.features["cell"] == datasets.Value("uint64")
    assert it.features["cell_type"] == datasets.Value("string")
    assert set(ds.features) <= set(it.features)


def test_query_documents_the_row_order_and_order_by_makes_it_stable(synth_corpus):
    doc = cellarrow.Corpus.query.__doc__
    assert "ORDER BY" in doc and "not defined" in doc
    readme = (ROOT / "README.md").read_text()
    assert "ORDER BY" in readme
    sql = "SELECT sample_id, cell_type, COUNT(*) AS n FROM obs GROUP BY 1, 2 ORDER BY 1, 2"
    first = synth_corpus.query(sql)
    for _ in range(5):
        assert synth_corpus.query(sql).to_pylist() == first.to_pylist()


def test_unsigned_obs_columns_reach_torch_as_int64(synth_corpus):
    batch = next(iter(synth_corpus.loader(batch_size=16, obs=["nnz", "source_row"])))
    assert batch.column("source_row").type == pa.uint64() and batch.column("nnz").type == pa.uint32()
    out = collate(batch)
    for name in ("nnz", "source_row"):
        assert out[name].dtype == torch.int64, name
        assert out[name].tolist() == batch.column(name).to_pylist()
    assert (out["nnz"] * 2).sum() >= 0  # torch computes with it


_KEEP_BATCHES = """
import sys, warnings
warnings.simplefilter("always")
from cellarrow.torch import CellDataset
ds = CellDataset(sys.argv[1], batch_size=8, seed=0, shared_memory=sys.argv[2] == "ring")
kept = list(ds.dataloader(num_workers=2, multiprocessing_context="fork"))
print(len(kept), sum(b["X"].values().sum().item() for b in kept))
"""


@pytest.mark.parametrize("transport", ["ring", "torch"])
def test_kept_batches_raise_no_sparse_invariant_warning(synth, transport):
    # A process of its own: torch warns once per process.
    proc = subprocess.run(
        [sys.executable, "-c", _KEEP_BATCHES, str(synth[0]), transport], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == "28"
    assert "implicitly disabled" not in proc.stderr, proc.stderr


# -- one meaning per name -----------------------------------------------------------------------


def test_obs_is_a_table_everywhere_and_old_names_warn(synth_corpus):
    corpus = synth_corpus
    cohort = corpus.where("sample_id = 'sb'")
    batch = next(iter(cohort.loader(batch_size=8, obs=["cell_type"])))
    for obs, rows in ((corpus.obs, corpus.n_cells), (cohort.obs, len(cohort)), (batch.obs, 8)):
        t = pa.table(obs)
        assert t.num_rows == obs.num_rows == rows and "cell" in t.column_names
    assert cohort.obs["cell"].to_pylist() == cohort.cells.tolist()
    assert batch.obs["cell"].to_pylist() == batch.cells.tolist()
    assert isinstance(batch.to_arrow(), pa.RecordBatch)
    with pytest.warns(DeprecationWarning, match="to_arrow"):
        assert batch.to_pyarrow().equals(batch.to_arrow())
    with pytest.warns(DeprecationWarning, match="Cohort.table"):
        assert cohort.obs(["cell"]).equals(cohort.table("obs", ["cell"]))
    with pytest.warns(DeprecationWarning, match="Batch.obs"):
        assert batch.obs("cell_type").tolist() == batch.obs["cell_type"].to_pylist()
    with pytest.warns(DeprecationWarning, match="Corpus.cohort"):
        assert corpus.cells([3, 1]).cells.tolist() == [1, 3]
    assert isinstance(cohort.to_arrow(), pa.Array)


def _stub_keywords(path: Path, cls: str) -> set:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == cls:
            for f in node.body:
                if isinstance(f, ast.FunctionDef) and f.name == "__init__":
                    a = f.args
                    return {x.arg for x in a.args + a.kwonlyargs} - {"self"}
    raise AssertionError(f"no {cls}.__init__ in {path}")


def test_the_stubs_list_every_keyword_the_code_accepts():
    from cellarrow import _settings

    native = _settings.native_keywords()
    package = _stub_keywords(PKG / "__init__.pyi", "Loader")
    assert package >= (native | {"cohort", "sampler"}), sorted((native | {"cohort"}) - package)
    stub = _stub_keywords(PKG / "_native.pyi", "Loader")
    assert stub >= native, sorted(native - stub)
    assert set(_settings.LOADER_KEYWORDS) <= stub
