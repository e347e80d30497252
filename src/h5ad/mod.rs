//! Layer 1: reading AnnData `.h5ad` files.
//!
//! Reads X (CSR, CSC, dense), `layers/*` and `raw/X` in bounded row chunks, obs/var dataframes
//! as Arrow arrays, and `obsm` coordinate arrays, in both the current encoding
//! (`encoding-type` attributes) and the legacy pre-0.7 layout.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arrow::array::ArrayRef;

use crate::error::{Error, ErrorKind, Result};

mod frame;
mod matrix;
mod util;

#[cfg(test)]
mod tests;

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
    /// Compressed sparse rows (`csr_matrix`, legacy `h5sparse_format = csr`).
    Csr,
    /// Compressed sparse columns: read by streaming the columns once per row window.
    Csc,
    /// A 2-D numeric dataset.
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
    /// Source row of the chunk's first row.
    pub row_start: u64,
    /// Local row pointers, `n_rows + 1` entries starting at 0.
    pub indptr: Vec<u64>,
    /// Column (gene) indices of the stored values.
    pub indices: Vec<u32>,
    /// The stored values, widened to f64.
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
    /// Smallest finite value (0 when there is none).
    pub min: f64,
    /// Largest finite value (0 when there is none).
    pub max: f64,
    /// Every value is a whole number.
    pub all_integer: bool,
    /// Every value round-trips through f32.
    pub all_f32_exact: bool,
    /// NaN or infinite values seen.
    pub non_finite: u64,
}

impl ValueStats {
    /// No values seen yet (`min > max` until the first value).
    pub fn empty() -> Self {
        ValueStats {
            count: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            all_integer: true,
            all_f32_exact: true,
            non_finite: 0,
        }
    }

    /// Adds one value; zeros are not stored values and are skipped.
    pub fn push(&mut self, v: f64) {
        if v == 0.0 {
            return;
        }
        self.count += 1;
        if !v.is_finite() {
            self.non_finite += 1;
            self.all_integer = false;
            return;
        }
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        if v.fract() != 0.0 {
            self.all_integer = false;
        }
        if (v as f32) as f64 != v {
            self.all_f32_exact = false;
        }
    }

    /// The stats of two disjoint sets of values together.
    ///
    /// ```
    /// use cellarrow::h5ad::ValueStats;
    /// let (mut a, mut b) = (ValueStats::empty(), ValueStats::empty());
    /// a.push(3.0);
    /// b.push(0.5);
    /// let both = a.merge(b);
    /// assert_eq!((both.count, both.min, both.max, both.all_integer), (2, 0.5, 3.0, false));
    /// ```
    pub fn merge(self, other: ValueStats) -> ValueStats {
        ValueStats {
            count: self.count + other.count,
            min: self.min.min(other.min),
            max: self.max.max(other.max),
            all_integer: self.all_integer && other.all_integer,
            all_f32_exact: self.all_f32_exact && other.all_f32_exact,
            non_finite: self.non_finite + other.non_finite,
        }
    }
}

/// A dataframe (obs, var, raw/var): its index and its columns as Arrow arrays.
///
/// Categoricals are `DictionaryArray<Int32, Utf8>` (dictionary values in category order);
/// string arrays are `Utf8`; numeric columns keep their dtype; bool is `Boolean`; nullable
/// integer/boolean columns carry their mask as nulls.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The index (`obs_names` / `var_names`).
    pub index: Vec<String>,
    /// The columns in the file's `column-order`.
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
    object: String,
    encoding: MatrixEncoding,
    shape: (u64, u64),
    store: matrix::Store,
    /// CSC only: column pointers and per-row counts, computed on first use (one pass over the
    /// row indices); O(n_cols + n_rows) memory.
    csc: OnceLock<matrix::CscIndex>,
}

impl H5ad {
    /// Opens `path`; a file that is not HDF5 gets [`crate::ErrorKind::NotHdf5`].
    pub fn open(path: impl AsRef<Path>) -> Result<H5ad> {
        let path = path.as_ref().to_path_buf();
        std::fs::File::open(&path).map_err(|e| Error::io(&path, "opening", e))?;
        // The library prints its error stack to stderr unless told not to; errors are reported
        // through `Error` instead.
        hdf5::silence_errors(true);
        let file = hdf5::File::open(&path).map_err(|e| {
            Error::new(ErrorKind::NotHdf5, format!("not a readable HDF5 file: {e}"))
                .with_path(&path)
        })?;
        Ok(H5ad { path, file })
    }
    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Number of cells (rows of X; the length of obs when X is absent).
    pub fn n_obs(&self) -> Result<u64> {
        if self.file.link_exists("X") {
            return Ok(self.matrix(&MatrixSource::X)?.shape().0);
        }
        match frame::frame_len(self, "/obs")? {
            Some(n) => Ok(n),
            None => Err(Error::h5ad(
                &self.path,
                "/X",
                "no X and no obs: the number of cells is unknown",
            )),
        }
    }
    /// The obs dataframe; `columns` limits which columns are read (the index is always read).
    /// Requested columns that the file lacks are skipped.
    pub fn obs(&self, columns: Option<&[String]>) -> Result<Frame> {
        frame::read_frame(self, "/obs", columns)
    }
    /// The var dataframe of `source` (`raw/var` for [`MatrixSource::Raw`]).
    pub fn var(&self, source: &MatrixSource) -> Result<Frame> {
        frame::read_frame(self, &self.var_object(source), None)
    }
    /// The var index of `source` and those of `columns` it has (absent ones are skipped).
    pub fn var_columns(&self, source: &MatrixSource, columns: &[String]) -> Result<Frame> {
        frame::read_frame(self, &self.var_object(source), Some(columns))
    }
    /// Gene names for `source`: the var index, or the string/categorical column `column`.
    pub fn gene_names(&self, source: &MatrixSource, column: Option<&str>) -> Result<Vec<String>> {
        frame::gene_names(self, &self.var_object(source), column)
    }
    /// Names of the ordered categorical columns of a dataframe (`/obs`, `/var`, `/raw/var`):
    /// Arrow dictionary arrays carry no ordering, so this reports it.
    pub fn ordered_categoricals(&self, object: &str) -> Result<Vec<String>> {
        frame::ordered_categoricals(self, object)
    }
    /// `obsm/KEY` as row-major f64 with its column count, or `None` when the key is absent.
    pub fn obsm(&self, key: &str) -> Result<Option<(usize, Vec<f64>)>> {
        frame::obsm(self, key)
    }
    /// The matrix of `source`.
    pub fn matrix(&self, source: &MatrixSource) -> Result<Matrix<'_>> {
        matrix::open_matrix(self, source)
    }

    /// The HDF5 object holding the var dataframe of `source`.
    fn var_object(&self, source: &MatrixSource) -> String {
        match source {
            MatrixSource::Raw
                if !self.file.link_exists("raw") && self.file.link_exists("raw.var") =>
            {
                "/raw.var".to_string()
            }
            MatrixSource::Raw => "/raw/var".to_string(),
            _ => "/var".to_string(),
        }
    }
}

impl<'a> Matrix<'a> {
    /// (rows, columns).
    pub fn shape(&self) -> (u64, u64) {
        self.shape
    }
    /// How the matrix is stored.
    pub fn encoding(&self) -> MatrixEncoding {
        self.encoding
    }
    /// The HDF5 object path, e.g. `/X` or `/layers/counts`.
    pub fn object(&self) -> &str {
        &self.object
    }
    /// Rows `start..end` as CSR. Validates what it reads: indptr monotone and consistent with
    /// the data length, indices within the column count.
    pub fn read_rows(&self, start: u64, end: u64) -> Result<CsrChunk> {
        self.read_rows_impl(start, end)
    }
    /// Consecutive chunks covering all rows, each of at most `max_nnz` stored values (a single
    /// row larger than that is its own chunk).
    pub fn chunks(&self, max_nnz: usize) -> impl Iterator<Item = Result<CsrChunk>> + '_ {
        self.chunks_impl(max_nnz)
    }
    /// Scans every stored value once, in bounded chunks.
    pub fn value_stats(&self) -> Result<ValueStats> {
        self.value_stats_impl()
    }
}
