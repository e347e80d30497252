//! `cellarrow bench --json`: the records scripts read, checked against the corpus.

use serde_json::Value;

use crate::common::{assert_no_panic, chr21, cli, scratch, stderr};

#[test]
fn bench_json_runs_read_every_value_of_the_epoch_once() {
    let dir = scratch("bench-json");
    let corpus = dir.path().join("c");
    let o = cli([
        "convert".as_ref(),
        chr21().as_os_str(),
        "-o".as_ref(),
        corpus.as_os_str(),
        "--quiet".as_ref(),
    ]);
    assert!(o.status.success(), "convert: {}", stderr(&o));
    let o = cli([
        "bench".as_ref(),
        corpus.as_os_str(),
        "--json".as_ref(),
        "--samplers".as_ref(),
        "random".as_ref(),
        "--threads".as_ref(),
        "0,1".as_ref(),
        "--shards".as_ref(),
        "1,2".as_ref(),
        "--batch-size".as_ref(),
        "16".as_ref(),
    ]);
    assert_no_panic("bench", &o);
    assert!(o.status.success(), "bench: {}", stderr(&o));
    let records: Vec<Value> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?} is not JSON: {e}")))
        .collect();
    let of =
        |kind: &str| -> Vec<&Value> { records.iter().filter(|r| r["record"] == kind).collect() };
    let head = of("corpus");
    assert_eq!(head.len(), 1, "{records:?}");
    let (cells, nnz) = (&head[0]["cells"], &head[0]["nnz"]);
    assert_eq!(of("first_batch").len(), 1);
    let runs = of("run");
    let shape: Vec<(Value, Value)> = runs
        .iter()
        .map(|r| (r["threads"].clone(), r["shards"].clone()))
        .collect();
    assert_eq!(
        shape,
        vec![
            (0.into(), Value::Null),
            (1.into(), Value::Null),
            (Value::Null, 1.into()),
            (Value::Null, 2.into()),
        ]
    );
    // One epoch of random cells without replacement is every cell once, however it is read.
    let checksum = runs[0]["checksum"].as_f64().unwrap();
    assert!(checksum > 0.0);
    for r in &runs {
        assert_eq!(&r["cells"], cells, "{r}");
        assert_eq!(&r["nnz"], nnz, "{r}");
        assert_eq!(r["checksum"].as_f64(), Some(checksum), "{r}");
        assert!(r["cells_per_s"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["memcpy_ratio"].as_f64().unwrap() > 0.0, "{r}");
    }
}
