//! Replays the inputs kept under `fuzz/regressions/` (crashes found by `scripts/fuzz.sh`, and a
//! few hand-made edge cases) through the same calls as the fuzz targets, so that a fixed crash
//! stays fixed without cargo-fuzz or a nightly toolchain.
//!
//! - `manifest/*`: raw bytes for `Manifest::from_json_bytes`.
//! - `matrix_part/*`: raw bytes put in place of the part of a small valid corpus.
//! - `h5ad/*.h5ad`: h5ad files (the h5ad_attrs target writes the file it built from a crashing
//!   input when `CELLARROW_FUZZ_KEEP` names a directory).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use cellarrow::corpus::testing::{random_rows, write_corpus};
use cellarrow::corpus::{sha256_file, validate, Manifest};
use cellarrow::h5ad::{H5ad, MatrixSource};
use cellarrow::{Corpus, ErrorKind};

fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn no_panic<T>(what: &Path, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let m = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        panic!("{}: panicked: {m}", what.display())
    })
}

#[test]
fn manifest_regressions_give_errors_not_panics() {
    let files = inputs("manifest");
    assert!(!files.is_empty(), "fuzz/regressions/manifest is empty");
    for f in files {
        let data = std::fs::read(&f).unwrap();
        no_panic(&f, || match Manifest::from_json_bytes(&data) {
            Ok(m) => {
                m.check().unwrap();
                let again = Manifest::from_json_bytes(&serde_json::to_vec(&m).unwrap()).unwrap();
                assert_eq!(again, m);
            }
            Err(e) => assert_eq!(e.kind(), ErrorKind::InvalidCorpus, "{e}"),
        });
    }
}

#[test]
fn matrix_part_regressions_give_errors_not_panics() {
    let files = inputs("matrix_part");
    assert!(!files.is_empty(), "fuzz/regressions/matrix_part is empty");
    let tmp = crate::common::scratch("fuzz-part");
    let dir = tmp.path().join("c");
    write_corpus(&dir, 40, &random_rows(7, 40, 0.3, 1), &[("s", 7)]).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let part = "matrix/part-00000.arrow";
    for f in files {
        std::fs::copy(&f, dir.join(part)).unwrap();
        let (sha, bytes) = sha256_file(&dir.join(part)).unwrap();
        let mut m = manifest.clone();
        for e in m["files"].as_array_mut().unwrap() {
            if e["path"] == part {
                e["bytes"] = bytes.into();
                e["sha256"] = sha.clone().into();
            }
        }
        std::fs::write(dir.join("manifest.json"), serde_json::to_vec(&m).unwrap()).unwrap();
        no_panic(&f, || {
            if let Ok(c) = Corpus::open(&dir) {
                for cell in 0..c.n_cells() {
                    assert_eq!(c.indices(cell).len(), c.values(cell).len());
                    std::hint::black_box(c.values(cell).to_f64_vec());
                }
            }
            let _ = validate(&dir);
        });
    }
}

#[test]
fn h5ad_regressions_give_errors_not_panics() {
    let files = inputs("h5ad");
    assert!(!files.is_empty(), "fuzz/regressions/h5ad is empty");
    for f in files {
        no_panic(&f, || {
            let Ok(h) = H5ad::open(&f) else { return };
            let _ = h.n_obs();
            if let Ok(m) = h.matrix(&MatrixSource::X) {
                let rows = m.shape().0;
                let _ = m.value_stats();
                let mut seen = 0u64;
                for c in m.chunks(7) {
                    let Ok(c) = c else { break };
                    assert_eq!(c.indices.len(), c.values.len());
                    seen += c.n_rows() as u64;
                    assert!(seen <= rows);
                }
            }
            let _ = h.obs(None);
            let _ = h.var(&MatrixSource::X);
            let _ = h.gene_names(&MatrixSource::X, None);
            let _ = h.obsm("spatial");
        });
    }
}
