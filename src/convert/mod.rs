//! Layer 3: h5ad files to a corpus.
