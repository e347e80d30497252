//! SQL cohort selection on a large corpus: a selective filter (1% of cells), cohort to the
//! first batch of a sampler, and `expr()` over a 100,000-cell cohort.
//!
//! Needs a converted corpus with the columns of `benches/data/make_synthetic.py --extra-obs 7`
//! (1,000,000 cells x 2,000 genes in the reported figures):
//!
//! ```sh
//! python benches/data/make_synthetic.py q1m.h5ad --cells 1000000 --genes 2000 --density 0.01 --extra-obs 7
//! cellarrow convert q1m.h5ad -o q1m.corpus
//! CELLARROW_QUERY_CORPUS=q1m.corpus cargo bench --bench query
//! ```

use std::hint::black_box;
use std::sync::Arc;

use cellarrow::loader::{BatchOptions, Gatherer, SamplerKind, SamplerSpec};
use cellarrow::query::QueryEngine;
use cellarrow::Corpus;
use criterion::{criterion_group, criterion_main, Criterion};

fn query(c: &mut Criterion) {
    let Ok(path) = std::env::var("CELLARROW_QUERY_CORPUS") else {
        eprintln!(
            "CELLARROW_QUERY_CORPUS is not set: see the top of benches/query.rs; nothing measured"
        );
        return;
    };
    let corpus = Arc::new(Corpus::open(&path).expect("the corpus opens"));
    let engine = QueryEngine::new(corpus.clone()).expect("the engine starts");
    let gatherer = Gatherer::new(corpus.clone(), BatchOptions::default()).expect("a gatherer");
    // 1 of 100 categories: 1% of the cells.
    let selective = "SELECT cell FROM obs WHERE category_3 = 'batch7'";
    let n = engine.cohort(selective).expect("the cohort").len();
    eprintln!("selective filter keeps {n} of {} cells", corpus.n_cells());

    let mut g = c.benchmark_group("query");
    g.sample_size(20);
    g.bench_function("filter_1pct_cohort", |b| {
        b.iter(|| black_box(engine.cohort(selective).unwrap()))
    });
    g.bench_function("cohort_to_first_batch", |b| {
        b.iter(|| {
            let cohort = engine.cohort(selective).unwrap();
            let spec = SamplerSpec {
                batch_size: Some(256),
                ..SamplerSpec::new(SamplerKind::Random, 1)
            };
            let planned = spec.plan(&corpus, cohort).unwrap();
            let request = planned.plan.batch(0).unwrap();
            black_box(gatherer.gather_request(&request).unwrap())
        })
    });
    // int_1 is uniform on 0..1000: 10% of a million cells.
    let expr = "SELECT sum(expr(cell, 'GENE00042')) FROM obs WHERE int_1 < 100";
    g.bench_function("expr_over_100k_cells", |b| {
        b.iter(|| black_box(engine.sql(expr).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, query);
criterion_main!(benches);
