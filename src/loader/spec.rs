//! One description of "which batches does this shard get", shared by `cellarrow sample`,
//! `cellarrow bench` and the Python loaders, so every front end builds samplers the same way.

use std::path::PathBuf;
use std::sync::Arc;

use super::{BatchPlan, SampledCells, SampledGroups};
use crate::corpus::Corpus;
use crate::error::{Error, Result};
use crate::sample::{
    BlockConfig, BlockShuffle, Cohort, Group, GroupConfig, LabelMode, RandomCells, RandomGroups,
    RegionConfig, Regions, SampleIndex, Sampler, Shard, ShardPolicy, ShardState, SpatialBlocks,
};

/// The samplers.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum SamplerKind {
    /// Random cells, a fresh permutation of the cohort per epoch.
    #[default]
    Random,
    /// Block shuffle, for cold storage: runs of `shuffle_run` consecutive cells shuffled as
    /// blocks, then mixed `shuffle_window` runs at a time; every cell once per epoch.
    Shuffle,
    /// Groups of `group_size` random cells of one sample.
    Groups,
    /// Regions from a regions manifest, an obs column, or the corpus's `regions.parquet`.
    Regions,
    /// Square (or cubic) blocks of tissue of `block_size`, spatial samples only.
    Blocks,
}

impl SamplerKind {
    /// Whether the sampler serves groups of cells (and batches carry a `group` column).
    pub fn grouped(self) -> bool {
        !matches!(self, SamplerKind::Random | SamplerKind::Shuffle)
    }

    /// Checks that this sampler's groups can fill the columns `options` asks for: group
    /// boxes come with spatial blocks and with regions (those given as boxes).
    pub fn check_options(self, options: &super::BatchOptions) -> Result<()> {
        if options.bounds && !matches!(self, SamplerKind::Blocks | SamplerKind::Regions) {
            return Err(Error::invalid_input(format!(
                "bounds need groups with a box: the blocks sampler, or regions given as boxes, not {}",
                self.name()
            )));
        }
        Ok(())
    }

    /// The name on the command line and in Python.
    pub fn name(self) -> &'static str {
        match self {
            SamplerKind::Random => "random",
            SamplerKind::Shuffle => "shuffle",
            SamplerKind::Groups => "groups",
            SamplerKind::Regions => "regions",
            SamplerKind::Blocks => "blocks",
        }
    }
}

impl std::str::FromStr for SamplerKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "random" | "cells" => Ok(SamplerKind::Random),
            "shuffle" => Ok(SamplerKind::Shuffle),
            "groups" => Ok(SamplerKind::Groups),
            "regions" => Ok(SamplerKind::Regions),
            "blocks" => Ok(SamplerKind::Blocks),
            other => Err(Error::invalid_input(format!(
                "unknown sampler {other:?}; expected random, shuffle, groups, regions or blocks"
            ))),
        }
    }
}

/// Everything that defines the batches of one shard of one epoch.
///
/// ```no_run
/// use std::sync::Arc;
/// use cellarrow::loader::{SamplerKind, SamplerSpec};
/// use cellarrow::sample::{Cohort, Shard};
/// let corpus = Arc::new(cellarrow::Corpus::open("my.corpus")?);
/// let spec = SamplerSpec { shard: Shard::new(0, 2, 0, 1)?, batch_size: Some(256), ..SamplerSpec::new(SamplerKind::Random, 7) };
/// let planned = spec.plan(&corpus, Cohort::all(corpus.n_cells()))?;
/// println!("{} batches for this rank", planned.plan.n_batches());
/// # Ok::<(), cellarrow::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerSpec {
    pub sampler: SamplerKind,
    pub seed: u64,
    pub epoch: u64,
    /// Items of this shard's stream already consumed (to resume).
    pub position: u64,
    pub shard: Shard,
    pub policy: ShardPolicy,
    /// Cells per batch (random; default 256) or groups per batch (others; default 1).
    pub batch_size: Option<usize>,
    /// Drop a last, short batch of cells.
    pub drop_last: bool,
    /// Shuffle: consecutive cells per run (default 64).
    pub shuffle_run: u64,
    /// Shuffle: runs mixed together (default 64), a shuffle buffer of `run * window` cells.
    pub shuffle_window: u64,
    /// Groups: cells per group.
    pub group_size: usize,
    /// Groups: the label column; regions: the obs column whose values are regions.
    pub label: Option<String>,
    pub label_mode: LabelMode,
    /// Regions: a regions manifest (Parquet or CSV).
    pub regions: Option<PathBuf>,
    /// Regions and blocks: leave out groups with fewer cells.
    pub min_cells: usize,
    /// Regions and blocks: downsample larger groups (seeded).
    pub max_cells: Option<usize>,
    /// Blocks: edge length in coordinate units.
    pub block_size: Option<f64>,
    /// Blocks: distance between neighbouring blocks (default: the size, a tiling).
    pub stride: Option<f64>,
    /// Blocks: only these `(sample_id, block_id)` (e.g. chosen in SQL with `blocks(size)`).
    pub only_blocks: Option<Vec<(String, u64)>>,
    /// Regions: only these `(sample_id, region_id)`.
    pub only_regions: Option<Vec<(String, String)>>,
}

/// A shard's batch plan and the counts a front end needs for progress and state.
pub struct Planned {
    pub plan: Arc<dyn BatchPlan>,
    /// Items (cells or groups) in the whole epoch.
    pub epoch_len: u64,
    /// Items in this shard.
    pub n_items: u64,
    pub items_per_batch: u64,
    /// Batches hold groups (and a `group` column).
    pub grouped: bool,
}

impl SamplerSpec {
    /// Defaults: the first shard of one, epoch 0, even shards, groups of 64, blocks need a size.
    pub fn new(sampler: SamplerKind, seed: u64) -> SamplerSpec {
        SamplerSpec {
            sampler,
            seed,
            epoch: 0,
            position: 0,
            shard: Shard::single(),
            policy: ShardPolicy::Even,
            batch_size: None,
            drop_last: false,
            shuffle_run: 64,
            shuffle_window: 64,
            group_size: 64,
            label: None,
            label_mode: LabelMode::None,
            regions: None,
            min_cells: 1,
            max_cells: None,
            block_size: None,
            stride: None,
            only_blocks: None,
            only_regions: None,
        }
    }

    /// Whether batches hold groups.
    pub fn grouped(&self) -> bool {
        self.sampler.grouped()
    }

    /// The plan of this shard over `cohort`.
    pub fn plan(&self, corpus: &Arc<Corpus>, cohort: Cohort) -> Result<Planned> {
        let state = ShardState {
            epoch: self.epoch,
            start: 0,
            position: self.position,
        };
        match self.sampler {
            SamplerKind::Random => self.cells_plan(RandomCells::new(cohort, self.seed), state),
            SamplerKind::Shuffle => {
                let s =
                    BlockShuffle::new(cohort, self.shuffle_run, self.shuffle_window, self.seed)?;
                self.cells_plan(s, state)
            }
            SamplerKind::Groups => {
                if self.label_mode != LabelMode::None && self.label.is_none() {
                    return Err(Error::invalid_input("a label mode needs a label column"));
                }
                // Groups draw from cell ranges: coordinates are not needed, and labels only
                // for a label mode.
                let label = match self.label_mode {
                    LabelMode::None => None,
                    _ => self.label.as_deref(),
                };
                let index = SampleIndex::from_corpus(corpus, label, false)?;
                let cfg = GroupConfig {
                    label_mode: self.label_mode,
                    ..GroupConfig::new(self.group_size, self.seed)
                };
                self.groups_plan(RandomGroups::new(&index, cohort, cfg)?, state)
            }
            SamplerKind::Regions => {
                let index = SampleIndex::from_corpus(corpus, self.label.as_deref(), true)?;
                let mut cfg = RegionConfig {
                    min_cells: self.min_cells,
                    max_cells: self.max_cells,
                    ..RegionConfig::new(self.seed)
                };
                if let Some(only) = &self.only_regions {
                    cfg = cfg.only(only.iter().cloned());
                }
                let default_regions = corpus.table_path("regions");
                let s = match (&self.regions, &self.label) {
                    (Some(path), _) => Regions::from_manifest(&index, cohort, path, cfg)?,
                    (None, Some(_)) => Regions::from_obs_column(&index, cohort, cfg)?,
                    (None, None) if default_regions.exists() => Regions::from_manifest(&index, cohort, &default_regions, cfg)?,
                    (None, None) => {
                        return Err(Error::invalid_input(
                            "the regions sampler needs a regions manifest or a label column (the corpus has no regions.parquet)",
                        ))
                    }
                };
                self.groups_plan(s, state)
            }
            SamplerKind::Blocks => {
                let size = self.block_size.ok_or_else(|| {
                    Error::invalid_input(
                        "the blocks sampler needs a block size (edge length in coordinate units)",
                    )
                })?;
                let index = SampleIndex::from_corpus(corpus, None, true)?;
                let mut cfg = BlockConfig {
                    stride: self.stride,
                    min_cells: self.min_cells,
                    max_cells: self.max_cells,
                    ..BlockConfig::new(size, self.seed)
                };
                if let Some(only) = &self.only_blocks {
                    cfg = cfg.only(only.iter().cloned());
                }
                self.groups_plan(SpatialBlocks::new(&index, cohort, cfg)?, state)
            }
        }
    }

    fn cells_plan<S: Sampler<Item = u64> + 'static>(
        &self,
        s: S,
        state: ShardState,
    ) -> Result<Planned> {
        let epoch_len = s.epoch_len(self.epoch);
        let per_batch = self.batch_size.unwrap_or(256).max(1);
        let plan = SampledCells::new(s, self.shard, self.policy, state, per_batch, self.drop_last)?;
        Ok(Planned {
            epoch_len,
            n_items: plan.n_items(),
            items_per_batch: per_batch as u64,
            grouped: false,
            plan: Arc::new(plan),
        })
    }

    fn groups_plan<S: Sampler<Item = Group> + 'static>(
        &self,
        s: S,
        state: ShardState,
    ) -> Result<Planned> {
        let epoch_len = s.epoch_len(self.epoch);
        let per_batch = self.batch_size.unwrap_or(1).max(1);
        let plan = SampledGroups::new(s, self.shard, self.policy, state, per_batch)?;
        Ok(Planned {
            epoch_len,
            n_items: plan.n_items(),
            items_per_batch: per_batch as u64,
            grouped: true,
            plan: Arc::new(plan),
        })
    }
}
