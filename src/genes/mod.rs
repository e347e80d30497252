//! Gene identity across files and species: one place for the rules that convert, append and
//! merge share.
//!
//! - [`identity`]: a gene's stable id (Ensembl, its version split off), symbol and species;
//!   the species of an id prefix; [`match_key`], the text genes are matched by.
//! - [`source`]: reading every gene's identity from a file's var table.
//! - [`GeneIndex`]: a corpus's genes and the matching rule (by [`GeneKey`], with the other
//!   key as fallback).
//! - [`orthologs`]: an ortholog table mapping genes of other species onto a reference species.
//! - [`table`]: `genes.parquet` written from, and read into, a [`GeneIndex`].
//! - [`model`]: a model's gene vocabulary and the map from corpus gene ids to its order.

pub mod identity;
pub mod index;
pub mod model;
pub mod orthologs;
pub mod source;
pub mod table;

pub use identity::{match_key, GeneIdentity, GeneKey, UNKNOWN_SPECIES};
pub use index::{Gene, GeneIndex, Resolved, SourceGene};
pub use model::{GeneVocab, VocabMap};
pub use orthologs::{OrthologCounts, OrthologPolicy, OrthologTable};
pub use table::GeneSummary;
