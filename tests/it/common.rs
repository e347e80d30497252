//! Shared helpers: scratch directories, the Python generator, the CLI, leftovers.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The real fixtures shipped with the repository.
pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// The 10,000-cell mouse fixture (about 0.5 s to convert in a debug build).
pub fn mouse() -> PathBuf {
    data("scanpy_10x_10k_subset_mouse_counts.h5ad")
}

/// A small real fixture (fast to convert).
pub fn chr21() -> PathBuf {
    data("scanpy_10x_v3_chr21_counts.h5ad")
}

/// A fresh scratch directory, removed when dropped.
pub fn scratch(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("cellarrow-it-{tag}-"))
        .tempdir()
        .expect("creating a scratch directory")
}

/// The binary under test: `CELLARROW_BIN` when set (a copy of this tree's build, where
/// several trees share one target directory), else the one cargo built.
pub fn bin() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("CELLARROW_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_cellarrow").into())
    })
}

/// Runs the CLI with `args`; never panics on a non-zero exit.
pub fn cli<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(bin())
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("running the cellarrow binary")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Fails if a process printed a Rust panic.
pub fn assert_no_panic(what: &str, o: &Output) {
    let err = stderr(o);
    assert!(
        !err.contains("panicked at") && !err.contains("RUST_BACKTRACE"),
        "{what}: the CLI panicked:\n{err}"
    );
}

/// Entries beside `dest` that a conversion writes while it runs (`.NAME.cellarrow-tmp-PID`,
/// `.NAME.cellarrow-old-PID`).
pub fn leftovers(dest: &Path) -> Vec<String> {
    let parent = dest.parent().expect("destination has a parent");
    let Ok(rd) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".cellarrow-tmp-") || n.contains(".cellarrow-old-"))
        .collect();
    v.sort();
    v
}

/// The Python interpreter with anndata and h5py: `CELLARROW_PYTHON`, the dev venv, `python3`.
pub fn python() -> Option<PathBuf> {
    static PY: OnceLock<Option<PathBuf>> = OnceLock::new();
    PY.get_or_init(|| {
        let mut candidates = Vec::new();
        if let Some(p) = std::env::var_os("CELLARROW_PYTHON") {
            candidates.push(PathBuf::from(p));
        }
        if let Some(home) = std::env::var_os("HOME") {
            candidates.push(PathBuf::from(home).join(".cache/cellarrow/venv-dev/bin/python"));
        }
        candidates.push(PathBuf::from("python3"));
        candidates.into_iter().find(|py| {
            Command::new(py)
                .args(["-c", "import anndata, h5py, scipy, numpy"])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        })
    })
    .clone()
}

/// The directory of h5ad files written by `gen_bad.py` (generated once per test run), or
/// `None` with a printed reason when no Python with anndata is available. On CI (`CI` set) a
/// missing Python is a failure, not a skip.
pub fn generated() -> Option<&'static Path> {
    static DIR: OnceLock<Option<(tempfile::TempDir, PathBuf)>> = OnceLock::new();
    DIR.get_or_init(|| {
        let Some(py) = python() else {
            if std::env::var_os("CI").is_some() {
                panic!("no Python with anndata and h5py (set CELLARROW_PYTHON)");
            }
            eprintln!("skipping the anndata-generated cases: no Python with anndata and h5py (set CELLARROW_PYTHON)");
            return None;
        };
        let dir = scratch("gen");
        let out = dir.path().join("h5ad");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/gen_bad.py");
        let o = Command::new(&py)
            .arg(&script)
            .arg(&out)
            .output()
            .expect("running gen_bad.py");
        assert!(
            o.status.success(),
            "gen_bad.py failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        Some((dir, out))
    })
    .as_ref()
    .map(|(_, p)| p.as_path())
}

/// Copies a directory tree (regular files and directories only).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let ft = e.file_type().unwrap();
        let dst = to.join(e.file_name());
        if ft.is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

/// Every file under `dir` with its bytes, sorted by relative path: a snapshot to prove that
/// nothing changed.
pub fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    if dir.is_dir() {
        walk(dir, dir, &mut out);
    } else if dir.exists() {
        out.push((String::new(), std::fs::read(dir).unwrap()));
    }
    out.sort();
    out
}

/// A small xorshift generator: reproducible from a printed seed, no dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn from_time(what: &str) -> Rng {
        let seed = std::env::var("CELLARROW_IT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("{what}: seed {seed} (set CELLARROW_IT_SEED to repeat)");
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Mounts a tmpfs with `opts` on `dir`; `Err(reason)` when that is not possible here.
pub fn mount_tmpfs(dir: &Path, opts: &str) -> Result<TmpfsMount, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let o = Command::new("mount")
        .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
        .arg(dir)
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "mount -t tmpfs -o {opts} failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    Ok(TmpfsMount(dir.to_path_buf()))
}

/// Unmounts on drop.
pub struct TmpfsMount(pub PathBuf);

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}
