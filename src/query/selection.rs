//! Block and region selections: SQL in, `(sample_id, id)` pairs out, to restrict the block and
//! region samplers ([`crate::sample::BlockConfig::only`], [`crate::sample::RegionConfig::only`]).

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::DataType;
use futures::StreamExt;

use std::sync::Arc;

use super::{query_error, QueryEngine};
use crate::corpus::Corpus;
use crate::error::{Error, ErrorKind, Result};
use crate::sample::Cohort;

/// The spatial blocks a query selects: the distinct `(sample_id, block_id)` pairs of its
/// result, sorted. The query must return a `sample_id` column (text) and an integer
/// `block_id` column; other columns are ignored. Block ids are those of the `blocks(size[,
/// stride])` table function, so pass the same size and stride to
/// [`BlockConfig`](crate::sample::BlockConfig) and
/// [`BlockConfig::only`](crate::sample::BlockConfig::only) serves exactly these blocks.
///
/// Errors (`Query`): a missing column (the message lists the result's columns), a null, a
/// negative or non-integer block id.
///
/// ```no_run
/// use std::sync::Arc;
/// use cellarrow::{Corpus, query::{block_selection, QueryEngine}};
/// use cellarrow::sample::{BlockConfig, Cohort, SampleIndex, SpatialBlocks};
/// let corpus = Arc::new(Corpus::open("corpus/")?);
/// let engine = QueryEngine::new(corpus.clone())?;
/// let blocks = block_selection(
///     &engine,
///     "SELECT sample_id, block_id FROM blocks(500) WHERE n_cells BETWEEN 20 AND 200",
/// )?;
/// let index = SampleIndex::from_corpus(&corpus, None, true)?;
/// let cfg = BlockConfig::new(500.0, 0).only(blocks);
/// let sampler = SpatialBlocks::new(&index, Cohort::all(corpus.n_cells()), cfg)?;
/// # Ok::<(), cellarrow::Error>(())
/// ```
pub fn block_selection(engine: &QueryEngine, sql: &str) -> Result<Vec<(String, u64)>> {
    let what = "the block selection query";
    let mut out = Vec::new();
    for_each_pair_batch(
        engine,
        sql,
        what,
        "block_id",
        "SELECT sample_id, block_id FROM blocks(500) WHERE n_cells BETWEEN 20 AND 200",
        |samples, ids| {
            let ids = block_ids(ids, what)?;
            out.extend(samples.into_iter().zip(ids));
            Ok(())
        },
    )?;
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// The regions a query selects: the distinct `(sample_id, region_id)` pairs of its result,
/// sorted. The query must return `sample_id` and `region_id` columns (region ids of any type
/// are compared as text, as the region samplers compare them); other columns are ignored.
/// Pass the pairs to [`RegionConfig::only`](crate::sample::RegionConfig::only).
///
/// Errors (`Query`): a missing column (the message lists the result's columns) or a null.
///
/// ```no_run
/// use std::sync::Arc;
/// use cellarrow::{Corpus, query::{region_selection, QueryEngine}};
/// use cellarrow::sample::{Cohort, RegionConfig, Regions, SampleIndex};
/// let corpus = Arc::new(Corpus::open("corpus/")?);
/// let engine = QueryEngine::new(corpus.clone())?;
/// let regions = region_selection(&engine, "SELECT sample_id, region_id FROM regions WHERE n_cells >= 50")?;
/// let index = SampleIndex::from_corpus(&corpus, Some("region"), true)?;
/// let cfg = RegionConfig::new(0).only(regions);
/// let sampler = Regions::from_obs_column(&index, Cohort::all(corpus.n_cells()), cfg)?;
/// # Ok::<(), cellarrow::Error>(())
/// ```
pub fn region_selection(engine: &QueryEngine, sql: &str) -> Result<Vec<(String, String)>> {
    let what = "the region selection query";
    let mut out = Vec::new();
    for_each_pair_batch(
        engine,
        sql,
        what,
        "region_id",
        "SELECT sample_id, region_id FROM regions WHERE n_cells >= 50",
        |samples, ids| {
            let ids = strings(ids, "region_id", what)?;
            out.extend(samples.into_iter().zip(ids));
            Ok(())
        },
    )?;
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Runs `sql`, checks that it returns `sample_id` and `id_column`, and hands `f` the sample
/// ids and the id column of every batch. `what` names the query in errors.
fn for_each_pair_batch(
    engine: &QueryEngine,
    sql: &str,
    what: &str,
    id_column: &str,
    example: &str,
    mut f: impl FnMut(Vec<String>, &dyn Array) -> Result<()>,
) -> Result<()> {
    engine.runtime.block_on(async {
        let df = engine
            .ctx
            .sql(sql)
            .await
            .map_err(|e| engine.planning_error(e))?;
        let schema = df.schema().inner().clone();
        let missing: Vec<&str> = ["sample_id", id_column]
            .into_iter()
            .filter(|c| schema.index_of(c).is_err())
            .collect();
        if !missing.is_empty() {
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            return Err(Error::new(
                ErrorKind::Query,
                format!(
                    "{what} has no {} column; its columns are: {}. Select them, e.g. `{example}`",
                    missing
                        .iter()
                        .map(|c| format!("`{c}`"))
                        .collect::<Vec<_>>()
                        .join(" or "),
                    if names.is_empty() {
                        "(none)".to_string()
                    } else {
                        names.join(", ")
                    }
                ),
            ));
        }
        let df = df
            .select_columns(&["sample_id", id_column])
            .map_err(query_error)?;
        let mut stream = df.execute_stream().await.map_err(query_error)?;
        while let Some(batch) = stream.next().await {
            let batch: RecordBatch = batch.map_err(query_error)?;
            let samples = strings(batch.column(0).as_ref(), "sample_id", what)?;
            f(samples, batch.column(1).as_ref())?;
        }
        Ok(())
    })
}

/// A column as text, refusing nulls.
fn strings(column: &dyn Array, name: &str, what: &str) -> Result<Vec<String>> {
    if column.null_count() > 0 {
        return Err(Error::new(
            ErrorKind::Query,
            format!(
                "{what}: column `{name}` has {} null values",
                column.null_count()
            ),
        ));
    }
    let text = arrow::compute::cast(column, &DataType::Utf8).map_err(|e| {
        Error::new(
            ErrorKind::Query,
            format!(
                "{what}: column `{name}` of type {} cannot be read as text: {e}",
                column.data_type()
            ),
        )
    })?;
    Ok(text
        .as_string::<i32>()
        .iter()
        .map(|v| v.unwrap_or_default().to_string())
        .collect())
}

/// The block id column as `u64`, refusing nulls, negative and non-integer ids.
fn block_ids(column: &dyn Array, what: &str) -> Result<Vec<u64>> {
    let ids = crate::sample::integer_ids(column, "block_id", "block ids", what, ErrorKind::Query)?;
    Ok(ids.values().to_vec())
}

/// The SQL parts of a loader's selection; each is optional.
#[derive(Debug, Clone, Copy, Default)]
pub struct SelectionSql<'a> {
    /// A predicate on obs: only the cells it holds for.
    pub where_: Option<&'a str>,
    /// A query returning `sample_id`, `block_id` (see [`block_selection`]).
    pub blocks_sql: Option<&'a str>,
    /// A query returning `sample_id`, `region_id` (see [`region_selection`]).
    pub regions_sql: Option<&'a str>,
    /// The obs column whose values are the regions the sampler serves; `regions_sql` then
    /// sees those regions as its `regions` table.
    pub region_column: Option<&'a str>,
}

/// What [`select`] chose: the cohort of a `where_` (else `None`: every cell), and the blocks
/// and regions of the queries.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub cohort: Option<Cohort>,
    pub blocks: Option<Vec<(String, u64)>>,
    pub regions: Option<Vec<(String, String)>>,
}

/// Runs the SQL parts of a selection in one session over `corpus` (none is started when
/// there is no SQL).
pub fn select(corpus: &Arc<Corpus>, sql: &SelectionSql<'_>) -> Result<Selection> {
    let mut out = Selection::default();
    if sql.where_.is_none() && sql.blocks_sql.is_none() && sql.regions_sql.is_none() {
        return Ok(out);
    }
    let mut engine = QueryEngine::new(corpus.clone())?;
    if let Some(pred) = sql.where_ {
        out.cohort = Some(engine.cohort_where(pred)?);
    }
    if let Some(q) = sql.blocks_sql {
        out.blocks = Some(block_selection(&engine, q)?);
    }
    if let Some(q) = sql.regions_sql {
        if let Some(column) = sql.region_column {
            // The sampler's regions are this column's values: so are the query's.
            if engine.tables.iter().any(|t| t == "regions") {
                engine
                    .ctx
                    .deregister_table("regions")
                    .map_err(super::query_error)?;
                engine.tables.retain(|t| t != "regions");
            }
            engine.derive_regions(Some(column))?;
        }
        out.regions = Some(region_selection(&engine, q)?);
    }
    Ok(out)
}
