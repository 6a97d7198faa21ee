//! What the typed messages share: the error type, the payload collector that enforces each
//! message's payload set (profile P-2, P-11.14), and the KEMAC helpers used by seal and open.

use core::ops::Range;

use keycast_crypto::mikey::MessageKeys;

use crate::codec::{DecodeError, EncodeError};
use crate::ext::{KeyIdExt, split_oma_bcast};
use crate::payload::{Hdr, Id, Kemac, Payload, PayloadIter, Sp, Timestamp, Verification};
use crate::wire::{EncrAlg, ExtType, MacAlg, OmaBcastSubtype, PRF_MIKEY_1, PayloadType, TsType};

/// Length of an HMAC-SHA-1-160 MAC.
pub(crate) const MAC_LEN: usize = 20;

/// Why a typed message (LTKM, STKM, verification message, solicited pull) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MikeyError {
    /// The bytes are not a well-formed MIKEY message.
    #[error("malformed {message}: {source}")]
    Decode {
        /// Which message was expected.
        message: &'static str,
        /// The syntax error.
        source: DecodeError,
    },
    /// Well-formed MIKEY, but not what the profile allows for this message.
    #[error("{message} refused: {payload} at offset {offset}: {why}")]
    Profile {
        /// Which message.
        message: &'static str,
        /// The payload at fault.
        payload: &'static str,
        /// Its offset in the message.
        offset: usize,
        /// What the profile requires.
        why: &'static str,
    },
    /// The MAC did not verify: wrong key, or the message was altered.
    #[error("{message}: MAC check failed (wrong key or altered message)")]
    MacMismatch {
        /// Which message.
        message: &'static str,
    },
    /// The TEK could not be unwrapped with the terminal binding key.
    #[error("STKM: TEK unwrap with the terminal binding key failed")]
    TbkUnwrap,
    /// The message could not be built.
    #[error("cannot build {message}: {source}")]
    Encode {
        /// Which message.
        message: &'static str,
        /// Why.
        source: EncodeError,
    },
}

/// Shorthand for a profile violation.
pub(crate) fn refuse(message: &'static str, payload: &'static str, offset: usize, why: &'static str) -> MikeyError {
    MikeyError::Profile { message, payload, offset, why }
}

/// The payload set a message kind may carry.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Ltkm,
    Stkm,
    Verification,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Ltkm => "LTKM",
            Self::Stkm => "STKM",
            Self::Verification => "verification message",
        }
    }

    fn own_subtype(self) -> Option<OmaBcastSubtype> {
        match self {
            Self::Ltkm => Some(OmaBcastSubtype::Ltkm),
            Self::Stkm => Some(OmaBcastSubtype::Stkm),
            Self::Verification => None,
        }
    }
}

/// The payloads of one typed message, each at most once (IDs: at most two, in order).
#[derive(Debug, Clone)]
pub(crate) struct Collected<'a> {
    pub hdr: Hdr<'a>,
    pub t: Option<(u32, Range<usize>)>,
    pub rand: Option<(&'a [u8], usize)>,
    pub ids: [Option<(&'a str, Range<usize>)>; 2],
    pub sp: Option<(Sp<'a>, usize)>,
    pub key_id: Option<(KeyIdExt, usize)>,
    /// Body of the OMA BCAST extension of this message's own subtype, with its offset.
    pub bcast: Option<(&'a [u8], usize)>,
    pub kemac: Option<(Kemac<'a>, usize)>,
    pub v: Option<(Verification<'a>, usize)>,
    /// Offset just past the last payload (= message length).
    pub end: usize,
}

impl<'a> Collected<'a> {
    /// Walks the chain of `msg`, keeping the payloads `kind` allows and refusing the rest.
    // Inlined so each message type's decoder builds the collection in place (no large move).
    #[inline(always)]
    pub(crate) fn collect(msg: &'a [u8], kind: Kind) -> Result<Self, MikeyError> {
        let name = kind.name();
        let decode = |source| MikeyError::Decode { message: name, source };
        let (hdr, iter) = PayloadIter::new(msg).map_err(decode)?;
        if hdr.prf != PRF_MIKEY_1 {
            return Err(refuse(name, "HDR", 3, "PRF func must be 0 (MIKEY-1)"));
        }
        let mut c = Collected {
            hdr,
            t: None,
            rand: None,
            ids: [None, None],
            sp: None,
            key_id: None,
            bcast: None,
            kemac: None,
            v: None,
            end: msg.len(),
        };
        let mut last = PayloadType::Last;
        for located in iter {
            let located = located.map_err(decode)?;
            let at = located.span.start;
            let ty = located.payload.payload_type();
            let pname = ty.spec_name();
            let dup = || refuse(name, pname, at, "appears more than once");
            if c.kemac.is_some() || c.v.is_some() {
                return Err(refuse(name, pname, at, "nothing may follow the KEMAC / V payload"));
            }
            match (located.payload, kind) {
                (Payload::T(Timestamp { ts_type, value }), _) => {
                    if ts_type != TsType::Counter {
                        return Err(refuse(name, pname, at, "timestamp must be of type 2 (COUNTER)"));
                    }
                    if c.t.replace((value as u32, located.span)).is_some() {
                        return Err(dup());
                    }
                }
                (Payload::Rand(rand), Kind::Ltkm) => {
                    if rand.len() != 16 {
                        return Err(refuse(name, pname, at, "RAND must be 16 bytes"));
                    }
                    if c.rand.replace((rand, at)).is_some() {
                        return Err(dup());
                    }
                }
                (Payload::Id(Id { role: None, data, .. }), Kind::Ltkm | Kind::Verification) => {
                    let text = core::str::from_utf8(data)
                        .map_err(|_| refuse(name, pname, at, "identity must be UTF-8 text"))?;
                    let max = if kind == Kind::Ltkm { 2 } else { 1 };
                    let slot = c.ids.iter_mut().take(max).find(|s| s.is_none()).ok_or_else(dup)?;
                    *slot = Some((text, located.span));
                }
                (Payload::Sp(sp), Kind::Ltkm) => {
                    if c.sp.replace((sp, at)).is_some() {
                        return Err(dup());
                    }
                }
                (Payload::GeneralExt(ext), Kind::Ltkm | Kind::Stkm) => {
                    // Data starts after next (1), type (1) and length (2).
                    let data_at = at + 4;
                    match ext.ext_type {
                        ExtType::KeyId => {
                            let key_id = KeyIdExt::read(ext.data, data_at).map_err(decode)?;
                            if c.key_id.replace((key_id, at)).is_some() {
                                return Err(dup());
                            }
                        }
                        ExtType::OmaBcast => {
                            let (subtype, body) = split_oma_bcast(ext.data, data_at).map_err(decode)?;
                            // Another message's subtype is skipped like an unknown extension (P-11.10).
                            if Some(subtype) == kind.own_subtype() && c.bcast.replace((body, data_at + 1)).is_some() {
                                return Err(dup());
                            }
                        }
                        // Unknown extensions are skipped; their bytes stay under the MAC (P-2).
                        _ => {}
                    }
                }
                (Payload::Kemac(kemac), Kind::Ltkm | Kind::Stkm) => {
                    if kemac.encr_alg != EncrAlg::AesCm128 {
                        return Err(refuse(
                            name,
                            pname,
                            at,
                            "encryption must be AES-CM-128 (NULL and others are refused)",
                        ));
                    }
                    if kemac.mac_alg != MacAlg::HmacSha1_160 {
                        return Err(refuse(name, pname, at, "MAC must be HMAC-SHA-1-160 (NULL is refused)"));
                    }
                    c.kemac = Some((kemac, at));
                }
                (Payload::V(v), Kind::Verification) => {
                    if v.auth_alg != MacAlg::HmacSha1_160 {
                        return Err(refuse(name, pname, at, "auth alg must be HMAC-SHA-1-160 (NULL is refused)"));
                    }
                    c.v = Some((v, at));
                }
                _ => return Err(refuse(name, pname, at, "payload not allowed in this message")),
            }
            last = ty;
        }
        let want_last = if kind == Kind::Verification { PayloadType::V } else { PayloadType::Kemac };
        if last != want_last {
            return Err(refuse(name, want_last.spec_name(), c.end, "missing: it must be the last payload"));
        }
        Ok(c)
    }

    /// The T payload's counter, or a "missing" refusal.
    pub(crate) fn require_t(&self, kind: Kind) -> Result<(u32, Range<usize>), MikeyError> {
        self.t.clone().ok_or_else(|| refuse(kind.name(), "T", self.end, "missing"))
    }

    /// The Key ID extension, or a "missing" refusal.
    pub(crate) fn require_key_id(&self, kind: Kind) -> Result<(KeyIdExt, usize), MikeyError> {
        self.key_id.ok_or_else(|| refuse(kind.name(), "Key ID extension", self.end, "missing"))
    }
}

/// Encrypts `plain` in place under the message keys and appends the KEMAC (as last payload) and
/// its MAC over the whole message.
pub(crate) fn append_kemac(
    out: &mut Vec<u8>,
    keys: &MessageKeys,
    csb_id: u32,
    ts: u32,
    plain: &mut [u8],
) -> Result<(), EncodeError> {
    let iv = keys.kemac_iv(csb_id, ts.into());
    keys.apply_keystream(&iv, plain);
    out.extend_from_slice(&[PayloadType::Last.into(), EncrAlg::AesCm128.into()]);
    crate::codec::put_prefixed(out, 2, "encr data", plain)?;
    out.push(MacAlg::HmacSha1_160.into());
    let mac = keys.mac(&[out]);
    out.extend_from_slice(&mac);
    Ok(())
}

/// Checks the MAC that ends `msg` (covering everything before it) in constant time.
pub(crate) fn verify_trailing_mac(msg: &[u8], keys: &MessageKeys, kind: Kind) -> Result<(), MikeyError> {
    let (covered, tag) = msg.split_at(msg.len() - MAC_LEN);
    if keys.verify_mac(&[covered], tag) { Ok(()) } else { Err(MikeyError::MacMismatch { message: kind.name() }) }
}
