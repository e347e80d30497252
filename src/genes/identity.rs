//! What a gene is: a stable id (Ensembl-style, version stripped), a symbol and a species, and
//! the rules that read them from text.

use serde::Serialize;

/// The known species: canonical name, Latin name, and the prefix of its Ensembl gene ids (or
/// of its model-organism database ids). Names are matched case-insensitively, with `_` or a
/// space between genus and species, and as the short Ensembl dataset form (`hsapiens`).
pub const SPECIES: &[(&str, &str, &str)] = &[
    ("human", "homo sapiens", "ENSG"),
    ("mouse", "mus musculus", "ENSMUSG"),
    ("rat", "rattus norvegicus", "ENSRNOG"),
    ("zebrafish", "danio rerio", "ENSDARG"),
    ("macaque", "macaca mulatta", "ENSMMUG"),
    ("chimpanzee", "pan troglodytes", "ENSPTRG"),
    ("pig", "sus scrofa", "ENSSSCG"),
    ("cow", "bos taurus", "ENSBTAG"),
    ("chicken", "gallus gallus", "ENSGALG"),
    ("fly", "drosophila melanogaster", "FBgn"),
    ("worm", "caenorhabditis elegans", "WBGene"),
];

/// The species of samples and genes whose species is neither given nor recognisable.
pub const UNKNOWN_SPECIES: &str = "unknown";

/// Which identifier matches genes across files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum GeneKey {
    /// The stable id (Ensembl, version stripped); genes without one match by symbol.
    #[default]
    Id,
    /// The symbol; genes without one match by id.
    Symbol,
}

impl GeneKey {
    /// `id` or `symbol`.
    pub fn as_str(self) -> &'static str {
        match self {
            GeneKey::Id => "id",
            GeneKey::Symbol => "symbol",
        }
    }

    /// The other key: what a gene without this one is matched by.
    pub fn other(self) -> GeneKey {
        match self {
            GeneKey::Id => GeneKey::Symbol,
            GeneKey::Symbol => GeneKey::Id,
        }
    }
}

impl std::str::FromStr for GeneKey {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<GeneKey> {
        match s.to_ascii_lowercase().as_str() {
            "id" => Ok(GeneKey::Id),
            "symbol" => Ok(GeneKey::Symbol),
            _ => Err(crate::Error::invalid_input(format!(
                "unknown gene key {s:?}; expected id or symbol"
            ))),
        }
    }
}

/// One gene as a source names it. Every field is optional: a file of symbols has no ids, a
/// file of ids may have no symbols.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct GeneIdentity {
    /// The stable id without its version (`ENSG00000141510`).
    pub id: Option<String>,
    /// The version suffix that was stripped from the id (`17` of `ENSG00000141510.17`).
    pub id_version: Option<String>,
    /// The gene symbol (`TP53`).
    pub symbol: Option<String>,
    /// The species (a canonical name of [`SPECIES`], or what the input manifest says).
    pub species: Option<String>,
}

impl GeneIdentity {
    /// A gene named by one string: an id when it has the shape of one ([`looks_like_id`]),
    /// else a symbol. The species follows from the id's prefix.
    pub fn from_name(name: &str) -> GeneIdentity {
        let name = name.trim();
        if looks_like_id(name) {
            let (id, version) = split_version(name);
            GeneIdentity {
                species: species_of_id(id).map(str::to_string),
                id: Some(id.to_string()),
                id_version: version.map(str::to_string),
                symbol: None,
            }
        } else {
            GeneIdentity {
                symbol: (!name.is_empty()).then(|| name.to_string()),
                ..GeneIdentity::default()
            }
        }
    }

    /// The value of `key`, if the gene has it.
    pub fn get(&self, key: GeneKey) -> Option<&str> {
        match key {
            GeneKey::Id => self.id.as_deref(),
            GeneKey::Symbol => self.symbol.as_deref(),
        }
    }
}

/// The text that matches genes across files under `key`: the gene's `key`, else its other
/// key, else `None` (a gene with neither cannot be matched). Conversion, append and merge all
/// compare genes through this function (and [`super::GeneIndex`], which applies it).
pub fn match_key(gene: &GeneIdentity, key: GeneKey) -> Option<(GeneKey, &str)> {
    gene.get(key)
        .map(|v| (key, v))
        .or_else(|| gene.get(key.other()).map(|v| (key.other(), v)))
}

/// Whether `s` has the shape of a stable gene id: an Ensembl gene id (`ENS` + optional species
/// code + `G` + 11 digits, optionally `.version`), a FlyBase `FBgn` or a WormBase `WBGene` id.
pub fn looks_like_id(s: &str) -> bool {
    let (base, version) = split_version(s);
    if version.is_some_and(|v| v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit())) {
        return false;
    }
    let digits = |t: &str, n: usize| t.len() == n && t.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = base.strip_prefix("ENS") {
        // Species code (0 to 6 capital letters) then `G`, then 11 digits.
        let Some(g) = rest.len().checked_sub(12) else {
            return false;
        };
        let (code, tail) = rest.split_at(g);
        return code.bytes().all(|b| b.is_ascii_uppercase())
            && code.len() <= 6
            && tail.starts_with('G')
            && digits(&tail[1..], 11);
    }
    if let Some(rest) = base.strip_prefix("FBgn") {
        return digits(rest, 7);
    }
    if let Some(rest) = base.strip_prefix("WBGene") {
        return digits(rest, 8);
    }
    false
}

/// Splits `ENSG00000141510.17` into (`ENSG00000141510`, `Some("17")`); an id without a
/// version (or any other text) comes back whole.
pub fn split_version(s: &str) -> (&str, Option<&str>) {
    match s.rsplit_once('.') {
        Some((base, v))
            if !base.is_empty()
                && (base.starts_with("ENS")
                    || base.starts_with("FBgn")
                    || base.starts_with("WBGene")) =>
        {
            (base, Some(v))
        }
        _ => (s, None),
    }
}

/// The species whose ids start with the prefix of `id` ([`SPECIES`]), if any.
pub fn species_of_id(id: &str) -> Option<&'static str> {
    if let Some(rest) = id.strip_prefix("ENS") {
        // The species code is everything before the `G` that precedes the 11 digits.
        let code_end = rest.len().checked_sub(12)?;
        let prefix = &id[..3 + code_end + 1];
        return SPECIES
            .iter()
            .find(|(_, _, p)| *p == prefix)
            .map(|(name, _, _)| *name);
    }
    SPECIES
        .iter()
        .find(|(_, _, p)| !p.starts_with("ENS") && id.starts_with(p))
        .map(|(name, _, _)| *name)
}

/// The canonical name of a species given as a common name, a Latin name (`Homo sapiens`,
/// `homo_sapiens`) or an Ensembl dataset name (`hsapiens`); other text is kept as given,
/// lowercased and trimmed (a species cellarrow does not know is still a species).
pub fn normalize_species(s: &str) -> String {
    let t = s.trim().to_ascii_lowercase().replace('_', " ");
    for (name, latin, _) in SPECIES {
        let short = latin
            .split_once(' ')
            .map(|(genus, sp)| format!("{}{sp}", &genus[..1]));
        if t == *name || t == *latin || short.as_deref() == Some(t.as_str()) {
            return name.to_string();
        }
    }
    match t.as_str() {
        "" => UNKNOWN_SPECIES.to_string(),
        "homo sapiens sapiens" => "human".into(),
        "mice" | "murine" => "mouse".into(),
        other => other.to_string(),
    }
}

/// The species of most genes of a file, from their ids' prefixes; `None` when no id has a
/// known prefix.
pub fn infer_species<'a>(genes: impl IntoIterator<Item = &'a GeneIdentity>) -> Option<String> {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for g in genes {
        if let Some(s) = g.id.as_deref().and_then(species_of_id) {
            match counts.iter_mut().find(|(n, _)| *n == s) {
                Some(c) => c.1 += 1,
                None => counts.push((s, 1)),
            }
        }
    }
    // Ties go to the species listed first in SPECIES (human before mouse): deterministic.
    counts
        .into_iter()
        .max_by(|a, b| {
            a.1.cmp(&b.1).then_with(|| {
                let rank = |s: &str| SPECIES.iter().position(|(n, _, _)| *n == s);
                rank(b.0).cmp(&rank(a.0))
            })
        })
        .map(|(s, _)| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_recognised_and_versions_split() {
        assert!(looks_like_id("ENSG00000141510"));
        assert!(looks_like_id("ENSG00000141510.17"));
        assert!(looks_like_id("ENSMUSG00000051951"));
        assert!(looks_like_id("FBgn0000008"));
        assert!(looks_like_id("WBGene00000001"));
        for not in [
            "TP53",
            "CH507-9B2.2",
            "ENSG0000014151",
            "ENSG00000141510.x",
            "Rp1-1",
            "",
        ] {
            assert!(!looks_like_id(not), "{not}");
        }
        let g = GeneIdentity::from_name("ENSG00000141510.17");
        assert_eq!(g.id.as_deref(), Some("ENSG00000141510"));
        assert_eq!(g.id_version.as_deref(), Some("17"));
        assert_eq!(g.species.as_deref(), Some("human"));
        let s = GeneIdentity::from_name("CH507-9B2.2");
        assert_eq!((s.id, s.symbol.as_deref()), (None, Some("CH507-9B2.2")));
    }

    #[test]
    fn species_from_prefixes_and_names() {
        assert_eq!(species_of_id("ENSG00000141510"), Some("human"));
        assert_eq!(species_of_id("ENSMUSG00000051951"), Some("mouse"));
        assert_eq!(species_of_id("ENSXYZG00000051951"), None);
        assert_eq!(normalize_species("Homo sapiens"), "human");
        assert_eq!(normalize_species("mus_musculus"), "mouse");
        assert_eq!(normalize_species("hsapiens"), "human");
        assert_eq!(normalize_species(" Mouse "), "mouse");
        assert_eq!(normalize_species("axolotl"), "axolotl");
        let genes: Vec<GeneIdentity> = [
            "ENSMUSG00000051951",
            "ENSG00000141510",
            "ENSMUSG00000089699",
            "Xkr4",
        ]
        .iter()
        .map(|n| GeneIdentity::from_name(n))
        .collect();
        assert_eq!(infer_species(&genes).as_deref(), Some("mouse"));
        assert_eq!(infer_species(&genes[3..]), None);
    }

    #[test]
    fn match_key_falls_back_to_the_other_key() {
        let both = GeneIdentity {
            id: Some("ENSG1".into()),
            symbol: Some("A".into()),
            ..Default::default()
        };
        let sym = GeneIdentity::from_name("A");
        assert_eq!(match_key(&both, GeneKey::Id), Some((GeneKey::Id, "ENSG1")));
        assert_eq!(
            match_key(&both, GeneKey::Symbol),
            Some((GeneKey::Symbol, "A"))
        );
        assert_eq!(match_key(&sym, GeneKey::Id), Some((GeneKey::Symbol, "A")));
        assert_eq!(match_key(&GeneIdentity::default(), GeneKey::Id), None);
    }
}
