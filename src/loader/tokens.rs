//! Tokenized batches for transformer models of cells, computed while gathering: each cell
//! becomes a row of `top_k` gene tokens, a value per token and an attention mask.
//!
//! | column | type | |
//! |---|---|---|
//! | `tokens` | `FixedSizeList<Int32, k>` | token ids: corpus gene ids, or with a model vocabulary (`genes`) positions in it; `-1` in padding |
//! | `token_values` | `FixedSizeList<Float32, k>` (rank) or `FixedSizeList<Int32, k>` (bins) | 0 in padding |
//! | `attention_mask` | `FixedSizeList<UInt8, k>` | 1 for a token, 0 for padding |
//!
//! Tokens fill each row from the left; a cell with fewer than `k` tokens is padded on the
//! right. The rules, exactly (a NumPy implementation in `tests/python/test_tokens.py` checks
//! them on the fixtures):
//!
//! **Token ids.** Without a model vocabulary a gene's token id is its corpus gene id. With one
//! (`genes`, [`crate::genes::GeneVocab`]) it is the gene's position in the vocabulary, and a
//! corpus gene the vocabulary does not hold never becomes a token: the rules below see only
//! the vocabulary's genes, except for the cell's total of rank-value encoding (below).
//! "Increasing token id" is then the vocabulary's order.
//!
//! **Rank-value encoding** (Geneformer): let `total` be the sum of all the cell's stored values
//! (in `f64`, rounded to `f32`), and `median[g]` gene `g`'s median of non-zero values (from the
//! corpus's `gene_stats` table, all species' sketches merged, or from a table the user gives),
//! rounded to `f32`. Every entry `(g, v)` of the cell with `v > 0` and `median[g] > 0` (a gene
//! without a median takes no part) gets the key `v / median[g]` in `f32`. The tokens are the
//! `k` entries with the largest keys, in decreasing key order, ties by increasing token id;
//! each token's value is `key / total` in `f32`: the value divided by the cell's total and by
//! the gene's median. With a vocabulary, `total` still sums *all* the cell's values, genes
//! outside the vocabulary included (normalisation by the cell's sequencing depth does not
//! depend on which model reads the cell, as Geneformer divides by the total counts before it
//! keeps the genes of its vocabulary); only the vocabulary's genes compete for the `k` tokens.
//! The medians stay those of the corpus genes (or of the table, by corpus gene name).
//!
//! **Value binning** (scGPT): the cell's non-zero values `x` (every stored value that is not 0
//! or NaN, as `f64`, of the vocabulary's genes when there is one) are cut at the edges
//! `numpy.quantile(x, numpy.linspace(0, 1, n_bins - 1))` (linear interpolation), and each value
//! gets `numpy.digitize(v, edges)`: the number of edges at or below it, from 1 to `n_bins - 1`
//! (0 is left for "not expressed"). A value equal to an edge goes to the bin above it, so equal
//! values share a bin, and a cell whose values are all equal has them all in the top bin
//! `n_bins - 1`. The tokens are those genes in increasing token id order; a cell with more than
//! `k` keeps the `k` with the largest values (ties by increasing token id), still in token id
//! order, binned among all its values. With a vocabulary the genes outside it are dropped
//! before binning, as scGPT keeps only its vocabulary's genes before it bins a cell.
//!
//! Per cell nothing is allocated: the keys go into a scratch buffer of the batch, `select_nth_unstable`
//! finds the top `k` when a cell has more, and only those are sorted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, FixedSizeListArray, PrimitiveArray};
use arrow::buffer::ScalarBuffer;
use arrow::datatypes::{DataType, Field, Float32Type, Int32Type, UInt8Type};
use serde::{Deserialize, Serialize};

use super::gather::ValueElem;
use crate::convert::gene_stats::{self, GeneStats};
use crate::corpus::{Corpus, Indices, Values};
use crate::error::{Error, Result};
use crate::genes::model::NOT_IN_VOCAB;

/// Padding token id.
pub const PAD_TOKEN: i32 = -1;

/// How cells become tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum TokenMode {
    /// Rank-value encoding (Geneformer): genes by value over their corpus median, top k.
    Rank,
    /// Value binning (scGPT): each non-zero gene with its per-cell quantile bin.
    Bins,
}

impl TokenMode {
    /// The name in settings and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenMode::Rank => "rank",
            TokenMode::Bins => "bins",
        }
    }
}

impl std::fmt::Display for TokenMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TokenMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "rank" => Ok(TokenMode::Rank),
            "bins" => Ok(TokenMode::Bins),
            _ => Err(Error::invalid_input(format!(
                "unknown tokens {s:?}; expected rank or bins"
            ))),
        }
    }
}

impl Serialize for TokenMode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for TokenMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e: Error| serde::de::Error::custom(e.message().to_string()))
    }
}

/// Tokenized output instead of CSR rows (see the module documentation for the rules).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenOptions {
    pub mode: TokenMode,
    /// Tokens per cell (the row width).
    pub top_k: usize,
    /// Bins: number of bins, bin 0 included (values get 1 ..= n_bins - 1).
    pub n_bins: usize,
    /// Rank: a table of gene medians instead of the corpus's `gene_stats` table.
    pub gene_medians: Option<PathBuf>,
}

/// Prepared tokenization of one corpus.
#[derive(Debug)]
pub(crate) struct Tokenizer {
    mode: TokenMode,
    k: usize,
    /// Rank: each gene's median as `f32` (NaN: no median).
    medians: Vec<f32>,
    /// Bins: the quantile levels `numpy.linspace(0, 1, n_bins - 1)`.
    levels: Vec<f64>,
    /// With a model vocabulary: corpus gene id -> token id, [`NOT_IN_VOCAB`] for genes left out.
    vocab: Option<Vec<u32>>,
}

/// `numpy.linspace(0.0, 1.0, num)`, to the bit.
fn linspace01(num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![0.0];
    }
    let step = 1.0 / (num - 1) as f64;
    let mut v: Vec<f64> = (0..num).map(|j| j as f64 * step).collect();
    v[num - 1] = 1.0;
    v
}

/// `numpy.quantile(sorted, q)` with linear interpolation, to the bit, for sorted, non-empty data.
#[inline]
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    let virt = (n - 1) as f64 * q;
    if virt >= (n - 1) as f64 {
        return sorted[n - 1];
    }
    let prev = virt.floor();
    let i = prev as usize;
    let (a, b) = (sorted[i], sorted[i + 1]);
    let t = virt - prev;
    let d = b - a;
    if t >= 0.5 {
        b - d * (1.0 - t)
    } else {
        a + d * t
    }
}

impl Tokenizer {
    /// Checks `options` and loads the medians (rank). With `vocab` (corpus gene id ->
    /// vocabulary position, [`NOT_IN_VOCAB`] for genes outside it, and the vocabulary's size)
    /// the token ids are vocabulary positions.
    pub(crate) fn new(
        corpus: &Corpus,
        options: &TokenOptions,
        vocab: Option<(&[u32], usize)>,
    ) -> Result<Tokenizer> {
        if options.top_k == 0 {
            return Err(Error::invalid_input("top_k must be at least 1, got 0"));
        }
        if options.top_k > i32::MAX as usize {
            return Err(Error::invalid_input(format!(
                "top_k {} is too large",
                options.top_k
            )));
        }
        let n_genes = corpus.n_genes() as usize;
        if let Some((_, size)) = vocab {
            if size > i32::MAX as usize {
                return Err(Error::invalid_input(format!(
                    "a vocabulary of {size} genes does not fit Int32 token ids"
                )));
            }
        }
        let vocab = vocab.map(|(lut, _)| lut.to_vec());
        match options.mode {
            TokenMode::Rank => {
                let medians = match &options.gene_medians {
                    Some(path) => read_medians(path, &corpus.gene_names()?)?,
                    None => {
                        let files = corpus.table_files(gene_stats::TABLE);
                        if files.is_empty() {
                            return Err(Error::invalid_input(format!(
                                "tokens=\"rank\" needs gene medians: the corpus has no {} table (it was written before \
                                 gene statistics existed); append to it or convert it again, or pass gene_medians (a table of gene, median)",
                                gene_stats::TABLE
                            ))
                            .with_path(corpus.root()));
                        }
                        GeneStats::read_files(&files)?.medians(n_genes)
                    }
                };
                Ok(Tokenizer {
                    mode: TokenMode::Rank,
                    k: options.top_k,
                    medians: medians.iter().map(|&m| m as f32).collect(),
                    levels: Vec::new(),
                    vocab,
                })
            }
            TokenMode::Bins => {
                if options.n_bins < 2 {
                    return Err(Error::invalid_input(format!(
                        "n_bins must be at least 2, got {}",
                        options.n_bins
                    )));
                }
                Ok(Tokenizer {
                    mode: TokenMode::Bins,
                    k: options.top_k,
                    medians: Vec::new(),
                    levels: linspace01(options.n_bins - 1),
                    vocab,
                })
            }
        }
    }

    /// A tokenizer with these medians (rank) or bins, for tests.
    #[cfg(test)]
    fn with(mode: TokenMode, k: usize, medians: Vec<f32>, n_bins: usize) -> Tokenizer {
        Tokenizer {
            mode,
            k,
            medians,
            levels: linspace01(n_bins - 1),
            vocab: None,
        }
    }

    /// The fields of the token columns.
    pub(crate) fn fields(&self) -> Vec<Field> {
        let value_type = match self.mode {
            TokenMode::Rank => DataType::Float32,
            TokenMode::Bins => DataType::Int32,
        };
        let list = |dt: DataType| {
            DataType::FixedSizeList(Arc::new(Field::new("item", dt, false)), self.k as i32)
        };
        vec![
            Field::new("tokens", list(DataType::Int32), false),
            Field::new("token_values", list(value_type), false),
            Field::new("attention_mask", list(DataType::UInt8), false),
        ]
    }

    /// The token columns of `cells`.
    pub(crate) fn gather(&self, corpus: &Corpus, cells: &[u64]) -> Result<Vec<ArrayRef>> {
        let n = cells.len() * self.k;
        let mut rows = Rows {
            tokens: vec![PAD_TOKEN; n],
            ranked: Vec::new(),
            binned: Vec::new(),
            mask: vec![0u8; n],
        };
        match self.mode {
            TokenMode::Rank => rows.ranked = vec![0f32; n],
            TokenMode::Bins => rows.binned = vec![0i32; n],
        }
        let mut scratch = Scratch::default();
        for (row, &c) in cells.iter().enumerate() {
            let (b, r) = corpus.checked_batch(c)?;
            let range = b.row_range(r);
            let (idx, val) = (b.indices().slice(range.clone()), b.values().slice(range));
            let at = row * self.k..(row + 1) * self.k;
            self.cell(idx, val, &mut scratch, &mut rows, at);
        }
        let list = |dt: DataType, values: ArrayRef| -> Result<ArrayRef> {
            Ok(Arc::new(FixedSizeListArray::try_new(
                Arc::new(Field::new("item", dt, false)),
                self.k as i32,
                values,
                None,
            )?))
        };
        let tokens = PrimitiveArray::<Int32Type>::new(ScalarBuffer::from(rows.tokens), None);
        let values: ArrayRef = match self.mode {
            TokenMode::Rank => Arc::new(PrimitiveArray::<Float32Type>::new(
                ScalarBuffer::from(rows.ranked),
                None,
            )),
            TokenMode::Bins => Arc::new(PrimitiveArray::<Int32Type>::new(
                ScalarBuffer::from(rows.binned),
                None,
            )),
        };
        let value_type = values.data_type().clone();
        let mask = PrimitiveArray::<UInt8Type>::new(ScalarBuffer::from(rows.mask), None);
        Ok(vec![
            list(DataType::Int32, Arc::new(tokens))?,
            list(value_type, values)?,
            list(DataType::UInt8, Arc::new(mask))?,
        ])
    }

    /// One cell into `rows[at]`, dispatched once on the stored types.
    fn cell(
        &self,
        idx: Indices<'_>,
        val: Values<'_>,
        s: &mut Scratch,
        rows: &mut Rows,
        at: std::ops::Range<usize>,
    ) {
        macro_rules! by_value {
            ($i:expr) => {
                match val {
                    Values::U16(v) => self.typed($i, v, s, rows, at),
                    Values::U32(v) => self.typed($i, v, s, rows, at),
                    Values::F32(v) => self.typed($i, v, s, rows, at),
                    Values::F64(v) => self.typed($i, v, s, rows, at),
                }
            };
        }
        match idx {
            Indices::U16(i) => by_value!(i),
            Indices::U32(i) => by_value!(i),
        }
    }

    #[inline]
    fn typed<I: Gene, V: ValueElem>(
        &self,
        idx: &[I],
        val: &[V],
        s: &mut Scratch,
        rows: &mut Rows,
        at: std::ops::Range<usize>,
    ) {
        match &self.vocab {
            None => self.mapped(idx, val, CorpusIds, s, rows, at),
            Some(lut) => self.mapped(idx, val, VocabIds(lut), s, rows, at),
        }
    }

    #[inline]
    fn mapped<I: Gene, V: ValueElem, M: TokenIds>(
        &self,
        idx: &[I],
        val: &[V],
        ids: M,
        s: &mut Scratch,
        rows: &mut Rows,
        at: std::ops::Range<usize>,
    ) {
        let tokens = &mut rows.tokens[at.clone()];
        let mask = &mut rows.mask[at.clone()];
        match self.mode {
            TokenMode::Rank => rank(
                idx,
                val,
                ids,
                &self.medians,
                s,
                tokens,
                &mut rows.ranked[at],
                mask,
            ),
            TokenMode::Bins => bins(
                idx,
                val,
                ids,
                &self.levels,
                s,
                tokens,
                &mut rows.binned[at],
                mask,
            ),
        }
    }
}

/// The output rows of a batch.
struct Rows {
    tokens: Vec<i32>,
    ranked: Vec<f32>,
    binned: Vec<i32>,
    mask: Vec<u8>,
}

/// Buffers reused by every cell of a batch.
#[derive(Default)]
struct Scratch {
    keys: Vec<u64>,
    tmp: Vec<u64>,
    sorted: Vec<f64>,
    edges: Vec<f64>,
    chosen: Vec<(u64, u32)>,
}

/// A stored gene id type.
trait Gene: Copy {
    fn id(self) -> u32;
}
impl Gene for u16 {
    #[inline]
    fn id(self) -> u32 {
        self as u32
    }
}
impl Gene for u32 {
    #[inline]
    fn id(self) -> u32 {
        self
    }
}

/// Corpus gene id -> token id.
trait TokenIds: Copy {
    /// Whether token ids increase with gene ids, so a cell's stored order is token order.
    const MONOTONE: bool;
    /// The token of gene `g`, `None` for a gene that never becomes one.
    fn token(self, g: u32) -> Option<u32>;
}

/// Token ids are corpus gene ids.
#[derive(Clone, Copy)]
struct CorpusIds;
impl TokenIds for CorpusIds {
    const MONOTONE: bool = true;
    #[inline]
    fn token(self, g: u32) -> Option<u32> {
        Some(g)
    }
}

/// Token ids are positions in a model vocabulary.
#[derive(Clone, Copy)]
struct VocabIds<'a>(&'a [u32]);
impl TokenIds for VocabIds<'_> {
    const MONOTONE: bool = false;
    #[inline]
    fn token(self, g: u32) -> Option<u32> {
        self.0
            .get(g as usize)
            .copied()
            .filter(|&t| t != NOT_IN_VOCAB)
    }
}

/// The sum of a cell's values in `f64`, as a chain of `f64` additions in order gives it. Whole
/// numbers add up exactly in `u64`, without that chain's latency; below 2^53 every partial sum
/// is exact in `f64` too, so the result is the same to the bit.
#[inline]
fn total<V: ValueElem>(vals: &[V]) -> f64 {
    if V::WHOLE {
        let sum: u64 = vals.iter().map(|&v| v.u64()).sum();
        if sum <= 1 << 53 {
            return sum as f64;
        }
    }
    vals.iter().fold(0.0, |t, v| t + v.f64())
}

/// Rank-value encoding of one cell (see the module documentation).
#[allow(clippy::too_many_arguments)]
fn rank<I: Gene, V: ValueElem, M: TokenIds>(
    idx: &[I],
    val: &[V],
    ids: M,
    medians: &[f32],
    s: &mut Scratch,
    tokens: &mut [i32],
    values: &mut [f32],
    mask: &mut [u8],
) {
    let k = tokens.len();
    let keys = &mut s.keys;
    keys.clear();
    let mut ascending = true;
    let mut prev = None;
    for (&g, &v) in idx.iter().zip(val) {
        let Some(t) = ids.token(g.id()) else {
            continue;
        };
        let m = medians.get(g.id() as usize).copied().unwrap_or(f32::NAN);
        let v = v.f32();
        if v > 0.0 && m > 0.0 {
            ascending &= prev < Some(t);
            prev = Some(t);
            let key = v / m;
            // Ascending order of the packed word: key descending, then token id ascending.
            keys.push(((!key.to_bits() as u64) << 32) | t as u64);
        }
    }
    let n = keys.len().min(k);
    if keys.len() > k {
        keys.select_nth_unstable(k - 1);
        keys[..n].sort_unstable();
    } else if ascending && n > RADIX_MIN {
        // The keys were pushed in token id order, so a stable sort on the value half alone
        // gives the order of the whole word.
        radix_sort_high(keys, &mut s.tmp);
    } else {
        keys.sort_unstable();
    }
    let keys = &s.keys;
    let top = &keys[..n];
    let total = total(val) as f32;
    for (j, &w) in top.iter().enumerate() {
        tokens[j] = (w & 0xffff_ffff) as i32;
        values[j] = f32::from_bits(!((w >> 32) as u32)) / total;
        mask[j] = 1;
    }
}

/// Below this many keys a comparison sort is as fast as the radix sort.
const RADIX_MIN: usize = 64;

/// Digits of [`radix_sort_narrow`]: 2^11 counts stay in the L1 cache.
const NARROW_BITS: u32 = 11;

/// Sorts by the high 32 bits, stably: an LSD radix sort.
fn radix_sort_high(keys: &mut Vec<u64>, tmp: &mut Vec<u64>) {
    if !radix_sort_narrow(keys, tmp) {
        radix_sort_bytes(keys, tmp);
    }
}

/// Sorts by the high 32 bits, stably, if they span at most two digits of [`NARROW_BITS`]
/// once the bits every key shares are left out: counts over gene medians take few distinct
/// values, often a single digit's worth. Returns false, leaving `keys` alone, otherwise.
fn radix_sort_narrow(keys: &mut Vec<u64>, tmp: &mut Vec<u64>) -> bool {
    let n = keys.len();
    let Some(&first) = keys.first() else {
        return true;
    };
    let high = |w: u64| w >> 32;
    let (mut lo, mut hi, mut differ) = (high(first), high(first), 0);
    for &w in keys.iter() {
        lo = lo.min(high(w));
        hi = hi.max(high(w));
        differ |= high(w) ^ high(first);
    }
    if differ == 0 {
        return true;
    }
    // The keys agree on the bits below `shift`, so `(high - lo) >> shift` keeps their order.
    let shift = differ.trailing_zeros();
    let bits = 64 - ((hi - lo) >> shift).leading_zeros();
    let passes = bits.div_ceil(NARROW_BITS);
    if passes > 2 {
        return false;
    }
    let width = bits.div_ceil(passes);
    let mask = (1u64 << width) - 1;
    let mut counts = [0u32; 1 << NARROW_BITS];
    let counts = &mut counts[..=mask as usize];
    tmp.clear();
    tmp.resize(n, 0);
    for p in 0..passes {
        let at = shift + p * width;
        let digit = |w: u64| (((high(w) - lo) >> at) & mask) as usize;
        counts.fill(0);
        for &w in keys.iter() {
            counts[digit(w)] += 1;
        }
        let mut sum = 0u32;
        for c in counts.iter_mut() {
            let t = *c;
            *c = sum;
            sum += t;
        }
        for &w in keys.iter() {
            let c = &mut counts[digit(w)];
            tmp[*c as usize] = w;
            *c += 1;
        }
        std::mem::swap(keys, tmp);
    }
    true
}

/// Sorts by the high 32 bits, stably: 8 bits a pass, skipping the passes whose byte is the
/// same in every key (the sign and most of the exponent, usually).
fn radix_sort_bytes(keys: &mut Vec<u64>, tmp: &mut Vec<u64>) {
    let n = keys.len();
    let mut counts = [[0u32; 256]; 4];
    for &w in keys.iter() {
        let h = (w >> 32) as u32;
        for (d, c) in counts.iter_mut().enumerate() {
            c[((h >> (8 * d)) & 255) as usize] += 1;
        }
    }
    tmp.clear();
    tmp.resize(n, 0);
    for (d, c) in counts.iter_mut().enumerate() {
        if c.iter().any(|&x| x as usize == n) {
            continue;
        }
        let mut sum = 0u32;
        for x in c.iter_mut() {
            let t = *x;
            *x = sum;
            sum += t;
        }
        let shift = 32 + 8 * d;
        for &w in keys.iter() {
            let b = ((w >> shift) & 255) as usize;
            tmp[c[b] as usize] = w;
            c[b] += 1;
        }
        std::mem::swap(keys, tmp);
    }
}

/// An order-preserving unsigned image of a non-NaN `f64`.
#[inline]
fn ordered(v: f64) -> u64 {
    let b = v.to_bits();
    if b >> 63 == 1 {
        !b
    } else {
        b | (1 << 63)
    }
}

/// The `f64` of [`ordered`]`(v)`.
#[inline]
fn unordered(b: u64) -> f64 {
    f64::from_bits(if b >> 63 == 1 { b & !(1 << 63) } else { !b })
}

/// Value binning of one cell (see the module documentation).
#[allow(clippy::too_many_arguments)]
fn bins<I: Gene, V: ValueElem, M: TokenIds>(
    idx: &[I],
    val: &[V],
    ids: M,
    levels: &[f64],
    s: &mut Scratch,
    tokens: &mut [i32],
    values: &mut [i32],
    mask: &mut [u8],
) {
    let k = tokens.len();
    let expressed = |x: f64| x != 0.0 && !x.is_nan();
    let sorted = &mut s.sorted;
    sorted.clear();
    sorted.extend(
        idx.iter()
            .zip(val)
            .filter(|(g, _)| ids.token(g.id()).is_some())
            .map(|(_, v)| v.f64())
            .filter(|&x| expressed(x)),
    );
    if sorted.is_empty() {
        return;
    }
    sorted.sort_unstable_by(f64::total_cmp);
    let edges = &mut s.edges;
    edges.clear();
    edges.extend(levels.iter().map(|&q| quantile(sorted, q)));
    let bin = |x: f64| edges.partition_point(|&e| e <= x) as i32;
    if sorted.len() <= k && M::MONOTONE {
        let mut j = 0;
        for (&g, &v) in idx.iter().zip(val) {
            let x = v.f64();
            if let (true, Some(t)) = (expressed(x), ids.token(g.id())) {
                tokens[j] = t as i32;
                values[j] = bin(x);
                mask[j] = 1;
                j += 1;
            }
        }
        return;
    }
    // The k largest values, ties by token id, in token id order.
    let chosen = &mut s.chosen;
    chosen.clear();
    for (&g, &v) in idx.iter().zip(val) {
        let x = v.f64();
        if let (true, Some(t)) = (expressed(x), ids.token(g.id())) {
            chosen.push((!ordered(x), t));
        }
    }
    let n = chosen.len().min(k);
    if chosen.len() > k {
        chosen.select_nth_unstable(k - 1);
    }
    let top = &mut chosen[..n];
    top.sort_unstable_by_key(|&(_, t)| t);
    for (j, &(key, t)) in top.iter().enumerate() {
        tokens[j] = t as i32;
        values[j] = bin(unordered(!key));
        mask[j] = 1;
    }
}

/// Gene medians from a text table with a header: columns `gene` (names as in `genes.parquet`)
/// and `median`, separated by tabs or commas. Genes of the corpus missing from it take no part
/// in the ranking; names the corpus does not have are ignored.
fn read_medians(path: &Path, names: &[String]) -> Result<Vec<f64>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, "reading", e))?;
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let bad = |line: usize, what: String| {
        Error::invalid_input(format!("line {}: {what}", line + 1)).with_path(path)
    };
    let Some((_, header)) = lines.next() else {
        return Err(Error::invalid_input("the gene medians table is empty").with_path(path));
    };
    let sep = if header.contains('\t') { '\t' } else { ',' };
    let cols: Vec<&str> = header.split(sep).map(str::trim).collect();
    let find = |names: &[&str]| cols.iter().position(|c| names.contains(c));
    let (Some(gc), Some(mc)) = (find(&["gene", "name"]), find(&["median", "median_nonzero"]))
    else {
        return Err(Error::invalid_input(format!(
            "the gene medians table needs the columns gene and median; its header has {}",
            cols.join(", ")
        ))
        .with_path(path));
    };
    let ids: HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let mut out = vec![f64::NAN; names.len()];
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (line, l) in lines {
        let fields: Vec<&str> = l.split(sep).map(str::trim).collect();
        let (Some(g), Some(m)) = (fields.get(gc), fields.get(mc)) else {
            return Err(bad(
                line,
                format!("{} fields, expected {}", fields.len(), cols.len()),
            ));
        };
        let m: f64 = m
            .parse()
            .map_err(|_| bad(line, format!("median {m:?} of gene {g:?} is not a number")))?;
        if let Some(first) = seen.insert(g.to_string(), line) {
            return Err(bad(
                line,
                format!("gene {g:?} is listed twice (first on line {})", first + 1),
            ));
        }
        if let Some(&i) = ids.get(g) {
            out[i] = m;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Out {
        tokens: Vec<i32>,
        ranked: Vec<f32>,
        binned: Vec<i32>,
        mask: Vec<u8>,
    }

    fn run(t: &Tokenizer, idx: &[u16], val: &[f32]) -> Out {
        let n = t.k;
        let mut rows = Rows {
            tokens: vec![PAD_TOKEN; n],
            ranked: vec![0.0; n],
            binned: vec![0; n],
            mask: vec![0; n],
        };
        t.cell(
            Indices::U16(idx),
            Values::F32(val),
            &mut Scratch::default(),
            &mut rows,
            0..n,
        );
        Out {
            tokens: rows.tokens,
            ranked: rows.ranked,
            binned: rows.binned,
            mask: rows.mask,
        }
    }

    #[test]
    fn an_empty_cell_is_all_padding() {
        for mode in [TokenMode::Rank, TokenMode::Bins] {
            let t = Tokenizer::with(mode, 4, vec![1.0; 10], 5);
            let o = run(&t, &[], &[]);
            assert_eq!(o.tokens, vec![PAD_TOKEN; 4]);
            assert_eq!(o.mask, vec![0; 4]);
            assert_eq!(o.ranked, vec![0.0; 4]);
        }
    }

    #[test]
    fn rank_sorts_by_value_over_median_and_pads() {
        // Keys: g1 4/2 = 2, g3 3/1 = 3, g5 6/3 = 2 (tie with g1), g7 has no median.
        let mut med = vec![1.0f32; 8];
        med[1] = 2.0;
        med[5] = 3.0;
        med[7] = f32::NAN;
        let t = Tokenizer::with(TokenMode::Rank, 5, med.clone(), 3);
        let o = run(&t, &[1, 3, 5, 7], &[4.0, 3.0, 6.0, 9.0]);
        assert_eq!(o.tokens, vec![3, 1, 5, PAD_TOKEN, PAD_TOKEN]);
        assert_eq!(o.mask, vec![1, 1, 1, 0, 0]);
        let total = 22.0f32;
        assert_eq!(o.ranked[..3], [3.0 / total, 2.0 / total, 2.0 / total]);
        // Top 2 of the same cell: the largest key, then the tie won by the lower gene id.
        let t = Tokenizer::with(TokenMode::Rank, 2, med, 3);
        assert_eq!(
            run(&t, &[1, 3, 5, 7], &[4.0, 3.0, 6.0, 9.0]).tokens,
            vec![3, 1]
        );
        // Zero and negative values take no part.
        let t = Tokenizer::with(TokenMode::Rank, 3, vec![1.0; 4], 3);
        let o = run(&t, &[0, 1, 2], &[0.0, -1.0, 2.0]);
        assert_eq!(o.tokens, vec![2, PAD_TOKEN, PAD_TOKEN]);
    }

    #[test]
    fn bins_follow_numpy_quantiles_and_digitize() {
        // n_bins 5: edges at the 0, 1/3, 2/3, 1 quantiles of [1, 2, 3, 4]: 1, 2, 3, 4.
        let t = Tokenizer::with(TokenMode::Bins, 6, Vec::new(), 5);
        let o = run(&t, &[2, 4, 6, 8], &[4.0, 1.0, 3.0, 2.0]);
        assert_eq!(o.tokens, vec![2, 4, 6, 8, PAD_TOKEN, PAD_TOKEN]);
        assert_eq!(o.binned, vec![4, 1, 3, 2, 0, 0]);
        // All values equal: every edge equals them, all in the top bin.
        let o = run(&t, &[0, 1, 2], &[5.0, 5.0, 5.0]);
        assert_eq!(o.binned[..3], [4, 4, 4]);
        // More non-zeros than k: the 2 largest (the tie at 3.0 won by gene 2), in gene order,
        // binned among all values.
        let t = Tokenizer::with(TokenMode::Bins, 2, Vec::new(), 5);
        let o = run(&t, &[1, 2, 3, 4], &[3.0, 3.0, 1.0, 3.0]);
        assert_eq!(o.tokens, vec![1, 2]);
        assert_eq!(o.binned, vec![4, 4]);
    }

    #[test]
    fn a_vocabulary_renames_and_drops_genes() {
        // Corpus genes 0..6 -> positions: 0 -> 4, 1 -> none, 2 -> 0, 3 -> 2, 4 -> none, 5 -> 1.
        let lut = vec![4, NOT_IN_VOCAB, 0, 2, NOT_IN_VOCAB, 1];
        let idx = [0u16, 1, 2, 3, 4, 5];
        let val = [2.0f32, 9.0, 2.0, 1.0, 8.0, 3.0];
        let mut t = Tokenizer::with(TokenMode::Rank, 5, vec![1.0; 6], 3);
        t.vocab = Some(lut.clone());
        let o = run(&t, &idx, &val);
        // Keys 3 (pos 1), 2 (pos 4), 2 (pos 0: wins the tie), 1 (pos 2); genes 1 and 4 are
        // left out, though they are the largest, yet count in the total.
        assert_eq!(o.tokens, vec![1, 0, 4, 2, PAD_TOKEN]);
        assert_eq!(o.mask, vec![1, 1, 1, 1, 0]);
        let total = 25.0f32;
        assert_eq!(
            o.ranked[..4],
            [3.0 / total, 2.0 / total, 2.0 / total, 1.0 / total]
        );
        // Bins: edges over the vocabulary's values only ([1, 2, 2, 3] -> edges 1, 2, 3 with
        // n_bins 4), tokens in vocabulary order.
        let mut t = Tokenizer::with(TokenMode::Bins, 6, Vec::new(), 4);
        t.vocab = Some(lut.clone());
        let o = run(&t, &idx, &val);
        assert_eq!(o.tokens, vec![0, 1, 2, 4, PAD_TOKEN, PAD_TOKEN]);
        assert_eq!(o.binned, vec![2, 3, 1, 2, 0, 0]);
        // Top 2 of them: values 3 (pos 1) and 2 (pos 0 wins the tie with pos 4), by position.
        let mut t = Tokenizer::with(TokenMode::Bins, 2, Vec::new(), 4);
        t.vocab = Some(lut);
        let o = run(&t, &idx, &val);
        assert_eq!(o.tokens, vec![0, 1]);
        assert_eq!(o.binned, vec![2, 3]);
    }

    #[test]
    fn the_radix_sort_orders_like_a_full_sort() {
        // Values with many ties and a spread of exponents, gene ids ascending.
        let mut keys: Vec<u64> = (0..500u64)
            .map(|g| {
                let v = ((g * 7919) % 37) as f32 * 0.37 + ((g % 3) as f32) * 1e3;
                ((!v.to_bits() as u64) << 32) | g
            })
            .collect();
        let mut want = keys.clone();
        want.sort_unstable();
        radix_sort_high(&mut keys, &mut Vec::new());
        assert_eq!(keys, want);
        // Keys within one digit (counts over a median of 2), within two (12 significant
        // bits), and spanning more (counts over medians 2, 3 and 1e-3); the byte sort agrees.
        let key = |v: f32, g: u64| ((!v.to_bits() as u64) << 32) | g;
        let count = |g: u64, m: u64| ((g * 7919) % m + 1) as f32;
        let cases: [(Vec<u64>, bool); 3] = [
            ((0..700).map(|g| key(count(g, 13) / 2.0, g)).collect(), true),
            (
                (0..700).map(|g| key(count(g, 4096) / 1024.0, g)).collect(),
                true,
            ),
            (
                (0..700)
                    .map(|g| key(count(g, 13) / [2.0, 3.0, 1e-3][g as usize % 3], g))
                    .collect(),
                false,
            ),
        ];
        for (keys, narrow) in cases {
            let mut want = keys.clone();
            want.sort_unstable();
            let mut got = keys.clone();
            assert_eq!(radix_sort_narrow(&mut got, &mut Vec::new()), narrow);
            if narrow {
                assert_eq!(got, want);
            }
            let mut got = keys.clone();
            radix_sort_high(&mut got, &mut Vec::new());
            assert_eq!(got, want);
            let mut got = keys;
            radix_sort_bytes(&mut got, &mut Vec::new());
            assert_eq!(got, want);
        }
    }

    #[test]
    fn quantile_matches_numpy_linear() {
        // numpy.quantile([1, 2, 4, 8], [0, 0.25, 0.5, 0.9, 1]) = [1, 1.75, 3, 6.8, 8].
        let s = [1.0, 2.0, 4.0, 8.0];
        let got: Vec<f64> = [0.0, 0.25, 0.5, 0.9, 1.0]
            .iter()
            .map(|&q| quantile(&s, q))
            .collect();
        assert_eq!(got[..3], [1.0, 1.75, 3.0]);
        assert!((got[3] - 6.8).abs() < 1e-12 && got[4] == 8.0);
        assert_eq!(linspace01(3), vec![0.0, 0.5, 1.0]);
        assert_eq!(linspace01(1), vec![0.0]);
    }

    #[test]
    fn a_medians_table_is_read_by_name_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.tsv");
        let names: Vec<String> = ["A", "B", "C"].iter().map(|s| s.to_string()).collect();
        std::fs::write(&p, "gene\tmedian\nC\t2.5\nZ\t1\nA\t4\n").unwrap();
        let m = read_medians(&p, &names).unwrap();
        assert_eq!((m[0], m[2]), (4.0, 2.5));
        assert!(m[1].is_nan());
        std::fs::write(&p, "gene,median\nA,1\nA,2\n").unwrap();
        let e = read_medians(&p, &names).unwrap_err().to_string();
        assert!(e.contains("listed twice") && e.contains("m.tsv"), "{e}");
        std::fs::write(&p, "name,value\nA,1\n").unwrap();
        let e = read_medians(&p, &names).unwrap_err().to_string();
        assert!(e.contains("needs the columns gene and median"), "{e}");
        std::fs::write(&p, "gene,median\nA,x\n").unwrap();
        let e = read_medians(&p, &names).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("not a number"), "{e}");
    }
}
