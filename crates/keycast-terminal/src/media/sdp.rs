//! The SDP (RFC 8866) that describes the clear stream the watcher forwards, so that an ordinary
//! player opens it: `ffplay -protocol_whitelist file,udp,rtp -i watch.sdp`, `vlc watch.sdp`, or
//! GStreamer's `sdpdemux`.
//!
//! ```text
//! v=0
//! o=- 0 0 IN IP4 127.0.0.1
//! s=Keycast watch
//! c=IN IP4 127.0.0.1
//! t=0 0
//! m=video 5006 RTP/AVP 96
//! a=rtpmap:96 H264/90000
//! a=recvonly
//! ```
//!
//! RTCP goes to the next port up, the RFC 3550 §11 default, so no `a=rtcp` line is written.

use std::fmt;
use std::net::SocketAddr;

/// What the player needs to know about the clear stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClearStream {
    /// Where the clear RTP goes (RTCP: port + 1).
    pub rtp_out: SocketAddr,
    /// Media type of the `m=` line: `video`, `audio`, `application`, …
    pub media: String,
    /// RTP payload type (0–127).
    pub payload_type: u8,
    /// `encoding/clock[/channels]` for `a=rtpmap` (needed for dynamic payload types ≥ 96).
    pub rtpmap: Option<String>,
    /// Format parameters for `a=fmtp`, if any.
    pub fmtp: Option<String>,
}

impl fmt::Display for ClearStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ip = self.rtp_out.ip();
        let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
        let pt = self.payload_type & 0x7f;
        // SDP lines end in CRLF (RFC 8866 §5).
        write!(f, "v=0\r\no=- 0 0 IN {family} {ip}\r\ns=Keycast watch\r\nc=IN {family} {ip}\r\nt=0 0\r\n")?;
        write!(f, "m={} {} RTP/AVP {pt}\r\n", self.media, self.rtp_out.port())?;
        if let Some(map) = &self.rtpmap {
            write!(f, "a=rtpmap:{pt} {map}\r\n")?;
        }
        if let Some(fmtp) = &self.fmtp {
            write!(f, "a=fmtp:{pt} {fmtp}\r\n")?;
        }
        f.write_str("a=recvonly\r\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_the_clear_stream() {
        let s = ClearStream {
            rtp_out: "127.0.0.1:5006".parse().unwrap(),
            media: "video".into(),
            payload_type: 96,
            rtpmap: Some("H264/90000".into()),
            fmtp: Some("packetization-mode=1".into()),
        };
        assert_eq!(
            s.to_string(),
            "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=Keycast watch\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=video 5006 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\na=recvonly\r\n"
        );
    }

    #[test]
    fn static_payload_type_needs_no_rtpmap() {
        let s = ClearStream {
            rtp_out: "[::1]:7000".parse().unwrap(),
            media: "audio".into(),
            payload_type: 14,
            rtpmap: None,
            fmtp: None,
        };
        let text = s.to_string();
        assert!(text.contains("c=IN IP6 ::1\r\n"));
        assert!(text.contains("m=audio 7000 RTP/AVP 14\r\n"));
        assert!(!text.contains("rtpmap"));
    }
}
