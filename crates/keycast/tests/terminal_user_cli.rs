//! `keycast terminal` as a user runs it, with a configuration file: real `keycast serve bsf` and
//! `keycast serve bsm` processes on loopback, a card file made by `keycast card new`, and the
//! terminal's account commands in separate processes, so that everything carried from one run to
//! the next goes through the card file and the terminal state file.
//!
//! subscribe → status shows the purchase and the key → a second run reuses the saved B-TID (the
//! BSF counted one bootstrap) → unsubscribe (the BSM pushes the invalidation to the terminal's
//! LTKM listener) → status shows the key invalidated → buy tokens → deregister.

mod served;

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use served::stack::{
    ADMIN, BSF_HOST, FQDN, IMPI, apply_catalogue_with_group1, bsf_with_set1_as, http, set1_card, write_secret,
};
use served::{Served, free_port};

fn keycast(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_keycast")).args(args).env("RUST_LOG", "info").output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `keycast terminal --config CONFIG ARGS… --json`, parsed.
fn terminal(config: &Path, args: &[&str]) -> Value {
    let mut all = vec!["terminal", "--config", config.to_str().unwrap()];
    all.extend_from_slice(args);
    all.push("--json");
    let (ok, out, err) = keycast(&all);
    assert!(ok, "terminal {args:?} failed:\n{out}\n{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"))
}

fn metric(port: u16, name: &str) -> String {
    let text = http(port, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    text.lines().filter(|l| l.starts_with(name)).collect::<Vec<_>>().join("\n")
}

/// The keys of Key Group 1 in a status answer.
fn group1_keys(status: &Value) -> Vec<Value> {
    status["key_groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["key_group"] == 1)
        .flat_map(|g| g["keys"].as_array().unwrap().clone())
        .collect()
}

/// The BSF (test set 1's subscriber with `gba_type`), a BSM with a catalogue (a monthly
/// subscription and view tokens on the news service, Key Group 1 with a live key) pushing to
/// the terminal's LTKM port, a card file from `keycast card new`, and a terminal configuration
/// (`extra` appended to its top-level keys).
struct Stack {
    bsf: Served,
    bsf_metrics: u16,
    bsm: Served,
    bsm_port: u16,
    config: std::path::PathBuf,
}

fn stack(d: &Path, gba_type: &str, extra: &str) -> Stack {
    let (bsf, bsf_port, bsf_metrics) = bsf_with_set1_as(d, gba_type);

    // The BSM, with a catalogue and a live key in Key Group 1.
    let (bsm_port, admin_port, bsm_metrics) = (free_port(), free_port(), free_port());
    // The terminal's LTKM socket: a free port, which the BSM pushes to (`[push] oma_bcast_port`).
    let ltkm_port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    write_secret(&d.join("storage.key"), "000102030405060708090a0b0c0d0e0f\n");
    write_secret(&d.join("ua.secret"), &format!("{}\n", "ab".repeat(32)));
    write_secret(&d.join("admin.token"), &format!("{ADMIN}\n"));
    let bsm_config = d.join("bsm.toml");
    fs::write(
        &bsm_config,
        format!(
            "fqdn = \"{FQDN}\"\nlisten = \"127.0.0.1:{bsm_port}\"\nstorage_key_file = \"storage.key\"\n\
             ua_secret_file = \"ua.secret\"\n[bsf]\naddress = \"127.0.0.1:{bsf_port}\"\nhost = \"{BSF_HOST}\"\n\
             token_file = \"zn.token\"\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\ntoken_file = \"admin.token\"\n\
             [push]\noma_bcast_port = {ltkm_port}\n[metrics]\nlisten = \"127.0.0.1:{bsm_metrics}\"\n"
        ),
    )
    .unwrap();
    let bsm = Served::start(
        &["serve", "bsm", "--config", bsm_config.to_str().unwrap()],
        d.join("bsm.log"),
        &[bsm_port, admin_port, bsm_metrics],
    );
    apply_catalogue_with_group1(
        d,
        &bsm_config,
        "[[service]]\nid = \"news\"\nname = \"News\"\nmcc = \"001\"\nmnc = \"01\"\nkey_group = 1\nstreaming = true\n\
         [[purchase_item]]\nid = \"all\"\nname = \"All\"\nservices = [\"news\"]\n\
         [[purchase_item]]\nid = \"news-tokens\"\nname = \"News by the view\"\nservices = [\"news\"]\n\
         [[offer]]\nid = \"all-month\"\nitem = \"all\"\namount = \"9.99\"\ncurrency = \"EUR\"\nkind = \"subscription\"\n\
         period_secs = 2592000\n\
         [[offer]]\nid = \"five-views\"\nitem = \"news-tokens\"\namount = \"1.00\"\ncurrency = \"EUR\"\nkind = \"tokens\"\n\
         tokens = 5\nperiod_secs = 86400\n",
    );

    // The card and the terminal configuration.
    set1_card(&d.join("card.kc"));
    let config = d.join("terminal.toml");
    fs::write(
        &config,
        format!(
            "card = \"card.kc\"\nstate = \"terminal.state\"\n{extra}[bsf]\nurl = \"http://127.0.0.1:{bsf_port}\"\n\
             host = \"{BSF_HOST}\"\n[bsm]\nurl = \"http://127.0.0.1:{bsm_port}\"\nfqdn = \"{FQDN}\"\n\
             ltkm_listen = \"127.0.0.1:{ltkm_port}\"\n"
        ),
    )
    .unwrap();
    Stack { bsf, bsf_metrics, bsm, bsm_port, config }
}

#[test]
fn subscribe_status_restart_unsubscribe_buy_deregister() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let Stack { mut bsf, bsf_metrics, mut bsm, bsm_port, config } = stack(d, "gba-u", "");

    // The Service Guide the BSM publishes from its catalogue: the offer to subscribe to, with its
    // price, and that it is bought from the terminal (no portal).
    let services = terminal(&config, &["services"]);
    let offers: Vec<&Value> =
        services["services"].as_array().unwrap().iter().flat_map(|s| s["offers"].as_array().unwrap()).collect();
    let month = offers.iter().find(|o| o["offer"] == "all-month").unwrap_or_else(|| panic!("{services:#}"));
    assert_eq!(month["item"], "all", "{services:#}");
    assert!(!month["prices"].as_array().unwrap().is_empty(), "{services:#}");
    assert!(month["portal"].is_null(), "{services:#}");

    // Subscribe: bootstrap, Service Request, the key into the card, the state saved.
    let sub = terminal(&config, &["subscribe", "--item", "all", "--offer", "all-month"]);
    assert_eq!(sub["bootstrapped"], true, "{sub:#}");
    assert_eq!(sub["answer"]["status"], 0, "{sub:#}");
    assert!(sub["answer"]["ltkms_taken"].as_u64().unwrap() >= 1, "{sub:#}");
    let b_tid = sub["b_tid"].as_str().unwrap().to_owned();
    let state_file = d.join("terminal.state");
    assert_eq!(fs::metadata(&state_file).unwrap().permissions().mode() & 0o777, 0o600);

    let status = terminal(&config, &["status"]);
    assert_eq!(status["card"]["impi"], IMPI);
    assert_eq!(status["bootstrap"]["b_tid"], b_tid.as_str());
    assert_eq!(status["bootstrap"]["valid"], true);
    assert_eq!(status["purchases"][0]["item"], "all", "{status:#}");
    assert_eq!(status["purchases"][0]["offer"], "all-month");
    let keys = group1_keys(&status);
    assert!(!keys.is_empty() && keys.iter().all(|k| k["invalidated"] == false), "{status:#}");
    // No key bytes: the status names no SEK/PEK and the text form neither.
    let (ok, text, _) = keycast(&["terminal", "--config", config.to_str().unwrap(), "status"]);
    assert!(ok && text.contains("1 purchases") && text.contains("usable"), "{text}");

    // A second process: register; the saved B-TID is used, no new bootstrap.
    let reg = terminal(&config, &["register"]);
    assert_eq!(reg["bootstrapped"], false, "{reg:#}");
    assert_eq!(reg["b_tid"], b_tid.as_str());
    assert_eq!(reg["answer"]["status"], 0, "{reg:#}");
    let boots = metric(bsf_metrics, "keycast_bsf_bootstraps_total");
    assert!(boots.contains("keycast_bsf_bootstraps_total{gba_type=\"gba-u\"} 1"), "{boots}");
    let status = terminal(&config, &["status"]);
    assert_eq!(status["registration"]["bsm"], format!("127.0.0.1:{bsm_port}"), "{status:#}");

    // Unsubscribe: the purchase goes, the BSM pushes the invalidation to the listener.
    let unsub = terminal(&config, &["unsubscribe", "--item", "all", "--wait", "5"]);
    assert_eq!(unsub["bootstrapped"], false);
    assert_eq!(unsub["answer"]["status"], 0, "{unsub:#}");
    assert!(unsub["pushed_ltkms"].as_u64().unwrap() >= 1, "{unsub:#}\n{}", bsm.log_text());
    let status = terminal(&config, &["status"]);
    assert_eq!(status["purchases"].as_array().unwrap().len(), 0, "{status:#}");
    let keys = group1_keys(&status);
    assert!(keys.iter().any(|k| k["invalidated"] == true), "{status:#}");

    // Tokens for the current key of Key Group 1 (Key Domain from the card's record).
    let buy = terminal(&config, &["buy", "--item", "news-tokens", "--group", "1", "--tokens", "5"]);
    assert_eq!(buy["answer"]["status"], 0, "{buy:#}");
    assert!(buy["answer"]["ltkms_taken"].as_u64().unwrap() >= 1, "{buy:#}");
    let status = terminal(&config, &["status"]);
    assert!(group1_keys(&status).iter().any(|k| k["views_left"] == 5 && k["invalidated"] == false), "{status:#}");

    // Deregister: the registration is forgotten.
    let dereg = terminal(&config, &["deregister"]);
    assert_eq!(dereg["bootstrapped"], false, "{dereg:#}");
    let status = terminal(&config, &["status"]);
    assert!(status["registration"].is_null(), "{status:#}");
    let boots = metric(bsf_metrics, "keycast_bsf_bootstraps_total");
    assert!(boots.contains("keycast_bsf_bootstraps_total{gba_type=\"gba-u\"} 1"), "{boots}");

    // A corrupted state file is refused, not silently replaced.
    let mut bytes = fs::read(&state_file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&state_file, &bytes).unwrap();
    let (ok, _, err) = keycast(&["terminal", "--config", config.to_str().unwrap(), "status"]);
    assert!(!ok && err.contains("checksum"), "{err}");

    assert!(bsm.terminate().success());
    assert!(bsf.terminate().success());
}

/// A GBA_ME terminal (`gba = "gba-me"`): the card runs AKA in its 3G context only; Ks, the SMK
/// and the SEK/PEKs live in the ME's key store file, which carries them from one process to the
/// next like the card file does for GBA_U.
#[test]
fn gba_me_terminal_keeps_its_keys_in_the_me_key_store() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let Stack { mut bsf, bsf_metrics, mut bsm, config, .. } = stack(d, "gba-me", "gba = \"gba-me\"\n");
    let me_store = d.join("card.kc.me");

    let sub = terminal(&config, &["subscribe", "--item", "all", "--offer", "all-month"]);
    assert_eq!(sub["bootstrapped"], true, "{sub:#}");
    assert_eq!(sub["answer"]["status"], 0, "{sub:#}\n{}", bsm.log_text());
    assert!(sub["answer"]["ltkms_taken"].as_u64().unwrap() >= 1, "{sub:#}");
    let b_tid = sub["b_tid"].as_str().unwrap().to_owned();
    let boots = metric(bsf_metrics, "keycast_bsf_bootstraps_total");
    assert!(boots.contains("keycast_bsf_bootstraps_total{gba_type=\"gba-me\"} 1"), "{boots}");
    assert_eq!(fs::metadata(&me_store).unwrap().permissions().mode() & 0o777, 0o600);

    // The key is in the ME's store, not in the card.
    let status = terminal(&config, &["status"]);
    assert_eq!(status["gba"], "gba-me", "{status:#}");
    assert!(status["me_store"].as_str().unwrap().ends_with("card.kc.me"), "{status:#}");
    assert!(group1_keys(&status).iter().any(|k| k["invalidated"] == false), "{status:#}");
    let (ok, shown, err) = keycast(&["card", "show", "--file", d.join("card.kc").to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(!shown.contains("Key Group 1") && !shown.contains(&b_tid), "the card holds no MBMS key:\n{shown}");

    // A second process: the B-TID is reused, because the ME's store kept Ks for it.
    let reg = terminal(&config, &["register"]);
    assert_eq!((reg["bootstrapped"].clone(), reg["b_tid"].clone()), (Value::Bool(false), Value::from(b_tid.as_str())));
    assert_eq!(reg["answer"]["status"], 0, "{reg:#}");
    let boots = metric(bsf_metrics, "keycast_bsf_bootstraps_total");
    assert!(boots.contains("keycast_bsf_bootstraps_total{gba_type=\"gba-me\"} 1"), "{boots}");

    // The pushed invalidation reaches the store of a later process.
    let unsub = terminal(&config, &["unsubscribe", "--item", "all", "--wait", "5"]);
    assert_eq!(unsub["answer"]["status"], 0, "{unsub:#}");
    assert!(unsub["pushed_ltkms"].as_u64().unwrap() >= 1, "{unsub:#}\n{}", bsm.log_text());
    let status = terminal(&config, &["status"]);
    assert!(group1_keys(&status).iter().any(|k| k["invalidated"] == true), "{status:#}");

    // The card's secure channel is a GBA_U matter: refused with the reason, nothing changed.
    let before = fs::read(&me_store).unwrap();
    let (ok, _, err) = keycast(&["terminal", "--config", config.to_str().unwrap(), "protect"]);
    assert!(!ok && err.contains("needs GBA_U") && err.contains("--no-channel"), "{err}");
    assert_eq!(fs::read(&me_store).unwrap(), before);

    // A damaged store is refused, never replaced by an empty one.
    let mut bytes = before;
    bytes[30] ^= 1;
    fs::write(&me_store, &bytes).unwrap();
    let (ok, _, err) = keycast(&["terminal", "--config", config.to_str().unwrap(), "register"]);
    assert!(!ok && err.contains("GBA_ME key store") && err.contains("checksum"), "{err}");
    assert_eq!(fs::read(&me_store).unwrap(), bytes);

    assert!(bsm.terminate().success());
    assert!(bsf.terminate().success());
}
