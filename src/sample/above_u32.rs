//! The sampling arithmetic at cell ids above 2^32.
//!
//! A whole corpus whose ids pass 2^32 is not cheap to build: every part must hold the cells
//! the manifest says it holds (an Arrow list of n rows has n + 1 offsets, so 5e9 empty cells
//! would cost 20 GB of offsets). These tests run each layer that turns positions into cell
//! ids (the permutation, the shard layout of 2 ranks, the cohort) at ids above 2^32 instead;
//! `Corpus::locate` keeps its batch starts as `u64` and is not covered here.

use super::{Cohort, Layout, Permutation, Shard, ShardPolicy};

const N: u64 = 5_000_000_000 + 1_234;

#[test]
fn permutation_over_more_than_u32_cells_is_a_bijection_where_checked() {
    let p = Permutation::new(N, 42);
    let mut above = 0;
    for i in (0..N).step_by(97_654_321).chain(N - 5..N) {
        let v = p.at(i);
        assert!(v < N);
        assert_eq!(p.index_of(v), i, "position {i}");
        above += (v > u32::MAX as u64) as u32;
    }
    // Values spread over the whole range, so some pass 2^32 (about 14% of 5e9 are below).
    assert!(above > 0);
}

#[test]
fn two_ranks_split_an_epoch_longer_than_u32() {
    let layouts: Vec<Layout> = (0..2)
        .map(|r| Layout::new(N, 0, Shard::new(r, 2, 0, 1).unwrap(), ShardPolicy::Even).unwrap())
        .collect();
    assert_eq!(layouts[0].len() + layouts[1].len(), N);
    for (r, l) in layouts.iter().enumerate() {
        let last = l.global(l.len() - 1);
        assert!(last > u32::MAX as u64 && last < N);
        assert_eq!(last % 2, r as u64);
        // A position past 2^32 / 2 maps to an id past 2^32, with no wrap at 32 bits.
        let i = (1u64 << 31) + 7;
        assert_eq!(l.global(i), 2 * i + r as u64);
    }
}

#[test]
fn cohort_of_ids_above_u32_finds_its_ranges() {
    let base = 1u64 << 32;
    let ids = vec![base + 9, base - 1, base + 3, base + 3, 4_999_999_999];
    let c = Cohort::from_cells_checked(ids, N).unwrap();
    assert_eq!(c.len(), 4);
    assert_eq!(c.range(base, base + 10), 1..3);
    assert_eq!(c.last(), Some(4_999_999_999));
    assert!(Cohort::from_cells_checked(vec![N], N).is_err());
}
