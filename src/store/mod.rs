//! Layer 1b: byte sources below the corpus.
//!
//! A corpus lives in a local directory or under a prefix of an object store (S3 or an
//! S3-compatible server, Google Cloud Storage, Azure Blob Storage, a plain HTTP server).
//! This layer knows nothing of the corpus format; it gives the corpus:
//!
//! - [`Location`]: a corpus URL or path parsed into an [`object_store::ObjectStore`] and a
//!   prefix, with credentials and endpoints from the environment ([`StoreOptions`]);
//! - [`RangeReader`]: byte ranges of one object through concurrent ranged GETs, close ranges
//!   coalesced into one request, each request retried with backoff a bounded number of times
//!   ([`ReadOptions`]); a failure names the URL, the part and the byte range;
//! - [`Cache`]: a node-local, size-bounded, least-recently-used cache of fetched byte ranges
//!   on local disk, keyed by the part's sha256 (so it never serves stale bytes), shared by the
//!   processes of a node;
//! - [`fetch_verified`]: a whole object fetched through both, checked against its sha256
//!   before anyone sees a byte of it.
//!
//! The requests run on one small Tokio runtime of this layer ([`block_on`]), so callers stay
//! synchronous.

use std::future::Future;
use std::path::PathBuf;

mod cache;
mod fetch;
mod location;
mod range;
#[cfg(test)]
mod tests;

pub use cache::{Cache, CacheEvent, CacheKey};
pub use fetch::{fetch_bytes, fetch_verified};
pub use location::{is_url, Location, Scheme, StoreOptions};
pub use range::{coalesce, lasting_error, RangeReader, ReadOptions, ReadStats};

/// The node-local cache directory of fetched byte ranges: `$CELLARROW_CACHE/store`, else
/// `$XDG_CACHE_HOME/cellarrow/store`, else `~/.cache/cellarrow/store` (`None` when none of
/// these is set).
pub fn cache_dir() -> Option<PathBuf> {
    Some(crate::corpus::columns::cache_root()?.join("store"))
}

/// The runtime that drives this layer's requests (two worker threads: the work is waiting on
/// the network, and many requests share them), one per process.
///
/// A forked child (a DataLoader worker) inherits the parent's runtime without its threads: a
/// task given to it would wait forever. So the runtime is remembered with the pid that made it,
/// and a child makes its own; the inherited one is leaked, as dropping it would wait for
/// threads that do not exist in the child.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::Mutex<Option<(u32, &'static tokio::runtime::Runtime)>> =
        std::sync::Mutex::new(None);
    let pid = std::process::id();
    let mut rt = RT.lock().unwrap_or_else(|e| e.into_inner());
    match *rt {
        Some((owner, r)) if owner == pid => r,
        _ => {
            let r: &'static tokio::runtime::Runtime = Box::leak(Box::new(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("cellarrow-store")
                    .enable_all()
                    .build()
                    .expect("starting the object-store runtime (threads and an I/O driver)"),
            ));
            *rt = Some((pid, r));
            r
        }
    }
}

/// Starts `future` on this layer's runtime and returns at once: work whose result nobody waits
/// for, such as fetching ahead what a loader will read.
pub fn spawn<F>(future: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    runtime().spawn(future);
}

/// Runs `future` to completion on this layer's runtime and waits for it, from any thread,
/// including one that is inside another Tokio runtime (where `Runtime::block_on` would panic).
pub fn block_on<F>(future: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    if tokio::runtime::Handle::try_current().is_err() {
        return runtime().block_on(future);
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime().spawn(async move {
        let _ = tx.send(future.await);
    });
    rx.recv()
        .expect("the object-store runtime dropped a task before it finished")
}
