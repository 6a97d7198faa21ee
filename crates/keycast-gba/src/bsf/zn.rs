//! Zn core: the NAF keys the BSF hands to an authorised NAF (the BSM) for a B-TID
//! (TS 33.220 §4.5.3, §5.3.3; facts-3gpp.md §1.2, §1.5).
//!
//! - GBA_ME session: Ks_NAF, whether or not the NAF says it is GBA_U-aware.
//! - GBA_U session: Ks_ext_NAF, plus Ks_int_NAF when the NAF is GBA_U-aware.
//!
//! The NAF is checked first, so that an unauthorised NAF learns nothing about B-TIDs.

use keycast_crypto::gba::{self, NafId};
use keycast_crypto::keys::{KsExtNaf, KsIntNaf, KsNaf};
use keycast_provisioning::time::UtcTime;
use thiserror::Error;

use super::store::{BsfStore, GbaType, StoreError};

/// Length of the Ua security protocol identifier at the end of a NAF_Id (TS 33.220 Annex H).
const UA_PROTOCOL_LEN: usize = 5;
/// Longest NAF_Id accepted (an FQDN is at most 253 octets).
const MAX_NAF_ID_LEN: usize = 255 + UA_PROTOCOL_LEN;

/// A Zn key request.
#[derive(Debug, Clone, Copy)]
pub struct ZnRequest<'a> {
    /// The B-TID the UE presented to the NAF.
    pub btid: &'a str,
    /// NAF_Id = NAF FQDN ‖ Ua security protocol identifier (5 octets).
    pub naf_id: &'a [u8],
    /// Whether the NAF declared itself GBA_U-aware (it then gets Ks_int_NAF too).
    pub naf_is_gba_u_aware: bool,
}

/// The NAF keys of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZnKeys {
    /// GBA_ME: Ks_NAF.
    Me {
        /// Ks_NAF = KDF(Ks, "gba-me", RAND, IMPI, NAF_Id).
        ks_naf: KsNaf,
    },
    /// GBA_U: Ks_ext_NAF, and Ks_int_NAF for a GBA_U-aware NAF.
    U {
        /// Ks_ext_NAF = KDF(Ks, "gba-me", RAND, IMPI, NAF_Id).
        ks_ext_naf: KsExtNaf,
        /// Ks_int_NAF = KDF(Ks, "gba-u", RAND, IMPI, NAF_Id); `None` for a NAF that is not
        /// GBA_U-aware.
        ks_int_naf: Option<KsIntNaf>,
    },
}

/// A successful Zn answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZnAnswer {
    /// IMPI of the subscriber.
    pub impi: String,
    /// GBA type of the run.
    pub gba_type: GbaType,
    /// When the run succeeded.
    pub bootstrapped_at: UtcTime,
    /// Key lifetime (when Ks expires).
    pub lifetime: UtcTime,
    /// The keys.
    pub keys: ZnKeys,
}

/// Why a Zn request was refused. Each is a distinct answer on Zn.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ZnError {
    /// No session with this B-TID (never existed, replaced by a later run, or purged): the NAF
    /// asks the UE to bootstrap again.
    #[error("unknown B-TID")]
    UnknownBtid,
    /// The session's key lifetime has passed.
    #[error("bootstrapping session expired at {lifetime}")]
    Expired {
        /// When it expired.
        lifetime: UtcTime,
    },
    /// The NAF FQDN is not among the authorised NAFs.
    #[error("NAF not authorised")]
    UnknownNaf,
    /// The NAF_Id is not FQDN (UTF-8) ‖ 5-octet protocol identifier, or is too long.
    #[error("malformed NAF_Id")]
    InvalidNafId,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Unix seconds as a [`UtcTime`], clamped to its range.
pub(crate) fn utc(secs: u64) -> UtcTime {
    UtcTime::from_unix_seconds(secs).unwrap_or(UtcTime::MAX)
}

/// Splits a NAF_Id into FQDN and protocol identifier.
fn parse_naf_id(naf_id: &[u8]) -> Result<NafId, ZnError> {
    if naf_id.len() <= UA_PROTOCOL_LEN || naf_id.len() > MAX_NAF_ID_LEN {
        return Err(ZnError::InvalidNafId);
    }
    let (fqdn, proto) = naf_id.split_at(naf_id.len() - UA_PROTOCOL_LEN);
    let fqdn = core::str::from_utf8(fqdn).map_err(|_| ZnError::InvalidNafId)?;
    let proto: [u8; UA_PROTOCOL_LEN] = proto.try_into().map_err(|_| ZnError::InvalidNafId)?;
    Ok(NafId::new(fqdn, proto))
}

fn authorised(fqdn: &str, authorised_nafs: &[String]) -> bool {
    let bare = fqdn.strip_suffix('.').unwrap_or(fqdn);
    authorised_nafs.iter().any(|a| a.strip_suffix('.').unwrap_or(a).eq_ignore_ascii_case(bare))
}

/// Answers a Zn request: checks the NAF against `authorised_nafs` (FQDNs, compared
/// case-insensitively), finds the session, checks its lifetime against `now` (Unix seconds) and
/// derives the keys the NAF may have.
///
/// # Errors
/// [`ZnError`]; the NAF is checked before the B-TID.
pub async fn zn_keys<S: BsfStore>(
    store: &S,
    authorised_nafs: &[String],
    request: &ZnRequest<'_>,
    now: u64,
) -> Result<ZnAnswer, ZnError> {
    let naf_id = parse_naf_id(request.naf_id)?;
    if !authorised(naf_id.fqdn(), authorised_nafs) {
        return Err(ZnError::UnknownNaf);
    }
    let session = store.session(request.btid).await?.ok_or(ZnError::UnknownBtid)?;
    if session.btid != request.btid {
        return Err(ZnError::UnknownBtid);
    }
    if now >= session.expires_at {
        return Err(ZnError::Expired { lifetime: utc(session.expires_at) });
    }
    // The IMPI passed the Ub length limit and NAF_Id is bounded above, so the KDF's 65535-octet
    // limit cannot be hit; the error is still mapped rather than unwrapped.
    let kdf_err = |_| ZnError::InvalidNafId;
    let keys = match session.gba_type {
        GbaType::GbaMe => {
            ZnKeys::Me { ks_naf: gba::ks_naf(&session.ks, &session.rand, &session.impi, &naf_id).map_err(kdf_err)? }
        }
        GbaType::GbaU => {
            let ks_ext_naf = gba::ks_ext_naf(&session.ks, &session.rand, &session.impi, &naf_id).map_err(kdf_err)?;
            let ks_int_naf = if request.naf_is_gba_u_aware {
                Some(gba::ks_int_naf(&session.ks, &session.rand, &session.impi, &naf_id).map_err(kdf_err)?)
            } else {
                None
            };
            ZnKeys::U { ks_ext_naf, ks_int_naf }
        }
    };
    Ok(ZnAnswer {
        impi: session.impi,
        gba_type: session.gba_type,
        bootstrapped_at: utc(session.bootstrapped_at),
        lifetime: utc(session.expires_at),
        keys,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naf_id_parsing_and_authorisation() {
        assert_eq!(parse_naf_id(b"12345"), Err(ZnError::InvalidNafId));
        assert_eq!(parse_naf_id(&[0xff, 1, 0, 0, 0, 1]), Err(ZnError::InvalidNafId));
        let id = parse_naf_id(b"bmsc.example.org\x01\x00\x00\x00\x01").unwrap();
        assert_eq!(id.fqdn(), "bmsc.example.org");
        assert_eq!(id.ua_protocol(), [1, 0, 0, 0, 1]);
        let list = vec!["BMSC.example.org.".to_owned()];
        assert!(authorised("bmsc.example.org", &list));
        assert!(authorised("bmsc.example.org.", &list));
        assert!(!authorised("evil.example.org", &list));
        assert!(!authorised("bmsc.example.org.evil", &list));
    }
}
