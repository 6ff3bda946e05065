//! See `gateway::fuzzing::predict_url`, which the corpus replay test also calls.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gateway::fuzzing::predict_url(data));
