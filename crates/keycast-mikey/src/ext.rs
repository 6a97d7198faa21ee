//! Identifiers (profile P-1), the RFC 4563 Key ID extension and the OMA BCAST extension bodies
//! (RFC 5410; bodies: profile P-4 and P-6).

use core::fmt;

use crate::codec::{DecodeError, EncodeError, Reader};
use crate::wire::{KeyIdType, OmaBcastSubtype};

/// MBMS Key Domain ID: MCC ‖ MNC in 3 bytes, packed like a PLMN ID (profile P-1, P-11.12).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyDomainId(pub [u8; 3]);

impl KeyDomainId {
    /// Packs MCC and MNC (digits as text, MCC 3 digits, MNC 2 or 3) in TS 24.008 PLMN order:
    /// MCC2|MCC1, MNC3|MCC3, MNC2|MNC1, with MNC3 = F for a two-digit MNC (profile P-11.12).
    pub fn from_mcc_mnc(mcc: &str, mnc: &str) -> Option<Self> {
        let digit = |c: u8| c.is_ascii_digit().then(|| c - b'0');
        let m: Vec<u8> = mcc.bytes().map(digit).collect::<Option<_>>()?;
        let n: Vec<u8> = mnc.bytes().map(digit).collect::<Option<_>>()?;
        if m.len() != 3 || !(n.len() == 2 || n.len() == 3) {
            return None;
        }
        let mnc3 = if n.len() == 3 { n[2] } else { 0x0f };
        Some(Self([(m[1] << 4) | m[0], (mnc3 << 4) | m[2], (n[1] << 4) | n[0]]))
    }

    /// MCC and MNC as text, when the bytes are valid BCD.
    pub fn mcc_mnc(&self) -> Option<(String, String)> {
        let [a, b, c] = self.0;
        let d = [a & 0x0f, a >> 4, b & 0x0f, c & 0x0f, c >> 4, b >> 4];
        let ok = |x: u8| x <= 9;
        if !d[..5].iter().all(|x| ok(*x)) || !(ok(d[5]) || d[5] == 0x0f) {
            return None;
        }
        let s = |ds: &[u8]| ds.iter().map(|x| char::from(b'0' + x)).collect::<String>();
        let mnc = if d[5] == 0x0f { s(&d[3..5]) } else { s(&d[3..6]) };
        Some((s(&d[..3]), mnc))
    }
}

impl fmt::Debug for KeyDomainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.mcc_mnc() {
            Some((mcc, mnc)) => {
                write!(f, "KeyDomainId({:02x}{:02x}{:02x}: MCC {mcc}, MNC {mnc})", self.0[0], self.0[1], self.0[2])
            }
            None => write!(f, "KeyDomainId({:02x}{:02x}{:02x})", self.0[0], self.0[1], self.0[2]),
        }
    }
}

/// SEK/PEK ID = MBMS MSK ID: Key Group (2) ‖ Key Number (2) (profile P-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SekPekId {
    /// Key Group (never 0).
    pub key_group: u16,
    /// Key Number (0 = "the current key", only in a solicited pull).
    pub key_number: u16,
}

impl SekPekId {
    /// The 4 wire bytes.
    pub fn to_bytes(self) -> [u8; 4] {
        let g = self.key_group.to_be_bytes();
        let n = self.key_number.to_be_bytes();
        [g[0], g[1], n[0], n[1]]
    }

    /// From the 4 wire bytes.
    pub fn from_bytes(b: [u8; 4]) -> Self {
        Self { key_group: u16::from_be_bytes([b[0], b[1]]), key_number: u16::from_be_bytes([b[2], b[3]]) }
    }
}

/// TEK ID = MBMS MTK ID (profile P-1): 2 bytes, first > 0, never 0xFFFF.
pub type TekId = u16;

/// The Key ID General Extension (type 3; RFC 4563 §4, TS 33.246 §6.4.4).
///
/// Entries are written in the order Key Domain ID, SEK/PEK ID, TEK ID; readers accept any order,
/// refuse duplicates and wrong lengths, and skip unknown Key ID types (profile P-11.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyIdExt {
    /// Key Domain ID.
    pub key_domain_id: Option<KeyDomainId>,
    /// SEK/PEK ID (MSK ID).
    pub sek_pek_id: Option<SekPekId>,
    /// TEK ID (MTK ID).
    pub tek_id: Option<TekId>,
}

impl KeyIdExt {
    /// Reads the extension data; `base` is its offset in the message.
    #[inline]
    pub fn read(data: &[u8], base: usize) -> Result<Self, DecodeError> {
        let mut r = Reader::at(data, base, "Key ID extension");
        let mut ext = Self::default();
        while r.left() > 0 {
            let at = r.clone();
            let raw = r.u8("Key ID Type")?;
            let len = r.u8("Key ID Length")?;
            let value = r.take(len.into(), "Key ID")?;
            let want = match KeyIdType::from(raw) {
                KeyIdType::KeyDomainId => 3,
                KeyIdType::MskId => 4,
                KeyIdType::MtkId => 2,
                _ => continue,
            };
            if value.len() != want {
                return Err(at.error(
                    "Key ID Length",
                    crate::DecodeErrorKind::BadLength { len: value.len(), why: "Key Domain ID 3, MSK ID 4, MTK ID 2" },
                ));
            }
            let dup = match KeyIdType::from(raw) {
                KeyIdType::KeyDomainId => {
                    ext.key_domain_id.replace(KeyDomainId([value[0], value[1], value[2]])).is_some()
                }
                KeyIdType::MskId => {
                    ext.sek_pek_id.replace(SekPekId::from_bytes([value[0], value[1], value[2], value[3]])).is_some()
                }
                _ => ext.tek_id.replace(u16::from_be_bytes([value[0], value[1]])).is_some(),
            };
            if dup {
                return Err(at.error(
                    "Key ID Type",
                    crate::DecodeErrorKind::BadValue { value: raw.into(), why: "each Key ID type may appear once" },
                ));
            }
        }
        Ok(ext)
    }

    /// Encodes the extension data.
    pub fn encode(&self, out: &mut Vec<u8>) {
        if let Some(kd) = self.key_domain_id {
            out.extend_from_slice(&[KeyIdType::KeyDomainId.into(), 3]);
            out.extend_from_slice(&kd.0);
        }
        if let Some(id) = self.sek_pek_id {
            out.extend_from_slice(&[KeyIdType::MskId.into(), 4]);
            out.extend_from_slice(&id.to_bytes());
        }
        if let Some(id) = self.tek_id {
            out.extend_from_slice(&[KeyIdType::MtkId.into(), 2]);
            out.extend_from_slice(&id.to_be_bytes());
        }
    }
}

/// Splits OMA BCAST extension data into subtype and body (RFC 5410 §3).
pub fn split_oma_bcast(data: &[u8], base: usize) -> Result<(OmaBcastSubtype, &[u8]), DecodeError> {
    let mut r = Reader::at(data, base, "OMA BCAST extension");
    let subtype = OmaBcastSubtype::from(r.u8("subtype")?);
    Ok((subtype, r.peek_rest()))
}

/// Security policy extension codes (profile P-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SecurityPolicy {
    /// 0x00 SEK/PEK pay-per-time.
    PayPerTime,
    /// 0x01 pay-per-time with play-back.
    PayPerTimeWithPlayBack,
    /// 0x02 SEK/PEK pay-per-view.
    PayPerView,
    /// 0x03 pay-per-view with play-back.
    PayPerViewWithPlayBack,
    /// 0x04 user pay-per-view (tokens).
    UserPayPerView,
    /// 0x05 unlimited within the validity window.
    UnlimitedWithinWindow,
}

impl SecurityPolicy {
    /// The wire code.
    pub fn code(self) -> u8 {
        match self {
            Self::PayPerTime => 0,
            Self::PayPerTimeWithPlayBack => 1,
            Self::PayPerView => 2,
            Self::PayPerViewWithPlayBack => 3,
            Self::UserPayPerView => 4,
            Self::UnlimitedWithinWindow => 5,
        }
    }

    /// From the wire code; codes above 0x05 are refused (profile P-11.10).
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::PayPerTime,
            1 => Self::PayPerTimeWithPlayBack,
            2 => Self::PayPerView,
            3 => Self::PayPerViewWithPlayBack,
            4 => Self::UserPayPerView,
            5 => Self::UnlimitedWithinWindow,
            _ => return None,
        })
    }
}

/// The security policy part of the LTKM extension (profile P-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecurityPolicyExt {
    /// security_policy_extension.
    pub policy: SecurityPolicy,
    /// play_back_counter: play-backs authorised.
    pub play_back_counter: u16,
    /// view_counter: views authorised (user PPV).
    pub view_counter: u16,
}

/// OMA BCAST LTKM extension body, subtype 1 (profile P-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct LtkmExt {
    /// Present exactly when security_policy_ext_flag = 1.
    pub security_policy: Option<SecurityPolicyExt>,
    /// terminal_binding_key_id, present exactly when tbk_flag = 1.
    pub tbk_id: Option<u32>,
    /// consumption_reporting_flag.
    pub consumption_reporting: bool,
}

const LTKM_FLAG_SPE: u8 = 0x80;
const LTKM_FLAG_TBK: u8 = 0x40;
const LTKM_FLAG_REPORTING: u8 = 0x20;

impl LtkmExt {
    /// Reads the body (after the subtype byte); `base` is its offset in the message.
    pub fn read(body: &[u8], base: usize) -> Result<Self, DecodeError> {
        let mut r = Reader::at(body, base, "OMA BCAST LTKM extension");
        let flags = r.u8("flags")?;
        if flags & 0x1f != 0 {
            return Err(r.bad_value("flags", flags.into(), "reserved bits 4..0 must be zero"));
        }
        let security_policy = if flags & LTKM_FLAG_SPE != 0 {
            let code = r.u8("security_policy_extension")?;
            let policy = SecurityPolicy::from_code(code)
                .ok_or_else(|| r.bad_value("security_policy_extension", code.into(), "codes 0x00..=0x05"))?;
            let play_back_counter = r.u16("play_back_counter")?;
            let view_counter = r.u16("view_counter")?;
            Some(SecurityPolicyExt { policy, play_back_counter, view_counter })
        } else {
            None
        };
        let tbk_id = if flags & LTKM_FLAG_TBK != 0 { Some(r.u32("terminal_binding_key_id")?) } else { None };
        r.expect_empty("end of body")?;
        Ok(Self { security_policy, tbk_id, consumption_reporting: flags & LTKM_FLAG_REPORTING != 0 })
    }

    /// Encodes subtype and body.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(OmaBcastSubtype::Ltkm.into());
        let mut flags = 0;
        if self.security_policy.is_some() {
            flags |= LTKM_FLAG_SPE;
        }
        if self.tbk_id.is_some() {
            flags |= LTKM_FLAG_TBK;
        }
        if self.consumption_reporting {
            flags |= LTKM_FLAG_REPORTING;
        }
        out.push(flags);
        if let Some(spe) = self.security_policy {
            out.push(spe.policy.code());
            out.extend_from_slice(&spe.play_back_counter.to_be_bytes());
            out.extend_from_slice(&spe.view_counter.to_be_bytes());
        }
        if let Some(id) = self.tbk_id {
            out.extend_from_slice(&id.to_be_bytes());
        }
    }
}

/// protection_after_reception (profile P-6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtectionAfterReception {
    /// 0: content protection; may be recorded (kept encrypted).
    MayRecord,
    /// 1: content protection; must not be recorded.
    MustNotRecord,
    /// 2: content protection; recording bound to this terminal (TEK wrapped by a TBK).
    TerminalBound,
    /// 3: service protection only; may be stored in the clear after reception.
    ServiceProtectionOnly,
}

impl ProtectionAfterReception {
    fn from_bits(b: u8) -> Self {
        match b & 3 {
            0 => Self::MayRecord,
            1 => Self::MustNotRecord,
            2 => Self::TerminalBound,
            _ => Self::ServiceProtectionOnly,
        }
    }

    /// The 2-bit wire code.
    pub fn code(self) -> u8 {
        match self {
            Self::MayRecord => 0,
            Self::MustNotRecord => 1,
            Self::TerminalBound => 2,
            Self::ServiceProtectionOnly => 3,
        }
    }
}

/// traffic_protection_protocol (profile P-6; Service Guide EncryptionType values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrafficProtectionProtocol {
    /// 0: IPsec ESP.
    IpsecEsp,
    /// 1: SRTP.
    Srtp,
    /// 2: ISMACryp.
    IsmaCryp,
    /// 3: OMA DRM DCF.
    Dcf,
}

impl TrafficProtectionProtocol {
    /// The 3-bit wire code.
    pub fn code(self) -> u8 {
        match self {
            Self::IpsecEsp => 0,
            Self::Srtp => 1,
            Self::IsmaCryp => 2,
            Self::Dcf => 3,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::IpsecEsp,
            1 => Self::Srtp,
            2 => Self::IsmaCryp,
            3 => Self::Dcf,
            _ => return None,
        })
    }
}

/// Access criteria descriptor of the STKM extension (profile P-6).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AccessDescriptor {
    /// Tag 1: parental rating.
    ParentalRating {
        /// Rating system.
        system: u8,
        /// Minimum age.
        min_age: u8,
    },
    /// Tag 2: program ID (for PPV rights).
    ProgramId(u32),
    /// Another tag, kept and skipped.
    Unknown {
        /// Tag.
        tag: u8,
        /// Value.
        value: Vec<u8>,
    },
}

const DESCRIPTOR_PARENTAL_RATING: u8 = 1;
const DESCRIPTOR_PROGRAM_ID: u8 = 2;

/// OMA BCAST STKM extension body, subtype 2 (profile P-6).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StkmExt {
    /// protection_after_reception.
    pub protection_after_reception: ProtectionAfterReception,
    /// traffic_protection_protocol.
    pub traffic_protection_protocol: TrafficProtectionProtocol,
    /// traffic_authentication_flag: SRTP tag / ESP ICV present.
    pub traffic_authentication: bool,
    /// terminal_binding_key_id, present exactly when protection_after_reception = 2.
    pub tbk_id: Option<u32>,
    /// Access criteria descriptors, present exactly when access_criteria_flag = 1.
    pub access_criteria: Option<Vec<AccessDescriptor>>,
}

impl StkmExt {
    /// The program ID among the access criteria, if any.
    pub fn program_id(&self) -> Option<u32> {
        self.access_criteria.iter().flatten().find_map(|d| match d {
            AccessDescriptor::ProgramId(id) => Some(*id),
            _ => None,
        })
    }

    /// The parental rating among the access criteria, if any.
    pub fn parental_rating(&self) -> Option<(u8, u8)> {
        self.access_criteria.iter().flatten().find_map(|d| match d {
            AccessDescriptor::ParentalRating { system, min_age } => Some((*system, *min_age)),
            _ => None,
        })
    }

    /// Reads the body (after the subtype byte); `base` is its offset in the message.
    pub fn read(body: &[u8], base: usize) -> Result<Self, DecodeError> {
        let mut r = Reader::at(body, base, "OMA BCAST STKM extension");
        let b = r.u8("flags")?;
        if b & 1 != 0 {
            return Err(r.bad_value("flags", b.into(), "reserved bit 0 must be zero"));
        }
        let protection_after_reception = ProtectionAfterReception::from_bits(b >> 6);
        let tpp = (b >> 2) & 7;
        let traffic_protection_protocol = TrafficProtectionProtocol::from_code(tpp)
            .ok_or_else(|| r.bad_value("traffic_protection_protocol", tpp.into(), "codes 0..=3"))?;
        let tbk_id = if protection_after_reception == ProtectionAfterReception::TerminalBound {
            Some(r.u32("terminal_binding_key_id")?)
        } else {
            None
        };
        let access_criteria = if b & 0x20 != 0 {
            let n = r.u8("number of descriptors")?;
            let mut all = Vec::with_capacity(n.into());
            for _ in 0..n {
                let at = r.clone();
                let tag = r.u8("descriptor tag")?;
                let len = r.u8("descriptor length")?;
                let value = r.take(len.into(), "descriptor value")?;
                let bad_len =
                    |why| at.error("descriptor length", crate::DecodeErrorKind::BadLength { len: value.len(), why });
                all.push(match tag {
                    DESCRIPTOR_PARENTAL_RATING => match value {
                        [system, min_age] => AccessDescriptor::ParentalRating { system: *system, min_age: *min_age },
                        _ => return Err(bad_len("parental rating is 2 bytes")),
                    },
                    DESCRIPTOR_PROGRAM_ID => match value {
                        [a, b, c, d] => AccessDescriptor::ProgramId(u32::from_be_bytes([*a, *b, *c, *d])),
                        _ => return Err(bad_len("program ID is 4 bytes")),
                    },
                    _ => AccessDescriptor::Unknown { tag, value: value.to_vec() },
                });
            }
            Some(all)
        } else {
            None
        };
        r.expect_empty("end of body")?;
        Ok(Self {
            protection_after_reception,
            traffic_protection_protocol,
            traffic_authentication: b & 2 != 0,
            tbk_id,
            access_criteria,
        })
    }

    /// Encodes subtype and body.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if (self.protection_after_reception == ProtectionAfterReception::TerminalBound) != self.tbk_id.is_some() {
            return Err(EncodeError::Invalid {
                field: "terminal_binding_key_id",
                why: "present exactly when protection_after_reception is 2",
            });
        }
        out.push(OmaBcastSubtype::Stkm.into());
        let mut b = (self.protection_after_reception.code() << 6) | (self.traffic_protection_protocol.code() << 2);
        if self.access_criteria.is_some() {
            b |= 0x20;
        }
        if self.traffic_authentication {
            b |= 2;
        }
        out.push(b);
        if let Some(id) = self.tbk_id {
            out.extend_from_slice(&id.to_be_bytes());
        }
        if let Some(all) = &self.access_criteria {
            let n = u8::try_from(all.len()).map_err(|_| EncodeError::TooLong {
                field: "descriptors",
                len: all.len(),
                max: 255,
            })?;
            out.push(n);
            for d in all {
                match d {
                    AccessDescriptor::ParentalRating { system, min_age } => {
                        out.extend_from_slice(&[DESCRIPTOR_PARENTAL_RATING, 2, *system, *min_age])
                    }
                    AccessDescriptor::ProgramId(id) => {
                        out.extend_from_slice(&[DESCRIPTOR_PROGRAM_ID, 4]);
                        out.extend_from_slice(&id.to_be_bytes());
                    }
                    AccessDescriptor::Unknown { tag, value } => {
                        if matches!(*tag, DESCRIPTOR_PARENTAL_RATING | DESCRIPTOR_PROGRAM_ID) {
                            return Err(EncodeError::Invalid {
                                field: "descriptor tag",
                                why: "tags 1 and 2 have typed forms",
                            });
                        }
                        out.push(*tag);
                        crate::codec::put_prefixed(out, 1, "descriptor value", value)?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_domain_id_packing_matches_profile_example() {
        let kd = KeyDomainId::from_mcc_mnc("001", "01").unwrap();
        assert_eq!(kd.0, [0x00, 0xf1, 0x10]);
        assert_eq!(kd.mcc_mnc(), Some(("001".into(), "01".into())));
        let kd = KeyDomainId::from_mcc_mnc("310", "410").unwrap();
        assert_eq!(kd.0, [0x13, 0x00, 0x14]);
        assert_eq!(kd.mcc_mnc(), Some(("310".into(), "410".into())));
        assert!(KeyDomainId::from_mcc_mnc("01", "01").is_none());
    }

    #[test]
    fn rejects_duplicate_key_id_entry() {
        let e = KeyIdExt::read(&[0, 3, 0, 0xf1, 0x10, 0, 3, 0, 0xf1, 0x10], 10).unwrap_err();
        assert_eq!(e.offset, 15);
    }

    #[test]
    fn rejects_wrong_key_id_length() {
        assert!(KeyIdExt::read(&[1, 3, 0, 1, 0], 0).is_err());
    }

    #[test]
    fn skips_unknown_key_id_type() {
        let ext = KeyIdExt::read(&[200, 1, 9, 2, 2, 0, 7], 0).unwrap();
        assert_eq!(ext.tek_id, Some(7));
    }

    #[test]
    fn rejects_ltkm_ext_reserved_bits_and_policy_codes() {
        assert!(LtkmExt::read(&[0x01], 0).is_err());
        assert!(LtkmExt::read(&[0x80, 0x06, 0, 0, 0, 0], 0).is_err());
        assert!(LtkmExt::read(&[0x00, 0x00], 0).is_err(), "trailing byte");
    }

    #[test]
    fn stkm_ext_round_trip_keeps_unknown_descriptor() {
        let ext = StkmExt {
            protection_after_reception: ProtectionAfterReception::TerminalBound,
            traffic_protection_protocol: TrafficProtectionProtocol::IsmaCryp,
            traffic_authentication: true,
            tbk_id: Some(9),
            access_criteria: Some(vec![
                AccessDescriptor::Unknown { tag: 9, value: vec![1, 2] },
                AccessDescriptor::ProgramId(77),
                AccessDescriptor::ParentalRating { system: 1, min_age: 16 },
            ]),
        };
        let mut out = vec![];
        ext.encode(&mut out).unwrap();
        assert_eq!(StkmExt::read(&out[1..], 0).unwrap(), ext);
        assert_eq!(ext.program_id(), Some(77));
    }

    #[test]
    fn rejects_stkm_ext_bad_protocol_and_descriptor_length() {
        assert!(StkmExt::read(&[0x10], 0).is_err());
        assert!(StkmExt::read(&[0x24, 1, 2, 3, 0, 0, 0], 0).is_err());
    }
}
