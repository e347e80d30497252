//! The genes of a corpus and the one rule that matches a file's gene to them.

use std::collections::HashMap;

use super::identity::{match_key, GeneIdentity, GeneKey};

/// One gene as a source file names it, after any ortholog mapping: `identity` is what it is
/// matched by (the reference species' gene for a mapped gene), `ortholog_of` the gene of the
/// other species it was mapped from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceGene {
    pub identity: GeneIdentity,
    pub ortholog_of: Option<GeneIdentity>,
}

impl SourceGene {
    /// A gene named by one string (see [`GeneIdentity::from_name`]).
    pub fn from_name(name: &str) -> SourceGene {
        SourceGene {
            identity: GeneIdentity::from_name(name),
            ortholog_of: None,
        }
    }
}

/// Keys by which samples' genes joined a corpus gene (beyond the sample that created it).
pub mod matched {
    /// Joined by the stable id.
    pub const ID: u8 = 1;
    /// Joined by the symbol.
    pub const SYMBOL: u8 = 2;
    /// Joined through the ortholog table (a gene of another species mapped onto it).
    pub const ORTHOLOG: u8 = 4;

    /// `id`, `symbol`, `ortholog` joined by `,` (`None` for none).
    pub fn label(bits: u8) -> Option<String> {
        let names: Vec<&str> = [(ID, "id"), (SYMBOL, "symbol"), (ORTHOLOG, "ortholog")]
            .iter()
            .filter(|(b, _)| bits & b != 0)
            .map(|(_, n)| *n)
            .collect();
        (!names.is_empty()).then(|| names.join(","))
    }

    /// The bits of a [`label`].
    pub fn parse(label: &str) -> u8 {
        label.split(',').fold(0, |acc, n| {
            acc | match n.trim() {
                "id" => ID,
                "symbol" => SYMBOL,
                "ortholog" => ORTHOLOG,
                _ => 0,
            }
        })
    }
}

/// A gene of the corpus: row `i` of `genes.parquet` is gene id `i`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gene {
    /// The key it was created under: its unique `name`.
    pub name: String,
    pub identity: GeneIdentity,
    /// Genes of other species mapped onto this one, distinct by id.
    pub orthologs: Vec<GeneIdentity>,
    /// [`matched`] bits.
    pub matched_by: u8,
}

/// The genes in id order, indexed by name, id and symbol, matching new genes by one
/// [`GeneKey`]:
///
/// 1. a gene with the key matches the gene with the same key value (ids compare without their
///    version);
/// 2. a gene without it matches, by its other key, the one gene that has that value (none when
///    several have it);
/// 3. a gene whose key matches nothing may still match, by its other key, the one gene that
///    lacks the key (a symbol-only gene of an earlier file, matched by an id-bearing one);
/// 4. otherwise it is a new gene, named by its key ([`match_key`]).
///
/// Genes of two known, different species never match (orthologs are mapped before matching).
#[derive(Debug, Clone)]
pub struct GeneIndex {
    key: GeneKey,
    genes: Vec<Gene>,
    by_name: HashMap<String, u32>,
    by_id: HashMap<String, Vec<u32>>,
    by_symbol: HashMap<String, Vec<u32>>,
    /// Ids of genes of other species mapped onto a gene -> that gene.
    by_ortholog: HashMap<String, u32>,
}

/// Where one source gene went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    /// An existing gene, joined by this key.
    Matched(u32, GeneKey),
    /// A gene created for it.
    New(u32),
    /// No gene (a fixed index, or a gene with neither id nor symbol).
    Unmatched,
}

impl Resolved {
    /// The gene id, if any.
    pub fn gene(self) -> Option<u32> {
        match self {
            Resolved::Matched(g, _) | Resolved::New(g) => Some(g),
            Resolved::Unmatched => None,
        }
    }
}

fn compatible(a: &GeneIdentity, b: &GeneIdentity) -> bool {
    match (a.species.as_deref(), b.species.as_deref()) {
        (Some(x), Some(y)) => x == y || x == super::UNKNOWN_SPECIES || y == super::UNKNOWN_SPECIES,
        _ => true,
    }
}

impl GeneIndex {
    /// An empty index matching by `key`.
    pub fn new(key: GeneKey) -> GeneIndex {
        GeneIndex {
            key,
            genes: Vec::new(),
            by_name: HashMap::new(),
            by_id: HashMap::new(),
            by_symbol: HashMap::new(),
            by_ortholog: HashMap::new(),
        }
    }

    /// An index of existing genes (a corpus's, in id order). Names must be unique.
    pub fn from_genes(key: GeneKey, genes: Vec<Gene>) -> Result<GeneIndex, String> {
        let mut index = GeneIndex::new(key);
        for g in genes {
            if index.by_name.contains_key(&g.name) {
                return Err(g.name);
            }
            index.push(g);
        }
        Ok(index)
    }

    /// The key genes are matched by.
    pub fn key(&self) -> GeneKey {
        self.key
    }

    /// The genes, in id order.
    pub fn genes(&self) -> &[Gene] {
        &self.genes
    }

    pub fn len(&self) -> usize {
        self.genes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.genes.is_empty()
    }

    /// The gene named `name` (its unique key).
    pub fn by_name(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    /// The gene a user's text names: its name, else its id (without version), else its
    /// symbol when exactly one gene has it. Used for model vocabularies and gene selections.
    pub fn lookup(&self, text: &str) -> Option<u32> {
        let text = text.trim();
        if let Some(i) = self.by_name(text) {
            return Some(i);
        }
        let g = GeneIdentity::from_name(text);
        if let Some(id) = &g.id {
            return self.unique(GeneKey::Id, id, |_| true);
        }
        self.unique(GeneKey::Symbol, g.symbol.as_deref()?, |_| true)
    }

    fn push(&mut self, g: Gene) -> u32 {
        let i = self.genes.len() as u32;
        self.by_name.insert(g.name.clone(), i);
        if let Some(id) = &g.identity.id {
            self.by_id.entry(id.clone()).or_default().push(i);
        }
        if let Some(s) = &g.identity.symbol {
            self.by_symbol.entry(s.clone()).or_default().push(i);
        }
        for o in &g.orthologs {
            if let Some(id) = &o.id {
                self.by_ortholog.entry(id.clone()).or_insert(i);
            }
        }
        self.genes.push(g);
        i
    }

    /// The gene a source gene was stored under when its file was converted (with the
    /// identity it has in the file, before any ortholog mapping): the gene it was mapped onto
    /// as an ortholog, else the gene the matching rule finds, else the gene named by its key.
    pub fn stored(&self, g: &GeneIdentity) -> Option<u32> {
        if let Some(&i) = g.id.as_ref().and_then(|id| self.by_ortholog.get(id)) {
            return Some(i);
        }
        if let Some((i, _)) = self.find(g) {
            return Some(i);
        }
        let (_, name) = match_key(g, self.key)?;
        // A name another species took first was qualified with the species.
        g.species
            .as_ref()
            .and_then(|s| self.by_name(&format!("{s}:{name}")))
            .or_else(|| self.by_name(name))
    }

    fn table(&self, key: GeneKey) -> &HashMap<String, Vec<u32>> {
        match key {
            GeneKey::Id => &self.by_id,
            GeneKey::Symbol => &self.by_symbol,
        }
    }

    /// The one gene with `value` as its `key` that passes `keep`.
    fn unique(&self, key: GeneKey, value: &str, keep: impl Fn(&Gene) -> bool) -> Option<u32> {
        let mut hits = self
            .table(key)
            .get(value)?
            .iter()
            .copied()
            .filter(|&i| keep(&self.genes[i as usize]));
        let first = hits.next()?;
        hits.next().is_none().then_some(first)
    }

    /// The existing gene `g` matches, and by which key (rules 1 to 3), without changing the index.
    pub fn find(&self, g: &GeneIdentity) -> Option<(u32, GeneKey)> {
        let key = self.key;
        let other = key.other();
        let ok = |x: &Gene| compatible(&x.identity, g);
        if let Some(k) = g.get(key) {
            if let Some(i) = self.unique(key, k, ok) {
                return Some((i, key));
            }
            let s = g.get(other)?;
            return self
                .unique(other, s, |x| ok(x) && x.identity.get(key).is_none())
                .map(|i| (i, other));
        }
        let s = g.get(other)?;
        self.unique(other, s, ok).map(|i| (i, other))
    }

    /// Resolves one source gene: an existing gene (filling in what it lacked and noting the
    /// key it was joined by), else, when `grow`, a new one.
    pub fn resolve(&mut self, g: &SourceGene, grow: bool) -> Resolved {
        if let Some((i, by)) = self.find(&g.identity) {
            self.join(i, g, Some(by));
            return Resolved::Matched(i, by);
        }
        if !grow {
            return Resolved::Unmatched;
        }
        let Some((_, name)) = match_key(&g.identity, self.key) else {
            return Resolved::Unmatched;
        };
        // Names are unique. A name taken by a gene of another known species (the same symbol
        // in two species) is qualified by the species; one taken by a gene rules 1-3 did not
        // match otherwise is that gene.
        let mut name = name.to_string();
        if let Some(i) = self.by_name(&name) {
            let species = g
                .identity
                .species
                .as_deref()
                .unwrap_or(super::UNKNOWN_SPECIES);
            if compatible(&self.genes[i as usize].identity, &g.identity) {
                self.join(i, g, None);
                return Resolved::Matched(i, self.key);
            }
            name = format!("{species}:{name}");
            if let Some(i) = self.by_name(&name) {
                self.join(i, g, None);
                return Resolved::Matched(i, self.key);
            }
        }
        let i = self.push(Gene {
            name,
            identity: g.identity.clone(),
            orthologs: Vec::new(),
            matched_by: 0,
        });
        self.join(i, g, None);
        Resolved::New(i)
    }

    /// Records `g` on gene `i`: its missing fields, its ortholog, the key it joined by.
    fn join(&mut self, i: u32, g: &SourceGene, by: Option<GeneKey>) {
        let gene = &mut self.genes[i as usize];
        let mut added_id = None;
        let mut added_symbol = None;
        if gene.identity.id.is_none() && g.identity.id.is_some() {
            gene.identity.id = g.identity.id.clone();
            gene.identity.id_version = g.identity.id_version.clone();
            added_id = gene.identity.id.clone();
        }
        if gene.identity.symbol.is_none() && g.identity.symbol.is_some() {
            gene.identity.symbol = g.identity.symbol.clone();
            added_symbol = gene.identity.symbol.clone();
        }
        let unknown = |s: &Option<String>| s.as_deref().is_none_or(|s| s == super::UNKNOWN_SPECIES);
        if unknown(&gene.identity.species) && !unknown(&g.identity.species) {
            gene.identity.species = g.identity.species.clone();
        }
        if let Some(o) = &g.ortholog_of {
            if !gene
                .orthologs
                .iter()
                .any(|x| x.id == o.id && x.symbol == o.symbol)
            {
                gene.orthologs.push(o.clone());
            }
            if let Some(id) = &o.id {
                self.by_ortholog.entry(id.clone()).or_insert(i);
            }
            gene.matched_by |= matched::ORTHOLOG;
        }
        match by {
            Some(GeneKey::Id) => gene.matched_by |= matched::ID,
            Some(GeneKey::Symbol) => gene.matched_by |= matched::SYMBOL,
            None => {}
        }
        if let Some(id) = added_id {
            self.by_id.entry(id).or_default().push(i);
        }
        if let Some(s) = added_symbol {
            self.by_symbol.entry(s).or_default().push(i);
        }
    }

    /// Resolves the genes of several files at once, as one conversion does: genes that have
    /// the key first (every file), then genes that lack it, so that a symbol-only file finds
    /// the genes an id-bearing file names whatever their order. New genes are then numbered in
    /// the order the files name them (file by file, column by column), after the existing ones.
    pub fn resolve_files(&mut self, files: &[&[SourceGene]], grow: bool) -> Vec<Vec<Resolved>> {
        let n_old = self.genes.len() as u32;
        let mut out: Vec<Vec<Resolved>> = files
            .iter()
            .map(|f| vec![Resolved::Unmatched; f.len()])
            .collect();
        let key = self.key;
        for first_pass in [true, false] {
            for (f, genes) in files.iter().enumerate() {
                for (c, g) in genes.iter().enumerate() {
                    if g.identity.get(key).is_some() == first_pass {
                        out[f][c] = self.resolve(g, grow);
                    }
                }
            }
        }
        self.renumber_new(n_old, &mut out);
        out
    }

    /// Resolves the genes of another corpus (its `genes.parquet`, [`super::table::read_genes`])
    /// into this one, as a merge of two corpora does: each gene is matched by the same rule as
    /// a file's genes (growing this index), its orthologs and keys carried over. Returns the
    /// new id of each of `other`'s genes, in its order.
    pub fn merge_genes(&mut self, other: &[Gene]) -> Vec<u32> {
        let sources: Vec<SourceGene> = other
            .iter()
            .map(|g| SourceGene {
                identity: g.identity.clone(),
                ortholog_of: None,
            })
            .collect();
        let resolved = self
            .resolve_files(&[&sources], true)
            .pop()
            .unwrap_or_default();
        resolved
            .into_iter()
            .zip(other)
            .map(|(r, g)| {
                let id = r
                    .gene()
                    .expect("a corpus gene has a name, so it always resolves when growing");
                let mine = &mut self.genes[id as usize];
                mine.matched_by |= g.matched_by;
                for o in &g.orthologs {
                    if !mine
                        .orthologs
                        .iter()
                        .any(|x| x.id == o.id && x.symbol == o.symbol)
                    {
                        mine.orthologs.push(o.clone());
                        if let Some(oid) = &o.id {
                            self.by_ortholog.entry(oid.clone()).or_insert(id);
                        }
                    }
                }
                id
            })
            .collect()
    }

    /// Puts the genes created since `n_old` in first-seen order of `out` and rewrites `out`.
    fn renumber_new(&mut self, n_old: u32, out: &mut [Vec<Resolved>]) {
        let n_new = self.genes.len() as u32 - n_old;
        if n_new == 0 {
            return;
        }
        let mut new_id = vec![u32::MAX; n_new as usize];
        let mut next = n_old;
        for r in out.iter().flatten() {
            if let Some(g) = r.gene().filter(|&g| g >= n_old) {
                let slot = &mut new_id[(g - n_old) as usize];
                if *slot == u32::MAX {
                    *slot = next;
                    next += 1;
                }
            }
        }
        let map = |g: u32| {
            if g >= n_old {
                new_id[(g - n_old) as usize]
            } else {
                g
            }
        };
        for r in out.iter_mut().flatten() {
            *r = match *r {
                Resolved::Matched(g, k) => Resolved::Matched(map(g), k),
                Resolved::New(g) => Resolved::New(map(g)),
                Resolved::Unmatched => Resolved::Unmatched,
            };
        }
        let mut moved: Vec<Option<Gene>> = self.genes.drain(n_old as usize..).map(Some).collect();
        let mut order: Vec<(u32, usize)> = new_id
            .iter()
            .enumerate()
            .map(|(old, &new)| (new, old))
            .collect();
        order.sort_unstable();
        let old: Vec<Gene> = std::mem::take(&mut self.genes);
        let mut rebuilt = GeneIndex::new(self.key);
        for g in old {
            rebuilt.push(g);
        }
        for (_, o) in order {
            rebuilt.push(moved[o].take().expect("each new gene is moved once"));
        }
        *self = rebuilt;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gene(id: Option<&str>, symbol: Option<&str>) -> SourceGene {
        SourceGene {
            identity: GeneIdentity {
                id: id.map(str::to_string),
                id_version: None,
                symbol: symbol.map(str::to_string),
                species: id
                    .and_then(super::super::identity::species_of_id)
                    .map(str::to_string),
            },
            ortholog_of: None,
        }
    }

    #[test]
    fn ids_match_first_and_symbols_fill_in_whatever_the_file_order() {
        let symbols = [gene(None, Some("TP53")), gene(None, Some("ONLY"))];
        let ids = [
            gene(Some("ENSG00000141510"), Some("TP53")),
            gene(Some("ENSG00000000003"), Some("TSPAN6")),
        ];
        let mut index = GeneIndex::new(GeneKey::Id);
        let r = index.resolve_files(&[&symbols, &ids], true);
        // First-seen order: TP53 (file 1) is gene 0 though the id-bearing file created it.
        assert_eq!(index.genes()[0].name, "ENSG00000141510");
        assert_eq!(r[0][0], Resolved::Matched(0, GeneKey::Symbol));
        assert_eq!(r[0][1], Resolved::New(1));
        assert_eq!(index.genes()[1].name, "ONLY");
        assert_eq!(r[1][0], Resolved::New(0));
        assert_eq!(index.genes()[0].matched_by, matched::SYMBOL);
        assert_eq!(index.len(), 3);
        assert_eq!(index.by_name("ENSG00000000003"), Some(2));
    }

    #[test]
    fn merging_another_corpus_keeps_its_orthologs() {
        let mut a = GeneIndex::new(GeneKey::Id);
        a.resolve_files(&[&[gene(Some("ENSG00000000001"), Some("A"))]], true);
        let mut b = GeneIndex::new(GeneKey::Id);
        let mut mapped = gene(Some("ENSG00000000001"), Some("A"));
        mapped.ortholog_of = Some(GeneIdentity::from_name("ENSMUSG00000000001"));
        b.resolve_files(&[&[gene(None, Some("B")), mapped]], true);
        let ids = a.merge_genes(b.genes());
        assert_eq!(ids, [1, 0]);
        assert_eq!(a.genes()[0].orthologs.len(), 1);
        assert_eq!(
            a.stored(&GeneIdentity::from_name("ENSMUSG00000000001")),
            Some(0)
        );
    }

    #[test]
    fn an_ambiguous_symbol_matches_nothing() {
        let mut index = GeneIndex::new(GeneKey::Id);
        index.resolve_files(
            &[&[
                gene(Some("ENSG00000000001"), Some("A")),
                gene(Some("ENSG00000000002"), Some("A")),
            ]],
            true,
        );
        let r = index.resolve_files(&[&[gene(None, Some("A"))]], true);
        assert_eq!(r[0][0], Resolved::New(2));
    }

    #[test]
    fn symbol_key_and_species() {
        let mut index = GeneIndex::new(GeneKey::Symbol);
        let human = gene(Some("ENSG00000000001"), Some("A"));
        let mouse = gene(Some("ENSMUSG00000000001"), Some("A"));
        let r = index.resolve_files(&[&[human], &[mouse]], true);
        // Same symbol, different known species: two genes, the second named with its species.
        assert_eq!(r[0][0], Resolved::New(0));
        assert_eq!(r[1][0], Resolved::New(1));
        assert_eq!(index.genes()[1].name, "mouse:A");
        let mut fixed = index.clone();
        assert_eq!(
            fixed.resolve(&gene(None, Some("B")), false),
            Resolved::Unmatched
        );
    }
}
