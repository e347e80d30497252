//! `cellarrow validate`.

use std::path::PathBuf;

use clap::Args;

use crate::corpus::validate;
use crate::error::Result;

/// Check a corpus: every checksum and structural invariant, and optionally its values against
/// the source h5ad files.
#[derive(Debug, Args)]
#[command(after_long_help = "\
Checks, in order: every file's size and sha256 against manifest.json; each matrix part's schema,
offsets, gene ids (in range, strictly increasing per cell) and values (finite); counts against
the manifest; obs, genes and samples tables against the counts. The first failure is printed
with the file and the cell it concerns, and the exit code is 1.

Examples:
  cellarrow validate my.corpus
  cellarrow validate my.corpus --against a.h5ad b.h5ad")]
pub struct ValidateArgs {
    /// The corpus: a directory or a URL (s3://bucket/prefix, gs://, az://, http(s)://, file://)
    pub corpus: PathBuf,
    /// Re-read these source h5ad files and compare every value with the corpus
    #[arg(long, value_name = "FILE.h5ad", num_args = 1..)]
    pub against: Vec<PathBuf>,
    /// Print nothing on success
    #[arg(short, long)]
    pub quiet: bool,
}

/// Runs `cellarrow validate`.
pub fn run(args: ValidateArgs) -> Result<()> {
    let report = validate(&args.corpus)?;
    let compared = if args.against.is_empty() {
        None
    } else {
        Some(crate::convert::verify::against(
            &args.corpus,
            &args.against,
        )?)
    };
    if !args.quiet {
        println!(
            "{}: valid ({}, {}, {} checked)",
            args.corpus.display(),
            count(report.files_checked as u64, "file"),
            count(report.cells_checked, "cell"),
            count(report.nnz_checked, "non-zero"),
        );
        if let Some(c) = compared {
            println!(
                "values equal the sources: {}, {}, {} compared",
                count(c.files as u64, "file"),
                count(c.cells, "cell"),
                count(c.nnz, "non-zero"),
            );
        }
    }
    Ok(())
}

/// "1 file", "2 files".
fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
