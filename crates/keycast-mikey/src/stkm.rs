//! STKM = MIKEY MTK message protected by the SEK/PEK: profile P-6, P-11; TS 33.246 §6.4.5.3.

use keycast_crypto::key_wrap;
use keycast_crypto::keys::{SekPek, Tbk, Tek, TekSalt};
use keycast_crypto::mikey::MessageKeys;
use zeroize::Zeroizing;

use crate::codec::EncodeError;
use crate::ext::{KeyDomainId, KeyIdExt, ProtectionAfterReception, SekPekId, StkmExt, TekId};
use crate::payload::{CsIdMap, Hdr, KeyData, KeyValidityData};
use crate::typed::{Collected, Kind, MikeyError, append_kemac, refuse, verify_trailing_mac};
use crate::wire::{CsIdMapType, DataType, ExtType, KeyDataType, PayloadType, TsType};

const NAME: &str = "STKM";

/// Length of a TEK wrapped by a TBK (RFC 3394 of 16 bytes; profile P-11.5).
pub const WRAPPED_TEK_LEN: usize = 24;

/// The TEK field of an STKM: in the clear (under the KEMAC encryption), or wrapped by a TBK when
/// protection_after_reception = 2 (profile P-6, P-11.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TekField {
    /// The TEK itself.
    Clear(Tek),
    /// AES key wrap of the TEK under the terminal binding key.
    WrappedByTbk([u8; WRAPPED_TEK_LEN]),
}

impl TekField {
    /// The TEK, unwrapping it with the TBK when it is wrapped.
    pub fn tek(&self, tbk: Option<&Tbk>) -> Result<Tek, MikeyError> {
        match (self, tbk) {
            (Self::Clear(tek), _) => Ok(tek.clone()),
            (Self::WrappedByTbk(wrapped), Some(tbk)) => {
                let raw = key_wrap::unwrap_16(tbk.expose_secret(), wrapped).map_err(|_| MikeyError::TbkUnwrap)?;
                Ok(Tek::from_bytes(*raw))
            }
            (Self::WrappedByTbk(_), None) => Err(MikeyError::TbkUnwrap),
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Self::Clear(tek) => &tek.expose_secret()[..],
            Self::WrappedByTbk(w) => &w[..],
        }
    }
}

/// Everything an STKM says, in the clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StkmContent {
    /// CSB ID (random per stream).
    pub csb_id: u32,
    /// Key Domain ID.
    pub key_domain_id: KeyDomainId,
    /// The protecting SEK/PEK.
    pub sek_pek_id: SekPekId,
    /// The delivered TEK's ID.
    pub tek_id: TekId,
    /// Timestamp: strictly increasing per SEK/PEK (NTP seconds in Keycast, P-6).
    pub ts: u32,
    /// OMA BCAST STKM extension.
    pub ext: Option<StkmExt>,
    /// The TEK.
    pub tek: TekField,
    /// The salt (streaming: key data type 3, 14 bytes); `None` for download (type 0 TGK).
    pub salt: Option<TekSalt>,
}

/// A decoded STKM whose key data is still sealed; its fields are not yet authenticated.
#[derive(Debug, Clone)]
pub struct Stkm<'a> {
    bytes: &'a [u8],
    csb_id: u32,
    key_domain_id: KeyDomainId,
    sek_pek_id: SekPekId,
    tek_id: TekId,
    ts: u32,
    ext: Option<StkmExt>,
    encr_data: &'a [u8],
    kemac_at: usize,
}

impl<'a> Stkm<'a> {
    /// Decodes an STKM and checks it against the profile (everything but the MAC and key data).
    pub fn decode(bytes: &'a [u8]) -> Result<Self, MikeyError> {
        let c = Collected::collect(bytes, Kind::Stkm)?;
        let hdr = &c.hdr;
        if hdr.data_type != DataType::PskInit || hdr.v {
            return Err(refuse(NAME, "HDR", 1, "data type must be 0 (pre-shared key) with V 0"));
        }
        if hdr.cs_count != 0 || hdr.map.map_type() != CsIdMapType::Empty {
            return Err(refuse(NAME, "HDR", 8, "#CS must be 0 with an empty map"));
        }
        let (ts, _) = c.require_t(Kind::Stkm)?;
        let (key_id, kid_at) = c.require_key_id(Kind::Stkm)?;
        let (Some(key_domain_id), Some(sek_pek_id), Some(tek_id)) =
            (key_id.key_domain_id, key_id.sek_pek_id, key_id.tek_id)
        else {
            return Err(refuse(NAME, "Key ID extension", kid_at, "must carry Key Domain ID, SEK/PEK ID and TEK ID"));
        };
        if sek_pek_id.key_group == 0 || sek_pek_id.key_number == 0 {
            return Err(refuse(NAME, "Key ID extension", kid_at, "Key Group 0 and Key Number 0 are not allowed"));
        }
        if tek_id == 0 || tek_id == 0xffff {
            return Err(refuse(NAME, "Key ID extension", kid_at, "TEK ID 0 and 0xFFFF are not allowed"));
        }
        let ext = c
            .bcast
            .map(|(body, at)| StkmExt::read(body, at))
            .transpose()
            .map_err(|source| MikeyError::Decode { message: NAME, source })?;
        let (kemac, kemac_at) = c.kemac.expect("collector guarantees a KEMAC");
        if kemac.encr_data.is_empty() {
            return Err(refuse(NAME, "KEMAC", kemac_at, "an STKM must carry a TEK"));
        }
        Ok(Self {
            bytes,
            csb_id: hdr.csb_id,
            key_domain_id,
            sek_pek_id,
            tek_id,
            ts,
            ext,
            encr_data: kemac.encr_data,
            kemac_at,
        })
    }

    /// The raw message.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
    /// CSB ID.
    pub fn csb_id(&self) -> u32 {
        self.csb_id
    }
    /// Key Domain ID.
    pub fn key_domain_id(&self) -> KeyDomainId {
        self.key_domain_id
    }
    /// SEK/PEK ID.
    pub fn sek_pek_id(&self) -> SekPekId {
        self.sek_pek_id
    }
    /// TEK ID.
    pub fn tek_id(&self) -> TekId {
        self.tek_id
    }
    /// Timestamp.
    pub fn ts(&self) -> u32 {
        self.ts
    }
    /// OMA BCAST STKM extension.
    pub fn ext(&self) -> Option<&StkmExt> {
        self.ext.as_ref()
    }

    /// Checks the MAC with the SEK/PEK and the RAND stored with it, then decrypts the TEK.
    pub fn open(&self, sek_pek: &SekPek, rand: &[u8]) -> Result<StkmContent, MikeyError> {
        self.open_with_keys(&MessageKeys::derive(sek_pek.expose_secret(), self.csb_id, rand))
    }

    /// [`Stkm::open`] with keys already derived (cache them per SEK/PEK and CSB ID).
    pub fn open_with_keys(&self, keys: &MessageKeys) -> Result<StkmContent, MikeyError> {
        verify_trailing_mac(self.bytes, keys, Kind::Stkm)?;
        let data_at = self.kemac_at + 4;
        let mut plain = Zeroizing::new([0u8; 64]);
        let plain = match plain.get_mut(..self.encr_data.len()) {
            Some(buf) => buf,
            None => return Err(refuse(NAME, "KEMAC", self.kemac_at, "key data longer than one TEK and salt")),
        };
        plain.copy_from_slice(self.encr_data);
        keys.apply_keystream(&keys.kemac_iv(self.csb_id, self.ts.into()), plain);
        let mut r = crate::codec::Reader::at(plain, data_at, "Key data");
        let (kd, more) = KeyData::read(&mut r).map_err(|source| MikeyError::Decode { message: NAME, source })?;
        if more || r.left() > 0 {
            return Err(refuse(NAME, "KEMAC", self.kemac_at, "exactly one key data sub-payload is required"));
        }
        if kd.kv != KeyValidityData::Null {
            return Err(refuse(NAME, "Key data", data_at, "KV type must be 0 (Null)"));
        }
        let salt = match (kd.key_type, kd.salt) {
            (KeyDataType::TekSalt, Some(salt)) if salt.len() == 14 => {
                Some(TekSalt::from_slice(salt).expect("length checked"))
            }
            (KeyDataType::Tgk, None) => None,
            _ => {
                return Err(refuse(
                    NAME,
                    "Key data",
                    data_at,
                    "type 3 (TEK+SALT, 14-byte salt) for streaming or 0 (TGK) for download",
                ));
            }
        };
        let wrapped =
            self.ext.as_ref().is_some_and(|e| e.protection_after_reception == ProtectionAfterReception::TerminalBound);
        let tek = match (wrapped, kd.key.len()) {
            (false, 16) => TekField::Clear(Tek::from_slice(kd.key).expect("length checked")),
            (true, WRAPPED_TEK_LEN) => {
                let mut w = [0u8; WRAPPED_TEK_LEN];
                w.copy_from_slice(kd.key);
                TekField::WrappedByTbk(w)
            }
            _ => {
                return Err(refuse(NAME, "Key data", data_at, "TEK is 16 bytes, or 24 when wrapped by a TBK (P-11.5)"));
            }
        };
        Ok(StkmContent {
            csb_id: self.csb_id,
            key_domain_id: self.key_domain_id,
            sek_pek_id: self.sek_pek_id,
            tek_id: self.tek_id,
            ts: self.ts,
            ext: self.ext.clone(),
            tek,
            salt,
        })
    }
}

impl StkmContent {
    /// The keys that protect this STKM (from the SEK/PEK, the CSB ID and the SEK/PEK's RAND).
    pub fn message_keys(&self, sek_pek: &SekPek, rand: &[u8]) -> MessageKeys {
        MessageKeys::derive(sek_pek.expose_secret(), self.csb_id, rand)
    }

    /// Builds, encrypts and MACs the STKM under the SEK/PEK.
    pub fn seal(&self, sek_pek: &SekPek, rand: &[u8]) -> Result<Vec<u8>, MikeyError> {
        self.seal_with_keys(&self.message_keys(sek_pek, rand))
    }

    /// [`StkmContent::seal`] with keys already derived.
    pub fn seal_with_keys(&self, keys: &MessageKeys) -> Result<Vec<u8>, MikeyError> {
        let encode_err = |source| MikeyError::Encode { message: NAME, source };
        let invalid = |field, why| encode_err(EncodeError::Invalid { field, why });
        if self.sek_pek_id.key_group == 0 || self.sek_pek_id.key_number == 0 {
            return Err(invalid("SEK/PEK ID", "Key Group and Key Number must be non-zero"));
        }
        if self.tek_id == 0 || self.tek_id == 0xffff {
            return Err(invalid("TEK ID", "TEK ID 0 and 0xFFFF are not allowed"));
        }
        let bound =
            self.ext.as_ref().is_some_and(|e| e.protection_after_reception == ProtectionAfterReception::TerminalBound);
        if bound != matches!(self.tek, TekField::WrappedByTbk(_)) {
            return Err(invalid("TEK", "the TEK is wrapped exactly when protection_after_reception is 2"));
        }
        let mut out = Vec::with_capacity(128);
        (|| {
            let hdr = Hdr {
                data_type: DataType::PskInit,
                v: false,
                prf: 0,
                csb_id: self.csb_id,
                cs_count: 0,
                map: CsIdMap::Empty,
            };
            hdr.encode(PayloadType::GeneralExt, &mut out)?;
            let key_id = KeyIdExt {
                key_domain_id: Some(self.key_domain_id),
                sek_pek_id: Some(self.sek_pek_id),
                tek_id: Some(self.tek_id),
            };
            out.extend_from_slice(&[PayloadType::T.into(), ExtType::KeyId.into()]);
            crate::codec::with_len_prefix(&mut out, 2, "Key ID", |out| {
                key_id.encode(out);
                Ok(())
            })?;
            let after_t = if self.ext.is_some() { PayloadType::GeneralExt } else { PayloadType::Kemac };
            out.extend_from_slice(&[after_t.into(), TsType::Counter.into()]);
            out.extend_from_slice(&self.ts.to_be_bytes());
            if let Some(ext) = &self.ext {
                out.extend_from_slice(&[PayloadType::Kemac.into(), ExtType::OmaBcast.into()]);
                crate::codec::with_len_prefix(&mut out, 2, "OMA BCAST", |out| ext.encode(out))?;
            }
            let kd = KeyData {
                key_type: if self.salt.is_some() { KeyDataType::TekSalt } else { KeyDataType::Tgk },
                key: self.tek.bytes(),
                salt: self.salt.as_ref().map(|s| &s.expose_secret()[..]),
                kv: KeyValidityData::Null,
            };
            let mut plain = Zeroizing::new(Vec::with_capacity(40));
            kd.encode(false, &mut plain)?;
            append_kemac(&mut out, keys, self.csb_id, self.ts, &mut plain)
        })()
        .map_err(encode_err)?;
        Ok(out)
    }
}
