//! obs columns as memory-mapped Arrow arrays, for readers that need a column for every cell
//! (the loader's obs and coordinate columns).
//!
//! obs.parquet is compressed, so reading a column decodes it into the process's own memory:
//! one copy per process, which grows with the corpus and is paid again by every `DataLoader`
//! worker and every rank of a machine. Instead each column is decoded once into an
//! uncompressed Arrow IPC file of a column cache and mapped from there: the processes share
//! one copy in the page cache, which the kernel can drop and read again.
//!
//! The cache is keyed by the checksums of the obs files that the manifest records (the one
//! checksum of a single file, else a hash of the list), so an entry never goes stale; entries are written to a temporary file and renamed into place, so a
//! reader never sees half an entry, and several processes making the same entry at once
//! each write a whole one. The directory is `$CELLARROW_CACHE/columns`, else
//! `$XDG_CACHE_HOME/cellarrow/columns`, else `~/.cache/cellarrow/columns`; anything in it may
//! be deleted at any time. When the cache cannot be written (a read-only home, a full disk),
//! the columns are read into memory as before.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::datatypes::{Field, Schema};
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use memmap2::Mmap;

use super::{reader, Corpus};
use crate::error::{Context, Error, Result};

/// The column cache directory of this process (see the module documentation).
pub fn cache_dir() -> Option<PathBuf> {
    Some(cache_root()?.join("columns"))
}

/// The root of cellarrow's node-local caches: `$CELLARROW_CACHE`, else
/// `$XDG_CACHE_HOME/cellarrow`, else `~/.cache/cellarrow` (`None` when none of these is set).
pub(crate) fn cache_root() -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let base = env("CELLARROW_CACHE")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("cellarrow")))
        .or_else(|| env("HOME").map(|h| h.join(".cache").join("cellarrow")))?;
    Some(base)
}

impl Corpus {
    /// The obs columns `names`, each one array of a row per cell in cell order, mapped from
    /// the column cache (see [`cache_dir`]; made on first use) or, when the cache cannot be
    /// used, read from obs.parquet into memory.
    ///
    /// ```no_run
    /// let corpus = cellarrow::Corpus::open("corpus")?;
    /// let cols = corpus.obs_columns(&["cell_type"])?;
    /// assert_eq!(cols[0].len() as u64, corpus.n_cells());
    /// # Ok::<(), cellarrow::Error>(())
    /// ```
    pub fn obs_columns(&self, names: &[&str]) -> Result<Vec<ArrayRef>> {
        self.obs_columns_in(cache_dir().as_deref(), names)
    }

    /// [`Corpus::obs_columns`] with the cache at `cache` (`None`: no cache).
    pub fn obs_columns_in(&self, cache: Option<&Path>, names: &[&str]) -> Result<Vec<ArrayRef>> {
        let entry = cache.zip(self.obs_checksum()).map(|(c, sha)| c.join(sha));
        let mut out = Vec::with_capacity(names.len());
        let mut missing = Vec::new();
        for (i, name) in names.iter().enumerate() {
            match entry
                .as_deref()
                .and_then(|e| self.mapped(&column_file(e, name), name))
            {
                Some(col) => out.push(Some(col)),
                None => {
                    out.push(None);
                    missing.push(i);
                }
            }
        }
        if !missing.is_empty() {
            let wanted: Vec<&str> = missing.iter().map(|&i| names[i]).collect();
            let read = self.read_obs(&wanted)?;
            for (&i, col) in missing.iter().zip(read) {
                // Mapped from the new entry when it could be written, else kept in memory.
                let mapped = entry
                    .as_deref()
                    .and_then(|e| write_column(e, names[i], &col).ok())
                    .and_then(|file| self.mapped(&file, names[i]));
                out[i] = Some(mapped.unwrap_or(col));
            }
        }
        Ok(out
            .into_iter()
            .map(|c| c.expect("every column was read"))
            .collect())
    }

    /// The name of the obs table's cache entry: the sha256 of its one file as the manifest
    /// records it (a format-1 corpus, or a format-2 one with one obs file), else the sha256 of
    /// the files' checksums in order, which changes with every append.
    fn obs_checksum(&self) -> Option<String> {
        let m = self.manifest();
        let shas: Vec<&str> = m
            .table_paths("obs")
            .iter()
            .map(|p| m.file(p).map(|f| f.sha256.as_str()))
            .collect::<Option<_>>()?;
        if shas.is_empty()
            || !shas
                .iter()
                .all(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return None;
        }
        if let [one] = shas.as_slice() {
            return Some(one.to_string());
        }
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for s in &shas {
            h.update(s.as_bytes());
            h.update(b"\n");
        }
        Some(super::to_hex(&h.finalize()))
    }

    /// Columns `names` of the obs table, each concatenated into one array.
    fn read_obs(&self, names: &[&str]) -> Result<Vec<ArrayRef>> {
        let path = self
            .table_files("obs")
            .pop()
            .unwrap_or_else(|| self.table_path("obs"));
        let batches = self.read_table("obs", Some(names))?;
        let Some(first) = batches.first() else {
            return Err(Error::corpus(&path, "obs has no rows"));
        };
        let all = arrow::compute::concat_batches(&first.schema(), &batches).at(&path)?;
        if all.num_rows() as u64 != self.n_cells() {
            return Err(Error::corpus(
                &path,
                format!(
                    "obs has {} rows, the manifest lists {} cells",
                    all.num_rows(),
                    self.n_cells()
                ),
            ));
        }
        names
            .iter()
            .map(|n| all.column_by_name(n).cloned())
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::corpus(&path, "a requested obs column is missing"))
    }

    /// Column `name` mapped from the cache file `file`, if it is there and holds a column of
    /// that name with a row per cell (anything else is ignored, and rewritten by the caller).
    fn mapped(&self, file: &Path, name: &str) -> Option<ArrayRef> {
        let f = std::fs::File::open(file).ok()?;
        // Safety: entries are written whole under another name and renamed into place, never
        // changed afterwards; a process that writes into the cache by hand breaks it as it
        // would break any mapped file.
        let map = Arc::new(unsafe { Mmap::map(&f) }.ok()?);
        if map.is_empty() {
            return None;
        }
        let one_column = |s: &arrow::datatypes::SchemaRef| {
            if s.fields().len() == 1 && s.field(0).name() == name {
                Ok(())
            } else {
                Err(Error::corpus(file, "not a column of this name"))
            }
        };
        let batches = reader::decode_mapped(file, &map, false, one_column).ok()?;
        match batches.as_slice() {
            [b] if b.num_rows() as u64 == self.n_cells() => Some(b.column(0).clone()),
            _ => None,
        }
    }
}

/// The cache file of column `name` in `entry`: the name hex-encoded, so that any column name
/// makes a plain file name.
fn column_file(entry: &Path, name: &str) -> PathBuf {
    let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
    entry.join(format!("{hex}.arrow"))
}

/// Writes `col` as the cache file of column `name` in `entry` (a temporary file renamed into
/// place) and returns its path.
fn write_column(entry: &Path, name: &str, col: &ArrayRef) -> Result<PathBuf> {
    std::fs::create_dir_all(entry).map_err(|e| Error::io(entry, "creating", e))?;
    let tmp = tempfile::Builder::new()
        .prefix(".column-")
        .tempfile_in(entry)
        .map_err(|e| Error::io(entry, "creating a temporary file", e))?;
    let schema = Arc::new(Schema::new(vec![Field::new(
        name,
        col.data_type().clone(),
        true,
    )]));
    let batch = RecordBatch::try_new(schema.clone(), vec![col.clone()])?;
    // Uncompressed with 64-byte aligned buffers (the writer's defaults), so it maps as is.
    let mut w = StreamWriter::try_new(tmp.as_file(), &schema).at(tmp.path())?;
    w.write(&batch).at(tmp.path())?;
    w.finish().at(tmp.path())?;
    let file = column_file(entry, name);
    tmp.persist(&file)
        .map_err(|e| Error::io(&file, "moving into place", e.error))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::testing::{random_rows, write_corpus_with, TestCorpusOptions};
    use arrow::array::{Array, DictionaryArray, Float64Array};
    use arrow::datatypes::Int32Type;

    fn corpus(dir: &Path) -> Corpus {
        let n = 30usize;
        let labels: DictionaryArray<Int32Type> = (0..n).map(|i| ["T", "B", "NK"][i % 3]).collect();
        let score: Float64Array = (0..n).map(|i| Some(i as f64 / 2.0)).collect();
        let opts = TestCorpusOptions {
            obs_columns: vec![
                ("cell type".into(), Arc::new(labels) as _),
                ("score".into(), Arc::new(score) as _),
            ],
            ..Default::default()
        };
        write_corpus_with(
            dir,
            20,
            &random_rows(n, 20, 0.2, 3),
            &[("a", 10), ("b", 20)],
            &opts,
        )
        .unwrap();
        Corpus::open(dir).unwrap()
    }

    #[test]
    fn columns_are_mapped_from_the_cache_and_equal_the_parquet_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let c = corpus(&tmp.path().join("c"));
        let cache = tmp.path().join("cache");
        let names = ["score", "cell type", "obs_name"];
        let want = c.obs_columns_in(None, &names).unwrap();
        let first = c.obs_columns_in(Some(&cache), &names).unwrap();
        let entry = cache.join(c.obs_checksum().unwrap());
        let files: Vec<_> = std::fs::read_dir(&entry)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            files.len(),
            3,
            "one file per column, no temporary left: {files:?}"
        );
        let again = c.obs_columns_in(Some(&cache), &names).unwrap();
        for ((w, f), a) in want.iter().zip(&first).zip(&again) {
            assert_eq!(w.as_ref(), f.as_ref());
            assert_eq!(w.as_ref(), a.as_ref());
        }
        // Both reads with the cache map its files: the values lie in a mapping of the file.
        for cols in [&first, &again] {
            let values = cols[0].to_data().buffers()[0].as_ptr() as usize;
            let file = column_file(&entry, "score").canonicalize().unwrap();
            assert_eq!(mapped_path(values), Some(file));
        }
        assert_eq!(
            mapped_path(want[0].to_data().buffers()[0].as_ptr() as usize),
            None
        );
    }

    /// The file mapped at address `addr` in this process (Linux `/proc/self/maps`).
    fn mapped_path(addr: usize) -> Option<PathBuf> {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        maps.lines().find_map(|l| {
            let mut f = l.split_whitespace();
            let (lo, hi) = f.next()?.split_once('-')?;
            let (lo, hi) = (
                usize::from_str_radix(lo, 16).ok()?,
                usize::from_str_radix(hi, 16).ok()?,
            );
            let path = f.nth(4)?;
            (lo <= addr && addr < hi && path.starts_with('/')).then(|| PathBuf::from(path))
        })
    }

    #[test]
    fn a_broken_entry_is_replaced_and_an_unusable_cache_reads_into_memory() {
        let tmp = tempfile::tempdir().unwrap();
        let c = corpus(&tmp.path().join("c"));
        let cache = tmp.path().join("cache");
        let want = c.obs_columns_in(None, &["score"]).unwrap();
        let entry = cache.join(c.obs_checksum().unwrap());
        std::fs::create_dir_all(&entry).unwrap();
        for junk in [&b""[..], b"not arrow", &[0xff; 64]] {
            std::fs::write(column_file(&entry, "score"), junk).unwrap();
            let got = c.obs_columns_in(Some(&cache), &["score"]).unwrap();
            assert_eq!(got[0].as_ref(), want[0].as_ref());
            assert!(
                std::fs::metadata(column_file(&entry, "score"))
                    .unwrap()
                    .len()
                    > 64,
                "rewritten"
            );
        }
        // A cache path that is a file: nothing can be written there, the column is still read.
        let blocked = tmp.path().join("blocked");
        std::fs::write(&blocked, b"").unwrap();
        let got = c.obs_columns_in(Some(&blocked), &["score"]).unwrap();
        assert_eq!(got[0].as_ref(), want[0].as_ref());
        let err = c
            .obs_columns_in(Some(&cache), &["no such column"])
            .unwrap_err();
        assert!(err.to_string().contains("no such column"), "{err}");
    }
}
