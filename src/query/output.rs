//! Writing query results: an aligned text table, CSV, JSON lines, Parquet or Arrow IPC.

use std::io::Write;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::error::{Error, ErrorKind, Result};

/// How query results are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum OutputFormat {
    /// An aligned text table for people.
    #[default]
    Table,
    /// CSV with a header row.
    Csv,
    /// Newline-delimited JSON, one object per row (`pyarrow.json.read_json`, `pandas.read_json(lines=True)`).
    Json,
    /// A zstd Parquet file.
    Parquet,
    /// An Arrow IPC file (Feather v2; `pyarrow.feather.read_table`, `polars.read_ipc`).
    Arrow,
}

impl OutputFormat {
    /// Whether the format is binary (not for a terminal).
    pub fn is_binary(self) -> bool {
        matches!(self, OutputFormat::Parquet | OutputFormat::Arrow)
    }
}

/// The type a column is written as: view types become their plain counterparts everywhere
/// (readers older than pyarrow 16 reject them), and the text formats also drop dictionaries.
fn output_type(t: &DataType, text: bool) -> DataType {
    match t {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        DataType::Dictionary(_, v) if text => output_type(v, text),
        DataType::Dictionary(k, v) => {
            DataType::Dictionary(k.clone(), Box::new(output_type(v, text)))
        }
        other => other.clone(),
    }
}

/// The schema results are written with; see [`normalize_batch`].
pub fn output_schema(schema: &Schema, format: OutputFormat) -> SchemaRef {
    let text = !format.is_binary();
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            f.as_ref()
                .clone()
                .with_data_type(output_type(f.data_type(), text))
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// Casts a batch to [`output_schema`].
pub fn normalize_batch(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c.clone())
            } else {
                arrow::compute::cast(c, f.data_type())
            }
        })
        .collect::<std::result::Result<Vec<ArrayRef>, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// Streams record batches to a writer in one [`OutputFormat`].
pub struct ResultWriter<W: Write + Send> {
    schema: SchemaRef,
    inner: Inner<W>,
}

enum Inner<W: Write + Send> {
    Table(W, Vec<RecordBatch>),
    Csv(arrow::csv::Writer<W>),
    Json(arrow::json::LineDelimitedWriter<W>),
    Parquet(ArrowWriter<W>),
    Arrow(arrow::ipc::writer::FileWriter<W>),
}

impl<W: Write + Send> ResultWriter<W> {
    /// A writer for results with `schema` (the query's schema, before normalisation).
    pub fn new(format: OutputFormat, schema: &Schema, out: W) -> Result<Self> {
        let schema = output_schema(schema, format);
        let inner = match format {
            OutputFormat::Table => Inner::Table(out, Vec::new()),
            OutputFormat::Csv => Inner::Csv(
                arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(out),
            ),
            OutputFormat::Json => Inner::Json(
                arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, arrow::json::writer::LineDelimited>(out),
            ),
            OutputFormat::Parquet => {
                let props = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(ZstdLevel::default()))
                    .build();
                Inner::Parquet(ArrowWriter::try_new(out, schema.clone(), Some(props))?)
            }
            OutputFormat::Arrow => {
                Inner::Arrow(arrow::ipc::writer::FileWriter::try_new(out, &schema)?)
            }
        };
        Ok(ResultWriter { schema, inner })
    }

    /// Writes one batch.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let batch = normalize_batch(batch, &self.schema)?;
        match &mut self.inner {
            Inner::Table(_, batches) => batches.push(batch),
            Inner::Csv(w) => w.write(&batch)?,
            Inner::Json(w) => w.write(&batch)?,
            Inner::Parquet(w) => w.write(&batch)?,
            Inner::Arrow(w) => w.write(&batch)?,
        }
        Ok(())
    }

    /// Finishes the output (footers, the table) and flushes; returns the writer.
    pub fn finish(self) -> Result<W> {
        let io = |e: std::io::Error| {
            Error::new(ErrorKind::Io, format!("writing results: {e}")).with_source(e)
        };
        let mut out = match self.inner {
            Inner::Table(mut out, batches) => {
                out.write_all(format_table(&self.schema, &batches)?.as_bytes())
                    .map_err(io)?;
                out
            }
            Inner::Csv(w) => w.into_inner(),
            Inner::Json(mut w) => {
                w.finish()?;
                w.into_inner()
            }
            Inner::Parquet(w) => w.into_inner()?,
            Inner::Arrow(mut w) => {
                w.finish()?;
                w.into_inner()?
            }
        };
        out.flush().map_err(io)?;
        Ok(out)
    }
}

fn right_aligned(t: &DataType) -> bool {
    t.is_numeric() || matches!(t, DataType::Dictionary(_, v) if v.is_numeric())
}

/// Formats batches as an aligned text table with a header and a row count:
///
/// ```text
/// +-----------+---+
/// | cell_type | n |
/// +-----------+---+
/// | B cell    | 2 |
/// | T cell    | 3 |
/// +-----------+---+
/// 2 rows
/// ```
///
/// Numbers are right-aligned, nulls print as `NULL`, line breaks in values as `\n`.
pub fn format_table(schema: &Schema, batches: &[RecordBatch]) -> Result<String> {
    let options = FormatOptions::default().with_null("NULL");
    let n_cols = schema.fields().len();
    let mut cells: Vec<Vec<String>> = Vec::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        for r in 0..batch.num_rows() {
            let mut row = Vec::with_capacity(n_cols);
            for f in &formatters {
                let s = f.value(r).try_to_string()?;
                row.push(s.replace('\n', "\\n"));
            }
            cells.push(row);
        }
    }
    let headers: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let right: Vec<bool> = schema
        .fields()
        .iter()
        .map(|f| right_aligned(f.data_type()))
        .collect();
    let mut out = String::new();
    let rule: String = {
        let mut s = String::from("+");
        for w in &widths {
            s.push_str(&"-".repeat(w + 2));
            s.push('+');
        }
        s.push('\n');
        s
    };
    let push_row = |out: &mut String, row: &[&str], align_right: &[bool]| {
        out.push('|');
        for ((c, w), r) in row.iter().zip(&widths).zip(align_right) {
            let pad = w - c.chars().count();
            out.push(' ');
            if *r {
                out.push_str(&" ".repeat(pad));
                out.push_str(c);
            } else {
                out.push_str(c);
                out.push_str(&" ".repeat(pad));
            }
            out.push_str(" |");
        }
        out.push('\n');
    };
    if n_cols > 0 {
        out.push_str(&rule);
        push_row(&mut out, &headers, &vec![false; n_cols]);
        out.push_str(&rule);
        for row in &cells {
            let row: Vec<&str> = row.iter().map(String::as_str).collect();
            push_row(&mut out, &row, &right);
        }
        out.push_str(&rule);
    }
    let n = cells.len();
    out.push_str(&format!("{n} row{}\n", if n == 1 { "" } else { "s" }));
    Ok(out)
}
