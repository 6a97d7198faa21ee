//! The GBA_ME key store file: a GBA_ME terminal's [`GbaMeStore`] (Ks, RAND and B-TID of its
//! bootstrap, its SMKs and SEK/PEKs with their counters and rights) across restarts, with the
//! same framing, atomic writing and durability policy as the card file (module docs of
//! [`crate::persist`]).
//!
//! With GBA_ME the ME, not the UICC, holds these keys (TS 33.220 §4.5.2; profile P-7): the card
//! file keeps the USIM (K, OPc, SQN_MS for AKA in the 3G context) and this file the rest.
//!
//! # Format (version 1)
//!
//! ```text
//! offset 0   magic            "KEYCAST-MEKS\0" (13 bytes)
//!        13  format version   u16 (= 1)
//!        15  body length      u32
//!        19  body             two sections, `tag u8 ‖ length u32 ‖ content`, in order:
//!              1 bootstrap    opt { key Ks (32) ‖ bytes RAND (16) ‖ str B-TID }
//!              2 mbms         the card file's MBMS section, as in card file version 2
//! end-32     checksum         HMAC-SHA-256(key = CHECKSUM_KEY, every byte before it)
//! ```
//!
//! Field forms (`str`, `bytes`, `key`, `opt`, `list`) and the order of the checks in [`decode`]
//! are those of the card file. Like the card file, it holds keys in the clear, protected by its
//! mode (0600) only; the checksum detects corruption and authenticates nothing.
//!
//! # Durability ([`PersistentGbaMeStore`])
//!
//! As for the card: an accepted LTKM, an MSK deletion and every STKM that changes rights or
//! counters are saved before the answer leaves; live TS/TEK ID advances in batches. Bootstrapping
//! and NAF key derivation happen through [`PersistentGbaMeStore::store_mut`] (keycast-gba's
//! client takes the plain store) and are saved by the [`PersistentGbaMeStore::save`] that
//! follows them.

use std::path::{Path, PathBuf};

use keycast_crypto::keys::Ks;
use keycast_mikey::KeyDomainId;
use zeroize::Zeroizing;

use super::{
    CardFile, CardFileError, Frame, PersistError, PersistentCardError, Res, SavePolicy, TAG_MBMS, Writer, decode_mbms,
    encode_mbms, key, stkm_slot, stkm_view, unframe,
};
use crate::gba_me::GbaMeStore;
use crate::mbms::{MskUpdate, MtkAnswer};

/// The first 13 bytes of every GBA_ME key store file.
pub const MAGIC: &[u8; 13] = b"KEYCAST-MEKS\0";

/// The format version this Keycast writes and reads.
pub const FORMAT_VERSION: u16 = 1;

/// The fixed, public key of the checksum (corruption detection only).
pub const CHECKSUM_KEY: &[u8] = b"keycast GBA_ME key store checksum v1";

const FRAME: Frame = Frame {
    kind: "GBA_ME key store",
    magic: MAGIC,
    oldest: FORMAT_VERSION,
    newest: FORMAT_VERSION,
    checksum_key: CHECKSUM_KEY,
};

const TAG_BOOTSTRAP: u8 = 1;

/// The card file version whose MBMS section layout this file embeds.
const MBMS_LAYOUT: u16 = 2;

/// Encodes a GBA_ME store. The result holds keys and is wiped on drop.
#[must_use]
pub fn encode(store: &GbaMeStore) -> Zeroizing<Vec<u8>> {
    super::frame(&FRAME, FORMAT_VERSION, |w| {
        w.section(TAG_BOOTSTRAP, |w| {
            w.opt(store.bootstrap_parts(), |w, (ks, rand, b_tid)| {
                w.bytes(ks.expose_secret());
                w.bytes(rand);
                w.str(b_tid);
            });
        });
        w.section(TAG_MBMS, |w: &mut Writer| encode_mbms(w, &store.mbms, MBMS_LAYOUT));
    })
}

/// Decodes a GBA_ME key store file. Never panics.
///
/// # Errors
/// [`PersistError`], checked in the card file's order.
pub fn decode(data: &[u8]) -> Result<GbaMeStore, PersistError> {
    let (_, mut r) = unframe(&FRAME, data)?;
    let bootstrap = r.section(TAG_BOOTSTRAP, "bootstrap section", |r| {
        r.opt("bootstrap presence", |r| -> Res<(Ks, [u8; 16], String)> {
            Ok((key(r, "Ks", Ks::from_slice)?, r.fixed("GBA RAND")?, r.str("B-TID")?))
        })
    })?;
    let mbms = r.section(TAG_MBMS, "MBMS section", |r| decode_mbms(r, MBMS_LAYOUT))?;
    r.expect_empty("end of body")?;
    Ok(GbaMeStore::from_parts(bootstrap, mbms))
}

/// A GBA_ME key store file on disk (mode 0600, replaced atomically on save).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GbaMeFile {
    file: CardFile,
}

impl GbaMeFile {
    /// A key store file at `path` (no IO).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { file: CardFile::new(path) }
    }

    /// Writes a new key store file; refuses when `path` exists.
    ///
    /// # Errors
    /// [`CardFileError::AlreadyExists`], or the file system's error.
    pub fn create(path: impl Into<PathBuf>, store: &GbaMeStore) -> Result<Self, CardFileError> {
        CardFile::create_bytes(path, &encode(store)).map(|file| Self { file })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Reads and decodes the file.
    ///
    /// # Errors
    /// The file system's error, [`CardFileError::TooLarge`], or [`CardFileError::Format`].
    pub fn load(&self) -> Result<GbaMeStore, CardFileError> {
        let data = self.file.load_bytes()?;
        decode(&data).map_err(|error| CardFileError::Format { path: self.path().to_path_buf(), error })
    }

    /// Replaces the file with `store`, atomically (temporary file, `fsync`, rename, `fsync` of
    /// the directory).
    ///
    /// # Errors
    /// The file system's error.
    pub fn save(&self, store: &GbaMeStore) -> Result<(), CardFileError> {
        self.file.save_bytes(&encode(store))
    }
}

/// A [`GbaMeStore`] and its [`GbaMeFile`], written by the card's durability policy.
#[derive(Debug)]
pub struct PersistentGbaMeStore {
    store: GbaMeStore,
    file: GbaMeFile,
    saves: SavePolicy,
}

impl PersistentGbaMeStore {
    /// Opens the store at `path`, creating an empty one when there is no file yet.
    ///
    /// # Errors
    /// The file exists but cannot be read or decoded (it is never replaced then), or creating it
    /// failed.
    pub fn open_or_create(path: impl Into<PathBuf>) -> Result<Self, CardFileError> {
        let file = GbaMeFile::new(path);
        let store = match file.load() {
            Ok(store) => store,
            Err(CardFileError::Io { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => {
                let store = GbaMeStore::default();
                match GbaMeFile::create(file.path().to_path_buf(), &store) {
                    Ok(_) => store,
                    // Another process created it in between: read what it wrote.
                    Err(CardFileError::AlreadyExists { .. }) => file.load()?,
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        Ok(Self { store, file, saves: SavePolicy::new() })
    }

    /// Sets how many live STKMs may be accepted between two saves (at least 1).
    #[must_use]
    pub fn with_live_batch(mut self, n: u32) -> Self {
        self.saves.set_live_batch(n);
        self
    }

    /// The store.
    pub fn store(&self) -> &GbaMeStore {
        &self.store
    }

    /// The store, to bootstrap into or derive NAF keys from (keycast-gba's client); call
    /// [`Self::save`] after such a change.
    pub fn store_mut(&mut self) -> &mut GbaMeStore {
        &mut self.store
    }

    /// The file.
    pub fn file(&self) -> &GbaMeFile {
        &self.file
    }

    /// Saves written by this handle so far.
    pub fn writes(&self) -> u64 {
        self.saves.writes()
    }

    /// Live STKMs accepted since the last save.
    pub fn pending_live(&self) -> u32 {
        self.saves.pending_live()
    }

    /// Writes the store now.
    ///
    /// # Errors
    /// The file system's error.
    pub fn save(&mut self) -> Result<(), CardFileError> {
        self.file.save(&self.store)?;
        self.saves.saved();
        Ok(())
    }

    /// Writes batched live STKM advances, if any.
    ///
    /// # Errors
    /// The file system's error.
    pub fn flush(&mut self) -> Result<(), CardFileError> {
        if self.saves.pending_live() > 0 { self.save() } else { Ok(()) }
    }

    /// [`GbaMeStore::msk_update`]; saved before the verification message is returned.
    ///
    /// # Errors
    /// The store's refusal, or a failed save (the answer is withheld).
    pub fn msk_update(&mut self, ltkm: &[u8]) -> Result<MskUpdate, PersistentCardError> {
        let u = self.store.msk_update(ltkm)?;
        self.save()?;
        Ok(u)
    }

    /// [`GbaMeStore::mtk_generation`]: saved before the TEK is returned when rights or counters
    /// changed; live advances batched.
    ///
    /// # Errors
    /// As [`Self::msk_update`].
    pub fn mtk_generation(&mut self, stkm: &[u8]) -> Result<MtkAnswer, PersistentCardError> {
        let slot = stkm_slot(stkm);
        let before = stkm_view(&self.store.mbms, slot);
        let answer = self.store.mtk_generation(stkm)?;
        let after = stkm_view(&self.store.mbms, slot);
        if self.saves.after_stkm(&before, &after, answer.play_back) {
            self.save()?;
        }
        Ok(answer)
    }

    /// [`GbaMeStore::msk_deletion`]; saved.
    ///
    /// # Errors
    /// As [`Self::msk_update`].
    pub fn msk_deletion(&mut self, key_domain_id: KeyDomainId, key_group: u16) -> Result<(), PersistentCardError> {
        self.store.msk_deletion(key_domain_id, key_group)?;
        self.save()?;
        Ok(())
    }
}

impl Drop for PersistentGbaMeStore {
    fn drop(&mut self) {
        // Best effort, as for the card: only batched live advances can be lost.
        let _ = self.flush();
    }
}
