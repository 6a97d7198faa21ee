//! A BSM with a streaming service and its first SEK, and a broadcaster on that key, each as its
//! own `keycast serve …` process on loopback: the layer 3–4 stack the stream tests run against.

use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use keycast_card::persist::CardFile;
use keycast_crypto::keys::{SekPek, Smk};
use keycast_mikey::{KeyDomainId, KeyValidity, LtkmContent, LtkmExt, SecurityPolicy, SecurityPolicyExt, SekPekId};

use super::{Served, free_port};

pub const FQDN: &str = "bmsc.example.org";
pub const ADMIN: &str = "an-admin-token-for-the-test";
pub const BROADCAST: &str = "a-broadcast-token-for-the-test";

pub fn write_secret(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

/// One HTTP/1.1 exchange on a fresh connection; the whole answer as text.
pub fn http(port: u16, request: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

pub fn admin(port: u16, method: &str, path: &str, body: &str) -> String {
    http(
        port,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

/// `GET /internal/v1/key-groups/1/live` with `token`.
pub fn live(port: u16, token: &str) -> String {
    http(
        port,
        &format!(
            "GET /internal/v1/key-groups/1/live HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Connection: close\r\n\r\n"
        ),
    )
}

/// A UDP socket pair on consecutive loopback ports (RTP, RTCP).
pub fn udp_pair() -> (UdpSocket, UdpSocket) {
    for _ in 0..100 {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = a.local_addr().unwrap().port();
        if port == u16::MAX {
            continue;
        }
        if let Ok(b) = UdpSocket::bind(("127.0.0.1", port + 1)) {
            return (a, b);
        }
    }
    panic!("no consecutive UDP ports");
}

/// An RTP port (and the one after it for RTCP) that were free a moment ago.
pub fn free_rtp_port() -> SocketAddr {
    let (rtp, rtcp) = udp_pair();
    let addr = rtp.local_addr().unwrap();
    drop((rtp, rtcp));
    addr
}

fn hex16(v: &serde_json::Value) -> [u8; 16] {
    let mut out = [0u8; 16];
    hex::decode_to_slice(v.as_str().unwrap(), &mut out).unwrap();
    out
}

/// The live SEK the BSM answers on its broadcaster API.
pub struct LiveKey {
    /// The key in hex as the API gave it (to look for in logs).
    pub hex: String,
    pub sek: SekPek,
    pub rand: [u8; 16],
    pub sek_id: SekPekId,
    pub ts_low: u32,
    pub ts_high: u32,
}

/// `serve bsm` with a streaming service "news" on Key Group 1 and its first SEK.
pub struct BsmWithKey {
    pub bsm: Served,
    pub admin_port: u16,
    pub key: LiveKey,
}

impl BsmWithKey {
    /// Starts the BSM in `d` (its secrets and configuration written there), makes the service
    /// and the SEK through the admin API and reads the key back through the broadcaster API.
    pub fn start(d: &Path) -> Self {
        write_secret(&d.join("storage.key"), "000102030405060708090a0b0c0d0e0f\n");
        write_secret(&d.join("ua.secret"), &format!("{}\n", "ab".repeat(32)));
        write_secret(&d.join("zn.token"), "a-zn-token-of-some-length\n");
        write_secret(&d.join("admin.token"), &format!("{ADMIN}\n"));
        write_secret(&d.join("broadcast.token"), &format!("{BROADCAST}\n"));
        let (port, metrics_port, admin_port, dead_bsf) = (free_port(), free_port(), free_port(), free_port());
        fs::write(
            d.join("bsm.toml"),
            format!(
                "fqdn = \"{FQDN}\"\nlisten = \"127.0.0.1:{port}\"\nstorage_key_file = \"storage.key\"\n\
                 ua_secret_file = \"ua.secret\"\n[bsf]\naddress = \"127.0.0.1:{dead_bsf}\"\nhost = \"bsf.example.org\"\n\
                 token_file = \"zn.token\"\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\
                 [admin]\nlisten = \"127.0.0.1:{admin_port}\"\ntoken_file = \"admin.token\"\n\
                 [broadcast]\ntoken_file = \"broadcast.token\"\n"
            ),
        )
        .unwrap();
        let bsm_config = d.join("bsm.toml");
        let bsm = Served::start(
            &["serve", "bsm", "--config", bsm_config.to_str().unwrap()],
            d.join("bsm.log"),
            &[port, metrics_port, admin_port],
        );

        let put = admin(
            admin_port,
            "PUT",
            "/admin/v1/services/news",
            r#"{"name":"News","mcc":"001","mnc":"01","key_group":1,"streaming":true}"#,
        );
        assert!(put.starts_with("HTTP/1.1 204"), "{put}");
        let roll = admin(
            admin_port,
            "POST",
            "/admin/v1/key-groups/1/rollover",
            r#"{"mcc":"001","mnc":"01","key_lifetime_secs":3600,"lead_secs":60}"#,
        );
        assert!(roll.starts_with("HTTP/1.1 201"), "{roll}");

        let answer = live(admin_port, BROADCAST);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let json: serde_json::Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        let k = &json["keys"][0];
        let number = |v: &serde_json::Value| u32::try_from(v.as_u64().unwrap()).unwrap();
        let key = LiveKey {
            hex: k["key"].as_str().unwrap().to_owned(),
            sek: SekPek::from_bytes(hex16(&k["key"])),
            rand: hex16(&k["rand"]),
            sek_id: SekPekId { key_group: 1, key_number: u16::try_from(number(&k["key_number"])).unwrap() },
            ts_low: number(&k["ts_low"]),
            ts_high: number(&k["ts_high"]),
        };
        BsmWithKey { bsm, admin_port, key }
    }

    /// Writes `d/broadcast.toml` for Key Group 1: RTP in on `rtp_in` (RTCP on the next port),
    /// SRTP out to `destination`, STKMs to the destination's address on `stkm_port`, a TEK every
    /// `crypto_period` seconds announced `lead` seconds ahead, the SDP in `d/stream.sdp`. Returns
    /// the file and its metrics port.
    pub fn broadcast_config(
        &self,
        d: &Path,
        rtp_in: SocketAddr,
        destination: SocketAddr,
        stkm_port: u16,
        crypto_period: u32,
        lead: u32,
    ) -> (PathBuf, u16) {
        let metrics = free_port();
        let config = d.join("broadcast.toml");
        fs::write(
            &config,
            format!(
                "key_group = 1\ncrypto_period_secs = {crypto_period}\nlead_secs = {lead}\nrtp_listen = \"{rtp_in}\"\n\
                 destination = \"{destination}\"\nstkm_port = {stkm_port}\n\
                 [bsm]\nurl = \"http://127.0.0.1:{}\"\ntoken_file = \"broadcast.token\"\n\
                 [sdp]\npath = \"stream.sdp\"\nsession_name = \"News\"\n\
                 [metrics]\nlisten = \"127.0.0.1:{metrics}\"\n",
                self.admin_port
            ),
        )
        .unwrap();
        (config, metrics)
    }

    /// Starts `serve broadcast` with [`BsmWithKey::broadcast_config`]'s file; returns the process
    /// and its metrics port.
    pub fn broadcaster(
        &self,
        d: &Path,
        rtp_in: SocketAddr,
        destination: SocketAddr,
        stkm_port: u16,
        crypto_period: u32,
        lead: u32,
    ) -> (Served, u16) {
        let (config, metrics) = self.broadcast_config(d, rtp_in, destination, stkm_port, crypto_period, lead);
        let served = Served::start(
            &["serve", "broadcast", "--config", config.to_str().unwrap()],
            d.join("broadcast.log"),
            &[metrics],
        );
        (served, metrics)
    }
}

/// `keycast card new` into `path` (Milenage test set 1), then a pay-per-time SEK/PEK put into the
/// card file by an LTKM sealed here under an SMK installed for (`bsm`, `btid`).
#[allow(clippy::too_many_arguments)]
pub fn card_with_key(
    path: &Path,
    bsm: &str,
    btid: &str,
    sek_id: SekPekId,
    sek: &SekPek,
    rand: [u8; 16],
    ts_low: u32,
    ts_high: u32,
) {
    card_with_policy(path, bsm, btid, sek_id, sek, rand, ts_low, ts_high, SecurityPolicy::PayPerTime);
}

/// As [`card_with_key`], with the key's security policy (P-4) chosen.
#[allow(clippy::too_many_arguments)]
pub fn card_with_policy(
    path: &Path,
    bsm: &str,
    btid: &str,
    sek_id: SekPekId,
    sek: &SekPek,
    rand: [u8; 16],
    ts_low: u32,
    ts_high: u32,
    policy: SecurityPolicy,
) {
    set1_card(path);
    let file = CardFile::new(path);
    let mut usim = file.load().unwrap();
    let (smk, ltkm) = sealed_key(bsm, btid, sek_id, sek, rand, ts_low, ts_high, policy);
    usim.mbms.install_muk(bsm, btid, smk).unwrap();
    usim.mbms.msk_update(&ltkm).unwrap();
    file.save(&usim).unwrap();
}

/// The SMK of the cards and stores made here, and an LTKM under it carrying `sek` (TS 1).
#[allow(clippy::too_many_arguments)]
fn sealed_key(
    bsm: &str,
    btid: &str,
    sek_id: SekPekId,
    sek: &SekPek,
    rand: [u8; 16],
    ts_low: u32,
    ts_high: u32,
    policy: SecurityPolicy,
) -> (Smk, Vec<u8>) {
    let smk = Smk::from_bytes([0x11; 32]);
    let ltkm = LtkmContent {
        csb_id: 0x0300_0001,
        verification_requested: false,
        srtp_cs: None,
        key_domain_id: KeyDomainId::from_mcc_mnc("001", "01").unwrap(),
        sek_pek_id: sek_id,
        ts: 1,
        rand,
        idi: bsm.into(),
        idr: btid.into(),
        srtp_policy: None,
        ext: Some(LtkmExt {
            security_policy: Some(SecurityPolicyExt { policy, play_back_counter: 0, view_counter: 0 }),
            tbk_id: None,
            consumption_reporting: false,
        }),
        key: Some(sek.clone()),
        validity: KeyValidity::TsWindow { ts_low, ts_high },
    }
    .seal(&smk)
    .unwrap();
    (smk, ltkm)
}

/// A GBA_ME terminal's key store file (`keycast_card::persist::gba_me`) holding `sek` with
/// pay-per-time, as [`card_with_key`] puts it in a card.
#[allow(clippy::too_many_arguments)]
pub fn me_store_with_key(
    path: &Path,
    bsm: &str,
    btid: &str,
    sek_id: SekPekId,
    sek: &SekPek,
    rand: [u8; 16],
    ts_low: u32,
    ts_high: u32,
) {
    let mut store = keycast_card::gba_me::GbaMeStore::default();
    let (smk, ltkm) = sealed_key(bsm, btid, sek_id, sek, rand, ts_low, ts_high, SecurityPolicy::PayPerTime);
    store.mbms.install_muk(bsm, btid, smk).unwrap();
    store.msk_update(&ltkm).unwrap();
    keycast_card::persist::gba_me::GbaMeFile::create(path, &store).unwrap();
}

/// The identities of the cards `card_with_key` makes.
pub const IMSI: &str = "001010000000001";
pub const IMPI: &str = "001010000000001@ims.mnc001.mcc001.3gppnetwork.org";
pub const ICCID: &str = "8900100000000000001";

/// Milenage test set 1 (TS 35.208 §4.3): the subscriber of [`bsf_with_set1`].
pub const SET1_K: &str = "465b5ce8b199b49faa5f0a2ee238a6bc";
/// Test set 1's OP.
pub const SET1_OP: &str = "cdc202d5123e20f62b6d676ac72cb318";
/// Test set 1's SQN.
pub const SET1_SQN: u64 = 0xff9b_b4d0_b607;
/// The BSF's name.
pub const BSF_HOST: &str = "bsf.example.org";
/// The token the BSM `FQDN` has on the BSF's Zn.
pub const ZN_TOKEN: &str = "bsm-zn-token-8c1f0e5d2b7a4936";

/// `serve bsf` in `d` with test set 1's subscriber ([`IMPI`], [`IMSI`]; its first challenge
/// takes SQN1) and [`ZN_TOKEN`] for the NAF [`FQDN`]: the process, its Ub/Zn port and its metrics
/// port.
pub fn bsf_with_set1(d: &Path) -> (Served, u16, u16) {
    bsf_with_set1_as(d, "gba-u")
}

/// [`bsf_with_set1`] with the subscriber's GBA type (`--gba-type`: `gba-u` or `gba-me`).
pub fn bsf_with_set1_as(d: &Path, gba_type: &str) -> (Served, u16, u16) {
    let (bsf_port, bsf_metrics) = (free_port(), free_port());
    write_secret(&d.join("bsf-storage.key"), "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a\n");
    write_secret(&d.join("bsf-server.secret"), &format!("{}\n", "c0ffee".repeat(10) + "c0ff"));
    write_secret(&d.join("zn.token"), &format!("{ZN_TOKEN}\n"));
    let bsf_config = d.join("bsf.toml");
    fs::write(
        &bsf_config,
        format!(
            "domain = \"{BSF_HOST}\"\nstorage_key_file = \"bsf-storage.key\"\nserver_secret_file = \"bsf-server.secret\"\n\
             listen = \"127.0.0.1:{bsf_port}\"\nfake_amf = \"b9b9\"\n\
             [zn]\nauthorised_nafs = [\"{FQDN}\"]\n[[zn.tokens]]\nnaf = \"{FQDN}\"\ntoken_file = \"zn.token\"\n\
             [metrics]\nlisten = \"127.0.0.1:{bsf_metrics}\"\n"
        ),
    )
    .unwrap();
    write_secret(&d.join("set1.keys"), &format!("K={SET1_K}\nOP={SET1_OP}\n"));
    let sqn = format!("{:x}", SET1_SQN - 32);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keycast"))
        .args(["bsf", "subscriber", "add", "--impi", IMPI, "--imsi", IMSI, "--amf", "b9b9", "--gba-type", gba_type])
        .args(["--sqn", &sqn, "--keys-file"])
        .arg(d.join("set1.keys"))
        .arg("--config")
        .arg(&bsf_config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bsf = Served::start(
        &["serve", "bsf", "--config", bsf_config.to_str().unwrap()],
        d.join("bsf.log"),
        &[bsf_port, bsf_metrics],
    );
    (bsf, bsf_port, bsf_metrics)
}

/// `keycast card new` at `path` for test set 1's subscriber ([`IMSI`], [`IMPI`], [`ICCID`]; K and
/// OP on standard input).
pub fn set1_card(path: &Path) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_keycast"))
        .args(["card", "new", "--file", path.to_str().unwrap(), "--imsi", IMSI, "--impi", IMPI, "--iccid", ICCID])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(format!("K={SET1_K}\nOP={SET1_OP}\n").as_bytes()).unwrap();
    let made = child.wait_with_output().unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
}

/// `keycast bsm apply` of `catalogue` (TOML, written to `d/catalogue.toml`) against the BSM of
/// `bsm_config`, then `keycast bsm rollover` of Key Group 1 (Key Domain 001/01, keys of a day,
/// an hour's lead): the catalogue's first SEK.
pub fn apply_catalogue_with_group1(d: &Path, bsm_config: &Path, catalogue: &str) {
    let path = d.join("catalogue.toml");
    fs::write(&path, catalogue).unwrap();
    let bsm_cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_keycast"))
            .args(["bsm", "--config", bsm_config.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "bsm {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    bsm_cli(&["apply", path.to_str().unwrap()]);
    bsm_cli(&[
        "rollover",
        "--group",
        "1",
        "--mcc",
        "001",
        "--mnc",
        "01",
        "--key-lifetime-secs",
        "86400",
        "--lead-secs",
        "3600",
    ]);
}
