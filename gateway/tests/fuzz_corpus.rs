//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) of the
//! gateway's fuzz targets through the same facade functions the fuzzer
//! calls, on stable Rust and without libFuzzer: every input that once
//! found new code paths, or that was written as a hostile case, stays a
//! regression test. A panic in a facade fails the test; the file being
//! replayed is printed first, so the failure names it.

use std::path::Path;

/// Runs `target`'s facade on every file of its corpus. An empty or
/// missing corpus is a failure, not a pass: the check must not go quiet
/// because a directory moved.
fn replay(target: &str, min_files: usize, facade: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("a corpus entry").path())
        .filter(|path| path.is_file())
        .collect();
    assert!(
        files.len() >= min_files,
        "{} holds {} inputs, expected at least {min_files}",
        dir.display(),
        files.len()
    );
    files.sort();
    for file in &files {
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        eprintln!("replaying {}", file.display());
        facade(&data);
    }
}

#[test]
fn config_toml_corpus() {
    replay("config_toml", 20, gateway::fuzzing::config_toml);
}

#[test]
fn predict_url_corpus() {
    replay("predict_url", 40, gateway::fuzzing::predict_url);
}

#[test]
fn api_json_corpus() {
    replay("api_json", 20, gateway::fuzzing::api_json);
}
