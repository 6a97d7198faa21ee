//! keycast-traffic's ISMACryp samples (profile P-9) against the fixed vectors in
//! tests/vectors/ismacryp.txt, which an independent Python oracle
//! (tests/vectors/gen_ismacryp_vectors.py, python3-cryptography) wrote; a live AES-CTR
//! cross-check with that oracle; property tests.

mod python_oracle;

use python_oracle::{hexf, run, vectors_dir};

use std::collections::HashMap;

use keycast_crypto::keys::{Tek, TekSalt};
use keycast_traffic::ismacryp::{
    HEADER_LEN, IsmacrypError, IsmacrypKey, IsmacrypReceiver, IsmacrypSender, SampleHeader, apply_keystream,
};
use keycast_traffic::srtp::Mki;
use proptest::prelude::*;

/// The `[name]` blocks of a vector file.
fn load(file: &str) -> Vec<(String, HashMap<String, String>)> {
    python_oracle::vector_blocks(file)
}

fn key_of(f: &HashMap<String, String>) -> IsmacrypKey {
    let ki = Mki::from_bytes(hexf(f, "key_indicator").try_into().unwrap());
    IsmacrypKey::from_stkm(
        ki,
        Tek::from_slice(&hexf(f, "key")).unwrap(),
        &TekSalt::from_slice(&hexf(f, "salt")).unwrap(),
    )
}

#[test]
fn fixed_vectors_encrypt_byte_for_byte() {
    let vectors = load("ismacryp.txt");
    assert!(vectors.len() >= 7);
    for (name, f) in &vectors {
        let mut tx = IsmacrypSender::new(&key_of(f));
        tx.set_offset(f["iv"].parse().unwrap());
        let mut s = hexf(f, "plain");
        let header = tx.protect(&mut s).unwrap();
        assert_eq!(hex::encode(&s), f["sample"], "{name}");
        assert_eq!(header.to_bytes()[..], s[..HEADER_LEN], "{name}");
    }
}

#[test]
fn fixed_vectors_decrypt_byte_for_byte() {
    for (name, f) in load("ismacryp.txt") {
        let key = key_of(&f);
        let mut rx = IsmacrypReceiver::new();
        rx.add_key(&key);
        let mut s = hexf(&f, "sample");
        let header = rx.unprotect(&mut s).unwrap();
        assert_eq!(s, hexf(&f, "plain"), "{name}");
        assert_eq!(header.iv, f["iv"].parse::<u64>().unwrap(), "{name}");
        assert_eq!(header.key_indicator, key.key_indicator(), "{name}");
    }
}

#[test]
fn consecutive_samples_carry_the_offset() {
    let key = IsmacrypKey::new(Mki::new(0x0001_0001, 1), Tek::from_bytes([1; 16]), [2; 8]);
    let mut tx = IsmacrypSender::new(&key);
    let mut rx = IsmacrypReceiver::new();
    rx.add_key(&key);
    let mut offset = 0;
    for len in [0, 1, 15, 16, 17, 33, 100] {
        let plain = vec![len as u8; len];
        let mut s = plain.clone();
        let h = tx.protect(&mut s).unwrap();
        assert_eq!(h.iv, offset);
        offset += len as u64;
        assert_eq!(rx.unprotect(&mut s).unwrap(), h);
        assert_eq!(s, plain);
    }
    assert_eq!(tx.offset(), offset);
}

#[test]
fn key_change_keeps_the_previous_tek() {
    let old = IsmacrypKey::new(Mki::new(0x0001_0001, 1), Tek::from_bytes([1; 16]), [2; 8]);
    let new = IsmacrypKey::new(Mki::new(0x0001_0001, 2), Tek::from_bytes([3; 16]), [4; 8]);
    let newest = IsmacrypKey::new(Mki::new(0x0001_0001, 3), Tek::from_bytes([5; 16]), [6; 8]);
    let mut tx = IsmacrypSender::new(&old);
    let mut late = b"late sample".to_vec();
    tx.protect(&mut late).unwrap();
    tx.set_key(&new);
    let mut s = b"new sample".to_vec();
    tx.protect(&mut s).unwrap();
    let mut rx = IsmacrypReceiver::new();
    rx.add_key(&old);
    rx.add_key(&new);
    let (mut a, mut b) = (late.clone(), s.clone());
    rx.unprotect(&mut a).unwrap();
    rx.unprotect(&mut b).unwrap();
    assert_eq!((&a[..], &b[..]), (&b"late sample"[..], &b"new sample"[..]));
    assert_eq!(rx.add_key(&newest), Some(old.key_indicator()));
    assert_eq!(rx.unprotect(&mut late), Err(IsmacrypError::UnknownKeyIndicator(old.key_indicator())));
}

#[test]
fn rejects_truncated_sample() {
    let mut rx = IsmacrypReceiver::new();
    rx.add_key(&IsmacrypKey::new(Mki::new(1, 1), Tek::from_bytes([1; 16]), [2; 8]));
    for len in 0..HEADER_LEN {
        let mut s = vec![0; len];
        assert_eq!(rx.unprotect(&mut s), Err(IsmacrypError::TooShort { needed: HEADER_LEN, len }));
        assert_eq!(s.len(), len, "nothing removed");
    }
}

/// The keystream recomputed by python3-cryptography (AES-128-CTR with counter block
/// salt ‖ BSO/16, skipping BSO mod 16 bytes) for offsets around block boundaries.
#[test]
fn python_cross_check_of_aes_ctr() {
    let Some(python) = python_oracle::python_with(&["cryptography"]) else { return };
    let tek = Tek::from_bytes(*b"\x2b\x7e\x15\x16\x28\xae\xd2\xa6\xab\xf7\x15\x88\x09\xcf\x4f\x3c");
    let salt = [0xf0, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7];
    let mut lines = String::new();
    let mut ours = Vec::new();
    for iv in [0u64, 1, 15, 16, 17, 255, 4095, 4096, 0xffff_ffff_fff0, u64::MAX - 40] {
        for len in [0usize, 1, 16, 33] {
            let plain: Vec<u8> = (0..len).map(|i| (i as u64 ^ iv) as u8).collect();
            let mut c = plain.clone();
            apply_keystream(&tek, &salt, iv, &mut c);
            let p = if plain.is_empty() { "-".to_owned() } else { hex::encode(&plain) };
            lines += &format!("{} {} {iv} {p}\n", hex::encode(tek.expose_secret()), hex::encode(salt));
            ours.push(if c.is_empty() { "-".to_owned() } else { hex::encode(&c) });
        }
    }
    let out = run(&python, &[vectors_dir().join("gen_ismacryp_vectors.py").to_str().unwrap(), "--ctr"], &lines);
    assert_eq!(out.lines().collect::<Vec<_>>(), ours);
}

/// Re-runs the oracle: its output must still be the committed file.
#[test]
fn python_oracle_reproduces_the_vector_file() {
    let Some(python) = python_oracle::python_with(&["cryptography"]) else { return };
    let out = run(&python, &[vectors_dir().join("gen_ismacryp_vectors.py").to_str().unwrap()], "");
    assert_eq!(out, std::fs::read_to_string(vectors_dir().join("ismacryp.txt")).unwrap());
}

proptest! {
    #[test]
    fn round_trip(tek in any::<[u8; 16]>(), salt in any::<[u8; 8]>(), ki in any::<[u8; 6]>(),
                  offset in any::<u64>(), plain in proptest::collection::vec(any::<u8>(), 0..300)) {
        let key = IsmacrypKey::new(Mki::from_bytes(ki), Tek::from_bytes(tek), salt);
        let mut tx = IsmacrypSender::new(&key);
        tx.set_offset(offset);
        let mut s = plain.clone();
        match tx.protect(&mut s) {
            Ok(h) => {
                prop_assert_eq!(h.iv, offset);
                prop_assert_eq!(s.len(), plain.len() + HEADER_LEN);
                let mut rx = IsmacrypReceiver::new();
                rx.add_key(&key);
                prop_assert_eq!(rx.unprotect(&mut s), Ok(h));
                prop_assert_eq!(s, plain);
            }
            Err(e) => {
                prop_assert_eq!(e, IsmacrypError::OffsetExhausted);
                prop_assert!(offset.checked_add(plain.len() as u64).is_none());
            }
        }
    }

    #[test]
    fn header_never_panics_and_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
        match SampleHeader::parse(&bytes) {
            Ok((h, rest)) => {
                prop_assert_eq!(&h.to_bytes()[..], &bytes[..HEADER_LEN]);
                prop_assert_eq!(rest, &bytes[HEADER_LEN..]);
            }
            Err(e) => prop_assert_eq!(e, IsmacrypError::TooShort { needed: HEADER_LEN, len: bytes.len() }),
        }
        let mut rx = IsmacrypReceiver::new();
        rx.add_key(&IsmacrypKey::new(Mki::from_bytes([0, 1, 0, 1, 0, 1]), Tek::from_bytes([1; 16]), [2; 8]));
        let mut s = bytes.clone();
        let _ = rx.unprotect(&mut s);
    }
}

/// The committed seeds of the `ismacryp_header` fuzz target decrypt under the fuzzing keys
/// (all but the one with an unknown key indicator) and pass the target's checks.
#[cfg(feature = "fuzzing")]
#[test]
fn fuzz_seeds_decrypt_under_the_fuzzing_keys() {
    use keycast_traffic::ismacryp::fuzzing;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus/ismacryp_header");
    let mut rx = IsmacrypReceiver::new();
    fuzzing::keys().iter().for_each(|k| _ = rx.add_key(k));
    let mut ok = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        ok += usize::from(rx.unprotect(&mut data.clone()).is_ok());
        fuzzing::header(&data);
    }
    assert!(ok >= 4);
}

#[cfg(feature = "fuzzing")]
proptest! {
    /// The fuzz entry point on arbitrary bytes and on samples whose header names a fuzz key.
    #[test]
    fn fuzz_entry_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..60), tek_id in 0u16..4, iv in any::<u64>()) {
        keycast_traffic::ismacryp::fuzzing::header(&bytes);
        let head = SampleHeader { iv, key_indicator: Mki::new(0x0001_0001, tek_id) };
        keycast_traffic::ismacryp::fuzzing::header(&[&head.to_bytes()[..], &bytes].concat());
    }
}
