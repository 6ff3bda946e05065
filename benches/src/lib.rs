//! Criterion benchmarks live in `benches/` (`hot_path.rs`, `metrics.rs`), the
//! proxy comparison runner in `compare.py` and its smoke test in `tests/`.
