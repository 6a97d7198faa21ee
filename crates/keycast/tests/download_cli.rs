//! File mode end to end with real processes: `keycast serve bsm` holds the SEK, `keycast
//! broadcast package` fetches it over the broadcaster API and protects a file as an OMA DRM DCF
//! with the download-form STKM that carries its TEK (sent over UDP too), and a terminal whose card
//! holds the SEK opens the file, as does a GBA_ME terminal whose ME key store holds it; a card
//! without the key, or a tampered file, opens nothing.

mod served;

use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use keycast_card::persist::CardFile;
use keycast_card::{ApduCard, Emulator};
use keycast_mikey::{Stkm, TrafficProtectionProtocol};
use keycast_terminal::download::{DownloadError, open_download};
use keycast_traffic::dcf::Dcf;
use served::stack::{BsmWithKey, FQDN, card_with_key, free_rtp_port, me_store_with_key};

#[test]
fn broadcast_package_then_the_card_opens_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let stack = BsmWithKey::start(d);
    let k = &stack.key;

    let stkm_rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    stkm_rx.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (config, _) = stack.broadcast_config(
        d,
        free_rtp_port(),
        "127.0.0.1:5004".parse().unwrap(),
        stkm_rx.local_addr().unwrap().port(),
        10,
        2,
    );
    let content: Vec<u8> = (0..100_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    std::fs::write(d.join("episode.bin"), &content).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keycast"))
        .args(["broadcast", "package", "--config", config.to_str().unwrap(), "--in"])
        .arg(d.join("episode.bin"))
        .arg("--out")
        .arg(d.join("episode.dcf"))
        .arg("--stkm-out")
        .arg(d.join("episode.stkm"))
        .args(["--content-type", "video/mp4", "--rights-issuer-url", "https://bmsc.example.org/sprov", "--send"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("TEK ID 1"), "{stdout}");
    assert!(!stdout.contains(&k.hex), "no key printed");

    let dcf = std::fs::read(d.join("episode.dcf")).unwrap();
    let stkm = std::fs::read(d.join("episode.stkm")).unwrap();
    let mut buf = [0u8; 2048];
    let n = stkm_rx.recv(&mut buf).expect("the STKM sent over UDP");
    assert_eq!(&buf[..n], &stkm[..], "--send sends the STKM written to the file");
    let decoded = Stkm::decode(&stkm).unwrap();
    assert_eq!((decoded.sek_pek_id(), decoded.tek_id()), (k.sek_id, 1));
    assert_eq!(decoded.ext().unwrap().traffic_protection_protocol, TrafficProtectionProtocol::Dcf);
    let parsed = Dcf::parse(&dcf).unwrap();
    assert_eq!(parsed.key().unwrap().1.tek_id(), 1);
    assert!(!dcf.windows(32).any(|w| w == &content[1000..1032]), "the content is not in the clear");

    // A terminal whose card holds the SEK (delivered by an LTKM) opens the file: the CLI, then
    // the library for the headers.
    let card_file = d.join("card.json");
    card_with_key(&card_file, FQDN, "btid-1@bsf.example.org", k.sek_id, &k.sek, k.rand, k.ts_low, k.ts_high);
    let open = |card: &Path| {
        Command::new(env!("CARGO_BIN_EXE_keycast"))
            .args(["terminal", "open"])
            .arg(d.join("episode.dcf"))
            .arg("--stkm")
            .arg(d.join("episode.stkm"))
            .arg("--card")
            .arg(card)
            .arg("--out")
            .arg(d.join("episode.out"))
            .output()
            .unwrap()
    };
    let out = open(&card_file);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::read(d.join("episode.out")).unwrap() == content, "the opened file differs");
    // The card file kept the STKM's TS: under this pay-per-time key a second opening is a
    // play-back, which the key does not allow (P-4).
    let again = open(&card_file);
    assert_eq!(again.status.code(), Some(3), "{}", String::from_utf8_lossy(&again.stderr));
    let fresh = d.join("fresh.json");
    card_with_key(&fresh, FQDN, "btid-1@bsf.example.org", k.sek_id, &k.sek, k.rand, k.ts_low, k.ts_high);
    let mut card = ApduCard::new(Emulator::new(CardFile::new(&fresh).load().unwrap()));
    let (headers, opened) = open_download(&mut card, &stkm, &dcf).unwrap();
    assert!(opened == content, "the opened file differs");
    assert_eq!(headers.content_type, "video/mp4");
    assert_eq!(headers.headers.rights_issuer_url, "https://bmsc.example.org/sprov");

    // A tampered file opens nowhere; a card without the SEK refuses the STKM.
    let mut tampered = dcf.clone();
    let at = tampered.len() / 2;
    tampered[at] ^= 0x01;
    let mut card = ApduCard::new(Emulator::new(CardFile::new(&fresh).load().unwrap()));
    assert!(matches!(open_download(&mut card, &stkm, &tampered), Err(DownloadError::Dcf(_))));
    let bare = d.join("bare.json");
    card_with_key(
        &bare,
        FQDN,
        "btid-1@bsf.example.org",
        keycast_mikey::SekPekId { key_group: 7, key_number: 1 },
        &k.sek,
        k.rand,
        k.ts_low,
        k.ts_high,
    );
    let out = open(&bare);
    assert_eq!(out.status.code(), Some(3), "a card without the key: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("card refused"), "{}", String::from_utf8_lossy(&out.stderr));
    let mut bare = ApduCard::new(Emulator::new(CardFile::new(&bare).load().unwrap()));
    assert!(matches!(open_download(&mut bare, &stkm, &dcf), Err(DownloadError::Card(_))));

    // A GBA_ME terminal: its card (here one without the key) runs AKA only, the SEK is in the
    // ME's key store the configuration names (`gba = "gba-me"`, `me_store`).
    let me = d.join("me");
    std::fs::create_dir(&me).unwrap();
    card_with_key(
        &me.join("card.kc"),
        FQDN,
        "btid-1@bsf.example.org",
        keycast_mikey::SekPekId { key_group: 7, key_number: 1 },
        &k.sek,
        k.rand,
        k.ts_low,
        k.ts_high,
    );
    me_store_with_key(
        &me.join("keys.me"),
        FQDN,
        "btid-2@bsf.example.org",
        k.sek_id,
        &k.sek,
        k.rand,
        k.ts_low,
        k.ts_high,
    );
    std::fs::write(me.join("terminal.toml"), "card = \"card.kc\"\ngba = \"gba-me\"\nme_store = \"keys.me\"\n").unwrap();
    let open_me = || {
        Command::new(env!("CARGO_BIN_EXE_keycast"))
            .arg("terminal")
            .arg("--config")
            .arg(me.join("terminal.toml"))
            .arg("open")
            .arg(d.join("episode.dcf"))
            .arg("--stkm")
            .arg(d.join("episode.stkm"))
            .arg("--out")
            .arg(me.join("episode.out"))
            .output()
            .unwrap()
    };
    let out = open_me();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::read(me.join("episode.out")).unwrap() == content, "the opened file differs");
    // The store kept the STKM's TS across processes: a second opening is a play-back, refused.
    let again = open_me();
    assert_eq!(again.status.code(), Some(3), "{}", String::from_utf8_lossy(&again.stderr));
    // The same card without the store holds no such key.
    let out = open(&me.join("card.kc"));
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));

    let mut bsm = stack.bsm;
    assert!(bsm.terminate().success());
}
