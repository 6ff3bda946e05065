//! The `gateway` command line: `check` and `keys new`.

use std::process::Command;

fn gateway() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gateway"))
}

#[test]
fn check_accepts_the_example_config() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/gateway.toml");
    let out = gateway()
        .args(["check", "--config", example])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "OK\n");
}

#[test]
fn check_prints_every_error_with_file_and_line_and_exits_1() {
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(
        file.path(),
        "[listeners]\npredict = \"nowhere\"\n[[models]]\nid = \"m\"\nflavour = 1\n",
    )
    .unwrap();
    let out = gateway()
        .arg("check")
        .arg("--config")
        .arg(file.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let name = file.path().display().to_string();
    assert!(
        stdout.contains(&format!(
            "{name}:2:1: listeners.predict: `nowhere` is not an `ip:port` address"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "{name}:5:1: models[0].flavour: unknown key `flavour`"
        )),
        "{stdout}"
    );
    assert!(stdout.contains("2 error(s)"), "{stdout}");
}

#[test]
fn check_reports_a_missing_file() {
    let out = gateway()
        .args(["check", "--config", "/nonexistent/gw.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("/nonexistent/gw.toml: (file): cannot read")
    );
}

#[test]
fn keys_new_prints_a_prefixed_key_and_a_matching_config_entry() {
    let out = gateway()
        .args(["keys", "new", "--name", "ci", "--scope", "m1,m2"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let key = stdout
        .split_whitespace()
        .find(|w| w.starts_with(config::KEY_PREFIX))
        .expect("a key in the output");
    let digest = hex::encode(config::key_digest(key));
    assert!(
        stdout.contains(&format!("sha256 = \"{digest}\"")),
        "{stdout}"
    );
    assert!(stdout.contains("scope = [\"m1\", \"m2\"]"), "{stdout}");
    // The printed entry is valid config that accepts the key.
    let entry = &stdout[stdout.find("[[api_keys]]").unwrap()..];
    let parsed = config::load_str(
        &format!("{entry}\n[[models]]\nid = \"m1\"\n[[models]]\nid = \"m2\"\n"),
        "k.toml",
    )
    .unwrap();
    assert_eq!(parsed.api_keys[0].digest, config::key_digest(key));
    assert!(!stdout.contains("m1,m2"));
}
