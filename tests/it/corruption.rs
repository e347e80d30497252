//! Corruption: flip bytes in every kind of corpus file, truncate a part, lie about sizes and the
//! format version. `validate` names the file and what failed, `open` refuses wrong sizes and
//! versions, and nothing panics.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use cellarrow::convert::{convert, resolve_inputs, ConvertOptions};
use cellarrow::corpus::validate;
use cellarrow::{Corpus, ErrorKind};

use crate::common::*;

/// A small real corpus (1,107 cells) with two matrix parts.
fn corpus(dir: &Path) -> PathBuf {
    let dest = dir.join("c.corpus");
    let mut o = ConvertOptions::new(&dest);
    o.part_cells = 600;
    o.threads = 1;
    convert(&resolve_inputs(&[chr21()]).unwrap(), &o).unwrap();
    dest
}

fn files(dest: &Path) -> Vec<String> {
    let m = Corpus::open(dest).unwrap();
    let mut v: Vec<String> = m.manifest().files.iter().map(|f| f.path.clone()).collect();
    v.push("manifest.json".into());
    v
}

/// Opens the corpus and reads every cell: `Err` is fine, a panic is not. Open checks list
/// offsets lazily, so a corrupt part may open and fail on its first read
/// (`Corpus::checked_batch`), before the infallible accessors are used.
fn open_and_read_all(dest: &Path) -> Result<(), cellarrow::Error> {
    let c = Corpus::open(dest)?;
    let mut sum = 0.0;
    for cell in 0..c.n_cells() {
        c.checked_batch(cell)?;
        let (i, v) = (c.indices(cell), c.values(cell));
        assert_eq!(i.len(), v.len());
        sum += v.to_f64_vec().iter().sum::<f64>();
    }
    std::hint::black_box(sum);
    Ok(())
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// The manifest with its free-text fields and its write settings removed: a flip there may go
/// unnoticed. `matrix.batch_rows` and `matrix.part_cells` are upper bounds for the parts that
/// later appends write; validate checks the stored parts against them, so only a flip that
/// keeps them above what is stored passes, and it changes no stored cell.
fn manifest_meaning(bytes: &[u8]) -> Option<serde_json::Value> {
    let mut v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let o = v.as_object_mut()?;
    o.remove("created_by");
    o.remove("options");
    let m = o.get_mut("matrix")?.as_object_mut()?;
    m.remove("batch_rows");
    m.remove("part_cells");
    Some(v)
}

/// Offsets to flip in a file of `len` bytes: both ends, an even spread and random ones.
fn offsets(len: usize, n: usize, rng: &mut Rng) -> Vec<usize> {
    let mut v = vec![0, len - 1, len / 2];
    v.extend((0..n / 2).map(|k| k * len / (n / 2)));
    v.extend((0..n / 2).map(|_| rng.below(len as u64) as usize));
    v.sort();
    v.dedup();
    v
}

#[test]
fn flipped_bytes_are_found_by_validate_without_panics() {
    let tmp = scratch("flip");
    let dest = corpus(tmp.path());
    let original = std::fs::read(dest.join("manifest.json")).unwrap();
    let meaning = manifest_meaning(&original).unwrap();
    let mut rng = Rng::from_time("flips");
    let mut flips = 0;
    let kinds = files(&dest);
    assert_eq!(kinds.iter().filter(|f| f.starts_with("matrix/")).count(), 2);
    for rel in &kinds {
        let path = dest.join(rel);
        let good = std::fs::read(&path).unwrap();
        let n = if rel.starts_with("matrix/") { 100 } else { 50 };
        for off in offsets(good.len(), n, &mut rng) {
            let mut bad = good.clone();
            // A single bit or a whole random byte.
            let mask = if off % 2 == 0 {
                1u8 << (off % 8)
            } else {
                (rng.below(255) + 1) as u8
            };
            bad[off] ^= mask;
            std::fs::write(&path, &bad).unwrap();
            flips += 1;
            let what = format!("{rel} byte {off} ^ {mask:#04x}");
            let v = catch_unwind(AssertUnwindSafe(|| validate(&dest)))
                .unwrap_or_else(|p| panic!("validate panicked on {what}: {}", panic_text(p)));
            let o = catch_unwind(AssertUnwindSafe(|| open_and_read_all(&dest)))
                .unwrap_or_else(|p| panic!("open/read panicked on {what}: {}", panic_text(p)));
            match v {
                Err(e) => {
                    assert!(
                        matches!(e.kind(), ErrorKind::InvalidCorpus | ErrorKind::Io),
                        "{what}: kind {:?}: {e}",
                        e.kind()
                    );
                    let msg = e.to_string();
                    if rel != "manifest.json" {
                        assert!(
                            msg.contains(rel.as_str()),
                            "{what}: does not name the file: {msg}"
                        );
                    } else {
                        assert!(e.path().is_some(), "{what}: no path: {msg}");
                    }
                }
                Ok(_) => {
                    // Only a flip in the manifest's free text can pass.
                    assert_eq!(rel, "manifest.json", "{what}: validate passed");
                    assert_eq!(
                        manifest_meaning(&bad).as_ref(),
                        Some(&meaning),
                        "{what}: validate passed a manifest that changed meaning"
                    );
                }
            }
            if rel.ends_with(".parquet") {
                // open does not hash: a flipped table keeps its size and opens.
                assert!(o.is_ok(), "{what}: {o:?}");
            }
        }
        std::fs::write(&path, &good).unwrap();
    }
    validate(&dest).unwrap();
    assert!(flips > 300, "{flips} flips");
    eprintln!("{flips} flips, no panic");
}

#[test]
fn cli_validate_names_the_corrupt_file() {
    let tmp = scratch("flip-cli");
    let dest = corpus(tmp.path());
    for rel in files(&dest) {
        let path = dest.join(&rel);
        let good = std::fs::read(&path).unwrap();
        let mut bad = good.clone();
        // Past the manifest's opening brace: a byte every file kind depends on.
        let off = if rel == "manifest.json" {
            0
        } else {
            good.len() / 2
        };
        bad[off] ^= 0x20;
        std::fs::write(&path, &bad).unwrap();
        let out = cli(["validate".as_ref(), dest.as_os_str()]);
        assert_no_panic(&rel, &out);
        assert_eq!(out.status.code(), Some(1), "{rel}: {}", stderr(&out));
        let name = Path::new(&rel)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(stderr(&out).contains(&name), "{rel}: {}", stderr(&out));
        std::fs::write(&path, &good).unwrap();
    }
    let out = cli(["validate".as_ref(), dest.as_os_str()]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn truncated_part_is_refused_by_open_and_validate() {
    let tmp = scratch("trunc");
    let dest = corpus(tmp.path());
    let part = dest.join("matrix/part-00001.arrow");
    let len = std::fs::metadata(&part).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&part).unwrap();
    f.set_len(len - 100).unwrap();
    drop(f);
    for (what, r) in [
        ("validate", validate(&dest).map(|_| ())),
        ("open", Corpus::open(&dest).map(|_| ())),
    ] {
        let e = r.expect_err(what);
        assert_eq!(e.kind(), ErrorKind::InvalidCorpus, "{what}: {e}");
        let msg = e.to_string();
        assert!(msg.contains("part-00001.arrow"), "{what}: {msg}");
        assert!(
            msg.contains(&format!("is {} bytes, manifest.json says {len}", len - 100)),
            "{what}: {msg}"
        );
    }
    let out = cli(["inspect".as_ref(), dest.as_os_str()]);
    assert_no_panic("inspect", &out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("part-00001.arrow"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn grown_table_is_refused_by_open() {
    let tmp = scratch("grown");
    let dest = corpus(tmp.path());
    let mut bytes = std::fs::read(dest.join("obs/part-00000.parquet")).unwrap();
    bytes.push(0);
    std::fs::write(dest.join("obs/part-00000.parquet"), &bytes).unwrap();
    let e = Corpus::open(&dest).err().expect("open refuses");
    assert_eq!(e.kind(), ErrorKind::InvalidCorpus);
    assert!(e.to_string().contains("obs/part-00000.parquet"), "{e}");
    assert!(e.to_string().contains("bytes"), "{e}");
}

fn edit_manifest(dest: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dest.join("manifest.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

#[test]
fn manifest_size_that_disagrees_with_the_file_is_refused_by_open() {
    let tmp = scratch("size");
    let dest = corpus(tmp.path());
    edit_manifest(&dest, |v| {
        let f = &mut v["files"][0];
        f["bytes"] = serde_json::json!(f["bytes"].as_u64().unwrap() + 8);
    });
    let e = Corpus::open(&dest).err().expect("open refuses");
    assert_eq!(e.kind(), ErrorKind::InvalidCorpus);
    assert!(e.to_string().contains("manifest.json says"), "{e}");
}

#[test]
fn newer_or_older_format_version_is_refused_with_a_clear_message() {
    let tmp = scratch("version");
    let dest = corpus(tmp.path());
    for (version, word) in [(3u64, "newer"), (0, "not supported"), (999, "newer")] {
        edit_manifest(&dest, |v| v["format_version"] = serde_json::json!(version));
        for (what, r) in [
            ("open", Corpus::open(&dest).map(|_| ())),
            ("validate", validate(&dest).map(|_| ())),
        ] {
            let e = r.expect_err(what);
            assert_eq!(e.kind(), ErrorKind::InvalidCorpus);
            let msg = e.to_string();
            assert!(msg.contains("manifest.json"), "{what}: {msg}");
            assert!(
                msg.contains(&format!("format_version {version}")),
                "{what}: {msg}"
            );
            assert!(msg.contains(word), "{what}: {msg}");
        }
        let out = cli(["inspect".as_ref(), dest.as_os_str()]);
        assert_no_panic("inspect", &out);
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr(&out).contains("format_version"), "{}", stderr(&out));
    }
}

#[test]
fn missing_and_extra_files_are_named_by_validate() {
    let tmp = scratch("set");
    let dest = corpus(tmp.path());
    std::fs::write(dest.join("matrix/stray.arrow"), b"x").unwrap();
    let e = validate(&dest).unwrap_err();
    assert!(e.to_string().contains("stray.arrow"), "{e}");
    std::fs::remove_file(dest.join("matrix/stray.arrow")).unwrap();
    std::fs::remove_file(dest.join("genes/part-00000.parquet")).unwrap();
    for r in [validate(&dest).map(|_| ()), Corpus::open(&dest).map(|_| ())] {
        let e = r.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidCorpus);
        assert!(e.to_string().contains("genes/part-00000.parquet"), "{e}");
    }
}

/// Flips in the part's schema message make Arrow panic inside the decoder; the reader turns
/// that into an error, and the CLI prints the error only, never a panic message.
#[test]
fn cli_prints_no_panic_for_a_corrupt_part_header() {
    let tmp = scratch("flip-header");
    let dest = corpus(tmp.path());
    let path = dest.join("matrix/part-00000.arrow");
    let good = std::fs::read(&path).unwrap();
    let mut refused = 0;
    for off in (0..good.len().min(400)).step_by(6) {
        let mut bad = good.clone();
        bad[off] ^= 0xff;
        std::fs::write(&path, &bad).unwrap();
        let out = std::process::Command::new(bin())
            .arg("inspect")
            .arg(&dest)
            .env("RUST_BACKTRACE", "1")
            .output()
            .unwrap();
        assert_no_panic(&format!("part-00000.arrow byte {off}"), &out);
        if !out.status.success() {
            refused += 1;
            assert!(
                stderr(&out).contains("part-00000.arrow"),
                "{}",
                stderr(&out)
            );
        }
    }
    assert!(refused > 10, "{refused}");
}
