//! Ontologies: the OBO and cellxgene JSON readers, label resolution, the hierarchy, cuts, the
//! column resolver, `is_a()` and the `ontology` table in SQL, and the real Cell Ontology that
//! the cellxgene-ontology-guide package ships (`CELLARROW_TEST_CL`, else found through Python).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, DictionaryArray, StringArray};
use arrow::datatypes::Int32Type;
use cellarrow::ontology::{locate_in, resolve_column, OboOptions, Ontology, Unresolved};
use cellarrow::ErrorKind;

use crate::common::scratch;

/// A small Cell Ontology: a multi-parent term, an EXACT and a RELATED synonym, an ambiguous
/// label, an obsolete term sharing a live label, a `part_of` into an ontology the file does not
/// carry, and a `[Typedef]` stanza.
const OBO: &str = r#"format-version: 1.2
data-version: cl/releases/2026-01-01
ontology: cl
! a comment line

[Term]
id: CL:0000000
name: cell

[Term]
id: CL:0000542
name: lymphocyte
is_a: CL:0000000 ! cell

[Term]
id: CL:0000763
name: myeloid cell
is_a: CL:0000000 ! cell

[Term]
id: CL:0000084
name: T cell
def: "A type of lymphocyte! (not a comment inside quotes)" []
synonym: "T lymphocyte" EXACT []
synonym: "T-cell" RELATED []
is_a: CL:0000542 {source="test"} ! lymphocyte

[Term]
id: CL:0000236
name: B cell
synonym: "B lymphocyte" EXACT [PMID:1]
is_a: CL:0000542

[Term]
id: CL:0000785
name: mature B cell
is_a: CL:0000236 ! B cell

[Term]
id: CL:0000788
name: naive B cell
is_a: CL:0000785 ! mature B cell
relationship: part_of UBERON:0000178 ! blood

[Term]
id: CL:0000900
name: lymphoid-myeloid hybrid cell
is_a: CL:0000542
is_a: CL:0000763

[Term]
id: CL:0000901
name: hybrid cell
is_a: CL:0000000

[Term]
id: CL:0000902
name: hybrid cell
is_a: CL:0000763

[Term]
id: CL:0000003
name: B cell
is_obsolete: true

[Typedef]
id: part_of
name: part of
"#;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn small() -> (tempfile::TempDir, Ontology) {
    let dir = scratch("onto");
    let path = write(dir.path(), "cl.obo", OBO);
    let o = Ontology::load(&path).expect("the test OBO parses");
    (dir, o)
}

#[test]
fn obo_terms_labels_synonyms_and_header() {
    let (_d, cl) = small();
    assert_eq!(cl.name(), "CL");
    assert_eq!(cl.version(), Some("cl/releases/2026-01-01"));
    // 11 defined terms and the UBERON parent named by part_of.
    assert_eq!(cl.len(), 12);
    let t = cl.term("CL:0000084").unwrap();
    assert_eq!(t.label, "T cell");
    assert_eq!(
        t.synonyms,
        vec!["T lymphocyte".to_string()],
        "RELATED synonyms are not kept"
    );
    assert_eq!(t.parents, vec!["CL:0000542".to_string()]);
    assert!(!t.deprecated);
    assert!(cl.term("CL:0000003").unwrap().deprecated);
    let blood = cl.term("UBERON:0000178").unwrap();
    assert_eq!(blood.label, "");
    assert!(
        cl.term("part_of").is_none(),
        "Typedef stanzas are not terms"
    );
}

#[test]
fn values_resolve_by_id_label_and_exact_synonym_only() {
    let (_d, cl) = small();
    assert_eq!(cl.resolve("CL:0000084").unwrap(), Some("CL:0000084"));
    assert_eq!(cl.resolve("T cell").unwrap(), Some("CL:0000084"));
    assert_eq!(cl.resolve("T lymphocyte").unwrap(), Some("CL:0000084"));
    assert_eq!(cl.resolve("B lymphocyte").unwrap(), Some("CL:0000236"));
    // The obsolete term sharing the label loses to the live one.
    assert_eq!(cl.resolve("B cell").unwrap(), Some("CL:0000236"));
    // Never guessed: other case, extra space, a RELATED synonym.
    for v in ["t cell", "T cell ", "T-cell", "", "CL:9999999"] {
        assert_eq!(cl.resolve(v).unwrap(), None, "{v:?}");
    }
    let e = cl.resolve("hybrid cell").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let msg = e.to_string();
    for part in ["'hybrid cell'", "CL:0000901", "CL:0000902", "cl.obo"] {
        assert!(msg.contains(part), "{part} missing from: {msg}");
    }
}

#[test]
fn ancestors_is_a_descendants_and_depth() {
    let (_d, cl) = small();
    let anc = cl.ancestors("CL:0000788").unwrap();
    assert_eq!(
        anc,
        vec![
            ("CL:0000785", 1),
            ("UBERON:0000178", 1),
            ("CL:0000236", 2),
            ("CL:0000542", 3),
            ("CL:0000000", 4)
        ]
    );
    let hybrid = cl.ancestors("CL:0000900").unwrap();
    assert_eq!(
        hybrid,
        vec![("CL:0000542", 1), ("CL:0000763", 1), ("CL:0000000", 2)]
    );
    assert!(cl.is_a("CL:0000084", "CL:0000542"));
    assert!(cl.is_a("CL:0000084", "CL:0000084"), "a term is_a itself");
    assert!(!cl.is_a("CL:0000542", "CL:0000084"), "not downwards");
    assert!(cl.is_a("CL:0000900", "CL:0000763") && cl.is_a("CL:0000900", "CL:0000542"));
    assert!(!cl.is_a("CL:0000084", "CL:0000236"));
    assert!(
        cl.is_a("CL:0000788", "UBERON:0000178"),
        "part_of is followed"
    );
    assert!(!cl.is_a("CL:0000084", "no such term"));
    assert_eq!(
        cl.descendants("CL:0000236"),
        vec!["CL:0000236", "CL:0000785", "CL:0000788"]
    );
    assert_eq!(cl.depth("CL:0000000"), Some(0));
    assert_eq!(cl.depth("CL:0000084"), Some(2));
    assert_eq!(cl.depth("CL:0000900"), Some(2));
    // The part_of root the file does not define does not make naive B cells shallow.
    assert_eq!(cl.depth("CL:0000788"), Some(4));
    assert_eq!(cl.depth("nope"), None);
    assert!(cl.ancestors("nope").is_none());
}

#[test]
fn is_a_only_ignores_part_of() {
    let dir = scratch("onto");
    let path = write(dir.path(), "cl.obo", OBO);
    let cl = Ontology::load_with(&path, &OboOptions::is_a_only()).unwrap();
    assert!(!cl.is_a("CL:0000788", "UBERON:0000178"));
    assert_eq!(cl.term("CL:0000788").unwrap().parents, vec!["CL:0000785"]);
    assert!(cl.term("UBERON:0000178").is_none());
    assert_eq!(cl.depth("CL:0000788"), Some(4));
}

#[test]
fn cuts_at_a_depth_and_to_a_term_set() {
    let (_d, cl) = small();
    assert_eq!(cl.cut_at_depth("CL:0000788", 2), Some("CL:0000236"));
    assert_eq!(cl.cut_at_depth("CL:0000788", 1), Some("CL:0000542"));
    assert_eq!(cl.cut_at_depth("CL:0000788", 0), Some("CL:0000000"));
    assert_eq!(cl.cut_at_depth("CL:0000788", 9), Some("CL:0000788"));
    assert_eq!(cl.cut_at_depth("CL:0000084", 2), Some("CL:0000084"));
    // Two parents at depth 1, both at distance 1: the smaller id.
    assert_eq!(cl.cut_at_depth("CL:0000900", 1), Some("CL:0000542"));
    assert_eq!(cl.cut_at_depth("nope", 1), None);

    let set = cl.term_set(&["B cell", "CL:0000542", "cell"]).unwrap();
    assert_eq!(set.len(), 3);
    assert_eq!(
        cl.cut_to_terms("CL:0000788", &set).unwrap(),
        Some("CL:0000236")
    );
    assert_eq!(
        cl.cut_to_terms("CL:0000084", &set).unwrap(),
        Some("CL:0000542")
    );
    assert_eq!(
        cl.cut_to_terms("CL:0000763", &set).unwrap(),
        Some("CL:0000000")
    );
    let lymph_only = cl.term_set(&["lymphocyte"]).unwrap();
    assert_eq!(cl.cut_to_terms("CL:0000763", &lymph_only).unwrap(), None);
    // Under two chosen terms, neither under the other.
    let both = cl.term_set(&["lymphocyte", "myeloid cell"]).unwrap();
    let e = cl
        .cut_to_terms("CL:0000900", &both)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("CL:0000900") && e.contains("CL:0000542") && e.contains("CL:0000763"),
        "{e}"
    );
    let e = cl
        .term_set(&["lymphocyte", "plasma blob"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("'plasma blob'"), "{e}");
}

#[test]
fn malformed_files_name_the_file_and_what_was_expected() {
    let dir = scratch("onto");
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "nocolon.obo",
            "format-version: 1.2\n\n[Term]\nid: CL:1\nis_a CL:0\n",
            &["line 5", "expected `tag: value`", "is_a CL:0"],
        ),
        (
            "synonym.obo",
            "[Term]\nid: CL:1\nname: x\nsynonym: T lymphocyte EXACT []\n",
            &["line 4", "quoted synonym"],
        ),
        (
            "noid.obo",
            "[Term]\nname: x\n",
            &["line 1", "without an `id:`"],
        ),
        (
            "twice.obo",
            "[Term]\nid: CL:1\n\n[Term]\nid: CL:1\n",
            &["line 4", "CL:1", "defined again"],
        ),
        (
            "cycle.obo",
            "[Term]\nid: CL:1\nis_a: CL:2\n\n[Term]\nid: CL:2\nis_a: CL:1\n",
            &["cycle", "CL:1", "CL:2"],
        ),
        (
            "header.obo",
            "[Term\nid: CL:1\n",
            &["line 1", "stanza header"],
        ),
        (
            "table.csv",
            "id,label\nCL:1,cell\n",
            &["line 1", "expected `tag: value`"],
        ),
        ("empty.obo", "format-version: 1.2\n", &["no [Term] stanza"]),
        (
            "bad.json",
            "{\"CL:1\": {\"label\": 3}}",
            &["cellxgene ontology JSON", "line 1"],
        ),
        (
            "graphs.json",
            "{\"graphs\": [{\"nodes\": []}]}",
            &["OBO Graphs"],
        ),
    ];
    for (name, text, parts) in cases {
        let path = write(dir.path(), name, text);
        let e = Ontology::load(&path).expect_err(name);
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{name}");
        assert_eq!(e.path(), Some(path.as_path()), "{name}: {e}");
        let msg = e.to_string();
        for part in *parts {
            assert!(msg.contains(part), "{name}: `{part}` missing from: {msg}");
        }
    }
    let garbage = dir.path().join("bad.json.zst");
    std::fs::write(&garbage, [0x28, 0xB5, 0x2F, 0xFD, 1, 2, 3]).unwrap();
    let e = Ontology::load(&garbage).unwrap_err();
    assert!(e.to_string().contains("zstd"), "{e}");
    assert_eq!(e.path(), Some(garbage.as_path()));
    let e = Ontology::load(dir.path().join("missing.obo")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io);
}

/// The cellxgene-ontology-guide format: term -> {label, synonyms, deprecated, ancestors}.
const JSON: &str = r#"{
  "CL:0000000": {"ancestors": {}, "label": "cell", "description": "d", "deprecated": false},
  "CL:0000542": {"ancestors": {"CL:0000000": 1}, "label": "lymphocyte", "deprecated": false},
  "CL:0000236": {"ancestors": {"CL:0000542": 1, "CL:0000000": 2}, "label": "B cell",
                 "synonyms": ["B lymphocyte", "B-cell"], "deprecated": false},
  "CL:0017500": {"ancestors": {"CL:0000000": 2}, "label": "reached through another ontology",
                 "deprecated": false},
  "CL:0000003": {"ancestors": {}, "label": "obsolete native cell", "deprecated": true,
                 "replaced_by": "CL:0000000", "comments": ["c"]}
}"#;

#[test]
fn cellxgene_json_plain_and_zstd() {
    let dir = scratch("onto");
    let plain = write(dir.path(), "CL-ontology-v2026-03-26.json", JSON);
    let zst = dir.path().join("CL-ontology-v2026-04-01.json.zst");
    std::fs::write(&zst, zstd::encode_all(JSON.as_bytes(), 3).unwrap()).unwrap();
    for path in [&plain, &zst] {
        let cl = Ontology::load(path).unwrap();
        assert_eq!(cl.name(), "CL");
        assert_eq!(cl.len(), 5);
        assert_eq!(cl.resolve("B-cell").unwrap(), Some("CL:0000236"));
        assert_eq!(cl.term("CL:0000236").unwrap().parents, vec!["CL:0000542"]);
        assert!(cl.term("CL:0000003").unwrap().deprecated);
        assert!(cl.is_a("CL:0000236", "CL:0000000"));
        assert_eq!(cl.depth("CL:0000236"), Some(2));
        assert_eq!(cl.depth("CL:0000003"), Some(0));
        // Its shipped ancestors are used as they are, even with no parent at distance 1.
        assert!(cl.term("CL:0017500").unwrap().parents.is_empty());
        assert!(cl.is_a("CL:0017500", "CL:0000000"));
        assert_eq!(cl.depth("CL:0017500"), Some(2));
    }
    assert_eq!(
        Ontology::load(&plain).unwrap().version(),
        Some("v2026-03-26")
    );
    // The newest version of a name wins; the name matches ignoring case.
    assert_eq!(locate_in(dir.path(), "CL").unwrap(), zst);
    assert_eq!(locate_in(dir.path(), "cl").unwrap(), zst);
    write(dir.path(), "UBERON.obo", OBO);
    assert_eq!(
        locate_in(dir.path(), "UBERON").unwrap(),
        dir.path().join("UBERON.obo")
    );
    let e = locate_in(dir.path(), "MONDO").unwrap_err().to_string();
    assert!(e.contains("MONDO"), "{e}");
}

fn strings(a: &ArrayRef) -> Vec<Option<String>> {
    let s = arrow::compute::cast(a, &arrow::datatypes::DataType::Utf8).unwrap();
    s.as_string::<i32>()
        .iter()
        .map(|v| v.map(str::to_string))
        .collect()
}

#[test]
fn a_column_resolves_to_ids_and_lists_what_does_not() {
    let (_d, cl) = small();
    let values = vec![
        Some("T cell"),
        Some("B lymphocyte"),
        None,
        Some("unknown"),
        Some("CL:0000785"),
        Some("unknown"),
        Some("t cell"),
        Some("T cell"),
    ];
    let expect: Vec<Option<String>> = values
        .iter()
        .map(|v| v.and_then(|v| cl.resolve(v).unwrap()).map(str::to_string))
        .collect();
    let want_unresolved = vec![
        Unresolved {
            value: "unknown".into(),
            rows: 2,
        },
        Unresolved {
            value: "t cell".into(),
            rows: 1,
        },
    ];

    let plain: ArrayRef = Arc::new(StringArray::from(values.clone()));
    let r = resolve_column(&cl, plain.as_ref(), "cell_type").unwrap();
    assert_eq!(strings(&r.ids), expect);
    assert_eq!(r.unresolved, want_unresolved);
    assert_eq!(r.unresolved_rows(), 3);

    let dict: ArrayRef = Arc::new(
        values
            .iter()
            .copied()
            .collect::<DictionaryArray<Int32Type>>(),
    );
    let r = resolve_column(&cl, dict.as_ref(), "cell_type").unwrap();
    assert!(matches!(
        r.ids.data_type(),
        arrow::datatypes::DataType::Dictionary(..)
    ));
    assert_eq!(strings(&r.ids), expect);
    assert_eq!(r.unresolved, want_unresolved);
    assert_eq!(
        expect,
        vec![
            Some("CL:0000084".into()),
            Some("CL:0000236".into()),
            None,
            None,
            Some("CL:0000785".into()),
            None,
            None,
            Some("CL:0000084".into())
        ]
    );

    let ambiguous: ArrayRef = Arc::new(StringArray::from(vec!["T cell", "hybrid cell"]));
    let e = resolve_column(&cl, ambiguous.as_ref(), "cell_type")
        .unwrap_err()
        .to_string();
    for part in ["cell_type", "'hybrid cell'", "CL:0000901", "CL:0000902"] {
        assert!(e.contains(part), "{part} missing from: {e}");
    }
    let numbers: ArrayRef = Arc::new(arrow::array::Int32Array::from(vec![1, 2]));
    let e = resolve_column(&cl, numbers.as_ref(), "n_genes")
        .unwrap_err()
        .to_string();
    assert!(e.contains("n_genes"), "{e}");
}

mod sql {
    use super::*;
    use cellarrow::corpus::testing::{write_corpus_with, Row, TestCorpusOptions};
    use cellarrow::query::QueryEngine;
    use cellarrow::Corpus;

    /// The cell types of the corpus: B cells annotated at three depths, T cells, a hybrid, an
    /// id the ontology lacks, a null.
    const CELLS: [Option<&str>; 9] = [
        Some("CL:0000236"),
        Some("CL:0000084"),
        Some("CL:0000788"),
        Some("CL:0000785"),
        None,
        Some("CL:0000900"),
        Some("CL:0009999"),
        Some("CL:0000788"),
        Some("CL:0000763"),
    ];

    fn session(cl: Option<Ontology>) -> (tempfile::TempDir, QueryEngine) {
        let dir = scratch("onto-sql");
        let rows: Vec<Row> = (0..CELLS.len() as u32)
            .map(|i| (vec![i % 3], vec![1.0]))
            .collect();
        let ids: ArrayRef = Arc::new(
            CELLS
                .iter()
                .copied()
                .collect::<DictionaryArray<Int32Type>>(),
        );
        let labels: ArrayRef = Arc::new(StringArray::from(
            CELLS
                .iter()
                .map(|c| {
                    c.map(|c| match c {
                        "CL:0000236" => "B cell",
                        "CL:0000084" => "T lymphocyte",
                        "CL:0000788" => "naive B cell",
                        "CL:0000785" => "mature B cell",
                        "CL:0000900" => "lymphoid-myeloid hybrid cell",
                        "CL:0000763" => "myeloid cell",
                        _ => "unknown",
                    })
                })
                .collect::<Vec<_>>(),
        ));
        let opts = TestCorpusOptions {
            obs_columns: vec![("cell_type_id".into(), ids), ("cell_type".into(), labels)],
            ..Default::default()
        };
        write_corpus_with(dir.path(), 3, &rows, &[("a", 5), ("b", 4)], &opts).unwrap();
        let corpus = Arc::new(Corpus::open(dir.path()).unwrap());
        let mut engine = QueryEngine::new(corpus).unwrap();
        if let Some(cl) = cl {
            engine = engine.with_ontology(Arc::new(cl)).unwrap();
        }
        (dir, engine)
    }

    /// The cells whose type is `ancestor` or under it, by the library's own `is_a`.
    fn expected(cl: &Ontology, ancestor: &str) -> Vec<u64> {
        (0..CELLS.len() as u64)
            .filter(|&i| CELLS[i as usize].is_some_and(|c| cl.is_a(c, ancestor)))
            .collect()
    }

    #[test]
    fn the_command_line_loads_an_ontology_by_file_and_by_name() {
        let (dir, cl) = small();
        let obo = dir.path().join("cl.obo");
        let (corpus, _engine) = session(None);
        let sql = "SELECT cell FROM obs WHERE is_a(cell_type_id, 'CL:0000236') ORDER BY cell";
        let want: Vec<String> = expected(&cl, "CL:0000236")
            .iter()
            .map(|c| c.to_string())
            .collect();
        let by_file = crate::common::cli([
            "query".as_ref(),
            corpus.path().as_os_str(),
            "--ontology".as_ref(),
            obo.as_os_str(),
            "--format".as_ref(),
            "csv".as_ref(),
            sql.as_ref(),
        ]);
        assert!(
            by_file.status.success(),
            "{}",
            crate::common::stderr(&by_file)
        );
        let rows: Vec<String> = String::from_utf8_lossy(&by_file.stdout)
            .lines()
            .skip(1)
            .map(str::to_string)
            .collect();
        assert_eq!(rows, want);
        let by_name = std::process::Command::new(crate::common::bin())
            .arg("query")
            .arg(corpus.path())
            .args(["--ontology", "cl", "--format", "csv", sql])
            .env("CELLARROW_ONTOLOGY_DIR", dir.path())
            .output()
            .unwrap();
        assert_eq!(
            by_name.stdout,
            by_file.stdout,
            "{}",
            crate::common::stderr(&by_name)
        );
        let missing = crate::common::cli([
            "query".as_ref(),
            corpus.path().as_os_str(),
            "--ontology".as_ref(),
            dir.path().join("nope.obo").as_os_str(),
            sql.as_ref(),
        ]);
        assert!(!missing.status.success());
        assert!(
            crate::common::stderr(&missing).contains("nope.obo` does not exist"),
            "{}",
            crate::common::stderr(&missing)
        );
    }

    #[test]
    fn is_a_selects_every_descendant_whatever_its_depth() {
        let (_d, cl) = small();
        let check = small().1;
        let (_c, engine) = session(Some(cl));
        let b = engine
            .cohort_where("is_a(cell_type_id, 'CL:0000236')")
            .unwrap();
        assert_eq!(b.to_vec(), vec![0, 2, 3, 7], "B cells at depths 2, 3 and 4");
        assert_eq!(b.to_vec(), expected(&check, "CL:0000236"));
        for ancestor in ["CL:0000542", "CL:0000763", "CL:0000000", "CL:0000785"] {
            let got = engine
                .cohort_where(&format!("is_a(cell_type_id, '{ancestor}')"))
                .unwrap();
            assert_eq!(got.to_vec(), expected(&check, ancestor), "{ancestor}");
        }
        // Labels on either side resolve too.
        let by_label = engine.cohort_where("is_a(cell_type, 'B cell')").unwrap();
        assert_eq!(by_label.to_vec(), vec![0, 2, 3, 7]);
        let lymph = engine
            .cohort_where("is_a(cell_type, 'CL:0000542')")
            .unwrap();
        assert_eq!(lymph.to_vec(), expected(&check, "CL:0000542"));
        // Nulls stay null; an id the ontology lacks is false.
        let batches = engine
            .sql("SELECT is_a(cell_type_id, 'CL:0000084') AS t FROM obs ORDER BY cell")
            .unwrap();
        let t: Vec<Option<bool>> = batches
            .iter()
            .flat_map(|b| b.column(0).as_boolean().iter().collect::<Vec<_>>())
            .collect();
        let f = Some(false);
        assert_eq!(t, vec![f, Some(true), f, f, None, f, f, f, f]);
        // The ancestor may come from a column; one that names no term is an error.
        let both = engine
            .cohort("SELECT cell FROM obs WHERE is_a(cell_type_id, cell_type)")
            .unwrap_err()
            .to_string();
        assert!(both.contains("'unknown'"), "{both}");
    }

    #[test]
    fn the_ontology_table_joins_obs() {
        let (_d, cl) = small();
        let (_c, engine) = session(Some(cl));
        assert!(engine.tables().iter().any(|t| t == "ontology"));
        let b = engine
            .sql(
                "SELECT o.label, o.depth, COUNT(*) AS n FROM obs JOIN ontology o ON o.id = obs.cell_type_id \
                 WHERE o.ontology = 'CL' GROUP BY o.label, o.depth ORDER BY o.depth, o.label",
            )
            .unwrap();
        let mut rows = Vec::new();
        for batch in &b {
            let label = batch.column(0).as_string::<i32>();
            let depth = batch
                .column(1)
                .as_primitive::<arrow::datatypes::UInt32Type>();
            let n = batch
                .column(2)
                .as_primitive::<arrow::datatypes::Int64Type>();
            for i in 0..batch.num_rows() {
                rows.push((label.value(i).to_string(), depth.value(i), n.value(i)));
            }
        }
        let want: Vec<(String, u32, i64)> = vec![
            ("myeloid cell".into(), 1, 1),
            ("B cell".into(), 2, 1),
            ("T cell".into(), 2, 1),
            ("lymphoid-myeloid hybrid cell".into(), 2, 1),
            ("mature B cell".into(), 3, 1),
            ("naive B cell".into(), 4, 2),
        ];
        assert_eq!(rows, want);
        let p = engine
            .sql("SELECT parents FROM ontology WHERE id = 'CL:0000900'")
            .unwrap();
        let parents = p[0].column(0).as_list::<i32>().value(0);
        let parents: Vec<&str> = parents.as_string::<i32>().iter().flatten().collect();
        assert_eq!(parents, vec!["CL:0000542", "CL:0000763"]);
    }

    #[test]
    fn unknown_ancestors_and_missing_ontologies_are_errors() {
        let (_d, cl) = small();
        let (_c, engine) = session(Some(cl));
        let e = engine
            .cohort_where("is_a(cell_type_id, 'CL:1234567')")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("is_a()") && e.contains("CL:1234567") && e.contains("cl.obo"),
            "{e}"
        );
        let e = engine
            .cohort_where("is_a(cell_type_id, 'hybrid cell')")
            .unwrap_err()
            .to_string();
        assert!(e.contains("CL:0000901") && e.contains("CL:0000902"), "{e}");
        let e = engine
            .cohort_where("is_a(cell, 'CL:0000236')")
            .unwrap_err()
            .to_string();
        assert!(e.contains("is_a(term, ancestor)"), "{e}");

        let (_c2, bare) = session(None);
        assert!(!bare.tables().iter().any(|t| t == "ontology"));
        let e = bare
            .cohort_where("is_a(cell_type_id, 'CL:0000236')")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no ontology"), "{e}");
    }
}

/// A Python that has the cellxgene-ontology-guide package: `CELLARROW_PYTHON`, the one of
/// `VIRTUAL_ENV`, else `python3`.
pub fn python_with_guide() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("CELLARROW_PYTHON") {
        candidates.push(p.into());
    }
    if let Some(v) = std::env::var_os("VIRTUAL_ENV") {
        candidates.push(PathBuf::from(v).join("bin/python"));
    }
    candidates.push("python3".into());
    candidates.into_iter().find(|py| {
        Command::new(py)
            .args(["-c", "import cellxgene_ontology_guide.ontology_parser"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

fn run_python(py: &Path, script: &str) -> String {
    let o = Command::new(py).args(["-c", script]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// The newest CL file of the installed cellxgene-ontology-guide package: `CELLARROW_TEST_CL`,
/// else asked of a Python that has the package.
pub fn real_cl(py: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CELLARROW_TEST_CL") {
        return Some(PathBuf::from(p));
    }
    let script = "import importlib.resources as r\n\
        files = [f for f in r.files('cellxgene_ontology_guide').joinpath('data').iterdir() if f.name.startswith('CL-ontology-')]\n\
        print(max(files, key=lambda f: f.name))";
    py.map(|py| PathBuf::from(run_python(py, script)))
}

/// The package's own answers (its `OntologyParser`), to hold this reader against.
const ORACLE: &str = r#"
import json
from cellxgene_ontology_guide.ontology_parser import OntologyParser
p = OntologyParser()
terms = ["CL:0000236", "CL:0000084", "CL:0000542", "CL:0000540", "CL:0000057"]
labels = ["B cell", "T cell", "neuron", "fibroblast", "lymphocyte"]
print(json.dumps({
    "version": p.cxg_schema.supported_ontologies["CL"]["version"],
    "descendants": {t: sorted(p.get_term_descendants(t, include_self=True)) for t in terms},
    "ancestors": {t: p.get_term_ancestors_with_distances(t) for t in terms},
    "parents": {t: sorted(p.get_term_parents(t)) for t in terms},
    "labels": {l: p.get_term_id_by_label(l, "CL") for l in labels},
    "synonyms": {t: p.get_term_synonyms(t) for t in terms},
}))
"#;

#[test]
fn the_real_cell_ontology_of_cellxgene_ontology_guide() {
    let py = python_with_guide();
    let Some(path) = real_cl(py.as_deref()) else {
        eprintln!(
            "skipping: no Cell Ontology file (set CELLARROW_TEST_CL, or install \
             cellxgene-ontology-guide into the Python of CELLARROW_PYTHON or VIRTUAL_ENV)"
        );
        return;
    };
    let cl = Ontology::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(cl.name(), "CL");
    assert!(cl.len() > 2000, "{} terms", cl.len());
    assert_eq!(cl.resolve("B cell").unwrap(), Some("CL:0000236"));
    assert_eq!(cl.resolve("T cell").unwrap(), Some("CL:0000084"));
    assert_eq!(cl.resolve("B lymphocyte").unwrap(), Some("CL:0000236"));
    assert_eq!(cl.resolve("lymphocyte").unwrap(), Some("CL:0000542"));
    assert_eq!(cl.resolve("b cell").unwrap(), None);
    assert!(
        cl.is_a("CL:0000084", "CL:0000542"),
        "T cell is_a lymphocyte"
    );
    assert!(
        cl.is_a("CL:0000236", "CL:0000542"),
        "B cell is_a lymphocyte"
    );
    assert!(!cl.is_a("CL:0000084", "CL:0000236"));
    assert!(cl.is_a("CL:0000084", "CL:0000000"));
    assert_eq!(cl.depth("CL:0000000"), Some(0));
    assert!(cl
        .term("CL:0000084")
        .unwrap()
        .parents
        .contains(&"CL:0000542".to_string()));
    // Every live term is under `cell` and deeper than it.
    for t in cl
        .terms()
        .iter()
        .filter(|t| !t.deprecated && t.id != "CL:0000000")
    {
        assert!(cl.is_a(&t.id, "CL:0000000"), "{} is not under cell", t.id);
        assert!(cl.depth(&t.id).unwrap() >= 1);
    }
    let b = cl.descendants("CL:0000236");
    assert!(
        b.contains(&"CL:0000785") && b.len() > 20,
        "{} B cell types",
        b.len()
    );
    // Cut at depth: every B cell subtype maps onto one term of that depth that it is under.
    for d in [1, 3, 5] {
        for t in &b {
            let c = cl.cut_at_depth(t, d).unwrap();
            assert!(cl.is_a(t, c));
            assert!(cl.depth(c).unwrap() <= d);
        }
    }

    let Some(py) = py else {
        eprintln!("not compared with OntologyParser: no Python with cellxgene-ontology-guide");
        return;
    };
    let oracle: serde_json::Value = serde_json::from_str(&run_python(&py, ORACLE)).unwrap();
    if oracle["version"].as_str() != cl.version() {
        eprintln!(
            "not compared with OntologyParser: it reads CL {}, the file is {:?}",
            oracle["version"],
            cl.version()
        );
        return;
    }
    let list = |v: &serde_json::Value| -> Vec<String> {
        let mut l: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect();
        l.sort();
        l
    };
    for (t, want) in oracle["descendants"].as_object().unwrap() {
        let got: Vec<String> = cl.descendants(t).iter().map(|s| s.to_string()).collect();
        assert_eq!(got, list(want), "descendants of {t}");
    }
    for (t, want) in oracle["ancestors"].as_object().unwrap() {
        let mut want: Vec<(String, u32)> = want
            .as_object()
            .unwrap()
            .iter()
            .map(|(a, d)| (a.clone(), d.as_u64().unwrap() as u32))
            .collect();
        want.sort();
        let mut got: Vec<(String, u32)> = cl
            .ancestors(t)
            .unwrap()
            .into_iter()
            .map(|(a, d)| (a.to_string(), d))
            .collect();
        got.sort();
        assert_eq!(got, want, "ancestors of {t}");
    }
    for (t, want) in oracle["parents"].as_object().unwrap() {
        assert_eq!(cl.term(t).unwrap().parents, list(want), "parents of {t}");
    }
    for (t, want) in oracle["synonyms"].as_object().unwrap() {
        let mut got = cl.term(t).unwrap().synonyms.clone();
        got.sort();
        assert_eq!(got, list(want), "synonyms of {t}");
    }
    for (label, want) in oracle["labels"].as_object().unwrap() {
        assert_eq!(cl.resolve(label).unwrap(), want.as_str(), "label {label}");
    }
    eprintln!(
        "{}: agrees with OntologyParser on the sampled terms",
        path.display()
    );
}

/// `convert --ontology COLUMN=ONTOLOGY`: labels, ids and synonyms become term ids in
/// `COLUMN_ontology_term_id`; values that name no term are listed and left null; a column of
/// ids is checked in place; SQL's `is_a` selects by the new column; an ambiguous label, a
/// missing column or a column the ids would overwrite fail and write nothing.
mod convert_labels {
    use super::*;
    use crate::common::{cli, leftovers, python, stderr};
    use cellarrow::convert::{append, convert, resolve_inputs, ConvertOptions};
    use cellarrow::Corpus;

    /// One cell per label (`-`: missing); a column of ids whose last id the ontology lacks; a
    /// `tissue` column whose id column exists already.
    const SCRIPT: &str = r#"
import sys, anndata as ad, numpy as np, pandas as pd, scipy.sparse as sp
out, labels = sys.argv[1], sys.argv[2].split("|")
n = len(labels)
obs = pd.DataFrame({
    "cell_type": pd.Categorical([None if l == "-" else l for l in labels]),
    "ids_ontology_term_id": ["CL:0000236"] * (n - 1) + ["CL:0009999"],
    "other": np.arange(n),
    "tissue": ["blood"] * n,
    "tissue_ontology_term_id": ["UBERON:0000178"] * n,
}, index=[f"c{i}" for i in range(n)])
x = sp.csr_matrix(np.arange(1, n * 3 + 1, dtype=np.float32).reshape(n, 3))
ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=["g0", "g1", "g2"])).write_h5ad(out)
"#;

    fn h5ad(dir: &Path, name: &str, labels: &[&str]) -> Option<PathBuf> {
        let Some(py) = python() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "no Python with anndata on CI"
            );
            eprintln!("skipping: no Python with anndata (set CELLARROW_PYTHON)");
            return None;
        };
        let out = dir.join(name);
        let o = Command::new(py)
            .args(["-c", SCRIPT])
            .arg(&out)
            .arg(labels.join("|"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        Some(out)
    }

    fn ids(corpus: &Path, column: &str) -> Vec<Option<String>> {
        let c = Corpus::open(corpus).unwrap();
        c.read_table("obs", Some(&[column]))
            .unwrap()
            .iter()
            .flat_map(|b| {
                let col =
                    arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
                strings(&col)
            })
            .collect()
    }

    #[test]
    fn labels_resolve_to_term_ids_beside_them() {
        let (dir, _) = small();
        let obo = dir.path().join("cl.obo");
        let labels = [
            "B cell",
            "T lymphocyte",
            "CL:0000788",
            "mature B cell",
            "blob",
            "blob",
            "-",
        ];
        let Some(file) = h5ad(dir.path(), "a.h5ad", &labels) else {
            return;
        };
        let out = dir.path().join("a.corpus");
        let mut o = ConvertOptions::new(&out);
        o.threads = 1;
        o.ontologies = vec![
            format!("cell_type={}", obo.display()).parse().unwrap(),
            format!("ids_ontology_term_id={}", obo.display())
                .parse()
                .unwrap(),
        ];
        let s = convert(&resolve_inputs(std::slice::from_ref(&file)).unwrap(), &o).unwrap();
        let want: Vec<Option<String>> = [
            Some("CL:0000236"),
            Some("CL:0000084"),
            Some("CL:0000788"),
            Some("CL:0000785"),
            None,
            None,
            None,
        ]
        .iter()
        .map(|v| v.map(String::from))
        .collect();
        assert_eq!(ids(&out, "cell_type_ontology_term_id"), want);
        // The labels stay as they were; a column of ids is kept as it is, even its unknown id.
        assert_eq!(ids(&out, "cell_type")[4].as_deref(), Some("blob"));
        assert_eq!(
            ids(&out, "ids_ontology_term_id")[6].as_deref(),
            Some("CL:0009999")
        );
        let w = s.warnings.join("\n");
        assert!(
            w.contains("obs column `cell_type`: 1 values (2 cells)") && w.contains("\"blob\""),
            "{w}"
        );
        assert!(
            w.contains("`ids_ontology_term_id`") && w.contains("CL:0009999"),
            "{w}"
        );

        // SQL selects by the new column, whatever depth each cell was annotated at.
        let q = cli([
            "query".as_ref(),
            out.as_os_str(),
            "--ontology".as_ref(),
            obo.as_os_str(),
            "--format".as_ref(),
            "csv".as_ref(),
            "SELECT count(*) AS n FROM obs WHERE is_a(cell_type_ontology_term_id, 'CL:0000236')"
                .as_ref(),
        ]);
        assert!(q.status.success(), "{}", stderr(&q));
        let text = String::from_utf8_lossy(&q.stdout);
        assert_eq!(text.trim().lines().last(), Some("3"), "{text}");

        // An append resolves its new cells the same way.
        let Some(more) = h5ad(dir.path(), "b.h5ad", &["naive B cell", "T cell"]) else {
            return;
        };
        o.output = out.clone();
        append(&out, &resolve_inputs(&[more]).unwrap(), &o).unwrap();
        let all = ids(&out, "cell_type_ontology_term_id");
        assert_eq!(
            all[labels.len()..],
            [
                Some("CL:0000788".to_string()),
                Some("CL:0000084".to_string())
            ]
        );
    }

    #[test]
    fn ambiguous_labels_missing_and_clashing_columns_write_nothing() {
        let (dir, _) = small();
        let obo = dir.path().join("cl.obo");
        let Some(file) = h5ad(dir.path(), "a.h5ad", &["B cell", "hybrid cell"]) else {
            return;
        };
        let out = dir.path().join("x.corpus");
        let run = |file: &Path, decl: &str| {
            cli([
                "convert".as_ref(),
                file.as_os_str(),
                "-o".as_ref(),
                out.as_os_str(),
                "--ontology".as_ref(),
                decl.as_ref(),
            ])
        };
        let cases = [
            (
                &file,
                format!("cell_type={}", obo.display()),
                vec!["cell_type", "hybrid cell", "CL:0000901", "CL:0000902"],
            ),
            (
                &file,
                format!("celltype={}", obo.display()),
                vec!["a.h5ad", "no column `celltype`"],
            ),
            (
                &file,
                format!("tissue={}", obo.display()),
                vec!["obs/tissue_ontology_term_id", "exists already"],
            ),
            (&file, "cell_type".to_string(), vec!["COLUMN=ONTOLOGY"]),
            (
                &file,
                "cell_type=no/such.obo".to_string(),
                vec!["no/such.obo", "does not exist"],
            ),
        ];
        for (f, decl, needles) in cases {
            let o = run(f, &decl);
            assert!(!o.status.success(), "{decl}");
            let e = stderr(&o);
            for n in needles {
                assert!(e.contains(n), "{decl}: {e}");
            }
            assert!(!out.exists(), "{decl}");
            assert_eq!(leftovers(&out), Vec::<String>::new(), "{decl}");
        }
    }
}
