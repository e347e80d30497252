//! Tests of the h5ad reader against files written by anndata.
