//! Issue 5's crash test: `keycast serve bsm` is killed with SIGKILL while a rollover campaign for
//! 100 000 registered subscribers is being queued, then started again on the same database. When
//! the campaign has ended, every subscriber has exactly one delivery of the new key (none lost,
//! none twice). Everything goes through the operator's interfaces: the catalogue, the subscribers
//! (bulk import) and the rollovers through `keycast bsm`, the progress and the outcome through the
//! admin API. Runs on SQLite, and on PostgreSQL when `KEYCAST_TEST_POSTGRES_URL` is set.

mod served;

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use served::{Served, free_port};

const SUBSCRIBERS: u32 = 100_000;
/// Small pages make the campaign long enough (about 200 transactions) to be killed in the middle.
const PAGE: u32 = 500;

fn write_secret(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

struct Bsm {
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
    ports: [u16; 3],
}

impl Bsm {
    fn new(store_url: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        write_secret(&dir.path().join("storage.key"), "000102030405060708090a0b0c0d0e0f\n");
        write_secret(&dir.path().join("ua.secret"), &format!("{}\n", "cd".repeat(32)));
        write_secret(&dir.path().join("zn.token"), "a-zn-token-of-some-length\n");
        write_secret(&dir.path().join("admin.token"), "an-admin-token-for-the-crash-test\n");
        let ports = [free_port(), free_port(), free_port()];
        let dead_bsf = free_port();
        let store = store_url.map(|u| format!("[store]\nurl = \"{u}\"\n")).unwrap_or_default();
        let config = dir.path().join("bsm.toml");
        fs::write(
            &config,
            format!(
                "fqdn = \"bmsc.example.org\"\nlisten = \"127.0.0.1:{}\"\nstorage_key_file = \"storage.key\"\n\
                 ua_secret_file = \"ua.secret\"\n{store}[bsf]\naddress = \"127.0.0.1:{dead_bsf}\"\n\
                 token_file = \"zn.token\"\n[metrics]\nlisten = \"127.0.0.1:{}\"\n\
                 [push]\nspread_secs = 3600\ncampaign_page = {PAGE}\n\
                 [admin]\nlisten = \"127.0.0.1:{}\"\ntoken_file = \"admin.token\"\n",
                ports[0], ports[1], ports[2]
            ),
        )
        .unwrap();
        fs::write(
            dir.path().join("catalogue.toml"),
            "[[service]]\nid = \"news\"\nname = \"News\"\nmcc = \"001\"\nmnc = \"01\"\nkey_group = 1\nstreaming = true\n\
             [[purchase_item]]\nid = \"basic\"\nname = \"Basic\"\nservices = [\"news\"]\n\
             [[offer]]\nid = \"basic-month\"\nitem = \"basic\"\namount = \"4.99\"\ncurrency = \"EUR\"\n\
             kind = \"subscription\"\nperiod_secs = 2592000\n",
        )
        .unwrap();
        Bsm { dir, config, ports }
    }

    fn serve(&self, run: usize) -> Served {
        let args = ["serve", "bsm", "--config", self.config.to_str().unwrap()];
        Served::start(&args, self.dir.path().join(format!("serve-{run}.log")), &self.ports)
    }

    /// `keycast bsm ARGS`; its standard output, or a panic with both outputs.
    fn bsm(&self, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_keycast"))
            .args(["bsm", "--config", self.config.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "keycast bsm {args:?} failed:\n{stdout}\n{stderr}");
        stdout.into_owned()
    }

    fn campaign(&self, id: u64) -> Value {
        let list: Value = serde_json::from_str(&self.bsm(&["campaigns", "--json"])).unwrap();
        list.as_array().unwrap().iter().find(|c| c["id"] == id).cloned().unwrap_or_else(|| panic!("no campaign {id}"))
    }
}

/// `GET /metrics` on the metrics listener.
fn metrics(port: u16) -> String {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn rollover(bsm: &Bsm) -> String {
    bsm.bsm(&[
        "rollover",
        "--group",
        "1",
        "--mcc",
        "001",
        "--mnc",
        "01",
        "--key-lifetime-secs",
        "100",
        "--lead-secs",
        "99",
        "--no-wait",
    ])
}

fn crash_during_campaign(store_url: Option<&str>) {
    let bsm = Bsm::new(store_url);
    let mut served = bsm.serve(1);
    bsm.bsm(&["apply", bsm.dir.path().join("catalogue.toml").to_str().unwrap()]);
    // Key 1 while nobody has subscribed: its campaign has nobody to serve.
    let made = rollover(&bsm);
    assert!(made.contains(r#""key_number":1"#), "{made}");

    let mut lines = String::with_capacity(SUBSCRIBERS as usize * 260);
    let (from, until) = (unix_now() - 60, unix_now() + 30 * 86_400);
    for n in 0..SUBSCRIBERS {
        let _ = writeln!(
            lines,
            r#"{{"impi":"00101{n:010}@ims.example.org","registration":{{"address":"127.{}.{}.{}:4000","interface":"oma-bcast","at":{from}}},"purchases":[{{"item":"basic","offer":"basic-month","kind":"subscription","from":{from},"until":{until}}}]}}"#,
            n / 62_500,
            n / 250 % 250,
            n % 250 + 1
        );
    }
    let import = bsm.dir.path().join("subscribers.jsonl");
    fs::write(&import, lines).unwrap();
    let out = bsm.bsm(&["import", import.to_str().unwrap()]);
    assert!(out.contains(&format!("imported {SUBSCRIBERS} subscribers")), "{out}");

    // Key 2 is due a second after key 1 (lifetime 100 s, lead 99 s).
    let deadline = Instant::now() + Duration::from_secs(10);
    let made = loop {
        let out = rollover(&bsm);
        if out.contains(r#""key_number":2"#) {
            break out;
        }
        assert!(Instant::now() < deadline, "key 2 never became due: {out}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let json = made.lines().find_map(|l| l.strip_prefix("made ")).unwrap();
    let id = serde_json::from_str::<Value>(json).unwrap()["campaign"].as_u64().unwrap();

    // Kill the BSM once the campaign has stored a few pages.
    let deadline = Instant::now() + Duration::from_secs(60);
    let at_kill = loop {
        let c = bsm.campaign(id);
        let done = c["terminals"].as_u64().unwrap();
        assert!(c.get("finished_at").is_none(), "the campaign ended before the kill; make the pages smaller: {c}");
        if done >= u64::from(4 * PAGE) {
            served.kill_hard();
            break done;
        }
        assert!(Instant::now() < deadline, "the campaign does not advance: {c}\n{}", served.log_text());
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(at_kill < u64::from(SUBSCRIBERS), "killed mid-campaign");

    // Start again on the same database: the campaign resumes after its last stored page.
    let served = bsm.serve(2);
    let deadline = Instant::now() + Duration::from_secs(300);
    let c = loop {
        let c = bsm.campaign(id);
        if c.get("finished_at").is_some() {
            break c;
        }
        assert!(Instant::now() < deadline, "the campaign never ended after the restart: {c}\n{}", served.log_text());
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        (c["terminals"].as_u64(), c["queued"].as_u64()),
        (Some(u64::from(SUBSCRIBERS)), Some(u64::from(SUBSCRIBERS))),
        "{c}"
    );
    let d: Value = serde_json::from_str(&bsm.bsm(&["deliveries", "--group", "1", "--number", "2"])).unwrap();
    assert_eq!(d["rows"].as_u64(), Some(u64::from(SUBSCRIBERS)), "one row per subscriber: {d}");
    assert_eq!(d["terminals"].as_u64(), Some(u64::from(SUBSCRIBERS)), "every subscriber: {d}");
    assert_eq!(d["max_version"].as_u64(), Some(1), "none twice: {d}");
    // The restarted process counted what it queued itself: the rest of the campaign.
    let metrics = metrics(bsm.ports[1]);
    let resumed = metrics
        .lines()
        .find_map(|l| l.strip_prefix("keycast_bsm_campaign_deliveries_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no campaign metric:\n{metrics}"));
    assert!(resumed > 0.0 && resumed <= f64::from(SUBSCRIBERS) - at_kill as f64 + f64::from(PAGE), "{resumed}");
    eprintln!(
        "killed at {at_kill} of {SUBSCRIBERS} terminals; after the restart: {d}; {resumed} queued by the second run"
    );
}

#[test]
fn a_bsm_killed_during_a_rollover_campaign_resumes_it_exactly_once_sqlite() {
    crash_during_campaign(None);
}

#[test]
fn a_bsm_killed_during_a_rollover_campaign_resumes_it_exactly_once_postgres() {
    let Ok(url) = std::env::var("KEYCAST_TEST_POSTGRES_URL") else {
        eprintln!("skipped: KEYCAST_TEST_POSTGRES_URL is not set");
        return;
    };
    // A database of its own, dropped at the end.
    let name = format!("keycast_crash_{}", std::process::id());
    let psql = |sql: &str| {
        let out = Command::new("psql").args([url.as_str(), "-v", "ON_ERROR_STOP=1", "-qc", sql]).output();
        match out {
            Ok(o) if o.status.success() => true,
            Ok(o) => panic!("psql {sql}: {}", String::from_utf8_lossy(&o.stderr)),
            Err(_) => false,
        }
    };
    if !psql(&format!("CREATE DATABASE {name}")) {
        eprintln!("skipped: psql not found");
        return;
    }
    let base = url.rsplit_once('/').map_or(url.as_str(), |(b, _)| b);
    crash_during_campaign(Some(&format!("{base}/{name}")));
    psql(&format!("DROP DATABASE {name} WITH (FORCE)"));
}
