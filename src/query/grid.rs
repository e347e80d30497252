//! The spatial block grid of one sample: the single definition of block ids and bounds.
//!
//! Shared by the `blocks(size, stride)` SQL table function and the block sampler, so that a
//! block id picked in SQL names the same cells when it is sampled. This file depends only on
//! `std` and [`crate::error`] on purpose: it can be used (or moved) outside the `sql` feature.
//!
//! Geometry: per axis, block `k` covers `[origin + k * stride, origin + k * stride + size)`,
//! where `origin` is the minimum finite coordinate on that axis over the sample's cells whose
//! coordinates are finite on all its axes. Per axis the grid has `n` blocks, `k = 0 .. n`,
//! where block `n - 1` is the first whose upper bound passes the maximum `max`:
//! `n = 1` if `max - min < size`, else `floor((max - min - size) / stride) + 2` (the same
//! count as the block sampler). The block id is row-major with the last axis fastest:
//! `id = (kx * ny + ky) * nz + kz` (`nz = 1`, `kz = 0` in 2-D). With `stride < size` blocks
//! overlap and a cell lies in several; with `stride > size` there are gaps and a cell may lie
//! in none. Cells with a non-finite (NaN, infinite or missing) coordinate lie in no block.

use crate::error::{Error, Result};

/// The block grid of one spatial sample; see the [module docs](self) for the convention.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockGrid {
    dims: usize,
    origin: [f64; 3],
    size: f64,
    stride: f64,
    counts: [u64; 3],
}

/// The block grid of a sample whose finite coordinates span `min ..= max` (2 or 3 axes).
///
/// `size` is the block edge, `stride` the step between block origins (`stride == size` tiles
/// the plane). Errors if the extents or sizes are not finite and positive, or if the grid
/// would have more than 2^64 blocks.
///
/// ```
/// use cellarrow::query::block_grid;
/// let grid = block_grid(&[0.0, 10.0], &[250.0, 90.0], 100.0, 100.0).unwrap();
/// assert_eq!(grid.counts(), &[3, 1]);
/// // x = 150 is in block column 1, y = 20 in row 0: id = 1 * 1 + 0.
/// let mut ids = Vec::new();
/// grid.blocks_containing(&[150.0, 20.0], |id| ids.push(id));
/// assert_eq!(ids, [1]);
/// let (lo, hi) = grid.bounds(1);
/// assert_eq!((lo[0], lo[1], hi[0], hi[1]), (100.0, 10.0, 200.0, 110.0));
/// ```
pub fn block_grid(min: &[f64], max: &[f64], size: f64, stride: f64) -> Result<BlockGrid> {
    let dims = min.len();
    if !(dims == 2 || dims == 3) || max.len() != dims {
        return Err(Error::invalid_input(format!(
            "block grid: expected 2 or 3 axes for min and max, got {} and {}",
            min.len(),
            max.len()
        )));
    }
    if !(size.is_finite() && size > 0.0) {
        return Err(Error::invalid_input(format!("block size must be a positive number, got {size}")));
    }
    if !(stride.is_finite() && stride > 0.0) {
        return Err(Error::invalid_input(format!(
            "block stride must be a positive number, got {stride}"
        )));
    }
    let mut origin = [0.0; 3];
    let mut counts = [1u64; 3];
    let mut total: u64 = 1;
    for a in 0..dims {
        if !(min[a].is_finite() && max[a].is_finite() && min[a] <= max[a]) {
            return Err(Error::invalid_input(format!(
                "block grid: bad extent on axis {a}: {} ..= {}",
                min[a], max[a]
            )));
        }
        origin[a] = min[a];
        let ext = max[a] - min[a];
        let n = if ext < size { 1.0 } else { ((ext - size) / stride).floor() + 2.0 };
        if !(n < (1u64 << 53) as f64) {
            return Err(too_many_blocks(size, stride));
        }
        counts[a] = n as u64;
        total = total.checked_mul(counts[a]).ok_or_else(|| too_many_blocks(size, stride))?;
    }
    Ok(BlockGrid { dims, origin, size, stride, counts })
}

fn too_many_blocks(size: f64, stride: f64) -> Error {
    Error::invalid_input(format!(
        "block grid with size {size} and stride {stride} has more than 2^64 blocks; use larger blocks"
    ))
}

/// Lower bound of block `k` on an axis; every bound and membership test goes through here so
/// that the bounds reported in SQL and the cells counted agree bit for bit.
#[inline]
fn lower(origin: f64, stride: f64, k: u64) -> f64 {
    origin + k as f64 * stride
}

impl BlockGrid {
    /// Number of axes (2 or 3).
    pub fn dims(&self) -> usize {
        self.dims
    }
    /// Block counts per axis (`dims` entries).
    pub fn counts(&self) -> &[u64] {
        &self.counts[..self.dims]
    }
    /// Total number of block ids (`0 .. n_blocks`), empty blocks included.
    pub fn n_blocks(&self) -> u64 {
        self.counts().iter().product()
    }
    /// The grid origin (the sample's minimum coordinates).
    pub fn origin(&self) -> &[f64] {
        &self.origin[..self.dims]
    }
    /// Block edge length.
    pub fn size(&self) -> f64 {
        self.size
    }
    /// Step between block origins.
    pub fn stride(&self) -> f64 {
        self.stride
    }

    /// The id of the block with per-axis indices `k` (last axis fastest). Panics if `k` is
    /// outside the grid.
    pub fn block_id(&self, k: &[u64]) -> u64 {
        assert_eq!(k.len(), self.dims, "block index has the wrong number of axes");
        let mut id = 0;
        for a in 0..self.dims {
            assert!(k[a] < self.counts[a], "block index {k:?} outside grid {:?}", self.counts());
            id = id * self.counts[a] + k[a];
        }
        id
    }

    /// Per-axis indices of block `id` (unused axes are 0). Panics if `id >= n_blocks()`.
    pub fn block_index(&self, id: u64) -> [u64; 3] {
        assert!(id < self.n_blocks(), "block id {id} outside grid {:?}", self.counts());
        let mut k = [0; 3];
        let mut rest = id;
        for a in (0..self.dims).rev() {
            k[a] = rest % self.counts[a];
            rest /= self.counts[a];
        }
        k
    }

    /// Bounds of block `id`: lower (inclusive) and upper (exclusive) corner; unused axes are 0.
    pub fn bounds(&self, id: u64) -> ([f64; 3], [f64; 3]) {
        let k = self.block_index(id);
        let mut lo = [0.0; 3];
        let mut hi = [0.0; 3];
        for a in 0..self.dims {
            lo[a] = lower(self.origin[a], self.stride, k[a]);
            hi[a] = lo[a] + self.size;
        }
        (lo, hi)
    }

    /// Whether block `id` contains `point` (`lo <= p < hi` on every axis).
    pub fn contains(&self, id: u64, point: &[f64]) -> bool {
        let (lo, hi) = self.bounds(id);
        (0..self.dims).all(|a| point.get(a).is_some_and(|&p| lo[a] <= p && p < hi[a]))
    }

    /// The inclusive range of block indices on `axis` whose interval contains `c`.
    fn axis_range(&self, axis: usize, c: f64) -> Option<(u64, u64)> {
        if !c.is_finite() {
            return None;
        }
        let (o, s, size, n) = (self.origin[axis], self.stride, self.size, self.counts[axis]);
        let d = c - o;
        if d < 0.0 {
            return None;
        }
        let upper = |k: u64| lower(o, s, k) + size;
        let mut hi = ((d / s).floor() as u64).min(n - 1);
        while hi > 0 && lower(o, s, hi) > c {
            hi -= 1;
        }
        while hi + 1 < n && lower(o, s, hi + 1) <= c {
            hi += 1;
        }
        if lower(o, s, hi) > c {
            return None;
        }
        let mut lo = if d < size { 0 } else { (((d - size) / s).floor() as u64 + 1).min(hi) };
        while lo > 0 && upper(lo - 1) > c {
            lo -= 1;
        }
        while lo <= hi && upper(lo) <= c {
            lo += 1;
        }
        (lo <= hi).then_some((lo, hi))
    }

    /// Calls `f` with the id of every block that contains `point`, in increasing id order.
    /// Nothing is called for a point with a non-finite coordinate or outside the grid.
    pub fn blocks_containing(&self, point: &[f64], mut f: impl FnMut(u64)) {
        if point.len() < self.dims {
            return;
        }
        let mut ranges = [(0u64, 0u64); 3];
        for a in 0..self.dims {
            match self.axis_range(a, point[a]) {
                Some(r) => ranges[a] = r,
                None => return,
            }
        }
        let (rx, ry, rz) = (ranges[0], ranges[1], ranges[2]);
        let (ny, nz) = (self.counts[1], self.counts[2]);
        for kx in rx.0..=rx.1 {
            for ky in ry.0..=ry.1 {
                for kz in rz.0..=rz.1 {
                    f((kx * ny + ky) * nz + kz);
                }
            }
        }
    }
}
