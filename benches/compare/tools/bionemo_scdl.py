"""BioNeMo SCDL (`bionemo-scdl`): memory-mapped CSR arrays (data, col_ptr, row_ptr) per dataset.

Conversion: `SingleCellMemMapDataset(outdir, h5ad_path=h5ad, use_X_not_raw=True)` (the synthetic
files have no raw/X) followed by `save()`, the documented single-file path. Columns keep the
source var order, so the gene names are the h5ad's var names. Reading: `get_row(i)` per cell,
the call its `__getitem__` makes; the torch workload uses the dataset itself with
`collate_sparse_matrix_batch`, as its documentation shows.
"""

from __future__ import annotations

import sys
import pathlib

NAME = "bionemo-scdl"


def convert(h5ad: str, outdir: str) -> None:
    from bionemo.scdl.io.single_cell_memmap_dataset import SingleCellMemMapDataset

    ds = SingleCellMemMapDataset(outdir, h5ad_path=h5ad, use_X_not_raw=True)
    ds.save()


class _Handle:
    def __init__(self, outdir, h5ad):
        from bionemo.scdl.io.single_cell_memmap_dataset import SingleCellMemMapDataset

        sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
        from common import h5ad_names

        self.ds = SingleCellMemMapDataset(outdir)
        self.genes = h5ad_names(h5ad)[1]


def open(outdir: str, h5ad: str):
    return _Handle(outdir, h5ad)


def genes(h):
    return h.genes


def fetch_cells(h, ids):
    import numpy as np
    import scipy.sparse as sp

    vals, cols, ptr = [], [], [0]
    for i in ids:
        (v, c), _, _ = h.ds.get_row(int(i))
        vals.append(v)
        cols.append(c)
        ptr.append(ptr[-1] + len(v))
    return sp.csr_matrix((np.concatenate(vals), np.concatenate(cols), np.asarray(ptr)), shape=(len(ids), len(h.genes)))


def torch_dataset(outdir, h5ad):
    from bionemo.scdl.io.single_cell_memmap_dataset import SingleCellMemMapDataset
    from bionemo.scdl.util.torch_dataloader_utils import collate_sparse_matrix_batch

    return SingleCellMemMapDataset(outdir), collate_sparse_matrix_batch
