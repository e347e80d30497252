//! The last step of a conversion: genes, samples and obs tables, checksums and the manifest.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::{new_null_array, ArrayRef, StringArray, UInt64Array, UInt8Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use rayon::prelude::*;

use super::job::{Layout, SampleOutput};
use super::{source_label, ConvertOptions, GeneSlot, Planned, Vocabulary};
use crate::corpus::{
    self, FileEntry, Manifest, MatrixInfo, SampleEntry, FORMAT_NAME, FORMAT_VERSION,
};
use crate::error::{Context, Error, Result};

pub(crate) struct Written {
    pub n_cells: u64,
    pub nnz: u64,
    pub bytes: u64,
}

pub(crate) fn finish(
    dir: &std::path::Path,
    plans: &[Planned],
    outputs: &[SampleOutput],
    starts: &[(usize, u64)],
    vocab: &Vocabulary,
    layout: &Layout<'_>,
    opts: &ConvertOptions,
) -> Result<Written> {
    write_genes(dir, plans, outputs, vocab)?;
    write_samples(dir, plans, outputs, starts, opts)?;
    merge_obs(dir, outputs)?;
    super::kill::kill_point("tables-written");

    let parts: Vec<_> = outputs
        .iter()
        .flat_map(|o| o.parts.iter().cloned())
        .collect();
    let n_cells: u64 = parts.iter().map(|p| p.n_cells).sum();
    let nnz: u64 = parts.iter().map(|p| p.nnz).sum();
    let mut rel: Vec<String> = vec![
        "genes.parquet".into(),
        "samples.parquet".into(),
        "obs.parquet".into(),
    ];
    rel.extend(parts.iter().map(|p| p.path.clone()));
    let files = file_entries(dir, &rel)?;
    let bytes = files.iter().map(|f| f.bytes).sum();
    let samples = plans
        .iter()
        .zip(outputs)
        .zip(starts)
        .map(|((p, o), &(_, first_cell))| SampleEntry {
            sample_id: p.input.sample_id.clone(),
            first_cell,
            n_cells: p.n_obs,
            nnz: o.nnz,
            spatial_dims: p.coords.as_ref().map_or(0, |c| c.0 as u8),
        })
        .collect();
    let manifest = Manifest {
        format: FORMAT_NAME.into(),
        format_version: FORMAT_VERSION,
        created_by: format!("cellarrow {}", env!("CARGO_PKG_VERSION")),
        n_cells,
        n_genes: vocab.len() as u64,
        nnz,
        index_type: layout.index_type,
        value_type: layout.value_type,
        matrix: MatrixInfo {
            batch_rows: layout.batch_rows as u64,
            part_cells: layout.part_cells,
            parts,
        },
        samples,
        options: serde_json::to_value(opts)
            .map_err(|e| Error::invalid_input(format!("options: {e}")))?,
        files,
        lineage: Vec::new(),
    };
    manifest.write(dir)?;
    super::kill::kill_point("manifest-written");
    Ok(Written {
        n_cells,
        nnz,
        bytes,
    })
}

/// Size and sha256 of each file of `rel` (relative to `dir`), hashed in parallel.
pub(crate) fn file_entries(dir: &std::path::Path, rel: &[String]) -> Result<Vec<FileEntry>> {
    rel.par_iter()
        .map(|r| {
            let (sha256, bytes) = corpus::sha256_file(&dir.join(r))?;
            Ok(FileEntry {
                path: r.clone(),
                bytes,
                sha256,
            })
        })
        .collect()
}

fn write_genes(
    dir: &std::path::Path,
    plans: &[Planned],
    outputs: &[SampleOutput],
    vocab: &Vocabulary,
) -> Result<()> {
    let (n_samples, n_cells) = gene_counts(plans, outputs, vocab.len());
    write_genes_table(dir, vocab, n_samples, n_cells)
}

/// Per vocabulary gene: the samples whose files have it, and the cells with a non-zero of it.
pub(crate) fn gene_counts(
    plans: &[Planned],
    outputs: &[SampleOutput],
    n: usize,
) -> (Vec<u32>, Vec<u64>) {
    let mut n_samples = vec![0u32; n];
    for p in plans {
        let ids: BTreeSet<u32> = p
            .gene_map
            .iter()
            .filter_map(|s| match s {
                GeneSlot::Gene(id) => Some(*id),
                _ => None,
            })
            .collect();
        for id in ids {
            n_samples[id as usize] += 1;
        }
    }
    let mut n_cells = vec![0u64; n];
    for o in outputs {
        for (acc, c) in n_cells.iter_mut().zip(&o.gene_cells) {
            *acc += c;
        }
    }
    (n_samples, n_cells)
}

/// Writes `dir/genes.parquet`: one row per gene, its position its id.
pub(crate) fn write_genes_table(
    dir: &std::path::Path,
    vocab: &Vocabulary,
    n_samples: Vec<u32>,
    n_cells: Vec<u64>,
) -> Result<()> {
    let batch = crate::genes::table::genes_batch(vocab.index(), n_samples, n_cells)?;
    corpus::write_parquet(&dir.join("genes.parquet"), &[batch])?;
    Ok(())
}

fn write_samples(
    dir: &std::path::Path,
    plans: &[Planned],
    outputs: &[SampleOutput],
    starts: &[(usize, u64)],
    opts: &ConvertOptions,
) -> Result<()> {
    let batch = samples_batch(plans, outputs, starts, opts)?;
    corpus::write_parquet(&dir.join("samples.parquet"), &[batch])?;
    Ok(())
}

/// The samples.parquet rows of `plans`: one per source file, then its metadata columns.
pub(crate) fn samples_batch(
    plans: &[Planned],
    outputs: &[SampleOutput],
    starts: &[(usize, u64)],
    opts: &ConvertOptions,
) -> Result<RecordBatch> {
    let text = |f: &dyn Fn(&Planned) -> String| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(plans.iter().map(f)))
    };
    let mut cols: Vec<(String, ArrayRef)> = vec![
        ("sample_id".into(), text(&|p| p.input.sample_id.clone())),
        (
            "source_path".into(),
            text(&|p| p.input.path.display().to_string()),
        ),
        ("source_sha256".into(), text(&|p| p.sha256.clone())),
        (
            "first_cell".into(),
            Arc::new(UInt64Array::from_iter_values(starts.iter().map(|s| s.1))),
        ),
        (
            "n_cells".into(),
            Arc::new(UInt64Array::from_iter_values(plans.iter().map(|p| p.n_obs))),
        ),
        (
            "nnz".into(),
            Arc::new(UInt64Array::from_iter_values(outputs.iter().map(|o| o.nnz))),
        ),
        (
            "matrix_source".into(),
            text(&|_| source_label(&opts.source)),
        ),
        (
            "n_source_genes".into(),
            Arc::new(UInt64Array::from_iter_values(
                plans.iter().map(|p| p.genes.len() as u64),
            )),
        ),
        (
            "n_genes_outside_vocab".into(),
            Arc::new(UInt64Array::from_iter_values(plans.iter().map(|p| {
                p.gene_map
                    .iter()
                    .filter(|m| **m == GeneSlot::Outside)
                    .count() as u64
            }))),
        ),
        (
            "nnz_outside_vocab".into(),
            Arc::new(UInt64Array::from_iter_values(
                outputs.iter().map(|o| o.counts.nnz_outside_vocab),
            )),
        ),
        (
            "spatial_dims".into(),
            Arc::new(UInt8Array::from_iter_values(
                plans
                    .iter()
                    .map(|p| p.coords.as_ref().map_or(0, |c| c.0 as u8)),
            )),
        ),
    ];
    cols.extend(super::vocab::sample_gene_columns(plans));
    // `species` is written normalised above, from the manifest's or inferred.
    let keys: BTreeSet<&str> = plans
        .iter()
        .flat_map(|p| p.input.metadata.keys().map(String::as_str))
        .filter(|k| *k != "species")
        .collect();
    for key in keys {
        if cols.iter().any(|(n, _)| n == key) {
            return Err(Error::invalid_input(format!(
                "input manifest column {key:?} clashes with a samples.parquet column; rename it"
            )));
        }
        let col: StringArray = plans
            .iter()
            .map(|p| p.input.metadata.get(key).map(String::as_str))
            .collect();
        cols.push((key.to_string(), Arc::new(col)));
    }
    Ok(RecordBatch::try_from_iter(cols)?)
}

/// The column type shared by every sample: equal types stay, numbers widen to Float64 (or
/// Int64 for two integer types), anything else becomes text.
fn unify(a: &DataType, b: &DataType) -> DataType {
    use DataType::*;
    if a == b {
        return a.clone();
    }
    if a.is_integer() && b.is_integer() {
        return Int64;
    }
    if a.is_numeric() && b.is_numeric() {
        return Float64;
    }
    let is_text = |t: &DataType| {
        matches!(t, Utf8 | LargeUtf8 | Utf8View) || matches!(t, Dictionary(_, v) if **v == Utf8)
    };
    if is_text(a) && is_text(b) {
        return Dictionary(Box::new(Int32), Box::new(Utf8));
    }
    Utf8
}

fn parquet_schema(path: &std::path::Path) -> Result<SchemaRef> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, "opening", e))?;
    Ok(ParquetRecordBatchReaderBuilder::try_new(f)
        .at(path)?
        .schema()
        .clone())
}

/// Streams every sample's staging obs table into one obs.parquet with the union schema, then
/// removes the staging tables (the only one of a one-sample corpus becomes obs.parquet).
fn merge_obs(dir: &std::path::Path, outputs: &[SampleOutput]) -> Result<()> {
    let path = dir.join("obs.parquet");
    if let [only] = outputs {
        // One sample: its staging table was written with the same settings and already is
        // the whole obs table; rewriting it would decode and compress every row again.
        return std::fs::rename(&only.obs_path, &path)
            .map_err(|e| Error::io(&only.obs_path, "renaming to obs.parquet", e));
    }
    let inputs: Vec<&std::path::Path> = outputs.iter().map(|o| o.obs_path.as_path()).collect();
    merge_tables(&path, &inputs)?;
    for o in outputs {
        std::fs::remove_file(&o.obs_path).map_err(|e| Error::io(&o.obs_path, "removing", e))?;
    }
    Ok(())
}

/// Streams the rows of `inputs`, in order, into one Parquet file at `path` whose schema is the
/// union of theirs (columns in first-seen order, types unified, missing columns null).
pub(crate) fn merge_tables(path: &std::path::Path, inputs: &[&std::path::Path]) -> Result<()> {
    let schemas: Vec<SchemaRef> = inputs
        .iter()
        .map(|p| parquet_schema(p))
        .collect::<Result<_>>()?;
    let mut fields: Vec<Field> = Vec::new();
    for s in &schemas {
        for f in s.fields() {
            match fields.iter_mut().find(|g| g.name() == f.name()) {
                Some(g) => *g = Field::new(g.name(), unify(g.data_type(), f.data_type()), true),
                None => fields.push(Field::new(f.name(), f.data_type().clone(), true)),
            }
        }
    }
    let schema = Arc::new(Schema::new(fields));
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, "creating", e))?;
    let mut writer = ArrowWriter::try_new(
        file,
        schema.clone(),
        Some(corpus::writer_properties(&schema)),
    )
    .at(path)?;
    for input in inputs {
        let f = std::fs::File::open(input).map_err(|e| Error::io(input, "opening", e))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(f)
            .at(input)?
            .with_batch_size(65_536)
            .build()
            .at(input)?;
        for batch in reader {
            let batch = batch.at(input)?;
            let cols: Vec<ArrayRef> = schema
                .fields()
                .iter()
                .map(|field| match batch.column_by_name(field.name()) {
                    Some(c) if c.data_type() == field.data_type() => Ok(c.clone()),
                    Some(c) => arrow::compute::cast(c, field.data_type()).map_err(Error::from),
                    None => Ok(new_null_array(field.data_type(), batch.num_rows())),
                })
                .collect::<Result<_>>()?;
            writer
                .write(&RecordBatch::try_new(schema.clone(), cols)?)
                .at(path)?;
        }
    }
    writer.close().at(path)?;
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(path, "syncing", e))?;
    Ok(())
}
