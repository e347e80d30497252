//! Tests of the query layer against a small corpus written here with the parquet crate, and
//! expectations computed from the rows as written (never from our own reader).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, AsArray, DictionaryArray, Float64Array, RecordBatch, StringArray, UInt32Array,
    UInt64Array, UInt8Array,
};
use arrow::datatypes::{DataType, Float64Type, Int32Type, UInt64Type};

use super::expr::CellRows;
use super::*;
use crate::corpus::{Indices, Values};

/// A deterministic xorshift generator, so fixtures need no extra crate.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Debug, Clone)]
struct Cell {
    sample: &'static str,
    cell_type: &'static str,
    tissue: &'static str,
    donor: &'static str,
    region: Option<&'static str>,
    x: Option<f64>,
    y: Option<f64>,
    z: Option<f64>,
    genes: Vec<u32>,
    values: Vec<f32>,
}

const GENES: [&str; 6] = ["CD3E", "MS4A1", "GAPDH", "ACTB", "CD8A", "NKG7"];
const SAMPLES: [(&str, u8, &str); 3] = [("s1", 2, "human"), ("s2", 0, "mouse"), ("s3", 3, "human")];

/// In-memory CSR for `expr()`; `narrow` serves u16 gene ids.
struct MemRows {
    indptr: Vec<usize>,
    idx32: Vec<u32>,
    idx16: Vec<u16>,
    values: Vec<f32>,
    narrow: bool,
}

impl CellRows for MemRows {
    fn n_cells(&self) -> u64 {
        (self.indptr.len() - 1) as u64
    }
    fn row(&self, cell: u64) -> (Indices<'_>, Values<'_>) {
        let (a, b) = (self.indptr[cell as usize], self.indptr[cell as usize + 1]);
        let ix = if self.narrow {
            Indices::U16(&self.idx16[a..b])
        } else {
            Indices::U32(&self.idx32[a..b])
        };
        (ix, Values::F32(&self.values[a..b]))
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    cells: Vec<Cell>,
}

impl Fixture {
    fn root(&self) -> &Path {
        self.dir.path()
    }
    fn rows(&self, narrow: bool) -> Arc<MemRows> {
        let mut m = MemRows {
            indptr: vec![0],
            idx32: vec![],
            idx16: vec![],
            values: vec![],
            narrow,
        };
        for c in &self.cells {
            m.idx32.extend(&c.genes);
            m.idx16.extend(c.genes.iter().map(|&g| g as u16));
            m.values.extend(&c.values);
            m.indptr.push(m.idx32.len());
        }
        Arc::new(m)
    }
    fn engine(&self) -> QueryEngine {
        let opts = QueryOptions {
            threads: 2,
            ..Default::default()
        };
        QueryEngine::from_parts(
            self.root(),
            None,
            Some(self.rows(false) as Arc<dyn CellRows>),
            &opts,
        )
        .unwrap()
    }
}

fn write(path: &Path, columns: Vec<(&str, ArrayRef)>) {
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let file = std::fs::File::create(path).unwrap();
    // Small row groups so that predicate push-down has several groups to skip.
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(64))
        .build();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn dict(values: impl IntoIterator<Item = Option<&'static str>>) -> ArrayRef {
    Arc::new(values.into_iter().collect::<DictionaryArray<Int32Type>>())
}

/// 300 cells over three samples: s1 2-D spatial (with NaN, infinite and missing coordinates),
/// s2 not spatial, s3 3-D.
fn fixture() -> Fixture {
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let types = ["T cell", "B cell", "NK cell"];
    let tissues = ["brain", "blood"];
    let donors = ["D1", "D2"];
    let mut cells = Vec::new();
    for (s, n) in [(0usize, 150), (1, 80), (2, 70)] {
        let (sample, dims, _) = SAMPLES[s];
        for i in 0..n {
            let mut c = Cell {
                sample,
                cell_type: types[rng.below(3) as usize],
                tissue: tissues[rng.below(2) as usize],
                donor: donors[rng.below(2) as usize],
                region: (dims > 0 && i % 5 != 0).then(|| ["r1", "r2", "r3"][rng.below(3) as usize]),
                x: None,
                y: None,
                z: None,
                genes: vec![],
                values: vec![],
            };
            if dims >= 2 {
                c.x = Some(-20.0 + 137.5 * rng.unit());
                c.y = Some(3.0 + 61.0 * rng.unit());
            }
            if dims == 3 {
                c.z = Some(40.0 * rng.unit());
            }
            if s == 0 {
                match i {
                    3 => c.x = Some(f64::NAN),
                    4 => c.y = Some(f64::INFINITY),
                    5 => c.x = None,
                    // Exactly on block edges of the 10-unit grids below.
                    6 => c.x = Some(-20.0 + 10.0 * 3.0),
                    _ => {}
                }
            }
            if s == 2 && i == 7 {
                c.z = None;
            }
            for g in 0..GENES.len() as u32 {
                if rng.below(3) == 0 {
                    c.genes.push(g);
                    c.values.push(1.0 + rng.below(9) as f32 * 0.5);
                }
            }
            cells.push(c);
        }
    }
    // Pin the extremes of s1 so that the grid origin is known exactly.
    cells[0].x = Some(-20.0);
    cells[0].y = Some(3.0);
    cells[1].x = Some(117.5);
    cells[1].y = Some(64.0);

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let n = cells.len();
    let f64s = |f: &dyn Fn(&Cell) -> Option<f64>| -> ArrayRef {
        Arc::new(cells.iter().map(f).collect::<Float64Array>())
    };
    write(
        &root.join("obs.parquet"),
        vec![
            (
                "cell",
                Arc::new(UInt64Array::from_iter_values(0..n as u64)) as ArrayRef,
            ),
            ("sample_id", dict(cells.iter().map(|c| Some(c.sample)))),
            (
                "obs_name",
                Arc::new(StringArray::from_iter_values(
                    (0..n).map(|i| format!("bc{i}")),
                )),
            ),
            (
                "nnz",
                Arc::new(UInt32Array::from_iter_values(
                    cells.iter().map(|c| c.genes.len() as u32),
                )),
            ),
            (
                "total",
                Arc::new(Float64Array::from_iter_values(
                    cells
                        .iter()
                        .map(|c| c.values.iter().map(|&v| v as f64).sum()),
                )),
            ),
            ("x", f64s(&|c| c.x)),
            ("y", f64s(&|c| c.y)),
            ("z", f64s(&|c| c.z)),
            ("cell_type", dict(cells.iter().map(|c| Some(c.cell_type)))),
            (
                "tissue",
                Arc::new(
                    cells
                        .iter()
                        .map(|c| Some(c.tissue))
                        .collect::<StringArray>(),
                ),
            ),
            (
                "donor",
                Arc::new(cells.iter().map(|c| Some(c.donor)).collect::<StringArray>()),
            ),
            ("region", dict(cells.iter().map(|c| c.region))),
        ],
    );
    write(
        &root.join("genes.parquet"),
        vec![
            (
                "gene",
                Arc::new(UInt32Array::from_iter_values(0..GENES.len() as u32)) as ArrayRef,
            ),
            ("name", Arc::new(StringArray::from_iter_values(GENES))),
        ],
    );
    let mut first = 0u64;
    let mut firsts = vec![];
    let mut counts = vec![];
    for (s, _, _) in SAMPLES {
        let k = cells.iter().filter(|c| c.sample == s).count() as u64;
        firsts.push(first);
        counts.push(k);
        first += k;
    }
    write(
        &root.join("samples.parquet"),
        vec![
            (
                "sample_id",
                Arc::new(StringArray::from_iter_values(SAMPLES.map(|s| s.0))) as ArrayRef,
            ),
            ("first_cell", Arc::new(UInt64Array::from(firsts))),
            ("n_cells", Arc::new(UInt64Array::from(counts))),
            (
                "spatial_dims",
                Arc::new(UInt8Array::from_iter_values(SAMPLES.map(|s| s.1))),
            ),
            (
                "species",
                Arc::new(StringArray::from_iter_values(SAMPLES.map(|s| s.2))),
            ),
        ],
    );
    Fixture { dir, cells }
}

fn column_strings(batches: &[RecordBatch], name: &str) -> Vec<Option<String>> {
    let mut out = vec![];
    for b in batches {
        let c = arrow::compute::cast(b.column_by_name(name).unwrap(), &DataType::Utf8).unwrap();
        out.extend(c.as_string::<i32>().iter().map(|s| s.map(str::to_string)));
    }
    out
}

fn column_u64(batches: &[RecordBatch], name: &str) -> Vec<u64> {
    let mut out = vec![];
    for b in batches {
        let c = arrow::compute::cast(b.column_by_name(name).unwrap(), &DataType::UInt64).unwrap();
        out.extend(c.as_primitive::<UInt64Type>().values().iter().copied());
    }
    out
}

fn column_f64(batches: &[RecordBatch], name: &str) -> Vec<Option<f64>> {
    let mut out = vec![];
    for b in batches {
        let c = arrow::compute::cast(b.column_by_name(name).unwrap(), &DataType::Float64).unwrap();
        out.extend(c.as_primitive::<Float64Type>().iter());
    }
    out
}

#[test]
fn tables_are_registered_with_regions_derived_from_obs() {
    let f = fixture();
    let e = f.engine();
    assert_eq!(e.tables(), ["obs", "genes", "samples", "regions"]);
    assert_eq!(e.n_cells(), f.cells.len() as u64);
}

#[test]
fn counts_per_cell_type_and_tissue_match_the_rows() {
    let f = fixture();
    let b = f
        .engine()
        .sql("SELECT cell_type, tissue, COUNT(*) AS n FROM obs GROUP BY cell_type, tissue ORDER BY cell_type, tissue")
        .unwrap();
    let got: BTreeMap<(String, String), u64> = column_strings(&b, "cell_type")
        .into_iter()
        .zip(column_strings(&b, "tissue"))
        .zip(column_u64(&b, "n"))
        .map(|((c, t), n)| ((c.unwrap(), t.unwrap()), n))
        .collect();
    let mut want = BTreeMap::new();
    for c in &f.cells {
        *want
            .entry((c.cell_type.to_string(), c.tissue.to_string()))
            .or_insert(0) += 1;
    }
    assert_eq!(got, want);
}

#[test]
fn donor_in_bounding_box_matches_the_rows() {
    let f = fixture();
    let b = f
        .engine()
        .sql("SELECT cell FROM obs WHERE donor = 'D1' AND x BETWEEN 0 AND 50 AND y BETWEEN 10 AND 40 ORDER BY cell")
        .unwrap();
    let want: Vec<u64> = f
        .cells
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            c.donor == "D1"
                && c.x.is_some_and(|x| (0.0..=50.0).contains(&x))
                && c.y.is_some_and(|y| (10.0..=40.0).contains(&y))
        })
        .map(|(i, _)| i as u64)
        .collect();
    assert!(!want.is_empty());
    assert_eq!(column_u64(&b, "cell"), want);
}

#[test]
fn samples_of_one_species_and_strings_are_plain_utf8() {
    let f = fixture();
    let b = f
        .engine()
        .sql("SELECT sample_id, n_cells FROM samples WHERE species = 'human' ORDER BY sample_id")
        .unwrap();
    assert_eq!(
        column_strings(&b, "sample_id"),
        [Some("s1".to_string()), Some("s3".to_string())]
    );
    assert_eq!(column_u64(&b, "n_cells"), [150, 70]);
    assert_eq!(b[0].schema().field(0).data_type(), &DataType::Utf8);
    let b = f
        .engine()
        .sql("SELECT donor, CAST(cell AS VARCHAR) AS c FROM obs LIMIT 1")
        .unwrap();
    assert_eq!(b[0].schema().field(0).data_type(), &DataType::Utf8);
    assert_eq!(b[0].schema().field(1).data_type(), &DataType::Utf8);
}

#[test]
fn unknown_column_lists_the_columns_of_the_table() {
    let f = fixture();
    let err = f.engine().sql("SELECT celltype FROM obs").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Query);
    let m = err.to_string();
    assert!(m.contains("unknown column `celltype`"), "{m}");
    assert!(
        m.contains("columns of obs: cell, sample_id, obs_name"),
        "{m}"
    );
    assert!(m.contains("cell_type"), "{m}");
    assert!(!m.contains("n_samples"), "{m}");

    let err = f
        .engine()
        .sql("SELECT g.nope FROM genes g JOIN samples s ON true")
        .unwrap_err();
    let m = err.to_string();
    assert!(
        m.contains("columns of g: gene, name") && !m.contains("species"),
        "{m}"
    );
}

#[test]
fn syntax_errors_keep_the_position() {
    let f = fixture();
    let err = f
        .engine()
        .sql("SELECT cell FROM obs WHERE cell_type = = 'T cell'")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Query);
    let m = err.to_string();
    assert!(m.contains("Line: 1, Column"), "{m}");
}

#[test]
fn cohort_without_cell_column_is_an_error() {
    let f = fixture();
    let err = f
        .engine()
        .cohort("SELECT sample_id, cell_type FROM obs")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Query);
    let m = err.to_string();
    assert!(
        m.contains("no `cell` column") && m.contains("sample_id, cell_type"),
        "{m}"
    );
    // Also with an empty result.
    let err = f
        .engine()
        .cohort("SELECT sample_id FROM obs WHERE false")
        .unwrap_err();
    assert!(err.to_string().contains("no `cell` column"));
}

#[test]
fn cohort_is_sorted_and_unique() {
    let f = fixture();
    let e = f.engine();
    let c = e
        .cohort(
            "SELECT cell, donor FROM obs WHERE cell_type = 'T cell' \
             UNION ALL SELECT cell, donor FROM obs WHERE tissue = 'brain' ORDER BY donor DESC",
        )
        .unwrap();
    let want: Vec<u64> = (0..f.cells.len() as u64)
        .filter(|&i| {
            f.cells[i as usize].cell_type == "T cell" || f.cells[i as usize].tissue == "brain"
        })
        .collect();
    assert_eq!(c.to_vec(), want);
    let w = e
        .cohort_where("cell_type = 'T cell' OR tissue = 'brain'")
        .unwrap();
    assert_eq!(w, c);
    assert!(e.cohort_where("false").unwrap().is_empty());
}

#[test]
fn cohort_with_ids_outside_the_corpus_is_an_error() {
    let f = fixture();
    let err = f
        .engine()
        .cohort("SELECT cell + 1000 AS cell FROM obs")
        .unwrap_err();
    assert!(err.to_string().contains("corpus has 300 cells"), "{err}");
    let err = f
        .engine()
        .cohort("SELECT CAST(NULL AS BIGINT) AS cell")
        .unwrap_err();
    assert!(err.to_string().contains("null"), "{err}");
}

fn expected_expr(c: &Cell, gene: u32) -> f64 {
    c.genes
        .iter()
        .position(|&g| g == gene)
        .map_or(0.0, |p| c.values[p] as f64)
}

#[test]
fn expr_matches_the_rows_written() {
    let f = fixture();
    for narrow in [false, true] {
        let opts = QueryOptions {
            threads: 2,
            ..Default::default()
        };
        let e = QueryEngine::from_parts(
            f.root(),
            None,
            Some(f.rows(narrow) as Arc<dyn CellRows>),
            &opts,
        )
        .unwrap();
        for (g, name) in GENES.iter().enumerate() {
            let b = e.sql(&format!("SELECT cell, expr(cell, '{name}') AS v, expr(cell, {g}) AS w FROM obs ORDER BY cell")).unwrap();
            let v = column_f64(&b, "v");
            let w = column_f64(&b, "w");
            for (i, c) in f.cells.iter().enumerate() {
                assert_eq!(
                    v[i],
                    Some(expected_expr(c, g as u32)),
                    "cell {i} gene {name}"
                );
                assert_eq!(w[i], v[i]);
            }
        }
    }
}

#[test]
fn expr_filters_cells_without_a_dense_matrix() {
    let f = fixture();
    let c = f
        .engine()
        .cohort_where("cell_type = 'T cell' AND expr(cell, 'CD3E') > 0")
        .unwrap();
    let want: Vec<u64> = (0..f.cells.len())
        .filter(|&i| f.cells[i].cell_type == "T cell" && expected_expr(&f.cells[i], 0) > 0.0)
        .map(|i| i as u64)
        .collect();
    assert!(!want.is_empty());
    assert_eq!(c.to_vec(), want);
    // A gene given by numeric id in a string, and per-row gene names.
    let b = f
        .engine()
        .sql("SELECT expr(5, '2') AS a, expr(5, g.name) AS b FROM genes g WHERE g.gene = 2")
        .unwrap();
    assert_eq!(column_f64(&b, "a"), [Some(expected_expr(&f.cells[5], 2))]);
    assert_eq!(column_f64(&b, "b"), [Some(expected_expr(&f.cells[5], 2))]);
}

#[test]
fn expr_reports_unknown_genes_and_cells() {
    let f = fixture();
    let e = f.engine();
    let m = e
        .sql("SELECT expr(cell, 'cd3e') FROM obs")
        .unwrap_err()
        .to_string();
    assert!(
        m.contains("unknown gene 'cd3e'") && m.contains("CD3E"),
        "{m}"
    );
    let m = e
        .sql("SELECT expr(cell, 99) FROM obs")
        .unwrap_err()
        .to_string();
    assert!(m.contains("gene id 99 out of range"), "{m}");
    let m = e
        .sql("SELECT expr(cell + 1000, 'CD3E') FROM obs")
        .unwrap_err()
        .to_string();
    assert!(m.contains("out of range"), "{m}");
}

/// Brute force: every grid block of every spatial sample, counted by testing each cell.
fn brute_force_blocks(
    cells: &[Cell],
    size: f64,
    stride: f64,
) -> BTreeMap<(String, u64), (Vec<f64>, u64)> {
    let mut out = BTreeMap::new();
    for (sample, dims, _) in SAMPLES {
        if dims == 0 {
            continue;
        }
        let dims = dims as usize;
        let point = |c: &Cell| -> Option<Vec<f64>> {
            let p = [c.x, c.y, c.z];
            let p: Option<Vec<f64>> = p[..dims].iter().copied().collect();
            p.filter(|p| p.iter().all(|v| v.is_finite()))
        };
        let pts: Vec<Vec<f64>> = cells
            .iter()
            .filter(|c| c.sample == sample)
            .filter_map(point)
            .collect();
        let min: Vec<f64> = (0..dims)
            .map(|a| pts.iter().map(|p| p[a]).fold(f64::INFINITY, f64::min))
            .collect();
        let max: Vec<f64> = (0..dims)
            .map(|a| pts.iter().map(|p| p[a]).fold(f64::NEG_INFINITY, f64::max))
            .collect();
        // Up to the first block whose upper bound passes the maximum.
        let n: Vec<u64> = (0..dims)
            .map(|a| {
                1 + (0..)
                    .take_while(|&k| min[a] + k as f64 * stride + size <= max[a])
                    .count() as u64
            })
            .collect();
        let total: u64 = n.iter().product();
        for id in 0..total {
            // Last axis fastest.
            let mut k = vec![0; dims];
            let mut rest = id;
            for a in (0..dims).rev() {
                k[a] = rest % n[a];
                rest /= n[a];
            }
            let lo: Vec<f64> = (0..dims).map(|a| min[a] + k[a] as f64 * stride).collect();
            let count = pts
                .iter()
                .filter(|p| (0..dims).all(|a| lo[a] <= p[a] && p[a] < lo[a] + size))
                .count() as u64;
            if count > 0 {
                out.insert((sample.to_string(), id), (lo, count));
            }
        }
    }
    out
}

#[test]
fn blocks_match_a_brute_force_count() {
    let f = fixture();
    let e = f.engine();
    for (size, stride) in [
        (10.0, 10.0),
        (10.0, 5.0),
        (10.0, 15.0),
        (25.0, 25.0),
        (1000.0, 1000.0),
    ] {
        let b = e
            .sql(&format!(
                "SELECT * FROM blocks({size}, {stride}) ORDER BY sample_id, block_id"
            ))
            .unwrap();
        let names: Vec<String> = b[0]
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(
            names,
            [
                "sample_id",
                "block_id",
                "x0",
                "y0",
                "z0",
                "x1",
                "y1",
                "z1",
                "n_cells"
            ]
        );
        let (sid, bid, n) = (
            column_strings(&b, "sample_id"),
            column_u64(&b, "block_id"),
            column_u64(&b, "n_cells"),
        );
        let lo = [
            column_f64(&b, "x0"),
            column_f64(&b, "y0"),
            column_f64(&b, "z0"),
        ];
        let hi = [
            column_f64(&b, "x1"),
            column_f64(&b, "y1"),
            column_f64(&b, "z1"),
        ];
        let mut got = BTreeMap::new();
        for i in 0..sid.len() {
            let s = sid[i].clone().unwrap();
            let dims = if s == "s3" { 3 } else { 2 };
            let l: Vec<f64> = (0..dims).map(|a| lo[a][i].unwrap()).collect();
            for a in 0..dims {
                assert_eq!(hi[a][i], Some(l[a] + size));
            }
            if dims == 2 {
                assert_eq!((lo[2][i], hi[2][i]), (None, None));
            }
            got.insert((s, bid[i]), (l, n[i]));
        }
        assert_eq!(
            got,
            brute_force_blocks(&f.cells, size, stride),
            "size {size} stride {stride}"
        );
    }
    // blocks(size) means stride = size, and the result filters like any table.
    let a = e.sql("SELECT block_id, n_cells FROM blocks(10) WHERE n_cells BETWEEN 2 AND 4 AND sample_id = 's1' ORDER BY block_id").unwrap();
    let want: Vec<u64> = brute_force_blocks(&f.cells, 10.0, 10.0)
        .into_iter()
        .filter(|((s, _), (_, n))| s == "s1" && (2..=4).contains(n))
        .map(|((_, id), _)| id)
        .collect();
    assert!(!want.is_empty());
    assert_eq!(column_u64(&a, "block_id"), want);
}

#[test]
fn blocks_arguments_are_checked() {
    let f = fixture();
    let e = f.engine();
    for sql in [
        "SELECT * FROM blocks()",
        "SELECT * FROM blocks(0)",
        "SELECT * FROM blocks(10, 'a')",
        "SELECT * FROM blocks(1, 2, 3)",
    ] {
        let err = e.sql(sql).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Query, "{sql}");
        assert!(
            err.to_string().contains("blocks(size[, stride])"),
            "{sql}: {err}"
        );
    }
}

#[test]
fn blocks_of_a_2d_only_corpus_have_no_z_columns() {
    let f = fixture();
    // Drop z and the 3-D sample from obs.
    let path = f.root().join("obs.parquet");
    let file = std::fs::File::open(&path).unwrap();
    let batches: Vec<RecordBatch> =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap()
            .collect::<std::result::Result<_, _>>()
            .unwrap();
    let batch = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    let keep = arrow::compute::kernels::cmp::neq(
        &arrow::compute::cast(batch.column_by_name("sample_id").unwrap(), &DataType::Utf8).unwrap(),
        &StringArray::new_scalar("s3"),
    )
    .unwrap();
    let batch = arrow::compute::filter_record_batch(&batch, &keep).unwrap();
    let cols: Vec<(&str, ArrayRef)> = batch
        .schema_ref()
        .fields()
        .iter()
        .zip(batch.columns())
        .filter(|(f, _)| f.name() != "z")
        .map(|(f, c)| (f.name().as_str(), c.clone()))
        .collect();
    write(&path, cols);
    let b = f.engine().sql("SELECT * FROM blocks(20)").unwrap();
    let names: Vec<String> = b[0]
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(
        names,
        ["sample_id", "block_id", "x0", "y0", "x1", "y1", "n_cells"]
    );
    let want = brute_force_blocks(&f.cells, 20.0, 20.0);
    let total: u64 = want
        .iter()
        .filter(|((s, _), _)| s == "s1")
        .map(|(_, (_, n))| n)
        .sum();
    assert_eq!(column_u64(&b, "n_cells").iter().sum::<u64>(), total);
}

#[test]
fn regions_are_derived_from_the_obs_region_column() {
    let f = fixture();
    let b = f.engine().sql("SELECT sample_id, region_id, n_cells, first_cell FROM regions ORDER BY sample_id, region_id").unwrap();
    let mut want: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for (i, c) in f.cells.iter().enumerate() {
        if let Some(r) = c.region {
            let e = want
                .entry((c.sample.to_string(), r.to_string()))
                .or_insert((0, i as u64));
            e.0 += 1;
        }
    }
    let got: BTreeMap<(String, String), (u64, u64)> = column_strings(&b, "sample_id")
        .into_iter()
        .zip(column_strings(&b, "region_id"))
        .zip(
            column_u64(&b, "n_cells")
                .into_iter()
                .zip(column_u64(&b, "first_cell")),
        )
        .map(|((s, r), v)| ((s.unwrap(), r.unwrap()), v))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn region_column_must_exist() {
    let f = fixture();
    let opts = QueryOptions {
        threads: 1,
        region_column: Some("niche".into()),
    };
    let err = QueryEngine::from_parts(f.root(), None, None, &opts).unwrap_err();
    assert!(
        err.to_string().contains("`niche` is not an obs column")
            && err.to_string().contains("cell_type"),
        "{err}"
    );
}

#[test]
fn results_are_written_in_every_format() {
    let f = fixture();
    let e = f.engine();
    let sql = "SELECT cell, sample_id, cell_type, x FROM obs WHERE cell < 4 ORDER BY cell";
    let mut outputs = HashMap::new();
    for format in [
        OutputFormat::Table,
        OutputFormat::Csv,
        OutputFormat::Json,
        OutputFormat::Parquet,
        OutputFormat::Arrow,
    ] {
        let mut w: Option<ResultWriter<Vec<u8>>> = None;
        let schema = e
            .for_each_batch(sql, |b| {
                let w = w.get_or_insert_with(|| {
                    ResultWriter::new(format, &b.schema(), Vec::new()).unwrap()
                });
                w.write(b)
            })
            .unwrap();
        let w = w.unwrap_or_else(|| ResultWriter::new(format, &schema, Vec::new()).unwrap());
        outputs.insert(format, w.finish().unwrap());
    }
    let table = String::from_utf8(outputs[&OutputFormat::Table].clone()).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[1].starts_with("| cell | sample_id | cell_type | x "),
        "{table}"
    );
    assert!(
        lines
            .iter()
            .all(|l| l.len() == lines[0].len() || l.ends_with("rows")),
        "{table}"
    );
    assert_eq!(lines.last().unwrap(), &"4 rows");
    assert!(table.contains("|    3 | s1        |"), "{table}");
    assert!(table.contains("NaN"), "{table}");

    let csv = String::from_utf8(outputs[&OutputFormat::Csv].clone()).unwrap();
    let first: Vec<&str> = csv.lines().collect();
    assert_eq!(first[0], "cell,sample_id,cell_type,x");
    assert!(
        first[1].starts_with(&format!("0,s1,{},-20", f.cells[0].cell_type)),
        "{csv}"
    );

    let json = String::from_utf8(outputs[&OutputFormat::Json].clone()).unwrap();
    let row: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(row["cell"], 0);
    assert_eq!(row["sample_id"], "s1");

    let pq = f.root().join("out.parquet");
    std::fs::write(&pq, &outputs[&OutputFormat::Parquet]).unwrap();
    let r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(&pq).unwrap(),
    )
    .unwrap();
    assert!(r
        .schema()
        .fields()
        .iter()
        .all(|f| !matches!(f.data_type(), DataType::Utf8View)));
    let batches: Vec<_> = r
        .build()
        .unwrap()
        .collect::<std::result::Result<_, _>>()
        .unwrap();
    assert_eq!(column_u64(&batches, "cell"), [0, 1, 2, 3]);

    let ipc = std::io::Cursor::new(outputs[&OutputFormat::Arrow].clone());
    let r = arrow::ipc::reader::FileReader::try_new(ipc, None).unwrap();
    let batches: Vec<_> = r.collect::<std::result::Result<_, _>>().unwrap();
    assert_eq!(
        column_strings(&batches, "sample_id"),
        vec![Some("s1".to_string()); 4]
    );
}

#[test]
fn empty_results_still_print_their_header() {
    let f = fixture();
    let e = f.engine();
    let schema = e
        .for_each_batch("SELECT cell, donor FROM obs WHERE false", |_| Ok(()))
        .unwrap();
    let t = format_table(&schema, &[]).unwrap();
    assert!(
        t.contains("| cell | donor |") && t.ends_with("0 rows\n"),
        "{t}"
    );
    let s: BTreeSet<_> = schema.fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(s.len(), 2);
}

/// The same layer over a real corpus written by `corpus::testing` and opened with `Corpus`.
#[test]
fn a_real_corpus_answers_sql_expr_blocks_and_cohorts() {
    use crate::corpus::testing::{write_corpus_with, Row, TestCorpusOptions};
    let mut rng = Rng(7);
    let n = 40usize;
    let n_genes = 12u64;
    let rows: Vec<Row> = (0..n)
        .map(|_| {
            let genes: Vec<u32> = (0..n_genes as u32).filter(|_| rng.below(4) == 0).collect();
            let values = genes.iter().map(|_| 1.0 + rng.below(5) as f64).collect();
            (genes, values)
        })
        .collect();
    let coords: Vec<Option<[f64; 2]>> = (0..n)
        .map(|i| (i < 30).then(|| [100.0 * rng.unit(), 50.0 * rng.unit()]))
        .collect();
    let types = ["T cell", "B cell"];
    let cell_type: Vec<&str> = (0..n).map(|i| types[i % 2]).collect();
    let opts = TestCorpusOptions {
        coords: Some(coords.clone()),
        obs_columns: vec![(
            "cell_type".to_string(),
            Arc::new(
                cell_type
                    .iter()
                    .map(|s| Some(*s))
                    .collect::<DictionaryArray<Int32Type>>(),
            ) as ArrayRef,
        )],
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    write_corpus_with(dir.path(), n_genes, &rows, &[("a", 30), ("b", 10)], &opts).unwrap();
    let corpus = Arc::new(crate::Corpus::open(dir.path()).unwrap());
    let e = QueryEngine::new(corpus.clone()).unwrap();

    let want_expr = |cell: usize, gene: u32| -> f64 {
        let (g, v) = &rows[cell];
        g.iter().position(|&x| x == gene).map_or(0.0, |p| v[p])
    };
    let b = e
        .sql("SELECT cell, expr(cell, 'gene3') AS v FROM obs ORDER BY cell")
        .unwrap();
    let got = column_f64(&b, "v");
    for (i, v) in got.iter().enumerate() {
        assert_eq!(*v, Some(want_expr(i, 3)), "cell {i}");
    }
    let c = cohort(
        &corpus,
        "SELECT cell FROM obs WHERE cell_type = 'T cell' AND expr(cell, 'gene3') > 0",
    )
    .unwrap();
    let want: Vec<u64> = (0..n)
        .filter(|&i| i % 2 == 0 && want_expr(i, 3) > 0.0)
        .map(|i| i as u64)
        .collect();
    assert_eq!(c.to_vec(), want);
    assert_eq!(
        cohort_where(&corpus, "sample_id = 'b'").unwrap().to_vec(),
        (30..40).collect::<Vec<u64>>()
    );

    // Blocks of 25 over sample a: the counts add up to the cells with coordinates.
    let b = e
        .sql("SELECT sample_id, SUM(n_cells) AS n FROM blocks(25) GROUP BY sample_id")
        .unwrap();
    assert_eq!(column_strings(&b, "sample_id"), [Some("a".to_string())]);
    assert_eq!(column_u64(&b, "n"), [30]);
}

/// The corpus, each cell's coordinates and each cell's region.
type SpatialCorpus = (
    Arc<crate::Corpus>,
    Vec<Option<[f64; 2]>>,
    Vec<Option<&'static str>>,
);

/// A corpus from `corpus::testing`: two 2-D samples with unevenly dense coordinates (so that
/// `blocks(500)` has blocks on both sides of 20..200 cells), a non-spatial one, and a
/// `region` obs column.
fn spatial_corpus(dir: &Path) -> SpatialCorpus {
    use crate::corpus::testing::{write_corpus_with, TestCorpusOptions};
    let mut rng = Rng(0x5eed);
    let samples: [(&str, u64); 3] = [("a", 1500), ("b", 700), ("c", 60)];
    let mut coords = Vec::new();
    let mut regions = Vec::new();
    for (s, n) in samples {
        for _ in 0..n {
            let (u, v) = (rng.unit(), rng.unit());
            coords.push(match s {
                "a" => Some([3000.0 * u * u, 2000.0 * v]),
                "b" => Some([-1234.5 + 1700.0 * u, 77.25 + 1100.0 * v * v * v]),
                _ => None,
            });
            regions.push(
                [Some("r1"), Some("r2"), None, Some("r3"), Some("r1")][rng.below(5) as usize],
            );
        }
    }
    let n = coords.len();
    let rows: Vec<crate::corpus::testing::Row> =
        (0..n).map(|i| (vec![(i % 5) as u32], vec![1.0])).collect();
    let opts = TestCorpusOptions {
        batch_rows: 256,
        part_cells: 1024,
        coords: Some(coords.clone()),
        obs_columns: vec![(
            "region".to_string(),
            Arc::new(
                regions
                    .iter()
                    .copied()
                    .collect::<DictionaryArray<Int32Type>>(),
            ) as ArrayRef,
        )],
        ..Default::default()
    };
    write_corpus_with(dir, 5, &rows, &samples, &opts).unwrap();
    (Arc::new(crate::Corpus::open(dir).unwrap()), coords, regions)
}

/// Brute-force tiling blocks of `size` of every spatial sample: `(sample_id, block_id)` to
/// the cells of `cohort` in the block, with the grid anchored at the minimum over all cells.
fn brute_force_tiling(
    corpus: &crate::Corpus,
    coords: &[Option<[f64; 2]>],
    size: f64,
    cohort: &crate::sample::Cohort,
) -> BTreeMap<(String, u64), Vec<u64>> {
    let mut out: BTreeMap<(String, u64), Vec<u64>> = BTreeMap::new();
    for s in &corpus.manifest().samples {
        let cells = s.first_cell..s.first_cell + s.n_cells;
        let pts: Vec<(u64, [f64; 2])> = cells
            .filter_map(|c| coords[c as usize].map(|p| (c, p)))
            .collect();
        if pts.is_empty() {
            continue;
        }
        let min = [0, 1].map(|a| pts.iter().map(|(_, p)| p[a]).fold(f64::INFINITY, f64::min));
        let max = [0, 1].map(|a| {
            pts.iter()
                .map(|(_, p)| p[a])
                .fold(f64::NEG_INFINITY, f64::max)
        });
        let n = [0, 1].map(|a| {
            1 + (0..)
                .take_while(|&k| min[a] + k as f64 * size + size <= max[a])
                .count() as u64
        });
        for (c, p) in pts {
            if !cohort.contains(c) {
                continue;
            }
            // The one k per axis with min + k * size <= p < min + k * size + size.
            let k = [0, 1].map(|a| {
                (0..n[a])
                    .find(|&k| {
                        let lo = min[a] + k as f64 * size;
                        lo <= p[a] && p[a] < lo + size
                    })
                    .unwrap()
            });
            out.entry((s.sample_id.clone(), k[0] * n[1] + k[1]))
                .or_default()
                .push(c);
        }
    }
    out
}

#[test]
fn blocks_selected_in_sql_are_the_blocks_the_sampler_serves() {
    use crate::sample::{BlockConfig, Cohort, GroupKey, SampleIndex, Sampler, SpatialBlocks};
    let dir = tempfile::tempdir().unwrap();
    let (corpus, coords, _) = spatial_corpus(dir.path());
    let e = QueryEngine::new(corpus.clone()).unwrap();
    let sel = block_selection(
        &e,
        "SELECT sample_id, block_id FROM blocks(500) WHERE n_cells BETWEEN 20 AND 200",
    )
    .unwrap();
    let all = brute_force_tiling(&corpus, &coords, 500.0, &Cohort::all(corpus.n_cells()));
    let want: BTreeMap<(String, u64), Vec<u64>> = all
        .iter()
        .filter(|(_, cells)| (20..=200).contains(&cells.len()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // The filter keeps some blocks of both samples and drops others.
    assert!(want.keys().any(|(s, _)| s == "a") && want.keys().any(|(s, _)| s == "b"));
    assert!(want.len() < all.len());
    assert_eq!(sel, want.keys().cloned().collect::<Vec<_>>());

    let index = SampleIndex::from_corpus(&corpus, None, true).unwrap();
    let served = |cohort: Cohort| -> BTreeMap<(String, u64), Vec<u64>> {
        let cfg = BlockConfig::new(500.0, 11).only(sel.clone());
        let s = SpatialBlocks::new(&index, cohort, cfg).unwrap();
        (0..s.epoch_len(3))
            .map(|p| {
                let g = s.item(3, p);
                let GroupKey::Block(id) = g.key else {
                    panic!("{:?}", g.key)
                };
                (
                    (index.samples[g.sample as usize].sample_id.clone(), id),
                    g.cells,
                )
            })
            .collect()
    };
    assert_eq!(served(Cohort::all(corpus.n_cells())), want);

    // With a cohort the block ids keep their meaning: the same blocks, their cohort cells.
    let cohort = e
        .cohort("SELECT cell FROM obs WHERE cell % 3 <> 0")
        .unwrap();
    let want_cohort: BTreeMap<(String, u64), Vec<u64>> =
        brute_force_tiling(&corpus, &coords, 500.0, &cohort)
            .into_iter()
            .filter(|(k, _)| want.contains_key(k))
            .collect();
    assert_eq!(served(cohort), want_cohort);
}

#[test]
fn regions_selected_in_sql_are_the_regions_the_sampler_serves() {
    use crate::sample::{Cohort, RegionConfig, Regions, SampleIndex, Sampler};
    let dir = tempfile::tempdir().unwrap();
    let (corpus, _, regions) = spatial_corpus(dir.path());
    let e = QueryEngine::new(corpus.clone()).unwrap();
    let sel = region_selection(
        &e,
        "SELECT sample_id, region_id, n_cells FROM regions WHERE n_cells BETWEEN 100 AND 400",
    )
    .unwrap();
    let mut want: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
    for s in &corpus.manifest().samples {
        for c in s.first_cell..s.first_cell + s.n_cells {
            if let Some(r) = regions[c as usize] {
                want.entry((s.sample_id.clone(), r.to_string()))
                    .or_default()
                    .push(c);
            }
        }
    }
    let n_all = want.len();
    want.retain(|_, cells| (100..=400).contains(&cells.len()));
    assert!(!want.is_empty() && want.len() < n_all);
    assert_eq!(sel, want.keys().cloned().collect::<Vec<_>>());

    let index = SampleIndex::from_corpus(&corpus, Some("region"), true).unwrap();
    let cfg = RegionConfig::new(5).only(sel);
    let s = Regions::from_obs_column(&index, Cohort::all(corpus.n_cells()), cfg).unwrap();
    let got: BTreeMap<(String, String), Vec<u64>> = (0..s.epoch_len(0))
        .map(|p| {
            let g = s.item(0, p);
            let crate::sample::GroupKey::Region(i) = g.key else {
                panic!()
            };
            let (sample, region) = s.region(i);
            (
                (
                    index.samples[sample as usize].sample_id.clone(),
                    region.to_string(),
                ),
                g.cells,
            )
        })
        .collect();
    assert_eq!(got, want);
}

#[test]
fn selections_need_their_columns() {
    let dir = tempfile::tempdir().unwrap();
    let (corpus, _, _) = spatial_corpus(dir.path());
    let e = QueryEngine::new(corpus).unwrap();
    let err = block_selection(&e, "SELECT sample_id, n_cells FROM blocks(500)").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Query);
    let m = err.to_string();
    assert!(
        m.contains("no `block_id` column")
            && m.contains("sample_id, n_cells")
            && m.contains("FROM blocks("),
        "{m}"
    );
    let m = block_selection(&e, "SELECT 1 AS x")
        .unwrap_err()
        .to_string();
    assert!(m.contains("no `sample_id` or `block_id` column"), "{m}");
    let m = block_selection(
        &e,
        "SELECT sample_id, CAST(NULL AS BIGINT) AS block_id FROM blocks(500)",
    )
    .unwrap_err()
    .to_string();
    assert!(m.contains("`block_id` has") && m.contains("null"), "{m}");
    let m = block_selection(&e, "SELECT 'a' AS sample_id, -1 AS block_id")
        .unwrap_err()
        .to_string();
    assert!(m.contains("not block ids"), "{m}");
    let m = block_selection(&e, "SELECT 'a' AS sample_id, 1.5 AS block_id")
        .unwrap_err()
        .to_string();
    assert!(m.contains("expected integer block ids"), "{m}");
    let m = region_selection(&e, "SELECT region_id FROM regions")
        .unwrap_err()
        .to_string();
    assert!(
        m.contains("no `sample_id` column") && m.contains("region_id"),
        "{m}"
    );
    // An empty selection is not an error.
    assert!(block_selection(
        &e,
        "SELECT sample_id, block_id FROM blocks(500) WHERE false"
    )
    .unwrap()
    .is_empty());
}

#[test]
fn udf_errors_inside_a_parquet_row_filter_keep_their_own_message() {
    let flattened = r#"Parquet error: External: Compute error: Error evaluating filter predicate: Execution("expr(): unknown gene 'CD3E' (not a name in genes.parquet nor a gene id)")"#;
    assert_eq!(
        super::execution_message(flattened).as_deref(),
        Some("expr(): unknown gene 'CD3E' (not a name in genes.parquet nor a gene id)")
    );
    assert_eq!(
        super::execution_message("Error during planning: no such table"),
        None
    );
}
