//! Sharding an epoch across (rank, world size, worker, workers), and resumable shard state.
//!
//! An epoch is one global sequence of `n` items (positions `0..n`). The `G = world_size *
//! num_workers` shards take strided global positions: flattened shard `g` takes `start + g`,
//! `start + g + G`, `start + g + 2G`, ... where `start` is the global cursor the current layout
//! began at (0 at the start of an epoch). A shard computes only its own positions.
//!
//! Because the assignment is strided from a global cursor, a consistent checkpoint of all
//! shards (see [`ShardState::merge`]) is one number, the global cursor `c`; resuming at `c` with
//! any new world size continues the same epoch with no item repeated or skipped.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

use super::Sampler;

/// Who is reading: a rank of a distributed job and a data-loading worker inside it.
/// The flattened shard id is `rank * num_workers + worker` out of `world_size * num_workers`.
///
/// ```
/// use cellarrow::sample::Shard;
/// let s = Shard::new(1, 2, 3, 4).unwrap();
/// assert_eq!((s.id(), s.count()), (7, 8));
/// assert!(Shard::new(2, 2, 0, 1).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Shard {
    /// Rank in `0..world_size`.
    pub rank: u32,
    /// Number of ranks (at least 1).
    pub world_size: u32,
    /// Worker in `0..num_workers`.
    pub worker: u32,
    /// Number of workers per rank (at least 1).
    pub num_workers: u32,
}

impl Shard {
    /// A checked shard: `world_size >= 1`, `num_workers >= 1`, `rank < world_size`,
    /// `worker < num_workers`; otherwise an [`crate::ErrorKind::InvalidInput`] error.
    pub fn new(rank: u32, world_size: u32, worker: u32, num_workers: u32) -> Result<Shard> {
        let s = Shard {
            rank,
            world_size,
            worker,
            num_workers,
        };
        s.validate()?;
        Ok(s)
    }
    /// The whole epoch in one shard (rank 0 of 1, worker 0 of 1).
    pub fn single() -> Shard {
        Shard {
            rank: 0,
            world_size: 1,
            worker: 0,
            num_workers: 1,
        }
    }
    /// The shard with flattened id `id` out of `world_size * num_workers`.
    pub fn from_id(id: u64, world_size: u32, num_workers: u32) -> Result<Shard> {
        if num_workers == 0 || world_size == 0 {
            return Err(Error::invalid_input(
                "world_size and num_workers must be at least 1",
            ));
        }
        let w = num_workers as u64;
        Shard::new(
            (id / w).min(u32::MAX as u64) as u32,
            world_size,
            (id % w) as u32,
            num_workers,
        )
    }
    /// Checks the invariants listed at [`Shard::new`].
    pub fn validate(&self) -> Result<()> {
        if self.world_size == 0 {
            return Err(Error::invalid_input("world_size must be at least 1, got 0"));
        }
        if self.num_workers == 0 {
            return Err(Error::invalid_input(
                "num_workers must be at least 1, got 0",
            ));
        }
        if self.rank >= self.world_size {
            return Err(Error::invalid_input(format!(
                "rank {} out of range for world_size {}",
                self.rank, self.world_size
            )));
        }
        if self.worker >= self.num_workers {
            return Err(Error::invalid_input(format!(
                "worker {} out of range for num_workers {}",
                self.worker, self.num_workers
            )));
        }
        Ok(())
    }
    /// Flattened shard id `rank * num_workers + worker`.
    pub fn id(&self) -> u64 {
        self.rank as u64 * self.num_workers as u64 + self.worker as u64
    }
    /// Number of shards `world_size * num_workers`.
    pub fn count(&self) -> u64 {
        self.world_size as u64 * self.num_workers as u64
    }
}

/// How shard sizes are equalised when the epoch does not divide evenly.
///
/// With `R` items remaining in the epoch and `G` shards:
/// - [`ShardPolicy::Even`]: every item is served exactly once; shard sizes are `ceil` or
///   `floor` of `R / G` (they differ by at most one).
/// - [`ShardPolicy::DropLast`]: every shard serves `floor(R / G)` items; the last `R mod G`
///   global positions of the epoch are not served this epoch. Since the epoch order changes
///   every epoch, different items are dropped in different epochs.
/// - [`ShardPolicy::Pad`]: every shard serves `ceil(R / G)` items; the missing positions are
///   filled by repeating items from the start of the remaining range (position
///   `start + (p - start) mod R`), so up to `G - 1` items appear twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardPolicy {
    /// Sizes differ by at most one; nothing dropped or repeated.
    #[default]
    Even,
    /// Equal sizes; the tail of the epoch is dropped.
    DropLast,
    /// Equal sizes; the tail is padded with repeated items.
    Pad,
}

/// The positions one shard serves in one epoch: a pure function of the epoch length, the
/// global cursor it starts from, the shard and the policy.
///
/// ```
/// use cellarrow::sample::{Layout, Shard, ShardPolicy};
/// let l = Layout::new(10, 0, Shard::new(1, 3, 0, 1).unwrap(), ShardPolicy::Even).unwrap();
/// assert_eq!((0..l.len()).map(|i| l.global(i)).collect::<Vec<_>>(), vec![1, 4, 7]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    n: u64,
    start: u64,
    id: u64,
    count: u64,
    policy: ShardPolicy,
}

impl Layout {
    /// The layout of `shard` over an epoch of `epoch_len` items, resumed at global cursor
    /// `start` (0 for a fresh epoch; a `start` past the end leaves nothing to serve).
    pub fn new(epoch_len: u64, start: u64, shard: Shard, policy: ShardPolicy) -> Result<Layout> {
        shard.validate()?;
        Ok(Layout {
            n: epoch_len,
            start: start.min(epoch_len),
            id: shard.id(),
            count: shard.count(),
            policy,
        })
    }
    /// Number of items this shard serves.
    pub fn len(&self) -> u64 {
        let r = self.n - self.start;
        match self.policy {
            ShardPolicy::Even => {
                if self.id < r {
                    (r - self.id - 1) / self.count + 1
                } else {
                    0
                }
            }
            ShardPolicy::DropLast => r / self.count,
            ShardPolicy::Pad => r.div_ceil(self.count),
        }
    }
    /// True when the shard serves nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The global position of the shard's `i`-th item (`i < len()`).
    #[inline]
    pub fn global(&self, i: u64) -> u64 {
        let p = self.start + self.id + i * self.count;
        if p < self.n {
            p
        } else {
            // Only reachable under Pad: wrap into the remaining range.
            self.start + (p - self.start) % (self.n - self.start)
        }
    }
}

/// The part of one epoch a shard still has to serve: its [`Layout`] from `state.start`, and its
/// positions `first .. first + len` of that layout, from `state.position` on. Every batch plan
/// over a sampler starts from this.
///
/// ```
/// use cellarrow::sample::{Shard, ShardPolicy, ShardState, ShardWindow};
/// let state = ShardState { epoch: 0, start: 0, position: 1 };
/// let w = ShardWindow::new(10, Shard::new(1, 3, 0, 1).unwrap(), ShardPolicy::Even, state).unwrap();
/// assert_eq!((w.first, w.len), (1, 2));
/// assert_eq!(w.layout.global(w.first), 4);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardWindow {
    pub layout: Layout,
    /// The first position of the layout still to serve (`state.position`, at most its length).
    pub first: u64,
    /// Positions left to serve.
    pub len: u64,
}

impl ShardWindow {
    /// The window of `shard` over an epoch of `epoch_len` items, resumed at `state`.
    pub fn new(
        epoch_len: u64,
        shard: Shard,
        policy: ShardPolicy,
        state: ShardState,
    ) -> Result<ShardWindow> {
        let layout = Layout::new(epoch_len, state.start, shard, policy)?;
        let first = state.position.min(layout.len());
        Ok(ShardWindow {
            layout,
            first,
            len: layout.len() - first,
        })
    }
}

/// Where a shard stands: serialisable, and enough to continue exactly where it stopped.
///
/// `start` is the global cursor the current layout began at (0 unless the epoch was resumed
/// with a different world size), `position` the number of items this shard has yielded since.
///
/// ```
/// use cellarrow::sample::ShardState;
/// let s = ShardState { epoch: 3, start: 0, position: 17 };
/// let json = serde_json::to_string(&s).unwrap();
/// assert_eq!(serde_json::from_str::<ShardState>(&json).unwrap(), s);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct ShardState {
    /// The epoch being served.
    pub epoch: u64,
    /// Global cursor at which the current layout started.
    pub start: u64,
    /// Items this shard has yielded since `start`.
    pub position: u64,
}

impl ShardState {
    /// The beginning of `epoch`.
    pub fn epoch_start(epoch: u64) -> ShardState {
        ShardState {
            epoch,
            start: 0,
            position: 0,
        }
    }

    /// Merges the saved states of all shards of one job into the state from which a job with
    /// *any* world size continues: `{ epoch, start: c, position: 0 }` where `c` is the global
    /// cursor. Every shard of the old job must be present exactly once, all in the same epoch
    /// and layout, and together they must have consumed a prefix of the epoch (which holds when
    /// every shard yielded the same number of items, or the first shards one more); otherwise
    /// an `InvalidInput` error says which shard is out of step.
    ///
    /// ```
    /// use cellarrow::sample::{Shard, ShardState};
    /// let a = (Shard::new(0, 2, 0, 1).unwrap(), ShardState { epoch: 1, start: 0, position: 5 });
    /// let b = (Shard::new(1, 2, 0, 1).unwrap(), ShardState { epoch: 1, start: 0, position: 4 });
    /// let merged = ShardState::merge(&[a, b]).unwrap();
    /// assert_eq!(merged, ShardState { epoch: 1, start: 9, position: 0 });
    /// ```
    pub fn merge(states: &[(Shard, ShardState)]) -> Result<ShardState> {
        let (first_shard, first) = states
            .first()
            .ok_or_else(|| Error::invalid_input("cannot merge the states of zero shards"))?;
        let count = first_shard.count();
        if states.len() as u64 != count {
            return Err(Error::invalid_input(format!(
                "expected the states of all {count} shards, got {}",
                states.len()
            )));
        }
        let mut seen = vec![false; count as usize];
        let mut consumed = 0u64;
        for (shard, st) in states {
            shard.validate()?;
            if shard.world_size != first_shard.world_size
                || shard.num_workers != first_shard.num_workers
            {
                return Err(Error::invalid_input(
                    "shard states come from jobs of different sizes",
                ));
            }
            if st.epoch != first.epoch || st.start != first.start {
                return Err(Error::invalid_input(format!(
                    "shard {} is at epoch {} start {}, shard {} at epoch {} start {}",
                    shard.id(),
                    st.epoch,
                    st.start,
                    first_shard.id(),
                    first.epoch,
                    first.start
                )));
            }
            if std::mem::replace(&mut seen[shard.id() as usize], true) {
                return Err(Error::invalid_input(format!(
                    "shard {} given twice",
                    shard.id()
                )));
            }
            consumed += st.position;
        }
        for (shard, st) in states {
            let expect = consumed.saturating_sub(shard.id()).div_ceil(count);
            if st.position != expect {
                return Err(Error::invalid_input(format!(
                    "shard {} has yielded {} items but a consistent checkpoint needs {expect}: \
                     the shards are out of step",
                    shard.id(),
                    st.position
                )));
            }
        }
        Ok(ShardState {
            epoch: first.epoch,
            start: first.start + consumed,
            position: 0,
        })
    }
}

/// The lazy stream of one shard's items in one epoch, from a saved [`ShardState`].
///
/// ```
/// use cellarrow::sample::{Cohort, RandomCells, Sampler, Shard, ShardPolicy, ShardState, ShardStream};
/// let s = RandomCells::new(Cohort::all(100), 7);
/// let shard = Shard::new(0, 4, 0, 1).unwrap();
/// let mut st = ShardStream::new(&s, shard, ShardPolicy::Even, ShardState::epoch_start(0)).unwrap();
/// let first: Vec<u64> = st.by_ref().take(10).collect();
/// let saved = st.state();
/// let rest: Vec<u64> = st.collect();
/// let resumed: Vec<u64> = ShardStream::new(&s, shard, ShardPolicy::Even, saved).unwrap().collect();
/// assert_eq!(rest, resumed);
/// assert_eq!(first.len() + rest.len(), 25);
/// ```
pub struct ShardStream<'a, S: Sampler + ?Sized> {
    sampler: &'a S,
    epoch: u64,
    layout: Layout,
    start: u64,
    pos: u64,
}

impl<'a, S: Sampler + ?Sized> ShardStream<'a, S> {
    /// The stream of `shard` continuing from `state`.
    pub fn new(
        sampler: &'a S,
        shard: Shard,
        policy: ShardPolicy,
        state: ShardState,
    ) -> Result<Self> {
        let n = sampler.epoch_len(state.epoch);
        let layout = Layout::new(n, state.start, shard, policy)?;
        Ok(ShardStream {
            sampler,
            epoch: state.epoch,
            layout,
            start: state.start,
            pos: state.position,
        })
    }
    /// The state to save: restoring it continues with the next item.
    pub fn state(&self) -> ShardState {
        ShardState {
            epoch: self.epoch,
            start: self.start,
            position: self.pos,
        }
    }
    /// The shard's layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }
    /// Global position of the next item, if any.
    pub fn next_global(&self) -> Option<u64> {
        (self.pos < self.layout.len()).then(|| self.layout.global(self.pos))
    }
}

impl<S: Sampler + ?Sized> Iterator for ShardStream<'_, S> {
    type Item = S::Item;
    fn next(&mut self) -> Option<S::Item> {
        let g = self.next_global()?;
        self.pos += 1;
        Some(self.sampler.item(self.epoch, g))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let r = self.layout.len().saturating_sub(self.pos) as usize;
        (r, Some(r))
    }
    fn nth(&mut self, n: usize) -> Option<S::Item> {
        self.pos = self.pos.saturating_add(n as u64);
        self.next()
    }
}

impl<S: Sampler + ?Sized> ExactSizeIterator for ShardStream<'_, S> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_shards_are_errors() {
        assert!(Shard::new(0, 0, 0, 1).is_err());
        assert!(Shard::new(0, 1, 0, 0).is_err());
        assert!(Shard::new(1, 1, 0, 1).is_err());
        assert!(Shard::new(0, 1, 1, 1).is_err());
        let e = Shard::new(3, 2, 0, 1).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidInput);
        assert!(e.message().contains("rank 3"));
    }

    #[test]
    fn layouts_partition() {
        for n in 0..40u64 {
            for g in 1..9u32 {
                let mut all = Vec::new();
                let mut lens = Vec::new();
                for r in 0..g {
                    let l = Layout::new(n, 0, Shard::new(r, g, 0, 1).unwrap(), ShardPolicy::Even)
                        .unwrap();
                    lens.push(l.len());
                    all.extend((0..l.len()).map(|i| l.global(i)));
                }
                all.sort_unstable();
                assert_eq!(all, (0..n).collect::<Vec<_>>());
                assert!(lens.iter().max().unwrap() - lens.iter().min().unwrap() <= 1);
                for pol in [ShardPolicy::DropLast, ShardPolicy::Pad] {
                    let ls: Vec<u64> = (0..g)
                        .map(|r| {
                            Layout::new(n, 0, Shard::new(r, g, 0, 1).unwrap(), pol)
                                .unwrap()
                                .len()
                        })
                        .collect();
                    assert!(ls.iter().all(|&x| x == ls[0]));
                }
            }
        }
    }

    #[test]
    fn merge_rejects_out_of_step() {
        let s0 = Shard::new(0, 2, 0, 1).unwrap();
        let s1 = Shard::new(1, 2, 0, 1).unwrap();
        let st = |p| ShardState {
            epoch: 0,
            start: 0,
            position: p,
        };
        assert!(ShardState::merge(&[(s0, st(3)), (s1, st(5))]).is_err());
        assert!(ShardState::merge(&[(s0, st(3))]).is_err());
        assert!(ShardState::merge(&[(s0, st(3)), (s0, st(3))]).is_err());
        assert_eq!(
            ShardState::merge(&[(s0, st(3)), (s1, st(3))])
                .unwrap()
                .start,
            6
        );
    }
}
