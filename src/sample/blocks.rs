//! Spatial blocks: square (2-D) or cubic (3-D) blocks of tissue with a size and a stride.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

use super::grid::{BlockGrid, Extent};
use super::group::{epoch_order_at, SpatialItem};
use super::rng::hash_words;
use super::{Bounds, Cohort, Group, GroupKey, SampleIndex, Sampler};

const TAG_BLOCK_ORDER: u64 = 0x0062_6C6F_636B; // "block"
const TAG_BLOCK_DOWN: u64 = 0x626C_6B64; // "blkd"

/// Settings of [`SpatialBlocks`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockConfig {
    /// Edge length of a block, in coordinate units (> 0).
    pub size: f64,
    /// Distance between the lower corners of neighbouring blocks (> 0). Default `size`
    /// (a tiling); `stride < size` gives overlapping blocks (a cell can be in several), and
    /// `stride > size` leaves gaps (cells in a gap belong to no block).
    pub stride: Option<f64>,
    /// `None`: each sample's own dimensionality (squares for 2-D samples, cubes for 3-D).
    /// `Some(2)`: squares everywhere (z ignored). `Some(3)`: cubes, 2-D samples are skipped.
    /// Block ids equal those of the SQL `blocks()` function with `None` (and with a value
    /// equal to every sample's own dimensionality).
    pub dims: Option<u8>,
    /// Blocks with fewer cohort cells are dropped (at least 1).
    pub min_cells: usize,
    /// Blocks with more cells are downsampled to this many, seeded by (seed, epoch, block).
    pub max_cells: Option<usize>,
    /// Attach the cells' coordinates to each group.
    pub with_coords: bool,
    /// Also attach coordinates normalised to the block: `(x - min) / size`, in `[0, 1)`.
    pub normalize: bool,
    /// Seed of the stream.
    pub seed: u64,
    /// Only these blocks, as `(sample_id, block_id)` pairs (block ids of the sample's
    /// [`BlockGrid`]), for example the rows of
    /// `SELECT sample_id, block_id FROM blocks(size) WHERE ...`; `None`: every block. A
    /// selected block still needs `min_cells` cohort cells to be kept. Set with
    /// [`BlockConfig::only`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only: Option<Vec<(String, u64)>>,
}

impl BlockConfig {
    /// Tiling blocks of edge `size`, at least one cell each, coordinates attached.
    pub fn new(size: f64, seed: u64) -> BlockConfig {
        BlockConfig {
            size,
            stride: None,
            dims: None,
            min_cells: 1,
            max_cells: None,
            with_coords: true,
            normalize: false,
            seed,
            only: None,
        }
    }

    /// Restricts the sampler to the blocks `(sample_id, block_id)` (duplicates are ignored).
    ///
    /// ```
    /// use cellarrow::sample::BlockConfig;
    /// let cfg = BlockConfig::new(500.0, 0).only([("s1", 3), ("s1", 7), ("s2", 0)]);
    /// assert_eq!(cfg.only.as_ref().unwrap().len(), 3);
    /// ```
    pub fn only<S: Into<String>>(mut self, blocks: impl IntoIterator<Item = (S, u64)>) -> Self {
        self.only = Some(blocks.into_iter().map(|(s, b)| (s.into(), b)).collect());
        self
    }
}

#[derive(Debug, Clone, Copy)]
struct BlockInfo {
    sample: u32,
    id: u64,
    bounds: Bounds,
}

/// Spatial blocks as groups; items are [`Group`]s with `key = GroupKey::Block(id)`, where
/// `id` is the block's id in its sample's grid ([`BlockGrid`]), and the block's bounds.
///
/// Every spatial sample has one grid ([`crate::sample::block_grid`]), anchored at the
/// minimum finite coordinates over *all* the sample's cells (not only the cohort's), the same
/// grid as the SQL `blocks(size, stride)` table function: `(sample_id, block_id)` from SQL
/// names the same block here, whatever the cohort. Block `(i, j[, l])` is the half-open box
/// `[min + i*stride, min + i*stride + size)` per axis, and there are as many blocks per axis
/// as needed to cover the maximum. Cells with a non-finite coordinate belong to no block.
/// [`BlockConfig::only`] restricts the sampler to selected blocks.
///
/// Building costs O(sample cells + cohort cells + blocks) (a counting sort by block id; a sort
/// of the memberships when the grid is much larger than the cells), and memory is one `u64`
/// per (cell, block) membership plus the block list. An epoch visits every kept block once,
/// in a fresh order (a keyed [`Permutation`] of the blocks). A block's cells are in id order,
/// which within a sample is storage (Z-) order.
///
/// Kept blocks are numbered `0..len()` in (sample, block id) order; [`SpatialBlocks::block`],
/// [`SpatialBlocks::block_id`] and [`SpatialBlocks::block_cells`] take that number, and
/// [`SpatialBlocks::position`] finds it from `(sample, block id)`.
///
/// ```
/// use cellarrow::sample::*;
/// let coords: Vec<[f64; 3]> = (0..100).map(|i| [(i % 10) as f64, (i / 10) as f64, f64::NAN]).collect();
/// let idx = SampleIndex::new(vec![SampleRange { sample_id: "t".into(), first_cell: 0, n_cells: 100, spatial_dims: 2 }])
///     .unwrap().with_coords(coords).unwrap();
/// let b = SpatialBlocks::new(&idx, Cohort::all(100), BlockConfig::new(5.0, 0)).unwrap();
/// assert_eq!(b.len(), 4);
/// let g = b.item(0, 0);
/// assert_eq!(g.cells.len(), 25);
/// assert_eq!(g.bounds.unwrap().max[0] - g.bounds.unwrap().min[0], 5.0);
/// // Only block 3 (x in [5, 10), y in [5, 10)) of sample "t".
/// let one = SpatialBlocks::new(&idx, Cohort::all(100), BlockConfig::new(5.0, 0).only([("t", 3)])).unwrap();
/// assert_eq!(one.len(), 1);
/// assert_eq!(one.item(0, 0).key, GroupKey::Block(3));
/// assert_eq!(one.item(0, 0).cells[0], 55);
/// ```
#[derive(Debug, Clone)]
pub struct SpatialBlocks {
    blocks: Vec<BlockInfo>,
    offsets: Vec<u64>,
    cells: Vec<u64>,
    grids: Vec<Option<BlockGrid>>,
    coords: Arc<Vec<[f64; 3]>>,
    cfg: BlockConfig,
}

impl SpatialBlocks {
    /// Buckets the cohort's cells of every spatial sample into blocks. Errors
    /// (`InvalidInput`): no coordinates in `index`, `size` or `stride` not finite and > 0,
    /// `dims` not 2 or 3, `min_cells == 0`, `max_cells == Some(0)`, a grid too large to
    /// address; with [`BlockConfig::only`], a sample id that is not in `index` or not spatial
    /// (under `dims`), or a block id outside its sample's grid (a selection made with another
    /// block size or stride, or from another corpus).
    pub fn new(index: &SampleIndex, cohort: Cohort, cfg: BlockConfig) -> Result<SpatialBlocks> {
        let stride = cfg.stride.unwrap_or(cfg.size);
        if !(cfg.size.is_finite() && cfg.size > 0.0) {
            return Err(Error::invalid_input(format!(
                "block size must be finite and > 0, got {}",
                cfg.size
            )));
        }
        if !(stride.is_finite() && stride > 0.0) {
            return Err(Error::invalid_input(format!(
                "block stride must be finite and > 0, got {stride}"
            )));
        }
        if let Some(d) = cfg.dims {
            if d != 2 && d != 3 {
                return Err(Error::invalid_input(format!(
                    "block dims must be 2 or 3, got {d}"
                )));
            }
        }
        if cfg.min_cells == 0 {
            return Err(Error::invalid_input("min_cells must be at least 1"));
        }
        if cfg.max_cells == Some(0) {
            return Err(Error::invalid_input("max_cells must be at least 1"));
        }
        let coords = index.coords.clone().ok_or_else(|| {
            Error::invalid_input("spatial blocks need cell coordinates, but none were loaded")
        })?;
        // The selection per sample index: sorted, unique block ids.
        let selected: Option<Vec<Vec<u64>>> = match &cfg.only {
            None => None,
            Some(only) => {
                let by_id: HashMap<&str, usize> = index
                    .samples
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (s.sample_id.as_str(), i))
                    .collect();
                let mut per = vec![Vec::new(); index.samples.len()];
                for (sid, id) in only {
                    let si = *by_id.get(sid.as_str()).ok_or_else(|| {
                        Error::invalid_input(format!(
                            "block selection: sample {sid:?} is not in the corpus"
                        ))
                    })?;
                    per[si].push(*id);
                }
                for ids in &mut per {
                    ids.sort_unstable();
                    ids.dedup();
                }
                Some(per)
            }
        };
        let mut out = SpatialBlocks {
            blocks: vec![],
            offsets: vec![0],
            cells: vec![],
            grids: vec![None; index.samples.len()],
            coords,
            cfg,
        };
        for (si, s) in index.samples.iter().enumerate() {
            let only = selected.as_ref().map(|per| per[si].as_slice());
            let dims = match (s.spatial_dims, out.cfg.dims) {
                (0, _) | (2, Some(3)) => {
                    if let Some(&id) = only.and_then(|ids| ids.first()) {
                        return Err(Error::invalid_input(format!(
                            "block selection: block {id} of sample {:?}, which has no {} \
                             coordinates",
                            s.sample_id,
                            if s.spatial_dims == 0 {
                                "spatial"
                            } else {
                                "3-D"
                            }
                        )));
                    }
                    continue;
                }
                (sd, None) => sd,
                (_, Some(d)) => d,
            } as usize;
            if only.is_some_and(|ids| ids.is_empty()) {
                continue;
            }
            let mut extent = Extent::new(dims);
            let all = s.first_cell as usize..(s.first_cell + s.n_cells) as usize;
            for p in &out.coords[all] {
                extent.add(p);
            }
            let Some(grid) = extent.grid(out.cfg.size, stride)? else {
                if let Some(&id) = only.and_then(|ids| ids.first()) {
                    return Err(Error::invalid_input(format!(
                        "block selection: block {id} of sample {:?}, which has no cell with \
                         finite coordinates",
                        s.sample_id
                    )));
                }
                continue;
            };
            if let Some(&last) = only.and_then(|ids| ids.last()) {
                if last >= grid.n_blocks() {
                    return Err(Error::invalid_input(format!(
                        "block selection: block {last} of sample {:?} is outside its grid of {} \
                         blocks for size {} and stride {stride}; was the selection made with \
                         another block size or stride?",
                        s.sample_id,
                        grid.n_blocks(),
                        out.cfg.size
                    )));
                }
            }
            let r = cohort.range(s.first_cell, s.first_cell + s.n_cells);
            let cells: Vec<u64> = r.map(|p| cohort.at(p)).collect();
            out.bucket_sample(si as u32, &grid, &cells, only);
            out.grids[si] = Some(grid);
        }
        Ok(out)
    }

    /// Adds the blocks of one sample (those in `only` when given, a sorted id list).
    fn bucket_sample(
        &mut self,
        sample: u32,
        grid: &BlockGrid,
        cells: &[u64],
        only: Option<&[u64]>,
    ) {
        let d = grid.dims();
        let coords = Arc::clone(&self.coords);
        let for_each_key = |c: u64, f: &mut dyn FnMut(u64)| {
            grid.blocks_containing(&coords[c as usize][..d], |k| {
                if only.is_none_or(|ids| ids.binary_search(&k).is_ok()) {
                    f(k)
                }
            });
        };
        // Every (block, cell) membership, found once: finding a cell's blocks is the costly part.
        let mut pairs: Vec<(u64, u64)> = Vec::with_capacity(cells.len());
        for &c in cells {
            for_each_key(c, &mut |k| pairs.push((k, c)));
        }
        let members = pairs.len() as u64;
        let n_blocks = grid.n_blocks();
        // (key, first, count) of every non-empty block, in key order; cells placed after.
        let base = self.cells.len();
        let mut runs: Vec<(u64, usize, usize)> = Vec::new();
        // The counting sort's u32 counts hold a sample's members only below 2^32.
        if n_blocks <= 4 * members + 4096 && members < u32::MAX as u64 {
            // Counting sort by block: stable, so each block keeps its cells in cohort order.
            let mut counts = vec![0u32; n_blocks as usize + 1];
            for &(k, _) in &pairs {
                counts[k as usize + 1] += 1;
            }
            let mut acc = 0usize;
            for k in 0..n_blocks as usize {
                let cnt = counts[k + 1] as usize;
                if cnt > 0 {
                    runs.push((k as u64, base + acc, cnt));
                }
                counts[k + 1] = acc as u32;
                acc += cnt;
            }
            self.cells.resize(base + acc, 0);
            for &(k, c) in &pairs {
                let slot = &mut counts[k as usize + 1];
                self.cells[base + *slot as usize] = c;
                *slot += 1;
            }
        } else {
            pairs.sort_unstable();
            let mut i = 0;
            while i < pairs.len() {
                let k = pairs[i].0;
                let j = i + pairs[i..].partition_point(|p| p.0 == k);
                runs.push((k, base + i, j - i));
                i = j;
            }
            self.cells.extend(pairs.iter().map(|p| p.1));
        }
        // Compact: keep blocks with at least min_cells cells.
        let mut write = base;
        for (id, first, cnt) in runs {
            if cnt < self.cfg.min_cells {
                continue;
            }
            self.cells.copy_within(first..first + cnt, write);
            write += cnt;
            self.offsets.push(write as u64);
            self.blocks.push(BlockInfo {
                sample,
                id,
                bounds: grid.block_bounds(id),
            });
        }
        self.cells.truncate(write);
    }

    /// Number of blocks kept.
    pub fn len(&self) -> u64 {
        self.blocks.len() as u64
    }
    /// True when no block was kept.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }
    /// Sample index and bounds of kept block `i < len()`.
    pub fn block(&self, i: u64) -> (u32, Bounds) {
        let b = &self.blocks[i as usize];
        (b.sample, b.bounds)
    }
    /// Sample index and grid block id (the `id` of `GroupKey::Block(id)`) of kept block
    /// `i < len()`.
    pub fn block_id(&self, i: u64) -> (u32, u64) {
        let b = &self.blocks[i as usize];
        (b.sample, b.id)
    }
    /// The kept-block number of block `block_id` of sample index `sample`, if it was kept.
    pub fn position(&self, sample: u32, block_id: u64) -> Option<u64> {
        self.blocks
            .binary_search_by(|b| (b.sample, b.id).cmp(&(sample, block_id)))
            .ok()
            .map(|i| i as u64)
    }
    /// All cohort cells of kept block `i < len()`, in id order (before downsampling).
    pub fn block_cells(&self, i: u64) -> &[u64] {
        &self.cells[self.offsets[i as usize] as usize..self.offsets[i as usize + 1] as usize]
    }
    /// The block grid of sample index `sample`, `None` for a sample without blocks (not
    /// spatial, no finite coordinates, or not selected).
    pub fn grid(&self, sample: u32) -> Option<&BlockGrid> {
        self.grids.get(sample as usize).and_then(Option::as_ref)
    }
}

impl Sampler for SpatialBlocks {
    type Item = Group;

    fn epoch_len(&self, _epoch: u64) -> u64 {
        self.len()
    }

    fn item(&self, epoch: u64, pos: u64) -> Group {
        let b = epoch_order_at(self.len(), self.cfg.seed, epoch, TAG_BLOCK_ORDER, pos);
        let info = self.blocks[b as usize];
        SpatialItem {
            cells: self.block_cells(b),
            sample: info.sample,
            key: GroupKey::Block(info.id),
            bounds: Some(info.bounds),
            coords: self
                .cfg
                .with_coords
                .then_some((&self.coords[..], info.bounds.dims)),
        }
        // Seeded by the block itself, so a block is downsampled alike with or without `only`.
        .group(
            self.cfg.max_cells,
            hash_words(&[
                self.cfg.seed,
                epoch,
                info.sample as u64,
                info.id,
                TAG_BLOCK_DOWN,
            ]),
            self.cfg.normalize,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::rng::Rng;
    use crate::sample::SampleRange;

    fn index(coords: Vec<[f64; 3]>, dims: u8) -> SampleIndex {
        let n = coords.len() as u64;
        SampleIndex::new(vec![SampleRange {
            sample_id: "t".into(),
            first_cell: 0,
            n_cells: n,
            spatial_dims: dims,
        }])
        .unwrap()
        .with_coords(coords)
        .unwrap()
    }

    /// Membership by brute force: every grid block tested against every cell.
    fn brute(coords: &[[f64; 3]], size: f64, stride: f64, d: usize) -> Vec<Vec<u64>> {
        let fin: Vec<usize> = (0..coords.len())
            .filter(|&i| coords[i][..d].iter().all(|v| v.is_finite()))
            .collect();
        let mut lo = [f64::INFINITY; 3];
        let mut hi = [f64::NEG_INFINITY; 3];
        for &i in &fin {
            for a in 0..d {
                lo[a] = lo[a].min(coords[i][a]);
                hi[a] = hi[a].max(coords[i][a]);
            }
        }
        let mut out = Vec::new();
        let n: Vec<u64> = (0..3)
            .map(|a| {
                if a >= d || hi[a] - lo[a] < size {
                    1
                } else {
                    ((hi[a] - lo[a] - size) / stride).floor() as u64 + 2
                }
            })
            .collect();
        for i in 0..n[0] {
            for j in 0..n[1] {
                for l in 0..n[2] {
                    let idx = [i, j, l];
                    let cells: Vec<u64> = fin
                        .iter()
                        .filter(|&&c| {
                            (0..d).all(|a| {
                                let s = lo[a] + idx[a] as f64 * stride;
                                coords[c][a] >= s && coords[c][a] < s + size
                            })
                        })
                        .map(|&c| c as u64)
                        .collect();
                    if !cells.is_empty() {
                        out.push(cells);
                    }
                }
            }
        }
        out
    }

    #[test]
    fn matches_brute_force() {
        let mut rng = Rng::new(11);
        for (d, size, stride) in [
            (2, 3.0, 3.0),
            (2, 3.0, 1.5),
            (2, 2.0, 5.0),
            (3, 4.0, 2.5),
            (2, 0.7, 0.7),
            (3, 100.0, 100.0),
        ] {
            let coords: Vec<[f64; 3]> = (0..400)
                .map(|i| {
                    if i % 37 == 0 {
                        [f64::NAN, 1.0, 1.0]
                    } else {
                        [
                            rng.unit() * 20.0,
                            (rng.below(10) as f64) * 1.5,
                            rng.unit() * 10.0 - 5.0,
                        ]
                    }
                })
                .collect();
            let idx = index(coords.clone(), d as u8);
            let mut cfg = BlockConfig::new(size, 1);
            cfg.stride = Some(stride);
            let b = SpatialBlocks::new(&idx, Cohort::all(400), cfg).unwrap();
            let mut got: Vec<Vec<u64>> = (0..b.len()).map(|i| b.block_cells(i).to_vec()).collect();
            let mut want = brute(&coords, size, stride, d);
            got.sort();
            want.sort();
            assert_eq!(got, want, "d={d} size={size} stride={stride}");
            for i in 0..b.len() {
                let (_, bounds) = b.block(i);
                assert!(b
                    .block_cells(i)
                    .iter()
                    .all(|&c| bounds.contains(&coords[c as usize])));
            }
        }
    }

    /// Random 2-D coordinates, with a few non-finite ones.
    fn scattered(n: usize, seed: u64) -> Vec<[f64; 3]> {
        let mut rng = Rng::new(seed);
        (0..n)
            .map(|i| {
                if i % 31 == 7 {
                    [f64::INFINITY, 1.0, f64::NAN]
                } else {
                    [rng.unit() * 50.0 - 10.0, rng.unit() * 30.0, f64::NAN]
                }
            })
            .collect()
    }

    #[test]
    fn block_ids_do_not_depend_on_the_cohort() {
        let coords = scattered(500, 5);
        let idx = index(coords.clone(), 2);
        let cfg = BlockConfig::new(7.0, 2);
        let full = SpatialBlocks::new(&idx, Cohort::all(500), cfg.clone()).unwrap();
        // A cohort without the cells at the extremes: the grid stays anchored on all cells.
        let cohort = Cohort::from_cells((0..500).filter(|c| c % 3 != 0 && c % 5 != 1).collect());
        let part = SpatialBlocks::new(&idx, cohort.clone(), cfg).unwrap();
        assert_eq!(part.grid(0), full.grid(0));
        let origin = full.grid(0).unwrap().origin().to_vec();
        let finite: Vec<&[f64; 3]> = coords.iter().filter(|p| p[0].is_finite()).collect();
        let min_x = finite.iter().map(|p| p[0]).fold(f64::INFINITY, f64::min);
        let min_y = finite.iter().map(|p| p[1]).fold(f64::INFINITY, f64::min);
        assert_eq!(origin, [min_x, min_y]);
        for i in 0..part.len() {
            let (sample, id) = part.block_id(i);
            let j = full
                .position(sample, id)
                .expect("a block of the cohort is a block of all");
            let want: Vec<u64> = full
                .block_cells(j)
                .iter()
                .copied()
                .filter(|&c| cohort.contains(c))
                .collect();
            assert_eq!(part.block_cells(i), want);
            assert_eq!(part.block(i).1, full.block(j).1);
        }
        // Keys are grid ids, served with the block's bounds.
        for p in 0..part.len() {
            let g = part.item(1, p);
            let GroupKey::Block(id) = g.key else { panic!() };
            assert_eq!(g.bounds, Some(full.grid(0).unwrap().block_bounds(id)));
        }
    }

    #[test]
    fn only_serves_the_selected_blocks() {
        let coords = scattered(400, 9);
        let idx = index(coords, 2);
        let mut cfg = BlockConfig::new(6.0, 4);
        cfg.stride = Some(4.0);
        cfg.max_cells = Some(5);
        let full = SpatialBlocks::new(&idx, Cohort::all(400), cfg.clone()).unwrap();
        let n_blocks = full.grid(0).unwrap().n_blocks();
        // Every third kept block, plus an empty block (ids of the grid without cells).
        let mut picked: Vec<u64> = (0..full.len())
            .step_by(3)
            .map(|i| full.block_id(i).1)
            .collect();
        let empty = (0..n_blocks).find(|&id| full.position(0, id).is_none());
        let sel: Vec<(&str, u64)> = picked
            .iter()
            .chain(empty.iter())
            .map(|&id| ("t", id))
            .collect();
        let only = SpatialBlocks::new(&idx, Cohort::all(400), cfg.clone().only(sel)).unwrap();
        assert_eq!(only.len() as usize, picked.len());
        let mut served: Vec<u64> = (0..only.len())
            .map(|p| {
                let g = only.item(2, p);
                let GroupKey::Block(id) = g.key else { panic!() };
                let j = full.position(0, id).unwrap();
                assert_eq!(
                    only.block_cells(only.position(0, id).unwrap()),
                    full.block_cells(j)
                );
                // Downsampling is keyed by the block, not by its position in the sampler.
                let same = (0..full.len())
                    .map(|q| full.item(2, q))
                    .find(|h| h.key == g.key);
                assert_eq!(same.unwrap().cells, g.cells);
                id
            })
            .collect();
        served.sort_unstable();
        picked.sort_unstable();
        assert_eq!(served, picked);

        // Errors: unknown sample, a block outside the grid.
        let e = SpatialBlocks::new(&idx, Cohort::all(400), cfg.clone().only([("nope", 0)]))
            .unwrap_err();
        assert!(
            e.to_string().contains("\"nope\" is not in the corpus"),
            "{e}"
        );
        let e = SpatialBlocks::new(&idx, Cohort::all(400), cfg.clone().only([("t", n_blocks)]))
            .unwrap_err();
        assert!(e.to_string().contains("outside its grid"), "{e}");
        // An empty selection serves nothing.
        let none: Vec<(String, u64)> = vec![];
        assert!(SpatialBlocks::new(&idx, Cohort::all(400), cfg.only(none))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn only_refuses_blocks_of_non_spatial_samples() {
        let idx = SampleIndex::new(vec![SampleRange {
            sample_id: "flat".into(),
            first_cell: 0,
            n_cells: 3,
            spatial_dims: 0,
        }])
        .unwrap()
        .with_coords(vec![[f64::NAN; 3]; 3])
        .unwrap();
        let e = SpatialBlocks::new(
            &idx,
            Cohort::all(3),
            BlockConfig::new(1.0, 0).only([("flat", 0)]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("no spatial coordinates"), "{e}");
    }

    #[test]
    fn sparse_grid_path_matches() {
        // Two far-apart clusters: the grid is much larger than the cells.
        let coords: Vec<[f64; 3]> = (0..50)
            .map(|i| {
                if i < 25 {
                    [i as f64 * 0.01, 0.0, 0.0]
                } else {
                    [1e6 + i as f64 * 0.01, 1e6, 0.0]
                }
            })
            .collect();
        let idx = index(coords.clone(), 2);
        let b = SpatialBlocks::new(&idx, Cohort::all(50), BlockConfig::new(1.0, 0)).unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b.block_cells(0), &(0..25).collect::<Vec<_>>()[..]);
    }

    #[test]
    fn min_max_and_normalise() {
        let coords: Vec<[f64; 3]> = (0..100)
            .map(|i| [(i % 10) as f64, (i / 10) as f64, 0.0])
            .collect();
        let idx = index(coords, 2);
        let mut cfg = BlockConfig::new(4.0, 3);
        cfg.min_cells = 10;
        cfg.max_cells = Some(12);
        cfg.normalize = true;
        let b = SpatialBlocks::new(&idx, Cohort::all(100), cfg).unwrap();
        // Blocks 4x4 (16 cells), 4x2 (8: dropped), 2x2 (4: dropped): 4 of 4x4, 4 of 4x2 on edges.
        assert_eq!(b.len(), 4);
        for p in 0..4 {
            let g = b.item(5, p);
            assert_eq!(g.cells.len(), 12);
            assert!(g
                .normalized
                .as_ref()
                .unwrap()
                .iter()
                .all(|&v| (0.0..1.0).contains(&v)));
            assert_eq!(g.coords.as_ref().unwrap().len(), 24);
        }
        assert_ne!(b.item(5, 0).cells, b.item(6, 0).cells);
    }

    /// The issue's target: 1,000,000 cells and 10,000 blocks, first group in under a second.
    /// Asserted in optimised builds; unoptimised test builds only report the time.
    #[test]
    fn first_group_latency_at_one_million_cells() {
        let n = 1_000_000u64;
        let mut rng = Rng::new(1);
        let coords: Vec<[f64; 3]> = (0..n)
            .map(|_| [rng.unit() * 1000.0, rng.unit() * 1000.0, f64::NAN])
            .collect();
        let idx = index(coords, 2);
        let t = std::time::Instant::now();
        let b = SpatialBlocks::new(&idx, Cohort::all(n), BlockConfig::new(10.0, 0)).unwrap();
        let g = b.item(0, 0);
        let dt = t.elapsed();
        eprintln!(
            "1e6 cells, {} blocks: first group of {} cells after {dt:?}",
            b.len(),
            g.cells.len()
        );
        assert_eq!(b.len(), 10_000);
        assert_eq!(
            (0..b.len())
                .map(|i| b.block_cells(i).len() as u64)
                .sum::<u64>(),
            n
        );
        if !cfg!(debug_assertions) {
            assert!(dt.as_secs_f64() < 1.0, "{dt:?}");
        }
    }

    #[test]
    fn bad_settings() {
        let idx = index(vec![[0.0; 3]], 2);
        for (size, stride) in [
            (0.0, None),
            (-1.0, None),
            (f64::NAN, None),
            (1.0, Some(0.0)),
        ] {
            let mut cfg = BlockConfig::new(size, 0);
            cfg.stride = stride;
            let e = SpatialBlocks::new(&idx, Cohort::all(1), cfg).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidInput);
        }
        let no_coords = SampleIndex::new(vec![]).unwrap();
        assert!(SpatialBlocks::new(&no_coords, Cohort::all(0), BlockConfig::new(1.0, 0)).is_err());
    }
}
