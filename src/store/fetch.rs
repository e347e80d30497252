//! Whole objects fetched through a [`RangeReader`] and the [`Cache`], checked before use.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;

use sha2::{Digest, Sha256};

use super::{Cache, CacheKey, Location, RangeReader};
use crate::error::{Error, ErrorKind, Result};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Lowercase hex sha256 of a whole open file, read from its start.
fn sha256_of(file: &File, path: &std::path::Path) -> Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    loop {
        let n = match file.read_at(&mut buf, at) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(path, "reading back a fetched part", e)),
        };
        hasher.update(&buf[..n]);
        at += n as u64;
    }
    Ok(hex(&hasher.finalize()))
}

/// The whole object of `reader`, `size` bytes with this `sha256`, as an open local file whose
/// bytes have been checked against the checksum: from the cache when it holds the part, else
/// fetched in concurrent ranged requests into a new cache entry (or, with no cache, an
/// anonymous temporary file). A body that fails the checksum is fetched again, up to
/// [`super::ReadOptions::retries`] times; then the error ([`ErrorKind::Remote`]) names the URL,
/// the part and the byte range. A corrupt byte is never published to the cache or returned.
///
/// The size is checked with a HEAD request first, and every GET is pinned to the ETag it
/// returned, so a part replaced on the server fails instead of mixing versions.
pub fn fetch_verified(
    reader: &RangeReader,
    cache: Option<&Cache>,
    sha256: &str,
    size: u64,
) -> Result<File> {
    let key = CacheKey::whole(sha256, size);
    if let Some(cache) = cache {
        if let Some(f) = cache.get(&key)? {
            return Ok(f);
        }
    }
    let whole = 0..size;
    let (actual, etag) = reader.head_blocking()?;
    if actual != size {
        return Err(reader.error(
            ErrorKind::InvalidCorpus,
            &whole,
            format!("the object is {actual} bytes, the manifest says {size}"),
        ));
    }
    let reader = reader.clone().with_etag(etag);
    let attempts = reader.options().retries + 1;
    let mut last = String::new();
    for _ in 0..attempts {
        // Set when the bytes arrived whole but fail the checksum: worth fetching again.
        let mismatch = std::cell::Cell::new(false);
        let fill = |f: &File, path: &std::path::Path| -> Result<()> {
            let out = f
                .try_clone()
                .map_err(|e| Error::io(path, "opening a fetched part", e))?;
            let shown = path.to_path_buf();
            let r = reader.clone();
            super::block_on(async move {
                r.read_all_with(size, |at, body| {
                    out.write_all_at(body, at)
                        .map_err(|e| Error::io(&shown, "writing a fetched part", e))
                })
                .await
            })?;
            let got = sha256_of(f, path)?;
            if got != sha256 {
                mismatch.set(true);
                return Err(reader.error(
                    ErrorKind::Remote,
                    &whole,
                    format!("sha256 is {got}, the manifest says {sha256}"),
                ));
            }
            Ok(())
        };
        let result = match cache {
            Some(cache) => cache.insert_with(&key, fill),
            None => tempfile::tempfile()
                .map_err(|e| Error::io(std::env::temp_dir(), "creating a temporary file", e))
                .and_then(|f| {
                    f.set_len(size).map_err(|e| {
                        Error::io(std::env::temp_dir(), "sizing a temporary file", e)
                    })?;
                    fill(&f, &std::env::temp_dir())?;
                    Ok(f)
                }),
        };
        match result {
            Ok(f) => return Ok(f),
            Err(e) if mismatch.get() => last = e.message().to_string(),
            Err(e) => return Err(e),
        }
    }
    Err(reader.error(
        ErrorKind::Remote,
        &whole,
        format!(
            "every one of {attempts} fetches failed its checksum (last: {})",
            last.rsplit(": ").next().unwrap_or(&last)
        ),
    ))
}

/// The whole object `rel` at `location`, read into memory (for small objects such as the
/// manifest), with the retries of a [`RangeReader`] with default settings.
pub fn fetch_bytes(location: &Location, rel: &str) -> Result<Vec<u8>> {
    if let Some(root) = location.local_root() {
        let path = root.join(rel);
        let mut f = File::open(&path).map_err(|e| {
            let kind = if e.kind() == std::io::ErrorKind::NotFound {
                ErrorKind::NotFound
            } else {
                ErrorKind::Io
            };
            Error::new(kind, format!("reading: {e}"))
                .with_path(&path)
                .with_source(e)
        })?;
        let mut v = Vec::new();
        f.read_to_end(&mut v)
            .map_err(|e| Error::io(&path, "reading", e))?;
        return Ok(v);
    }
    let reader = RangeReader::new(location, rel);
    let (size, etag) = reader.head_blocking()?;
    let reader = reader.with_etag(etag);
    let bodies = reader.read_blocking(std::slice::from_ref(&(0..size)))?;
    Ok(bodies[0].as_slice().to_vec())
}
