//! File mode: a file for download delivery, protected as an OMA DRM DCF under a fresh TEK, with
//! the STKM that carries that TEK (TS 33.246 §6.6.3, profile P-6, P-9 "Download (DCF)").
//!
//! - The TEK is 16 fresh random bytes. Its STKM is the download form of P-6: key data type 0
//!   (TGK), no salt, traffic_protection_protocol 3 (DCF), sealed under the live SEK/PEK with
//!   its RAND like every STKM.
//! - The DCF is keycast-traffic's [`seal_dcf`]: AES-128-CBC and an HMAC-SHA1 signature under
//!   keys derived from the TEK ([`DcfKeys::for_key`]); its `obki` names Key Domain ID ‖ SEK/PEK
//!   ID ‖ TEK ID, so a terminal knows which STKM opens it.
//! - TEK IDs \[chosen\]: the card refuses a TEK ID below the last one it accepted under a key
//!   (P-6 step 5), so every file under one SEK/PEK needs a higher TEK ID than the one before.
//!   Files and streams therefore do not share a Key Group: the caller picks the TEK ID (the
//!   CLI's default is one above the key's SEQl, for the first file under a key).
//! - TS: the NTP seconds of `now`, never below the key's TS low (P-6).

use keycast_crypto::keys::Tek;
use keycast_mikey::{MikeyError, ProtectionAfterReception, StkmContent, StkmExt, TekField, TrafficProtectionProtocol};
use keycast_traffic::dcf::{DcfError, DcfHeaders, DcfKeys, IV_LEN, seal_dcf};
use keycast_traffic::srtp::Mki;

use crate::keys::{LiveKey, RandomSource, ntp_seconds};

/// What goes with the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadSettings {
    /// MIME type of the content (the DCF's ContentType).
    pub content_type: String,
    /// Where a terminal without the SEK/PEK buys it (the `ohdr` RightsIssuerURL); empty for none.
    pub rights_issuer_url: String,
    /// TEK ID of this file's TEK: above every TEK ID used before under the same key.
    pub tek_id: u16,
    /// CSB ID of the STKM (P-2: no meaning, enters the key derivation).
    pub csb_id: u32,
    /// protection_after_reception of the STKM (0 keep encrypted, 1 no storage, 3 may be stored
    /// in the clear); 2 needs a TBK, which a broadcaster does not have.
    pub protection_after_reception: ProtectionAfterReception,
}

/// A protected file and the STKM that opens it.
#[derive(Clone, PartialEq, Eq)]
pub struct DownloadPackage {
    /// The DCF file.
    pub dcf: Vec<u8>,
    /// The STKM carrying the file's TEK (download form).
    pub stkm: Vec<u8>,
    /// SEK/PEK ID ‖ TEK ID of the file's key.
    pub key: Mki,
    /// The STKM's TS.
    pub ts: u32,
}

impl core::fmt::Debug for DownloadPackage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DownloadPackage")
            .field("dcf_len", &self.dcf.len())
            .field("stkm_len", &self.stkm.len())
            .field("key", &self.key)
            .field("ts", &self.ts)
            .finish()
    }
}

/// Why a file was not packaged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DownloadError {
    /// `now` is outside the key's window.
    #[error("the SEK/PEK {0:?} is not valid now")]
    KeyNotValid(keycast_mikey::SekPekId),
    /// The TEK ID is outside the key's TEK-ID window (SEQl, SEQu].
    #[error("TEK ID {tek_id} is outside the key's window ({low}, {high}]")]
    TekIdOutsideWindow {
        /// The TEK ID asked for.
        tek_id: u16,
        /// SEQl.
        low: u16,
        /// SEQu.
        high: u16,
    },
    /// A terminal-bound STKM was asked for.
    #[error("protection_after_reception 2 (bound to a terminal) needs a TBK, which a broadcaster has not")]
    TerminalBound,
    /// The random source failed (no TEK is made without it).
    #[error("no randomness for the TEK")]
    NoRandomness,
    /// The clock is past NTP era 0.
    #[error("the time is outside NTP era 0")]
    Time,
    /// The STKM could not be sealed.
    #[error("STKM: {0}")]
    Stkm(#[from] MikeyError),
    /// The DCF could not be sealed.
    #[error("DCF: {0}")]
    Dcf(#[from] DcfError),
}

/// Protects `content` for download under `key` at `now_ms` (Unix milliseconds).
///
/// # Errors
/// [`DownloadError`]: key not valid now, TEK ID outside its window, a terminal-bound request, or
/// a content too large for a DCF.
pub fn package_download<R: RandomSource>(
    key: &LiveKey,
    settings: &DownloadSettings,
    content: &[u8],
    now_ms: u64,
    rng: &mut R,
) -> Result<DownloadPackage, DownloadError> {
    if !key.covers(now_ms) {
        return Err(DownloadError::KeyNotValid(key.sek_pek_id));
    }
    let (tek_id, low, high) = (settings.tek_id, key.tek_id_low, key.tek_id_high);
    if tek_id <= low || tek_id > high || tek_id == u16::MAX {
        return Err(DownloadError::TekIdOutsideWindow { tek_id, low, high });
    }
    if settings.protection_after_reception == ProtectionAfterReception::TerminalBound {
        return Err(DownloadError::TerminalBound);
    }
    let ts = ntp_seconds(now_ms).ok_or(DownloadError::Time)?.max(key.ts_low);

    let mut tek = [0u8; 16];
    rng.fill(&mut tek).map_err(|_| DownloadError::NoRandomness)?;
    let tek = Tek::from_bytes(tek);
    let mut iv = [0u8; IV_LEN];
    rng.fill(&mut iv).map_err(|_| DownloadError::NoRandomness)?;

    let mki = Mki::new(key.id_u32(), tek_id);
    let keys = DcfKeys::for_key(&tek, mki);
    let mut headers = DcfHeaders::new(&settings.content_type, key.key_domain_id.0, mki);
    headers.headers.rights_issuer_url = settings.rights_issuer_url.clone();
    let dcf = seal_dcf(&headers, &keys, iv, content)?;

    let stkm = StkmContent {
        csb_id: settings.csb_id,
        key_domain_id: key.key_domain_id,
        sek_pek_id: key.sek_pek_id,
        tek_id,
        ts,
        ext: Some(StkmExt {
            protection_after_reception: settings.protection_after_reception,
            traffic_protection_protocol: TrafficProtectionProtocol::Dcf,
            traffic_authentication: true,
            tbk_id: None,
            access_criteria: None,
        }),
        tek: TekField::Clear(tek),
        salt: None,
    }
    .seal(&key.key, &key.rand)?;
    Ok(DownloadPackage { dcf, stkm, key: mki, ts })
}

#[cfg(test)]
mod tests {
    use keycast_card::mbms::{MbmsStore, TekOut};
    use keycast_crypto::keys::{SekPek, Smk};
    use keycast_mikey::{
        KeyDomainId, KeyValidity, LtkmContent, LtkmExt, SecurityPolicy, SecurityPolicyExt, SekPekId, Stkm,
    };
    use keycast_traffic::dcf::{Dcf, open_dcf};

    use super::*;
    use crate::keys::SeededRandom;

    const NOW_MS: u64 = 1_800_000_000_000;

    fn live() -> LiveKey {
        let ts_low = ntp_seconds(NOW_MS).unwrap() - 10;
        LiveKey {
            key_domain_id: KeyDomainId::from_mcc_mnc("001", "01").unwrap(),
            sek_pek_id: SekPekId { key_group: 9, key_number: 2 },
            key: SekPek::from_bytes([0x5a; 16]),
            rand: [0x3c; 16],
            from: NOW_MS / 1000 - 10,
            until: NOW_MS / 1000 + 3600,
            ts_low,
            ts_high: ts_low + 3610,
            tek_id_low: 0,
            tek_id_high: 0xfffe,
        }
    }

    fn settings(tek_id: u16) -> DownloadSettings {
        DownloadSettings {
            content_type: "application/octet-stream".into(),
            rights_issuer_url: "https://bsm.example.org/sprov".into(),
            tek_id,
            csb_id: 0x0102_0304,
            protection_after_reception: ProtectionAfterReception::ServiceProtectionOnly,
        }
    }

    /// A card holding `key` (delivered by an LTKM with its RAND and TS window).
    fn card(key: &LiveKey) -> MbmsStore {
        let smk = Smk::from_bytes([0x21; 32]);
        let mut card = MbmsStore::default();
        card.install_muk("bsm.example.org", "btid@bsf.example.org", smk.clone()).unwrap();
        let ltkm = LtkmContent {
            csb_id: 7,
            verification_requested: false,
            srtp_cs: None,
            key_domain_id: key.key_domain_id,
            sek_pek_id: key.sek_pek_id,
            ts: 1,
            rand: key.rand,
            idi: "bsm.example.org".into(),
            idr: "btid@bsf.example.org".into(),
            srtp_policy: None,
            ext: Some(LtkmExt {
                security_policy: Some(SecurityPolicyExt {
                    policy: SecurityPolicy::UnlimitedWithinWindow,
                    play_back_counter: 0,
                    view_counter: 0,
                }),
                tbk_id: None,
                consumption_reporting: false,
            }),
            key: Some(key.key.clone()),
            validity: KeyValidity::TsWindow { ts_low: key.ts_low, ts_high: key.ts_high },
        };
        card.msk_update(&ltkm.seal(&smk).unwrap()).unwrap();
        card
    }

    #[test]
    fn the_card_opens_the_stkm_and_its_tek_opens_the_file() {
        let key = live();
        let content: Vec<u8> = (0..10_000u32).map(|i| (i * 31) as u8).collect();
        let pkg = package_download(&key, &settings(1), &content, NOW_MS, &mut SeededRandom::new(4)).unwrap();

        let stkm = Stkm::decode(&pkg.stkm).unwrap();
        assert_eq!((stkm.sek_pek_id(), stkm.tek_id()), (key.sek_pek_id, 1));
        assert_eq!(stkm.ext().unwrap().traffic_protection_protocol, TrafficProtectionProtocol::Dcf);
        let dcf = Dcf::parse(&pkg.dcf).unwrap();
        assert_eq!(dcf.key(), Some((key.key_domain_id.0, pkg.key)));
        assert!(!pkg.dcf.windows(64).any(|w| content.windows(64).next() == Some(w)), "content not in the clear");

        let mut card = card(&key);
        let TekOut::Clear { tek, salt: None } = card.mtk_generation(&pkg.stkm).unwrap().tek else {
            panic!("a download TEK comes without salt, in the clear")
        };
        let (headers, opened) = open_dcf(&pkg.dcf, &DcfKeys::for_key(&tek, pkg.key)).unwrap();
        assert_eq!(opened, content);
        assert_eq!(headers.headers.rights_issuer_url, "https://bsm.example.org/sprov");

        // The next file under the same key needs a higher TEK ID; the card refuses a lower one.
        let next = package_download(&key, &settings(2), b"second", NOW_MS + 1000, &mut SeededRandom::new(5)).unwrap();
        assert!(card.mtk_generation(&next.stkm).is_ok());
        let lower = package_download(&key, &settings(1), b"again", NOW_MS + 2000, &mut SeededRandom::new(6)).unwrap();
        assert!(card.mtk_generation(&lower.stkm).is_err());
    }

    #[test]
    fn refusals() {
        let key = live();
        let mut rng = SeededRandom::new(1);
        assert!(matches!(
            package_download(&key, &settings(1), b"x", NOW_MS + 7_200_000, &mut rng),
            Err(DownloadError::KeyNotValid(_))
        ));
        assert!(matches!(
            package_download(&key, &settings(0), b"x", NOW_MS, &mut rng),
            Err(DownloadError::TekIdOutsideWindow { tek_id: 0, .. })
        ));
        let bound =
            DownloadSettings { protection_after_reception: ProtectionAfterReception::TerminalBound, ..settings(1) };
        assert!(matches!(package_download(&key, &bound, b"x", NOW_MS, &mut rng), Err(DownloadError::TerminalBound)));
    }
}
