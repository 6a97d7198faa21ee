//! Recording a protected stream into the adapted PDCF (profile P-6, P-9; seed §6.7.1;
//! DESIGN.md §4 walk 4): [`Recorder`] is a [`MediaTap`] on the live watcher. Each clear RTP
//! payload is ISMACryp-encrypted again with the TEK the packet was opened with (key indicator =
//! the MKI, IV = the byte offset of the sample in the track), each STKM goes in the STKM track
//! with its reception time, and every second (or every [`RecordConfig::flush_samples`] samples)
//! a fragment is appended to the file, so a recording cut short stays readable up to its last
//! fragment (`Recording::parse_interrupted`).
//!
//! ```text
//! STKM ─► watcher ─► event ─► card-backed? ─► protection_after_reception ─► 1: refuse (nothing written)
//!                                              │ first: init chunk (ftyp + moov, ohdr/obki)
//!                                              ▼
//!                                        STKM track sample (reception time)
//! SRTP ─► watcher ─► clear RTP + its TEK ─► payload ─► ISMACryp (TEK, salt[..8], MKI, offset) ─► media sample
//! ```
//!
//! # What is recorded, and when \[chosen\]
//!
//! - **Only STKMs the card vouched for** decide anything and go in the file: the watcher's
//!   [`Event::TekInstalled`], [`Event::TekConfirmed`], [`Event::ResendSkipped`] (same extension
//!   as one the card accepted), [`Event::Unusable`] for a TBK- or channel-wrapped TEK, and a
//!   refusal with 6982 "secure channel required" (P-6 step 6, after the MAC check). A forged STKM carrying protection_after_reception = 1 cannot stop a
//!   recording, and stale or refused STKMs would only be refused again at play-back.
//! - **The file starts at the first such STKM**: the `ohdr` names its key (`obki`, KeyIDType
//!   0x02 with the key issuer URL = the RightsIssuerURL), the RightsIssuerURL (the BSM's
//!   provisioning URL, from the caller) and, when given, the textual headers
//!   `GlobalPurchaseItemID` / `PurchaseDataID` for the Token Purchase Request at play-back.
//!   Media before it cannot exist (no TEK without an STKM).
//! - **protection_after_reception** (P-6): 1 refuses the recording with
//!   [`RecordError::NotAllowed`]: when it is the first STKM nothing is written at all; when the
//!   broadcaster switches to 1 mid-recording the file is finished there (what was allowed stays)
//!   and nothing more is added. 0 records with the samples encrypted (the TEK comes back only
//!   through the card, and then only over the secure channel, P-10, which this terminal does not
//!   establish yet, so the watcher cannot open such streams today). 2 records with the TBK ID in
//!   `obki` and `oksd`; this terminal holds no TBK yet, so such a stream cannot be opened live
//!   either: the file then holds the STKMs only. 3 (service protection only) **keeps the samples
//!   encrypted too**: storing them in the clear is allowed, not required, and one sample format
//!   (the `odaf` says IV 8, key indicator 6) keeps play-back to one path through the card.
//! - An STKM without the OMA BCAST extension records like 3 (no content protection asked).
//! - The ISMACryp byte offset runs over the whole media track, across TEK changes.
//! - Write errors and writer errors are fatal and stored (rustls style): later calls do
//!   nothing, [`Recorder::error`] and [`Recorder::finish`] report the first one.

use std::io::Write;
use std::time::{Duration, Instant};

use keycast_card::CardError;
use keycast_card::card::CardOpError;
use keycast_mikey::{KeyDomainId, ProtectionAfterReception, SekPekId, Stkm};
use keycast_traffic::ismacryp::{IsmacrypError, IsmacrypKey, IsmacrypSender};
use keycast_traffic::pdcf::{
    CommonHeaders, HEADER_GLOBAL_PURCHASE_ITEM_ID, HEADER_PURCHASE_DATA_ID, KeyInfo, MediaTrack, PdcfError, PdcfHeader,
    PdcfWriter,
};
use keycast_traffic::srtp::{Mki, SrtpMasterKey};
use thiserror::Error;

use super::{Event, MediaTap, Unusable, sek_u32};

/// Default time between two fragments \[chosen\]: what a cut-short recording loses at most.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Default number of samples that closes a fragment early \[chosen\].
pub const DEFAULT_FLUSH_SAMPLES: usize = 512;

/// What the recorder writes besides the samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordConfig {
    /// The media track (kind, original format, RTP clock rate, codec boxes).
    pub media: MediaTrack,
    /// The BSM's provisioning URL, written as the `ohdr` RightsIssuerURL, the `obki` key issuer
    /// URL and the `oksd` rights_issuer_URI (empty: none).
    pub rights_issuer_url: String,
    /// The `GlobalPurchaseItemID` textual header, if known.
    pub global_purchase_item_id: Option<String>,
    /// The `PurchaseDataID` textual header, if known.
    pub purchase_data_id: Option<String>,
    /// A fragment is closed at least this often (reception time).
    pub flush_interval: Duration,
    /// A fragment is closed once it holds this many samples (at least 1).
    pub flush_samples: usize,
}

impl RecordConfig {
    /// A configuration with the default flushing and no OMA headers.
    #[must_use]
    pub fn new(media: MediaTrack) -> Self {
        RecordConfig {
            media,
            rights_issuer_url: String::new(),
            global_purchase_item_id: None,
            purchase_data_id: None,
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            flush_samples: DEFAULT_FLUSH_SAMPLES,
        }
    }
}

/// Why a recording stopped or did not start. Carries no key bytes.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The stream's STKM says protection_after_reception = 1: must not be recorded (P-6).
    #[error("the STKMs of SEK/PEK {key_group}/{key_number} forbid recording (protection_after_reception = 1)", key_group = .sek_pek_id.key_group, key_number = .sek_pek_id.key_number)]
    NotAllowed {
        /// Key Domain ID of the STKM.
        key_domain: KeyDomainId,
        /// SEK/PEK ID of the STKM.
        sek_pek_id: SekPekId,
        /// Whether part of the stream had been recorded (and finished) before.
        partial: bool,
    },
    /// The PDCF writer refused a header or a sample.
    #[error("recording: {0}")]
    Pdcf(#[from] PdcfError),
    /// ISMACryp encryption failed (byte offset exhausted).
    #[error("ISMACryp: {0}")]
    Ismacryp(#[from] IsmacrypError),
    /// Writing the file failed.
    #[error("writing the recording: {0}")]
    Io(#[from] std::io::Error),
}

/// Counters of a [`Recorder`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordStats {
    /// STKMs written to the STKM track.
    pub stkms: u64,
    /// STKMs not recorded (not vouched for by the card, or after the recording stopped).
    pub stkms_ignored: u64,
    /// Media samples written.
    pub samples: u64,
    /// RTP packets not recorded (malformed, or after the recording stopped).
    pub packets_ignored: u64,
    /// Fragments appended.
    pub fragments: u64,
    /// Bytes written to the file.
    pub bytes: u64,
}

/// The recording state once the first STKM arrived.
struct Open {
    writer: PdcfWriter,
    sender: Option<IsmacrypSender>,
    last_flush: Duration,
}

/// A [`MediaTap`] that writes the adapted PDCF to `out` as the stream arrives; see the module
/// documentation. Call [`Recorder::finish`] at the end (a recorder dropped unfinished leaves a
/// file readable up to its last fragment).
pub struct Recorder<W: Write + Send> {
    config: RecordConfig,
    out: W,
    epoch: Option<Instant>,
    open: Option<Open>,
    /// The recording is over (finished after a refusal, or failed): nothing more is added.
    closed: bool,
    error: Option<RecordError>,
    stats: RecordStats,
}

impl<W: Write + Send> core::fmt::Debug for Recorder<W> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Recorder")
            .field("started", &self.open.is_some())
            .field("closed", &self.closed)
            .field("error", &self.error)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Whether the watcher's event means the card checked this STKM's MAC (module docs). A 6982
/// (secure channel required) comes at P-6 step 6, after the MAC: the usual answer to an STKM with
/// protection_after_reception 0 or 1 on a terminal without the channel.
fn vouched(event: &Event) -> bool {
    matches!(
        event,
        Event::TekInstalled { .. }
            | Event::TekConfirmed { .. }
            | Event::ResendSkipped { .. }
            | Event::Unusable { reason: Unusable::TbkWrapped | Unusable::ChannelWrapped, .. }
            | Event::Refused { error: CardOpError::Card(CardError::SecurityStatus(_)), .. }
    )
}

/// The payload and timestamp of an RTP packet (RFC 3550 §5.1: fixed header 12, CSRCs, the
/// header extension, padding); `None` when it is not a well-formed version-2 packet.
fn rtp_payload(rtp: &[u8]) -> Option<(u32, &[u8])> {
    let first = *rtp.first()?;
    if first >> 6 != 2 {
        return None;
    }
    let timestamp = u32::from_be_bytes(rtp.get(4..8)?.try_into().ok()?);
    let mut start = 12 + 4 * usize::from(first & 0x0f);
    if first & 0x10 != 0 {
        let words = u16::from_be_bytes(rtp.get(start + 2..start + 4)?.try_into().ok()?);
        start += 4 + 4 * usize::from(words);
    }
    let mut end = rtp.len();
    if first & 0x20 != 0 {
        end = end.checked_sub(usize::from(*rtp.last()?))?;
    }
    Some((timestamp, rtp.get(start..end)?))
}

impl<W: Write + Send> Recorder<W> {
    /// A recorder that writes to `out` (an empty file opened for writing) once the first STKM
    /// the card vouched for arrives.
    #[must_use]
    pub fn new(config: RecordConfig, out: W) -> Self {
        Recorder { config, out, epoch: None, open: None, closed: false, error: None, stats: RecordStats::default() }
    }

    /// The counters so far.
    #[must_use]
    pub fn stats(&self) -> RecordStats {
        self.stats
    }

    /// The error that stopped the recording, if any.
    #[must_use]
    pub fn error(&self) -> Option<&RecordError> {
        self.error.as_ref()
    }

    /// Whether anything was written (the init chunk).
    #[must_use]
    pub fn started(&self) -> bool {
        self.open.is_some()
    }

    fn since(&mut self, at: Instant) -> Duration {
        let epoch = *self.epoch.get_or_insert(at);
        at.saturating_duration_since(epoch)
    }

    fn write(&mut self, chunk: &[u8]) -> Result<(), RecordError> {
        if chunk.is_empty() {
            return Ok(());
        }
        self.out.write_all(chunk)?;
        // Each chunk ends on a box boundary: flushed, the file is readable up to here.
        self.out.flush()?;
        self.stats.bytes += chunk.len() as u64;
        Ok(())
    }

    /// Keeps the first error; a stored error closes the recording.
    fn fail(&mut self, e: RecordError) {
        self.closed = true;
        if self.error.is_none() {
            tracing::warn!(error = %e, "recording stopped");
            self.error = Some(e);
        }
    }

    /// The header of a recording that starts with this STKM.
    fn header(&self, key_domain: KeyDomainId, mki: Mki, tbk_id: Option<u32>) -> PdcfHeader {
        let url = &self.config.rights_issuer_url;
        let mut key = KeyInfo::bcast(key_domain.0, mki);
        key.key_issuer_url = (!url.is_empty()).then(|| url.clone());
        key.tbk_id = tbk_id;
        let mut textual_headers = Vec::new();
        if let Some(v) = &self.config.global_purchase_item_id {
            textual_headers.push((HEADER_GLOBAL_PURCHASE_ITEM_ID.to_owned(), v.clone()));
        }
        if let Some(v) = &self.config.purchase_data_id {
            textual_headers.push((HEADER_PURCHASE_DATA_ID.to_owned(), v.clone()));
        }
        let mut header = PdcfHeader::new(self.config.media.clone());
        header.headers = CommonHeaders {
            // [chosen] The ContentID names the service's key: Key Domain ID ‖ SEK/PEK ID in hex.
            content_id: format!("cid:keycast-{}", hex(&[&key_domain.0[..], &mki.to_bytes()[..4]].concat())),
            rights_issuer_url: url.clone(),
            textual_headers,
            key_info: vec![key],
        };
        header.stkm_track.terminal_binding_key_id = tbk_id.unwrap_or(0);
        header.stkm_track.rights_issuer_uri = url.clone();
        header
    }

    /// Handles one STKM and what the watcher made of it.
    ///
    /// # Errors
    /// [`RecordError::NotAllowed`] for protection_after_reception = 1; write and writer errors.
    /// Every error is also kept and ends the recording.
    pub fn handle_stkm(&mut self, at: Instant, stkm: &[u8], event: &Event) -> Result<(), RecordError> {
        if self.closed || !vouched(event) {
            self.stats.stkms_ignored += 1;
            return Ok(());
        }
        let Ok(decoded) = Stkm::decode(stkm) else {
            self.stats.stkms_ignored += 1;
            return Ok(());
        };
        let (key_domain, sek_pek_id) = (decoded.key_domain_id(), decoded.sek_pek_id());
        let ext = decoded.ext();
        if ext.is_some_and(|e| e.protection_after_reception == ProtectionAfterReception::MustNotRecord) {
            let partial = self.open.is_some();
            if let Some(open) = self.open.take() {
                // Finish what was allowed so far: the file stays complete.
                let tail = open.writer.finish();
                if let Err(e) = self.write(&tail) {
                    self.fail(e);
                }
            }
            self.closed = true;
            self.stats.stkms_ignored += 1;
            let e = RecordError::NotAllowed { key_domain, sek_pek_id, partial };
            tracing::warn!(error = %e, "not recording");
            if self.error.is_none() {
                self.error = Some(RecordError::NotAllowed { key_domain, sek_pek_id, partial });
            }
            return Err(e);
        }
        let now = self.since(at);
        if self.open.is_none() {
            let tbk_id = ext
                .filter(|e| e.protection_after_reception == ProtectionAfterReception::TerminalBound)
                .and_then(|e| e.tbk_id);
            let header = self.header(key_domain, Mki::new(sek_u32(sek_pek_id), decoded.tek_id()), tbk_id);
            let started = PdcfWriter::new(&header).map_err(RecordError::from).and_then(|(writer, init)| {
                self.write(&init)?;
                Ok(writer)
            });
            match started {
                Ok(writer) => self.open = Some(Open { writer, sender: None, last_flush: now }),
                Err(e) => {
                    self.fail(e);
                    return Err(self.stored());
                }
            }
        }
        let pushed = self.open.as_mut().map(|o| o.writer.push_stkm(now, stkm));
        if let Some(Err(e)) = pushed {
            self.fail(e.into());
            return Err(self.stored());
        }
        self.stats.stkms += 1;
        self.maybe_flush(now)
    }

    /// Handles one clear RTP packet and the key it was opened with.
    ///
    /// # Errors
    /// Write, writer and ISMACryp errors (kept; they end the recording).
    pub fn handle_rtp(&mut self, at: Instant, rtp: &[u8], key: &SrtpMasterKey) -> Result<(), RecordError> {
        let now = self.since(at);
        let (Some(open), false) = (self.open.as_mut(), self.closed) else {
            self.stats.packets_ignored += 1;
            return Ok(());
        };
        let Some((timestamp, payload)) = rtp_payload(rtp) else {
            self.stats.packets_ignored += 1;
            return Ok(());
        };
        let ikey = IsmacrypKey::from_stkm(key.mki(), key.key().clone(), key.salt());
        match &mut open.sender {
            Some(s) if s.key_indicator() == key.mki() => {}
            // The byte offset carries on across TEK changes (set_key keeps it).
            Some(s) => s.set_key(&ikey),
            None => open.sender = Some(IsmacrypSender::new(&ikey)),
        }
        let mut sample = payload.to_vec();
        let result = match open.sender.as_mut().map(|s| s.protect(&mut sample)) {
            Some(Err(e)) => Err(RecordError::from(e)),
            _ => open.writer.push_media(now, timestamp, &sample).map_err(RecordError::from),
        };
        if let Err(e) = result {
            self.fail(e);
            return Err(self.stored());
        }
        self.stats.samples += 1;
        self.maybe_flush(now)
    }

    /// An error of the same kind as the stored one, for the caller (the stored one stays).
    fn stored(&self) -> RecordError {
        match &self.error {
            Some(RecordError::NotAllowed { key_domain, sek_pek_id, partial }) => {
                RecordError::NotAllowed { key_domain: *key_domain, sek_pek_id: *sek_pek_id, partial: *partial }
            }
            Some(RecordError::Pdcf(e)) => RecordError::Pdcf(e.clone()),
            Some(RecordError::Ismacryp(e)) => RecordError::Ismacryp(*e),
            Some(RecordError::Io(e)) => RecordError::Io(std::io::Error::new(e.kind(), e.to_string())),
            None => RecordError::Io(std::io::Error::other("recording closed")),
        }
    }

    fn maybe_flush(&mut self, now: Duration) -> Result<(), RecordError> {
        let Some(open) = self.open.as_mut() else { return Ok(()) };
        let due = now.saturating_sub(open.last_flush) >= self.config.flush_interval
            || open.writer.pending_samples() >= self.config.flush_samples.max(1);
        if !due {
            return Ok(());
        }
        open.last_flush = now;
        let chunk = open.writer.flush_fragment();
        if chunk.is_empty() {
            return Ok(());
        }
        self.stats.fragments += 1;
        if let Err(e) = self.write(&chunk) {
            self.fail(e);
            return Err(self.stored());
        }
        Ok(())
    }

    /// Ends the recording: the last fragment and the `mfra` are written. Returns the sink and
    /// the counters, or the error that stopped the recording ([`RecordError::NotAllowed`] with
    /// `partial: false` means nothing was written).
    ///
    /// # Errors
    /// The stored error, or a write error of the last chunk.
    pub fn finish(mut self) -> Result<(W, RecordStats), RecordError> {
        if let Some(open) = self.open.take() {
            let mut writer = open.writer;
            let mut chunk = writer.flush_fragment();
            if !chunk.is_empty() {
                self.stats.fragments += 1;
            }
            chunk.extend(writer.finish());
            if self.error.is_none() {
                self.write(&chunk)?;
            }
        }
        match self.error {
            Some(e) => Err(e),
            None => Ok((self.out, self.stats)),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl<W: Write + Send> MediaTap for Recorder<W> {
    fn stkm(&mut self, at: Instant, stkm: &[u8], event: &Event) {
        // Errors are kept in the recorder (Recorder::error / finish).
        let _ = self.handle_stkm(at, stkm, event);
    }

    fn rtp(&mut self, at: Instant, rtp: &[u8], key: &SrtpMasterKey) {
        let _ = self.handle_rtp(at, rtp, key);
    }
}

#[cfg(test)]
mod tests {
    use super::rtp_payload;

    #[test]
    fn rtp_payload_skips_csrcs_extension_and_padding() {
        let mut p = vec![0x80, 96, 0, 1, 0, 0, 0x10, 0, 0, 0, 0, 1];
        p.extend_from_slice(b"abc");
        assert_eq!(rtp_payload(&p), Some((0x1000, &b"abc"[..])));
        // CC = 1, X = 1 (one extension word), P = 1 (2 padding bytes).
        let mut q = vec![0xb1, 96, 0, 1, 0, 0, 0, 7, 0, 0, 0, 1, 9, 9, 9, 9, 0xbe, 0xde, 0, 1, 5, 5, 5, 5];
        q.extend_from_slice(b"xy");
        q.extend_from_slice(&[0, 2]);
        assert_eq!(rtp_payload(&q), Some((7, &b"xy"[..])));
        assert_eq!(rtp_payload(&[0x40; 12]), None, "version 1");
        assert_eq!(rtp_payload(&[0x80; 5]), None, "short");
        assert_eq!(rtp_payload(&[0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 200]), None, "padding past the header");
    }
}
