//! Cold matrix parts: an Arrow IPC file whose record batches are zstd-compressed chunks of
//! cells, gene ids delta-coded within each cell. Opening reads the footer and each chunk's
//! message header (no decompression); a chunk is decompressed on first use into an owned
//! [`MatrixBatch`] and kept in a bounded, process-wide cache of decoded chunks.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arrow::array::{ArrayRef, AsArray, ListArray, PrimitiveArray};
use arrow::buffer::{Buffer, ScalarBuffer};
use arrow::datatypes::ArrowNativeType;
use arrow::datatypes::{
    ArrowPrimitiveType, Float32Type, Float64Type, UInt16Type, UInt32Type, UInt8Type,
};
use arrow::ipc::reader::FileDecoder;
use arrow::ipc::{Block, CompressionType, MetadataVersion};
use arrow::record_batch::RecordBatch;
use memmap2::Mmap;

use super::part::cold_part_schema_interleaved;
use super::part::item_field;
use super::reader::{
    catch_quietly, check_part_counts, check_schema, panic_message, typed_batch, MatrixBatch,
};
use super::{
    cold_part_schema, part_schema, ChunkInfo, IndexType, Manifest, PartEntry, ValueType,
    CHUNKS_METADATA_KEY,
};
use crate::error::{Error, Result};

/// Decoded chunks kept by default: about a quarter of a GiB, a few hundred chunks of the
/// 50,000 x 20,000 cohort. `CELLARROW_COLD_CACHE_MB` or [`set_cold_cache_bytes`] change it.
const DEFAULT_CACHE_BYTES: usize = 256 << 20;

/// The bytes of decoded chunks the process keeps (least recently used ones go first; the
/// chunk being read is kept whatever its size). Takes effect at the next insertion.
pub fn set_cold_cache_bytes(bytes: usize) {
    cache().budget = bytes;
}

struct Cache {
    budget: usize,
    used: usize,
    tick: u64,
    entries: HashMap<u64, (Arc<MatrixBatch>, usize, u64)>,
}

fn cache() -> std::sync::MutexGuard<'static, Cache> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    CACHE
        .get_or_init(|| {
            let budget = std::env::var("CELLARROW_COLD_CACHE_MB")
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .map_or(DEFAULT_CACHE_BYTES, |mb| mb << 20);
            Mutex::new(Cache {
                budget,
                used: 0,
                tick: 0,
                entries: HashMap::new(),
            })
        })
        .lock()
        // The cache holds no invariant a panic elsewhere could break half-way.
        .unwrap_or_else(|e| e.into_inner())
}

impl Cache {
    fn get(&mut self, id: u64) -> Option<Arc<MatrixBatch>> {
        self.tick += 1;
        let tick = self.tick;
        self.entries.get_mut(&id).map(|e| {
            e.2 = tick;
            e.0.clone()
        })
    }

    fn insert(&mut self, id: u64, b: Arc<MatrixBatch>, bytes: usize) {
        self.tick += 1;
        if let Some(old) = self.entries.insert(id, (b, bytes, self.tick)) {
            self.used -= old.1;
        }
        self.used += bytes;
        while self.used > self.budget && self.entries.len() > 1 {
            let (&oldest, _) = self
                .entries
                .iter()
                .filter(|(&k, _)| k != id)
                .min_by_key(|(_, e)| e.2)
                .expect("more than one entry");
            self.remove(oldest);
        }
    }

    #[cfg(feature = "remote")]
    fn contains(&self, id: u64) -> bool {
        self.entries.contains_key(&id)
    }

    fn remove(&mut self, id: u64) {
        if let Some(e) = self.entries.remove(&id) {
            self.used -= e.1;
        }
    }
}

/// Where the bytes of a cold part's chunks come from.
#[derive(Clone)]
pub(crate) enum ChunkSource {
    /// The whole part, mapped.
    Mapped(Arc<Mmap>),
    /// A part in object storage, read one chunk (or a run of chunks) at a time.
    #[cfg(feature = "remote")]
    Remote(Arc<super::remote::LazyPart>),
}

/// One chunk of a cold part: where its message lies in the file and which cells it holds.
pub(crate) struct ColdChunk {
    /// Key in the cache, unique in the process.
    id: u64,
    source: ChunkSource,
    /// The sha256 of the chunk's block as the footer lists it (read from object storage only,
    /// where it is checked on every fetch).
    sha256: Option<[u8; 32]>,
    path: Arc<PathBuf>,
    part: usize,
    /// The chunk's number within its part (its record batch in the footer).
    index: usize,
    first_cell: u64,
    n_cells: usize,
    nnz: usize,
    block: Block,
    version: MetadataVersion,
    /// Byte planes ([`cold_part_schema`]) or whole numbers (parts written before them).
    planes: bool,
    index_type: IndexType,
    value_type: ValueType,
    /// The decoded chunk held for the corpus's lifetime, for the accessors that lend slices
    /// (`Corpus::indices`); everything else goes through the bounded cache.
    pinned: OnceLock<std::result::Result<Arc<MatrixBatch>, String>>,
}

impl Drop for ColdChunk {
    fn drop(&mut self) {
        cache().remove(self.id);
    }
}

impl ColdChunk {
    pub(crate) fn first_cell(&self) -> u64 {
        self.first_cell
    }
    pub(crate) fn n_cells(&self) -> usize {
        self.n_cells
    }
    pub(crate) fn nnz(&self) -> usize {
        self.nnz
    }
    pub(crate) fn part(&self) -> usize {
        self.part
    }

    /// The byte range of the chunk's block (message header and body) in its part.
    pub(crate) fn range(&self) -> std::ops::Range<u64> {
        let start = self.block.offset() as u64;
        start..start + self.block.metaDataLength() as u64 + self.block.bodyLength() as u64
    }

    /// The part in object storage this chunk is read from, and the chunk's checksum, unless the
    /// chunk is decoded in the cache already (then nothing needs fetching).
    #[cfg(feature = "remote")]
    pub(crate) fn to_fetch(&self) -> Option<(&Arc<super::remote::LazyPart>, [u8; 32])> {
        match (&self.source, self.sha256) {
            (ChunkSource::Remote(p), Some(sha)) if !cache().contains(self.id) => Some((p, sha)),
            _ => None,
        }
    }

    /// The bytes of the chunk's block.
    fn block_bytes(&self) -> Result<Buffer> {
        match &self.source {
            ChunkSource::Mapped(map) => {
                let ptr = NonNull::new(map.as_ptr() as *mut u8)
                    .expect("a non-empty mapping has a non-null address");
                // Safety: the buffer keeps the mapping alive through its owner and only reads
                // from it.
                let whole = unsafe { Buffer::from_custom_allocation(ptr, map.len(), map.clone()) };
                let r = self.range();
                Ok(whole.slice_with_length(r.start as usize, (r.end - r.start) as usize))
            }
            #[cfg(feature = "remote")]
            ChunkSource::Remote(p) => {
                let sha = self.sha256.expect("a remote chunk has its checksum");
                p.chunk(self.range(), &sha)
            }
        }
    }

    /// The decoded chunk, from the cache or decompressed now.
    pub(crate) fn get(&self) -> Result<Arc<MatrixBatch>> {
        if let Some(b) = cache().get(self.id) {
            return Ok(b);
        }
        let b = Arc::new(self.decode()?);
        let bytes = (self.n_cells + 1) * 4
            + self.nnz * (self.index_type.byte_width() + self.value_type.byte_width());
        cache().insert(self.id, b.clone(), bytes);
        Ok(b)
    }

    /// The decoded chunk, kept for the lifetime of the corpus (see `pinned`).
    pub(crate) fn pinned(&self) -> Result<&MatrixBatch> {
        match self
            .pinned
            .get_or_init(|| self.get().map_err(|e| e.to_string()))
        {
            Ok(b) => Ok(b),
            Err(msg) => Err(Error::corpus(self.path.as_path(), msg.clone())),
        }
    }

    fn err(&self, msg: impl std::fmt::Display) -> Error {
        Error::corpus(
            self.path.as_path(),
            format!(
                "chunk {} (cells from {}): {msg}",
                self.index, self.first_cell
            ),
        )
    }

    /// Decompresses the chunk, undoes the delta coding and checks it: list offsets, equal runs
    /// in both columns, gene ids strictly increasing and within the part's index type, the
    /// cell and non-zero counts of the footer. Corrupt bytes are an error naming the part and
    /// the chunk, never a panic.
    fn decode(&self) -> Result<MatrixBatch> {
        let buf = self.block_bytes()?;
        self.check_lengths(buf.as_slice())?;
        let schema = if self.planes {
            cold_part_schema(self.index_type, self.value_type)
        } else {
            cold_part_schema_interleaved(self.index_type, self.value_type)
        };
        let decoder = FileDecoder::new(schema, self.version);
        let rb = catch_quietly(std::panic::AssertUnwindSafe(|| {
            decoder.read_record_batch(&self.block, &buf)
        }))
        .map_err(|p| self.err(format!("malformed ({})", panic_message(&p))))?
        .map_err(|e| self.err(e))?
        .ok_or_else(|| self.err("not a record batch"))?;
        if rb.num_rows() != self.n_cells {
            return Err(self.err(format!(
                "holds {} cells, its header says {}",
                rb.num_rows(),
                self.n_cells
            )));
        }
        let lists: Vec<&ListArray> = rb
            .columns()
            .iter()
            .map(|c| c.as_list_opt::<i32>())
            .collect::<Option<_>>()
            .ok_or_else(|| self.err("columns are not lists"))?;
        let offsets = lists[0].offsets().clone();
        if lists.iter().any(|l| l.offsets() != &offsets) {
            return Err(self.err("its columns have different list offsets"));
        }
        let (a, b) = (offsets[0] as usize, offsets[self.n_cells] as usize);
        if b - a != self.nnz {
            return Err(self.err(format!(
                "holds {} non-zeros, its header says {}",
                b - a,
                self.nnz
            )));
        }
        let (ids, values) = if self.planes {
            let planes: Vec<&[u8]> = lists
                .iter()
                .map(|l| {
                    Some(
                        l.values()
                            .as_primitive_opt::<UInt8Type>()?
                            .values()
                            .as_ref(),
                    )
                })
                .collect::<Option<_>>()
                .ok_or_else(|| self.err("its planes are not bytes"))?;
            let (idx, val) = planes.split_at(self.index_type.byte_width());
            let ids = match self.index_type {
                IndexType::Uint16 => undelta_planes::<UInt16Type, 2>(idx, &offsets),
                IndexType::Uint32 => undelta_planes::<UInt32Type, 4>(idx, &offsets),
            };
            let values = match self.value_type {
                ValueType::Uint16 => joined::<UInt16Type, 2>(val),
                ValueType::Uint32 => joined::<UInt32Type, 4>(val),
                ValueType::Float32 => joined::<Float32Type, 4>(val),
                ValueType::Float64 => joined::<Float64Type, 8>(val),
            }
            .ok_or_else(|| self.err("its value planes differ in length"))?;
            (ids, values)
        } else {
            let deltas = lists[0].values();
            let ids = match self.index_type {
                IndexType::Uint16 => undelta::<UInt16Type, 2>(deltas, &offsets),
                IndexType::Uint32 => undelta::<UInt32Type, 4>(deltas, &offsets),
            };
            (ids, lists[1].values().clone())
        };
        let ids: ArrayRef = ids.map_err(|cell| {
            self.err(format!(
                "cell {}: gene ids are not strictly increasing or overflow {:?}",
                self.first_cell + cell as u64,
                self.index_type
            ))
        })?;
        let indices = ListArray::try_new(
            item_field(self.index_type.arrow_type()),
            offsets.clone(),
            ids,
            None,
        )
        .map_err(|e| self.err(e))?;
        let values = ListArray::try_new(
            item_field(self.value_type.arrow_type()),
            offsets,
            values,
            None,
        )
        .map_err(|e| self.err(e))?;
        let batch = RecordBatch::try_new(
            part_schema(self.index_type, self.value_type),
            vec![Arc::new(indices), Arc::new(values)],
        )
        .map_err(|e| self.err(e))?;
        let mb = typed_batch(
            self.path.as_path(),
            &self.path,
            batch,
            self.first_cell,
            self.part,
            self.index,
        )?;
        mb.check()?;
        Ok(mb)
    }

    /// Refuses a buffer whose recorded uncompressed length exceeds what the chunk's cells can
    /// hold, before anything is allocated for it: a flipped length byte would otherwise ask
    /// the allocator for terabytes.
    fn check_lengths(&self, bytes: &[u8]) -> Result<()> {
        let meta_len = self.block.metaDataLength() as usize;
        let msg = message_at(bytes, meta_len).map_err(|m| self.err(m))?;
        let rb = msg
            .header_as_record_batch()
            .ok_or_else(|| self.err("not a record batch"))?;
        let body = &bytes[meta_len..];
        let limit = 8 * (self.nnz as u64 + self.n_cells as u64 + 1);
        let Some(bufs) = rb.buffers() else {
            return Err(self.err("no buffers"));
        };
        for (i, b) in bufs.iter().enumerate() {
            let (off, blen) = (b.offset(), b.length());
            if off < 0 || blen < 0 || (off as u64 + blen as u64) > body.len() as u64 {
                return Err(self.err(format!("buffer {i} is out of bounds")));
            }
            if rb.compression().is_some() && blen >= 8 {
                let at = off as usize;
                let n = i64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes"));
                if n != -1 && (n < 0 || n as u64 > limit) {
                    return Err(self.err(format!(
                        "buffer {i} claims {n} bytes uncompressed, more than its cells hold"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// The gene ids of whole-number deltas (cold parts written before byte planes); see
/// [`undelta_words`].
fn undelta<T: ArrowPrimitiveType, const W: usize>(
    deltas: &ArrayRef,
    offsets: &arrow::buffer::OffsetBuffer<i32>,
) -> std::result::Result<ArrayRef, usize> {
    let d = deltas.as_primitive_opt::<T>().ok_or(0usize)?.values();
    undelta_words::<T, W>(d.to_vec().into(), offsets)
}

/// The gene ids of deltas split into `W` byte planes (little-endian); see [`undelta_words`].
fn undelta_planes<T: ArrowPrimitiveType, const W: usize>(
    planes: &[&[u8]],
    offsets: &arrow::buffer::OffsetBuffer<i32>,
) -> std::result::Result<ArrayRef, usize> {
    undelta_words::<T, W>(join_planes::<T, W>(planes).ok_or(0usize)?, offsets)
}

/// Prefix sums of each cell's deltas in `words` (numbers of `T`, `W` bytes), in place: the
/// gene ids. `Err(row)` for a cell whose ids would not strictly increase (a zero delta after
/// the first) or overflow `T`, or whose run lies outside `words`.
fn undelta_words<T: ArrowPrimitiveType, const W: usize>(
    mut words: arrow::buffer::MutableBuffer,
    offsets: &arrow::buffer::OffsetBuffer<i32>,
) -> std::result::Result<ArrayRef, usize> {
    let max = (1u64 << (8 * W)) - 1;
    let ids: &mut [T::Native] = words.typed_data_mut();
    for (row, w) in offsets.windows(2).enumerate() {
        let (a, b) = (w[0] as usize, w[1] as usize);
        let Some(cell) = ids.get_mut(a..b) else {
            return Err(row);
        };
        let Some(first) = cell.first().map(|x| x.as_usize()) else {
            continue;
        };
        // Zero deltas after the first break strict increase; counted, checked once per cell.
        let (mut acc, mut zeros) = (0u64, 0u64);
        for x in cell.iter_mut() {
            let d = x.as_usize() as u64;
            zeros += u64::from(d == 0);
            acc += d;
            *x = T::Native::usize_as(acc as usize);
        }
        if zeros != u64::from(first == 0) || acc > max {
            return Err(row);
        }
    }
    let n = ids.len();
    Ok(Arc::new(PrimitiveArray::<T>::new(
        ScalarBuffer::new(words.into(), 0, n),
        None,
    )))
}

/// The numbers of type `T` (`W` bytes) whose little-endian byte planes are `planes`, in an
/// aligned buffer; `None` unless there are `W` planes of one length.
fn join_planes<T: ArrowPrimitiveType, const W: usize>(
    planes: &[&[u8]],
) -> Option<arrow::buffer::MutableBuffer> {
    let planes: &[&[u8]; W] = planes.try_into().ok()?;
    let n = planes[0].len();
    if planes.iter().any(|p| p.len() != n) || std::mem::size_of::<T::Native>() != W {
        return None;
    }
    let mut out = arrow::buffer::MutableBuffer::from_len_zeroed(n * W);
    let words = out.as_slice_mut().chunks_exact_mut(W);
    // Zipped slices, so that the copies run without bounds checks; the buffer is read as
    // native numbers, which are little-endian on every target Arrow IPC is mapped on here.
    match W {
        2 => {
            for ((d, &a), &b) in words.zip(planes[0]).zip(planes[1]) {
                d[0] = a;
                d[1] = b;
            }
        }
        4 => {
            for ((((d, &a), &b), &c), &e) in words
                .zip(planes[0])
                .zip(planes[1])
                .zip(planes[2])
                .zip(planes[3])
            {
                d[0] = a;
                d[1] = b;
                d[2] = c;
                d[3] = e;
            }
        }
        _ => {
            for (k, d) in words.enumerate() {
                for (p, byte) in d.iter_mut().enumerate() {
                    *byte = planes[p][k];
                }
            }
        }
    }
    Some(out)
}

/// [`join_planes`] as an array.
fn joined<T: ArrowPrimitiveType, const W: usize>(planes: &[&[u8]]) -> Option<ArrayRef> {
    let buf = join_planes::<T, W>(planes)?;
    let n = buf.len() / W;
    Some(Arc::new(PrimitiveArray::<T>::new(
        ScalarBuffer::new(buf.into(), 0, n),
        None,
    )))
}

/// The IPC message whose metadata occupies `bytes[..meta_len]` (continuation marker, length,
/// flatbuffer), verified.
fn message_at(
    bytes: &[u8],
    meta_len: usize,
) -> std::result::Result<arrow::ipc::Message<'_>, String> {
    let meta = bytes
        .get(..meta_len)
        .ok_or_else(|| "message runs past the end".to_string())?;
    let (skip, len) = match meta {
        [0xFF, 0xFF, 0xFF, 0xFF, a, b, c, d, ..] => (8, u32::from_le_bytes([*a, *b, *c, *d])),
        [a, b, c, d, ..] => (4, u32::from_le_bytes([*a, *b, *c, *d])),
        _ => return Err("message is truncated".into()),
    };
    let fb = meta
        .get(skip..skip + len as usize)
        .ok_or_else(|| "message runs past its block".to_string())?;
    arrow::ipc::root_as_message(fb).map_err(|e| format!("bad message: {e}"))
}

/// A cold part's footer, parsed and checked against the part's types.
struct Footer {
    version: MetadataVersion,
    /// Byte planes, or whole numbers (parts written before planes).
    planes: bool,
    blocks: Vec<Block>,
    /// The chunk list of [`CHUNKS_METADATA_KEY`] (parts written before it existed have none).
    chunks: Option<Vec<ChunkInfo>>,
}

/// Parses `tail`, the last bytes of a cold part of `size` bytes from the footer's flatbuffer
/// to the closing magic (or more: the whole file).
fn parse_footer(
    path: &Path,
    tail: &[u8],
    size: u64,
    manifest: &Manifest,
    part_index: usize,
) -> Result<Footer> {
    let bad = |msg: String| Error::corpus(path, format!("not a valid cold part: {msg}"));
    let (index_type, value_type) = manifest.part_types(part_index);
    const MAGIC: &[u8] = b"ARROW1";
    let n = tail.len();
    if n < 10 || &tail[n - 6..] != MAGIC || size < 18 {
        return Err(bad("not an Arrow IPC file (no ARROW1 magic)".into()));
    }
    let footer_len = i32::from_le_bytes(tail[n - 10..n - 6].try_into().expect("4 bytes"));
    if footer_len <= 0 || footer_len as usize > n - 10 || footer_len as u64 > size - 18 {
        return Err(bad(format!("footer length {footer_len} is out of bounds")));
    }
    let at = n - 10 - footer_len as usize;
    let footer = arrow::ipc::root_as_footer(&tail[at..n - 10])
        .map_err(|e| bad(format!("bad footer: {e}")))?;
    let fb_schema = footer.schema().ok_or_else(|| bad("no schema".into()))?;
    let schema = catch_quietly(std::panic::AssertUnwindSafe(|| {
        arrow::ipc::convert::fb_to_schema(fb_schema)
    }))
    .map_err(|p| bad(format!("bad schema ({})", panic_message(&p))))?;
    let schema = Arc::new(schema);
    let planes = schema != cold_part_schema_interleaved(index_type, value_type);
    if planes {
        check_schema(path, &schema, &cold_part_schema(index_type, value_type))?;
    }
    if footer.dictionaries().is_some_and(|d| !d.is_empty()) {
        return Err(bad("has dictionary batches".into()));
    }
    let blocks: Vec<Block> = footer
        .recordBatches()
        .ok_or_else(|| bad("no record batches in the footer".into()))?
        .iter()
        .copied()
        .collect();
    // Every chunk lies before the footer.
    let start = size - 10 - footer_len as u64;
    for (k, block) in blocks.iter().enumerate() {
        let (off, meta, body) = (block.offset(), block.metaDataLength(), block.bodyLength());
        if off < 8
            || meta < 8
            || body < 0
            || (off as u64)
                .checked_add(meta as u64)
                .and_then(|e| e.checked_add(body as u64))
                .is_none_or(|e| e > start)
        {
            return Err(bad(format!("chunk {k}: block is out of bounds")));
        }
    }
    let chunks = match footer
        .custom_metadata()
        .and_then(|kv| kv.iter().find(|e| e.key() == Some(CHUNKS_METADATA_KEY)))
    {
        None => None,
        Some(e) => {
            let list: Vec<ChunkInfo> = serde_json::from_str(e.value().unwrap_or(""))
                .map_err(|e| bad(format!("{CHUNKS_METADATA_KEY}: {e}")))?;
            if list.len() != blocks.len() {
                return Err(bad(format!(
                    "{CHUNKS_METADATA_KEY} lists {} chunks, the footer {}",
                    list.len(),
                    blocks.len()
                )));
            }
            if let Some(k) = list.iter().position(|c| sha256_bytes(&c.2).is_none()) {
                return Err(bad(format!(
                    "{CHUNKS_METADATA_KEY}: chunk {k} has no sha256"
                )));
            }
            Some(list)
        }
    };
    Ok(Footer {
        version: footer.version(),
        planes,
        blocks,
        chunks,
    })
}

/// A lowercase hex sha256 as bytes.
fn sha256_bytes(hex: &str) -> Option<[u8; 32]> {
    let b = hex.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = digit(b[2 * i])? << 4 | digit(b[2 * i + 1])?;
    }
    Some(out)
}

/// The chunks of a cold part, from its footer and message headers; nothing is decompressed.
/// Checks the schema against the part's types, that the chunks tile the part's cells with at
/// most `chunk_cells` each, that the footer's chunk list (when there is one) agrees with the
/// headers, and the part's cell and non-zero counts.
pub(crate) fn open_cold_part(
    path: &Path,
    map: &Arc<Mmap>,
    manifest: &Manifest,
    part: &PartEntry,
    part_index: usize,
) -> Result<Vec<ColdChunk>> {
    let bad = |msg: String| Error::corpus(path, format!("not a valid cold part: {msg}"));
    let bytes: &[u8] = map;
    if bytes.len() < 18 || &bytes[..6] != b"ARROW1" {
        return Err(bad("not an Arrow IPC file (no ARROW1 magic)".into()));
    }
    let footer = parse_footer(path, bytes, bytes.len() as u64, manifest, part_index)?;
    let (index_type, value_type) = manifest.part_types(part_index);
    let mut counts = Vec::with_capacity(footer.blocks.len());
    for (k, block) in footer.blocks.iter().enumerate() {
        let at = block.offset() as usize;
        let msg = message_at(&bytes[at..], block.metaDataLength() as usize)
            .map_err(|m| bad(format!("chunk {k}: {m}")))?;
        let rb = msg
            .header_as_record_batch()
            .ok_or_else(|| bad(format!("chunk {k}: not a record batch")))?;
        if let Some(c) = rb.compression() {
            if c.codec() != CompressionType::ZSTD {
                return Err(bad(format!("chunk {k}: compressed with {:?}", c.codec())));
            }
        }
        let nodes = rb
            .nodes()
            .ok_or_else(|| bad(format!("chunk {k}: no field nodes")))?;
        let columns = if footer.planes {
            index_type.byte_width() + value_type.byte_width()
        } else {
            2
        };
        if nodes.len() != 2 * columns {
            return Err(bad(format!(
                "chunk {k}: {} field nodes, expected {}",
                nodes.len(),
                2 * columns
            )));
        }
        let rows = rb.length();
        let child = nodes.get(1).length();
        if rows < 0
            || child < 0
            || (0..columns).any(|c| {
                nodes.get(2 * c).length() != rows || nodes.get(2 * c + 1).length() != child
            })
        {
            return Err(bad(format!("chunk {k}: inconsistent lengths")));
        }
        if let Some(list) = &footer.chunks {
            if (list[k].0, list[k].1) != (rows as u64, child as u64) {
                return Err(bad(format!(
                    "chunk {k}: {CHUNKS_METADATA_KEY} says {} cells and {} non-zeros, its header {rows} and {child}",
                    list[k].0, list[k].1
                )));
            }
        }
        counts.push((rows as u64, child as u64, None));
    }
    chunks_of(
        path,
        ChunkSource::Mapped(map.clone()),
        &footer,
        counts,
        manifest,
        part,
        part_index,
    )
}

/// The chunks of a cold part in object storage from its footer alone (`tail`, checked against
/// the manifest by the caller): the footer's chunk list gives each chunk's cells, non-zeros and
/// checksum. `None` when the footer has no chunk list (the part is then read whole).
#[cfg(feature = "remote")]
pub(crate) fn open_lazy_cold_part(
    url: &Path,
    tail: &[u8],
    lazy: Arc<super::remote::LazyPart>,
    size: u64,
    manifest: &Manifest,
    part: &PartEntry,
    part_index: usize,
) -> Result<Option<Vec<ColdChunk>>> {
    let footer = parse_footer(url, tail, size, manifest, part_index)?;
    let Some(list) = &footer.chunks else {
        return Ok(None);
    };
    let counts = list
        .iter()
        .map(|c| (c.0, c.1, sha256_bytes(&c.2)))
        .collect();
    chunks_of(
        url,
        ChunkSource::Remote(lazy),
        &footer,
        counts,
        manifest,
        part,
        part_index,
    )
    .map(Some)
}

/// The chunks of `footer` with their (cells, non-zeros, checksum), checked to tile the part.
fn chunks_of(
    path: &Path,
    source: ChunkSource,
    footer: &Footer,
    counts: Vec<(u64, u64, Option<[u8; 32]>)>,
    manifest: &Manifest,
    part: &PartEntry,
    part_index: usize,
) -> Result<Vec<ColdChunk>> {
    static NEXT_ID: AtomicU64 = AtomicU64::new(0);
    let (index_type, value_type) = manifest.part_types(part_index);
    let chunk_cells = part.chunk_cells.unwrap_or(0);
    let path_arc = Arc::new(path.to_path_buf());
    let (mut cell, mut nnz) = (part.first_cell, 0u64);
    let mut out = Vec::with_capacity(footer.blocks.len());
    for (k, (block, (rows, child, sha256))) in footer.blocks.iter().zip(counts).enumerate() {
        if rows == 0 {
            continue;
        }
        if rows > chunk_cells {
            return Err(Error::corpus(
                path,
                format!(
                    "not a valid cold part: chunk {k} holds {rows} cells, more than chunk_cells {chunk_cells}"
                ),
            ));
        }
        if nnz + child > part.nnz || cell + rows > part.first_cell + part.n_cells {
            return Err(Error::corpus(
                path,
                format!(
                    "holds more cells or non-zeros than manifest.json says ({} and {})",
                    part.n_cells, part.nnz
                ),
            ));
        }
        out.push(ColdChunk {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            source: source.clone(),
            sha256,
            path: path_arc.clone(),
            part: part_index,
            index: k,
            first_cell: cell,
            n_cells: rows as usize,
            nnz: child as usize,
            block: *block,
            version: footer.version,
            planes: footer.planes,
            index_type,
            value_type,
            pinned: OnceLock::new(),
        });
        cell += rows;
        nnz += child;
    }
    check_part_counts(path, part, cell - part.first_cell, nnz)?;
    Ok(out)
}

/// Checks a cold part's footer against its manifest entry (when the entry has one) and every
/// chunk's bytes against the sha256 its footer lists (when it lists them): what a remote reader
/// trusts in place of the whole part's checksum. `bytes` is the whole file.
pub(crate) fn check_chunk_checksums(
    path: &Path,
    bytes: &[u8],
    manifest: &Manifest,
    part: &PartEntry,
    part_index: usize,
) -> Result<()> {
    use sha2::{Digest, Sha256};
    if let Some(f) = &part.footer {
        let ok = f.bytes <= bytes.len() as u64 && {
            let tail = &bytes[bytes.len() - f.bytes as usize..];
            super::to_hex(&Sha256::digest(tail)) == f.sha256
        };
        if !ok {
            return Err(Error::corpus(
                path,
                format!(
                    "the file's last {} bytes do not hash to the footer sha256 manifest.json lists",
                    f.bytes
                ),
            ));
        }
    }
    let footer = parse_footer(path, bytes, bytes.len() as u64, manifest, part_index)?;
    let Some(list) = &footer.chunks else {
        return Ok(());
    };
    for (k, (block, info)) in footer.blocks.iter().zip(list).enumerate() {
        let start = block.offset() as usize;
        let end = start + block.metaDataLength() as usize + block.bodyLength() as usize;
        let got = super::to_hex(&Sha256::digest(&bytes[start..end]));
        if got != info.2 {
            return Err(Error::corpus(
                path,
                format!(
                    "chunk {k}: its bytes hash to {got}, the footer's {CHUNKS_METADATA_KEY} says {}",
                    info.2
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::buffer::OffsetBuffer;

    fn planes_of(words: &[u16]) -> (Vec<u8>, Vec<u8>) {
        words
            .iter()
            .map(|w| (w.to_le_bytes()[0], w.to_le_bytes()[1]))
            .unzip()
    }

    fn ids(words: &[u16], offsets: &[i32]) -> std::result::Result<Vec<u16>, usize> {
        let (lo, hi) = planes_of(words);
        let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets.to_vec()));
        undelta_planes::<UInt16Type, 2>(&[&lo, &hi], &offsets)
            .map(|a| a.as_primitive::<UInt16Type>().values().to_vec())
    }

    #[test]
    fn planes_join_and_undelta_per_cell() {
        // Cells {0, 1, 300}, {}, {65535}: a first id of 0, a delta above one byte, the top id.
        assert_eq!(
            ids(&[0, 1, 299, 65535], &[0, 3, 3, 4]),
            Ok(vec![0, 1, 300, 65535])
        );
        // A zero delta after the first repeats an id; a sum past u16 overflows: the cell named.
        assert_eq!(ids(&[5, 0], &[0, 1, 2]), Ok(vec![5, 0]));
        assert_eq!(ids(&[5, 3, 0], &[0, 1, 3]), Err(1));
        assert_eq!(ids(&[7, 65000, 600], &[0, 1, 3]), Err(1));
        // Planes of different lengths, or offsets past them, are errors, not panics.
        let offsets = OffsetBuffer::new(ScalarBuffer::from(vec![0, 2]));
        assert!(undelta_planes::<UInt16Type, 2>(&[&[1, 2], &[0]], &offsets).is_err());
        assert!(undelta_planes::<UInt16Type, 2>(&[&[1], &[0]], &offsets).is_err());
        let f = joined::<Float32Type, 4>(&[&[0], &[0], &[0x80], &[0x3f]]).unwrap();
        assert_eq!(f.as_primitive::<Float32Type>().values()[0], 1.0);
        assert!(joined::<Float32Type, 4>(&[&[0], &[0]]).is_none());
    }
}
