//! The last step of a conversion: the table files (genes, gene_counts, samples, obs), checksums
//! and the manifest; and the table-dataset functions that appends (and merges) reuse: file
//! naming, writing one file of a table, linking existing files, schema growth.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{new_null_array, ArrayRef, StringArray, UInt32Array, UInt64Array, UInt8Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use rayon::prelude::*;

use super::job::{Layout, SampleOutput};
use super::{source_label, ConvertOptions, GeneSlot, Planned, Vocabulary};
use crate::corpus::{
    self, FileEntry, Manifest, MatrixInfo, SampleEntry, TableFile, FORMAT_NAME, FORMAT_VERSION,
    GENE_COUNTS_TABLE,
};
use crate::error::{Context, Error, Result};

pub(crate) struct Written {
    pub n_cells: u64,
    pub nnz: u64,
    pub bytes: u64,
}

pub(crate) fn finish(
    dir: &Path,
    plans: &[Planned],
    outputs: &[SampleOutput],
    starts: &[(usize, u64)],
    vocab: &Vocabulary,
    layout: &Layout<'_>,
    opts: &ConvertOptions,
) -> Result<Written> {
    let (n_samples, n_cells) = gene_counts(plans, outputs, vocab.len());
    let mut tables = BTreeMap::new();
    tables.insert(
        "genes".to_string(),
        vec![write_genes_file(dir, 0, vocab.index(), 0..vocab.len())?],
    );
    tables.insert(
        GENE_COUNTS_TABLE.to_string(),
        vec![write_gene_counts_file(dir, 0, &n_samples, &n_cells)?],
    );
    let samples = samples_batch(plans, outputs, starts, opts)?;
    tables.insert(
        "samples".to_string(),
        vec![write_batches_file(
            dir,
            &table_file_path("samples", 0),
            &[samples],
        )?],
    );
    let staged: Vec<&Path> = outputs.iter().map(|o| o.obs_path.as_path()).collect();
    tables.insert(
        "obs".to_string(),
        vec![write_staged_file(dir, "obs", 0, &staged, None)?],
    );
    super::kill::kill_point("tables-written");

    let parts: Vec<_> = outputs
        .iter()
        .flat_map(|o| o.parts.iter().cloned())
        .collect();
    let n_cells: u64 = parts.iter().map(|p| p.n_cells).sum();
    let nnz: u64 = parts.iter().map(|p| p.nnz).sum();
    let mut rel: Vec<String> = table_file_list(&tables);
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
        options: recorded_options(opts)?,
        files,
        tables,
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

/// The relative path of file `number` of a table dataset: `TABLE/part-NNNNN.parquet`.
pub(crate) fn table_file_path(table: &str, number: usize) -> String {
    format!("{table}/part-{number:05}.parquet")
}

/// A file number above every file of `table` in `files`, so that a new file never takes the
/// name (and, through a hard link, the bytes) of an existing one.
pub(crate) fn next_table_file_number(files: &[TableFile], table: &str) -> usize {
    next_file_number(
        files.iter().map(|f| f.path.as_str()),
        &format!("{table}/part-"),
        ".parquet",
    )
}

/// One above the highest `N` of the paths named `{prefix}N{suffix}` (0 when none is).
pub(crate) fn next_file_number<'a>(
    paths: impl IntoIterator<Item = &'a str>,
    prefix: &str,
    suffix: &str,
) -> usize {
    paths
        .into_iter()
        .filter_map(|p| {
            p.strip_prefix(prefix)?
                .strip_suffix(suffix)?
                .parse::<usize>()
                .ok()
        })
        .map(|n| n + 1)
        .max()
        .unwrap_or(0)
}

/// Every table file of `tables`, tables in name order, files in row order.
pub(crate) fn table_file_list(tables: &BTreeMap<String, Vec<TableFile>>) -> Vec<String> {
    tables.values().flatten().map(|f| f.path.clone()).collect()
}

/// Writes `batches` (one schema) as the table file `rel` of `dir`, creating its directory.
pub(crate) fn write_batches_file(
    dir: &Path,
    rel: &str,
    batches: &[RecordBatch],
) -> Result<TableFile> {
    let path = dir.join(rel);
    create_parent(&path)?;
    corpus::write_parquet(&path, batches)?;
    Ok(TableFile {
        path: rel.to_string(),
        rows: batches.iter().map(|b| b.num_rows() as u64).sum(),
    })
}

fn create_parent(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, "creating", e))?;
    }
    Ok(())
}

/// Writes genes file `number`: the genes `range` of `index` (`gene`, `name` and the identity
/// columns, [`crate::genes::table::genes_batch`]).
pub(crate) fn write_genes_file(
    dir: &Path,
    number: usize,
    index: &crate::genes::GeneIndex,
    range: std::ops::Range<usize>,
) -> Result<TableFile> {
    let batch = crate::genes::table::genes_batch(index, range)?;
    write_batches_file(dir, &table_file_path("genes", number), &[batch])
}

/// Writes gene_counts file `number`: per gene with a count (`n_samples` or `n_cells` above
/// 0), the samples of one conversion or append that measure it and their cells with a
/// non-zero of it. The counts of a gene are the sums over the files.
pub(crate) fn write_gene_counts_file(
    dir: &Path,
    number: usize,
    n_samples: &[u32],
    n_cells: &[u64],
) -> Result<TableFile> {
    let keep: Vec<u32> = (0..n_samples.len())
        .filter(|&g| n_samples[g] > 0 || n_cells[g] > 0)
        .map(|g| g as u32)
        .collect();
    let batch = RecordBatch::try_from_iter([
        (
            "gene",
            Arc::new(UInt32Array::from(keep.clone())) as ArrayRef,
        ),
        (
            "n_samples",
            Arc::new(UInt32Array::from_iter_values(
                keep.iter().map(|&g| n_samples[g as usize]),
            )),
        ),
        (
            "n_cells",
            Arc::new(UInt64Array::from_iter_values(
                keep.iter().map(|&g| n_cells[g as usize]),
            )),
        ),
    ])?;
    write_batches_file(dir, &table_file_path(GENE_COUNTS_TABLE, number), &[batch])
}

/// Writes file `number` of `table` from staging tables (the samples' obs tables, say), in
/// order, then removes them. The file's schema is `schema` (the table's, when it has files
/// already) or the union of the staging tables'.
pub(crate) fn write_staged_file(
    dir: &Path,
    table: &str,
    number: usize,
    staged: &[&Path],
    schema: Option<SchemaRef>,
) -> Result<TableFile> {
    let rel = table_file_path(table, number);
    let path = dir.join(&rel);
    create_parent(&path)?;
    let rows = match (staged, &schema) {
        // One sample: its staging table was written with the same settings and already is
        // the whole obs file; rewriting it would decode and compress every row again.
        ([only], target)
            if target.as_ref().map_or(Ok(true), |t| {
                parquet_schema(only).map(|s| s.fields() == t.fields())
            })? =>
        {
            std::fs::rename(only, &path)
                .map_err(|e| Error::io(only, "renaming into its table", e))?;
            corpus::parquet_rows(&path)?
        }
        _ => {
            let rows = merge_tables(&path, staged, schema)?;
            for p in staged {
                std::fs::remove_file(p).map_err(|e| Error::io(p, "removing", e))?;
            }
            rows
        }
    };
    Ok(TableFile { path: rel, rows })
}

/// Hard-links the files `rels` of corpus `from` into `to` under the same relative paths (a
/// copy where links are impossible): not a byte is rewritten.
pub(crate) fn link_files<'a>(
    from: &Path,
    to: &Path,
    rels: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<()> {
    for (src_rel, dst_rel) in rels {
        let (src, dst) = (from.join(src_rel), to.join(dst_rel));
        create_parent(&dst)?;
        if std::fs::hard_link(&src, &dst).is_err() {
            std::fs::copy(&src, &dst).map_err(|e| Error::io(&src, "copying", e))?;
        }
    }
    Ok(())
}

/// How rows with schema `new` join a table whose files have schema `old`: `None` when the old
/// files hold them as they are (the new rows lack columns or have types that `old` holds: they
/// are written in `old`'s schema), else the union schema, into which the old files must be
/// rewritten (the new rows bring a column, or a type, the old files do not have), so that every
/// file of a table keeps one schema and every reader sees one table.
pub(crate) fn grown_schema(old: &SchemaRef, new: &[SchemaRef]) -> Option<SchemaRef> {
    let mut all = vec![old.clone()];
    all.extend(new.iter().cloned());
    let union = union_schema(&all);
    let same = union.fields().len() == old.fields().len()
        && union
            .fields()
            .iter()
            .zip(old.fields())
            .all(|(u, o)| u.name() == o.name() && u.data_type() == o.data_type());
    (!same).then_some(union)
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
    // Columns past the fixed ones may be null in some sample (metadata, ortholog counts): they
    // are nullable whatever this batch holds, so every file of the table has one schema.
    const FIXED: usize = 11;
    Ok(RecordBatch::try_from_iter_with_nullable(
        cols.into_iter()
            .enumerate()
            .map(|(i, (name, c))| (name, c, i >= FIXED)),
    )?)
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

/// The union of `schemas`: columns in first-seen order, types unified, every column nullable.
pub(crate) fn union_schema(schemas: &[SchemaRef]) -> SchemaRef {
    let mut fields: Vec<Field> = Vec::new();
    for s in schemas {
        for f in s.fields() {
            match fields.iter_mut().find(|g| g.name() == f.name()) {
                Some(g) => *g = Field::new(g.name(), unify(g.data_type(), f.data_type()), true),
                None => fields.push(Field::new(f.name(), f.data_type().clone(), true)),
            }
        }
    }
    Arc::new(Schema::new(fields))
}

/// Streams the rows of `inputs`, in order, into one Parquet file at `path` whose schema is
/// `schema` or, without it, the union of theirs ([`union_schema`]); a column an input lacks is
/// null. Returns the rows written.
pub(crate) fn merge_tables(
    path: &std::path::Path,
    inputs: &[&std::path::Path],
    schema: Option<SchemaRef>,
) -> Result<u64> {
    let schema = match schema {
        Some(s) => s,
        None => {
            let schemas: Vec<SchemaRef> = inputs
                .iter()
                .map(|p| parquet_schema(p))
                .collect::<Result<_>>()?;
            union_schema(&schemas)
        }
    };
    let mut rows = 0u64;
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
            rows += batch.num_rows() as u64;
            writer
                .write(&RecordBatch::try_new(schema.clone(), cols)?)
                .at(path)?;
        }
    }
    writer.close().at(path)?;
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(path, "syncing", e))?;
    Ok(rows)
}

/// The options as the manifest records them: the output is the URL of an upload.
pub(crate) fn recorded_options(opts: &ConvertOptions) -> Result<serde_json::Value> {
    let mut options =
        serde_json::to_value(opts).map_err(|e| Error::invalid_input(format!("options: {e}")))?;
    if let Some(url) = &opts.destination {
        options["output"] = url.clone().into();
    }
    Ok(options)
}
