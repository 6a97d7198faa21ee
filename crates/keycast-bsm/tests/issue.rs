//! LTKM issuing round trips: every LTKM the BSM builds opens with the SMK (keycast-mikey) and is
//! taken by the card emulator's MBMS store with the expected effect (profile P-3, P-11).

mod ltkm_support;

use keycast_bsm::issue::{
    IssueError, LtkmCounter, LtkmKind, StreamingPolicy, build_ltkm, delivery_ltkm, invalidation_ltkm,
    solicited_pull_ltkm, validity_update_ltkm,
};
use keycast_bsm::rng::SeededRandom;
use keycast_card::CardError;
use keycast_card::mbms::MskUpdateEvent;
use keycast_mikey::{KeyValidity, Ltkm, OpenedLtkm, SekPekId, SrtpPolicy};
use ltkm_support::*;

fn open(bytes: &[u8], t: &TerminalKeys) -> OpenedLtkm {
    Ltkm::decode(bytes).expect("decodes").open(&t.smk).expect("opens under the SMK")
}

use keycast_bsm::issue::TerminalKeys;

#[test]
fn streaming_delivery_opens_with_every_field() {
    let (key, t) = (streaming_key(), terminal("btid-1@bsf.example", 0x11));
    let mut counter = LtkmCounter::new(&t.btid);
    let bytes = delivery_ltkm(&key, &t, &next_ts(&mut counter, &t)).unwrap();
    let OpenedLtkm::Key(c) = open(&bytes, &t) else { panic!("a key LTKM") };
    assert_eq!(c.key.as_ref(), Some(&key.key));
    assert_eq!(c.validity, key.validity);
    assert!(c.verification_requested, "pushed deliveries ask for a verification message");
    assert_eq!((c.ts, c.csb_id, c.rand), (1, key.csb_id, key.rand));
    assert_eq!((c.idi.as_str(), c.idr.as_str()), (FQDN, t.btid.as_str()));
    assert_eq!((c.key_domain_id, c.sek_pek_id), (key.key_domain_id, key.sek_pek_id));
    let s = key.streaming.as_ref().unwrap();
    assert_eq!(c.srtp_cs, Some(s.srtp_cs));
    assert_eq!(c.srtp_policy.as_ref(), Some(&s.srtp_policy));
    assert_eq!(c.srtp_policy.unwrap().roc_rate(), Some(16));
    assert_eq!(c.ext, key.ext);
}

#[test]
fn download_delivery_uses_the_tek_id_window_and_no_sp() {
    let (key, t) = (download_key(), terminal("btid-2@bsf.example", 0x22));
    let mut counter = LtkmCounter::new(&t.btid);
    let bytes = delivery_ltkm(&key, &t, &next_ts(&mut counter, &t)).unwrap();
    let l = Ltkm::decode(&bytes).unwrap();
    assert!(l.srtp_cs().is_none() && l.srtp_policy().is_none() && l.ext().is_none());
    let OpenedLtkm::Key(c) = l.open(&t.smk).unwrap() else { panic!("a key LTKM") };
    assert_eq!(c.validity, KeyValidity::TekIdWindow { seq_l: 0, seq_u: 500 });
    assert_eq!(c.key.as_ref(), Some(&key.key));
}

#[test]
fn card_stores_the_key_then_applies_update_and_invalidation() {
    for key in [streaming_key(), download_key()] {
        let t = terminal("btid-3@bsf.example", 0x33);
        let mut card = card(&t);
        let mut counter = LtkmCounter::new(&t.btid);

        let d = delivery_ltkm(&key, &t, &next_ts(&mut counter, &t)).unwrap();
        let u = card.msk_update(&d).expect("card takes the delivery");
        assert_eq!(u.event, MskUpdateEvent::Stored(key.sek_pek_id));
        assert!(u.verification.is_some(), "V = 1 gives a verification message");
        assert_eq!(card.msk(key.key_domain_id, key.sek_pek_id).unwrap().key, key.key);

        let longer = match key.validity {
            KeyValidity::TsWindow { ts_low, ts_high } => KeyValidity::TsWindow { ts_low, ts_high: ts_high + 7_200 },
            KeyValidity::TekIdWindow { seq_l, .. } => KeyValidity::TekIdWindow { seq_l, seq_u: 900 },
        };
        let extended = key.with_validity(longer).unwrap();
        let upd = validity_update_ltkm(&extended, &t, &next_ts(&mut counter, &t)).unwrap();
        let OpenedLtkm::Key(c) = open(&upd, &t) else { panic!("a key LTKM") };
        assert!(c.key.is_none(), "a validity update carries no key");
        let u = card.msk_update(&upd).expect("card takes the update");
        assert_eq!(u.event, MskUpdateEvent::ValidityUpdated(key.sek_pek_id));
        assert_eq!(card.msk(key.key_domain_id, key.sek_pek_id).unwrap().validity, longer);

        let inv = invalidation_ltkm(&extended, &t, &next_ts(&mut counter, &t)).unwrap();
        let OpenedLtkm::Key(c) = open(&inv, &t) else { panic!("a key LTKM") };
        assert!(c.key.is_none() && c.validity.is_invalidation(), "inverted window, no key");
        assert_eq!(c.ts, 3);
        let u = card.msk_update(&inv).expect("card takes the invalidation");
        assert_eq!(u.event, MskUpdateEvent::Invalidated(key.sek_pek_id));
        assert!(u.verification.is_some());
        assert!(card.msk(key.key_domain_id, key.sek_pek_id).unwrap().is_invalidated());
    }
}

#[test]
fn solicited_pull_has_key_number_zero_no_v_and_no_key() {
    let t = terminal("btid-4@bsf.example", 0x44);
    let mut counter = LtkmCounter::new(&t.btid);
    let mut rng = SeededRandom::new(4);
    let bytes = solicited_pull_ltkm(kd(), 7, &t, &next_ts(&mut counter, &t), &mut rng).unwrap();
    let l = Ltkm::decode(&bytes).unwrap();
    assert!(l.is_solicited_pull() && !l.verification_requested());
    assert_eq!(l.sek_pek_id(), SekPekId { key_group: 7, key_number: 0 });
    let OpenedLtkm::SolicitedPull(p) = l.open(&t.smk).unwrap() else { panic!("a solicited pull") };
    assert_eq!((p.key_group, p.ts, p.idr.as_str()), (7, 1, t.btid.as_str()));

    let mut card = card(&t);
    let u = card.msk_update(&bytes).expect("card takes the trigger");
    assert_eq!(u.event, MskUpdateEvent::SolicitedPull { key_domain_id: kd(), key_group: 7 });
    assert!(u.verification.is_none(), "no verification message for a pull trigger");

    // Two triggers draw different RAND and CSB ID.
    let again = solicited_pull_ltkm(kd(), 7, &t, &next_ts(&mut counter, &t), &mut rng).unwrap();
    let l2 = Ltkm::decode(&again).unwrap();
    assert_ne!((l.rand(), l.csb_id()), (l2.rand(), l2.csb_id()));
}

#[test]
fn counter_is_what_the_card_needs() {
    let key = streaming_key();
    let t = terminal("btid-5@bsf.example", 0x55);
    let mut card = card(&t);
    let mut counter = LtkmCounter::new(&t.btid);
    // A retransmission of the same content gets a new TS and is accepted again.
    for want in 1..=3 {
        let ts = next_ts(&mut counter, &t);
        assert_eq!(ts.value(), want);
        let bytes = delivery_ltkm(&key, &t, &ts).unwrap();
        card.msk_update(&bytes).expect("a fresh TS is accepted");
    }
    // Resending an old TS is what the counter prevents: the card refuses it.
    let stale = delivery_ltkm(&key, &t, &LtkmCounter::restore(&t.btid, 1).reserve(&t.btid).persisted()).unwrap();
    assert!(matches!(card.msk_update(&stale), Err(CardError::Freshness(_))));

    // A new bootstrap (new B-TID, new SMK): the counter restarts and the card's new MUK takes TS 1.
    let t2 = terminal("btid-5b@bsf.example", 0x56);
    card.install_muk(FQDN, &t2.btid, t2.smk.clone()).unwrap();
    let ts = next_ts(&mut counter, &t2);
    assert_eq!(ts.value(), 1);
    card.msk_update(&delivery_ltkm(&key, &t2, &ts).unwrap()).expect("TS 1 under the new MUK");
}

#[test]
fn rejects_ts_reserved_under_another_btid() {
    let key = streaming_key();
    let (t1, t2) = (terminal("old@bsf.example", 1), terminal("new@bsf.example", 2));
    let ts = LtkmCounter::new(&t1.btid).reserve(&t1.btid).persisted();
    assert_eq!(delivery_ltkm(&key, &t2, &ts), Err(IssueError::TsOfAnotherSmk));
    let mut rng = SeededRandom::new(1);
    assert_eq!(solicited_pull_ltkm(kd(), 7, &t2, &ts, &mut rng), Err(IssueError::TsOfAnotherSmk));
}

#[test]
fn rejects_delivering_an_inverted_window() {
    let key = streaming_key();
    let t = terminal("b@bsf.example", 1);
    let ts = LtkmCounter::new(&t.btid).reserve(&t.btid).persisted();
    let kind = LtkmKind::Deliver { validity: KeyValidity::invalidation(true) };
    assert_eq!(build_ltkm(&kind, &key, &t, &ts, true), Err(IssueError::DeliversInvalidatedKey));
}

#[test]
fn rejects_bad_records() {
    let t = terminal("b@bsf.example", 1);
    let ts = LtkmCounter::new(&t.btid).reserve(&t.btid).persisted();
    let mut k = streaming_key();
    k.sek_pek_id.key_number = 0;
    assert_eq!(delivery_ltkm(&k, &t, &ts), Err(IssueError::BadSekPekId));
    let mut k = streaming_key();
    k.sek_pek_id.key_group = 0;
    assert_eq!(delivery_ltkm(&k, &t, &ts), Err(IssueError::BadSekPekId));
    let mut k = streaming_key();
    k.validity = KeyValidity::TekIdWindow { seq_l: 0, seq_u: 9 };
    assert_eq!(delivery_ltkm(&k, &t, &ts), Err(IssueError::ValidityForm));
    let mut k = download_key();
    k.validity = KeyValidity::TsWindow { ts_low: 1, ts_high: 2 };
    assert_eq!(delivery_ltkm(&k, &t, &ts), Err(IssueError::ValidityForm));
    let mut k = download_key();
    k.validity = KeyValidity::TekIdWindow { seq_l: 0, seq_u: 0xffff };
    assert_eq!(delivery_ltkm(&k, &t, &ts), Err(IssueError::SeqUpperReserved));
    assert_eq!(
        download_key().with_validity(KeyValidity::TsWindow { ts_low: 1, ts_high: 2 }),
        Err(IssueError::ValidityForm)
    );
    let mut k = streaming_key();
    k.streaming = Some(StreamingPolicy {
        srtp_policy: SrtpPolicy { policy_no: 3, ..SrtpPolicy::keycast(None) },
        ..StreamingPolicy::keycast(None)
    });
    assert_eq!(delivery_ltkm(&k, &t, &ts), Err(IssueError::PolicyNumber));
    let mut rng = SeededRandom::new(1);
    assert_eq!(solicited_pull_ltkm(kd(), 0, &t, &ts, &mut rng), Err(IssueError::BadSekPekId));
}

#[test]
fn sealing_is_deterministic_and_keys_never_print() {
    let (key, t) = (streaming_key(), terminal("b@bsf.example", 9));
    let ts = LtkmCounter::restore(&t.btid, 41).reserve(&t.btid).persisted();
    assert_eq!(delivery_ltkm(&key, &t, &ts).unwrap(), delivery_ltkm(&key, &t, &ts).unwrap());
    let printed = format!("{key:?} {t:?}");
    assert!(printed.contains("SekPek(…)") && printed.contains("Smk(…)"));
    assert!(!printed.contains("94, 94") && !printed.contains("5e5e"), "no key bytes in Debug output");
}
