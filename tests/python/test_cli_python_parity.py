"""`cellarrow sample` and the Python loaders read one set of settings: the same settings give
the same cells, in the same order, from both faces; the SQL selections (`where`,
`blocks_sql`, `regions_sql`) included. Also the Python side of the shared checks: unknown
keywords, bad sizes and the error classes.

The corpus is converted from real fixtures (tests/data/SOURCES.md): the Visium sample has
coordinates (blocks) and a `leiden` clustering (regions), the PBMC one cell types.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest

cellarrow = pytest.importorskip("cellarrow")
from cellarrow import _native  # noqa: E402


@pytest.fixture(scope="module")
def corpus(convert_cached, data_dir):
    return convert_cached(
        "parity",
        data_dir / "squidpy_visium_mouse_brain_49spots.h5ad",
        data_dir / "scanpy_pbmc68k_reduced.modern.h5ad",
    )


def _flag(name: str, value) -> list[str]:
    flag = "--" + {"num_workers": "workers"}.get(name, name).replace("_", "-")
    if value is True:
        return [flag]
    if isinstance(value, (list, tuple)):
        return [flag, ",".join(map(str, value))]
    return [flag, str(value)]


def cli_cells(run_cellarrow, corpus, tmp_path, settings: dict) -> list[int]:
    """The `cell` column of `cellarrow sample` with `settings` as flags, in stream order."""
    out = tmp_path / "out.arrow"
    args = [a for name, value in settings.items() for a in _flag(name, value)]
    run_cellarrow("sample", corpus, *args, "-o", out)
    with pa.OSFile(str(out)) as f:
        table = pa.ipc.open_stream(f).read_all()
    return table.column("cell").to_pylist()


def native_cells(corpus, settings: dict) -> list[int]:
    loader = _native.Loader(_native.Corpus(str(corpus)), **settings)
    return [c for rb in loader for c in pa.record_batch(rb).column("cell").to_pylist()]


def visium_extent(corpus):
    obs = cellarrow.open(corpus).table("obs", ["sample_id", "x", "y"])
    spots = obs.filter(pc.invert(pc.is_null(obs.column("x"))))
    assert spots.num_rows == 49, "the Visium spots carry coordinates"
    return spots


CASES = {
    "random shard of an epoch": dict(batch_size=7, seed=3, epoch=2, rank=1, world_size=3),
    "shuffle runs": dict(sampler="shuffle", shuffle_run=5, shuffle_window=3, seed=1, batch_size=16),
    "groups with the default group size": dict(sampler="groups", seed=5, batch_size=2),
    "a where cohort": {"where": "sample_id = 'scanpy_pbmc68k_reduced.modern'", "seed": 9, "drop_last": True, "batch_size": 32},
    "workers and a pad policy": dict(seed=2, worker=1, num_workers=2, world_size=2, rank=1, policy="pad"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_cli_and_python_serve_the_same_cells(run_cellarrow, corpus, tmp_path, name):
    settings = CASES[name]
    expected = cli_cells(run_cellarrow, corpus, tmp_path, settings)
    assert expected, "the case serves cells"
    assert native_cells(corpus, settings) == expected
    # The pythonic face passes the keywords through.
    opts = dict(settings)
    sampler = opts.pop("sampler", "random")
    loader = cellarrow.open(corpus).loader(sampler, **opts)
    got = [int(c) for batch in loader for c in batch.cells]
    assert got == expected


def test_blocks_chosen_in_sql_are_the_same_from_both_faces(run_cellarrow, corpus, tmp_path):
    spots = visium_extent(corpus)
    xs, ys = spots.column("x").to_pylist(), spots.column("y").to_pylist()
    size = (max(max(xs) - min(xs), max(ys) - min(ys))) / 3 + 1
    chosen = f"SELECT sample_id, block_id FROM blocks({size}) WHERE n_cells >= 3 AND block_id % 2 = 0"
    settings = dict(sampler="blocks", block_size=size, blocks_sql=chosen, seed=4, batch_size=2)
    expected = cli_cells(run_cellarrow, corpus, tmp_path, settings)
    everything = cli_cells(run_cellarrow, corpus, tmp_path, dict(sampler="blocks", block_size=size, seed=4))
    assert 0 < len(expected) < len(everything), "the query chose some blocks, not all"
    assert native_cells(corpus, settings) == expected
    loader = cellarrow.open(corpus).loader("blocks", block_size=size, blocks_sql=chosen, seed=4, batch_size=2)
    assert [int(c) for b in loader for c in b.cells] == expected


def test_regions_sql_selects_among_the_regions_of_the_label(run_cellarrow, corpus, tmp_path):
    # The regions are the label column's values, in the sampler and in the query alike.
    chosen = "SELECT sample_id, region_id FROM regions WHERE n_cells >= 8"
    settings = dict(sampler="regions", label="leiden", regions_sql=chosen, seed=6)
    expected = cli_cells(run_cellarrow, corpus, tmp_path, settings)
    obs = cellarrow.open(corpus).table("obs", ["cell", "leiden"]).to_pylist()
    counts: dict = {}
    for row in obs:
        if row["leiden"] is not None:
            counts[row["leiden"]] = counts.get(row["leiden"], 0) + 1
    big = {k for k, n in counts.items() if n >= 8}
    assert big and len(big) < len(counts), "the fixture has small and large clusters"
    want = sorted(r["cell"] for r in obs if r["leiden"] in big)
    assert sorted(expected) == want
    assert native_cells(corpus, settings) == expected


def test_settings_show_every_value_and_the_library_defaults(corpus):
    c = _native.Corpus(str(corpus))
    loader = _native.Loader(c, sampler="groups", seed=1)
    settings = loader.settings
    assert set(settings) == set(_native.Loader.setting_names())
    defaults = _native.Loader.default_settings()
    assert settings["group_size"] == defaults["group_size"]
    assert settings["sampler"] == "groups" and settings["seed"] == 1
    assert "group_size" in repr(loader)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(batch_size=0), "batch_size must be at least 1, got 0"),
        (dict(batch_size=-2), "batch_size must not be negative, got -2"),
        (dict(seed=-1), "seed must not be negative, got -1"),
        (dict(shuffle_run=0, sampler="shuffle"), "shuffle_run must be at least 1"),
        (dict(sampler="blocks"), "needs block_size"),
        (dict(label_mode="stratified", sampler="groups"), "label_mode needs label"),
        (dict(sampler="random", bounds=True), "bounds need groups with a box"),
        (dict(sampler="nope"), "unknown sampler"),
    ],
)
def test_bad_settings_are_value_errors_naming_the_setting(corpus, kwargs, message):
    c = _native.Corpus(str(corpus))
    with pytest.raises(ValueError, match=message) as info:
        _native.Loader(c, **kwargs)
    assert isinstance(info.value, _native.CellarrowError)


def test_an_unknown_keyword_is_a_type_error_listing_the_keywords(corpus):
    c = _native.Corpus(str(corpus))
    with pytest.raises(TypeError, match="batch_sise") as info:
        _native.Loader(c, batch_sise=4)
    assert "batch_size" in str(info.value) and "blocks_sql" in str(info.value)
    assert isinstance(info.value, _native.CellarrowError)


def test_core_errors_share_one_base_class(tmp_path):
    with pytest.raises(_native.CellarrowError):
        _native.Corpus(str(tmp_path / "missing"))
