//! The `cellarrow` command line: argument parsing and printing only; the work is in the library.
//!
//! Each subcommand lives in its own module exposing a `clap::Args` struct and a
//! `run(args) -> Result<()>` function.

use clap::{Parser, Subcommand};

use crate::error::Result;

pub mod append;
pub mod bench;
pub mod convert;
pub mod inspect;
pub mod merge;
#[cfg(feature = "sql")]
pub mod query;
pub mod sample;
pub mod validate;

/// Command-line entry: parses `args` and runs the subcommand.
#[derive(Debug, Parser)]
#[command(
    name = "cellarrow",
    version,
    about = "Single-cell and spatial transcriptomics corpora on Arrow and Parquet",
    long_about = "Single-cell and spatial transcriptomics corpora on Arrow and Parquet.\n\n\
        Convert h5ad cohorts into one corpus, select cells with SQL, and sample zero-copy batches.\n\n\
        A typical session:\n  \
        cellarrow convert *.h5ad -o my.corpus\n  \
        cellarrow inspect my.corpus\n  \
        cellarrow query my.corpus \"SELECT cell_type, count(*) FROM obs GROUP BY cell_type\"\n  \
        cellarrow sample my.corpus --sampler random --batch-size 256 --summary"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Convert h5ad files (or an input manifest) into a corpus
    Convert(convert::ConvertArgs),
    /// Add h5ad files to an existing corpus without rewriting its matrix parts
    Append(append::AppendArgs),
    /// Merge corpora converted independently into one, rewriting only parts whose gene ids change
    Merge(merge::MergeArgs),
    /// Summarise a corpus: counts, types, samples, obs columns, size on disk
    Inspect(inspect::InspectArgs),
    /// Run SQL over a corpus (obs, genes, samples, regions, blocks(), expr()); print, export or save a cohort
    #[cfg(feature = "sql")]
    Query(query::QueryArgs),
    /// Check a corpus's checksums and structure, and optionally its values against the sources
    Validate(validate::ValidateArgs),
    /// Sample batches of cells (random, groups, regions, blocks) as an Arrow IPC stream or a summary
    Sample(sample::SampleArgs),
    /// Measure loader throughput per sampler against a memcpy limit
    Bench(bench::BenchArgs),
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Convert(a) => convert::run(a),
        Command::Append(a) => append::run(a),
        Command::Merge(a) => merge::run(a),
        Command::Inspect(a) => inspect::run(a),
        #[cfg(feature = "sql")]
        Command::Query(a) => query::run(a),
        Command::Validate(a) => validate::run(a),
        Command::Sample(a) => sample::run(a),
        Command::Bench(a) => bench::run(a),
    }
}
