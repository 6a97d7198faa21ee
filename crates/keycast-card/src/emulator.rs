//! The card as a [`Transport`]: a [`Usim`] behind the APDUs of [`crate::apdu`].
//!
//! The emulator answers every command with a status word and never fails the transport or
//! panics, whatever the bytes. Card refusals answer exactly [`CardError::status_word`]; problems
//! with the APDU itself answer the ISO 7816-4 words listed in [`crate::apdu`].
//!
//! Supported commands (CLA with b8 = 0; the logical channel bits are ignored):
//!
//! | INS | command | notes |
//! |---|---|---|
//! | `A4` | SELECT | P1 `00` by FID (`3F00` MF, `7FFF` current ADF, `6FD6`/`6FD7`/`6FD8`/`6FDA` from the ADF), P1 `04` by AID (a prefix of [`USIM_AID`], at least the 7 bytes of [`USIM_AID_PREFIX`]); P2 `0C` no data, `04`/`00` a minimal FCP |
//! | `B0` | READ BINARY | EF_GBABP, P1-P2 = offset (no SFI) |
//! | `D6` | UPDATE BINARY | EF_GBABP: the ME writes B-TID and lifetime ([`Usim::write_gba_bp`]); RAND must stay |
//! | `B2` | READ RECORD | EF_MSK, EF_MUK, EF_GBANL; P2 `04` (absolute), P1 = record number |
//! | `88` | AUTHENTICATE | P1 `00`; P2 `81` 3G, `84` GBA (`DD`, `DE`) |
//! | `89` | AUTHENTICATE (odd) | P2 `85` MBMS, `86` Local Key Establishment (key derivation and availability check), with the block chaining of [`crate::apdu`] |
//! | `1B` | OMA BCAST command | P1 `00`; P2 `01` SPE audit, `04` parental control (read, or set over the secure channel); codings in [`crate::apdu`] |
//!
//! AUTHENTICATE and the OMA BCAST command need the USIM application selected first (else `6985`). `Le` is not enforced
//! except that an odd-INS response block is at most `Le` bytes. The emulator keeps no file image
//! of its own: every EF is rendered from the [`Usim`] when read.

use crate::apdu::{
    Aka3gCommand, ApduError, BCAST_MODE_PARENTAL, BCAST_MODE_SPE_AUDIT, ChainProgress, CommandApdu, CommandChain,
    EF_GBABP_SIZE, EF_GBANL_RECORD_LEN, EF_MSK_RECORD_LEN, EF_MUK_RECORD_LEN, EfGbabp, EfGbanlRecord, EfMskRecord,
    EfMukRecord, FID_ADF, FID_GBABP, FID_GBANL, FID_MF, FID_MSK, FID_MUK, GbaCommand, INS_AUTHENTICATE,
    INS_AUTHENTICATE_ODD, INS_BCAST, INS_READ_BINARY, INS_READ_RECORD, INS_SELECT, INS_UPDATE_BINARY, LocalKeyCommand,
    MbmsCommand, P1_FIRST_BLOCK, P1_FIRST_RESPONSE, P1_NEXT_BLOCK, P1_NEXT_RESPONSE, ResponseApdu, ResponseChain,
    StatusWord, USIM_AID_PREFIX, clamp_block_size, decode_audit_request, decode_local_key_command, decode_parental,
    encode_aka_answer, encode_audit_answer, encode_local_key_answer, encode_local_key_status, encode_mbms_answer,
    encode_naf_answer, encode_parental, encode_tek_out, write_tlv,
};
use crate::card::{Transport, TransportError};
use crate::error::CardError;
use crate::usim::{NAF_KEY_RECORDS, Usim};

/// The full AID of the emulated USIM: [`USIM_AID_PREFIX`] ‖ country FFF ‖ provider FF ‖ "Keycast"
/// application provider field 4B 43 00 01 00 (a Keycast choice).
pub const USIM_AID: [u8; 16] =
    [0xa0, 0x00, 0x00, 0x00, 0x87, 0x10, 0x02, 0xff, 0xff, 0xff, 0xff, 0x4b, 0x43, 0x00, 0x01, 0x00];

/// An elementary file of the emulated USIM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ef {
    Gbabp,
    Msk,
    Muk,
    Gbanl,
}

impl Ef {
    fn from_fid(fid: u16) -> Option<Self> {
        Some(match fid {
            FID_GBABP => Self::Gbabp,
            FID_MSK => Self::Msk,
            FID_MUK => Self::Muk,
            FID_GBANL => Self::Gbanl,
            _ => return None,
        })
    }

    fn fid(self) -> u16 {
        match self {
            Self::Gbabp => FID_GBABP,
            Self::Msk => FID_MSK,
            Self::Muk => FID_MUK,
            Self::Gbanl => FID_GBANL,
        }
    }
}

/// The current dedicated file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Df {
    Mf,
    Adf,
}

/// An odd-INS exchange in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Chain {
    Command(CommandChain),
    Response(ResponseChain),
}

/// The emulated card: a [`Usim`], the current file, the chaining state and a dirty flag.
#[derive(Debug, Clone)]
pub struct Emulator {
    usim: Usim,
    block_size: usize,
    df: Df,
    ef: Option<Ef>,
    usim_active: bool,
    chain: Option<Chain>,
    dirty: bool,
}

fn sw(sw: StatusWord) -> ResponseApdu {
    ResponseApdu::status(sw)
}

fn refusal(e: &CardError) -> ResponseApdu {
    ResponseApdu::status(StatusWord::from(e))
}

fn bad_data(e: &ApduError) -> ResponseApdu {
    ResponseApdu::status(e.status_word())
}

impl Emulator {
    /// A card in its reset state (MF selected, no chain).
    pub fn new(usim: Usim) -> Self {
        Self {
            usim,
            block_size: crate::apdu::DEFAULT_BLOCK_SIZE,
            df: Df::Mf,
            ef: None,
            usim_active: false,
            chain: None,
            dirty: false,
        }
    }

    /// With another largest odd-INS response block (clamped to 8..=255).
    #[must_use]
    pub fn with_block_size(mut self, block_size: usize) -> Self {
        self.block_size = clamp_block_size(block_size);
        self
    }

    /// The card's contents.
    pub fn usim(&self) -> &Usim {
        &self.usim
    }

    /// The card's contents, to change them directly (not counted as dirty: the caller knows).
    pub fn usim_mut(&mut self) -> &mut Usim {
        &mut self.usim
    }

    /// The card's contents, consuming the emulator.
    pub fn into_usim(self) -> Usim {
        self.usim
    }

    /// Whether a command changed the card's state since the last call (then persist it).
    pub fn take_dirty(&mut self) -> bool {
        core::mem::take(&mut self.dirty)
    }

    /// A card reset (as after a new ATR): MF selected, application closed, chain dropped.
    pub fn reset(&mut self) {
        self.df = Df::Mf;
        self.ef = None;
        self.usim_active = false;
        self.chain = None;
    }

    /// Answers one command APDU given as bytes (the response APDU's bytes).
    pub fn transmit_bytes(&mut self, command: &[u8]) -> Vec<u8> {
        match CommandApdu::decode(command) {
            Ok(cmd) => self.process(&cmd),
            Err(e) => {
                self.chain = None;
                bad_data(&e)
            }
        }
        .to_bytes()
    }

    /// Answers one decoded command APDU.
    pub fn process(&mut self, cmd: &CommandApdu) -> ResponseApdu {
        // Any command that does not continue an odd-INS chain ends it.
        let chain = self.chain.take();
        if cmd.cla & 0x80 != 0 {
            return sw(StatusWord::CLA_NOT_SUPPORTED);
        }
        match cmd.ins {
            INS_SELECT => self.select(cmd),
            INS_READ_BINARY => self.read_binary(cmd),
            INS_READ_RECORD => self.read_record(cmd),
            INS_UPDATE_BINARY => self.tracking(|e| e.update_binary(cmd)),
            INS_AUTHENTICATE => self.tracking(|e| e.authenticate_even(cmd)),
            INS_AUTHENTICATE_ODD => self.tracking(|e| e.authenticate_odd(cmd, chain)),
            INS_BCAST => self.tracking(|e| e.bcast(cmd)),
            _ => sw(StatusWord::INS_NOT_SUPPORTED),
        }
    }

    /// Runs a command that may change the card and records whether it did.
    fn tracking(&mut self, f: impl FnOnce(&mut Self) -> ResponseApdu) -> ResponseApdu {
        let before = self.usim.clone();
        let answer = f(self);
        if self.usim != before {
            self.dirty = true;
        }
        answer
    }

    // ------------------------------------------------------------------------- files

    fn select(&mut self, cmd: &CommandApdu) -> ResponseApdu {
        let with_fcp = match cmd.p2 {
            0x0c => false,
            0x00 | 0x04 => true,
            _ => return sw(StatusWord::INCORRECT_P1_P2),
        };
        match cmd.p1 {
            0x00 => {
                let Ok(fid) = <[u8; 2]>::try_from(cmd.data.as_slice()) else {
                    return sw(StatusWord::WRONG_LENGTH);
                };
                match u16::from_be_bytes(fid) {
                    FID_MF => (self.df, self.ef) = (Df::Mf, None),
                    FID_ADF if self.usim_active => (self.df, self.ef) = (Df::Adf, None),
                    fid => match Ef::from_fid(fid) {
                        Some(ef) if self.df == Df::Adf => self.ef = Some(ef),
                        _ => return sw(StatusWord::FILE_NOT_FOUND),
                    },
                }
            }
            0x04 => {
                let aid = &cmd.data;
                if aid.len() < USIM_AID_PREFIX.len() || !USIM_AID.starts_with(aid) {
                    return sw(StatusWord::FILE_NOT_FOUND);
                }
                (self.df, self.ef, self.usim_active) = (Df::Adf, None, true);
            }
            _ => return sw(StatusWord::INCORRECT_P1_P2),
        }
        if !with_fcp {
            return ResponseApdu::ok(Vec::new());
        }
        match self.fcp() {
            Ok(fcp) => ResponseApdu::ok(fcp),
            Err(_) => sw(StatusWord::NO_PRECISE_DIAGNOSIS),
        }
    }

    /// A minimal FCP template: file descriptor, file ID, and size or AID (ETSI TS 102 221 §11.1.1.4).
    fn fcp(&self) -> Result<Vec<u8>, ApduError> {
        let mut inner = Vec::new();
        match (self.df, self.ef) {
            (Df::Mf, _) => {
                write_tlv(&mut inner, 0x82, &[0x78, 0x21])?;
                write_tlv(&mut inner, 0x83, &FID_MF.to_be_bytes())?;
            }
            (Df::Adf, None) => {
                write_tlv(&mut inner, 0x82, &[0x78, 0x21])?;
                write_tlv(&mut inner, 0x83, &FID_ADF.to_be_bytes())?;
                write_tlv(&mut inner, 0x84, &USIM_AID)?;
            }
            (Df::Adf, Some(Ef::Gbabp)) => {
                write_tlv(&mut inner, 0x82, &[0x41, 0x21])?;
                write_tlv(&mut inner, 0x83, &FID_GBABP.to_be_bytes())?;
                write_tlv(&mut inner, 0x80, &(EF_GBABP_SIZE as u16).to_be_bytes())?;
            }
            (Df::Adf, Some(ef)) => {
                let (len, count) = self.record_shape(ef);
                let len = u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes();
                write_tlv(&mut inner, 0x82, &[0x42, 0x21, len[0], len[1], u8::try_from(count).unwrap_or(0xff)])?;
                write_tlv(&mut inner, 0x83, &ef.fid().to_be_bytes())?;
            }
        }
        let mut out = Vec::with_capacity(inner.len() + 2);
        write_tlv(&mut out, 0x62, &inner)?;
        Ok(out)
    }

    /// (record length, number of records) of a linear fixed EF.
    fn record_shape(&self, ef: Ef) -> (usize, usize) {
        let mbms = &self.usim.mbms;
        match ef {
            Ef::Msk => (EF_MSK_RECORD_LEN, mbms.capacity.msk_records.max(mbms.msks.len())),
            Ef::Muk => (EF_MUK_RECORD_LEN, mbms.capacity.muk_records.max(mbms.muks.len())),
            Ef::Gbanl => (EF_GBANL_RECORD_LEN, NAF_KEY_RECORDS.max(self.usim.naf_keys.len())),
            Ef::Gbabp => (0, 0),
        }
    }

    fn gbabp_image(&self) -> Result<Vec<u8>, ApduError> {
        match &self.usim.gba {
            None => Ok(vec![0xff; EF_GBABP_SIZE]),
            Some(g) => {
                EfGbabp { rand: g.rand, b_tid: g.b_tid.clone(), lifetime: g.lifetime.clone() }.encode(EF_GBABP_SIZE)
            }
        }
    }

    /// Record `index` (0-based) of a linear fixed EF, `FF` when unused.
    fn record(&self, ef: Ef, index: usize) -> Result<Vec<u8>, ApduError> {
        let (len, _) = self.record_shape(ef);
        let unused = || Ok(vec![0xff; len]);
        match ef {
            Ef::Msk => match self.usim.mbms.msks.get(index) {
                Some(r) if !r.keys.is_empty() => EfMskRecord {
                    key_domain_id: r.key_domain_id,
                    // EF_MSK holds at most two pairs; the store keeps no more.
                    pairs: r.keys.iter().take(2).map(|k| (k.id, k.ts.unwrap_or(0))).collect(),
                }
                .encode(),
                _ => unused(),
            },
            Ef::Muk => match self.usim.mbms.muks.get(index) {
                Some(r) => {
                    EfMukRecord { idr: r.current.idr.clone(), idi: r.idi.clone(), ts: r.current.ts.unwrap_or(0) }
                        .encode()
                }
                None => unused(),
            },
            Ef::Gbanl => match self.usim.naf_keys.get(index) {
                Some(r) => EfGbanlRecord { naf_id: r.naf_id.clone(), b_tid: r.b_tid.clone() }.encode(),
                None => unused(),
            },
            Ef::Gbabp => unused(),
        }
    }

    fn current_ef(&self) -> Result<Ef, ResponseApdu> {
        match (self.df, self.ef) {
            (Df::Adf, Some(ef)) => Ok(ef),
            _ => Err(sw(StatusWord::NO_CURRENT_EF)),
        }
    }

    fn binary_offset(cmd: &CommandApdu) -> Result<usize, ResponseApdu> {
        if cmd.p1 & 0x80 != 0 {
            // Short file identifiers are not supported.
            return Err(sw(StatusWord::INCORRECT_P1_P2));
        }
        let offset = usize::from(u16::from_be_bytes([cmd.p1, cmd.p2]));
        if offset >= EF_GBABP_SIZE {
            return Err(sw(StatusWord::WRONG_PARAMETERS));
        }
        Ok(offset)
    }

    fn read_binary(&mut self, cmd: &CommandApdu) -> ResponseApdu {
        let ef = match self.current_ef() {
            Ok(ef) => ef,
            Err(r) => return r,
        };
        if ef != Ef::Gbabp {
            return sw(StatusWord::INCOMPATIBLE_FILE_STRUCTURE);
        }
        if !cmd.data.is_empty() {
            return sw(StatusWord::WRONG_LENGTH);
        }
        let offset = match Self::binary_offset(cmd) {
            Ok(o) => o,
            Err(r) => return r,
        };
        match self.gbabp_image() {
            Ok(image) => {
                let end = image.len().min(offset + cmd.le_or_max());
                ResponseApdu::ok(image[offset..end].to_vec())
            }
            Err(_) => sw(StatusWord::NO_PRECISE_DIAGNOSIS),
        }
    }

    fn update_binary(&mut self, cmd: &CommandApdu) -> ResponseApdu {
        let ef = match self.current_ef() {
            Ok(ef) => ef,
            Err(r) => return r,
        };
        if ef != Ef::Gbabp {
            return sw(StatusWord::INCOMPATIBLE_FILE_STRUCTURE);
        }
        let offset = match Self::binary_offset(cmd) {
            Ok(o) => o,
            Err(r) => return r,
        };
        if cmd.data.is_empty() || offset + cmd.data.len() > EF_GBABP_SIZE {
            return sw(StatusWord::WRONG_LENGTH);
        }
        let Some(rand) = self.usim.gba.as_ref().map(|g| g.rand) else {
            // The same refusal as Usim::write_gba_bp without a bootstrapped key.
            return refusal(&CardError::ConditionsOfUse("no bootstrapped key"));
        };
        let mut image = match self.gbabp_image() {
            Ok(image) => image,
            Err(_) => return sw(StatusWord::NO_PRECISE_DIAGNOSIS),
        };
        image[offset..offset + cmd.data.len()].copy_from_slice(&cmd.data);
        match EfGbabp::decode(&image) {
            Ok(Some(EfGbabp { rand: new_rand, b_tid: Some(b_tid), lifetime: Some(lifetime) })) if new_rand == rand => {
                match self.usim.write_gba_bp(&b_tid, &lifetime) {
                    Ok(()) => ResponseApdu::ok(Vec::new()),
                    Err(e) => refusal(&e),
                }
            }
            // RAND is the card's to write; B-TID and lifetime come together.
            Ok(_) => sw(StatusWord::INCORRECT_DATA),
            Err(e) => bad_data(&e),
        }
    }

    fn read_record(&mut self, cmd: &CommandApdu) -> ResponseApdu {
        let ef = match self.current_ef() {
            Ok(ef) => ef,
            Err(r) => return r,
        };
        if ef == Ef::Gbabp {
            return sw(StatusWord::INCOMPATIBLE_FILE_STRUCTURE);
        }
        if cmd.p2 != 0x04 || cmd.p1 == 0 {
            return sw(StatusWord::INCORRECT_P1_P2);
        }
        if !cmd.data.is_empty() {
            return sw(StatusWord::WRONG_LENGTH);
        }
        let (_, count) = self.record_shape(ef);
        let index = usize::from(cmd.p1) - 1;
        if index >= count {
            return sw(StatusWord::RECORD_NOT_FOUND);
        }
        match self.record(ef, index) {
            Ok(record) => ResponseApdu::ok(record),
            Err(_) => sw(StatusWord::NO_PRECISE_DIAGNOSIS),
        }
    }

    // ------------------------------------------------------------------ AUTHENTICATE

    fn authenticate_even(&mut self, cmd: &CommandApdu) -> ResponseApdu {
        if cmd.p1 != 0x00 {
            return sw(StatusWord::INCORRECT_P1_P2);
        }
        let gba = match cmd.p2 & 0x7f {
            0x01 => false,
            0x04 => true,
            _ => return sw(StatusWord::INCORRECT_P1_P2),
        };
        if !self.usim_active {
            return sw(StatusWord::CONDITIONS_OF_USE_NOT_SATISFIED);
        }
        if !gba {
            return match Aka3gCommand::decode(&cmd.data) {
                Ok(c) => match self.usim.authenticate_3g(&c.rand, &c.autn) {
                    Ok(answer) => ResponseApdu::ok(encode_aka_answer(&answer)),
                    Err(e) => refusal(&e),
                },
                Err(e) => bad_data(&e),
            };
        }
        match GbaCommand::decode(&cmd.data) {
            Ok(GbaCommand::Bootstrap { rand, autn }) => match self.usim.gba_bootstrap(&rand, &autn) {
                Ok(answer) => ResponseApdu::ok(encode_aka_answer(&answer)),
                Err(e) => refusal(&e),
            },
            Ok(GbaCommand::NafDerivation { naf_id, impi }) => match self.usim.gba_naf_derivation(&naf_id, &impi) {
                Ok(ext) => ResponseApdu::ok(encode_naf_answer(&ext)),
                Err(e) => refusal(&e),
            },
            Err(e) => bad_data(&e),
        }
    }

    fn authenticate_odd(&mut self, cmd: &CommandApdu, chain: Option<Chain>) -> ResponseApdu {
        if !matches!(cmd.p2 & 0x7f, 0x05 | 0x06) {
            return sw(StatusWord::INCORRECT_P1_P2);
        }
        if !self.usim_active {
            return sw(StatusWord::CONDITIONS_OF_USE_NOT_SATISFIED);
        }
        let progress = match (cmd.p1, chain) {
            (P1_FIRST_BLOCK, _) => {
                if cmd.data.is_empty() {
                    return sw(StatusWord::WRONG_LENGTH);
                }
                CommandChain::start(cmd.p2, &cmd.data)
            }
            (P1_NEXT_BLOCK, Some(Chain::Command(c))) if c.p2 == cmd.p2 => {
                if cmd.data.is_empty() {
                    return sw(StatusWord::WRONG_LENGTH);
                }
                c.push(&cmd.data)
            }
            (P1_FIRST_RESPONSE, Some(Chain::Response(mut r))) if r.p2 == cmd.p2 => {
                r.restart();
                return self.fetch(cmd, r);
            }
            (P1_NEXT_RESPONSE, Some(Chain::Response(r))) if r.p2 == cmd.p2 && r.started() => {
                return self.fetch(cmd, r);
            }
            _ => return sw(StatusWord::INCORRECT_P1_P2),
        };
        let data = match progress {
            Ok(ChainProgress::NeedMore(c)) => {
                self.chain = Some(Chain::Command(c));
                return sw(StatusWord::MORE_DATA_EXPECTED);
            }
            Ok(ChainProgress::Complete(data)) => data,
            Err(e) => return bad_data(&e),
        };
        let answer = if cmd.p2 & 0x7f == 0x05 { self.mbms(&data) } else { self.local_key(&data) };
        match answer {
            Ok(answer) => {
                self.chain = Some(Chain::Response(ResponseChain::new(cmd.p2, answer)));
                sw(StatusWord::RESPONSE_DATA_AVAILABLE)
            }
            Err(r) => r,
        }
    }

    fn fetch(&mut self, cmd: &CommandApdu, mut r: ResponseChain) -> ResponseApdu {
        if !cmd.data.is_empty() {
            return sw(StatusWord::WRONG_LENGTH);
        }
        let (block, more) = r.next_block(self.block_size.min(cmd.le_or_max()));
        if more {
            self.chain = Some(Chain::Response(r));
            ResponseApdu::new(block, StatusWord::MORE_DATA_AVAILABLE)
        } else {
            ResponseApdu::ok(block)
        }
    }

    fn mbms(&mut self, data: &[u8]) -> Result<Vec<u8>, ResponseApdu> {
        let cmd = MbmsCommand::decode(data).map_err(|e| bad_data(&e))?;
        let content = match cmd {
            MbmsCommand::MskUpdate(ltkm) => {
                self.usim.msk_update(&ltkm).map_err(|e| refusal(&e))?.verification.unwrap_or_default()
            }
            MbmsCommand::MtkGeneration(stkm) => {
                encode_tek_out(&self.usim.mtk_generation(&stkm).map_err(|e| refusal(&e))?.tek)
            }
            MbmsCommand::MskDeletion { key_domain_id, key_group } => {
                self.usim.msk_deletion(key_domain_id, key_group).map_err(|e| refusal(&e))?;
                Vec::new()
            }
            MbmsCommand::MukDeletion { idi, idr } => {
                self.usim.muk_deletion(&idi, &idr).map_err(|e| refusal(&e))?;
                Vec::new()
            }
        };
        encode_mbms_answer(&content).map_err(|_| sw(StatusWord::NO_PRECISE_DIAGNOSIS))
    }

    fn local_key(&mut self, data: &[u8]) -> Result<Vec<u8>, ResponseApdu> {
        match decode_local_key_command(data).map_err(|e| bad_data(&e))? {
            LocalKeyCommand::Establish(req) => {
                let verification = self.usim.local_key_establishment(&req).map_err(|e| refusal(&e))?;
                Ok(encode_local_key_answer(&verification))
            }
            LocalKeyCommand::AvailabilityCheck(ids) => {
                let status = self
                    .usim
                    .local_key_available(&ids.naf_id, &ids.terminal_id, &ids.terminal_appli_id, &ids.uicc_appli_id)
                    .map_err(|e| refusal(&e))?;
                Ok(encode_local_key_status(status))
            }
        }
    }

    // ------------------------------------------------------------ OMA BCAST (INS 1B)

    fn bcast(&mut self, cmd: &CommandApdu) -> ResponseApdu {
        // P1 `80` is a first block that is also the last: no BCAST command needs chaining.
        if !matches!(cmd.p1, 0x00 | 0x80) || !matches!(cmd.p2, BCAST_MODE_SPE_AUDIT | BCAST_MODE_PARENTAL) {
            return sw(StatusWord::INCORRECT_P1_P2);
        }
        if !self.usim_active {
            return sw(StatusWord::CONDITIONS_OF_USE_NOT_SATISFIED);
        }
        let answer = if cmd.p2 == BCAST_MODE_SPE_AUDIT {
            decode_audit_request(&cmd.data).map_err(|e| bad_data(&e)).and_then(|(kd, id)| {
                let counters = self.usim.audit(kd, id).map_err(|e| refusal(&e))?;
                encode_audit_answer(&counters).map_err(|_| sw(StatusWord::NO_PRECISE_DIAGNOSIS))
            })
        } else if cmd.data.is_empty() {
            encode_parental(self.usim.parental_limit()).map_err(|_| sw(StatusWord::NO_PRECISE_DIAGNOSIS))
        } else {
            decode_parental(&cmd.data)
                .map_err(|e| bad_data(&e))
                .and_then(|limit| self.usim.set_parental_limit(limit).map_err(|e| refusal(&e)))
                .map(|()| Vec::new())
        };
        match answer {
            Ok(data) => ResponseApdu::ok(data),
            Err(r) => r,
        }
    }
}

impl Transport for Emulator {
    /// Never fails: every command gets a status word.
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        Ok(self.transmit_bytes(command))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usim::UsimIdentity;
    use keycast_crypto::keys::{Opc, SubscriberKey};

    fn emulator() -> Emulator {
        let id = UsimIdentity { imsi: "001010000000001".into(), impi: "a@b".into(), iccid: "89".into() };
        Emulator::new(Usim::new(id, SubscriberKey::from_bytes([1; 16]), Opc::from_bytes([2; 16])))
    }

    fn send(e: &mut Emulator, hex_apdu: &str) -> Vec<u8> {
        e.transmit_bytes(&hex::decode(hex_apdu).unwrap())
    }

    #[test]
    fn selects_usim_by_partial_aid_and_efs_from_the_adf() {
        let mut e = emulator();
        assert_eq!(send(&mut e, "00a4000c026fd6"), [0x6a, 0x82], "EF from the MF");
        assert_eq!(send(&mut e, "00a4040c07a0000000871002"), [0x90, 0x00]);
        assert_eq!(send(&mut e, "00a4000c026fd6"), [0x90, 0x00]);
        let fcp = send(&mut e, "00a40004026fd7");
        assert_eq!(&fcp[..2], [0x62, 0x0b], "FCP of EF_MSK");
        assert_eq!(&fcp[fcp.len() - 2..], [0x90, 0x00]);
        assert_eq!(send(&mut e, "00a4000c026f00"), [0x6a, 0x82]);
        assert_eq!(send(&mut e, "00a4040c05a000000087"), [0x6a, 0x82], "shorter than the USIM prefix");
    }

    #[test]
    fn rejects_authenticate_before_the_usim_is_selected() {
        let mut e = emulator();
        assert_eq!(
            send(&mut e, &format!("0088008122 10{} 10{}", "00".repeat(16), "00".repeat(16)).replace(' ', "")),
            [0x69, 0x85]
        );
    }

    #[test]
    fn rejects_read_binary_without_a_current_ef() {
        let mut e = emulator();
        send(&mut e, "00a4040c07a0000000871002");
        assert_eq!(send(&mut e, "00b0000000"), [0x69, 0x86]);
    }

    #[test]
    fn never_panics_on_short_or_odd_bytes() {
        let mut e = emulator();
        for bytes in [&[][..], &[0x00], &[0x00, 0x89, 0x80, 0x85, 0x00, 0x01], &[0xff; 300]] {
            assert!(e.transmit_bytes(bytes).len() >= 2);
        }
    }
}
