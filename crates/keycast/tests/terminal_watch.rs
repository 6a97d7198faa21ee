//! `keycast terminal watch` as a process: a card file made by `keycast card new`, a SEK put into
//! it by an LTKM sealed here, and this test as the broadcaster (STKMs and SRTP over UDP on
//! 127.0.0.1) and as the player (clear RTP and RTCP, compared byte for byte); the SDP file, the
//! summary, and the card file's record of the last STKM are checked after the process stops by
//! itself (--packets).

mod served;

use std::io::{Read as _, Write as _};
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use served::stack::{IMPI, card_with_key};

use keycast_card::persist::CardFile;
use keycast_crypto::keys::{SekPek, Tek, TekSalt};
use keycast_mikey::{
    KeyDomainId, ProtectionAfterReception, SekPekId, StkmContent, StkmExt, TekField, TrafficProtectionProtocol,
};
use keycast_terminal::media::srtp::{Mki, SrtpMasterKey, SrtpPolicy, SrtpSender};

const BSM: &str = "bmsc.example.org";
const BTID: &str = "btid-1@bsf.example.org";
const SEK: [u8; 16] = [0x21; 16];
const RAND: [u8; 16] = [0x43; 16];
const TS0: u32 = 3_989_000_000;

fn kd() -> KeyDomainId {
    KeyDomainId::from_mcc_mnc("001", "01").unwrap()
}

fn sek_id() -> SekPekId {
    SekPekId { key_group: 3, key_number: 1 }
}

/// `keycast card new`, then the SEK (3,1) delivered into the card file by an LTKM.
fn make_card(path: &Path) {
    card_with_key(path, BSM, BTID, sek_id(), &SekPek::from_bytes(SEK), RAND, TS0, TS0 + 100_000);
}

fn master(tek_id: u16) -> SrtpMasterKey {
    let b = u8::try_from(tek_id).unwrap().wrapping_mul(0x11);
    SrtpMasterKey::new(
        Mki::new(u32::from_be_bytes(sek_id().to_bytes()), tek_id),
        Tek::from_bytes([b; 16]),
        TekSalt::from_bytes([!b; 14]),
    )
}

fn stkm(tek_id: u16, ts: u32) -> Vec<u8> {
    let m = master(tek_id);
    StkmContent {
        csb_id: 0x0b0b_0b0b,
        key_domain_id: kd(),
        sek_pek_id: sek_id(),
        tek_id,
        ts,
        ext: Some(StkmExt {
            protection_after_reception: ProtectionAfterReception::ServiceProtectionOnly,
            traffic_protection_protocol: TrafficProtectionProtocol::Srtp,
            traffic_authentication: true,
            tbk_id: None,
            access_criteria: None,
        }),
        tek: TekField::Clear(m.key().clone()),
        salt: Some(m.salt().clone()),
    }
    .seal(&SekPek::from_bytes(SEK), &RAND)
    .unwrap()
}

fn rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 3600).to_be_bytes());
    p.extend_from_slice(&0x0bad_cafe_u32.to_be_bytes());
    p.extend((0..1000u32).map(|i| (i as u8) ^ (seq as u8)));
    p
}

/// Two adjacent free UDP ports on 127.0.0.1, bound (the caller keeps or releases them).
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

#[test]
fn watch_forwards_clear_rtp_from_a_card_file_and_stops_after_n_packets() {
    let dir = tempfile::tempdir().unwrap();
    let card = dir.path().join("card.kc");
    let sdp = dir.path().join("watch.sdp");
    make_card(&card);

    // The player's sockets (kept), and free ports for the watcher (released just before it starts).
    let (player, player_rtcp) = port_pair();
    player.set_read_timeout(Some(Duration::from_millis(150))).unwrap();
    player_rtcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let rtp_out = player.local_addr().unwrap();
    let (srtp_probe, srtcp_probe) = port_pair();
    let srtp_addr = srtp_probe.local_addr().unwrap();
    let srtcp_addr = srtcp_probe.local_addr().unwrap();
    let stkm_probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    let stkm_addr = stkm_probe.local_addr().unwrap();
    drop((srtp_probe, srtcp_probe, stkm_probe));

    let packets = 10u16;
    let mut child = Command::new(env!("CARGO_BIN_EXE_keycast"))
        .args(["terminal", "watch", "--card", card.to_str().unwrap()])
        .args(["--stkm-port", &stkm_addr.port().to_string()])
        .args(["--srtp", &srtp_addr.to_string(), "--rtp-out", &rtp_out.to_string()])
        .args(["--sdp", sdp.to_str().unwrap(), "--rtpmap", "H264/90000"])
        .args(["--packets", &packets.to_string(), "--duration", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut sender = SrtpSender::new(SrtpPolicy::rfc3711(), &master(1));
    let mut buf = vec![0u8; 4096];
    let mut seq = 0u16;
    let mut ts = TS0 + 1;
    // Until the watcher is up: an STKM, then a packet, until a clear packet comes back.
    let started = Instant::now();
    let first = loop {
        assert!(started.elapsed() < Duration::from_secs(30), "the watcher never answered");
        tx.send_to(&stkm(1, ts), stkm_addr).unwrap();
        ts += 1;
        std::thread::sleep(Duration::from_millis(30));
        seq += 1;
        let mut p = rtp(seq);
        sender.protect(&mut p).unwrap();
        tx.send_to(&p, srtp_addr).unwrap();
        if let Ok((n, _)) = player.recv_from(&mut buf) {
            break buf[..n].to_vec();
        }
    };
    assert_eq!(first, rtp(seq), "byte-identical clear RTP");
    // SRTCP too.
    let rtcp = [&[0x80, 200, 0, 6][..], &0x0bad_cafe_u32.to_be_bytes(), &[5; 20]].concat();
    let mut p = rtcp.clone();
    sender.protect_rtcp(&mut p).unwrap();
    tx.send_to(&p, srtcp_addr).unwrap();
    let (n, _) = player_rtcp.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], &rtcp[..]);
    // A TEK change, then the rest.
    tx.send_to(&stkm(2, ts), stkm_addr).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    sender.set_key(&master(2));
    player.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for _ in 1..packets {
        seq += 1;
        let mut p = rtp(seq);
        sender.protect(&mut p).unwrap();
        tx.send_to(&p, srtp_addr).unwrap();
        let (n, _) = player.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], &rtp(seq)[..]);
    }

    // It stops by itself after N packets and prints the summary.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the watcher did not stop after --packets");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "{out}\n{err}");
    assert!(out.contains(&format!("{packets} out")), "{out}");
    assert!(out.contains("TEKs: 2 installed"), "{out}");
    assert!(out.contains(&format!("{}", master(2).mki())), "{out}");
    assert!(err.contains("watching: STKMs on"), "{err}");

    let sdp = std::fs::read_to_string(&sdp).unwrap();
    assert!(sdp.contains(&format!("m=video {} RTP/AVP 96\r\n", rtp_out.port())), "{sdp}");
    assert!(sdp.contains("a=rtpmap:96 H264/90000\r\n"), "{sdp}");
    assert!(sdp.contains("c=IN IP4 127.0.0.1\r\n"), "{sdp}");

    // The card saved the last live STKM it accepted (TEK ID 2) on the way out.
    let usim = CardFile::new(&card).load().unwrap();
    let entry = usim.mbms.msk(kd(), sek_id()).unwrap();
    assert_eq!(entry.last_tek_id, Some(2));
    assert_eq!(entry.ts, Some(ts));
}

#[test]
fn watch_help_names_its_options_and_a_missing_card_file_fails() {
    let out = Command::new(env!("CARGO_BIN_EXE_keycast")).args(["terminal", "watch", "--help"]).output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for opt in
        ["--card", "--stkm-port", "--srtp", "--rtp-out", "--sdp", "--bsm", "--bsf", "--rcc", "--packets", "--duration"]
    {
        assert!(help.contains(opt), "{opt} in\n{help}");
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keycast"))
        .args(["terminal", "watch", "--card", dir.path().join("none.kc").to_str().unwrap(), "--duration", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("card file"));
    let out = Command::new(env!("CARGO_BIN_EXE_keycast"))
        .args(["terminal", "watch", "--card", "x", "--rcc", "rccm2"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--roc-rate"));
}

/// With --bsm and --bsf, an STKM whose key the card lacks makes the terminal ask for it: it
/// bootstraps with the BSF first (here a stand-in that refuses), and the summary reports the
/// failed request; the stream itself is untouched.
#[test]
fn a_missing_key_starts_bootstrapping_toward_the_configured_bsf() {
    use std::io::BufRead as _;
    use std::net::TcpListener;

    let dir = tempfile::tempdir().unwrap();
    let card = dir.path().join("card.kc");
    make_card(&card);
    let bsf = TcpListener::bind("127.0.0.1:0").unwrap();
    let bsf_addr = bsf.local_addr().unwrap();
    let bsm = TcpListener::bind("127.0.0.1:0").unwrap();
    let bsm_addr = bsm.local_addr().unwrap();
    // The stand-in BSF: records each request head and answers 500.
    let recorder = std::thread::spawn(move || {
        let mut heads = Vec::new();
        bsf.set_nonblocking(false).unwrap();
        for stream in bsf.incoming().take(1) {
            let mut stream = stream.unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            stream
                .write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .unwrap();
            heads.push(head);
        }
        heads
    });

    let (srtp_probe, srtcp_probe) = port_pair();
    let srtp_addr = srtp_probe.local_addr().unwrap();
    let stkm_probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    let stkm_addr = stkm_probe.local_addr().unwrap();
    drop((srtp_probe, srtcp_probe, stkm_probe));
    let child = Command::new(env!("CARGO_BIN_EXE_keycast"))
        .args(["terminal", "watch", "--card", card.to_str().unwrap()])
        .args(["--stkm-port", &stkm_addr.port().to_string(), "--srtp", &srtp_addr.to_string()])
        .args(["--rtp-out", "127.0.0.1:9", "--duration", "4"])
        .args(["--bsm", &format!("http://{bsm_addr}"), "--bsm-fqdn", BSM])
        .args(["--bsf", &format!("http://{bsf_addr}"), "--bsf-host", "bsf.example.org"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // An STKM under a SEK/PEK the card does not hold (3,9), until the BSF hears from the terminal.
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let unknown = SekPekId { key_group: 3, key_number: 9 };
    let m = master(1);
    let stkm = StkmContent {
        csb_id: 1,
        key_domain_id: kd(),
        sek_pek_id: unknown,
        tek_id: 1,
        ts: TS0 + 5,
        ext: None,
        tek: TekField::Clear(m.key().clone()),
        salt: Some(m.salt().clone()),
    }
    .seal(&SekPek::from_bytes([0x99; 16]), &RAND)
    .unwrap();
    for _ in 0..20 {
        tx.send_to(&stkm, stkm_addr).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        if recorder.is_finished() {
            break;
        }
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let heads = recorder.join().unwrap();
    assert_eq!(heads.len(), 1, "the BSF was asked");
    assert!(heads[0].starts_with("GET "), "{}", heads[0]);
    assert!(heads[0].contains(IMPI), "bootstrapping as the card's IMPI: {}", heads[0]);
    assert!(stdout.contains("key requests: 1"), "{stdout}");
    assert!(stdout.contains("00f11000030009: failed"), "{stdout}");
}
