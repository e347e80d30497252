//! Sampler benchmarks: permutation throughput, and spatial block enumeration at 1,000,000
//! cells and 10,000 blocks (time to the first group, building included).

use std::hint::black_box;

use cellarrow::sample::rng::Rng;
use cellarrow::sample::{
    BlockConfig, BlockShuffle, Cohort, Permutation, RandomCells, SampleIndex, SampleRange, Sampler,
    Shard, ShardPolicy, ShardState, ShardStream, SpatialBlocks,
};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

fn permutation(c: &mut Criterion) {
    let mut g = c.benchmark_group("permutation");
    let n = 1u64 << 20;
    g.throughput(Throughput::Elements(n));
    for size in [1_000_000u64, 1_000_000_000] {
        let p = Permutation::new(size, 42);
        g.bench_function(format!("at/n={size}"), |b| {
            b.iter(|| {
                let mut acc = 0u64;
                for i in 0..n {
                    acc = acc.wrapping_add(p.at(i % size));
                }
                black_box(acc)
            })
        });
    }
    let cells = RandomCells::new(Cohort::all(1_000_000_000), 7);
    g.bench_function("random_cells_shard_stream/1e9 cells, 8 shards", |b| {
        b.iter(|| {
            let shard = Shard::new(3, 4, 1, 2).unwrap();
            let s = ShardStream::new(&cells, shard, ShardPolicy::Even, ShardState::epoch_start(5))
                .unwrap();
            black_box(s.take(n as usize).fold(0u64, |a, x| a ^ x))
        })
    });
    let bs = BlockShuffle::new(Cohort::all(1_000_000_000), 256, 64, 7).unwrap();
    g.bench_function("block_shuffle/1e9 cells", |b| {
        b.iter(|| black_box((0..n).fold(0u64, |a, p| a ^ bs.item(1, p))))
    });
    g.finish();
}

/// One 2-D sample of `n` cells uniform on a 1000 x 1000 square; blocks of 10 give 10,000.
fn spatial_index(n: u64) -> SampleIndex {
    let mut rng = Rng::new(1);
    let coords: Vec<[f64; 3]> = (0..n)
        .map(|_| [rng.unit() * 1000.0, rng.unit() * 1000.0, f64::NAN])
        .collect();
    SampleIndex::new(vec![SampleRange {
        sample_id: "tissue".into(),
        first_cell: 0,
        n_cells: n,
        spatial_dims: 2,
    }])
    .unwrap()
    .with_coords(coords)
    .unwrap()
}

fn blocks(c: &mut Criterion) {
    let n = 1_000_000u64;
    let idx = spatial_index(n);
    let mut g = c.benchmark_group("spatial_blocks");
    g.sample_size(10);
    g.throughput(Throughput::Elements(n));
    g.bench_function("first_group/1e6 cells, 10k blocks", |b| {
        b.iter_batched(
            || BlockConfig::new(10.0, 3),
            |cfg| {
                let s = SpatialBlocks::new(&idx, Cohort::all(n), cfg).unwrap();
                assert_eq!(s.len(), 10_000);
                black_box(s.item(0, 0))
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("first_group/1e6 cells, 10k blocks, stride size/2", |b| {
        b.iter_batched(
            || {
                let mut cfg = BlockConfig::new(10.0, 3);
                cfg.stride = Some(5.0);
                cfg
            },
            |cfg| {
                black_box(
                    SpatialBlocks::new(&idx, Cohort::all(n), cfg)
                        .unwrap()
                        .item(0, 0),
                )
            },
            BatchSize::LargeInput,
        )
    });
    let s = SpatialBlocks::new(&idx, Cohort::all(n), BlockConfig::new(10.0, 3)).unwrap();
    g.throughput(Throughput::Elements(s.len()));
    g.bench_function("epoch_of_groups/10k blocks", |b| {
        b.iter(|| {
            black_box(
                (0..s.len())
                    .map(|p| s.item(1, p).cells.len())
                    .sum::<usize>(),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, permutation, blocks);
criterion_main!(benches);
