//! Reading each gene's identity from a file's var table.

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;

use super::identity::{
    infer_species, looks_like_id, normalize_species, species_of_id, split_version, GeneIdentity,
    UNKNOWN_SPECIES,
};
use crate::error::{Error, Result};
use crate::h5ad::{H5ad, MatrixSource};

/// var columns that hold stable gene ids, tried in this order when `--gene-column` is not given.
pub const ID_COLUMNS: &[&str] = &[
    "gene_ids",
    "gene_id",
    "ensembl_id",
    "ensembl_ids",
    "gene_ensembl_id",
    "feature_id",
    "gene_stable_id",
];

/// var columns that hold gene symbols, tried in this order when `--symbol-column` is not given.
pub const SYMBOL_COLUMNS: &[&str] = &[
    "gene_symbols",
    "gene_symbol",
    "feature_name",
    "gene_name",
    "gene_names",
    "symbol",
    "symbols",
    "gene_short_name",
];

/// Where a file's gene ids and symbols come from, beside `var_names`.
#[derive(Debug, Clone, Default)]
pub struct GeneColumns<'a> {
    /// The var column of stable ids (else the first of [`ID_COLUMNS`] present).
    pub gene_column: Option<&'a str>,
    /// The var column of symbols (else the first of [`SYMBOL_COLUMNS`] present).
    pub symbol_column: Option<&'a str>,
}

/// Reads the identity of every gene of `source` in `h5`: for each gene, the id is the first
/// value with the shape of one ([`looks_like_id`]) among `--gene-column`, `var_names` and the
/// [`ID_COLUMNS`], its version split off; the symbol is the first value without that shape
/// among `--symbol-column`, `--gene-column`, `var_names` and the [`SYMBOL_COLUMNS`].
/// Species are not set here (see [`assign_species`]).
pub fn read_identities(
    h5: &H5ad,
    source: &MatrixSource,
    cols: &GeneColumns<'_>,
) -> Result<Vec<GeneIdentity>> {
    let mut wanted: Vec<String> = Vec::new();
    wanted.extend(cols.gene_column.map(str::to_string));
    wanted.extend(cols.symbol_column.map(str::to_string));
    wanted.extend(
        ID_COLUMNS
            .iter()
            .chain(SYMBOL_COLUMNS)
            .map(|s| s.to_string()),
    );
    let frame = h5.var_columns(source, &wanted)?;
    let object = match source {
        MatrixSource::Raw => "raw/var",
        _ => "var",
    };
    let text = |name: &str| -> Result<Option<Vec<Option<String>>>> {
        let Some((_, arr)) = frame.columns.iter().find(|(n, _)| n == name) else {
            return Ok(None);
        };
        let s = arrow::compute::cast(arr, &DataType::Utf8).map_err(|e| {
            Error::h5ad(
                h5.path(),
                format!("{object}/{name}"),
                format!("is not text: {e}"),
            )
        })?;
        let s = s.as_string::<i32>();
        Ok(Some(
            (0..s.len())
                .map(|i| (!s.is_null(i)).then(|| s.value(i).trim().to_string()))
                .map(|v| v.filter(|v| !v.is_empty()))
                .collect(),
        ))
    };
    let required = |name: Option<&str>, flag: &str| -> Result<Option<Vec<Option<String>>>> {
        match name {
            None => Ok(None),
            Some(n) => text(n)?.map(Some).ok_or_else(|| {
                let have: Vec<&str> = frame.columns.iter().map(|(n, _)| n.as_str()).collect();
                Error::invalid_input(format!(
                    "no column {n:?} for {flag} (var columns read: {})",
                    if have.is_empty() {
                        "none".into()
                    } else {
                        have.join(", ")
                    }
                ))
                .with_path(h5.path())
                .with_object(object)
            }),
        }
    };
    let gene_col = required(cols.gene_column, "--gene-column")?;
    let symbol_col = required(cols.symbol_column, "--symbol-column")?;
    let mut id_cands: Vec<Vec<Option<String>>> = Vec::new();
    let mut sym_cands: Vec<Vec<Option<String>>> = Vec::new();
    let names: Vec<Option<String>> = frame
        .index
        .iter()
        .map(|s| Some(s.trim().to_string()))
        .collect();
    id_cands.extend(gene_col.clone());
    id_cands.push(names.clone());
    for c in ID_COLUMNS {
        if cols.gene_column != Some(c) {
            id_cands.extend(text(c)?);
        }
    }
    // var_names before the symbol-like columns: what names a gene when it has no id stays
    // what it was before ids were read (`--gene-column` still first when given).
    sym_cands.extend(symbol_col);
    sym_cands.extend(gene_col);
    sym_cands.push(names);
    for c in SYMBOL_COLUMNS {
        if cols.symbol_column != Some(c) {
            sym_cands.extend(text(c)?);
        }
    }
    let n = frame.index.len();
    Ok((0..n)
        .map(|i| {
            let id = id_cands
                .iter()
                .filter_map(|c| c[i].as_deref())
                .find(|v| looks_like_id(v));
            let symbol = sym_cands
                .iter()
                .filter_map(|c| c[i].as_deref())
                .find(|v| !looks_like_id(v));
            let (id, version) = match id.map(split_version) {
                Some((id, v)) => (Some(id.to_string()), v.map(str::to_string)),
                None => (None, None),
            };
            GeneIdentity {
                id,
                id_version: version,
                symbol: symbol.map(str::to_string),
                species: None,
            }
        })
        .collect())
}

/// The species of a sample: `declared` (an input manifest's `species`), else the species of
/// most of its genes' ids, else [`UNKNOWN_SPECIES`]. Sets it on every gene whose id does not
/// name its own species.
pub fn assign_species(genes: &mut [GeneIdentity], declared: Option<&str>) -> String {
    let species = declared
        .map(normalize_species)
        .or_else(|| infer_species(genes.iter()))
        .unwrap_or_else(|| UNKNOWN_SPECIES.to_string());
    for g in genes.iter_mut() {
        let own = g.id.as_deref().and_then(species_of_id);
        g.species = Some(own.map(str::to_string).unwrap_or_else(|| species.clone()));
    }
    species
}
