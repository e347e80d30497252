//! `validate`: checksums and every structural invariant of a corpus.

use std::collections::HashSet;
use std::path::Path;

use arrow::array::Array;

use super::cold::check_chunk_checksums;
use super::manifest::{resolve, MANIFEST_FILE};
use super::reader::{check_files, open_matrix, MatrixBatch, Slot};
use super::table::{as_strings, as_u64, scan_parquet};
use super::table::{parquet_rows, parquet_schema};
use super::{
    sha256_file, Indices, Manifest, PartLayout, Values, GENE_COUNTS_TABLE, REQUIRED_TABLES,
};
use crate::error::{Error, Result};

/// What `validate` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidationReport {
    /// Files whose size and sha256 matched the manifest (manifest.json itself not counted).
    pub files_checked: usize,
    /// Cells whose matrix rows were checked.
    pub cells_checked: u64,
    /// Non-zeros checked.
    pub nnz_checked: u64,
}

/// Checks every checksum and structural invariant; the error names the first file and row that fail.
///
/// In order: the manifest (JSON Schema, version, consistency), the set of files on disk against
/// `files` (nothing missing, nothing extra), every file's size and sha256, then each matrix
/// part (schema, batch offsets starting at 0 and monotone, gene ids below `n_genes` and strictly
/// increasing within each cell, finite values, counts against the manifest), `obs.parquet`
/// (`cell` = 0..n_cells, `sample_id` matching the sample ranges), `genes.parquet` (`gene` =
/// row, unique non-null names, n_genes rows) and `samples.parquet` (rows equal to the manifest's
/// samples). Every failure is [`crate::ErrorKind::InvalidCorpus`] (or `Io` if a file cannot be
/// read at all); corrupted files give an error, never a panic.
///
/// A corpus URL (`s3://bucket/corpus`, with the `remote` feature) is opened as
/// [`super::Corpus::open`] opens it, which fetches every listed file and checks its size and
/// sha256 before use; then the same structural checks run. The listing of the prefix is not
/// compared with `files` (an object store may hold other objects under it).
///
/// ```no_run
/// let report = cellarrow::corpus::validate("corpus")?;
/// println!("{} files, {} cells, {} non-zeros", report.files_checked, report.cells_checked, report.nnz_checked);
/// # Ok::<(), cellarrow::Error>(())
/// ```
pub fn validate(dir: impl AsRef<Path>) -> Result<ValidationReport> {
    #[cfg(feature = "remote")]
    if let Some(url) = dir.as_ref().to_str().filter(|s| crate::store::is_url(s)) {
        return validate_url(url);
    }
    let root = dir.as_ref();
    let manifest = Manifest::read(root)?;
    let mut report = ValidationReport::default();

    check_file_set(root, &manifest)?;
    check_files(root, &manifest.files)?;
    for f in &manifest.files {
        let p = resolve(root, &f.path)?;
        let (sha, bytes) = sha256_file(&p)?;
        if bytes != f.bytes {
            return Err(Error::corpus(
                root.join(&f.path),
                format!("is {bytes} bytes, manifest.json says {}", f.bytes),
            ));
        }
        if sha != f.sha256 {
            return Err(Error::corpus(
                root.join(&f.path),
                format!(
                    "sha256 mismatch: the file hashes to {sha}, manifest.json says {}",
                    f.sha256
                ),
            ));
        }
        report.files_checked += 1;
    }
    for (pi, part) in manifest.matrix.parts.iter().enumerate() {
        if part.layout == PartLayout::Cold {
            let p = resolve(root, &part.path)?;
            let bytes = std::fs::read(&p).map_err(|e| Error::io(&p, "reading", e))?;
            check_chunk_checksums(&p, &bytes, &manifest, part, pi)?;
        }
    }
    let matrix = open_matrix(root, &manifest, 0)?;
    check_contents(root, &manifest, &matrix.batches, &mut report)?;
    Ok(report)
}

/// [`validate`] of a corpus URL: opening it fetched and checked every file. Through a cache
/// of its own, so that every byte comes from the server now: the node's cache would serve the
/// listed bytes of a file that has since changed on the server.
#[cfg(feature = "remote")]
fn validate_url(url: &str) -> Result<ValidationReport> {
    let dir = tempfile::Builder::new()
        .prefix("cellarrow-validate-")
        .tempdir()
        .map_err(|e| Error::io(std::env::temp_dir(), "creating a directory for", e))?;
    let cache = crate::store::Cache::open(dir.path(), u64::MAX)?;
    // Every part fetched whole, so every byte of every file is checked against the manifest.
    let corpus = super::Corpus::open_url_inner(
        url,
        &crate::store::StoreOptions::default(),
        Some(&cache),
        false,
    )?;
    let mut report = ValidationReport {
        files_checked: corpus.manifest().files.len(),
        ..ValidationReport::default()
    };
    check_contents(
        corpus.root(),
        corpus.manifest(),
        &corpus.matrix.batches,
        &mut report,
    )?;
    Ok(report)
}

/// The checks of the contents, once every file is known to be the listed one: the tables'
/// files, every matrix batch, and the obs, genes and samples tables.
fn check_contents(
    root: &Path,
    manifest: &Manifest,
    batches: &[Slot],
    report: &mut ValidationReport,
) -> Result<()> {
    for name in REQUIRED_TABLES {
        if manifest.table_paths(name).is_empty() {
            return Err(Error::corpus(
                root.join(format!("{name}.parquet")),
                "required table is missing from manifest.json files",
            ));
        }
    }
    check_table_files(root, manifest)?;

    for slot in batches {
        let path = root.join(&manifest.matrix.parts[slot.part()].path);
        let b = slot.load()?;
        check_batch(&path, &b, manifest.n_genes)?;
        report.cells_checked += b.n_cells() as u64;
        report.nnz_checked += b.nnz() as u64;
    }
    if report.cells_checked != manifest.n_cells || report.nnz_checked != manifest.nnz {
        return Err(Error::corpus(
            root.join(MANIFEST_FILE),
            format!(
                "matrix holds {} cells and {} non-zeros, manifest.json says {} and {}",
                report.cells_checked, report.nnz_checked, manifest.n_cells, manifest.nnz
            ),
        ));
    }
    check_obs(root, manifest)?;
    check_genes(root, manifest)?;
    check_samples(root, manifest)?;
    Ok(())
}

/// Files on disk (except manifest.json) must be exactly those listed.
fn check_file_set(root: &Path, manifest: &Manifest) -> Result<()> {
    let listed: HashSet<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    let mut on_disk = Vec::new();
    walk(root, "", &mut on_disk)?;
    on_disk.sort();
    for rel in &on_disk {
        if rel != MANIFEST_FILE && !listed.contains(rel.as_str()) {
            return Err(Error::corpus(
                root.join(rel),
                "is not listed in manifest.json (extra file)",
            ));
        }
    }
    let present: HashSet<&str> = on_disk.iter().map(String::as_str).collect();
    for f in &manifest.files {
        if !present.contains(f.path.as_str()) {
            return Err(Error::corpus(
                root.join(&f.path),
                "listed in manifest.json but missing",
            ));
        }
    }
    Ok(())
}

/// Relative `/`-joined paths of every non-directory entry; symlinks are listed, not followed.
fn walk(root: &Path, prefix: &str, out: &mut Vec<String>) -> Result<()> {
    let dir = root.join(prefix);
    let entries = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, "listing", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(&dir, "listing", e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            return Err(Error::corpus(
                entry.path(),
                "file name is not UTF-8 (not part of a corpus)",
            ));
        };
        let rel = if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}/{name}")
        };
        let ft = entry
            .file_type()
            .map_err(|e| Error::io(entry.path(), "reading file type", e))?;
        if ft.is_dir() {
            walk(root, &rel, out)?;
        } else {
            out.push(rel);
        }
    }
    Ok(())
}

fn check_batch(path: &Path, b: &MatrixBatch, n_genes: u64) -> Result<()> {
    let first = b.first_cell();
    let bad = |cell: u64, msg: String| Err(Error::corpus(path, format!("cell {cell}: {msg}")));
    b.check()?;
    let off = b.offsets();
    if off[0] != 0 {
        return bad(
            first,
            format!("batch offsets start at {}, expected 0", off[0]),
        );
    }
    for r in 0..off.len() - 1 {
        if off[r + 1] < off[r] {
            return bad(
                first + r as u64,
                format!("indptr decreases ({} > {})", off[r], off[r + 1]),
            );
        }
    }
    let nnz = *off.last().expect("offsets are non-empty") as usize;
    if b.indices().len() != nnz || b.values().len() != nnz {
        return bad(
            first,
            format!(
                "batch indptr ends at {nnz} but it holds {} gene ids and {} values",
                b.indices().len(),
                b.values().len()
            ),
        );
    }
    let voff = b
        .record_batch()
        .column(1)
        .as_any()
        .downcast_ref::<arrow::array::ListArray>()
        .map(|l| l.value_offsets());
    if let Some(voff) = voff {
        if let Some(r) = (0..off.len()).find(|&r| voff[r] != off[r]) {
            return bad(
                first + r.saturating_sub(1) as u64,
                "indices and values have different list offsets".into(),
            );
        }
    }
    match b.indices() {
        Indices::U16(ix) => check_indices(ix, off, first, n_genes).or_else(|(c, m)| bad(c, m))?,
        Indices::U32(ix) => check_indices(ix, off, first, n_genes).or_else(|(c, m)| bad(c, m))?,
    }
    let nonfinite = |pos: usize| {
        let r = off.partition_point(|&o| o as usize <= pos) - 1;
        first + r as u64
    };
    match b.values() {
        Values::F32(v) => {
            if let Some(p) = v.iter().position(|x| !x.is_finite()) {
                return bad(nonfinite(p), format!("value {} is not finite", v[p]));
            }
        }
        Values::F64(v) => {
            if let Some(p) = v.iter().position(|x| !x.is_finite()) {
                return bad(nonfinite(p), format!("value {} is not finite", v[p]));
            }
        }
        Values::U16(_) | Values::U32(_) => {}
    }
    Ok(())
}

fn check_indices<T: Copy + Into<u64>>(
    ix: &[T],
    off: &[i32],
    first: u64,
    n_genes: u64,
) -> std::result::Result<(), (u64, String)> {
    for r in 0..off.len() - 1 {
        let row = &ix[off[r] as usize..off[r + 1] as usize];
        let mut prev: Option<u64> = None;
        for &g in row {
            let g: u64 = g.into();
            if g >= n_genes {
                return Err((
                    first + r as u64,
                    format!("gene index {g} >= n_genes {n_genes}"),
                ));
            }
            if let Some(p) = prev {
                if g <= p {
                    return Err((
                        first + r as u64,
                        format!("gene indices not strictly increasing ({p} then {g})"),
                    ));
                }
            }
            prev = Some(g);
        }
    }
    Ok(())
}

/// Format 2: each table file holds the rows the manifest says, and all files of one table
/// share one Arrow schema (so that every reader sees one table); `gene_counts` rows name genes
/// of the vocabulary.
fn check_table_files(root: &Path, m: &Manifest) -> Result<()> {
    for (name, files) in &m.tables {
        let mut first: Option<(String, arrow::datatypes::SchemaRef)> = None;
        for f in files {
            let path = root.join(&f.path);
            let rows = parquet_rows(&path)?;
            if rows != f.rows {
                return Err(Error::corpus(
                    &path,
                    format!("has {rows} rows, manifest.json says {}", f.rows),
                ));
            }
            let schema = parquet_schema(&path)?;
            match &first {
                None => first = Some((f.path.clone(), schema)),
                Some((p0, s0)) if s0.fields() != schema.fields() => {
                    return Err(Error::corpus(
                        &path,
                        format!("table {name}: its columns differ from those of {p0}"),
                    ));
                }
                Some(_) => {}
            }
        }
    }
    for rel in m.table_paths(GENE_COUNTS_TABLE) {
        let path = root.join(&rel);
        let mut row = 0u64;
        scan_parquet(&path, Some(&["gene", "n_samples", "n_cells"]), |b| {
            let genes = as_u64(&path, "gene", b.column(0), row)?;
            for c in 1..3 {
                as_u64(&path, ["", "n_samples", "n_cells"][c], b.column(c), row)?;
            }
            if let Some(i) = (0..genes.len()).find(|&i| genes.value(i) >= m.n_genes) {
                return Err(Error::corpus(
                    &path,
                    format!(
                        "row {}: gene {} >= n_genes {}",
                        row + i as u64,
                        genes.value(i),
                        m.n_genes
                    ),
                ));
            }
            row += genes.len() as u64;
            Ok(())
        })?;
    }
    Ok(())
}

/// Streams the columns `cols` of every file of `table` in row order; `f` gets the file and
/// the table row of the batch's first row.
fn scan_table(
    root: &Path,
    m: &Manifest,
    table: &str,
    cols: &[&str],
    mut f: impl FnMut(&Path, u64, arrow::record_batch::RecordBatch) -> Result<()>,
) -> Result<u64> {
    let mut row = 0u64;
    for rel in m.table_paths(table) {
        let path = root.join(rel);
        scan_parquet(&path, Some(cols), |b| {
            let n = b.num_rows() as u64;
            f(&path, row, b)?;
            row += n;
            Ok(())
        })?;
    }
    Ok(row)
}

/// The last file of a table, for an error about the table as a whole.
fn last_file(root: &Path, m: &Manifest, table: &str) -> std::path::PathBuf {
    m.table_paths(table)
        .pop()
        .map(|p| root.join(p))
        .unwrap_or_else(|| root.join(format!("{table}.parquet")))
}

fn check_obs(root: &Path, m: &Manifest) -> Result<()> {
    let mut sample = 0usize;
    let row = scan_table(root, m, "obs", &["cell", "sample_id"], |path, row, b| {
        let cells = as_u64(path, "cell", b.column(0), row)?;
        let ids = as_strings(path, "sample_id", b.column(1), row)?;
        for i in 0..cells.len() {
            let r = row + i as u64;
            if cells.value(i) != r {
                return Err(Error::corpus(
                    path,
                    format!("row {r}: cell is {}, expected {r}", cells.value(i)),
                ));
            }
            while sample < m.samples.len()
                && r >= m.samples[sample].first_cell + m.samples[sample].n_cells
            {
                sample += 1;
            }
            let want = m
                .samples
                .get(sample)
                .map(|s| s.sample_id.as_str())
                .unwrap_or("");
            if ids.value(i) != want {
                return Err(Error::corpus(
                    path,
                    format!(
                    "row {r} (cell {r}): sample_id is {:?}, expected {want:?} from manifest.json",
                    ids.value(i)
                ),
                ));
            }
        }
        Ok(())
    })?;
    if row != m.n_cells {
        return Err(Error::corpus(
            last_file(root, m, "obs"),
            format!("has {row} rows, manifest.json says n_cells = {}", m.n_cells),
        ));
    }
    Ok(())
}

fn check_genes(root: &Path, m: &Manifest) -> Result<()> {
    let mut names = HashSet::new();
    let row = scan_table(root, m, "genes", &["gene", "name"], |path, row, b| {
        let genes = as_u64(path, "gene", b.column(0), row)?;
        let name = as_strings(path, "name", b.column(1), row)?;
        for i in 0..genes.len() {
            let r = row + i as u64;
            if genes.value(i) != r {
                return Err(Error::corpus(
                    path,
                    format!("row {r}: gene is {}, expected {r}", genes.value(i)),
                ));
            }
            if !names.insert(name.value(i).to_owned()) {
                return Err(Error::corpus(
                    path,
                    format!("row {r}: gene name {:?} appears twice", name.value(i)),
                ));
            }
        }
        Ok(())
    })?;
    if row != m.n_genes {
        return Err(Error::corpus(
            last_file(root, m, "genes"),
            format!("has {row} rows, manifest.json says n_genes = {}", m.n_genes),
        ));
    }
    Ok(())
}

fn check_samples(root: &Path, m: &Manifest) -> Result<()> {
    let cols = ["sample_id", "first_cell", "n_cells", "nnz", "spatial_dims"];
    let row = scan_table(root, m, "samples", &cols, |path, row, b| {
        let row = row as usize;
        let id = as_strings(path, "sample_id", b.column(0), row as u64)?;
        let nums: Vec<_> = (1..5)
            .map(|c| as_u64(path, cols[c], b.column(c), row as u64))
            .collect::<Result<_>>()?;
        for i in 0..b.num_rows() {
            let r = row + i;
            let Some(s) = m.samples.get(r) else {
                return Err(Error::corpus(
                    path,
                    format!(
                        "row {r}: more samples than manifest.json lists ({})",
                        m.samples.len()
                    ),
                ));
            };
            let got = (
                id.value(i),
                nums[0].value(i),
                nums[1].value(i),
                nums[2].value(i),
                nums[3].value(i),
            );
            let want = (
                s.sample_id.as_str(),
                s.first_cell,
                s.n_cells,
                s.nnz,
                s.spatial_dims as u64,
            );
            if got != want {
                return Err(Error::corpus(path, format!(
                    "row {r}: (sample_id, first_cell, n_cells, nnz, spatial_dims) is {got:?}, manifest.json says {want:?}"
                )));
            }
        }
        Ok(())
    })?;
    if row as usize != m.samples.len() {
        return Err(Error::corpus(
            last_file(root, m, "samples"),
            format!(
                "has {row} rows, manifest.json lists {} samples",
                m.samples.len()
            ),
        ));
    }
    Ok(())
}
