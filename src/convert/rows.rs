//! Per-row work of the converter: remap gene ids into the vocabulary, sort, merge duplicates,
//! drop zeros, and keep per-cell totals over all source genes.

use super::vocab::GeneSlot;
use crate::h5ad::CsrChunk;

/// Per-cell figures taken before any vocabulary filter.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CellStats {
    /// Non-zero values over all source genes.
    pub nnz: u32,
    /// Sum of values over all source genes.
    pub total: f64,
}

/// What one chunk lost or merged, for the summary and samples.parquet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowCounts {
    /// Non-zeros in genes outside a fixed vocabulary (not stored).
    pub nnz_outside_vocab: u64,
    /// Entries merged because a row named the same gene twice.
    pub merged_duplicates: u64,
}

/// Rewrites `chunk` in place into vocabulary ids: every row ends strictly increasing with no
/// zeros, and `indptr` is rewritten to match. Returns per-cell stats (in row order) and counts.
///
/// Work happens inside the chunk's own buffers (a row never grows), with one reused scratch
/// vector for rows that need sorting, so no memory is allocated per row.
pub fn remap_chunk(
    chunk: &mut CsrChunk,
    map: &[GeneSlot],
    scratch: &mut Vec<(u32, f64)>,
) -> (Vec<CellStats>, RowCounts) {
    let n_rows = chunk.n_rows();
    let mut stats = Vec::with_capacity(n_rows);
    let mut counts = RowCounts::default();
    let mut write = 0usize;
    let mut row_start = chunk.indptr[0] as usize;
    for r in 0..n_rows {
        let row_end = chunk.indptr[r + 1] as usize;
        let mut cell = CellStats::default();
        scratch.clear();
        let mut sorted = true;
        let mut last: Option<u32> = None;
        for k in row_start..row_end {
            let v = chunk.values[k];
            if v == 0.0 {
                continue;
            }
            cell.nnz += 1;
            cell.total += v;
            match map[chunk.indices[k] as usize] {
                GeneSlot::Gene(id) => {
                    if last.is_some_and(|l| l >= id) {
                        sorted = false;
                    }
                    last = Some(id);
                    scratch.push((id, v));
                }
                GeneSlot::Outside => counts.nnz_outside_vocab += 1,
                GeneSlot::Duplicate => {}
            }
        }
        if !sorted {
            scratch.sort_unstable_by_key(|e| e.0);
        }
        let row_out_start = write;
        for &(id, v) in scratch.iter() {
            if write > row_out_start && chunk.indices[write - 1] == id {
                chunk.values[write - 1] += v;
                counts.merged_duplicates += 1;
            } else {
                chunk.indices[write] = id;
                chunk.values[write] = v;
                write += 1;
            }
        }
        // Merged values can cancel out (e.g. +1 and -1): drop the zeros that leaves.
        if counts.merged_duplicates > 0 {
            let mut keep = row_out_start;
            for k in row_out_start..write {
                if chunk.values[k] != 0.0 {
                    chunk.indices[keep] = chunk.indices[k];
                    chunk.values[keep] = chunk.values[k];
                    keep += 1;
                }
            }
            write = keep;
        }
        row_start = row_end;
        chunk.indptr[r + 1] = write as u64;
        stats.push(cell);
    }
    chunk.indptr[0] = 0;
    chunk.indices.truncate(write);
    chunk.values.truncate(write);
    (stats, counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(rows: &[&[(u32, f64)]]) -> CsrChunk {
        let mut c = CsrChunk {
            row_start: 0,
            indptr: vec![0],
            indices: vec![],
            values: vec![],
        };
        for row in rows {
            for &(i, v) in *row {
                c.indices.push(i);
                c.values.push(v);
            }
            c.indptr.push(c.indices.len() as u64);
        }
        c
    }

    fn rows(c: &CsrChunk) -> Vec<Vec<(u32, f64)>> {
        (0..c.n_rows())
            .map(|r| {
                let (a, b) = (c.indptr[r] as usize, c.indptr[r + 1] as usize);
                c.indices[a..b]
                    .iter()
                    .copied()
                    .zip(c.values[a..b].iter().copied())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn remap_sorts_drops_zeros_and_counts_outside_genes() {
        // Source genes 0..4 map to vocabulary ids 3, 1, none, 0.
        let map = [
            GeneSlot::Gene(3),
            GeneSlot::Gene(1),
            GeneSlot::Outside,
            GeneSlot::Gene(0),
        ];
        let mut c = chunk(&[
            &[(0, 1.0), (1, 2.0), (2, 5.0), (3, 0.0)],
            &[],
            &[(3, 7.0), (2, 1.0)],
        ]);
        let (stats, counts) = remap_chunk(&mut c, &map, &mut Vec::new());
        assert_eq!(
            rows(&c),
            vec![vec![(1, 2.0), (3, 1.0)], vec![], vec![(0, 7.0)]]
        );
        assert_eq!(stats[0], CellStats { nnz: 3, total: 8.0 });
        assert_eq!(stats[1], CellStats { nnz: 0, total: 0.0 });
        assert_eq!(stats[2], CellStats { nnz: 2, total: 8.0 });
        assert_eq!(counts.nnz_outside_vocab, 2);
    }

    #[test]
    fn duplicate_ids_in_a_row_are_summed() {
        let map = [GeneSlot::Gene(0), GeneSlot::Gene(0), GeneSlot::Gene(1)];
        let mut c = chunk(&[&[(2, 1.0), (1, 2.0), (0, 3.0)], &[(0, 1.0), (1, -1.0)]]);
        let (_, counts) = remap_chunk(&mut c, &map, &mut Vec::new());
        assert_eq!(rows(&c), vec![vec![(0, 5.0), (1, 1.0)], vec![]]);
        assert_eq!(counts.merged_duplicates, 2);
    }
}
