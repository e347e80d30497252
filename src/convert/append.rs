//! Growing a corpus: [`append`] adds samples without touching the bytes of existing files.
//!
//! The new corpus is assembled beside the old one, like a conversion: existing matrix parts
//! and table files are hard-linked into it (same inodes, so not a byte is rewritten or copied),
//! the new samples are converted into new parts numbered after the existing ones, with cell ids
//! continuing the old ones, and each table gets one new file holding only the new rows (new
//! cells, new samples, new genes, the new samples' gene counts). The finished directory
//! replaces the old one with the same move-aside-and-rename as `convert --overwrite`, under a
//! lock file that keeps a second writer out. A reader that had the old corpus open keeps its
//! mapped parts and its table files (the inodes live on).
//!
//! Types are per part: new genes get the next ids, and the new parts get the narrowest index
//! and value types for the grown vocabulary and the new values, wider than the old parts'
//! when they must be; the manifest's types widen to cover them all. A format-1 corpus becomes
//! format 2: its single-file tables are linked as the first files of the datasets (genes
//! is split into its identity and counts tables, a rewrite of one row per gene).
//!
//! The one case that rewrites existing table files is a change of a table's columns: new rows
//! that bring a column (or a type) the old files lack. Every file of a table keeps one schema
//! so that pyarrow, polars, DuckDB and DataFusion read the files as one table, so the old rows
//! are then written again, once, into one file of the grown schema (see docs/FORMAT.md).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::Instant;

use arrow::array::AsArray;
use arrow::datatypes::{UInt32Type, UInt64Type};

use super::job::{Layout, SampleOutput};
use super::kill::kill_point;
use super::{
    choose_value_type, convert_samples, coord_dims, lay_out, plan_inputs, tables, thread_pool,
    warnings, ConvertOptions, ConvertSummary, InputSample, Planned, Retry, Vocabulary,
};
use crate::corpus::{
    read_parquet, FileEntry, IndexType, LineageEntry, Manifest, PartEntry, SourceEntry, TableFile,
    ValueType, FORMAT_VERSION, GENE_COUNTS_TABLE, MANIFEST_FILE,
};
use crate::error::{Error, Result};
use crate::h5ad::ValueStats;

/// Adds `inputs` as new samples to the corpus at `corpus_dir`. `opts` says how to read the
/// inputs (matrix source, gene column, obs columns, spatial key, duplicate genes, threads);
/// its `output`, `overwrite` and `part_cells` are not used (the corpus fixes its part size), and
/// a fixed vocabulary is refused (the corpus's vocabulary grows).
///
/// Fails, leaving the corpus as it was, when a sample id or a source file (by sha256) is
/// already in the corpus, or when the vocabulary would pass 2^32 genes.
pub fn append(
    corpus_dir: &Path,
    inputs: &[InputSample],
    opts: &ConvertOptions,
) -> Result<ConvertSummary> {
    grow(corpus_dir, inputs, opts, OldParts::Linked)
}

/// Where the matrix parts of the corpus being grown are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OldParts {
    /// In the corpus directory: linked into the grown one.
    Linked,
    /// Not on this disk (a corpus in object storage, of which the directory holds the manifest
    /// and the tables): the grown corpus lists them and holds only the new parts.
    Elsewhere,
}

/// [`append`], with the old parts where `old_parts` says.
pub(crate) fn grow(
    corpus_dir: &Path,
    inputs: &[InputSample],
    opts: &ConvertOptions,
    old_parts: OldParts,
) -> Result<ConvertSummary> {
    let started = Instant::now();
    if inputs.is_empty() {
        return Err(Error::invalid_input("no input files given"));
    }
    if opts.vocab.is_some() {
        return Err(Error::invalid_input(
            "a fixed vocabulary cannot be used to append: the corpus's vocabulary grows",
        ));
    }
    let labels = super::labels::load(&opts.ontologies)?;
    let _lock = super::lock::CorpusLock::acquire(corpus_dir)?;
    // Takes back a previous corpus left aside by a killed writer, before reading it.
    let staging = super::output::Staging::create(corpus_dir, true)?;
    let old = Manifest::read(corpus_dir)?;
    let pool = thread_pool(opts)?;

    check_gene_key(&old, opts)?;
    let mut vocab = Vocabulary::corpus_genes(corpus_dir, opts.gene_key)?;
    // Matching can add keys and orthologs to existing genes; their rows are then rewritten.
    let old_genes: Vec<crate::genes::Gene> = vocab.index().genes().to_vec();
    let old_ids: HashSet<&str> = old.samples.iter().map(|s| s.sample_id.as_str()).collect();
    for i in inputs {
        if old_ids.contains(i.sample_id.as_str()) {
            return Err(Error::invalid_input(format!(
                "sample id {:?} is already in the corpus",
                i.sample_id
            ))
            .with_path(&i.path));
        }
    }
    let mut plans = plan_inputs(&pool, inputs, opts, &mut vocab)?;
    if vocab.len() as u64 > IndexType::Uint32.max_genes() {
        return Err(Error::invalid_input(format!(
            "the vocabulary would grow to {} genes, more than 32-bit gene ids address",
            vocab.len()
        )));
    }

    let dir = staging.path().to_path_buf();
    if old_parts == OldParts::Linked {
        link_parts(corpus_dir, &dir, &old)?;
    }
    let first_part = next_part_number(&old);
    let mut layout = Layout {
        dir: &dir,
        // The new parts' own types: the narrowest for the grown vocabulary and the new values.
        index_type: IndexType::for_genes(vocab.len() as u64),
        value_type: choose_value_type(
            &plans
                .iter()
                .fold(ValueStats::empty(), |acc, p| acc.merge(p.stats)),
        ),
        batch_rows: old.matrix.batch_rows as usize,
        part_cells: old.matrix.part_cells,
        cold: cold_layout(&old, opts)?,
        n_genes: vocab.len(),
        coord_dims: coord_dims(&plans).max(
            old.samples
                .iter()
                .map(|s| s.spatial_dims as usize)
                .max()
                .unwrap_or(0),
        ),
        labels: &labels,
    };
    let starts = lay_out(&plans, layout.part_cells, first_part, old.n_cells);
    let outputs = convert_samples(&pool, &mut plans, &starts, opts, &mut layout, Retry::Widen)?;
    check_sources_new(corpus_dir, &old, &plans)?;
    let warnings = warnings(&plans, &outputs);

    let tables = append_tables(
        corpus_dir,
        &dir,
        &old,
        &NewRows {
            plans: &plans,
            outputs: &outputs,
            starts: &starts,
            vocab: &vocab,
            old_genes: &old_genes,
            opts,
        },
    )?;
    kill_point("tables-written");
    let manifest = new_manifest(
        &dir,
        old,
        &plans,
        &outputs,
        &starts,
        vocab.len(),
        tables,
        opts,
    )?;
    manifest.write(&dir)?;
    kill_point("manifest-written");
    super::gene_stats::record(&dir, Some(corpus_dir))?;
    staging.commit()?;
    let bytes = manifest.files.iter().map(|f| f.bytes).sum();
    Ok(ConvertSummary {
        output: corpus_dir.to_path_buf(),
        n_samples: manifest.samples.len(),
        n_cells: manifest.n_cells,
        n_genes: manifest.n_genes,
        nnz: manifest.nnz,
        index_type: manifest.index_type,
        value_type: manifest.value_type,
        bytes,
        seconds: started.elapsed().as_secs_f64(),
        warnings,
        species: super::vocab::species_of(&plans),
    })
}

/// Genes are matched by the key the corpus was built with: another key would name new genes
/// differently from the old ones.
/// The chunk size of the new parts when they are cold: asked for by `opts`, else the layout
/// the corpus was converted with (its manifest's options), so that a cold corpus stays cold.
fn cold_layout(old: &Manifest, opts: &ConvertOptions) -> Result<Option<u64>> {
    if let Some(c) = super::cold_chunk_cells(opts)? {
        return Ok(Some(c));
    }
    if old.options.get("layout").and_then(|l| l.as_str()) != Some("cold") {
        return Ok(None);
    }
    let c = old
        .options
        .get("chunk_cells")
        .and_then(|c| c.as_u64())
        .unwrap_or(crate::corpus::DEFAULT_CHUNK_CELLS)
        .clamp(1, crate::corpus::MAX_CHUNK_CELLS);
    Ok(Some(c))
}

fn check_gene_key(old: &Manifest, opts: &ConvertOptions) -> Result<()> {
    let built = old.options.get("gene_key").and_then(|k| k.as_str());
    match built {
        Some(k) if k != opts.gene_key.as_str() => Err(Error::invalid_input(format!(
            "the corpus matches genes by {k}; append with --gene-key {k}"
        ))),
        _ => Ok(()),
    }
}

/// Hard-links the existing parts into the new corpus (a copy where links are impossible).
fn link_parts(from: &Path, to: &Path, old: &Manifest) -> Result<()> {
    tables::link_files(
        from,
        to,
        old.matrix
            .parts
            .iter()
            .map(|p| (p.path.as_str(), p.path.as_str())),
    )
}

/// A part number above every existing part's, so no new part shares a name (and, through the
/// hard link, the bytes) of an old one.
pub(crate) fn next_part_number(old: &Manifest) -> usize {
    tables::next_file_number(
        old.matrix.parts.iter().map(|p| p.path.as_str()),
        "matrix/part-",
        ".arrow",
    )
    .max(old.matrix.parts.len())
}

/// Column `column` of every file of a table of the corpus at `dir`, as text.
pub(crate) fn read_table_strings(
    dir: &Path,
    m: &Manifest,
    table: &str,
    column: &str,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for rel in m.table_paths(table) {
        let path = dir.join(rel);
        for b in read_parquet(&path, Some(&[column]))? {
            let c = b
                .column(0)
                .as_string_opt::<i32>()
                .ok_or_else(|| Error::corpus(&path, format!("column {column} is not text")))?;
            out.extend(c.iter().map(|s| s.unwrap_or_default().to_string()));
        }
    }
    Ok(out)
}

/// A file whose bytes are already a sample of the corpus (same sha256) is refused, naming both.
fn check_sources_new(corpus_dir: &Path, old: &Manifest, plans: &[Planned]) -> Result<()> {
    let ids = read_table_strings(corpus_dir, old, "samples", "sample_id")?;
    let shas = read_table_strings(corpus_dir, old, "samples", "source_sha256")?;
    let known: HashMap<&str, &str> = shas
        .iter()
        .map(String::as_str)
        .zip(ids.iter().map(String::as_str))
        .collect();
    let mut seen: HashMap<&str, &Path> = HashMap::new();
    for p in plans {
        if let Some(id) = known.get(p.sha256.as_str()) {
            return Err(Error::invalid_input(format!(
                "this file is already in the corpus as sample {id:?} (same sha256 {})",
                p.sha256
            ))
            .with_path(&p.input.path));
        }
        if let Some(first) = seen.insert(p.sha256.as_str(), &p.input.path) {
            return Err(Error::invalid_input(format!(
                "this file has the same bytes as {} in the same append",
                first.display()
            ))
            .with_path(&p.input.path));
        }
    }
    Ok(())
}

/// What an append adds to the tables.
struct NewRows<'a> {
    plans: &'a [Planned],
    outputs: &'a [SampleOutput],
    starts: &'a [(usize, u64)],
    vocab: &'a Vocabulary,
    /// The corpus's genes before the append, as its genes table has them.
    old_genes: &'a [crate::genes::Gene],
    opts: &'a ConvertOptions,
}

/// The tables of the grown corpus in `dir`: the old files linked, then one new file each with
/// the new rows (genes only when there are new genes).
fn append_tables(
    corpus_dir: &Path,
    dir: &Path,
    old: &Manifest,
    new: &NewRows<'_>,
) -> Result<BTreeMap<String, Vec<TableFile>>> {
    let mut out = BTreeMap::new();
    // genes and gene_counts
    let n_old = new.old_genes.len();
    let index = new.vocab.index();
    let mut counts = if old.format_version >= 2 {
        link_table(corpus_dir, dir, old, GENE_COUNTS_TABLE)?
    } else {
        split_format1_counts(corpus_dir, dir, old)?
    };
    let old_rows_kept = old.format_version >= 2 && index.genes()[..n_old] == *new.old_genes;
    let genes = if old_rows_kept {
        let mut genes = link_table(corpus_dir, dir, old, "genes")?;
        if index.len() > n_old {
            let number = tables::next_table_file_number(&genes, "genes");
            genes.push(tables::write_genes_file(
                dir,
                number,
                index,
                n_old..index.len(),
            )?);
        }
        genes
    } else {
        // The old rows changed (or a format-1 table): the table is written again, whole, under
        // a number no old file has.
        let old_files: Vec<TableFile> = old_table_files(corpus_dir, old, "genes")?
            .into_iter()
            .map(|(_, f)| f)
            .collect();
        let number = tables::next_table_file_number(&old_files, "genes");
        vec![tables::write_genes_file(
            dir,
            number,
            index,
            0..index.len(),
        )?]
    };
    let (n_samples, n_cells) = tables::gene_counts(new.plans, new.outputs, new.vocab.len());
    let number = tables::next_table_file_number(&counts, GENE_COUNTS_TABLE);
    counts.push(tables::write_gene_counts_file(
        dir, number, &n_samples, &n_cells,
    )?);
    out.insert("genes".to_string(), genes);
    out.insert(GENE_COUNTS_TABLE.to_string(), counts);

    // samples
    let staged = dir.join("samples-staging.parquet");
    crate::corpus::write_parquet(
        &staged,
        &[tables::samples_batch(
            new.plans,
            new.outputs,
            new.starts,
            new.opts,
        )?],
    )?;
    out.insert(
        "samples".to_string(),
        grow_table(corpus_dir, dir, old, "samples", &[staged.as_path()])?,
    );
    // obs
    let staged: Vec<&Path> = new.outputs.iter().map(|o| o.obs_path.as_path()).collect();
    out.insert(
        "obs".to_string(),
        grow_table(corpus_dir, dir, old, "obs", &staged)?,
    );
    Ok(out)
}

/// The old files of a table with their rows and their names in the new corpus: the same in
/// format 2; in format 1 the single `TABLE.parquet` becomes `TABLE/part-00000.parquet`.
pub(crate) fn old_table_files(
    corpus_dir: &Path,
    old: &Manifest,
    table: &str,
) -> Result<Vec<(String, TableFile)>> {
    if old.format_version >= 2 {
        return Ok(old
            .tables
            .get(table)
            .into_iter()
            .flatten()
            .map(|f| (f.path.clone(), f.clone()))
            .collect());
    }
    old.table_paths(table)
        .into_iter()
        .map(|rel| {
            let rows = crate::corpus::parquet_rows(&corpus_dir.join(&rel))?;
            Ok((
                rel,
                TableFile {
                    path: tables::table_file_path(table, 0),
                    rows,
                },
            ))
        })
        .collect()
}

/// Links the old files of a table into `dir` as they are.
pub(crate) fn link_table(
    corpus_dir: &Path,
    dir: &Path,
    old: &Manifest,
    table: &str,
) -> Result<Vec<TableFile>> {
    let files = old_table_files(corpus_dir, old, table)?;
    tables::link_files(
        corpus_dir,
        dir,
        files.iter().map(|(src, f)| (src.as_str(), f.path.as_str())),
    )?;
    Ok(files.into_iter().map(|(_, f)| f).collect())
}

/// The old files of `table` and then one file of the rows of `staged` (removed afterwards).
/// The old files are linked when their schema holds the new rows; otherwise their rows are
/// written again, once, into one file of the grown schema (see [`tables::grown_schema`]).
pub(crate) fn grow_table(
    corpus_dir: &Path,
    dir: &Path,
    old: &Manifest,
    table: &str,
    staged: &[&Path],
) -> Result<Vec<TableFile>> {
    let old_files = old_table_files(corpus_dir, old, table)?;
    let Some((first_src, _)) = old_files.first() else {
        return Err(Error::corpus(
            corpus_dir.join(MANIFEST_FILE),
            format!("the corpus has no {table} table"),
        ));
    };
    let old_schema = crate::corpus::parquet_schema(&corpus_dir.join(first_src))?;
    let new_schemas = staged
        .iter()
        .map(|p| crate::corpus::parquet_schema(p))
        .collect::<Result<Vec<_>>>()?;
    let mut files: Vec<TableFile> = old_files.iter().map(|(_, f)| f.clone()).collect();
    let mut number = tables::next_table_file_number(&files, table);
    let schema = match tables::grown_schema(&old_schema, &new_schemas) {
        None => {
            tables::link_files(
                corpus_dir,
                dir,
                old_files.iter().map(|(s, f)| (s.as_str(), f.path.as_str())),
            )?;
            old_schema
        }
        Some(grown) => {
            let sources: Vec<std::path::PathBuf> =
                old_files.iter().map(|(s, _)| corpus_dir.join(s)).collect();
            let sources: Vec<&Path> = sources.iter().map(|p| p.as_path()).collect();
            let rel = tables::table_file_path(table, number);
            number += 1;
            let path = dir.join(&rel);
            std::fs::create_dir_all(path.parent().expect("a table file has a directory"))
                .map_err(|e| Error::io(&path, "creating the directory of", e))?;
            let rows = tables::merge_tables(&path, &sources, Some(grown.clone()))?;
            files = vec![TableFile { path: rel, rows }];
            grown
        }
    };
    files.push(tables::write_staged_file(
        dir,
        table,
        number,
        staged,
        Some(schema),
    )?);
    Ok(files)
}

/// The counts of a format-1 genes.parquet (`gene`, `name`, `n_samples`, `n_cells`) as the
/// first file of the format-2 gene_counts table.
pub(crate) fn split_format1_counts(
    corpus_dir: &Path,
    dir: &Path,
    old: &Manifest,
) -> Result<Vec<TableFile>> {
    let path = corpus_dir.join("genes.parquet");
    let (mut n_samples, mut n_cells) = (Vec::new(), Vec::new());
    for b in read_parquet(&path, Some(&["n_samples", "n_cells"]))? {
        let (s, c) = count_columns(&path, &b)?;
        n_samples.extend(s.values().iter().copied());
        n_cells.extend(c.values().iter().copied());
    }
    if n_samples.len() as u64 != old.n_genes {
        return Err(Error::corpus(
            &path,
            format!(
                "has {} rows, manifest.json says n_genes = {}",
                n_samples.len(),
                old.n_genes
            ),
        ));
    }
    Ok(vec![tables::write_gene_counts_file(
        dir, 0, &n_samples, &n_cells,
    )?])
}

/// The `n_samples` (u32) and `n_cells` (u64) columns of a batch read with those two columns,
/// in that order; `path` names the table in the error.
pub(crate) fn count_columns<'a>(
    path: &Path,
    b: &'a arrow::record_batch::RecordBatch,
) -> Result<(&'a arrow::array::UInt32Array, &'a arrow::array::UInt64Array)> {
    let bad = || Error::corpus(path, "n_samples or n_cells has an unexpected type");
    let s = b
        .column(0)
        .as_primitive_opt::<UInt32Type>()
        .ok_or_else(bad)?;
    let c = b
        .column(1)
        .as_primitive_opt::<UInt64Type>()
        .ok_or_else(bad)?;
    Ok((s, c))
}

/// The old manifest with the new parts, samples, counts, tables, checksums and a lineage
/// entry; the entries of existing parts and samples are kept as they were (a format-1 part
/// gets its types, which were the manifest's, written out).
#[allow(clippy::too_many_arguments)]
fn new_manifest(
    dir: &Path,
    old: Manifest,
    plans: &[Planned],
    outputs: &[SampleOutput],
    starts: &[(usize, u64)],
    n_genes: usize,
    tables: BTreeMap<String, Vec<TableFile>>,
    opts: &ConvertOptions,
) -> Result<Manifest> {
    let mut m = old;
    let first_cell = m.n_cells;
    for i in 0..m.matrix.parts.len() {
        let (it, vt) = m.part_types(i);
        let p = &mut m.matrix.parts[i];
        p.index_type = Some(it);
        p.value_type = Some(vt);
    }
    let new_parts: Vec<PartEntry> = outputs.iter().flat_map(|o| o.parts.clone()).collect();
    // Files of the old tables keep their checksums (the same bytes, linked); new ones are
    // hashed. The manifest lists the tables first, as a conversion does, then every part.
    let old_files: HashMap<String, FileEntry> = m
        .files
        .iter()
        .map(|f| (f.path.clone(), f.clone()))
        .collect();
    let mut rel_new = Vec::new();
    let mut files = Vec::new();
    for rel in tables::table_file_list(&tables) {
        match old_files.get(&rel) {
            Some(f) if m.format_version >= 2 => files.push(f.clone()),
            _ => rel_new.push(rel),
        }
    }
    files.extend(tables::file_entries(dir, &rel_new)?);
    files.extend(
        m.matrix
            .parts
            .iter()
            .filter_map(|p| old_files.get(&p.path).cloned()),
    );
    rel_new = new_parts.iter().map(|p| p.path.clone()).collect();
    files.extend(tables::file_entries(dir, &rel_new)?);
    m.files = files;
    for (p, (o, &(_, first))) in plans.iter().zip(outputs.iter().zip(starts)) {
        m.samples.push(crate::corpus::SampleEntry {
            sample_id: p.input.sample_id.clone(),
            first_cell: first,
            n_cells: p.n_obs,
            nnz: o.nnz,
            spatial_dims: p.coords.as_ref().map_or(0, |c| c.0 as u8),
        });
    }
    let added_cells: u64 = new_parts.iter().map(|p| p.n_cells).sum();
    m.n_cells += added_cells;
    m.nnz += new_parts.iter().map(|p| p.nnz).sum::<u64>();
    m.n_genes = n_genes as u64;
    m.matrix.parts.extend(new_parts);
    // The manifest's types cover every part (and the vocabulary, even with no new part).
    m.index_type = m
        .matrix
        .parts
        .iter()
        .filter_map(|p| p.index_type)
        .fold(IndexType::for_genes(m.n_genes), IndexType::join);
    m.value_type = m
        .matrix
        .parts
        .iter()
        .filter_map(|p| p.value_type)
        .fold(m.value_type, ValueType::join);
    m.tables = tables;
    m.format_version = FORMAT_VERSION;
    m.lineage.push(LineageEntry {
        operation: "append".into(),
        created_by: format!("cellarrow {}", env!("CARGO_PKG_VERSION")),
        first_cell,
        n_cells: added_cells,
        sources: plans
            .iter()
            .map(|p| SourceEntry {
                sample_id: p.input.sample_id.clone(),
                path: p.input.path.display().to_string(),
                sha256: p.sha256.clone(),
            })
            .collect(),
        options: tables::recorded_options(opts)?,
        inputs: Vec::new(),
    });
    Ok(m)
}
