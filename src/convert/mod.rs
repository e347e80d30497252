//! Layer 3: h5ad files to a corpus.
//!
//! [`convert`] plans every input (shape, genes, value range, coordinates), builds the shared
//! gene vocabulary and the narrowest lossless types, converts the samples in parallel straight
//! into their final parts (each sample's cell ids and part numbers are known from the plan),
//! then writes the tables and the manifest, and renames the finished corpus into place.
//!
//! ```no_run
//! use cellarrow::convert::{convert, resolve_inputs, ConvertOptions};
//! let inputs = resolve_inputs(&["a.h5ad".into(), "b.h5ad".into()])?;
//! let summary = convert(&inputs, &ConvertOptions::new("corpus"))?;
//! println!("{} cells, {} genes", summary.n_cells, summary.n_genes);
//! # Ok::<(), cellarrow::Error>(())
//! ```

mod append;
pub mod gene_stats;
pub mod input;
mod job;
pub mod kill;
pub mod labels;
pub mod lock;
mod merge;
pub mod output;
#[cfg(feature = "remote")]
pub mod publish;
pub mod rows;
pub mod spatial;
mod tables;
pub mod verify;
pub mod vocab;

use std::path::PathBuf;
use std::time::Instant;

use job::progress::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;
use serde::Serialize;

pub use append::append;
pub use input::{read_input_manifest, resolve_inputs, InputSample};
pub use labels::OntologyColumn;
pub use merge::{merge, MergeOptions, MergeReport, OnDuplicate, RenamedSample};
pub use vocab::{DuplicateGenes, GeneSlot, Vocabulary};

use crate::corpus::{self, IndexType, PartLayout, ValueType};
use crate::error::{Error, Result};
use crate::genes::{GeneKey, OrthologCounts, OrthologPolicy, OrthologTable, SourceGene};
use crate::h5ad::{H5ad, MatrixSource, ValueStats};

/// obs.parquet columns that cellarrow writes itself; source columns of these names are renamed
/// `obs_<name>`.
pub const RESERVED_OBS: &[&str] = &[
    "cell",
    "sample_id",
    "obs_name",
    "source_row",
    "nnz",
    "total",
    "x",
    "y",
    "z",
];

/// How to convert. [`ConvertOptions::new`] gives the defaults of `cellarrow convert`.
#[derive(Debug, Clone, Serialize)]
pub struct ConvertOptions {
    /// The corpus directory to create.
    pub output: PathBuf,
    /// The URL the corpus is uploaded to once converted in `output`
    /// ([`publish::convert_to`]): the manifest records it as the output.
    #[serde(skip)]
    pub destination: Option<String>,
    /// Which matrix to store: X, a layer, or raw/X.
    #[serde(serialize_with = "source_name")]
    pub source: MatrixSource,
    /// A var column of stable gene ids (else `gene_ids`-style columns or `var_names`).
    pub gene_column: Option<String>,
    /// A var column of gene symbols (else `gene_symbols`/`feature_name`-style columns or
    /// `var_names`).
    pub symbol_column: Option<String>,
    /// The key that matches genes across files.
    pub gene_key: GeneKey,
    /// An ortholog table mapping genes of other species onto `reference_species`.
    pub orthologs: Option<PathBuf>,
    /// The species other species' genes are mapped onto.
    pub reference_species: String,
    /// Which ortholog pairs map a gene.
    pub ortholog_policy: OrthologPolicy,
    /// A fixed vocabulary (text file or genes.parquet); genes outside it are counted, not stored.
    pub vocab: Option<PathBuf>,
    /// A gene order (text file, a corpus, or a genes file such as [`Vocabulary::write`]
    /// makes): the vocabulary starts with these genes at these ids, and genes of the inputs not
    /// listed follow. Corpora converted apart with one order share gene ids, so merging them
    /// links every part. Not used by append.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gene_order: Option<PathBuf>,
    pub duplicate_genes: DuplicateGenes,
    /// obs columns to keep (all when `None`).
    pub obs_columns: Option<Vec<String>>,
    /// obs columns of ontology labels or ids, resolved to term ids ([`labels`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ontologies: Vec<OntologyColumn>,
    /// The obsm key holding coordinates.
    pub spatial_key: String,
    /// Refuse inputs without coordinates.
    pub require_spatial: bool,
    /// Replace an existing corpus at `output`.
    pub overwrite: bool,
    /// Files converted at once (0: one per core).
    pub threads: usize,
    /// Cells per matrix part.
    pub part_cells: u64,
    /// Stored values read at once per file; bounds memory.
    pub chunk_nnz: usize,
    /// How the matrix parts are stored: `Hot` (uncompressed, memory-mapped, zero-copy; the
    /// default) or `Cold` (compressed chunks of `chunk_cells` cells, decoded on use). An
    /// append onto a corpus converted cold writes cold parts whatever this says.
    #[serde(skip_serializing_if = "PartLayout::is_hot")]
    pub layout: PartLayout,
    /// Cells per chunk of cold parts ([`corpus::DEFAULT_CHUNK_CELLS`] when not given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunk_cells: Option<u64>,
    /// Draw progress bars (only on a terminal).
    #[serde(skip)]
    pub progress: bool,
}

fn source_name<S: serde::Serializer>(
    s: &MatrixSource,
    ser: S,
) -> std::result::Result<S::Ok, S::Error> {
    ser.serialize_str(&source_label(s))
}

/// `X`, `layers/NAME` or `raw/X`.
pub fn source_label(s: &MatrixSource) -> String {
    match s {
        MatrixSource::X => "X".into(),
        MatrixSource::Layer(l) => format!("layers/{l}"),
        MatrixSource::Raw => "raw/X".into(),
    }
}

impl ConvertOptions {
    /// Defaults for writing a corpus at `output`.
    pub fn new(output: impl Into<PathBuf>) -> Self {
        ConvertOptions {
            destination: None,
            output: output.into(),
            source: MatrixSource::X,
            gene_column: None,
            symbol_column: None,
            gene_key: GeneKey::default(),
            orthologs: None,
            reference_species: "human".into(),
            ortholog_policy: OrthologPolicy::default(),
            vocab: None,
            gene_order: None,
            duplicate_genes: DuplicateGenes::Error,
            obs_columns: None,
            ontologies: Vec::new(),
            spatial_key: "spatial".into(),
            require_spatial: false,
            overwrite: false,
            threads: 0,
            part_cells: 1 << 20,
            chunk_nnz: 1 << 21,
            layout: PartLayout::Hot,
            chunk_cells: None,
            progress: false,
        }
    }
}

/// What a conversion did.
#[derive(Debug, Clone, Serialize)]
pub struct ConvertSummary {
    pub output: PathBuf,
    pub n_samples: usize,
    pub n_cells: u64,
    pub n_genes: u64,
    pub nnz: u64,
    pub index_type: IndexType,
    pub value_type: ValueType,
    pub bytes: u64,
    pub seconds: f64,
    /// Things the user should know (genes outside the vocabulary, merged duplicates ...).
    pub warnings: Vec<String>,
    /// The species of each sample converted (`unknown` where neither the input manifest nor
    /// the gene ids say), by sample id.
    pub species: std::collections::BTreeMap<String, String>,
}

/// Everything learnt about one input before converting it.
#[derive(Debug)]
pub(crate) struct Planned {
    pub input: InputSample,
    pub n_obs: u64,
    /// Each source column's match key ([`crate::genes::match_key`]; empty for a gene with neither
    /// id nor symbol).
    pub genes: Vec<String>,
    /// Each source column's gene, after any ortholog mapping.
    pub identities: Vec<SourceGene>,
    /// The sample's species (given, inferred from its ids, or `unknown`).
    pub species: String,
    /// What the ortholog table did to this sample's genes (with `--orthologs`).
    pub orthologs: Option<OrthologCounts>,
    pub stats: ValueStats,
    pub sha256: String,
    /// Source column -> vocabulary id.
    pub gene_map: Vec<GeneSlot>,
    /// (dims, row-major coordinates) for spatial samples.
    pub coords: Option<(usize, Vec<f64>)>,
}

fn plan_one(
    input: &InputSample,
    opts: &ConvertOptions,
    orthologs: Option<&OrthologTable>,
) -> Result<Planned> {
    let path = &input.path;
    if !path.exists() {
        return Err(Error::invalid_input("input file does not exist").with_path(path));
    }
    if path.is_dir() {
        return Err(
            Error::invalid_input("input is a directory, expected an .h5ad file").with_path(path),
        );
    }
    let h5 = H5ad::open(path)?;
    let matrix = h5.matrix(&opts.source)?;
    let (n_obs, n_vars) = matrix.shape();
    if n_obs == 0 {
        return Err(Error::h5ad(
            path,
            matrix.object(),
            "the matrix has zero cells",
        ));
    }
    if n_vars == 0 {
        return Err(Error::h5ad(
            path,
            "var",
            "the file has no genes (var is empty)",
        ));
    }
    let sample_genes = vocab::read_sample_genes(&h5, input, opts, orthologs)?;
    let genes = sample_genes.keys;
    if genes.len() as u64 != n_vars {
        return Err(Error::h5ad(
            path,
            "var",
            format!(
                "{} gene names for a matrix of {n_vars} columns",
                genes.len()
            ),
        ));
    }
    let keyed: Vec<String> = genes.iter().filter(|g| !g.is_empty()).cloned().collect();
    vocab::check_duplicates(&keyed, opts.duplicate_genes, path)?;
    let stats = matrix.value_stats()?;
    if stats.non_finite > 0 {
        return Err(Error::h5ad(
            path,
            matrix.object(),
            format!(
                "{} values are NaN or infinite; the corpus stores finite values only",
                stats.non_finite
            ),
        ));
    }
    let coords = match h5.obsm(&opts.spatial_key)? {
        Some((dims, coords)) => {
            if !(2..=3).contains(&dims) {
                return Err(Error::h5ad(
                    path,
                    format!("obsm/{}", opts.spatial_key),
                    format!("has {dims} columns; spatial coordinates need 2 or 3"),
                ));
            }
            if coords.len() as u64 != n_obs * dims as u64 {
                return Err(Error::h5ad(
                    path,
                    format!("obsm/{}", opts.spatial_key),
                    "has a different number of rows than X",
                ));
            }
            Some((dims, coords))
        }
        None if opts.require_spatial => {
            return Err(Error::h5ad(
                path,
                format!("obsm/{}", opts.spatial_key),
                "not found, and --require-spatial was given",
            ))
        }
        None => None,
    };
    Ok(Planned {
        input: input.clone(),
        n_obs,
        genes,
        identities: sample_genes.genes,
        species: sample_genes.species,
        orthologs: sample_genes.orthologs,
        stats,
        sha256: String::new(),
        gene_map: Vec::new(),
        coords,
    })
}

/// The narrowest type that holds every value losslessly.
pub fn choose_value_type(stats: &ValueStats) -> ValueType {
    if stats.count == 0 || (stats.all_integer && stats.min >= 0.0) {
        if stats.count == 0 || stats.max <= u16::MAX as f64 {
            return ValueType::Uint16;
        }
        if stats.max <= u32::MAX as f64 {
            return ValueType::Uint32;
        }
    }
    if stats.all_f32_exact {
        ValueType::Float32
    } else {
        ValueType::Float64
    }
}

/// The next type up that holds sums of values of `t`.
fn wider(t: ValueType) -> ValueType {
    match t {
        ValueType::Uint16 => ValueType::Uint32,
        _ => ValueType::Float64,
    }
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:>24} [{bar:30}] {pos}/{len} cells {msg}")
        .expect("static template")
        .progress_chars("=> ")
}

/// Converts `inputs` into a corpus at `opts.output`. Nothing is left behind on failure, and an
/// existing corpus is replaced only with `overwrite`, atomically.
pub fn convert(inputs: &[InputSample], opts: &ConvertOptions) -> Result<ConvertSummary> {
    let started = Instant::now();
    if inputs.is_empty() {
        return Err(Error::invalid_input("no input files given"));
    }
    // The manifest records the chunk size actually used, so that appends keep it.
    let cold = cold_chunk_cells(opts)?;
    let mut recorded;
    let opts = if let Some(c) = cold {
        recorded = opts.clone();
        recorded.chunk_cells = Some(c);
        &recorded
    } else {
        opts
    };
    let pool = thread_pool(opts)?;
    let mut vocab = start_vocabulary(opts)?;
    let labels = labels::load(&opts.ontologies)?;
    // Check the destination before the expensive planning, so a mistake costs nothing.
    let staging = output::Staging::create(&opts.output, opts.overwrite)?;
    let dir = staging.path().to_path_buf();

    let mut plans = plan_inputs(&pool, inputs, opts, &mut vocab)?;
    let value_type = choose_value_type(
        &plans
            .iter()
            .fold(ValueStats::empty(), |acc, p| acc.merge(p.stats)),
    );
    let mut layout = job::Layout {
        dir: &dir,
        index_type: IndexType::for_genes(vocab.len() as u64),
        value_type,
        batch_rows: batch_rows(&plans),
        part_cells: opts.part_cells.max(1),
        cold,
        n_genes: vocab.len(),
        coord_dims: coord_dims(&plans),
        labels: &labels,
    };
    let starts = lay_out(&plans, layout.part_cells, 0, 0);
    let outputs = convert_samples(&pool, &mut plans, &starts, opts, &mut layout, Retry::Widen)?;
    let warnings = warnings(&plans, &outputs);
    let written = tables::finish(&dir, &plans, &outputs, &starts, &vocab, &layout, opts)?;
    gene_stats::record(&dir, None)?;
    staging.commit()?;
    Ok(ConvertSummary {
        output: opts.output.clone(),
        n_samples: plans.len(),
        n_cells: written.n_cells,
        n_genes: vocab.len() as u64,
        nnz: written.nnz,
        index_type: layout.index_type,
        value_type: layout.value_type,
        bytes: written.bytes,
        seconds: started.elapsed().as_secs_f64(),
        warnings,
        species: vocab::species_of(&plans),
    })
}

/// The pool of `opts.threads` threads (0: one per core) that converts files in parallel.
fn thread_pool(opts: &ConvertOptions) -> Result<rayon::ThreadPool> {
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        opts.threads
    };
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| Error::invalid_input(format!("cannot start {threads} threads: {e}")))
}

/// Plans every input in parallel, then maps each file's genes into `vocab` in input order (so
/// a growing vocabulary assigns ids in first-seen order).
fn plan_inputs(
    pool: &rayon::ThreadPool,
    inputs: &[InputSample],
    opts: &ConvertOptions,
    vocab: &mut Vocabulary,
) -> Result<Vec<Planned>> {
    let orthologs = opts
        .orthologs
        .as_deref()
        .map(|p| OrthologTable::read(p, &opts.reference_species))
        .transpose()?;
    let mut plans: Vec<Planned> = pool.install(|| {
        inputs
            .par_iter()
            .map(|i| plan_one(i, opts, orthologs.as_ref()))
            .collect::<Result<_>>()
    })?;
    let files: Vec<(&[SourceGene], &std::path::Path)> = plans
        .iter()
        .map(|p| (p.identities.as_slice(), p.input.path.as_path()))
        .collect();
    let maps = vocab.map_files(&files, opts.duplicate_genes)?;
    for (p, map) in plans.iter_mut().zip(maps) {
        p.gene_map = map;
    }
    if vocab.is_empty() {
        return Err(Error::invalid_input("the gene vocabulary is empty"));
    }
    Ok(plans)
}

/// The vocabulary a conversion starts from: fixed (`vocab`), a gene order that grows
/// (`gene_order`), or empty.
fn start_vocabulary(opts: &ConvertOptions) -> Result<Vocabulary> {
    match (&opts.vocab, &opts.gene_order) {
        (Some(_), Some(_)) => Err(Error::invalid_input(
            "give a fixed vocabulary or a gene order, not both",
        )),
        (Some(p), None) => Vocabulary::read_by(p, opts.gene_key),
        (None, Some(p)) => Vocabulary::read_order(p, opts.gene_key),
        (None, None) => Ok(Vocabulary::union_by(opts.gene_key)),
    }
}

/// The vocabulary that [`convert`] builds from `inputs` with `opts` (their genes matched and
/// placed in first-seen order, starting from `opts.gene_order` or fixed to `opts.vocab`), read
/// from the var tables alone: no matrix is read, so a conversion that runs in pieces can be
/// planned cheaply, each piece converted with this vocabulary as its gene order.
///
/// ```no_run
/// use cellarrow::convert::{plan_genes, resolve_inputs, ConvertOptions};
/// let inputs = resolve_inputs(&["a.h5ad".into(), "b.h5ad".into()])?;
/// let vocab = plan_genes(&inputs, &ConvertOptions::new("unused"))?;
/// vocab.write("genes.parquet".as_ref())?;
/// # Ok::<(), cellarrow::Error>(())
/// ```
pub fn plan_genes(inputs: &[InputSample], opts: &ConvertOptions) -> Result<Vocabulary> {
    if inputs.is_empty() {
        return Err(Error::invalid_input("no input files given"));
    }
    let pool = thread_pool(opts)?;
    let orthologs = opts
        .orthologs
        .as_deref()
        .map(|p| OrthologTable::read(p, &opts.reference_species))
        .transpose()?;
    let genes: Vec<vocab::SampleGenes> = pool.install(|| {
        inputs
            .par_iter()
            .map(|i| {
                if !i.path.is_file() {
                    return Err(
                        Error::invalid_input("input file does not exist").with_path(&i.path)
                    );
                }
                let h5 = H5ad::open(&i.path)?;
                let g = vocab::read_sample_genes(&h5, i, opts, orthologs.as_ref())?;
                let keyed: Vec<String> = g.keys.iter().filter(|k| !k.is_empty()).cloned().collect();
                vocab::check_duplicates(&keyed, opts.duplicate_genes, &i.path)?;
                Ok(g)
            })
            .collect::<Result<_>>()
    })?;
    let mut vocab = start_vocabulary(opts)?;
    let files: Vec<(&[SourceGene], &std::path::Path)> = genes
        .iter()
        .zip(inputs)
        .map(|(g, i)| (g.genes.as_slice(), i.path.as_path()))
        .collect();
    vocab.map_files(&files, opts.duplicate_genes)?;
    if vocab.is_empty() {
        return Err(Error::invalid_input("the gene vocabulary is empty"));
    }
    Ok(vocab)
}

/// Rows per record batch of a part: about 4 Mi non-zeros per batch keeps the writer's buffers
/// small whatever the density, while batches stay large enough to amortise their headers.
/// The chunk size of cold parts when `opts` asks for them, checked; `None` for hot parts.
pub(crate) fn cold_chunk_cells(opts: &ConvertOptions) -> Result<Option<u64>> {
    if opts.layout.is_hot() {
        if opts.chunk_cells.is_some() {
            return Err(Error::invalid_input(
                "chunk_cells is an option of the cold layout (--layout cold)",
            ));
        }
        return Ok(None);
    }
    let c = opts.chunk_cells.unwrap_or(corpus::DEFAULT_CHUNK_CELLS);
    if !(1..=corpus::MAX_CHUNK_CELLS).contains(&c) {
        return Err(Error::invalid_input(format!(
            "chunk_cells {c} is outside 1..={}",
            corpus::MAX_CHUNK_CELLS
        )));
    }
    Ok(Some(c))
}

fn batch_rows(plans: &[Planned]) -> usize {
    let total_nnz: u64 = plans.iter().map(|p| p.stats.count).sum();
    let total_cells: u64 = plans.iter().map(|p| p.n_obs).sum();
    let avg = (total_nnz / total_cells.max(1)).max(1);
    ((4u64 << 20) / avg)
        .clamp(256, 65_536)
        .next_power_of_two()
        .min(65_536) as usize
}

/// Spatial columns of obs: the most dimensions of any sample (0 when none is spatial).
fn coord_dims(plans: &[Planned]) -> usize {
    plans
        .iter()
        .filter_map(|p| p.coords.as_ref().map(|c| c.0))
        .max()
        .unwrap_or(0)
}

/// Each sample's first part number and first cell, from the given starting point, so that
/// samples convert independently into their final places.
fn lay_out(
    plans: &[Planned],
    part_cells: u64,
    first_part: usize,
    first_cell: u64,
) -> Vec<(usize, u64)> {
    let mut starts = Vec::with_capacity(plans.len());
    let (mut cell, mut part) = (first_cell, first_part);
    for p in plans {
        starts.push((part, cell));
        cell += p.n_obs;
        part += p.n_obs.div_ceil(part_cells) as usize;
    }
    starts
}

/// What to do when summed duplicates outgrow the planned value type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Start over with the next wider type (a new corpus chooses its type freely).
    Widen,
    /// Fail: the type is fixed by the parts already written.
    Refuse,
}

/// Converts every sample into its parts and staging obs table, and hashes the sources beside
/// the conversion (pure I/O and CPU that would otherwise add a full read of every input to the
/// wall time); the hashes land in `plans`.
fn convert_samples(
    pool: &rayon::ThreadPool,
    plans: &mut [Planned],
    starts: &[(usize, u64)],
    opts: &ConvertOptions,
    layout: &mut job::Layout<'_>,
    retry: Retry,
) -> Result<Vec<job::SampleOutput>> {
    let multi = MultiProgress::with_draw_target(if opts.progress {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let bars: Vec<ProgressBar> = plans
        .iter()
        .map(|p| {
            let b = multi.add(ProgressBar::new(p.n_obs));
            b.set_style(bar_style());
            b.set_prefix(p.input.sample_id.clone());
            b
        })
        .collect();
    let plans_ro: &[Planned] = plans;
    let convert_all = |layout: &mut job::Layout<'_>| -> Result<Vec<job::SampleOutput>> {
        loop {
            let outputs: Vec<Option<job::SampleOutput>> = {
                plans_ro
                    .par_iter()
                    .zip(starts.par_iter())
                    .zip(bars.par_iter())
                    .map(|((p, &(first_part, first_cell)), bar)| {
                        bar.reset();
                        let out = job::convert_sample(p, opts, layout, first_part, first_cell, bar);
                        bar.finish_with_message(if out.is_ok() { "done" } else { "failed" });
                        out
                    })
                    .collect::<Result<_>>()
            }?;
            if let Some(all) = outputs.into_iter().collect::<Option<Vec<_>>>() {
                return Ok(all);
            }
            if retry == Retry::Refuse {
                return Err(Error::invalid_input(format!(
                    "summing duplicate genes gives values that the corpus's value type {:?} cannot hold",
                    layout.value_type
                )));
            }
            // Summed duplicates outgrew the type chosen from the source values: start over wider.
            layout.value_type = wider(layout.value_type);
            remove_sample_outputs(layout.dir, starts)?;
        }
    };
    let (hashes, outputs) = pool.install(|| {
        rayon::join(
            || {
                plans_ro
                    .par_iter()
                    .map(|p| crate::corpus::sha256_file(&p.input.path).map(|h| h.0))
                    .collect::<Result<Vec<_>>>()
            },
            || convert_all(layout),
        )
    });
    let outputs = outputs?;
    for (p, h) in plans.iter_mut().zip(hashes?) {
        p.sha256 = h;
    }
    let _ = multi.clear();
    Ok(outputs)
}

/// Removes what a failed round of [`convert_samples`] wrote: the parts numbered from the first
/// sample's first part on, and the staging obs tables.
fn remove_sample_outputs(dir: &std::path::Path, starts: &[(usize, u64)]) -> Result<()> {
    let first_part = starts.first().map_or(0, |s| s.0);
    let matrix = dir.join("matrix");
    for entry in std::fs::read_dir(&matrix)
        .map_err(|e| Error::io(&matrix, "listing", e))?
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let number = name
            .strip_prefix("part-")
            .and_then(|n| n.strip_suffix(".arrow"))
            .and_then(|n| n.parse::<usize>().ok());
        if number.is_none_or(|n| n >= first_part) {
            std::fs::remove_file(entry.path())
                .map_err(|e| Error::io(entry.path(), "removing", e))?;
        }
    }
    for entry in std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, "listing", e))?
        .flatten()
    {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("obs-staging-")
        {
            std::fs::remove_file(entry.path())
                .map_err(|e| Error::io(entry.path(), "removing", e))?;
        }
    }
    Ok(())
}

/// Things the user should know about each sample: genes outside the vocabulary, summed
/// duplicate entries.
fn warnings(plans: &[Planned], outputs: &[job::SampleOutput]) -> Vec<String> {
    let mut warnings = vocab::species_warnings(plans);
    for (p, o) in plans.iter().zip(outputs) {
        for u in &o.unresolved {
            warnings.push(labels::warning(&p.input.sample_id, u));
        }
        if o.counts.nnz_outside_vocab > 0 {
            let outside = p
                .gene_map
                .iter()
                .filter(|m| **m == GeneSlot::Outside)
                .count();
            warnings.push(format!(
                "{}: {} genes ({} non-zeros) are outside the vocabulary and were not stored; see samples.parquet",
                p.input.sample_id, outside, o.counts.nnz_outside_vocab
            ));
        }
        if o.counts.merged_duplicates > 0 {
            warnings.push(format!(
                "{}: {} entries named a gene already present in their row and were summed",
                p.input.sample_id, o.counts.merged_duplicates
            ));
        }
    }
    warnings
}
