//! Python keywords to the library's settings ([`SamplerSpec`]) and back: the names are the
//! library's, and so are the defaults and the checks.

use cellarrow::loader::SamplerSpec;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::{Map, Number, Value};

/// The settings the keywords name; a keyword left out, or given as `None`, takes the
/// library's default. An unknown keyword is a `TypeError` naming it and listing the valid
/// ones; a bad value is the library's error (a `ValueError` naming the setting).
pub fn spec_from_kwargs(kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<SamplerSpec> {
    let mut pairs = Map::new();
    if let Some(kwargs) = kwargs {
        let names = SamplerSpec::names();
        for (key, value) in kwargs.iter() {
            let key: String = key.extract()?;
            if !names.contains(&key) {
                return Err(crate::type_error(format!(
                    "Loader() got an unexpected keyword argument {key:?}; the keywords are: corpus, cells, {}",
                    names.join(", ")
                )));
            }
            if value.is_none() {
                continue;
            }
            let json =
                to_json(&value).map_err(|what| crate::type_error(format!("{key}: {what}")))?;
            pairs.insert(key, json);
        }
    }
    SamplerSpec::from_json(pairs).map_err(|e| {
        // serde names a value of the wrong JSON type this way; Python calls that a TypeError.
        if e.to_string().contains("invalid type") {
            crate::type_error(e.to_string())
        } else {
            crate::to_py(e)
        }
    })
}

/// A Python value as JSON: bools, integers (also numpy's), floats, strings, paths, and lists
/// or tuples of them.
fn to_json(v: &Bound<'_, PyAny>) -> Result<Value, String> {
    if v.is_instance_of::<PyBool>() {
        return Ok(Value::Bool(v.extract::<bool>().map_err(|e| e.to_string())?));
    }
    if v.is_instance_of::<PyInt>()
        || (!v.is_instance_of::<PyFloat>() && v.hasattr("__index__").unwrap_or(false))
    {
        if let Ok(i) = v.extract::<i64>() {
            return Ok(Value::from(i));
        }
        return v
            .extract::<u64>()
            .map(Value::from)
            .map_err(|_| format!("{v} is out of range"));
    }
    if v.is_instance_of::<PyFloat>() {
        let f: f64 = v.extract::<f64>().map_err(|e| e.to_string())?;
        return Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| format!("{f} is not a finite number"));
    }
    if v.is_instance_of::<PyString>() {
        return Ok(Value::String(
            v.extract::<String>().map_err(|e| e.to_string())?,
        ));
    }
    if v.is_instance_of::<PyList>() || v.is_instance_of::<PyTuple>() {
        return v
            .try_iter()
            .map_err(|e| e.to_string())?
            .map(|item| to_json(&item.map_err(|e| e.to_string())?))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array);
    }
    if v.hasattr("__fspath__").unwrap_or(false) {
        let path = v
            .extract::<std::path::PathBuf>()
            .map_err(|e| e.to_string())?;
        return Ok(Value::String(path.to_string_lossy().into_owned()));
    }
    Err(format!(
        "unsupported value of type {}",
        v.get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default()
    ))
}

/// Every setting and its value, as a dict (for `repr` and logs).
pub fn spec_to_dict<'py>(py: Python<'py>, spec: &SamplerSpec) -> PyResult<Bound<'py, PyAny>> {
    json_to_py(py, &spec.to_json())
}

/// A JSON value as the Python value `json.loads` makes of it.
pub fn json_to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    py.import("json")?
        .call_method1("loads", (value.to_string(),))
}
