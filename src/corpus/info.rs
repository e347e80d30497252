//! A human-sized description of a corpus, for `cellarrow inspect`.

use serde::Serialize;

use super::{Corpus, IndexType, ValueType};
use crate::error::{Error, Result};

/// One obs column and its Arrow type.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnInfo {
    pub name: String,
    pub data_type: String,
}

/// One sample's counts.
#[derive(Debug, Clone, Serialize)]
pub struct SampleInfo {
    pub sample_id: String,
    pub n_cells: u64,
    pub nnz: u64,
    pub spatial_dims: u8,
}

/// What `cellarrow inspect` prints.
#[derive(Debug, Clone, Serialize)]
pub struct CorpusInfo {
    pub path: String,
    pub format_version: u32,
    pub created_by: String,
    pub n_cells: u64,
    pub n_genes: u64,
    pub nnz: u64,
    pub index_type: IndexType,
    pub value_type: ValueType,
    pub n_parts: usize,
    pub samples: Vec<SampleInfo>,
    pub spatial_samples: usize,
    pub obs_columns: Vec<ColumnInfo>,
    /// Every file of the corpus, manifest included.
    pub disk_bytes: u64,
    pub bytes_per_nnz: f64,
    pub matrix_bytes: u64,
}

/// Describes an open corpus. Reads only the manifest and the obs table's schema.
pub fn describe(corpus: &Corpus) -> Result<CorpusInfo> {
    let m = corpus.manifest();
    let schema = corpus.table_schema("obs")?;
    let manifest_bytes = std::fs::metadata(corpus.root().join(super::MANIFEST_FILE))
        .map_err(|e| Error::io(corpus.root(), "reading the manifest size", e))?
        .len();
    let disk_bytes = manifest_bytes + m.files.iter().map(|f| f.bytes).sum::<u64>();
    let matrix_bytes = m
        .files
        .iter()
        .filter(|f| f.path.starts_with("matrix/"))
        .map(|f| f.bytes)
        .sum();
    Ok(CorpusInfo {
        path: corpus.root().display().to_string(),
        format_version: m.format_version,
        created_by: m.created_by.clone(),
        n_cells: m.n_cells,
        n_genes: m.n_genes,
        nnz: m.nnz,
        index_type: m.index_type,
        value_type: m.value_type,
        n_parts: m.matrix.parts.len(),
        samples: m
            .samples
            .iter()
            .map(|s| SampleInfo {
                sample_id: s.sample_id.clone(),
                n_cells: s.n_cells,
                nnz: s.nnz,
                spatial_dims: s.spatial_dims,
            })
            .collect(),
        spatial_samples: m.samples.iter().filter(|s| s.spatial_dims > 0).count(),
        obs_columns: schema
            .fields()
            .iter()
            .map(|f| ColumnInfo {
                name: f.name().clone(),
                data_type: f.data_type().to_string(),
            })
            .collect(),
        disk_bytes,
        bytes_per_nnz: disk_bytes as f64 / m.nnz.max(1) as f64,
        matrix_bytes,
    })
}

impl std::fmt::Display for CorpusInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "corpus      {}", self.path)?;
        writeln!(
            f,
            "format      cellarrow {} ({})",
            self.format_version, self.created_by
        )?;
        writeln!(f, "cells       {}", self.n_cells)?;
        writeln!(f, "genes       {}", self.n_genes)?;
        writeln!(
            f,
            "non-zeros   {} ({:.1}% dense)",
            self.nnz,
            100.0 * self.nnz as f64 / (self.n_cells as f64 * self.n_genes as f64).max(1.0)
        )?;
        writeln!(
            f,
            "types       gene ids {:?}, values {:?}",
            self.index_type, self.value_type
        )?;
        writeln!(
            f,
            "disk        {:.2} MB ({} matrix parts, {:.2} MB), {:.2} bytes per non-zero",
            self.disk_bytes as f64 / 1e6,
            self.n_parts,
            self.matrix_bytes as f64 / 1e6,
            self.bytes_per_nnz
        )?;
        writeln!(
            f,
            "samples     {} ({} spatial)",
            self.samples.len(),
            self.spatial_samples
        )?;
        let width = self
            .samples
            .iter()
            .map(|s| s.sample_id.len())
            .max()
            .unwrap_or(0)
            .max(9);
        for s in &self.samples {
            let spatial = if s.spatial_dims > 0 {
                format!("  {}-D coordinates", s.spatial_dims)
            } else {
                String::new()
            };
            writeln!(
                f,
                "  {:<width$}  {:>10} cells  {:>12} non-zeros{spatial}",
                s.sample_id, s.n_cells, s.nnz
            )?;
        }
        writeln!(f, "obs columns {}", self.obs_columns.len())?;
        let width = self
            .obs_columns
            .iter()
            .map(|c| c.name.len())
            .max()
            .unwrap_or(0);
        for c in &self.obs_columns {
            writeln!(f, "  {:<width$}  {}", c.name, c.data_type)?;
        }
        Ok(())
    }
}
