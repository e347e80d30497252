//! Atomic output: a corpus is written into a hidden directory beside the destination and renamed
//! into place only when complete, so a failed or killed conversion never leaves a half-written
//! corpus and never touches an existing one.

use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};

const TMP_TAG: &str = ".cellarrow-tmp-";
const OLD_TAG: &str = ".cellarrow-old-";

/// A temporary corpus directory that becomes the destination on [`Staging::commit`] and is
/// removed on drop otherwise.
#[derive(Debug)]
pub struct Staging {
    tmp: PathBuf,
    dest: PathBuf,
    committed: bool,
}

fn sibling(dest: &Path, tag: &str, pid: u32) -> Result<PathBuf> {
    let name = dest.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        Error::invalid_input("the output path needs a final directory name").with_path(dest)
    })?;
    Ok(dest.with_file_name(format!(".{name}{tag}{pid}")))
}

pub(crate) fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Leftovers of conversions that were killed: temporary directories of processes that are
/// gone are removed, and a previous corpus moved aside by a replace that was cut short is put
/// back.
fn recover(dest: &Path) -> Result<()> {
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Some(name) = dest.file_name().and_then(|n| n.to_str()) else {
        return Ok(());
    };
    let Ok(entries) = std::fs::read_dir(&parent) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(f) = file_name.to_str() else {
            continue;
        };
        let Some(rest) = f.strip_prefix('.').and_then(|r| r.strip_prefix(name)) else {
            continue;
        };
        let (tag, pid) = if let Some(p) = rest.strip_prefix(TMP_TAG) {
            (TMP_TAG, p)
        } else if let Some(p) = rest.strip_prefix(OLD_TAG) {
            (OLD_TAG, p)
        } else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if pid_alive(pid) && pid != std::process::id() {
            continue;
        }
        let path = entry.path();
        if tag == OLD_TAG && !dest.exists() && path.join("manifest.json").is_file() {
            std::fs::rename(&path, dest)
                .map_err(|e| Error::io(&path, "restoring the previous corpus", e))?;
        } else {
            std::fs::remove_dir_all(&path)
                .map_err(|e| Error::io(&path, "removing a stale temporary directory", e))?;
        }
    }
    Ok(())
}

impl Staging {
    /// Checks the destination and creates the temporary directory beside it.
    ///
    /// An existing destination is refused unless `overwrite`; even then only an empty directory
    /// or a cellarrow corpus (it has a `manifest.json`) is replaced, never other data.
    pub fn create(dest: &Path, overwrite: bool) -> Result<Staging> {
        recover(dest)?;
        if dest.exists() {
            if !overwrite {
                return Err(Error::new(
                    ErrorKind::DestinationExists,
                    "the output already exists; pass --overwrite to replace it",
                )
                .with_path(dest));
            }
            let is_corpus = dest.join("manifest.json").is_file();
            let is_empty = dest.is_dir()
                && std::fs::read_dir(dest)
                    .map(|mut d| d.next().is_none())
                    .unwrap_or(false);
            if !is_corpus && !is_empty {
                return Err(Error::new(
                    ErrorKind::DestinationExists,
                    "the output exists and is not a cellarrow corpus; refusing to replace it",
                )
                .with_path(dest));
            }
        }
        let tmp = sibling(dest, TMP_TAG, std::process::id())?;
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, "removing", e))?;
        }
        std::fs::create_dir_all(tmp.join("matrix"))
            .map_err(|e| Error::io(&tmp, "creating the output directory", e))?;
        Ok(Staging {
            tmp,
            dest: dest.to_path_buf(),
            committed: false,
        })
    }

    /// The directory being written.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Moves the finished corpus into place (replacing the previous one, if any).
    pub fn commit(mut self) -> Result<()> {
        sync_dir(&self.tmp.join("matrix"))?;
        sync_dir(&self.tmp)?;
        if self.dest.exists() {
            let old = sibling(&self.dest, OLD_TAG, std::process::id())?;
            std::fs::rename(&self.dest, &old)
                .map_err(|e| Error::io(&self.dest, "moving the previous corpus aside", e))?;
            super::kill::kill_point("before-rename");
            std::fs::rename(&self.tmp, &self.dest)
                .map_err(|e| Error::io(&self.dest, "renaming the new corpus into place", e))?;
            std::fs::remove_dir_all(&old)
                .map_err(|e| Error::io(&old, "removing the previous corpus", e))?;
        } else {
            super::kill::kill_point("before-rename");
            std::fs::rename(&self.tmp, &self.dest)
                .map_err(|e| Error::io(&self.dest, "renaming the new corpus into place", e))?;
        }
        if let Some(parent) = self.dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        self.committed = true;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(dir, "syncing", e))
}
