//! `keycast serve broadcast` against a real `keycast serve bsm` on loopback: the BSM makes a
//! SEK for a streaming service's key group; the broadcaster fetches it over the broadcaster API,
//! draws a TEK every 2 s (announced 1 s ahead) and turns the RTP the test sends into SRTP. On the
//! receiving side a card emulator holding the SEK (LTKM sealed here with the key and RAND the BSM
//! answers) opens the STKMs from the STKM port, and keycast-traffic unprotects the SRTP and SRTCP
//! back to exactly what was sent, across TEK switches.

mod served;

use std::collections::HashMap;
use std::fs;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use keycast_card::mbms::{MbmsStore, TekOut};
use keycast_crypto::keys::Smk;
use keycast_mikey::{KeyDomainId, KeyValidity, LtkmContent, LtkmExt, SecurityPolicy, SecurityPolicyExt, Stkm};
use keycast_traffic::srtp::{Mki, SrtpMasterKey, SrtpPolicy, SrtpReceiver};
use served::stack::{ADMIN, BROADCAST, BsmWithKey, FQDN, free_rtp_port, http, live, udp_pair};

const BTID: &str = "AAAAAAAAAAAAAAAAAAAAAA==@bsf.example.org";

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
    let stack = BsmWithKey::start(d);
    let (admin_port, key) = (stack.admin_port, &stack.key);

    // The broadcaster API: its own token only.
    assert!(live(admin_port, ADMIN).starts_with("HTTP/1.1 401"));
    assert!(live(admin_port, "wrong").starts_with("HTTP/1.1 401"));
    assert!(live(admin_port, BROADCAST).starts_with("HTTP/1.1 200"));
    let (sek, rand, sek_id, ts_low, ts_high) = (key.sek.clone(), key.rand, key.sek_id, key.ts_low, key.ts_high);
    assert!(!fs::read_to_string(d.join("bsm.log")).unwrap().contains(&key.hex), "no key in logs");

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
    let rtp_in = free_rtp_port();
    let (mut broadcaster, b_metrics) = stack.broadcaster(d, rtp_in, dest, stkm_port, 2, 1);

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
    assert!(!log.contains(&key.hex), "no key in the broadcaster's log");
    let mut bsm = stack.bsm;
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
