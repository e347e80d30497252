//! The obs data samplers need (sample ranges, one label column, coordinates), built once.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, UInt64Type};

use crate::corpus::Corpus;
use crate::error::{Error, Result};

/// Label code of a cell whose label is null.
pub const NO_LABEL: u32 = u32::MAX;

/// One sample: a contiguous range of cell ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleRange {
    /// The sample id.
    pub sample_id: String,
    /// First global cell id.
    pub first_cell: u64,
    /// Number of cells.
    pub n_cells: u64,
    /// 0 for a non-spatial sample, else 2 or 3.
    pub spatial_dims: u8,
}

/// One categorical obs column as dense codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels {
    /// The obs column the labels come from.
    pub column: String,
    /// Distinct values, sorted; a code indexes this list.
    pub names: Vec<String>,
    /// One code per cell of the corpus ([`NO_LABEL`] for null).
    pub codes: Vec<u32>,
}

impl Labels {
    /// Labels from one optional string per cell; names are sorted, codes follow them.
    ///
    /// ```
    /// use cellarrow::sample::{Labels, NO_LABEL};
    /// let l = Labels::from_strings("cell_type", vec![Some("T"), None, Some("B"), Some("T")]);
    /// assert_eq!(l.names, vec!["B", "T"]);
    /// assert_eq!(l.codes, vec![1, NO_LABEL, 0, 1]);
    /// ```
    pub fn from_strings<S: AsRef<str>>(column: &str, values: Vec<Option<S>>) -> Labels {
        let mut interned: HashMap<String, u32> = HashMap::new();
        let mut names = Vec::new();
        let mut codes: Vec<u32> = values
            .iter()
            .map(|v| match v {
                None => NO_LABEL,
                Some(s) => *interned.entry(s.as_ref().to_string()).or_insert_with(|| {
                    names.push(s.as_ref().to_string());
                    (names.len() - 1) as u32
                }),
            })
            .collect();
        let mut order: Vec<u32> = (0..names.len() as u32).collect();
        order.sort_by(|&a, &b| names[a as usize].cmp(&names[b as usize]));
        let mut remap = vec![0u32; names.len()];
        for (new, &old) in order.iter().enumerate() {
            remap[old as usize] = new as u32;
        }
        for c in codes.iter_mut().filter(|c| **c != NO_LABEL) {
            *c = remap[*c as usize];
        }
        let names = order.iter().map(|&o| names[o as usize].clone()).collect();
        Labels {
            column: column.to_string(),
            names,
            codes,
        }
    }
}

/// What the group samplers know about the corpus: its samples (contiguous id ranges), and
/// optionally one label column and the cell coordinates. Build it once per process with
/// [`SampleIndex::from_corpus`], or directly from vectors (tests, other sources).
///
/// Memory: `O(samples)`, plus 4 bytes per cell with labels and 24 per cell with coordinates.
///
/// ```
/// use cellarrow::sample::{SampleIndex, SampleRange};
/// let idx = SampleIndex::new(vec![
///     SampleRange { sample_id: "a".into(), first_cell: 0, n_cells: 3, spatial_dims: 0 },
///     SampleRange { sample_id: "b".into(), first_cell: 3, n_cells: 2, spatial_dims: 2 },
/// ]).unwrap();
/// assert_eq!(idx.n_cells, 5);
/// assert_eq!(idx.sample_of(4), Some(1));
/// ```
#[derive(Debug, Clone)]
pub struct SampleIndex {
    /// Total cells (= the sum of the samples' cells).
    pub n_cells: u64,
    /// Samples in id order.
    pub samples: Vec<SampleRange>,
    /// The label column, if one was loaded.
    pub labels: Option<Arc<Labels>>,
    /// `[x, y, z]` per cell (NaN where unknown; z is NaN for 2-D samples), if loaded.
    pub coords: Option<Arc<Vec<[f64; 3]>>>,
}

impl SampleIndex {
    /// An index over samples that must tile `0..n_cells` contiguously in order.
    pub fn new(samples: Vec<SampleRange>) -> Result<SampleIndex> {
        let mut next = 0u64;
        for s in &samples {
            if s.first_cell != next {
                return Err(Error::invalid_input(format!(
                    "sample {:?} starts at cell {} but the previous sample ends at {next}",
                    s.sample_id, s.first_cell
                )));
            }
            if !matches!(s.spatial_dims, 0 | 2 | 3) {
                return Err(Error::invalid_input(format!(
                    "sample {:?}: spatial_dims must be 0, 2 or 3, got {}",
                    s.sample_id, s.spatial_dims
                )));
            }
            next += s.n_cells;
        }
        Ok(SampleIndex {
            n_cells: next,
            samples,
            labels: None,
            coords: None,
        })
    }

    /// Adds labels (one code per cell).
    pub fn with_labels(mut self, labels: Labels) -> Result<SampleIndex> {
        if labels.codes.len() as u64 != self.n_cells {
            return Err(Error::invalid_input(format!(
                "label column {:?} has {} values for {} cells",
                labels.column,
                labels.codes.len(),
                self.n_cells
            )));
        }
        if let Some(bad) = labels
            .codes
            .iter()
            .find(|&&c| c != NO_LABEL && c as usize >= labels.names.len())
        {
            return Err(Error::invalid_input(format!(
                "label code {bad} has no name"
            )));
        }
        self.labels = Some(Arc::new(labels));
        Ok(self)
    }

    /// Adds coordinates (one `[x, y, z]` per cell).
    pub fn with_coords(mut self, coords: Vec<[f64; 3]>) -> Result<SampleIndex> {
        if coords.len() as u64 != self.n_cells {
            return Err(Error::invalid_input(format!(
                "{} coordinates for {} cells",
                coords.len(),
                self.n_cells
            )));
        }
        self.coords = Some(Arc::new(coords));
        Ok(self)
    }

    /// The sample holding `cell`.
    pub fn sample_of(&self, cell: u64) -> Option<usize> {
        if cell >= self.n_cells {
            return None;
        }
        Some(
            self.samples
                .partition_point(|s| s.first_cell + s.n_cells <= cell),
        )
    }

    /// The sample index of `sample_id`.
    pub fn sample_by_id(&self, sample_id: &str) -> Option<usize> {
        self.samples.iter().position(|s| s.sample_id == sample_id)
    }

    /// The labels, or an `InvalidInput` error naming what needed them.
    pub fn require_labels(&self, what: &str) -> Result<&Labels> {
        self.labels.as_deref().ok_or_else(|| {
            Error::invalid_input(format!("{what} needs a label column, but none was loaded"))
        })
    }

    /// The coordinates, or an `InvalidInput` error naming what needed them.
    pub fn require_coords(&self, what: &str) -> Result<&[[f64; 3]]> {
        self.coords.as_deref().map(|v| v.as_slice()).ok_or_else(|| {
            Error::invalid_input(format!(
                "{what} needs cell coordinates, but none were loaded"
            ))
        })
    }

    /// Builds the index from a corpus: the samples of its manifest, and from `obs.parquet`
    /// the coordinates (`x`, `y`, `z` when present, if `coordinates`) and `label_column` (any
    /// type; values are compared as strings) when given. With neither, obs is not read and the
    /// index takes memory per sample, not per cell.
    pub fn from_corpus(
        corpus: &Corpus,
        label_column: Option<&str>,
        coordinates: bool,
    ) -> Result<SampleIndex> {
        let samples = corpus
            .manifest()
            .samples
            .iter()
            .map(|s| SampleRange {
                sample_id: s.sample_id.clone(),
                first_cell: s.first_cell,
                n_cells: s.n_cells,
                spatial_dims: s.spatial_dims,
            })
            .collect::<Vec<_>>();
        let spatial = coordinates && samples.iter().any(|s| s.spatial_dims > 0);
        if !spatial && label_column.is_none() {
            return SampleIndex::new(samples);
        }
        let path = corpus
            .table_files("obs")
            .pop()
            .unwrap_or_else(|| corpus.table_path("obs"));
        let schema = corpus.table_schema("obs")?;
        let has = |c: &str| schema.column_with_name(c).is_some();
        let mut cols: Vec<&str> = vec!["cell"];
        if spatial {
            cols.extend(["x", "y", "z"].into_iter().filter(|c| has(c)));
        }
        if let Some(l) = label_column {
            if !has(l) {
                return Err(Error::corpus(&path, format!("obs has no column {l:?}")).with_object(l));
            }
            if !cols.contains(&l) {
                cols.push(l);
            }
        }
        let batches = corpus.read_table("obs", Some(&cols))?;
        Self::from_obs_batches(samples, &batches, spatial, label_column)
            .map_err(|e| e.with_path(&path))
    }

    /// Builds the index from obs record batches (rows in cell order, or with a `cell` column
    /// giving each row's cell id): coordinates from `x`, `y`, `z` when `with_coords`, labels
    /// from `label_column`.
    pub fn from_obs_batches(
        samples: Vec<SampleRange>,
        batches: &[RecordBatch],
        with_coords: bool,
        label_column: Option<&str>,
    ) -> Result<SampleIndex> {
        let mut idx = SampleIndex::new(samples)?;
        let n = idx.n_cells as usize;
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        if rows != n {
            return Err(Error::new(
                crate::ErrorKind::InvalidCorpus,
                format!("obs has {rows} rows but the samples hold {n} cells"),
            )
            .with_object("obs"));
        }
        let mut cell_of_row: Vec<u64> = Vec::with_capacity(n);
        for b in batches {
            match b.column_by_name("cell") {
                Some(c) => {
                    let c = arrow::compute::cast(c, &DataType::UInt64)?;
                    let c = c.as_primitive::<UInt64Type>();
                    cell_of_row.extend(c.iter().map(|v| v.unwrap_or(u64::MAX)));
                }
                None => {
                    let s = cell_of_row.len() as u64;
                    cell_of_row.extend(s..s + b.num_rows() as u64);
                }
            }
        }
        let mut seen = vec![false; n];
        for &c in &cell_of_row {
            if c as usize >= n || std::mem::replace(&mut seen[c as usize], true) {
                return Err(Error::new(
                    crate::ErrorKind::InvalidCorpus,
                    format!("obs column cell: id {c} out of range or repeated"),
                )
                .with_object("cell"));
            }
        }
        if with_coords {
            let mut coords = vec![[f64::NAN; 3]; n];
            let mut row = 0usize;
            for b in batches {
                for (a, name) in ["x", "y", "z"].iter().enumerate() {
                    if let Some(col) = b.column_by_name(name) {
                        let col = arrow::compute::cast(col, &DataType::Float64)?;
                        let col = col.as_primitive::<Float64Type>();
                        for (i, v) in col.iter().enumerate() {
                            coords[cell_of_row[row + i] as usize][a] = v.unwrap_or(f64::NAN);
                        }
                    }
                }
                row += b.num_rows();
            }
            idx = idx.with_coords(coords)?;
        }
        if let Some(lc) = label_column {
            let mut values: Vec<Option<String>> = vec![None; n];
            let mut row = 0usize;
            for b in batches {
                let col = b.column_by_name(lc).ok_or_else(|| {
                    Error::new(
                        crate::ErrorKind::InvalidCorpus,
                        format!("obs has no column {lc:?}"),
                    )
                    .with_object(lc)
                })?;
                let col = arrow::compute::cast(col, &DataType::Utf8)?;
                let col = col.as_string::<i32>();
                for i in 0..col.len() {
                    if col.is_valid(i) {
                        values[cell_of_row[row + i] as usize] = Some(col.value(i).to_string());
                    }
                }
                row += b.num_rows();
            }
            idx = idx.with_labels(Labels::from_strings(lc, values))?;
        }
        Ok(idx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{DictionaryArray, Float64Array, StringArray, UInt64Array};
    use arrow::datatypes::Int32Type;

    #[test]
    fn from_corpus_feeds_the_samplers() {
        use crate::corpus::testing::{random_rows, write_corpus_with, TestCorpusOptions};
        use crate::sample::{BlockConfig, Cohort, RegionConfig, Regions, Sampler, SpatialBlocks};
        let dir = tempfile::tempdir().unwrap();
        let n = 30usize;
        let rows = random_rows(n, 12, 0.3, 5);
        // Sample "a" (10 cells) is not spatial, sample "b" (20 cells) is on a 5 x 4 grid.
        let coords: Vec<Option<[f64; 2]>> = (0..n)
            .map(|i| (i >= 10).then(|| [((i - 10) % 5) as f64, ((i - 10) / 5) as f64]))
            .collect();
        let ct: DictionaryArray<Int32Type> = (0..n).map(|i| Some(["x", "y", "z"][i % 3])).collect();
        let opts = TestCorpusOptions {
            coords: Some(coords),
            obs_columns: vec![("cell_type".to_string(), Arc::new(ct) as _)],
            ..Default::default()
        };
        write_corpus_with(dir.path(), 12, &rows, &[("a", 10), ("b", 20)], &opts).unwrap();
        let corpus = Corpus::open(dir.path()).unwrap();
        let idx = SampleIndex::from_corpus(&corpus, Some("cell_type"), true).unwrap();
        assert_eq!(
            idx.samples
                .iter()
                .map(|s| s.spatial_dims)
                .collect::<Vec<_>>(),
            vec![0, 2]
        );
        let labels = idx.labels.as_ref().unwrap();
        assert_eq!(labels.names, vec!["x", "y", "z"]);
        assert_eq!(labels.codes[4], 1);
        let c = idx.coords.as_ref().unwrap();
        assert!(c[3][0].is_nan());
        assert_eq!(c[17][..2], [2.0, 1.0]);
        let blocks = SpatialBlocks::new(&idx, Cohort::all(30), BlockConfig::new(2.0, 0)).unwrap();
        // 5 x 4 grid in blocks of 2: 3 x 2 blocks.
        assert_eq!(blocks.len(), 6);
        assert_eq!(
            (0..6).map(|p| blocks.item(0, p).cells.len()).sum::<usize>(),
            20
        );
        let regions =
            Regions::from_obs_column(&idx, Cohort::all(30), RegionConfig::new(0)).unwrap();
        assert_eq!(regions.len(), 6); // 3 labels in each of 2 samples
        let e = SampleIndex::from_corpus(&corpus, Some("no_such_column"), true).unwrap_err();
        assert!(e.to_string().contains("no_such_column"), "{e}");

        // Without coordinates or labels the index is per sample: obs is not even opened.
        std::fs::remove_file(corpus.table_path("obs")).unwrap();
        let idx = SampleIndex::from_corpus(&corpus, None, false).unwrap();
        assert!(idx.coords.is_none() && idx.labels.is_none());
        assert_eq!(idx.n_cells, 30);
        assert!(SampleIndex::from_corpus(&corpus, None, true).is_err());
    }

    #[test]
    fn from_batches_reads_coords_and_labels() {
        let samples = vec![
            SampleRange {
                sample_id: "a".into(),
                first_cell: 0,
                n_cells: 2,
                spatial_dims: 0,
            },
            SampleRange {
                sample_id: "b".into(),
                first_cell: 2,
                n_cells: 2,
                spatial_dims: 2,
            },
        ];
        let labels: DictionaryArray<Int32Type> = vec![Some("T"), Some("B"), None, Some("T")]
            .into_iter()
            .collect();
        let b = RecordBatch::try_from_iter(vec![
            (
                "cell",
                Arc::new(UInt64Array::from(vec![0u64, 1, 2, 3])) as _,
            ),
            (
                "x",
                Arc::new(Float64Array::from(vec![None, None, Some(1.0), Some(2.0)])) as _,
            ),
            (
                "y",
                Arc::new(Float64Array::from(vec![None, None, Some(3.0), Some(4.0)])) as _,
            ),
            ("ct", Arc::new(labels) as _),
            (
                "s",
                Arc::new(StringArray::from(vec!["a", "a", "b", "b"])) as _,
            ),
        ])
        .unwrap();
        let idx = SampleIndex::from_obs_batches(
            samples.clone(),
            std::slice::from_ref(&b),
            true,
            Some("ct"),
        )
        .unwrap();
        let l = idx.labels.as_ref().unwrap();
        assert_eq!(l.names, vec!["B", "T"]);
        assert_eq!(l.codes, vec![1, 0, NO_LABEL, 1]);
        let c = idx.coords.as_ref().unwrap();
        assert!(c[0][0].is_nan());
        assert_eq!(c[3][0..2], [2.0, 4.0]);
        assert!(c[3][2].is_nan());
        let e = SampleIndex::from_obs_batches(samples, &[b], false, Some("nope")).unwrap_err();
        assert!(e.to_string().contains("nope"));
    }
}
