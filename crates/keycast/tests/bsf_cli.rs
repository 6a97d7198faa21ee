//! `keycast bsf subscriber add|import|show|delete` and `keycast serve bsf` on a configuration in
//! a temporary directory (SQLite store), including a real GBA_U bootstrap with the emulated card
//! (Milenage test set 1) against the served BSF, Zn by loopback token and `/metrics`.

mod served;

use std::fs;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::time::Duration;

use served::{Served, free_port};

use assert_cmd::Command;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keycast_card::usim::{Usim, UsimIdentity};
use keycast_card::{ApduCard, Emulator};
use keycast_crypto::gba::NafId;
use keycast_crypto::keys::{Opc, SubscriberKey};
use keycast_crypto::milenage::sqn_from_u64;
use keycast_gba::bsf::SeededRandom;
use keycast_gba::client::http::{HttpClient, RetryPolicy, UbTransport as _, bootstrap};
use keycast_gba::client::{BootstrapConfig, GbaMode, HttpRequest, HttpResponse};
use keycast_provisioning::time::UtcTime;
use predicates::prelude::PredicateBooleanExt as _;
use predicates::str::contains;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use serde_json::Value;
use tempfile::TempDir;

/// Milenage test set 1 (TS 35.208 §4.3).
const K: &str = "465b5ce8b199b49faa5f0a2ee238a6bc";
const OP: &str = "cdc202d5123e20f62b6d676ac72cb318";
const OPC: &str = "cd63cb71954a9f4e48a5994e37a02baf";
/// SQN of set 1.
const SQN1: u64 = 0xff9b_b4d0_b607;
const IMPI: &str = "001010000000001@ims.mnc001.mcc001.3gppnetwork.org";
const IMSI: &str = "001010000000001";
const DOMAIN: &str = "bsf.example.org";
const BSM: &str = "bmsc.example.org";
const STORAGE_KEY: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
const SERVER_SECRET: &str = "c0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ff";
const ZN_TOKEN: &str = "bsm-zn-token-8c1f0e5d2b7a4936";

fn keycast() -> Command {
    Command::cargo_bin("keycast").unwrap()
}

fn write_secret(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

/// A configuration directory: storage key, server secret, Zn token and `bsf.toml`.
struct Env {
    dir: TempDir,
    config: PathBuf,
}

impl Env {
    /// `extra` is appended to the minimal configuration (top-level keys first, then tables).
    fn new(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        write_secret(&dir.path().join("storage.key"), &format!("{STORAGE_KEY}\n"));
        write_secret(&dir.path().join("server.secret"), &format!("{SERVER_SECRET}\n"));
        write_secret(&dir.path().join("bsm.token"), &format!("{ZN_TOKEN}\n"));
        let config = dir.path().join("bsf.toml");
        fs::write(
            &config,
            format!(
                "domain = \"{DOMAIN}\"\nstorage_key_file = \"storage.key\"\nserver_secret_file = \"server.secret\"\n{extra}"
            ),
        )
        .unwrap();
        Env { dir, config }
    }

    fn config(&self) -> &str {
        self.config.to_str().unwrap()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn subscriber(&self, args: &[&str]) -> Command {
        let mut cmd = keycast();
        cmd.args(["bsf", "subscriber"]).args(args).args(["--config", self.config()]);
        cmd
    }

    fn add(&self, impi: &str, extra: &[&str], stdin: &str) -> assert_cmd::assert::Assert {
        let mut args = vec!["add", "--impi", impi, "--imsi", IMSI];
        args.extend_from_slice(extra);
        self.subscriber(&args).write_stdin(stdin).assert()
    }

    fn show_json(&self) -> Value {
        let out = self.subscriber(&["show", "--json"]).assert().success().get_output().stdout.clone();
        serde_json::from_slice(&out).unwrap()
    }

    fn count(&self) -> u64 {
        self.show_json()["count"].as_u64().unwrap()
    }
}

fn keys_stdin() -> String {
    format!("K={K}\nOPC={OPC}\n")
}

/// Fails when any key of the tests appears in `text`, in either case.
fn assert_no_secrets(text: &str) {
    let lower = text.to_ascii_lowercase();
    for secret in [K, OP, OPC, STORAGE_KEY, SERVER_SECRET, ZN_TOKEN] {
        assert!(!lower.contains(secret), "a secret ({}…) shows in:\n{text}", &secret[..6]);
    }
}

fn csv(rows: usize) -> String {
    let mut text = String::from("impi,imsi,k,opc,amf,gba_type,sqn\n");
    for i in 0..rows {
        let gba = if i % 2 == 0 { "gba-u" } else { "gba-me" };
        text.push_str(&format!("user{i:04}@ims.example.org,00101{i:010},{K},{OPC},8000,{gba},{:x}\n", i * 32));
    }
    text
}

// ---------------------------------------------------------------------------------------------
// bsf subscriber …

#[test]
fn add_via_stdin_and_keys_file_then_show_never_shows_keys() {
    let env = Env::new("");
    let out = env.add(IMPI, &["--amf", "b9b9", "--sqn", "ff9bb4d0b5e7"], &keys_stdin()).success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(text.contains(IMPI) && text.contains("gba-u"), "{text}");
    assert_no_secrets(&text);

    // OP instead of OPc, from a keys file, GBA_ME.
    let keys = env.path("me.keys");
    write_secret(&keys, &format!("# set 1\nK={K}\nOP={OP}\n"));
    env.subscriber(&[
        "add",
        "--impi",
        "me@ims.example.org",
        "--imsi",
        "001010000000002",
        "--gba-type",
        "gba-me",
        "--keys-file",
        keys.to_str().unwrap(),
    ])
    .assert()
    .success();

    let out = env.subscriber(&["show"]).assert().success().get_output().clone();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(IMPI) && text.contains(IMSI) && text.contains("ff9bb4d0b5e7"), "{text}");
    assert!(text.contains("b9b9") && text.contains("gba-me") && text.contains("2 subscribers"), "{text}");
    assert_no_secrets(&text);
    assert_no_secrets(&String::from_utf8_lossy(&out.stderr));

    let v = env.show_json();
    assert_eq!(v["count"], 2);
    assert_no_secrets(&v.to_string());
    // Ordered by IMPI.
    assert_eq!(v["subscribers"][0]["impi"], IMPI);
    let me = &v["subscribers"][1];
    assert_eq!(me["impi"], "me@ims.example.org");
    assert_eq!(
        (me["gba_type"].as_str(), me["amf"].as_str(), me["sqn"].as_str()),
        (Some("gba-me"), Some("8000"), Some("000000000000"))
    );

    let out = env.subscriber(&["show", "--json", "--impi", IMPI]).assert().success().get_output().stdout.clone();
    let one: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        one,
        serde_json::json!({"impi": IMPI, "imsi": IMSI, "sqn": "ff9bb4d0b5e7", "amf": "b9b9", "gba_type": "gba-u"})
    );
    assert_no_secrets(&one.to_string());
    env.subscriber(&["show", "--impi", "nobody@ims.example.org"]).assert().failure().stderr(contains("no subscriber"));
}

#[test]
fn keys_on_the_command_line_are_refused() {
    let env = Env::new("");
    for flag in ["--k", "--op", "--opc"] {
        env.add(IMPI, &[flag, K], &keys_stdin()).failure().stderr(contains("never taken from the command line"));
    }
    env.add(IMPI, &[], &format!("K={K}\n")).failure().stderr(contains("OP or OPc missing"));
    env.add(IMPI, &[], &format!("K={K}\nOP={OP}\nOPC={OPC}\n")).failure().stderr(contains("not both"));
    env.add(IMPI, &[], &format!("K={}\nOPC={OPC}\n", &K[..30])).failure().stderr(contains("16 bytes"));
    assert_eq!(env.count(), 0);
}

#[test]
fn duplicate_add_is_refused_with_the_impi_named() {
    let env = Env::new("");
    env.add(IMPI, &[], &keys_stdin()).success();
    env.add(IMPI, &[], &keys_stdin()).failure().stderr(contains(format!("subscriber {IMPI} already exists")));
    assert_eq!(env.count(), 1);
}

#[test]
fn import_of_500_rows_then_show_counts_them() {
    let env = Env::new("");
    let file = env.path("subscribers.csv");
    fs::write(&file, csv(500)).unwrap();
    let out = env.subscriber(&["import", file.to_str().unwrap()]).assert().success().get_output().clone();
    assert!(String::from_utf8_lossy(&out.stdout).contains("imported 500 subscribers"));
    // Not a terminal: no progress bar on stderr.
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    let v = env.show_json();
    assert_eq!(v["count"], 500);
    let list = v["subscribers"].as_array().unwrap();
    assert_eq!(list[499]["impi"], "user0499@ims.example.org");
    assert_eq!(list[499]["sqn"], format!("{:012x}", 499 * 32));
    assert_eq!(list[1]["gba_type"], "gba-me");
    assert_no_secrets(&v.to_string());
}

#[test]
fn import_with_a_bad_row_names_its_line_and_imports_nothing() {
    let env = Env::new("");
    let file = env.path("bad.csv");
    let mut text = csv(100);
    // Line 58 (row 57): an IMSI with a letter.
    text = text.replace("user0056@ims.example.org,001010000000056", "user0056@ims.example.org,00101000000005x");
    fs::write(&file, &text).unwrap();
    env.subscriber(&["import", file.to_str().unwrap()])
        .assert()
        .failure()
        .stderr(contains("line 58: IMSI").and(contains("nothing imported")));
    assert_eq!(env.count(), 0);

    // A key of the wrong length, reported without echoing the key.
    let text = csv(3).replace(
        &format!("user0001@ims.example.org,001010000000001,{K}"),
        "user0001@ims.example.org,001010000000001,00112233",
    );
    fs::write(&file, &text).unwrap();
    let out = env.subscriber(&["import", file.to_str().unwrap()]).assert().failure().get_output().clone();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3") && err.contains("K must be 16 bytes"), "{err}");
    assert_no_secrets(&err);
    assert_eq!(env.count(), 0);

    // An IMPI twice in the file.
    let text = format!("{}user0001@ims.example.org,001010000000009,{K},{OPC},8000,gba-u,0\n", csv(3));
    fs::write(&file, &text).unwrap();
    env.subscriber(&["import", file.to_str().unwrap()])
        .assert()
        .failure()
        .stderr(contains("line 5: IMPI user0001@ims.example.org repeats line 3"));
    assert_eq!(env.count(), 0);
}

#[test]
fn import_of_an_impi_already_in_the_store_is_refused_and_imports_nothing() {
    let env = Env::new("");
    env.add("user0002@ims.example.org", &[], &keys_stdin()).success();
    let file = env.path("subscribers.csv");
    fs::write(&file, csv(10)).unwrap();
    env.subscriber(&["import", file.to_str().unwrap()]).assert().failure().stderr(
        contains("line 4: subscriber user0002@ims.example.org already exists").and(contains("nothing imported")),
    );
    assert_eq!(env.count(), 1);
}

#[test]
fn delete_removes_the_subscriber() {
    let env = Env::new("");
    env.add(IMPI, &[], &keys_stdin()).success();
    env.add("other@ims.example.org", &[], &keys_stdin()).success();
    env.subscriber(&["delete", "--impi", IMPI])
        .assert()
        .success()
        .stdout(contains(format!("deleted subscriber {IMPI}")));
    env.subscriber(&["show", "--impi", IMPI]).assert().failure().stderr(contains(format!("no subscriber {IMPI}")));
    env.subscriber(&["delete", "--impi", IMPI]).assert().failure().stderr(contains("no subscriber"));
    assert_eq!(env.count(), 1);
}

#[test]
fn wrong_storage_key_is_refused() {
    let env = Env::new("");
    env.add(IMPI, &[], &keys_stdin()).success();
    write_secret(&env.path("storage.key"), "00000000000000000000000000000000\n");
    env.subscriber(&["show"]).assert().failure().stderr(contains("storage key"));
}

// ---------------------------------------------------------------------------------------------
// Configuration refusals

#[test]
fn inline_secrets_and_unknown_keys_are_refused() {
    let cases: [(&str, &str); 6] = [
        (&format!("storage_key = \"{STORAGE_KEY}\"\n"), "inline secret `storage_key`"),
        (&format!("server_secret = \"{SERVER_SECRET}\"\n"), "inline secret `server_secret`"),
        (&format!("[[zn.tokens]]\nnaf = \"{BSM}\"\ntoken = \"{ZN_TOKEN}\"\n"), "inline secret `zn.tokens.token`"),
        ("lisen = \"127.0.0.1:8080\"\n", "unknown field `lisen`"),
        ("[metrics]\nlisten = \"127.0.0.1:9090\"\nenabled = true\n", "unknown field `enabled`"),
        ("[store]\nurl = \"postgres://bsf:hunter2-secret@localhost/bsf\"\n", "holds a password"),
    ];
    for (extra, expected) in cases {
        let env = Env::new(extra);
        for args in [&["bsf", "subscriber", "show"][..], &["serve", "bsf"][..]] {
            let out = keycast()
                .args(args)
                .args(["--config", env.config()])
                .timeout(Duration::from_secs(30))
                .assert()
                .failure()
                .stderr(contains(expected))
                .get_output()
                .clone();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_no_secrets(&err);
            assert!(!err.contains("hunter2"), "{err}");
        }
        assert!(!env.path("bsf.db").exists(), "no store is created from a refused configuration");
    }
}

// ---------------------------------------------------------------------------------------------
// serve bsf

/// The emulated card of set 1; it last saw an SQN just below set 1's.
fn card() -> ApduCard<Emulator> {
    let id = UsimIdentity { imsi: IMSI.into(), impi: IMPI.into(), iccid: "8900100000000000001".into() };
    let k = SubscriberKey::from_bytes(hex::decode(K).unwrap().try_into().unwrap());
    let opc = Opc::from_bytes(hex::decode(OPC).unwrap().try_into().unwrap());
    let mut usim = Usim::new(id, k, opc);
    usim.sqn_ms = sqn_from_u64(SQN1 - 7);
    ApduCard::new(Emulator::new(usim))
}

fn get(path: &str) -> HttpRequest {
    HttpRequest {
        method: "GET".into(),
        uri: path.into(),
        headers: vec![("Host".into(), "127.0.0.1".into())],
        body: Vec::new(),
    }
}

/// What one run against the served BSF gave.
struct Exchange {
    btid: String,
    zn: HttpResponse,
    metrics: String,
}

/// Bootstraps the emulated card through `ue`, asks Zn for the BSM's keys through `naf` (with the
/// bearer token when given) and scrapes `/metrics`.
fn exchange(mut ue: HttpClient, mut naf: HttpClient, token: Option<&str>, metrics_port: u16) -> Exchange {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), async {
            let mut card = card();
            let config = BootstrapConfig {
                bsf_host: DOMAIN.into(),
                impi: IMPI.into(),
                user_agent: "Keycast-test/0.1".into(),
                mode: GbaMode::GbaU,
            };
            let now = || {
                let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
                UtcTime::from_unix_seconds(secs).unwrap()
            };
            let mut rng = SeededRandom::new([0x33; 32]);
            let outcome = bootstrap(&mut ue, &config, &mut card, None, &now, &mut rng, RetryPolicy::default())
                .await
                .expect("bootstrap against serve bsf");
            assert_eq!(outcome.attempts, 1);
            let btid = outcome.bootstrapped.b_tid.clone();
            assert_eq!(card.read_gba_bp().unwrap().unwrap().b_tid.as_deref(), Some(btid.as_str()));

            let body = serde_json::json!({
                "btid": btid,
                "naf_id": STANDARD.encode(NafId::mbms(BSM).as_bytes()),
                "gba_u_aware": true,
            });
            let mut headers = vec![
                ("Host".to_owned(), DOMAIN.to_owned()),
                ("Content-Type".to_owned(), "application/json".to_owned()),
            ];
            if let Some(t) = token {
                headers.push(("Authorization".to_owned(), format!("Bearer {t}")));
            }
            let request = HttpRequest {
                method: "POST".into(),
                uri: "/zn/v1/naf-keys".into(),
                headers,
                body: body.to_string().into_bytes(),
            };
            let zn = naf.send(&request).await.unwrap();
            let mut scraper =
                HttpClient::plain(format!("127.0.0.1:{metrics_port}")).with_timeout(Duration::from_secs(10));
            let metrics = scraper.send(&get("/metrics")).await.unwrap();
            assert_eq!(metrics.status, 200);
            Exchange { btid, zn, metrics: String::from_utf8_lossy(&metrics.body).into_owned() }
        })
        .await
        .expect("the exchange ends in time")
    })
}

/// The checks common to both serving tests: B-TID form, Zn answer, counters.
fn check_exchange(x: &Exchange) {
    // B-TID = base64(RAND)@domain.
    let (rand, domain) = x.btid.split_once('@').unwrap();
    assert_eq!(domain, DOMAIN);
    assert_eq!(STANDARD.decode(rand).unwrap().len(), 16, "{}", x.btid);

    assert_eq!(x.zn.status, 200, "{:?}", x.zn);
    let v: Value = serde_json::from_slice(&x.zn.body).unwrap();
    assert_eq!((v["impi"].as_str(), v["gba_type"].as_str()), (Some(IMPI), Some("gba-u")));
    assert!(v["ks_ext_naf"].is_string() && v["ks_int_naf"].is_string(), "{v}");

    let text = &x.metrics;
    assert!(text.contains("keycast_bsf_bootstraps_total{gba_type=\"gba-u\"} 1"), "{text}");
    assert!(text.contains("keycast_bsf_challenges_total{known_impi=\"true\"} 1"), "{text}");
    assert!(text.contains("keycast_bsf_zn_answers_total{outcome=\"ok\"} 1"), "{text}");
}

/// Adds set 1's subscriber with OP (not OPc: the BSF must derive set 1's OPc) from a keys file;
/// the next vector carries set 1's SQN (step 32).
fn add_set1(env: &Env) {
    let keys = env.path("set1.keys");
    write_secret(&keys, &format!("K={K}\nOP={OP}\n"));
    let sqn = format!("{:x}", SQN1 - 32);
    let keys_file = keys.to_str().unwrap();
    env.add(IMPI, &["--amf", "b9b9", "--gba-type", "gba-u", "--sqn", &sqn, "--keys-file", keys_file], "").success();
}

#[test]
fn serve_bsf_bootstraps_the_emulated_card_then_answers_zn_and_counts_it() {
    let (port, metrics_port) = (free_port(), free_port());
    let env = Env::new(&format!(
        "listen = \"127.0.0.1:{port}\"\nfake_amf = \"b9b9\"\n\
         [zn]\nauthorised_nafs = [\"{BSM}\"]\n[[zn.tokens]]\nnaf = \"{BSM}\"\ntoken_file = \"bsm.token\"\n\
         [metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n[log]\nformat = \"json\"\n"
    ));
    add_set1(&env);

    let mut served =
        Served::start(&["serve", "bsf", "--config", env.config()], env.path("serve.log"), &[port, metrics_port]);
    let client = || HttpClient::plain(format!("127.0.0.1:{port}")).with_timeout(Duration::from_secs(10));
    let x = exchange(client(), client(), Some(ZN_TOKEN), metrics_port);
    check_exchange(&x);

    let status = served.terminate();
    let log = served.log_text();
    assert!(status.success(), "{status}:\n{log}");
    // JSON logs, one object per line; the run and the shutdown are in them; no secret is.
    let lines: Vec<Value> = log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("{l}"))).collect();
    let messages: Vec<&str> = lines.iter().filter_map(|l| l["message"].as_str()).collect();
    for expected in ["BSF serving", "ub", "zn", "shutting down", "BSF stopped"] {
        assert!(messages.contains(&expected), "{expected:?} not in {messages:?}");
    }
    assert!(log.contains(&x.btid), "{log}");
    assert_no_secrets(&log);

    // SQN_HE moved to set 1's SQN.
    env.subscriber(&["show", "--impi", IMPI]).assert().success().stdout(contains(format!("{SQN1:012x}")));
}

/// A test CA, the BSF's server certificate and the BSM's client certificate, as PEM files.
fn write_pki(env: &Env) -> (CertificateDer<'static>, Arc<rustls::ClientConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "Keycast test CA");
    let issuer = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let leaf = |name: &str, usage| {
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        (params.signed_by(&key, &issuer).unwrap(), key)
    };
    let (server, server_key) = leaf(DOMAIN, ExtendedKeyUsagePurpose::ServerAuth);
    fs::write(env.path("ca.pem"), issuer.pem()).unwrap();
    fs::write(env.path("server.pem"), server.pem()).unwrap();
    write_secret(&env.path("server.key"), &server_key.serialize_pem());

    let (bsm, bsm_key) = leaf(BSM, ExtendedKeyUsagePurpose::ClientAuth);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(issuer.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let naf = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![bsm.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(bsm_key.serialize_der())),
        )
        .unwrap();
    (issuer.der().clone(), Arc::new(naf))
}

#[test]
fn serve_bsf_over_tls_with_zn_over_mutual_tls() {
    let (port, metrics_port) = (free_port(), free_port());
    let env = Env::new(&format!(
        "listen = \"127.0.0.1:{port}\"\nfake_amf = \"b9b9\"\n\
         [tls]\ncert = \"server.pem\"\nkey = \"server.key\"\nnaf_client_ca = \"ca.pem\"\n\
         [store]\nurl = \"sqlite://subscribers.db\"\n\
         [zn]\nauthorised_nafs = [\"{BSM}\"]\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n"
    ));
    let (ca, naf_config) = write_pki(&env);
    add_set1(&env);
    assert!(env.path("subscribers.db").exists(), "the [store] url names the database");

    let mut served =
        Served::start(&["serve", "bsf", "--config", env.config()], env.path("serve.log"), &[port, metrics_port]);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let ue_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https = |config: Arc<rustls::ClientConfig>| {
        HttpClient::tls(format!("127.0.0.1:{port}"), ServerName::try_from(DOMAIN).unwrap(), config)
            .with_timeout(Duration::from_secs(10))
    };
    let x = exchange(https(Arc::new(ue_config)), https(naf_config), None, metrics_port);
    check_exchange(&x);

    let status = served.terminate();
    let log = served.log_text();
    assert!(status.success(), "{status}:\n{log}");
    assert!(log.contains("BSF serving") && log.contains("tls=true"), "{log}");
    assert_no_secrets(&log);
    assert!(!log.contains("PRIVATE KEY"), "{log}");
}

#[test]
fn serve_bsf_without_a_server_secret_file_is_refused() {
    let env = Env::new("");
    let config = fs::read_to_string(&env.config).unwrap().replace("server_secret_file = \"server.secret\"\n", "");
    fs::write(&env.config, config).unwrap();
    keycast()
        .args(["serve", "bsf", "--config", env.config()])
        .timeout(Duration::from_secs(30))
        .assert()
        .failure()
        .stderr(contains("server_secret_file` is required"));
}
