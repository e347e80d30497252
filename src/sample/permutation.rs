//! A keyed pseudo-random permutation of `[0, n)` computed position by position.

use serde::{Deserialize, Serialize};

use super::rng::splitmix64;

const ROUNDS: usize = 6;

/// A keyed bijection on `[0, n)`: a balanced Feistel network on the smallest even number of
/// bits covering `n`, with cycle walking to stay inside `[0, n)`.
///
/// Memory is O(1) whatever `n`; [`Permutation::at`] costs a few hashes (the Feistel domain is
/// below `4n`, so cycle walking takes fewer than 4 steps on average). Different keys give
/// independent-looking permutations; the same `(n, key)` always gives the same one.
///
/// ```
/// use cellarrow::sample::Permutation;
/// let p = Permutation::new(10, 42);
/// let mut seen: Vec<u64> = (0..10).map(|i| p.at(i)).collect();
/// assert_eq!(p.index_of(p.at(3)), 3);
/// seen.sort();
/// assert_eq!(seen, (0..10).collect::<Vec<_>>());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permutation {
    n: u64,
    half_bits: u32,
    keys: [u64; ROUNDS],
}

impl Permutation {
    /// The permutation of `[0, n)` selected by `key`.
    pub fn new(n: u64, key: u64) -> Permutation {
        let bits = if n <= 1 {
            0
        } else {
            64 - (n - 1).leading_zeros()
        };
        let half_bits = bits.div_ceil(2).max(1);
        let mut keys = [0u64; ROUNDS];
        let mut k = key;
        for r in keys.iter_mut() {
            k = splitmix64(k ^ 0xD1B5_4A32_D192_ED03);
            *r = k;
        }
        Permutation { n, half_bits, keys }
    }

    /// The size of the domain.
    pub fn len(&self) -> u64 {
        self.n
    }

    /// True for the empty permutation.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    #[inline]
    fn mask(&self) -> u64 {
        if self.half_bits >= 64 {
            u64::MAX
        } else {
            (1u64 << self.half_bits) - 1
        }
    }

    #[inline]
    fn round(&self, r: usize, x: u64) -> u64 {
        splitmix64(self.keys[r] ^ x) & self.mask()
    }

    #[inline]
    fn forward(&self, x: u64) -> u64 {
        let m = self.mask();
        let (mut l, mut r) = (x >> self.half_bits, x & m);
        for i in 0..ROUNDS {
            let t = l ^ self.round(i, r);
            l = r;
            r = t;
        }
        (l << self.half_bits) | r
    }

    #[inline]
    fn backward(&self, y: u64) -> u64 {
        let m = self.mask();
        let (mut l, mut r) = (y >> self.half_bits, y & m);
        for i in (0..ROUNDS).rev() {
            let t = r ^ self.round(i, l);
            r = l;
            l = t;
        }
        (l << self.half_bits) | r
    }

    /// The value at position `i`. Panics if `i >= len()` (a caller bug).
    #[inline]
    pub fn at(&self, i: u64) -> u64 {
        assert!(
            i < self.n,
            "permutation position {i} out of range 0..{}",
            self.n
        );
        if self.n == 1 {
            return 0;
        }
        let mut x = self.forward(i);
        while x >= self.n {
            x = self.forward(x);
        }
        x
    }

    /// The position of value `v` (the inverse of [`Permutation::at`]). Panics if `v >= len()`.
    #[inline]
    pub fn index_of(&self, v: u64) -> u64 {
        assert!(
            v < self.n,
            "permutation value {v} out of range 0..{}",
            self.n
        );
        if self.n == 1 {
            return 0;
        }
        let mut x = self.backward(v);
        while x >= self.n {
            x = self.backward(x);
        }
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bijection_small_sizes() {
        for n in 0..300u64 {
            for key in [0u64, 1, 99] {
                let p = Permutation::new(n, key);
                let mut v: Vec<u64> = (0..n).map(|i| p.at(i)).collect();
                for i in 0..n {
                    assert_eq!(p.index_of(p.at(i)), i);
                }
                v.sort_unstable();
                assert_eq!(v, (0..n).collect::<Vec<_>>(), "n={n}");
            }
        }
    }

    #[test]
    fn huge_domains() {
        for n in [u64::MAX, 1 << 63, (1 << 40) + 7] {
            let p = Permutation::new(n, 5);
            for i in [0, 1, n / 2, n - 1] {
                let v = p.at(i);
                assert!(v < n);
                assert_eq!(p.index_of(v), i);
            }
        }
    }

    #[test]
    fn keys_differ_and_look_random() {
        let n = 1000;
        let a = Permutation::new(n, 1);
        let b = Permutation::new(n, 2);
        let same = (0..n).filter(|&i| a.at(i) == b.at(i)).count();
        assert!(same < 10, "{same} fixed agreements");
        // Not close to the identity: mean displacement near n/3.
        let disp: f64 = (0..n)
            .map(|i| (a.at(i) as f64 - i as f64).abs())
            .sum::<f64>()
            / n as f64;
        assert!(disp > n as f64 * 0.25 && disp < n as f64 * 0.42, "{disp}");
    }

    proptest! {
        #[test]
        fn prop_bijection(n in 1u64..2000, key: u64) {
            let p = Permutation::new(n, key);
            let mut seen = vec![false; n as usize];
            for i in 0..n {
                let v = p.at(i);
                prop_assert!(!seen[v as usize]);
                seen[v as usize] = true;
            }
        }
    }
}
