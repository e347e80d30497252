//! One batch from a list of cell ids: each cell's bytes are copied once, from the mapping into
//! buffers sized exactly beforehand.

use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeListArray, ListArray, PrimitiveArray, UInt64Array,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Field, Float32Type, Float64Type, Int32Type, Schema, SchemaRef,
    UInt16Type, UInt32Type,
};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};

use super::pool::{BufferPool, OutBuf, Pooled, Region};
use super::tokens::Tokenizer;
use super::{BatchOptions, BatchRequest, DenseGenes, IndexOutput, ValueOutput};
use crate::corpus::{Corpus, IndexType, Indices, ValueType, Values};
use crate::error::{Context, Error, ErrorKind, Result};
use crate::sample::Bounds;

/// The coordinate columns of `obs.parquet`, in axis order.
const AXES: [&str; 3] = ["x", "y", "z"];

/// Marks a gene that is not a column of the dense output.
const NOT_SELECTED: u32 = u32::MAX;

/// Builds batches from cell ids for one corpus and one set of [`BatchOptions`].
///
/// Cheap to share across threads: the obs columns are loaded once at construction (as Arrow
/// arrays; only the requested ones) and gathered with `arrow::compute::take`. The matrix
/// buffers of a batch return to the gatherer's pool when the batch is dropped, and the next
/// batch reuses them; [`Gatherer::gather_request_in`] writes them into the caller's memory
/// instead.
///
/// ```no_run
/// use std::sync::Arc;
/// use cellarrow::loader::{BatchOptions, DenseGenes, Gatherer};
///
/// let corpus = Arc::new(cellarrow::Corpus::open("pbmc.corpus")?);
/// // CSR rows with one obs column.
/// let options = BatchOptions { obs_columns: vec!["cell_type".into()], ..BatchOptions::default() };
/// let gatherer = Gatherer::new(corpus.clone(), options)?;
/// let batch = gatherer.gather(&[5, 0, 42], None)?;
/// assert_eq!(batch.num_rows(), 3);
/// // Dense rows over the first 100 genes.
/// let options = BatchOptions { dense: Some(DenseGenes::Ids((0..100).collect())), ..BatchOptions::default() };
/// let dense = Gatherer::new(corpus, options)?.gather(&[5, 0, 42], None)?;
/// assert_eq!(dense.schema().field(1).name(), "dense");
/// # Ok::<(), cellarrow::Error>(())
/// ```
pub struct Gatherer {
    corpus: Arc<Corpus>,
    options: BatchOptions,
    schema: SchemaRef,
    /// Gene id -> dense column, `NOT_SELECTED` for other genes (dense output only).
    dense_lut: Option<Vec<u32>>,
    /// Gene ids of the dense columns, in column order (empty for CSR output).
    dense_genes: Vec<u32>,
    dense_width: usize,
    /// Coordinate columns then the requested obs columns, one row per cell.
    obs: Vec<ArrayRef>,
    /// Coordinate axes of the corpus (2 or 3) with [`BatchOptions::bounds`], else 0.
    bound_axes: usize,
    pool: Arc<BufferPool>,
    /// Token output instead of CSR rows.
    tokenizer: Option<Tokenizer>,
}

impl std::fmt::Debug for Gatherer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gatherer")
            .field("corpus", &self.corpus.root())
            .field("options", &self.options)
            .field("schema", &self.schema)
            .finish()
    }
}

/// The dense gene selection: gene id -> dense column (`NOT_SELECTED` for other genes), and the
/// selected gene ids in column order.
fn dense_selection(corpus: &Corpus, sel: &DenseGenes) -> Result<(Vec<u32>, Vec<u32>)> {
    let ids = resolve_genes(corpus, sel)?;
    let mut lut = vec![NOT_SELECTED; corpus.n_genes() as usize];
    for (col, &g) in ids.iter().enumerate() {
        if lut[g as usize] != NOT_SELECTED {
            return Err(Error::invalid_input(format!(
                "gene {g} is selected twice for the dense output"
            )));
        }
        lut[g as usize] = col as u32;
    }
    Ok((lut, ids))
}

/// The matrix fields of a batch: `dense`, or `indices` and `values`.
fn matrix_fields(
    corpus: &Corpus,
    options: &BatchOptions,
    dense_width: usize,
) -> Result<Vec<Field>> {
    let manifest = corpus.manifest();
    let value_dt = output_value_type(manifest.value_type, options.values, options.dense.is_some());
    if options.dense.is_some() {
        return Ok(vec![Field::new(
            "dense",
            DataType::FixedSizeList(item_field(value_dt), dense_width as i32),
            false,
        )]);
    }
    let n_genes = corpus.n_genes();
    let index_dt = match (options.indices, manifest.index_type) {
        (IndexOutput::Int32, _) => {
            if n_genes > i32::MAX as u64 {
                return Err(Error::invalid_input(format!(
                    "{n_genes} genes do not fit Int32 gene ids; use the native index type"
                )));
            }
            DataType::Int32
        }
        (IndexOutput::Native, IndexType::Uint16) => DataType::UInt16,
        (IndexOutput::Native, IndexType::Uint32) => DataType::UInt32,
    };
    Ok(vec![
        Field::new("indices", DataType::List(item_field(index_dt)), false),
        Field::new("values", DataType::List(item_field(value_dt)), false),
    ])
}

/// The tokenizer of token output (see [`super::tokens`]), which replaces the CSR columns.
fn token_output(corpus: &Corpus, options: &BatchOptions) -> Result<Option<Tokenizer>> {
    let Some(t) = &options.tokens else {
        return Ok(None);
    };
    if options.dense.is_some() {
        return Err(Error::invalid_input(
            "tokens and dense are two kinds of output; ask for one",
        ));
    }
    Tokenizer::new(corpus, t).map(Some)
}

/// The obs columns a batch carries: the coordinate columns first (as Float64), then the
/// requested obs columns, each checked against `obs.parquet`. Appends their fields to `fields`
/// and returns the columns with the number of coordinate axes among them.
fn load_obs(
    corpus: &Corpus,
    options: &BatchOptions,
    fields: &mut Vec<Field>,
) -> Result<(Vec<ArrayRef>, usize)> {
    let coordinates = options.coordinates || options.bounds;
    if !coordinates && options.obs_columns.is_empty() {
        return Ok((Vec::new(), 0));
    }
    let obs_path = corpus.table_path("obs");
    let obs_schema = parquet_schema(&obs_path)?;
    let mut obs_names: Vec<String> = Vec::new();
    let mut axes = 0;
    if coordinates {
        for axis in AXES {
            if obs_schema.field_with_name(axis).is_ok() {
                obs_names.push(axis.to_string());
                axes += 1;
            } else if axis != "z" {
                return Err(Error::corpus(
                    &obs_path,
                    format!("no coordinate column {axis:?}; is this corpus spatial?"),
                ));
            }
        }
    }
    for name in &options.obs_columns {
        if obs_schema.field_with_name(name).is_err() {
            let known: Vec<&str> = obs_schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect();
            return Err(Error::invalid_input(format!(
                "obs has no column {name:?}; its columns are {}",
                known.join(", ")
            ))
            .with_path(&obs_path));
        }
        if obs_names.contains(name) || name == "cell" || name == "group" {
            continue;
        }
        obs_names.push(name.clone());
    }
    if obs_names.is_empty() {
        return Ok((Vec::new(), axes));
    }
    let names: Vec<&str> = obs_names.iter().map(String::as_str).collect();
    // Mapped from the column cache: loader processes share one copy of each column.
    let mut cols = corpus.obs_columns(&names)?;
    for (k, (name, col)) in names.iter().zip(cols.iter_mut()).enumerate() {
        // Coordinates as Float64 whatever their stored type, for the normalised ones.
        if k < axes {
            *col = arrow::compute::cast(col, &DataType::Float64).at(&obs_path)?;
        }
        fields.push(Field::new(*name, col.data_type().clone(), true));
    }
    Ok((cols, axes))
}

/// The group box fields (`min_x`.., `max_x`..) and the normalised coordinates (`x_norm`..).
fn bound_fields(bound_axes: usize) -> Vec<Field> {
    let mut fields = Vec::new();
    for prefix in ["min_", "max_"] {
        for axis in &AXES[..bound_axes] {
            fields.push(Field::new(
                format!("{prefix}{axis}"),
                DataType::Float64,
                false,
            ));
        }
    }
    for axis in &AXES[..bound_axes] {
        fields.push(Field::new(format!("{axis}_norm"), DataType::Float64, true));
    }
    fields
}

impl Gatherer {
    /// Prepares batches of `corpus` with `options`: resolves the dense gene selection and loads
    /// the requested obs columns.
    pub fn new(corpus: Arc<Corpus>, options: BatchOptions) -> Result<Gatherer> {
        let (dense_lut, dense_genes) = match &options.dense {
            None => (None, Vec::new()),
            Some(sel) => {
                let (lut, ids) = dense_selection(&corpus, sel)?;
                (Some(lut), ids)
            }
        };
        let dense_width = dense_genes.len();
        let mut fields = vec![Field::new("cell", DataType::UInt64, false)];
        if options.group_column {
            fields.push(Field::new("group", DataType::UInt64, false));
        }
        let tokenizer = token_output(&corpus, &options)?;
        match &tokenizer {
            Some(t) => fields.extend(t.fields()),
            None => fields.extend(matrix_fields(&corpus, &options, dense_width)?),
        }
        let (obs, axes) = load_obs(&corpus, &options, &mut fields)?;
        let bound_axes = if options.bounds { axes } else { 0 };
        fields.extend(bound_fields(bound_axes));

        Ok(Gatherer {
            corpus,
            options,
            schema: Arc::new(Schema::new(fields)),
            dense_lut,
            dense_genes,
            dense_width,
            obs,
            bound_axes,
            pool: Arc::default(),
            tokenizer,
        })
    }

    /// The schema of every batch.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The corpus.
    pub fn corpus(&self) -> &Arc<Corpus> {
        &self.corpus
    }

    /// The options.
    pub fn options(&self) -> &BatchOptions {
        &self.options
    }

    /// Width of the dense output (0 for CSR output).
    pub fn dense_width(&self) -> usize {
        self.dense_width
    }

    /// Gene ids of the dense columns, in column order (empty for CSR output).
    pub fn dense_genes(&self) -> &[u32] {
        &self.dense_genes
    }

    /// Gathers one batch. `groups` (one per cell) is required with
    /// [`BatchOptions::group_column`] and ignored otherwise.
    pub fn gather(&self, cells: &[u64], groups: Option<&[u64]>) -> Result<RecordBatch> {
        self.gather_with_bounds(cells, groups, None, None)
    }

    fn gather_with_bounds(
        &self,
        cells: &[u64],
        groups: Option<&[u64]>,
        bounds: Option<&[Bounds]>,
        region: Option<&mut Region>,
    ) -> Result<RecordBatch> {
        self.check_cells(cells)?;
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        let out = &mut Out {
            pool: &self.pool,
            region,
        };
        columns.push(Arc::new(u64_array(out, cells)));
        if self.options.group_column {
            let groups = one_per_cell(
                groups,
                cells.len(),
                "group ids",
                "the batch options ask for a group column but the batch has no groups",
            )?;
            columns.push(Arc::new(u64_array(out, groups)));
        }
        match (&self.tokenizer, &self.dense_lut) {
            (Some(t), _) => columns.extend(t.gather(&self.corpus, cells)?),
            (None, Some(lut)) => columns.push(self.gather_dense(out, cells, lut)?),
            (None, None) => {
                let (indices, values) = self.gather_csr(out, cells)?;
                columns.push(indices);
                columns.push(values);
            }
        }
        if !self.obs.is_empty() {
            let take_idx = UInt64Array::from(cells.to_vec());
            for col in &self.obs {
                columns.push(arrow::compute::take(col.as_ref(), &take_idx, None)?);
            }
        }
        if self.bound_axes > 0 {
            let bounds = one_per_cell(
                bounds,
                cells.len(),
                "group bounds",
                "bounds need groups with a box: the blocks sampler, or regions given as boxes",
            )?;
            // The coordinate columns come first among the obs ones.
            let first = columns.len() - self.obs.len();
            let coords: Vec<ArrayRef> = columns[first..first + self.bound_axes].to_vec();
            columns.extend(box_columns(bounds, &coords));
        }
        let opts = RecordBatchOptions::new().with_row_count(Some(cells.len()));
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &opts,
        )?)
    }

    /// The non-zeros of `cells` together: the length of their CSR `indices` and `values`.
    pub fn nnz(&self, cells: &[u64]) -> Result<usize> {
        self.check_cells(cells)?;
        Ok(spans(&self.corpus, cells)?
            .iter()
            .map(|(_, r)| r.len())
            .sum())
    }

    /// Writes the CSR rows of `cells` into memory the caller owns, for front ends that
    /// allocate their own buffers (the Python package writes into `bytes` objects): `indptr`
    /// gets `cells.len() + 1` native-endian `i32` offsets from 0, `indices` the gene ids as
    /// `i32`, `values` the values in the stored type ([`Corpus::manifest`]'s `value_type`).
    /// The slices must have exactly those byte lengths ([`Gatherer::nnz`] gives the count).
    pub fn gather_csr_into(
        &self,
        cells: &[u64],
        indptr: &mut [u8],
        indices: &mut [u8],
        values: &mut [u8],
    ) -> Result<()> {
        self.check_cells(cells)?;
        let spans = spans(&self.corpus, cells)?;
        let nnz: usize = spans.iter().map(|(_, r)| r.len()).sum();
        let m = self.corpus.manifest();
        let value_size = m.value_type.byte_width();
        if nnz > i32::MAX as usize
            || indptr.len() != 4 * (cells.len() + 1)
            || indices.len() != 4 * nnz
            || values.len() != value_size * nnz
        {
            return Err(Error::invalid_input(format!(
                "buffers of {}, {} and {} bytes for {} cells with {nnz} non-zeros",
                indptr.len(),
                indices.len(),
                values.len(),
                cells.len()
            )));
        }
        let mut at = 0usize;
        indptr[..4].copy_from_slice(&0i32.to_ne_bytes());
        for ((_, r), dst) in spans.iter().zip(indptr[4..].chunks_exact_mut(4)) {
            at += r.len();
            dst.copy_from_slice(&(at as i32).to_ne_bytes());
        }
        macro_rules! by_value {
            ($I:ty) => {
                match m.value_type {
                    ValueType::Uint16 => csr_into::<$I, u16>(&self.corpus, &spans, indices, values),
                    ValueType::Uint32 => csr_into::<$I, u32>(&self.corpus, &spans, indices, values),
                    ValueType::Float32 => {
                        csr_into::<$I, f32>(&self.corpus, &spans, indices, values)
                    }
                    ValueType::Float64 => {
                        csr_into::<$I, f64>(&self.corpus, &spans, indices, values)
                    }
                }
            };
        }
        match m.index_type {
            IndexType::Uint16 => by_value!(u16),
            IndexType::Uint32 => by_value!(u32),
        }
    }

    fn check_cells(&self, cells: &[u64]) -> Result<()> {
        let n_cells = self.corpus.n_cells();
        match cells.iter().find(|&&c| c >= n_cells) {
            Some(bad) => Err(Error::invalid_input(format!(
                "cell {bad} is out of range: the corpus has {n_cells} cells"
            ))
            .with_path(self.corpus.root())),
            None => Ok(()),
        }
    }

    /// Gathers the cells of a [`BatchRequest`].
    pub fn gather_request(&self, request: &BatchRequest) -> Result<RecordBatch> {
        self.gather_with_bounds(
            &request.cells,
            request.groups.as_deref(),
            request.bounds.as_deref(),
            None,
        )
    }

    /// Gathers the cells of a [`BatchRequest`] into `region`: the cell and group ids and the
    /// matrix buffers are written there, in that order, as long as they fit (the rest, and the
    /// obs columns, come from the gatherer's own memory). [`Region::used`] then tells how much
    /// of it the batch took.
    pub fn gather_request_in(
        &self,
        request: &BatchRequest,
        region: &mut Region,
    ) -> Result<RecordBatch> {
        self.gather_with_bounds(
            &request.cells,
            request.groups.as_deref(),
            request.bounds.as_deref(),
            Some(region),
        )
    }

    fn gather_csr(&self, out: &mut Out<'_>, cells: &[u64]) -> Result<(ArrayRef, ArrayRef)> {
        let m = self.corpus.manifest();
        let corpus = &self.corpus;
        // One dispatch on the type combination per batch; the per-cell loop is monomorphic.
        macro_rules! by_value {
            ($I:ty, $OI:ty, $pi:expr) => {
                match (m.value_type, self.options.values) {
                    (ValueType::Uint16, ValueOutput::Native) => {
                        csr::<$I, $OI, u16, u16>(corpus, out, cells, $pi, copy)
                    }
                    (ValueType::Uint16, ValueOutput::Float32) => {
                        csr::<$I, $OI, u16, f32>(corpus, out, cells, $pi, to_f32)
                    }
                    (ValueType::Uint16, ValueOutput::Float64) => {
                        csr::<$I, $OI, u16, f64>(corpus, out, cells, $pi, to_f64)
                    }
                    (ValueType::Uint32, ValueOutput::Native) => {
                        csr::<$I, $OI, u32, u32>(corpus, out, cells, $pi, copy)
                    }
                    (ValueType::Uint32, ValueOutput::Float32) => {
                        csr::<$I, $OI, u32, f32>(corpus, out, cells, $pi, to_f32)
                    }
                    (ValueType::Uint32, ValueOutput::Float64) => {
                        csr::<$I, $OI, u32, f64>(corpus, out, cells, $pi, to_f64)
                    }
                    (ValueType::Float32, ValueOutput::Native | ValueOutput::Float32) => {
                        csr::<$I, $OI, f32, f32>(corpus, out, cells, $pi, copy)
                    }
                    (ValueType::Float32, ValueOutput::Float64) => {
                        csr::<$I, $OI, f32, f64>(corpus, out, cells, $pi, to_f64)
                    }
                    (ValueType::Float64, ValueOutput::Native | ValueOutput::Float64) => {
                        csr::<$I, $OI, f64, f64>(corpus, out, cells, $pi, copy)
                    }
                    (ValueType::Float64, ValueOutput::Float32) => {
                        csr::<$I, $OI, f64, f32>(corpus, out, cells, $pi, to_f32)
                    }
                }
            };
        }
        match (m.index_type, self.options.indices) {
            (IndexType::Uint16, IndexOutput::Native) => by_value!(u16, u16, copy),
            (IndexType::Uint16, IndexOutput::Int32) => by_value!(u16, i32, to_i32),
            (IndexType::Uint32, IndexOutput::Native) => by_value!(u32, u32, copy),
            (IndexType::Uint32, IndexOutput::Int32) => by_value!(u32, i32, to_i32),
        }
    }

    fn gather_dense(&self, out: &mut Out<'_>, cells: &[u64], lut: &[u32]) -> Result<ArrayRef> {
        let m = self.corpus.manifest();
        let w = self.dense_width;
        let f64_out = matches!(
            output_value_type(m.value_type, self.options.values, true),
            DataType::Float64
        );
        macro_rules! by_value {
            ($I:ty) => {
                match (m.value_type, f64_out) {
                    (ValueType::Uint16, false) => {
                        dense::<$I, u16, f32>(&self.corpus, out, cells, lut, w)
                    }
                    (ValueType::Uint16, true) => {
                        dense::<$I, u16, f64>(&self.corpus, out, cells, lut, w)
                    }
                    (ValueType::Uint32, false) => {
                        dense::<$I, u32, f32>(&self.corpus, out, cells, lut, w)
                    }
                    (ValueType::Uint32, true) => {
                        dense::<$I, u32, f64>(&self.corpus, out, cells, lut, w)
                    }
                    (ValueType::Float32, false) => {
                        dense::<$I, f32, f32>(&self.corpus, out, cells, lut, w)
                    }
                    (ValueType::Float32, true) => {
                        dense::<$I, f32, f64>(&self.corpus, out, cells, lut, w)
                    }
                    (ValueType::Float64, false) => {
                        dense::<$I, f64, f32>(&self.corpus, out, cells, lut, w)
                    }
                    (ValueType::Float64, true) => {
                        dense::<$I, f64, f64>(&self.corpus, out, cells, lut, w)
                    }
                }
            };
        }
        match m.index_type {
            IndexType::Uint16 => by_value!(u16),
            IndexType::Uint32 => by_value!(u32),
        }
    }
}

/// `given`, which must hold one entry per cell of a batch of `n`; `missing` is the error
/// when the batch has none.
fn one_per_cell<'a, T>(
    given: Option<&'a [T]>,
    n: usize,
    what: &str,
    missing: &str,
) -> Result<&'a [T]> {
    match given {
        Some(g) if g.len() == n => Ok(g),
        Some(g) => Err(Error::invalid_input(format!(
            "{} {what} for {n} cells",
            g.len()
        ))),
        None => Err(Error::invalid_input(missing)),
    }
}

/// The `min_*`, `max_*` columns of the boxes on the axes of `coords` and the `*_norm`
/// coordinates ([`Bounds::normalize`]: null where the coordinate is null, NaN where it is NaN,
/// 0 where the box is flat on that axis).
fn box_columns(bounds: &[Bounds], coords: &[ArrayRef]) -> Vec<ArrayRef> {
    use arrow::array::Float64Array;
    let axes = coords.len();
    let mut out: Vec<ArrayRef> = Vec::with_capacity(3 * axes);
    let corners: [fn(&Bounds) -> [f64; 3]; 2] = [|b| b.min, |b| b.max];
    for corner in corners {
        for a in 0..axes {
            let v: Float64Array = bounds
                .iter()
                .map(|b| corner(b)[a])
                .collect::<Vec<_>>()
                .into();
            out.push(Arc::new(v));
        }
    }
    for (a, coord) in coords.iter().enumerate() {
        let coord = coord.as_primitive::<Float64Type>();
        let v: Float64Array = coord
            .iter()
            .zip(bounds)
            .map(|(x, b)| x.map(|x| b.normalize(a, x)))
            .collect();
        out.push(Arc::new(v));
    }
    out
}

/// Resolves a dense gene selection to gene ids, checking them against the vocabulary.
fn resolve_genes(corpus: &Corpus, sel: &DenseGenes) -> Result<Vec<u32>> {
    let n_genes = corpus.n_genes();
    match sel {
        DenseGenes::All => Ok((0..n_genes as u32).collect()),
        DenseGenes::Ids(ids) => {
            if let Some(&bad) = ids.iter().find(|&&g| g as u64 >= n_genes) {
                return Err(Error::invalid_input(format!(
                    "gene id {bad} is out of range: the vocabulary has {n_genes} genes"
                )));
            }
            Ok(ids.clone())
        }
        DenseGenes::Names(names) => {
            let vocab = corpus.gene_names()?;
            let by_name: HashMap<&str, u32> = vocab
                .iter()
                .enumerate()
                .map(|(i, n)| (n.as_str(), i as u32))
                .collect();
            names
                .iter()
                .map(|n| {
                    by_name.get(n.as_str()).copied().ok_or_else(|| {
                        Error::invalid_input(format!("gene {n:?} is not in the vocabulary"))
                            .with_path(corpus.table_path("genes"))
                    })
                })
                .collect()
        }
    }
}

fn parquet_schema(path: &std::path::Path) -> Result<SchemaRef> {
    let file = File::open(path).map_err(|e| Error::io(path, "opening", e))?;
    let builder =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).at(path)?;
    Ok(builder.schema().clone())
}

fn item_field(dt: DataType) -> Arc<Field> {
    Arc::new(Field::new("item", dt, false))
}

/// The Arrow type of the output values.
fn output_value_type(stored: ValueType, out: ValueOutput, dense: bool) -> DataType {
    match (out, stored, dense) {
        (ValueOutput::Float32, _, _) => DataType::Float32,
        (ValueOutput::Float64, _, _) => DataType::Float64,
        (ValueOutput::Native, ValueType::Float64, _) => DataType::Float64,
        (ValueOutput::Native, _, true) => DataType::Float32,
        (ValueOutput::Native, ValueType::Uint16, false) => DataType::UInt16,
        (ValueOutput::Native, ValueType::Uint32, false) => DataType::UInt32,
        (ValueOutput::Native, ValueType::Float32, false) => DataType::Float32,
    }
}

/// A native number type with its Arrow type, and a view of a cell's slice of that type.
trait Elem: arrow::datatypes::ArrowNativeType {
    type Arrow: ArrowPrimitiveType<Native = Self>;
}
impl Elem for u16 {
    type Arrow = UInt16Type;
}
impl Elem for u32 {
    type Arrow = UInt32Type;
}
impl Elem for i32 {
    type Arrow = Int32Type;
}
impl Elem for f32 {
    type Arrow = Float32Type;
}
impl Elem for f64 {
    type Arrow = Float64Type;
}

trait IndexElem: Elem {
    fn slice(i: Indices<'_>) -> Option<&[Self]>;
    fn usize(self) -> usize;
}
impl IndexElem for u16 {
    #[inline]
    fn slice(i: Indices<'_>) -> Option<&[u16]> {
        match i {
            Indices::U16(s) => Some(s),
            Indices::U32(_) => None,
        }
    }
    #[inline]
    fn usize(self) -> usize {
        self as usize
    }
}
impl IndexElem for u32 {
    #[inline]
    fn slice(i: Indices<'_>) -> Option<&[u32]> {
        match i {
            Indices::U32(s) => Some(s),
            Indices::U16(_) => None,
        }
    }
    #[inline]
    fn usize(self) -> usize {
        self as usize
    }
}

trait ValueElem: Elem {
    fn slice(v: Values<'_>) -> Option<&[Self]>;
    fn f32(self) -> f32;
    fn f64(self) -> f64;
}
macro_rules! value_elem {
    ($t:ty, $var:ident) => {
        impl ValueElem for $t {
            #[inline]
            fn slice(v: Values<'_>) -> Option<&[$t]> {
                match v {
                    Values::$var(s) => Some(s),
                    _ => None,
                }
            }
            #[inline]
            fn f32(self) -> f32 {
                self as f32
            }
            #[inline]
            fn f64(self) -> f64 {
                self as f64
            }
        }
    };
}
value_elem!(u16, U16);
value_elem!(u32, U32);
value_elem!(f32, F32);
value_elem!(f64, F64);

/// Output value of the dense matrix.
trait DenseOut: Elem + Default {
    fn from<V: ValueElem>(v: V) -> Self;
}
impl DenseOut for f32 {
    #[inline]
    fn from<V: ValueElem>(v: V) -> f32 {
        v.f32()
    }
}
impl DenseOut for f64 {
    #[inline]
    fn from<V: ValueElem>(v: V) -> f64 {
        v.f64()
    }
}

/// Where the buffers of one batch come from: its region while they fit, else the pool.
struct Out<'a> {
    pool: &'a Arc<BufferPool>,
    region: Option<&'a mut Region>,
}

impl Out<'_> {
    fn take<T: Pooled>(&mut self, n: usize) -> OutBuf<T> {
        self.pool.take_in(self.region.as_deref_mut(), n)
    }
}

/// The ids as a UInt64 column.
fn u64_array(out: &mut Out<'_>, ids: &[u64]) -> UInt64Array {
    let mut v = out.take::<u64>(ids.len());
    v.extend_from_slice(ids);
    UInt64Array::new(out.pool.buffer(v), None)
}

#[inline]
fn copy<V: Pooled>(out: &mut OutBuf<V>, s: &[V]) {
    out.extend_from_slice(s);
}
#[inline]
fn to_i32<I: IndexElem>(out: &mut OutBuf<i32>, s: &[I]) {
    // Gene ids are below the vocabulary size, which the gatherer checked fits i32.
    out.extend_map(s, |g| g.usize() as i32);
}
#[inline]
fn to_f32<V: ValueElem>(out: &mut OutBuf<f32>, s: &[V]) {
    out.extend_map(s, |v| v.f32());
}
#[inline]
fn to_f64<V: ValueElem>(out: &mut OutBuf<f64>, s: &[V]) {
    out.extend_map(s, |v| v.f64());
}

fn type_mismatch(corpus: &Corpus, cell: u64, what: &str) -> Error {
    Error::corpus(
        corpus.root(),
        format!("cell {cell}: the {what} type of its matrix part differs from the manifest"),
    )
}

/// Where each cell's run lies: (decoded batch of the corpus, positions in its child arrays).
/// One lookup per cell, reused by both passes. Each batch's offsets are checked on its
/// first use (see [`crate::corpus::MatrixBatch::check`]).
fn spans(corpus: &Corpus, cells: &[u64]) -> Result<Vec<(usize, Range<usize>)>> {
    let batches = corpus.batches();
    cells
        .iter()
        .map(|&c| {
            let loc = corpus.locate(c);
            let b = &batches[loc.batch];
            b.check()?;
            Ok((loc.batch, b.row_range(loc.row)))
        })
        .collect()
}

/// Cells ahead whose first cache lines are requested while the current cell is copied: a
/// random gather waits on memory at the start of every run, and this overlaps those waits.
/// On the 50,000 x 20,000 corpus (`cellarrow bench --threads 0`, 4 interleaved runs each) 2
/// cells ahead and 16 lines (1 KiB of each array) gave a median of 1.35 M cells/s against
/// 1.30 M for 6 cells, with less spread; 0 cells gave 1.25 M. The hardware prefetcher follows
/// a run once it has started.
const PREFETCH_CELLS: usize = 2;
const PREFETCH_LINES: usize = 16;

/// Asks for the first [`PREFETCH_LINES`] cache lines of `s` (x86-64; elsewhere nothing).
#[inline(always)]
fn prefetch<T>(s: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let bytes = std::mem::size_of_val(s);
        let p = s.as_ptr() as *const i8;
        let lines = bytes.div_ceil(64).min(PREFETCH_LINES);
        for l in 0..lines {
            // SAFETY: prefetching is a hint that never faults; the address lies in `s`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.add(l * 64)) };
        }
    }
}

/// CSR gather: exact sizing from the row lengths, then one copy (or conversion) per cell.
fn csr<I: IndexElem, OI: Elem + Pooled, V: ValueElem, O: Elem + Pooled>(
    corpus: &Corpus,
    out: &mut Out<'_>,
    cells: &[u64],
    put_index: fn(&mut OutBuf<OI>, &[I]),
    put: fn(&mut OutBuf<O>, &[V]),
) -> Result<(ArrayRef, ArrayRef)> {
    let spans = spans(corpus, cells)?;
    let mut offsets: OutBuf<i32> = out.take(cells.len() + 1);
    offsets.push(0);
    let mut total: usize = 0;
    for (_, r) in &spans {
        total += r.len();
        if total > i32::MAX as usize {
            return Err(Error::new(ErrorKind::InvalidInput, format!(
                "a batch of {} cells holds over {} non-zeros, more than a list column can hold; use smaller batches",
                cells.len(),
                i32::MAX
            )));
        }
        offsets.push(total as i32);
    }
    let batches = corpus.batches();
    let mut idx: OutBuf<OI> = out.take(total);
    let mut val: OutBuf<O> = out.take(total);
    for (k, &c) in cells.iter().enumerate() {
        if let Some((b, r)) = spans.get(k + PREFETCH_CELLS) {
            let b = &batches[*b];
            if let (Some(i), Some(v)) = (I::slice(b.indices()), V::slice(b.values())) {
                prefetch(&i[r.clone()]);
                prefetch(&v[r.clone()]);
            }
        }
        let (b, r) = &spans[k];
        let b = &batches[*b];
        let i = I::slice(b.indices()).ok_or_else(|| type_mismatch(corpus, c, "index"))?;
        let v = V::slice(b.values()).ok_or_else(|| type_mismatch(corpus, c, "value"))?;
        put_index(&mut idx, &i[r.clone()]);
        put(&mut val, &v[r.clone()]);
    }
    let offsets = OffsetBuffer::new(out.pool.buffer(offsets));
    let idx = PrimitiveArray::<OI::Arrow>::new(out.pool.buffer(idx), None);
    let val = PrimitiveArray::<O::Arrow>::new(out.pool.buffer(val), None);
    let idx_field = item_field(idx.data_type().clone());
    let val_field = item_field(val.data_type().clone());
    let indices = ListArray::try_new(idx_field, offsets.clone(), Arc::new(idx), None)?;
    let values = ListArray::try_new(val_field, offsets, Arc::new(val), None)?;
    Ok((Arc::new(indices), Arc::new(values)))
}

/// [`Gatherer::gather_csr_into`]'s copy: `i32` gene ids and stored values, as bytes, cell by
/// cell in `spans` order (the slices are sized exactly).
fn csr_into<I: IndexElem, V: ValueElem>(
    corpus: &Corpus,
    spans: &[(usize, Range<usize>)],
    indices: &mut [u8],
    values: &mut [u8],
) -> Result<()> {
    use arrow::datatypes::ToByteSlice;
    let batches = corpus.batches();
    let size = std::mem::size_of::<V>();
    let mut at = 0usize;
    for (b, r) in spans {
        let b = &batches[*b];
        let mismatch = || {
            Error::corpus(
                corpus.root(),
                "the index or value type of a matrix part differs from the manifest",
            )
        };
        let i = I::slice(b.indices()).ok_or_else(mismatch)?;
        let v = V::slice(b.values()).ok_or_else(mismatch)?;
        let n = r.len();
        for (dst, &g) in indices[4 * at..4 * (at + n)]
            .chunks_exact_mut(4)
            .zip(&i[r.clone()])
        {
            dst.copy_from_slice(&(g.usize() as i32).to_ne_bytes());
        }
        values[size * at..size * (at + n)].copy_from_slice(v[r.clone()].to_byte_slice());
        at += n;
    }
    Ok(())
}

/// Dense gather over the selected genes: a zeroed row per cell, scattered through the lookup table.
fn dense<I: IndexElem, V: ValueElem, O: DenseOut + Pooled>(
    corpus: &Corpus,
    alloc: &mut Out<'_>,
    cells: &[u64],
    lut: &[u32],
    width: usize,
) -> Result<ArrayRef> {
    let batches = corpus.batches();
    let mut buf: OutBuf<O> = alloc.take(cells.len() * width);
    buf.fill(cells.len() * width, O::default());
    let out = buf.as_mut_slice();
    for (row, &c) in cells.iter().enumerate() {
        let loc = corpus.locate(c);
        let b = &batches[loc.batch];
        b.check()?;
        let r = b.row_range(loc.row);
        let i = I::slice(b.indices()).ok_or_else(|| type_mismatch(corpus, c, "index"))?;
        let v = V::slice(b.values()).ok_or_else(|| type_mismatch(corpus, c, "value"))?;
        let dst = &mut out[row * width..(row + 1) * width];
        for (&g, &x) in i[r.clone()].iter().zip(&v[r]) {
            let col = lut.get(g.usize()).copied().unwrap_or(NOT_SELECTED);
            if col != NOT_SELECTED {
                dst[col as usize] = O::from(x);
            }
        }
    }
    let child = PrimitiveArray::<O::Arrow>::new(alloc.pool.buffer(buf), None);
    let field = item_field(child.data_type().clone());
    Ok(Arc::new(FixedSizeListArray::try_new(
        field,
        width as i32,
        Arc::new(child),
        None,
    )?))
}
