//! Random cells: a fresh permutation per epoch, uniform draws with replacement, or weighted draws.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{Error, Result};

use super::rng::{hash_words, AliasTable, Rng};
use super::{Cohort, Labels, Permutation, Sampler, NO_LABEL};

const TAG_PERM: u64 = 0x7065_726D; // "perm"
const TAG_DRAW: u64 = 0x6472_6177; // "draw"

#[derive(Debug, Clone)]
enum Mode {
    Permutation,
    Replacement { draws: u64 },
    Weighted { table: Arc<AliasTable>, draws: u64 },
}

/// Random cells of a cohort; items are global cell ids.
///
/// Modes (the replacement policy):
/// - [`RandomCells::new`]: **without replacement**. Each epoch is a fresh uniform permutation of
///   the cohort (a keyed [`Permutation`] seeded by `(seed, epoch)`); every cell appears exactly
///   once per epoch. Memory O(1) beyond the cohort itself; a shard computes only its positions.
/// - [`RandomCells::with_replacement`]: `draws` independent uniform draws per epoch; a cell may
///   appear several times or not at all.
/// - [`RandomCells::weighted`] / [`RandomCells::inverse_class_frequency`] /
///   [`RandomCells::label_weights`]: `draws` independent draws per epoch, cell `i` drawn with
///   probability proportional to its weight (alias method, O(1) per draw; the table takes 16
///   bytes per cohort cell).
///
/// Draws are seeded by `(seed, epoch, global position)`, so all modes shard exactly.
///
/// ```
/// use cellarrow::sample::{Cohort, RandomCells, Sampler};
/// let s = RandomCells::new(Cohort::from_cells(vec![10, 20, 30]), 1);
/// let mut e0: Vec<u64> = (0..3).map(|p| s.item(0, p)).collect();
/// e0.sort();
/// assert_eq!(e0, vec![10, 20, 30]);
/// ```
#[derive(Debug, Clone)]
pub struct RandomCells {
    cohort: Cohort,
    seed: u64,
    mode: Mode,
}

impl RandomCells {
    /// A uniform permutation of `cohort` per epoch (without replacement).
    pub fn new(cohort: Cohort, seed: u64) -> RandomCells {
        RandomCells {
            cohort,
            seed,
            mode: Mode::Permutation,
        }
    }

    /// `draws` uniform draws with replacement per epoch. An empty cohort gives empty epochs.
    pub fn with_replacement(cohort: Cohort, seed: u64, draws: u64) -> RandomCells {
        let draws = if cohort.is_empty() { 0 } else { draws };
        RandomCells {
            cohort,
            seed,
            mode: Mode::Replacement { draws },
        }
    }

    /// `draws` draws per epoch with probability proportional to `weights` (one per cohort
    /// position, in cohort order). Weights must be finite, non-negative and not all zero.
    pub fn weighted(cohort: Cohort, weights: &[f64], seed: u64, draws: u64) -> Result<RandomCells> {
        if weights.len() as u64 != cohort.len() {
            return Err(Error::invalid_input(format!(
                "{} weights for a cohort of {} cells",
                weights.len(),
                cohort.len()
            )));
        }
        let table = AliasTable::new(weights).ok_or_else(|| {
            Error::invalid_input("weights must be finite, non-negative and not all zero")
        })?;
        Ok(RandomCells {
            cohort,
            seed,
            mode: Mode::Weighted {
                table: Arc::new(table),
                draws,
            },
        })
    }

    /// Weighted by label: a cell's weight is the weight of its label in `weights` (labels
    /// missing from the map weigh `default_weight`). Cells with a null label are never drawn.
    pub fn label_weights(
        cohort: Cohort,
        labels: &Labels,
        weights: &HashMap<String, f64>,
        default_weight: f64,
        seed: u64,
        draws: u64,
    ) -> Result<RandomCells> {
        let per_label: Vec<f64> = labels
            .names
            .iter()
            .map(|n| weights.get(n).copied().unwrap_or(default_weight))
            .collect();
        let w = cohort_weights(&cohort, labels, |code| per_label[code as usize])?;
        Self::weighted(cohort, &w, seed, draws)
    }

    /// Class-balanced: a cell's weight is `1 / (cells of its label in the cohort)`, so every
    /// label present is drawn equally often in expectation. Cells with a null label are
    /// never drawn.
    pub fn inverse_class_frequency(
        cohort: Cohort,
        labels: &Labels,
        seed: u64,
        draws: u64,
    ) -> Result<RandomCells> {
        let mut counts = vec![0u64; labels.names.len()];
        for c in cohort.iter() {
            let code = *labels.codes.get(c as usize).ok_or_else(|| {
                Error::invalid_input(format!(
                    "cohort cell {c} has no label (labels cover {} cells)",
                    labels.codes.len()
                ))
            })?;
            if code != NO_LABEL {
                counts[code as usize] += 1;
            }
        }
        let w = cohort_weights(&cohort, labels, |code| 1.0 / counts[code as usize] as f64)?;
        Self::weighted(cohort, &w, seed, draws)
    }

    /// The cohort.
    pub fn cohort(&self) -> &Cohort {
        &self.cohort
    }

    #[inline]
    fn epoch_permutation(&self, epoch: u64) -> Permutation {
        Permutation::new(self.cohort.len(), hash_words(&[self.seed, epoch, TAG_PERM]))
    }
}

fn cohort_weights(cohort: &Cohort, labels: &Labels, f: impl Fn(u32) -> f64) -> Result<Vec<f64>> {
    cohort
        .iter()
        .map(|c| match labels.codes.get(c as usize) {
            None => Err(Error::invalid_input(format!(
                "cohort cell {c} has no label (labels cover {} cells)",
                labels.codes.len()
            ))),
            Some(&NO_LABEL) => Ok(0.0),
            Some(&code) => Ok(f(code)),
        })
        .collect()
}

impl Sampler for RandomCells {
    type Item = u64;

    fn epoch_len(&self, _epoch: u64) -> u64 {
        match &self.mode {
            Mode::Permutation => self.cohort.len(),
            Mode::Replacement { draws } | Mode::Weighted { draws, .. } => *draws,
        }
    }

    #[inline]
    fn item(&self, epoch: u64, pos: u64) -> u64 {
        match &self.mode {
            Mode::Permutation => self.cohort.at(self.epoch_permutation(epoch).at(pos)),
            Mode::Replacement { draws } => {
                assert!(pos < *draws, "position {pos} out of range 0..{draws}");
                let mut rng = Rng::new(hash_words(&[self.seed, epoch, pos, TAG_DRAW]));
                self.cohort.at(rng.below(self.cohort.len()))
            }
            Mode::Weighted { table, draws } => {
                assert!(pos < *draws, "position {pos} out of range 0..{draws}");
                let mut rng = Rng::new(hash_words(&[self.seed, epoch, pos, TAG_DRAW]));
                self.cohort.at(table.sample(&mut rng))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_frequency_balances() {
        // 90 cells of label 0, 10 of label 1.
        let labels = Labels {
            column: "ct".into(),
            names: vec!["a".into(), "b".into()],
            codes: (0..100).map(|i| if i < 90 { 0 } else { 1 }).collect(),
        };
        let s = RandomCells::inverse_class_frequency(Cohort::all(100), &labels, 3, 20_000).unwrap();
        let b = (0..20_000).filter(|&p| s.item(0, p) >= 90).count();
        assert!((9_000..11_000).contains(&b), "{b}");
    }

    #[test]
    fn bad_weights_are_errors() {
        assert!(RandomCells::weighted(Cohort::all(2), &[1.0], 0, 5).is_err());
        assert!(RandomCells::weighted(Cohort::all(2), &[0.0, 0.0], 0, 5).is_err());
        assert!(RandomCells::weighted(Cohort::all(2), &[-1.0, 2.0], 0, 5).is_err());
    }

    #[test]
    fn epochs_differ() {
        let s = RandomCells::new(Cohort::all(1000), 5);
        let a: Vec<u64> = (0..1000).map(|p| s.item(0, p)).collect();
        let b: Vec<u64> = (0..1000).map(|p| s.item(1, p)).collect();
        assert_ne!(a, b);
    }
}
