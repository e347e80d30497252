//! `cellarrow._native`: the Rust core of the `cellarrow` Python package.
//!
//! Thin wrappers: [`PyCorpus`] over [`Corpus`] (tables, SQL, cohorts, the mapped matrix) and
//! [`PyLoader`] over the prefetching [`Loader`]. Arrow data crosses into Python through the
//! Arrow PyCapsule interface (`pyo3-arrow`), so no buffer is copied; the GIL is released
//! while Rust opens, queries or gathers. The pure-Python layer (`cellarrow/*.py`) adds the
//! pythonic API, numpy/scipy/torch views, Hugging Face and PyTorch adapters.

mod build;
mod plan;

use std::sync::{Arc, Mutex, OnceLock};

use arrow::array::{Array, ArrayRef, AsArray, UInt64Array};
use arrow::datatypes::{Field, UInt64Type};
use arrow::record_batch::RecordBatch;
use cellarrow::corpus::Corpus;
use cellarrow::loader::{BatchOptions, Gatherer, Loader, Region, SamplerSpec};
use cellarrow::query::QueryEngine;
use cellarrow::sample::{Cohort, Layout, Shard, ShardPolicy};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyIndexError, PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyType};
use pyo3_arrow::{PyArray, PyRecordBatch, PyTable};

create_exception!(
    _native,
    CellarrowError,
    PyException,
    "The base of every error the cellarrow core raises (corpus, query, sampler or loader)."
);

/// The subclasses of [`CellarrowError`] that are also built-in errors, made once per
/// interpreter: `InvalidInputError` (a `ValueError`), `CellarrowIOError` (an `OSError`) and
/// `CellarrowIndexError` (an `IndexError`).
struct ErrorTypes {
    invalid: Py<PyType>,
    io: Py<PyType>,
    index: Py<PyType>,
    type_: Py<PyType>,
}

static ERROR_TYPES: PyOnceLock<ErrorTypes> = PyOnceLock::new();

fn error_types(py: Python<'_>) -> &ErrorTypes {
    ERROR_TYPES.get_or_init(py, || {
        let make = |name: &str, builtin: Bound<'_, PyType>, doc: &str| -> Py<PyType> {
            let base = py.get_type::<CellarrowError>();
            let ns = PyDict::new(py);
            ns.set_item("__module__", "cellarrow._native")
                .and_then(|_| ns.set_item("__doc__", doc))
                .and_then(|_| {
                    py.get_type::<PyType>()
                        .call1((name, (base, builtin), ns))?
                        .cast_into::<PyType>()
                        .map_err(PyErr::from)
                })
                .map(Bound::unbind)
                .expect("creating an exception class")
        };
        ErrorTypes {
            invalid: make(
                "InvalidInputError",
                py.get_type::<PyValueError>(),
                "A bad argument or setting (also a ValueError).",
            ),
            io: make(
                "CellarrowIOError",
                py.get_type::<PyOSError>(),
                "A file could not be read or written (also an OSError).",
            ),
            index: make(
                "CellarrowIndexError",
                py.get_type::<PyIndexError>(),
                "A cell id out of range (also an IndexError).",
            ),
            type_: make(
                "CellarrowTypeError",
                py.get_type::<PyTypeError>(),
                "An unknown keyword or a value of the wrong type (also a TypeError).",
            ),
        }
    })
}

/// An `InvalidInputError` (a `CellarrowError` and a `ValueError`) with `msg`.
pub(crate) fn value_error(msg: impl Into<String>) -> PyErr {
    let msg = msg.into();
    Python::attach(|py| PyErr::from_type(error_types(py).invalid.bind(py).clone(), msg))
}

/// A `CellarrowTypeError` (a `CellarrowError` and a `TypeError`) with `msg`.
pub(crate) fn type_error(msg: impl Into<String>) -> PyErr {
    let msg = msg.into();
    Python::attach(|py| PyErr::from_type(error_types(py).type_.bind(py).clone(), msg))
}

/// A `CellarrowIndexError` (a `CellarrowError` and an `IndexError`) with `msg`.
fn index_error(msg: impl Into<String>) -> PyErr {
    let msg = msg.into();
    Python::attach(|py| PyErr::from_type(error_types(py).index.bind(py).clone(), msg))
}

/// Maps a core error to a Python exception, always a `CellarrowError`: invalid input is
/// also a `ValueError`, I/O also an `OSError`; the message names the file and object.
pub(crate) fn to_py(e: cellarrow::Error) -> PyErr {
    use cellarrow::ErrorKind as K;
    let msg = e.to_string();
    match e.kind() {
        K::InvalidInput => value_error(msg),
        K::Io => Python::attach(|py| PyErr::from_type(error_types(py).io.bind(py).clone(), msg)),
        _ => CellarrowError::new_err(msg),
    }
}

fn table(batches: Vec<RecordBatch>, schema: arrow::datatypes::SchemaRef) -> PyResult<PyTable> {
    PyTable::try_new(batches, schema)
}

/// Cell ids from an Arrow array of unsigned or signed integers (a `pyarrow.Array`, or anything
/// with `__arrow_c_array__`), with no copy through Python objects.
fn cells_from_array(array: PyArray) -> PyResult<Vec<u64>> {
    let (array, _) = array.into_inner();
    let array: ArrayRef = arrow::compute::cast(&array, &arrow::datatypes::DataType::UInt64)
        .map_err(|e| value_error(format!("cell ids must be non-negative integers: {e}")))?;
    if array.null_count() > 0 {
        return Err(value_error("cell ids must not be null"));
    }
    Ok(array.as_primitive::<UInt64Type>().values().to_vec())
}

fn cells_to_array(cells: Vec<u64>) -> PyArray {
    let array: ArrayRef = Arc::new(UInt64Array::from(cells));
    PyArray::new(
        array,
        Arc::new(Field::new(
            "cell",
            arrow::datatypes::DataType::UInt64,
            false,
        )),
    )
}

/// A new `bytes` object of `len` bytes and its contents, for Rust to fill before Python sees it.
#[allow(clippy::mut_from_ref)] // the bytes object is new: nothing else refers to its contents
fn new_bytes(py: Python<'_>, len: usize) -> PyResult<(Bound<'_, PyBytes>, &mut [u8])> {
    let n = pyo3::ffi::Py_ssize_t::try_from(len)
        .map_err(|_| value_error(format!("{len} bytes do not fit one object")))?;
    // SAFETY: a NULL source asks CPython for an uninitialised object of `n` bytes, which it
    // documents as writable until the object is shared. We own its only reference, the slice
    // covers exactly its contents and lives no longer than the borrow of `py` (the caller
    // returns the object after filling it).
    unsafe {
        let obj = Bound::from_owned_ptr_or_err(
            py,
            pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), n),
        )?
        .cast_into_unchecked::<PyBytes>();
        let data = pyo3::ffi::PyBytes_AsString(obj.as_ptr()) as *mut u8;
        if data.is_null() {
            return Err(PyErr::fetch(py));
        }
        Ok((obj, std::slice::from_raw_parts_mut(data, len)))
    }
}

/// A memory-mapped corpus (see `cellarrow.open`).
#[pyclass(module = "cellarrow._native", name = "Corpus", frozen)]
pub struct PyCorpus {
    pub(crate) corpus: Arc<Corpus>,
    engine: Mutex<Option<Arc<QueryEngine>>>,
    /// CSR batches with the stored value types, for `gather`; built on first use.
    gatherer: OnceLock<Gatherer>,
}

impl PyCorpus {
    fn engine(&self) -> cellarrow::Result<Arc<QueryEngine>> {
        let mut guard = self.engine.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = guard.as_ref() {
            return Ok(e.clone());
        }
        let e = Arc::new(QueryEngine::new(self.corpus.clone())?);
        *guard = Some(e.clone());
        Ok(e)
    }
}

#[pymethods]
impl PyCorpus {
    /// Opens (maps and checks the structure of) the corpus at `path`.
    #[new]
    fn new(py: Python<'_>, path: std::path::PathBuf) -> PyResult<Self> {
        let corpus = py.detach(|| Corpus::open(&path)).map_err(to_py)?;
        Ok(PyCorpus {
            corpus: Arc::new(corpus),
            engine: Mutex::new(None),
            gatherer: OnceLock::new(),
        })
    }

    /// The corpus directory.
    #[getter]
    fn path(&self) -> std::path::PathBuf {
        self.corpus.root().to_path_buf()
    }

    #[getter]
    fn n_cells(&self) -> u64 {
        self.corpus.n_cells()
    }

    #[getter]
    fn n_genes(&self) -> u64 {
        self.corpus.n_genes()
    }

    #[getter]
    fn nnz(&self) -> u64 {
        self.corpus.nnz()
    }

    /// `manifest.json` as a JSON string.
    #[getter]
    fn manifest_json(&self) -> PyResult<String> {
        serde_json::to_string(self.corpus.manifest())
            .map_err(|e| CellarrowError::new_err(e.to_string()))
    }

    /// The matrix parts: (absolute path, first cell, number of cells), in cell order.
    fn parts(&self) -> Vec<(std::path::PathBuf, u64, u64)> {
        self.corpus
            .manifest()
            .matrix
            .parts
            .iter()
            .map(|p| (self.corpus.file_path(&p.path), p.first_cell, p.n_cells))
            .collect()
    }

    /// A Parquet table of the corpus (`obs`, `genes`, `samples`, `gene_counts`), optionally only
    /// some columns, as an Arrow table (PyCapsule), or None when it has no rows.
    #[pyo3(signature = (name, columns=None))]
    fn read_table(
        &self,
        py: Python<'_>,
        name: &str,
        columns: Option<Vec<String>>,
    ) -> PyResult<Option<PyTable>> {
        let batches = py
            .detach(|| {
                let cols: Option<Vec<&str>> = columns
                    .as_ref()
                    .map(|c| c.iter().map(String::as_str).collect());
                self.corpus.read_table(name, cols.as_deref())
            })
            .map_err(to_py)?;
        match batches.first() {
            None => Ok(None),
            Some(b) => {
                let schema = b.schema();
                table(batches, schema).map(Some)
            }
        }
    }

    /// The gene names, in id order.
    fn gene_names(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        py.detach(|| self.corpus.gene_names()).map_err(to_py)
    }

    /// The matrix as one Arrow table over the mapped parts (no copy): columns `indices`,
    /// `values`, one row per cell in id order.
    fn matrix(&self) -> PyResult<PyTable> {
        let batches = self.corpus.matrix_record_batches().map_err(to_py)?;
        table(batches, self.corpus.matrix_schema())
    }

    /// Runs one SQL statement (the tables and functions of `cellarrow query`).
    fn query(&self, py: Python<'_>, sql: &str) -> PyResult<PyTable> {
        let (batches, schema) = py
            .detach(|| {
                let engine = self.engine()?;
                let mut batches = Vec::new();
                let schema = engine.for_each_batch(sql, |b| {
                    batches.push(b.clone());
                    Ok(())
                })?;
                Ok::<_, cellarrow::Error>((batches, schema))
            })
            .map_err(to_py)?;
        // Batches may carry a schema that differs from the plan's in nullability; trust theirs.
        let schema = batches.first().map(|b| b.schema()).unwrap_or(schema);
        table(batches, schema)
    }

    /// The sorted, distinct cell ids of the `cell` column of a query, as a UInt64 array.
    fn cohort(&self, py: Python<'_>, sql: &str) -> PyResult<PyArray> {
        let cells = py
            .detach(|| Ok::<_, cellarrow::Error>(self.engine()?.cohort(sql)?.into_cells()))
            .map_err(to_py)?;
        Ok(cells_to_array(cells))
    }

    /// The cells whose obs row satisfies an SQL predicate, as a UInt64 array.
    fn cohort_where(&self, py: Python<'_>, predicate: &str) -> PyResult<PyArray> {
        let cells = py
            .detach(|| {
                Ok::<_, cellarrow::Error>(self.engine()?.cohort_where(predicate)?.into_cells())
            })
            .map_err(to_py)?;
        Ok(cells_to_array(cells))
    }

    /// The CSR rows of `cells` (native-endian `uint64` ids as bytes, or `int64` ones with
    /// `signed`; any order, repeats allowed) as `(indptr, indices, values)` `bytes` objects:
    /// `int32` row pointers from 0, `int32` gene ids and the stored values. Rust writes
    /// straight into the new objects, so a one-cell call costs a few microseconds; the GIL is
    /// released for the copy of larger batches.
    #[pyo3(signature = (cells, signed = false))]
    fn gather_csr<'py>(
        &self,
        py: Python<'py>,
        cells: &[u8],
        signed: bool,
    ) -> PyResult<(
        Bound<'py, PyBytes>,
        Bound<'py, PyBytes>,
        Bound<'py, PyBytes>,
    )> {
        if !cells.len().is_multiple_of(8) {
            return Err(value_error(
                "cell ids must be the bytes of a uint64 or int64 array",
            ));
        }
        let cells: Vec<u64> = cells
            .chunks_exact(8)
            .map(|c| u64::from_ne_bytes(c.try_into().expect("chunks of 8 bytes")))
            .collect();
        if signed {
            if let Some(&bad) = cells.iter().find(|&&c| (c as i64) < 0) {
                return Err(index_error(format!("cell id {} is negative", bad as i64)));
            }
        }
        let gatherer = match self.gatherer.get() {
            Some(g) => g,
            None => {
                let g = py
                    .detach(|| Gatherer::new(self.corpus.clone(), BatchOptions::default()))
                    .map_err(to_py)?;
                self.gatherer.get_or_init(|| g)
            }
        };
        let nnz = gatherer.nnz(&cells).map_err(to_py)?;
        let value_size = self.corpus.manifest().value_type.byte_width();
        let (indptr, p) = new_bytes(py, 4 * (cells.len() + 1))?;
        let (indices, i) = new_bytes(py, 4 * nnz)?;
        let (values, v) = new_bytes(py, value_size * nnz)?;
        // Releasing and taking back the GIL costs more than copying a few cells.
        if nnz < 1 << 16 {
            gatherer.gather_csr_into(&cells, p, i, v)
        } else {
            py.detach(|| gatherer.gather_csr_into(&cells, p, i, v))
        }
        .map_err(to_py)?;
        Ok((indptr, indices, values))
    }

    fn __repr__(&self) -> String {
        format!(
            "Corpus({:?}, n_cells={}, n_genes={}, nnz={})",
            self.corpus.root(),
            self.corpus.n_cells(),
            self.corpus.n_genes(),
            self.corpus.nnz()
        )
    }
}

/// The batches of one shard of one epoch, gathered ahead by Rust threads.
#[pyclass(module = "cellarrow._native", name = "Loader", frozen)]
pub struct PyLoader {
    inner: Mutex<Loader>,
    /// Items (cells or groups) of the epoch, over all shards.
    #[pyo3(get)]
    epoch_len: u64,
    /// Items this loader serves from its starting position to the end of the shard.
    #[pyo3(get)]
    n_items: u64,
    /// Items of the shard already served before this loader started.
    #[pyo3(get)]
    start_position: u64,
    /// Items per batch (cells for the random sampler, groups otherwise).
    #[pyo3(get)]
    items_per_batch: u64,
    /// Whether items are groups (batches carry a `group` column).
    #[pyo3(get)]
    grouped: bool,
    /// Width of the dense output (0 for CSR).
    #[pyo3(get)]
    dense_width: usize,
    /// Gene ids of the dense columns, in column order (empty for CSR).
    #[pyo3(get)]
    dense_genes: Vec<u32>,
    /// Width of a batch's gene space: the model vocabulary's size with `genes`, else the
    /// corpus's gene count.
    #[pyo3(get)]
    n_genes: u64,
    /// With `genes`: (vocabulary genes the corpus has, vocabulary size, the missing ones).
    #[pyo3(get)]
    vocab_overlap: Option<(usize, usize, Vec<String>)>,
    /// With `multi_hot`: the term ids of the `multi_hot` columns, in order.
    #[pyo3(get)]
    multi_hot_terms: Option<Vec<String>>,
    /// With `multi_hot`: the labels of those terms.
    #[pyo3(get)]
    multi_hot_labels: Option<Vec<String>>,
    /// With `balance`: the classes the sampler draws over (`BalanceReport` as JSON).
    balance: Option<serde_json::Value>,
    /// The effective settings.
    spec: SamplerSpec,
}

#[pymethods]
impl PyLoader {
    /// See `cellarrow.Loader` for the keywords: the library's settings, by name
    /// (`cellarrow._native.Loader.setting_names()`); those not given take the library's
    /// defaults. `cells`: the cohort as cell ids (else every cell), narrowed by `where`,
    /// `cohort` (a cohort file); `blocks_sql` and `regions_sql` choose blocks and regions.
    #[new]
    #[pyo3(signature = (corpus, cells=None, **settings))]
    fn new(
        py: Python<'_>,
        corpus: &PyCorpus,
        cells: Option<PyArray>,
        settings: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let cells = cells.map(cells_from_array).transpose()?;
        let mut spec = plan::spec_from_kwargs(settings)?;
        let corpus = corpus.corpus.clone();
        let (planned, gatherer, spec) = py
            .detach(move || {
                let cohort = cells
                    .map(|c| Cohort::from_cells_checked(c, corpus.n_cells()))
                    .transpose()?;
                let cohort = spec.select(&corpus, cohort)?;
                let planned = spec.plan(&corpus, cohort)?;
                let gatherer = Gatherer::new(corpus.clone(), spec.batch_options())?;
                Ok::<_, cellarrow::Error>((planned, gatherer, spec))
            })
            .map_err(to_py)?;
        let dense_genes = gatherer.dense_genes().to_vec();
        let dense_width = gatherer.dense_width();
        let n_genes = gatherer.n_genes();
        let vocab_overlap = gatherer
            .vocab()
            .map(|v| (v.present, v.size, v.missing.clone()));
        let multi_hot_terms = gatherer.multi_hot().map(|m| m.terms().to_vec());
        let multi_hot_labels = gatherer.multi_hot().map(|m| m.labels().to_vec());
        let balance = planned
            .balance
            .as_ref()
            .map(|b| serde_json::to_value(b.report()))
            .transpose()
            .map_err(|e| CellarrowError::new_err(e.to_string()))?;
        let loader = Loader::new(Arc::new(gatherer), planned.plan, spec.loader_options());
        Ok(PyLoader {
            inner: Mutex::new(loader),
            epoch_len: planned.epoch_len,
            n_items: planned.n_items,
            start_position: spec.position,
            items_per_batch: planned.items_per_batch,
            grouped: planned.grouped,
            dense_width,
            dense_genes,
            n_genes,
            vocab_overlap,
            multi_hot_terms,
            multi_hot_labels,
            balance,
            spec,
        })
    }

    /// With `balance`: the classes the sampler draws over, as a dict (`column`, `ontology`,
    /// `cut`, `classes` with each class's `class`, `label`, `cells`, `weight` and
    /// `probability`, `cells`, `draws`, `own_label`, `left_out_null`, `left_out_outside`,
    /// `effective_classes`, `effective_classes_unbalanced`); else None.
    #[getter]
    fn balance<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.balance
            .as_ref()
            .map(|v| plan::json_to_py(py, v))
            .transpose()
    }

    /// The names of every setting the constructor takes as a keyword.
    #[staticmethod]
    fn setting_names() -> Vec<String> {
        SamplerSpec::names()
    }

    /// Checks settings as the constructor does before it reads anything (names, types,
    /// ranges, and how they combine), with no corpus: raises the constructor's error.
    #[staticmethod]
    #[pyo3(signature = (**settings))]
    fn check_settings(settings: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
        plan::spec_from_kwargs(settings).map(|_| ())
    }

    /// The settings a front end (`python`, `torch`, `hf`) serves differently from the
    /// library's defaults, as a dict (see `cellarrow::loader::defaults::front_end`).
    #[staticmethod]
    fn front_end_defaults<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
        let pairs = cellarrow::loader::defaults::front_end(name)
            .ok_or_else(|| value_error(format!("unknown front end {name:?}")))?;
        plan::json_to_py(py, &serde_json::Value::Object(pairs))
    }

    /// The library's default of every setting, as a dict.
    #[staticmethod]
    fn default_settings(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
        plan::spec_to_dict(py, &SamplerSpec::default())
    }

    /// Every setting of this loader and its value (given or default), as a dict.
    #[getter]
    fn settings<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        plan::spec_to_dict(py, &self.spec)
    }

    fn __repr__(&self) -> String {
        format!("Loader({})", self.spec.to_json())
    }

    /// Number of batches this loader yields in all.
    #[getter]
    fn n_batches(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .n_batches()
    }

    /// Batches yielded so far.
    #[getter]
    fn batches_done(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .position()
    }

    /// The Arrow schema of every batch, as an empty record batch.
    fn empty_batch(&self) -> PyRecordBatch {
        let schema = self
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .schema();
        PyRecordBatch::new(RecordBatch::new_empty(schema))
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// The next batch, gathered with the GIL released.
    fn __next__(&self, py: Python<'_>) -> PyResult<Option<PyRecordBatch>> {
        let next = py.detach(|| self.inner.lock().unwrap_or_else(|p| p.into_inner()).next());
        match next {
            None => Ok(None),
            Some(Ok(b)) => Ok(Some(PyRecordBatch::new(b))),
            Some(Err(e)) => Err(to_py(e)),
        }
    }

    /// The next batch gathered into `memory`, a writable one-dimensional uint8 array (its
    /// `__array_interface__`), as `(batch, bytes of memory used)`; `None` at the end. The cell
    /// and group ids and the matrix buffers are written there while they fit; the batch holds
    /// `memory` until its last buffer is gone. Only for loaders made with `threads=0`.
    fn next_into(
        &self,
        py: Python<'_>,
        memory: Bound<'_, PyAny>,
    ) -> PyResult<Option<(PyRecordBatch, usize)>> {
        let (base, len) = writable_bytes(&memory)?;
        let owner: Arc<dyn arrow::alloc::Allocation> =
            Arc::new(std::panic::AssertUnwindSafe(memory.unbind()));
        // SAFETY: `writable_bytes` read the address and length of a writable, contiguous array
        // from its `__array_interface__`; `owner` keeps that array, and so its memory, alive
        // while any buffer of the batch lives.
        let mut region = unsafe { Region::new(base, len, owner) };
        let next = py.detach(|| {
            self.inner
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .next_in(&mut region)
        });
        match next {
            None => Ok(None),
            Some(Ok(b)) => Ok(Some((PyRecordBatch::new(b), region.used()))),
            Some(Err(e)) => Err(to_py(e)),
        }
    }
}

/// The address and length of a writable, contiguous, one-dimensional uint8 array.
fn writable_bytes(array: &Bound<'_, PyAny>) -> PyResult<(std::ptr::NonNull<u8>, usize)> {
    let bad = || value_error("memory must be a writable, contiguous uint8 array");
    let interface = array.getattr("__array_interface__").map_err(|_| bad())?;
    let typestr: String = interface.get_item("typestr")?.extract()?;
    let shape: Vec<usize> = interface.get_item("shape")?.extract()?;
    let strides = interface.get_item("strides").ok();
    let contiguous = strides.is_none_or(|s| s.is_none());
    let (addr, readonly): (usize, bool) = interface.get_item("data")?.extract()?;
    match (typestr.as_str(), shape.as_slice(), contiguous, readonly) {
        ("|u1", &[len], true, false) => Ok((
            std::ptr::NonNull::new(addr as *mut u8).ok_or_else(bad)?,
            len,
        )),
        _ => Err(bad()),
    }
}

/// The ontology file `spec` names: an existing file as it is, else a name looked up in
/// `directory` when given, else in `$CELLARROW_ONTOLOGY_DIR`.
#[pyfunction]
#[pyo3(signature = (spec, directory=None))]
fn locate_ontology(
    spec: &str,
    directory: Option<std::path::PathBuf>,
) -> PyResult<std::path::PathBuf> {
    match directory {
        Some(dir) if !std::path::Path::new(spec).is_file() => {
            cellarrow::ontology::locate_in(&dir, spec)
        }
        _ => cellarrow::ontology::locate(spec),
    }
    .map_err(to_py)
}

/// Items shard `(rank, worker)` serves in an epoch of `epoch_len` items under `policy`.
#[pyfunction]
#[pyo3(signature = (epoch_len, rank, world_size, worker=0, num_workers=1, policy="even"))]
fn shard_len(
    epoch_len: u64,
    rank: u32,
    world_size: u32,
    worker: u32,
    num_workers: u32,
    policy: &str,
) -> PyResult<u64> {
    let shard = Shard::new(rank, world_size, worker, num_workers).map_err(to_py)?;
    let policy: ShardPolicy = policy.parse().map_err(to_py)?;
    Ok(Layout::new(epoch_len, 0, shard, policy)
        .map_err(to_py)?
        .len())
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("CellarrowError", m.py().get_type::<CellarrowError>())?;
    let types = error_types(m.py());
    m.add("InvalidInputError", types.invalid.clone_ref(m.py()))?;
    m.add("CellarrowIOError", types.io.clone_ref(m.py()))?;
    m.add("CellarrowIndexError", types.index.clone_ref(m.py()))?;
    m.add("CellarrowTypeError", types.type_.clone_ref(m.py()))?;
    m.add_class::<PyCorpus>()?;
    m.add_class::<PyLoader>()?;
    m.add_function(wrap_pyfunction!(shard_len, m)?)?;
    m.add_function(wrap_pyfunction!(locate_ontology, m)?)?;
    m.add_function(wrap_pyfunction!(build::resolve_inputs, m)?)?;
    m.add_function(wrap_pyfunction!(build::plan_genes, m)?)?;
    m.add_function(wrap_pyfunction!(build::convert, m)?)?;
    m.add_function(wrap_pyfunction!(build::merge, m)?)?;
    m.add_function(wrap_pyfunction!(build::publish, m)?)?;
    Ok(())
}
