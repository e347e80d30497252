//! Tests of the h5ad reader against files written by anndata.
//!
//! `tests/fixtures/make_h5ad.py` writes the files once per test process, each with a JSON
//! sidecar of what anndata reads back from it; the real files under `tests/data` are described
//! by the same script (`--describe`). The reader is only ever compared with anndata.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Float64Type, Int32Type, Int64Type};
use serde_json::Value;

use super::*;
use crate::ErrorKind;

/// The Python with anndata: `CELLARROW_PYTHON`, else `python3`.
fn python() -> String {
    std::env::var("CELLARROW_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn script() -> PathBuf {
    crate_dir().join("tests/fixtures/make_h5ad.py")
}

/// The generated files, written once per test process.
fn fixtures() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = Command::new(python())
            .arg(script())
            .arg(dir.path())
            .output()
            .expect("running python");
        assert!(
            out.status.success(),
            "make_h5ad.py failed (set CELLARROW_PYTHON to a Python with anndata):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
    .path()
}

fn file(name: &str) -> PathBuf {
    fixtures().join(format!("{name}.h5ad"))
}

fn oracle(name: &str) -> Value {
    let p = fixtures().join(format!("{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(&p).expect("sidecar")).expect("sidecar JSON")
}

/// anndata's view of a real file under tests/data.
fn describe_real(name: &str) -> Value {
    let p = crate_dir().join("tests/data").join(name);
    let out = Command::new(python())
        .arg(script())
        .arg("--describe")
        .arg(&p)
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "describe {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("describe JSON")
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap_or(f64::NAN))
        .collect()
}

/// Equal up to serde_json's float parsing, which may be off by an ulp or two (its exact
/// `float_roundtrip` mode is not enabled in this crate).
fn same(a: f64, b: f64) -> bool {
    a == b
        || (a.is_nan() && b.is_nan())
        || (a - b).abs() <= 4.0 * f64::EPSILON * a.abs().max(b.abs())
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * (1.0 + a.abs().max(b.abs()))
}

/// Reads the whole matrix through `chunks(max_nnz)` and compares it with anndata's oracle.
fn check_matrix(m: &Matrix<'_>, want: &Value, max_nnz: usize, label: &str) {
    let shape = (
        want["shape"][0].as_u64().unwrap(),
        want["shape"][1].as_u64().unwrap(),
    );
    assert_eq!(m.shape(), shape, "{label}: shape");
    let mut next = 0u64;
    let mut row_sum = Vec::new();
    let mut row_nnz = Vec::new();
    let rows = want["rows"].as_object().unwrap();
    let mut stored = 0u64;
    for chunk in m.chunks(max_nnz) {
        let c = chunk.unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(c.row_start, next, "{label}: chunks are consecutive");
        assert_eq!(c.indptr[0], 0);
        assert_eq!(*c.indptr.last().unwrap() as usize, c.values.len());
        assert_eq!(c.indices.len(), c.values.len());
        assert!(c.n_rows() >= 1);
        assert!(
            c.values.len() <= max_nnz || c.n_rows() == 1,
            "{label}: chunk of {} values",
            c.values.len()
        );
        for i in 0..c.n_rows() {
            let r = c.row_start + i as u64;
            let (a, b) = (c.indptr[i] as usize, c.indptr[i + 1] as usize);
            let vals = &c.values[a..b];
            row_sum.push(vals.iter().sum::<f64>());
            row_nnz.push(vals.iter().filter(|v| **v != 0.0).count() as u64);
            stored += vals.iter().filter(|v| **v != 0.0).count() as u64;
            if let Some(w) = rows.get(&r.to_string()) {
                let mut dense = vec![0.0; shape.1 as usize];
                for (j, v) in c.indices[a..b].iter().zip(vals) {
                    dense[*j as usize] += v;
                }
                let w = f64s(w);
                assert_eq!(dense.len(), w.len());
                for (j, (x, y)) in dense.iter().zip(&w).enumerate() {
                    assert!(same(*x, *y), "{label}: X[{r},{j}] = {x}, anndata {y}");
                }
            }
        }
        next += c.n_rows() as u64;
    }
    assert_eq!(next, shape.0, "{label}: chunks cover all rows");
    let want_nnz: Vec<u64> = want["row_nnz"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    assert_eq!(row_nnz, want_nnz, "{label}: non-zeros per row");
    for (r, (a, b)) in row_sum.iter().zip(f64s(&want["row_sum"])).enumerate() {
        assert!(close(*a, b), "{label}: row {r} sum {a} vs anndata {b}");
    }
    let stats = m.value_stats().unwrap();
    assert_eq!(stats.count, stored, "{label}: value_stats count");
}

fn numpy_name(t: &DataType) -> &'static str {
    match t {
        DataType::Int8 => "int8",
        DataType::Int16 => "int16",
        DataType::Int32 => "int32",
        DataType::Int64 => "int64",
        DataType::UInt8 => "uint8",
        DataType::UInt16 => "uint16",
        DataType::UInt32 => "uint32",
        DataType::UInt64 => "uint64",
        DataType::Float32 => "float32",
        DataType::Float64 => "float64",
        _ => "other",
    }
}

fn check_column(name: &str, arr: &ArrayRef, want: &Value, label: &str) {
    let label = format!("{label}: column {name}");
    match want["kind"].as_str().unwrap() {
        "categorical" => {
            assert!(
                matches!(arr.data_type(), DataType::Dictionary(k, v) if **k == DataType::Int32 && **v == DataType::Utf8),
                "{label}: {}",
                arr.data_type()
            );
            let d = arr.as_dictionary::<Int32Type>();
            let cats: Vec<String> = d
                .values()
                .as_string::<i32>()
                .iter()
                .map(|s| s.unwrap().to_string())
                .collect();
            let want_cats: Vec<String> = want["categories"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_string())
                .collect();
            assert_eq!(cats, want_cats, "{label}: categories");
            let codes: Vec<i64> = want["codes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_i64().unwrap())
                .collect();
            let got: Vec<i64> = d
                .keys()
                .iter()
                .map(|k| k.map(i64::from).unwrap_or(-1))
                .collect();
            assert_eq!(got, codes, "{label}: codes");
        }
        "string" => {
            assert_eq!(arr.data_type(), &DataType::Utf8, "{label}");
            let got: Vec<Option<String>> = arr
                .as_string::<i32>()
                .iter()
                .map(|s| s.map(str::to_string))
                .collect();
            let w: Vec<Option<String>> = want["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect();
            assert_eq!(got, w, "{label}");
        }
        "bool" | "nullable-bool" => {
            assert_eq!(arr.data_type(), &DataType::Boolean, "{label}");
            let got: Vec<Option<bool>> = arr.as_boolean().iter().collect();
            let w: Vec<Option<bool>> = want["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(Value::as_bool)
                .collect();
            assert_eq!(got, w, "{label}");
            if want["kind"] == "bool" {
                assert_eq!(arr.null_count(), 0);
            }
        }
        "int" | "nullable-int" => {
            assert_eq!(
                numpy_name(arr.data_type()),
                want["dtype"].as_str().unwrap(),
                "{label}: dtype"
            );
            let c = arrow::compute::cast(arr, &DataType::Int64).unwrap();
            let got: Vec<Option<i64>> = c.as_primitive::<Int64Type>().iter().collect();
            let w: Vec<Option<i64>> = want["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(Value::as_i64)
                .collect();
            assert_eq!(got, w, "{label}");
        }
        "float" => {
            assert_eq!(
                numpy_name(arr.data_type()),
                want["dtype"].as_str().unwrap(),
                "{label}: dtype"
            );
            let c = arrow::compute::cast(arr, &DataType::Float64).unwrap();
            let got: Vec<f64> = c.as_primitive::<Float64Type>().values().to_vec();
            for (i, (a, b)) in got.iter().zip(f64s(&want["values"])).enumerate() {
                assert!(same(*a, b), "{label}[{i}]: {a} vs {b}");
            }
        }
        k => panic!("{label}: unknown oracle kind {k}"),
    }
}

fn check_frame(frame: &Frame, want: &Value, label: &str) {
    let index: Vec<String> = want["index"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    assert_eq!(frame.index, index, "{label}: index");
    let names: Vec<&str> = frame.columns.iter().map(|(n, _)| n.as_str()).collect();
    let want_names: Vec<&str> = want["column_order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(names, want_names, "{label}: columns");
    for (name, arr) in &frame.columns {
        assert_eq!(arr.len(), index.len());
        check_column(name, arr, &want["columns"][name], label);
    }
}

fn check_obsm(h5: &H5ad, want: &Value, label: &str) {
    for (key, w) in want["obsm"].as_object().unwrap() {
        let (cols, values) = h5
            .obsm(key)
            .unwrap()
            .unwrap_or_else(|| panic!("{label}: obsm {key} missing"));
        assert_eq!(
            cols as u64,
            w["cols"].as_u64().unwrap(),
            "{label}: obsm {key} columns"
        );
        let wv = f64s(&w["values"]);
        assert_eq!(values.len(), wv.len());
        for (a, b) in values.iter().zip(&wv) {
            assert!(same(*a, *b), "{label}: obsm {key}: {a} vs {b}");
        }
    }
    assert!(h5.obsm("no_such_key").unwrap().is_none());
}

/// Everything anndata reports about a file, compared with what the reader returns.
fn check_file(path: &Path, want: &Value, max_nnz: usize) {
    let label = path.file_name().unwrap().to_string_lossy().to_string();
    let h5 = H5ad::open(path).unwrap();
    assert_eq!(
        h5.n_obs().unwrap(),
        want["shape"][0].as_u64().unwrap(),
        "{label}: n_obs"
    );
    let m = h5.matrix(&MatrixSource::X).unwrap();
    assert_eq!(m.object(), "/X");
    check_matrix(&m, &want["X"], max_nnz, &label);
    check_frame(
        &h5.obs(None).unwrap(),
        &want["obs"],
        &format!("{label} obs"),
    );
    let var = h5.var(&MatrixSource::X).unwrap();
    check_frame(&var, &want["var"], &format!("{label} var"));
    assert_eq!(h5.gene_names(&MatrixSource::X, None).unwrap(), var.index);
    check_obsm(&h5, want, &label);
    for (name, w) in want["layers"].as_object().unwrap() {
        let m = h5.matrix(&MatrixSource::Layer(name.clone())).unwrap();
        assert_eq!(m.object(), format!("/layers/{name}"));
        check_matrix(&m, w, max_nnz, &format!("{label} layer {name}"));
    }
    if let Some(raw) = want["raw"].as_object() {
        let m = h5.matrix(&MatrixSource::Raw).unwrap();
        check_matrix(&m, &raw["X"], max_nnz, &format!("{label} raw"));
        let names: Vec<String> = raw["var_index"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            h5.gene_names(&MatrixSource::Raw, None).unwrap(),
            names,
            "{label}: raw var names"
        );
        assert_eq!(h5.var(&MatrixSource::Raw).unwrap().index, names);
    }
}

const GOOD: &[&str] = &[
    "csr_f32",
    "csr_f64",
    "csr_i32",
    "csr_i64",
    "csr_u16",
    "csr_u32",
    "csc_f64",
    "csc_i32",
    "dense_i32",
    "dense_f64",
    "dense_u16",
    "gzip",
    "lzf",
    "dense_gzip",
    "csr_many_rows",
    "csc_many_rows",
    "csr_indptr_i64",
    "contiguous",
    "layers_raw",
    "nullable_obs",
    "spatial2d",
    "spatial3d",
    "legacy07",
    "legacy06",
];

#[test]
fn h5ad_generated_files_match_anndata() {
    for name in GOOD {
        let want = oracle(name);
        // Small budgets force many chunks; a large one reads each file in one chunk.
        for max_nnz in [7, 100, 1 << 20] {
            check_file(&file(name), &want, max_nnz);
        }
    }
}

#[test]
fn h5ad_encodings_are_reported() {
    let enc = |n: &str| {
        H5ad::open(file(n))
            .unwrap()
            .matrix(&MatrixSource::X)
            .unwrap()
            .encoding()
    };
    assert_eq!(enc("csr_f32"), MatrixEncoding::Csr);
    assert_eq!(enc("csc_f64"), MatrixEncoding::Csc);
    assert_eq!(enc("dense_i32"), MatrixEncoding::Dense);
    assert_eq!(enc("legacy06"), MatrixEncoding::Dense);
    let h5 = H5ad::open(file("legacy06")).unwrap();
    let raw = h5.matrix(&MatrixSource::Raw).unwrap();
    assert_eq!(
        (raw.encoding(), raw.object()),
        (MatrixEncoding::Csr, "/raw.X")
    );
    let h5 = H5ad::open(file("layers_raw")).unwrap();
    assert_eq!(
        h5.matrix(&MatrixSource::Layer("counts_csc".into()))
            .unwrap()
            .encoding(),
        MatrixEncoding::Csc
    );
    let e = h5
        .matrix(&MatrixSource::Layer("nope".into()))
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidH5ad);
    assert_eq!(e.object(), Some("/layers/nope"));
}

#[test]
fn h5ad_read_rows_windows_agree_with_chunks() {
    for name in ["csr_f32", "csc_f64", "dense_i32", "csc_many_rows"] {
        let h5 = H5ad::open(file(name)).unwrap();
        let m = h5.matrix(&MatrixSource::X).unwrap();
        let all = m.read_rows(0, m.shape().0).unwrap();
        let (a, b) = (3u64, m.shape().0 - 5);
        let w = m.read_rows(a, b).unwrap();
        assert_eq!(w.row_start, a);
        assert_eq!(w.n_rows() as u64, b - a);
        for i in 0..w.n_rows() {
            let r = a as usize + i;
            let got = (
                &w.indices[w.indptr[i] as usize..w.indptr[i + 1] as usize],
                &w.values[w.indptr[i] as usize..w.indptr[i + 1] as usize],
            );
            let full = (
                &all.indices[all.indptr[r] as usize..all.indptr[r + 1] as usize],
                &all.values[all.indptr[r] as usize..all.indptr[r + 1] as usize],
            );
            assert_eq!(got, full, "{name} row {r}");
        }
        assert_eq!(m.read_rows(4, 4).unwrap().n_rows(), 0);
        let e = m.read_rows(0, m.shape().0 + 1).err().unwrap();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }
}

#[test]
fn h5ad_value_stats() {
    let s = H5ad::open(file("csr_u16"))
        .unwrap()
        .matrix(&MatrixSource::X)
        .unwrap()
        .value_stats()
        .unwrap();
    assert!(s.all_integer && s.all_f32_exact && s.min >= 1.0 && s.non_finite == 0);
    let s = H5ad::open(file("csr_f64"))
        .unwrap()
        .matrix(&MatrixSource::X)
        .unwrap()
        .value_stats()
        .unwrap();
    assert!(!s.all_integer && !s.all_f32_exact && s.min < 0.0);
    let s = H5ad::open(file("csr_f32"))
        .unwrap()
        .matrix(&MatrixSource::X)
        .unwrap()
        .value_stats()
        .unwrap();
    assert!(!s.all_integer && s.all_f32_exact);
    let s = H5ad::open(file("dense_i32"))
        .unwrap()
        .matrix(&MatrixSource::X)
        .unwrap()
        .value_stats()
        .unwrap();
    assert!(s.all_integer && s.min > 0.0);
}

#[test]
fn h5ad_ordered_categoricals_and_gene_columns() {
    let h5 = H5ad::open(file("csr_f32")).unwrap();
    assert_eq!(
        h5.ordered_categoricals("/obs").unwrap(),
        vec!["stage".to_string()]
    );
    let want = oracle("csr_f32");
    let sym: Vec<String> = want["var"]["columns"]["gene_symbols"]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        h5.gene_names(&MatrixSource::X, Some("gene_symbols"))
            .unwrap(),
        sym
    );
    let e = h5
        .gene_names(&MatrixSource::X, Some("n_cells"))
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let e = h5
        .gene_names(&MatrixSource::X, Some("absent"))
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    // Only the requested columns are read.
    let obs = h5
        .obs(Some(&["score".to_string(), "absent".to_string()]))
        .unwrap();
    assert_eq!(obs.columns.len(), 1);
    assert_eq!(obs.columns[0].0, "score");
    let h5 = H5ad::open(file("legacy07")).unwrap();
    assert_eq!(
        h5.ordered_categoricals("/obs").unwrap(),
        vec!["group".to_string()]
    );
}

#[test]
fn h5ad_bad_files_fail_cleanly() {
    let bad = fixtures().join("bad");
    let mut n = 0;
    for entry in std::fs::read_dir(&bad).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        n += 1;
        let want: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        let h5ad_path = p.with_extension("h5ad");
        let during = want["during"].as_str().unwrap();
        let result = (|| -> Result<()> {
            let h5 = H5ad::open(&h5ad_path)?;
            if during == "open" {
                return Ok(());
            }
            if during == "obs" {
                h5.obs(None)?;
                return Ok(());
            }
            if let Some(key) = during.strip_prefix("obsm:") {
                h5.obsm(key)?;
                return Ok(());
            }
            let m = h5.matrix(&MatrixSource::X)?;
            if during == "read" {
                for c in m.chunks(1 << 20) {
                    c?;
                }
                m.value_stats()?;
            }
            Ok(())
        })();
        let name = h5ad_path.file_name().unwrap().to_string_lossy().to_string();
        let e = result
            .err()
            .unwrap_or_else(|| panic!("{name}: expected an error during {during}"));
        let kind = format!("{:?}", e.kind());
        assert_eq!(kind, want["kind"].as_str().unwrap(), "{name}: {e}");
        assert!(
            e.to_string().contains(&name),
            "{name}: message names the file: {e}"
        );
        if let Some(obj) = want["object"].as_str() {
            assert_eq!(e.object(), Some(obj), "{name}: {e}");
        }
        if let Some(s) = want["contains"].as_str() {
            assert!(e.message().contains(s), "{name}: {e:?} lacks {s:?}");
        }
    }
    assert!(n >= 14, "only {n} bad files");
    let e = H5ad::open(bad.join("does_not_exist.h5ad")).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Io);
}

#[test]
fn h5ad_real_files_match_anndata() {
    let dir = crate_dir().join("tests/data");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".h5ad"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 7);
    for name in &names {
        let want = describe_real(name);
        check_file(&dir.join(name), &want, 50_000);
    }
    // The legacy files, as the converter would use them.
    let h5 = H5ad::open(dir.join("scanpy_pbmc68k_reduced.h5ad")).unwrap();
    assert_eq!(
        h5.matrix(&MatrixSource::X).unwrap().encoding(),
        MatrixEncoding::Dense
    );
    assert_eq!(
        h5.matrix(&MatrixSource::Raw).unwrap().encoding(),
        MatrixEncoding::Csr
    );
    let h5 = H5ad::open(dir.join("scvi_pbmc_5k_protein_v3_200cells.h5ad")).unwrap();
    let (cols, v) = h5.obsm("protein_expression").unwrap().unwrap();
    assert_eq!((cols, v.len()), (29, 29 * 200));
}
