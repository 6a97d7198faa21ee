//! Verification-message intake (profile P-5): the whole push loop with the card emulator's MBMS
//! store answering, and one refusal per kind of bad message.

mod ltkm_support;

use std::time::Duration;

use keycast_bsm::delivery::{
    AckOutcome, Action, Attempt, DeliveryId, DeliveryState, RegistrationInterface, SendResult, Time,
};
use keycast_bsm::issue::{LtkmCounter, LtkmKind, SekPekRecord, TerminalKeys, build_ltkm};
use keycast_bsm::rng::SeededRandom;
use keycast_bsm::verification::{VerificationError, Verified, check, intake, parse};
use keycast_card::mbms::MbmsStore;
use keycast_mikey::{Ltkm, VerificationMessage};
use ltkm_support::*;

/// One terminal with its card, counter and keys, and the scheduler's view.
struct World {
    s: keycast_bsm::delivery::Scheduler<SeededRandom>,
    key: SekPekRecord,
    t: TerminalKeys,
    card: MbmsStore,
    counter: LtkmCounter,
}

impl World {
    fn new(key: SekPekRecord) -> Self {
        let t = terminal("btid-v@bsf.example", 0x77);
        Self { s: scheduler(quiet_config(), 1), card: card(&t), counter: LtkmCounter::new(&t.btid), key, t }
    }

    /// What the shell does for a Send: TS, LTKM, report; returns the LTKM bytes.
    fn send(&mut self, action: &Action, now: Time) -> Vec<u8> {
        let Action::Send { id, kind, attempt, .. } = action else { panic!("a send: {action:?}") };
        let ts = self.counter.reserve(&self.t.btid).persisted();
        let bytes = build_ltkm(kind, &self.key, &self.t, &ts, true).unwrap();
        let sent = SendResult::Sent { btid: self.t.btid.clone(), ts: ts.value() };
        self.s.send_result(*id, Attempt::Push(*attempt), sent, now).unwrap();
        bytes
    }

    fn intake(&mut self, vm: &[u8], now: Time) -> Result<Verified, VerificationError> {
        let (key, t) = (&self.key, &self.t);
        intake(&mut self.s, vm, now, |_, btid| (btid == t.btid).then_some((key, t)))
    }
}

fn at(s: u64) -> Time {
    START.after(Duration::from_secs(s))
}

#[test]
fn card_answer_acknowledges_the_delivery_and_stops_retries() {
    for key in [streaming_key(), download_key()] {
        let mut w = World::new(key);
        let mut d = delivery(1, w.key.delivery(), RegistrationInterface::OmaBcast);
        d.key.sek_pek_id = w.key.sek_pek_id;
        let id = w.s.enqueue(d.clone(), START).unwrap();
        let action = w.s.poll(START).remove(0);
        let ltkm = w.send(&action, START);
        let vm = w.card.msk_update(&ltkm).unwrap().verification.expect("V = 1");

        let claim = parse(&vm).unwrap();
        assert_eq!((claim.csb_id, claim.ts, claim.btid.as_str()), (w.key.csb_id, 1, w.t.btid.as_str()));
        let verified = w.intake(&vm, at(2)).unwrap();
        assert_eq!(verified, Verified { id, key: d.key, outcome: AckOutcome::Acknowledged });
        assert_eq!(w.s.row(id).unwrap().state, DeliveryState::Acknowledged { at: at(2) });
        assert!(w.s.row(id).unwrap().sent[0].acknowledged);
        assert_eq!(w.s.poll_timeout(), None, "no retry after the acknowledgement");
        assert!(drive(&mut w.s, at(2), at(100_000), |_, _, _| {}).is_empty());
    }
}

#[test]
fn invalidation_is_acknowledged_too() {
    let mut w = World::new(streaming_key());
    // The key is on the card first.
    let ts = w.counter.reserve(&w.t.btid).persisted();
    w.card.msk_update(&keycast_bsm::issue::delivery_ltkm(&w.key, &w.t, &ts).unwrap()).unwrap();
    let mut d = delivery(1, LtkmKind::Invalidate, RegistrationInterface::Mbms);
    d.key.version = 2;
    let id = w.s.enqueue(d, START).unwrap();
    let action = w.s.poll(START).remove(0);
    let ltkm = w.send(&action, START);
    let u = w.card.msk_update(&ltkm).unwrap();
    assert!(w.card.msk(w.key.key_domain_id, w.key.sek_pek_id).unwrap().is_invalidated());
    assert_eq!(w.intake(&u.verification.unwrap(), at(1)).unwrap().id, id);
}

#[test]
fn answer_to_an_earlier_attempt_still_acknowledges_and_a_second_answer_is_harmless() {
    let mut w = World::new(streaming_key());
    let id = w.s.enqueue(delivery(1, w.key.delivery(), RegistrationInterface::OmaBcast), START).unwrap();
    let first = w.s.poll(START).remove(0);
    let ltkm1 = w.send(&first, START);
    // No answer in time: attempt 2 goes out (new TS) before the card's answer to attempt 1 arrives.
    let second = w.s.poll(at(10)).remove(0);
    assert!(matches!(second, Action::Send { attempt: 2, .. }));
    let ltkm2 = w.send(&second, at(10));
    let vm1 = w.card.msk_update(&ltkm1).unwrap().verification.unwrap();
    let vm2 = w.card.msk_update(&ltkm2).unwrap().verification.unwrap();
    assert_eq!(w.intake(&vm1, at(11)).unwrap().outcome, AckOutcome::Acknowledged);
    assert_eq!(w.intake(&vm2, at(12)).unwrap().outcome, AckOutcome::AlreadyAcknowledged);
    assert_eq!(w.s.row(id).unwrap().state, DeliveryState::Acknowledged { at: at(11) });
}

#[test]
fn rejects_a_replayed_verification_message() {
    let mut w = World::new(streaming_key());
    let id = w.s.enqueue(delivery(1, w.key.delivery(), RegistrationInterface::OmaBcast), START).unwrap();
    let a = w.s.poll(START).remove(0);
    let ltkm = w.send(&a, START);
    let vm = w.card.msk_update(&ltkm).unwrap().verification.unwrap();
    w.intake(&vm, at(1)).unwrap();
    let row = w.s.row(id).unwrap().clone();
    assert_eq!(w.intake(&vm, at(2)), Err(VerificationError::Replayed { delivery: id }));
    assert_eq!(w.s.row(id).unwrap(), &row, "a replay changes nothing");
}

fn sent_world() -> (World, DeliveryId, Vec<u8>, Vec<u8>) {
    let mut w = World::new(streaming_key());
    let id = w.s.enqueue(delivery(1, w.key.delivery(), RegistrationInterface::OmaBcast), START).unwrap();
    let a = w.s.poll(START).remove(0);
    let ltkm = w.send(&a, START);
    let vm = w.card.msk_update(&ltkm).unwrap().verification.unwrap();
    (w, id, ltkm, vm)
}

#[test]
fn rejects_a_forged_mac() {
    let (mut w, id, _, mut vm) = sent_world();
    let last = vm.len() - 1;
    vm[last] ^= 1;
    assert_eq!(w.intake(&vm, at(1)), Err(VerificationError::Forged));
    assert!(matches!(w.s.row(id).unwrap().state, DeliveryState::Sent { .. }), "a forgery changes nothing");
}

#[test]
fn rejects_a_message_made_under_another_smk() {
    let (mut w, _, ltkm, _) = sent_world();
    // Same LTKM bytes, answered with keys from a wrong SMK (e.g. a stale or guessed one).
    let l = Ltkm::decode(&ltkm).unwrap();
    let vm = VerificationMessage::build(&l, &l.message_keys(&terminal("x", 0x01).smk)).unwrap();
    assert_eq!(w.intake(&vm, at(1)), Err(VerificationError::Forged));
}

#[test]
fn rejects_an_unmatched_message() {
    let (mut w, _, _, _) = sent_world();
    // A correctly made answer to an LTKM with TS 9, which the BSM never sent.
    let ts = LtkmCounter::restore(&w.t.btid, 8).reserve(&w.t.btid).persisted();
    let never = build_ltkm(&w.key.delivery(), &w.key, &w.t, &ts, true).unwrap();
    let l = Ltkm::decode(&never).unwrap();
    let vm = VerificationMessage::build(&l, &l.message_keys(&w.t.smk)).unwrap();
    assert_eq!(w.intake(&vm, at(1)), Err(VerificationError::Unmatched));
}

#[test]
fn rejects_a_foreign_csb_id() {
    let (mut w, _, _, _) = sent_world();
    // Same B-TID and TS as the LTKM sent, but another CSB ID.
    let other = SekPekRecord { csb_id: 0xdead_beef, ..w.key.clone() };
    let ts = LtkmCounter::new(&w.t.btid).reserve(&w.t.btid).persisted();
    let bytes = build_ltkm(&other.delivery(), &other, &w.t, &ts, true).unwrap();
    let l = Ltkm::decode(&bytes).unwrap();
    let vm = VerificationMessage::build(&l, &l.message_keys(&w.t.smk)).unwrap();
    assert_eq!(w.intake(&vm, at(1)), Err(VerificationError::CsbIdMismatch));
}

#[test]
fn rejects_malformed_bytes_without_panicking() {
    let (mut w, _, ltkm, vm) = sent_world();
    for bad in [&[][..], &[0u8; 3][..], &ltkm[..], &vm[..vm.len() - 1], &[0xff; 64][..]] {
        assert!(matches!(w.intake(bad, at(1)), Err(VerificationError::Malformed(_))), "{bad:02x?}");
    }
    // Every truncation and every single-bit flip is refused, never accepted or panicking.
    for cut in 0..vm.len() {
        assert!(w.intake(&vm[..cut], at(1)).is_err());
    }
    for i in 0..vm.len() * 8 {
        let mut v = vm.clone();
        v[i / 8] ^= 1 << (i % 8);
        assert!(w.intake(&v, at(1)).is_err(), "bit {i} flipped was accepted");
    }
    assert!(w.intake(&vm, at(2)).is_ok(), "the genuine message still works afterwards");
}

#[test]
fn missing_or_wrong_keys_are_errors() {
    let (mut w, id, _, vm) = sent_world();
    assert_eq!(intake(&mut w.s, &vm, at(1), |_, _| None), Err(VerificationError::KeysUnavailable));
    let other_key = download_key();
    let t = w.t.clone();
    assert_eq!(intake(&mut w.s, &vm, at(1), |_, _| Some((&other_key, &t))), Err(VerificationError::WrongKeys));
    let other_t = terminal("someone-else", 0x77);
    let key = w.key.clone();
    assert_eq!(intake(&mut w.s, &vm, at(1), |_, _| Some((&key, &other_t))), Err(VerificationError::WrongKeys));
    // `check` alone changes nothing and agrees.
    let (_, row, sent) = w.s.find_sent(&w.t.btid, 1).unwrap();
    assert_eq!(check(&vm, row, sent, &w.key, &w.t), Ok(()));
    assert!(matches!(w.s.row(id).unwrap().state, DeliveryState::Sent { .. }));
}
