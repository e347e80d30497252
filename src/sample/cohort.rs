//! The set of cells a sampler draws from.

use std::sync::Arc;

use crate::error::{Error, Result};

/// The cells a sampler draws from: all cells of a corpus, or a sorted, deduplicated list of
/// cell ids (for example the result of an SQL query). Cloning is cheap (the list is shared).
///
/// Positions `0..len()` index the cohort in increasing cell id order.
///
/// ```
/// use cellarrow::sample::Cohort;
/// let c = Cohort::from_cells(vec![9, 3, 3, 5]);
/// assert_eq!(c.len(), 3);
/// assert_eq!(c.at(0), 3);
/// assert_eq!(c.range(4, 10), 1..3); // cohort positions of cells in 4..10
/// assert_eq!(Cohort::all(4).at(2), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cohort {
    /// Cells `0..n_cells`.
    All {
        /// Number of cells.
        n_cells: u64,
    },
    /// A sorted, deduplicated list of cell ids.
    Cells(Arc<[u64]>),
}

impl Cohort {
    /// Every cell of a corpus of `n_cells` cells.
    pub fn all(n_cells: u64) -> Cohort {
        Cohort::All { n_cells }
    }
    /// A list of cell ids, sorted and deduplicated here.
    pub fn from_cells(mut cells: Vec<u64>) -> Cohort {
        cells.sort_unstable();
        cells.dedup();
        Cohort::Cells(cells.into())
    }
    /// Like [`Cohort::from_cells`], refusing ids `>= n_cells` with an `InvalidInput` error.
    pub fn from_cells_checked(cells: Vec<u64>, n_cells: u64) -> Result<Cohort> {
        if let Some(bad) = cells.iter().find(|&&c| c >= n_cells) {
            return Err(Error::invalid_input(format!(
                "cohort cell id {bad} out of range: the corpus has {n_cells} cells"
            )));
        }
        Ok(Cohort::from_cells(cells))
    }
    /// Number of cells.
    pub fn len(&self) -> u64 {
        match self {
            Cohort::All { n_cells } => *n_cells,
            Cohort::Cells(c) => c.len() as u64,
        }
    }
    /// True for an empty cohort.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The cell at cohort position `i` (`i < len()`).
    #[inline]
    pub fn at(&self, i: u64) -> u64 {
        match self {
            Cohort::All { n_cells } => {
                debug_assert!(i < *n_cells);
                i
            }
            Cohort::Cells(c) => c[i as usize],
        }
    }
    /// Cohort positions of the cells with ids in `lo..hi` (a contiguous range, since the
    /// cohort is sorted). Used to find a sample's cells: samples are contiguous id ranges.
    pub fn range(&self, lo: u64, hi: u64) -> std::ops::Range<u64> {
        match self {
            Cohort::All { n_cells } => lo.min(*n_cells)..hi.min(*n_cells).max(lo.min(*n_cells)),
            Cohort::Cells(c) => {
                let a = c.partition_point(|&x| x < lo);
                let b = c.partition_point(|&x| x < hi).max(a);
                a as u64..b as u64
            }
        }
    }
    /// Whether `cell` is in the cohort.
    pub fn contains(&self, cell: u64) -> bool {
        match self {
            Cohort::All { n_cells } => cell < *n_cells,
            Cohort::Cells(c) => c.binary_search(&cell).is_ok(),
        }
    }
    /// Iterates the cells in id order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.len()).map(move |i| self.at(i))
    }
}
