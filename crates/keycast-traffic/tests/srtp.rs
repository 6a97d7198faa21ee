//! Behaviour of the SRTP/SRTCP contexts: round trips, ROC rollover, replay, keys by MKI, the
//! two-TEK window, RFC 4771 ROC carriage, tampering, and one test per rejection.

use std::num::NonZeroU16;

use keycast_crypto::keys::{Tek, TekSalt};
use keycast_traffic::srtp::{
    MKI_LEN, Mki, REPLAY_WINDOW, RccMode, SRTCP_OVERHEAD, SRTP_MAX_OVERHEAD, SrtpAuth, SrtpError, SrtpMasterKey,
    SrtpPolicy, SrtpReceiver, SrtpSender, TAG_LEN,
};
use proptest::prelude::*;

const SSRC: u32 = 0xcafe_babe;

fn key(tek_id: u16) -> SrtpMasterKey {
    SrtpMasterKey::new(
        Mki::new(0x0001_0002, tek_id),
        Tek::from_bytes([tek_id as u8; 16]),
        TekSalt::from_bytes([0x80 | tek_id as u8; 14]),
    )
}

fn rtp(seq: u16, payload: &[u8]) -> Vec<u8> {
    [&[0x80, 96][..], &seq.to_be_bytes(), &[0, 0, 0x10, 0], &SSRC.to_be_bytes(), payload].concat()
}

fn rtcp(payload: &[u8]) -> Vec<u8> {
    let words = ((8 + payload.len()) / 4 - 1) as u16;
    [&[0x80, 200][..], &words.to_be_bytes(), &SSRC.to_be_bytes(), payload].concat()
}

fn rate(r: u16) -> NonZeroU16 {
    NonZeroU16::new(r).unwrap()
}

fn pair(policy: SrtpPolicy) -> (SrtpSender, SrtpReceiver) {
    let mut rx = SrtpReceiver::new(policy);
    rx.add_key(&key(1));
    (SrtpSender::new(policy, &key(1)), rx)
}

fn protected(tx: &mut SrtpSender, seq: u16) -> Vec<u8> {
    let mut p = rtp(seq, b"some media payload");
    tx.protect(&mut p).unwrap();
    p
}

#[test]
fn round_trip_srtp_and_srtcp() {
    let (mut tx, mut rx) = pair(SrtpPolicy::rfc3711());
    for seq in 0..50u16 {
        let plain = rtp(seq, &[seq as u8; 33]);
        let mut p = plain.clone();
        tx.protect(&mut p).unwrap();
        assert_eq!(p.len(), plain.len() + MKI_LEN + TAG_LEN);
        assert_ne!(p[12..plain.len()], plain[12..], "payload is encrypted");
        assert_eq!(p[plain.len()..plain.len() + MKI_LEN], Mki::new(0x0001_0002, 1).to_bytes());
        rx.unprotect(&mut p).unwrap();
        assert_eq!(p, plain);
    }
    for _ in 0..3 {
        let plain = rtcp(&[7; 20]);
        let mut p = plain.clone();
        tx.protect_rtcp(&mut p).unwrap();
        assert_eq!(p.len(), plain.len() + SRTCP_OVERHEAD);
        assert_eq!(p[plain.len()] & 0x80, 0x80, "E bit set");
        rx.unprotect_rtcp(&mut p).unwrap();
        assert_eq!(p, plain);
    }
}

#[test]
fn slice_api_needs_no_vec() {
    let (mut tx, mut rx) = pair(SrtpPolicy::rfc3711());
    let plain = rtp(9, b"abc");
    let mut buf = [0u8; 64];
    buf[..plain.len()].copy_from_slice(&plain);
    let n = tx.protect_in(&mut buf, plain.len()).unwrap();
    assert_eq!(n, plain.len() + SRTP_MAX_OVERHEAD);
    let m = rx.unprotect_in(&mut buf[..n]).unwrap();
    assert_eq!(&buf[..m], &plain[..]);
    let mut small = [0u8; 20];
    small[..plain.len()].copy_from_slice(&plain);
    assert_eq!(tx.protect_in(&mut small, plain.len()), Err(SrtpError::BufferTooSmall { needed: 31, capacity: 20 }));
}

#[test]
fn roc_rolls_over_from_65535_to_0() {
    let (mut tx, mut rx) = pair(SrtpPolicy::rfc3711());
    let mut late = None;
    for seq in [65530u16, 65531, 65532, 65533, 65534, 65535, 0, 1, 2] {
        let p = protected(&mut tx, seq);
        if seq == 65535 {
            late = Some(p); // delivered after 0: its index is estimated with ROC − 1
            continue;
        }
        let mut p = p;
        rx.unprotect(&mut p).unwrap();
    }
    assert_eq!(tx.roc(SSRC), Some(1));
    assert_eq!(rx.roc(SSRC), Some(1));
    let mut late = late.unwrap();
    rx.unprotect(&mut late).unwrap();
    assert_eq!(late, rtp(65535, b"some media payload"));
    assert_eq!(rx.roc(SSRC), Some(1));
}

#[test]
fn receiver_with_wrong_roc_fails_authentication() {
    let (mut tx, mut rx) = pair(SrtpPolicy::rfc3711());
    tx.set_roc(SSRC, 3);
    let mut p = protected(&mut tx, 10);
    assert_eq!(rx.unprotect(&mut p), Err(SrtpError::AuthFailed));
    rx.set_roc(SSRC, 3).unwrap();
    rx.unprotect(&mut p).unwrap();
    assert_eq!(rx.roc(SSRC), Some(3));
}

#[test]
fn rejects_replayed_packets() {
    let (mut tx, mut rx) = pair(SrtpPolicy::rfc3711());
    let p = protected(&mut tx, 100);
    rx.unprotect(&mut p.clone()).unwrap();
    assert_eq!(rx.unprotect(&mut p.clone()), Err(SrtpError::Replayed { index: 100 }));
    let mut c = rtcp(&[1; 8]);
    tx.protect_rtcp(&mut c).unwrap();
    rx.unprotect_rtcp(&mut c.clone()).unwrap();
    assert_eq!(rx.unprotect_rtcp(&mut c.clone()), Err(SrtpError::Replayed { index: 0 }));
}

#[test]
fn rejects_packets_below_the_replay_window() {
    let (mut tx, mut rx) = pair(SrtpPolicy::rfc3711());
    let first = protected(&mut tx, 0);
    let mut reordered = protected(&mut tx, 1);
    let last = REPLAY_WINDOW as u16 + 1;
    for seq in 2..=last {
        rx.unprotect(&mut protected(&mut tx, seq)).unwrap();
    }
    // Indices 0 and 1 lie 129 and 128 below the highest (129): outside a 128-packet window.
    assert_eq!(rx.unprotect(&mut first.clone()), Err(SrtpError::TooOld { highest: u64::from(last) }));
    assert_eq!(rx.unprotect(&mut reordered.clone()), Err(SrtpError::TooOld { highest: u64::from(last) }));
    let mut rx2 = SrtpReceiver::new(SrtpPolicy::rfc3711());
    rx2.add_key(&key(1));
    rx2.unprotect(&mut protected(&mut tx, last + 1)).unwrap();
    rx2.unprotect(&mut reordered).map(|_| ()).unwrap_err();
}

#[test]
fn reordered_packets_inside_the_window_are_accepted_once() {
    let (mut tx, mut rx) = pair(SrtpPolicy::rfc3711());
    let pkts: Vec<_> = (0..20u16).map(|s| protected(&mut tx, s)).collect();
    for i in (0..20).rev() {
        rx.unprotect(&mut pkts[i].clone()).unwrap();
    }
    for p in &pkts {
        assert!(matches!(rx.unprotect(&mut p.clone()), Err(SrtpError::Replayed { .. })));
    }
}

#[test]
fn rejects_unknown_mki() {
    let mut tx = SrtpSender::new(SrtpPolicy::rfc3711(), &key(1));
    let mut rx = SrtpReceiver::new(SrtpPolicy::rfc3711());
    rx.add_key(&key(2));
    let mut p = protected(&mut tx, 1);
    let before = p.clone();
    assert_eq!(rx.unprotect(&mut p), Err(SrtpError::UnknownMki(Mki::new(0x0001_0002, 1))));
    assert_eq!(p, before, "unchanged on error");
    let mut c = rtcp(&[0; 4]);
    tx.protect_rtcp(&mut c).unwrap();
    assert_eq!(rx.unprotect_rtcp(&mut c), Err(SrtpError::UnknownMki(Mki::new(0x0001_0002, 1))));
    assert_eq!(
        SrtpError::UnknownMki(Mki::new(0x0001_0002, 1)).to_string(),
        "unknown MKI 000100020001 (no TEK installed under it)"
    );
}

#[test]
fn receiver_keeps_the_two_most_recent_teks() {
    let mut rx = SrtpReceiver::new(SrtpPolicy::rfc3711());
    let mut tx = SrtpSender::new(SrtpPolicy::rfc3711(), &key(1));
    assert_eq!(rx.add_key(&key(1)), None);
    let under1 = protected(&mut tx, 1);
    tx.set_key(&key(2));
    assert_eq!(tx.mki(), Mki::new(0x0001_0002, 2));
    let under2 = protected(&mut tx, 2);
    assert_eq!(rx.add_key(&key(2)), None);
    // Both TEKs installed: a packet still in flight under TEK 1 decrypts after the change.
    rx.unprotect(&mut under2.clone()).unwrap();
    rx.unprotect(&mut under1.clone()).unwrap();
    // A resent STKM (same MKI) does not evict anything.
    assert_eq!(rx.add_key(&key(2)), None);
    assert_eq!(rx.mkis().collect::<Vec<_>>(), [Mki::new(0x0001_0002, 2), Mki::new(0x0001_0002, 1)]);
    // A third TEK drops the oldest.
    assert_eq!(rx.add_key(&key(3)), Some(Mki::new(0x0001_0002, 1)));
    tx.set_key(&key(1));
    assert_eq!(rx.unprotect(&mut protected(&mut tx, 3)), Err(SrtpError::UnknownMki(Mki::new(0x0001_0002, 1))));
    tx.set_key(&key(3));
    rx.unprotect(&mut protected(&mut tx, 4)).unwrap();
    tx.set_key(&key(2));
    rx.unprotect(&mut protected(&mut tx, 5)).unwrap();
    assert!(rx.remove_key(Mki::new(0x0001_0002, 2)));
    assert!(!rx.remove_key(Mki::new(0x0001_0002, 2)));
    assert_eq!(rx.unprotect(&mut protected(&mut tx, 6)), Err(SrtpError::UnknownMki(Mki::new(0x0001_0002, 2))));
}

#[test]
fn rfc4771_rccm2_carries_the_roc_every_r_packets() {
    let policy = SrtpPolicy::rcc(RccMode::Rccm2, rate(4));
    let (mut tx, mut rx) = pair(policy);
    tx.set_roc(SSRC, 5);
    // A late joiner: without the ROC, a normal packet fails (ROC 0 is tried) ...
    let mut p1 = protected(&mut tx, 1);
    assert_eq!(p1.len(), rtp(1, b"some media payload").len() + MKI_LEN + TAG_LEN);
    assert_eq!(rx.unprotect(&mut p1), Err(SrtpError::AuthFailed));
    // ... and the ROC packet (SEQ mod R = 0) synchronises it: tag = ROC ‖ 6 bytes of MAC.
    let mut p4 = protected(&mut tx, 4);
    let tag_at = p4.len() - TAG_LEN;
    assert_eq!(p4[tag_at..tag_at + 4], 5u32.to_be_bytes());
    rx.unprotect(&mut p4).unwrap();
    assert_eq!(rx.roc(SSRC), Some(5));
    rx.unprotect(&mut protected(&mut tx, 5)).unwrap();
    // A forged ROC in the tag is refused: a higher one by the MAC (it covers the ROC), a
    // lower one already by the replay window (the ROC never moves back).
    let p8 = protected(&mut tx, 8);
    let at = p8.len() - TAG_LEN + 3;
    let mut up = p8.clone();
    up[at] ^= 2;
    assert_eq!(rx.unprotect(&mut up), Err(SrtpError::AuthFailed));
    let mut down = p8.clone();
    down[at] ^= 1;
    assert_eq!(rx.unprotect(&mut down), Err(SrtpError::TooOld { highest: 5 << 16 | 5 }));
    rx.unprotect(&mut p8.clone()).unwrap();
}

#[test]
fn rfc4771_roc_packet_across_rollover() {
    let policy = SrtpPolicy::rcc(RccMode::Rccm2, rate(1));
    let (mut tx, mut rx) = pair(policy);
    for seq in [65534u16, 65535, 0, 1] {
        rx.unprotect(&mut protected(&mut tx, seq)).unwrap();
    }
    assert_eq!(rx.roc(SSRC), Some(1));
}

#[test]
fn rfc4771_rccm1_and_rccm3_wait_for_the_roc() {
    for (mode, roc_tag) in [(RccMode::Rccm1, TAG_LEN), (RccMode::Rccm3, 4)] {
        let (mut tx, mut rx) = pair(SrtpPolicy::rcc(mode, rate(4)));
        tx.set_roc(SSRC, 9);
        let mut p3 = protected(&mut tx, 3);
        assert_eq!(p3.len(), rtp(3, b"some media payload").len() + MKI_LEN, "{mode:?}: no tag");
        assert_eq!(rx.unprotect(&mut p3), Err(SrtpError::RocNotSynchronised), "{mode:?}");
        let mut p4 = protected(&mut tx, 4);
        assert_eq!(p4.len(), rtp(4, b"some media payload").len() + MKI_LEN + roc_tag, "{mode:?}");
        rx.unprotect(&mut p4).unwrap();
        assert_eq!(p4, rtp(4, b"some media payload"));
        assert_eq!(rx.roc(SSRC), Some(9));
        let mut p5 = protected(&mut tx, 5);
        rx.unprotect(&mut p5).unwrap();
        assert_eq!(p5, rtp(5, b"some media payload"));
    }
}

/// RCCm1: an unauthenticated packet can push the estimated ROC ahead, but the next
/// authenticated ROC packet pulls it back; an authenticated replay below the window cannot.
#[test]
fn rfc4771_authenticated_roc_packet_resynchronises() {
    let (mut tx, mut rx) = pair(SrtpPolicy::rcc(RccMode::Rccm1, rate(4)));
    tx.set_roc(SSRC, 2);
    let old_roc_packet = protected(&mut tx, 0x4000);
    rx.unprotect(&mut old_roc_packet.clone()).unwrap();
    rx.unprotect(&mut protected(&mut tx, 0x9001)).unwrap();
    // A forged packet without tag, SEQ far below s_l: estimated as ROC + 1.
    let mut forged = rtp(0x0001, b"forged");
    forged.extend_from_slice(&Mki::new(0x0001_0002, 1).to_bytes());
    rx.unprotect(&mut forged).unwrap();
    assert_eq!(rx.roc(SSRC), Some(3));
    // The sender's next ROC packet (ROC 2) is newer than all authenticated ones: resync.
    let mut p = protected(&mut tx, 0x9004);
    rx.unprotect(&mut p).unwrap();
    assert_eq!(p, rtp(0x9004, b"some media payload"));
    assert_eq!(rx.roc(SSRC), Some(2));
    // An old authenticated ROC packet below the window stays refused.
    assert!(matches!(rx.unprotect(&mut old_roc_packet.clone()), Err(SrtpError::TooOld { .. })));
}

#[test]
fn unauthenticated_mode_has_no_tag_but_srtcp_keeps_its_own() {
    let (mut tx, mut rx) = pair(SrtpPolicy::from_profile(false, Some(rate(4))));
    assert_eq!(tx.policy().auth, SrtpAuth::None);
    let plain = rtp(7, b"x");
    let mut p = plain.clone();
    tx.protect(&mut p).unwrap();
    assert_eq!(p.len(), plain.len() + MKI_LEN);
    rx.unprotect(&mut p).unwrap();
    assert_eq!(p, plain);
    let mut c = rtcp(&[]);
    tx.protect_rtcp(&mut c).unwrap();
    assert_eq!(c.len(), 8 + SRTCP_OVERHEAD);
    let last = c.len() - 1;
    c[last] ^= 1;
    assert_eq!(rx.unprotect_rtcp(&mut c), Err(SrtpError::AuthFailed));
}

#[test]
fn profile_policy_choice() {
    assert_eq!(SrtpPolicy::from_profile(true, None), SrtpPolicy::rfc3711());
    assert_eq!(SrtpPolicy::from_profile(true, Some(rate(10))), SrtpPolicy::rcc(RccMode::Rccm2, rate(10)));
    assert_eq!(SrtpPolicy::from_profile(false, None), SrtpPolicy::unauthenticated());
}

/// Every single-bit change of an authenticated packet is refused.
#[test]
fn rejects_every_bit_flip() {
    let policies =
        [SrtpPolicy::rfc3711(), SrtpPolicy::rcc(RccMode::Rccm2, rate(2)), SrtpPolicy::rcc(RccMode::Rccm1, rate(1))];
    for policy in policies {
        for seq in [2u16, 3] {
            let mut tx = SrtpSender::new(policy, &key(1));
            tx.set_roc(SSRC, 1);
            let p = protected(&mut tx, seq);
            for bit in 0..p.len() * 8 {
                let mut rx = SrtpReceiver::new(policy);
                rx.add_key(&key(1));
                rx.set_roc(SSRC, 1).unwrap();
                let mut q = p.clone();
                q[bit / 8] ^= 1 << (bit % 8);
                assert!(rx.unprotect(&mut q).is_err(), "{policy:?} seq {seq} bit {bit} accepted");
            }
        }
    }
    let mut tx = SrtpSender::new(SrtpPolicy::rfc3711(), &key(1));
    let mut c = rtcp(&[5; 12]);
    tx.protect_rtcp(&mut c).unwrap();
    for bit in 0..c.len() * 8 {
        let mut rx = SrtpReceiver::new(SrtpPolicy::rfc3711());
        rx.add_key(&key(1));
        let mut q = c.clone();
        q[bit / 8] ^= 1 << (bit % 8);
        assert!(rx.unprotect_rtcp(&mut q).is_err(), "SRTCP bit {bit} accepted");
    }
}

#[test]
fn rejects_short_packets() {
    let mut rx = SrtpReceiver::new(SrtpPolicy::rfc3711());
    rx.add_key(&key(1));
    assert_eq!(rx.unprotect(&mut vec![]), Err(SrtpError::TooShort { what: "RTP header", needed: 12, len: 0 }));
    assert_eq!(
        rx.unprotect(&mut vec![0x80; 20]),
        Err(SrtpError::TooShort { what: "SRTP packet with MKI and tag", needed: 28, len: 20 })
    );
    assert!(matches!(rx.unprotect_rtcp(&mut vec![0x80; 27]), Err(SrtpError::TooShort { needed: 28, len: 27, .. })));
    let mut tx = SrtpSender::new(SrtpPolicy::rfc3711(), &key(1));
    assert!(matches!(tx.protect(&mut vec![0x80; 11]), Err(SrtpError::TooShort { .. })));
    assert!(matches!(tx.protect_rtcp(&mut vec![0x80; 7]), Err(SrtpError::TooShort { .. })));
}

#[test]
fn rejects_bad_version() {
    let (mut tx, mut rx) = pair(SrtpPolicy::rfc3711());
    let mut p = rtp(1, b"abc");
    p[0] = 0x40;
    assert_eq!(tx.protect(&mut p.clone()), Err(SrtpError::BadVersion(1)));
    p.resize(p.len() + 16, 0);
    assert_eq!(rx.unprotect(&mut p), Err(SrtpError::BadVersion(1)));
    assert_eq!(rx.unprotect_rtcp(&mut vec![0; 30]), Err(SrtpError::BadVersion(0)));
    assert_eq!(SrtpError::BadVersion(1).to_string(), "bad RTP/RTCP version 1 (expected 2)");
}

#[test]
fn rejects_csrc_list_or_extension_past_the_end() {
    let (mut tx, mut rx) = pair(SrtpPolicy::rfc3711());
    let mut p = rtp(1, &[0; 8]);
    p[0] = 0x8f; // 15 CSRCs
    assert!(matches!(tx.protect(&mut p.clone()), Err(SrtpError::TooShort { what: "CSRC list", .. })));
    let mut e = rtp(1, &[0xbe, 0xde, 0x00, 0x09]);
    e[0] = 0x90; // extension of 9 words, none present
    assert!(matches!(tx.protect(&mut e.clone()), Err(SrtpError::TooShort { what: "header extension", .. })));
    e.extend_from_slice(&[0; 16]); // room for MKI + tag, yet the extension runs into them
    assert!(matches!(rx.unprotect(&mut e), Err(SrtpError::TooShort { what: "header extension", .. })));
}

#[test]
fn rejects_streams_beyond_the_maximum() {
    let policy = SrtpPolicy { max_streams: 1, ..SrtpPolicy::rfc3711() };
    let (mut tx, mut rx) = pair(policy);
    rx.unprotect(&mut protected(&mut tx, 1)).unwrap();
    let mut other = rtp(1, b"x");
    other[8..12].copy_from_slice(&1u32.to_be_bytes());
    tx.protect(&mut other).unwrap();
    assert_eq!(rx.unprotect(&mut other), Err(SrtpError::TooManyStreams { max: 1 }));
}

#[test]
fn srtcp_index_is_exhausted_at_2_pow_31() {
    let (mut tx, mut rx) = pair(SrtpPolicy::rfc3711());
    tx.set_srtcp_index(SSRC, 0x7fff_ffff);
    let mut c = rtcp(&[]);
    tx.protect_rtcp(&mut c).unwrap();
    rx.unprotect_rtcp(&mut c).unwrap();
    assert_eq!(tx.protect_rtcp(&mut rtcp(&[])), Err(SrtpError::IndexExhausted));
}

#[test]
fn srtp_index_is_exhausted_past_roc_2_pow_32() {
    let mut tx = SrtpSender::new(SrtpPolicy::rfc3711(), &key(1));
    tx.set_roc(SSRC, u32::MAX);
    protected(&mut tx, 0xfff0);
    assert_eq!(tx.protect(&mut rtp(1, b"")), Err(SrtpError::IndexExhausted));
}

#[test]
fn keys_print_nothing_secret() {
    let k = SrtpMasterKey::new(Mki::new(0x0102_0304, 5), Tek::from_bytes([0xab; 16]), TekSalt::from_bytes([0xcd; 14]));
    let shown = format!("{k:?}");
    assert_eq!(shown, "SrtpMasterKey { mki: Mki(010203040005), .. }");
    let (tx, mut rx) = pair(SrtpPolicy::rfc3711());
    rx.add_key(&k);
    for s in [format!("{tx:?}"), format!("{rx:?}")] {
        assert!(!s.contains("abab") && !s.contains("cdcd") && !s.contains("0101"), "{s}");
    }
    assert_eq!(k.mki().sek_pek_id(), 0x0102_0304);
    assert_eq!(k.mki().tek_id(), 5);
}

fn any_policy() -> impl Strategy<Value = SrtpPolicy> {
    (0u8..5, 1u16..8).prop_map(|(m, r)| match m {
        0 => SrtpPolicy::rfc3711(),
        1 => SrtpPolicy::unauthenticated(),
        2 => SrtpPolicy::rcc(RccMode::Rccm1, rate(r)),
        3 => SrtpPolicy::rcc(RccMode::Rccm2, rate(r)),
        _ => SrtpPolicy::rcc(RccMode::Rccm3, rate(r)),
    })
}

fn round_trip(
    policy: SrtpPolicy,
    roc: u32,
    seqs: Vec<u16>,
    csrcs: u8,
    ext: Option<Vec<u8>>,
    payload: Vec<u8>,
) -> Result<(), TestCaseError> {
    let mut tx = SrtpSender::new(policy, &key(1));
    let mut rx = SrtpReceiver::new(policy);
    rx.add_key(&key(1));
    let ssrc = 0x1234_5678;
    tx.set_roc(ssrc, roc);
    rx.set_roc(ssrc, roc).unwrap();
    let mut first = true;
    for seq in seqs {
        let mut plain = vec![0x80 | csrcs | if ext.is_some() { 0x10 } else { 0 }, 0x60];
        plain.extend_from_slice(&seq.to_be_bytes());
        plain.extend_from_slice(&[1, 2, 3, 4]);
        plain.extend_from_slice(&u32::to_be_bytes(ssrc));
        plain.extend(std::iter::repeat_n(0xee, 4 * usize::from(csrcs)));
        if let Some(words) = &ext {
            plain.extend_from_slice(&[0xbe, 0xde, 0, words.len() as u8]);
            plain.extend(words.iter().flat_map(|w| [*w; 4]));
        }
        plain.extend_from_slice(&payload);
        let mut p = plain.clone();
        match tx.protect(&mut p) {
            Ok(()) => {}
            Err(SrtpError::TooOld { .. } | SrtpError::IndexExhausted) => continue,
            Err(e) => panic!("protect: {e}"),
        }
        let r = rx.unprotect(&mut p);
        // A sequence number seen before is a replay; anything else must come back intact.
        match r {
            Ok(()) => prop_assert_eq!(&p, &plain),
            Err(SrtpError::Replayed { .. } | SrtpError::TooOld { .. }) => prop_assert!(!first),
            Err(e) => prop_assert!(false, "unprotect: {}", e),
        }
        first = false;
    }
    Ok(())
}

proptest! {
    /// Arbitrary sequence numbers, for the policies where every accepted packet is either
    /// authenticated or carries no ROC (so a receiver never resynchronises).
    #[test]
    fn prop_round_trip_any_order(
        policy in any_policy().prop_filter("no RCCm1/RCCm3", |p| !matches!(
            p.auth,
            SrtpAuth::Rcc { mode: RccMode::Rccm1 | RccMode::Rccm3, .. }
        )),
        roc in any::<u32>(),
        seqs in proptest::collection::vec(any::<u16>(), 1..8),
        csrcs in 0u8..4,
        ext in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..3)),
        payload in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        round_trip(policy, roc, seqs, csrcs, ext, payload)?;
    }

    /// All policies, with a stream that moves forward by up to 3000 and back by up to 100.
    #[test]
    fn prop_round_trip_stream(
        policy in any_policy(),
        roc in any::<u32>(),
        start in any::<u16>(),
        steps in proptest::collection::vec(-100i32..3000, 1..40),
        csrcs in 0u8..4,
        ext in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..3)),
        payload in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut seq = start;
        let seqs: Vec<u16> = std::iter::once(start)
            .chain(steps.iter().map(|d| {
                seq = seq.wrapping_add(*d as u16);
                seq
            }))
            .collect();
        round_trip(policy, roc, seqs, csrcs, ext, payload)?;
    }

    #[test]
    fn prop_never_panics_on_arbitrary_bytes(
        policy in any_policy(),
        data in proptest::collection::vec(any::<u8>(), 0..120),
        mki_prefix in any::<bool>(),
    ) {
        let mut rx = SrtpReceiver::new(policy);
        rx.add_key(&key(1));
        let mut tx = SrtpSender::new(policy, &key(1));
        let mut d = data.clone();
        // Half the inputs get the right MKI in place so they reach the tag check.
        if mki_prefix && d.len() >= 16 {
            let at = d.len() - 16;
            d[at..at + 6].copy_from_slice(&Mki::new(0x0001_0002, 1).to_bytes());
        }
        let _ = rx.unprotect(&mut d.clone());
        let _ = rx.unprotect_rtcp(&mut d.clone());
        let _ = rx.unprotect_in(&mut d.clone());
        let _ = tx.protect(&mut d.clone());
        let _ = tx.protect_rtcp(&mut d.clone());
        let mut buf = d.clone();
        let len = buf.len();
        let _ = tx.protect_in(&mut buf, len / 2);
    }
}
