//! Gene identity on the real fixtures: ids and symbols, version suffixes, species, an ortholog
//! table between the bundled human (10x v3 chr21) and mouse (Visium brain) files, the genes
//! table through SQL and `inspect`, and model vocabularies in the loader.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use cellarrow::genes::source::{read_identities, GeneColumns};
use cellarrow::genes::{GeneIdentity, GeneVocab};
use cellarrow::h5ad::{H5ad, MatrixSource};
use cellarrow::loader::{BatchOptions, Gatherer};

use crate::common::{chr21, cli, data, python, scratch, stderr};

fn visium() -> PathBuf {
    data("squidpy_visium_mouse_brain_49spots.h5ad")
}

fn pbmc_symbols() -> PathBuf {
    data("debian_sctransform_pbmc_counts.h5ad")
}

fn identities(path: &Path) -> Vec<GeneIdentity> {
    let h5 = H5ad::open(path).unwrap();
    read_identities(&h5, &MatrixSource::X, &GeneColumns::default()).unwrap()
}

/// A column of a corpus table as text (nulls as `None`).
fn column(corpus: &Path, table: &str, name: &str) -> Vec<Option<String>> {
    let batches = cellarrow::corpus::Corpus::open(corpus)
        .unwrap()
        .read_table(table, Some(&[name]))
        .unwrap();
    let mut out = Vec::new();
    for b in batches {
        let c = arrow::compute::cast(b.column(0), &DataType::Utf8).unwrap();
        let c = c.as_string::<i32>();
        out.extend((0..c.len()).map(|i| (!c.is_null(i)).then(|| c.value(i).to_string())));
    }
    out
}

fn ok(o: &std::process::Output, what: &str) {
    assert!(o.status.success(), "{what} failed:\n{}", stderr(o));
}

/// The ortholog table the tests use, as BioMart exports it from the human dataset: the pairs
/// are built here from the fixtures' own ids, pairing a mouse gene with the human gene whose
/// symbol is the mouse symbol in capitals (`S100b` and `S100B`), as one-to-one orthologs;
/// plus one mouse gene without such a partner paired with two human genes (one-to-many),
/// which the default policy must leave unmapped and count as ambiguous. Returns the table's
/// path, the one-to-one pairs (mouse id -> human id) and the ambiguous mouse id.
fn write_orthologs(dir: &Path) -> (PathBuf, HashMap<String, String>, String) {
    let human = identities(&chr21());
    let mouse = identities(&visium());
    let by_symbol: HashMap<String, &GeneIdentity> = human
        .iter()
        .filter_map(|g| Some((g.symbol.clone()?, g)))
        .collect();
    let mut text = String::from(
        "Gene stable ID\tGene stable ID version\tGene name\tMouse gene stable ID\tMouse gene name\tMouse homology type\n",
    );
    let mut pairs = HashMap::new();
    for m in &mouse {
        let (Some(mid), Some(ms)) = (&m.id, &m.symbol) else {
            continue;
        };
        if let Some(h) = by_symbol.get(&ms.to_uppercase()) {
            let hid = h.id.as_ref().unwrap();
            text += &format!(
                "{hid}\t{hid}.1\t{}\t{mid}\t{ms}\tortholog_one2one\n",
                h.symbol.as_ref().unwrap()
            );
            pairs.insert(mid.clone(), hid.clone());
        }
    }
    assert!(
        pairs.len() >= 10,
        "the fixtures share {} genes",
        pairs.len()
    );
    let paired_human: BTreeSet<&String> = pairs.values().collect();
    let amb = mouse
        .iter()
        .find(|m| m.id.as_ref().is_some_and(|id| !pairs.contains_key(id)))
        .unwrap();
    let amb_id = amb.id.clone().unwrap();
    for h in human
        .iter()
        .filter(|h| !paired_human.contains(h.id.as_ref().unwrap()))
        .take(2)
    {
        text += &format!(
            "{}\t\t{}\t{amb_id}\t{}\tortholog_one2many\n",
            h.id.as_ref().unwrap(),
            h.symbol.clone().unwrap_or_default(),
            amb.symbol.clone().unwrap_or_default()
        );
    }
    // A human gene with no mouse ortholog, as BioMart lists it: an empty mouse column.
    text += "ENSG00000000003\t\tTSPAN6\t\t\t\n";
    let path = dir.join("mart_export.txt");
    std::fs::write(&path, text).unwrap();
    (path, pairs, amb_id)
}

#[test]
fn human_and_mouse_share_genes_through_an_ortholog_table() {
    let dir = scratch("genes-orth");
    let (table, pairs, _) = write_orthologs(dir.path());
    let out = dir.path().join("both.corpus");
    let o = cli([
        "convert".as_ref(),
        chr21().as_os_str(),
        visium().as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
        "--orthologs".as_ref(),
        table.as_os_str(),
        "--json".as_ref(),
        "--quiet".as_ref(),
    ]);
    ok(&o, "convert with --orthologs");
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let human = identities(&chr21());
    let mouse = identities(&visium());
    let expected_genes = human.len() + mouse.len() - pairs.len();
    assert_eq!(summary["n_genes"], expected_genes as u64);
    let warnings = summary["warnings"].to_string();
    assert!(
        warnings.contains(&format!(
            "{} genes mapped to orthologs; {} without an ortholog and 1 with ambiguous ones kept as mouse genes",
            pairs.len(),
            mouse.len() - pairs.len() - 1
        )),
        "{warnings}"
    );

    // Species and per-sample counts.
    assert_eq!(
        column(&out, "samples", "species"),
        [Some("human".into()), Some("mouse".into())]
    );
    let mapped = column(&out, "samples", "n_genes_ortholog_mapped");
    assert_eq!(mapped[1].as_deref(), Some(pairs.len().to_string().as_str()));
    assert_eq!(
        column(&out, "samples", "n_genes_ortholog_ambiguous")[1].as_deref(),
        Some("1")
    );

    // Every mapped mouse gene is the human gene's row: its id, its species, the mouse gene
    // in the ortholog columns, measured by both samples.
    let ids = column(&out, "genes", "id");
    let species = column(&out, "genes", "species");
    let o_ids = column(&out, "genes", "ortholog_id");
    let n_samples = column(&out, "genes", "n_samples");
    for (mid, hid) in &pairs {
        let row = ids.iter().position(|i| i.as_deref() == Some(hid)).unwrap();
        assert_eq!(species[row].as_deref(), Some("human"));
        assert_eq!(o_ids[row].as_deref(), Some(mid.as_str()));
        assert_eq!(n_samples[row].as_deref(), Some("2"), "{hid}");
        assert!(!ids.iter().any(|i| i.as_deref() == Some(mid)), "{mid} kept");
    }
    let n_mouse = species
        .iter()
        .filter(|s| s.as_deref() == Some("mouse"))
        .count();
    assert_eq!(
        n_mouse,
        mouse.len() - pairs.len(),
        "unmapped genes are kept"
    );

    // The README's queries.
    let q = |sql: &str| {
        let o = cli([
            "query".as_ref(),
            out.as_os_str(),
            sql.as_ref(),
            "--format".as_ref(),
            "csv".as_ref(),
        ]);
        ok(&o, sql);
        String::from_utf8(o.stdout).unwrap()
    };
    let count = q("SELECT count(*) AS n FROM genes");
    assert_eq!(
        count.lines().nth(1),
        Some(expected_genes.to_string().as_str())
    );
    // Spots of the mouse file expressing each mapped gene, from the file itself; the query
    // takes the one expressed most widely.
    let h5 = H5ad::open(visium()).unwrap();
    let m = h5.matrix(&MatrixSource::X).unwrap();
    let chunk = m.read_rows(0, m.shape().0).unwrap();
    let expressing = |col: usize| {
        (0..chunk.n_rows())
            .filter(|&r| {
                let (a, b) = (chunk.indptr[r] as usize, chunk.indptr[r + 1] as usize);
                (a..b).any(|k| chunk.indices[k] as usize == col && chunk.values[k] != 0.0)
            })
            .count()
    };
    let (n_expressing, mid, hid) = pairs
        .iter()
        .map(|(mid, hid)| {
            let col = mouse
                .iter()
                .position(|m| m.id.as_ref() == Some(mid))
                .unwrap();
            (expressing(col), mid, hid)
        })
        .max()
        .unwrap();
    assert!(n_expressing > 0);
    let msym = mouse
        .iter()
        .find(|m| m.id.as_ref() == Some(mid))
        .unwrap()
        .symbol
        .clone()
        .unwrap();
    let hsym = human
        .iter()
        .find(|h| h.id.as_ref() == Some(hid))
        .unwrap()
        .symbol
        .clone()
        .unwrap();
    let by_mouse = q(&format!(
        "SELECT id, symbol, species, n_samples FROM genes WHERE ortholog_symbol = '{msym}'"
    ));
    assert_eq!(
        by_mouse.lines().nth(1),
        Some(format!("{hid},{hsym},human,2").as_str())
    );
    // Mouse spots that express the gene, found by its human symbol.
    let per_sample = q(&format!(
        "SELECT sample_id, count(*) AS n FROM obs WHERE expr(cell, '{hsym}') > 0 GROUP BY sample_id ORDER BY sample_id"
    ));
    assert!(
        per_sample.contains(&format!(
            "squidpy_visium_mouse_brain_49spots,{n_expressing}"
        )),
        "{per_sample}"
    );

    // The README's example gene, as written there.
    let s100b = pairs
        .iter()
        .find(|(m, _)| {
            mouse
                .iter()
                .any(|g| g.id.as_ref() == Some(*m) && g.symbol.as_deref() == Some("S100b"))
        })
        .map(|(_, h)| h.clone())
        .expect("the fixtures pair S100b with S100B");
    let readme =
        q("SELECT id, symbol, species, n_samples FROM genes WHERE ortholog_symbol = 'S100b'");
    assert_eq!(
        readme.lines().nth(1),
        Some(format!("{s100b},S100B,human,2").as_str())
    );
    let col = mouse
        .iter()
        .position(|g| g.symbol.as_deref() == Some("S100b"))
        .unwrap();
    let spots = expressing(col);
    let readme =
        q("SELECT sample_id, count(*) FROM obs WHERE expr(cell, 'S100B') > 0 GROUP BY sample_id");
    if spots > 0 {
        assert!(
            readme.contains(&format!("squidpy_visium_mouse_brain_49spots,{spots}")),
            "{readme}"
        );
    } else {
        assert!(!readme.contains("squidpy_visium"), "{readme}");
    }

    // inspect reports the keys genes were matched by.
    let o = cli(["inspect".as_ref(), out.as_os_str(), "--json".as_ref()]);
    ok(&o, "inspect");
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["genes"]["matched_by_ortholog"], pairs.len() as u64);
    assert_eq!(info["genes"]["species"]["mouse"], n_mouse as u64);
    let o = cli(["inspect".as_ref(), out.as_os_str()]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!("through orthologs: {}", pairs.len())),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn append_maps_orthologs_as_convert_does() {
    let dir = scratch("genes-append");
    let (table, pairs, _) = write_orthologs(dir.path());
    let out = dir.path().join("grown.corpus");
    // The mouse file first (its log-normalised values fix a float value type), mapped onto
    // human genes; the human file appended finds them by id.
    ok(
        &cli([
            "convert".as_ref(),
            visium().as_os_str(),
            "-o".as_ref(),
            out.as_os_str(),
            "--orthologs".as_ref(),
            table.as_os_str(),
            "--quiet".as_ref(),
        ]),
        "convert",
    );
    let before = column(&out, "genes", "id");
    let o = cli([
        "append".as_ref(),
        out.as_os_str(),
        chr21().as_os_str(),
        "--orthologs".as_ref(),
        table.as_os_str(),
        "--quiet".as_ref(),
    ]);
    ok(&o, "append");
    let ids = column(&out, "genes", "id");
    let human = identities(&chr21());
    let mouse = identities(&visium());
    assert_eq!(ids.len(), human.len() + mouse.len() - pairs.len());
    // The old genes keep their ids: mapped mouse genes are human genes, the others mouse.
    assert_eq!(ids[..before.len()], before[..]);
    for (m, id) in mouse.iter().zip(&before) {
        let mid = m.id.as_ref().unwrap();
        assert_eq!(id.as_ref(), Some(pairs.get(mid).unwrap_or(mid)));
    }
    let n_samples = column(&out, "genes", "n_samples");
    for hid in pairs.values() {
        let row = ids.iter().position(|i| i.as_deref() == Some(hid)).unwrap();
        assert_eq!(n_samples[row].as_deref(), Some("2"), "{hid}");
    }
    let o = cli([
        "append".as_ref(),
        out.as_os_str(),
        pbmc_symbols().as_os_str(),
        "--gene-key".as_ref(),
        "symbol".as_ref(),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("the corpus matches genes by id; append with --gene-key id"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_symbol_only_file_matches_by_symbol_under_either_key() {
    let dir = scratch("genes-symbols");
    let human: BTreeSet<String> = identities(&chr21())
        .into_iter()
        .filter_map(|g| g.symbol)
        .collect();
    let pbmc: Vec<GeneIdentity> = identities(&pbmc_symbols());
    assert!(pbmc.iter().all(|g| g.id.is_none()), "pbmc has symbols only");
    let shared = pbmc
        .iter()
        .filter(|g| human.contains(g.symbol.as_ref().unwrap()))
        .count();
    assert!(shared > 0);
    for key in ["id", "symbol"] {
        let out = dir.path().join(format!("{key}.corpus"));
        // The symbol-only file first: matching does not depend on the file order.
        let o = cli([
            "convert".as_ref(),
            pbmc_symbols().as_os_str(),
            chr21().as_os_str(),
            "-o".as_ref(),
            out.as_os_str(),
            "--gene-key".as_ref(),
            key.as_ref(),
            "--json".as_ref(),
        ]);
        ok(&o, key);
        let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(
            summary["n_genes"],
            (pbmc.len() + human.len() - shared) as u64,
            "{key}"
        );
        // Symbols say nothing about species; the ids of the other file do.
        assert_eq!(
            summary["species"]["debian_sctransform_pbmc_counts"],
            "unknown"
        );
        assert_eq!(summary["species"]["scanpy_10x_v3_chr21_counts"], "human");
        let info: serde_json::Value = serde_json::from_slice(
            &cli(["inspect".as_ref(), out.as_os_str(), "--json".as_ref()]).stdout,
        )
        .unwrap();
        // Under either key the shared genes joined by symbol (the pbmc file has no ids).
        assert_eq!(info["genes"]["shared"], shared as u64, "{key}");
        assert_eq!(info["genes"]["matched_by_symbol"], shared as u64, "{key}");
        // Names are ids where genes have them under `id`, symbols under `symbol`.
        let names = column(&out, "genes", "name");
        let has_ensg = names
            .iter()
            .any(|n| n.as_deref().is_some_and(|n| n.starts_with("ENSG")));
        assert_eq!(has_ensg, key == "id", "{key}");
    }
}

#[test]
fn version_suffixes_are_one_gene() {
    let Some(py) = python() else {
        eprintln!("skipping: no Python with anndata (set CELLARROW_PYTHON)");
        return;
    };
    let dir = scratch("genes-version");
    let versioned = dir.path().join("chr21_versioned.h5ad");
    let script = format!(
        "import anndata\na = anndata.read_h5ad({:?})\na.var['gene_ids'] = [g + '.7' for g in a.var['gene_ids']]\na.write_h5ad({:?})\n",
        chr21().display().to_string(),
        versioned.display().to_string()
    );
    let o = std::process::Command::new(py)
        .args(["-c", &script])
        .output()
        .unwrap();
    ok(&o, "writing the versioned copy");
    let out = dir.path().join("v.corpus");
    let o = cli([
        "convert".as_ref(),
        versioned.as_os_str(),
        chr21().as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
        "--json".as_ref(),
    ]);
    ok(&o, "convert");
    let human = identities(&chr21());
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["n_genes"], human.len() as u64);
    let versions = column(&out, "genes", "id_version");
    assert!(versions.iter().all(|v| v.as_deref() == Some("7")));
    let ids = column(&out, "genes", "id");
    assert_eq!(ids, human.iter().map(|h| h.id.clone()).collect::<Vec<_>>());
}

/// The chr21 fixture converted into `dir/c.corpus`.
fn convert_chr21(dir: &Path) -> PathBuf {
    let out = dir.join("c.corpus");
    ok(
        &cli([
            "convert".as_ref(),
            chr21().as_os_str(),
            "-o".as_ref(),
            out.as_os_str(),
            "--quiet".as_ref(),
        ]),
        "convert",
    );
    out
}

#[test]
fn a_model_vocabulary_sets_the_gene_order_and_space_of_batches() {
    let dir = scratch("genes-vocab");
    let out = convert_chr21(dir.path());
    let human = identities(&chr21());
    // A vocabulary in its own order: every third gene, by symbol or by versioned id, reversed,
    // with two genes the corpus lacks.
    let mut vocab: Vec<String> = vec!["NOT_A_GENE".into()];
    let mut want: HashMap<usize, u32> = HashMap::new(); // corpus gene -> vocab position
    for (g, h) in human.iter().enumerate().rev().step_by(3) {
        let entry = if g % 2 == 0 {
            h.symbol.clone().unwrap()
        } else {
            format!("{}.99", h.id.as_ref().unwrap())
        };
        // A symbol two genes share names no gene; such entries stay absent.
        if human.iter().filter(|x| x.symbol == h.symbol).count() > 1 && g % 2 == 0 {
            continue;
        }
        want.insert(g, vocab.len() as u32);
        vocab.push(entry);
    }
    vocab.push("ENSG99999999999".into());
    let corpus = Arc::new(cellarrow::Corpus::open(&out).unwrap());
    let plain = Gatherer::new(corpus.clone(), BatchOptions::default()).unwrap();
    let remapped = Gatherer::new(
        corpus.clone(),
        BatchOptions {
            genes: Some(GeneVocab::List(vocab.clone())),
            ..BatchOptions::default()
        },
    )
    .unwrap();
    let v = remapped.vocab().unwrap();
    assert_eq!(v.present, want.len());
    assert_eq!(v.size, vocab.len());
    assert_eq!(v.missing, ["NOT_A_GENE", "ENSG99999999999"]);
    assert_eq!(
        v.report(),
        format!("{} of {} vocabulary genes present", want.len(), vocab.len())
    );
    let cells: Vec<u64> = (0..corpus.n_cells()).rev().collect();
    let a = plain.gather(&cells, None).unwrap();
    let b = remapped.gather(&cells, None).unwrap();
    let rows = |batch: &arrow::record_batch::RecordBatch| -> Vec<Vec<(u32, f64)>> {
        let idx = batch.column_by_name("indices").unwrap().as_list::<i32>();
        let val = batch.column_by_name("values").unwrap().as_list::<i32>();
        (0..batch.num_rows())
            .map(|r| {
                let i = arrow::compute::cast(&idx.value(r), &DataType::UInt32).unwrap();
                let v = arrow::compute::cast(&val.value(r), &DataType::Float64).unwrap();
                let i = i.as_primitive::<arrow::datatypes::UInt32Type>();
                let v = v.as_primitive::<arrow::datatypes::Float64Type>();
                i.values()
                    .iter()
                    .copied()
                    .zip(v.values().iter().copied())
                    .collect()
            })
            .collect()
    };
    let (plain_rows, vocab_rows) = (rows(&a), rows(&b));
    let mut kept = 0;
    for (p, m) in plain_rows.iter().zip(&vocab_rows) {
        let mut expect: Vec<(u32, f64)> = p
            .iter()
            .filter_map(|&(g, x)| want.get(&(g as usize)).map(|&pos| (pos, x)))
            .collect();
        expect.sort_by_key(|e| e.0);
        assert_eq!(m, &expect);
        kept += m.len();
    }
    assert!(kept > 0, "the vocabulary keeps some non-zeros");

    // The command line: --genes FILE reports the overlap once; duplicates are an error
    // naming the file and the value.
    let file = dir.path().join("vocab.txt");
    std::fs::write(&file, vocab.join("\n")).unwrap();
    let o = cli([
        "sample".as_ref(),
        out.as_os_str(),
        "--genes".as_ref(),
        file.as_os_str(),
        "--summary".as_ref(),
    ]);
    ok(&o, "sample --genes");
    assert_eq!(stderr(&o).matches(&v.report()).count(), 1, "{}", stderr(&o));
    let dup = dir.path().join("dup.txt");
    std::fs::write(&dup, format!("{}\nA\n{}\n", vocab[1], vocab[1])).unwrap();
    let o = cli([
        "sample".as_ref(),
        out.as_os_str(),
        "--genes".as_ref(),
        dup.as_os_str(),
        "--summary".as_ref(),
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("dup.txt")
            && e.contains(&format!("lists {:?} twice (entries 1 and 3)", vocab[1])),
        "{e}"
    );
}

/// numpy.quantile's linear interpolation, for sorted, non-empty data.
fn np_quantile(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    let virt = (n - 1) as f64 * q;
    if virt >= (n - 1) as f64 {
        return sorted[n - 1];
    }
    let prev = virt.floor();
    let (a, b) = (sorted[prev as usize], sorted[prev as usize + 1]);
    let t = virt - prev;
    if t >= 0.5 {
        b - (b - a) * (1.0 - t)
    } else {
        a + (b - a) * t
    }
}

#[test]
fn tokens_in_a_model_vocabulary_are_its_positions() {
    use arrow::datatypes::{Float32Type, Int32Type, UInt8Type};
    use cellarrow::loader::{TokenMode, TokenOptions};

    let dir = scratch("genes-tokens");
    let out = convert_chr21(dir.path());
    let corpus = Arc::new(cellarrow::Corpus::open(&out).unwrap());
    let names = corpus.gene_names().unwrap();
    // A shuffled vocabulary of two thirds of the corpus genes and three it lacks.
    let mut entries: Vec<(u64, String)> = names
        .iter()
        .enumerate()
        .filter(|(g, _)| g % 3 != 1)
        .map(|(_, n)| n.clone())
        .chain((0..3).map(|i| format!("NOT_A_GENE_{i}")))
        .enumerate()
        .map(|(i, n)| ((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 7, n))
        .collect();
    entries.sort();
    let vocab: Vec<String> = entries.into_iter().map(|(_, n)| n).collect();
    let pos: HashMap<&str, u32> = vocab
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i as u32))
        .collect();
    let lut: Vec<Option<u32>> = names.iter().map(|n| pos.get(n.as_str()).copied()).collect();
    // Medians for most genes, exact in f32, by name.
    let medians: Vec<Option<f64>> = (0..names.len())
        .map(|g| (g % 5 != 0).then(|| 0.5 * (g % 7 + 1) as f64))
        .collect();
    let table = dir.path().join("medians.tsv");
    let mut text = String::from("gene\tmedian\n");
    for (n, m) in names.iter().zip(&medians) {
        if let Some(m) = m {
            text.push_str(&format!("{n}\t{m}\n"));
        }
    }
    std::fs::write(&table, text).unwrap();

    let cells: Vec<u64> = (0..corpus.n_cells()).collect();
    let plain = Gatherer::new(corpus.clone(), BatchOptions::default())
        .unwrap()
        .gather(&cells, None)
        .unwrap();
    let idx = plain.column_by_name("indices").unwrap().as_list::<i32>();
    let val = plain.column_by_name("values").unwrap().as_list::<i32>();
    let row = |r: usize| -> Vec<(usize, f64)> {
        let i = arrow::compute::cast(&idx.value(r), &DataType::UInt32).unwrap();
        let v = arrow::compute::cast(&val.value(r), &DataType::Float64).unwrap();
        let i = i.as_primitive::<arrow::datatypes::UInt32Type>().values();
        let v = v.as_primitive::<arrow::datatypes::Float64Type>().values();
        i.iter()
            .map(|&g| g as usize)
            .zip(v.iter().copied())
            .collect()
    };
    let tokenized = |mode: TokenMode, k: usize, n_bins: usize| {
        let g = Gatherer::new(
            corpus.clone(),
            BatchOptions {
                genes: Some(GeneVocab::List(vocab.clone())),
                tokens: Some(TokenOptions {
                    mode,
                    top_k: k,
                    n_bins,
                    gene_medians: (mode == TokenMode::Rank).then(|| table.clone()),
                }),
                ..BatchOptions::default()
            },
        )
        .unwrap();
        assert_eq!(g.vocab().unwrap().missing.len(), 3);
        g.gather(&cells, None).unwrap()
    };
    let fixed = |b: &arrow::record_batch::RecordBatch, name: &str| {
        b.column_by_name(name)
            .unwrap()
            .as_fixed_size_list()
            .values()
            .clone()
    };

    for k in [8, 4096] {
        let b = tokenized(TokenMode::Rank, k, 51);
        let (tok, tv, mask) = (
            fixed(&b, "tokens"),
            fixed(&b, "token_values"),
            fixed(&b, "attention_mask"),
        );
        let tok = tok.as_primitive::<Int32Type>().values();
        let tv = tv.as_primitive::<Float32Type>().values();
        let mask = mask.as_primitive::<UInt8Type>().values();
        let mut left_out = 0;
        for r in 0..cells.len() {
            let entries = row(r);
            // The total counts every value, genes outside the vocabulary too.
            let total = entries.iter().map(|e| e.1).sum::<f64>() as f32;
            let mut keyed: Vec<(f32, u32)> = entries
                .iter()
                .filter_map(|&(g, x)| {
                    let (p, m) = (lut[g]?, medians[g]? as f32);
                    (x as f32 > 0.0 && m > 0.0).then(|| (x as f32 / m, p))
                })
                .collect();
            left_out += entries.iter().filter(|e| lut[e.0].is_none()).count();
            keyed.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            keyed.truncate(k);
            let at = r * k;
            for j in 0..k {
                match keyed.get(j) {
                    Some(&(key, p)) => {
                        assert_eq!(tok[at + j], p as i32, "cell {r} token {j}");
                        assert_eq!(tv[at + j], key / total, "cell {r} token {j}");
                        assert_eq!(mask[at + j], 1);
                    }
                    None => {
                        assert_eq!((tok[at + j], tv[at + j], mask[at + j]), (-1, 0.0, 0));
                    }
                }
            }
        }
        assert!(left_out > 0, "some non-zeros lie outside the vocabulary");
    }

    for (n_bins, k) in [(51, 16), (7, 4096)] {
        let b = tokenized(TokenMode::Bins, k, n_bins);
        let (tok, tv, mask) = (
            fixed(&b, "tokens"),
            fixed(&b, "token_values"),
            fixed(&b, "attention_mask"),
        );
        let tok = tok.as_primitive::<Int32Type>().values();
        let tv = tv.as_primitive::<Int32Type>().values();
        let mask = mask.as_primitive::<UInt8Type>().values();
        let levels: Vec<f64> = (0..n_bins - 1)
            .map(|j| {
                if j == n_bins - 2 {
                    1.0
                } else {
                    j as f64 * (1.0 / (n_bins - 2) as f64)
                }
            })
            .collect();
        for r in 0..cells.len() {
            // Genes outside the vocabulary are dropped before binning.
            let mut kept: Vec<(u32, f64)> = row(r)
                .into_iter()
                .filter_map(|(g, x)| Some((lut[g]?, x)))
                .filter(|&(_, x)| x != 0.0 && !x.is_nan())
                .collect();
            let mut sorted: Vec<f64> = kept.iter().map(|e| e.1).collect();
            sorted.sort_by(f64::total_cmp);
            kept.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            kept.truncate(k);
            kept.sort_by_key(|e| e.0);
            let edges: Vec<f64> = if sorted.is_empty() {
                Vec::new()
            } else {
                levels.iter().map(|&q| np_quantile(&sorted, q)).collect()
            };
            let at = r * k;
            for j in 0..k {
                match kept.get(j) {
                    Some(&(p, x)) => {
                        let bin = edges.iter().filter(|&&e| e <= x).count() as i32;
                        assert_eq!(
                            (tok[at + j], tv[at + j], mask[at + j]),
                            (p as i32, bin, 1),
                            "cell {r} token {j}"
                        );
                    }
                    None => assert_eq!((tok[at + j], tv[at + j], mask[at + j]), (-1, 0, 0)),
                }
            }
        }
    }

    // The command line: --tokens with --genes reports the overlap once; token ids stay below
    // the vocabulary's size.
    let file = dir.path().join("vocab.txt");
    std::fs::write(&file, vocab.join("\n")).unwrap();
    let arrow_out = dir.path().join("tokens.arrow");
    let tokens_args = [
        "--genes".as_ref(),
        file.as_os_str(),
        "--tokens".as_ref(),
        "bins".as_ref(),
        "--top-k".as_ref(),
        "32".as_ref(),
    ];
    let sample = |extra: &[&std::ffi::OsStr]| {
        let mut args: Vec<&std::ffi::OsStr> = vec!["sample".as_ref(), out.as_os_str()];
        args.extend(tokens_args);
        args.extend(extra);
        cli(&args)
    };
    let o = sample(&["-o".as_ref(), arrow_out.as_os_str()]);
    ok(&o, "sample --genes --tokens");
    let report = format!(
        "{} of {} vocabulary genes present",
        vocab.len() - 3,
        vocab.len()
    );
    assert_eq!(stderr(&o).matches(&report).count(), 1, "{}", stderr(&o));
    let reader =
        arrow::ipc::reader::StreamReader::try_new(std::fs::File::open(&arrow_out).unwrap(), None)
            .unwrap();
    let (mut n, mut tokens) = (0, 0u64);
    for b in reader {
        let b = b.unwrap();
        let t = fixed(&b, "tokens");
        let t = t.as_primitive::<Int32Type>().values();
        assert!(t
            .iter()
            .all(|&x| x >= -1 && (x as i64) < vocab.len() as i64));
        let mask = fixed(&b, "attention_mask");
        tokens += mask
            .as_primitive::<UInt8Type>()
            .values()
            .iter()
            .map(|&x| x as u64)
            .sum::<u64>();
        n += b.num_rows();
    }
    assert_eq!(n as u64, corpus.n_cells());
    assert!(tokens > 0);

    // The summary counts the tokens served, and bench reports the overlap once too.
    let o = sample(&["--summary".as_ref()]);
    ok(&o, "sample --tokens --summary");
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["tokens", &tokens.to_string()]),
        "{text}"
    );
    let mut args: Vec<&std::ffi::OsStr> = vec!["bench".as_ref(), out.as_os_str()];
    args.extend(tokens_args);
    args.extend(
        [
            "--samplers",
            "random,groups",
            "--threads",
            "0",
            "--shards",
            "0",
        ]
        .map(std::ffi::OsStr::new),
    );
    let o = cli(&args);
    ok(&o, "bench --genes --tokens");
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(
        text.matches(&format!("vocabulary: {report}")).count(),
        1,
        "{text}"
    );
}

#[test]
fn an_ortholog_table_without_its_columns_is_refused_naming_them() {
    let dir = scratch("genes-bad-orth");
    let bad = dir.path().join("orthologs.tsv");
    std::fs::write(&bad, "human_gene_id\tconfidence\nENSG00000000003\t1\n").unwrap();
    let out = dir.path().join("x.corpus");
    let o = cli([
        "convert".as_ref(),
        chr21().as_os_str(),
        visium().as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
        "--orthologs".as_ref(),
        bad.as_os_str(),
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("orthologs.tsv") && e.contains("its columns are: human_gene_id, confidence"),
        "{e}"
    );
    assert!(!out.exists(), "no corpus is written");
    assert!(crate::common::leftovers(&out).is_empty());
}
