//! `keycast terminal protect` end to end (profile P-10, P-11.5), every role its own process: real
//! `keycast serve bsf` and `keycast serve bsm` on loopback, the BSM over HTTPS with client
//! certificates required (`[tls] client_ca`, certificates made here with rcgen) and a
//! `[key_center]` section binding Key Group 1 to a TBK; a terminal with a card file and a
//! configuration subscribes, and this test is the broadcaster (STKMs sealed with the live SEK the
//! BSM's broadcaster API gives, SRTP under their TEKs) and the player (clear RTP compared byte for
//! byte).
//!
//! Without `protect`, `terminal watch` cannot open a protection_after_reception 0 stream (the card
//! keeps its TEK) and says to run `keycast terminal protect`; after `protect` (channel with the
//! card, the TBK of the LTKM in the state file) a new `watch` process opens it, and a
//! protection_after_reception 2 stream under the fetched TBK.

mod served;

use std::fs;
use std::io::Read as _;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keycast_crypto::key_wrap;
use keycast_crypto::keys::{SekPek, Tek, TekSalt};
use keycast_mikey::{
    KeyDomainId, ProtectionAfterReception, SekPekId, StkmContent, StkmExt, TekField, TrafficProtectionProtocol,
};
use keycast_terminal::media::srtp::{Mki, SrtpMasterKey, SrtpPolicy, SrtpSender};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use served::stack::{
    ADMIN, BROADCAST, BSF_HOST, FQDN, apply_catalogue_with_group1, bsf_with_set1, live, set1_card, write_secret,
};
use served::{Served, free_port};

/// The TBK the BSM binds Key Group 1 to (`[key_center] tbk_bindings`).
const TBK_ID: u32 = 1911;
const TBK_SECRET: [u8; 32] = [0x3b; 32];

fn keycast(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_keycast")).args(args).env("RUST_LOG", "info").output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A test CA and PEM files of leaves it signs.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "Keycast protect CLI test CA");
        Ca { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    /// Writes `NAME.pem` (certificate) and `NAME.key` (PKCS #8 key, 0600) into `d`.
    fn leaf(&self, d: &Path, file: &str, name: &str, usage: ExtendedKeyUsagePurpose) {
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        fs::write(d.join(format!("{file}.pem")), cert.pem()).unwrap();
        write_secret(&d.join(format!("{file}.key")), &key.serialize_pem());
    }
}

/// The live SEK of Key Group 1 from the BSM's broadcaster API.
struct Live {
    sek: SekPek,
    rand: [u8; 16],
    id: SekPekId,
    ts_low: u32,
}

fn live_key(admin_port: u16) -> Live {
    let answer = live(admin_port, BROADCAST);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let json: serde_json::Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    let k = &json["keys"][0];
    let hex16 = |v: &serde_json::Value| {
        let mut out = [0u8; 16];
        hex::decode_to_slice(v.as_str().unwrap(), &mut out).unwrap();
        out
    };
    Live {
        sek: SekPek::from_bytes(hex16(&k["key"])),
        rand: hex16(&k["rand"]),
        id: SekPekId { key_group: 1, key_number: u16::try_from(k["key_number"].as_u64().unwrap()).unwrap() },
        ts_low: u32::try_from(k["ts_low"].as_u64().unwrap()).unwrap(),
    }
}

fn kd() -> KeyDomainId {
    KeyDomainId::from_mcc_mnc("001", "01").unwrap()
}

fn master(key: &Live, tek_id: u16) -> SrtpMasterKey {
    let b = u8::try_from(tek_id).unwrap().wrapping_mul(0x13);
    SrtpMasterKey::new(
        Mki::new(u32::from_be_bytes(key.id.to_bytes()), tek_id),
        Tek::from_bytes([b; 16]),
        TekSalt::from_bytes([!b; 14]),
    )
}

/// An STKM under the live SEK: protection_after_reception `par`, the TEK wrapped by `tbk` when
/// given (P-11.5).
fn stkm(key: &Live, tek_id: u16, ts: u32, par: ProtectionAfterReception, tbk: Option<[u8; 16]>) -> Vec<u8> {
    let m = master(key, tek_id);
    let tek = match tbk {
        Some(tbk) => TekField::WrappedByTbk(key_wrap::wrap_16(&tbk, m.key().expose_secret())),
        None => TekField::Clear(m.key().clone()),
    };
    StkmContent {
        csb_id: 0x0c0c_0c0c,
        key_domain_id: kd(),
        sek_pek_id: key.id,
        tek_id,
        ts,
        ext: Some(StkmExt {
            protection_after_reception: par,
            traffic_protection_protocol: TrafficProtectionProtocol::Srtp,
            traffic_authentication: true,
            tbk_id: tbk.map(|_| TBK_ID),
            access_criteria: None,
        }),
        tek,
        salt: Some(m.salt().clone()),
    }
    .seal(&key.sek, &key.rand)
    .unwrap()
}

fn rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 3600).to_be_bytes());
    p.extend_from_slice(&0x0bad_cafe_u32.to_be_bytes());
    p.extend((0..600u32).map(|i| (i as u8) ^ (seq as u8)));
    p
}

/// Two adjacent free UDP ports on 127.0.0.1, bound.
fn port_pair() -> (UdpSocket, UdpSocket) {
    for _ in 0..50 {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = a.local_addr().unwrap().port();
        if let Some(next) = port.checked_add(1)
            && let Ok(b) = UdpSocket::bind(("127.0.0.1", next))
        {
            return (a, b);
        }
    }
    panic!("no two adjacent free ports");
}

/// A `terminal watch` process and the sockets around it.
struct Watch {
    child: Child,
    player: UdpSocket,
    stkm: SocketAddr,
    srtp: SocketAddr,
    tx: UdpSocket,
}

impl Watch {
    /// `terminal watch`, or `terminal record` with `record` = the recording's path.
    fn start(config: &Path, seconds: u32, record: Option<&Path>) -> Self {
        let (player, _player_rtcp) = port_pair();
        player.set_read_timeout(Some(Duration::from_millis(150))).unwrap();
        let rtp_out = player.local_addr().unwrap();
        let (srtp_probe, srtcp_probe) = port_pair();
        let srtp = srtp_probe.local_addr().unwrap();
        let stkm_probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        let stkm = stkm_probe.local_addr().unwrap();
        drop((srtp_probe, srtcp_probe, stkm_probe));
        let child = Command::new(env!("CARGO_BIN_EXE_keycast"))
            .args(["terminal", "--config", config.to_str().unwrap()])
            .args(match record {
                None => vec!["watch"],
                Some(out) => vec!["record", "--out", out.to_str().unwrap(), "--media", "audio", "--rtpmap", "L16/8000"],
            })
            .args(["--stkm-port", &stkm.port().to_string()])
            .args(["--srtp", &srtp.to_string(), "--rtp-out", &rtp_out.to_string()])
            .args(["--duration", &seconds.to_string()])
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Watch { child, player, stkm, srtp, tx: UdpSocket::bind("127.0.0.1:0").unwrap() }
    }

    /// Sends `stkm` and a packet under `key` until a clear packet comes back (or `limit`
    /// passes); the clear packet and the one sent.
    fn open(
        &self,
        stkm: &dyn Fn(u32) -> Vec<u8>,
        key: &SrtpMasterKey,
        seq: &mut u16,
        limit: Duration,
    ) -> Option<(Vec<u8>, Vec<u8>)> {
        let mut sender = SrtpSender::new(SrtpPolicy::rfc3711(), key);
        let mut buf = vec![0u8; 4096];
        let started = Instant::now();
        let mut n = 0u32;
        while started.elapsed() < limit {
            self.tx.send_to(&stkm(n), self.stkm).unwrap();
            n += 1;
            std::thread::sleep(Duration::from_millis(40));
            *seq += 1;
            let mut p = rtp(*seq);
            sender.protect(&mut p).unwrap();
            self.tx.send_to(&p, self.srtp).unwrap();
            if let Ok((len, _)) = self.player.recv_from(&mut buf) {
                // A packet may come back after a later one was sent: compare with its own.
                let got = buf[..len].to_vec();
                let sent = got.get(2..4).map_or_else(Vec::new, |s| rtp(u16::from_be_bytes([s[0], s[1]])));
                return Some((got, sent));
            }
        }
        None
    }

    /// The clear packets still on their way (within `wait`).
    fn drain(&self, wait: Duration) -> Vec<Vec<u8>> {
        let mut buf = vec![0u8; 4096];
        let mut out = Vec::new();
        let until = Instant::now() + wait;
        while Instant::now() < until {
            if let Ok((len, _)) = self.player.recv_from(&mut buf) {
                out.push(buf[..len].to_vec());
            }
        }
        out
    }

    /// Waits for the process to stop (its --duration); status, standard output and error.
    fn finish(mut self) -> (bool, String, String) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("terminal watch did not stop");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut out = String::new();
        self.child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        let mut err = String::new();
        self.child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        (status.success(), out, err)
    }
}

#[test]
fn protect_sets_up_the_channel_and_tbks_that_watch_then_uses() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new();
    fs::write(d.join("ca.pem"), ca.issuer.pem()).unwrap();
    ca.leaf(d, "bsm", FQDN, ExtendedKeyUsagePurpose::ServerAuth);
    ca.leaf(d, "terminal", "terminal-0001.devices.example.org", ExtendedKeyUsagePurpose::ClientAuth);

    // The BSF, with set 1's subscriber.
    let (_bsf, bsf_port, _) = bsf_with_set1(d);

    // The BSM over HTTPS with client certificates, its key center binding Key Group 1 to TBK 1911.
    let (bsm_port, admin_port, metrics_port) = (free_port(), free_port(), free_port());
    write_secret(&d.join("storage.key"), "000102030405060708090a0b0c0d0e0f\n");
    write_secret(&d.join("ua.secret"), &format!("{}\n", "ab".repeat(32)));
    write_secret(&d.join("admin.token"), &format!("{ADMIN}\n"));
    write_secret(&d.join("broadcast.token"), &format!("{BROADCAST}\n"));
    write_secret(&d.join("tbk.secret"), &format!("{}\n", hex::encode(TBK_SECRET)));
    let bsm_config = d.join("bsm.toml");
    fs::write(
        &bsm_config,
        format!(
            "fqdn = \"{FQDN}\"\nlisten = \"127.0.0.1:{bsm_port}\"\nstorage_key_file = \"storage.key\"\n\
             ua_secret_file = \"ua.secret\"\n[tls]\ncert = \"bsm.pem\"\nkey = \"bsm.key\"\nclient_ca = \"ca.pem\"\n\
             [bsf]\naddress = \"127.0.0.1:{bsf_port}\"\nhost = \"{BSF_HOST}\"\ntoken_file = \"zn.token\"\n\
             [metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\
             [admin]\nlisten = \"127.0.0.1:{admin_port}\"\ntoken_file = \"admin.token\"\n\
             [broadcast]\ntoken_file = \"broadcast.token\"\n\
             [key_center]\ntbk_secret_file = \"tbk.secret\"\ntbk_bindings = [{{ key_group = 1, tbk_id = {TBK_ID} }}]\n"
        ),
    )
    .unwrap();
    let _bsm = Served::start(
        &["serve", "bsm", "--config", bsm_config.to_str().unwrap()],
        d.join("bsm.log"),
        &[bsm_port, admin_port],
    );
    apply_catalogue_with_group1(
        d,
        &bsm_config,
        "[[service]]\nid = \"news\"\nname = \"News\"\nmcc = \"001\"\nmnc = \"01\"\nkey_group = 1\nstreaming = true\n\
         [[purchase_item]]\nid = \"all\"\nname = \"All\"\nservices = [\"news\"]\n\
         [[offer]]\nid = \"all-month\"\nitem = \"all\"\namount = \"9.99\"\ncurrency = \"EUR\"\nkind = \"subscription\"\n\
         period_secs = 2592000\n",
    );

    // The published guide exported as files over the BSM's mutual-TLS listener: the roots are
    // needed, and so is a client certificate.
    let export = |extra: &[&str]| {
        let mut all = vec!["bsm", "--config", bsm_config.to_str().unwrap(), "guide", "export"];
        let dir = d.join("guide");
        all.push(dir.to_str().unwrap());
        all.extend_from_slice(extra);
        keycast(&all)
    };
    let (ok, _, err) = export(&[]);
    assert!(!ok && err.contains("listens with TLS") && err.contains("--ca-file"), "{err}");
    let ca = d.join("ca.pem");
    let (ok, _, err) = export(&["--ca-file", ca.to_str().unwrap()]);
    assert!(!ok, "no client certificate, no guide: {err}");
    let (cert, key) = (d.join("terminal.pem"), d.join("terminal.key"));
    let (ok, out, err) = export(&[
        "--ca-file",
        ca.to_str().unwrap(),
        "--client-cert",
        cert.to_str().unwrap(),
        "--client-key",
        key.to_str().unwrap(),
    ]);
    assert!(ok && out.contains("documents written"), "{out}\n{err}");
    let purchase_data = fs::read_to_string(d.join("guide/fragments/all-month.xml")).unwrap();
    assert!(purchase_data.contains("PurchaseData"), "{purchase_data}");

    // The card, and a terminal configuration with mutual TLS toward the BSM.
    let card = d.join("card.kc");
    set1_card(&card);
    let config = d.join("terminal.toml");
    fs::write(
        &config,
        format!(
            "card = \"card.kc\"\nstate = \"terminal.state\"\n[bsf]\nurl = \"http://127.0.0.1:{bsf_port}\"\nhost = \"{BSF_HOST}\"\n\
             [bsm]\nurl = \"https://127.0.0.1:{bsm_port}\"\nfqdn = \"{FQDN}\"\nca_file = \"ca.pem\"\n\
             client_cert_file = \"terminal.pem\"\nclient_key_file = \"terminal.key\"\n"
        ),
    )
    .unwrap();
    let terminal = |args: &[&str]| {
        let mut all = vec!["terminal", "--config", config.to_str().unwrap()];
        all.extend_from_slice(args);
        keycast(&all)
    };

    // The Service Guide over the same TLS listener: the offer is listed.
    let (ok, out, err) = terminal(&["services", "--json"]);
    assert!(ok && out.contains(r#""offer":"all-month""#), "{out}\n{err}");

    // Subscribe over mutual TLS: the LTKM of Key Group 1 (with tbk_flag) goes into the card.
    let (ok, out, err) = terminal(&["subscribe", "--item", "all", "--offer", "all-month"]);
    assert!(ok && out.contains("1 of 1 LTKMs taken"), "{out}\n{err}");
    let key = live_key(admin_port);
    let tbk = *keycast_bsm::http::key_center::tbk_for(&TBK_SECRET, TBK_ID).expose_secret();
    let mut ts = key.ts_low + 10;
    let mut seq = 0u16;

    // Without `protect`: the protection_after_reception 0 stream does not open, and the terminal
    // says what to do.
    let watch = Watch::start(&config, 4, None);
    let p0 = |tek_id: u16, ts0: u32| {
        let key = &key;
        move |n: u32| stkm(key, tek_id, ts0 + n, ProtectionAfterReception::MayRecord, None)
    };
    let opened = watch.open(&p0(1, ts), &master(&key, 1), &mut seq, Duration::from_secs(3));
    assert!(opened.is_none(), "a content-protected stream opened without the channel");
    // A terminal-bound stream (protection_after_reception 2) neither: no TBK held yet. (TEK IDs
    // go up from one STKM to the next, as the card's replay rule wants.)
    let unbound = |n: u32| stkm(&key, 2, ts + 100 + n, ProtectionAfterReception::TerminalBound, Some(tbk));
    let opened = watch.open(&unbound, &master(&key, 2), &mut seq, Duration::from_millis(500));
    assert!(opened.is_none(), "a terminal-bound stream opened without the TBK");
    let (ok, out, err) = watch.finish();
    assert!(ok, "{out}\n{err}");
    assert!(err.contains("secure authenticated channel") && err.contains("run `keycast terminal protect`"), "{err}");
    assert!(err.contains(&format!("terminal binding key {TBK_ID}, which this terminal does not hold")), "{err}");
    assert!(out.contains("0 out"), "{out}");
    ts += 200;

    // `protect`: the channel with the card, the TBK the card's LTKM names into the state file.
    let (ok, out, err) = terminal(&["protect"]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("secure channel established with the card"), "{out}");
    assert!(out.contains(&format!("terminal binding key {TBK_ID} received")), "{out}");
    let state = keycast_terminal::state::StateFile::new(d.join("terminal.state")).load().unwrap();
    assert_eq!(state.tbks.get(&TBK_ID).map(|t| *t.expose_secret()), Some(tbk));
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(fs::metadata(d.join("terminal.state")).unwrap().permissions().mode() & 0o777, 0o600);
    let usim = keycast_card::persist::CardFile::new(&card).load().unwrap();
    assert!(usim.mbms.sac.is_some(), "the card file keeps the channel");
    let (ok, out, err) = terminal(&["status", "--json"]);
    assert!(ok, "{out}\n{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["protection"]["tbk_ids"], serde_json::json!([TBK_ID]), "{status:#}");
    assert_eq!(status["protection"]["channel"]["used"], "0", "{status:#}");
    assert!(!out.contains(&hex::encode(tbk)), "no key bytes in the status");

    // A new process (`record`, which watches too): the protection_after_reception 0 stream opens
    // byte for byte, then a protection_after_reception 2 stream under the fetched TBK.
    let recording = d.join("rec.mp4");
    let watch = Watch::start(&config, 8, Some(&recording));
    let (clear, sent) =
        watch.open(&p0(3, ts), &master(&key, 3), &mut seq, Duration::from_secs(5)).expect("the protected stream opens");
    assert_eq!(clear, sent, "byte-identical clear RTP");
    let mut clear_packets = vec![clear];
    clear_packets.extend(watch.drain(Duration::from_millis(400)));
    ts += 200;
    let p2 = |n: u32| stkm(&key, 4, ts + n, ProtectionAfterReception::TerminalBound, Some(tbk));
    let (clear, sent) =
        watch.open(&p2, &master(&key, 4), &mut seq, Duration::from_secs(5)).expect("the terminal-bound stream opens");
    assert_eq!(clear, sent, "byte-identical clear RTP");
    clear_packets.push(clear);
    clear_packets.extend(watch.drain(Duration::from_millis(400)));
    for p in &clear_packets {
        assert_eq!(p, &rtp(u16::from_be_bytes([p[2], p[3]])), "byte-identical clear RTP");
    }
    let payloads: Vec<u8> = clear_packets.iter().flat_map(|p| p[12..].to_vec()).collect();
    let (ok, out, err) = watch.finish();
    assert!(ok, "{out}\n{err}");
    assert!(out.contains(&format!("recorded {} samples", clear_packets.len())), "{out}\n{err}");
    assert!(!err.contains("run `keycast terminal protect`"), "{err}");

    // Play-back in another process: both TEKs come through the card again, unwrapped with the
    // channel and the TBK; the samples are the payloads sent.
    let es = d.join("out.raw");
    let (ok, out, err) =
        terminal(&["play", recording.to_str().unwrap(), "--es", es.to_str().unwrap(), "--pace", "fast"]);
    assert!(ok && out.contains(&format!("played {} samples", clear_packets.len())), "{out}\n{err}");
    assert_eq!(fs::read(&es).unwrap(), payloads);
}
