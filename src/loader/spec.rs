//! The settings of a loader, parsed and checked once: which batches a shard gets (sampler,
//! shard, cohort and selection), what a batch holds and how the loader runs. `cellarrow
//! sample`, `cellarrow bench` and the Python loaders only translate their names into a
//! [`SamplerSpec`]; its defaults are the constants of [`defaults`], its checks are
//! [`SamplerSpec::validate`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::hierarchy::{self, Balance, MultiHotOptions, MultiHotTerms, TermList};
use super::{BatchOptions, BatchPlan, DenseGenes, IndexOutput, LoaderOptions, SampledCells};
use super::{SampledGroups, TokenMode, TokenOptions, ValueOutput};
use crate::corpus::Corpus;
use crate::error::{Error, Result};
use crate::genes::GeneVocab;
use crate::sample::{
    BlockConfig, BlockShuffle, Cohort, Group, GroupConfig, LabelMode, RandomCells, RandomGroups,
    RegionConfig, Regions, SampleIndex, Sampler, Shard, ShardPolicy, ShardState, SpatialBlocks,
};

/// The default of every setting, in one place; the command line and Python take theirs from
/// here.
pub mod defaults {
    use super::{IndexOutput, LabelMode, SamplerKind, ShardPolicy, ValueOutput};

    pub const SAMPLER: SamplerKind = SamplerKind::Random;
    pub const SEED: u64 = 0;
    pub const EPOCH: u64 = 0;
    /// Cells per batch of the cell samplers (random, shuffle).
    pub const BATCH_CELLS: usize = 256;
    /// Groups per batch of the group samplers (groups, regions, blocks).
    pub const BATCH_GROUPS: usize = 1;
    pub const RANK: u32 = 0;
    pub const WORLD_SIZE: u32 = 1;
    pub const WORKER: u32 = 0;
    pub const NUM_WORKERS: u32 = 1;
    pub const POLICY: ShardPolicy = ShardPolicy::Even;
    /// Runs of 64 cells: long enough that a cold read is one request per run, short enough
    /// that a batch of 256 mixes four places of the corpus.
    pub const SHUFFLE_RUN: u64 = 64;
    pub const SHUFFLE_WINDOW: u64 = 64;
    /// 32 cells: the group size the command line and Python have always used; a batch of 8
    /// groups is the 256 cells of a random batch.
    pub const GROUP_SIZE: usize = 32;
    pub const LABEL_MODE: LabelMode = LabelMode::None;
    pub const MIN_CELLS: usize = 1;
    pub const VALUES: ValueOutput = ValueOutput::Native;
    /// As stored (u16 or u32): lossless and the fewest bytes; ask for `i32` where a consumer
    /// (scipy, torch) needs it, and the gather widens while copying.
    pub const INDICES: IndexOutput = IndexOutput::Native;
    /// Two gathering threads keep one consumer fed on every corpus measured (`cellarrow bench`).
    pub const THREADS: usize = 2;
    /// Batches gathered ahead: enough to hide an uneven batch, bounded memory.
    pub const PREFETCH: usize = 8;
    /// Batches read ahead from object storage (lazily read corpora).
    pub const READ_AHEAD: usize = 32;
    /// Tokens per cell: Geneformer's input size.
    pub const TOP_K: usize = 2048;
    /// Value bins, bin 0 included: scGPT's default.
    pub const N_BINS: usize = 51;

    /// The settings a front end changes from the defaults above, because its consumers expect
    /// other types: Python's loaders hand indices to scipy and torch, which index with int32
    /// (the gather widens while copying, so they take the buffer as is); the PyTorch dataset
    /// also hands values to torch, which computes in floats; a Hugging Face iterable dataset
    /// runs one loader in each of `datasets`' worker processes, so one gathering thread each.
    /// `None` for a name that is not a front end (`python`, `torch`, `hf`).
    pub fn front_end(name: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
        let python = serde_json::json!({ "indices": IndexOutput::Int32 });
        let extra = match name {
            "python" => serde_json::json!({}),
            "torch" => serde_json::json!({ "values": ValueOutput::Float32 }),
            "hf" => serde_json::json!({ "threads": 1 }),
            _ => return None,
        };
        let (serde_json::Value::Object(mut m), serde_json::Value::Object(extra)) = (python, extra)
        else {
            unreachable!("json! objects")
        };
        m.extend(extra);
        Some(m)
    }
}

/// The samplers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum SamplerKind {
    /// Random cells, a fresh permutation of the cohort per epoch.
    #[default]
    Random,
    /// Block shuffle, for cold storage: runs of `shuffle_run` consecutive cells shuffled as
    /// blocks, then mixed `shuffle_window` runs at a time; every cell once per epoch.
    Shuffle,
    /// Groups of `group_size` random cells of one sample.
    Groups,
    /// Regions from a regions manifest or an obs column.
    Regions,
    /// Square (or cubic) blocks of tissue of `block_size`, spatial samples only.
    Blocks,
}

impl SamplerKind {
    /// Whether the sampler serves groups of cells (and batches carry a `group` column).
    pub fn grouped(self) -> bool {
        !matches!(self, SamplerKind::Random | SamplerKind::Shuffle)
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

/// Text forms of the settings' enums: `FromStr`, `Display` and serde as that text.
macro_rules! text_enum {
    ($ty:ty, $what:literal, $expected:literal, [$($name:literal $(| $alias:literal)* => $v:expr),+ $(,)?]) => {
        impl std::str::FromStr for $ty {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                match s.to_ascii_lowercase().replace('-', "_").as_str() {
                    $($name $(| $alias)* => Ok($v),)+
                    _ => Err(Error::invalid_input(format!(
                        concat!("unknown ", $what, " {:?}; expected ", $expected), s
                    ))),
                }
            }
        }
        impl $ty {
            /// The text of this value (what `FromStr` and serde read).
            pub fn as_str(self) -> &'static str {
                $(if self == $v { return $name; })+
                unreachable!("every value has a name")
            }
        }
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
    (serde $ty:ty) => {
        impl Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(|e: Error| serde::de::Error::custom(e.message().to_string()))
            }
        }
    };
}

text_enum!(SamplerKind, "sampler", "random, shuffle, groups, regions or blocks", [
    "random" | "cells" => SamplerKind::Random,
    "shuffle" => SamplerKind::Shuffle,
    "groups" => SamplerKind::Groups,
    "regions" => SamplerKind::Regions,
    "blocks" => SamplerKind::Blocks,
]);
text_enum!(serde SamplerKind);
text_enum!(serde ValueOutput);
text_enum!(serde IndexOutput);
// ShardPolicy and LabelMode carry serde's snake_case names, the same text.
text_enum!(ShardPolicy, "shard policy", "even, drop_last or pad", [
    "even" => ShardPolicy::Even,
    "drop_last" => ShardPolicy::DropLast,
    "pad" => ShardPolicy::Pad,
]);
text_enum!(LabelMode, "label_mode", "none, class_balanced or stratified", [
    "none" => LabelMode::None,
    "class_balanced" => LabelMode::ClassBalanced,
    "stratified" => LabelMode::Stratified,
]);
text_enum!(ValueOutput, "value type", "native, f32 or f64", [
    "native" | "stored" => ValueOutput::Native,
    "f32" | "float32" => ValueOutput::Float32,
    "f64" | "float64" => ValueOutput::Float64,
]);
text_enum!(IndexOutput, "index type", "native or i32", [
    "native" | "stored" => IndexOutput::Native,
    "i32" | "int32" => IndexOutput::Int32,
]);

/// Every setting of a loader: which batches one shard of one epoch gets, what a batch holds,
/// and how the loader runs. Field names are the Python keywords (and, with dashes, the
/// command-line flags); serde reads and writes them by those names.
///
/// Build one with [`SamplerSpec::new`] (or `Default`) and struct update syntax, or from
/// name/value pairs with [`SamplerSpec::from_json`]; [`SamplerSpec::validate`] checks it.
///
/// ```no_run
/// use std::sync::Arc;
/// use cellarrow::loader::{SamplerKind, SamplerSpec};
/// let corpus = Arc::new(cellarrow::Corpus::open("my.corpus")?);
/// let mut spec = SamplerSpec { rank: 0, world_size: 2, batch_size: Some(256), ..SamplerSpec::new(SamplerKind::Random, 7) };
/// let cohort = spec.select(&corpus, None)?;
/// let planned = spec.plan(&corpus, cohort)?;
/// println!("{} batches for this rank", planned.plan.n_batches());
/// # Ok::<(), cellarrow::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplerSpec {
    pub sampler: SamplerKind,
    /// Cells per batch (random, shuffle; default [`defaults::BATCH_CELLS`]) or groups per
    /// batch (others; default [`defaults::BATCH_GROUPS`]).
    pub batch_size: Option<usize>,
    /// Drop a last, short batch of cells.
    pub drop_last: bool,
    pub seed: u64,
    pub epoch: u64,
    /// Items of this shard's stream already consumed (to resume).
    pub position: u64,
    /// The shard: rank in `0..world_size`, worker in `0..num_workers`.
    pub rank: u32,
    pub world_size: u32,
    pub worker: u32,
    pub num_workers: u32,
    pub policy: ShardPolicy,
    /// Shuffle: consecutive cells per run.
    pub shuffle_run: u64,
    /// Shuffle: runs mixed together, a shuffle buffer of `run * window` cells.
    pub shuffle_window: u64,
    /// Groups: cells per group.
    pub group_size: usize,
    /// Groups: the label column (for `label_mode`); regions: the obs column whose values are
    /// regions (also what `regions_sql` selects from).
    pub label: Option<String>,
    pub label_mode: LabelMode,
    /// Random: balance the classes of this obs label column. Each class gets the same share
    /// of an epoch's draws (a cell weighs `1 / cells of its class`), drawn with replacement;
    /// an epoch is as many draws as cells with a class. With `ontology` the values are term
    /// ids, labels or exact synonyms and the classes are terms; see [`hierarchy`].
    pub balance: Option<String>,
    /// Balance: each label cut to its ancestor at this depth of the ontology (0: the roots); a
    /// label above it is its own class.
    pub level: Option<u32>,
    /// Balance: each label cut to the most specific of these terms it lies under (a file of
    /// one term per line, or a list); cells under none are left out.
    pub balance_terms: Option<TermList>,
    /// The ontology of the `balance` and `multi_hot` labels: an OBO or ontology JSON file, or
    /// a name (`CL`) looked up in the directory of `$CELLARROW_ONTOLOGY_DIR`.
    pub ontology: Option<String>,
    /// Regions: a regions manifest (Parquet, or CSV by extension).
    pub regions: Option<PathBuf>,
    /// Regions and blocks: leave out groups with fewer cells.
    pub min_cells: usize,
    /// Regions and blocks: downsample larger groups (seeded).
    pub max_cells: Option<usize>,
    /// Blocks: edge length in coordinate units.
    pub block_size: Option<f64>,
    /// Blocks: distance between neighbouring blocks (default: the size, a tiling).
    pub stride: Option<f64>,
    /// Only cells whose obs row satisfies this SQL predicate.
    #[serde(rename = "where")]
    pub where_: Option<String>,
    /// Only the cells of this cohort file (written by `cellarrow query --cohort`).
    pub cohort: Option<PathBuf>,
    /// Blocks: only the `(sample_id, block_id)` pairs this query returns (over
    /// `blocks(block_size)`).
    pub blocks_sql: Option<String>,
    /// Regions: only the `(sample_id, region_id)` pairs this query returns (over `regions`).
    pub regions_sql: Option<String>,
    /// Value type of the output.
    pub values: ValueOutput,
    /// Gene id type of CSR output.
    pub indices: IndexOutput,
    /// Dense output over these genes instead of CSR.
    pub dense: Option<DenseGenes>,
    /// A model's gene vocabulary (a list of ids or symbols, or a file of them): CSR batches in
    /// its order and id space, or with `tokens` token ids that are positions in it; corpus genes
    /// outside it are left out.
    pub genes: Option<GeneVocab>,
    /// obs columns to add to each batch.
    pub obs: Vec<String>,
    /// Add the coordinate columns.
    pub coords: bool,
    /// Add each cell's group box and its coordinates normalised to it (implies `coords`).
    pub bounds: bool,
    /// Add the `multi_hot` column: each cell's label in this obs column and its ancestors, as
    /// one byte per term of a set (needs `ontology`); see [`hierarchy`].
    pub multi_hot: Option<String>,
    /// Multi-hot: the terms of depth `<= multi_hot_level` among those the corpus's labels
    /// reach (default: all of those).
    pub multi_hot_level: Option<u32>,
    /// Multi-hot: these terms, in this order (a file of one term per line, or a list).
    pub multi_hot_terms: Option<TermList>,
    /// Tokenized output instead of CSR rows: `rank` (rank-value encoding) or `bins` (value
    /// binning); see [`crate::loader::tokens`].
    pub tokens: Option<TokenMode>,
    /// Tokens: tokens per cell (the row width).
    pub top_k: usize,
    /// Tokens `bins`: number of bins, 0 included (values get 1 ..= n_bins - 1).
    pub n_bins: usize,
    /// Tokens `rank`: a table of gene medians (columns gene, median) instead of the corpus's
    /// `gene_stats` table.
    pub gene_medians: Option<PathBuf>,
    /// Loader threads (0: gather on the consumer's thread).
    pub threads: usize,
    /// Batches gathered ahead.
    pub prefetch: usize,
    /// Batches whose chunks are fetched ahead from object storage, for a corpus read lazily
    /// from a URL (cold parts): so many batches' requests are in flight at once.
    pub read_ahead: usize,
    /// Blocks: only these `(sample_id, block_id)`; set by [`SamplerSpec::select`] from
    /// `blocks_sql`, or directly.
    #[serde(skip)]
    pub only_blocks: Option<Vec<(String, u64)>>,
    /// Regions: only these `(sample_id, region_id)`; set by [`SamplerSpec::select`] from
    /// `regions_sql`, or directly.
    #[serde(skip)]
    pub only_regions: Option<Vec<(String, String)>>,
}

impl Default for SamplerSpec {
    fn default() -> Self {
        use defaults as d;
        SamplerSpec {
            sampler: d::SAMPLER,
            batch_size: None,
            drop_last: false,
            seed: d::SEED,
            epoch: d::EPOCH,
            position: 0,
            rank: d::RANK,
            world_size: d::WORLD_SIZE,
            worker: d::WORKER,
            num_workers: d::NUM_WORKERS,
            policy: d::POLICY,
            shuffle_run: d::SHUFFLE_RUN,
            shuffle_window: d::SHUFFLE_WINDOW,
            group_size: d::GROUP_SIZE,
            label: None,
            label_mode: d::LABEL_MODE,
            balance: None,
            level: None,
            balance_terms: None,
            ontology: None,
            regions: None,
            min_cells: d::MIN_CELLS,
            max_cells: None,
            block_size: None,
            stride: None,
            where_: None,
            cohort: None,
            blocks_sql: None,
            regions_sql: None,
            values: d::VALUES,
            indices: d::INDICES,
            dense: None,
            genes: None,
            obs: Vec::new(),
            coords: false,
            bounds: false,
            multi_hot: None,
            multi_hot_level: None,
            multi_hot_terms: None,
            tokens: None,
            top_k: d::TOP_K,
            n_bins: d::N_BINS,
            gene_medians: None,
            threads: d::THREADS,
            prefetch: d::PREFETCH,
            read_ahead: d::READ_AHEAD,
            only_blocks: None,
            only_regions: None,
        }
    }
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
    /// With `balance`: the classes the sampler draws over (report them once per loader).
    pub balance: Option<Arc<Balance>>,
}

fn at_least<T: PartialOrd + std::fmt::Display>(name: &str, value: T, min: T) -> Result<()> {
    if value < min {
        return Err(Error::invalid_input(format!(
            "{name} must be at least {min}, got {value}"
        )));
    }
    Ok(())
}

fn positive(name: &str, value: Option<f64>) -> Result<()> {
    match value {
        Some(v) if !(v.is_finite() && v > 0.0) => Err(Error::invalid_input(format!(
            "{name} must be a positive number, got {v}"
        ))),
        _ => Ok(()),
    }
}

impl SamplerSpec {
    /// The defaults with `sampler` and `seed`.
    pub fn new(sampler: SamplerKind, seed: u64) -> SamplerSpec {
        SamplerSpec {
            sampler,
            seed,
            ..SamplerSpec::default()
        }
    }

    /// The names of every setting (the Python keywords), in declaration order.
    pub fn names() -> Vec<String> {
        match serde_json::to_value(SamplerSpec::default()) {
            Ok(serde_json::Value::Object(m)) => m.keys().cloned().collect(),
            _ => unreachable!("the settings serialise to an object"),
        }
    }

    /// The settings as a JSON object of every name and its value.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("the settings serialise")
    }

    /// Settings from name/value pairs (the defaults for the others), checked with
    /// [`validate`](Self::validate). Errors name the setting: an unknown name (listing the
    /// valid ones), a negative number, a value of the wrong type.
    pub fn from_json(pairs: serde_json::Map<String, serde_json::Value>) -> Result<SamplerSpec> {
        let names = Self::names();
        for (name, value) in &pairs {
            if !names.contains(name) {
                return Err(Error::invalid_input(format!(
                    "unknown setting {name:?}; the settings are: {}",
                    names.join(", ")
                )));
            }
            if let Some(v) = value.as_i64().filter(|v| *v < 0) {
                return Err(Error::invalid_input(format!(
                    "{name} must not be negative, got {v}"
                )));
            }
        }
        let spec: SamplerSpec = serde_json::from_value(serde_json::Value::Object(pairs.clone()))
            .map_err(|e| {
                // Name the setting: find the pair that fails on its own.
                let culprit = pairs.iter().find_map(|(k, v)| {
                    let mut one = serde_json::Map::new();
                    one.insert(k.clone(), v.clone());
                    serde_json::from_value::<SamplerSpec>(serde_json::Value::Object(one))
                        .err()
                        .map(|e| format!("{k}: {e} (got {v})"))
                });
                Error::invalid_input(culprit.unwrap_or_else(|| e.to_string()))
            })?;
        spec.validate()?;
        Ok(spec)
    }

    /// Checks the settings together; errors name the setting. Every check of a setting is
    /// here (the shard's own in [`Shard::validate`]).
    pub fn validate(&self) -> Result<()> {
        self.shard()?;
        if let Some(b) = self.batch_size {
            at_least("batch_size", b, 1)?;
        }
        at_least("shuffle_run", self.shuffle_run, 1)?;
        at_least("shuffle_window", self.shuffle_window, 1)?;
        at_least("group_size", self.group_size, 1)?;
        if let Some(m) = self.max_cells {
            at_least("max_cells", m, 1)?;
        }
        at_least("prefetch", self.prefetch, 1)?;
        self.validate_tokens()?;
        self.validate_hierarchy()?;
        positive("block_size", self.block_size)?;
        positive("stride", self.stride)?;
        if self.genes.is_some() && self.dense.is_some() {
            return Err(Error::invalid_input(
                "genes (a model vocabulary) sets the gene space of CSR batches; it does not combine with dense",
            ));
        }
        if let Some(GeneVocab::List(list)) = &self.genes {
            crate::genes::model::check_unique(list, None)?;
        }
        let kind = self.sampler;
        if kind == SamplerKind::Blocks && self.block_size.is_none() {
            return Err(Error::invalid_input(
                "the blocks sampler needs block_size (edge length in coordinate units)",
            ));
        }
        if self.label_mode != LabelMode::None && self.label.is_none() {
            return Err(Error::invalid_input(
                "label_mode needs label (the obs column of labels)",
            ));
        }
        if self.bounds && !matches!(kind, SamplerKind::Blocks | SamplerKind::Regions) {
            return Err(Error::invalid_input(format!(
                "bounds need groups with a box: the blocks sampler, or regions given as boxes, not {}",
                kind.name()
            )));
        }
        let only_for = |name: &str, given: bool, samplers: &[SamplerKind]| {
            if given && !samplers.contains(&kind) {
                let names: Vec<&str> = samplers.iter().map(|s| s.name()).collect();
                return Err(Error::invalid_input(format!(
                    "{name} is a setting of the {} sampler, not of {}",
                    names.join(" and "),
                    kind.name()
                )));
            }
            Ok(())
        };
        only_for(
            "blocks_sql",
            self.blocks_sql.is_some(),
            &[SamplerKind::Blocks],
        )?;
        only_for(
            "regions_sql",
            self.regions_sql.is_some(),
            &[SamplerKind::Regions],
        )?;
        if self.regions_sql.is_some() && self.regions.is_some() {
            return Err(Error::invalid_input(
                "regions_sql selects from the corpus's regions (or the label column), not from a regions file; filter the file instead",
            ));
        }
        #[cfg(not(feature = "sql"))]
        for (name, given) in [
            ("where", self.where_.is_some()),
            ("blocks_sql", self.blocks_sql.is_some()),
            ("regions_sql", self.regions_sql.is_some()),
        ] {
            if given {
                return Err(Error::invalid_input(format!(
                    "{name} needs SQL: this build of cellarrow has no `sql` feature"
                )));
            }
        }
        Ok(())
    }

    /// The checks of the label settings (`balance`, `multi_hot` and what refines them).
    fn validate_hierarchy(&self) -> Result<()> {
        let needs = |name: &str, given: bool, of: &str, present: bool| {
            if given && !present {
                return Err(Error::invalid_input(format!(
                    "{name} is a setting of {of}: give {of} too"
                )));
            }
            Ok(())
        };
        needs(
            "level",
            self.level.is_some(),
            "balance",
            self.balance.is_some(),
        )?;
        needs(
            "balance_terms",
            self.balance_terms.is_some(),
            "balance",
            self.balance.is_some(),
        )?;
        needs(
            "multi_hot_level",
            self.multi_hot_level.is_some(),
            "multi_hot",
            self.multi_hot.is_some(),
        )?;
        needs(
            "multi_hot_terms",
            self.multi_hot_terms.is_some(),
            "multi_hot",
            self.multi_hot.is_some(),
        )?;
        if self.level.is_some() && self.balance_terms.is_some() {
            return Err(Error::invalid_input(
                "level and balance_terms are two ways to cut labels; give one",
            ));
        }
        if self.multi_hot_level.is_some() && self.multi_hot_terms.is_some() {
            return Err(Error::invalid_input(
                "multi_hot_level and multi_hot_terms are two ways to choose the terms; give one",
            ));
        }
        for (name, given) in [
            ("level", self.level.is_some()),
            ("balance_terms", self.balance_terms.is_some()),
            ("multi_hot", self.multi_hot.is_some()),
        ] {
            if given && self.ontology.is_none() {
                return Err(Error::invalid_input(format!(
                    "{name} needs ontology (an OBO or ontology JSON file, or a name such as CL)"
                )));
            }
        }
        if self.ontology.is_some() && self.balance.is_none() && self.multi_hot.is_none() {
            return Err(Error::invalid_input(
                "ontology is read for balance and multi_hot labels; give one of them",
            ));
        }
        if self.balance.is_some() && self.sampler != SamplerKind::Random {
            return Err(Error::invalid_input(format!(
                "balance is a setting of the random sampler, not of {} (the groups sampler \
                 balances groups with label and label_mode)",
                self.sampler.name()
            )));
        }
        for (name, list) in [
            ("balance_terms", &self.balance_terms),
            ("multi_hot_terms", &self.multi_hot_terms),
        ] {
            if let Some(TermList::List(l)) = list {
                if l.is_empty() {
                    return Err(Error::invalid_input(format!("{name} is an empty list")));
                }
            }
        }
        Ok(())
    }

    /// The ontology of the label settings, loaded once per process.
    fn load_ontology(&self) -> Result<Option<Arc<crate::ontology::Ontology>>> {
        self.ontology
            .as_deref()
            .map(crate::ontology::shared)
            .transpose()
    }

    /// The checks of the token settings.
    fn validate_tokens(&self) -> Result<()> {
        at_least("top_k", self.top_k, 1)?;
        at_least("n_bins", self.n_bins, 2)?;
        if self.tokens.is_some() && self.dense.is_some() {
            return Err(Error::invalid_input(
                "tokens and dense are two kinds of output; ask for one",
            ));
        }
        if self.gene_medians.is_some() && self.tokens != Some(TokenMode::Rank) {
            return Err(Error::invalid_input(
                "gene_medians is a setting of tokens=\"rank\"",
            ));
        }
        Ok(())
    }

    /// The token output of these settings, if any.
    pub fn token_options(&self) -> Option<TokenOptions> {
        self.tokens.map(|mode| TokenOptions {
            mode,
            top_k: self.top_k,
            n_bins: self.n_bins,
            gene_medians: self.gene_medians.clone(),
        })
    }

    /// The shard of this process.
    pub fn shard(&self) -> Result<Shard> {
        Shard::new(self.rank, self.world_size, self.worker, self.num_workers)
    }

    /// Whether batches hold groups.
    pub fn grouped(&self) -> bool {
        self.sampler.grouped()
    }

    /// Items (cells or groups) per batch: `batch_size`, or the sampler's default.
    pub fn items_per_batch(&self) -> usize {
        self.batch_size.unwrap_or(if self.grouped() {
            defaults::BATCH_GROUPS
        } else {
            defaults::BATCH_CELLS
        })
    }

    /// What a batch holds (grouped samplers add the `group` column).
    pub fn batch_options(&self) -> BatchOptions {
        BatchOptions {
            values: self.values,
            indices: self.indices,
            dense: self.dense.clone(),
            genes: self.genes.clone(),
            obs_columns: self.obs.clone(),
            coordinates: self.coords,
            group_column: self.grouped(),
            bounds: self.bounds,
            tokens: self.token_options(),
            multi_hot: self.multi_hot.as_ref().map(|column| MultiHotOptions {
                column: column.clone(),
                ontology: self.ontology.clone().unwrap_or_default(),
                terms: match (&self.multi_hot_level, &self.multi_hot_terms) {
                    (Some(level), _) => MultiHotTerms::Level(*level),
                    (None, Some(list)) => MultiHotTerms::List(list.clone()),
                    (None, None) => MultiHotTerms::Reached,
                },
            }),
        }
    }

    /// How the loader runs.
    pub fn loader_options(&self) -> LoaderOptions {
        LoaderOptions {
            threads: self.threads,
            prefetch: self.prefetch,
            start: 0,
            read_ahead: self.read_ahead,
        }
    }

    /// The cohort these settings serve, and the blocks or regions they choose: `cells` (or
    /// every cell), intersected with the `where` predicate and the `cohort` file; `blocks_sql`
    /// and `regions_sql` run here and fill `only_blocks` and `only_regions`. The regions a
    /// `regions_sql` query sees are those the sampler serves: the `label` column's values
    /// when a label is given, else the corpus's `region` column.
    pub fn select(&mut self, corpus: &Arc<Corpus>, cells: Option<Cohort>) -> Result<Cohort> {
        self.validate()?;
        let mut cohort = cells.unwrap_or_else(|| Cohort::all(corpus.n_cells()));
        if let Some(path) = &self.cohort {
            cohort = cohort.intersect(&cohort_file(path, corpus.n_cells())?);
        }
        #[cfg(feature = "sql")]
        {
            let sel = crate::query::select(
                corpus,
                &crate::query::SelectionSql {
                    where_: self.where_.as_deref(),
                    blocks_sql: self.blocks_sql.as_deref(),
                    regions_sql: self.regions_sql.as_deref(),
                    region_column: self.label.as_deref(),
                },
            )?;
            if let Some(c) = sel.cohort {
                cohort = cohort.intersect(&c);
            }
            if sel.blocks.is_some() {
                self.only_blocks = sel.blocks;
            }
            if sel.regions.is_some() {
                self.only_regions = sel.regions;
            }
        }
        Ok(cohort)
    }

    /// The plan of this shard over `cohort` (see [`select`](Self::select) for the cohort and
    /// the SQL-chosen groups). With `balance`, the sampler draws over the cohort's classes,
    /// reported in [`Planned::balance`]; with `multi_hot`, every label of the cohort must name
    /// a term (an error lists those that do not).
    pub fn plan(&self, corpus: &Arc<Corpus>, cohort: Cohort) -> Result<Planned> {
        self.validate()?;
        let state = ShardState {
            epoch: self.epoch,
            start: 0,
            position: self.position,
        };
        let ontology = self.load_ontology()?;
        if let (Some(column), Some(o)) = (&self.multi_hot, &ontology) {
            hierarchy::check_labels(corpus, &cohort, column, o, "multi_hot")?;
        }
        match self.sampler {
            SamplerKind::Random => match &self.balance {
                None => self.cells_plan(RandomCells::new(cohort, self.seed), state),
                Some(column) => {
                    let (sampler, balance) = Balance::new(
                        corpus,
                        &cohort,
                        column,
                        ontology.as_deref(),
                        self.level,
                        self.balance_terms.as_ref(),
                        self.seed,
                    )?;
                    let mut planned = self.cells_plan(sampler, state)?;
                    planned.balance = Some(Arc::new(balance));
                    Ok(planned)
                }
            },
            SamplerKind::Shuffle => {
                let s =
                    BlockShuffle::new(cohort, self.shuffle_run, self.shuffle_window, self.seed)?;
                self.cells_plan(s, state)
            }
            SamplerKind::Groups => {
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
                let s = match (&self.regions, &self.label) {
                    (Some(path), _) => Regions::from_manifest(&index, cohort, path, cfg)?,
                    (None, Some(_)) => Regions::from_obs_column(&index, cohort, cfg)?,
                    (None, None) => {
                        return Err(Error::invalid_input(
                            "the regions sampler needs regions: a regions manifest (regions=) or an obs column of regions (label=)",
                        ))
                    }
                };
                self.groups_plan(s, state)
            }
            SamplerKind::Blocks => {
                let size = self
                    .block_size
                    .expect("validate: the blocks sampler has a block size");
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
        let per_batch = self.items_per_batch();
        let plan = SampledCells::new(
            s,
            self.shard()?,
            self.policy,
            state,
            per_batch,
            self.drop_last,
        )?;
        Ok(Planned {
            epoch_len,
            n_items: plan.n_items(),
            items_per_batch: per_batch as u64,
            grouped: false,
            balance: None,
            plan: Arc::new(plan),
        })
    }

    fn groups_plan<S: Sampler<Item = Group> + 'static>(
        &self,
        s: S,
        state: ShardState,
    ) -> Result<Planned> {
        let epoch_len = s.epoch_len(self.epoch);
        let per_batch = self.items_per_batch();
        let plan = SampledGroups::new(s, self.shard()?, self.policy, state, per_batch)?;
        Ok(Planned {
            epoch_len,
            n_items: plan.n_items(),
            items_per_batch: per_batch as u64,
            grouped: true,
            balance: None,
            plan: Arc::new(plan),
        })
    }
}

/// A cohort file, checked against the corpus.
fn cohort_file(path: &Path, n_cells: u64) -> Result<Cohort> {
    let file = crate::sample::read_cohort(path)?;
    file.check_range(n_cells).map_err(|e| e.with_path(path))?;
    Ok(file)
}

impl DenseGenes {
    /// A list of gene names, `id:N` entries (gene ids) or the one word `all`.
    pub fn from_list(list: &[String]) -> Result<DenseGenes> {
        if list.len() == 1 && list[0] == "all" {
            return Ok(DenseGenes::All);
        }
        let ids = list.iter().filter(|g| g.starts_with("id:")).count();
        if ids == 0 {
            return Ok(DenseGenes::Names(list.to_vec()));
        }
        if ids < list.len() {
            return Err(Error::invalid_input(
                "dense: give either gene names or id:N entries, not both",
            ));
        }
        list.iter()
            .map(|g| {
                g[3..]
                    .parse::<u32>()
                    .map_err(|_| Error::invalid_input(format!("dense: {g:?} is not id:NUMBER")))
            })
            .collect::<Result<_>>()
            .map(DenseGenes::Ids)
    }
}

/// `dense` as serde sees it: `"all"`, a list of names, or a list of gene ids.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum DenseText {
    One(String),
    Ids(Vec<u32>),
    Names(Vec<String>),
}

impl Serialize for DenseGenes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            DenseGenes::All => DenseText::One("all".into()),
            DenseGenes::Ids(ids) => DenseText::Ids(ids.clone()),
            DenseGenes::Names(n) => DenseText::Names(n.clone()),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for DenseGenes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let list = match DenseText::deserialize(d).map_err(|_| {
            D::Error::custom(
                "expected \"all\", a list of gene names, or a list of gene ids (not mixed)",
            )
        })? {
            DenseText::Ids(ids) => return Ok(DenseGenes::Ids(ids)),
            DenseText::One(s) => vec![s],
            DenseText::Names(n) => n,
        };
        DenseGenes::from_list(&list).map_err(|e| D::Error::custom(e.message().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(pairs: serde_json::Value) -> Result<SamplerSpec> {
        match pairs {
            serde_json::Value::Object(m) => SamplerSpec::from_json(m),
            _ => unreachable!(),
        }
    }

    #[test]
    fn names_and_defaults_round_trip() {
        let d = SamplerSpec::default();
        assert_eq!(d.group_size, defaults::GROUP_SIZE);
        let back = SamplerSpec::from_json(match d.to_json() {
            serde_json::Value::Object(m) => m,
            _ => unreachable!(),
        })
        .unwrap();
        assert_eq!(back, d);
        let names = SamplerSpec::names();
        for n in [
            "where",
            "blocks_sql",
            "num_workers",
            "prefetch",
            "dense",
            "tokens",
            "top_k",
            "n_bins",
            "balance",
            "level",
            "balance_terms",
            "ontology",
            "multi_hot",
            "multi_hot_level",
            "multi_hot_terms",
        ] {
            assert!(names.iter().any(|x| x == n), "{n} in {names:?}");
        }
        assert!(!names.iter().any(|x| x == "only_blocks"));
    }

    #[test]
    fn each_check_names_its_setting() {
        let cases = [
            (
                serde_json::json!({"batch_size": 0}),
                "batch_size must be at least 1, got 0",
            ),
            (
                serde_json::json!({"batch_size": -3}),
                "batch_size must not be negative, got -3",
            ),
            (
                serde_json::json!({"shuffle_run": 0}),
                "shuffle_run must be at least 1",
            ),
            (
                serde_json::json!({"group_size": 0}),
                "group_size must be at least 1",
            ),
            (
                serde_json::json!({"world_size": 0}),
                "world_size must be at least 1",
            ),
            (serde_json::json!({"sampler": "blocks"}), "needs block_size"),
            (
                serde_json::json!({"sampler": "blocks", "block_size": -1.0}),
                "block_size must be a positive number",
            ),
            (
                serde_json::json!({"label_mode": "stratified"}),
                "label_mode needs label",
            ),
            (
                serde_json::json!({"bounds": true}),
                "bounds need groups with a box",
            ),
            (
                serde_json::json!({"blocks_sql": "SELECT 1"}),
                "blocks_sql is a setting of the blocks sampler",
            ),
            (
                serde_json::json!({"batch_sise": 4}),
                "unknown setting \"batch_sise\"",
            ),
            (
                serde_json::json!({"sampler": "nope"}),
                "sampler: unknown sampler \"nope\"",
            ),
            (serde_json::json!({"seed": "x"}), "seed: invalid type"),
            (serde_json::json!({"dense": ["a", "id:3"]}), "not both"),
            (
                serde_json::json!({"genes": ["A", "B", "A"]}),
                "lists \"A\" twice (entries 1 and 3)",
            ),
            (
                serde_json::json!({"genes": ["A"], "dense": "all"}),
                "does not combine with dense",
            ),
            (
                serde_json::json!({"tokens": "words"}),
                "tokens: unknown tokens \"words\"",
            ),
            (
                serde_json::json!({"tokens": "rank", "top_k": 0}),
                "top_k must be at least 1",
            ),
            (
                serde_json::json!({"tokens": "bins", "n_bins": 1}),
                "n_bins must be at least 2",
            ),
            (
                serde_json::json!({"tokens": "rank", "dense": "all"}),
                "tokens and dense",
            ),
            (
                serde_json::json!({"tokens": "bins", "gene_medians": "m.tsv"}),
                "gene_medians is a setting of tokens=\"rank\"",
            ),
            (
                serde_json::json!({"level": 3}),
                "level is a setting of balance",
            ),
            (
                serde_json::json!({"balance": "ct", "level": 3}),
                "level needs ontology",
            ),
            (
                serde_json::json!({"balance": "ct", "ontology": "CL", "level": 3, "balance_terms": ["B cell"]}),
                "level and balance_terms are two ways",
            ),
            (
                serde_json::json!({"balance": "ct", "ontology": "CL", "balance_terms": []}),
                "balance_terms is an empty list",
            ),
            (
                serde_json::json!({"balance": "ct", "sampler": "shuffle"}),
                "balance is a setting of the random sampler, not of shuffle",
            ),
            (
                serde_json::json!({"ontology": "CL"}),
                "ontology is read for balance and multi_hot",
            ),
            (
                serde_json::json!({"multi_hot": "ct"}),
                "multi_hot needs ontology",
            ),
            (
                serde_json::json!({"multi_hot_terms": "t.txt"}),
                "multi_hot_terms is a setting of multi_hot",
            ),
            (
                serde_json::json!({"multi_hot": "ct", "ontology": "CL", "multi_hot_level": 2, "multi_hot_terms": ["T cell"]}),
                "multi_hot_level and multi_hot_terms are two ways",
            ),
            (
                serde_json::json!({"balance": "ct", "level": -1}),
                "level must not be negative",
            ),
        ];
        for (pairs, want) in cases {
            let e = from(pairs.clone()).unwrap_err();
            assert!(e.message().contains(want), "{pairs}: {e}");
        }
    }

    #[test]
    fn enums_parse_their_text_forms_and_print_them_back() {
        for kind in ["random", "shuffle", "groups", "regions", "blocks"] {
            assert_eq!(kind.parse::<SamplerKind>().unwrap().to_string(), kind);
        }
        assert_eq!("cells".parse::<SamplerKind>().unwrap(), SamplerKind::Random);
        assert_eq!(
            "drop-last".parse::<ShardPolicy>().unwrap(),
            ShardPolicy::DropLast
        );
        assert_eq!(
            "class_balanced".parse::<LabelMode>().unwrap(),
            LabelMode::ClassBalanced
        );
        assert_eq!(
            "float32".parse::<ValueOutput>().unwrap(),
            ValueOutput::Float32
        );
        assert_eq!("I32".parse::<IndexOutput>().unwrap(), IndexOutput::Int32);
        let s = from(serde_json::json!({"sampler": "groups", "policy": "pad", "dense": [1, 2], "values": "f64"})).unwrap();
        assert_eq!(
            (s.sampler, s.policy, s.values),
            (SamplerKind::Groups, ShardPolicy::Pad, ValueOutput::Float64)
        );
        assert_eq!(s.dense, Some(DenseGenes::Ids(vec![1, 2])));
        assert_eq!(s.items_per_batch(), defaults::BATCH_GROUPS);
        assert_eq!(s.to_json()["policy"], "pad");
    }

    #[test]
    fn term_lists_read_as_a_file_or_a_list_and_print_back() {
        let s = from(serde_json::json!({
            "balance": "ct", "ontology": "cl.obo", "balance_terms": "coarse.txt",
            "multi_hot": "ct", "multi_hot_terms": ["B cell", "CL:0000084"],
        }))
        .unwrap();
        assert_eq!(
            s.balance_terms,
            Some(TermList::File(PathBuf::from("coarse.txt")))
        );
        assert_eq!(
            s.multi_hot_terms,
            Some(TermList::List(vec!["B cell".into(), "CL:0000084".into()]))
        );
        let back = SamplerSpec::from_json(match s.to_json() {
            serde_json::Value::Object(m) => m,
            _ => unreachable!(),
        })
        .unwrap();
        assert_eq!(back, s);
        let mh = s.batch_options().multi_hot.unwrap();
        assert_eq!((mh.column.as_str(), mh.ontology.as_str()), ("ct", "cl.obo"));
        assert!(matches!(mh.terms, MultiHotTerms::List(_)));
    }
}
