//! The terminal side: [`Card`] over any [`Transport`], purely by building APDUs and reading their
//! answers, so it drives the [`crate::emulator::Emulator`] and a real USIM alike.
//!
//! - The USIM application is selected once, on first use (SELECT by AID, P2 `0C`); the AID is
//!   [`USIM_AID_PREFIX`] unless [`ApduCard::with_aid`] names the full one.
//! - A `61XX` answer is followed by GET RESPONSE and a `6CXX` answer by a resend with `Le` = XX
//!   (T = 0 readers that do not do it themselves).
//! - The OMA BCAST command (INS `1B`, P1 `00`, P2 = mode) is one case-4 APDU (case 3 when it sets
//!   the parental limit); its codings are in [`crate::apdu`].
//! - Odd-INS AUTHENTICATE commands use the block chaining of [`crate::apdu`]; a card that answers
//!   the last block with `9000` and data directly is accepted as well.
//! - Status words other than `9000` become [`CardError::from_status_word`]; answers that do not
//!   decode become [`TransportError::BadResponse`]. Values too long for a short APDU are refused
//!   locally with the card's own word for it, `6700` (wrong length).

use keycast_crypto::keys::KsExtNaf;
use keycast_mikey::{KeyDomainId, SekPekId};

use crate::apdu::{
    Aka3gCommand, AkaContext, ApduError, BCAST_MODE_PARENTAL, BCAST_MODE_SPE_AUDIT, CommandApdu, EF_GBABP_SIZE,
    EfGbabp, EfGbanlRecord, EfMskRecord, EfMukRecord, FID_GBABP, FID_GBANL, FID_MSK, FID_MUK, GbaCommand,
    INS_AUTHENTICATE, INS_AUTHENTICATE_ODD, INS_BCAST, INS_GET_RESPONSE, INS_READ_BINARY, INS_READ_RECORD, INS_SELECT,
    INS_UPDATE_BINARY, MAX_LE, MbmsCommand, P2_3G, P2_GBA, P2_LOCAL_KEY, P2_MBMS, ResponseApdu, StatusWord,
    USIM_AID_PREFIX, command_blocks, decode_aka_answer, decode_audit_answer, decode_local_key_answer,
    decode_local_key_status, decode_mbms_answer, decode_naf_answer, decode_parental, decode_tek_out,
    encode_audit_request, encode_local_key_check, encode_local_key_request, encode_parental, fetch_command,
};
use crate::card::{Card, CardOpError, Transport, TransportError};
use crate::error::CardError;
use crate::mbms::{AuditCounters, TekOut};
use crate::sac::{LocalKeyIds, LocalKeyStatus};
use crate::usim::{AkaAnswer, LocalKeyRequest};

/// Offset of B-TID in EF_GBABP: after `L` and a 16-byte RAND.
const GBABP_ME_OFFSET: usize = 17;
/// Most GET RESPONSE / fetch rounds for one command (a card that never stops is an error).
const MAX_ROUNDS: usize = 1024;
/// Most records read from one EF.
const MAX_RECORDS: u8 = 254;

/// [`Card`] over APDUs.
#[derive(Debug)]
pub struct ApduCard<T: Transport> {
    transport: T,
    cla: u8,
    aid: Vec<u8>,
    block_size: usize,
    usim_selected: bool,
}

fn bad_response(e: impl core::fmt::Display) -> CardOpError {
    CardOpError::Transport(TransportError::BadResponse(e.to_string()))
}

fn refused(sw: StatusWord) -> CardOpError {
    CardOpError::Card(CardError::from_status_word(sw.0))
}

/// A value that does not fit a short APDU: refused as the card would, with `6700`.
fn too_long(_: ApduError) -> CardOpError {
    refused(StatusWord::WRONG_LENGTH)
}

impl<T: Transport> ApduCard<T> {
    /// A card behind `transport`: CLA `00`, the USIM AID prefix, blocks of 255 bytes.
    pub fn new(transport: T) -> Self {
        Self {
            transport,
            cla: 0x00,
            aid: USIM_AID_PREFIX.to_vec(),
            block_size: crate::apdu::DEFAULT_BLOCK_SIZE,
            usim_selected: false,
        }
    }

    /// Selects the USIM by this (full or partial) AID.
    #[must_use]
    pub fn with_aid(mut self, aid: &[u8]) -> Self {
        self.aid = aid.to_vec();
        self.usim_selected = false;
        self
    }

    /// With another odd-INS command block size (clamped to 8..=255).
    #[must_use]
    pub fn with_block_size(mut self, block_size: usize) -> Self {
        self.block_size = crate::apdu::clamp_block_size(block_size);
        self
    }

    /// The transport.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// The transport, mutably. After a card reset call [`ApduCard::forget_selection`].
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// The transport, consuming the card.
    pub fn into_transport(self) -> T {
        self.transport
    }

    /// Makes the next operation select the USIM again (after a reset of the card).
    pub fn forget_selection(&mut self) {
        self.usim_selected = false;
    }

    /// Sends one APDU; follows `61XX` with GET RESPONSE and `6CXX` with a resend.
    pub fn transmit(&mut self, cmd: &CommandApdu) -> Result<ResponseApdu, CardOpError> {
        let mut resp = self.transmit_once(cmd)?;
        if resp.sw.sw1() == 0x6c {
            let retry = CommandApdu { le: Some(le_from(resp.sw.sw2())), ..cmd.clone() };
            resp = self.transmit_once(&retry)?;
        }
        let mut data = Vec::new();
        let mut rounds = 0;
        while resp.sw.sw1() == 0x61 {
            rounds += 1;
            if rounds > MAX_ROUNDS {
                return Err(bad_response("endless GET RESPONSE"));
            }
            data.append(&mut resp.data);
            let get = CommandApdu::new(self.cla, INS_GET_RESPONSE, 0, 0).with_le(le_from(resp.sw.sw2()));
            resp = self.transmit_once(&get)?;
        }
        data.append(&mut resp.data);
        Ok(ResponseApdu::new(data, resp.sw))
    }

    fn transmit_once(&mut self, cmd: &CommandApdu) -> Result<ResponseApdu, CardOpError> {
        let bytes = cmd.to_bytes().map_err(too_long)?;
        let answer = self.transport.transmit(&bytes)?;
        ResponseApdu::decode(&answer).map_err(bad_response)
    }

    /// Sends one APDU and expects 9000; returns the data.
    fn expect_ok(&mut self, cmd: &CommandApdu) -> Result<Vec<u8>, CardOpError> {
        let resp = self.transmit(cmd)?;
        if resp.sw.is_success() { Ok(resp.data) } else { Err(refused(resp.sw)) }
    }

    /// SELECT the USIM application by AID (done once on first use by every operation).
    pub fn select_usim(&mut self) -> Result<(), CardOpError> {
        let cmd = CommandApdu::new(self.cla, INS_SELECT, 0x04, 0x0c).with_data(self.aid.clone());
        self.expect_ok(&cmd)?;
        self.usim_selected = true;
        Ok(())
    }

    fn ensure_usim(&mut self) -> Result<(), CardOpError> {
        if self.usim_selected { Ok(()) } else { self.select_usim() }
    }

    fn select_ef(&mut self, fid: u16) -> Result<(), CardOpError> {
        self.ensure_usim()?;
        let cmd = CommandApdu::new(self.cla, INS_SELECT, 0x00, 0x0c).with_data(fid.to_be_bytes().to_vec());
        self.expect_ok(&cmd).map(drop)
    }

    /// Every record of a linear fixed EF (until the card answers `6A83`).
    fn read_records(&mut self, fid: u16) -> Result<Vec<Vec<u8>>, CardOpError> {
        self.select_ef(fid)?;
        let mut records = Vec::new();
        for n in 1..=MAX_RECORDS {
            let cmd = CommandApdu::new(self.cla, INS_READ_RECORD, n, 0x04).with_le(MAX_LE);
            let resp = self.transmit(&cmd)?;
            match resp.sw {
                StatusWord::SUCCESS => records.push(resp.data),
                StatusWord::RECORD_NOT_FOUND => break,
                other => return Err(refused(other)),
            }
        }
        Ok(records)
    }

    fn decode_records<R>(
        &mut self,
        fid: u16,
        decode: fn(&[u8]) -> Result<Option<R>, ApduError>,
    ) -> Result<Vec<R>, CardOpError> {
        let mut out = Vec::new();
        for record in self.read_records(fid)? {
            out.extend(decode(&record).map_err(bad_response)?);
        }
        Ok(out)
    }

    /// EF_GBABP; `None` when the card holds no bootstrapped set.
    pub fn read_gba_bp(&mut self) -> Result<Option<EfGbabp>, CardOpError> {
        self.select_ef(FID_GBABP)?;
        let mut image = Vec::new();
        while image.len() < EF_GBABP_SIZE {
            let offset = image.len() as u16;
            let cmd = CommandApdu::new(self.cla, INS_READ_BINARY, (offset >> 8) as u8, offset as u8).with_le(MAX_LE);
            let resp = self.transmit(&cmd)?;
            match resp.sw {
                StatusWord::SUCCESS if !resp.data.is_empty() => image.extend_from_slice(&resp.data),
                // 6282: end of file reached before Le bytes (ISO 7816-4).
                StatusWord(0x6282) => {
                    image.extend_from_slice(&resp.data);
                    break;
                }
                // End of a smaller file.
                StatusWord::SUCCESS | StatusWord::WRONG_PARAMETERS if !image.is_empty() => break,
                other => return Err(refused(other)),
            }
        }
        EfGbabp::decode(&image).map_err(bad_response)
    }

    /// The used EF_MSK records.
    pub fn read_msk_records(&mut self) -> Result<Vec<EfMskRecord>, CardOpError> {
        self.decode_records(FID_MSK, EfMskRecord::decode)
    }

    /// The used EF_MUK records.
    pub fn read_muk_records(&mut self) -> Result<Vec<EfMukRecord>, CardOpError> {
        self.decode_records(FID_MUK, EfMukRecord::decode)
    }

    /// The used EF_GBANL records.
    pub fn read_gbanl_records(&mut self) -> Result<Vec<EfGbanlRecord>, CardOpError> {
        self.decode_records(FID_GBANL, EfGbanlRecord::decode)
    }

    fn authenticate_even(&mut self, p2: u8, data: Vec<u8>) -> Result<Vec<u8>, CardOpError> {
        self.ensure_usim()?;
        let cmd = CommandApdu::new(self.cla, INS_AUTHENTICATE, 0x00, p2).with_data(data).with_le(MAX_LE);
        self.expect_ok(&cmd)
    }

    /// Sends a whole odd-INS TLV in blocks and fetches the whole answer.
    fn authenticate_odd(&mut self, p2: u8, data: &[u8]) -> Result<Vec<u8>, CardOpError> {
        self.ensure_usim()?;
        let blocks = command_blocks(self.cla, INS_AUTHENTICATE_ODD, p2, data, self.block_size);
        let last = blocks.len().saturating_sub(1);
        let mut final_resp = None;
        for (i, block) in blocks.iter().enumerate() {
            let resp = self.transmit(block)?;
            match resp.sw {
                StatusWord::MORE_DATA_EXPECTED | StatusWord::SUCCESS if i < last => {}
                _ if i < last => return Err(refused(resp.sw)),
                _ => final_resp = Some(resp),
            }
        }
        let resp = final_resp.ok_or_else(|| bad_response("no command data"))?;
        match resp.sw {
            StatusWord::SUCCESS => Ok(resp.data),
            StatusWord::RESPONSE_DATA_AVAILABLE => {
                let mut answer = resp.data;
                for round in 0..MAX_ROUNDS {
                    let mut block = self.transmit(&fetch_command(self.cla, INS_AUTHENTICATE_ODD, p2, round == 0))?;
                    answer.append(&mut block.data);
                    match block.sw {
                        StatusWord::MORE_DATA_AVAILABLE => {}
                        StatusWord::SUCCESS => return Ok(answer),
                        other => return Err(refused(other)),
                    }
                }
                Err(bad_response("endless response chain"))
            }
            other => Err(refused(other)),
        }
    }

    fn mbms(&mut self, cmd: &MbmsCommand) -> Result<Vec<u8>, CardOpError> {
        let data = cmd.encode().map_err(too_long)?;
        let answer = self.authenticate_odd(P2_MBMS, &data)?;
        decode_mbms_answer(&answer).map(<[u8]>::to_vec).map_err(bad_response)
    }

    /// One OMA BCAST command (INS `1B`, P1 `00`, P2 = mode); returns the answer data.
    fn bcast(&mut self, mode: u8, data: Vec<u8>, expects_answer: bool) -> Result<Vec<u8>, CardOpError> {
        self.ensure_usim()?;
        let mut cmd = CommandApdu::new(self.cla, INS_BCAST, 0x00, mode).with_data(data);
        if expects_answer {
            cmd = cmd.with_le(MAX_LE);
        }
        self.expect_ok(&cmd)
    }

    fn mbms_unit(&mut self, cmd: &MbmsCommand) -> Result<(), CardOpError> {
        let content = self.mbms(cmd)?;
        if content.is_empty() { Ok(()) } else { Err(bad_response("unexpected data in a deletion answer")) }
    }
}

/// `Le` from a `61XX` / `6CXX` SW2 (`00` = 256).
fn le_from(sw2: u8) -> u16 {
    if sw2 == 0 { MAX_LE } else { u16::from(sw2) }
}

impl<T: Transport> Card for ApduCard<T> {
    fn authenticate_3g(&mut self, rand: &[u8; 16], autn: &[u8; 16]) -> Result<AkaAnswer, CardOpError> {
        let data = Aka3gCommand { rand: *rand, autn: *autn }.encode();
        let answer = self.authenticate_even(P2_3G, data)?;
        decode_aka_answer(&answer, AkaContext::ThreeG).map_err(bad_response)
    }

    fn gba_bootstrap(&mut self, rand: &[u8; 16], autn: &[u8; 16]) -> Result<AkaAnswer, CardOpError> {
        let data = GbaCommand::Bootstrap { rand: *rand, autn: *autn }.encode().map_err(too_long)?;
        let answer = self.authenticate_even(P2_GBA, data)?;
        decode_aka_answer(&answer, AkaContext::Gba).map_err(bad_response)
    }

    fn write_gba_bp(&mut self, b_tid: &str, lifetime: &str) -> Result<(), CardOpError> {
        // Only `L B-TID L lifetime` is written: whatever follows is padding to every reader, and a
        // real EF_GBABP may be shorter than the emulator's.
        let data = EfGbabp::encode_me_part(b_tid, lifetime).map_err(too_long)?;
        if data.len() > EF_GBABP_SIZE - GBABP_ME_OFFSET {
            return Err(refused(StatusWord::WRONG_LENGTH));
        }
        self.select_ef(FID_GBABP)?;
        let cmd = CommandApdu::new(self.cla, INS_UPDATE_BINARY, 0x00, GBABP_ME_OFFSET as u8).with_data(data);
        self.expect_ok(&cmd).map(drop)
    }

    fn gba_naf_derivation(&mut self, naf_id: &[u8], impi: &str) -> Result<KsExtNaf, CardOpError> {
        let data =
            GbaCommand::NafDerivation { naf_id: naf_id.to_vec(), impi: impi.to_owned() }.encode().map_err(too_long)?;
        let answer = self.authenticate_even(P2_GBA, data)?;
        decode_naf_answer(&answer).map_err(bad_response)
    }

    fn msk_update(&mut self, ltkm: &[u8]) -> Result<Option<Vec<u8>>, CardOpError> {
        let content = self.mbms(&MbmsCommand::MskUpdate(ltkm.to_vec()))?;
        Ok((!content.is_empty()).then_some(content))
    }

    fn mtk_generation(&mut self, stkm: &[u8]) -> Result<TekOut, CardOpError> {
        let content = self.mbms(&MbmsCommand::MtkGeneration(stkm.to_vec()))?;
        decode_tek_out(&content).map_err(bad_response)
    }

    fn msk_deletion(&mut self, key_domain_id: KeyDomainId, key_group: u16) -> Result<(), CardOpError> {
        self.mbms_unit(&MbmsCommand::MskDeletion { key_domain_id, key_group })
    }

    fn muk_deletion(&mut self, idi: &str, idr: &str) -> Result<(), CardOpError> {
        self.mbms_unit(&MbmsCommand::MukDeletion { idi: idi.to_owned(), idr: idr.to_owned() })
    }

    fn local_key_establishment(&mut self, req: &LocalKeyRequest) -> Result<[u8; 16], CardOpError> {
        let data = encode_local_key_request(req).map_err(too_long)?;
        let answer = self.authenticate_odd(P2_LOCAL_KEY, &data)?;
        decode_local_key_answer(&answer).map_err(bad_response)
    }

    fn local_key_available(
        &mut self,
        naf_id: &[u8],
        terminal_id: &[u8],
        terminal_appli_id: &[u8],
        uicc_appli_id: &[u8],
    ) -> Result<LocalKeyStatus, CardOpError> {
        let ids = LocalKeyIds {
            naf_id: naf_id.to_vec(),
            terminal_id: terminal_id.to_vec(),
            terminal_appli_id: terminal_appli_id.to_vec(),
            uicc_appli_id: uicc_appli_id.to_vec(),
        };
        let data = encode_local_key_check(&ids).map_err(too_long)?;
        let answer = self.authenticate_odd(P2_LOCAL_KEY, &data)?;
        decode_local_key_status(&answer).map_err(bad_response)
    }

    fn audit(&mut self, key_domain_id: KeyDomainId, sek_pek_id: SekPekId) -> Result<AuditCounters, CardOpError> {
        let answer = self.bcast(BCAST_MODE_SPE_AUDIT, encode_audit_request(key_domain_id, sek_pek_id), true)?;
        decode_audit_answer(&answer).map_err(bad_response)
    }

    fn parental_limit(&mut self) -> Result<Option<u8>, CardOpError> {
        let answer = self.bcast(BCAST_MODE_PARENTAL, Vec::new(), true)?;
        decode_parental(&answer).map_err(bad_response)
    }

    fn set_parental_limit(&mut self, limit: Option<u8>) -> Result<(), CardOpError> {
        let data = encode_parental(limit).map_err(too_long)?;
        let answer = self.bcast(BCAST_MODE_PARENTAL, data, false)?;
        if answer.is_empty() { Ok(()) } else { Err(bad_response("unexpected data in a parental setting answer")) }
    }
}
