//! Layer 5: samplers over a cohort, with deterministic sharding across ranks and workers.
