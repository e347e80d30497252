//! Concurrency: 8 reader processes sample one corpus while another corpus is converted beside
//! it; every value they read is correct and none of them sees an error.
//!
//! The readers are this test binary run again with `reader_child` selected and the corpus,
//! the expected per-cell digests and a stop file passed in the environment.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cellarrow::convert::{convert, resolve_inputs, ConvertOptions};
use cellarrow::corpus::validate;
use cellarrow::Corpus;

use crate::common::*;

const READERS: usize = 8;

/// (nnz, sum of values, sum of (gene + 1) * value) of one cell.
fn digest(c: &Corpus, cell: u64) -> (u64, f64, f64) {
    let (ix, v) = (c.indices(cell), c.values(cell));
    let mut s = 0.0;
    let mut w = 0.0;
    for k in 0..v.len() {
        s += v.get(k);
        w += (ix.get(k) as f64 + 1.0) * v.get(k);
    }
    (v.len() as u64, s, w)
}

fn write_digests(c: &Corpus, path: &Path) {
    let mut out = Vec::with_capacity(c.n_cells() as usize * 24);
    for cell in 0..c.n_cells() {
        let (n, s, w) = digest(c, cell);
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&s.to_le_bytes());
        out.extend_from_slice(&w.to_le_bytes());
    }
    std::fs::write(path, out).unwrap();
}

fn read_digests(path: &Path) -> Vec<(u64, f64, f64)> {
    let b = std::fs::read(path).unwrap();
    b.chunks_exact(24)
        .map(|c| {
            (
                u64::from_le_bytes(c[0..8].try_into().unwrap()),
                f64::from_le_bytes(c[8..16].try_into().unwrap()),
                f64::from_le_bytes(c[16..24].try_into().unwrap()),
            )
        })
        .collect()
}

/// One reader process: opens the corpus again and again and checks random cells and runs of
/// consecutive cells against the digests until the stop file appears.
#[test]
#[ignore = "child process of readers_see_correct_values_while_a_conversion_runs"]
fn reader_child() {
    let (Some(corpus), Some(digests), Some(stop)) = (
        std::env::var_os("CELLARROW_IT_READER"),
        std::env::var_os("CELLARROW_IT_DIGESTS"),
        std::env::var_os("CELLARROW_IT_STOP"),
    ) else {
        return;
    };
    let want = read_digests(Path::new(&digests));
    let mut rng = Rng((std::process::id() as u64 * 2654435761) | 1);
    let (mut cells, mut opens) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let c = Corpus::open(&corpus).expect("reader: open");
        opens += 1;
        assert_eq!(c.n_cells() as usize, want.len());
        for _ in 0..2000 {
            let cell = rng.below(c.n_cells());
            let run = 1 + rng.below(8);
            for cell in cell..(cell + run).min(c.n_cells()) {
                let got = digest(&c, cell);
                assert_eq!(got, want[cell as usize], "reader: cell {cell}");
                cells += 1;
            }
        }
        if Path::new(&stop).exists() && opens >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "reader: never told to stop");
    }
    println!("READER-OK {opens} opens {cells} cells");
}

#[test]
fn readers_see_correct_values_while_a_conversion_runs() {
    let tmp = scratch("concurrent");
    let root = tmp.path();
    let a = root.join("a.corpus");
    let mut o = ConvertOptions::new(&a);
    o.threads = 1;
    o.part_cells = 3000;
    convert(&resolve_inputs(&[mouse()]).unwrap(), &o).unwrap();
    // The corpus equals its source, so digests taken from it are the true values.
    let cmp = cellarrow::convert::verify::against(&a, &[mouse()]).unwrap();
    assert_eq!(cmp.cells, 10_000);
    let digests = root.join("digests.bin");
    write_digests(&Corpus::open(&a).unwrap(), &digests);
    let stop = root.join("stop");

    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "concurrency::reader_child",
                    "--exact",
                    "--ignored",
                    "--nocapture",
                    "--test-threads",
                    "1",
                ])
                .env("CELLARROW_IT_READER", &a)
                .env("CELLARROW_IT_DIGESTS", &digests)
                .env("CELLARROW_IT_STOP", &stop)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();

    // Beside it: another corpus in the same directory, from an input manifest.
    let inputs = root.join("inputs.json");
    let recs: Vec<_> = (0..2)
        .map(|i| serde_json::json!({"path": mouse(), "sample_id": format!("m{i}")}))
        .collect();
    std::fs::write(&inputs, serde_json::to_vec(&recs).unwrap()).unwrap();
    let b: PathBuf = root.join("b.corpus");
    let out = cli([
        "convert".as_ref(),
        inputs.as_os_str(),
        "-o".as_ref(),
        b.as_os_str(),
        "-q".as_ref(),
        "--threads".as_ref(),
        "2".as_ref(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::write(&stop, b"").unwrap();

    let mut total = 0u64;
    for (i, r) in readers.into_iter().enumerate() {
        let o = r.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success() && text.contains("READER-OK"),
            "reader {i} failed: {}\n{}",
            text,
            String::from_utf8_lossy(&o.stderr)
        );
        let line = &text[text.find("READER-OK").unwrap()..];
        total += line
            .split_whitespace()
            .nth(3)
            .unwrap()
            .parse::<u64>()
            .unwrap();
    }
    eprintln!("{READERS} readers checked {total} cells");
    validate(&a).unwrap();
    validate(&b).unwrap();
    assert_eq!(Corpus::open(&b).unwrap().n_cells(), 20_000);
}
