//! `benches/compare.py --smoke` end to end: it starts nginx, haproxy, the
//! engine and the gateway (this build's debug binaries), measures every
//! target for a fraction of a second, and writes its table and JSON.
//! Needs nginx, haproxy and taskset: skipped where they are missing, unless
//! `CI` is set (.ci/run installs them).

use std::path::{Path, PathBuf};
use std::process::Command;

fn found(tool: &str) -> bool {
    let in_path = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()));
    in_path || Path::new("/usr/sbin").join(tool).is_file()
}

/// Where cargo put this build's binaries: this test runs from
/// `<target>/<profile>/deps/`.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap().to_owned();
    for bin in ["gateway", "engine", "loadtest"] {
        assert!(
            dir.join(bin).is_file(),
            "{} is missing: build the workspace (`cargo test --workspace`)",
            dir.join(bin).display()
        );
    }
    dir
}

#[test]
fn the_comparison_runner_measures_every_target() {
    let missing: Vec<_> = ["nginx", "haproxy", "taskset", "python3"]
        .into_iter()
        .filter(|t| !found(t))
        .collect();
    if !missing.is_empty() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have {missing:?} (.ci/run installs them)"
        );
        eprintln!("skipped: {missing:?} not installed (apt-get install nginx-light haproxy)");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = tempfile::tempdir().unwrap();
    let run = Command::new("python3")
        .arg(root.join("benches/compare.py"))
        .args(["--smoke", "--no-build", "--bin-dir"])
        .arg(bin_dir())
        .arg("--out")
        .arg(out.path())
        .args([
            "--gateway-variant",
            "bigpool=upstream_keepalive_pool_size = 256",
        ])
        .current_dir(root)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "compare.py --smoke: {}\n{}{}",
        run.status,
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );

    let written: Vec<PathBuf> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let of = |ext: &str| {
        let files: Vec<_> = written
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == ext))
            .collect();
        assert_eq!(files.len(), 1, "one .{ext} in {written:?}");
        std::fs::read_to_string(files[0]).unwrap()
    };
    let table = of("md");
    let json: serde_json::Value = serde_json::from_str(&of("json")).unwrap();
    assert_eq!(json["failures"], serde_json::json!([]), "{json}");
    let proxies = ["nginx", "haproxy", "gateway", "gateway-bigpool"];
    for upstream in ["nginx", "engine", "tls"] {
        // The TLS rows proxy the nginx upstream; there is no direct row.
        let direct = (upstream != "tls").then_some("direct");
        let targets = direct.into_iter().chain(proxies);
        assert!(
            table.contains(&format!("| {upstream} upstream |")),
            "{table}"
        );
        let results = &json["upstreams"][upstream];
        let rates = results["rates"].as_array().unwrap();
        assert_eq!(rates.len(), 3, "{results}");
        assert!(rates.iter().all(|r| r.as_u64().unwrap() > 0), "{rates:?}");
        for target in targets {
            let s = &results["summary"][target];
            assert!(
                s["capacity_rps"].as_f64().unwrap() > 0.0,
                "{upstream}/{target}: {s}"
            );
            let open = s["open_loop"].as_object().unwrap();
            assert_eq!(open.len(), 3, "{upstream}/{target}: {s}");
            for (share, o) in open {
                assert!(
                    o["requests_per_s"].as_f64().unwrap() > 0.0,
                    "{upstream}/{target} at {share}: {s}"
                );
            }
            assert!(table.contains(&format!("| {target} |")), "{table}");
        }
    }
}
