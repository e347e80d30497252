//! Corpora written to object storage.
//!
//! A conversion always runs against local disk (its parts are written in parallel, renamed and
//! hard-linked); writing to `s3://…` or another store is a conversion into a local staging
//! directory followed by [`publish`]: every file but the manifest is uploaded (concurrently,
//! large files in parts), then the manifest. A prefix without a manifest is not a corpus, so
//! a reader never opens a half-uploaded one, and an upload that fails removes what it put.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::stream::{self, StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use serde::Serialize;

use super::job::progress::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use crate::corpus::MANIFEST_FILE;
use crate::error::{Error, ErrorKind, Result};
use crate::store::{block_on, lasting_error, Location};

/// Files at most this large go up in one PUT; larger ones as multipart uploads in parts of
/// this size (S3's parts must be at least 5 MiB).
const PART_BYTES: usize = 16 << 20;
/// Files uploaded at once.
const CONCURRENT_FILES: usize = 8;
/// Parts of one multipart upload in flight at once.
const CONCURRENT_PARTS: usize = 4;
/// Attempts of one PUT before the upload fails (the store's own retries are off).
const ATTEMPTS: u32 = 4;

/// What [`publish`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PublishSummary {
    /// Objects uploaded, the manifest included.
    pub files: usize,
    /// Bytes uploaded.
    pub bytes: u64,
    /// Objects of a replaced corpus (or other objects under the prefix) removed.
    pub removed: usize,
}

/// What lies under a destination prefix before an upload.
#[derive(Debug, Clone)]
pub struct Destination {
    location: Location,
    /// Every object under the prefix.
    existing: Vec<ObjectPath>,
    has_manifest: bool,
}

impl Destination {
    /// Lists `location` and refuses it unless it is empty or `overwrite` is given. The listing
    /// also proves that the bucket exists and the credentials are accepted, before a conversion
    /// spends any time.
    pub fn check(location: &Location, overwrite: bool) -> Result<Destination> {
        let store = location.store().clone();
        let prefix = location.prefix().clone();
        let url = location.url().to_string();
        let existing: Vec<ObjectPath> = block_on(async move {
            store
                .list(Some(&prefix))
                .map_ok(|m| m.location)
                .try_collect()
                .await
        })
        .map_err(|e| store_error(&url, "listing the destination", e))?;
        let manifest = location.child(MANIFEST_FILE);
        let has_manifest = existing.contains(&manifest);
        if !existing.is_empty() && !overwrite {
            let msg = if has_manifest {
                "already holds a corpus; pass --overwrite to replace it".to_string()
            } else {
                format!(
                    "holds {} objects but no corpus ({MANIFEST_FILE}); choose an empty prefix, \
                     or pass --overwrite to replace them",
                    existing.len()
                )
            };
            return Err(Error::url(ErrorKind::DestinationExists, &url, msg));
        }
        Ok(Destination {
            location: location.clone(),
            existing,
            has_manifest,
        })
    }

    /// The destination's location.
    pub fn location(&self) -> &Location {
        &self.location
    }
}

/// Uploads the corpus in the local directory `local` to `dest`: first the manifest of a corpus
/// being replaced is removed (so that it stops being a corpus), then every file but the
/// manifest goes up, then the manifest, then objects under the prefix that are not part of the
/// new corpus are removed. On failure, the objects this upload put are removed again (as far
/// as the store lets), so no partial corpus is left; a replaced corpus is lost at that point.
pub fn publish(local: &Path, dest: &Destination, progress: bool) -> Result<PublishSummary> {
    let files = files_under(local)?;
    let (manifest, rest): (Vec<_>, Vec<_>) = files.into_iter().partition(|f| f == MANIFEST_FILE);
    if manifest.is_empty() {
        return Err(Error::corpus(local, "no manifest.json: not a corpus"));
    }
    let location = dest.location.clone();
    let url = location.url().to_string();
    let store = location.store().clone();
    if dest.has_manifest {
        let path = location.child(MANIFEST_FILE);
        let s = store.clone();
        block_on(async move { s.delete(&path).await }).map_err(|e| {
            store_error(
                &location.url_of(MANIFEST_FILE),
                "removing the manifest of the corpus it replaces",
                e,
            )
        })?;
    }

    let total: u64 = rest
        .iter()
        .chain(&manifest)
        .map(|f| {
            std::fs::metadata(local.join(f))
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .sum();
    let multi = MultiProgress::with_draw_target(if progress {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let bar = multi.add(ProgressBar::new(total));
    bar.set_style(
        ProgressStyle::with_template("{prefix:>24} [{bar:30}] {bytes}/{total_bytes} {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_prefix("uploading");

    let uploaded = std::sync::Arc::new(std::sync::Mutex::new(Vec::<ObjectPath>::new()));
    let result = (|| -> Result<u64> {
        let mut bytes = upload_all(local, &location, &rest, &bar, &uploaded)?;
        super::kill::kill_point(super::kill::UPLOAD_STAGE);
        bytes += upload_all(local, &location, &manifest, &bar, &uploaded)?;
        Ok(bytes)
    })();
    bar.finish_and_clear();
    let bytes = match result {
        Ok(b) => b,
        Err(e) => {
            let put = std::mem::take(&mut *uploaded.lock().unwrap_or_else(|p| p.into_inner()));
            let _ = remove(&store, put);
            return Err(e);
        }
    };

    let keep: std::collections::HashSet<ObjectPath> = rest
        .iter()
        .chain(&manifest)
        .map(|f| location.child(f))
        .collect();
    let stale: Vec<ObjectPath> = dest
        .existing
        .iter()
        .filter(|p| !keep.contains(*p))
        .cloned()
        .collect();
    let removed = stale.len();
    remove(&store, stale)
        .map_err(|e| store_error(&url, "removing the objects of the replaced corpus", e))?;
    Ok(PublishSummary {
        files: rest.len() + manifest.len(),
        bytes,
        removed,
    })
}

/// Every file under `root`, as `/`-separated relative paths, sorted.
fn files_under(root: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut dirs = vec![PathBuf::new()];
    while let Some(rel) = dirs.pop() {
        let dir = root.join(&rel);
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| Error::io(&dir, "listing the corpus to upload", e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&dir, "listing the corpus to upload", e))?;
            let path = rel.join(entry.file_name());
            let kind = entry
                .file_type()
                .map_err(|e| Error::io(entry.path(), "listing the corpus to upload", e))?;
            if kind.is_dir() {
                dirs.push(path);
            } else {
                let s = path.to_str().ok_or_else(|| {
                    Error::corpus(root, format!("{} is not a UTF-8 name", path.display()))
                })?;
                out.push(s.replace(std::path::MAIN_SEPARATOR, "/"));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Uploads `files` (relative to `local`) concurrently; returns the bytes sent.
fn upload_all(
    local: &Path,
    location: &Location,
    files: &[String],
    bar: &ProgressBar,
    uploaded: &std::sync::Arc<std::sync::Mutex<Vec<ObjectPath>>>,
) -> Result<u64> {
    let jobs: Vec<(PathBuf, ObjectPath, String)> = files
        .iter()
        .map(|f| (local.join(f), location.child(f), location.url_of(f)))
        .collect();
    let store = location.store().clone();
    let bar = bar.clone();
    let uploaded = uploaded.clone();
    block_on(async move {
        stream::iter(jobs)
            .map(|(file, path, url)| {
                let store = store.clone();
                let bar = bar.clone();
                let uploaded = uploaded.clone();
                async move {
                    let n = upload_one(&store, &file, &path, &url, &bar).await?;
                    uploaded
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(path);
                    Ok::<u64, Error>(n)
                }
            })
            .buffer_unordered(CONCURRENT_FILES)
            .try_fold(0u64, |acc, n| async move { Ok(acc + n) })
            .await
    })
}

async fn upload_one(
    store: &std::sync::Arc<dyn ObjectStore>,
    file: &Path,
    path: &ObjectPath,
    url: &str,
    bar: &ProgressBar,
) -> Result<u64> {
    let len = tokio::fs::metadata(file)
        .await
        .map_err(|e| Error::io(file, "reading a file to upload", e))?
        .len();
    if len as usize <= PART_BYTES {
        let bytes = tokio::fs::read(file)
            .await
            .map_err(|e| Error::io(file, "reading a file to upload", e))?;
        let payload = PutPayload::from(bytes);
        let mut wait = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            match store.put(path, payload.clone()).await {
                Ok(_) => break,
                Err(e) if attempt < ATTEMPTS && lasting_error(&e).is_none() => {
                    attempt += 1;
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                Err(e) => return Err(store_error(url, "uploading", e)),
            }
        }
        bar.inc(len);
        return Ok(len);
    }
    let upload = store
        .put_multipart(path)
        .await
        .map_err(|e| store_error(url, "starting a multipart upload", e))?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
    match write_parts(&mut writer, file, url, bar).await {
        Ok(()) => {
            writer
                .finish()
                .await
                .map_err(|e| store_error(url, "finishing a multipart upload", e))?;
        }
        Err(e) => {
            // Parts of an upload that is never completed would stay stored (and billed).
            let _ = writer.abort().await;
            return Err(e);
        }
    }
    Ok(len)
}

async fn write_parts(
    writer: &mut WriteMultipart,
    file: &Path,
    url: &str,
    bar: &ProgressBar,
) -> Result<()> {
    use tokio::io::AsyncReadExt;
    let mut f = tokio::fs::File::open(file)
        .await
        .map_err(|e| Error::io(file, "reading a file to upload", e))?;
    let mut buf = vec![0u8; PART_BYTES];
    loop {
        let n = f
            .read(&mut buf)
            .await
            .map_err(|e| Error::io(file, "reading a file to upload", e))?;
        if n == 0 {
            return Ok(());
        }
        writer
            .wait_for_capacity(CONCURRENT_PARTS)
            .await
            .map_err(|e| store_error(url, "uploading a part", e))?;
        writer.write(&buf[..n]);
        bar.inc(n as u64);
    }
}

fn remove(
    store: &std::sync::Arc<dyn ObjectStore>,
    paths: Vec<ObjectPath>,
) -> object_store::Result<()> {
    if paths.is_empty() {
        return Ok(());
    }
    let store = store.clone();
    block_on(async move {
        store
            .delete_stream(stream::iter(paths.into_iter().map(Ok)).boxed())
            .try_collect::<Vec<_>>()
            .await
            .map(|_| ())
    })
}

fn store_error(url: &str, doing: &str, e: object_store::Error) -> Error {
    let (kind, msg) = lasting_error(&e).unwrap_or_else(|| (ErrorKind::Remote, e.to_string()));
    Error::url(kind, url, format!("{doing}: {msg}"))
}

/// Converts `inputs` into a corpus at `url` (any scheme of [`Location`]; a local path or
/// `file://` converts in place as [`super::convert`] does). The destination is checked first
/// ([`Destination::check`]), the corpus is converted in a staging directory under the system's
/// temporary directory (`TMPDIR`), which needs room for the whole corpus, then [`publish`]ed.
///
/// ```no_run
/// use cellarrow::convert::{publish::convert_to, resolve_inputs, ConvertOptions};
/// let inputs = resolve_inputs(&["a.h5ad".into()])?;
/// let summary = convert_to(&inputs, &ConvertOptions::new("unused"), "s3://bucket/corpora/a")?;
/// println!("{} cells uploaded", summary.n_cells);
/// # Ok::<(), cellarrow::Error>(())
/// ```
pub fn convert_to(
    inputs: &[super::InputSample],
    opts: &super::ConvertOptions,
    url: &str,
) -> Result<super::ConvertSummary> {
    let location = Location::parse(url)?;
    let mut local = opts.clone();
    if let Some(root) = location.local_root() {
        local.output = root.to_path_buf();
        return super::convert(inputs, &local);
    }
    let dest = Destination::check(&location, opts.overwrite)?;
    sweep_staging(&std::env::temp_dir());
    let staging = tempfile::Builder::new()
        .prefix(&format!("{STAGING_PREFIX}{}-", std::process::id()))
        .tempdir()
        .map_err(|e| Error::io(std::env::temp_dir(), "creating a staging directory", e))?;
    local.output = staging.path().join("corpus");
    local.overwrite = false;
    local.destination = Some(location.url().to_string());
    let mut summary = super::convert(inputs, &local)?;
    publish(&local.output, &dest, opts.progress)?;
    summary.output = PathBuf::from(location.url());
    Ok(summary)
}

/// Staging directories are `cellarrow-upload-PID-XXXXXX` under the temporary directory.
const STAGING_PREFIX: &str = "cellarrow-upload-";

/// Removes the staging directories of uploads whose process is gone (killed before it could
/// clean up); those of live processes are theirs.
fn sweep_staging(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(STAGING_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !super::output::pid_alive(pid) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
