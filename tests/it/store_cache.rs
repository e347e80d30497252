//! The node-local cache shared by two processes: neither ever sees a torn entry, an entry
//! being written is invisible until it is whole, and a reader keeps its bytes when the other
//! process evicts the entry. The processes are this test binary run again as workers
//! (`CELLARROW_CACHE_WORKER`), driven line by line over their standard input, and paused
//! inside an insert by the cache's hook: the interleaving is fixed by the protocol, not by
//! timing.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use cellarrow::store::{Cache, CacheEvent, CacheKey};

use crate::common::scratch;

const WORKER_ENV: &str = "CELLARROW_CACHE_WORKER";
const BUDGET_ENV: &str = "CELLARROW_CACHE_WORKER_BUDGET";

/// A key per number, and the bytes its entry must hold (different for every key and offset).
fn key(i: u64, len: u64) -> CacheKey {
    CacheKey::whole(format!("{:064x}", 0xC0FFEE_u64 * 1_000_003 + i), len)
}

fn content(k: &CacheKey) -> Vec<u8> {
    let seed = u64::from_str_radix(&k.sha256[48..], 16).unwrap();
    (0..k.len())
        .map(|i| ((i ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
        .collect()
}

fn whole(k: &CacheKey, f: &File) -> bool {
    let mut f = f;
    let mut v = Vec::new();
    f.read_to_end(&mut v).is_ok() && v == content(k)
}

fn reply(msg: &str) {
    // A marker, since libtest writes its own lines to the same stdout.
    println!("@@ {msg}");
    std::io::stdout().flush().unwrap();
}

fn read_command() -> Option<String> {
    let mut line = String::new();
    match std::io::stdin().read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim().to_string()),
    }
}

/// The worker: a no-op unless started by `two_processes_share_the_cache`.
#[test]
fn cache_worker() {
    let Some(dir) = std::env::var_os(WORKER_ENV) else {
        return;
    };
    let budget: u64 = std::env::var(BUDGET_ENV).unwrap().parse().unwrap();
    let plain = Cache::open(&dir, budget).unwrap();
    // The same cache, but pausing before the rename until the driver says `go`.
    let mut pausing = plain.clone();
    pausing.set_hook(|e| {
        let CacheEvent::BeforeRename { tmp, .. } = e;
        assert!(tmp.is_file(), "the entry is complete in its temporary file");
        reply("paused");
        assert_eq!(read_command().as_deref(), Some("go"));
    });
    let mut held: Option<(CacheKey, File)> = None;
    while let Some(line) = read_command() {
        let w: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| w[i].parse::<u64>().unwrap();
        match w[0] {
            "put" | "pput" => {
                let k = key(num(1), num(2));
                let cache = if w[0] == "pput" { &pausing } else { &plain };
                cache.insert(&k, &content(&k)).unwrap();
                reply("done");
            }
            "get" => {
                let k = key(num(1), num(2));
                match plain.get(&k).unwrap() {
                    None => reply("miss"),
                    Some(f) if whole(&k, &f) => reply("hit"),
                    Some(_) => reply("torn"),
                }
            }
            "hold" => {
                let k = key(num(1), num(2));
                let f = plain.get(&k).unwrap().expect("the entry to hold is cached");
                held = Some((k, f));
                reply("held");
            }
            "readheld" => {
                let (k, f) = held.take().expect("an entry is held");
                reply(if whole(&k, &f) { "whole" } else { "torn" });
            }
            "evictall" => {
                Cache::open(&dir, 0).unwrap().trim(None).unwrap();
                reply("evicted");
            }
            // Many keys, each read if cached (and checked) or else inserted, while the other
            // process does the same over the same keys, with a budget that forces evictions.
            "fill" => {
                let (n, len, rounds) = (num(1), num(2), num(3));
                let (mut hits, mut torn) = (0, 0);
                for r in 0..rounds {
                    for i in 0..n {
                        let k = key(1000 + (i * 7 + r) % n, len);
                        match plain.get(&k).unwrap() {
                            Some(f) => {
                                hits += 1;
                                if !whole(&k, &f) {
                                    torn += 1;
                                }
                            }
                            None => {
                                let f = plain.insert(&k, &content(&k)).unwrap();
                                let mut f2 = f;
                                use std::io::Seek;
                                f2.seek(std::io::SeekFrom::Start(0)).unwrap();
                                if !whole(&k, &f2) {
                                    torn += 1;
                                }
                            }
                        }
                    }
                }
                reply(&format!("filled {hits} {torn}"));
            }
            other => panic!("unknown command {other}"),
        }
    }
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Worker {
    fn start(dir: &Path, budget: u64) -> Worker {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "store_cache::cache_worker",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(WORKER_ENV, dir)
            .env(BUDGET_ENV, budget.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting a cache worker");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Worker {
            child,
            stdin,
            stdout,
        }
    }

    fn send(&mut self, cmd: &str) {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
    }

    fn answer(&mut self) -> String {
        loop {
            let mut line = String::new();
            let n = self.stdout.read_line(&mut line).unwrap();
            assert!(n > 0, "the cache worker exited early");
            // libtest may have started the line ("test ... ").
            if let Some(at) = line.find("@@ ") {
                return line[at + 3..].trim().to_string();
            }
        }
    }

    fn ask(&mut self, cmd: &str) -> String {
        self.send(cmd);
        self.answer()
    }

    fn finish(mut self) {
        drop(self.stdin);
        let status = self.child.wait().unwrap();
        let mut rest = String::new();
        let _ = self.stdout.read_to_string(&mut rest);
        assert!(status.success(), "a cache worker failed:\n{rest}");
    }
}

fn leftovers(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for sub in std::fs::read_dir(dir).unwrap().flatten() {
        if sub.file_type().unwrap().is_dir() {
            for f in std::fs::read_dir(sub.path()).unwrap().flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                if name.contains(".tmp-") {
                    out.push(name);
                }
            }
        }
    }
    out
}

#[test]
fn two_processes_share_the_cache() {
    if std::env::var_os(WORKER_ENV).is_some() {
        return; // inside a worker
    }
    let dir = scratch("cache2");
    let budget = 2 << 20;
    let mut a = Worker::start(dir.path(), budget);
    let mut b = Worker::start(dir.path(), budget);
    const LEN: u64 = 300_000;

    // A writes entry 1 and stops just before publishing it.
    a.send(&format!("pput 1 {LEN}"));
    assert_eq!(a.answer(), "paused");
    // Meanwhile B sees no entry (never a partial one), writes the same entry whole and holds it.
    assert_eq!(b.ask(&format!("get 1 {LEN}")), "miss");
    assert_eq!(b.ask(&format!("put 1 {LEN}")), "done");
    assert_eq!(b.ask(&format!("hold 1 {LEN}")), "held");
    // A publishes its copy over B's; B's open entry and both views stay whole.
    a.send("go");
    assert_eq!(a.answer(), "done");
    assert_eq!(b.ask("readheld"), "whole");
    assert_eq!(a.ask(&format!("get 1 {LEN}")), "hit");
    assert_eq!(b.ask(&format!("get 1 {LEN}")), "hit");

    // B holds the entry while A evicts everything: B still reads all of it, A sees a miss.
    assert_eq!(b.ask(&format!("hold 1 {LEN}")), "held");
    assert_eq!(a.ask("evictall"), "evicted");
    assert_eq!(a.ask(&format!("get 1 {LEN}")), "miss");
    assert_eq!(b.ask("readheld"), "whole");

    // Both fill the same keys at once, evicting as they go (the budget holds about 7 of 20).
    a.send(&format!("fill 20 {LEN} 5"));
    b.send(&format!("fill 20 {LEN} 5"));
    for (name, w) in [("a", &mut a), ("b", &mut b)] {
        let ans = w.answer();
        let words: Vec<&str> = ans.split_whitespace().collect();
        assert_eq!(words[0], "filled", "{name}: {ans}");
        assert_eq!(words[2], "0", "{name} saw a torn entry: {ans}");
    }
    a.finish();
    b.finish();
    let usage = Cache::open(dir.path(), budget).unwrap().usage().unwrap();
    assert!(
        usage <= budget,
        "the cache holds {usage} bytes, over its bound {budget}"
    );
    assert!(
        leftovers(dir.path()).is_empty(),
        "{:?}",
        leftovers(dir.path())
    );
}
