//! Ontologies (the Cell Ontology, UBERON, ...) for ontology-aware labels: load a hierarchy,
//! resolve free-text labels to term ids, walk up the hierarchy, and cut labels to a level.
//!
//! # Sources
//! - The JSON files the `cellxgene-ontology-guide` package ships
//!   (`cellxgene_ontology_guide/data/CL-ontology-v2026-03-26.json.zst`, `UBERON-...`): an object
//!   mapping each term id to `{label, synonyms, deprecated, ancestors: {id: distance}}`,
//!   zstd-compressed or plain. The file carries its own transitive ancestors, which this module
//!   uses as they are; a term's parents are its ancestors at distance 1.
//! - An OBO 1.2/1.4 file (`[Term]` stanzas with `id`, `name`, `synonym`, `is_a`,
//!   `relationship`, `is_obsolete`). See [`OboOptions`].
//!
//! [`Ontology::load`] tells the formats apart by their content, and [`locate`] turns a name
//! such as `CL` into a file of the directory named by `CELLARROW_ONTOLOGY_DIR`. Nothing is
//! downloaded.
//!
//! # Which relations make the hierarchy
//! `is_a` and `part_of`. The cellxgene files were built that way (their ancestors follow
//! `rdfs:subClassOf` and `part_of` restrictions, keeping only terms of the file's own
//! ontology), and an OBO file is read the same way by default (its `relationship: part_of`
//! lines are parents too) so that one ontology gives the same answers in either format;
//! [`OboOptions::is_a_only`] reads `is_a` alone. `intersection_of` (logical definitions) is not
//! followed: released OBO files state the inferred `is_a` lines explicitly.
//!
//! # Resolving a value
//! [`Ontology::resolve`] maps a value to a term id by, in this order: the term id itself, the
//! exact label, an exact synonym (OBO `EXACT` synonyms; the cellxgene files keep only those).
//! Matching is exact (case and spaces count): a value that matches nothing is unresolved and is
//! never guessed. When a value matches several terms, live terms are preferred over deprecated
//! ones; if several remain, it is an error that names the value and the ids.
//!
//! # Depth and cuts
//! The depth of a term is the length of its shortest path up to a root (a term with no parent);
//! a root has depth 0 (roots the file defines count before parents it only names). [`Ontology::cut_at_depth`] maps a term to its ancestor at a chosen depth,
//! and [`Ontology::cut_to_terms`] to its most specific ancestor among a chosen [`TermSet`]: the
//! coarse labels a class-balanced sampler draws over.

mod column;
mod json;
mod locate;
mod obo;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::{Error, Result};

pub use column::{resolve_column, ResolvedColumn, Unresolved};
pub use locate::{locate, locate_in, ONTOLOGY_DIR_ENV};
pub use obo::OboOptions;

/// One term of an ontology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    /// The term id, e.g. `CL:0000084`.
    pub id: String,
    /// The label (`name` in OBO), e.g. `T cell`; empty when the source gives none (a parent
    /// that the file names but does not define gets an empty label).
    pub label: String,
    /// Exact synonyms, e.g. `T lymphocyte`.
    pub synonyms: Vec<String>,
    /// Direct parents (`is_a`, and `part_of` when followed), sorted.
    pub parents: Vec<String>,
    /// Obsolete in the source (`is_obsolete: true`, `deprecated: true`).
    pub deprecated: bool,
}

/// The transitive ancestors of one term, computed once.
#[derive(Debug)]
struct Lineage {
    /// Ancestor term indices, sorted (for binary search), without the term itself.
    ancestors: Box<[u32]>,
    /// Shortest distance to each ancestor, parallel to `ancestors`.
    distances: Box<[u32]>,
    depth: u32,
}

impl Lineage {
    fn contains(&self, ancestor: u32) -> bool {
        self.ancestors.binary_search(&ancestor).is_ok()
    }
}

/// An ontology held in memory: terms, their labels and synonyms, and the hierarchy, with each
/// term's ancestors computed on first use and cached.
///
/// ```
/// use cellarrow::ontology::Ontology;
/// let obo = "format-version: 1.2\nontology: cl\n\n\
///     [Term]\nid: CL:0000000\nname: cell\n\n\
///     [Term]\nid: CL:0000542\nname: lymphocyte\nis_a: CL:0000000 ! cell\n\n\
///     [Term]\nid: CL:0000084\nname: T cell\nsynonym: \"T lymphocyte\" EXACT []\nis_a: CL:0000542\n";
/// let cl = Ontology::from_obo_str(obo, "cl.obo", &Default::default())?;
/// assert_eq!(cl.resolve("T lymphocyte")?, Some("CL:0000084"));
/// assert!(cl.is_a("CL:0000084", "CL:0000000"));
/// assert_eq!(cl.depth("CL:0000084"), Some(2));
/// assert_eq!(cl.cut_at_depth("CL:0000084", 1), Some("CL:0000542"));
/// # Ok::<(), cellarrow::Error>(())
/// ```
pub struct Ontology {
    name: String,
    version: Option<String>,
    source: PathBuf,
    terms: Vec<Term>,
    by_id: HashMap<String, u32>,
    by_label: HashMap<String, Vec<u32>>,
    by_synonym: HashMap<String, Vec<u32>>,
    parents: Vec<Vec<u32>>,
    /// Ancestors with distances as the source file states them (the cellxgene JSON); `None`
    /// when they are computed from `parents`.
    given: Option<Vec<Vec<(u32, u32)>>>,
    /// Terms at this index and beyond are parents the file names without defining.
    n_defined: usize,
    lineage: Vec<OnceLock<Lineage>>,
}

impl std::fmt::Debug for Ontology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ontology")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("source", &self.source)
            .field("terms", &self.terms.len())
            .finish()
    }
}

/// What a source parser hands to [`Ontology::build`].
pub(crate) struct Parsed {
    pub name: String,
    pub version: Option<String>,
    pub terms: Vec<Term>,
    /// Per term, its ancestors and distances as ids, when the source states them.
    pub given: Option<Vec<Vec<(String, u32)>>>,
}

impl Ontology {
    /// Loads an ontology file: a cellxgene-ontology-guide JSON file (`.json` or `.json.zst`)
    /// or an OBO file (read with [`OboOptions::default`]), told apart by content.
    pub fn load(path: impl AsRef<Path>) -> Result<Ontology> {
        Self::load_with(path, &OboOptions::default())
    }

    /// [`load`](Self::load) with options for OBO files.
    pub fn load_with(path: impl AsRef<Path>, options: &OboOptions) -> Result<Ontology> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, "reading", e))?;
        let bytes = if bytes.starts_with(&ZSTD_MAGIC) {
            zstd::stream::decode_all(bytes.as_slice()).map_err(|e| {
                Error::invalid_input(format!(
                    "not a readable zstd stream ({e}); expected a zstd-compressed ontology JSON file"
                ))
                .with_path(path)
            })?
        } else {
            bytes
        };
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first == Some(&b'{') {
            json::parse(&bytes, path)
        } else {
            let text = std::str::from_utf8(&bytes).map_err(|e| {
                Error::invalid_input(format!(
                    "not UTF-8 text ({e}); expected an OBO file or an ontology JSON file"
                ))
                .with_path(path)
            })?;
            obo::parse(text, path, options)
        }
    }

    /// Parses OBO text; `source` names it in errors.
    pub fn from_obo_str(
        text: &str,
        source: impl AsRef<Path>,
        options: &OboOptions,
    ) -> Result<Ontology> {
        obo::parse(text, source.as_ref(), options)
    }

    /// Parses the JSON format of the cellxgene-ontology-guide files (uncompressed); `source`
    /// names it in errors and gives the ontology its name (`CL-ontology-v2026-03-26.json`).
    pub fn from_json_slice(bytes: &[u8], source: impl AsRef<Path>) -> Result<Ontology> {
        json::parse(bytes, source.as_ref())
    }

    /// Indexes parsed terms; checks ids, parents and cycles.
    pub(crate) fn build(parsed: Parsed, source: &Path) -> Result<Ontology> {
        let Parsed {
            name,
            version,
            mut terms,
            given,
        } = parsed;
        let mut by_id: HashMap<String, u32> = HashMap::with_capacity(terms.len());
        for (i, t) in terms.iter().enumerate() {
            if t.id.is_empty() {
                return Err(parse_error(source, "a term with an empty id"));
            }
            if by_id.insert(t.id.clone(), i as u32).is_some() {
                return Err(parse_error(
                    source,
                    format!(
                        "term {} is defined twice; expected one definition per id",
                        t.id
                    ),
                ));
            }
        }
        // A parent or ancestor the file names but does not define (an imported term) becomes
        // a root with an empty label, so the terms under it still share it as an ancestor.
        let n_defined = terms.len();
        let mut parents: Vec<Vec<u32>> = Vec::with_capacity(n_defined);
        for i in 0..n_defined {
            let names = std::mem::take(&mut terms[i].parents);
            let mut ix: Vec<u32> = names
                .iter()
                .map(|p| intern(p, &mut terms, &mut by_id))
                .collect();
            terms[i].parents = names;
            ix.sort_unstable();
            ix.dedup();
            parents.push(ix);
        }
        let given = match given {
            None => None,
            Some(given) => {
                let mut out = Vec::with_capacity(n_defined);
                for (i, list) in given.into_iter().enumerate() {
                    let mut v = Vec::with_capacity(list.len());
                    for (a, d) in list {
                        let j = intern(&a, &mut terms, &mut by_id);
                        if j as usize == i {
                            return Err(parse_error(
                                source,
                                format!("term {a} lists itself as its own ancestor"),
                            ));
                        }
                        v.push((j, d));
                    }
                    v.sort_unstable();
                    out.push(v);
                }
                out.resize(terms.len(), Vec::new());
                Some(out)
            }
        };
        parents.resize(terms.len(), Vec::new());
        if given.is_none() {
            check_acyclic(&terms, &parents, source)?;
        }
        let mut by_label: HashMap<String, Vec<u32>> = HashMap::new();
        let mut by_synonym: HashMap<String, Vec<u32>> = HashMap::new();
        for (i, t) in terms.iter().enumerate() {
            if !t.label.is_empty() {
                by_label.entry(t.label.clone()).or_default().push(i as u32);
            }
            for s in &t.synonyms {
                let list = by_synonym.entry(s.clone()).or_default();
                if list.last() != Some(&(i as u32)) {
                    list.push(i as u32);
                }
            }
        }
        let lineage = (0..terms.len()).map(|_| OnceLock::new()).collect();
        Ok(Ontology {
            name,
            version,
            source: source.to_path_buf(),
            terms,
            by_id,
            by_label,
            by_synonym,
            parents,
            given,
            n_defined,
            lineage,
        })
    }

    /// The ontology's name, e.g. `CL` (from the file name of a cellxgene file, the `ontology:`
    /// header of an OBO file in upper case, else the file stem).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The version, e.g. `v2026-03-26` (cellxgene file name, OBO `data-version:`), if known.
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    /// The file it was read from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Every term, in the source's order (sorted by id for the JSON files), then the parents
    /// the file names without defining.
    pub fn terms(&self) -> &[Term] {
        &self.terms
    }

    /// Number of terms.
    pub fn len(&self) -> usize {
        self.terms.len()
    }

    /// Whether the ontology has no terms.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The term with this id.
    pub fn term(&self, id: &str) -> Option<&Term> {
        self.index(id).map(|i| &self.terms[i as usize])
    }

    pub(crate) fn index(&self, id: &str) -> Option<u32> {
        self.by_id.get(id).copied()
    }

    /// The term id a value names: the id itself, else the exact label, else an exact synonym
    /// (see the [module docs](self)); `Ok(None)` when nothing matches. Errors when the value
    /// names several live terms (or, with no live match, several deprecated ones).
    pub fn resolve(&self, value: &str) -> Result<Option<&str>> {
        Ok(self
            .resolve_index(value)?
            .map(|i| self.terms[i as usize].id.as_str()))
    }

    pub(crate) fn resolve_index(&self, value: &str) -> Result<Option<u32>> {
        if let Some(&i) = self.by_id.get(value) {
            return Ok(Some(i));
        }
        if let Some(c) = self.by_label.get(value) {
            return self.pick(value, "label", c).map(Some);
        }
        if let Some(c) = self.by_synonym.get(value) {
            return self.pick(value, "synonym", c).map(Some);
        }
        Ok(None)
    }

    fn pick(&self, value: &str, kind: &str, candidates: &[u32]) -> Result<u32> {
        let live: Vec<u32> = candidates
            .iter()
            .copied()
            .filter(|&i| !self.terms[i as usize].deprecated)
            .collect();
        let chosen: &[u32] = if live.is_empty() { candidates } else { &live };
        if let [one] = chosen {
            return Ok(*one);
        }
        let names: Vec<String> = chosen
            .iter()
            .map(|&i| {
                let t = &self.terms[i as usize];
                format!("{} ('{}')", t.id, t.label)
            })
            .collect();
        Err(Error::invalid_input(format!(
            "{}: the {kind} '{value}' names {} terms: {}; give the term id instead",
            self.name,
            chosen.len(),
            names.join(", ")
        ))
        .with_path(&self.source))
    }

    fn lineage(&self, i: u32) -> &Lineage {
        self.lineage[i as usize].get_or_init(|| self.compute_lineage(i))
    }

    fn is_root(&self, i: u32) -> bool {
        match &self.given {
            Some(g) => g[i as usize].is_empty(),
            None => self.parents[i as usize].is_empty(),
        }
    }

    fn compute_lineage(&self, i: u32) -> Lineage {
        let mut pairs: Vec<(u32, u32)> = match &self.given {
            Some(g) => g[i as usize].clone(),
            None => {
                // Breadth first: the first visit is the shortest distance.
                let mut seen: HashMap<u32, u32> = HashMap::new();
                let mut frontier = vec![i];
                let mut distance = 0;
                while !frontier.is_empty() {
                    distance += 1;
                    let mut next = Vec::new();
                    for t in frontier {
                        for &p in &self.parents[t as usize] {
                            if p != i && !seen.contains_key(&p) {
                                seen.insert(p, distance);
                                next.push(p);
                            }
                        }
                    }
                    frontier = next;
                }
                seen.into_iter().collect()
            }
        };
        pairs.sort_unstable();
        // Roots the file defines count first: a `part_of` into an ontology the file does not
        // carry must not make a deep term look shallow.
        let root_distance = |defined: bool| {
            pairs
                .iter()
                .filter(|&&(a, _)| self.is_root(a) && (!defined || (a as usize) < self.n_defined))
                .map(|&(_, d)| d)
                .min()
        };
        let depth = if self.is_root(i) {
            0
        } else {
            root_distance(true)
                .or_else(|| root_distance(false))
                // Only a JSON file whose ancestors never reach a root gets here.
                .unwrap_or_else(|| pairs.iter().map(|&(_, d)| d).max().unwrap_or(0))
        };
        Lineage {
            ancestors: pairs.iter().map(|&(a, _)| a).collect(),
            distances: pairs.iter().map(|&(_, d)| d).collect(),
            depth,
        }
    }

    /// The transitive ancestors of a term (not the term itself) with their shortest distance,
    /// nearest first (then by id); `None` for an unknown id.
    pub fn ancestors(&self, id: &str) -> Option<Vec<(&str, u32)>> {
        let l = self.lineage(self.index(id)?);
        let mut v: Vec<(&str, u32)> = l
            .ancestors
            .iter()
            .zip(l.distances.iter())
            .map(|(&a, &d)| (self.terms[a as usize].id.as_str(), d))
            .collect();
        v.sort_unstable_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(b.0)));
        Some(v)
    }

    /// Whether `term` is `ancestor` or one of its descendants (both given as ids); false when
    /// either is unknown.
    pub fn is_a(&self, term: &str, ancestor: &str) -> bool {
        match (self.index(term), self.index(ancestor)) {
            (Some(t), Some(a)) => self.is_a_index(t, a),
            _ => false,
        }
    }

    pub(crate) fn is_a_index(&self, term: u32, ancestor: u32) -> bool {
        term == ancestor || self.lineage(term).contains(ancestor)
    }

    /// The terms that are `id` or under it, sorted by id; empty for an unknown id.
    pub fn descendants(&self, id: &str) -> Vec<&str> {
        let Some(a) = self.index(id) else {
            return Vec::new();
        };
        let mut v: Vec<&str> = (0..self.terms.len() as u32)
            .filter(|&t| self.is_a_index(t, a))
            .map(|t| self.terms[t as usize].id.as_str())
            .collect();
        v.sort_unstable();
        v
    }

    /// The depth of a term: its shortest distance up to a root (0 for a root), counting the
    /// roots the file defines before those it only names.
    pub fn depth(&self, id: &str) -> Option<u32> {
        self.index(id).map(|i| self.depth_index(i))
    }

    pub(crate) fn depth_index(&self, i: u32) -> u32 {
        self.lineage(i).depth
    }

    /// The label of a term cut at `depth`: the term itself when it is no deeper, else its
    /// ancestor at that depth. When several ancestors lie at that depth (a term with several
    /// parents), one the file defines wins over one it only names, then the nearest, then the
    /// smallest id; when none does (possible only where the source's ancestors skip a level),
    /// the deepest ancestor above `depth`. `None` for an unknown id.
    pub fn cut_at_depth(&self, id: &str, depth: u32) -> Option<&str> {
        let i = self.index(id)?;
        Some(
            self.terms[self.cut_at_depth_index(i, depth) as usize]
                .id
                .as_str(),
        )
    }

    pub(crate) fn cut_at_depth_index(&self, i: u32, depth: u32) -> u32 {
        let l = self.lineage(i);
        if l.depth <= depth {
            return i;
        }
        // Deeper first, then terms the file defines, then nearer, then the smaller id.
        let best = l
            .ancestors
            .iter()
            .zip(l.distances.iter())
            .map(|(&a, &d)| (a, self.depth_index(a), d))
            .filter(|&(_, ad, _)| ad <= depth)
            .min_by(|x, y| {
                let stub = |t: u32| t as usize >= self.n_defined;
                y.1.cmp(&x.1)
                    .then(stub(x.0).cmp(&stub(y.0)))
                    .then(x.2.cmp(&y.2))
                    .then_with(|| {
                        self.terms[x.0 as usize]
                            .id
                            .cmp(&self.terms[y.0 as usize].id)
                    })
            });
        // A term deeper than `depth` has a root (depth 0) among its ancestors.
        best.map_or(i, |b| b.0)
    }

    /// A set of terms to cut labels to, given as ids, labels or synonyms; errors naming the
    /// values that do not resolve.
    pub fn term_set<S: AsRef<str>>(&self, values: &[S]) -> Result<TermSet> {
        let mut ix = Vec::with_capacity(values.len());
        let mut missing = Vec::new();
        for v in values {
            match self.resolve_index(v.as_ref())? {
                Some(i) => ix.push(i),
                None => missing.push(format!("'{}'", v.as_ref())),
            }
        }
        if !missing.is_empty() {
            return Err(Error::invalid_input(format!(
                "{}: {} of the chosen terms are not in the ontology: {}",
                self.name,
                missing.len(),
                missing.join(", ")
            ))
            .with_path(&self.source));
        }
        ix.sort_unstable();
        ix.dedup();
        Ok(TermSet {
            ontology: self.name.clone(),
            n_terms: self.terms.len(),
            terms: ix,
        })
    }

    /// The most specific term of `set` that is `id` or one of its ancestors; `Ok(None)` when
    /// the term is under none of them, or unknown. Errors when two terms of the set both
    /// qualify and neither is under the other (the cut is ambiguous for this term).
    pub fn cut_to_terms(&self, id: &str, set: &TermSet) -> Result<Option<&str>> {
        let Some(i) = self.index(id) else {
            return Ok(None);
        };
        Ok(self
            .cut_to_terms_index(i, set)?
            .map(|j| self.terms[j as usize].id.as_str()))
    }

    pub(crate) fn cut_to_terms_index(&self, i: u32, set: &TermSet) -> Result<Option<u32>> {
        if set.ontology != self.name || set.n_terms != self.terms.len() {
            return Err(Error::invalid_input(format!(
                "a term set of ontology {} used with ontology {}",
                set.ontology, self.name
            )));
        }
        let candidates: Vec<u32> = set
            .terms
            .iter()
            .copied()
            .filter(|&s| self.is_a_index(i, s))
            .collect();
        // Drop every candidate that is an ancestor of another one.
        let specific: Vec<u32> = candidates
            .iter()
            .copied()
            .filter(|&c| !candidates.iter().any(|&o| o != c && self.is_a_index(o, c)))
            .collect();
        match specific.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(*one)),
            many => {
                let names: Vec<String> = many
                    .iter()
                    .map(|&j| {
                        let t = &self.terms[j as usize];
                        format!("{} ('{}')", t.id, t.label)
                    })
                    .collect();
                let t = &self.terms[i as usize];
                Err(Error::invalid_input(format!(
                    "{}: term {} ('{}') is under {} of the chosen terms, none under another: {}; \
                     add a more specific term or remove one",
                    self.name,
                    t.id,
                    t.label,
                    many.len(),
                    names.join(", ")
                )))
            }
        }
    }
}

/// A chosen set of terms of one ontology, to cut labels to (see
/// [`Ontology::cut_to_terms`]); made by [`Ontology::term_set`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TermSet {
    ontology: String,
    n_terms: usize,
    terms: Vec<u32>,
}

impl TermSet {
    /// Number of terms in the set.
    pub fn len(&self) -> usize {
        self.terms.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }
}

/// The index of term `id`, adding an undefined (stub) term when the file only names it.
fn intern(id: &str, terms: &mut Vec<Term>, by_id: &mut HashMap<String, u32>) -> u32 {
    if let Some(&j) = by_id.get(id) {
        return j;
    }
    let j = terms.len() as u32;
    terms.push(Term {
        id: id.to_string(),
        label: String::new(),
        synonyms: Vec::new(),
        parents: Vec::new(),
        deprecated: false,
    });
    by_id.insert(id.to_string(), j);
    j
}

/// The ontology an argument names ([`locate`]: a file, or a name looked up in
/// [`ONTOLOGY_DIR_ENV`]), loaded once per process and shared: later calls that name the same
/// file, unchanged (same size and modification time), get the same [`Ontology`]. Loaders plan
/// every epoch and every worker anew, and parsing the Cell Ontology costs more than a plan.
pub fn shared(spec: &str) -> Result<Arc<Ontology>> {
    type Key = (PathBuf, u64, Option<std::time::SystemTime>);
    static LOADED: Mutex<Vec<(Key, Arc<Ontology>)>> = Mutex::new(Vec::new());
    let path = locate(spec)?;
    let meta = std::fs::metadata(&path).map_err(|e| Error::io(&path, "reading", e))?;
    let canonical = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
    let key: Key = (canonical, meta.len(), meta.modified().ok());
    if let Some((_, o)) = LOADED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|(k, _)| *k == key)
    {
        return Ok(o.clone());
    }
    // Parsed without the lock: another thread may parse the same file meanwhile, and the
    // first to finish is kept.
    let loaded = Arc::new(Ontology::load(&path)?);
    let mut cache = LOADED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, o)) = cache.iter().find(|(k, _)| *k == key) {
        return Ok(o.clone());
    }
    cache.retain(|(k, _)| k.0 != key.0);
    cache.push((key, loaded.clone()));
    Ok(loaded)
}

/// The first bytes of a zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// An error about an ontology file that does not parse.
pub(crate) fn parse_error(source: &Path, message: impl Into<String>) -> Error {
    Error::invalid_input(message).with_path(source)
}

/// Fails with the terms of a cycle when the parent graph has one.
fn check_acyclic(terms: &[Term], parents: &[Vec<u32>], source: &Path) -> Result<()> {
    // Peel off terms whose parents are all peeled; what remains has a cycle above it.
    let n = terms.len();
    let mut children: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut waiting: Vec<usize> = parents.iter().map(Vec::len).collect();
    for (c, ps) in parents.iter().enumerate() {
        for &p in ps {
            children[p as usize].push(c as u32);
        }
    }
    let mut ready: Vec<u32> = (0..n as u32)
        .filter(|&i| waiting[i as usize] == 0)
        .collect();
    let mut done = 0;
    while let Some(t) = ready.pop() {
        done += 1;
        for &c in &children[t as usize] {
            waiting[c as usize] -= 1;
            if waiting[c as usize] == 0 {
                ready.push(c);
            }
        }
    }
    if done == n {
        return Ok(());
    }
    // Every remaining term has a remaining parent: walk up until a term repeats.
    let start = (0..n).find(|&i| waiting[i] > 0).expect("a remaining term");
    let mut path = vec![start as u32];
    let mut at = start as u32;
    loop {
        let next = *parents[at as usize]
            .iter()
            .find(|&&p| waiting[p as usize] > 0)
            .expect("a remaining term has a remaining parent");
        if let Some(pos) = path.iter().position(|&p| p == next) {
            let cycle: Vec<&str> = path[pos..]
                .iter()
                .chain(std::iter::once(&next))
                .map(|&i| terms[i as usize].id.as_str())
                .collect();
            return Err(parse_error(
                source,
                format!(
                    "the hierarchy has a cycle: {}; expected every term's ancestors to end at a root",
                    cycle.join(" -> ")
                ),
            ));
        }
        path.push(next);
        at = next;
    }
}
