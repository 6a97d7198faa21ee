//! The MSK verification message the terminal returns when an LTKM asks for one (V = 1):
//! profile P-5, P-11.3; TS 33.246 §6.4.5.2; RFC 3830 §5.2.

use keycast_crypto::mikey::MessageKeys;

use crate::codec::{EncodeError, put_prefixed};
use crate::ltkm::Ltkm;
use crate::payload::{CsIdMap, Hdr};
use crate::typed::{Collected, Kind, MAC_LEN, MikeyError, refuse};
use crate::wire::{CsIdMapType, DataType, IdType, MacAlg, PayloadType, TsType};

const NAME: &str = "verification message";

/// A decoded verification message: `HDR ‖ T ‖ IDr ‖ V`.
#[derive(Debug, Clone)]
pub struct VerificationMessage<'a> {
    bytes: &'a [u8],
    csb_id: u32,
    ts: u32,
    idr: &'a str,
}

impl<'a> VerificationMessage<'a> {
    /// Builds the verification message answering `ltkm`, with the LTKM's keys.
    pub fn build(ltkm: &Ltkm<'_>, keys: &MessageKeys) -> Result<Vec<u8>, MikeyError> {
        let mut out = Vec::with_capacity(80);
        (|| -> Result<(), EncodeError> {
            let hdr = Hdr {
                data_type: DataType::PskVerification,
                v: false,
                prf: 0,
                csb_id: ltkm.csb_id(),
                cs_count: 0,
                map: CsIdMap::Empty,
            };
            hdr.encode(PayloadType::T, &mut out)?;
            out.extend_from_slice(&[PayloadType::Id.into(), TsType::Counter.into()]);
            out.extend_from_slice(&ltkm.ts().to_be_bytes());
            out.extend_from_slice(&[PayloadType::V.into(), IdType::Nai.into()]);
            put_prefixed(&mut out, 2, "ID data", ltkm.idr().as_bytes())?;
            out.extend_from_slice(&[PayloadType::Last.into(), MacAlg::HmacSha1_160.into()]);
            Ok(())
        })()
        .map_err(|source| MikeyError::Encode { message: NAME, source })?;
        let [idi, idr, t] = ltkm.verification_suffix();
        let mac = keys.mac(&[&out, idi, idr, t]);
        out.extend_from_slice(&mac);
        Ok(out)
    }

    /// Decodes a verification message and checks its form.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, MikeyError> {
        let c = Collected::collect(bytes, Kind::Verification)?;
        if c.hdr.data_type != DataType::PskVerification || c.hdr.v {
            return Err(refuse(NAME, "HDR", 1, "data type must be 1 (PSK verification) with V 0"));
        }
        if c.hdr.cs_count != 0 || c.hdr.map.map_type() != CsIdMapType::Empty {
            return Err(refuse(NAME, "HDR", 8, "#CS must be 0 with an empty map"));
        }
        let (ts, _) = c.require_t(Kind::Verification)?;
        let idr = c.ids[0].as_ref().ok_or_else(|| refuse(NAME, "ID", c.end, "IDr is required"))?.0;
        Ok(Self { bytes, csb_id: c.hdr.csb_id, ts, idr })
    }

    /// CSB ID (the LTKM's).
    pub fn csb_id(&self) -> u32 {
        self.csb_id
    }
    /// Timestamp (the LTKM's).
    pub fn ts(&self) -> u32 {
        self.ts
    }
    /// IDr (the B-TID).
    pub fn idr(&self) -> &'a str {
        self.idr
    }

    /// Checks that this message answers `ltkm` and that its MAC verifies with the LTKM's keys.
    pub fn verify(&self, ltkm: &Ltkm<'_>, keys: &MessageKeys) -> Result<(), MikeyError> {
        if self.csb_id != ltkm.csb_id() || self.ts != ltkm.ts() || self.idr != ltkm.idr() {
            return Err(refuse(NAME, "HDR", 4, "CSB ID, timestamp and IDr must be the LTKM's"));
        }
        let (covered, tag) = self.bytes.split_at(self.bytes.len() - MAC_LEN);
        let [idi, idr, t] = ltkm.verification_suffix();
        if keys.verify_mac(&[covered, idi, idr, t], tag) {
            Ok(())
        } else {
            Err(MikeyError::MacMismatch { message: NAME })
        }
    }
}
