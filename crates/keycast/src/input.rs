//! Turning command-line text into bytes: hex and base64 arguments, keys of a fixed length, and
//! the message sources of `inspect`.

use std::fmt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use zeroize::Zeroizing;

use crate::pcap;

/// Bytes given in hex on the command line. Wiped on drop, because keys arrive this way.
#[derive(Clone, PartialEq, Eq)]
pub struct HexArg(Zeroizing<Vec<u8>>);

impl fmt::Debug for HexArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keys arrive as HexArg: print the length only.
        write!(f, "HexArg({} bytes)", self.0.len())
    }
}

impl HexArg {
    /// The bytes.
    #[must_use]
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The bytes as an array of exactly `N`, or an error naming the option.
    pub fn array<const N: usize>(&self, option: &str) -> Result<Zeroizing<[u8; N]>> {
        let mut out = Zeroizing::new([0u8; N]);
        if self.0.len() != N {
            bail!("{option} must be {N} bytes ({} hex digits), got {} bytes", 2 * N, self.0.len());
        }
        out.copy_from_slice(&self.0);
        Ok(out)
    }
}

/// Parses hex text: whitespace, `:` separators and a leading `0x` are allowed.
pub fn parse_hex(s: &str) -> Result<Vec<u8>> {
    let t = s.trim();
    let t = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")).unwrap_or(t);
    let digits: String = t.chars().filter(|c| !c.is_whitespace() && *c != ':').collect();
    if let Some((i, c)) = digits.char_indices().find(|(_, c)| !c.is_ascii_hexdigit()) {
        bail!("not hex: character {c:?} at position {i}");
    }
    if !digits.len().is_multiple_of(2) {
        bail!("odd number of hex digits ({})", digits.len());
    }
    hex::decode(&digits).context("not hex")
}

/// clap value parser for [`HexArg`].
pub fn hex_arg(s: &str) -> Result<HexArg, String> {
    parse_hex(s).map(|v| HexArg(Zeroizing::new(v))).map_err(|e| e.to_string())
}

/// Parses base64 text (standard alphabet, padding optional, whitespace ignored).
pub fn parse_base64(s: &str) -> Result<Vec<u8>> {
    let t: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    let padded = match t.len() % 4 {
        2 => format!("{t}=="),
        3 => format!("{t}="),
        _ => t,
    };
    BASE64.decode(padded.as_bytes()).context("not base64")
}

/// Where a message came from, for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Frame number in the capture (1-based).
    pub frame: u64,
    /// Source address.
    pub src: std::net::SocketAddr,
    /// Destination address.
    pub dst: std::net::SocketAddr,
}

/// One message to inspect.
#[derive(Debug, Clone)]
pub struct Source {
    /// The message bytes.
    pub bytes: Vec<u8>,
    /// Its place in a capture, when read from one.
    pub origin: Option<Origin>,
}

/// What `inspect` was given.
#[derive(Debug, Clone, Default)]
pub struct InputSpec {
    /// Positional argument: a file path, `-` for standard input, or hex / base64 text.
    pub positional: Option<String>,
    /// `--hex`.
    pub hex: Option<String>,
    /// `--base64`.
    pub base64: Option<String>,
    /// `--file`.
    pub file: Option<std::path::PathBuf>,
    /// `--pcap`.
    pub pcap: Option<std::path::PathBuf>,
    /// Extra UDP ports for pcap input (2269 and 4359 are always included).
    pub ports: Vec<u16>,
}

/// The messages to inspect, and whether they came from a capture.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Messages in order.
    pub sources: Vec<Source>,
    /// Capture statistics, when the input was a capture.
    pub capture: Option<CaptureInfo>,
}

/// What a capture held besides the messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureInfo {
    /// Frames in the file.
    pub frames: u64,
    /// Frames that were not IPv4/IPv6 UDP, or not on a MIKEY port.
    pub skipped: u64,
    /// Ports that were matched.
    pub ports: Vec<u16>,
}

impl InputSpec {
    /// Reads the input the user named.
    pub fn load(&self) -> Result<Loaded> {
        let given = [
            self.positional.is_some(),
            self.hex.is_some(),
            self.base64.is_some(),
            self.file.is_some(),
            self.pcap.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if given == 0 {
            bail!("no input: give hex, base64, a file or a capture (see `keycast inspect --help`)");
        }
        if given > 1 {
            bail!("give only one input (positional, --hex, --base64, --file or --pcap)");
        }
        let single = |bytes: Vec<u8>| Loaded { sources: vec![Source { bytes, origin: None }], capture: None };
        if let Some(h) = &self.hex {
            return parse_hex(h).map(single).context("--hex");
        }
        if let Some(b) = &self.base64 {
            return parse_base64(b).map(single).context("--base64");
        }
        if let Some(path) = &self.file {
            let data = read_file(path)?;
            if pcap::looks_like_capture(&data) {
                return self.capture(&data, path);
            }
            return Ok(single(data));
        }
        if let Some(path) = &self.pcap {
            let data = read_file(path)?;
            return self.capture(&data, path);
        }
        let arg = self.positional.as_deref().unwrap_or_default();
        if arg == "-" {
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut data).context("reading standard input")?;
            return self.by_content(data, Path::new("<stdin>")).map(|l| l.unwrap_or_else(single));
        }
        let path = Path::new(arg);
        if path.is_file() {
            let data = read_file(path)?;
            return self.by_content(data, path).map(|l| l.unwrap_or_else(single));
        }
        if let Ok(bytes) = parse_hex(arg) {
            return Ok(single(bytes));
        }
        match parse_base64(arg) {
            Ok(bytes) => Ok(single(bytes)),
            Err(_) => bail!("{arg:?} is neither an existing file, nor hex, nor base64"),
        }
    }

    /// A capture, hex text, base64 text or raw bytes, by content. `Err` holds raw bytes.
    fn by_content(&self, data: Vec<u8>, path: &Path) -> Result<Result<Loaded, Vec<u8>>> {
        if pcap::looks_like_capture(&data) {
            return self.capture(&data, path).map(Ok);
        }
        // A MIKEY message starts with version 1, which is not a printable character, so text
        // content is hex or base64.
        if let Ok(text) = std::str::from_utf8(&data)
            && !text.trim().is_empty()
            && data.first() != Some(&1)
            && let Some(bytes) = parse_hex(text).or_else(|_| parse_base64(text)).ok()
        {
            return Ok(Err(bytes));
        }
        Ok(Err(data))
    }

    fn capture(&self, data: &[u8], path: &Path) -> Result<Loaded> {
        let mut ports = vec![keycast_mikey::wire::UDP_PORT_MIKEY, keycast_mikey::wire::UDP_PORT_OMA_BCAST_LTKM];
        for p in &self.ports {
            if !ports.contains(p) {
                ports.push(*p);
            }
        }
        let cap = pcap::read_udp(data).with_context(|| format!("reading capture {}", path.display()))?;
        let mut sources = Vec::new();
        let mut skipped = cap.skipped;
        for d in cap.datagrams {
            if ports.contains(&d.src.port()) || ports.contains(&d.dst.port()) {
                sources
                    .push(Source { bytes: d.payload, origin: Some(Origin { frame: d.frame, src: d.src, dst: d.dst }) });
            } else {
                skipped += 1;
            }
        }
        if sources.is_empty() {
            let list: Vec<String> = ports.iter().map(u16::to_string).collect();
            bail!("{}: no UDP datagram on port {} in {} frames", path.display(), list.join(", "), cap.frames);
        }
        Ok(Loaded { sources, capture: Some(CaptureInfo { frames: cap.frames, skipped, ports }) })
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_allows_spaces_colons_and_prefix() {
        assert_eq!(parse_hex("0x01 02:03\n04").unwrap(), [1, 2, 3, 4]);
        assert!(parse_hex("012").is_err());
        assert!(parse_hex("zz").unwrap_err().to_string().contains("position 0"));
    }

    #[test]
    fn base64_padding_is_optional() {
        assert_eq!(parse_base64("AQID").unwrap(), [1, 2, 3]);
        assert_eq!(parse_base64("AQ").unwrap(), [1]);
    }

    #[test]
    fn hex_arg_checks_length() {
        let k = hex_arg("0011").unwrap();
        assert!(k.array::<2>("--x").is_ok());
        assert!(k.array::<16>("--sek").unwrap_err().to_string().contains("--sek must be 16 bytes"));
        assert_eq!(format!("{k:?}"), "HexArg(2 bytes)");
    }
}
