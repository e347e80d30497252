//! `convert::merge` and `cellarrow merge`: corpora of two fixtures merged equal one convert of
//! both files; corpora with the same gene ids share every part (same inode); an appended
//! corpus, a format-1 corpus and corpora of other value types merge; duplicate sample ids are
//! refused, skipped or renamed; bad inputs and kills leave nothing behind.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use arrow::compute::concat_batches;
use arrow::record_batch::RecordBatch;
use cellarrow::convert::gene_stats::{self, GeneStats};
use cellarrow::convert::kill::{CONVERT_STAGES, KILL_AT_VAR};
use cellarrow::convert::lock::lock_path;
use cellarrow::convert::{
    append, convert, merge, plan_genes, resolve_inputs, ConvertOptions, MergeOptions, OnDuplicate,
};
use cellarrow::corpus::validate;
use cellarrow::query::QueryEngine;
use cellarrow::Corpus;

use crate::common::*;

fn debian() -> PathBuf {
    data("debian_sctransform_pbmc_counts.h5ad")
}

fn convert_to(files: &[PathBuf], out: &Path, part_cells: u64, vocab: Option<&Path>) {
    let mut o = ConvertOptions::new(out);
    o.threads = 1;
    o.part_cells = part_cells;
    o.vocab = vocab.map(Path::to_path_buf);
    convert(&resolve_inputs(files).unwrap(), &o).unwrap();
}

/// A table as cellarrow serves it (every file; genes with their summed counts).
fn table(dir: &Path, name: &str) -> RecordBatch {
    let batches = Corpus::open(dir).unwrap().read_table(name, None).unwrap();
    concat_batches(&batches[0].schema(), &batches).unwrap()
}

fn stats(dir: &Path) -> GeneStats {
    GeneStats::read_files(&Corpus::open(dir).unwrap().table_files(gene_stats::TABLE)).unwrap()
}

/// Every cell as (gene name, value) pairs sorted by name: gene ids may differ between two
/// corpora of the same data, their meaning may not.
fn named_cells(dir: &Path) -> Vec<Vec<(String, f64)>> {
    let c = Corpus::open(dir).unwrap();
    let names = c.gene_names().unwrap();
    (0..c.n_cells())
        .map(|i| {
            let mut v: Vec<(String, f64)> = c
                .indices(i)
                .to_u32_vec()
                .into_iter()
                .zip(c.values(i).to_f64_vec())
                .map(|(g, x)| (names[g as usize].clone(), x))
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        })
        .collect()
}

fn assert_same_table(a: &RecordBatch, b: &RecordBatch, what: &str) {
    assert_eq!(a.num_rows(), b.num_rows(), "{what}: rows");
    let names = |t: &RecordBatch| {
        let mut n: Vec<String> = t
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        n.sort();
        n
    };
    assert_eq!(names(a), names(b), "{what}: columns");
    for n in names(a) {
        let (x, y) = (a.column_by_name(&n).unwrap(), b.column_by_name(&n).unwrap());
        assert_eq!(x.data_type(), y.data_type(), "{what}.{n}: type");
        assert_eq!(x.to_data(), y.to_data(), "{what}.{n}: values");
    }
}

fn sql(dir: &Path, q: &str) -> Vec<RecordBatch> {
    let engine = QueryEngine::new(Arc::new(Corpus::open(dir).unwrap())).unwrap();
    engine.sql(q).unwrap()
}

fn assert_same_answers(a: &Path, b: &Path) {
    for q in [
        "SELECT sample_id, count(*) AS n, sum(total) AS t, sum(nnz) AS z FROM obs GROUP BY sample_id ORDER BY sample_id",
        "SELECT name, n_samples, n_cells FROM genes ORDER BY name",
        "SELECT cell, obs_name, source_row FROM obs WHERE nnz > 100 ORDER BY cell",
        "SELECT sample_id, first_cell, n_cells, nnz, source_sha256 FROM samples ORDER BY first_cell",
    ] {
        let (x, y) = (sql(a, q), sql(b, q));
        assert!(!x.is_empty() && !y.is_empty(), "{q}: no batches");
        let x = concat_batches(&x[0].schema(), &x).unwrap();
        let y = concat_batches(&y[0].schema(), &y).unwrap();
        assert!(x.num_rows() > 0, "{q}: no rows");
        assert_same_table(&x, &y, q);
    }
}

/// Two corpora of two different fixtures (different gene sets), merged, equal one conversion
/// of both files: cells and values in gene-name space, genes, tables, query answers. The first
/// corpus's parts are linked, the second's rewritten.
#[test]
fn merging_two_converts_equals_one_convert_of_both_files() {
    let tmp = scratch("merge-eq");
    let (a, b, c, whole) = (
        tmp.path().join("a.corpus"),
        tmp.path().join("b.corpus"),
        tmp.path().join("c.corpus"),
        tmp.path().join("whole.corpus"),
    );
    convert_to(&[chr21()], &a, 400, None);
    convert_to(&[debian()], &b, 100, None);
    convert_to(&[chr21(), debian()], &whole, 400, None);
    let (ma, mb) = (
        Corpus::open(&a).unwrap().manifest().clone(),
        Corpus::open(&b).unwrap().manifest().clone(),
    );
    assert_ne!(
        ma.n_genes, mb.n_genes,
        "the fixtures have different gene sets"
    );

    let r = merge(&[a.clone(), b.clone()], &c, &MergeOptions::default()).unwrap();
    validate(&c).unwrap();
    assert_eq!(r.parts_linked, ma.matrix.parts.len());
    assert_eq!(r.parts_rewritten, mb.matrix.parts.len());
    assert_eq!(r.parts_copied, 0);
    assert_eq!(
        r.bytes_linked,
        ma.matrix
            .parts
            .iter()
            .map(|p| ma.file(&p.path).unwrap().bytes)
            .sum::<u64>()
    );
    assert!(r.bytes_rewritten > 0);

    let (w, m) = (Corpus::open(&whole).unwrap(), Corpus::open(&c).unwrap());
    assert_eq!(
        (m.n_cells(), m.n_genes(), m.nnz()),
        (w.n_cells(), w.n_genes(), w.nnz())
    );
    assert_eq!(m.manifest().samples, w.manifest().samples);
    assert_eq!(m.manifest().value_type, w.manifest().value_type);
    assert_eq!(m.gene_names().unwrap(), w.gene_names().unwrap());
    assert_eq!(named_cells(&c), named_cells(&whole));
    for t in ["genes", "obs"] {
        assert_same_table(&table(&c, t), &table(&whole, t), t);
    }
    assert_same_answers(&c, &whole);
    // The inputs' statistics, their gene ids mapped, add up to the whole's.
    assert_eq!(stats(&c), stats(&whole));
    assert_eq!(m.manifest().format_version, 2);

    // The first corpus's parts are its very files.
    for (i, p) in ma.matrix.parts.iter().enumerate() {
        let (x, y) = (a.join(&p.path), c.join(&m.manifest().matrix.parts[i].path));
        assert_eq!(
            std::fs::metadata(&x).unwrap().ino(),
            std::fs::metadata(&y).unwrap().ino()
        );
    }
    // The lineage names both inputs with their manifests' sha256 and the tool.
    let entry = m.manifest().lineage.last().unwrap();
    assert_eq!(entry.operation, "merge");
    assert!(entry.created_by.starts_with("cellarrow "));
    assert_eq!(entry.inputs.len(), 2);
    for (inp, dir) in entry.inputs.iter().zip([&a, &b]) {
        let (sha, _) = cellarrow::corpus::sha256_file(&dir.join("manifest.json")).unwrap();
        assert_eq!(inp.manifest_sha256, sha);
        assert_eq!(inp.path, dir.display().to_string());
    }
    assert_eq!(entry.inputs[1].first_cell, ma.n_cells);
    assert_eq!(entry.options["on_duplicate"], "error");
    assert!(!lock_path(&c).unwrap().exists());
    assert_eq!(leftovers(&c), Vec::<String>::new());
}

/// Corpora converted with the same gene ids (here: the second with the first's genes as its
/// vocabulary) share every part: the merged corpus's parts are hard links to theirs.
#[test]
fn identical_vocabularies_link_every_part() {
    let tmp = scratch("merge-link");
    let (a, b, c) = (
        tmp.path().join("a.corpus"),
        tmp.path().join("b.corpus"),
        tmp.path().join("c.corpus"),
    );
    convert_to(&[chr21()], &a, 300, None);
    convert_to(&[debian()], &b, 100, Some(&a));
    let r = merge(&[a.clone(), b.clone()], &c, &MergeOptions::default()).unwrap();
    validate(&c).unwrap();
    let (ma, mb, mc) = (
        Corpus::open(&a).unwrap().manifest().clone(),
        Corpus::open(&b).unwrap().manifest().clone(),
        Corpus::open(&c).unwrap().manifest().clone(),
    );
    assert!(ma.matrix.parts.len() + mb.matrix.parts.len() >= 4);
    assert_eq!(
        r.parts_linked,
        ma.matrix.parts.len() + mb.matrix.parts.len()
    );
    assert_eq!((r.parts_rewritten, r.bytes_rewritten), (0, 0));
    let sources = ma
        .matrix
        .parts
        .iter()
        .map(|p| (&a, &ma, p))
        .chain(mb.matrix.parts.iter().map(|p| (&b, &mb, p)));
    for ((dir, m, p), q) in sources.zip(&mc.matrix.parts) {
        let (x, y) = (dir.join(&p.path), c.join(&q.path));
        assert_eq!(
            std::fs::metadata(&x).unwrap().ino(),
            std::fs::metadata(&y).unwrap().ino(),
            "{} -> {}",
            x.display(),
            y.display()
        );
        assert_eq!(
            mc.file(&q.path).unwrap().sha256,
            m.file(&p.path).unwrap().sha256
        );
    }
    let (na, nb) = (named_cells(&a), named_cells(&b));
    assert_eq!(named_cells(&c), [na, nb].concat());
}

/// The same sample id in two inputs: an error naming it (and nothing written), unless skipped
/// (the later cells left out) or renamed (ID-2).
#[test]
fn duplicate_sample_ids_error_skip_or_rename() {
    let tmp = scratch("merge-dup");
    let (a, a2) = (tmp.path().join("a.corpus"), tmp.path().join("a2.corpus"));
    convert_to(&[chr21()], &a, 1 << 20, None);
    copy_dir(&a, &a2);
    let id = Corpus::open(&a).unwrap().manifest().samples[0]
        .sample_id
        .clone();

    let c = tmp.path().join("c.corpus");
    let e = merge(&[a.clone(), a2.clone()], &c, &MergeOptions::default()).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("duplicate sample ids") && text.contains(&id),
        "{text}"
    );
    assert!(text.contains("a2.corpus"), "{text}");
    assert!(!c.exists());
    assert_eq!(leftovers(&c), Vec::<String>::new());
    assert!(!lock_path(&c).unwrap().exists());

    let opts = |p| MergeOptions {
        on_duplicate: p,
        ..Default::default()
    };
    let skip = tmp.path().join("skip.corpus");
    let r = merge(&[a.clone(), a2.clone()], &skip, &opts(OnDuplicate::Skip)).unwrap();
    validate(&skip).unwrap();
    assert_eq!(r.skipped, vec![format!("{id} (input 1)")]);
    assert_eq!(named_cells(&skip), named_cells(&a));
    let (ga, gs) = (table(&a, "genes"), table(&skip, "genes"));
    assert_eq!(
        ga.column_by_name("n_cells").unwrap().to_data(),
        gs.column_by_name("n_cells").unwrap().to_data()
    );

    let rename = tmp.path().join("rename.corpus");
    let r = merge(
        &[a.clone(), a2.clone()],
        &rename,
        &opts(OnDuplicate::Rename),
    )
    .unwrap();
    validate(&rename).unwrap();
    assert_eq!(r.renamed.len(), 1);
    assert_eq!(r.renamed[0].to, format!("{id}-2"));
    let m = Corpus::open(&rename).unwrap();
    let ids: Vec<&str> = m
        .manifest()
        .samples
        .iter()
        .map(|s| s.sample_id.as_str())
        .collect();
    assert_eq!(ids, vec![id.clone(), format!("{id}-2")]);
    assert_eq!(
        named_cells(&rename),
        [named_cells(&a), named_cells(&a)].concat()
    );
    assert_eq!(r.parts_linked, 2, "the same vocabulary: both linked");
    // The second copy's cells carry the new id in obs.
    let n = sql(
        &rename,
        &format!(
            "SELECT count(*) AS n FROM obs WHERE sample_id = '{id}-2' AND cell >= {}",
            m.manifest().samples[1].first_cell
        ),
    );
    let n = n[0]
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .unwrap()
        .value(0);
    assert_eq!(n as u64, m.manifest().samples[1].n_cells);
    // Same source file under two ids: said.
    assert!(
        r.warnings.iter().any(|w| w.contains("same source file")),
        "{:?}",
        r.warnings
    );
}

/// Every refused merge names its cause, writes nothing beside the output, leaves no lock and
/// does not touch its inputs.
#[test]
fn bad_merges_leave_nothing_behind() {
    let tmp = scratch("merge-bad");
    let (a, b) = (tmp.path().join("a.corpus"), tmp.path().join("b.corpus"));
    convert_to(&[chr21()], &a, 1 << 20, None);
    convert_to(
        &[data("squidpy_visium_mouse_brain_49spots.h5ad")],
        &b,
        1 << 20,
        None,
    );
    let newer = tmp.path().join("newer.corpus");
    copy_dir(&a, &newer);
    let text = std::fs::read_to_string(newer.join("manifest.json")).unwrap();
    std::fs::write(
        newer.join("manifest.json"),
        text.replace("\"format_version\": 2", "\"format_version\": 3"),
    )
    .unwrap();
    let by_symbol = tmp.path().join("symbol.corpus");
    let mut o = ConvertOptions::new(&by_symbol);
    o.threads = 1;
    o.gene_key = "symbol".parse().unwrap();
    convert(&resolve_inputs(&[debian()]).unwrap(), &o).unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let missing = tmp.path().join("missing.corpus");
    let before: Vec<_> = [&a, &b, &newer, &by_symbol]
        .iter()
        .map(|d| snapshot(d))
        .collect();

    let out = tmp.path().join("out.corpus");
    let cases: Vec<(Vec<PathBuf>, &Path, &str, &str)> = vec![
        (
            vec![a.clone(), newer.clone()],
            &out,
            "format_version 3",
            "newer.corpus",
        ),
        (
            vec![a.clone(), by_symbol.clone()],
            &out,
            "matched by symbol",
            "symbol.corpus",
        ),
        (
            vec![a.clone(), empty.clone()],
            &out,
            "manifest.json",
            "empty",
        ),
        (
            vec![a.clone(), missing.clone()],
            &out,
            "not a directory",
            "missing.corpus",
        ),
        (vec![a.clone(), a.clone()], &out, "given twice", "a.corpus"),
        (
            vec![a.clone(), b.clone()],
            &a,
            "merge into a new directory",
            "a.corpus",
        ),
        (vec![], &out, "no input", ""),
    ];
    for (inputs, output, msg, names) in cases {
        let e = merge(&inputs, output, &MergeOptions::default()).unwrap_err();
        let t = e.to_string();
        assert!(t.contains(msg) && t.contains(names), "{inputs:?}: {t}");
        assert!(!out.exists(), "{inputs:?}");
        assert_eq!(leftovers(&out), Vec::<String>::new());
        assert!(!lock_path(&out).unwrap().exists());
        for (d, s) in [&a, &b, &newer, &by_symbol].iter().zip(&before) {
            assert_eq!(&snapshot(d), s, "{inputs:?}: {} changed", d.display());
            assert!(!lock_path(d).unwrap().exists());
        }
    }

    // An existing output is kept unless --overwrite; a running writer's lock refuses the merge.
    let c = tmp.path().join("c.corpus");
    copy_dir(&a, &c);
    let kept = snapshot(&c);
    let e = merge(std::slice::from_ref(&a), &c, &MergeOptions::default()).unwrap_err();
    assert!(e.to_string().contains("--overwrite"), "{e}");
    assert_eq!(snapshot(&c), kept);
    let live = unsafe { libc::getppid() };
    std::fs::write(lock_path(&c).unwrap(), format!("{live}\n")).unwrap();
    let overwrite = MergeOptions {
        overwrite: true,
        ..Default::default()
    };
    let e = merge(std::slice::from_ref(&a), &c, &overwrite).unwrap_err();
    assert!(
        e.to_string().contains(&format!("locked by process {live}")),
        "{e}"
    );
    assert_eq!(snapshot(&c), kept);
    std::fs::remove_file(lock_path(&c).unwrap()).unwrap();
    merge(std::slice::from_ref(&a), &c, &overwrite).unwrap();
    validate(&c).unwrap();
}

const CHILD_VAR: &str = "CELLARROW_IT_MERGE_CHILD";

/// Not a test on its own: the process that the crash test starts and kills. It merges the
/// corpora named in its environment (one per line, the output last).
#[test]
fn merge_child() {
    let Ok(args) = std::env::var(CHILD_VAR) else {
        return;
    };
    let mut paths: Vec<PathBuf> = args.lines().map(PathBuf::from).collect();
    let out = paths.pop().unwrap();
    merge(&paths, &out, &MergeOptions::default()).unwrap();
}

/// A kill -9 at every stage of a merge leaves no corpus at the output and the inputs as they
/// were; the next merge recovers the killed one's leftovers and lock and succeeds.
#[test]
fn kill_at_every_merge_stage_leaves_no_corpus() {
    let tmp = scratch("merge-kill");
    let (a, b, c) = (
        tmp.path().join("a.corpus"),
        tmp.path().join("b.corpus"),
        tmp.path().join("c.corpus"),
    );
    convert_to(&[chr21()], &a, 1 << 20, None);
    convert_to(&[debian()], &b, 1 << 20, None);
    let before = (snapshot(&a), snapshot(&b));
    for &stage in CONVERT_STAGES {
        let _ = std::fs::remove_dir_all(&c);
        let o = Command::new(std::env::current_exe().unwrap())
            .args([
                "merge::merge_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                CHILD_VAR,
                format!("{}\n{}\n{}", a.display(), b.display(), c.display()),
            )
            .env(KILL_AT_VAR, stage)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(
            o.status.signal(),
            Some(libc::SIGKILL),
            "{stage}: not killed ({}): {err}",
            o.status
        );
        assert!(
            err.contains(&format!("killed at {stage} ")),
            "{stage}: {err}"
        );
        assert!(!c.exists(), "{stage}: a corpus appeared");
        assert_eq!((snapshot(&a), snapshot(&b)), before, "{stage}");
        assert!(
            lock_path(&c).unwrap().exists(),
            "{stage}: the dead writer's lock"
        );

        let r = merge(&[a.clone(), b.clone()], &c, &MergeOptions::default())
            .unwrap_or_else(|e| panic!("{stage}: the next merge failed: {e}"));
        validate(&c).unwrap();
        assert_eq!(r.n_samples, 2, "{stage}");
        assert_eq!(leftovers(&c), Vec::<String>::new(), "{stage}");
        for d in [&a, &b, &c] {
            assert!(!lock_path(d).unwrap().exists(), "{stage}");
        }
    }
}

/// `cellarrow merge` prints how many parts were linked and rewritten; `--help` has an example.
#[test]
fn cli_merge_reports_linked_and_rewritten_parts() {
    let tmp = scratch("merge-cli");
    let (a, b, c) = (
        tmp.path().join("a.corpus"),
        tmp.path().join("b.corpus"),
        tmp.path().join("c.corpus"),
    );
    convert_to(&[chr21()], &a, 1 << 20, None);
    convert_to(&[debian()], &b, 1 << 20, None);
    let out = cli([
        "merge".as_ref(),
        a.as_os_str(),
        b.as_os_str(),
        "-o".as_ref(),
        c.as_os_str(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("1 linked") && text.contains("1 rewritten"),
        "{text}"
    );
    validate(&c).unwrap();

    let out = cli([
        "merge".as_ref(),
        a.as_os_str(),
        a.as_os_str(),
        "-o".as_ref(),
        tmp.path().join("d.corpus").as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_no_panic("merge of one corpus twice", &out);

    let help = cli(["merge", "--help"]);
    let h = String::from_utf8_lossy(&help.stdout);
    assert!(
        h.contains("cellarrow merge site1.corpus site2.corpus -o all.corpus"),
        "{h}"
    );
    assert!(h.contains("--on-duplicate"), "{h}");
}

/// `plan_genes` gives the vocabulary of a conversion from the var tables; converting each file
/// apart with it as the gene order (`gene_order`) keeps every gene of each file and gives every gene
/// one id, so the merge links every part and equals one conversion of both files.
#[test]
fn a_planned_gene_order_makes_pieces_that_merge_by_links_alone() {
    let tmp = scratch("merge-plan");
    let files = [chr21(), debian()];
    let whole = tmp.path().join("whole.corpus");
    convert_to(&files, &whole, 1 << 20, None);
    let mut o = ConvertOptions::new(tmp.path().join("unused"));
    o.threads = 1;
    let vocab = plan_genes(&resolve_inputs(&files).unwrap(), &o).unwrap();
    assert_eq!(
        vocab.names(),
        &Corpus::open(&whole).unwrap().gene_names().unwrap()[..]
    );
    // A genes file keeps each gene's id and symbol, so a file that names genes by symbol only
    // still finds them (a text file of names would not).
    let order = tmp.path().join("genes.parquet");
    vocab.write(&order).unwrap();

    let whole_cells = named_cells(&whole);
    let mut done = 0;
    let mut pieces = Vec::new();
    for f in &files {
        let out = tmp.path().join(format!(
            "{}.corpus",
            f.file_stem().unwrap().to_string_lossy()
        ));
        let mut o = ConvertOptions::new(&out);
        o.threads = 1;
        o.gene_order = Some(order.clone());
        convert(&resolve_inputs(std::slice::from_ref(f)).unwrap(), &o).unwrap();
        assert_eq!(
            Corpus::open(&out).unwrap().gene_names().unwrap(),
            vocab.names()
        );
        // Nothing of the file is dropped and every gene means what it means in one conversion
        // of both files (a gene named by symbol in one file and by id in the other is one).
        let cells = named_cells(&out);
        assert_eq!(cells, whole_cells[done..done + cells.len()]);
        done += cells.len();
        pieces.push(out);
    }
    let c = tmp.path().join("c.corpus");
    let r = merge(&pieces, &c, &MergeOptions::default()).unwrap();
    assert_eq!((r.parts_rewritten, r.parts_copied), (0, 0));
    assert_eq!(r.parts_linked, 2);
    validate(&c).unwrap();
    assert_eq!(named_cells(&c), named_cells(&whole));
    for t in ["genes", "obs", "samples"] {
        // `matched_by` also records each piece's joins to the planned order, which one
        // conversion never makes: it marks more genes.
        let (x, y) = (table(&c, t), table(&whole, t));
        let drop = |b: RecordBatch| {
            let keep: Vec<usize> = (0..b.num_columns())
                .filter(|&i| b.schema().field(i).name() != "matched_by")
                .collect();
            b.project(&keep).unwrap()
        };
        assert_same_table(&drop(x), &drop(y), t);
    }
    assert_eq!(stats(&c), stats(&whole));

    // A gene order and a fixed vocabulary do not go together.
    let mut o = ConvertOptions::new(tmp.path().join("both.corpus"));
    o.gene_order = Some(order.clone());
    o.vocab = Some(order);
    let e = convert(&resolve_inputs(&files[..1]).unwrap(), &o).unwrap_err();
    assert!(e.to_string().contains("not both"), "{e}");
}

/// Inputs of every kind at once: a corpus grown by an append (tables of several files), a
/// format-1 corpus (kept as a fixture) and values of other types (counts beside floats). The
/// merge keeps each part's types, serves every cell as the inputs do and validates.
#[test]
fn appended_format1_and_float_corpora_merge() {
    let tmp = scratch("merge-kinds");
    let (a, old, c) = (
        tmp.path().join("a.corpus"),
        tmp.path().join("old.corpus"),
        tmp.path().join("c.corpus"),
    );
    convert_to(&[chr21()], &a, 400, None);
    let mut o = ConvertOptions::new(&a);
    o.threads = 1;
    append(&a, &resolve_inputs(&[debian()]).unwrap(), &o).unwrap();
    let ma = Corpus::open(&a).unwrap().manifest().clone();
    assert!(ma.tables["obs"].len() >= 2, "the append added obs files");
    copy_dir(&data("format1/visium49.corpus"), &old);
    let mo = Corpus::open(&old).unwrap().manifest().clone();
    assert_eq!(mo.format_version, 1);
    assert_ne!(
        mo.value_type, ma.value_type,
        "the fixtures hold other value types"
    );

    let r = merge(&[a.clone(), old.clone()], &c, &MergeOptions::default()).unwrap();
    validate(&c).unwrap();
    let m = Corpus::open(&c).unwrap();
    assert_eq!(m.manifest().format_version, 2);
    assert_eq!(r.parts_linked, ma.matrix.parts.len());
    assert_eq!(r.parts_rewritten, mo.matrix.parts.len());
    for (i, p) in m.manifest().matrix.parts.iter().enumerate() {
        let want = if i < ma.matrix.parts.len() {
            ma.part_types(i).1
        } else {
            mo.value_type
        };
        assert_eq!(p.value_type, Some(want), "{}", p.path);
    }
    assert_eq!(
        named_cells(&c),
        [named_cells(&a), named_cells(&old)].concat()
    );
    let obs = table(&c, "obs");
    assert_eq!(obs.num_rows() as u64, ma.n_cells + mo.n_cells);
    let samples: Vec<&str> = m
        .manifest()
        .samples
        .iter()
        .map(|s| s.sample_id.as_str())
        .collect();
    let mut want: Vec<&str> = ma.samples.iter().map(|s| s.sample_id.as_str()).collect();
    want.extend(mo.samples.iter().map(|s| s.sample_id.as_str()));
    assert_eq!(samples, want);
    // The first input's table files that hold the merged schema are its very files.
    let first_obs = a.join(&ma.tables["obs"][0].path);
    let merged_obs = c.join(&m.manifest().tables["obs"][0].path);
    if table(&a, "obs").schema().fields() == obs.schema().fields() {
        assert_eq!(
            std::fs::metadata(&first_obs).unwrap().ino(),
            std::fs::metadata(&merged_obs).unwrap().ino()
        );
    }
    assert_eq!(stats(&c), {
        let mut s = stats(&a);
        let names = m.gene_names().unwrap();
        let old_names = Corpus::open(&old).unwrap().gene_names().unwrap();
        let map: Vec<u32> = old_names
            .iter()
            .map(|n| names.iter().position(|x| x == n).unwrap() as u32)
            .collect();
        s.merge(
            gene_stats::compute(&Corpus::open(&old).unwrap(), 0)
                .unwrap()
                .remapped(&map),
        );
        s
    });
}

/// Two genes of one input that the merged vocabulary would make one (here a gene known by its
/// id alone and a gene known by its symbol alone, both of them one gene of the first input) are
/// refused, naming both: a merge never sums two measured genes silently.
#[test]
fn two_genes_that_would_become_one_are_refused() {
    let Some(py) = python() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "no Python with anndata on CI"
        );
        eprintln!("skipping: no Python with anndata (set CELLARROW_PYTHON)");
        return;
    };
    let tmp = scratch("merge-collide");
    let script = r#"
import sys, anndata as ad, numpy as np, pandas as pd, scipy.sparse as sp
x = sp.csr_matrix(np.array([[1, 2], [3, 0]], dtype=np.float32))
both = pd.DataFrame({"gene_ids": ["ENSG00000000001", "ENSG00000000002"]}, index=["ABC", "XYZ"])
ad.AnnData(X=x, obs=pd.DataFrame(index=["a0", "a1"]), var=both).write_h5ad(sys.argv[1])
apart = pd.DataFrame(index=["ENSG00000000001", "ABC"])
ad.AnnData(X=x, obs=pd.DataFrame(index=["b0", "b1"]), var=apart).write_h5ad(sys.argv[2])
"#;
    let (a_file, b_file) = (tmp.path().join("a.h5ad"), tmp.path().join("b.h5ad"));
    let o = Command::new(py)
        .args(["-c", script])
        .arg(&a_file)
        .arg(&b_file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (a, b, c) = (
        tmp.path().join("a.corpus"),
        tmp.path().join("b.corpus"),
        tmp.path().join("c.corpus"),
    );
    convert_to(&[a_file], &a, 1 << 20, None);
    convert_to(&[b_file], &b, 1 << 20, None);
    assert_eq!(
        Corpus::open(&b).unwrap().n_genes(),
        2,
        "two genes on their own"
    );
    let before = snapshot(&b);
    let e = merge(&[a, b.clone()], &c, &MergeOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("b.corpus") && e.contains("ENSG00000000001") && e.contains("\"ABC\""),
        "{e}"
    );
    assert!(!c.exists());
    assert_eq!(leftovers(&c), Vec::<String>::new());
    assert_eq!(snapshot(&b), before);
}
