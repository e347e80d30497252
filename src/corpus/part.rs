//! The matrix part writer: CSR rows to an uncompressed, 64-byte aligned Arrow IPC stream (hot
//! parts), or to an Arrow IPC file of zstd-compressed chunks with delta-coded gene ids (cold
//! parts).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, ListArray, PrimitiveArray, UInt8Array};
use arrow::buffer::{OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Field, Float32Type, Float64Type, Schema, SchemaRef, UInt16Type,
    UInt32Type,
};
use arrow::ipc::writer::{FileWriter, IpcWriteOptions, StreamWriter};
use arrow::ipc::{CompressionType, MetadataVersion};
use arrow::record_batch::RecordBatch;

use sha2::{Digest, Sha256};

use super::{to_hex, IndexType, PartFooter, PartSummary, PartWriter, ValueType};
use crate::error::{Context, Error, Result};

/// Footer metadata key of a cold part's chunk list: a JSON array with, per chunk in footer
/// order, `[cells, non-zeros, "sha256 of the chunk's bytes"]` (the bytes of its block: message
/// header and body). With the footer's own checksum in the manifest, a remote reader checks any
/// chunk it fetches without the rest of the part.
pub const CHUNKS_METADATA_KEY: &str = "cellarrow.chunks";

/// One chunk of a cold part as its footer lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChunkInfo(pub u64, pub u64, pub String);

/// Largest number of non-zeros in one record batch: list offsets are i32.
pub(crate) const MAX_BATCH_NNZ: usize = i32::MAX as usize;

/// Cells per chunk of a cold part unless asked otherwise: a few hundred cells give zstd enough
/// data to find the redundancy of counts (on the 50,000 x 20,000 cohort, 256 cells are about
/// 256,000 non-zeros) while a random cell still costs decompressing well under a megabyte.
pub const DEFAULT_CHUNK_CELLS: u64 = 256;

/// The zstd level of cold chunks. On byte planes, measured on the 50,000 x 20,000 cohort (see
/// docs/FORMAT.md), level 1 compresses as well as 3 and decompresses faster; higher levels
/// cost conversion time for little.
const COLD_ZSTD_LEVEL: i32 = 1;

/// The Arrow schema of a cold part with these types: per cell, the first gene id followed by
/// the differences between consecutive ids (the index deltas), then the values, each split
/// into its byte planes: column `index_deltas_byte{p}` holds byte `p` (little-endian: bits
/// `8p..8p+8`) of every delta, one `List<UInt8>` column per byte of the index type, then the
/// same for the values (`values_byte{p}`). Planes of like bytes compress far better, and
/// decompress faster, than the interleaved values (see docs/FORMAT.md, Cold parts).
///
/// ```
/// use cellarrow::corpus::{cold_part_schema, IndexType, ValueType};
/// let s = cold_part_schema(IndexType::Uint16, ValueType::Float32);
/// let names: Vec<&str> = s.fields().iter().map(|f| f.name().as_str()).collect();
/// assert_eq!(names, ["index_deltas_byte0", "index_deltas_byte1",
///                    "values_byte0", "values_byte1", "values_byte2", "values_byte3"]);
/// ```
pub fn cold_part_schema(index_type: IndexType, value_type: ValueType) -> SchemaRef {
    let planes = |name: &str, width: usize| {
        (0..width)
            .map(|p| Field::new(format!("{name}_byte{p}"), list_type(DataType::UInt8), false))
            .collect::<Vec<_>>()
    };
    let mut fields = planes("index_deltas", index_type.byte_width());
    fields.extend(planes("values", value_type.byte_width()));
    Arc::new(Schema::new(fields))
}

/// The schema of cold parts written before byte planes: `index_deltas` and `values` as whole
/// numbers. Still read.
pub(crate) fn cold_part_schema_interleaved(
    index_type: IndexType,
    value_type: ValueType,
) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("index_deltas", list_type(index_type.arrow_type()), false),
        Field::new("values", list_type(value_type.arrow_type()), false),
    ]))
}

/// The Arrow schema of a matrix part with these types.
///
/// ```
/// use cellarrow::corpus::{part_schema, IndexType, ValueType};
/// let s = part_schema(IndexType::Uint16, ValueType::Float32);
/// assert_eq!(s.field(0).name(), "indices");
/// assert_eq!(s.field(1).name(), "values");
/// ```
pub fn part_schema(index_type: IndexType, value_type: ValueType) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("indices", list_type(index_type.arrow_type()), false),
        Field::new("values", list_type(value_type.arrow_type()), false),
    ]))
}

pub(crate) fn item_field(item: DataType) -> Arc<Field> {
    Arc::new(Field::new("item", item, false))
}

fn list_type(item: DataType) -> DataType {
    DataType::List(item_field(item))
}

/// Child buffers of the batch being built, in their final type.
pub(crate) enum Column {
    U16(Vec<u16>),
    U32(Vec<u32>),
    F32(Vec<f32>),
    F64(Vec<f64>),
}

impl Column {
    fn with_capacity(item: DataType, cap: usize) -> Column {
        match item {
            DataType::UInt16 => Column::U16(Vec::with_capacity(cap)),
            DataType::UInt32 => Column::U32(Vec::with_capacity(cap)),
            DataType::Float32 => Column::F32(Vec::with_capacity(cap)),
            _ => Column::F64(Vec::with_capacity(cap)),
        }
    }

    fn len(&self) -> usize {
        match self {
            Column::U16(v) => v.len(),
            Column::U32(v) => v.len(),
            Column::F32(v) => v.len(),
            Column::F64(v) => v.len(),
        }
    }

    fn reserve(&mut self, n: usize) {
        match self {
            Column::U16(v) => v.reserve(n),
            Column::U32(v) => v.reserve(n),
            Column::F32(v) => v.reserve(n),
            Column::F64(v) => v.reserve(n),
        }
    }

    /// Replaces each cell's gene ids, from the second on, by the difference to the previous
    /// one (ids are strictly increasing within a cell, so no difference underflows).
    fn delta_code(&mut self, offsets: &[i32]) {
        fn code<T: Copy + std::ops::Sub<Output = T>>(v: &mut [T], offsets: &[i32]) {
            for w in offsets.windows(2) {
                let (a, b) = (w[0] as usize, w[1] as usize);
                for k in (a + 1..b).rev() {
                    v[k] = v[k] - v[k - 1];
                }
            }
        }
        match self {
            Column::U16(v) => code(v, offsets),
            Column::U32(v) => code(v, offsets),
            _ => unreachable!("index column is u16 or u32"),
        }
    }

    fn push_indices(&mut self, idx: &[u32]) {
        match self {
            Column::U16(v) => v.extend(idx.iter().map(|&i| i as u16)),
            Column::U32(v) => v.extend_from_slice(idx),
            _ => unreachable!("index column is u16 or u32"),
        }
    }

    fn push_values(&mut self, vals: &[f64]) {
        // The caller chose the value type so that every value converts exactly.
        match self {
            Column::U16(v) => v.extend(vals.iter().map(|&x| {
                debug_assert!(ValueType::Uint16.holds(x), "value {x} does not fit u16");
                x as u16
            })),
            Column::U32(v) => v.extend(vals.iter().map(|&x| {
                debug_assert!(ValueType::Uint32.holds(x), "value {x} does not fit u32");
                x as u32
            })),
            Column::F32(v) => v.extend(vals.iter().map(|&x| {
                debug_assert!(ValueType::Float32.holds(x), "value {x} does not fit f32");
                x as f32
            })),
            Column::F64(v) => v.extend_from_slice(vals),
        }
    }

    /// The byte planes of the buffer (plane `p`: byte `p` of each element, little-endian), as
    /// arrays, and leaves an empty buffer of `cap`.
    fn take_planes(&mut self, cap: usize) -> Vec<ArrayRef> {
        fn planes<T: Copy, const W: usize>(v: &[T], le: impl Fn(T) -> [u8; W]) -> Vec<ArrayRef> {
            let mut out: Vec<Vec<u8>> = (0..W).map(|_| Vec::with_capacity(v.len())).collect();
            for &x in v {
                for (plane, b) in out.iter_mut().zip(le(x)) {
                    plane.push(b);
                }
            }
            out.into_iter()
                .map(|p| Arc::new(UInt8Array::from(p)) as ArrayRef)
                .collect()
        }
        let out = match self {
            Column::U16(v) => planes(v, u16::to_le_bytes),
            Column::U32(v) => planes(v, u32::to_le_bytes),
            Column::F32(v) => planes(v, f32::to_le_bytes),
            Column::F64(v) => planes(v, f64::to_le_bytes),
        };
        self.take_array(cap);
        out
    }

    /// Moves the buffer into an Arrow array (no copy) and leaves an empty one of `cap`.
    fn take_array(&mut self, cap: usize) -> ArrayRef {
        fn arr<T: ArrowPrimitiveType>(v: Vec<T::Native>) -> ArrayRef {
            Arc::new(PrimitiveArray::<T>::new(ScalarBuffer::from(v), None))
        }
        match self {
            Column::U16(v) => arr::<UInt16Type>(std::mem::replace(v, Vec::with_capacity(cap))),
            Column::U32(v) => arr::<UInt32Type>(std::mem::replace(v, Vec::with_capacity(cap))),
            Column::F32(v) => arr::<Float32Type>(std::mem::replace(v, Vec::with_capacity(cap))),
            Column::F64(v) => arr::<Float64Type>(std::mem::replace(v, Vec::with_capacity(cap))),
        }
    }
}

/// The IPC writer of a part: a stream for hot parts, a file (whose footer indexes the chunks)
/// for cold ones.
enum IpcOut {
    Stream(Box<StreamWriter<BufWriter<File>>>),
    File(Box<FileWriter<Hashing<BufWriter<File>>>>),
}

/// Hashes the bytes written through it: the cold writer takes the hash after each chunk, and
/// `FileWriter::write` writes exactly a chunk's block (no dictionaries), so each hash covers
/// one block.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
}

impl<W> Hashing<W> {
    /// The hash of the bytes written since the last call.
    fn take(&mut self) -> String {
        to_hex(&std::mem::take(&mut self.hasher).finalize())
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl IpcOut {
    fn write(&mut self, batch: &RecordBatch) -> std::result::Result<(), arrow::error::ArrowError> {
        match self {
            IpcOut::Stream(w) => w.write(batch),
            IpcOut::File(w) => w.write(batch),
        }
    }

    fn finish(
        self,
        chunks: &[ChunkInfo],
    ) -> std::result::Result<BufWriter<File>, arrow::error::ArrowError> {
        match self {
            IpcOut::Stream(mut w) => {
                w.finish()?;
                w.into_inner()
            }
            IpcOut::File(mut w) => {
                let list = serde_json::to_string(chunks)
                    .map_err(|e| arrow::error::ArrowError::ExternalError(Box::new(e)))?;
                w.write_metadata(CHUNKS_METADATA_KEY, list);
                w.finish()?;
                Ok(w.into_inner()?.inner)
            }
        }
    }
}

pub(crate) struct PartState {
    path: PathBuf,
    writer: IpcOut,
    cold: bool,
    schema: SchemaRef,
    index_type: IndexType,
    batch_rows: usize,
    max_batch_nnz: usize,
    offsets: Vec<i32>,
    indices: Column,
    values: Column,
    n_cells: u64,
    nnz: u64,
    /// Cold parts: the chunks written so far.
    chunks: Vec<ChunkInfo>,
}

impl PartWriter {
    /// Creates `path` (refuses to overwrite) and writes the stream's schema.
    ///
    /// ```
    /// use cellarrow::corpus::{IndexType, PartWriter, ValueType};
    /// let dir = tempfile::tempdir().unwrap();
    /// let mut w = PartWriter::create(dir.path().join("part-00000.arrow"), IndexType::Uint16, ValueType::Uint16, 65536)?;
    /// // two cells: {3: 1.0, 7: 2.0} and {}
    /// w.push(&[0, 2, 2], &[3, 7], &[1.0, 2.0])?;
    /// let summary = w.finish()?;
    /// assert_eq!((summary.n_cells, summary.nnz), (2, 2));
    /// # Ok::<(), cellarrow::Error>(())
    /// ```
    pub fn create(
        path: impl AsRef<Path>,
        index_type: IndexType,
        value_type: ValueType,
        batch_rows: usize,
    ) -> Result<PartWriter> {
        Self::create_in(path.as_ref(), index_type, value_type, batch_rows, false)
    }

    /// Creates a cold part at `path` (refuses to overwrite): an Arrow IPC file whose record
    /// batches are chunks of `chunk_cells` cells, each buffer compressed with zstd, gene ids
    /// delta-coded within each cell (see [`cold_part_schema`]). Rows are pushed as for a hot
    /// part; the footer written by [`PartWriter::finish`] indexes the chunks.
    ///
    /// ```
    /// use cellarrow::corpus::{IndexType, PartWriter, ValueType};
    /// let dir = tempfile::tempdir().unwrap();
    /// let mut w = PartWriter::create_cold(dir.path().join("part-00000.arrow"), IndexType::Uint16, ValueType::Uint16, 256)?;
    /// w.push(&[0, 2, 2], &[3, 7], &[1.0, 2.0])?;
    /// assert_eq!(w.finish()?.nnz, 2);
    /// # Ok::<(), cellarrow::Error>(())
    /// ```
    pub fn create_cold(
        path: impl AsRef<Path>,
        index_type: IndexType,
        value_type: ValueType,
        chunk_cells: usize,
    ) -> Result<PartWriter> {
        if chunk_cells as u64 > super::MAX_CHUNK_CELLS {
            return Err(Error::invalid_input(format!(
                "chunk_cells {chunk_cells} is more than {}",
                super::MAX_CHUNK_CELLS
            ))
            .with_path(path.as_ref()));
        }
        Self::create_in(path.as_ref(), index_type, value_type, chunk_cells, true)
    }

    fn create_in(
        path: &Path,
        index_type: IndexType,
        value_type: ValueType,
        batch_rows: usize,
        cold: bool,
    ) -> Result<PartWriter> {
        let path = path.to_path_buf();
        if batch_rows == 0 || batch_rows > i32::MAX as usize {
            return Err(
                Error::invalid_input(format!("batch_rows {batch_rows} is out of range"))
                    .with_path(&path),
            );
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io(&path, "creating matrix part", e))?;
        let out = BufWriter::with_capacity(1 << 20, file);
        let (schema, writer) = if cold {
            let schema = cold_part_schema(index_type, value_type);
            // 8-byte alignment: the buffers are decompressed into memory anyway, and 64 would
            // pad each of a chunk's buffers for nothing.
            let opts = IpcWriteOptions::try_new(8, false, MetadataVersion::V5)
                .and_then(|o| o.try_with_compression(Some(CompressionType::ZSTD)))
                .and_then(|o| o.try_with_compression_level(Some(COLD_ZSTD_LEVEL)))
                .at(&path)?;
            let hashing = Hashing {
                inner: out,
                hasher: Sha256::new(),
            };
            let mut w = FileWriter::try_new_with_options(hashing, &schema, opts).at(&path)?;
            // The magic and the schema message are not a chunk.
            w.get_mut().take();
            (schema, IpcOut::File(Box::new(w)))
        } else {
            let schema = part_schema(index_type, value_type);
            let w = StreamWriter::try_new(out, &schema).at(&path)?;
            (schema, IpcOut::Stream(Box::new(w)))
        };
        let mut offsets = Vec::with_capacity(batch_rows + 1);
        offsets.push(0);
        Ok(PartWriter {
            state: Box::new(PartState {
                path,
                writer,
                cold,
                schema,
                index_type,
                batch_rows,
                max_batch_nnz: MAX_BATCH_NNZ,
                offsets,
                indices: Column::with_capacity(index_type.arrow_type(), 0),
                values: Column::with_capacity(value_type.arrow_type(), 0),
                n_cells: 0,
                nnz: 0,
                chunks: Vec::new(),
            }),
        })
    }

    /// Appends rows given as local CSR (`indptr[0] == 0`). Indices must already be strictly
    /// increasing within each row and fit `index_type`; values must fit `value_type` exactly
    /// (the converter chose it so; checked in debug builds only).
    pub fn push(&mut self, indptr: &[u64], indices: &[u32], values: &[f64]) -> Result<()> {
        let s = &mut *self.state;
        if indptr.is_empty() {
            return push_err(
                &s.path,
                "push: indptr is empty (it needs n_rows + 1 entries)".into(),
            );
        }
        if indptr[0] != 0 {
            return push_err(
                &s.path,
                format!("push: indptr[0] is {}, expected 0", indptr[0]),
            );
        }
        let last = *indptr.last().expect("indptr is non-empty");
        if last != indices.len() as u64 || indices.len() != values.len() {
            return push_err(
                &s.path,
                format!(
                    "push: indptr ends at {last} but there are {} indices and {} values",
                    indices.len(),
                    values.len()
                ),
            );
        }
        let max_index = match s.index_type {
            IndexType::Uint16 => u16::MAX as u32,
            IndexType::Uint32 => u32::MAX,
        };
        for r in 0..indptr.len() - 1 {
            let (a, b) = (indptr[r], indptr[r + 1]);
            if b < a {
                return push_err(
                    &s.path,
                    format!("push: indptr decreases at row {r} ({a} > {b})"),
                );
            }
            let (a, b) = (a as usize, b as usize);
            let row = &indices[a..b];
            for (k, w) in row.windows(2).enumerate() {
                if w[0] >= w[1] {
                    return push_err(&s.path, format!(
                        "push: row {r}: gene indices not strictly increasing at position {} ({} then {})",
                        k + 1,
                        w[0],
                        w[1]
                    ));
                }
            }
            if let Some(&m) = row.last() {
                if m > max_index {
                    return push_err(
                        &s.path,
                        format!(
                            "push: row {r}: gene index {m} does not fit {:?}",
                            s.index_type
                        ),
                    );
                }
            }
            let batch_nnz = s.indices.len();
            if s.offsets.len() > s.batch_rows
                || (batch_nnz + row.len() > s.max_batch_nnz && s.offsets.len() > 1)
            {
                s.flush()?;
            }
            if row.len() > s.max_batch_nnz {
                return push_err(
                    &s.path,
                    format!(
                        "push: row {r} has {} non-zeros, more than a batch holds",
                        row.len()
                    ),
                );
            }
            s.indices.reserve(row.len());
            s.values.reserve(row.len());
            s.indices.push_indices(row);
            s.values.push_values(&values[a..b]);
            s.offsets.push(s.indices.len() as i32);
            s.n_cells += 1;
            s.nnz += row.len() as u64;
        }
        Ok(())
    }

    /// Flushes the last batch, closes the stream and fsyncs the file.
    pub fn finish(self) -> Result<PartSummary> {
        let mut s = self.state;
        if s.offsets.len() > 1 {
            s.flush()?;
        }
        let buf = s.writer.finish(&s.chunks).at(&s.path)?;
        let file = buf
            .into_inner()
            .map_err(|e| Error::io(&s.path, "flushing matrix part", e.into_error()))?;
        file.sync_all()
            .map_err(|e| Error::io(&s.path, "syncing matrix part", e))?;
        let bytes = file
            .metadata()
            .map_err(|e| Error::io(&s.path, "reading size of matrix part", e))?
            .len();
        let footer = if s.cold {
            // The writer's handle is write-only.
            Some(cold_footer(&s.path)?)
        } else {
            None
        };
        Ok(PartSummary {
            n_cells: s.n_cells,
            nnz: s.nnz,
            bytes,
            footer,
        })
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.state.path
    }

    /// Cells pushed so far.
    pub fn n_cells(&self) -> u64 {
        self.state.n_cells
    }

    /// Non-zeros pushed so far.
    pub fn nnz(&self) -> u64 {
        self.state.nnz
    }

    /// Lowers the per-batch non-zero limit, so tests can exercise the split without 2^31 values.
    #[doc(hidden)]
    pub fn set_max_batch_nnz(&mut self, max: usize) {
        self.state.max_batch_nnz = max.clamp(1, MAX_BATCH_NNZ);
    }
}

fn push_err<T>(path: &Path, msg: String) -> Result<T> {
    Err(Error::invalid_input(msg).with_path(path))
}

impl PartState {
    fn flush(&mut self) -> Result<()> {
        let rows = self.offsets.len() - 1;
        let nnz = self.indices.len();
        let offsets = std::mem::replace(&mut self.offsets, Vec::with_capacity(self.batch_rows + 1));
        self.offsets.push(0);
        if self.cold {
            self.indices.delta_code(&offsets);
        }
        let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
        let children: Vec<ArrayRef> = if self.cold {
            let mut planes = self.indices.take_planes(nnz);
            planes.extend(self.values.take_planes(nnz));
            planes
        } else {
            vec![self.indices.take_array(nnz), self.values.take_array(nnz)]
        };
        let columns = children
            .into_iter()
            .map(|child| {
                let item = item_field(child.data_type().clone());
                ListArray::try_new(item, offsets.clone(), child, None)
                    .map(|l| Arc::new(l) as ArrayRef)
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .at(&self.path)?;
        let batch = RecordBatch::try_new(self.schema.clone(), columns).at(&self.path)?;
        debug_assert_eq!(batch.num_rows(), rows);
        self.writer.write(&batch).at(&self.path)?;
        if let IpcOut::File(w) = &mut self.writer {
            let sha256 = w.get_mut().take();
            self.chunks.push(ChunkInfo(rows as u64, nnz as u64, sha256));
        }
        Ok(())
    }
}

/// The footer of the cold part at `path` (see [`PartFooter`]).
pub fn cold_footer(path: &Path) -> Result<PartFooter> {
    let file = File::open(path).map_err(|e| Error::io(path, "opening", e))?;
    let size = file
        .metadata()
        .map_err(|e| Error::io(path, "reading the size of", e))?
        .len();
    read_footer(&file, path, size)
}

/// The footer of the Arrow IPC file `file` (at `path`) of `size` bytes: its last bytes from
/// the footer's flatbuffer to the closing magic, with their sha256 (see [`PartFooter`]).
pub(crate) fn read_footer(file: &File, path: &Path, size: u64) -> Result<PartFooter> {
    let io = |e| Error::io(path, "reading the footer of a cold part", e);
    let mut end = [0u8; 10];
    if size < 10 {
        return Err(Error::corpus(path, "a cold part too short for a footer"));
    }
    file.read_exact_at(&mut end, size - 10).map_err(io)?;
    let len = i32::from_le_bytes(end[..4].try_into().expect("4 bytes"));
    let bytes = len as u64 + 10;
    if len <= 0 || bytes > size {
        return Err(Error::corpus(
            path,
            format!("footer length {len} is out of bounds"),
        ));
    }
    let mut tail = vec![0u8; bytes as usize];
    file.read_exact_at(&mut tail, size - bytes).map_err(io)?;
    Ok(PartFooter {
        bytes,
        sha256: to_hex(&Sha256::digest(&tail)),
    })
}
