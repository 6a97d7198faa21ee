//! One named test per rule of profile P-3 (LTKM), P-4 (rights and their audit), P-6 (STKM checks)
//! and P-10 (secure channel, its availability check, and the parental setting it guards), driven
//! through the typed card core, with the status word each refusal answers.

use keycast_card::CardError;
use keycast_card::mbms::{AuditCounters, Capacity, MbmsStore, MskUpdateEvent, TekOut, serial_gt, unwrap_channel_tek};
use keycast_card::sac::{LocalKeyStatus, k_sac};
use keycast_card::usim::{AkaAnswer, LocalKeyRequest, Usim, UsimIdentity, local_key_request_mac};
use keycast_crypto::gba::{self, LocalKeyParams, NafId};
use keycast_crypto::keys::{KsIntNaf, Opc, SekPek, Smk, SubscriberKey, Tek, TekSalt};
use keycast_crypto::milenage::{Milenage, gba_u_autn_star};
use keycast_mikey::*;

const IDI: &str = "bmsc.example.org";
const BTID: &str = "I1U8vpY3qJ0hiuZNrke/NQ==@bsf.example.org";
const RAND: [u8; 16] = [0x5a; 16];
const T0: u32 = 3_950_000_000;

fn smk() -> Smk {
    Smk::from_bytes([0x21; 32])
}

fn sek(n: u8) -> SekPek {
    SekPek::from_bytes([n; 16])
}

fn kd() -> KeyDomainId {
    KeyDomainId::from_mcc_mnc("001", "01").unwrap()
}

fn store() -> MbmsStore {
    let mut s = MbmsStore::default();
    s.install_muk(IDI, BTID, smk()).unwrap();
    s
}

fn policy(code: SecurityPolicy, play_backs: u16, views: u16) -> Option<LtkmExt> {
    Some(LtkmExt {
        security_policy: Some(SecurityPolicyExt { policy: code, play_back_counter: play_backs, view_counter: views }),
        tbk_id: None,
        consumption_reporting: true,
    })
}

/// An LTKM delivering SEK `n` of Key Group `group`, TS `ts`; TS window when `ext` has a policy.
fn ltkm(ts: u32, group: u16, n: u16, ext: Option<LtkmExt>) -> LtkmContent {
    let ts_form = ext.is_some_and(|e| e.security_policy.is_some());
    LtkmContent {
        csb_id: 0x0102_0300 | u32::from(n),
        verification_requested: true,
        srtp_cs: None,
        key_domain_id: kd(),
        sek_pek_id: SekPekId { key_group: group, key_number: n },
        ts,
        rand: RAND,
        idi: IDI.into(),
        idr: BTID.into(),
        srtp_policy: None,
        ext,
        key: Some(sek(n as u8)),
        validity: if ts_form {
            KeyValidity::TsWindow { ts_low: T0, ts_high: T0 + 3600 }
        } else {
            KeyValidity::TekIdWindow { seq_l: 0, seq_u: 100 }
        },
    }
}

fn deliver(s: &mut MbmsStore, c: &LtkmContent) -> Result<keycast_card::mbms::MskUpdate, CardError> {
    s.msk_update(&c.seal(&smk()).unwrap())
}

struct Stk {
    n: u16,
    tek_id: u16,
    ts: u32,
    ext: Option<StkmExt>,
}

fn ext_with(par: ProtectionAfterReception, access: Option<Vec<AccessDescriptor>>) -> Option<StkmExt> {
    Some(StkmExt {
        protection_after_reception: par,
        traffic_protection_protocol: TrafficProtectionProtocol::Srtp,
        traffic_authentication: true,
        tbk_id: None,
        access_criteria: access,
    })
}

fn program(id: u32) -> Option<StkmExt> {
    ext_with(ProtectionAfterReception::ServiceProtectionOnly, Some(vec![AccessDescriptor::ProgramId(id)]))
}

fn stkm_bytes(st: &Stk) -> Vec<u8> {
    StkmContent {
        csb_id: 0x0a0b_0c0d,
        key_domain_id: kd(),
        sek_pek_id: SekPekId { key_group: 1, key_number: st.n },
        tek_id: st.tek_id,
        ts: st.ts,
        ext: st.ext.clone(),
        tek: TekField::Clear(Tek::from_bytes([st.tek_id as u8; 16])),
        salt: Some(TekSalt::from_bytes([0x77; 14])),
    }
    .seal(&sek(st.n as u8), &RAND)
    .unwrap()
}

fn stk(
    s: &mut MbmsStore,
    tek_id: u16,
    ts: u32,
    ext: Option<StkmExt>,
) -> Result<keycast_card::mbms::MtkAnswer, CardError> {
    s.mtk_generation(&stkm_bytes(&Stk { n: 1, tek_id, ts, ext }))
}

fn sw<T: core::fmt::Debug>(r: Result<T, CardError>) -> u16 {
    r.expect_err("expected a refusal").status_word()
}

/// A refused message must leave the store exactly as it was.
fn refused_unchanged<T: core::fmt::Debug>(
    s: &mut MbmsStore,
    f: impl FnOnce(&mut MbmsStore) -> Result<T, CardError>,
) -> u16 {
    let before = s.clone();
    let code = sw(f(s));
    assert_eq!(*s, before, "a refusal changed the store");
    code
}

// ---------------------------------------------------------------- P-2 serial arithmetic

#[test]
fn p2_serial_comparison_wraps_and_treats_undefined_as_replay() {
    assert!(serial_gt(1, 0xffff_ffff));
    assert!(!serial_gt(5, 5));
    assert!(!serial_gt(0x8000_0000, 0), "a difference of exactly 2^31 is undefined: a replay");
    assert!(!serial_gt(3, 4));
}

// ---------------------------------------------------------------- P-3 LTKM

#[test]
fn p3_ltkm_stores_key_and_answers_verification_when_v_set() {
    let mut s = store();
    let c = ltkm(1, 1, 1, None);
    let wire = c.seal(&smk()).unwrap();
    let up = s.msk_update(&wire).unwrap();
    assert_eq!(up.event, MskUpdateEvent::Stored(c.sek_pek_id));
    let vm = up.verification.expect("V = 1 asks for a verification message");
    let l = Ltkm::decode(&wire).unwrap();
    VerificationMessage::decode(&vm).unwrap().verify(&l, &l.message_keys(&smk())).unwrap();
    assert!(s.msk(kd(), c.sek_pek_id).is_some());
}

#[test]
fn p3_ltkm_without_v_gets_no_verification() {
    let mut s = store();
    let c = LtkmContent { verification_requested: false, ..ltkm(1, 1, 1, None) };
    assert_eq!(deliver(&mut s, &c).unwrap().verification, None);
}

#[test]
fn p3_ltkm_replayed_ts_is_a_freshness_failure_9865() {
    let mut s = store();
    deliver(&mut s, &ltkm(5, 1, 1, None)).unwrap();
    assert_eq!(refused_unchanged(&mut s, |s| deliver(s, &ltkm(5, 1, 2, None))), 0x9865);
    assert_eq!(refused_unchanged(&mut s, |s| deliver(s, &ltkm(4, 1, 2, None))), 0x9865);
    deliver(&mut s, &ltkm(6, 1, 2, None)).unwrap();
}

#[test]
fn p3_ltkm_ts_wraps_in_serial_arithmetic() {
    let mut s = store();
    deliver(&mut s, &ltkm(u32::MAX, 1, 1, None)).unwrap();
    deliver(&mut s, &ltkm(0, 1, 2, None)).unwrap();
}

#[test]
fn p3_ltkm_for_unknown_bsm_or_btid_is_6a88() {
    let mut s = store();
    let c = LtkmContent { idi: "other.example.org".into(), ..ltkm(1, 1, 1, None) };
    assert_eq!(refused_unchanged(&mut s, |s| deliver(s, &c)), 0x6a88);
    let c = LtkmContent { idr: "stale@bsf.example.org".into(), ..ltkm(1, 1, 1, None) };
    assert_eq!(refused_unchanged(&mut s, |s| deliver(s, &c)), 0x6a88);
}

#[test]
fn p3_ltkm_with_wrong_mac_is_9862() {
    let mut s = store();
    let wire = ltkm(1, 1, 1, None).seal(&Smk::from_bytes([0x99; 32])).unwrap();
    assert_eq!(refused_unchanged(&mut s, |s| s.msk_update(&wire)), 0x9862);
}

#[test]
fn p3_previous_muk_good_mac_is_9865_without_verification_and_bad_mac_is_9862() {
    let mut s = store();
    deliver(&mut s, &ltkm(1, 1, 1, None)).unwrap(); // the current MUK is now "last used"
    s.install_muk(IDI, "new@bsf.example.org", Smk::from_bytes([0x22; 32])).unwrap();
    // The BSM still uses the old MUK (old B-TID): good MAC → freshness failure, no verification.
    assert_eq!(refused_unchanged(&mut s, |s| deliver(s, &ltkm(2, 1, 2, None))), 0x9865);
    let forged = ltkm(2, 1, 2, None).seal(&Smk::from_bytes([0x99; 32])).unwrap();
    assert_eq!(refused_unchanged(&mut s, |s| s.msk_update(&forged)), 0x9862);
    // Under the new MUK the TS counter restarts.
    let c = LtkmContent { idr: "new@bsf.example.org".into(), ..ltkm(1, 1, 2, None) };
    s.msk_update(&c.seal(&Smk::from_bytes([0x22; 32])).unwrap()).unwrap();
    // Once the new MUK verified a message, the old one is forgotten.
    assert_eq!(refused_unchanged(&mut s, |s| deliver(s, &ltkm(9, 1, 3, None))), 0x6a88);
}

#[test]
fn p3_at_most_two_keys_per_group_the_older_is_evicted() {
    let mut s = store();
    deliver(&mut s, &ltkm(1, 1, 1, None)).unwrap();
    deliver(&mut s, &ltkm(2, 1, 2, None)).unwrap();
    let up = deliver(&mut s, &ltkm(3, 1, 3, None)).unwrap();
    assert_eq!(up.evicted, Some(SekPekId { key_group: 1, key_number: 1 }));
    assert!(s.msk(kd(), SekPekId { key_group: 1, key_number: 1 }).is_none());
    assert!(s.msk(kd(), SekPekId { key_group: 1, key_number: 2 }).is_some());
    // Another group is untouched.
    deliver(&mut s, &ltkm(4, 2, 1, None)).unwrap();
    assert_eq!(s.msks.iter().map(|r| r.keys.len()).sum::<usize>(), 3);
}

#[test]
fn p3_same_key_id_replaces_the_key_and_keeps_its_ts() {
    let mut s = store();
    deliver(&mut s, &ltkm(1, 1, 1, None)).unwrap();
    stk(&mut s, 5, T0 + 10, None).unwrap();
    let mut again = ltkm(2, 1, 1, None);
    again.validity = KeyValidity::TekIdWindow { seq_l: 5, seq_u: 200 };
    deliver(&mut s, &again).unwrap();
    let e = s.msk(kd(), again.sek_pek_id).unwrap();
    assert_eq!((e.ts, e.validity), (Some(T0 + 10), again.validity));
    assert_eq!(sw(stk(&mut s, 6, T0 + 10, None)), 0x9865, "TS kept: the same TS is still a replay");
}

#[test]
fn p3_key_validity_update_changes_the_window() {
    let mut s = store();
    let c = ltkm(1, 1, 1, policy(SecurityPolicy::PayPerTime, 0, 0));
    deliver(&mut s, &c).unwrap();
    assert_eq!(sw(stk(&mut s, 1, T0 + 7200, None)), 0x9865);
    let up = c.validity_update(2, KeyValidity::TsWindow { ts_low: T0, ts_high: T0 + 86_400 });
    assert_eq!(deliver(&mut s, &up).unwrap().event, MskUpdateEvent::ValidityUpdated(c.sek_pek_id));
    stk(&mut s, 1, T0 + 7200, None).unwrap();
}

#[test]
fn p3_validity_update_for_a_key_not_held_is_6a88() {
    let mut s = store();
    let up = ltkm(1, 1, 1, None).validity_update(1, KeyValidity::TekIdWindow { seq_l: 0, seq_u: 10 });
    assert_eq!(refused_unchanged(&mut s, |s| deliver(s, &up)), 0x6a88);
}

#[test]
fn p3_invalidation_revokes_the_key_6985() {
    let mut s = store();
    let c = ltkm(1, 1, 1, None);
    deliver(&mut s, &c).unwrap();
    stk(&mut s, 1, T0, None).unwrap();
    assert_eq!(deliver(&mut s, &c.invalidation(2)).unwrap().event, MskUpdateEvent::Invalidated(c.sek_pek_id));
    assert_eq!(refused_unchanged(&mut s, |s| stk(s, 2, T0 + 1, None)), 0x6985);
}

#[test]
fn p3_solicited_pull_leaves_keys_untouched_and_asks_for_no_verification() {
    let mut s = store();
    deliver(&mut s, &ltkm(1, 1, 1, None)).unwrap();
    let keys_before = s.msks.clone();
    let pull = SolicitedPull {
        csb_id: 9,
        key_domain_id: kd(),
        key_group: 1,
        ts: 2,
        rand: [1; 16],
        idi: IDI.into(),
        idr: BTID.into(),
    };
    let up = s.msk_update(&pull.seal(&smk()).unwrap()).unwrap();
    assert_eq!(up.event, MskUpdateEvent::SolicitedPull { key_domain_id: kd(), key_group: 1 });
    assert_eq!(up.verification, None);
    assert_eq!(s.msks, keys_before);
    // The pull's TS counts: the same TS again is a replay.
    assert_eq!(sw(s.msk_update(&pull.seal(&smk()).unwrap())), 0x9865);
}

#[test]
fn p3_full_msk_records_answer_9866_and_full_muk_records_9867() {
    let mut s = MbmsStore::with_capacity(Capacity { muk_records: 1, msk_records: 1 });
    s.install_muk(IDI, BTID, smk()).unwrap();
    deliver(&mut s, &ltkm(1, 1, 1, None)).unwrap();
    assert_eq!(refused_unchanged(&mut s, |s| deliver(s, &ltkm(2, 2, 1, None))), 0x9866);
    assert_eq!(sw(s.install_muk("other.example.org", BTID, smk())), 0x9867);
}

#[test]
fn p3_every_single_bit_flip_of_an_ltkm_is_refused_and_changes_nothing() {
    let wire = ltkm(1, 1, 1, policy(SecurityPolicy::PayPerTimeWithPlayBack, 2, 0)).seal(&smk()).unwrap();
    let mut s = store();
    for bit in 0..wire.len() * 8 {
        let mut bad = wire.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        refused_unchanged(&mut s, |s| s.msk_update(&bad));
    }
    s.msk_update(&wire).unwrap();
}

// ---------------------------------------------------------------- P-4 rights

#[test]
fn p4_implicit_play_once_without_extension_discards_replays() {
    let mut s = store();
    deliver(&mut s, &ltkm(1, 1, 1, None)).unwrap();
    let wire = stkm_bytes(&Stk { n: 1, tek_id: 1, ts: T0, ext: None });
    s.mtk_generation(&wire).unwrap();
    assert_eq!(refused_unchanged(&mut s, |s| s.mtk_generation(&wire)), 0x9865);
}

#[test]
fn p4_pay_per_time_accepts_live_and_refuses_play_back() {
    let mut s = store();
    deliver(&mut s, &ltkm(1, 1, 1, policy(SecurityPolicy::PayPerTime, 0, 0))).unwrap();
    stk(&mut s, 1, T0 + 10, None).unwrap();
    stk(&mut s, 2, T0 + 20, None).unwrap();
    assert_eq!(refused_unchanged(&mut s, |s| stk(s, 1, T0 + 10, None)), 0x9865);
}

#[test]
fn p4_pay_per_time_with_play_back_counts_sessions() {
    let mut s = store();
    deliver(&mut s, &ltkm(1, 1, 1, policy(SecurityPolicy::PayPerTimeWithPlayBack, 2, 0))).unwrap();
    stk(&mut s, 9, T0 + 100, None).unwrap();
    let id = SekPekId { key_group: 1, key_number: 1 };
    // First play-back session: two STKMs from the recording take one play-back.
    assert!(stk(&mut s, 1, T0 + 10, None).unwrap().play_back);
    assert!(stk(&mut s, 2, T0 + 20, None).unwrap().play_back);
    assert_eq!(s.msk(kd(), id).unwrap().rights.play_backs_left, 1);
    // Live again ends the session; the next play-back is a new session.
    assert!(!stk(&mut s, 10, T0 + 110, None).unwrap().play_back);
    stk(&mut s, 1, T0 + 10, None).unwrap();
    assert_eq!(s.msk(kd(), id).unwrap().rights.play_backs_left, 0);
    stk(&mut s, 11, T0 + 120, None).unwrap();
    assert_eq!(refused_unchanged(&mut s, |s| stk(s, 1, T0 + 10, None)), 0x9865);
    assert_eq!(s.msk(kd(), id).unwrap().rights.play_back_sessions, 2);
}

#[test]
fn p4_pay_per_view_is_for_the_first_program_only() {
    let mut s = store();
    deliver(&mut s, &ltkm(1, 1, 1, policy(SecurityPolicy::PayPerView, 0, 0))).unwrap();
    stk(&mut s, 1, T0 + 1, program(7)).unwrap();
    stk(&mut s, 2, T0 + 2, program(7)).unwrap();
    assert_eq!(refused_unchanged(&mut s, |s| stk(s, 3, T0 + 3, program(8))), 0x6985);
    assert_eq!(refused_unchanged(&mut s, |s| stk(s, 1, T0 + 1, program(7))), 0x9865, "no play-back");
}

#[test]
fn p4_pay_per_view_with_play_back() {
    let mut s = store();
    deliver(&mut s, &ltkm(1, 1, 1, policy(SecurityPolicy::PayPerViewWithPlayBack, 1, 0))).unwrap();
    stk(&mut s, 2, T0 + 2, program(7)).unwrap();
    assert!(stk(&mut s, 1, T0 + 1, program(7)).unwrap().play_back);
    assert_eq!(refused_unchanged(&mut s, |s| stk(s, 1, T0 + 1, program(8))), 0x6985);
}

#[test]
fn p4_user_pay_per_view_spends_one_token_per_new_program() {
    let mut s = store();
    deliver(&mut s, &ltkm(1, 1, 1, policy(SecurityPolicy::UserPayPerView, 0, 2))).unwrap();
    let id = SekPekId { key_group: 1, key_number: 1 };
    stk(&mut s, 1, T0 + 1, program(1)).unwrap();
    stk(&mut s, 2, T0 + 2, program(1)).unwrap();
    assert_eq!(s.msk(kd(), id).unwrap().rights.views_left, 1);
    stk(&mut s, 3, T0 + 3, program(2)).unwrap();
    assert_eq!(refused_unchanged(&mut s, |s| stk(s, 4, T0 + 4, program(3))), 0x6985);
    stk(&mut s, 4, T0 + 5, program(1)).unwrap();
    assert_eq!(refused_unchanged(&mut s, |s| stk(s, 1, T0 + 1, program(1))), 0x9865, "no play-back");
}

#[test]
fn p4_unlimited_within_window_plays_back_only_inside_the_window() {
    let mut s = store();
    deliver(&mut s, &ltkm(1, 1, 1, policy(SecurityPolicy::UnlimitedWithinWindow, 0, 0))).unwrap();
    stk(&mut s, 5, T0 + 50, None).unwrap();
    for _ in 0..3 {
        assert!(stk(&mut s, 1, T0 + 10, None).unwrap().play_back);
        stk(&mut s, 5, T0 + 51, None).ok();
    }
    assert_eq!(refused_unchanged(&mut s, |s| stk(s, 1, T0 - 10, None)), 0x9865);
}

// ---------------------------------------------------------------- P-4 audit counters

fn audit(s: &MbmsStore, n: u16) -> AuditCounters {
    s.audit(kd(), SekPekId { key_group: 1, key_number: n }).unwrap()
}

#[test]
fn p4_audit_of_a_fresh_key_shows_its_grant_and_reporting_flag() {
    let mut s = store();
    deliver(&mut s, &ltkm(1, 1, 1, policy(SecurityPolicy::PayPerTimeWithPlayBack, 2, 0))).unwrap();
    assert_eq!(
        audit(&s, 1),
        AuditCounters { play_backs_left: 2, consumption_reporting: true, ..AuditCounters::default() }
    );
    deliver(&mut s, &ltkm(2, 1, 2, None)).unwrap();
    assert_eq!(audit(&s, 2), AuditCounters::default(), "no extension: play-once, no reporting asked");
}

#[test]
fn p4_audit_counts_live_stkms_and_play_back_sessions() {
    let mut s = store();
    deliver(&mut s, &ltkm(1, 1, 1, policy(SecurityPolicy::PayPerTimeWithPlayBack, 2, 0))).unwrap();
    stk(&mut s, 9, T0 + 100, None).unwrap();
    stk(&mut s, 10, T0 + 110, None).unwrap();
    stk(&mut s, 1, T0 + 10, None).unwrap();
    stk(&mut s, 2, T0 + 20, None).unwrap();
    let a = audit(&s, 1);
    assert_eq!((a.live_stkms, a.play_back_sessions, a.play_backs_left), (2, 1, 1));
    // Reading changes nothing.
    let before = s.clone();
    audit(&s, 1);
    assert_eq!(s, before);
}

#[test]
fn p4_audit_shows_the_pay_per_view_lock_and_paid_programs() {
    let mut s = store();
    deliver(&mut s, &ltkm(1, 1, 1, policy(SecurityPolicy::PayPerView, 0, 0))).unwrap();
    assert_eq!(audit(&s, 1).ppv_program, None, "not locked before the first STKM");
    stk(&mut s, 1, T0 + 1, program(7)).unwrap();
    assert_eq!(audit(&s, 1).ppv_program, Some(Some(7)));

    let mut s = store();
    deliver(&mut s, &ltkm(1, 1, 1, policy(SecurityPolicy::PayPerView, 0, 0))).unwrap();
    stk(&mut s, 1, T0 + 1, None).unwrap();
    assert_eq!(audit(&s, 1).ppv_program, Some(None), "a program without program ID");

    let mut s = store();
    deliver(&mut s, &ltkm(1, 1, 1, policy(SecurityPolicy::UserPayPerView, 0, 3))).unwrap();
    stk(&mut s, 1, T0 + 1, program(1)).unwrap();
    stk(&mut s, 2, T0 + 2, program(2)).unwrap();
    stk(&mut s, 3, T0 + 3, program(1)).unwrap();
    let a = audit(&s, 1);
    assert_eq!((a.views_left, a.paid_programs, a.live_stkms), (1, 2, 3));
}

#[test]
fn p4_audit_of_a_key_not_held_is_6a88() {
    let mut s = store();
    assert_eq!(sw(s.audit(kd(), SekPekId { key_group: 1, key_number: 1 })), 0x6a88);
    deliver(&mut s, &ltkm(1, 1, 1, None)).unwrap();
    assert_eq!(sw(s.audit(kd(), SekPekId { key_group: 1, key_number: 2 })), 0x6a88, "other key number");
    assert_eq!(sw(s.audit(kd(), SekPekId { key_group: 2, key_number: 1 })), 0x6a88, "other key group");
    let other_domain = KeyDomainId::from_mcc_mnc("001", "02").unwrap();
    assert_eq!(sw(s.audit(other_domain, SekPekId { key_group: 1, key_number: 1 })), 0x6a88, "other domain");
}

// ---------------------------------------------------------------- P-6 STKM

#[test]
fn p6_step1_unknown_key_is_6a88() {
    let mut s = store();
    assert_eq!(refused_unchanged(&mut s, |s| stk(s, 1, T0, None)), 0x6a88);
}

#[test]
fn p6_step2_wrong_mac_is_9862() {
    let mut s = store();
    deliver(&mut s, &ltkm(1, 1, 1, None)).unwrap();
    let mut wire = stkm_bytes(&Stk { n: 1, tek_id: 1, ts: T0, ext: None });
    let last = wire.len() - 1;
    wire[last] ^= 1;
    assert_eq!(refused_unchanged(&mut s, |s| s.mtk_generation(&wire)), 0x9862);
}

#[test]
fn p6_step3_ts_outside_the_bcast_window_is_9865() {
    let mut s = store();
    deliver(&mut s, &ltkm(1, 1, 1, policy(SecurityPolicy::PayPerTime, 0, 0))).unwrap();
    assert_eq!(refused_unchanged(&mut s, |s| stk(s, 1, T0 - 1, None)), 0x9865);
    assert_eq!(refused_unchanged(&mut s, |s| stk(s, 1, T0 + 3601, None)), 0x9865);
    stk(&mut s, 1, T0 + 3600, None).unwrap();
}

#[test]
fn p6_step3_mbms_tek_id_window_moves_seql() {
    let mut s = store();
    let mut c = ltkm(1, 1, 1, None);
    c.validity = KeyValidity::TekIdWindow { seq_l: 2, seq_u: 4 };
    deliver(&mut s, &c).unwrap();
    assert_eq!(refused_unchanged(&mut s, |s| stk(s, 2, T0, None)), 0x9865, "SEQl < TEK ID");
    stk(&mut s, 3, T0, None).unwrap();
    assert_eq!(s.msk(kd(), c.sek_pek_id).unwrap().validity, KeyValidity::TekIdWindow { seq_l: 3, seq_u: 4 });
    assert_eq!(refused_unchanged(&mut s, |s| stk(s, 5, T0 + 1, None)), 0x9865, "TEK ID ≤ SEQu");
    stk(&mut s, 4, T0 + 1, None).unwrap();
}

#[test]
fn p6_step4_stale_ts_is_9865_for_a_key_without_play_back() {
    let mut s = store();
    deliver(&mut s, &ltkm(1, 1, 1, policy(SecurityPolicy::PayPerTime, 0, 0))).unwrap();
    stk(&mut s, 2, T0 + 2, None).unwrap();
    assert_eq!(refused_unchanged(&mut s, |s| stk(s, 3, T0 + 2, None)), 0x9865);
}

#[test]
fn p6_step5_resend_of_the_same_tek_id_returns_the_same_tek_and_lower_is_refused() {
    let mut s = store();
    deliver(&mut s, &ltkm(1, 1, 1, policy(SecurityPolicy::PayPerTime, 0, 0))).unwrap();
    let first = stk(&mut s, 3, T0 + 1, None).unwrap();
    let resend = stk(&mut s, 3, T0 + 2, None).unwrap();
    assert!(resend.resend && !first.resend);
    assert_eq!(first.tek, resend.tek);
    assert_eq!(refused_unchanged(&mut s, |s| stk(s, 2, T0 + 3, None)), 0x9865);
}

#[test]
fn p6_step6_parental_rating_above_the_card_setting_is_6985() {
    let mut s = store();
    s.parental_limit = Some(12);
    deliver(&mut s, &ltkm(1, 1, 1, None)).unwrap();
    let rated = |age| {
        ext_with(
            ProtectionAfterReception::ServiceProtectionOnly,
            Some(vec![AccessDescriptor::ParentalRating { system: 1, min_age: age }]),
        )
    };
    assert_eq!(refused_unchanged(&mut s, |s| stk(s, 1, T0, rated(16))), 0x6985);
    stk(&mut s, 1, T0, rated(12)).unwrap();
}

#[test]
fn p6_step7_terminal_bound_tek_leaves_wrapped_by_the_tbk() {
    let mut s = store();
    deliver(&mut s, &ltkm(1, 1, 1, None)).unwrap();
    let tbk = [0x3c; 16];
    let tek = Tek::from_bytes([0x44; 16]);
    let wire = StkmContent {
        csb_id: 1,
        key_domain_id: kd(),
        sek_pek_id: SekPekId { key_group: 1, key_number: 1 },
        tek_id: 1,
        ts: T0,
        ext: Some(StkmExt {
            protection_after_reception: ProtectionAfterReception::TerminalBound,
            traffic_protection_protocol: TrafficProtectionProtocol::IsmaCryp,
            traffic_authentication: false,
            tbk_id: Some(7),
            access_criteria: None,
        }),
        tek: TekField::WrappedByTbk(keycast_crypto::key_wrap::wrap_16(&tbk, tek.expose_secret())),
        salt: Some(TekSalt::from_bytes([1; 14])),
    }
    .seal(&sek(1), &RAND)
    .unwrap();
    let TekOut::TbkWrapped { wrapped, .. } = s.mtk_generation(&wire).unwrap().tek else {
        panic!("expected a TBK-wrapped TEK")
    };
    assert_eq!(*keycast_crypto::key_wrap::unwrap_16(&tbk, &wrapped).unwrap(), *tek.expose_secret());
}

#[test]
fn p6_every_single_bit_flip_of_an_stkm_is_refused_and_changes_nothing() {
    let mut s = store();
    deliver(&mut s, &ltkm(1, 1, 1, policy(SecurityPolicy::PayPerTime, 0, 0))).unwrap();
    let wire = stkm_bytes(&Stk { n: 1, tek_id: 1, ts: T0 + 1, ext: program(3) });
    for bit in 0..wire.len() * 8 {
        let mut bad = wire.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        refused_unchanged(&mut s, |s| s.mtk_generation(&bad));
    }
    s.mtk_generation(&wire).unwrap();
}

// ---------------------------------------------------------------- P-10 secure channel

fn usim_with_mbms_muk() -> (Usim, KsIntNaf) {
    // Milenage test set 1 (TS 35.208 §4.3), GBA worked example (reference vectors §2).
    let k = SubscriberKey::from_bytes(hex::decode("465b5ce8b199b49faa5f0a2ee238a6bc").unwrap().try_into().unwrap());
    let opc = Opc::from_bytes(hex::decode("cd63cb71954a9f4e48a5994e37a02baf").unwrap().try_into().unwrap());
    let rand: [u8; 16] = hex::decode("23553cbe9637a89d218ae64dae47bf35").unwrap().try_into().unwrap();
    let (sqn, amf) = ([0xff, 0x9b, 0xb4, 0xd0, 0xb6, 0x07], [0xb9, 0xb9]);
    let m = Milenage::new(&k, &opc);
    let (_, _, ik, _) = m.f2345(&rand);
    let autn_star = gba_u_autn_star(&m.build_autn(sqn, amf, &rand), &ik);
    let identity = UsimIdentity {
        imsi: "001010000000001".into(),
        impi: "001010000000001@ims.mnc001.mcc001.3gppnetwork.org".into(),
        iccid: "8900100000000000001".into(),
    };
    let mut usim = Usim::new(identity.clone(), k, opc);
    // The card last saw an SQN just below test set 1's, so set 1's SQN is fresh (within Δ).
    usim.sqn_ms = [0xff, 0x9b, 0xb4, 0xd0, 0xb6, 0x00];
    let AkaAnswer::SuccessGba { res } = usim.gba_bootstrap(&rand, &autn_star).unwrap() else { panic!() };
    assert_eq!(hex::encode(res.expose_secret()), "a54211d5e3ba50be", "vectors §2: RES with LSB flipped");
    usim.write_gba_bp(BTID, "2026-12-01T00:00:00Z").unwrap();
    let naf = NafId::mbms(IDI);
    let ext = usim.gba_naf_derivation(naf.as_bytes(), &identity.impi).unwrap();
    assert_eq!(hex::encode(ext.expose_secret()), "79d8098e4b9ef12c858a0da3471f6b2d29b4cbb549500dcb3c88154562de340d");
    let ks = keycast_crypto::gba::ks_from_ck_ik(&m.f2345(&rand).1, &ik);
    let int = gba::ks_int_naf(&ks, &rand, &identity.impi, &naf).unwrap();
    (usim, int)
}

fn lke_request(usim: &Usim, int: &KsIntNaf, limit: u128) -> (LocalKeyRequest, keycast_crypto::keys::KsLocal) {
    let req = LocalKeyRequest {
        naf_id: NafId::mbms(IDI).as_bytes().to_vec(),
        terminal_id: b"IMEI3548".to_vec(),
        terminal_appli_id: b"platform".to_vec(),
        uicc_appli_id: b"platform".to_vec(),
        randx: vec![0x42; 16],
        counter_limit: limit.to_be_bytes(),
        mac: [0; 16],
    };
    signed(usim, int, req)
}

/// Derives Ks_local as the key center does and puts the terminal's MAC into `req`.
fn signed(usim: &Usim, int: &KsIntNaf, mut req: LocalKeyRequest) -> (LocalKeyRequest, keycast_crypto::keys::KsLocal) {
    let ks_local = gba::ks_local(
        int,
        &LocalKeyParams {
            b_tid: BTID,
            terminal_id: &req.terminal_id,
            iccid: usim.identity.iccid.as_bytes(),
            terminal_appli_id: &req.terminal_appli_id,
            uicc_appli_id: &req.uicc_appli_id,
            randx: &req.randx,
            counter_limit: &req.counter_limit,
        },
    )
    .unwrap();
    req.mac = local_key_request_mac(&ks_local, &req, usim.identity.iccid.as_bytes());
    (req, ks_local)
}

fn content_protected(s: &mut Usim, tek_id: u16, ts: u32) -> Result<keycast_card::mbms::MtkAnswer, CardError> {
    let wire = StkmContent {
        csb_id: 1,
        key_domain_id: kd(),
        sek_pek_id: SekPekId { key_group: 1, key_number: 1 },
        tek_id,
        ts,
        ext: ext_with(ProtectionAfterReception::MayRecord, None),
        tek: TekField::Clear(Tek::from_bytes([0x66; 16])),
        salt: Some(TekSalt::from_bytes([0x67; 14])),
    }
    .seal(&sek(1), &RAND)
    .unwrap();
    s.mtk_generation(&wire)
}

#[test]
fn p10_content_protected_tek_needs_the_secure_channel_6982() {
    let (mut usim, int) = usim_with_mbms_muk();
    let c = ltkm(1, 1, 1, None);
    usim.msk_update(&c.seal(&Smk::from_bytes(*int.expose_secret())).unwrap()).unwrap();
    let before = usim.clone();
    assert_eq!(content_protected(&mut usim, 1, T0).unwrap_err().status_word(), 0x6982);
    assert_eq!(usim, before);
}

#[test]
fn p10_after_local_key_establishment_the_tek_leaves_wrapped_and_counts() {
    let (mut usim, int) = usim_with_mbms_muk();
    usim.msk_update(&ltkm(1, 1, 1, None).seal(&Smk::from_bytes(*int.expose_secret())).unwrap()).unwrap();
    let (req, ks_local) = lke_request(&usim, &int, 2);
    let verification = usim.local_key_establishment(&req).unwrap();
    assert_eq!(verification, keycast_card::usim::local_key_verification(&ks_local));
    let TekOut::ChannelWrapped(w) = content_protected(&mut usim, 1, T0).unwrap().tek else {
        panic!("expected a wrapped TEK")
    };
    let (tek, salt) = unwrap_channel_tek(&k_sac(&ks_local), &w).unwrap();
    assert_eq!((tek, salt), (Tek::from_bytes([0x66; 16]), TekSalt::from_bytes([0x67; 14])));
    content_protected(&mut usim, 2, T0 + 1).unwrap();
    assert_eq!(content_protected(&mut usim, 3, T0 + 2).unwrap_err().status_word(), 0x6982, "Counter Limit reached");
}

#[test]
fn p10_local_key_establishment_with_a_wrong_mac_is_9862() {
    let (mut usim, int) = usim_with_mbms_muk();
    let (mut req, _) = lke_request(&usim, &int, 5);
    req.mac[0] ^= 1;
    assert_eq!(usim.local_key_establishment(&req).unwrap_err().status_word(), 0x9862);
    assert!(usim.mbms.sac.is_none());
}

#[test]
fn p10_availability_check_without_the_key_centers_naf_key_is_6a88() {
    let identity = UsimIdentity { imsi: "001010000000001".into(), impi: "a@b".into(), iccid: "89".into() };
    let usim = Usim::new(identity, SubscriberKey::from_bytes([1; 16]), Opc::from_bytes([2; 16]));
    let naf = NafId::mbms(IDI);
    assert_eq!(sw(usim.local_key_available(naf.as_bytes(), b"IMEI3548", b"platform", b"platform")), 0x6a88);
}

#[test]
fn p10_availability_check_answers_for_exactly_the_established_identifiers() {
    let (mut usim, int) = usim_with_mbms_muk();
    let naf = NafId::mbms(IDI);
    let check = |u: &Usim, terminal: &[u8], t_app: &[u8], u_app: &[u8]| {
        u.local_key_available(naf.as_bytes(), terminal, t_app, u_app).unwrap()
    };
    assert_eq!(check(&usim, b"IMEI3548", b"platform", b"platform"), LocalKeyStatus::NotEstablished);
    let (req, _) = lke_request(&usim, &int, 1);
    usim.local_key_establishment(&req).unwrap();
    let before = usim.clone();
    assert_eq!(check(&usim, b"IMEI3548", b"platform", b"platform"), LocalKeyStatus::Available);
    assert_eq!(usim, before, "the check changes nothing");
    assert_eq!(check(&usim, b"IMEI0000", b"platform", b"platform"), LocalKeyStatus::NotEstablished);
    assert_eq!(check(&usim, b"IMEI3548", b"player", b"platform"), LocalKeyStatus::NotEstablished);
    assert_eq!(check(&usim, b"IMEI3548", b"platform", b"bcast"), LocalKeyStatus::NotEstablished);
}

#[test]
fn p10_availability_check_reports_a_used_up_counter_limit() {
    let (mut usim, int) = usim_with_mbms_muk();
    usim.msk_update(&ltkm(1, 1, 1, None).seal(&Smk::from_bytes(*int.expose_secret())).unwrap()).unwrap();
    let (req, _) = lke_request(&usim, &int, 1);
    usim.local_key_establishment(&req).unwrap();
    content_protected(&mut usim, 1, T0).unwrap();
    let naf = NafId::mbms(IDI);
    assert_eq!(
        usim.local_key_available(naf.as_bytes(), b"IMEI3548", b"platform", b"platform").unwrap(),
        LocalKeyStatus::Exhausted
    );
    // A new establishment (new RANDx and Counter Limit) makes it available again.
    let (req, _) = signed(&usim, &int, LocalKeyRequest { randx: vec![0x43; 16], counter_limit: [5; 16], ..req });
    usim.local_key_establishment(&req).unwrap();
    assert_eq!(
        usim.local_key_available(naf.as_bytes(), b"IMEI3548", b"platform", b"platform").unwrap(),
        LocalKeyStatus::Available
    );
}

#[test]
fn p10_setting_the_parental_limit_without_the_secure_channel_is_6982() {
    let (mut usim, _) = usim_with_mbms_muk();
    let before = usim.clone();
    assert_eq!(sw(usim.set_parental_limit(Some(12))), 0x6982);
    assert_eq!(sw(usim.set_parental_limit(None)), 0x6982);
    assert_eq!(usim, before);
    assert_eq!(usim.parental_limit(), None);
}

#[test]
fn p10_parental_limit_set_over_the_secure_channel_guards_mtk_generation() {
    let (mut usim, int) = usim_with_mbms_muk();
    usim.msk_update(&ltkm(1, 1, 1, None).seal(&Smk::from_bytes(*int.expose_secret())).unwrap()).unwrap();
    let (req, _) = lke_request(&usim, &int, 3);
    usim.local_key_establishment(&req).unwrap();
    usim.set_parental_limit(Some(12)).unwrap();
    assert_eq!(usim.parental_limit(), Some(12));
    assert_eq!(usim.mbms.sac.as_ref().unwrap().used, 0, "setting it spends no channel use");
    let rated = |u: &mut Usim, tek_id: u16, ts: u32, age: u8| {
        let ext = ext_with(
            ProtectionAfterReception::ServiceProtectionOnly,
            Some(vec![AccessDescriptor::ParentalRating { system: 1, min_age: age }]),
        );
        u.mtk_generation(&stkm_bytes(&Stk { n: 1, tek_id, ts, ext }))
    };
    assert_eq!(sw(rated(&mut usim, 1, T0, 16)), 0x6985);
    rated(&mut usim, 1, T0, 12).unwrap();
    usim.set_parental_limit(None).unwrap();
    assert_eq!(usim.parental_limit(), None);
    rated(&mut usim, 2, T0 + 1, 18).unwrap();
}

#[test]
fn p10_setting_the_parental_limit_over_a_used_up_channel_is_6982() {
    let (mut usim, int) = usim_with_mbms_muk();
    usim.msk_update(&ltkm(1, 1, 1, None).seal(&Smk::from_bytes(*int.expose_secret())).unwrap()).unwrap();
    let (req, _) = lke_request(&usim, &int, 1);
    usim.local_key_establishment(&req).unwrap();
    content_protected(&mut usim, 1, T0).unwrap();
    let before = usim.clone();
    assert_eq!(sw(usim.set_parental_limit(Some(12))), 0x6982);
    assert_eq!(usim, before);
}

// ---------------------------------------------------------------- USIM contexts

#[test]
fn usim_naf_derivation_installs_the_mbms_muk_and_muk_deletion_cascades() {
    let (mut usim, int) = usim_with_mbms_muk();
    assert_eq!(usim.mbms.muks[0].current.key, Smk::from_bytes(*int.expose_secret()));
    assert_eq!(usim.naf_keys.len(), 1);
    usim.muk_deletion(IDI, BTID).unwrap();
    assert!(usim.mbms.muks.is_empty() && usim.naf_keys.is_empty() && usim.gba.is_none());
    assert_eq!(usim.muk_deletion(IDI, BTID).unwrap_err().status_word(), 0x6a88);
}

#[test]
fn usim_stale_sqn_answers_auts_that_recovers_sqn_ms() {
    let (mut usim, _) = usim_with_mbms_muk();
    let k = SubscriberKey::from_bytes(hex::decode("465b5ce8b199b49faa5f0a2ee238a6bc").unwrap().try_into().unwrap());
    let opc = Opc::from_bytes(hex::decode("cd63cb71954a9f4e48a5994e37a02baf").unwrap().try_into().unwrap());
    let m = Milenage::new(&k, &opc);
    let rand = [0x11; 16];
    // The same SQN again is not fresh.
    let autn = m.build_autn(usim.sqn_ms, [0x80, 0], &rand);
    let AkaAnswer::SyncFailure { auts } = usim.authenticate_3g(&rand, &autn).unwrap() else { panic!("expected AUTS") };
    assert_eq!(m.recover_sqn_ms(&rand, &auts).unwrap(), usim.sqn_ms);
    let mut bad = autn;
    bad[15] ^= 1;
    assert_eq!(usim.authenticate_3g(&rand, &bad).unwrap_err().status_word(), 0x9862);
}

#[test]
fn usim_msk_deletion_removes_the_group() {
    let mut s = store();
    deliver(&mut s, &ltkm(1, 1, 1, None)).unwrap();
    s.delete_msks(kd(), 1).unwrap();
    assert_eq!(sw(stk(&mut s, 1, T0, None)), 0x6a88);
    assert_eq!(sw(s.delete_msks(kd(), 1)), 0x6a88);
}

// ---------------------------------------------------------------- GBA_ME store

#[test]
fn gba_me_store_uses_ks_naf_as_smk_and_mrk_as_srk_with_the_same_rules() {
    // GBA worked example (reference vectors §2): Ks from test set 1, GBA_ME keys.
    let ck = keycast_crypto::keys::Ck::from_bytes(
        hex::decode("b40ba9a3c58b2a05bbf0d987b21bf8cb").unwrap().try_into().unwrap(),
    );
    let ik = keycast_crypto::keys::Ik::from_bytes(
        hex::decode("f769bcd751044604127672711c6d3441").unwrap().try_into().unwrap(),
    );
    let rand: [u8; 16] = hex::decode("23553cbe9637a89d218ae64dae47bf35").unwrap().try_into().unwrap();
    let mut me = keycast_card::gba_me::GbaMeStore::default();
    me.bootstrap(&ck, &ik, rand, BTID);
    let srk = me.mbms_naf_keys(IDI, "001010000000001@ims.mnc001.mcc001.3gppnetwork.org").unwrap();
    assert_eq!(hex::encode(srk.expose_secret()), "06e4f3af25528d00c8739a646ea497dce1d98a7eb6f55f80b7b6a20e62e53623");
    let smk = Smk::from_bytes(
        hex::decode("79d8098e4b9ef12c858a0da3471f6b2d29b4cbb549500dcb3c88154562de340d").unwrap().try_into().unwrap(),
    );
    me.msk_update(&ltkm(1, 1, 1, None).seal(&smk).unwrap()).unwrap();
    let wire = stkm_bytes(&Stk { n: 1, tek_id: 1, ts: T0, ext: None });
    let TekOut::Clear { tek, .. } = me.mtk_generation(&wire).unwrap().tek else { panic!() };
    assert_eq!(tek, Tek::from_bytes([1; 16]));
    assert_eq!(me.mtk_generation(&wire).unwrap_err().status_word(), 0x9865);
}
