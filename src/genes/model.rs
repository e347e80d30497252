//! A model's gene vocabulary: the genes a model was trained on, in its order (as scGPT and
//! Geneformer vocabularies are), and the map from corpus gene ids to positions in it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::index::GeneIndex;
use crate::error::{Error, Result};

/// Marks a corpus gene that is not in the vocabulary.
pub const NOT_IN_VOCAB: u32 = u32::MAX;

/// A model vocabulary as given: a file, or the list itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum GeneVocab {
    /// A file: one gene per line (the first tab-separated field), or JSON (a list of genes, or
    /// an object of gene -> position, as scGPT's `vocab.json`).
    File(PathBuf),
    /// Gene ids or symbols in the model's order.
    List(Vec<String>),
}

impl GeneVocab {
    /// The genes in model order, checked for duplicates (an error names the file, or
    /// `genes` for a list, and the value).
    pub fn names(&self) -> Result<Vec<String>> {
        let names = match self {
            GeneVocab::File(path) => read_vocab_file(path)?,
            GeneVocab::List(list) => list.iter().map(|s| s.trim().to_string()).collect(),
        };
        let origin = match self {
            GeneVocab::File(p) => Some(p.as_path()),
            GeneVocab::List(_) => None,
        };
        check_unique(&names, origin)?;
        if names.is_empty() {
            let e = Error::invalid_input("the gene vocabulary is empty");
            return Err(match origin {
                Some(p) => e.with_path(p),
                None => e,
            });
        }
        Ok(names)
    }
}

/// Reads a vocabulary file (see [`GeneVocab::File`]).
pub fn read_vocab_file(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(path, "reading the gene vocabulary", e))?;
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if !is_json {
        return Ok(text
            .lines()
            .map(|l| l.split('\t').next().unwrap_or("").trim())
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect());
    }
    let bad = |why: String| Error::invalid_input(why).with_path(path);
    match serde_json::from_str::<serde_json::Value>(&text)
        .map_err(|e| bad(format!("not valid JSON: {e}")))?
    {
        serde_json::Value::Array(a) => a
            .into_iter()
            .map(|v| match v {
                serde_json::Value::String(s) => Ok(s),
                other => Err(bad(format!("expected gene names, found {other}"))),
            })
            .collect(),
        serde_json::Value::Object(o) => {
            let mut pairs: Vec<(u64, String)> = o
                .into_iter()
                .map(|(k, v)| {
                    v.as_u64()
                        .map(|i| (i, k.clone()))
                        .ok_or_else(|| bad(format!("gene {k:?}: expected a position, found {v}")))
                })
                .collect::<Result<_>>()?;
            pairs.sort_unstable();
            for w in pairs.windows(2) {
                if w[0].0 == w[1].0 {
                    return Err(bad(format!(
                        "genes {:?} and {:?} have the same position {}",
                        w[0].1, w[1].1, w[0].0
                    )));
                }
            }
            Ok(pairs.into_iter().map(|(_, k)| k).collect())
        }
        _ => Err(bad(
            "expected a list of genes or an object of gene -> position".into(),
        )),
    }
}

/// Refuses a vocabulary that lists a gene twice, naming the file (when there is one), the
/// value and both positions.
pub fn check_unique(names: &[String], origin: Option<&Path>) -> Result<()> {
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(names.len());
    for (i, n) in names.iter().enumerate() {
        if let Some(first) = seen.insert(n.as_str(), i) {
            let e = Error::invalid_input(format!(
                "the gene vocabulary lists {n:?} twice (entries {} and {})",
                first + 1,
                i + 1
            ));
            return Err(match origin {
                Some(p) => e.with_path(p),
                None => e.with_object("genes"),
            });
        }
    }
    Ok(())
}

/// Corpus gene ids -> positions in a model vocabulary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VocabMap {
    /// Per corpus gene: its vocabulary position, or [`NOT_IN_VOCAB`].
    pub lut: Vec<u32>,
    /// Vocabulary genes found in the corpus.
    pub present: usize,
    /// Vocabulary size (the width of the output gene space).
    pub size: usize,
    /// Vocabulary entries not found (in vocabulary order).
    pub missing: Vec<String>,
}

impl VocabMap {
    /// Looks each vocabulary entry up among the corpus genes ([`GeneIndex::lookup`]: name,
    /// id without version, or unique symbol). An entry that names a corpus gene an earlier
    /// entry already took counts as missing.
    pub fn new(index: &GeneIndex, names: &[String]) -> VocabMap {
        let mut lut = vec![NOT_IN_VOCAB; index.len()];
        let mut missing = Vec::new();
        let mut present = 0;
        for (pos, name) in names.iter().enumerate() {
            match index.lookup(name) {
                Some(g) if lut[g as usize] == NOT_IN_VOCAB => {
                    lut[g as usize] = pos as u32;
                    present += 1;
                }
                _ => missing.push(name.clone()),
            }
        }
        VocabMap {
            lut,
            present,
            size: names.len(),
            missing,
        }
    }

    /// `n of m vocabulary genes present`.
    pub fn report(&self) -> String {
        format!("{} of {} vocabulary genes present", self.present, self.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_name_the_file_and_value() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vocab.txt");
        std::fs::write(&p, "A\nB\n\nA\n").unwrap();
        let e = GeneVocab::File(p).names().unwrap_err().to_string();
        assert!(
            e.contains("vocab.txt") && e.contains("\"A\" twice (entries 1 and 3)"),
            "{e}"
        );
        let j = dir.path().join("vocab.json");
        std::fs::write(&j, r#"{"<pad>": 0, "B": 2, "A": 1}"#).unwrap();
        assert_eq!(GeneVocab::File(j).names().unwrap(), ["<pad>", "A", "B"]);
    }
}
