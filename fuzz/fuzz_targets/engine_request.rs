//! See `engine::fuzzing::engine_request`, which the corpus replay test
//! also calls.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| engine::fuzzing::engine_request(data));
