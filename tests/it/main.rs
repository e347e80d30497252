//! Integration suite over the binary: bad inputs, corruption, crash safety, concurrency,
//! containment, the fuzz regressions, `cellarrow sample` against the library, the obs table
//! of one sample, `cellarrow bench --json`, append, merge, ontologies, sampling and multi-hot
//! labels over the Cell Ontology, object storage (a real S3 server) and the node-local cache
//! shared by processes. One integration binary (`cargo test --test it`).

mod append;
mod bad_inputs;
mod bench_cli;
mod cli_append;
mod cli_sample;
mod cold;
mod common;
mod concurrency;
mod containment;
mod corruption;
mod crash;
mod fuzz_regressions;
mod gene_stats;
mod genes;
mod hierarchy;
mod merge;
mod obs_table;
mod ontology;
#[cfg(feature = "remote")]
mod store;
#[cfg(feature = "remote")]
mod store_cache;
