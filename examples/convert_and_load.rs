//! Convert a bundled h5ad file into a corpus in a temporary directory, open it, and stream
//! random batches of cells through a prefetching loader.
//!
//! ```text
//! cargo run --example convert_and_load [FILE.h5ad]
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use cellarrow::convert::{convert, ConvertOptions, InputSample};
use cellarrow::loader::{BatchOptions, Gatherer, Loader, LoaderOptions, SamplerKind, SamplerSpec};
use cellarrow::sample::Cohort;
use cellarrow::Corpus;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let input = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data/scanpy_10x_v3_chr21_counts.h5ad")
        });
    let work = tempfile::tempdir()?;
    let out = work.path().join("chr21.corpus");

    // One input file is one sample; several files share one gene vocabulary.
    let sample = InputSample {
        path: input,
        sample_id: "chr21".into(),
        metadata: Default::default(),
    };
    let summary = convert(&[sample], &ConvertOptions::new(&out))?;
    println!(
        "converted {} cells x {} genes, {} non-zeros ({:?} values)",
        summary.n_cells, summary.n_genes, summary.nnz, summary.value_type
    );

    let corpus = Arc::new(Corpus::open(&out)?);
    // Random cells, 128 per batch, over every cell of the corpus.
    let spec = SamplerSpec {
        batch_size: Some(128),
        ..SamplerSpec::new(SamplerKind::Random, 42)
    };
    let planned = spec.plan(&corpus, Cohort::all(corpus.n_cells()))?;
    let gatherer = Arc::new(Gatherer::new(corpus.clone(), BatchOptions::default())?);
    let loader = Loader::new(gatherer, planned.plan, LoaderOptions::default());

    let (mut batches, mut cells) = (0, 0);
    for batch in loader {
        let batch = batch?;
        batches += 1;
        cells += batch.num_rows();
    }
    println!("epoch 0: {batches} batches, {cells} cells");
    assert_eq!(cells as u64, corpus.n_cells());
    Ok(())
}
