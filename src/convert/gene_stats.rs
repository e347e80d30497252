//! Per-gene statistics of a corpus, the `gene_stats` table: for each group of samples (the
//! `species` of the samples table, one group when the corpus has no such column) and each gene
//! with a non-zero in it, the cells expressing the gene, the sum and sum of squares of its
//! values, and the median of its non-zero values.
//!
//! Counts and sums add across appends. A median does not, so each row keeps a mergeable
//! sketch of the gene's non-zero values: a histogram over bins that hold every value with the
//! same sign, binary exponent and first [`SKETCH_BITS`] bits of mantissa (64 bins per
//! power of two). Two sketches merge exactly by adding their counts, and the reported median is
//! the *lower median* (the value of rank `(n - 1) / 2` from 0 among the `n` non-zero values)
//! truncated toward zero to those bits ([`truncate`]): exact for every value with at most 7
//! significant bits (every integer up to 128, every even one up to 256 ...), otherwise below
//! the true lower median by less than 1/64 of it (1.6 %). See `docs/FORMAT.md`.
//!
//! [`record`] runs at the end of a conversion or an append, on the finished staging directory:
//! it reads only the cells the operation added (an append merges them into the previous
//! corpus's table, without reading its parts), writes the table and lists it in the manifest.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int32Builder, ListBuilder, StringArray, UInt32Array,
    UInt64Array, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Float64Type, Int32Type, Schema, UInt32Type, UInt64Type};
use arrow::record_batch::RecordBatch;

use crate::corpus::{read_parquet, Corpus, Manifest, Values};
use crate::error::{Error, Result};

/// The table's name in the manifest's `tables` (one file, written again by every append).
pub const TABLE: &str = "gene_stats";

/// Mantissa bits a sketch bin keeps: 64 bins per power of two.
pub const SKETCH_BITS: u32 = 6;

/// The samples column that groups the statistics.
pub const GROUP_COLUMN: &str = "species";

const SHIFT: u32 = 52 - SKETCH_BITS;

/// The sketch bin of a non-zero value: increasing with the value (negative values get
/// negative codes), 0 is never used.
#[inline]
pub fn bin_code(v: f64) -> i32 {
    let code = (v.abs().to_bits() >> SHIFT) as i32 + 1;
    if v < 0.0 {
        -code
    } else {
        code
    }
}

/// The value a bin stands for: its values truncated toward zero to [`SKETCH_BITS`] bits of
/// mantissa.
#[inline]
pub fn bin_value(code: i32) -> f64 {
    let m = f64::from_bits(((code.unsigned_abs() - 1) as u64) << SHIFT);
    if code < 0 {
        -m
    } else {
        m
    }
}

/// `v` truncated toward zero to [`SKETCH_BITS`] bits of mantissa: what a sketch reports for a
/// median of `v`.
pub fn truncate(v: f64) -> f64 {
    bin_value(bin_code(v))
}

/// The statistics of one gene in one group; [`GeneStat::merge`] adds another's exactly.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GeneStat {
    /// Cells with a non-zero value of the gene.
    pub n_cells: u64,
    pub sum: f64,
    pub sum_sq: f64,
    /// (bin code, count), codes increasing, counts positive; the counts add up to `n_cells`.
    pub sketch: Vec<(i32, u64)>,
}

impl GeneStat {
    /// Adds `other`'s cells.
    pub fn merge(&mut self, other: &GeneStat) {
        self.n_cells += other.n_cells;
        self.sum += other.sum;
        self.sum_sq += other.sum_sq;
        if other.sketch.is_empty() {
            return;
        }
        let mut out = Vec::with_capacity(self.sketch.len() + other.sketch.len());
        let (mut a, mut b) = (
            self.sketch.iter().peekable(),
            other.sketch.iter().peekable(),
        );
        loop {
            match (a.peek(), b.peek()) {
                (Some(&&(ca, na)), Some(&&(cb, nb))) => {
                    if ca == cb {
                        out.push((ca, na + nb));
                        a.next();
                        b.next();
                    } else if ca < cb {
                        out.push((ca, na));
                        a.next();
                    } else {
                        out.push((cb, nb));
                        b.next();
                    }
                }
                (Some(&&x), None) => {
                    out.push(x);
                    a.next();
                }
                (None, Some(&&x)) => {
                    out.push(x);
                    b.next();
                }
                (None, None) => break,
            }
        }
        self.sketch = out;
    }

    /// The lower median of the non-zero values, truncated as [`truncate`] does; `None` when the
    /// gene has no non-zero.
    pub fn median(&self) -> Option<f64> {
        let total: u64 = self.sketch.iter().map(|&(_, n)| n).sum();
        if total == 0 {
            return None;
        }
        let rank = (total - 1) / 2;
        let mut seen = 0;
        for &(code, n) in &self.sketch {
            seen += n;
            if seen > rank {
                return Some(bin_value(code));
            }
        }
        unreachable!("the rank is below the total")
    }
}

/// One pass's accumulator of a gene: a dense histogram over the bins seen so far.
#[derive(Default)]
struct Acc {
    n: u64,
    sum: f64,
    sum_sq: f64,
    lo: i32,
    counts: Vec<u64>,
}

impl Acc {
    #[inline]
    fn add(&mut self, v: f64) {
        self.n += 1;
        self.sum += v;
        self.sum_sq += v * v;
        let code = bin_code(v);
        if self.counts.is_empty() {
            self.lo = code;
            self.counts.push(0);
        } else if code < self.lo {
            let grow = (self.lo - code) as usize;
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.lo = code;
        } else if (code - self.lo) as usize >= self.counts.len() {
            self.counts.resize((code - self.lo) as usize + 1, 0);
        }
        self.counts[(code - self.lo) as usize] += 1;
    }

    fn into_stat(self) -> GeneStat {
        let lo = self.lo;
        GeneStat {
            n_cells: self.n,
            sum: self.sum,
            sum_sq: self.sum_sq,
            sketch: self
                .counts
                .into_iter()
                .enumerate()
                .filter(|&(_, n)| n > 0)
                .map(|(i, n)| (lo + i as i32, n))
                .collect(),
        }
    }
}

/// The statistics of a corpus: per group (a species, or `None`), per gene id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GeneStats {
    pub groups: BTreeMap<Option<String>, HashMap<u32, GeneStat>>,
}

impl GeneStats {
    /// Reads the files of a `gene_stats` table.
    pub fn read_files(files: &[PathBuf]) -> Result<GeneStats> {
        let mut out = GeneStats::default();
        for f in files {
            out.merge(Self::read(f)?);
        }
        Ok(out)
    }

    /// Reads one file of a `gene_stats` table.
    pub fn read(path: &Path) -> Result<GeneStats> {
        let mut out = GeneStats::default();
        let bad = |what: &str| Error::corpus(path, format!("gene_stats: {what}"));
        for b in read_parquet(path, None)? {
            let col = |name: &str| {
                b.column_by_name(name)
                    .cloned()
                    .ok_or_else(|| bad(&format!("no column {name:?}")))
            };
            let species = arrow::compute::cast(&col(GROUP_COLUMN)?, &DataType::Utf8)
                .map_err(|_| bad("species is not text"))?;
            let species = species.as_string::<i32>();
            let gene = col("gene")?;
            let gene = gene
                .as_primitive_opt::<UInt32Type>()
                .ok_or_else(|| bad("gene is not uint32"))?;
            let n_cells = col("n_cells")?;
            let n_cells = n_cells
                .as_primitive_opt::<UInt64Type>()
                .ok_or_else(|| bad("n_cells is not uint64"))?;
            let sum = col("sum")?;
            let sum = sum
                .as_primitive_opt::<Float64Type>()
                .ok_or_else(|| bad("sum is not float64"))?;
            let sum_sq = col("sum_sq")?;
            let sum_sq = sum_sq
                .as_primitive_opt::<Float64Type>()
                .ok_or_else(|| bad("sum_sq is not float64"))?;
            let bins = col("sketch_bins")?;
            let bins = bins
                .as_list_opt::<i32>()
                .ok_or_else(|| bad("sketch_bins is not a list"))?;
            let counts = col("sketch_counts")?;
            let counts = counts
                .as_list_opt::<i32>()
                .ok_or_else(|| bad("sketch_counts is not a list"))?;
            for i in 0..b.num_rows() {
                let bi = bins.value(i);
                let ci = counts.value(i);
                let bi = bi
                    .as_primitive_opt::<Int32Type>()
                    .ok_or_else(|| bad("sketch_bins is not a list of int32"))?;
                let ci = ci
                    .as_primitive_opt::<UInt64Type>()
                    .ok_or_else(|| bad("sketch_counts is not a list of uint64"))?;
                if bi.len() != ci.len() {
                    return Err(bad(&format!(
                        "row {i}: sketch_bins and sketch_counts differ in length"
                    )));
                }
                let sketch: Vec<(i32, u64)> = bi
                    .values()
                    .iter()
                    .copied()
                    .zip(ci.values().iter().copied())
                    .collect();
                if sketch.windows(2).any(|w| w[0].0 >= w[1].0)
                    || sketch.iter().map(|s| s.1).sum::<u64>() != n_cells.value(i)
                {
                    return Err(bad(&format!(
                        "row {i}: the sketch is not increasing or does not add up to n_cells"
                    )));
                }
                let key = (!species.is_null(i)).then(|| species.value(i).to_string());
                out.groups.entry(key).or_default().insert(
                    gene.value(i),
                    GeneStat {
                        n_cells: n_cells.value(i),
                        sum: sum.value(i),
                        sum_sq: sum_sq.value(i),
                        sketch,
                    },
                );
            }
        }
        Ok(out)
    }

    /// The table: one row per (group, gene with a non-zero), by group then gene id.
    pub fn to_batch(&self) -> Result<RecordBatch> {
        let mut species: Vec<Option<&str>> = Vec::new();
        let (mut gene, mut n_cells, mut sum, mut sum_sq, mut median) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut bins = ListBuilder::new(Int32Builder::new()).with_field(Arc::new(Field::new(
            "item",
            DataType::Int32,
            false,
        )));
        let mut counts = ListBuilder::new(UInt64Builder::new()).with_field(Arc::new(Field::new(
            "item",
            DataType::UInt64,
            false,
        )));
        for (group, genes) in &self.groups {
            let mut ids: Vec<&u32> = genes.keys().collect();
            ids.sort_unstable();
            for g in ids {
                let s = &genes[g];
                if s.n_cells == 0 {
                    continue;
                }
                species.push(group.as_deref());
                gene.push(*g);
                n_cells.push(s.n_cells);
                sum.push(s.sum);
                sum_sq.push(s.sum_sq);
                median.push(s.median());
                for &(c, n) in &s.sketch {
                    bins.values().append_value(c);
                    counts.values().append_value(n);
                }
                bins.append(true);
                counts.append(true);
            }
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(species)),
            Arc::new(UInt32Array::from(gene)),
            Arc::new(UInt64Array::from(n_cells)),
            Arc::new(Float64Array::from(sum)),
            Arc::new(Float64Array::from(sum_sq)),
            Arc::new(Float64Array::from(median)),
            Arc::new(bins.finish()),
            Arc::new(counts.finish()),
        ];
        let fields: Vec<Field> = [
            (GROUP_COLUMN, true),
            ("gene", false),
            ("n_cells", false),
            ("sum", false),
            ("sum_sq", false),
            ("median_nonzero", true),
            ("sketch_bins", false),
            ("sketch_counts", false),
        ]
        .iter()
        .zip(&columns)
        .map(|(&(name, nullable), c)| Field::new(name, c.data_type().clone(), nullable))
        .collect();
        Ok(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns,
        )?)
    }

    /// Adds `other`'s cells.
    pub fn merge(&mut self, other: GeneStats) {
        for (group, genes) in other.groups {
            let mine = self.groups.entry(group).or_default();
            for (g, s) in genes {
                mine.entry(g).or_default().merge(&s);
            }
        }
    }

    /// The same statistics with gene `g` as gene `map[g]` (a merge's gene ids); genes
    /// outside `map` are a broken invariant of the caller's corpus and are dropped.
    pub fn remapped(self, map: &[u32]) -> GeneStats {
        let groups = self
            .groups
            .into_iter()
            .map(|(group, genes)| {
                let genes = genes
                    .into_iter()
                    .filter_map(|(g, s)| map.get(g as usize).map(|&m| (m, s)))
                    .collect();
                (group, genes)
            })
            .collect();
        GeneStats { groups }
    }

    /// Each gene's median of non-zero values over every group (the groups' sketches merged),
    /// NaN for a gene with no non-zero; `n_genes` entries.
    pub fn medians(&self, n_genes: usize) -> Vec<f64> {
        let mut merged: HashMap<u32, GeneStat> = HashMap::new();
        for genes in self.groups.values() {
            for (&g, s) in genes {
                merged.entry(g).or_default().merge(s);
            }
        }
        let mut out = vec![f64::NAN; n_genes];
        for (g, s) in merged {
            if let (Some(slot), Some(m)) = (out.get_mut(g as usize), s.median()) {
                *slot = m;
            }
        }
        out
    }
}

/// The group of each sample (by sample id): its `species` in the samples table, `None` when
/// the column is absent or null.
fn sample_groups(corpus: &Corpus) -> Result<HashMap<String, Option<String>>> {
    let mut out = HashMap::new();
    let samples = corpus.table_files("samples").pop().unwrap_or_default();
    let samples = samples.as_path();
    for b in corpus.read_table("samples", None)? {
        let ids = b
            .column_by_name("sample_id")
            .ok_or_else(|| Error::corpus(samples, "no column \"sample_id\""))?;
        let ids = arrow::compute::cast(ids, &DataType::Utf8)
            .map_err(|e| Error::corpus(samples, format!("sample_id is not text: {e}")))?;
        let ids = ids.as_string::<i32>();
        let species =
            match b.column_by_name(GROUP_COLUMN) {
                Some(c) => Some(arrow::compute::cast(c, &DataType::Utf8).map_err(|e| {
                    Error::corpus(samples, format!("{GROUP_COLUMN} is not text: {e}"))
                })?),
                None => None,
            };
        for i in 0..b.num_rows() {
            let group = species
                .as_ref()
                .map(|s| s.as_string::<i32>())
                .filter(|s| !s.is_null(i))
                .map(|s| s.value(i).to_string());
            out.insert(ids.value(i).to_string(), group);
        }
    }
    Ok(out)
}

/// The statistics of cells `from..` of `corpus`, read from its mapped parts.
pub fn compute(corpus: &Corpus, from: u64) -> Result<GeneStats> {
    let groups = sample_groups(corpus)?;
    let n_genes = corpus.n_genes() as usize;
    // Group index of each sample's cell range.
    let mut names: Vec<Option<String>> = Vec::new();
    let mut ranges: Vec<(u64, u64, usize)> = Vec::new();
    for s in &corpus.manifest().samples {
        let group = groups.get(&s.sample_id).cloned().flatten();
        let k = match names.iter().position(|n| *n == group) {
            Some(k) => k,
            None => {
                names.push(group);
                names.len() - 1
            }
        };
        ranges.push((s.first_cell, s.first_cell + s.n_cells, k));
    }
    ranges.sort_unstable();
    let mut accs: Vec<Vec<Acc>> = Vec::new();
    let group_of = |cell: u64| -> usize {
        let i = ranges.partition_point(|r| r.0 <= cell);
        match i.checked_sub(1).map(|i| ranges[i]) {
            Some((_, end, k)) if cell < end => k,
            // A cell outside every sample: the corpus checks make this impossible.
            _ => usize::MAX,
        }
    };
    for bi in 0..corpus.n_batches() {
        let cells = corpus.batch_cells(bi);
        if cells.end <= from {
            continue;
        }
        let b = corpus.batch(bi)?;
        let indices = b.indices();
        let values = b.values();
        for cell in cells.start.max(from)..cells.end {
            let k = group_of(cell);
            if k == usize::MAX {
                return Err(Error::corpus(
                    corpus.root(),
                    format!("cell {cell} belongs to no sample of the manifest"),
                ));
            }
            if accs.len() <= k {
                accs.resize_with(names.len(), Vec::new);
            }
            let acc = &mut accs[k];
            if acc.is_empty() {
                acc.resize_with(n_genes, Acc::default);
            }
            let r = b.row_range((cell - cells.start) as usize);
            for j in r {
                let v = match values {
                    Values::U16(s) => s[j] as f64,
                    Values::U32(s) => s[j] as f64,
                    Values::F32(s) => s[j] as f64,
                    Values::F64(s) => s[j],
                };
                if v == 0.0 || v.is_nan() {
                    continue;
                }
                let g = indices.get(j) as usize;
                if let Some(a) = acc.get_mut(g) {
                    a.add(v);
                }
            }
        }
    }
    let mut out = GeneStats::default();
    for (k, acc) in accs.into_iter().enumerate() {
        let genes: HashMap<u32, GeneStat> = acc
            .into_iter()
            .enumerate()
            .filter(|(_, a)| a.n > 0)
            .map(|(g, a)| (g as u32, a.into_stat()))
            .collect();
        if !genes.is_empty() {
            out.groups.insert(names[k].clone(), genes);
        }
    }
    Ok(out)
}

/// Writes the `gene_stats` table into the finished corpus directory `dir` (a conversion's or
/// an append's staging directory, its manifest written) and lists it in the manifest.
///
/// `previous`: for an append, the corpus being appended to. Its table is merged with the
/// statistics of the cells the append added, and its parts are not read; a previous corpus
/// without the table (made before it existed) gets one computed over every cell.
pub fn record(dir: &Path, previous: Option<&Path>) -> Result<()> {
    let old = previous
        .map(|p| Manifest::read(p).map(|m| (p, m)))
        .transpose()?;
    let old_files: &[crate::corpus::TableFile] = old
        .as_ref()
        .and_then(|(_, m)| m.tables.get(TABLE))
        .map_or(&[], Vec::as_slice);
    let (mut stats, from, first_part) = match &old {
        Some((p, m)) if !old_files.is_empty() => {
            let files: Vec<PathBuf> = old_files.iter().map(|f| p.join(&f.path)).collect();
            (
                GeneStats::read_files(&files)?,
                m.n_cells,
                m.matrix.parts.len(),
            )
        }
        _ => (GeneStats::default(), 0, 0),
    };
    // Only the new parts are read (an append lists them after the old ones), so the old ones
    // need not even be on this disk.
    let corpus = Corpus::open_from_part(dir, first_part)?;
    stats.merge(compute(&corpus, from)?);
    drop(corpus);
    // A number above the previous file's, so the new file never takes its name.
    write(
        dir,
        &stats,
        super::tables::next_table_file_number(old_files, TABLE),
    )
}

/// Writes `stats` as file `number` of the table into the finished corpus directory `dir` and
/// lists it in the manifest, in place of any earlier file.
pub(crate) fn write(dir: &Path, stats: &GeneStats, number: usize) -> Result<()> {
    let mut manifest = Manifest::read(dir)?;
    let rel = super::tables::table_file_path(TABLE, number);
    let file = super::tables::write_batches_file(dir, &rel, &[stats.to_batch()?])?;
    let entry = super::tables::file_entries(dir, std::slice::from_ref(&rel))?;
    // With the other tables, before the parts.
    manifest
        .files
        .retain(|f| !f.path.starts_with(&format!("{TABLE}/")));
    let at = manifest
        .files
        .iter()
        .position(|f| f.path.starts_with("matrix/"))
        .unwrap_or(manifest.files.len());
    manifest.files.splice(at..at, entry);
    manifest.tables.insert(TABLE.to_string(), vec![file]);
    manifest.write(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::write_parquet;

    #[test]
    fn bins_keep_order_and_seven_significant_bits() {
        let mut vals = vec![
            -1e9, -300.0, -2.5, -1e-300, 1e-300, 0.01, 0.5, 1.0, 1.5, 2.0, 127.0, 128.0, 129.0,
            255.0, 1e12,
        ];
        vals.sort_by(f64::total_cmp);
        for w in vals.windows(2) {
            assert!(bin_code(w[0]) <= bin_code(w[1]), "{w:?}");
        }
        for i in 1..=128 {
            assert_eq!(truncate(i as f64), i as f64);
        }
        assert_eq!(truncate(129.0), 128.0);
        assert_eq!(truncate(-2.5), -2.5);
        for v in [0.0123, 3.3, 1e7 + 13.0, 129.0, 255.0] {
            let t = truncate(v);
            assert!(t <= v && (v - t) / v < 1.0 / 64.0, "{v} -> {t}");
        }
        assert_ne!(bin_code(f64::MIN_POSITIVE / 4.0), 0);
    }

    fn stat_of(values: &[f64]) -> GeneStat {
        let mut a = Acc::default();
        for &v in values {
            a.add(v);
        }
        a.into_stat()
    }

    #[test]
    fn merged_sketches_give_the_median_of_the_union() {
        let a = [5.0, 1.0, 3.0, 200.0, 7.0];
        let b = [2.0, 2.0, 9.0, 0.25];
        let mut s = stat_of(&a);
        s.merge(&stat_of(&b));
        let mut all: Vec<f64> = a.iter().chain(&b).copied().collect();
        all.sort_by(f64::total_cmp);
        assert_eq!(s.median(), Some(truncate(all[(all.len() - 1) / 2])));
        assert_eq!(s, stat_of(&all));
        assert_eq!(s.n_cells, 9);
        assert_eq!(s.sum, all.iter().sum::<f64>());
        assert_eq!(GeneStat::default().median(), None);
        // Even counts: the lower median.
        assert_eq!(stat_of(&[1.0, 2.0, 3.0, 4.0]).median(), Some(2.0));
    }

    #[test]
    fn the_table_round_trips() {
        let mut stats = GeneStats::default();
        stats
            .groups
            .entry(Some("human".into()))
            .or_default()
            .insert(3, stat_of(&[1.0, 4.0, 4.0]));
        stats
            .groups
            .entry(None)
            .or_default()
            .insert(0, stat_of(&[0.5]));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gene_stats.parquet");
        write_parquet(&path, &[stats.to_batch().unwrap()]).unwrap();
        let back = GeneStats::read(&path).unwrap();
        assert_eq!(back, stats);
        let m = back.medians(5);
        assert_eq!((m[0], m[3]), (0.5, 4.0));
        assert!(m[1].is_nan());
    }
}
