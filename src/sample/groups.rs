//! Random-cell groups: `k` cells drawn from one sample, optionally by label.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

use super::rng::{hash_words, AliasTable, Rng};
use super::{Cohort, Group, GroupKey, Labels, Permutation, SampleIndex, Sampler, NO_LABEL};

const TAG_GROUP: u64 = 0x0067_726F_7570; // "group"

/// How the sample of a group is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SampleChoice {
    /// Proportionally to the sample's eligible cells in the cohort.
    #[default]
    ByCellCount,
    /// Every eligible sample equally often.
    Uniform,
}

/// How labels shape a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelMode {
    /// Labels are ignored: `k` cells uniformly from the sample.
    #[default]
    None,
    /// Each group holds cells of **one** label: the label is drawn among the sample's labels
    /// with probability proportional to its weight (default 1: class-balanced), then `k`
    /// cells of that label.
    ClassBalanced,
    /// Each group mixes labels: label `l` of the sample gets a quota of the `k` cells
    /// proportional to `weight(l) * cells(l)` (largest remainder; default weight 1 reproduces
    /// the sample's composition, inverse-frequency weights give equal shares).
    Stratified,
}

/// What happens when a sample (or a label of a sample) has fewer cells than a group needs.
/// The policy is applied when the sampler is built, never as a failure mid-epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TooFewCells {
    /// Pools that cannot fill a group are never chosen: samples with fewer than `k` eligible
    /// cells, and under [`LabelMode::ClassBalanced`] labels with fewer than `k` cells in the
    /// sample. Under [`LabelMode::Stratified`] a label's quota is capped at its cell count and
    /// the surplus goes to the labels with spare cells. Groups always have exactly `k` distinct
    /// cells. If nothing is left, building the sampler fails.
    #[default]
    Exclude,
    /// Short pools are used: all their cells, then repeated draws (with replacement) up to the
    /// quota; groups have exactly `k` cells, some repeated.
    Replacement,
    /// Short pools are used as they are: the group holds fewer than `k` cells.
    Truncate,
}

/// Settings of [`RandomGroups`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupConfig {
    /// Cells per group (at least 1).
    pub k: usize,
    /// Groups per epoch; default: eligible cohort cells / `k` (at least 1), so one epoch draws
    /// about as many cells as the cohort holds.
    pub groups_per_epoch: Option<u64>,
    /// How samples are chosen.
    pub sample_choice: SampleChoice,
    /// How labels shape a group (needs labels in the [`SampleIndex`] unless `None`).
    pub label_mode: LabelMode,
    /// Weight per label name (labels not listed weigh 1).
    pub label_weights: HashMap<String, f64>,
    /// The too-few-cells policy.
    pub too_few: TooFewCells,
    /// Seed of the stream.
    pub seed: u64,
}

impl GroupConfig {
    /// Groups of `k` cells, samples by cell count, labels ignored, short samples excluded.
    pub fn new(k: usize, seed: u64) -> GroupConfig {
        GroupConfig {
            k,
            groups_per_epoch: None,
            sample_choice: SampleChoice::ByCellCount,
            label_mode: LabelMode::None,
            label_weights: HashMap::new(),
            too_few: TooFewCells::Exclude,
            seed,
        }
    }
}

/// A run of candidate cells: cohort positions (label mode `None`) or a range of `cells`.
#[derive(Debug, Clone)]
struct Pool {
    label: u32,
    start: u64,
    len: u64,
}

#[derive(Debug, Clone)]
struct SampleEntry {
    sample: u32,
    pools: Vec<Pool>,
    /// ClassBalanced: which pool.
    label_table: Option<AliasTable>,
    /// Stratified: cells per pool.
    quotas: Vec<u64>,
}

/// Groups of `k` cells drawn from one sample per group; items are [`Group`]s.
///
/// Group `p` of epoch `e` is a pure function of `(seed, e, p)`: the sample is drawn by
/// [`SampleChoice`], then the cells without replacement inside the group (a keyed
/// [`Permutation`] of the pool, first `k` positions). Groups are independent draws, so a cell
/// can appear in two groups of one epoch. Cells with a null label are never used by the label
/// modes. Memory: O(samples) without labels; with labels, the cohort's cells grouped by
/// (sample, label) (8 bytes per cell).
///
/// ```
/// use cellarrow::sample::{Cohort, GroupConfig, RandomGroups, SampleIndex, SampleRange, Sampler};
/// let idx = SampleIndex::new(vec![
///     SampleRange { sample_id: "a".into(), first_cell: 0, n_cells: 50, spatial_dims: 0 },
///     SampleRange { sample_id: "b".into(), first_cell: 50, n_cells: 3, spatial_dims: 0 },
/// ]).unwrap();
/// let s = RandomGroups::new(&idx, Cohort::all(53), GroupConfig::new(8, 1)).unwrap();
/// let g = s.item(0, 0);
/// assert_eq!(g.cells.len(), 8);
/// assert_eq!(g.sample, 0); // sample "b" has too few cells and is excluded
/// ```
#[derive(Debug, Clone)]
pub struct RandomGroups {
    cohort: Cohort,
    cells: Vec<u64>,
    use_cells: bool,
    entries: Vec<SampleEntry>,
    sample_table: AliasTable,
    groups: u64,
    cfg: GroupConfig,
}

impl RandomGroups {
    /// Builds the sampler. Errors (`InvalidInput`): `k == 0`, a label mode without labels in
    /// `index`, a negative or non-finite label weight, a cohort cell outside the index, or no
    /// sample able to give a group.
    pub fn new(index: &SampleIndex, cohort: Cohort, cfg: GroupConfig) -> Result<RandomGroups> {
        check_config(index, &cohort, &cfg)?;
        let k = cfg.k as u64;
        let exclude = cfg.too_few == TooFewCells::Exclude;
        let mut cells = Vec::new();
        let entries = match cfg.label_mode {
            LabelMode::None => unlabelled_entries(index, &cohort, k, exclude),
            mode => {
                let labels = index.require_labels("a label-balanced group sampler")?;
                let weight_of: Vec<f64> = labels
                    .names
                    .iter()
                    .map(|n| cfg.label_weights.get(n).copied().unwrap_or(1.0))
                    .collect();
                let mut entries = Vec::new();
                for (si, s) in index.samples.iter().enumerate() {
                    let r = cohort.range(s.first_cell, s.first_cell + s.n_cells);
                    let pools = label_pools(labels, &weight_of, &cohort, r, &mut cells);
                    let entry = if mode == LabelMode::ClassBalanced {
                        class_balanced_entry(si as u32, pools, &weight_of, k, exclude)
                    } else {
                        stratified_entry(si as u32, pools, &weight_of, k, exclude)
                    };
                    entries.extend(entry);
                }
                entries
            }
        };
        // A sample weighs (and counts towards the epoch length) by the cells it can give.
        let eligible: Vec<u64> = entries
            .iter()
            .map(|e| e.pools.iter().map(|p| p.len).sum())
            .collect();
        let eligible_cells: u64 = eligible.iter().sum();
        let sample_weights: Vec<f64> = match cfg.sample_choice {
            SampleChoice::Uniform => vec![1.0; eligible.len()],
            SampleChoice::ByCellCount => eligible.iter().map(|&n| n as f64).collect(),
        };
        let sample_table = AliasTable::new(&sample_weights).ok_or_else(|| {
            Error::invalid_input(format!(
                "no sample of the cohort can give a group of {k} cells under the {:?} policy",
                cfg.too_few
            ))
        })?;
        let groups = cfg.groups_per_epoch.unwrap_or((eligible_cells / k).max(1));
        let use_cells = cfg.label_mode != LabelMode::None;
        Ok(RandomGroups {
            cohort,
            cells,
            use_cells,
            entries,
            sample_table,
            groups,
            cfg,
        })
    }

    /// The settings.
    pub fn config(&self) -> &GroupConfig {
        &self.cfg
    }

    /// Indices (into the index's samples) of the samples groups can come from.
    pub fn eligible_samples(&self) -> Vec<u32> {
        self.entries.iter().map(|e| e.sample).collect()
    }

    #[inline]
    fn cell(&self, pool: &Pool, i: u64) -> u64 {
        if self.use_cells {
            self.cells[(pool.start + i) as usize]
        } else {
            self.cohort.at(pool.start + i)
        }
    }

    fn draw(&self, pool: &Pool, want: u64, rng: &mut Rng, out: &mut Vec<u64>) {
        let m = pool.len;
        let perm = Permutation::new(m, rng.next_u64());
        for i in 0..want.min(m) {
            out.push(self.cell(pool, perm.at(i)));
        }
        if want > m && self.cfg.too_few == TooFewCells::Replacement {
            for _ in m..want {
                let i = rng.below(m);
                out.push(self.cell(pool, i));
            }
        }
    }
}

/// The group size, the cohort's range and the label weights.
fn check_config(index: &SampleIndex, cohort: &Cohort, cfg: &GroupConfig) -> Result<()> {
    if cfg.k == 0 {
        return Err(Error::invalid_input("group size k must be at least 1"));
    }
    if !cohort.is_empty() && cohort.at(cohort.len() - 1) >= index.n_cells {
        return Err(Error::invalid_input(format!(
            "cohort cell {} out of range: the corpus has {} cells",
            cohort.at(cohort.len() - 1),
            index.n_cells
        )));
    }
    if let Some((l, w)) = cfg
        .label_weights
        .iter()
        .find(|(_, w)| !w.is_finite() || **w < 0.0)
    {
        return Err(Error::invalid_input(format!(
            "label weight of {l:?} must be finite and >= 0, got {w}"
        )));
    }
    Ok(())
}

/// Without labels: one pool per sample, its cohort cells (a range of the cohort).
fn unlabelled_entries(
    index: &SampleIndex,
    cohort: &Cohort,
    k: u64,
    exclude: bool,
) -> Vec<SampleEntry> {
    let mut entries = Vec::new();
    for (si, s) in index.samples.iter().enumerate() {
        let r = cohort.range(s.first_cell, s.first_cell + s.n_cells);
        let n = r.end - r.start;
        if n == 0 || (exclude && n < k) {
            continue;
        }
        entries.push(SampleEntry {
            sample: si as u32,
            pools: vec![Pool {
                label: NO_LABEL,
                start: r.start,
                len: n,
            }],
            label_table: None,
            quotas: vec![],
        });
    }
    entries
}

/// Appends the cohort cells at positions `r` (one sample) to `cells`, sorted by label (a
/// counting sort; unlabelled cells and labels of weight 0 are left out), and returns one pool
/// per label present, pointing into `cells`.
fn label_pools(
    labels: &Labels,
    weight_of: &[f64],
    cohort: &Cohort,
    r: std::ops::Range<u64>,
    cells: &mut Vec<u64>,
) -> Vec<Pool> {
    let n_labels = labels.names.len();
    let mut counts = vec![0u64; n_labels + 1];
    for p in r.clone() {
        let c = labels.codes[cohort.at(p) as usize];
        if c != NO_LABEL && weight_of[c as usize] > 0.0 {
            counts[c as usize + 1] += 1;
        }
    }
    for l in 0..n_labels {
        counts[l + 1] += counts[l];
    }
    let base = cells.len();
    cells.resize(base + counts[n_labels] as usize, 0);
    let mut fill = counts.clone();
    for p in r {
        let cell = cohort.at(p);
        let c = labels.codes[cell as usize];
        if c != NO_LABEL && weight_of[c as usize] > 0.0 {
            cells[base + fill[c as usize] as usize] = cell;
            fill[c as usize] += 1;
        }
    }
    (0..n_labels)
        .filter(|&l| counts[l + 1] > counts[l])
        .map(|l| Pool {
            label: l as u32,
            start: base as u64 + counts[l],
            len: counts[l + 1] - counts[l],
        })
        .collect()
}

/// Class-balanced: a group's label is drawn by weight among the sample's pools (those with
/// `k` cells under `exclude`); `None` when no pool is left.
fn class_balanced_entry(
    sample: u32,
    pools: Vec<Pool>,
    weight_of: &[f64],
    k: u64,
    exclude: bool,
) -> Option<SampleEntry> {
    let pools: Vec<Pool> = pools
        .into_iter()
        .filter(|p| !(exclude && p.len < k))
        .collect();
    let w: Vec<f64> = pools.iter().map(|p| weight_of[p.label as usize]).collect();
    let table = AliasTable::new(&w)?;
    Some(SampleEntry {
        sample,
        pools,
        label_table: Some(table),
        quotas: vec![],
    })
}

/// Stratified: every group takes a fixed quota of cells from each pool, apportioned by
/// weight times size; `None` when the sample cannot give a group.
fn stratified_entry(
    sample: u32,
    pools: Vec<Pool>,
    weight_of: &[f64],
    k: u64,
    exclude: bool,
) -> Option<SampleEntry> {
    let total: u64 = pools.iter().map(|p| p.len).sum();
    if total == 0 || (exclude && total < k) {
        return None;
    }
    let shares: Vec<f64> = pools
        .iter()
        .map(|p| weight_of[p.label as usize] * p.len as f64)
        .collect();
    let caps: Option<Vec<u64>> = exclude.then(|| pools.iter().map(|p| p.len).collect());
    let quotas = apportion(k, &shares, caps.as_deref());
    Some(SampleEntry {
        sample,
        pools,
        label_table: None,
        quotas,
    })
}

/// Splits `k` into integer quotas proportional to `shares` (largest remainder), optionally
/// capped per entry (surplus redistributed among entries below their cap).
fn apportion(k: u64, shares: &[f64], caps: Option<&[u64]>) -> Vec<u64> {
    let n = shares.len();
    let mut q = vec![0u64; n];
    let mut open: Vec<bool> = (0..n).map(|i| shares[i] > 0.0).collect();
    let mut left = k;
    while left > 0 && open.iter().any(|&o| o) {
        let total: f64 = (0..n).filter(|&i| open[i]).map(|i| shares[i]).sum();
        let ideal: Vec<f64> = (0..n)
            .map(|i| {
                if open[i] {
                    left as f64 * shares[i] / total
                } else {
                    0.0
                }
            })
            .collect();
        let mut add: Vec<u64> = ideal.iter().map(|x| x.floor() as u64).collect();
        let mut rest = left - add.iter().sum::<u64>();
        let mut order: Vec<usize> = (0..n).filter(|&i| open[i]).collect();
        order.sort_by(|&a, &b| {
            (ideal[b] - ideal[b].floor())
                .total_cmp(&(ideal[a] - ideal[a].floor()))
                .then(a.cmp(&b))
        });
        for &i in order.iter().cycle().take(order.len() * 2) {
            if rest == 0 {
                break;
            }
            add[i] += 1;
            rest -= 1;
        }
        let mut capped = false;
        for i in 0..n {
            if !open[i] {
                continue;
            }
            let room = caps.map_or(u64::MAX, |c| c[i] - q[i]);
            let take = add[i].min(room);
            q[i] += take;
            left -= take;
            if take < add[i] || caps.is_some_and(|c| q[i] == c[i]) {
                open[i] = false;
                capped |= take < add[i];
            }
        }
        if !capped {
            break;
        }
    }
    q
}

impl Sampler for RandomGroups {
    type Item = Group;

    fn epoch_len(&self, _epoch: u64) -> u64 {
        self.groups
    }

    fn item(&self, epoch: u64, pos: u64) -> Group {
        assert!(
            pos < self.groups,
            "position {pos} out of range 0..{}",
            self.groups
        );
        let mut rng = Rng::new(hash_words(&[self.cfg.seed, epoch, pos, TAG_GROUP]));
        let e = &self.entries[self.sample_table.sample(&mut rng) as usize];
        let mut cells = Vec::with_capacity(self.cfg.k);
        let key = match self.cfg.label_mode {
            LabelMode::None => {
                self.draw(&e.pools[0], self.cfg.k as u64, &mut rng, &mut cells);
                GroupKey::Sample
            }
            LabelMode::ClassBalanced => {
                let table = e
                    .label_table
                    .as_ref()
                    .expect("class-balanced entries have a label table");
                let pool = &e.pools[table.sample(&mut rng) as usize];
                self.draw(pool, self.cfg.k as u64, &mut rng, &mut cells);
                GroupKey::Label(pool.label)
            }
            LabelMode::Stratified => {
                for (pool, &q) in e.pools.iter().zip(&e.quotas) {
                    if q > 0 {
                        self.draw(pool, q, &mut rng, &mut cells);
                    }
                }
                GroupKey::Sample
            }
        };
        Group::plain(cells, e.sample, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{Labels, SampleRange};

    fn index(sizes: &[u64], labels: Option<Vec<u32>>, n_labels: usize) -> SampleIndex {
        let mut first = 0;
        let samples = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let s = SampleRange {
                    sample_id: format!("s{i}"),
                    first_cell: first,
                    n_cells: n,
                    spatial_dims: 0,
                };
                first += n;
                s
            })
            .collect();
        let idx = SampleIndex::new(samples).unwrap();
        match labels {
            Some(codes) => idx
                .with_labels(Labels {
                    column: "ct".into(),
                    names: (0..n_labels).map(|i| format!("l{i}")).collect(),
                    codes,
                })
                .unwrap(),
            None => idx,
        }
    }

    #[test]
    fn apportion_sums_and_caps() {
        assert_eq!(apportion(10, &[1.0, 1.0], None), vec![5, 5]);
        assert_eq!(
            apportion(10, &[1.0, 1.0, 1.0], None).iter().sum::<u64>(),
            10
        );
        assert_eq!(apportion(10, &[9.0, 1.0], Some(&[100, 0])), vec![10, 0]);
        assert_eq!(apportion(10, &[1.0, 1.0], Some(&[2, 100])), vec![2, 8]);
        assert_eq!(apportion(7, &[0.0, 3.0], None), vec![0, 7]);
    }

    #[test]
    fn groups_come_from_one_sample_and_are_distinct() {
        let idx = index(&[30, 40, 5], None, 0);
        let s = RandomGroups::new(&idx, Cohort::all(75), GroupConfig::new(6, 9)).unwrap();
        assert_eq!(s.eligible_samples(), vec![0, 1]);
        for p in 0..s.epoch_len(0) {
            let g = s.item(0, p);
            let r = &idx.samples[g.sample as usize];
            let mut c = g.cells.clone();
            c.sort();
            c.dedup();
            assert_eq!(c.len(), 6);
            assert!(c
                .iter()
                .all(|&x| x >= r.first_cell && x < r.first_cell + r.n_cells));
        }
    }

    #[test]
    fn too_few_policies() {
        let idx = index(&[3], None, 0);
        let mut cfg = GroupConfig::new(5, 1);
        let e = RandomGroups::new(&idx, Cohort::all(3), cfg.clone()).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidInput);
        cfg.too_few = TooFewCells::Replacement;
        assert_eq!(
            RandomGroups::new(&idx, Cohort::all(3), cfg.clone())
                .unwrap()
                .item(0, 0)
                .cells
                .len(),
            5
        );
        cfg.too_few = TooFewCells::Truncate;
        assert_eq!(
            RandomGroups::new(&idx, Cohort::all(3), cfg.clone())
                .unwrap()
                .item(0, 0)
                .cells
                .len(),
            3
        );
        cfg.k = 0;
        assert!(RandomGroups::new(&idx, Cohort::all(3), cfg).is_err());
    }

    #[test]
    fn class_balanced_and_stratified() {
        // One sample: 80 cells of l0, 16 of l1, 4 of l2.
        let codes: Vec<u32> = (0..100)
            .map(|i| {
                if i < 80 {
                    0
                } else if i < 96 {
                    1
                } else {
                    2
                }
            })
            .collect();
        let idx = index(&[100], Some(codes.clone()), 3);
        let mut cfg = GroupConfig::new(8, 4);
        cfg.label_mode = LabelMode::ClassBalanced;
        cfg.groups_per_epoch = Some(3000);
        let s = RandomGroups::new(&idx, Cohort::all(100), cfg.clone()).unwrap();
        let mut per = [0u32; 3];
        for p in 0..3000 {
            let g = s.item(0, p);
            let GroupKey::Label(l) = g.key else { panic!() };
            assert!(g.cells.iter().all(|&c| codes[c as usize] == l));
            per[l as usize] += 1;
        }
        // l2 has 4 < 8 cells: excluded; l0 and l1 balanced.
        assert_eq!(per[2], 0);
        assert!((per[0] as i64 - per[1] as i64).abs() < 250, "{per:?}");

        cfg.label_mode = LabelMode::Stratified;
        let mut w = HashMap::new();
        w.insert("l0".to_string(), 1.0 / 80.0);
        w.insert("l1".to_string(), 1.0 / 16.0);
        w.insert("l2".to_string(), 1.0 / 4.0);
        cfg.label_weights = w;
        cfg.k = 9;
        let s = RandomGroups::new(&idx, Cohort::all(100), cfg).unwrap();
        let g = s.item(1, 7);
        let mut per = [0u32; 3];
        for &c in &g.cells {
            per[codes[c as usize] as usize] += 1;
        }
        // Equal shares 3/3/3 but l2 has 4 cells: fits.
        assert_eq!(per, [3, 3, 3]);
    }
}
