//! obs.parquet of a one-sample corpus (the sample's own table, kept as written) against the
//! same sample in a corpus of two (the merged table).

use arrow::record_batch::RecordBatch;
use cellarrow::convert::{convert, resolve_inputs, ConvertOptions};
use cellarrow::corpus::read_parquet;

use crate::common::*;

fn obs(inputs: &[std::path::PathBuf], dest: &std::path::Path) -> RecordBatch {
    let mut o = ConvertOptions::new(dest);
    o.progress = false;
    convert(&resolve_inputs(inputs).unwrap(), &o).unwrap();
    let staging: Vec<String> = std::fs::read_dir(dest)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("staging"))
        .collect();
    assert!(staging.is_empty(), "left behind: {staging:?}");
    // A conversion writes one obs file.
    let batches = read_parquet(&dest.join("obs/part-00000.parquet"), None).unwrap();
    arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
}

#[test]
fn one_sample_obs_table_is_the_rows_and_schema_a_merged_table_gives_it() {
    let tmp = scratch("obs-table");
    let one = obs(&[chr21()], &tmp.path().join("one.corpus"));
    let two = obs(&[chr21(), mouse()], &tmp.path().join("two.corpus"));
    assert_eq!(one.num_rows(), 1107);
    assert!(two.num_rows() > one.num_rows());
    for field in one.schema().fields() {
        assert!(
            field.is_nullable(),
            "{} is nullable as in a merged table",
            field.name()
        );
        let merged = two.schema().field_with_name(field.name()).unwrap().clone();
        assert_eq!(merged.data_type(), field.data_type(), "{}", field.name());
        let a = one.column_by_name(field.name()).unwrap();
        let b = two
            .column_by_name(field.name())
            .unwrap()
            .slice(0, one.num_rows());
        assert_eq!(a.as_ref(), b.as_ref(), "column {}", field.name());
    }
}
