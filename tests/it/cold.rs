//! The cold layout (`--layout cold`): compressed chunks read back equal to the hot layout
//! through `Corpus` and the loader, validate and `validate --against` pass, a flipped byte is
//! an error naming the part and never a panic, and appends onto a cold corpus stay cold.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use cellarrow::convert::{append, convert, resolve_inputs, ConvertOptions};
use cellarrow::corpus::{validate, PartLayout};
use cellarrow::loader::{Gatherer, SamplerKind, SamplerSpec};
use cellarrow::Corpus;

use crate::common::*;

/// Converts `files` into `dir/NAME` with small parts, hot or cold (chunks of 100 cells, so
/// that chunks end inside parts and parts end inside chunks' worth of cells).
fn corpus(dir: &Path, name: &str, files: &[PathBuf], cold: bool) -> PathBuf {
    let dest = dir.join(name);
    let mut o = ConvertOptions::new(&dest);
    o.part_cells = 3000;
    o.threads = 1;
    if cold {
        o.layout = PartLayout::Cold;
        o.chunk_cells = Some(100);
    }
    convert(&resolve_inputs(files).unwrap(), &o).unwrap();
    dest
}

/// Every cell's gene ids and values, read through `checked_batch`.
fn rows(c: &Corpus) -> Vec<(Vec<u32>, Vec<f64>)> {
    (0..c.n_cells())
        .map(|cell| {
            let (b, r) = c.checked_batch(cell).unwrap();
            let range = b.row_range(r);
            (
                b.indices().slice(range.clone()).to_u32_vec(),
                b.values().slice(range).to_f64_vec(),
            )
        })
        .collect()
}

/// The batches of one shard of one epoch, as the loader gathers them.
fn shard(corpus: &Arc<Corpus>, kind: SamplerKind, rank: u32) -> Vec<RecordBatch> {
    let mut spec = SamplerSpec {
        batch_size: Some(64),
        rank,
        world_size: 2,
        epoch: 1,
        shuffle_run: 16,
        shuffle_window: 8,
        ..SamplerSpec::new(kind, 11)
    };
    let cohort = spec.select(corpus, None).unwrap();
    let plan = spec.plan(corpus, cohort).unwrap().plan;
    let g = Gatherer::new(corpus.clone(), spec.batch_options()).unwrap();
    (0..plan.n_batches())
        .map(|i| g.gather_request(&plan.batch(i).unwrap()).unwrap())
        .collect()
}

#[test]
fn cold_equals_hot_through_the_corpus_and_the_loader() {
    let tmp = scratch("cold-equal");
    let files = [mouse(), chr21()];
    let hot = Arc::new(Corpus::open(corpus(tmp.path(), "hot", &files, false)).unwrap());
    let cold = Arc::new(Corpus::open(corpus(tmp.path(), "cold", &files, true)).unwrap());
    let parts = &cold.manifest().matrix.parts;
    assert!(parts.len() >= 4, "several parts: {}", parts.len());
    assert!(parts
        .iter()
        .all(|p| p.layout == PartLayout::Cold && p.chunk_cells == Some(100)));
    assert!(hot
        .manifest()
        .matrix
        .parts
        .iter()
        .all(|p| p.layout == PartLayout::Hot));
    assert_eq!(cold.options_layout(), Some("cold".into()));
    // Chunks hold at most 100 cells: every chunk is a batch of the reader.
    assert!(cold.n_batches() >= (cold.n_cells() as usize).div_ceil(100));
    assert_eq!(
        (cold.n_cells(), cold.nnz(), cold.n_genes()),
        (hot.n_cells(), hot.nnz(), hot.n_genes())
    );
    assert_eq!(rows(&hot), rows(&cold));
    // The lending accessors, on cells spread over every chunk.
    let mut rng = Rng(0x5eed_c01d);
    for _ in 0..500 {
        let cell = rng.below(cold.n_cells());
        assert_eq!(
            hot.indices(cell).to_u32_vec(),
            cold.indices(cell).to_u32_vec()
        );
        assert_eq!(
            hot.values(cell).to_f64_vec(),
            cold.values(cell).to_f64_vec()
        );
        assert_eq!(hot.row_nnz(cell), cold.row_nnz(cell));
    }
    assert_eq!(
        hot.matrix_record_batches()
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .sum::<usize>(),
        cold.matrix_record_batches()
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .sum::<usize>()
    );
    for kind in [SamplerKind::Random, SamplerKind::Shuffle] {
        for rank in 0..2 {
            let (h, c) = (shard(&hot, kind, rank), shard(&cold, kind, rank));
            assert!(!h.is_empty());
            assert_eq!(h, c, "{kind:?}, rank {rank}");
        }
    }
    // A cache far smaller than one chunk: every chunk is decoded again on each use, and the
    // batches stay the same. (The cache is the process's: other tests only get slower.)
    cellarrow::corpus::set_cold_cache_bytes(1 << 10);
    let (h, c) = (
        shard(&hot, SamplerKind::Shuffle, 1),
        shard(&cold, SamplerKind::Shuffle, 1),
    );
    cellarrow::corpus::set_cold_cache_bytes(256 << 20);
    assert_eq!(h, c, "shuffle with a cache smaller than a chunk");
}

/// The corpus's recorded layout option, as appends read it.
trait OptionsLayout {
    fn options_layout(&self) -> Option<String>;
}

impl OptionsLayout for Corpus {
    fn options_layout(&self) -> Option<String> {
        self.manifest()
            .options
            .get("layout")
            .and_then(|l| l.as_str())
            .map(str::to_owned)
    }
}

#[test]
fn cold_corpora_are_smaller_and_pass_validate_and_validate_against() {
    let tmp = scratch("cold-validate");
    let hot = corpus(tmp.path(), "hot", &[mouse()], false);
    let cold = corpus(tmp.path(), "cold", &[mouse()], true);
    let matrix_bytes = |d: &Path| -> u64 {
        Corpus::open(d)
            .unwrap()
            .manifest()
            .files
            .iter()
            .filter(|f| f.path.starts_with("matrix/"))
            .map(|f| f.bytes)
            .sum()
    };
    let nnz = Corpus::open(&cold).unwrap().nnz() as f64;
    let (h, c) = (
        matrix_bytes(&hot) as f64 / nnz,
        matrix_bytes(&cold) as f64 / nnz,
    );
    assert!(c <= 2.0, "cold: {c:.2} bytes per non-zero (hot {h:.2})");
    let report = validate(&cold).unwrap();
    assert_eq!(report.nnz_checked as f64, nnz);
    let cmp = cellarrow::convert::verify::against(&cold, &[mouse()]).unwrap();
    assert_eq!(cmp.nnz as f64, nnz);
    let o = cli([
        "validate".as_ref(),
        cold.as_os_str(),
        "--against".as_ref(),
        mouse().as_os_str(),
    ]);
    assert_no_panic("validate --against", &o);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// The corpus with one file's recorded size and sha256 replaced by those of its bytes now, so
/// that a flip gets past the checksums and reaches the chunk decoder.
fn trust(dest: &Path, rel: &str) {
    let path = dest.join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let (sha, bytes) = cellarrow::corpus::sha256_file(&dest.join(rel)).unwrap();
    for f in m["files"].as_array_mut().unwrap() {
        if f["path"] == rel {
            f["sha256"] = sha.clone().into();
            f["bytes"] = bytes.into();
        }
    }
    std::fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();
}

/// Opens the corpus and reads every cell through the checked path: an error is fine, a panic
/// is not.
fn read_all(dest: &Path) -> Result<f64, cellarrow::Error> {
    let c = Corpus::open(dest)?;
    let mut sum = 0.0;
    for cell in 0..c.n_cells() {
        let (b, r) = c.checked_batch(cell)?;
        sum += b
            .values()
            .slice(b.row_range(r))
            .to_f64_vec()
            .iter()
            .sum::<f64>();
    }
    Ok(sum)
}

#[test]
fn flipped_bytes_in_a_cold_part_are_errors_naming_it_never_panics() {
    let tmp = scratch("cold-flip");
    let dest = corpus(tmp.path(), "cold", &[chr21()], true);
    let rel = Corpus::open(&dest).unwrap().manifest().matrix.parts[0]
        .path
        .clone();
    let path = dest.join(&rel);
    let good = std::fs::read(&path).unwrap();
    let manifest = std::fs::read(dest.join("manifest.json")).unwrap();
    let good_sum = read_all(&dest).unwrap();
    let mut rng = Rng(0xf11b_f11b);
    let mut offsets: Vec<usize> = (0..150).map(|k| k * good.len() / 150).collect();
    offsets.extend((0..150).map(|_| rng.below(good.len() as u64) as usize));
    offsets.extend([good.len() - 1, good.len() - 7, good.len() - 10]);
    let (mut caught_by_decoder, mut flips) = (0, 0);
    for off in offsets {
        let mut bad = good.clone();
        let mask = (rng.below(255) + 1) as u8;
        bad[off] ^= mask;
        std::fs::write(&path, &bad).unwrap();
        std::fs::write(dest.join("manifest.json"), &manifest).unwrap();
        flips += 1;
        let what = format!("{rel} byte {off} ^ {mask:#04x}");
        // With the true checksums, validate finds every flip and names the part.
        let e = catch_unwind(AssertUnwindSafe(|| validate(&dest)))
            .unwrap_or_else(|_| panic!("validate panicked on {what}"))
            .expect_err(&what);
        assert!(e.to_string().contains(&rel), "{what}: {e}");
        // Reading without hashing: an error naming the part, or data; never a panic.
        let r = catch_unwind(AssertUnwindSafe(|| read_all(&dest)))
            .unwrap_or_else(|_| panic!("reading panicked on {what}"));
        if let Err(e) = &r {
            assert!(e.to_string().contains(&rel), "{what}: {e}");
        }
        // With checksums that agree with the flipped bytes, the decoder and the structural
        // checks are all that stand between the flip and the reader.
        trust(&dest, &rel);
        let v = catch_unwind(AssertUnwindSafe(|| validate(&dest)))
            .unwrap_or_else(|_| panic!("validate panicked on {what} (trusted)"));
        let r = catch_unwind(AssertUnwindSafe(|| read_all(&dest)))
            .unwrap_or_else(|_| panic!("reading panicked on {what} (trusted)"));
        match (&v, &r) {
            (Err(e), _) => {
                assert!(e.to_string().contains(&rel), "{what}: {e}");
                caught_by_decoder += 1;
            }
            // A flip in padding or in a footer field that no reader uses changes nothing.
            (Ok(_), Ok(sum)) if *sum == good_sum => {}
            // A flip zstd decodes to other values that still form valid cells: only the
            // checksum can tell, and validate checks it (above).
            (Ok(_), _) => {}
        }
    }
    std::fs::write(&path, &good).unwrap();
    std::fs::write(dest.join("manifest.json"), &manifest).unwrap();
    validate(&dest).unwrap();
    eprintln!("the decoder alone found {caught_by_decoder} of {flips} flips");
    assert!(
        caught_by_decoder * 2 > flips,
        "the decoder alone found {caught_by_decoder} of {flips} flips"
    );
}

#[test]
fn appends_onto_a_cold_corpus_write_cold_parts() {
    let tmp = scratch("cold-append");
    let dest = corpus(tmp.path(), "cold", &[chr21()], true);
    let opts = ConvertOptions::new(&dest);
    append(&dest, &resolve_inputs(&[mouse()]).unwrap(), &opts).unwrap();
    let c = Corpus::open(&dest).unwrap();
    let parts = &c.manifest().matrix.parts;
    assert!(parts.len() >= 2);
    assert!(
        parts
            .iter()
            .all(|p| p.layout == PartLayout::Cold && p.chunk_cells == Some(100)),
        "{parts:?}"
    );
    validate(&dest).unwrap();
    // The cells equal those of one hot conversion of both files.
    let hot = Corpus::open(corpus(tmp.path(), "hot", &[chr21(), mouse()], false)).unwrap();
    assert_eq!(rows(&hot), rows(&c));
    let cmp = cellarrow::convert::verify::against(&dest, &[chr21(), mouse()]).unwrap();
    assert_eq!(cmp.nnz, c.nnz());
}

#[test]
fn merge_links_cold_parts_as_they_are_and_rewrites_them_cold() {
    use cellarrow::convert::{merge, MergeOptions};
    let tmp = scratch("cold-merge");
    // chr21 (human) first: its parts keep their gene ids and are linked; the mouse genes are
    // new to it, so the mouse parts are rewritten with remapped ids, in their own layout.
    let a = corpus(tmp.path(), "a", &[chr21()], true);
    let b = corpus(tmp.path(), "b", &[mouse()], true);
    let out = tmp.path().join("merged");
    let r = merge(&[a.clone(), b.clone()], &out, &MergeOptions::default()).unwrap();
    assert!(r.parts_linked + r.parts_copied >= 1, "{r:?}");
    assert!(r.parts_rewritten >= 1, "{r:?}");
    let m = Corpus::open(&out).unwrap();
    assert!(m
        .manifest()
        .matrix
        .parts
        .iter()
        .all(|p| p.layout == PartLayout::Cold && p.chunk_cells == Some(100)));
    validate(&out).unwrap();
    let hot = Corpus::open(corpus(tmp.path(), "hot", &[chr21(), mouse()], false)).unwrap();
    assert_eq!(rows(&hot), rows(&m));
}

#[test]
fn a_manifest_that_misstates_a_part_layout_is_refused() {
    let tmp = scratch("cold-manifest");
    let dest = corpus(tmp.path(), "cold", &[chr21()], true);
    let path = dest.join("manifest.json");
    let good: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let open_with = |edit: &dyn Fn(&mut serde_json::Value)| -> String {
        let mut m = good.clone();
        edit(&mut m["matrix"]["parts"][0]);
        std::fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();
        let r = catch_unwind(AssertUnwindSafe(|| read_all(&dest))).expect("no panic");
        r.expect_err("refused").to_string()
    };
    let e = open_with(&|p| {
        p.as_object_mut().unwrap().remove("chunk_cells");
    });
    assert!(e.contains("no chunk_cells"), "{e}");
    let e = open_with(&|p| p["layout"] = "warm".into());
    assert!(e.contains("layout"), "{e}");
    let e = open_with(&|p| p["chunk_cells"] = 0.into());
    assert!(e.contains("chunk_cells"), "{e}");
    // Read as hot, a cold part is not an Arrow IPC stream; read as cold with smaller chunks,
    // its chunks hold too many cells.
    let e = open_with(&|p| {
        let o = p.as_object_mut().unwrap();
        o.remove("layout");
        o.remove("chunk_cells");
    });
    assert!(e.contains("matrix/part-00000.arrow"), "{e}");
    let e = open_with(&|p| p["chunk_cells"] = 10.into());
    assert!(e.contains("more than chunk_cells 10"), "{e}");
    std::fs::write(&path, serde_json::to_vec(&good).unwrap()).unwrap();
    validate(&dest).unwrap();
}

/// Each chunk's checksum in the part's footer, and the footer's in the manifest, catch what
/// the whole part's checksum catches when it is the part alone that a reader trusts (a remote
/// reader fetches chunks, not parts): with the file's checksum made to agree with a flipped
/// byte, validate still finds a flip in a chunk and one in the footer, and names which.
#[test]
fn chunk_and_footer_checksums_catch_flips_the_file_checksum_was_made_to_miss() {
    let tmp = scratch("cold-chunk-sums");
    let dest = corpus(tmp.path(), "cold", &[chr21()], true);
    let c = Corpus::open(&dest).unwrap();
    let part = c.manifest().matrix.parts[0].clone();
    let footer = part
        .footer
        .clone()
        .expect("a cold part has its footer in the manifest");
    drop(c);
    let path = dest.join(&part.path);
    let good = std::fs::read(&path).unwrap();
    let manifest = std::fs::read(dest.join("manifest.json")).unwrap();
    for (off, says) in [
        (good.len() / 2, "its bytes hash to"),
        (good.len() - footer.bytes as usize + 8, "footer sha256"),
    ] {
        let mut bad = good.clone();
        bad[off] ^= 0x10;
        std::fs::write(&path, &bad).unwrap();
        std::fs::write(dest.join("manifest.json"), &manifest).unwrap();
        trust(&dest, &part.path);
        let e = validate(&dest).expect_err("a flipped byte").to_string();
        assert!(
            e.contains(&part.path) && e.contains(says),
            "byte {off}: {e}"
        );
    }
}

/// The field names of the schema of cold part `part` of the corpus at `dir`.
fn part_columns(dir: &Path, c: &Corpus, part: usize) -> Vec<String> {
    let path = dir.join(&c.manifest().matrix.parts[part].path);
    let reader =
        arrow::ipc::reader::FileReader::try_new(std::fs::File::open(path).unwrap(), None).unwrap();
    reader
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect()
}

/// Cold parts written before byte planes (tests/data/cold1: whole-number `index_deltas` and
/// `values`) read as the same cells as a hot conversion, pass validate, and grow by an append
/// whose new parts are in byte planes, the two kinds read side by side.
#[test]
fn cold_parts_without_byte_planes_still_read_and_grow() {
    let tmp = scratch("cold-v1");
    let old = tmp.path().join("old");
    copy_dir(&data("cold1/chr21.corpus"), &old);
    let c = Corpus::open(&old).unwrap();
    assert_eq!(part_columns(&old, &c, 0), ["index_deltas", "values"]);
    let hot = Corpus::open(corpus(tmp.path(), "hot", &[chr21()], false)).unwrap();
    assert_eq!(rows(&hot), rows(&c));
    validate(&old).unwrap();

    append(
        &old,
        &resolve_inputs(&[mouse()]).unwrap(),
        &ConvertOptions::new(&old),
    )
    .unwrap();
    let grown = Corpus::open(&old).unwrap();
    let n = grown.manifest().matrix.parts.len();
    assert!(n >= 2);
    assert_eq!(part_columns(&old, &grown, 0), ["index_deltas", "values"]);
    assert_eq!(
        part_columns(&old, &grown, n - 1),
        [
            "index_deltas_byte0",
            "index_deltas_byte1",
            "values_byte0",
            "values_byte1"
        ]
    );
    validate(&old).unwrap();
    let hot = Corpus::open(corpus(tmp.path(), "hot2", &[chr21(), mouse()], false)).unwrap();
    assert_eq!(rows(&hot), rows(&grown));
}
