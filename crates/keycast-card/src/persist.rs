//! The card file: every piece of [`Usim`] state in a versioned binary format, written atomically,
//! and a [`PersistentCard`] that decides when to write it.
//!
//! This is the IO edge of the crate: the core ([`crate::usim`], [`crate::mbms`]) never touches a
//! file, and [`encode`]/[`decode`] do no IO either; only [`CardFile`] and [`PersistentCard`] do.
//!
//! # Format (version 2; version 1 is still read)
//!
//! Hand-written, big-endian, every variable-length field length-prefixed:
//!
//! ```text
//! offset 0   magic            "KEYCAST-CARD\0" (13 bytes)
//!        13  format version   u16 (= 2)
//!        15  body length      u32
//!        19  body             sections, each `tag u8 ‖ length u32 ‖ content`, all six, in order:
//!              1 identity     str IMSI ‖ str IMPI ‖ str ICCID
//!              2 subscriber   key K (16) ‖ key OPc (16)
//!              3 aka          bytes SQN_MS (6) ‖ u64 SQN window
//!              4 gba          opt { key Ks (32) ‖ bytes RAND (16) ‖ opt str B-TID ‖ opt str lifetime }
//!              5 naf          u64 use counter ‖ list of record { bytes NAF_Id ‖ str B-TID ‖
//!                             key Ks_int_NAF (32) ‖ u64 last use }
//!              6 mbms         u32 EF_MUK records ‖ u32 EF_MSK records ‖ opt u8 parental limit ‖
//!                             opt { key K_sac (16) ‖ u128 counter limit ‖ u128 used ‖
//!                             opt { bytes NAF_Id ‖ bytes Terminal_ID ‖ bytes Terminal_appli_ID ‖
//!                             bytes UICC_appli_ID } } ‖
//!                             list of MUK record ‖ list of MSK record
//! end-32     checksum         HMAC-SHA-256(key = CHECKSUM_KEY, every byte before it)
//! ```
//!
//! - `str` and `bytes`: `u32 length ‖ data` (str is UTF-8); `key`: a `bytes` whose length must be
//!   the key's; `opt`: `u8 0` (absent) or `u8 1` and the value; any other tag is corruption.
//! - `list`: `u32 count ‖ count × (u32 length ‖ record)`; every record is read in its own bounded
//!   reader and must be consumed exactly.
//! - MUK record: str IDi ‖ MUK current ‖ opt MUK last used; MUK: str IDr ‖ key (32) ‖ opt u32 TS.
//! - MSK record: bytes Key Domain ID (3) ‖ u16 Key Group ‖ list of key { bytes SEK/PEK ID (4) ‖
//!   key SEK/PEK (16) ‖ bytes RAND (16) ‖ validity (`u8 1 ‖ u16 SEQl ‖ u16 SEQu` or
//!   `u8 2 ‖ u32 TS low ‖ u32 TS high`) ‖ opt bytes OMA BCAST LTKM extension (subtype 1 and body,
//!   as on the wire, profile P-4) ‖ opt u32 TS ‖ opt u16 TEK ID ‖ rights }.
//! - Rights: u16 play-backs left ‖ u16 views left ‖ PPV program (`u8 0` none, `1` a program
//!   without ID, `2 ‖ u32` a program ID) ‖ list of paid program (`u8 0` or `u8 1 ‖ u32`) ‖
//!   u8 in play-back ‖ u32 live count ‖ u32 play-back sessions.
//! - The per-key message-key cache of [`MskEntry`] is derived data and is not stored.
//! - **Version 1** is version 2 without the secure channel's identifiers (the inner `opt` after
//!   `used`); [`decode`] reads it with the identifiers absent ([`SecureChannel::ids`] `None`:
//!   the Local Key Establishment availability check answers "not established" until the terminal
//!   establishes the key again), and [`encode`] always writes version 2. Version 2 added the
//!   identifiers for that availability check (TS 33.110 Annex B).
//!
//! [`decode`] checks, in this order: magic ([`PersistError::WrongMagic`]), version
//! ([`PersistError::UnsupportedVersion`]), length ([`PersistError::Truncated`]), checksum
//! ([`PersistError::ChecksumMismatch`]), then the structure ([`PersistError::Corrupted`] with the
//! byte offset). It never panics, whatever the bytes.
//!
//! The checksum detects corruption; it is not a signature (its key is public). The file holds K,
//! OPc and every card key in the clear: it is a test-lab emulator's memory, protected by its file
//! mode (0600) only.
//!
//! # Writing
//!
//! [`CardFile::save`] writes the new state to a temporary file next to the card file
//! (`.NAME.tmp`), `fsync`s it, renames it over the card file and `fsync`s the directory. A crash
//! at any moment leaves either the old or the new state, never a torn file; at most one stale
//! temporary file is left behind, and the next save replaces it. One process writes a card file
//! at a time (there is no lock).
//!
//! # Durability policy ([`PersistentCard`])
//!
//! - **Saved before the answer leaves the card**: every operation that grants or consumes rights
//!   or changes keys: an accepted LTKM (MSK update), MSK and MUK deletion, AKA runs that move
//!   SQN_MS (3G authentication, GBA bootstrapping), the EF_GBABP write, NAF derivation, Local Key
//!   Establishment, the terminal's parental setting (OMA BCAST parental control), and every STKM that changes rights or counters (a play-back session start, a
//!   view token spent, a pay-per-view key locked to its program, the end of a play-back session,
//!   a TEK released over the secure channel).
//! - **Batched**: an STKM accepted live that changes only the key's TS and TEK ID (and the audit
//!   count of live STKMs, and SEQl for MBMS keys). These are saved with the next save, at the
//!   latest after [`PersistentCard::DEFAULT_LIVE_BATCH`] (64) such STKMs, on
//!   [`PersistentCard::flush`], and when the card is dropped.
//!
//! Why batching is safe: after a crash the card can at worst have forgotten the TS/TEK ID
//! advances of the last unsaved window (fewer than 64 live STKMs, about a minute of one STKM per
//! second). Replaying an STKM of that window is then accepted as live again, releasing a TEK the
//! card had already released live for that very key and window: it grants nothing new. Anything
//! that spends or grants a right was written before its answer left the card, so it is never lost.
//!
//! When a save fails, the operation's answer is withheld (an error is returned) even though the
//! in-memory state has already moved on: the card errs on the side of the rights holder's
//! operator, and the next save retries.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use keycast_crypto::hmac::{ct_eq, hmac_sha256};
use keycast_crypto::keys::{Ks, KsExtNaf, KsIntNaf, Opc, SekPek, Smk, SubscriberKey};
use keycast_mikey::{KeyDomainId, KeyValidity, LtkmExt, SekPekId, Stkm};

use crate::mbms::AuditCounters;
use zeroize::Zeroizing;

use crate::card::{Card, CardOpError, TransportError};
use crate::error::CardError;
use crate::mbms::{Capacity, MbmsStore, MskEntry, MskRecord, MskUpdate, MtkAnswer, MukKey, MukRecord, Rights, TekOut};
use crate::sac::{LocalKeyIds, LocalKeyStatus, SecureChannel};
use crate::usim::{AkaAnswer, GbaContext, LocalKeyRequest, NafKeyRecord, Usim, UsimIdentity};

pub mod gba_me;

/// The first 13 bytes of every card file.
pub const MAGIC: &[u8; 13] = b"KEYCAST-CARD\0";

/// The format version this Keycast writes (and the newest it reads).
pub const FORMAT_VERSION: u16 = 2;

/// The oldest format version this Keycast reads (version 1: no secure-channel identifiers).
pub const OLDEST_FORMAT_VERSION: u16 = 1;

/// The fixed, public HMAC-SHA-256 key of the checksum: it detects corruption, it authenticates
/// nothing.
pub const CHECKSUM_KEY: &[u8] = b"keycast card file checksum v1";

/// Length of the checksum at the end of the file.
pub const CHECKSUM_LEN: usize = 32;

/// Bytes before the body: magic, version, body length.
pub const HEADER_LEN: usize = MAGIC.len() + 2 + 4;

/// Card files larger than this are refused without being read (a real one is a few kB).
pub const MAX_FILE_LEN: u64 = 16 << 20;

const TAG_IDENTITY: u8 = 1;
const TAG_SUBSCRIBER: u8 = 2;
const TAG_AKA: u8 = 3;
const TAG_GBA: u8 = 4;
const TAG_NAF: u8 = 5;
const TAG_MBMS: u8 = 6;

const VALIDITY_TEK_ID: u8 = 1;
const VALIDITY_TS: u8 = 2;

/// Why bytes are not a card file this Keycast can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PersistError {
    /// The file does not start with the magic of the kind expected (`KEYCAST-CARD\0` for a card
    /// file).
    #[error("not a Keycast {expected} (wrong magic)")]
    WrongMagic {
        /// The kind of file expected: "card file", "GBA_ME key store".
        expected: &'static str,
    },
    /// The file was written by another Keycast version.
    #[error(
        "key file from another Keycast version: format version {found}, this Keycast reads version {oldest} to \
         {supported}",
        oldest = OLDEST_FORMAT_VERSION
    )]
    UnsupportedVersion {
        /// The version in the file.
        found: u16,
        /// The newest version this Keycast reads (the one it writes); it reads back to
        /// [`OLDEST_FORMAT_VERSION`].
        supported: u16,
    },
    /// The structure is inconsistent at this byte offset although the checksum matched.
    #[error("key file corrupted at byte {offset}: bad {what}")]
    Corrupted {
        /// Offset of the field from the start of the file.
        offset: usize,
        /// The field.
        what: &'static str,
    },
    /// The checksum does not match the contents: the file was damaged.
    #[error("key file corrupted: checksum mismatch")]
    ChecksumMismatch,
    /// The file ends before its header says it does.
    #[error("key file truncated: {len} bytes, {needed} expected")]
    Truncated {
        /// Bytes present.
        len: usize,
        /// Bytes the header calls for (at least).
        needed: usize,
    },
}

// ---------------------------------------------------------------------------------------------
// Writer

/// An output buffer that never leaves key bytes behind in freed memory: when it must grow it
/// moves to a new zeroizing allocation and the old one is wiped on drop.
struct Writer {
    buf: Zeroizing<Vec<u8>>,
}

impl Writer {
    fn new() -> Self {
        Self { buf: Zeroizing::new(Vec::with_capacity(4096)) }
    }

    fn reserve(&mut self, n: usize) {
        let need = self.buf.len() + n;
        if need > self.buf.capacity() {
            let mut bigger = Zeroizing::new(Vec::with_capacity(need.max(2 * self.buf.capacity())));
            bigger.extend_from_slice(&self.buf);
            // The old buffer is wiped when it drops here.
            self.buf = bigger;
        }
    }

    fn put(&mut self, bytes: &[u8]) {
        self.reserve(bytes.len());
        self.buf.extend_from_slice(bytes);
    }

    fn u8(&mut self, v: u8) {
        self.put(&[v]);
    }

    fn u16(&mut self, v: u16) {
        self.put(&v.to_be_bytes());
    }

    fn u32(&mut self, v: u32) {
        self.put(&v.to_be_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.put(&v.to_be_bytes());
    }

    fn u128(&mut self, v: u128) {
        self.put(&v.to_be_bytes());
    }

    fn len32(n: usize) -> u32 {
        // Card state lives in memory; no field of it comes near 4 GiB.
        u32::try_from(n).expect("card file field longer than 4 GiB")
    }

    fn count(&mut self, n: usize) {
        self.u32(Self::len32(n));
    }

    fn bytes(&mut self, b: &[u8]) {
        self.count(b.len());
        self.put(b);
    }

    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    fn opt<T>(&mut self, v: Option<T>, f: impl FnOnce(&mut Self, T)) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                f(self, v);
            }
        }
    }

    /// `u32 length ‖ content`: the length is written once the content is complete. Until then it
    /// holds 0xFFFFFFFF, so a half-written record can never be read as a shorter one.
    fn nested(&mut self, f: impl FnOnce(&mut Self)) {
        let at = self.buf.len();
        self.u32(u32::MAX);
        f(self);
        let len = Self::len32(self.buf.len() - at - 4);
        self.buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }

    fn section(&mut self, tag: u8, f: impl FnOnce(&mut Self)) {
        self.u8(tag);
        self.nested(f);
    }

    fn list<T>(&mut self, items: &[T], mut f: impl FnMut(&mut Self, &T)) {
        self.count(items.len());
        for item in items {
            self.nested(|w| f(w, item));
        }
    }
}

/// Encodes the whole card state (format version [`FORMAT_VERSION`]). The result holds keys and is
/// wiped on drop.
#[must_use]
pub fn encode(usim: &Usim) -> Zeroizing<Vec<u8>> {
    encode_as(usim, FORMAT_VERSION)
}

/// Encodes in format `version` ([`OLDEST_FORMAT_VERSION`]..=[`FORMAT_VERSION`]); only the tests
/// write older versions.
fn encode_as(usim: &Usim, version: u16) -> Zeroizing<Vec<u8>> {
    frame(&CARD_FRAME, version, |w| encode_body(w, usim, version))
}

/// The framing shared by the files of this module (the card file, the GBA_ME key store file):
/// magic ‖ u16 version ‖ u32 body length ‖ body ‖ HMAC-SHA-256 checksum.
struct Frame {
    /// What the file is, for [`PersistError::WrongMagic`].
    kind: &'static str,
    magic: &'static [u8; 13],
    oldest: u16,
    newest: u16,
    checksum_key: &'static [u8],
}

const CARD_FRAME: Frame = Frame {
    kind: "card file",
    magic: MAGIC,
    oldest: OLDEST_FORMAT_VERSION,
    newest: FORMAT_VERSION,
    checksum_key: CHECKSUM_KEY,
};

fn frame(f: &Frame, version: u16, body: impl FnOnce(&mut Writer)) -> Zeroizing<Vec<u8>> {
    let mut w = Writer::new();
    w.put(f.magic);
    w.u16(version);
    w.nested(body);
    let sum = hmac_sha256(f.checksum_key, &[&w.buf]);
    w.put(&sum);
    w.buf
}

/// Checks the frame (magic, version, length, checksum, in this order) and returns the version
/// and a reader over the body.
fn unframe<'a>(f: &Frame, data: &'a [u8]) -> Res<(u16, Reader<'a>)> {
    let magic_len = f.magic.len().min(data.len());
    if data[..magic_len] != f.magic[..magic_len] {
        return Err(PersistError::WrongMagic { expected: f.kind });
    }
    if data.len() < HEADER_LEN {
        return Err(PersistError::Truncated { len: data.len(), needed: HEADER_LEN + CHECKSUM_LEN });
    }
    let mut r = Reader::at(&data[..HEADER_LEN], 0);
    r.take(f.magic.len(), "magic")?;
    let version = r.u16("format version")?;
    if !(f.oldest..=f.newest).contains(&version) {
        return Err(PersistError::UnsupportedVersion { found: version, supported: f.newest });
    }
    let body_len = r.len("body length")?;
    let needed = HEADER_LEN.saturating_add(body_len).saturating_add(CHECKSUM_LEN);
    if data.len() < needed {
        return Err(PersistError::Truncated { len: data.len(), needed });
    }
    if data.len() > needed {
        return Err(PersistError::Corrupted { offset: needed, what: "end of file (bytes after the checksum)" });
    }
    let (signed, sum) = data.split_at(needed - CHECKSUM_LEN);
    if !ct_eq(&hmac_sha256(f.checksum_key, &[signed]), sum) {
        return Err(PersistError::ChecksumMismatch);
    }
    Ok((version, Reader::at(&signed[HEADER_LEN..], HEADER_LEN)))
}

fn encode_body(w: &mut Writer, usim: &Usim, version: u16) {
    w.section(TAG_IDENTITY, |w| {
        w.str(&usim.identity.imsi);
        w.str(&usim.identity.impi);
        w.str(&usim.identity.iccid);
    });
    w.section(TAG_SUBSCRIBER, |w| {
        let (k, opc) = usim.expose_subscriber_keys();
        w.bytes(k.expose_secret());
        w.bytes(opc.expose_secret());
    });
    w.section(TAG_AKA, |w| {
        w.bytes(&usim.sqn_ms);
        w.u64(usim.sqn_window);
    });
    w.section(TAG_GBA, |w| {
        w.opt(usim.gba.as_ref(), |w, g| {
            w.bytes(g.ks.expose_secret());
            w.bytes(&g.rand);
            w.opt(g.b_tid.as_deref(), Writer::str);
            w.opt(g.lifetime.as_deref(), Writer::str);
        });
    });
    w.section(TAG_NAF, |w| {
        w.u64(usim.use_counter);
        w.list(&usim.naf_keys, |w, r| {
            w.bytes(&r.naf_id);
            w.str(&r.b_tid);
            w.bytes(r.ks_int_naf.expose_secret());
            w.u64(r.last_use);
        });
    });
    w.section(TAG_MBMS, |w| encode_mbms(w, &usim.mbms, version));
}

fn encode_mbms(w: &mut Writer, m: &MbmsStore, version: u16) {
    w.count(m.capacity.muk_records);
    w.count(m.capacity.msk_records);
    w.opt(m.parental_limit, Writer::u8);
    w.opt(m.sac.as_ref(), |w, s| {
        w.bytes(s.expose_k_sac());
        w.u128(s.counter_limit);
        w.u128(s.used);
        if version < 2 {
            return;
        }
        w.opt(s.ids.as_ref(), |w, ids| {
            w.bytes(&ids.naf_id);
            w.bytes(&ids.terminal_id);
            w.bytes(&ids.terminal_appli_id);
            w.bytes(&ids.uicc_appli_id);
        });
    });
    let muk = |w: &mut Writer, k: &MukKey| {
        w.str(&k.idr);
        w.bytes(k.key.expose_secret());
        w.opt(k.ts, Writer::u32);
    };
    w.list(&m.muks, |w, r| {
        w.str(&r.idi);
        muk(w, &r.current);
        w.opt(r.last_used.as_ref(), muk);
    });
    w.list(&m.msks, |w, r| {
        w.bytes(&r.key_domain_id.0);
        w.u16(r.key_group);
        w.list(&r.keys, encode_msk_entry);
    });
}

fn encode_msk_entry(w: &mut Writer, e: &MskEntry) {
    w.bytes(&e.id.to_bytes());
    w.bytes(e.key.expose_secret());
    w.bytes(&e.rand);
    match e.validity {
        KeyValidity::TekIdWindow { seq_l, seq_u } => {
            w.u8(VALIDITY_TEK_ID);
            w.u16(seq_l);
            w.u16(seq_u);
        }
        KeyValidity::TsWindow { ts_low, ts_high } => {
            w.u8(VALIDITY_TS);
            w.u32(ts_low);
            w.u32(ts_high);
        }
    }
    w.opt(e.ext.as_ref(), |w, ext| {
        let mut wire = Vec::new();
        ext.encode(&mut wire);
        w.bytes(&wire);
    });
    w.opt(e.ts, Writer::u32);
    w.opt(e.last_tek_id, Writer::u16);
    let r = &e.rights;
    w.u16(r.play_backs_left);
    w.u16(r.views_left);
    let program = |w: &mut Writer, p: &Option<u32>| w.opt(*p, Writer::u32);
    match &r.ppv_program {
        None => w.u8(0),
        Some(None) => w.u8(1),
        Some(Some(id)) => {
            w.u8(2);
            w.u32(*id);
        }
    }
    w.count(r.paid_programs.len());
    for p in &r.paid_programs {
        program(w, p);
    }
    w.u8(u8::from(r.in_play_back));
    w.u32(r.live_count);
    w.u32(r.play_back_sessions);
}

// ---------------------------------------------------------------------------------------------
// Reader

/// A cursor over a bounded region of the file; offsets in errors are from the start of the file.
#[derive(Clone)]
struct Reader<'a> {
    data: &'a [u8],
    base: usize,
}

type Res<T> = Result<T, PersistError>;

impl<'a> Reader<'a> {
    fn at(data: &'a [u8], base: usize) -> Self {
        Self { data, base }
    }

    fn offset(&self) -> usize {
        self.base
    }

    fn corrupted(&self, what: &'static str) -> PersistError {
        PersistError::Corrupted { offset: self.base, what }
    }

    fn take(&mut self, n: usize, what: &'static str) -> Res<&'a [u8]> {
        if n > self.data.len() {
            return Err(self.corrupted(what));
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        self.base += n;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Res<[u8; N]> {
        let at = self.clone();
        self.take(N, what)?.try_into().map_err(|_| at.corrupted(what))
    }

    fn u8(&mut self, what: &'static str) -> Res<u8> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Res<u16> {
        self.array(what).map(u16::from_be_bytes)
    }

    fn u32(&mut self, what: &'static str) -> Res<u32> {
        self.array(what).map(u32::from_be_bytes)
    }

    fn u64(&mut self, what: &'static str) -> Res<u64> {
        self.array(what).map(u64::from_be_bytes)
    }

    fn u128(&mut self, what: &'static str) -> Res<u128> {
        self.array(what).map(u128::from_be_bytes)
    }

    fn len(&mut self, what: &'static str) -> Res<usize> {
        let at = self.clone();
        let n = self.u32(what)?;
        usize::try_from(n).map_err(|_| at.corrupted(what))
    }

    fn bytes(&mut self, what: &'static str) -> Res<&'a [u8]> {
        let at = self.clone();
        let n = self.len(what)?;
        self.take(n, what).map_err(|_| at.corrupted(what))
    }

    /// A `bytes` field that must be exactly `n` long.
    fn exact(&mut self, n: usize, what: &'static str) -> Res<&'a [u8]> {
        let at = self.clone();
        let b = self.bytes(what)?;
        if b.len() != n {
            return Err(at.corrupted(what));
        }
        Ok(b)
    }

    fn fixed<const N: usize>(&mut self, what: &'static str) -> Res<[u8; N]> {
        let at = self.clone();
        self.exact(N, what)?.try_into().map_err(|_| at.corrupted(what))
    }

    fn str(&mut self, what: &'static str) -> Res<String> {
        let at = self.clone();
        let b = self.bytes(what)?;
        String::from_utf8(b.to_vec()).map_err(|_| at.corrupted(what))
    }

    fn flag(&mut self, what: &'static str) -> Res<bool> {
        let at = self.clone();
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(at.corrupted(what)),
        }
    }

    fn opt<T>(&mut self, what: &'static str, f: impl FnOnce(&mut Self) -> Res<T>) -> Res<Option<T>> {
        if self.flag(what)? { f(self).map(Some) } else { Ok(None) }
    }

    fn nested(&mut self, what: &'static str) -> Res<Reader<'a>> {
        let at = self.clone();
        let n = self.len(what)?;
        let base = self.base;
        let data = self.take(n, what).map_err(|_| at.corrupted(what))?;
        Ok(Reader::at(data, base))
    }

    fn expect_empty(&self, what: &'static str) -> Res<()> {
        if self.data.is_empty() { Ok(()) } else { Err(self.corrupted(what)) }
    }

    fn section<T>(&mut self, tag: u8, what: &'static str, f: impl FnOnce(&mut Reader<'a>) -> Res<T>) -> Res<T> {
        let at = self.clone();
        if self.u8(what)? != tag {
            return Err(at.corrupted(what));
        }
        let mut inner = self.nested(what)?;
        let v = f(&mut inner)?;
        inner.expect_empty(what)?;
        Ok(v)
    }

    fn list<T>(&mut self, what: &'static str, mut f: impl FnMut(&mut Reader<'a>) -> Res<T>) -> Res<Vec<T>> {
        let n = self.len(what)?;
        // Every record takes at least its 4-byte length: a count larger than that is a lie, and
        // is refused before anything is allocated for it.
        if n > self.data.len() / 4 {
            return Err(self.corrupted(what));
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let mut inner = self.nested(what)?;
            out.push(f(&mut inner)?);
            inner.expect_empty(what)?;
        }
        Ok(out)
    }
}

/// Decodes a card file. Never panics; see the module docs for the order of the checks.
pub fn decode(data: &[u8]) -> Result<Usim, PersistError> {
    let (version, mut body) = unframe(&CARD_FRAME, data)?;
    decode_body(&mut body, version)
}

fn decode_body(r: &mut Reader<'_>, version: u16) -> Res<Usim> {
    let identity = r.section(TAG_IDENTITY, "identity section", |r| {
        Ok(UsimIdentity { imsi: r.str("IMSI")?, impi: r.str("IMPI")?, iccid: r.str("ICCID")? })
    })?;
    let (k, opc) = r.section(TAG_SUBSCRIBER, "subscriber key section", |r| {
        let k = key(r, "K", SubscriberKey::from_slice)?;
        let opc = key(r, "OPc", Opc::from_slice)?;
        Ok((k, opc))
    })?;
    let mut usim = Usim::new(identity, k, opc);
    (usim.sqn_ms, usim.sqn_window) =
        r.section(TAG_AKA, "AKA section", |r| Ok((r.fixed::<6>("SQN_MS")?, r.u64("SQN window")?)))?;
    usim.gba = r.section(TAG_GBA, "GBA section", |r| {
        r.opt("EF_GBABP presence", |r| {
            Ok(GbaContext {
                ks: key(r, "Ks", Ks::from_slice)?,
                rand: r.fixed("GBA RAND")?,
                b_tid: r.opt("B-TID presence", |r| r.str("B-TID"))?,
                lifetime: r.opt("key lifetime presence", |r| r.str("key lifetime"))?,
            })
        })
    })?;
    (usim.use_counter, usim.naf_keys) = r.section(TAG_NAF, "EF_GBANL section", |r| {
        let use_counter = r.u64("NAF key use counter")?;
        let records = r.list("EF_GBANL record", |r| {
            Ok(NafKeyRecord {
                naf_id: r.bytes("NAF_Id")?.to_vec(),
                b_tid: r.str("NAF key B-TID")?,
                ks_int_naf: key(r, "Ks_int_NAF", KsIntNaf::from_slice)?,
                last_use: r.u64("NAF key last use")?,
            })
        })?;
        Ok((use_counter, records))
    })?;
    usim.mbms = r.section(TAG_MBMS, "MBMS section", |r| decode_mbms(r, version))?;
    r.expect_empty("end of body")?;
    Ok(usim)
}

/// A key field: its length must be the key's.
fn key<T, E>(r: &mut Reader<'_>, what: &'static str, make: impl FnOnce(&[u8]) -> Result<T, E>) -> Res<T> {
    let at = r.clone();
    make(r.bytes(what)?).map_err(|_| at.corrupted(what))
}

fn decode_mbms(r: &mut Reader<'_>, version: u16) -> Res<MbmsStore> {
    let capacity = Capacity { muk_records: r.len("EF_MUK capacity")?, msk_records: r.len("EF_MSK capacity")? };
    let parental_limit = r.opt("parental limit presence", |r| r.u8("parental limit"))?;
    let sac = r.opt("secure channel presence", |r| {
        let k_sac = r.fixed::<16>("K_sac")?;
        let mut sac = SecureChannel::from_parts(k_sac, r.u128("counter limit")?, r.u128("secure channel use count")?);
        if version < 2 {
            return Ok(sac);
        }
        let ids = r.opt("secure channel identifiers presence", |r| {
            Ok(LocalKeyIds {
                naf_id: r.bytes("Ks_local NAF_Id")?.to_vec(),
                terminal_id: r.bytes("Terminal_ID")?.to_vec(),
                terminal_appli_id: r.bytes("Terminal_appli_ID")?.to_vec(),
                uicc_appli_id: r.bytes("UICC_appli_ID")?.to_vec(),
            })
        })?;
        sac.ids = ids;
        Ok(sac)
    })?;
    let muk = |r: &mut Reader<'_>| {
        Ok(MukKey {
            idr: r.str("MUK IDr")?,
            key: key(r, "MUK", Smk::from_slice)?,
            ts: r.opt("MUK TS presence", |r| r.u32("MUK TS"))?,
        })
    };
    let muks = r.list("EF_MUK record", |r| {
        Ok(MukRecord { idi: r.str("MUK IDi")?, current: muk(r)?, last_used: r.opt("last used MUK presence", muk)? })
    })?;
    let msks = r.list("EF_MSK record", |r| {
        Ok(MskRecord {
            key_domain_id: KeyDomainId(r.fixed("Key Domain ID")?),
            key_group: r.u16("Key Group")?,
            keys: r.list("SEK/PEK", decode_msk_entry)?,
        })
    })?;
    Ok(MbmsStore { muks, msks, parental_limit, sac, capacity })
}

fn decode_msk_entry(r: &mut Reader<'_>) -> Res<MskEntry> {
    let id = SekPekId::from_bytes(r.fixed("SEK/PEK ID")?);
    let sek = key(r, "SEK/PEK", SekPek::from_slice)?;
    let rand = r.fixed("SEK/PEK RAND")?;
    let at = r.clone();
    let validity = match r.u8("validity form")? {
        VALIDITY_TEK_ID => KeyValidity::TekIdWindow { seq_l: r.u16("SEQl")?, seq_u: r.u16("SEQu")? },
        VALIDITY_TS => KeyValidity::TsWindow { ts_low: r.u32("TS low")?, ts_high: r.u32("TS high")? },
        _ => return Err(at.corrupted("validity form")),
    };
    let ext = r.opt("LTKM extension presence", |r| {
        let at = r.clone();
        let wire = r.bytes("OMA BCAST LTKM extension")?;
        match wire.split_first() {
            Some((&1, body)) => {
                LtkmExt::read(body, at.offset() + 5).map_err(|_| at.corrupted("OMA BCAST LTKM extension"))
            }
            _ => Err(at.corrupted("OMA BCAST LTKM extension subtype")),
        }
    })?;
    let mut entry = MskEntry::new(id, sek, rand, validity, ext);
    entry.ts = r.opt("SEK/PEK TS presence", |r| r.u32("SEK/PEK TS"))?;
    entry.last_tek_id = r.opt("TEK ID presence", |r| r.u16("TEK ID"))?;
    let play_backs_left = r.u16("play-backs left")?;
    let views_left = r.u16("views left")?;
    let program = |r: &mut Reader<'_>| r.opt("program ID presence", |r| r.u32("program ID"));
    let at = r.clone();
    let ppv_program = match r.u8("pay-per-view program")? {
        0 => None,
        1 => Some(None),
        2 => Some(Some(r.u32("pay-per-view program ID")?)),
        _ => return Err(at.corrupted("pay-per-view program")),
    };
    let n = r.len("paid programs")?;
    if n > r.data.len() {
        return Err(r.corrupted("paid programs"));
    }
    let paid_programs = (0..n).map(|_| program(r)).collect::<Res<Vec<_>>>()?;
    entry.rights = Rights {
        play_backs_left,
        views_left,
        ppv_program,
        paid_programs,
        in_play_back: r.flag("in play-back")?,
        live_count: r.u32("live STKM count")?,
        play_back_sessions: r.u32("play-back sessions")?,
    };
    Ok(entry)
}

// ---------------------------------------------------------------------------------------------
// CardFile

/// Reading or writing a card file failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CardFileError {
    /// A file system call failed.
    #[error("{op} {path}: {error}", path = .path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: io::Error,
    },
    /// `create` refuses to overwrite an existing file.
    #[error("{path} already exists; create never overwrites a key file", path = .path.display())]
    AlreadyExists {
        /// The file.
        path: PathBuf,
    },
    /// The file is not a card file this Keycast can read.
    #[error("{path}: {error}", path = .path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// Why.
        error: PersistError,
    },
    /// The path names no file (it ends in `..` or `/`).
    #[error("{path}: not a file name", path = .path.display())]
    BadPath {
        /// The path.
        path: PathBuf,
    },
    /// The file is larger than any card file ([`MAX_FILE_LEN`]).
    #[error("{path}: {len} bytes, too large for a Keycast key file", path = .path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
}

/// A card file on disk. Files are created with mode 0600 and replaced atomically on save.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardFile {
    path: PathBuf,
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CardFileError {
    let path = path.to_path_buf();
    move |error| CardFileError::Io { op, path, error }
}

impl CardFile {
    /// A card file at `path` (no IO).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Writes a new card file; refuses when `path` exists. The file appears complete or not at all.
    pub fn create(path: impl Into<PathBuf>, usim: &Usim) -> Result<Self, CardFileError> {
        Self::create_bytes(path, &encode(usim))
    }

    /// [`Self::create`] for encoded bytes (any key file of this module).
    fn create_bytes(path: impl Into<PathBuf>, bytes: &[u8]) -> Result<Self, CardFileError> {
        let file = Self::new(path);
        let tmp = file.write_temp(bytes)?;
        // A hard link claims the name atomically and fails if it is taken.
        match fs::hard_link(&tmp, &file.path) {
            Ok(()) => {
                fs::remove_file(&tmp).map_err(io_err("removing", &tmp))?;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let _ = fs::remove_file(&tmp);
                return Err(CardFileError::AlreadyExists { path: file.path });
            }
            Err(_) => {
                // A file system without hard links: claim the name with create_new, then replace
                // the empty file atomically.
                let _ = fs::remove_file(&tmp);
                match OpenOptions::new().write(true).create_new(true).mode(0o600).open(&file.path) {
                    Ok(_) => file.save_bytes(bytes)?,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        return Err(CardFileError::AlreadyExists { path: file.path });
                    }
                    Err(e) => return Err(io_err("creating", &file.path)(e)),
                }
            }
        }
        file.sync_dir()?;
        Ok(file)
    }

    /// The card file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The temporary file a save writes before renaming it over the card file.
    pub fn temp_path(&self) -> Result<PathBuf, CardFileError> {
        let name = self.path.file_name().ok_or_else(|| CardFileError::BadPath { path: self.path.clone() })?;
        let mut tmp = std::ffi::OsString::from(".");
        tmp.push(name);
        tmp.push(".tmp");
        Ok(self.path.with_file_name(tmp))
    }

    fn dir(&self) -> &Path {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        }
    }

    /// Reads and decodes the card file.
    pub fn load(&self) -> Result<Usim, CardFileError> {
        let data = self.load_bytes()?;
        decode(&data).map_err(|error| CardFileError::Format { path: self.path.clone(), error })
    }

    /// The file's bytes (at most [`MAX_FILE_LEN`]), wiped on drop.
    fn load_bytes(&self) -> Result<Zeroizing<Vec<u8>>, CardFileError> {
        let mut f = File::open(&self.path).map_err(io_err("opening", &self.path))?;
        let len = f.metadata().map_err(io_err("reading", &self.path))?.len();
        if len > MAX_FILE_LEN {
            return Err(CardFileError::TooLarge { path: self.path.clone(), len });
        }
        // Sized up front (bounded above), so the buffer holding keys is never reallocated.
        let mut data = Zeroizing::new(Vec::with_capacity(usize::try_from(len).unwrap_or(0) + 1));
        f.read_to_end(&mut data).map_err(io_err("reading", &self.path))?;
        Ok(data)
    }

    /// Replaces the card file with `usim`'s state, atomically: temporary file, `fsync`, rename,
    /// `fsync` of the directory.
    pub fn save(&self, usim: &Usim) -> Result<(), CardFileError> {
        self.save_bytes(&encode(usim))
    }

    /// [`Self::save`] for encoded bytes.
    fn save_bytes(&self, bytes: &[u8]) -> Result<(), CardFileError> {
        let tmp = self.write_temp(bytes)?;
        fs::rename(&tmp, &self.path).map_err(io_err("renaming over", &self.path))?;
        self.sync_dir()
    }

    fn write_temp(&self, bytes: &[u8]) -> Result<PathBuf, CardFileError> {
        let tmp = self.temp_path()?;
        // A temporary file left by a crash is replaced; created anew so its mode is ours.
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err("removing", &tmp)(e)),
            _ => {}
        }
        let mut f =
            OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io_err("creating", &tmp))?;
        // The umask can only take bits away; set exactly 0600 whatever it is.
        f.set_permissions(fs::Permissions::from_mode(0o600)).map_err(io_err("setting the mode of", &tmp))?;
        f.write_all(bytes).map_err(io_err("writing", &tmp))?;
        f.sync_all().map_err(io_err("syncing", &tmp))?;
        Ok(tmp)
    }

    fn sync_dir(&self) -> Result<(), CardFileError> {
        let dir = self.dir();
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("syncing directory", dir))
    }
}

// ---------------------------------------------------------------------------------------------
// PersistentCard

/// An operation on a [`PersistentCard`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PersistentCardError {
    /// The card refused (nothing changed, nothing written).
    #[error(transparent)]
    Card(#[from] CardError),
    /// The card accepted, but its new state could not be written: the answer is withheld.
    #[error("card state not saved: {0}")]
    Save(#[from] CardFileError),
}

/// A [`Usim`] and its [`CardFile`], written according to the durability policy of the module
/// docs: rights and keys before every answer, live TS/TEK ID advances in batches.
#[derive(Debug)]
pub struct PersistentCard {
    usim: Usim,
    file: CardFile,
    saves: SavePolicy,
}

/// What of a key's rights an STKM may change without the change needing a save of its own:
/// everything but the audit count of live STKMs.
fn rights_view(r: &Rights) -> Rights {
    Rights { live_count: 0, ..r.clone() }
}

/// The key an STKM addresses, when it decodes.
fn stkm_slot(stkm: &[u8]) -> Option<(KeyDomainId, SekPekId)> {
    Stkm::decode(stkm).ok().map(|s| (s.key_domain_id(), s.sek_pek_id()))
}

/// What an STKM may change that must be saved before the TEK leaves: the addressed key's rights
/// (but the live count) and the secure channel's use count.
type StkmView = (Option<Rights>, Option<u128>);

fn stkm_view(m: &MbmsStore, slot: Option<(KeyDomainId, SekPekId)>) -> StkmView {
    (slot.and_then(|(kd, id)| m.msk(kd, id)).map(|e| rights_view(&e.rights)), m.sac.as_ref().map(|s| s.used))
}

/// The save counters of the durability policy (module docs), shared by every persistent key
/// holder of this module.
#[derive(Debug, Clone, Copy)]
struct SavePolicy {
    live_batch: u32,
    pending_live: u32,
    writes: u64,
}

impl SavePolicy {
    const fn new() -> Self {
        Self { live_batch: PersistentCard::DEFAULT_LIVE_BATCH, pending_live: 0, writes: 0 }
    }

    fn set_live_batch(&mut self, n: u32) {
        self.live_batch = n.max(1);
    }

    fn saved(&mut self) {
        self.writes += 1;
        self.pending_live = 0;
    }

    fn writes(&self) -> u64 {
        self.writes
    }

    fn pending_live(&self) -> u32 {
        self.pending_live
    }

    /// After an accepted STKM: whether the state must be written before the TEK leaves (rights
    /// or counters changed, or the key was not found before), or a live advance was counted and
    /// the batch is full. A play-back STKM inside a running session changes nothing.
    fn after_stkm(&mut self, before: &StkmView, after: &StkmView, play_back: bool) -> bool {
        if before != after || before.0.is_none() {
            return true;
        }
        if play_back {
            return false;
        }
        self.pending_live += 1;
        self.pending_live >= self.live_batch
    }
}

impl PersistentCard {
    /// Live STKMs accepted between two saves at most.
    pub const DEFAULT_LIVE_BATCH: u32 = 64;

    /// Creates a new card file for `usim` (refusing to overwrite) and wraps it.
    pub fn create(path: impl Into<PathBuf>, usim: Usim) -> Result<Self, CardFileError> {
        let file = CardFile::create(path, &usim)?;
        Ok(Self::with_state(file, usim))
    }

    /// Loads a card from its file.
    pub fn open(file: CardFile) -> Result<Self, CardFileError> {
        let usim = file.load()?;
        Ok(Self::with_state(file, usim))
    }

    fn with_state(file: CardFile, usim: Usim) -> Self {
        Self { usim, file, saves: SavePolicy::new() }
    }

    /// Sets how many live STKMs may be accepted between two saves (at least 1: 1 saves after
    /// every STKM).
    #[must_use]
    pub fn with_live_batch(mut self, n: u32) -> Self {
        self.saves.set_live_batch(n);
        self
    }

    /// The card state.
    pub fn usim(&self) -> &Usim {
        &self.usim
    }

    /// The card file.
    pub fn file(&self) -> &CardFile {
        &self.file
    }

    /// Saves written by this handle so far (the creating write of [`Self::create`] not counted).
    pub fn writes(&self) -> u64 {
        self.saves.writes()
    }

    /// Live STKMs accepted since the last save.
    pub fn pending_live(&self) -> u32 {
        self.saves.pending_live()
    }

    /// Writes the state now.
    pub fn save(&mut self) -> Result<(), CardFileError> {
        self.file.save(&self.usim)?;
        self.saves.saved();
        Ok(())
    }

    /// Writes batched live STKM advances, if any.
    pub fn flush(&mut self) -> Result<(), CardFileError> {
        if self.saves.pending_live() > 0 { self.save() } else { Ok(()) }
    }

    /// Changes the state by hand (test labs, provisioning) and saves it.
    pub fn update<T>(&mut self, f: impl FnOnce(&mut Usim) -> T) -> Result<T, CardFileError> {
        let out = f(&mut self.usim);
        self.save()?;
        Ok(out)
    }

    fn saved<T>(&mut self, r: Result<T, CardError>) -> Result<T, PersistentCardError> {
        let v = r?;
        self.save()?;
        Ok(v)
    }

    /// Provisions the card's parental setting (saved). This is the card issuer's path: it does
    /// not need the secure channel, unlike the terminal's command ([`Usim::set_parental_limit`],
    /// `<PersistentCard as Card>::set_parental_limit`), which an inherent call of this name
    /// does not reach.
    pub fn set_parental_limit(&mut self, limit: Option<u8>) -> Result<(), CardFileError> {
        self.update(|u| u.mbms.parental_limit = limit)
    }

    /// [`Usim::authenticate_3g`]; saved when SQN_MS moved.
    pub fn authenticate_3g(&mut self, rand: &[u8; 16], autn: &[u8; 16]) -> Result<AkaAnswer, PersistentCardError> {
        let a = self.usim.authenticate_3g(rand, autn)?;
        if !matches!(a, AkaAnswer::SyncFailure { .. }) {
            self.save()?;
        }
        Ok(a)
    }

    /// [`Usim::gba_bootstrap`]; saved when Ks changed.
    pub fn gba_bootstrap(&mut self, rand: &[u8; 16], autn_star: &[u8; 16]) -> Result<AkaAnswer, PersistentCardError> {
        let a = self.usim.gba_bootstrap(rand, autn_star)?;
        if !matches!(a, AkaAnswer::SyncFailure { .. }) {
            self.save()?;
        }
        Ok(a)
    }

    /// [`Usim::write_gba_bp`]; saved.
    pub fn write_gba_bp(&mut self, b_tid: &str, lifetime: &str) -> Result<(), PersistentCardError> {
        let r = self.usim.write_gba_bp(b_tid, lifetime);
        self.saved(r)
    }

    /// [`Usim::gba_naf_derivation`]; saved.
    pub fn gba_naf_derivation(&mut self, naf_id: &[u8], impi: &str) -> Result<KsExtNaf, PersistentCardError> {
        let r = self.usim.gba_naf_derivation(naf_id, impi);
        self.saved(r)
    }

    /// [`Usim::msk_update`]; saved before the verification message is returned.
    pub fn msk_update(&mut self, ltkm: &[u8]) -> Result<MskUpdate, PersistentCardError> {
        let r = self.usim.msk_update(ltkm);
        self.saved(r)
    }

    /// [`Usim::msk_deletion`]; saved.
    pub fn msk_deletion(&mut self, key_domain_id: KeyDomainId, key_group: u16) -> Result<(), PersistentCardError> {
        let r = self.usim.msk_deletion(key_domain_id, key_group);
        self.saved(r)
    }

    /// [`Usim::muk_deletion`]; saved.
    pub fn muk_deletion(&mut self, idi: &str, idr: &str) -> Result<(), PersistentCardError> {
        let r = self.usim.muk_deletion(idi, idr);
        self.saved(r)
    }

    /// [`Usim::local_key_establishment`]; saved.
    pub fn local_key_establishment(&mut self, req: &LocalKeyRequest) -> Result<[u8; 16], PersistentCardError> {
        let r = self.usim.local_key_establishment(req);
        self.saved(r)
    }

    /// [`Usim::mtk_generation`]: saved before the TEK is returned when the STKM changed rights or
    /// counters; a live STKM that only advanced TS and TEK ID is batched.
    pub fn mtk_generation(&mut self, stkm: &[u8]) -> Result<MtkAnswer, PersistentCardError> {
        let slot = stkm_slot(stkm);
        let before = stkm_view(&self.usim.mbms, slot);
        let answer = self.usim.mtk_generation(stkm)?;
        let after = stkm_view(&self.usim.mbms, slot);
        if self.saves.after_stkm(&before, &after, answer.play_back) {
            self.save()?;
        }
        Ok(answer)
    }
}

impl Drop for PersistentCard {
    fn drop(&mut self) {
        // Best effort: a failure here cannot be reported, and loses only batched live advances.
        let _ = self.flush();
    }
}

/// A failed save is reported as a reader failure: the card's answer was withheld.
impl From<PersistentCardError> for CardOpError {
    fn from(e: PersistentCardError) -> Self {
        match e {
            PersistentCardError::Card(c) => CardOpError::Card(c),
            PersistentCardError::Save(s) => CardOpError::Transport(TransportError::Reader(s.to_string())),
        }
    }
}

fn card_op(e: PersistentCardError) -> CardOpError {
    e.into()
}

/// A persistent card is driven like any other; a failed save is reported as a reader failure.
impl Card for PersistentCard {
    fn authenticate_3g(&mut self, rand: &[u8; 16], autn: &[u8; 16]) -> Result<AkaAnswer, CardOpError> {
        PersistentCard::authenticate_3g(self, rand, autn).map_err(card_op)
    }

    fn gba_bootstrap(&mut self, rand: &[u8; 16], autn: &[u8; 16]) -> Result<AkaAnswer, CardOpError> {
        PersistentCard::gba_bootstrap(self, rand, autn).map_err(card_op)
    }

    fn write_gba_bp(&mut self, b_tid: &str, lifetime: &str) -> Result<(), CardOpError> {
        PersistentCard::write_gba_bp(self, b_tid, lifetime).map_err(card_op)
    }

    fn gba_naf_derivation(&mut self, naf_id: &[u8], impi: &str) -> Result<KsExtNaf, CardOpError> {
        PersistentCard::gba_naf_derivation(self, naf_id, impi).map_err(card_op)
    }

    fn msk_update(&mut self, ltkm: &[u8]) -> Result<Option<Vec<u8>>, CardOpError> {
        PersistentCard::msk_update(self, ltkm).map(|u| u.verification).map_err(card_op)
    }

    fn mtk_generation(&mut self, stkm: &[u8]) -> Result<TekOut, CardOpError> {
        PersistentCard::mtk_generation(self, stkm).map(|a| a.tek).map_err(card_op)
    }

    fn msk_deletion(&mut self, key_domain_id: KeyDomainId, key_group: u16) -> Result<(), CardOpError> {
        PersistentCard::msk_deletion(self, key_domain_id, key_group).map_err(card_op)
    }

    fn muk_deletion(&mut self, idi: &str, idr: &str) -> Result<(), CardOpError> {
        PersistentCard::muk_deletion(self, idi, idr).map_err(card_op)
    }

    fn local_key_establishment(&mut self, req: &LocalKeyRequest) -> Result<[u8; 16], CardOpError> {
        PersistentCard::local_key_establishment(self, req).map_err(card_op)
    }

    /// Reads only: nothing to save.
    fn local_key_available(
        &mut self,
        naf_id: &[u8],
        terminal_id: &[u8],
        terminal_appli_id: &[u8],
        uicc_appli_id: &[u8],
    ) -> Result<LocalKeyStatus, CardOpError> {
        Ok(self.usim.local_key_available(naf_id, terminal_id, terminal_appli_id, uicc_appli_id)?)
    }

    /// Reads only: nothing to save.
    fn audit(&mut self, key_domain_id: KeyDomainId, sek_pek_id: SekPekId) -> Result<AuditCounters, CardOpError> {
        Ok(self.usim.audit(key_domain_id, sek_pek_id)?)
    }

    fn parental_limit(&mut self) -> Result<Option<u8>, CardOpError> {
        Ok(self.usim.parental_limit())
    }

    /// The terminal's command (secure channel required, [`Usim::set_parental_limit`]); saved
    /// before the answer.
    fn set_parental_limit(&mut self, limit: Option<u8>) -> Result<(), CardOpError> {
        let r = self.usim.set_parental_limit(limit);
        self.saved(r).map_err(card_op)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usim() -> Usim {
        Usim::new(
            UsimIdentity { imsi: "001010123456789".into(), impi: "i@ims".into(), iccid: "8901".into() },
            SubscriberKey::from_bytes([1; 16]),
            Opc::from_bytes([2; 16]),
        )
    }

    #[test]
    fn half_written_length_reads_as_too_long() {
        let mut w = Writer::new();
        w.u32(u32::MAX);
        let mut r = Reader::at(&w.buf, 0);
        assert!(matches!(r.nested("x"), Err(PersistError::Corrupted { offset: 0, .. })));
    }

    #[test]
    fn empty_card_round_trips() {
        let u = usim();
        assert_eq!(decode(&encode(&u)).unwrap(), u);
    }

    fn with_identified_channel() -> Usim {
        let mut u = usim();
        let ids = LocalKeyIds {
            naf_id: b"bmsc.example.org\x01\0\0\0\x01".to_vec(),
            terminal_id: b"IMEI3548".to_vec(),
            terminal_appli_id: b"platform".to_vec(),
            uicc_appli_id: b"platform".to_vec(),
        };
        u.mbms.sac = Some(SecureChannel::from_parts([0x88; 16], 1000, 17).with_ids(ids));
        u
    }

    #[test]
    fn secure_channel_identifiers_round_trip_in_version_2() {
        let u = with_identified_channel();
        let bytes = encode(&u);
        assert_eq!(u16::from_be_bytes([bytes[13], bytes[14]]), 2);
        assert_eq!(decode(&bytes).unwrap(), u);
    }

    #[test]
    fn version_1_file_decodes_with_the_channel_identifiers_absent() {
        let u = with_identified_channel();
        let v1 = encode_as(&u, 1);
        assert_eq!(u16::from_be_bytes([v1[13], v1[14]]), 1);
        let back = decode(&v1).unwrap();
        let sac = back.mbms.sac.as_ref().unwrap();
        assert_eq!((sac.counter_limit, sac.used, sac.ids.as_ref()), (1000, 17, None));
        assert_eq!(sac.expose_k_sac(), &[0x88; 16]);
        let mut expected = u.clone();
        expected.mbms.sac.as_mut().unwrap().ids = None;
        assert_eq!(back, expected);
        // Re-encoding writes version 2, which reads back the same.
        assert_eq!(decode(&encode(&back)).unwrap(), expected);
        // A card without a channel has the same body in both versions.
        let plain = usim();
        assert_eq!(
            encode_as(&plain, 1)[15..encode_as(&plain, 1).len() - 32],
            encode(&plain)[15..encode(&plain).len() - 32]
        );
    }

    #[test]
    fn rejects_versions_outside_1_to_2() {
        for version in [0u16, 3] {
            let mut f = encode(&usim()).to_vec();
            f[13..15].copy_from_slice(&version.to_be_bytes());
            assert_eq!(decode(&f), Err(PersistError::UnsupportedVersion { found: version, supported: 2 }));
        }
    }

    #[test]
    fn persistent_card_saves_the_terminals_parental_setting_and_refuses_it_without_channel() {
        let dir = tempfile::tempdir().unwrap();
        let mut card = PersistentCard::create(dir.path().join("card.kc"), usim()).unwrap();
        let refused = <PersistentCard as Card>::set_parental_limit(&mut card, Some(12)).unwrap_err();
        assert_eq!(
            refused,
            CardOpError::Card(CardError::SecurityStatus("secure channel required to set the parental limit"))
        );
        assert_eq!(card.writes(), 0, "a refusal writes nothing");
        card.update(|u| u.mbms.sac = Some(SecureChannel::from_parts([7; 16], 10, 0))).unwrap();
        <PersistentCard as Card>::set_parental_limit(&mut card, Some(12)).unwrap();
        assert_eq!(card.writes(), 2);
        assert_eq!(card.file().load().unwrap().mbms.parental_limit, Some(12));
        assert_eq!(Card::parental_limit(&mut card).unwrap(), Some(12));
        assert_eq!(
            Card::audit(&mut card, KeyDomainId([0, 0xf1, 0x10]), SekPekId::from_bytes([0, 1, 0, 1])).unwrap_err(),
            CardOpError::Card(CardError::KeyNotFound)
        );
        assert_eq!(card.writes(), 2, "reads write nothing");
    }

    #[test]
    fn writer_grows_without_losing_bytes() {
        let mut w = Writer::new();
        for i in 0..10_000u32 {
            w.u32(i);
        }
        assert_eq!(w.buf.len(), 40_000);
        assert_eq!(&w.buf[39_996..], &9_999u32.to_be_bytes());
    }
}
