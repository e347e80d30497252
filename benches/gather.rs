//! Gather throughput: one batch of 256 random cells (CSR native, CSR to f32, dense over 512
//! genes), and a whole epoch through the prefetching loader with 1 and 2 threads.
//!
//! The corpus is synthetic: 20,000 cells x 4,000 genes at 5% density, u16 indices and counts.

use std::hint::black_box;
use std::sync::Arc;

use cellarrow::corpus::testing::{random_rows, write_corpus_with, TestCorpusOptions};
use cellarrow::loader::{
    BatchOptions, BatchPlan, DenseGenes, Gatherer, Loader, LoaderOptions, SampledCells, ValueOutput,
};
use cellarrow::sample::{Cohort, RandomCells, Sampler, Shard, ShardPolicy, ShardState};
use cellarrow::Corpus;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const CELLS: usize = 20_000;
const GENES: u32 = 4_000;
const BATCH: usize = 256;

fn corpus() -> (tempfile::TempDir, Arc<Corpus>) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let rows = random_rows(CELLS, GENES, 0.05, 1);
    let opts = TestCorpusOptions {
        batch_rows: 4096,
        part_cells: 8192,
        ..Default::default()
    };
    write_corpus_with(
        dir.path(),
        GENES as u64,
        &rows,
        &[("a", CELLS as u64)],
        &opts,
    )
    .expect("the corpus is written");
    let corpus = Arc::new(Corpus::open(dir.path()).expect("the corpus opens"));
    (dir, corpus)
}

fn gather(c: &mut Criterion) {
    let (_dir, corpus) = corpus();
    let sampler = RandomCells::new(Cohort::all(CELLS as u64), 7);
    let cells: Vec<u64> = (0..BATCH as u64).map(|p| sampler.item(0, p)).collect();
    let nnz: usize = cells.iter().map(|&c| corpus.row_nnz(c)).sum();

    let mut g = c.benchmark_group("gather_256_random_cells");
    g.throughput(Throughput::Bytes((nnz * 4) as u64));
    let cases = [
        ("csr_native", BatchOptions::default()),
        (
            "csr_f32",
            BatchOptions {
                values: ValueOutput::Float32,
                ..Default::default()
            },
        ),
        (
            "dense_512_genes",
            BatchOptions {
                dense: Some(DenseGenes::Ids((0..512).map(|i| i * 7).collect())),
                ..Default::default()
            },
        ),
    ];
    for (name, options) in cases {
        let gatherer = Gatherer::new(corpus.clone(), options).expect("valid options");
        g.bench_function(name, |b| {
            b.iter(|| black_box(gatherer.gather(black_box(&cells), None).expect("in range")))
        });
    }
    g.bench_function("memcpy_same_bytes", |b| {
        let src = vec![1u8; nnz * 4];
        b.iter(|| {
            let mut dst: Vec<u8> = Vec::with_capacity(src.len());
            dst.extend_from_slice(black_box(&src));
            black_box(dst)
        })
    });
    g.finish();

    let mut g = c.benchmark_group("loader_epoch");
    g.sample_size(10);
    g.throughput(Throughput::Elements(CELLS as u64));
    let gatherer =
        Arc::new(Gatherer::new(corpus.clone(), BatchOptions::default()).expect("default options"));
    for threads in [1usize, 2] {
        g.bench_function(format!("threads_{threads}"), |b| {
            b.iter(|| {
                let plan: Arc<dyn BatchPlan> = Arc::new(
                    SampledCells::new(
                        sampler.clone(),
                        Shard::single(),
                        ShardPolicy::Even,
                        ShardState::epoch_start(0),
                        BATCH,
                        false,
                    )
                    .expect("a valid shard"),
                );
                let loader = Loader::new(
                    gatherer.clone(),
                    plan,
                    LoaderOptions {
                        threads,
                        prefetch: 8,
                        ..LoaderOptions::default()
                    },
                );
                let mut rows = 0;
                for b in loader {
                    rows += b.expect("in range").num_rows();
                }
                black_box(rows)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, gather);
criterion_main!(benches);
