//! SRTP with MKI against an independent implementation: GStreamer's `srtpenc`/`srtpdec` (libsrtp
//! inside), both directions, over UDP on 127.0.0.1. Pipelines after ../shared/reference/interop.md
//! §2. Skipped, with a message, when `gst-launch-1.0` or the SRTP plugin is missing (`.ci/run`
//! installs them).

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keycast_crypto::keys::{Tek, TekSalt};
use keycast_traffic::srtp::{Mki, SrtpMasterKey, SrtpPolicy, SrtpReceiver, SrtpSender};

const SSRC: u32 = 1234;
/// TEK ‖ salt as GStreamer takes it (30 octets), and the MKI SEK/PEK ID 0x00010001 ‖ TEK ID 1.
const KEY: [u8; 30] = {
    let mut k = [0u8; 30];
    let mut i = 0;
    while i < 30 {
        k[i] = i as u8;
        i += 1;
    }
    k
};
const MKI_HEX: &str = "000100010001";

fn master_key(key: &[u8; 30]) -> SrtpMasterKey {
    let tek: [u8; 16] = key[..16].try_into().unwrap();
    let salt: [u8; 14] = key[16..].try_into().unwrap();
    SrtpMasterKey::new(Mki::new(0x0001_0001, 1), Tek::from_bytes(tek), TekSalt::from_bytes(salt))
}

fn gstreamer() -> bool {
    let ok = Command::new("gst-inspect-1.0")
        .args(["--exists", "srtpenc"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: gst-launch-1.0 with the srtp plugin (gstreamer1.0-plugins-bad) not found");
    }
    ok
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keycast-gst-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn gst(args: &str) -> Command {
    let mut cmd = Command::new("gst-launch-1.0");
    cmd.arg("-q").arg("-e").args(args.split_whitespace()).stdout(Stdio::null()).stderr(Stdio::piped());
    cmd
}

/// A free UDP port on 127.0.0.1 (bound and released; the test binds it again at once).
fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
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
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    panic!("gst-launch-1.0 did not stop after SIGINT");
}

fn rtp(seq: u16, timestamp: u32, payload: &[u8]) -> Vec<u8> {
    [&[0x80, 96][..], &seq.to_be_bytes(), &timestamp.to_be_bytes(), &SSRC.to_be_bytes(), payload].concat()
}

/// Keycast protects, `srtpdec` decrypts: what reaches its filesink is every payload sent, in order.
fn keycast_to_srtpdec(receiver_key: &[u8; 30], dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let port = free_port();
    let out = dir.join("out.raw");
    let caps = format!(
        "application/x-srtp,media=(string)audio,clock-rate=(int)8000,encoding-name=(string)L16,channels=(int)1,\
         payload=(int)96,ssrc=(uint){SSRC},srtp-key=(buffer){},srtp-cipher=(string)aes-128-icm,\
         srtp-auth=(string)hmac-sha1-80,srtcp-cipher=(string)aes-128-icm,srtcp-auth=(string)hmac-sha1-80,\
         mki=(buffer){MKI_HEX}",
        hex::encode(receiver_key)
    );
    let child = gst(&format!(
        "udpsrc address=127.0.0.1 port={port} caps={caps} ! srtpdec ! rtpL16depay ! filesink location={}",
        out.display()
    ))
    .spawn()
    .unwrap();
    wait_bound(port);

    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut tx = SrtpSender::new(SrtpPolicy::rfc3711(), &master_key(&KEY));
    let mut sent = Vec::new();
    for i in 0..200u16 {
        // 160 samples of 16 bits: 20 ms at 8 kHz, a pattern that differs per packet.
        let payload: Vec<u8> = (0..320u32).map(|j| (u32::from(i) * 7 + j) as u8).collect();
        let mut pkt = rtp(1000 + i, u32::from(i) * 160, &payload);
        tx.protect(&mut pkt).unwrap();
        assert_eq!(&pkt[pkt.len() - 16..pkt.len() - 10], hex::decode(MKI_HEX).unwrap().as_slice());
        socket.send_to(&pkt, ("127.0.0.1", port)).unwrap();
        sent.extend_from_slice(&payload);
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(300));
    interrupt(child);
    (sent, std::fs::read(&out).unwrap_or_default())
}

#[test]
fn srtpdec_decrypts_what_keycast_protects_with_mki() {
    if !gstreamer() {
        return;
    }
    let dir = temp_dir("dec");
    let (sent, got) = keycast_to_srtpdec(&KEY, &dir);
    assert_eq!(got.len(), sent.len(), "srtpdec gave {} of {} octets", got.len(), sent.len());
    assert!(got == sent, "srtpdec's output differs from the payloads sent");

    // With a wrong key libsrtp authenticates nothing, so nothing comes out.
    let mut wrong = KEY;
    wrong[0] ^= 1;
    let (_, got) = keycast_to_srtpdec(&wrong, &dir);
    assert!(got.is_empty(), "a wrong key let {} octets through", got.len());
    let _ = std::fs::remove_dir_all(dir);
}

/// `srtpenc` protects a test tone; Keycast's receiver with `key` unprotects what it can. Returns
/// the payloads it recovered, the number of datagrams and the tone in the clear (same source).
fn srtpenc_to_keycast(key: &[u8; 30], dir: &Path) -> (Vec<u8>, usize, Vec<u8>) {
    const TONE: &str = "audiotestsrc num-buffers=50 ! audio/x-raw,format=S16BE,rate=8000,channels=1";
    let clear = dir.join("clear.raw");
    let status = gst(&format!("{TONE} ! filesink location={}", clear.display())).status().unwrap();
    assert!(status.success());

    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
    let port = socket.local_addr().unwrap().port();
    let mut sender = gst(&format!(
        "{TONE} ! rtpL16pay pt=96 ssrc={SSRC} ! srtpenc key={} mki={MKI_HEX} ! udpsink host=127.0.0.1 port={port}",
        hex::encode(KEY)
    ))
    .spawn()
    .unwrap();

    let mut rx = SrtpReceiver::new(SrtpPolicy::rfc3711());
    rx.add_key(&master_key(key));
    let mut got = Vec::new();
    let mut datagrams = 0;
    let mut buf = vec![0u8; 65536];
    while let Ok((n, _)) = socket.recv_from(&mut buf) {
        datagrams += 1;
        let mut pkt = buf[..n].to_vec();
        if rx.unprotect(&mut pkt).is_ok() {
            got.extend_from_slice(&pkt[12..]);
        }
    }
    let status = sender.wait().unwrap();
    assert!(status.success(), "the srtpenc pipeline failed");
    (got, datagrams, std::fs::read(&clear).unwrap())
}

#[test]
fn keycast_decrypts_what_srtpenc_protects_with_mki() {
    if !gstreamer() {
        return;
    }
    let dir = temp_dir("enc");
    let (got, datagrams, clear) = srtpenc_to_keycast(&KEY, &dir);
    assert!(datagrams > 0, "srtpenc sent nothing");
    assert_eq!(got.len(), clear.len(), "recovered {} of {} octets", got.len(), clear.len());
    assert!(got == clear, "the recovered tone differs from the clear one");

    let mut wrong = KEY;
    wrong[5] ^= 0x80;
    let (got, datagrams, _) = srtpenc_to_keycast(&wrong, &dir);
    assert!(datagrams > 0);
    assert!(got.is_empty(), "a wrong key recovered {} octets", got.len());
    let _ = std::fs::remove_dir_all(dir);
}
