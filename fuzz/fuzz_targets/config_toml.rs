//! See `gateway::fuzzing::config_toml`, which the corpus replay test also calls.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gateway::fuzzing::config_toml(data));
