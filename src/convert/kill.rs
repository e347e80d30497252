//! Named kill points, so crash tests kill a conversion at a known moment.
//!
//! Killing a child process after a measured delay does not test what it means to: on a loaded
//! machine the conversion may finish before the kill, or every kill may land in the same
//! phase. Instead, with `CELLARROW_KILL_AT=<stage>` in its environment, the process sends
//! itself SIGKILL when it reaches that stage: no destructor, no cleanup, no buffered write
//! runs, exactly as if `kill -9` arrived at that instant. The variable is read once per
//! process; unset (always, outside crash tests) a kill point costs one comparison.
//!
//! The stages of a conversion, in the order they are reached, are [`CONVERT_STAGES`]:
//!
//! - `part-written`: a matrix part was finished (the first one of the run to finish kills);
//! - `tables-written`: genes, samples and obs tables are written, the manifest is not;
//! - `manifest-written`: the manifest is written in the temporary directory, which is not
//!   yet renamed into place;
//! - `before-rename`: the previous corpus (if any) was moved aside, the new one is not yet
//!   renamed in.

use std::sync::OnceLock;

/// The environment variable naming the stage at which to die.
pub const KILL_AT_VAR: &str = "CELLARROW_KILL_AT";

/// With this variable naming a file beside [`KILL_AT_VAR`], the kill point fires only in the
/// process that creates that file (exclusively): of the attempts of a retried job, the first
/// dies and the others run through, so a test can watch a scheduler retry a killed task.
pub const KILL_ONCE_VAR: &str = "CELLARROW_KILL_ONCE";

/// Every kill point of `convert`, in the order a conversion reaches them.
pub const CONVERT_STAGES: &[&str] = &[
    "part-written",
    "tables-written",
    "manifest-written",
    "before-rename",
];

/// The kill point of a conversion to object storage: every file but the manifest is uploaded
/// (after the local stages of [`CONVERT_STAGES`]).
pub const UPLOAD_STAGE: &str = "uploaded";

/// Sends SIGKILL to this process if `CELLARROW_KILL_AT` names `stage`; returns otherwise.
pub fn kill_point(stage: &str) {
    static KILL_AT: OnceLock<Option<String>> = OnceLock::new();
    let at = KILL_AT.get_or_init(|| std::env::var(KILL_AT_VAR).ok());
    if at.as_deref() != Some(stage) {
        return;
    }
    static ONCE: OnceLock<Option<std::path::PathBuf>> = OnceLock::new();
    if let Some(marker) = ONCE.get_or_init(|| std::env::var_os(KILL_ONCE_VAR).map(Into::into)) {
        let first = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(marker)
            .is_ok();
        if !first {
            return;
        }
    }
    // Written before dying (stderr is unbuffered), so a test can tell which point fired.
    eprintln!("cellarrow: killed at {stage} ({KILL_AT_VAR})");
    // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    // SIGKILL cannot be caught, so this is not reached; abort is the fallback all the same.
    std::process::abort();
}
