//! Block shuffle: a cold-storage friendly order, and a measure of batch diversity.

use crate::error::{Error, Result};

use super::rng::hash_words;
use super::{Cohort, Permutation, Sampler};

const TAG_RUNS: u64 = 0x7275_6E73; // "runs"
const TAG_WINDOW: u64 = 0x7769_6E64; // "wind"

/// Contiguous runs of cells shuffled as blocks, then mixed in windows; items are cell ids.
///
/// The cohort (in id order, which is storage order) is cut into runs of `run_len` cells. Each
/// epoch the full runs are permuted (the short tail run, if any, stays last); the resulting
/// sequence is cut into windows of `window_runs * run_len` cells and each window is shuffled
/// by its own keyed [`Permutation`]. So a reader touches `window_runs` contiguous runs per
/// window (few, large reads) while consecutive items come from up to `window_runs` different
/// places of the cohort. Every cell appears exactly once per epoch, and like every sampler the
/// order is position-addressable: a shard computes only its own positions. The window plays
/// the role of a shuffle buffer of `window_runs * run_len` cells.
///
/// Use [`mean_label_entropy`] to compare its batch diversity with [`crate::sample::RandomCells`].
///
/// ```
/// use cellarrow::sample::{BlockShuffle, Cohort, Sampler};
/// let s = BlockShuffle::new(Cohort::all(100), 8, 4, 1).unwrap();
/// let mut e: Vec<u64> = (0..100).map(|p| s.item(0, p)).collect();
/// e.sort();
/// assert_eq!(e, (0..100).collect::<Vec<_>>());
/// ```
#[derive(Debug, Clone)]
pub struct BlockShuffle {
    cohort: Cohort,
    run_len: u64,
    window: u64,
    seed: u64,
}

impl BlockShuffle {
    /// Runs of `run_len` cells, windows of `window_runs` runs. Both must be at least 1.
    pub fn new(cohort: Cohort, run_len: u64, window_runs: u64, seed: u64) -> Result<BlockShuffle> {
        if run_len == 0 {
            return Err(Error::invalid_input(
                "block shuffle: a run must hold at least 1 cell (the shuffle run)",
            ));
        }
        if window_runs == 0 {
            return Err(Error::invalid_input(
                "block shuffle: a window must hold at least 1 run (the shuffle window)",
            ));
        }
        let window = run_len
            .checked_mul(window_runs)
            .ok_or_else(|| Error::invalid_input("block shuffle window too large"))?;
        Ok(BlockShuffle {
            cohort,
            run_len,
            window,
            seed,
        })
    }
}

impl Sampler for BlockShuffle {
    type Item = u64;

    fn epoch_len(&self, _epoch: u64) -> u64 {
        self.cohort.len()
    }

    fn item(&self, epoch: u64, pos: u64) -> u64 {
        let n = self.cohort.len();
        assert!(pos < n, "position {pos} out of range 0..{n}");
        let w = pos / self.window;
        let wstart = w * self.window;
        let wlen = self.window.min(n - wstart);
        let q = wstart
            + Permutation::new(wlen, hash_words(&[self.seed, epoch, w, TAG_WINDOW]))
                .at(pos - wstart);
        let full = n / self.run_len;
        let (j, off) = (q / self.run_len, q % self.run_len);
        let run = if j < full {
            Permutation::new(full, hash_words(&[self.seed, epoch, TAG_RUNS])).at(j)
        } else {
            j
        };
        self.cohort.at(run * self.run_len + off)
    }
}

/// Mean Shannon entropy (bits) of the label distribution of consecutive batches of
/// `batch_size` items (a last partial batch is ignored unless it is the only one). Higher is
/// more diverse; a uniformly random order approaches the entropy of the label frequencies.
///
/// ```
/// use cellarrow::sample::mean_label_entropy;
/// assert_eq!(mean_label_entropy(&[0, 0, 1, 1], 2), 0.0);
/// assert_eq!(mean_label_entropy(&[0, 1, 0, 1], 2), 1.0);
/// ```
pub fn mean_label_entropy(labels: &[u32], batch_size: usize) -> f64 {
    if labels.is_empty() || batch_size == 0 {
        return 0.0;
    }
    let full = labels.len() / batch_size;
    let batches: Vec<&[u32]> = if full == 0 {
        vec![labels]
    } else {
        labels.chunks_exact(batch_size).collect()
    };
    let mut total = 0.0;
    for b in &batches {
        let mut counts = std::collections::HashMap::new();
        for &l in *b {
            *counts.entry(l).or_insert(0usize) += 1;
        }
        let n = b.len() as f64;
        total -= counts
            .values()
            .map(|&c| (c as f64 / n) * (c as f64 / n).log2())
            .sum::<f64>();
    }
    total / batches.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::RandomCells;

    #[test]
    fn diversity_between_sequential_and_random() {
        // 20 labels stored in contiguous runs of 500 cells (as samples are on disk).
        let n = 10_000u64;
        let label = |c: u64| (c / 500) as u32;
        let seq: Vec<u32> = (0..n).map(label).collect();
        let random = RandomCells::new(Cohort::all(n), 1);
        let rnd: Vec<u32> = (0..n).map(|p| label(random.item(0, p))).collect();
        let bs = BlockShuffle::new(Cohort::all(n), 16, 128, 1).unwrap();
        let blk: Vec<u32> = (0..n).map(|p| label(bs.item(0, p))).collect();
        let (e_seq, e_rnd, e_blk) = (
            mean_label_entropy(&seq, 64),
            mean_label_entropy(&rnd, 64),
            mean_label_entropy(&blk, 64),
        );
        assert!(e_seq < 0.1, "{e_seq}");
        assert!(e_blk > 0.85 * e_rnd, "block {e_blk} vs random {e_rnd}");
        // Runs of 1 in one window over everything is a full shuffle.
        let full = BlockShuffle::new(Cohort::all(n), 1, n, 2).unwrap();
        let f: Vec<u32> = (0..n).map(|p| label(full.item(0, p))).collect();
        assert!(mean_label_entropy(&f, 64) > 0.95 * e_rnd);
    }

    #[test]
    fn bijection_with_tail_and_short_window() {
        for n in [0u64, 1, 7, 64, 101] {
            for (l, w) in [(1, 1), (3, 2), (8, 5), (200, 1)] {
                let s = BlockShuffle::new(Cohort::all(n), l, w, 9).unwrap();
                let mut v: Vec<u64> = (0..n).map(|p| s.item(3, p)).collect();
                v.sort();
                assert_eq!(v, (0..n).collect::<Vec<_>>());
            }
        }
        assert!(BlockShuffle::new(Cohort::all(5), 0, 1, 0).is_err());
        assert!(BlockShuffle::new(Cohort::all(5), 1, 0, 0).is_err());
    }
}
