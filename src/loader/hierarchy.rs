//! Labels read through an ontology, for training over a hierarchy: the classes of a
//! class-balanced random sampler ([`SamplerSpec::balance`](super::SamplerSpec::balance)) and
//! the multi-hot ancestor matrix a batch can carry
//! ([`SamplerSpec::multi_hot`](super::SamplerSpec::multi_hot)).
//!
//! # Values
//! The label column is an obs column of term ids, labels or exact synonyms (categorical or
//! plain strings; other types are compared as their text). With an ontology, each distinct
//! value is resolved by [`Ontology::resolve`]: the id, else the exact label, else an exact
//! synonym. A value of a cohort cell that names no term is an error listing every such value
//! with its cell count, at the time the loader is made; nothing is guessed, and `where` can
//! leave those cells out. A value that names several terms is the ontology's error.
//!
//! # Classes of the balanced sampler
//! A cell's class is its label:
//! - without an ontology: the value itself;
//! - with an ontology and no cut: the value's term (an id, a label and a synonym of one term
//!   are one class);
//! - cut at `level`: the term's ancestor at that depth ([`Ontology::cut_at_depth`]). A label
//!   already at or above the level (depth `<= level`) is its own class: those above it are
//!   counted in [`BalanceReport::own_label`];
//! - cut to `balance_terms`: the most specific chosen term the label is or lies under
//!   ([`Ontology::cut_to_terms`]). A cell under none of them has no class and is left out,
//!   counted in [`BalanceReport::left_out_outside`]; a label under two chosen terms, neither
//!   under the other, is an error naming them.
//!
//! Cells with a null label are left out ([`BalanceReport::left_out_null`]). Every class gets
//! the same total probability: a cell's weight is `1 / (cells of its class in the cohort)`.
//! An epoch is as many independent weighted draws (with replacement) as the cohort has cells
//! with a class, made by [`RandomCells::weighted`]: each draw is a pure function of (seed,
//! epoch, position), so shards and resumed streams are exactly the single stream's.
//!
//! # Multi-hot ancestors
//! Column `j` of a cell's row is 1 when the cell's term is term `j` of the chosen set or lies
//! under it ([`Ontology::is_a`]: `is_a` and `part_of`), else 0; a null label gives a row of
//! zeros. The set is `multi_hot_terms` in the order given, or every term that some cell of the
//! corpus has as its label or an ancestor, at depth `<= multi_hot_level` when given, ordered
//! by depth, then id. The batch column is [`MULTI_HOT_COLUMN`], a `FixedSizeList<UInt8, n>`,
//! and its field metadata [`TERMS_METADATA`] holds the term ids in column order as a JSON list.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, FixedSizeListArray, UInt8Array};
use arrow::datatypes::{
    DataType, Field, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type, UInt64Type,
    UInt8Type,
};
use serde::{Deserialize, Serialize};

use crate::corpus::Corpus;
use crate::error::{Error, Result};
use crate::ontology::Ontology;
use crate::sample::{Cohort, RandomCells};

/// The name of the multi-hot column of a batch.
pub const MULTI_HOT_COLUMN: &str = "multi_hot";

/// The field metadata key of the multi-hot column: its term ids in column order, as a JSON
/// list, so that a stream written by `cellarrow sample` says what its columns mean.
pub const TERMS_METADATA: &str = "cellarrow.terms";

/// Marks a value or a cell without a class.
const NO_CLASS: u32 = u32::MAX;

/// Terms as given: a file, or the list itself. Each entry is a term id, label or exact
/// synonym, resolved like a label value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TermList {
    /// A file of one term per line. Blank lines and lines starting with `#` are skipped, and
    /// so is anything after ` ! ` (OBO's comment mark: `CL:0000236 ! B cell`).
    File(PathBuf),
    /// The terms themselves.
    List(Vec<String>),
}

impl TermList {
    /// The entries, trimmed, in order; an empty list is an error (naming the file).
    pub fn entries(&self) -> Result<Vec<String>> {
        let entries: Vec<String> = match self {
            TermList::File(path) => std::fs::read_to_string(path)
                .map_err(|e| Error::io(path, "reading the term list", e))?
                .lines()
                .map(|l| l.split(" ! ").next().unwrap_or("").trim())
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string)
                .collect(),
            TermList::List(list) => list.iter().map(|s| s.trim().to_string()).collect(),
        };
        if entries.is_empty() {
            let e = Error::invalid_input("the term list is empty");
            return Err(match self.path() {
                Some(p) => e.with_path(p),
                None => e,
            });
        }
        Ok(entries)
    }

    fn path(&self) -> Option<&Path> {
        match self {
            TermList::File(p) => Some(p),
            TermList::List(_) => None,
        }
    }

    /// The terms the entries name, in order: an error lists the entries that name no term, or
    /// names two entries that name one term. `setting` names the list in errors.
    fn resolve(&self, ontology: &Ontology, setting: &str) -> Result<Vec<u32>> {
        let entries = self.entries()?;
        let with_path = |e: Error| match self.path() {
            Some(p) => e.with_path(p),
            None => e,
        };
        let mut terms = Vec::with_capacity(entries.len());
        let mut first: HashMap<u32, usize> = HashMap::new();
        let mut missing = Vec::new();
        for (k, entry) in entries.iter().enumerate() {
            match ontology.resolve_index(entry)? {
                None => missing.push(format!("'{entry}'")),
                Some(t) => match first.insert(t, k) {
                    Some(j) => {
                        return Err(with_path(Error::invalid_input(format!(
                            "{setting}: entries {} ('{}') and {} ('{entry}') name the same term {}",
                            j + 1,
                            entries[j],
                            k + 1,
                            ontology.terms()[t as usize].id
                        ))))
                    }
                    None => terms.push(t),
                },
            }
        }
        if !missing.is_empty() {
            return Err(with_path(Error::invalid_input(format!(
                "{setting}: {} of {} entries name no term of {} (an id, label or exact synonym): {}",
                missing.len(),
                entries.len(),
                ontology_name(ontology),
                missing.join(", ")
            ))));
        }
        Ok(terms)
    }
}

/// `CL v2026-03-26`, or the name alone.
fn ontology_name(o: &Ontology) -> String {
    match o.version() {
        Some(v) => format!("{} {v}", o.name()),
        None => o.name().to_string(),
    }
}

/// An obs column of labels: its distinct values and each cell's value, read from the mapped
/// column with no per-cell copy.
pub(crate) struct LabelColumn {
    name: String,
    /// Distinct values, as text.
    values: Vec<String>,
    rows: Rows,
}

enum Rows {
    /// A categorical column: its keys, and the value of each dictionary key (`None` for a null
    /// dictionary entry).
    Dict {
        keys: ArrayRef,
        key_value: Vec<Option<u32>>,
    },
    /// Plain text (other types cast to it), and the value of each text.
    Text {
        text: ArrayRef,
        index: HashMap<String, u32>,
    },
}

/// Key `i` of a dictionary's keys, whichever integer type they have.
fn key_at(keys: &dyn Array, i: usize) -> Option<usize> {
    use arrow::datatypes::ArrowNativeType;
    if keys.is_null(i) {
        return None;
    }
    macro_rules! key {
        ($($t:ty),*) => {
            $(if let Some(a) = keys.as_primitive_opt::<$t>() {
                return Some(a.value(i).as_usize());
            })*
        };
    }
    key!(Int32Type, Int8Type, Int16Type, Int64Type, UInt8Type, UInt16Type, UInt32Type, UInt64Type);
    None
}

impl LabelColumn {
    /// Column `name` of obs (`setting` names what asked for it in errors).
    pub(crate) fn read(corpus: &Corpus, name: &str, setting: &str) -> Result<LabelColumn> {
        let schema = corpus.table_schema("obs")?;
        if schema.column_with_name(name).is_none() {
            let known: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            return Err(Error::invalid_input(format!(
                "{setting}: obs has no column {name:?}; its columns are {}",
                known.join(", ")
            ))
            .with_path(
                corpus
                    .table_files("obs")
                    .pop()
                    .unwrap_or_else(|| corpus.table_path("obs")),
            ));
        }
        let column = corpus
            .obs_columns(&[name])?
            .pop()
            .expect("one column asked, one read");
        Self::from_array(name, column)
    }

    fn from_array(name: &str, column: ArrayRef) -> Result<LabelColumn> {
        let mut values: Vec<String> = Vec::new();
        let mut index: HashMap<String, u32> = HashMap::new();
        let mut intern = |v: &str, values: &mut Vec<String>| -> u32 {
            *index.entry(v.to_string()).or_insert_with(|| {
                values.push(v.to_string());
                (values.len() - 1) as u32
            })
        };
        if let Some(dict) = column.as_any_dictionary_opt() {
            let text = arrow::compute::cast(dict.values(), &DataType::Utf8)?;
            let text = text.as_string::<i32>();
            let key_value = (0..text.len())
                .map(|k| text.is_valid(k).then(|| intern(text.value(k), &mut values)))
                .collect();
            let keys = arrow::array::make_array(dict.keys().to_data());
            return Ok(LabelColumn {
                name: name.to_string(),
                values,
                rows: Rows::Dict { keys, key_value },
            });
        }
        let text = match column.data_type() {
            DataType::Utf8 => column,
            _ => arrow::compute::cast(&column, &DataType::Utf8)?,
        };
        for v in text.as_string::<i32>().iter().flatten() {
            intern(v, &mut values);
        }
        Ok(LabelColumn {
            name: name.to_string(),
            values,
            rows: Rows::Text { text, index },
        })
    }

    /// The value of cell `cell` (an index into the distinct values), `None` for a null.
    fn value_of(&self, cell: u64) -> Option<u32> {
        let i = cell as usize;
        match &self.rows {
            Rows::Dict { keys, key_value } => {
                key_at(keys.as_ref(), i).and_then(|k| key_value.get(k).copied().flatten())
            }
            Rows::Text { text, index } => {
                let text = text.as_string::<i32>();
                text.is_valid(i)
                    .then(|| index.get(text.value(i)).copied())
                    .flatten()
            }
        }
    }

    /// Cells per distinct value over `cells`, and the cells with a null label.
    fn counts(&self, cells: impl Iterator<Item = u64>) -> (Vec<u64>, u64) {
        let mut counts = vec![0u64; self.values.len()];
        let mut nulls = 0;
        for c in cells {
            match self.value_of(c) {
                Some(v) => counts[v as usize] += 1,
                None => nulls += 1,
            }
        }
        (counts, nulls)
    }

    /// The term of each value that has cells (`counts`); with `strict`, values that name no
    /// term are an error that lists them with their cell counts, else they stay `None`.
    fn resolve(
        &self,
        ontology: &Ontology,
        counts: &[u64],
        setting: &str,
        strict: bool,
    ) -> Result<Vec<Option<u32>>> {
        let mut terms = vec![None; self.values.len()];
        let mut unresolved: Vec<(&str, u64)> = Vec::new();
        for (v, value) in self.values.iter().enumerate() {
            if counts[v] == 0 {
                continue;
            }
            let t = ontology.resolve_index(value).map_err(|e| {
                Error::new(
                    e.kind(),
                    format!("{setting}: obs column `{}`: {}", self.name, e.message()),
                )
                .with_path(ontology.source())
            })?;
            match t {
                Some(t) => terms[v] = Some(t),
                None => unresolved.push((value, counts[v])),
            }
        }
        if strict && !unresolved.is_empty() {
            unresolved.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            let n: u64 = unresolved.iter().map(|u| u.1).sum();
            let list: Vec<String> = unresolved
                .iter()
                .map(|(v, c)| format!("'{v}' ({c} cells)"))
                .collect();
            return Err(Error::invalid_input(format!(
                "{setting}: {} values of obs column `{}` ({n} cells) name no term of {} (an id, \
                 label or exact synonym; nothing is guessed): {}; leave those cells out with \
                 `where`",
                unresolved.len(),
                self.name,
                ontology_name(ontology),
                list.join(", ")
            ))
            .with_path(ontology.source()));
        }
        Ok(terms)
    }
}

/// Checks that every label of `cohort`'s cells in column `column` names a term of
/// `ontology` (the rule of both features: a value that does not resolve is an error at the
/// time the loader is made, not at the batch that meets it).
pub(crate) fn check_labels(
    corpus: &Corpus,
    cohort: &Cohort,
    column: &str,
    ontology: &Ontology,
    setting: &str,
) -> Result<()> {
    let labels = LabelColumn::read(corpus, column, setting)?;
    let (counts, _) = labels.counts(cohort.iter());
    labels.resolve(ontology, &counts, setting, true).map(|_| ())
}

/// One class of a balanced sampler.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassCount {
    /// The class: a term id, or the label value itself without an ontology.
    pub class: String,
    /// The term's label (empty without an ontology).
    pub label: String,
    /// Cells of the cohort in the class.
    pub cells: u64,
    /// The draw weight of each of its cells, `1 / cells`.
    pub weight: f64,
    /// The probability that a draw falls in the class: `1 / classes`.
    pub probability: f64,
}

/// What a balanced sampler draws over: its classes with their cell counts and weights, the
/// cells left out, and the effective number of classes. Printed by `cellarrow sample`
/// (`Display`), a dict in Python (`Loader.balance`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BalanceReport {
    /// The label column.
    pub column: String,
    /// The ontology (`CL v2026-03-26`), if any.
    pub ontology: Option<String>,
    /// How labels become classes: `values` (no ontology), `terms` (each label's term), `level
    /// N` or `N chosen terms`.
    pub cut: String,
    /// The classes, by class id.
    pub classes: Vec<ClassCount>,
    /// Cohort cells with a class: the cells drawn from.
    pub cells: u64,
    /// Draws per epoch (the epoch length).
    pub draws: u64,
    /// Cells whose label lies above `level` and is their class.
    pub own_label: u64,
    /// Cohort cells left out for a null label.
    pub left_out_null: u64,
    /// Cohort cells left out for lying under none of the chosen terms.
    pub left_out_outside: u64,
    /// The effective number of classes a draw falls in, `exp` of the entropy of the class
    /// probabilities: the number of classes, each being equally likely.
    pub effective_classes: f64,
    /// The same for uniform draws over the cells (the classes' shares of the cohort): what
    /// the cohort offers without balancing.
    pub effective_classes_unbalanced: f64,
}

impl std::fmt::Display for BalanceReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let over = match &self.ontology {
            Some(o) => format!("{o}, {}", self.cut),
            None => self.cut.clone(),
        };
        writeln!(
            f,
            "obs column `{}` ({over}): {} classes over {} cells, {} draws per epoch; effective \
             number of classes {:.2} ({:.2} without balancing)",
            self.column,
            self.classes.len(),
            self.cells,
            self.draws,
            self.effective_classes,
            self.effective_classes_unbalanced
        )?;
        let w = self
            .classes
            .iter()
            .map(|c| c.class.chars().count())
            .max()
            .unwrap_or(5)
            .max(5);
        writeln!(
            f,
            "  {:<w$}  {:>8}  {:>12}  {:>11}  label",
            "class", "cells", "cell weight", "probability"
        )?;
        for c in &self.classes {
            writeln!(
                f,
                "  {:<w$}  {:>8}  {:>12.6e}  {:>11.4}  {}",
                c.class, c.cells, c.weight, c.probability, c.label
            )?;
        }
        if let Some(level) = self.cut.strip_prefix("level ") {
            writeln!(
                f,
                "  {} cells labelled above level {level} are their own class",
                self.own_label
            )?;
        }
        if self.left_out_outside > 0 {
            writeln!(
                f,
                "  {} cells under none of the chosen terms left out",
                self.left_out_outside
            )?;
        }
        write!(f, "  {} cells with no label left out", self.left_out_null)
    }
}

/// The classes of a balanced sampler over one cohort (see the [module docs](self)): the
/// report, and each cell's class for counting what a stream served.
#[derive(Debug, Clone)]
pub struct Balance {
    report: BalanceReport,
    /// The cells with a class, which the sampler draws from.
    cohort: Cohort,
    /// The class of each of them (an index into the report's classes).
    classes: Vec<u32>,
}

impl Balance {
    /// The classes of `cohort`'s cells by obs column `column`, through `ontology` when given,
    /// cut at `level` or to `terms` (which need the ontology), and the sampler drawing
    /// `seed`'s weighted cells over them.
    pub fn new(
        corpus: &Corpus,
        cohort: &Cohort,
        column: &str,
        ontology: Option<&Ontology>,
        level: Option<u32>,
        terms: Option<&TermList>,
        seed: u64,
    ) -> Result<(RandomCells, Balance)> {
        const SETTING: &str = "balance";
        let labels = LabelColumn::read(corpus, column, SETTING)?;
        let (counts, nulls) = labels.counts(cohort.iter());
        let terms_of = match ontology {
            Some(o) => Some(labels.resolve(o, &counts, SETTING, true)?),
            None => None,
        };
        // The class key of each value: a term index with an ontology, else the value index.
        let (keys, cut): (Vec<Option<u32>>, String) = match (ontology, &terms_of) {
            (Some(o), Some(terms_of)) => match (level, terms) {
                (Some(d), _) => (
                    terms_of
                        .iter()
                        .map(|t| t.map(|t| o.cut_at_depth_index(t, d)))
                        .collect(),
                    format!("level {d}"),
                ),
                (None, Some(list)) => {
                    let chosen = list.resolve(o, "balance_terms")?;
                    let ids: Vec<&str> = chosen
                        .iter()
                        .map(|&t| o.terms()[t as usize].id.as_str())
                        .collect();
                    let set = o.term_set(&ids)?;
                    let keys = terms_of
                        .iter()
                        .map(|t| match t {
                            Some(t) => o.cut_to_terms_index(*t, &set),
                            None => Ok(None),
                        })
                        .collect::<Result<_>>()
                        .map_err(|e| e.with_path(o.source()))?;
                    (keys, format!("{} chosen terms", chosen.len()))
                }
                (None, None) => (terms_of.clone(), "terms".into()),
            },
            _ => (
                (0..labels.values.len() as u32).map(Some).collect(),
                "values".into(),
            ),
        };
        let own_label = match (ontology, &terms_of, level) {
            (Some(o), Some(terms_of), Some(d)) => terms_of
                .iter()
                .zip(&counts)
                .filter_map(|(t, &n)| t.filter(|&t| o.depth_index(t) < d).map(|_| n))
                .sum(),
            _ => 0,
        };
        // Classes by id, for a report in a stable order.
        let name_of = |key: u32| -> (String, String) {
            match ontology {
                Some(o) => {
                    let t = &o.terms()[key as usize];
                    (t.id.clone(), t.label.clone())
                }
                None => (labels.values[key as usize].clone(), String::new()),
            }
        };
        let mut class_keys: Vec<u32> = keys
            .iter()
            .zip(&counts)
            .filter(|(_, &n)| n > 0)
            .filter_map(|(k, _)| *k)
            .collect();
        class_keys.sort_unstable();
        class_keys.dedup();
        let mut named: Vec<(String, String, u32)> = class_keys
            .iter()
            .map(|&k| {
                let (id, label) = name_of(k);
                (id, label, k)
            })
            .collect();
        named.sort();
        let code_of_key: HashMap<u32, u32> = named
            .iter()
            .enumerate()
            .map(|(code, (_, _, k))| (*k, code as u32))
            .collect();
        let value_class: Vec<u32> = keys
            .iter()
            .map(|k| {
                k.map_or(NO_CLASS, |k| {
                    code_of_key.get(&k).copied().unwrap_or(NO_CLASS)
                })
            })
            .collect();
        let mut sizes = vec![0u64; named.len()];
        let mut kept = Vec::new();
        let mut classes = Vec::new();
        let mut outside = 0u64;
        for cell in cohort.iter() {
            let Some(v) = labels.value_of(cell) else {
                continue;
            };
            match value_class[v as usize] {
                NO_CLASS => outside += 1,
                c => {
                    sizes[c as usize] += 1;
                    kept.push(cell);
                    classes.push(c);
                }
            }
        }
        if kept.is_empty() {
            return Err(Error::invalid_input(format!(
                "balance: no cell of the cohort has a class: {nulls} have no label in obs \
                 column `{column}`, {outside} lie under none of the chosen terms, of {} cells",
                cohort.len()
            )));
        }
        let k = named.len() as f64;
        let total = kept.len() as f64;
        let entropy_unbalanced: f64 = sizes
            .iter()
            .map(|&n| n as f64 / total)
            .map(|p| -p * p.ln())
            .sum();
        let report = BalanceReport {
            column: column.to_string(),
            ontology: ontology.map(ontology_name),
            cut,
            classes: named
                .iter()
                .zip(&sizes)
                .map(|((id, label, _), &n)| ClassCount {
                    class: id.clone(),
                    label: label.clone(),
                    cells: n,
                    weight: 1.0 / n as f64,
                    probability: 1.0 / k,
                })
                .collect(),
            cells: kept.len() as u64,
            draws: kept.len() as u64,
            own_label,
            left_out_null: nulls,
            left_out_outside: outside,
            effective_classes: k,
            effective_classes_unbalanced: entropy_unbalanced.exp(),
        };
        let weights: Vec<f64> = classes
            .iter()
            .map(|&c| 1.0 / sizes[c as usize] as f64)
            .collect();
        let cohort = Cohort::from_cells(kept);
        let sampler = RandomCells::weighted(cohort.clone(), &weights, seed, report.draws)?;
        Ok((
            sampler,
            Balance {
                report,
                cohort,
                classes,
            },
        ))
    }

    /// What the sampler draws over.
    pub fn report(&self) -> &BalanceReport {
        &self.report
    }

    /// The class of `cell` (an index into [`BalanceReport::classes`]), `None` for a cell the
    /// sampler never draws.
    pub fn class_of(&self, cell: u64) -> Option<usize> {
        let r = self.cohort.range(cell, cell + 1);
        (r.end > r.start).then(|| self.classes[r.start as usize] as usize)
    }
}

/// Which terms the multi-hot columns stand for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MultiHotTerms {
    /// Every term some cell of the corpus has as its label or an ancestor.
    Reached,
    /// Those of depth `<= level`.
    Level(u32),
    /// These terms, in this order.
    List(TermList),
}

/// The multi-hot ancestor columns of a batch: the obs label column, the ontology (a name or
/// a file, as [`crate::ontology::locate`] takes it) and the terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultiHotOptions {
    /// The obs column of labels.
    pub column: String,
    /// The ontology, by name or file.
    pub ontology: String,
    /// The terms, one column each.
    pub terms: MultiHotTerms,
}

/// The multi-hot rows of every label value of a corpus over a chosen term set (see the
/// [module docs](self)), gathered per cell into the [`MULTI_HOT_COLUMN`] of a batch.
pub struct MultiHot {
    labels: LabelColumn,
    ontology: Arc<Ontology>,
    ids: Vec<String>,
    term_labels: Vec<String>,
    /// One row of `ids.len()` bytes per label value (zeros for a value that names no term).
    rows: Vec<u8>,
    /// Whether each value names a term.
    resolved: Vec<bool>,
}

impl std::fmt::Debug for MultiHot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultiHot")
            .field("column", &self.labels.name)
            .field("ontology", &self.ontology)
            .field("terms", &self.ids)
            .finish()
    }
}

impl MultiHot {
    /// Loads the ontology ([`crate::ontology::shared`]) and the label column, and computes the
    /// row of every value of the column. Values that name no term get no row: a batch that
    /// holds such a cell is an error (the loader's settings check the cohort's values first).
    pub fn new(corpus: &Corpus, options: &MultiHotOptions) -> Result<MultiHot> {
        const SETTING: &str = "multi_hot";
        let ontology = crate::ontology::shared(&options.ontology)?;
        let o = ontology.as_ref();
        let labels = LabelColumn::read(corpus, &options.column, SETTING)?;
        let (counts, _) = labels.counts(0..corpus.n_cells());
        let terms_of = labels.resolve(o, &counts, SETTING, false)?;
        let chosen: Vec<u32> = match &options.terms {
            MultiHotTerms::List(list) => list.resolve(o, "multi_hot_terms")?,
            MultiHotTerms::Reached | MultiHotTerms::Level(_) => {
                let max_depth = match options.terms {
                    MultiHotTerms::Level(d) => d,
                    _ => u32::MAX,
                };
                let mut reached: Vec<u32> = Vec::new();
                for &t in terms_of.iter().flatten() {
                    reached.push(t);
                    let id = &o.terms()[t as usize].id;
                    for (a, _) in o.ancestors(id).unwrap_or_default() {
                        reached.extend(o.index(a));
                    }
                }
                reached.sort_unstable();
                reached.dedup();
                reached.retain(|&t| o.depth_index(t) <= max_depth);
                reached.sort_by(|&a, &b| {
                    o.depth_index(a)
                        .cmp(&o.depth_index(b))
                        .then_with(|| o.terms()[a as usize].id.cmp(&o.terms()[b as usize].id))
                });
                reached
            }
        };
        if chosen.is_empty() {
            return Err(Error::invalid_input(format!(
                "multi_hot: no terms: no cell of the corpus has a label in obs column `{}`",
                options.column
            )));
        }
        let width = chosen.len();
        let mut rows = vec![0u8; terms_of.len() * width];
        for (v, t) in terms_of.iter().enumerate() {
            if let Some(t) = *t {
                for (j, &s) in chosen.iter().enumerate() {
                    rows[v * width + j] = u8::from(o.is_a_index(t, s));
                }
            }
        }
        // Values no cell holds are never gathered: they need no row.
        let resolved = terms_of.iter().map(Option::is_some).collect();
        let ids = chosen
            .iter()
            .map(|&t| o.terms()[t as usize].id.clone())
            .collect();
        let term_labels = chosen
            .iter()
            .map(|&t| o.terms()[t as usize].label.clone())
            .collect();
        Ok(MultiHot {
            labels,
            ontology,
            ids,
            term_labels,
            rows,
            resolved,
        })
    }

    /// The term ids, in column order.
    pub fn terms(&self) -> &[String] {
        &self.ids
    }

    /// The terms' labels, in column order.
    pub fn labels(&self) -> &[String] {
        &self.term_labels
    }

    /// The obs column of labels.
    pub fn column(&self) -> &str {
        &self.labels.name
    }

    /// The ontology.
    pub fn ontology(&self) -> &Arc<Ontology> {
        &self.ontology
    }

    /// The batch field: `FixedSizeList<UInt8, terms>`, with the term ids in its metadata.
    pub(crate) fn field(&self) -> Field {
        let item = Arc::new(Field::new("item", DataType::UInt8, false));
        let ids = serde_json::to_string(&self.ids).expect("strings serialise");
        Field::new(
            MULTI_HOT_COLUMN,
            DataType::FixedSizeList(item, self.ids.len() as i32),
            false,
        )
        .with_metadata(HashMap::from([(TERMS_METADATA.to_string(), ids)]))
    }

    /// The rows of `cells`, as the batch column.
    pub(crate) fn gather(&self, cells: &[u64]) -> Result<ArrayRef> {
        let width = self.ids.len();
        let mut out = vec![0u8; cells.len() * width];
        for (row, &cell) in out.chunks_exact_mut(width).zip(cells) {
            let Some(v) = self.labels.value_of(cell) else {
                continue;
            };
            let v = v as usize;
            if !self.resolved[v] {
                return Err(Error::invalid_input(format!(
                    "multi_hot: cell {cell}: obs column `{}` holds '{}', which names no term of {}",
                    self.labels.name,
                    self.labels.values[v],
                    ontology_name(&self.ontology)
                )));
            }
            row.copy_from_slice(&self.rows[v * width..(v + 1) * width]);
        }
        let item = Arc::new(Field::new("item", DataType::UInt8, false));
        let values = Arc::new(UInt8Array::from(out));
        Ok(Arc::new(FixedSizeListArray::try_new(
            item,
            width as i32,
            values,
            None,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{DictionaryArray, StringArray};

    fn cl() -> Ontology {
        let obo = "format-version: 1.2\nontology: cl\n\n\
            [Term]\nid: CL:0000000\nname: cell\n\n\
            [Term]\nid: CL:0000542\nname: lymphocyte\nis_a: CL:0000000\n\n\
            [Term]\nid: CL:0000763\nname: myeloid cell\nis_a: CL:0000000\n\n\
            [Term]\nid: CL:0000084\nname: T cell\nsynonym: \"T lymphocyte\" EXACT []\nis_a: CL:0000542\n\n\
            [Term]\nid: CL:0000236\nname: B cell\nis_a: CL:0000542\n";
        Ontology::from_obo_str(obo, "cl.obo", &Default::default()).unwrap()
    }

    #[test]
    fn label_columns_read_dictionaries_and_text_alike() {
        let values = vec![Some("T cell"), None, Some("B cell"), Some("T cell")];
        let dict: DictionaryArray<Int32Type> = values.iter().copied().collect();
        let text = StringArray::from(values.clone());
        for col in [Arc::new(dict) as ArrayRef, Arc::new(text) as ArrayRef] {
            let l = LabelColumn::from_array("ct", col).unwrap();
            let got: Vec<Option<&str>> = (0..4)
                .map(|c| l.value_of(c).map(|v| l.values[v as usize].as_str()))
                .collect();
            assert_eq!(got, values);
            let (counts, nulls) = l.counts(0..4);
            assert_eq!((counts.iter().sum::<u64>(), nulls), (3, 1));
        }
    }

    #[test]
    fn unresolved_values_are_listed_with_their_cells() {
        let o = cl();
        let col: ArrayRef = Arc::new(StringArray::from(vec![
            "T lymphocyte",
            "t cell",
            "blob",
            "blob",
            "CL:0000236",
        ]));
        let l = LabelColumn::from_array("ct", col).unwrap();
        let (counts, _) = l.counts(0..5);
        let e = l.resolve(&o, &counts, "balance", true).unwrap_err();
        let msg = e.to_string();
        for part in ["'blob' (2 cells)", "'t cell' (1 cells)", "`ct`", "2 values"] {
            assert!(msg.contains(part), "{part} missing from {msg}");
        }
        let (counts, _) = l.counts([0u64, 4].into_iter());
        let terms = l.resolve(&o, &counts, "balance", true).unwrap();
        let ids: Vec<Option<&str>> = terms
            .iter()
            .map(|t| t.map(|t| o.terms()[t as usize].id.as_str()))
            .collect();
        assert_eq!(ids, [Some("CL:0000084"), None, None, Some("CL:0000236")]);
    }

    #[test]
    fn term_lists_skip_comments_and_refuse_repeats() {
        let o = cl();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("terms.txt");
        std::fs::write(
            &p,
            "# coarse types\nCL:0000542 ! lymphocyte\n\n  myeloid cell  \n",
        )
        .unwrap();
        let list = TermList::File(p.clone());
        assert_eq!(list.entries().unwrap(), ["CL:0000542", "myeloid cell"]);
        assert_eq!(list.resolve(&o, "t").unwrap().len(), 2);
        let twice = TermList::List(vec!["T cell".into(), "T lymphocyte".into()]);
        let e = twice
            .resolve(&o, "multi_hot_terms")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("entries 1 ('T cell') and 2 ('T lymphocyte')"),
            "{e}"
        );
        let missing = TermList::List(vec!["T cell".into(), "NK".into()]);
        let e = missing
            .resolve(&o, "balance_terms")
            .unwrap_err()
            .to_string();
        assert!(e.contains("'NK'") && e.contains("1 of 2"), "{e}");
        std::fs::write(&p, "# nothing\n").unwrap();
        let e = TermList::File(p.clone()).entries().unwrap_err();
        assert_eq!(e.path(), Some(p.as_path()));
    }
}
