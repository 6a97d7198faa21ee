//! LTKM = MIKEY MSK message protected by the SMK (= MUK): profile P-3, P-4, P-11; TS 33.246
//! §6.4.5.1. Also the solicited-pull trigger (P-11.6) and the key-validity update and
//! invalidation forms (P-11.7).

use keycast_crypto::keys::{SekPek, Smk};
use keycast_crypto::mikey::MessageKeys;
use zeroize::Zeroizing;

use crate::codec::{EncodeError, put_prefixed};
use crate::ext::{KeyDomainId, KeyIdExt, LtkmExt, SekPekId};
use crate::payload::{CsIdMap, Hdr, KeyData, KeyValidityData, SrtpCs, encode_srtp_map};
use crate::policy::SrtpPolicy;
use crate::typed::{Collected, Kind, MikeyError, append_kemac, refuse, verify_trailing_mac};
use crate::wire::{CsIdMapType, DataType, ExtType, IdType, KeyDataType, PayloadType, TsType};

const NAME: &str = "LTKM";

/// The validity of a SEK/PEK (KEMAC key data, KV type Interval; profile P-3, P-11.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyValidity {
    /// MBMS form: the TEK ID window SEQl < TEK ID ≤ SEQu (2-byte bounds).
    TekIdWindow {
        /// SEQl, the lower limit.
        seq_l: u16,
        /// SEQu, the upper limit (never 0xFFFF).
        seq_u: u16,
    },
    /// OMA BCAST form (security_policy_ext_flag = 1): the STKM timestamp window (4-byte bounds).
    TsWindow {
        /// TS low.
        ts_low: u32,
        /// TS high.
        ts_high: u32,
    },
}

impl KeyValidity {
    /// An LTKM whose lower bound is above its upper bound revokes the key (seed §6.4).
    pub fn is_invalidation(&self) -> bool {
        match *self {
            Self::TekIdWindow { seq_l, seq_u } => seq_l > seq_u,
            Self::TsWindow { ts_low, ts_high } => ts_low > ts_high,
        }
    }

    /// The form that revokes a key: lower bound above upper bound, in the key's own form.
    pub fn invalidation(ts_form: bool) -> Self {
        if ts_form { Self::TsWindow { ts_low: 1, ts_high: 0 } } else { Self::TekIdWindow { seq_l: 1, seq_u: 0 } }
    }

    fn bounds(&self) -> (Vec<u8>, Vec<u8>) {
        match *self {
            Self::TekIdWindow { seq_l, seq_u } => (seq_l.to_be_bytes().to_vec(), seq_u.to_be_bytes().to_vec()),
            Self::TsWindow { ts_low, ts_high } => (ts_low.to_be_bytes().to_vec(), ts_high.to_be_bytes().to_vec()),
        }
    }
}

/// Everything an LTKM says, in the clear: what the BSM seals and what the card gets from `open`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LtkmContent {
    /// CSB ID (random per SEK/PEK; enters key derivation).
    pub csb_id: u32,
    /// HDR V flag: the BSM wants a verification message.
    pub verification_requested: bool,
    /// Streaming form (#CS 1, SRTP-ID map with this entry) when `Some`; download form (#CS 0,
    /// empty map) when `None` (profile P-2, P-11.14).
    pub srtp_cs: Option<SrtpCs>,
    /// Key Domain ID.
    pub key_domain_id: KeyDomainId,
    /// The delivered SEK/PEK ID (Key Number ≠ 0).
    pub sek_pek_id: SekPekId,
    /// LTKM timestamp: the counter per terminal and SMK.
    pub ts: u32,
    /// RAND, the same for every terminal receiving this SEK/PEK.
    pub rand: [u8; 16],
    /// IDi: the BSM FQDN.
    pub idi: String,
    /// IDr: the B-TID.
    pub idr: String,
    /// SP payload (streaming only).
    pub srtp_policy: Option<SrtpPolicy>,
    /// OMA BCAST LTKM extension.
    pub ext: Option<LtkmExt>,
    /// The SEK/PEK; `None` for a key-validity update or an invalidation.
    pub key: Option<SekPek>,
    /// The key's validity window (TS form exactly when the extension carries a security policy).
    pub validity: KeyValidity,
}

/// The solicited-pull trigger (profile P-3, P-11.6): an LTKM with Key Number 0 and no key that
/// asks the terminal to send an LTKM Request for the current key of a Key Group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SolicitedPull {
    /// CSB ID.
    pub csb_id: u32,
    /// Key Domain ID.
    pub key_domain_id: KeyDomainId,
    /// The Key Group whose current key the terminal should request.
    pub key_group: u16,
    /// LTKM timestamp (shares the counter of the SMK).
    pub ts: u32,
    /// A fresh RAND.
    pub rand: [u8; 16],
    /// IDi: the BSM FQDN.
    pub idi: String,
    /// IDr: the B-TID.
    pub idr: String,
}

/// What an opened LTKM turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenedLtkm {
    /// A key delivery, key-validity update or invalidation.
    Key(LtkmContent),
    /// A solicited-pull trigger.
    SolicitedPull(SolicitedPull),
}

/// A decoded LTKM whose key data is still sealed. Its fields are read from the wire and not yet
/// authenticated: [`Ltkm::open`] checks the MAC.
#[derive(Debug, Clone)]
pub struct Ltkm<'a> {
    bytes: &'a [u8],
    c: Collected<'a>,
    ts: u32,
    rand: [u8; 16],
    key_id: KeyIdExt,
    sek_pek_id: SekPekId,
    ext: Option<LtkmExt>,
}

impl<'a> Ltkm<'a> {
    /// Decodes an LTKM and checks it against the profile (everything but the MAC and key data).
    pub fn decode(bytes: &'a [u8]) -> Result<Self, MikeyError> {
        let c = Collected::collect(bytes, Kind::Ltkm)?;
        let hdr = &c.hdr;
        if hdr.data_type != DataType::PskInit {
            return Err(refuse(NAME, "HDR", 1, "data type must be 0 (pre-shared key)"));
        }
        match (hdr.cs_count, hdr.map.map_type()) {
            (1, CsIdMapType::SrtpId) | (0, CsIdMapType::Empty) => {}
            _ => {
                return Err(refuse(
                    NAME,
                    "HDR",
                    8,
                    "#CS 1 with an SRTP-ID map (streaming) or #CS 0 with an empty map (download)",
                ));
            }
        }
        let streaming = hdr.cs_count == 1;
        let (ts, _) = c.require_t(Kind::Ltkm)?;
        let (rand, _) = c.rand.ok_or_else(|| refuse(NAME, "RAND", c.end, "missing"))?;
        if c.ids[1].is_none() {
            return Err(refuse(NAME, "ID", c.end, "IDi and IDr are both required"));
        }
        let (key_id, kid_at) = c.require_key_id(Kind::Ltkm)?;
        let (Some(_), Some(sek_pek_id), None) = (key_id.key_domain_id, key_id.sek_pek_id, key_id.tek_id) else {
            return Err(refuse(
                NAME,
                "Key ID extension",
                kid_at,
                "must carry a Key Domain ID and a SEK/PEK ID, and no TEK ID",
            ));
        };
        if sek_pek_id.key_group == 0 {
            return Err(refuse(NAME, "Key ID extension", kid_at, "Key Group 0 is not allowed"));
        }
        if let Some((_, at)) = c.sp
            && !streaming
        {
            return Err(refuse(NAME, "SP", at, "an SP payload belongs to streaming LTKMs only"));
        }
        let ext = c
            .bcast
            .map(|(body, at)| LtkmExt::read(body, at))
            .transpose()
            .map_err(|source| MikeyError::Decode { message: NAME, source })?;
        let (kemac, kemac_at) = c.kemac.clone().expect("collector guarantees a KEMAC");
        if sek_pek_id.key_number == 0 {
            // Key Number 0 appears only in a solicited pull (P-11.11), which has exactly this form.
            if !kemac.encr_data.is_empty() || hdr.v || streaming || c.sp.is_some() || ext.is_some() {
                return Err(refuse(
                    NAME,
                    "Key ID extension",
                    kid_at,
                    "Key Number 0 only in a solicited pull (no key, V 0, download form, no SP or extension)",
                ));
            }
        } else if kemac.encr_data.is_empty() {
            return Err(refuse(
                NAME,
                "KEMAC",
                kemac_at,
                "no key data: allowed only in a solicited pull (Key Number 0)",
            ));
        }
        let mut r16 = [0u8; 16];
        r16.copy_from_slice(rand);
        Ok(Self { bytes, ts, rand: r16, sek_pek_id, key_id, ext, c })
    }

    /// The raw message.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
    /// CSB ID.
    pub fn csb_id(&self) -> u32 {
        self.c.hdr.csb_id
    }
    /// HDR V flag.
    pub fn verification_requested(&self) -> bool {
        self.c.hdr.v
    }
    /// The SRTP-ID map entry of a streaming LTKM.
    pub fn srtp_cs(&self) -> Option<SrtpCs> {
        self.c.hdr.map.srtp_entries().next()
    }
    /// Key Domain ID.
    pub fn key_domain_id(&self) -> KeyDomainId {
        self.key_id.key_domain_id.expect("checked in decode")
    }
    /// SEK/PEK ID (Key Number 0 in a solicited pull).
    pub fn sek_pek_id(&self) -> SekPekId {
        self.sek_pek_id
    }
    /// Timestamp (counter).
    pub fn ts(&self) -> u32 {
        self.ts
    }
    /// RAND.
    pub fn rand(&self) -> &[u8; 16] {
        &self.rand
    }
    /// IDi (BSM FQDN).
    pub fn idi(&self) -> &'a str {
        self.c.ids[0].as_ref().expect("checked in decode").0
    }
    /// IDr (B-TID).
    pub fn idr(&self) -> &'a str {
        self.c.ids[1].as_ref().expect("checked in decode").0
    }
    /// The SRTP policy of the SP payload.
    pub fn srtp_policy(&self) -> Option<SrtpPolicy> {
        self.c.sp.as_ref().map(|(sp, _)| SrtpPolicy::from_sp(sp))
    }
    /// OMA BCAST LTKM extension.
    pub fn ext(&self) -> Option<LtkmExt> {
        self.ext
    }
    /// Whether this is a solicited-pull trigger (Key Number 0, no key data).
    pub fn is_solicited_pull(&self) -> bool {
        self.sek_pek_id.key_number == 0
    }

    /// The raw IDi, IDr and T payloads, as the verification MAC appends them (P-11.3).
    pub(crate) fn verification_suffix(&self) -> [&'a [u8]; 3] {
        let span = |r: &core::ops::Range<usize>| &self.bytes[r.clone()];
        [
            span(&self.c.ids[0].as_ref().expect("checked in decode").1),
            span(&self.c.ids[1].as_ref().expect("checked in decode").1),
            span(&self.c.t.as_ref().expect("checked in decode").1),
        ]
    }

    /// The keys that protect this LTKM, derived from the SMK, its CSB ID and RAND.
    pub fn message_keys(&self, smk: &Smk) -> MessageKeys {
        MessageKeys::derive(smk.expose_secret(), self.csb_id(), &self.rand)
    }

    /// Checks the MAC with the SMK, then decrypts and checks the key data.
    pub fn open(&self, smk: &Smk) -> Result<OpenedLtkm, MikeyError> {
        self.open_with_keys(&self.message_keys(smk))
    }

    /// [`Ltkm::open`] with keys already derived.
    pub fn open_with_keys(&self, keys: &MessageKeys) -> Result<OpenedLtkm, MikeyError> {
        verify_trailing_mac(self.bytes, keys, Kind::Ltkm)?;
        let base = LtkmContent {
            csb_id: self.csb_id(),
            verification_requested: self.verification_requested(),
            srtp_cs: self.srtp_cs(),
            key_domain_id: self.key_domain_id(),
            sek_pek_id: self.sek_pek_id,
            ts: self.ts,
            rand: self.rand,
            idi: self.idi().to_owned(),
            idr: self.idr().to_owned(),
            srtp_policy: self.srtp_policy(),
            ext: self.ext,
            key: None,
            validity: KeyValidity::TekIdWindow { seq_l: 0, seq_u: 0 },
        };
        if self.is_solicited_pull() {
            return Ok(OpenedLtkm::SolicitedPull(SolicitedPull {
                csb_id: base.csb_id,
                key_domain_id: base.key_domain_id,
                key_group: self.sek_pek_id.key_group,
                ts: base.ts,
                rand: base.rand,
                idi: base.idi,
                idr: base.idr,
            }));
        }
        let (kemac, kemac_at) = self.c.kemac.as_ref().expect("collector guarantees a KEMAC");
        // Encrypted data starts after next, encr alg and the 2-byte length.
        let data_at = kemac_at + 4;
        let mut plain = Zeroizing::new(kemac.encr_data.to_vec());
        keys.apply_keystream(&keys.kemac_iv(self.csb_id(), self.ts.into()), &mut plain);
        let all = KeyData::read_all(&plain, data_at).map_err(|source| MikeyError::Decode { message: NAME, source })?;
        let [kd] = all.as_slice() else {
            return Err(refuse(NAME, "KEMAC", *kemac_at, "exactly one key data sub-payload is required"));
        };
        if kd.key_type != KeyDataType::Tek || kd.salt.is_some() {
            return Err(refuse(NAME, "Key data", data_at, "key data type must be 2 (TEK) without salt"));
        }
        let key = match kd.key.len() {
            0 => None,
            16 => Some(SekPek::from_slice(kd.key).expect("length checked")),
            _ => return Err(refuse(NAME, "Key data", data_at, "a SEK/PEK is 16 bytes (or absent in an update)")),
        };
        let KeyValidityData::Interval { vf, vt } = kd.kv else {
            return Err(refuse(NAME, "Key data", data_at, "KV type must be 2 (interval)"));
        };
        let ts_form = self.ext.is_some_and(|e| e.security_policy.is_some());
        let validity = match (ts_form, vf, vt) {
            (true, &[a, b, c, d], &[e, f, g, h]) => KeyValidity::TsWindow {
                ts_low: u32::from_be_bytes([a, b, c, d]),
                ts_high: u32::from_be_bytes([e, f, g, h]),
            },
            (false, &[a, b], &[c, d]) => {
                KeyValidity::TekIdWindow { seq_l: u16::from_be_bytes([a, b]), seq_u: u16::from_be_bytes([c, d]) }
            }
            _ => {
                return Err(refuse(
                    NAME,
                    "Key data",
                    data_at,
                    "VF/VT are 4 bytes with a security policy extension, otherwise 2 (P-11.8)",
                ));
            }
        };
        if let KeyValidity::TekIdWindow { seq_u: 0xffff, .. } = validity {
            return Err(refuse(NAME, "Key data", data_at, "SEQu 0xFFFF is never used"));
        }
        Ok(OpenedLtkm::Key(LtkmContent { key, validity, ..base }))
    }
}

/// Writes HDR ‖ EXT(Key ID) ‖ T ‖ RAND ‖ IDi ‖ IDr for an LTKM (the canonical order of P-3);
/// the caller appends {SP} ‖ {EXT(OMA BCAST)} ‖ KEMAC, announced by `after_ids`.
#[allow(clippy::too_many_arguments)]
fn write_ltkm_head(
    out: &mut Vec<u8>,
    csb_id: u32,
    v: bool,
    srtp_cs: Option<SrtpCs>,
    key_id: KeyIdExt,
    ts: u32,
    rand: &[u8; 16],
    ids: [&str; 2],
    after_ids: PayloadType,
) -> Result<(), EncodeError> {
    let map_raw = srtp_cs.map(|cs| encode_srtp_map(&[cs])).unwrap_or_default();
    let hdr = Hdr {
        data_type: DataType::PskInit,
        v,
        prf: 0,
        csb_id,
        cs_count: u8::from(srtp_cs.is_some()),
        map: if srtp_cs.is_some() { CsIdMap::SrtpId(&map_raw) } else { CsIdMap::Empty },
    };
    hdr.encode(PayloadType::GeneralExt, out)?;
    out.extend_from_slice(&[PayloadType::T.into(), ExtType::KeyId.into()]);
    crate::codec::with_len_prefix(out, 2, "Key ID", |out| {
        key_id.encode(out);
        Ok(())
    })?;
    out.extend_from_slice(&[PayloadType::Rand.into(), TsType::Counter.into()]);
    out.extend_from_slice(&ts.to_be_bytes());
    out.push(PayloadType::Id.into());
    put_prefixed(out, 1, "RAND", rand)?;
    for (i, id) in ids.iter().enumerate() {
        out.push(if i == 0 { PayloadType::Id.into() } else { after_ids.into() });
        out.push(IdType::Nai.into());
        put_prefixed(out, 2, "ID data", id.as_bytes())?;
    }
    Ok(())
}

fn encode_err(source: EncodeError) -> MikeyError {
    MikeyError::Encode { message: NAME, source }
}

impl LtkmContent {
    /// The keys that protect this LTKM (from the SMK, the CSB ID and RAND).
    pub fn message_keys(&self, smk: &Smk) -> MessageKeys {
        MessageKeys::derive(smk.expose_secret(), self.csb_id, &self.rand)
    }

    /// Builds, encrypts and MACs the LTKM under the SMK.
    pub fn seal(&self, smk: &Smk) -> Result<Vec<u8>, MikeyError> {
        self.seal_with_keys(&self.message_keys(smk))
    }

    /// [`LtkmContent::seal`] with keys already derived.
    pub fn seal_with_keys(&self, keys: &MessageKeys) -> Result<Vec<u8>, MikeyError> {
        let invalid = |field, why| encode_err(EncodeError::Invalid { field, why });
        if self.sek_pek_id.key_group == 0 || self.sek_pek_id.key_number == 0 {
            return Err(invalid(
                "SEK/PEK ID",
                "Key Group and Key Number must be non-zero (Key Number 0: use SolicitedPull)",
            ));
        }
        let ts_form = self.ext.is_some_and(|e| e.security_policy.is_some());
        match self.validity {
            KeyValidity::TsWindow { .. } if !ts_form => {
                return Err(invalid("key validity", "a TS window needs the security policy extension"));
            }
            KeyValidity::TekIdWindow { .. } if ts_form => {
                return Err(invalid("key validity", "with a security policy extension the window is in TS"));
            }
            KeyValidity::TekIdWindow { seq_u: 0xffff, .. } => {
                return Err(invalid("key validity", "SEQu 0xFFFF is never used"));
            }
            _ => {}
        }
        if self.srtp_policy.is_some() && self.srtp_cs.is_none() {
            return Err(invalid("SP", "an SP payload belongs to streaming LTKMs only"));
        }
        let key_id =
            KeyIdExt { key_domain_id: Some(self.key_domain_id), sek_pek_id: Some(self.sek_pek_id), tek_id: None };
        let after_ids = match (&self.srtp_policy, &self.ext) {
            (Some(_), _) => PayloadType::Sp,
            (None, Some(_)) => PayloadType::GeneralExt,
            (None, None) => PayloadType::Kemac,
        };
        let mut out = Vec::with_capacity(160);
        (|| {
            write_ltkm_head(
                &mut out,
                self.csb_id,
                self.verification_requested,
                self.srtp_cs,
                key_id,
                self.ts,
                &self.rand,
                [&self.idi, &self.idr],
                after_ids,
            )?;
            if let Some(sp) = &self.srtp_policy {
                let next = if self.ext.is_some() { PayloadType::GeneralExt } else { PayloadType::Kemac };
                out.push(next.into());
                sp.encode_body(&mut out)?;
            }
            if let Some(ext) = &self.ext {
                out.extend_from_slice(&[PayloadType::Kemac.into(), ExtType::OmaBcast.into()]);
                crate::codec::with_len_prefix(&mut out, 2, "OMA BCAST", |out| {
                    ext.encode(out);
                    Ok(())
                })?;
            }
            let (vf, vt) = self.validity.bounds();
            let kd = KeyData {
                key_type: KeyDataType::Tek,
                key: self.key.as_ref().map_or(&[][..], |k| &k.expose_secret()[..]),
                salt: None,
                kv: KeyValidityData::Interval { vf: &vf, vt: &vt },
            };
            let mut plain = Zeroizing::new(Vec::with_capacity(32));
            kd.encode(false, &mut plain)?;
            append_kemac(&mut out, keys, self.csb_id, self.ts, &mut plain)
        })()
        .map_err(encode_err)?;
        Ok(out)
    }

    /// A key-validity update for a key the card holds (P-11.7): no key, new window; reuses the
    /// RAND and CSB ID of the delivering LTKM, which `self` is assumed to be.
    pub fn validity_update(&self, ts: u32, validity: KeyValidity) -> Self {
        Self { ts, key: None, validity, verification_requested: self.verification_requested, ..self.clone() }
    }

    /// An invalidation of this LTKM's key (lower bound above upper bound, no key; P-11.7).
    pub fn invalidation(&self, ts: u32) -> Self {
        let ts_form = matches!(self.validity, KeyValidity::TsWindow { .. });
        self.validity_update(ts, KeyValidity::invalidation(ts_form))
    }
}

impl SolicitedPull {
    /// Builds and MACs the trigger under the SMK (P-11.6; encrypted data length 0).
    pub fn seal(&self, smk: &Smk) -> Result<Vec<u8>, MikeyError> {
        if self.key_group == 0 {
            return Err(encode_err(EncodeError::Invalid { field: "Key Group", why: "Key Group 0 is not allowed" }));
        }
        let keys = MessageKeys::derive(smk.expose_secret(), self.csb_id, &self.rand);
        let key_id = KeyIdExt {
            key_domain_id: Some(self.key_domain_id),
            sek_pek_id: Some(SekPekId { key_group: self.key_group, key_number: 0 }),
            tek_id: None,
        };
        let mut out = Vec::with_capacity(128);
        (|| {
            write_ltkm_head(
                &mut out,
                self.csb_id,
                false,
                None,
                key_id,
                self.ts,
                &self.rand,
                [&self.idi, &self.idr],
                PayloadType::Kemac,
            )?;
            append_kemac(&mut out, &keys, self.csb_id, self.ts, &mut [])
        })()
        .map_err(encode_err)?;
        Ok(out)
    }
}
