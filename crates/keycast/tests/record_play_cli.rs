//! `keycast terminal record` and `keycast terminal play` as processes: a GStreamer test tone goes
//! as RTP into `keycast serve broadcast` (keys from `keycast serve bsm`), `keycast terminal
//! record` opens the SRTP with TEKs from its card file and writes the adapted PDCF, and
//! `keycast terminal play --es` gives back the tone byte for byte through the same card (a key
//! with play-back rights, policy 0x05), and `--rtp-out` sends it as RTP. A second card, whose
//! key forbids play-back (policy 0x00), is refused. Skipped, with a message, when gst-launch-1.0 is missing.

mod served;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use keycast_mikey::SecurityPolicy;
use served::Served;
use served::gst::{LIVE_TONE, free_udp, gst, have, wait_bound, wait_log};
use served::stack::{BsmWithKey, FQDN, card_with_policy, free_rtp_port};

const SSRC: u32 = 4321;
const BTID: &str = "btid-1@bsf.example.org";

fn record(d: &Path, card: &Path, out: &Path, stkm_port: u16, srtp: SocketAddr, rtp_out: SocketAddr) -> Served {
    Served::start(
        &[
            "terminal",
            "record",
            "--card",
            card.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--stkm-port",
            &stkm_port.to_string(),
            "--srtp",
            &srtp.to_string(),
            "--rtp-out",
            &rtp_out.to_string(),
            "--media",
            "audio",
            "--rtpmap",
            "L16/8000",
            "--rights-issuer-url",
            "http://127.0.0.1:9/sprov",
            "--global-purchase-item-id",
            "news",
            "--duration",
            "60",
        ],
        d.join("record.log"),
        &[],
    )
}

/// `keycast terminal play FILE --card CARD --es OUT`: exit status, standard output, standard error.
fn play(file: &Path, card: &Path, es: &Path) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_keycast"))
        .args(["terminal", "play", file.to_str().unwrap(), "--card", card.to_str().unwrap()])
        .args(["--es", es.to_str().unwrap()])
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn gstreamer_tone_recorded_by_the_terminal_plays_back_byte_identical() {
    if !have("gst-launch-1.0", &["--version"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let stack = BsmWithKey::start(d);
    let k = &stack.key;
    let card = d.join("card.json");
    card_with_policy(
        &card,
        FQDN,
        BTID,
        k.sek_id,
        &k.sek,
        k.rand,
        k.ts_low,
        k.ts_high,
        SecurityPolicy::UnlimitedWithinWindow,
    );
    let ppt_card = d.join("ppt-card.json");
    card_with_policy(&ppt_card, FQDN, BTID, k.sek_id, &k.sek, k.rand, k.ts_low, k.ts_high, SecurityPolicy::PayPerTime);

    let clear_file = d.join("clear.raw");
    assert!(gst(&format!("{LIVE_TONE} ! filesink location={}", clear_file.display())).status().unwrap().success());
    let clear = std::fs::read(&clear_file).unwrap();
    assert!(!clear.is_empty());

    // tone → RTP → broadcaster → SRTP + STKMs → terminal record → rec.mp4.
    let (stkm_port, srtp, rtp_out, rtp_in) = (free_udp(), free_rtp_port(), free_rtp_port(), free_rtp_port());
    let rec = d.join("rec.mp4");
    let mut recorder = record(d, &card, &rec, stkm_port, srtp, rtp_out);
    wait_bound(srtp.port());
    let (mut broadcaster, _) = stack.broadcaster(d, rtp_in, srtp, stkm_port, 600, 5);
    wait_log(&recorder, "TekInstalled");
    let status =
        gst(&format!("{LIVE_TONE} ! rtpL16pay pt=96 ssrc={SSRC} ! udpsink host=127.0.0.1 port={}", rtp_in.port()))
            .status()
            .unwrap();
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(500));
    assert!(recorder.interrupt().success(), "{}", recorder.log_text());
    let said = recorder.stdout_text();
    assert!(said.contains("recorded "), "{said}\n{}", recorder.log_text());
    assert!(broadcaster.terminate().success());

    // The file does not hold the tone in the clear.
    let file = std::fs::read(&rec).unwrap();
    assert!(!file.windows(256).any(|w| clear.windows(256).next() == Some(w)), "clear tone bytes in the recording");

    // Played back through the card that recorded it: the tone, byte for byte.
    let es = d.join("out.raw");
    let (code, stdout, stderr) = play(&rec, &card, &es);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let played = std::fs::read(&es).unwrap();
    assert_eq!(played.len(), clear.len(), "played {} of {} octets\n{stdout}\n{said}", played.len(), clear.len());
    assert!(played == clear, "the played-back tone differs from the tone sent");
    assert!(stdout.contains("played "), "{stdout}");

    // Played back as RTP (as fast as possible): the same tone in the payloads, in order.
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keycast"))
        .args(["terminal", "play", rec.to_str().unwrap(), "--card", card.to_str().unwrap(), "--pace", "fast"])
        .args(["--rtp-out", &rx.local_addr().unwrap().to_string(), "--payload-type", "97"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (mut tone, mut seqs) = (Vec::new(), Vec::new());
    let mut buf = [0u8; 2048];
    while let Ok(n) = rx.recv(&mut buf) {
        assert!(n >= 12 && buf[0] == 0x80 && buf[1] == 97, "an RTP packet with PT 97");
        seqs.push(u16::from_be_bytes([buf[2], buf[3]]));
        tone.extend_from_slice(&buf[12..n]);
    }
    assert!(seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)), "consecutive sequence numbers");
    assert!(tone == clear, "the tone over RTP: {} of {} octets", tone.len(), clear.len());

    // A card whose key allows live use only refuses the play-back (its last TS is past the
    // recording once it saw a later live STKM; a fresh card takes the first STKM as live, so
    // replay one of the recording's STKMs live first).
    let es2 = d.join("out2.raw");
    let (code, _, _) = play(&rec, &ppt_card, &es2);
    assert_eq!(code, Some(0), "a card that never saw the stream takes the recording as live");
    let (code, stdout, stderr) = play(&rec, &ppt_card, &es2);
    assert_eq!(code, Some(3), "{stdout}\n{stderr}");
    assert!(stderr.contains("9865") || stderr.contains("freshness"), "{stderr}");
    assert!(std::fs::read(&es2).unwrap().is_empty(), "nothing played");

    let mut bsm = stack.bsm;
    assert!(bsm.terminate().success());
}
