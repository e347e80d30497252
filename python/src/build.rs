//! Building corpora from Python: the conversion's gene planning, a conversion and a merge, for
//! drivers that spread a conversion over many processes or machines (`cellarrow.ray`). Each
//! call runs the library's own code with the GIL released; summaries come back as JSON.

use std::collections::BTreeMap;
use std::path::PathBuf;

use cellarrow::convert::{
    self as core, ConvertOptions, DuplicateGenes, InputSample, MergeOptions, OnDuplicate,
};
use cellarrow::corpus::PartLayout;
use cellarrow::h5ad::MatrixSource;
use pyo3::prelude::*;

use crate::{to_py, value_error};

/// One input as Python hands it over: path, sample id, per-sample metadata.
type PyInput = (PathBuf, String, BTreeMap<String, String>);

fn to_inputs(inputs: Vec<PyInput>) -> Vec<InputSample> {
    inputs
        .into_iter()
        .map(|(path, sample_id, metadata)| InputSample {
            path,
            sample_id,
            metadata,
        })
        .collect()
}

/// The reading options shared by planning and conversion, from Python keywords.
#[allow(clippy::too_many_arguments)]
fn options(
    output: PathBuf,
    layer: Option<String>,
    raw: bool,
    gene_column: Option<String>,
    gene_key: &str,
    gene_order: Option<PathBuf>,
    duplicate_genes: &str,
    obs_columns: Option<Vec<String>>,
    ontology: Vec<String>,
    spatial_key: Option<String>,
    threads: usize,
) -> PyResult<ConvertOptions> {
    let mut o = ConvertOptions::new(output);
    o.source = match (layer, raw) {
        (Some(_), true) => return Err(value_error("give layer or raw, not both")),
        (Some(l), false) => MatrixSource::Layer(l),
        (None, true) => MatrixSource::Raw,
        (None, false) => MatrixSource::X,
    };
    o.gene_column = gene_column;
    o.gene_key = gene_key.parse().map_err(to_py)?;
    o.gene_order = gene_order;
    o.duplicate_genes = match duplicate_genes {
        "error" => DuplicateGenes::Error,
        "sum" => DuplicateGenes::Sum,
        "first" => DuplicateGenes::First,
        other => {
            return Err(value_error(format!(
                "duplicate_genes must be 'error', 'sum' or 'first', not {other:?}"
            )))
        }
    };
    o.obs_columns = obs_columns;
    o.ontologies = ontology
        .iter()
        .map(|c| c.parse())
        .collect::<Result<_, _>>()
        .map_err(to_py)?;
    if let Some(k) = spatial_key {
        o.spatial_key = k;
    }
    o.threads = threads;
    Ok(o)
}

/// The inputs of a conversion as `(path, sample_id, metadata)`: h5ad paths (sample ids are
/// file stems) or one input manifest (.csv or .json), as `cellarrow convert` reads them.
#[pyfunction]
pub fn resolve_inputs(py: Python<'_>, paths: Vec<PathBuf>) -> PyResult<Vec<PyInput>> {
    let samples = py.detach(|| core::resolve_inputs(&paths)).map_err(to_py)?;
    Ok(samples
        .into_iter()
        .map(|s| (s.path, s.sample_id, s.metadata))
        .collect())
}

/// The gene vocabulary a conversion of `inputs` would build, as gene names in id order, from
/// the var tables alone (no matrix is read). With `out`, also written there as a genes file
/// (ids, symbols, species) for `convert(gene_order=out)`.
#[pyfunction]
#[pyo3(signature = (inputs, *, out=None, layer=None, raw=false, gene_column=None, gene_key="id", gene_order=None, duplicate_genes="error", threads=0))]
#[allow(clippy::too_many_arguments)]
pub fn plan_genes(
    py: Python<'_>,
    inputs: Vec<PyInput>,
    out: Option<PathBuf>,
    layer: Option<String>,
    raw: bool,
    gene_column: Option<String>,
    gene_key: &str,
    gene_order: Option<PathBuf>,
    duplicate_genes: &str,
    threads: usize,
) -> PyResult<Vec<String>> {
    let o = options(
        PathBuf::new(),
        layer,
        raw,
        gene_column,
        gene_key,
        gene_order,
        duplicate_genes,
        None,
        Vec::new(),
        None,
        threads,
    )?;
    let inputs = to_inputs(inputs);
    py.detach(|| {
        let vocab = core::plan_genes(&inputs, &o)?;
        if let Some(p) = &out {
            vocab.write(p)?;
        }
        Ok(vocab.names())
    })
    .map_err(to_py)
}

/// Converts `inputs` into a corpus at `output` (the library's `convert`); returns its summary
/// as JSON.
#[pyfunction]
#[pyo3(signature = (inputs, output, *, layer=None, raw=false, gene_column=None, gene_key="id", gene_order=None, duplicate_genes="error", obs_columns=None, ontology=Vec::new(), spatial_key=None, part_cells=None, layout="hot", chunk_cells=None, overwrite=false, threads=0))]
#[allow(clippy::too_many_arguments)]
pub fn convert(
    py: Python<'_>,
    inputs: Vec<PyInput>,
    output: PathBuf,
    layer: Option<String>,
    raw: bool,
    gene_column: Option<String>,
    gene_key: &str,
    gene_order: Option<PathBuf>,
    duplicate_genes: &str,
    obs_columns: Option<Vec<String>>,
    ontology: Vec<String>,
    spatial_key: Option<String>,
    part_cells: Option<u64>,
    layout: &str,
    chunk_cells: Option<u64>,
    overwrite: bool,
    threads: usize,
) -> PyResult<String> {
    let mut o = options(
        output,
        layer,
        raw,
        gene_column,
        gene_key,
        gene_order,
        duplicate_genes,
        obs_columns,
        ontology,
        spatial_key,
        threads,
    )?;
    if let Some(p) = part_cells {
        o.part_cells = p;
    }
    o.layout = match layout {
        "hot" => PartLayout::Hot,
        "cold" => PartLayout::Cold,
        other => {
            return Err(value_error(format!(
                "layout {other:?}: expected \"hot\" or \"cold\""
            )))
        }
    };
    o.chunk_cells = chunk_cells;
    o.overwrite = overwrite;
    let inputs = to_inputs(inputs);
    let url = o
        .output
        .to_str()
        .filter(|s| cellarrow::store::is_url(s))
        .map(str::to_string);
    let summary = py
        .detach(|| match &url {
            Some(url) => cellarrow::convert::publish::convert_to(&inputs, &o, url),
            None => core::convert(&inputs, &o),
        })
        .map_err(to_py)?;
    Ok(serde_json::to_string(&summary).expect("a summary serialises"))
}

/// Merges the corpora `inputs` into `output` (the library's `merge`); returns its report as
/// JSON.
#[pyfunction]
#[pyo3(signature = (inputs, output, *, on_duplicate="error", overwrite=false, threads=0))]
pub fn merge(
    py: Python<'_>,
    inputs: Vec<PathBuf>,
    output: PathBuf,
    on_duplicate: &str,
    overwrite: bool,
    threads: usize,
) -> PyResult<String> {
    let on_duplicate = match on_duplicate {
        "error" => OnDuplicate::Error,
        "skip" => OnDuplicate::Skip,
        "rename" => OnDuplicate::Rename,
        other => {
            return Err(value_error(format!(
                "on_duplicate must be 'error', 'skip' or 'rename', not {other:?}"
            )))
        }
    };
    let opts = MergeOptions {
        on_duplicate,
        overwrite,
        threads,
    };
    let report = py
        .detach(|| core::merge(&inputs, &output, &opts))
        .map_err(to_py)?;
    Ok(serde_json::to_string(&report).expect("a report serialises"))
}

/// Uploads the local corpus `local` to the URL `url`, the manifest last (the library's
/// `publish`); with `check_only`, only checks that `url` may take a corpus (it answers, and
/// it is empty or `overwrite`). Returns the upload's summary as JSON.
#[pyfunction]
#[pyo3(signature = (local, url, *, overwrite=false, check_only=false))]
pub fn publish(
    py: Python<'_>,
    local: PathBuf,
    url: String,
    overwrite: bool,
    check_only: bool,
) -> PyResult<String> {
    use cellarrow::convert::publish::{publish, Destination, PublishSummary};
    let summary = py
        .detach(|| {
            let location = cellarrow::store::Location::parse(&url)?;
            let dest = Destination::check(&location, overwrite)?;
            if check_only {
                return Ok(PublishSummary::default());
            }
            publish(&local, &dest, false)
        })
        .map_err(to_py)?;
    Ok(serde_json::to_string(&summary).expect("a summary serialises"))
}
