//! Layer 5: samplers over a cohort, with deterministic sharding across ranks and workers.
//!
//! Every sampler describes one *epoch* as a global sequence of items addressed by position:
//! [`Sampler::epoch_len`] items, and [`Sampler::item`] computes the item at any position
//! directly from `(seed, epoch, position)` with counter-based randomness ([`rng`]) and keyed
//! bijections ([`Permutation`]). Sharding ([`Shard`], [`Layout`], [`ShardPolicy`]) hands each
//! `(rank, worker)` the strided positions `g, g + G, ...`, so a shard computes only its own
//! items, and a stream is a pure function of (seed, epoch, cohort, settings, rank, world size,
//! worker, workers). [`ShardState`] is the resumable state (serde), and
//! [`ShardState::merge`] turns the checkpoint of a whole job into a global cursor from which a
//! job of a different size continues the same epoch.
//!
//! Samplers:
//! - [`RandomCells`]: a uniform permutation of the cohort per epoch, uniform draws with
//!   replacement, or draws weighted per cell (alias method); items are cell ids.
//! - [`RandomGroups`]: groups of `k` cells from one sample, optionally class-balanced or
//!   stratified by a label column.
//! - [`Regions`]: regions from a regions manifest (Parquet/CSV) or from an obs column.
//! - [`SpatialBlocks`]: square or cubic blocks of tissue with size and stride, on the block
//!   grid of each sample ([`BlockGrid`], the same grid as the SQL `blocks()` function).
//! - [`BlockShuffle`]: contiguous runs of cells shuffled as blocks, then mixed in a window:
//!   a cold-storage friendly order; [`mean_label_entropy`] measures its batch diversity.
//!
//! Samplers that need obs data take a [`SampleIndex`]: built once from a corpus
//! ([`SampleIndex::from_corpus`]) or directly from in-memory vectors.
//!
//! A [`Cohort`] is the set of cells a sampler draws from: every cell, a cohort file
//! ([`read_cohort`], [`write_cohort`]; no `sql` feature needed) or the result of a query
//! (`query::QueryEngine::cohort`). Regions and blocks selected in SQL restrict the group
//! samplers through [`RegionConfig::only`] and [`BlockConfig::only`].
//!
//! ```
//! use cellarrow::sample::{Cohort, RandomCells, Sampler, Shard, ShardPolicy, ShardState, ShardStream};
//! let sampler = RandomCells::new(Cohort::all(1000), 42);
//! let shard = Shard::new(0, 2, 1, 2).unwrap(); // rank 0 of 2, worker 1 of 2
//! let cells: Vec<u64> =
//!     ShardStream::new(&sampler, shard, ShardPolicy::Even, ShardState::epoch_start(0)).unwrap().collect();
//! assert_eq!(cells.len(), 250);
//! ```

#[cfg(test)]
mod above_u32;
mod blocks;
mod cells;
mod cohort;
mod grid;
mod group;
mod groups;
mod index;
mod permutation;
#[cfg(test)]
mod props;
mod regions;
pub mod rng;
mod shard;
mod shuffle;

pub use blocks::{BlockConfig, SpatialBlocks};
pub use cells::RandomCells;
pub use cohort::{read_cohort, write_cohort, Cohort, CELL_COLUMN};
pub use grid::{block_grid, BlockGrid, Extent};
pub use group::{Bounds, Group, GroupKey};
pub use groups::{GroupConfig, LabelMode, RandomGroups, SampleChoice, TooFewCells};
pub use index::{Labels, SampleIndex, SampleRange, NO_LABEL};
pub use permutation::Permutation;
pub use regions::{RegionConfig, RegionMembers, RegionSpec, Regions};
pub use shard::{Layout, Shard, ShardPolicy, ShardState, ShardStream, ShardWindow};
pub use shuffle::{mean_label_entropy, BlockShuffle};

#[cfg(feature = "cli")]
pub(crate) use cohort::temp_beside;
#[cfg(feature = "sql")]
pub(crate) use cohort::{append_cells, integer_ids, is_integral, missing_cell_column};

/// An epoch as a position-addressable sequence of items.
///
/// Implementations are pure: `item(epoch, pos)` depends only on the sampler's settings (seed
/// included), `epoch` and `pos`. Iterate one shard with [`ShardStream`].
pub trait Sampler: Send + Sync {
    /// A cell id (`u64`) or a [`Group`].
    type Item;
    /// Number of items in `epoch`.
    fn epoch_len(&self, epoch: u64) -> u64;
    /// The item at global position `pos < epoch_len(epoch)`. Panics on a position out of range
    /// (a caller bug; [`ShardStream`] never asks for one).
    fn item(&self, epoch: u64, pos: u64) -> Self::Item;

    /// Number of items `shard` serves in `epoch` under `policy`.
    fn shard_len(
        &self,
        epoch: u64,
        shard: Shard,
        policy: ShardPolicy,
    ) -> Result<u64, crate::Error> {
        Ok(Layout::new(self.epoch_len(epoch), 0, shard, policy)?.len())
    }
    /// The stream of `shard` from `state` (use [`ShardState::epoch_start`] for a fresh epoch).
    fn stream(
        &self,
        shard: Shard,
        policy: ShardPolicy,
        state: ShardState,
    ) -> Result<ShardStream<'_, Self>, crate::Error>
    where
        Self: Sized,
    {
        ShardStream::new(self, shard, policy, state)
    }
}

impl<S: Sampler + ?Sized> Sampler for &S {
    type Item = S::Item;
    fn epoch_len(&self, epoch: u64) -> u64 {
        (**self).epoch_len(epoch)
    }
    fn item(&self, epoch: u64, pos: u64) -> S::Item {
        (**self).item(epoch, pos)
    }
}

impl<S: Sampler + ?Sized> Sampler for Box<S> {
    type Item = S::Item;
    fn epoch_len(&self, epoch: u64) -> u64 {
        (**self).epoch_len(epoch)
    }
    fn item(&self, epoch: u64, pos: u64) -> S::Item {
        (**self).item(epoch, pos)
    }
}
