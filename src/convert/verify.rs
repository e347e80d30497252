//! `validate --against`: re-reads source h5ad files and compares every stored value with the
//! corpus, cell by cell, through code independent of the converter's row path.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use arrow::array::AsArray;
use arrow::datatypes::UInt64Type;

use crate::corpus::{read_parquet, sha256_file, Corpus};
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
    let corpus = Corpus::open(dir)?;
    let options = &corpus.manifest().options;
    let source = source_from_options(options);
    let gene_column = options
        .get("gene_column")
        .and_then(|g| g.as_str())
        .map(str::to_string);
    let first_only = options.get("duplicate_genes").and_then(|d| d.as_str()) == Some("first");
    let vocab: HashMap<String, u32> = corpus
        .gene_names()?
        .into_iter()
        .enumerate()
        .map(|(i, g)| (g, i as u32))
        .collect();

    let samples_path = corpus.table_path("samples");
    let samples = read_parquet(
        &samples_path,
        Some(&["sample_id", "source_sha256", "first_cell", "n_cells"]),
    )?;
    let mut by_sha: HashMap<String, (String, u64, u64)> = HashMap::new();
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
                (id.value(i).to_string(), first.value(i), n.value(i)),
            );
        }
    }
    let obs = read_parquet(&corpus.table_path("obs"), Some(&["source_row"]))?;
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

    let mut out = Comparison::default();
    for path in sources {
        let (sha, _) = sha256_file(path)?;
        let Some((sample_id, first_cell, n_cells)) = by_sha.get(&sha).cloned() else {
            return Err(Error::invalid_input(
                "this file is not a source of the corpus (no sample has its sha256)",
            )
            .with_path(path));
        };
        // Storage position of each source row of this sample.
        let mut cell_of_row = vec![u64::MAX; n_cells as usize];
        for cell in first_cell..first_cell + n_cells {
            let r = source_rows[cell as usize];
            if r >= n_cells || cell_of_row[r as usize] != u64::MAX {
                return Err(mismatch(
                    &corpus.table_path("obs"),
                    format!("cell {cell}: source_row {r} is out of range or repeated"),
                ));
            }
            cell_of_row[r as usize] = cell;
        }
        let h5 = H5ad::open(path)?;
        let genes = h5.gene_names(&source, gene_column.as_deref())?;
        let mut seen = HashSet::new();
        let map: Vec<Option<u32>> = genes
            .iter()
            .map(|g| {
                let first = seen.insert(g.as_str());
                if !first && first_only {
                    None
                } else {
                    vocab.get(g).copied()
                }
            })
            .collect();
        let matrix = h5.matrix(&source)?;
        if matrix.shape().0 != n_cells {
            return Err(mismatch(
                path,
                format!(
                    "sample {sample_id}: the file has {} rows, the corpus {n_cells} cells",
                    matrix.shape().0
                ),
            ));
        }
        for chunk in matrix.chunks(1 << 20) {
            let chunk = chunk?;
            for r in 0..chunk.n_rows() {
                let row = chunk.row_start + r as u64;
                let mut expected: BTreeMap<u32, f64> = BTreeMap::new();
                for k in chunk.indptr[r] as usize..chunk.indptr[r + 1] as usize {
                    if let Some(id) = map[chunk.indices[k] as usize] {
                        *expected.entry(id).or_default() += chunk.values[k];
                    }
                }
                expected.retain(|_, v| *v != 0.0);
                let cell = cell_of_row[row as usize];
                let (idx, val) = (corpus.indices(cell), corpus.values(cell));
                let got: Vec<(u32, f64)> =
                    (0..idx.len()).map(|k| (idx.get(k), val.get(k))).collect();
                let want: Vec<(u32, f64)> = expected.into_iter().collect();
                if got != want {
                    let first_diff = got
                        .iter()
                        .zip(&want)
                        .position(|(a, b)| a != b)
                        .unwrap_or(got.len().min(want.len()));
                    return Err(mismatch(
                        dir,
                        format!(
                            "sample {sample_id}, cell {cell} (source row {row} of {}): {} stored non-zeros, {} in the source; first difference at entry {first_diff}: corpus {:?}, source {:?}",
                            path.display(),
                            got.len(),
                            want.len(),
                            got.get(first_diff),
                            want.get(first_diff)
                        ),
                    ));
                }
                out.nnz += got.len() as u64;
            }
            out.cells += chunk.n_rows() as u64;
        }
        out.files += 1;
    }
    Ok(out)
}
