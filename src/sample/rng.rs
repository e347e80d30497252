//! Counter-based randomness: every random value is a pure function of a key and a counter, so
//! any position of any stream can be computed directly, on any machine, with no shared state.

/// The SplitMix64 finaliser: a bijective 64-bit mixer with good avalanche.
///
/// ```
/// use cellarrow::sample::rng::splitmix64;
/// assert_ne!(splitmix64(1), splitmix64(2));
/// assert_eq!(splitmix64(7), splitmix64(7));
/// ```
#[inline]
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hashes a sequence of words into one key (order matters). Used to derive independent keys
/// from (seed, epoch, position, purpose) tuples.
///
/// ```
/// use cellarrow::sample::rng::hash_words;
/// assert_ne!(hash_words(&[1, 2]), hash_words(&[2, 1]));
/// ```
#[inline]
pub fn hash_words(words: &[u64]) -> u64 {
    let mut h = 0x6A09_E667_F3BC_C908u64;
    for &w in words {
        h = splitmix64(h ^ splitmix64(w));
    }
    h
}

/// Maps 64 random bits to `[0, n)` (multiply-shift; bias below 2^-64 * n, negligible).
/// Returns 0 when `n == 0`.
#[inline]
pub fn below(bits: u64, n: u64) -> u64 {
    ((bits as u128 * n as u128) >> 64) as u64
}

/// Maps 64 random bits to a float in `[0, 1)` with 53 bits of precision.
#[inline]
pub fn unit_f64(bits: u64) -> f64 {
    (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A small deterministic generator: the SplitMix64 sequence started at a key. Cheap to create
/// per position (`Rng::new(hash_words(&[seed, epoch, pos]))`), so no generator state ever has
/// to be carried between positions or shards.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator whose whole output is determined by `key`.
    pub fn new(key: u64) -> Rng {
        Rng {
            state: splitmix64(key),
        }
    }
    /// Next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        splitmix64(self.state)
    }
    /// Uniform in `[0, n)`; 0 when `n == 0`.
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        below(self.next_u64(), n)
    }
    /// Uniform in `[0, 1)`.
    #[inline]
    pub fn unit(&mut self) -> f64 {
        unit_f64(self.next_u64())
    }
}

/// Walker/Vose alias table: draws index `i` with probability `w[i] / sum(w)` in O(1).
///
/// ```
/// use cellarrow::sample::rng::{AliasTable, Rng};
/// let t = AliasTable::new(&[0.0, 1.0, 3.0]).unwrap();
/// let mut rng = Rng::new(1);
/// let mut counts = [0u32; 3];
/// for _ in 0..4000 { counts[t.sample(&mut rng) as usize] += 1; }
/// assert_eq!(counts[0], 0);
/// assert!(counts[2] > 2 * counts[1]);
/// ```
#[derive(Debug, Clone)]
pub struct AliasTable {
    prob: Vec<f64>,
    alias: Vec<u64>,
}

impl AliasTable {
    /// Builds the table. Returns `None` when `weights` is empty, has a negative or non-finite
    /// entry, or sums to zero.
    pub fn new(weights: &[f64]) -> Option<AliasTable> {
        let n = weights.len();
        if n == 0 || weights.iter().any(|w| !w.is_finite() || *w < 0.0) {
            return None;
        }
        let total: f64 = weights.iter().sum();
        if !total.is_finite() || total <= 0.0 {
            return None;
        }
        let mut prob: Vec<f64> = weights.iter().map(|w| w * n as f64 / total).collect();
        let mut alias: Vec<u64> = (0..n as u64).collect();
        let mut small = Vec::new();
        let mut large = Vec::new();
        for (i, p) in prob.iter().enumerate() {
            if *p < 1.0 {
                small.push(i);
            } else {
                large.push(i);
            }
        }
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            alias[s] = l as u64;
            prob[l] -= 1.0 - prob[s];
            if prob[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        for i in large.into_iter().chain(small) {
            prob[i] = 1.0;
        }
        Some(AliasTable { prob, alias })
    }
    /// Number of outcomes.
    pub fn len(&self) -> u64 {
        self.prob.len() as u64
    }
    /// Always false: an alias table has at least one outcome.
    pub fn is_empty(&self) -> bool {
        self.prob.is_empty()
    }
    /// Draws one index.
    #[inline]
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        let i = rng.below(self.prob.len() as u64);
        if rng.unit() < self.prob[i as usize] {
            i
        } else {
            self.alias[i as usize]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_matches_weights() {
        let w = [1.0, 2.0, 0.0, 7.0];
        let t = AliasTable::new(&w).unwrap();
        let mut rng = Rng::new(9);
        let mut c = [0f64; 4];
        let n = 200_000;
        for _ in 0..n {
            c[t.sample(&mut rng) as usize] += 1.0;
        }
        for i in 0..4 {
            assert!((c[i] / n as f64 - w[i] / 10.0).abs() < 0.01, "{c:?}");
        }
        assert!(AliasTable::new(&[]).is_none());
        assert!(AliasTable::new(&[0.0]).is_none());
        assert!(AliasTable::new(&[1.0, f64::NAN]).is_none());
    }

    #[test]
    fn below_in_range() {
        let mut rng = Rng::new(3);
        for n in [1u64, 2, 3, 17, 1 << 40] {
            for _ in 0..100 {
                assert!(rng.below(n) < n);
            }
        }
    }
}
