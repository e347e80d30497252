//! `cellarrow sample` end to end over real fixtures: the flags name the library's settings,
//! and the stream written is the library's batches for those settings.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{AsArray, Float64Array, RecordBatch};
use arrow::datatypes::{Float64Type, UInt64Type};
use cellarrow::loader::{Gatherer, SamplerKind, SamplerSpec};
use cellarrow::sample::ShardPolicy;
use cellarrow::Corpus;

use crate::common::{assert_no_panic, chr21, cli, data, scratch, stderr};

/// Converts `inputs` into `dir/c`.
fn convert(dir: &Path, inputs: &[PathBuf]) -> PathBuf {
    let corpus = dir.join("c");
    let mut args: Vec<std::ffi::OsString> = vec!["convert".into()];
    args.extend(inputs.iter().map(|p| p.as_os_str().to_owned()));
    args.extend(["-o".into(), corpus.as_os_str().to_owned(), "--quiet".into()]);
    let o = cli(&args);
    assert!(o.status.success(), "convert: {}", stderr(&o));
    corpus
}

fn visium() -> PathBuf {
    data("squidpy_visium_mouse_brain_49spots.h5ad")
}

/// Runs `cellarrow sample CORPUS ARGS -o OUT` and reads the stream back.
fn sample(corpus: &Path, args: &[&str], out: &Path) -> Vec<RecordBatch> {
    let o = sample_status(corpus, args, Some(out));
    assert_no_panic("sample", &o);
    assert!(o.status.success(), "sample {args:?}: {}", stderr(&o));
    let file = std::fs::File::open(out).unwrap();
    arrow::ipc::reader::StreamReader::try_new(file, None)
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

fn sample_status(corpus: &Path, args: &[&str], out: Option<&Path>) -> std::process::Output {
    let mut all: Vec<std::ffi::OsString> = vec!["sample".into(), corpus.as_os_str().to_owned()];
    all.extend(args.iter().map(|a| a.into()));
    match out {
        Some(o) => all.extend(["-o".into(), o.as_os_str().to_owned()]),
        None => all.push("--summary".into()),
    }
    cli(&all)
}

/// The error of a `sample --summary` that must fail.
fn sample_error(corpus: &Path, args: &[&str]) -> String {
    let o = sample_status(corpus, args, None);
    assert_no_panic("sample", &o);
    assert!(!o.status.success(), "sample {args:?} should fail");
    stderr(&o)
}

fn cells(batches: &[RecordBatch]) -> Vec<u64> {
    batches
        .iter()
        .flat_map(|b| {
            b.column_by_name("cell")
                .unwrap()
                .as_primitive::<UInt64Type>()
                .values()
                .to_vec()
        })
        .collect()
}

/// The library's batches for `spec`, as `cellarrow sample` should write them.
fn library_batches(corpus: &Path, mut spec: SamplerSpec) -> Vec<RecordBatch> {
    let corpus = Arc::new(Corpus::open(corpus).unwrap());
    let cohort = spec.select(&corpus, None).unwrap();
    let plan = spec.plan(&corpus, cohort).unwrap().plan;
    let g = Gatherer::new(corpus, spec.batch_options()).unwrap();
    (0..plan.n_batches())
        .map(|i| g.gather_request(&plan.batch(i).unwrap()).unwrap())
        .collect()
}

fn f64s<'a>(b: &'a RecordBatch, name: &str) -> &'a Float64Array {
    b.column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"))
        .as_primitive::<Float64Type>()
}

#[test]
fn sample_writes_the_library_batches_of_the_shard() {
    let dir = scratch("sample-shard");
    let corpus = convert(dir.path(), &[chr21()]);
    let out = dir.path().join("rank1.arrow");
    let args = [
        "--batch-size",
        "4",
        "--seed",
        "9",
        "--epoch",
        "2",
        "--rank",
        "1",
        "--world-size",
        "2",
        "--obs",
        "obs_name",
        "--threads",
        "3",
        "--indices",
        "i32",
    ];
    let got = sample(&corpus, &args, &out);
    let spec = SamplerSpec {
        batch_size: Some(4),
        epoch: 2,
        rank: 1,
        world_size: 2,
        obs: vec!["obs_name".into()],
        indices: "i32".parse().unwrap(),
        ..SamplerSpec::new(SamplerKind::Random, 9)
    };
    let want = library_batches(&corpus, spec);
    assert!(want.len() > 1);
    assert_eq!(got, want);
    let e = sample_error(&corpus, &["--rank", "2", "--world-size", "2"]);
    assert!(e.contains("rank 2"), "{e}");
}

#[test]
fn shuffle_streams_of_two_ranks_partition_the_epoch() {
    let dir = scratch("sample-shuffle");
    let corpus = convert(dir.path(), &[chr21()]);
    let n = Corpus::open(&corpus).unwrap().n_cells();
    let mut all = Vec::new();
    for rank in ["0", "1"] {
        let out = dir.path().join(format!("rank{rank}.arrow"));
        let args = [
            "--sampler",
            "shuffle",
            "--shuffle-run",
            "4",
            "--shuffle-window",
            "3",
            "--seed",
            "11",
            "--epoch",
            "1",
            "--rank",
            rank,
            "--world-size",
            "2",
            "--batch-size",
            "8",
        ];
        let got = sample(&corpus, &args, &out);
        assert!(got.iter().all(|b| b.column_by_name("group").is_none()));
        all.extend(cells(&got));
    }
    all.sort_unstable();
    assert_eq!(all, (0..n).collect::<Vec<u64>>());
    let e = sample_error(&corpus, &["--sampler", "shuffle", "--shuffle-run", "0"]);
    assert!(e.contains("shuffle_run must be at least 1, got 0"), "{e}");
}

#[test]
fn blocks_tile_the_spots_with_their_boxes_and_normalised_coordinates() {
    let dir = scratch("sample-blocks");
    let corpus = convert(dir.path(), &[visium(), chr21()]);
    let out = dir.path().join("blocks.arrow");
    let size = 300.0;
    let got = sample(
        &corpus,
        &[
            "--sampler",
            "blocks",
            "--block-size",
            "300",
            "--bounds",
            "--batch-size",
            "2",
        ],
        &out,
    );
    for b in &got {
        let grp = b
            .column_by_name("group")
            .unwrap()
            .as_primitive::<UInt64Type>();
        for axis in ["x", "y"] {
            let (v, lo, hi) = (
                f64s(b, axis),
                f64s(b, &format!("min_{axis}")),
                f64s(b, &format!("max_{axis}")),
            );
            let norm = f64s(b, &format!("{axis}_norm"));
            for r in 0..b.num_rows() {
                assert_eq!(
                    hi.value(r) - lo.value(r),
                    size,
                    "a block's edge is its size"
                );
                assert!(lo.value(r) <= v.value(r) && v.value(r) < hi.value(r));
                assert_eq!(norm.value(r), (v.value(r) - lo.value(r)) / size);
                if r > 0 && grp.value(r) == grp.value(r - 1) {
                    assert_eq!(lo.value(r), lo.value(r - 1), "one box per group");
                }
            }
        }
    }
    let mut served = cells(&got);
    served.sort_unstable();
    let c = Arc::new(Corpus::open(&corpus).unwrap());
    let engine = cellarrow::query::QueryEngine::new(c).unwrap();
    let spots = engine
        .cohort("SELECT cell FROM obs WHERE x IS NOT NULL")
        .unwrap()
        .into_cells();
    assert_eq!(spots.len(), 49);
    assert_eq!(served, spots, "a tiling serves every spot once");
    let e = sample_error(&corpus, &["--sampler", "blocks"]);
    assert!(e.contains("needs block_size"), "{e}");
    let e = sample_error(&corpus, &["--bounds"]);
    assert!(e.contains("bounds need groups with a box"), "{e}");
}

#[test]
fn blocks_sql_serves_exactly_the_blocks_the_query_chose() {
    let dir = scratch("sample-blocks-sql");
    let corpus = convert(dir.path(), &[visium()]);
    let chosen =
        "SELECT sample_id, block_id, x0, y0, x1, y1 FROM blocks(300) WHERE block_id % 2 = 0";
    let engine =
        cellarrow::query::QueryEngine::new(Arc::new(Corpus::open(&corpus).unwrap())).unwrap();
    let boxes: Vec<[f64; 4]> = engine
        .sql(chosen)
        .unwrap()
        .iter()
        .flat_map(|b| {
            let (x0, y0, x1, y1) = (f64s(b, "x0"), f64s(b, "y0"), f64s(b, "x1"), f64s(b, "y1"));
            (0..b.num_rows())
                .map(|r| [x0.value(r), y0.value(r), x1.value(r), y1.value(r)])
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(!boxes.is_empty());
    let obs = engine
        .sql("SELECT cell, x, y FROM obs ORDER BY cell")
        .unwrap();
    let mut expected = Vec::new();
    for b in &obs {
        let ids = b.column(0).as_primitive::<UInt64Type>();
        let (x, y) = (f64s(b, "x"), f64s(b, "y"));
        for r in 0..b.num_rows() {
            let (x, y) = (x.value(r), y.value(r));
            if boxes
                .iter()
                .any(|q| x >= q[0] && x < q[2] && y >= q[1] && y < q[3])
            {
                expected.push(ids.value(r));
            }
        }
    }
    let out = dir.path().join("chosen.arrow");
    let args = [
        "--sampler",
        "blocks",
        "--block-size",
        "300",
        "--blocks-sql",
        chosen,
    ];
    let mut got = cells(&sample(&corpus, &args, &out));
    got.sort_unstable();
    assert_eq!(got, expected);
    assert!(got.len() < 49, "some blocks were left out");
    let e = sample_error(
        &corpus,
        &[
            "--sampler",
            "blocks",
            "--block-size",
            "300",
            "--blocks-sql",
            "SELECT 1 AS x",
        ],
    );
    assert!(e.contains("block_id"), "{e}");
}

#[test]
fn where_restricts_the_cohort_and_policies_parse_either_spelling() {
    let dir = scratch("sample-where");
    let corpus = convert(dir.path(), &[visium(), chr21()]);
    let c = Arc::new(Corpus::open(&corpus).unwrap());
    let engine = cellarrow::query::QueryEngine::new(c).unwrap();
    let visium_cells = engine
        .cohort("SELECT cell FROM obs WHERE x IS NOT NULL")
        .unwrap()
        .into_cells();
    let out = dir.path().join("w.arrow");
    let mut got = cells(&sample(&corpus, &["--where", "x IS NOT NULL"], &out));
    got.sort_unstable();
    assert_eq!(got, visium_cells);
    for spelling in ["drop-last", "drop_last"] {
        let args = ["--policy", spelling, "--world-size", "2", "--seed", "3"];
        let got = cells(&sample(&corpus, &args, &out));
        let spec = SamplerSpec {
            policy: ShardPolicy::DropLast,
            world_size: 2,
            ..SamplerSpec::new(SamplerKind::Random, 3)
        };
        assert_eq!(got, cells(&library_batches(&corpus, spec)));
    }
}
