//! The JSON files of the `cellxgene-ontology-guide` package: one object mapping each term id
//! to `{"label", "synonyms", "deprecated", "ancestors": {id: distance}, ...}` (other keys, such
//! as `description` and `replaced_by`, are skipped).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::{parse_error, Ontology, Parsed, Term};
use crate::error::Result;

#[derive(Deserialize)]
struct JsonTerm {
    #[serde(default)]
    ancestors: BTreeMap<String, u32>,
    #[serde(default)]
    label: String,
    #[serde(default)]
    synonyms: Vec<String>,
    #[serde(default)]
    deprecated: bool,
}

/// Parses uncompressed JSON bytes; `source` names the file in errors and gives the name.
pub(crate) fn parse(bytes: &[u8], source: &Path) -> Result<Ontology> {
    let map: BTreeMap<String, JsonTerm> = serde_json::from_slice(bytes).map_err(|e| {
        let head = &bytes[..bytes.len().min(256)];
        let hint = if String::from_utf8_lossy(head).contains("\"graphs\"") {
            " (this looks like OBO Graphs JSON, which is not read: give the .obo file)"
        } else {
            ""
        };
        parse_error(
            source,
            format!(
                "expected a cellxgene ontology JSON object mapping term ids to \
                 {{label, synonyms, deprecated, ancestors}}{hint}: {e}"
            ),
        )
    })?;
    if map.is_empty() {
        return Err(parse_error(
            source,
            "no terms: expected a cellxgene ontology JSON object mapping term ids to terms",
        ));
    }
    let (name, version) = name_and_version(source);
    let mut terms = Vec::with_capacity(map.len());
    let mut given = Vec::with_capacity(map.len());
    for (id, t) in map {
        let mut parents: Vec<String> = t
            .ancestors
            .iter()
            .filter(|(_, &d)| d == 1)
            .map(|(a, _)| a.clone())
            .collect();
        parents.sort_unstable();
        given.push(t.ancestors.into_iter().collect());
        terms.push(Term {
            id,
            label: t.label,
            synonyms: t.synonyms,
            parents,
            deprecated: t.deprecated,
        });
    }
    Ontology::build(
        Parsed {
            name,
            version,
            terms,
            given: Some(given),
        },
        source,
    )
}

/// `CL-ontology-v2026-03-26.json.zst` -> (`CL`, `v2026-03-26`); otherwise the file stem.
pub(crate) fn name_and_version(path: &Path) -> (String, Option<String>) {
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = file
        .strip_suffix(".zst")
        .unwrap_or(&file)
        .strip_suffix(".json")
        .unwrap_or(file.strip_suffix(".zst").unwrap_or(&file));
    match stem.split_once("-ontology-") {
        Some((name, version)) if !name.is_empty() && !version.is_empty() => {
            (name.to_string(), Some(version.to_string()))
        }
        _ => (stem.to_string(), None),
    }
}
