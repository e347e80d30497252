//! Layer 2: the corpus on disk (format 2, reading format 1 too; see `docs/FORMAT.md`).
//!
//! The manifest (serde + `schemas/manifest.schema.json`), checksums, the matrix part writer,
//! Parquet table helpers, the memory-mapped zero-copy reader and `validate`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod checksum;
mod cold;
pub mod columns;
pub mod info;
mod manifest;
mod part;
mod reader;
#[cfg(feature = "remote")]
pub(crate) mod remote;
mod table;
#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub mod testing;
#[cfg(test)]
mod tests;
mod validate;

pub use checksum::{sha256_file, to_hex};
pub use cold::set_cold_cache_bytes;
pub use manifest::{check_rel_path, MANIFEST_FILE, MANIFEST_SCHEMA};
pub use part::{
    cold_footer, cold_part_schema, part_schema, ChunkInfo, CHUNKS_METADATA_KEY, DEFAULT_CHUNK_CELLS,
};
pub use reader::{BatchRef, CellLocation, MatrixBatch};
pub(crate) use table::{as_u64, parquet_rows, parquet_schema, writer_properties};
pub use table::{
    read_genes_with_counts, read_parquet, scan_parquet, table_files_at, write_parquet,
    ROW_GROUP_ROWS,
};
pub use validate::{validate, ValidationReport};

/// The `format` field of every manifest.
pub const FORMAT_NAME: &str = "cellarrow";
/// The format version this crate writes (it reads this one and every older one down to 1).
pub const FORMAT_VERSION: u32 = 2;
/// The oldest format version this crate reads.
pub const OLDEST_FORMAT_VERSION: u32 = 1;

/// The tables every corpus has (format 1: `NAME.parquet`; format 2: the files of
/// `manifest.tables[NAME]`).
pub const REQUIRED_TABLES: [&str; 3] = ["obs", "genes", "samples"];
/// The table of per-gene counts of a format-2 corpus: one file per conversion or append, with
/// the counts of the samples it added (`gene`, `n_samples`, `n_cells`); summed per gene, they
/// are the `n_samples` and `n_cells` columns of the `genes` table as cellarrow serves it.
pub const GENE_COUNTS_TABLE: &str = "gene_counts";

/// Gene index type of the matrix parts (ordered: a narrower type widens to a later one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
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

/// Largest `chunk_cells` of a cold part: a chunk is one record batch, decoded whole.
pub const MAX_CHUNK_CELLS: u64 = 1 << 20;

/// How a matrix part stores its cells (format 2, per part; see `docs/FORMAT.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartLayout {
    /// An uncompressed Arrow IPC stream, memory-mapped and read with no copy (the default).
    #[default]
    Hot,
    /// An Arrow IPC file of zstd-compressed chunks of `chunk_cells` cells, gene ids delta-coded
    /// within each cell; a chunk is decompressed on first use into memory.
    Cold,
}

impl PartLayout {
    /// Whether this is the default, uncompressed layout (which manifests leave unsaid).
    pub fn is_hot(&self) -> bool {
        *self == PartLayout::Hot
    }
}

impl IndexType {
    /// Bytes of one gene id of this type.
    ///
    /// ```
    /// use cellarrow::corpus::IndexType;
    /// assert_eq!(IndexType::Uint16.byte_width(), 2);
    /// ```
    pub fn byte_width(self) -> usize {
        match self {
            IndexType::Uint16 => 2,
            IndexType::Uint32 => 4,
        }
    }
}

impl ValueType {
    /// Bytes of one value of this type.
    ///
    /// ```
    /// use cellarrow::corpus::ValueType;
    /// assert_eq!(ValueType::Float32.byte_width(), 4);
    /// ```
    pub fn byte_width(self) -> usize {
        match self {
            ValueType::Uint16 => 2,
            ValueType::Uint32 | ValueType::Float32 => 4,
            ValueType::Float64 => 8,
        }
    }
}

/// One matrix part as listed in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartEntry {
    pub path: String,
    pub first_cell: u64,
    pub n_cells: u64,
    pub nnz: u64,
    /// The part's gene index type (format 2; absent in format 1, where every part has the
    /// manifest's `index_type`). Read it through [`Manifest::part_types`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_type: Option<IndexType>,
    /// The part's value type (format 2; absent in format 1, as `index_type`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_type: Option<ValueType>,
    /// `cold` for a compressed part; absent (hot) for the uncompressed, mapped layout.
    #[serde(default, skip_serializing_if = "PartLayout::is_hot")]
    pub layout: PartLayout,
    /// Cells per chunk of a cold part (the last chunk may hold fewer); absent for hot parts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_cells: Option<u64>,
    /// Cold parts: the file's footer, so that a reader in object storage fetches and checks
    /// the chunk index alone (cold parts written before it existed have none, and are fetched
    /// whole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub footer: Option<PartFooter>,
}

/// The footer of a cold part: its last `bytes` bytes (the Arrow IPC footer, which indexes the
/// chunks and lists each chunk's cells, non-zeros and sha256 under
/// [`CHUNKS_METADATA_KEY`], then the footer's length and the closing magic) and their
/// sha256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartFooter {
    pub bytes: u64,
    pub sha256: String,
}

/// One file of a table dataset (format 2), in row order within its table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableFile {
    /// Relative path, also listed in `files` with its size and sha256.
    pub path: String,
    /// Rows in the file.
    pub rows: u64,
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
    /// Format 2: every table (`obs`, `genes`, `samples`, `gene_counts`, ...) as the list of its
    /// Parquet files, in row order; all files of one table share one Arrow schema. Absent in
    /// format 1, whose tables are the single files `NAME.parquet` (see [`Manifest::table_paths`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tables: BTreeMap<String, Vec<TableFile>>,
    /// Every append since the corpus was converted, oldest first (absent when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lineage: Vec<LineageEntry>,
}

/// One append or merge of a corpus, as recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineageEntry {
    /// `append` or `merge`.
    pub operation: String,
    /// The tool and version that appended.
    pub created_by: String,
    /// The first cell id and number of cells added.
    pub first_cell: u64,
    pub n_cells: u64,
    /// The files added, with their sha256.
    pub sources: Vec<SourceEntry>,
    /// The options of the append, as given.
    pub options: serde_json::Value,
    /// The corpora a merge read, in order (absent for an append).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<MergeInput>,
}

/// An input corpus of a merge: where it was, which manifest it had, and where its cells went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergeInput {
    pub path: String,
    /// sha256 of the input's `manifest.json`, which names every file it had.
    pub manifest_sha256: String,
    /// The `created_by` of the input's manifest.
    pub created_by: String,
    /// The merged cell ids of the input's kept cells: `first_cell .. first_cell + n_cells`.
    pub first_cell: u64,
    pub n_cells: u64,
}

/// A source file of an append.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceEntry {
    pub sample_id: String,
    pub path: String,
    pub sha256: String,
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
///
/// Opening maps every matrix part and decodes its record batches with no copy; per cell,
/// [`Corpus::indices`], [`Corpus::values`] and [`Corpus::row_nnz`] cost one binary search over
/// the batch start cells and allocate nothing.
///
/// ```no_run
/// use cellarrow::Corpus;
/// let corpus = Corpus::open("pbmc.corpus")?; // written by `cellarrow convert` or `convert::convert`
/// println!("{} cells x {} genes", corpus.n_cells(), corpus.n_genes());
/// // Cell 0's non-zeros, viewed in the mapped matrix part.
/// let genes = corpus.indices(0).to_u32_vec();
/// let values = corpus.values(0).to_f64_vec();
/// assert_eq!(genes.len(), values.len());
/// // Obs columns as Arrow arrays, one row per cell.
/// let labels = corpus.obs_columns(&["cell_type"])?;
/// assert_eq!(labels[0].len() as u64, corpus.n_cells());
/// # Ok::<(), cellarrow::Error>(())
/// ```
pub struct Corpus {
    root: PathBuf,
    manifest: Manifest,
    matrix: reader::Matrix,
}

impl Corpus {
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
    /// Path of a single-file table `NAME.parquet` in the corpus directory (the tables of format
    /// 1). The tables of a corpus are read through
    /// [`Corpus::table_files`], which knows both formats.
    pub fn table_path(&self, table: &str) -> PathBuf {
        self.root.join(format!("{table}.parquet"))
    }

    /// The files of a table, in row order (one file in format 1, a dataset in format 2); empty
    /// when the corpus has no such table.
    pub fn table_files(&self, table: &str) -> Vec<PathBuf> {
        self.manifest
            .table_paths(table)
            .into_iter()
            .map(|p| self.root.join(p))
            .collect()
    }
}

/// Writes one matrix part as an uncompressed, 64-byte aligned Arrow IPC stream
/// (see [`PartWriter::create`]).
pub struct PartWriter {
    state: Box<part::PartState>,
}

/// What a finished part holds.
#[derive(Debug, Clone, PartialEq)]
pub struct PartSummary {
    pub n_cells: u64,
    pub nnz: u64,
    pub bytes: u64,
    /// Cold parts: the footer, for the manifest.
    pub footer: Option<PartFooter>,
}
