//! `cellarrow merge`.

use std::path::PathBuf;

use clap::Args;

use crate::convert::{merge, MergeOptions, MergeReport, OnDuplicate};
use crate::error::Result;

/// Merge corpora into one.
#[derive(Debug, Args)]
#[command(after_long_help = "\
Examples:
  # Two corpora converted on different machines, with different gene sets
  cellarrow merge site1.corpus site2.corpus -o all.corpus

  # The same sample id in both: keep the first one's cells (or: rename the later one ID-2)
  cellarrow merge a.corpus b.corpus -o ab.corpus --on-duplicate skip

The merged vocabulary is the first corpus's genes in their order, then each further corpus's
new genes, matched as a conversion matches them (stable ids, symbols, orthologs). Matrix parts
whose gene ids keep their meaning (all of the first corpus's, and any corpus converted with the
same --gene-order) are hard-linked into the new corpus (copied byte for byte across
filesystems), with their own types; the others are rewritten with remapped ids. The note says
how many parts and bytes each way. Cells follow in input order. Duplicate sample ids are an
error that names them unless --on-duplicate says otherwise; corpora whose genes were matched by
different --gene-key are refused. Inputs may be of format 1 or 2; the output is format 2.
OUTPUT is written beside its final place and renamed in when complete: a failed or killed merge
leaves nothing behind, and the inputs are only read.")]
pub struct MergeArgs {
    /// The corpora to merge, in order (two or more, or one to copy)
    #[arg(required = true, value_name = "CORPUS")]
    pub inputs: Vec<PathBuf>,
    /// The corpus directory to create
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    /// What to do with a sample id found in two inputs: refuse the merge (error), keep the first
    /// and leave the later samples out (skip), or keep both, the later one as ID-N with N its
    /// input's position from 1 (rename)
    #[arg(long, value_enum, default_value_t = OnDuplicate::Error)]
    pub on_duplicate: OnDuplicate,
    /// Replace OUTPUT if it is an existing corpus
    #[arg(long)]
    pub overwrite: bool,
    /// Parts rewritten at once (default: one per core)
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub threads: usize,
    /// No summary
    #[arg(short, long)]
    pub quiet: bool,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

/// Runs `cellarrow merge`.
pub fn run(args: MergeArgs) -> Result<()> {
    let opts = MergeOptions {
        on_duplicate: args.on_duplicate,
        overwrite: args.overwrite,
        threads: args.threads,
    };
    let report = merge(&args.inputs, &args.output, &opts)?;
    print_report(&report, args.quiet, args.json);
    Ok(())
}

/// Prints a merge's warnings, then its report (a few lines, or JSON).
pub fn print_report(r: &MergeReport, quiet: bool, json: bool) {
    for w in &r.warnings {
        eprintln!("cellarrow: warning: {w}");
    }
    for s in &r.skipped {
        eprintln!("cellarrow: skipped duplicate sample {s}");
    }
    for s in &r.renamed {
        eprintln!(
            "cellarrow: renamed sample {:?} of input {} to {:?}",
            s.from, s.input, s.to
        );
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(r).expect("report serialises")
        );
    } else if !quiet {
        let mb = |b: u64| b as f64 / 1e6;
        println!(
            "{}: {} corpora, {} samples, {} cells, {} genes, {} non-zeros ({:?} values, {:?} gene ids), {:.1} MB, {:.1} s",
            r.output.display(),
            r.n_inputs,
            r.n_samples,
            r.n_cells,
            r.n_genes,
            r.nnz,
            r.value_type,
            r.index_type,
            mb(r.bytes),
            r.seconds
        );
        println!(
            "matrix parts: {} linked ({:.1} MB), {} copied ({:.1} MB), {} rewritten with new gene ids ({:.1} MB)",
            r.parts_linked,
            mb(r.bytes_linked),
            r.parts_copied,
            mb(r.bytes_copied),
            r.parts_rewritten,
            mb(r.bytes_rewritten)
        );
    }
}
