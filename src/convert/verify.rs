//! `validate --against`: re-reads source h5ad files and compares every stored value with the
//! corpus, cell by cell, through code independent of the converter's row path.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray};
use arrow::datatypes::UInt64Type;

use crate::corpus::{sha256_file, Corpus};
use crate::error::{Error, ErrorKind, Result};
use crate::h5ad::{H5ad, MatrixSource};

/// What was compared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Comparison {
    pub files: usize,
    pub cells: u64,
    pub nnz: u64,
}

fn mismatch(path: &Path, msg: String) -> Error {
    Error::new(ErrorKind::InvalidCorpus, msg).with_path(path)
}

fn source_from_options(options: &serde_json::Value) -> MatrixSource {
    match options.get("source").and_then(|s| s.as_str()) {
        Some("raw/X") => MatrixSource::Raw,
        Some(s) if s.starts_with("layers/") => {
            MatrixSource::Layer(s["layers/".len()..].to_string())
        }
        _ => MatrixSource::X,
    }
}

/// Compares the corpus at `dir` with the source files it was converted from. Each file is
/// matched to its sample by sha256; a file that is not a source of the corpus is an error.
pub fn against(dir: &Path, sources: &[PathBuf]) -> Result<Comparison> {
    let stored = Stored::open(dir)?;
    let mut out = Comparison::default();
    for path in sources {
        stored.compare_file(path, &mut out)?;
        out.files += 1;
    }
    Ok(out)
}

/// One stored sample: its id and its cells `first_cell .. first_cell + n_cells`.
#[derive(Debug, Clone)]
struct StoredSample {
    id: String,
    first_cell: u64,
    n_cells: u64,
}

/// What the comparison needs from the corpus, read once for all source files.
struct Stored<'a> {
    dir: &'a Path,
    corpus: Corpus,
    /// The conversion options of the manifest: which matrix, which gene names.
    source: MatrixSource,
    gene_column: Option<String>,
    symbol_column: Option<String>,
    /// Duplicate gene names were resolved by keeping the first.
    first_only: bool,
    /// The corpus genes, matched as the conversion matched them.
    vocab: crate::genes::GeneIndex,
    /// The species of each sample (samples.parquet), by sample id.
    species: HashMap<String, String>,
    by_sha: HashMap<String, StoredSample>,
    /// `source_row` of every cell.
    source_rows: Vec<u64>,
}

impl<'a> Stored<'a> {
    fn open(dir: &'a Path) -> Result<Stored<'a>> {
        let corpus = Corpus::open(dir)?;
        let options = &corpus.manifest().options;
        let source = source_from_options(options);
        let gene_column = options
            .get("gene_column")
            .and_then(|g| g.as_str())
            .map(str::to_string);
        let symbol_column = options
            .get("symbol_column")
            .and_then(|g| g.as_str())
            .map(str::to_string);
        let first_only = options.get("duplicate_genes").and_then(|d| d.as_str()) == Some("first");
        let key = options
            .get("gene_key")
            .and_then(|k| k.as_str())
            .and_then(|k| k.parse().ok())
            .unwrap_or_default();
        let vocab = crate::genes::table::read_index(&corpus.table_files("genes"), key)?;
        let species = sample_species(&corpus)?;
        let by_sha = samples_by_sha(&corpus)?;
        let source_rows = source_rows(&corpus)?;
        Ok(Stored {
            dir,
            corpus,
            source,
            gene_column,
            symbol_column,
            first_only,
            vocab,
            species,
            by_sha,
            source_rows,
        })
    }

    /// Compares every row of one source file with its cell.
    fn compare_file(&self, path: &Path, out: &mut Comparison) -> Result<()> {
        let (sha, _) = sha256_file(path)?;
        let Some(sample) = self.by_sha.get(&sha) else {
            return Err(Error::invalid_input(
                "this file is not a source of the corpus (no sample has its sha256)",
            )
            .with_path(path));
        };
        let cell_of_row = self.cell_of_row(sample)?;
        let h5 = H5ad::open(path)?;
        let cols = crate::genes::source::GeneColumns {
            gene_column: self.gene_column.as_deref(),
            symbol_column: self.symbol_column.as_deref(),
        };
        let mut genes = crate::genes::source::read_identities(&h5, &self.source, &cols)?;
        let declared = self.species.get(&sample.id).map(String::as_str);
        crate::genes::source::assign_species(&mut genes, declared);
        let map = self.gene_map(&genes);
        let matrix = h5.matrix(&self.source)?;
        if matrix.shape().0 != sample.n_cells {
            return Err(mismatch(
                path,
                format!(
                    "sample {}: the file has {} rows, the corpus {} cells",
                    sample.id,
                    matrix.shape().0,
                    sample.n_cells
                ),
            ));
        }
        for chunk in matrix.chunks(1 << 20) {
            let chunk = chunk?;
            for r in 0..chunk.n_rows() {
                let row = chunk.row_start + r as u64;
                let range = chunk.indptr[r] as usize..chunk.indptr[r + 1] as usize;
                let want = expected_row(&map, &chunk.indices[range.clone()], &chunk.values[range]);
                let cell = cell_of_row[row as usize];
                out.nnz += self.check_cell(path, sample, cell, row, &want)? as u64;
            }
            out.cells += chunk.n_rows() as u64;
        }
        Ok(())
    }

    /// The storage position of each source row of `sample`, checking that the `source_row`
    /// column is a permutation of its rows.
    fn cell_of_row(&self, sample: &StoredSample) -> Result<Vec<u64>> {
        let n_cells = sample.n_cells;
        let mut cell_of_row = vec![u64::MAX; n_cells as usize];
        for cell in sample.first_cell..sample.first_cell + n_cells {
            let r = self.source_rows[cell as usize];
            if r >= n_cells || cell_of_row[r as usize] != u64::MAX {
                return Err(mismatch(
                    &self.corpus.table_path("obs"),
                    format!("cell {cell}: source_row {r} is out of range or repeated"),
                ));
            }
            cell_of_row[r as usize] = cell;
        }
        Ok(cell_of_row)
    }

    /// Source gene position -> corpus gene id (`None`: not stored, or a later duplicate
    /// under `duplicate_genes = first`).
    fn gene_map(&self, genes: &[crate::genes::GeneIdentity]) -> Vec<Option<u32>> {
        let mut seen = HashSet::new();
        genes
            .iter()
            .map(|g| {
                let id = self.vocab.stored(g)?;
                let first = seen.insert(id);
                if !first && self.first_only {
                    None
                } else {
                    Some(id)
                }
            })
            .collect()
    }

    /// Checks the stored row of `cell` against `want`; returns its non-zeros.
    fn check_cell(
        &self,
        path: &Path,
        sample: &StoredSample,
        cell: u64,
        row: u64,
        want: &[(u32, f64)],
    ) -> Result<usize> {
        // Through the checked batch, so that a cold corpus is compared chunk by chunk within the
        // bounded cache of decoded chunks.
        let (b, r) = self.corpus.checked_batch(cell)?;
        let range = b.row_range(r);
        let (idx, val) = (b.indices().slice(range.clone()), b.values().slice(range));
        let got: Vec<(u32, f64)> = (0..idx.len()).map(|k| (idx.get(k), val.get(k))).collect();
        if got != want {
            let first_diff = got
                .iter()
                .zip(want)
                .position(|(a, b)| a != b)
                .unwrap_or(got.len().min(want.len()));
            return Err(mismatch(
                self.dir,
                format!(
                    "sample {}, cell {cell} (source row {row} of {}): {} stored non-zeros, {} in the source; first difference at entry {first_diff}: corpus {:?}, source {:?}",
                    sample.id,
                    path.display(),
                    got.len(),
                    want.len(),
                    got.get(first_diff),
                    want.get(first_diff)
                ),
            ));
        }
        Ok(got.len())
    }
}

/// What a source row should be stored as: its values summed per corpus gene id, genes that are
/// not stored left out, zeros dropped, in gene id order.
fn expected_row(map: &[Option<u32>], indices: &[u32], values: &[f64]) -> Vec<(u32, f64)> {
    let mut expected: BTreeMap<u32, f64> = BTreeMap::new();
    for (&i, &v) in indices.iter().zip(values) {
        if let Some(id) = map[i as usize] {
            *expected.entry(id).or_default() += v;
        }
    }
    expected.retain(|_, v| *v != 0.0);
    expected.into_iter().collect()
}

/// Stored samples by the sha256 of their source file.
fn samples_by_sha(corpus: &Corpus) -> Result<HashMap<String, StoredSample>> {
    let samples = corpus.read_table(
        "samples",
        Some(&["sample_id", "source_sha256", "first_cell", "n_cells"]),
    )?;
    let mut by_sha = HashMap::new();
    for b in &samples {
        let (id, sha) = (
            b.column(0).as_string::<i32>(),
            b.column(1).as_string::<i32>(),
        );
        let (first, n) = (
            b.column(2).as_primitive::<UInt64Type>(),
            b.column(3).as_primitive::<UInt64Type>(),
        );
        for i in 0..b.num_rows() {
            by_sha.insert(
                sha.value(i).to_string(),
                StoredSample {
                    id: id.value(i).to_string(),
                    first_cell: first.value(i),
                    n_cells: n.value(i),
                },
            );
        }
    }
    Ok(by_sha)
}

/// Each sample's species (samples.parquet `species`; none in corpora written before it).
fn sample_species(corpus: &Corpus) -> Result<HashMap<String, String>> {
    let batches = corpus.read_table("samples", None)?;
    let mut out = HashMap::new();
    for b in &batches {
        let (Some(id), Some(sp)) = (b.column_by_name("sample_id"), b.column_by_name("species"))
        else {
            continue;
        };
        let id = arrow::compute::cast(id, &arrow::datatypes::DataType::Utf8)?;
        let sp = arrow::compute::cast(sp, &arrow::datatypes::DataType::Utf8)?;
        let (id, sp) = (id.as_string::<i32>(), sp.as_string::<i32>());
        for i in 0..b.num_rows() {
            if !sp.is_null(i) {
                out.insert(id.value(i).to_string(), sp.value(i).to_string());
            }
        }
    }
    Ok(out)
}

/// The `source_row` column of obs, one per cell.
fn source_rows(corpus: &Corpus) -> Result<Vec<u64>> {
    let obs = corpus.read_table("obs", Some(&["source_row"]))?;
    let source_rows: Vec<u64> = obs
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_primitive::<UInt64Type>()
                .values()
                .iter()
                .copied()
                .collect::<Vec<_>>()
        })
        .collect();
    if source_rows.len() as u64 != corpus.n_cells() {
        return Err(mismatch(
            &corpus.table_path("obs"),
            format!("{} rows for {} cells", source_rows.len(), corpus.n_cells()),
        ));
    }
    Ok(source_rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::{convert, ConvertOptions, InputSample};

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(name)
    }

    #[test]
    fn expected_rows_sum_duplicates_and_drop_unstored_genes_and_zeros() {
        // Source genes 0 and 2 are both corpus gene 5; source gene 1 is not stored.
        let map = [Some(5), None, Some(5), Some(1), Some(3)];
        let row = expected_row(&map, &[0, 1, 2, 3, 4], &[1.0, 9.0, 2.0, 4.0, 0.0]);
        assert_eq!(row, vec![(1, 4.0), (5, 3.0)]);
    }

    #[test]
    fn a_conversion_matches_its_source_and_other_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("c");
        let src = fixture("scanpy_10x_v3_chr21_counts.h5ad");
        let sample = InputSample {
            path: src.clone(),
            sample_id: "chr21".into(),
            metadata: Default::default(),
        };
        let summary = convert(&[sample], &ConvertOptions::new(&out)).unwrap();
        let cmp = against(&out, &[src]).unwrap();
        assert_eq!(
            cmp,
            Comparison {
                files: 1,
                cells: summary.n_cells,
                nnz: summary.nnz
            }
        );
        let other = fixture("debian_sctransform_pbmc_counts.h5ad");
        let e = against(&out, &[other]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        assert!(e.to_string().contains("not a source"), "{e}");
    }
}
