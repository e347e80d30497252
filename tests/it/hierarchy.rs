//! Sampling by hierarchy and multi-hot ancestors on the real PBMC fixture with the real Cell
//! Ontology: `tests/fixtures/label_pbmc68k.py` writes the 700 cells' bulk labels as CL ids,
//! labels and synonyms (`cell_type`), and the ontology is the newest CL file of the installed
//! cellxgene-ontology-guide package. Expected classes and rows are computed here from the
//! ontology, independently of the loader.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{UInt64Type, UInt8Type};
use cellarrow::convert::{convert, ConvertOptions, InputSample};
use cellarrow::loader::hierarchy::{MULTI_HOT_COLUMN, TERMS_METADATA};
use cellarrow::loader::{Gatherer, SamplerKind, SamplerSpec, TermList};
use cellarrow::ontology::Ontology;
use cellarrow::sample::{Layout, Shard, ShardPolicy};
use cellarrow::Corpus;

use crate::common::{assert_no_panic, cli, data, python, scratch, stderr};

struct Fixture {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    corpus: Arc<Corpus>,
    cl_path: PathBuf,
    cl: Ontology,
    /// `cell_type` of each cell, as written (ids, labels or synonyms).
    labels: Vec<String>,
}

/// The labelled corpus and the ontology, made once; `None` (with the reason printed) where no
/// Python has anndata or no Cell Ontology file is installed, a failure on CI.
fn fixture() -> Option<&'static Fixture> {
    static F: OnceLock<Option<Fixture>> = OnceLock::new();
    F.get_or_init(|| {
        let guide = crate::ontology::python_with_guide();
        let (Some(py), Some(cl_path)) = (python(), crate::ontology::real_cl(guide.as_deref()))
        else {
            let why = "no Python with anndata, or no Cell Ontology (set CELLARROW_PYTHON, or \
                       CELLARROW_TEST_CL, or install cellxgene-ontology-guide)";
            if std::env::var_os("CI").is_some() {
                panic!("{why}");
            }
            eprintln!("skipping the hierarchy tests: {why}");
            return None;
        };
        let dir = scratch("hierarchy");
        let h5ad = dir.path().join("pbmc_cl.h5ad");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/label_pbmc68k.py");
        let o = Command::new(&py)
            .arg(&script)
            .arg(data("scanpy_pbmc68k_reduced.modern.h5ad"))
            .arg(&h5ad)
            .output()
            .expect("running label_pbmc68k.py");
        assert!(o.status.success(), "label_pbmc68k.py: {}", stderr(&o));
        let out = dir.path().join("pbmc.corpus");
        let input = InputSample {
            path: h5ad,
            sample_id: "pbmc".into(),
            metadata: Default::default(),
        };
        convert(&[input], &ConvertOptions::new(&out)).unwrap();
        let corpus = Arc::new(Corpus::open(&out).unwrap());
        let obs = corpus.read_table("obs", Some(&["cell_type"])).unwrap();
        let mut labels = Vec::new();
        for b in &obs {
            let col = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
            labels.extend(
                col.as_string::<i32>()
                    .iter()
                    .map(|v| v.unwrap().to_string()),
            );
        }
        assert_eq!(labels.len(), 700);
        let cl = Ontology::load(&cl_path).unwrap();
        Some(Fixture {
            dir: dir.path().to_path_buf(),
            _dir: dir,
            corpus,
            cl_path,
            cl,
            labels,
        })
    })
    .as_ref()
}

impl Fixture {
    /// The term id of each cell's label, by the ontology's own resolution.
    fn terms(&self) -> Vec<&str> {
        self.labels
            .iter()
            .map(|l| {
                self.cl
                    .resolve(l)
                    .unwrap()
                    .expect("every label names a term")
            })
            .collect()
    }

    fn spec(&self, f: impl FnOnce(&mut SamplerSpec)) -> SamplerSpec {
        let mut s = SamplerSpec {
            balance: Some("cell_type".into()),
            ontology: Some(self.cl_path.to_string_lossy().into_owned()),
            batch_size: Some(64),
            ..SamplerSpec::new(SamplerKind::Random, 11)
        };
        f(&mut s);
        s
    }

    /// The cells `spec` serves, in order.
    fn cells(&self, spec: &SamplerSpec) -> Vec<u64> {
        let mut spec = spec.clone();
        let cohort = spec.select(&self.corpus, None).unwrap();
        let plan = spec.plan(&self.corpus, cohort).unwrap().plan;
        (0..plan.n_batches())
            .flat_map(|i| plan.batch(i).unwrap().cells)
            .collect()
    }
}

/// Served draws per class against the binomial expectation: each of `k` classes gets
/// `n / k` draws in expectation, and a class farther than 6 standard deviations from it
/// (a chance below 1e-8 per class whatever the seed) fails.
fn assert_balanced(served: &BTreeMap<String, u64>, k: usize) {
    assert_eq!(served.len(), k, "every class is drawn: {served:?}");
    let n: u64 = served.values().sum();
    let p = 1.0 / k as f64;
    let mean = n as f64 * p;
    let margin = 6.0 * (n as f64 * p * (1.0 - p)).sqrt();
    for (class, &got) in served {
        assert!(
            (got as f64 - mean).abs() <= margin,
            "{class}: {got} draws of {n}, expected {mean:.0} +- {margin:.0}: {served:?}"
        );
    }
}

#[test]
fn a_balanced_epoch_draws_every_class_of_a_level_equally_often() {
    let Some(f) = fixture() else { return };
    let level = 3;
    let terms = f.terms();
    let class_of: Vec<&str> = terms
        .iter()
        .map(|t| f.cl.cut_at_depth(t, level).unwrap())
        .collect();
    let mut sizes: BTreeMap<&str, u64> = BTreeMap::new();
    for c in &class_of {
        *sizes.entry(c).or_default() += 1;
    }
    assert!(
        sizes.len() >= 3,
        "several classes at level {level}: {sizes:?}"
    );
    let above = terms
        .iter()
        .filter(|t| f.cl.depth(t).unwrap() < level)
        .count() as u64;
    assert_eq!(
        above, 13,
        "the CD34+ cells, hematopoietic stem cells, lie above"
    );

    let spec = f.spec(|s| s.level = Some(level));
    let mut s = spec.clone();
    let cohort = s.select(&f.corpus, None).unwrap();
    let planned = s.plan(&f.corpus, cohort).unwrap();
    let report = planned.balance.as_ref().unwrap().report().clone();
    let got: BTreeMap<&str, u64> = report
        .classes
        .iter()
        .map(|c| (c.class.as_str(), c.cells))
        .collect();
    assert_eq!(got, sizes);
    for c in &report.classes {
        assert_eq!(c.weight, 1.0 / c.cells as f64);
        assert_eq!(c.label, f.cl.term(&c.class).unwrap().label);
        assert!((c.probability - 1.0 / sizes.len() as f64).abs() < 1e-12);
    }
    assert_eq!(
        (report.cells, report.draws, report.own_label),
        (700, 700, above)
    );
    assert_eq!((report.left_out_null, report.left_out_outside), (0, 0));
    assert_eq!(report.effective_classes, sizes.len() as f64);
    let h: f64 = sizes
        .values()
        .map(|&n| n as f64 / 700.0)
        .map(|p| -p * p.ln())
        .sum();
    assert!((report.effective_classes_unbalanced - h.exp()).abs() < 1e-9);
    assert_eq!(planned.epoch_len, 700);

    // Ten epochs, 7,000 draws: each class near a quarter, however small it is in the cohort.
    let mut served: BTreeMap<String, u64> = BTreeMap::new();
    for epoch in 0..10 {
        let cells = f.cells(&SamplerSpec {
            epoch,
            ..spec.clone()
        });
        assert_eq!(cells.len(), 700);
        for c in cells {
            *served.entry(class_of[c as usize].to_string()).or_default() += 1;
        }
    }
    assert_balanced(&served, sizes.len());
    // Without balancing the smallest class would get 13 draws an epoch.
    let smallest = sizes.iter().min_by_key(|(_, &n)| n).unwrap();
    assert!(served[*smallest.0] > 10 * 13 * 5, "{served:?}");
}

#[test]
fn chosen_terms_make_the_classes_and_cells_under_none_are_left_out() {
    let Some(f) = fixture() else { return };
    let file = f.dir.join("coarse.txt");
    std::fs::write(
        &file,
        "# lineages\nB cell\nCL:0000084 ! T cell\nmonocyte\ndendritic cell\nNK cell\n",
    )
    .unwrap();
    let set =
        f.cl.term_set(&[
            "B cell",
            "CL:0000084",
            "monocyte",
            "dendritic cell",
            "NK cell",
        ])
        .unwrap();
    let class_of: Vec<Option<&str>> = f
        .terms()
        .iter()
        .map(|t| f.cl.cut_to_terms(t, &set).unwrap())
        .collect();
    let outside = class_of.iter().filter(|c| c.is_none()).count() as u64;
    assert_eq!(outside, 13, "hematopoietic stem cells are under none");
    let spec = f.spec(|s| s.balance_terms = Some(TermList::File(file.clone())));
    let mut s = spec.clone();
    let cohort = s.select(&f.corpus, None).unwrap();
    let planned = s.plan(&f.corpus, cohort).unwrap();
    let report = planned.balance.as_ref().unwrap().report().clone();
    assert_eq!(report.left_out_outside, outside);
    assert_eq!(report.cells, 700 - outside);
    assert_eq!(report.classes.len(), 5);
    assert_eq!(report.cut, "5 chosen terms");
    let mut served: BTreeMap<String, u64> = BTreeMap::new();
    for epoch in 0..10 {
        for c in f.cells(&SamplerSpec {
            epoch,
            ..spec.clone()
        }) {
            let class = class_of[c as usize].expect("a cell left out is never drawn");
            *served.entry(class.to_string()).or_default() += 1;
        }
    }
    assert_balanced(&served, 5);

    // The same classes from a list; a list entry that names no term is an error naming it.
    let listed = f.spec(|s| {
        s.balance_terms = Some(TermList::List(
            [
                "B cell",
                "T cell",
                "monocyte",
                "dendritic cell",
                "natural killer cell",
            ]
            .map(String::from)
            .to_vec(),
        ))
    });
    assert_eq!(f.cells(&listed), f.cells(&spec));
    let mut bad =
        f.spec(|s| s.balance_terms = Some(TermList::List(vec!["B cell".into(), "B cells".into()])));
    let cohort = bad.select(&f.corpus, None).unwrap();
    let e = bad.plan(&f.corpus, cohort).err().unwrap().to_string();
    assert!(
        e.contains("'B cells'") && e.contains("balance_terms"),
        "{e}"
    );
}

#[test]
fn shards_and_a_resumed_stream_serve_the_single_stream() {
    let Some(f) = fixture() else { return };
    let spec = f.spec(|s| {
        s.level = Some(3);
        s.batch_size = Some(32);
        s.epoch = 2;
    });
    let single = f.cells(&spec);
    assert_eq!(single.len(), 700);
    // 2 ranks x 2 workers: each shard's cells, put back at their global positions.
    let mut merged = vec![u64::MAX; single.len()];
    for rank in 0..2 {
        for worker in 0..2 {
            let shard = Shard::new(rank, 2, worker, 2).unwrap();
            let cells = f.cells(&SamplerSpec {
                rank,
                world_size: 2,
                worker,
                num_workers: 2,
                ..spec.clone()
            });
            let layout = Layout::new(700, 0, shard, ShardPolicy::Even).unwrap();
            assert_eq!(cells.len() as u64, layout.len());
            for (i, c) in cells.iter().enumerate() {
                merged[layout.global(i as u64) as usize] = *c;
            }
            // Resuming this shard after 37 cells serves the rest of it.
            let resumed = f.cells(&SamplerSpec {
                rank,
                world_size: 2,
                worker,
                num_workers: 2,
                position: 37,
                ..spec.clone()
            });
            assert_eq!(resumed, cells[37..], "rank {rank} worker {worker}");
        }
    }
    assert_eq!(merged, single);
    let resumed = f.cells(&SamplerSpec {
        position: 300,
        ..spec.clone()
    });
    assert_eq!(resumed, single[300..]);
    assert_ne!(
        f.cells(&SamplerSpec {
            epoch: 3,
            ..spec.clone()
        }),
        single,
        "each epoch draws anew"
    );
}

#[test]
fn labels_that_name_no_term_are_an_error_listing_them() {
    let Some(f) = fixture() else { return };
    for setting in ["balance", "multi_hot"] {
        let mut spec = f.spec(|s| {
            s.balance = None;
            match setting {
                "balance" => s.balance = Some("bulk_labels".into()),
                _ => s.multi_hot = Some("bulk_labels".into()),
            }
        });
        let cohort = spec.select(&f.corpus, None).unwrap();
        let e = spec.plan(&f.corpus, cohort).err().unwrap();
        let msg = e.to_string();
        for part in [
            setting,
            "`bulk_labels`",
            "'Dendritic' (240 cells)",
            "'CD34+' (13 cells)",
            "10 values",
        ] {
            assert!(msg.contains(part), "{part} missing from: {msg}");
        }
    }
    // Without an ontology the values themselves are the classes.
    let plain = f.spec(|s| {
        s.balance = Some("bulk_labels".into());
        s.ontology = None;
    });
    let mut s = plain.clone();
    let cohort = s.select(&f.corpus, None).unwrap();
    let report = s
        .plan(&f.corpus, cohort)
        .unwrap()
        .balance
        .unwrap()
        .report()
        .clone();
    assert_eq!(report.classes.len(), 10);
    assert_eq!(report.cut, "values");
    assert!(report
        .classes
        .iter()
        .any(|c| c.class == "CD34+" && c.cells == 13));
}

/// Sets how a spec chooses the multi-hot terms.
type ChooseTerms = Box<dyn Fn(&mut SamplerSpec)>;

/// The rows of `batch`'s multi-hot column.
fn rows(batch: &RecordBatch) -> Vec<Vec<u8>> {
    let col = batch
        .column_by_name(MULTI_HOT_COLUMN)
        .unwrap()
        .as_fixed_size_list();
    (0..col.len())
        .map(|i| col.value(i).as_primitive::<UInt8Type>().values().to_vec())
        .collect()
}

#[test]
fn multi_hot_rows_are_each_label_and_its_ancestors() {
    let Some(f) = fixture() else { return };
    let terms = f.terms();
    // Plain: each cell's term and every ancestor the ontology lists for it.
    let lineage: Vec<BTreeSet<String>> = terms
        .iter()
        .map(|t| {
            let mut s: BTreeSet<String> =
                f.cl.ancestors(t)
                    .unwrap()
                    .into_iter()
                    .map(|(a, _)| a.to_string())
                    .collect();
            s.insert(t.to_string());
            s
        })
        .collect();
    let reached: BTreeSet<String> = lineage.iter().flatten().cloned().collect();
    let by_depth = |mut v: Vec<String>| {
        v.sort_by_key(|t| (f.cl.depth(t).unwrap(), t.clone()));
        v
    };
    let listed = [
        "myeloid cell",
        "lymphocyte",
        "T cell",
        "B lymphocyte",
        "CL:0000037",
    ];
    let cases: Vec<(&str, Vec<String>, ChooseTerms)> = vec![
        (
            "reached",
            by_depth(reached.iter().cloned().collect()),
            Box::new(|_| {}),
        ),
        (
            "level 3",
            by_depth(
                reached
                    .iter()
                    .filter(|t| f.cl.depth(t).unwrap() <= 3)
                    .cloned()
                    .collect(),
            ),
            Box::new(|s| s.multi_hot_level = Some(3)),
        ),
        (
            "listed",
            listed
                .iter()
                .map(|t| f.cl.resolve(t).unwrap().unwrap().to_string())
                .collect(),
            Box::new(move |s| {
                s.multi_hot_terms = Some(TermList::List(listed.map(String::from).to_vec()))
            }),
        ),
    ];
    let all: Vec<u64> = (0..700).collect();
    for (name, want_terms, set) in cases {
        let spec = f.spec(|s| {
            s.balance = None;
            s.multi_hot = Some("cell_type".into());
            set(s);
        });
        let g = Gatherer::new(f.corpus.clone(), spec.batch_options()).unwrap();
        let mh = g.multi_hot().unwrap();
        assert_eq!(mh.terms(), want_terms, "{name}");
        let batch = g.gather(&all, None).unwrap();
        let field = batch
            .schema()
            .field_with_name(MULTI_HOT_COLUMN)
            .unwrap()
            .clone();
        let meta: Vec<String> = serde_json::from_str(&field.metadata()[TERMS_METADATA]).unwrap();
        assert_eq!(meta, want_terms, "{name}: the field metadata");
        for (cell, row) in rows(&batch).iter().enumerate() {
            let want: Vec<u8> = want_terms
                .iter()
                .map(|t| u8::from(lineage[cell].contains(t)))
                .collect();
            assert_eq!(*row, want, "{name}: cell {cell} ({})", f.labels[cell]);
        }
        // Any order of cells, repeats too: the rows follow the cells.
        let some = g.gather(&[5, 699, 5, 0], None).unwrap();
        let full = rows(&batch);
        assert_eq!(
            rows(&some),
            [5, 699, 5, 0].map(|c| full[c].clone()),
            "{name}"
        );
    }
}

#[test]
fn the_command_line_prints_the_classes_and_writes_the_library_batches() {
    let Some(f) = fixture() else { return };
    let cl = f.cl_path.to_string_lossy().into_owned();
    let corpus = f.corpus.root().to_string_lossy().into_owned();
    let spec = f.spec(|s| {
        s.level = Some(3);
        s.multi_hot = Some("cell_type".into());
        s.multi_hot_level = Some(2);
    });
    let args = [
        "--balance",
        "cell_type",
        "--ontology",
        &cl,
        "--level",
        "3",
        "--multi-hot",
        "cell_type",
        "--multi-hot-level",
        "2",
        "--seed",
        "11",
        "--batch-size",
        "64",
    ];
    let out = f.dir.join("balanced.arrows");
    let mut all: Vec<&str> = vec!["sample", &corpus];
    all.extend(args);
    let o = cli(all.iter().chain(&["-o", out.to_str().unwrap()]));
    assert_no_panic("sample", &o);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    let mut s = spec.clone();
    let cohort = s.select(&f.corpus, None).unwrap();
    let planned = s.plan(&f.corpus, cohort).unwrap();
    let report = planned.balance.as_ref().unwrap().report().clone();
    for c in &report.classes {
        assert!(
            err.lines()
                .any(|l| l.contains(&c.class) && l.contains(&format!(" {} ", c.cells))),
            "{} ({} cells) missing from:\n{err}",
            c.class,
            c.cells
        );
    }
    assert!(err.contains("multi_hot: obs column `cell_type`"), "{err}");
    let written: Vec<RecordBatch> =
        arrow::ipc::reader::StreamReader::try_new(std::fs::File::open(&out).unwrap(), None)
            .unwrap()
            .map(|b| b.unwrap())
            .collect();
    let g = Gatherer::new(f.corpus.clone(), spec.batch_options()).unwrap();
    let want: Vec<RecordBatch> = (0..planned.plan.n_batches())
        .map(|i| g.gather_request(&planned.plan.batch(i).unwrap()).unwrap())
        .collect();
    assert_eq!(written, want);

    // The summary: the classes, and the draws each got.
    let mut all: Vec<&str> = vec!["sample", &corpus];
    all.extend(args);
    all.push("--summary");
    let o = cli(&all);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let class_of: HashMap<u64, usize> = want
        .iter()
        .flat_map(|b| {
            b.column_by_name("cell")
                .unwrap()
                .as_primitive::<UInt64Type>()
                .values()
                .to_vec()
        })
        .map(|c| (c, planned.balance.as_ref().unwrap().class_of(c).unwrap()))
        .collect();
    let mut served = vec![0u64; report.classes.len()];
    for b in &want {
        for c in b
            .column_by_name("cell")
            .unwrap()
            .as_primitive::<UInt64Type>()
            .values()
        {
            served[class_of[c]] += 1;
        }
    }
    assert!(
        text.contains(&format!("{} classes over 700 cells", report.classes.len())),
        "{text}"
    );
    for (c, n) in report.classes.iter().zip(&served) {
        let line = format!("{}  {n:>8}  {}", c.class, c.label);
        assert!(text.contains(&line), "`{line}` missing from:\n{text}");
    }
}
