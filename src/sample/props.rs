//! Property tests shared by every sampler: exact sharding, determinism, epoch freshness,
//! resume (same and different world size). No corpus needed: samplers are built on in-memory
//! indexes.

use std::collections::HashMap;
use std::fmt::Debug;

use proptest::prelude::*;

use super::rng::Rng;
use super::*;

/// A sampler's items, per shard, with their global positions.
fn shard_items<S: Sampler>(
    s: &S,
    epoch: u64,
    shard: Shard,
    policy: ShardPolicy,
) -> Vec<(u64, S::Item)> {
    let st = ShardStream::new(s, shard, policy, ShardState::epoch_start(epoch)).unwrap();
    let layout = *st.layout();
    st.enumerate()
        .map(|(i, item)| (layout.global(i as u64), item))
        .collect()
}

fn shards(world: u32, workers: u32) -> Vec<Shard> {
    (0..world)
        .flat_map(|r| (0..workers).map(move |w| Shard::new(r, world, w, workers).unwrap()))
        .collect()
}

/// Checks every sharding property of one sampler; `distinct` says whether items of one epoch
/// are distinct (no replacement), so disjointness also holds for items, not only positions.
fn check<S: Sampler>(
    s: &S,
    world: u32,
    workers: u32,
    epoch: u64,
    cut: u64,
    new_world: u32,
    distinct: bool,
) -> Result<(), TestCaseError>
where
    S::Item: Debug + Clone + serde::Serialize,
{
    let n = s.epoch_len(epoch);
    let epoch_items: Vec<S::Item> = (0..n).map(|p| s.item(epoch, p)).collect();
    // Items compare by their Debug text, so that NaN coordinates compare equal.
    let key = |i: &S::Item| format!("{i:?}");
    let ek: Vec<String> = epoch_items.iter().map(key).collect();
    let all = shards(world, workers);
    let g = all.len() as u64;

    // Even: disjoint, union is the epoch, sizes differ by at most one.
    let mut seen = vec![false; n as usize];
    let mut sizes = Vec::new();
    for &sh in &all {
        let items = shard_items(s, epoch, sh, ShardPolicy::Even);
        prop_assert_eq!(
            items.len() as u64,
            s.shard_len(epoch, sh, ShardPolicy::Even).unwrap()
        );
        sizes.push(items.len() as u64);
        for (p, it) in items {
            prop_assert!(!seen[p as usize], "position {} served twice", p);
            seen[p as usize] = true;
            prop_assert_eq!(&key(&it), &ek[p as usize]);
        }
    }
    prop_assert!(seen.iter().all(|&x| x), "a position was not served");
    prop_assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
    if distinct {
        let mut keys: Vec<String> = epoch_items
            .iter()
            .map(|i| serde_json::to_string(i).unwrap())
            .collect();
        keys.sort();
        keys.dedup();
        prop_assert_eq!(keys.len() as u64, n, "items of one epoch repeat");
    }

    // DropLast and Pad: equal sizes; DropLast serves distinct positions, Pad covers all.
    for policy in [ShardPolicy::DropLast, ShardPolicy::Pad] {
        let mut pos = Vec::new();
        let mut sz = Vec::new();
        for &sh in &all {
            let items = shard_items(s, epoch, sh, policy);
            sz.push(items.len() as u64);
            for (p, it) in items {
                prop_assert_eq!(&key(&it), &ek[p as usize]);
                pos.push(p);
            }
        }
        prop_assert!(sz.iter().all(|&x| x == sz[0]));
        let mut uniq = pos.clone();
        uniq.sort_unstable();
        uniq.dedup();
        match policy {
            ShardPolicy::DropLast => {
                prop_assert_eq!(sz[0], n / g);
                prop_assert_eq!(uniq.len(), pos.len());
            }
            _ => {
                prop_assert_eq!(sz[0], n.div_ceil(g));
                prop_assert_eq!(uniq.len() as u64, n);
            }
        }
    }

    // Same inputs, same stream.
    let sh = all[(cut % g) as usize];
    let a: Vec<S::Item> = shard_items(s, epoch, sh, ShardPolicy::Even)
        .into_iter()
        .map(|x| x.1)
        .collect();
    let b: Vec<S::Item> = shard_items(s, epoch, sh, ShardPolicy::Even)
        .into_iter()
        .map(|x| x.1)
        .collect();
    prop_assert_eq!(
        a.iter().map(key).collect::<Vec<_>>(),
        b.iter().map(key).collect::<Vec<_>>()
    );

    // A different epoch gives a different order (when the epoch is long enough to tell, and
    // varied enough: draws with replacement from one or two cells may repeat by chance).
    let distinct = ek.iter().collect::<std::collections::HashSet<_>>().len();
    if n >= 12 && distinct >= 4 {
        let other: Vec<String> = (0..n).map(|p| key(&s.item(epoch + 1, p))).collect();
        prop_assert_ne!(&other, &ek);
    }

    // Resume in the same layout: save after `k` items (through serde), restore, continue.
    let k = cut % (a.len() as u64 + 1);
    let mut st =
        ShardStream::new(s, sh, ShardPolicy::Even, ShardState::epoch_start(epoch)).unwrap();
    let head: Vec<S::Item> = st.by_ref().take(k as usize).collect();
    let saved: ShardState =
        serde_json::from_str(&serde_json::to_string(&st.state()).unwrap()).unwrap();
    let tail: Vec<S::Item> = ShardStream::new(s, sh, ShardPolicy::Even, saved)
        .unwrap()
        .collect();
    prop_assert_eq!(
        [head, tail].concat().iter().map(key).collect::<Vec<_>>(),
        a.iter().map(key).collect::<Vec<_>>()
    );

    // Elastic resume: every shard yields j items, the job is checkpointed, merged, and a job of
    // `new_world` shards finishes the epoch: every position exactly once overall.
    let j = cut % (n / g + 1);
    let mut served = vec![0u32; n as usize];
    let mut states = Vec::new();
    for &sh in &all {
        let mut st =
            ShardStream::new(s, sh, ShardPolicy::Even, ShardState::epoch_start(epoch)).unwrap();
        for _ in 0..j {
            let p = st.next_global().unwrap();
            let it = st.next().unwrap();
            prop_assert_eq!(&key(&it), &ek[p as usize]);
            served[p as usize] += 1;
        }
        states.push((sh, st.state()));
    }
    let merged = ShardState::merge(&states).unwrap();
    prop_assert_eq!(merged.start, j * g);
    for sh in shards(new_world, 1) {
        let mut st = ShardStream::new(s, sh, ShardPolicy::Even, merged).unwrap();
        while let Some(p) = st.next_global() {
            let it = st.next().unwrap();
            prop_assert_eq!(&key(&it), &ek[p as usize]);
            served[p as usize] += 1;
        }
    }
    prop_assert!(
        served.iter().all(|&c| c == 1),
        "elastic resume lost or repeated a position"
    );
    Ok(())
}

fn sample_index(sizes: &[u64], n_labels: u32, seed: u64) -> SampleIndex {
    let mut first = 0;
    let mut rng = Rng::new(seed);
    let samples: Vec<SampleRange> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let s = SampleRange {
                sample_id: format!("s{i}"),
                first_cell: first,
                n_cells: n,
                spatial_dims: if i % 2 == 0 { 2 } else { 3 },
            };
            first += n;
            s
        })
        .collect();
    let codes: Vec<u32> = (0..first)
        .map(|_| rng.below(n_labels as u64) as u32)
        .collect();
    let coords: Vec<[f64; 3]> = (0..first)
        .map(|i| {
            if i % 29 == 5 {
                [f64::NAN; 3]
            } else {
                [rng.unit() * 30.0, rng.unit() * 30.0, rng.unit() * 10.0]
            }
        })
        .collect();
    SampleIndex::new(samples)
        .unwrap()
        .with_labels(Labels {
            column: "ct".into(),
            names: (0..n_labels).map(|l| format!("l{l}")).collect(),
            codes,
        })
        .unwrap()
        .with_coords(coords)
        .unwrap()
}

fn cohort_of(n: u64, keep_mod: u64, seed: u64) -> Cohort {
    if keep_mod <= 1 {
        return Cohort::all(n);
    }
    let mut rng = Rng::new(seed ^ 77);
    Cohort::from_cells((0..n).filter(|_| rng.below(keep_mod) != 0).collect())
}

fn cfg() -> ProptestConfig {
    ProptestConfig {
        cases: 48,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn random_cells_permutation(n in 0u64..400, keep in 0u64..4, seed: u64, world in 1u32..6, workers in 1u32..4, epoch in 0u64..5, cut: u64, new_world in 1u32..7) {
        let s = RandomCells::new(cohort_of(n, keep, seed), seed);
        check(&s, world, workers, epoch, cut, new_world, true)?;
        // Items are exactly the cohort.
        let mut items: Vec<u64> = (0..s.epoch_len(epoch)).map(|p| s.item(epoch, p)).collect();
        items.sort_unstable();
        prop_assert_eq!(items, s.cohort().iter().collect::<Vec<_>>());
    }

    #[test]
    fn random_cells_replacement_and_weighted(n in 1u64..300, draws in 0u64..300, seed: u64, world in 1u32..6, workers in 1u32..4, epoch in 0u64..5, cut: u64, new_world in 1u32..7) {
        let s = RandomCells::with_replacement(Cohort::all(n), seed, draws);
        check(&s, world, workers, epoch, cut, new_world, false)?;
        let w: Vec<f64> = (0..n).map(|i| (i % 5) as f64).collect();
        if w.iter().any(|&x| x > 0.0) {
            let s = RandomCells::weighted(Cohort::all(n), &w, seed, draws).unwrap();
            check(&s, world, workers, epoch, cut, new_world, false)?;
            prop_assert!((0..draws).all(|p| s.item(epoch, p) % 5 != 0));
        }
    }

    #[test]
    fn random_groups(sizes in proptest::collection::vec(0u64..60, 1..5), k in 1usize..9, mode in 0u8..3, too_few in 0u8..3, seed: u64, world in 1u32..5, workers in 1u32..3, epoch in 0u64..4, cut: u64, new_world in 1u32..6) {
        let idx = sample_index(&sizes, 3, seed);
        let mut c = GroupConfig::new(k, seed);
        c.label_mode = [LabelMode::None, LabelMode::ClassBalanced, LabelMode::Stratified][mode as usize];
        c.too_few = [TooFewCells::Exclude, TooFewCells::Replacement, TooFewCells::Truncate][too_few as usize];
        c.sample_choice = if seed % 2 == 0 { SampleChoice::ByCellCount } else { SampleChoice::Uniform };
        match RandomGroups::new(&idx, Cohort::all(idx.n_cells), c.clone()) {
            Err(e) => prop_assert_eq!(e.kind(), crate::ErrorKind::InvalidInput),
            Ok(s) => {
                check(&s, world, workers, epoch, cut, new_world, false)?;
                for p in 0..s.epoch_len(epoch) {
                    let g = s.item(epoch, p);
                    let r = &idx.samples[g.sample as usize];
                    prop_assert!(g.cells.iter().all(|&x| x >= r.first_cell && x < r.first_cell + r.n_cells));
                    match c.too_few {
                        TooFewCells::Truncate => prop_assert!(g.cells.len() <= k && !g.cells.is_empty()),
                        _ => prop_assert_eq!(g.cells.len(), k),
                    }
                    if c.too_few == TooFewCells::Exclude {
                        let mut d = g.cells.clone();
                        d.sort_unstable();
                        d.dedup();
                        prop_assert_eq!(d.len(), k);
                    }
                }
            }
        }
    }

    #[test]
    fn regions_by_obs_column(sizes in proptest::collection::vec(0u64..80, 1..5), keep in 0u64..3, seed: u64, world in 1u32..5, workers in 1u32..3, epoch in 0u64..4, cut: u64, new_world in 1u32..6) {
        let idx = sample_index(&sizes, 4, seed);
        let cohort = cohort_of(idx.n_cells, keep, seed);
        let s = Regions::from_obs_column(&idx, cohort.clone(), RegionConfig::new(seed)).unwrap();
        check(&s, world, workers, epoch, cut, new_world, true)?;
        // Every cohort cell with a label is in exactly one region.
        let mut cells: Vec<u64> = (0..s.len()).flat_map(|p| s.item(epoch, p).cells).collect();
        cells.sort_unstable();
        prop_assert_eq!(cells, cohort.iter().collect::<Vec<_>>());
    }

    #[test]
    fn spatial_blocks(sizes in proptest::collection::vec(0u64..120, 1..4), size in 2.0f64..20.0, overlap in 0u8..3, keep in 0u64..3, seed: u64, world in 1u32..5, workers in 1u32..3, epoch in 0u64..4, cut: u64, new_world in 1u32..6) {
        let idx = sample_index(&sizes, 2, seed);
        let cohort = cohort_of(idx.n_cells, keep, seed);
        let mut c = BlockConfig::new(size, seed);
        c.stride = Some(size * [1.0, 0.5, 1.5][overlap as usize]);
        c.max_cells = Some(20);
        c.normalize = true;
        let s = SpatialBlocks::new(&idx, cohort.clone(), c).unwrap();
        check(&s, world, workers, epoch, cut, new_world, true)?;
        let coords = idx.coords.as_ref().unwrap();
        let mut covered = std::collections::HashSet::new();
        for p in 0..s.len() {
            let g = s.item(epoch, p);
            let b = g.bounds.unwrap();
            prop_assert!(g.cells.len() <= 20);
            for &x in &g.cells {
                prop_assert!(cohort.contains(x));
                prop_assert!(b.contains(&coords[x as usize]));
            }
            let GroupKey::Block(id) = g.key else { unreachable!() };
            let bi = s.position(g.sample, id).expect("a served block is kept");
            prop_assert_eq!(s.block_id(bi), (g.sample, id));
            prop_assert_eq!(s.grid(g.sample).unwrap().block_bounds(id), b);
            covered.extend(s.block_cells(bi).iter().copied());
        }
        // Tiling (stride = size): every cohort cell with finite coordinates is in a block.
        if overlap == 0 {
            for x in cohort.iter() {
                let d = idx.samples[idx.sample_of(x).unwrap()].spatial_dims as usize;
                if coords[x as usize][..d].iter().all(|v| v.is_finite()) {
                    prop_assert!(covered.contains(&x), "cell {} in no block", x);
                }
            }
        }
    }

    #[test]
    fn block_shuffle(n in 0u64..500, run in 1u64..20, window in 1u64..10, keep in 0u64..3, seed: u64, world in 1u32..6, workers in 1u32..4, epoch in 0u64..5, cut: u64, new_world in 1u32..7) {
        let cohort = cohort_of(n, keep, seed);
        let s = BlockShuffle::new(cohort.clone(), run, window, seed).unwrap();
        check(&s, world, workers, epoch, cut, new_world, true)?;
        let mut items: Vec<u64> = (0..s.epoch_len(epoch)).map(|p| s.item(epoch, p)).collect();
        items.sort_unstable();
        prop_assert_eq!(items, cohort.iter().collect::<Vec<_>>());
    }
}

#[test]
fn label_weights_map() {
    let idx = sample_index(&[200], 2, 1);
    let mut w = HashMap::new();
    w.insert("l0".to_string(), 0.0);
    let s = RandomCells::label_weights(
        Cohort::all(200),
        idx.labels.as_ref().unwrap(),
        &w,
        1.0,
        3,
        100,
    )
    .unwrap();
    let codes = &idx.labels.as_ref().unwrap().codes;
    assert!((0..100).all(|p| codes[s.item(0, p) as usize] == 1));
}
