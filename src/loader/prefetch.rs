//! The prefetching loader: worker threads gather batches ahead of the consumer.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use arrow::record_batch::RecordBatch;

use super::{BatchPlan, Gatherer, Region};
use crate::error::{Error, ErrorKind, Result};

/// How a [`Loader`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoaderOptions {
    /// Worker threads; 0 gathers each batch on the consumer's thread when it is asked for.
    pub threads: usize,
    /// Batches gathered ahead of the consumer at most (at least 1).
    pub prefetch: usize,
    /// The first batch of the plan to yield (to resume an interrupted epoch).
    pub start: usize,
    /// For a corpus read lazily from object storage: the fetches of this many batches past
    /// the one being gathered are in flight (their chunks land in the node cache), so that
    /// the wait per request is paid by many batches at once. 0: each batch fetches its own.
    pub read_ahead: usize,
}

impl Default for LoaderOptions {
    fn default() -> Self {
        LoaderOptions {
            threads: super::spec::defaults::THREADS,
            prefetch: super::spec::defaults::PREFETCH,
            start: 0,
            read_ahead: super::spec::defaults::READ_AHEAD,
        }
    }
}

/// State shared by the consumer and the workers.
struct Shared {
    /// Next batch number to hand to a worker.
    next_job: AtomicUsize,
    stop: AtomicBool,
    /// The first batch of the run and [`LoaderOptions::read_ahead`].
    start: usize,
    read_ahead: usize,
    /// Batches the consumer has taken so far (as a plan position); a worker may only start a
    /// batch below `consumed + prefetch`, which bounds the batches held in memory.
    consumed: Mutex<usize>,
    advanced: Condvar,
}

/// Iterates over the batches of a plan, in plan order, gathered by a pool of threads.
///
/// The workers pull batch numbers from a shared counter and work at most `prefetch` batches
/// ahead of the consumer; finished batches are reordered so the output does not depend on the
/// thread count. A failed batch is yielded as an `Err` and ends the iteration. Dropping the
/// loader stops and joins its threads.
///
/// ```no_run
/// use std::sync::Arc;
/// use cellarrow::loader::{BatchOptions, Gatherer, Loader, LoaderOptions, SamplerKind, SamplerSpec};
/// use cellarrow::sample::Cohort;
///
/// let corpus = Arc::new(cellarrow::Corpus::open("pbmc.corpus")?);
/// let spec = SamplerSpec { batch_size: Some(256), ..SamplerSpec::new(SamplerKind::Random, 7) };
/// let planned = spec.plan(&corpus, Cohort::all(corpus.n_cells()))?;
/// let gatherer = Arc::new(Gatherer::new(corpus.clone(), BatchOptions::default())?);
/// let options = LoaderOptions { threads: 4, ..LoaderOptions::default() };
/// for batch in Loader::new(gatherer, planned.plan, options) {
///     let batch = batch?; // cell, indices, values: one row per cell
///     assert!(batch.num_rows() <= 256);
/// }
/// # Ok::<(), cellarrow::Error>(())
/// ```
pub struct Loader {
    gatherer: Arc<Gatherer>,
    plan: Arc<dyn BatchPlan>,
    shared: Arc<Shared>,
    rx: Option<Receiver<(usize, Result<RecordBatch>)>>,
    threads: Vec<JoinHandle<()>>,
    pending: BTreeMap<usize, Result<RecordBatch>>,
    next: usize,
    end: usize,
    inline: bool,
}

impl Loader {
    /// Starts gathering the batches of `plan` from `options.start` on.
    pub fn new(
        gatherer: Arc<Gatherer>,
        plan: Arc<dyn BatchPlan>,
        options: LoaderOptions,
    ) -> Loader {
        let end = plan.n_batches();
        let start = options.start.min(end);
        let prefetch = options.prefetch.max(1);
        let shared = Arc::new(Shared {
            next_job: AtomicUsize::new(start),
            stop: AtomicBool::new(false),
            start,
            read_ahead: options.read_ahead,
            consumed: Mutex::new(start),
            advanced: Condvar::new(),
        });
        let inline = options.threads == 0;
        let mut threads = Vec::new();
        let mut rx = None;
        if !inline && start < end {
            let (tx, r) = sync_channel(prefetch);
            rx = Some(r);
            for t in 0..options.threads.min(end - start) {
                let (g, p, s, tx) = (gatherer.clone(), plan.clone(), shared.clone(), tx.clone());
                let handle = std::thread::Builder::new()
                    .name(format!("cellarrow-loader-{t}"))
                    .spawn(move || worker(&g, p.as_ref(), &s, prefetch, end, &tx));
                match handle {
                    Ok(h) => threads.push(h),
                    // Fewer threads still make progress; none at all falls back to inline.
                    Err(_) => break,
                }
            }
        }
        let inline = inline || (start < end && threads.is_empty());
        if inline {
            rx = None;
        }
        Loader {
            gatherer,
            plan,
            shared,
            rx,
            threads,
            pending: BTreeMap::new(),
            next: start,
            end,
            inline,
        }
    }

    /// The schema of every batch.
    pub fn schema(&self) -> arrow::datatypes::SchemaRef {
        self.gatherer.schema()
    }

    /// Number of batches of the plan.
    pub fn n_batches(&self) -> usize {
        self.end
    }

    /// The plan position of the next batch to be yielded (the `start` to resume from).
    pub fn position(&self) -> usize {
        self.next
    }

    /// The next batch, gathered on this thread into `region` (see
    /// [`Gatherer::gather_request_in`]); only for loaders made with `threads: 0`, whose
    /// batches are not gathered ahead.
    pub fn next_in(&mut self, region: &mut Region) -> Option<Result<RecordBatch>> {
        if !self.inline {
            return Some(Err(Error::new(
                ErrorKind::InvalidInput,
                "a loader with threads gathers its batches ahead, not into a given region; \
                 make it with threads: 0",
            )));
        }
        self.advance(|gatherer, plan, i| run_batch(gatherer, plan, i, Some(region)))
    }

    /// Yields batch `self.next` as `inline` gathers it (or as the threads delivered it).
    fn advance(
        &mut self,
        inline: impl FnOnce(&Gatherer, &dyn BatchPlan, usize) -> Result<RecordBatch>,
    ) -> Option<Result<RecordBatch>> {
        if self.next >= self.end {
            return None;
        }
        let i = self.next;
        let result = if self.inline {
            read_ahead(
                &self.gatherer,
                self.plan.as_ref(),
                &self.shared,
                i,
                self.end,
            );
            inline(&self.gatherer, self.plan.as_ref(), i)
        } else {
            loop {
                if let Some(r) = self.pending.remove(&i) {
                    break r;
                }
                let rx = self
                    .rx
                    .as_ref()
                    .expect("a threaded loader keeps its receiver until it ends");
                match rx.recv() {
                    Ok((j, r)) => {
                        self.pending.insert(j, r);
                    }
                    Err(_) => {
                        break Err(Error::new(
                            ErrorKind::Io,
                            format!("the loader threads stopped before batch {i}"),
                        ))
                    }
                }
            }
        };
        if result.is_err() {
            self.finish();
            return Some(result);
        }
        self.next += 1;
        if !self.inline {
            *lock(&self.shared.consumed) = self.next;
            self.shared.advanced.notify_all();
        }
        if self.next >= self.end {
            self.shutdown();
        }
        Some(result)
    }

    fn finish(&mut self) {
        self.next = self.end;
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        {
            // Taking the lock orders the stop flag before any waiting worker re-checks it.
            let _guard = lock(&self.shared.consumed);
            self.shared.advanced.notify_all();
        }
        // Workers blocked in `send` see the receiver gone and exit.
        self.rx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.pending.clear();
    }
}

impl Iterator for Loader {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        self.advance(|gatherer, plan, i| run_batch(gatherer, plan, i, None))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.end - self.next;
        (n, Some(n))
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded value is a plain counter, valid even if a holder panicked.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Gathers batch `i`, turning a panic into an error so that the consumer never waits for a
/// batch that will not come.
fn run_batch(
    gatherer: &Gatherer,
    plan: &dyn BatchPlan,
    i: usize,
    region: Option<&mut Region>,
) -> Result<RecordBatch> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| {
        plan.batch(i).and_then(|req| match region {
            Some(r) => gatherer.gather_request_in(&req, r),
            None => gatherer.gather_request(&req),
        })
    })) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".to_string());
            Err(Error::new(
                ErrorKind::InvalidInput,
                format!("batch {i}: {msg}"),
            ))
        }
    }
}

/// Starts the fetches of the batches that gathering batch `i` reads ahead: the first batch of
/// the run starts the whole window, each later one the batch that enters it.
fn read_ahead(gatherer: &Gatherer, plan: &dyn BatchPlan, shared: &Shared, i: usize, end: usize) {
    let window = shared.read_ahead;
    if window == 0 || !gatherer.reads_ahead() {
        return;
    }
    let from = if i == shared.start { i + 1 } else { i + window };
    for j in from..(i + window + 1).min(end) {
        if let Ok(req) = plan.batch(j) {
            gatherer.read_ahead(&req.cells);
        }
    }
}

fn worker(
    gatherer: &Gatherer,
    plan: &dyn BatchPlan,
    shared: &Shared,
    prefetch: usize,
    end: usize,
    tx: &SyncSender<(usize, Result<RecordBatch>)>,
) {
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        let i = shared.next_job.fetch_add(1, Ordering::Relaxed);
        if i >= end {
            return;
        }
        {
            let mut consumed = lock(&shared.consumed);
            while i >= *consumed + prefetch {
                if shared.stop.load(Ordering::SeqCst) {
                    return;
                }
                consumed = shared
                    .advanced
                    .wait(consumed)
                    .unwrap_or_else(|e| e.into_inner());
            }
        }
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        read_ahead(gatherer, plan, shared, i, end);
        let r = run_batch(gatherer, plan, i, None);
        if tx.send((i, r)).is_err() {
            return;
        }
    }
}
