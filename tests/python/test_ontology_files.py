"""The ontology files of the cellxgene-ontology-guide package, as cellarrow's ontology reader
reads them (src/ontology/json.rs): names, compression and the JSON shape of a term.

A package upgrade that changes any of this must fail here, not silently in the Rust reader.
The Rust side (tests/it/ontology.rs) loads the same CL file and compares its answers with the
package's own OntologyParser.
"""

from __future__ import annotations

import importlib.resources
import json
import re

import pytest

guide = pytest.importorskip("cellxgene_ontology_guide")
zstandard = pytest.importorskip("zstandard")

NAME = re.compile(r"^(?P<name>[A-Za-z]+)-ontology-(?P<version>.+)\.json\.zst$")
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def data_files():
    return [f for f in importlib.resources.files(guide).joinpath("data").iterdir() if f.name.endswith(".json.zst")]


def load(f):
    raw = f.read_bytes()
    assert raw[:4] == ZSTD_MAGIC, f.name
    return json.loads(zstandard.ZstdDecompressor().stream_reader(raw).read())


def newest(name):
    from cellxgene_ontology_guide.ontology_parser import OntologyParser

    version = OntologyParser().cxg_schema.supported_ontologies[name]["version"]
    (f,) = [f for f in data_files() if f.name == f"{name}-ontology-{version}.json.zst"]
    return f


def test_every_ontology_file_is_named_name_ontology_version():
    files = data_files()
    assert any(f.name.startswith("CL-ontology-") for f in files)
    assert any(f.name.startswith("UBERON-ontology-") for f in files)
    for f in files:
        assert NAME.match(f.name), f.name


@pytest.mark.parametrize("name", ["CL", "UBERON"])
def test_terms_have_the_shape_the_reader_expects(name):
    terms = load(newest(name))
    assert isinstance(terms, dict) and len(terms) > 1000
    for term_id, term in terms.items():
        assert term_id.startswith(name + ":"), term_id
        assert isinstance(term["label"], str), term_id
        assert isinstance(term["deprecated"], bool), term_id
        assert all(isinstance(s, str) for s in term.get("synonyms", [])), term_id
        ancestors = term["ancestors"]
        assert isinstance(ancestors, dict), term_id
        for a, d in ancestors.items():
            assert isinstance(d, int) and d >= 1, (term_id, a, d)
            assert a != term_id


def test_cell_ontology_facts_the_rust_tests_rely_on():
    cl = load(newest("CL"))
    by_label = {}
    for term_id, term in cl.items():
        if term["label"] and not term["deprecated"]:
            by_label.setdefault(term["label"], []).append(term_id)
    assert by_label["B cell"] == ["CL:0000236"]
    assert by_label["T cell"] == ["CL:0000084"]
    assert cl["CL:0000084"]["ancestors"]["CL:0000542"] == 1
    assert "B lymphocyte" in cl["CL:0000236"]["synonyms"]
    assert cl["CL:0000000"]["ancestors"] == {}
