//! Ontology columns of a conversion (`--ontology cell_type=CL`): an obs column of labels or ids
//! resolved to term ids through an ontology, written beside it as
//! `cell_type_ontology_term_id` (the name CELLxGENE gives such columns). Ids, exact labels and
//! exact synonyms resolve; other values are listed in the conversion's warnings and left null,
//! never guessed. A column that already holds ids (its name ends in `_ontology_term_id`) is
//! checked the same way and kept as it is.

use std::str::FromStr;
use std::sync::Arc;

use arrow::array::ArrayRef;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::ontology::{locate, resolve_column, Ontology, Unresolved};

/// The suffix of a column of term ids.
pub const ID_SUFFIX: &str = "_ontology_term_id";

/// An obs column declared an ontology column: `COLUMN=ONTOLOGY`, the ontology a name such as
/// `CL` (found as `query --ontology` finds it) or the path of an OBO or ontology JSON file.
///
/// ```
/// let c: cellarrow::convert::OntologyColumn = "cell_type=CL".parse()?;
/// assert_eq!((c.column.as_str(), c.ontology.as_str()), ("cell_type", "CL"));
/// # Ok::<(), cellarrow::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OntologyColumn {
    pub column: String,
    pub ontology: String,
}

impl FromStr for OntologyColumn {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.split_once('=') {
            Some((c, o)) if !c.trim().is_empty() && !o.trim().is_empty() => Ok(OntologyColumn {
                column: c.trim().to_string(),
                ontology: o.trim().to_string(),
            }),
            _ => Err(Error::invalid_input(format!(
                "ontology column `{s}`: expected COLUMN=ONTOLOGY, e.g. cell_type=CL or \
                 tissue=path/to/uberon.obo"
            ))),
        }
    }
}

impl std::fmt::Display for OntologyColumn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.column, self.ontology)
    }
}

/// An ontology column with its ontology loaded, ready for every sample.
#[derive(Debug, Clone)]
pub struct LabelColumn {
    pub column: String,
    /// The column the ids go to (the column itself when it holds ids already).
    pub target: String,
    pub ontology: Arc<Ontology>,
}

/// What one sample's ontology column did not resolve.
#[derive(Debug, Clone)]
pub struct UnresolvedLabels {
    pub column: String,
    pub ontology: String,
    pub values: Vec<Unresolved>,
}

/// Loads the ontologies of `columns` once (one load per distinct ontology argument), checking
/// that no column is declared twice.
pub fn load(columns: &[OntologyColumn]) -> Result<Vec<LabelColumn>> {
    let mut loaded: Vec<(String, Arc<Ontology>)> = Vec::new();
    let mut out: Vec<LabelColumn> = Vec::new();
    for c in columns {
        if out.iter().any(|o| o.column == c.column) {
            return Err(Error::invalid_input(format!(
                "obs column `{}` is declared an ontology column twice",
                c.column
            )));
        }
        let ontology = match loaded.iter().find(|(spec, _)| *spec == c.ontology) {
            Some((_, o)) => o.clone(),
            None => {
                let o = Arc::new(Ontology::load(locate(&c.ontology)?)?);
                loaded.push((c.ontology.clone(), o.clone()));
                o
            }
        };
        let target = if c.column.ends_with(ID_SUFFIX) {
            c.column.clone()
        } else {
            format!("{}{ID_SUFFIX}", c.column)
        };
        out.push(LabelColumn {
            column: c.column.clone(),
            target,
            ontology,
        });
    }
    Ok(out)
}

/// Adds the id column of each of `labels` to one sample's obs `fields` (source columns by
/// name), or checks a column of ids in place; returns what did not resolve. `file` names the
/// sample in errors.
pub fn resolve(
    labels: &[LabelColumn],
    fields: &mut Vec<(String, ArrayRef)>,
    file: &std::path::Path,
) -> Result<Vec<UnresolvedLabels>> {
    let mut out = Vec::new();
    for l in labels {
        let Some((_, col)) = fields.iter().find(|(n, _)| *n == l.column) else {
            return Err(Error::h5ad(
                file,
                "obs",
                format!(
                    "has no column `{}`, declared an ontology column ({}); check the name, or \
                     that --obs-columns keeps it",
                    l.column,
                    l.ontology.name()
                ),
            ));
        };
        let resolved = resolve_column(&l.ontology, col.as_ref(), &l.column)?;
        if l.target != l.column {
            if fields.iter().any(|(n, _)| *n == l.target) {
                return Err(Error::h5ad(
                    file,
                    format!("obs/{}", l.target),
                    format!(
                        "exists already, and is where the ids of ontology column `{}` go; \
                         declare `{}` the ontology column instead",
                        l.column, l.target
                    ),
                ));
            }
            fields.push((l.target.clone(), resolved.ids));
        }
        if !resolved.unresolved.is_empty() {
            out.push(UnresolvedLabels {
                column: l.column.clone(),
                ontology: l.ontology.name().to_string(),
                values: resolved.unresolved,
            });
        }
    }
    Ok(out)
}

/// One warning line for a sample's unresolved values: the column, the ontology, and the
/// values with their cell counts (the first ten).
pub fn warning(sample_id: &str, u: &UnresolvedLabels) -> String {
    let cells: u64 = u.values.iter().map(|v| v.rows).sum();
    let shown: Vec<String> = u
        .values
        .iter()
        .take(10)
        .map(|v| format!("{:?} ({} cells)", v.value, v.rows))
        .collect();
    let more = if u.values.len() > 10 {
        format!(" and {} more", u.values.len() - 10)
    } else {
        String::new()
    };
    format!(
        "{sample_id}: obs column `{}`: {} values ({cells} cells) name no {} term and have no id: {}{more}",
        u.column,
        u.values.len(),
        u.ontology,
        shown.join(", ")
    )
}
