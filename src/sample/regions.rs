//! Regions: groups defined by a regions manifest or by an obs column.

use std::collections::HashMap;
use std::path::Path;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type, UInt64Type};
use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};

use super::group::{epoch_order_at, SpatialItem};
use super::rng::hash_words;
use super::{Bounds, Cohort, Group, GroupKey, SampleIndex, Sampler, NO_LABEL};

const TAG_REGION_ORDER: u64 = 0x7265_6769_6F6E; // "region"
const TAG_REGION_DOWN: u64 = 0x646F_776E; // "down"

/// The cells of one region: listed ids, or every cell of the sample inside a box.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegionMembers {
    /// Global cell ids (they must belong to the region's sample).
    Cells(Vec<u64>),
    /// Every cell of the sample with finite coordinates inside the closed box.
    Bbox(Bounds),
}

/// One region definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionSpec {
    /// The sample the region belongs to.
    pub sample_id: String,
    /// The region's id, unique within the sample.
    pub region_id: String,
    /// Its cells.
    pub members: RegionMembers,
}

/// Settings of [`Regions`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionConfig {
    /// Seed of the stream.
    pub seed: u64,
    /// Regions with fewer cohort cells than this are left out (at least 1).
    pub min_cells: usize,
    /// Regions with more cells are downsampled to this many, seeded by (seed, epoch, region).
    pub max_cells: Option<usize>,
    /// Attach the cells' coordinates (spatial samples, when the index has coordinates).
    pub with_coords: bool,
    /// Also attach coordinates normalised to the region's bounds.
    pub normalize: bool,
    /// Only these regions, as `(sample_id, region_id)` pairs, for example the rows of
    /// `SELECT sample_id, region_id FROM regions WHERE ...`; `None`: every region. A selected
    /// region still needs `min_cells` cohort cells to be kept. Set with [`RegionConfig::only`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only: Option<Vec<(String, String)>>,
}

impl RegionConfig {
    /// All regions with at least one cell, no downsampling, coordinates attached.
    pub fn new(seed: u64) -> RegionConfig {
        RegionConfig {
            seed,
            min_cells: 1,
            max_cells: None,
            with_coords: true,
            normalize: false,
            only: None,
        }
    }

    /// Restricts the sampler to the regions `(sample_id, region_id)` (duplicates are ignored).
    ///
    /// ```
    /// use cellarrow::sample::RegionConfig;
    /// let cfg = RegionConfig::new(0).only([("s1", "tumour"), ("s2", "stroma")]);
    /// assert_eq!(cfg.only.as_ref().unwrap().len(), 2);
    /// ```
    pub fn only<S: Into<String>, R: Into<String>>(
        mut self,
        regions: impl IntoIterator<Item = (S, R)>,
    ) -> Self {
        self.only = Some(
            regions
                .into_iter()
                .map(|(s, r)| (s.into(), r.into()))
                .collect(),
        );
        self
    }
}

/// The regions of [`RegionConfig::only`], by sample index, each marked once it is defined.
struct Selection {
    wanted: HashMap<(u32, String), bool>,
}

impl Selection {
    /// `None` without a selection. Errors on a sample id that is not in `index`.
    fn new(index: &SampleIndex, cfg: &RegionConfig) -> Result<Option<Selection>> {
        let Some(only) = &cfg.only else {
            return Ok(None);
        };
        let by_id: HashMap<&str, u32> = index
            .samples
            .iter()
            .enumerate()
            .map(|(i, s)| (s.sample_id.as_str(), i as u32))
            .collect();
        let mut wanted = HashMap::new();
        for (sid, rid) in only {
            let si = *by_id.get(sid.as_str()).ok_or_else(|| {
                Error::invalid_input(format!(
                    "region selection: sample {sid:?} (region {rid:?}) is not in the corpus"
                ))
            })?;
            wanted.insert((si, rid.clone()), false);
        }
        Ok(Some(Selection { wanted }))
    }
    /// Whether the region is selected; marks it defined.
    fn take(&mut self, sample: u32, region_id: &str) -> bool {
        match self.wanted.get_mut(&(sample, region_id.to_string())) {
            Some(defined) => {
                *defined = true;
                true
            }
            None => false,
        }
    }
    /// Whether the sample has a selected region.
    fn has_sample(&self, sample: u32) -> bool {
        self.wanted.keys().any(|(s, _)| *s == sample)
    }
    /// Errors when a selected region was never defined.
    fn check_defined(&self, index: &SampleIndex, source: &str) -> Result<()> {
        let mut missing: Vec<(u32, &str)> = self
            .wanted
            .iter()
            .filter(|(_, &defined)| !defined)
            .map(|((s, r), _)| (*s, r.as_str()))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        missing.sort_unstable();
        let n = missing.len();
        let list: Vec<String> = missing
            .iter()
            .take(5)
            .map(|(s, r)| {
                format!(
                    "{:?} of sample {:?}",
                    r, index.samples[*s as usize].sample_id
                )
            })
            .collect();
        Err(Error::invalid_input(format!(
            "region selection: {n} selected region(s) not defined by {source}: {}{}",
            list.join(", "),
            if n > 5 { ", ..." } else { "" }
        )))
    }
}

#[derive(Debug, Clone)]
struct RegionInfo {
    sample: u32,
    region_id: String,
    bounds: Option<Bounds>,
}

/// Regions as groups; items are [`Group`]s with `key = GroupKey::Region(i)`.
///
/// An epoch visits every kept region once, in a fresh order (a keyed [`Permutation`] of the
/// regions per epoch). A region's cells are its cohort cells in id order (cells outside the
/// cohort are dropped; regions left with fewer than `min_cells` are not kept), downsampled to
/// `max_cells` when set. Groups of spatial samples carry their bounds: the box of a box
/// region, else the bounding box of its cells.
///
/// ```
/// use cellarrow::sample::*;
/// let idx = SampleIndex::new(vec![SampleRange { sample_id: "a".into(), first_cell: 0, n_cells: 6, spatial_dims: 0 }])
///     .unwrap()
///     .with_labels(Labels::from_strings("niche", vec![Some("x"), Some("y"), Some("x"), None, Some("y"), Some("y")]))
///     .unwrap();
/// let r = Regions::from_obs_column(&idx, Cohort::all(6), RegionConfig::new(0)).unwrap();
/// assert_eq!(r.len(), 2);
/// let mut sizes: Vec<usize> = (0..2).map(|p| r.item(0, p).cells.len()).collect();
/// sizes.sort();
/// assert_eq!(sizes, vec![2, 3]);
/// ```
#[derive(Debug, Clone)]
pub struct Regions {
    regions: Vec<RegionInfo>,
    offsets: Vec<u64>,
    cells: Vec<u64>,
    dims: Vec<u8>,
    coords: Option<std::sync::Arc<Vec<[f64; 3]>>>,
    cfg: RegionConfig,
}

impl Regions {
    /// Regions from explicit definitions. Errors: unknown sample id, a listed cell outside its
    /// sample, a duplicated (sample, region) id, a box region without coordinates in `index`,
    /// `min_cells == 0` or `max_cells == Some(0)`; with [`RegionConfig::only`], a selected
    /// sample that is not in `index` or a selected region that `specs` does not define.
    pub fn from_specs(
        index: &SampleIndex,
        cohort: Cohort,
        specs: Vec<RegionSpec>,
        cfg: RegionConfig,
    ) -> Result<Regions> {
        check_cfg(&cfg)?;
        let by_id: HashMap<&str, usize> = index
            .samples
            .iter()
            .enumerate()
            .map(|(i, s)| (s.sample_id.as_str(), i))
            .collect();
        let mut seen = std::collections::HashSet::new();
        let mut selection = Selection::new(index, &cfg)?;
        let mut out = Builder::new(index, &cfg);
        for spec in specs {
            let si = *by_id.get(spec.sample_id.as_str()).ok_or_else(|| {
                Error::invalid_input(format!(
                    "region {:?}: unknown sample {:?}",
                    spec.region_id, spec.sample_id
                ))
            })?;
            if !seen.insert((si, spec.region_id.clone())) {
                return Err(Error::invalid_input(format!(
                    "region {:?} of sample {:?} defined twice",
                    spec.region_id, spec.sample_id
                )));
            }
            if let Some(sel) = &mut selection {
                if !sel.take(si as u32, &spec.region_id) {
                    continue;
                }
            }
            let s = &index.samples[si];
            let (lo, hi) = (s.first_cell, s.first_cell + s.n_cells);
            let (mut cells, bounds) = match spec.members {
                RegionMembers::Cells(mut ids) => {
                    if let Some(bad) = ids.iter().find(|&&c| c < lo || c >= hi) {
                        return Err(Error::invalid_input(format!(
                            "region {:?}: cell {bad} is not in sample {:?} (cells {lo}..{hi})",
                            spec.region_id, spec.sample_id
                        )));
                    }
                    ids.sort_unstable();
                    ids.dedup();
                    ids.retain(|&c| cohort.contains(c));
                    (ids, None)
                }
                RegionMembers::Bbox(b) => {
                    let coords = index.require_coords("a region given by a bounding box")?;
                    let r = cohort.range(lo, hi);
                    let ids: Vec<u64> = r
                        .map(|p| cohort.at(p))
                        .filter(|&c| b.contains_closed(&coords[c as usize]))
                        .collect();
                    (ids, Some(b))
                }
            };
            cells.shrink_to_fit();
            out.push(si as u32, spec.region_id, cells, bounds);
        }
        if let Some(sel) = &selection {
            sel.check_defined(index, "the region definitions")?;
        }
        Ok(out.finish())
    }

    /// One region per distinct value of the index's label column within each sample (cells
    /// with a null value belong to no region). Region ids are the values, as text: the
    /// `region_id` of the SQL `regions` table derived from the same column.
    ///
    /// With [`RegionConfig::only`], errors (`InvalidInput`) on a selected sample that is not
    /// in `index`, or a selected region that no cell of its sample has.
    pub fn from_obs_column(
        index: &SampleIndex,
        cohort: Cohort,
        cfg: RegionConfig,
    ) -> Result<Regions> {
        check_cfg(&cfg)?;
        let labels = index.require_labels("regions from an obs column")?;
        let mut selection = Selection::new(index, &cfg)?;
        let mut out = Builder::new(index, &cfg);
        let n_labels = labels.names.len();
        for (si, s) in index.samples.iter().enumerate() {
            let mut keep: Option<Vec<bool>> = None;
            if let Some(sel) = &mut selection {
                if !sel.has_sample(si as u32) {
                    continue;
                }
                // Selected regions defined by any cell of the sample, in the cohort or not.
                let mut present = vec![false; n_labels];
                let all = s.first_cell as usize..(s.first_cell + s.n_cells) as usize;
                for &code in &labels.codes[all] {
                    if code != NO_LABEL {
                        present[code as usize] = true;
                    }
                }
                keep = Some(
                    (0..n_labels)
                        .map(|l| present[l] && sel.take(si as u32, &labels.names[l]))
                        .collect(),
                );
            }
            let r = cohort.range(s.first_cell, s.first_cell + s.n_cells);
            let mut buckets: Vec<Vec<u64>> = vec![Vec::new(); n_labels];
            for p in r {
                let c = cohort.at(p);
                let code = labels.codes[c as usize];
                if code != NO_LABEL {
                    buckets[code as usize].push(c);
                }
            }
            for (l, cells) in buckets.into_iter().enumerate() {
                if !cells.is_empty() && keep.as_ref().is_none_or(|k| k[l]) {
                    out.push(si as u32, labels.names[l].clone(), cells, None);
                }
            }
        }
        if let Some(sel) = &selection {
            sel.check_defined(index, &format!("obs column {:?}", labels.column))?;
        }
        Ok(out.finish())
    }

    /// Regions from a regions manifest file (see [`Regions::read_manifest`]).
    pub fn from_manifest(
        index: &SampleIndex,
        cohort: Cohort,
        path: &Path,
        cfg: RegionConfig,
    ) -> Result<Regions> {
        let specs = Self::read_manifest(path)?;
        Self::from_specs(index, cohort, specs, cfg).map_err(|e| e.with_path(path))
    }

    /// Reads a regions manifest: Parquet, or CSV when the name ends in `.csv`. Columns:
    /// `sample_id`, `region_id` (any type, compared as text), then either `cell` (global cell
    /// id; one row per cell of a region) or the box `x_min`, `y_min`, `x_max`, `y_max` (plus
    /// `z_min`, `z_max` for 3-D; one row per region). A row whose `cell` is empty uses the box
    /// columns. Regions keep the order of their first row.
    pub fn read_manifest(path: &Path) -> Result<Vec<RegionSpec>> {
        let rows = if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
        {
            read_csv_rows(path)?
        } else {
            read_parquet_rows(path)?
        };
        let mut order: Vec<(String, String)> = Vec::new();
        let mut specs: HashMap<(String, String), RegionMembers> = HashMap::new();
        for (i, row) in rows.into_iter().enumerate() {
            let key = (row.sample_id.clone(), row.region_id.clone());
            let members = match (row.cell, row.bbox) {
                (Some(c), _) => RegionMembers::Cells(vec![c]),
                (None, Some(b)) => RegionMembers::Bbox(b),
                (None, None) => {
                    return Err(Error::invalid_input(format!(
                        "row {}: region {:?} has neither a cell nor a complete box",
                        i + 1,
                        row.region_id
                    ))
                    .with_path(path))
                }
            };
            match (specs.get_mut(&key), members) {
                (None, m) => {
                    order.push(key.clone());
                    specs.insert(key, m);
                }
                (Some(RegionMembers::Cells(v)), RegionMembers::Cells(c)) => v.extend(c),
                (Some(_), _) => {
                    return Err(Error::invalid_input(format!(
                        "row {}: region {:?} of sample {:?} mixes cells and boxes or has two boxes",
                        i + 1,
                        key.1,
                        key.0
                    ))
                    .with_path(path))
                }
            }
        }
        Ok(order
            .into_iter()
            .map(|k| {
                let members = specs.remove(&k).expect("every ordered key has a spec");
                RegionSpec {
                    sample_id: k.0,
                    region_id: k.1,
                    members,
                }
            })
            .collect())
    }

    /// Number of regions kept.
    pub fn len(&self) -> u64 {
        self.regions.len() as u64
    }
    /// True when no region was kept.
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }
    /// `(sample index, region id)` of region `i` (the `i` of `GroupKey::Region(i)`).
    pub fn region(&self, i: u64) -> (u32, &str) {
        let r = &self.regions[i as usize];
        (r.sample, &r.region_id)
    }
    /// All cells of region `i` in the cohort (before downsampling).
    pub fn region_cells(&self, i: u64) -> &[u64] {
        &self.cells[self.offsets[i as usize] as usize..self.offsets[i as usize + 1] as usize]
    }
}

fn check_cfg(cfg: &RegionConfig) -> Result<()> {
    if cfg.min_cells == 0 {
        return Err(Error::invalid_input("min_cells must be at least 1"));
    }
    if cfg.max_cells == Some(0) {
        return Err(Error::invalid_input("max_cells must be at least 1"));
    }
    Ok(())
}

struct Builder<'a> {
    index: &'a SampleIndex,
    cfg: &'a RegionConfig,
    regions: Vec<RegionInfo>,
    offsets: Vec<u64>,
    cells: Vec<u64>,
    dims: Vec<u8>,
}

impl<'a> Builder<'a> {
    fn new(index: &'a SampleIndex, cfg: &'a RegionConfig) -> Self {
        Builder {
            index,
            cfg,
            regions: vec![],
            offsets: vec![0],
            cells: vec![],
            dims: vec![],
        }
    }
    fn push(&mut self, sample: u32, region_id: String, cells: Vec<u64>, bounds: Option<Bounds>) {
        if cells.len() < self.cfg.min_cells {
            return;
        }
        let dims = self.index.samples[sample as usize].spatial_dims;
        let bounds = match (bounds, &self.index.coords) {
            (Some(b), _) => Some(b),
            (None, Some(coords)) if dims > 0 => cell_bounds(&cells, coords, dims),
            _ => None,
        };
        self.cells.extend_from_slice(&cells);
        self.offsets.push(self.cells.len() as u64);
        self.dims.push(dims);
        self.regions.push(RegionInfo {
            sample,
            region_id,
            bounds,
        });
    }
    fn finish(self) -> Regions {
        let coords = if self.cfg.with_coords {
            self.index.coords.clone()
        } else {
            None
        };
        Regions {
            regions: self.regions,
            offsets: self.offsets,
            cells: self.cells,
            dims: self.dims,
            coords,
            cfg: self.cfg.clone(),
        }
    }
}

fn cell_bounds(cells: &[u64], coords: &[[f64; 3]], dims: u8) -> Option<Bounds> {
    let mut min = [f64::INFINITY; 3];
    let mut max = [f64::NEG_INFINITY; 3];
    let d = dims as usize;
    for &c in cells {
        let p = &coords[c as usize];
        if p[..d].iter().all(|v| v.is_finite()) {
            for a in 0..d {
                min[a] = min[a].min(p[a]);
                max[a] = max[a].max(p[a]);
            }
        }
    }
    if !min[0].is_finite() {
        return None;
    }
    for a in d..3 {
        min[a] = 0.0;
        max[a] = 0.0;
    }
    Some(Bounds { dims, min, max })
}

impl Sampler for Regions {
    type Item = Group;

    fn epoch_len(&self, _epoch: u64) -> u64 {
        self.len()
    }

    fn item(&self, epoch: u64, pos: u64) -> Group {
        let r = epoch_order_at(self.len(), self.cfg.seed, epoch, TAG_REGION_ORDER, pos);
        let info = &self.regions[r as usize];
        let dims = self.dims[r as usize];
        SpatialItem {
            cells: self.region_cells(r),
            sample: info.sample,
            key: GroupKey::Region(r),
            bounds: info.bounds,
            coords: self
                .coords
                .as_deref()
                .filter(|_| dims > 0)
                .map(|c| (&c[..], dims)),
        }
        .group(
            self.cfg.max_cells,
            hash_words(&[self.cfg.seed, epoch, r, TAG_REGION_DOWN]),
            self.cfg.normalize,
        )
    }
}

struct Row {
    sample_id: String,
    region_id: String,
    cell: Option<u64>,
    bbox: Option<Bounds>,
}

fn make_bbox(v: [Option<f64>; 6]) -> Option<Bounds> {
    match v {
        [Some(x0), Some(y0), Some(x1), Some(y1), Some(z0), Some(z1)] => {
            Some(Bounds::new3([x0, y0, z0], [x1, y1, z1]))
        }
        [Some(x0), Some(y0), Some(x1), Some(y1), None, None] => {
            Some(Bounds::new2([x0, y0], [x1, y1]))
        }
        _ => None,
    }
}

const BOX_COLS: [&str; 6] = ["x_min", "y_min", "x_max", "y_max", "z_min", "z_max"];

fn read_csv_rows(path: &Path) -> Result<Vec<Row>> {
    let mut rdr = csv::Reader::from_path(path)
        .map_err(|e| Error::invalid_input(e.to_string()).with_path(path))?;
    let headers = rdr
        .headers()
        .map_err(|e| Error::invalid_input(e.to_string()).with_path(path))?
        .clone();
    let col = |name: &str| headers.iter().position(|h| h.trim() == name);
    let need = |name: &str| {
        col(name)
            .ok_or_else(|| Error::invalid_input(format!("missing column {name:?}")).with_path(path))
    };
    let (sc, rc) = (need("sample_id")?, need("region_id")?);
    let cc = col("cell");
    let bc: Vec<Option<usize>> = BOX_COLS.iter().map(|c| col(c)).collect();
    if cc.is_none() && bc[..4].iter().any(|c| c.is_none()) {
        return Err(Error::invalid_input(
            "needs a cell column or the x_min, y_min, x_max, y_max columns",
        )
        .with_path(path));
    }
    let mut rows = Vec::new();
    for (i, rec) in rdr.records().enumerate() {
        let rec = rec.map_err(|e| Error::invalid_input(e.to_string()).with_path(path))?;
        let field = |c: Option<usize>| {
            c.and_then(|c| rec.get(c))
                .map(str::trim)
                .filter(|s| !s.is_empty())
        };
        let line = i + 2;
        let cell = field(cc)
            .map(|s| {
                s.parse::<u64>().map_err(|_| {
                    Error::invalid_input(format!("line {line}: cell {s:?} is not a cell id"))
                        .with_path(path)
                })
            })
            .transpose()?;
        let mut b = [None; 6];
        for (a, c) in bc.iter().enumerate() {
            b[a] = field(*c)
                .map(|s| {
                    s.parse::<f64>().map_err(|_| {
                        Error::invalid_input(format!(
                            "line {line}: {} {s:?} is not a number",
                            BOX_COLS[a]
                        ))
                        .with_path(path)
                    })
                })
                .transpose()?;
        }
        rows.push(Row {
            sample_id: field(Some(sc)).unwrap_or_default().to_string(),
            region_id: field(Some(rc)).unwrap_or_default().to_string(),
            cell,
            bbox: make_bbox(b),
        });
    }
    Ok(rows)
}

fn read_parquet_rows(path: &Path) -> Result<Vec<Row>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, "opening", e))?;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .at(path)?
        .build()
        .at(path)?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.at(path)?;
        let text = |name: &str| -> Result<arrow::array::ArrayRef> {
            let c = batch.column_by_name(name).ok_or_else(|| {
                Error::invalid_input(format!("missing column {name:?}")).with_path(path)
            })?;
            arrow::compute::cast(c, &DataType::Utf8).at_object(path, name)
        };
        let (s, r) = (text("sample_id")?, text("region_id")?);
        let (s, r) = (s.as_string::<i32>(), r.as_string::<i32>());
        let cell = match batch.column_by_name("cell") {
            Some(c) => Some(arrow::compute::cast(c, &DataType::UInt64).at_object(path, "cell")?),
            None => None,
        };
        let mut boxes = Vec::new();
        for name in BOX_COLS {
            boxes.push(match batch.column_by_name(name) {
                Some(c) => Some(arrow::compute::cast(c, &DataType::Float64).at_object(path, name)?),
                None => None,
            });
        }
        if cell.is_none() && boxes[..4].iter().any(|c| c.is_none()) {
            return Err(Error::invalid_input(
                "needs a cell column or the x_min, y_min, x_max, y_max columns",
            )
            .with_path(path));
        }
        for i in 0..batch.num_rows() {
            let cell = cell.as_ref().and_then(|c| {
                let c = c.as_primitive::<UInt64Type>();
                c.is_valid(i).then(|| c.value(i))
            });
            let mut b = [None; 6];
            for (a, col) in boxes.iter().enumerate() {
                b[a] = col.as_ref().and_then(|c| {
                    let c = c.as_primitive::<Float64Type>();
                    c.is_valid(i).then(|| c.value(i))
                });
            }
            rows.push(Row {
                sample_id: if s.is_valid(i) {
                    s.value(i).to_string()
                } else {
                    String::new()
                },
                region_id: if r.is_valid(i) {
                    r.value(i).to_string()
                } else {
                    String::new()
                },
                cell,
                bbox: make_bbox(b),
            });
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{Labels, SampleRange};

    fn spatial_index() -> SampleIndex {
        let coords: Vec<[f64; 3]> = (0..20)
            .map(|i| [(i % 5) as f64, (i / 5) as f64, f64::NAN])
            .collect();
        SampleIndex::new(vec![
            SampleRange {
                sample_id: "s0".into(),
                first_cell: 0,
                n_cells: 10,
                spatial_dims: 2,
            },
            SampleRange {
                sample_id: "s1".into(),
                first_cell: 10,
                n_cells: 10,
                spatial_dims: 2,
            },
        ])
        .unwrap()
        .with_coords(coords)
        .unwrap()
    }

    #[test]
    fn csv_manifest_cells_and_boxes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("regions.csv");
        std::fs::write(
            &p,
            "sample_id,region_id,cell,x_min,y_min,x_max,y_max\n\
             s0,r1,0,,,,\ns0,r1,3,,,,\ns1,box,,0,0,1,2\ns0,empty,,50,50,60,60\n",
        )
        .unwrap();
        let idx = spatial_index();
        let mut cfg = RegionConfig::new(1);
        cfg.normalize = true;
        let r = Regions::from_manifest(&idx, Cohort::all(20), &p, cfg).unwrap();
        assert_eq!(r.len(), 2); // "empty" has no cell
        assert_eq!(r.region_cells(0), &[0, 3]);
        // s1 cells 10..20 at x = i % 5, y = i / 5 (so y in 2..4): box x<=1, y<=2 -> cells 10, 11.
        assert_eq!(r.region_cells(1), &[10, 11]);
        let g = (0..2)
            .map(|p| r.item(0, p))
            .find(|g| g.key == GroupKey::Region(1))
            .unwrap();
        assert_eq!(g.coords.as_deref(), Some(&[0.0, 2.0, 1.0, 2.0][..]));
        assert_eq!(g.normalized.as_deref(), Some(&[0.0, 1.0, 1.0, 1.0][..]));
    }

    #[test]
    fn manifest_errors_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.csv");
        std::fs::write(&p, "sample_id,region_id,cell\ns0,a,15\n").unwrap();
        let e = Regions::from_manifest(&spatial_index(), Cohort::all(20), &p, RegionConfig::new(0))
            .unwrap_err();
        assert!(e.to_string().contains("cell 15 is not in sample"), "{e}");
        std::fs::write(&p, "sample_id,region_id,cell\nzz,a,1\n").unwrap();
        let e = Regions::from_manifest(&spatial_index(), Cohort::all(20), &p, RegionConfig::new(0))
            .unwrap_err();
        assert!(e.to_string().contains("unknown sample"), "{e}");
        assert!(e.to_string().contains("r.csv"), "{e}");
    }

    #[test]
    fn only_serves_the_selected_regions() {
        let idx = spatial_index()
            .with_labels(Labels::from_strings(
                "niche",
                (0..20)
                    .map(|i| [Some("a"), Some("b"), None, Some("c")][i % 4])
                    .collect(),
            ))
            .unwrap();
        let cohort = Cohort::from_cells((0..20).filter(|c| c % 7 != 0).collect());
        let cfg = RegionConfig::new(3).only([("s0", "a"), ("s1", "c"), ("s1", "a")]);
        let r = Regions::from_obs_column(&idx, cohort.clone(), cfg).unwrap();
        let mut got: Vec<(u32, String, Vec<u64>)> = (0..r.len())
            .map(|i| {
                let (s, id) = r.region(i);
                (s, id.to_string(), r.region_cells(i).to_vec())
            })
            .collect();
        got.sort();
        // s0 = cells 0..10, s1 = cells 10..20; "a" at i % 4 == 0, "c" at i % 4 == 3; no 0, 7, 14.
        assert_eq!(
            got,
            [
                (0, "a".to_string(), vec![4, 8]),
                (1, "a".to_string(), vec![12, 16]),
                (1, "c".to_string(), vec![11, 15, 19]),
            ]
        );
        // A region its sample does not have, and an unknown sample, are errors.
        let e = Regions::from_obs_column(
            &idx,
            cohort.clone(),
            RegionConfig::new(0).only([("s0", "zz")]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("\"zz\" of sample \"s0\""), "{e}");
        let e = Regions::from_obs_column(&idx, cohort, RegionConfig::new(0).only([("s9", "a")]))
            .unwrap_err();
        assert!(e.to_string().contains("\"s9\""), "{e}");
        // Explicit definitions: a selection picks among them.
        let specs = vec![
            RegionSpec {
                sample_id: "s0".into(),
                region_id: "r1".into(),
                members: RegionMembers::Cells(vec![1, 2]),
            },
            RegionSpec {
                sample_id: "s1".into(),
                region_id: "r1".into(),
                members: RegionMembers::Cells(vec![12]),
            },
        ];
        let cfg = RegionConfig::new(0).only([("s1", "r1")]);
        let r = Regions::from_specs(&idx, Cohort::all(20), specs.clone(), cfg).unwrap();
        assert_eq!((r.len(), r.region_cells(0)), (1, &[12][..]));
        let cfg = RegionConfig::new(0).only([("s1", "r2")]);
        let e = Regions::from_specs(&idx, Cohort::all(20), specs, cfg).unwrap_err();
        assert!(
            e.to_string()
                .contains("not defined by the region definitions"),
            "{e}"
        );
    }

    #[test]
    fn parquet_manifest() {
        use arrow::array::{RecordBatch, StringArray, UInt64Array};
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("regions.parquet");
        let b = RecordBatch::try_from_iter(vec![
            (
                "sample_id",
                Arc::new(StringArray::from(vec!["s1", "s1", "s0"])) as _,
            ),
            (
                "region_id",
                Arc::new(StringArray::from(vec!["a", "a", "b"])) as _,
            ),
            ("cell", Arc::new(UInt64Array::from(vec![12u64, 19, 4])) as _),
        ])
        .unwrap();
        let f = std::fs::File::create(&p).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(f, b.schema(), None).unwrap();
        w.write(&b).unwrap();
        w.close().unwrap();
        let specs = Regions::read_manifest(&p).unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].members, RegionMembers::Cells(vec![12, 19]));
        let mut cfg = RegionConfig::new(0);
        cfg.max_cells = Some(1);
        let r = Regions::from_specs(&spatial_index(), Cohort::all(20), specs, cfg).unwrap();
        assert!((0..2).all(|p| r.item(3, p).cells.len() == 1));
    }
}
