//! A small capture reader and writer, just enough for MIKEY over UDP.
//!
//! Reading: classic pcap (both byte orders, micro- and nanosecond magic) and pcapng (section
//! header, interface description, enhanced / simple / obsolete packet blocks); link types
//! Ethernet (1, with 802.1Q/802.1ad tags), Linux cooked SLL (113) and SLL2 (276), raw IP
//! (101, 228 IPv4, 229 IPv6, and the BSD values 12 and 14), BSD loopback null (0) and
//! OpenBSD loop (108); IPv4 and IPv6 (with extension headers); UDP only. Format sources: the
//! pcap and pcapng drafts of the IETF OPSAWG and the tcpdump.org link-type list.
//!
//! Writing: classic little-endian pcap, Ethernet + IPv4 + UDP with correct lengths and
//! checksums.
//!
//! Every length read from a file is checked before use: bad input is an error, never a panic.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};

/// Refuse single records larger than this; real snap lengths are at most 256 KiB.
const MAX_RECORD: usize = 1 << 20;

/// Link types this reader understands (tcpdump.org LINKTYPE_ values).
mod linktype {
    pub const NULL: u32 = 0;
    pub const ETHERNET: u32 = 1;
    pub const RAW_BSD: u32 = 12;
    pub const RAW_BSD_14: u32 = 14;
    pub const RAW: u32 = 101;
    pub const LOOP: u32 = 108;
    pub const LINUX_SLL: u32 = 113;
    pub const IPV4: u32 = 228;
    pub const IPV6: u32 = 229;
    pub const LINUX_SLL2: u32 = 276;
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const IPPROTO_UDP: u8 = 17;

/// Why a capture file could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcapError {
    /// Byte offset in the file.
    pub offset: usize,
    /// What is wrong.
    pub what: String,
}

impl fmt::Display for PcapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad capture at byte {}: {}", self.offset, self.what)
    }
}

impl std::error::Error for PcapError {}

fn err(offset: usize, what: impl Into<String>) -> PcapError {
    PcapError { offset, what: what.into() }
}

/// One UDP datagram found in a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpDatagram {
    /// Frame number (1-based, counting every packet record in the file).
    pub frame: u64,
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
    /// UDP payload.
    pub payload: Vec<u8>,
}

/// The UDP datagrams of a capture.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capture {
    /// Every UDP datagram, in file order.
    pub datagrams: Vec<UdpDatagram>,
    /// Number of packet records.
    pub frames: u64,
    /// Records that were not complete IPv4/IPv6 UDP (other protocols, fragments, truncation).
    pub skipped: u64,
}

/// Whether `data` starts with a pcap or pcapng magic number.
#[must_use]
pub fn looks_like_capture(data: &[u8]) -> bool {
    matches!(
        data.get(..4),
        Some(
            [0xd4, 0xc3, 0xb2, 0xa1]
                | [0xa1, 0xb2, 0xc3, 0xd4]
                | [0x4d, 0x3c, 0xb2, 0xa1]
                | [0xa1, 0xb2, 0x3c, 0x4d]
                | [0x0a, 0x0d, 0x0d, 0x0a]
        )
    )
}

/// Byte order of the file being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    Little,
    Big,
}

/// A bounds-checked view of the file.
struct File<'a> {
    data: &'a [u8],
    order: Order,
}

impl<'a> File<'a> {
    fn bytes(&self, at: usize, n: usize, what: &str) -> Result<&'a [u8], PcapError> {
        at.checked_add(n).and_then(|end| self.data.get(at..end)).ok_or_else(|| {
            err(at, format!("truncated {what}: needs {n} bytes, {} left", self.data.len().saturating_sub(at)))
        })
    }

    fn u16(&self, at: usize, what: &str) -> Result<u16, PcapError> {
        let b = self.bytes(at, 2, what)?;
        let a = [b[0], b[1]];
        Ok(match self.order {
            Order::Little => u16::from_le_bytes(a),
            Order::Big => u16::from_be_bytes(a),
        })
    }

    fn u32(&self, at: usize, what: &str) -> Result<u32, PcapError> {
        let b = self.bytes(at, 4, what)?;
        let a = [b[0], b[1], b[2], b[3]];
        Ok(match self.order {
            Order::Little => u32::from_le_bytes(a),
            Order::Big => u32::from_be_bytes(a),
        })
    }
}

/// Reads every UDP datagram of a pcap or pcapng file.
pub fn read_udp(data: &[u8]) -> Result<Capture, PcapError> {
    let magic = data
        .get(..4)
        .ok_or_else(|| err(0, format!("file of {} bytes is too short for a capture header", data.len())))?;
    match magic {
        [0x0a, 0x0d, 0x0d, 0x0a] => read_pcapng(data),
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => read_pcap(File { data, order: Order::Little }),
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => read_pcap(File { data, order: Order::Big }),
        other => Err(err(0, format!("not a pcap or pcapng file (magic {})", hex::encode(other)))),
    }
}

fn read_pcap(f: File<'_>) -> Result<Capture, PcapError> {
    let major = f.u16(4, "file header")?;
    if major != 2 {
        return Err(err(4, format!("pcap major version {major}, expected 2")));
    }
    // The upper bits of the link-type field carry FCS information; the type is the low 16 bits.
    let link = f.u32(20, "file header")? & 0xffff;
    let mut cap = Capture::default();
    let mut at = 24;
    while at < f.data.len() {
        let incl = f.u32(at + 8, "record header")? as usize;
        if incl > MAX_RECORD {
            return Err(err(at + 8, format!("record of frame {} claims {incl} bytes", cap.frames + 1)));
        }
        let packet = f.bytes(at + 16, incl, &format!("record of frame {}", cap.frames + 1))?;
        cap.frames += 1;
        add_frame(&mut cap, link, packet);
        at += 16 + incl;
    }
    Ok(cap)
}

fn read_pcapng(data: &[u8]) -> Result<Capture, PcapError> {
    const SHB: u32 = 0x0a0d_0d0a;
    const IDB: u32 = 1;
    const OPB: u32 = 2;
    const SPB: u32 = 3;
    const EPB: u32 = 6;
    let mut f = File { data, order: Order::Little };
    let mut cap = Capture::default();
    let mut links: Vec<u32> = Vec::new();
    let mut at = 0;
    while at < data.len() {
        // The section header's byte-order magic decides how every later block is read.
        let block_type = f.u32(at, "block header")?;
        if block_type == SHB {
            f.order = match f.bytes(at + 8, 4, "section header")? {
                [0x4d, 0x3c, 0x2b, 0x1a] => Order::Little,
                [0x1a, 0x2b, 0x3c, 0x4d] => Order::Big,
                other => return Err(err(at + 8, format!("bad byte-order magic {}", hex::encode(other)))),
            };
            links.clear();
        } else if at == 0 {
            return Err(err(0, "pcapng file does not start with a section header block"));
        }
        let len = f.u32(at + 4, "block header")? as usize;
        if len < 12 || !len.is_multiple_of(4) || len > MAX_RECORD {
            return Err(err(at + 4, format!("bad block length {len}")));
        }
        let body = f.bytes(at + 8, len - 12, "block")?;
        let trailer = f.u32(at + len - 4, "block trailer")? as usize;
        if trailer != len {
            return Err(err(at + len - 4, format!("block length {len} and trailing length {trailer} differ")));
        }
        let bf = File { data: body, order: f.order };
        let packet = |iface: usize, off: usize, caplen: usize, cap: &mut Capture| -> Result<(), PcapError> {
            let link = *links
                .get(iface)
                .ok_or_else(|| err(at + 8, format!("packet names interface {iface}, which was not described")))?;
            let bytes = bf.bytes(off, caplen, "packet data").map_err(|e| err(at + 8 + e.offset, e.what))?;
            cap.frames += 1;
            add_frame(cap, link, bytes);
            Ok(())
        };
        let shift = |e: PcapError| err(at + 8 + e.offset, e.what);
        match block_type {
            IDB => links.push(u32::from(bf.u16(0, "interface description").map_err(shift)?)),
            EPB => {
                let iface = bf.u32(0, "enhanced packet").map_err(shift)? as usize;
                let caplen = bf.u32(12, "enhanced packet").map_err(shift)? as usize;
                packet(iface, 20, caplen, &mut cap)?;
            }
            OPB => {
                let iface = usize::from(bf.u16(0, "packet block").map_err(shift)?);
                let caplen = bf.u32(12, "packet block").map_err(shift)? as usize;
                packet(iface, 20, caplen, &mut cap)?;
            }
            SPB => {
                let orig = bf.u32(0, "simple packet").map_err(shift)? as usize;
                let caplen = orig.min(body.len().saturating_sub(4));
                packet(0, 4, caplen, &mut cap)?;
            }
            // Name resolution, statistics, custom and unknown blocks carry no packets.
            _ => {}
        }
        at += len;
    }
    Ok(cap)
}

fn add_frame(cap: &mut Capture, link: u32, packet: &[u8]) {
    match decode_frame(link, packet) {
        Some((src, dst, payload)) => {
            cap.datagrams.push(UdpDatagram { frame: cap.frames, src, dst, payload: payload.to_vec() });
        }
        None => cap.skipped += 1,
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// The UDP datagram inside one link-layer frame, if it is one.
fn decode_frame(link: u32, p: &[u8]) -> Option<(SocketAddr, SocketAddr, &[u8])> {
    let (ethertype, ip) = match link {
        linktype::ETHERNET => {
            let mut off = 12;
            let mut ty = be16(p, off)?;
            while ty == ETHERTYPE_VLAN || ty == ETHERTYPE_QINQ {
                off += 4;
                ty = be16(p, off)?;
            }
            (ty, p.get(off + 2..)?)
        }
        linktype::LINUX_SLL => (be16(p, 14)?, p.get(16..)?),
        linktype::LINUX_SLL2 => (be16(p, 0)?, p.get(20..)?),
        linktype::RAW | linktype::RAW_BSD | linktype::RAW_BSD_14 => match p.first()? >> 4 {
            4 => (ETHERTYPE_IPV4, p),
            6 => (ETHERTYPE_IPV6, p),
            _ => return None,
        },
        linktype::IPV4 => (ETHERTYPE_IPV4, p),
        linktype::IPV6 => (ETHERTYPE_IPV6, p),
        linktype::NULL | linktype::LOOP => {
            let fam = p.get(..4)?;
            // NULL stores the address family in the capturing host's byte order, LOOP in
            // network order; AF_INET is 2 everywhere, AF_INET6 is 10, 24, 28 or 30.
            let v = if fam[0] == 0 && fam[1] == 0 {
                u32::from_be_bytes([fam[0], fam[1], fam[2], fam[3]])
            } else {
                u32::from_le_bytes([fam[0], fam[1], fam[2], fam[3]])
            };
            let ty = match v {
                2 => ETHERTYPE_IPV4,
                10 | 24 | 28 | 30 => ETHERTYPE_IPV6,
                _ => return None,
            };
            (ty, p.get(4..)?)
        }
        _ => return None,
    };
    match ethertype {
        ETHERTYPE_IPV4 => ipv4_udp(ip),
        ETHERTYPE_IPV6 => ipv6_udp(ip),
        _ => None,
    }
}

fn ipv4_udp(ip: &[u8]) -> Option<(SocketAddr, SocketAddr, &[u8])> {
    let vihl = *ip.first()?;
    if vihl >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(vihl & 0x0f) * 4;
    let total = usize::from(be16(ip, 2)?);
    let frag = be16(ip, 6)?;
    // Fragments other than a complete datagram are skipped (MIKEY messages fit one datagram).
    if frag & 0x3fff != 0 || *ip.get(9)? != IPPROTO_UDP || ihl < 20 || total < ihl {
        return None;
    }
    let src = Ipv4Addr::new(*ip.get(12)?, *ip.get(13)?, *ip.get(14)?, *ip.get(15)?);
    let dst = Ipv4Addr::new(*ip.get(16)?, *ip.get(17)?, *ip.get(18)?, *ip.get(19)?);
    udp(ip.get(ihl..total)?, src.into(), dst.into())
}

fn ipv6_udp(ip: &[u8]) -> Option<(SocketAddr, SocketAddr, &[u8])> {
    if ip.first()? >> 4 != 6 {
        return None;
    }
    let payload_len = usize::from(be16(ip, 4)?);
    let addr = |at: usize| -> Option<Ipv6Addr> {
        let b: [u8; 16] = ip.get(at..at + 16)?.try_into().ok()?;
        Some(Ipv6Addr::from(b))
    };
    let (src, dst) = (addr(8)?, addr(24)?);
    let mut next = *ip.get(6)?;
    let mut rest = ip.get(40..40 + payload_len)?;
    // Walk hop-by-hop, routing and destination options headers; a fragment header ends the walk.
    loop {
        match next {
            IPPROTO_UDP => return udp(rest, src.into(), dst.into()),
            0 | 43 | 60 => {
                let len = (usize::from(*rest.get(1)?) + 1) * 8;
                next = *rest.first()?;
                rest = rest.get(len..)?;
            }
            _ => return None,
        }
    }
}

fn udp(seg: &[u8], src: IpAddr, dst: IpAddr) -> Option<(SocketAddr, SocketAddr, &[u8])> {
    let sport = be16(seg, 0)?;
    let dport = be16(seg, 2)?;
    let len = usize::from(be16(seg, 4)?);
    if len < 8 {
        return None;
    }
    // A payload cut by the snap length is skipped rather than decoded as a short message.
    let payload = seg.get(8..len)?;
    Some((SocketAddr::new(src, sport), SocketAddr::new(dst, dport), payload))
}

/// Writes a classic little-endian pcap with Ethernet + IPv4 + UDP frames.
#[derive(Debug, Clone)]
pub struct PcapWriter {
    buf: Vec<u8>,
    ip_id: u16,
}

impl Default for PcapWriter {
    fn default() -> Self {
        Self::new()
    }
}

/// One's-complement sum of 16-bit words (RFC 1071).
fn ones_complement_sum(mut acc: u32, data: &[u8]) -> u32 {
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], chunk.get(1).copied().unwrap_or(0)]);
        acc += u32::from(word);
    }
    acc
}

fn fold_checksum(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

impl PcapWriter {
    /// Starts a capture: magic a1b2c3d4 (microseconds), version 2.4, snap length 65535,
    /// link type Ethernet.
    #[must_use]
    pub fn new() -> Self {
        let mut buf = Vec::with_capacity(1024);
        buf.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        buf.extend_from_slice(&2u16.to_le_bytes());
        buf.extend_from_slice(&4u16.to_le_bytes());
        buf.extend_from_slice(&0i32.to_le_bytes());
        buf.extend_from_slice(&0u32.to_le_bytes());
        buf.extend_from_slice(&65535u32.to_le_bytes());
        buf.extend_from_slice(&linktype::ETHERNET.to_le_bytes());
        Self { buf, ip_id: 1 }
    }

    /// Appends one UDP datagram at time `ts_sec`.`ts_usec`.
    pub fn add_udp(
        &mut self,
        ts_sec: u32,
        ts_usec: u32,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        payload: &[u8],
    ) -> Result<(), PcapError> {
        let udp_len = 8 + payload.len();
        let ip_len = 20 + udp_len;
        if ip_len > 0xffff {
            return Err(err(
                self.buf.len(),
                format!("UDP payload of {} bytes does not fit one IPv4 datagram", payload.len()),
            ));
        }
        let mut frame = Vec::with_capacity(14 + ip_len);
        // Locally administered MAC addresses.
        frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01]);
        frame.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let mut ip = Vec::with_capacity(20);
        ip.extend_from_slice(&[0x45, 0]);
        ip.extend_from_slice(&(ip_len as u16).to_be_bytes());
        ip.extend_from_slice(&self.ip_id.to_be_bytes());
        ip.extend_from_slice(&[0x40, 0, 64, IPPROTO_UDP, 0, 0]);
        ip.extend_from_slice(&src.ip().octets());
        ip.extend_from_slice(&dst.ip().octets());
        let sum = fold_checksum(ones_complement_sum(0, &ip));
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        frame.extend_from_slice(&ip);
        let mut udp = Vec::with_capacity(udp_len);
        udp.extend_from_slice(&src.port().to_be_bytes());
        udp.extend_from_slice(&dst.port().to_be_bytes());
        udp.extend_from_slice(&(udp_len as u16).to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        udp.extend_from_slice(payload);
        // UDP checksum over the IPv4 pseudo-header (RFC 768); 0 is sent as 0xffff.
        let mut pseudo = Vec::with_capacity(12);
        pseudo.extend_from_slice(&src.ip().octets());
        pseudo.extend_from_slice(&dst.ip().octets());
        pseudo.extend_from_slice(&[0, IPPROTO_UDP]);
        pseudo.extend_from_slice(&(udp_len as u16).to_be_bytes());
        let sum = match fold_checksum(ones_complement_sum(ones_complement_sum(0, &pseudo), &udp)) {
            0 => 0xffff,
            s => s,
        };
        udp[6..8].copy_from_slice(&sum.to_be_bytes());
        frame.extend_from_slice(&udp);
        self.buf.extend_from_slice(&ts_sec.to_le_bytes());
        self.buf.extend_from_slice(&ts_usec.to_le_bytes());
        self.buf.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(&frame);
        self.ip_id = self.ip_id.wrapping_add(1);
        Ok(())
    }

    /// The file bytes.
    #[must_use]
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    #[test]
    fn written_capture_reads_back() {
        let mut w = PcapWriter::new();
        w.add_udp(1, 2, addr("127.0.0.1:40000"), addr("127.0.0.1:2269"), b"abc").unwrap();
        w.add_udp(1, 3, addr("10.0.0.1:4359"), addr("10.0.0.2:5000"), b"").unwrap();
        let cap = read_udp(&w.finish()).unwrap();
        assert_eq!(cap.frames, 2);
        assert_eq!(cap.datagrams.len(), 2);
        assert_eq!(cap.datagrams[0].payload, b"abc");
        assert_eq!(cap.datagrams[0].dst.port(), 2269);
        assert_eq!(cap.datagrams[1].frame, 2);
        assert_eq!(cap.datagrams[1].src, "10.0.0.1:4359".parse().unwrap());
    }

    #[test]
    fn ip_and_udp_checksums_verify() {
        let mut w = PcapWriter::new();
        w.add_udp(0, 0, addr("192.0.2.1:1234"), addr("192.0.2.2:2269"), b"hello").unwrap();
        let file = w.finish();
        let ip = &file[24 + 16 + 14..];
        assert_eq!(fold_checksum(ones_complement_sum(0, &ip[..20])), 0);
        let udp = &ip[20..];
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&ip[12..20]);
        pseudo.extend_from_slice(&[0, 17, 0, udp.len() as u8]);
        assert_eq!(fold_checksum(ones_complement_sum(ones_complement_sum(0, &pseudo), udp)), 0);
    }

    #[test]
    fn big_endian_raw_ipv6() {
        let mut f = Vec::new();
        f.extend_from_slice(&[0xa1, 0xb2, 0xc3, 0xd4, 0, 2, 0, 4]);
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&65535u32.to_be_bytes());
        f.extend_from_slice(&229u32.to_be_bytes());
        let mut ip = vec![0x60, 0, 0, 0, 0, 10, 17, 64];
        ip.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        ip.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        ip.extend_from_slice(&[0x9c, 0x40, 0x08, 0xdd, 0, 10, 0, 0, 0xaa, 0xbb]);
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&(ip.len() as u32).to_be_bytes());
        f.extend_from_slice(&(ip.len() as u32).to_be_bytes());
        f.extend_from_slice(&ip);
        let cap = read_udp(&f).unwrap();
        assert_eq!(cap.datagrams[0].payload, [0xaa, 0xbb]);
        assert_eq!(cap.datagrams[0].dst, "[::1]:2269".parse().unwrap());
    }

    #[test]
    fn pcapng_with_sll_and_null_loopback() {
        fn block(ty: u32, body: &[u8]) -> Vec<u8> {
            let mut body = body.to_vec();
            while !body.len().is_multiple_of(4) {
                body.push(0);
            }
            let len = (body.len() + 12) as u32;
            let mut b = ty.to_le_bytes().to_vec();
            b.extend_from_slice(&len.to_le_bytes());
            b.extend_from_slice(&body);
            b.extend_from_slice(&len.to_le_bytes());
            b
        }
        let mut w = PcapWriter::new();
        w.add_udp(0, 0, addr("10.0.0.1:1"), addr("10.0.0.2:2269"), b"xy").unwrap();
        let eth = w.finish()[24 + 16..].to_vec();
        let ip = &eth[14..];
        let mut shb = 0x1a2b_3c4du32.to_le_bytes().to_vec();
        shb.extend_from_slice(&[1, 0, 0, 0]);
        shb.extend_from_slice(&u64::MAX.to_le_bytes());
        let mut f = block(0x0a0d_0d0a, &shb);
        f.extend(block(1, &[113, 0, 0, 0, 0, 0, 0, 0]));
        f.extend(block(1, &[0, 0, 0, 0, 0, 0, 0, 0]));
        let mut sll = vec![0u8; 14];
        sll.extend_from_slice(&[0x08, 0x00]);
        sll.extend_from_slice(ip);
        let epb = |iface: u32, data: &[u8]| {
            let mut b = iface.to_le_bytes().to_vec();
            b.extend_from_slice(&[0; 8]);
            b.extend_from_slice(&(data.len() as u32).to_le_bytes());
            b.extend_from_slice(&(data.len() as u32).to_le_bytes());
            b.extend_from_slice(data);
            block(6, &b)
        };
        f.extend(epb(0, &sll));
        let mut null = 2u32.to_le_bytes().to_vec();
        null.extend_from_slice(ip);
        f.extend(epb(1, &null));
        let cap = read_udp(&f).unwrap();
        assert_eq!(cap.frames, 2);
        assert!(cap.datagrams.iter().all(|d| d.payload == b"xy"));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(read_udp(b"").unwrap_err().what.contains("too short"));
        assert!(read_udp(b"hello world").unwrap_err().what.contains("not a pcap"));
        let mut w = PcapWriter::new();
        w.add_udp(0, 0, addr("10.0.0.1:1"), addr("10.0.0.2:2269"), b"abcdef").unwrap();
        let file = w.finish();
        for cut in 0..file.len() {
            let _ = read_udp(&file[..cut]);
        }
        let e = read_udp(&file[..file.len() - 1]).unwrap_err();
        assert!(e.what.contains("truncated record of frame 1"), "{e}");
        // Every single-byte corruption is handled.
        for i in 0..file.len() {
            let mut bad = file.clone();
            bad[i] ^= 0xff;
            let _ = read_udp(&bad);
        }
    }
}
