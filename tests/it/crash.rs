//! Crash safety: `kill -9` a running conversion. The destination is then either absent or a
//! complete corpus (the previous one, or the new one if the conversion had already finished);
//! a previous corpus cut off in the middle of its replacement waits beside it and is restored
//! by the next run; the rerun succeeds and leaves no temporary directory.
//!
//! The kills are deterministic: `CELLARROW_KILL_AT` makes the converter SIGKILL itself at each
//! named stage ([`CONVERT_STAGES`]). Kills at random moments add coverage between the stages.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use cellarrow::convert::kill::{CONVERT_STAGES, KILL_AT_VAR};
use cellarrow::convert::{convert, resolve_inputs, ConvertOptions};
use cellarrow::corpus::validate;
use cellarrow::Corpus;

use crate::common::*;

fn n_cells(dest: &Path) -> u64 {
    Corpus::open(dest).unwrap().n_cells()
}

/// A conversion of an input manifest to `out/c.corpus`, replacing the corpus there, with a
/// previous corpus of a different size to tell old and new apart.
struct Scene {
    _tmp: tempfile::TempDir,
    manifest: PathBuf,
    out_dir: PathBuf,
    dest: PathBuf,
    previous: PathBuf,
    prev_cells: u64,
    prev_manifest: Vec<u8>,
}

impl Scene {
    fn new(tag: &str, inputs: &[(PathBuf, &str)]) -> Scene {
        let tmp = scratch(tag);
        let root = tmp.path();
        let manifest = root.join("inputs.json");
        let recs: Vec<_> = inputs
            .iter()
            .map(|(p, id)| serde_json::json!({"path": p, "sample_id": id}))
            .collect();
        std::fs::write(&manifest, serde_json::to_vec(&recs).unwrap()).unwrap();
        let out_dir = root.join("out");
        std::fs::create_dir(&out_dir).unwrap();
        let previous = root.join("previous.corpus");
        let mut o = ConvertOptions::new(&previous);
        o.threads = 1;
        convert(&resolve_inputs(&[chr21()]).unwrap(), &o).unwrap();
        Scene {
            manifest,
            dest: out_dir.join("c.corpus"),
            out_dir,
            prev_cells: n_cells(&previous),
            prev_manifest: std::fs::read(previous.join("manifest.json")).unwrap(),
            previous,
            _tmp: tmp,
        }
    }

    fn command(&self) -> Command {
        let mut c = Command::new(bin());
        c.arg("convert")
            .arg(&self.manifest)
            .arg("-o")
            .arg(&self.dest)
            .args(["--overwrite", "--threads", "2", "--part-cells", "400", "-q"])
            .env("RUST_BACKTRACE", "0")
            .env_remove(KILL_AT_VAR)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    }

    /// Runs to the end, or until killed at `stage`.
    fn run(&self, stage: Option<&str>) -> (ExitStatus, String) {
        let mut c = self.command();
        if let Some(s) = stage {
            c.env(KILL_AT_VAR, s);
        }
        let o = c.output().unwrap();
        (o.status, String::from_utf8_lossy(&o.stderr).into_owned())
    }

    /// Removes the destination, and puts the previous corpus there if asked.
    fn reset(&self, with_previous: bool) {
        let _ = std::fs::remove_dir_all(&self.dest);
        if with_previous {
            copy_dir(&self.previous, &self.dest);
        }
    }

    /// What a killed run may leave: the destination absent (and, with a previous corpus, that
    /// corpus complete beside it), or a complete corpus, old or new; nothing else is written
    /// but hidden siblings. Returns whether the destination holds the new corpus.
    fn check_killed(&self, what: &str, with_previous: bool, new_cells: Option<u64>) -> State {
        let state = if self.dest.exists() {
            validate(&self.dest)
                .unwrap_or_else(|e| panic!("{what}: destination is not complete: {e}"));
            let cells = n_cells(&self.dest);
            if cells == self.prev_cells {
                assert!(with_previous, "{what}");
                assert_eq!(
                    std::fs::read(self.dest.join("manifest.json")).unwrap(),
                    self.prev_manifest,
                    "{what}"
                );
                State::Previous
            } else {
                if let Some(n) = new_cells {
                    assert_eq!(cells, n, "{what}");
                }
                State::New
            }
        } else if with_previous {
            // Killed between moving the previous corpus aside and renaming the new one in:
            // the previous corpus is complete beside the destination.
            let old: Vec<_> = leftovers(&self.dest)
                .into_iter()
                .filter(|n| n.contains(".cellarrow-old-"))
                .collect();
            assert_eq!(
                old.len(),
                1,
                "{what}: destination gone and no previous corpus beside it: {:?}",
                leftovers(&self.dest)
            );
            validate(self.out_dir.join(&old[0])).unwrap();
            State::Aside
        } else {
            State::Absent
        };
        for e in std::fs::read_dir(&self.out_dir).unwrap().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            assert!(
                n == "c.corpus" || n.starts_with(".c.corpus.cellarrow-"),
                "{what}: unexpected {n}"
            );
        }
        state
    }

    /// The next run restores whatever was left, succeeds and leaves nothing beside.
    fn rerun(&self, what: &str, new_cells: u64) {
        let (status, err) = self.run(None);
        assert!(status.success(), "{what}: rerun failed: {err}");
        assert_eq!(
            leftovers(&self.dest),
            Vec::<String>::new(),
            "{what}: after the rerun"
        );
        validate(&self.dest).unwrap();
        assert_eq!(n_cells(&self.dest), new_cells, "{what}");
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Absent,
    Previous,
    Aside,
    New,
}

fn assert_killed_at(what: &str, stage: &str, status: ExitStatus, err: &str) {
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "{what}: the conversion was not killed at {stage} (status {status}): {err}"
    );
    assert!(
        err.contains(&format!("killed at {stage} ")),
        "{what}: {err}"
    );
    assert!(!err.contains("panicked at"), "{what}: {err}");
}

#[test]
fn kill_at_every_stage_never_leaves_a_half_written_corpus() {
    // Two samples, one spatial (its rows go through the curve-order spill), several parts.
    let scene = Scene::new(
        "kill-at",
        &[
            (chr21(), "chr21"),
            (data("squidpy_visium_mouse_brain_49spots.h5ad"), "visium"),
        ],
    );
    let (status, err) = scene.run(None);
    assert!(status.success(), "{err}");
    let new_cells = n_cells(&scene.dest);
    assert_ne!(new_cells, scene.prev_cells);
    assert!(
        Corpus::open(&scene.dest)
            .unwrap()
            .manifest()
            .matrix
            .parts
            .len()
            > 2
    );

    for &stage in CONVERT_STAGES {
        for with_previous in [false, true] {
            let what = format!("killed at {stage} (previous corpus: {with_previous})");
            scene.reset(with_previous);
            let (status, err) = scene.run(Some(stage));
            assert_killed_at(&what, stage, status, &err);
            // Every stage comes before the new corpus is in place, so the destination holds
            // exactly what it held before, or (the last stage) is moved aside.
            let expected = match (with_previous, stage) {
                (false, _) => State::Absent,
                (true, "before-rename") => State::Aside,
                (true, _) => State::Previous,
            };
            assert_eq!(
                scene.check_killed(&what, with_previous, Some(new_cells)),
                expected,
                "{what}"
            );
            // The killed run left its temporary directory (or the previous corpus) beside.
            assert!(!leftovers(&scene.dest).is_empty(), "{what}");
            scene.rerun(&what, new_cells);
        }
    }
}

/// Kills at random moments of a longer conversion: extra coverage between the named stages.
/// Where each kill lands depends on the machine's load, so nothing is asserted about how many
/// conversions were cut short, only about what each one left.
#[test]
fn kill_dash_nine_at_random_moments_never_leaves_a_half_written_corpus() {
    // Two copies of the 10,000-cell fixture: about a second of work in a debug build.
    let scene = Scene::new("kill", &[(mouse(), "mouse0"), (mouse(), "mouse1")]);
    let started = Instant::now();
    let (status, err) = scene.run(None);
    assert!(status.success(), "{err}");
    let full = started.elapsed();
    let new_cells = n_cells(&scene.dest);
    assert_ne!(new_cells, scene.prev_cells);

    let mut rng = Rng::from_time("kill -9");
    for round in 0..4 {
        let with_previous = round % 2 == 0;
        scene.reset(with_previous);
        let delay = Duration::from_millis(rng.below(full.as_millis() as u64 + 50));
        let mut child = scene.command().spawn().unwrap();
        let started = Instant::now();
        while started.elapsed() < delay && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill(); // SIGKILL
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("panicked at"), "{err}");
        let what = format!("round {round} (kill after {delay:?}, previous: {with_previous})");
        let state = scene.check_killed(&what, with_previous, Some(new_cells));
        eprintln!("{what}: {state:?}");
        scene.rerun(&what, new_cells);
    }
}

/// A conversion killed while it replaces an existing corpus leaves the previous corpus aside
/// under `.NAME.cellarrow-old-PID`; the next run of any kind puts it back before doing
/// anything else, even one that then fails.
#[test]
fn previous_corpus_moved_aside_is_restored_by_the_next_run() {
    let tmp = scratch("restore");
    let dest = tmp.path().join("c.corpus");
    let mut o = ConvertOptions::new(&dest);
    o.threads = 1;
    convert(&resolve_inputs(&[chr21()]).unwrap(), &o).unwrap();
    let before = snapshot(&dest);
    // A pid that is not running: the largest possible pid is never a live process here.
    let aside = tmp.path().join(".c.corpus.cellarrow-old-4194304");
    let stale_tmp = tmp.path().join(".c.corpus.cellarrow-tmp-4194303");
    std::fs::rename(&dest, &aside).unwrap();
    std::fs::create_dir_all(stale_tmp.join("matrix")).unwrap();
    std::fs::write(stale_tmp.join("matrix/part-00000.arrow"), b"half").unwrap();

    let bad = tmp.path().join("bad.h5ad");
    std::fs::write(&bad, b"not hdf5").unwrap();
    let out = cli([
        "convert".as_ref(),
        bad.as_os_str(),
        "-o".as_ref(),
        dest.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    // The failed run refused to overwrite: the restored corpus is in the way.
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    assert_eq!(snapshot(&dest), before);
    assert_eq!(leftovers(&dest), Vec::<String>::new());
    validate(&dest).unwrap();
}
