//! Reading a corpus from object storage, against a real S3-compatible server (moto in server
//! mode, started here through `CELLARROW_PYTHON`) and a fault proxy of our own in front of it
//! (tests/it/store_server.py): ranged reads, the cache, retries, checksums, bad URLs, and a
//! corpus opened through `s3://` compared with the same corpus on local disk.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use cellarrow::store::{
    coalesce, fetch_verified, Cache, CacheKey, Location, RangeReader, ReadOptions, StoreOptions,
};
use cellarrow::{Corpus, ErrorKind};

use crate::common::{chr21, cli, data, scratch, stderr};

/// The server process and its command pipe.
struct Server {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    moto_port: u16,
    proxy_port: u16,
}

impl Server {
    /// Starts the server, or `None` (with a message) when `CELLARROW_PYTHON` is not set.
    fn start() -> Option<Server> {
        let Some(py) = std::env::var_os("CELLARROW_PYTHON") else {
            eprintln!(
                "skipping the object-storage tests: CELLARROW_PYTHON is not set (scripts/env.sh \
                 sets it to the venv of tests/requirements.txt, which has moto[server])"
            );
            return None;
        };
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/store_server.py");
        let mut child = Command::new(&py)
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the S3 server through CELLARROW_PYTHON");
        let stdin = child.stdin.take().expect("piped stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("reading the server's READY line");
        let words: Vec<&str> = line.split_whitespace().collect();
        assert!(
            words.len() == 3 && words[0] == "READY",
            "the S3 server did not start (is moto[server] installed in {py:?}? \
             pip install -r tests/requirements.txt); it said {line:?}"
        );
        Some(Server {
            moto_port: words[1].parse().expect("a port"),
            proxy_port: words[2].parse().expect("a port"),
            child,
            stdin,
            stdout,
        })
    }

    /// Sends one command and returns the words after `OK`.
    fn cmd(&mut self, command: &str) -> Vec<String> {
        writeln!(self.stdin, "{command}").expect("writing to the server");
        self.stdin.flush().expect("writing to the server");
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("reading from the server");
        let words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        assert_eq!(
            words.first().map(String::as_str),
            Some("OK"),
            "{command}: {line}"
        );
        words[1..].to_vec()
    }

    /// (GETs seen by the proxy, GETs it faulted) since the last reset.
    fn count(&mut self) -> (u64, u64) {
        let w = self.cmd("count");
        (w[0].parse().unwrap(), w[1].parse().unwrap())
    }

    /// Store options for the server directly (`proxy` false) or through the fault proxy.
    fn options(&self, proxy: bool) -> StoreOptions {
        let port = if proxy {
            self.proxy_port
        } else {
            self.moto_port
        };
        StoreOptions::isolated()
            .with("aws_endpoint", format!("http://127.0.0.1:{port}"))
            .with("aws_allow_http", "true")
            .with("aws_access_key_id", "testing")
            .with("aws_secret_access_key", "testing")
            .with("aws_region", "us-east-1")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Closing stdin stops the server.
        let _ = writeln!(self.stdin, "quit-on-eof");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One server and one uploaded corpus for the whole suite (tests take turns on the server,
/// because the fault rules are global to it).
struct Fixture {
    server: Server,
    local: PathBuf,
    _dir: tempfile::TempDir,
}

const BUCKET: &str = "cellarrow-test";
const PREFIX: &str = "corpora/chr21";

fn fixture() -> Option<std::sync::MutexGuard<'static, Fixture>> {
    static F: OnceLock<Option<Mutex<Fixture>>> = OnceLock::new();
    let f = F.get_or_init(|| {
        let mut server = Server::start()?;
        let dir = scratch("store");
        let local = dir.path().join("c");
        // Small parts, so the corpus has several and a part spans several requests.
        let args: Vec<std::ffi::OsString> = vec![
            "convert".into(),
            chr21().into(),
            "-o".into(),
            local.clone().into(),
            "--part-cells".into(),
            "150".into(),
            "--quiet".into(),
        ];
        let o = cli(&args);
        assert!(o.status.success(), "convert: {}", stderr(&o));
        let n = server.cmd(&format!("upload {} {BUCKET} {PREFIX}", local.display()));
        assert!(n[0].parse::<u32>().unwrap() >= 5, "uploaded {n:?}");
        Some(Mutex::new(Fixture {
            server,
            local,
            _dir: dir,
        }))
    });
    f.as_ref()
        .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()))
}

fn open_err(r: cellarrow::Result<Corpus>) -> cellarrow::Error {
    match r {
        Ok(_) => panic!("the corpus opened, expected an error"),
        Err(e) => e,
    }
}

fn url() -> String {
    format!("s3://{BUCKET}/{PREFIX}")
}

/// Fast retries: the faults are injected, so waiting between attempts only slows the suite.
fn quick(retries: u32) -> ReadOptions {
    ReadOptions {
        retries,
        backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(2),
        max_request: 4096,
        coalesce_gap: 64,
        concurrency: 8,
    }
}

fn parts(local: &Path) -> Vec<(String, String, u64)> {
    let c = Corpus::open(local).unwrap();
    let m = c.manifest();
    m.matrix
        .parts
        .iter()
        .map(|p| {
            let f = m.files.iter().find(|f| f.path == p.path).unwrap();
            (p.path.clone(), f.sha256.clone(), f.bytes)
        })
        .collect()
}

#[test]
fn store_ranges_match_local_bytes() {
    let Some(mut f) = fixture() else { return };
    f.server.cmd("reset");
    let loc = Location::parse_with(&url(), &f.server.options(false)).unwrap();
    for (rel, _, size) in parts(&f.local) {
        let local = std::fs::read(f.local.join(&rel)).unwrap();
        assert_eq!(local.len() as u64, size);
        let reader = RangeReader::new(&loc, &rel).with_options(quick(0));
        assert_eq!(reader.head_blocking().unwrap().0, size);
        // Ranges that share a request, span several, repeat and overlap.
        let s = size;
        let ranges = vec![
            0..8,
            8..100,
            130..140,
            s / 3..s / 2,
            s - 10..s,
            50..60,
            s / 2 - 1..s / 2 + 9000.min(s / 2),
        ];
        let got = reader.read_blocking(&ranges).unwrap();
        for (r, b) in ranges.iter().zip(&got) {
            assert_eq!(
                b.as_slice(),
                &local[r.start as usize..r.end as usize],
                "{rel} {r:?}"
            );
        }
        let o = reader.options();
        let planned = coalesce(&ranges, o.coalesce_gap, o.max_request).len() as u64;
        assert!(planned < ranges.len() as u64 + 3);
        assert_eq!(
            reader.stats().requests,
            planned,
            "{rel}: one GET per planned request"
        );
    }
}

#[test]
fn store_cache_serves_verified_parts_without_requests() {
    let Some(mut f) = fixture() else { return };
    f.server.cmd("reset");
    let loc = Location::parse_with(&url(), &f.server.options(true)).unwrap();
    let cdir = scratch("store-cache");
    let cache = Cache::open(cdir.path(), 1 << 30).unwrap();
    let parts = parts(&f.local);
    for (rel, sha, size) in &parts {
        let reader = RangeReader::new(&loc, rel).with_options(quick(0));
        let mut file = fetch_verified(&reader, Some(&cache), sha, *size).unwrap();
        let mut got = Vec::new();
        file.read_to_end(&mut got).unwrap();
        assert_eq!(got, std::fs::read(f.local.join(rel)).unwrap(), "{rel}");
        assert_eq!(
            reader.stats().requests,
            size.div_ceil(4096),
            "{rel}: fetched in requests of max_request bytes"
        );
    }
    let (gets, _) = f.server.count();
    assert!(gets > 0);
    // Every part again: all from the cache, no request reaches the server.
    for (rel, sha, size) in &parts {
        let reader = RangeReader::new(&loc, rel);
        let entry = cache.read(&CacheKey::whole(sha, *size)).unwrap().unwrap();
        assert_eq!(entry, std::fs::read(f.local.join(rel)).unwrap());
        fetch_verified(&reader, Some(&cache), sha, *size).unwrap();
        assert_eq!(reader.stats().requests, 0);
    }
    assert_eq!(f.server.count().0, gets, "a cached part made a request");
}

#[test]
fn store_retries_server_errors_and_short_bodies_within_the_bound() {
    let Some(mut f) = fixture() else { return };
    let (rel, _, size) = parts(&f.local).remove(0);
    let local = std::fs::read(f.local.join(&rel)).unwrap();
    let loc = Location::parse_with(&url(), &f.server.options(true)).unwrap();
    let range = 100..size.min(3000);
    let want = &local[range.start as usize..range.end as usize];

    for fault in ["fail 3 503", "fail 3 500", "short 3", "fail 1 503\nshort 2"] {
        f.server.cmd("reset");
        for line in fault.lines() {
            f.server.cmd(&format!("{line} {rel}"));
        }
        let reader = RangeReader::new(&loc, &rel).with_options(quick(3));
        let got = reader.read_blocking(std::slice::from_ref(&range)).unwrap();
        assert_eq!(got[0].as_slice(), want, "{fault}");
        assert_eq!(
            reader.stats().retries,
            3,
            "{fault}: one retry per injected fault"
        );
        assert_eq!(f.server.count(), (4, 3), "{fault}");
    }
}

#[test]
fn store_errors_past_the_bound_name_url_part_and_range() {
    let Some(mut f) = fixture() else { return };
    let (rel, _, size) = parts(&f.local).remove(0);
    let loc = Location::parse_with(&url(), &f.server.options(true)).unwrap();
    let range = 10..size.min(2000);
    for (fault, needle) in [("fail 5 503", "503"), ("short 5", "")] {
        f.server.cmd("reset");
        f.server.cmd(&format!("{fault} {rel}"));
        let reader = RangeReader::new(&loc, &rel).with_options(quick(2));
        let e = reader
            .read_blocking(std::slice::from_ref(&range))
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Remote, "{fault}: {e}");
        let text = e.to_string();
        let part_url = format!("{}/{rel}", url());
        assert!(text.starts_with(&part_url), "{fault}: no URL in {text}");
        assert!(
            text.contains(&format!("part {rel}")),
            "{fault}: no part in {text}"
        );
        assert!(
            text.contains(&format!("bytes {}..{}", range.start, range.end)),
            "{fault}: no range in {text}"
        );
        assert!(
            text.contains("after 3 attempts") && text.contains(needle),
            "{fault}: {text}"
        );
        // Exactly retries + 1 attempts reached the proxy.
        assert_eq!(f.server.count(), (3, 3), "{fault}");
    }
}

#[test]
fn store_never_returns_a_corrupted_byte() {
    let Some(mut f) = fixture() else { return };
    let (rel, sha, size) = parts(&f.local).remove(1);
    let local = std::fs::read(f.local.join(&rel)).unwrap();
    let loc = Location::parse_with(&url(), &f.server.options(true)).unwrap();
    let cdir = scratch("store-corrupt");
    let cache = Cache::open(cdir.path(), 1 << 30).unwrap();
    let key = CacheKey::whole(&sha, size);

    // One corrupted body: the part fails its checksum once, is fetched again, and what the
    // cache holds is the right bytes.
    f.server.cmd("reset");
    f.server.cmd(&format!("corrupt 1 {rel}"));
    let reader = RangeReader::new(&loc, &rel).with_options(quick(2));
    let mut file = fetch_verified(&reader, Some(&cache), &sha, size).unwrap();
    let mut got = Vec::new();
    file.read_to_end(&mut got).unwrap();
    assert_eq!(got, local);
    assert_eq!(f.server.count().1, 1, "the corruption was injected");
    assert_eq!(cache.read(&key).unwrap().unwrap(), local);

    // Every body corrupted: an error naming the part, and nothing in the cache.
    let cdir2 = scratch("store-corrupt2");
    let cache2 = Cache::open(cdir2.path(), 1 << 30).unwrap();
    f.server.cmd("reset");
    f.server.cmd(&format!("corrupt 1000 {rel}"));
    let e = fetch_verified(&reader, Some(&cache2), &sha, size).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Remote);
    let text = e.to_string();
    assert!(text.contains(&rel) && text.contains("checksum"), "{text}");
    assert!(text.contains(&format!("bytes 0..{size}")), "{text}");
    assert!(cache2.get(&key).unwrap().is_none());
    assert_eq!(cache2.usage().unwrap(), 0);
    // Without a cache the same holds.
    let e = fetch_verified(&reader, None, &sha, size).unwrap_err();
    assert!(e.to_string().contains("checksum"), "{e}");
    f.server.cmd("reset");
}

#[test]
fn store_bad_locations_are_clear_errors() {
    let Some(mut f) = fixture() else { return };
    f.server.cmd("reset");
    let opts = f.server.options(false);
    // A bucket that does not exist.
    let loc = Location::parse_with("s3://no-such-bucket/x", &opts).unwrap();
    let e = RangeReader::new(&loc, "manifest.json")
        .read_blocking(std::slice::from_ref(&(0..10)))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(
        e.to_string()
            .starts_with("s3://no-such-bucket/x/manifest.json"),
        "{e}"
    );
    let e = open_err(Corpus::open_url_with("s3://no-such-bucket/x", &opts, None));
    assert_eq!(e.kind(), ErrorKind::InvalidCorpus, "{e}");
    assert!(
        e.to_string()
            .contains("s3://no-such-bucket/x/manifest.json"),
        "{e}"
    );
    // No credentials.
    let none = StoreOptions::isolated()
        .with(
            "aws_endpoint",
            format!("http://127.0.0.1:{}", f.server.moto_port),
        )
        .with("aws_allow_http", "true")
        .with("aws_ec2_metadata_disabled", "true");
    let e = open_err(Corpus::open_url_with(&url(), &none, None));
    assert_eq!(e.kind(), ErrorKind::Credentials, "{e}");
    assert!(e.to_string().starts_with(&url()), "{e}");
    // An unsupported scheme.
    let e = open_err(Corpus::open_url_with("ftp://host/x", &opts, None));
    assert_eq!(e.kind(), ErrorKind::InvalidUrl, "{e}");
    assert!(e.to_string().contains("ftp://host/x"), "{e}");
}

/// The corpus opened through `s3://` holds the same cells, genes and values as on disk.
#[test]
fn store_corpus_over_s3_matches_local_cell_by_cell() {
    let Some(mut f) = fixture() else { return };
    f.server.cmd("reset");
    let cdir = scratch("store-open");
    let cache = Cache::open(cdir.path(), 1 << 30).unwrap();
    let remote =
        Arc::new(Corpus::open_url_with(&url(), &f.server.options(false), Some(&cache)).unwrap());
    let local = Arc::new(Corpus::open(&f.local).unwrap());
    assert!(local.manifest().matrix.parts.len() >= 2);
    assert_same_corpus(&remote, &local);
    let cols = ["n_counts"];
    let (ra, la) = (remote.obs_columns(&cols), local.obs_columns(&cols));
    match (ra, la) {
        (Ok(r), Ok(l)) => assert_eq!(r[0].to_data(), l[0].to_data()),
        (Err(r), Err(l)) => assert_eq!(r.kind(), l.kind()),
        (r, l) => panic!("obs column differs: {r:?} vs {l:?}"),
    }
    // A second open is served by the cache and the snapshot: no GET of a part.
    f.server.cmd("reset");
    let again = Corpus::open_url_with(&url(), &f.server.options(true), Some(&cache)).unwrap();
    assert_eq!(again.n_cells(), local.n_cells());
    assert_eq!(f.server.count().0, 1, "only the manifest is fetched again");
}

/// A corpus grown by an append (several files in its tables) and the format-1 corpus of
/// tests/data (single `NAME.parquet` tables), each opened through `s3://`, hold what their
/// local copies hold: cells, table files, tables, and the tables SQL registers.
#[test]
fn store_appended_and_format_1_corpora_over_s3_match_local() {
    let Some(mut f) = fixture() else { return };
    f.server.cmd("reset");
    let dir = scratch("store-append");
    let grown = dir.path().join("grown");
    let o = cli([
        "convert".as_ref(),
        chr21().as_os_str(),
        "-o".as_ref(),
        grown.as_os_str(),
        "--part-cells".as_ref(),
        "150".as_ref(),
        "--quiet".as_ref(),
    ]);
    assert!(o.status.success(), "convert: {}", stderr(&o));
    let o = cli([
        "append".as_ref(),
        grown.as_os_str(),
        data("debian_sctransform_pbmc_counts.h5ad").as_os_str(),
        "--quiet".as_ref(),
    ]);
    assert!(o.status.success(), "append: {}", stderr(&o));
    let format1 = data("format1/visium49.corpus");

    let cdir = scratch("store-tables");
    let cache = Cache::open(cdir.path(), 1 << 30).unwrap();
    for (local_dir, prefix) in [(&grown, "corpora/grown"), (&format1, "corpora/format1")] {
        f.server
            .cmd(&format!("upload {} {BUCKET} {prefix}", local_dir.display()));
        let local = Arc::new(Corpus::open(local_dir).unwrap());
        let remote = Arc::new(
            Corpus::open_url_with(
                &format!("s3://{BUCKET}/{prefix}"),
                &f.server.options(false),
                Some(&cache),
            )
            .unwrap(),
        );
        if local_dir == &grown {
            assert_eq!(local.manifest().format_version, 2);
            for table in ["obs", "samples", "gene_counts"] {
                assert_eq!(local.table_files(table).len(), 2, "{table}");
            }
        } else {
            assert_eq!(local.manifest().format_version, 1);
        }
        assert_same_corpus(&remote, &local);
    }
}

/// The tables of `c`: those the manifest lists in format 2, the three single files of format 1.
fn table_names(c: &Corpus) -> Vec<String> {
    let m = c.manifest();
    if m.format_version >= 2 {
        m.tables.keys().cloned().collect()
    } else {
        ["obs", "genes", "samples"].map(String::from).to_vec()
    }
}

/// `remote` (a snapshot of tables and parts fetched from the store) reads as `local` does:
/// the same manifest, cells, table files (same names under the root, same bytes) and
/// tables, and with `sql` the same tables and rows in a query session.
fn assert_same_corpus(remote: &Arc<Corpus>, local: &Arc<Corpus>) {
    assert_eq!(remote.manifest(), local.manifest());
    assert_same_content(remote, local);
}

/// [`assert_same_corpus`] but for the manifest's records of where the corpus was written (by
/// its conversion and its appends).
fn assert_same_content(remote: &Arc<Corpus>, local: &Arc<Corpus>) {
    let mut m = remote.manifest().clone();
    m.options["output"] = local.manifest().options["output"].clone();
    for (a, b) in m.lineage.iter_mut().zip(&local.manifest().lineage) {
        a.options["output"] = b.options["output"].clone();
    }
    assert_eq!(&m, local.manifest());
    assert_ne!(remote.root(), local.root());
    for cell in 0..local.n_cells() {
        assert_eq!(
            remote.indices(cell).to_u32_vec(),
            local.indices(cell).to_u32_vec(),
            "cell {cell}"
        );
        assert_eq!(
            remote.values(cell).to_f64_vec(),
            local.values(cell).to_f64_vec(),
            "cell {cell}"
        );
    }
    let tables = table_names(local);
    assert!(tables.len() >= 3, "{tables:?}");
    for table in &tables {
        let rel = |c: &Corpus| -> Vec<PathBuf> {
            c.table_files(table)
                .iter()
                .map(|p| p.strip_prefix(c.root()).unwrap().to_path_buf())
                .collect()
        };
        assert!(!rel(local).is_empty(), "{table}");
        assert_eq!(rel(remote), rel(local), "{table}");
        for (a, b) in remote
            .table_files(table)
            .iter()
            .zip(local.table_files(table))
        {
            assert_eq!(
                std::fs::read(a).unwrap(),
                std::fs::read(&b).unwrap(),
                "{a:?}"
            );
        }
        assert_eq!(
            remote.read_table(table, None).unwrap(),
            local.read_table(table, None).unwrap(),
            "{table}"
        );
    }
    #[cfg(feature = "sql")]
    {
        let session = |c: &Arc<Corpus>| cellarrow::query::QueryEngine::new(c.clone()).unwrap();
        let (remote, local) = (session(remote), session(local));
        assert_eq!(remote.tables(), local.tables());
        let mut queries: Vec<String> = tables
            .iter()
            .map(|t| format!("SELECT count(*) AS n FROM {t}"))
            .collect();
        queries.push(
            "SELECT sample_id, count(*) AS n, min(cell) AS lo, max(cell) AS hi FROM obs \
              GROUP BY sample_id ORDER BY sample_id"
                .into(),
        );
        queries.push("SELECT * FROM genes ORDER BY gene".into());
        for q in &queries {
            let rows = |e: &cellarrow::query::QueryEngine| {
                let batches = e.sql(q).unwrap();
                arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
            };
            assert_eq!(rows(&remote), rows(&local), "{q}");
        }
    }
}

/// `cellarrow validate s3://...` with the endpoint and credentials from the environment:
/// the corpus passes with the local counts; a part changed on the server and a part missing
/// from it are errors that name the part's URL, with no panic.
#[test]
fn store_validate_checks_a_corpus_url() {
    let Some(mut f) = fixture() else { return };
    f.server.cmd("reset");
    let dir = scratch("store-validate");
    let changed = dir.path().join("changed");
    let missing = dir.path().join("missing");
    crate::common::copy_dir(&f.local, &changed);
    crate::common::copy_dir(&f.local, &missing);
    let part = Corpus::open(&f.local).unwrap().manifest().matrix.parts[1]
        .path
        .clone();
    let p = changed.join(&part);
    let mut bytes = std::fs::read(&p).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&p, &bytes).unwrap();
    std::fs::remove_file(missing.join(&part)).unwrap();
    for (d, prefix) in [(&changed, "corpora/changed"), (&missing, "corpora/missing")] {
        f.server
            .cmd(&format!("upload {} {BUCKET} {prefix}", d.display()));
    }
    std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
    let validate = |url: &str| cli_s3(&f, dir.path(), &["validate", url], None);
    let here = Command::new(crate::common::bin())
        .args(["validate".as_ref(), f.local.as_os_str()])
        .output()
        .unwrap();
    let there = validate(&url());
    assert!(there.status.success(), "{}", stderr(&there));
    let counts = |o: &std::process::Output| {
        String::from_utf8_lossy(&o.stdout)
            .split_once(": ")
            .map(|(_, rest)| rest.to_string())
            .unwrap_or_default()
    };
    assert_eq!(counts(&there), counts(&here), "{there:?}");
    for prefix in ["corpora/changed", "corpora/missing"] {
        let o = validate(&format!("s3://{BUCKET}/{prefix}"));
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{prefix}: {e}");
        assert!(!e.contains("panicked"), "{prefix}: {e}");
        assert!(
            e.contains(&format!("s3://{BUCKET}/{prefix}/{part}")),
            "{prefix}: {e}"
        );
    }
}

/// The chr21 fixture converted with the cold layout under `dir` and uploaded to
/// `corpora/NAME` of the bucket; the local corpus.
fn upload_cold(
    f: &mut Fixture,
    dir: &Path,
    name: &str,
    chunk_cells: u32,
    part_cells: u32,
) -> Arc<Corpus> {
    let local_dir = dir.join(name);
    let (chunk_cells, part_cells) = (chunk_cells.to_string(), part_cells.to_string());
    let o = cli([
        "convert".as_ref(),
        chr21().as_os_str(),
        "-o".as_ref(),
        local_dir.as_os_str(),
        "--layout".as_ref(),
        "cold".as_ref(),
        "--chunk-cells".as_ref(),
        chunk_cells.as_ref(),
        "--part-cells".as_ref(),
        part_cells.as_ref(),
        "--quiet".as_ref(),
    ]);
    assert!(o.status.success(), "convert: {}", stderr(&o));
    f.server.cmd(&format!(
        "upload {} {BUCKET} corpora/{name}",
        local_dir.display()
    ));
    Arc::new(Corpus::open(&local_dir).unwrap())
}

/// A cold corpus over `s3://` opens from its parts' footers alone, fetches the chunks a batch
/// needs together (adjacent chunks in one request) and nothing it holds already, checks each
/// chunk against the sha256 its footer lists (a corrupted body is fetched again; past the
/// retries the error names the URL, the part and the byte range, and a later read succeeds),
/// and reads as the local corpus does, batch by batch and cell by cell.
#[test]
fn store_cold_corpus_reads_chunks_lazily_and_matches_local() {
    use cellarrow::loader::{BatchOptions, Gatherer};
    let Some(mut f) = fixture() else { return };
    f.server.cmd("reset");
    let dir = scratch("store-cold");
    let local = upload_cold(&mut f, dir.path(), "cold", 32, 600);
    let m = local.manifest();
    let n_parts = m.matrix.parts.len();
    assert!(n_parts >= 2);
    assert!(m.matrix.parts.iter().all(|p| p.footer.is_some()), "{m:?}");
    let cold_url = format!("s3://{BUCKET}/corpora/cold");

    let cdir = scratch("store-cold-cache");
    let cache = Cache::open(cdir.path(), 1 << 30).unwrap();
    f.server.cmd("reset");
    let remote =
        Arc::new(Corpus::open_url_with(&cold_url, &f.server.options(true), Some(&cache)).unwrap());
    assert_eq!(
        f.server.count().0 as usize,
        1 + (m.files.len() - n_parts) + n_parts,
        "the manifest, each table file and each part's footer"
    );

    // Cells of three adjacent chunks of the first part: one request; then none.
    let cells = [0u64, 40, 70];
    f.server.cmd("reset");
    remote.prefetch(&cells).unwrap();
    assert_eq!(f.server.count().0, 1);
    remote.prefetch(&cells).unwrap();
    assert_eq!(f.server.count().0, 1, "cached chunks are not fetched again");

    // Batches gathered by the loader equal the local ones; a batch's chunks in two parts are
    // two requests (one per part), whatever the cell order.
    let last = local.n_cells() - 1;
    let batch: Vec<u64> = vec![last, 100, 3, last - 40, 101];
    f.server.cmd("reset");
    let (rg, lg) = (
        Gatherer::new(remote.clone(), BatchOptions::default()).unwrap(),
        Gatherer::new(local.clone(), BatchOptions::default()).unwrap(),
    );
    assert_eq!(
        rg.gather(&batch, None).unwrap(),
        lg.gather(&batch, None).unwrap()
    );
    assert_eq!(f.server.count().0, 2);

    // A corrupted body is fetched again and the read succeeds.
    let second = m.matrix.parts[1].path.clone();
    let in_second = m.matrix.parts[1].first_cell + 5;
    f.server.cmd("reset");
    f.server.cmd(&format!("corrupt 1 {second}"));
    assert_eq!(
        rg.gather(&[in_second], None).unwrap(),
        lg.gather(&[in_second], None).unwrap()
    );
    assert_eq!(f.server.count(), (2, 1));
    // Corrupted every time: an error naming the URL, the part and the byte range.
    let in_second = in_second + 64;
    f.server.cmd(&format!("corrupt 100 {second}"));
    let e = rg.gather(&[in_second], None).unwrap_err().to_string();
    assert!(
        e.contains(&format!("{cold_url}/{second}")) && e.contains("sha256") && e.contains("bytes "),
        "{e}"
    );
    f.server.cmd("reset");
    assert_eq!(
        rg.gather(&[in_second], None).unwrap(),
        lg.gather(&[in_second], None).unwrap()
    );

    assert_same_corpus(&remote, &local);
}

/// The CLI with the S3 server's endpoint and credentials in its environment, `TMPDIR` and the
/// node cache under `dir`, and the kill point `kill` armed.
fn cli_s3(f: &Fixture, dir: &Path, args: &[&str], kill: Option<&str>) -> std::process::Output {
    let mut c = Command::new(crate::common::bin());
    c.args(args)
        .env(
            "AWS_ENDPOINT_URL",
            format!("http://127.0.0.1:{}", f.server.moto_port),
        )
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("TMPDIR", dir.join("tmp"))
        .env("CELLARROW_CACHE", dir.join("cache"));
    if let Some(stage) = kill {
        c.env(cellarrow::convert::kill::KILL_AT_VAR, stage);
    }
    c.output().unwrap()
}

/// The names of the objects under `url`, sorted.
fn objects(f: &Fixture, url: &str) -> Vec<String> {
    use futures::TryStreamExt;
    use object_store::ObjectStore;
    let loc = Location::parse_with(url, &f.server.options(false)).unwrap();
    let (store, prefix) = (loc.store().clone(), loc.prefix().clone());
    let mut names: Vec<String> = cellarrow::store::block_on(async move {
        store.list(Some(&prefix)).try_collect::<Vec<_>>().await
    })
    .unwrap()
    .into_iter()
    .map(|m| m.location.to_string())
    .collect();
    names.sort();
    names
}

/// `cellarrow convert -o s3://…`: the corpus is converted under `TMPDIR`, uploaded with its
/// manifest last, and reads as the same conversion on local disk; a destination holding a
/// corpus, or objects without a manifest (an upload killed before its manifest), is refused
/// unless `--overwrite`, which replaces it and leaves no stale object; a bucket that does not
/// exist is refused before any work; none of them panics.
#[test]
fn store_convert_uploads_to_a_url_with_the_manifest_last() {
    use cellarrow::convert::kill::UPLOAD_STAGE;
    let Some(f) = fixture() else { return };
    let dir = scratch("store-convert");
    let tmp = dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let run = |args: &[&str], kill: Option<&str>| cli_s3(&f, dir.path(), args, kill);
    let input = chr21();
    let input = input.to_str().unwrap();
    let convert = |url: &str, extra: &[&str], kill: Option<&str>| {
        let mut args = vec![
            "convert",
            input,
            "-o",
            url,
            "--part-cells",
            "150",
            "--quiet",
        ];
        args.extend_from_slice(extra);
        run(&args, kill)
    };
    let objects = |url: &str| objects(&f, url);
    let local_files = |root: &Path| -> usize {
        let c = Corpus::open(root).unwrap();
        c.manifest().files.len() + 1
    };
    let open = |url: &str| Corpus::open_url_with(url, &f.server.options(false), None);

    let target = format!("s3://{BUCKET}/converted/chr21");
    let o = convert(&target, &[], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let remote = Arc::new(open(&target).unwrap());
    let local = Arc::new(Corpus::open(&f.local).unwrap());
    assert_same_content(&remote, &local);
    assert_eq!(remote.manifest().options["output"], target.as_str());
    assert_eq!(objects(&target).len(), local_files(&f.local));
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "the staging directory is removed"
    );

    let o = convert(&target, &[], None);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains(&target) && e.contains("--overwrite"), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    assert_same_content(&Arc::new(open(&target).unwrap()), &local);

    // Killed with every file but the manifest uploaded: no corpus there, and what is there is
    // refused, then replaced whole with --overwrite.
    let killed = format!("s3://{BUCKET}/converted/killed");
    let o = convert(&killed, &[], Some(UPLOAD_STAGE));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("killed at uploaded"), "{}", stderr(&o));
    assert_eq!(objects(&killed).len(), local_files(&f.local) - 1);
    let e = open_err(open(&killed));
    assert!(e.to_string().contains("manifest.json"), "{e}");
    let o = convert(&killed, &[], None);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("no corpus") && e.contains("--overwrite"), "{e}");
    // Replacing a corpus with a different one: no object of the old one is left behind.
    let o = convert(&target, &["--overwrite", "--layout", "cold"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = convert(&killed, &["--overwrite"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "the staging directory of the killed upload is swept"
    );
    assert_same_content(&Arc::new(open(&killed).unwrap()), &local);
    assert_eq!(objects(&killed).len(), local_files(&f.local));
    let replaced = open(&target).unwrap();
    assert_eq!(replaced.n_cells(), local.n_cells());
    assert!(replaced
        .manifest()
        .matrix
        .parts
        .iter()
        .all(|p| p.layout == cellarrow::corpus::PartLayout::Cold));
    assert_eq!(
        objects(&target).len(),
        replaced.manifest().files.len() + 1,
        "{:?}",
        objects(&target)
    );

    let missing = "s3://cellarrow-no-such-bucket/x";
    let o = convert(missing, &[], None);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains(missing) && !e.contains("panicked"), "{e}");
}

/// `cellarrow append s3://…` grows the corpus in the bucket as `append` grows the same corpus
/// on local disk (same manifest but for the recorded output, cells, tables), uploading only
/// the new files (the old parts keep their objects) and removing the table files the grown
/// manifest no longer lists. An append killed after its uploads leaves the corpus as it was
/// and its lock, which the next append reports and `--break-lock` takes over (removing what
/// the killed one left). A refused append releases the lock; a URL without a corpus is a clear
/// error.
#[test]
fn store_append_to_a_url_grows_it_as_on_local_disk() {
    use cellarrow::convert::kill::UPLOAD_STAGE;
    let Some(f) = fixture() else { return };
    let dir = scratch("store-append-url");
    std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
    let run = |args: &[&str], kill: Option<&str>| cli_s3(&f, dir.path(), args, kill);
    let (first, second, third) = (
        chr21(),
        data("debian_sctransform_pbmc_counts.h5ad"),
        data("scanpy_10x_10k_subset_mouse_counts.h5ad"),
    );
    let (first, second, third) = (
        first.to_str().unwrap(),
        second.to_str().unwrap(),
        third.to_str().unwrap(),
    );
    let local = dir.path().join("local");
    let local_s = local.to_str().unwrap();
    let url = format!("s3://{BUCKET}/appended/cohort");
    for target in [local_s, &url] {
        let o = run(
            &[
                "convert",
                first,
                "-o",
                target,
                "--part-cells",
                "150",
                "--quiet",
            ],
            None,
        );
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let open =
        |url: &str| Arc::new(Corpus::open_url_with(url, &f.server.options(false), None).unwrap());
    let before = open(&url);
    let etags = |url: &str| -> Vec<(String, Option<String>)> {
        let loc = Location::parse_with(url, &f.server.options(false)).unwrap();
        before
            .manifest()
            .matrix
            .parts
            .iter()
            .map(|p| {
                let r = cellarrow::store::RangeReader::new(&loc, &p.path);
                (p.path.clone(), r.head_blocking().unwrap().1)
            })
            .collect()
    };
    let old_parts = etags(&url);

    // Killed with the new files uploaded: the corpus is still the old one, and locked.
    let o = run(&["append", &url, second, "--quiet"], Some(UPLOAD_STAGE));
    assert!(stderr(&o).contains("killed at uploaded"), "{}", stderr(&o));
    assert_eq!(open(&url).manifest(), before.manifest());
    assert!(objects(&f, &url).len() > before.manifest().files.len() + 1);
    let o = run(&["append", &url, second, "--quiet"], None);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains(".cohort.cellarrow-lock") && e.contains("--break-lock"),
        "{e}"
    );
    assert!(!e.contains("panicked"), "{e}");

    let o = run(&["append", &url, second, "--quiet", "--break-lock"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&["append", local_s, second, "--quiet"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    // The second append also rewrites nothing it need not: a second append in a row.
    for target in [local_s, &url] {
        let o = run(&["append", target, third, "--quiet"], None);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let (remote, local) = (open(&url), Arc::new(Corpus::open(&local).unwrap()));
    assert_eq!(local.manifest().samples.len(), 3);
    assert_eq!(remote.manifest().options["output"], url.as_str());
    assert!(remote
        .manifest()
        .lineage
        .iter()
        .all(|l| l.options["output"] == url.as_str()));
    assert_same_content(&remote, &local);
    assert_eq!(
        etags(&url),
        old_parts,
        "the old parts are not uploaded again"
    );
    assert_eq!(
        objects(&f, &url).len(),
        remote.manifest().files.len() + 1,
        "nothing the manifest does not list is left: {:?}",
        objects(&f, &url)
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0,
        "the staging directories are removed"
    );

    // Refused (the sample is in the corpus already): nothing changes, the lock is released.
    let o = run(&["append", &url, third, "--quiet"], None);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("already in the corpus"), "{e}");
    assert_eq!(open(&url).manifest(), remote.manifest());
    let o = run(&["append", &url, third, "--quiet"], None);
    assert!(!stderr(&o).contains("lock"), "{}", stderr(&o));

    let nothing = format!("s3://{BUCKET}/appended/nothing");
    let o = run(&["append", &nothing, third, "--quiet"], None);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains(&nothing) && e.contains("manifest.json"), "{e}");
    assert!(objects(&f, &format!("s3://{BUCKET}/appended"))
        .iter()
        .all(|o| !o.contains("lock")));
}

/// The loader over a cold corpus URL with read-ahead (fetches of later batches in flight while
/// it gathers, on two threads): the same batches as on local disk, and no chunk fetched twice
/// however the read-ahead and the gathering threads meet; a second epoch fetches nothing.
#[test]
fn store_cold_loader_reads_ahead_without_fetching_a_chunk_twice() {
    use cellarrow::loader::{BatchOptions, CellBatches, Gatherer, Loader, LoaderOptions};
    let Some(mut f) = fixture() else { return };
    f.server.cmd("reset");
    let dir = scratch("store-ahead");
    let local = upload_cold(&mut f, dir.path(), "ahead", 16, 400);
    let n_chunks: u64 = local
        .manifest()
        .matrix
        .parts
        .iter()
        .map(|p| p.n_cells.div_ceil(16))
        .sum();
    let cache = Cache::open(dir.path().join("cache"), 1 << 30).unwrap();
    let remote = Arc::new(
        Corpus::open_url_with(
            &format!("s3://{BUCKET}/corpora/ahead"),
            &f.server.options(true),
            Some(&cache),
        )
        .unwrap(),
    );
    // A fixed scramble of every cell: batches touch chunks all over the corpus.
    let n = local.n_cells();
    let cells: Vec<u64> = (0..n).map(|i| (i * 389) % n).collect();
    let epoch = |c: &Arc<Corpus>, read_ahead: usize| -> Vec<arrow::record_batch::RecordBatch> {
        let g = Arc::new(Gatherer::new(c.clone(), BatchOptions::default()).unwrap());
        let plan = Arc::new(CellBatches::new(cells.clone(), 24, false));
        let options = LoaderOptions {
            threads: 2,
            prefetch: 2,
            read_ahead,
            ..LoaderOptions::default()
        };
        Loader::new(g, plan, options).map(|b| b.unwrap()).collect()
    };
    let want = epoch(&local, 0);
    f.server.cmd("reset");
    let got = epoch(&remote, 8);
    assert_eq!(got, want);
    let gets = f.server.count().0;
    assert!(
        gets > 0 && gets <= n_chunks,
        "{gets} GETs for {n_chunks} chunks"
    );
    f.server.cmd("reset");
    assert_eq!(epoch(&remote, 8), want);
    assert_eq!(f.server.count().0, 0, "a second epoch reads the cache");
}
