//! Layer 6: sampled cell ids to zero-copy-gathered Arrow batches, with prefetching.
//!
//! A batch is an Arrow [`RecordBatch`](arrow::record_batch::RecordBatch):
//!
//! | column | type | |
//! |---|---|---|
//! | `cell` | `UInt64` | global cell id |
//! | `group` | `UInt64` | only with [`BatchOptions::group_column`]: the group (region, block ...) of the cell |
//! | `indices` | `List<UInt16 \| UInt32 \| Int32>` | gene ids of the cell's non-zeros (CSR output; stored type or [`IndexOutput`]); with [`BatchOptions::genes`], positions in the model vocabulary, increasing |
//! | `values` | `List<...>` | the non-zeros, stored type or converted ([`ValueOutput`]) |
//! | `dense` | `FixedSizeList<Float32 \| Float64, n>` | instead of `indices`/`values` with [`BatchOptions::dense`] |
//! | `tokens`, `token_values`, `attention_mask` | `FixedSizeList<_, k>` | instead of `indices`/`values` with [`BatchOptions::tokens`] ([`tokens`]); with [`BatchOptions::genes`], token ids are positions in the model vocabulary |
//! | `x`, `y`, (`z`) | `Float64` | with [`BatchOptions::coordinates`] |
//! | obs columns | as in `obs.parquet` | with [`BatchOptions::obs_columns`] |
//! | `min_x` ... `max_z` | `Float64` | with [`BatchOptions::bounds`]: the box of the cell's group (a spatial block, a region box) |
//! | `x_norm`, `y_norm`, (`z_norm`) | `Float64` | with [`BatchOptions::bounds`]: the coordinates normalised to that box, `(x - min_x) / (max_x - min_x)` |
//! | `multi_hot` | `FixedSizeList<UInt8, n>` | with [`BatchOptions::multi_hot`]: the cell's label and its ancestors over `n` terms ([`hierarchy`]) |
//!
//! The list offsets of `indices` and `values` are the same buffer: the batch-local CSR indptr,
//! starting at 0. Every buffer is a plain Arrow buffer, so the batch exports to PyArrow, Polars
//! and torch (via the C data interface) without a copy.
//!
//! [`Gatherer`] builds one batch from a list of cell ids, copying each cell's bytes once, straight
//! from the mapped corpus into the batch buffers. [`Loader`] runs a pool of threads that gather
//! the batches of a [`BatchPlan`] ahead of the consumer into a bounded queue, and yields them in
//! plan order.
//!
//! ```no_run
//! use std::sync::Arc;
//! use cellarrow::loader::{BatchOptions, CellBatches, Gatherer, Loader, LoaderOptions};
//! # fn main() -> cellarrow::Result<()> {
//! let corpus = Arc::new(cellarrow::Corpus::open("corpus")?);
//! let gatherer = Arc::new(Gatherer::new(corpus, BatchOptions::default())?);
//! let plan = CellBatches::new((0..1000).collect(), 256, false);
//! for batch in Loader::new(gatherer, Arc::new(plan), LoaderOptions::default()) {
//!     let batch = batch?;
//!     assert!(batch.num_rows() <= 256);
//! }
//! # Ok(()) }
//! ```

pub mod bench;
mod gather;
pub mod hierarchy;
mod pool;
mod prefetch;
pub mod spec;
mod summary;
pub mod tokens;

#[cfg(test)]
mod tests;

pub use gather::Gatherer;
pub use hierarchy::{
    Balance, BalanceReport, ClassCount, MultiHot, MultiHotOptions, MultiHotTerms, TermList,
};
pub use pool::Region;
pub use prefetch::{Loader, LoaderOptions};
pub use spec::{defaults, Planned, SamplerKind, SamplerSpec};
pub use summary::Summary;
pub use tokens::{TokenMode, TokenOptions};

use std::sync::Arc;

use crate::error::Result;
use crate::genes::GeneVocab;
use crate::sample::{Bounds, Group, Layout, Sampler, Shard, ShardPolicy, ShardState, ShardWindow};

/// Value type of the `values` (or `dense`) column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueOutput {
    /// The corpus value type as stored (dense output uses `Float32` unless the corpus stores
    /// `Float64`).
    Native,
    /// Converted to `Float32` while copying.
    Float32,
    /// Converted to `Float64` while copying.
    Float64,
}

/// Type of the gene ids in the `indices` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexOutput {
    /// As stored (`UInt16` or `UInt32`): the fewest bytes.
    Native,
    /// Widened to `Int32` while copying: the index type of scipy's CSR matrices and torch's
    /// sparse CSR tensors, which then take the buffer as it is.
    Int32,
}

/// The genes of a dense output, in column order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenseGenes {
    /// Every gene of the vocabulary, in id order.
    All,
    /// Gene ids.
    Ids(Vec<u32>),
    /// Genes by name, stable id or unique symbol, looked up in `genes.parquet`.
    Names(Vec<String>),
}

/// What a batch holds besides cell ids (the default: CSR in the [`spec::defaults`] types, no
/// extra columns).
#[derive(Debug, Clone, PartialEq)]
pub struct BatchOptions {
    /// Value type of the output.
    pub values: ValueOutput,
    /// Gene id type of CSR output.
    pub indices: IndexOutput,
    /// Dense output over these genes instead of CSR.
    pub dense: Option<DenseGenes>,
    /// Output in a model's gene space: CSR gene ids, or token ids with [`BatchOptions::tokens`],
    /// are positions in this vocabulary; corpus genes outside it are left out of every batch
    /// (for tokens, see [`tokens`] for what still counts them).
    pub genes: Option<GeneVocab>,
    /// `obs.parquet` columns to add, gathered per cell.
    pub obs_columns: Vec<String>,
    /// Add the coordinate columns (`x`, `y`, and `z` when the corpus has it).
    pub coordinates: bool,
    /// Add a `group` column (the requests must then carry group ids).
    pub group_column: bool,
    /// Add the box of each cell's group and the coordinates normalised to it (the requests
    /// must then carry bounds: spatial blocks, regions given as boxes). Implies `coordinates`.
    pub bounds: bool,
    /// Token columns (`tokens`, `token_values`, `attention_mask`) instead of CSR rows; see
    /// [`tokens`].
    pub tokens: Option<TokenOptions>,
    /// Add the `multi_hot` column: each cell's label and its ancestors over a set of ontology
    /// terms; see [`hierarchy`].
    pub multi_hot: Option<MultiHotOptions>,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            values: spec::defaults::VALUES,
            indices: spec::defaults::INDICES,
            dense: None,
            genes: None,
            obs_columns: Vec::new(),
            coordinates: false,
            group_column: false,
            bounds: false,
            tokens: None,
            multi_hot: None,
        }
    }
}

/// The cells of one batch, and for grouped sampling the group of each cell.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchRequest {
    /// Global cell ids, in output row order.
    pub cells: Vec<u64>,
    /// The group id of each cell (same length as `cells`), for grouped sampling.
    pub groups: Option<Vec<u64>>,
    /// The box of each cell's group (same length as `cells`), when every group of the batch
    /// has one (spatial blocks, regions given as boxes).
    pub bounds: Option<Vec<Bounds>>,
}

/// A fixed sequence of batches: what the [`Loader`] gathers, in order.
///
/// Batch `i` must be a pure function of `i`, so that any worker thread can compute any batch and
/// the output does not depend on the number of threads.
pub trait BatchPlan: Send + Sync {
    /// Number of batches.
    fn n_batches(&self) -> usize;
    /// The cells of batch `i` (`i < n_batches()`).
    fn batch(&self, i: usize) -> Result<BatchRequest>;
}

/// Consecutive chunks of a list of cell ids: the batches of a cell sampler's shard.
#[derive(Debug, Clone)]
pub struct CellBatches {
    cells: Vec<u64>,
    batch_size: usize,
    n_batches: usize,
}

impl CellBatches {
    /// Chunks `cells` into batches of `batch_size` (at least 1); the last batch is shorter
    /// unless `drop_last`, which drops it.
    pub fn new(cells: Vec<u64>, batch_size: usize, drop_last: bool) -> CellBatches {
        let batch_size = batch_size.max(1);
        let n_batches = if drop_last {
            cells.len() / batch_size
        } else {
            cells.len().div_ceil(batch_size)
        };
        CellBatches {
            cells,
            batch_size,
            n_batches,
        }
    }

    /// The cells, in order.
    pub fn cells(&self) -> &[u64] {
        &self.cells
    }
}

impl BatchPlan for CellBatches {
    fn n_batches(&self) -> usize {
        self.n_batches
    }
    fn batch(&self, i: usize) -> Result<BatchRequest> {
        let start = i * self.batch_size;
        let end = (start + self.batch_size).min(self.cells.len());
        Ok(BatchRequest {
            cells: self.cells[start..end].to_vec(),
            groups: None,
            bounds: None,
        })
    }
}

/// Batches of whole groups (regions, spatial blocks, random-cell groups): each batch holds
/// `groups_per_batch` consecutive groups, with a `group` id per cell.
#[derive(Debug, Clone)]
pub struct GroupBatches {
    /// (group id, cells) in order.
    groups: Vec<(u64, Vec<u64>)>,
    groups_per_batch: usize,
}

impl GroupBatches {
    /// Chunks `groups` (group id, its cells) into batches of `groups_per_batch` groups (at
    /// least 1).
    pub fn new(groups: Vec<(u64, Vec<u64>)>, groups_per_batch: usize) -> GroupBatches {
        GroupBatches {
            groups,
            groups_per_batch: groups_per_batch.max(1),
        }
    }
}

impl BatchPlan for GroupBatches {
    fn n_batches(&self) -> usize {
        self.groups.len().div_ceil(self.groups_per_batch)
    }
    fn batch(&self, i: usize) -> Result<BatchRequest> {
        let start = i * self.groups_per_batch;
        let end = (start + self.groups_per_batch).min(self.groups.len());
        let chunk = &self.groups[start..end];
        let n: usize = chunk.iter().map(|(_, c)| c.len()).sum();
        let mut cells = Vec::with_capacity(n);
        let mut groups = Vec::with_capacity(n);
        for (g, c) in chunk {
            cells.extend_from_slice(c);
            groups.extend(std::iter::repeat_n(*g, c.len()));
        }
        Ok(BatchRequest {
            cells,
            groups: Some(groups),
            bounds: None,
        })
    }
}

/// The batches of one shard of a cell sampler in one epoch: batch `i` holds the shard's items
/// `i * batch_size ..`, computed from the sampler directly (nothing is materialised).
pub struct SampledCells<S> {
    sampler: S,
    epoch: u64,
    layout: Layout,
    first: u64,
    len: u64,
    batch_size: u64,
    drop_last: bool,
}

impl<S: Sampler<Item = u64>> SampledCells<S> {
    /// Batches of `batch_size` (at least 1) cells of `shard` from `state` on (use
    /// [`ShardState::epoch_start`] for a fresh epoch). The last, shorter batch is dropped with
    /// `drop_last`.
    pub fn new(
        sampler: S,
        shard: Shard,
        policy: ShardPolicy,
        state: ShardState,
        batch_size: usize,
        drop_last: bool,
    ) -> Result<Self> {
        let w = ShardWindow::new(sampler.epoch_len(state.epoch), shard, policy, state)?;
        Ok(SampledCells {
            sampler,
            epoch: state.epoch,
            layout: w.layout,
            first: w.first,
            len: w.len,
            batch_size: batch_size.max(1) as u64,
            drop_last,
        })
    }

    /// Cells this plan serves.
    pub fn n_items(&self) -> u64 {
        if self.drop_last {
            self.len / self.batch_size * self.batch_size
        } else {
            self.len
        }
    }
}

impl<S: Sampler<Item = u64>> BatchPlan for SampledCells<S> {
    fn n_batches(&self) -> usize {
        let n = if self.drop_last {
            self.len / self.batch_size
        } else {
            self.len.div_ceil(self.batch_size)
        };
        n as usize
    }
    fn batch(&self, i: usize) -> Result<BatchRequest> {
        let lo = i as u64 * self.batch_size;
        let hi = (lo + self.batch_size).min(self.len);
        let cells = (lo..hi)
            .map(|j| {
                self.sampler
                    .item(self.epoch, self.layout.global(self.first + j))
            })
            .collect();
        Ok(BatchRequest {
            cells,
            groups: None,
            bounds: None,
        })
    }
}

/// The batches of one shard of a group sampler (random groups, regions, blocks) in one epoch:
/// `groups_per_batch` whole groups per batch. The `group` id of a cell is the global position
/// of its group in the epoch, unique within the epoch.
pub struct SampledGroups<S> {
    sampler: S,
    epoch: u64,
    layout: Layout,
    first: u64,
    len: u64,
    groups_per_batch: u64,
}

impl<S: Sampler<Item = Group>> SampledGroups<S> {
    /// Batches of `groups_per_batch` (at least 1) groups of `shard` from `state` on.
    pub fn new(
        sampler: S,
        shard: Shard,
        policy: ShardPolicy,
        state: ShardState,
        groups_per_batch: usize,
    ) -> Result<Self> {
        let w = ShardWindow::new(sampler.epoch_len(state.epoch), shard, policy, state)?;
        Ok(SampledGroups {
            sampler,
            epoch: state.epoch,
            layout: w.layout,
            first: w.first,
            len: w.len,
            groups_per_batch: groups_per_batch.max(1) as u64,
        })
    }

    /// Groups this plan serves.
    pub fn n_items(&self) -> u64 {
        self.len
    }
}

impl<S: Sampler<Item = Group>> BatchPlan for SampledGroups<S> {
    fn n_batches(&self) -> usize {
        self.len.div_ceil(self.groups_per_batch) as usize
    }
    fn batch(&self, i: usize) -> Result<BatchRequest> {
        let lo = i as u64 * self.groups_per_batch;
        let hi = (lo + self.groups_per_batch).min(self.len);
        let mut cells = Vec::new();
        let mut groups = Vec::new();
        let mut bounds = Some(Vec::new());
        for j in lo..hi {
            let pos = self.layout.global(self.first + j);
            let g = self.sampler.item(self.epoch, pos);
            groups.extend(std::iter::repeat_n(pos, g.cells.len()));
            cells.extend_from_slice(&g.cells);
            match (bounds.as_mut(), g.bounds) {
                (Some(b), Some(gb)) => b.extend(std::iter::repeat_n(gb, g.cells.len())),
                _ => bounds = None,
            }
        }
        Ok(BatchRequest {
            cells,
            groups: Some(groups),
            bounds,
        })
    }
}

/// Several plans one after the other (for example consecutive epochs).
pub struct Concat {
    plans: Vec<Arc<dyn BatchPlan>>,
    /// First batch number of each plan, and the total at the end.
    starts: Vec<usize>,
}

impl Concat {
    /// The batches of `plans`, in order.
    pub fn new(plans: Vec<Arc<dyn BatchPlan>>) -> Concat {
        let mut starts = Vec::with_capacity(plans.len() + 1);
        let mut n = 0;
        for p in &plans {
            starts.push(n);
            n += p.n_batches();
        }
        starts.push(n);
        Concat { plans, starts }
    }
}

impl BatchPlan for Concat {
    fn n_batches(&self) -> usize {
        *self.starts.last().expect("starts holds the total")
    }
    fn batch(&self, i: usize) -> Result<BatchRequest> {
        let p = self.starts.partition_point(|&s| s <= i) - 1;
        self.plans[p].batch(i - self.starts[p])
    }
}
