//! The `cellarrow` command line: argument parsing and printing only; the work is in the library.
//!
//! Each subcommand lives in its own module exposing a `clap::Args` struct and a
//! `run(args) -> Result<()>` function.

use clap::{Parser, Subcommand};

use crate::error::Result;

/// Command-line entry: parses `args` and runs the subcommand.
#[derive(Debug, Parser)]
#[command(name = "cellarrow", version, about = "Single-cell and spatial transcriptomics corpora on Arrow and Parquet", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {}
}
