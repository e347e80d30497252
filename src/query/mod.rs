//! Layer 4: SQL over the corpus tables with DataFusion.
