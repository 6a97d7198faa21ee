//! (k) of `keycast demo`: record a protected stream and play it back within the card's
//! play-back counter, then the card refuses.
//!
//! The operator sells an archive service by the hour with recordings that play back
//! [`PLAY_BACKS`] times: an offer of kind pay-per-time with `play_backs` through the admin API,
//! which the real BSM turns into the key's P-4 policy 0x01 (pay-per-time with play-back) and
//! play_back_counter. Terminal A buys it with a ServiceRequest and its card takes the SEK from the
//! answer. Everything else is the real terminal too: keycast-terminal's sans-IO watcher opens the
//! stream with the card, its `Recorder` writes the adapted PDCF (in memory), and its `Player`
//! plays the file back through the card, which alone applies the counter.

use std::time::{Duration, Instant};

use keycast_card::Card as _;
use keycast_crypto::keys::{Tek, TekSalt};
use keycast_mikey::{
    KeyDomainId, ProtectionAfterReception, SekPekId, StkmContent, StkmExt, TekField, TrafficProtectionProtocol,
};
use keycast_provisioning::sprov::{PurchaseItemRef, PurchaseRequestItem, StatusCode};
use keycast_terminal::media::play::{Output, PlayError, Player};
use keycast_terminal::media::record::{RecordConfig, Recorder};
use keycast_terminal::media::srtp::{Mki, SrtpMasterKey, SrtpPolicy, SrtpSender};
use keycast_terminal::media::{MediaTap as _, Packet, WatchConfig, Watcher};
use keycast_terminal::provisioning::Response;
use keycast_traffic::pdcf::MediaTrack;

use super::bsm::{Bsm, Shell, admin_puts, answer_ltkms, broadcaster_key, ntp, shell_apdus, status_of};
use super::ppv::first_key;
use super::{BSM_FQDN, DemoRng, Narrator, id_hex, op_failed, refused};

/// Key Group of the archive service's SEK (groups 3–7 are (h)–(j)'s).
const KEY_GROUP: u16 = 8;
/// Play-backs the offer allows (P-4 play_back_counter).
const PLAY_BACKS: u16 = 2;
/// Time sold by the offer, seconds.
const PERIOD_SECS: u64 = 3_600;
/// Lifetime of the archive's keys, seconds (above the rollover lead of one hour).
const KEY_LIFETIME_SECS: u64 = 7_200;
/// RTP packets per TEK in the recorded stream.
const PACKETS: u16 = 5;

/// (k): see the module docs. Runs after (j) on its BSM and terminal A.
pub(super) async fn run_playback(n: &mut Narrator, rng: &mut DemoRng, bsm: &Bsm, a: &mut Shell) {
    n.heading("(k) Record and play back: the card counts the play-backs its key allows, then refuses");
    let kd = KeyDomainId::from_mcc_mnc("001", "01").expect("constant MCC/MNC");
    let sek_id = SekPekId { key_group: KEY_GROUP, key_number: 1 };
    let calls = [
        (
            "/admin/v1/services/archive",
            format!(r#"{{"name":"Archive","mcc":"001","mnc":"01","key_group":{KEY_GROUP},"streaming":true}}"#),
        ),
        ("/admin/v1/purchase-items/archive", r#"{"name":"Archive","services":["archive"]}"#.to_owned()),
        (
            "/admin/v1/offers/archive-hour",
            format!(
                r#"{{"item":"archive","amount":"0.99","currency":"EUR","kind":"ppt","period_secs":{PERIOD_SECS},"play_backs":{PLAY_BACKS}}}"#
            ),
        ),
    ];
    let r = admin_puts(bsm, &calls).await.map(|()| {
        format!(
            "service archive (Key Group {KEY_GROUP}), item archive, offer archive-hour (pay-per-time, {PERIOD_SECS} s, {PLAY_BACKS} play-backs, 0.99 EUR): 204 each"
        )
    });
    let ok = r.is_ok();
    n.check("operator: an offer whose recordings play back, through the admin API", r);
    if !ok {
        return;
    }
    let r = first_key(bsm, sek_id, KEY_LIFETIME_SECS, "SEK").await;
    let ok = r.is_ok();
    n.check(&format!("operator: rollover of Key Group {KEY_GROUP} makes the archive's first SEK"), r);
    if !ok {
        return;
    }

    // The purchase: a ServiceRequest; the SEK comes in the answer with the offer's play-backs.
    let item = PurchaseItemRef::new("archive", Some("archive-hour"));
    let answer = a.subscribe(vec![(PurchaseRequestItem { item, price: None }, None)]).await;
    shell_apdus(n, a);
    let r = status_of(&answer).and_then(|answer| match &answer.response {
        Response::Service(s) if s.status == StatusCode::Success => {
            answer_ltkms(n, "ServiceResponse", answer, &[sek_id], kd)
        }
        other => Err(format!("answer {other:?}")),
    });
    let ok = r.is_ok();
    n.check("terminal A buys an hour of the archive (ServiceRequest archive / archive-hour): the SEK in the answer", r);
    if !ok {
        return;
    }
    let audit = a.card_mut().audit(kd, sek_id);
    shell_apdus(n, a);
    let r = match audit {
        Ok(audit) if audit.play_backs_left == PLAY_BACKS => Ok(format!(
            "the BSM made the offer's play-backs the key's P-4 policy: pay-per-time with play-back (0x01), play_back_counter {PLAY_BACKS}"
        )),
        Ok(audit) => Err(format!("{} play-backs left, {PLAY_BACKS} expected", audit.play_backs_left)),
        Err(e) => Err(op_failed(&e)),
    };
    let ok = r.is_ok();
    n.check(&format!("terminal A's card holds SEK {} with {PLAY_BACKS} play-backs", id_hex(sek_id)), r);
    if !ok {
        return;
    }
    let Ok(stored) = broadcaster_key(n, bsm, sek_id).await else { return };
    let (sek, rand) = (stored.key, stored.rand);
    let ts0 = ntp(bsm.clock.now());

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
