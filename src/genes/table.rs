//! The genes table: writing the genes of a [`GeneIndex`] (a file of a range of them), reading
//! them back from the table's files, and the summary `cellarrow inspect` prints.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringArray, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use serde::Serialize;

use super::identity::{GeneIdentity, GeneKey, UNKNOWN_SPECIES};
use super::index::{matched, Gene, GeneIndex};
use crate::error::{Error, Result};

/// The identity columns of the genes table, after `gene` and `name`.
pub const IDENTITY_COLUMNS: &[&str] = &[
    "id",
    "id_version",
    "symbol",
    "species",
    "ortholog_id",
    "ortholog_symbol",
    "ortholog_species",
    "matched_by",
];

/// Several orthologs of one gene (one per other species) are joined by this in the
/// `ortholog_*` columns.
pub const ORTHOLOG_SEPARATOR: &str = ";";

/// The genes table rows of genes `range` of `index`: `gene` (their ids), `name` and the
/// [`IDENTITY_COLUMNS`]. A conversion writes every gene; an append the genes it adds.
pub fn genes_batch(index: &GeneIndex, range: Range<usize>) -> Result<RecordBatch> {
    let first = u32::try_from(range.start)
        .ok()
        .filter(|f| f.checked_add(range.len() as u32).is_some())
        .ok_or_else(|| Error::invalid_input("the vocabulary passes 2^32 genes"))?;
    let genes = &index.genes()[range];
    let n = genes.len() as u32;
    let text = |f: &dyn Fn(&Gene) -> Option<String>| -> ArrayRef {
        Arc::new(genes.iter().map(f).collect::<StringArray>())
    };
    let joined = |f: fn(&GeneIdentity) -> Option<&str>| {
        move |g: &Gene| -> Option<String> {
            (!g.orthologs.is_empty()).then(|| {
                g.orthologs
                    .iter()
                    .map(|o| f(o).unwrap_or(""))
                    .collect::<Vec<_>>()
                    .join(ORTHOLOG_SEPARATOR)
            })
        }
    };
    let cols: Vec<(&str, ArrayRef)> = vec![
        (
            "gene",
            Arc::new(UInt32Array::from_iter_values(first..first + n)),
        ),
        (
            "name",
            Arc::new(StringArray::from_iter_values(
                genes.iter().map(|g| g.name.as_str()),
            )),
        ),
        ("id", text(&|g| g.identity.id.clone())),
        ("id_version", text(&|g| g.identity.id_version.clone())),
        ("symbol", text(&|g| g.identity.symbol.clone())),
        (
            "species",
            text(&|g| {
                Some(
                    g.identity
                        .species
                        .clone()
                        .unwrap_or_else(|| UNKNOWN_SPECIES.into()),
                )
            }),
        ),
        ("ortholog_id", text(&joined(|o| o.id.as_deref()))),
        ("ortholog_symbol", text(&joined(|o| o.symbol.as_deref()))),
        ("ortholog_species", text(&joined(|o| o.species.as_deref()))),
        ("matched_by", text(&|g| matched::label(g.matched_by))),
    ];
    // One schema whatever the data (try_from_iter would make a column without nulls
    // non-nullable), so that every file of the table has the same one.
    let fields: Vec<Field> = cols
        .iter()
        .map(|(name, c)| {
            Field::new(
                *name,
                c.data_type().clone(),
                !matches!(*name, "gene" | "name"),
            )
        })
        .collect();
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        cols.into_iter().map(|(_, c)| c).collect(),
    )?)
}

/// The text values of `col` (any type cast to text), nulls as `None`.
fn strings(path: &Path, name: &str, col: &ArrayRef) -> Result<Vec<Option<String>>> {
    let s = arrow::compute::cast(col, &DataType::Utf8)
        .map_err(|e| Error::corpus(path, format!("column {name:?} is not text: {e}")))?;
    let s = s.as_string::<i32>();
    Ok((0..s.len())
        .map(|i| (!s.is_null(i)).then(|| s.value(i).to_string()))
        .collect())
}

/// The genes of a genes table, its files in row order (any version: a table with only `name`
/// gives identities read from the names, [`GeneIdentity::from_name`]).
pub fn read_genes(files: &[PathBuf]) -> Result<Vec<Gene>> {
    let mut genes = Vec::new();
    for path in files {
        genes.extend(genes_of(path, &crate::corpus::read_parquet(path, None)?)?);
    }
    Ok(genes)
}

/// The genes of the record batches of one file of a genes table.
fn genes_of(path: &Path, batches: &[RecordBatch]) -> Result<Vec<Gene>> {
    let mut genes = Vec::new();
    for b in batches {
        let col = |name: &str| -> Result<Option<Vec<Option<String>>>> {
            b.column_by_name(name)
                .map(|c| strings(path, name, c))
                .transpose()
        };
        let names = col("name")?.ok_or_else(|| Error::corpus(path, "no column \"name\""))?;
        let ids = col("id")?;
        let versions = col("id_version")?;
        let symbols = col("symbol")?;
        let species = col("species")?;
        let o_ids = col("ortholog_id")?;
        let o_symbols = col("ortholog_symbol")?;
        let o_species = col("ortholog_species")?;
        let matched_by = col("matched_by")?;
        let at = |c: &Option<Vec<Option<String>>>, i: usize| c.as_ref().and_then(|c| c[i].clone());
        for (i, name) in names.iter().enumerate() {
            let name = name.clone().ok_or_else(|| {
                Error::corpus(path, format!("gene name at row {} is null", genes.len()))
            })?;
            let identity = if ids.is_some() || symbols.is_some() {
                GeneIdentity {
                    id: at(&ids, i),
                    id_version: at(&versions, i),
                    symbol: at(&symbols, i),
                    species: at(&species, i),
                }
            } else {
                GeneIdentity::from_name(&name)
            };
            let split = |c: &Option<Vec<Option<String>>>| -> Vec<Option<String>> {
                at(c, i)
                    .map(|s| {
                        s.split(ORTHOLOG_SEPARATOR)
                            .map(|v| (!v.is_empty()).then(|| v.to_string()))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let (oi, os, osp) = (split(&o_ids), split(&o_symbols), split(&o_species));
            let orthologs = (0..oi.len().max(os.len()))
                .map(|k| GeneIdentity {
                    id: oi.get(k).cloned().flatten(),
                    id_version: None,
                    symbol: os.get(k).cloned().flatten(),
                    species: osp.get(k).cloned().flatten(),
                })
                .collect();
            genes.push(Gene {
                name,
                identity,
                orthologs,
                matched_by: at(&matched_by, i).map_or(0, |m| matched::parse(&m)),
            });
        }
    }
    Ok(genes)
}

/// The genes of a genes table (its files in row order) as an index matching by `key`.
pub fn read_index(files: &[PathBuf], key: GeneKey) -> Result<GeneIndex> {
    let genes = read_genes(files)?;
    GeneIndex::from_genes(key, genes).map_err(|name| {
        let path = files
            .first()
            .map(PathBuf::as_path)
            .unwrap_or(Path::new("genes"));
        Error::corpus(path, format!("gene name {name:?} appears twice"))
    })
}

/// What `cellarrow inspect` says about the genes.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct GeneSummary {
    pub n_genes: u64,
    /// Genes per species.
    pub species: BTreeMap<String, u64>,
    /// Genes with a stable id, and with a symbol.
    pub with_id: u64,
    pub with_symbol: u64,
    /// Genes measured by more than one sample.
    pub shared: u64,
    /// Genes that samples joined by id, by symbol, and through an ortholog table (a gene can
    /// count under several).
    pub matched_by_id: u64,
    pub matched_by_symbol: u64,
    pub matched_by_ortholog: u64,
}

impl GeneSummary {
    /// The summary of a corpus's genes, from its genes table as served (identity and counts).
    pub fn read(corpus: &crate::corpus::Corpus) -> Result<GeneSummary> {
        let batches = corpus.read_table("genes", None)?;
        let genes = genes_of(corpus.root(), &batches)?;
        let mut n_samples = Vec::new();
        for b in &batches {
            let Some(c) = b.column_by_name("n_samples") else {
                continue;
            };
            let c = arrow::compute::cast(c, &DataType::UInt32)
                .map_err(|e| Error::corpus(corpus.root(), format!("genes n_samples: {e}")))?;
            n_samples.extend(
                c.as_primitive::<arrow::datatypes::UInt32Type>()
                    .iter()
                    .map(|v| v.unwrap_or(0)),
            );
        }
        let mut s = GeneSummary {
            n_genes: genes.len() as u64,
            ..GeneSummary::default()
        };
        for (i, g) in genes.iter().enumerate() {
            let species = g
                .identity
                .species
                .clone()
                .unwrap_or_else(|| UNKNOWN_SPECIES.into());
            *s.species.entry(species).or_default() += 1;
            s.with_id += g.identity.id.is_some() as u64;
            s.with_symbol += g.identity.symbol.is_some() as u64;
            s.shared += n_samples.get(i).is_some_and(|&n| n > 1) as u64;
            s.matched_by_id += (g.matched_by & matched::ID != 0) as u64;
            s.matched_by_symbol += (g.matched_by & matched::SYMBOL != 0) as u64;
            s.matched_by_ortholog += (g.matched_by & matched::ORTHOLOG != 0) as u64;
        }
        Ok(s)
    }
}

impl std::fmt::Display for GeneSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let species: Vec<String> = self
            .species
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect();
        writeln!(
            f,
            "genes:     {} ({}); {} with an id, {} with a symbol",
            self.n_genes,
            species.join(", "),
            self.with_id,
            self.with_symbol
        )?;
        writeln!(
            f,
            "matched:   {} genes in several samples; joined by id: {}, by symbol: {}, through orthologs: {}",
            self.shared, self.matched_by_id, self.matched_by_symbol, self.matched_by_ortholog
        )
    }
}
