//! Spatial neighbourhoods: convert a Visium slide, cut it into square blocks of tissue, and
//! serve one block per batch with each spot's coordinates, the block's box and the
//! coordinates normalised to it.
//!
//! ```text
//! cargo run --example spatial_blocks
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::AsArray;
use arrow::datatypes::{Float64Type, UInt64Type};
use cellarrow::convert::{convert, ConvertOptions, InputSample};
use cellarrow::loader::{Gatherer, Loader, LoaderOptions, SamplerKind, SamplerSpec};
use cellarrow::sample::Cohort;
use cellarrow::Corpus;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let input = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/squidpy_visium_mouse_brain_49spots.h5ad");
    let work = tempfile::tempdir()?;
    let out = work.path().join("visium.corpus");
    let sample = InputSample {
        path: input,
        sample_id: "brain".into(),
        metadata: Default::default(),
    };
    // Coordinates come from obsm["spatial"] (`ConvertOptions::spatial_key`).
    let opts = ConvertOptions {
        require_spatial: true,
        ..ConvertOptions::new(&out)
    };
    convert(&[sample], &opts)?;
    let corpus = Arc::new(Corpus::open(&out)?);

    // Blocks whose edge is a third of the slide's extent along x.
    let x = corpus.obs_columns(&["x"])?.remove(0);
    let x = arrow::compute::cast(&x, &arrow::datatypes::DataType::Float64)?;
    let x = x.as_primitive::<Float64Type>();
    let (lo, hi) = x
        .iter()
        .flatten()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    let size = (hi - lo) / 3.0;

    let spec = SamplerSpec {
        block_size: Some(size),
        bounds: true,
        ..SamplerSpec::new(SamplerKind::Blocks, 11)
    };
    spec.validate()?;
    let options = spec.batch_options();
    let planned = spec.plan(&corpus, Cohort::all(corpus.n_cells()))?;
    let gatherer = Arc::new(Gatherer::new(corpus.clone(), options)?);
    let loader = Loader::new(gatherer, planned.plan, LoaderOptions::default());

    println!("blocks of {size:.1} units over x in {lo:.1} ..= {hi:.1}");
    let mut spots = 0;
    for batch in loader {
        let batch = batch?;
        let block = batch["group"].as_primitive::<UInt64Type>().value(0);
        let x_min = batch["min_x"].as_primitive::<Float64Type>().value(0);
        let y_min = batch["min_y"].as_primitive::<Float64Type>().value(0);
        let x_norm = batch["x_norm"].as_primitive::<Float64Type>();
        // Inside its block, every spot's normalised coordinate lies in [0, 1].
        assert!(x_norm.iter().flatten().all(|v| (0.0..=1.0).contains(&v)));
        println!(
            "block {block:>3} at ({x_min:.1}, {y_min:.1}): {:>2} spots",
            batch.num_rows()
        );
        spots += batch.num_rows();
    }
    println!("{spots} of {} spots lie in a block", corpus.n_cells());
    Ok(())
}
