//! Group items: several cells served together (a sample's random cells, a region, a block).

use serde::{Deserialize, Serialize};

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
    /// per cell. Normalisation maps `bounds` to `[0, 1]` per axis (an axis of zero extent
    /// maps to 0).
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
                    .flat_map(|p| {
                        (0..d).map(move |a| {
                            let ext = b.max[a] - b.min[a];
                            if ext > 0.0 {
                                (p[a] - b.min[a]) / ext
                            } else {
                                0.0
                            }
                        })
                    })
                    .collect();
                self.normalized = Some(n);
            }
        }
        self.coords = Some(c);
        self.dims = dims;
    }
}
