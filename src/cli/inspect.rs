//! `cellarrow inspect`.

use std::path::PathBuf;

use clap::Args;

use crate::corpus::info::describe;
use crate::error::Result;
use crate::Corpus;

/// Summarise a corpus: counts, types, samples, obs columns, size on disk.
#[derive(Debug, Args)]
#[command(
    after_long_help = "Examples:\n  cellarrow inspect my.corpus\n  cellarrow inspect my.corpus --json | jq .n_cells"
)]
pub struct InspectArgs {
    /// The corpus directory
    pub corpus: PathBuf,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

/// Runs `cellarrow inspect`.
pub fn run(args: InspectArgs) -> Result<()> {
    let corpus = Corpus::open(&args.corpus)?;
    let info = describe(&corpus)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&info).expect("info serialises")
        );
    } else {
        print!("{info}");
    }
    Ok(())
}
