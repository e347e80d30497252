//! Opening a corpus from object storage (`s3://`, `gs://`, `az://`, `http(s)://`).
//!
//! The manifest and every file of every table (small next to the matrix) are fetched once into
//! a snapshot directory, named by the URL and the manifest's own checksum, that every reader of
//! the node shares; the tables are read from there as on local disk, whatever the format (the
//! Parquet datasets of format 2, the single `NAME.parquet` files of format 1). Hot matrix
//! parts go through the store's ranged reads and node-local cache, are checked against their
//! sha256 before use, and are mapped from the cache entry: past the fetch, the reader is the
//! local zero-copy one. Cold parts are read a chunk at a time ([`LazyPart`]): a training node
//! fetches what it samples, and each chunk is checked against its own sha256 from the part's
//! footer, itself checked against the manifest.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::buffer::Buffer;
use futures::stream::{self, StreamExt, TryStreamExt};
use memmap2::Mmap;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use super::checksum::to_hex;
use super::cold::{open_lazy_cold_part, ColdChunk};
use super::reader::{decode_part, Matrix, Slot};
use super::{Corpus, FileEntry, Manifest, PartFooter, PartLayout, MANIFEST_FILE};
use crate::error::{Error, ErrorKind, Result};
use crate::store::{
    fetch_bytes, fetch_verified, Cache, CacheKey, Location, RangeReader, ReadOptions, StoreOptions,
};

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
    /// A hot part is fetched whole (concurrent ranged GETs), checked against the sha256 in the
    /// manifest, and mapped. A cold part is opened from its footer alone (checked against the
    /// manifest), and each chunk is fetched when first used ([`Corpus::prefetch`] fetches a
    /// batch's chunks together) and checked against the sha256 the footer lists for it. Errors
    /// name the URL of what failed.
    pub fn open_url_with(
        url: &str,
        options: &StoreOptions,
        cache: Option<&Cache>,
    ) -> Result<Corpus> {
        Self::open_url_inner(url, options, cache, true)
    }

    /// [`Self::open_url_with`]; `lazy`: cold parts with a footer in the manifest are read chunk
    /// by chunk (else every part is fetched whole).
    pub(crate) fn open_url_inner(
        url: &str,
        options: &StoreOptions,
        cache: Option<&Cache>,
        lazy: bool,
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
        // The tables and the matrix are independent requests: in flight together.
        let (root, matrix) = std::thread::scope(|s| {
            let root = s.spawn(|| snapshot(&loc, &manifest, &text, cache));
            let matrix = remote_matrix(&loc, &manifest, cache, lazy);
            (root.join().expect("the snapshot does not panic"), matrix)
        });
        let (root, matrix) = (root?, matrix?);
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
    let made = download_tables(loc, manifest, text, &tmp);
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

/// Writes into the new directory `tmp` the manifest (`text`) and every file it lists that is
/// not a matrix part, each checked against its sha256.
pub(crate) fn download_tables(
    loc: &Location,
    manifest: &Manifest,
    text: &[u8],
    tmp: &Path,
) -> Result<()> {
    std::fs::create_dir_all(tmp).map_err(|e| Error::io(tmp, "creating", e))?;
    let parts: std::collections::HashSet<&str> = manifest
        .matrix
        .parts
        .iter()
        .map(|p| p.path.as_str())
        .collect();
    let files: Vec<&FileEntry> = manifest
        .files
        .iter()
        .filter(|f| !parts.contains(f.path.as_str()))
        .collect();
    // The files are small and many requests' waits dominate: fetched several at a time.
    for group in files.chunks(SNAPSHOT_FETCHES) {
        std::thread::scope(|s| {
            let fetches: Vec<_> = group
                .iter()
                .map(|f| s.spawn(move || snapshot_file(loc, f, tmp)))
                .collect();
            fetches
                .into_iter()
                .map(|h| h.join().expect("a snapshot fetch does not panic"))
                .collect::<Result<Vec<()>>>()
        })?;
    }
    let path = tmp.join(MANIFEST_FILE);
    let mut out = File::create(&path).map_err(|e| Error::io(&path, "creating", e))?;
    out.write_all(text)
        .map_err(|e| Error::io(&path, "writing", e))?;
    Ok(())
}

/// Table files of a snapshot fetched at once.
const SNAPSHOT_FETCHES: usize = 16;

fn snapshot_file(loc: &Location, f: &FileEntry, tmp: &Path) -> Result<()> {
    let reader = RangeReader::new(loc, &f.path);
    let mut fetched = fetch_verified(&reader, None, &f.sha256, f.bytes)?;
    let dest = tmp.join(&f.path);
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, "creating", e))?;
    }
    let mut out = File::create(&dest).map_err(|e| Error::io(&dest, "creating", e))?;
    std::io::copy(&mut fetched, &mut out).map_err(|e| Error::io(&dest, "writing", e))?;
    Ok(())
}

/// The matrix parts: a cold part whose manifest entry has its footer is opened from the
/// footer alone (fetched and checked against the manifest) and its chunks are fetched when
/// used; every other part is fetched whole (or found in the cache), checked and mapped, then
/// decoded as a local part. Errors name the part's URL.
fn remote_matrix(
    loc: &Location,
    manifest: &Manifest,
    cache: Option<&Cache>,
    lazy: bool,
) -> Result<Matrix> {
    let mut m = Matrix {
        maps: Vec::new(),
        batches: Vec::new(),
        starts: Vec::new(),
        lazy: false,
    };
    let entries: Vec<&FileEntry> = manifest
        .matrix
        .parts
        .iter()
        .map(|part| {
            manifest
                .files
                .iter()
                .find(|f| f.path == part.path)
                .ok_or_else(|| {
                    Error::corpus(loc.url_of(&part.path), "matrix part is not listed in files")
                })
        })
        .collect::<Result<_>>()?;
    let lazy = if lazy {
        lazy_parts(loc, manifest, &entries, cache)?
    } else {
        vec![None; entries.len()]
    };
    // Lazy parts open from their footers; the others are fetched whole, several at once, so
    // that one part's checksum runs while the next ones download.
    let mut opened: Vec<Option<Vec<ColdChunk>>> = Vec::with_capacity(entries.len());
    for (pi, (part, entry)) in manifest.matrix.parts.iter().zip(&entries).enumerate() {
        let url = PathBuf::from(loc.url_of(&part.path));
        if entry.bytes == 0 {
            return Err(Error::corpus(
                &url,
                "matrix part is empty (no Arrow stream)",
            ));
        }
        opened.push(match &lazy[pi] {
            Some((lp, tail)) => {
                open_lazy_cold_part(&url, tail, lp.clone(), entry.bytes, manifest, part, pi)?
            }
            None => None,
        });
    }
    let whole: Vec<usize> = (0..opened.len())
        .filter(|&pi| opened[pi].is_none())
        .collect();
    let mut files: Vec<Option<std::fs::File>> = (0..opened.len()).map(|_| None).collect();
    for group in whole.chunks(WHOLE_PART_FETCHES) {
        let fetched: Vec<Result<std::fs::File>> = std::thread::scope(|s| {
            let fetches: Vec<_> = group
                .iter()
                .map(|&pi| {
                    let (part, entry) = (&manifest.matrix.parts[pi], entries[pi]);
                    s.spawn(move || {
                        let reader = RangeReader::new(loc, &part.path);
                        fetch_verified(&reader, cache, &entry.sha256, entry.bytes)
                    })
                })
                .collect();
            fetches
                .into_iter()
                .map(|h| h.join().expect("a part fetch does not panic"))
                .collect()
        });
        for (&pi, f) in group.iter().zip(fetched) {
            files[pi] = Some(f?);
        }
    }
    for (pi, (part, chunks)) in manifest.matrix.parts.iter().zip(opened).enumerate() {
        if let Some(chunks) = chunks {
            m.lazy = true;
            for c in chunks {
                m.starts.push(c.first_cell());
                m.batches.push(Slot::Cold(c));
            }
            continue;
        }
        let url = PathBuf::from(loc.url_of(&part.path));
        let file = files[pi]
            .take()
            .expect("every part not opened lazily was fetched");
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

/// Matrix parts fetched whole at once when a corpus URL is opened.
const WHOLE_PART_FETCHES: usize = 4;

/// A part read lazily and its footer's bytes.
type Opened = (Arc<LazyPart>, Buffer);

/// A byte range of a part to fetch and the sha256 it must have.
type Want = (Range<u64>, [u8; 32]);

/// For each part read lazily (a cold part whose manifest entry has its footer): the part and
/// its footer's bytes, checked against the manifest. The parts' HEAD requests (size against
/// the manifest, and the ETag every later GET is pinned to) and footer reads run concurrently.
fn lazy_parts(
    loc: &Location,
    manifest: &Manifest,
    entries: &[&FileEntry],
    cache: Option<&Cache>,
) -> Result<Vec<Option<Opened>>> {
    let wanted: Vec<(usize, RangeReader, FileEntry, PartFooter)> = manifest
        .matrix
        .parts
        .iter()
        .zip(entries)
        .enumerate()
        .filter_map(|(pi, (part, entry))| {
            let footer = part
                .footer
                .clone()
                .filter(|_| part.layout == PartLayout::Cold)?;
            Some((
                pi,
                RangeReader::new(loc, &part.path),
                (*entry).clone(),
                footer,
            ))
        })
        .collect();
    let mut out: Vec<Option<Opened>> = vec![None; entries.len()];
    if wanted.is_empty() {
        return Ok(out);
    }
    let cache = cache.cloned();
    let concurrency = ReadOptions::default().concurrency;
    let opened = crate::store::block_on(async move {
        stream::iter(wanted)
            .map(|(pi, reader, entry, footer)| {
                let cache = cache.clone();
                async move {
                    let part = LazyPart::open(reader, cache, &entry).await?;
                    let tail = part.footer(&footer, entry.bytes).await?;
                    Ok::<_, Error>((pi, Arc::new(part), tail))
                }
            })
            .buffer_unordered(concurrency)
            .try_collect::<Vec<_>>()
            .await
    })?;
    for (pi, part, tail) in opened {
        out[pi] = Some((part, tail));
    }
    Ok(out)
}

/// A cold part in object storage, read one chunk (or a run of chunks) at a time: each chunk's
/// bytes are checked against the sha256 the part's footer lists for it before use, and kept in
/// the node-local cache (keyed by the part's sha256 and the chunk's byte range).
pub(crate) struct LazyPart {
    reader: RangeReader,
    cache: Option<Cache>,
    sha256: String,
    /// Chunks being fetched (by the start of their byte range), so that a loader thread that
    /// needs a chunk a read-ahead is fetching waits for it instead of asking again.
    inflight: Arc<Mutex<HashMap<u64, Arc<Notify>>>>,
    /// Chunks (by the start of their byte range) this process has seen in the node cache: not
    /// looked for again by prefetch and read-ahead, which every batch that touches a chunk
    /// would otherwise repeat. Only a hint: a chunk evicted since is fetched by its read.
    seen_cached: Arc<Mutex<HashSet<u64>>>,
}

/// The chunks one fetch took on: removed from the in-flight set, and their waiters woken,
/// however the fetch ends (done, failed, or dropped).
struct Claimed<'a> {
    inflight: &'a Mutex<HashMap<u64, Arc<Notify>>>,
    starts: Vec<u64>,
}

impl Drop for Claimed<'_> {
    fn drop(&mut self) {
        let mut map = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        for s in &self.starts {
            if let Some(n) = map.remove(s) {
                n.notify_waiters();
            }
        }
    }
}

impl LazyPart {
    /// Checks the part's size on the server against the manifest and pins later reads to its
    /// ETag.
    async fn open(reader: RangeReader, cache: Option<Cache>, entry: &FileEntry) -> Result<Self> {
        let (size, etag) = reader.head().await?;
        if size != entry.bytes {
            return Err(reader.error(
                ErrorKind::InvalidCorpus,
                &(0..entry.bytes),
                format!(
                    "the object is {size} bytes, the manifest says {}",
                    entry.bytes
                ),
            ));
        }
        Ok(LazyPart {
            reader: reader.with_etag(etag),
            cache,
            sha256: entry.sha256.clone(),
            inflight: Arc::default(),
            seen_cached: Arc::default(),
        })
    }

    /// The footer's bytes (the last `footer.bytes` of the part), checked against the manifest.
    async fn footer(&self, footer: &PartFooter, size: u64) -> Result<Buffer> {
        if footer.bytes > size {
            return Err(self.reader.error(
                ErrorKind::InvalidCorpus,
                &(0..size),
                format!(
                    "the manifest's footer of {} bytes is longer than the part",
                    footer.bytes
                ),
            ));
        }
        let want = sha256_bytes_of(&footer.sha256).ok_or_else(|| {
            Error::corpus(self.reader.url(), "the manifest's footer sha256 is not hex")
        })?;
        let range = size - footer.bytes..size;
        let mut got = self.fetch(vec![(range, want)]).await?;
        Ok(got.pop().expect("one range asked, one returned"))
    }

    fn key(&self, range: &Range<u64>) -> CacheKey {
        CacheKey {
            sha256: self.sha256.clone(),
            range: range.clone(),
        }
    }

    /// The bytes of `range`, which must have this sha256: from the cache, else fetched.
    pub(crate) fn chunk(&self, range: Range<u64>, sha256: &[u8; 32]) -> Result<Buffer> {
        if let Some(c) = &self.cache {
            if let Some(v) = c.read(&self.key(&range))? {
                return Ok(Buffer::from_vec(v));
            }
        }
        let this = LazyPart {
            reader: self.reader.clone(),
            cache: self.cache.clone(),
            sha256: self.sha256.clone(),
            inflight: self.inflight.clone(),
            seen_cached: self.seen_cached.clone(),
        };
        let want = vec![(range, *sha256)];
        let mut got = crate::store::block_on(async move { this.fetch(want).await })?;
        Ok(got.pop().expect("one range asked, one returned"))
    }

    fn saw_cached(&self, start: u64) {
        self.seen_cached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(start);
    }

    /// Whether this process has seen the chunk at `start` in the node cache.
    fn seen_cached(&self, start: u64) -> bool {
        self.seen_cached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&start)
    }

    /// The bytes of each range (in the order given), each checked against its sha256, from
    /// the cache or fetched in concurrent, coalesced requests; fetched bytes go to the cache.
    /// A body that fails its checksum is fetched again, up to the reader's retries; then the
    /// error names the URL, the part and the byte range.
    ///
    /// With a cache, chunks another fetch of this part has in flight are not asked for again:
    /// this one waits for that fetch and reads them from the cache (or fetches them itself if
    /// that fetch failed).
    async fn fetch(&self, wants: Vec<Want>) -> Result<Vec<Buffer>> {
        self.fetch_or_find(wants, Found::Read).await
    }

    /// Makes sure the chunks of `wants` are in the node cache, fetching those that are not
    /// as [`Self::fetch`] does; those cached already are not read (prefetch and read-ahead
    /// only need them there when the gather reads them).
    async fn ensure_cached(&self, wants: Vec<Want>) -> Result<()> {
        let found = if self.cache.is_some() {
            Found::Present
        } else {
            Found::Read
        };
        self.fetch_or_find(wants, found).await.map(|_| ())
    }

    /// [`Self::fetch`]; with [`Found::Present`], a chunk in the cache stands as an empty buffer.
    async fn fetch_or_find(&self, wants: Vec<Want>, found: Found) -> Result<Vec<Buffer>> {
        let mut out: Vec<Option<Buffer>> = vec![None; wants.len()];
        let Some(c) = &self.cache else {
            self.fetch_missing(&wants, &mut out).await?;
            return Ok(finished(out));
        };
        let look = |r: &Range<u64>| -> Result<Option<Buffer>> {
            let key = self.key(r);
            Ok(match found {
                Found::Read => c.read(&key)?.map(Buffer::from_vec),
                Found::Present => c.contains(&key)?.then(|| {
                    self.saw_cached(r.start);
                    Buffer::from_vec(Vec::<u8>::new())
                }),
            })
        };
        for (i, (r, _)) in wants.iter().enumerate() {
            out[i] = look(r)?;
        }
        let mut waits = Vec::new();
        let mut claimed = Claimed {
            inflight: &self.inflight,
            starts: Vec::new(),
        };
        let mut mine: Vec<Want> = Vec::new();
        let mut mine_at: Vec<usize> = Vec::new();
        {
            let mut map = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            for (i, w) in wants.iter().enumerate() {
                if out[i].is_some() {
                    continue;
                }
                match map.get(&w.0.start) {
                    // Created under the lock, so the wake-up of the fetch that owns it (also
                    // under the lock) cannot be missed.
                    Some(n) => waits.push(n.clone().notified_owned()),
                    None => {
                        map.insert(w.0.start, Arc::new(Notify::new()));
                        claimed.starts.push(w.0.start);
                        mine.push(w.clone());
                        mine_at.push(i);
                    }
                }
            }
        }
        if !mine.is_empty() {
            // A fetch that finished between the cache read above and the claim has put its
            // chunks in the cache (before leaving the in-flight set): not fetched twice.
            let mut got = Vec::with_capacity(mine.len());
            for (r, _) in &mine {
                got.push(look(r)?);
            }
            self.fetch_missing(&mine, &mut got).await?;
            for (i, b) in mine_at.into_iter().zip(got) {
                out[i] = b;
            }
        }
        drop(claimed);
        if !waits.is_empty() {
            futures::future::join_all(waits).await;
            for (i, (r, _)) in wants.iter().enumerate() {
                if out[i].is_none() {
                    out[i] = look(r)?;
                }
            }
            self.fetch_missing(&wants, &mut out).await?;
        }
        Ok(finished(out))
    }

    /// Fetches the ranges of `wants` whose `out` is `None`, checking each against its sha256
    /// (a body that fails is fetched again, up to the reader's retries), into the cache.
    async fn fetch_missing(&self, wants: &[Want], out: &mut [Option<Buffer>]) -> Result<()> {
        let attempts = self.reader.options().retries + 1;
        for attempt in 1..=attempts {
            let missing: Vec<usize> = (0..wants.len()).filter(|&i| out[i].is_none()).collect();
            if missing.is_empty() {
                break;
            }
            let ranges: Vec<Range<u64>> = missing.iter().map(|&i| wants[i].0.clone()).collect();
            let bodies = self.reader.read(&ranges).await?;
            let mut inserted = 0u64;
            for (&i, body) in missing.iter().zip(bodies) {
                let (range, want) = &wants[i];
                let got: [u8; 32] = Sha256::digest(body.as_slice()).into();
                if got != *want {
                    if attempt == attempts {
                        return Err(self.reader.error(
                            ErrorKind::Remote,
                            range,
                            format!(
                                "sha256 is {}, the part's footer says {} (after {attempts} attempts)",
                                to_hex(&got),
                                to_hex(want)
                            ),
                        ));
                    }
                    continue;
                }
                if let Some(c) = &self.cache {
                    c.insert_untrimmed(&self.key(range), body.as_slice())?;
                    self.saw_cached(range.start);
                    inserted += body.len() as u64;
                }
                out[i] = Some(body);
            }
            if let Some(c) = &self.cache {
                c.trim_after(inserted)?;
            }
        }
        Ok(())
    }
}

/// What [`LazyPart::fetch_or_find`] does with a chunk it finds in the cache.
#[derive(Clone, Copy)]
enum Found {
    /// Reads it: the caller uses the bytes.
    Read,
    /// Only notes that it is there.
    Present,
}

fn finished(out: Vec<Option<Buffer>>) -> Vec<Buffer> {
    out.into_iter()
        .map(|b| b.expect("every range fetched or failed"))
        .collect()
}

/// A lowercase hex sha256 as bytes.
fn sha256_bytes_of(hex: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if hex.len() != 64 {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Corpus {
    /// [`Corpus::prefetch`] for a corpus with lazily read parts.
    pub(crate) fn prefetch_remote(&self, cells: &[u64]) -> Result<()> {
        let by_part = self.chunks_to_fetch(cells);
        if by_part.is_empty() {
            return Ok(());
        }
        crate::store::block_on(fetch_parts(by_part))
    }

    /// [`Corpus::read_ahead`] for a corpus with lazily read parts.
    pub(crate) fn read_ahead_remote(&self, cells: &[u64]) {
        let by_part = self.chunks_to_fetch(cells);
        if by_part.is_empty() || by_part.iter().any(|(p, _)| p.cache.is_none()) {
            return;
        }
        // A failure here is met again, and reported, by the read that needs the chunk.
        crate::store::spawn(async move {
            let _ = fetch_parts(by_part).await;
        });
    }

    /// The chunks of cold parts that `cells` need and that are neither decoded nor cached, by
    /// part.
    fn chunks_to_fetch(&self, cells: &[u64]) -> Vec<(Arc<LazyPart>, Vec<Want>)> {
        let mut batches: Vec<usize> = cells
            .iter()
            .filter(|&&c| c < self.manifest.n_cells)
            .map(|&c| self.locate(c).batch)
            .collect();
        batches.sort_unstable();
        batches.dedup();
        let mut by_part: Vec<(Arc<LazyPart>, Vec<Want>)> = Vec::new();
        for b in batches {
            let Slot::Cold(c) = &self.matrix.batches[b] else {
                continue;
            };
            let Some((part, sha)) = c.to_fetch() else {
                continue;
            };
            if part.seen_cached(c.range().start) {
                continue;
            }
            match by_part.last_mut() {
                Some((p, wants)) if Arc::ptr_eq(p, part) => wants.push((c.range(), sha)),
                _ => by_part.push((part.clone(), vec![(c.range(), sha)])),
            }
        }
        by_part
    }
}

async fn fetch_parts(by_part: Vec<(Arc<LazyPart>, Vec<Want>)>) -> Result<()> {
    stream::iter(by_part)
        .map(|(part, wants)| async move { part.ensure_cached(wants).await })
        .buffer_unordered(ReadOptions::default().concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}
