//! `keycast serve broadcast` against a real `keycast serve bsm` on loopback: the BSM makes a
//! SEK for a streaming service's key group; the broadcaster fetches it over the broadcaster API,
//! draws a TEK every 2 s (announced 1 s ahead) and turns the RTP the test sends into SRTP. On the
//! receiving side a card emulator holding the SEK (LTKM sealed here with the key and RAND the BSM
//! answers) opens the STKMs from the STKM port, and keycast-traffic unprotects the SRTP and SRTCP
//! back to exactly what was sent, across TEK switches.

mod served;

use std::collections::HashMap;
use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use keycast_card::mbms::{MbmsStore, TekOut};
use keycast_crypto::keys::{SekPek, Smk};
use keycast_mikey::{
    KeyDomainId, KeyValidity, LtkmContent, LtkmExt, SecurityPolicy, SecurityPolicyExt, SekPekId, Stkm,
};
use keycast_traffic::srtp::{Mki, SrtpMasterKey, SrtpPolicy, SrtpReceiver};
use served::{Served, free_port};

const FQDN: &str = "bmsc.example.org";
const ADMIN: &str = "an-admin-token-for-the-test";
const BROADCAST: &str = "a-broadcast-token-for-the-test";
const BTID: &str = "AAAAAAAAAAAAAAAAAAAAAA==@bsf.example.org";

fn write_secret(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

fn http(port: u16, request: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn admin(port: u16, method: &str, path: &str, body: &str) -> String {
    http(
        port,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

fn live(port: u16, token: &str) -> String {
    http(
        port,
        &format!(
            "GET /internal/v1/key-groups/1/live HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Connection: close\r\n\r\n"
        ),
    )
}

/// A UDP socket pair on consecutive loopback ports (RTP, RTCP).
fn udp_pair() -> (UdpSocket, UdpSocket) {
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

fn hex16(v: &serde_json::Value) -> [u8; 16] {
    let mut out = [0u8; 16];
    hex::decode_to_slice(v.as_str().unwrap(), &mut out).unwrap();
    out
}

fn rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
    p.extend_from_slice(&0x5eed_0001u32.to_be_bytes());
    p.extend_from_slice(format!("frame {seq} of the broadcast").as_bytes());
    p
}

fn rtcp(n: u8) -> Vec<u8> {
    // A sender report without report blocks (RFC 3550 §6.4.1): 28 bytes.
    let mut p = vec![0x80, 200, 0, 6];
    p.extend_from_slice(&0x5eed_0001u32.to_be_bytes());
    p.extend_from_slice(&[n; 20]);
    p
}

enum Event {
    Stkm(Vec<u8>),
    Srtp(Vec<u8>),
    Srtcp(Vec<u8>),
}

fn collect(socket: UdpSocket, tx: mpsc::Sender<(Instant, Event)>, kind: fn(Vec<u8>) -> Event, stop: Arc<AtomicBool>) {
    socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        if let Ok(n) = socket.recv(&mut buf) {
            let _ = tx.send((Instant::now(), kind(buf[..n].to_vec())));
        }
    }
}

#[test]
fn broadcaster_keys_from_bsm_stkms_open_on_card_and_srtp_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
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
    let mut bsm = Served::start(
        &["serve", "bsm", "--config", bsm_config.to_str().unwrap()],
        d.join("bsm.log"),
        &[port, metrics_port, admin_port],
    );

    // A streaming service on Key Group 1 and its first SEK.
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

    // The broadcaster API: its own token only.
    assert!(live(admin_port, ADMIN).starts_with("HTTP/1.1 401"));
    assert!(live(admin_port, "wrong").starts_with("HTTP/1.1 401"));
    let answer = live(admin_port, BROADCAST);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let json: serde_json::Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    let key = &json["keys"][0];
    let sek = SekPek::from_bytes(hex16(&key["key"]));
    let rand = hex16(&key["rand"]);
    let sek_id = SekPekId { key_group: 1, key_number: u16::try_from(key["key_number"].as_u64().unwrap()).unwrap() };
    let (ts_low, ts_high) = (
        u32::try_from(key["ts_low"].as_u64().unwrap()).unwrap(),
        u32::try_from(key["ts_high"].as_u64().unwrap()).unwrap(),
    );
    assert!(!fs::read_to_string(d.join("bsm.log")).unwrap().contains(key["key"].as_str().unwrap()), "no key in logs");

    // The card holds the SEK (an LTKM with the BSM's key, RAND and TS window).
    let smk = Smk::from_bytes([0x21; 32]);
    let mut card = MbmsStore::default();
    card.install_muk(FQDN, BTID, smk.clone()).unwrap();
    let ltkm = LtkmContent {
        csb_id: 7,
        verification_requested: false,
        srtp_cs: None,
        key_domain_id: KeyDomainId::from_mcc_mnc("001", "01").unwrap(),
        sek_pek_id: sek_id,
        ts: 1,
        rand,
        idi: FQDN.into(),
        idr: BTID.into(),
        srtp_policy: None,
        ext: Some(LtkmExt {
            security_policy: Some(SecurityPolicyExt {
                policy: SecurityPolicy::PayPerTime,
                play_back_counter: 0,
                view_counter: 0,
            }),
            tbk_id: None,
            consumption_reporting: false,
        }),
        key: Some(sek),
        validity: KeyValidity::TsWindow { ts_low, ts_high },
    };
    card.msk_update(&ltkm.seal(&smk).unwrap()).unwrap();

    // The receiving side: SRTP on (P, P+1), STKMs on S; the broadcaster reads RTP on (R, R+1).
    let (srtp_rx, srtcp_rx) = udp_pair();
    let stkm_rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dest = srtp_rx.local_addr().unwrap();
    let stkm_port = stkm_rx.local_addr().unwrap().port();
    let (rtp_probe, rtcp_probe) = udp_pair();
    let rtp_in = rtp_probe.local_addr().unwrap();
    drop((rtp_probe, rtcp_probe));
    let b_metrics = free_port();
    fs::write(
        d.join("broadcast.toml"),
        format!(
            "key_group = 1\ncrypto_period_secs = 2\nlead_secs = 1\nrtp_listen = \"{rtp_in}\"\n\
             destination = \"{dest}\"\nstkm_port = {stkm_port}\n\
             [bsm]\nurl = \"http://127.0.0.1:{admin_port}\"\ntoken_file = \"broadcast.token\"\n\
             [sdp]\npath = \"stream.sdp\"\nsession_name = \"News\"\n\
             [metrics]\nlisten = \"127.0.0.1:{b_metrics}\"\n"
        ),
    )
    .unwrap();
    let b_config = d.join("broadcast.toml");
    let mut broadcaster = Served::start(
        &["serve", "broadcast", "--config", b_config.to_str().unwrap()],
        d.join("broadcast.log"),
        &[b_metrics],
    );

    let (tx, rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let threads = [
        (stkm_rx, Event::Stkm as fn(Vec<u8>) -> Event),
        (srtp_rx, Event::Srtp as fn(Vec<u8>) -> Event),
        (srtcp_rx, Event::Srtcp as fn(Vec<u8>) -> Event),
    ]
    .map(|(s, k)| {
        let (tx, stop) = (tx.clone(), stop.clone());
        std::thread::spawn(move || collect(s, tx, k, stop))
    });
    drop(tx);

    // Wait for the first STKM (keys fetched), then send 7 s of RTP (50 packets a second) and RTCP.
    let mut events: Vec<(Instant, Event)> = Vec::new();
    let first = rx.recv_timeout(Duration::from_secs(15)).expect("an STKM within 15 s");
    events.push(first);
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let rtcp_in = SocketAddr::new(rtp_in.ip(), rtp_in.port() + 1);
    let mut sent_rtp = HashMap::new();
    let mut sent_rtcp = Vec::new();
    let start = Instant::now();
    let mut seq: u16 = 1000;
    while start.elapsed() < Duration::from_secs(7) {
        let p = rtp(seq);
        sender.send_to(&p, rtp_in).unwrap();
        sent_rtp.insert(seq, p);
        if seq.is_multiple_of(50) {
            let c = rtcp(u8::try_from(sent_rtcp.len() % 256).unwrap());
            sender.send_to(&c, rtcp_in).unwrap();
            sent_rtcp.push(c);
        }
        seq += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    events.sort_by_key(|(t, _)| *t);

    // Replay in arrival order: STKMs into the card, TEKs into the SRTP receivers.
    let mut rtp_rx = SrtpReceiver::new(SrtpPolicy::rfc3711());
    let mut rtcp_rx = SrtpReceiver::new(SrtpPolicy::rfc3711());
    let mut tek_arrival: HashMap<Mki, Instant> = HashMap::new();
    let mut first_use: HashMap<Mki, Instant> = HashMap::new();
    let mut last_ts: Option<u32> = None;
    let mut stkms = 0;
    let (mut got_rtp, mut got_rtcp) = (0, 0);
    for (at, e) in events {
        match e {
            Event::Stkm(bytes) => {
                stkms += 1;
                let decoded = Stkm::decode(&bytes).unwrap();
                assert_eq!(decoded.sek_pek_id(), sek_id);
                assert!(last_ts.is_none_or(|l| decoded.ts() > l), "TS strictly increasing");
                last_ts = Some(decoded.ts());
                let mki = Mki::new(u32::from_be_bytes(sek_id.to_bytes()), decoded.tek_id());
                match card.mtk_generation(&bytes) {
                    Ok(answer) => {
                        let TekOut::Clear { tek, salt: Some(salt) } = answer.tek else { panic!("TEK in the clear") };
                        if let std::collections::hash_map::Entry::Vacant(slot) = tek_arrival.entry(mki) {
                            slot.insert(at);
                            let k = SrtpMasterKey::new(mki, tek, salt);
                            rtp_rx.add_key(&k);
                            rtcp_rx.add_key(&k);
                        }
                    }
                    // The current TEK repeated after the next was announced: the card already
                    // holds it and refuses the lower TEK ID (P-6 step 5).
                    Err(_) => assert!(tek_arrival.contains_key(&mki), "an STKM for an unknown TEK was refused"),
                }
            }
            Event::Srtp(mut packet) => {
                let mki = Mki::from_bytes(packet[packet.len() - 16..packet.len() - 10].try_into().unwrap());
                first_use.entry(mki).or_insert(at);
                rtp_rx.unprotect(&mut packet).unwrap();
                let seq = u16::from_be_bytes([packet[2], packet[3]]);
                assert_eq!(Some(&packet), sent_rtp.get(&seq), "RTP {seq} back exactly");
                got_rtp += 1;
            }
            Event::Srtcp(mut packet) => {
                rtcp_rx.unprotect_rtcp(&mut packet).unwrap();
                assert!(sent_rtcp.contains(&packet), "RTCP back exactly");
                got_rtcp += 1;
            }
        }
    }
    assert_eq!(got_rtp, sent_rtp.len(), "every RTP packet came back");
    assert_eq!(got_rtcp, sent_rtcp.len(), "every RTCP packet came back");
    assert!(first_use.len() >= 3, "at least two TEK switches: {} TEKs", first_use.len());
    for (mki, used) in &first_use {
        let known = tek_arrival.get(mki).expect("every TEK used was delivered in an STKM");
        assert!(known <= used, "TEK {mki} known before its first packet");
    }
    // Every TEK after the first was announced ahead of its switch (lead 1 s).
    let mut switches: Vec<_> = first_use.iter().filter(|(m, _)| m.tek_id() > 1).collect();
    switches.sort_by_key(|(_, t)| **t);
    for (mki, used) in switches {
        let ahead = used.duration_since(tek_arrival[mki]);
        assert!(ahead >= Duration::from_millis(500), "TEK {mki} announced only {ahead:?} ahead");
    }
    assert!(stkms >= 7, "at least one STKM a second: {stkms}");

    let sdp = fs::read_to_string(d.join("stream.sdp")).unwrap();
    assert!(sdp.contains(&format!("m=video {} RTP/SAVP 96", dest.port())), "{sdp}");
    let metrics = http(b_metrics, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(metrics.contains("keycast_broadcast_stkms_sent_total"), "{metrics}");
    assert!(metrics.contains("keycast_broadcast_key_fetches_total"), "{metrics}");

    assert!(broadcaster.terminate().success(), "{}", broadcaster.log_text());
    let log = broadcaster.log_text();
    assert!(!log.contains(key["key"].as_str().unwrap()), "no key in the broadcaster's log");
    assert!(bsm.terminate().success());
}

/// The BSM's `[broadcast]` section: a token file (never an inline token), and only with `[admin]`,
/// whose listener serves it.
#[test]
fn bsm_broadcast_token_configuration() {
    use keycast::bsm_cmd::BsmSettings;
    let base = "fqdn = \"b.example.org\"\nstorage_key_file = \"s\"\nua_secret_file = \"u\"\n\
                [bsf]\naddress = \"127.0.0.1:1\"\ntoken_file = \"z\"\n";
    let path = Path::new("/etc/keycast/bsm.toml");
    let ok = BsmSettings::parse(
        &format!("{base}[admin]\ntoken_file = \"a\"\n[broadcast]\ntoken_file = \"b.token\"\n"),
        path,
    )
    .unwrap();
    assert_eq!(ok.broadcast_token_file.as_deref(), Some(Path::new("/etc/keycast/b.token")));
    let without_admin = BsmSettings::parse(&format!("{base}[broadcast]\ntoken_file = \"b\"\n"), path);
    assert!(without_admin.unwrap_err().to_string().contains("[broadcast] token_file needs [admin]"));
    let inline = BsmSettings::parse(&format!("{base}[admin]\ntoken_file = \"a\"\n[broadcast]\ntoken = \"x\"\n"), path);
    assert!(inline.is_err());
}
