//! Converting one sample: its matrix into parts, its obs into a staging table.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, DictionaryArray, Float64Array, StringArray, UInt32Array, UInt64Array,
};
use arrow::datatypes::Int32Type;
use arrow::record_batch::RecordBatch;
use progress::ProgressBar;

use super::rows::{remap_chunk, CellStats, RowCounts};
use super::{ConvertOptions, Planned, RESERVED_OBS};
use crate::corpus::{self, IndexType, PartEntry, PartLayout, PartWriter, ValueType};
use crate::error::{Context, Error, Result};
use crate::h5ad::{CsrChunk, H5ad};

/// What converting one sample produced.
#[derive(Debug)]
pub struct SampleOutput {
    pub parts: Vec<PartEntry>,
    pub nnz: u64,
    pub counts: RowCounts,
    /// Cells with a non-zero, per vocabulary gene.
    pub gene_cells: Vec<u64>,
    /// The staging obs table (its own schema; unified later).
    pub obs_path: PathBuf,
    /// Values of ontology columns that named no term.
    pub unresolved: Vec<super::labels::UnresolvedLabels>,
}

/// Fixed parameters shared by every sample of one conversion.
pub struct Layout<'a> {
    pub dir: &'a Path,
    pub index_type: IndexType,
    pub value_type: ValueType,
    pub batch_rows: usize,
    pub part_cells: u64,
    /// Cells per chunk when the parts are cold; `None` for hot parts.
    pub cold: Option<u64>,
    pub n_genes: usize,
    /// Spatial columns of obs.parquet: 0, 2 or 3.
    pub coord_dims: usize,
    /// Ontology columns whose values get term ids.
    pub labels: &'a [super::labels::LabelColumn],
}

/// Writes consecutive rows into parts of at most `part_cells` cells, numbered from `first_part`.
struct PartSink<'a> {
    layout: &'a Layout<'a>,
    next_part: usize,
    next_cell: u64,
    current: Option<(PartWriter, PartEntry)>,
    done: Vec<PartEntry>,
}

impl<'a> PartSink<'a> {
    fn new(layout: &'a Layout<'a>, first_part: usize, first_cell: u64) -> Self {
        PartSink {
            layout,
            next_part: first_part,
            next_cell: first_cell,
            current: None,
            done: Vec::new(),
        }
    }

    /// Appends rows `0..n` of local CSR, splitting across parts as needed.
    fn push(&mut self, indptr: &[u64], indices: &[u32], values: &[f64]) -> Result<()> {
        let n = indptr.len() - 1;
        let mut r = 0;
        while r < n {
            if self
                .current
                .as_ref()
                .is_some_and(|(_, e)| e.n_cells == self.layout.part_cells)
            {
                self.close()?;
            }
            if self.current.is_none() {
                let rel = format!("matrix/part-{:05}.arrow", self.next_part);
                self.next_part += 1;
                let path = self.layout.dir.join(&rel);
                let (it, vt) = (self.layout.index_type, self.layout.value_type);
                let w = match self.layout.cold {
                    Some(chunk) => PartWriter::create_cold(path, it, vt, chunk as usize)?,
                    None => PartWriter::create(path, it, vt, self.layout.batch_rows)?,
                };
                let entry = PartEntry {
                    path: rel,
                    first_cell: self.next_cell,
                    n_cells: 0,
                    nnz: 0,
                    index_type: Some(it),
                    value_type: Some(vt),
                    layout: if self.layout.cold.is_some() {
                        PartLayout::Cold
                    } else {
                        PartLayout::Hot
                    },
                    chunk_cells: self.layout.cold,
                    footer: None,
                };
                self.current = Some((w, entry));
            }
            let (w, entry) = self.current.as_mut().expect("a part is open");
            let room = (self.layout.part_cells - entry.n_cells) as usize;
            let take = room.min(n - r);
            let (a, b) = (indptr[r] as usize, indptr[r + take] as usize);
            if r == 0 && a == 0 {
                w.push(&indptr[r..=r + take], &indices[a..b], &values[a..b])?;
            } else {
                let local: Vec<u64> = indptr[r..=r + take].iter().map(|p| p - indptr[r]).collect();
                w.push(&local, &indices[a..b], &values[a..b])?;
            }
            entry.n_cells += take as u64;
            entry.nnz += (b - a) as u64;
            self.next_cell += take as u64;
            r += take;
        }
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        if let Some((w, mut entry)) = self.current.take() {
            entry.footer = w.finish()?.footer;
            super::kill::kill_point("part-written");
            self.done.push(entry);
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<PartEntry>> {
        self.close()?;
        Ok(self.done)
    }
}

/// Source-order rows of a spatial sample, kept on disk until they can be written in curve
/// order. Entries are stored in the corpus's own index and value types (so the file is no
/// larger than the parts) and read back with positioned reads into one reused buffer: memory
/// stays bounded by the chunk size whatever the sample size.
struct Spill {
    file: tempfile::NamedTempFile<std::fs::File>,
    out: std::io::BufWriter<std::fs::File>,
    /// Byte offset of each row's entries; a row's entries are its indices then its values.
    offsets: Vec<u64>,
    /// Bytes written so far.
    written: u64,
    /// Entries of each row.
    lens: Vec<u32>,
    index_type: IndexType,
    value_type: ValueType,
}

impl Spill {
    fn new(parent: &Path, index_type: IndexType, value_type: ValueType) -> Result<Spill> {
        let file = tempfile::Builder::new()
            .prefix("spill-")
            .tempfile_in(parent)
            .map_err(|e| Error::io(parent, "creating a spill file", e))?;
        let out = file
            .reopen()
            .map_err(|e| Error::io(file.path(), "opening", e))?;
        let out = std::io::BufWriter::with_capacity(1 << 20, out);
        Ok(Spill {
            file,
            out,
            offsets: Vec::new(),
            written: 0,
            lens: Vec::new(),
            index_type,
            value_type,
        })
    }

    fn push(&mut self, chunk: &CsrChunk) -> Result<()> {
        use std::io::Write;
        let mut bytes = Vec::with_capacity(
            chunk.indices.len() * (self.index_type.byte_width() + self.value_type.byte_width()),
        );
        for r in 0..chunk.n_rows() {
            let (a, b) = (chunk.indptr[r] as usize, chunk.indptr[r + 1] as usize);
            self.offsets.push(self.written + bytes.len() as u64);
            for &i in &chunk.indices[a..b] {
                match self.index_type {
                    IndexType::Uint16 => bytes.extend_from_slice(&(i as u16).to_le_bytes()),
                    IndexType::Uint32 => bytes.extend_from_slice(&i.to_le_bytes()),
                }
            }
            for &v in &chunk.values[a..b] {
                match self.value_type {
                    ValueType::Uint16 => bytes.extend_from_slice(&(v as u16).to_le_bytes()),
                    ValueType::Uint32 => bytes.extend_from_slice(&(v as u32).to_le_bytes()),
                    ValueType::Float32 => bytes.extend_from_slice(&(v as f32).to_le_bytes()),
                    ValueType::Float64 => bytes.extend_from_slice(&v.to_le_bytes()),
                }
            }
            self.lens.push((b - a) as u32);
        }
        self.out
            .write_all(&bytes)
            .map_err(|e| Error::io(self.file.path(), "spilling rows", e))?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Writes the rows in `order` (positions in source order) to `sink`, `max_nnz` at a time.
    fn drain(self, order: &[u64], sink: &mut PartSink<'_>, max_nnz: usize) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let Spill {
            file,
            out,
            offsets,
            lens,
            index_type,
            value_type,
            ..
        } = self;
        let f = out
            .into_inner()
            .map_err(|e| Error::io(file.path(), "spilling rows", e.into_error()))?;
        drop(f);
        let (iw, vw) = (index_type.byte_width(), value_type.byte_width());
        let mut buf = Vec::new();
        let mut out = CsrChunk {
            row_start: 0,
            indptr: vec![0],
            indices: Vec::new(),
            values: Vec::new(),
        };
        for &src in order {
            let (start, len) = (offsets[src as usize], lens[src as usize] as usize);
            buf.resize(len * (iw + vw), 0);
            file.as_file()
                .read_exact_at(&mut buf, start)
                .map_err(|e| Error::io(file.path(), "reading spilled rows", e))?;
            let (ib, vb) = buf.split_at(len * iw);
            match index_type {
                IndexType::Uint16 => out.indices.extend(
                    ib.chunks_exact(2)
                        .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32),
                ),
                IndexType::Uint32 => out.indices.extend(
                    ib.chunks_exact(4)
                        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                ),
            }
            match value_type {
                ValueType::Uint16 => out.values.extend(
                    vb.chunks_exact(2)
                        .map(|c| u16::from_le_bytes([c[0], c[1]]) as f64),
                ),
                ValueType::Uint32 => out.values.extend(
                    vb.chunks_exact(4)
                        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64),
                ),
                ValueType::Float32 => out.values.extend(
                    vb.chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64),
                ),
                ValueType::Float64 => out.values.extend(
                    vb.chunks_exact(8)
                        .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))),
                ),
            }
            out.indptr.push(out.indices.len() as u64);
            if out.indices.len() >= max_nnz {
                sink.push(&out.indptr, &out.indices, &out.values)?;
                out.indptr.truncate(1);
                out.indices.clear();
                out.values.clear();
            }
        }
        if out.n_rows() > 0 {
            sink.push(&out.indptr, &out.indices, &out.values)?;
        }
        Ok(())
    }
}

/// Converts one sample. `first_part` and `first_cell` were assigned by the plan, so samples
/// convert in parallel into their final places.
///
/// Returns `None` when summing duplicate entries produced a value that the planned value type
/// cannot hold (two u16 counts adding past 65,535, say): the caller retries with a wider type.
pub fn convert_sample(
    plan: &Planned,
    opts: &ConvertOptions,
    layout: &Layout<'_>,
    first_part: usize,
    first_cell: u64,
    progress: &ProgressBar,
) -> Result<Option<SampleOutput>> {
    let h5 = H5ad::open(&plan.input.path)?;
    // Curve order for spatial samples: position i of the output holds source row order[i].
    // Both halves below read it.
    let order: Option<Vec<u64>> = plan
        .coords
        .as_ref()
        .map(|(dims, coords)| super::spatial::z_order(coords, *dims));
    let order = order.as_deref();
    // The obs side runs beside the matrix on a second thread: reading its columns while the
    // matrix is read (the library's lock makes the HDF5 reads take turns; the rest overlaps),
    // then building and writing the staging table while the rows are written into parts.
    std::thread::scope(|scope| {
        let frame = scope.spawn(|| h5.obs(opts.obs_columns.as_deref()));
        let obs = |stats: Vec<CellStats>| {
            let frame = frame
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))?;
            let obs_path = layout
                .dir
                .join(format!("obs-staging-{first_part:05}.parquet"));
            let (batch, unresolved) =
                obs_batch(&h5, frame, plan, layout, first_cell, &stats, order)?;
            corpus::write_parquet(&obs_path, &[batch])?;
            Ok((obs_path, unresolved))
        };
        let job = Job {
            plan,
            opts,
            layout,
            first_part,
            first_cell,
        };
        convert_matrix(job, &h5, order, progress, |stats| {
            scope.spawn(move || obs(stats))
        })
    })
}

/// What both halves of [`convert_sample`] convert and where it goes.
#[derive(Clone, Copy)]
struct Job<'a> {
    plan: &'a Planned,
    opts: &'a ConvertOptions,
    layout: &'a Layout<'a>,
    first_part: usize,
    first_cell: u64,
}

/// The matrix half of [`convert_sample`], in storage `order`: `obs` starts the obs table once
/// the per-cell stats are known, and is joined at the end.
fn convert_matrix<'scope>(
    job: Job<'_>,
    h5: &H5ad,
    order: Option<&[u64]>,
    progress: &ProgressBar,
    obs: impl FnOnce(
        Vec<CellStats>,
    ) -> std::thread::ScopedJoinHandle<
        'scope,
        Result<(PathBuf, Vec<super::labels::UnresolvedLabels>)>,
    >,
) -> Result<Option<SampleOutput>> {
    let Job {
        plan,
        opts,
        layout,
        first_part,
        first_cell,
    } = job;
    let path = &plan.input.path;
    let matrix = h5.matrix(&opts.source)?;
    let n = plan.n_obs as usize;

    let mut sink = PartSink::new(layout, first_part, first_cell);
    let mut spill = match order {
        Some(_) => Some(Spill::new(
            layout.dir,
            layout.index_type,
            layout.value_type,
        )?),
        None => None,
    };
    let mut stats: Vec<CellStats> = Vec::with_capacity(n);
    let mut counts = RowCounts::default();
    let mut gene_cells = vec![0u64; layout.n_genes];
    let mut scratch = Vec::new();
    let mut nnz = 0u64;
    for chunk in matrix.chunks(opts.chunk_nnz) {
        let mut chunk = chunk?;
        let (s, c) = remap_chunk(&mut chunk, &plan.gene_map, &mut scratch);
        if c.merged_duplicates > 0 && !chunk.values.iter().all(|&v| layout.value_type.holds(v)) {
            return Ok(None);
        }
        stats.extend(s);
        counts.nnz_outside_vocab += c.nnz_outside_vocab;
        counts.merged_duplicates += c.merged_duplicates;
        for &g in &chunk.indices {
            gene_cells[g as usize] += 1;
        }
        nnz += chunk.indices.len() as u64;
        match spill.as_mut() {
            Some(s) => s.push(&chunk)?,
            None => sink.push(&chunk.indptr, &chunk.indices, &chunk.values)?,
        }
        progress.inc(chunk.n_rows() as u64);
    }
    if stats.len() != n {
        return Err(Error::h5ad(
            path,
            matrix.object(),
            format!("read {} rows, expected {n}", stats.len()),
        ));
    }
    let obs = obs(stats);
    let drained = match (spill, order) {
        (Some(s), Some(order)) => s.drain(order, &mut sink, opts.chunk_nnz),
        _ => Ok(()),
    };
    let parts = drained.and_then(|()| sink.finish());
    // Joined before any error returns, so the obs thread never outlives a failed conversion.
    let obs_path = obs.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
    let (parts, (obs_path, unresolved)) = (parts?, obs_path?);
    Ok(Some(SampleOutput {
        parts,
        nnz,
        counts,
        gene_cells,
        obs_path,
        unresolved,
    }))
}

/// The sample's obs rows in storage order: reserved columns, coordinates, source columns, then
/// the term ids of ontology columns; with the ontology values that did not resolve.
fn obs_batch(
    h5: &H5ad,
    frame: crate::h5ad::Frame,
    plan: &Planned,
    layout: &Layout<'_>,
    first_cell: u64,
    stats: &[CellStats],
    order: Option<&[u64]>,
) -> Result<(RecordBatch, Vec<super::labels::UnresolvedLabels>)> {
    let n = stats.len();
    let crate::h5ad::Frame { index, columns } = frame;
    if index.len() != n {
        return Err(Error::h5ad(
            h5.path(),
            "obs",
            format!("obs has {} rows but the matrix has {n}", index.len()),
        ));
    }
    let source_rows: Vec<u64> = match order {
        Some(o) => o.to_vec(),
        None => (0..n as u64).collect(),
    };
    let take_idx = UInt64Array::from(source_rows.clone());
    let mut fields: Vec<(String, ArrayRef)> = Vec::new();
    fields.push((
        "cell".into(),
        Arc::new(UInt64Array::from_iter_values(
            first_cell..first_cell + n as u64,
        )),
    ));
    let sample: DictionaryArray<Int32Type> = DictionaryArray::new(
        arrow::array::Int32Array::from(vec![0; n]),
        Arc::new(StringArray::from(vec![plan.input.sample_id.as_str()])),
    );
    fields.push(("sample_id".into(), Arc::new(sample)));
    fields.push((
        "obs_name".into(),
        Arc::new(StringArray::from_iter_values(
            source_rows.iter().map(|&r| index[r as usize].as_str()),
        )),
    ));
    // The source columns are consumed one by one below, so a large obs table is held about
    // once, not twice (source and reordered copy) at the peak.
    drop(index);
    fields.push((
        "source_row".into(),
        Arc::new(UInt64Array::from(source_rows.clone())),
    ));
    // Stats are in source order; storage order follows `order`.
    fields.push((
        "nnz".into(),
        Arc::new(UInt32Array::from_iter_values(
            source_rows.iter().map(|&r| stats[r as usize].nnz),
        )),
    ));
    fields.push((
        "total".into(),
        Arc::new(Float64Array::from_iter_values(
            source_rows.iter().map(|&r| stats[r as usize].total),
        )),
    ));
    for d in 0..layout.coord_dims {
        let name = ["x", "y", "z"][d];
        let col: Float64Array = match &plan.coords {
            Some((dims, coords)) if d < *dims => source_rows
                .iter()
                .map(|&r| Some(coords[r as usize * dims + d]))
                .collect(),
            _ => std::iter::repeat_n(None::<f64>, n).collect(),
        };
        fields.push((name.into(), Arc::new(col)));
    }
    for (name, col) in columns {
        if col.len() != n {
            return Err(Error::h5ad(
                h5.path(),
                format!("obs/{name}"),
                format!("has {} rows, expected {n}", col.len()),
            ));
        }
        let col = match order {
            Some(_) => arrow::compute::take(col.as_ref(), &take_idx, None)
                .at_object(h5.path(), &format!("obs/{name}"))?,
            None => col,
        };
        let name = if RESERVED_OBS.contains(&name.as_str()) {
            format!("obs_{name}")
        } else {
            name
        };
        fields.push((name, col));
    }
    let unresolved = super::labels::resolve(layout.labels, &mut fields, h5.path())?;
    // Every column nullable, as in the obs.parquet of several samples, whose union leaves
    // a column null where a sample lacks it: one sample's table is obs.parquet as it is.
    let batch =
        RecordBatch::try_from_iter_with_nullable(fields.into_iter().map(|(n, a)| (n, a, true)))
            .at_object(h5.path(), "obs")?;
    Ok((batch, unresolved))
}

/// Progress bars: indicatif's with the `progress` feature (the command line turns it on),
/// else the same calls doing nothing, so the library builds without indicatif.
pub(super) mod progress {
    #[cfg(feature = "progress")]
    pub use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

    #[cfg(not(feature = "progress"))]
    pub use quiet::*;

    #[cfg(not(feature = "progress"))]
    mod quiet {
        use std::borrow::Cow;

        /// Where bars draw: nowhere.
        pub struct ProgressDrawTarget;
        impl ProgressDrawTarget {
            pub fn stderr() -> Self {
                ProgressDrawTarget
            }
            pub fn hidden() -> Self {
                ProgressDrawTarget
            }
        }

        /// A bar style: ignored.
        pub struct ProgressStyle;
        impl ProgressStyle {
            pub fn with_template(_: &str) -> Result<Self, std::convert::Infallible> {
                Ok(ProgressStyle)
            }
            pub fn progress_chars(self, _: &str) -> Self {
                self
            }
        }

        /// A group of bars: none drawn.
        pub struct MultiProgress;
        impl MultiProgress {
            pub fn with_draw_target(_: ProgressDrawTarget) -> Self {
                MultiProgress
            }
            pub fn add(&self, bar: ProgressBar) -> ProgressBar {
                bar
            }
            pub fn clear(&self) -> std::io::Result<()> {
                Ok(())
            }
        }

        /// A bar that counts nothing.
        #[derive(Clone)]
        pub struct ProgressBar;
        impl ProgressBar {
            pub fn new(_: u64) -> Self {
                ProgressBar
            }
            pub fn set_style(&self, _: ProgressStyle) {}
            pub fn set_prefix(&self, _: impl Into<Cow<'static, str>>) {}
            pub fn reset(&self) {}
            pub fn inc(&self, _: u64) {}
            pub fn finish_with_message(&self, _: impl Into<Cow<'static, str>>) {}
            pub fn finish_and_clear(&self) {}
        }
    }
}
