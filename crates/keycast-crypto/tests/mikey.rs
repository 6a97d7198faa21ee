//! MIKEY PRF, key labels and message keys against vectors.md §4 and §5 (RFC 3830 §4.1–4.2).

use keycast_crypto::aes_cm::AesCm128;
use keycast_crypto::hmac::hmac_sha1;
use keycast_crypto::mikey::{
    CS_ID_PSK, MessageKeys, PSK_AUTH, PSK_ENCR, PSK_SALT, TEK_CONST, TGK_SALT, derive_tgk_key, label, prf,
};
use proptest::prelude::*;

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

fn seq(from: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| from.wrapping_add(i as u8)).collect()
}

fn prf_vec(inkey: &[u8], label: &[u8], len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    prf(inkey, label, &mut out);
    out
}

const CSB: u32 = 0x0102_0304;

#[test]
fn label_layout() {
    assert_eq!(label(PSK_ENCR, CS_ID_PSK, CSB, &seq(0, 16)), h("150533e1ff01020304000102030405060708090a0b0c0d0e0f"));
}

#[test]
fn msk_message_keys_section_4_1() {
    let inkey = h("5ecf80629e0becb2def8d9b3cb80ae3f99ab18f9c50f49fd5da0e6cfb6d0ee5f");
    let rand = seq(0, 16);
    let encr = prf_vec(&inkey, &label(PSK_ENCR, CS_ID_PSK, CSB, &rand), 16);
    let auth = prf_vec(&inkey, &label(PSK_AUTH, CS_ID_PSK, CSB, &rand), 20);
    let salt = prf_vec(&inkey, &label(PSK_SALT, CS_ID_PSK, CSB, &rand), 14);
    assert_eq!(encr, h("eb6439c5fa47d2a9511a672b5f0c72b3"));
    assert_eq!(auth, h("fab5bc44f5a6e98d05de74b11cda6a10eb9febf6"));
    assert_eq!(salt, h("5e79a5f678b36f1ee2ff2ce1c2a0"));

    let keys = MessageKeys::derive(&inkey, CSB, &rand);
    // T = COUNTER 1, left-padded to 64 bits.
    assert_eq!(keys.kemac_iv(CSB, 1).to_vec(), h("5e79a4f47bb76f1ee2ff2ce1c2a10000"));
    // The pre-keyed MAC and cipher use exactly the derived keys.
    let parts: [&[u8]; 2] = [b"header", b"body"];
    assert_eq!(keys.mac(&parts), hmac_sha1(&auth, &parts));
    let iv = keys.kemac_iv(CSB, 1);
    let (mut a, mut b) = ([0x5a; 40], [0x5a; 40]);
    keys.apply_keystream(&iv, &mut a);
    AesCm128::new(&encr.try_into().unwrap()).apply_keystream(&iv, &mut b);
    assert_eq!(a, b);
}

#[test]
fn tgk_derivation_section_4_2() {
    let rand = seq(0xa0, 16);
    let mut tek = [0u8; 16];
    let mut salt = [0u8; 14];
    derive_tgk_key(&seq(0, 32), TEK_CONST, 0x01, CSB, &rand, &mut tek);
    derive_tgk_key(&seq(0, 32), TGK_SALT, 0x01, CSB, &rand, &mut salt);
    assert_eq!(tek.to_vec(), h("f4a80cc15282db69ecdc06e90339e3a1"));
    assert_eq!(salt.to_vec(), h("b43cd7305c1bc0a86d39f6b9a79f"));
    // A 64-byte inkey is two 256-bit pieces whose P() outputs are XOR-ed.
    derive_tgk_key(&seq(0, 64), TEK_CONST, 0x01, CSB, &rand, &mut tek);
    assert_eq!(tek.to_vec(), h("ef08bc01b8f6c19064c55a0b7d0961e5"));
}

#[test]
fn psk_derivation_section_4_3() {
    let (psk, rand) = (seq(0, 16), seq(0xa0, 16));
    let l = |c| label(c, CS_ID_PSK, CSB, &rand);
    assert_eq!(prf_vec(&psk, &l(PSK_ENCR), 16), h("c7d5ea38a8bb7fcc0ce4bde369385e6e"));
    assert_eq!(prf_vec(&psk, &l(PSK_AUTH), 20), h("e9aafa56336576d4ad0344de632877bcbc241789"));
    assert_eq!(prf_vec(&psk, &l(PSK_SALT), 14), h("8592a87f26e9f20a6a2602a2c80f"));
}

/// The 108-octet RFC 3830 pre-shared-key message of vectors.md §5.
const MESSAGE: &str = concat!(
    "010005000102030401000011223344000000000b00e1d2c3b4a59687780110a0a1a2a3a4a5a6a7a8a9aaabacadaeaf",
    "0001002431ed10ac96a4b819490e6968662227308ead13c34d717a225d5136bc64814d416f18ad0c01",
    "b394851721ebbc5648dfefb187d82ed79de01eeb",
);

#[test]
fn message_108_octets_section_5() {
    let msg = h(MESSAGE);
    assert_eq!(msg.len(), 108);
    let keys = MessageKeys::derive(&seq(0, 16), CSB, &seq(0xa0, 16));

    let iv = keys.kemac_iv(CSB, 0xe1d2_c3b4_a596_8778);
    assert_eq!(iv.to_vec(), h("8592a97d25ed13d8a992a7344f770000"));

    let plain = h("0030001010111213141516171819\
                   1a1b1c1d1e1f000e404142434445464748494a4b4c4d");
    let cipher = h("31ed10ac96a4b819490e6968662227308ead13c34d717a225d5136bc64814d416f18ad0c");
    let mut data = plain.clone();
    keys.apply_keystream(&iv, &mut data);
    assert_eq!(data, cipher);
    // HDR 19 + T 10 + RAND 18 + KEMAC header 4 octets precede the ciphertext.
    assert_eq!(&msg[51..87], &cipher[..], "ciphertext sits in KEMAC");
    keys.apply_keystream(&iv, &mut data);
    assert_eq!(data, plain);

    // The MAC covers everything up to and including the KEMAC MAC-alg octet.
    let (covered, tag) = msg.split_at(msg.len() - 20);
    assert_eq!(keys.mac(&[covered]).to_vec(), tag);
    assert!(keys.verify_mac(&[covered], tag));
    assert!(keys.verify_mac(&[&covered[..10], &covered[10..]], tag));
}

#[test]
fn rejects_wrong_or_short_mac() {
    let msg = h(MESSAGE);
    let keys = MessageKeys::derive(&seq(0, 16), CSB, &seq(0xa0, 16));
    let (covered, tag) = msg.split_at(msg.len() - 20);
    let mut bad = tag.to_vec();
    bad[19] ^= 1;
    assert!(!keys.verify_mac(&[covered], &bad));
    assert!(!keys.verify_mac(&[covered], &tag[..10]), "truncated tag");
    assert!(!keys.verify_mac(&[&covered[1..]], tag), "changed message");
}

#[test]
fn message_keys_debug_and_clone() {
    let keys = MessageKeys::derive(&seq(0, 16), CSB, &seq(0xa0, 16));
    assert_eq!(format!("{keys:?}"), "MessageKeys(…)");
    let copy = keys.clone();
    assert_eq!(copy.mac(&[b"x"]), keys.mac(&[b"x"]));
    assert_eq!(copy.kemac_iv(CSB, 7), keys.kemac_iv(CSB, 7));
}

/// P(s, label, m) written out straight from RFC 3830 §4.1.2, as a reference.
fn reference_p(s: &[u8], label: &[u8], len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut a = hmac_sha1(s, &[label]).to_vec();
    while out.len() < len {
        out.extend_from_slice(&hmac_sha1(s, &[&a, label]));
        a = hmac_sha1(s, &[&a]).to_vec();
    }
    out.truncate(len);
    out
}

proptest! {
    #[test]
    fn prf_is_deterministic_and_splits_at_256_bits(
        key in proptest::collection::vec(any::<u8>(), 1..100),
        label in proptest::collection::vec(any::<u8>(), 0..64),
        len in 1usize..100,
    ) {
        let a = prf_vec(&key, &label, len);
        prop_assert_eq!(&a, &prf_vec(&key, &label, len));
        let expected = key.chunks(32).map(|s| reference_p(s, &label, len)).fold(
            vec![0u8; len],
            |acc, p| acc.iter().zip(p).map(|(x, y)| x ^ y).collect(),
        );
        if key.len() <= 32 {
            // One piece: PRF = P(inkey, label, m).
            prop_assert_eq!(&a, &reference_p(&key, &label, len));
        }
        prop_assert_eq!(a, expected);
    }

    #[test]
    fn message_keys_match_prf(
        psk in proptest::collection::vec(any::<u8>(), 1..100),
        csb in any::<u32>(),
        rand in proptest::collection::vec(any::<u8>(), 16..32),
        t in any::<u64>(),
    ) {
        let keys = MessageKeys::derive(&psk, csb, &rand);
        let auth = prf_vec(&psk, &label(PSK_AUTH, CS_ID_PSK, csb, &rand), 20);
        prop_assert_eq!(keys.mac(&[&rand]), hmac_sha1(&auth, &[&rand]));
        let salt = prf_vec(&psk, &label(PSK_SALT, CS_ID_PSK, csb, &rand), 14);
        let iv = keys.kemac_iv(csb, t);
        let mut x = [0u8; 16];
        x[2..6].copy_from_slice(&csb.to_be_bytes());
        x[6..14].copy_from_slice(&t.to_be_bytes());
        for i in 0..14 { x[i] ^= salt[i]; }
        prop_assert_eq!(iv, x);
    }
}
