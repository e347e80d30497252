//! The h5ad reader's attribute and encoding parsing. Each input describes a structurally
//! valid HDF5 file (so that the fuzzer explores cellarrow's reader, not the HDF5 C library):
//! X as a group or a dataset with arbitrary `encoding-type`, `encoding-version` and `shape`
//! attributes and arbitrary indptr/indices/data arrays of arbitrary dtypes; obs and var
//! dataframes with arbitrary `_index`, `column-order` and column encodings (categorical,
//! nullable, plain, unknown); obsm/spatial. Every reader call returns a value or an error,
//! never panics or aborts.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use cellarrow::h5ad::{H5ad, MatrixSource};
use hdf5::types::VarLenUnicode;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

const MAX: usize = 48;

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Dt {
    I8,
    U8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    F32,
    F64,
    Bool,
    Str,
}

#[derive(Arbitrary, Debug)]
struct Arr {
    dt: Dt,
    vals: Vec<i16>,
    /// Columns when written 2-D (`None` or 0: 1-D).
    cols: Option<u8>,
    /// Divide values by this to get fractions and NaN (0.0 / 0.0) for float dtypes.
    scale: u8,
}

#[derive(Arbitrary, Debug)]
enum AttrVal {
    Missing,
    Str(String),
    Known(u8),
    Ints(Vec<i64>),
    Float(f64),
    Strs(Vec<String>),
}

#[derive(Arbitrary, Debug)]
enum Col {
    Plain(Arr),
    Categorical { codes: Arr, categories: Arr, ordered: AttrVal },
    Nullable { enc: AttrVal, values: Arr, mask: Arr },
    Other { enc: AttrVal, arr: Arr },
}

#[derive(Arbitrary, Debug)]
struct FrameSpec {
    present: bool,
    enc: AttrVal,
    version: AttrVal,
    index_attr: AttrVal,
    column_order: AttrVal,
    index: Arr,
    cols: Vec<(u8, Col)>,
}

#[derive(Arbitrary, Debug)]
struct Spec {
    x_group: bool,
    x_enc: AttrVal,
    x_version: AttrVal,
    x_shape: AttrVal,
    indptr: Arr,
    indices: Arr,
    data: Arr,
    obs: FrameSpec,
    var: FrameSpec,
    spatial: Option<Arr>,
    chunk_nnz: u8,
}

const KNOWN: &[&str] = &[
    "csr_matrix", "csc_matrix", "array", "dataframe", "categorical", "string-array",
    "nullable-integer", "nullable-boolean", "nullable-string-array", "string", "dict",
    "0.1.0", "0.2.0", "_index", "index", "cell_type", "",
];
const NAMES: &[&str] = &["cell_type", "n_counts", "_index", "index", "gene_ids", "__categories", "x"];

type H = hdf5::Result<()>;

fn attr(loc: &hdf5::Location, name: &str, v: &AttrVal) -> H {
    let s = |t: &str| -> hdf5::Result<VarLenUnicode> {
        t.replace('\0', "").parse::<VarLenUnicode>().map_err(|e| hdf5::Error::from(e.to_string()))
    };
    match v {
        AttrVal::Missing => Ok(()),
        AttrVal::Str(t) => loc.new_attr::<VarLenUnicode>().create(name)?.write_scalar(&s(t)?),
        AttrVal::Known(k) => loc
            .new_attr::<VarLenUnicode>()
            .create(name)?
            .write_scalar(&s(KNOWN[*k as usize % KNOWN.len()])?),
        AttrVal::Ints(v) => {
            let v: Vec<i64> = v.iter().take(4).copied().collect();
            loc.new_attr_builder().with_data(&v[..]).create(name).map(|_| ())
        }
        AttrVal::Float(f) => loc.new_attr::<f64>().create(name)?.write_scalar(f),
        AttrVal::Strs(v) => {
            let v: Vec<VarLenUnicode> = v.iter().take(8).map(|t| s(t)).collect::<hdf5::Result<_>>()?;
            loc.new_attr_builder().with_data(&v[..]).create(name).map(|_| ())
        }
    }
}

fn write_typed<T: hdf5::H5Type>(g: &hdf5::Group, name: &str, v: Vec<T>, cols: usize) -> hdf5::Result<hdf5::Dataset> {
    if cols > 0 && !v.is_empty() {
        let rows = v.len() / cols;
        let v: Vec<T> = v.into_iter().take(rows * cols).collect();
        let a = ndarray::Array2::from_shape_vec((rows, cols), v).map_err(|e| hdf5::Error::from(e.to_string()))?;
        g.new_dataset_builder().with_data(&a).create(name)
    } else {
        g.new_dataset_builder().with_data(&v[..]).create(name)
    }
}

fn dataset(g: &hdf5::Group, name: &str, a: &Arr) -> hdf5::Result<hdf5::Dataset> {
    let v: Vec<i16> = a.vals.iter().take(MAX).copied().collect();
    let cols = a.cols.map_or(0, |c| (c % 4) as usize);
    let scale = a.scale.max(1) as f64;
    let fl = |x: i16| if a.scale == 0 && x == 0 { f64::NAN } else { x as f64 / scale };
    match a.dt {
        Dt::I8 => write_typed(g, name, v.iter().map(|&x| x as i8).collect(), cols),
        Dt::U8 => write_typed(g, name, v.iter().map(|&x| x as u8).collect(), cols),
        Dt::I16 => write_typed(g, name, v, cols),
        Dt::U16 => write_typed(g, name, v.iter().map(|&x| x as u16).collect(), cols),
        Dt::I32 => write_typed(g, name, v.iter().map(|&x| x as i32).collect(), cols),
        Dt::U32 => write_typed(g, name, v.iter().map(|&x| x as u32).collect(), cols),
        Dt::I64 => write_typed(g, name, v.iter().map(|&x| (x as i64) << 20).collect(), cols),
        Dt::U64 => write_typed(g, name, v.iter().map(|&x| x as u64).collect(), cols),
        Dt::F32 => write_typed(g, name, v.iter().map(|&x| fl(x) as f32).collect(), cols),
        Dt::F64 => write_typed(g, name, v.iter().map(|&x| fl(x)).collect(), cols),
        Dt::Bool => write_typed(g, name, v.iter().map(|&x| x & 1 == 1).collect(), cols),
        Dt::Str => write_typed(
            g,
            name,
            v.iter().map(|x| format!("g{}", x % 7).parse::<VarLenUnicode>().unwrap()).collect(),
            cols,
        ),
    }
}

fn frame(f: &hdf5::File, name: &str, s: &FrameSpec) -> H {
    if !s.present {
        return Ok(());
    }
    let g = f.create_group(name)?;
    attr(&g, "encoding-type", &s.enc)?;
    attr(&g, "encoding-version", &s.version)?;
    attr(&g, "_index", &s.index_attr)?;
    attr(&g, "column-order", &s.column_order)?;
    dataset(&g, "_index", &s.index)?;
    for (n, col) in s.cols.iter().take(4) {
        let cname = NAMES[*n as usize % NAMES.len()];
        if g.link_exists(cname) {
            continue;
        }
        match col {
            Col::Plain(a) => {
                dataset(&g, cname, a)?;
            }
            Col::Categorical { codes, categories, ordered } => {
                let c = g.create_group(cname)?;
                attr(&c, "encoding-type", &AttrVal::Str("categorical".into()))?;
                attr(&c, "encoding-version", &AttrVal::Str("0.2.0".into()))?;
                attr(&c, "ordered", ordered)?;
                dataset(&c, "codes", codes)?;
                dataset(&c, "categories", categories)?;
            }
            Col::Nullable { enc, values, mask } => {
                let c = g.create_group(cname)?;
                attr(&c, "encoding-type", enc)?;
                attr(&c, "encoding-version", &AttrVal::Str("0.1.0".into()))?;
                dataset(&c, "values", values)?;
                dataset(&c, "mask", mask)?;
            }
            Col::Other { enc, arr } => {
                let d = dataset(&g, cname, arr)?;
                attr(&d, "encoding-type", enc)?;
            }
        }
    }
    Ok(())
}

fn write(path: &std::path::Path, s: &Spec) -> H {
    let f = hdf5::File::create(path)?;
    if s.x_group {
        let x = f.create_group("X")?;
        attr(&x, "encoding-type", &s.x_enc)?;
        attr(&x, "encoding-version", &s.x_version)?;
        attr(&x, "shape", &s.x_shape)?;
        attr(&x, "h5sparse_shape", &s.x_shape)?;
        dataset(&x, "indptr", &s.indptr)?;
        dataset(&x, "indices", &s.indices)?;
        dataset(&x, "data", &s.data)?;
    } else {
        let root: &hdf5::Group = &f;
        let d = dataset(root, "X", &s.data)?;
        attr(&d, "encoding-type", &s.x_enc)?;
        attr(&d, "encoding-version", &s.x_version)?;
    }
    frame(&f, "obs", &s.obs)?;
    frame(&f, "var", &s.var)?;
    if let Some(sp) = &s.spatial {
        let g = f.create_group("obsm")?;
        dataset(&g, "spatial", sp)?;
    }
    Ok(())
}

fn path() -> &'static PathBuf {
    static P: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &P.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" };
        let t = tempfile::Builder::new().prefix("fuzz-h5ad-").tempdir_in(base).unwrap();
        let p = t.path().join("f.h5ad");
        hdf5::silence_errors(true);
        (t, p)
    })
    .1
}

fuzz_target!(|s: Spec| {
    let p = path();
    let _ = std::fs::remove_file(p);
    if write(p, &s).is_err() {
        return;
    }
    // To turn a crashing input into an h5ad regression file (see fuzz/regressions/README.md).
    if let Some(keep) = std::env::var_os("CELLARROW_FUZZ_KEEP") {
        let _ = std::fs::copy(p, std::path::Path::new(&keep).join("last.h5ad"));
    }
    let Ok(h) = H5ad::open(p) else { return };
    let _ = h.n_obs();
    if let Ok(m) = h.matrix(&MatrixSource::X) {
        let (rows, _cols) = m.shape();
        let _ = m.value_stats();
        let mut seen = 0u64;
        for c in m.chunks(1 + s.chunk_nnz as usize) {
            match c {
                Ok(c) => {
                    assert_eq!(c.indptr.first().copied(), Some(0));
                    assert_eq!(*c.indptr.last().unwrap() as usize, c.indices.len());
                    assert_eq!(c.indices.len(), c.values.len());
                    seen += c.n_rows() as u64;
                }
                Err(_) => break,
            }
            if seen > rows {
                panic!("chunks returned {seen} rows of {rows}");
            }
        }
    }
    let _ = h.obs(None);
    let _ = h.var(&MatrixSource::X);
    let _ = h.gene_names(&MatrixSource::X, None);
    let _ = h.gene_names(&MatrixSource::X, Some("gene_ids"));
    let _ = h.obsm("spatial");
    let _ = h.ordered_categoricals("/obs");
});
