//! The set of cells a sampler draws from, and its one-column Parquet file.
//!
//! Depends only on arrow and parquet (not on DataFusion): `cellarrow sample --cohort FILE`
//! works without the `sql` feature. `query::QueryEngine::cohort` (feature `sql`) returns the
//! same [`Cohort`].

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

/// The cells a sampler draws from: all cells of a corpus, or a sorted, deduplicated list of
/// cell ids (for example the result of an SQL query or a cohort file). Cloning is cheap (the
/// list is shared).
///
/// Positions `0..len()` index the cohort in increasing cell id order. Two cohorts are equal
/// when they hold the same cells, whichever variant holds them.
///
/// ```
/// use cellarrow::sample::Cohort;
/// let c = Cohort::from_cells(vec![9, 3, 3, 5]);
/// assert_eq!(c.len(), 3);
/// assert_eq!(c.at(0), 3);
/// assert!(c.contains(5) && !c.contains(4));
/// assert_eq!(c.range(4, 10), 1..3); // cohort positions of cells in 4..10
/// assert_eq!(Cohort::all(4).at(2), 2);
/// assert_eq!(Cohort::all(3), Cohort::from_cells(vec![2, 1, 0]));
/// ```
#[derive(Debug, Clone)]
pub enum Cohort {
    /// Cells `0..n_cells`.
    All {
        /// Number of cells.
        n_cells: u64,
    },
    /// A sorted, deduplicated list of cell ids.
    Cells(Arc<[u64]>),
}

impl Cohort {
    /// Every cell of a corpus of `n_cells` cells.
    pub fn all(n_cells: u64) -> Cohort {
        Cohort::All { n_cells }
    }
    /// A list of cell ids in any order, duplicates allowed; sorted and deduplicated here.
    pub fn from_cells(mut cells: Vec<u64>) -> Cohort {
        if !cells.is_sorted_by(|a, b| a < b) {
            cells.sort_unstable();
            cells.dedup();
        }
        Cohort::Cells(cells.into())
    }
    /// Like [`Cohort::from_cells`], refusing ids `>= n_cells` with an `InvalidInput` error.
    pub fn from_cells_checked(cells: Vec<u64>, n_cells: u64) -> Result<Cohort> {
        let cohort = Cohort::from_cells(cells);
        cohort.check_range(n_cells)?;
        Ok(cohort)
    }
    /// Errors (`InvalidInput`) if a cell id is `>= n_cells`: a cohort of another corpus.
    pub fn check_range(&self, n_cells: u64) -> Result<()> {
        match self.last() {
            Some(last) if last >= n_cells => Err(Error::invalid_input(format!(
                "cohort holds cell {last}, but the corpus has {n_cells} cells (ids 0..{n_cells}); \
                 was it made from another corpus?"
            ))),
            _ => Ok(()),
        }
    }
    /// Number of cells.
    pub fn len(&self) -> u64 {
        match self {
            Cohort::All { n_cells } => *n_cells,
            Cohort::Cells(c) => c.len() as u64,
        }
    }
    /// True for an empty cohort.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The cell at cohort position `i` (`i < len()`).
    #[inline]
    pub fn at(&self, i: u64) -> u64 {
        match self {
            Cohort::All { n_cells } => {
                debug_assert!(i < *n_cells);
                i
            }
            Cohort::Cells(c) => c[i as usize],
        }
    }
    /// The largest cell id, if any.
    pub fn last(&self) -> Option<u64> {
        self.len().checked_sub(1).map(|i| self.at(i))
    }
    /// Cohort positions of the cells with ids in `lo..hi` (a contiguous range, since the
    /// cohort is sorted). Used to find a sample's cells: samples are contiguous id ranges.
    pub fn range(&self, lo: u64, hi: u64) -> std::ops::Range<u64> {
        match self {
            Cohort::All { n_cells } => lo.min(*n_cells)..hi.min(*n_cells).max(lo.min(*n_cells)),
            Cohort::Cells(c) => {
                let a = c.partition_point(|&x| x < lo);
                let b = c.partition_point(|&x| x < hi).max(a);
                a as u64..b as u64
            }
        }
    }
    /// Whether `cell` is in the cohort.
    pub fn contains(&self, cell: u64) -> bool {
        match self {
            Cohort::All { n_cells } => cell < *n_cells,
            Cohort::Cells(c) => c.binary_search(&cell).is_ok(),
        }
    }
    /// Iterates the cells in id order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.len()).map(move |i| self.at(i))
    }
    /// The cells of both cohorts.
    ///
    /// ```
    /// use cellarrow::sample::Cohort;
    /// let a = Cohort::from_cells(vec![1, 4, 6, 9]);
    /// assert_eq!(a.intersect(&Cohort::all(7)).to_vec(), [1, 4, 6]);
    /// ```
    pub fn intersect(&self, other: &Cohort) -> Cohort {
        match (self, other) {
            (Cohort::All { n_cells: a }, Cohort::All { n_cells: b }) => Cohort::all(*a.min(b)),
            (Cohort::All { n_cells }, c) | (c, Cohort::All { n_cells }) => {
                let r = c.range(0, *n_cells);
                Cohort::Cells(r.map(|p| c.at(p)).collect())
            }
            (Cohort::Cells(a), Cohort::Cells(b)) => {
                let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
                Cohort::Cells(
                    small
                        .iter()
                        .copied()
                        .filter(|x| large.binary_search(x).is_ok())
                        .collect(),
                )
            }
        }
    }
    /// The cell ids as a vector (a copy of the shared list; `All` is expanded).
    pub fn to_vec(&self) -> Vec<u64> {
        match self {
            Cohort::All { n_cells } => (0..*n_cells).collect(),
            Cohort::Cells(c) => c.to_vec(),
        }
    }
    /// The cell ids as a vector, consuming the cohort (see [`Cohort::to_vec`]).
    pub fn into_cells(self) -> Vec<u64> {
        self.to_vec()
    }
    /// The cohort as a one-column record batch (`cell: UInt64`, not null), the schema of a
    /// cohort file.
    pub fn to_record_batch(&self) -> RecordBatch {
        let array: ArrayRef = Arc::new(UInt64Array::from(self.to_vec()));
        RecordBatch::try_new(cohort_schema(), vec![array])
            .expect("one non-null UInt64 column matches the cohort schema")
    }
}

impl PartialEq for Cohort {
    fn eq(&self, other: &Cohort) -> bool {
        match (self, other) {
            (Cohort::All { n_cells: a }, Cohort::All { n_cells: b }) => a == b,
            (Cohort::Cells(a), Cohort::Cells(b)) => a == b,
            (Cohort::All { n_cells }, Cohort::Cells(c))
            | (Cohort::Cells(c), Cohort::All { n_cells }) => {
                c.len() as u64 == *n_cells && c.last().is_none_or(|&l| l + 1 == *n_cells)
            }
        }
    }
}

impl Eq for Cohort {}

impl From<Vec<u64>> for Cohort {
    fn from(cells: Vec<u64>) -> Self {
        Cohort::from_cells(cells)
    }
}

fn cohort_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![Field::new(
        CELL_COLUMN,
        DataType::UInt64,
        false,
    )]))
}

/// Appends the `cell` column of `batch` to `out`. Accepts any integer type; errors on nulls
/// and negative ids. `what` names the source in error messages.
pub(crate) fn append_cells(batch: &RecordBatch, out: &mut Vec<u64>, what: &str) -> Result<()> {
    let Some(column) = batch.column_by_name(CELL_COLUMN) else {
        let names: Vec<&str> = batch
            .schema_ref()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        return Err(missing_cell_column(what, &names));
    };
    let ids = integer_ids(
        column,
        CELL_COLUMN,
        "cell ids",
        what,
        ErrorKind::InvalidInput,
    )?;
    out.extend_from_slice(ids.values());
    Ok(())
}

/// An id column (cell ids, block ids) as `u64`: any integer type, refusing nulls, negative
/// and out-of-range values with an error of `kind` naming `what` and the column.
pub(crate) fn integer_ids(
    column: &dyn Array,
    name: &str,
    ids: &str,
    what: &str,
    kind: ErrorKind,
) -> Result<arrow::array::UInt64Array> {
    if column.null_count() > 0 {
        return Err(Error::new(
            kind,
            format!(
                "{what}: column `{name}` has {} null values; {ids} must not be null",
                column.null_count()
            ),
        ));
    }
    if !is_integral(column.data_type()) {
        return Err(Error::new(
            kind,
            format!(
                "{what}: column `{name}` has type {}, expected integer {ids} (UInt64)",
                column.data_type()
            ),
        ));
    }
    let cast = arrow::compute::cast_with_options(
        column,
        &DataType::UInt64,
        &arrow::compute::CastOptions {
            safe: false,
            ..Default::default()
        },
    )
    .map_err(|e| {
        Error::new(
            kind,
            format!("{what}: column `{name}` holds values that are not {ids}: {e}"),
        )
    })?;
    Ok(cast.as_primitive::<UInt64Type>().clone())
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
            if columns.is_empty() {
                "(none)".to_string()
            } else {
                columns.join(", ")
            }
        ),
    )
}

/// Reads a cohort file: a Parquet file with an integer column `cell` (other columns are
/// ignored). Ids are sorted and deduplicated, so files written by pandas or polars work too.
pub fn read_cohort(path: impl AsRef<Path>) -> Result<Cohort> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|e| Error::io(path, "opening cohort", e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).at(path)?;
    let Some(index) = builder
        .schema()
        .fields()
        .iter()
        .position(|f| f.name() == CELL_COLUMN)
    else {
        let names: Vec<&str> = builder
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
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
    let mut writer =
        ArrowWriter::try_new(tmp.as_file_mut(), cohort_schema(), Some(props)).at(path)?;
    // Row groups of 1M ids keep memory flat for large cohorts.
    let n = cohort.len();
    let mut start = 0;
    while start < n {
        let end = n.min(start + (1 << 20));
        let array: ArrayRef = Arc::new(UInt64Array::from_iter_values(
            (start..end).map(|p| cohort.at(p)),
        ));
        start = end;
        let batch = RecordBatch::try_new(cohort_schema(), vec![array]).at(path)?;
        writer.write(&batch).at(path)?;
    }
    writer.close().at(path)?;
    tmp.persist(path)
        .map_err(|e| Error::io(path, "writing cohort", e.error))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;

    fn write(path: &Path, columns: Vec<(&str, ArrayRef)>) {
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let file = File::create(path).unwrap();
        let mut w = ArrowWriter::try_new(file, batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }

    fn column_u64(batches: &[RecordBatch], name: &str) -> Vec<u64> {
        batches
            .iter()
            .flat_map(|b| {
                let c = arrow::compute::cast(b.column_by_name(name).unwrap(), &DataType::UInt64)
                    .unwrap();
                c.as_primitive::<UInt64Type>().values().to_vec()
            })
            .collect()
    }

    #[test]
    fn cohorts_compare_by_cells_and_intersect() {
        assert_eq!(Cohort::all(3), Cohort::from_cells(vec![0, 1, 2]));
        assert_ne!(Cohort::all(3), Cohort::from_cells(vec![0, 1, 3]));
        assert_ne!(Cohort::all(2), Cohort::from_cells(vec![0, 1, 2]));
        assert_eq!(Cohort::all(0), Cohort::from_cells(vec![]));
        let a = Cohort::from_cells(vec![8, 1, 4, 6]);
        let b = Cohort::from_cells(vec![4, 5, 6, 7, 8]);
        assert_eq!(a.intersect(&b).to_vec(), [4, 6, 8]);
        assert_eq!(a.intersect(&Cohort::all(5)).to_vec(), [1, 4]);
        assert_eq!(Cohort::all(5).intersect(&Cohort::all(3)), Cohort::all(3));
        assert_eq!(a.last(), Some(8));
        assert!(a.check_range(9).is_ok());
        let e = a.check_range(8).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(Cohort::from_cells_checked(vec![3, 9], 9).is_err());
        assert_eq!(a.to_record_batch().num_rows(), 4);
    }

    #[test]
    fn all_cohorts_are_written_as_their_cells() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("all.parquet");
        write_cohort(&path, &Cohort::all(5)).unwrap();
        assert_eq!(read_cohort(&path).unwrap().to_vec(), [0, 1, 2, 3, 4]);
    }

    #[test]
    fn cohort_file_round_trips_as_one_sorted_uint64_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.parquet");
        let c = Cohort::from_cells(vec![9, 3, 3, 100, 0]);
        write_cohort(&path, &c).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        let schema = reader.schema().clone();
        assert_eq!(schema.fields().len(), 1);
        assert_eq!(schema.field(0).name(), "cell");
        assert_eq!(schema.field(0).data_type(), &DataType::UInt64);
        assert!(!schema.field(0).is_nullable());
        let batches: Vec<_> = reader
            .build()
            .unwrap()
            .collect::<std::result::Result<_, _>>()
            .unwrap();
        assert_eq!(column_u64(&batches, "cell"), [0, 3, 9, 100]);
        assert_eq!(read_cohort(&path).unwrap(), c);
        assert!(
            std::fs::read_dir(dir.path()).unwrap().count() == 1,
            "no temporary file left behind"
        );
    }

    #[test]
    fn cohort_files_from_other_tools_are_normalised_or_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pandas.parquet");
        write(
            &p,
            vec![
                (
                    "other",
                    Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef,
                ),
                ("cell", Arc::new(Int64Array::from(vec![5, 1, 5]))),
            ],
        );
        assert_eq!(read_cohort(&p).unwrap().to_vec(), [1, 5]);
        let p = dir.path().join("negative.parquet");
        write(
            &p,
            vec![("cell", Arc::new(Int64Array::from(vec![5, -1])) as ArrayRef)],
        );
        assert_eq!(read_cohort(&p).unwrap_err().kind(), ErrorKind::InvalidInput);
        let p = dir.path().join("nocell.parquet");
        write(
            &p,
            vec![("id", Arc::new(Int64Array::from(vec![5])) as ArrayRef)],
        );
        let err = read_cohort(&p).unwrap_err();
        assert!(
            err.to_string().contains("no `cell` column") && err.to_string().contains("id"),
            "{err}"
        );
    }
}
