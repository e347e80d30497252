//! Sampler + batch plan construction from Python keyword arguments.
//!
//! This mirrors `SamplerArgs::plan` and `OutputArgs::batch_options` of `src/cli/sample.rs`
//! (the same samplers, defaults and error messages) on the library types, so the Python
//! loader and `cellarrow sample` serve the same batches for the same settings. It is kept
//! here, not shared, until the loader module offers a library constructor.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use cellarrow::corpus::Corpus;
use cellarrow::error::{Error, Result};
use cellarrow::loader::{
    BatchOptions, BatchPlan, DenseGenes, Gatherer, SampledCells, SampledGroups, ValueOutput,
};
use cellarrow::sample::{
    BlockConfig, Cohort, Group, GroupConfig, LabelMode, RandomCells, RandomGroups, RegionConfig,
    Regions, SampleIndex, Sampler, Shard, ShardPolicy, ShardState, SpatialBlocks,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

/// Everything that defines the batches of one shard of one epoch.
pub struct LoaderSpec {
    pub sampler: String,
    pub batch_size: Option<usize>,
    pub drop_last: bool,
    pub seed: u64,
    pub epoch: u64,
    pub position: u64,
    pub shard: Shard,
    pub policy: ShardPolicy,
    pub group_size: usize,
    pub label: Option<String>,
    pub label_mode: String,
    pub regions: Option<PathBuf>,
    pub min_cells: usize,
    pub max_cells: Option<usize>,
    pub block_size: Option<f64>,
    pub stride: Option<f64>,
    pub values: ValueOutput,
    pub dense: Option<DenseGenes>,
    pub obs: Vec<String>,
    pub coords: bool,
}

/// A batch plan with the counts the Python side needs for state and sharding.
pub struct Planned {
    pub plan: Arc<dyn BatchPlan>,
    pub epoch_len: u64,
    pub n_items: u64,
    pub items_per_batch: u64,
    pub grouped: bool,
}

pub fn parse_policy(policy: &str) -> PyResult<ShardPolicy> {
    match policy.replace('-', "_").as_str() {
        "even" => Ok(ShardPolicy::Even),
        "drop_last" => Ok(ShardPolicy::DropLast),
        "pad" => Ok(ShardPolicy::Pad),
        _ => Err(PyValueError::new_err(format!(
            "unknown shard policy {policy:?}; expected 'even', 'drop_last' or 'pad'"
        ))),
    }
}

/// `dense=`: `"all"`, or a list of gene names, or a list of gene ids (not mixed).
pub fn dense_genes(list: Vec<Bound<'_, PyAny>>) -> PyResult<DenseGenes> {
    if list.len() == 1 {
        if let Ok(s) = list[0].extract::<String>() {
            if s == "all" {
                return Ok(DenseGenes::All);
            }
        }
    }
    if list.iter().all(|g| g.extract::<String>().is_ok()) {
        return Ok(DenseGenes::Names(
            list.iter().map(|g| g.extract::<String>()).collect::<PyResult<_>>()?,
        ));
    }
    match list.iter().map(|g| g.extract::<u32>()).collect::<PyResult<Vec<u32>>>() {
        Ok(ids) => Ok(DenseGenes::Ids(ids)),
        Err(_) => Err(PyTypeError::new_err(
            "dense: give \"all\", a list of gene names, or a list of gene ids (not mixed)",
        )),
    }
}

/// Gene ids of the dense columns, in column order (empty for CSR output).
pub fn dense_gene_ids(gatherer: &Gatherer, spec: &LoaderSpec) -> Result<Vec<u32>> {
    Ok(match &spec.dense {
        None => Vec::new(),
        Some(DenseGenes::All) => (0..gatherer.corpus().n_genes() as u32).collect(),
        Some(DenseGenes::Ids(ids)) => ids.clone(),
        Some(DenseGenes::Names(names)) => {
            let vocab = gatherer.corpus().gene_names()?;
            let mut by_name: HashMap<&str, u32> = HashMap::with_capacity(vocab.len());
            for (i, n) in vocab.iter().enumerate().rev() {
                by_name.insert(n.as_str(), i as u32);
            }
            names
                .iter()
                .map(|n| {
                    by_name.get(n.as_str()).copied().ok_or_else(|| {
                        Error::invalid_input(format!("dense: no gene named {n:?} in the corpus"))
                    })
                })
                .collect::<Result<_>>()?
        }
    })
}

fn cells_plan<S: Sampler<Item = u64> + 'static>(
    s: S,
    spec: &LoaderSpec,
    state: ShardState,
) -> Result<Planned> {
    let epoch_len = s.epoch_len(spec.epoch);
    let per_batch = spec.batch_size.unwrap_or(256).max(1);
    let plan = SampledCells::new(s, spec.shard, spec.policy, state, per_batch, spec.drop_last)?;
    Ok(Planned {
        epoch_len,
        n_items: plan.n_items(),
        items_per_batch: per_batch as u64,
        grouped: false,
        plan: Arc::new(plan),
    })
}

fn groups_plan<S: Sampler<Item = Group> + 'static>(
    s: S,
    spec: &LoaderSpec,
    state: ShardState,
) -> Result<Planned> {
    let epoch_len = s.epoch_len(spec.epoch);
    let per_batch = spec.batch_size.unwrap_or(1).max(1);
    let plan = SampledGroups::new(s, spec.shard, spec.policy, state, per_batch)?;
    Ok(Planned {
        epoch_len,
        n_items: plan.n_items(),
        items_per_batch: per_batch as u64,
        grouped: true,
        plan: Arc::new(plan),
    })
}

impl LoaderSpec {
    pub fn grouped(&self) -> bool {
        self.sampler != "random"
    }

    pub fn batch_options(&self) -> BatchOptions {
        BatchOptions {
            values: self.values,
            dense: self.dense.clone(),
            obs_columns: self.obs.clone(),
            coordinates: self.coords,
            group_column: self.grouped(),
        }
    }

    /// The plan of this shard over `cells` (every cell when `None`).
    pub fn plan(&self, corpus: &Arc<Corpus>, cells: Option<Vec<u64>>) -> Result<Planned> {
        let cohort = match cells {
            Some(c) => Cohort::from_cells_checked(c, corpus.n_cells())?,
            None => Cohort::all(corpus.n_cells()),
        };
        let state = ShardState {
            epoch: self.epoch,
            start: 0,
            position: self.position,
        };
        match self.sampler.as_str() {
            "random" | "cells" => cells_plan(RandomCells::new(cohort, self.seed), self, state),
            "groups" => {
                let label_mode = match self.label_mode.replace('-', "_").as_str() {
                    "none" => LabelMode::None,
                    "class_balanced" => LabelMode::ClassBalanced,
                    "stratified" => LabelMode::Stratified,
                    other => {
                        return Err(Error::invalid_input(format!(
                            "unknown label_mode {other:?}; expected 'none', 'class_balanced' or 'stratified'"
                        )))
                    }
                };
                if label_mode != LabelMode::None && self.label.is_none() {
                    return Err(Error::invalid_input("label_mode needs label=COLUMN"));
                }
                let index = SampleIndex::from_corpus(corpus, self.label.as_deref())?;
                let cfg = GroupConfig {
                    label_mode,
                    ..GroupConfig::new(self.group_size, self.seed)
                };
                groups_plan(RandomGroups::new(&index, cohort, cfg)?, self, state)
            }
            "regions" => {
                let index = SampleIndex::from_corpus(corpus, self.label.as_deref())?;
                let cfg = RegionConfig {
                    min_cells: self.min_cells,
                    max_cells: self.max_cells,
                    ..RegionConfig::new(self.seed)
                };
                let default_regions = corpus.table_path("regions");
                let s = match (&self.regions, &self.label) {
                    (Some(path), _) => Regions::from_manifest(&index, cohort, path, cfg)?,
                    (None, Some(_)) => Regions::from_obs_column(&index, cohort, cfg)?,
                    (None, None) if default_regions.exists() => {
                        Regions::from_manifest(&index, cohort, &default_regions, cfg)?
                    }
                    (None, None) => {
                        return Err(Error::invalid_input(
                            "the regions sampler needs regions=FILE or label=COLUMN (the corpus has no regions.parquet)",
                        ))
                    }
                };
                groups_plan(s, self, state)
            }
            "blocks" => {
                let index = SampleIndex::from_corpus(corpus, None)?;
                let size = self.block_size.ok_or_else(|| {
                    Error::invalid_input(
                        "the blocks sampler needs block_size (edge length in coordinate units)",
                    )
                })?;
                let cfg = BlockConfig {
                    stride: self.stride,
                    min_cells: self.min_cells,
                    max_cells: self.max_cells,
                    ..BlockConfig::new(size, self.seed)
                };
                groups_plan(SpatialBlocks::new(&index, cohort, cfg)?, self, state)
            }
            other => Err(Error::invalid_input(format!(
                "unknown sampler {other:?}; expected 'random', 'groups', 'regions' or 'blocks'"
            ))),
        }
    }
}
