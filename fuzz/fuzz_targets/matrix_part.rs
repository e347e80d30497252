//! Opening a matrix part: any bytes in place of a part of a valid corpus (its size and sha256
//! updated in the manifest, so that only the part's content is wrong) give an error from
//! `Corpus::open` and `validate`, or a corpus whose every cell reads without a panic.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use cellarrow::corpus::testing::{random_rows, write_corpus};
use cellarrow::corpus::{sha256_file, validate};
use cellarrow::Corpus;
use libfuzzer_sys::fuzz_target;

const PART: &str = "matrix/part-00000.arrow";

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    manifest: serde_json::Value,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" };
        let tmp = tempfile::Builder::new().prefix("fuzz-part-").tempdir_in(base).unwrap();
        let dir = tmp.path().join("c");
        let rows = random_rows(7, 40, 0.3, 1);
        write_corpus(&dir, 40, &rows, &[("s", 7)]).unwrap();
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
        // `CELLARROW_FUZZ_SEED_DIR=fuzz/seeds/matrix_part`: keep the valid part as a seed.
        if let Some(seeds) = std::env::var_os("CELLARROW_FUZZ_SEED_DIR") {
            let _ = std::fs::copy(dir.join(PART), std::path::Path::new(&seeds).join("valid.arrow"));
        }
        Fixture { _tmp: tmp, dir, manifest }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let part = f.dir.join(PART);
    std::fs::write(&part, data).unwrap();
    let (sha, bytes) = sha256_file(&part).unwrap();
    let mut m = f.manifest.clone();
    for e in m["files"].as_array_mut().unwrap() {
        if e["path"] == PART {
            e["bytes"] = bytes.into();
            e["sha256"] = sha.clone().into();
        }
    }
    std::fs::write(f.dir.join("manifest.json"), serde_json::to_vec(&m).unwrap()).unwrap();
    if let Ok(c) = Corpus::open(&f.dir) {
        for cell in 0..c.n_cells() {
            let (i, v) = (c.indices(cell), c.values(cell));
            assert_eq!(i.len(), v.len());
            std::hint::black_box(v.to_f64_vec());
        }
    }
    let _ = validate(&f.dir);
});
