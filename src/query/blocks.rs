//! The `blocks(size[, stride])` table function: the non-empty spatial blocks of every spatial
//! sample with their bounds and cell counts, computed from `obs` coordinates with the block
//! grid of the sampling layer ([`crate::sample::BlockGrid`], anchored by
//! [`crate::sample::Extent`] over all cells of the sample), the grid the block sampler uses.
//!
//! Columns: `sample_id`, `block_id`, `x0`, `y0`, (`z0`), `x1`, `y1`, (`z1`), `n_cells`; the z
//! columns exist when some sample is 3-D (null for 2-D samples). Bounds are `[x0, x1)`.
//! Rows are in corpus sample order, then block id.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Builder, RecordBatch, StringBuilder, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef};
use datafusion::catalog::{MemTable, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{plan_err, DataFusionError, Result as DfResult, ScalarValue};
use datafusion::logical_expr::Expr;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{Context, Error, Result};
use crate::sample::{BlockGrid, Extent};

/// Coordinates extent of one sample.
#[derive(Debug, Clone)]
pub(crate) struct SampleExtent {
    pub sample_id: String,
    /// 0 (not spatial), 2 or 3.
    pub dims: usize,
    /// Over the sample's cells with finite coordinates on its `dims` axes; `None` for a
    /// sample that is not spatial.
    pub extent: Option<Extent>,
}

/// Extents over 2 and 3 axes, while the sample's dimensionality is not known yet.
#[derive(Debug, Clone)]
struct Running {
    e2: Extent,
    e3: Extent,
}

impl Running {
    fn new() -> Self {
        Running {
            e2: Extent::new(2),
            e3: Extent::new(3),
        }
    }
}

/// The table function; holds the corpus paths and caches per-sample extents.
#[derive(Debug)]
pub(crate) struct BlocksFunction {
    obs: Vec<PathBuf>,
    samples: Vec<PathBuf>,
    extents: OnceLock<std::result::Result<Arc<Vec<SampleExtent>>, String>>,
}

impl BlocksFunction {
    /// Over the files of the obs and samples tables, in row order.
    pub(crate) fn new(obs: Vec<PathBuf>, samples: Vec<PathBuf>) -> Self {
        BlocksFunction {
            obs,
            samples,
            extents: OnceLock::new(),
        }
    }

    fn extents(&self) -> Result<Arc<Vec<SampleExtent>>> {
        self.extents
            .get_or_init(|| {
                sample_extents(&self.obs, &self.samples)
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(|e| Error::new(crate::ErrorKind::Query, e))
    }

    /// Counts the cells of every non-empty block.
    pub(crate) fn compute(&self, size: f64, stride: f64) -> Result<RecordBatch> {
        let extents = self.extents()?;
        let mut grids: HashMap<&str, (usize, BlockGrid)> = HashMap::new();
        for (i, e) in extents.iter().enumerate() {
            if let Some(grid) = e
                .extent
                .map(|x| x.grid(size, stride))
                .transpose()?
                .flatten()
            {
                grids.insert(&e.sample_id, (i, grid));
            }
        }
        let three_d = extents.iter().any(|e| e.dims == 3);
        let mut counts: Vec<BTreeMap<u64, u64>> = vec![BTreeMap::new(); extents.len()];
        if !grids.is_empty() {
            let path = first_or_empty(&self.obs);
            for batch in read_columns(&self.obs, &["sample_id", "x", "y", "z"])? {
                let batch = batch?;
                let Cols { sample, x, y, z } = Cols::of(&batch, path)?;
                let (x, y) = match (x, y) {
                    (Some(x), Some(y)) => (x, y),
                    _ => break,
                };
                let (x, y) = (
                    x.as_primitive::<Float64Type>(),
                    y.as_primitive::<Float64Type>(),
                );
                let z = z.as_ref().map(|z| z.as_primitive::<Float64Type>());
                let sample = sample.as_string::<i32>();
                let mut current: Option<(&str, Option<&(usize, BlockGrid)>)> = None;
                for r in 0..batch.num_rows() {
                    let sid = if sample.is_valid(r) {
                        sample.value(r)
                    } else {
                        ""
                    };
                    let entry = match current {
                        Some((s, g)) if s == sid => g,
                        _ => {
                            let g = grids.get(sid);
                            current = Some((sid, g));
                            g
                        }
                    };
                    let Some((i, grid)) = entry else { continue };
                    if x.is_null(r) || y.is_null(r) {
                        continue;
                    }
                    let mut p = [x.value(r), y.value(r), f64::NAN];
                    if grid.dims() == 3 {
                        match z {
                            Some(z) if z.is_valid(r) => p[2] = z.value(r),
                            _ => continue,
                        }
                    }
                    let c = &mut counts[*i];
                    grid.blocks_containing(&p[..grid.dims()], |id| *c.entry(id).or_insert(0) += 1);
                }
            }
        }
        let schema = blocks_schema(three_d);
        let n: usize = counts.iter().map(BTreeMap::len).sum();
        let mut sid = StringBuilder::with_capacity(n, n * 8);
        let mut bid = UInt64Builder::with_capacity(n);
        let mut lo: Vec<Float64Builder> =
            (0..3).map(|_| Float64Builder::with_capacity(n)).collect();
        let mut hi: Vec<Float64Builder> =
            (0..3).map(|_| Float64Builder::with_capacity(n)).collect();
        let mut cnt = UInt64Builder::with_capacity(n);
        for (e, c) in extents.iter().zip(&counts) {
            let Some((_, grid)) = grids.get(e.sample_id.as_str()) else {
                continue;
            };
            for (&id, &k) in c {
                let (l, h) = grid.bounds(id);
                sid.append_value(&e.sample_id);
                bid.append_value(id);
                for a in 0..3 {
                    if a < grid.dims() {
                        lo[a].append_value(l[a]);
                        hi[a].append_value(h[a]);
                    } else {
                        lo[a].append_null();
                        hi[a].append_null();
                    }
                }
                cnt.append_value(k);
            }
        }
        let axes = if three_d { 3 } else { 2 };
        let mut columns: Vec<ArrayRef> = vec![Arc::new(sid.finish()), Arc::new(bid.finish())];
        columns.extend(
            lo.iter_mut()
                .take(axes)
                .map(|b| Arc::new(b.finish()) as ArrayRef),
        );
        columns.extend(
            hi.iter_mut()
                .take(axes)
                .map(|b| Arc::new(b.finish()) as ArrayRef),
        );
        columns.push(Arc::new(cnt.finish()));
        Ok(RecordBatch::try_new(schema, columns)?)
    }
}

/// The schema of `blocks(...)`.
pub(crate) fn blocks_schema(three_d: bool) -> SchemaRef {
    let f = |name: &str, nullable: bool| Field::new(name, DataType::Float64, nullable);
    let mut fields = vec![
        Field::new("sample_id", DataType::Utf8, false),
        Field::new("block_id", DataType::UInt64, false),
        f("x0", false),
        f("y0", false),
    ];
    if three_d {
        fields.push(f("z0", true));
    }
    fields.extend([f("x1", false), f("y1", false)]);
    if three_d {
        fields.push(f("z1", true));
    }
    fields.push(Field::new("n_cells", DataType::UInt64, false));
    Arc::new(Schema::new(fields))
}

impl TableFunctionImpl for BlocksFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        if exprs.is_empty() || exprs.len() > 2 {
            return plan_err!(
                "blocks(size[, stride]) takes 1 or 2 arguments, got {}",
                exprs.len()
            );
        }
        let number = |e: &Expr, what: &str| -> DfResult<f64> {
            let value = match e {
                Expr::Literal(v, _) => v.cast_to(&DataType::Float64).ok(),
                _ => None,
            };
            match value {
                Some(ScalarValue::Float64(Some(v))) if v.is_finite() && v > 0.0 => Ok(v),
                _ => plan_err!(
                    "blocks(size[, stride]): {what} must be a positive number literal, got {e}"
                ),
            }
        };
        let size = number(&exprs[0], "size")?;
        let stride = match exprs.get(1) {
            Some(e) => number(e, "stride")?,
            None => size,
        };
        let batch = self
            .compute(size, stride)
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        Ok(Arc::new(MemTable::try_new(
            batch.schema(),
            vec![vec![batch]],
        )?))
    }
}

struct Cols {
    sample: ArrayRef,
    x: Option<ArrayRef>,
    y: Option<ArrayRef>,
    z: Option<ArrayRef>,
}

impl Cols {
    fn of(batch: &RecordBatch, path: &Path) -> Result<Cols> {
        let f64 = |name: &str| -> Result<Option<ArrayRef>> {
            batch
                .column_by_name(name)
                .map(|c| arrow::compute::cast(c, &DataType::Float64))
                .transpose()
                .at_object(path, name)
        };
        let sample = batch
            .column_by_name("sample_id")
            .ok_or_else(|| Error::corpus(path, "no column `sample_id`"))?;
        Ok(Cols {
            sample: arrow::compute::cast(sample, &DataType::Utf8).at_object(path, "sample_id")?,
            x: f64("x")?,
            y: f64("y")?,
            z: f64("z")?,
        })
    }
}

/// The first file of a table, for messages.
fn first_or_empty(files: &[PathBuf]) -> &Path {
    files.first().map_or(Path::new(""), |p| p.as_path())
}

/// Reads the columns of `names` that exist in the Parquet files of a table, file after file.
fn read_columns(
    files: &[PathBuf],
    names: &[&str],
) -> Result<impl Iterator<Item = Result<RecordBatch>> + use<>> {
    let mut readers = Vec::with_capacity(files.len());
    for path in files {
        let file = File::open(path).map_err(|e| Error::io(path, "opening", e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).at(path)?;
        let roots: Vec<usize> = builder
            .schema()
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| names.contains(&f.name().as_str()))
            .map(|(i, _)| i)
            .collect();
        let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), roots);
        let reader = builder.with_projection(mask).build().at(path)?;
        let path = path.to_path_buf();
        readers.push(reader.map(move |b| b.map_err(|e| Error::from(e).with_path(&path))));
    }
    Ok(readers.into_iter().flatten())
}

/// Per-sample spatial dimensions and coordinate extents, in corpus order.
///
/// Dimensions come from `samples.parquet: spatial_dims` when present, else from which
/// coordinates the sample's cells have.
pub(crate) fn sample_extents(obs: &[PathBuf], samples: &[PathBuf]) -> Result<Vec<SampleExtent>> {
    let mut declared: HashMap<String, usize> = HashMap::new();
    if !samples.is_empty() {
        for batch in read_columns(samples, &["sample_id", "spatial_dims"])? {
            let batch = batch?;
            let (Some(s), Some(d)) = (
                batch.column_by_name("sample_id"),
                batch.column_by_name("spatial_dims"),
            ) else {
                break;
            };
            let s = arrow::compute::cast(s, &DataType::Utf8)
                .at_object(first_or_empty(samples), "sample_id")?;
            let d = arrow::compute::cast(d, &DataType::UInt64)
                .at_object(first_or_empty(samples), "spatial_dims")?;
            let (s, d) = (
                s.as_string::<i32>(),
                d.as_primitive::<arrow::datatypes::UInt64Type>(),
            );
            for r in 0..batch.num_rows() {
                if s.is_valid(r) && d.is_valid(r) {
                    declared.insert(s.value(r).to_string(), d.value(r) as usize);
                }
            }
        }
    }
    let mut order: Vec<String> = Vec::new();
    let mut running: HashMap<String, Running> = HashMap::new();
    let mut has_z_column = false;
    for batch in read_columns(obs, &["sample_id", "x", "y", "z"])? {
        let batch = batch?;
        let Cols { sample, x, y, z } = Cols::of(&batch, first_or_empty(obs))?;
        has_z_column |= z.is_some();
        let sample = sample.as_string::<i32>();
        let (x, y) = (
            x.as_ref().map(|a| a.as_primitive::<Float64Type>()),
            y.as_ref().map(|a| a.as_primitive::<Float64Type>()),
        );
        let z = z.as_ref().map(|a| a.as_primitive::<Float64Type>());
        let mut current: Option<(&str, String)> = None;
        for r in 0..batch.num_rows() {
            let sid = if sample.is_valid(r) {
                sample.value(r)
            } else {
                ""
            };
            if current.as_ref().is_none_or(|(s, _)| *s != sid) {
                if !running.contains_key(sid) {
                    order.push(sid.to_string());
                    running.insert(sid.to_string(), Running::new());
                }
                current = Some((sid, sid.to_string()));
            }
            let key = &current.as_ref().expect("set above").1;
            let (Some(x), Some(y)) = (x, y) else { continue };
            let get = |a: &arrow::array::Float64Array| {
                if a.is_valid(r) {
                    a.value(r)
                } else {
                    f64::NAN
                }
            };
            let p = [get(x), get(y), z.map_or(f64::NAN, get)];
            let run = running.get_mut(key).expect("inserted above");
            // A point counts for an extent when it is finite on the extent's axes.
            run.e2.add(&p);
            run.e3.add(&p);
        }
    }
    Ok(order
        .into_iter()
        .map(|sample_id| {
            let run = &running[&sample_id];
            let inferred = if !run.e3.is_empty() {
                3
            } else if !run.e2.is_empty() {
                2
            } else {
                0
            };
            let mut dims = declared.get(&sample_id).copied().unwrap_or(inferred);
            if dims == 3 && !has_z_column {
                dims = 2;
            }
            let extent = match dims {
                3 => Some(run.e3),
                2 => Some(run.e2),
                _ => {
                    dims = 0;
                    None
                }
            };
            SampleExtent {
                sample_id,
                dims,
                extent,
            }
        })
        .collect())
}
