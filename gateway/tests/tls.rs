//! The TLS predict listener end to end: HTTP/2 and HTTP/1.1 chosen by ALPN,
//! a streamed response over TLS, the plain listener beside it, certificate
//! reload (a good pair is picked up, a broken one is ignored), and the
//! config errors `gateway check` and `gateway serve` report.
//!
//! The client is the `curl` binary and certificates are made at test time
//! with the `openssl` command-line tool (`testkit::tls`); the upstream is
//! the small recording HTTP/1.1 replica of `testkit::replica` (shared with
//! `data_path.rs`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use testkit::gateway::Launch;
use testkit::replica::{Behaviour, Replica};
use testkit::tls::{
    Certs, PREDICT, Reaped, TlsGateway, answer, assert_echo_over_tls, curl, post,
    presented_subject, run, subject, wait_for_subject,
};

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// curl offers h2 and http/1.1 by ALPN; the gateway picks HTTP/2, and the
/// replica still gets a plain HTTP/1.1 `POST /predict` without the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_alpn_h2_reaches_the_replica_over_http1() {
    let certs = Certs::new().await;
    let replica = Replica::start(Behaviour::Echo).await;
    let gw = TlsGateway::with_certs(&replica, &certs).await;
    let body = r#"{"inputs":["over TLS, h2"]}"#;
    let answer = post(
        &gw.https(PREDICT),
        body,
        &["--http2", "--cacert", certs.cert().to_str().unwrap()],
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.version, "2", "ALPN chose HTTP/2");
    assert_eq!(String::from_utf8_lossy(&answer.body), body);
    assert_eq!(answer.header("x-deployment-id"), Some("d1"), "{answer:?}");
    let bodies = replica.assert_predicts_without_key().await;
    assert_eq!(bodies, vec![body.as_bytes().to_vec()]);
}

/// A client that offers only http/1.1 gets HTTP/1.1 over TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_http1_only() {
    let certs = Certs::new().await;
    let replica = Replica::start(Behaviour::Echo).await;
    let gw = TlsGateway::with_certs(&replica, &certs).await;
    let body = r#"{"inputs":["over TLS, http/1.1"]}"#;
    let answer = post(
        &gw.https(PREDICT),
        body,
        &["--http1.1", "--cacert", certs.cert().to_str().unwrap()],
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.version, "1.1");
    assert_eq!(String::from_utf8_lossy(&answer.body), body);
    assert_eq!(answer.header("x-deployment-id"), Some("d1"), "{answer:?}");
    let bodies = replica.assert_predicts_without_key().await;
    assert_eq!(bodies, vec![body.as_bytes().to_vec()]);
}

/// A chunked response is relayed over TLS and HTTP/2 as it arrives: the
/// replica sends its second part only once curl has printed the first, so
/// a gateway that buffered the response would never finish it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_response_streams_over_tls_h2() {
    let certs = Certs::new().await;
    let go = Arc::new(Notify::new());
    let first = Bytes::from_static(b"data: first event\n\n");
    let rest = Bytes::from(
        (0..20_000)
            .map(|i| format!("data: event {i}\n\n"))
            .collect::<String>(),
    );
    let replica = Replica::start(Behaviour::StreamAfterSignal {
        first: first.clone(),
        rest: rest.clone(),
        go: Arc::clone(&go),
    })
    .await;
    let gw = TlsGateway::with_certs(&replica, &certs).await;
    let mut command = curl(&["-N", "--http2", "--cacert", certs.cert().to_str().unwrap()]);
    command.args(["--data-binary", r#"{"stream":true}"#, &gw.https(PREDICT)]);
    let first_len = first.len();
    let (first_part, out) = tokio::task::spawn_blocking(move || {
        let mut curl = Reaped(
            command
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn curl"),
        );
        let mut stdout = curl.0.stdout.take().unwrap();
        // Bounded by curl's --max-time: then the pipe closes.
        let mut first_part = vec![0; first_len];
        let got_first = stdout.read_exact(&mut first_part);
        // Let the replica go on either way, so that nothing waits for
        // its LIMIT; the assertions below tell what happened.
        go.notify_one();
        if got_first.is_err() {
            first_part.clear();
        }
        let mut rest = Vec::new();
        stdout.read_to_end(&mut rest).unwrap();
        let mut stderr = Vec::new();
        curl.0
            .stderr
            .take()
            .unwrap()
            .read_to_end(&mut stderr)
            .unwrap();
        let status = curl.0.wait().unwrap();
        (
            first_part,
            Output {
                status,
                stdout: rest,
                stderr,
            },
        )
    })
    .await
    .unwrap();
    assert_eq!(
        first_part,
        first.to_vec(),
        "the first part reached curl before the replica sent the rest ({})",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer = answer(&out);
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.version, "2");
    assert_eq!(answer.header("x-deployment-id"), Some("d1"));
    assert_eq!(answer.body.len(), rest.len(), "the rest arrived whole");
    assert!(answer.body == rest, "the rest arrived intact");
    replica.assert_predicts_without_key().await;
}

/// The plain listener keeps serving beside the TLS one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plain_listener_still_serves_beside_the_tls_one() {
    let certs = Certs::new().await;
    let replica = Replica::start(Behaviour::Echo).await;
    let gw = TlsGateway::with_certs(&replica, &certs).await;
    let plain = post(&gw.gw.url(PREDICT), "plain", &["--http1.1"]).await;
    assert_eq!(plain.status, 200, "{plain:?}");
    assert_eq!(plain.version, "1.1");
    assert_eq!(plain.body, b"plain");
    assert_eq!(plain.header("x-deployment-id"), Some("d1"));
    assert_echo_over_tls(&gw, &certs.cert(), "secure").await;
    let bodies = replica.assert_predicts_without_key().await;
    assert_eq!(bodies, vec![b"plain".to_vec(), b"secure".to_vec()]);
}

/// `cert` and `key` given relative to the config file are found there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relative_certificate_paths_are_relative_to_the_config_file() {
    let certs = Certs::new().await;
    let replica = Replica::start(Behaviour::Echo).await;
    // The harness writes its config into the temporary directory, as
    // tempdir() made `certs` there: name the files from that directory.
    let base = std::env::temp_dir();
    let relative = |p: PathBuf| {
        p.strip_prefix(&base)
            .expect("the certificates are under the temporary directory")
            .to_str()
            .unwrap()
            .to_owned()
    };
    let (cert, key) = (relative(certs.cert()), relative(certs.key()));
    assert!(Path::new(&cert).is_relative());
    let gw = TlsGateway::start(&replica, &cert, &key).await;
    assert_eq!(
        gw.gw.config.path().parent(),
        Some(base.as_path()),
        "the config file is beside the certificate directory"
    );
    assert_echo_over_tls(&gw, &certs.cert(), "relative").await;
}

/// A new pair renamed over the files is served to new handshakes within a
/// few seconds; a broken certificate file is then ignored (the last good
/// pair keeps serving) and a good pair after it is picked up again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_and_a_broken_file_keeps_the_old_pair() {
    let certs = Certs::new().await;
    let replica = Replica::start(Behaviour::Echo).await;
    let gw = TlsGateway::with_certs(&replica, &certs).await;
    assert_eq!(presented_subject(gw.tls).await, Ok(subject("gw-test-1")));
    let first_cert = certs.dir.path().join("first-cert.pem");
    std::fs::copy(certs.cert(), &first_cert).unwrap();
    assert_echo_over_tls(&gw, &first_cert, "before").await;

    certs.replace("gw-test-2").await;
    wait_for_subject(gw.tls, "gw-test-2", Duration::from_secs(10)).await;
    // Verified against the new certificate, not just shown by it.
    assert_echo_over_tls(&gw, &certs.cert(), "after the reload").await;
    let second_cert = certs.dir.path().join("second-cert.pem");
    std::fs::copy(certs.cert(), &second_cert).unwrap();

    // Garbage in place of the certificate: the reloader sees the change
    // within a second, fails to parse it, and keeps the pair it has. Watch
    // for three seconds that every handshake still presents gw-test-2.
    let broken = certs.dir.path().join("broken.pem");
    std::fs::write(&broken, "this is not a PEM certificate\n").unwrap();
    std::fs::rename(&broken, certs.cert()).unwrap();
    let until = Instant::now() + Duration::from_secs(3);
    let mut checks = 0;
    while Instant::now() < until {
        assert_eq!(
            presented_subject(gw.tls).await,
            Ok(subject("gw-test-2")),
            "a broken certificate file replaced the served pair"
        );
        assert_echo_over_tls(&gw, &second_cert, &format!("broken file, check {checks}")).await;
        checks += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(checks >= 3, "only {checks} checks in 3 s");

    // The reloader is still at work: a good pair after the broken one is
    // picked up.
    certs.replace("gw-test-3").await;
    wait_for_subject(gw.tls, "gw-test-3", Duration::from_secs(10)).await;
    assert_echo_over_tls(&gw, &certs.cert(), "after the repair").await;
    // The plain listener was never affected.
    let plain = post(&gw.gw.url(PREDICT), "plain", &[]).await;
    assert_eq!(plain.status, 200, "{plain:?}");
}

/// `gateway check` names `listeners.tls.key` and the line of the table
/// that lacks it, and exits 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_a_tls_listener_without_a_key() {
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(
        file.path(),
        "[listeners]\npredict = \"127.0.0.1:18080\"\n\n[listeners.tls]\naddress = \"127.0.0.1:18443\"\ncert = \"cert.pem\"\n",
    )
    .unwrap();
    let mut check = Command::new(env!("CARGO_BIN_EXE_gateway"));
    check.arg("check").arg("--config").arg(file.path());
    let out = run(check).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let name = file.path().display().to_string();
    let error = stdout
        .lines()
        .find(|l| l.contains("listeners.tls.key"))
        .unwrap_or_else(|| panic!("no error names listeners.tls.key: {stdout}"));
    assert!(
        error.starts_with(&format!("{name}:4:")),
        "the error points at line 4, `[listeners.tls]`: {error}"
    );
    assert!(error.contains("`key` is missing"), "{error}");
    assert!(
        !stdout.contains("listeners.tls.cert"),
        "cert is given: {stdout}"
    );
    assert!(stdout.contains("1 error(s)"), "{stdout}");
}

/// `gateway serve` with a certificate file that does not exist exits
/// non-zero at once, naming the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_a_missing_certificate_exits_naming_the_file() {
    let certs = Certs::new().await;
    let missing = certs.dir.path().join("missing-cert.pem");
    let text = format!(
        "[listeners]\npredict = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\n[listeners.tls]\naddress = \"127.0.0.1:0\"\ncert = \"{}\"\nkey = \"{}\"\n",
        missing.display(),
        certs.key().display()
    );
    let config = certs.dir.path().join("gateway.toml");
    std::fs::write(&config, text).unwrap();
    let mut gateway = testkit::gateway::spawn(&config, &Launch::default());
    let status = tokio::task::block_in_place(|| gateway.wait_exit(Duration::from_secs(20)))
        .expect("the gateway is still running without its certificate");
    let stderr = gateway.stderr();
    assert!(!status.success(), "exited with {status}: {stderr}");
    assert!(
        stderr.contains(&missing.display().to_string()),
        "the error names {}: {stderr}",
        missing.display()
    );
    assert_eq!(
        stderr.matches(&missing.display().to_string()).count(),
        1,
        "the cause is said once: {stderr}"
    );
}
