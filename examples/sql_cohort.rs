//! Select a cohort in SQL and train-style iterate over it: count cells per label, keep the
//! cells of one cell-cycle phase, and serve them in batches of 64 with two obs columns,
//! split across two ranks.
//!
//! ```text
//! cargo run --example sql_cohort
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use arrow::util::display::array_value_to_string;
use cellarrow::convert::{convert, ConvertOptions, InputSample};
use cellarrow::loader::{Gatherer, Loader, SamplerKind, SamplerSpec};
use cellarrow::query::QueryEngine;
use cellarrow::Corpus;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let input = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/scanpy_pbmc68k_reduced.modern.h5ad");
    let work = tempfile::tempdir()?;
    let out = work.path().join("pbmc.corpus");
    let sample = InputSample {
        path: input,
        sample_id: "pbmc68k".into(),
        metadata: Default::default(),
    };
    convert(&[sample], &ConvertOptions::new(&out))?;
    let corpus = Arc::new(Corpus::open(&out)?);

    // Any SQL over the tables obs, genes and samples.
    let engine = QueryEngine::new(corpus.clone())?;
    let counts = engine.sql(
        "SELECT bulk_labels, phase, COUNT(*) AS n FROM obs \
         GROUP BY bulk_labels, phase ORDER BY n DESC LIMIT 5",
    )?;
    for batch in &counts {
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = batch
                .columns()
                .iter()
                .map(|c| array_value_to_string(c, row))
                .collect::<Result<_, _>>()?;
            println!("{}", cells.join("\t"));
        }
    }

    // A cohort is the set of cells a query selects (its `cell` column).
    let cohort = engine.cohort_where("phase = 'G1'")?;
    println!("cohort: {} of {} cells", cohort.len(), corpus.n_cells());

    // The same cohort through the loader's settings: `where_` is the SQL predicate on obs.
    // Each rank computes only its own shard; together they serve the cohort once per epoch.
    let mut served = 0;
    for rank in 0..2 {
        let mut spec = SamplerSpec {
            rank,
            world_size: 2,
            batch_size: Some(64),
            epoch: 3,
            where_: Some("phase = 'G1'".into()),
            obs: vec!["bulk_labels".into(), "phase".into()],
            ..SamplerSpec::new(SamplerKind::Random, 7)
        };
        let selected = spec.select(&corpus, None)?;
        let planned = spec.plan(&corpus, selected)?;
        let n_batches = planned.plan.n_batches();
        let gatherer = Arc::new(Gatherer::new(corpus.clone(), spec.batch_options())?);
        let loader = Loader::new(gatherer, planned.plan, spec.loader_options());
        for batch in loader {
            served += batch?.num_rows();
        }
        println!(
            "rank {rank}: {} cells in {n_batches} batches",
            planned.n_items
        );
    }
    assert_eq!(served as u64, cohort.len());
    Ok(())
}
