//! Byte ranges of one object through concurrent, coalesced, retried ranged GETs.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arrow::buffer::{Buffer, MutableBuffer};
use futures::stream::{self, StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, ObjectStore};

use super::Location;
use crate::error::{Error, ErrorKind, Result};

/// Settings of a [`RangeReader`].
#[derive(Debug, Clone, PartialEq)]
pub struct ReadOptions {
    /// Requests in flight at once for one read.
    pub concurrency: usize,
    /// Two ranges this close (in bytes) or closer are fetched by one request; the bytes between
    /// them are read and dropped. 0 merges only touching or overlapping ranges.
    pub coalesce_gap: u64,
    /// The largest request: a longer span is split into requests of this size, fetched
    /// concurrently.
    pub max_request: u64,
    /// Retries of one request after a timeout, a server error, a dropped connection or a short
    /// body (so at most `retries + 1` attempts).
    pub retries: u32,
    /// Wait before the first retry; doubled at each further retry, up to `max_backoff`.
    pub backoff: Duration,
    /// The longest wait between two attempts.
    pub max_backoff: Duration,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            concurrency: 32,
            coalesce_gap: 256 << 10,
            max_request: 8 << 20,
            retries: 5,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// What a [`RangeReader`] has done so far (counts over all its reads).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Ranged GETs that returned their whole body.
    pub requests: u64,
    /// Attempts that failed and were retried.
    pub retries: u64,
    /// Bytes received in whole bodies (including coalesced gaps).
    pub bytes: u64,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    retries: AtomicU64,
    bytes: AtomicU64,
}

/// Reads byte ranges of one object (one part of a corpus): the ranges are sorted, ranges at
/// most [`ReadOptions::coalesce_gap`] apart are merged, long spans are split at
/// [`ReadOptions::max_request`], and the requests run [`ReadOptions::concurrency`] at a time.
/// A request that fails with a timeout, a server error, a dropped connection or a short body
/// is retried with exponential backoff; after [`ReadOptions::retries`] retries the read fails
/// with an [`ErrorKind::Remote`] error naming the URL, the part and the byte range. An object
/// or bucket that does not exist ([`ErrorKind::NotFound`]) or refused credentials
/// ([`ErrorKind::Credentials`]) fail at once.
///
/// Cheap to clone (the store and counters are shared).
///
/// ```no_run
/// use cellarrow::store::{Location, RangeReader};
/// let loc = Location::parse("s3://bucket/corpus")?;
/// let reader = RangeReader::new(&loc, "matrix/part-00000.arrow");
/// let parts = reader.read_blocking(&[0..8, 4096..8192])?;
/// assert_eq!(parts[1].len(), 4096);
/// # Ok::<(), cellarrow::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct RangeReader {
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    url: Arc<str>,
    part: Arc<str>,
    options: ReadOptions,
    /// When set, every GET carries `If-Match` so that an object replaced on the server fails
    /// instead of mixing old and new bytes.
    etag: Option<Arc<str>>,
    counters: Arc<Counters>,
}

/// The requests that fetch `ranges`: sorted, merged when at most `gap` bytes apart, split
/// at `max_request` bytes. Empty ranges need no request.
///
/// ```
/// use cellarrow::store::coalesce;
/// assert_eq!(coalesce(&[10..20, 0..5, 22..30], 2, 1 << 20), vec![0..5, 10..30]);
/// assert_eq!(coalesce(&[0..10], 0, 4), vec![0..4, 4..8, 8..10]);
/// ```
pub fn coalesce(ranges: &[Range<u64>], gap: u64, max_request: u64) -> Vec<Range<u64>> {
    let mut sorted: Vec<Range<u64>> = ranges.iter().filter(|r| r.start < r.end).cloned().collect();
    sorted.sort_by_key(|r| (r.start, r.end));
    let mut merged: Vec<Range<u64>> = Vec::new();
    for r in sorted {
        match merged.last_mut() {
            Some(last) if r.start <= last.end.saturating_add(gap) => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    let max = max_request.max(1);
    let mut out = Vec::with_capacity(merged.len());
    for r in merged {
        let mut s = r.start;
        while s < r.end {
            let e = r.end.min(s.saturating_add(max));
            out.push(s..e);
            s = e;
        }
    }
    out
}

fn range_text(r: &Range<u64>) -> String {
    format!("bytes {}..{}", r.start, r.end)
}

impl RangeReader {
    /// A reader of `rel` (a `/`-separated path inside the corpus) at `location`, with default
    /// [`ReadOptions`]; errors name `rel` as the part.
    pub fn new(location: &Location, rel: &str) -> RangeReader {
        RangeReader::for_object(
            location.store().clone(),
            location.child(rel),
            location.url_of(rel),
        )
        .with_part(rel)
    }

    /// A reader of any object of any store; `url` is only for messages.
    pub fn for_object(
        store: Arc<dyn ObjectStore>,
        path: ObjectPath,
        url: impl Into<String>,
    ) -> RangeReader {
        let url: String = url.into();
        RangeReader {
            store,
            part: Arc::from(path.as_ref()),
            path,
            url: Arc::from(url.as_str()),
            options: ReadOptions::default(),
            etag: None,
            counters: Arc::default(),
        }
    }

    /// Names the part in errors (for example `matrix/part-00003.arrow`).
    pub fn with_part(mut self, part: impl AsRef<str>) -> RangeReader {
        self.part = Arc::from(part.as_ref());
        self
    }

    /// Replaces the settings.
    pub fn with_options(mut self, options: ReadOptions) -> RangeReader {
        self.options = options;
        self
    }

    /// Requires every response to come from the object version with this ETag.
    pub fn with_etag(mut self, etag: Option<String>) -> RangeReader {
        self.etag = etag.map(|e| Arc::from(e.as_str()));
        self
    }

    /// The settings.
    pub fn options(&self) -> &ReadOptions {
        &self.options
    }
    /// The object's URL.
    pub fn url(&self) -> &str {
        &self.url
    }
    /// The part named in errors.
    pub fn part(&self) -> &str {
        &self.part
    }

    /// Counts of requests, retries and bytes so far.
    pub fn stats(&self) -> ReadStats {
        ReadStats {
            requests: self.counters.requests.load(Ordering::Relaxed),
            retries: self.counters.retries.load(Ordering::Relaxed),
            bytes: self.counters.bytes.load(Ordering::Relaxed),
        }
    }

    /// An error about `range` of this part.
    pub fn error(&self, kind: ErrorKind, range: &Range<u64>, msg: impl AsRef<str>) -> Error {
        Error::url(
            kind,
            &*self.url,
            format!(
                "part {}, {}: {}",
                self.part,
                range_text(range),
                msg.as_ref()
            ),
        )
    }

    /// The object's size and ETag (one HEAD request, retried like a GET).
    pub async fn head(&self) -> Result<(u64, Option<String>)> {
        let whole = 0..0;
        let meta = self
            .with_retries(&whole, || async {
                let opts = GetOptions::new().with_head(true);
                let r = self.store.get_opts(&self.path, opts).await?;
                Ok(r.meta)
            })
            .await?;
        Ok((meta.size, meta.e_tag))
    }

    /// [`Self::head`], waiting for it.
    pub fn head_blocking(&self) -> Result<(u64, Option<String>)> {
        let this = self.clone();
        super::block_on(async move { this.head().await })
    }

    /// The bytes of each of `ranges`, in the order given (overlaps and repeats allowed). A
    /// range inside one request is a zero-copy slice of that request's body.
    pub async fn read(&self, ranges: &[Range<u64>]) -> Result<Vec<Buffer>> {
        let o = &self.options;
        let requests = coalesce(ranges, o.coalesce_gap, o.max_request);
        let mut bodies: Vec<(Range<u64>, Buffer)> = stream::iter(requests)
            .map(|r| async move {
                let body = self.fetch(&r).await?;
                Ok::<_, Error>((r, body))
            })
            .buffer_unordered(o.concurrency.max(1))
            .try_collect()
            .await?;
        bodies.sort_by_key(|(r, _)| r.start);
        Ok(ranges.iter().map(|r| assemble(&bodies, r)).collect())
    }

    /// [`Self::read`], waiting for it (from any thread).
    pub fn read_blocking(&self, ranges: &[Range<u64>]) -> Result<Vec<Buffer>> {
        let this = self.clone();
        let ranges = ranges.to_vec();
        super::block_on(async move { this.read(&ranges).await })
    }

    /// Fetches `0..size` in concurrent requests of at most [`ReadOptions::max_request`] bytes
    /// and hands each body to `sink` with its offset, in completion order (not file order).
    pub async fn read_all_with(
        &self,
        size: u64,
        mut sink: impl FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let o = &self.options;
        let requests = coalesce(std::slice::from_ref(&(0..size)), 0, o.max_request);
        let mut bodies = stream::iter(requests)
            .map(|r| async move {
                let body = self.fetch(&r).await?;
                Ok::<_, Error>((r, body))
            })
            .buffer_unordered(o.concurrency.max(1));
        while let Some(item) = bodies.next().await {
            let (r, body) = item?;
            sink(r.start, body.as_slice())?;
        }
        Ok(())
    }

    /// One ranged GET with its retries; the body has exactly the range's length.
    async fn fetch(&self, range: &Range<u64>) -> Result<Buffer> {
        self.with_retries(range, || async {
            let opts = GetOptions::new()
                .with_range(Some(range.clone()))
                .with_if_match(self.etag.as_deref());
            let body = self.store.get_opts(&self.path, opts).await?.bytes().await?;
            if body.len() as u64 != range.end - range.start {
                return Err(Attempt::Short(body.len() as u64));
            }
            self.counters.requests.fetch_add(1, Ordering::Relaxed);
            self.counters
                .bytes
                .fetch_add(body.len() as u64, Ordering::Relaxed);
            Ok(Buffer::from(body))
        })
        .await
    }

    async fn with_retries<T, F, Fut>(&self, range: &Range<u64>, attempt: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, Attempt>>,
    {
        let o = &self.options;
        let mut wait = o.backoff;
        let mut tries = 0u32;
        loop {
            let failure = match attempt().await {
                Ok(v) => return Ok(v),
                Err(f) => f,
            };
            if let Some(e) = self.final_error(&failure, range) {
                return Err(e);
            }
            if tries >= o.retries {
                let msg = format!(
                    "{} (after {} attempt{})",
                    failure.describe(range),
                    tries + 1,
                    if tries == 0 { "" } else { "s" }
                );
                let mut err = self.error(ErrorKind::Remote, range, msg);
                if let Attempt::Store(e) = failure {
                    err = err.with_source(e);
                }
                return Err(err);
            }
            tries += 1;
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(o.max_backoff);
        }
    }

    /// The error to fail with at once (no retry) for failures that a retry cannot mend.
    fn final_error(&self, failure: &Attempt, range: &Range<u64>) -> Option<Error> {
        let Attempt::Store(e) = failure else {
            return None;
        };
        let (kind, msg) = lasting_error(e)?;
        Some(self.error(kind, range, msg))
    }
}

/// The kind and message of a store error that a retry cannot mend (a missing object or
/// bucket, refused credentials, an object changed since it was opened, a request the store
/// cannot serve); `None` for one worth retrying (a timeout, a 5xx, a dropped connection).
pub fn lasting_error(e: &object_store::Error) -> Option<(ErrorKind, String)> {
    use object_store::Error as E;
    Some(match e {
        E::NotFound { .. } => (
            ErrorKind::NotFound,
            "not found (the object or its bucket does not exist)".to_string(),
        ),
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => {
            (ErrorKind::Credentials, format!("access refused: {e}"))
        }
        E::Precondition { .. } => (
            ErrorKind::Remote,
            "the object changed on the server since it was opened".to_string(),
        ),
        E::InvalidPath { .. }
        | E::NotSupported { .. }
        | E::NotImplemented { .. }
        | E::UnknownConfigurationKey { .. } => (ErrorKind::Remote, e.to_string()),
        _ => return None,
    })
}

/// Why one attempt failed.
enum Attempt {
    Store(object_store::Error),
    /// The body was shorter (or longer) than the range: this many bytes.
    Short(u64),
}

impl From<object_store::Error> for Attempt {
    fn from(e: object_store::Error) -> Self {
        Attempt::Store(e)
    }
}

impl Attempt {
    fn describe(&self, range: &Range<u64>) -> String {
        match self {
            Attempt::Store(e) => e.to_string(),
            Attempt::Short(n) => format!(
                "the server returned {n} bytes, expected {}",
                range.end - range.start
            ),
        }
    }
}

/// The bytes of `want` out of the fetched bodies (sorted by start, together covering it):
/// a slice of one body, or a copy when it spans several.
fn assemble(bodies: &[(Range<u64>, Buffer)], want: &Range<u64>) -> Buffer {
    if want.start >= want.end {
        return Buffer::from(MutableBuffer::new(0));
    }
    let first = bodies.partition_point(|(r, _)| r.end <= want.start);
    let (r, b) = &bodies[first];
    if want.end <= r.end {
        let off = (want.start - r.start) as usize;
        return b.slice_with_length(off, (want.end - want.start) as usize);
    }
    let mut out = MutableBuffer::with_capacity((want.end - want.start) as usize);
    let mut at = want.start;
    for (r, b) in &bodies[first..] {
        if at >= want.end {
            break;
        }
        debug_assert!(r.start <= at && at < r.end, "requests cover every range");
        let end = want.end.min(r.end);
        out.extend_from_slice(&b.as_slice()[(at - r.start) as usize..(end - r.start) as usize]);
        at = end;
    }
    out.into()
}
