//! Spatial blocks: square (2-D) or cubic (3-D) blocks of tissue with a size and a stride.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

use super::regions::downsample;
use super::rng::hash_words;
use super::{Bounds, Cohort, Group, GroupKey, Permutation, SampleIndex, Sampler};

const TAG_BLOCK_ORDER: u64 = 0x626C_6F63_6B; // "block"
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
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct BlockInfo {
    sample: u32,
    bounds: Bounds,
}

/// Spatial blocks as groups; items are [`Group`]s with `key = GroupKey::Block(i)` and the
/// block's bounds.
///
/// For every spatial sample, the grid starts at the minimum finite coordinate of the
/// sample's cohort cells; block `(i, j[, l])` is the half-open box
/// `[min + i*stride, min + i*stride + size)` per axis, and there are as many blocks per axis as
/// needed to cover the maximum. Cells with a non-finite coordinate belong to no block.
/// Building costs O(cells + blocks) (a counting sort by block key; a sort of the memberships
/// when the grid is much larger than the cells), and memory is one `u64` per (cell, block)
/// membership plus the block list. An epoch visits every kept block once, in a fresh order
/// (a keyed [`Permutation`] of the blocks). A block's cells are in id order, which within a
/// sample is storage (Z-) order.
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
/// ```
#[derive(Debug, Clone)]
pub struct SpatialBlocks {
    blocks: Vec<BlockInfo>,
    offsets: Vec<u64>,
    cells: Vec<u64>,
    coords: Arc<Vec<[f64; 3]>>,
    cfg: BlockConfig,
}

impl SpatialBlocks {
    /// Buckets the cohort's cells of every spatial sample into blocks. Errors
    /// (`InvalidInput`): no coordinates in `index`, `size` or `stride` not finite and > 0,
    /// `dims` not 2 or 3, `min_cells == 0`, `max_cells == Some(0)`, a grid too large to
    /// address.
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
        let mut out = SpatialBlocks {
            blocks: vec![],
            offsets: vec![0],
            cells: vec![],
            coords,
            cfg,
        };
        for (si, s) in index.samples.iter().enumerate() {
            let dims = match (s.spatial_dims, out.cfg.dims) {
                (0, _) => continue,
                (2, Some(3)) => continue,
                (sd, None) => sd,
                (_, Some(d)) => d,
            };
            let r = cohort.range(s.first_cell, s.first_cell + s.n_cells);
            let cells: Vec<u64> = r.map(|p| cohort.at(p)).collect();
            out.bucket_sample(si as u32, dims as usize, &cells, stride)?;
        }
        Ok(out)
    }

    fn bucket_sample(&mut self, sample: u32, d: usize, cells: &[u64], stride: f64) -> Result<()> {
        let size = self.cfg.size;
        let coords = Arc::clone(&self.coords);
        let finite = |c: u64| coords[c as usize][..d].iter().all(|v| v.is_finite());
        let mut lo = [f64::INFINITY; 3];
        let mut hi = [f64::NEG_INFINITY; 3];
        for &c in cells {
            if finite(c) {
                let p = &coords[c as usize];
                for a in 0..d {
                    lo[a] = lo[a].min(p[a]);
                    hi[a] = hi[a].max(p[a]);
                }
            }
        }
        if !lo[0].is_finite() {
            return Ok(());
        }
        let mut n = [1u64; 3];
        let mut grid = 1u64;
        for a in 0..d {
            let ext = hi[a] - lo[a];
            let na = if ext < size {
                1.0
            } else {
                ((ext - size) / stride).floor() + 2.0
            };
            if !(na < (1u64 << 40) as f64) {
                return Err(Error::invalid_input(format!(
                    "block grid too large: {na} blocks along axis {a} (extent {ext}, stride {stride})"
                )));
            }
            n[a] = na as u64;
            grid = grid.checked_mul(n[a]).ok_or_else(|| {
                Error::invalid_input(format!(
                    "block grid too large for size {size} and stride {stride}"
                ))
            })?;
        }
        // Block index range of one coordinate along axis a (exact test against the bounds).
        let start = |a: usize, i: u64| lo[a] + i as f64 * stride;
        let span = |a: usize, x: f64| -> (u64, u64) {
            let t = (x - lo[a]) / stride;
            let mut i1 = (t.floor().max(0.0) as u64).min(n[a] - 1);
            while i1 + 1 < n[a] && start(a, i1 + 1) <= x {
                i1 += 1;
            }
            while i1 > 0 && start(a, i1) > x {
                i1 -= 1;
            }
            let mut i0 = i1;
            while i0 > 0 && start(a, i0 - 1) + size > x {
                i0 -= 1;
            }
            if !(start(a, i1) <= x && x < start(a, i1) + size) {
                return (1, 0); // in a gap
            }
            while i0 < i1 && !(x < start(a, i0) + size) {
                i0 += 1;
            }
            (i0, i1)
        };
        let for_each_key = |c: u64, f: &mut dyn FnMut(u64)| {
            let p = &coords[c as usize];
            let mut r = [(0u64, 0u64); 3];
            for a in 0..d {
                r[a] = span(a, p[a]);
                if r[a].0 > r[a].1 {
                    return;
                }
            }
            for i in r[0].0..=r[0].1 {
                for j in r[1].0..=r[1].1 {
                    for l in r[2].0..=r[2].1 {
                        f((i * n[1] + j) * n[2] + l);
                    }
                }
            }
        };
        let valid: Vec<u64> = cells.iter().copied().filter(|&c| finite(c)).collect();
        let mut members = 0u64;
        for &c in &valid {
            for_each_key(c, &mut |_| members += 1);
        }
        // (key, first, count) of every non-empty block, in key order; cells placed after.
        let base = self.cells.len();
        let mut runs: Vec<(u64, usize, usize)> = Vec::new();
        if grid <= 4 * members + 4096 {
            let mut counts = vec![0u32; grid as usize + 1];
            for &c in &valid {
                for_each_key(c, &mut |k| counts[k as usize + 1] += 1);
            }
            let mut acc = 0usize;
            for k in 0..grid as usize {
                let cnt = counts[k + 1] as usize;
                if cnt > 0 {
                    runs.push((k as u64, base + acc, cnt));
                }
                counts[k + 1] = acc as u32;
                acc += cnt;
            }
            self.cells.resize(base + acc, 0);
            for &c in &valid {
                for_each_key(c, &mut |k| {
                    let slot = &mut counts[k as usize + 1];
                    self.cells[base + *slot as usize] = c;
                    *slot += 1;
                });
            }
        } else {
            let mut pairs: Vec<(u64, u64)> = Vec::with_capacity(members as usize);
            for &c in &valid {
                for_each_key(c, &mut |k| pairs.push((k, c)));
            }
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
        for (k, first, cnt) in runs {
            if cnt < self.cfg.min_cells {
                continue;
            }
            self.cells.copy_within(first..first + cnt, write);
            write += cnt;
            self.offsets.push(write as u64);
            let idx = [k / (n[1] * n[2]), (k / n[2]) % n[1], k % n[2]];
            let mut min = [0.0; 3];
            let mut max = [0.0; 3];
            for a in 0..d {
                min[a] = start(a, idx[a]);
                max[a] = min[a] + size;
            }
            self.blocks.push(BlockInfo {
                sample,
                bounds: Bounds {
                    dims: d as u8,
                    min,
                    max,
                },
            });
        }
        self.cells.truncate(write);
        Ok(())
    }

    /// Number of blocks kept.
    pub fn len(&self) -> u64 {
        self.blocks.len() as u64
    }
    /// True when no block was kept.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }
    /// Sample index and bounds of block `i` (the `i` of `GroupKey::Block(i)`).
    pub fn block(&self, i: u64) -> (u32, Bounds) {
        let b = &self.blocks[i as usize];
        (b.sample, b.bounds)
    }
    /// All cohort cells of block `i`, in id order (before downsampling).
    pub fn block_cells(&self, i: u64) -> &[u64] {
        &self.cells[self.offsets[i as usize] as usize..self.offsets[i as usize + 1] as usize]
    }
}

impl Sampler for SpatialBlocks {
    type Item = Group;

    fn epoch_len(&self, _epoch: u64) -> u64 {
        self.len()
    }

    fn item(&self, epoch: u64, pos: u64) -> Group {
        let perm = Permutation::new(
            self.len(),
            hash_words(&[self.cfg.seed, epoch, TAG_BLOCK_ORDER]),
        );
        let b = perm.at(pos);
        let cells = downsample(
            self.block_cells(b),
            self.cfg.max_cells,
            hash_words(&[self.cfg.seed, epoch, b, TAG_BLOCK_DOWN]),
        );
        let info = self.blocks[b as usize];
        let mut g = Group::plain(cells, info.sample, GroupKey::Block(b));
        g.bounds = Some(info.bounds);
        if self.cfg.with_coords {
            g.attach_coords(&self.coords, info.bounds.dims, self.cfg.normalize);
        }
        g
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
                if a >= d {
                    1
                } else if hi[a] - lo[a] < size {
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
