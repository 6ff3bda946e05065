//! Running the `loadtest` binary and reading its JSON results.

use std::process::{Command, Stdio};

/// Runs `loadtest` with `args` (plus `--json` to a temporary file) and
/// returns what it wrote; panics if it fails.
pub(crate) fn run_loadtest(args: &[&str]) -> serde_json::Value {
    let out = std::env::temp_dir().join(format!(
        "loadtest-{}-{}.json",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let status = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(args)
        .arg("--json")
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let json = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let _ = std::fs::remove_file(out);
    json
}
