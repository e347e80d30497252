//! Crash safety: `kill -9` a running conversion at random moments. The destination is then
//! either absent or a complete corpus (the previous one, or the new one if the conversion had
//! already finished); a previous corpus cut off in the middle of its replacement waits beside it
//! and is restored by the next run; the rerun succeeds and leaves no temporary directory.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cellarrow::convert::{convert, resolve_inputs, ConvertOptions};
use cellarrow::corpus::validate;
use cellarrow::Corpus;

use crate::common::*;

fn n_cells(dest: &Path) -> u64 {
    Corpus::open(dest).unwrap().n_cells()
}

#[test]
fn kill_dash_nine_never_leaves_a_half_written_corpus() {
    let tmp = scratch("kill");
    let root = tmp.path();
    // Two copies of the 10,000-cell fixture: about a second of work in a debug build.
    let manifest = root.join("inputs.json");
    let recs: Vec<_> = (0..2)
        .map(|i| serde_json::json!({"path": mouse(), "sample_id": format!("mouse{i}")}))
        .collect();
    std::fs::write(&manifest, serde_json::to_vec(&recs).unwrap()).unwrap();
    let out_dir = root.join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let dest = out_dir.join("c.corpus");

    // The previous corpus: a different (small) input, so old and new are told apart.
    let previous = root.join("previous.corpus");
    let mut o = ConvertOptions::new(&previous);
    o.threads = 1;
    convert(&resolve_inputs(&[chr21()]).unwrap(), &o).unwrap();
    let prev_cells = n_cells(&previous);
    let prev_manifest = std::fs::read(previous.join("manifest.json")).unwrap();

    let run = |kill_after: Option<Duration>| {
        let mut child = Command::new(bin())
            .arg("convert")
            .arg(&manifest)
            .arg("-o")
            .arg(&dest)
            .args(["--overwrite", "--threads", "2", "-q"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        match kill_after {
            Some(d) => {
                let started = Instant::now();
                while started.elapsed() < d {
                    if child.try_wait().unwrap().is_some() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                let _ = child.kill(); // SIGKILL
                let o = child.wait_with_output().unwrap();
                (o.status, String::from_utf8_lossy(&o.stderr).into_owned())
            }
            None => {
                let o = child.wait_with_output().unwrap();
                (o.status, String::from_utf8_lossy(&o.stderr).into_owned())
            }
        }
    };

    // The full run's length, to spread the kills over it.
    let started = Instant::now();
    let (status, err) = run(None);
    assert!(status.success(), "{err}");
    let full = started.elapsed();
    let new_cells = n_cells(&dest);
    assert_ne!(new_cells, prev_cells);
    eprintln!("full conversion: {full:?}");

    let mut rng = Rng::from_time("kill -9");
    let (mut killed, mut finished) = (0, 0);
    for round in 0..6 {
        let with_previous = round % 2 == 0;
        let _ = std::fs::remove_dir_all(&dest);
        if with_previous {
            copy_dir(&previous, &dest);
        }
        let delay = Duration::from_millis(rng.below(full.as_millis() as u64 + 50));
        let (status, err) = run(Some(delay));
        assert!(!err.contains("panicked at"), "{err}");
        if status.success() {
            finished += 1;
        } else {
            killed += 1;
        }
        let what = format!("round {round} (kill after {delay:?}, previous: {with_previous})");
        if dest.exists() {
            validate(&dest).unwrap_or_else(|e| panic!("{what}: destination is not complete: {e}"));
            let cells = n_cells(&dest);
            if cells == prev_cells {
                assert!(with_previous, "{what}");
                assert_eq!(
                    std::fs::read(dest.join("manifest.json")).unwrap(),
                    prev_manifest
                );
            } else {
                assert_eq!(cells, new_cells, "{what}");
            }
        } else if with_previous {
            // Killed between moving the previous corpus aside and renaming the new one in:
            // the previous corpus is complete beside the destination.
            let old: Vec<_> = leftovers(&dest)
                .into_iter()
                .filter(|n| n.contains(".cellarrow-old-"))
                .collect();
            assert_eq!(
                old.len(),
                1,
                "{what}: destination gone and no previous corpus beside it: {:?}",
                leftovers(&dest)
            );
            validate(out_dir.join(&old[0])).unwrap();
        }
        // Nothing but the destination and its hidden siblings is ever written.
        for e in std::fs::read_dir(&out_dir).unwrap().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            assert!(
                n == "c.corpus" || n.starts_with(".c.corpus.cellarrow-"),
                "{what}: unexpected {n}"
            );
        }

        let (status, err) = run(None);
        assert!(status.success(), "{what}: rerun failed: {err}");
        assert_eq!(
            leftovers(&dest),
            Vec::<String>::new(),
            "{what}: after the rerun"
        );
        validate(&dest).unwrap();
        assert_eq!(n_cells(&dest), new_cells);
    }
    eprintln!("{killed} conversions killed, {finished} finished before the kill");
    assert!(
        killed >= 3,
        "only {killed} of 6 conversions were killed mid-way"
    );
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
