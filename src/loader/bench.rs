//! Throughput measurement of the loader against a plain memcpy of the same bytes.
//!
//! `cellarrow bench` prints these figures; they live here so that the command line stays thin
//! and the Python package can report the same numbers.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, ListArray};
use arrow::datatypes::{DataType, Float32Type, Float64Type, UInt16Type, UInt32Type};
use arrow::record_batch::RecordBatch;

use super::{BatchPlan, Concat, Gatherer, Loader, LoaderOptions, SamplerSpec};
use crate::corpus::Corpus;
use crate::error::Result;
use crate::sample::{mean_label_entropy, Cohort, SampleIndex};

/// What one loader run delivered, and how fast.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchResult {
    /// Loader threads (0: gathered on the consumer's thread); for [`run_shards`], the number
    /// of shards, each read on its own thread.
    pub threads: usize,
    pub batches: usize,
    pub cells: u64,
    pub nnz: u64,
    /// Bytes of gene indices and values delivered.
    pub bytes: u64,
    pub seconds: f64,
    pub cells_per_s: f64,
    pub mb_per_s: f64,
    /// Time the consumer waited for each batch (`Iterator::next`), median and 99th percentile.
    pub p50: Duration,
    pub p99: Duration,
    /// Largest anonymous resident memory seen during the run, in KiB (mapped corpus pages are
    /// file-backed and not counted); `None` where `/proc/self/status` is unavailable.
    pub peak_anon_rss_kib: Option<u64>,
    /// Sum of every delivered value, so that no value goes untouched.
    pub checksum: f64,
    /// Per-batch byte counts, for [`memcpy_limit`].
    pub batch_bytes: Vec<usize>,
}

/// Runs `plan` through a [`Loader`] with `threads` threads, touching every value of every batch.
pub fn run(
    gatherer: Arc<Gatherer>,
    plan: Arc<dyn BatchPlan>,
    threads: usize,
    prefetch: usize,
) -> Result<BenchResult> {
    let started = Instant::now();
    let tally = consume(Loader::new(gatherer, plan, options(threads, prefetch)))?;
    Ok(tally.result(threads, started.elapsed()))
}

/// Runs `plans` side by side, one thread each, each thread gathering its own plan's batches
/// itself and touching every value: how the data-loader workers or the ranks of one machine
/// read, each its own shard. The figures are those of all shards together over the wall time
/// from a common start; [`BenchResult::threads`] is the number of shards.
pub fn run_shards(gatherer: Arc<Gatherer>, plans: Vec<Arc<dyn BatchPlan>>) -> Result<BenchResult> {
    let n = plans.len();
    let start = Barrier::new(n + 1);
    let (tallies, elapsed) = std::thread::scope(|scope| {
        let handles: Vec<_> = plans
            .into_iter()
            .map(|plan| {
                let (gatherer, start) = (gatherer.clone(), &start);
                scope.spawn(move || {
                    let loader = Loader::new(gatherer, plan, options(0, 1));
                    start.wait();
                    consume(loader)
                })
            })
            .collect();
        start.wait();
        let started = Instant::now();
        let tallies: Vec<Result<Tally>> = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect();
        (tallies, started.elapsed())
    });
    let mut all = Tally::default();
    for t in tallies {
        all.merge(t?);
    }
    Ok(all.result(n, elapsed))
}

fn options(threads: usize, prefetch: usize) -> LoaderOptions {
    LoaderOptions {
        threads,
        prefetch,
        ..LoaderOptions::default()
    }
}

/// What a consumer saw: per-batch waits and sizes, and the sums over the batches.
#[derive(Default)]
struct Tally {
    lat: Vec<Duration>,
    batch_bytes: Vec<usize>,
    cells: u64,
    nnz: u64,
    bytes: u64,
    checksum: f64,
    peak: Option<u64>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.lat.extend(other.lat);
        self.batch_bytes.extend(other.batch_bytes);
        self.cells += other.cells;
        self.nnz += other.nnz;
        self.bytes += other.bytes;
        self.checksum += other.checksum;
        self.peak = self.peak.max(other.peak);
    }

    fn result(mut self, threads: usize, elapsed: Duration) -> BenchResult {
        let seconds = elapsed.as_secs_f64().max(1e-9);
        self.lat.sort_unstable();
        BenchResult {
            threads,
            batches: self.lat.len(),
            cells: self.cells,
            nnz: self.nnz,
            bytes: self.bytes,
            seconds,
            cells_per_s: self.cells as f64 / seconds,
            mb_per_s: self.bytes as f64 / seconds / 1e6,
            p50: percentile(&self.lat, 0.50),
            p99: percentile(&self.lat, 0.99),
            peak_anon_rss_kib: self.peak,
            checksum: self.checksum,
            batch_bytes: self.batch_bytes,
        }
    }
}

/// Takes every batch of `loader`, timing each wait and touching every value.
fn consume(mut loader: Loader) -> Result<Tally> {
    let mut t = Tally {
        lat: Vec::with_capacity(loader.n_batches()),
        batch_bytes: Vec::with_capacity(loader.n_batches()),
        peak: anon_rss_kib(),
        ..Tally::default()
    };
    loop {
        let waited = Instant::now();
        let Some(batch) = loader.next() else { break };
        t.lat.push(waited.elapsed());
        let batch = batch?;
        let (n, b, s) = touch(&batch);
        t.cells += batch.num_rows() as u64;
        t.nnz += n;
        t.bytes += b as u64;
        t.checksum += s;
        t.batch_bytes.push(b);
        if t.lat.len().is_multiple_of(16) {
            t.peak = t.peak.max(anon_rss_kib());
        }
    }
    Ok(t)
}

/// The limit: MB/s of copying the same per-batch byte counts with one sequential memcpy each,
/// from a warm in-memory source into a freshly allocated buffer (as a gathered batch is).
pub fn memcpy_limit(batch_bytes: &[usize]) -> f64 {
    let total: usize = batch_bytes.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let max = batch_bytes.iter().copied().max().unwrap_or(0);
    // A source bigger than the caches but bounded, reused round-robin.
    let src_len = total.clamp(max, 256 << 20).max(1);
    let src: Vec<u8> = (0..src_len).map(|i| i as u8).collect();
    let mut pos = 0usize;
    let mut sink = 0u64;
    let t = Instant::now();
    for &b in batch_bytes {
        if pos + b > src_len {
            pos = 0;
        }
        let mut dst: Vec<u8> = Vec::with_capacity(b);
        dst.extend_from_slice(&src[pos..pos + b]);
        pos += b;
        sink = sink.wrapping_add(dst.last().copied().unwrap_or(0) as u64);
        std::hint::black_box(&dst);
    }
    let secs = t.elapsed().as_secs_f64().max(1e-9);
    std::hint::black_box(sink);
    total as f64 / secs / 1e6
}

/// Anonymous (private, not file-backed) resident memory of this process in KiB, from
/// `RssAnon` in `/proc/self/status`.
pub fn anon_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| {
        let rest = l.strip_prefix("RssAnon:")?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Non-zeros, payload bytes (indices + values, or the dense matrix) and the sum of the values.
fn touch(batch: &RecordBatch) -> (u64, usize, f64) {
    fn sum_list(l: &ListArray) -> (u64, usize, f64) {
        let v = l.values();
        let s = sum_values(v.as_ref());
        (
            v.len() as u64,
            v.len() * v.data_type().primitive_width().unwrap_or(0),
            s,
        )
    }
    let mut out = (0u64, 0usize, 0f64);
    if let Some(idx) = batch.column_by_name("indices") {
        let idx = idx.as_list::<i32>().values();
        out.1 += idx.len() * idx.data_type().primitive_width().unwrap_or(0);
    }
    if let Some(values) = batch.column_by_name("values") {
        let (n, b, s) = sum_list(values.as_list::<i32>());
        out.0 += n;
        out.1 += b;
        out.2 += s;
    }
    // Tokens: every token and value of the padded rows.
    for name in ["tokens", "token_values"] {
        if let Some(col) = batch.column_by_name(name) {
            let v = col.as_fixed_size_list().values();
            out.1 += v.len() * v.data_type().primitive_width().unwrap_or(0);
            if name == "token_values" {
                out.0 += v.len() as u64;
                out.2 += sum_values(v.as_ref());
            }
        }
    }
    if let Some(dense) = batch.column_by_name("dense") {
        let v = dense.as_fixed_size_list().values();
        out.0 += v.len() as u64;
        out.1 += v.len() * v.data_type().primitive_width().unwrap_or(0);
        out.2 += sum_values(v.as_ref());
    }
    out
}

fn sum_values(v: &dyn Array) -> f64 {
    match v.data_type() {
        DataType::UInt16 => v
            .as_primitive::<UInt16Type>()
            .values()
            .iter()
            .map(|&x| x as u64)
            .sum::<u64>() as f64,
        DataType::UInt32 => v
            .as_primitive::<UInt32Type>()
            .values()
            .iter()
            .map(|&x| x as u64)
            .sum::<u64>() as f64,
        DataType::Float32 => v
            .as_primitive::<Float32Type>()
            .values()
            .iter()
            .map(|&x| x as f64)
            .sum(),
        DataType::Float64 => v.as_primitive::<Float64Type>().values().iter().sum(),
        DataType::Int32 => v
            .as_primitive::<arrow::datatypes::Int32Type>()
            .values()
            .iter()
            .map(|&x| x as i64)
            .sum::<i64>() as f64,
        _ => 0.0,
    }
}

/// Keeps freed batch buffers in the process heap (glibc `mallopt`): without it, glibc returns
/// the memory of a dropped batch to the kernel (heap trimming, or `munmap` above the mmap
/// threshold) and the next batch page-faults fresh zeroed pages in, which costs about as much
/// as the copy itself. Process-wide; call once at start-up, before the loader threads exist.
/// Does nothing on other C libraries.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before other threads allocate.
    unsafe {
        // 32 MiB is glibc's largest mmap threshold on 64-bit targets.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// The batches of `epochs` consecutive epochs from `spec.epoch`, for worker `shard` of
/// `shards` within the worker shard `spec` names (so `shards` threads together read that
/// shard's epochs).
pub fn epochs_plan(
    spec: &SamplerSpec,
    corpus: &Arc<Corpus>,
    cohort: &Cohort,
    epochs: u64,
    shard: usize,
    shards: usize,
) -> Result<Arc<dyn BatchPlan>> {
    let plans = (0..epochs.max(1))
        .map(|e| {
            let s = SamplerSpec {
                epoch: spec.epoch + e,
                worker: spec.worker * shards as u32 + shard as u32,
                num_workers: spec.num_workers * shards as u32,
                ..spec.clone()
            };
            Ok(s.plan(corpus, cohort.clone())?.plan)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(Concat::new(plans)))
}

/// Mean entropy (bits) of the `label` obs column over the batches of `plan`: how mixed a
/// batch's labels are.
pub fn label_entropy(corpus: &Corpus, plan: &dyn BatchPlan, label: &str) -> Result<f64> {
    let index = SampleIndex::from_corpus(corpus, Some(label), false)?;
    let labels = index.require_labels("the label entropy")?;
    let mut total = 0.0;
    for b in 0..plan.n_batches() {
        let cells = plan.batch(b)?.cells;
        let codes: Vec<u32> = cells.iter().map(|&c| labels.codes[c as usize]).collect();
        total += mean_label_entropy(&codes, codes.len().max(1));
    }
    Ok(total / plan.n_batches().max(1) as f64)
}
