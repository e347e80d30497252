//! Space-filling-curve order for the cells of a spatial sample, so that a spatial block or a
//! region is a few contiguous runs on disk rather than a scatter.

/// Bits per axis of the Z-order key: 32 in 2-D, 21 in 3-D (a 64-bit key either way).
fn bits_per_axis(dims: usize) -> u32 {
    if dims >= 3 {
        21
    } else {
        32
    }
}

/// Spreads the low `bits` bits of `v` so that bit i lands at bit `i * stride`.
fn spread(v: u64, bits: u32, stride: u32) -> u64 {
    let mut out = 0u64;
    for i in 0..bits {
        out |= ((v >> i) & 1) << (i * stride);
    }
    out
}

/// The order in which to store the cells: positions into `coords` (row-major, `dims` columns),
/// sorted by the Z-order (Morton) key of the coordinates quantised to the sample's bounding box.
/// Cells with a non-finite coordinate go last, in source order; ties keep source order.
///
/// ```
/// use cellarrow::convert::spatial::z_order;
/// // Four points on a 2x2 grid, given in row order: Z-order visits (0,0) (1,0) (0,1) (1,1).
/// let coords = [0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0];
/// assert_eq!(z_order(&coords, 2), vec![0, 2, 1, 3]);
/// ```
pub fn z_order(coords: &[f64], dims: usize) -> Vec<u64> {
    assert!(
        dims > 0 && coords.len().is_multiple_of(dims),
        "coordinates must have `dims` columns"
    );
    let n = coords.len() / dims;
    let mut lo = vec![f64::INFINITY; dims];
    let mut hi = vec![f64::NEG_INFINITY; dims];
    let finite = |row: &[f64]| row.iter().all(|v| v.is_finite());
    for row in coords.chunks_exact(dims).filter(|r| finite(r)) {
        for d in 0..dims {
            lo[d] = lo[d].min(row[d]);
            hi[d] = hi[d].max(row[d]);
        }
    }
    let bits = bits_per_axis(dims);
    // One scale for every axis keeps the curve isotropic: a square block stays a square of cells.
    let span = (0..dims).map(|d| hi[d] - lo[d]).fold(0.0f64, f64::max);
    let scale = if span > 0.0 {
        ((1u64 << bits) - 1) as f64 / span
    } else {
        0.0
    };
    let stride = dims as u32;
    let mut keys: Vec<(bool, u64, u64)> = coords
        .chunks_exact(dims)
        .enumerate()
        .map(|(i, row)| {
            if !finite(row) {
                return (true, 0, i as u64);
            }
            let mut key = 0u64;
            for d in 0..dims {
                let q = ((row[d] - lo[d]) * scale) as u64;
                key |= spread(q, bits, stride) << d;
            }
            (false, key, i as u64)
        })
        .collect();
    keys.sort_unstable();
    debug_assert_eq!(keys.len(), n);
    keys.into_iter().map(|(_, _, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn z_order_is_a_permutation_with_non_finite_last() {
        let coords = [
            5.0,
            5.0,
            f64::NAN,
            1.0,
            0.0,
            0.0,
            10.0,
            10.0,
            1.0,
            f64::INFINITY,
        ];
        let order = z_order(&coords, 2);
        assert_eq!(order, vec![2, 0, 3, 1, 4]);
    }

    #[test]
    fn three_d_keys_interleave_all_axes() {
        let mut coords = Vec::new();
        for z in 0..2 {
            for y in 0..2 {
                for x in 0..2 {
                    coords.extend([x as f64, y as f64, z as f64]);
                }
            }
        }
        // Source order is x fastest, which is already Z-order for a 2x2x2 cube.
        assert_eq!(z_order(&coords, 3), (0..8).collect::<Vec<u64>>());
    }

    #[test]
    fn nearby_cells_end_up_nearby() {
        // A 64x64 grid given in row order: an 8x8 square is 8 runs of storage in row order and
        // far fewer in Z-order.
        let mut coords = Vec::new();
        for y in 0..64 {
            for x in 0..64 {
                coords.extend([x as f64, y as f64]);
            }
        }
        let order = z_order(&coords, 2);
        let mut position = vec![0usize; order.len()];
        for (pos, &cell) in order.iter().enumerate() {
            position[cell as usize] = pos;
        }
        for (x0, y0) in [(0, 0), (8, 16), (40, 48)] {
            let mut pos: Vec<usize> = (y0..y0 + 8)
                .flat_map(|y| (x0..x0 + 8).map(move |x| y * 64 + x))
                .map(|c| position[c])
                .collect();
            pos.sort_unstable();
            let runs = 1 + pos.windows(2).filter(|w| w[1] != w[0] + 1).count();
            assert!(runs <= 4, "an 8x8 block at ({x0},{y0}) is {runs} runs");
        }
    }
}
