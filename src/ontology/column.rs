//! A whole obs column of labels or ids resolved to term ids, for an ontology column of a
//! conversion (`--ontology cell_type=CL`).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringArray, StringBuilder};
use arrow::datatypes::DataType;

use super::Ontology;
use crate::error::{Error, Result};

/// A column resolved by [`resolve_column`].
#[derive(Debug, Clone)]
pub struct ResolvedColumn {
    /// The term id of every row, `Utf8`; null where the input is null or unresolved. A
    /// dictionary input gives a dictionary with the same keys.
    pub ids: ArrayRef,
    /// The distinct values that resolved to no term, with their row counts, most rows first
    /// (then by value).
    pub unresolved: Vec<Unresolved>,
}

/// A value that names no term of the ontology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    /// The value as it appears in the column.
    pub value: String,
    /// How many rows hold it.
    pub rows: u64,
}

impl ResolvedColumn {
    /// Number of rows whose value is unresolved.
    pub fn unresolved_rows(&self) -> u64 {
        self.unresolved.iter().map(|u| u.rows).sum()
    }
}

/// Resolves every value of a string column (`Utf8`, `LargeUtf8`, `Utf8View` or a dictionary of
/// them, as categorical obs columns are) to a term id with [`Ontology::resolve`]: ids, exact
/// labels and exact synonyms resolve, anything else is listed in
/// [`ResolvedColumn::unresolved`] and left null, never guessed. `name` names the column in
/// errors.
///
/// Errors when a value names several terms (the error names the column, the value and the
/// ids), and when the column does not hold strings.
pub fn resolve_column(
    ontology: &Ontology,
    column: &dyn Array,
    name: &str,
) -> Result<ResolvedColumn> {
    let context = |e: Error| {
        Error::new(e.kind(), format!("column `{name}`: {}", e.message()))
            .with_path(ontology.source())
    };
    if let Some(dict) = column.as_any_dictionary_opt() {
        let values = strings(dict.values().as_ref(), name)?;
        let ids = resolve_distinct(ontology, &values).map_err(context)?;
        // Rows per dictionary entry, counting only rows that use it.
        let mut rows = vec![0u64; values.len()];
        let keys = dict.keys();
        for (row, &k) in dict.normalized_keys().iter().enumerate() {
            if keys.is_valid(row) && k < rows.len() {
                rows[k] += 1;
            }
        }
        let mut unresolved: HashMap<&str, u64> = HashMap::new();
        for (k, id) in ids.iter().enumerate() {
            if id.is_none() && values.is_valid(k) && rows[k] > 0 {
                *unresolved.entry(values.value(k)).or_default() += rows[k];
            }
        }
        let new_values: StringArray = ids.into_iter().collect();
        return Ok(ResolvedColumn {
            ids: dict.with_values(Arc::new(new_values)),
            unresolved: sorted(unresolved),
        });
    }
    let values = strings(column, name)?;
    let mut memo: HashMap<&str, Option<&str>> = HashMap::new();
    let mut unresolved: HashMap<&str, u64> = HashMap::new();
    let mut out = StringBuilder::with_capacity(values.len(), values.len() * 10);
    for v in values.iter() {
        let Some(v) = v else {
            out.append_null();
            continue;
        };
        let id = match memo.get(v) {
            Some(&id) => id,
            None => {
                let id = ontology.resolve(v).map_err(context)?;
                memo.insert(v, id);
                id
            }
        };
        match id {
            Some(id) => out.append_value(id),
            None => {
                *unresolved.entry(v).or_default() += 1;
                out.append_null();
            }
        }
    }
    Ok(ResolvedColumn {
        ids: Arc::new(out.finish()),
        unresolved: sorted(unresolved),
    })
}

/// The term id of each value of `values` (null stays null).
fn resolve_distinct<'a>(
    ontology: &'a Ontology,
    values: &StringArray,
) -> Result<Vec<Option<&'a str>>> {
    values
        .iter()
        .map(|v| match v {
            Some(v) => ontology.resolve(v),
            None => Ok(None),
        })
        .collect()
}

/// The column as plain `Utf8`.
fn strings(column: &dyn Array, name: &str) -> Result<StringArray> {
    match column.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let utf8 = arrow::compute::cast(column, &DataType::Utf8)?;
            Ok(utf8.as_string::<i32>().clone())
        }
        other => Err(Error::invalid_input(format!(
            "column `{name}` holds {other}; an ontology column must hold term ids or labels as strings"
        ))),
    }
}

fn sorted(counts: HashMap<&str, u64>) -> Vec<Unresolved> {
    let mut v: Vec<Unresolved> = counts
        .into_iter()
        .map(|(value, rows)| Unresolved {
            value: value.to_string(),
            rows,
        })
        .collect();
    v.sort_by(|a, b| b.rows.cmp(&a.rows).then_with(|| a.value.cmp(&b.value)));
    v
}
