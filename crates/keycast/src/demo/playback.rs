//! (k) of `keycast demo`: record a protected stream and play it back within the card's
//! play-back counter, then the card refuses.
//!
//! The real BSM sells no offer whose key allows play-back (its P-4 codes are 5, 0, 4 and 2 for
//! subscription, pay-per-time, tokens and pay-per-view), so the key of this section is sealed by
//! the demo on the BSM's side, as in (b)–(e): under terminal A's SMK as the BSM gets it from the
//! BSF over Zn (its own Zn client), with P-4 code 3 (pay-per-view with play-back) and
//! play_back_counter 2, and the LTKM TS one above the card's EF_MUK counter. Everything else is
//! the real terminal: keycast-terminal's sans-IO watcher opens the stream with the card, its
//! `Recorder` writes the adapted PDCF (in memory), and its `Player` plays the file back through
//! the card, which alone applies the counter.

use std::time::{Duration, Instant};

use keycast_card::Card as _;
use keycast_crypto::keys::{SekPek, Tek, TekSalt};
use keycast_mikey::{
    KeyDomainId, KeyValidity, LtkmContent, LtkmExt, ProtectionAfterReception, SecurityPolicy, SecurityPolicyExt,
    SekPekId, StkmContent, StkmExt, TekField, TrafficProtectionProtocol,
};
use keycast_terminal::media::play::{Output, PlayError, Player};
use keycast_terminal::media::record::{RecordConfig, Recorder};
use keycast_terminal::media::srtp::{Mki, SrtpMasterKey, SrtpPolicy, SrtpSender};
use keycast_terminal::media::{MediaTap as _, Packet, WatchConfig, Watcher};
use keycast_traffic::pdcf::MediaTrack;

use super::bsm::{Bsm, Shell, ntp, shell_apdus};
use super::{BSM_FQDN, DemoRng, Narrator, bsm_verifies, id_hex, op_failed, refused};

/// Key Group of the recorded service's SEK (groups 3–7 are (h)–(j)'s).
const KEY_GROUP: u16 = 8;
/// Play-backs the key allows (P-4 play_back_counter).
const PLAY_BACKS: u16 = 2;
/// RTP packets per TEK in the recorded stream.
const PACKETS: u16 = 5;

/// (k): see the module docs. Runs after (j) on its BSM and terminal A.
pub(super) async fn run_playback(n: &mut Narrator, rng: &mut DemoRng, bsm: &Bsm, a: &mut Shell) {
    n.heading("(k) Record and play back: the card counts the play-backs its key allows, then refuses");
    let kd = KeyDomainId::from_mcc_mnc("001", "01").expect("constant MCC/MNC");
    let sek_id = SekPekId { key_group: KEY_GROUP, key_number: 1 };
    let Some(b_tid) = a.client().b_tid().map(str::to_owned) else {
        n.check("terminal A holds a B-TID", Err("none".to_owned()));
        return;
    };
    let record = match bsm.keys.fetch(&b_tid).await {
        Ok(r) => r,
        Err(e) => {
            n.check("BSM fetches terminal A's keys over Zn", Err(e.to_string()));
            return;
        }
    };
    let muk = a.card_mut().read_muk_records();
    shell_apdus(n, a);
    let last_ts = match muk {
        Ok(records) => records.iter().find(|r| r.idr == b_tid && r.idi == BSM_FQDN).map(|r| r.ts),
        Err(e) => {
            n.check("terminal reads EF_MUK", Err(op_failed(&e)));
            return;
        }
    };
    let Some(last_ts) = last_ts else {
        n.check("EF_MUK holds the MUK of terminal A's B-TID", Err("no record".to_owned()));
        return;
    };
    let ts0 = ntp(bsm.clock.now());
    let sek = SekPek::from_bytes(rng.bytes("play-back SEK"));
    let rand: [u8; 16] = rng.bytes("play-back RAND");
    let ltkm = LtkmContent {
        csb_id: rng.u32("play-back CSB ID"),
        verification_requested: true,
        srtp_cs: None,
        key_domain_id: kd,
        sek_pek_id: sek_id,
        ts: last_ts + 1,
        rand,
        idi: BSM_FQDN.to_owned(),
        idr: b_tid.clone(),
        srtp_policy: None,
        ext: Some(LtkmExt {
            security_policy: Some(SecurityPolicyExt {
                policy: SecurityPolicy::PayPerViewWithPlayBack,
                play_back_counter: PLAY_BACKS,
                view_counter: 0,
            }),
            tbk_id: None,
            consumption_reporting: false,
        }),
        key: Some(sek.clone()),
        validity: KeyValidity::TsWindow { ts_low: ts0, ts_high: ts0 + 3600 },
    };
    n.demo_key(&format!("SEK {} (recorded service)", id_hex(sek_id)), sek.expose_secret());
    let bytes = match ltkm.seal(record.smk()) {
        Ok(b) => b,
        Err(e) => {
            n.check("BSM seals the play-back LTKM", Err(e.to_string()));
            return;
        }
    };
    n.wire(&format!("LTKM for SEK {} (P-4 code 3, play_back_counter {PLAY_BACKS})", id_hex(sek_id)), &bytes);
    let r = a.card_mut().msk_update(&bytes);
    shell_apdus(n, a);
    let r = match r {
        Ok(Some(v)) => bsm_verifies(&bytes, &v, record.smk()).map(|_| {
            format!(
                "SMK of A's B-TID from the BSF over Zn, LTKM TS {} (EF_MUK counted {last_ts}); the card stores it, the BSM verifies the answer",
                last_ts + 1
            )
        }),
        Ok(None) => Err("no verification message although V = 1".to_owned()),
        Err(e) => Err(op_failed(&e)),
    };
    let ok = r.is_ok();
    n.check(
        &format!(
            "terminal A's card takes SEK {} with pay-per-view and {PLAY_BACKS} play-backs (P-4 code 3)",
            id_hex(sek_id)
        ),
        r,
    );
    if !ok {
        return;
    }

    // The stream: STKM TEK 1, packets, STKM TEK 2, packets; the watcher opens it with the card and
    // the recorder writes it.
    let teks: Vec<SrtpMasterKey> = (1..=3u16)
        .map(|tek_id| {
            SrtpMasterKey::new(
                Mki::new(u32::from_be_bytes(sek_id.to_bytes()), tek_id),
                Tek::from_bytes(rng.bytes("play-back TEK")),
                TekSalt::from_bytes(rng.bytes("play-back salt")),
            )
        })
        .collect();
    let stkm_csb = rng.u32("play-back STKM CSB ID");
    let stkm = |tek_id: u16, ts: u32| {
        let m = &teks[usize::from(tek_id) - 1];
        StkmContent {
            csb_id: stkm_csb,
            key_domain_id: kd,
            sek_pek_id: sek_id,
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
        .seal(&sek, &rand)
        .expect("demo STKM content is valid")
    };
    let mut watcher = Watcher::new(WatchConfig { card_recheck: Duration::ZERO, ..WatchConfig::default() });
    let mut config = RecordConfig::new(MediaTrack::audio(*b"mp4a", 48_000, 2));
    config.rights_issuer_url = format!("http://{BSM_FQDN}/sprov");
    let mut recorder = Recorder::new(config, Vec::new());
    // Reception times only order the samples in the file; they are never printed.
    let start = Instant::now();
    let mut payloads = Vec::new();
    let mut step = 0u64;
    for tek_id in 1..=2u16 {
        step += 1;
        let at = start + Duration::from_millis(20 * step);
        let bytes = stkm(tek_id, ts0 + u32::from(tek_id));
        let event = watcher.handle_stkm(a.card_mut(), &bytes, at);
        recorder.stkm(at, &bytes, &event);
        let mut sender = SrtpSender::new(SrtpPolicy::rfc3711(), &teks[usize::from(tek_id) - 1]);
        for i in 0..PACKETS {
            step += 1;
            let at = start + Duration::from_millis(20 * step);
            let seq = (tek_id - 1) * PACKETS + i;
            let payload: Vec<u8> =
                rng.bytes::<32>("play-back payload").iter().chain(&seq.to_be_bytes()).copied().collect();
            let mut packet = vec![0x80, 96];
            packet.extend_from_slice(&seq.to_be_bytes());
            packet.extend_from_slice(&(u32::from(seq) * 960).to_be_bytes());
            packet.extend_from_slice(&0x6b63_6173u32.to_be_bytes());
            packet.extend_from_slice(&payload);
            payloads.push(payload);
            if sender.protect(&mut packet).is_err() {
                continue;
            }
            if let Packet::Clear { len, mki } = watcher.handle_srtp(&mut packet, at)
                && let Some(key) = watcher.master_key(mki)
            {
                recorder.rtp(at, &packet[..len], key);
            }
        }
    }
    shell_apdus(n, a);
    let (file, stats) = match recorder.finish() {
        Ok(done) => done,
        Err(e) => {
            n.check("terminal A records the stream", Err(e.to_string()));
            return;
        }
    };
    let clear_inside = payloads.iter().any(|p| file.windows(p.len()).any(|w| w == p.as_slice()));
    n.check(
        "terminal A records the stream (keycast-terminal's watcher and Recorder, adapted PDCF)",
        if stats.stkms == 2 && stats.samples == payloads.len() as u64 && !clear_inside {
            Ok(format!(
                "2 STKMs and {} samples in {} bytes, ISMACryp-encrypted under the TEKs the card released (no payload in the clear)",
                stats.samples,
                file.len()
            ))
        } else {
            Err(format!("{stats:?}, payload in the clear: {clear_inside}"))
        },
    );

    // Play-back through the card: PLAY_BACKS times, each session ended by a live STKM.
    for round in 1..=PLAY_BACKS + 1 {
        let played = play(&file, a);
        shell_apdus(n, a);
        let audit = a.card_mut().audit(kd, sek_id);
        shell_apdus(n, a);
        if round <= PLAY_BACKS {
            let r = match (played, audit) {
                (Ok(samples), Ok(audit)) if samples == payloads => Ok(format!(
                    "{} samples equal the RTP payloads sent; the card counts {} play-back(s) left",
                    samples.len(),
                    audit.play_backs_left
                )),
                (Ok(_), Err(e)) => Err(op_failed(&e)),
                (Ok(samples), _) => Err(format!("{} samples, not the payloads sent", samples.len())),
                (Err(e), _) => Err(String::from(e)),
            };
            n.check(&format!("play-back {round} of {PLAY_BACKS} through the card"), r);
            // The live stream goes on: a fresh STKM ends the play-back session.
            let live = stkm(3, ts0 + 10 + u32::from(round));
            let r = a.card_mut().mtk_generation(&live).map(|_| ());
            shell_apdus(n, a);
            if let Err(e) = r {
                n.check("the card opens the next live STKM", Err(op_failed(&e)));
            }
        } else {
            let r = match played {
                Err(Played::Refused(e)) => refused::<()>(Err(e), 0x9865, "the key's play-back counter is spent"),
                Err(Played::Other(e)) => Err(e),
                Ok(samples) => Err(format!("played {} samples", samples.len())),
            };
            n.check(&format!("play-back {round}: the card refuses the recording's first STKM"), r);
        }
    }
}

/// How a play-back ended when it did not play through.
enum Played {
    /// The card refused an STKM.
    Refused(keycast_card::CardOpError),
    /// Anything else.
    Other(String),
}

impl From<Played> for String {
    fn from(p: Played) -> String {
        match p {
            Played::Refused(e) => op_failed(&e),
            Played::Other(e) => e,
        }
    }
}

/// Plays `file` through terminal A's card: the clear samples.
fn play(file: &[u8], a: &mut Shell) -> Result<Vec<Vec<u8>>, Played> {
    let mut player = Player::open(file).map_err(|e| Played::Other(e.to_string()))?;
    let mut out = Vec::new();
    loop {
        match player.next(a.card_mut()) {
            Ok(Some(Output::Sample(s))) => out.push(s.data),
            Ok(Some(_)) => {}
            Ok(None) => return Ok(out),
            Err(PlayError::Refused { error, .. }) => return Err(Played::Refused(error)),
            Err(e) => return Err(Played::Other(e.to_string())),
        }
    }
}
