//! One error type for the whole crate.
//!
//! Every variant that concerns a file carries its path, and where it helps the object inside it
//! (an HDF5 path such as `/X/indptr`, a Parquet column, a manifest field), so that a message
//! reads like `sample.h5ad: /X/indptr: not monotone at row 1041 (12 > 9)`.

use std::fmt;
use std::path::{Path, PathBuf};

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, coarsely: tests and callers match on this rather than on message text.
///
/// New kinds may be added in a minor release, so a `match` on it outside this crate needs a
/// `_ =>` arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Reading or writing the file system failed.
    Io,
    /// The input is not an HDF5 file, or HDF5 could not read it.
    NotHdf5,
    /// The h5ad file is structurally wrong (missing object, inconsistent shapes, bad indptr ...).
    InvalidH5ad,
    /// The h5ad uses an encoding, dtype or filter that cellarrow does not read.
    Unsupported,
    /// The conversion request is inconsistent (duplicate sample ids, bad options, bad vocabulary ...).
    InvalidInput,
    /// A corpus on disk fails its structure, checksums or format version.
    InvalidCorpus,
    /// The destination exists and `--overwrite` was not given.
    DestinationExists,
    /// SQL planning or execution failed.
    Query,
    /// Arrow or Parquet reported an error.
    Arrow,
    /// A corpus URL is malformed, names no bucket, or uses a scheme cellarrow does not read.
    InvalidUrl,
    /// Object storage has no credentials for the URL, or refused the ones it has.
    Credentials,
    /// An object (or its bucket) does not exist in object storage.
    NotFound,
    /// A request to object storage failed (timeout, server error, short or corrupt body)
    /// after its retries.
    Remote,
}

/// An error with the file and object it concerns.
#[derive(Debug, thiserror::Error)]
pub struct Error {
    kind: ErrorKind,
    path: Option<PathBuf>,
    object: Option<String>,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// A new error of `kind` with a message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            path: None,
            object: None,
            message: message.into(),
            source: None,
        }
    }

    /// Shorthand for [`ErrorKind::InvalidInput`].
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    /// Shorthand for [`ErrorKind::InvalidCorpus`] about one corpus file.
    pub fn corpus(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidCorpus, message).with_path(path)
    }

    /// Shorthand for [`ErrorKind::InvalidH5ad`] about one object of one file.
    pub fn h5ad(
        path: impl AsRef<Path>,
        object: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::new(ErrorKind::InvalidH5ad, message)
            .with_path(path)
            .with_object(object)
    }

    /// Shorthand for [`ErrorKind::Unsupported`] about one object of one file.
    pub fn unsupported(
        path: impl AsRef<Path>,
        object: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::new(ErrorKind::Unsupported, message)
            .with_path(path)
            .with_object(object)
    }

    /// An error of `kind` about an object-storage URL (kept as the error's path, so the
    /// message reads `s3://bucket/corpus/matrix/part-00000.arrow: ...`).
    pub fn url(kind: ErrorKind, url: impl AsRef<str>, message: impl Into<String>) -> Self {
        Self::new(kind, message).with_path(url.as_ref())
    }

    /// An I/O error on `path`, saying what was being done (`"creating"`, `"reading"` ...).
    pub fn io(path: impl AsRef<Path>, doing: &str, source: std::io::Error) -> Self {
        Self::new(ErrorKind::Io, format!("{doing}: {source}"))
            .with_path(path)
            .with_source(source)
    }

    /// Attaches the file this error concerns (kept if one is already set).
    pub fn with_path(mut self, path: impl AsRef<Path>) -> Self {
        if self.path.is_none() {
            self.path = Some(path.as_ref().to_path_buf());
        }
        self
    }

    /// Attaches the object inside the file (kept if one is already set).
    pub fn with_object(mut self, object: impl Into<String>) -> Self {
        if self.object.is_none() {
            self.object = Some(object.into());
        }
        self
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// The coarse kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The file, if the error concerns one.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The object inside the file, if known.
    pub fn object(&self) -> Option<&str> {
        self.object.as_deref()
    }

    /// The message without path and object.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = &self.path {
            write!(f, "{}: ", p.display())?;
        }
        if let Some(o) = &self.object {
            write!(f, "{o}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl From<arrow::error::ArrowError> for Error {
    fn from(e: arrow::error::ArrowError) -> Self {
        // A failed read or write (disk full, permission) is I/O, not a format problem.
        let kind = match &e {
            arrow::error::ArrowError::IoError(..) => ErrorKind::Io,
            _ => ErrorKind::Arrow,
        };
        Error::new(kind, e.to_string()).with_source(e)
    }
}

impl From<parquet::errors::ParquetError> for Error {
    fn from(e: parquet::errors::ParquetError) -> Self {
        let kind = match &e {
            parquet::errors::ParquetError::External(x) if x.is::<std::io::Error>() => ErrorKind::Io,
            _ => ErrorKind::Arrow,
        };
        Error::new(kind, e.to_string()).with_source(e)
    }
}

/// Adds a path (and optionally an object) to any error convertible into [`Error`].
pub trait Context<T> {
    /// Names the file the error concerns.
    fn at(self, path: impl AsRef<Path>) -> Result<T>;
    /// Names the file and the object inside it.
    fn at_object(self, path: impl AsRef<Path>, object: &str) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn at(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| e.into().with_path(path))
    }
    fn at_object(self, path: impl AsRef<Path>, object: &str) -> Result<T> {
        self.map_err(|e| e.into().with_path(path).with_object(object))
    }
}
