//! `cellarrow append`.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Args;

use super::convert::{print_summary, ReadArgs};
use crate::convert::{append, resolve_inputs};
use crate::error::Result;

/// Add h5ad files to an existing corpus.
#[derive(Debug, Args)]
#[command(after_long_help = "\
Examples:
  # Two new files; sample ids are the file names without .h5ad
  cellarrow append brain.corpus brain3.h5ad brain4.h5ad

  # An input manifest with per-sample metadata, as for convert
  cellarrow append cohort.corpus new_samples.csv

Existing matrix parts and table files are kept as they are (hard-linked, never rewritten);
each table (obs, genes, samples, gene_counts) gets one new file with the new rows only: new
genes get the next gene ids, new cells the next cell ids. New data that needs a wider gene id
or value type gets it in its own parts (the loader widens the others). An input whose sample
id or file (by sha256) is already in the corpus is refused. The new corpus replaces the old one atomically; a second append into the same corpus
fails at once while the first holds its lock, and readers that opened the corpus before keep
reading what they opened.")]
pub struct AppendArgs {
    /// The corpus directory to grow
    #[arg(value_name = "CORPUS")]
    pub corpus: PathBuf,
    /// h5ad files, or one input manifest (.json or .csv) listing path, sample_id and metadata
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    #[command(flatten)]
    pub read: ReadArgs,
    /// Refuse inputs that have no coordinates under --spatial-key
    #[arg(long)]
    pub require_spatial: bool,
    /// No progress bars and no summary
    #[arg(short, long)]
    pub quiet: bool,
    /// Print the summary as JSON
    #[arg(long)]
    pub json: bool,
}

/// Runs `cellarrow append`.
pub fn run(args: AppendArgs) -> Result<()> {
    if let Some(url) = args.corpus.to_str().filter(|s| crate::store::is_url(s)) {
        if !url.starts_with("file://") {
            return Err(crate::error::Error::url(
                crate::error::ErrorKind::Unsupported,
                url,
                "append grows a corpus on local disk only; append to a local copy of it",
            ));
        }
    }
    let inputs = resolve_inputs(&args.inputs)?;
    let mut opts = args.read.options(&args.corpus);
    opts.require_spatial = args.require_spatial;
    opts.progress = !args.quiet && std::io::stderr().is_terminal();
    let summary = append(&args.corpus, &inputs, &opts)?;
    print_summary(&summary, args.quiet, args.json);
    Ok(())
}
