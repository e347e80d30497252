//! `cellarrow bench`: loader throughput per sampler and thread count, against a memcpy limit.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;

use super::sample::{OutputArgs, SamplerArgs, SamplerKind};
use crate::corpus::Corpus;
use crate::error::Result;
use crate::loader::bench::{self, BenchResult};
use crate::loader::{defaults, Gatherer, SamplerSpec};

/// Arguments of `cellarrow bench`.
#[derive(Debug, Args)]
#[command(
    after_help = "Two ways of using several cores are measured. `--threads N`: one consumer, fed by N \
loader threads that gather ahead (what `cellarrow sample` and the Python loaders do). `--shards N`: \
N threads, each gathering and consuming its own shard of the epoch (worker i of N), as the \
data-loader workers or the ranks of one machine do. Every value of every batch is read by the \
consumer.\n\nExample:\n  cellarrow bench my.corpus --batch-size 256 --threads 1,2 --shards 1,2 --epochs 3"
)]
pub struct BenchArgs {
    /// The corpus: a directory or a URL (s3://bucket/prefix, gs://, az://, http(s)://, file://)
    pub corpus: PathBuf,
    /// Samplers to measure (comma-separated); those that cannot be built on this corpus are
    /// reported and skipped.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "random,groups,regions,blocks"
    )]
    pub samplers: Vec<SamplerKind>,
    /// Loader thread counts to measure (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub threads: Vec<usize>,
    /// Shard counts to measure (comma-separated; 0 or none: skip): N threads each reading
    /// worker shard i of N of the same epochs, gathering on its own thread.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub shards: Vec<usize>,
    /// Epochs per run (consecutive epochs from `--epoch`).
    #[arg(long, default_value_t = 1)]
    pub epochs: u64,
    /// Batches gathered ahead.
    #[arg(long, default_value_t = defaults::PREFETCH)]
    pub prefetch: usize,
    /// One JSON object per line instead of the table, for scripts: a `run` record per
    /// measurement (with its `threads` or `shards`), a `first_batch` record per sampler.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub sampler: SamplerArgs,
    #[command(flatten)]
    pub output_args: OutputArgs,
}

/// Runs `cellarrow bench`.
pub fn run(args: BenchArgs) -> Result<()> {
    bench::keep_freed_memory();
    let base = args.output_args.apply(args.sampler.spec())?;
    let corpus = Arc::new(Corpus::open(&args.corpus)?);
    let out = Report { json: args.json };
    out.corpus(&args.corpus, &corpus);
    // The cohort is every sampler's; blocks and regions chosen in SQL are the samplers' own.
    let cohort = SamplerSpec {
        blocks_sql: None,
        regions_sql: None,
        bounds: false,
        ..base.clone()
    }
    .select(&corpus, None)?;
    out.header();
    let mut vocab_reported = false;
    for &kind in &args.samplers {
        let started = Instant::now();
        // The cohort is resolved; SQL that chooses groups of another sampler does not apply.
        let mut spec = SamplerSpec {
            sampler: kind,
            where_: None,
            cohort: None,
            blocks_sql: base
                .blocks_sql
                .clone()
                .filter(|_| kind == SamplerKind::Blocks),
            regions_sql: base
                .regions_sql
                .clone()
                .filter(|_| kind == SamplerKind::Regions),
            ..base.clone()
        };
        let planned = spec
            .select(&corpus, None)
            .and_then(|_| bench::epochs_plan(&spec, &corpus, &cohort, args.epochs, 0, 1));
        let plan = match planned {
            Ok(p) => p,
            Err(e) => {
                out.skipped(kind, &e);
                continue;
            }
        };
        let planned = started.elapsed() / args.epochs.max(1) as u32;
        let gatherer = Arc::new(Gatherer::new(corpus.clone(), spec.batch_options())?);
        if let (Some(v), false) = (gatherer.vocab(), vocab_reported) {
            out.vocabulary(&v.report());
            vocab_reported = true;
        }
        // What a training job waits for at the start of an epoch: the sampler's plan (block
        // enumeration, group tables) and the first batch.
        if plan.n_batches() > 0 {
            let t = Instant::now();
            gatherer.gather_request(&plan.batch(0)?)?;
            out.first_batch(kind, planned, t.elapsed());
        }
        if let (false, Some(label)) = (kind.grouped(), &spec.label) {
            let entropy = bench::label_entropy(&corpus, plan.as_ref(), label)?;
            out.entropy(kind, label, entropy);
        }
        // An untimed pass first, so every run finds the same pages in memory.
        bench::run(
            gatherer.clone(),
            plan.clone(),
            args.threads.iter().copied().max().unwrap_or(1),
            args.prefetch,
        )?;
        let mut one: Option<f64> = None;
        for &t in &args.threads {
            let r = bench::run(gatherer.clone(), plan.clone(), t, args.prefetch)?;
            out.result(kind, Run::Threads(t), &r);
            out.scaling(&mut one, Run::Threads(t), r.cells_per_s);
        }
        let mut one: Option<f64> = None;
        for &n in args.shards.iter().filter(|&&n| n > 0) {
            let plans = (0..n)
                .map(|i| bench::epochs_plan(&spec, &corpus, &cohort, args.epochs, i, n))
                .collect::<Result<Vec<_>>>()?;
            let r = bench::run_shards(gatherer.clone(), plans)?;
            out.result(kind, Run::Shards(n), &r);
            out.scaling(&mut one, Run::Shards(n), r.cells_per_s);
        }
    }
    Ok(())
}

/// How a measurement used its threads.
#[derive(Clone, Copy)]
enum Run {
    /// N loader threads feeding one consumer.
    Threads(usize),
    /// N threads, each gathering and consuming its own shard.
    Shards(usize),
}

/// Prints the figures as a table for people or, with `--json`, one JSON object per line.
struct Report {
    json: bool,
}

impl Report {
    fn emit(&self, record: serde_json::Value) {
        println!("{record}");
    }

    fn corpus(&self, path: &std::path::Path, corpus: &Corpus) {
        let m = corpus.manifest();
        let density = m.nnz as f64 / (m.n_cells.max(1) as f64 * m.n_genes.max(1) as f64);
        if self.json {
            return self.emit(serde_json::json!({
                "record": "corpus", "path": path, "cells": m.n_cells, "genes": m.n_genes,
                "nnz": m.nnz, "index_type": m.index_type, "value_type": m.value_type,
            }));
        }
        println!(
            "corpus {}: {} cells x {} genes, {} non-zeros ({:.2}% dense), {:?} indices, {:?} values",
            path.display(),
            m.n_cells,
            m.n_genes,
            m.nnz,
            100.0 * density,
            m.index_type,
            m.value_type
        );
    }

    /// The overlap of a model vocabulary (`--genes`) with the corpus, once.
    fn vocabulary(&self, overlap: &str) {
        if self.json {
            return self.emit(serde_json::json!({"record": "vocabulary", "overlap": overlap}));
        }
        println!("vocabulary: {overlap}");
    }

    fn header(&self) {
        if self.json {
            return;
        }
        println!(
            "{:<8} {:>8} {:>7} {:>10} {:>12} {:>9} {:>9} {:>9} {:>11} {:>6} {:>10}",
            "sampler",
            "run",
            "batches",
            "cells",
            "cells/s",
            "MB/s",
            "p50 ms",
            "p99 ms",
            "memcpy MB/s",
            "ratio",
            "anon RSS"
        );
    }

    fn skipped(&self, kind: SamplerKind, why: &crate::Error) {
        if self.json {
            return self.emit(serde_json::json!({
                "record": "skipped", "sampler": kind.name(), "error": why.to_string(),
            }));
        }
        println!("{:<8} skipped: {why}", kind.name());
    }

    fn first_batch(&self, kind: SamplerKind, planned: Duration, gathered: Duration) {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        if self.json {
            return self.emit(serde_json::json!({
                "record": "first_batch", "sampler": kind.name(),
                "plan_ms": ms(planned), "gather_ms": ms(gathered),
            }));
        }
        println!(
            "{:<8} first batch after {:.1} ms: plan {:.1} ms (one epoch), gather {:.2} ms",
            kind.name(),
            ms(planned + gathered),
            ms(planned),
            ms(gathered)
        );
    }

    fn entropy(&self, kind: SamplerKind, label: &str, bits: f64) {
        if self.json {
            return self.emit(serde_json::json!({
                "record": "entropy", "sampler": kind.name(), "label": label, "bits": bits,
            }));
        }
        println!(
            "{:<8} {label} entropy per batch {bits:.3} bits (how mixed a batch's labels are; compare random and shuffle)",
            kind.name(),
        );
    }

    fn result(&self, kind: SamplerKind, run: Run, r: &BenchResult) {
        let limit = bench::memcpy_limit(&r.batch_bytes);
        let ratio = if limit > 0.0 { r.mb_per_s / limit } else { 0.0 };
        let rss_mb = r.peak_anon_rss_kib.map(|k| k as f64 / 1024.0);
        if self.json {
            let (threads, shards) = match run {
                Run::Threads(t) => (Some(t), None),
                Run::Shards(n) => (None, Some(n)),
            };
            return self.emit(serde_json::json!({
                "record": "run", "sampler": kind.name(), "threads": threads, "shards": shards,
                "batches": r.batches, "cells": r.cells, "nnz": r.nnz, "bytes": r.bytes,
                "seconds": r.seconds, "cells_per_s": r.cells_per_s, "mb_per_s": r.mb_per_s,
                "p50_ms": r.p50.as_secs_f64() * 1e3, "p99_ms": r.p99.as_secs_f64() * 1e3,
                "memcpy_mb_per_s": limit, "memcpy_ratio": ratio, "peak_anon_rss_mb": rss_mb,
                "checksum": r.checksum,
            }));
        }
        let label = match run {
            Run::Threads(t) => format!("{t} thr"),
            Run::Shards(n) => format!("{n} shard{}", if n == 1 { "" } else { "s" }),
        };
        println!(
            "{:<8} {:>8} {:>7} {:>10} {:>12.0} {:>9.0} {:>9.3} {:>9.3} {:>11.0} {:>6.2} {:>10}",
            kind.name(),
            label,
            r.batches,
            r.cells,
            r.cells_per_s,
            r.mb_per_s,
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3,
            limit,
            ratio,
            rss_mb.map_or_else(|| "n/a".into(), |mb| format!("{mb:.1} MB"))
        );
    }

    /// Prints the ratio of `rate` to the first run's when that run had one thread or shard
    /// (the JSON records carry the rates; the reader divides).
    fn scaling(&self, one: &mut Option<f64>, run: Run, rate: f64) {
        let (n, what, base_name) = match run {
            Run::Threads(t) => (t, "threads", "one thread"),
            Run::Shards(n) => (n, "shards", "one shard"),
        };
        match *one {
            None if n == 1 => *one = Some(rate),
            Some(base) if n > 1 && !self.json => {
                println!("{:<8} {n} {what}: {:.2}x {base_name}", "", rate / base)
            }
            _ => {}
        }
    }
}
