//! The spatial block grid of one sample: the single definition of block ids and bounds.
//!
//! Shared by the block sampler ([`super::SpatialBlocks`]) and the `blocks(size, stride)` SQL
//! table function (feature `sql`), so that a block id picked in SQL names the same cells when
//! it is sampled. It lives in the sampling layer, which does not need the `sql` feature.
//! [`BlockGrid`] states the anchoring, the geometry and the block-id convention.

use crate::error::{Error, Result};

use super::Bounds;

/// The extent of a sample's points: the grid anchor. Points with a non-finite coordinate on
/// one of the `dims` axes are ignored.
///
/// ```
/// use cellarrow::sample::Extent;
/// let mut e = Extent::new(2);
/// e.add(&[3.0, 1.0]);
/// e.add(&[f64::NAN, -100.0]); // ignored
/// e.add(&[-1.0, 4.0, f64::NAN]); // z is not an axis of a 2-D extent
/// assert_eq!((e.min(), e.max()), (&[-1.0, 1.0][..], &[3.0, 4.0][..]));
/// let grid = e.grid(2.0, 2.0).unwrap().unwrap();
/// assert_eq!(grid.counts(), &[3, 2]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Extent {
    dims: usize,
    min: [f64; 3],
    max: [f64; 3],
    any: bool,
}

impl Extent {
    /// An empty extent over `dims` axes (2 or 3; panics otherwise).
    pub fn new(dims: usize) -> Extent {
        assert!(
            dims == 2 || dims == 3,
            "an extent has 2 or 3 axes, not {dims}"
        );
        Extent {
            dims,
            min: [f64::INFINITY; 3],
            max: [f64::NEG_INFINITY; 3],
            any: false,
        }
    }
    /// Adds a point (at least `dims` coordinates; further ones are ignored). Returns whether
    /// it counted, i.e. its first `dims` coordinates are finite.
    #[inline]
    pub fn add(&mut self, p: &[f64]) -> bool {
        let d = self.dims;
        if p.len() < d || !p[..d].iter().all(|v| v.is_finite()) {
            return false;
        }
        for ((lo, hi), &v) in self.min.iter_mut().zip(self.max.iter_mut()).zip(&p[..d]) {
            *lo = lo.min(v);
            *hi = hi.max(v);
        }
        self.any = true;
        true
    }
    /// Number of axes.
    pub fn dims(&self) -> usize {
        self.dims
    }
    /// Whether no point counted.
    pub fn is_empty(&self) -> bool {
        !self.any
    }
    /// Per-axis minimum (infinite while empty).
    pub fn min(&self) -> &[f64] {
        &self.min[..self.dims]
    }
    /// Per-axis maximum (infinite while empty).
    pub fn max(&self) -> &[f64] {
        &self.max[..self.dims]
    }
    /// The block grid anchored at this extent, `None` when it is empty (see [`block_grid`]).
    pub fn grid(&self, size: f64, stride: f64) -> Result<Option<BlockGrid>> {
        if self.is_empty() {
            // Still check the sizes, so bad settings fail the same way with or without points.
            check_sizes(size, stride)?;
            return Ok(None);
        }
        block_grid(self.min(), self.max(), size, stride).map(Some)
    }
}

/// The block grid of one spatial sample.
///
/// Anchoring: the grid of a sample starts at the minimum, per axis, over *all* the sample's
/// cells whose coordinates are finite on all its axes (not only the cells of a cohort), so a
/// block id means the same thing whatever cohort is sampled.
///
/// Geometry: per axis, block `k` covers `[origin + k * stride, origin + k * stride + size)`,
/// where `origin` is that minimum. Per axis the grid has `n` blocks, `k = 0 .. n`, where
/// block `n - 1` is the first whose upper bound passes the maximum `max`:
/// `n = 1` if `max - min < size`, else `floor((max - min - size) / stride) + 2`. The block id
/// is row-major with the last axis fastest: `id = (kx * ny + ky) * nz + kz` (`nz = 1`,
/// `kz = 0` in 2-D). With `stride < size` blocks overlap and a cell lies in several; with
/// `stride > size` there are gaps and a cell may lie in none. Cells with a non-finite (NaN,
/// infinite or missing) coordinate lie in no block.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockGrid {
    dims: usize,
    origin: [f64; 3],
    size: f64,
    stride: f64,
    counts: [u64; 3],
}

/// The block grid of a sample whose finite coordinates span `min ..= max` (2 or 3 axes);
/// [`Extent::grid`] computes `min` and `max` from the sample's points.
///
/// `size` is the block edge, `stride` the step between block origins (`stride == size` tiles
/// the plane). Errors if the extents or sizes are not finite and positive, or if the grid
/// would have more than 2^64 blocks.
///
/// ```
/// use cellarrow::sample::block_grid;
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
    check_sizes(size, stride)?;
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
        let n = if ext < size {
            1.0
        } else {
            ((ext - size) / stride).floor() + 2.0
        };
        if n.is_nan() || n >= (1u64 << 53) as f64 {
            return Err(too_many_blocks(size, stride));
        }
        counts[a] = n as u64;
        total = total
            .checked_mul(counts[a])
            .ok_or_else(|| too_many_blocks(size, stride))?;
    }
    Ok(BlockGrid {
        dims,
        origin,
        size,
        stride,
        counts,
    })
}

fn check_sizes(size: f64, stride: f64) -> Result<()> {
    if !(size.is_finite() && size > 0.0) {
        return Err(Error::invalid_input(format!(
            "block size must be a positive number, got {size}"
        )));
    }
    if !(stride.is_finite() && stride > 0.0) {
        return Err(Error::invalid_input(format!(
            "block stride must be a positive number, got {stride}"
        )));
    }
    Ok(())
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
        assert_eq!(
            k.len(),
            self.dims,
            "block index has the wrong number of axes"
        );
        let mut id = 0;
        for a in 0..self.dims {
            assert!(
                k[a] < self.counts[a],
                "block index {k:?} outside grid {:?}",
                self.counts()
            );
            id = id * self.counts[a] + k[a];
        }
        id
    }

    /// Per-axis indices of block `id` (unused axes are 0). Panics if `id >= n_blocks()`.
    pub fn block_index(&self, id: u64) -> [u64; 3] {
        assert!(
            id < self.n_blocks(),
            "block id {id} outside grid {:?}",
            self.counts()
        );
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

    /// Bounds of block `id` as a [`Bounds`] box (half-open).
    pub fn block_bounds(&self, id: u64) -> Bounds {
        let (min, max) = self.bounds(id);
        Bounds {
            dims: self.dims as u8,
            min,
            max,
        }
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
        // d >= 0 here, so truncation is floor (and needs no libm call); the loops below fix
        // any rounding of the division.
        let mut hi = ((d / s) as u64).min(n - 1);
        while hi > 0 && lower(o, s, hi) > c {
            hi -= 1;
        }
        while hi + 1 < n && lower(o, s, hi + 1) <= c {
            hi += 1;
        }
        if lower(o, s, hi) > c {
            return None;
        }
        let mut lo = if d < size {
            0
        } else {
            (((d - size) / s) as u64 + 1).min(hi)
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::rng::Rng;

    #[test]
    fn block_grid_ids_round_trip_and_membership_agrees_with_bounds() {
        let g = block_grid(&[-3.0, 1.0, 0.5], &[17.0, 9.0, 5.0], 4.0, 3.0).unwrap();
        assert_eq!(g.counts(), &[7, 3, 2]);
        assert_eq!(g.block_id(&[1, 2, 1]), (3 + 2) * 2 + 1);
        for id in 0..g.n_blocks() {
            let k = g.block_index(id);
            assert_eq!(g.block_id(&k), id);
        }
        let mut rng = Rng::new(42);
        for _ in 0..2000 {
            let p = [
                -4.0 + 22.0 * rng.unit(),
                0.0 + 10.0 * rng.unit(),
                0.0 + 5.0 * rng.unit(),
            ];
            let mut ids = vec![];
            g.blocks_containing(&p, |id| ids.push(id));
            let want: Vec<u64> = (0..g.n_blocks()).filter(|&id| g.contains(id, &p)).collect();
            assert_eq!(ids, want, "{p:?}");
        }
        let mut ids = vec![];
        g.blocks_containing(&[f64::NAN, 2.0, 1.0], |id| ids.push(id));
        g.blocks_containing(&[1.0, f64::INFINITY, 1.0], |id| ids.push(id));
        assert!(ids.is_empty());
        assert!(block_grid(&[0.0, 0.0], &[1.0, 1.0], 0.0, 1.0).is_err());
        assert!(block_grid(&[0.0, 0.0], &[1.0, 1.0], 1.0, f64::NAN).is_err());
        assert!(block_grid(&[0.0, 0.0], &[1e300, 1e300], 1e-300, 1e-300).is_err());
        // A point on the upper edge of the extent belongs to the last block.
        let g = block_grid(&[0.0, 0.0], &[10.0, 10.0], 5.0, 5.0).unwrap();
        assert_eq!(g.counts(), &[3, 3]);
        // Overlapping blocks stop at the first one that reaches past the maximum.
        assert_eq!(
            block_grid(&[0.0, 0.0], &[100.0, 3.0], 10.0, 5.0)
                .unwrap()
                .counts(),
            &[20, 1]
        );
        let mut ids = vec![];
        g.blocks_containing(&[10.0, 10.0], |id| ids.push(id));
        assert_eq!(ids, [8]);
    }

    #[test]
    fn extents_ignore_non_finite_points_and_anchor_the_grid() {
        let mut e = Extent::new(3);
        assert!(e.is_empty());
        assert_eq!(e.grid(1.0, 1.0).unwrap(), None);
        assert!(e.grid(0.0, 1.0).is_err());
        assert!(!e.add(&[1.0, 2.0, f64::NAN]));
        assert!(!e.add(&[1.0, 2.0]));
        assert!(e.add(&[1.0, 2.0, 3.0]));
        assert!(e.add(&[-1.0, 5.0, 3.5]));
        assert_eq!(
            (e.min(), e.max()),
            (&[-1.0, 2.0, 3.0][..], &[1.0, 5.0, 3.5][..])
        );
        let g = e.grid(2.0, 2.0).unwrap().unwrap();
        assert_eq!(g.origin(), &[-1.0, 2.0, 3.0]);
        assert_eq!(g, block_grid(e.min(), e.max(), 2.0, 2.0).unwrap());
        let b = g.block_bounds(g.n_blocks() - 1);
        assert_eq!(
            (b.dims, b.min, b.max),
            (3, [1.0, 4.0, 3.0], [3.0, 6.0, 5.0])
        );
    }
}
