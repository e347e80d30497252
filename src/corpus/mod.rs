//! Layer 2: the corpus on disk (format 1, see `docs/FORMAT.md`).
//!
//! The manifest (serde + `schemas/manifest.schema.json`), checksums, the matrix part writer,
//! Parquet table helpers, the memory-mapped zero-copy reader and `validate`.

use std::path::{Path, PathBuf};

use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// The `format` field of every manifest.
pub const FORMAT_NAME: &str = "cellarrow";
/// The format version this crate writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Gene index type of the matrix parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexType {
    Uint16,
    Uint32,
}

/// Value type of the matrix parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    Uint16,
    Uint32,
    Float32,
    Float64,
}

/// One matrix part as listed in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartEntry {
    pub path: String,
    pub first_cell: u64,
    pub n_cells: u64,
    pub nnz: u64,
}

/// The `matrix` section of the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatrixInfo {
    pub batch_rows: u64,
    pub part_cells: u64,
    pub parts: Vec<PartEntry>,
}

/// One sample as listed in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleEntry {
    pub sample_id: String,
    pub first_cell: u64,
    pub n_cells: u64,
    pub nnz: u64,
    /// 0 for a non-spatial sample, else 2 or 3.
    pub spatial_dims: u8,
}

/// A file of the corpus with its size and checksum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    pub created_by: String,
    pub n_cells: u64,
    pub n_genes: u64,
    pub nnz: u64,
    pub index_type: IndexType,
    pub value_type: ValueType,
    pub matrix: MatrixInfo,
    pub samples: Vec<SampleEntry>,
    /// The conversion options, as given.
    pub options: serde_json::Value,
    pub files: Vec<FileEntry>,
}

/// One cell's gene ids, borrowed from the mapping.
#[derive(Debug, Clone, Copy)]
pub enum Indices<'a> {
    U16(&'a [u16]),
    U32(&'a [u32]),
}

/// One cell's values, borrowed from the mapping.
#[derive(Debug, Clone, Copy)]
pub enum Values<'a> {
    U16(&'a [u16]),
    U32(&'a [u32]),
    F32(&'a [f32]),
    F64(&'a [f64]),
}

/// A memory-mapped corpus. Cheap to share across threads (`Corpus: Send + Sync`).
pub struct Corpus {
    root: PathBuf,
    manifest: Manifest,
}

impl Corpus {
    /// Opens a corpus: parses and schema-checks the manifest, checks the format version, that
    /// every listed file exists with its listed size and stays inside the directory, maps the
    /// parts and decodes their batches with no copy. Does not hash (see [`validate`]).
    pub fn open(dir: impl AsRef<Path>) -> Result<Corpus> {
        todo!()
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    pub fn n_cells(&self) -> u64 {
        self.manifest.n_cells
    }
    pub fn n_genes(&self) -> u64 {
        self.manifest.n_genes
    }
    pub fn nnz(&self) -> u64 {
        self.manifest.nnz
    }
    /// Gene ids of `cell`, zero-copy. Panics if `cell >= n_cells` (a caller bug).
    pub fn indices(&self, cell: u64) -> Indices<'_> {
        todo!()
    }
    /// Values of `cell`, zero-copy. Panics if `cell >= n_cells`.
    pub fn values(&self, cell: u64) -> Values<'_> {
        todo!()
    }
    /// Non-zeros of `cell`.
    pub fn row_nnz(&self, cell: u64) -> usize {
        todo!()
    }
    /// Path of a corpus table: `obs`, `genes`, `samples`, `regions`.
    pub fn table_path(&self, table: &str) -> PathBuf {
        self.root.join(format!("{table}.parquet"))
    }
    /// Reads a whole Parquet table of the corpus, optionally only some columns.
    pub fn read_table(&self, table: &str, columns: Option<&[&str]>) -> Result<Vec<RecordBatch>> {
        todo!()
    }
    /// The gene vocabulary, in id order.
    pub fn gene_names(&self) -> Result<Vec<String>> {
        todo!()
    }
}

/// Writes one matrix part as an uncompressed, 64-byte aligned Arrow IPC stream.
pub struct PartWriter {
    _private: (),
}

/// What a finished part holds.
#[derive(Debug, Clone, PartialEq)]
pub struct PartSummary {
    pub n_cells: u64,
    pub nnz: u64,
    pub bytes: u64,
}

impl PartWriter {
    /// Creates `path` (refuses to overwrite).
    pub fn create(path: impl AsRef<Path>, index_type: IndexType, value_type: ValueType, batch_rows: usize) -> Result<PartWriter> {
        todo!()
    }
    /// Appends rows given as local CSR (`indptr[0] == 0`). Indices must already be strictly
    /// increasing within each row and fit `index_type`; values must fit `value_type` exactly
    /// (the converter chose it so).
    pub fn push(&mut self, indptr: &[u64], indices: &[u32], values: &[f64]) -> Result<()> {
        todo!()
    }
    /// Flushes the last batch and closes the stream.
    pub fn finish(self) -> Result<PartSummary> {
        todo!()
    }
}

/// Writes record batches to a zstd-compressed Parquet file.
pub fn write_parquet(path: &Path, batches: &[RecordBatch]) -> Result<u64> {
    todo!()
}

/// Lowercase hex sha256 of a file and its size, streaming.
pub fn sha256_file(path: &Path) -> Result<(String, u64)> {
    todo!()
}

/// What `validate` found.
#[derive(Debug, Clone, Default)]
pub struct ValidationReport {
    pub files_checked: usize,
    pub cells_checked: u64,
    pub nnz_checked: u64,
}

/// Checks every checksum and structural invariant; the error names the first file and row that fail.
pub fn validate(dir: impl AsRef<Path>) -> Result<ValidationReport> {
    todo!()
}
