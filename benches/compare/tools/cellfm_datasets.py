"""cellfm-datasets 0.1.1: per-sample NPY memmaps (indptr/indices/values) and a gene vocabulary.

Conversion: `convert_h5ad_manifest` with the source var names as the vocabulary,
`expression_transform="none"` (its default would normalise and log the counts) and all obs
columns kept. Reading: `MemmapDataset(...).samples[sample_id].fetch_rows(ids)`, the call its
group datasets use; ids are source rows (the format keeps source order).
"""

from __future__ import annotations

import json
import pathlib

NAME = "cellfm-datasets"
SAMPLE = "s0"


def convert(h5ad: str, outdir: str) -> None:
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    from common import h5ad_names
    from cellfm_dataset import convert_h5ad_manifest

    out = pathlib.Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    _, var = h5ad_names(h5ad)
    vocab = out.parent / (out.name + ".vocab.txt")
    vocab.write_text("\n".join(map(str, var)) + "\n")
    man = out.parent / (out.name + ".manifest.json")
    man.write_text(json.dumps([{"h5ad": str(h5ad), "sample_id": SAMPLE}]))
    convert_h5ad_manifest(manifest_json=man, output_dir=out, gene_vocab_path=vocab,
                          default_obs_columns=("*",), expression_transform="none", overwrite=True)


class _Handle:
    def __init__(self, outdir):
        from cellfm_dataset import MemmapDataset

        self.ds = MemmapDataset(outdir)
        self.sample = self.ds.samples[SAMPLE]
        self.n_genes = len(self.ds.gene_vocab)


def open(outdir: str, h5ad: str):
    return _Handle(outdir)


def genes(h):
    import numpy as np

    return np.asarray(h.ds.gene_vocab, dtype=object)


def fetch_cells(h, ids):
    import numpy as np
    import scipy.sparse as sp

    _, ptr, ind, val = h.sample.fetch_rows(np.asarray(ids, dtype=np.int64))
    return sp.csr_matrix((val, ind, ptr), shape=(len(ptr) - 1, h.n_genes))


class _TorchDataset:
    def __init__(self, outdir):
        self.outdir, self.h = outdir, None

    def _handle(self):
        if self.h is None:
            self.h = _Handle(self.outdir)
        return self.h

    def __len__(self):
        return self._handle().sample.metadata.n_cells

    def __getitem__(self, i):
        return fetch_cells(self._handle(), [i])

    def __getitems__(self, ids):
        return fetch_cells(self._handle(), ids)


def torch_dataset(outdir, h5ad):
    return _TorchDataset(outdir), (lambda m: m)
