//! Keycast layer 4: the transforms that protect the content itself with the TEK an STKM
//! delivers.
//!
//! This crate does **no IO, reads no clock and starts no threads**: packets come in as the
//! caller's buffers and are protected or checked in place.
//!
//! | module | what | governing text |
//! |---|---|---|
//! | [`srtp`] | SRTP/SRTCP with MKI = SEK/PEK ID ‖ TEK ID, AES-CM-128 + HMAC-SHA-1-80, RFC 4771 ROC transform, replay window, two-TEK key store | RFC 3711, RFC 4771, TS 33.246 §6.6.2, profile P-9, P-11.2 |
//! | [`ismacryp`] | ISMACryp 1.x samples: AES-128-CTR, key = TEK, 8-byte salt, IV = byte offset (8), key indicator = MKI (6), two-TEK key store | ISMACryp 1.x (GPAC), profile P-9 |
//! | [`esp`] | IPsec ESP on UDP payloads: AES-128-CBC + HMAC-SHA1-96, SPI = Key Group ‖ TEK ID, 64-packet replay window | RFC 4303, RFC 3602, RFC 2404, profile P-9 |
//! | [`pdcf`] | adapted PDCF recordings: bounded ISO BMFF box codec, fragmented writer (init chunk, `moof`+`mdat` per flush, `mfra`), reader (finished or interrupted) giving ISMACryp samples and STKMs in play-back order; `odkm` scheme with `ohdr`/`obki`, `odaf`, `oslt`; STKM track with `oksd` | ISO/IEC 14496-12, OMA DRM v2 PDCF, TS 33.246 §6.6.3.2, seed §6.7.1, profile P-9 |
//! | [`dcf`] | OMA DRM v2 DCF for download: AES-128-CBC (RFC 2630 padding, IV first) under keys from the TEK with the RFC 3830 §4.1.3 labels, `obki` key ID, HMAC-SHA1 `odfs` signature | TS 33.246 §6.5.4, §6.6.3, profile P-9 |

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod dcf;
pub mod esp;
pub mod ismacryp;
pub mod pdcf;
pub mod srtp;

/// Entry points for the fuzz targets under `fuzz/` (not a stable API).
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    use core::num::NonZeroU16;

    use keycast_crypto::keys::{Tek, TekSalt};

    use crate::srtp::{Mki, RccMode, SrtpMasterKey, SrtpPolicy, SrtpReceiver, SrtpSender};

    /// Keys of the fuzz receivers (and of the seed corpus): MKI 00010001 0001 with TEK
    /// `[0x11; 16]`, salt `[0x22; 14]`; MKI 00010001 0002 with TEK `[0x33; 16]`, salt `[0x44; 14]`.
    #[must_use]
    pub fn keys() -> [SrtpMasterKey; 2] {
        [
            SrtpMasterKey::new(Mki::new(0x0001_0001, 1), Tek::from_bytes([0x11; 16]), TekSalt::from_bytes([0x22; 14])),
            SrtpMasterKey::new(Mki::new(0x0001_0001, 2), Tek::from_bytes([0x33; 16]), TekSalt::from_bytes([0x44; 14])),
        ]
    }

    /// The policy selected by the first input byte: 0 RFC 3711, 1 no tag, 2–4 RCCm1–3 with R = 4.
    #[must_use]
    pub fn policy(selector: u8) -> SrtpPolicy {
        let rate = NonZeroU16::new(4).expect("4 is not zero");
        match selector % 5 {
            0 => SrtpPolicy::rfc3711(),
            1 => SrtpPolicy::unauthenticated(),
            2 => SrtpPolicy::rcc(RccMode::Rccm1, rate),
            3 => SrtpPolicy::rcc(RccMode::Rccm2, rate),
            _ => SrtpPolicy::rcc(RccMode::Rccm3, rate),
        }
    }

    /// First byte: policy; the rest is split into length-prefixed packets fed to one receiver
    /// as SRTP and to another as SRTCP, so stream state carries over. While the ROC is 0,
    /// whatever unprotects must protect again (fresh sender) to a packet that a fresh receiver
    /// either refuses as unsynchronised or unprotects to the same bytes.
    pub fn srtp_unprotect(data: &[u8]) {
        let Some((&selector, mut rest)) = data.split_first() else { return };
        let policy = policy(selector);
        let keys = keys();
        let mut rtp_rx = SrtpReceiver::new(policy);
        let mut rtcp_rx = SrtpReceiver::new(policy);
        for k in &keys {
            rtp_rx.add_key(k);
            rtcp_rx.add_key(k);
        }
        while let Some((&len, tail)) = rest.split_first() {
            let (pkt, tail) = tail.split_at(usize::from(len).min(tail.len()));
            rest = tail;
            let mut p = pkt.to_vec();
            if rtp_rx.unprotect(&mut p).is_ok() {
                assert!(p.len() < pkt.len(), "unprotect removes the MKI");
                let ssrc = u32::from_be_bytes([p[8], p[9], p[10], p[11]]);
                let roc = rtp_rx.roc(ssrc).expect("an accepted packet has a ROC");
                let mut tx = SrtpSender::new(policy, &keys[0]);
                let plain = p.clone();
                // A fresh receiver starts at ROC 0, so the round trip is checked there only.
                if roc == 0 && tx.protect(&mut p).is_ok() {
                    let mut rx = SrtpReceiver::new(policy);
                    rx.add_key(&keys[0]);
                    // The fresh receiver may refuse an RCCm1/3 packet without ROC; otherwise
                    // it must give back the same RTP packet.
                    if rx.unprotect(&mut p).is_ok() {
                        assert_eq!(p, plain, "protect then unprotect is the identity");
                    }
                }
            }
            let mut p = pkt.to_vec();
            if rtcp_rx.unprotect_rtcp(&mut p).is_ok() {
                assert_eq!(p.len() + crate::srtp::SRTCP_OVERHEAD, pkt.len());
            }
        }
    }
}
