//! A card in a PC/SC reader as a [`Transport`] (feature `pcsc`): a real USIM, or the emulator
//! behind the vsmartcard vpcd reader ([`crate::vpcd`]).
//!
//! Needs the PC/SC Lite client library to build (Debian `libpcsclite-dev`) and the pcscd daemon
//! to run. The same APDU-level `Card` code drives what is behind it.

use std::ffi::{CStr, CString};

use pcsc::{Context, Disposition, Error, Protocol, Protocols, Scope, ShareMode, State};

use crate::card::{Transport, TransportError};

/// Longest response accepted from the reader (an extended-length response plus SW1 SW2).
const RECEIVE_BUFFER: usize = pcsc::MAX_BUFFER_SIZE_EXTENDED;

/// A card that keeps answering '61XX' is cut off after this many GET RESPONSEs (with the
/// 256-byte maximum each, 64 KiB).
const MAX_GET_RESPONSES: usize = 256;

/// A reader pcscd knows about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderStatus {
    /// The reader name, as PC/SC spells it (e.g. `Virtual PCD 00 00`).
    pub name: String,
    /// A card is in the reader.
    pub card_present: bool,
}

/// The readers pcscd knows about, and whether each holds a card. No reader is an empty list;
/// a pcscd that is not running is an error ("The Smart card resource manager is not running").
pub fn list_readers() -> Result<Vec<ReaderStatus>, TransportError> {
    let context = Context::establish(Scope::User).map_err(reader_error("SCardEstablishContext"))?;
    let names = match context.list_readers_owned() {
        Ok(names) => names,
        Err(Error::NoReadersAvailable) => return Ok(Vec::new()),
        Err(e) => return Err(reader_error("SCardListReaders")(e)),
    };
    let mut states: Vec<_> = names.into_iter().map(|name| pcsc::ReaderState::new(name, State::UNAWARE)).collect();
    context.get_status_change(std::time::Duration::ZERO, &mut states).map_err(reader_error("SCardGetStatusChange"))?;
    Ok(states
        .iter()
        .map(|s| ReaderStatus {
            name: s.name().to_string_lossy().into_owned(),
            card_present: s.event_state().contains(State::PRESENT) && !s.event_state().contains(State::MUTE),
        })
        .collect())
}

/// A card in a PC/SC reader, connected in shared mode with T=0 or T=1.
///
/// [`Transport::transmit`] hides the T=0 transport details: a '61XX' answer is followed by
/// GET RESPONSE (`CLA C0 00 00 XX`, repeated while the card says more is waiting) and a '6CXX'
/// answer by the same command with Le = XX, so callers always see data ‖ SW1 SW2. Each command
/// runs inside a PC/SC transaction, so no other application gets between a command and its
/// GET RESPONSE. When another application reset the card, the connection is re-established
/// and the command sent once more.
pub struct PcscCard {
    card: pcsc::Card,
    reader: String,
    protocol: Option<Protocol>,
    buffer: Vec<u8>,
}

impl std::fmt::Debug for PcscCard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcscCard").field("reader", &self.reader).field("protocol", &self.protocol).finish()
    }
}

impl PcscCard {
    /// Connects to the card in `reader`, or (with `None`) to the first reader that holds a card.
    ///
    /// `reader` is either the exact PC/SC reader name or a part of it that only one reader's
    /// name contains (`"Virtual PCD"`, `"Omnikey"`); case does not matter for the latter.
    pub fn connect(reader: Option<&str>) -> Result<Self, TransportError> {
        let context = Context::establish(Scope::User).map_err(reader_error("SCardEstablishContext"))?;
        let names = context.list_readers_owned().map_err(reader_error("SCardListReaders"))?;
        let chosen: Vec<&CString> = match reader {
            Some(wanted) => vec![pick_reader(&names, wanted)?],
            None => names.iter().collect(),
        };
        let mut last = None;
        for name in chosen {
            match context.connect(name, ShareMode::Shared, Protocols::T0 | Protocols::T1) {
                Ok(card) => return Self::from_card(card, name),
                // Try the next reader when this one is empty.
                Err(e) => last = Some((name, e)),
            }
        }
        Err(match last {
            Some((name, e)) => TransportError::Reader(format!("SCardConnect {}: {e}", name.to_string_lossy())),
            None => TransportError::Reader("no smart card reader".into()),
        })
    }

    fn from_card(card: pcsc::Card, name: &CStr) -> Result<Self, TransportError> {
        let protocol = active_protocol(&card)?;
        Ok(Self { card, reader: name.to_string_lossy().into_owned(), protocol, buffer: vec![0; RECEIVE_BUFFER] })
    }

    /// The PC/SC name of the reader.
    pub fn reader(&self) -> &str {
        &self.reader
    }

    /// `"T=0"` or `"T=1"` (or `"RAW"`), as negotiated.
    pub fn protocol(&self) -> &'static str {
        match self.protocol {
            Some(Protocol::T0) => "T=0",
            Some(Protocol::T1) => "T=1",
            Some(Protocol::RAW) => "RAW",
            None => "none",
        }
    }

    /// The card's ATR.
    pub fn atr(&self) -> Result<Vec<u8>, TransportError> {
        let status = self.card.status2_owned().map_err(reader_error("SCardStatus"))?;
        Ok(status.atr().to_vec())
    }

    /// Leaves the card powered and in its current state (dropping a `PcscCard` resets it).
    pub fn disconnect(self) -> Result<(), TransportError> {
        self.card.disconnect(Disposition::LeaveCard).map_err(|(_, e)| reader_error("SCardDisconnect")(e))
    }

    /// One exchange, reconnecting once when another application reset the card.
    fn exchange(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        match self.exchange_in_transaction(command) {
            Err(Error::ResetCard) => {
                self.card
                    .reconnect(ShareMode::Shared, Protocols::T0 | Protocols::T1, Disposition::LeaveCard)
                    .map_err(reader_error("SCardReconnect"))?;
                self.protocol = active_protocol(&self.card)?;
                self.exchange_in_transaction(command).map_err(reader_error("SCardTransmit"))
            }
            other => other.map_err(reader_error("SCardTransmit")),
        }
    }

    fn exchange_in_transaction(&mut self, command: &[u8]) -> Result<Vec<u8>, Error> {
        let tx = self.card.transaction()?;
        let mut response = tx.transmit(command, &mut self.buffer)?.to_vec();
        if let Some(le) = wrong_length(&response)
            && let Some(again) = with_le(command, le)
        {
            response = tx.transmit(&again, &mut self.buffer)?.to_vec();
        }
        let mut data = Vec::new();
        let mut rounds = 0;
        while let Some(available) = more_data(&response) {
            if rounds == MAX_GET_RESPONSES {
                break;
            }
            rounds += 1;
            data.extend_from_slice(&response[..response.len() - 2]);
            let get_response = [get_response_cla(command[0]), 0xC0, 0x00, 0x00, available];
            response = tx.transmit(&get_response, &mut self.buffer)?.to_vec();
            if let Some(le) = wrong_length(&response) {
                let again = [get_response[0], 0xC0, 0x00, 0x00, le];
                response = tx.transmit(&again, &mut self.buffer)?.to_vec();
            }
        }
        data.extend_from_slice(&response);
        // Ending the transaction fails only when the card went away; the answer is complete.
        let _ = tx.end(Disposition::LeaveCard);
        Ok(data)
    }
}

impl Transport for PcscCard {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        if command.len() < 4 {
            return Err(TransportError::BadResponse(format!("command APDU of {} bytes", command.len())));
        }
        let response = self.exchange(command)?;
        if response.len() < 2 {
            return Err(TransportError::BadResponse(format!("{} bytes, no status word", response.len())));
        }
        Ok(response)
    }
}

fn active_protocol(card: &pcsc::Card) -> Result<Option<Protocol>, TransportError> {
    Ok(card.status2_owned().map_err(reader_error("SCardStatus"))?.protocol2())
}

/// Turns a pcsc error into [`TransportError::Reader`] with the PC/SC call and the error text.
fn reader_error(call: &'static str) -> impl Fn(Error) -> TransportError {
    move |e| TransportError::Reader(format!("{call}: {e}"))
}

/// The reader named `wanted`: an exact name, or the one name that contains it (ignoring case).
fn pick_reader<'a>(names: &'a [CString], wanted: &str) -> Result<&'a CString, TransportError> {
    if let Some(exact) = names.iter().find(|n| n.to_bytes() == wanted.as_bytes()) {
        return Ok(exact);
    }
    let wanted_lower = wanted.to_lowercase();
    let mut matches = names.iter().filter(|n| n.to_string_lossy().to_lowercase().contains(&wanted_lower));
    match (matches.next(), matches.next()) {
        (Some(one), None) => Ok(one),
        (None, _) => Err(TransportError::Reader(format!("no reader named like {wanted:?}"))),
        (Some(_), Some(_)) => Err(TransportError::Reader(format!("more than one reader named like {wanted:?}"))),
    }
}

/// '61XX': XX more bytes wait for GET RESPONSE ('00' means 256).
fn more_data(response: &[u8]) -> Option<u8> {
    match response {
        [.., 0x61, xx] => Some(*xx),
        _ => None,
    }
}

/// '6CXX': wrong Le, XX is the right one.
fn wrong_length(response: &[u8]) -> Option<u8> {
    match response {
        [0x6C, xx] => Some(*xx),
        _ => None,
    }
}

/// The command again with Le = `le`: case 1 and 3 gain an Le byte, case 2 and 4 get theirs
/// replaced. Extended-length commands are left alone (`None`).
fn with_le(command: &[u8], le: u8) -> Option<Vec<u8>> {
    let mut out = command.to_vec();
    match command.len() {
        4 => out.push(le),
        5 => out[4] = le,
        n => {
            let lc = usize::from(command[4]);
            if lc == 0 {
                return None;
            }
            if n == 5 + lc {
                out.push(le);
            } else if n == 6 + lc {
                out[n - 1] = le;
            } else {
                return None;
            }
        }
    }
    Some(out)
}

/// The class byte of GET RESPONSE for a command: same logical channel; GSM class 'A0' stays.
fn get_response_cla(cla: u8) -> u8 {
    match cla {
        0xA0 => 0xA0,
        // Further interindustry class: channels 4 to 19 in b4..b1.
        c if c & 0x40 != 0 => 0x40 | (c & 0x0F),
        // First interindustry class (and its proprietary '8X' twin): channels 0 to 3 in b2..b1.
        c => c & 0x03,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_le_covers_the_four_cases() {
        assert_eq!(with_le(&[0, 0xB0, 0, 0], 0x10).unwrap(), [0, 0xB0, 0, 0, 0x10]);
        assert_eq!(with_le(&[0, 0xB0, 0, 0, 0], 0x10).unwrap(), [0, 0xB0, 0, 0, 0x10]);
        assert_eq!(with_le(&[0, 0x88, 0, 0x81, 2, 1, 2], 0x10).unwrap(), [0, 0x88, 0, 0x81, 2, 1, 2, 0x10]);
        assert_eq!(with_le(&[0, 0x88, 0, 0x81, 2, 1, 2, 0], 0x10).unwrap(), [0, 0x88, 0, 0x81, 2, 1, 2, 0x10]);
        // Extended length (Lc starts with 00) and inconsistent lengths are not rewritten.
        assert_eq!(with_le(&[0, 0x88, 0, 0x81, 0, 0, 2, 1, 2], 0x10), None);
        assert_eq!(with_le(&[0, 0x88, 0, 0x81, 5, 1, 2], 0x10), None);
    }

    #[test]
    fn status_words_are_recognised() {
        assert_eq!(more_data(&[0x61, 0x35]), Some(0x35));
        assert_eq!(more_data(&[0xAA, 0x61, 0x00]), Some(0x00));
        assert_eq!(more_data(&[0x90, 0x00]), None);
        assert_eq!(wrong_length(&[0x6C, 0x12]), Some(0x12));
        // '6CXX' only stands alone.
        assert_eq!(wrong_length(&[0x01, 0x6C, 0x12]), None);
    }

    #[test]
    fn get_response_keeps_the_logical_channel() {
        assert_eq!(get_response_cla(0x00), 0x00);
        assert_eq!(get_response_cla(0x01), 0x01);
        assert_eq!(get_response_cla(0x80), 0x00);
        assert_eq!(get_response_cla(0x83), 0x03);
        assert_eq!(get_response_cla(0x0C), 0x00);
        assert_eq!(get_response_cla(0x45), 0x45);
        assert_eq!(get_response_cla(0xC5), 0x45);
        assert_eq!(get_response_cla(0xA0), 0xA0);
    }

    #[test]
    fn picks_readers_by_exact_name_or_unique_part() {
        let names = [CString::new("Virtual PCD 00 00").unwrap(), CString::new("Virtual PCD 00 01").unwrap()];
        assert_eq!(pick_reader(&names, "Virtual PCD 00 01").unwrap(), &names[1]);
        assert_eq!(pick_reader(&names, "pcd 00 00").unwrap(), &names[0]);
        assert!(pick_reader(&names, "Virtual PCD").is_err());
        assert!(pick_reader(&names, "Omnikey").is_err());
    }
}
