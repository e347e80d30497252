//! Growing a corpus: [`append`] adds samples without touching the bytes of existing parts.
//!
//! The new corpus is assembled beside the old one, like a conversion: existing matrix parts
//! are hard-linked into it (same inodes, so not a byte is rewritten or copied), the new
//! samples are converted into new parts numbered after the existing ones, with cell ids
//! continuing the old ones, and the three tables are rewritten as the old rows followed by the
//! new ones. The finished directory replaces the old one with the same move-aside-and-rename
//! as `convert --overwrite`, under a lock file that keeps a second writer out. A reader that
//! had the old corpus open keeps its mapped parts (the inodes live on); the rows of the old
//! cells are unchanged in the rewritten tables.
//!
//! Types are fixed by the existing parts: new genes get the next ids, and an append whose
//! vocabulary outgrows the index type, or whose values the value type cannot hold exactly, is
//! refused with an error that says so (nothing is written).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Instant;

use arrow::array::AsArray;
use arrow::datatypes::{UInt32Type, UInt64Type};

use super::job::{Layout, SampleOutput};
use super::kill::kill_point;
use super::{
    convert_samples, coord_dims, lay_out, plan_inputs, tables, thread_pool, warnings,
    ConvertOptions, ConvertSummary, InputSample, Planned, Retry, Vocabulary,
};
use crate::corpus::{read_parquet, LineageEntry, Manifest, PartEntry, SourceEntry, ValueType};
use crate::error::{Error, Result};
use crate::h5ad::ValueStats;

/// Adds `inputs` as new samples to the corpus at `corpus_dir`. `opts` says how to read the
/// inputs (matrix source, gene column, obs columns, spatial key, duplicate genes, threads);
/// its `output`, `overwrite` and `part_cells` are not used (the corpus fixes its part size), and
/// a fixed vocabulary is refused (the corpus's vocabulary grows).
///
/// Fails, leaving the corpus as it was, when a sample id or a source file (by sha256) is
/// already in the corpus, or when the new data does not fit the corpus's index or value type.
pub fn append(
    corpus_dir: &Path,
    inputs: &[InputSample],
    opts: &ConvertOptions,
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
    let _lock = super::lock::CorpusLock::acquire(corpus_dir)?;
    // Takes back a previous corpus left aside by a killed writer, before reading it.
    let staging = super::output::Staging::create(corpus_dir, true)?;
    let old = Manifest::read(corpus_dir)?;
    let pool = thread_pool(opts)?;

    let genes_path = corpus_dir.join("genes.parquet");
    let mut vocab = Vocabulary::growing(read_strings(&genes_path, "name")?, &genes_path)?;
    let n_old_genes = vocab.len();
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
    check_types(&old, &plans, vocab.len())?;

    let dir = staging.path().to_path_buf();
    link_parts(corpus_dir, &dir, &old)?;
    let first_part = next_part_number(&old);
    let mut layout = Layout {
        dir: &dir,
        index_type: old.index_type,
        value_type: old.value_type,
        batch_rows: old.matrix.batch_rows as usize,
        part_cells: old.matrix.part_cells,
        n_genes: vocab.len(),
        coord_dims: coord_dims(&plans).max(
            old.samples
                .iter()
                .map(|s| s.spatial_dims as usize)
                .max()
                .unwrap_or(0),
        ),
    };
    let starts = lay_out(&plans, layout.part_cells, first_part, old.n_cells);
    let outputs = convert_samples(&pool, &mut plans, &starts, opts, &mut layout, Retry::Refuse)?;
    check_sources_new(corpus_dir, &plans)?;
    let warnings = warnings(&plans, &outputs);

    write_tables(
        corpus_dir,
        &dir,
        &plans,
        &outputs,
        &starts,
        &vocab,
        n_old_genes,
        opts,
    )?;
    kill_point("tables-written");
    let manifest = new_manifest(&dir, old, &plans, &outputs, &starts, vocab.len(), opts)?;
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
    })
}

/// The new data must fit the types of the existing parts, which are never rewritten.
fn check_types(old: &Manifest, plans: &[Planned], n_genes: usize) -> Result<()> {
    if n_genes as u64 > old.index_type.max_genes() {
        return Err(Error::invalid_input(format!(
            "the vocabulary would grow to {n_genes} genes, more than the corpus's index type \
             {:?} addresses ({}); convert the corpus again with all its inputs",
            old.index_type,
            old.index_type.max_genes()
        )));
    }
    for p in plans {
        if !value_type_holds(old.value_type, &p.stats) {
            return Err(Error::invalid_input(format!(
                "its values need {:?}, wider than the corpus's value type {:?}; convert the \
                 corpus again with all its inputs",
                super::choose_value_type(&p.stats),
                old.value_type
            ))
            .with_path(&p.input.path));
        }
    }
    Ok(())
}

/// Whether every value described by `stats` is stored exactly by `t`.
fn value_type_holds(t: ValueType, stats: &ValueStats) -> bool {
    if stats.count == 0 {
        return true;
    }
    let counts = stats.all_integer && stats.min >= 0.0;
    match t {
        ValueType::Uint16 => counts && stats.max <= u16::MAX as f64,
        ValueType::Uint32 => counts && stats.max <= u32::MAX as f64,
        ValueType::Float32 => stats.all_f32_exact,
        ValueType::Float64 => true,
    }
}

/// Hard-links the existing parts into the new corpus (a copy where links are impossible).
fn link_parts(from: &Path, to: &Path, old: &Manifest) -> Result<()> {
    for p in &old.matrix.parts {
        let (src, dst) = (from.join(&p.path), to.join(&p.path));
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, "creating", e))?;
        }
        if std::fs::hard_link(&src, &dst).is_err() {
            std::fs::copy(&src, &dst).map_err(|e| Error::io(&src, "copying", e))?;
        }
    }
    Ok(())
}

/// A part number above every existing part's, so no new part shares a name (and, through the
/// hard link, the bytes) of an old one.
fn next_part_number(old: &Manifest) -> usize {
    old.matrix
        .parts
        .iter()
        .filter_map(|p| {
            p.path
                .strip_prefix("matrix/part-")?
                .strip_suffix(".arrow")?
                .parse::<usize>()
                .ok()
        })
        .map(|n| n + 1)
        .max()
        .unwrap_or(0)
        .max(old.matrix.parts.len())
}

fn read_strings(path: &Path, column: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for b in read_parquet(path, Some(&[column]))? {
        let c = b
            .column(0)
            .as_string_opt::<i32>()
            .ok_or_else(|| Error::corpus(path, format!("column {column} is not text")))?;
        out.extend(c.iter().map(|s| s.unwrap_or_default().to_string()));
    }
    Ok(out)
}

/// A file whose bytes are already a sample of the corpus (same sha256) is refused, naming both.
fn check_sources_new(corpus_dir: &Path, plans: &[Planned]) -> Result<()> {
    let samples = corpus_dir.join("samples.parquet");
    let ids = read_strings(&samples, "sample_id")?;
    let shas = read_strings(&samples, "source_sha256")?;
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

/// genes.parquet (old genes with updated counts, then the new genes), samples.parquet and
/// obs.parquet (old rows, then the new ones).
#[allow(clippy::too_many_arguments)]
fn write_tables(
    corpus_dir: &Path,
    dir: &Path,
    plans: &[Planned],
    outputs: &[SampleOutput],
    starts: &[(usize, u64)],
    vocab: &Vocabulary,
    n_old_genes: usize,
    opts: &ConvertOptions,
) -> Result<()> {
    let genes_path = corpus_dir.join("genes.parquet");
    let (mut n_samples, mut n_cells) = tables::gene_counts(plans, outputs, vocab.len());
    let mut row = 0usize;
    for b in read_parquet(&genes_path, Some(&["n_samples", "n_cells"]))? {
        let bad = || Error::corpus(&genes_path, "n_samples or n_cells has an unexpected type");
        let s = b
            .column(0)
            .as_primitive_opt::<UInt32Type>()
            .ok_or_else(bad)?;
        let c = b
            .column(1)
            .as_primitive_opt::<UInt64Type>()
            .ok_or_else(bad)?;
        for i in 0..b.num_rows() {
            if row + i >= n_old_genes {
                return Err(Error::corpus(&genes_path, "more rows than genes"));
            }
            n_samples[row + i] += s.value(i);
            n_cells[row + i] += c.value(i);
        }
        row += b.num_rows();
    }
    tables::write_genes_table(dir, vocab, n_samples, n_cells)?;

    let new_samples = dir.join("samples-append.parquet");
    crate::corpus::write_parquet(
        &new_samples,
        &[tables::samples_batch(plans, outputs, starts, opts)?],
    )?;
    tables::merge_tables(
        &dir.join("samples.parquet"),
        &[&corpus_dir.join("samples.parquet"), &new_samples],
    )?;
    std::fs::remove_file(&new_samples).map_err(|e| Error::io(&new_samples, "removing", e))?;

    let old_obs = corpus_dir.join("obs.parquet");
    let mut obs: Vec<&Path> = vec![&old_obs];
    obs.extend(outputs.iter().map(|o| o.obs_path.as_path()));
    tables::merge_tables(&dir.join("obs.parquet"), &obs)?;
    for o in outputs {
        std::fs::remove_file(&o.obs_path).map_err(|e| Error::io(&o.obs_path, "removing", e))?;
    }
    Ok(())
}

/// The old manifest with the new parts, samples, counts, checksums and a lineage entry; the
/// entries of existing parts and samples are kept as they were.
fn new_manifest(
    dir: &Path,
    old: Manifest,
    plans: &[Planned],
    outputs: &[SampleOutput],
    starts: &[(usize, u64)],
    n_genes: usize,
    opts: &ConvertOptions,
) -> Result<Manifest> {
    let mut m = old;
    let first_cell = m.n_cells;
    let new_parts: Vec<PartEntry> = outputs.iter().flat_map(|o| o.parts.clone()).collect();
    let mut rel: Vec<String> = vec![
        "genes.parquet".into(),
        "samples.parquet".into(),
        "obs.parquet".into(),
    ];
    rel.extend(new_parts.iter().map(|p| p.path.clone()));
    let fresh = tables::file_entries(dir, &rel)?;
    let tables_set: HashSet<&str> = rel[..3].iter().map(String::as_str).collect();
    m.files.retain(|f| !tables_set.contains(f.path.as_str()));
    // Tables first, as a conversion lists them; then every part in order.
    let mut files = fresh[..3].to_vec();
    files.append(&mut m.files);
    files.extend(fresh[3..].iter().cloned());
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
        options: serde_json::to_value(opts)
            .map_err(|e| Error::invalid_input(format!("options: {e}")))?,
    });
    Ok(m)
}
