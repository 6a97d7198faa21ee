//! The download DCF (TS 33.246 §6.6.3, profile P-9): seal/open round trips, a committed
//! byte-for-byte vector (tests/vectors/dcf_small.hex), an independent Python opener
//! (tests/vectors/dcf_check.py: MIKEY PRF and HMAC from the standard library, AES-CBC from
//! python3-cryptography), the standard-library box walker, wrong keys, and one test per
//! rejection; property tests.

mod python_oracle;

use keycast_crypto::keys::Tek;
use keycast_traffic::dcf::{Dcf, DcfError, DcfHeaders, DcfKeys, open_dcf, seal_dcf};
use keycast_traffic::pdcf::{KeyInfo, PdcfError};
use keycast_traffic::srtp::Mki;
use proptest::prelude::*;

const DOMAIN: [u8; 3] = [0x00, 0xf1, 0x10];
const TEK: [u8; 16] = [0x5a; 16];

fn key_id() -> Mki {
    Mki::new(0x0001_0002, 9)
}

fn keys() -> DcfKeys {
    DcfKeys::for_key(&Tek::from_bytes(TEK), key_id())
}

fn headers() -> DcfHeaders {
    let mut h = DcfHeaders::new("application/octet-stream", DOMAIN, key_id());
    h.headers.content_id = "cid:file-1@bsm.example.net".into();
    h.headers.rights_issuer_url = "https://bsm.example.net/bcast".into();
    h.headers.textual_headers = vec![("GlobalPurchaseItemID".into(), "gpi-9".into())];
    h.headers.key_info[0].key_issuer_url = Some("https://bsm.example.net/bcast".into());
    h
}

const CONTENT: &[u8] = b"a file delivered over FLUTE, 41 bytes ...";

fn small() -> Vec<u8> {
    seal_dcf(&headers(), &keys(), [0xa5; 16], CONTENT).unwrap()
}

#[test]
fn small_file_matches_committed_vector() {
    let path = python_oracle::vectors_dir().join("dcf_small.hex");
    if std::env::var_os("KEYCAST_WRITE_VECTORS").is_some() {
        std::fs::write(&path, hex::encode(small()) + "\n").unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap();
    assert_eq!(hex::encode(small()), committed.trim());
}

#[test]
fn round_trip_and_key_lookup() {
    let f = small();
    let dcf = Dcf::parse(&f).unwrap();
    assert_eq!(dcf.key(), Some((DOMAIN, key_id())));
    assert_eq!(dcf.plaintext_len, CONTENT.len() as u64);
    // IV ‖ 41 bytes padded to 48.
    assert_eq!(dcf.encrypted.len(), 16 + 48);
    assert_eq!(&dcf.encrypted[..16], &[0xa5; 16]);
    let (h, content) = open_dcf(&f, &keys()).unwrap();
    assert_eq!(h, headers());
    assert_eq!(content, CONTENT);
}

#[test]
fn python_oracle_opens_the_file() {
    let Some(py) = python_oracle::python_with(&["cryptography"]) else { return };
    let script = python_oracle::vectors_dir().join("dcf_check.py");
    let f = small();
    let input = format!("{} {} - {}", hex::encode(TEK), key_id().sek_pek_id(), hex::encode(&f));
    let out = python_oracle::run(&py, &[script.to_str().unwrap()], &input);
    assert_eq!(out.trim(), format!("content_type=application/octet-stream plaintext={}", hex::encode(CONTENT)));
    // With a CSB ID and RAND of the caller's choosing, too.
    let keys = DcfKeys::derive(&Tek::from_bytes(TEK), 0x0102_0304, &[0x77; 16]);
    let f = seal_dcf(&headers(), &keys, [1; 16], b"x").unwrap();
    let input = format!("{} {} {} {}", hex::encode(TEK), 0x0102_0304, hex::encode([0x77; 16]), hex::encode(&f));
    let out = python_oracle::run(&py, &[script.to_str().unwrap()], &input);
    assert_eq!(out.trim(), "content_type=application/octet-stream plaintext=78");
    // And a wrong key is refused by the oracle as well.
    let input = format!("{} {} - {}", hex::encode([0u8; 16]), key_id().sek_pek_id(), hex::encode(small()));
    assert_eq!(python_oracle::run(&py, &[script.to_str().unwrap()], &input).trim(), "bad-signature");
}

#[test]
fn python_walker_sees_the_boxes() {
    let Some(py) = python_oracle::python_with(&["struct"]) else { return };
    let script = python_oracle::vectors_dir().join("pdcf_walk.py");
    let out = python_oracle::run(&py, &[script.to_str().unwrap(), "-"], &hex::encode(small()));
    for needle in [
        "ftyp size=20 major=odcf minor=2 compatible=odcf",
        "odhe size=",
        "content_type=application/octet-stream",
        "method=1 padding=1 plaintext=41 cid=cid:file-1@bsm.example.net ri=https://bsm.example.net/bcast text=GlobalPurchaseItemID:gpi-9",
        "flags=0x80 type=2 key_id=APEQAAEAAgAJ issuer=https://bsm.example.net/bcast",
        "odda size=84 encrypted=64",
        "odfs size=33 method=1 signature=",
    ] {
        assert!(out.contains(needle), "walker output lacks {needle:?}:\n{out}");
    }
}

#[test]
fn rejects_wrong_key() {
    let f = small();
    let wrong_tek = DcfKeys::for_key(&Tek::from_bytes([0x5b; 16]), key_id());
    assert_eq!(open_dcf(&f, &wrong_tek), Err(DcfError::BadSignature));
    let wrong_id = DcfKeys::for_key(&Tek::from_bytes(TEK), Mki::new(0x0001_0003, 9));
    assert_eq!(open_dcf(&f, &wrong_id), Err(DcfError::BadSignature));
}

#[test]
fn rejects_altered_content_or_headers() {
    let f = small();
    for at in [f.len() - 40, 60, 100] {
        let mut g = f.clone();
        g[at] ^= 1;
        assert!(open_dcf(&g, &keys()).is_err(), "flip at {at} accepted");
    }
    let mut g = f.clone();
    let len = g.len();
    g[len - 50] ^= 1; // inside the ciphertext, before the mdri (41 bytes)
    assert_eq!(open_dcf(&g, &keys()), Err(DcfError::BadSignature));
}

#[test]
fn rejects_unsigned_file() {
    let f = small();
    // Drop the mdri (the last 8 + 33 bytes).
    let g = &f[..f.len() - 41];
    assert_eq!(open_dcf(g, &keys()), Err(DcfError::NotSigned));
}

#[test]
fn rejects_every_truncation() {
    let f = small();
    for cut in 0..f.len() {
        assert!(open_dcf(&f[..cut], &keys()).is_err(), "prefix of {cut} bytes opened");
    }
}

#[test]
fn rejects_bogus_size_and_deep_nesting() {
    let mut f = small();
    let odrm = f.windows(4).position(|w| w == b"odrm").unwrap() - 4;
    f[odrm..odrm + 4].copy_from_slice(&2u32.to_be_bytes());
    assert!(matches!(Dcf::parse(&f), Err(DcfError::Format(PdcfError::BadBoxSize { size: 2, .. }))));
    // An odrm holding 50 nested odrm boxes.
    let mut inner = Vec::new();
    for _ in 0..50 {
        let mut b = ((inner.len() + 12) as u32).to_be_bytes().to_vec();
        b.extend_from_slice(b"odrm\0\0\0\0");
        b.extend_from_slice(&inner);
        inner = b;
    }
    let mut g = small()[..20].to_vec();
    g.extend_from_slice(&inner);
    assert!(matches!(Dcf::parse(&g), Err(DcfError::Format(PdcfError::TooDeep { .. }))));
}

#[test]
fn rejects_too_long_headers() {
    let mut h = headers();
    h.content_type = "x".repeat(256);
    assert!(matches!(seal_dcf(&h, &keys(), [0; 16], b""), Err(DcfError::Format(PdcfError::TooLong { .. }))));
    let mut h = headers();
    h.headers.key_info = vec![KeyInfo { key_id: vec![0; 256], ..KeyInfo::bcast(DOMAIN, key_id()) }];
    assert!(matches!(seal_dcf(&h, &keys(), [0; 16], b""), Err(DcfError::Format(PdcfError::TooLong { .. }))));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn round_trip_any_content(content in proptest::collection::vec(any::<u8>(), 0..200), iv in any::<[u8; 16]>(), tek in any::<[u8; 16]>()) {
        let keys = DcfKeys::for_key(&Tek::from_bytes(tek), key_id());
        let f = seal_dcf(&headers(), &keys, iv, &content).unwrap();
        let (h, c) = open_dcf(&f, &keys).unwrap();
        prop_assert_eq!(h, headers());
        prop_assert_eq!(c, content);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = open_dcf(&data, &keys());
    }

    #[test]
    fn mutated_file_never_opens(edits in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..), 1..4)) {
        let mut f = small();
        // From the odrm on (the ftyp's minor version and brands are not signed).
        for (i, x) in edits {
            let at = 20 + i.index(f.len() - 20);
            f[at] ^= x;
        }
        // Any change either breaks the syntax, the signature, or (in the signature itself) the check.
        prop_assert!(open_dcf(&f, &keys()).is_err());
    }
}
