//! The syntax layer: every RFC 3830 payload as a borrowed view over the message bytes, the
//! next-payload chain walker, and the encoders.
//!
//! Nothing here judges meaning (which payloads an LTKM needs, which algorithms are allowed); that
//! is the typed layer's job ([`crate::Ltkm`], [`crate::Stkm`]).

use core::ops::Range;

use crate::codec::{DecodeError, DecodeErrorKind, EncodeError, MAX_MESSAGE_LEN, MAX_PAYLOADS, Reader, put_prefixed};
use crate::wire::{
    CsIdMapType, DataType, DhGroup, EncrAlg, ErrorNo, ExtType, HashFunc, IdType, KeyDataType, KvType, MIKEY_VERSION,
    MacAlg, PayloadType, ProtType, TsType,
};

/// One crypto session of an SRTP-ID map (RFC 3830 §6.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SrtpCs {
    /// Security policy number (names an SP payload).
    pub policy_no: u8,
    /// SSRC of the stream (0 when the key is not tied to one stream, profile P-2).
    pub ssrc: u32,
    /// Rollover counter.
    pub roc: u32,
}

impl SrtpCs {
    /// Encoded size of one entry.
    pub const LEN: usize = 9;

    fn from_bytes(b: &[u8]) -> Self {
        Self {
            policy_no: b[0],
            ssrc: u32::from_be_bytes([b[1], b[2], b[3], b[4]]),
            roc: u32::from_be_bytes([b[5], b[6], b[7], b[8]]),
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.policy_no);
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        out.extend_from_slice(&self.roc.to_be_bytes());
    }
}

/// The CS ID map of HDR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CsIdMap<'a> {
    /// SRTP-ID map: `#CS` entries of 9 bytes each (raw, read with [`CsIdMap::srtp_entries`]).
    SrtpId(&'a [u8]),
    /// Empty map (RFC 4563 §5).
    Empty,
}

impl<'a> CsIdMap<'a> {
    /// The map type code.
    pub fn map_type(&self) -> CsIdMapType {
        match self {
            Self::SrtpId(_) => CsIdMapType::SrtpId,
            Self::Empty => CsIdMapType::Empty,
        }
    }

    /// The SRTP-ID entries (none for an empty map).
    pub fn srtp_entries(&self) -> impl Iterator<Item = SrtpCs> + 'a {
        let raw: &'a [u8] = match self {
            Self::SrtpId(raw) => raw,
            Self::Empty => &[],
        };
        raw.chunks_exact(SrtpCs::LEN).map(SrtpCs::from_bytes)
    }
}

/// The common header (RFC 3830 §6.1). Always first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hdr<'a> {
    /// Data type (message kind).
    pub data_type: DataType,
    /// V flag: the initiator wants a verification message.
    pub v: bool,
    /// PRF function (0 = MIKEY-1).
    pub prf: u8,
    /// Crypto session bundle ID.
    pub csb_id: u32,
    /// Number of crypto sessions.
    pub cs_count: u8,
    /// CS ID map.
    pub map: CsIdMap<'a>,
}

impl<'a> Hdr<'a> {
    /// Encoded length of a header with an empty map.
    pub const EMPTY_MAP_LEN: usize = 10;

    /// Reads a header; returns it with the type of the first payload.
    pub(crate) fn read(r: &mut Reader<'a>) -> Result<(Self, PayloadType), DecodeError> {
        r.enter("HDR");
        let version = r.u8("version")?;
        if version != MIKEY_VERSION {
            return Err(r.bad_value("version", version.into(), "only MIKEY version 1 exists"));
        }
        let data_type = DataType::from(r.u8("data type")?);
        let next = PayloadType::from(r.u8("next payload")?);
        let v_prf = r.u8("V / PRF func")?;
        let csb_id = r.u32("CSB ID")?;
        let cs_count = r.u8("#CS")?;
        let map_type = r.u8("CS ID map type")?;
        let map = match CsIdMapType::from(map_type) {
            CsIdMapType::SrtpId => CsIdMap::SrtpId(r.take(usize::from(cs_count) * SrtpCs::LEN, "CS ID map info")?),
            CsIdMapType::Empty => CsIdMap::Empty,
            _ => return Err(r.bad_value("CS ID map type", map_type.into(), "supported: 0 SRTP-ID, 1 empty map")),
        };
        Ok((Self { data_type, v: v_prf & 0x80 != 0, prf: v_prf & 0x7f, csb_id, cs_count, map }, next))
    }

    /// Appends the header, announcing `next` as the first payload.
    pub fn encode(&self, next: PayloadType, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if self.prf > 0x7f {
            return Err(EncodeError::Invalid { field: "PRF func", why: "PRF func is 7 bits" });
        }
        out.extend_from_slice(&[MIKEY_VERSION, self.data_type.into(), next.into(), (u8::from(self.v) << 7) | self.prf]);
        out.extend_from_slice(&self.csb_id.to_be_bytes());
        out.push(self.cs_count);
        out.push(self.map.map_type().into());
        if let CsIdMap::SrtpId(raw) = self.map {
            if raw.len() != usize::from(self.cs_count) * SrtpCs::LEN {
                return Err(EncodeError::Invalid {
                    field: "CS ID map info",
                    why: "SRTP-ID map needs 9 bytes per crypto session",
                });
            }
            out.extend_from_slice(raw);
        }
        Ok(())
    }
}

/// Appends SRTP-ID map entries in wire form (for building a [`CsIdMap::SrtpId`]).
pub fn encode_srtp_map(entries: &[SrtpCs]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * SrtpCs::LEN);
    entries.iter().for_each(|e| e.encode(&mut out));
    out
}

/// Key validity data of a key data sub-payload or DH payload (RFC 3830 §6.14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyValidityData<'a> {
    /// No validity data.
    Null,
    /// SPI / MKI.
    Spi(&'a [u8]),
    /// Validity interval: valid from, valid to (each with its own 1-byte length).
    Interval {
        /// Valid from.
        vf: &'a [u8],
        /// Valid to.
        vt: &'a [u8],
    },
}

impl<'a> KeyValidityData<'a> {
    /// The KV type code.
    pub fn kv_type(&self) -> KvType {
        match self {
            Self::Null => KvType::Null,
            Self::Spi(_) => KvType::SpiMki,
            Self::Interval { .. } => KvType::Interval,
        }
    }

    fn read(kv: u8, r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(match KvType::from(kv) {
            KvType::Null => Self::Null,
            KvType::SpiMki => {
                let len = r.u8("SPI length")?;
                Self::Spi(r.take(len.into(), "SPI")?)
            }
            KvType::Interval => {
                let len = r.u8("VF length")?;
                let vf = r.take(len.into(), "valid from")?;
                let len = r.u8("VT length")?;
                let vt = r.take(len.into(), "valid to")?;
                Self::Interval { vf, vt }
            }
            KvType::Unknown(_) => {
                return Err(r.bad_value("KV type", kv.into(), "known: 0 Null, 1 SPI/MKI, 2 Interval"));
            }
        })
    }

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            Self::Null => Ok(()),
            Self::Spi(spi) => put_prefixed(out, 1, "SPI", spi),
            Self::Interval { vf, vt } => {
                put_prefixed(out, 1, "valid from", vf)?;
                put_prefixed(out, 1, "valid to", vt)
            }
        }
    }
}

/// A key data sub-payload (RFC 3830 §6.13), found inside the (decrypted) KEMAC data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyData<'a> {
    /// Key type.
    pub key_type: KeyDataType,
    /// The key bytes.
    pub key: &'a [u8],
    /// The salt, present exactly for the `…+SALT` key types.
    pub salt: Option<&'a [u8]>,
    /// Key validity data.
    pub kv: KeyValidityData<'a>,
}

impl<'a> KeyData<'a> {
    /// Reads one sub-payload; returns it and whether another follows.
    pub(crate) fn read(r: &mut Reader<'a>) -> Result<(Self, bool), DecodeError> {
        r.enter("Key data");
        let next = r.u8("next payload")?;
        let more = match PayloadType::from(next) {
            PayloadType::Last => false,
            PayloadType::KeyData => true,
            _ => return Err(r.bad_value("next payload", next.into(), "inside KEMAC only 0 or 20 may follow")),
        };
        let type_kv = r.u8("type / KV")?;
        let key_type = KeyDataType::from(type_kv >> 4);
        if let KeyDataType::Unknown(t) = key_type {
            return Err(r.bad_value("type", t.into(), "known: 0 TGK, 1 TGK+SALT, 2 TEK, 3 TEK+SALT"));
        }
        let len = r.u16("key data length")?;
        let key = r.take(len.into(), "key data")?;
        let salt = if key_type.has_salt() {
            let len = r.u16("salt length")?;
            Some(r.take(len.into(), "salt data")?)
        } else {
            None
        };
        let kv = KeyValidityData::read(type_kv & 0x0f, r)?;
        Ok((Self { key_type, key, salt, kv }, more))
    }

    /// Appends the sub-payload; `more` says whether another key data sub-payload follows.
    pub fn encode(&self, more: bool, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if self.key_type.has_salt() != self.salt.is_some() {
            return Err(EncodeError::Invalid {
                field: "salt",
                why: "a salt is present exactly for TGK+SALT and TEK+SALT",
            });
        }
        let next = if more { PayloadType::KeyData } else { PayloadType::Last };
        let kt: u8 = self.key_type.into();
        let kv: u8 = self.kv.kv_type().into();
        if kt > 0x0f {
            return Err(EncodeError::Invalid { field: "type", why: "key data type is 4 bits" });
        }
        out.extend_from_slice(&[next.into(), (kt << 4) | kv]);
        put_prefixed(out, 2, "key data", self.key)?;
        if let Some(salt) = self.salt {
            put_prefixed(out, 2, "salt data", salt)?;
        }
        self.kv.encode(out)
    }

    /// Reads every key data sub-payload of a plaintext KEMAC body; `base` is its message offset.
    pub fn read_all(plain: &'a [u8], base: usize) -> Result<Vec<Self>, DecodeError> {
        let mut r = Reader::at(plain, base, "Key data");
        let mut all = Vec::new();
        loop {
            if all.len() == MAX_PAYLOADS {
                return Err(r.error("next payload", DecodeErrorKind::TooManyPayloads(MAX_PAYLOADS)));
            }
            let (kd, more) = Self::read(&mut r)?;
            all.push(kd);
            if !more {
                r.expect_empty("key data")?;
                return Ok(all);
            }
        }
    }
}

/// KEMAC payload (RFC 3830 §6.2): encrypted key data and the MAC over the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kemac<'a> {
    /// Encryption algorithm.
    pub encr_alg: EncrAlg,
    /// Encrypted key data sub-payloads (plain when `encr_alg` is NULL). May be empty.
    pub encr_data: &'a [u8],
    /// MAC algorithm.
    pub mac_alg: MacAlg,
    /// The MAC.
    pub mac: &'a [u8],
}

/// PKE payload (RFC 3830 §6.3): envelope key encrypted with a public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pke<'a> {
    /// Cache indicator (2 bits).
    pub c: u8,
    /// Encrypted envelope key (at most 16 383 bytes).
    pub data: &'a [u8],
}

/// DH payload (RFC 3830 §6.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dh<'a> {
    /// Group.
    pub group: DhGroup,
    /// Public value (its length follows from the group).
    pub value: &'a [u8],
    /// Key validity data.
    pub kv: KeyValidityData<'a>,
}

/// SIGN payload (RFC 3830 §6.5). Always last; has no next-payload field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sign<'a> {
    /// Signature type (4 bits).
    pub s_type: u8,
    /// Signature (at most 4095 bytes).
    pub signature: &'a [u8],
}

/// T payload (RFC 3830 §6.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp {
    /// Timestamp type.
    pub ts_type: TsType,
    /// The value, right-aligned (a COUNTER is the low 32 bits, as used for PRF and IV input).
    pub value: u64,
}

impl Timestamp {
    /// A 32-bit COUNTER timestamp (TS 33.246 §6.4.3).
    pub fn counter(value: u32) -> Self {
        Self { ts_type: TsType::Counter, value: value.into() }
    }
}

/// ID payload (RFC 3830 §6.7) or IDR payload (RFC 6043 §6.6, with `role`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Id<'a> {
    /// ID role, present in IDR payloads only.
    pub role: Option<u8>,
    /// ID type.
    pub id_type: IdType,
    /// ID data (UTF-8 text for NAI and URI).
    pub data: &'a [u8],
}

/// CERT payload (RFC 3830 §6.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cert<'a> {
    /// Certificate type.
    pub cert_type: u8,
    /// Certificate data.
    pub data: &'a [u8],
}

/// CHASH payload (RFC 3830 §6.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chash<'a> {
    /// Hash function.
    pub hash_func: HashFunc,
    /// Hash value.
    pub hash: &'a [u8],
}

/// V payload (RFC 3830 §6.9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification<'a> {
    /// Authentication algorithm.
    pub auth_alg: MacAlg,
    /// Verification data (the MAC).
    pub mac: &'a [u8],
}

/// SP payload (RFC 3830 §6.10). The parameters are checked for shape when read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sp<'a> {
    /// Policy number.
    pub policy_no: u8,
    /// Protocol type.
    pub prot_type: ProtType,
    /// Raw parameters: a sequence of `type (1) ‖ length (1) ‖ value`.
    pub params: &'a [u8],
}

impl<'a> Sp<'a> {
    /// The parameters as `(type, value)` pairs, in their order on the wire.
    pub fn params(&self) -> impl Iterator<Item = (u8, &'a [u8])> + 'a {
        let mut rest: &'a [u8] = self.params;
        core::iter::from_fn(move || {
            // Shape was checked in `read_params`; a short tail ends the walk instead of panicking.
            let (&ty, tail) = rest.split_first()?;
            let (&len, tail) = tail.split_first()?;
            let value = tail.get(..usize::from(len))?;
            rest = &tail[usize::from(len)..];
            Some((ty, value))
        })
    }

    /// The value of parameter `ty` (the first one, if repeated).
    pub fn param(&self, ty: u8) -> Option<&'a [u8]> {
        self.params().find(|(t, _)| *t == ty).map(|(_, v)| v)
    }

    fn check_params(r: &mut Reader<'a>) -> Result<(), DecodeError> {
        while r.left() > 0 {
            r.u8("policy param type")?;
            let len = r.u8("policy param length")?;
            r.take(len.into(), "policy param value")?;
        }
        Ok(())
    }
}

/// Appends SP parameters in wire form (for building an [`Sp`]).
pub fn encode_sp_params(params: &[(u8, &[u8])]) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    for (ty, value) in params {
        out.push(*ty);
        put_prefixed(&mut out, 1, "policy param value", value)?;
    }
    Ok(out)
}

/// ERR payload (RFC 3830 §6.12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrPayload {
    /// Error number.
    pub error_no: ErrorNo,
}

/// General Extension payload (RFC 3830 §6.15). Typed bodies: [`crate::KeyIdExt`] and, after
/// [`crate::split_oma_bcast`], [`crate::LtkmExt`] / [`crate::StkmExt`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneralExt<'a> {
    /// Extension type.
    pub ext_type: ExtType,
    /// Extension data.
    pub data: &'a [u8],
}

/// Any MIKEY payload after HDR.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Payload<'a> {
    /// KEMAC.
    Kemac(Kemac<'a>),
    /// PKE.
    Pke(Pke<'a>),
    /// DH.
    Dh(Dh<'a>),
    /// SIGN.
    Sign(Sign<'a>),
    /// T.
    T(Timestamp),
    /// ID (`role` is `None`) or IDR (`role` is `Some`).
    Id(Id<'a>),
    /// CERT.
    Cert(Cert<'a>),
    /// CHASH.
    Chash(Chash<'a>),
    /// V.
    V(Verification<'a>),
    /// SP.
    Sp(Sp<'a>),
    /// RAND.
    Rand(&'a [u8]),
    /// ERR.
    Err(ErrPayload),
    /// General Extension.
    GeneralExt(GeneralExt<'a>),
}

impl<'a> Payload<'a> {
    /// The payload type code that announces this payload.
    pub fn payload_type(&self) -> PayloadType {
        match self {
            Self::Kemac(_) => PayloadType::Kemac,
            Self::Pke(_) => PayloadType::Pke,
            Self::Dh(_) => PayloadType::Dh,
            Self::Sign(_) => PayloadType::Sign,
            Self::T(_) => PayloadType::T,
            Self::Id(id) if id.role.is_some() => PayloadType::Idr,
            Self::Id(_) => PayloadType::Id,
            Self::Cert(_) => PayloadType::Cert,
            Self::Chash(_) => PayloadType::Chash,
            Self::V(_) => PayloadType::V,
            Self::Sp(_) => PayloadType::Sp,
            Self::Rand(_) => PayloadType::Rand,
            Self::Err(_) => PayloadType::Err,
            Self::GeneralExt(_) => PayloadType::GeneralExt,
        }
    }

    /// Reads a payload of type `ty`; returns it and the type of the payload after it.
    #[inline]
    pub(crate) fn read(ty: PayloadType, r: &mut Reader<'a>) -> Result<(Self, PayloadType), DecodeError> {
        let name = ty.spec_name();
        r.enter(name);
        if matches!(ty, PayloadType::Last | PayloadType::KeyData | PayloadType::Unknown(_)) {
            return Err(r.error("next payload", DecodeErrorKind::UnknownPayload(ty.into())));
        }
        if ty == PayloadType::Sign {
            let head = r.u16("S type / signature len")?;
            let signature = r.take(usize::from(head & 0x0fff), "signature")?;
            return Ok((Self::Sign(Sign { s_type: (head >> 12) as u8, signature }), PayloadType::Last));
        }
        let next = PayloadType::from(r.u8("next payload")?);
        let payload = match ty {
            PayloadType::Kemac => {
                let encr_alg = EncrAlg::from(r.u8("encr alg")?);
                let len = r.u16("encr data len")?;
                let encr_data = r.take(len.into(), "encr data")?;
                let raw = r.u8("MAC alg")?;
                let mac_alg = MacAlg::from(raw);
                let mac_len = mac_alg
                    .mac_len()
                    .ok_or_else(|| r.bad_value("MAC alg", raw.into(), "known: 0 NULL, 1 HMAC-SHA-1-160"))?;
                let mac = r.take(mac_len, "MAC")?;
                Self::Kemac(Kemac { encr_alg, encr_data, mac_alg, mac })
            }
            PayloadType::Pke => {
                let head = r.u16("C / data len")?;
                let data = r.take(usize::from(head & 0x3fff), "data")?;
                Self::Pke(Pke { c: (head >> 14) as u8, data })
            }
            PayloadType::Dh => {
                let raw = r.u8("DH-Group")?;
                let group = DhGroup::from(raw);
                let len = group.value_len().ok_or_else(|| r.bad_value("DH-Group", raw.into(), "known: 0, 1, 2"))?;
                let value = r.take(len, "DH-value")?;
                let kv = r.u8("reserved / KV")?;
                if kv & 0xf0 != 0 {
                    return Err(r.bad_value("reserved", kv.into(), "reserved bits must be zero"));
                }
                Self::Dh(Dh { group, value, kv: KeyValidityData::read(kv, r)? })
            }
            PayloadType::T => {
                let raw = r.u8("TS type")?;
                let ts_type = TsType::from(raw);
                let len = ts_type.value_len().ok_or_else(|| r.bad_value("TS type", raw.into(), "known: 0, 1, 2, 3"))?;
                let bytes = r.take(len, "TS value")?;
                let value = bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
                Self::T(Timestamp { ts_type, value })
            }
            PayloadType::Id | PayloadType::Idr => {
                let role = if ty == PayloadType::Idr { Some(r.u8("ID role")?) } else { None };
                let id_type = IdType::from(r.u8("ID type")?);
                let len = r.u16("ID len")?;
                Self::Id(Id { role, id_type, data: r.take(len.into(), "ID data")? })
            }
            PayloadType::Cert => {
                let cert_type = r.u8("Cert type")?;
                let len = r.u16("Cert len")?;
                Self::Cert(Cert { cert_type, data: r.take(len.into(), "Cert data")? })
            }
            PayloadType::Chash => {
                let raw = r.u8("Hash func")?;
                let hash_func = HashFunc::from(raw);
                let len = match hash_func {
                    HashFunc::Sha1 => 20,
                    HashFunc::Md5 => 16,
                    _ => return Err(r.bad_value("Hash func", raw.into(), "known: 0 SHA-1, 1 MD5")),
                };
                Self::Chash(Chash { hash_func, hash: r.take(len, "Hash")? })
            }
            PayloadType::V => {
                let raw = r.u8("Auth alg")?;
                let auth_alg = MacAlg::from(raw);
                let len = auth_alg
                    .mac_len()
                    .ok_or_else(|| r.bad_value("Auth alg", raw.into(), "known: 0 NULL, 1 HMAC-SHA-1-160"))?;
                Self::V(Verification { auth_alg, mac: r.take(len, "Ver data")? })
            }
            PayloadType::Sp => {
                let policy_no = r.u8("Policy no")?;
                let prot_type = ProtType::from(r.u8("Prot type")?);
                let len = r.u16("Policy param length")?;
                let mut params = r.sub(len.into(), "Policy param")?;
                let raw = params.peek_rest();
                Sp::check_params(&mut params)?;
                Self::Sp(Sp { policy_no, prot_type, params: raw })
            }
            PayloadType::Rand => {
                let len = r.u8("RAND len")?;
                Self::Rand(r.take(len.into(), "RAND")?)
            }
            PayloadType::Err => {
                let error_no = ErrorNo::from(r.u8("Error no")?);
                r.take(2, "reserved")?;
                Self::Err(ErrPayload { error_no })
            }
            PayloadType::GeneralExt => {
                let ext_type = ExtType::from(r.u8("type")?);
                let len = r.u16("length")?;
                Self::GeneralExt(GeneralExt { ext_type, data: r.take(len.into(), "data")? })
            }
            // Checked on entry (SIGN returned early); kept as an error, not a panic.
            PayloadType::Last | PayloadType::Sign | PayloadType::KeyData | PayloadType::Unknown(_) => {
                return Err(r.error("next payload", DecodeErrorKind::UnknownPayload(ty.into())));
            }
        };
        Ok((payload, next))
    }

    /// Appends the payload, announcing `next` as the payload after it.
    pub fn encode(&self, next: PayloadType, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if let Self::Sign(s) = self {
            if next != PayloadType::Last {
                return Err(EncodeError::Invalid { field: "SIGN", why: "SIGN has no next payload and must be last" });
            }
            if s.s_type > 0x0f || s.signature.len() > 0x0fff {
                return Err(EncodeError::TooLong { field: "signature", len: s.signature.len(), max: 0x0fff });
            }
            out.extend_from_slice(&((u16::from(s.s_type) << 12) | s.signature.len() as u16).to_be_bytes());
            out.extend_from_slice(s.signature);
            return Ok(());
        }
        out.push(next.into());
        match self {
            Self::Kemac(k) => {
                if k.mac_alg.mac_len() != Some(k.mac.len()) {
                    return Err(EncodeError::Invalid {
                        field: "MAC",
                        why: "MAC length does not match the MAC algorithm",
                    });
                }
                out.push(k.encr_alg.into());
                put_prefixed(out, 2, "encr data", k.encr_data)?;
                out.push(k.mac_alg.into());
                out.extend_from_slice(k.mac);
            }
            Self::Pke(p) => {
                if p.c > 3 || p.data.len() > 0x3fff {
                    return Err(EncodeError::TooLong { field: "PKE data", len: p.data.len(), max: 0x3fff });
                }
                out.extend_from_slice(&((u16::from(p.c) << 14) | p.data.len() as u16).to_be_bytes());
                out.extend_from_slice(p.data);
            }
            Self::Dh(d) => {
                if d.group.value_len() != Some(d.value.len()) {
                    return Err(EncodeError::Invalid { field: "DH-value", why: "length does not match the DH group" });
                }
                out.push(d.group.into());
                out.extend_from_slice(d.value);
                out.push(d.kv.kv_type().into());
                d.kv.encode(out)?;
            }
            Self::T(t) => {
                let len =
                    t.ts_type.value_len().ok_or(EncodeError::Invalid { field: "TS type", why: "unknown TS type" })?;
                if len == 4 && t.value > u64::from(u32::MAX) {
                    return Err(EncodeError::Invalid {
                        field: "TS value",
                        why: "a 32-bit timestamp holds at most 2^32-1",
                    });
                }
                out.push(t.ts_type.into());
                out.extend_from_slice(&t.value.to_be_bytes()[8 - len..]);
            }
            Self::Id(id) => {
                if let Some(role) = id.role {
                    out.push(role);
                }
                out.push(id.id_type.into());
                put_prefixed(out, 2, "ID data", id.data)?;
            }
            Self::Cert(c) => {
                out.push(c.cert_type);
                put_prefixed(out, 2, "Cert data", c.data)?;
            }
            Self::Chash(c) => {
                out.push(c.hash_func.into());
                out.extend_from_slice(c.hash);
            }
            Self::V(v) => {
                out.push(v.auth_alg.into());
                out.extend_from_slice(v.mac);
            }
            Self::Sp(sp) => {
                out.extend_from_slice(&[sp.policy_no, sp.prot_type.into()]);
                put_prefixed(out, 2, "Policy param", sp.params)?;
            }
            Self::Rand(rand) => put_prefixed(out, 1, "RAND", rand)?,
            Self::Err(e) => out.extend_from_slice(&[e.error_no.into(), 0, 0]),
            Self::GeneralExt(g) => {
                out.push(g.ext_type.into());
                put_prefixed(out, 2, "data", g.data)?;
            }
            Self::Sign(_) => unreachable!("handled above"),
        }
        Ok(())
    }
}

/// A payload with where it sits in the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located<'a> {
    /// The payload.
    pub payload: Payload<'a>,
    /// Byte range in the message, starting at the payload's own first byte (its next-payload
    /// field).
    pub span: Range<usize>,
}

/// Walks the next-payload chain after HDR without allocating.
///
/// Yields each payload with its span; after the last one it checks that no bytes trail. Every
/// payload consumes at least one byte, so the walk ends.
#[derive(Debug, Clone)]
pub struct PayloadIter<'a> {
    r: Reader<'a>,
    next: PayloadType,
    count: usize,
    done: bool,
}

impl<'a> PayloadIter<'a> {
    /// Reads HDR from `msg` and returns it with an iterator over the payloads that follow.
    pub fn new(msg: &'a [u8]) -> Result<(Hdr<'a>, Self), DecodeError> {
        let mut r = Reader::new(msg, "HDR");
        if msg.len() > MAX_MESSAGE_LEN {
            return Err(r.error("message", DecodeErrorKind::Oversize { len: msg.len(), max: MAX_MESSAGE_LEN }));
        }
        let (hdr, next) = Hdr::read(&mut r)?;
        Ok((hdr, Self { r, next, count: 0, done: false }))
    }

    #[inline]
    fn step(&mut self) -> Result<Option<Located<'a>>, DecodeError> {
        if self.next == PayloadType::Last {
            self.done = true;
            self.r.expect_empty("after last payload")?;
            return Ok(None);
        }
        if self.count == MAX_PAYLOADS {
            return Err(self.r.error("next payload", DecodeErrorKind::TooManyPayloads(MAX_PAYLOADS)));
        }
        self.count += 1;
        let start = self.r.offset();
        let (payload, next) = Payload::read(self.next, &mut self.r)?;
        self.next = next;
        Ok(Some(Located { payload, span: start..self.r.offset() }))
    }
}

impl<'a> Iterator for PayloadIter<'a> {
    type Item = Result<Located<'a>, DecodeError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.step();
        if item.is_err() {
            self.done = true;
        }
        item.transpose()
    }
}

/// A whole MIKEY message at the syntax level: HDR and every payload in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    /// The common header.
    pub hdr: Hdr<'a>,
    /// The payloads after HDR, in wire order.
    pub payloads: Vec<Located<'a>>,
}

impl<'a> Message<'a> {
    /// Decodes a message, refusing trailing bytes.
    pub fn decode(msg: &'a [u8]) -> Result<Self, DecodeError> {
        let (hdr, iter) = PayloadIter::new(msg)?;
        let payloads = iter.collect::<Result<Vec<_>, _>>()?;
        Ok(Self { hdr, payloads })
    }

    /// Encodes the message (spans are ignored; the chain is rebuilt from the payload order).
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let types: Vec<PayloadType> = self.payloads.iter().map(|p| p.payload.payload_type()).collect();
        let mut out = Vec::with_capacity(128);
        self.hdr.encode(types.first().copied().unwrap_or(PayloadType::Last), &mut out)?;
        for (i, p) in self.payloads.iter().enumerate() {
            p.payload.encode(types.get(i + 1).copied().unwrap_or(PayloadType::Last), &mut out)?;
        }
        Ok(out)
    }
}
