//! HMAC helpers (RFC 2202, RFC 4231) and AES key wrap (RFC 3394 §4.1, vectors.md §9).

use keycast_crypto::KeyWrapError;
use keycast_crypto::hmac::{HmacSha1Key, ct_eq, hmac_sha1, hmac_sha256};
use keycast_crypto::key_wrap::{unwrap, unwrap_16, wrap, wrap_16};
use proptest::prelude::*;

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

fn a<const N: usize>(s: &str) -> [u8; N] {
    h(s).try_into().unwrap()
}

#[test]
fn rfc2202_hmac_sha1_cases_1_and_2() {
    assert_eq!(hmac_sha1(&[0x0b; 20], &[b"Hi There"]).to_vec(), h("b617318655057264e28bc0b6fb378c8ef146be00"));
    assert_eq!(
        hmac_sha1(b"Jefe", &[b"what do ya ", b"want for nothing?"]).to_vec(),
        h("effcdf6ae5eb2fa2d27416d5f184df9c259a7c79")
    );
}

#[test]
fn prekeyed_hmac_sha1_matches_rfc2202_and_is_reusable() {
    let key = HmacSha1Key::new(b"Jefe");
    for _ in 0..2 {
        assert_eq!(
            key.mac(&[b"what do ya ", b"want for nothing?"]).to_vec(),
            h("effcdf6ae5eb2fa2d27416d5f184df9c259a7c79")
        );
    }
    assert_eq!(HmacSha1Key::new(&[0x0b; 20]).mac(&[b"Hi There"]), hmac_sha1(&[0x0b; 20], &[b"Hi There"]));
    assert_eq!(format!("{key:?}"), "HmacSha1Key(…)");
}

#[test]
fn rfc4231_hmac_sha256_cases_1_and_2() {
    assert_eq!(
        hmac_sha256(&[0x0b; 20], &[b"Hi There"]).to_vec(),
        h("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
    );
    assert_eq!(
        hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]).to_vec(),
        h("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    );
}

#[test]
fn ct_eq_compares_content_and_length() {
    assert!(ct_eq(b"abc", b"abc"));
    assert!(!ct_eq(b"abc", b"abd"));
    assert!(!ct_eq(b"abc", b"ab"));
    assert!(ct_eq(b"", b""));
}

const KEK: &str = "000102030405060708090a0b0c0d0e0f";
const KEY_DATA: &str = "00112233445566778899aabbccddeeff";
const WRAPPED: &str = "1fa68b0a8112b447aef34bd8fb5a7b829d3e862371d2cfe5";

#[test]
fn rfc3394_4_1() {
    let (kek, key) = (a(KEK), a(KEY_DATA));
    assert_eq!(wrap_16(&kek, &key).to_vec(), h(WRAPPED));
    assert_eq!(*unwrap_16(&kek, &a(WRAPPED)).unwrap(), key);
    assert_eq!(wrap(&kek, &key).unwrap(), h(WRAPPED));
    assert_eq!(*unwrap(&kek, &h(WRAPPED)).unwrap(), key.to_vec());
}

#[test]
fn rejects_unwrap_with_wrong_kek() {
    let mut kek = a::<16>(KEK);
    kek[0] ^= 1;
    assert_eq!(unwrap_16(&kek, &a(WRAPPED)).unwrap_err(), KeyWrapError::IntegrityCheckFailed);
    assert_eq!(unwrap(&kek, &h(WRAPPED)).unwrap_err(), KeyWrapError::IntegrityCheckFailed);
}

#[test]
fn rejects_tampered_wrapped_key() {
    let mut wrapped = a::<24>(WRAPPED);
    wrapped[23] ^= 0x80;
    assert!(unwrap_16(&a(KEK), &wrapped).is_err());
}

#[test]
fn rejects_bad_key_wrap_lengths() {
    let kek = a::<16>(KEK);
    for len in [0, 8, 15, 17, 23] {
        assert_eq!(wrap(&kek, &vec![0; len]).unwrap_err(), KeyWrapError::InvalidLength { len });
    }
    for len in [0, 8, 16, 25, 31] {
        assert_eq!(unwrap(&kek, &vec![0; len]).unwrap_err(), KeyWrapError::InvalidLength { len });
    }
}

proptest! {
    #[test]
    fn key_wrap_round_trip(
        kek in any::<[u8; 16]>(),
        blocks in 2usize..8,
        seed in any::<u64>(),
    ) {
        let data: Vec<u8> = (0..blocks * 8)
            .map(|i| (seed.rotate_left(i as u32) as u8) ^ i as u8)
            .collect();
        let wrapped = wrap(&kek, &data).unwrap();
        prop_assert_eq!(wrapped.len(), data.len() + 8);
        prop_assert_eq!(&*unwrap(&kek, &wrapped).unwrap(), &data);
    }

    #[test]
    fn key_wrap_16_round_trip(kek in any::<[u8; 16]>(), key in any::<[u8; 16]>()) {
        prop_assert_eq!(*unwrap_16(&kek, &wrap_16(&kek, &key)).unwrap(), key);
    }
}
