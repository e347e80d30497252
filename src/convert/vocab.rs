//! The shared gene vocabulary and each file's map from its columns to vocabulary ids.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::error::{Error, Result};

/// What to do when one file names the same gene in two columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum DuplicateGenes {
    /// Refuse the file and list the duplicates (nothing is merged silently).
    #[default]
    Error,
    /// Add the columns together.
    Sum,
    /// Keep the first column, ignore the later ones.
    First,
}

/// Where one source column goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeneSlot {
    /// Stored under this vocabulary id.
    Gene(u32),
    /// Not in a fixed vocabulary: counted per sample, not stored.
    Outside,
    /// A later duplicate column under [`DuplicateGenes::First`]: ignored.
    Duplicate,
}

/// The gene names in id order, with a lookup from name to id.
#[derive(Debug, Clone, Default)]
pub struct Vocabulary {
    names: Vec<String>,
    ids: HashMap<String, u32>,
    /// A fixed vocabulary does not grow with the inputs.
    fixed: bool,
}

impl Vocabulary {
    /// An empty vocabulary that grows with the inputs (the union, in first-seen order).
    pub fn union() -> Self {
        Self::default()
    }

    /// A fixed vocabulary from names in id order; duplicates are an error.
    pub fn fixed(names: Vec<String>, origin: &Path) -> Result<Self> {
        let mut ids = HashMap::with_capacity(names.len());
        for (i, n) in names.iter().enumerate() {
            if ids.insert(n.clone(), i as u32).is_some() {
                return Err(
                    Error::invalid_input(format!("gene {n:?} is listed twice")).with_path(origin)
                );
            }
        }
        if names.is_empty() {
            return Err(Error::invalid_input("the vocabulary is empty").with_path(origin));
        }
        Ok(Vocabulary {
            names,
            ids,
            fixed: true,
        })
    }

    /// A vocabulary that starts from `names` (a corpus's genes, in id order) and grows with
    /// the inputs: new genes get the next ids, existing ids never change.
    pub fn growing(names: Vec<String>, origin: &Path) -> Result<Self> {
        let mut v = Self::fixed(names, origin)?;
        v.fixed = false;
        Ok(v)
    }

    /// Reads a fixed vocabulary: a text file with one gene per line, a Parquet file with a
    /// `name` column (the `genes.parquet` of a format-1 corpus), or another corpus's directory
    /// (its genes table), so that corpora can share gene ids.
    pub fn read(path: &Path) -> Result<Self> {
        // Another corpus (its directory): its genes table, whichever format (one file in
        // format 1, several in format 2).
        if path.join(crate::corpus::MANIFEST_FILE).is_file() {
            let m = crate::corpus::Manifest::read(path)?;
            let mut names = Vec::new();
            for rel in m.table_paths("genes") {
                names.extend(read_parquet_names(&path.join(rel))?);
            }
            return Self::fixed(names, path);
        }
        let names = if path.extension().is_some_and(|e| e == "parquet") {
            read_parquet_names(path)?
        } else {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::io(path, "reading the vocabulary", e))?;
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect()
        };
        Self::fixed(names, path)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn is_fixed(&self) -> bool {
        self.fixed
    }

    /// Maps one file's genes (in column order) to vocabulary ids, adding new genes unless the
    /// vocabulary is fixed.
    pub fn map_file(
        &mut self,
        genes: &[String],
        duplicates: DuplicateGenes,
        file: &Path,
    ) -> Result<Vec<GeneSlot>> {
        check_duplicates(genes, duplicates, file)?;
        let mut seen: HashMap<&str, ()> = HashMap::new();
        let mut map = Vec::with_capacity(genes.len());
        for g in genes {
            let first = seen.insert(g.as_str(), ()).is_none();
            if !first && duplicates == DuplicateGenes::First {
                map.push(GeneSlot::Duplicate);
                continue;
            }
            let slot = match self.ids.get(g) {
                Some(&id) => GeneSlot::Gene(id),
                None if self.fixed => GeneSlot::Outside,
                None => {
                    let id = u32::try_from(self.names.len()).map_err(|_| {
                        Error::invalid_input("more than 2^32 genes in the vocabulary")
                    })?;
                    self.names.push(g.clone());
                    self.ids.insert(g.clone(), id);
                    GeneSlot::Gene(id)
                }
            };
            map.push(slot);
        }
        Ok(map)
    }
}

/// Refuses duplicate gene names under [`DuplicateGenes::Error`], listing them.
pub fn check_duplicates(genes: &[String], duplicates: DuplicateGenes, file: &Path) -> Result<()> {
    if duplicates != DuplicateGenes::Error {
        return Ok(());
    }
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for g in genes {
        *count.entry(g.as_str()).or_default() += 1;
    }
    let dups: Vec<String> = count
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(g, n)| format!("{g} (x{n})"))
        .collect();
    if dups.is_empty() {
        return Ok(());
    }
    let shown: Vec<&str> = dups.iter().take(20).map(String::as_str).collect();
    let more = if dups.len() > 20 {
        format!(" and {} more", dups.len() - 20)
    } else {
        String::new()
    };
    Err(Error::invalid_input(format!(
        "{} duplicate gene names: {}{more}; pass --duplicate-genes sum or first to merge them, or --gene-column to use unique ids",
        dups.len(),
        shown.join(", ")
    ))
    .with_path(file)
    .with_object("var"))
}

fn read_parquet_names(path: &Path) -> Result<Vec<String>> {
    use arrow::array::{Array, AsArray};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let file =
        std::fs::File::open(path).map_err(|e| Error::io(path, "opening the vocabulary", e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| Error::from(e).with_path(path))?;
    let idx = builder.schema().index_of("name").map_err(|_| {
        Error::invalid_input("a vocabulary Parquet file needs a `name` column").with_path(path)
    })?;
    let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), [idx]);
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(|e| Error::from(e).with_path(path))?;
    let mut names = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| Error::from(e).with_path(path))?;
        let col = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8)?;
        let col = col.as_string::<i32>();
        for i in 0..col.len() {
            if col.is_null(i) {
                return Err(
                    Error::invalid_input(format!("gene name at row {i} is null")).with_path(path),
                );
            }
            names.push(col.value(i).to_string());
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn union_keeps_first_seen_order_and_remaps() {
        let mut vocab = Vocabulary::union();
        let a = vocab
            .map_file(&v(&["A", "B", "C"]), DuplicateGenes::Error, Path::new("a"))
            .unwrap();
        let b = vocab
            .map_file(&v(&["C", "D", "A"]), DuplicateGenes::Error, Path::new("b"))
            .unwrap();
        assert_eq!(vocab.names(), &v(&["A", "B", "C", "D"])[..]);
        assert_eq!(
            a,
            vec![GeneSlot::Gene(0), GeneSlot::Gene(1), GeneSlot::Gene(2)]
        );
        assert_eq!(
            b,
            vec![GeneSlot::Gene(2), GeneSlot::Gene(3), GeneSlot::Gene(0)]
        );
    }

    #[test]
    fn duplicate_genes_are_an_error_that_lists_them() {
        let mut vocab = Vocabulary::union();
        let err = vocab
            .map_file(
                &v(&["A", "B", "A", "C", "B"]),
                DuplicateGenes::Error,
                Path::new("f.h5ad"),
            )
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("f.h5ad") && msg.contains("A (x2)") && msg.contains("B (x2)"),
            "{msg}"
        );
        assert!(vocab.is_empty(), "a refused file adds no genes");
    }

    #[test]
    fn duplicate_policies_sum_and_first() {
        let mut vocab = Vocabulary::union();
        let sum = vocab
            .map_file(&v(&["A", "A"]), DuplicateGenes::Sum, Path::new("f"))
            .unwrap();
        assert_eq!(sum, vec![GeneSlot::Gene(0), GeneSlot::Gene(0)]);
        let first = vocab
            .map_file(&v(&["A", "A"]), DuplicateGenes::First, Path::new("f"))
            .unwrap();
        assert_eq!(first, vec![GeneSlot::Gene(0), GeneSlot::Duplicate]);
    }

    #[test]
    fn fixed_vocabulary_does_not_grow() {
        let mut vocab = Vocabulary::fixed(v(&["A", "B"]), Path::new("vocab.txt")).unwrap();
        let m = vocab
            .map_file(&v(&["B", "Z"]), DuplicateGenes::Error, Path::new("f"))
            .unwrap();
        assert_eq!(m, vec![GeneSlot::Gene(1), GeneSlot::Outside]);
        assert_eq!(vocab.len(), 2);
        assert!(Vocabulary::fixed(v(&["A", "A"]), Path::new("vocab.txt")).is_err());
    }
}
