//! Play-back of a recording (profile P-4, P-9; seed §6.7.1; DESIGN.md §4 walk 4): the adapted
//! PDCF is read back and walked in time order; every STKM goes to the key holder (the card
//! decides whether this play-back is allowed, P-4), each TEK it releases is installed under
//! its key indicator, and each media sample is ISMACryp-decrypted with the TEK its key
//! indicator names.
//!
//! [`Player`] is the sans-IO core (a byte slice in, clear samples out, the key holder passed
//! into each call). [`play`] is the async driver: it paces the samples (or not), and when the
//! card lacks a SEK/PEK and a terminal shell is given it asks the BSM.
//!
//! ```text
//! file ─► Recording::parse_interrupted ─► events in time order
//!   STKM  ─► key holder: MTK generation ─► TEK+salt ─► ISMACryp key (MKI) ─► Output::Tek
//!             │ 6A88 ─► PlayError::KeyMissing (key, TS window of its STKMs in the track)
//!             │           └► play(): LTKM Request, then Token Purchase Request ─► LTKMs ─► card ─► same STKM again
//!             └ other refusal ─► PlayError::Refused (play-back stops with the card's reason)
//!   media ─► key indicator ─► ISMACryp decrypt ─► Output::Sample (clear access unit)
//! ```
//!
//! # Choices \[chosen\]
//!
//! - **Every STKM of the track goes to the card**, resends included: the card alone applies
//!   P-4 (play-back sessions and their counter, the window of code 0x05, the program of a
//!   pay-per-view key), and a refusal stops play-back with the card's reason
//!   ([`PlayError::Refused`]), even when the TEK it names is already installed.
//! - A recording cut short plays up to its last complete fragment.
//! - **A sample whose key is not installed yet pulls the next STKM of that key forward**: media
//!   times come from the RTP timestamps and STKM times from reception, so jitter can put the
//!   first samples under a new TEK a little before the STKM that announced it.
//! - **Missing key** (6A88): [`play`] first sends an **LTKM Request** for the key with the
//!   validity wanted = the NTP-second TS window of that key's STKMs in the track (the STKM
//!   track bounds what is asked for, seed §6.7.1); Keycast's BSM answers it for keys the
//!   terminal's purchases entitle it to. When the card still lacks the key it sends a **Token
//!   Purchase Request** naming the key and the `GlobalPurchaseItemID` textual header; Keycast's
//!   BSM answers that one from the SEK/PEK history too (`keys_covering`), which is what a
//!   recording of an older key needs. Each key is asked for at most once per play-back. A key
//!   delivered with a window that misses the recording's TSs is then refused by the card (9865)
//!   and play-back stops with that reason.
//! - TEKs released TBK-wrapped (protection_after_reception 2) or channel-wrapped (0 and 1,
//!   P-10) are unwrapped through [`crate::protection::usable_tek_for`] with the terminal's
//!   [`ProtectionState`] when one is given (the TBK named by the STKM's
//!   terminal_binding_key_id, or K_sac); without it, or without that TBK or channel, play-back
//!   stops ([`PlayError::TbkWrapped`], [`PlayError::ChannelWrapped`]).

use std::time::Duration;

use keycast_card::CardError;
use keycast_card::card::CardOpError;
use keycast_card::mbms::{TekOut, serial_gt};
use keycast_mikey::{KeyDomainId, MikeyError, SekPekId, Stkm};
use keycast_provisioning::sprov::{BcastKeyId, LtkmKeyRequest, SprovMessage, TokenPurchaseItem};
use keycast_provisioning::time::UtcTime;
use keycast_traffic::ismacryp::{IsmacrypError, IsmacrypKey, IsmacrypReceiver};
use keycast_traffic::pdcf::{HEADER_GLOBAL_PURCHASE_ITEM_ID, MediaSample, PdcfError, Recording};
use keycast_traffic::srtp::Mki;
use thiserror::Error;

use super::sek_u32;
use super::shell::Keys;
use crate::key_holder::MbmsKeyHolder;
use crate::ltkm_intake::bcast_key;
use crate::protection::{ProtectionError, ProtectionState, usable_tek_for};
use crate::provisioning::Request;
use crate::shell::ShellError;

/// Seconds between the NTP epoch (1900) and the Unix epoch (1970), for the TS window (P-6: TS
/// is NTP seconds). RFC 5905 §6.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// Why play-back stopped. Carries no key bytes.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PlayError {
    /// The file is not a readable recording.
    #[error("reading the recording: {0}")]
    Pdcf(#[from] PdcfError),
    /// An STKM of the track does not decode.
    #[error("STKM {index} of the recording: {error}")]
    Malformed {
        /// Index in the STKM track.
        index: usize,
        /// Why.
        error: MikeyError,
    },
    /// The key holder lacks the SEK/PEK (6A88).
    #[error("the card lacks SEK/PEK {key_group}/{key_number} (STKM {index}, TS {ts_low}..={ts_high} in the recording)", key_group = .sek_pek_id.key_group, key_number = .sek_pek_id.key_number)]
    KeyMissing {
        /// Index in the STKM track.
        index: usize,
        /// Key Domain ID.
        key_domain: KeyDomainId,
        /// SEK/PEK ID.
        sek_pek_id: SekPekId,
        /// Lowest TS of that key's STKMs in the recording.
        ts_low: u32,
        /// Highest TS of that key's STKMs in the recording.
        ts_high: u32,
    },
    /// The key holder refused an STKM (P-4 rights, P-6 checks): play-back stops there.
    #[error("the card refused STKM {index} (TS {ts}): {error}")]
    Refused {
        /// Index in the STKM track.
        index: usize,
        /// The STKM's TS.
        ts: u32,
        /// The card's reason (status word inside).
        error: CardOpError,
    },
    /// The TEK is wrapped by a terminal binding key this terminal does not hold (P-11.5).
    #[error("the TEK of STKM {index} is bound to a terminal binding key, which this terminal does not hold")]
    TbkWrapped {
        /// Index in the STKM track.
        index: usize,
    },
    /// The TEK came over the secure authenticated channel (P-10), not established here.
    #[error("the TEK of STKM {index} needs the secure authenticated channel, which this terminal does not establish")]
    ChannelWrapped {
        /// Index in the STKM track.
        index: usize,
    },
    /// The wrapped TEK does not unwrap with the TBK or channel key held (another terminal's).
    #[error("the wrapped TEK of STKM {index} does not unwrap with the key this terminal holds")]
    Unwrap {
        /// Index in the STKM track.
        index: usize,
    },
    /// The card released a TEK without salt (not a streaming key).
    #[error("the TEK of STKM {index} has no salt")]
    NoSalt {
        /// Index in the STKM track.
        index: usize,
    },
    /// A media sample cannot be decrypted (no STKM gave its key, or a bad header).
    #[error("media sample {index}: {source}")]
    Sample {
        /// Index in the media track.
        index: usize,
        /// Why.
        source: IsmacrypError,
    },
    /// Asking the BSM for a missing key failed.
    #[error("asking the BSM for the missing key: {0}")]
    KeyRequest(#[source] Box<ShellError>),
    /// The BSM was asked but the card still lacks the key.
    #[error("the BSM did not deliver SEK/PEK {key_group}/{key_number}", key_group = .sek_pek_id.key_group, key_number = .sek_pek_id.key_number)]
    KeyNotDelivered {
        /// Key Domain ID.
        key_domain: KeyDomainId,
        /// SEK/PEK ID.
        sek_pek_id: SekPekId,
    },
}

/// A clear access unit out of the recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClearSample {
    /// Index in the media track.
    pub index: usize,
    /// Reception (decode) time since the recording's start.
    pub time: Duration,
    /// Presentation time in RTP clock units since the recording's start (the RTP timing).
    pub rtp_time: u64,
    /// The key it was decrypted with.
    pub key_indicator: Mki,
    /// The clear access unit (the RTP payload as received).
    pub data: Vec<u8>,
}

/// One step of play-back.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output {
    /// The card released the TEK of an STKM (new or again); it is installed under `mki`.
    Tek {
        /// Index in the STKM track.
        index: usize,
        /// SEK/PEK ID ‖ TEK ID.
        mki: Mki,
    },
    /// A clear sample.
    Sample(ClearSample),
}

/// Counters of a play-back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlayStats {
    /// STKMs the card accepted.
    pub stkms: u64,
    /// Clear samples out.
    pub samples: u64,
    /// Clear bytes out.
    pub bytes: u64,
    /// LTKM Requests sent.
    pub ltkm_requests: u64,
    /// Token Purchase Requests sent.
    pub token_purchases: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item {
    Stkm(usize),
    Media(usize),
}

/// The sans-IO play-back core; see the module documentation.
pub struct Player<'a> {
    recording: Recording<'a>,
    order: Vec<Item>,
    pos: usize,
    /// STKMs the card accepted (one pulled ahead of its time is not shown again).
    stkm_done: Vec<bool>,
    receiver: IsmacrypReceiver,
    stats: PlayStats,
}

impl core::fmt::Debug for Player<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Player")
            .field("samples", &self.recording.media.len())
            .field("stkms", &self.recording.stkms.len())
            .field("pos", &self.pos)
            .field("keys", &self.receiver)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Whether a media sample comes before an STKM (an STKM first on a tie: its TEK is needed).
fn media_first(m: &MediaSample<'_>, stkm_time: Duration) -> bool {
    m.time() < stkm_time
}

impl<'a> Player<'a> {
    /// Opens a recording, finished or cut short (up to its last complete fragment).
    ///
    /// # Errors
    /// [`PlayError::Pdcf`] when the file is not a readable recording.
    pub fn open(data: &'a [u8]) -> Result<Self, PlayError> {
        let recording = Recording::parse_interrupted(data)?;
        let mut order = Vec::with_capacity(recording.media.len() + recording.stkms.len());
        let (mut m, mut s) = (0, 0);
        while m < recording.media.len() || s < recording.stkms.len() {
            let take_media = match (recording.media.get(m), recording.stkms.get(s)) {
                (Some(a), Some(b)) => media_first(a, b.time()),
                (Some(_), None) => true,
                _ => false,
            };
            if take_media {
                order.push(Item::Media(m));
                m += 1;
            } else {
                order.push(Item::Stkm(s));
                s += 1;
            }
        }
        let stkm_done = vec![false; recording.stkms.len()];
        Ok(Player {
            recording,
            order,
            pos: 0,
            stkm_done,
            receiver: IsmacrypReceiver::new(),
            stats: PlayStats::default(),
        })
    }

    /// The recording being played.
    #[must_use]
    pub fn recording(&self) -> &Recording<'a> {
        &self.recording
    }

    /// The counters so far.
    #[must_use]
    pub fn stats(&self) -> PlayStats {
        self.stats
    }

    /// The lowest and highest TS of the STKMs of this key in the recording (what a key request
    /// asks for, seed §6.7.1).
    #[must_use]
    pub fn ts_window(&self, key_domain: KeyDomainId, sek_pek_id: SekPekId) -> Option<(u32, u32)> {
        self.recording
            .stkms
            .iter()
            .filter_map(|s| Stkm::decode(s.stkm).ok())
            .filter(|s| s.key_domain_id() == key_domain && s.sek_pek_id() == sek_pek_id)
            .map(|s| s.ts())
            .fold(None, |acc, ts| match acc {
                None => Some((ts, ts)),
                Some((lo, hi)) => {
                    Some((if serial_gt(lo, ts) { ts } else { lo }, if serial_gt(ts, hi) { ts } else { hi }))
                }
            })
    }

    /// The next step: an STKM handed to `holder`, or a sample decrypted. `Ok(None)` at the end.
    /// On an error the position stays, so the same step can be tried again (e.g. after the
    /// missing key was delivered).
    ///
    /// # Errors
    /// See [`PlayError`].
    pub fn next<K: MbmsKeyHolder + ?Sized>(&mut self, holder: &mut K) -> Result<Option<Output>, PlayError> {
        self.next_with(holder, None)
    }

    /// [`Player::next`] with the terminal's content protection state, which unwraps TBK- and
    /// channel-wrapped TEKs (module docs).
    ///
    /// # Errors
    /// See [`PlayError`].
    pub fn next_with<K: MbmsKeyHolder + ?Sized>(
        &mut self,
        holder: &mut K,
        protection: Option<&ProtectionState>,
    ) -> Result<Option<Output>, PlayError> {
        loop {
            let Some(&item) = self.order.get(self.pos) else { return Ok(None) };
            let out = match item {
                Item::Stkm(index) if self.stkm_done[index] => None,
                Item::Stkm(index) => Some(self.stkm(holder, index, protection)?),
                Item::Media(index) => {
                    self.pull_key(holder, index, protection)?;
                    Some(self.media(index)?)
                }
            };
            self.pos += 1;
            if let Some(out) = out {
                return Ok(Some(out));
            }
        }
    }

    /// When sample `index` names a key no STKM gave yet, hands the next STKM of that key to
    /// the card ahead of its time (module docs).
    fn pull_key<K: MbmsKeyHolder + ?Sized>(
        &mut self,
        holder: &mut K,
        index: usize,
        protection: Option<&ProtectionState>,
    ) -> Result<(), PlayError> {
        let want = self.recording.media[index].header.key_indicator;
        if self.receiver.key_indicators().any(|k| k == want) {
            return Ok(());
        }
        let ahead = self.order[self.pos..].iter().find_map(|item| match *item {
            Item::Stkm(s) if !self.stkm_done[s] => Stkm::decode(self.recording.stkms[s].stkm)
                .ok()
                .filter(|k| Mki::new(sek_u32(k.sek_pek_id()), k.tek_id()) == want)
                .map(|_| s),
            _ => None,
        });
        if let Some(s) = ahead {
            self.stkm(holder, s, protection)?;
        }
        Ok(())
    }

    fn stkm<K: MbmsKeyHolder + ?Sized>(
        &mut self,
        holder: &mut K,
        index: usize,
        protection: Option<&ProtectionState>,
    ) -> Result<Output, PlayError> {
        let bytes = self.recording.stkms[index].stkm;
        let stkm = Stkm::decode(bytes).map_err(|error| PlayError::Malformed { index, error })?;
        let (key_domain, sek_pek_id, ts) = (stkm.key_domain_id(), stkm.sek_pek_id(), stkm.ts());
        let mki = Mki::new(sek_u32(sek_pek_id), stkm.tek_id());
        let out = match holder.mtk_generation(bytes) {
            Ok(out) => out,
            Err(CardOpError::Card(CardError::KeyNotFound)) => {
                let (ts_low, ts_high) = self.ts_window(key_domain, sek_pek_id).unwrap_or((ts, ts));
                return Err(PlayError::KeyMissing { index, key_domain, sek_pek_id, ts_low, ts_high });
            }
            Err(error) => return Err(PlayError::Refused { index, ts, error }),
        };
        let (tek, salt) = match (out, protection) {
            (TekOut::Clear { tek, salt }, _) => (tek, salt),
            (out, Some(state)) => {
                usable_tek_for(state, out, stkm.ext().and_then(|e| e.tbk_id)).map_err(|e| match e {
                    ProtectionError::NoTbk => PlayError::TbkWrapped { index },
                    ProtectionError::NoChannel => PlayError::ChannelWrapped { index },
                    _ => PlayError::Unwrap { index },
                })?
            }
            (TekOut::TbkWrapped { .. }, None) => return Err(PlayError::TbkWrapped { index }),
            (TekOut::ChannelWrapped(_), None) => return Err(PlayError::ChannelWrapped { index }),
        };
        let salt = salt.ok_or(PlayError::NoSalt { index })?;
        let key = IsmacrypKey::from_stkm(mki, tek, &salt);
        self.receiver.add_key(&key);
        self.stkm_done[index] = true;
        self.stats.stkms += 1;
        Ok(Output::Tek { index, mki })
    }

    fn media(&mut self, index: usize) -> Result<Output, PlayError> {
        let m = &self.recording.media[index];
        let mut data = m.sample.to_vec();
        let header = self.receiver.unprotect(&mut data).map_err(|source| PlayError::Sample { index, source })?;
        self.stats.samples += 1;
        self.stats.bytes += data.len() as u64;
        Ok(Output::Sample(ClearSample {
            index,
            time: m.time(),
            rtp_time: m.presentation_time(),
            key_indicator: header.key_indicator,
            data,
        }))
    }

    /// Decrypts the next media sample in place into `buf` (cleared first) without building an
    /// [`Output`]; for benchmarks and tight loops. STKMs on the way go to `holder`. Returns the
    /// sample's index, or `None` at the end.
    ///
    /// # Errors
    /// See [`PlayError`].
    pub fn next_sample_into<K: MbmsKeyHolder + ?Sized>(
        &mut self,
        holder: &mut K,
        buf: &mut Vec<u8>,
    ) -> Result<Option<usize>, PlayError> {
        loop {
            let Some(&item) = self.order.get(self.pos) else { return Ok(None) };
            match item {
                Item::Stkm(index) => {
                    if !self.stkm_done[index] {
                        self.stkm(holder, index, None)?;
                    }
                    self.pos += 1;
                }
                Item::Media(index) => {
                    self.pull_key(holder, index, None)?;
                    buf.clear();
                    buf.extend_from_slice(self.recording.media[index].sample);
                    let (_, clear) =
                        self.receiver.unprotect_in(buf).map_err(|source| PlayError::Sample { index, source })?;
                    let n = clear.len();
                    buf.drain(..buf.len() - n);
                    self.stats.samples += 1;
                    self.stats.bytes += n as u64;
                    self.pos += 1;
                    return Ok(Some(index));
                }
            }
        }
    }
}

/// How [`play`] paces the samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pace {
    /// As fast as possible.
    #[default]
    Fast,
    /// At the pace they were received (each sample at its reception time since the start).
    Original,
}

/// What a play-back did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaySummary {
    /// The counters.
    pub stats: PlayStats,
    /// Whether the recording was finished (an interrupted one plays up to its last fragment).
    pub finished: bool,
    /// Keys asked for at the BSM.
    pub keys_requested: Vec<BcastKeyId>,
}

/// NTP seconds to a UTC time (None before 1970 or out of range).
fn utc_of_ntp(ts: u32) -> Option<UtcTime> {
    u64::from(ts).checked_sub(NTP_UNIX_OFFSET).and_then(|s| UtcTime::from_unix_seconds(s).ok())
}

/// Plays `player` to its end: every clear sample goes to `sink` (paced by `pace`). With
/// [`Keys::Shell`], a key the card lacks is asked for at the BSM (module docs) and play-back
/// continues; with [`Keys::Holder`] it stops with [`PlayError::KeyMissing`]. `protection`
/// unwraps TBK- and channel-wrapped TEKs.
///
/// # Errors
/// The first [`PlayError`]; samples before it have reached `sink`.
pub async fn play<K>(
    player: &mut Player<'_>,
    mut keys: Keys<'_, K>,
    protection: Option<&ProtectionState>,
    pace: Pace,
    sink: &mut (dyn FnMut(&ClearSample) + Send),
) -> Result<PlaySummary, PlayError>
where
    K: MbmsKeyHolder + Send,
    K::Card: Send,
{
    let started = tokio::time::Instant::now();
    // Per key: 1 = LTKM Request sent, 2 = Token Purchase Request sent too.
    let mut asked: Vec<(BcastKeyId, u8)> = Vec::new();
    loop {
        let step = match &mut keys {
            Keys::Holder(h) => player.next_with(&mut **h, protection),
            Keys::Shell(s) => player.next_with(s.card_mut(), protection),
        };
        match step {
            Ok(None) => break,
            Ok(Some(Output::Sample(sample))) => {
                if pace == Pace::Original {
                    tokio::time::sleep_until(started + sample.time).await;
                }
                sink(&sample);
            }
            Ok(Some(Output::Tek { .. })) => {}
            Err(PlayError::KeyMissing { key_domain, sek_pek_id, ts_low, ts_high, index }) => {
                let Keys::Shell(shell) = &mut keys else {
                    return Err(PlayError::KeyMissing { key_domain, sek_pek_id, ts_low, ts_high, index });
                };
                let key = bcast_key(key_domain, sek_pek_id);
                let stage = asked.iter().find(|(k, _)| *k == key).map_or(0, |(_, s)| *s);
                let request = match stage {
                    0 => {
                        player.stats.ltkm_requests += 1;
                        match shell
                            .client_mut()
                            .ltkm_request(&[key])
                            .map_err(|e| PlayError::KeyRequest(Box::new(e.into())))?
                        {
                            Request::Sprov(SprovMessage::LtkmRequest(mut r)) => {
                                // The STKM track bounds what is asked for (seed §6.7.1).
                                r.keys = vec![LtkmKeyRequest {
                                    key,
                                    valid_from: utc_of_ntp(ts_low),
                                    valid_until: utc_of_ntp(ts_high),
                                }];
                                Request::Sprov(SprovMessage::LtkmRequest(r))
                            }
                            other => other,
                        }
                    }
                    1 => {
                        let item = TokenPurchaseItem {
                            key_id: key,
                            global_id_ref: player
                                .recording()
                                .header
                                .headers
                                .textual_header(HEADER_GLOBAL_PURCHASE_ITEM_ID)
                                .map(str::to_owned),
                            number_of_tokens: None,
                            price: None,
                        };
                        player.stats.token_purchases += 1;
                        shell
                            .client_mut()
                            .token_purchase(vec![item])
                            .map_err(|e| PlayError::KeyRequest(Box::new(e.into())))?
                    }
                    _ => return Err(PlayError::KeyNotDelivered { key_domain, sek_pek_id }),
                };
                match asked.iter_mut().find(|(k, _)| *k == key) {
                    Some(entry) => entry.1 += 1,
                    None => asked.push((key, 1)),
                }
                tracing::info!(?key, stage, ts_low, ts_high, "asking the BSM for a key the recording needs");
                // A refused request is not the end: the next stage (or KeyNotDelivered) follows.
                if let Err(e) = shell.execute(request).await {
                    if stage >= 1 {
                        return Err(PlayError::KeyRequest(Box::new(e)));
                    }
                    tracing::warn!(error = %e, "LTKM Request failed; trying a Token Purchase Request");
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(PlaySummary {
        stats: player.stats(),
        finished: player.recording().finished,
        keys_requested: asked.into_iter().map(|(k, _)| k).collect(),
    })
}
