//! Scale: what opening, loading from and appending to a corpus cost as it grows from 10^6 to
//! 10^8 cells (the per-cell and per-part overheads; the cells themselves are small).
//!
//! Every measurement runs in its own fresh process (this binary re-runs itself), so a figure
//! never includes what an earlier one left in the heap, and is the median over `--runs` runs
//! after one untimed warm-up (warm page cache).
//!
//! ```text
//! cargo bench --bench scale                       # 10^6, 10^7, 10^8 cells, 5 runs each
//! cargo bench --bench scale -- --corpora 1e6,1e7 --runs 3 --work /tmp/scale
//! ```
//!
//! Options of the driver (the default command):
//! - `--corpora LIST`: corpora to build and measure, `CELLS[:CELLS_PER_SAMPLE]` separated by
//!   commas (default `1e6,1e7,1e8,1e6:2500`; 250,000 cells per sample unless given; a sample
//!   is one part, as parts never span samples and hold up to 2^20 cells).
//! - `--runs N` (default 5), `--batches N` loader batches of 256 cells read (default 100).
//! - `--h5ad PATH`: the file appended (default the real 1,107-cell fixture
//!   `tests/data/scanpy_10x_v3_chr21_counts.h5ad`).
//! - `--first-h5ad PATH`: the file of the one untimed append that grows each built corpus
//!   into format 2 before anything is measured (default the real fixture
//!   `tests/data/debian_sctransform_pbmc_counts.h5ad`): the synthetic writer writes format 1
//!   (single-file tables), and the first append of such a corpus splits its genes table and
//!   computes its gene statistics once; the measured appends are the ones after.
//! - `--work DIR`: where corpora are built (default `$TMPDIR/cellarrow-scale`); each corpus is
//!   deleted once measured (`--keep` keeps them). The 10^8-cell corpus takes about 2.3 GB.
//! - `--json PATH`: also write every raw figure there.
//!
//! The commands the driver runs in child processes (usable by hand):
//! `build DIR CELLS CELLS_PER_SAMPLE`, `open DIR`, `load DIR BATCHES`, `append DIR H5AD`.
//! Each prints one JSON object on standard output.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, AsArray};
use cellarrow::convert::{append, ConvertOptions, InputSample};
use cellarrow::corpus::testing::{write_synthetic_corpus, SyntheticCorpus};
use cellarrow::loader::{Gatherer, Loader, SamplerKind, SamplerSpec};
use cellarrow::Corpus;
use serde_json::{json, Value};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() {
    // `cargo bench` passes `--bench`; it means nothing here.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let r = match args.first().map(String::as_str) {
        Some("build") => child_build(&args[1..]),
        Some("open") => child_open(&args[1..]),
        Some("load") => child_load(&args[1..]),
        Some("append") => child_append(&args[1..]),
        _ => driver(&args),
    };
    if let Err(e) = r {
        eprintln!("scale: {e}");
        std::process::exit(1);
    }
}

fn arg<'a>(args: &'a [String], i: usize, what: &str) -> Res<&'a str> {
    args.get(i)
        .map(String::as_str)
        .ok_or_else(|| format!("missing argument {what}").into())
}

fn parse_count(s: &str) -> Res<u64> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of cells"))?;
    if !(v >= 1.0 && v.fract() == 0.0) {
        return Err(format!("{s:?} is not a positive whole number").into());
    }
    Ok(v as u64)
}

/// Fields of `/proc/self/status` in KiB: VmRSS, VmHWM (peak RSS), RssAnon, RssFile.
fn memory() -> Value {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> Option<u64> {
        status.lines().find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(':')?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        })
    };
    json!({
        "vm_rss_kib": field("VmRSS"),
        "vm_hwm_kib": field("VmHWM"),
        "rss_anon_kib": field("RssAnon"),
        "rss_file_kib": field("RssFile"),
    })
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn child_build(args: &[String]) -> Res<()> {
    let dir = PathBuf::from(arg(args, 0, "DIR")?);
    let spec = SyntheticCorpus {
        n_cells: parse_count(arg(args, 1, "CELLS")?)?,
        sample_cells: parse_count(arg(args, 2, "CELLS_PER_SAMPLE")?)?,
        ..SyntheticCorpus::default()
    };
    let t = Instant::now();
    let m = write_synthetic_corpus(&dir, &spec)?;
    let seconds = t.elapsed().as_secs_f64();
    let bytes: u64 = m.files.iter().map(|f| f.bytes).sum();
    let part_bytes: u64 = m
        .files
        .iter()
        .filter(|f| f.path.starts_with("matrix/"))
        .map(|f| f.bytes)
        .sum();
    let obs_bytes: u64 = m
        .files
        .iter()
        .filter(|f| f.path == "obs.parquet")
        .map(|f| f.bytes)
        .sum();
    let out = json!({
        "seconds": seconds,
        "n_cells": m.n_cells,
        "nnz": m.nnz,
        "n_parts": m.matrix.parts.len(),
        "n_samples": m.samples.len(),
        "bytes": bytes,
        "matrix_bytes": part_bytes,
        "obs_bytes": obs_bytes,
        "memory": memory(),
    });
    println!("{out}");
    Ok(())
}

fn child_open(args: &[String]) -> Res<()> {
    let dir = arg(args, 0, "DIR")?;
    let t = Instant::now();
    let corpus = Corpus::open(dir)?;
    let open_ms = ms(t);
    let out = json!({
        "open_ms": open_ms,
        "n_cells": corpus.n_cells(),
        "n_parts": corpus.manifest().matrix.parts.len(),
        "n_batches": corpus.n_batches(),
        "memory": memory(),
    });
    println!("{out}");
    Ok(())
}

/// What `cellarrow.open(dir).loader(batch_size=256)` does: random cells over the whole corpus,
/// the default loader (two threads, eight batches ahead).
fn child_load(args: &[String]) -> Res<()> {
    let dir = arg(args, 0, "DIR")?;
    let n_batches: usize = arg(args, 1, "BATCHES")?.parse()?;
    let t = Instant::now();
    let corpus = Arc::new(Corpus::open(dir)?);
    let open_ms = ms(t);
    let t = Instant::now();
    let mut spec = SamplerSpec {
        batch_size: Some(256),
        ..SamplerSpec::new(SamplerKind::Random, 0)
    };
    let cohort = spec.select(&corpus, None)?;
    let planned = spec.plan(&corpus, cohort)?;
    let gatherer = Arc::new(Gatherer::new(corpus.clone(), spec.batch_options())?);
    let loader = Loader::new(gatherer, planned.plan, spec.loader_options());
    let (mut first_batch_ms, mut rows, mut nnz, mut sum) = (None, 0usize, 0usize, 0u64);
    for (i, b) in loader.take(n_batches).enumerate() {
        let b = b?;
        if i == 0 {
            first_batch_ms = Some(ms(t));
        }
        rows += b.num_rows();
        // Touch every value, so that nothing lazy skips the reads.
        let values = b
            .column_by_name("values")
            .ok_or("a batch without values")?
            .as_list::<i32>()
            .values()
            .clone();
        nnz += values.len();
        let v = arrow::compute::cast(&values, &arrow::datatypes::DataType::Float64)?;
        sum += v
            .as_primitive::<arrow::datatypes::Float64Type>()
            .values()
            .iter()
            .sum::<f64>() as u64;
    }
    let read_ms = ms(t);
    let out = json!({
        "open_ms": open_ms,
        "first_batch_ms": first_batch_ms,
        "read_ms": read_ms,
        "rows": rows,
        "nnz": nnz,
        "value_sum": sum,
        "memory": memory(),
    });
    println!("{out}");
    Ok(())
}

fn child_append(args: &[String]) -> Res<()> {
    let dir = PathBuf::from(arg(args, 0, "DIR")?);
    let h5ad = PathBuf::from(arg(args, 1, "H5AD")?);
    let input = InputSample {
        sample_id: h5ad
            .file_stem()
            .map_or_else(|| "appended".into(), |s| s.to_string_lossy().into_owned()),
        path: h5ad,
        metadata: Default::default(),
    };
    let opts = ConvertOptions::new(&dir);
    let t = Instant::now();
    let s = append(&dir, &[input], &opts)?;
    let seconds = t.elapsed().as_secs_f64();
    let out = json!({
        "seconds": seconds,
        "n_cells": s.n_cells,
        "bytes": s.bytes,
        "memory": memory(),
    });
    println!("{out}");
    Ok(())
}

/// Runs this binary with `args` and returns the JSON object it printed.
fn run_child(args: &[&str]) -> Res<Value> {
    let exe = std::env::current_exe()?;
    let out = Command::new(exe)
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()?;
    if !out.status.success() {
        return Err(format!("`scale {}` failed ({})", args.join(" "), out.status).into());
    }
    let text = String::from_utf8(out.stdout)?;
    let line = text
        .lines()
        .last()
        .ok_or_else(|| format!("`scale {}` printed nothing", args.join(" ")))?;
    Ok(serde_json::from_str(line)?)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn get(v: &Value, path: &[&str]) -> f64 {
    let mut v = v;
    for p in path {
        v = &v[*p];
    }
    v.as_f64().unwrap_or(f64::NAN)
}

fn med(runs: &[Value], path: &[&str]) -> f64 {
    median(runs.iter().map(|r| get(r, path)).collect())
}

/// A copy of `from` at `to` made of hard links: costs no bytes, and `append` never writes to
/// an existing file (it builds the new corpus beside and renames), so `from` stays intact.
fn link_tree(from: &Path, to: &Path) -> Res<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type()?.is_dir() {
            link_tree(&src, &dst)?;
        } else {
            std::fs::hard_link(&src, &dst)?;
        }
    }
    Ok(())
}

struct Opts {
    corpora: Vec<(u64, u64)>,
    runs: usize,
    batches: usize,
    h5ad: PathBuf,
    first_h5ad: PathBuf,
    work: PathBuf,
    keep: bool,
    json: Option<PathBuf>,
}

fn parse_opts(args: &[String]) -> Res<Opts> {
    let mut o = Opts {
        corpora: Vec::new(),
        runs: 5,
        batches: 100,
        h5ad: Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/scanpy_10x_v3_chr21_counts.h5ad"),
        first_h5ad: Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/debian_sctransform_pbmc_counts.h5ad"),
        work: std::env::temp_dir().join("cellarrow-scale"),
        keep: false,
        json: None,
    };
    let mut corpora = "1e6,1e7,1e8,1e6:2500".to_string();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || -> Res<String> {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs a value").into())
        };
        match a.as_str() {
            "--corpora" => corpora = val()?,
            "--runs" => o.runs = val()?.parse()?,
            "--batches" => o.batches = val()?.parse()?,
            "--h5ad" => o.h5ad = val()?.into(),
            "--first-h5ad" => o.first_h5ad = val()?.into(),
            "--work" => o.work = val()?.into(),
            "--json" => o.json = Some(val()?.into()),
            "--keep" => o.keep = true,
            other => return Err(format!("unknown option {other:?} (see benches/scale.rs)").into()),
        }
    }
    for c in corpora.split(',').filter(|c| !c.is_empty()) {
        let (cells, per) = match c.split_once(':') {
            Some((a, b)) => (parse_count(a)?, parse_count(b)?),
            None => (parse_count(c)?, 250_000),
        };
        o.corpora.push((cells, per));
    }
    if o.runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    Ok(o)
}

fn commit() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let hash = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    match git(&["status", "--porcelain", "--untracked-files=no"]) {
        Some(s) if !s.is_empty() => format!("{hash} (with uncommitted changes)"),
        _ => hash,
    }
}

fn driver(args: &[String]) -> Res<()> {
    let o = parse_opts(args)?;
    std::fs::create_dir_all(&o.work)?;
    let commit = commit();
    let mut results = Vec::new();
    for &(cells, per_sample) in &o.corpora {
        let dir = o.work.join(format!("c{cells}-{per_sample}"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        let d = dir.to_str().ok_or("a work directory that is not UTF-8")?;
        eprintln!("scale: building {cells} cells ({per_sample} per sample) in {d}");
        let build = run_child(&["build", d, &cells.to_string(), &per_sample.to_string()])?;
        eprintln!(
            "scale: built in {:.1} s: {build}",
            get(&build, &["seconds"])
        );
        let first = o
            .first_h5ad
            .to_str()
            .ok_or("an h5ad path that is not UTF-8")?;
        let grown = run_child(&["append", d, first])?;
        eprintln!(
            "scale: grown into format 2 by a first append in {:.1} s",
            get(&grown, &["seconds"])
        );

        let batches = o.batches.to_string();
        // One untimed pass of each reader warms the page cache.
        run_child(&["open", d])?;
        run_child(&["load", d, &batches])?;
        let mut open = Vec::new();
        let mut load = Vec::new();
        for _ in 0..o.runs {
            open.push(run_child(&["open", d])?);
            load.push(run_child(&["load", d, &batches])?);
        }
        eprintln!(
            "scale: open {:.2} ms, first batch {:.2} ms, loader VmHWM {:.0} KiB",
            med(&open, &["open_ms"]),
            med(&load, &["first_batch_ms"]),
            med(&load, &["memory", "vm_hwm_kib"])
        );

        let mut appends = Vec::new();
        let h5 = o.h5ad.to_str().ok_or("an h5ad path that is not UTF-8")?;
        for i in 0..o.runs {
            let clone = o.work.join(format!("c{cells}-{per_sample}-append{i}"));
            if clone.exists() {
                std::fs::remove_dir_all(&clone)?;
            }
            link_tree(&dir, &clone)?;
            let c = clone.to_str().ok_or("a work directory that is not UTF-8")?;
            let r = run_child(&["append", c, h5]);
            std::fs::remove_dir_all(&clone)?;
            let r = r?;
            eprintln!("scale: append {:.3} s", get(&r, &["seconds"]));
            appends.push(r);
        }
        if !o.keep {
            std::fs::remove_dir_all(&dir)?;
        }
        results.push(json!({
            "cells": cells,
            "cells_per_sample": per_sample,
            "build": build,
            "first_append": grown,
            "open": open,
            "load": load,
            "append": appends,
        }));
    }
    let report = json!({
        "commit": commit,
        "runs": o.runs,
        "batches": o.batches,
        "h5ad": o.h5ad,
        "results": results,
    });
    if let Some(p) = &o.json {
        std::fs::write(p, serde_json::to_vec_pretty(&report)?)?;
    }
    println!("{}", markdown(&report));
    Ok(())
}

fn mib(kib: f64) -> String {
    format!("{:.1}", kib / 1024.0)
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The table of docs/benchmarks.md.
fn markdown(report: &Value) -> String {
    let mut s = format!(
        "Measured at commit `{}`; medians over {} runs, each in a fresh process, warm page \
         cache; the loader reads {} batches of 256 random cells.\n\n",
        report["commit"].as_str().unwrap_or("?"),
        report["runs"],
        report["batches"],
    );
    s.push_str(
        "| cells | samples = parts | matrix batches | nnz | corpus on disk (GB) | build (s) | \
         `Corpus::open` (ms) | first batch (ms) | loader peak RSS, VmHWM (MiB) | loader \
         RssAnon (MiB) | loader RssFile (MiB) | append 1 file (s) | append peak RSS (MiB) |\n",
    );
    s.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let empty = Vec::new();
    for r in report["results"].as_array().unwrap_or(&empty) {
        let open = r["open"].as_array().unwrap_or(&empty);
        let load = r["load"].as_array().unwrap_or(&empty);
        let app = r["append"].as_array().unwrap_or(&empty);
        s.push_str(&format!(
            "| {} | {} | {} | {} | {:.2} | {:.1} | {:.2} | {:.2} | {} | {} | {} | {:.2} | {} |\n",
            thousands(r["cells"].as_u64().unwrap_or(0)),
            thousands(r["build"]["n_parts"].as_u64().unwrap_or(0)),
            thousands(
                open.first()
                    .map_or(0, |o| o["n_batches"].as_u64().unwrap_or(0))
            ),
            thousands(r["build"]["nnz"].as_u64().unwrap_or(0)),
            get(&r["build"], &["bytes"]) / 1e9,
            get(&r["build"], &["seconds"]),
            med(open, &["open_ms"]),
            med(load, &["first_batch_ms"]),
            mib(med(load, &["memory", "vm_hwm_kib"])),
            mib(med(load, &["memory", "rss_anon_kib"])),
            mib(med(load, &["memory", "rss_file_kib"])),
            med(app, &["seconds"]),
            mib(med(app, &["memory", "vm_hwm_kib"])),
        ));
    }
    s
}
