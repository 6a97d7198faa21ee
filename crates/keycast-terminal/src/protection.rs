//! Content protection on the terminal (`profile: P-6, P-10, P-11.5`): the secure authenticated
//! channel (SAC) to the card, terminal binding keys (TBKs), and turning the card's TEK answer
//! ([`TekOut`]) into a TEK the media path can use ([`usable_tek`]).
//!
//! - **SAC** ([`ProtectionState::establish_sac`], TS 33.110 §4.5.2): Ua Digest over mutually
//!   authenticated HTTPS to the BSM's key center (`keycast_bsm::http::key_center`) with B-TID,
//!   Terminal_ID, ICCID, Terminal_appli_ID, UICC_appli_ID and RANDx; the answer's Ks_local and
//!   Counter Limit go to the card's Local Key Establishment with the MAC; the card's
//!   verification value is checked (constant time); then only K_sac is kept (zeroizing), Ks_local
//!   is dropped. STKMs with protection_after_reception 0 or 1 then come back
//!   [`TekOut::ChannelWrapped`].
//! - **TBKs** ([`ProtectionState::fetch_tbk`]): the TBK named by an LTKM's tbk_flag +
//!   terminal_binding_key_id, from the same key center, delivered wrapped under a key derived from
//!   the SRK (see the key center's documentation); kept by ID. STKMs with
//!   protection_after_reception 2 come back [`TekOut::TbkWrapped`].
//!
//! Wire form (JSON, base64 fields) and paths are the key center's \[chosen\] ones. The Digest
//! answer's `rspauth` is checked before anything in it is used: Ks_local and the TBK are taken
//! only from the BSM the terminal authenticated.
//!
//! Where the media path calls in: wherever it holds a [`TekOut`] from the key holder's MTK
//! generation (the live Watcher, play-back of a recording, a download), it calls
//! [`usable_tek`] (or [`usable_tek_for`] when it read the terminal_binding_key_id from the STKM's
//! extension) and uses the TEK and salt it returns; an error means "not usable here" (no channel,
//! no TBK) and the key stays unusable as before.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keycast_card::card::{Card, CardOpError};
use keycast_card::mbms::{TekOut, unwrap_channel_tek};
use keycast_card::sac;
use keycast_card::usim::{LocalKeyRequest, local_key_request_mac, local_key_verification};
use keycast_crypto::hmac::{ct_eq, hmac_sha256};
use keycast_crypto::key_wrap;
use keycast_crypto::keys::{KsLocal, Srk, Tbk, Tek, TekSalt};
use keycast_gba::client::http::{HttpClientError, UbTransport};
use keycast_gba::client::{HttpRequest, HttpResponse, NafCredentials};
use keycast_provisioning::digest::{AuthenticationInfo, Challenge, Qop};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Path of the key center's Ks_local establishment (keycast-bsm `KS_LOCAL_PATH`).
pub const KS_LOCAL_PATH: &str = "/keycenter/ks-local";
/// Path of the key center's TBK provisioning (keycast-bsm `TBK_PATH`).
pub const TBK_PATH: &str = "/keycenter/tbk";
/// Label of the TBK-wrapping key derived from the SRK (keycast-bsm key center, \[chosen\]).
const TBK_WRAP_LABEL: &[u8] = b"keycast-tbk-wrap";
/// Most TBKs kept at once \[chosen\]: a terminal holds one per bound purchase.
pub const MAX_TBKS: usize = 64;

/// Why content protection could not go on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtectionError {
    /// The TEK came wrapped for the secure channel, and none is established.
    #[error("no secure authenticated channel with the card")]
    NoChannel,
    /// The TEK came wrapped by a TBK the terminal does not hold.
    #[error("no terminal binding key for this TEK")]
    NoTbk,
    /// A wrapped key did not unwrap (wrong key, or corrupted).
    #[error("wrapped key does not unwrap")]
    Unwrap,
    /// The HTTP exchange with the key center failed.
    #[error("key center: {0}")]
    Http(#[from] HttpClientError),
    /// The key center refused (status and its text).
    #[error("key center refused ({status}): {body}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The answer's text.
        body: String,
    },
    /// The key center asked for a new bootstrap (401 to a Digest answer): the B-TID is unknown
    /// or expired.
    #[error("key center refused the B-TID: bootstrap again")]
    Rebootstrap,
    /// The key center's answer is not usable (no challenge, bad JSON, wrong sizes, bad
    /// `rspauth`, another B-TID).
    #[error("invalid key center answer: {0}")]
    BadAnswer(String),
    /// The card refused the Local Key Establishment (e.g. 9862: the MAC does not verify).
    #[error(transparent)]
    Card(#[from] CardOpError),
    /// The card's verification value is not the one Ks_local gives: the card derived another
    /// key.
    #[error("the card's Local Key Establishment verification does not match")]
    Verification,
}

/// The identifiers of a Ks_local (TS 33.110 Annex A; `profile: P-10`): the terminal's, and the
/// card's ICCID as the card uses it in the KDF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SacIdentity {
    /// Terminal_ID (e.g. the IMEI).
    pub terminal_id: Vec<u8>,
    /// ICCID.
    pub iccid: Vec<u8>,
    /// Terminal_appli_ID (`platform` for a per-platform key).
    pub terminal_appli_id: Vec<u8>,
    /// UICC_appli_ID (`platform` for a per-platform key).
    pub uicc_appli_id: Vec<u8>,
}

impl SacIdentity {
    /// A per-platform key (both application IDs `platform`, TS 33.110 §4.5.2).
    #[must_use]
    pub fn platform(terminal_id: &[u8], iccid: &[u8]) -> Self {
        SacIdentity {
            terminal_id: terminal_id.to_vec(),
            iccid: iccid.to_vec(),
            terminal_appli_id: b"platform".to_vec(),
            uicc_appli_id: b"platform".to_vec(),
        }
    }
}

/// The terminal's half of an established channel: K_sac and its limits. Ks_local itself is not
/// kept.
pub struct SacKey {
    k_sac: Zeroizing<[u8; 16]>,
    /// When the key center said Ks_local stops being valid (Unix seconds).
    pub expires: u64,
    /// The Counter Limit the card enforces.
    pub counter_limit: u128,
}

impl SacKey {
    /// A channel key the terminal saved earlier (its state file), with its limits.
    #[must_use]
    pub fn restore(k_sac: [u8; 16], expires: u64, counter_limit: u128) -> Self {
        SacKey { k_sac: Zeroizing::new(k_sac), expires, counter_limit }
    }

    /// The key's bytes, for the terminal's own protected storage only (its 0600 state file);
    /// never for logs or the wire.
    #[must_use]
    pub fn expose_k_sac(&self) -> &[u8; 16] {
        &self.k_sac
    }
}

impl PartialEq for SacKey {
    fn eq(&self, other: &Self) -> bool {
        ct_eq(&self.k_sac[..], &other.k_sac[..])
            && self.expires == other.expires
            && self.counter_limit == other.counter_limit
    }
}

impl Eq for SacKey {}

impl Clone for SacKey {
    fn clone(&self) -> Self {
        SacKey::restore(*self.k_sac, self.expires, self.counter_limit)
    }
}

impl core::fmt::Debug for SacKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SacKey")
            .field("expires", &self.expires)
            .field("counter_limit", &self.counter_limit)
            .finish_non_exhaustive()
    }
}

/// What the terminal holds for content protection: the channel key and the TBKs.
#[derive(Debug, Default)]
pub struct ProtectionState {
    sac: Option<SacKey>,
    tbks: BTreeMap<u32, Tbk>,
}

#[derive(Serialize)]
struct KsLocalRequestJson<'a> {
    b_tid: &'a str,
    terminal_id: String,
    iccid: String,
    terminal_appli_id: String,
    uicc_appli_id: String,
    randx: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KsLocalAnswerJson {
    b_tid: String,
    naf_id: String,
    ks_local: String,
    counter_limit: String,
    key_lifetime: u64,
}

#[derive(Serialize)]
struct TbkRequestJson {
    terminal_binding_key_id: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TbkAnswerJson {
    terminal_binding_key_id: u32,
    wrapped_tbk: String,
}

fn bad(what: impl Into<String>) -> ProtectionError {
    ProtectionError::BadAnswer(what.into())
}

fn b64<const N: usize>(name: &str, text: &str) -> Result<Zeroizing<[u8; N]>, ProtectionError> {
    let bytes = Zeroizing::new(STANDARD.decode(text).map_err(|_| bad(format!("{name}: not base64")))?);
    let mut out = Zeroizing::new([0u8; N]);
    if bytes.len() != N {
        return Err(bad(format!("{name}: {} octets, expected {N}", bytes.len())));
    }
    out.copy_from_slice(&bytes);
    Ok(out)
}

fn request(host: &str, uri: &str, user_agent: &str, body: &[u8], authorization: Option<String>) -> HttpRequest {
    let mut headers = vec![
        ("Host".to_owned(), host.to_owned()),
        ("User-Agent".to_owned(), user_agent.to_owned()),
        ("Content-Type".to_owned(), "application/json".to_owned()),
    ];
    headers.extend(authorization.map(|a| ("Authorization".to_owned(), a)));
    HttpRequest { method: "POST".into(), uri: uri.into(), headers, body: body.to_vec() }
}

/// One Ua exchange (POST, 401, POST with Digest auth-int) with `rspauth` checked on the answer.
/// `user_agent` must carry `3gpp-gba` (`profile: P-7`).
async fn ua_post<T: UbTransport + Send>(
    bsm: &mut T,
    creds: &NafCredentials,
    user_agent: &str,
    uri: &str,
    body: &[u8],
    cnonce: &[u8; 16],
) -> Result<HttpResponse, ProtectionError> {
    let host = creds.naf_fqdn.as_str();
    let first = bsm.send(&request(host, uri, user_agent, body, None)).await?;
    if first.status != 401 {
        return Err(ProtectionError::Refused { status: first.status, body: text(&first) });
    }
    let challenge = first
        .header("WWW-Authenticate")
        .and_then(|v| Challenge::parse(v).ok())
        .ok_or_else(|| bad("401 without a Digest challenge"))?;
    let mut digest =
        creds.digest_client(challenge, &[Qop::AuthInt]).ok_or_else(|| bad("challenge not for this BSM's key"))?;
    let sent = digest.authorize("POST", uri, body, cnonce).map_err(|e| bad(e.to_string()))?;
    let authorization = sent.credentials().to_header_value().map_err(|e| bad(e.to_string()))?;
    let response = bsm.send(&request(host, uri, user_agent, body, Some(authorization))).await?;
    if response.status == 401 {
        return Err(ProtectionError::Rebootstrap);
    }
    let info = response
        .header("Authentication-Info")
        .and_then(|v| AuthenticationInfo::parse(v).ok())
        .ok_or_else(|| bad("answer without Authentication-Info"))?;
    digest.check_authentication_info(&sent, &info, &response.body).map_err(|e| bad(e.to_string()))?;
    if response.status != 200 {
        return Err(ProtectionError::Refused { status: response.status, body: text(&response) });
    }
    Ok(response)
}

fn text(r: &HttpResponse) -> String {
    String::from_utf8_lossy(&r.body).chars().take(256).collect()
}

/// `K_tbk = first 16 octets of HMAC-SHA-256(SRK, "keycast-tbk-wrap")` (key center, \[chosen\]).
fn tbk_wrapping_key(srk: &Srk) -> Zeroizing<[u8; 16]> {
    let full = Zeroizing::new(hmac_sha256(srk.expose_secret(), &[TBK_WRAP_LABEL]));
    let mut k = Zeroizing::new([0u8; 16]);
    k.copy_from_slice(&full[..16]);
    k
}

impl ProtectionState {
    /// Nothing established, no TBK.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes back a channel key saved by an earlier process (see [`SacKey::restore`]).
    pub fn restore_sac(&mut self, key: SacKey) {
        self.sac = Some(key);
    }

    /// The channel key, if a channel is established.
    #[must_use]
    pub fn sac(&self) -> Option<&SacKey> {
        self.sac.as_ref()
    }

    /// Whether a channel is established and its Ks_local still valid at `now` (Unix seconds).
    #[must_use]
    pub fn has_channel(&self, now: u64) -> bool {
        self.sac.as_ref().is_some_and(|s| now < s.expires)
    }

    /// Forgets the channel (the card was changed, or a new bootstrap replaced the B-TID).
    pub fn drop_channel(&mut self) {
        self.sac = None;
    }

    /// Establishes the secure authenticated channel (module docs): the key center over `bsm`
    /// (mutually authenticated HTTPS) with `creds` (the B-TID's Ua credentials), then the card's
    /// Local Key Establishment. `randx` must be fresh random; `cnonce` is the Digest cnonce
    /// random. On success the channel replaces any earlier one.
    ///
    /// # Errors
    /// [`ProtectionError`]; on error the earlier channel, if any, is kept.
    #[allow(clippy::too_many_arguments)]
    pub async fn establish_sac<T: UbTransport + Send, C: Card + ?Sized>(
        &mut self,
        bsm: &mut T,
        creds: &NafCredentials,
        user_agent: &str,
        card: &mut C,
        ids: &SacIdentity,
        randx: [u8; 16],
        cnonce: &[u8; 16],
    ) -> Result<&SacKey, ProtectionError> {
        let body = serde_json::to_vec(&KsLocalRequestJson {
            b_tid: &creds.b_tid,
            terminal_id: STANDARD.encode(&ids.terminal_id),
            iccid: STANDARD.encode(&ids.iccid),
            terminal_appli_id: STANDARD.encode(&ids.terminal_appli_id),
            uicc_appli_id: STANDARD.encode(&ids.uicc_appli_id),
            randx: STANDARD.encode(randx),
        })
        .map_err(|e| bad(e.to_string()))?;
        let response = ua_post(bsm, creds, user_agent, KS_LOCAL_PATH, &body, cnonce).await?;
        let body = Zeroizing::new(response.body);
        let answer: KsLocalAnswerJson = serde_json::from_slice(&body).map_err(|e| bad(e.to_string()))?;
        if answer.b_tid != creds.b_tid {
            return Err(bad("answer names another B-TID"));
        }
        let ks_local_text = Zeroizing::new(answer.ks_local);
        let ks_local = KsLocal::from_bytes(*b64::<32>("ks_local", &ks_local_text)?);
        let counter_limit = *b64::<16>("counter_limit", &answer.counter_limit)?;
        let naf_id = STANDARD.decode(&answer.naf_id).map_err(|_| bad("naf_id: not base64"))?;
        let mut req = LocalKeyRequest {
            naf_id,
            terminal_id: ids.terminal_id.clone(),
            terminal_appli_id: ids.terminal_appli_id.clone(),
            uicc_appli_id: ids.uicc_appli_id.clone(),
            randx: randx.to_vec(),
            counter_limit,
            mac: [0; 16],
        };
        req.mac = local_key_request_mac(&ks_local, &req, &ids.iccid);
        let verification = card.local_key_establishment(&req)?;
        if !ct_eq(&verification, &local_key_verification(&ks_local)) {
            return Err(ProtectionError::Verification);
        }
        tracing::info!(btid = %creds.b_tid, expires = answer.key_lifetime, "secure channel with the card established");
        let key = SacKey {
            k_sac: sac::k_sac(&ks_local),
            expires: answer.key_lifetime,
            counter_limit: u128::from_be_bytes(counter_limit),
        };
        Ok(self.sac.insert(key))
    }

    /// Gets the TBK `terminal_binding_key_id` from the key center over `bsm` and keeps it.
    ///
    /// # Errors
    /// [`ProtectionError`] (a `403` [`ProtectionError::Refused`] when the terminal is not
    /// entitled to it).
    pub async fn fetch_tbk<T: UbTransport + Send>(
        &mut self,
        bsm: &mut T,
        creds: &NafCredentials,
        user_agent: &str,
        terminal_binding_key_id: u32,
        cnonce: &[u8; 16],
    ) -> Result<&Tbk, ProtectionError> {
        let body = serde_json::to_vec(&TbkRequestJson { terminal_binding_key_id }).map_err(|e| bad(e.to_string()))?;
        let response = ua_post(bsm, creds, user_agent, TBK_PATH, &body, cnonce).await?;
        let answer: TbkAnswerJson = serde_json::from_slice(&response.body).map_err(|e| bad(e.to_string()))?;
        if answer.terminal_binding_key_id != terminal_binding_key_id {
            return Err(bad("answer names another terminal_binding_key_id"));
        }
        let wrapped = b64::<24>("wrapped_tbk", &answer.wrapped_tbk)?;
        let raw = key_wrap::unwrap_16(&tbk_wrapping_key(&creds.srk), &wrapped).map_err(|_| ProtectionError::Unwrap)?;
        let tbk = Tbk::from_bytes(*raw);
        tracing::info!(btid = %creds.b_tid, terminal_binding_key_id, "terminal binding key received");
        Ok(self.insert_tbk(terminal_binding_key_id, tbk))
    }

    /// Keeps a TBK (e.g. restored from the terminal's protected store). Beyond [`MAX_TBKS`] the
    /// lowest ID goes.
    pub fn insert_tbk(&mut self, terminal_binding_key_id: u32, tbk: Tbk) -> &Tbk {
        if !self.tbks.contains_key(&terminal_binding_key_id) && self.tbks.len() >= MAX_TBKS {
            self.tbks.pop_first();
        }
        self.tbks.insert(terminal_binding_key_id, tbk);
        &self.tbks[&terminal_binding_key_id]
    }

    /// The TBK of an ID, if held.
    #[must_use]
    pub fn tbk(&self, terminal_binding_key_id: u32) -> Option<&Tbk> {
        self.tbks.get(&terminal_binding_key_id)
    }
}

/// The terminal_binding_key_id an LTKM names (its OMA BCAST extension's tbk_flag,
/// `profile: P-4`): the TBK to fetch ([`ProtectionState::fetch_tbk`]) for the key's STKMs with
/// protection_after_reception 2. Read from the LTKM's clear extension: call it for an LTKM the
/// card (or the GBA_ME store) accepted, whose MAC it checked. `None` for an LTKM without the flag
/// or that does not decode.
#[must_use]
pub fn ltkm_tbk_id(ltkm: &[u8]) -> Option<u32> {
    keycast_mikey::Ltkm::decode(ltkm).ok()?.ext()?.tbk_id
}

/// The terminal_binding_key_id an STKM names (protection_after_reception 2, `profile: P-6`), for
/// [`usable_tek_for`]; `None` when it names none or does not decode.
#[must_use]
pub fn stkm_tbk_id(stkm: &[u8]) -> Option<u32> {
    keycast_mikey::Stkm::decode(stkm).ok()?.ext()?.tbk_id
}

/// The TEK and salt of a card answer, usable by the media path (module docs): in the clear as
/// it is, unwrapped with K_sac when channel-wrapped (the salt is then always present: the card
/// wraps 14 zero octets for a download TEK), unwrapped with a held TBK when TBK-wrapped. RFC 3394's
/// integrity check tells which held TBK fits \[chosen: the [`TekOut`] does not name it\]; use
/// [`usable_tek_for`] when the STKM's terminal_binding_key_id is at hand.
///
/// # Errors
/// [`ProtectionError::NoChannel`], [`ProtectionError::NoTbk`], [`ProtectionError::Unwrap`].
pub fn usable_tek(state: &ProtectionState, tek: TekOut) -> Result<(Tek, Option<TekSalt>), ProtectionError> {
    match tek {
        TekOut::TbkWrapped { wrapped, salt } => state
            .tbks
            .values()
            .find_map(|tbk| key_wrap::unwrap_16(tbk.expose_secret(), &wrapped).ok())
            .map(|raw| (Tek::from_bytes(*raw), salt))
            .ok_or(ProtectionError::NoTbk),
        other => usable_tek_for(state, other, None),
    }
}

/// As [`usable_tek`], with the TBK named by `terminal_binding_key_id` (from the STKM's OMA BCAST
/// extension, `profile: P-6`).
///
/// # Errors
/// As [`usable_tek`].
pub fn usable_tek_for(
    state: &ProtectionState,
    tek: TekOut,
    terminal_binding_key_id: Option<u32>,
) -> Result<(Tek, Option<TekSalt>), ProtectionError> {
    match tek {
        TekOut::Clear { tek, salt } => Ok((tek, salt)),
        TekOut::ChannelWrapped(wrapped) => {
            let sac = state.sac.as_ref().ok_or(ProtectionError::NoChannel)?;
            let (tek, salt) = unwrap_channel_tek(&sac.k_sac, &wrapped).map_err(|_| ProtectionError::Unwrap)?;
            Ok((tek, Some(salt)))
        }
        TekOut::TbkWrapped { wrapped, salt } => {
            let Some(id) = terminal_binding_key_id else {
                return usable_tek(state, TekOut::TbkWrapped { wrapped, salt });
            };
            let tbk = state.tbks.get(&id).ok_or(ProtectionError::NoTbk)?;
            let raw = key_wrap::unwrap_16(tbk.expose_secret(), &wrapped).map_err(|_| ProtectionError::Unwrap)?;
            Ok((Tek::from_bytes(*raw), salt))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tbk_wrapped_teks_unwrap_with_the_held_tbk_only() {
        let mut state = ProtectionState::new();
        let tek = Tek::from_bytes([0x5c; 16]);
        let wrapped = key_wrap::wrap_16(&[0x77; 16], tek.expose_secret());
        let out = || TekOut::TbkWrapped { wrapped, salt: Some(TekSalt::from_bytes([0x5d; 14])) };
        assert!(matches!(usable_tek(&state, out()), Err(ProtectionError::NoTbk)));
        state.insert_tbk(8, Tbk::from_bytes([0x88; 16]));
        assert!(matches!(usable_tek(&state, out()), Err(ProtectionError::NoTbk)));
        assert!(matches!(usable_tek_for(&state, out(), Some(8)), Err(ProtectionError::Unwrap)));
        state.insert_tbk(7, Tbk::from_bytes([0x77; 16]));
        let (got, salt) = usable_tek(&state, out()).unwrap();
        assert_eq!(got, tek);
        assert_eq!(salt, Some(TekSalt::from_bytes([0x5d; 14])));
        assert_eq!(usable_tek_for(&state, out(), Some(7)).unwrap().0, tek);
    }

    #[test]
    fn channel_wrapped_teks_need_the_channel() {
        let state = ProtectionState::new();
        let out = TekOut::ChannelWrapped(Box::new([0; 40]));
        assert!(matches!(usable_tek(&state, out), Err(ProtectionError::NoChannel)));
        let clear = TekOut::Clear { tek: Tek::from_bytes([1; 16]), salt: None };
        assert_eq!(usable_tek(&state, clear).unwrap().0, Tek::from_bytes([1; 16]));
    }

    #[test]
    fn the_tbk_store_is_bounded() {
        let mut state = ProtectionState::new();
        for id in 0..u32::try_from(MAX_TBKS).unwrap() + 3 {
            state.insert_tbk(id, Tbk::from_bytes([1; 16]));
        }
        assert_eq!(state.tbks.len(), MAX_TBKS);
        assert!(state.tbk(0).is_none());
    }
}
