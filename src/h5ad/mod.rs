//! Layer 1: reading AnnData `.h5ad` files.
//!
//! Reads X (CSR, CSC, dense), `layers/*` and `raw/X` in bounded row chunks, obs/var dataframes
//! as Arrow arrays, and `obsm` coordinate arrays, in both the current encoding
//! (`encoding-type` attributes) and the legacy pre-0.7 layout.

use std::path::{Path, PathBuf};

use arrow::array::ArrayRef;

use crate::error::Result;

/// Which matrix of the file to read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum MatrixSource {
    /// `/X`.
    #[default]
    X,
    /// `/layers/NAME`.
    Layer(String),
    /// `/raw/X` (legacy files: `/raw.X`); its genes are `raw/var`.
    Raw,
}

/// How a matrix is stored in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatrixEncoding {
    Csr,
    Csc,
    Dense,
}

/// A block of consecutive rows as CSR, in the source's gene order.
///
/// `indptr` is local: `indptr[0] == 0` and row `row_start + i` owns
/// `indices[indptr[i]..indptr[i+1]]`. Indices are as in the file (not sorted or deduplicated
/// by the reader); values are widened to f64, which is exact for every supported dtype but
/// 64-bit integers above 2^53.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CsrChunk {
    pub row_start: u64,
    pub indptr: Vec<u64>,
    pub indices: Vec<u32>,
    pub values: Vec<f64>,
}

impl CsrChunk {
    /// Number of rows in the chunk.
    pub fn n_rows(&self) -> usize {
        self.indptr.len().saturating_sub(1)
    }
}

/// What the values of a matrix look like, so the converter can choose the narrowest lossless type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ValueStats {
    /// Stored non-zero values seen.
    pub count: u64,
    pub min: f64,
    pub max: f64,
    /// Every value is a whole number.
    pub all_integer: bool,
    /// Every value round-trips through f32.
    pub all_f32_exact: bool,
    /// NaN or infinite values seen.
    pub non_finite: u64,
}

/// A dataframe (obs, var, raw/var): its index and its columns as Arrow arrays.
///
/// Categoricals are `DictionaryArray<Int32, Utf8>` (dictionary values in category order);
/// string arrays are `Utf8`; numeric columns keep their dtype; bool is `Boolean`; nullable
/// integer/boolean columns carry their mask as nulls.
#[derive(Debug, Clone)]
pub struct Frame {
    pub index: Vec<String>,
    pub columns: Vec<(String, ArrayRef)>,
}

/// An open h5ad file.
pub struct H5ad {
    path: PathBuf,
    file: hdf5::File,
}

/// One matrix of an open file, readable in row chunks.
pub struct Matrix<'a> {
    h5: &'a H5ad,
    _private: (),
}

impl H5ad {
    /// Opens `path`; a file that is not HDF5 gets [`crate::ErrorKind::NotHdf5`].
    pub fn open(path: impl AsRef<Path>) -> Result<H5ad> {
        todo!()
    }
    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Number of cells (rows of X).
    pub fn n_obs(&self) -> Result<u64> {
        todo!()
    }
    /// The obs dataframe; `columns` limits which columns are read (the index is always read).
    pub fn obs(&self, columns: Option<&[String]>) -> Result<Frame> {
        todo!()
    }
    /// The var dataframe of `source` (`raw/var` for [`MatrixSource::Raw`]).
    pub fn var(&self, source: &MatrixSource) -> Result<Frame> {
        todo!()
    }
    /// Gene names for `source`: the var index, or the string/categorical column `column`.
    pub fn gene_names(&self, source: &MatrixSource, column: Option<&str>) -> Result<Vec<String>> {
        todo!()
    }
    /// `obsm/KEY` as row-major f64 with its column count, or `None` when the key is absent.
    pub fn obsm(&self, key: &str) -> Result<Option<(usize, Vec<f64>)>> {
        todo!()
    }
    /// The matrix of `source`.
    pub fn matrix(&self, source: &MatrixSource) -> Result<Matrix<'_>> {
        todo!()
    }
}

impl<'a> Matrix<'a> {
    /// (rows, columns).
    pub fn shape(&self) -> (u64, u64) {
        todo!()
    }
    pub fn encoding(&self) -> MatrixEncoding {
        todo!()
    }
    /// The HDF5 object path, e.g. `/X` or `/layers/counts`.
    pub fn object(&self) -> &str {
        todo!()
    }
    /// Rows `start..end` as CSR. Validates what it reads: indptr monotone and consistent with
    /// the data length, indices within the column count.
    pub fn read_rows(&self, start: u64, end: u64) -> Result<CsrChunk> {
        todo!()
    }
    /// Consecutive chunks covering all rows, each of at most `max_nnz` stored values (a single
    /// row larger than that is its own chunk).
    pub fn chunks(&self, max_nnz: usize) -> impl Iterator<Item = Result<CsrChunk>> + '_ {
        std::iter::empty()
    }
    /// Scans every stored value once, in bounded chunks.
    pub fn value_stats(&self) -> Result<ValueStats> {
        todo!()
    }
}
