//! The table of bad (and borderline) inputs. Every refused case is run twice, through the
//! library (exact [`ErrorKind`], message naming the file and the object) and through the CLI
//! (exit code 1, stderr naming the file and the object, no panic); both times nothing may be
//! written: the destination is exactly as before and no temporary directory is left beside it.
//! Accepted borderline cases assert the documented behaviour instead.

use std::any::Any;
use std::path::{Path, PathBuf};
use std::process::Output;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, UInt64Type};
use cellarrow::convert::{convert, resolve_inputs, ConvertOptions, ConvertSummary};
use cellarrow::corpus::{read_parquet, validate, ValueType};
use cellarrow::{Corpus, ErrorKind};

use crate::common::*;

/// What one case gives the converter.
struct Setup {
    /// Command-line inputs (h5ad files or one input manifest).
    inputs: Vec<PathBuf>,
    /// Extra CLI flags (mirrored into [`ConvertOptions`]).
    flags: Vec<String>,
    /// The destination.
    dest: PathBuf,
    /// Text the error must contain: the file (and, for h5ad errors, the object is checked
    /// separately).
    file: String,
    /// Keeps mounts and the like alive for the duration of the case.
    _guard: Option<Box<dyn Any>>,
}

impl Setup {
    fn new(inputs: Vec<PathBuf>, dest: PathBuf, file: impl Into<String>) -> Setup {
        Setup {
            inputs,
            flags: Vec::new(),
            dest,
            file: file.into(),
            _guard: None,
        }
    }
    fn flags(mut self, f: &[&str]) -> Setup {
        self.flags = f.iter().map(|s| s.to_string()).collect();
        self
    }
}

type Check = fn(&Path, &ConvertSummary, &Output);

enum Expect {
    /// Refused with this kind; the message names the file and, if given, this object.
    Refused(ErrorKind, Option<&'static str>),
    /// Converted; the check asserts the documented behaviour on the corpus.
    Accepted(Check),
}

struct Case {
    name: &'static str,
    /// `Some(file)`: the input is `<generated>/<file>.h5ad` from gen_bad.py (the Python cases).
    /// `None`: `setup` builds everything.
    generated: Option<&'static str>,
    /// Builds the case in its scratch directory (`gen` is the generated file, if any);
    /// `None` skips the case with a printed reason.
    setup: fn(&Path, Option<PathBuf>) -> Result<Setup, String>,
    expect: Expect,
}

/// A case whose input is a gen_bad.py file; its flags come from [`gen_flags`].
fn gen_case(name: &'static str, file: &'static str, expect: Expect) -> Case {
    Case {
        name,
        generated: Some(file),
        setup: |dir, gen| {
            let gen = gen.expect("generated input");
            let file = gen.file_name().unwrap().to_string_lossy().into_owned();
            Ok(Setup::new(vec![gen], dir.join("out.corpus"), file))
        },
        expect,
    }
}

/// Flags per generated case (by case name).
fn gen_flags(name: &str) -> &'static [&'static str] {
    match name {
        "gene_column_not_found" => &["--gene-column", "no_such_column"],
        "layer_not_found" => &["--layer", "no_such_layer"],
        "spatial_key_missing_with_require_spatial" => &["--require-spatial"],
        "spatial_key_with_one_column" => &["--require-spatial"],
        _ => &[],
    }
}

fn options(dest: &Path, flags: &[String]) -> ConvertOptions {
    let mut o = ConvertOptions::new(dest);
    o.threads = 2;
    let mut it = flags.iter();
    while let Some(f) = it.next() {
        match f.as_str() {
            "--require-spatial" => o.require_spatial = true,
            "--overwrite" => o.overwrite = true,
            "--gene-column" => o.gene_column = it.next().cloned(),
            "--layer" => {
                o.source = cellarrow::h5ad::MatrixSource::Layer(it.next().cloned().unwrap())
            }
            other => panic!("flag {other} is not mirrored into ConvertOptions"),
        }
    }
    o
}

fn write(path: &Path, bytes: impl AsRef<[u8]>) -> PathBuf {
    std::fs::write(path, bytes).unwrap();
    path.to_path_buf()
}

fn json_manifest(dir: &Path, records: &[(&str, &str)]) -> PathBuf {
    let recs: Vec<serde_json::Value> = records
        .iter()
        .map(|(p, id)| serde_json::json!({"path": p, "sample_id": id, "tissue": "brain"}))
        .collect();
    write(
        &dir.join("inputs.json"),
        serde_json::to_vec(&serde_json::json!({ "samples": recs })).unwrap(),
    )
}

fn small_copy(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::copy(chr21(), &p).unwrap();
    p
}

fn cases() -> Vec<Case> {
    use ErrorKind::*;
    use Expect::*;
    let mut v = vec![
        // ------------------------------------------------------------ not h5ad at all
        Case {
            name: "text_file_is_not_hdf5",
            generated: None,
            setup: |d, _| {
                let f = write(&d.join("cells.h5ad"), "cell,gene,value\n1,2,3\n".repeat(40));
                Ok(Setup::new(vec![f], d.join("out.corpus"), "cells.h5ad"))
            },
            expect: Refused(NotHdf5, None),
        },
        Case {
            name: "empty_file_is_not_hdf5",
            generated: None,
            setup: |d, _| {
                let f = write(&d.join("empty.h5ad"), b"");
                Ok(Setup::new(vec![f], d.join("out.corpus"), "empty.h5ad"))
            },
            expect: Refused(NotHdf5, None),
        },
        Case {
            name: "truncated_file_is_not_hdf5",
            generated: None,
            setup: |d, _| {
                let bytes = std::fs::read(chr21()).unwrap();
                let f = write(&d.join("truncated.h5ad"), &bytes[..bytes.len() * 6 / 10]);
                Ok(Setup::new(vec![f], d.join("out.corpus"), "truncated.h5ad"))
            },
            expect: Refused(NotHdf5, None),
        },
        Case {
            name: "hdf5_superblock_only_is_not_hdf5",
            generated: None,
            setup: |d, _| {
                let bytes = std::fs::read(chr21()).unwrap();
                let f = write(&d.join("head.h5ad"), &bytes[..96]);
                Ok(Setup::new(vec![f], d.join("out.corpus"), "head.h5ad"))
            },
            expect: Refused(NotHdf5, None),
        },
        Case {
            name: "directory_input_is_invalid",
            generated: None,
            setup: |d, _| {
                let f = d.join("sample.h5ad");
                std::fs::create_dir(&f).unwrap();
                Ok(Setup::new(vec![f], d.join("out.corpus"), "sample.h5ad"))
            },
            expect: Refused(InvalidInput, None),
        },
        Case {
            name: "missing_input_file_is_invalid",
            generated: None,
            setup: |d, _| {
                Ok(Setup::new(
                    vec![d.join("nowhere.h5ad")],
                    d.join("out.corpus"),
                    "nowhere.h5ad",
                ))
            },
            expect: Refused(InvalidInput, None),
        },
        // ------------------------------------------------------------ input lists
        Case {
            name: "two_inputs_with_the_same_sample_id_are_invalid",
            generated: None,
            setup: |d, _| {
                std::fs::create_dir(d.join("a")).unwrap();
                std::fs::create_dir(d.join("b")).unwrap();
                let a = small_copy(&d.join("a"), "brain.h5ad");
                let b = small_copy(&d.join("b"), "brain.h5ad");
                Ok(Setup::new(vec![a, b], d.join("out.corpus"), "brain"))
            },
            expect: Refused(InvalidInput, None),
        },
        Case {
            name: "manifest_with_duplicate_sample_ids_is_invalid",
            generated: None,
            setup: |d, _| {
                small_copy(d, "a.h5ad");
                small_copy(d, "b.h5ad");
                let m = json_manifest(d, &[("a.h5ad", "s1"), ("b.h5ad", "s1")]);
                Ok(Setup::new(vec![m], d.join("out.corpus"), "s1"))
            },
            expect: Refused(InvalidInput, None),
        },
        Case {
            name: "sample_id_with_a_slash_is_invalid",
            generated: None,
            setup: |d, _| {
                small_copy(d, "a.h5ad");
                let m = json_manifest(d, &[("a.h5ad", "donor/1")]);
                Ok(Setup::new(vec![m], d.join("out.corpus"), "donor/1"))
            },
            expect: Refused(InvalidInput, None),
        },
        Case {
            name: "sample_id_with_dot_dot_is_invalid",
            generated: None,
            setup: |d, _| {
                small_copy(d, "a.h5ad");
                let m = json_manifest(d, &[("a.h5ad", "../../escape")]);
                Ok(Setup::new(vec![m], d.join("out.corpus"), "../../escape"))
            },
            expect: Refused(InvalidInput, None),
        },
        Case {
            name: "csv_sample_id_with_a_backslash_is_invalid",
            generated: None,
            setup: |d, _| {
                small_copy(d, "a.h5ad");
                let m = write(&d.join("inputs.csv"), "path,sample_id\na.h5ad,a\\b\n");
                Ok(Setup::new(vec![m], d.join("out.corpus"), "a\\\\b"))
            },
            expect: Refused(InvalidInput, None),
        },
        Case {
            name: "input_manifest_naming_a_missing_file_is_invalid",
            generated: None,
            setup: |d, _| {
                small_copy(d, "a.h5ad");
                let m = json_manifest(d, &[("a.h5ad", "a"), ("gone.h5ad", "b")]);
                // The error names the manifest; the message names the missing file.
                Ok(Setup::new(vec![m], d.join("out.corpus"), "gone.h5ad"))
            },
            expect: Refused(InvalidInput, Some("inputs.json")),
        },
        Case {
            name: "input_manifest_that_is_not_json_is_invalid",
            generated: None,
            setup: |d, _| {
                let m = write(&d.join("inputs.json"), "{\"samples\": [ {\"path\": ");
                Ok(Setup::new(vec![m], d.join("out.corpus"), "inputs.json"))
            },
            expect: Refused(InvalidInput, None),
        },
        Case {
            name: "empty_input_manifest_is_invalid",
            generated: None,
            setup: |d, _| {
                let m = write(&d.join("inputs.csv"), "path,sample_id\n");
                Ok(Setup::new(vec![m], d.join("out.corpus"), "inputs.csv"))
            },
            expect: Refused(InvalidInput, None),
        },
        // ------------------------------------------------------------ destinations
        Case {
            name: "existing_corpus_destination_is_refused_and_untouched",
            generated: None,
            setup: |d, _| {
                let dest = d.join("existing.corpus");
                convert(&resolve_inputs(&[chr21()]).unwrap(), &options(&dest, &[])).unwrap();
                let f = small_copy(d, "new.h5ad");
                Ok(Setup::new(vec![f], dest, "existing.corpus"))
            },
            expect: Refused(DestinationExists, None),
        },
        Case {
            name: "existing_non_corpus_directory_is_never_replaced",
            generated: None,
            setup: |d, _| {
                let dest = d.join("results");
                std::fs::create_dir(&dest).unwrap();
                write(&dest.join("notes.txt"), "precious");
                let f = small_copy(d, "new.h5ad");
                Ok(Setup::new(vec![f], dest, "results").flags(&["--overwrite"]))
            },
            expect: Refused(DestinationExists, None),
        },
        Case {
            name: "existing_regular_file_destination_is_refused",
            generated: None,
            setup: |d, _| {
                let dest = write(&d.join("out.corpus"), "not a directory");
                let f = small_copy(d, "new.h5ad");
                Ok(Setup::new(vec![f], dest, "out.corpus"))
            },
            expect: Refused(DestinationExists, None),
        },
        Case {
            name: "destination_under_a_regular_file_is_an_io_error",
            generated: None,
            setup: |d, _| {
                write(&d.join("plain"), "x");
                let f = small_copy(d, "new.h5ad");
                Ok(Setup::new(vec![f], d.join("plain/out.corpus"), "plain"))
            },
            expect: Refused(Io, None),
        },
        Case {
            name: "destination_not_writable_is_an_io_error",
            generated: None,
            setup: |d, _| {
                let f = small_copy(d, "new.h5ad");
                let ro = d.join("readonly");
                let guard: Box<dyn Any> = if is_root() {
                    // Permission bits do not stop root: use a read-only mount.
                    Box::new(mount_tmpfs(&ro, "ro,size=1m")?)
                } else {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::create_dir(&ro).unwrap();
                    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
                    Box::new(())
                };
                let mut s = Setup::new(vec![f], ro.join("out.corpus"), "readonly");
                s._guard = Some(guard);
                Ok(s)
            },
            expect: Refused(Io, None),
        },
        Case {
            name: "disk_full_is_an_io_error_and_leaves_nothing",
            generated: None,
            setup: |d, _| {
                let small = d.join("small");
                let guard = mount_tmpfs(&small, "size=2m")?;
                // Two samples of ~3 MB of matrix each: the 2 MiB file system fills up.
                let recs: Vec<(String, String)> = (0..2)
                    .map(|i| (mouse().display().to_string(), format!("mouse{i}")))
                    .collect();
                let recs: Vec<(&str, &str)> =
                    recs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
                let m = json_manifest(d, &recs);
                let mut s = Setup::new(vec![m], small.join("out.corpus"), "small");
                s._guard = Some(Box::new(guard));
                Ok(s)
            },
            expect: Refused(Io, None),
        },
    ];

    // ---------------------------------------------------------------- generated with anndata/h5py
    let generated: Vec<(&'static str, &'static str, Expect)> = vec![
        (
            "missing_x_is_invalid",
            "missing_x",
            Refused(InvalidH5ad, Some("/X")),
        ),
        (
            "x_of_unknown_encoding_is_unsupported",
            "x_unknown_encoding",
            Refused(Unsupported, Some("/X")),
        ),
        (
            "x_of_strings_is_unsupported",
            "x_strings",
            Refused(Unsupported, Some("/X")),
        ),
        (
            "indptr_not_monotone_is_invalid",
            "indptr_not_monotone",
            Refused(InvalidH5ad, Some("/X/indptr")),
        ),
        (
            "indptr_of_wrong_length_is_invalid",
            "indptr_short",
            Refused(InvalidH5ad, Some("/X/indptr")),
        ),
        (
            "indices_out_of_range_are_invalid",
            "indices_out_of_range",
            Refused(InvalidH5ad, Some("/X/indices")),
        ),
        (
            "csc_row_indices_out_of_range_are_invalid",
            "csc_row_out_of_range",
            Refused(InvalidH5ad, Some("/X/indices")),
        ),
        (
            "shape_attribute_disagreeing_with_data_is_invalid",
            "shape_mismatch",
            Refused(InvalidH5ad, Some("/X")),
        ),
        (
            "nan_values_are_invalid",
            "nan_values",
            Refused(InvalidH5ad, Some("/X")),
        ),
        (
            "infinite_values_are_invalid",
            "inf_values",
            Refused(InvalidH5ad, Some("/X")),
        ),
        (
            "duplicate_genes_are_an_error",
            "duplicate_genes",
            Refused(InvalidInput, Some("var")),
        ),
        (
            "empty_var_is_invalid",
            "empty_var",
            Refused(InvalidH5ad, Some("var")),
        ),
        (
            "zero_cells_are_invalid",
            "zero_cells",
            Refused(InvalidH5ad, Some("/X")),
        ),
        (
            "gene_column_not_found",
            "base",
            Refused(InvalidInput, Some("no_such_column")),
        ),
        (
            "layer_not_found",
            "base",
            Refused(InvalidH5ad, Some("/layers/no_such_layer")),
        ),
        (
            "spatial_key_missing_with_require_spatial",
            "no_spatial",
            Refused(InvalidH5ad, Some("obsm/spatial")),
        ),
        (
            "spatial_key_with_one_column",
            "spatial_one_column",
            Refused(InvalidH5ad, Some("obsm/spatial")),
        ),
        (
            "obs_column_of_complex_dtype_is_unsupported",
            "obs_complex_column",
            Refused(Unsupported, Some("/obs/phase")),
        ),
        (
            "obs_column_of_unknown_encoding_is_unsupported",
            "obs_unknown_encoding",
            Refused(Unsupported, Some("/obs/cell_type")),
        ),
        (
            "categorical_code_out_of_range_is_invalid",
            "categorical_code_out_of_range",
            Refused(InvalidH5ad, Some("/obs/cell_type")),
        ),
        (
            "unknown_compression_filter_is_unsupported",
            "unknown_filter",
            Refused(Unsupported, Some("/X/data")),
        ),
        (
            "unsorted_indices_are_sorted",
            "unsorted_indices",
            Accepted(unsorted_indices_are_sorted),
        ),
        (
            "duplicate_indices_are_summed_with_a_warning",
            "duplicate_indices",
            Accepted(duplicate_indices_are_summed),
        ),
        (
            "negative_values_are_stored_as_floats",
            "negative_values",
            Accepted(negative_values_are_stored),
        ),
        (
            "duplicate_obs_names_are_kept",
            "duplicate_obs",
            Accepted(duplicate_obs_names_are_kept),
        ),
        (
            "spatial_nan_rows_are_kept_last",
            "spatial_nan_rows",
            Accepted(spatial_nan_rows_are_kept_last),
        ),
        ("lzf_is_read", "lzf", Accepted(lzf_equals_gzip)),
    ];
    for (name, file, expect) in generated {
        v.push(gen_case(name, file, expect));
    }
    v
}

// -------------------------------------------------------------------- accepted cases

fn row(c: &Corpus, cell: u64) -> (Vec<u32>, Vec<f64>) {
    (c.indices(cell).to_u32_vec(), c.values(cell).to_f64_vec())
}

/// Row i of gen_bad.py's base matrix.
fn base_row(i: u64) -> (Vec<u32>, Vec<f64>) {
    let mut r = [
        ((i % 10) as u32, (i + 1) as f64),
        (((i + 3) % 10) as u32, 2.0),
    ];
    r.sort_by_key(|e| e.0);
    (
        r.iter().map(|e| e.0).collect(),
        r.iter().map(|e| e.1).collect(),
    )
}

fn unsorted_indices_are_sorted(dir: &Path, s: &ConvertSummary, _: &Output) {
    let c = Corpus::open(dir).unwrap();
    assert_eq!(row(&c, 0), (vec![0, 3], vec![1.0, 2.0]));
    for i in 1..20 {
        assert_eq!(row(&c, i), base_row(i), "cell {i}");
    }
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
}

fn duplicate_indices_are_summed(dir: &Path, s: &ConvertSummary, cli: &Output) {
    let c = Corpus::open(dir).unwrap();
    // Row 0 held column 0 twice (1 and 2).
    assert_eq!(row(&c, 0), (vec![0], vec![3.0]));
    assert_eq!(c.nnz(), 39);
    assert!(
        s.warnings.iter().any(|w| w.contains("summed")),
        "no warning: {:?}",
        s.warnings
    );
    let err = stderr(cli);
    assert!(err.contains("warning") && err.contains("summed"), "{err}");
}

fn negative_values_are_stored(dir: &Path, s: &ConvertSummary, _: &Output) {
    // Nothing in an h5ad declares counts: a negative value is data, stored exactly as float.
    assert_eq!(s.value_type, ValueType::Float32);
    let c = Corpus::open(dir).unwrap();
    assert_eq!(row(&c, 1), (vec![1, 4], vec![-3.0, 2.0]));
}

fn obs_column(dir: &Path, name: &str) -> Vec<String> {
    let batches = read_parquet(&dir.join("obs/part-00000.parquet"), Some(&[name])).unwrap();
    batches
        .iter()
        .flat_map(|b| {
            let a = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
            let s = a.as_string::<i32>().clone();
            (0..s.len())
                .map(|i| {
                    if s.is_null(i) {
                        "null".into()
                    } else {
                        s.value(i).to_string()
                    }
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn duplicate_obs_names_are_kept(dir: &Path, s: &ConvertSummary, _: &Output) {
    // Cells are identified by their global id; obs names are kept as given.
    assert_eq!(s.n_cells, 20);
    let names = obs_column(dir, "obs_name");
    assert_eq!(names.iter().filter(|n| *n == "cell0").count(), 4);
    let cells = obs_column(dir, "cell");
    let want: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    assert_eq!(cells, want);
}

fn spatial_nan_rows_are_kept_last(dir: &Path, s: &ConvertSummary, _: &Output) {
    // Cells with a non-finite coordinate are kept, stored after the cells with coordinates,
    // with the NaN kept in x/y; source_row links them to the file.
    assert_eq!(s.n_cells, 20);
    let b = &read_parquet(
        &dir.join("obs/part-00000.parquet"),
        Some(&["source_row", "x", "y"]),
    )
    .unwrap()[0];
    let rows = b.column(0).as_primitive::<UInt64Type>();
    let x = b.column(1).as_primitive::<Float64Type>();
    let y = b.column(2).as_primitive::<Float64Type>();
    assert_eq!(rows.value(18), 3);
    assert_eq!(rows.value(19), 11);
    assert!(x.value(18).is_nan() && y.value(18).is_nan());
    assert_eq!(x.value(19), 11.0);
    assert!(y.value(19).is_nan());
    for i in 0..18 {
        assert!(x.value(i).is_finite() && y.value(i).is_finite(), "cell {i}");
    }
    let c = Corpus::open(dir).unwrap();
    assert_eq!(row(&c, 18), base_row(3));
}

fn lzf_equals_gzip(dir: &Path, _: &ConvertSummary, _: &Output) {
    let c = Corpus::open(dir).unwrap();
    assert_eq!(c.n_cells(), 20);
    for i in 0..20 {
        assert_eq!(row(&c, i), base_row(i), "cell {i}");
    }
    // The same data written with gzip gives the same matrix part.
    let gz = generated().unwrap().join("gzip.h5ad");
    let other = dir.with_file_name("gzip.corpus");
    convert(&resolve_inputs(&[gz]).unwrap(), &options(&other, &[])).unwrap();
    let a = std::fs::read(dir.join("matrix/part-00000.arrow")).unwrap();
    let b = std::fs::read(other.join("matrix/part-00000.arrow")).unwrap();
    assert_eq!(a, b);
}

// -------------------------------------------------------------------- the driver

fn state(dest: &Path) -> (bool, Vec<(String, Vec<u8>)>) {
    (dest.exists(), snapshot(dest))
}

fn run_case(case: &Case, root: &Path) -> Result<(), String> {
    let dir = root.join(case.name);
    std::fs::create_dir_all(&dir).unwrap();
    let gen = match case.generated {
        Some(f) => match generated() {
            Some(g) => Some(g.join(format!("{f}.h5ad"))),
            None => return Ok(()),
        },
        None => None,
    };
    let mut setup = match (case.setup)(&dir, gen) {
        Ok(s) => s,
        Err(reason) => {
            eprintln!("skipping {}: {reason}", case.name);
            return Ok(());
        }
    };
    if case.generated.is_some() {
        setup.flags = gen_flags(case.name).iter().map(|s| s.to_string()).collect();
    }
    let fail = |msg: String| Err(format!("{}: {msg}", case.name));
    let before = state(&setup.dest);
    let opts = options(&setup.dest, &setup.flags);
    let lib = resolve_inputs(&setup.inputs).and_then(|i| convert(&i, &opts));

    let mut cli_args: Vec<std::ffi::OsString> = vec!["convert".into(), "-q".into()];
    cli_args.extend(setup.inputs.iter().map(|p| p.clone().into_os_string()));
    cli_args.extend(setup.flags.iter().map(Into::into));
    cli_args.extend(["--threads".into(), "2".into(), "-o".into()]);

    match &case.expect {
        Expect::Refused(kind, object) => {
            let err = match lib {
                Ok(_) => return fail("the library accepted a bad input".into()),
                Err(e) => e,
            };
            let msg = err.to_string();
            if err.kind() != *kind {
                return fail(format!("kind {:?}, expected {kind:?}: {msg}", err.kind()));
            }
            if !msg.contains(&setup.file) {
                return fail(format!("the error does not name {:?}: {msg}", setup.file));
            }
            if err.path().is_none() {
                return fail(format!("the error carries no path: {msg}"));
            }
            if let Some(o) = object {
                if !msg.contains(o) {
                    return fail(format!("the error does not name the object {o:?}: {msg}"));
                }
            }
            if state(&setup.dest) != before {
                return fail("the library wrote to the destination".into());
            }
            if !leftovers(&setup.dest).is_empty() {
                return fail(format!("library left {:?}", leftovers(&setup.dest)));
            }

            cli_args.push(setup.dest.clone().into_os_string());
            let out = cli(&cli_args);
            let err = stderr(&out);
            if err.contains("panicked at") {
                return fail(format!("the CLI panicked: {err}"));
            }
            if out.status.code() != Some(1) {
                return fail(format!("CLI exit {:?}, expected 1: {err}", out.status));
            }
            for want in std::iter::once(setup.file.as_str()).chain(*object) {
                if !err.contains(want) {
                    return fail(format!("CLI stderr does not name {want:?}: {err}"));
                }
            }
            if state(&setup.dest) != before {
                return fail("the CLI wrote to the destination".into());
            }
            if !leftovers(&setup.dest).is_empty() {
                return fail(format!("CLI left {:?}", leftovers(&setup.dest)));
            }
        }
        Expect::Accepted(check) => {
            let summary = match lib {
                Ok(s) => s,
                Err(e) => return fail(format!("the library refused: {e}")),
            };
            validate(&setup.dest).map_err(|e| format!("{}: invalid corpus: {e}", case.name))?;
            let cli_dest = dir.join("cli.corpus");
            cli_args.retain(|a| a != "-q");
            cli_args.push(cli_dest.clone().into_os_string());
            let out = cli(&cli_args);
            if !out.status.success() {
                return fail(format!("the CLI refused: {}", stderr(&out)));
            }
            let a = std::fs::read(setup.dest.join("matrix/part-00000.arrow")).unwrap();
            let b = std::fs::read(cli_dest.join("matrix/part-00000.arrow")).unwrap();
            if a != b {
                return fail("the CLI and the library wrote different matrices".into());
            }
            let dest = setup.dest.clone();
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                check(&dest, &summary, &out)
            }))
            .map_err(|p| {
                let m = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                format!("{}: {m}", case.name)
            })?;
        }
    }
    Ok(())
}

#[test]
fn the_table_has_at_least_thirty_cases() {
    let cases = cases();
    assert!(cases.len() >= 30, "{} cases", cases.len());
    let mut names: Vec<_> = cases.iter().map(|c| c.name).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), cases.len(), "case names are unique");
}

fn run_all(filter: impl Fn(&Case) -> bool) {
    let root = scratch("bad");
    let mut failures = Vec::new();
    let mut ran = 0;
    for case in cases().iter().filter(|c| filter(c)) {
        ran += 1;
        if let Err(e) = run_case(case, root.path()) {
            failures.push(e);
        }
    }
    assert!(ran > 0);
    assert!(
        failures.is_empty(),
        "{} of {ran} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Inputs written from Rust: files that are not h5ad, input lists, destinations.
#[test]
fn bad_inputs_written_in_rust() {
    run_all(|c| c.generated.is_none());
}

/// Inputs written with the real anndata and h5py packages.
#[test]
fn bad_h5ad_written_with_anndata() {
    run_all(|c| c.generated.is_some());
}
