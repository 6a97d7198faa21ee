//! The broadcaster's stream against independent tools (docs/interop.md): a GStreamer test tone
//! goes as RTP into `keycast serve broadcast` (keys from `keycast serve bsm`); GStreamer's
//! `srtpdec` (libsrtp) decrypts the SRTP that comes out with the TEK and salt that `keycast
//! inspect` takes from the broadcaster's STKM and the MKI SEK/PEK ID ‖ TEK ID, giving back the
//! tone byte for byte, and nothing with a wrong key; tshark shows every packet's MKI as sent.
//! Skipped, with a message, when GStreamer's SRTP plugin or tshark is missing.

mod served;

use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keycast::pcap::PcapWriter;
use keycast_crypto::keys::{SekPek, Tek, TekSalt};
use keycast_mikey::{
    KeyDomainId, ProtectionAfterReception, SekPekId, Stkm, StkmContent, StkmExt, TekField, TrafficProtectionProtocol,
};
use served::Served;
use served::gst::{LIVE_TONE, free_udp, gst, have, interrupt, wait_bound, wait_log};
use served::stack::{BsmWithKey, FQDN, card_with_key, free_rtp_port, udp_pair};

const SSRC: u32 = 1234;
/// 100 buffers of 1 024 samples: 12.8 s of 8 kHz tone, sent as fast as GStreamer goes.
const TONE: &str = "audiotestsrc num-buffers=100 ! audio/x-raw,format=S16BE,rate=8000,channels=1";

/// Every datagram `socket` receives until `stop`, appended to `into`.
fn collect(socket: UdpSocket, into: Arc<Mutex<Vec<Vec<u8>>>>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let mut buf = [0u8; 4096];
        while !stop.load(Ordering::Relaxed) {
            if let Ok(n) = socket.recv(&mut buf) {
                into.lock().unwrap().push(buf[..n].to_vec());
            }
        }
    })
}

/// The first value under `key` anywhere in `json` that is a string.
fn find_str<'a>(json: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    match json {
        serde_json::Value::Object(m) => m
            .get(key)
            .and_then(|v| v.as_str().or_else(|| v.get("value").and_then(|v| v.as_str())))
            .or_else(|| m.values().find_map(|v| find_str(v, key))),
        serde_json::Value::Array(a) => a.iter().find_map(|v| find_str(v, key)),
        _ => None,
    }
}

/// `srtpdec` with `key` (TEK ‖ salt) and `mki` decrypting `packets`: what its filesink got.
fn srtpdec(dir: &Path, key: &[u8], mki: &[u8], packets: &[Vec<u8>]) -> Vec<u8> {
    let out = dir.join("out.raw");
    let _ = std::fs::remove_file(&out);
    let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let caps = format!(
        "application/x-srtp,media=(string)audio,clock-rate=(int)8000,encoding-name=(string)L16,channels=(int)1,\
         payload=(int)96,ssrc=(uint){SSRC},srtp-key=(buffer){},srtp-cipher=(string)aes-128-icm,\
         srtp-auth=(string)hmac-sha1-80,srtcp-cipher=(string)aes-128-icm,srtcp-auth=(string)hmac-sha1-80,\
         mki=(buffer){}",
        hex::encode(key),
        hex::encode(mki)
    );
    let child = gst(&format!(
        "udpsrc address=127.0.0.1 port={port} caps={caps} ! srtpdec ! rtpL16depay ! filesink location={}",
        out.display()
    ))
    .spawn()
    .unwrap();
    wait_bound(port);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    for p in packets {
        socket.send_to(p, ("127.0.0.1", port)).unwrap();
        std::thread::sleep(Duration::from_micros(300));
    }
    std::thread::sleep(Duration::from_millis(300));
    interrupt(child);
    std::fs::read(&out).unwrap_or_default()
}

#[test]
fn broadcaster_srtp_decrypted_by_gstreamer_and_its_mki_seen_by_tshark() {
    if !have("gst-inspect-1.0", &["--exists", "srtpdec"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let stack = BsmWithKey::start(d);

    // The tone in the clear, for comparison.
    let clear_file = d.join("clear.raw");
    assert!(gst(&format!("{TONE} ! filesink location={}", clear_file.display())).status().unwrap().success());
    let clear = std::fs::read(&clear_file).unwrap();

    // Receiving side: SRTP on (P, P+1), STKMs on S. One TEK for the whole run (period 600 s).
    let (srtp_rx, srtcp_rx) = udp_pair();
    let stkm_rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dest = srtp_rx.local_addr().unwrap();
    let stkm_port = stkm_rx.local_addr().unwrap().port();
    let rtp_in = free_rtp_port();
    let (mut broadcaster, _) = stack.broadcaster(d, rtp_in, dest, stkm_port, 600, 5);
    let stop = Arc::new(AtomicBool::new(false));
    let (srtp, stkms) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
    let threads = [collect(srtp_rx, srtp.clone(), stop.clone()), collect(stkm_rx, stkms.clone(), stop.clone())];
    drop(srtcp_rx);

    // Once the broadcaster has its keys (its first STKM), play the tone into it.
    let deadline = Instant::now() + Duration::from_secs(15);
    while stkms.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no STKM within 15 s:\n{}", broadcaster.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = gst(&format!("{TONE} ! rtpL16pay pt=96 ssrc={SSRC} ! udpsink host=127.0.0.1 port={}", rtp_in.port()))
        .status()
        .unwrap();
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let srtp = std::mem::take(&mut *srtp.lock().unwrap());
    let stkms = std::mem::take(&mut *stkms.lock().unwrap());
    assert!(broadcaster.terminate().success(), "{}", broadcaster.log_text());
    assert!(!stkms.is_empty(), "no STKM from the broadcaster");
    assert!(!srtp.is_empty(), "no SRTP from the broadcaster");

    // The key, as an operator would get it: `keycast inspect` opens the STKM with the SEK and RAND.
    let stkm = &stkms[0];
    let tek_id = Stkm::decode(stkm).unwrap().tek_id();
    let stkm_file = d.join("stkm.hex");
    std::fs::write(&stkm_file, hex::encode(stkm)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keycast"))
        .args(["inspect", "--json", "--rand", &hex::encode(stack.key.rand), stkm_file.to_str().unwrap()])
        .env("KEYCAST_SEK", &stack.key.hex)
        .output()
        .unwrap();
    assert!(out.status.success(), "inspect: {}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tek = hex::decode(find_str(&json, "tek").expect("inspect shows the TEK")).unwrap();
    let salt = hex::decode(find_str(&json, "salt").expect("inspect shows the salt")).unwrap();
    assert_eq!((tek.len(), salt.len()), (16, 14));
    let mki = [stack.key.sek_id.to_bytes().as_slice(), &tek_id.to_be_bytes()].concat();
    for p in &srtp {
        assert_eq!(&p[p.len() - 16..p.len() - 10], mki.as_slice(), "every packet carries MKI SEK/PEK ID ‖ TEK ID");
    }

    // srtpdec gives back the tone, byte for byte; with a wrong key, nothing.
    let key = [tek.as_slice(), &salt].concat();
    let got = srtpdec(d, &key, &mki, &srtp);
    assert_eq!(got.len(), clear.len(), "srtpdec gave {} of {} octets", got.len(), clear.len());
    assert!(got == clear, "srtpdec's output differs from the tone");
    let mut wrong = key.clone();
    wrong[3] ^= 0x10;
    assert!(srtpdec(d, &wrong, &mki, &srtp).is_empty(), "a wrong key let something through");

    // tshark: a capture that opens with an SDP offer naming a 6-byte MKI, then the SRTP packets.
    if have("tshark", &["--version"]) {
        let key_b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &key);
        let sdp = format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=News\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {} RTP/SAVP 96\r\n\
             a=rtpmap:96 L16/8000\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{key_b64}|2^31|1:6\r\n",
            dest.port()
        );
        let invite = format!(
            "INVITE sip:news@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1\r\n\
             From: <sip:t@127.0.0.1>;tag=1\r\nTo: <sip:news@127.0.0.1>\r\nCall-ID: 1@keycast\r\nCSeq: 1 INVITE\r\n\
             Contact: <sip:t@127.0.0.1>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        );
        let lo = |port| SocketAddrV4::new([127, 0, 0, 1].into(), port);
        let mut w = PcapWriter::new();
        w.add_udp(1_700_000_000, 0, lo(5060), lo(5060), invite.as_bytes()).unwrap();
        for (i, p) in srtp.iter().enumerate() {
            w.add_udp(1_700_000_001, u32::try_from(i).unwrap(), lo(40000), lo(dest.port()), p).unwrap();
        }
        let pcap = d.join("srtp.pcap");
        std::fs::write(&pcap, w.finish()).unwrap();
        let out = Command::new("tshark")
            .args(["-r", pcap.to_str().unwrap(), "-Y", "srtp.mki", "-T", "fields", "-e", "srtp.mki"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let shown: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned).collect();
        assert_eq!(shown.len(), srtp.len(), "tshark dissected every packet as SRTP");
        assert!(shown.iter().all(|m| *m == hex::encode(&mki)), "tshark's MKI: {:?}", &shown[..3.min(shown.len())]);
    }
    let mut bsm = stack.bsm;
    assert!(bsm.terminate().success());
}

/// `keycast terminal watch` on a card file holding `sek_id` (with `stkm_port`, SRTP on `srtp`,
/// clear RTP out to `rtp_out`, the SDP in `d/watch.sdp`).
fn watch(d: &Path, card: &Path, stkm_port: u16, srtp: SocketAddr, rtp_out: SocketAddr) -> Served {
    let sdp = d.join("watch.sdp");
    Served::start(
        &[
            "terminal",
            "watch",
            "--card",
            card.to_str().unwrap(),
            "--stkm-port",
            &stkm_port.to_string(),
            "--srtp",
            &srtp.to_string(),
            "--rtp-out",
            &rtp_out.to_string(),
            "--sdp",
            sdp.to_str().unwrap(),
            "--media",
            "audio",
            "--rtpmap",
            "L16/8000",
            "--duration",
            "60",
        ],
        d.join("watch.log"),
        &[],
    )
}

/// A player for the terminal's clear stream: GStreamer reading the SDP the terminal wrote.
fn player(d: &Path, rtp_out: SocketAddr) -> (Child, std::path::PathBuf) {
    let out = d.join("played.raw");
    let sdp = d.join("watch.sdp");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sdp.exists() {
        assert!(Instant::now() < deadline, "no SDP from the terminal");
        std::thread::sleep(Duration::from_millis(20));
    }
    let child = gst(&format!(
        "filesrc location={} ! sdpdemux ! rtpL16depay ! filesink location={}",
        sdp.display(),
        out.display()
    ))
    .spawn()
    .unwrap();
    wait_bound(rtp_out.port());
    (child, out)
}

/// The summary line `SRTP packets: …` the watcher printed when it stopped.
fn summary(watcher: &mut Served) -> String {
    assert!(watcher.interrupt().success(), "{}", watcher.log_text());
    watcher.stdout_text()
}

#[test]
fn gstreamer_srtpenc_stream_opened_by_keycast_terminal_watch() {
    if !have("gst-inspect-1.0", &["--exists", "srtpenc"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A SEK in the card, and the TEK ‖ salt that srtpenc will use, sent to the terminal in an STKM.
    let (sek_id, sek, rand) = (SekPekId { key_group: 3, key_number: 1 }, SekPek::from_bytes([0x21; 16]), [0x43; 16]);
    let ts = 3_989_000_100;
    let card = d.join("card.json");
    card_with_key(&card, FQDN, "btid-1@bsf.example.org", sek_id, &sek, rand, ts - 100, ts + 100_000);
    let key: Vec<u8> = (0u8..30).map(|i| i.wrapping_mul(7).wrapping_add(1)).collect();
    // Each run sends a fresh STKM (TS one higher): the card file remembers the last TS it took.
    let stkm = |ts| {
        StkmContent {
            csb_id: 0x0b0b_0b0b,
            key_domain_id: KeyDomainId::from_mcc_mnc("001", "01").unwrap(),
            sek_pek_id: sek_id,
            tek_id: 1,
            ts,
            ext: Some(StkmExt {
                protection_after_reception: ProtectionAfterReception::ServiceProtectionOnly,
                traffic_protection_protocol: TrafficProtectionProtocol::Srtp,
                traffic_authentication: true,
                tbk_id: None,
                access_criteria: None,
            }),
            tek: TekField::Clear(Tek::from_bytes(key[..16].try_into().unwrap())),
            salt: Some(TekSalt::from_bytes(key[16..].try_into().unwrap())),
        }
        .seal(&sek, &rand)
        .unwrap()
    };
    let mki = [sek_id.to_bytes().as_slice(), &1u16.to_be_bytes()].concat();

    let clear_file = d.join("clear.raw");
    assert!(gst(&format!("{LIVE_TONE} ! filesink location={}", clear_file.display())).status().unwrap().success());
    let clear = std::fs::read(&clear_file).unwrap();

    let run = |srtpenc_key: &[u8], ts: u32| {
        let (stkm_port, srtp, rtp_out) = (free_udp(), free_rtp_port(), free_rtp_port());
        let mut watcher = watch(d, &card, stkm_port, srtp, rtp_out);
        wait_bound(srtp.port());
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(&stkm(ts), ("127.0.0.1", stkm_port)).unwrap();
        wait_log(&watcher, "TekInstalled");
        let (play, played) = player(d, rtp_out);
        let status = gst(&format!(
            "{LIVE_TONE} ! rtpL16pay pt=96 ssrc={SSRC} ! srtpenc key={} mki={} ! udpsink host=127.0.0.1 port={}",
            hex::encode(srtpenc_key),
            hex::encode(&mki),
            srtp.port()
        ))
        .status()
        .unwrap();
        assert!(status.success());
        std::thread::sleep(Duration::from_millis(500));
        interrupt(play);
        (std::fs::read(&played).unwrap_or_default(), summary(&mut watcher))
    };

    let (played, out) = run(&key, ts);
    assert_eq!(played.len(), clear.len(), "the player got {} of {} octets\n{out}", played.len(), clear.len());
    assert!(played == clear, "the played tone differs from the clear one");
    assert!(out.contains(" 0 authentication"), "{out}");

    // srtpenc with another key: every packet fails authentication, nothing is played.
    let mut wrong = key.clone();
    wrong[0] ^= 1;
    let (played, out) = run(&wrong, ts + 1);
    assert!(played.is_empty(), "a wrong key let {} octets through", played.len());
    assert!(out.contains(", 0 out;"), "{out}");
}

#[test]
fn gstreamer_tone_through_broadcaster_and_terminal_plays_byte_identical() {
    if !have("gst-inspect-1.0", &["--exists", "sdpdemux"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let stack = BsmWithKey::start(d);
    let k = &stack.key;
    let card = d.join("card.json");
    card_with_key(&card, FQDN, "btid-1@bsf.example.org", k.sek_id, &k.sek, k.rand, k.ts_low, k.ts_high);

    let clear_file = d.join("clear.raw");
    assert!(gst(&format!("{LIVE_TONE} ! filesink location={}", clear_file.display())).status().unwrap().success());
    let clear = std::fs::read(&clear_file).unwrap();

    // tone → RTP → broadcaster → SRTP + STKMs → terminal → clear RTP → player (via the terminal's SDP).
    let (stkm_port, srtp, rtp_out, rtp_in) = (free_udp(), free_rtp_port(), free_rtp_port(), free_rtp_port());
    let mut watcher = watch(d, &card, stkm_port, srtp, rtp_out);
    wait_bound(srtp.port());
    let (mut broadcaster, _) = stack.broadcaster(d, rtp_in, srtp, stkm_port, 600, 5);
    wait_log(&watcher, "TekInstalled");
    let (play, played) = player(d, rtp_out);
    let status =
        gst(&format!("{LIVE_TONE} ! rtpL16pay pt=96 ssrc={SSRC} ! udpsink host=127.0.0.1 port={}", rtp_in.port()))
            .status()
            .unwrap();
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(500));
    interrupt(play);
    let out = summary(&mut watcher);
    assert!(broadcaster.terminate().success());
    let played = std::fs::read(&played).unwrap_or_default();
    assert_eq!(played.len(), clear.len(), "the player got {} of {} octets\n{out}", played.len(), clear.len());
    assert!(played == clear, "the played tone differs from the tone sent");
    let mut bsm = stack.bsm;
    assert!(bsm.terminate().success());
}
