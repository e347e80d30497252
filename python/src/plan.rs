//! Python keyword arguments to the library's sampler and batch settings.

use cellarrow::loader::DenseGenes;
use cellarrow::sample::{LabelMode, ShardPolicy};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

pub fn parse_policy(policy: &str) -> PyResult<ShardPolicy> {
    match policy.replace('-', "_").as_str() {
        "even" => Ok(ShardPolicy::Even),
        "drop_last" => Ok(ShardPolicy::DropLast),
        "pad" => Ok(ShardPolicy::Pad),
        _ => Err(PyValueError::new_err(format!(
            "unknown shard policy {policy:?}; expected 'even', 'drop_last' or 'pad'"
        ))),
    }
}

/// `dense=`: `"all"`, or a list of gene names, or a list of gene ids (not mixed).
pub fn dense_genes(list: Vec<Bound<'_, PyAny>>) -> PyResult<DenseGenes> {
    if list.len() == 1 {
        if let Ok(s) = list[0].extract::<String>() {
            if s == "all" {
                return Ok(DenseGenes::All);
            }
        }
    }
    if list.iter().all(|g| g.extract::<String>().is_ok()) {
        return Ok(DenseGenes::Names(
            list.iter()
                .map(|g| g.extract::<String>())
                .collect::<PyResult<_>>()?,
        ));
    }
    match list
        .iter()
        .map(|g| g.extract::<u32>())
        .collect::<PyResult<Vec<u32>>>()
    {
        Ok(ids) => Ok(DenseGenes::Ids(ids)),
        Err(_) => Err(PyTypeError::new_err(
            "dense: give \"all\", a list of gene names, or a list of gene ids (not mixed)",
        )),
    }
}

/// `label_mode=`: `"none"`, `"class_balanced"` or `"stratified"`.
pub fn parse_label_mode(mode: &str) -> PyResult<LabelMode> {
    match mode.replace('-', "_").as_str() {
        "none" => Ok(LabelMode::None),
        "class_balanced" => Ok(LabelMode::ClassBalanced),
        "stratified" => Ok(LabelMode::Stratified),
        other => Err(PyValueError::new_err(format!(
            "unknown label_mode {other:?}; expected 'none', 'class_balanced' or 'stratified'"
        ))),
    }
}
