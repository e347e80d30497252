//! `convert::append`: a corpus grown by appends equals the corpus converted at once; existing
//! parts and table files keep their bytes, and each append adds table files of its new rows
//! only; new data that needs wider types gets them in its own parts, and the loader serves
//! parts of different types in one output type; a file already in the corpus or bad input
//! leave it untouched; the lock keeps a second writer out; a reader keeps its snapshot; a kill
//! at every stage leaves the old corpus or the new one; a format-1 corpus grows into format 2.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use arrow::array::{Array, AsArray};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Float64Type, UInt32Type};
use arrow::record_batch::RecordBatch;
use cellarrow::convert::kill::{CONVERT_STAGES, KILL_AT_VAR};
use cellarrow::convert::lock::lock_path;
use cellarrow::convert::{append, convert, resolve_inputs, ConvertOptions, InputSample};
use cellarrow::corpus::{validate, IndexType, ValueType};
use cellarrow::loader::{BatchOptions, Gatherer, IndexOutput, ValueOutput};
use cellarrow::Corpus;

use crate::common::*;

fn debian() -> PathBuf {
    data("debian_sctransform_pbmc_counts.h5ad")
}

fn scvi() -> PathBuf {
    data("scvi_pbmc_5k_protein_v3_200cells.h5ad")
}

fn options(out: &Path) -> ConvertOptions {
    let mut o = ConvertOptions::new(out);
    o.threads = 1;
    o
}

fn inputs(files: &[PathBuf]) -> Vec<InputSample> {
    resolve_inputs(files).unwrap()
}

/// A whole table as cellarrow reads it (every file of a format-2 dataset, or the one file of
/// format 1).
fn table(dir: &Path, name: &str) -> RecordBatch {
    let batches = Corpus::open(dir).unwrap().read_table(name, None).unwrap();
    concat_batches(&batches[0].schema(), &batches).unwrap()
}

/// The table files of `table` listed in the manifest.
fn table_files(dir: &Path, table: &str) -> Vec<String> {
    Corpus::open(dir).unwrap().manifest().table_paths(table)
}

/// Every cell's gene ids and values.
fn cells(dir: &Path) -> Vec<(Vec<u32>, Vec<f64>)> {
    let c = Corpus::open(dir).unwrap();
    (0..c.n_cells())
        .map(|i| (c.indices(i).to_u32_vec(), c.values(i).to_f64_vec()))
        .collect()
}

fn assert_same_table(a: &RecordBatch, b: &RecordBatch, what: &str) {
    assert_eq!(a.num_rows(), b.num_rows(), "{what}: rows");
    let mut names: Vec<_> = a
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let mut other: Vec<_> = b
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    names.sort();
    other.sort();
    assert_eq!(names, other, "{what}: columns");
    for n in &names {
        let (x, y) = (a.column_by_name(n).unwrap(), b.column_by_name(n).unwrap());
        assert_eq!(x.data_type(), y.data_type(), "{what}.{n}: type");
        assert_eq!(x.to_data(), y.to_data(), "{what}.{n}: values");
    }
}

/// A corpus built by one convert of three files equals one built by a convert of the first
/// and two appends: same cells, values, genes, obs and samples.
#[test]
fn convert_and_two_appends_equal_one_convert() {
    let tmp = scratch("append-eq");
    let whole = tmp.path().join("whole.corpus");
    let grown = tmp.path().join("grown.corpus");
    let files = [chr21(), debian(), scvi()];
    convert(&inputs(&files), &options(&whole)).unwrap();

    convert(&inputs(&files[..1]), &options(&grown)).unwrap();
    let first_part = std::fs::read(grown.join("matrix/part-00000.arrow")).unwrap();
    let first_manifest = Corpus::open(&grown).unwrap().manifest().clone();
    let obs_columns = |d: &Path| -> Vec<String> {
        let s = Corpus::open(d).unwrap().table_schema("obs").unwrap();
        s.fields().iter().map(|f| f.name().clone()).collect()
    };
    let before = obs_columns(&grown);
    let s = append(&grown, &inputs(&files[1..2]), &options(&grown)).unwrap();
    assert_eq!(s.n_samples, 2);
    // Same obs columns: the old obs file is linked, the new rows get their own file.
    assert_eq!(obs_columns(&grown), before);
    assert_eq!(
        table_files(&grown, "obs"),
        ["obs/part-00000.parquet", "obs/part-00001.parquet"]
    );
    append(&grown, &inputs(&files[2..]), &options(&grown)).unwrap();
    // The third file brings obs columns the others lack: the old obs rows were written once
    // more, in the grown schema, into one new file beside the new rows' file (the old files
    // are no longer listed); every obs file has the grown schema (validate checks it).
    let after = obs_columns(&grown);
    assert!(
        after.len() > before.len() && after[..before.len()] == before[..],
        "{before:?} -> {after:?}"
    );
    assert_eq!(
        table_files(&grown, "obs"),
        ["obs/part-00002.parquet", "obs/part-00003.parquet"]
    );

    validate(&grown).unwrap();
    let (a, b) = (Corpus::open(&whole).unwrap(), Corpus::open(&grown).unwrap());
    assert_eq!(a.n_cells(), b.n_cells());
    assert_eq!(a.n_genes(), b.n_genes());
    assert_eq!(a.nnz(), b.nnz());
    assert_eq!(a.manifest().samples, b.manifest().samples);
    assert_eq!(a.manifest().index_type, b.manifest().index_type);
    assert_eq!(a.manifest().value_type, b.manifest().value_type);
    assert_eq!(cells(&whole), cells(&grown));
    for t in ["genes", "obs", "samples"] {
        assert_same_table(&table(&whole, t), &table(&grown, t), t);
    }
    // Each append added a file to every table but genes where it brought no new gene.
    assert_eq!(table_files(&grown, "samples").len(), 3);
    assert_eq!(table_files(&grown, "gene_counts").len(), 3);

    // The first sample's part is the very same bytes, listed with the same checksum, and the
    // lineage records both appends with their sources.
    assert_eq!(
        std::fs::read(grown.join("matrix/part-00000.arrow")).unwrap(),
        first_part
    );
    let m = b.manifest();
    let part0 = |m: &cellarrow::corpus::Manifest| m.file("matrix/part-00000.arrow").cloned();
    assert_eq!(part0(m), part0(&first_manifest));
    assert_eq!(m.samples[0], first_manifest.samples[0]);
    assert_eq!(m.lineage.len(), 2);
    assert_eq!(
        m.lineage[0].sources[0].sample_id,
        inputs(&files[1..2])[0].sample_id
    );
    assert_eq!(m.lineage[1].first_cell, a.manifest().samples[2].first_cell);
    assert!(!lock_path(&grown).unwrap().exists());
    assert_eq!(leftovers(&grown), Vec::<String>::new());
}

/// A reader that opened the corpus before an append keeps reading what it opened.
#[test]
fn a_reader_keeps_its_snapshot_across_an_append() {
    let tmp = scratch("append-snap");
    let dir = tmp.path().join("c.corpus");
    convert(&inputs(&[chr21()]), &options(&dir)).unwrap();
    let before = cells(&dir);
    let reader = Corpus::open(&dir).unwrap();
    append(&dir, &inputs(&[debian()]), &options(&dir)).unwrap();
    assert_eq!(reader.n_cells(), before.len() as u64);
    for (i, (idx, val)) in before.iter().enumerate() {
        assert_eq!(&reader.indices(i as u64).to_u32_vec(), idx);
        assert_eq!(&reader.values(i as u64).to_f64_vec(), val);
    }
    // And the grown corpus starts with the same cells.
    assert_eq!(cells(&dir)[..before.len()], before[..]);
}

/// Each refused append names its cause and leaves every byte of the corpus as it was.
#[test]
fn refused_appends_leave_the_corpus_unchanged() {
    let tmp = scratch("append-bad");
    let dir = tmp.path().join("c.corpus");
    convert(&inputs(&[chr21()]), &options(&dir)).unwrap();
    let before = snapshot(&dir);

    let again = tmp.path().join("again.h5ad");
    std::fs::copy(chr21(), &again).unwrap();
    let not_hdf5 = tmp.path().join("bad.h5ad");
    std::fs::write(&not_hdf5, b"not hdf5").unwrap();
    let cases: Vec<(Vec<PathBuf>, &str, &str)> = vec![
        // The same bytes under another name and sample id.
        (vec![again.clone()], "already in the corpus", "again.h5ad"),
        (vec![not_hdf5.clone()], "", "bad.h5ad"),
        // A sample id already in the corpus.
        (vec![chr21()], "already in the corpus", "chr21"),
    ];
    for (files, msg, names) in cases {
        let e = append(&dir, &inputs(&files), &options(&dir)).unwrap_err();
        let text = format!("{e}");
        assert!(text.contains(msg), "{files:?}: {text}");
        assert!(text.contains(names), "{files:?}: {text}");
        assert_eq!(snapshot(&dir), before, "{files:?}");
        assert_eq!(leftovers(&dir), Vec::<String>::new());
        assert!(!lock_path(&dir).unwrap().exists());
    }
}

/// A lock held by a running process refuses the append; one left by a dead process is taken
/// over.
#[test]
fn the_lock_keeps_a_second_writer_out_and_a_stale_lock_is_recovered() {
    let tmp = scratch("append-lock");
    let dir = tmp.path().join("c.corpus");
    convert(&inputs(&[chr21()]), &options(&dir)).unwrap();
    let before = snapshot(&dir);
    let lock = lock_path(&dir).unwrap();

    // The test runner's parent is running for as long as this test.
    let live = unsafe { libc::getppid() };
    std::fs::write(&lock, format!("{live}\n")).unwrap();
    let e = append(&dir, &inputs(&[debian()]), &options(&dir)).unwrap_err();
    assert!(
        format!("{e}").contains(&format!("locked by process {live}")),
        "{e}"
    );
    assert_eq!(snapshot(&dir), before);
    assert!(lock.exists(), "another owner's lock is left alone");

    // The largest possible pid is never a live process here.
    std::fs::write(&lock, "4194304\n").unwrap();
    append(&dir, &inputs(&[debian()]), &options(&dir)).unwrap();
    assert!(!lock.exists());
    validate(&dir).unwrap();
}

const CHILD_VAR: &str = "CELLARROW_IT_APPEND_CHILD";

/// Not a test on its own: the process that a crash test starts and kills. It appends the file
/// named in its environment to the corpus named there.
#[test]
fn append_child() {
    let Ok(args) = std::env::var(CHILD_VAR) else {
        return;
    };
    let (dir, file) = args.split_once('\n').unwrap();
    let dir = Path::new(dir);
    append(dir, &inputs(&[PathBuf::from(file)]), &options(dir)).unwrap();
}

/// A kill -9 at every stage of an append leaves the old corpus (in place, or aside and restored
/// by the next writer); the next append succeeds and leaves nothing behind.
#[test]
fn kill_at_every_append_stage_leaves_the_old_corpus() {
    let tmp = scratch("append-kill");
    let dir = tmp.path().join("c.corpus");
    let pristine = tmp.path().join("pristine.corpus");
    convert(&inputs(&[chr21()]), &options(&pristine)).unwrap();
    let before = snapshot(&pristine);
    let old_cells = Corpus::open(&pristine).unwrap().n_cells();

    for &stage in CONVERT_STAGES {
        let _ = std::fs::remove_dir_all(&dir);
        copy_dir(&pristine, &dir);
        let o = Command::new(std::env::current_exe().unwrap())
            .args([
                "append::append_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                CHILD_VAR,
                format!("{}\n{}", dir.display(), debian().display()),
            )
            .env(KILL_AT_VAR, stage)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(
            o.status.signal(),
            Some(libc::SIGKILL),
            "{stage}: not killed ({}): {err}",
            o.status
        );
        assert!(
            err.contains(&format!("killed at {stage} ")),
            "{stage}: {err}"
        );
        if stage == "before-rename" {
            // The old corpus is aside, complete, until the next writer puts it back.
            assert!(!dir.exists(), "{stage}");
            let aside: Vec<_> = leftovers(&dir)
                .into_iter()
                .filter(|n| n.contains(".cellarrow-old-"))
                .collect();
            assert_eq!(aside.len(), 1, "{stage}: {:?}", leftovers(&dir));
            assert_eq!(snapshot(&tmp.path().join(&aside[0])), before, "{stage}");
        } else {
            assert_eq!(snapshot(&dir), before, "{stage}");
        }
        // The killed writer's lock is left with its dead pid.
        assert!(lock_path(&dir).unwrap().exists(), "{stage}");

        append(&dir, &inputs(&[debian()]), &options(&dir))
            .unwrap_or_else(|e| panic!("{stage}: the next append failed: {e}"));
        validate(&dir).unwrap();
        let c = Corpus::open(&dir).unwrap();
        assert!(c.n_cells() > old_cells, "{stage}");
        assert_eq!(c.manifest().lineage.len(), 1, "{stage}");
        assert_eq!(leftovers(&dir), Vec::<String>::new(), "{stage}");
        assert!(!lock_path(&dir).unwrap().exists(), "{stage}");
    }
}

/// A corpus written before appends existed (kept in tests/data) opens, validates and grows;
/// its cells read the same after the append.
#[test]
fn a_corpus_written_before_appends_existed_grows() {
    let tmp = scratch("append-format1");
    let dir = tmp.path().join("visium49.corpus");
    copy_dir(&data("format1/visium49.corpus"), &dir);
    validate(&dir).unwrap();
    assert_eq!(Corpus::open(&dir).unwrap().manifest().format_version, 1);
    let before = cells(&dir);
    let old_obs = table(&dir, "obs");
    let old_genes = table(&dir, "genes");
    let old_samples = table(&dir, "samples");
    append(&dir, &inputs(&[chr21()]), &options(&dir)).unwrap();
    validate(&dir).unwrap();
    // Now format 2: the single-file tables became the first files of the datasets (samples
    // written again once, with the `species` column the fixture predates); genes split into
    // identity and counts, served as before.
    let m = Corpus::open(&dir).unwrap().manifest().clone();
    assert_eq!(m.format_version, 2);
    assert!(!dir.join("obs.parquet").exists());
    let samples = table(&dir, "samples");
    for f in old_samples.schema().fields() {
        let (o, n) = (
            old_samples.column_by_name(f.name()).unwrap(),
            samples.column_by_name(f.name()).unwrap(),
        );
        let n = arrow::compute::cast(&n.slice(0, o.len()), o.data_type()).unwrap();
        assert_eq!(n.to_data(), o.to_data(), "{}", f.name());
    }
    assert_eq!(samples.num_rows(), old_samples.num_rows() + 1);
    let genes = table(&dir, "genes");
    for c in ["gene", "name"] {
        let (o, n) = (
            old_genes.column_by_name(c).unwrap(),
            genes.column_by_name(c).unwrap(),
        );
        assert_eq!(n.slice(0, o.len()).to_data(), o.to_data(), "{c}");
    }
    for c in cellarrow::genes::table::IDENTITY_COLUMNS {
        assert!(genes.column_by_name(c).is_some(), "{c}");
    }
    let after = cells(&dir);
    assert_eq!(after[..before.len()], before[..]);
    assert_eq!(after.len() as u64, before.len() as u64 + 1107);
    let obs = table(&dir, "obs");
    // The spatial sample's coordinates stay; the appended cells have none.
    for c in ["x", "y"] {
        let (o, n) = (
            old_obs.column_by_name(c).unwrap(),
            obs.column_by_name(c).unwrap(),
        );
        assert_eq!(n.slice(0, o.len()).to_data(), o.to_data(), "{c}");
        assert_eq!(n.null_count(), 1107, "{c}");
    }
    assert_eq!(m.lineage.len(), 1);
    assert_eq!(m.value_type, ValueType::Float32);
    // The old parts keep the manifest's types of format 1, written out per part.
    assert_eq!(m.part_types(0), (IndexType::Uint16, ValueType::Float32));
}

/// The h5ad files of `gen_append.py`, written once per test run by the real anndata; `None`
/// (skip, printed) without a Python that has it, except on CI.
fn generated_files() -> Option<&'static Path> {
    static DIR: OnceLock<Option<(tempfile::TempDir, PathBuf)>> = OnceLock::new();
    DIR.get_or_init(|| {
        let Some(py) = python() else {
            if std::env::var_os("CI").is_some() {
                panic!("no Python with anndata (set CELLARROW_PYTHON)");
            }
            eprintln!("skipping: no Python with anndata (set CELLARROW_PYTHON)");
            return None;
        };
        let dir = scratch("gen-append");
        let out = dir.path().join("h5ad");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/gen_append.py");
        let o = Command::new(&py).arg(&script).arg(&out).output().unwrap();
        assert!(
            o.status.success(),
            "gen_append.py failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        Some((dir, out))
    })
    .as_ref()
    .map(|(_, p)| p.as_path())
}

/// Every cell through one gatherer, as (gene ids, values) widened to u32 and f64, checking that
/// the batch has the types asked for (`indices_type`, `values_type`).
fn gathered(
    c: &Arc<Corpus>,
    indices: IndexOutput,
    values: ValueOutput,
    types: (DataType, DataType),
) -> Vec<(Vec<u32>, Vec<f64>)> {
    let opts = BatchOptions {
        indices,
        values,
        ..Default::default()
    };
    let g = Gatherer::new(c.clone(), opts).unwrap();
    let all: Vec<u64> = (0..c.n_cells()).collect();
    let b = g.gather(&all, None).unwrap();
    let ind = b.column_by_name("indices").unwrap().as_list::<i32>();
    let val = b.column_by_name("values").unwrap().as_list::<i32>();
    assert_eq!((ind.value_type(), val.value_type()), types);
    (0..b.num_rows())
        .map(|r| {
            let (i, v) = (ind.value(r), val.value(r));
            let ids = arrow::compute::cast(&i, &DataType::UInt32).unwrap();
            let vals = arrow::compute::cast(&v, &DataType::Float64).unwrap();
            let ids = ids.as_primitive::<UInt32Type>().values().to_vec();
            let vals = vals.as_primitive::<Float64Type>().values().to_vec();
            (ids, vals)
        })
        .collect()
}

/// Appends add one file of new rows per table and link the old ones (same inode, same
/// checksum); pyarrow-style dataset totals match; a vocabulary that passes 65,536 genes gives
/// the new parts 32-bit ids, the old parts keep theirs, and one loader serves both, equal to
/// the sources.
#[test]
fn appends_add_table_files_and_wider_parts_beside_the_old_ones() {
    let Some(gen) = generated_files() else {
        return;
    };
    let (a, b, wide) = (
        gen.join("narrow_a.h5ad"),
        gen.join("narrow_b.h5ad"),
        gen.join("wide.h5ad"),
    );
    let tmp = scratch("append-datasets");
    let dir = tmp.path().join("c.corpus");
    convert(&inputs(std::slice::from_ref(&a)), &options(&dir)).unwrap();
    let m0 = Corpus::open(&dir).unwrap().manifest().clone();
    assert_eq!(m0.format_version, 2);
    for t in ["obs", "genes", "samples", "gene_counts"] {
        assert_eq!(
            table_files(&dir, t),
            [format!("{t}/part-00000.parquet")],
            "{t}"
        );
    }
    let inode = |p: &Path| std::fs::metadata(p).unwrap().ino();
    let obs0 = dir.join("obs/part-00000.parquet");
    let (obs0_inode, obs0_bytes) = (inode(&obs0), std::fs::read(&obs0).unwrap());

    // Same obs columns, no new gene: obs, samples and gene_counts get a file; genes none.
    append(&dir, &inputs(std::slice::from_ref(&b)), &options(&dir)).unwrap();
    validate(&dir).unwrap();
    assert_eq!(table_files(&dir, "obs").len(), 2);
    assert_eq!(table_files(&dir, "samples").len(), 2);
    assert_eq!(table_files(&dir, "gene_counts").len(), 2);
    assert_eq!(table_files(&dir, "genes").len(), 1);
    assert_eq!(
        inode(&obs0),
        obs0_inode,
        "the old obs file is linked, not rewritten"
    );
    assert_eq!(std::fs::read(&obs0).unwrap(), obs0_bytes);
    let m1 = Corpus::open(&dir).unwrap().manifest().clone();
    assert_eq!(
        m1.file("obs/part-00000.parquet"),
        m0.file("obs/part-00000.parquet")
    );
    assert_eq!(m1.tables["obs"][1].rows, 25);
    assert_eq!(
        (m1.index_type, m1.value_type),
        (IndexType::Uint16, ValueType::Uint16)
    );

    // 70,000 genes: the new part has 32-bit ids, the old ones keep 16-bit ids.
    append(&dir, &inputs(std::slice::from_ref(&wide)), &options(&dir)).unwrap();
    validate(&dir).unwrap();
    let c = Arc::new(Corpus::open(&dir).unwrap());
    let m = c.manifest();
    assert_eq!(m.n_genes, 70_000);
    assert_eq!(m.index_type, IndexType::Uint32);
    let types: Vec<_> = (0..m.matrix.parts.len()).map(|i| m.part_types(i)).collect();
    assert_eq!(types.first().unwrap().0, IndexType::Uint16);
    assert_eq!(types.last().unwrap().0, IndexType::Uint32);
    assert_eq!(table_files(&dir, "genes").len(), 2);
    assert_eq!(
        m.tables["genes"].iter().map(|f| f.rows).collect::<Vec<_>>(),
        [50, 69_950]
    );
    assert_eq!(
        m.tables["obs"].iter().map(|f| f.rows).sum::<u64>(),
        m.n_cells
    );

    // Every cell equals its source (ids through the grown vocabulary, values exactly).
    let cmp = cellarrow::convert::verify::against(&dir, &[a, b, wide]).unwrap();
    assert_eq!(cmp.cells, 95);
    // One loader serves the parts of both index types, in each output type.
    let want = cells(&dir);
    assert!(want.iter().flat_map(|c| &c.0).any(|&g| g >= 1 << 16));
    for (i, v, types) in [
        (
            IndexOutput::Native,
            ValueOutput::Native,
            (DataType::UInt32, DataType::UInt16),
        ),
        (
            IndexOutput::Int32,
            ValueOutput::Float64,
            (DataType::Int32, DataType::Float64),
        ),
    ] {
        let got = gathered(&c, i, v, types);
        assert_eq!(got, want, "{i:?} {v:?}");
    }

    // genes as cellarrow serves it sums the counts of the three conversions: g0..g49 are in
    // every file.
    let genes = table(&dir, "genes");
    let n_samples = genes
        .column_by_name("n_samples")
        .unwrap()
        .as_primitive::<UInt32Type>();
    assert_eq!(n_samples.len(), 70_000);
    assert!((0..50).all(|g| n_samples.value(g) == 3));
    assert!((50..70_000).all(|g| n_samples.value(g) == 1));
    let n_cells = genes
        .column_by_name("n_cells")
        .unwrap()
        .as_primitive::<arrow::datatypes::UInt64Type>();
    let mut counted = vec![0u64; 70_000];
    for (ids, _) in &want {
        for &g in ids {
            counted[g as usize] += 1;
        }
    }
    assert_eq!(n_cells.values().to_vec(), counted);
}

/// Float values appended after integer counts: the new parts store Float32, the old ones keep
/// UInt16, the manifest says Float32 (which holds both), and the loader serves every cell in
/// Float32 or Float64, equal to the sources.
#[test]
fn float_values_appended_after_counts_are_served_in_one_type() {
    let tmp = scratch("append-float");
    let dir = tmp.path().join("c.corpus");
    let visium = data("squidpy_visium_mouse_brain_49spots.h5ad");
    convert(&inputs(&[chr21()]), &options(&dir)).unwrap();
    let counts = Corpus::open(&dir).unwrap().manifest().value_type;
    assert_eq!(counts, ValueType::Uint16);
    append(&dir, &inputs(std::slice::from_ref(&visium)), &options(&dir)).unwrap();
    validate(&dir).unwrap();
    let c = Arc::new(Corpus::open(&dir).unwrap());
    let m = c.manifest();
    assert_eq!(m.value_type, ValueType::Float32);
    assert_eq!(m.part_types(0).1, ValueType::Uint16);
    assert_eq!(m.part_types(m.matrix.parts.len() - 1).1, ValueType::Float32);
    cellarrow::convert::verify::against(&dir, &[chr21(), visium]).unwrap();
    let want = cells(&dir);
    for (v, t) in [
        (ValueOutput::Native, DataType::Float32),
        (ValueOutput::Float32, DataType::Float32),
        (ValueOutput::Float64, DataType::Float64),
    ] {
        let types = (DataType::Int32, t);
        assert_eq!(gathered(&c, IndexOutput::Int32, v, types), want, "{v:?}");
    }
    let types = (DataType::UInt16, DataType::Float32);
    assert_eq!(
        gathered(&c, IndexOutput::Native, ValueOutput::Native, types),
        want
    );
    // The Arrow view of the whole matrix has the manifest's types, every part widened to them.
    let batches = c.matrix_record_batches().unwrap();
    assert!(batches.iter().all(|b| b.schema() == c.matrix_schema()));

    // A manifest whose type does not cover a part's is refused, naming the part.
    let text = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["value_type"] = "uint16".into();
    std::fs::write(dir.join("manifest.json"), v.to_string()).unwrap();
    let e = Corpus::open(&dir).err().unwrap().to_string();
    assert!(
        e.contains("do not widen") && e.contains("matrix/part-"),
        "{e}"
    );
}

/// `validate` checks the table datasets of format 2: each file's checksum, the rows the
/// manifest lists for it, one schema per table; the manifest's row totals are checked on open.
#[test]
fn validate_checks_every_table_file() {
    use cellarrow::corpus::testing::rehash;
    let tmp = scratch("append-validate");
    let good = tmp.path().join("good.corpus");
    convert(&inputs(&[chr21()]), &options(&good)).unwrap();
    append(&good, &inputs(&[scvi()]), &options(&good)).unwrap();
    let report = validate(&good).unwrap();
    let m = Corpus::open(&good).unwrap().manifest().clone();
    assert_eq!(report.files_checked, m.files.len());
    let obs1 = m.tables["obs"][1].path.clone();
    let dir = tmp.path().join("bad.corpus");
    let fresh = || {
        let _ = std::fs::remove_dir_all(&dir);
        copy_dir(&good, &dir);
    };
    let edit = |f: &dyn Fn(&mut serde_json::Value)| {
        let p = dir.join("manifest.json");
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        f(&mut v);
        std::fs::write(&p, v.to_string()).unwrap();
    };
    let expect = |what: &str, needles: &[&str]| {
        let e = validate(&dir).unwrap_err().to_string();
        for n in needles {
            assert!(e.contains(n), "{what}: {e}");
        }
    };

    // A table file whose bytes changed (same size): its checksum names it.
    fresh();
    let p = dir.join(&obs1);
    let mut bytes = std::fs::read(&p).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&p, &bytes).unwrap();
    expect("flipped byte", &[&obs1, "sha256"]);

    // Rows moved from one file's entry to another's: the totals hold, the file does not.
    fresh();
    edit(&|v| {
        let obs = v["tables"]["obs"].as_array_mut().unwrap();
        let r0 = obs[0]["rows"].as_u64().unwrap();
        let r1 = obs[1]["rows"].as_u64().unwrap();
        obs[0]["rows"] = (r0 + 1).into();
        obs[1]["rows"] = (r1 - 1).into();
    });
    expect("rows", &["obs/part-", "rows, manifest.json says"]);

    // Totals that do not add up are refused on open.
    fresh();
    edit(&|v| v["tables"]["samples"][1]["rows"] = 5.into());
    let e = Corpus::open(&dir).err().unwrap().to_string();
    assert!(e.contains("tables.samples holds"), "{e}");

    // A file of another schema with the right rows and checksum: the table is no longer one.
    fresh();
    let batches =
        cellarrow::corpus::read_parquet(&dir.join(&obs1), Some(&["cell", "sample_id"])).unwrap();
    cellarrow::corpus::write_parquet(&dir.join(&obs1), &batches).unwrap();
    rehash(&dir).unwrap();
    expect("schema", &[&obs1, "columns differ"]);

    // A file in a table directory that the manifest does not list.
    fresh();
    std::fs::copy(dir.join(&obs1), dir.join("obs/part-00099.parquet")).unwrap();
    expect("extra", &["obs/part-00099.parquet", "not listed"]);

    // A table file left out of `files`.
    fresh();
    edit(&|v| {
        let files = v["files"].as_array_mut().unwrap();
        files.retain(|f| f["path"] != "gene_counts/part-00001.parquet");
    });
    let e = Corpus::open(&dir).err().unwrap().to_string();
    assert!(
        e.contains("gene_counts/part-00001.parquet") && e.contains("not listed in files"),
        "{e}"
    );

    // A table renamed in the manifest: its files lie in another table's directory.
    fresh();
    edit(&|v| {
        let t = v["tables"].as_object_mut().unwrap();
        let files = t.remove("gene_stats").unwrap();
        t.insert("geny_stats".into(), files);
    });
    let e = Corpus::open(&dir).err().unwrap().to_string();
    assert!(
        e.contains("tables.geny_stats") && e.contains("table's directory geny_stats/"),
        "{e}"
    );
}
