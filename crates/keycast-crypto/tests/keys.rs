//! Secret key types: construction, debug output, equality, wiping.

use keycast_crypto::KeyLengthError;
use keycast_crypto::keys::{Res, SekPek, Smk, TekSalt};
use zeroize::Zeroize;

#[test]
fn debug_prints_only_the_type_name() {
    assert_eq!(format!("{:?}", Smk::from_bytes([0x42; 32])), "Smk(…)");
    assert_eq!(format!("{:#?}", SekPek::from_bytes([0x42; 16])), "SekPek(…)");
}

#[test]
fn from_slice_checks_length() {
    assert_eq!(TekSalt::from_slice(&[1; 14]).unwrap().expose_secret(), &[1; 14]);
    let err = TekSalt::from_slice(&[0xab; 16]).unwrap_err();
    let KeyLengthError { key_type, expected, actual, .. } = err;
    assert_eq!((key_type, expected, actual), ("TekSalt", 14, 16));
    let msg = err.to_string();
    assert_eq!(msg, "TekSalt must be 14 bytes long, got 16");
    assert!(!msg.contains("ab"));
}

#[test]
fn equality_compares_content() {
    assert_eq!(Res::from_bytes([1; 8]), Res::from_bytes([1; 8]));
    assert_ne!(Res::from_bytes([1; 8]), Res::from_bytes([2; 8]));
    assert_eq!(Smk::LEN, 32);
}

#[test]
fn zeroize_wipes_the_bytes() {
    let mut k = SekPek::from_bytes([0x55; 16]);
    k.zeroize();
    assert_eq!(k.expose_secret(), &[0; 16]);
}
