//! What a run of batches held: counts a front end prints (`cellarrow sample --summary`).

use std::collections::HashSet;

use arrow::array::AsArray;
use arrow::datatypes::{UInt64Type, UInt8Type};
use arrow::record_batch::RecordBatch;

/// Counts over a sequence of batches: add each with [`Summary::add`].
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub batches: usize,
    /// Rows (cells) over all batches, repeats counted.
    pub cells: u64,
    /// Fewest and most rows of a batch (`None` before the first batch).
    pub rows: Option<(usize, usize)>,
    /// Non-zeros of the CSR `values` column.
    pub nnz: u64,
    /// Tokens of tokenized batches (the ones of `attention_mask`); `None` for CSR batches.
    pub tokens: Option<u64>,
    /// Memory of the batches' Arrow arrays.
    pub bytes: usize,
    /// The first (up to) eight cell ids served.
    pub first_cells: Vec<u64>,
    distinct: HashSet<u64>,
}

impl Summary {
    /// Counts one batch.
    pub fn add(&mut self, b: &RecordBatch) {
        self.batches += 1;
        self.cells += b.num_rows() as u64;
        let (lo, hi) = self.rows.unwrap_or((usize::MAX, 0));
        self.rows = Some((lo.min(b.num_rows()), hi.max(b.num_rows())));
        self.bytes += b.get_array_memory_size();
        if let Some(ids) = b.column_by_name("cell") {
            let ids = ids.as_primitive::<UInt64Type>().values();
            let room = 8usize.saturating_sub(self.first_cells.len());
            self.first_cells.extend(ids.iter().take(room));
            self.distinct.extend(ids.iter().copied());
        }
        if let Some(v) = b.column_by_name("values") {
            self.nnz += v.as_list::<i32>().values().len() as u64;
        }
        if let Some(m) = b.column_by_name("attention_mask") {
            let mask = m.as_fixed_size_list().values().as_primitive::<UInt8Type>();
            *self.tokens.get_or_insert(0) += mask.values().iter().map(|&x| x as u64).sum::<u64>();
        }
    }

    /// Distinct cell ids served.
    pub fn distinct_cells(&self) -> usize {
        self.distinct.len()
    }
}
