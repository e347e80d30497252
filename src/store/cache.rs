//! The node-local cache of fetched byte ranges.
//!
//! An entry is one byte range of one part, in a file named by the part's sha256 and the range
//! (`ab/abcdef...-START-END`). The content of a part never changes under its checksum, so an
//! entry never goes stale and needs no invalidation. Entries are written to a temporary file
//! in the cache directory and renamed into place, so a reader never sees a partial entry, and
//! several processes filling the same entry at once each write a whole one (the last rename
//! wins; they are identical). A reader that has opened an entry keeps its bytes when another
//! process evicts it (the file is unlinked, not truncated). Recency is the entry's
//! modification time, refreshed on every hit; when the entries exceed the size bound the
//! oldest go first.

use std::fs::File;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use crate::error::{Error, ErrorKind, Result};

/// One cache entry: a byte range of the part with this sha256.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// Lowercase hex sha256 of the whole part.
    pub sha256: String,
    /// The bytes of the part this entry holds.
    pub range: Range<u64>,
}

impl CacheKey {
    /// The whole part of `size` bytes.
    pub fn whole(sha256: impl Into<String>, size: u64) -> CacheKey {
        CacheKey {
            sha256: sha256.into(),
            range: 0..size,
        }
    }

    /// Bytes the entry holds.
    pub fn len(&self) -> u64 {
        self.range.end.saturating_sub(self.range.start)
    }

    /// Whether the range is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn check(&self) -> Result<()> {
        let ok = self.sha256.len() == 64
            && self
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            && self.range.start <= self.range.end;
        if ok {
            Ok(())
        } else {
            Err(Error::invalid_input(format!(
                "cache key: {:?} is not a lowercase hex sha256 with a byte range",
                self
            )))
        }
    }

    fn file_name(&self) -> String {
        format!("{}-{}-{}", self.sha256, self.range.start, self.range.end)
    }
}

/// A point in the life of an entry being inserted, for tests that interleave processes
/// deterministically (see [`Cache::set_hook`]).
#[derive(Debug)]
pub enum CacheEvent<'a> {
    /// The entry's bytes are complete in `tmp` and about to be renamed into place.
    BeforeRename { key: &'a CacheKey, tmp: &'a Path },
}

type Hook = Arc<dyn Fn(&CacheEvent<'_>) + Send + Sync>;

/// The node-local cache of fetched byte ranges (see the module documentation).
///
/// ```no_run
/// use cellarrow::store::{Cache, CacheKey};
/// let cache = Cache::open(cellarrow::store::cache_dir().unwrap(), 10 << 30)?;
/// let key = CacheKey::whole("ab".repeat(32), 5);
/// if cache.get(&key)?.is_none() {
///     cache.insert(&key, b"hello")?;
/// }
/// assert_eq!(cache.read(&key)?.unwrap(), b"hello");
/// # Ok::<(), cellarrow::Error>(())
/// ```
#[derive(Clone)]
pub struct Cache {
    dir: PathBuf,
    max_bytes: u64,
    hook: Option<Hook>,
    /// Bytes this process inserted without trimming since its last trim (see
    /// [`Cache::trim_after`]).
    untrimmed: Arc<AtomicU64>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("dir", &self.dir)
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

/// A unique suffix for temporary files of this process.
fn tmp_name() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        ".tmp-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl Cache {
    /// Opens (and creates) the cache in `dir`, bounded to `max_bytes` of entries.
    pub fn open(dir: impl Into<PathBuf>, max_bytes: u64) -> Result<Cache> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, "creating the cache", e))?;
        Ok(Cache {
            dir,
            max_bytes,
            hook: None,
            untrimmed: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The size bound, in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Calls `hook` at the points of [`CacheEvent`] (for tests).
    #[doc(hidden)]
    pub fn set_hook(&mut self, hook: impl Fn(&CacheEvent<'_>) + Send + Sync + 'static) {
        self.hook = Some(Arc::new(hook));
    }

    /// The file of an entry.
    pub fn entry_path(&self, key: &CacheKey) -> PathBuf {
        self.dir.join(&key.sha256[..2]).join(key.file_name())
    }

    /// The entry, opened, or `None` when it is not cached. The open file keeps the bytes even
    /// if another process evicts the entry meanwhile. A hit makes the entry the most
    /// recently used.
    pub fn get(&self, key: &CacheKey) -> Result<Option<File>> {
        key.check()?;
        let path = self.entry_path(key);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, "opening a cache entry", e)),
        };
        let len = file
            .metadata()
            .map_err(|e| Error::io(&path, "reading a cache entry's size", e))?
            .len();
        if len != key.len() {
            // Only a rename publishes an entry, so this is damage from outside: drop it.
            let _ = std::fs::remove_file(&path);
            return Ok(None);
        }
        // Recency for eviction; failing to record it only makes eviction less precise.
        let _ = file.set_modified(SystemTime::now());
        Ok(Some(file))
    }

    /// Whether the entry is cached (of its full length), without opening it or making it the
    /// most recently used: for read-ahead, which only needs the bytes to be there when read.
    pub fn contains(&self, key: &CacheKey) -> Result<bool> {
        key.check()?;
        let path = self.entry_path(key);
        match std::fs::metadata(&path) {
            Ok(m) => Ok(m.len() == key.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(&path, "reading a cache entry's size", e)),
        }
    }

    /// The entry's bytes, read into memory, or `None`.
    pub fn read(&self, key: &CacheKey) -> Result<Option<Vec<u8>>> {
        use std::io::Read;
        let Some(mut f) = self.get(key)? else {
            return Ok(None);
        };
        let mut v = Vec::with_capacity(key.len() as usize);
        f.read_to_end(&mut v)
            .map_err(|e| Error::io(self.entry_path(key), "reading a cache entry", e))?;
        if v.len() as u64 != key.len() {
            return Ok(None);
        }
        Ok(Some(v))
    }

    /// Inserts `bytes` as the entry (see [`Self::insert_with`]).
    pub fn insert(&self, key: &CacheKey, bytes: &[u8]) -> Result<File> {
        if bytes.len() as u64 != key.len() {
            return Err(Error::invalid_input(format!(
                "cache entry {}: {} bytes for a range of {}",
                key.file_name(),
                bytes.len(),
                key.len()
            )));
        }
        let file = self.insert_untrimmed(key, bytes)?;
        self.trim(Some(&self.entry_path(key)))?;
        Ok(file)
    }

    /// Inserts an entry whose bytes `fill` writes into a new temporary file (at any offsets;
    /// the file is pre-sized to the range's length). `fill` may check what it wrote and fail:
    /// then nothing is published. Then the entry is renamed into place, the cache is trimmed
    /// to its bound (never evicting this entry), and the entry is returned opened.
    pub fn insert_with(
        &self,
        key: &CacheKey,
        fill: impl FnOnce(&File, &Path) -> Result<()>,
    ) -> Result<File> {
        let file = self.publish(key, fill)?;
        self.trim(Some(&self.entry_path(key)))?;
        Ok(file)
    }

    /// Inserts `bytes` as the entry without trimming the cache: for many small entries (the
    /// chunks of a batch), which then call [`Cache::trim_after`] once, since a trim lists the
    /// whole cache.
    pub fn insert_untrimmed(&self, key: &CacheKey, bytes: &[u8]) -> Result<File> {
        if bytes.len() as u64 != key.len() {
            return Err(Error::invalid_input(format!(
                "cache entry {}: {} bytes for a range of {}",
                key.file_name(),
                bytes.len(),
                key.len()
            )));
        }
        self.publish(key, |mut f, path| {
            f.write_all(bytes)
                .map_err(|e| Error::io(path, "writing a cache entry", e))
        })
    }

    /// Counts `bytes` inserted by [`Cache::insert_untrimmed`] and trims the cache once they
    /// add up to a 32nd of its bound: the cache may exceed its bound by that much between
    /// trims.
    pub fn trim_after(&self, bytes: u64) -> Result<()> {
        let total = self.untrimmed.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if total > self.max_bytes / 32 {
            self.untrimmed.store(0, Ordering::Relaxed);
            self.trim(None)?;
        }
        Ok(())
    }

    /// Writes the entry into a temporary file and renames it into place.
    fn publish(
        &self,
        key: &CacheKey,
        fill: impl FnOnce(&File, &Path) -> Result<()>,
    ) -> Result<File> {
        key.check()?;
        let path = self.entry_path(key);
        let sub = path.parent().expect("an entry lives in a subdirectory");
        std::fs::create_dir_all(sub).map_err(|e| Error::io(sub, "creating the cache", e))?;
        let tmp = sub.join(format!("{}{}", key.file_name(), tmp_name()));
        let written = (|| {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(|e| Error::io(&tmp, "creating a cache entry", e))?;
            f.set_len(key.len())
                .map_err(|e| Error::io(&tmp, "sizing a cache entry", e))?;
            fill(&f, &tmp)?;
            let len = f
                .metadata()
                .map_err(|e| Error::io(&tmp, "reading a cache entry's size", e))?
                .len();
            if len != key.len() {
                return Err(Error::new(
                    ErrorKind::Io,
                    format!("cache entry is {len} bytes, expected {}", key.len()),
                )
                .with_path(&tmp));
            }
            Ok(f)
        })();
        let file = match written {
            Ok(f) => f,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        if let Some(hook) = &self.hook {
            hook(&CacheEvent::BeforeRename { key, tmp: &tmp });
        }
        if let Err(e) = std::fs::rename(&tmp, &path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::io(&path, "publishing a cache entry", e));
        }
        Ok(file)
    }

    /// Bytes held by the cache's entries.
    pub fn usage(&self) -> Result<u64> {
        Ok(self.entries()?.iter().map(|e| e.bytes).sum())
    }

    /// Removes least recently used entries until the cache fits its bound; `keep` is never
    /// removed. Entries removed meanwhile by another process are skipped.
    pub fn trim(&self, keep: Option<&Path>) -> Result<()> {
        let mut entries = self.entries()?;
        let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
        if total <= self.max_bytes {
            return Ok(());
        }
        entries.sort_by(|a, b| a.used.cmp(&b.used).then_with(|| a.path.cmp(&b.path)));
        for e in entries {
            if total <= self.max_bytes {
                break;
            }
            if keep == Some(e.path.as_path()) {
                continue;
            }
            match std::fs::remove_file(&e.path) {
                Ok(()) => total -= e.bytes,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => total -= e.bytes,
                Err(err) => return Err(Error::io(&e.path, "evicting a cache entry", err)),
            }
        }
        Ok(())
    }

    /// Every published entry (temporary files are not entries).
    fn entries(&self) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        let top = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) => return Err(Error::io(&self.dir, "listing the cache", e)),
        };
        for sub in top.flatten() {
            let name = sub.file_name();
            let name = name.to_string_lossy();
            if name.len() != 2 || !sub.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let Ok(rd) = std::fs::read_dir(sub.path()) else {
                continue; // removed meanwhile
            };
            for f in rd.flatten() {
                if f.file_name().to_string_lossy().contains(".tmp-") {
                    continue;
                }
                let Ok(md) = f.metadata() else { continue };
                out.push(Entry {
                    path: f.path(),
                    bytes: md.len(),
                    used: md.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                });
            }
        }
        Ok(out)
    }
}

struct Entry {
    path: PathBuf,
    bytes: u64,
    used: SystemTime,
}
