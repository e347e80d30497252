//! A cohort: a sorted set of global cell ids, and its one-column Parquet file.
//!
//! Depends only on arrow and parquet (not on DataFusion), so samplers can read cohort files.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, UInt64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::error::{Context, Error, ErrorKind, Result};

/// The name of the cell id column in query results and cohort files.
pub const CELL_COLUMN: &str = "cell";

/// A set of global cell ids, sorted and without duplicates.
///
/// ```
/// use cellarrow::query::Cohort;
/// let c = Cohort::from_cells(vec![7, 2, 7, 3]);
/// assert_eq!(c.cells(), &[2, 3, 7]);
/// assert!(c.contains(3) && !c.contains(4));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cohort {
    cells: Vec<u64>,
}

impl Cohort {
    /// A cohort of `cells` in any order, duplicates allowed.
    pub fn from_cells(mut cells: Vec<u64>) -> Cohort {
        if !cells.is_sorted_by(|a, b| a < b) {
            cells.sort_unstable();
            cells.dedup();
        }
        Cohort { cells }
    }
    /// Every cell `0 .. n_cells`.
    pub fn all(n_cells: u64) -> Cohort {
        Cohort { cells: (0..n_cells).collect() }
    }
    /// The cell ids, sorted and unique.
    pub fn cells(&self) -> &[u64] {
        &self.cells
    }
    /// Number of cells.
    pub fn len(&self) -> usize {
        self.cells.len()
    }
    /// Whether the cohort has no cell.
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }
    /// Whether `cell` is in the cohort (binary search).
    pub fn contains(&self, cell: u64) -> bool {
        self.cells.binary_search(&cell).is_ok()
    }
    /// The cell ids, consuming the cohort.
    pub fn into_cells(self) -> Vec<u64> {
        self.cells
    }
    /// Errors if a cell id is `>= n_cells` (a cohort of another corpus).
    pub fn check_range(&self, n_cells: u64) -> Result<()> {
        match self.cells.last() {
            Some(&last) if last >= n_cells => Err(Error::invalid_input(format!(
                "cohort holds cell {last}, but the corpus has {n_cells} cells (ids 0..{n_cells}); \
                 was it made from another corpus?"
            ))),
            _ => Ok(()),
        }
    }
    /// The cohort as a one-column record batch (`cell: UInt64`, not null).
    pub fn to_record_batch(&self) -> RecordBatch {
        let array: ArrayRef = Arc::new(UInt64Array::from(self.cells.clone()));
        RecordBatch::try_new(cohort_schema(), vec![array])
            .expect("one non-null UInt64 column matches the cohort schema")
    }
}

impl From<Vec<u64>> for Cohort {
    fn from(cells: Vec<u64>) -> Self {
        Cohort::from_cells(cells)
    }
}

fn cohort_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![Field::new(CELL_COLUMN, DataType::UInt64, false)]))
}

/// Appends the `cell` column of `batch` to `out`. Accepts any integer type; errors on nulls
/// and negative ids. `what` names the source in error messages.
pub(crate) fn append_cells(batch: &RecordBatch, out: &mut Vec<u64>, what: &str) -> Result<()> {
    let Some(column) = batch.column_by_name(CELL_COLUMN) else {
        let names: Vec<&str> = batch.schema_ref().fields().iter().map(|f| f.name().as_str()).collect();
        return Err(missing_cell_column(what, &names));
    };
    if column.null_count() > 0 {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("{what}: column `cell` has {} null values; cell ids must not be null", column.null_count()),
        ));
    }
    if !is_integral(column.data_type()) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("{what}: column `cell` has type {}, expected integer cell ids (UInt64)", column.data_type()),
        ));
    }
    let cast = arrow::compute::cast_with_options(
        column,
        &DataType::UInt64,
        &arrow::compute::CastOptions { safe: false, ..Default::default() },
    )
    .map_err(|e| {
        Error::new(ErrorKind::InvalidInput, format!("{what}: column `cell` holds ids that are not valid cell ids: {e}"))
    })?;
    out.extend_from_slice(cast.as_primitive::<UInt64Type>().values());
    Ok(())
}

/// Integer types, and decimals of scale 0 (what DataFusion makes of `UInt64 + Int64`).
pub(crate) fn is_integral(t: &DataType) -> bool {
    t.is_integer() || matches!(t, DataType::Decimal128(_, 0) | DataType::Decimal256(_, 0))
}

/// The error for a result without a `cell` column.
pub(crate) fn missing_cell_column(what: &str, columns: &[&str]) -> Error {
    Error::new(
        ErrorKind::Query,
        format!(
            "{what} has no `cell` column (global cell ids); its columns are: {}. \
             Select it, e.g. `SELECT cell FROM obs WHERE ...`",
            if columns.is_empty() { "(none)".to_string() } else { columns.join(", ") }
        ),
    )
}

/// Reads a cohort file: a Parquet file with an integer column `cell` (other columns are
/// ignored). Ids are sorted and deduplicated, so files written by pandas or polars work too.
pub fn read_cohort(path: impl AsRef<Path>) -> Result<Cohort> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|e| Error::io(path, "opening cohort", e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).at(path)?;
    let Some(index) = builder.schema().fields().iter().position(|f| f.name() == CELL_COLUMN) else {
        let names: Vec<&str> = builder.schema().fields().iter().map(|f| f.name().as_str()).collect();
        return Err(missing_cell_column("cohort file", &names).with_path(path));
    };
    let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), [index]);
    let reader = builder.with_projection(mask).build().at(path)?;
    let mut cells = Vec::new();
    for batch in reader {
        let batch = batch.at(path)?;
        append_cells(&batch, &mut cells, "cohort file").map_err(|e| e.with_path(path))?;
    }
    Ok(Cohort::from_cells(cells))
}

/// Writes `cohort` as a zstd Parquet file with one non-null UInt64 column `cell`, sorted and
/// unique. The file appears atomically (written beside `path`, then renamed).
pub fn write_cohort(path: impl AsRef<Path>, cohort: &Cohort) -> Result<()> {
    let path = path.as_ref();
    let mut tmp = temp_beside(path)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let mut writer = ArrowWriter::try_new(tmp.as_file_mut(), cohort_schema(), Some(props)).at(path)?;
    // Row groups of 1M ids keep memory flat for large cohorts.
    for chunk in cohort.cells.chunks(1 << 20) {
        let array: ArrayRef = Arc::new(UInt64Array::from(chunk.to_vec()));
        let batch = RecordBatch::try_new(cohort_schema(), vec![array]).at(path)?;
        writer.write(&batch).at(path)?;
    }
    writer.close().at(path)?;
    tmp.persist(path).map_err(|e| Error::io(path, "writing cohort", e.error))?;
    Ok(())
}

/// A temporary file in the directory of `path`, so that `persist` is an atomic rename.
pub(crate) fn temp_beside(path: &Path) -> Result<tempfile::NamedTempFile> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    tempfile::Builder::new()
        .prefix(".cellarrow-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, "creating a temporary file", e))
}
