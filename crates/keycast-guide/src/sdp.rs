//! The few pieces of SDP (RFC 4566) the Smartcard Profile needs: the `m=` lines with their port
//! and payload formats, `c=` addresses, `a=rtpmap` and `a=key-mgmt:mikey` (RFC 4567 §3.1),
//! read and written.
//!
//! Everything else is kept as written so that a description survives a round trip: other
//! session and media lines (`i=`, `b=`, `k=`, ...) and other attributes. Lines end in CRLF when
//! written; LF alone is accepted when read, and blank lines are skipped **\[chosen\]**. Only the
//! `IN` network type is accepted **\[chosen\]**. `o=` and `t=` are optional when read **\[chosen,
//! lenient\]**; `v=0` and `s=` are required.

use crate::error::GuideError;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use std::fmt;

/// Largest SDP accepted, in octets **\[chosen\]**.
pub const MAX_SDP_LEN: usize = 64 * 1024;

/// A `c=` line: `IN <IP4|IP6> <address>[/<ttl>][/<count>]` (RFC 4566 §5.7).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Connection {
    /// `IP4` or `IP6` (other values are kept as written).
    pub addr_type: String,
    /// The address (without the `/ttl` and `/count` suffixes).
    pub address: String,
    /// TTL (IP4 multicast only).
    pub ttl: Option<u8>,
    /// Number of addresses (multicast).
    pub count: Option<u32>,
}

impl Connection {
    /// An IPv4 multicast group with a TTL.
    #[must_use]
    pub fn ip4_multicast(address: impl Into<String>, ttl: u8) -> Self {
        Connection { addr_type: "IP4".into(), address: address.into(), ttl: Some(ttl), count: None }
    }

    fn parse(v: &str, line: usize) -> Result<Self, GuideError> {
        let bad = |reason| GuideError::Sdp { line, reason };
        let mut it = v.split(' ');
        let (Some(net), Some(addr_type), Some(addr), None) = (it.next(), it.next(), it.next(), it.next()) else {
            return Err(bad("c= needs three fields"));
        };
        if net != "IN" {
            return Err(bad("c= network type is not IN"));
        }
        if addr_type.is_empty() || addr.is_empty() {
            return Err(bad("c= field is empty"));
        }
        let mut parts = addr.split('/');
        let address = parts.next().unwrap_or_default().to_owned();
        let nums: Vec<&str> = parts.collect();
        let num = |s: &str| s.parse::<u32>().map_err(|_| bad("c= suffix is not a number"));
        let (ttl, count) = match (addr_type, nums.as_slice()) {
            (_, []) => (None, None),
            ("IP4", [t]) => (Some(u8::try_from(num(t)?).map_err(|_| bad("c= TTL above 255"))?), None),
            ("IP4", [t, c]) => (Some(u8::try_from(num(t)?).map_err(|_| bad("c= TTL above 255"))?), Some(num(c)?)),
            (_, [c]) => (None, Some(num(c)?)),
            _ => return Err(bad("c= address has too many suffixes")),
        };
        if address.is_empty() {
            return Err(bad("c= address is empty"));
        }
        Ok(Connection { addr_type: addr_type.to_owned(), address, ttl, count })
    }
}

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IN {} {}", clean(&self.addr_type), clean(&self.address))?;
        match (self.ttl, self.count) {
            (Some(t), Some(c)) => write!(f, "/{t}/{c}"),
            (Some(t), None) => write!(f, "/{t}"),
            // A count without a TTL can only be written for IP6 (RFC 4566 §5.7).
            (None, Some(c)) => write!(f, "/{c}"),
            (None, None) => Ok(()),
        }
    }
}

/// An `a=rtpmap:<payload type> <encoding name>/<clock rate>[/<parameters>]` attribute.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RtpMap {
    /// Payload type (0–127).
    pub payload_type: u8,
    /// Encoding name, e.g. `H264`.
    pub encoding: String,
    /// Clock rate in Hz.
    pub clock_rate: u32,
    /// Encoding parameters (e.g. the channel count), as written.
    pub parameters: Option<String>,
}

impl RtpMap {
    fn parse(v: &str, line: usize) -> Result<Self, GuideError> {
        let bad = |reason| GuideError::Sdp { line, reason };
        let (pt, rest) = v.split_once(' ').ok_or(bad("rtpmap needs a payload type and an encoding"))?;
        let payload_type: u8 = pt.parse().map_err(|_| bad("rtpmap payload type is not a number"))?;
        if payload_type > 127 {
            return Err(bad("rtpmap payload type above 127"));
        }
        let mut parts = rest.splitn(3, '/');
        let encoding = parts.next().unwrap_or_default();
        let clock = parts.next().ok_or(bad("rtpmap needs a clock rate"))?;
        if encoding.is_empty() || encoding.contains(' ') {
            return Err(bad("rtpmap encoding name is empty or has a space"));
        }
        let clock_rate: u32 = clock.parse().map_err(|_| bad("rtpmap clock rate is not a number"))?;
        let parameters = parts.next().map(str::to_owned);
        if parameters.as_deref() == Some("") {
            return Err(bad("rtpmap parameters are empty"));
        }
        Ok(RtpMap { payload_type, encoding: encoding.to_owned(), clock_rate, parameters })
    }
}

impl fmt::Display for RtpMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.payload_type, clean(&self.encoding), self.clock_rate)?;
        if let Some(p) = &self.parameters {
            write!(f, "/{}", clean(p))?;
        }
        Ok(())
    }
}

/// One media description: the `m=` line and what follows it up to the next `m=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdpMedia {
    /// Media type (`video`, `audio`, `application`, ...).
    pub media: String,
    /// Transport port (for RTP, the RTP port: the one a Security Description `flowID` names).
    pub port: u16,
    /// Number of ports (`<port>/<count>`).
    pub port_count: Option<u16>,
    /// Transport protocol, e.g. `RTP/AVP`, `RTP/SAVP`, `UDP`.
    pub proto: String,
    /// Formats: RTP payload types, or other format strings.
    pub formats: Vec<String>,
    /// The media-level `c=` line.
    pub connection: Option<Connection>,
    /// `a=rtpmap` attributes.
    pub rtpmaps: Vec<RtpMap>,
    /// `a=key-mgmt:mikey` data, decoded from base64 (a MIKEY message).
    pub mikey: Option<Vec<u8>>,
    /// Other attributes (the text after `a=`), in order.
    pub attributes: Vec<String>,
    /// Other lines (`i=`, `b=`, `k=`), type and value, in order.
    pub other: Vec<(char, String)>,
}

impl SdpMedia {
    /// An RTP media description with one payload type and its `rtpmap`.
    #[must_use]
    pub fn rtp(media: &str, port: u16, proto: &str, payload_type: u8, encoding: &str, clock_rate: u32) -> Self {
        SdpMedia {
            media: media.to_owned(),
            port,
            port_count: None,
            proto: proto.to_owned(),
            formats: vec![payload_type.to_string()],
            connection: None,
            rtpmaps: vec![RtpMap { payload_type, encoding: encoding.to_owned(), clock_rate, parameters: None }],
            mikey: None,
            attributes: Vec::new(),
            other: Vec::new(),
        }
    }

    /// The RTP payload types among the formats.
    pub fn payload_types(&self) -> impl Iterator<Item = u8> + '_ {
        self.formats.iter().filter_map(|f| f.parse::<u8>().ok()).filter(|p| *p <= 127)
    }

    fn parse_m(v: &str, line: usize) -> Result<Self, GuideError> {
        let bad = |reason| GuideError::Sdp { line, reason };
        let mut it = v.split(' ');
        let (Some(media), Some(port), Some(proto)) = (it.next(), it.next(), it.next()) else {
            return Err(bad("m= needs media, port and protocol"));
        };
        let formats: Vec<String> = it.map(str::to_owned).collect();
        if media.is_empty() || proto.is_empty() || formats.is_empty() || formats.iter().any(String::is_empty) {
            return Err(bad("m= has an empty field or no format"));
        }
        let (port, port_count) = match port.split_once('/') {
            Some((p, c)) => (p, Some(c.parse::<u16>().map_err(|_| bad("m= port count is not a number"))?)),
            None => (port, None),
        };
        let port: u16 = port.parse().map_err(|_| bad("m= port is not a number"))?;
        Ok(SdpMedia {
            media: media.to_owned(),
            port,
            port_count,
            proto: proto.to_owned(),
            formats,
            connection: None,
            rtpmaps: Vec::new(),
            mikey: None,
            attributes: Vec::new(),
            other: Vec::new(),
        })
    }

    fn write(&self, out: &mut String) {
        out.push_str(&format!("m={} {}", clean(&self.media), self.port));
        if let Some(c) = self.port_count {
            out.push_str(&format!("/{c}"));
        }
        out.push_str(&format!(" {}", clean(&self.proto)));
        for f in &self.formats {
            out.push(' ');
            out.push_str(&clean(f));
        }
        out.push_str("\r\n");
        for (t, v) in self.other.iter().filter(|(t, _)| !m_rank_is_late(*t)) {
            line(out, *t, v);
        }
        if let Some(c) = &self.connection {
            line(out, 'c', &c.to_string());
        }
        for (t, v) in self.other.iter().filter(|(t, _)| m_rank_is_late(*t)) {
            line(out, *t, v);
        }
        write_attrs(out, &self.rtpmaps, self.mikey.as_deref(), &self.attributes);
    }
}

/// A session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sdp {
    /// `o=` as written.
    pub origin: Option<String>,
    /// `s=`.
    pub session_name: String,
    /// The session-level `c=` line.
    pub connection: Option<Connection>,
    /// `t=` as written (`0 0` for an unbounded session).
    pub timing: Option<String>,
    /// Session-level `a=key-mgmt:mikey`, decoded.
    pub mikey: Option<Vec<u8>>,
    /// Other session-level attributes (the text after `a=`), in order.
    pub attributes: Vec<String>,
    /// Other session-level lines (`i=`, `u=`, `e=`, `p=`, `b=`, `r=`, `z=`, `k=`), in order.
    pub other: Vec<(char, String)>,
    /// The media descriptions.
    pub media: Vec<SdpMedia>,
}

/// Where a session-level line goes: 0 before `c=` (`i u e p`), 1 between `c=` and `t=` (`b`),
/// 2 after `t=` (`r z k`).
fn session_rank(t: char) -> u8 {
    match t {
        'i' | 'u' | 'e' | 'p' => 0,
        'b' => 1,
        _ => 2,
    }
}

/// In a media description `i=` comes before `c=`, `b=` and `k=` after it.
fn m_rank_is_late(t: char) -> bool {
    t != 'i'
}

fn clean(s: &str) -> String {
    s.chars().filter(|c| *c != '\r' && *c != '\n').collect()
}

fn line(out: &mut String, t: char, v: &str) {
    out.push(t);
    out.push('=');
    out.push_str(&clean(v));
    out.push_str("\r\n");
}

fn write_attrs(out: &mut String, rtpmaps: &[RtpMap], mikey: Option<&[u8]>, attributes: &[String]) {
    for r in rtpmaps {
        line(out, 'a', &format!("rtpmap:{r}"));
    }
    if let Some(m) = mikey {
        line(out, 'a', &format!("key-mgmt:mikey {}", B64.encode(m)));
    }
    for a in attributes {
        line(out, 'a', a);
    }
}

/// What an `a=` line holds.
enum Attr {
    RtpMap(RtpMap),
    Mikey(Vec<u8>),
    Other(String),
}

fn parse_attr(v: &str, line: usize) -> Result<Attr, GuideError> {
    let bad = |reason| GuideError::Sdp { line, reason };
    if let Some(r) = v.strip_prefix("rtpmap:") {
        return Ok(Attr::RtpMap(RtpMap::parse(r, line)?));
    }
    // RFC 4567 §3.1: key-mgmt:<prtcl-id> <keymgmt-data>; only MIKEY is decoded.
    if let Some(k) = v.strip_prefix("key-mgmt:")
        && let Some(data) = k.strip_prefix("mikey ")
    {
        let bytes = B64.decode(data.trim().as_bytes()).map_err(|_| bad("key-mgmt:mikey data is not base64"))?;
        if bytes.is_empty() {
            return Err(bad("key-mgmt:mikey data is empty"));
        }
        return Ok(Attr::Mikey(bytes));
    }
    Ok(Attr::Other(v.to_owned()))
}

impl Sdp {
    /// A session with a name, an origin host address and a session-level connection, and no
    /// media yet (`t=0 0`).
    #[must_use]
    pub fn new_session(session_name: &str, origin_address: &str, session_id: u64, connection: Connection) -> Self {
        Sdp {
            origin: Some(format!("- {session_id} 1 IN {} {}", connection.addr_type, origin_address)),
            session_name: session_name.to_owned(),
            connection: Some(connection),
            timing: Some("0 0".into()),
            mikey: None,
            attributes: Vec::new(),
            other: Vec::new(),
            media: Vec::new(),
        }
    }

    /// The connection that applies to `media` (its own `c=` or the session's).
    #[must_use]
    pub fn connection_of<'a>(&'a self, media: &'a SdpMedia) -> Option<&'a Connection> {
        media.connection.as_ref().or(self.connection.as_ref())
    }

    /// The Security Description `flowID` of a media description: `<address>/<port>`
    /// (26.346 §11.3.1: the destination address and the RTP port).
    #[must_use]
    pub fn flow_id(&self, media: &SdpMedia) -> Option<String> {
        self.connection_of(media).map(|c| format!("{}/{}", c.address, media.port))
    }

    /// The MIKEY data that applies to `media` (its own `a=key-mgmt:mikey` or the session's).
    #[must_use]
    pub fn mikey_of<'a>(&'a self, media: &'a SdpMedia) -> Option<&'a [u8]> {
        media.mikey.as_deref().or(self.mikey.as_deref())
    }

    /// Parses a session description.
    ///
    /// # Errors
    /// [`GuideError::Sdp`] with the line number and the reason.
    pub fn parse(text: &str) -> Result<Self, GuideError> {
        if text.len() > MAX_SDP_LEN {
            return Err(GuideError::Sdp { line: 0, reason: "SDP larger than 64 KiB" });
        }
        let mut sdp = Sdp {
            origin: None,
            session_name: String::new(),
            connection: None,
            timing: None,
            mikey: None,
            attributes: Vec::new(),
            other: Vec::new(),
            media: Vec::new(),
        };
        let mut seen_v = false;
        let mut seen_s = false;
        for (i, raw) in text.split('\n').enumerate() {
            let n = i + 1;
            let bad = |reason| GuideError::Sdp { line: n, reason };
            let l = raw.strip_suffix('\r').unwrap_or(raw);
            if l.is_empty() {
                continue;
            }
            let mut chars = l.chars();
            let (Some(t), Some('=')) = (chars.next(), chars.next()) else {
                return Err(bad("line is not <type>=<value>"));
            };
            let v = chars.as_str();
            if v.chars().any(char::is_control) {
                return Err(bad("control character"));
            }
            if !seen_v {
                if t != 'v' || v != "0" {
                    return Err(bad("first line must be v=0"));
                }
                seen_v = true;
                continue;
            }
            match (t, sdp.media.last_mut()) {
                ('v', _) => return Err(bad("v= repeated")),
                ('m', _) => sdp.media.push(SdpMedia::parse_m(v, n)?),
                ('c', Some(m)) => {
                    if m.connection.replace(Connection::parse(v, n)?).is_some() {
                        return Err(bad("c= repeated in a media description"));
                    }
                }
                ('a', Some(m)) => match parse_attr(v, n)? {
                    Attr::RtpMap(r) => m.rtpmaps.push(r),
                    Attr::Mikey(k) => {
                        if m.mikey.replace(k).is_some() {
                            return Err(bad("key-mgmt:mikey repeated"));
                        }
                    }
                    Attr::Other(a) => m.attributes.push(a),
                },
                ('i' | 'b' | 'k', Some(m)) => m.other.push((t, v.to_owned())),
                (_, Some(_)) => return Err(bad("line type not allowed in a media description")),
                ('o', None) => {
                    if sdp.origin.replace(v.to_owned()).is_some() {
                        return Err(bad("o= repeated"));
                    }
                }
                ('s', None) => {
                    if seen_s {
                        return Err(bad("s= repeated"));
                    }
                    if v.is_empty() {
                        return Err(bad("s= is empty"));
                    }
                    seen_s = true;
                    sdp.session_name = v.to_owned();
                }
                ('c', None) => {
                    if sdp.connection.replace(Connection::parse(v, n)?).is_some() {
                        return Err(bad("c= repeated"));
                    }
                }
                ('t', None) => {
                    if sdp.timing.replace(v.to_owned()).is_some() {
                        return Err(bad("t= repeated"));
                    }
                }
                ('a', None) => match parse_attr(v, n)? {
                    // rtpmap belongs to a media description; at session level it is kept raw.
                    Attr::RtpMap(_) => sdp.attributes.push(v.to_owned()),
                    Attr::Mikey(k) => {
                        if sdp.mikey.replace(k).is_some() {
                            return Err(bad("key-mgmt:mikey repeated"));
                        }
                    }
                    Attr::Other(a) => sdp.attributes.push(a),
                },
                ('i' | 'u' | 'e' | 'p' | 'b' | 'r' | 'z' | 'k', None) => sdp.other.push((t, v.to_owned())),
                _ => return Err(bad("unknown line type")),
            }
        }
        if !seen_v {
            return Err(GuideError::Sdp { line: 0, reason: "empty SDP" });
        }
        if !seen_s {
            return Err(GuideError::Sdp { line: 0, reason: "s= is missing" });
        }
        // Keep the other lines in the order they are written (RFC 4566 §5 line order), so that
        // what is read once reads back the same after writing.
        sdp.other.sort_by_key(|(t, _)| session_rank(*t));
        for m in &mut sdp.media {
            m.other.sort_by_key(|(t, _)| u8::from(m_rank_is_late(*t)));
        }
        Ok(sdp)
    }

    /// Writes the session description (CRLF line ends).
    #[must_use]
    pub fn to_sdp(&self) -> String {
        let mut out = String::from("v=0\r\n");
        if let Some(o) = &self.origin {
            line(&mut out, 'o', o);
        }
        line(&mut out, 's', &self.session_name);
        let group = |g: u8| self.other.iter().filter(move |(t, _)| session_rank(*t) == g);
        for (t, v) in group(0) {
            line(&mut out, *t, v);
        }
        if let Some(c) = &self.connection {
            line(&mut out, 'c', &c.to_string());
        }
        for (t, v) in group(1) {
            line(&mut out, *t, v);
        }
        if let Some(t) = &self.timing {
            line(&mut out, 't', t);
        }
        for (t, v) in group(2) {
            line(&mut out, *t, v);
        }
        write_attrs(&mut out, &[], self.mikey.as_deref(), &self.attributes);
        for m in &self.media {
            m.write(&mut out);
        }
        out
    }
}

impl fmt::Display for Sdp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_sdp())
    }
}
