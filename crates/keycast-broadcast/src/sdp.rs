//! The session description the broadcaster writes for its stream (RFC 4566).
//!
//! The media line says `RTP/SAVP` for SRTP (RFC 3711 §12) and `RTP/AVP` for ESP (the transform
//! sits below RTP). No `a=crypto` line: keys come from STKMs (MIKEY, UDP port 2269 on the same
//! address, profile P-8), and the session information line `i=` says so \[chosen\]. A player of
//! the terminal's clear output uses the same description with `RTP/AVP`
//! ([`SessionDescription::clear`]).

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

/// What the description names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    /// `s=`.
    pub session_name: String,
    /// The sender's address for `o=`.
    pub origin: IpAddr,
    /// The RTP destination (`c=` and the `m=` port; RTCP on port + 1).
    pub destination: SocketAddr,
    /// Multicast TTL for `c=` (IPv4 multicast only).
    pub ttl: u8,
    /// Media type of `m=` (`video`, `audio`).
    pub media: String,
    /// RTP payload type.
    pub payload_type: u8,
    /// `a=rtpmap` encoding, e.g. `H264/90000`.
    pub rtpmap: String,
    /// `a=fmtp` parameters, if any.
    pub fmtp: Option<String>,
    /// The STKM port (2269 by P-8).
    pub stkm_port: u16,
    /// Whether the media is SRTP (`RTP/SAVP`) rather than ESP-protected RTP.
    pub srtp: bool,
}

impl SessionDescription {
    /// The description of the protected stream.
    #[must_use]
    pub fn protected(&self) -> String {
        self.render(if self.srtp { "RTP/SAVP" } else { "RTP/AVP" }, true)
    }

    /// The description a player uses for the clear RTP a terminal puts out.
    #[must_use]
    pub fn clear(&self) -> String {
        self.render("RTP/AVP", false)
    }

    fn render(&self, proto: &str, protected: bool) -> String {
        let family = if self.destination.is_ipv4() { "IP4" } else { "IP6" };
        let origin_family = if self.origin.is_ipv4() { "IP4" } else { "IP6" };
        let ip = self.destination.ip();
        let conn = match ip {
            IpAddr::V4(v4) if v4.is_multicast() => format!("{ip}/{}", self.ttl),
            _ => ip.to_string(),
        };
        let mut s = String::new();
        let _ = write!(s, "v=0\r\no=- 0 0 IN {origin_family} {}\r\n", self.origin);
        let _ = write!(s, "s={}\r\n", self.session_name);
        if protected {
            let _ = write!(
                s,
                "i=keys in MIKEY STKMs (OMA BCAST Smartcard Profile) on UDP port {}; MKI = SEK/PEK ID || TEK ID\r\n",
                self.stkm_port
            );
        }
        let _ = write!(s, "c=IN {family} {conn}\r\nt=0 0\r\n");
        let _ = write!(s, "m={} {} {proto} {}\r\n", self.media, self.destination.port(), self.payload_type);
        let _ = write!(s, "a=rtpmap:{} {}\r\n", self.payload_type, self.rtpmap);
        if let Some(f) = &self.fmtp {
            let _ = write!(s, "a=fmtp:{} {f}\r\n", self.payload_type);
        }
        let _ = write!(s, "a=recvonly\r\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protected_and_clear() {
        let d = SessionDescription {
            session_name: "News".into(),
            origin: "127.0.0.1".parse().unwrap(),
            destination: "239.1.2.3:5004".parse().unwrap(),
            ttl: 16,
            media: "video".into(),
            payload_type: 96,
            rtpmap: "H264/90000".into(),
            fmtp: Some("packetization-mode=1".into()),
            stkm_port: 2269,
            srtp: true,
        };
        let p = d.protected();
        assert!(p.starts_with("v=0\r\n"));
        assert!(p.contains("c=IN IP4 239.1.2.3/16\r\n"), "{p}");
        assert!(p.contains("m=video 5004 RTP/SAVP 96\r\n"), "{p}");
        assert!(p.contains("a=rtpmap:96 H264/90000\r\n"));
        assert!(p.contains("a=fmtp:96 packetization-mode=1\r\n"));
        assert!(!p.contains("a=crypto"));
        assert!(p.contains("UDP port 2269"));
        let c = d.clear();
        assert!(c.contains("m=video 5004 RTP/AVP 96\r\n") && !c.contains("i="), "{c}");
    }
}
