//! The APDU layer: ISO 7816-4 short command and response APDUs, status words, a minimal BER-TLV
//! codec, the TS 31.102 AUTHENTICATE data of every context Keycast uses, the EF layouts of
//! TS 31.102 §4.2 and the odd-INS block chaining.
//!
//! Everything here is a pure codec: bytes in, values out, and every refusal is an [`ApduError`]
//! naming the field and the byte offset. [`crate::emulator`] answers these APDUs as a card,
//! [`crate::apdu_card`] sends them as a terminal.
//!
//! # Choices (Keycast's where the texts leave it open)
//!
//! - **APDUs** are short only (ISO 7816-3 §12.1.3): `Lc` 1–255, `Le` 1–256 (`00` = 256). An `Lc`
//!   of `00` (an extended-length APDU) is refused.
//! - **AUTHENTICATE, even INS `88`** (31.102 §7.1.2; facts-3gpp §4.3, §4.4): P1 `00`; P2 `81` 3G
//!   (`L RAND L AUTN` → `DB L RES L CK L IK [L Kc]` / `DC L AUTS`), P2 `84` GBA (`DD L RAND L
//!   AUTN` → `DB L RES` / `DC L AUTS`; `DE L NAF_ID L IMPI` → `DB L Ks_ext_NAF`). P2 with b8 = 0
//!   (`01`, `04`) is accepted as the same context.
//! - **AUTHENTICATE, odd INS `89`**, P2 `85` MBMS (facts-3gpp §4.5): `53 L mode data`, modes `01`
//!   MSK update (the whole LTKM), `02` MTK generation (the whole STKM), `03` MSK deletion (Key
//!   Domain ID (3) ‖ Key Group (2)), `04` MUK deletion (`A0 L {80 L IDr, 82 L IDi}`); answers
//!   `53 L DB [verification message | TEK ‖ salt]`. The TEK answer's length tells its form: 16 or
//!   30 bytes TEK [‖ salt] in the clear, 24 or 38 bytes TBK-wrapped TEK [‖ salt], 40 bytes
//!   `AES-KW(K_sac, TEK ‖ salt ‖ 00 00)` (profile P-10).
//! - **Local Key Establishment**, odd INS `89` P2 `86` — profile: P-10 \[chosen\], the 31.102 coding
//!   could not be read: command `73 L { 80 L NAF_ID, 81 L Terminal_ID, 82 L Terminal_appli_ID,
//!   83 L UICC_appli_ID, 84 L RANDx, 85 10 Counter Limit, 86 10 MAC }` in this order; answer
//!   `53 12 DB 10 verification` (the `DB L verification` content, wrapped in `53` like every
//!   odd-INS answer; the terminal also accepts it unwrapped).
//! - **Local Key Establishment, availability check** (TS 33.110 Annex B) — Keycast choice, profile:
//!   P-10 \[chosen\]: the same P2 `86` with only the four identifiers, `73 L { 80 L NAF_ID,
//!   81 L Terminal_ID, 82 L Terminal_appli_ID, 83 L UICC_appli_ID }` (no `84`/`85`/`86`); answer
//!   `53 03 DB 01 status`, status `00` no Ks_local established for these identifiers, `01`
//!   available, `02` established but its Counter Limit is used up. `6A88` when the card holds no
//!   Ks_int_NAF for NAF_ID. A command with some but not all of `84`–`86` is refused (`6700`).
//! - **OMA BCAST command, INS `1B`** (facts-3gpp §4.8: P2 = mode, container tag `AE`) — Keycast
//!   choice (OMA BCAST SCP coding not readable; profile: P-4, P-10 \[chosen\]). P1 `00` (`80`, a
//!   first and only block, is accepted too); no chaining: every command and answer fits a short
//!   APDU. Another P1 or an unknown mode answers `6A86`.
//!   - Mode `01` **SPE audit**: data = Key Domain ID (3) ‖ SEK/PEK ID (4) (else `6700`); answer
//!     `AE L { 80 L { 81 04 live STKMs, 82 04 play-back sessions, 83 02 play-backs left, 84 02
//!     views left, 85 L PPV program, 86 02 paid programs, 87 01 consumption_reporting_flag } }`,
//!     every field present, in this order; `85` is empty (not locked to a program yet), `00`
//!     (locked to a program without program ID) or `01 ‖ u32` (locked to that program ID).
//!     `6A88` when the key is not held.
//!   - Mode `04` **parental control**: no data reads the setting, answer `AE L { 88 L limit }`;
//!     data `AE L { 88 L limit }` sets it (answer `9000`, no data). `88` empty means no
//!     restriction, one byte is the highest minimum age the holder may watch; a longer value is
//!     `6700`, another tag `6A80`. Setting it is refused with `6982` unless a secure channel
//!     (Local Key Establishment, P-10) is established and not used up: the terminal must not
//!     change the holder's restriction without the authenticated channel.
//!   - Modes `02` (SPE_SIG in the implementation cross-check of facts-3gpp §4.8: by its name SPE
//!     signalling, not parental control, so left free) and `03` (REC audit: the listing of every
//!     key's counters would not fit one short answer) are not supported (`6A86`).
//! - **Block chaining for the odd INS** (facts-3gpp §4.3: P1 `80`/`00` command blocks, `A0`/`20`
//!   response blocks; the 62F1/62F3/63F1 meanings are from TS 31.101 \[unconfirmed\]):
//!   1. The terminal splits the whole `53`/`73` TLV into blocks of at most the block size
//!      (default 255, at least [`MIN_BLOCK_SIZE`]) and sends them as case-3 APDUs, P1 `80` for
//!      the first and `00` for the next. The card learns the total length from the TLV header,
//!      which must be complete in the first block.
//!   2. The card answers `63F1` (more data expected) to every block but the last. After the last
//!      it runs the command and answers a refusal's status word, or `62F3` (response data
//!      available) with no data.
//!   3. The terminal fetches the answer with case-2 APDUs (no data, `Le`), P1 `A0` for the first
//!      block and `20` for the next; the card answers each block with `62F1` while more remains
//!      and `9000` with the last.
//!   4. Any other command aborts a chain in progress; a continuation without a chain (or with
//!      another P2) is refused with `6A86`.
//! - **Files** (31.102 §4.2): EF_GBABP is a 255-byte transparent EF `L RAND L B-TID L lifetime`
//!   padded with `FF`; a length byte `FF` after RAND means "not written yet" and bytes after the
//!   lifetime are padding. EF_MSK records are 20 bytes (n = 2); EF_MUK and EF_GBANL records are
//!   255 bytes of BER-TLV padded with `FF`. A reset TS counter reads as 0.
//! - **Status words for APDU-level problems**: malformed lengths `6700`, bad tags or values in the
//!   data `6A80`, unknown mode or GBA tag in the data `9864` (the card has no such mode, as
//!   [`CardError::ContextNotSupported`]), bad P1/P2 `6A86`, unknown INS `6D00`, CLA `6E00`.

use core::fmt;

use keycast_crypto::keys::{Ck, Ik, KsExtNaf, Res, Tek, TekSalt};
use keycast_mikey::{KeyDomainId, SekPekId};
use zeroize::Zeroizing;

use crate::error::CardError;
use crate::mbms::{AuditCounters, TekOut};
use crate::sac::{LocalKeyIds, LocalKeyStatus};
use crate::usim::{AkaAnswer, LocalKeyRequest};

// ------------------------------------------------------------------------------------ errors

/// What is wrong with APDU bytes, where, and in which field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} at offset {offset}: {kind}")]
pub struct ApduError {
    /// Byte offset of the problem from the start of the decoded buffer.
    pub offset: usize,
    /// The field being read or written.
    pub field: &'static str,
    /// What is wrong.
    pub kind: ApduErrorKind,
}

/// The kinds of [`ApduError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApduErrorKind {
    /// Fewer bytes than the field needs.
    #[error("truncated: needed {needed} bytes, {left} left")]
    Truncated {
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left.
        left: usize,
    },
    /// Bytes left over after a complete value.
    #[error("{left} trailing bytes")]
    TrailingData {
        /// Bytes left over.
        left: usize,
    },
    /// A length that is not allowed here.
    #[error("length {0} not allowed")]
    BadLength(usize),
    /// A tag that is not allowed here.
    #[error("unexpected tag {0:02X}")]
    BadTag(u16),
    /// A value that is not allowed here.
    #[error("value not allowed")]
    BadValue,
    /// A mode or tag the card does not support.
    #[error("mode {0:02X} not supported")]
    Unsupported(u16),
    /// A value too long for its length field or container.
    #[error("{len} bytes do not fit (at most {max})")]
    TooLong {
        /// The length.
        len: usize,
        /// The most that fits.
        max: usize,
    },
}

impl ApduError {
    fn new(offset: usize, field: &'static str, kind: ApduErrorKind) -> Self {
        Self { offset, field, kind }
    }

    fn too_long(field: &'static str, len: usize, max: usize) -> Self {
        Self::new(0, field, ApduErrorKind::TooLong { len, max })
    }

    /// The status word a card answers for command data with this problem (the one place this
    /// mapping is made).
    pub fn status_word(&self) -> StatusWord {
        match self.kind {
            ApduErrorKind::Truncated { .. }
            | ApduErrorKind::TrailingData { .. }
            | ApduErrorKind::BadLength(_)
            | ApduErrorKind::TooLong { .. } => StatusWord::WRONG_LENGTH,
            ApduErrorKind::BadTag(_) | ApduErrorKind::BadValue => StatusWord::INCORRECT_DATA,
            ApduErrorKind::Unsupported(_) => StatusWord::SECURITY_CONTEXT_NOT_SUPPORTED,
        }
    }
}

// ------------------------------------------------------------------------------------ reader

/// A cursor over bytes that knows its offset in the outermost buffer.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    base: usize,
}

impl<'a> Reader<'a> {
    /// A reader over a whole buffer (offsets start at 0).
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, base: 0 }
    }

    /// Offset of the next byte from the start of the outermost buffer.
    pub fn offset(&self) -> usize {
        self.base
    }

    /// Bytes left.
    pub fn left(&self) -> usize {
        self.buf.len()
    }

    /// Whether any byte is left.
    pub fn any_left(&self) -> bool {
        !self.buf.is_empty()
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], ApduError> {
        if n > self.buf.len() {
            return Err(self.error(field, ApduErrorKind::Truncated { needed: n, left: self.buf.len() }));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        self.base += n;
        Ok(head)
    }

    /// The next byte.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, ApduError> {
        Ok(self.take(1, field)?[0])
    }

    /// A child reader over the next `len` bytes.
    pub fn sub(&mut self, len: usize, field: &'static str) -> Result<Reader<'a>, ApduError> {
        let base = self.base;
        Ok(Reader { buf: self.take(len, field)?, base })
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        let rest = self.buf;
        self.base += rest.len();
        self.buf = &[];
        rest
    }

    /// Fails when bytes are left.
    pub fn expect_empty(&self, field: &'static str) -> Result<(), ApduError> {
        match self.buf.len() {
            0 => Ok(()),
            left => Err(self.error(field, ApduErrorKind::TrailingData { left })),
        }
    }

    /// An error at the current offset.
    pub fn error(&self, field: &'static str, kind: ApduErrorKind) -> ApduError {
        ApduError::new(self.base, field, kind)
    }
}

// ------------------------------------------------------------------------------ status words

/// A status word SW1 ‖ SW2. The constants name the words Keycast answers or reads
/// (TS 31.102 §7.3 for `98xx` and the chaining words; ISO 7816-4 §5.6 for the others).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatusWord(pub u16);

impl StatusWord {
    /// 9000: normal ending.
    pub const SUCCESS: Self = Self(0x9000);
    /// 9862: authentication error, incorrect MAC (31.102 §7.3).
    pub const INCORRECT_MAC: Self = Self(0x9862);
    /// 9864: security context not supported (31.102 §7.3).
    pub const SECURITY_CONTEXT_NOT_SUPPORTED: Self = Self(0x9864);
    /// 9865: key freshness failure (31.102 §7.3).
    pub const KEY_FRESHNESS_FAILURE: Self = Self(0x9865);
    /// 9866: no memory space available (31.102 §7.3).
    pub const NO_MEMORY: Self = Self(0x9866);
    /// 9867: no memory space available in EF_MUK (31.102 §7.3).
    pub const NO_MEMORY_EF_MUK: Self = Self(0x9867);
    /// 62F1: more response data available (31.101, \[unconfirmed\]); odd-INS response blocks.
    pub const MORE_DATA_AVAILABLE: Self = Self(0x62f1);
    /// 62F3: authentication response data available (31.101, \[unconfirmed\]); end of an odd-INS
    /// command chain.
    pub const RESPONSE_DATA_AVAILABLE: Self = Self(0x62f3);
    /// 63F1: more data expected (31.101, \[unconfirmed\]); odd-INS command blocks.
    pub const MORE_DATA_EXPECTED: Self = Self(0x63f1);
    /// 6700: wrong length (ISO 7816-4).
    pub const WRONG_LENGTH: Self = Self(0x6700);
    /// 6981: command incompatible with file structure (ISO 7816-4).
    pub const INCOMPATIBLE_FILE_STRUCTURE: Self = Self(0x6981);
    /// 6982: security status not satisfied (ISO 7816-4).
    pub const SECURITY_STATUS_NOT_SATISFIED: Self = Self(0x6982);
    /// 6985: conditions of use not satisfied (ISO 7816-4).
    pub const CONDITIONS_OF_USE_NOT_SATISFIED: Self = Self(0x6985);
    /// 6986: command not allowed, no current EF (ISO 7816-4).
    pub const NO_CURRENT_EF: Self = Self(0x6986);
    /// 6A80: incorrect parameters in the data field (ISO 7816-4).
    pub const INCORRECT_DATA: Self = Self(0x6a80);
    /// 6A82: file or application not found (ISO 7816-4).
    pub const FILE_NOT_FOUND: Self = Self(0x6a82);
    /// 6A83: record not found (ISO 7816-4).
    pub const RECORD_NOT_FOUND: Self = Self(0x6a83);
    /// 6A86: incorrect parameters P1-P2 (ISO 7816-4).
    pub const INCORRECT_P1_P2: Self = Self(0x6a86);
    /// 6A88: referenced data (key) not found (ISO 7816-4).
    pub const REFERENCED_DATA_NOT_FOUND: Self = Self(0x6a88);
    /// 6B00: wrong parameters P1-P2, e.g. an offset outside the EF (ISO 7816-4).
    pub const WRONG_PARAMETERS: Self = Self(0x6b00);
    /// 6D00: instruction code not supported (ISO 7816-4).
    pub const INS_NOT_SUPPORTED: Self = Self(0x6d00);
    /// 6E00: class not supported (ISO 7816-4).
    pub const CLA_NOT_SUPPORTED: Self = Self(0x6e00);
    /// 6F00: no precise diagnosis (ISO 7816-4).
    pub const NO_PRECISE_DIAGNOSIS: Self = Self(0x6f00);

    /// SW1.
    pub fn sw1(self) -> u8 {
        (self.0 >> 8) as u8
    }

    /// SW2.
    pub fn sw2(self) -> u8 {
        self.0 as u8
    }

    /// Whether this is 9000.
    pub fn is_success(self) -> bool {
        self == Self::SUCCESS
    }
}

impl fmt::Debug for StatusWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StatusWord({:04X})", self.0)
    }
}

impl fmt::Display for StatusWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04X}", self.0)
    }
}

impl From<&CardError> for StatusWord {
    fn from(e: &CardError) -> Self {
        Self(e.status_word())
    }
}

// ------------------------------------------------------------------------------ instructions

/// INS SELECT (ISO 7816-4; 31.101).
pub const INS_SELECT: u8 = 0xa4;
/// INS READ BINARY.
pub const INS_READ_BINARY: u8 = 0xb0;
/// INS READ RECORD.
pub const INS_READ_RECORD: u8 = 0xb2;
/// INS UPDATE BINARY.
pub const INS_UPDATE_BINARY: u8 = 0xd6;
/// INS GET RESPONSE (T = 0 cards answering `61XX`).
pub const INS_GET_RESPONSE: u8 = 0xc0;
/// INS AUTHENTICATE, even (3G and GBA contexts; 31.102 §7.1.2).
pub const INS_AUTHENTICATE: u8 = 0x88;
/// INS AUTHENTICATE, odd (BER-TLV data: MBMS and Local Key Establishment; 31.102 §7.1.2).
pub const INS_AUTHENTICATE_ODD: u8 = 0x89;
/// INS of the OMA BCAST Smartcard Profile command (31.102 §7.4 note; facts-3gpp §4.8).
pub const INS_BCAST: u8 = 0x1b;

/// P2 of AUTHENTICATE: 3G context, specific reference data.
pub const P2_3G: u8 = 0x81;
/// P2 of AUTHENTICATE: GBA context.
pub const P2_GBA: u8 = 0x84;
/// P2 of AUTHENTICATE: MBMS context.
pub const P2_MBMS: u8 = 0x85;
/// P2 of AUTHENTICATE: Local Key Establishment context.
pub const P2_LOCAL_KEY: u8 = 0x86;

/// P1 of an odd-INS AUTHENTICATE: first command block.
pub const P1_FIRST_BLOCK: u8 = 0x80;
/// P1 of an odd-INS AUTHENTICATE: next command block.
pub const P1_NEXT_BLOCK: u8 = 0x00;
/// P1 of an odd-INS AUTHENTICATE: first response block.
pub const P1_FIRST_RESPONSE: u8 = 0xa0;
/// P1 of an odd-INS AUTHENTICATE: next response block.
pub const P1_NEXT_RESPONSE: u8 = 0x20;

/// Tag of a successful AUTHENTICATE answer.
pub const TAG_SUCCESS: u8 = 0xdb;
/// Tag of a synchronisation failure (AUTS).
pub const TAG_SYNC_FAILURE: u8 = 0xdc;
/// Tag of the GBA bootstrapping mode.
pub const TAG_GBA_BOOTSTRAP: u8 = 0xdd;
/// Tag of the GBA NAF derivation mode.
pub const TAG_NAF_DERIVATION: u8 = 0xde;
/// Odd-INS wrapping tag of data that is not BER-TLV structured.
pub const TAG_WRAP_PLAIN: u16 = 0x53;
/// Odd-INS wrapping tag of BER-TLV structured data.
pub const TAG_WRAP_TLV: u16 = 0x73;

/// MBMS mode: MSK update.
pub const MODE_MSK_UPDATE: u8 = 0x01;
/// MBMS mode: MTK generation.
pub const MODE_MTK_GENERATION: u8 = 0x02;
/// MBMS mode: MSK deletion.
pub const MODE_MSK_DELETION: u8 = 0x03;
/// MBMS mode: MUK deletion.
pub const MODE_MUK_DELETION: u8 = 0x04;

/// OMA BCAST command mode (P2): SPE audit — Keycast choice (OMA BCAST SCP coding not readable;
/// profile: P-4 \[chosen\]).
pub const BCAST_MODE_SPE_AUDIT: u8 = 0x01;
/// OMA BCAST command mode (P2): parental control — Keycast choice (OMA BCAST SCP coding not
/// readable; profile: P-4, P-10 \[chosen\]). Not `02`: that is SPE_SIG (facts-3gpp §4.8).
pub const BCAST_MODE_PARENTAL: u8 = 0x04;
/// Tag of the OMA BCAST container (31.102 §7.1.2.5 note; facts-3gpp §4.8).
pub const TAG_BCAST: u16 = 0xae;
/// Tag of the BCAST management data inside `AE` (facts-3gpp §4.8).
pub const TAG_BCAST_MANAGEMENT: u16 = 0x80;
/// Tag of the parental setting inside `AE` (facts-3gpp §4.8 names `88` parental control).
pub const TAG_PARENTAL: u16 = 0x88;

/// FID of the MF.
pub const FID_MF: u16 = 0x3f00;
/// FID that names the current ADF.
pub const FID_ADF: u16 = 0x7fff;
/// FID of EF_GBABP.
pub const FID_GBABP: u16 = 0x6fd6;
/// FID of EF_MSK.
pub const FID_MSK: u16 = 0x6fd7;
/// FID of EF_MUK.
pub const FID_MUK: u16 = 0x6fd8;
/// FID of EF_GBANL.
pub const FID_GBANL: u16 = 0x6fda;

/// The USIM application code prefix of every USIM AID: RID A000000087 ‖ app code 1002 (TS 31.110
/// / ETSI TS 101 220).
pub const USIM_AID_PREFIX: [u8; 7] = [0xa0, 0x00, 0x00, 0x00, 0x87, 0x10, 0x02];

// -------------------------------------------------------------------------------- APDUs

/// An ISO 7816-4 short command APDU (cases 1–4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandApdu {
    /// Class byte.
    pub cla: u8,
    /// Instruction byte.
    pub ins: u8,
    /// P1.
    pub p1: u8,
    /// P2.
    pub p2: u8,
    /// Command data (`Lc` = its length; empty: no `Lc`).
    pub data: Vec<u8>,
    /// Expected response length, 1–256 (`None`: no `Le`).
    pub le: Option<u16>,
}

/// Most bytes of command data in a short APDU.
pub const MAX_LC: usize = 255;
/// Most response bytes a short `Le` asks for.
pub const MAX_LE: u16 = 256;

impl CommandApdu {
    /// A case-1 APDU (no data, no `Le`).
    pub fn new(cla: u8, ins: u8, p1: u8, p2: u8) -> Self {
        Self { cla, ins, p1, p2, data: Vec::new(), le: None }
    }

    /// With command data.
    #[must_use]
    pub fn with_data(mut self, data: Vec<u8>) -> Self {
        self.data = data;
        self
    }

    /// With `Le`.
    #[must_use]
    pub fn with_le(mut self, le: u16) -> Self {
        self.le = Some(le);
        self
    }

    /// The ISO 7816-3 case: 1 (nothing), 2 (`Le`), 3 (data), 4 (data and `Le`).
    pub fn case(&self) -> u8 {
        match (self.data.is_empty(), self.le.is_some()) {
            (true, false) => 1,
            (true, true) => 2,
            (false, false) => 3,
            (false, true) => 4,
        }
    }

    /// `Le`, or 256 when absent (what a card sends at most).
    pub fn le_or_max(&self) -> usize {
        usize::from(self.le.unwrap_or(MAX_LE))
    }

    /// Decodes a short command APDU; refuses extended lengths, an `Lc` that does not match the
    /// bytes, and trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, ApduError> {
        let mut r = Reader::new(bytes);
        let header = r.take(4, "header")?;
        let mut apdu = Self::new(header[0], header[1], header[2], header[3]);
        if !r.any_left() {
            return Ok(apdu);
        }
        let first = r.u8("Lc or Le")?;
        if !r.any_left() {
            apdu.le = Some(if first == 0 { MAX_LE } else { u16::from(first) });
            return Ok(apdu);
        }
        if first == 0 {
            return Err(ApduError::new(4, "Lc (extended lengths are not supported)", ApduErrorKind::BadLength(0)));
        }
        apdu.data = r.take(usize::from(first), "command data")?.to_vec();
        match r.left() {
            0 => {}
            1 => {
                let le = r.u8("Le")?;
                apdu.le = Some(if le == 0 { MAX_LE } else { u16::from(le) });
            }
            _ => r.expect_empty("after Le")?,
        }
        Ok(apdu)
    }

    /// Appends the encoded APDU; refuses data longer than 255 bytes and `Le` outside 1–256.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), ApduError> {
        if self.data.len() > MAX_LC {
            return Err(ApduError::too_long("command data", self.data.len(), MAX_LC));
        }
        let le = match self.le {
            None => None,
            Some(le @ 1..=MAX_LE) => Some((le % 256) as u8),
            Some(le) => return Err(ApduError::new(0, "Le", ApduErrorKind::BadLength(usize::from(le)))),
        };
        out.extend_from_slice(&[self.cla, self.ins, self.p1, self.p2]);
        if !self.data.is_empty() {
            // Checked above: at most 255.
            out.push(self.data.len() as u8);
            out.extend_from_slice(&self.data);
        }
        out.extend(le);
        Ok(())
    }

    /// The encoded APDU.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ApduError> {
        let mut out = Vec::with_capacity(6 + self.data.len());
        self.encode(&mut out)?;
        Ok(out)
    }
}

/// A response APDU: data ‖ SW1 ‖ SW2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseApdu {
    /// Response data.
    pub data: Vec<u8>,
    /// Status word.
    pub sw: StatusWord,
}

impl ResponseApdu {
    /// A response with data and a status word.
    pub fn new(data: Vec<u8>, sw: StatusWord) -> Self {
        Self { data, sw }
    }

    /// A status word alone.
    pub fn status(sw: StatusWord) -> Self {
        Self { data: Vec::new(), sw }
    }

    /// Data with 9000.
    pub fn ok(data: Vec<u8>) -> Self {
        Self { data, sw: StatusWord::SUCCESS }
    }

    /// Decodes data ‖ SW1 ‖ SW2.
    pub fn decode(bytes: &[u8]) -> Result<Self, ApduError> {
        if bytes.len() < 2 {
            return Err(ApduError::new(0, "status word", ApduErrorKind::Truncated { needed: 2, left: bytes.len() }));
        }
        let (data, sw) = bytes.split_at(bytes.len() - 2);
        Ok(Self { data: data.to_vec(), sw: StatusWord(u16::from_be_bytes([sw[0], sw[1]])) })
    }

    /// Encodes data ‖ SW1 ‖ SW2.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.len() + 2);
        out.extend_from_slice(&self.data);
        out.extend_from_slice(&self.sw.0.to_be_bytes());
        out
    }
}

// ---------------------------------------------------------------------------- BER-TLV

/// Largest value a BER-TLV length of this codec can carry (`83 xxxxxx`).
pub const MAX_TLV_LEN: usize = 0xff_ffff;

/// One BER-TLV element borrowed from its buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    /// Tag (one byte, or two when the first byte's low five bits are all set).
    pub tag: u16,
    /// Value.
    pub value: &'a [u8],
    /// Offset of the value in the outermost buffer.
    pub value_offset: usize,
}

/// Reads a BER-TLV tag and length; returns (tag, value length).
pub fn read_tlv_header(r: &mut Reader<'_>) -> Result<(u16, usize), ApduError> {
    let at = r.offset();
    let first = r.u8("TLV tag")?;
    if first == 0x00 || first == 0xff {
        return Err(ApduError::new(at, "TLV tag", ApduErrorKind::BadTag(u16::from(first))));
    }
    let tag = if first & 0x1f == 0x1f {
        let second = r.u8("TLV tag (2nd byte)")?;
        if second & 0x80 != 0 || second < 0x1f {
            // A third tag byte follows, or the short form should have been used.
            return Err(ApduError::new(at, "TLV tag", ApduErrorKind::BadTag(u16::from_be_bytes([first, second]))));
        }
        u16::from_be_bytes([first, second])
    } else {
        u16::from(first)
    };
    let at = r.offset();
    let len = match r.u8("TLV length")? {
        l @ 0x00..=0x7f => usize::from(l),
        n @ 0x81..=0x83 => {
            let bytes = r.take(usize::from(n - 0x80), "TLV length")?;
            bytes.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
        }
        other => return Err(ApduError::new(at, "TLV length", ApduErrorKind::BadLength(usize::from(other)))),
    };
    Ok((tag, len))
}

/// Reads one BER-TLV element.
pub fn read_tlv<'a>(r: &mut Reader<'a>) -> Result<Tlv<'a>, ApduError> {
    let (tag, len) = read_tlv_header(r)?;
    let value_offset = r.offset();
    let value = r.take(len, "TLV value")?;
    Ok(Tlv { tag, value, value_offset })
}

/// Reads one element whose tag must be `tag`.
pub fn expect_tlv<'a>(r: &mut Reader<'a>, tag: u16, field: &'static str) -> Result<Tlv<'a>, ApduError> {
    let at = r.offset();
    let tlv = read_tlv(r)?;
    if tlv.tag != tag {
        return Err(ApduError::new(at, field, ApduErrorKind::BadTag(tlv.tag)));
    }
    Ok(tlv)
}

/// Decodes a buffer that is exactly one element with tag `tag`; returns its value.
pub fn single_tlv<'a>(bytes: &'a [u8], tag: u16, field: &'static str) -> Result<Tlv<'a>, ApduError> {
    let mut r = Reader::new(bytes);
    let tlv = expect_tlv(&mut r, tag, field)?;
    r.expect_empty(field)?;
    Ok(tlv)
}

/// Appends a BER-TLV element (the shortest length form). The value is complete before its
/// length is written, so no length is ever patched afterwards.
pub fn write_tlv(out: &mut Vec<u8>, tag: u16, value: &[u8]) -> Result<(), ApduError> {
    let [hi, lo] = tag.to_be_bytes();
    let bad_tag = || ApduError::new(0, "TLV tag", ApduErrorKind::BadTag(tag));
    if hi == 0 {
        if lo == 0 || lo == 0xff || lo & 0x1f == 0x1f {
            return Err(bad_tag());
        }
    } else if hi & 0x1f != 0x1f || lo & 0x80 != 0 || lo < 0x1f {
        return Err(bad_tag());
    }
    let len = value.len();
    if len > MAX_TLV_LEN {
        return Err(ApduError::too_long("TLV value", len, MAX_TLV_LEN));
    }
    if hi != 0 {
        out.push(hi);
    }
    out.push(lo);
    let be = (len as u32).to_be_bytes();
    match len {
        0..=0x7f => out.push(be[3]),
        0x80..=0xff => out.extend_from_slice(&[0x81, be[3]]),
        0x100..=0xffff => out.extend_from_slice(&[0x82, be[2], be[3]]),
        _ => out.extend_from_slice(&[0x83, be[1], be[2], be[3]]),
    }
    out.extend_from_slice(value);
    Ok(())
}

/// Reads a 1-byte-length LV value.
pub fn read_lv<'a>(r: &mut Reader<'a>, field: &'static str) -> Result<&'a [u8], ApduError> {
    let len = r.u8(field)?;
    r.take(usize::from(len), field)
}

/// Appends a 1-byte-length LV value.
pub fn write_lv(out: &mut Vec<u8>, value: &[u8], field: &'static str) -> Result<(), ApduError> {
    let len = u8::try_from(value.len()).map_err(|_| ApduError::too_long(field, value.len(), 255))?;
    out.push(len);
    out.extend_from_slice(value);
    Ok(())
}

fn fixed<const N: usize>(r: &mut Reader<'_>, field: &'static str) -> Result<[u8; N], ApduError> {
    let at = r.offset();
    let value = read_lv(r, field)?;
    value.try_into().map_err(|_| ApduError::new(at, field, ApduErrorKind::BadLength(value.len())))
}

fn utf8(bytes: &[u8], at: usize, field: &'static str) -> Result<String, ApduError> {
    core::str::from_utf8(bytes).map(str::to_owned).map_err(|_| ApduError::new(at, field, ApduErrorKind::BadValue))
}

// ------------------------------------------------------------------- AUTHENTICATE, even INS

/// Which even-INS context an AKA answer comes from (the 'DB' answers differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AkaContext {
    /// 3G context: `DB L RES L CK L IK [L Kc]`.
    ThreeG,
    /// GBA bootstrapping: `DB L RES`.
    Gba,
}

/// 3G context command data: `L RAND L AUTN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aka3gCommand {
    /// RAND.
    pub rand: [u8; 16],
    /// AUTN.
    pub autn: [u8; 16],
}

impl Aka3gCommand {
    /// The command data.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(34);
        out.push(16);
        out.extend_from_slice(&self.rand);
        out.push(16);
        out.extend_from_slice(&self.autn);
        out
    }

    /// Decodes the command data.
    pub fn decode(data: &[u8]) -> Result<Self, ApduError> {
        let mut r = Reader::new(data);
        let rand = fixed::<16>(&mut r, "RAND")?;
        let autn = fixed::<16>(&mut r, "AUTN")?;
        r.expect_empty("3G command")?;
        Ok(Self { rand, autn })
    }
}

/// GBA context command data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GbaCommand {
    /// Bootstrapping mode: `DD L RAND L AUTN`.
    Bootstrap {
        /// RAND.
        rand: [u8; 16],
        /// AUTN* (GBA_U MAC modification).
        autn: [u8; 16],
    },
    /// NAF derivation mode: `DE L NAF_ID L IMPI`.
    NafDerivation {
        /// NAF_Id = FQDN ‖ Ua security protocol identifier.
        naf_id: Vec<u8>,
        /// IMPI.
        impi: String,
    },
}

impl GbaCommand {
    /// The command data; refuses values longer than a 1-byte length or a short APDU allow.
    pub fn encode(&self) -> Result<Vec<u8>, ApduError> {
        let mut out = Vec::with_capacity(35);
        match self {
            Self::Bootstrap { rand, autn } => {
                out.push(TAG_GBA_BOOTSTRAP);
                write_lv(&mut out, rand, "RAND")?;
                write_lv(&mut out, autn, "AUTN")?;
            }
            Self::NafDerivation { naf_id, impi } => {
                out.push(TAG_NAF_DERIVATION);
                write_lv(&mut out, naf_id, "NAF_ID")?;
                write_lv(&mut out, impi.as_bytes(), "IMPI")?;
            }
        }
        if out.len() > MAX_LC {
            return Err(ApduError::too_long("GBA command data", out.len(), MAX_LC));
        }
        Ok(out)
    }

    /// Decodes the command data; an unknown mode tag is [`ApduErrorKind::Unsupported`].
    pub fn decode(data: &[u8]) -> Result<Self, ApduError> {
        let mut r = Reader::new(data);
        let cmd = match r.u8("GBA mode tag")? {
            TAG_GBA_BOOTSTRAP => {
                let rand = fixed::<16>(&mut r, "RAND")?;
                let autn = fixed::<16>(&mut r, "AUTN")?;
                Self::Bootstrap { rand, autn }
            }
            TAG_NAF_DERIVATION => {
                let naf_id = read_lv(&mut r, "NAF_ID")?.to_vec();
                let at = r.offset() + 1;
                let impi = utf8(read_lv(&mut r, "IMPI")?, at, "IMPI")?;
                Self::NafDerivation { naf_id, impi }
            }
            other => return Err(ApduError::new(0, "GBA mode tag", ApduErrorKind::Unsupported(u16::from(other)))),
        };
        r.expect_empty("GBA command")?;
        Ok(cmd)
    }
}

/// Encodes a 3G or GBA bootstrapping answer (`DB …` or `DC L AUTS`).
pub fn encode_aka_answer(answer: &AkaAnswer) -> Vec<u8> {
    let mut out = Vec::with_capacity(44);
    // Every value below is at most 16 bytes, so write_lv cannot fail.
    let lv = |out: &mut Vec<u8>, v: &[u8]| {
        out.push(v.len() as u8);
        out.extend_from_slice(v);
    };
    match answer {
        AkaAnswer::Success3g { res, ck, ik } => {
            out.push(TAG_SUCCESS);
            lv(&mut out, res.expose_secret());
            lv(&mut out, ck.expose_secret());
            lv(&mut out, ik.expose_secret());
        }
        AkaAnswer::SuccessGba { res } => {
            out.push(TAG_SUCCESS);
            lv(&mut out, res.expose_secret());
        }
        AkaAnswer::SyncFailure { auts } => {
            out.push(TAG_SYNC_FAILURE);
            lv(&mut out, auts);
        }
    }
    out
}

/// Decodes a 3G or GBA bootstrapping answer. RES must be 8 bytes; a 3G answer's optional Kc (GSM
/// access) is read and dropped.
pub fn decode_aka_answer(data: &[u8], context: AkaContext) -> Result<AkaAnswer, ApduError> {
    let mut r = Reader::new(data);
    let answer = match r.u8("answer tag")? {
        TAG_SUCCESS => {
            let res = Res::from_bytes(fixed::<8>(&mut r, "RES")?);
            match context {
                AkaContext::Gba => AkaAnswer::SuccessGba { res },
                AkaContext::ThreeG => {
                    let ck = Ck::from_bytes(fixed::<16>(&mut r, "CK")?);
                    let ik = Ik::from_bytes(fixed::<16>(&mut r, "IK")?);
                    if r.any_left() {
                        fixed::<8>(&mut r, "Kc")?;
                    }
                    AkaAnswer::Success3g { res, ck, ik }
                }
            }
        }
        TAG_SYNC_FAILURE => AkaAnswer::SyncFailure { auts: fixed::<14>(&mut r, "AUTS")? },
        other => return Err(ApduError::new(0, "answer tag", ApduErrorKind::BadTag(u16::from(other)))),
    };
    r.expect_empty("AKA answer")?;
    Ok(answer)
}

/// Encodes a NAF derivation answer: `DB 20 Ks_ext_NAF`.
pub fn encode_naf_answer(ks_ext_naf: &KsExtNaf) -> Vec<u8> {
    let mut out = Vec::with_capacity(34);
    out.extend_from_slice(&[TAG_SUCCESS, 32]);
    out.extend_from_slice(ks_ext_naf.expose_secret());
    out
}

/// Decodes a NAF derivation answer.
pub fn decode_naf_answer(data: &[u8]) -> Result<KsExtNaf, ApduError> {
    let mut r = Reader::new(data);
    let tag = r.u8("answer tag")?;
    if tag != TAG_SUCCESS {
        return Err(ApduError::new(0, "answer tag", ApduErrorKind::BadTag(u16::from(tag))));
    }
    let key = KsExtNaf::from_bytes(fixed::<32>(&mut r, "Ks_ext_NAF")?);
    r.expect_empty("NAF derivation answer")?;
    Ok(key)
}

// -------------------------------------------------------------------- AUTHENTICATE, odd INS

/// MBMS context command data (`53 L mode data`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MbmsCommand {
    /// Mode 01: the whole LTKM.
    MskUpdate(Vec<u8>),
    /// Mode 02: the whole STKM.
    MtkGeneration(Vec<u8>),
    /// Mode 03: Key Domain ID (3) ‖ Key Group (2).
    MskDeletion {
        /// Key Domain ID.
        key_domain_id: KeyDomainId,
        /// Key Group.
        key_group: u16,
    },
    /// Mode 04: `A0 L {80 L IDr, 82 L IDi}`.
    MukDeletion {
        /// IDi (the BSM FQDN).
        idi: String,
        /// IDr (the B-TID).
        idr: String,
    },
}

/// The MUK ID TLV `A0 L {80 L IDr, 82 L IDi}` (EF_MUK, MUK deletion).
fn encode_muk_id(out: &mut Vec<u8>, idr: &str, idi: &str) -> Result<(), ApduError> {
    let mut inner = Vec::with_capacity(idr.len() + idi.len() + 8);
    write_tlv(&mut inner, 0x80, idr.as_bytes())?;
    write_tlv(&mut inner, 0x82, idi.as_bytes())?;
    write_tlv(out, 0xa0, &inner)
}

/// Reads a MUK ID TLV; returns (IDr, IDi).
fn read_muk_id(r: &mut Reader<'_>) -> Result<(String, String), ApduError> {
    let outer = expect_tlv(r, 0xa0, "MUK ID")?;
    let mut inner = Reader { buf: outer.value, base: outer.value_offset };
    let idr = expect_tlv(&mut inner, 0x80, "IDr")?;
    let idi = expect_tlv(&mut inner, 0x82, "IDi")?;
    inner.expect_empty("MUK ID")?;
    Ok((utf8(idr.value, idr.value_offset, "IDr")?, utf8(idi.value, idi.value_offset, "IDi")?))
}

impl MbmsCommand {
    /// The command data `53 L mode data`.
    pub fn encode(&self) -> Result<Vec<u8>, ApduError> {
        let mut body = Vec::new();
        match self {
            Self::MskUpdate(ltkm) => {
                body.push(MODE_MSK_UPDATE);
                body.extend_from_slice(ltkm);
            }
            Self::MtkGeneration(stkm) => {
                body.push(MODE_MTK_GENERATION);
                body.extend_from_slice(stkm);
            }
            Self::MskDeletion { key_domain_id, key_group } => {
                body.push(MODE_MSK_DELETION);
                body.extend_from_slice(&key_domain_id.0);
                body.extend_from_slice(&key_group.to_be_bytes());
            }
            Self::MukDeletion { idi, idr } => {
                body.push(MODE_MUK_DELETION);
                encode_muk_id(&mut body, idr, idi)?;
            }
        }
        let mut out = Vec::with_capacity(body.len() + 5);
        write_tlv(&mut out, TAG_WRAP_PLAIN, &body)?;
        Ok(out)
    }

    /// Decodes `53 L mode data`; an unknown mode is [`ApduErrorKind::Unsupported`].
    pub fn decode(data: &[u8]) -> Result<Self, ApduError> {
        let tlv = single_tlv(data, TAG_WRAP_PLAIN, "MBMS command")?;
        let mut r = Reader { buf: tlv.value, base: tlv.value_offset };
        let at = r.offset();
        let cmd = match r.u8("MBMS mode")? {
            MODE_MSK_UPDATE => Self::MskUpdate(r.rest().to_vec()),
            MODE_MTK_GENERATION => Self::MtkGeneration(r.rest().to_vec()),
            MODE_MSK_DELETION => {
                let b = r.take(5, "Key Domain ID ‖ Key Group")?;
                Self::MskDeletion {
                    key_domain_id: KeyDomainId([b[0], b[1], b[2]]),
                    key_group: u16::from_be_bytes([b[3], b[4]]),
                }
            }
            MODE_MUK_DELETION => {
                let (idr, idi) = read_muk_id(&mut r)?;
                Self::MukDeletion { idi, idr }
            }
            other => return Err(ApduError::new(at, "MBMS mode", ApduErrorKind::Unsupported(u16::from(other)))),
        };
        r.expect_empty("MBMS command")?;
        Ok(cmd)
    }
}

/// Encodes an MBMS answer `53 L DB content`.
pub fn encode_mbms_answer(content: &[u8]) -> Result<Vec<u8>, ApduError> {
    let mut body = Vec::with_capacity(content.len() + 1);
    body.push(TAG_SUCCESS);
    body.extend_from_slice(content);
    let mut out = Vec::with_capacity(body.len() + 5);
    write_tlv(&mut out, TAG_WRAP_PLAIN, &body)?;
    Ok(out)
}

/// Decodes an MBMS answer `53 L DB content`; returns the content (maybe empty).
pub fn decode_mbms_answer(data: &[u8]) -> Result<&[u8], ApduError> {
    let tlv = single_tlv(data, TAG_WRAP_PLAIN, "MBMS answer")?;
    match tlv.value.split_first() {
        Some((&TAG_SUCCESS, content)) => Ok(content),
        Some((&other, _)) => {
            Err(ApduError::new(tlv.value_offset, "MBMS answer tag", ApduErrorKind::BadTag(other.into())))
        }
        None => {
            Err(ApduError::new(tlv.value_offset, "MBMS answer tag", ApduErrorKind::Truncated { needed: 1, left: 0 }))
        }
    }
}

/// The MTK generation answer content: TEK [‖ salt], TBK-wrapped TEK [‖ salt], or the 40-byte
/// channel wrap.
pub fn encode_tek_out(tek: &TekOut) -> Vec<u8> {
    let mut out = Vec::with_capacity(40);
    match tek {
        TekOut::Clear { tek, salt } => {
            out.extend_from_slice(tek.expose_secret());
            if let Some(salt) = salt {
                out.extend_from_slice(salt.expose_secret());
            }
        }
        TekOut::TbkWrapped { wrapped, salt } => {
            out.extend_from_slice(wrapped);
            if let Some(salt) = salt {
                out.extend_from_slice(salt.expose_secret());
            }
        }
        TekOut::ChannelWrapped(w) => out.extend_from_slice(&w[..]),
    }
    out
}

/// Reads an MTK generation answer content by its length: 16/30 clear, 24/38 TBK-wrapped, 40
/// channel-wrapped.
pub fn decode_tek_out(content: &[u8]) -> Result<TekOut, ApduError> {
    let salt = |s: &[u8]| TekSalt::from_slice(s).ok();
    Ok(match content.len() {
        16 | 30 => TekOut::Clear {
            tek: Tek::from_slice(&content[..16]).map_err(|_| ApduError::new(0, "TEK", ApduErrorKind::BadValue))?,
            salt: salt(&content[16..]),
        },
        24 | 38 => {
            let mut wrapped = [0u8; 24];
            wrapped.copy_from_slice(&content[..24]);
            TekOut::TbkWrapped { wrapped, salt: salt(&content[24..]) }
        }
        40 => {
            let mut w = [0u8; 40];
            w.copy_from_slice(content);
            TekOut::ChannelWrapped(Box::new(w))
        }
        other => return Err(ApduError::new(0, "MTK answer", ApduErrorKind::BadLength(other))),
    })
}

/// Tags of the Local Key Establishment command (profile: P-10 \[chosen\]).
const LKE_TAGS: [(u16, &str); 7] = [
    (0x80, "NAF_ID"),
    (0x81, "Terminal_ID"),
    (0x82, "Terminal_appli_ID"),
    (0x83, "UICC_appli_ID"),
    (0x84, "RANDx"),
    (0x85, "Counter Limit"),
    (0x86, "MAC"),
];

/// Encodes the Local Key Establishment command (profile: P-10 \[chosen\]):
/// `73 L { 80 NAF_ID, 81 Terminal_ID, 82 Terminal_appli_ID, 83 UICC_appli_ID, 84 RANDx,
/// 85 Counter Limit, 86 MAC }`.
pub fn encode_local_key_request(req: &LocalKeyRequest) -> Result<Vec<u8>, ApduError> {
    let values: [&[u8]; 7] = [
        &req.naf_id,
        &req.terminal_id,
        &req.terminal_appli_id,
        &req.uicc_appli_id,
        &req.randx,
        &req.counter_limit,
        &req.mac,
    ];
    let mut inner = Vec::new();
    for ((tag, _), value) in LKE_TAGS.iter().zip(values) {
        write_tlv(&mut inner, *tag, value)?;
    }
    let mut out = Vec::with_capacity(inner.len() + 5);
    write_tlv(&mut out, TAG_WRAP_TLV, &inner)?;
    Ok(out)
}

/// A Local Key Establishment command: the key derivation, or the availability check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalKeyCommand {
    /// Key derivation: all seven elements.
    Establish(LocalKeyRequest),
    /// Availability check: the four identifiers only (Keycast choice, profile: P-10 \[chosen\]).
    AvailabilityCheck(LocalKeyIds),
}

/// Encodes the availability check `73 L { 80 NAF_ID, 81 Terminal_ID, 82 Terminal_appli_ID,
/// 83 UICC_appli_ID }` (profile: P-10 \[chosen\]).
pub fn encode_local_key_check(ids: &LocalKeyIds) -> Result<Vec<u8>, ApduError> {
    let values: [&[u8]; 4] = [&ids.naf_id, &ids.terminal_id, &ids.terminal_appli_id, &ids.uicc_appli_id];
    let mut inner = Vec::new();
    for ((tag, _), value) in LKE_TAGS.iter().zip(values) {
        write_tlv(&mut inner, *tag, value)?;
    }
    let mut out = Vec::with_capacity(inner.len() + 5);
    write_tlv(&mut out, TAG_WRAP_TLV, &inner)?;
    Ok(out)
}

/// Decodes either Local Key Establishment command: the four identifiers alone are the
/// availability check; otherwise all seven elements must follow, in order.
pub fn decode_local_key_command(data: &[u8]) -> Result<LocalKeyCommand, ApduError> {
    let outer = single_tlv(data, TAG_WRAP_TLV, "Local Key Establishment command")?;
    let mut r = Reader { buf: outer.value, base: outer.value_offset };
    let mut values: [&[u8]; 7] = [&[]; 7];
    for (slot, (tag, field)) in values.iter_mut().zip(LKE_TAGS).take(4) {
        *slot = expect_tlv(&mut r, tag, field)?.value;
    }
    if !r.any_left() {
        return Ok(LocalKeyCommand::AvailabilityCheck(LocalKeyIds {
            naf_id: values[0].to_vec(),
            terminal_id: values[1].to_vec(),
            terminal_appli_id: values[2].to_vec(),
            uicc_appli_id: values[3].to_vec(),
        }));
    }
    for (slot, (tag, field)) in values.iter_mut().zip(LKE_TAGS).skip(4) {
        *slot = expect_tlv(&mut r, tag, field)?.value;
    }
    r.expect_empty("Local Key Establishment command")?;
    let sixteen = |v: &[u8], field| -> Result<[u8; 16], ApduError> {
        v.try_into().map_err(|_| ApduError::new(outer.value_offset, field, ApduErrorKind::BadLength(v.len())))
    };
    Ok(LocalKeyCommand::Establish(LocalKeyRequest {
        naf_id: values[0].to_vec(),
        terminal_id: values[1].to_vec(),
        terminal_appli_id: values[2].to_vec(),
        uicc_appli_id: values[3].to_vec(),
        randx: values[4].to_vec(),
        counter_limit: sixteen(values[5], "Counter Limit")?,
        mac: sixteen(values[6], "MAC")?,
    }))
}

/// Decodes the Local Key Establishment key derivation command (tags in order, Counter Limit and
/// MAC 16 bytes); the availability check is refused here as missing RANDx.
pub fn decode_local_key_request(data: &[u8]) -> Result<LocalKeyRequest, ApduError> {
    match decode_local_key_command(data)? {
        LocalKeyCommand::Establish(req) => Ok(req),
        LocalKeyCommand::AvailabilityCheck(_) => {
            Err(ApduError::new(data.len(), "RANDx", ApduErrorKind::Truncated { needed: 2, left: 0 }))
        }
    }
}

/// The availability check answer byte (profile: P-10 \[chosen\]).
fn local_key_status_byte(status: LocalKeyStatus) -> u8 {
    match status {
        LocalKeyStatus::NotEstablished => 0x00,
        LocalKeyStatus::Available => 0x01,
        LocalKeyStatus::Exhausted => 0x02,
    }
}

/// Encodes the availability check answer `53 03 DB 01 status`.
pub fn encode_local_key_status(status: LocalKeyStatus) -> Vec<u8> {
    vec![TAG_WRAP_PLAIN as u8, 3, TAG_SUCCESS, 1, local_key_status_byte(status)]
}

/// Decodes the availability check answer `53 03 DB 01 status`.
pub fn decode_local_key_status(data: &[u8]) -> Result<LocalKeyStatus, ApduError> {
    let content = decode_mbms_answer(data)?;
    let at = data.len() - content.len();
    let mut r = Reader { buf: content, base: at };
    let value = fixed::<1>(&mut r, "Ks_local status")?;
    r.expect_empty("availability check answer")?;
    match value[0] {
        0x00 => Ok(LocalKeyStatus::NotEstablished),
        0x01 => Ok(LocalKeyStatus::Available),
        0x02 => Ok(LocalKeyStatus::Exhausted),
        _ => Err(ApduError::new(at + 1, "Ks_local status", ApduErrorKind::BadValue)),
    }
}

/// Encodes the Local Key Establishment answer `53 12 DB 10 verification`.
pub fn encode_local_key_answer(verification: &[u8; 16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(20);
    out.extend_from_slice(&[TAG_WRAP_PLAIN as u8, 18, TAG_SUCCESS, 16]);
    out.extend_from_slice(verification);
    out
}

/// Decodes the Local Key Establishment answer, wrapped (`53 12 DB 10 v`) or not (`DB 10 v`).
pub fn decode_local_key_answer(data: &[u8]) -> Result<[u8; 16], ApduError> {
    let (inner, base) = match data.first() {
        Some(&t) if u16::from(t) == TAG_WRAP_PLAIN => {
            let tlv = single_tlv(data, TAG_WRAP_PLAIN, "Local Key Establishment answer")?;
            (tlv.value, tlv.value_offset)
        }
        _ => (data, 0),
    };
    let mut r = Reader { buf: inner, base };
    let at = r.offset();
    let tag = r.u8("answer tag")?;
    if tag != TAG_SUCCESS {
        return Err(ApduError::new(at, "answer tag", ApduErrorKind::BadTag(u16::from(tag))));
    }
    let v = fixed::<16>(&mut r, "verification")?;
    r.expect_empty("Local Key Establishment answer")?;
    Ok(v)
}

// -------------------------------------------------------------------- OMA BCAST, INS 1B

/// Tags of the SPE audit answer inside `AE L { 80 L … }` — Keycast choice (OMA BCAST SCP coding
/// not readable; profile: P-4 \[chosen\]).
const AUDIT_LIVE: u16 = 0x81;
const AUDIT_PLAY_BACK_SESSIONS: u16 = 0x82;
const AUDIT_PLAY_BACKS_LEFT: u16 = 0x83;
const AUDIT_VIEWS_LEFT: u16 = 0x84;
const AUDIT_PPV_PROGRAM: u16 = 0x85;
const AUDIT_PAID_PROGRAMS: u16 = 0x86;
const AUDIT_REPORTING: u16 = 0x87;

/// The SPE audit command data: Key Domain ID (3) ‖ SEK/PEK ID (4).
pub fn encode_audit_request(key_domain_id: KeyDomainId, sek_pek_id: SekPekId) -> Vec<u8> {
    let mut out = Vec::with_capacity(7);
    out.extend_from_slice(&key_domain_id.0);
    out.extend_from_slice(&sek_pek_id.to_bytes());
    out
}

/// Reads the SPE audit command data (exactly 7 bytes).
pub fn decode_audit_request(data: &[u8]) -> Result<(KeyDomainId, SekPekId), ApduError> {
    let mut r = Reader::new(data);
    let b = r.take(7, "Key Domain ID ‖ SEK/PEK ID")?;
    r.expect_empty("SPE audit command")?;
    Ok((KeyDomainId([b[0], b[1], b[2]]), SekPekId::from_bytes([b[3], b[4], b[5], b[6]])))
}

/// The SPE audit answer `AE L { 80 L { 81 … 87 } }`.
pub fn encode_audit_answer(a: &AuditCounters) -> Result<Vec<u8>, ApduError> {
    let mut fields = Vec::with_capacity(40);
    write_tlv(&mut fields, AUDIT_LIVE, &a.live_stkms.to_be_bytes())?;
    write_tlv(&mut fields, AUDIT_PLAY_BACK_SESSIONS, &a.play_back_sessions.to_be_bytes())?;
    write_tlv(&mut fields, AUDIT_PLAY_BACKS_LEFT, &a.play_backs_left.to_be_bytes())?;
    write_tlv(&mut fields, AUDIT_VIEWS_LEFT, &a.views_left.to_be_bytes())?;
    let mut ppv = Vec::with_capacity(5);
    match a.ppv_program {
        None => {}
        Some(None) => ppv.push(0),
        Some(Some(id)) => {
            ppv.push(1);
            ppv.extend_from_slice(&id.to_be_bytes());
        }
    }
    write_tlv(&mut fields, AUDIT_PPV_PROGRAM, &ppv)?;
    write_tlv(&mut fields, AUDIT_PAID_PROGRAMS, &a.paid_programs.to_be_bytes())?;
    write_tlv(&mut fields, AUDIT_REPORTING, &[u8::from(a.consumption_reporting)])?;
    let mut management = Vec::with_capacity(fields.len() + 2);
    write_tlv(&mut management, TAG_BCAST_MANAGEMENT, &fields)?;
    let mut out = Vec::with_capacity(management.len() + 2);
    write_tlv(&mut out, TAG_BCAST, &management)?;
    Ok(out)
}

/// The value of the next element, which must have tag `tag` and exactly `N` bytes.
fn fixed_tlv<const N: usize>(r: &mut Reader<'_>, tag: u16, field: &'static str) -> Result<[u8; N], ApduError> {
    let tlv = expect_tlv(r, tag, field)?;
    tlv.value.try_into().map_err(|_| ApduError::new(tlv.value_offset, field, ApduErrorKind::BadLength(tlv.value.len())))
}

/// The value of `AE L { tag L value }` (one element inside the container, nothing after it).
fn bcast_inner<'a>(data: &'a [u8], tag: u16, field: &'static str) -> Result<Tlv<'a>, ApduError> {
    let outer = single_tlv(data, TAG_BCAST, "OMA BCAST container")?;
    let mut r = Reader { buf: outer.value, base: outer.value_offset };
    let inner = expect_tlv(&mut r, tag, field)?;
    r.expect_empty(field)?;
    Ok(inner)
}

/// Reads the SPE audit answer: every field present, in order, with its length.
pub fn decode_audit_answer(data: &[u8]) -> Result<AuditCounters, ApduError> {
    let management = bcast_inner(data, TAG_BCAST_MANAGEMENT, "BCAST management data")?;
    let mut r = Reader { buf: management.value, base: management.value_offset };
    let live_stkms = u32::from_be_bytes(fixed_tlv(&mut r, AUDIT_LIVE, "live STKMs")?);
    let play_back_sessions = u32::from_be_bytes(fixed_tlv(&mut r, AUDIT_PLAY_BACK_SESSIONS, "play-back sessions")?);
    let play_backs_left = u16::from_be_bytes(fixed_tlv(&mut r, AUDIT_PLAY_BACKS_LEFT, "play-backs left")?);
    let views_left = u16::from_be_bytes(fixed_tlv(&mut r, AUDIT_VIEWS_LEFT, "views left")?);
    let ppv = expect_tlv(&mut r, AUDIT_PPV_PROGRAM, "PPV program")?;
    let ppv_program = match ppv.value {
        [] => None,
        [0] => Some(None),
        [1, id @ ..] if id.len() == 4 => Some(Some(u32::from_be_bytes([id[0], id[1], id[2], id[3]]))),
        [0 | 1, ..] => {
            return Err(ApduError::new(ppv.value_offset, "PPV program", ApduErrorKind::BadLength(ppv.value.len())));
        }
        _ => return Err(ApduError::new(ppv.value_offset, "PPV program", ApduErrorKind::BadValue)),
    };
    let paid_programs = u16::from_be_bytes(fixed_tlv(&mut r, AUDIT_PAID_PROGRAMS, "paid programs")?);
    let at = r.offset();
    let consumption_reporting = match fixed_tlv::<1>(&mut r, AUDIT_REPORTING, "consumption_reporting_flag")? {
        [0] => false,
        [1] => true,
        _ => return Err(ApduError::new(at, "consumption_reporting_flag", ApduErrorKind::BadValue)),
    };
    r.expect_empty("BCAST management data")?;
    Ok(AuditCounters {
        live_stkms,
        play_back_sessions,
        play_backs_left,
        views_left,
        ppv_program,
        paid_programs,
        consumption_reporting,
    })
}

/// The parental setting `AE L { 88 L limit }` (`88` empty: no restriction); the command data that
/// sets it and the answer that reads it.
pub fn encode_parental(limit: Option<u8>) -> Result<Vec<u8>, ApduError> {
    let mut inner = Vec::with_capacity(3);
    write_tlv(&mut inner, TAG_PARENTAL, limit.as_slice())?;
    let mut out = Vec::with_capacity(5);
    write_tlv(&mut out, TAG_BCAST, &inner)?;
    Ok(out)
}

/// Reads `AE L { 88 L limit }`; a limit longer than one byte is [`ApduErrorKind::BadLength`].
pub fn decode_parental(data: &[u8]) -> Result<Option<u8>, ApduError> {
    let tlv = bcast_inner(data, TAG_PARENTAL, "parental control")?;
    match tlv.value {
        [] => Ok(None),
        [limit] => Ok(Some(*limit)),
        other => Err(ApduError::new(tlv.value_offset, "parental limit", ApduErrorKind::BadLength(other.len()))),
    }
}

// ------------------------------------------------------------------------------ chaining

/// Default (and largest) block size of the odd-INS chaining.
pub const DEFAULT_BLOCK_SIZE: usize = 255;
/// Smallest block size: the first block must hold a whole TLV header (tag ≤ 2, length ≤ 4).
pub const MIN_BLOCK_SIZE: usize = 8;
/// Most bytes of chained command data the card accepts.
pub const MAX_CHAINED_LEN: usize = 64 * 1024;

/// A block size clamped to [`MIN_BLOCK_SIZE`]..=[`DEFAULT_BLOCK_SIZE`].
pub fn clamp_block_size(n: usize) -> usize {
    n.clamp(MIN_BLOCK_SIZE, DEFAULT_BLOCK_SIZE)
}

/// Splits odd-INS command data into case-3 blocks: P1 `80` first, `00` next.
pub fn command_blocks(cla: u8, ins: u8, p2: u8, data: &[u8], block_size: usize) -> Vec<CommandApdu> {
    let block = clamp_block_size(block_size);
    data.chunks(block)
        .enumerate()
        .map(|(i, chunk)| {
            let p1 = if i == 0 { P1_FIRST_BLOCK } else { P1_NEXT_BLOCK };
            CommandApdu::new(cla, ins, p1, p2).with_data(chunk.to_vec())
        })
        .collect()
}

/// The case-2 APDU that fetches a response block: P1 `A0` first, `20` next; `Le` 256.
pub fn fetch_command(cla: u8, ins: u8, p2: u8, first: bool) -> CommandApdu {
    CommandApdu::new(cla, ins, if first { P1_FIRST_RESPONSE } else { P1_NEXT_RESPONSE }, p2).with_le(MAX_LE)
}

/// Card side: reassembles a chained odd-INS command from its blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandChain {
    /// P2 of the chain (every block must repeat it).
    pub p2: u8,
    buf: Vec<u8>,
    total: usize,
}

/// Whether a chain is complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainProgress {
    /// All bytes received: the whole TLV.
    Complete(Vec<u8>),
    /// More blocks expected.
    NeedMore(CommandChain),
}

impl CommandChain {
    /// Starts a chain with its first block (P1 `80`), whose TLV header gives the total length.
    pub fn start(p2: u8, block: &[u8]) -> Result<ChainProgress, ApduError> {
        let mut r = Reader::new(block);
        let (_, len) = read_tlv_header(&mut r)?;
        let total = r.offset() + len;
        if total > MAX_CHAINED_LEN {
            return Err(ApduError::too_long("chained command", total, MAX_CHAINED_LEN));
        }
        Self { p2, buf: Vec::with_capacity(total), total }.push(block)
    }

    /// Adds the next block (P1 `00`).
    pub fn push(mut self, block: &[u8]) -> Result<ChainProgress, ApduError> {
        if self.buf.len() + block.len() > self.total {
            return Err(ApduError::new(
                self.total,
                "chained command",
                ApduErrorKind::TrailingData { left: self.buf.len() + block.len() - self.total },
            ));
        }
        self.buf.extend_from_slice(block);
        Ok(if self.buf.len() == self.total { ChainProgress::Complete(self.buf) } else { ChainProgress::NeedMore(self) })
    }
}

/// Card side: an odd-INS answer waiting to be fetched block by block. It may hold a clear TEK,
/// so it is wiped on drop and its `Debug` shows lengths only.
#[derive(Clone, PartialEq, Eq)]
pub struct ResponseChain {
    /// P2 of the command that produced it.
    pub p2: u8,
    data: Zeroizing<Vec<u8>>,
    pos: usize,
}

impl fmt::Debug for ResponseChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseChain")
            .field("p2", &self.p2)
            .field("len", &self.data.len())
            .field("pos", &self.pos)
            .finish()
    }
}

impl ResponseChain {
    /// An answer to fetch.
    pub fn new(p2: u8, data: Vec<u8>) -> Self {
        Self { p2, data: Zeroizing::new(data), pos: 0 }
    }

    /// Whether the first block was fetched.
    pub fn started(&self) -> bool {
        self.pos > 0
    }

    /// Restarts from the first block (P1 `A0`).
    pub fn restart(&mut self) {
        self.pos = 0;
    }

    /// The next block of at most `max` bytes, and whether more remain.
    pub fn next_block(&mut self, max: usize) -> (Vec<u8>, bool) {
        let end = self.data.len().min(self.pos + max.max(1));
        let block = self.data[self.pos..end].to_vec();
        self.pos = end;
        (block, self.pos < self.data.len())
    }
}

// ------------------------------------------------------------------------------ EF contents

/// Size of the emulated EF_GBABP.
pub const EF_GBABP_SIZE: usize = 255;
/// Record length of EF_MSK (8n + 4 with n = 2).
pub const EF_MSK_RECORD_LEN: usize = 20;
/// Record length of the emulated EF_MUK.
pub const EF_MUK_RECORD_LEN: usize = 255;
/// Record length of the emulated EF_GBANL.
pub const EF_GBANL_RECORD_LEN: usize = 255;

fn pad(mut out: Vec<u8>, len: usize, field: &'static str) -> Result<Vec<u8>, ApduError> {
    if out.len() > len {
        return Err(ApduError::too_long(field, out.len(), len));
    }
    out.resize(len, 0xff);
    Ok(out)
}

fn expect_padding(r: &Reader<'_>, field: &'static str) -> Result<(), ApduError> {
    match r.buf.iter().position(|b| *b != 0xff) {
        None => Ok(()),
        Some(i) => Err(ApduError::new(r.offset() + i, field, ApduErrorKind::TrailingData { left: r.left() - i })),
    }
}

/// EF_GBABP (31.102 §4.2.79): `L RAND L B-TID L lifetime`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EfGbabp {
    /// RAND of the bootstrapping run (written by the UICC).
    pub rand: [u8; 16],
    /// B-TID (written by the ME); `None` before.
    pub b_tid: Option<String>,
    /// Key lifetime (written by the ME); `None` before.
    pub lifetime: Option<String>,
}

impl EfGbabp {
    /// The file contents, padded with `FF` to `size`.
    pub fn encode(&self, size: usize) -> Result<Vec<u8>, ApduError> {
        let mut out = Vec::with_capacity(size);
        write_lv(&mut out, &self.rand, "RAND")?;
        if let Some(b_tid) = &self.b_tid {
            write_lv(&mut out, b_tid.as_bytes(), "B-TID")?;
            if let Some(lifetime) = &self.lifetime {
                write_lv(&mut out, lifetime.as_bytes(), "key lifetime")?;
            }
        }
        pad(out, size, "EF_GBABP")
    }

    /// `L B-TID L lifetime`, what the ME writes after RAND (offset 17).
    pub fn encode_me_part(b_tid: &str, lifetime: &str) -> Result<Vec<u8>, ApduError> {
        let mut out = Vec::with_capacity(b_tid.len() + lifetime.len() + 2);
        write_lv(&mut out, b_tid.as_bytes(), "B-TID")?;
        write_lv(&mut out, lifetime.as_bytes(), "key lifetime")?;
        Ok(out)
    }

    /// Reads the file contents; `None` when nothing is stored (first byte `FF`). A length `FF`
    /// after RAND means "not written"; bytes after the lifetime are padding.
    pub fn decode(bytes: &[u8]) -> Result<Option<Self>, ApduError> {
        if bytes.first().is_none_or(|b| *b == 0xff) {
            return Ok(None);
        }
        let mut r = Reader::new(bytes);
        let rand = fixed::<16>(&mut r, "RAND")?;
        let text = |r: &mut Reader<'_>, field| -> Result<Option<String>, ApduError> {
            if r.buf.first().is_none_or(|b| *b == 0xff) {
                return Ok(None);
            }
            let at = r.offset() + 1;
            Ok(Some(utf8(read_lv(r, field)?, at, field)?))
        };
        let b_tid = text(&mut r, "B-TID")?;
        let lifetime = if b_tid.is_some() { text(&mut r, "key lifetime")? } else { None };
        Ok(Some(Self { rand, b_tid, lifetime }))
    }
}

/// One EF_MSK record (31.102 §4.2.80): Key Domain ID and up to two (MSK ID, TS) pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EfMskRecord {
    /// Key Domain ID.
    pub key_domain_id: KeyDomainId,
    /// (MSK ID, TS counter), newest first; one or two.
    pub pairs: Vec<(SekPekId, u32)>,
}

impl EfMskRecord {
    /// The record, `FF`-padded to [`EF_MSK_RECORD_LEN`]; refuses zero or more than two pairs.
    pub fn encode(&self) -> Result<Vec<u8>, ApduError> {
        if !(1..=2).contains(&self.pairs.len()) {
            return Err(ApduError::new(3, "number of MSK pairs", ApduErrorKind::BadLength(self.pairs.len())));
        }
        let mut out = Vec::with_capacity(EF_MSK_RECORD_LEN);
        out.extend_from_slice(&self.key_domain_id.0);
        out.push(self.pairs.len() as u8);
        for (id, ts) in &self.pairs {
            out.extend_from_slice(&id.to_bytes());
            out.extend_from_slice(&ts.to_be_bytes());
        }
        pad(out, EF_MSK_RECORD_LEN, "EF_MSK record")
    }

    /// Reads a record; `None` for an unused (all `FF`) record.
    pub fn decode(bytes: &[u8]) -> Result<Option<Self>, ApduError> {
        if bytes.iter().all(|b| *b == 0xff) {
            return Ok(None);
        }
        let mut r = Reader::new(bytes);
        let kd = r.take(3, "Key Domain ID")?;
        let at = r.offset();
        let n = r.u8("number of MSK pairs")?;
        if !(1..=2).contains(&n) {
            return Err(ApduError::new(at, "number of MSK pairs", ApduErrorKind::BadLength(usize::from(n))));
        }
        let mut pairs = Vec::with_capacity(2);
        for _ in 0..n {
            let b = r.take(8, "MSK ID and TS")?;
            pairs.push((SekPekId::from_bytes([b[0], b[1], b[2], b[3]]), u32::from_be_bytes([b[4], b[5], b[6], b[7]])));
        }
        Ok(Some(Self { key_domain_id: KeyDomainId([kd[0], kd[1], kd[2]]), pairs }))
    }
}

/// One EF_MUK record (31.102 §4.2.81): `A0 L {80 L IDr, 82 L IDi} 81 L TS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EfMukRecord {
    /// IDr (the B-TID).
    pub idr: String,
    /// IDi (the BSM FQDN).
    pub idi: String,
    /// TS counter of the last LTKM accepted under this MUK (0 after a reset).
    pub ts: u32,
}

impl EfMukRecord {
    /// The record, `FF`-padded to [`EF_MUK_RECORD_LEN`].
    pub fn encode(&self) -> Result<Vec<u8>, ApduError> {
        let mut out = Vec::with_capacity(EF_MUK_RECORD_LEN);
        encode_muk_id(&mut out, &self.idr, &self.idi)?;
        write_tlv(&mut out, 0x81, &self.ts.to_be_bytes())?;
        pad(out, EF_MUK_RECORD_LEN, "EF_MUK record")
    }

    /// Reads a record; `None` for an unused record (first byte `FF`). TS counters of 0–4 bytes.
    pub fn decode(bytes: &[u8]) -> Result<Option<Self>, ApduError> {
        if bytes.first().is_none_or(|b| *b == 0xff) {
            return Ok(None);
        }
        let mut r = Reader::new(bytes);
        let (idr, idi) = read_muk_id(&mut r)?;
        let ts = expect_tlv(&mut r, 0x81, "TS counter")?;
        if ts.value.len() > 4 {
            return Err(ApduError::new(ts.value_offset, "TS counter", ApduErrorKind::BadLength(ts.value.len())));
        }
        let ts_value = ts.value.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
        expect_padding(&r, "EF_MUK record")?;
        Ok(Some(Self { idr, idi, ts: ts_value }))
    }
}

/// One EF_GBANL record (31.102 §4.2.83): `80 L NAF_ID 81 L B-TID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EfGbanlRecord {
    /// NAF_Id = FQDN ‖ Ua security protocol identifier.
    pub naf_id: Vec<u8>,
    /// B-TID of the Ks the key was derived from.
    pub b_tid: String,
}

impl EfGbanlRecord {
    /// The record, `FF`-padded to [`EF_GBANL_RECORD_LEN`].
    pub fn encode(&self) -> Result<Vec<u8>, ApduError> {
        let mut out = Vec::with_capacity(EF_GBANL_RECORD_LEN);
        write_tlv(&mut out, 0x80, &self.naf_id)?;
        write_tlv(&mut out, 0x81, self.b_tid.as_bytes())?;
        pad(out, EF_GBANL_RECORD_LEN, "EF_GBANL record")
    }

    /// Reads a record; `None` for an unused record (first byte `FF`).
    pub fn decode(bytes: &[u8]) -> Result<Option<Self>, ApduError> {
        if bytes.first().is_none_or(|b| *b == 0xff) {
            return Ok(None);
        }
        let mut r = Reader::new(bytes);
        let naf_id = expect_tlv(&mut r, 0x80, "NAF_ID")?;
        let b_tid = expect_tlv(&mut r, 0x81, "B-TID")?;
        expect_padding(&r, "EF_GBANL record")?;
        Ok(Some(Self { naf_id: naf_id.value.to_vec(), b_tid: utf8(b_tid.value, b_tid.value_offset, "B-TID")? }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    #[test]
    fn command_apdu_cases_round_trip() {
        for (bytes, case) in
            [("00a40000", 1), ("00b0000000", 2), ("00a4040c07a0000000871002", 3), ("0088008102aabb00", 4)]
        {
            let apdu = CommandApdu::decode(&h(bytes)).unwrap();
            assert_eq!(apdu.case(), case, "{bytes}");
            assert_eq!(apdu.to_bytes().unwrap(), h(bytes));
        }
        assert_eq!(CommandApdu::decode(&h("00b0000000")).unwrap().le, Some(256));
    }

    #[test]
    fn rejects_bad_lc() {
        let e = CommandApdu::decode(&h("00880081 05 0102")).unwrap_err();
        assert_eq!((e.offset, e.kind.clone()), (5, ApduErrorKind::Truncated { needed: 5, left: 2 }));
        assert_eq!(e.status_word(), StatusWord::WRONG_LENGTH);
    }

    #[test]
    fn rejects_bytes_after_le() {
        let e = CommandApdu::decode(&h("00880081 01 aa 00 00")).unwrap_err();
        assert_eq!(e.kind, ApduErrorKind::TrailingData { left: 2 });
    }

    #[test]
    fn rejects_extended_length() {
        assert_eq!(CommandApdu::decode(&h("00880081 00 0001 aa")).unwrap_err().kind, ApduErrorKind::BadLength(0));
    }

    #[test]
    fn rejects_short_header() {
        assert!(matches!(CommandApdu::decode(&h("0088")).unwrap_err().kind, ApduErrorKind::Truncated { .. }));
    }

    #[test]
    fn rejects_encoding_oversize_data_or_le() {
        let long = CommandApdu::new(0, 0x89, 0x80, 0x85).with_data(vec![0; 256]);
        assert!(matches!(long.to_bytes().unwrap_err().kind, ApduErrorKind::TooLong { len: 256, max: 255 }));
        assert!(CommandApdu::new(0, 0xb0, 0, 0).with_le(0).to_bytes().is_err());
        assert!(CommandApdu::new(0, 0xb0, 0, 0).with_le(257).to_bytes().is_err());
    }

    #[test]
    fn response_apdu_round_trips_and_rejects_one_byte() {
        let r = ResponseApdu::decode(&h("db0862f3")).unwrap();
        assert_eq!((r.data.as_slice(), r.sw), (&[0xdb, 0x08][..], StatusWord::RESPONSE_DATA_AVAILABLE));
        assert_eq!(r.to_bytes(), h("db0862f3"));
        assert!(ResponseApdu::decode(&[0x90]).is_err());
    }

    #[test]
    fn tlv_lengths_round_trip_in_every_form() {
        for (len, header) in
            [(0, "53 00"), (0x7f, "53 7f"), (0x80, "53 8180"), (0x1234, "53 821234"), (0x12345, "53 83012345")]
        {
            let value = vec![0x5a; len];
            let mut out = Vec::new();
            write_tlv(&mut out, 0x53, &value).unwrap();
            assert_eq!(&out[..out.len() - len], h(header).as_slice());
            let tlv = single_tlv(&out, 0x53, "t").unwrap();
            assert_eq!((tlv.value, tlv.value_offset), (value.as_slice(), out.len() - len));
        }
        let mut out = Vec::new();
        write_tlv(&mut out, 0x9f20, &[1]).unwrap();
        assert_eq!(out, h("9f20 01 01"));
        assert_eq!(single_tlv(&out, 0x9f20, "t").unwrap().value, [1]);
    }

    #[test]
    fn rejects_truncated_tlv() {
        let e = single_tlv(&h("53 05 010203"), 0x53, "t").unwrap_err();
        assert_eq!((e.offset, e.kind), (2, ApduErrorKind::Truncated { needed: 5, left: 3 }));
        assert!(matches!(single_tlv(&h("53 82 01"), 0x53, "t").unwrap_err().kind, ApduErrorKind::Truncated { .. }));
    }

    #[test]
    fn rejects_oversize_and_indefinite_tlv_lengths() {
        let e = single_tlv(&h("53 84 00000001 00"), 0x53, "t").unwrap_err();
        assert_eq!((e.offset, e.kind), (1, ApduErrorKind::BadLength(0x84)));
        assert_eq!(single_tlv(&h("53 80"), 0x53, "t").unwrap_err().kind, ApduErrorKind::BadLength(0x80));
        assert!(matches!(
            write_tlv(&mut Vec::new(), 0x53, &vec![0; MAX_TLV_LEN + 1]).unwrap_err().kind,
            ApduErrorKind::TooLong { .. }
        ));
    }

    #[test]
    fn rejects_three_byte_tags_and_padding_tags() {
        assert!(matches!(single_tlv(&h("9f 81 01 00"), 0x9f81, "t").unwrap_err().kind, ApduErrorKind::BadTag(_)));
        assert_eq!(single_tlv(&h("ff 00"), 0xff, "t").unwrap_err().kind, ApduErrorKind::BadTag(0xff));
        assert!(write_tlv(&mut Vec::new(), 0x1f, &[]).is_err());
    }

    #[test]
    fn rejects_wrong_tag_and_trailing_tlv_data() {
        assert_eq!(single_tlv(&h("73 00"), 0x53, "t").unwrap_err().kind, ApduErrorKind::BadTag(0x73));
        assert_eq!(single_tlv(&h("53 00 00"), 0x53, "t").unwrap_err().kind, ApduErrorKind::TrailingData { left: 1 });
    }

    #[test]
    fn gba_commands_round_trip_and_unknown_mode_is_unsupported() {
        let boot = GbaCommand::Bootstrap { rand: [1; 16], autn: [2; 16] };
        let bytes = boot.encode().unwrap();
        assert_eq!(&bytes[..2], [0xdd, 0x10]);
        assert_eq!(GbaCommand::decode(&bytes).unwrap(), boot);
        let naf = GbaCommand::NafDerivation { naf_id: b"bmsc.example.org\x01\0\0\0\x01".to_vec(), impi: "me@x".into() };
        assert_eq!(GbaCommand::decode(&naf.encode().unwrap()).unwrap(), naf);
        let e = GbaCommand::decode(&h("df 00")).unwrap_err();
        assert_eq!((e.kind.clone(), e.status_word()), (ApduErrorKind::Unsupported(0xdf), StatusWord(0x9864)));
    }

    #[test]
    fn rejects_rand_of_wrong_length() {
        let e = Aka3gCommand::decode(&h(&format!("0f{} 10{}", "00".repeat(15), "00".repeat(16)))).unwrap_err();
        assert_eq!((e.field, e.kind), ("RAND", ApduErrorKind::BadLength(15)));
    }

    #[test]
    fn aka_answers_round_trip_and_kc_is_dropped() {
        let a = AkaAnswer::Success3g {
            res: Res::from_bytes([1; 8]),
            ck: Ck::from_bytes([2; 16]),
            ik: Ik::from_bytes([3; 16]),
        };
        let mut bytes = encode_aka_answer(&a);
        assert_eq!(decode_aka_answer(&bytes, AkaContext::ThreeG).unwrap(), a);
        bytes.extend_from_slice(&h("08 0000000000000000"));
        assert_eq!(decode_aka_answer(&bytes, AkaContext::ThreeG).unwrap(), a);
        let sync = AkaAnswer::SyncFailure { auts: [9; 14] };
        assert_eq!(decode_aka_answer(&encode_aka_answer(&sync), AkaContext::Gba).unwrap(), sync);
        let gba = AkaAnswer::SuccessGba { res: Res::from_bytes([4; 8]) };
        assert_eq!(encode_aka_answer(&gba), h("db 08 0404040404040404"));
        assert!(decode_aka_answer(&h("db 04 01020304"), AkaContext::Gba).is_err(), "RES of 4 bytes");
    }

    #[test]
    fn mbms_commands_round_trip() {
        let kd = KeyDomainId([0x00, 0xf1, 0x10]);
        for cmd in [
            MbmsCommand::MskUpdate(vec![1, 2, 3]),
            MbmsCommand::MtkGeneration(vec![0; 300]),
            MbmsCommand::MskDeletion { key_domain_id: kd, key_group: 0x0102 },
            MbmsCommand::MukDeletion { idi: "bmsc.example.org".into(), idr: "x@bsf".into() },
        ] {
            assert_eq!(MbmsCommand::decode(&cmd.encode().unwrap()).unwrap(), cmd);
        }
        assert_eq!(
            MbmsCommand::MskDeletion { key_domain_id: kd, key_group: 1 }.encode().unwrap(),
            h("53 06 03 00f110 0001")
        );
        assert_eq!(
            MbmsCommand::MukDeletion { idi: "i".into(), idr: "r".into() }.encode().unwrap(),
            h("53 09 04 a0 06 80 01 72 82 01 69")
        );
    }

    #[test]
    fn rejects_unknown_mbms_mode_and_short_deletion() {
        assert_eq!(MbmsCommand::decode(&h("53 02 07 00")).unwrap_err().kind, ApduErrorKind::Unsupported(7));
        assert!(matches!(
            MbmsCommand::decode(&h("53 04 03 00f110")).unwrap_err().kind,
            ApduErrorKind::Truncated { .. }
        ));
        assert!(matches!(
            MbmsCommand::decode(&h("53 07 03 00f110 0001 00")).unwrap_err().kind,
            ApduErrorKind::TrailingData { .. }
        ));
    }

    #[test]
    fn mbms_answers_and_tek_forms() {
        assert_eq!(encode_mbms_answer(&[]).unwrap(), h("53 01 db"));
        assert_eq!(decode_mbms_answer(&h("53 03 db 0102")).unwrap(), [1, 2]);
        assert!(decode_mbms_answer(&h("53 01 dc")).is_err());
        assert!(decode_mbms_answer(&h("53 00")).is_err());
        let clear = TekOut::Clear { tek: Tek::from_bytes([1; 16]), salt: Some(TekSalt::from_bytes([2; 14])) };
        let tbk = TekOut::TbkWrapped { wrapped: [3; 24], salt: None };
        let chan = TekOut::ChannelWrapped(Box::new([4; 40]));
        for (t, len) in [(clear, 30), (tbk, 24), (chan, 40)] {
            let bytes = encode_tek_out(&t);
            assert_eq!(bytes.len(), len);
            assert_eq!(decode_tek_out(&bytes).unwrap(), t);
        }
        assert_eq!(decode_tek_out(&[0; 17]).unwrap_err().kind, ApduErrorKind::BadLength(17));
    }

    fn lke() -> LocalKeyRequest {
        LocalKeyRequest {
            naf_id: b"bmsc.example.org\x01\0\0\0\x01".to_vec(),
            terminal_id: b"IMEI".to_vec(),
            terminal_appli_id: b"platform".to_vec(),
            uicc_appli_id: b"platform".to_vec(),
            randx: vec![7; 16],
            counter_limit: [0; 16],
            mac: [9; 16],
        }
    }

    #[test]
    fn local_key_request_round_trips() {
        let bytes = encode_local_key_request(&lke()).unwrap();
        assert_eq!(&bytes[..4], [0x73, 0x67, 0x80, 0x15]);
        assert_eq!(decode_local_key_request(&bytes).unwrap(), lke());
        let v = [5u8; 16];
        assert_eq!(decode_local_key_answer(&encode_local_key_answer(&v)).unwrap(), v);
        assert_eq!(decode_local_key_answer(&encode_local_key_answer(&v)[2..]).unwrap(), v, "unwrapped");
    }

    #[test]
    fn rejects_local_key_request_with_short_mac_or_missing_field() {
        let mut bytes = encode_local_key_request(&lke()).unwrap();
        // Drop the last MAC byte and fix both lengths.
        bytes.pop();
        bytes[1] -= 1;
        let n = bytes.len();
        bytes[n - 16] = 15;
        assert_eq!(decode_local_key_request(&bytes).unwrap_err().kind, ApduErrorKind::BadLength(15));
        let mut inner = Vec::new();
        write_tlv(&mut inner, 0x80, b"naf").unwrap();
        let mut outer = Vec::new();
        write_tlv(&mut outer, 0x73, &inner).unwrap();
        assert!(matches!(decode_local_key_request(&outer).unwrap_err().kind, ApduErrorKind::Truncated { .. }));
    }

    #[test]
    fn local_key_availability_check_round_trips_and_is_told_from_the_derivation() {
        let ids = lke().ids();
        let bytes = encode_local_key_check(&ids).unwrap();
        assert_eq!(&bytes[..4], [0x73, 0x31, 0x80, 0x15]);
        assert_eq!(decode_local_key_command(&bytes).unwrap(), LocalKeyCommand::AvailabilityCheck(ids));
        let full = encode_local_key_request(&lke()).unwrap();
        assert_eq!(decode_local_key_command(&full).unwrap(), LocalKeyCommand::Establish(lke()));
        assert!(matches!(decode_local_key_request(&bytes).unwrap_err().kind, ApduErrorKind::Truncated { .. }));
        for (status, byte) in
            [(LocalKeyStatus::NotEstablished, 0), (LocalKeyStatus::Available, 1), (LocalKeyStatus::Exhausted, 2)]
        {
            let answer = encode_local_key_status(status);
            assert_eq!(answer, [0x53, 0x03, 0xdb, 0x01, byte]);
            assert_eq!(decode_local_key_status(&answer).unwrap(), status);
        }
    }

    #[test]
    fn rejects_availability_check_with_part_of_the_derivation_or_a_bad_status() {
        let mut inner = Vec::new();
        for (tag, v) in [(0x80, &b"naf"[..]), (0x81, b"t"), (0x82, b"a"), (0x83, b"u"), (0x84, b"r")] {
            write_tlv(&mut inner, tag, v).unwrap();
        }
        let mut outer = Vec::new();
        write_tlv(&mut outer, 0x73, &inner).unwrap();
        let e = decode_local_key_command(&outer).unwrap_err();
        assert_eq!(
            (e.kind.clone(), e.status_word()),
            (ApduErrorKind::Truncated { needed: 1, left: 0 }, StatusWord::WRONG_LENGTH)
        );
        assert_eq!(decode_local_key_status(&h("53 03 db 01 03")).unwrap_err().kind, ApduErrorKind::BadValue);
        assert!(matches!(
            decode_local_key_status(&h("53 04 db 02 0100")).unwrap_err().kind,
            ApduErrorKind::BadLength(2)
        ));
    }

    fn counters() -> AuditCounters {
        AuditCounters {
            live_stkms: 0x0102_0304,
            play_back_sessions: 2,
            play_backs_left: 3,
            views_left: 4,
            ppv_program: Some(Some(0x42)),
            paid_programs: 5,
            consumption_reporting: true,
        }
    }

    #[test]
    fn audit_request_and_answer_round_trip_in_the_chosen_layout() {
        let kd = KeyDomainId([0x00, 0xf1, 0x10]);
        let id = SekPekId { key_group: 1, key_number: 2 };
        let req = encode_audit_request(kd, id);
        assert_eq!(req, h("00f110 00010002"));
        assert_eq!(decode_audit_request(&req).unwrap(), (kd, id));
        let answer = encode_audit_answer(&counters()).unwrap();
        assert_eq!(
            answer,
            h("ae 24 80 22 8104 01020304 8204 00000002 8302 0003 8402 0004 8505 01 00000042 8602 0005 8701 01")
        );
        assert_eq!(decode_audit_answer(&answer).unwrap(), counters());
        for ppv in [None, Some(None)] {
            let a = AuditCounters { ppv_program: ppv, consumption_reporting: false, ..counters() };
            assert_eq!(decode_audit_answer(&encode_audit_answer(&a).unwrap()).unwrap(), a);
        }
    }

    #[test]
    fn rejects_audit_request_of_wrong_length_and_bad_audit_answers() {
        assert_eq!(decode_audit_request(&h("00f110 000100")).unwrap_err().status_word(), StatusWord::WRONG_LENGTH);
        assert_eq!(decode_audit_request(&h("00f110 00010002 00")).unwrap_err().status_word(), StatusWord::WRONG_LENGTH);
        let good = encode_audit_answer(&counters()).unwrap();
        let mut bad_flag = good.clone();
        *bad_flag.last_mut().unwrap() = 2;
        assert_eq!(decode_audit_answer(&bad_flag).unwrap_err().kind, ApduErrorKind::BadValue);
        let mut bad_tag = good.clone();
        bad_tag[4] = 0x91;
        assert_eq!(decode_audit_answer(&bad_tag).unwrap_err().kind, ApduErrorKind::BadTag(0x91));
        assert_eq!(decode_audit_answer(&h("ae 02 8500")).unwrap_err().kind, ApduErrorKind::BadTag(0x85));
        let ppv = |v: &str| {
            let fields = h(&format!("8104 00000000 8204 00000000 8302 0000 8402 0000 85{v} 8602 0000 8701 00"));
            let mut management = Vec::new();
            write_tlv(&mut management, 0x80, &fields).unwrap();
            let mut out = Vec::new();
            write_tlv(&mut out, 0xae, &management).unwrap();
            out
        };
        assert_eq!(decode_audit_answer(&ppv("00")).unwrap().ppv_program, None);
        assert_eq!(decode_audit_answer(&ppv("03 020000")).unwrap_err().kind, ApduErrorKind::BadValue, "form 02");
        assert_eq!(decode_audit_answer(&ppv("03 010000")).unwrap_err().kind, ApduErrorKind::BadLength(3));
    }

    #[test]
    fn parental_setting_round_trips_and_rejects_long_values_and_other_tags() {
        assert_eq!(encode_parental(Some(12)).unwrap(), h("ae 03 88 01 0c"));
        assert_eq!(encode_parental(None).unwrap(), h("ae 02 88 00"));
        for limit in [None, Some(0), Some(18), Some(255)] {
            assert_eq!(decode_parental(&encode_parental(limit).unwrap()).unwrap(), limit);
        }
        let e = decode_parental(&h("ae 04 88 02 0c0c")).unwrap_err();
        assert_eq!((e.kind.clone(), e.status_word()), (ApduErrorKind::BadLength(2), StatusWord::WRONG_LENGTH));
        let e = decode_parental(&h("ae 03 8a 01 0c")).unwrap_err();
        assert_eq!((e.kind.clone(), e.status_word()), (ApduErrorKind::BadTag(0x8a), StatusWord::INCORRECT_DATA));
        assert_eq!(decode_parental(&h("73 03 88 01 0c")).unwrap_err().status_word(), StatusWord::INCORRECT_DATA);
        assert_eq!(decode_parental(&h("ae 05 88 01 0c 88 00")).unwrap_err().status_word(), StatusWord::WRONG_LENGTH);
    }

    #[test]
    fn chaining_splits_and_reassembles() {
        let mut data = Vec::new();
        write_tlv(&mut data, 0x53, &[0x42; 600]).unwrap();
        let blocks = command_blocks(0, 0x89, 0x85, &data, 255);
        assert_eq!(blocks.iter().map(|b| (b.p1, b.data.len())).collect::<Vec<_>>(), [(0x80, 255), (0, 255), (0, 94)]);
        let mut progress = CommandChain::start(0x85, &blocks[0].data).unwrap();
        for b in &blocks[1..] {
            let ChainProgress::NeedMore(c) = progress else { panic!("complete too early") };
            progress = c.push(&b.data).unwrap();
        }
        assert_eq!(progress, ChainProgress::Complete(data.clone()));
        let mut r = ResponseChain::new(0x85, data.clone());
        let (first, more) = r.next_block(256);
        assert_eq!((first.len(), more), (256, true));
        assert_eq!(clamp_block_size(1), MIN_BLOCK_SIZE);
    }

    #[test]
    fn rejects_chain_longer_than_announced_or_without_header() {
        let ChainProgress::NeedMore(c) = CommandChain::start(0x85, &h("53 05 0102")).unwrap() else { panic!() };
        assert!(matches!(c.push(&h("03040506")).unwrap_err().kind, ApduErrorKind::TrailingData { left: 1 }));
        assert!(CommandChain::start(0x85, &h("53 82 01")).is_err());
        assert!(matches!(
            CommandChain::start(0x85, &h("53 83 ffffff 00")).unwrap_err().kind,
            ApduErrorKind::TooLong { .. }
        ));
    }

    #[test]
    fn ef_contents_round_trip() {
        let gbabp = EfGbabp { rand: [1; 16], b_tid: Some("b@bsf".into()), lifetime: Some("2026".into()) };
        let image = gbabp.encode(EF_GBABP_SIZE).unwrap();
        assert_eq!(image.len(), EF_GBABP_SIZE);
        assert_eq!(EfGbabp::decode(&image).unwrap(), Some(gbabp));
        let fresh = EfGbabp { rand: [1; 16], b_tid: None, lifetime: None };
        assert_eq!(EfGbabp::decode(&fresh.encode(64).unwrap()).unwrap(), Some(fresh));
        assert_eq!(EfGbabp::decode(&[0xff; 10]).unwrap(), None);

        let msk = EfMskRecord {
            key_domain_id: KeyDomainId([0, 0xf1, 0x10]),
            pairs: vec![(SekPekId { key_group: 1, key_number: 2 }, 7), (SekPekId { key_group: 1, key_number: 1 }, 0)],
        };
        let rec = msk.encode().unwrap();
        assert_eq!(&rec[..12], h("00f110 02 00010002 00000007"));
        assert_eq!(EfMskRecord::decode(&rec).unwrap(), Some(msk));
        assert_eq!(EfMskRecord::decode(&[0xff; 20]).unwrap(), None);

        let muk = EfMukRecord { idr: "r".into(), idi: "i".into(), ts: 9 };
        let rec = muk.encode().unwrap();
        assert_eq!(&rec[..14], h("a0 06 80 01 72 82 01 69 81 04 00000009"));
        assert_eq!(EfMukRecord::decode(&rec).unwrap(), Some(muk));

        let nl = EfGbanlRecord { naf_id: b"n\x01\0\0\0\x01".to_vec(), b_tid: "b".into() };
        assert_eq!(EfGbanlRecord::decode(&nl.encode().unwrap()).unwrap(), Some(nl));
    }

    #[test]
    fn rejects_msk_record_with_bad_count() {
        let mut rec = vec![0xff; 20];
        rec[..4].copy_from_slice(&h("00f110 03"));
        let e = EfMskRecord::decode(&rec).unwrap_err();
        assert_eq!((e.offset, e.kind), (3, ApduErrorKind::BadLength(3)));
        assert!(EfMskRecord { key_domain_id: KeyDomainId([0; 3]), pairs: vec![] }.encode().is_err());
    }

    #[test]
    fn rejects_record_with_garbage_after_the_tlvs() {
        let mut rec = EfGbanlRecord { naf_id: b"n".to_vec(), b_tid: "b".into() }.encode().unwrap();
        rec[10] = 0;
        assert!(matches!(EfGbanlRecord::decode(&rec).unwrap_err().kind, ApduErrorKind::TrailingData { .. }));
    }

    #[test]
    fn rejects_oversize_record_content() {
        let muk = EfMukRecord { idr: "r".repeat(300), idi: "i".into(), ts: 0 };
        assert!(matches!(muk.encode().unwrap_err().kind, ApduErrorKind::TooLong { .. }));
    }

    proptest! {
        #[test]
        fn command_apdu_encode_decode_round_trip(
            header in any::<[u8; 4]>(),
            data in proptest::collection::vec(any::<u8>(), 0..=255),
            le in proptest::option::of(1u16..=256),
        ) {
            let apdu = CommandApdu { cla: header[0], ins: header[1], p1: header[2], p2: header[3], data, le };
            prop_assert_eq!(CommandApdu::decode(&apdu.to_bytes().unwrap()).unwrap(), apdu);
        }

        #[test]
        fn tlv_decoder_never_panics_and_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut r = Reader::new(&bytes);
            if let Ok(tlv) = read_tlv(&mut r) {
                let mut out = Vec::new();
                write_tlv(&mut out, tlv.tag, tlv.value).unwrap();
                let again = single_tlv(&out, tlv.tag, "t").unwrap();
                prop_assert_eq!(again.value, tlv.value);
            }
            let _ = MbmsCommand::decode(&bytes);
            let _ = decode_local_key_request(&bytes);
            let _ = decode_local_key_command(&bytes);
            let _ = decode_audit_answer(&bytes);
            let _ = decode_parental(&bytes);
            let _ = decode_local_key_status(&bytes);
            let _ = EfMukRecord::decode(&bytes);
            let _ = EfGbabp::decode(&bytes);
        }
    }
}
