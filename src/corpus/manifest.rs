//! `manifest.json`: reading, writing, JSON Schema check, semantic checks and safe paths.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use super::{
    IndexType, Manifest, PartLayout, ValueType, FORMAT_NAME, FORMAT_VERSION, GENE_COUNTS_TABLE,
    MAX_CHUNK_CELLS, OLDEST_FORMAT_VERSION, REQUIRED_TABLES,
};
use crate::error::{Error, ErrorKind, Result};

/// File name of the manifest inside a corpus directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// The JSON Schema every manifest must satisfy (draft 2020-12), as shipped in `schemas/`.
pub const MANIFEST_SCHEMA: &str = include_str!("../../schemas/manifest.schema.json");

fn schema_validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let schema: serde_json::Value =
            serde_json::from_str(MANIFEST_SCHEMA).expect("embedded manifest schema is valid JSON");
        jsonschema::draft202012::new(&schema).expect("embedded manifest schema compiles")
    })
}

impl IndexType {
    /// The narrowest index type for a vocabulary of `n_genes` genes.
    pub fn for_genes(n_genes: u64) -> IndexType {
        if n_genes <= 1 << 16 {
            IndexType::Uint16
        } else {
            IndexType::Uint32
        }
    }

    /// The narrower of two types widened to hold both (the wider one).
    pub fn join(self, other: IndexType) -> IndexType {
        self.max(other)
    }

    /// Largest number of genes this type can address.
    pub fn max_genes(self) -> u64 {
        match self {
            IndexType::Uint16 => 1 << 16,
            IndexType::Uint32 => 1 << 32,
        }
    }

    /// The Arrow type of the list items.
    pub fn arrow_type(self) -> arrow::datatypes::DataType {
        use arrow::datatypes::DataType;
        match self {
            IndexType::Uint16 => DataType::UInt16,
            IndexType::Uint32 => DataType::UInt32,
        }
    }
}

impl ValueType {
    /// Whether `v` is stored exactly by this type.
    ///
    /// ```
    /// use cellarrow::corpus::ValueType;
    /// assert!(ValueType::Uint16.holds(3.0));
    /// assert!(!ValueType::Uint16.holds(0.5));
    /// assert!(ValueType::Float32.holds(0.5));
    /// ```
    pub fn holds(self, v: f64) -> bool {
        match self {
            ValueType::Uint16 => v >= 0.0 && v <= u16::MAX as f64 && v.fract() == 0.0,
            ValueType::Uint32 => v >= 0.0 && v <= u32::MAX as f64 && v.fract() == 0.0,
            ValueType::Float32 => v.is_nan() || (v as f32) as f64 == v,
            ValueType::Float64 => true,
        }
    }

    /// The narrowest type that holds every value of both types exactly: `Uint32` for `Uint16`
    /// and `Uint32`, `Float32` for `Uint16` and `Float32`, but `Float64` for `Uint32` and
    /// `Float32` (f32 does not hold every u32).
    ///
    /// ```
    /// use cellarrow::corpus::ValueType;
    /// assert_eq!(ValueType::Uint16.join(ValueType::Float32), ValueType::Float32);
    /// assert_eq!(ValueType::Uint32.join(ValueType::Float32), ValueType::Float64);
    /// ```
    pub fn join(self, other: ValueType) -> ValueType {
        use ValueType::*;
        match (self, other) {
            (a, b) if a == b => a,
            (Uint16, b) | (b, Uint16) => b,
            (Float64, _) | (_, Float64) | (Uint32, Float32) | (Float32, Uint32) => Float64,
            (a, _) => a,
        }
    }

    /// Whether every value of `self` is held exactly by `wider`.
    pub fn widens_to(self, wider: ValueType) -> bool {
        self.join(wider) == wider
    }

    /// The narrowest type that holds every value exactly (`Uint16` for no values).
    pub fn narrowest(values: impl IntoIterator<Item = f64>) -> ValueType {
        const ORDER: [ValueType; 4] = [
            ValueType::Uint16,
            ValueType::Uint32,
            ValueType::Float32,
            ValueType::Float64,
        ];
        let mut level = 0usize;
        for v in values {
            while level < 3 && !ORDER[level].holds(v) {
                level += 1;
            }
            if level == 3 {
                break;
            }
        }
        ORDER[level]
    }

    /// The Arrow type of the list items.
    pub fn arrow_type(self) -> arrow::datatypes::DataType {
        use arrow::datatypes::DataType;
        match self {
            ValueType::Uint16 => DataType::UInt16,
            ValueType::Uint32 => DataType::UInt32,
            ValueType::Float32 => DataType::Float32,
            ValueType::Float64 => DataType::Float64,
        }
    }
}

impl Manifest {
    /// Parses and checks `dir/manifest.json`: format name and version, the JSON Schema, then
    /// [`Manifest::check`]. Errors are [`ErrorKind::InvalidCorpus`] naming the manifest.
    pub fn read(dir: impl AsRef<Path>) -> Result<Manifest> {
        let path = dir.as_ref().join(MANIFEST_FILE);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::corpus(
                    &path,
                    "no manifest.json: not a cellarrow corpus",
                ));
            }
            Err(e) => return Err(Error::io(&path, "reading", e)),
        };
        Self::from_json_bytes(&text).map_err(|e| e.with_path(&path))
    }

    /// Parses and checks a manifest from JSON text (see [`Manifest::read`]); errors carry no path.
    pub fn from_json_bytes(text: &[u8]) -> Result<Manifest> {
        let value: serde_json::Value = serde_json::from_slice(text)
            .map_err(|e| Error::new(ErrorKind::InvalidCorpus, format!("not valid JSON: {e}")))?;
        check_format(&value)?;
        check_schema(&value)?;
        let manifest: Manifest = serde_json::from_value(value).map_err(|e| {
            Error::new(
                ErrorKind::InvalidCorpus,
                format!("does not match the manifest format: {e}"),
            )
        })?;
        manifest.check()?;
        Ok(manifest)
    }

    /// The index and value types of part `i` of `matrix.parts` (its own in format 2, the
    /// manifest's in format 1).
    pub fn part_types(&self, i: usize) -> (IndexType, ValueType) {
        let p = &self.matrix.parts[i];
        (
            p.index_type.unwrap_or(self.index_type),
            p.value_type.unwrap_or(self.value_type),
        )
    }

    /// The relative paths of a table's files, in row order: `NAME.parquet` in format 1 (when
    /// listed in `files`), the files of `tables[NAME]` in format 2; empty when there is no such
    /// table. The one place that knows the two layouts.
    pub fn table_paths(&self, table: &str) -> Vec<String> {
        if self.format_version >= 2 {
            return self
                .tables
                .get(table)
                .map(|fs| fs.iter().map(|f| f.path.clone()).collect())
                .unwrap_or_default();
        }
        let single = format!("{table}.parquet");
        if self.file(&single).is_some() {
            vec![single]
        } else {
            Vec::new()
        }
    }

    /// Checks this manifest and writes it as `dir/manifest.json` atomically (temporary file,
    /// fsync, rename), replacing any previous manifest.
    pub fn write(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        let path = dir.join(MANIFEST_FILE);
        self.check().map_err(|e| e.with_path(&path))?;
        let value = serde_json::to_value(self)
            .map_err(|e| Error::invalid_input(format!("serialising the manifest: {e}")))?;
        check_schema(&value).map_err(|e| e.with_path(&path))?;
        let mut text = serde_json::to_vec_pretty(&value)
            .map_err(|e| Error::invalid_input(format!("serialising the manifest: {e}")))?;
        text.push(b'\n');
        let tmp = dir.join(".manifest.json.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, "creating", e))?;
        f.write_all(&text)
            .map_err(|e| Error::io(&tmp, "writing", e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, "syncing", e))?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, "renaming into place", e))?;
        Ok(())
    }

    /// Semantic checks the JSON Schema cannot express: safe relative paths, unique files,
    /// parts and samples tiling `0..n_cells` in order with counts adding up, parts listed in
    /// `files` and never spanning two samples, `n_genes` within the index type.
    pub fn check(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::new(ErrorKind::InvalidCorpus, msg));
        if self.format != FORMAT_NAME {
            return bad(format!(
                "format is {:?}, expected {FORMAT_NAME:?}",
                self.format
            ));
        }
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&self.format_version) {
            return bad(version_message(self.format_version as u64));
        }
        if self.n_genes > self.index_type.max_genes() {
            return bad(format!(
                "n_genes {} does not fit index_type {:?}",
                self.n_genes, self.index_type
            ));
        }
        if self.matrix.batch_rows == 0 || self.matrix.batch_rows > i32::MAX as u64 {
            return bad(format!(
                "matrix.batch_rows {} is out of range",
                self.matrix.batch_rows
            ));
        }
        if self.matrix.part_cells == 0 {
            return bad("matrix.part_cells is 0".into());
        }

        let mut files = HashSet::new();
        for f in &self.files {
            check_rel_path(&f.path).map_err(|e| e.with_object("files"))?;
            if f.path == MANIFEST_FILE {
                return bad("files lists manifest.json itself".into());
            }
            if !files.insert(f.path.as_str()) {
                return bad(format!("files lists {:?} twice", f.path));
            }
            if f.sha256.len() != 64
                || !f
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return bad(format!("files: {:?} has a malformed sha256", f.path));
            }
        }

        let (mut next, mut nnz) = (0u64, 0u64);
        for (i, s) in self.samples.iter().enumerate() {
            if s.first_cell != next {
                return bad(format!(
                    "samples[{i}] ({}) starts at cell {}, expected {next}",
                    s.sample_id, s.first_cell
                ));
            }
            if !matches!(s.spatial_dims, 0 | 2 | 3) {
                return bad(format!(
                    "samples[{i}] ({}): spatial_dims {} is not 0, 2 or 3",
                    s.sample_id, s.spatial_dims
                ));
            }
            next = add(next, s.n_cells)?;
            nnz = add(nnz, s.nnz)?;
        }
        if next != self.n_cells || nnz != self.nnz {
            return bad(format!(
                "samples hold {next} cells and {nnz} non-zeros, manifest says {} and {}",
                self.n_cells, self.nnz
            ));
        }
        let mut ids = HashSet::new();
        for s in &self.samples {
            if !ids.insert(s.sample_id.as_str()) {
                return bad(format!("sample_id {:?} appears twice", s.sample_id));
            }
        }

        self.check_types_and_tables(&files)?;

        let (mut next, mut nnz) = (0u64, 0u64);
        let mut part_paths = HashSet::new();
        for (i, p) in self.matrix.parts.iter().enumerate() {
            check_rel_path(&p.path).map_err(|e| e.with_object("matrix.parts"))?;
            if !files.contains(p.path.as_str()) {
                return bad(format!(
                    "matrix.parts[{i}] {:?} is not listed in files",
                    p.path
                ));
            }
            if !part_paths.insert(p.path.as_str()) {
                return bad(format!("matrix.parts lists {:?} twice", p.path));
            }
            if p.first_cell != next {
                return bad(format!(
                    "matrix.parts[{i}] {:?} starts at cell {}, expected {next}",
                    p.path, p.first_cell
                ));
            }
            match (p.layout, p.chunk_cells) {
                (PartLayout::Hot, None) => {}
                (PartLayout::Cold, Some(c)) if (1..=MAX_CHUNK_CELLS).contains(&c) => {}
                (PartLayout::Cold, Some(c)) => {
                    return bad(format!(
                        "matrix.parts[{i}] {:?} has chunk_cells {c}, outside 1..={MAX_CHUNK_CELLS}",
                        p.path
                    ));
                }
                (PartLayout::Cold, None) => {
                    return bad(format!(
                        "matrix.parts[{i}] {:?} is cold but has no chunk_cells",
                        p.path
                    ));
                }
                (PartLayout::Hot, Some(_)) => {
                    return bad(format!(
                        "matrix.parts[{i}] {:?} has chunk_cells but is not cold",
                        p.path
                    ));
                }
            }
            if p.footer.is_some() && p.layout != PartLayout::Cold {
                return bad(format!(
                    "matrix.parts[{i}] {:?} has a footer but is not cold",
                    p.path
                ));
            }
            if p.layout == PartLayout::Cold && self.format_version < 2 {
                return bad(format!(
                    "matrix.parts[{i}] {:?}: format 1 has no cold parts",
                    p.path
                ));
            }
            if p.n_cells > self.matrix.part_cells {
                return bad(format!(
                    "matrix.parts[{i}] {:?} holds {} cells, more than part_cells {}",
                    p.path, p.n_cells, self.matrix.part_cells
                ));
            }
            if p.n_cells > 0 {
                let s = self.samples.iter().find(|s| {
                    s.first_cell <= p.first_cell && p.first_cell < s.first_cell + s.n_cells
                });
                if let Some(s) = s {
                    if p.first_cell.saturating_add(p.n_cells) > s.first_cell + s.n_cells {
                        return bad(format!(
                            "matrix.parts[{i}] {:?} spans past the end of sample {}",
                            p.path, s.sample_id
                        ));
                    }
                }
            }
            next = add(next, p.n_cells)?;
            nnz = add(nnz, p.nnz)?;
        }
        if next != self.n_cells || nnz != self.nnz {
            return bad(format!(
                "matrix parts hold {next} cells and {nnz} non-zeros, manifest says {} and {}",
                self.n_cells, self.nnz
            ));
        }
        Ok(())
    }

    /// Format 2: every part has its own types, each widening to the manifest's; the tables
    /// list files that `files` lists, once each. Format 1: neither field exists.
    fn check_types_and_tables(&self, files: &HashSet<&str>) -> Result<()> {
        let bad = |msg: String| Err(Error::new(ErrorKind::InvalidCorpus, msg));
        if self.format_version < 2 {
            if !self.tables.is_empty() {
                return bad("format 1 has no \"tables\"; its tables are NAME.parquet".into());
            }
            if let Some(p) = self
                .matrix
                .parts
                .iter()
                .find(|p| p.index_type.is_some() || p.value_type.is_some())
            {
                return bad(format!(
                    "matrix.parts {:?}: format 1 has no per-part types",
                    p.path
                ));
            }
            return Ok(());
        }
        for (i, p) in self.matrix.parts.iter().enumerate() {
            let (Some(it), Some(vt)) = (p.index_type, p.value_type) else {
                return bad(format!(
                    "matrix.parts[{i}] {:?} has no index_type or value_type",
                    p.path
                ));
            };
            if it.join(self.index_type) != self.index_type || !vt.widens_to(self.value_type) {
                return bad(format!(
                    "matrix.parts[{i}] {:?} has types ({it:?}, {vt:?}) that do not widen to \
                     the manifest's ({:?}, {:?})",
                    p.path, self.index_type, self.value_type
                ));
            }
        }
        for t in REQUIRED_TABLES.iter().chain([&GENE_COUNTS_TABLE]) {
            if self.tables.get(*t).is_none_or(|fs| fs.is_empty()) {
                return bad(format!("tables has no files for the {t} table"));
            }
        }
        let mut seen = HashSet::new();
        for (name, fs) in &self.tables {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return bad(format!("tables: {name:?} is not a table name"));
            }
            for f in fs {
                check_rel_path(&f.path).map_err(|e| e.with_object("tables"))?;
                if !files.contains(f.path.as_str()) {
                    return bad(format!(
                        "tables.{name}: {:?} is not listed in files",
                        f.path
                    ));
                }
                if !seen.insert(f.path.as_str()) {
                    return bad(format!("tables lists {:?} twice", f.path));
                }
                // The directory names the table, so a manifest whose table name changed (or
                // whose path moved to another table) cannot pass as a different table.
                if f.path
                    .strip_prefix(name.as_str())
                    .and_then(|r| r.strip_prefix('/'))
                    .is_none()
                {
                    return bad(format!(
                        "tables.{name}: {:?} does not lie in the table's directory {name}/",
                        f.path
                    ));
                }
            }
        }
        let rows = |t: &str| self.tables[t].iter().map(|f| f.rows).sum::<u64>();
        for (t, want) in [
            ("obs", self.n_cells),
            ("genes", self.n_genes),
            ("samples", self.samples.len() as u64),
        ] {
            if rows(t) != want {
                return bad(format!(
                    "tables.{t} holds {} rows, expected {want}",
                    rows(t)
                ));
            }
        }
        Ok(())
    }

    /// The listed size and checksum of `path`, if listed.
    pub fn file(&self, path: &str) -> Option<&super::FileEntry> {
        self.files.iter().find(|f| f.path == path)
    }
}

fn add(a: u64, b: u64) -> Result<u64> {
    a.checked_add(b)
        .ok_or_else(|| Error::new(ErrorKind::InvalidCorpus, "counts overflow u64"))
}

fn version_message(v: u64) -> String {
    if v > FORMAT_VERSION as u64 {
        format!("format_version {v} is newer than this cellarrow reads ({FORMAT_VERSION})")
    } else {
        format!(
            "format_version {v} is not supported (this cellarrow reads \
             {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION})"
        )
    }
}

/// Name and version first, so that a newer corpus gets a plain message rather than a schema error.
fn check_format(value: &serde_json::Value) -> Result<()> {
    let bad = |msg: String| Err(Error::new(ErrorKind::InvalidCorpus, msg));
    let Some(obj) = value.as_object() else {
        return bad("manifest is not a JSON object".into());
    };
    match obj.get("format").and_then(|f| f.as_str()) {
        Some(FORMAT_NAME) => {}
        Some(other) => return bad(format!("format is {other:?}, expected {FORMAT_NAME:?}")),
        None => return bad("no \"format\" field: not a cellarrow manifest".into()),
    }
    match obj.get("format_version").and_then(|v| v.as_u64()) {
        Some(v) if (OLDEST_FORMAT_VERSION as u64..=FORMAT_VERSION as u64).contains(&v) => Ok(()),
        Some(v) => bad(version_message(v)),
        None => bad("format_version is missing or not a non-negative integer".into()),
    }
}

fn check_schema(value: &serde_json::Value) -> Result<()> {
    let errors: Vec<String> = schema_validator()
        .iter_errors(value)
        .take(5)
        .map(|e| {
            let at = e.instance_path().to_string();
            if at.is_empty() {
                e.to_string()
            } else {
                format!("{at}: {e}")
            }
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::InvalidCorpus,
            format!("fails manifest.schema.json: {}", errors.join("; ")),
        ))
    }
}

/// Checks the lexical form of a manifest path: relative, `/`-separated, non-empty segments,
/// none of them `.` or `..`, no backslash or NUL.
pub fn check_rel_path(p: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::new(
            ErrorKind::InvalidCorpus,
            format!("path {p:?} {why}"),
        ))
    };
    if p.is_empty() {
        return bad("is empty");
    }
    if p.starts_with('/') {
        return bad("is absolute; manifest paths must be relative to the corpus directory");
    }
    if p.contains('\\') || p.contains('\0') {
        return bad("contains a backslash or NUL; manifest paths use '/'");
    }
    for seg in p.split('/') {
        match seg {
            "" => return bad("has an empty segment"),
            "." => return bad("has a '.' segment"),
            ".." => return bad("contains '..'; manifest paths must stay inside the corpus"),
            _ => {}
        }
    }
    Ok(())
}

/// Resolves a manifest path under `root`, refusing anything that leaves the directory,
/// including through symlinks. The file must exist.
pub fn resolve(root: &Path, rel: &str) -> Result<PathBuf> {
    check_rel_path(rel).map_err(|e| e.with_path(root.join(MANIFEST_FILE)))?;
    let joined = root.join(rel);
    debug_assert!(Path::new(rel)
        .components()
        .all(|c| matches!(c, Component::Normal(_))));
    let canon_root = root
        .canonicalize()
        .map_err(|e| Error::io(root, "resolving the corpus directory", e))?;
    let canon = match joined.canonicalize() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::corpus(
                &joined,
                "listed in manifest.json but missing",
            ));
        }
        Err(e) => return Err(Error::io(&joined, "resolving", e)),
    };
    if !canon.starts_with(&canon_root) {
        return Err(Error::corpus(
            &joined,
            format!(
                "resolves to {} outside the corpus directory",
                canon.display()
            ),
        ));
    }
    Ok(canon)
}
