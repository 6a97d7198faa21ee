//! GBA key derivation (TS 33.220 Annex B), the MBMS keys built on it (TS 33.246 §6.1,
//! Annex F; profile P-7) and Ks_local (TS 33.110 §4.5.2; profile P-10).
//!
//! String parameters are used as given: the caller passes them already NFKC-normalised
//! (TS 33.220 B.2.1), which is a no-op for the ASCII names GBA uses.

use ::hmac::{Hmac, KeyInit, Mac};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::KdfError;
use crate::keys::{Ck, Ik, Ks, KsExtNaf, KsIntNaf, KsLocal, KsNaf, Smk, Srk};

/// FC of the NAF key derivation (TS 33.220 B.3), of MRK (TS 33.246 Annex F) and of Ks_local
/// (TS 33.110 Annex A).
pub const FC_GBA: u8 = 0x01;
/// Ua security protocol identifier of TS 33.246 MBMS, used by OMA BCAST (TS 33.220 Annex H).
pub const UA_PROTOCOL_MBMS: [u8; 5] = [0x01, 0x00, 0x00, 0x00, 0x01];
/// Ua security protocol identifier of plain HTTP Digest per TS 24.109 (TS 33.220 Annex H).
pub const UA_PROTOCOL_HTTP_DIGEST: [u8; 5] = [0x01, 0x00, 0x00, 0x00, 0x02];
/// Identifier appended to the BSF name for TMPI generation (TS 33.220 B.4, Annex H).
pub const UA_PROTOCOL_TMPI: [u8; 5] = [0x01, 0x00, 0x00, 0x01, 0x00];

/// P0 for Ks_NAF / Ks_ext_NAF (TS 33.220 B.3).
const P0_GBA_ME: &[u8] = b"gba-me";
/// P0 for Ks_int_NAF (TS 33.220 B.3).
const P0_GBA_U: &[u8] = b"gba-u";
/// P0 for MRK (TS 33.246 Annex F).
const P0_MBMS_MRK: &[u8] = b"mbms-mrk";
/// Realm part of a TMPI (TS 33.220 B.4).
const TMPI_DOMAIN: &str = "tmpi.bsf.3gppnetwork.org";
/// A TMPI keeps the first 24 octets of the KDF output (TS 33.220 B.4).
const TMPI_LEN: usize = 24;

/// The generic KDF of TS 33.220 B.2 with a one-octet FC:
/// HMAC-SHA-256(key, FC ‖ P0 ‖ L0 ‖ … ‖ Pn ‖ Ln), L_i the 2-byte big-endian length of P_i.
pub fn kdf(key: &[u8], fc: u8, params: &[&[u8]]) -> Result<Zeroizing<[u8; 32]>, KdfError> {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(&[fc]);
    for (index, p) in params.iter().enumerate() {
        let len = u16::try_from(p.len()).map_err(|_| KdfError::ParameterTooLong { index, len: p.len() })?;
        mac.update(p);
        mac.update(&len.to_be_bytes());
    }
    Ok(Zeroizing::new(mac.finalize().into_bytes().into()))
}

/// KDF over parameters that are fixed and short, so the length check cannot fail.
fn kdf_static(key: &[u8], params: &[&[u8]]) -> Zeroizing<[u8; 32]> {
    kdf(key, FC_GBA, params).expect("static KDF parameters are shorter than 65536 bytes")
}

/// Ks = CK ‖ IK (TS 33.220 §4.5.2).
#[must_use]
pub fn ks_from_ck_ik(ck: &Ck, ik: &Ik) -> Ks {
    let mut ks = Zeroizing::new([0u8; 32]);
    ks[..16].copy_from_slice(ck.expose_secret());
    ks[16..].copy_from_slice(ik.expose_secret());
    Ks::from_bytes(*ks)
}

/// NAF_Id = NAF FQDN ‖ Ua security protocol identifier (TS 33.220 B.3, Annex H).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NafId {
    fqdn: String,
    ua_protocol: [u8; 5],
    bytes: Vec<u8>,
}

impl NafId {
    /// Builds the NAF_Id of `fqdn` for the given Ua protocol, e.g. [`UA_PROTOCOL_MBMS`].
    #[must_use]
    pub fn new(fqdn: &str, ua_protocol: [u8; 5]) -> Self {
        let mut bytes = Vec::with_capacity(fqdn.len() + 5);
        bytes.extend_from_slice(fqdn.as_bytes());
        bytes.extend_from_slice(&ua_protocol);
        Self { fqdn: fqdn.to_owned(), ua_protocol, bytes }
    }

    /// The NAF_Id of a BM-SC/BSM: FQDN ‖ `01 00 00 00 01` (profile P-7).
    #[must_use]
    pub fn mbms(fqdn: &str) -> Self {
        Self::new(fqdn, UA_PROTOCOL_MBMS)
    }

    /// FQDN ‖ protocol identifier, as it enters the KDF.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The NAF FQDN.
    #[must_use]
    pub fn fqdn(&self) -> &str {
        &self.fqdn
    }

    /// The 5-byte Ua security protocol identifier.
    #[must_use]
    pub fn ua_protocol(&self) -> [u8; 5] {
        self.ua_protocol
    }
}

fn naf_key(ks: &Ks, p0: &[u8], rand: &[u8; 16], impi: &str, naf_id: &[u8]) -> Result<Zeroizing<[u8; 32]>, KdfError> {
    kdf(ks.expose_secret(), FC_GBA, &[p0, rand, impi.as_bytes(), naf_id])
}

/// Ks_NAF = KDF(Ks, "gba-me", RAND, IMPI, NAF_Id) (TS 33.220 B.3, GBA_ME).
pub fn ks_naf(ks: &Ks, rand: &[u8; 16], impi: &str, naf_id: &NafId) -> Result<KsNaf, KdfError> {
    naf_key(ks, P0_GBA_ME, rand, impi, naf_id.as_bytes()).map(|k| KsNaf::from_bytes(*k))
}

/// Ks_ext_NAF = KDF(Ks, "gba-me", RAND, IMPI, NAF_Id) (TS 33.220 B.3, GBA_U; the same
/// formula as Ks_NAF).
pub fn ks_ext_naf(ks: &Ks, rand: &[u8; 16], impi: &str, naf_id: &NafId) -> Result<KsExtNaf, KdfError> {
    naf_key(ks, P0_GBA_ME, rand, impi, naf_id.as_bytes()).map(|k| KsExtNaf::from_bytes(*k))
}

/// Ks_int_NAF = KDF(Ks, "gba-u", RAND, IMPI, NAF_Id) (TS 33.220 B.3, GBA_U).
pub fn ks_int_naf(ks: &Ks, rand: &[u8; 16], impi: &str, naf_id: &NafId) -> Result<KsIntNaf, KdfError> {
    naf_key(ks, P0_GBA_U, rand, impi, naf_id.as_bytes()).map(|k| KsIntNaf::from_bytes(*k))
}

/// B-TID = base64(RAND) "@" BSF server domain name (TS 33.220 §5.3.2 step 7).
#[must_use]
pub fn b_tid(rand: &[u8; 16], bsf_domain: &str) -> String {
    format!("{}@{bsf_domain}", BASE64.encode(rand))
}

/// TMPI = base64(first 24 octets of KDF(Ks, "gba-me", RAND, IMPI, BSF_Id))
/// "@tmpi.bsf.3gppnetwork.org", BSF_Id = BSF name ‖ `01 00 00 01 00` (TS 33.220 B.4).
pub fn tmpi(ks: &Ks, rand: &[u8; 16], impi: &str, bsf_name: &str) -> Result<String, KdfError> {
    let bsf_id = NafId::new(bsf_name, UA_PROTOCOL_TMPI);
    let out = naf_key(ks, P0_GBA_ME, rand, impi, bsf_id.as_bytes())?;
    Ok(format!("{}@{TMPI_DOMAIN}", BASE64.encode(&out[..TMPI_LEN])))
}

/// MRK = KDF(Ks_(ext)_NAF, FC 0x01, P0 = "mbms-mrk") (TS 33.246 Annex F). In OMA BCAST
/// terms this is the SRK.
#[must_use]
pub fn mrk(key: &[u8; 32]) -> Srk {
    Srk::from_bytes(*kdf_static(key, &[P0_MBMS_MRK]))
}

/// The GBA flavour of a subscriber's bootstrapping (TS 33.220 §4, §5.2–5.3), as the BSF
/// knows it from the subscriber's GUSS and reports it on Zn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GbaType {
    /// GBA_U: a GBA-aware UICC; Ks stays in the card. AUTN carries MAC*, XRES has its LSB
    /// flipped, and GBA_U-aware NAFs get Ks_ext_NAF and Ks_int_NAF.
    GbaU,
    /// GBA_ME: a plain USIM (3G context); the terminal holds Ks and NAFs get Ks_NAF.
    GbaMe,
}

impl GbaType {
    /// `"gba-u"` or `"gba-me"`: the KDF labels of TS 33.220 B.3, also the Zn spelling and a
    /// metric label.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            GbaType::GbaU => "gba-u",
            GbaType::GbaMe => "gba-me",
        }
    }
}

/// How the terminal bootstrapped, which decides where SMK and SRK come from
/// (TS 33.246 §6.1, profile P-7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GbaMode {
    /// GBA_U with a UICC that supports MBMS: SMK = Ks_int_NAF, SRK = Ks_ext_NAF.
    GbaUMbmsCard,
    /// GBA_U with a UICC without MBMS support: SMK = Ks_ext_NAF, SRK = MRK(Ks_ext_NAF).
    GbaUNonMbmsCard,
    /// GBA_ME (or 2G GBA): SMK = Ks_NAF, SRK = MRK(Ks_NAF).
    GbaMe,
}

/// (SMK, SRK) for `mode`, derived from Ks as the BSM (via the BSF) sees them.
/// `naf_id` is the BSM's NAF_Id, normally [`NafId::mbms`].
pub fn mbms_keys(mode: GbaMode, ks: &Ks, rand: &[u8; 16], impi: &str, naf_id: &NafId) -> Result<(Smk, Srk), KdfError> {
    let me_key = naf_key(ks, P0_GBA_ME, rand, impi, naf_id.as_bytes())?;
    let smk = match mode {
        GbaMode::GbaUMbmsCard => Smk::from_bytes(*naf_key(ks, P0_GBA_U, rand, impi, naf_id.as_bytes())?),
        GbaMode::GbaUNonMbmsCard | GbaMode::GbaMe => Smk::from_bytes(*me_key),
    };
    Ok((smk, mbms_srk(mode, &me_key)))
}

/// SRK for `mode` from the NAF key the ME holds: Ks_ext_NAF (GBA_U) or Ks_NAF (GBA_ME)
/// (TS 33.246 §6.1, profile P-7).
#[must_use]
pub fn mbms_srk(mode: GbaMode, me_key: &[u8; 32]) -> Srk {
    match mode {
        GbaMode::GbaUMbmsCard => Srk::from_bytes(*me_key),
        GbaMode::GbaUNonMbmsCard | GbaMode::GbaMe => mrk(me_key),
    }
}

/// The inputs of Ks_local besides the key (TS 33.110 §4.5.2 and Annex A; profile P-10).
/// TS 33.110 caps their lengths (Terminal_ID and ICCID ≤ 10, Terminal_appli_ID ≤ 32,
/// UICC_appli_ID and RANDx ≤ 16); this KDF only enforces the 65535-byte limit of B.2.
#[derive(Debug, Clone, Copy)]
pub struct LocalKeyParams<'a> {
    /// P0: B-TID.
    pub b_tid: &'a str,
    /// P1: Terminal_ID.
    pub terminal_id: &'a [u8],
    /// P2: ICCID.
    pub iccid: &'a [u8],
    /// P3: Terminal_appli_ID (`platform` for a per-platform key).
    pub terminal_appli_id: &'a [u8],
    /// P4: UICC_appli_ID (`platform` for a per-platform key).
    pub uicc_appli_id: &'a [u8],
    /// P5: RANDx.
    pub randx: &'a [u8],
    /// P6: Counter Limit.
    pub counter_limit: &'a [u8; 16],
}

/// Ks_local = KDF(Ks_int_NAF, FC 0x01, P0 B-TID, P1 Terminal_ID, P2 ICCID,
/// P3 Terminal_appli_ID, P4 UICC_appli_ID, P5 RANDx, P6 Counter Limit) (profile P-10).
pub fn ks_local(ks_int_naf: &KsIntNaf, p: &LocalKeyParams<'_>) -> Result<KsLocal, KdfError> {
    kdf(
        ks_int_naf.expose_secret(),
        FC_GBA,
        &[p.b_tid.as_bytes(), p.terminal_id, p.iccid, p.terminal_appli_id, p.uicc_appli_id, p.randx, p.counter_limit],
    )
    .map(|k| KsLocal::from_bytes(*k))
}
