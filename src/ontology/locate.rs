//! From what a user types (`CL`, `uberon`, `my/cl.obo`) to an ontology file.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The environment variable naming a directory of ontology files, e.g. the `data` directory
/// of an installed `cellxgene-ontology-guide` package
/// (`python -c "import cellxgene_ontology_guide, os; print(os.path.dirname(cellxgene_ontology_guide.__file__) + '/data')"`).
pub const ONTOLOGY_DIR_ENV: &str = "CELLARROW_ONTOLOGY_DIR";

/// The file an ontology argument names: an existing file as it is, else a name (`CL`) looked up
/// in the directory of [`ONTOLOGY_DIR_ENV`] with [`locate_in`].
pub fn locate(spec: &str) -> Result<PathBuf> {
    let path = Path::new(spec);
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    if looks_like_path(spec) {
        return Err(Error::invalid_input(format!(
            "ontology file `{spec}` does not exist; expected an OBO or ontology JSON file, or an \
             ontology name such as CL"
        )));
    }
    match std::env::var_os(ONTOLOGY_DIR_ENV) {
        Some(dir) if !dir.is_empty() => locate_in(Path::new(&dir), spec),
        _ => Err(Error::invalid_input(format!(
            "ontology `{spec}` is not a file, and {ONTOLOGY_DIR_ENV} is not set; give the path \
             of an OBO or ontology JSON file, or set {ONTOLOGY_DIR_ENV} to a directory of them \
             (such as the data directory of the cellxgene-ontology-guide package)"
        ))),
    }
}

/// The file of ontology `name` in `dir`: `NAME.obo`, `NAME.json`, `NAME.json.zst`, or the
/// newest `NAME-ontology-VERSION.json[.zst]` (versions compared with their numbers as numbers).
/// The name matches exactly, else ignoring case.
pub fn locate_in(dir: &Path, name: &str) -> Result<PathBuf> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, "listing", e))?;
    let mut files: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    for exact in [true, false] {
        let same = |a: &str| {
            if exact {
                a == name
            } else {
                a.eq_ignore_ascii_case(name)
            }
        };
        let mut best: Option<(&str, &str)> = None; // (version, file)
        for f in &files {
            let stem = f
                .strip_suffix(".zst")
                .unwrap_or(f)
                .strip_suffix(".json")
                .or_else(|| f.strip_suffix(".obo"));
            let Some(stem) = stem else { continue };
            let (n, version) = stem.split_once("-ontology-").unwrap_or((stem, ""));
            if !same(n) {
                continue;
            }
            if best.is_none_or(|(v, _)| natural_cmp(version, v) == Ordering::Greater) {
                best = Some((version, f));
            }
        }
        if let Some((_, f)) = best {
            return Ok(dir.join(f));
        }
    }
    Err(Error::invalid_input(format!(
        "no ontology `{name}` in {}; expected {name}.obo, {name}.json[.zst] or \
         {name}-ontology-VERSION.json[.zst]",
        dir.display()
    ))
    .with_path(dir))
}

fn looks_like_path(spec: &str) -> bool {
    spec.contains(std::path::MAIN_SEPARATOR)
        || spec.contains('/')
        || [".obo", ".json", ".zst"].iter().any(|s| spec.ends_with(s))
}

/// Compares version strings with digit runs as numbers (`v3.9.0` < `v3.75.0`).
fn natural_cmp(a: &str, b: &str) -> Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let mut digits = None;
        for (i, c) in s.char_indices() {
            let d = c.is_ascii_digit();
            if digits != Some(d) {
                if i > start {
                    out.push((digits.unwrap_or(false), &s[start..i]));
                }
                start = i;
                digits = Some(d);
            }
        }
        if start < s.len() {
            out.push((digits.unwrap_or(false), &s[start..]));
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(cb.iter()) {
        let o = match (x, y) {
            ((true, x), (true, y)) => {
                let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
                x.len().cmp(&y.len()).then_with(|| x.cmp(y))
            }
            ((_, x), (_, y)) => x.cmp(y),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    ca.len().cmp(&cb.len())
}

#[cfg(test)]
mod tests {
    use super::natural_cmp;
    use std::cmp::Ordering;

    #[test]
    fn versions_compare_by_their_numbers() {
        assert_eq!(natural_cmp("v3.9.0", "v3.75.0"), Ordering::Less);
        assert_eq!(natural_cmp("v2026-03-26", "v2025-07-30"), Ordering::Greater);
        assert_eq!(natural_cmp("53.0", "55.0"), Ordering::Less);
        assert_eq!(natural_cmp("", "v1"), Ordering::Less);
        assert_eq!(natural_cmp("v1", "v1"), Ordering::Equal);
    }
}
