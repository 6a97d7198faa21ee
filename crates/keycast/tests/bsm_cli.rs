//! `keycast serve bsm` on a configuration in a temporary directory: it serves the provisioning
//! interface behind HTTP Digest (an unauthenticated request gets the P-7 challenge), answers
//! `/metrics` and the admin API (token from loopback), refuses a request whose Zn lookup cannot
//! reach the BSF with 503, and stops cleanly on SIGTERM. The full Digest + Zn exchange with a real BSF is exercised in keycast-bsm's
//! `provisioning_http` and `ua_zn` tests.

mod served;

use std::fs;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use served::{Served, free_port};

const FQDN: &str = "bmsc.example.org";

fn write_secret(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

/// One HTTP/1.1 request on a fresh connection; the whole answer as text.
fn http(port: u16, request: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn serve_bsm_challenges_serves_metrics_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    write_secret(&dir.path().join("storage.key"), "000102030405060708090a0b0c0d0e0f\n");
    write_secret(&dir.path().join("ua.secret"), &format!("{}\n", "ab".repeat(32)));
    write_secret(&dir.path().join("zn.token"), "a-zn-token-of-some-length\n");
    write_secret(&dir.path().join("admin.token"), "an-admin-token-for-the-test\n");
    let (port, metrics_port, admin_port, dead_bsf) = (free_port(), free_port(), free_port(), free_port());
    let config = dir.path().join("bsm.toml");
    fs::write(
        &config,
        format!(
            "fqdn = \"{FQDN}\"\nlisten = \"127.0.0.1:{port}\"\nstorage_key_file = \"storage.key\"\n\
             ua_secret_file = \"ua.secret\"\n[bsf]\naddress = \"127.0.0.1:{dead_bsf}\"\nhost = \"bsf.example.org\"\n\
             token_file = \"zn.token\"\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\
             [admin]\nlisten = \"127.0.0.1:{admin_port}\"\ntoken_file = \"admin.token\"\n"
        ),
    )
    .unwrap();
    let args = ["serve", "bsm", "--config", config.to_str().unwrap()];
    let mut served = Served::start(&args, dir.path().join("serve.log"), &[port, metrics_port, admin_port]);

    let body = "<x/>";
    let unauthenticated = http(
        port,
        &format!(
            "POST /sprov HTTP/1.1\r\nHost: {FQDN}\r\nUser-Agent: keycast-test 3gpp-gba\r\n\
             Content-Type: application/vnd.oma.bcast.sprov+xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(unauthenticated.starts_with("HTTP/1.1 401"), "{unauthenticated}");
    let challenge = unauthenticated.lines().find(|l| l.to_ascii_lowercase().starts_with("www-authenticate:")).unwrap();
    assert!(challenge.contains(&format!("realm=\"3GPP-bootstrapping@{FQDN}\"")), "{challenge}");
    assert!(challenge.contains("qop=\"auth,auth-int\""), "{challenge}");

    // A well-formed answer to that challenge for some B-TID: the keys must come from the BSF,
    // which is not there, so the BSM answers 503 instead of guessing.
    let nonce = challenge.split("nonce=\"").nth(1).unwrap().split('"').next().unwrap();
    let authorization = format!(
        "Digest username=\"AAAAAAAAAAAAAAAAAAAAAA==@bsf.example.org\", realm=\"3GPP-bootstrapping@{FQDN}\", \
         nonce=\"{nonce}\", uri=\"/sprov\", response=\"00000000000000000000000000000000\", algorithm=MD5, \
         qop=auth, nc=00000001, cnonce=\"0a4f113b\""
    );
    let no_bsf = http(
        port,
        &format!(
            "POST /sprov HTTP/1.1\r\nHost: {FQDN}\r\nUser-Agent: 3gpp-gba\r\nAuthorization: {authorization}\r\n\
             Content-Type: application/vnd.oma.bcast.sprov+xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(no_bsf.starts_with("HTTP/1.1 503"), "{no_bsf}");

    let metrics = http(metrics_port, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(metrics.starts_with("HTTP/1.1 200") && metrics.contains("keycast_bsm_ua_requests_total"), "{metrics}");

    // The admin API: the catalogue through it, and no way in without the token.
    let service = r#"{"name":"News","mcc":"001","mnc":"01","key_group":1,"streaming":true}"#;
    let put = http(
        admin_port,
        &format!(
            "PUT /admin/v1/services/news HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer an-admin-token-for-the-test\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{service}",
            service.len()
        ),
    );
    assert!(put.starts_with("HTTP/1.1 204"), "{put}");
    let list = http(
        admin_port,
        "GET /admin/v1/services HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer an-admin-token-for-the-test\r\n\
         Connection: close\r\n\r\n",
    );
    assert!(list.starts_with("HTTP/1.1 200") && list.contains(r#""id":"news""#), "{list}");
    let anonymous = http(admin_port, "GET /admin/v1/services HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(anonymous.starts_with("HTTP/1.1 401"), "{anonymous}");

    // `keycast bsm …` over the same API: a catalogue file, listings, a key rollover.
    let catalogue = dir.path().join("catalogue.toml");
    fs::write(
        &catalogue,
        "[[service]]\nid = \"sport\"\nname = \"Sport\"\nmcc = \"001\"\nmnc = \"01\"\nkey_group = 2\nstreaming = true\n\
         [[purchase_item]]\nid = \"all\"\nname = \"All\"\nservices = [\"news\", \"sport\"]\n\
         [[offer]]\nid = \"all-month\"\nitem = \"all\"\namount = \"9.99\"\ncurrency = \"EUR\"\nkind = \"subscription\"\n\
         period_secs = 2592000\n",
    )
    .unwrap();
    let bsm = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_keycast"))
            .args(["bsm", "--config", config.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = bsm(&["apply", catalogue.to_str().unwrap()]);
    assert!(ok && out.contains("applied 3 catalogue entries"), "{out}{err}");
    let (ok, out, _) = bsm(&["show", "services"]);
    assert!(ok && out.lines().count() == 3 && out.contains("sport") && out.contains("news"), "{out}");
    let (ok, out, _) = bsm(&["show", "offers", "--json"]);
    assert!(ok && out.contains(r#""id":"all-month""#), "{out}");
    let rollover = [
        "rollover",
        "--group",
        "2",
        "--mcc",
        "001",
        "--mnc",
        "01",
        "--key-lifetime-secs",
        "86400",
        "--lead-secs",
        "3600",
    ];
    let (ok, out, err) = bsm(&rollover);
    assert!(ok && out.contains(r#""key_number":1"#), "{out}{err}");
    let (ok, out, _) = bsm(&rollover);
    assert!(ok && out.contains("no key due in Key Group 2"), "{out}");
    let (ok, out, _) = bsm(&["keys", "--group", "2"]);
    assert!(ok && out.lines().count() == 2, "{out}");
    let bad = dir.path().join("bad.toml");
    fs::write(&bad, "[[purchase_item]]\nid = \"x\"\nname = \"X\"\nservices = [\"nowhere\"]\n").unwrap();
    let (ok, _, err) = bsm(&["apply", bad.to_str().unwrap()]);
    assert!(!ok && err.contains("\"x\"") && err.contains("404"), "{err}");

    let status = served.terminate();
    let log = served.log_text();
    assert!(status.success(), "{status}:\n{log}");
    for expected in ["BSM serving", "shutting down", "BSM stopped"] {
        assert!(log.contains(expected), "{expected:?} not in the log:\n{log}");
    }
    assert!(
        !log.contains("a-zn-token") && !log.contains("an-admin-token") && !log.contains(&"ab".repeat(32)),
        "no secret in the log:\n{log}"
    );
}

/// `keycast bench rollover` on a small population: every subscriber's row persisted and LTKM
/// built, with the figures printed.
#[test]
fn bench_rollover_queues_every_subscriber_and_reports() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keycast"))
        .args(["bench", "rollover", "--subscribers", "3001", "--page", "1000"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("rollover sqlite: 3001 subscribers") && text.contains("3001 rows persisted"), "{text}");
    assert!(text.contains("VmHWM"), "{text}");
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_keycast"))
        .args(["bench", "rollover", "--subscribers", "0"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
}
