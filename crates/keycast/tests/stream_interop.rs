//! The broadcaster's stream against independent tools (docs/interop.md): a GStreamer test tone
//! goes as RTP into `keycast serve broadcast` (keys from `keycast serve bsm`); GStreamer's
//! `srtpdec` (libsrtp) decrypts the SRTP that comes out with the TEK and salt that `keycast
//! inspect` takes from the broadcaster's STKM and the MKI SEK/PEK ID ‖ TEK ID, giving back the
//! tone byte for byte, and nothing with a wrong key; tshark shows every packet's MKI as sent.
//! Skipped, with a message, when GStreamer's SRTP plugin or tshark is missing.

mod served;

use std::net::{SocketAddrV4, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keycast::pcap::PcapWriter;
use keycast_mikey::Stkm;
use served::stack::{BsmWithKey, free_rtp_port, udp_pair};

const SSRC: u32 = 1234;
/// 100 buffers of 1 024 samples: 12.8 s of 8 kHz tone, sent as fast as GStreamer goes.
const TONE: &str = "audiotestsrc num-buffers=100 ! audio/x-raw,format=S16BE,rate=8000,channels=1";

fn have(tool: &str, args: &[&str]) -> bool {
    let ok =
        Command::new(tool).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: {tool} {} not available", args.join(" "));
    }
    ok
}

fn gst(pipeline: &str) -> Command {
    let mut cmd = Command::new("gst-launch-1.0");
    cmd.arg("-q").arg("-e").args(pipeline.split_whitespace()).stdout(Stdio::null()).stderr(Stdio::piped());
    cmd
}

/// Waits until some process listens on UDP `port` (Linux `/proc/net/udp`).
fn wait_bound(port: u16) {
    let needle = format!(":{port:04X} ");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::fs::read_to_string("/proc/net/udp").is_ok_and(|t| t.contains(&needle)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing bound UDP port {port} within 20 s");
}

/// Ends a `gst-launch-1.0 -e` pipeline with SIGINT, so it sends EOS and its filesink flushes.
fn interrupt(mut child: Child) {
    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "gst-launch-1.0 did not stop after SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    }
}

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
