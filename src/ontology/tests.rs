//! Tests of the ontology layer.
