//! Parquet tables of the corpus: writing (zstd, 64Ki-row groups) and reading with projection.

use std::fs::File;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use arrow::array::{Array, ArrayRef, AsArray, StringArray, UInt64Array};
use arrow::datatypes::{DataType, SchemaRef, UInt64Type};
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use super::Corpus;
use crate::error::{Context, Error, ErrorKind, Result};

/// Rows per Parquet row group.
pub const ROW_GROUP_ROWS: usize = 64 * 1024;

/// Writes record batches to a zstd-compressed Parquet file, replacing any file at `path`, and
/// returns its size in bytes. Row groups hold 64Ki rows; dictionary-encoded Arrow columns
/// (categoricals) read back dictionary-encoded, because the Arrow schema is stored in the file.
/// All batches must share one schema; pass one empty batch to write a table with no rows.
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::{ArrayRef, UInt32Array};
/// use arrow::record_batch::RecordBatch;
/// let dir = tempfile::tempdir().unwrap();
/// let batch = RecordBatch::try_from_iter([("gene", Arc::new(UInt32Array::from(vec![0, 1])) as ArrayRef)])?;
/// let bytes = cellarrow::corpus::write_parquet(&dir.path().join("genes.parquet"), &[batch])?;
/// assert!(bytes > 0);
/// # Ok::<(), cellarrow::Error>(())
/// ```
pub fn write_parquet(path: &Path, batches: &[RecordBatch]) -> Result<u64> {
    let Some(first) = batches.first() else {
        return Err(Error::invalid_input(
            "write_parquet: no batches, so no schema (pass one empty batch)",
        )
        .with_path(path));
    };
    let schema = first.schema();
    let props = writer_properties(&schema);
    let file = File::create(path).map_err(|e| Error::io(path, "creating", e))?;
    let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(props)).at(path)?;
    for (i, b) in batches.iter().enumerate() {
        if b.schema().fields() != schema.fields() {
            return Err(Error::invalid_input(format!(
                "write_parquet: batch {i} has a different schema from batch 0"
            ))
            .with_path(path));
        }
        writer.write(b).at(path)?;
    }
    let file = writer.into_inner().at(path)?;
    file.sync_all().map_err(|e| Error::io(path, "syncing", e))?;
    let bytes = file
        .metadata()
        .map_err(|e| Error::io(path, "reading size", e))?
        .len();
    Ok(bytes)
}

/// The settings of every Parquet table of a corpus: zstd, row groups of [`ROW_GROUP_ROWS`]
/// rows, and dictionary pages only for the columns that are dictionary-encoded in Arrow
/// (categoricals, sample ids). The other columns hold mostly distinct values (cell ids, obs
/// names, coordinates): a Parquet dictionary of them costs a hash-table insert per value, about
/// a sixth of converting a 1,000,000-cell file, and is dropped for plain pages once full.
pub(crate) fn writer_properties(schema: &arrow::datatypes::Schema) -> WriterProperties {
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_dictionary_enabled(false);
    for f in schema.fields() {
        if matches!(f.data_type(), DataType::Dictionary(..)) {
            props = props.set_column_dictionary_enabled(ColumnPath::from(f.name().as_str()), true);
        }
    }
    props.build()
}

/// Reads a Parquet file, optionally only some columns (returned in the order asked).
/// Errors (including a corrupted file) are [`ErrorKind::InvalidCorpus`] naming the file.
pub fn read_parquet(path: &Path, columns: Option<&[&str]>) -> Result<Vec<RecordBatch>> {
    let mut out = Vec::new();
    scan_parquet(path, columns, |b| {
        out.push(b);
        Ok(())
    })?;
    Ok(out)
}

/// Streams a Parquet file batch by batch (64Ki rows), optionally only some columns in the
/// order asked, so that memory stays bounded whatever the table size.
pub fn scan_parquet(
    path: &Path,
    columns: Option<&[&str]>,
    mut f: impl FnMut(RecordBatch) -> Result<()>,
) -> Result<()> {
    let bad = |msg: String| Error::corpus(path, msg);
    let file = File::open(path).map_err(|e| Error::io(path, "opening", e))?;
    // The parquet crate reports most corruption as errors but can panic on some; never let a
    // damaged corpus file take the process down.
    catch_unwind(AssertUnwindSafe(|| -> Result<()> {
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| bad(format!("not a readable Parquet file: {e}")))?;
        let arrow_schema = builder.schema().clone();
        let (builder, order) = match columns {
            None => (builder, None),
            Some(cols) => {
                let mut idx = Vec::with_capacity(cols.len());
                for c in cols {
                    let i = arrow_schema.index_of(c).map_err(|_| {
                        bad(format!(
                            "no column {c:?} (has: {})",
                            arrow_schema
                                .fields()
                                .iter()
                                .map(|f| f.name().as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    })?;
                    idx.push(i);
                }
                let mask = ProjectionMask::roots(builder.parquet_schema(), idx.iter().copied());
                // The projected batch keeps file order; map each requested column to its place.
                let mut sorted = idx.clone();
                sorted.sort_unstable();
                sorted.dedup();
                let order: Vec<usize> = idx
                    .iter()
                    .map(|i| sorted.binary_search(i).expect("index is in sorted"))
                    .collect();
                (builder.with_projection(mask), Some(order))
            }
        };
        let reader = builder
            .with_batch_size(ROW_GROUP_ROWS)
            .build()
            .map_err(|e| bad(format!("reading Parquet: {e}")))?;
        for b in reader {
            let b = b.map_err(|e| bad(format!("reading Parquet: {e}")))?;
            f(match &order {
                Some(o) => b
                    .project(o)
                    .map_err(|e| bad(format!("projecting columns: {e}")))?,
                None => b,
            })?;
        }
        Ok(())
    }))
    .map_err(|_| bad("malformed Parquet file (the reader panicked)".into()))?
}

impl Corpus {
    /// Reads a whole table of the corpus (`obs`, `genes`, `samples`, `gene_counts`, ...), every
    /// file of it in row order, optionally only some columns, in the order asked.
    ///
    /// `genes` is served as in format 1 whatever the format: `gene`, `name` (and any other
    /// identity columns), then `n_samples` and `n_cells`, which format 2 keeps in the
    /// `gene_counts` table (one file per conversion or append) and which are summed here.
    ///
    /// ```no_run
    /// let corpus = cellarrow::Corpus::open("corpus")?;
    /// let obs = corpus.read_table("obs", Some(&["cell", "sample_id"]))?;
    /// # Ok::<(), cellarrow::Error>(())
    /// ```
    pub fn read_table(&self, table: &str, columns: Option<&[&str]>) -> Result<Vec<RecordBatch>> {
        if table.is_empty()
            || !table
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(Error::invalid_input(format!(
                "{table:?} is not a corpus table name"
            )));
        }
        let files = self.table_files(table);
        if files.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("the corpus has no {table} table"),
            )
            .with_path(self.table_path(table)));
        }
        if table == "genes" && self.manifest().format_version >= 2 {
            return read_genes_with_counts(self.root(), self.manifest(), columns);
        }
        let mut out = Vec::new();
        for f in &files {
            out.extend(read_parquet(f, columns)?);
        }
        Ok(out)
    }

    /// The Arrow schema of a table as [`Corpus::read_table`] gives it (all files of a table
    /// share one schema).
    pub fn table_schema(&self, table: &str) -> Result<SchemaRef> {
        if table == "genes" && self.manifest().format_version >= 2 {
            let batches = self.read_table("genes", None)?;
            return batches
                .first()
                .map(|b| b.schema())
                .ok_or_else(|| Error::corpus(self.root(), "the genes table has no batches"));
        }
        let files = self.table_files(table);
        let Some(first) = files.first() else {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("the corpus has no {table} table"),
            )
            .with_path(self.table_path(table)));
        };
        parquet_schema(first)
    }

    /// The gene vocabulary, in id order (the `name` column of the genes table).
    pub fn gene_names(&self) -> Result<Vec<String>> {
        let path = self
            .table_files("genes")
            .pop()
            .unwrap_or_else(|| self.table_path("genes"));
        let mut batches = Vec::new();
        for f in self.table_files("genes") {
            batches.extend(read_parquet(&f, Some(&["name"]))?);
        }
        let names = column_strings(&path, "name", &batches)?;
        if names.len() as u64 != self.n_genes() {
            return Err(Error::corpus(
                &path,
                format!(
                    "has {} genes, manifest.json says {}",
                    names.len(),
                    self.n_genes()
                ),
            ));
        }
        Ok(names)
    }
}

/// The genes table of a format-2 corpus as cellarrow serves it: the identity files, then
/// `n_samples` and `n_cells` summed over the `gene_counts` files. Format 2 genes: the identity files, then `n_samples` and `n_cells` summed over the
/// `gene_counts` files.
pub fn read_genes_with_counts(
    root: &Path,
    m: &super::Manifest,
    columns: Option<&[&str]>,
) -> Result<Vec<RecordBatch>> {
    let files: Vec<std::path::PathBuf> = m
        .table_paths("genes")
        .iter()
        .map(|p| root.join(p))
        .collect();
    let n = m.n_genes as usize;
    let (mut n_samples, mut n_cells) = (vec![0u32; n], vec![0u64; n]);
    for f in m
        .table_paths(super::GENE_COUNTS_TABLE)
        .iter()
        .map(|p| root.join(p))
    {
        let mut row = 0u64;
        scan_parquet(&f, Some(&["gene", "n_samples", "n_cells"]), |b| {
            let g = as_u64(&f, "gene", b.column(0), row)?;
            let s = as_u64(&f, "n_samples", b.column(1), row)?;
            let c = as_u64(&f, "n_cells", b.column(2), row)?;
            for i in 0..b.num_rows() {
                let gene = g.value(i) as usize;
                if gene >= n {
                    return Err(Error::corpus(
                        &f,
                        format!("row {}: gene {gene} >= n_genes {n}", row + i as u64),
                    ));
                }
                n_samples[gene] = n_samples[gene].saturating_add(s.value(i) as u32);
                n_cells[gene] += c.value(i);
            }
            row += b.num_rows() as u64;
            Ok(())
        })?;
    }
    let mut out = Vec::new();
    let mut at = 0usize;
    for f in &files {
        for b in read_parquet(f, None)? {
            let rows = b.num_rows();
            if at + rows > n {
                return Err(Error::corpus(f, format!("more than n_genes = {n} rows")));
            }
            let mut fields: Vec<arrow::datatypes::FieldRef> =
                b.schema().fields().iter().cloned().collect();
            let mut cols = b.columns().to_vec();
            fields.push(std::sync::Arc::new(arrow::datatypes::Field::new(
                "n_samples",
                DataType::UInt32,
                false,
            )));
            cols.push(std::sync::Arc::new(arrow::array::UInt32Array::from(
                n_samples[at..at + rows].to_vec(),
            )));
            fields.push(std::sync::Arc::new(arrow::datatypes::Field::new(
                "n_cells",
                DataType::UInt64,
                false,
            )));
            cols.push(std::sync::Arc::new(UInt64Array::from(
                n_cells[at..at + rows].to_vec(),
            )));
            at += rows;
            let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(fields));
            let full = RecordBatch::try_new(schema, cols).at(f)?;
            out.push(match columns {
                None => full,
                Some(names) => {
                    let idx = names
                        .iter()
                        .map(|c| {
                            full.schema()
                                .index_of(c)
                                .map_err(|_| Error::corpus(f, format!("no column {c:?} in genes")))
                        })
                        .collect::<Result<Vec<_>>>()?;
                    full.project(&idx).at(f)?
                }
            });
        }
    }
    Ok(out)
}

/// The files of table `table` of the corpus in `root`, in row order: those its manifest lists
/// (either format), or, for a directory of tables without a manifest, `root/TABLE.parquet` if
/// it exists. Empty when there is no such table.
pub fn table_files_at(root: &Path, table: &str) -> Result<Vec<std::path::PathBuf>> {
    if root.join(super::MANIFEST_FILE).exists() {
        let m = super::Manifest::read(root)?;
        return Ok(m
            .table_paths(table)
            .into_iter()
            .map(|p| root.join(p))
            .collect());
    }
    let single = root.join(format!("{table}.parquet"));
    Ok(if single.exists() {
        vec![single]
    } else {
        Vec::new()
    })
}

/// The Arrow schema stored in a Parquet file.
pub(crate) fn parquet_schema(path: &Path) -> Result<SchemaRef> {
    let file = File::open(path).map_err(|e| Error::io(path, "opening", e))?;
    Ok(ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| Error::corpus(path, format!("not a readable Parquet file: {e}")))?
        .schema()
        .clone())
}

/// Rows of a Parquet file, from its footer.
pub(crate) fn parquet_rows(path: &Path) -> Result<u64> {
    let file = File::open(path).map_err(|e| Error::io(path, "opening", e))?;
    let b = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| Error::corpus(path, format!("not a readable Parquet file: {e}")))?;
    Ok(b.metadata().file_metadata().num_rows().max(0) as u64)
}

/// Column 0 of each batch as non-null strings (Utf8, LargeUtf8, Utf8View or a dictionary of them).
pub(crate) fn column_strings(
    path: &Path,
    name: &str,
    batches: &[RecordBatch],
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for b in batches {
        let s = as_strings(path, name, b.column(0), out.len() as u64)?;
        out.extend(s.iter().map(|v| v.unwrap_or_default().to_owned()));
    }
    Ok(out)
}

/// A text column (Utf8, LargeUtf8, Utf8View or a dictionary of them) as non-null Utf8;
/// `row0` is the table row of the column's first entry, for messages.
pub(crate) fn as_strings(
    path: &Path,
    name: &str,
    col: &ArrayRef,
    row0: u64,
) -> Result<StringArray> {
    let c = arrow::compute::cast(col, &DataType::Utf8)
        .map_err(|e| Error::corpus(path, format!("column {name:?} is not text: {e}")))?;
    let s = c.as_string::<i32>().clone();
    if let Some(i) = (0..s.len()).find(|&i| s.is_null(i)) {
        return Err(Error::corpus(
            path,
            format!("row {}: column {name:?} is null", row0 + i as u64),
        ));
    }
    Ok(s)
}

/// An integer column as non-null u64; `row0` is the table row of its first entry, for messages.
pub(crate) fn as_u64(path: &Path, name: &str, col: &ArrayRef, row0: u64) -> Result<UInt64Array> {
    if !col.data_type().is_integer() {
        return Err(Error::corpus(
            path,
            format!(
                "column {name:?} has type {}, expected an integer",
                col.data_type()
            ),
        ));
    }
    let opts = arrow::compute::CastOptions {
        safe: false,
        ..Default::default()
    };
    let c = arrow::compute::cast_with_options(col, &DataType::UInt64, &opts)
        .map_err(|e| Error::corpus(path, format!("column {name:?} does not fit u64: {e}")))?;
    let a = c.as_primitive::<UInt64Type>().clone();
    if let Some(i) = (0..a.len()).find(|&i| a.is_null(i)) {
        return Err(Error::corpus(
            path,
            format!("row {}: column {name:?} is null", row0 + i as u64),
        ));
    }
    Ok(a)
}
