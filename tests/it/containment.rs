//! Containment: nothing in a corpus manifest or an input manifest makes cellarrow read or
//! write outside the directories it was given. Part and file paths that climb out (`..`), are
//! absolute or are not plain relative paths are refused; symlinks that lead out of the corpus
//! are not followed; sample ids cannot name a directory.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use cellarrow::convert::{convert, resolve_inputs, ConvertOptions};
use cellarrow::corpus::validate;
use cellarrow::{Corpus, ErrorKind};

use crate::common::*;

fn corpus(dir: &Path) -> PathBuf {
    let dest = dir.join("c.corpus");
    let mut o = ConvertOptions::new(&dest);
    o.threads = 1;
    o.part_cells = 400;
    convert(&resolve_inputs(&[chr21()]).unwrap(), &o).unwrap();
    dest
}

/// Rewrites every mention of `from` (in `files` and `matrix.parts`) as `to`.
fn rename_in_manifest(dest: &Path, from: &str, to: &str) {
    let p = dest.join("manifest.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    for key in ["files", "parts"] {
        let list = if key == "files" {
            &mut v["files"]
        } else {
            &mut v["matrix"]["parts"]
        };
        for e in list.as_array_mut().unwrap() {
            if e["path"] == from {
                e["path"] = to.into();
            }
        }
    }
    std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

/// `open` and `validate` refuse with [`ErrorKind::InvalidCorpus`] and a message containing one
/// of `needles`; the CLI exits with 1 and no panic.
fn assert_refused(dest: &Path, what: &str, needles: &[&str]) {
    for (op, r) in [
        ("open", Corpus::open(dest).map(|_| ())),
        ("validate", validate(dest).map(|_| ())),
    ] {
        let e = r
            .err()
            .unwrap_or_else(|| panic!("{what}: {op} accepted it"));
        assert_eq!(e.kind(), ErrorKind::InvalidCorpus, "{what}: {op}: {e}");
        let msg = e.to_string();
        assert!(
            needles.iter().any(|n| msg.contains(n)),
            "{what}: {op}: {msg}"
        );
    }
    let out = cli(["inspect".as_ref(), dest.as_os_str()]);
    assert_no_panic(what, &out);
    assert_eq!(out.status.code(), Some(1), "{what}: inspect");
}

#[test]
fn part_paths_leaving_the_corpus_are_refused() {
    let tmp = scratch("paths");
    let dest = corpus(tmp.path());
    let pristine = tmp.path().join("pristine");
    copy_dir(&dest, &pristine);
    let part = "matrix/part-00000.arrow";
    // A real copy of the part where each path would lead, so only the path check can refuse.
    let outside = tmp.path().join("x");
    std::fs::copy(dest.join(part), &outside).unwrap();
    let abs = outside.display().to_string();
    let cases: Vec<(&str, String, &str)> = vec![
        ("parent", "../x".into(), "\"../x\""),
        ("grandparent", "../../x".into(), "\"../../x\""),
        (
            "inner parent",
            "matrix/../../x".into(),
            "\"matrix/../../x\"",
        ),
        ("absolute", abs.clone(), abs.as_str()),
        (
            "dot segment",
            "matrix/./part-00000.arrow".into(),
            "matrix/./part",
        ),
        (
            "empty segment",
            "matrix//part-00000.arrow".into(),
            "matrix//part",
        ),
        (
            "backslash",
            "matrix\\..\\..\\x".into(),
            "matrix\\\\..\\\\..\\\\x",
        ),
    ];
    for (what, path, needle) in cases {
        let _ = std::fs::remove_dir_all(&dest);
        copy_dir(&pristine, &dest);
        rename_in_manifest(&dest, part, &path);
        // The message names manifest.json and the offending path.
        assert_refused(&dest, what, &[needle]);
        let e = Corpus::open(&dest).err().unwrap();
        assert!(e.to_string().contains("manifest.json"), "{what}: {e}");
    }
}

const OUTSIDE: &str = "outside the corpus directory";

#[test]
fn symlinks_out_of_the_corpus_are_not_followed() {
    let tmp = scratch("symlink");
    let dest = corpus(tmp.path());
    let pristine = tmp.path().join("pristine");
    copy_dir(&dest, &pristine);

    // A table replaced by a symlink to an identical file outside: same size, same hash.
    let outside = tmp.path().join("outside-obs.parquet");
    std::fs::copy(dest.join("obs/part-00000.parquet"), &outside).unwrap();
    std::fs::remove_file(dest.join("obs/part-00000.parquet")).unwrap();
    symlink(&outside, dest.join("obs/part-00000.parquet")).unwrap();
    assert_refused(&dest, "table symlink", &[OUTSIDE]);

    // The whole matrix directory replaced by a symlink to a copy outside.
    std::fs::remove_dir_all(&dest).unwrap();
    copy_dir(&pristine, &dest);
    let outside_matrix = tmp.path().join("outside-matrix");
    copy_dir(&dest.join("matrix"), &outside_matrix);
    std::fs::remove_dir_all(dest.join("matrix")).unwrap();
    symlink(&outside_matrix, dest.join("matrix")).unwrap();
    // validate lists the directory symlink as an unknown file; open finds it leads outside.
    assert_refused(
        &dest,
        "matrix directory symlink",
        &[OUTSIDE, "matrix: is not listed"],
    );
    assert!(Corpus::open(&dest)
        .err()
        .unwrap()
        .to_string()
        .contains(OUTSIDE));

    // A relative symlink climbing out.
    std::fs::remove_dir_all(&dest).unwrap();
    copy_dir(&pristine, &dest);
    let genes = dest.join("genes/part-00000.parquet");
    std::fs::copy(&genes, tmp.path().join("g.parquet")).unwrap();
    std::fs::remove_file(&genes).unwrap();
    symlink("../../g.parquet", &genes).unwrap();
    assert_refused(&dest, "relative symlink", &[OUTSIDE]);
}

#[test]
fn a_corpus_reached_through_a_symlink_opens() {
    // The check is about where files lead from the corpus root, not about how the root is named.
    let tmp = scratch("rootlink");
    let dest = corpus(tmp.path());
    let link = tmp.path().join("link.corpus");
    symlink(&dest, &link).unwrap();
    validate(&link).unwrap();
    assert_eq!(
        Corpus::open(&link).unwrap().n_cells(),
        Corpus::open(&dest).unwrap().n_cells()
    );
    // An internal symlink (inside the corpus) is followed.
    let inside = dest.join("matrix/real.arrow");
    std::fs::rename(dest.join("matrix/part-00000.arrow"), &inside).unwrap();
    symlink("real.arrow", dest.join("matrix/part-00000.arrow")).unwrap();
    Corpus::open(&dest).unwrap();
}

/// A conversion writes only the destination (through a hidden sibling renamed into place):
/// sample ids and metadata from an input manifest never become paths.
#[test]
fn conversion_writes_only_the_destination() {
    let tmp = scratch("writes");
    let inputs_dir = tmp.path().join("inputs");
    let out_dir = tmp.path().join("out");
    std::fs::create_dir_all(&inputs_dir).unwrap();
    std::fs::create_dir_all(&out_dir).unwrap();
    std::fs::copy(chr21(), inputs_dir.join("a.h5ad")).unwrap();
    let manifest = inputs_dir.join("inputs.json");
    let recs = serde_json::json!([{
        "path": "a.h5ad",
        "sample_id": "a..b",
        "../../tissue": "../../etc/passwd",
    }]);
    std::fs::write(&manifest, recs.to_string()).unwrap();
    // ".." anywhere in a sample id is refused.
    let e = resolve_inputs(std::slice::from_ref(&manifest)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);

    let recs = serde_json::json!([{
        "path": "a.h5ad",
        "sample_id": "donor 1: brain (left)",
        "../../tissue": "../../etc/passwd",
    }]);
    std::fs::write(&manifest, recs.to_string()).unwrap();
    let inputs_before = snapshot(&inputs_dir);
    let dest = out_dir.join("c.corpus");
    let out = cli([
        "convert".as_ref(),
        manifest.as_os_str(),
        "-o".as_ref(),
        dest.as_os_str(),
        "-q".as_ref(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(snapshot(&inputs_dir), inputs_before, "inputs changed");
    let names: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["c.corpus".to_string()]);
    let names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    validate(&dest).unwrap();
}
