//! The expectation is always the rows handed to the test corpus writer, never the corpus reader.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray, DictionaryArray, StringArray};
use arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int32Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow::record_batch::RecordBatch;

use super::*;
use crate::corpus::testing::{
    random_rows, write_corpus, write_corpus_with, Row, TestCorpusOptions,
};
use crate::corpus::{Corpus, IndexType, ValueType};
use crate::sample::{Cohort, RandomCells};
use crate::ErrorKind;

struct Fixture {
    _dir: tempfile::TempDir,
    rows: Vec<Row>,
    corpus: Arc<Corpus>,
}

fn fixture(n_cells: usize, n_genes: u32, opts: &TestCorpusOptions) -> Fixture {
    let rows = random_rows(n_cells, n_genes, 0.1, 7);
    fixture_rows(rows, n_genes, opts)
}

fn fixture_rows(rows: Vec<Row>, n_genes: u32, opts: &TestCorpusOptions) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let n = rows.len() as u64;
    let a = n / 3;
    write_corpus_with(
        dir.path(),
        n_genes as u64,
        &rows,
        &[("a", a), ("b", n - a)],
        opts,
    )
    .unwrap();
    let corpus = Arc::new(Corpus::open(dir.path()).unwrap());
    Fixture {
        _dir: dir,
        rows,
        corpus,
    }
}

fn gatherer(f: &Fixture, options: BatchOptions) -> Arc<Gatherer> {
    Arc::new(Gatherer::new(f.corpus.clone(), options).unwrap())
}

/// A scrambled but fixed cell order, with a repeat, covering every cell.
fn scrambled(n: u64) -> Vec<u64> {
    let mut cells: Vec<u64> = (0..n).map(|i| (i * 7 + 3) % n).collect();
    cells.push(cells[0]);
    cells
}

/// Rows of a CSR batch as (gene ids, values widened to f64).
fn csr_rows(batch: &RecordBatch) -> Vec<Row> {
    let idx = batch.column_by_name("indices").unwrap().as_list::<i32>();
    let val = batch.column_by_name("values").unwrap().as_list::<i32>();
    assert_eq!(
        idx.offsets(),
        val.offsets(),
        "indices and values share the indptr"
    );
    assert_eq!(idx.offsets()[0], 0, "the indptr is local to the batch");
    (0..batch.num_rows())
        .map(|r| {
            let i = idx.value(r);
            let v = val.value(r);
            let genes: Vec<u32> = match i.data_type() {
                DataType::UInt16 => i
                    .as_primitive::<UInt16Type>()
                    .values()
                    .iter()
                    .map(|&x| x as u32)
                    .collect(),
                DataType::UInt32 => i.as_primitive::<UInt32Type>().values().to_vec(),
                DataType::Int32 => i
                    .as_primitive::<Int32Type>()
                    .values()
                    .iter()
                    .map(|&x| u32::try_from(x).expect("a gene id is not negative"))
                    .collect(),
                t => panic!("index type {t}"),
            };
            (genes, to_f64(v.as_ref()))
        })
        .collect()
}

fn to_f64(v: &dyn Array) -> Vec<f64> {
    match v.data_type() {
        DataType::UInt16 => v
            .as_primitive::<UInt16Type>()
            .values()
            .iter()
            .map(|&x| x as f64)
            .collect(),
        DataType::UInt32 => v
            .as_primitive::<UInt32Type>()
            .values()
            .iter()
            .map(|&x| x as f64)
            .collect(),
        DataType::Float32 => v
            .as_primitive::<Float32Type>()
            .values()
            .iter()
            .map(|&x| x as f64)
            .collect(),
        DataType::Float64 => v.as_primitive::<Float64Type>().values().to_vec(),
        t => panic!("value type {t}"),
    }
}

fn cells_of(batch: &RecordBatch) -> Vec<u64> {
    batch
        .column_by_name("cell")
        .unwrap()
        .as_primitive::<UInt64Type>()
        .values()
        .to_vec()
}

#[test]
fn csr_batches_equal_the_written_rows_for_every_stored_type() {
    // (index type, value type, scale of values): 0.5 makes non-integers for the float types.
    let cases = [
        (IndexType::Uint16, ValueType::Uint16, 1.0),
        (IndexType::Uint32, ValueType::Uint32, 1.0),
        (IndexType::Uint16, ValueType::Float32, 0.5),
        (IndexType::Uint32, ValueType::Float64, 0.1),
    ];
    for (it, vt, scale) in cases {
        let rows: Vec<Row> = random_rows(29, 300, 0.1, 11)
            .into_iter()
            .map(|(i, v)| (i, v.into_iter().map(|x| x * scale).collect()))
            .collect();
        let opts = TestCorpusOptions {
            index_type: Some(it),
            value_type: Some(vt),
            ..Default::default()
        };
        let f = fixture_rows(rows, 300, &opts);
        let g = gatherer(&f, BatchOptions::default());
        let cells = scrambled(29);
        let batch = g.gather(&cells, None).unwrap();
        assert_eq!(batch.schema(), g.schema());
        assert_eq!(cells_of(&batch), cells);
        let expect: Vec<Row> = cells.iter().map(|&c| f.rows[c as usize].clone()).collect();
        let got = csr_rows(&batch);
        for (k, (e, g)) in expect.iter().zip(&got).enumerate() {
            assert_eq!(
                e.0, g.0,
                "{it:?}/{vt:?}: genes of row {k} (cell {})",
                cells[k]
            );
            let close =
                e.1.iter()
                    .zip(&g.1)
                    .all(|(a, b)| (a - b).abs() <= 1e-6 * a.abs().max(1.0));
            assert!(
                close && e.1.len() == g.1.len(),
                "{it:?}/{vt:?}: values of row {k}"
            );
        }
    }
}

#[test]
fn native_types_are_kept_and_conversion_gives_the_same_numbers() {
    let f = fixture(20, 100, &TestCorpusOptions::default());
    let cells: Vec<u64> = (0..20).rev().collect();
    let native = gatherer(&f, BatchOptions::default())
        .gather(&cells, None)
        .unwrap();
    let idx = native.column_by_name("indices").unwrap().as_list::<i32>();
    assert_eq!(idx.values().data_type(), &DataType::UInt16);
    let val = native.column_by_name("values").unwrap().as_list::<i32>();
    assert_eq!(val.values().data_type(), &DataType::UInt16);
    for (out, dt) in [
        (ValueOutput::Float32, DataType::Float32),
        (ValueOutput::Float64, DataType::Float64),
    ] {
        let g = gatherer(
            &f,
            BatchOptions {
                values: out,
                ..Default::default()
            },
        );
        let b = g.gather(&cells, None).unwrap();
        let v = b.column_by_name("values").unwrap().as_list::<i32>();
        assert_eq!(v.values().data_type(), &dt);
        assert_eq!(csr_rows(&b), csr_rows(&native));
    }
    for opts in [
        TestCorpusOptions::default(),
        TestCorpusOptions {
            index_type: Some(IndexType::Uint32),
            ..Default::default()
        },
    ] {
        let f = fixture(20, 100, &opts);
        let native = gatherer(&f, BatchOptions::default())
            .gather(&cells, None)
            .unwrap();
        let widened = gatherer(
            &f,
            BatchOptions {
                indices: IndexOutput::Int32,
                values: ValueOutput::Float32,
                ..Default::default()
            },
        )
        .gather(&cells, None)
        .unwrap();
        let idx = widened.column_by_name("indices").unwrap().as_list::<i32>();
        assert_eq!(idx.values().data_type(), &DataType::Int32);
        assert_eq!(csr_rows(&widened), csr_rows(&native));
    }
}

#[test]
fn batches_reuse_the_buffers_of_dropped_batches() {
    let f = fixture(40, 100, &TestCorpusOptions::default());
    let g = gatherer(&f, BatchOptions::default());
    let values_ptr = |b: &RecordBatch| {
        let v = b.column_by_name("values").unwrap().as_list::<i32>();
        v.values().to_data().buffers()[0].as_ptr()
    };
    let first = g.gather(&scrambled(40), None).unwrap();
    let expect = csr_rows(&first);
    let p = values_ptr(&first);
    let held = g.gather(&scrambled(40), None).unwrap();
    assert_ne!(values_ptr(&held), p, "a live batch's memory is not reused");
    drop(first);
    let reused = g.gather(&scrambled(40), None).unwrap();
    assert_eq!(values_ptr(&reused), p);
    assert_eq!(csr_rows(&reused), expect);
    assert_eq!(csr_rows(&held), expect);
}

#[test]
fn dense_equals_csr_expanded_over_a_gene_subset() {
    let f = fixture(23, 50, &TestCorpusOptions::default());
    let genes: Vec<u32> = vec![49, 0, 7, 8, 21, 33];
    let names: Vec<String> = genes.iter().map(|g| format!("gene{g}")).collect();
    let cells = scrambled(23);
    for sel in [DenseGenes::Ids(genes.clone()), DenseGenes::Names(names)] {
        let g = gatherer(
            &f,
            BatchOptions {
                dense: Some(sel),
                ..Default::default()
            },
        );
        let b = g.gather(&cells, None).unwrap();
        assert!(b.column_by_name("indices").is_none());
        let d = b.column_by_name("dense").unwrap().as_fixed_size_list();
        assert_eq!(d.value_length(), genes.len() as i32);
        let vals = d.values().as_primitive::<Float32Type>().values();
        for (r, &c) in cells.iter().enumerate() {
            let (ri, rv) = &f.rows[c as usize];
            for (col, &gene) in genes.iter().enumerate() {
                let expect = ri
                    .iter()
                    .position(|&x| x == gene)
                    .map(|p| rv[p])
                    .unwrap_or(0.0);
                assert_eq!(
                    vals[r * genes.len() + col] as f64,
                    expect,
                    "cell {c} gene {gene}"
                );
            }
        }
    }
    let all = gatherer(
        &f,
        BatchOptions {
            dense: Some(DenseGenes::All),
            values: ValueOutput::Float64,
            ..Default::default()
        },
    );
    let b = all.gather(&[5], None).unwrap();
    let d = b.column_by_name("dense").unwrap().as_fixed_size_list();
    let vals = d.values().as_primitive::<Float64Type>().values();
    let mut expect = vec![0.0; 50];
    for (&i, &v) in f.rows[5].0.iter().zip(&f.rows[5].1) {
        expect[i as usize] = v;
    }
    assert_eq!(vals.to_vec(), expect);
}

#[test]
fn bad_requests_are_errors() {
    let f = fixture(10, 20, &TestCorpusOptions::default());
    let g = gatherer(&f, BatchOptions::default());
    let e = g.gather(&[3, 10], None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.message().contains("cell 10"), "{e}");
    let e = Gatherer::new(
        f.corpus.clone(),
        BatchOptions {
            dense: Some(DenseGenes::Names(vec!["nope".into()])),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(e.message().contains("nope"), "{e}");
    let e = Gatherer::new(
        f.corpus.clone(),
        BatchOptions {
            dense: Some(DenseGenes::Ids(vec![20])),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(e.message().contains("20"), "{e}");
    let e = Gatherer::new(
        f.corpus.clone(),
        BatchOptions {
            obs_columns: vec!["nope".into()],
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(e.message().contains("nope"), "{e}");
    let grouped = gatherer(
        &f,
        BatchOptions {
            group_column: true,
            ..Default::default()
        },
    );
    assert!(grouped.gather(&[1, 2], None).is_err());
    assert!(grouped.gather(&[1, 2], Some(&[0])).is_err());
}

#[test]
fn empty_batches_and_empty_cells_are_fine() {
    let rows: Vec<Row> = vec![(vec![], vec![]), (vec![3], vec![2.0]), (vec![], vec![])];
    let f = fixture_rows(rows, 5, &TestCorpusOptions::default());
    let g = gatherer(&f, BatchOptions::default());
    let b = g.gather(&[], None).unwrap();
    assert_eq!(b.num_rows(), 0);
    let b = g.gather(&[0, 2, 1], None).unwrap();
    assert_eq!(
        csr_rows(&b),
        vec![(vec![], vec![]), (vec![], vec![]), (vec![3], vec![2.0])]
    );
}

#[test]
fn obs_columns_and_coordinates_follow_the_cells() {
    let n = 12usize;
    let coords: Vec<Option<[f64; 2]>> =
        (0..n).map(|i| Some([i as f64, 100.0 + i as f64])).collect();
    let labels: Vec<&str> = (0..n).map(|i| if i % 3 == 0 { "T" } else { "B" }).collect();
    let dict: DictionaryArray<Int32Type> = labels.iter().copied().collect();
    let opts = TestCorpusOptions {
        coords: Some(coords),
        obs_columns: vec![("cell_type".into(), Arc::new(dict) as _)],
        ..Default::default()
    };
    let f = fixture(n, 30, &opts);
    let g = gatherer(
        &f,
        BatchOptions {
            coordinates: true,
            obs_columns: vec!["cell_type".into(), "obs_name".into()],
            ..Default::default()
        },
    );
    let cells = vec![11u64, 0, 4, 4];
    let b = g.gather(&cells, None).unwrap();
    let x = b.column_by_name("x").unwrap().as_primitive::<Float64Type>();
    let y = b.column_by_name("y").unwrap().as_primitive::<Float64Type>();
    assert!(b.column_by_name("z").is_none());
    for (r, &c) in cells.iter().enumerate() {
        assert_eq!(x.value(r), c as f64);
        assert_eq!(y.value(r), 100.0 + c as f64);
    }
    let ct = b.column_by_name("cell_type").unwrap();
    assert!(
        matches!(ct.data_type(), DataType::Dictionary(_, _)),
        "categoricals stay dictionaries"
    );
    let ct = arrow::compute::cast(ct, &DataType::Utf8).unwrap();
    let ct = ct.as_any().downcast_ref::<StringArray>().unwrap();
    let got: Vec<&str> = (0..cells.len()).map(|r| ct.value(r)).collect();
    let expect: Vec<&str> = cells.iter().map(|&c| labels[c as usize]).collect();
    assert_eq!(got, expect);
    let names = b.column_by_name("obs_name").unwrap().as_string::<i32>();
    // Sample "a" holds the first n/3 cells.
    assert_eq!(names.value(0), "b-7");
    assert_eq!(names.value(1), "a-0");
}

fn collect(loader: Loader) -> Vec<RecordBatch> {
    loader.map(|b| b.unwrap()).collect()
}

#[test]
fn loader_order_is_the_plan_order_with_any_thread_count() {
    let f = fixture(61, 40, &TestCorpusOptions::default());
    let g = gatherer(&f, BatchOptions::default());
    let cells = scrambled(61);
    let plan: Arc<dyn BatchPlan> = Arc::new(CellBatches::new(cells.clone(), 5, false));
    let expect: Vec<RecordBatch> = (0..plan.n_batches())
        .map(|i| g.gather_request(&plan.batch(i).unwrap()).unwrap())
        .collect();
    assert_eq!(expect.len(), 13);
    for threads in [0, 1, 4] {
        for prefetch in [1, 3] {
            let got = collect(Loader::new(
                g.clone(),
                plan.clone(),
                LoaderOptions {
                    threads,
                    prefetch,
                    start: 0,
                    read_ahead: 0,
                },
            ));
            assert_eq!(got, expect, "threads {threads} prefetch {prefetch}");
        }
    }
    let all: Vec<u64> = expect.iter().flat_map(cells_of).collect();
    assert_eq!(all, cells);
    let resumed = collect(Loader::new(
        g.clone(),
        plan.clone(),
        LoaderOptions {
            threads: 2,
            prefetch: 2,
            start: 10,
            read_ahead: 0,
        },
    ));
    assert_eq!(resumed, expect[10..].to_vec());
}

#[test]
fn dropping_a_loader_early_does_not_hang() {
    let f = fixture(200, 40, &TestCorpusOptions::default());
    let g = gatherer(&f, BatchOptions::default());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let plan: Arc<dyn BatchPlan> = Arc::new(CellBatches::new(scrambled(200), 1, false));
        for take in [0, 1, 7] {
            let mut loader = Loader::new(
                g.clone(),
                plan.clone(),
                LoaderOptions {
                    threads: 4,
                    prefetch: 2,
                    start: 0,
                    read_ahead: 0,
                },
            );
            for _ in 0..take {
                loader.next().unwrap().unwrap();
            }
            drop(loader);
        }
        tx.send(()).unwrap();
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("dropping the loader joined its threads");
}

/// A plan whose batch 3 is out of range.
struct Failing;
impl BatchPlan for Failing {
    fn n_batches(&self) -> usize {
        6
    }
    fn batch(&self, i: usize) -> crate::Result<BatchRequest> {
        let cells = if i == 3 {
            vec![1_000_000]
        } else {
            vec![i as u64]
        };
        Ok(BatchRequest {
            cells,
            groups: None,
            bounds: None,
        })
    }
}

#[test]
fn a_failed_batch_is_yielded_as_an_error_and_ends_the_stream() {
    let f = fixture(10, 20, &TestCorpusOptions::default());
    let g = gatherer(&f, BatchOptions::default());
    for threads in [0, 3] {
        let out: Vec<_> = Loader::new(
            g.clone(),
            Arc::new(Failing),
            LoaderOptions {
                threads,
                prefetch: 4,
                start: 0,
                read_ahead: 0,
            },
        )
        .collect();
        assert_eq!(out.len(), 4, "threads {threads}");
        assert!(out[..3].iter().all(|b| b.is_ok()));
        assert!(out[3].is_err());
    }
}

#[test]
fn sampled_shards_together_serve_the_epoch_once() {
    let f = fixture(50, 20, &TestCorpusOptions::default());
    let g = gatherer(&f, BatchOptions::default());
    let sampler = RandomCells::new(Cohort::all(50), 3);
    let mut seen = Vec::new();
    for rank in 0..3 {
        let shard = Shard::new(rank, 3, 0, 1).unwrap();
        let plan = SampledCells::new(
            sampler.clone(),
            shard,
            ShardPolicy::Even,
            ShardState::epoch_start(2),
            4,
            false,
        )
        .unwrap();
        let expect: Vec<u64> = sampler
            .stream(shard, ShardPolicy::Even, ShardState::epoch_start(2))
            .unwrap()
            .collect();
        let got: Vec<u64> = collect(Loader::new(
            g.clone(),
            Arc::new(plan),
            LoaderOptions::default(),
        ))
        .iter()
        .flat_map(cells_of)
        .collect();
        assert_eq!(got, expect, "rank {rank} follows its shard stream");
        seen.extend(got);
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..50).collect::<Vec<_>>());
    // Resuming from a saved position continues the same shard stream.
    let shard = Shard::new(1, 3, 0, 1).unwrap();
    let state = ShardState {
        epoch: 2,
        start: 0,
        position: 5,
    };
    let plan =
        SampledCells::new(sampler.clone(), shard, ShardPolicy::Even, state, 4, false).unwrap();
    let got: Vec<u64> = collect(Loader::new(g, Arc::new(plan), LoaderOptions::default()))
        .iter()
        .flat_map(cells_of)
        .collect();
    let expect: Vec<u64> = sampler
        .stream(shard, ShardPolicy::Even, state)
        .unwrap()
        .collect();
    assert_eq!(got, expect);
}

#[test]
fn group_batches_carry_a_group_column() {
    let f = fixture(10, 20, &TestCorpusOptions::default());
    let g = gatherer(
        &f,
        BatchOptions {
            group_column: true,
            ..Default::default()
        },
    );
    let plan = GroupBatches::new(vec![(7, vec![1, 2]), (8, vec![9]), (9, vec![0, 0, 3])], 2);
    let batches = collect(Loader::new(g, Arc::new(plan), LoaderOptions::default()));
    assert_eq!(batches.len(), 2);
    assert_eq!(cells_of(&batches[0]), vec![1, 2, 9]);
    let grp = batches[0]
        .column_by_name("group")
        .unwrap()
        .as_primitive::<UInt64Type>();
    assert_eq!(grp.values().to_vec(), vec![7, 7, 8]);
    assert_eq!(cells_of(&batches[1]), vec![0, 0, 3]);
    let rows = csr_rows(&batches[1]);
    assert_eq!(rows[0], f.rows[0]);
    assert_eq!(rows[2], f.rows[3]);
}

#[test]
fn bench_counts_what_it_delivers() {
    let f = fixture(40, 30, &TestCorpusOptions::default());
    let g = gatherer(&f, BatchOptions::default());
    let plan = Arc::new(CellBatches::new((0..40).collect(), 8, false));
    let r = bench::run(g, plan, 1, 2).unwrap();
    let nnz: usize = f.rows.iter().map(|r| r.0.len()).sum();
    let sum: f64 = f.rows.iter().flat_map(|r| r.1.iter()).sum();
    assert_eq!((r.batches, r.cells, r.nnz), (5, 40, nnz as u64));
    assert_eq!(r.bytes, nnz as u64 * 4, "u16 indices and u16 values");
    assert_eq!(r.checksum, sum);
    assert!(bench::memcpy_limit(&r.batch_bytes) > 0.0);
}

#[test]
fn the_smallest_corpus_works_through_write_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<Row> = vec![
        (vec![0, 4], vec![1.0, 2.0]),
        (vec![], vec![]),
        (vec![9], vec![5.0]),
    ];
    write_corpus(dir.path(), 10, &rows, &[("a", 2), ("b", 1)]).unwrap();
    let corpus = Arc::new(Corpus::open(dir.path()).unwrap());
    let g = Gatherer::new(corpus, BatchOptions::default()).unwrap();
    assert_eq!(
        csr_rows(&g.gather(&[2, 0, 1], None).unwrap()),
        vec![rows[2].clone(), rows[0].clone(), rows[1].clone()]
    );
}

/// Writes the benchmark corpus of the loader targets (50,000 cells x 20,000 genes, 5% dense,
/// u16 indices and counts) to `$CELLARROW_BENCH_CORPUS`, for `cellarrow bench`:
/// `CELLARROW_BENCH_CORPUS=/tmp/bench.corpus cargo test --lib write_bench_corpus -- --ignored`.
#[test]
#[ignore = "writes a 200 MB corpus; run by hand before `cellarrow bench`"]
fn write_bench_corpus() {
    let Ok(path) = std::env::var("CELLARROW_BENCH_CORPUS") else {
        panic!("set CELLARROW_BENCH_CORPUS to the directory to create");
    };
    let rows = random_rows(50_000, 20_000, 0.05, 42);
    let opts = TestCorpusOptions {
        batch_rows: 65_536,
        part_cells: 16_384,
        ..Default::default()
    };
    let m = write_corpus_with(
        std::path::Path::new(&path),
        20_000,
        &rows,
        &[("s0", 25_000), ("s1", 25_000)],
        &opts,
    )
    .unwrap();
    assert_eq!(
        (m.index_type, m.value_type),
        (IndexType::Uint16, ValueType::Uint16)
    );
}

#[test]
fn gathering_into_caller_memory_gives_the_batch_rows() {
    for opts in [
        TestCorpusOptions::default(),
        TestCorpusOptions {
            index_type: Some(IndexType::Uint32),
            value_type: Some(ValueType::Float64),
            ..Default::default()
        },
    ] {
        let f = fixture(30, 100, &opts);
        let g = gatherer(&f, BatchOptions::default());
        let cells: Vec<u64> = vec![7, 0, 29, 7, 13];
        let expect = csr_rows(&g.gather(&cells, None).unwrap());
        let nnz = g.nnz(&cells).unwrap();
        let size = f.corpus.manifest().value_type.byte_width();
        let (mut p, mut i, mut v) = (
            vec![0u8; 4 * (cells.len() + 1)],
            vec![0u8; 4 * nnz],
            vec![0u8; size * nnz],
        );
        g.gather_csr_into(&cells, &mut p, &mut i, &mut v).unwrap();
        let words = |b: &[u8]| -> Vec<i32> {
            b.chunks_exact(4)
                .map(|c| i32::from_ne_bytes(c.try_into().unwrap()))
                .collect()
        };
        let (indptr, genes) = (words(&p), words(&i));
        let value = |k: usize| -> f64 {
            let b = &v[k * size..(k + 1) * size];
            match size {
                2 => u16::from_ne_bytes(b.try_into().unwrap()) as f64,
                8 => f64::from_ne_bytes(b.try_into().unwrap()),
                _ => unreachable!("the fixtures store u16 or f64 values"),
            }
        };
        let got: Vec<Row> = (0..cells.len())
            .map(|r| {
                let range = indptr[r] as usize..indptr[r + 1] as usize;
                (
                    range.clone().map(|k| genes[k] as u32).collect(),
                    range.map(value).collect(),
                )
            })
            .collect();
        assert_eq!(got, expect);

        let err = g
            .gather_csr_into(&cells, &mut p, &mut i[..4 * nnz - 4], &mut v)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        let err = g.nnz(&[30]).unwrap_err();
        assert!(err.to_string().contains("cell 30 is out of range"), "{err}");
    }
}

/// Every data buffer of `batch`'s arrays (children included), as byte ranges.
fn buffer_ranges(batch: &RecordBatch) -> Vec<(String, std::ops::Range<usize>)> {
    fn walk(
        name: &str,
        d: &arrow::array::ArrayData,
        out: &mut Vec<(String, std::ops::Range<usize>)>,
    ) {
        for b in d.buffers() {
            let p = b.as_ptr() as usize;
            out.push((name.to_string(), p..p + b.len()));
        }
        for c in d.child_data() {
            walk(name, c, out);
        }
    }
    let mut out = Vec::new();
    for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
        walk(f.name(), &c.to_data(), &mut out);
    }
    out
}

#[test]
fn batches_gathered_into_a_region_equal_the_gathered_ones_and_lie_in_it() {
    let f = fixture(40, 60, &TestCorpusOptions::default());
    let cells = scrambled(40);
    let cases = [
        BatchOptions::default(),
        BatchOptions {
            values: ValueOutput::Float32,
            indices: IndexOutput::Int32,
            obs_columns: vec!["obs_name".into()],
            ..Default::default()
        },
        BatchOptions {
            dense: Some(DenseGenes::Ids(vec![3, 59, 0])),
            ..Default::default()
        },
    ];
    for options in cases {
        let g = gatherer(&f, options.clone());
        let plan: Arc<dyn BatchPlan> = Arc::new(CellBatches::new(cells.clone(), 16, false));
        let expect: Vec<RecordBatch> = (0..plan.n_batches())
            .map(|i| g.gather_request(&plan.batch(i).unwrap()).unwrap())
            .collect();
        let mut loader = Loader::new(
            g.clone(),
            plan,
            LoaderOptions {
                threads: 0,
                prefetch: 1,
                start: 0,
                read_ahead: 0,
            },
        );
        let mut k = 0;
        loop {
            let mut memory = vec![0u64; 4096];
            let start = memory.as_ptr() as usize;
            let owner = Arc::new(());
            let base = std::ptr::NonNull::new(memory.as_mut_ptr().cast::<u8>()).unwrap();
            // SAFETY: `memory` lives until after the batch, which is dropped below.
            let mut region = unsafe { Region::new(base, memory.len() * 8, owner.clone()) };
            let Some(b) = loader.next_in(&mut region) else {
                break;
            };
            let b = b.unwrap();
            assert_eq!(b, expect[k], "batch {k} with {options:?}");
            let used = start..start + region.used();
            let ranges = buffer_ranges(&b);
            for (name, r) in &ranges {
                let inside = used.contains(&r.start) && r.end <= used.end;
                // Ids and matrix buffers go to the region; obs columns are Arrow's own.
                assert_eq!(inside, name != "obs_name", "{name} {r:?} in {used:?}");
            }
            assert!(
                Arc::strong_count(&owner) > 1,
                "the batch holds the region's owner"
            );
            drop(b);
            assert_eq!(Arc::strong_count(&owner), 2, "the region and this test");
            k += 1;
        }
        assert_eq!(k, expect.len());
    }

    // A region too small for the matrix: what does not fit comes from the pool.
    let g = gatherer(&f, BatchOptions::default());
    let plan: Arc<dyn BatchPlan> = Arc::new(CellBatches::new(cells.clone(), 40, false));
    let expect = g.gather_request(&plan.batch(0).unwrap()).unwrap();
    let mut memory = vec![0u64; 48];
    let base = std::ptr::NonNull::new(memory.as_mut_ptr().cast::<u8>()).unwrap();
    // SAFETY: as above.
    let mut region = unsafe { Region::new(base, 384, Arc::new(())) };
    let mut loader = Loader::new(
        g.clone(),
        plan.clone(),
        LoaderOptions {
            threads: 0,
            prefetch: 1,
            start: 0,
            read_ahead: 0,
        },
    );
    let b = loader.next_in(&mut region).unwrap().unwrap();
    assert_eq!(b, expect);
    // The cell ids fit (after up to 56 bytes to the first 64-byte boundary), the offsets not.
    assert!((320..=376).contains(&region.used()), "{}", region.used());
    drop(b);

    let mut threaded = Loader::new(
        g,
        plan,
        LoaderOptions {
            threads: 1,
            prefetch: 1,
            start: 0,
            read_ahead: 0,
        },
    );
    let err = threaded.next_in(&mut region).unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("threads: 0"), "{err}");
}
