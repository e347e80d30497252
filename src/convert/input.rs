//! The list of inputs: h5ad paths, or an input manifest (JSON or CSV) naming each file's
//! sample id and per-sample metadata.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// One source file and what the corpus records about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSample {
    pub path: PathBuf,
    pub sample_id: String,
    /// Per-sample metadata columns (species, tissue, donor ...), stored in samples.parquet.
    pub metadata: BTreeMap<String, String>,
}

/// Turns the command line's inputs into samples: a single `.json` or `.csv` argument is an
/// input manifest, anything else is a list of h5ad paths whose sample ids are their file stems.
pub fn resolve_inputs(args: &[PathBuf]) -> Result<Vec<InputSample>> {
    if args.is_empty() {
        return Err(Error::invalid_input("no input files given"));
    }
    let is_manifest = |p: &Path| {
        matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("json" | "csv" | "JSON" | "CSV")
        )
    };
    let samples = if args.len() == 1 && is_manifest(&args[0]) {
        read_input_manifest(&args[0])?
    } else {
        if let Some(m) = args.iter().find(|p| is_manifest(p)) {
            return Err(Error::invalid_input(format!(
                "{}: an input manifest must be the only input",
                m.display()
            )));
        }
        args.iter()
            .map(|p| {
                let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
                InputSample {
                    path: p.clone(),
                    sample_id: stem.to_string(),
                    metadata: BTreeMap::new(),
                }
            })
            .collect()
    };
    check_samples(&samples)?;
    Ok(samples)
}

/// Reads an input manifest. JSON: an array of objects, or `{"samples": [...]}`; CSV: a header
/// row. Each record needs `path`; `sample_id` defaults to the file stem; every other field is
/// per-sample metadata. Relative paths are relative to the manifest's folder.
pub fn read_input_manifest(path: &Path) -> Result<Vec<InputSample>> {
    let base = path.parent().unwrap_or(Path::new("."));
    let records: Vec<BTreeMap<String, String>> = match path.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("csv") => read_csv_records(path)?,
        _ => read_json_records(path)?,
    };
    if records.is_empty() {
        return Err(Error::invalid_input("the input manifest lists no samples").with_path(path));
    }
    records
        .into_iter()
        .enumerate()
        .map(|(i, mut rec)| {
            let file = rec
                .remove("path")
                .filter(|p| !p.is_empty())
                .ok_or_else(|| {
                    Error::invalid_input(format!("record {}: missing \"path\"", i + 1))
                        .with_path(path)
                })?;
            let file = PathBuf::from(file);
            let file = if file.is_absolute() {
                file
            } else {
                base.join(file)
            };
            let sample_id = match rec.remove("sample_id") {
                Some(s) if !s.is_empty() => s,
                _ => file
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or_default()
                    .to_string(),
            };
            if !file.is_file() {
                return Err(Error::invalid_input(format!(
                    "record {} (sample {sample_id}): input file {} does not exist",
                    i + 1,
                    file.display()
                ))
                .with_path(path));
            }
            Ok(InputSample {
                path: file,
                sample_id,
                metadata: rec,
            })
        })
        .collect()
}

fn read_json_records(path: &Path) -> Result<Vec<BTreeMap<String, String>>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, "reading", e))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::invalid_input(format!("not valid JSON: {e}")).with_path(path))?;
    let list = match value {
        serde_json::Value::Array(a) => a,
        serde_json::Value::Object(mut o) => match o.remove("samples") {
            Some(serde_json::Value::Array(a)) => a,
            _ => {
                return Err(Error::invalid_input(
                    "expected an array of samples or {\"samples\": [...]}",
                )
                .with_path(path))
            }
        },
        _ => return Err(Error::invalid_input("expected an array of samples").with_path(path)),
    };
    list.into_iter()
        .enumerate()
        .map(|(i, rec)| match rec {
            serde_json::Value::Object(o) => Ok(o
                .into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| {
                    let v = match v {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (k, v)
                })
                .collect()),
            _ => Err(
                Error::invalid_input(format!("record {} is not an object", i + 1)).with_path(path),
            ),
        })
        .collect()
}

fn read_csv_records(path: &Path) -> Result<Vec<BTreeMap<String, String>>> {
    let mut reader = csv::Reader::from_path(path)
        .map_err(|e| Error::invalid_input(format!("cannot read CSV: {e}")).with_path(path))?;
    let headers = reader
        .headers()
        .map_err(|e| {
            Error::invalid_input(format!("cannot read the CSV header: {e}")).with_path(path)
        })?
        .clone();
    let mut out = Vec::new();
    for (i, row) in reader.records().enumerate() {
        let row = row.map_err(|e| {
            Error::invalid_input(format!("CSV line {}: {e}", i + 2)).with_path(path)
        })?;
        out.push(
            headers
                .iter()
                .zip(row.iter())
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                .collect(),
        );
    }
    Ok(out)
}

/// A sample id becomes part of file names and SQL values: keep it short, printable and unable
/// to name another directory.
pub fn check_sample_id(id: &str) -> Result<()> {
    let bad = id.is_empty()
        || id.len() > 200
        || id == "."
        || id == ".."
        || id.contains(['/', '\\'])
        || id.contains("..")
        || id.chars().any(|c| c.is_control());
    if bad {
        return Err(Error::invalid_input(format!(
            "sample id {id:?} is not allowed: use 1 to 200 printable characters without '/', '\\' or '..'"
        )));
    }
    Ok(())
}

fn check_samples(samples: &[InputSample]) -> Result<()> {
    let mut seen = BTreeSet::new();
    for s in samples {
        check_sample_id(&s.sample_id).map_err(|e| e.with_path(&s.path))?;
        if !seen.insert(s.sample_id.as_str()) {
            return Err(Error::invalid_input(format!(
                "two inputs have the sample id {:?}; give each a distinct sample_id in an input manifest",
                s.sample_id
            ))
            .with_path(&s.path));
        }
    }
    Ok(())
}
