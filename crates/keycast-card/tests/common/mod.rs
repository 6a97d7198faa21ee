//! The subscriber the card test suites share: Milenage test set 1 (TS 35.208 §4.3; reference
//! vectors §1) with the names of the GBA worked example (reference vectors §2).
#![allow(dead_code)]

use keycast_card::usim::{Usim, UsimIdentity};
use keycast_crypto::keys::{Opc, SubscriberKey};

pub const IDI: &str = "bmsc.example.org";
pub const IMPI: &str = "001010000000001@ims.mnc001.mcc001.3gppnetwork.org";
pub const BTID: &str = "I1U8vpY3qJ0hiuZNrke/NQ==@bsf.example.org";
pub const LIFETIME: &str = "2026-12-01T00:00:00Z";
pub const SQN: [u8; 6] = [0xff, 0x9b, 0xb4, 0xd0, 0xb6, 0x07];
pub const AMF: [u8; 2] = [0xb9, 0xb9];

/// Hex (spaces allowed) into a fixed-size array.
pub fn arr<const N: usize>(s: &str) -> [u8; N] {
    hex::decode(s.trim().replace(' ', "")).unwrap().try_into().unwrap()
}

pub fn k() -> SubscriberKey {
    SubscriberKey::from_bytes(arr("465b5ce8b199b49faa5f0a2ee238a6bc"))
}

pub fn opc() -> Opc {
    Opc::from_bytes(arr("cd63cb71954a9f4e48a5994e37a02baf"))
}

pub fn rand() -> [u8; 16] {
    arr("23553cbe9637a89d218ae64dae47bf35")
}

/// A card for the subscriber whose SQN_MS sits just below set 1's SQN, so set 1 is fresh.
pub fn usim() -> Usim {
    let identity =
        UsimIdentity { imsi: "001010000000001".into(), impi: IMPI.into(), iccid: "8900100000000000001".into() };
    let mut usim = Usim::new(identity, k(), opc());
    usim.sqn_ms = [0xff, 0x9b, 0xb4, 0xd0, 0xb6, 0x00];
    usim
}
