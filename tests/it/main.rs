//! Reliability suite: bad inputs, corruption, crash safety, concurrency, containment and the
//! fuzz regressions. One integration binary (`cargo test --test it`).

mod bad_inputs;
mod common;
mod concurrency;
mod containment;
mod corruption;
mod crash;
mod fuzz_regressions;
