//! keycast-traffic's IPsec ESP transform (profile P-9) against the fixed vectors in
//! tests/vectors/esp.txt, which an independent Python oracle (tests/vectors/gen_esp_vectors.py,
//! python3-cryptography) wrote; a live cross-check with python3-scapy's ESP
//! (tests/vectors/esp_scapy_check.py); one test per rejection; bit flips; property tests.

mod python_oracle;

use python_oracle::{hexf, run, vectors_dir};

use std::collections::HashMap;

use keycast_crypto::keys::Tek;
use keycast_traffic::esp::{
    EspError, EspKey, EspReceiver, EspSender, HEADER_LEN, ICV_LEN, MIN_PACKET_LEN, REPLAY_WINDOW, Spi, auth_key,
};
use proptest::prelude::*;

/// The `[name]` blocks of the vector file.
fn load() -> Vec<(String, HashMap<String, String>)> {
    python_oracle::vector_blocks("esp.txt")
}

fn key_of(f: &HashMap<String, String>) -> EspKey {
    let spi = Spi::from_u32(u32::from_str_radix(&f["spi"], 16).unwrap());
    EspKey::new(spi, Tek::from_slice(&hexf(f, "tek")).unwrap())
}

fn key(tek_id: u16, fill: u8) -> EspKey {
    EspKey::new(Spi::new(0x0001, tek_id), Tek::from_bytes([fill; 16]))
}

fn pair(k: &EspKey) -> (EspSender, EspReceiver) {
    let mut rx = EspReceiver::new();
    rx.add_key(k);
    (EspSender::new(k), rx)
}

#[test]
fn fixed_vectors_seal_byte_for_byte() {
    let vectors = load();
    assert!(vectors.len() >= 5);
    for (name, f) in vectors.iter().filter(|(_, f)| f["pad_len"] == "minimal") {
        let key = key_of(f);
        let tek = Tek::from_slice(&hexf(f, "tek")).unwrap();
        assert_eq!(hex::encode(&auth_key(&tek, key.spi())[..]), f["auth_key"], "{name}");
        let mut tx = EspSender::new(&key);
        let seq: u32 = f["seq"].parse().unwrap();
        tx.set_seq(seq - 1);
        let mut p = hexf(f, "payload");
        let iv = hexf(f, "iv").try_into().unwrap();
        assert_eq!(tx.protect(&mut p, f["next_header"].parse().unwrap(), iv), Ok(seq));
        assert_eq!(hex::encode(&p), f["packet"], "{name}");
    }
}

#[test]
fn fixed_vectors_open_byte_for_byte() {
    for (name, f) in load() {
        let key = key_of(&f);
        let (_, mut rx) = pair(&key);
        let mut p = hexf(&f, "packet");
        let info = rx.unprotect(&mut p).unwrap();
        assert_eq!(p, hexf(&f, "payload"), "{name}");
        assert_eq!(info.spi, key.spi(), "{name}");
        assert_eq!(info.seq, f["seq"].parse::<u32>().unwrap(), "{name}");
        assert_eq!(info.next_header, f["next_header"].parse::<u8>().unwrap(), "{name}");
        if let Ok(pad) = f["pad_len"].parse::<u8>() {
            assert_eq!(info.pad_len, pad, "{name}");
        }
    }
}

#[test]
fn round_trip_many_packets_and_key_change() {
    let (old, new) = (key(1, 1), key(2, 2));
    let (mut tx, mut rx) = pair(&old);
    for i in 0..100u8 {
        let plain = vec![i; usize::from(i)];
        let mut p = plain.clone();
        let seq = tx.protect(&mut p, 17, [i; 16]).unwrap();
        assert_eq!(seq, u32::from(i) + 1);
        let info = rx.unprotect(&mut p).unwrap();
        assert_eq!((info.seq, info.next_header, p), (seq, 17, plain));
    }
    let mut late = b"late".to_vec();
    tx.protect(&mut late, 59, [9; 16]).unwrap();
    rx.add_key(&new);
    tx.set_key(&new);
    assert_eq!(tx.seq(), 0);
    let mut p = b"new".to_vec();
    tx.protect(&mut p, 59, [8; 16]).unwrap();
    assert_eq!(rx.unprotect(&mut p).unwrap().seq, 1);
    assert_eq!(rx.unprotect(&mut late).unwrap().seq, 101, "the previous SA still opens");
    assert_eq!(rx.highest_seq(old.spi()), Some(101));
    assert_eq!(rx.spis().collect::<Vec<_>>(), [new.spi(), old.spi()]);
}

#[test]
fn rejects_short_packets() {
    let (_, mut rx) = pair(&key(1, 1));
    for len in 0..MIN_PACKET_LEN {
        assert_eq!(rx.unprotect(&mut vec![0; len]), Err(EspError::TooShort { needed: MIN_PACKET_LEN, len }));
    }
}

#[test]
fn rejects_unaligned_ciphertext() {
    let k = key(1, 1);
    let (mut tx, mut rx) = pair(&k);
    let mut p = b"data".to_vec();
    tx.protect(&mut p, 59, [0; 16]).unwrap();
    p.insert(HEADER_LEN, 0);
    assert_eq!(rx.unprotect(&mut p), Err(EspError::BadLength { len: 17 }));
}

#[test]
fn rejects_unknown_spi() {
    let (mut tx, _) = pair(&key(1, 1));
    let (_, mut rx) = pair(&key(2, 1));
    let mut p = b"data".to_vec();
    tx.protect(&mut p, 59, [0; 16]).unwrap();
    assert_eq!(rx.unprotect(&mut p), Err(EspError::UnknownSpi(Spi::new(1, 1))));
}

#[test]
fn rejects_wrong_key_as_icv_mismatch() {
    let (mut tx, _) = pair(&key(1, 1));
    let (_, mut rx) = pair(&key(1, 2));
    let mut p = b"data".to_vec();
    tx.protect(&mut p, 59, [0; 16]).unwrap();
    assert_eq!(rx.unprotect(&mut p), Err(EspError::IcvMismatch));
}

#[test]
fn rejects_replay_and_too_old() {
    let (mut tx, mut rx) = pair(&key(1, 1));
    let mut sent = Vec::new();
    for _ in 0..=REPLAY_WINDOW {
        let mut p = b"x".to_vec();
        tx.protect(&mut p, 59, [1; 16]).unwrap();
        sent.push(p);
    }
    // Deliver 65 first, then 2..=64 out of order: all inside the window.
    rx.unprotect(&mut sent[64].clone()).unwrap();
    for p in sent[1..64].iter().rev() {
        rx.unprotect(&mut p.clone()).unwrap();
    }
    assert_eq!(rx.unprotect(&mut sent[10].clone()), Err(EspError::Replayed { seq: 11 }));
    assert_eq!(rx.unprotect(&mut sent[0].clone()), Err(EspError::TooOld { seq: 1, highest: 65 }));
}

#[test]
fn rejects_sequence_number_zero() {
    let (mut tx, mut rx) = pair(&key(1, 1));
    tx.set_seq(u32::MAX); // the next packet would wrap to 0
    assert_eq!(tx.protect(&mut b"x".to_vec(), 59, [0; 16]), Err(EspError::SequenceExhausted));
    // A packet forged with sequence number 0 is refused before its ICV is checked.
    let mut p = b"x".to_vec();
    tx.set_seq(0);
    tx.protect(&mut p, 59, [0; 16]).unwrap();
    p[4..8].copy_from_slice(&[0; 4]);
    assert_eq!(rx.unprotect(&mut p), Err(EspError::Replayed { seq: 0 }));
}

/// A packet whose plaintext ends in `trailer`, with a valid ICV: CBC is prefix-preserving, so
/// the first blocks of a sealed longer payload are the ciphertext of `blocks` alone; the ICV is
/// recomputed over the cut packet with the SA's HMAC key.
fn forge(k: &EspKey, tek: &Tek, blocks: &[u8]) -> Vec<u8> {
    let (mut tx, _) = pair(k);
    let mut p = [blocks, b"more"].concat();
    tx.protect(&mut p, 59, [5; 16]).unwrap();
    p.truncate(HEADER_LEN + blocks.len());
    let icv = keycast_crypto::hmac::hmac_sha1(&auth_key(tek, k.spi())[..], &[&p]);
    p.extend_from_slice(&icv[..ICV_LEN]);
    p
}

#[test]
fn rejects_bad_padding_under_a_valid_icv() {
    let tek = Tek::from_bytes([1; 16]);
    let k = EspKey::new(Spi::new(1, 1), tek.clone());
    // Control: a well-formed trailer 01 02 03 | 3 | 59 opens.
    let good = forge(&k, &tek, &[&[0xaa; 27][..], &[1, 2, 3, 3, 59]].concat());
    let (_, mut rx) = pair(&k);
    let mut p = good.clone();
    assert_eq!(rx.unprotect(&mut p).unwrap().pad_len, 3);
    assert_eq!(p, vec![0xaa; 27]);
    // Padding 01 02 04 is not self-describing.
    let bad = forge(&k, &tek, &[&[0xaa; 27][..], &[1, 2, 4, 3, 59]].concat());
    assert_eq!(pair(&k).1.unprotect(&mut bad.clone()), Err(EspError::BadPadding));
    // A pad length longer than the ciphertext.
    let long = forge(&k, &tek, &[&[0xaa; 30][..], &[31, 59]].concat());
    assert_eq!(pair(&k).1.unprotect(&mut long.clone()), Err(EspError::BadPadding));
    // The longest pad that fits: 30 bytes 1..=30, no payload.
    let full = forge(&k, &tek, &[&(1..=30).collect::<Vec<u8>>()[..], &[30, 59]].concat());
    let mut p = full.clone();
    assert_eq!(pair(&k).1.unprotect(&mut p).unwrap().pad_len, 30);
    assert!(p.is_empty());
}

/// Every single-bit flip anywhere in the packet is refused (ICV, SPI or replay check).
#[test]
fn bit_flips_are_refused() {
    let k = key(1, 1);
    let (mut tx, _) = pair(&k);
    let mut p = b"bit flips must not get through".to_vec();
    tx.protect(&mut p, 17, [0x42; 16]).unwrap();
    for bit in 0..p.len() * 8 {
        let mut q = p.clone();
        q[bit / 8] ^= 1 << (bit % 8);
        let (_, mut rx) = pair(&k);
        let err = rx.unprotect(&mut q).unwrap_err();
        assert!(
            matches!(err, EspError::IcvMismatch | EspError::UnknownSpi(_) | EspError::Replayed { seq: 0 }),
            "bit {bit}: {err:?}"
        );
        assert_eq!(q[bit / 8], p[bit / 8] ^ 1 << (bit % 8), "a refused packet is left as it was");
    }
}

/// python3-scapy's ESP (`scapy.layers.ipsec.SecurityAssociation`, AES-CBC + HMAC-SHA1-96) opens
/// packets sealed here and seals packets opened here, byte for byte.
#[test]
fn scapy_cross_check() {
    let Some(python) = python_oracle::python_with(&["scapy.layers.ipsec", "cryptography"]) else { return };
    let keys = [key(1, 0x11), EspKey::new(Spi::new(0xbeef, 0x0102), Tek::from_bytes(*b"0123456789abcdef"))];
    let mut lines = String::new();
    let mut want = Vec::new();
    for (n, k) in keys.iter().enumerate() {
        let tek = if n == 0 { [0x11; 16] } else { *b"0123456789abcdef" };
        let (mut tx, _) = pair(k);
        tx.set_seq(41);
        for len in [0usize, 8, 14, 15, 30, 100, 200] {
            // A UDP datagram (header + data) so scapy parses next header 17 as UDP.
            let data: Vec<u8> = (0..len).map(|i| i as u8 ^ 0x5a).collect();
            let udp = [&[0x9c, 0x40, 0x13, 0x88][..], &((8 + len) as u16).to_be_bytes(), &[0, 0], &data].concat();
            let iv = [len as u8; 16];
            let mut p = udp.clone();
            let seq = tx.protect(&mut p, 17, iv).unwrap();
            let tek_hex = hex::encode(tek);
            let spi = k.spi().to_u32();
            lines += &format!("open {tek_hex} {spi} {}\n", hex::encode(&p));
            want.push(format!("17 {}", hex::encode(&udp)));
            lines += &format!("seal {tek_hex} {spi} {seq} {} {}\n", hex::encode(iv), hex::encode(&udp));
            want.push(hex::encode(&p));
        }
    }
    let out = run(&python, &[vectors_dir().join("esp_scapy_check.py").to_str().unwrap()], &lines);
    let got: Vec<&str> = out.lines().collect();
    assert_eq!(got.len(), want.len(), "{out}");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w);
    }
}

/// Re-runs the oracle: its output must still be the committed file.
#[test]
fn python_oracle_reproduces_the_vector_file() {
    let Some(python) = python_oracle::python_with(&["cryptography"]) else { return };
    let out = run(&python, &[vectors_dir().join("gen_esp_vectors.py").to_str().unwrap()], "");
    assert_eq!(out, std::fs::read_to_string(vectors_dir().join("esp.txt")).unwrap());
}

proptest! {
    #[test]
    fn round_trip(tek in any::<[u8; 16]>(), group in 1u16.., tek_id in any::<u16>(), seq in 0u32..u32::MAX,
                  iv in any::<[u8; 16]>(), nh in any::<u8>(), plain in proptest::collection::vec(any::<u8>(), 0..300)) {
        let k = EspKey::new(Spi::new(group, tek_id), Tek::from_bytes(tek));
        let (mut tx, mut rx) = pair(&k);
        tx.set_seq(seq);
        let mut p = plain.clone();
        prop_assert_eq!(tx.protect(&mut p, nh, iv), Ok(seq + 1));
        prop_assert_eq!((p.len() - HEADER_LEN - ICV_LEN) % 16, 0);
        let info = rx.unprotect(&mut p).unwrap();
        prop_assert_eq!((info.seq, info.next_header, info.spi), (seq + 1, nh, k.spi()));
        prop_assert_eq!(p, plain);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let (_, mut rx) = pair(&key(1, 1));
        let mut p = bytes.clone();
        if rx.unprotect(&mut p).is_err() {
            prop_assert_eq!(p, bytes);
        }
    }

    #[test]
    fn altered_packets_are_refused(plain in proptest::collection::vec(any::<u8>(), 0..100),
                                   at in any::<prop::sample::Index>(), xor in 1u8..) {
        let k = key(1, 1);
        let (mut tx, mut rx) = pair(&k);
        let mut p = plain;
        tx.protect(&mut p, 59, [7; 16]).unwrap();
        let i = at.index(p.len());
        p[i] ^= xor;
        prop_assert!(rx.unprotect(&mut p).is_err());
    }
}

/// The committed seeds of the `esp_open` fuzz target open under the fuzzing keys (except the
/// replayed and too-old packets placed in them on purpose) and pass the target's checks.
#[cfg(feature = "fuzzing")]
#[test]
fn fuzz_seeds_open_under_the_fuzzing_keys() {
    use keycast_traffic::esp::fuzzing;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus/esp_open");
    let mut opened = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        let mut rx = EspReceiver::new();
        fuzzing::keys().iter().for_each(|k| _ = rx.add_key(k));
        let mut rest = &data[..];
        while let Some((&len, tail)) = rest.split_first() {
            let (pkt, tail) = tail.split_at(usize::from(len));
            rest = tail;
            match rx.unprotect(&mut pkt.to_vec()) {
                Ok(_) => opened += 1,
                Err(e) => assert!(matches!(e, EspError::Replayed { .. } | EspError::TooOld { .. }), "{e:?}"),
            }
        }
        fuzzing::esp_open(&data);
    }
    assert!(opened >= 11);
}

#[cfg(feature = "fuzzing")]
proptest! {
    /// The fuzz entry point on seeds with a few bytes changed, and on arbitrary bytes.
    #[test]
    fn fuzz_entry_never_panics(seed in 0usize..4, edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
                               noise in proptest::collection::vec(any::<u8>(), 0..120)) {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus/esp_open");
        let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        let mut data = std::fs::read(&files[seed % files.len()]).unwrap();
        for (at, b) in edits {
            let i = at.index(data.len());
            data[i] = b;
        }
        keycast_traffic::esp::fuzzing::esp_open(&data);
        keycast_traffic::esp::fuzzing::esp_open(&noise);
    }
}
