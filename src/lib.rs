//! cellarrow: single-cell and spatial transcriptomics corpora on Arrow and Parquet.
//!
//! Layers, top to bottom (data flows one way):
//! [`h5ad`] reads AnnData files, [`corpus`] is the on-disk format and its zero-copy reader,
//! [`convert`] turns h5ad cohorts into a corpus, [`query`] selects cohorts with SQL,
//! [`sample`] draws cells and groups with deterministic sharding, [`loader`] gathers them
//! into Arrow batches, and `cli` (with the `cli` feature) is the command line over all of them.

#[cfg(feature = "cli")]
pub mod cli;
pub mod convert;
pub mod corpus;
pub mod error;
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
