//! `cellarrow sample`: sampled batches as an Arrow IPC stream, or a summary. The flags only
//! name the library's settings ([`SamplerSpec`]); defaults and checks are the library's.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::ipc::writer::StreamWriter;
use clap::Args;

use crate::corpus::Corpus;
use crate::error::{Error, Result};
use crate::loader::{
    defaults, DenseGenes, Gatherer, IndexOutput, Loader, SamplerSpec, Summary, ValueOutput,
};
use crate::sample::{LabelMode, ShardPolicy};

pub use crate::loader::SamplerKind;

/// The sampler, its shard and the cohort: shared by `sample` and `bench`.
#[derive(Debug, Clone, Args)]
pub struct SamplerArgs {
    /// Sampler.
    #[arg(long, value_enum, default_value_t = defaults::SAMPLER)]
    pub sampler: SamplerKind,
    /// Cells per batch (random, shuffle; default 256), or groups per batch (groups, regions,
    /// blocks; default 1).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Drop the last, shorter batch of random cells.
    #[arg(long)]
    pub drop_last: bool,
    /// Shuffle: consecutive cells read as one run (larger runs: fewer, longer reads).
    #[arg(long, default_value_t = defaults::SHUFFLE_RUN)]
    pub shuffle_run: u64,
    /// Shuffle: runs mixed together in each window (a shuffle buffer of run x window cells).
    #[arg(long, default_value_t = defaults::SHUFFLE_WINDOW)]
    pub shuffle_window: u64,
    /// Seed of the sampler.
    #[arg(long, default_value_t = defaults::SEED)]
    pub seed: u64,
    /// Epoch.
    #[arg(long, default_value_t = defaults::EPOCH)]
    pub epoch: u64,
    /// Rank of this process.
    #[arg(long, default_value_t = defaults::RANK)]
    pub rank: u32,
    /// Number of ranks.
    #[arg(long, default_value_t = defaults::WORLD_SIZE)]
    pub world_size: u32,
    /// Data-loading worker within the rank.
    #[arg(long, default_value_t = defaults::WORKER)]
    pub worker: u32,
    /// Data-loading workers per rank.
    #[arg(long, default_value_t = defaults::NUM_WORKERS)]
    pub workers: u32,
    /// How uneven shards are equalised: even (sizes differ by at most one), drop-last (equal
    /// sizes, the tail dropped) or pad (equal sizes, the tail padded with repeats).
    #[arg(long, default_value_t = defaults::POLICY)]
    pub policy: ShardPolicy,
    /// Resume: items (cells or groups) of this shard already served in the epoch.
    #[arg(long, default_value_t = 0)]
    pub position: u64,
    /// Groups: cells per group.
    #[arg(long, default_value_t = defaults::GROUP_SIZE)]
    pub group_size: usize,
    /// Groups: obs column of labels (for --label-mode); regions: the obs column whose values are
    /// regions (also the regions --regions-sql selects from); `cellarrow bench` with random or
    /// shuffle: the label whose entropy per batch it prints.
    #[arg(long)]
    pub label: Option<String>,
    /// Groups: how labels shape a group: none, class-balanced or stratified.
    #[arg(long, default_value_t = defaults::LABEL_MODE)]
    pub label_mode: LabelMode,
    /// Regions: a regions manifest (Parquet, or CSV by extension); default: `--label` values,
    /// else the corpus's `regions.parquet`.
    #[arg(long)]
    pub regions: Option<PathBuf>,
    /// Regions and blocks: downsample larger groups to this many cells.
    #[arg(long)]
    pub max_cells: Option<usize>,
    /// Regions and blocks: leave out groups with fewer cells.
    #[arg(long, default_value_t = defaults::MIN_CELLS)]
    pub min_cells: usize,
    /// Blocks: edge length of a block, in coordinate units.
    #[arg(long)]
    pub block_size: Option<f64>,
    /// Blocks: distance between neighbouring blocks (default: the block size, a tiling).
    #[arg(long)]
    pub stride: Option<f64>,
    /// Only cells matching this SQL predicate on obs (e.g. "cell_type = 'T cell'").
    #[cfg(feature = "sql")]
    #[arg(long = "where", value_name = "PREDICATE")]
    pub where_: Option<String>,
    /// Only the cells of this cohort file (written by `cellarrow query --cohort`).
    #[arg(long, value_name = "FILE")]
    pub cohort: Option<PathBuf>,
    /// Blocks: serve only the blocks this query returns (`sample_id`, `block_id` columns), e.g.
    /// "SELECT sample_id, block_id FROM blocks(500) WHERE n_cells BETWEEN 20 AND 200";
    /// use the same size as --block-size.
    #[cfg(feature = "sql")]
    #[arg(long, value_name = "SQL")]
    pub blocks_sql: Option<String>,
    /// Regions: serve only the regions this query returns (`sample_id`, `region_id` columns),
    /// e.g. "SELECT sample_id, region_id FROM regions WHERE n_cells > 50"; with --label, the
    /// `regions` table holds that column's regions.
    #[cfg(feature = "sql")]
    #[arg(long, value_name = "SQL")]
    pub regions_sql: Option<String>,
}

impl SamplerArgs {
    /// The library settings these flags name (batch contents and loader settings are left
    /// at their defaults; see [`OutputArgs::apply`]).
    pub fn spec(&self) -> SamplerSpec {
        SamplerSpec {
            sampler: self.sampler,
            batch_size: self.batch_size,
            drop_last: self.drop_last,
            seed: self.seed,
            epoch: self.epoch,
            position: self.position,
            rank: self.rank,
            world_size: self.world_size,
            worker: self.worker,
            num_workers: self.workers,
            policy: self.policy,
            shuffle_run: self.shuffle_run,
            shuffle_window: self.shuffle_window,
            group_size: self.group_size,
            label: self.label.clone(),
            label_mode: self.label_mode,
            regions: self.regions.clone(),
            min_cells: self.min_cells,
            max_cells: self.max_cells,
            block_size: self.block_size,
            stride: self.stride,
            #[cfg(feature = "sql")]
            where_: self.where_.clone(),
            cohort: self.cohort.clone(),
            #[cfg(feature = "sql")]
            blocks_sql: self.blocks_sql.clone(),
            #[cfg(feature = "sql")]
            regions_sql: self.regions_sql.clone(),
            ..SamplerSpec::default()
        }
    }
}

/// What a batch holds: value type, dense genes, obs columns, coordinates.
#[derive(Debug, Clone, Args)]
pub struct OutputArgs {
    /// Value type of the output: native (as stored), f32 or f64.
    #[arg(long, default_value_t = defaults::VALUES)]
    pub values: ValueOutput,
    /// Gene id type of CSR output: native (as stored, u16 or u32) or i32.
    #[arg(long, default_value_t = defaults::INDICES)]
    pub indices: IndexOutput,
    /// Dense output over these genes (comma-separated names; `id:N` for a gene id; `all`).
    #[arg(long, value_delimiter = ',')]
    pub dense: Option<Vec<String>>,
    /// obs columns to add (comma-separated or repeated).
    #[arg(long = "obs", value_delimiter = ',')]
    pub obs: Vec<String>,
    /// Add the coordinate columns x, y (and z).
    #[arg(long)]
    pub coords: bool,
    /// Add each cell's group box (min_x, min_y, max_x, max_y ...) and its coordinates
    /// normalised to the box (x_norm, y_norm ...): spatial blocks, regions given as boxes.
    /// Implies --coords.
    #[arg(long)]
    pub bounds: bool,
}

impl OutputArgs {
    /// `spec` with the batch contents these flags name.
    pub fn apply(&self, spec: SamplerSpec) -> Result<SamplerSpec> {
        Ok(SamplerSpec {
            values: self.values,
            indices: self.indices,
            dense: self.dense.as_deref().map(DenseGenes::from_list).transpose()?,
            obs: self.obs.clone(),
            coords: self.coords,
            bounds: self.bounds,
            ..spec
        })
    }
}

/// Arguments of `cellarrow sample`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    cellarrow sample my.corpus --batch-size 256 --seed 1 --epoch 0 --summary\n  \
    cellarrow sample my.corpus --rank 1 --world-size 4 --obs cell_type -o rank1.arrow\n  \
    cellarrow sample my.corpus --sampler shuffle --shuffle-run 128 -o batches.arrow\n  \
    cellarrow sample my.corpus --sampler regions --label niche --coords -o regions.arrow\n  \
    cellarrow sample my.corpus --sampler blocks --block-size 200 --bounds -o blocks.arrow")]
pub struct SampleArgs {
    /// The corpus directory.
    pub corpus: PathBuf,
    #[command(flatten)]
    pub sampler: SamplerArgs,
    #[command(flatten)]
    pub output_args: OutputArgs,
    /// Write the Arrow IPC stream here (default: standard output).
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    /// Print a summary instead of writing batches.
    #[arg(long)]
    pub summary: bool,
    /// Stop after this many batches.
    #[arg(long)]
    pub max_batches: Option<usize>,
    /// Loader threads (0: gather on the main thread).
    #[arg(long, default_value_t = defaults::THREADS)]
    pub threads: usize,
    /// Batches gathered ahead.
    #[arg(long, default_value_t = defaults::PREFETCH)]
    pub prefetch: usize,
}

impl SampleArgs {
    /// Every setting these flags name.
    pub fn spec(&self) -> Result<SamplerSpec> {
        let spec = self.output_args.apply(self.sampler.spec())?;
        let spec = SamplerSpec {
            threads: self.threads,
            prefetch: self.prefetch,
            ..spec
        };
        spec.validate()?;
        Ok(spec)
    }
}

/// Runs `cellarrow sample`.
pub fn run(args: SampleArgs) -> Result<()> {
    crate::loader::bench::keep_freed_memory();
    let mut spec = args.spec()?;
    let corpus = Arc::new(Corpus::open(&args.corpus)?);
    let cohort = spec.select(&corpus, None)?;
    let plan = spec.plan(&corpus, cohort)?.plan;
    let gatherer = Arc::new(Gatherer::new(corpus, spec.batch_options())?);
    let schema = gatherer.schema();
    let loader = Loader::new(gatherer, plan, spec.loader_options());
    let loader = loader.take(args.max_batches.unwrap_or(usize::MAX));

    if args.summary {
        return summarise(loader);
    }
    match &args.output {
        Some(path) => {
            let file = std::fs::File::create(path).map_err(|e| Error::io(path, "creating", e))?;
            write_stream(
                loader,
                &schema,
                std::io::BufWriter::with_capacity(1 << 20, file),
                path,
            )
        }
        None => {
            let stdout = std::io::stdout();
            if stdout.is_terminal() {
                return Err(Error::invalid_input(
                    "standard output is a terminal; write the Arrow stream with --output FILE, pipe it, or use --summary",
                ));
            }
            write_stream(
                loader,
                &schema,
                std::io::BufWriter::with_capacity(1 << 20, stdout.lock()),
                Path::new("<stdout>"),
            )
        }
    }
}

fn write_stream<W: Write>(
    batches: impl Iterator<Item = Result<arrow::record_batch::RecordBatch>>,
    schema: &arrow::datatypes::SchemaRef,
    out: W,
    path: &Path,
) -> Result<()> {
    use crate::error::Context;
    let mut writer = StreamWriter::try_new(out, schema).at(path)?;
    for b in batches {
        writer.write(&b?).at(path)?;
    }
    writer.finish().at(path)?;
    writer
        .into_inner()
        .at(path)?
        .flush()
        .map_err(|e| Error::io(path, "writing", e))
}

fn summarise(
    batches: impl Iterator<Item = Result<arrow::record_batch::RecordBatch>>,
) -> Result<()> {
    let started = Instant::now();
    let mut s = Summary::default();
    for b in batches {
        s.add(&b?);
    }
    let secs = started.elapsed().as_secs_f64();
    println!("batches        {}", s.batches);
    println!("cells          {} ({} distinct)", s.cells, s.distinct_cells());
    if let Some((lo, hi)) = s.rows {
        println!("cells/batch    {lo}..{hi}");
    }
    println!("non-zeros      {}", s.nnz);
    println!("batch memory   {:.1} MB", s.bytes as f64 / 1e6);
    println!("first cells    {:?}", s.first_cells);
    println!(
        "time           {secs:.3} s ({:.0} cells/s)",
        s.cells as f64 / secs.max(1e-9)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use arrow::array::AsArray;
    use arrow::datatypes::{UInt16Type, UInt64Type};
    use clap::Parser;

    use crate::cli::{Cli, Command};
    use crate::corpus::testing::{random_rows, write_corpus};
    use crate::sample::{
        BlockShuffle, Cohort, RandomCells, Sampler, Shard, ShardPolicy, ShardState,
    };

    fn sample(args: &[&str]) -> crate::Result<()> {
        let cli = Cli::try_parse_from(std::iter::once("cellarrow").chain(args.iter().copied()))
            .map_err(|e| crate::Error::invalid_input(e.to_string()))?;
        match cli.command {
            Command::Sample(a) => super::run(a),
            other => panic!("parsed as {other:?}"),
        }
    }

    /// The record batches of an Arrow IPC stream written by `cellarrow sample`.
    fn read_stream(path: &std::path::Path) -> Vec<arrow::record_batch::RecordBatch> {
        let file = std::fs::File::open(path).unwrap();
        let reader = arrow::ipc::reader::StreamReader::try_new(file, None).unwrap();
        reader.map(|b| b.unwrap()).collect()
    }

    /// The `cell` column of a sampled stream, in stream order.
    fn stream_cells(path: &std::path::Path) -> Vec<u64> {
        read_stream(path)
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

    /// The `cell` column of a sampled stream, sorted.
    fn sorted_cells(path: &std::path::Path) -> Vec<u64> {
        let mut cells = stream_cells(path);
        cells.sort_unstable();
        cells
    }

    #[test]
    fn sample_writes_the_shard_stream_as_arrow_ipc() {
        let dir = tempfile::tempdir().unwrap();
        let corpus = dir.path().join("c");
        let rows = random_rows(30, 50, 0.2, 3);
        write_corpus(&corpus, 50, &rows, &[("a", 10), ("b", 20)]).unwrap();
        let out = dir.path().join("rank1.arrow");
        let c = corpus.to_str().unwrap();
        let o = out.to_str().unwrap();
        sample(&[
            "sample",
            c,
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
            "--output",
            o,
        ])
        .unwrap();

        let batches = read_stream(&out);
        assert_eq!(batches.len(), 4, "15 cells in batches of 4");
        let mut cells = Vec::new();
        for b in &batches {
            let ids = b
                .column_by_name("cell")
                .unwrap()
                .as_primitive::<UInt64Type>();
            let idx = b.column_by_name("indices").unwrap().as_list::<i32>();
            let val = b.column_by_name("values").unwrap().as_list::<i32>();
            for r in 0..b.num_rows() {
                let cell = ids.value(r) as usize;
                let genes: Vec<u32> = idx
                    .value(r)
                    .as_primitive::<UInt16Type>()
                    .values()
                    .iter()
                    .map(|&g| g as u32)
                    .collect();
                let values: Vec<f64> = val
                    .value(r)
                    .as_primitive::<UInt16Type>()
                    .values()
                    .iter()
                    .map(|&v| v as f64)
                    .collect();
                assert_eq!((genes, values), rows[cell], "cell {cell}");
                cells.push(cell as u64);
            }
            assert!(b.column_by_name("obs_name").is_some());
        }
        let sampler = RandomCells::new(Cohort::all(30), 9);
        let shard = Shard::new(1, 2, 0, 1).unwrap();
        let expect: Vec<u64> = sampler
            .stream(shard, ShardPolicy::Even, ShardState::epoch_start(2))
            .unwrap()
            .collect();
        assert_eq!(cells, expect);

        sample(&[
            "sample",
            c,
            "--summary",
            "--sampler",
            "groups",
            "--group-size",
            "5",
            "--batch-size",
            "2",
        ])
        .unwrap();
        let e =
            sample(&["sample", c, "--summary", "--rank", "2", "--world-size", "2"]).unwrap_err();
        assert!(e.message().contains("rank 2"), "{e}");
    }

    #[test]
    fn shuffle_streams_are_the_block_shuffle_shards_and_partition_the_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let corpus = dir.path().join("c");
        let rows = random_rows(45, 20, 0.3, 5);
        write_corpus(&corpus, 20, &rows, &[("a", 45)]).unwrap();
        let c = corpus.to_str().unwrap();
        let sampler = BlockShuffle::new(Cohort::all(45), 4, 3, 11).unwrap();
        let mut all = Vec::new();
        for rank in 0..2u32 {
            let out = dir.path().join(format!("rank{rank}.arrow"));
            let (r, o) = (rank.to_string(), out.to_str().unwrap().to_string());
            sample(&[
                "sample",
                c,
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
                &r,
                "--world-size",
                "2",
                "--batch-size",
                "8",
                "-o",
                &o,
            ])
            .unwrap();
            assert!(
                read_stream(&out)
                    .iter()
                    .all(|b| b.column_by_name("group").is_none()),
                "cells, not groups"
            );
            let got = stream_cells(&out);
            let shard = Shard::new(rank, 2, 0, 1).unwrap();
            let expect: Vec<u64> = sampler
                .stream(shard, ShardPolicy::Even, ShardState::epoch_start(1))
                .unwrap()
                .collect();
            assert_eq!(got, expect, "rank {rank}");
            all.extend(got);
        }
        all.sort_unstable();
        assert_eq!(all, (0..45).collect::<Vec<u64>>());
        let e = sample(&[
            "sample",
            c,
            "--summary",
            "--sampler",
            "shuffle",
            "--shuffle-run",
            "0",
        ])
        .unwrap_err();
        assert!(
            e.message().contains("shuffle_run must be at least 1, got 0"),
            "{e}"
        );
    }

    /// A 6 x 6 grid of cells, one per unit of x and y, in one spatial sample.
    fn grid_corpus(dir: &std::path::Path) -> std::path::PathBuf {
        use crate::corpus::testing::{write_corpus_with, TestCorpusOptions};
        let corpus = dir.join("c");
        let coords = (0..36)
            .map(|i| Some([(i % 6) as f64, (i / 6) as f64]))
            .collect();
        let opts = TestCorpusOptions {
            coords: Some(coords),
            ..Default::default()
        };
        write_corpus_with(
            &corpus,
            10,
            &random_rows(36, 10, 0.3, 2),
            &[("t", 36)],
            &opts,
        )
        .unwrap();
        corpus
    }

    fn f64_column<'a>(
        b: &'a arrow::record_batch::RecordBatch,
        name: &str,
    ) -> &'a arrow::array::Float64Array {
        b.column_by_name(name)
            .unwrap_or_else(|| panic!("no column {name}"))
            .as_primitive::<arrow::datatypes::Float64Type>()
    }

    #[test]
    fn blocks_with_bounds_carry_each_cells_box_and_normalised_coordinates() {
        let dir = tempfile::tempdir().unwrap();
        let corpus = grid_corpus(dir.path());
        let c = corpus.to_str().unwrap();
        let out = dir.path().join("blocks.arrow");
        let o = out.to_str().unwrap();
        sample(&[
            "sample",
            c,
            "--sampler",
            "blocks",
            "--block-size",
            "3",
            "--bounds",
            "-o",
            o,
        ])
        .unwrap();
        let mut rows = 0;
        for b in read_stream(&out) {
            let grp = b
                .column_by_name("group")
                .unwrap()
                .as_primitive::<UInt64Type>();
            for axis in ["x", "y"] {
                let v = f64_column(&b, axis);
                let (lo, hi) = (
                    f64_column(&b, &format!("min_{axis}")),
                    f64_column(&b, &format!("max_{axis}")),
                );
                let norm = f64_column(&b, &format!("{axis}_norm"));
                for r in 0..b.num_rows() {
                    assert_eq!(
                        hi.value(r) - lo.value(r),
                        3.0,
                        "a block's edge is the block size"
                    );
                    assert!(
                        lo.value(r) <= v.value(r) && v.value(r) < hi.value(r),
                        "the cell is in its box"
                    );
                    assert_eq!(norm.value(r), (v.value(r) - lo.value(r)) / 3.0);
                    assert!((0.0..1.0).contains(&norm.value(r)));
                    if r > 0 && grp.value(r) == grp.value(r - 1) {
                        assert_eq!(lo.value(r), lo.value(r - 1), "one box per group");
                    }
                }
            }
            assert!(
                b.column_by_name("z_norm").is_none(),
                "a 2-D corpus has no z"
            );
            rows += b.num_rows();
        }
        assert_eq!(rows, 36);
        let e = sample(&["sample", c, "--bounds", "--summary"]).unwrap_err();
        assert!(e.message().contains("bounds need groups with a box"), "{e}");
    }

    #[test]
    fn blocks_tile_a_spatial_sample_with_a_group_column_and_coordinates() {
        let dir = tempfile::tempdir().unwrap();
        let corpus = grid_corpus(dir.path());
        let out = dir.path().join("blocks.arrow");
        sample(&[
            "sample",
            corpus.to_str().unwrap(),
            "--sampler",
            "blocks",
            "--block-size",
            "3",
            "--batch-size",
            "2",
            "--coords",
            "--output",
            out.to_str().unwrap(),
        ])
        .unwrap();
        let batches = read_stream(&out);
        assert_eq!(batches.len(), 2, "4 blocks of 3x3, 2 per batch");
        let mut cells = Vec::new();
        for b in &batches {
            let ids = b
                .column_by_name("cell")
                .unwrap()
                .as_primitive::<UInt64Type>();
            let grp = b
                .column_by_name("group")
                .unwrap()
                .as_primitive::<UInt64Type>();
            let (x, y) = (f64_column(b, "x"), f64_column(b, "y"));
            // Cells of one group share a block: the same (x / 3, y / 3) tile.
            for r in 1..b.num_rows() {
                if grp.value(r) == grp.value(r - 1) {
                    let tile = |i: usize| ((x.value(i) / 3.0) as u32, (y.value(i) / 3.0) as u32);
                    assert_eq!(tile(r), tile(r - 1));
                }
            }
            cells.extend(ids.values().iter().copied());
        }
        cells.sort_unstable();
        assert_eq!(
            cells,
            (0..36).collect::<Vec<_>>(),
            "a tiling serves every cell once"
        );
        let e = sample(&[
            "sample",
            corpus.to_str().unwrap(),
            "--sampler",
            "blocks",
            "--summary",
        ])
        .unwrap_err();
        assert!(e.message().contains("needs block_size"), "{e}");
    }

    #[cfg(feature = "sql")]
    #[test]
    fn blocks_sql_serves_exactly_the_blocks_the_query_chose() {
        use crate::corpus::testing::{write_corpus_with, TestCorpusOptions};
        let dir = tempfile::tempdir().unwrap();
        let corpus = dir.path().join("c");
        let xy = |i: u64| ((i % 6) as f64, (i / 6) as f64);
        let coords = (0..36).map(|i| Some([xy(i).0, xy(i).1])).collect();
        let opts = TestCorpusOptions {
            coords: Some(coords),
            ..Default::default()
        };
        write_corpus_with(
            &corpus,
            10,
            &random_rows(36, 10, 0.3, 2),
            &[("t", 36)],
            &opts,
        )
        .unwrap();
        let c = corpus.to_str().unwrap();
        let engine = crate::query::QueryEngine::new(std::sync::Arc::new(
            crate::Corpus::open(&corpus).unwrap(),
        ))
        .unwrap();
        let chosen =
            "SELECT sample_id, block_id, x0, y0, x1, y1 FROM blocks(3) WHERE block_id IN (0, 3)";
        let bounds: Vec<(f64, f64, f64, f64)> = engine
            .sql(chosen)
            .unwrap()
            .iter()
            .flat_map(|b| {
                let f = |n: &str| {
                    b.column_by_name(n)
                        .unwrap()
                        .as_primitive::<arrow::datatypes::Float64Type>()
                        .clone()
                };
                let (x0, y0, x1, y1) = (f("x0"), f("y0"), f("x1"), f("y1"));
                (0..b.num_rows())
                    .map(move |r| (x0.value(r), y0.value(r), x1.value(r), y1.value(r)))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(bounds.len(), 2);
        let expected: Vec<u64> = (0..36)
            .filter(|&i| {
                let (x, y) = xy(i);
                bounds
                    .iter()
                    .any(|&(x0, y0, x1, y1)| x >= x0 && x < x1 && y >= y0 && y < y1)
            })
            .collect();
        let out = dir.path().join("chosen.arrow");
        sample(&[
            "sample",
            c,
            "--sampler",
            "blocks",
            "--block-size",
            "3",
            "--blocks-sql",
            chosen,
            "--output",
            out.to_str().unwrap(),
        ])
        .unwrap();
        let cells = sorted_cells(&out);
        assert_eq!(cells, expected);
        let e = sample(&[
            "sample",
            c,
            "--sampler",
            "blocks",
            "--block-size",
            "3",
            "--blocks-sql",
            "SELECT 1 AS x",
            "--summary",
        ])
        .unwrap_err();
        assert!(e.message().contains("block_id"), "{e}");
    }

    #[cfg(feature = "sql")]
    #[test]
    fn where_restricts_the_cohort() {
        let dir = tempfile::tempdir().unwrap();
        let corpus = dir.path().join("c");
        write_corpus(
            &corpus,
            10,
            &random_rows(12, 10, 0.3, 1),
            &[("a", 5), ("b", 7)],
        )
        .unwrap();
        let out = dir.path().join("b.arrow");
        sample(&[
            "sample",
            corpus.to_str().unwrap(),
            "--where",
            "sample_id = 'b'",
            "--output",
            out.to_str().unwrap(),
        ])
        .unwrap();
        let cells = sorted_cells(&out);
        assert_eq!(cells, (5..12).collect::<Vec<_>>());
    }
}
