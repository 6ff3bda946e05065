//! Config fixtures shared by tests and benchmarks (feature `test-util`).

use std::fmt::Write;

/// `[[models]]` entries for `models` models `m0`, `m1`, ..., each with two
/// deployments `a` and `b` (both served by `replica`) and the environments
/// `production` (-> `a`) and `staging` (-> `b`).
pub fn many_models_toml(models: usize, replica: &str) -> String {
    let mut text = String::with_capacity(models * 400);
    for i in 0..models {
        let _ = write!(
            text,
            r#"
[[models]]
id = "m{i}"
[[models.deployments]]
id = "a"
replicas = {{ source = "static", addresses = ["{replica}"] }}
[[models.deployments]]
id = "b"
replicas = {{ source = "static", addresses = ["{replica}"] }}
[[models.environments]]
name = "production"
deployment = "a"
[[models.environments]]
name = "staging"
deployment = "b"
"#
        );
    }
    text
}

/// Checks a Prometheus text exposition with `promtool check metrics`.
/// Without promtool it fails when `CI` is set (CI installs it) and is
/// skipped elsewhere.
pub fn promtool_check(text: &str) {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(_) if std::env::var_os("CI").is_none() => {
            eprintln!("promtool is not installed: the exposition check is skipped");
            return;
        }
        Err(e) => panic!("promtool is required in CI: {e}"),
    };
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool ran");
    assert!(
        out.status.success(),
        "promtool rejected the exposition:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
