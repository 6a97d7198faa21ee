//! Milenage: TS 35.208 conformance sets, the AKA values of the GBA worked example, and a
//! cross-check against the `milenage` crate.

use std::collections::HashMap;

use keycast_crypto::keys::{Ik, Op, Opc, Res, SubscriberKey};
use keycast_crypto::milenage::{
    Milenage, SqnWindow, flip_res_lsb, gba_u_autn_star, gba_u_mac_from_star, gba_u_mac_star, sqn_from_u64, sqn_to_u64,
};
use keycast_crypto::{AutnError, AutsError};
use proptest::prelude::*;

/// One test set of `tests/data/ts35208_milenage.txt`.
struct Set(HashMap<String, Vec<u8>>);

impl Set {
    fn get<const N: usize>(&self, name: &str) -> [u8; N] {
        self.0[name].as_slice().try_into().expect(name)
    }
}

fn sets() -> Vec<Set> {
    let text = include_str!("data/ts35208_milenage.txt");
    text.split("\n\n")
        .map(|block| {
            block
                .lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                .map(|l| {
                    let (k, v) = l.split_once('=').expect("key = value");
                    (k.trim().to_owned(), hex::decode(v.trim()).expect("hex"))
                })
                .collect::<HashMap<_, _>>()
        })
        .filter(|m| !m.is_empty())
        .map(Set)
        .collect()
}

#[test]
fn ts35208_sets_1_to_6() {
    let sets = sets();
    assert_eq!(sets.len(), 6);
    for s in &sets {
        let k = SubscriberKey::from_bytes(s.get("k"));
        let opc = Opc::from_op(&k, &Op::from_bytes(s.get("op")));
        let set = s.get::<1>("set")[0];
        assert_eq!(opc.expose_secret(), &s.get::<16>("opc"), "OPc, set {set}");
        let m = Milenage::new(&k, &opc);
        let (rand, sqn, amf) = (s.get("rand"), s.get("sqn"), s.get("amf"));

        assert_eq!(m.f1(&rand, sqn, amf), s.get("f1"), "f1, set {set}");
        assert_eq!(m.f1_star(&rand, sqn, amf), s.get("f1s"), "f1*, set {set}");
        let (res, ck, ik, ak) = m.f2345(&rand);
        assert_eq!(res.expose_secret(), &s.get("f2"), "f2, set {set}");
        assert_eq!(ck.expose_secret(), &s.get("f3"), "f3, set {set}");
        assert_eq!(ik.expose_secret(), &s.get("f4"), "f4, set {set}");
        assert_eq!(ak, s.get("f5"), "f5, set {set}");
        assert_eq!(m.f5_star(&rand), s.get("f5s"), "f5*, set {set}");

        let all = m.all(&rand, sqn, amf);
        assert_eq!(all.mac_a, s.get("f1"));
        assert_eq!(all.mac_s, s.get("f1s"));
        assert_eq!(all.res, res);
        assert_eq!(all.ck, ck);
        assert_eq!(all.ik, ik);
        assert_eq!(all.ak, ak);
        assert_eq!(all.ak_star, s.get("f5s"));

        // Keyed from OP directly gives the same functions.
        let from_op = Milenage::with_op(&k, &Op::from_bytes(s.get("op")));
        assert_eq!(from_op.f1(&rand, sqn, amf), s.get("f1"));
    }
}

fn h<const N: usize>(s: &str) -> [u8; N] {
    hex::decode(s).unwrap().try_into().unwrap()
}

/// Test set 1 with the values of the GBA worked example (vectors.md §2).
fn set1() -> (Milenage, [u8; 16], [u8; 6], [u8; 2]) {
    let k = SubscriberKey::from_bytes(h("465b5ce8b199b49faa5f0a2ee238a6bc"));
    let opc = Opc::from_bytes(h("cd63cb71954a9f4e48a5994e37a02baf"));
    (Milenage::new(&k, &opc), h("23553cbe9637a89d218ae64dae47bf35"), h("ff9bb4d0b607"), h("b9b9"))
}

#[test]
fn gba_example_autn_and_check() {
    let (m, rand, sqn, amf) = set1();
    let autn = m.build_autn(sqn, amf, &rand);
    assert_eq!(autn, h::<16>("55f328b43577b9b94a9ffac354dfafb3"));
    let check = m.check_autn(&rand, &autn).unwrap();
    assert_eq!(check.sqn, sqn);
    assert_eq!(check.amf, amf);
    assert_eq!(check.res.expose_secret(), &h::<8>("a54211d5e3ba50bf"));
    assert_eq!(check.ck.expose_secret(), &h::<16>("b40ba9a3c58b2a05bbf0d987b21bf8cb"));
    assert_eq!(check.ik.expose_secret(), &h::<16>("f769bcd751044604127672711c6d3441"));
}

#[test]
fn gba_example_auts_and_recovery() {
    let (m, rand, _, _) = set1();
    let sqn_ms = h("000000000021");
    let auts = m.build_auts(&rand, sqn_ms);
    assert_eq!(auts, h::<14>("451e8beca41a80125eca8884b56a"));
    assert_eq!(m.recover_sqn_ms(&rand, &auts), Ok(sqn_ms));
}

#[test]
fn gba_u_mac_star_autn_star_and_flipped_res() {
    let (m, rand, sqn, amf) = set1();
    let ik = Ik::from_bytes(h("f769bcd751044604127672711c6d3441"));
    let mac_a = h("4a9ffac354dfafb3");
    let mac_star = gba_u_mac_star(&mac_a, &ik);
    assert_eq!(mac_star, h::<8>("8c7f3f0d723fb244"));
    assert_eq!(gba_u_mac_from_star(&mac_star, &ik), mac_a);

    let autn = m.build_autn(sqn, amf, &rand);
    let autn_star = gba_u_autn_star(&autn, &ik);
    assert_eq!(autn_star, h::<16>("55f328b43577b9b98c7f3f0d723fb244"));
    assert_eq!(gba_u_autn_star(&autn_star, &ik), autn);

    let check = m.check_autn_star(&rand, &autn_star).unwrap();
    assert_eq!(check.sqn, sqn);
    // A card doing GBA_U must not accept the plain AUTN as an AUTN*, nor the reverse.
    assert_eq!(m.check_autn_star(&rand, &autn).unwrap_err(), AutnError::MacFailure);
    assert_eq!(m.check_autn(&rand, &autn_star).unwrap_err(), AutnError::MacFailure);

    let flipped = flip_res_lsb(&check.res);
    assert_eq!(flipped.expose_secret(), &h::<8>("a54211d5e3ba50be"));
    assert_eq!(flip_res_lsb(&flipped), check.res);
}

#[test]
fn rejects_autn_with_wrong_mac() {
    let (m, rand, sqn, amf) = set1();
    let mut autn = m.build_autn(sqn, amf, &rand);
    autn[15] ^= 0x01;
    assert_eq!(m.check_autn(&rand, &autn).unwrap_err(), AutnError::MacFailure);
}

#[test]
fn rejects_autn_with_changed_amf() {
    let (m, rand, sqn, amf) = set1();
    let mut autn = m.build_autn(sqn, amf, &rand);
    autn[6] ^= 0x80;
    assert_eq!(m.check_autn(&rand, &autn).unwrap_err(), AutnError::MacFailure);
}

#[test]
fn rejects_autn_for_another_rand() {
    let (m, rand, sqn, amf) = set1();
    let autn = m.build_autn(sqn, amf, &rand);
    let mut other = rand;
    other[0] ^= 1;
    assert!(m.check_autn(&other, &autn).is_err());
}

#[test]
fn rejects_auts_with_wrong_mac_s() {
    let (m, rand, _, _) = set1();
    let mut auts = m.build_auts(&rand, h("000000000021"));
    auts[13] ^= 0x01;
    assert_eq!(m.recover_sqn_ms(&rand, &auts), Err(AutsError::MacFailure));
}

#[test]
fn sqn_window() {
    let w = SqnWindow { delta: 32 };
    let ms = sqn_from_u64(100);
    assert!(w.accepts(ms, sqn_from_u64(101)));
    assert!(w.accepts(ms, sqn_from_u64(132)));
    assert!(!w.accepts(ms, sqn_from_u64(100)), "replay");
    assert!(!w.accepts(ms, sqn_from_u64(99)), "old");
    assert!(!w.accepts(ms, sqn_from_u64(133)), "too far ahead");
    assert_eq!(sqn_to_u64(h("ff9bb4d0b607")), 0xff9b_b4d0_b607);
    assert_eq!(sqn_from_u64(0x1234_ff9b_b4d0_b607), h::<6>("ff9bb4d0b607"));
    assert_eq!(SqnWindow::default().delta, 1 << 28);
}

#[test]
fn debug_prints_no_secrets() {
    let (m, rand, sqn, amf) = set1();
    assert_eq!(format!("{m:?}"), "Milenage(…)");
    assert_eq!(format!("{:?}", m.all(&rand, sqn, amf)), "MilenageOutput(…)");
    let check = m.check_autn(&rand, &m.build_autn(sqn, amf, &rand)).unwrap();
    assert_eq!(format!("{check:?}"), "AutnCheck { sqn: [255, 155, 180, 208, 182, 7], amf: [185, 185], .. }");
    assert_eq!(format!("{:?}", Res::from_bytes([7; 8])), "Res(…)");
}

proptest! {
    #[test]
    fn equals_the_milenage_crate(
        k in any::<[u8; 16]>(),
        op in any::<[u8; 16]>(),
        rand in any::<[u8; 16]>(),
        sqn in any::<[u8; 6]>(),
        amf in any::<[u8; 2]>(),
    ) {
        let mut oracle = milenage::Milenage::new_with_op(k, op);
        let key = SubscriberKey::from_bytes(k);
        let opc = Opc::from_op(&key, &Op::from_bytes(op));
        prop_assert_eq!(opc.expose_secret(), oracle.opc());
        let ours = Milenage::new(&key, &opc).all(&rand, sqn, amf);
        prop_assert_eq!(ours.mac_a, oracle.f1(&rand, &sqn, &amf));
        prop_assert_eq!(ours.mac_s, oracle.f1star(&rand, &sqn, &amf));
        let (res, ck, ik, ak) = oracle.f2345(&rand);
        prop_assert_eq!(ours.res.expose_secret(), &res);
        prop_assert_eq!(ours.ck.expose_secret(), &ck);
        prop_assert_eq!(ours.ik.expose_secret(), &ik);
        prop_assert_eq!(ours.ak, ak);
        prop_assert_eq!(ours.ak_star, oracle.f5star(&rand));
    }

    #[test]
    fn autn_round_trip(
        k in any::<[u8; 16]>(),
        opc in any::<[u8; 16]>(),
        rand in any::<[u8; 16]>(),
        sqn in any::<[u8; 6]>(),
        amf in any::<[u8; 2]>(),
        flip in 0usize..128,
    ) {
        let m = Milenage::new(&SubscriberKey::from_bytes(k), &Opc::from_bytes(opc));
        let autn = m.build_autn(sqn, amf, &rand);
        let check = m.check_autn(&rand, &autn).unwrap();
        prop_assert_eq!(check.sqn, sqn);
        prop_assert_eq!(check.amf, amf);
        prop_assert_eq!(check.res, m.f2345(&rand).0);
        // Any single flipped bit makes the check fail.
        let mut bad = autn;
        bad[flip / 8] ^= 0x80 >> (flip % 8);
        prop_assert!(m.check_autn(&rand, &bad).is_err());
        // GBA_U: AUTN* round trip.
        let star = gba_u_autn_star(&autn, &check.ik);
        prop_assert_eq!(m.check_autn_star(&rand, &star).unwrap().sqn, sqn);
    }

    #[test]
    fn auts_round_trip(
        k in any::<[u8; 16]>(),
        opc in any::<[u8; 16]>(),
        rand in any::<[u8; 16]>(),
        sqn_ms in any::<[u8; 6]>(),
        flip in 0usize..112,
    ) {
        let m = Milenage::new(&SubscriberKey::from_bytes(k), &Opc::from_bytes(opc));
        let auts = m.build_auts(&rand, sqn_ms);
        prop_assert_eq!(m.recover_sqn_ms(&rand, &auts), Ok(sqn_ms));
        let mut bad = auts;
        bad[flip / 8] ^= 0x80 >> (flip % 8);
        prop_assert_eq!(m.recover_sqn_ms(&rand, &bad), Err(AutsError::MacFailure));
    }
}
