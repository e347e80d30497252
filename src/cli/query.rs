//! `cellarrow query`: SQL over a corpus; prints, exports or saves a cohort.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use crate::corpus::Corpus;
use crate::error::{Error, Result};
use crate::query::{OutputFormat, QueryEngine, QueryOptions, ResultWriter};
use crate::sample::write_cohort;

const EXAMPLES: &str = "\
Tables: obs (one row per cell), genes, gene_counts, samples, regions (one row per value of an
obs region column: --region-column, else `region` when obs has it). Functions:
blocks(size[, stride]) lists the non-empty spatial blocks of every spatial sample;
expr(cell, 'GENE') is a gene's value in a cell (the gene by its name, stable id or unique
symbol, or its gene id). Without ORDER BY the row order is not defined (scans and GROUP BY run
in parallel): add ORDER BY for a stable order.

Examples:
  # cells per cell type and tissue
  cellarrow query corpus/ \"SELECT cell_type, tissue, COUNT(*) AS n FROM obs GROUP BY cell_type, tissue ORDER BY n DESC\"

  # cells of one donor inside a bounding box, saved as a cohort for `cellarrow sample --cohort`
  cellarrow query corpus/ \"SELECT cell FROM obs WHERE donor = 'D1' AND x BETWEEN 0 AND 500 AND y BETWEEN 0 AND 500\" --cohort d1_box.parquet

  # the samples of one species
  cellarrow query corpus/ \"SELECT sample_id, n_cells FROM samples WHERE species = 'human'\"

  # T cells that express CD3E, exported as CSV
  cellarrow query corpus/ \"SELECT cell, sample_id FROM obs WHERE cell_type = 'T cell' AND expr(cell, 'CD3E') > 0\" --format csv -o t.csv

  # 500-unit blocks of sample s1 with 20 to 200 cells
  cellarrow query corpus/ \"SELECT * FROM blocks(500) WHERE n_cells BETWEEN 20 AND 200 AND sample_id = 's1'\"

  # every B cell, whatever depth each dataset annotated; CL is looked up in
  # $CELLARROW_ONTOLOGY_DIR (e.g. the data directory of the cellxgene-ontology-guide
  # package), or give the path of an OBO or ontology JSON file
  cellarrow query corpus/ --ontology CL \"SELECT count(*) FROM obs WHERE is_a(cell_type_ontology_term_id, 'CL:0000236')\"

  # the columns of obs
  cellarrow query corpus/ \"SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'obs'\"";

/// Run SQL over a corpus: print the result, export it, or save the selected cells as a cohort.
#[derive(Debug, Args)]
#[command(after_long_help = EXAMPLES)]
pub struct QueryArgs {
    /// The corpus: a directory or a URL (s3://bucket/prefix, gs://, az://, http(s)://, file://)
    pub corpus: PathBuf,
    /// One SQL statement (DataFusion dialect).
    pub sql: String,
    /// Output format; parquet and arrow need --output or a redirected stdout.
    #[arg(long, short = 'f', value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// Write the result to this file instead of stdout.
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    /// Save the distinct values of the result's `cell` column as a cohort file (Parquet, one
    /// sorted UInt64 column `cell`) instead of printing the result.
    #[arg(long, conflicts_with_all = ["output", "format"])]
    pub cohort: Option<PathBuf>,
    /// The obs column whose values define the `regions` table (default: `region`, if obs has it).
    #[arg(long)]
    pub region_column: Option<String>,
    /// An ontology for `is_a(term, 'CL:0000084')` and the `ontology` table: an OBO or ontology
    /// JSON file (`.json.zst` too), or a name (`CL`, `UBERON`) looked up in the directory that
    /// $CELLARROW_ONTOLOGY_DIR names. Repeat for several.
    #[arg(long, value_name = "NAME|FILE")]
    pub ontology: Vec<String>,
    /// Worker threads (default: available cores, at most 8).
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    pub threads: usize,
}

/// Runs `cellarrow query`.
pub fn run(args: QueryArgs) -> Result<()> {
    let corpus = Arc::new(Corpus::open(&args.corpus)?);
    let options = QueryOptions {
        threads: args.threads,
        region_column: args.region_column.clone(),
    };
    let mut engine = QueryEngine::with_options(corpus, &options)?;
    for ontology in &args.ontology {
        engine.load_ontology(ontology)?;
    }

    if let Some(path) = &args.cohort {
        let cohort = engine.cohort(&args.sql)?;
        write_cohort(path, &cohort)?;
        eprintln!("{} cells written to {}", cohort.len(), path.display());
        return Ok(());
    }

    match &args.output {
        Some(path) => {
            // Written beside the target and renamed, so a failed query leaves no partial file.
            let mut tmp = crate::sample::temp_beside(path)?;
            let file = std::io::BufWriter::new(tmp.as_file_mut());
            write_results(&engine, &args.sql, args.format, file)?;
            tmp.persist(path)
                .map_err(|e| Error::io(path, "writing results", e.error))?;
        }
        None => {
            let stdout = std::io::stdout();
            if args.format.is_binary() && stdout.is_terminal() {
                return Err(Error::invalid_input(format!(
                    "--format {} writes binary data; give --output FILE or redirect stdout",
                    format!("{:?}", args.format).to_lowercase()
                )));
            }
            match write_results(
                &engine,
                &args.sql,
                args.format,
                std::io::BufWriter::new(stdout),
            ) {
                // The reader went away (`| head`): not a failure of the query.
                Err(e) if is_broken_pipe(&e) => return Ok(()),
                other => other?,
            }
        }
    }
    Ok(())
}

fn is_broken_pipe(e: &Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        {
            return true;
        }
        source = s.source();
    }
    // arrow's CSV and JSON writers keep only the message of the I/O error.
    e.message().contains("Broken pipe")
}

/// Streams the result of `sql` into `out` in `format`.
fn write_results<W: Write + Send>(
    engine: &QueryEngine,
    sql: &str,
    format: OutputFormat,
    out: W,
) -> Result<()> {
    let mut out = Some(out);
    let mut writer: Option<ResultWriter<W>> = None;
    let schema = engine.for_each_batch(sql, |batch| {
        if writer.is_none() {
            let out = out.take().expect("the output is taken once");
            writer = Some(ResultWriter::new(format, &batch.schema(), out)?);
        }
        writer.as_mut().expect("set above").write(batch)
    })?;
    let writer = match writer {
        Some(w) => w,
        None => ResultWriter::new(
            format,
            &schema,
            out.take().expect("not taken without a batch"),
        )?,
    };
    writer.finish()?;
    Ok(())
}
