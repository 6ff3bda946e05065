//! Benchmarks live in benches/ and the comparison runner in compare.sh.
