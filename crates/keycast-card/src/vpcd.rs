//! The virtual-card side of the vsmartcard "vpcd" protocol, so that any [`Transport`] (the
//! emulator, in practice) appears as a card in a PC/SC reader and can be driven by `pcsc_scan`,
//! `opensc-tool` or Keycast's own `PcscCard`.
//!
//! The vpcd reader driver (Debian `vsmartcard-vpcd`) is loaded by pcscd and listens on TCP port
//! 35963 (`/etc/reader.conf.d/vpcd`: `DEVICENAME /dev/null:0x8C7B`). A virtual card connects to it
//! and then answers what the driver sends. Every message in both directions is a 2-byte
//! big-endian length followed by that many bytes:
//!
//! | vpcd sends               | meaning   | the card answers                        |
//! |--------------------------|-----------|-----------------------------------------|
//! | `00 01` `00`             | power off | nothing                                 |
//! | `00 01` `01`             | power on  | nothing                                 |
//! | `00 01` `02`             | reset     | nothing                                 |
//! | `00 01` `04`             | get ATR   | `len` ‖ ATR                             |
//! | `len` ‖ command APDU     | APDU      | `len` ‖ response APDU (data ‖ SW1 SW2)  |
//!
//! This is the framing of `VirtualICC` in vsmartcard's `virtualsmartcard/VirtualSmartcard.py`
//! and of `vicc_transmit`/`vicc_getatr` in `vpcd/vpcd.c`. The driver asks for the ATR every time
//! pcscd polls for card presence, and it drops the connection (the card is "removed") when an
//! answer is empty, so an answer here is never empty.
//!
//! This module is part of the shell around the card, not its core: it does blocking socket IO
//! on the caller's thread and returns when the reader closes the connection or `stop` is set.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::card::Transport;

/// Where the vpcd driver listens by default (vsmartcard's `VPCDPORT`, on the local host).
pub const DEFAULT_VPCD_ADDR: &str = "127.0.0.1:35963";

/// A USIM-like ATR: direct convention, TA1 = 96 (Fi 512, Di 32), T=0, global interface bytes
/// (T=15) with TA3 = C7 (classes A, B and C, clock stop allowed), 15 historical bytes in
/// compact-TLV (category 80; card service data 31 E0; card capabilities 73 FE 21 13; issuer's
/// data 57 …) and the check byte TCK.
pub const DEFAULT_ATR: &[u8] = &[
    0x3B, 0x9F, 0x96, 0x80, 0x1F, 0xC7, 0x80, 0x31, 0xE0, 0x73, 0xFE, 0x21, 0x13, 0x57, 0x86, 0x81, 0x02, 0x86, 0x98,
    0x44, 0x18, 0xAF,
];

/// Control codes of the vpcd protocol (one-byte messages).
const CTRL_POWER_OFF: u8 = 0x00;
const CTRL_POWER_ON: u8 = 0x01;
const CTRL_RESET: u8 = 0x02;
const CTRL_GET_ATR: u8 = 0x04;

/// Answer to a command APDU that the transport failed to carry: '6F00', no precise diagnosis.
/// vpcd treats an empty answer as a removed card, so something must be sent.
const SW_NO_DIAGNOSIS: [u8; 2] = [0x6F, 0x00];

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How often a blocked read wakes up to look at the stop flag.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Why [`serve_vpcd`] returned without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum VpcdExit {
    /// The reader closed the connection (pcscd stopped, or the driver ejected the card).
    Closed,
    /// The caller set the stop flag.
    Stopped,
}

/// The connection to the vpcd reader failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VpcdError {
    /// The address did not resolve, or nothing accepted the connection.
    #[error("cannot connect to vpcd at {addr}")]
    Connect {
        /// The address as given.
        addr: String,
        /// The last error seen.
        source: io::Error,
    },
    /// Reading from or writing to the connection failed.
    #[error("vpcd connection: {0}")]
    Io(#[from] io::Error),
    /// The caller's ATR cannot be sent (empty, or longer than a vpcd message).
    #[error("invalid ATR: {0}")]
    InvalidAtr(&'static str),
}

/// Connects to the vpcd reader at `addr` (`host:port`, see [`DEFAULT_VPCD_ADDR`]) and serves
/// `card` until the reader closes the connection or `stop` is set.
///
/// Same as [`serve_vpcd_with`] without a callback.
pub fn serve_vpcd<T: Transport>(
    card: &mut T,
    addr: &str,
    atr: &[u8],
    stop: &AtomicBool,
) -> Result<VpcdExit, VpcdError> {
    serve_vpcd_with(card, addr, atr, stop, |_| {})
}

/// Connects to the vpcd reader at `addr` and serves `card` until the reader closes the
/// connection or `stop` is set; `after_apdu` runs after the card processed each command APDU and
/// before its answer is sent (the place to save a card file, so no answer outruns its state).
///
/// The card sees only command APDUs. Power on, power off and reset are acknowledged by the
/// protocol's silence and do not reach `card`; a card whose state depends on them must be
/// reset by the caller. When `card.transmit` fails, the reader gets '6F00'.
///
/// Reconnecting is the caller's choice: this function makes one connection. It returns
/// `Ok(VpcdExit::Closed)` when the reader goes away (pcscd restarted, or the driver dropped the
/// card), and `Err(VpcdError::Connect)` when no reader listens; a long-running shell loops,
/// waiting a second or so between attempts, until it is told to stop. `stop` is checked at
/// least every 50 ms.
pub fn serve_vpcd_with<T, F>(
    card: &mut T,
    addr: &str,
    atr: &[u8],
    stop: &AtomicBool,
    mut after_apdu: F,
) -> Result<VpcdExit, VpcdError>
where
    T: Transport,
    F: FnMut(&mut T),
{
    if atr.is_empty() {
        return Err(VpcdError::InvalidAtr("empty (vpcd would take the card as removed)"));
    }
    if atr.len() > usize::from(u16::MAX) {
        return Err(VpcdError::InvalidAtr("longer than a vpcd message"));
    }
    let mut stream = connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(POLL_INTERVAL))?;
    let mut message = Vec::new();
    loop {
        let mut len = [0u8; 2];
        match read_full(&mut stream, &mut len, stop, true)? {
            ReadOutcome::Done => {}
            ReadOutcome::Closed => return Ok(VpcdExit::Closed),
            ReadOutcome::Stopped => return Ok(VpcdExit::Stopped),
        }
        message.resize(usize::from(u16::from_be_bytes(len)), 0);
        match read_full(&mut stream, &mut message, stop, false)? {
            ReadOutcome::Done => {}
            ReadOutcome::Closed => return Ok(VpcdExit::Closed),
            ReadOutcome::Stopped => return Ok(VpcdExit::Stopped),
        }
        match message.as_slice() {
            // vpicc ignores an empty message too (a protocol error on the reader's side).
            [] => {}
            [CTRL_GET_ATR] => send(&mut stream, atr)?,
            [CTRL_POWER_OFF | CTRL_POWER_ON | CTRL_RESET] => {}
            // Unknown control codes get no answer, as in vpicc.
            [_] => {}
            apdu => {
                let answer = match card.transmit(apdu) {
                    Ok(answer) if !answer.is_empty() && answer.len() <= usize::from(u16::MAX) => answer,
                    _ => SW_NO_DIAGNOSIS.to_vec(),
                };
                // The shell persists before the answer leaves, so a crash never releases an
                // answer whose state change was lost.
                after_apdu(card);
                send(&mut stream, &answer)?;
            }
        }
    }
}

/// Tries every address `addr` resolves to.
fn connect(addr: &str) -> Result<TcpStream, VpcdError> {
    let connect_error = |source| VpcdError::Connect { addr: addr.to_owned(), source };
    let candidates: Vec<SocketAddr> = addr.to_socket_addrs().map_err(connect_error)?.collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the address resolved to nothing");
    for candidate in candidates {
        match TcpStream::connect_timeout(&candidate, CONNECT_TIMEOUT) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(connect_error(last))
}

/// Sends one message: 2-byte big-endian length, then the bytes. `bytes` is at most 65535 long.
fn send(stream: &mut TcpStream, bytes: &[u8]) -> io::Result<()> {
    let len =
        u16::try_from(bytes.len()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message too long"))?;
    let mut framed = Vec::with_capacity(2 + bytes.len());
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(bytes);
    stream.write_all(&framed)?;
    stream.flush()
}

enum ReadOutcome {
    Done,
    Closed,
    Stopped,
}

/// Fills `buf`, waking up every [`POLL_INTERVAL`] to look at `stop`. End of stream before the
/// first byte is a clean close only at a message boundary (`at_boundary`); anywhere else it is
/// an error.
fn read_full(stream: &mut TcpStream, buf: &mut [u8], stop: &AtomicBool, at_boundary: bool) -> io::Result<ReadOutcome> {
    let mut filled = 0;
    while filled < buf.len() {
        if stop.load(Ordering::Relaxed) {
            return Ok(ReadOutcome::Stopped);
        }
        match stream.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 && at_boundary => return Ok(ReadOutcome::Closed),
            Ok(0) => {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "vpcd closed in the middle of a message"));
            }
            Ok(n) => filled += n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted) => {
                return Ok(ReadOutcome::Closed);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(ReadOutcome::Done)
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::thread;

    use super::*;
    use crate::card::TransportError;

    /// Answers every APDU with its INS byte followed by 9000; fails on INS 0xFF.
    struct Echo {
        seen: usize,
    }

    impl Transport for Echo {
        fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
            if command.get(1) == Some(&0xFF) {
                return Err(TransportError::Reader("unplugged".into()));
            }
            Ok(vec![command[1], 0x90, 0x00])
        }
    }

    fn frame(bytes: &[u8]) -> Vec<u8> {
        let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(bytes);
        out
    }

    fn recv(stream: &mut TcpStream) -> Vec<u8> {
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).unwrap();
        let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut body).unwrap();
        body
    }

    /// A fake vpcd: accepts one virtual card and runs `script` against it.
    fn fake_vpcd(script: impl FnOnce(TcpStream) + Send + 'static) -> (String, thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let handle = thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            script(stream);
        });
        (addr, handle)
    }

    #[test]
    fn answers_atr_and_apdus_and_ignores_power_control() {
        let (addr, reader) = fake_vpcd(|mut s| {
            for ctrl in [CTRL_POWER_ON, CTRL_RESET] {
                s.write_all(&frame(&[ctrl])).unwrap();
            }
            s.write_all(&frame(&[CTRL_GET_ATR])).unwrap();
            assert_eq!(recv(&mut s), DEFAULT_ATR);
            s.write_all(&frame(&[0x00, 0xA4, 0x04, 0x00])).unwrap();
            assert_eq!(recv(&mut s), [0xA4, 0x90, 0x00]);
            // A message split across writes is reassembled.
            let split = frame(&[0x00, 0x88, 0x00, 0x81, 0x00]);
            s.write_all(&split[..3]).unwrap();
            s.flush().unwrap();
            thread::sleep(Duration::from_millis(80));
            s.write_all(&split[3..]).unwrap();
            assert_eq!(recv(&mut s), [0x88, 0x90, 0x00]);
            s.write_all(&frame(&[0x00, 0xFF, 0x00, 0x00])).unwrap();
            assert_eq!(recv(&mut s), SW_NO_DIAGNOSIS);
            s.write_all(&frame(&[CTRL_POWER_OFF])).unwrap();
        });
        let stop = AtomicBool::new(false);
        let mut card = Echo { seen: 0 };
        let exit = serve_vpcd_with(&mut card, &addr, DEFAULT_ATR, &stop, |c| c.seen += 1).unwrap();
        assert_eq!(exit, VpcdExit::Closed);
        assert_eq!(card.seen, 3);
        reader.join().unwrap();
    }

    #[test]
    fn stops_when_asked() {
        let (addr, reader) = fake_vpcd(|mut s| {
            s.write_all(&frame(&[CTRL_GET_ATR])).unwrap();
            recv(&mut s);
            // Keep the connection open until the card leaves.
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest);
        });
        let stop = Arc::new(AtomicBool::new(false));
        let stopper = {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(150));
                stop.store(true, Ordering::Relaxed);
            })
        };
        let exit = serve_vpcd(&mut Echo { seen: 0 }, &addr, DEFAULT_ATR, &stop).unwrap();
        assert_eq!(exit, VpcdExit::Stopped);
        stopper.join().unwrap();
        reader.join().unwrap();
    }

    #[test]
    fn default_atr_check_byte_is_right() {
        // TCK makes the XOR of T0 … TCK zero (ISO/IEC 7816-3 §8.2.5).
        assert_eq!(DEFAULT_ATR[1..].iter().fold(0, |acc, b| acc ^ b), 0);
        assert_eq!(usize::from(DEFAULT_ATR[1] & 0x0F), DEFAULT_ATR.len() - 7);
    }

    #[test]
    fn rejects_empty_atr() {
        let stop = AtomicBool::new(false);
        let err = serve_vpcd(&mut Echo { seen: 0 }, DEFAULT_VPCD_ADDR, &[], &stop).unwrap_err();
        assert!(matches!(err, VpcdError::InvalidAtr(_)));
    }

    #[test]
    fn rejects_unreachable_reader() {
        // Bind then drop, so nothing listens on the port.
        let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
        let stop = AtomicBool::new(false);
        let err = serve_vpcd(&mut Echo { seen: 0 }, &addr, DEFAULT_ATR, &stop).unwrap_err();
        assert!(matches!(err, VpcdError::Connect { .. }), "{err}");
    }

    #[test]
    fn rejects_truncated_message() {
        let (addr, reader) = fake_vpcd(|mut s| {
            s.write_all(&[0x00, 0x05, 0x00, 0xA4]).unwrap();
        });
        let stop = AtomicBool::new(false);
        let err = serve_vpcd(&mut Echo { seen: 0 }, &addr, DEFAULT_ATR, &stop).unwrap_err();
        assert!(matches!(err, VpcdError::Io(ref e) if e.kind() == io::ErrorKind::UnexpectedEof), "{err}");
        reader.join().unwrap();
    }
}
