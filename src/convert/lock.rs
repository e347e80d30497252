//! An exclusive lock on a corpus for the writers that change it in place (append): a file
//! `.NAME.cellarrow-lock` beside the corpus holding the owner's pid, created with `O_EXCL`.
//! It lives beside the corpus, not inside, because an append replaces the whole directory.
//! A lock whose pid is no longer running was left by a killed writer and is taken over.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};

/// Held while a writer changes the corpus; the lock file is removed on drop.
#[derive(Debug)]
pub struct CorpusLock {
    path: PathBuf,
}

/// The lock file of the corpus at `dir`.
pub fn lock_path(dir: &Path) -> Result<PathBuf> {
    let name = dir.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        Error::invalid_input("the corpus path needs a final directory name").with_path(dir)
    })?;
    Ok(dir.with_file_name(format!(".{name}.cellarrow-lock")))
}

impl CorpusLock {
    /// Takes the lock, or fails naming the process that holds it.
    pub fn acquire(dir: &Path) -> Result<CorpusLock> {
        let path = lock_path(dir)?;
        // Two tries: the second after removing a stale lock.
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    f.write_all(format!("{}\n", std::process::id()).as_bytes())
                        .and_then(|()| f.sync_all())
                        .map_err(|e| Error::io(&path, "writing the lock file", e))?;
                    return Ok(CorpusLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    let owner = text.trim().parse::<u32>().ok();
                    match owner {
                        Some(pid) if Path::new(&format!("/proc/{pid}")).exists() => {
                            return Err(Error::new(
                                ErrorKind::DestinationExists,
                                format!(
                                    "the corpus is locked by process {pid}, which is still \
                                     running (another append?); try again when it has finished"
                                ),
                            )
                            .with_path(&path));
                        }
                        // A dead owner, or a lock cut off before its pid was written.
                        _ => match std::fs::remove_file(&path) {
                            Ok(()) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                            Err(e) => return Err(Error::io(&path, "removing a stale lock", e)),
                        },
                    }
                }
                Err(e) => return Err(Error::io(&path, "creating the lock file", e)),
            }
        }
        Err(Error::new(
            ErrorKind::DestinationExists,
            "another process took the corpus lock at the same moment",
        )
        .with_path(&path))
    }
}

impl Drop for CorpusLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
