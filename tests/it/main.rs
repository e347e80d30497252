//! Reliability suite: bad inputs, corruption, crash safety, concurrency, containment and the
//! fuzz regressions. One integration binary (`cargo test --test it`).

mod bad_inputs;
mod common;
mod corruption;
mod concurrency;
mod containment;
mod crash;
mod fuzz_regressions;
