//! cellarrow: single-cell and spatial transcriptomics corpora on Arrow and Parquet.
//!
//! Layers, top to bottom (data flows one way):
//! [`h5ad`] reads AnnData files, [`corpus`] is the on-disk format and its zero-copy reader,
//! [`convert`] turns h5ad cohorts into a corpus, [`query`] selects cohorts with SQL,
//! [`sample`] draws cells and groups with deterministic sharding, [`loader`] gathers them
//! into Arrow batches, and `cli` (with the `cli` feature) is the command line over all of them.
//!
//! # Quick start
//!
//! Convert an h5ad file, open the corpus, and train-style iterate over the cells a SQL
//! predicate selects, as rank 0 of 2 (each rank computes only its own shard):
//!
//! ```
//! # #[cfg(feature = "sql")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use cellarrow::convert::{convert, ConvertOptions, InputSample};
//! use cellarrow::loader::{Gatherer, Loader, SamplerKind, SamplerSpec};
//! use cellarrow::Corpus;
//!
//! # let dir = tempfile::tempdir()?;
//! # let out = dir.path().join("pbmc.corpus");
//! # let h5ad = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
//! #     .join("tests/data/scanpy_pbmc68k_reduced.modern.h5ad");
//! // One input file is one sample; several files share one gene vocabulary.
//! let input = InputSample { path: h5ad, sample_id: "pbmc".into(), metadata: Default::default() };
//! convert(&[input], &ConvertOptions::new(&out))?;
//! let corpus = Arc::new(Corpus::open(&out)?);
//!
//! // The settings type is the one `cellarrow sample` and Python's `loader()` fill.
//! let mut spec = SamplerSpec {
//!     batch_size: Some(64),
//!     rank: 0,
//!     world_size: 2,
//!     where_: Some("phase = 'G1'".into()),
//!     obs: vec!["bulk_labels".into()],
//!     ..SamplerSpec::new(SamplerKind::Random, 42)
//! };
//! let cohort = spec.select(&corpus, None)?; // runs the SQL
//! let planned = spec.plan(&corpus, cohort)?; // this rank's shard of the epoch
//! let gatherer = Arc::new(Gatherer::new(corpus.clone(), spec.batch_options())?);
//! for batch in Loader::new(gatherer, planned.plan, spec.loader_options()) {
//!     let batch = batch?; // an Arrow RecordBatch: cell, indices, values, bulk_labels
//!     assert!(batch.num_rows() <= 64);
//! }
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "sql"))]
//! # fn main() {}
//! ```
//!
//! `examples/` holds runnable programs (`cargo run --example convert_and_load`), and the
//! same steps from the command line are `cellarrow convert`, `query` and `sample`.

#[cfg(feature = "cli")]
pub mod cli;
pub mod convert;
pub mod corpus;
pub mod error;
pub mod genes;
pub mod h5ad;
pub mod loader;
pub mod ontology;
#[cfg(feature = "sql")]
pub mod query;
pub mod sample;
#[cfg(feature = "remote")]
pub mod store;

pub use corpus::Corpus;
pub use error::{Error, ErrorKind, Result};
