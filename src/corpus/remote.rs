//! Opening a corpus from object storage (`s3://`, `gs://`, `az://`, `http(s)://`).
//!
//! The manifest and every file of every table (small next to the matrix) are fetched once into
//! a snapshot directory, named by the URL and the manifest's own checksum, that every reader of
//! the node shares; the tables are read from there as on local disk, whatever the format (the
//! Parquet datasets of format 2, the single `NAME.parquet` files of format 1). The matrix
//! parts go through the store's ranged reads and node-local cache, are checked against their
//! sha256 before use, and are mapped from the cache entry: past the fetch, the reader is the
//! local zero-copy one.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use memmap2::Mmap;
use sha2::{Digest, Sha256};

use super::checksum::to_hex;
use super::reader::{decode_part, Matrix};
use super::{Corpus, Manifest, MANIFEST_FILE};
use crate::error::{Error, ErrorKind, Result};
use crate::store::{fetch_bytes, fetch_verified, Cache, Location, RangeReader, StoreOptions};

/// Default bound of the node-local cache: `CELLARROW_STORE_CACHE_BYTES`, else 16 GiB.
fn default_cache_bytes() -> u64 {
    std::env::var("CELLARROW_STORE_CACHE_BYTES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(16 << 30)
}

impl Corpus {
    /// Opens the corpus at `url` (a URL of any scheme of [`Location`], or a local path) with
    /// configuration from the environment and the node-local cache in
    /// [`crate::store::cache_dir`] (bounded by `CELLARROW_STORE_CACHE_BYTES`, 16 GiB unless
    /// set). [`Corpus::open`] calls this for a URL.
    pub fn open_url(url: &str) -> Result<Corpus> {
        let cache = match crate::store::cache_dir() {
            Some(dir) => Some(Cache::open(dir, default_cache_bytes())?),
            None => None,
        };
        Self::open_url_with(url, &StoreOptions::default(), cache.as_ref())
    }

    /// Opens the corpus at `url` with these store options and cache (`None`: parts are
    /// fetched into anonymous temporary files, and the snapshot of the tables goes to the
    /// system's temporary directory).
    ///
    /// Each matrix part is fetched whole (concurrent ranged GETs), checked against the sha256
    /// in the manifest, and mapped; errors name the URL of what failed.
    pub fn open_url_with(
        url: &str,
        options: &StoreOptions,
        cache: Option<&Cache>,
    ) -> Result<Corpus> {
        let loc = Location::parse_with(url, options)?;
        if let Some(root) = loc.local_root() {
            return Corpus::open(root);
        }
        let manifest_url = loc.url_of(MANIFEST_FILE);
        let text = fetch_bytes(&loc, MANIFEST_FILE).map_err(|e| match e.kind() {
            ErrorKind::NotFound => Error::url(
                ErrorKind::InvalidCorpus,
                &manifest_url,
                "no manifest.json: not a cellarrow corpus (or the bucket does not exist)",
            )
            .with_source(e),
            _ => e,
        })?;
        let manifest = Manifest::from_json_bytes(&text).map_err(|e| e.with_path(&manifest_url))?;
        let root = snapshot(&loc, &manifest, &text, cache)?;
        let matrix = remote_matrix(&loc, &manifest, cache)?;
        Ok(Corpus {
            root,
            manifest,
            matrix,
        })
    }
}

/// The local directory with the manifest and every listed file that is not a matrix part (so
/// every table file: `Manifest::check` refuses a table file missing from `files`), each
/// checked against its sha256; made once per (URL, manifest) and published by a rename.
fn snapshot(
    loc: &Location,
    manifest: &Manifest,
    text: &[u8],
    cache: Option<&Cache>,
) -> Result<PathBuf> {
    let base = match cache {
        Some(c) => c.dir().join("snapshots"),
        None => std::env::temp_dir().join("cellarrow-snapshots"),
    };
    let mut h = Sha256::new();
    h.update(loc.url().as_bytes());
    h.update([0u8]);
    h.update(text);
    let id = to_hex(&h.finalize());
    let dir = base.join(&id[..32]);
    if dir.join(MANIFEST_FILE).is_file() {
        return Ok(dir);
    }
    std::fs::create_dir_all(&base).map_err(|e| Error::io(&base, "creating", e))?;
    static N: AtomicU64 = AtomicU64::new(0);
    let tmp = base.join(format!(
        ".tmp-{}-{}-{}",
        &id[..16],
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let made = fill_snapshot(loc, manifest, text, &tmp);
    if let Err(e) = made {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    match std::fs::rename(&tmp, &dir) {
        Ok(()) => Ok(dir),
        // Another process published the same snapshot first: theirs is identical.
        Err(_) if dir.join(MANIFEST_FILE).is_file() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(dir)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(Error::io(&dir, "publishing the corpus snapshot", e))
        }
    }
}

fn fill_snapshot(loc: &Location, manifest: &Manifest, text: &[u8], tmp: &Path) -> Result<()> {
    let parts: std::collections::HashSet<&str> = manifest
        .matrix
        .parts
        .iter()
        .map(|p| p.path.as_str())
        .collect();
    for f in manifest
        .files
        .iter()
        .filter(|f| !parts.contains(f.path.as_str()))
    {
        let reader = RangeReader::new(loc, &f.path);
        let mut fetched = fetch_verified(&reader, None, &f.sha256, f.bytes)?;
        let dest = tmp.join(&f.path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, "creating", e))?;
        }
        let mut out = File::create(&dest).map_err(|e| Error::io(&dest, "creating", e))?;
        std::io::copy(&mut fetched, &mut out).map_err(|e| Error::io(&dest, "writing", e))?;
    }
    let path = tmp.join(MANIFEST_FILE);
    let mut out = File::create(&path).map_err(|e| Error::io(&path, "creating", e))?;
    out.write_all(text)
        .map_err(|e| Error::io(&path, "writing", e))?;
    Ok(())
}

/// Every matrix part fetched (or found in the cache), checked and mapped, then decoded as a
/// local part; errors name the part's URL.
fn remote_matrix(loc: &Location, manifest: &Manifest, cache: Option<&Cache>) -> Result<Matrix> {
    let mut m = Matrix {
        maps: Vec::new(),
        batches: Vec::new(),
        starts: Vec::new(),
    };
    for (pi, part) in manifest.matrix.parts.iter().enumerate() {
        let url = PathBuf::from(loc.url_of(&part.path));
        let entry = manifest
            .files
            .iter()
            .find(|f| f.path == part.path)
            .ok_or_else(|| Error::corpus(&url, "matrix part is not listed in files"))?;
        let reader = RangeReader::new(loc, &part.path);
        let file = fetch_verified(&reader, cache, &entry.sha256, entry.bytes)?;
        if entry.bytes == 0 {
            return Err(Error::corpus(
                &url,
                "matrix part is empty (no Arrow stream)",
            ));
        }
        // Safety: cache entries are never written after they are published (an eviction
        // unlinks the file; the mapping keeps its bytes).
        let map = Arc::new(unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&url, "mapping", e))?);
        for b in decode_part(&url, &map, manifest, part, pi)? {
            m.starts.push(b.first_cell());
            m.batches.push(b);
        }
        m.maps.push(map);
    }
    Ok(m)
}
