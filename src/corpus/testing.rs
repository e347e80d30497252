//! Small valid corpora built from in-memory rows, for the tests of every layer.
//!
//! ```
//! use cellarrow::corpus::testing::{write_corpus, Row};
//! let dir = tempfile::tempdir().unwrap();
//! // 3 cells over 10 genes: two in sample "a", one in sample "b".
//! let rows: Vec<Row> = vec![
//!     (vec![0, 4], vec![1.0, 2.0]),
//!     (vec![], vec![]),
//!     (vec![9], vec![5.0]),
//! ];
//! let manifest = write_corpus(dir.path(), 10, &rows, &[("a", 2), ("b", 1)])?;
//! assert_eq!(manifest.n_cells, 3);
//! cellarrow::corpus::validate(dir.path())?;
//! let corpus = cellarrow::Corpus::open(dir.path())?;
//! assert_eq!(corpus.indices(2).to_u32_vec(), vec![9]);
//! # Ok::<(), cellarrow::Error>(())
//! ```

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, DictionaryArray, Float64Array, StringArray, UInt32Array, UInt64Array, UInt8Array,
};
use arrow::datatypes::Int32Type;
use arrow::record_batch::RecordBatch;

use super::{
    sha256_file, write_parquet, FileEntry, IndexType, Manifest, MatrixInfo, PartEntry, PartLayout,
    PartWriter, SampleEntry, ValueType, FORMAT_NAME, MANIFEST_FILE,
};
use crate::error::{Error, Result};

/// One cell: its gene ids (strictly increasing, below `n_genes`) and their non-zero values.
pub type Row = (Vec<u32>, Vec<f64>);

/// Options of [`write_corpus_with`]. `Default` gives small batches and parts so that even a
/// dozen cells span several batches and parts (and the batch/part boundary code runs).
#[derive(Debug, Clone)]
pub struct TestCorpusOptions {
    /// Cells per record batch (default 4).
    pub batch_rows: usize,
    /// Cells per part; parts never span samples (default 8).
    pub part_cells: u64,
    /// Forces the index type (default: the narrowest for `n_genes`).
    pub index_type: Option<IndexType>,
    /// Forces the value type (default: the narrowest that holds every value).
    pub value_type: Option<ValueType>,
    /// Per-cell (x, y) coordinates, one entry per cell (`None` for a cell without). When set,
    /// obs gets `x`/`y` Float64 columns and a sample whose cells all have coordinates gets
    /// `spatial_dims = 2`.
    pub coords: Option<Vec<Option<[f64; 2]>>>,
    /// Extra obs columns (name, array of n_cells entries) appended after the reserved ones,
    /// e.g. a dictionary-encoded `cell_type`.
    pub obs_columns: Vec<(String, ArrayRef)>,
}

impl Default for TestCorpusOptions {
    fn default() -> Self {
        TestCorpusOptions {
            batch_rows: 4,
            part_cells: 8,
            index_type: None,
            value_type: None,
            coords: None,
            obs_columns: Vec::new(),
        }
    }
}

/// Writes a complete, valid corpus (manifest with real checksums, parts, obs, genes, samples)
/// into `dir` (created if missing) with [`TestCorpusOptions::default`].
///
/// `rows[i]` is cell `i`; `samples` lists `(sample_id, n_cells)` in order and must cover all
/// rows. Genes are named `gene0`, `gene1` ...; obs names are `<sample_id>-<row in sample>`.
pub fn write_corpus(
    dir: &Path,
    n_genes: u64,
    rows: &[Row],
    samples: &[(&str, u64)],
) -> Result<Manifest> {
    write_corpus_with(dir, n_genes, rows, samples, &TestCorpusOptions::default())
}

/// [`write_corpus`] with options (batch and part sizes, forced types, coordinates, extra obs).
pub fn write_corpus_with(
    dir: &Path,
    n_genes: u64,
    rows: &[Row],
    samples: &[(&str, u64)],
    opts: &TestCorpusOptions,
) -> Result<Manifest> {
    let n_cells = rows.len() as u64;
    if samples.iter().map(|s| s.1).sum::<u64>() != n_cells {
        return Err(Error::invalid_input(
            "write_corpus: sample sizes do not add up to the rows",
        ));
    }
    if let Some(c) = &opts.coords {
        if c.len() as u64 != n_cells {
            return Err(Error::invalid_input(
                "write_corpus: coords needs one entry per cell",
            ));
        }
    }
    std::fs::create_dir_all(dir.join("matrix")).map_err(|e| Error::io(dir, "creating", e))?;
    let index_type = opts.index_type.unwrap_or(IndexType::for_genes(n_genes));
    let value_type = opts
        .value_type
        .unwrap_or_else(|| ValueType::narrowest(rows.iter().flat_map(|r| r.1.iter().copied())));

    let mut parts = Vec::new();
    let mut sample_entries = Vec::new();
    let mut first = 0u64;
    for &(id, n) in samples {
        let mut sample_nnz = 0u64;
        let mut start = first;
        while start < first + n {
            let end = (start + opts.part_cells).min(first + n);
            let rel = format!("matrix/part-{:05}.arrow", parts.len());
            let mut w =
                PartWriter::create(dir.join(&rel), index_type, value_type, opts.batch_rows)?;
            let (mut indptr, mut idx, mut val) = (vec![0u64], Vec::new(), Vec::new());
            for r in &rows[start as usize..end as usize] {
                idx.extend_from_slice(&r.0);
                val.extend_from_slice(&r.1);
                indptr.push(idx.len() as u64);
            }
            w.push(&indptr, &idx, &val)?;
            let s = w.finish()?;
            parts.push(PartEntry {
                path: rel,
                first_cell: start,
                n_cells: s.n_cells,
                nnz: s.nnz,
                index_type: None,
                value_type: None,
                layout: PartLayout::Hot,
                chunk_cells: None,
                footer: None,
            });
            sample_nnz += s.nnz;
            start = end;
        }
        let spatial = match &opts.coords {
            Some(c)
                if n > 0
                    && c[first as usize..(first + n) as usize]
                        .iter()
                        .all(Option::is_some) =>
            {
                2
            }
            _ => 0,
        };
        sample_entries.push(SampleEntry {
            sample_id: id.to_owned(),
            first_cell: first,
            n_cells: n,
            nnz: sample_nnz,
            spatial_dims: spatial,
        });
        first += n;
    }
    let nnz: u64 = rows.iter().map(|r| r.0.len() as u64).sum();

    // obs
    let cell_sample: Vec<&str> = samples
        .iter()
        .flat_map(|&(id, n)| std::iter::repeat_n(id, n as usize))
        .collect();
    let source_row: Vec<u64> = samples.iter().flat_map(|&(_, n)| 0..n).collect();
    let obs_name: Vec<String> = cell_sample
        .iter()
        .zip(&source_row)
        .map(|(s, r)| format!("{s}-{r}"))
        .collect();
    let mut cols: Vec<(String, ArrayRef)> = vec![
        (
            "cell".into(),
            Arc::new(UInt64Array::from_iter_values(0..n_cells)),
        ),
        (
            "sample_id".into(),
            Arc::new(
                cell_sample
                    .iter()
                    .copied()
                    .collect::<DictionaryArray<Int32Type>>(),
            ),
        ),
        ("obs_name".into(), Arc::new(StringArray::from(obs_name))),
        ("source_row".into(), Arc::new(UInt64Array::from(source_row))),
        (
            "nnz".into(),
            Arc::new(UInt32Array::from_iter_values(
                rows.iter().map(|r| r.0.len() as u32),
            )),
        ),
        (
            "total".into(),
            Arc::new(Float64Array::from_iter_values(
                rows.iter().map(|r| r.1.iter().sum::<f64>()),
            )),
        ),
    ];
    if let Some(c) = &opts.coords {
        cols.push((
            "x".into(),
            Arc::new(c.iter().map(|p| p.map(|p| p[0])).collect::<Float64Array>()),
        ));
        cols.push((
            "y".into(),
            Arc::new(c.iter().map(|p| p.map(|p| p[1])).collect::<Float64Array>()),
        ));
    }
    cols.extend(opts.obs_columns.iter().cloned());
    let obs = RecordBatch::try_from_iter(cols)?;
    write_parquet(&dir.join("obs.parquet"), &[obs])?;

    // genes
    let mut gene_cells = vec![0u64; n_genes as usize];
    for r in rows {
        for &g in &r.0 {
            if let Some(c) = gene_cells.get_mut(g as usize) {
                *c += 1;
            }
        }
    }
    let genes = RecordBatch::try_from_iter([
        (
            "gene",
            Arc::new(UInt32Array::from_iter_values(0..n_genes as u32)) as ArrayRef,
        ),
        (
            "name",
            Arc::new(StringArray::from_iter_values(
                (0..n_genes).map(|g| format!("gene{g}")),
            )),
        ),
        (
            "n_samples",
            Arc::new(UInt32Array::from(vec![
                samples.len() as u32;
                n_genes as usize
            ])),
        ),
        ("n_cells", Arc::new(UInt64Array::from(gene_cells))),
    ])?;
    write_parquet(&dir.join("genes.parquet"), &[genes])?;

    // samples
    let s = &sample_entries;
    let samples_batch = RecordBatch::try_from_iter([
        (
            "sample_id",
            Arc::new(StringArray::from_iter_values(
                s.iter().map(|e| e.sample_id.clone()),
            )) as ArrayRef,
        ),
        (
            "source_path",
            Arc::new(StringArray::from_iter_values(
                s.iter().map(|e| format!("{}.h5ad", e.sample_id)),
            )),
        ),
        (
            "source_sha256",
            Arc::new(StringArray::from_iter_values(
                s.iter().map(|_| "0".repeat(64)),
            )),
        ),
        (
            "first_cell",
            Arc::new(UInt64Array::from_iter_values(
                s.iter().map(|e| e.first_cell),
            )),
        ),
        (
            "n_cells",
            Arc::new(UInt64Array::from_iter_values(s.iter().map(|e| e.n_cells))),
        ),
        (
            "nnz",
            Arc::new(UInt64Array::from_iter_values(s.iter().map(|e| e.nnz))),
        ),
        (
            "matrix_source",
            Arc::new(StringArray::from_iter_values(s.iter().map(|_| "X"))),
        ),
        (
            "n_source_genes",
            Arc::new(UInt64Array::from_iter_values(s.iter().map(|_| n_genes))),
        ),
        (
            "n_genes_outside_vocab",
            Arc::new(UInt64Array::from_iter_values(s.iter().map(|_| 0))),
        ),
        (
            "nnz_outside_vocab",
            Arc::new(UInt64Array::from_iter_values(s.iter().map(|_| 0))),
        ),
        (
            "spatial_dims",
            Arc::new(UInt8Array::from_iter_values(
                s.iter().map(|e| e.spatial_dims),
            )),
        ),
    ])?;
    write_parquet(&dir.join("samples.parquet"), &[samples_batch])?;

    let mut manifest = Manifest {
        format: FORMAT_NAME.into(),
        // The single-file tables of format 1, which every reader keeps reading and which the
        // tests here edit by name; conversions write format 2.
        format_version: 1,
        created_by: format!("cellarrow {} (corpus::testing)", env!("CARGO_PKG_VERSION")),
        n_cells,
        n_genes,
        nnz,
        index_type,
        value_type,
        matrix: MatrixInfo {
            batch_rows: opts.batch_rows as u64,
            part_cells: opts.part_cells,
            parts,
        },
        samples: sample_entries,
        options: serde_json::json!({ "testing": true }),
        files: Vec::new(),
        tables: Default::default(),
        lineage: Vec::new(),
    };
    let mut rels: Vec<String> = manifest
        .matrix
        .parts
        .iter()
        .map(|p| p.path.clone())
        .collect();
    rels.extend(["obs.parquet", "genes.parquet", "samples.parquet"].map(String::from));
    manifest.files = file_entries(dir, &rels)?;
    manifest.write(dir)?;
    Ok(manifest)
}

/// Size and sha256 of each file (paths relative to `dir`).
pub fn file_entries(dir: &Path, rels: &[String]) -> Result<Vec<FileEntry>> {
    rels.iter()
        .map(|rel| {
            let (sha256, bytes) = sha256_file(&dir.join(rel))?;
            Ok(FileEntry {
                path: rel.clone(),
                bytes,
                sha256,
            })
        })
        .collect()
}

/// Recomputes the size and sha256 of every file listed in `dir/manifest.json` and rewrites it,
/// without any other check: for tests that damage a file on purpose and want the structural
/// checks (not the checksums) to catch it.
pub fn rehash(dir: &Path) -> Result<()> {
    let path = dir.join(MANIFEST_FILE);
    let text = std::fs::read(&path).map_err(|e| Error::io(&path, "reading", e))?;
    let mut m: Manifest =
        serde_json::from_slice(&text).map_err(|e| Error::corpus(&path, e.to_string()))?;
    let rels: Vec<String> = m.files.iter().map(|f| f.path.clone()).collect();
    m.files = file_entries(dir, &rels)?;
    let text = serde_json::to_vec_pretty(&m).map_err(|e| Error::corpus(&path, e.to_string()))?;
    std::fs::write(&path, text).map_err(|e| Error::io(&path, "writing", e))
}

/// Deterministic pseudo-random rows (about `density` of the genes per cell, integer counts
/// 1..=20), from a small xorshift generator: the same arguments always give the same rows.
pub fn random_rows(n_cells: usize, n_genes: u32, density: f64, seed: u64) -> Vec<Row> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    (0..n_cells)
        .map(|_| {
            let (mut idx, mut val) = (Vec::new(), Vec::new());
            for g in 0..n_genes {
                if ((next() >> 11) as f64 / (1u64 << 53) as f64) < density {
                    idx.push(g);
                    val.push((next() % 20 + 1) as f64);
                }
            }
            (idx, val)
        })
        .collect()
}

/// Settings of [`write_synthetic_corpus`]: a corpus of any size whose cells are a pure
/// function of `(seed, cell id)`, written part by part, so memory stays bounded (one chunk of
/// rows per part, a few KiB per sample) however many cells there are.
#[derive(Debug, Clone)]
pub struct SyntheticCorpus {
    /// Cells in the corpus.
    pub n_cells: u64,
    /// Genes in the vocabulary (named `gene0`, `gene1` ...).
    pub n_genes: u32,
    /// Cells per sample (the last sample takes the remainder); samples are `s000000` ...
    pub sample_cells: u64,
    /// Cells per matrix part; parts never span samples.
    pub part_cells: u64,
    /// Cells per record batch inside a part.
    pub batch_rows: usize,
    /// Each cell has between 1 and `max_nnz` non-zeros (fewer when two draws hit one gene).
    pub max_nnz: u32,
    /// Integer counts are drawn from `1..=max_value`.
    pub max_value: u32,
    pub seed: u64,
}

impl Default for SyntheticCorpus {
    fn default() -> Self {
        SyntheticCorpus {
            n_cells: 1_000_000,
            n_genes: 1_000,
            sample_cells: 250_000,
            part_cells: 1 << 20,
            batch_rows: 65_536,
            max_nnz: 4,
            max_value: 20,
            seed: 1,
        }
    }
}

impl SyntheticCorpus {
    /// Cell `cell`'s gene ids (strictly increasing) and values, written into `idx` and `val`
    /// (cleared first). The same settings and cell always give the same row.
    pub fn row(&self, cell: u64, idx: &mut Vec<u32>, val: &mut Vec<f64>) {
        idx.clear();
        val.clear();
        let h = splitmix64(self.seed ^ cell.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let k = 1 + (h % self.max_nnz.max(1) as u64) as usize;
        for i in 0..k {
            idx.push((splitmix64(h.wrapping_add(i as u64)) % self.n_genes.max(1) as u64) as u32);
        }
        idx.sort_unstable();
        idx.dedup();
        for (i, &g) in idx.iter().enumerate() {
            let v = splitmix64(h ^ ((g as u64) << 32) ^ i as u64);
            val.push((1 + v % self.max_value.max(1) as u64) as f64);
        }
    }

    /// `(sample_id, first_cell, n_cells)` of every sample, in order.
    pub fn samples(&self) -> Vec<(String, u64, u64)> {
        let per = self.sample_cells.max(1);
        (0..self.n_cells.div_ceil(per))
            .map(|s| {
                let first = s * per;
                (format!("s{s:06}"), first, per.min(self.n_cells - first))
            })
            .collect()
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What one written part contributes to the genes table.
struct PartTally {
    entry: PartEntry,
    sample: usize,
    gene_cells: Vec<u64>,
}

/// Writes a complete, valid corpus of `spec.n_cells` synthetic cells into `dir` (created if
/// missing), with the tables a conversion writes (obs with `cell`, `sample_id`, `obs_name`,
/// `source_row`, `nnz`, `total`; genes; samples) and real checksums. Streams: the matrix parts
/// are written in parallel, chunk by chunk, while obs is written beside them, so that 10^8
/// cells take minutes and a few MiB of memory.
///
/// ```
/// use cellarrow::corpus::testing::{write_synthetic_corpus, SyntheticCorpus};
/// let dir = tempfile::tempdir().unwrap();
/// let spec = SyntheticCorpus { n_cells: 1000, sample_cells: 300, part_cells: 128, batch_rows: 32, ..Default::default() };
/// let manifest = write_synthetic_corpus(dir.path(), &spec)?;
/// assert_eq!((manifest.n_cells, manifest.samples.len()), (1000, 4));
/// cellarrow::corpus::validate(dir.path())?;
/// let corpus = cellarrow::Corpus::open(dir.path())?;
/// let (mut idx, mut val) = (Vec::new(), Vec::new());
/// spec.row(999, &mut idx, &mut val);
/// assert_eq!(corpus.indices(999).to_u32_vec(), idx);
/// # Ok::<(), cellarrow::Error>(())
/// ```
pub fn write_synthetic_corpus(dir: &Path, spec: &SyntheticCorpus) -> Result<Manifest> {
    use rayon::prelude::*;

    if spec.n_cells == 0 || spec.n_genes == 0 || spec.part_cells == 0 || spec.batch_rows == 0 {
        return Err(Error::invalid_input(
            "write_synthetic_corpus: cells, genes, part_cells and batch_rows must be positive",
        ));
    }
    std::fs::create_dir_all(dir.join("matrix")).map_err(|e| Error::io(dir, "creating", e))?;
    let index_type = IndexType::for_genes(spec.n_genes as u64);
    let value_type = ValueType::narrowest([spec.max_value.max(1) as f64]);
    let samples = spec.samples();
    // (sample index, first cell, cells) of every part, in cell order.
    let mut layout = Vec::new();
    for (si, &(_, first, n)) in samples.iter().enumerate() {
        let mut start = first;
        while start < first + n {
            let len = spec.part_cells.min(first + n - start);
            layout.push((si, start, len));
            start += len;
        }
    }

    let write_part = |pi: usize| -> Result<PartTally> {
        let (si, first, n) = layout[pi];
        let rel = format!("matrix/part-{pi:05}.arrow");
        let mut w = PartWriter::create(dir.join(&rel), index_type, value_type, spec.batch_rows)?;
        let mut gene_cells = vec![0u64; spec.n_genes as usize];
        let (mut indptr, mut idx, mut val) = (vec![0u64], Vec::new(), Vec::new());
        let (mut ri, mut rv) = (Vec::new(), Vec::new());
        let chunk = spec.batch_rows as u64;
        let mut c = first;
        while c < first + n {
            let end = (c + chunk).min(first + n);
            indptr.truncate(1);
            idx.clear();
            val.clear();
            for cell in c..end {
                spec.row(cell, &mut ri, &mut rv);
                for &g in &ri {
                    gene_cells[g as usize] += 1;
                }
                idx.extend_from_slice(&ri);
                val.extend_from_slice(&rv);
                indptr.push(idx.len() as u64);
            }
            w.push(&indptr, &idx, &val)?;
            c = end;
        }
        let s = w.finish()?;
        Ok(PartTally {
            entry: PartEntry {
                path: rel,
                first_cell: first,
                n_cells: s.n_cells,
                nnz: s.nnz,
                // Format 1: the manifest's types are every part's.
                index_type: None,
                value_type: None,
                layout: PartLayout::Hot,
                chunk_cells: None,
                footer: None,
            },
            sample: si,
            gene_cells,
        })
    };
    let (parts, obs) = rayon::join(
        || {
            (0..layout.len())
                .into_par_iter()
                .map(write_part)
                .collect::<Result<Vec<_>>>()
        },
        || write_synthetic_obs(&dir.join("obs.parquet"), spec, &samples),
    );
    let parts = parts?;
    obs?;

    let mut gene_cells = vec![0u64; spec.n_genes as usize];
    let mut gene_samples = vec![0u32; spec.n_genes as usize];
    let mut sample_nnz = vec![0u64; samples.len()];
    let mut seen = vec![false; spec.n_genes as usize];
    let mut current = usize::MAX;
    for p in &parts {
        if p.sample != current {
            current = p.sample;
            seen.iter_mut().for_each(|s| *s = false);
        }
        sample_nnz[p.sample] += p.entry.nnz;
        for (g, &n) in p.gene_cells.iter().enumerate() {
            gene_cells[g] += n;
            if n > 0 && !seen[g] {
                seen[g] = true;
                gene_samples[g] += 1;
            }
        }
    }
    let sample_entries: Vec<SampleEntry> = samples
        .iter()
        .zip(&sample_nnz)
        .map(|((id, first, n), &nnz)| SampleEntry {
            sample_id: id.clone(),
            first_cell: *first,
            n_cells: *n,
            nnz,
            spatial_dims: 0,
        })
        .collect();
    let n_genes = spec.n_genes as u64;
    write_parquet(
        &dir.join("genes.parquet"),
        &[genes_batch(n_genes, gene_samples, gene_cells)?],
    )?;
    write_parquet(
        &dir.join("samples.parquet"),
        &[samples_batch(&sample_entries, n_genes)?],
    )?;

    let parts: Vec<PartEntry> = parts.into_iter().map(|p| p.entry).collect();
    let mut rels: Vec<String> = parts.iter().map(|p| p.path.clone()).collect();
    rels.extend(["obs.parquet", "genes.parquet", "samples.parquet"].map(String::from));
    let files = rels
        .par_iter()
        .map(|rel| {
            let (sha256, bytes) = sha256_file(&dir.join(rel))?;
            Ok(FileEntry {
                path: rel.clone(),
                bytes,
                sha256,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let manifest = Manifest {
        format: FORMAT_NAME.into(),
        format_version: 1,
        created_by: format!("cellarrow {} (corpus::testing)", env!("CARGO_PKG_VERSION")),
        n_cells: spec.n_cells,
        n_genes,
        nnz: sample_nnz.iter().sum(),
        index_type,
        value_type,
        matrix: MatrixInfo {
            batch_rows: spec.batch_rows as u64,
            part_cells: spec.part_cells,
            parts,
        },
        samples: sample_entries,
        options: serde_json::json!({ "testing": true, "synthetic_seed": spec.seed }),
        files,
        tables: Default::default(),
        lineage: Vec::new(),
    };
    manifest.write(dir)?;
    Ok(manifest)
}

/// obs.parquet of a synthetic corpus, streamed in row groups of [`super::ROW_GROUP_ROWS`].
fn write_synthetic_obs(
    path: &Path,
    spec: &SyntheticCorpus,
    samples: &[(String, u64, u64)],
) -> Result<()> {
    use std::fmt::Write as _;

    use arrow::array::{Int32Array, StringBuilder};
    use parquet::arrow::ArrowWriter;

    use crate::error::Context;

    let chunk = super::ROW_GROUP_ROWS as u64;
    let mut file = Some(std::fs::File::create(path).map_err(|e| Error::io(path, "creating", e))?);
    let mut writer: Option<ArrowWriter<std::fs::File>> = None;
    let (mut idx, mut val) = (Vec::new(), Vec::new());
    for (id, first, n) in samples {
        let ids: ArrayRef = Arc::new(StringArray::from(vec![id.as_str()]));
        let mut r = 0u64;
        while r < *n {
            let len = chunk.min(n - r);
            let cells = first + r..first + r + len;
            let mut names = StringBuilder::with_capacity(len as usize, len as usize * 16);
            let (mut nnz, mut total) = (Vec::with_capacity(len as usize), Vec::new());
            for (k, cell) in cells.clone().enumerate() {
                write!(names, "{id}-{}", r + k as u64).expect("writing to a String");
                names.append_value("");
                spec.row(cell, &mut idx, &mut val);
                nnz.push(idx.len() as u32);
                total.push(val.iter().sum::<f64>());
            }
            let sample = DictionaryArray::<Int32Type>::try_new(
                Int32Array::from(vec![0; len as usize]),
                ids.clone(),
            )?;
            let batch = RecordBatch::try_from_iter([
                (
                    "cell",
                    Arc::new(UInt64Array::from_iter_values(cells)) as ArrayRef,
                ),
                ("sample_id", Arc::new(sample)),
                ("obs_name", Arc::new(names.finish())),
                (
                    "source_row",
                    Arc::new(UInt64Array::from_iter_values(r..r + len)),
                ),
                ("nnz", Arc::new(UInt32Array::from(nnz))),
                ("total", Arc::new(Float64Array::from(total))),
            ])?;
            if writer.is_none() {
                let schema = batch.schema();
                let props = super::writer_properties(&schema);
                writer = Some(
                    ArrowWriter::try_new(file.take().expect("one writer"), schema, Some(props))
                        .at(path)?,
                );
            }
            writer
                .as_mut()
                .expect("created above")
                .write(&batch)
                .at(path)?;
            r += len;
        }
    }
    let file = writer
        .expect("a synthetic corpus has cells")
        .into_inner()
        .at(path)?;
    file.sync_all().map_err(|e| Error::io(path, "syncing", e))
}

fn genes_batch(n_genes: u64, n_samples: Vec<u32>, n_cells: Vec<u64>) -> Result<RecordBatch> {
    Ok(RecordBatch::try_from_iter([
        (
            "gene",
            Arc::new(UInt32Array::from_iter_values(0..n_genes as u32)) as ArrayRef,
        ),
        (
            "name",
            Arc::new(StringArray::from_iter_values(
                (0..n_genes).map(|g| format!("gene{g}")),
            )),
        ),
        ("n_samples", Arc::new(UInt32Array::from(n_samples))),
        ("n_cells", Arc::new(UInt64Array::from(n_cells))),
    ])?)
}

fn samples_batch(s: &[SampleEntry], n_genes: u64) -> Result<RecordBatch> {
    let n = s.len();
    Ok(RecordBatch::try_from_iter([
        (
            "sample_id",
            Arc::new(StringArray::from_iter_values(
                s.iter().map(|e| e.sample_id.clone()),
            )) as ArrayRef,
        ),
        (
            "source_path",
            Arc::new(StringArray::from_iter_values(
                s.iter().map(|e| format!("{}.h5ad", e.sample_id)),
            )),
        ),
        (
            "source_sha256",
            Arc::new(StringArray::from_iter_values(
                s.iter()
                    .map(|e| format!("{:064x}", splitmix64(e.first_cell))),
            )),
        ),
        (
            "first_cell",
            Arc::new(UInt64Array::from_iter_values(
                s.iter().map(|e| e.first_cell),
            )),
        ),
        (
            "n_cells",
            Arc::new(UInt64Array::from_iter_values(s.iter().map(|e| e.n_cells))),
        ),
        (
            "nnz",
            Arc::new(UInt64Array::from_iter_values(s.iter().map(|e| e.nnz))),
        ),
        (
            "matrix_source",
            Arc::new(StringArray::from_iter_values(std::iter::repeat_n("X", n))),
        ),
        (
            "n_source_genes",
            Arc::new(UInt64Array::from_iter_values(std::iter::repeat_n(
                n_genes, n,
            ))),
        ),
        (
            "n_genes_outside_vocab",
            Arc::new(UInt64Array::from_iter_values(std::iter::repeat_n(0, n))),
        ),
        (
            "nnz_outside_vocab",
            Arc::new(UInt64Array::from_iter_values(std::iter::repeat_n(0, n))),
        ),
        (
            "spatial_dims",
            Arc::new(UInt8Array::from_iter_values(std::iter::repeat_n(0, n))),
        ),
    ])?)
}
