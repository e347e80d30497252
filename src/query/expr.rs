//! The `expr(cell, gene)` scalar function: one gene's value in one cell, read from the mapped
//! matrix by binary search in the cell's sorted gene ids. No dense row is ever built.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use arrow::array::{Array, AsArray, Float64Builder};
use arrow::datatypes::{DataType, UInt64Type};
use datafusion::common::{
    exec_datafusion_err, exec_err, plan_err, Result as DfResult, ScalarValue,
};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use crate::corpus::{Corpus, Indices, Values};

/// Row access to the expression matrix, as the corpus reader provides it.
///
/// A seam so the SQL layer can be tested with an in-memory matrix.
pub(crate) trait CellRows: Send + Sync {
    fn n_cells(&self) -> u64;
    /// Gene ids (strictly increasing) and values of `cell < n_cells()`.
    fn row(&self, cell: u64) -> (Indices<'_>, Values<'_>);
}

impl CellRows for Corpus {
    fn n_cells(&self) -> u64 {
        Corpus::n_cells(self)
    }
    fn row(&self, cell: u64) -> (Indices<'_>, Values<'_>) {
        (self.indices(cell), self.values(cell))
    }
}

/// The value of gene `gene` in a row, 0 where the row has no entry for it.
pub(crate) fn row_value(indices: Indices<'_>, values: Values<'_>, gene: u32) -> f64 {
    let pos = match indices {
        Indices::U16(ix) => u16::try_from(gene)
            .ok()
            .and_then(|g| ix.binary_search(&g).ok()),
        Indices::U32(ix) => ix.binary_search(&gene).ok(),
    };
    match (pos, values) {
        (None, _) => 0.0,
        (Some(p), Values::U16(v)) => f64::from(v[p]),
        (Some(p), Values::U32(v)) => f64::from(v[p]),
        (Some(p), Values::F32(v)) => f64::from(v[p]),
        (Some(p), Values::F64(v)) => v[p],
    }
}

pub(crate) struct ExprState {
    rows: Option<Arc<dyn CellRows>>,
    genes_files: Vec<PathBuf>,
    /// Gene name -> id, read from genes.parquet on first use.
    names: OnceLock<std::result::Result<HashMap<String, u32>, String>>,
}

impl ExprState {
    /// `genes_files`: the files of the genes table, in row (gene id) order.
    pub(crate) fn new(rows: Option<Arc<dyn CellRows>>, genes_files: Vec<PathBuf>) -> Self {
        ExprState {
            rows,
            genes_files,
            names: OnceLock::new(),
        }
    }

    fn names(&self) -> DfResult<&HashMap<String, u32>> {
        self.names
            .get_or_init(|| read_gene_names(&self.genes_files))
            .as_ref()
            .map_err(|e| exec_datafusion_err!("expr(): {e}"))
    }

    /// Resolves a gene given by name (exact), or by numeric id, to its id.
    fn resolve(&self, gene: &ScalarValue) -> DfResult<Option<u32>> {
        let names = self.names()?;
        let n_genes = names.len() as u64;
        let id = |v: u64| -> DfResult<u32> {
            if v < n_genes {
                Ok(v as u32)
            } else {
                exec_err!("expr(): gene id {v} out of range (the vocabulary has {n_genes} genes)")
            }
        };
        if gene.is_null() {
            return Ok(None);
        }
        if gene.data_type().is_integer() {
            let v = gene.cast_to(&DataType::Int64)?;
            return match v {
                ScalarValue::Int64(Some(v)) if v >= 0 => id(v as u64).map(Some),
                other => exec_err!("expr(): gene id {other} out of range"),
            };
        }
        let name = match gene.cast_to(&DataType::Utf8)? {
            ScalarValue::Utf8(Some(s)) => s,
            _ => return Ok(None),
        };
        if let Some(&g) = names.get(&name) {
            return Ok(Some(g));
        }
        if let Ok(v) = name.parse::<u64>() {
            return id(v).map(Some);
        }
        let lower = name.to_lowercase();
        let mut close: Vec<&str> = names
            .keys()
            .filter(|k| k.to_lowercase() == lower)
            .map(String::as_str)
            .take(3)
            .collect();
        close.sort_unstable();
        if close.is_empty() {
            exec_err!("expr(): unknown gene '{name}' (not a name in genes.parquet nor a gene id)")
        } else {
            exec_err!(
                "expr(): unknown gene '{name}'; did you mean {}? (gene names are case sensitive)",
                close.join(", ")
            )
        }
    }
}

/// Each gene's name, and its stable id and symbol where they name one gene
/// ([`crate::genes::GeneIndex::lookup`]: a symbol finds its gene whatever the key), to its id.
fn read_gene_names(files: &[PathBuf]) -> std::result::Result<HashMap<String, u32>, String> {
    let index =
        crate::genes::table::read_index(files, Default::default()).map_err(|e| e.to_string())?;
    let mut names = HashMap::new();
    for (i, g) in index.genes().iter().enumerate() {
        names.insert(g.name.clone(), i as u32);
    }
    for (i, g) in index.genes().iter().enumerate() {
        for text in [g.identity.id.as_deref(), g.identity.symbol.as_deref()]
            .into_iter()
            .flatten()
        {
            if index.lookup(text) == Some(i as u32) {
                names.entry(text.to_string()).or_insert(i as u32);
            }
        }
    }
    Ok(names)
}

/// `expr(cell, gene)`: see the [module docs](self).
pub(crate) struct ExprUdf {
    signature: Signature,
    state: Arc<ExprState>,
}

impl ExprUdf {
    pub(crate) fn new(state: Arc<ExprState>) -> Self {
        ExprUdf {
            signature: Signature::any(2, Volatility::Immutable),
            state,
        }
    }
}

impl std::fmt::Debug for ExprUdf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExprUdf")
            .field("genes", &self.state.genes_files)
            .finish()
    }
}

// One instance per session: identity is the shared state.
impl PartialEq for ExprUdf {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.state, &other.state)
    }
}
impl Eq for ExprUdf {}
impl Hash for ExprUdf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.state) as *const u8 as usize).hash(state);
    }
}

impl ScalarUDFImpl for ExprUdf {
    fn name(&self) -> &str {
        "expr"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        let cell_ok = crate::sample::is_integral(&args[0]) || args[0] == DataType::Null;
        let gene_ok = args[1].is_integer()
            || matches!(
                args[1],
                DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 | DataType::Null
            )
            || matches!(&args[1], DataType::Dictionary(_, v) if matches!(**v, DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8));
        if !cell_ok || !gene_ok {
            return plan_err!(
                "expr(cell, gene) takes an integer cell id and a gene name or id, got expr({}, {})",
                args[0],
                args[1]
            );
        }
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let n = args.number_rows;
        let Some(rows) = self.state.rows.as_deref() else {
            return exec_err!("expr(): this session has no expression matrix");
        };
        let cells = args.args[0].to_array(n)?;
        let cells = arrow::compute::cast(&cells, &DataType::UInt64)?;
        let cells = cells.as_primitive::<UInt64Type>();
        let n_cells = rows.n_cells();
        let scalar_gene = match &args.args[1] {
            ColumnarValue::Scalar(s) => Some(self.state.resolve(s)?),
            ColumnarValue::Array(_) => None,
        };
        let genes = match &args.args[1] {
            ColumnarValue::Array(a) => Some(a),
            ColumnarValue::Scalar(_) => None,
        };
        let mut out = Float64Builder::with_capacity(n);
        let mut cache: HashMap<ScalarValue, Option<u32>> = HashMap::new();
        for i in 0..n {
            let gene = match (scalar_gene, genes) {
                (Some(g), _) => g,
                (None, Some(a)) => {
                    let s = ScalarValue::try_from_array(a, i)?;
                    match cache.get(&s) {
                        Some(&g) => g,
                        None => {
                            let g = self.state.resolve(&s)?;
                            cache.insert(s, g);
                            g
                        }
                    }
                }
                (None, None) => unreachable!("gene argument is a scalar or an array"),
            };
            if cells.is_null(i) || gene.is_none() {
                out.append_null();
                continue;
            }
            let (cell, gene) = (cells.value(i), gene.expect("checked above"));
            if cell >= n_cells {
                return exec_err!(
                    "expr(): cell {cell} out of range (the corpus has {n_cells} cells)"
                );
            }
            let (ix, vals) = rows.row(cell);
            out.append_value(row_value(ix, vals, gene));
        }
        let array = out.finish();
        // Keep scalar-in, scalar-out so constant folding works.
        if array.len() == 1
            && matches!(args.args[0], ColumnarValue::Scalar(_))
            && matches!(args.args[1], ColumnarValue::Scalar(_))
        {
            return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                &array, 0,
            )?));
        }
        Ok(ColumnarValue::Array(Arc::new(array)))
    }
}
