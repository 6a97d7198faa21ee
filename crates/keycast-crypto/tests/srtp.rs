//! AES-CM and the SRTP key derivation against RFC 3711 Appendix B (vectors.md §8).

use keycast_crypto::aes_cm::AesCm128;
use keycast_crypto::srtp_kdf::{SrtpSessionKeys, derive, label};

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

fn a<const N: usize>(s: &str) -> [u8; N] {
    h(s).try_into().unwrap()
}

/// Keystream blocks starting at `iv`.
fn keystream(cm: &AesCm128, iv: &[u8; 16], blocks: usize) -> Vec<u8> {
    let mut out = vec![0; 16 * blocks];
    cm.apply_keystream(iv, &mut out);
    out
}

#[test]
fn rfc3711_b2_keystream() {
    let cm = AesCm128::new(&a("2b7e151628aed2a6abf7158809cf4f3c"));
    let ks = keystream(&cm, &a("f0f1f2f3f4f5f6f7f8f9fafbfcfd0000"), 3);
    assert_eq!(
        ks,
        h(concat!(
            "e03ead0935c95e80e166b16dd92b4eb4",
            "d23513162b02d0f72a43a2fe4a5f97ab",
            "41e95b3bb0a2e8dd477901e4fca894c0",
        ))
    );
    // Blocks fdfeff, ff00, ff01: the counter carries out of its low 16 bits.
    let wrap = keystream(&cm, &a("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff"), 3);
    assert_eq!(
        wrap,
        h(concat!(
            "ec8cdf7398607cb0f2d21675ea9ea1e4",
            "362b7c3c6773516318a077d7fc5073ae",
            "6a2cc3787889374fbeb4c81b17ba6c44",
        ))
    );
    // A run over all 0x10000 blocks of the low 16 bits lands on the same blocks.
    let long = keystream(&cm, &a("f0f1f2f3f4f5f6f7f8f9fafbfcfd0000"), 0xff02);
    assert_eq!(&long[..48], &ks[..]);
    assert_eq!(&long[16 * 0xfeff..], &wrap[..]);
}

#[test]
fn aes_cm_partial_blocks_and_round_trip() {
    let cm = AesCm128::new(&a("2b7e151628aed2a6abf7158809cf4f3c"));
    let iv = a("f0f1f2f3f4f5f6f7f8f9fafbfcfd0000");
    let full = keystream(&cm, &iv, 2);
    let mut part = [0u8; 21];
    cm.apply_keystream(&iv, &mut part);
    assert_eq!(&part[..], &full[..21]);
    let mut data = *b"a message that is not a whole number of blocks";
    cm.apply_keystream(&iv, &mut data);
    cm.apply_keystream(&iv, &mut data);
    assert_eq!(&data, b"a message that is not a whole number of blocks");
    assert_eq!(format!("{cm:?}"), "AesCm128(…)");
}

const MASTER_KEY: &str = "e1f97a0d3e018be0d64fa32c06de4139";
const MASTER_SALT: &str = "0ec675ad498afeebb6960b3aabe6";

#[test]
fn rfc3711_b3_key_derivation() {
    let (mk, ms) = (a(MASTER_KEY), a(MASTER_SALT));
    let mut cipher = [0u8; 16];
    let mut salt = [0u8; 14];
    let mut auth = [0u8; 94];
    derive(&mk, &ms, label::RTP_CIPHER, &mut cipher);
    derive(&mk, &ms, label::RTP_SALT, &mut salt);
    derive(&mk, &ms, label::RTP_AUTH, &mut auth);
    assert_eq!(cipher.to_vec(), h("c61e7a93744f39ee10734afe3ff7a087"));
    assert_eq!(salt.to_vec(), h("30cbbc08863d8c85d49db34a9ae1"));
    assert_eq!(
        auth.to_vec(),
        h(concat!(
            "cebe321f6ff7716b6fd4ab49af256a156d38baa48f0a0acf3c34e2359e6cdbcee049646c43d9327ad175578ef7227098",
            "6371c10c9a369ac2f94a8c5fbcdddc256d6e919a48b610ef17c2041e474035766b68642c59bbfc2f34db60dbdfb2",
        ))
    );
}

#[test]
fn session_keys_rfc3711_b3_and_srtcp_labels() {
    let keys = SrtpSessionKeys::derive(&a(MASTER_KEY), &a(MASTER_SALT));
    assert_eq!(keys.rtp_cipher_key().to_vec(), h("c61e7a93744f39ee10734afe3ff7a087"));
    assert_eq!(keys.rtp_salt().to_vec(), h("30cbbc08863d8c85d49db34a9ae1"));
    assert_eq!(keys.rtp_auth_key().to_vec(), h("cebe321f6ff7716b6fd4ab49af256a156d38baa4"));
    assert_eq!(keys.rtcp_cipher_key().to_vec(), h("4c1aa45a81f73d61c800bbb00fbb1eaa"));
    assert_eq!(keys.rtcp_auth_key().to_vec(), h("8d54534feb49ae8e7993a6bd0b844fc323a93dfd"));
    assert_eq!(keys.rtcp_salt().to_vec(), h("9581c7ad87b3e530bf3e4454a8b3"));
    assert_eq!(format!("{keys:?}"), "SrtpSessionKeys(…)");
}

#[test]
fn session_keys_of_camera_sdp_line() {
    // vectors.md §8.3: a 30-octet key ‖ salt from an SDP key-mgmt line, rate 0.
    let keys = SrtpSessionKeys::derive(&a("b8b0ee27f00909578c1bffc342ba0ca0"), &a("5115a3c4fbdb29603fe11d752036"));
    assert_eq!(keys.rtp_cipher_key().to_vec(), h("ce4ec963a2ffb61306f3bbc5000a1cd6"));
    assert_eq!(keys.rtp_salt().to_vec(), h("c3ced16304d0b5dfda4a6f0b6064"));
    assert_eq!(keys.rtp_auth_key().to_vec(), h("2e2c59cf490b002de1906a999eb7ee6cc1b725fc"));
}
