//! The memory-mapped, zero-copy reader of matrix parts.

use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::{Arc, OnceLock};

#[cfg(test)]
use arrow::array::ListArray;
use arrow::array::{Array, ArrayRef, AsArray};
use arrow::buffer::{Buffer, ScalarBuffer};
use arrow::datatypes::{DataType, Float32Type, Float64Type, SchemaRef, UInt16Type, UInt32Type};
use arrow::ipc::reader::StreamDecoder;
use arrow::record_batch::RecordBatch;
use memmap2::Mmap;

use super::cold::{open_cold_part, ColdChunk};
use super::manifest::resolve;
use super::{
    part_schema, Corpus, FileEntry, IndexType, Indices, Manifest, PartEntry, PartLayout, ValueType,
    Values,
};
use crate::error::{Error, Result};

/// The typed child array of `indices`, viewing the mapping.
#[derive(Clone)]
enum IndexBuf {
    U16(ScalarBuffer<u16>),
    U32(ScalarBuffer<u32>),
}

/// The typed child array of `values`, viewing the mapping.
#[derive(Clone)]
enum ValueBuf {
    U16(ScalarBuffer<u16>),
    U32(ScalarBuffer<u32>),
    F32(ScalarBuffer<f32>),
    F64(ScalarBuffer<f64>),
}

/// One decoded record batch of a matrix part: cells `first_cell .. first_cell + n_cells`.
///
/// Everything here views the mapped file. `offsets()` indexes `indices()` and `values()`:
/// cell `first_cell + r` owns positions `offsets()[r] .. offsets()[r + 1]`. A gather can copy
/// whole runs of consecutive cells with one slice per batch.
#[derive(Clone)]
pub struct MatrixBatch {
    first_cell: u64,
    part: usize,
    offsets: ScalarBuffer<i32>,
    indices: IndexBuf,
    values: ValueBuf,
    batch: RecordBatch,
    /// The part's path, for the error of a lazy check.
    path: Arc<PathBuf>,
    /// The outcome of the O(cells) offset check, run once on first use (see [`Self::check`]).
    checked: Arc<OnceLock<std::result::Result<(), String>>>,
}

impl MatrixBatch {
    /// The full check of the batch's list offsets (monotonic, inside the child arrays), run
    /// once, on first use, and remembered. `Corpus::open` checks only what costs O(1) per
    /// batch (buffer lengths, first and last offsets), so that opening costs O(parts); every
    /// read of cell data must pass here first. A failure is an error naming the part.
    pub fn check(&self) -> Result<()> {
        let r = self.checked.get_or_init(|| {
            for (col, name) in [(0, "indices"), (1, "values")] {
                self.batch
                    .column(col)
                    .to_data()
                    .validate_full()
                    .map_err(|e| format!("{name}: {e}"))?;
            }
            Ok(())
        });
        r.clone().map_err(|msg| {
            Error::corpus(
                self.path.as_path(),
                format!("batch of cells from {}: {msg}", self.first_cell),
            )
        })
    }

    /// Global id of the batch's first cell.
    pub fn first_cell(&self) -> u64 {
        self.first_cell
    }
    /// Cells in the batch.
    pub fn n_cells(&self) -> usize {
        self.offsets.len() - 1
    }
    /// Global ids of the batch's cells.
    pub fn cells(&self) -> Range<u64> {
        self.first_cell..self.first_cell + self.n_cells() as u64
    }
    /// Index of the part (in `manifest.matrix.parts`) holding this batch.
    pub fn part(&self) -> usize {
        self.part
    }
    /// The list offsets (`n_cells + 1` entries) into [`Self::indices`] and [`Self::values`].
    pub fn offsets(&self) -> &[i32] {
        &self.offsets
    }
    /// Non-zeros in the batch.
    pub fn nnz(&self) -> usize {
        (self.offsets[self.offsets.len() - 1] - self.offsets[0]) as usize
    }
    /// Positions of row `row` (local to the batch) in the child arrays.
    #[inline]
    pub fn row_range(&self, row: usize) -> Range<usize> {
        self.offsets[row] as usize..self.offsets[row + 1] as usize
    }
    /// The whole `indices` child array of the batch.
    pub fn indices(&self) -> Indices<'_> {
        match &self.indices {
            IndexBuf::U16(b) => Indices::U16(b),
            IndexBuf::U32(b) => Indices::U32(b),
        }
    }
    /// The whole `values` child array of the batch.
    pub fn values(&self) -> Values<'_> {
        match &self.values {
            ValueBuf::U16(b) => Values::U16(b),
            ValueBuf::U32(b) => Values::U32(b),
            ValueBuf::F32(b) => Values::F32(b),
            ValueBuf::F64(b) => Values::F64(b),
        }
    }
    /// The decoded record batch (`indices`, `values`), zero-copy.
    pub fn record_batch(&self) -> &RecordBatch {
        &self.batch
    }
}

impl<'a> Indices<'a> {
    /// Number of gene ids.
    pub fn len(&self) -> usize {
        match self {
            Indices::U16(s) => s.len(),
            Indices::U32(s) => s.len(),
        }
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Sub-slice, for example one cell's run of a [`MatrixBatch`].
    pub fn slice(&self, r: Range<usize>) -> Indices<'a> {
        match *self {
            Indices::U16(s) => Indices::U16(&s[r]),
            Indices::U32(s) => Indices::U32(&s[r]),
        }
    }
    /// Gene id at position `i`.
    #[inline]
    pub fn get(&self, i: usize) -> u32 {
        match self {
            Indices::U16(s) => s[i] as u32,
            Indices::U32(s) => s[i],
        }
    }
    /// The gene ids widened to u32 (allocates; for tests and small cells).
    pub fn to_u32_vec(&self) -> Vec<u32> {
        match self {
            Indices::U16(s) => s.iter().map(|&x| x as u32).collect(),
            Indices::U32(s) => s.to_vec(),
        }
    }
}

impl<'a> Values<'a> {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Values::U16(s) => s.len(),
            Values::U32(s) => s.len(),
            Values::F32(s) => s.len(),
            Values::F64(s) => s.len(),
        }
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Sub-slice, for example one cell's run of a [`MatrixBatch`].
    pub fn slice(&self, r: Range<usize>) -> Values<'a> {
        match *self {
            Values::U16(s) => Values::U16(&s[r]),
            Values::U32(s) => Values::U32(&s[r]),
            Values::F32(s) => Values::F32(&s[r]),
            Values::F64(s) => Values::F64(&s[r]),
        }
    }
    /// Value at position `i`, widened to f64 (exact for every stored type).
    #[inline]
    pub fn get(&self, i: usize) -> f64 {
        match self {
            Values::U16(s) => s[i] as f64,
            Values::U32(s) => s[i] as f64,
            Values::F32(s) => s[i] as f64,
            Values::F64(s) => s[i],
        }
    }
    /// The values widened to f64 (allocates; for tests and small cells).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        (0..self.len()).map(|i| self.get(i)).collect()
    }
}

/// A batch of the matrix as a reader holds it: a view of a mapped (hot) part, or a decoded
/// chunk of a cold part. Dereferences to [`MatrixBatch`].
#[derive(Clone)]
pub enum BatchRef<'a> {
    /// A batch of a hot part, viewing the mapping.
    Mapped(&'a MatrixBatch),
    /// A chunk of a cold part, decompressed into memory (shared with the corpus's cache).
    Decoded(Arc<MatrixBatch>),
}

impl std::ops::Deref for BatchRef<'_> {
    type Target = MatrixBatch;
    #[inline]
    fn deref(&self) -> &MatrixBatch {
        match self {
            BatchRef::Mapped(b) => b,
            BatchRef::Decoded(b) => b,
        }
    }
}

/// One batch of the matrix as the corpus lists it: mapped, or a cold chunk decoded on use.
pub(crate) enum Slot {
    Mapped(MatrixBatch),
    Cold(ColdChunk),
}

impl Slot {
    pub(crate) fn first_cell(&self) -> u64 {
        match self {
            Slot::Mapped(b) => b.first_cell,
            Slot::Cold(c) => c.first_cell(),
        }
    }
    pub(crate) fn n_cells(&self) -> usize {
        match self {
            Slot::Mapped(b) => b.n_cells(),
            Slot::Cold(c) => c.n_cells(),
        }
    }
    pub(crate) fn nnz(&self) -> usize {
        match self {
            Slot::Mapped(b) => b.nnz(),
            Slot::Cold(c) => c.nnz(),
        }
    }
    pub(crate) fn part(&self) -> usize {
        match self {
            Slot::Mapped(b) => b.part,
            Slot::Cold(c) => c.part(),
        }
    }
    /// The batch, its offsets checked; a cold chunk is decoded (or taken from the cache).
    pub(crate) fn load(&self) -> Result<BatchRef<'_>> {
        match self {
            Slot::Mapped(b) => {
                b.check()?;
                Ok(BatchRef::Mapped(b))
            }
            Slot::Cold(c) => Ok(BatchRef::Decoded(c.get()?)),
        }
    }
}

/// Where a cell lives: its batch (index into the corpus's batches, see [`Corpus::batch`]) and
/// row within the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellLocation {
    pub batch: usize,
    pub row: usize,
}

/// Mapped parts, decoded batches and the start cell of each batch.
pub(crate) struct Matrix {
    pub(crate) maps: Vec<Arc<Mmap>>,
    pub(crate) batches: Vec<Slot>,
    pub(crate) starts: Vec<u64>,
    /// Some chunks are read from object storage when used (see [`Corpus::prefetch`]).
    pub(crate) lazy: bool,
}

impl Corpus {
    /// Opens a corpus: parses and schema-checks the manifest, checks the format version, that
    /// every listed file exists with its listed size and stays inside the directory, maps the
    /// parts and decodes their batches with no copy. Does not hash (see [`super::validate`]).
    ///
    /// ```no_run
    /// let corpus = cellarrow::Corpus::open("corpus")?;
    /// let genes = corpus.indices(0);
    /// let values = corpus.values(0);
    /// assert_eq!(genes.len(), values.len());
    /// # Ok::<(), cellarrow::Error>(())
    /// ```
    pub fn open(dir: impl AsRef<Path>) -> Result<Corpus> {
        // A URL (`s3://bucket/corpus`, `file:///dir`): see `Corpus::open_url`.
        #[cfg(feature = "remote")]
        if let Some(url) = dir.as_ref().to_str().filter(|s| crate::store::is_url(s)) {
            return Corpus::open_url(url);
        }
        Self::open_from_part(dir.as_ref(), 0)
    }

    /// The local corpus at `dir` with only its parts from `first_part` on (the earlier ones
    /// need not be on disk): for work over the cells an append adds, whose old parts may be
    /// in object storage. Its batches are those of the opened parts only.
    pub(crate) fn open_from_part(dir: &Path, first_part: usize) -> Result<Corpus> {
        let root = dir.to_path_buf();
        let manifest = Manifest::read(&root)?;
        let absent: std::collections::HashSet<&str> = manifest.matrix.parts[..first_part]
            .iter()
            .map(|p| p.path.as_str())
            .collect();
        check_files(
            &root,
            manifest
                .files
                .iter()
                .filter(|f| !absent.contains(f.path.as_str())),
        )?;
        let matrix = open_matrix(&root, &manifest, first_part)?;
        Ok(Corpus {
            root,
            manifest,
            matrix,
        })
    }

    /// Fetches what `cells` need from object storage before they are read: the chunks of cold
    /// parts of a corpus opened from a URL, with concurrent, coalesced ranged GETs across the
    /// parts they touch (the loader calls this for each batch; reading without it fetches one
    /// chunk at a time). Chunks decoded or in the node cache already are skipped; a no-op for
    /// a local corpus and for parts fetched whole at open.
    pub fn prefetch(&self, cells: &[u64]) -> Result<()> {
        #[cfg(feature = "remote")]
        if self.matrix.lazy {
            return self.prefetch_remote(cells);
        }
        let _ = cells;
        Ok(())
    }

    /// Starts fetching what `cells` will need, as [`Corpus::prefetch`] does, and returns at
    /// once: the loader calls this for the batches it will gather next, so that their requests
    /// are in flight while it works. Needs the node cache (the fetched chunks wait there); a
    /// no-op otherwise and for a local corpus. A failed fetch is retried, and reported, by
    /// the read that needs the chunk.
    pub fn read_ahead(&self, cells: &[u64]) {
        #[cfg(feature = "remote")]
        if self.matrix.lazy {
            self.read_ahead_remote(cells);
        }
        let _ = cells;
    }

    /// Whether [`Corpus::read_ahead`] does anything for this corpus.
    pub fn reads_ahead(&self) -> bool {
        self.matrix.lazy
    }

    /// Batches of the matrix, over every part in cell order (the record batches of hot parts,
    /// the chunks of cold ones).
    pub fn n_batches(&self) -> usize {
        self.matrix.batches.len()
    }

    /// Batch `i < n_batches()`, its offsets checked: a view of the mapping for a hot part, a
    /// decoded chunk (from a bounded cache, decompressed on a miss) for a cold one. A corrupt
    /// part is an error naming it (and the chunk). Panics if `i >= n_batches()`.
    #[inline]
    pub fn batch(&self, i: usize) -> Result<BatchRef<'_>> {
        self.matrix.batches[i].load()
    }

    /// The global ids of the cells of batch `i`, without decoding it.
    pub fn batch_cells(&self, i: usize) -> Range<u64> {
        let b = &self.matrix.batches[i];
        b.first_cell()..b.first_cell() + b.n_cells() as u64
    }

    /// The part (index in `manifest.matrix.parts`) holding batch `i`.
    pub fn batch_part(&self, i: usize) -> usize {
        self.matrix.batches[i].part()
    }

    /// Non-zeros of batch `i`, without decoding it.
    pub fn batch_nnz(&self, i: usize) -> usize {
        self.matrix.batches[i].nnz()
    }

    /// The batch and row holding `cell`. Panics if `cell >= n_cells` (a caller bug).
    #[inline]
    pub fn locate(&self, cell: u64) -> CellLocation {
        assert!(
            cell < self.manifest.n_cells,
            "cell {cell} out of range (corpus has {} cells)",
            self.manifest.n_cells
        );
        let batch = self.matrix.starts.partition_point(|&s| s <= cell) - 1;
        CellLocation {
            batch,
            row: (cell - self.matrix.starts[batch]) as usize,
        }
    }

    /// The batch holding `cell`, its offsets checked (see [`MatrixBatch::check`]).
    /// Panics if `cell >= n_cells` (a caller bug); a corrupt part is an error naming it.
    pub fn checked_batch(&self, cell: u64) -> Result<(BatchRef<'_>, usize)> {
        let loc = self.locate(cell);
        Ok((self.batch(loc.batch)?, loc.row))
    }

    /// The checked batch at `loc`, for the infallible accessors: a corrupt part found here
    /// panics with the error naming it (use [`Self::checked_batch`] to get it as an error).
    /// A cold chunk read here stays decoded for the corpus's lifetime (the slices lent out
    /// borrow it); bounded readers use [`Self::batch`] or [`Self::checked_batch`].
    fn batch_or_panic(&self, loc: CellLocation) -> &MatrixBatch {
        let r = match &self.matrix.batches[loc.batch] {
            Slot::Mapped(b) => b.check().map(|()| b),
            Slot::Cold(c) => c.pinned(),
        };
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Gene ids of `cell`, zero-copy for a hot part. Panics if `cell >= n_cells` (a caller
    /// bug) or if the cell's part is corrupt (see [`Self::checked_batch`]). On a cold part the
    /// cell's chunk is decoded and kept for the corpus's lifetime; code that reads many cells
    /// of cold parts should use [`Self::checked_batch`], whose memory is bounded.
    #[inline]
    pub fn indices(&self, cell: u64) -> Indices<'_> {
        let loc = self.locate(cell);
        let b = self.batch_or_panic(loc);
        b.indices().slice(b.row_range(loc.row))
    }

    /// Values of `cell`, zero-copy. Panics if `cell >= n_cells`.
    #[inline]
    pub fn values(&self, cell: u64) -> Values<'_> {
        let loc = self.locate(cell);
        let b = self.batch_or_panic(loc);
        b.values().slice(b.row_range(loc.row))
    }

    /// Non-zeros of `cell`. Panics as [`Self::indices`] does.
    #[inline]
    pub fn row_nnz(&self, cell: u64) -> usize {
        let loc = self.locate(cell);
        match self.batch(loc.batch) {
            Ok(b) => b.row_range(loc.row).len(),
            Err(e) => panic!("{e}"),
        }
    }

    /// The matrix as Arrow record batches (`indices`, `values`) of [`Self::matrix_schema`],
    /// in cell order; for export to Python or IPC. Batches of hot parts stored in those types
    /// are zero-copy views of the mapped parts; those of parts with narrower types (a corpus
    /// grown by appends) are widened into memory, and cold chunks are decompressed into it.
    /// Checks every batch first (O(cells)); a corrupt part is an error naming it.
    pub fn matrix_record_batches(&self) -> Result<Vec<RecordBatch>> {
        let schema = self.matrix_schema();
        self.matrix
            .batches
            .iter()
            .map(|b| {
                let b = b.load()?;
                if b.batch.schema().fields() == schema.fields() {
                    return Ok(b.batch.clone());
                }
                let cols = b
                    .batch
                    .columns()
                    .iter()
                    .zip(schema.fields())
                    .map(|(c, f)| arrow::compute::cast(c, f.data_type()))
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .expect("a part's types widen losslessly to the manifest's");
                Ok(RecordBatch::try_new(schema.clone(), cols)
                    .expect("widened columns match the matrix schema"))
            })
            .collect()
    }

    /// The Arrow schema of the matrix: the manifest's index and value types, to which every
    /// part's own types widen losslessly.
    pub fn matrix_schema(&self) -> SchemaRef {
        part_schema(self.manifest.index_type, self.manifest.value_type)
    }

    /// Absolute path of a file listed in the manifest (for example a part).
    pub fn file_path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
}

/// Every file of `files`: inside the directory, a regular file, of the listed size.
pub(crate) fn check_files<'a>(
    root: &Path,
    files: impl IntoIterator<Item = &'a FileEntry>,
) -> Result<()> {
    for f in files {
        let p = resolve(root, &f.path)?;
        let md = std::fs::metadata(&p).map_err(|e| Error::io(&p, "reading metadata", e))?;
        if !md.is_file() {
            return Err(Error::corpus(
                root.join(&f.path),
                "listed in manifest.json but is not a regular file",
            ));
        }
        if md.len() != f.bytes {
            return Err(Error::corpus(
                root.join(&f.path),
                format!("is {} bytes, manifest.json says {}", md.len(), f.bytes),
            ));
        }
    }
    Ok(())
}

/// The parts from `first_part` on, mapped and decoded.
pub(crate) fn open_matrix(root: &Path, manifest: &Manifest, first_part: usize) -> Result<Matrix> {
    let mut m = Matrix {
        maps: Vec::new(),
        batches: Vec::new(),
        starts: Vec::new(),
        lazy: false,
    };
    for (pi, part) in manifest.matrix.parts.iter().enumerate().skip(first_part) {
        let path = root.join(&part.path);
        let file =
            std::fs::File::open(&path).map_err(|e| Error::io(&path, "opening matrix part", e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io(&path, "reading metadata", e))?
            .len();
        if len == 0 {
            return Err(Error::corpus(
                &path,
                "matrix part is empty (no Arrow stream)",
            ));
        }
        // Safety: corpus files are immutable once written; a concurrent writer breaks the
        // format's contract, as it would for any reader of mapped Arrow data.
        let map =
            Arc::new(unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&path, "mapping", e))?);
        let batches = decode_part(&path, &map, manifest, part, pi)?;
        for b in batches {
            m.starts.push(b.first_cell());
            m.batches.push(b);
        }
        m.maps.push(map);
    }
    Ok(m)
}

thread_local! {
    /// Set while this thread decodes a part under `catch_unwind`.
    static DECODING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// `catch_unwind` for decoding a part: a panic inside Arrow on corrupt input becomes an error
/// and prints nothing (the panic hook is wrapped once to stay quiet on this thread meanwhile;
/// every other panic still reaches the previous hook).
pub(crate) fn catch_quietly<R>(
    f: impl FnOnce() -> R + std::panic::UnwindSafe,
) -> std::thread::Result<R> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !DECODING.with(|d| d.get()) {
                previous(info)
            }
        }));
    });
    let was = DECODING.with(|d| d.replace(true));
    let r = catch_unwind(f);
    DECODING.with(|d| d.set(was));
    r
}

/// The text of a caught panic.
pub(crate) fn panic_message(p: &Box<dyn std::any::Any + Send>) -> &str {
    p.downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| p.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic")
}

/// Decodes one mapped part and checks it against its manifest entry: a hot part's batches
/// with no copy, a cold part's chunk index (its chunks are decoded on use).
pub(crate) fn decode_part(
    path: &Path,
    map: &Arc<Mmap>,
    manifest: &Manifest,
    part: &PartEntry,
    part_index: usize,
) -> Result<Vec<Slot>> {
    if part.layout == PartLayout::Cold {
        let chunks = open_cold_part(path, map, manifest, part, part_index)?;
        return Ok(chunks.into_iter().map(Slot::Cold).collect());
    }
    let (index_type, value_type) = manifest.part_types(part_index);
    let expected = part_schema(index_type, value_type);
    let decoded = decode_mapped(path, map, true, |schema| {
        check_schema(path, schema, &expected)
    })?;
    let path_arc = Arc::new(path.to_path_buf());

    let mut cell = part.first_cell;
    let mut nnz = 0u64;
    let mut out = Vec::with_capacity(decoded.len());
    for (bi, batch) in decoded.into_iter().enumerate() {
        if batch.schema().fields() != expected.fields() {
            return Err(Error::corpus(
                path,
                format!("batch {bi}: schema differs from the stream schema"),
            ));
        }
        if batch.num_rows() == 0 {
            continue;
        }
        if batch.num_rows() as u64 > manifest.matrix.batch_rows {
            return Err(Error::corpus(
                path,
                format!(
                    "batch {bi} (cell {cell}) holds {} rows, more than batch_rows {}",
                    batch.num_rows(),
                    manifest.matrix.batch_rows
                ),
            ));
        }
        let mb = typed_batch(path, &path_arc, batch, cell, part_index, bi)?;
        cell += mb.n_cells() as u64;
        nnz += mb.nnz() as u64;
        out.push(Slot::Mapped(mb));
    }
    check_part_counts(path, part, cell - part.first_cell, nnz)?;
    Ok(out)
}

/// A decoded part must hold the cells and non-zeros its manifest entry says.
pub(crate) fn check_part_counts(
    path: &Path,
    part: &PartEntry,
    n_cells: u64,
    nnz: u64,
) -> Result<()> {
    if n_cells != part.n_cells || nnz != part.nnz {
        return Err(Error::corpus(
            path,
            format!(
                "holds {n_cells} cells and {nnz} non-zeros, manifest.json says {} and {}",
                part.n_cells, part.nnz
            ),
        ));
    }
    Ok(())
}

/// The record batches of the Arrow IPC stream in `map` (a whole file), with no copy: their
/// buffers point into the mapping and keep it alive. `check` sees the stream's schema before
/// any batch is decoded. Corrupt input is an error naming `path`, never a panic.
///
/// With `lazy`, Arrow's full validation is skipped and only the checks that cost O(1) per
/// array run here (buffer lengths, first and last list offsets: `ArrayData::validate`); the
/// caller must run the O(n) checks (`validate_full`) before reading the values.
pub(crate) fn decode_mapped(
    path: &Path,
    map: &Arc<Mmap>,
    lazy: bool,
    check: impl Fn(&SchemaRef) -> Result<()>,
) -> Result<Vec<RecordBatch>> {
    let ptr =
        NonNull::new(map.as_ptr() as *mut u8).expect("a non-empty mapping has a non-null address");
    // Safety: the buffer keeps the mapping alive through its owner and only reads from it.
    let mut buf = unsafe { Buffer::from_custom_allocation(ptr, map.len(), map.clone()) };
    let arrow_err = |e: arrow::error::ArrowError| {
        Error::corpus(path, format!("not a valid Arrow IPC stream: {e}"))
    };
    // Arrow reports most corruption as errors, but a few malformed inputs panic inside it.
    catch_quietly(AssertUnwindSafe(|| -> Result<Vec<RecordBatch>> {
        if lazy {
            return decode_lists_lazily(path, &buf, &check);
        }
        let mut decoder = StreamDecoder::new().with_require_alignment(true);
        let mut out = Vec::new();
        let mut checked_schema = false;
        while !buf.is_empty() {
            let batch = decoder.decode(&mut buf).map_err(arrow_err)?;
            if !checked_schema {
                if let Some(schema) = decoder.schema() {
                    check(&schema)?;
                    checked_schema = true;
                }
            }
            if let Some(b) = batch {
                out.push(b);
            }
        }
        decoder
            .finish()
            .map_err(|e| Error::corpus(path, format!("truncated Arrow IPC stream: {e}")))?;
        if !checked_schema {
            return Err(Error::corpus(path, "Arrow IPC stream has no schema"));
        }
        Ok(out)
    }))
    .map_err(|p| {
        let msg = p
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| p.downcast_ref::<&str>().copied())
            .unwrap_or("unknown panic");
        Error::corpus(path, format!("malformed Arrow IPC stream ({msg})"))
    })?
}

/// Decodes an IPC stream of record batches whose columns are all non-null lists of a
/// non-null primitive type (the matrix parts), with no copy and O(1) checks per array:
/// buffer bounds and alignment, no nulls, first offset >= 0, last offset <= child length,
/// first <= last. The middle offsets are left to [`MatrixBatch::check`] on first use: Arrow
/// 59's `StreamDecoder` does not pass its skip-validation flag to record batches, so the
/// messages are framed here and the arrays built from the body buffers.
fn decode_lists_lazily(
    path: &Path,
    buf: &Buffer,
    check: &impl Fn(&SchemaRef) -> Result<()>,
) -> Result<Vec<RecordBatch>> {
    use arrow::array::{ListArray, PrimitiveArray};
    use arrow::buffer::OffsetBuffer;
    use arrow::ipc::{root_as_message, MessageHeader};
    let bad = |msg: String| Error::corpus(path, format!("not a valid Arrow IPC stream: {msg}"));
    let bytes = buf.as_slice();
    let word = |at: usize| -> Result<u32> {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
            .ok_or_else(|| bad(format!("truncated at byte {at}")))
    };
    let mut at = 0usize;
    let mut schema: Option<SchemaRef> = None;
    let mut out = Vec::new();
    loop {
        if at == bytes.len() {
            break; // a stream may end without its end-of-stream marker
        }
        let mut len = word(at)?;
        at += 4;
        if len == 0xFFFF_FFFF {
            len = word(at)?;
            at += 4;
        }
        if len == 0 {
            break;
        }
        let meta = bytes
            .get(at..at + len as usize)
            .ok_or_else(|| bad(format!("message at byte {at} runs past the end")))?;
        let msg = root_as_message(meta).map_err(|e| bad(format!("message at byte {at}: {e}")))?;
        at += len as usize;
        let body_len =
            usize::try_from(msg.bodyLength()).map_err(|_| bad("negative body length".into()))?;
        if body_len > bytes.len() - at {
            return Err(bad(format!("body at byte {at} runs past the end")));
        }
        let body = buf.slice_with_length(at, body_len);
        at += body_len;
        match msg.header_type() {
            MessageHeader::Schema => {
                let fb = msg
                    .header_as_schema()
                    .ok_or_else(|| bad("bad schema message".into()))?;
                let s = Arc::new(arrow::ipc::convert::fb_to_schema(fb));
                check(&s)?;
                schema = Some(s);
            }
            MessageHeader::RecordBatch => {
                let schema = schema
                    .clone()
                    .ok_or_else(|| bad("record batch before the schema".into()))?;
                let rb = msg
                    .header_as_record_batch()
                    .ok_or_else(|| bad("bad record batch message".into()))?;
                if rb.compression().is_some() {
                    return Err(bad("compressed record batches are not supported".into()));
                }
                let nodes = rb.nodes().ok_or_else(|| bad("no field nodes".into()))?;
                let bufs = rb.buffers().ok_or_else(|| bad("no buffers".into()))?;
                let n = schema.fields().len();
                if nodes.len() != 2 * n || bufs.len() != 4 * n {
                    return Err(bad("unexpected number of field nodes or buffers".into()));
                }
                let rows =
                    usize::try_from(rb.length()).map_err(|_| bad("negative length".into()))?;
                let region = |i: usize, elems: usize, width: usize| -> Result<Buffer> {
                    let b = bufs.get(i);
                    let (off, blen) = (b.offset(), b.length());
                    let need = elems
                        .checked_mul(width)
                        .ok_or_else(|| bad("too long".into()))?;
                    if off < 0
                        || blen < 0
                        || (blen as usize) < need
                        || off as usize + need > body_len
                    {
                        return Err(bad(format!("buffer {i} is out of bounds")));
                    }
                    let r = body.slice_with_length(off as usize, need);
                    if !(r.as_ptr() as usize).is_multiple_of(width) {
                        return Err(bad(format!("buffer {i} is not aligned")));
                    }
                    Ok(r)
                };
                let mut cols: Vec<ArrayRef> = Vec::with_capacity(n);
                for (c, field) in schema.fields().iter().enumerate() {
                    let (list, child) = (nodes.get(2 * c), nodes.get(2 * c + 1));
                    if list.null_count() != 0 || child.null_count() != 0 {
                        return Err(bad(format!("column {c} contains nulls")));
                    }
                    if list.length() != rb.length() || child.length() < 0 {
                        return Err(bad(format!("column {c} has a wrong length")));
                    }
                    let clen = child.length() as usize;
                    let offsets =
                        ScalarBuffer::<i32>::new(region(4 * c + 1, rows + 1, 4)?, 0, rows + 1);
                    let (first, last) = (offsets[0], offsets[rows]);
                    if first < 0 || last < first || last as usize > clen {
                        return Err(bad(format!(
                            "column {c}: list offsets {first}..{last} outside 0..{clen}"
                        )));
                    }
                    let DataType::List(item) = field.data_type() else {
                        return Err(bad(format!("column {c} is not a list")));
                    };
                    let child: ArrayRef = match item.data_type() {
                        DataType::UInt16 => Arc::new(PrimitiveArray::<UInt16Type>::new(
                            ScalarBuffer::new(region(4 * c + 3, clen, 2)?, 0, clen),
                            None,
                        )),
                        DataType::UInt32 => Arc::new(PrimitiveArray::<UInt32Type>::new(
                            ScalarBuffer::new(region(4 * c + 3, clen, 4)?, 0, clen),
                            None,
                        )),
                        DataType::Float32 => Arc::new(PrimitiveArray::<Float32Type>::new(
                            ScalarBuffer::new(region(4 * c + 3, clen, 4)?, 0, clen),
                            None,
                        )),
                        DataType::Float64 => Arc::new(PrimitiveArray::<Float64Type>::new(
                            ScalarBuffer::new(region(4 * c + 3, clen, 8)?, 0, clen),
                            None,
                        )),
                        t => return Err(bad(format!("column {c} has items of type {t}"))),
                    };
                    // Safety: first and last offsets were checked above; the middle ones are
                    // checked (`validate_full`) by `MatrixBatch::check` before any read
                    // through them.
                    let offsets = unsafe { OffsetBuffer::new_unchecked(offsets) };
                    let list = ListArray::try_new(item.clone(), offsets, child, None)
                        .map_err(|e| bad(format!("column {c}: {e}")))?;
                    cols.push(Arc::new(list));
                }
                let batch = RecordBatch::try_new(schema, cols).map_err(|e| bad(e.to_string()))?;
                out.push(batch);
            }
            t => return Err(bad(format!("unsupported message {t:?}"))),
        }
    }
    if schema.is_none() {
        return Err(Error::corpus(path, "Arrow IPC stream has no schema"));
    }
    Ok(out)
}

pub(crate) fn check_schema(path: &Path, got: &SchemaRef, expected: &SchemaRef) -> Result<()> {
    let describe = |s: &SchemaRef| {
        s.fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::List(item) => format!(
                    "{}: List<{}{}>",
                    f.name(),
                    item.data_type(),
                    if item.is_nullable() { ", nullable" } else { "" }
                ),
                other => format!("{}: {other}", f.name()),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let ok = got.fields().len() == expected.fields().len()
        && got
            .fields()
            .iter()
            .zip(expected.fields().iter())
            .all(|(g, e)| {
                g.name() == e.name()
                    && match (g.data_type(), e.data_type()) {
                        (DataType::List(gi), DataType::List(ei)) => {
                            gi.data_type() == ei.data_type() && !gi.is_nullable()
                        }
                        _ => false,
                    }
            });
    if ok {
        Ok(())
    } else {
        Err(Error::corpus(
            path,
            format!(
                "matrix part schema is ({}), expected ({}) as manifest.json says",
                describe(got),
                describe(expected)
            ),
        ))
    }
}

/// Extracts the offsets and typed child buffers (views of the mapping) of one batch.
pub(crate) fn typed_batch(
    path: &Path,
    path_arc: &Arc<PathBuf>,
    batch: RecordBatch,
    first_cell: u64,
    part: usize,
    bi: usize,
) -> Result<MatrixBatch> {
    let bad = |msg: String| {
        Err(Error::corpus(
            path,
            format!("batch {bi} (cells from {first_cell}): {msg}"),
        ))
    };
    let ind = batch.column(0).as_list_opt::<i32>();
    let val = batch.column(1).as_list_opt::<i32>();
    let (Some(ind), Some(val)) = (ind, val) else {
        return bad("columns are not lists".into());
    };
    if ind.null_count() != 0
        || val.null_count() != 0
        || ind.values().null_count() != 0
        || val.values().null_count() != 0
    {
        return bad("contains nulls".into());
    }
    let offsets = ind.offsets().inner().clone();
    let voff = val.offsets();
    // Rows read values through the `indices` offsets; both lists must describe the same runs.
    if ind.values().len() != val.values().len()
        || offsets.first() != voff.first()
        || offsets.last() != voff.last()
    {
        return bad("indices and values have different list offsets".into());
    }
    let indices = match ind.values().data_type() {
        DataType::UInt16 => IndexBuf::U16(prim::<UInt16Type>(ind.values())),
        DataType::UInt32 => IndexBuf::U32(prim::<UInt32Type>(ind.values())),
        t => return bad(format!("indices have type {t}")),
    };
    let values = match val.values().data_type() {
        DataType::UInt16 => ValueBuf::U16(prim::<UInt16Type>(val.values())),
        DataType::UInt32 => ValueBuf::U32(prim::<UInt32Type>(val.values())),
        DataType::Float32 => ValueBuf::F32(prim::<Float32Type>(val.values())),
        DataType::Float64 => ValueBuf::F64(prim::<Float64Type>(val.values())),
        t => return bad(format!("values have type {t}")),
    };
    Ok(MatrixBatch {
        first_cell,
        part,
        offsets,
        indices,
        values,
        batch,
        path: path_arc.clone(),
        checked: Arc::new(OnceLock::new()),
    })
}

fn prim<T: arrow::datatypes::ArrowPrimitiveType>(a: &ArrayRef) -> ScalarBuffer<T::Native> {
    a.as_primitive::<T>().values().clone()
}

/// The Arrow list array of column `col` of a batch, for tests of zero-copy decoding.
#[cfg(test)]
pub(crate) fn list_column(b: &MatrixBatch, col: usize) -> &ListArray {
    b.batch.column(col).as_list::<i32>()
}

#[allow(unused)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Corpus>();
    is::<MatrixBatch>();
    let _ = (IndexType::Uint16, ValueType::Uint16);
}
