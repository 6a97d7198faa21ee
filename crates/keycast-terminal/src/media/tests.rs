//! The watcher against the card emulator: SEKs delivered by LTKMs sealed here, STKMs sealed
//! under them, SRTP protected by keycast-traffic's sender.

use std::time::{Duration, Instant};

use keycast_card::card::{Card, CardOpError};
use keycast_card::gba_me::GbaMeStore;
use keycast_card::mbms::TekOut;
use keycast_card::usim::{Usim, UsimIdentity};
use keycast_card::{ApduCard, CardError, Emulator};
use keycast_crypto::gba::GbaType;
use keycast_crypto::keys::{Opc, SekPek, Smk, SubscriberKey, Tek, TekSalt};
use keycast_mikey::{
    AccessDescriptor, KeyDomainId, KeyValidity, LtkmContent, LtkmExt, ProtectionAfterReception, SecurityPolicy,
    SecurityPolicyExt, SekPekId, StkmContent, StkmExt, TekField, TrafficProtectionProtocol,
};
use keycast_traffic::srtp::{Mki, SrtpError, SrtpMasterKey, SrtpPolicy, SrtpSender};

use super::*;
use crate::key_holder::MbmsKeyHolder;

const BSM: &str = "bmsc.example.org";
const BTID: &str = "btid-1@bsf.example.org";
const TS0: u32 = 3_989_000_000;
const SEK_A: [u8; 16] = [0x12; 16];
const SEK_B: [u8; 16] = [0x34; 16];

fn kd() -> KeyDomainId {
    KeyDomainId::from_mcc_mnc("001", "01").unwrap()
}

fn smk() -> Smk {
    Smk::from_bytes([0x11; 32])
}

fn id(group: u16, number: u16) -> SekPekId {
    SekPekId { key_group: group, key_number: number }
}

/// An LTKM for SEK/PEK `sek` under [`smk`]: pay-per-time in the TS window `[low, high]` (low >
/// high invalidates).
fn ltkm(sek: SekPekId, key: Option<[u8; 16]>, ts: u32, low: u32, high: u32) -> Vec<u8> {
    LtkmContent {
        csb_id: 0x0102_0304,
        verification_requested: false,
        srtp_cs: None,
        key_domain_id: kd(),
        sek_pek_id: sek,
        ts,
        rand: [u8::try_from(sek.key_group).unwrap(); 16],
        idi: BSM.into(),
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
        key: key.map(SekPek::from_bytes),
        validity: KeyValidity::TsWindow { ts_low: low, ts_high: high },
    }
    .seal(&smk())
    .unwrap()
}

/// The card with a MUK for [`BSM`] and the SEKs A = (1,2) and B = (2,1).
fn card() -> Counting<ApduCard<Emulator>> {
    let id_ =
        UsimIdentity { imsi: "001010000000001".into(), impi: "user@ims".into(), iccid: "8900100000000000001".into() };
    let mut usim = Usim::new(id_, SubscriberKey::from_bytes([1; 16]), Opc::from_bytes([2; 16]));
    usim.mbms.install_muk(BSM, BTID, smk()).unwrap();
    usim.mbms.msk_update(&ltkm(id(1, 2), Some(SEK_A), 1, TS0, TS0 + 100_000)).unwrap();
    usim.mbms.msk_update(&ltkm(id(2, 1), Some(SEK_B), 2, TS0, TS0 + 100_000)).unwrap();
    Counting { inner: ApduCard::new(Emulator::new(usim)), calls: 0 }
}

/// A key holder that counts MTK generations.
struct Counting<C> {
    inner: C,
    calls: usize,
}

impl<C: Card> MbmsKeyHolder for Counting<C> {
    type Card = C;
    fn gba_type(&self) -> GbaType {
        GbaType::GbaU
    }
    fn gba_parts(&mut self) -> (&mut C, Option<&mut GbaMeStore>) {
        (&mut self.inner, None)
    }
    fn msk_update(&mut self, ltkm: &[u8]) -> Result<Option<Vec<u8>>, CardOpError> {
        self.inner.msk_update(ltkm)
    }
    fn mtk_generation(&mut self, stkm: &[u8]) -> Result<TekOut, CardOpError> {
        self.calls += 1;
        self.inner.mtk_generation(stkm)
    }
    fn msk_deletion(&mut self, key_domain_id: KeyDomainId, key_group: u16) -> Result<(), CardOpError> {
        self.inner.msk_deletion(key_domain_id, key_group)
    }
}

fn ext(program: Option<u32>) -> StkmExt {
    StkmExt {
        protection_after_reception: ProtectionAfterReception::ServiceProtectionOnly,
        traffic_protection_protocol: TrafficProtectionProtocol::Srtp,
        traffic_authentication: true,
        tbk_id: None,
        access_criteria: program.map(|p| vec![AccessDescriptor::ProgramId(p)]),
    }
}

fn tek(sek: SekPekId, tek_id: u16) -> (Tek, TekSalt) {
    let b = u8::try_from(sek.key_group * 16 + tek_id).unwrap();
    (Tek::from_bytes([b; 16]), TekSalt::from_bytes([b ^ 0xff; 14]))
}

fn stkm_with(sek: SekPekId, sek_key: [u8; 16], tek_id: u16, ts: u32, ext: Option<StkmExt>) -> Vec<u8> {
    let (t, s) = tek(sek, tek_id);
    StkmContent {
        csb_id: 0x0a0b_0c0d,
        key_domain_id: kd(),
        sek_pek_id: sek,
        tek_id,
        ts,
        ext,
        tek: TekField::Clear(t),
        salt: Some(s),
    }
    .seal(&SekPek::from_bytes(sek_key), &[u8::try_from(sek.key_group).unwrap(); 16])
    .unwrap()
}

fn stkm_a(tek_id: u16, ts: u32) -> Vec<u8> {
    stkm_with(id(1, 2), SEK_A, tek_id, ts, Some(ext(None)))
}

fn stkm_b(tek_id: u16, ts: u32) -> Vec<u8> {
    stkm_with(id(2, 1), SEK_B, tek_id, ts, Some(ext(None)))
}

fn mki(sek: SekPekId, tek_id: u16) -> Mki {
    Mki::new(u32::from_be_bytes(sek.to_bytes()), tek_id)
}

fn sender(sek: SekPekId, tek_id: u16) -> SrtpSender {
    let (t, s) = tek(sek, tek_id);
    SrtpSender::new(SrtpPolicy::rfc3711(), &SrtpMasterKey::new(mki(sek, tek_id), t, s))
}

fn rtp(ssrc: u32, seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..200u32).map(|i| (i as u8) ^ (seq as u8)));
    p
}

/// Protects, hands to the watcher, and returns the clear bytes it gave back (or the drop).
fn through(w: &mut Watcher, s: &mut SrtpSender, ssrc: u32, seq: u16, now: Instant) -> Result<Vec<u8>, SrtpError> {
    let clear = rtp(ssrc, seq);
    let mut p = clear.clone();
    s.protect(&mut p).unwrap();
    match w.handle_srtp(&mut p, now) {
        Packet::Clear { len, mki } => {
            assert_eq!(mki, s.mki());
            assert_eq!(&p[..len], &clear[..], "clear RTP byte for byte");
            Ok(p[..len].to_vec())
        }
        Packet::Dropped(e) => Err(e),
    }
}

#[test]
fn stkm_installs_the_tek_and_srtp_opens_byte_identical() {
    let (mut card, mut w, t) = (card(), Watcher::new(WatchConfig::default()), Instant::now());
    let e = w.handle_stkm(&mut card, &stkm_a(1, TS0 + 1), t);
    assert_eq!(e, Event::TekInstalled { key_domain: kd(), mki: mki(id(1, 2), 1), dropped: None });
    let mut s = sender(id(1, 2), 1);
    for seq in 0..20 {
        through(&mut w, &mut s, 0x1111, seq, t).unwrap();
    }
    let key = w.master_key(mki(id(1, 2), 1)).unwrap();
    assert_eq!(key.key(), &tek(id(1, 2), 1).0, "the recorder sees the TEK the packet was opened with");
    let st = w.stats();
    assert_eq!((st.packets_in, st.packets_out, st.stkms_accepted, st.teks_installed), (20, 20, 1, 1));
}

#[test]
fn resends_skip_the_card_until_the_recheck_is_due() {
    let (mut card, mut w, t) = (card(), Watcher::new(WatchConfig::default()), Instant::now());
    w.handle_stkm(&mut card, &stkm_a(1, TS0 + 1), t);
    let m = mki(id(1, 2), 1);
    for i in 2..10 {
        let e = w.handle_stkm(&mut card, &stkm_a(1, TS0 + i), t + Duration::from_secs(u64::from(i)));
        assert_eq!(e, Event::ResendSkipped { key_domain: kd(), mki: m });
    }
    assert_eq!(card.calls, 1, "the card saw only the first");
    let e = w.handle_stkm(&mut card, &stkm_a(1, TS0 + 11), t + Duration::from_secs(11));
    assert_eq!(e, Event::TekConfirmed { key_domain: kd(), mki: m }, "the card gives the same TEK again");
    assert_eq!(card.calls, 2);
    // A changed extension (a new program) goes to the card at once.
    let e = w.handle_stkm(
        &mut card,
        &stkm_with(id(1, 2), SEK_A, 1, TS0 + 12, Some(ext(Some(7)))),
        t + Duration::from_secs(12),
    );
    assert_eq!(e, Event::TekConfirmed { key_domain: kd(), mki: m });
    assert_eq!(card.calls, 3);
}

#[test]
fn every_fresh_stkm_goes_to_the_card_with_recheck_zero() {
    let config = WatchConfig { card_recheck: Duration::ZERO, ..WatchConfig::default() };
    let (mut card, mut w, t) = (card(), Watcher::new(config), Instant::now());
    w.handle_stkm(&mut card, &stkm_a(1, TS0 + 1), t);
    for i in 2..6 {
        assert!(matches!(w.handle_stkm(&mut card, &stkm_a(1, TS0 + i), t), Event::TekConfirmed { .. }));
    }
    assert_eq!(card.calls, 5);
}

#[test]
fn stale_stkms_never_reach_the_card() {
    let (mut card, mut w, t) = (card(), Watcher::new(WatchConfig::default()), Instant::now());
    w.handle_stkm(&mut card, &stkm_a(2, TS0 + 10), t);
    for stale in [stkm_a(2, TS0 + 10), stkm_a(2, TS0 + 9), stkm_a(1, TS0 + 20)] {
        assert!(matches!(w.handle_stkm(&mut card, &stale, t), Event::Stale { .. }));
    }
    assert_eq!((card.calls, w.stats().stkms_stale), (1, 3));
}

#[test]
fn tek_switch_keeps_the_previous_tek_and_drops_the_one_before() {
    let (mut card, mut w, t) = (card(), Watcher::new(WatchConfig::default()), Instant::now());
    let (mut s1, mut s2, mut s3) = (sender(id(1, 2), 1), sender(id(1, 2), 2), sender(id(1, 2), 3));
    w.handle_stkm(&mut card, &stkm_a(1, TS0 + 1), t);
    through(&mut w, &mut s1, 7, 1, t).unwrap();
    assert!(matches!(w.handle_stkm(&mut card, &stkm_a(2, TS0 + 2), t), Event::TekInstalled { dropped: None, .. }));
    through(&mut w, &mut s2, 7, 2, t).unwrap();
    through(&mut w, &mut s1, 7, 3, t).expect("a late packet under the previous TEK still opens");
    let e = w.handle_stkm(&mut card, &stkm_a(3, TS0 + 3), t);
    assert_eq!(e, Event::TekInstalled { key_domain: kd(), mki: mki(id(1, 2), 3), dropped: Some(mki(id(1, 2), 1)) });
    through(&mut w, &mut s3, 7, 4, t).unwrap();
    assert_eq!(through(&mut w, &mut s1, 7, 5, t), Err(SrtpError::UnknownMki(mki(id(1, 2), 1))));
    assert!(w.master_key(mki(id(1, 2), 1)).is_none());
    assert_eq!(w.stats().dropped_unknown_mki, 1);
}

#[test]
fn wrong_key_and_unknown_mki_are_dropped_and_counted() {
    let (mut card, mut w, t) = (card(), Watcher::new(WatchConfig::default()), Instant::now());
    w.handle_stkm(&mut card, &stkm_a(1, TS0 + 1), t);
    // Right MKI, wrong TEK.
    let forged = SrtpMasterKey::new(mki(id(1, 2), 1), Tek::from_bytes([0; 16]), TekSalt::from_bytes([0; 14]));
    let mut bad = SrtpSender::new(SrtpPolicy::rfc3711(), &forged);
    assert_eq!(through(&mut w, &mut bad, 9, 1, t), Err(SrtpError::AuthFailed));
    // An MKI nobody installed.
    let mut other = sender(id(5, 5), 1);
    assert!(matches!(through(&mut w, &mut other, 9, 2, t), Err(SrtpError::UnknownMki(_))));
    // A replay of an accepted packet.
    let mut good = sender(id(1, 2), 1);
    let mut p = rtp(9, 3);
    good.protect(&mut p).unwrap();
    let mut again = p.clone();
    assert!(matches!(w.handle_srtp(&mut p, t), Packet::Clear { .. }));
    assert!(matches!(w.handle_srtp(&mut again, t), Packet::Dropped(SrtpError::Replayed { .. })));
    // Not even RTP.
    assert!(matches!(w.handle_srtp(&mut [1, 2, 3], t), Packet::Dropped(_)));
    let st = w.stats();
    assert_eq!((st.dropped_auth, st.dropped_unknown_mki, st.dropped_replay, st.dropped_other), (1, 1, 1, 1));
    assert_eq!(st.packets_out, 1);
}

#[test]
fn srtcp_opens_with_the_same_key() {
    let (mut card, mut w, t) = (card(), Watcher::new(WatchConfig::default()), Instant::now());
    w.handle_stkm(&mut card, &stkm_a(1, TS0 + 1), t);
    let mut s = sender(id(1, 2), 1);
    let clear = [&[0x80, 200, 0, 6][..], &0x1111u32.to_be_bytes(), &[9; 20]].concat();
    let mut p = clear.clone();
    s.protect_rtcp(&mut p).unwrap();
    assert_eq!(w.handle_srtcp(&mut p, t), Packet::Clear { len: clear.len(), mki: mki(id(1, 2), 1) });
    assert_eq!(&p[..clear.len()], &clear[..]);
    assert_eq!(w.stats().rtcp_out, 1);
}

#[test]
fn key_missing_is_asked_for_at_most_once_per_interval_and_then_the_stream_opens() {
    let (mut card, mut w, t) = (card(), Watcher::new(WatchConfig::default()), Instant::now());
    let sek = id(3, 1);
    let key = [0x56; 16];
    let stkm = |tek_id, ts| stkm_with(sek, key, tek_id, ts, Some(ext(None)));
    let e = w.handle_stkm(&mut card, &stkm(1, TS0 + 1), t);
    assert_eq!(e, Event::KeyMissing { key_domain: kd(), sek_pek_id: sek });
    assert_eq!(e.key_request(), Some(crate::ltkm_intake::bcast_key(kd(), sek)));
    for i in 2..5 {
        let e = w.handle_stkm(&mut card, &stkm(1, TS0 + i), t + Duration::from_secs(u64::from(i)));
        assert_eq!(e, Event::AwaitingKey { key_domain: kd(), sek_pek_id: sek });
    }
    let e = w.handle_stkm(&mut card, &stkm(1, TS0 + 40), t + Duration::from_secs(31));
    assert!(matches!(e, Event::KeyMissing { .. }), "asked again after the interval");
    assert_eq!(w.stats().key_requests, 2);
    // The LTKM arrives (as an LTKM Request's answer would bring it).
    card.msk_update(&ltkm(sek, Some(key), 3, TS0, TS0 + 100_000)).unwrap();
    assert!(matches!(
        w.handle_stkm(&mut card, &stkm(1, TS0 + 41), t + Duration::from_secs(32)),
        Event::TekInstalled { .. }
    ));
    through(&mut w, &mut sender(sek, 1), 3, 1, t).unwrap();
}

#[test]
fn invalidation_withdraws_the_tek_at_the_next_card_check() {
    let (mut card, mut w, t) = (card(), Watcher::new(WatchConfig::default()), Instant::now());
    let mut s = sender(id(1, 2), 1);
    w.handle_stkm(&mut card, &stkm_a(1, TS0 + 1), t);
    through(&mut w, &mut s, 1, 1, t).unwrap();
    // The BSM invalidates the SEK (lower bound above the upper).
    card.msk_update(&ltkm(id(1, 2), None, 3, TS0 + 10, TS0)).unwrap();
    // Within the recheck interval the resend stays in the terminal …
    assert!(matches!(
        w.handle_stkm(&mut card, &stkm_a(1, TS0 + 2), t + Duration::from_secs(1)),
        Event::ResendSkipped { .. }
    ));
    // … then the card refuses with 6985 and the TEK goes.
    let e = w.handle_stkm(&mut card, &stkm_a(1, TS0 + 12), t + Duration::from_secs(12));
    let Event::Refused { error: CardOpError::Card(CardError::ConditionsOfUse(_)), withdrawn, .. } = e else {
        panic!("{e:?}")
    };
    assert_eq!(withdrawn, [mki(id(1, 2), 1)]);
    assert!(matches!(through(&mut w, &mut s, 1, 2, t), Err(SrtpError::UnknownMki(_))));
    assert_eq!(w.stats().teks_withdrawn, 1);
}

#[test]
fn forged_stkms_are_refused_without_harm() {
    let (mut card, mut w, t) = (card(), Watcher::new(WatchConfig::default()), Instant::now());
    w.handle_stkm(&mut card, &stkm_a(1, TS0 + 1), t);
    // Sealed under the wrong SEK, with a far-future TS and a higher TEK ID.
    let forged = stkm_with(id(1, 2), [0; 16], 9, TS0 + 50_000, Some(ext(None)));
    let e = w.handle_stkm(&mut card, &forged, t);
    let Event::Refused { error: CardOpError::Card(CardError::Mac), withdrawn, .. } = e else { panic!("{e:?}") };
    assert!(withdrawn.is_empty());
    // The genuine next STKM is not taken for stale.
    assert!(matches!(w.handle_stkm(&mut card, &stkm_a(2, TS0 + 2), t), Event::TekInstalled { .. }));
    assert!(matches!(w.handle_stkm(&mut card, b"not mikey", t), Event::Malformed(_)));
    let other = stkm_with(
        id(1, 2),
        SEK_A,
        3,
        TS0 + 3,
        Some(StkmExt { traffic_protection_protocol: TrafficProtectionProtocol::IsmaCryp, ..ext(None) }),
    );
    assert!(matches!(w.handle_stkm(&mut card, &other, t), Event::Unusable { reason: Unusable::NotSrtp(_), .. }));
    assert_eq!(card.calls, 3, "the ISMACryp STKM never reached the card");
}

#[test]
fn zapping_between_two_services_reuses_their_teks() {
    let (mut card, mut w, t) = (card(), Watcher::new(WatchConfig::default()), Instant::now());
    let (mut sa, mut sb) = (sender(id(1, 2), 1), sender(id(2, 1), 5));
    w.handle_stkm(&mut card, &stkm_a(1, TS0 + 1), t);
    through(&mut w, &mut sa, 0xa, 1, t).unwrap();
    // Zap to B.
    assert!(matches!(w.handle_stkm(&mut card, &stkm_b(5, TS0 + 2), t), Event::TekInstalled { dropped: None, .. }));
    through(&mut w, &mut sb, 0xb, 1, t).unwrap();
    // Back to A: its TEK is still held, no card call.
    assert!(matches!(w.handle_stkm(&mut card, &stkm_a(1, TS0 + 3), t), Event::ResendSkipped { .. }));
    through(&mut w, &mut sa, 0xa, 2, t).unwrap();
    assert_eq!(card.calls, 2);
}

#[test]
fn zapping_back_after_the_key_state_went_uses_the_cards_resend_rule() {
    // One service at a time: zapping drops the other's state.
    let config = WatchConfig { max_services: 1, ..WatchConfig::default() };
    let (mut card, mut w, t) = (card(), Watcher::new(config), Instant::now());
    let (mut sa, mut sb) = (sender(id(1, 2), 1), sender(id(2, 1), 5));
    w.handle_stkm(&mut card, &stkm_a(1, TS0 + 1), t);
    through(&mut w, &mut sa, 0xa, 1, t).unwrap();
    w.handle_stkm(&mut card, &stkm_b(5, TS0 + 2), t + Duration::from_secs(1));
    through(&mut w, &mut sb, 0xb, 1, t).unwrap();
    assert!(matches!(through(&mut w, &mut sa, 0xa, 2, t), Err(SrtpError::UnknownMki(_))), "A's state is gone");
    // A's next STKM repeats TEK ID 1: the card accepts it as a resend and gives the same TEK.
    let e = w.handle_stkm(&mut card, &stkm_a(1, TS0 + 3), t + Duration::from_secs(2));
    assert!(matches!(e, Event::TekInstalled { .. }), "{e:?}");
    through(&mut w, &mut sa, 0xa, 3, t).unwrap();
    assert_eq!(card.calls, 3);
}

#[test]
fn an_mbms_form_key_keeps_its_tek_when_the_card_refuses_a_resend() {
    // A SEK without the OMA BCAST extension: TEK ID window, SEQl := TEK ID.
    let (mut card, mut w, t) = (card(), Watcher::new(WatchConfig::default()), Instant::now());
    let sek = id(4, 1);
    let l = LtkmContent {
        csb_id: 1,
        verification_requested: false,
        srtp_cs: None,
        key_domain_id: kd(),
        sek_pek_id: sek,
        ts: 5,
        rand: [4; 16],
        idi: BSM.into(),
        idr: BTID.into(),
        srtp_policy: None,
        ext: None,
        key: Some(SekPek::from_bytes([0x44; 16])),
        validity: KeyValidity::TekIdWindow { seq_l: 0, seq_u: 100 },
    }
    .seal(&smk())
    .unwrap();
    card.msk_update(&l).unwrap();
    let stkm = |tek_id, ts| stkm_with(sek, [0x44; 16], tek_id, ts, None);
    let mut s = sender(sek, 1);
    assert!(matches!(w.handle_stkm(&mut card, &stkm(1, TS0 + 1), t), Event::TekInstalled { .. }));
    let e = w.handle_stkm(&mut card, &stkm(1, TS0 + 20), t + Duration::from_secs(20));
    assert!(matches!(e, Event::Refused { ref withdrawn, .. } if withdrawn.is_empty()), "{e:?}");
    through(&mut w, &mut s, 4, 1, t).expect("the TEK stays");
    assert!(matches!(
        w.handle_stkm(&mut card, &stkm(1, TS0 + 40), t + Duration::from_secs(40)),
        Event::ResendSkipped { .. }
    ));
    assert_eq!(card.calls, 2);
}

#[test]
fn forged_stkms_naming_many_keys_cause_few_key_requests() {
    let (mut card, mut w, t) = (card(), Watcher::new(WatchConfig::default()), Instant::now());
    let mut asked = 0;
    for number in 1..50u16 {
        let e = w.handle_stkm(&mut card, &stkm_with(id(10, number), [0; 16], 1, TS0 + 1, None), t);
        match e {
            Event::KeyMissing { .. } => asked += 1,
            Event::AwaitingKey { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(asked, DEFAULT_MAX_KEY_REQUESTS);
    // A new interval: requests again, still bounded.
    let later = t + DEFAULT_KEY_REQUEST_INTERVAL;
    let e = w.handle_stkm(&mut card, &stkm_with(id(11, 1), [0; 16], 1, TS0 + 2, None), later);
    assert!(matches!(e, Event::KeyMissing { .. }), "{e:?}");
}
