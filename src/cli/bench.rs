//! `cellarrow bench`: loader throughput per sampler and thread count, against a memcpy limit.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;

use super::sample::{OutputArgs, SamplerArgs, SamplerKind};
use crate::corpus::Corpus;
use crate::error::Result;
use crate::loader::bench::{self, BenchResult};
use crate::loader::{BatchPlan, Concat, Gatherer};

/// Arguments of `cellarrow bench`.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  cellarrow bench my.corpus --batch-size 256 --threads 1,2 --epochs 3"
)]
pub struct BenchArgs {
    /// The corpus directory.
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
    /// Epochs per run (consecutive epochs from `--epoch`).
    #[arg(long, default_value_t = 1)]
    pub epochs: u64,
    /// Batches gathered ahead.
    #[arg(long, default_value_t = 8)]
    pub prefetch: usize,
    #[command(flatten)]
    pub sampler: SamplerArgs,
    #[command(flatten)]
    pub output_args: OutputArgs,
}

/// Runs `cellarrow bench`.
pub fn run(args: BenchArgs) -> Result<()> {
    bench::keep_freed_memory();
    let corpus = Arc::new(Corpus::open(&args.corpus)?);
    let m = corpus.manifest();
    println!(
        "corpus {}: {} cells x {} genes, {} non-zeros ({:.2}% dense), {:?} indices, {:?} values",
        args.corpus.display(),
        m.n_cells,
        m.n_genes,
        m.nnz,
        100.0 * m.nnz as f64 / (m.n_cells.max(1) as f64 * m.n_genes.max(1) as f64),
        m.index_type,
        m.value_type
    );
    let cohort = args.sampler.cohort(&corpus)?;
    println!(
        "{:<8} {:>3} {:>7} {:>10} {:>12} {:>9} {:>9} {:>9} {:>11} {:>6} {:>10}",
        "sampler",
        "thr",
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
    for &kind in &args.samplers {
        let sargs = SamplerArgs {
            sampler: kind,
            ..args.sampler.clone()
        };
        let started = Instant::now();
        let plans: Result<Vec<Arc<dyn BatchPlan>>> = (0..args.epochs.max(1))
            .map(|e| {
                SamplerArgs {
                    epoch: sargs.epoch + e,
                    ..sargs.clone()
                }
                .plan(&corpus, cohort.clone(), None)
            })
            .collect();
        let plans = match plans {
            Ok(p) => p,
            Err(e) => {
                println!("{:<8} skipped: {e}", name(kind));
                continue;
            }
        };
        let planned = started.elapsed() / args.epochs.max(1) as u32;
        let options = args.output_args.batch_options(sargs.grouped())?;
        let gatherer = Arc::new(Gatherer::new(corpus.clone(), options)?);
        // What a training job waits for at the start of an epoch: the sampler's plan (block
        // enumeration, group tables) and the first batch.
        if plans[0].n_batches() > 0 {
            let t = Instant::now();
            gatherer.gather_request(&plans[0].batch(0)?)?;
            let gathered = t.elapsed();
            println!(
                "{:<8} first batch after {:.1} ms: plan {:.1} ms (one epoch), gather {:.2} ms",
                name(kind),
                (planned + gathered).as_secs_f64() * 1e3,
                planned.as_secs_f64() * 1e3,
                gathered.as_secs_f64() * 1e3
            );
        }
        let plan: Arc<dyn BatchPlan> = Arc::new(Concat::new(plans));
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
            print_row(kind, &r);
            match one {
                None if t == 1 => one = Some(r.cells_per_s),
                Some(base) if t > 1 => println!(
                    "{:<8} {t} threads: {:.2}x one thread",
                    "",
                    r.cells_per_s / base
                ),
                _ => {}
            }
        }
    }
    Ok(())
}

fn name(kind: SamplerKind) -> &'static str {
    match kind {
        SamplerKind::Random => "random",
        SamplerKind::Groups => "groups",
        SamplerKind::Regions => "regions",
        SamplerKind::Blocks => "blocks",
    }
}

fn print_row(kind: SamplerKind, r: &BenchResult) {
    let limit = bench::memcpy_limit(&r.batch_bytes);
    let rss = r
        .peak_anon_rss_kib
        .map(|k| format!("{:.1} MB", k as f64 / 1024.0))
        .unwrap_or_else(|| "n/a".into());
    println!(
        "{:<8} {:>3} {:>7} {:>10} {:>12.0} {:>9.0} {:>9.3} {:>9.3} {:>11.0} {:>6.2} {:>10}",
        name(kind),
        r.threads,
        r.batches,
        r.cells,
        r.cells_per_s,
        r.mb_per_s,
        r.p50.as_secs_f64() * 1e3,
        r.p99.as_secs_f64() * 1e3,
        limit,
        if limit > 0.0 { r.mb_per_s / limit } else { 0.0 },
        rss
    );
}
