use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int32Array, ListArray, UInt16Array, UInt64Array};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;

use super::testing::{
    random_rows, rehash, write_corpus, write_corpus_with, Row, TestCorpusOptions,
};
use super::*;
use crate::error::ErrorKind;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

fn small_rows() -> Vec<Row> {
    random_rows(23, 50, 0.2, 7)
}

/// 23 cells in samples a (10), b (0), c (13): with 4-row batches and 8-cell parts.
fn small_corpus(dir: &Path) -> Manifest {
    write_corpus(dir, 50, &small_rows(), &[("a", 10), ("b", 0), ("c", 13)]).expect("write corpus")
}

fn assert_invalid<T>(r: Result<T, crate::Error>, needle: &str) -> crate::Error {
    match r {
        Ok(_) => panic!("expected an InvalidCorpus error containing {needle:?}, got Ok"),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::InvalidCorpus, "{e}");
            assert!(
                e.to_string().contains(needle),
                "error {e:?} does not contain {needle:?}"
            );
            e
        }
    }
}

fn edit_manifest(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join(MANIFEST_FILE);
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

#[test]
fn sha256_known_vector() {
    let d = tmp();
    let p = d.path().join("abc");
    std::fs::write(&p, b"abc").unwrap();
    let (hex, n) = sha256_file(&p).unwrap();
    assert_eq!(n, 3);
    assert_eq!(
        hex,
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn narrowest_types() {
    assert_eq!(ValueType::narrowest([1.0, 65535.0]), ValueType::Uint16);
    assert_eq!(ValueType::narrowest([1.0, 65536.0]), ValueType::Uint32);
    assert_eq!(ValueType::narrowest([1.0, 0.5]), ValueType::Float32);
    assert_eq!(ValueType::narrowest([-1.0]), ValueType::Float32);
    assert_eq!(ValueType::narrowest([0.1]), ValueType::Float64);
    assert_eq!(IndexType::for_genes(65536), IndexType::Uint16);
    assert_eq!(IndexType::for_genes(65537), IndexType::Uint32);
}

#[test]
fn roundtrip_every_index_and_value_type() {
    let rows = small_rows();
    for it in [IndexType::Uint16, IndexType::Uint32] {
        for vt in [
            ValueType::Uint16,
            ValueType::Uint32,
            ValueType::Float32,
            ValueType::Float64,
        ] {
            let mut rows = rows.clone();
            if vt == ValueType::Float32 {
                rows.iter_mut()
                    .for_each(|r| r.1.iter_mut().for_each(|v| *v += 0.5));
            }
            if vt == ValueType::Float64 {
                rows.iter_mut()
                    .for_each(|r| r.1.iter_mut().for_each(|v| *v += 0.1));
            }
            let d = tmp();
            let opts = TestCorpusOptions {
                index_type: Some(it),
                value_type: Some(vt),
                ..Default::default()
            };
            let m = write_corpus_with(
                d.path(),
                50,
                &rows,
                &[("a", 10), ("b", 0), ("c", 13)],
                &opts,
            )
            .unwrap();
            assert_eq!(m.matrix.parts.len(), 4, "10 cells -> 8 + 2, 13 -> 8 + 5");
            let c = Corpus::open(d.path()).unwrap();
            assert_eq!(c.n_cells(), 23);
            for (cell, (idx, val)) in rows.iter().enumerate() {
                let cell = cell as u64;
                assert_eq!(&c.indices(cell).to_u32_vec(), idx);
                assert_eq!(&c.values(cell).to_f64_vec(), val);
                assert_eq!(c.row_nnz(cell), idx.len());
                match (c.indices(cell), it) {
                    (Indices::U16(_), IndexType::Uint16) | (Indices::U32(_), IndexType::Uint32) => {
                    }
                    _ => panic!("index type"),
                }
                let ok = matches!(
                    (c.values(cell), vt),
                    (Values::U16(_), ValueType::Uint16)
                        | (Values::U32(_), ValueType::Uint32)
                        | (Values::F32(_), ValueType::Float32)
                        | (Values::F64(_), ValueType::Float64)
                );
                assert!(ok, "value type");
            }
            // Batches never cross parts and hold at most batch_rows cells.
            assert!((0..c.n_batches()).all(|i| {
                let n = c.batch(i).unwrap().n_cells();
                n <= 4 && n > 0 && n == c.batch_cells(i).count()
            }));
            let rb = c.matrix_record_batches().unwrap();
            assert_eq!(rb.iter().map(|b| b.num_rows()).sum::<usize>(), 23);
            let report = validate(d.path()).unwrap();
            assert_eq!(report.files_checked, 4 + 3);
            assert_eq!(report.cells_checked, 23);
            assert_eq!(report.nnz_checked, m.nnz);
        }
    }
}

#[test]
fn empty_corpus_and_empty_rows() {
    let d = tmp();
    let rows: Vec<Row> = vec![(vec![], vec![]); 3];
    write_corpus(d.path(), 5, &rows, &[("a", 3)]).unwrap();
    let c = Corpus::open(d.path()).unwrap();
    assert_eq!(c.row_nnz(2), 0);
    assert!(c.indices(1).is_empty());
    validate(d.path()).unwrap();

    let d = tmp();
    write_corpus(d.path(), 5, &[], &[]).unwrap();
    let c = Corpus::open(d.path()).unwrap();
    assert_eq!(c.n_cells(), 0);
    assert_eq!(c.n_batches(), 0);
    validate(d.path()).unwrap();
}

#[test]
fn locate_across_batches_and_parts() {
    let d = tmp();
    small_corpus(d.path());
    let c = Corpus::open(d.path()).unwrap();
    let mut cell = 0u64;
    for bi in 0..c.n_batches() {
        let b = c.batch(bi).unwrap();
        assert_eq!(b.first_cell(), cell);
        for r in 0..b.n_cells() {
            assert_eq!(c.locate(cell), CellLocation { batch: bi, row: r });
            cell += 1;
        }
    }
    assert_eq!(cell, 23);
}

#[test]
#[should_panic(expected = "out of range")]
fn cell_out_of_range_panics() {
    let d = tmp();
    small_corpus(d.path());
    let c = Corpus::open(d.path()).unwrap();
    c.indices(23);
}

#[test]
fn zero_copy_buffers_lie_in_the_mapping() {
    let d = tmp();
    small_corpus(d.path());
    let c = Corpus::open(d.path()).unwrap();
    assert!(c.n_batches() > 0);
    for bi in 0..c.n_batches() {
        let b = c.batch(bi).unwrap();
        assert!(
            matches!(b, crate::corpus::BatchRef::Mapped(_)),
            "hot batches are views"
        );
        let map = &c.matrix.maps[b.part()];
        let range = map.as_ptr() as usize..map.as_ptr() as usize + map.len();
        for col in 0..2 {
            let list: &ListArray = reader::list_column(&b, col);
            let child = list.values().to_data();
            let vp = child.buffers()[0].as_ptr() as usize;
            let op = list.offsets().inner().inner().as_ptr() as usize;
            assert!(
                range.contains(&vp),
                "child buffer {vp:#x} outside mapping {range:x?}"
            );
            assert!(range.contains(&op), "offsets buffer outside mapping");
        }
        // The slices handed out per cell view the same memory.
        if let Values::U16(v) = c.values(b.first_cell()) {
            assert!(range.contains(&(v.as_ptr() as usize)));
        }
    }
}

#[test]
fn batches_split_before_2_pow_31_nnz() {
    let d = tmp();
    let p = d.path().join("part.arrow");
    let mut w = PartWriter::create(&p, IndexType::Uint16, ValueType::Uint16, 100).unwrap();
    w.set_max_batch_nnz(20);
    let rows = random_rows(30, 20, 0.3, 3);
    let mut indptr = vec![0u64];
    let (mut idx, mut val) = (vec![], vec![]);
    for r in &rows {
        idx.extend_from_slice(&r.0);
        val.extend_from_slice(&r.1);
        indptr.push(idx.len() as u64);
    }
    w.push(&indptr, &idx, &val).unwrap();
    let s = w.finish().unwrap();
    assert_eq!(s.n_cells, 30);
    let f = std::fs::File::open(&p).unwrap();
    let reader = arrow::ipc::reader::StreamReader::try_new(f, None).unwrap();
    let (mut total, mut batches) = (0, 0);
    for b in reader {
        let b = b.unwrap();
        let l = b.column(0).as_list::<i32>();
        let nnz = l.value_offsets()[b.num_rows()] - l.value_offsets()[0];
        assert!(nnz <= 20, "batch of {nnz} nnz");
        total += b.num_rows();
        batches += 1;
    }
    assert_eq!(total, 30);
    assert!(batches > 3, "the nnz limit, not batch_rows, split the part");
}

#[test]
fn part_writer_refuses_bad_input() {
    let d = tmp();
    let p = d.path().join("p.arrow");
    let mut w = PartWriter::create(&p, IndexType::Uint16, ValueType::Uint16, 4).unwrap();
    assert!(
        w.push(&[0, 2], &[3, 3], &[1.0, 1.0]).is_err(),
        "not strictly increasing"
    );
    assert!(w.push(&[0, 1], &[70000], &[1.0]).is_err(), "u16 overflow");
    assert!(w.push(&[1, 2], &[3], &[1.0]).is_err(), "indptr[0] != 0");
    assert!(w.push(&[0, 2], &[3], &[1.0]).is_err(), "indptr end");
    drop(w);
    let e = PartWriter::create(&p, IndexType::Uint16, ValueType::Uint16, 4)
        .err()
        .expect("refuses overwrite");
    assert_eq!(e.kind(), ErrorKind::Io);
}

#[test]
fn parquet_keeps_dictionaries_and_projects_in_order() {
    let d = tmp();
    small_corpus(d.path());
    let c = Corpus::open(d.path()).unwrap();
    let obs = c.read_table("obs", None).unwrap();
    assert!(matches!(
        obs[0]
            .schema()
            .field_with_name("sample_id")
            .unwrap()
            .data_type(),
        DataType::Dictionary(..)
    ));
    let proj = c.read_table("obs", Some(&["total", "cell"])).unwrap();
    assert_eq!(proj[0].schema().field(0).name(), "total");
    assert_eq!(proj[0].schema().field(1).name(), "cell");
    assert_eq!(proj.iter().map(|b| b.num_rows()).sum::<usize>(), 23);
    let e = c.read_table("obs", Some(&["nope"])).unwrap_err();
    assert!(e.to_string().contains("nope"));
    let names = c.gene_names().unwrap();
    assert_eq!(names.len(), 50);
    assert_eq!(names[7], "gene7");
    assert!(c.read_table("../obs", None).is_err());
}

#[test]
fn parquet_row_groups_of_64ki() {
    let d = tmp();
    let p = d.path().join("t.parquet");
    let b = RecordBatch::try_from_iter([(
        "cell",
        Arc::new(UInt64Array::from_iter_values(0..70_000)) as ArrayRef,
    )])
    .unwrap();
    write_parquet(&p, &[b]).unwrap();
    let f = std::fs::File::open(&p).unwrap();
    let builder =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f).unwrap();
    let md = builder.metadata();
    assert_eq!(md.num_row_groups(), 2);
    assert_eq!(md.row_group(0).num_rows(), 65536);
    assert_eq!(
        md.row_group(0).column(0).compression(),
        parquet::basic::Compression::ZSTD(Default::default())
    );
}

#[test]
fn manifest_roundtrip_and_schema() {
    let d = tmp();
    let m = small_corpus(d.path());
    let r = Manifest::read(d.path()).unwrap();
    assert_eq!(m, r);
    let v: serde_json::Value = serde_json::from_str(MANIFEST_SCHEMA).unwrap();
    assert_eq!(v["$schema"], "https://json-schema.org/draft/2020-12/schema");
}

#[test]
fn rejects_newer_format_version() {
    let d = tmp();
    small_corpus(d.path());
    edit_manifest(d.path(), |v| v["format_version"] = 3.into());
    let e = assert_invalid(
        Corpus::open(d.path()),
        "format_version 3 is newer than this cellarrow reads (2)",
    );
    assert!(e.path().unwrap().ends_with("manifest.json"));
    edit_manifest(d.path(), |v| {
        v["format_version"] = 1.into();
        v["format"] = "other".into();
    });
    assert_invalid(Corpus::open(d.path()), "format is \"other\"");
}

#[test]
fn rejects_schema_violations() {
    let d = tmp();
    small_corpus(d.path());
    edit_manifest(d.path(), |v| v["index_type"] = "int8".into());
    assert_invalid(Corpus::open(d.path()), "schema");
    small_corpus_fix(d.path(), |v| {
        v.as_object_mut().unwrap().remove("n_cells");
    });
    assert_invalid(Corpus::open(d.path()), "n_cells");
    small_corpus_fix(d.path(), |v| v["files"][0]["sha256"] = "XYZ".into());
    assert_invalid(Corpus::open(d.path()), "schema");
}

/// Resets the manifest from a freshly written corpus in a sibling dir, then edits it.
fn small_corpus_fix(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let other = tmp();
    small_corpus(other.path());
    std::fs::copy(other.path().join(MANIFEST_FILE), dir.join(MANIFEST_FILE)).unwrap();
    edit_manifest(dir, f);
}

#[test]
fn rejects_unsafe_paths() {
    for bad in [
        "../x",
        "/etc/passwd",
        "matrix/../obs.parquet",
        "a\\b",
        "./obs.parquet",
        "a//b",
    ] {
        let d = tmp();
        small_corpus(d.path());
        edit_manifest(d.path(), |v| v["files"][0]["path"] = bad.into());
        let e = Corpus::open(d.path()).err().expect("refused");
        assert_eq!(e.kind(), ErrorKind::InvalidCorpus, "{bad}: {e}");
        assert!(check_rel_path(bad).is_err(), "{bad}");
    }
    let d = tmp();
    small_corpus(d.path());
    edit_manifest(d.path(), |v| {
        v["matrix"]["parts"][0]["path"] = "../x".into()
    });
    assert_invalid(Corpus::open(d.path()), "");
}

#[cfg(unix)]
#[test]
fn rejects_symlink_leaving_the_corpus() {
    let outside = tmp();
    let d = tmp();
    small_corpus(d.path());
    let target = outside.path().join("genes.parquet");
    std::fs::rename(d.path().join("genes.parquet"), &target).unwrap();
    std::os::unix::fs::symlink(&target, d.path().join("genes.parquet")).unwrap();
    assert_invalid(Corpus::open(d.path()), "outside the corpus directory");
    assert_invalid(validate(d.path()), "outside the corpus directory");
}

#[test]
fn rejects_wrong_file_size_and_missing_file() {
    let d = tmp();
    small_corpus(d.path());
    let p = d.path().join("obs.parquet");
    let mut bytes = std::fs::read(&p).unwrap();
    bytes.push(0);
    std::fs::write(&p, &bytes).unwrap();
    let e = assert_invalid(Corpus::open(d.path()), "bytes, manifest.json says");
    assert!(e.path().unwrap().ends_with("obs.parquet"));

    let d = tmp();
    small_corpus(d.path());
    std::fs::remove_file(d.path().join("matrix/part-00001.arrow")).unwrap();
    assert_invalid(Corpus::open(d.path()), "missing");
    assert_invalid(validate(d.path()), "missing");
}

#[test]
fn validate_checksum_extra_and_missing() {
    let d = tmp();
    small_corpus(d.path());
    validate(d.path()).unwrap();
    let p = d.path().join("genes.parquet");
    let mut b = std::fs::read(&p).unwrap();
    b[10] ^= 1;
    std::fs::write(&p, &b).unwrap();
    let e = assert_invalid(validate(d.path()), "sha256 mismatch");
    assert!(e.path().unwrap().ends_with("genes.parquet"));
    // Opening does not hash.
    b[10] ^= 1;
    std::fs::write(&p, &b).unwrap();
    std::fs::write(d.path().join("matrix/stray.arrow"), b"x").unwrap();
    assert_invalid(validate(d.path()), "extra file");
}

/// Replaces part `k` of the corpus with a stream written straight through arrow.
fn replace_part(dir: &Path, k: usize, schema: Arc<Schema>, cols: Vec<ArrayRef>) {
    let p = dir.join(format!("matrix/part-{k:05}.arrow"));
    let f = std::fs::File::create(&p).unwrap();
    let mut w = StreamWriter::try_new(f, &schema).unwrap();
    w.write(&RecordBatch::try_new(schema.clone(), cols).unwrap())
        .unwrap();
    w.finish().unwrap();
    rehash(dir).unwrap();
}

fn list(offsets: Vec<i32>, child: ArrayRef) -> ArrayRef {
    let field = Arc::new(Field::new("item", child.data_type().clone(), false));
    Arc::new(ListArray::new(
        field,
        OffsetBuffer::new(offsets.into()),
        child,
        None,
    ))
}

/// 3 cells in one part, u16 gene ids and values, n_genes 10.
fn three_cell_corpus(dir: &Path) {
    let rows: Vec<Row> = vec![
        (vec![1, 2], vec![1.0, 2.0]),
        (vec![3], vec![3.0]),
        (vec![4, 5], vec![4.0, 5.0]),
    ];
    write_corpus(dir, 10, &rows, &[("a", 3)]).unwrap();
}

#[test]
fn validate_structure_failures() {
    let schema = part_schema(IndexType::Uint16, ValueType::Uint16);
    let u16s = |v: Vec<u16>| Arc::new(UInt16Array::from(v)) as ArrayRef;

    // Not strictly increasing gene ids: cell 1.
    let d = tmp();
    three_cell_corpus(d.path());
    replace_part(
        d.path(),
        0,
        schema.clone(),
        vec![
            list(vec![0, 2, 4, 5], u16s(vec![1, 2, 3, 3, 4])),
            list(vec![0, 2, 4, 5], u16s(vec![1, 2, 3, 3, 4])),
        ],
    );
    let e = assert_invalid(
        validate(d.path()),
        "cell 1: gene indices not strictly increasing",
    );
    assert!(e.path().unwrap().ends_with("part-00000.arrow"));

    // Gene id >= n_genes: cell 2.
    let d = tmp();
    three_cell_corpus(d.path());
    replace_part(
        d.path(),
        0,
        schema.clone(),
        vec![
            list(vec![0, 2, 3, 5], u16s(vec![1, 2, 3, 4, 10])),
            list(vec![0, 2, 3, 5], u16s(vec![1, 2, 3, 4, 5])),
        ],
    );
    assert_invalid(validate(d.path()), "cell 2: gene index 10 >= n_genes 10");

    // Different offsets for indices and values: cell 0.
    let d = tmp();
    three_cell_corpus(d.path());
    replace_part(
        d.path(),
        0,
        schema.clone(),
        vec![
            list(vec![0, 2, 3, 5], u16s(vec![1, 2, 3, 4, 5])),
            list(vec![0, 1, 3, 5], u16s(vec![1, 2, 3, 4, 5])),
        ],
    );
    assert_invalid(validate(d.path()), "different list offsets");

    // Wrong schema: Int32 gene ids.
    let d = tmp();
    three_cell_corpus(d.path());
    let bad_schema = Arc::new(Schema::new(vec![
        Field::new(
            "indices",
            DataType::List(Arc::new(Field::new("item", DataType::Int32, false))),
            false,
        ),
        schema.field(1).clone(),
    ]));
    replace_part(
        d.path(),
        0,
        bad_schema,
        vec![
            list(
                vec![0, 2, 3, 5],
                Arc::new(Int32Array::from(vec![1, 2, 3, 4, 5])),
            ),
            list(vec![0, 2, 3, 5], u16s(vec![1, 2, 3, 4, 5])),
        ],
    );
    assert_invalid(
        Corpus::open(d.path()),
        "matrix part schema is (indices: List<Int32>",
    );
    assert_invalid(validate(d.path()), "matrix part schema");

    // Per-part count differs from the manifest (consistent manifest, wrong part).
    let d = tmp();
    small_corpus(d.path());
    edit_manifest(d.path(), |v| {
        let parts = v["matrix"]["parts"].as_array_mut().unwrap();
        parts[0]["n_cells"] = 7.into();
        parts[1]["first_cell"] = 7.into();
        parts[1]["n_cells"] = 3.into();
    });
    assert_invalid(validate(d.path()), "part-00000.arrow: holds 8 cells");

    // Non-finite value.
    let d = tmp();
    let rows: Vec<Row> = vec![(vec![1], vec![0.5]), (vec![2], vec![f64::NAN])];
    write_corpus(d.path(), 10, &rows, &[("a", 2)]).unwrap();
    assert_invalid(validate(d.path()), "cell 1: value NaN is not finite");
}

#[test]
fn validate_table_failures() {
    // obs: cell ids out of order.
    let d = tmp();
    three_cell_corpus(d.path());
    let obs = RecordBatch::try_from_iter([
        (
            "cell",
            Arc::new(UInt64Array::from(vec![0u64, 2, 1])) as ArrayRef,
        ),
        (
            "sample_id",
            Arc::new(arrow::array::StringArray::from(vec!["a", "a", "a"])),
        ),
    ])
    .unwrap();
    write_parquet(&d.path().join("obs.parquet"), &[obs]).unwrap();
    rehash(d.path()).unwrap();
    assert_invalid(
        validate(d.path()),
        "obs.parquet: row 1: cell is 2, expected 1",
    );

    // obs: wrong sample id.
    let d = tmp();
    write_corpus(d.path(), 50, &small_rows()[..4], &[("a", 2), ("b", 2)]).unwrap();
    let obs = RecordBatch::try_from_iter([
        (
            "cell",
            Arc::new(UInt64Array::from(vec![0u64, 1, 2, 3])) as ArrayRef,
        ),
        (
            "sample_id",
            Arc::new(arrow::array::StringArray::from(vec!["a", "a", "a", "b"])),
        ),
    ])
    .unwrap();
    write_parquet(&d.path().join("obs.parquet"), &[obs]).unwrap();
    rehash(d.path()).unwrap();
    assert_invalid(
        validate(d.path()),
        "row 2 (cell 2): sample_id is \"a\", expected \"b\"",
    );

    // obs: too few rows.
    let d = tmp();
    three_cell_corpus(d.path());
    let obs = RecordBatch::try_from_iter([
        (
            "cell",
            Arc::new(UInt64Array::from(vec![0u64, 1])) as ArrayRef,
        ),
        (
            "sample_id",
            Arc::new(arrow::array::StringArray::from(vec!["a", "a"])),
        ),
    ])
    .unwrap();
    write_parquet(&d.path().join("obs.parquet"), &[obs]).unwrap();
    rehash(d.path()).unwrap();
    assert_invalid(
        validate(d.path()),
        "has 2 rows, manifest.json says n_cells = 3",
    );

    // genes: wrong row count.
    let d = tmp();
    three_cell_corpus(d.path());
    let genes = RecordBatch::try_from_iter([
        (
            "gene",
            Arc::new(arrow::array::UInt32Array::from(vec![0u32, 1])) as ArrayRef,
        ),
        (
            "name",
            Arc::new(arrow::array::StringArray::from(vec!["x", "y"])),
        ),
    ])
    .unwrap();
    write_parquet(&d.path().join("genes.parquet"), &[genes]).unwrap();
    rehash(d.path()).unwrap();
    assert_invalid(
        validate(d.path()),
        "genes.parquet: has 2 rows, manifest.json says n_genes = 10",
    );

    // genes: duplicate name.
    let d = tmp();
    write_corpus(d.path(), 2, &[(vec![0], vec![1.0])], &[("a", 1)]).unwrap();
    let genes = RecordBatch::try_from_iter([
        (
            "gene",
            Arc::new(arrow::array::UInt32Array::from(vec![0u32, 1])) as ArrayRef,
        ),
        (
            "name",
            Arc::new(arrow::array::StringArray::from(vec!["x", "x"])),
        ),
    ])
    .unwrap();
    write_parquet(&d.path().join("genes.parquet"), &[genes]).unwrap();
    rehash(d.path()).unwrap();
    assert_invalid(validate(d.path()), "row 1: gene name \"x\" appears twice");

    // samples: disagrees with the manifest.
    let d = tmp();
    three_cell_corpus(d.path());
    let b = RecordBatch::try_from_iter([
        (
            "sample_id",
            Arc::new(arrow::array::StringArray::from(vec!["zz"])) as ArrayRef,
        ),
        ("first_cell", Arc::new(UInt64Array::from(vec![0u64]))),
        ("n_cells", Arc::new(UInt64Array::from(vec![3u64]))),
        ("nnz", Arc::new(UInt64Array::from(vec![5u64]))),
        (
            "spatial_dims",
            Arc::new(arrow::array::UInt8Array::from(vec![0u8])),
        ),
    ])
    .unwrap();
    write_parquet(&d.path().join("samples.parquet"), &[b]).unwrap();
    rehash(d.path()).unwrap();
    assert_invalid(validate(d.path()), "samples.parquet: row 0");
}

/// A flipped byte anywhere, in any kind of file, is an `InvalidCorpus` error and never a panic;
/// with checksums recomputed (so the structural checks see the damage) it is still never a
/// panic and never anything but `InvalidCorpus` or success.
#[test]
fn corrupted_files_never_panic() {
    let d = tmp();
    small_corpus(d.path());
    let files = [
        "matrix/part-00000.arrow",
        "obs.parquet",
        "genes.parquet",
        "samples.parquet",
        MANIFEST_FILE,
    ];
    for rel in files {
        let p = d.path().join(rel);
        let orig = std::fs::read(&p).unwrap();
        let manifest_orig = std::fs::read(d.path().join(MANIFEST_FILE)).unwrap();
        let step = (orig.len() / 60).max(1);
        for off in (0..orig.len()).step_by(step) {
            let mut b = orig.clone();
            b[off] ^= 0xFF;
            std::fs::write(&p, &b).unwrap();
            let r = validate(d.path());
            let e = r
                .err()
                .unwrap_or_else(|| panic!("{rel} flipped at {off} validated"));
            assert_eq!(e.kind(), ErrorKind::InvalidCorpus, "{rel} at {off}: {e}");
            // Offsets are checked on first use: read through the fallible path first.
            let _ = Corpus::open(d.path()).map(|c| {
                (0..c.n_cells())
                    .map(|i| c.checked_batch(i).map_or(0, |_| c.row_nnz(i)))
                    .sum::<usize>()
            });
            if rel != MANIFEST_FILE {
                rehash(d.path()).unwrap();
                match validate(d.path()) {
                    Ok(_) => {}
                    Err(e) => assert_eq!(
                        e.kind(),
                        ErrorKind::InvalidCorpus,
                        "{rel} at {off} rehashed: {e}"
                    ),
                }
                if let Ok(c) = Corpus::open(d.path()) {
                    for i in (0..c.n_cells()).filter(|&i| c.checked_batch(i).is_ok()) {
                        let _ = (c.indices(i).len(), c.values(i).len());
                    }
                }
                std::fs::write(d.path().join(MANIFEST_FILE), &manifest_orig).unwrap();
            }
        }
        std::fs::write(&p, &orig).unwrap();
        validate(d.path()).unwrap();
    }

    // A truncated part: refused by size, and by structure once the size is made to agree.
    let p = d.path().join("matrix/part-00002.arrow");
    let orig = std::fs::read(&p).unwrap();
    for cut in [orig.len() - 1, orig.len() - 8, orig.len() / 2, 7, 0] {
        std::fs::write(&p, &orig[..cut]).unwrap();
        assert_invalid(validate(d.path()), "part-00002.arrow");
        assert_invalid(Corpus::open(d.path()), "part-00002.arrow");
        let manifest_orig = std::fs::read(d.path().join(MANIFEST_FILE)).unwrap();
        rehash(d.path()).unwrap();
        let e = validate(d.path()).err();
        // Cutting only the end-of-stream marker leaves a readable stream with every batch.
        if let Some(e) = e {
            assert_eq!(e.kind(), ErrorKind::InvalidCorpus, "cut at {cut}: {e}");
        } else {
            assert!(cut >= orig.len() - 8, "cut at {cut} validated");
        }
        std::fs::write(d.path().join(MANIFEST_FILE), &manifest_orig).unwrap();
    }
    std::fs::write(&p, &orig).unwrap();
    validate(d.path()).unwrap();
}

fn python() -> Option<std::path::PathBuf> {
    if let Ok(p) = std::env::var("CELLARROW_PYTHON") {
        return Some(p.into());
    }
    let home = std::env::var("HOME").ok()?;
    let p = Path::new(&home).join(".cache/cellarrow/venv-dev/bin/python");
    p.exists().then_some(p)
}

#[test]
fn pyarrow_reads_a_part() {
    let Some(py) = python() else {
        eprintln!("skipping: no Python (set CELLARROW_PYTHON)");
        return;
    };
    let d = tmp();
    let rows: Vec<Row> = random_rows(9, 30, 0.3, 11)
        .into_iter()
        .map(|(i, v)| (i, v.into_iter().map(|x| x + 0.25).collect()))
        .collect();
    write_corpus(d.path(), 30, &rows, &[("a", 9)]).unwrap();
    let part = d.path().join("matrix/part-00000.arrow");
    let script = r#"
import sys, json, pyarrow as pa, pyarrow.ipc as ipc
t = ipc.open_stream(pa.memory_map(sys.argv[1])).read_all()
print(json.dumps({"types": [str(t.schema.field(i).type) for i in range(2)],
                  "indices": t.column("indices").to_pylist(),
                  "values": t.column("values").to_pylist()}))
"#;
    let out = std::process::Command::new(&py)
        .arg("-c")
        .arg(script)
        .arg(&part)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["types"][0], "list<item: uint16 not null>");
    assert_eq!(v["types"][1], "list<item: float not null>");
    let rows_py: Vec<(Vec<u32>, Vec<f64>)> = (0..8)
        .map(|i| {
            let idx = v["indices"][i]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect();
            let val = v["values"][i]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            (idx, val)
        })
        .collect();
    assert_eq!(&rows_py[..], &rows[..8], "first part holds 8 cells");
}

#[test]
fn rejects_overflowing_counts() {
    let d = tmp();
    small_corpus(d.path());
    edit_manifest(d.path(), |v| {
        v["matrix"]["part_cells"] = u64::MAX.into();
        v["matrix"]["parts"][0]["n_cells"] = u64::MAX.into();
    });
    assert_invalid(Corpus::open(d.path()), "spans past the end of sample a");
    edit_manifest(d.path(), |v| v["n_cells"] = u64::MAX.into());
    assert_invalid(Corpus::open(d.path()), "");
}

/// A middle list offset out of order (first and last intact, so every O(1) check passes):
/// `Corpus::open` does not look at it (opening costs O(parts)), the first read of the part
/// is an error naming it, never a panic or wrong data, and `validate` still finds it.
#[test]
fn corrupt_middle_offset_is_found_on_first_use() {
    let d = tmp();
    three_cell_corpus(d.path());
    let part = d
        .path()
        .join(&Corpus::open(d.path()).unwrap().manifest().matrix.parts[0].path);
    let mut bytes = std::fs::read(&part).unwrap();
    let good: Vec<u8> = [0i32, 2, 3, 5]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let at = bytes
        .windows(good.len())
        .position(|w| w == good.as_slice())
        .expect("the offsets buffer of the part");
    // Offsets 0, 2, 7, 5: cell 1 would end past cell 2's end.
    bytes[at + 8..at + 12].copy_from_slice(&7i32.to_le_bytes());
    std::fs::write(&part, bytes).unwrap();
    rehash(d.path()).unwrap();

    let corpus = Arc::new(Corpus::open(d.path()).expect("open does not check every offset"));
    let e = assert_invalid(corpus.checked_batch(1).map(|_| ()), "offset");
    assert!(e.path().unwrap().ends_with("part-00000.arrow"), "{e}");
    let g = crate::loader::Gatherer::new(corpus.clone(), Default::default()).unwrap();
    let e = assert_invalid(g.nnz(&[0]), "offset");
    assert!(e.path().unwrap().ends_with("part-00000.arrow"), "{e}");
    // Remembered: the second use gives the same error.
    assert_invalid(g.nnz(&[2]), "offset");
    assert_invalid(validate(d.path()), "");
}
