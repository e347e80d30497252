//! The hierarchy in SQL: the `is_a(term, ancestor)` scalar function and the `ontology` table,
//! over the ontologies given to a [`QueryEngine`] ([`QueryEngine::with_ontology`],
//! [`QueryEngine::load_ontology`]).
//!
//! - `is_a(term, ancestor)` is true when `term` is `ancestor` or one of its descendants in some
//!   given ontology (`is_a` and `part_of`, see [`crate::ontology`]). Both arguments may be term
//!   ids, exact labels or exact synonyms, so `is_a(cell_type, 'B cell')` works on a label column
//!   and `is_a(cell_type_ontology_term_id, 'CL:0000236')` on an id column. A term value that
//!   names no term is false; an `ancestor` that names no term, or a value naming several, is an
//!   error. Null in, null out.
//! - `ontology`: one row per term of every given ontology: `id`, `label`, `synonyms`,
//!   `parents`, `depth`, `deprecated`, `ontology` (its name, e.g. `CL`).
//!
//! ```sql
//! SELECT cell_type, COUNT(*) FROM obs WHERE is_a(cell_type_id, 'CL:0000236') GROUP BY cell_type;
//! SELECT o.label, o.depth, COUNT(*) FROM obs JOIN ontology o ON o.id = obs.cell_type_id GROUP BY 1, 2;
//! ```

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, BooleanBuilder, ListBuilder, RecordBatch, StringArray,
    StringBuilder, UInt32Array,
};
use arrow::datatypes::DataType;
use datafusion::catalog::MemTable;
use datafusion::common::{exec_err, plan_err, Result as DfResult, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;

use super::{query_error, QueryEngine};
use crate::error::{Error, Result};
use crate::ontology::Ontology;

/// The name of the table of terms.
pub const ONTOLOGY_TABLE: &str = "ontology";

impl QueryEngine {
    /// This engine with `ontology` added to `is_a()` and the `ontology` table (an ontology of
    /// the same name replaces the earlier one).
    pub fn with_ontology(mut self, ontology: Arc<Ontology>) -> Result<QueryEngine> {
        self.add_ontology(ontology)?;
        Ok(self)
    }

    /// Adds `ontology` to `is_a()` and the `ontology` table; one of the same name is replaced.
    pub fn add_ontology(&mut self, ontology: Arc<Ontology>) -> Result<()> {
        match self
            .ontologies
            .iter_mut()
            .find(|o| o.name() == ontology.name())
        {
            Some(slot) => *slot = ontology,
            None => self.ontologies.push(ontology),
        }
        register(&self.ctx, &self.ontologies)?;
        if !self.tables.iter().any(|t| t == ONTOLOGY_TABLE) {
            self.tables.push(ONTOLOGY_TABLE.to_string());
        }
        Ok(())
    }

    /// Loads and adds the ontology `spec` names: a file, or a name such as `CL` found in the
    /// directory of `CELLARROW_ONTOLOGY_DIR` (see [`crate::ontology::locate`]).
    pub fn load_ontology(&mut self, spec: &str) -> Result<Arc<Ontology>> {
        let path = crate::ontology::locate(spec)?;
        let ontology = Arc::new(Ontology::load(&path)?);
        self.add_ontology(ontology.clone())?;
        Ok(ontology)
    }

    /// The ontologies `is_a()` and the `ontology` table answer from.
    pub fn ontologies(&self) -> &[Arc<Ontology>] {
        &self.ontologies
    }
}

/// (Re)registers `is_a()` over `ontologies` and, when there are any, the `ontology` table.
pub(crate) fn register(ctx: &SessionContext, ontologies: &[Arc<Ontology>]) -> Result<()> {
    let set = Arc::new(ontologies.to_vec());
    ctx.register_udf(ScalarUDF::from(IsAUdf::new(set)));
    if ontologies.is_empty() {
        return Ok(());
    }
    let batch = ontology_table(ontologies)?;
    let table = MemTable::try_new(batch.schema(), vec![vec![batch]]).map_err(query_error)?;
    ctx.deregister_table(ONTOLOGY_TABLE).map_err(query_error)?;
    ctx.register_table(ONTOLOGY_TABLE, Arc::new(table))
        .map_err(query_error)?;
    Ok(())
}

/// One row per term: `id, label, synonyms, parents, depth, deprecated, ontology`.
pub(crate) fn ontology_table(ontologies: &[Arc<Ontology>]) -> Result<RecordBatch> {
    let n: usize = ontologies.iter().map(|o| o.len()).sum();
    let mut id = StringBuilder::with_capacity(n, n * 12);
    let mut label = StringBuilder::with_capacity(n, n * 16);
    let mut synonyms = ListBuilder::new(StringBuilder::new());
    let mut parents = ListBuilder::new(StringBuilder::new());
    let mut depth = Vec::with_capacity(n);
    let mut deprecated = BooleanBuilder::with_capacity(n);
    let mut name = StringBuilder::with_capacity(n, n * 4);
    for o in ontologies {
        for t in o.terms() {
            id.append_value(&t.id);
            if t.label.is_empty() {
                label.append_null();
            } else {
                label.append_value(&t.label);
            }
            for s in &t.synonyms {
                synonyms.values().append_value(s);
            }
            synonyms.append(true);
            for p in &t.parents {
                parents.values().append_value(p);
            }
            parents.append(true);
            depth.push(o.depth(&t.id).unwrap_or(0));
            deprecated.append_value(t.deprecated);
            name.append_value(o.name());
        }
    }
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("id", Arc::new(id.finish())),
        ("label", Arc::new(label.finish())),
        ("synonyms", Arc::new(synonyms.finish())),
        ("parents", Arc::new(parents.finish())),
        ("depth", Arc::new(UInt32Array::from(depth))),
        ("deprecated", Arc::new(deprecated.finish())),
        ("ontology", Arc::new(name.finish())),
    ];
    Ok(RecordBatch::try_from_iter(columns)?)
}

/// The ontologies of one session, as `is_a()` sees them.
type OntologySet = Arc<Vec<Arc<Ontology>>>;

/// A resolved ancestor: (ontology position, term index) for each ontology that has it.
type Targets = Vec<(usize, u32)>;

/// `is_a(term, ancestor)`: see the [module docs](self).
pub(crate) struct IsAUdf {
    signature: Signature,
    ontologies: OntologySet,
}

impl IsAUdf {
    pub(crate) fn new(ontologies: OntologySet) -> Self {
        IsAUdf {
            signature: Signature::any(2, Volatility::Immutable),
            ontologies,
        }
    }

    fn names(&self) -> String {
        self.ontologies
            .iter()
            .map(|o| format!("{} ({})", o.name(), o.source().display()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The terms `ancestor` names, in every ontology that has it; an error if none has it.
    fn targets(&self, ancestor: &str) -> DfResult<Targets> {
        let mut out = Vec::new();
        for (k, o) in self.ontologies.iter().enumerate() {
            if let Some(a) = o.resolve_index(ancestor).map_err(df_error)? {
                out.push((k, a));
            }
        }
        if out.is_empty() {
            return exec_err!(
                "is_a(): unknown term '{ancestor}' (not a term id, label or synonym of {})",
                self.names()
            );
        }
        Ok(out)
    }

    /// Whether `term` is one of `targets` or under one.
    fn matches(&self, term: &str, targets: &Targets) -> DfResult<bool> {
        for &(k, a) in targets {
            let o = &self.ontologies[k];
            if let Some(t) = o.resolve_index(term).map_err(df_error)? {
                if o.is_a_index(t, a) {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// `is_a` over a string array against one ancestor, each distinct value resolved once.
    fn over_strings(&self, terms: &StringArray, targets: &Targets) -> DfResult<BooleanArray> {
        let mut memo: HashMap<&str, bool> = HashMap::new();
        let mut out = BooleanBuilder::with_capacity(terms.len());
        for v in terms.iter() {
            match v {
                None => out.append_null(),
                Some(v) => {
                    let b = match memo.get(v) {
                        Some(&b) => b,
                        None => {
                            let b = self.matches(v, targets)?;
                            memo.insert(v, b);
                            b
                        }
                    };
                    out.append_value(b);
                }
            }
        }
        Ok(out.finish())
    }
}

fn df_error(e: Error) -> datafusion::common::DataFusionError {
    datafusion::common::DataFusionError::Execution(format!("is_a(): {e}"))
}

fn is_string(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => true,
        DataType::Dictionary(_, v) => is_string(v),
        _ => false,
    }
}

/// The value of a scalar argument as a string (`None` for null).
fn scalar_string(s: &ScalarValue) -> DfResult<Option<String>> {
    match s.cast_to(&DataType::Utf8)? {
        ScalarValue::Utf8(v) => Ok(v),
        _ => Ok(None),
    }
}

fn utf8(array: &ArrayRef) -> DfResult<StringArray> {
    Ok(arrow::compute::cast(array, &DataType::Utf8)?
        .as_string::<i32>()
        .clone())
}

impl std::fmt::Debug for IsAUdf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IsAUdf")
            .field("ontologies", &self.names())
            .finish()
    }
}

// One instance per registration: identity is the shared set.
impl PartialEq for IsAUdf {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.ontologies, &other.ontologies)
    }
}
impl Eq for IsAUdf {}
impl Hash for IsAUdf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.ontologies) as *const u8 as usize).hash(state);
    }
}

impl ScalarUDFImpl for IsAUdf {
    fn name(&self) -> &str {
        "is_a"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        if !is_string(&args[0]) || !is_string(&args[1]) {
            return plan_err!(
                "is_a(term, ancestor) takes two term ids or labels (strings), got is_a({}, {})",
                args[0],
                args[1]
            );
        }
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        if self.ontologies.is_empty() {
            return exec_err!(
                "is_a(): this session has no ontology; give one to the query engine \
                 (an OBO or cellxgene ontology JSON file, or a name found in {})",
                crate::ontology::ONTOLOGY_DIR_ENV
            );
        }
        let n = args.number_rows;
        match (&args.args[0], &args.args[1]) {
            (ColumnarValue::Scalar(term), ColumnarValue::Scalar(ancestor)) => {
                let (Some(term), Some(ancestor)) = (scalar_string(term)?, scalar_string(ancestor)?)
                else {
                    return Ok(ColumnarValue::Scalar(ScalarValue::Boolean(None)));
                };
                let targets = self.targets(&ancestor)?;
                Ok(ColumnarValue::Scalar(ScalarValue::Boolean(Some(
                    self.matches(&term, &targets)?,
                ))))
            }
            (ColumnarValue::Array(terms), ColumnarValue::Scalar(ancestor)) => {
                let Some(ancestor) = scalar_string(ancestor)? else {
                    return Ok(ColumnarValue::Array(Arc::new(BooleanArray::new_null(n))));
                };
                let targets = self.targets(&ancestor)?;
                // A categorical column: decide once per dictionary entry, then gather.
                if let Some(dict) = terms.as_any_dictionary_opt() {
                    let values = utf8(dict.values())?;
                    let decided = self.over_strings(&values, &targets)?;
                    let out = arrow::compute::take(&decided, dict.keys(), None)?;
                    return Ok(ColumnarValue::Array(out));
                }
                let out = self.over_strings(&utf8(terms)?, &targets)?;
                Ok(ColumnarValue::Array(Arc::new(out)))
            }
            (term, ancestor) => {
                let terms = utf8(&term.to_array(n)?)?;
                let ancestors = utf8(&ancestor.to_array(n)?)?;
                let mut targets: HashMap<&str, Targets> = HashMap::new();
                let mut out = BooleanBuilder::with_capacity(n);
                for (t, a) in terms.iter().zip(ancestors.iter()) {
                    let (Some(t), Some(a)) = (t, a) else {
                        out.append_null();
                        continue;
                    };
                    if !targets.contains_key(a) {
                        targets.insert(a, self.targets(a)?);
                    }
                    out.append_value(self.matches(t, &targets[a])?);
                }
                Ok(ColumnarValue::Array(Arc::new(out.finish())))
            }
        }
    }
}
