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
        let existing = list_prefix(location, "listing the destination")?;
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
            return Err(Error::url(
                ErrorKind::DestinationExists,
                location.url(),
                msg,
            ));
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

    let (_multi, bar) = upload_bar(local, rest.iter().chain(&manifest), progress);
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

/// A progress bar of the bytes of `files` (relative to `local`) going up, drawn if `progress`;
/// the group it is drawn in must live as long as it.
fn upload_bar<'a>(
    local: &Path,
    files: impl Iterator<Item = &'a String>,
    progress: bool,
) -> (MultiProgress, ProgressBar) {
    let total: u64 = files
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
    (multi, bar)
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

/// Every object under the location's prefix; an error names the URL and what was `doing`.
fn list_prefix(location: &Location, doing: &str) -> Result<Vec<ObjectPath>> {
    let store = location.store().clone();
    let prefix = location.prefix().clone();
    block_on(async move {
        store
            .list(Some(&prefix))
            .map_ok(|m| m.location)
            .try_collect()
            .await
    })
    .map_err(|e| store_error(location.url(), doing, e))
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

/// Appends `inputs` to the corpus at `url`, as [`super::append`] does on local disk (a local
/// path or `file://` appends in place). The manifest and the table files are downloaded into
/// a staging directory under `TMPDIR` (the matrix parts stay where they are), the new samples
/// are appended there, then the new files are uploaded and the manifest last, replacing the
/// old one only if nobody changed it meanwhile. Table files the new manifest no longer lists
/// (rewritten ones) are removed after it; nothing else of the old corpus is touched.
///
/// A lock object `.NAME.cellarrow-lock` beside the prefix keeps a second writer out while the
/// append runs. A store cannot tell whether the process that holds a lock still runs: the lock
/// of a killed append stays, and `break_lock` takes it over (and removes the objects that
/// append left, which the manifest does not list).
///
/// ```no_run
/// use cellarrow::convert::{publish::append_to, resolve_inputs, ConvertOptions};
/// let inputs = resolve_inputs(&["c.h5ad".into()])?;
/// let summary = append_to(&inputs, &ConvertOptions::new("unused"), "s3://bucket/corpora/a", false)?;
/// println!("{} cells now", summary.n_cells);
/// # Ok::<(), cellarrow::Error>(())
/// ```
pub fn append_to(
    inputs: &[super::InputSample],
    opts: &super::ConvertOptions,
    url: &str,
    break_lock: bool,
) -> Result<super::ConvertSummary> {
    let location = Location::parse(url)?;
    let mut local = opts.clone();
    if let Some(root) = location.local_root() {
        return super::append(root, inputs, &local);
    }
    let _lock = RemoteLock::acquire(&location, break_lock)?;
    let (text, etag) = read_manifest(&location)?;
    if etag.is_none() {
        return Err(Error::url(
            ErrorKind::Unsupported,
            location.url_of(MANIFEST_FILE),
            "the store gives no ETag for the manifest, and append needs one to replace it only \
             if nobody changed it meanwhile",
        ));
    }
    let old = crate::corpus::Manifest::from_json_bytes(&text)
        .map_err(|e| e.with_path(location.url_of(MANIFEST_FILE)))?;
    if !old.tables.contains_key(super::gene_stats::TABLE) {
        return Err(Error::url(
            ErrorKind::Unsupported,
            location.url(),
            "the corpus has no gene_stats table (it predates it), and computing one reads \
             every part: append to a local copy of it once",
        ));
    }
    if break_lock {
        remove_unlisted(&location, &old)?;
    }
    sweep_staging(&std::env::temp_dir());
    let staging = tempfile::Builder::new()
        .prefix(&format!("{STAGING_PREFIX}{}-", std::process::id()))
        .tempdir()
        .map_err(|e| Error::io(std::env::temp_dir(), "creating a staging directory", e))?;
    let mirror = staging.path().join("corpus");
    crate::corpus::remote::download_tables(&location, &old, &text, &mirror)?;
    local.output = mirror.clone();
    local.destination = Some(location.url().to_string());
    let mut summary =
        super::append::grow(&mirror, inputs, &local, super::append::OldParts::Elsewhere)?;

    let new = crate::corpus::Manifest::read(&mirror)?;
    let kept: std::collections::HashSet<(&str, &str)> = old
        .files
        .iter()
        .map(|f| (f.path.as_str(), f.sha256.as_str()))
        .collect();
    let added: Vec<String> = new
        .files
        .iter()
        .filter(|f| !kept.contains(&(f.path.as_str(), f.sha256.as_str())))
        .map(|f| f.path.clone())
        .collect();
    let listed: std::collections::HashSet<&str> =
        new.files.iter().map(|f| f.path.as_str()).collect();
    let dropped: Vec<ObjectPath> = old
        .files
        .iter()
        .filter(|f| !listed.contains(f.path.as_str()))
        .map(|f| location.child(&f.path))
        .collect();

    let (_multi, bar) = upload_bar(&mirror, added.iter(), opts.progress);
    let uploaded = std::sync::Arc::new(std::sync::Mutex::new(Vec::<ObjectPath>::new()));
    let result = (|| -> Result<()> {
        upload_all(&mirror, &location, &added, &bar, &uploaded)?;
        super::kill::kill_point(super::kill::UPLOAD_STAGE);
        replace_manifest(&location, &mirror, etag)
    })();
    bar.finish_and_clear();
    if let Err(e) = result {
        let put = std::mem::take(&mut *uploaded.lock().unwrap_or_else(|p| p.into_inner()));
        let _ = remove(location.store(), put);
        return Err(e);
    }
    if let Err(e) = remove(location.store(), dropped) {
        summary.warnings.push(format!(
            "{}: files the grown corpus no longer lists could not be removed: {e}",
            location.url()
        ));
    }
    summary.output = PathBuf::from(location.url());
    Ok(summary)
}

/// The manifest's bytes and the ETag they were read at.
fn read_manifest(location: &Location) -> Result<(Vec<u8>, Option<String>)> {
    let reader = crate::store::RangeReader::new(location, MANIFEST_FILE);
    let (size, etag) = reader.head_blocking().map_err(|e| match e.kind() {
        ErrorKind::NotFound => Error::url(
            ErrorKind::InvalidCorpus,
            location.url_of(MANIFEST_FILE),
            "no manifest.json: not a cellarrow corpus (or the bucket does not exist)",
        )
        .with_source(e),
        _ => e,
    })?;
    let reader = reader.with_etag(etag.clone());
    let body = reader.read_blocking(std::slice::from_ref(&(0..size)))?;
    Ok((body[0].as_slice().to_vec(), etag))
}

/// Puts the grown corpus's manifest in place of the one read at `etag`, unless the object
/// changed since (another writer): then nothing is replaced and the error says so.
fn replace_manifest(location: &Location, mirror: &Path, etag: Option<String>) -> Result<()> {
    let url = location.url_of(MANIFEST_FILE);
    let local = mirror.join(MANIFEST_FILE);
    let bytes = std::fs::read(&local).map_err(|e| Error::io(&local, "reading", e))?;
    let mode = object_store::PutMode::Update(object_store::UpdateVersion {
        e_tag: etag,
        version: None,
    });
    let store = location.store().clone();
    let path = location.child(MANIFEST_FILE);
    block_on(async move {
        store
            .put_opts(&path, PutPayload::from(bytes), mode.into())
            .await
    })
    .map(|_| ())
    .map_err(|e| match e {
        object_store::Error::Precondition { .. } => Error::url(
            ErrorKind::DestinationExists,
            &url,
            "the corpus changed while this append ran (another writer?); this append was \
             undone, run it again",
        ),
        e => store_error(&url, "replacing the manifest", e),
    })
}

/// Removes the objects under the prefix that `manifest` does not list (left by a killed
/// append), and only those.
fn remove_unlisted(location: &Location, manifest: &crate::corpus::Manifest) -> Result<()> {
    let all = list_prefix(location, "listing the corpus")?;
    let listed: std::collections::HashSet<ObjectPath> = manifest
        .files
        .iter()
        .map(|f| location.child(&f.path))
        .chain([location.child(MANIFEST_FILE)])
        .collect();
    let strays: Vec<ObjectPath> = all.into_iter().filter(|p| !listed.contains(p)).collect();
    remove(location.store(), strays)
        .map_err(|e| store_error(location.url(), "removing objects a killed append left", e))
}

/// The lock object of a corpus in object storage, beside its prefix (as the local lock file is
/// beside the directory), created only if absent; removed on drop.
struct RemoteLock {
    store: std::sync::Arc<dyn ObjectStore>,
    path: ObjectPath,
}

impl RemoteLock {
    fn acquire(location: &Location, break_lock: bool) -> Result<RemoteLock> {
        let mut parts: Vec<object_store::path::PathPart<'static>> = location
            .prefix()
            .parts()
            .map(|p| p.as_ref().to_string().into())
            .collect();
        let name = parts.pop().ok_or_else(|| {
            Error::url(
                ErrorKind::InvalidUrl,
                location.url(),
                "the corpus URL needs a prefix below the bucket to append to it",
            )
        })?;
        parts.push(format!(".{}.cellarrow-lock", name.as_ref()).into());
        let path = ObjectPath::from_iter(parts);
        let url = format!(
            "{}/{}",
            location
                .url()
                .rsplit_once('/')
                .map_or(location.url(), |(a, _)| a),
            path.filename().unwrap_or_default()
        );
        let store = location.store().clone();
        if break_lock {
            let (s, p) = (store.clone(), path.clone());
            match block_on(async move { s.delete(&p).await }) {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store_error(&url, "removing the lock", e)),
            }
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let owner = format!("host {host} pid {} since {since}\n", std::process::id());
        let (s, p) = (store.clone(), path.clone());
        let put = block_on(async move {
            s.put_opts(
                &p,
                PutPayload::from(owner.into_bytes()),
                object_store::PutMode::Create.into(),
            )
            .await
        });
        match put {
            Ok(_) => Ok(RemoteLock { store, path }),
            Err(object_store::Error::AlreadyExists { .. }) => {
                let (s, p) = (store.clone(), path.clone());
                let holder = block_on(async move { s.get(&p).await?.bytes().await })
                    .map(|b| String::from_utf8_lossy(&b).trim().to_string())
                    .unwrap_or_default();
                Err(Error::url(
                    ErrorKind::DestinationExists,
                    &url,
                    format!(
                        "the corpus is locked ({holder}): another append is running, or one \
                         was killed; if none is running, pass --break-lock"
                    ),
                ))
            }
            Err(e) => Err(store_error(&url, "taking the lock", e)),
        }
    }
}

impl Drop for RemoteLock {
    fn drop(&mut self) {
        let (s, p) = (self.store.clone(), self.path.clone());
        // A lock left behind is reported to the next writer, which can break it.
        let _ = block_on(async move { s.delete(&p).await });
    }
}
