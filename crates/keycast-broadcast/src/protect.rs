//! Traffic protection with the current TEK (profile P-9): RTP in, SRTP out with MKI = SEK/PEK
//! ID ‖ TEK ID, RTCP in, SRTCP out with the same key; or, as an option, IPsec ESP on the UDP
//! payload (SPI = Key Group ‖ TEK ID).
//!
//! Indices, ROCs and SRTCP indices continue across TEK switches (one SRTP session, many master
//! keys told apart by MKI). An ESP SA is per TEK, so its sequence numbers restart at 1.

use keycast_traffic::esp::{EspError, EspSender, IV_LEN};
use keycast_traffic::srtp::{SrtpError, SrtpPolicy, SrtpSender};

use crate::keys::{NoRandomness, RandomSource};
use crate::schedule::TekEntry;

/// ESP next header of the protected UDP payload \[chosen\]: 17 (UDP), as the payload is what a
/// UDP datagram carried (IANA protocol numbers).
pub const ESP_NEXT_HEADER: u8 = 17;

/// How traffic is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrafficMode {
    /// SRTP/SRTCP with this policy (RFC 3711, RFC 4771 or no tag).
    Srtp(SrtpPolicy),
    /// IPsec ESP: AES-128-CBC + HMAC-SHA1-96 on each UDP payload (RTP and RTCP alike).
    Esp,
}

/// Why a packet was not protected (it is dropped, never sent in the clear).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtectError {
    /// No TEK yet.
    #[error("no TEK yet")]
    NoKey,
    /// SRTP refused the packet (not RTP/RTCP, too short, …).
    #[error(transparent)]
    Srtp(#[from] SrtpError),
    /// ESP failed.
    #[error(transparent)]
    Esp(#[from] EspError),
    /// No random IV.
    #[error(transparent)]
    Random(#[from] NoRandomness),
}

/// Protects packets with the current TEK (module docs).
pub struct Protector<R> {
    mode: TrafficMode,
    srtp: Option<SrtpSender>,
    esp: Option<EspSender>,
    current: Option<(u32, u64, u16)>,
    rng: R,
}

impl<R> core::fmt::Debug for Protector<R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Protector").field("mode", &self.mode).field("tek", &self.current).finish_non_exhaustive()
    }
}

impl<R: RandomSource> Protector<R> {
    /// A protector without a key; `rng` gives ESP IVs.
    pub fn new(mode: TrafficMode, rng: R) -> Self {
        Self { mode, srtp: None, esp: None, current: None, rng }
    }

    /// The mode.
    #[must_use]
    pub fn mode(&self) -> TrafficMode {
        self.mode
    }

    /// Switches to `entry`'s TEK (a no-op when it is already in use). Returns whether it changed.
    pub fn set_tek(&mut self, entry: &TekEntry) -> bool {
        let id = (entry.key.id_u32(), entry.key.from, entry.tek_id);
        if self.current == Some(id) {
            return false;
        }
        match self.mode {
            TrafficMode::Srtp(policy) => {
                let key = entry.srtp_key();
                match &mut self.srtp {
                    Some(s) => s.set_key(&key),
                    None => self.srtp = Some(SrtpSender::new(policy, &key)),
                }
            }
            TrafficMode::Esp => {
                let key = entry.esp_key();
                match &mut self.esp {
                    Some(s) => s.set_key(&key),
                    None => self.esp = Some(EspSender::new(&key)),
                }
            }
        }
        self.current = Some(id);
        true
    }

    /// Protects one RTP packet in place (SRTP), or its UDP payload (ESP).
    ///
    /// # Errors
    /// [`ProtectError`]; the packet must then be dropped.
    pub fn protect_rtp(&mut self, packet: &mut Vec<u8>) -> Result<(), ProtectError> {
        match self.mode {
            TrafficMode::Srtp(_) => Ok(self.srtp.as_mut().ok_or(ProtectError::NoKey)?.protect(packet)?),
            TrafficMode::Esp => self.esp(packet),
        }
    }

    /// Protects one RTCP (compound) packet in place (SRTCP), or its UDP payload (ESP).
    ///
    /// # Errors
    /// [`ProtectError`]; the packet must then be dropped.
    pub fn protect_rtcp(&mut self, packet: &mut Vec<u8>) -> Result<(), ProtectError> {
        match self.mode {
            TrafficMode::Srtp(_) => Ok(self.srtp.as_mut().ok_or(ProtectError::NoKey)?.protect_rtcp(packet)?),
            TrafficMode::Esp => self.esp(packet),
        }
    }

    fn esp(&mut self, packet: &mut Vec<u8>) -> Result<(), ProtectError> {
        let sender = self.esp.as_mut().ok_or(ProtectError::NoKey)?;
        let mut iv = [0u8; IV_LEN];
        self.rng.fill(&mut iv)?;
        sender.protect(packet, ESP_NEXT_HEADER, iv)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use core::num::NonZeroU16;

    use keycast_traffic::esp::EspReceiver;
    use keycast_traffic::srtp::{RccMode, SrtpReceiver};

    use super::*;
    use crate::keys::SeededRandom;
    use crate::schedule::tests::{T0, key};
    use crate::schedule::{ScheduleConfig, TekSchedule};

    fn rtp(seq: u16) -> Vec<u8> {
        let mut p = vec![0x80, 96];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&1234u32.to_be_bytes());
        p.extend_from_slice(&0x1122_3344u32.to_be_bytes());
        p.extend_from_slice(format!("payload {seq}").as_bytes());
        p
    }

    fn rtcp() -> Vec<u8> {
        // An empty receiver report: V=2, RC=0, PT=201, length 1, SSRC.
        vec![0x80, 201, 0, 1, 0x11, 0x22, 0x33, 0x44]
    }

    fn run(mode: TrafficMode) {
        let mut s = TekSchedule::new(ScheduleConfig::new(2_000, 1_000).unwrap(), SeededRandom::new(3));
        s.set_keys([key(1, T0, T0 + 3), key(2, T0 + 3, T0 + 100)]);
        let mut p = Protector::new(mode, SeededRandom::new(4));
        let policy = match mode {
            TrafficMode::Srtp(p) => p,
            TrafficMode::Esp => SrtpPolicy::rfc3711(),
        };
        let mut rx = SrtpReceiver::new(policy);
        let mut rtcp_rx = SrtpReceiver::new(policy);
        let mut esp_rx = EspReceiver::new();
        let mut mkis = Vec::new();
        let mut added = Vec::new();
        for i in 0..40u16 {
            let now = T0 * 1000 + u64::from(i) * 150;
            s.advance(now).unwrap();
            for e in [s.current(), s.next()].into_iter().flatten() {
                if added.contains(&e.mki()) {
                    continue;
                }
                added.push(e.mki());
                rx.add_key(&e.srtp_key());
                rtcp_rx.add_key(&e.srtp_key());
                esp_rx.add_key(&e.esp_key());
            }
            p.set_tek(s.current().unwrap());
            let plain = rtp(i);
            let mut pkt = plain.clone();
            p.protect_rtp(&mut pkt).unwrap();
            assert_ne!(pkt, plain);
            let mut c = rtcp();
            p.protect_rtcp(&mut c).unwrap();
            match mode {
                TrafficMode::Srtp(_) => {
                    let mki = &pkt[plain.len()..plain.len() + 6];
                    assert_eq!(mki, &s.current().unwrap().mki().to_bytes());
                    if !mkis.contains(&mki.to_vec()) {
                        mkis.push(mki.to_vec());
                    }
                    rx.unprotect(&mut pkt).unwrap();
                    rtcp_rx.unprotect_rtcp(&mut c).unwrap();
                }
                TrafficMode::Esp => {
                    let info = esp_rx.unprotect(&mut pkt).unwrap();
                    assert_eq!(info.next_header, ESP_NEXT_HEADER);
                    esp_rx.unprotect(&mut c).unwrap();
                }
            }
            assert_eq!(pkt, plain);
            assert_eq!(c, rtcp());
        }
        if let TrafficMode::Srtp(_) = mode {
            assert!(mkis.len() >= 3, "TEK switches, also to the next SEK: {}", mkis.len());
        }
    }

    #[test]
    fn srtp_rfc3711_round_trip_across_tek_and_sek_switches() {
        run(TrafficMode::Srtp(SrtpPolicy::rfc3711()));
    }

    #[test]
    fn srtp_rfc4771_round_trip() {
        run(TrafficMode::Srtp(SrtpPolicy::rcc(RccMode::Rccm2, NonZeroU16::new(4).unwrap())));
    }

    #[test]
    fn esp_round_trip() {
        run(TrafficMode::Esp);
    }

    #[test]
    fn no_key_no_packet() {
        let mut p = Protector::new(TrafficMode::Srtp(SrtpPolicy::rfc3711()), SeededRandom::new(1));
        assert!(matches!(p.protect_rtp(&mut rtp(1)), Err(ProtectError::NoKey)));
    }
}
