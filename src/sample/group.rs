//! Group items: several cells served together (a sample's random cells, a region, a block).

use serde::{Deserialize, Serialize};

use super::rng::hash_words;
use super::Permutation;

/// An axis-aligned box: `min[a] <= x[a] < max[a]` on the first `dims` axes (the third axis
/// is ignored for 2-D boxes). Blocks are half-open; manifest regions given by a box are
/// closed (see [`Bounds::contains_closed`]).
///
/// ```
/// use cellarrow::sample::Bounds;
/// let b = Bounds::new2([0.0, 0.0], [10.0, 5.0]);
/// assert!(b.contains(&[9.9, 0.0, f64::NAN]));
/// assert!(!b.contains(&[10.0, 1.0, 0.0]));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bounds {
    /// 2 or 3.
    pub dims: u8,
    /// Lower corner (unused axes are 0).
    pub min: [f64; 3],
    /// Upper corner (unused axes are 0).
    pub max: [f64; 3],
}

impl Bounds {
    /// A 2-D box.
    pub fn new2(min: [f64; 2], max: [f64; 2]) -> Bounds {
        Bounds {
            dims: 2,
            min: [min[0], min[1], 0.0],
            max: [max[0], max[1], 0.0],
        }
    }
    /// A 3-D box.
    pub fn new3(min: [f64; 3], max: [f64; 3]) -> Bounds {
        Bounds { dims: 3, min, max }
    }
    /// Half-open containment on the box's axes.
    pub fn contains(&self, p: &[f64; 3]) -> bool {
        (0..self.dims as usize).all(|a| p[a] >= self.min[a] && p[a] < self.max[a])
    }
    /// Closed containment on the box's axes.
    pub fn contains_closed(&self, p: &[f64; 3]) -> bool {
        (0..self.dims as usize).all(|a| p[a] >= self.min[a] && p[a] <= self.max[a])
    }
    /// Coordinate `x` on `axis` normalised to the box: `(x - min) / (max - min)`, so the box
    /// maps to `[0, 1]`. An axis of zero extent (a flat box, such as a region of one point)
    /// maps every coordinate to 0 rather than dividing by zero; NaN stays NaN.
    ///
    /// ```
    /// use cellarrow::sample::Bounds;
    /// let b = Bounds::new2([0.0, 5.0], [10.0, 5.0]);
    /// assert_eq!(b.normalize(0, 2.5), 0.25);
    /// assert_eq!(b.normalize(1, 5.0), 0.0); // flat on y
    /// ```
    pub fn normalize(&self, axis: usize, x: f64) -> f64 {
        let extent = self.max[axis] - self.min[axis];
        if extent > 0.0 {
            (x - self.min[axis]) / extent
        } else if x.is_nan() {
            x
        } else {
            0.0
        }
    }
}

/// What a group was formed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupKey {
    /// Random cells of a sample, no label.
    Sample,
    /// Cells of one label (index into the sampler's label names).
    Label(u32),
    /// Cells of one region (index into the sampler's regions, see [`crate::sample::Regions::region`]).
    Region(u64),
    /// A spatial block (index into the sampler's blocks).
    Block(u64),
}

/// A group of cells served as one item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    /// Global cell ids. Order: as drawn for random groups; increasing id (which is storage
    /// order) for regions and blocks.
    pub cells: Vec<u64>,
    /// Index of the sample in the corpus sample list.
    pub sample: u32,
    /// Label, region or block the group stands for.
    pub key: GroupKey,
    /// The block (or region box) bounds, for spatial groups.
    pub bounds: Option<Bounds>,
    /// Coordinates of the cells, `dims` values per cell, row-major, when known.
    pub coords: Option<Vec<f64>>,
    /// Coordinates normalised to the bounds (`(x - min) / (max - min)`, in `[0, 1)` inside a
    /// block), when asked for.
    pub normalized: Option<Vec<f64>>,
    /// Number of coordinate values per cell in `coords` (0 when there are none).
    pub dims: u8,
}

impl Group {
    /// A group of plain cells.
    pub fn plain(cells: Vec<u64>, sample: u32, key: GroupKey) -> Group {
        Group {
            cells,
            sample,
            key,
            bounds: None,
            coords: None,
            normalized: None,
            dims: 0,
        }
    }
    /// Number of cells.
    pub fn len(&self) -> usize {
        self.cells.len()
    }
    /// True when the group holds no cell.
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }
}

impl Group {
    /// Fills `coords` (and `normalized` when asked) from per-cell coordinates, `dims` values
    /// per cell. Normalisation is [`Bounds::normalize`].
    pub(crate) fn attach_coords(&mut self, all: &[[f64; 3]], dims: u8, normalize: bool) {
        let d = dims as usize;
        let mut c = Vec::with_capacity(self.cells.len() * d);
        for &cell in &self.cells {
            c.extend_from_slice(&all[cell as usize][..d]);
        }
        if normalize {
            if let Some(b) = &self.bounds {
                let n = c
                    .chunks_exact(d)
                    .flat_map(|p| (0..d).map(move |a| b.normalize(a, p[a])))
                    .collect();
                self.normalized = Some(n);
            }
        }
        self.coords = Some(c);
        self.dims = dims;
    }
}

/// Position `pos` of an epoch's order over `n` groups: a seeded permutation keyed by
/// (`seed`, `epoch`, `tag`), the order in which the spatial samplers serve their groups.
pub(crate) fn epoch_order_at(n: u64, seed: u64, epoch: u64, tag: u64, pos: u64) -> u64 {
    Permutation::new(n, hash_words(&[seed, epoch, tag])).at(pos)
}

/// One region or block as its sampler's `item()` serves it.
pub(crate) struct SpatialItem<'a> {
    /// All cells of the group, in storage order.
    pub cells: &'a [u64],
    pub sample: u32,
    pub key: GroupKey,
    pub bounds: Option<Bounds>,
    /// Per-cell coordinates of the corpus and the number of axes, when the group carries them.
    pub coords: Option<(&'a [[f64; 3]], u8)>,
}

impl SpatialItem<'_> {
    /// The group: at most `max_cells` of the cells (a subset seeded by `down_key`), with its
    /// bounds and, when known, its coordinates (normalised to the bounds with `normalize`).
    pub(crate) fn group(self, max_cells: Option<usize>, down_key: u64, normalize: bool) -> Group {
        let cells = downsample(self.cells, max_cells, down_key);
        let mut g = Group::plain(cells, self.sample, self.key);
        g.bounds = self.bounds;
        if let Some((coords, dims)) = self.coords {
            g.attach_coords(coords, dims, normalize);
        }
        g
    }
}

/// Keeps at most `max` of `cells` (a seeded uniform subset, in the input order).
pub(crate) fn downsample(cells: &[u64], max: Option<usize>, key: u64) -> Vec<u64> {
    match max {
        Some(m) if cells.len() > m => {
            let perm = Permutation::new(cells.len() as u64, key);
            let mut pick: Vec<u64> = (0..m as u64).map(|i| perm.at(i)).collect();
            pick.sort_unstable();
            pick.into_iter().map(|i| cells[i as usize]).collect()
        }
        _ => cells.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise_maps_the_box_to_unit_and_a_flat_axis_to_zero() {
        let b = Bounds::new3([0.0, 2.0, -1.0], [4.0, 2.0, 1.0]);
        assert_eq!(b.normalize(0, 0.0), 0.0);
        assert_eq!(b.normalize(0, 4.0), 1.0);
        assert_eq!(b.normalize(2, 0.0), 0.5);
        // y has zero extent: no division by zero, every coordinate maps to 0.
        assert_eq!(b.normalize(1, 2.0), 0.0);
        assert!(b.normalize(1, f64::NAN).is_nan());
        assert!(b.normalize(0, f64::NAN).is_nan());

        let mut g = Group::plain(vec![0, 1], 0, GroupKey::Region(0));
        g.bounds = Some(b);
        let all = [[1.0, 2.0, 1.0], [3.0, 2.0, -1.0]];
        g.attach_coords(&all, 3, true);
        assert_eq!(
            g.normalized.as_deref(),
            Some(&[0.25, 0.0, 1.0, 0.75, 0.0, 0.0][..])
        );
    }
}
