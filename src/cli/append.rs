//! `cellarrow append`.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Args;

use super::convert::{print_summary, ReadArgs};
use crate::convert::publish::append_to;
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
reading what they opened.

A corpus URL is grown the same way without downloading its matrix: its manifest and tables
are copied into a staging directory under TMPDIR, the new samples are appended there, then
the new files are uploaded and the manifest last, replacing the old one only if nobody changed
it meanwhile. A lock object beside the prefix (.NAME.cellarrow-lock) keeps a second append out:
  cellarrow append s3://bucket/corpora/brain brain5.h5ad
If an append to a URL was killed, the next one reports its lock; pass --break-lock once you
know it is not running.")]
pub struct AppendArgs {
    /// The corpus to grow: a directory, or a URL (s3://, gs://, az://, http(s)://, file://)
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
    /// For a corpus URL: take over the lock a killed append left (the store cannot tell
    /// whether its process still runs), removing the objects it left that the manifest does
    /// not list. Only when no other append to this corpus is running.
    #[arg(long)]
    pub break_lock: bool,
    /// No progress bars and no summary
    #[arg(short, long)]
    pub quiet: bool,
    /// Print the summary as JSON
    #[arg(long)]
    pub json: bool,
}

/// Runs `cellarrow append`.
pub fn run(args: AppendArgs) -> Result<()> {
    let inputs = resolve_inputs(&args.inputs)?;
    let mut opts = args.read.options(&args.corpus);
    opts.require_spatial = args.require_spatial;
    opts.progress = !args.quiet && std::io::stderr().is_terminal();
    let summary = match args.corpus.to_str().filter(|s| crate::store::is_url(s)) {
        Some(url) => append_to(&inputs, &opts, url, args.break_lock)?,
        None => append(&args.corpus, &inputs, &opts)?,
    };
    print_summary(&summary, args.quiet, args.json);
    Ok(())
}
