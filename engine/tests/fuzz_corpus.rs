//! Replays the committed fuzz corpus of the `engine_request` target
//! (`fuzz/corpus/engine_request/`) through the same facade function the
//! fuzzer calls, on stable Rust and without libFuzzer. A panic fails the
//! test; the file being replayed is printed first, so the failure names it.

use std::path::Path;

/// At least this many inputs: an empty or missing corpus is a failure, so
/// the check cannot go quiet because a directory moved.
const MIN_FILES: usize = 20;

#[test]
fn engine_request_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/engine_request");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("a corpus entry").path())
        .filter(|path| path.is_file())
        .collect();
    assert!(
        files.len() >= MIN_FILES,
        "{} holds {} inputs, expected at least {MIN_FILES}",
        dir.display(),
        files.len()
    );
    files.sort();
    for file in &files {
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        eprintln!("replaying {}", file.display());
        engine::fuzzing::engine_request(&data);
    }
}
