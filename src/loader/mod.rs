//! Layer 6: sampled cell ids to zero-copy-gathered Arrow batches, with prefetching.
