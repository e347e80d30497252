//! `convert::append`: a corpus grown by appends equals the corpus converted at once; existing
//! parts keep their bytes; a file already in the corpus, bad input or data that does not fit
//! the corpus's types leave it untouched; the lock keeps a second writer out; a reader keeps
//! its snapshot; a kill at every stage leaves the old corpus or the new one.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use arrow::compute::concat_batches;
use arrow::record_batch::RecordBatch;
use cellarrow::convert::kill::{CONVERT_STAGES, KILL_AT_VAR};
use cellarrow::convert::lock::lock_path;
use cellarrow::convert::{append, convert, resolve_inputs, ConvertOptions, InputSample};
use cellarrow::corpus::{read_parquet, validate};
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

fn table(dir: &Path, name: &str) -> RecordBatch {
    let batches = read_parquet(&dir.join(format!("{name}.parquet")), None).unwrap();
    concat_batches(&batches[0].schema(), &batches).unwrap()
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
    let s = append(&grown, &inputs(&files[1..2]), &options(&grown)).unwrap();
    assert_eq!(s.n_samples, 2);
    append(&grown, &inputs(&files[2..]), &options(&grown)).unwrap();

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
        // Log-normalised values do not fit the corpus's integer counts.
        (
            vec![data("squidpy_visium_mouse_brain_49spots.h5ad")],
            "value type",
            "squidpy_visium",
        ),
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
    let before = cells(&dir);
    let old_obs = table(&dir, "obs");
    append(&dir, &inputs(&[chr21()]), &options(&dir)).unwrap();
    validate(&dir).unwrap();
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
    let m = Corpus::open(&dir).unwrap().manifest().clone();
    assert_eq!(m.lineage.len(), 1);
    assert_eq!(m.value_type, cellarrow::corpus::ValueType::Float32);
}
