//! `cellarrow inspect`.

use std::path::PathBuf;

use clap::Args;

use crate::corpus::info::describe;
use crate::error::Result;
use crate::genes::GeneSummary;
use crate::Corpus;

/// Summarise a corpus: counts, types, samples, obs columns, size on disk, and its genes: per
/// species, and how many samples joined by id, by symbol and through orthologs.
#[derive(Debug, Args)]
#[command(
    after_long_help = "Examples:\n  cellarrow inspect my.corpus\n  cellarrow inspect my.corpus --json | jq .n_cells"
)]
pub struct InspectArgs {
    /// The corpus: a directory or a URL (s3://bucket/prefix, gs://, az://, http(s)://, file://)
    pub corpus: PathBuf,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

/// Runs `cellarrow inspect`.
pub fn run(args: InspectArgs) -> Result<()> {
    let corpus = Corpus::open(&args.corpus)?;
    let info = describe(&corpus)?;
    let genes = GeneSummary::read(&corpus)?;
    if args.json {
        let mut value = serde_json::to_value(&info).expect("info serialises");
        if let serde_json::Value::Object(m) = &mut value {
            m.insert(
                "genes".into(),
                serde_json::to_value(&genes).expect("gene summary serialises"),
            );
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&value).expect("info serialises")
        );
    } else {
        print!("{info}");
        print!("{genes}");
    }
    Ok(())
}
