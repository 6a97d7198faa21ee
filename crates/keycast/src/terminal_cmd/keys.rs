//! The terminal's key holders: the card file, for a GBA_ME terminal with the ME's key store file
//! beside it ([`TerminalKeys`]), and the content protection of the state file on top
//! ([`ProtectedCard`]).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use keycast_card::card::{Card, CardOpError};
use keycast_card::gba_me::GbaMeStore;
use keycast_card::mbms::{MbmsStore, TekOut};
use keycast_card::persist::gba_me::PersistentGbaMeStore;
use keycast_card::persist::{CardFile, PersistentCard};
use keycast_card::usim::Usim;
use keycast_crypto::gba::GbaType;
use keycast_gba::client::GbaMode;
use keycast_terminal::key_holder::MbmsKeyHolder;
use keycast_terminal::protection::{ProtectionState, stkm_tbk_id, usable_tek, usable_tek_for};
use keycast_terminal::state::StateFile;

use super::TerminalConfig;

/// The terminal's keys: the card file and, for a GBA_ME terminal, the ME's key store file
/// (`keycast_card::persist::gba_me`), which then holds Ks, the SMKs and the SEK/PEKs while the
/// card only runs AKA in its 3G context (TS 33.220 §4.5.2, profile P-7).
///
/// The store is saved by its own durability policy on every LTKM and STKM; what keycast-gba's
/// client changes through [`MbmsKeyHolder::gba_parts`] (a bootstrap, a NAF key derivation) is
/// saved before the next key operation, by [`TerminalKeys::save`], and when the holder drops.
pub(crate) struct TerminalKeys {
    pub(crate) card: PersistentCard,
    me: Option<PersistentGbaMeStore>,
    /// The GBA_ME store was handed out mutably and may hold unsaved changes.
    me_dirty: bool,
}

impl TerminalKeys {
    /// The card file at `card`, and the GBA_ME key store at `me_store` when given (created
    /// empty on first use).
    pub(crate) fn open(card: Option<&PathBuf>, me_store: Option<&Path>) -> Result<Self> {
        let path = card.context("give --card or a configuration with `card`")?;
        let card = PersistentCard::open(CardFile::new(path))
            .with_context(|| format!("opening the card file {}", path.display()))?;
        let me = me_store
            .map(|p| {
                PersistentGbaMeStore::open_or_create(p)
                    .with_context(|| format!("opening the GBA_ME key store {}", p.display()))
            })
            .transpose()?;
        Ok(Self { card, me, me_dirty: false })
    }

    /// The card's identity and AKA state.
    pub(crate) fn usim(&self) -> &Usim {
        self.card.usim()
    }

    /// Where the SEK/PEKs are: the ME's store for GBA_ME, the card's otherwise.
    pub(crate) fn mbms(&self) -> &MbmsStore {
        match &self.me {
            Some(me) => &me.store().mbms,
            None => &self.card.usim().mbms,
        }
    }

    /// The B-TID the keys are bootstrapped with (the ME's store for GBA_ME, EF_GBABP otherwise).
    pub(crate) fn b_tid(&self) -> Option<&str> {
        match &self.me {
            Some(me) => me.store().b_tid(),
            None => self.card.usim().gba.as_ref().and_then(|g| g.b_tid.as_deref()),
        }
    }

    /// The GBA mode these keys bootstrap in.
    pub(crate) fn mode(&self) -> GbaMode {
        if self.me.is_some() { GbaMode::GbaMe } else { GbaMode::GbaU }
    }

    /// Writes what changed in the GBA_ME store through [`MbmsKeyHolder::gba_parts`].
    pub(crate) fn save(&mut self) -> Result<(), CardOpError> {
        if let (Some(me), true) = (self.me.as_mut(), self.me_dirty) {
            me.save().map_err(|e| CardOpError::from(keycast_card::persist::PersistentCardError::Save(e)))?;
            self.me_dirty = false;
        }
        Ok(())
    }
}

impl Drop for TerminalKeys {
    fn drop(&mut self) {
        // Best effort; the account commands save explicitly before they report.
        let _ = self.save();
    }
}

impl MbmsKeyHolder for TerminalKeys {
    type Card = PersistentCard;

    fn gba_type(&self) -> GbaType {
        if self.me.is_some() { GbaType::GbaMe } else { GbaType::GbaU }
    }

    fn gba_parts(&mut self) -> (&mut PersistentCard, Option<&mut GbaMeStore>) {
        self.me_dirty |= self.me.is_some();
        (&mut self.card, self.me.as_mut().map(PersistentGbaMeStore::store_mut))
    }

    fn msk_update(&mut self, ltkm: &[u8]) -> Result<Option<Vec<u8>>, CardOpError> {
        self.save()?;
        match &mut self.me {
            Some(me) => Ok(me.msk_update(ltkm)?.verification),
            None => Card::msk_update(&mut self.card, ltkm),
        }
    }

    fn mtk_generation(&mut self, stkm: &[u8]) -> Result<TekOut, CardOpError> {
        self.save()?;
        match &mut self.me {
            Some(me) => Ok(me.mtk_generation(stkm)?.tek),
            None => Card::mtk_generation(&mut self.card, stkm),
        }
    }

    fn msk_deletion(&mut self, key_domain_id: keycast_mikey::KeyDomainId, key_group: u16) -> Result<(), CardOpError> {
        self.save()?;
        match &mut self.me {
            Some(me) => Ok(me.msk_deletion(key_domain_id, key_group)?),
            None => Card::msk_deletion(&mut self.card, key_domain_id, key_group),
        }
    }
}

/// The terminal's keys with the content protection of the state file (module docs of
/// `terminal_cmd`): the TBKs of `state` (default `<card>.state`; none when it does not exist)
/// and the terminal's half of the secure channel.
pub(crate) fn protected_card(
    path: Option<&PathBuf>,
    state: Option<&PathBuf>,
    me_store: Option<&Path>,
) -> Result<ProtectedCard> {
    let keys = TerminalKeys::open(path, me_store)?;
    let state_path =
        state.cloned().unwrap_or_else(|| TerminalConfig::default().state_path(None, keys.card.file().path()));
    let saved = StateFile::new(&state_path).load_or_default().context("reading the terminal state")?;
    let mut protection = ProtectionState::new();
    for (id, tbk) in saved.tbks {
        protection.insert_tbk(id, tbk);
    }
    if let Some(sac) = saved.sac {
        protection.restore_sac(sac);
    }
    Ok(ProtectedCard { keys, protection, told_channel: false, told_tbk: false })
}

/// The terminal's keys with its content protection (module docs): the key holder the media
/// path calls. TEKs the card releases channel-wrapped (protection_after_reception 0, 1; P-10)
/// are unwrapped with the terminal's K_sac (state file), TBK-wrapped ones (2; P-11.5) with the
/// TBK the STKM names; what cannot be unwrapped is passed on as it came (the watcher or player
/// then reports it unusable), with a hint on standard error once.
pub(crate) struct ProtectedCard {
    pub(crate) keys: TerminalKeys,
    protection: ProtectionState,
    told_channel: bool,
    told_tbk: bool,
}

impl ProtectedCard {
    /// Says once that the stream needs `protect` (`what`: why).
    fn tell(told: &mut bool, what: &str) {
        if !*told {
            *told = true;
            eprintln!("{what}: run `keycast terminal protect`");
        }
    }

    /// Whether `stkm` asks for content protection over the channel (protection_after_reception
    /// 0 or 1).
    fn needs_channel(stkm: &[u8]) -> bool {
        use keycast_mikey::ProtectionAfterReception as P;
        keycast_mikey::Stkm::decode(stkm)
            .ok()
            .and_then(|s| s.ext().map(|e| e.protection_after_reception))
            .is_some_and(|p| matches!(p, P::MayRecord | P::MustNotRecord))
    }
}

impl MbmsKeyHolder for ProtectedCard {
    type Card = PersistentCard;

    fn gba_type(&self) -> GbaType {
        self.keys.gba_type()
    }

    fn gba_parts(&mut self) -> (&mut PersistentCard, Option<&mut GbaMeStore>) {
        self.keys.gba_parts()
    }

    fn msk_update(&mut self, ltkm: &[u8]) -> Result<Option<Vec<u8>>, CardOpError> {
        self.keys.msk_update(ltkm)
    }

    fn mtk_generation(&mut self, stkm: &[u8]) -> Result<TekOut, CardOpError> {
        let out = match self.keys.mtk_generation(stkm) {
            Ok(out) => out,
            Err(e) => {
                // 6982 for a content-protected STKM: no channel, or its Counter Limit is used up
                // (TS 31.102 §7.1.1.7 with P-10).
                if matches!(&e, CardOpError::Card(c) if c.status_word() == 0x6982) && Self::needs_channel(stkm) {
                    let why = match &self.keys.mbms().sac {
                        Some(s) if s.used >= s.counter_limit => {
                            "the secure authenticated channel's Counter Limit is used up".to_owned()
                        }
                        _ => "this stream's TEKs are released only over the secure authenticated channel \
                              (protection_after_reception 0 or 1), and none is set up with the card"
                            .to_owned(),
                    };
                    Self::tell(&mut self.told_channel, &why);
                }
                return Err(e);
            }
        };
        Ok(match out {
            TekOut::ChannelWrapped(wrapped) => {
                // The terminal's own K_sac (from the key center, kept in its state file), never
                // the card's.
                match usable_tek(&self.protection, TekOut::ChannelWrapped(wrapped.clone())) {
                    Ok((tek, salt)) => TekOut::Clear { tek, salt },
                    Err(_) => {
                        Self::tell(
                            &mut self.told_channel,
                            "the card released a TEK for a channel this terminal does not hold",
                        );
                        TekOut::ChannelWrapped(wrapped)
                    }
                }
            }
            out @ TekOut::TbkWrapped { .. } => {
                let id = stkm_tbk_id(stkm);
                match usable_tek_for(&self.protection, out.clone(), id) {
                    Ok((tek, salt)) => TekOut::Clear { tek, salt },
                    Err(_) => {
                        let id = id.map_or_else(|| "unnamed".to_owned(), |i| i.to_string());
                        let why = format!(
                            "this stream's TEKs are bound to terminal binding key {id}, which this terminal does not hold"
                        );
                        Self::tell(&mut self.told_tbk, &why);
                        out
                    }
                }
            }
            clear => clear,
        })
    }

    fn msk_deletion(&mut self, key_domain_id: keycast_mikey::KeyDomainId, key_group: u16) -> Result<(), CardOpError> {
        self.keys.msk_deletion(key_domain_id, key_group)
    }
}

/// A key holder over [`TerminalKeys`] (the account commands' bare keys, the media path's
/// [`ProtectedCard`]).
pub(crate) trait KeysHolder: MbmsKeyHolder<Card = PersistentCard> + Send {
    fn keys(&self) -> &TerminalKeys;
    fn keys_mut(&mut self) -> &mut TerminalKeys;
}

impl KeysHolder for TerminalKeys {
    fn keys(&self) -> &TerminalKeys {
        self
    }

    fn keys_mut(&mut self) -> &mut TerminalKeys {
        self
    }
}

impl KeysHolder for ProtectedCard {
    fn keys(&self) -> &TerminalKeys {
        &self.keys
    }

    fn keys_mut(&mut self) -> &mut TerminalKeys {
        &mut self.keys
    }
}
