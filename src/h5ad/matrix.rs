//! X, `layers/*` and `raw/X`: opening, validation and bounded row-chunk reads.
//!
//! Memory per call is bounded by the rows asked for plus one streamed block of [`BLOCK`]
//! entries; nothing reads a whole matrix. CSR reads one indptr range and the matching
//! indices/data slices. Dense reads row-block hyperslabs and drops zeros. CSC has no row
//! access path on disk: the first call makes one pass over the row indices to count the
//! non-zeros of every row (O(n_rows) memory), then each row window streams all columns in blocks
//! and keeps the entries whose row falls in the window, so reading a CSC matrix in `w`
//! windows costs `w` passes over its indices and data.

use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

use hdf5::{Dataset, Group, Hyperslab, Selection, SliceOrIndex};

use super::util::{
    attr_ints, attr_string, check_filters, dtype, dtype_name, encoding_type, h5err, is_integer,
    is_numeric, is_string, join, open_node, Node,
};
use super::{CsrChunk, H5ad, Matrix, MatrixEncoding, MatrixSource, ValueStats};
use crate::error::{Error, Result};

/// Entries (or dense cells) read per streamed block: 1 Mi entries is 16 MB as i64 + f64.
const BLOCK: usize = 1 << 20;
/// Upper bound on the rows of one chunk, so empty rows cannot make a chunk's indptr unbounded.
const MAX_CHUNK_ROWS: u64 = 1 << 20;
/// indptr entries read at a time while planning chunk boundaries.
const PLAN_WINDOW: u64 = 1 << 16;

/// Where a matrix's numbers live.
pub(crate) enum Store {
    Sparse {
        data: Dataset,
        indices: Dataset,
        indptr: Dataset,
        nnz: u64,
    },
    Dense {
        ds: Dataset,
    },
}

/// CSC access structures: column pointers and per-row non-zero counts.
pub(crate) struct CscIndex {
    col_ptr: Vec<u64>,
    row_nnz: Vec<u64>,
}

/// The HDF5 path of `source`, taking the legacy `raw.X` into account.
fn object_of(h5: &H5ad, source: &MatrixSource) -> String {
    match source {
        MatrixSource::X => "/X".to_string(),
        MatrixSource::Layer(name) => format!("/layers/{name}"),
        MatrixSource::Raw => {
            if !h5.file.link_exists("raw/X") && h5.file.link_exists("raw.X") {
                "/raw.X".to_string()
            } else {
                "/raw/X".to_string()
            }
        }
    }
}

/// Opens and validates the matrix of `source`.
pub(crate) fn open_matrix<'a>(h5: &'a H5ad, source: &MatrixSource) -> Result<Matrix<'a>> {
    let path = h5.path();
    let object = object_of(h5, source);
    let rel = object.trim_start_matches('/');
    let root: &Group = &h5.file;
    let node = match open_node(root, rel, path, &object)? {
        Some(n) => n,
        None => {
            let what = match source {
                MatrixSource::X => "the file has no X matrix".to_string(),
                MatrixSource::Layer(name) => format!("the file has no layer {name:?}"),
                MatrixSource::Raw => "the file has no raw matrix".to_string(),
            };
            return Err(Error::h5ad(path, object, format!("missing: {what}")));
        }
    };
    let (encoding, shape, store) = match node {
        Node::Group(g) => open_sparse(&g, path, &object)?,
        Node::Dataset(ds) => open_dense(&ds, path, &object)?,
    };
    Ok(Matrix {
        h5,
        object,
        encoding,
        shape,
        store,
        csc: OnceLock::new(),
    })
}

fn open_dense(
    ds: &Dataset,
    path: &Path,
    object: &str,
) -> Result<(MatrixEncoding, (u64, u64), Store)> {
    match encoding_type(ds).as_deref() {
        None | Some("array") => {}
        Some(other) => {
            return Err(Error::unsupported(
                path,
                object,
                format!("matrix encoding-type {other:?} is not supported"),
            ))
        }
    }
    let desc = dtype(ds, path, object)?;
    if is_string(&desc) {
        return Err(Error::unsupported(
            path,
            object,
            "the matrix holds strings, not numbers",
        ));
    }
    if !is_numeric(&desc) {
        return Err(Error::unsupported(
            path,
            object,
            format!(
                "matrix dtype {} is not supported (integers and floats are)",
                dtype_name(&desc)
            ),
        ));
    }
    let shape = ds.shape();
    if shape.len() != 2 {
        return Err(Error::h5ad(
            path,
            object,
            format!(
                "a dense matrix must be 2-D, found {} dimensions",
                shape.len()
            ),
        ));
    }
    check_filters(ds, path, object)?;
    Ok((
        MatrixEncoding::Dense,
        (shape[0] as u64, shape[1] as u64),
        Store::Dense { ds: ds.clone() },
    ))
}

fn open_sparse(
    g: &Group,
    path: &Path,
    object: &str,
) -> Result<(MatrixEncoding, (u64, u64), Store)> {
    let (encoding, shape) = sparse_header(g, path, object)?;
    let data = sparse_member(g, path, object, "data")?;
    let indices = sparse_member(g, path, object, "indices")?;
    let indptr = sparse_member(g, path, object, "indptr")?;
    check_sparse_dtypes(&data, &indices, &indptr, path, object)?;
    let nnz = data.size() as u64;
    check_sparse_extents(encoding, shape, nnz, &indices, &indptr, path, object)?;
    Ok((
        encoding,
        shape,
        Store::Sparse {
            data,
            indices,
            indptr,
            nnz,
        },
    ))
}

/// The encoding (CSR or CSC) and the shape of a sparse matrix group, from the current
/// attributes (`encoding-type`, `shape`) or the legacy h5sparse ones.
fn sparse_header(g: &Group, path: &Path, object: &str) -> Result<(MatrixEncoding, (u64, u64))> {
    let (encoding, shape) =
        match encoding_type(g).as_deref() {
            Some("csr_matrix") => (MatrixEncoding::Csr, attr_ints(g, "shape")),
            Some("csc_matrix") => (MatrixEncoding::Csc, attr_ints(g, "shape")),
            Some(other) => {
                return Err(Error::unsupported(
                    path,
                    object,
                    format!("matrix encoding-type {other:?} is not supported"),
                ))
            }
            None => match attr_string(g, "h5sparse_format").as_deref() {
                Some("csr") => (MatrixEncoding::Csr, attr_ints(g, "h5sparse_shape")),
                Some("csc") => (MatrixEncoding::Csc, attr_ints(g, "h5sparse_shape")),
                Some(other) => {
                    return Err(Error::unsupported(
                        path,
                        object,
                        format!("legacy sparse format {other:?} is not supported"),
                    ))
                }
                None => return Err(Error::h5ad(
                    path,
                    object,
                    "a group without encoding-type or h5sparse_format attribute is not a matrix",
                )),
            },
        };
    match shape.as_deref() {
        Some([r, c]) if *r >= 0 && *c >= 0 => Ok((encoding, (*r as u64, *c as u64))),
        Some(s) => Err(Error::h5ad(
            path,
            object,
            format!("shape attribute must be two non-negative numbers, found {s:?}"),
        )),
        None => Err(Error::h5ad(
            path,
            object,
            "sparse matrix without a shape attribute",
        )),
    }
}

/// The 1-D dataset `name` of a sparse matrix group, with filters we can read.
fn sparse_member(g: &Group, path: &Path, object: &str, name: &str) -> Result<Dataset> {
    let obj = join(object, name);
    match open_node(g, name, path, &obj)? {
        Some(Node::Dataset(ds)) => {
            if ds.ndim() != 1 {
                return Err(Error::h5ad(
                    path,
                    obj,
                    format!("must be 1-D, found {} dimensions", ds.ndim()),
                ));
            }
            check_filters(&ds, path, &obj)?;
            Ok(ds)
        }
        Some(Node::Group(_)) => Err(Error::h5ad(path, obj, "expected a dataset, found a group")),
        None => Err(Error::h5ad(path, obj, "missing from the sparse matrix")),
    }
}

/// Numbers in `data`, integers in `indices` and `indptr`.
fn check_sparse_dtypes(
    data: &Dataset,
    indices: &Dataset,
    indptr: &Dataset,
    path: &Path,
    object: &str,
) -> Result<()> {
    let data_obj = join(object, "data");
    let d = dtype(data, path, &data_obj)?;
    if is_string(&d) {
        return Err(Error::unsupported(
            path,
            data_obj,
            "the matrix holds strings, not numbers",
        ));
    }
    if !is_numeric(&d) {
        return Err(Error::unsupported(
            path,
            data_obj,
            format!(
                "matrix dtype {} is not supported (integers and floats are)",
                dtype_name(&d)
            ),
        ));
    }
    for (ds, name) in [(indices, "indices"), (indptr, "indptr")] {
        let obj = join(object, name);
        let t = dtype(ds, path, &obj)?;
        if !is_integer(&t) {
            return Err(Error::h5ad(
                path,
                obj,
                format!("must hold integers, found {}", dtype_name(&t)),
            ));
        }
    }
    Ok(())
}

/// `indices` as long as `data`; `indptr` one longer than the major axis of `shape`, from 0 to
/// `nnz` (its monotonicity is checked chunk by chunk as rows are read).
fn check_sparse_extents(
    encoding: MatrixEncoding,
    shape: (u64, u64),
    nnz: u64,
    indices: &Dataset,
    indptr: &Dataset,
    path: &Path,
    object: &str,
) -> Result<()> {
    if indices.size() as u64 != nnz {
        return Err(Error::h5ad(
            path,
            join(object, "indices"),
            format!("has {} entries but data has {nnz}", indices.size()),
        ));
    }
    let (major, major_name) = match encoding {
        MatrixEncoding::Csr => (shape.0, "rows"),
        _ => (shape.1, "columns"),
    };
    let indptr_obj = join(object, "indptr");
    if indptr.size() as u64 != major + 1 {
        return Err(Error::h5ad(
            path,
            indptr_obj,
            format!(
                "has {} entries but the shape attribute ({} x {}) implies {} {major_name}, so {} entries",
                indptr.size(),
                shape.0,
                shape.1,
                major,
                major + 1
            ),
        ));
    }
    let first = read_i64(indptr, 0..1, path, &indptr_obj)?[0];
    let last = read_i64(indptr, major..major + 1, path, &indptr_obj)?[0];
    if first != 0 {
        return Err(Error::h5ad(
            path,
            indptr_obj,
            format!("must start at 0, starts at {first}"),
        ));
    }
    if last != nnz as i64 {
        return Err(Error::h5ad(
            path,
            indptr_obj,
            format!("ends at {last} but data has {nnz} values"),
        ));
    }
    Ok(())
}

/// Reads `range` of a 1-D dataset converted to `T`.
fn read_1d<T: hdf5::H5Type>(
    ds: &Dataset,
    range: Range<u64>,
    path: &Path,
    object: &str,
) -> Result<Vec<T>> {
    let arr = ds
        .as_reader()
        .read_slice_1d::<T, _>(range.start as usize..range.end as usize)
        .map_err(|e| h5err(path, object, e))?;
    Ok(arr.into_raw_vec_and_offset().0)
}

fn read_i64(ds: &Dataset, range: Range<u64>, path: &Path, object: &str) -> Result<Vec<i64>> {
    read_1d::<i64>(ds, range, path, object)
}

fn read_f64(ds: &Dataset, range: Range<u64>, path: &Path, object: &str) -> Result<Vec<f64>> {
    read_1d::<f64>(ds, range, path, object)
}

/// Checks that `p` (entries `offset..` of an indptr) never decreases, naming the first offender.
fn check_monotone(p: &[i64], offset: u64, what: &str, path: &Path, object: &str) -> Result<()> {
    for (i, w) in p.windows(2).enumerate() {
        if w[1] < w[0] {
            return Err(Error::h5ad(
                path,
                object,
                format!(
                    "not monotone at {what} {} ({} > {})",
                    offset + i as u64,
                    w[0],
                    w[1]
                ),
            ));
        }
    }
    Ok(())
}

impl<'a> Matrix<'a> {
    fn path(&self) -> &Path {
        self.h5.path()
    }

    fn sub(&self, name: &str) -> String {
        join(&self.object, name)
    }

    pub(crate) fn read_rows_impl(&self, start: u64, end: u64) -> Result<CsrChunk> {
        if start > end || end > self.shape.0 {
            return Err(Error::invalid_input(format!(
                "rows {start}..{end} are outside the matrix's {} rows",
                self.shape.0
            ))
            .with_path(self.path())
            .with_object(self.object.clone()));
        }
        match (&self.store, self.encoding) {
            (
                Store::Sparse {
                    data,
                    indices,
                    indptr,
                    nnz,
                },
                MatrixEncoding::Csr,
            ) => self.read_csr(data, indices, indptr, *nnz, start, end),
            (Store::Sparse { data, indices, .. }, _) => self.read_csc(data, indices, start, end),
            (Store::Dense { ds }, _) => self.read_dense(ds, start, end),
        }
    }

    fn read_csr(
        &self,
        data: &Dataset,
        indices: &Dataset,
        indptr: &Dataset,
        nnz: u64,
        start: u64,
        end: u64,
    ) -> Result<CsrChunk> {
        let path = self.path();
        let ip_obj = self.sub("indptr");
        let p = read_i64(indptr, start..end + 1, path, &ip_obj)?;
        check_monotone(&p, start, "row", path, &ip_obj)?;
        let (a, b) = (p[0], p[p.len() - 1]);
        if a < 0 || b as u64 > nnz {
            return Err(Error::h5ad(
                path,
                ip_obj,
                format!(
                    "rows {start}..{end} point at values {a}..{b}, outside the {nnz} stored values"
                ),
            ));
        }
        let (a, b) = (a as u64, b as u64);
        let idx = read_i64(indices, a..b, path, &self.sub("indices"))?;
        let values = read_f64(data, a..b, path, &self.sub("data"))?;
        let n_cols = self.shape.1 as i64;
        let mut out = Vec::with_capacity(idx.len());
        for (k, &j) in idx.iter().enumerate() {
            if j < 0 || j >= n_cols {
                return Err(Error::h5ad(
                    path,
                    self.sub("indices"),
                    format!(
                        "column index {j} at position {} is outside 0..{n_cols}",
                        a + k as u64
                    ),
                ));
            }
            out.push(j as u32);
        }
        let indptr = p.iter().map(|&x| (x as u64) - a).collect();
        Ok(CsrChunk {
            row_start: start,
            indptr,
            indices: out,
            values,
        })
    }

    fn read_dense(&self, ds: &Dataset, start: u64, end: u64) -> Result<CsrChunk> {
        let n_cols = self.shape.1 as usize;
        let mut chunk = CsrChunk {
            row_start: start,
            indptr: vec![0],
            ..Default::default()
        };
        let rows_per_block = (BLOCK / n_cols.max(1)).max(1) as u64;
        let mut r0 = start;
        while r0 < end {
            let r1 = (r0 + rows_per_block).min(end);
            let block = self.read_dense_block(ds, r0, r1)?;
            if n_cols > 0 {
                for row in block.chunks(n_cols) {
                    for (j, &v) in row.iter().enumerate() {
                        if v != 0.0 {
                            chunk.indices.push(j as u32);
                            chunk.values.push(v);
                        }
                    }
                    chunk.indptr.push(chunk.values.len() as u64);
                }
            } else {
                chunk
                    .indptr
                    .extend(std::iter::repeat_n(0, (r1 - r0) as usize));
            }
            r0 = r1;
        }
        Ok(chunk)
    }

    /// Rows `r0..r1` of a dense matrix, row-major, as f64.
    fn read_dense_block(&self, ds: &Dataset, r0: u64, r1: u64) -> Result<Vec<f64>> {
        if r1 <= r0 || self.shape.1 == 0 {
            return Ok(Vec::new());
        }
        let sel = Selection::from(Hyperslab::from(vec![
            SliceOrIndex::from(r0 as usize..r1 as usize),
            SliceOrIndex::from(..),
        ]));
        let arr = ds
            .as_reader()
            .read_slice_2d::<f64, _>(sel)
            .map_err(|e| h5err(self.path(), &self.object, e))?;
        Ok(arr.into_raw_vec_and_offset().0)
    }

    /// Column pointers and per-row counts of a CSC matrix (computed once).
    fn csc_index(&self) -> Result<&CscIndex> {
        if let Some(ix) = self.csc.get() {
            return Ok(ix);
        }
        let Store::Sparse {
            indices,
            indptr,
            nnz,
            ..
        } = &self.store
        else {
            unreachable!("csc_index on a non-sparse matrix");
        };
        let path = self.path();
        let ip_obj = self.sub("indptr");
        let n_cols = self.shape.1;
        let cp = read_i64(indptr, 0..n_cols + 1, path, &ip_obj)?;
        check_monotone(&cp, 0, "column", path, &ip_obj)?;
        let col_ptr: Vec<u64> = cp.iter().map(|&x| x as u64).collect();
        let n_rows = self.shape.0;
        let mut row_nnz = vec![0u64; n_rows as usize];
        let idx_obj = self.sub("indices");
        let mut k0 = 0u64;
        while k0 < *nnz {
            let k1 = (k0 + BLOCK as u64).min(*nnz);
            let rows = read_i64(indices, k0..k1, path, &idx_obj)?;
            for (k, &r) in rows.iter().enumerate() {
                if r < 0 || r as u64 >= n_rows {
                    return Err(Error::h5ad(
                        path,
                        idx_obj.clone(),
                        format!(
                            "row index {r} at position {} is outside 0..{n_rows}",
                            k0 + k as u64
                        ),
                    ));
                }
                row_nnz[r as usize] += 1;
            }
            k0 = k1;
        }
        let _ = self.csc.set(CscIndex { col_ptr, row_nnz });
        Ok(self.csc.get().expect("set just above"))
    }

    fn read_csc(
        &self,
        data: &Dataset,
        indices: &Dataset,
        start: u64,
        end: u64,
    ) -> Result<CsrChunk> {
        let ix = self.csc_index()?;
        let path = self.path();
        let mut indptr = Vec::with_capacity((end - start) as usize + 1);
        indptr.push(0u64);
        for r in start..end {
            indptr.push(indptr[indptr.len() - 1] + ix.row_nnz[r as usize]);
        }
        let total = indptr[indptr.len() - 1] as usize;
        let mut fill: Vec<u64> = indptr[..indptr.len() - 1].to_vec();
        let mut out_idx = vec![0u32; total];
        let mut out_val = vec![0f64; total];
        let nnz = ix.col_ptr[ix.col_ptr.len() - 1];
        let mut col = 0usize;
        let mut k0 = 0u64;
        while k0 < nnz && total > 0 {
            let k1 = (k0 + BLOCK as u64).min(nnz);
            let rows = read_i64(indices, k0..k1, path, &self.sub("indices"))?;
            let vals = read_f64(data, k0..k1, path, &self.sub("data"))?;
            for (off, (&r, &v)) in rows.iter().zip(&vals).enumerate() {
                let k = k0 + off as u64;
                while ix.col_ptr[col + 1] <= k {
                    col += 1;
                }
                let r = r as u64;
                if r >= start && r < end {
                    let local = (r - start) as usize;
                    let pos = fill[local];
                    if pos >= indptr[local + 1] {
                        return Err(Error::h5ad(
                            path,
                            self.sub("indices"),
                            "row indices changed between reads",
                        ));
                    }
                    out_idx[pos as usize] = col as u32;
                    out_val[pos as usize] = v;
                    fill[local] += 1;
                }
            }
            k0 = k1;
        }
        Ok(CsrChunk {
            row_start: start,
            indptr,
            indices: out_idx,
            values: out_val,
        })
    }

    /// End of the chunk starting at `start`: as many rows as fit in `max_nnz` stored values.
    fn plan_chunk(&self, start: u64, max_nnz: u64) -> Result<u64> {
        let n_rows = self.shape.0;
        let limit = (start + MAX_CHUNK_ROWS).min(n_rows);
        match (&self.store, self.encoding) {
            (Store::Dense { .. }, _) => {
                let rows = (max_nnz / self.shape.1.max(1)).max(1);
                Ok((start + rows).min(limit))
            }
            (Store::Sparse { indptr, .. }, MatrixEncoding::Csr) => {
                let path = self.path();
                let ip_obj = self.sub("indptr");
                let base = read_i64(indptr, start..start + 1, path, &ip_obj)?[0];
                // A chunk always takes its first row, however large; then rows while they fit.
                let mut end = start + 1;
                let mut w0 = start + 1;
                while w0 <= limit {
                    let w1 = (w0 + PLAN_WINDOW).min(limit + 1);
                    let p = read_i64(indptr, w0..w1, path, &ip_obj)?;
                    for (i, &x) in p.iter().enumerate() {
                        let candidate = w0 + i as u64;
                        if candidate > start + 1 && x.saturating_sub(base) > max_nnz as i64 {
                            return Ok(end);
                        }
                        end = candidate;
                    }
                    w0 = w1;
                }
                Ok(end)
            }
            (Store::Sparse { .. }, _) => {
                let ix = self.csc_index()?;
                let mut sum = 0u64;
                let mut end = start;
                while end < limit {
                    let n = ix.row_nnz[end as usize];
                    if end > start && sum + n > max_nnz {
                        break;
                    }
                    sum += n;
                    end += 1;
                }
                Ok(end)
            }
        }
    }

    pub(crate) fn chunks_impl(
        &self,
        max_nnz: usize,
    ) -> impl Iterator<Item = Result<CsrChunk>> + '_ {
        let max_nnz = max_nnz.max(1) as u64;
        let mut next = 0u64;
        let mut failed = false;
        std::iter::from_fn(move || {
            if failed || next >= self.shape.0 {
                return None;
            }
            let r = self.plan_chunk(next, max_nnz).and_then(|end| {
                let c = self.read_rows_impl(next, end)?;
                next = end;
                Ok(c)
            });
            if r.is_err() {
                failed = true;
            }
            Some(r)
        })
    }

    pub(crate) fn value_stats_impl(&self) -> Result<ValueStats> {
        let mut acc = ValueStats::empty();
        match &self.store {
            Store::Sparse { data, nnz, .. } => {
                let mut k0 = 0u64;
                while k0 < *nnz {
                    let k1 = (k0 + BLOCK as u64).min(*nnz);
                    for v in read_f64(data, k0..k1, self.path(), &self.sub("data"))? {
                        acc.push(v);
                    }
                    k0 = k1;
                }
            }
            Store::Dense { ds } => {
                let rows_per_block = (BLOCK as u64 / self.shape.1.max(1)).max(1);
                let mut r0 = 0;
                while r0 < self.shape.0 {
                    let r1 = (r0 + rows_per_block).min(self.shape.0);
                    for v in self.read_dense_block(ds, r0, r1)? {
                        acc.push(v);
                    }
                    r0 = r1;
                }
            }
        }
        Ok(acc)
    }
}
