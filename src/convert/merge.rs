//! Merging corpora: [`merge`] makes one corpus of corpora converted independently (on other
//! machines, with other vocabularies), rewriting only the matrix parts whose gene ids change.
//!
//! The merged vocabulary is the first input's genes in their order, then each further input's
//! new genes appended, matched by the gene identity rules of a conversion (the key the corpora
//! were built with, stable ids without version suffixes, orthologs): the growth rule of an
//! append. So every part of the first input keeps its gene ids, and so does every part of an
//! input whose genes already have the same ids in the merged vocabulary (for example corpora
//! converted with one gene order): those parts are hard-linked into the new corpus (copied
//! byte for byte across filesystems), with their types and the checksums their manifest lists.
//! The other parts are rewritten with their ids remapped and sorted within each cell, values
//! in their own type, and hashed anew. The output is format 2 whatever the inputs' formats.
//!
//! Tables: the first input's obs and samples files are linked (written again only when a later
//! input brings a column they lack, as in an append), each further input's rows, their cell
//! and sample ids moved, make one new file; genes and gene_counts are written for the merged
//! vocabulary; gene_stats adds up the inputs' statistics (computed from the parts when a
//! sample was left out or an input has none).
//!
//! The output is written like a conversion's, into a directory beside it that is renamed into
//! place when complete, under the output's lock (the one an append takes), with the kill points
//! of a conversion at the same stages. The inputs are only read, and not locked: an input
//! replaced by an append while it is read fails the merge before anything is committed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use arrow::array::{ArrayRef, AsArray, BooleanArray, StringArray, UInt64Array};
use arrow::datatypes::UInt64Type;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use rayon::prelude::*;
use serde::Serialize;

use super::append::{count_columns, grow_table, link_table, read_table_strings};
use super::gene_stats::{self, GeneStats};
use super::kill::kill_point;
use super::lock::CorpusLock;
use super::output::Staging;
use super::tables;
use crate::corpus::{
    self, FileEntry, IndexType, LineageEntry, Manifest, MatrixInfo, MergeInput, PartEntry,
    PartLayout, PartWriter, SampleEntry, SourceEntry, TableFile, ValueType, FORMAT_NAME,
    FORMAT_VERSION, GENE_COUNTS_TABLE,
};
use crate::error::{Context, Error, Result};
use crate::genes::{table as gene_table, GeneIndex, GeneKey};
use crate::Corpus;

/// What to do when two inputs hold a sample of the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum OnDuplicate {
    /// Refuse the merge, listing the duplicated ids and their inputs.
    #[default]
    Error,
    /// Keep the first sample of an id; leave the later ones (and their cells) out.
    Skip,
    /// Keep every sample; a later one of a taken id becomes `ID-N` (N: its input's position,
    /// from 1; more dashes and numbers if that is taken too).
    Rename,
}

/// How to merge. `MergeOptions::default()` gives the defaults of `cellarrow merge`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MergeOptions {
    /// Duplicate sample ids across inputs.
    pub on_duplicate: OnDuplicate,
    /// Replace an existing corpus at the output.
    pub overwrite: bool,
    /// Parts rewritten at once (0: one per core).
    pub threads: usize,
}

/// A sample that a duplicate policy renamed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RenamedSample {
    /// Position of its input (0-based).
    pub input: usize,
    pub from: String,
    pub to: String,
}

/// What a merge did.
#[derive(Debug, Clone, Serialize)]
pub struct MergeReport {
    pub output: PathBuf,
    pub n_inputs: usize,
    pub n_samples: usize,
    pub n_cells: u64,
    pub n_genes: u64,
    pub nnz: u64,
    pub index_type: IndexType,
    pub value_type: ValueType,
    /// Parts hard-linked from an input (same bytes, same inode).
    pub parts_linked: usize,
    pub bytes_linked: u64,
    /// Parts copied byte for byte (an input on another filesystem).
    pub parts_copied: usize,
    pub bytes_copied: u64,
    /// Parts rewritten with remapped gene ids (bytes written).
    pub parts_rewritten: usize,
    pub bytes_rewritten: u64,
    /// Samples left out under [`OnDuplicate::Skip`], as `ID (input N)`, N from 0.
    pub skipped: Vec<String>,
    /// Samples renamed under [`OnDuplicate::Rename`].
    pub renamed: Vec<RenamedSample>,
    /// Bytes of the merged corpus (every listed file).
    pub bytes: u64,
    pub seconds: f64,
    /// Things the user should know (the same source file in two inputs, ...).
    pub warnings: Vec<String>,
}

/// One input corpus, opened.
struct Input {
    dir: PathBuf,
    corpus: Corpus,
    manifest_sha256: String,
    /// The samples table: source path and sha256 of each sample, in manifest order.
    sources: Vec<(String, String)>,
    /// Old gene id -> merged gene id.
    gene_map: Vec<u32>,
    /// Whether `gene_map` is the identity: the parts are linked as they are.
    link: bool,
}

/// Where one input sample goes.
#[derive(Debug, Clone)]
enum Fate {
    /// Kept as `id`, its first cell moved to `first_cell`.
    Keep {
        id: String,
        first_cell: u64,
    },
    Skip,
}

/// One part of the merged corpus: where it comes from and how.
struct PartJob {
    input: usize,
    /// Index into the input's `matrix.parts`.
    part: usize,
    entry: PartEntry,
}

/// How a part got into the merged corpus, and its types there.
enum Placed {
    Linked(FileEntry, (IndexType, ValueType)),
    Copied(FileEntry, (IndexType, ValueType)),
    Rewritten(FileEntry, (IndexType, ValueType)),
}

impl Placed {
    fn file(&self) -> &FileEntry {
        match self {
            Placed::Linked(f, _) | Placed::Copied(f, _) | Placed::Rewritten(f, _) => f,
        }
    }

    fn types(&self) -> (IndexType, ValueType) {
        match self {
            Placed::Linked(_, t) | Placed::Copied(_, t) | Placed::Rewritten(_, t) => *t,
        }
    }
}

/// Merges the corpora at `inputs` into a new corpus at `output`. The first input's cells,
/// genes and parts come first and keep their ids; each further input's cells follow, its new
/// genes get the next gene ids. Fails, writing nothing, when an input is not a corpus, the
/// inputs differ in format version or value type, or (under [`OnDuplicate::Error`]) two inputs
/// hold a sample of the same id.
pub fn merge(inputs: &[PathBuf], output: &Path, options: &MergeOptions) -> Result<MergeReport> {
    let started = Instant::now();
    if inputs.is_empty() {
        return Err(Error::invalid_input("no input corpora given"));
    }
    check_paths(inputs, output)?;
    if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
        // The lock and the temporary directory live beside the output.
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::io(parent, "creating the output's directory", e))?;
    }
    let _lock = CorpusLock::acquire(output)?;
    let staging = Staging::create(output, options.overwrite)?;
    let mut opened = inputs
        .iter()
        .map(|i| open_input(i))
        .collect::<Result<Vec<_>>>()?;
    let key = gene_key(&opened)?;
    let (fates, skipped, renamed) = plan_samples(&opened, options.on_duplicate)?;
    let vocab = plan_vocabulary(&mut opened, key)?;
    // Rewritten parts get the narrowest ids for the merged vocabulary; linked ones keep theirs.
    let index_type = IndexType::for_genes(vocab.len() as u64);
    let warnings = same_sources(&opened, &fates);

    let dir = staging.path().to_path_buf();
    let batch_rows = opened
        .iter()
        .map(|i| i.corpus.manifest().matrix.batch_rows)
        .max()
        .expect("at least one input");
    let part_cells = opened
        .iter()
        .map(|i| i.corpus.manifest().matrix.part_cells)
        .max()
        .expect("at least one input");
    let jobs = plan_parts(&opened, &fates);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(options.threads)
        .build()
        .map_err(|e| Error::invalid_input(format!("cannot start the thread pool: {e}")))?;
    let target = Target {
        dir: &dir,
        index_type,
        batch_rows: batch_rows as usize,
    };
    let placed: Vec<Placed> = pool.install(|| {
        jobs.par_iter()
            .map(|j| place_part(&opened[j.input], j, &target))
            .collect::<Result<_>>()
    })?;

    let tables = merged_tables(&dir, &opened, &fates, &vocab)?;
    kill_point("tables-written");

    let manifest = new_manifest(
        &dir,
        &opened,
        &fates,
        &jobs,
        &placed,
        MatrixInfo {
            batch_rows,
            part_cells,
            parts: Vec::new(),
        },
        vocab.len(),
        tables,
        options,
    )?;
    manifest.write(&dir)?;
    kill_point("manifest-written");
    match merged_stats(&opened, &fates)? {
        Some(stats) => gene_stats::write(&dir, &stats, 0)?,
        None => gene_stats::record(&dir, None)?,
    }
    // Inputs are not locked (any number of merges may read one corpus, and it may be on
    // read-only storage). An append that replaced an input while it was read changed its
    // manifest: then what was read may mix two versions, and nothing is committed.
    for i in &opened {
        if manifest_sha256(&i.dir)? != i.manifest_sha256 {
            return Err(Error::invalid_input(
                "the corpus changed while it was being merged; run the merge again",
            )
            .with_path(&i.dir));
        }
    }
    staging.commit()?;

    let mut report = MergeReport {
        output: output.to_path_buf(),
        n_inputs: opened.len(),
        n_samples: manifest.samples.len(),
        n_cells: manifest.n_cells,
        n_genes: manifest.n_genes,
        nnz: manifest.nnz,
        index_type: manifest.index_type,
        value_type: manifest.value_type,
        parts_linked: 0,
        bytes_linked: 0,
        parts_copied: 0,
        bytes_copied: 0,
        parts_rewritten: 0,
        bytes_rewritten: 0,
        skipped,
        renamed,
        bytes: manifest.files.iter().map(|f| f.bytes).sum(),
        seconds: 0.0,
        warnings,
    };
    for p in &placed {
        match p {
            Placed::Linked(f, _) => {
                report.parts_linked += 1;
                report.bytes_linked += f.bytes;
            }
            Placed::Copied(f, _) => {
                report.parts_copied += 1;
                report.bytes_copied += f.bytes;
            }
            Placed::Rewritten(f, _) => {
                report.parts_rewritten += 1;
                report.bytes_rewritten += f.bytes;
            }
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The output must be none of the inputs, and neither may hold the other (a staging directory
/// inside an input would be an extra file of that corpus).
fn check_paths(inputs: &[PathBuf], output: &Path) -> Result<()> {
    let canon = |p: &Path| -> PathBuf {
        // The output may not exist yet: resolve its parent and keep its name.
        match (p.parent(), p.file_name()) {
            (Some(parent), Some(name)) => {
                let parent = if parent.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    parent
                };
                parent
                    .canonicalize()
                    .unwrap_or_else(|_| parent.to_path_buf())
                    .join(name)
            }
            _ => p.to_path_buf(),
        }
    };
    let out = canon(output);
    let mut seen: HashMap<PathBuf, &Path> = HashMap::new();
    for i in inputs {
        let c = canon(i);
        if c == out || out.starts_with(&c) || c.starts_with(&out) {
            return Err(Error::invalid_input(format!(
                "the output {} is, holds or lies inside this input; merge into a new directory",
                output.display()
            ))
            .with_path(i));
        }
        if let Some(first) = seen.insert(c, i) {
            return Err(Error::invalid_input(format!(
                "this corpus is given twice (also as {})",
                first.display()
            ))
            .with_path(i));
        }
    }
    Ok(())
}

fn manifest_sha256(dir: &Path) -> Result<String> {
    Ok(corpus::sha256_file(&dir.join(corpus::MANIFEST_FILE))?.0)
}

fn open_input(dir: &Path) -> Result<Input> {
    if !dir.is_dir() {
        return Err(
            Error::invalid_input("not a directory: an input of merge is a corpus").with_path(dir),
        );
    }
    let manifest_sha256 = manifest_sha256(dir)?;
    let corpus = Corpus::open(dir)?;
    let m = corpus.manifest();
    let ids = read_table_strings(dir, m, "samples", "sample_id")?;
    let paths = read_table_strings(dir, m, "samples", "source_path")?;
    let shas = read_table_strings(dir, m, "samples", "source_sha256")?;
    let listed: Vec<&str> = m.samples.iter().map(|s| s.sample_id.as_str()).collect();
    if ids != listed {
        return Err(Error::corpus(
            corpus.table_path("samples"),
            "its sample ids are not manifest.json's samples, in order",
        ));
    }
    let sources = paths.into_iter().zip(shas).collect();
    Ok(Input {
        dir: dir.to_path_buf(),
        corpus,
        manifest_sha256,
        sources,
        gene_map: Vec::new(),
        link: false,
    })
}

/// The key the inputs match genes by (their conversions' `gene_key`): one for all, since
/// genes matched by another key could not be told apart from new ones.
fn gene_key(inputs: &[Input]) -> Result<GeneKey> {
    let key_of = |i: &Input| -> Result<GeneKey> {
        match i
            .corpus
            .manifest()
            .options
            .get("gene_key")
            .and_then(|k| k.as_str())
        {
            Some(k) => k.parse().map_err(|e| {
                Error::corpus(
                    i.dir.join(corpus::MANIFEST_FILE),
                    format!("options.gene_key: {e}"),
                )
            }),
            None => Ok(GeneKey::default()),
        }
    };
    let first = key_of(&inputs[0])?;
    for i in &inputs[1..] {
        let k = key_of(i)?;
        if k != first {
            return Err(Error::invalid_input(format!(
                "its genes are matched by {}, {}'s by {}; convert them with one --gene-key",
                k.as_str(),
                inputs[0].dir.display(),
                first.as_str()
            ))
            .with_path(&i.dir));
        }
    }
    Ok(first)
}

/// Each sample's fate in input order, with the skipped and renamed ones; duplicates are an
/// error under [`OnDuplicate::Error`], naming every duplicated id and its inputs.
#[allow(clippy::type_complexity)]
fn plan_samples(
    inputs: &[Input],
    policy: OnDuplicate,
) -> Result<(Vec<Vec<Fate>>, Vec<String>, Vec<RenamedSample>)> {
    let mut owner: HashMap<&str, usize> = HashMap::new();
    let mut dups: Vec<String> = Vec::new();
    for (k, i) in inputs.iter().enumerate() {
        for s in &i.corpus.manifest().samples {
            if let Some(&first) = owner.get(s.sample_id.as_str()) {
                dups.push(format!(
                    "{:?} (in {} and {})",
                    s.sample_id,
                    inputs[first].dir.display(),
                    i.dir.display()
                ));
            } else {
                owner.insert(&s.sample_id, k);
            }
        }
    }
    if !dups.is_empty() && policy == OnDuplicate::Error {
        let more = if dups.len() > 20 {
            format!(" and {} more", dups.len() - 20)
        } else {
            String::new()
        };
        return Err(Error::invalid_input(format!(
            "{} duplicate sample ids: {}{more}; pass --on-duplicate skip or rename to merge anyway",
            dups.len(),
            dups[..dups.len().min(20)].join(", ")
        )));
    }
    let mut taken: HashSet<String> = HashSet::new();
    let (mut skipped, mut renamed) = (Vec::new(), Vec::new());
    let mut next_cell = 0u64;
    let mut fates = Vec::with_capacity(inputs.len());
    for (k, i) in inputs.iter().enumerate() {
        let mut f = Vec::new();
        for s in &i.corpus.manifest().samples {
            let id = if !taken.contains(&s.sample_id) {
                s.sample_id.clone()
            } else if policy == OnDuplicate::Skip {
                skipped.push(format!("{} (input {k})", s.sample_id));
                f.push(Fate::Skip);
                continue;
            } else {
                let mut id = format!("{}-{}", s.sample_id, k + 1);
                while taken.contains(&id) || owner.contains_key(id.as_str()) {
                    id = format!("{id}-{}", k + 1);
                }
                renamed.push(RenamedSample {
                    input: k,
                    from: s.sample_id.clone(),
                    to: id.clone(),
                });
                id
            };
            taken.insert(id.clone());
            f.push(Fate::Keep {
                id,
                first_cell: next_cell,
            });
            next_cell += s.n_cells;
        }
        fates.push(f);
    }
    Ok((fates, skipped, renamed))
}

/// The merged vocabulary (the first input's genes, then each further input's new ones), and
/// each input's map into it. Two genes of one input that would become one gene are refused:
/// merging must never sum two measured genes silently.
fn plan_vocabulary(inputs: &mut [Input], key: GeneKey) -> Result<GeneIndex> {
    let genes_of = |i: &Input| corpus::table_files_at(&i.dir, "genes");
    let mut index = gene_table::read_index(&genes_of(&inputs[0])?, key)?;
    inputs[0].gene_map = (0..index.len() as u32).collect();
    inputs[0].link = true;
    for i in inputs.iter_mut().skip(1) {
        let genes = gene_table::read_genes(&genes_of(i)?)?;
        let map = index.merge_genes(&genes);
        let mut first_of: HashMap<u32, usize> = HashMap::with_capacity(map.len());
        for (old, &new) in map.iter().enumerate() {
            if let Some(other) = first_of.insert(new, old) {
                return Err(Error::invalid_input(format!(
                    "its genes {:?} and {:?} both match merged gene {:?}; they would be summed \
                     into one (convert its sources with a gene key that tells them apart)",
                    genes[other].name,
                    genes[old].name,
                    index.genes()[new as usize].name
                ))
                .with_path(&i.dir));
            }
        }
        i.link = map.iter().enumerate().all(|(a, &b)| a as u32 == b);
        i.gene_map = map;
    }
    if index.len() as u64 > IndexType::Uint32.max_genes() {
        return Err(Error::invalid_input(format!(
            "the merged vocabulary has {} genes, more than 32-bit gene ids address",
            index.len()
        )));
    }
    Ok(index)
}

/// A warning for each kept sample whose source file (by sha256) is already a kept sample of an
/// earlier input: the same data twice, under two ids.
fn same_sources(inputs: &[Input], fates: &[Vec<Fate>]) -> Vec<String> {
    let mut seen: HashMap<&str, &str> = HashMap::new();
    let mut out = Vec::new();
    for (i, f) in inputs.iter().zip(fates) {
        for ((_, sha), fate) in i.sources.iter().zip(f) {
            let Fate::Keep { id, .. } = fate else {
                continue;
            };
            match seen.get(sha.as_str()) {
                Some(other) => out.push(format!(
                    "samples {other:?} and {id:?} come from the same source file (sha256 {sha})"
                )),
                None => {
                    seen.insert(sha, id);
                }
            }
        }
    }
    out
}

/// The parts of the kept samples in merged cell order, numbered from 0. Parts and samples are
/// both in cell order, and a part lies within one sample; empty parts hold nothing and go.
fn plan_parts(inputs: &[Input], fates: &[Vec<Fate>]) -> Vec<PartJob> {
    let mut jobs = Vec::new();
    for (k, (i, f)) in inputs.iter().zip(fates).enumerate() {
        let m = i.corpus.manifest();
        let mut p = 0usize;
        for (s, fate) in m.samples.iter().zip(f) {
            let end = s.first_cell + s.n_cells;
            while p < m.matrix.parts.len() && m.matrix.parts[p].first_cell < end {
                let part = &m.matrix.parts[p];
                if let (Fate::Keep { first_cell, .. }, true) = (fate, part.n_cells > 0) {
                    let number = jobs.len();
                    jobs.push(PartJob {
                        input: k,
                        part: p,
                        entry: PartEntry {
                            path: format!("matrix/part-{number:05}.arrow"),
                            first_cell: first_cell + (part.first_cell - s.first_cell),
                            n_cells: part.n_cells,
                            nnz: part.nnz,
                            // Set by `place_part`: a linked part keeps its types.
                            index_type: None,
                            value_type: None,
                            // Linked or rewritten, a part keeps its layout.
                            layout: part.layout,
                            chunk_cells: part.chunk_cells,
                            // Set from the placed file.
                            footer: None,
                        },
                    });
                }
                p += 1;
            }
        }
    }
    jobs
}

/// The place of the merged corpus's parts and the index type of rewritten ones.
struct Target<'a> {
    dir: &'a Path,
    index_type: IndexType,
    batch_rows: usize,
}

/// Links (or copies) a part whose gene ids stay, or rewrites it with remapped ids.
fn place_part(input: &Input, job: &PartJob, t: &Target<'_>) -> Result<Placed> {
    let m = input.corpus.manifest();
    let old = &m.matrix.parts[job.part];
    let src = input.corpus.file_path(&old.path);
    let dst = t.dir.join(&job.entry.path);
    let (old_index, value_type) = m.part_types(job.part);
    let placed = if input.link {
        let listed = m
            .file(&old.path)
            .ok_or_else(|| Error::corpus(&src, "a part that manifest.json's files do not list"))?;
        let entry = FileEntry {
            path: job.entry.path.clone(),
            bytes: listed.bytes,
            sha256: listed.sha256.clone(),
        };
        let types = (old_index, value_type);
        if std::fs::hard_link(&src, &dst).is_ok() {
            Placed::Linked(entry, types)
        } else {
            std::fs::copy(&src, &dst).map_err(|e| Error::io(&src, "copying", e))?;
            Placed::Copied(entry, types)
        }
    } else {
        rewrite_part(input, job, (t.index_type, value_type), t.batch_rows, &dst)?;
        let (sha256, bytes) = corpus::sha256_file(&dst)?;
        let entry = FileEntry {
            path: job.entry.path.clone(),
            bytes,
            sha256,
        };
        Placed::Rewritten(entry, (t.index_type, value_type))
    };
    kill_point("part-written");
    Ok(placed)
}

/// Writes the cells of one input part with their gene ids mapped into the merged vocabulary,
/// sorted within each cell; values keep their type.
fn rewrite_part(
    input: &Input,
    job: &PartJob,
    (index_type, value_type): (IndexType, ValueType),
    batch_rows: usize,
    dst: &Path,
) -> Result<()> {
    let old = &input.corpus.manifest().matrix.parts[job.part];
    let mut w = match (old.layout, old.chunk_cells) {
        (PartLayout::Cold, Some(chunk)) => {
            PartWriter::create_cold(dst, index_type, value_type, chunk as usize)?
        }
        _ => PartWriter::create(dst, index_type, value_type, batch_rows)?,
    };
    let (mut indptr, mut indices, mut values) = (vec![0u64], Vec::new(), Vec::new());
    let mut pairs: Vec<(u32, f64)> = Vec::new();
    let c = &input.corpus;
    // Batches are in part order: the part's are the run between these two bounds.
    let bound = |pred: &dyn Fn(usize) -> bool| {
        let (mut lo, mut hi) = (0, c.n_batches());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if pred(c.batch_part(mid)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    };
    let from = bound(&|p| p < job.part);
    let to = bound(&|p| p <= job.part);
    for bi in from..to {
        let b = c.batch(bi)?;
        let (idx, val) = (b.indices(), b.values());
        indptr.truncate(1);
        indices.clear();
        values.clear();
        for r in 0..b.n_cells() {
            pairs.clear();
            for p in b.row_range(r) {
                let g = idx.get(p) as usize;
                let new = *input.gene_map.get(g).ok_or_else(|| {
                    Error::corpus(
                        input.corpus.file_path(&old.path),
                        format!(
                            "cell {}: gene id {g} is outside the vocabulary",
                            b.first_cell() + r as u64
                        ),
                    )
                })?;
                pairs.push((new, val.get(p)));
            }
            pairs.sort_unstable_by_key(|p| p.0);
            indices.extend(pairs.iter().map(|p| p.0));
            values.extend(pairs.iter().map(|p| p.1));
            indptr.push(indices.len() as u64);
        }
        w.push(&indptr, &indices, &values)?;
    }
    let s = w.finish()?;
    if s.n_cells != old.n_cells || s.nnz != old.nnz {
        return Err(Error::corpus(
            input.corpus.file_path(&old.path),
            format!(
                "holds {} cells and {} non-zeros, manifest.json says {} and {}",
                s.n_cells, s.nnz, old.n_cells, old.nnz
            ),
        ));
    }
    Ok(())
}

/// Per merged gene: samples that measure it and cells with a non-zero of it, summed over the
/// inputs. A skipped sample's cells are taken back out of `n_cells`, and the sample out of
/// `n_samples` for the genes it has a non-zero of (a gene it measured but never saw stays
/// counted: which genes a sample measured is not stored per sample).
fn gene_counts(inputs: &[Input], fates: &[Vec<Fate>], n: usize) -> Result<(Vec<u32>, Vec<u64>)> {
    let (mut n_samples, mut n_cells) = (vec![0u32; n], vec![0u64; n]);
    for (i, f) in inputs.iter().zip(fates) {
        let path = i.corpus.table_path("genes");
        let mut row = 0usize;
        for b in i
            .corpus
            .read_table("genes", Some(&["n_samples", "n_cells"]))?
        {
            let (s, c) = count_columns(&path, &b)?;
            for r in 0..b.num_rows() {
                let g = *i
                    .gene_map
                    .get(row + r)
                    .ok_or_else(|| Error::corpus(&path, "more rows than genes"))?
                    as usize;
                n_samples[g] += s.value(r);
                n_cells[g] += c.value(r);
            }
            row += b.num_rows();
        }
        for (s, fate) in i.corpus.manifest().samples.iter().zip(f) {
            if !matches!(fate, Fate::Skip) {
                continue;
            }
            let mut seen = vec![0u64; i.gene_map.len()];
            for cell in s.first_cell..s.first_cell + s.n_cells {
                let (b, r) = i.corpus.checked_batch(cell)?;
                let idx = b.indices();
                for p in b.row_range(r) {
                    seen[idx.get(p) as usize] += 1;
                }
            }
            for (g, c) in seen.into_iter().enumerate().filter(|(_, c)| *c > 0) {
                let m = i.gene_map[g] as usize;
                n_cells[m] = n_cells[m].saturating_sub(c);
                n_samples[m] = n_samples[m].saturating_sub(1);
            }
        }
    }
    Ok((n_samples, n_cells))
}

/// Old cell ranges of an input's kept samples and where they go: `(old_first, old_end,
/// new_first, id)`.
fn moves<'a>(i: &'a Input, f: &'a [Fate]) -> Vec<(u64, u64, u64, &'a str)> {
    i.corpus
        .manifest()
        .samples
        .iter()
        .zip(f)
        .filter_map(|(s, fate)| match fate {
            Fate::Keep { id, first_cell } => Some((
                s.first_cell,
                s.first_cell + s.n_cells,
                *first_cell,
                id.as_str(),
            )),
            Fate::Skip => None,
        })
        .collect()
}

/// Writes the rows of one table of an input (every file) into `dest` with cells moved, samples
/// renamed and the rows of skipped samples left out; `false` when no row is kept.
/// `cell_column` holds a row's cell id (obs) or its first cell (samples).
fn move_rows(i: &Input, f: &[Fate], table: &str, cell_column: &str, dest: &Path) -> Result<bool> {
    let mv = moves(i, f);
    let mut writer: Option<ArrowWriter<std::fs::File>> = None;
    for src in i.corpus.table_files(table) {
        move_file_rows(&src, &mv, cell_column, dest, &mut writer)?;
    }
    match writer {
        Some(w) => {
            w.close().at(dest)?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// One table file's kept rows, moved, into `writer` (opened at `dest` on the first kept row).
fn move_file_rows(
    src: &Path,
    mv: &[(u64, u64, u64, &str)],
    cell_column: &str,
    dest: &Path,
    writer: &mut Option<ArrowWriter<std::fs::File>>,
) -> Result<()> {
    let mut row = 0u64;
    corpus::scan_parquet(src, None, |b| {
        let cells = b
            .column_by_name(cell_column)
            .ok_or_else(|| Error::corpus(src, format!("no column {cell_column:?}")))?;
        let cells = corpus::as_u64(src, cell_column, cells, row)?;
        row += b.num_rows() as u64;
        let place = |c: u64| {
            let k = mv.partition_point(|m| m.0 <= c);
            (k > 0 && c < mv[k - 1].1).then(|| mv[k - 1])
        };
        let keep: BooleanArray = cells
            .iter()
            .map(|c| Some(c.and_then(place).is_some()))
            .collect();
        if keep.true_count() == 0 {
            return Ok(());
        }
        let b = arrow::compute::filter_record_batch(&b, &keep)?;
        let cells = arrow::compute::filter(&cells, &keep)?;
        let cells = cells.as_primitive::<UInt64Type>();
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(b.num_columns());
        for (field, col) in b.schema().fields().iter().zip(b.columns()) {
            let col = if field.name() == cell_column {
                let moved: UInt64Array = cells
                    .values()
                    .iter()
                    .map(|&c| {
                        place(c)
                            .map(|m| c - m.0 + m.2)
                            .expect("kept rows have a place")
                    })
                    .collect();
                arrow::compute::cast(&moved, field.data_type())?
            } else if field.name() == "sample_id" {
                let ids: StringArray = cells
                    .values()
                    .iter()
                    .map(|&c| place(c).map(|m| m.3))
                    .collect();
                arrow::compute::cast(&ids, field.data_type())?
            } else {
                col.clone()
            };
            cols.push(col);
        }
        let b = RecordBatch::try_new(b.schema(), cols)?;
        if writer.is_none() {
            let file = std::fs::File::create(dest).map_err(|e| Error::io(dest, "creating", e))?;
            let schema = b.schema();
            *writer = Some(
                ArrowWriter::try_new(
                    file,
                    schema.clone(),
                    Some(corpus::writer_properties(&schema)),
                )
                .at(dest)?,
            );
        }
        writer.as_mut().expect("opened above").write(&b).at(dest)?;
        Ok(())
    })
}

/// The tables of the merged corpus in `dir`: obs and samples grown from the first input's
/// files by one file of the later inputs' rows (moved), as an append grows them; genes and
/// gene_counts for the merged vocabulary.
fn merged_tables(
    dir: &Path,
    inputs: &[Input],
    fates: &[Vec<Fate>],
    index: &GeneIndex,
) -> Result<BTreeMap<String, Vec<TableFile>>> {
    let mut out = BTreeMap::new();
    let (n_samples, n_cells) = gene_counts(inputs, fates, index.len())?;
    out.insert(
        "genes".to_string(),
        vec![tables::write_genes_file(dir, 0, index, 0..index.len())?],
    );
    out.insert(
        GENE_COUNTS_TABLE.to_string(),
        vec![tables::write_gene_counts_file(
            dir, 0, &n_samples, &n_cells,
        )?],
    );
    let first = &inputs[0];
    for (table, cell_column) in [("samples", "first_cell"), ("obs", "cell")] {
        let mut staged = Vec::new();
        for (k, (i, f)) in inputs.iter().zip(fates).enumerate().skip(1) {
            let p = dir.join(format!("{table}-merge-{k:05}.parquet"));
            if move_rows(i, f, table, cell_column, &p)? {
                staged.push(p);
            }
        }
        let staged: Vec<&Path> = staged.iter().map(PathBuf::as_path).collect();
        let m = first.corpus.manifest();
        let files = if staged.is_empty() {
            link_table(&first.dir, dir, m, table)?
        } else {
            grow_table(&first.dir, dir, m, table, &staged)?
        };
        out.insert(table.to_string(), files);
    }
    Ok(out)
}

/// The merged gene statistics: each input's, its gene ids mapped, added up. `None` (compute
/// them from the merged parts) when an input has none or a sample was left out.
fn merged_stats(inputs: &[Input], fates: &[Vec<Fate>]) -> Result<Option<GeneStats>> {
    if fates.iter().flatten().any(|f| matches!(f, Fate::Skip)) {
        return Ok(None);
    }
    let mut out = GeneStats::default();
    for i in inputs {
        let files = i.corpus.table_files(gene_stats::TABLE);
        if files.is_empty() {
            return Ok(None);
        }
        out.merge(GeneStats::read_files(&files)?.remapped(&i.gene_map));
    }
    Ok(Some(out))
}

/// The merged manifest: counts, parts with their types, samples, tables, files with their
/// checksums (linked parts and table files keep their listed ones), the first input's options
/// and lineage, then an entry for this merge.
#[allow(clippy::too_many_arguments)]
fn new_manifest(
    dir: &Path,
    inputs: &[Input],
    fates: &[Vec<Fate>],
    jobs: &[PartJob],
    placed: &[Placed],
    mut matrix: MatrixInfo,
    n_genes: usize,
    tables: BTreeMap<String, Vec<TableFile>>,
    options: &MergeOptions,
) -> Result<Manifest> {
    let first = inputs[0].corpus.manifest();
    // obs and samples files linked from a format-2 first input keep their names and listed
    // checksums (a rewritten file gets a number none of them has); the rest is new.
    let linked = |rel: &str| {
        first.format_version >= 2
            && ["obs", "samples"]
                .iter()
                .any(|t| first.table_paths(t).iter().any(|p| p == rel))
    };
    let mut files = Vec::new();
    let mut rel_new = Vec::new();
    for rel in tables::table_file_list(&tables) {
        match first.file(&rel) {
            Some(f) if linked(&rel) => files.push(f.clone()),
            _ => rel_new.push(rel),
        }
    }
    files.extend(tables::file_entries(dir, &rel_new)?);
    files.extend(placed.iter().map(|p| p.file().clone()));
    matrix.parts = jobs
        .iter()
        .zip(placed)
        .map(|(j, p)| {
            let (it, vt) = p.types();
            let footer = match j.entry.layout {
                PartLayout::Cold => Some(corpus::cold_footer(&dir.join(&j.entry.path))?),
                PartLayout::Hot => None,
            };
            Ok(PartEntry {
                index_type: Some(it),
                value_type: Some(vt),
                footer,
                ..j.entry.clone()
            })
        })
        .collect::<Result<_>>()?;
    let mut samples = Vec::new();
    let mut sources = Vec::new();
    let mut merged_inputs = Vec::new();
    for (i, f) in inputs.iter().zip(fates) {
        let m = i.corpus.manifest();
        let first_cell = samples.iter().map(|s: &SampleEntry| s.n_cells).sum::<u64>();
        for ((s, fate), (path, sha)) in m.samples.iter().zip(f).zip(&i.sources) {
            if let Fate::Keep { id, first_cell } = fate {
                samples.push(SampleEntry {
                    sample_id: id.clone(),
                    first_cell: *first_cell,
                    ..s.clone()
                });
                sources.push(SourceEntry {
                    sample_id: id.clone(),
                    path: path.clone(),
                    sha256: sha.clone(),
                });
            }
        }
        let end = samples.iter().map(|s| s.n_cells).sum::<u64>();
        merged_inputs.push(MergeInput {
            path: i.dir.display().to_string(),
            manifest_sha256: i.manifest_sha256.clone(),
            created_by: m.created_by.clone(),
            first_cell,
            n_cells: end - first_cell,
        });
    }
    let n_cells = samples.iter().map(|s| s.n_cells).sum();
    let nnz = samples.iter().map(|s| s.nnz).sum();
    // The manifest's types cover every part and the vocabulary.
    let index_type = matrix
        .parts
        .iter()
        .filter_map(|p| p.index_type)
        .fold(IndexType::for_genes(n_genes as u64), IndexType::join);
    let value_type = matrix
        .parts
        .iter()
        .filter_map(|p| p.value_type)
        .reduce(ValueType::join)
        .unwrap_or(first.value_type);
    let mut lineage = first.lineage.clone();
    lineage.push(LineageEntry {
        operation: "merge".into(),
        created_by: format!("cellarrow {}", env!("CARGO_PKG_VERSION")),
        first_cell: 0,
        n_cells,
        sources,
        options: serde_json::to_value(options)
            .map_err(|e| Error::invalid_input(format!("options: {e}")))?,
        inputs: merged_inputs,
    });
    Ok(Manifest {
        format: FORMAT_NAME.into(),
        format_version: FORMAT_VERSION,
        created_by: format!("cellarrow {}", env!("CARGO_PKG_VERSION")),
        n_cells,
        n_genes: n_genes as u64,
        nnz,
        index_type,
        value_type,
        matrix,
        samples,
        options: first.options.clone(),
        files,
        tables,
        lineage,
    })
}
