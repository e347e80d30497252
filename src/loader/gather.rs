//! One batch from a list of cell ids: each cell's bytes are copied once, from the mapping into
//! buffers sized exactly beforehand.

use std::ops::Range;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeListArray, ListArray, PrimitiveArray, UInt32Array,
    UInt64Array,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Field, Float32Type, Float64Type, Int32Type, Schema, SchemaRef,
    UInt16Type, UInt32Type,
};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};

use super::hierarchy::MultiHot;
use super::pool::{BufferPool, OutBuf, Pooled, Region};
use super::tokens::Tokenizer;
use super::{BatchOptions, BatchRequest, DenseGenes, IndexOutput, ValueOutput};
use crate::corpus::{BatchRef, Corpus, IndexType, Indices, ValueType, Values};
use crate::error::{Context, Error, ErrorKind, Result};
use crate::genes::model::NOT_IN_VOCAB;
use crate::genes::{GeneVocab, VocabMap};
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
    /// Corpus gene id -> model vocabulary position, with [`BatchOptions::genes`].
    vocab: Option<VocabMap>,
    pool: Arc<BufferPool>,
    /// Token output instead of CSR rows.
    tokenizer: Option<Tokenizer>,
    /// The multi-hot ancestor column, last.
    multi_hot: Option<MultiHot>,
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
    vocab_width: Option<usize>,
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
    let n_genes = vocab_width.map_or(corpus.n_genes(), |w| w as u64);
    let stored = match vocab_width {
        // The model's gene space: the narrowest type holding its positions.
        Some(w) => IndexType::for_genes(w as u64),
        None => manifest.index_type,
    };
    let index_dt = match (options.indices, stored) {
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

/// The tokenizer of token output (see [`super::tokens`]), which replaces the CSR columns; with
/// a model vocabulary its token ids are positions in it.
fn token_output(
    corpus: &Corpus,
    options: &BatchOptions,
    vocab: Option<&VocabMap>,
) -> Result<Option<Tokenizer>> {
    let Some(t) = &options.tokens else {
        return Ok(None);
    };
    if options.dense.is_some() {
        return Err(Error::invalid_input(
            "tokens and dense are two kinds of output; ask for one",
        ));
    }
    Tokenizer::new(corpus, t, vocab.map(|v| (v.lut.as_slice(), v.size))).map(Some)
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
    let obs_path = corpus
        .table_files("obs")
        .pop()
        .unwrap_or_else(|| corpus.table_path("obs"));
    let obs_schema = corpus.table_schema("obs")?;
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
        let vocab = match &options.genes {
            None => None,
            Some(_) if options.dense.is_some() => {
                return Err(Error::invalid_input(
                    "genes (a model vocabulary) sets the gene space of CSR batches; it does not combine with dense",
                ))
            }
            Some(v) => Some(vocab_map(&corpus, v)?),
        };
        let mut fields = vec![Field::new("cell", DataType::UInt64, false)];
        if options.group_column {
            fields.push(Field::new("group", DataType::UInt64, false));
        }
        let tokenizer = token_output(&corpus, &options, vocab.as_ref())?;
        match &tokenizer {
            Some(t) => fields.extend(t.fields()),
            None => fields.extend(matrix_fields(
                &corpus,
                &options,
                dense_width,
                vocab.as_ref().map(|v| v.size),
            )?),
        }
        let (obs, axes) = load_obs(&corpus, &options, &mut fields)?;
        let bound_axes = if options.bounds { axes } else { 0 };
        fields.extend(bound_fields(bound_axes));
        let multi_hot = options
            .multi_hot
            .as_ref()
            .map(|m| MultiHot::new(&corpus, m))
            .transpose()?;
        fields.extend(multi_hot.as_ref().map(MultiHot::field));

        Ok(Gatherer {
            corpus,
            options,
            schema: Arc::new(Schema::new(fields)),
            dense_lut,
            dense_genes,
            dense_width,
            obs,
            bound_axes,
            vocab,
            pool: Arc::default(),
            tokenizer,
            multi_hot,
        })
    }

    /// The multi-hot ancestor column, with [`BatchOptions::multi_hot`]: its terms in column
    /// order.
    pub fn multi_hot(&self) -> Option<&MultiHot> {
        self.multi_hot.as_ref()
    }

    /// The model vocabulary's map, with [`BatchOptions::genes`]: how many of its genes the
    /// corpus has ([`VocabMap::report`]) and which are missing.
    pub fn vocab(&self) -> Option<&VocabMap> {
        self.vocab.as_ref()
    }

    /// The width of a batch's gene space: the vocabulary size with
    /// [`BatchOptions::genes`], else the corpus's gene count.
    pub fn n_genes(&self) -> u64 {
        self.vocab
            .as_ref()
            .map_or(self.corpus.n_genes(), |v| v.size as u64)
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
        self.ready(cells)?;
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
                let (mut indices, mut values) = self.gather_csr(out, cells)?;
                if let Some(v) = &self.vocab {
                    let index_dt = self.schema.field_with_name("indices")?.data_type().clone();
                    let DataType::List(item) = index_dt else {
                        unreachable!("indices is a list column")
                    };
                    (indices, values) = remap_genes(&indices, &values, &v.lut, item.data_type())?;
                }
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
        if let Some(m) = &self.multi_hot {
            columns.push(m.gather(cells)?);
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
        self.ready(cells)?;
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
        self.ready(cells)?;
        if self.vocab.is_some() {
            return Err(Error::invalid_input(
                "gather_csr_into writes corpus gene ids; gather batches to get a model's gene space",
            ));
        }
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
        // Values in the manifest's type, to which every part's type widens.
        match m.value_type {
            ValueType::Uint16 => csr_into::<u16>(&self.corpus, &spans, indices, values),
            ValueType::Uint32 => csr_into::<u32>(&self.corpus, &spans, indices, values),
            ValueType::Float32 => csr_into::<f32>(&self.corpus, &spans, indices, values),
            ValueType::Float64 => csr_into::<f64>(&self.corpus, &spans, indices, values),
        }
    }

    /// Checks `cells` and has the corpus fetch what they need from object storage first (all
    /// of a batch's chunks at once; see [`Corpus::prefetch`]).
    fn ready(&self, cells: &[u64]) -> Result<()> {
        self.check_cells(cells)?;
        self.corpus.prefetch(cells)
    }

    /// Starts fetching from object storage what `cells` will need, without waiting
    /// ([`Corpus::read_ahead`]).
    pub fn read_ahead(&self, cells: &[u64]) {
        self.corpus.read_ahead(cells)
    }

    /// Whether [`Gatherer::read_ahead`] does anything (a corpus read lazily from a URL).
    pub fn reads_ahead(&self) -> bool {
        self.corpus.reads_ahead()
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
        // One dispatch on the output types per batch; each cell's run is copied as is when its
        // part has the output types, else widened (parts of a grown corpus differ in types).
        let value_dt = output_value_type(m.value_type, self.options.values, false);
        macro_rules! by_value {
            ($OI:ty) => {
                match value_dt {
                    DataType::UInt16 => csr::<$OI, u16>(corpus, out, cells),
                    DataType::UInt32 => csr::<$OI, u32>(corpus, out, cells),
                    DataType::Float32 => csr::<$OI, f32>(corpus, out, cells),
                    _ => csr::<$OI, f64>(corpus, out, cells),
                }
            };
        }
        match (self.options.indices, m.index_type) {
            (IndexOutput::Int32, _) => by_value!(i32),
            (IndexOutput::Native, IndexType::Uint16) => by_value!(u16),
            (IndexOutput::Native, IndexType::Uint32) => by_value!(u32),
        }
    }

    fn gather_dense(&self, out: &mut Out<'_>, cells: &[u64], lut: &[u32]) -> Result<ArrayRef> {
        let m = self.corpus.manifest();
        let w = self.dense_width;
        match output_value_type(m.value_type, self.options.values, true) {
            DataType::Float64 => dense::<f64>(&self.corpus, out, cells, lut, w),
            _ => dense::<f32>(&self.corpus, out, cells, lut, w),
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

/// The map from corpus genes to a model vocabulary's positions (the vocabulary read and
/// checked for duplicates, its entries looked up by name, id or symbol in `genes.parquet`).
fn vocab_map(corpus: &Corpus, vocab: &GeneVocab) -> Result<VocabMap> {
    let names = vocab.names()?;
    let index = crate::genes::table::read_index(&corpus.table_files("genes"), Default::default())?;
    Ok(VocabMap::new(&index, &names))
}

/// CSR rows in a model's gene space: each cell's gene ids replaced by their positions in
/// `lut` (corpus gene id -> position, [`NOT_IN_VOCAB`] for genes left out), its entries
/// re-sorted by position, the values moved along. `index_dt` is the output id type.
fn remap_genes(
    indices: &ArrayRef,
    values: &ArrayRef,
    lut: &[u32],
    index_dt: &DataType,
) -> Result<(ArrayRef, ArrayRef)> {
    let (idx_list, val_list) = (indices.as_list::<i32>(), values.as_list::<i32>());
    let genes = arrow::compute::cast(idx_list.values(), &DataType::UInt32)?;
    let genes = genes.as_primitive::<UInt32Type>().values();
    let offsets = idx_list.offsets();
    let mut new_offsets: Vec<i32> = Vec::with_capacity(offsets.len());
    let mut new_genes: Vec<u32> = Vec::with_capacity(genes.len());
    let mut take: Vec<u32> = Vec::with_capacity(genes.len());
    let mut cell: Vec<(u32, u32)> = Vec::new();
    new_offsets.push(0);
    for w in offsets.windows(2) {
        cell.clear();
        for k in w[0] as usize..w[1] as usize {
            let pos = lut.get(genes[k] as usize).copied().unwrap_or(NOT_IN_VOCAB);
            if pos != NOT_IN_VOCAB {
                cell.push((pos, k as u32));
            }
        }
        cell.sort_unstable_by_key(|&(pos, _)| pos);
        new_genes.extend(cell.iter().map(|&(pos, _)| pos));
        take.extend(cell.iter().map(|&(_, k)| k));
        new_offsets.push(new_genes.len() as i32);
    }
    let new_values = arrow::compute::take(val_list.values(), &UInt32Array::from(take), None)?;
    let new_genes = arrow::compute::cast(&UInt32Array::from(new_genes), index_dt)?;
    let offsets = OffsetBuffer::new(new_offsets.into());
    let idx = ListArray::try_new(
        item_field(index_dt.clone()),
        offsets.clone(),
        new_genes,
        None,
    )?;
    let val = ListArray::try_new(
        item_field(new_values.data_type().clone()),
        offsets,
        new_values,
        None,
    )?;
    Ok((Arc::new(idx), Arc::new(val)))
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
            // A gene is named by its name, its id or its (unique) symbol.
            let index =
                crate::genes::table::read_index(&corpus.table_files("genes"), Default::default())?;
            names
                .iter()
                .map(|n| {
                    index.lookup(n).ok_or_else(|| {
                        Error::invalid_input(format!("gene {n:?} is not in the vocabulary"))
                            .with_path(corpus.table_path("genes"))
                    })
                })
                .collect()
        }
    }
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

/// A gene id type of the output.
trait IndexOut: Elem + Pooled {
    /// The run itself when the part stores ids of this type.
    fn same(i: Indices<'_>) -> Option<&[Self]>;
    /// Whether a part's ids convert to this type without loss.
    fn accepts(i: Indices<'_>) -> bool;
    fn from_u32(g: u32) -> Self;
}
impl IndexOut for u16 {
    #[inline]
    fn same(i: Indices<'_>) -> Option<&[u16]> {
        match i {
            Indices::U16(s) => Some(s),
            Indices::U32(_) => None,
        }
    }
    fn accepts(i: Indices<'_>) -> bool {
        matches!(i, Indices::U16(_))
    }
    #[inline]
    fn from_u32(g: u32) -> u16 {
        g as u16
    }
}
impl IndexOut for u32 {
    #[inline]
    fn same(i: Indices<'_>) -> Option<&[u32]> {
        match i {
            Indices::U32(s) => Some(s),
            Indices::U16(_) => None,
        }
    }
    fn accepts(_: Indices<'_>) -> bool {
        true
    }
    #[inline]
    fn from_u32(g: u32) -> u32 {
        g
    }
}
impl IndexOut for i32 {
    #[inline]
    fn same(_: Indices<'_>) -> Option<&[i32]> {
        None
    }
    fn accepts(_: Indices<'_>) -> bool {
        // The gatherer checked that the vocabulary fits i32.
        true
    }
    #[inline]
    fn from_u32(g: u32) -> i32 {
        g as i32
    }
}

/// Appends a run of gene ids in the output type; false when a part's type does not fit it.
#[inline]
fn put_indices<O: IndexOut>(out: &mut OutBuf<O>, i: Indices<'_>) -> bool {
    if let Some(s) = O::same(i) {
        out.extend_from_slice(s);
        return true;
    }
    if !O::accepts(i) {
        return false;
    }
    match i {
        Indices::U16(s) => out.extend_map(s, |g| O::from_u32(g as u32)),
        Indices::U32(s) => out.extend_map(s, O::from_u32),
    }
    true
}

/// A value type of the output.
trait ValueOut: Elem + Pooled {
    /// The run itself when the part stores values of this type.
    fn same(v: Values<'_>) -> Option<&[Self]>;
    /// Whether a part's values convert to this type: integer outputs take only narrower
    /// integers (never a silent narrowing); float outputs take every type (exact for the
    /// manifest's type, a rounding the caller asked for when it asked for Float32).
    fn accepts(v: Values<'_>) -> bool;
    /// From a value widened to f64 (exact for every stored type).
    fn from_f64(x: f64) -> Self;
}
macro_rules! value_out {
    ($t:ty, $var:ident, $accepts:pat) => {
        impl ValueOut for $t {
            #[inline]
            fn same(v: Values<'_>) -> Option<&[$t]> {
                match v {
                    Values::$var(s) => Some(s),
                    _ => None,
                }
            }
            fn accepts(v: Values<'_>) -> bool {
                matches!(v, $accepts)
            }
            #[inline]
            fn from_f64(x: f64) -> $t {
                x as $t
            }
        }
    };
}
value_out!(u16, U16, Values::U16(_));
value_out!(u32, U32, Values::U16(_) | Values::U32(_));
value_out!(f32, F32, _);
value_out!(f64, F64, _);

/// Appends a run of values in the output type; false when a part's type does not fit it.
#[inline]
fn put_values<O: ValueOut>(out: &mut OutBuf<O>, v: Values<'_>) -> bool {
    if let Some(s) = O::same(v) {
        out.extend_from_slice(s);
        return true;
    }
    if !O::accepts(v) {
        return false;
    }
    match v {
        Values::U16(s) => out.extend_map(s, |x| O::from_f64(x as f64)),
        Values::U32(s) => out.extend_map(s, |x| O::from_f64(x as f64)),
        Values::F32(s) => out.extend_map(s, |x| O::from_f64(x as f64)),
        Values::F64(s) => out.extend_map(s, O::from_f64),
    }
    true
}

/// A gene id of a stored type, as an index.
trait IndexElem: Copy {
    fn usize(self) -> usize;
}
impl IndexElem for u16 {
    #[inline]
    fn usize(self) -> usize {
        self as usize
    }
}
impl IndexElem for u32 {
    #[inline]
    fn usize(self) -> usize {
        self as usize
    }
}

/// A value of a stored type.
pub(super) trait ValueElem: Copy {
    /// Whole numbers (exact in `u64`).
    const WHOLE: bool;
    fn f32(self) -> f32;
    fn f64(self) -> f64;
    /// The value as a whole number (meaningful only if [`ValueElem::WHOLE`]).
    fn u64(self) -> u64;
}
macro_rules! value_elem {
    ($t:ty, $whole:expr) => {
        impl ValueElem for $t {
            const WHOLE: bool = $whole;
            #[inline]
            fn f32(self) -> f32 {
                self as f32
            }
            #[inline]
            fn f64(self) -> f64 {
                self as f64
            }
            #[inline]
            fn u64(self) -> u64 {
                self as u64
            }
        }
    };
}
value_elem!(u16, true);
value_elem!(u32, true);
value_elem!(f32, false);
value_elem!(f64, false);

/// Writes one cell's values into its dense row, at the columns of the selected genes.
#[inline]
fn scatter<I: IndexElem, V: ValueElem, O: DenseOut>(dst: &mut [O], i: &[I], v: &[V], lut: &[u32]) {
    for (&g, &x) in i.iter().zip(v) {
        let col = lut.get(g.usize()).copied().unwrap_or(NOT_SELECTED);
        if col != NOT_SELECTED {
            dst[col as usize] = O::from(x);
        }
    }
}

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

fn type_mismatch(corpus: &Corpus, cell: u64, what: &str, to: &str) -> Error {
    Error::invalid_input(format!(
        "cell {cell}: the {what} type of its matrix part does not fit the output type {to}; \
         ask for a wider output type"
    ))
    .with_path(corpus.root())
}

/// Asks for the first cache lines of a cell's run, whatever the part's types.
#[inline(always)]
fn prefetch_run(b: &crate::corpus::MatrixBatch, r: Range<usize>) {
    match b.indices() {
        Indices::U16(s) => prefetch(&s[r.clone()]),
        Indices::U32(s) => prefetch(&s[r.clone()]),
    }
    match b.values() {
        Values::U16(s) => prefetch(&s[r]),
        Values::U32(s) => prefetch(&s[r]),
        Values::F32(s) => prefetch(&s[r]),
        Values::F64(s) => prefetch(&s[r]),
    }
}

/// A cell's run: its batch and the positions in the batch's child arrays.
type Span<'a> = (BatchRef<'a>, Range<usize>);

/// Where each cell's run lies. One lookup per cell, reused by both passes. Each batch's
/// offsets are checked on its first use (see [`crate::corpus::MatrixBatch::check`]); a cold
/// chunk is decoded (or found in the cache) once per run of cells that share it.
fn spans<'a>(corpus: &'a Corpus, cells: &[u64]) -> Result<Vec<Span<'a>>> {
    let mut last: Option<(usize, BatchRef<'a>)> = None;
    cells
        .iter()
        .map(|&c| {
            let loc = corpus.locate(c);
            let b = match &last {
                Some((i, b)) if *i == loc.batch => b.clone(),
                _ => {
                    let b = corpus.batch(loc.batch)?;
                    last = Some((loc.batch, b.clone()));
                    b
                }
            };
            let r = b.row_range(loc.row);
            Ok((b, r))
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

/// CSR gather: exact sizing from the row lengths, then one copy (or widening) per cell.
fn csr<OI: IndexOut, O: ValueOut>(
    corpus: &Corpus,
    out: &mut Out<'_>,
    cells: &[u64],
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
    let mut idx: OutBuf<OI> = out.take(total);
    let mut val: OutBuf<O> = out.take(total);
    for (k, &c) in cells.iter().enumerate() {
        if let Some((b, r)) = spans.get(k + PREFETCH_CELLS) {
            prefetch_run(b, r.clone());
        }
        let (b, r) = &spans[k];
        if !put_indices(&mut idx, b.indices().slice(r.clone())) {
            return Err(type_mismatch(
                corpus,
                c,
                "index",
                &OI::Arrow::DATA_TYPE.to_string(),
            ));
        }
        if !put_values(&mut val, b.values().slice(r.clone())) {
            return Err(type_mismatch(
                corpus,
                c,
                "value",
                &O::Arrow::DATA_TYPE.to_string(),
            ));
        }
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

/// [`Gatherer::gather_csr_into`]'s copy: `i32` gene ids and values of type `O` (the manifest's
/// value type, to which every part's widens), as bytes, cell by cell in `spans` order (the
/// slices are sized exactly).
fn csr_into<O: ValueOut>(
    corpus: &Corpus,
    spans: &[Span<'_>],
    indices: &mut [u8],
    values: &mut [u8],
) -> Result<()> {
    use arrow::datatypes::ToByteSlice;
    let size = std::mem::size_of::<O>();
    let mut at = 0usize;
    for (b, r) in spans {
        let n = r.len();
        let ids = b.indices().slice(r.clone());
        for (k, dst) in indices[4 * at..4 * (at + n)]
            .chunks_exact_mut(4)
            .enumerate()
        {
            dst.copy_from_slice(&(ids.get(k) as i32).to_ne_bytes());
        }
        let v = b.values().slice(r.clone());
        let dst = &mut values[size * at..size * (at + n)];
        if let Some(s) = O::same(v) {
            dst.copy_from_slice(s.to_byte_slice());
        } else if O::accepts(v) {
            for (k, d) in dst.chunks_exact_mut(size).enumerate() {
                d.copy_from_slice(std::slice::from_ref(&O::from_f64(v.get(k))).to_byte_slice());
            }
        } else {
            return Err(Error::corpus(
                corpus.root(),
                "a matrix part's value type does not widen to the manifest's",
            ));
        }
        at += n;
    }
    Ok(())
}

/// Dense gather over the selected genes: a zeroed row per cell, scattered through the lookup table.
fn dense<O: DenseOut + Pooled>(
    corpus: &Corpus,
    alloc: &mut Out<'_>,
    cells: &[u64],
    lut: &[u32],
    width: usize,
) -> Result<ArrayRef> {
    let mut buf: OutBuf<O> = alloc.take(cells.len() * width);
    buf.fill(cells.len() * width, O::default());
    let out = buf.as_mut_slice();
    for (row, &c) in cells.iter().enumerate() {
        let (b, local) = corpus.checked_batch(c)?;
        let r = b.row_range(local);
        let dst = &mut out[row * width..(row + 1) * width];
        // One match per cell on the part's types; the scatter itself is monomorphic.
        macro_rules! by_value {
            ($i:expr) => {
                match b.values() {
                    Values::U16(v) => scatter(dst, &$i[r.clone()], &v[r.clone()], lut),
                    Values::U32(v) => scatter(dst, &$i[r.clone()], &v[r.clone()], lut),
                    Values::F32(v) => scatter(dst, &$i[r.clone()], &v[r.clone()], lut),
                    Values::F64(v) => scatter(dst, &$i[r.clone()], &v[r.clone()], lut),
                }
            };
        }
        match b.indices() {
            Indices::U16(i) => by_value!(i),
            Indices::U32(i) => by_value!(i),
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
