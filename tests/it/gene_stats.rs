//! The `gene_stats` table: written by convert and append on the real fixtures, equal to the
//! statistics computed from the cells themselves, per species; an append merges the previous
//! table instead of reading the old parts; `cellarrow query` reads it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::AsArray;
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Float64Type, Int64Type, UInt32Type, UInt64Type};
use cellarrow::convert::gene_stats::{truncate, GeneStats, TABLE};
use cellarrow::convert::{append, convert, resolve_inputs, ConvertOptions, InputSample};
use cellarrow::corpus::{read_parquet, sha256_file, validate, write_parquet, Manifest};
use cellarrow::Corpus;

use crate::common::*;

fn debian() -> PathBuf {
    data("debian_sctransform_pbmc_counts.h5ad")
}

fn options(out: &Path) -> ConvertOptions {
    let mut o = ConvertOptions::new(out);
    o.threads = 1;
    o
}

/// The samples with a species each, as an input manifest would give them.
fn samples(files: &[(PathBuf, &str)]) -> Vec<InputSample> {
    let mut v = resolve_inputs(&files.iter().map(|f| f.0.clone()).collect::<Vec<_>>()).unwrap();
    for (s, (_, species)) in v.iter_mut().zip(files) {
        s.metadata.insert("species".into(), species.to_string());
    }
    v
}

/// (species, gene) -> every non-zero value, read cell by cell from the corpus.
fn values_by_gene(dir: &Path) -> BTreeMap<(String, u32), Vec<f64>> {
    let c = Corpus::open(dir).unwrap();
    let batches = c
        .read_table("samples", Some(&["sample_id", "species"]))
        .unwrap();
    let mut species = HashMap::new();
    for b in &batches {
        let ids = b.column(0).as_string::<i32>();
        let sp = arrow::compute::cast(b.column(1), &DataType::Utf8).unwrap();
        let sp = sp.as_string::<i32>();
        for i in 0..b.num_rows() {
            species.insert(ids.value(i).to_string(), sp.value(i).to_string());
        }
    }
    let mut out: BTreeMap<(String, u32), Vec<f64>> = BTreeMap::new();
    for s in &c.manifest().samples {
        let sp = &species[&s.sample_id];
        for cell in s.first_cell..s.first_cell + s.n_cells {
            let (g, v) = (c.indices(cell).to_u32_vec(), c.values(cell).to_f64_vec());
            for (g, v) in g.into_iter().zip(v) {
                if v != 0.0 {
                    out.entry((sp.clone(), g)).or_default().push(v);
                }
            }
        }
    }
    out
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// Every row of the table against the values themselves.
fn check_against_cells(dir: &Path) {
    let stats = stats_of(dir);
    let expected = values_by_gene(dir);
    let rows: usize = stats.groups.values().map(|g| g.len()).sum();
    assert_eq!(
        rows,
        expected.len(),
        "one row per (species, expressed gene)"
    );
    let mut exact_medians = 0;
    for ((sp, g), vals) in &expected {
        let s = &stats.groups[&Some(sp.clone())][g];
        assert_eq!(s.n_cells, vals.len() as u64, "{sp} gene {g}");
        assert!(close(s.sum, vals.iter().sum()), "{sp} gene {g} sum");
        assert!(
            close(s.sum_sq, vals.iter().map(|v| v * v).sum()),
            "{sp} gene {g} sum_sq"
        );
        let mut sorted = vals.clone();
        sorted.sort_by(f64::total_cmp);
        let lower = sorted[(sorted.len() - 1) / 2];
        let m = s.median().unwrap();
        assert_eq!(m, truncate(lower), "{sp} gene {g}");
        assert!(m <= lower && lower - m < lower / 64.0);
        exact_medians += (m == lower) as usize;
    }
    assert!(exact_medians > 0);
}

#[test]
fn convert_records_statistics_per_species() {
    let tmp = scratch("gene-stats");
    let out = tmp.path().join("c.corpus");
    let files = [(chr21(), "human"), (debian(), "human"), (mouse(), "mouse")];
    convert(&samples(&files), &options(&out)).unwrap();
    validate(&out).unwrap();
    let stats = stats_of(&out);
    let groups: Vec<_> = stats.groups.keys().cloned().collect();
    assert_eq!(groups, vec![Some("human".into()), Some("mouse".into())]);
    check_against_cells(&out);

    // The table's median column is the sketch's median.
    let b = read_parquet(
        &cellarrow::corpus::table_files_at(&out, TABLE).unwrap()[0],
        None,
    )
    .unwrap();
    let b = concat_batches(&b[0].schema(), &b).unwrap();
    let med = b
        .column_by_name("median_nonzero")
        .unwrap()
        .as_primitive::<Float64Type>();
    let gene = b
        .column_by_name("gene")
        .unwrap()
        .as_primitive::<UInt32Type>();
    let sp = b.column_by_name("species").unwrap().as_string::<i32>();
    for i in 0..b.num_rows() {
        let s = &stats.groups[&Some(sp.value(i).to_string())][&gene.value(i)];
        assert_eq!(Some(med.value(i)), s.median());
    }

    // Without a species in the input manifest: the species read from the gene ids.
    let plain = tmp.path().join("plain.corpus");
    convert(&resolve_inputs(&[chr21()]).unwrap(), &options(&plain)).unwrap();
    let stats = stats_of(&plain);
    assert_eq!(
        stats.groups.keys().collect::<Vec<_>>(),
        vec![&Some("human".to_string())]
    );
}

#[cfg(feature = "sql")]
#[test]
fn query_reads_the_table() {
    let tmp = scratch("gene-stats-sql");
    let out = tmp.path().join("c.corpus");
    convert(&samples(&[(chr21(), "human")]), &options(&out)).unwrap();
    let engine = cellarrow::query::QueryEngine::new(Arc::new(Corpus::open(&out).unwrap())).unwrap();
    assert!(engine.tables().iter().any(|t| t == "gene_stats"));
    let b = engine
        .sql(
            "SELECT count(*) AS n, sum(s.n_cells) AS cells FROM gene_stats s JOIN genes g USING (gene) \
             WHERE s.species = 'human' AND s.median_nonzero > 0",
        )
        .unwrap();
    let n = b[0].column(0).as_primitive::<Int64Type>().value(0);
    let cells = b[0].column(1).as_primitive::<UInt64Type>().value(0);
    let expected = values_by_gene(&out);
    assert_eq!(n as usize, expected.len());
    assert_eq!(
        cells as usize,
        expected.values().map(Vec::len).sum::<usize>()
    );
    assert_eq!(cells, Corpus::open(&out).unwrap().nnz());
}

/// The corpus's statistics, from the files of its `gene_stats` table.
fn stats_of(dir: &Path) -> GeneStats {
    let files = cellarrow::corpus::table_files_at(dir, TABLE).unwrap();
    assert_eq!(files.len(), 1, "one gene_stats file");
    GeneStats::read_files(&files).unwrap()
}

/// Lists a doctored table in the manifest, as if the corpus had been written with it.
fn replace_table(dir: &Path, stats: &GeneStats) {
    let mut m = Manifest::read(dir).unwrap();
    let rel = m.tables[TABLE][0].path.clone();
    let path = dir.join(&rel);
    write_parquet(&path, &[stats.to_batch().unwrap()]).unwrap();
    let (sha256, bytes) = sha256_file(&path).unwrap();
    m.tables.get_mut(TABLE).unwrap()[0].rows = stats.to_batch().unwrap().num_rows() as u64;
    let e = m.files.iter_mut().find(|f| f.path == rel).unwrap();
    e.sha256 = sha256;
    e.bytes = bytes;
    m.write(dir).unwrap();
}

#[test]
fn appends_merge_the_previous_table_without_reading_old_parts() {
    let tmp = scratch("gene-stats-append");
    let files = [(chr21(), "human"), (debian(), "human"), (mouse(), "mouse")];
    let whole = tmp.path().join("whole.corpus");
    convert(&samples(&files), &options(&whole)).unwrap();
    let grown = tmp.path().join("grown.corpus");
    convert(&samples(&files[..1]), &options(&grown)).unwrap();
    append(&grown, &samples(&files[1..2]), &options(&grown)).unwrap();
    append(&grown, &samples(&files[2..]), &options(&grown)).unwrap();
    validate(&grown).unwrap();
    let (a, b) = (stats_of(&whole), stats_of(&grown));
    assert_eq!(a.groups.len(), b.groups.len());
    for (k, ga) in &a.groups {
        let gb = &b.groups[k];
        assert_eq!(ga.len(), gb.len());
        for (g, sa) in ga {
            let sb = &gb[g];
            assert_eq!(
                (sa.n_cells, &sa.sketch),
                (sb.n_cells, &sb.sketch),
                "{k:?} {g}"
            );
            assert!(close(sa.sum, sb.sum) && close(sa.sum_sq, sb.sum_sq));
        }
    }
    check_against_cells(&grown);

    // An append takes the old cells' statistics from the table: doctor it, and the doctored
    // figures carry over untouched while the new cells are added.
    let one = tmp.path().join("one.corpus");
    convert(&samples(&files[..1]), &options(&one)).unwrap();
    let mut doctored = stats_of(&one);
    let human = doctored.groups.get_mut(&Some("human".into())).unwrap();
    let (&gene, _) = human.iter().min_by_key(|(g, _)| **g).unwrap();
    human.retain(|&g, _| g == gene);
    let kept = human[&gene].clone();
    replace_table(&one, &doctored);
    append(&one, &samples(&files[2..]), &options(&one)).unwrap();
    let after = stats_of(&one);
    assert_eq!(after.groups[&Some("human".into())].len(), 1);
    assert_eq!(after.groups[&Some("human".into())][&gene], kept);
    let mouse = &after.groups[&Some("mouse".into())];
    let expected: Vec<_> = values_by_gene(&one)
        .into_iter()
        .filter(|((sp, _), _)| sp == "mouse")
        .collect();
    assert_eq!(mouse.len(), expected.len());
    for ((_, g), vals) in expected {
        assert_eq!(mouse[&g].n_cells, vals.len() as u64);
    }
}
