//! `cellarrow sample`: sampled batches as an Arrow IPC stream, or a summary. The flags only
//! name the library's settings ([`SamplerSpec`]); defaults and checks are the library's.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::ipc::writer::StreamWriter;
use clap::Args;

use crate::corpus::Corpus;
use crate::error::{Error, Result};
use crate::loader::{
    defaults, Balance, DenseGenes, Gatherer, IndexOutput, Loader, MultiHot, SamplerSpec, Summary,
    TermList, TokenMode, ValueOutput,
};
use crate::sample::{LabelMode, ShardPolicy};

pub use crate::loader::SamplerKind;

/// The sampler, its shard and the cohort: shared by `sample` and `bench`.
#[derive(Debug, Clone, Args)]
pub struct SamplerArgs {
    /// Sampler.
    #[arg(long, value_enum, default_value_t = defaults::SAMPLER)]
    pub sampler: SamplerKind,
    /// Cells per batch (random, shuffle; default 256), or groups per batch (groups, regions,
    /// blocks; default 1).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Drop the last, shorter batch of random cells.
    #[arg(long)]
    pub drop_last: bool,
    /// Shuffle: consecutive cells read as one run (larger runs: fewer, longer reads).
    #[arg(long, default_value_t = defaults::SHUFFLE_RUN)]
    pub shuffle_run: u64,
    /// Shuffle: runs mixed together in each window (a shuffle buffer of run x window cells).
    #[arg(long, default_value_t = defaults::SHUFFLE_WINDOW)]
    pub shuffle_window: u64,
    /// Seed of the sampler.
    #[arg(long, default_value_t = defaults::SEED)]
    pub seed: u64,
    /// Epoch.
    #[arg(long, default_value_t = defaults::EPOCH)]
    pub epoch: u64,
    /// Rank of this process.
    #[arg(long, default_value_t = defaults::RANK)]
    pub rank: u32,
    /// Number of ranks.
    #[arg(long, default_value_t = defaults::WORLD_SIZE)]
    pub world_size: u32,
    /// Data-loading worker within the rank.
    #[arg(long, default_value_t = defaults::WORKER)]
    pub worker: u32,
    /// Data-loading workers per rank.
    #[arg(long, default_value_t = defaults::NUM_WORKERS)]
    pub workers: u32,
    /// How uneven shards are equalised: even (sizes differ by at most one), drop-last (equal
    /// sizes, the tail dropped) or pad (equal sizes, the tail padded with repeats).
    #[arg(long, default_value_t = defaults::POLICY)]
    pub policy: ShardPolicy,
    /// Resume: items (cells or groups) of this shard already served in the epoch.
    #[arg(long, default_value_t = 0)]
    pub position: u64,
    /// Groups: cells per group.
    #[arg(long, default_value_t = defaults::GROUP_SIZE)]
    pub group_size: usize,
    /// Groups: obs column of labels (for --label-mode); regions: the obs column whose values are
    /// regions (also the regions --regions-sql selects from); `cellarrow bench` with random or
    /// shuffle: the label whose entropy per batch it prints.
    #[arg(long)]
    pub label: Option<String>,
    /// Groups: how labels shape a group: none, class-balanced or stratified.
    #[arg(long, default_value_t = defaults::LABEL_MODE)]
    pub label_mode: LabelMode,
    /// Random: draw every class of this obs label column equally often (each cell weighs
    /// 1 / cells of its class; draws with replacement, as many per epoch as cells with a
    /// class). With --ontology the values are term ids, labels or exact synonyms, and values
    /// that name no term are an error listing them. Prints the classes, their cells and
    /// weights. E.g. --balance cell_type --ontology CL --level 3
    #[arg(long, value_name = "COLUMN")]
    pub balance: Option<String>,
    /// With --balance: each label cut to its ancestor at this depth of the ontology (0: the
    /// root terms); a label above that depth is its own class. E.g. --level 3
    #[arg(long, value_name = "DEPTH", conflicts_with = "balance_terms")]
    pub level: Option<u32>,
    /// With --balance: each label cut to the most specific of these terms it lies under (a
    /// file of one term id, label or synonym per line, `#` comments); cells under none are
    /// left out. E.g. --balance-terms coarse_types.txt
    #[arg(long, value_name = "FILE")]
    pub balance_terms: Option<PathBuf>,
    /// The ontology of --balance and --multi-hot labels: an OBO or ontology JSON file
    /// (.json.zst too), or a name (CL, UBERON) looked up in the directory $CELLARROW_ONTOLOGY_DIR
    /// names (e.g. the data directory of the cellxgene-ontology-guide package). E.g.
    /// --ontology CL, --ontology cl.obo
    #[arg(long, value_name = "NAME|FILE")]
    pub ontology: Option<String>,
    /// Regions: a regions manifest (Parquet, or CSV by extension); without it, the values of
    /// the `--label` obs column are the regions.
    #[arg(long)]
    pub regions: Option<PathBuf>,
    /// Regions and blocks: downsample larger groups to this many cells.
    #[arg(long)]
    pub max_cells: Option<usize>,
    /// Regions and blocks: leave out groups with fewer cells.
    #[arg(long, default_value_t = defaults::MIN_CELLS)]
    pub min_cells: usize,
    /// Blocks: edge length of a block, in coordinate units.
    #[arg(long)]
    pub block_size: Option<f64>,
    /// Blocks: distance between neighbouring blocks (default: the block size, a tiling).
    #[arg(long)]
    pub stride: Option<f64>,
    /// Only cells matching this SQL predicate on obs (e.g. "cell_type = 'T cell'").
    #[cfg(feature = "sql")]
    #[arg(long = "where", value_name = "PREDICATE")]
    pub where_: Option<String>,
    /// Only the cells of this cohort file (written by `cellarrow query --cohort`).
    #[arg(long, value_name = "FILE")]
    pub cohort: Option<PathBuf>,
    /// Blocks: serve only the blocks this query returns (`sample_id`, `block_id` columns), e.g.
    /// "SELECT sample_id, block_id FROM blocks(500) WHERE n_cells BETWEEN 20 AND 200";
    /// use the same size as --block-size.
    #[cfg(feature = "sql")]
    #[arg(long, value_name = "SQL")]
    pub blocks_sql: Option<String>,
    /// Regions: serve only the regions this query returns (`sample_id`, `region_id` columns),
    /// e.g. "SELECT sample_id, region_id FROM regions WHERE n_cells > 50"; with --label, the
    /// `regions` table holds that column's regions.
    #[cfg(feature = "sql")]
    #[arg(long, value_name = "SQL")]
    pub regions_sql: Option<String>,
}

impl SamplerArgs {
    /// The library settings these flags name (batch contents and loader settings are left
    /// at their defaults; see [`OutputArgs::apply`]).
    pub fn spec(&self) -> SamplerSpec {
        SamplerSpec {
            sampler: self.sampler,
            batch_size: self.batch_size,
            drop_last: self.drop_last,
            seed: self.seed,
            epoch: self.epoch,
            position: self.position,
            rank: self.rank,
            world_size: self.world_size,
            worker: self.worker,
            num_workers: self.workers,
            policy: self.policy,
            shuffle_run: self.shuffle_run,
            shuffle_window: self.shuffle_window,
            group_size: self.group_size,
            label: self.label.clone(),
            label_mode: self.label_mode,
            balance: self.balance.clone(),
            level: self.level,
            balance_terms: self.balance_terms.clone().map(TermList::File),
            ontology: self.ontology.clone(),
            regions: self.regions.clone(),
            min_cells: self.min_cells,
            max_cells: self.max_cells,
            block_size: self.block_size,
            stride: self.stride,
            #[cfg(feature = "sql")]
            where_: self.where_.clone(),
            cohort: self.cohort.clone(),
            #[cfg(feature = "sql")]
            blocks_sql: self.blocks_sql.clone(),
            #[cfg(feature = "sql")]
            regions_sql: self.regions_sql.clone(),
            ..SamplerSpec::default()
        }
    }
}

/// What a batch holds: value type, dense genes, obs columns, coordinates.
#[derive(Debug, Clone, Args)]
pub struct OutputArgs {
    /// Value type of the output: native (as stored), f32 or f64.
    #[arg(long, default_value_t = defaults::VALUES)]
    pub values: ValueOutput,
    /// Gene id type of CSR output: native (as stored, u16 or u32) or i32.
    #[arg(long, default_value_t = defaults::INDICES)]
    pub indices: IndexOutput,
    /// Dense output over these genes (comma-separated names; `id:N` for a gene id; `all`).
    #[arg(long, value_delimiter = ',')]
    pub dense: Option<Vec<String>>,
    /// A model's gene vocabulary: a file of gene ids or symbols, one per line (or a JSON list,
    /// or scGPT's vocab.json). CSR batches come out in its order and id space, and --tokens
    /// gives its positions as token ids; corpus genes outside it are left out (--tokens rank
    /// still divides by the cell's total over all genes). Reports how many of its genes the
    /// corpus has.
    #[arg(long, value_name = "FILE", conflicts_with = "dense")]
    pub genes: Option<PathBuf>,
    /// obs columns to add (comma-separated or repeated).
    #[arg(long = "obs", value_delimiter = ',')]
    pub obs: Vec<String>,
    /// Add the coordinate columns x, y (and z).
    #[arg(long)]
    pub coords: bool,
    /// Add each cell's group box (min_x, min_y, max_x, max_y ...) and its coordinates
    /// normalised to the box (x_norm, y_norm ...): spatial blocks, regions given as boxes.
    /// Implies --coords.
    #[arg(long)]
    pub bounds: bool,
    /// Add a `multi_hot` column: each cell's label in this obs column and its ancestors, one
    /// byte (0 or 1) per term, over every term the corpus's labels reach (or --multi-hot-level,
    /// --multi-hot-terms); needs --ontology. Prints the terms in column order, which the
    /// field's metadata (`cellarrow.terms`) also holds. E.g. --multi-hot cell_type --ontology CL
    #[arg(long, value_name = "COLUMN")]
    pub multi_hot: Option<String>,
    /// With --multi-hot: only the terms of depth <= this. E.g. --multi-hot-level 4
    #[arg(long, value_name = "DEPTH", conflicts_with = "multi_hot_terms")]
    pub multi_hot_level: Option<u32>,
    /// With --multi-hot: these terms, in this order (a file of one term id, label or synonym
    /// per line). E.g. --multi-hot-terms lineages.txt
    #[arg(long, value_name = "FILE")]
    pub multi_hot_terms: Option<PathBuf>,
    /// Tokenized output instead of CSR rows: `rank` (rank-value encoding: genes by value over
    /// the gene's median of non-zero values, from the gene_stats table or --gene-medians) or
    /// `bins` (value binning: per-cell quantile bins of the non-zero values). Token ids are
    /// corpus gene ids, or positions in the --genes vocabulary.
    #[arg(long, value_enum)]
    pub tokens: Option<TokenMode>,
    /// With --tokens: tokens per cell.
    #[arg(long, default_value_t = defaults::TOP_K)]
    pub top_k: usize,
    /// With --tokens bins: number of bins, bin 0 (not expressed) included.
    #[arg(long, default_value_t = defaults::N_BINS)]
    pub n_bins: usize,
    /// With --tokens rank: a table of gene medians (tab- or comma-separated, header with the
    /// columns gene and median) instead of the corpus's gene_stats table.
    #[arg(long)]
    pub gene_medians: Option<PathBuf>,
}

impl OutputArgs {
    /// `spec` with the batch contents these flags name.
    pub fn apply(&self, spec: SamplerSpec) -> Result<SamplerSpec> {
        Ok(SamplerSpec {
            values: self.values,
            indices: self.indices,
            dense: self
                .dense
                .as_deref()
                .map(DenseGenes::from_list)
                .transpose()?,
            genes: self.genes.clone().map(crate::genes::GeneVocab::File),
            obs: self.obs.clone(),
            coords: self.coords,
            bounds: self.bounds,
            multi_hot: self.multi_hot.clone(),
            multi_hot_level: self.multi_hot_level,
            multi_hot_terms: self.multi_hot_terms.clone().map(TermList::File),
            tokens: self.tokens,
            top_k: self.top_k,
            n_bins: self.n_bins,
            gene_medians: self.gene_medians.clone(),
            ..spec
        })
    }
}

/// Arguments of `cellarrow sample`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    cellarrow sample my.corpus --batch-size 256 --seed 1 --epoch 0 --summary\n  \
    cellarrow sample my.corpus --rank 1 --world-size 4 --obs cell_type -o rank1.arrow\n  \
    cellarrow sample my.corpus --sampler shuffle --shuffle-run 128 -o batches.arrow\n  \
    cellarrow sample my.corpus --sampler regions --label niche --coords -o regions.arrow\n  \
    cellarrow sample my.corpus --sampler blocks --block-size 200 --bounds -o blocks.arrow\n  \
    cellarrow sample my.corpus --tokens rank --top-k 2048 -o tokens.arrow\n  \
    cellarrow sample my.corpus --tokens bins --n-bins 51 --top-k 1200 -o binned.arrow\n  \
    cellarrow sample my.corpus --tokens rank --genes geneformer_vocab.txt -o tokens.arrow\n  \
    # every Cell Ontology class at depth 3 drawn equally often ($CELLARROW_ONTOLOGY_DIR names\n  \
    # a directory of ontology files, e.g. the cellxgene-ontology-guide package's data)\n  \
    cellarrow sample my.corpus --balance cell_type --ontology CL --level 3 --summary\n  \
    cellarrow sample my.corpus --balance cell_type --ontology CL --balance-terms coarse_types.txt -o b.arrow\n  \
    cellarrow sample my.corpus --balance donor --summary      # plain values, no ontology\n  \
    # each cell's label and ancestors as a multi-hot column over the terms of depth <= 4\n  \
    cellarrow sample my.corpus --multi-hot cell_type --ontology cl.obo --multi-hot-level 4 -o mh.arrow\n  \
    cellarrow sample my.corpus --multi-hot cell_type --ontology CL --multi-hot-terms lineages.txt -o mh.arrow")]
pub struct SampleArgs {
    /// The corpus: a directory or a URL (s3://bucket/prefix, gs://, az://, http(s)://, file://)
    pub corpus: PathBuf,
    #[command(flatten)]
    pub sampler: SamplerArgs,
    #[command(flatten)]
    pub output_args: OutputArgs,
    /// Write the Arrow IPC stream here (default: standard output).
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    /// Print a summary instead of writing batches.
    #[arg(long)]
    pub summary: bool,
    /// Stop after this many batches.
    #[arg(long)]
    pub max_batches: Option<usize>,
    /// Loader threads (0: gather on the main thread).
    #[arg(long, default_value_t = defaults::THREADS)]
    pub threads: usize,
    /// Batches gathered ahead.
    #[arg(long, default_value_t = defaults::PREFETCH)]
    pub prefetch: usize,
    /// Batches whose chunks are fetched ahead from object storage (a corpus URL with cold
    /// parts): the requests of this many batches are in flight at once
    #[arg(long, default_value_t = defaults::READ_AHEAD)]
    pub read_ahead: usize,
}

impl SampleArgs {
    /// Every setting these flags name.
    pub fn spec(&self) -> Result<SamplerSpec> {
        let spec = self.output_args.apply(self.sampler.spec())?;
        let spec = SamplerSpec {
            threads: self.threads,
            prefetch: self.prefetch,
            read_ahead: self.read_ahead,
            ..spec
        };
        spec.validate()?;
        Ok(spec)
    }
}

/// Runs `cellarrow sample`.
pub fn run(args: SampleArgs) -> Result<()> {
    crate::loader::bench::keep_freed_memory();
    let mut spec = args.spec()?;
    let corpus = Arc::new(Corpus::open(&args.corpus)?);
    let cohort = spec.select(&corpus, None)?;
    let planned = spec.plan(&corpus, cohort)?;
    let gatherer = Arc::new(Gatherer::new(corpus, spec.batch_options())?);
    if let Some(v) = gatherer.vocab() {
        eprintln!("cellarrow: {}", v.report());
    }
    // With --summary the classes are part of the summary, with what was served of each.
    if let (Some(b), false) = (&planned.balance, args.summary) {
        eprintln!("cellarrow: balance: {}", b.report());
    }
    if let Some(m) = gatherer.multi_hot() {
        eprintln!("cellarrow: {}", multi_hot_terms(m));
    }
    let schema = gatherer.schema();
    let loader = Loader::new(gatherer, planned.plan, spec.loader_options());
    let loader = loader.take(args.max_batches.unwrap_or(usize::MAX));

    if args.summary {
        return summarise(loader, planned.balance.as_deref());
    }
    match &args.output {
        Some(path) => {
            let file = std::fs::File::create(path).map_err(|e| Error::io(path, "creating", e))?;
            write_stream(
                loader,
                &schema,
                std::io::BufWriter::with_capacity(1 << 20, file),
                path,
            )
        }
        None => {
            let stdout = std::io::stdout();
            if stdout.is_terminal() {
                return Err(Error::invalid_input(
                    "standard output is a terminal; write the Arrow stream with --output FILE, pipe it, or use --summary",
                ));
            }
            write_stream(
                loader,
                &schema,
                std::io::BufWriter::with_capacity(1 << 20, stdout.lock()),
                Path::new("<stdout>"),
            )
        }
    }
}

fn write_stream<W: Write>(
    batches: impl Iterator<Item = Result<arrow::record_batch::RecordBatch>>,
    schema: &arrow::datatypes::SchemaRef,
    out: W,
    path: &Path,
) -> Result<()> {
    use crate::error::Context;
    let mut writer = StreamWriter::try_new(out, schema).at(path)?;
    for b in batches {
        writer.write(&b?).at(path)?;
    }
    writer.finish().at(path)?;
    writer
        .into_inner()
        .at(path)?
        .flush()
        .map_err(|e| Error::io(path, "writing", e))
}

/// The multi-hot column's terms in column order, as printed.
fn multi_hot_terms(m: &MultiHot) -> String {
    let terms: Vec<String> = m
        .terms()
        .iter()
        .zip(m.labels())
        .map(|(id, label)| format!("{id} ({label})"))
        .collect();
    format!(
        "multi_hot: obs column `{}` over {} terms of {}, in column order: {}",
        m.column(),
        terms.len(),
        m.ontology().name(),
        terms.join(", ")
    )
}

fn summarise(
    batches: impl Iterator<Item = Result<arrow::record_batch::RecordBatch>>,
    balance: Option<&Balance>,
) -> Result<()> {
    use arrow::array::AsArray;
    let started = Instant::now();
    let mut s = Summary::default();
    let mut served = vec![0u64; balance.map_or(0, |b| b.report().classes.len())];
    for b in batches {
        let b = b?;
        s.add(&b);
        if let (Some(bal), Some(ids)) = (balance, b.column_by_name("cell")) {
            let ids = ids.as_primitive::<arrow::datatypes::UInt64Type>();
            for c in ids.values().iter().filter_map(|&c| bal.class_of(c)) {
                served[c] += 1;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!("batches        {}", s.batches);
    println!(
        "cells          {} ({} distinct)",
        s.cells,
        s.distinct_cells()
    );
    if let Some((lo, hi)) = s.rows {
        println!("cells/batch    {lo}..{hi}");
    }
    match s.tokens {
        Some(t) => println!("tokens         {t}"),
        None => println!("non-zeros      {}", s.nnz),
    }
    println!("batch memory   {:.1} MB", s.bytes as f64 / 1e6);
    println!("first cells    {:?}", s.first_cells);
    println!(
        "time           {secs:.3} s ({:.0} cells/s)",
        s.cells as f64 / secs.max(1e-9)
    );
    if let Some(b) = balance {
        let r = b.report();
        println!("balance        {r}");
        let total: u64 = served.iter().sum();
        let entropy: f64 = served
            .iter()
            .filter(|&&n| n > 0)
            .map(|&n| n as f64 / total as f64)
            .map(|p| -p * p.ln())
            .sum();
        println!(
            "served         {total} draws, effective number of classes {:.2}",
            entropy.exp()
        );
        let w = r.classes.iter().map(|c| c.class.len()).max().unwrap_or(5);
        for (c, n) in r.classes.iter().zip(&served) {
            println!("  {:<w$}  {n:>8}  {}", c.class, c.label);
        }
    }
    Ok(())
}
