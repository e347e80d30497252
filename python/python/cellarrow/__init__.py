"""cellarrow: single-cell and spatial transcriptomics corpora on Arrow and Parquet.

Open a corpus written by ``cellarrow convert``, read its tables with PyArrow or Polars, select
cohorts in SQL, and stream zero-copy batches into numpy, scipy, PyTorch and Hugging Face.

>>> import cellarrow
>>> corpus = cellarrow.open("my.corpus")                                     # doctest: +SKIP
>>> corpus.obs                                                              # doctest: +SKIP
>>> t = corpus.cohort("SELECT cell FROM obs WHERE cell_type = 'T cell'")   # doctest: +SKIP
>>> for batch in t.loader(batch_size=256, seed=0):                         # doctest: +SKIP
...     X = batch.to_scipy()

A setting, a cell id or a path the package refuses raises a :class:`CellarrowError` that is
also the built-in error a Python user expects (``ValueError``, ``TypeError``, ``IndexError``,
``OSError``).

Adapters: :mod:`cellarrow.torch` (``CellDataset``, ``collate``) and :mod:`cellarrow.hf`
(``to_hf_dataset``, ``to_hf_iterable``).
"""

from ._core import Batch, Cohort, Corpus, Loader, open
from ._native import CellarrowError, __version__

__all__ = ["Batch", "CellarrowError", "Cohort", "Corpus", "Loader", "open", "__version__"]
