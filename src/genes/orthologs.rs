//! Ortholog tables: genes of other species mapped onto a reference species.
//!
//! A table is a TSV (CSV when the name ends in `.csv`) with one row per pair:
//!
//! - one gene id column per species, named `<species>_gene_id` (`human_gene_id`,
//!   `mouse_gene_id`), or as Ensembl BioMart exports it: `Gene stable ID` (the dataset's own
//!   species, recognised from its ids' prefixes) and `<Species> gene stable ID`;
//! - optional symbols, `<species>_symbol` or `<species>_gene_name` (BioMart: `Gene name`,
//!   `<Species> gene name`);
//! - optional `homology_type` (BioMart: `<Species> homology type`): `ortholog_one2one`,
//!   `ortholog_one2many`, `ortholog_many2many` (also `one2one`, `one-to-one`, `1:1` ...). Without
//!   it the type is read off the table: a pair is one-to-one when neither gene has another
//!   partner in it.
//!
//! Ids compare without their version suffix. Rows with an empty id are skipped (BioMart lists
//! genes without an ortholog that way).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::identity::{normalize_species, species_of_id, split_version, GeneIdentity};
use super::index::SourceGene;
use crate::error::{Error, Result};

/// Which pairs of an ortholog table map a gene onto the reference species.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum OrthologPolicy {
    /// Only one-to-one orthologs; a gene with one-to-many or many-to-many orthologs stays its
    /// own gene and is counted as ambiguous.
    #[default]
    OneToOne,
    /// Every gene with exactly one ortholog in the reference species (one-to-one, and the
    /// "many" side of one-to-many); several genes of one sample mapped onto the same reference
    /// gene are then duplicates, handled by `--duplicate-genes`. Many-to-many stay ambiguous.
    Unique,
}

/// How a pair's genes relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Homology {
    OneToOne,
    OneToMany,
    ManyToMany,
}

fn parse_homology(s: &str) -> Option<Homology> {
    let t = s.trim().to_ascii_lowercase().replace(['-', '_', ' '], "");
    let t = t.strip_prefix("ortholog").unwrap_or(&t);
    match t {
        "one2one" | "onetoone" | "1:1" | "11" => Some(Homology::OneToOne),
        "one2many" | "onetomany" | "1:n" | "many2one" | "manytoone" | "n:1" => {
            Some(Homology::OneToMany)
        }
        "many2many" | "manytomany" | "n:n" | "n:m" => Some(Homology::ManyToMany),
        _ => None,
    }
}

/// One reference-species partner of a gene.
#[derive(Debug, Clone)]
struct Partner {
    id: String,
    symbol: Option<String>,
    homology: Option<Homology>,
}

/// A parsed ortholog table.
#[derive(Debug, Clone)]
pub struct OrthologTable {
    path: PathBuf,
    reference: String,
    /// Per other species: its gene id -> reference partners.
    to_reference: HashMap<String, HashMap<String, Vec<Partner>>>,
    /// Per other species: reference gene id -> number of partners in that species.
    reference_partners: HashMap<String, HashMap<String, usize>>,
}

/// What mapping one sample's genes did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OrthologCounts {
    /// Genes mapped onto a reference-species gene.
    pub mapped: u64,
    /// Genes with no reference partner in the table (or no id to look up): kept as their own.
    pub unmapped: u64,
    /// Genes whose partners the policy does not map (one-to-many, many-to-many): kept as their own.
    pub ambiguous: u64,
}

/// A header cell, lowercased, with spaces and dashes as `_`.
fn normal(h: &str) -> String {
    h.trim().to_ascii_lowercase().replace([' ', '-'], "_")
}

/// The column roles of a header.
#[derive(Debug, Default)]
struct Columns {
    /// (species or "" for BioMart's own-species column, column index)
    ids: Vec<(String, usize)>,
    symbols: Vec<(String, usize)>,
    types: Vec<(String, usize)>,
}

fn classify(header: &[String]) -> Columns {
    let mut c = Columns::default();
    for (i, h) in header.iter().enumerate() {
        let h = normal(h);
        let strip = |suffixes: &[&str]| {
            suffixes.iter().find_map(|s| {
                h.strip_suffix(s)
                    .map(|p| p.trim_end_matches('_').to_string())
            })
        };
        if h.ends_with("version") {
            continue;
        }
        if let Some(sp) = strip(&["gene_stable_id", "gene_id", "stable_id", "ensembl_id"]) {
            c.ids.push((sp, i));
        } else if let Some(sp) = strip(&["homology_type", "orthology_type"]) {
            c.types.push((sp, i));
        } else if h == "type" {
            c.types.push((String::new(), i));
        } else if let Some(sp) = strip(&["gene_name", "gene_symbol", "symbol"]) {
            c.symbols.push((sp, i));
        }
    }
    c
}

impl OrthologTable {
    /// Reads a table whose pairs map genes onto `reference` (a species name, normalised by
    /// [`normalize_species`]). Errors name the file and, for missing columns, list the
    /// columns it has.
    pub fn read(path: &Path, reference: &str) -> Result<OrthologTable> {
        let reference = normalize_species(reference);
        let tsv = !path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(if tsv { b'\t' } else { b',' })
            .flexible(true)
            .from_path(path)
            .map_err(|e| {
                Error::invalid_input(format!("cannot read the ortholog table: {e}")).with_path(path)
            })?;
        let header: Vec<String> = reader
            .headers()
            .map_err(|e| {
                Error::invalid_input(format!("cannot read the header: {e}")).with_path(path)
            })?
            .iter()
            .map(str::to_string)
            .collect();
        let rows: Vec<csv::StringRecord> = reader
            .records()
            .enumerate()
            .map(|(i, r)| {
                r.map_err(|e| Error::invalid_input(format!("line {}: {e}", i + 2)).with_path(path))
            })
            .collect::<Result<_>>()?;
        let cols = classify(&header);
        let missing = |why: String| {
            Error::invalid_input(format!(
                "{why}; an ortholog table needs one gene id column per species (human_gene_id, mouse_gene_id, optional homology_type; or BioMart's Gene stable ID, Mouse gene stable ID, Mouse homology type); its columns are: {}",
                header.join(", ")
            ))
            .with_path(path)
        };
        // Name each id column's species; BioMart's own-species column by its ids' prefixes.
        let mut id_cols: Vec<(String, usize)> = Vec::new();
        for (sp, i) in &cols.ids {
            let species = if sp.is_empty() {
                let mut found = rows.iter().filter_map(|r| {
                    r.get(*i)
                        .and_then(|v| species_of_id(split_version(v.trim()).0))
                });
                match found.next() {
                    Some(s) => s.to_string(),
                    None => {
                        return Err(missing(format!(
                            "the species of column {:?} is not recognisable from its ids",
                            header[*i]
                        )))
                    }
                }
            } else {
                normalize_species(sp)
            };
            if id_cols.iter().any(|(s, _)| *s == species) {
                return Err(missing(format!(
                    "two gene id columns for species {species}"
                )));
            }
            id_cols.push((species, *i));
        }
        let Some(&(_, ref_col)) = id_cols.iter().find(|(s, _)| *s == reference) else {
            let found: Vec<&str> = id_cols.iter().map(|(s, _)| s.as_str()).collect();
            return Err(missing(format!(
                "no gene id column for the reference species {reference} (found: {})",
                if found.is_empty() {
                    "none".to_string()
                } else {
                    found.join(", ")
                }
            )));
        };
        if id_cols.len() < 2 {
            return Err(missing(format!(
                "only one species ({reference}) has a gene id column"
            )));
        }
        let column_of = |list: &[(String, usize)], species: &str, own: bool| {
            list.iter()
                .find(|(s, _)| {
                    (!s.is_empty() && normalize_species(s) == species) || (s.is_empty() && own)
                })
                .map(|(_, i)| *i)
        };
        // BioMart's unprefixed `Gene name` belongs to the column `Gene stable ID`.
        let own_species = cols.ids.iter().find(|(s, _)| s.is_empty()).map(|(_, i)| {
            id_cols
                .iter()
                .find(|(_, c)| c == i)
                .map(|(s, _)| s.clone())
                .unwrap_or_default()
        });
        let ref_symbol = column_of(
            &cols.symbols,
            &reference,
            own_species.as_deref() == Some(reference.as_str()),
        );
        let others: Vec<(String, usize)> = id_cols
            .iter()
            .filter(|(s, _)| *s != reference)
            .cloned()
            .collect();
        let mut table = OrthologTable {
            path: path.to_path_buf(),
            reference: reference.clone(),
            to_reference: HashMap::new(),
            reference_partners: HashMap::new(),
        };
        for (species, col) in &others {
            // The type column of this species, or the only one.
            let type_col = column_of(&cols.types, species, false)
                .or_else(|| (cols.types.len() == 1 && others.len() == 1).then(|| cols.types[0].1));
            let map = table.to_reference.entry(species.clone()).or_default();
            let counts = table.reference_partners.entry(species.clone()).or_default();
            for (line, r) in rows.iter().enumerate() {
                let get = |c: usize| r.get(c).map(str::trim).filter(|v| !v.is_empty());
                let (Some(other), Some(refid)) = (get(*col), get(ref_col)) else {
                    continue;
                };
                let homology = match type_col.and_then(get) {
                    None => None,
                    Some(t) => Some(parse_homology(t).ok_or_else(|| {
                        Error::invalid_input(format!(
                            "line {}: unknown homology type {t:?}; expected ortholog_one2one, ortholog_one2many or ortholog_many2many",
                            line + 2
                        ))
                        .with_path(path)
                    })?),
                };
                let refid = split_version(refid).0.to_string();
                let partners = map.entry(split_version(other).0.to_string()).or_default();
                if partners.iter().any(|p| p.id == refid) {
                    continue;
                }
                partners.push(Partner {
                    id: refid.clone(),
                    symbol: ref_symbol.and_then(get).map(str::to_string),
                    homology,
                });
                *counts.entry(refid).or_default() += 1;
            }
        }
        Ok(table)
    }

    /// The file it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The reference species.
    pub fn reference(&self) -> &str {
        &self.reference
    }

    /// Whether the table pairs genes of `species` with the reference species.
    pub fn covers(&self, species: &str) -> bool {
        self.to_reference.contains_key(species)
    }

    /// Maps the genes of a sample of `species` onto the reference species under `policy`;
    /// genes not mapped are returned as they were, and counted.
    pub fn map(
        &self,
        species: &str,
        genes: &[SourceGene],
        policy: OrthologPolicy,
    ) -> (Vec<SourceGene>, OrthologCounts) {
        let mut counts = OrthologCounts::default();
        let empty = HashMap::new();
        let table = self.to_reference.get(species).unwrap_or(&empty);
        let partners_of_ref = self.reference_partners.get(species);
        let out = genes
            .iter()
            .map(|g| {
                let partners = g.identity.id.as_deref().and_then(|id| table.get(id));
                let Some(partners) = partners else {
                    counts.unmapped += 1;
                    return g.clone();
                };
                let chosen = match partners.as_slice() {
                    [p] => {
                        let ref_count = partners_of_ref
                            .and_then(|m| m.get(&p.id))
                            .copied()
                            .unwrap_or(1);
                        let homology = p.homology.unwrap_or(if ref_count == 1 {
                            Homology::OneToOne
                        } else {
                            Homology::OneToMany
                        });
                        match (homology, policy) {
                            (Homology::OneToOne, _) => Some(p),
                            (Homology::OneToMany, OrthologPolicy::Unique) => Some(p),
                            _ => None,
                        }
                    }
                    _ => None,
                };
                match chosen {
                    Some(p) => {
                        counts.mapped += 1;
                        SourceGene {
                            identity: GeneIdentity {
                                id: Some(p.id.clone()),
                                id_version: None,
                                symbol: p.symbol.clone(),
                                species: Some(self.reference.clone()),
                            },
                            ortholog_of: Some(g.identity.clone()),
                        }
                    }
                    None => {
                        counts.ambiguous += 1;
                        g.clone()
                    }
                }
            })
            .collect();
        (out, counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str, name: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        (dir, p)
    }

    fn mouse(id: &str) -> SourceGene {
        SourceGene::from_name(id)
    }

    #[test]
    fn biomart_headers_and_policies() {
        let text = "Gene stable ID\tGene name\tMouse gene stable ID\tMouse gene name\tMouse homology type\n\
                    ENSG00000000001.3\tA\tENSMUSG00000000001\tAa\tortholog_one2one\n\
                    ENSG00000000002\tB\tENSMUSG00000000002\tBb\tortholog_one2many\n\
                    ENSG00000000002\tB\tENSMUSG00000000003\tBc\tortholog_one2many\n\
                    ENSG00000000004\tD\t\t\t\n";
        let (_d, p) = write(text, "mart.txt");
        let t = OrthologTable::read(&p, "Homo sapiens").unwrap();
        assert_eq!(t.reference(), "human");
        assert!(t.covers("mouse"));
        let genes: Vec<SourceGene> = [
            "ENSMUSG00000000001",
            "ENSMUSG00000000002",
            "ENSMUSG00000000009",
        ]
        .iter()
        .map(|g| mouse(g))
        .collect();
        let (out, c) = t.map("mouse", &genes, OrthologPolicy::OneToOne);
        assert_eq!(
            c,
            OrthologCounts {
                mapped: 1,
                unmapped: 1,
                ambiguous: 1
            }
        );
        assert_eq!(out[0].identity.id.as_deref(), Some("ENSG00000000001"));
        assert_eq!(out[0].identity.symbol.as_deref(), Some("A"));
        assert_eq!(
            out[0].ortholog_of.as_ref().unwrap().id.as_deref(),
            Some("ENSMUSG00000000001")
        );
        assert_eq!(out[1], genes[1]);
        let (_, c) = t.map("mouse", &genes, OrthologPolicy::Unique);
        assert_eq!(c.mapped, 2);
    }

    #[test]
    fn types_are_read_off_the_table_when_absent() {
        let text = "human_gene_id,mouse_gene_id\nENSG00000000001,ENSMUSG00000000001\nENSG00000000002,ENSMUSG00000000002\nENSG00000000002,ENSMUSG00000000003\n";
        let (_d, p) = write(text, "pairs.csv");
        let t = OrthologTable::read(&p, "human").unwrap();
        let genes: Vec<SourceGene> = ["ENSMUSG00000000001", "ENSMUSG00000000003"]
            .iter()
            .map(|g| mouse(g))
            .collect();
        let (_, c) = t.map("mouse", &genes, OrthologPolicy::OneToOne);
        assert_eq!(
            c,
            OrthologCounts {
                mapped: 1,
                unmapped: 0,
                ambiguous: 1
            }
        );
    }

    #[test]
    fn missing_columns_name_the_file_and_its_columns() {
        let (_d, p) = write(
            "human_gene_id\thomology_type\nENSG00000000001\tortholog_one2one\n",
            "bad.tsv",
        );
        let e = OrthologTable::read(&p, "human").unwrap_err().to_string();
        assert!(
            e.contains("bad.tsv") && e.contains("its columns are: human_gene_id, homology_type"),
            "{e}"
        );
        let (_d, p) = write("rat_gene_id\tmouse_gene_id\n", "rat.tsv");
        let e = OrthologTable::read(&p, "human").unwrap_err().to_string();
        assert!(
            e.contains("no gene id column for the reference species human (found: rat, mouse)"),
            "{e}"
        );
    }
}
