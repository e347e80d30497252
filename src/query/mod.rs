//! Layer 4: SQL over the corpus tables with DataFusion; a cohort (a set of cell ids) out.
//!
//! A [`QueryEngine`] registers the corpus tables, read straight from their Parquet files (every
//! file of a format-2 table dataset as one table) with projection and predicate push-down:
//!
//! | table | from | |
//! |---|---|---|
//! | `obs` | `obs/*.parquet` (format 1: `obs.parquet`) | one row per cell: `cell`, `sample_id`, `nnz`, `total`, `x`, `y`, source obs columns |
//! | `genes` | `genes/*.parquet` with the sums of `gene_counts/*.parquet` (format 1: `genes.parquet`) | the vocabulary: `gene`, `name`, `n_samples`, `n_cells` |
//! | `gene_counts` | `gene_counts/*.parquet` (format 2) | per conversion or append: `gene`, `n_samples`, `n_cells` |
//! | `samples` | `samples/*.parquet` (format 1: `samples.parquet`) | one row per source file, with per-sample metadata |
//! | `regions` | derived from an obs region column | only when obs has one |
//! | `gene_stats` | `gene_stats/*.parquet` (one file) | per (species, gene): `n_cells`, `sum`, `sum_sq`, `median_nonzero` ([`crate::convert::gene_stats`]); corpora made before it have none |
//! | `ontology` | the ontologies given to the engine | see [`QueryEngine::with_ontology`] and `is_a()` |
//!
//! A derived `regions` has one row per (sample, region value): `sample_id`, `region_id`,
//! `n_cells`, `first_cell`, `last_cell` and the bounding box `x_min`, `x_max`, `y_min`, `y_max`
//! (`z_min`, `z_max`), the same names a regions manifest uses.
//!
//! and two functions:
//!
//! - `blocks(size[, stride])`, a table function listing the non-empty spatial blocks of every
//!   spatial sample: `sample_id, block_id, x0, y0, (z0), x1, y1, (z1), n_cells`, counted over
//!   all cells of the sample, on the grid of [`crate::sample::BlockGrid`] (anchoring, geometry
//!   and block ids), the grid the block sampler uses;
//! - `expr(cell, gene)`, the value of one gene (name or id) in one cell as `Float64`, read from
//!   the mapped matrix by binary search, 0 where the cell has no entry.
//!
//! ```sql
//! SELECT cell_type, tissue, COUNT(*) AS n FROM obs GROUP BY cell_type, tissue ORDER BY n DESC;
//! SELECT cell FROM obs WHERE cell_type = 'T cell' AND expr(cell, 'CD3E') > 0;
//! SELECT * FROM blocks(500) WHERE n_cells BETWEEN 20 AND 200 AND sample_id = 's1';
//! ```
//!
//! What comes out feeds the samplers of [`crate::sample`]:
//!
//! - [`QueryEngine::cohort`] (and [`cohort`], [`cohort_where`]): the [`Cohort`] of the cells
//!   a query selects; save it with [`crate::sample::write_cohort`];
//! - [`block_selection`]: the `(sample_id, block_id)` pairs a query over `blocks(...)`
//!   selects, for [`crate::sample::BlockConfig::only`];
//! - [`region_selection`]: the `(sample_id, region_id)` pairs a query over `regions`
//!   selects, for [`crate::sample::RegionConfig::only`].
//!
//! Strings come back as `Utf8` (not `Utf8View`), so results print and export plainly.

mod blocks;
mod expr;
mod ontology;
mod output;
mod selection;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::common::{DataFusionError, SchemaError};
use datafusion::execution::context::{SessionConfig, SessionContext};
use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::ParquetReadOptions;
use futures::StreamExt;

use crate::corpus::Corpus;
use crate::error::{Error, ErrorKind, Result};

use crate::sample::{Cohort, CELL_COLUMN};

pub use ontology::ONTOLOGY_TABLE;
pub use output::{format_table, OutputFormat, ResultWriter};
pub use selection::{block_selection, region_selection, select, Selection, SelectionSql};

pub(crate) use expr::CellRows;

/// Settings of a [`QueryEngine`].
#[derive(Debug, Clone, Default)]
pub struct QueryOptions {
    /// Worker threads and DataFusion partitions; 0 picks the available parallelism (at most 8).
    pub threads: usize,
    /// The obs column that defines the `regions` table; `None` uses a column named `region`
    /// if obs has one.
    pub region_column: Option<String>,
}

/// A DataFusion session over one corpus, with its own small tokio runtime so that callers
/// stay synchronous.
///
/// ```no_run
/// use std::sync::Arc;
/// use cellarrow::{Corpus, query::QueryEngine};
/// let corpus = Arc::new(Corpus::open("corpus/")?);
/// let engine = QueryEngine::new(corpus)?;
/// let batches = engine.sql("SELECT sample_id, COUNT(*) AS n FROM obs GROUP BY sample_id")?;
/// let t_cells = engine.cohort_where("cell_type = 'T cell' AND expr(cell, 'CD3E') > 0")?;
/// # Ok::<(), cellarrow::Error>(())
/// ```
pub struct QueryEngine {
    ctx: SessionContext,
    // Declared after `ctx` so the session (and its tasks) drop before the runtime.
    runtime: tokio::runtime::Runtime,
    root: PathBuf,
    n_cells: u64,
    tables: Vec<String>,
    ontologies: Vec<Arc<crate::ontology::Ontology>>,
}

impl std::fmt::Debug for QueryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryEngine")
            .field("root", &self.root)
            .field("tables", &self.tables)
            .finish()
    }
}

impl QueryEngine {
    /// A session over `corpus` with default [`QueryOptions`].
    pub fn new(corpus: Arc<Corpus>) -> Result<QueryEngine> {
        Self::with_options(corpus, &QueryOptions::default())
    }

    /// A session over `corpus`.
    pub fn with_options(corpus: Arc<Corpus>, options: &QueryOptions) -> Result<QueryEngine> {
        let root = corpus.root().to_path_buf();
        let n_cells = corpus.n_cells();
        Self::from_parts(
            &root,
            Some(n_cells),
            Some(corpus as Arc<dyn CellRows>),
            options,
        )
    }

    /// A session over the tables in `root`; `rows` backs `expr()` (it fails without), and
    /// `n_cells` defaults to the row count of `obs.parquet`.
    pub(crate) fn from_parts(
        root: &Path,
        n_cells: Option<u64>,
        rows: Option<Arc<dyn CellRows>>,
        options: &QueryOptions,
    ) -> Result<QueryEngine> {
        let threads = match options.threads {
            0 => std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(8),
            n => n,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("cellarrow-sql")
            .enable_all()
            .build()
            .map_err(|e| {
                Error::new(ErrorKind::Query, format!("starting the query runtime: {e}"))
                    .with_source(e)
            })?;

        let mut config = SessionConfig::new()
            .with_target_partitions(threads)
            .with_information_schema(true);
        {
            let o = config.options_mut();
            // Plain Utf8 prints, exports and round-trips through every reader.
            o.execution.parquet.schema_force_view_types = false;
            o.sql_parser.map_string_types_to_utf8view = false;
            o.execution.parquet.pushdown_filters = true;
            o.execution.parquet.reorder_filters = true;
        }
        let ctx = SessionContext::new_with_config(config);

        let files_of = |table: &str| crate::corpus::table_files_at(root, table);
        let obs = files_of("obs")?;
        let n_cells = match n_cells {
            Some(n) => n,
            None => obs.iter().map(|p| parquet_rows(p)).sum::<Result<u64>>()?,
        };
        let manifest = root
            .join(crate::corpus::MANIFEST_FILE)
            .exists()
            .then(|| crate::corpus::Manifest::read(root))
            .transpose()?;
        let mut tables = Vec::new();
        for table in [
            "obs",
            "genes",
            "samples",
            crate::corpus::GENE_COUNTS_TABLE,
            crate::convert::gene_stats::TABLE,
        ] {
            if table == "genes" {
                if let Some(m) = manifest.as_ref().filter(|m| m.format_version >= 2) {
                    // Identity and summed counts, as in format 1: one row per gene, in memory.
                    let batches = crate::corpus::read_genes_with_counts(root, m, None)?;
                    let schema = batches
                        .first()
                        .map(|b| b.schema())
                        .ok_or_else(|| Error::corpus(root, "the genes table is empty"))?;
                    let mem = datafusion::datasource::MemTable::try_new(schema, vec![batches])
                        .map_err(query_error)?;
                    ctx.register_table(table, Arc::new(mem))
                        .map_err(query_error)?;
                    tables.push(table.to_string());
                    continue;
                }
            }
            let files = files_of(table)?;
            if files.is_empty() {
                if table == crate::corpus::GENE_COUNTS_TABLE
                    || table == crate::convert::gene_stats::TABLE
                {
                    continue;
                }
                let path = root.join(format!("{table}.parquet"));
                return Err(Error::corpus(&path, format!("missing table `{table}`")));
            }
            runtime
                .block_on(register_files(&ctx, table, &files))
                .map_err(|e| query_error(e).with_path(&files[0]))?;
            tables.push(table.to_string());
        }
        let engine_tables = tables;
        let mut engine = QueryEngine {
            ctx,
            runtime,
            root: root.to_path_buf(),
            n_cells,
            tables: engine_tables,
            ontologies: Vec::new(),
        };
        engine.derive_regions(options.region_column.as_deref())?;
        engine.ctx.register_udtf(
            "blocks",
            Arc::new(blocks::BlocksFunction::new(obs, files_of("samples")?)),
        );
        let state = Arc::new(expr::ExprState::new(rows, files_of("genes")?));
        engine
            .ctx
            .register_udf(ScalarUDF::from(expr::ExprUdf::new(state)));
        ontology::register(&engine.ctx, &[])?;
        Ok(engine)
    }

    /// Registers `regions` as a view grouping obs by a region column.
    fn derive_regions(&mut self, column: Option<&str>) -> Result<()> {
        let obs = self.table_schema("obs")?;
        let names: Vec<&str> = obs.fields().iter().map(|f| f.name().as_str()).collect();
        let column = match column {
            Some(c) if names.contains(&c) => c.to_string(),
            Some(c) => {
                return Err(Error::new(
                    ErrorKind::Query,
                    format!(
                        "region column `{c}` is not an obs column; obs columns: {}",
                        names.join(", ")
                    ),
                ))
            }
            None if names.contains(&"region") => "region".to_string(),
            None => return Ok(()),
        };
        let col = quote_ident(&column);
        let mut select = format!(
            "sample_id, {col} AS region_id, COUNT(*) AS n_cells, MIN(cell) AS first_cell, MAX(cell) AS last_cell"
        );
        for axis in ["x", "y", "z"] {
            if names.contains(&axis) {
                select.push_str(&format!(
                    ", MIN({axis}) AS {axis}_min, MAX({axis}) AS {axis}_max"
                ));
            }
        }
        let sql = format!(
            "CREATE VIEW regions AS SELECT {select} FROM obs WHERE {col} IS NOT NULL \
             GROUP BY sample_id, {col} ORDER BY MIN(cell)"
        );
        self.runtime
            .block_on(self.ctx.sql(&sql))
            .map_err(query_error)?;
        self.tables.push("regions".to_string());
        Ok(())
    }

    /// The corpus directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Number of cells of the corpus (cell ids are `0 .. n_cells`).
    pub fn n_cells(&self) -> u64 {
        self.n_cells
    }

    /// A statement that does not plan; one naming a table that does not exist also lists the
    /// tables and functions there are.
    pub(crate) fn planning_error(&self, e: DataFusionError) -> Error {
        let err = query_error(e);
        let msg = err.message();
        if !(msg.contains("table") && msg.contains("not found")) {
            return err;
        }
        Error::new(
            err.kind(),
            format!(
                "{msg}; the tables of {} are {}; table functions blocks(size[, stride]) and expr(cell, gene)",
                self.root.display(),
                self.tables.join(", ")
            ),
        )
    }

    /// The registered tables: `obs`, `genes`, `samples` and, when present, `gene_counts`,
    /// `gene_stats` and `regions`.
    pub fn tables(&self) -> &[String] {
        &self.tables
    }

    /// The Arrow schema of a registered table.
    pub fn table_schema(&self, table: &str) -> Result<SchemaRef> {
        let provider = self
            .runtime
            .block_on(self.ctx.table_provider(table))
            .map_err(query_error)?;
        Ok(provider.schema())
    }

    /// The underlying DataFusion session, to register more tables or functions.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Runs one SQL statement and collects its result.
    pub fn sql(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        self.runtime.block_on(self.sql_async(sql))
    }

    /// [`sql`](Self::sql) for callers already inside an async runtime.
    pub async fn sql_async(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        let df = self
            .ctx
            .sql(sql)
            .await
            .map_err(|e| self.planning_error(e))?;
        df.collect().await.map_err(query_error)
    }

    /// Runs one SQL statement and hands each result batch to `f` as it is produced, so results
    /// larger than memory can be written out. Returns the result schema (also for no rows).
    pub fn for_each_batch(
        &self,
        sql: &str,
        mut f: impl FnMut(&RecordBatch) -> Result<()>,
    ) -> Result<SchemaRef> {
        self.runtime.block_on(async {
            let df = self
                .ctx
                .sql(sql)
                .await
                .map_err(|e| self.planning_error(e))?;
            let schema = df.schema().inner().clone();
            let mut stream = df.execute_stream().await.map_err(query_error)?;
            while let Some(batch) = stream.next().await {
                f(&batch.map_err(query_error)?)?;
            }
            Ok(schema)
        })
    }

    /// The cohort a query selects: the distinct values of its `cell` column, sorted.
    ///
    /// Errors if the result has no `cell` column, if it holds nulls or ids outside the corpus.
    pub fn cohort(&self, sql: &str) -> Result<Cohort> {
        let mut cells = Vec::new();
        self.runtime.block_on(async {
            let df = self
                .ctx
                .sql(sql)
                .await
                .map_err(|e| self.planning_error(e))?;
            let schema = df.schema().inner().clone();
            if schema.index_of(CELL_COLUMN).is_err() {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                return Err(crate::sample::missing_cell_column(
                    "the cohort query",
                    &names,
                ));
            }
            // Only the cell column crosses the stream, whatever else the query selects.
            let df = df.select_columns(&[CELL_COLUMN]).map_err(query_error)?;
            let mut stream = df.execute_stream().await.map_err(query_error)?;
            while let Some(batch) = stream.next().await {
                crate::sample::append_cells(
                    &batch.map_err(query_error)?,
                    &mut cells,
                    "the cohort query",
                )?;
            }
            Ok(())
        })?;
        let cohort = Cohort::from_cells(cells);
        if let Some(last) = cohort.last() {
            if last >= self.n_cells {
                return Err(Error::new(
                    ErrorKind::Query,
                    format!(
                        "the cohort query returned cell {last}, but the corpus has {} cells (ids 0..{})",
                        self.n_cells, self.n_cells
                    ),
                ));
            }
        }
        Ok(cohort)
    }

    /// The cells of obs that satisfy a SQL predicate: `SELECT cell FROM obs WHERE <predicate>`.
    pub fn cohort_where(&self, predicate: &str) -> Result<Cohort> {
        self.cohort(&format!("SELECT cell FROM obs WHERE {predicate}"))
    }
}

/// The cohort selected by `sql` over `corpus` (see [`QueryEngine::cohort`]).
pub fn cohort(corpus: &Arc<Corpus>, sql: &str) -> Result<Cohort> {
    QueryEngine::new(corpus.clone())?.cohort(sql)
}

/// The cells of `corpus` whose obs row satisfies `predicate` (see [`QueryEngine::cohort_where`]).
pub fn cohort_where(corpus: &Arc<Corpus>, predicate: &str) -> Result<Cohort> {
    QueryEngine::new(corpus.clone())?.cohort_where(predicate)
}

/// Quotes a SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Registers the Parquet files `files` (in row order; one schema) as one table.
async fn register_files(
    ctx: &SessionContext,
    table: &str,
    files: &[PathBuf],
) -> datafusion::error::Result<()> {
    use datafusion::datasource::listing::{ListingTable, ListingTableConfig, ListingTableUrl};
    use datafusion::execution::options::ReadOptions;
    let urls = files
        .iter()
        .map(|p| {
            let s = p.to_str().ok_or_else(|| {
                DataFusionError::Plan(format!("{}: path is not valid UTF-8", p.display()))
            })?;
            ListingTableUrl::parse(s)
        })
        .collect::<datafusion::error::Result<Vec<_>>>()?;
    let options = ParquetReadOptions::default()
        .to_listing_options(&ctx.copied_config(), ctx.copied_table_options());
    // Every file of a table has one schema (a format-2 invariant), so the first one's is the
    // table's.
    let schema = options.infer_schema(&ctx.state(), &urls[0]).await?;
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .with_schema(schema);
    ctx.register_table(table, Arc::new(ListingTable::try_new(config)?))?;
    Ok(())
}

/// Row count of a Parquet file, from its footer.
fn parquet_rows(path: &Path) -> Result<u64> {
    use crate::error::Context;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, "opening", e))?;
    let reader = parquet::file::serialized_reader::SerializedFileReader::new(file).at(path)?;
    use parquet::file::reader::FileReader;
    Ok(reader.metadata().file_metadata().num_rows().max(0) as u64)
}

/// Converts a DataFusion error into a [`ErrorKind::Query`] error; our own errors raised inside
/// DataFusion (table functions, UDFs) come back unchanged, and an unknown column lists the
/// columns of the tables in scope.
pub(crate) fn query_error(e: DataFusionError) -> Error {
    let root = e.find_root();
    if let DataFusionError::External(inner) = root {
        if let Some(ours) = inner.downcast_ref::<Error>() {
            let mut err = Error::new(ours.kind(), ours.message());
            if let Some(p) = ours.path() {
                err = err.with_path(p);
            }
            if let Some(o) = ours.object() {
                err = err.with_object(o);
            }
            return err;
        }
    }
    if let DataFusionError::SchemaError(schema_error, _) = root {
        if let SchemaError::FieldNotFound {
            field,
            valid_fields,
        } = schema_error.as_ref()
        {
            return unknown_column(field, valid_fields, &root.to_string()).with_source(e);
        }
    }
    let message = e.strip_backtrace();
    let message = execution_message(&message).unwrap_or(message);
    Error::new(ErrorKind::Query, message).with_source(e)
}

/// An error raised by a UDF inside a Parquet row filter reaches us flattened into text
/// (`Parquet error: External: Compute error: ... Execution("expr(): unknown gene ...")`);
/// the innermost execution message is the one that tells the user what to fix.
fn execution_message(message: &str) -> Option<String> {
    let start = message.rfind("Execution(\"")? + "Execution(\"".len();
    let rest = &message[start..];
    let end = rest.rfind("\")")?;
    Some(rest[..end].replace("\\\"", "\"").replace("\\'", "'"))
}

fn unknown_column(
    field: &datafusion::common::Column,
    valid: &[datafusion::common::Column],
    datafusion_message: &str,
) -> Error {
    // Group the candidates by table, in first-seen order.
    let mut by_table: Vec<(String, Vec<String>)> = Vec::new();
    for c in valid {
        let table = c
            .relation
            .as_ref()
            .map_or_else(String::new, |r| r.to_string());
        match by_table.iter_mut().find(|(t, _)| *t == table) {
            Some((_, cols)) => cols.push(c.name.clone()),
            None => by_table.push((table, vec![c.name.clone()])),
        }
    }
    if let Some(rel) = &field.relation {
        let rel = rel.to_string();
        if by_table.iter().any(|(t, _)| *t == rel) {
            by_table.retain(|(t, _)| *t == rel);
        }
    }
    let hint = datafusion_message
        .find("Did you mean")
        .map(|i| {
            let rest = &datafusion_message[i..];
            let end = rest.find('?').map_or(rest.len(), |j| j + 1);
            format!(" {}", &rest[..end])
        })
        .unwrap_or_default();
    let mut message = format!("unknown column `{}`.{hint}", field.flat_name());
    for (table, cols) in &by_table {
        if table.is_empty() {
            message.push_str(&format!("\ncolumns: {}", cols.join(", ")));
        } else {
            message.push_str(&format!("\ncolumns of {table}: {}", cols.join(", ")));
        }
    }
    Error::new(ErrorKind::Query, message)
}
