//! The terminal state file: what a terminal must remember across restarts besides its card —
//! the last bootstrap (so that a restart does not bootstrap again while the B-TID is valid), the
//! purchase list of its [`ProvisioningClient`](crate::provisioning::ProvisioningClient), its next
//! request ID, and its registration.
//!
//! [`encode`] and [`decode`] do no IO; [`StateFile`] reads and writes atomically in the manner
//! of the card file (`keycast_card::persist`): a temporary file next to the state file
//! (`.NAME.tmp`, mode 0600), `fsync`, rename, `fsync` of the directory.
//!
//! # Format (versions 1 and 2)
//!
//! Big-endian, every variable-length field length-prefixed:
//!
//! ```text
//! offset 0   magic            "KEYCAST-TERM\0" (13 bytes)
//!        13  format version   u16 (1 or 2)
//!        15  body length      u32
//!        19  body             opt bootstrap { str B-TID ‖ u64 lifetime (Unix seconds) ‖ u8 mode }
//!                             ‖ u32 next request ID
//!                             ‖ list of purchase { str globalIDRef ‖ opt str purchaseDataIDRef ‖
//!                                                  opt u64 valid until (Unix seconds) }
//!                             ‖ opt registration { u8 interface ‖ str BSM address ‖ u64 when }
//!                             ‖ version 2 only: list of TBK { u32 terminal_binding_key_id ‖
//!                                                             key (16) }
//!                             ‖ version 2 only: opt channel { K_sac (16) ‖ u64 expires (Unix
//!                                                             seconds) ‖ u128 Counter Limit }
//! end-32     checksum         HMAC-SHA-256(key = CHECKSUM_KEY, every byte before it)
//! ```
//!
//! `str`: `u32 length ‖ UTF-8`; `opt`: `u8 0` or `u8 1 ‖ value`; `list`: `u32 count ‖ items`;
//! mode: 1 GBA_U, 2 GBA_U with a non-MBMS card, 3 GBA_ME; interface: 1 OMA BCAST, 2 MBMS.
//!
//! Version 2 adds what content protection needs in later processes (`keycast terminal
//! protect`): the terminal binding keys (TBKs, `profile: P-11.5`) fetched from the BSM's key
//! center, and the terminal's half of the secure channel with the card (K_sac, `profile: P-10`),
//! so that watching and play-back unwrap terminal-bound and channel-wrapped TEKs without the
//! network. [`encode`] writes version 1 when neither is held (a file older builds still read)
//! and version 2 otherwise; [`decode`] reads both \[chosen\]. These are the only keys in the
//! file: they are worth protecting like the card file (mode 0600, written atomically), they
//! zeroize in memory, and the debug form never shows them. Ks, the SMK and the SEK/PEKs stay in
//! the card (file) or the GBA_ME store file; the card keeps its own K_sac, which never leaves it.
//! At most [`MAX_TBKS`] TBKs are kept. The checksum detects corruption only (its key is
//! public).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use keycast_crypto::hmac::{ct_eq, hmac_sha256};
use keycast_crypto::keys::Tbk;
use keycast_gba::client::{Bootstrapped, GbaMode};
use keycast_provisioning::sprov::PurchaseItemRef;
use keycast_provisioning::time::UtcTime;

use crate::ltkm_intake::Interface;
use crate::protection::SacKey;
use crate::provisioning::{Purchase, PurchaseList};

/// The file's magic.
pub const MAGIC: &[u8; 13] = b"KEYCAST-TERM\0";
/// The newest version: [`encode`] writes it when TBKs are held, [`decode`] reads it and
/// [`FORMAT_VERSION_1`].
pub const FORMAT_VERSION: u16 = 2;
/// The version without TBKs, still written when none is held.
pub const FORMAT_VERSION_1: u16 = 1;
/// Most TBKs a state file holds (as [`crate::protection::MAX_TBKS`]).
pub const MAX_TBKS: usize = crate::protection::MAX_TBKS;
/// The public key of the checksum (corruption detection, not authentication).
pub const CHECKSUM_KEY: &[u8] = b"keycast terminal state checksum v1";
const CHECKSUM_LEN: usize = 32;
const HEADER_LEN: usize = MAGIC.len() + 2 + 4;
/// Largest state file read \[chosen\].
pub const MAX_FILE_LEN: u64 = 1 << 20;

/// The registration the terminal last made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The interface it registered on.
    pub interface: Interface,
    /// The BSM it registered with (`host:port`).
    pub bsm_address: String,
    /// When.
    pub at: UtcTime,
}

/// What the terminal remembers across restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerminalState {
    /// The last bootstrap (B-TID, lifetime, mode).
    pub bootstrap: Option<Bootstrapped>,
    /// The provisioning client's next request ID.
    pub next_request_id: u32,
    /// The purchase list.
    pub purchases: PurchaseList,
    /// The last registration (`None` after a deregistration).
    pub registration: Option<Registration>,
    /// Terminal binding keys by terminal_binding_key_id (version 2; zeroized when dropped).
    pub tbks: std::collections::BTreeMap<u32, Tbk>,
    /// The terminal's half of the secure channel with the card (version 2; zeroized when dropped).
    pub sac: Option<SacKey>,
}

impl Default for TerminalState {
    fn default() -> Self {
        TerminalState {
            bootstrap: None,
            next_request_id: 1,
            purchases: PurchaseList::default(),
            registration: None,
            tbks: std::collections::BTreeMap::new(),
            sac: None,
        }
    }
}

/// Why a state file could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// Not a terminal state file.
    #[error("not a Keycast terminal state file (wrong magic)")]
    WrongMagic,
    /// A version this build does not read.
    #[error("unsupported terminal state format version {0}")]
    UnsupportedVersion(u16),
    /// Shorter than its header says.
    #[error("the terminal state file is truncated")]
    Truncated,
    /// The checksum does not match.
    #[error("the terminal state file's checksum does not match (corrupted)")]
    ChecksumMismatch,
    /// The body is malformed.
    #[error("the terminal state file is corrupted at byte {offset}: {what}")]
    Corrupted {
        /// Offset in the file.
        offset: usize,
        /// What was being read.
        what: &'static str,
    },
}

/// Why a state file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateFileError {
    /// An IO operation failed.
    #[error("{op} {}: {error}", path.display())]
    Io {
        /// The operation.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        error: io::Error,
    },
    /// The file is larger than [`MAX_FILE_LEN`].
    #[error("{} is too large ({len} bytes)", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
    /// The path has no file name.
    #[error("{} is no file path", path.display())]
    BadPath {
        /// The path.
        path: PathBuf,
    },
    /// The content is not a valid state file.
    #[error("{}: {error}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// Why.
        error: StateError,
    },
}

fn mode_code(m: GbaMode) -> u8 {
    match m {
        GbaMode::GbaU => 1,
        GbaMode::GbaUNonMbmsCard => 2,
        GbaMode::GbaMe => 3,
    }
}

fn interface_code(i: Interface) -> u8 {
    match i {
        Interface::OmaBcast => 1,
        Interface::Mbms => 2,
    }
}

/// Appends the wire form of each field kind to a buffer.
struct Out(Vec<u8>);

impl Out {
    fn str(&mut self, s: &str) {
        // Strings here (B-TIDs, item IDs, addresses) are far below 4 GiB; saturate rather than wrap.
        self.0.extend_from_slice(&u32::try_from(s.len()).unwrap_or(u32::MAX).to_be_bytes());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn flag(&mut self, present: bool) {
        self.0.push(u8::from(present));
    }
}

/// The file bytes of `state`.
#[must_use]
pub fn encode(state: &TerminalState) -> Vec<u8> {
    let mut b = Out(Vec::new());
    b.flag(state.bootstrap.is_some());
    if let Some(bs) = &state.bootstrap {
        b.str(&bs.b_tid);
        b.0.extend_from_slice(&bs.lifetime.unix_seconds().to_be_bytes());
        b.0.push(mode_code(bs.mode));
    }
    b.0.extend_from_slice(&state.next_request_id.to_be_bytes());
    let purchases: Vec<&Purchase> = state.purchases.iter().collect();
    b.0.extend_from_slice(&u32::try_from(purchases.len()).unwrap_or(u32::MAX).to_be_bytes());
    for p in purchases {
        b.str(&p.item.global_id_ref);
        b.flag(p.item.purchase_data_id_ref.is_some());
        if let Some(d) = &p.item.purchase_data_id_ref {
            b.str(d);
        }
        b.flag(p.valid_until.is_some());
        if let Some(u) = p.valid_until {
            b.0.extend_from_slice(&u.unix_seconds().to_be_bytes());
        }
    }
    b.flag(state.registration.is_some());
    if let Some(r) = &state.registration {
        b.0.push(interface_code(r.interface));
        b.str(&r.bsm_address);
        b.0.extend_from_slice(&r.at.unix_seconds().to_be_bytes());
    }
    let version = if state.tbks.is_empty() && state.sac.is_none() { FORMAT_VERSION_1 } else { FORMAT_VERSION };
    if version == FORMAT_VERSION {
        let tbks: Vec<(&u32, &Tbk)> = state.tbks.iter().rev().take(MAX_TBKS).collect();
        b.0.extend_from_slice(&u32::try_from(tbks.len()).unwrap_or(u32::MAX).to_be_bytes());
        for (id, tbk) in tbks.into_iter().rev() {
            b.0.extend_from_slice(&id.to_be_bytes());
            b.0.extend_from_slice(tbk.expose_secret());
        }
        b.flag(state.sac.is_some());
        if let Some(sac) = &state.sac {
            b.0.extend_from_slice(sac.expose_k_sac());
            b.0.extend_from_slice(&sac.expires.to_be_bytes());
            b.0.extend_from_slice(&sac.counter_limit.to_be_bytes());
        }
    }
    // The body holds TBKs from version 2 on: zeroized once copied out.
    let body = zeroize::Zeroizing::new(b.0);
    let mut out = Vec::with_capacity(HEADER_LEN + body.len() + CHECKSUM_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(&body);
    let sum = hmac_sha256(CHECKSUM_KEY, &[&out]);
    out.extend_from_slice(&sum);
    out
}

/// Reads fields from a body, with the file offset for errors.
struct In<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> In<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], StateError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.data.len());
        let Some(end) = end else {
            return Err(StateError::Corrupted { offset: HEADER_LEN + self.at, what });
        };
        let s = &self.data[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, StateError> {
        Ok(self.take(1, what)?[0])
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, StateError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, StateError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_be_bytes(a))
    }
    fn time(&mut self, what: &'static str) -> Result<UtcTime, StateError> {
        let at = self.at;
        UtcTime::from_unix_seconds(self.u64(what)?).map_err(|_| StateError::Corrupted { offset: HEADER_LEN + at, what })
    }
    fn str(&mut self, what: &'static str) -> Result<String, StateError> {
        let n = self.u32(what)? as usize;
        let at = self.at;
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| StateError::Corrupted { offset: HEADER_LEN + at, what })
    }
    fn flag(&mut self, what: &'static str) -> Result<bool, StateError> {
        let at = self.at;
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(StateError::Corrupted { offset: HEADER_LEN + at, what }),
        }
    }
}

/// Decodes a state file's bytes; never panics.
///
/// # Errors
/// [`StateError`], checked in the order magic, version, length, checksum, structure.
pub fn decode(data: &[u8]) -> Result<TerminalState, StateError> {
    if data.len() < MAGIC.len() || &data[..MAGIC.len()] != MAGIC {
        return Err(StateError::WrongMagic);
    }
    if data.len() < HEADER_LEN {
        return Err(StateError::Truncated);
    }
    let version = u16::from_be_bytes([data[13], data[14]]);
    if version != FORMAT_VERSION && version != FORMAT_VERSION_1 {
        return Err(StateError::UnsupportedVersion(version));
    }
    let body_len = u32::from_be_bytes([data[15], data[16], data[17], data[18]]) as usize;
    let total = HEADER_LEN.checked_add(body_len).and_then(|n| n.checked_add(CHECKSUM_LEN));
    if total != Some(data.len()) {
        return Err(StateError::Truncated);
    }
    let (signed, sum) = data.split_at(data.len() - CHECKSUM_LEN);
    if !ct_eq(&hmac_sha256(CHECKSUM_KEY, &[signed]), sum) {
        return Err(StateError::ChecksumMismatch);
    }
    let mut r = In { data: &signed[HEADER_LEN..], at: 0 };
    let bootstrap = if r.flag("bootstrap")? {
        let b_tid = r.str("B-TID")?;
        let lifetime = r.time("lifetime")?;
        let at = r.at;
        let mode = match r.u8("mode")? {
            1 => GbaMode::GbaU,
            2 => GbaMode::GbaUNonMbmsCard,
            3 => GbaMode::GbaMe,
            _ => return Err(StateError::Corrupted { offset: HEADER_LEN + at, what: "mode" }),
        };
        Some(Bootstrapped { b_tid, lifetime, mode })
    } else {
        None
    };
    let next_request_id = r.u32("next request ID")?;
    let count = r.u32("purchase count")?;
    let mut purchases = PurchaseList::default();
    for _ in 0..count {
        let global = r.str("globalIDRef")?;
        let data_ref = if r.flag("purchaseDataIDRef")? { Some(r.str("purchaseDataIDRef")?) } else { None };
        let valid_until = if r.flag("validity")? { Some(r.time("validity")?) } else { None };
        purchases.insert(Purchase {
            item: PurchaseItemRef { global_id_ref: global, purchase_data_id_ref: data_ref },
            valid_until,
        });
    }
    let registration = if r.flag("registration")? {
        let at = r.at;
        let interface = match r.u8("interface")? {
            1 => Interface::OmaBcast,
            2 => Interface::Mbms,
            _ => return Err(StateError::Corrupted { offset: HEADER_LEN + at, what: "interface" }),
        };
        let bsm_address = r.str("BSM address")?;
        let at = r.time("registration time")?;
        Some(Registration { interface, bsm_address, at })
    } else {
        None
    };
    let mut tbks = std::collections::BTreeMap::new();
    if version == FORMAT_VERSION {
        let at = r.at;
        let count = r.u32("TBK count")? as usize;
        if count > MAX_TBKS {
            return Err(StateError::Corrupted { offset: HEADER_LEN + at, what: "TBK count" });
        }
        for _ in 0..count {
            let id = r.u32("terminal_binding_key_id")?;
            let tbk = Tbk::from_slice(r.take(16, "TBK")?)
                .map_err(|_| StateError::Corrupted { offset: HEADER_LEN + r.at, what: "TBK" })?;
            tbks.insert(id, tbk);
        }
    }
    let sac = if version == FORMAT_VERSION && r.flag("channel")? {
        let mut k_sac = zeroize::Zeroizing::new([0u8; 16]);
        k_sac.copy_from_slice(r.take(16, "K_sac")?);
        let expires = u64::from_be_bytes(r.take(8, "channel expiry")?.try_into().unwrap_or_default());
        let counter_limit = u128::from_be_bytes(r.take(16, "Counter Limit")?.try_into().unwrap_or_default());
        Some(SacKey::restore(*k_sac, expires, counter_limit))
    } else {
        None
    };
    if r.at != r.data.len() {
        return Err(StateError::Corrupted { offset: HEADER_LEN + r.at, what: "trailing bytes" });
    }
    Ok(TerminalState { bootstrap, next_request_id: next_request_id.max(1), purchases, registration, tbks, sac })
}

/// A state file on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateFile {
    path: PathBuf,
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StateFileError {
    let path = path.to_path_buf();
    move |error| StateFileError::Io { op, path, error }
}

impl StateFile {
    /// A state file at `path` (no IO).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StateFile { path: path.into() }
    }

    /// Its path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The temporary file a save writes first (`.NAME.tmp` next to it).
    ///
    /// # Errors
    /// [`StateFileError::BadPath`] when the path has no file name.
    pub fn temp_path(&self) -> Result<PathBuf, StateFileError> {
        let name = self.path.file_name().ok_or_else(|| StateFileError::BadPath { path: self.path.clone() })?;
        let mut tmp = std::ffi::OsString::from(".");
        tmp.push(name);
        tmp.push(".tmp");
        Ok(self.path.with_file_name(tmp))
    }

    /// Reads the state; a missing file is the empty state (a terminal's first start).
    ///
    /// # Errors
    /// [`StateFileError`]: IO, too large, bad content.
    pub fn load_or_default(&self) -> Result<TerminalState, StateFileError> {
        match File::open(&self.path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(TerminalState::default()),
            Err(e) => Err(io_err("opening", &self.path)(e)),
            Ok(f) => self.read(f),
        }
    }

    /// Reads the state.
    ///
    /// # Errors
    /// [`StateFileError`].
    pub fn load(&self) -> Result<TerminalState, StateFileError> {
        let f = File::open(&self.path).map_err(io_err("opening", &self.path))?;
        self.read(f)
    }

    fn read(&self, f: File) -> Result<TerminalState, StateFileError> {
        let len = f.metadata().map_err(io_err("reading", &self.path))?.len();
        if len > MAX_FILE_LEN {
            return Err(StateFileError::TooLarge { path: self.path.clone(), len });
        }
        let mut data = Vec::new();
        // Bounded read, whatever the file grows to meanwhile.
        f.take(MAX_FILE_LEN + 1).read_to_end(&mut data).map_err(io_err("reading", &self.path))?;
        decode(&data).map_err(|error| StateFileError::Format { path: self.path.clone(), error })
    }

    /// Replaces the file with `state`, atomically (temporary file 0600, `fsync`, rename,
    /// `fsync` of the directory): a crash leaves the old or the new state, never a torn file.
    ///
    /// # Errors
    /// [`StateFileError::Io`], [`StateFileError::BadPath`].
    pub fn save(&self, state: &TerminalState) -> Result<(), StateFileError> {
        let tmp = self.temp_path()?;
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err("removing", &tmp)(e)),
            _ => {}
        }
        let mut f =
            OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io_err("creating", &tmp))?;
        f.set_permissions(fs::Permissions::from_mode(0o600)).map_err(io_err("setting the mode of", &tmp))?;
        f.write_all(&encode(state)).map_err(io_err("writing", &tmp))?;
        f.sync_all().map_err(io_err("syncing", &tmp))?;
        drop(f);
        fs::rename(&tmp, &self.path).map_err(io_err("renaming over", &self.path))?;
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("syncing directory", dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TerminalState {
        let mut purchases = PurchaseList::default();
        purchases.insert(Purchase {
            item: PurchaseItemRef::new("urn:item:news", Some("offer-1")),
            valid_until: Some(UtcTime::from_unix_seconds(2_000_000_000).unwrap()),
        });
        purchases.insert(Purchase { item: PurchaseItemRef::new("urn:item:sport", None), valid_until: None });
        TerminalState {
            bootstrap: Some(Bootstrapped {
                b_tid: "AAECAwQFBgcICQoLDA0ODw==@bsf.example.org".into(),
                lifetime: UtcTime::from_unix_seconds(1_900_000_000).unwrap(),
                mode: GbaMode::GbaU,
            }),
            next_request_id: 42,
            purchases,
            registration: Some(Registration {
                interface: Interface::Mbms,
                bsm_address: "127.0.0.1:8080".into(),
                at: UtcTime::from_unix_seconds(1_800_000_000).unwrap(),
            }),
            tbks: std::collections::BTreeMap::new(),
            sac: None,
        }
    }

    fn with_tbks() -> TerminalState {
        let mut s = sample();
        s.tbks.insert(0x777, Tbk::from_bytes([0x77; 16]));
        s.tbks.insert(0x888, Tbk::from_bytes([0x88; 16]));
        s
    }

    fn with_channel() -> TerminalState {
        let mut s = with_tbks();
        s.sac = Some(SacKey::restore([0x5a; 16], 1_900_000_000, 65_536));
        s
    }

    #[test]
    fn round_trip() {
        for s in [sample(), TerminalState::default(), with_tbks(), with_channel()] {
            assert_eq!(decode(&encode(&s)).unwrap(), s);
        }
    }

    #[test]
    fn version_1_without_tbks_and_version_2_with_them() {
        // No TBK: version 1, byte for byte what a version-1 build reads and writes.
        let v1 = encode(&sample());
        assert_eq!(u16::from_be_bytes([v1[13], v1[14]]), FORMAT_VERSION_1);
        let v2 = encode(&with_tbks());
        assert_eq!(u16::from_be_bytes([v2[13], v2[14]]), FORMAT_VERSION);
        // The version-2 body is the version-1 body and the TBK list.
        assert_eq!(
            v2[HEADER_LEN..HEADER_LEN + v1.len() - HEADER_LEN - CHECKSUM_LEN],
            v1[HEADER_LEN..v1.len() - CHECKSUM_LEN]
        );
        assert_eq!(v2.len(), v1.len() + 4 + 2 * 20 + 1);
        // The channel key adds its 40 bytes; the debug form never shows it.
        assert_eq!(encode(&with_channel()).len(), v2.len() + 16 + 8 + 16);
        assert!(!format!("{:?}", with_channel()).contains("5a5a"));
        // The debug form never shows a TBK.
        assert!(!format!("{:?}", with_tbks()).contains("7777"));
        // A TBK count beyond the bound is refused.
        let mut body = v1[HEADER_LEN..v1.len() - CHECKSUM_LEN].to_vec();
        body.extend_from_slice(&(MAX_TBKS as u32 + 1).to_be_bytes());
        let mut data = MAGIC.to_vec();
        data.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        data.extend_from_slice(&(body.len() as u32).to_be_bytes());
        data.extend_from_slice(&body);
        let sum = hmac_sha256(CHECKSUM_KEY, &[&data]);
        data.extend_from_slice(&sum);
        assert!(matches!(decode(&data), Err(StateError::Corrupted { what: "TBK count", .. })));
    }

    #[test]
    fn corrupted_files_are_refused() {
        let bytes = encode(&with_tbks());
        // Every single-bit flip is caught (magic, version, length, checksum or body).
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(decode(&b).is_err(), "flip at {i} accepted");
        }
        // Every truncation too.
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_err(), "truncation to {n} accepted");
        }
        assert_eq!(decode(b"KEYCAST-CARD\0\0\x02"), Err(StateError::WrongMagic));
        let mut b = bytes.clone();
        b[14] = 9;
        assert_eq!(decode(&b), Err(StateError::UnsupportedVersion(9)));
        let mut b = bytes.clone();
        let last = b.len() - 1;
        b[last] ^= 0xff;
        assert_eq!(decode(&b), Err(StateError::ChecksumMismatch));
    }

    #[test]
    fn a_well_checksummed_bad_body_is_corrupted() {
        // Bad flag value with a valid checksum: the structure check, not the checksum, refuses.
        let mut body = vec![7u8];
        body.extend_from_slice(&[0; 8]);
        let mut data = MAGIC.to_vec();
        data.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        data.extend_from_slice(&(body.len() as u32).to_be_bytes());
        data.extend_from_slice(&body);
        let sum = hmac_sha256(CHECKSUM_KEY, &[&data]);
        data.extend_from_slice(&sum);
        assert!(matches!(decode(&data), Err(StateError::Corrupted { offset: 19, what: "bootstrap" })));
    }

    #[test]
    fn file_save_is_atomic_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path().join("terminal.state"));
        assert_eq!(file.load_or_default().unwrap(), TerminalState::default());
        assert!(file.load().is_err());
        file.save(&with_tbks()).unwrap();
        assert_eq!(file.load().unwrap(), with_tbks());
        // A stale temporary file (a crash between write and rename) does not disturb a save.
        fs::write(file.temp_path().unwrap(), b"half written").unwrap();
        let s = sample();
        file.save(&s).unwrap();
        assert_eq!(file.load().unwrap(), s);
        assert!(!file.temp_path().unwrap().exists());
        let mode = fs::metadata(file.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A corrupted file is a typed error, not the default state.
        let mut bytes = fs::read(file.path()).unwrap();
        bytes[20] ^= 0x40;
        fs::write(file.path(), &bytes).unwrap();
        assert!(matches!(
            file.load_or_default(),
            Err(StateFileError::Format { error: StateError::ChecksumMismatch, .. })
        ));
    }
}
