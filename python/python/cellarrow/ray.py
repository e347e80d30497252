"""Conversion on a Ray cluster: :func:`convert` spreads the files of one corpus over Ray tasks.

The work is the library's own, in three steps:

1. **Plan** (on the driver): the gene vocabulary of all inputs, read from their var tables
   alone (no matrix is read): the genes matched and placed in first-seen order, exactly what a
   single ``cellarrow convert`` of the same files would build, written as a genes file (ids,
   symbols, species: a file naming genes by symbol only still finds them).
2. **Convert** (one Ray task per file, or per group of ``files_per_task`` files): the Rust
   conversion of its files into a corpus of its own, in a staging directory beside the output,
   with the planned vocabulary as its gene order, so every piece gives each gene the same id.
   Each piece gets the narrowest value type for its own values (types are per part).
   A task that fails (its worker died, or an I/O error) is retried by Ray up to
   ``max_retries`` times; a retry replaces what the failed attempt wrote.
3. **Commit** (on the driver): the Rust merge of the pieces, in input order, into the output:
   one manifest, written beside the output and renamed in, under the output's lock. Since the
   ids already agree, every matrix part is hard-linked, none rewritten.

The staging directory (``.NAME.cellarrow-ray`` beside the output) is removed at the end,
whether the run succeeds or fails. One driver at a time converts into one output: a second one
on the same machine is refused while the first runs. A run that dies leaves no corpus at the output (only the
staging directory, or the merge's temporary directory, which the next run removes), so it can
simply be run again.

The result equals ``cellarrow convert`` of the same files (cells, values, genes, tables),
except that a part may hold a narrower value type than one conversion would choose for all
files, and the genes' ``matched_by`` also records each piece's joins to the planned order.

>>> import ray, cellarrow.ray                                                 # doctest: +SKIP
>>> ray.init(address="auto")                                                  # doctest: +SKIP
>>> report = cellarrow.ray.convert(["a.h5ad", "b.h5ad"], "ab.corpus")        # doctest: +SKIP
>>> report["parts_linked"], report["parts_rewritten"]                        # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from . import _native

__all__ = ["convert", "plan_genes"]

PathLike = Union[str, "os.PathLike[str]"]
_Input = Tuple[str, str, Dict[str, str]]

_OWNER = "owner"


def _inputs(inputs: Union[PathLike, Sequence[PathLike]]) -> List[_Input]:
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    return [(str(p), s, dict(m)) for p, s, m in _native.resolve_inputs([str(i) for i in inputs])]


def plan_genes(
    inputs: Union[PathLike, Sequence[PathLike]],
    *,
    layer: Optional[str] = None,
    raw: bool = False,
    gene_column: Optional[str] = None,
    gene_key: str = "id",
    duplicate_genes: str = "error",
    out: Optional[PathLike] = None,
) -> List[str]:
    """The gene vocabulary a conversion of ``inputs`` builds, as gene names in id order, from
    the var tables alone (no matrix is read). ``inputs``: h5ad paths or one input manifest
    (.csv/.json). With ``out``, the vocabulary is also written there as a genes file for
    ``cellarrow convert --gene-order``."""
    return _native.plan_genes(
        _inputs(inputs),
        out=str(out) if out is not None else None,
        layer=layer,
        raw=raw,
        gene_column=gene_column,
        gene_key=gene_key,
        duplicate_genes=duplicate_genes,
    )


def _convert_piece(
    inputs: List[_Input], output: str, gene_order: str, options: Dict[str, Any]
) -> Tuple[str, str]:
    """One Ray task: the Rust conversion of ``inputs`` into ``output`` with the planned gene
    order. Returns the conversion's summary (JSON) and the id of the node that ran it."""
    import ray

    summary = _native.convert(inputs, output, gene_order=gene_order, overwrite=True, **options)
    return summary, ray.get_runtime_context().get_node_id()


def _stop(refs: List[Any]) -> None:
    """Cancels the tasks of a failed run and waits for them to end, so that none writes into
    the staging directory after it is removed."""
    import ray

    for r in refs:
        try:
            ray.cancel(r, force=True)
        except Exception:  # already finished, or its worker already gone
            pass
    for r in refs:
        try:
            ray.get(r)
        except Exception:  # the failure being reported, or a cancellation
            pass


def _is_url(s: str) -> bool:
    scheme, sep, _ = s.partition("://")
    return bool(sep) and bool(scheme) and all(c.isalnum() or c in "+-." for c in scheme)


def _staging(output: Path) -> Path:
    return output.with_name(f".{output.name}.cellarrow-ray")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _claim(staging: Path) -> None:
    """Takes the staging directory: one left by a run that is gone is removed; one of a run
    still going on this machine is refused."""
    owner = staging / _OWNER
    if staging.exists():
        try:
            host, pid = owner.read_text().split()
            if host == socket.gethostname() and int(pid) != os.getpid() and _pid_alive(int(pid)):
                raise _native.CellarrowError(
                    f"{staging}: a cellarrow.ray.convert into this output is running "
                    f"(process {pid}); try again when it has finished"
                )
        except (OSError, ValueError):
            pass
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    owner.write_text(f"{socket.gethostname()} {os.getpid()}\n")


def convert(
    inputs: Union[PathLike, Sequence[PathLike]],
    output: PathLike,
    *,
    files_per_task: int = 1,
    max_retries: int = 3,
    num_cpus: float = 1,
    threads: int = 1,
    layer: Optional[str] = None,
    raw: bool = False,
    gene_column: Optional[str] = None,
    gene_key: str = "id",
    duplicate_genes: str = "error",
    obs_columns: Optional[Sequence[str]] = None,
    ontology: Sequence[str] = (),
    spatial_key: Optional[str] = None,
    part_cells: Optional[int] = None,
    layout: str = "hot",
    chunk_cells: Optional[int] = None,
    overwrite: bool = False,
    staging_dir: Optional[PathLike] = None,
    ray_options: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Converts ``inputs`` into one corpus at ``output`` with Ray tasks; returns the merge
    report (cells, genes, and how many parts were linked or rewritten).

    ``inputs`` are h5ad paths (sample ids are file stems) or one input manifest (.csv/.json),
    as for ``cellarrow convert``, and must be readable by every Ray node at the same paths, as
    must the directory of ``output`` (shared storage). The result equals ``cellarrow convert``
    of the same files: the same cells in the same order, values, genes and tables.

    ``files_per_task`` files go to one task; each task asks Ray for ``num_cpus`` CPUs and runs
    the conversion on ``threads`` threads. ``max_retries``: Ray's retries of a failed task.
    The reading options (``layer``, ``raw``, ``gene_column``, ``gene_key``, ``duplicate_genes``,
    ``obs_columns``, ``ontology`` as ``["cell_type=CL"]``, ``spatial_key``), ``part_cells``,
    ``layout`` (``"hot"`` or ``"cold"``: zstd chunks of ``chunk_cells`` cells, for object
    storage) and ``chunk_cells`` are those of ``cellarrow convert``; an ontology given by name
    is looked up on each node.
    An existing ``output`` is replaced only with ``overwrite`` (and only if it is a corpus).
    ``output`` may be a URL (``s3://bucket/prefix``, ``gs://`` ...): the pieces and the merged
    corpus are then written under ``staging_dir`` (shared storage every node sees, with room
    for the corpus twice), and the corpus is uploaded with its manifest last; the destination
    is checked before any task runs.
    ``ray_options`` go to each task's ``.options()`` (``runtime_env``, ``resources``,
    ``scheduling_strategy`` ...); tasks are spread over the nodes by default.
    Ray must be initialised (``ray.init``) or is started locally.

    The report adds ``tasks`` (the number of Ray tasks) and ``nodes`` (how many nodes ran them).
    """
    import ray

    if files_per_task < 1:
        raise ValueError(f"files_per_task must be at least 1, not {files_per_task}")
    if layout not in ("hot", "cold"):
        raise ValueError(f"layout {layout!r}: expected 'hot' or 'cold'")
    url = str(output) if _is_url(str(output)) else None
    if url is not None:
        if staging_dir is None:
            raise ValueError(f"{url}: a URL output needs staging_dir, a directory on storage every node sees")
        _native.publish("", url, overwrite=overwrite, check_only=True)
        output = Path(staging_dir) / "corpus"
    else:
        output = Path(output)
    if output.exists() and not overwrite:
        raise _native.CellarrowError(f"{output}: the output already exists; pass overwrite=True to replace it")
    samples = _inputs(inputs)
    read = dict(layer=layer, raw=raw, gene_column=gene_column, gene_key=gene_key, duplicate_genes=duplicate_genes)

    staging = _staging(output)
    _claim(staging)
    try:
        genes_file = staging / "genes.parquet"
        _native.plan_genes(samples, out=str(genes_file), **read)
        options = dict(
            read,
            obs_columns=list(obs_columns) if obs_columns is not None else None,
            ontology=list(ontology),
            spatial_key=spatial_key,
            part_cells=part_cells,
            layout=layout,
            chunk_cells=chunk_cells,
            threads=threads,
        )
        task_options: Dict[str, Any] = dict(
            num_cpus=num_cpus,
            max_retries=max_retries,
            retry_exceptions=[OSError],
            scheduling_strategy="SPREAD",
        )
        task_options.update(ray_options or {})
        task = ray.remote(_convert_piece).options(**task_options)
        groups = [samples[i : i + files_per_task] for i in range(0, len(samples), files_per_task)]
        pieces = [str(staging / f"piece-{k:06d}.corpus") for k in range(len(groups))]
        refs = [task.remote(g, p, str(genes_file), options) for g, p in zip(groups, pieces)]
        try:
            done = ray.get(refs)
        except BaseException:
            _stop(refs)
            raise
        report = json.loads(_native.merge(pieces, str(output), overwrite=overwrite, threads=threads))
        if url is not None:
            try:
                report["upload"] = json.loads(_native.publish(str(output), url, overwrite=overwrite))
            finally:
                shutil.rmtree(output, ignore_errors=True)
        report["tasks"] = len(groups)
        report["nodes"] = len({node for _, node in done})
        return report
    finally:
        shutil.rmtree(staging, ignore_errors=True)
