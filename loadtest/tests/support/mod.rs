//! Running the `loadtest` binary and reading its JSON results; the in-test
//! server is in `server`.

// Each test file uses its own part of this.
#![allow(dead_code)]

pub(crate) mod server;

use std::process::{Command, ExitStatus, Stdio};

/// Runs `loadtest` with `args` (plus `--json` to a temporary file) and
/// returns what it wrote; panics if it fails.
pub(crate) fn run_loadtest(args: &[&str]) -> serde_json::Value {
    let (status, json) = run_loadtest_status(args);
    assert!(status.success(), "loadtest failed: {json}");
    json
}

/// Runs `loadtest` and returns its exit status and the JSON it wrote.
pub(crate) fn run_loadtest_status(args: &[&str]) -> (ExitStatus, serde_json::Value) {
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
    let text = std::fs::read_to_string(&out)
        .unwrap_or_else(|e| panic!("loadtest ({status}) wrote no JSON: {e}"));
    let _ = std::fs::remove_file(out);
    (status, serde_json::from_str(&text).unwrap())
}

/// [`run_loadtest`] with the arguments as one line (split at spaces).
pub(crate) fn run(args: &str) -> serde_json::Value {
    run_loadtest(&args.split_whitespace().collect::<Vec<_>>())
}

/// [`run_loadtest_status`] with the arguments as one line.
pub(crate) fn run_status(args: &str) -> (ExitStatus, serde_json::Value) {
    run_loadtest_status(&args.split_whitespace().collect::<Vec<_>>())
}

/// Runs `loadtest` with arguments that it must refuse; its stderr.
pub(crate) fn refused(args: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(args.split_whitespace())
        .output()
        .unwrap();
    assert!(!out.status.success(), "{args}: accepted");
    String::from_utf8_lossy(&out.stderr).into_owned()
}
