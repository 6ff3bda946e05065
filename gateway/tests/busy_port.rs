//! `gateway serve` when a listener's address is taken: it names the
//! listener and the address and exits 1 at once, before its "serving" line
//! (as nginx does), instead of Pingora's "is in use, will try again" once a
//! second. Connections a previous run left in TIME_WAIT do not count as
//! taken. Real processes: each gateway is killed by its pid at the end.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use testkit::gateway::{Serving, free_addr, serve_text};
use testkit::{KEY, key_entry};

/// How long a gateway whose port is taken may take to exit.
const EXIT_LIMIT: Duration = Duration::from_secs(3);

/// A config with these listeners, the test key and `[server]` threads = 2.
fn config(predict: SocketAddr, admin: SocketAddr, tls: &str) -> String {
    format!(
        "[listeners]\npredict = \"{predict}\"\nadmin = \"{admin}\"\n{tls}\n[server]\nthreads = 2\n\n{}",
        key_entry(KEY, "test", "\"all\"")
    )
}

/// Waits for the gateway to exit and checks that it exited with 1, printing
/// `cannot listen for {listener} on {address}` and the remedy, and nothing
/// of serving or of Pingora's retries.
fn assert_refused(mut gw: Serving, listener: &str, setting: &str, address: SocketAddr) {
    let status = gw.proc.wait_exit(EXIT_LIMIT);
    let log = gw.log();
    let status = status.unwrap_or_else(|| {
        panic!("still running {EXIT_LIMIT:?} after start with {listener}'s port taken:\n{log}")
    });
    assert_eq!(status.code(), Some(1), "{log}");
    let expected = format!(
        "error: cannot listen for {listener} on {address}: Address already in use (os error 98); another process holds it: stop it or change {setting}"
    );
    assert!(log.contains(&expected), "expected `{expected}` in:\n{log}");
    assert!(!log.contains("serving"), "{log}");
    assert!(!log.contains("will try again"), "{log}");
}

#[test]
fn predict_address_in_use_exits_1_naming_predict_and_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let predict = taken.local_addr().unwrap();
    let gw = serve_text(&config(predict, free_addr(), ""));
    assert_refused(gw, "predict", "[listeners] predict", predict);
    // The test's listener is untouched.
    drop(TcpStream::connect(predict).expect("the holder still listens"));
}

#[test]
fn admin_address_in_use_exits_1_naming_admin_and_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = taken.local_addr().unwrap();
    let predict = free_addr();
    let gw = serve_text(&config(predict, admin, ""));
    assert_refused(gw, "admin", "[listeners] admin", admin);
}

#[tokio::test]
async fn tls_address_in_use_exits_1_naming_tls_and_the_address() {
    let certs = testkit::tls::Certs::new().await;
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    let tls = format!(
        "\n[listeners.tls]\naddress = \"{address}\"\ncert = {:?}\nkey = {:?}\n",
        path(&certs.cert()),
        path(&certs.key())
    );
    let predict = free_addr();
    let gw = serve_text(&config(predict, free_addr(), &tls));
    tokio::task::spawn_blocking(move || {
        assert_refused(gw, "TLS", "[listeners.tls] address", address);
    })
    .await
    .unwrap();
}

/// A path as TOML string content.
fn path(p: &Path) -> String {
    p.to_str().expect("a UTF-8 temp path").to_owned()
}

/// The port's last connection sits in TIME_WAIT on the listening side
/// (which closed first) after its listener closed: a plain `bind` is
/// refused there, Pingora's (with `SO_REUSEADDR`) is not, and neither is
/// the start-up check, so a gateway restarted at once comes up.
#[test]
fn time_wait_leftovers_on_the_predict_port_do_not_block_the_start() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let predict = listener.local_addr().unwrap();
    let mut client = TcpStream::connect(predict).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    drop(accepted);
    let mut rest = Vec::new();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client.read_to_end(&mut rest).expect("the server's FIN");
    drop(client);
    drop(listener);

    let plain = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let refused = plain.bind(&predict.into()).expect_err(
        "a bind without SO_REUSEADDR is refused over TIME_WAIT (else this test proves nothing)",
    );
    assert_eq!(refused.kind(), std::io::ErrorKind::AddrInUse);
    drop(plain);

    let admin = free_addr();
    let mut gw = serve_text(&config(predict, admin, ""));
    let ready = gw.ready();
    let log = gw.log();
    let ready = ready.unwrap_or_else(|e| panic!("the gateway did not become ready: {e}"));
    assert_eq!((ready.predict, ready.admin), (predict, admin));
    assert!(log.contains(&format!("predict on {predict}")), "{log}");
    assert!(!log.contains("cannot listen"), "{log}");
}
