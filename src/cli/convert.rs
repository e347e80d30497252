//! `cellarrow convert`.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Args;

use crate::convert::{convert, resolve_inputs, ConvertOptions, ConvertSummary, DuplicateGenes};
use crate::corpus::PartLayout;
use crate::error::Result;
use crate::genes::{GeneKey, OrthologPolicy};
use crate::h5ad::MatrixSource;

/// Convert h5ad files into one corpus.
#[derive(Debug, Args)]
#[command(after_long_help = "\
Examples:
  # Two files; sample ids are the file names without .h5ad
  cellarrow convert brain1.h5ad brain2.h5ad -o brain.corpus

  # An input manifest with per-sample metadata (path and sample_id, then any columns):
  #   path,sample_id,tissue,donor,species
  #   data/a.h5ad,a,brain,D1,human
  cellarrow convert cohort.csv -o cohort.corpus

  # Raw counts from a layer, Ensembl ids as the vocabulary, coordinates in obsm['X_spatial']
  cellarrow convert *.h5ad -o out --layer counts --gene-column gene_ids --spatial-key X_spatial

  # Human and mouse files in one gene space: mouse genes mapped onto their human orthologs
  # (a BioMart export: Gene stable ID, Mouse gene stable ID, Mouse homology type)
  cellarrow convert human.h5ad mouse.h5ad -o both --orthologs mart_export.txt

  # Cell types given as Cell Ontology labels or ids, resolved to ids in
  # obs.cell_type_ontology_term_id (CL from $CELLARROW_ONTOLOGY_DIR, or a file)
  cellarrow convert *.h5ad -o out --ontology cell_type=CL --ontology tissue=uberon.obo

  # Straight into object storage (credentials and endpoint from AWS_* variables); readers
  # see the corpus only once its manifest, uploaded last, is there
  cellarrow convert *.h5ad -o s3://bucket/corpora/cohort

  # Pieces converted apart (other machines) with one gene order merge without rewriting
  cellarrow convert a.h5ad -o a.corpus --gene-order genes.parquet

The corpus is written beside OUTPUT under a hidden name and renamed into place when complete:
an interrupted or failed conversion leaves nothing behind and never touches an existing corpus.")]
pub struct ConvertArgs {
    /// h5ad files, or one input manifest (.json or .csv) listing path, sample_id and metadata
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    /// The corpus to create: a directory, or a URL (s3://bucket/prefix, gs://, az://,
    /// file://), converted under $TMPDIR and then uploaded, the manifest last
    #[arg(short, long, value_name = "DIR|URL")]
    pub output: PathBuf,
    #[command(flatten)]
    pub read: ReadArgs,
    /// Refuse inputs that have no coordinates under --spatial-key
    #[arg(long)]
    pub require_spatial: bool,
    /// Replace OUTPUT if it is an existing corpus
    #[arg(long)]
    pub overwrite: bool,
    /// Start the vocabulary with these genes at these ids (a text file with one gene per line,
    /// a corpus, or a genes parquet file); genes of the inputs not listed follow. Corpora
    /// converted apart with one order merge without rewriting a part
    #[arg(long, value_name = "FILE", conflicts_with = "vocab")]
    pub gene_order: Option<PathBuf>,
    /// Cells per matrix part file
    #[arg(long, default_value_t = 1 << 20, value_name = "N")]
    pub part_cells: u64,
    /// No progress bars and no summary
    #[arg(short, long)]
    pub quiet: bool,
    /// Print the summary as JSON
    #[arg(long)]
    pub json: bool,
}

/// How the inputs are read: shared by `convert` and `append`.
#[derive(Debug, Args)]
pub struct ReadArgs {
    /// Store this layer instead of X
    #[arg(long, value_name = "NAME", conflicts_with = "raw")]
    pub layer: Option<String>,
    /// Store raw/X (genes from raw/var) instead of X
    #[arg(long)]
    pub raw: bool,
    /// The var column of stable gene ids (default: the first of gene_ids, gene_id, ensembl_id,
    /// feature_id ... present, else var_names when they are ids). Ensembl versions
    /// (ENSG00000141510.17) are split off into the genes table's id_version
    #[arg(long, value_name = "COLUMN")]
    pub gene_column: Option<String>,
    /// The var column of gene symbols (default: var_names when they are not ids, else the
    /// first of gene_symbols, gene_symbol, feature_name, gene_name ... present)
    #[arg(long, value_name = "COLUMN")]
    pub symbol_column: Option<String>,
    /// What matches genes across files: the stable id (a gene without one matches by symbol),
    /// or the symbol (a gene without one matches by id)
    #[arg(long, value_enum, default_value_t = GeneKey::Id)]
    pub gene_key: GeneKey,
    /// An ortholog table (TSV, or CSV by extension; as exported from Ensembl BioMart, or with
    /// columns human_gene_id, mouse_gene_id, homology_type) mapping genes of other species
    /// onto --reference-species. A sample's species is the input manifest's `species`, else
    /// read from its gene ids (ENSG human, ENSMUSG mouse ...)
    #[arg(long, value_name = "TABLE")]
    pub orthologs: Option<PathBuf>,
    /// The species genes of other species are mapped onto (with --orthologs)
    #[arg(long, default_value = "human", value_name = "SPECIES")]
    pub reference_species: String,
    /// Which ortholog pairs map a gene: one-to-one only, or every gene with a unique
    /// reference ortholog (one-to-many); the others keep their own genes and are counted
    #[arg(long, value_enum, default_value_t = OrthologPolicy::OneToOne)]
    pub ortholog_policy: OrthologPolicy,
    /// Fix the vocabulary (convert only): a text file with one gene per line, another corpus (its directory), or a Parquet file with a `name` column.
    /// Genes outside it are counted per sample and reported, not stored
    #[arg(long, value_name = "FILE")]
    pub vocab: Option<PathBuf>,
    /// What to do with a gene name that appears twice in one file
    #[arg(long, value_enum, default_value_t = DuplicateGenes::Error)]
    pub duplicate_genes: DuplicateGenes,
    /// obs columns to keep, comma-separated (default: all)
    #[arg(long, value_name = "A,B,...", value_delimiter = ',')]
    pub obs_columns: Option<Vec<String>>,
    /// Declare an obs column an ontology column: COLUMN=ONTOLOGY, the ontology a name such as
    /// CL (a file of $CELLARROW_ONTOLOGY_DIR, e.g. the data directory of the
    /// cellxgene-ontology-guide package) or an OBO or ontology JSON file. Its labels or ids
    /// (exact id, label or EXACT synonym) become term ids in COLUMN_ontology_term_id; values
    /// that name no term are listed and left null, never guessed. Repeatable
    #[arg(long, value_name = "COLUMN=ONTOLOGY")]
    pub ontology: Vec<crate::convert::OntologyColumn>,
    /// The obsm key holding spatial coordinates (2 or 3 columns)
    #[arg(long, default_value = "spatial", value_name = "KEY")]
    pub spatial_key: String,
    /// Files converted at once (default: one per core)
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub threads: usize,
    /// How matrix parts are stored: hot (uncompressed, memory-mapped, zero-copy; the default
    /// of convert) or cold (zstd-compressed chunks of --chunk-cells cells, gene ids
    /// delta-coded, about half the bytes; a chunk is decompressed on first use). append
    /// keeps the corpus's layout unless told
    #[arg(long, value_enum, value_name = "LAYOUT")]
    pub layout: Option<LayoutArg>,
    /// Cells per compressed chunk of a cold part (default 256); a random cell costs one chunk
    #[arg(long, value_name = "N", requires = "layout")]
    pub chunk_cells: Option<u64>,
}

/// `--layout`: how matrix parts are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LayoutArg {
    /// Uncompressed Arrow IPC streams, memory-mapped and read with no copy
    Hot,
    /// Arrow IPC files of zstd-compressed chunks, decoded on use
    Cold,
}

impl ReadArgs {
    /// Conversion options writing to `output`, with these reading options.
    pub fn options(self, output: &std::path::Path) -> ConvertOptions {
        let mut opts = ConvertOptions::new(output);
        opts.source = match (&self.layer, self.raw) {
            (Some(l), _) => MatrixSource::Layer(l.clone()),
            (None, true) => MatrixSource::Raw,
            (None, false) => MatrixSource::X,
        };
        opts.gene_column = self.gene_column;
        opts.symbol_column = self.symbol_column;
        opts.gene_key = self.gene_key;
        opts.orthologs = self.orthologs;
        opts.reference_species = self.reference_species;
        opts.ortholog_policy = self.ortholog_policy;
        opts.vocab = self.vocab;
        opts.duplicate_genes = self.duplicate_genes;
        opts.obs_columns = self.obs_columns;
        opts.ontologies = self.ontology;
        opts.spatial_key = self.spatial_key;
        opts.threads = self.threads;
        opts.layout = match self.layout {
            Some(LayoutArg::Cold) => PartLayout::Cold,
            Some(LayoutArg::Hot) | None => PartLayout::Hot,
        };
        opts.chunk_cells = self.chunk_cells;
        opts
    }
}

/// Runs `cellarrow convert`.
pub fn run(args: ConvertArgs) -> Result<()> {
    let inputs = resolve_inputs(&args.inputs)?;
    let mut opts = args.read.options(&args.output);
    opts.require_spatial = args.require_spatial;
    opts.overwrite = args.overwrite;
    opts.gene_order = args.gene_order;
    opts.part_cells = args.part_cells;
    opts.progress = !args.quiet && std::io::stderr().is_terminal();
    let summary = match args.output.to_str().filter(|s| crate::store::is_url(s)) {
        Some(url) => crate::convert::publish::convert_to(&inputs, &opts, url)?,
        None => convert(&inputs, &opts)?,
    };
    print_summary(&summary, args.quiet, args.json);
    Ok(())
}

/// Prints a conversion's warnings, then its summary (one line, or JSON).
pub fn print_summary(summary: &ConvertSummary, quiet: bool, json: bool) {
    for w in &summary.warnings {
        eprintln!("cellarrow: warning: {w}");
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(summary).expect("summary serialises")
        );
    } else if !quiet {
        let mut species: std::collections::BTreeMap<&str, usize> = Default::default();
        for s in summary.species.values() {
            *species.entry(s.as_str()).or_default() += 1;
        }
        let species: Vec<String> = species.iter().map(|(s, n)| format!("{s} {n}")).collect();
        println!(
            "{}: {} samples ({}), {} cells, {} genes, {} non-zeros ({:?} values, {:?} gene ids), {:.1} MB, {:.2} bytes/nnz, {:.1} s",
            summary.output.display(),
            summary.n_samples,
            species.join(", "),
            summary.n_cells,
            summary.n_genes,
            summary.nnz,
            summary.value_type,
            summary.index_type,
            summary.bytes as f64 / 1e6,
            summary.bytes as f64 / summary.nnz.max(1) as f64,
            summary.seconds
        );
    }
}
