//! The shared gene vocabulary and each file's map from its columns to vocabulary ids.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray, UInt64Array};

use super::{ConvertOptions, InputSample, Planned};
use crate::error::{Error, Result};
use crate::genes::source::{self, GeneColumns};
use crate::genes::{
    match_key, Gene, GeneIdentity, GeneIndex, GeneKey, OrthologCounts, OrthologTable, SourceGene,
    UNKNOWN_SPECIES,
};
use crate::h5ad::H5ad;

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

/// The corpus genes in id order, matched by the rules of [`crate::genes::GeneIndex`].
#[derive(Debug, Clone)]
pub struct Vocabulary {
    index: GeneIndex,
    /// A fixed vocabulary does not grow with the inputs.
    fixed: bool,
}

impl Default for Vocabulary {
    fn default() -> Self {
        Vocabulary::union()
    }
}

impl Vocabulary {
    /// An empty vocabulary that grows with the inputs (the union, in first-seen order),
    /// matching genes by the default key.
    pub fn union() -> Self {
        Self::union_by(GeneKey::default())
    }

    /// An empty growing vocabulary matching genes by `key`.
    pub fn union_by(key: GeneKey) -> Self {
        Vocabulary {
            index: GeneIndex::new(key),
            fixed: false,
        }
    }

    /// A vocabulary over existing genes (a corpus's); `fixed` ones do not grow.
    pub fn from_index(index: GeneIndex, fixed: bool) -> Self {
        Vocabulary { index, fixed }
    }

    /// A fixed vocabulary from names in id order (each an id or a symbol,
    /// [`GeneIdentity::from_name`]); duplicates are an error.
    pub fn fixed(names: Vec<String>, origin: &Path) -> Result<Self> {
        Self::from_names(names, origin, GeneKey::default(), true)
    }

    /// A vocabulary that starts from `names` (a corpus's genes, in id order) and grows with
    /// the inputs: new genes get the next ids, existing ids never change.
    pub fn growing(names: Vec<String>, origin: &Path) -> Result<Self> {
        Self::from_names(names, origin, GeneKey::default(), false)
    }

    fn from_names(names: Vec<String>, origin: &Path, key: GeneKey, fixed: bool) -> Result<Self> {
        if names.is_empty() {
            return Err(Error::invalid_input("the vocabulary is empty").with_path(origin));
        }
        let genes = names
            .into_iter()
            .map(|n| Gene {
                identity: GeneIdentity::from_name(&n),
                name: n,
                orthologs: Vec::new(),
                matched_by: 0,
            })
            .collect();
        let index = GeneIndex::from_genes(key, genes).map_err(|n| {
            Error::invalid_input(format!("gene {n:?} is listed twice")).with_path(origin)
        })?;
        Ok(Vocabulary { index, fixed })
    }

    /// Reads a fixed vocabulary: a text file with one gene per line, another corpus's
    /// directory or the `genes.parquet` of a format-1 corpus (their names and identity
    /// columns), so that corpora can share gene ids.
    pub fn read(path: &Path) -> Result<Self> {
        Self::read_by(path, GeneKey::default())
    }

    /// [`Vocabulary::read`], matching genes by `key`.
    pub fn read_by(path: &Path, key: GeneKey) -> Result<Self> {
        let files = if path.join(crate::corpus::MANIFEST_FILE).is_file() {
            crate::corpus::table_files_at(path, "genes")?
        } else if path.extension().is_some_and(|e| e == "parquet") {
            vec![path.to_path_buf()]
        } else {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::io(path, "reading the vocabulary", e))?;
            let names = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect();
            return Self::from_names(names, path, key, true);
        };
        let mut v = Self::from_table(&files, path, key)?;
        v.fixed = true;
        if v.is_empty() {
            return Err(Error::invalid_input("the vocabulary is empty").with_path(path));
        }
        Ok(v)
    }

    /// The growing vocabulary of the corpus at `dir` (its genes table, either format).
    pub fn corpus_genes(dir: &Path, key: GeneKey) -> Result<Self> {
        Self::from_table(&crate::corpus::table_files_at(dir, "genes")?, dir, key)
    }

    /// A growing vocabulary from the files of a genes table.
    fn from_table(files: &[std::path::PathBuf], origin: &Path, key: GeneKey) -> Result<Self> {
        let genes = crate::genes::table::read_index(files, key).map_err(|e| {
            // A parquet file that is not a corpus's is bad input here, not a bad corpus.
            Error::invalid_input(e.message().to_string()).with_path(origin)
        })?;
        Ok(Vocabulary {
            index: genes,
            fixed: false,
        })
    }

    /// Reads a gene order, as [`Vocabulary::read_by`] does, into a vocabulary that starts with
    /// those genes at those ids and grows with any other gene of the inputs: corpora converted
    /// apart with one order share their gene ids and drop nothing.
    pub fn read_order(path: &Path, key: GeneKey) -> Result<Self> {
        let mut v = Self::read_by(path, key)?;
        v.fixed = false;
        Ok(v)
    }

    /// Writes the vocabulary as a genes file (the `genes` table's columns: names, identities,
    /// orthologs), which [`Vocabulary::read_order`] and [`Vocabulary::read_by`] read back with
    /// every identity kept.
    pub fn write(&self, path: &Path) -> Result<()> {
        let batch = crate::genes::table::genes_batch(&self.index, 0..self.index.len())?;
        crate::corpus::write_parquet(path, &[batch])?;
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The gene names (the `name` column), in id order.
    pub fn names(&self) -> Vec<String> {
        self.index.genes().iter().map(|g| g.name.clone()).collect()
    }

    /// The genes with their identities.
    pub fn index(&self) -> &GeneIndex {
        &self.index
    }

    pub fn is_fixed(&self) -> bool {
        self.fixed
    }

    /// Maps one file's genes, given by name (in column order), to vocabulary ids, adding new
    /// genes unless the vocabulary is fixed.
    pub fn map_file(
        &mut self,
        genes: &[String],
        duplicates: DuplicateGenes,
        file: &Path,
    ) -> Result<Vec<GeneSlot>> {
        let genes: Vec<SourceGene> = genes.iter().map(|g| SourceGene::from_name(g)).collect();
        Ok(self
            .map_files(&[(&genes[..], file)], duplicates)?
            .pop()
            .expect("one file in, one map out"))
    }

    /// Maps the genes of several files (in column order) to vocabulary ids at once
    /// ([`GeneIndex::resolve_files`]: matching does not depend on the file order, new genes
    /// are numbered in it). A gene that two columns of one file resolve to is a duplicate,
    /// handled by `duplicates`. On an error the vocabulary is unchanged.
    pub fn map_files(
        &mut self,
        files: &[(&[SourceGene], &Path)],
        duplicates: DuplicateGenes,
    ) -> Result<Vec<Vec<GeneSlot>>> {
        let before = self.index.clone();
        let lists: Vec<&[SourceGene]> = files.iter().map(|f| f.0).collect();
        let resolved = self.index.resolve_files(&lists, !self.fixed);
        let mut maps = Vec::with_capacity(files.len());
        for (res, (_, file)) in resolved.iter().zip(files) {
            let mut seen: HashMap<u32, usize> = HashMap::new();
            let mut map = Vec::with_capacity(res.len());
            for r in res {
                let slot = match r.gene() {
                    None => GeneSlot::Outside,
                    Some(g) => {
                        let count = seen.entry(g).or_default();
                        *count += 1;
                        if *count > 1 && duplicates == DuplicateGenes::First {
                            GeneSlot::Duplicate
                        } else {
                            GeneSlot::Gene(g)
                        }
                    }
                };
                map.push(slot);
            }
            if duplicates == DuplicateGenes::Error {
                let names: Vec<String> = map
                    .iter()
                    .filter_map(|s| match s {
                        GeneSlot::Gene(g) => Some(self.index.genes()[*g as usize].name.clone()),
                        _ => None,
                    })
                    .collect();
                if let Err(e) = check_duplicates(&names, duplicates, file) {
                    self.index = before;
                    return Err(e);
                }
            }
            maps.push(map);
        }
        Ok(maps)
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

/// One sample's genes as planned: their identities (after any ortholog mapping), match keys
/// and species.
pub(crate) struct SampleGenes {
    pub genes: Vec<SourceGene>,
    pub keys: Vec<String>,
    pub species: String,
    pub orthologs: Option<OrthologCounts>,
}

/// Reads a sample's gene identities ([`crate::genes::source::read_identities`]), gives them
/// the sample's species (the input manifest's `species`, else inferred from the ids), and maps
/// genes of a species other than the reference through the ortholog table.
pub(crate) fn read_sample_genes(
    h5: &H5ad,
    input: &InputSample,
    opts: &ConvertOptions,
    orthologs: Option<&OrthologTable>,
) -> Result<SampleGenes> {
    let cols = GeneColumns {
        gene_column: opts.gene_column.as_deref(),
        symbol_column: opts.symbol_column.as_deref(),
    };
    let mut ids = source::read_identities(h5, &opts.source, &cols)?;
    let declared = input
        .metadata
        .get("species")
        .map(String::as_str)
        .filter(|s| !s.trim().is_empty());
    let species = source::assign_species(&mut ids, declared);
    let genes: Vec<SourceGene> = ids
        .into_iter()
        .map(|identity| SourceGene {
            identity,
            ortholog_of: None,
        })
        .collect();
    let (genes, counts) = match orthologs {
        None => (genes, None),
        Some(t) if species == t.reference() => (genes, None),
        // Without a species there is no column of the table to look genes up in.
        Some(_) if species == UNKNOWN_SPECIES => {
            let unmapped = genes.len() as u64;
            let counts = OrthologCounts {
                unmapped,
                ..OrthologCounts::default()
            };
            (genes, Some(counts))
        }
        Some(t) => {
            let (g, c) = t.map(&species, &genes, opts.ortholog_policy);
            (g, Some(c))
        }
    };
    let keys = genes
        .iter()
        .map(|g| {
            match_key(&g.identity, opts.gene_key)
                .map(|(_, k)| k.to_string())
                .unwrap_or_default()
        })
        .collect();
    Ok(SampleGenes {
        genes,
        keys,
        species,
        orthologs: counts,
    })
}

/// Each sample's species, by sample id (for the conversion summary).
pub(crate) fn species_of(plans: &[Planned]) -> std::collections::BTreeMap<String, String> {
    plans
        .iter()
        .map(|p| (p.input.sample_id.clone(), p.species.clone()))
        .collect()
}

/// Warnings about species with an ortholog table: samples of unknown species (which it
/// cannot map), and genes it left unmapped or found ambiguous, per sample.
pub(crate) fn species_warnings(plans: &[Planned]) -> Vec<String> {
    let mut out = Vec::new();
    for p in plans {
        if p.species == UNKNOWN_SPECIES && p.orthologs.is_some() {
            out.push(format!(
                "{}: species unknown (no `species` in the input manifest and no recognisable gene ids), so its genes were not mapped to orthologs",
                p.input.sample_id
            ));
        }
        if let Some(c) = p.orthologs.filter(|c| c.unmapped + c.ambiguous > 0) {
            out.push(format!(
                "{} ({}): {} genes mapped to orthologs; {} without an ortholog and {} with ambiguous ones kept as {} genes; see samples.parquet",
                p.input.sample_id, p.species, c.mapped, c.unmapped, c.ambiguous, p.species
            ));
        }
    }
    out
}

/// The samples.parquet columns about genes: `species`, and with an ortholog table the genes
/// mapped, unmapped and ambiguous per sample (null for samples it does not apply to).
pub(crate) fn sample_gene_columns(plans: &[Planned]) -> Vec<(String, ArrayRef)> {
    let mut cols: Vec<(String, ArrayRef)> = vec![(
        "species".into(),
        Arc::new(StringArray::from_iter_values(
            plans.iter().map(|p| p.species.as_str()),
        )),
    )];
    if plans.iter().any(|p| p.orthologs.is_some()) {
        let count = |f: fn(&OrthologCounts) -> u64| -> ArrayRef {
            Arc::new(
                plans
                    .iter()
                    .map(|p| p.orthologs.as_ref().map(f))
                    .collect::<UInt64Array>(),
            )
        };
        cols.push(("n_genes_ortholog_mapped".into(), count(|c| c.mapped)));
        cols.push(("n_genes_ortholog_unmapped".into(), count(|c| c.unmapped)));
        cols.push(("n_genes_ortholog_ambiguous".into(), count(|c| c.ambiguous)));
    }
    cols
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
        assert_eq!(vocab.names(), v(&["A", "B", "C", "D"]));
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
