//! Opening a downloaded file: an OMA DRM DCF and the STKM that carries its TEK (TS 33.246 §6.6.3,
//! profile P-6, P-9 "Download (DCF)").
//!
//! The DCF's `obki` names the key (Key Domain ID ‖ SEK/PEK ID ‖ TEK ID); the STKM must name the
//! same one, or the file is refused before the card sees anything. The key holder (card or
//! GBA_ME store) checks the STKM like any other (MAC, key validity, freshness, rights) and
//! answers the TEK; the file's keys are derived from it ([`DcfKeys::for_key`]), its signature
//! checked, then it is decrypted.

use keycast_card::card::CardOpError;
use keycast_card::mbms::TekOut;
use keycast_mikey::{MikeyError, Stkm};
use keycast_traffic::dcf::{Dcf, DcfError, DcfHeaders, DcfKeys, open_dcf};
use keycast_traffic::srtp::Mki;

use crate::key_holder::MbmsKeyHolder;

/// Why a downloaded file was not opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DownloadError {
    /// The DCF is malformed, its signature does not verify, or it does not decrypt.
    #[error("DCF: {0}")]
    Dcf(#[from] DcfError),
    /// The STKM is malformed.
    #[error("STKM: {0}")]
    Stkm(#[from] MikeyError),
    /// The DCF names no key in the Keycast form (`obki` type 0x02).
    #[error("the DCF names no key (no obki entry of type 0x02)")]
    NoKeyNamed,
    /// The STKM carries another key than the one the DCF names.
    #[error("the STKM carries key {stkm} but the file needs {file}")]
    OtherKey {
        /// SEK/PEK ID ‖ TEK ID of the STKM.
        stkm: Mki,
        /// SEK/PEK ID ‖ TEK ID the DCF names.
        file: Mki,
    },
    /// The card refused the STKM (e.g. "key not found": buy or request the SEK/PEK first).
    #[error("the card refused the STKM: {0}")]
    Card(#[from] CardOpError),
    /// The card answered the TEK in a form this terminal cannot use (terminal-bound or over the
    /// secure channel), or with a salt (a streaming STKM).
    #[error("the card's TEK is not a download TEK in the clear")]
    Unusable,
}

/// Opens `dcf` with the TEK that `stkm` carries, asking `holder` for it: the headers and the
/// content.
///
/// # Errors
/// [`DownloadError`]; nothing reaches the card when the file or the STKM is malformed or they
/// name different keys.
pub fn open_download<H: MbmsKeyHolder>(
    holder: &mut H,
    stkm: &[u8],
    dcf: &[u8],
) -> Result<(DcfHeaders, Vec<u8>), DownloadError> {
    let (file_domain, file_key) = Dcf::parse(dcf)?.key().ok_or(DownloadError::NoKeyNamed)?;
    let decoded = Stkm::decode(stkm)?;
    let stkm_key = Mki::new(u32::from_be_bytes(decoded.sek_pek_id().to_bytes()), decoded.tek_id());
    if decoded.key_domain_id().0 != file_domain || stkm_key != file_key {
        return Err(DownloadError::OtherKey { stkm: stkm_key, file: file_key });
    }
    let TekOut::Clear { tek, salt: None } = holder.mtk_generation(stkm)? else {
        return Err(DownloadError::Unusable);
    };
    Ok(open_dcf(dcf, &DcfKeys::for_key(&tek, file_key))?)
}

#[cfg(test)]
mod tests {
    use keycast_card::usim::{Usim, UsimIdentity};
    use keycast_card::{ApduCard, Emulator};
    use keycast_crypto::keys::{Opc, SekPek, Smk, SubscriberKey, Tek};
    use keycast_mikey::{
        KeyDomainId, KeyValidity, LtkmContent, LtkmExt, ProtectionAfterReception, SecurityPolicy, SecurityPolicyExt,
        SekPekId, StkmContent, StkmExt, TekField, TrafficProtectionProtocol,
    };
    use keycast_traffic::dcf::seal_dcf;

    use super::*;

    const TS: u32 = 3_990_000_000;
    const RAND: [u8; 16] = [0x3c; 16];

    fn kd() -> KeyDomainId {
        KeyDomainId::from_mcc_mnc("001", "01").unwrap()
    }

    fn sek_id() -> SekPekId {
        SekPekId { key_group: 9, key_number: 2 }
    }

    fn sek() -> SekPek {
        SekPek::from_bytes([0x5a; 16])
    }

    fn stkm(tek_id: u16, tek: &Tek) -> Vec<u8> {
        StkmContent {
            csb_id: 0x0102_0304,
            key_domain_id: kd(),
            sek_pek_id: sek_id(),
            tek_id,
            ts: TS + u32::from(tek_id),
            ext: Some(StkmExt {
                protection_after_reception: ProtectionAfterReception::ServiceProtectionOnly,
                traffic_protection_protocol: TrafficProtectionProtocol::Dcf,
                traffic_authentication: true,
                tbk_id: None,
                access_criteria: None,
            }),
            tek: TekField::Clear(tek.clone()),
            salt: None,
        }
        .seal(&sek(), &RAND)
        .unwrap()
    }

    fn dcf(tek_id: u16, tek: &Tek, content: &[u8]) -> Vec<u8> {
        let key = Mki::new(u32::from_be_bytes(sek_id().to_bytes()), tek_id);
        seal_dcf(&DcfHeaders::new("text/plain", kd().0, key), &DcfKeys::for_key(tek, key), [7; 16], content).unwrap()
    }

    /// An emulated card, over APDUs, holding the SEK when `with_key`.
    fn card(with_key: bool) -> ApduCard<Emulator> {
        let id = UsimIdentity {
            imsi: "001010000000001".into(),
            impi: "user@ims".into(),
            iccid: "8900100000000000001".into(),
        };
        let mut usim = Usim::new(id, SubscriberKey::from_bytes([1; 16]), Opc::from_bytes([2; 16]));
        let store = &mut usim.mbms;
        let smk = Smk::from_bytes([0x21; 32]);
        store.install_muk("bsm.example.org", "btid@bsf.example.org", smk.clone()).unwrap();
        if with_key {
            let ltkm = LtkmContent {
                csb_id: 7,
                verification_requested: false,
                srtp_cs: None,
                key_domain_id: kd(),
                sek_pek_id: sek_id(),
                ts: 1,
                rand: RAND,
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
                key: Some(sek()),
                validity: KeyValidity::TsWindow { ts_low: TS, ts_high: TS + 3600 },
            };
            store.msk_update(&ltkm.seal(&smk).unwrap()).unwrap();
        }
        ApduCard::new(Emulator::new(usim))
    }

    #[test]
    fn the_card_s_tek_opens_the_file() {
        let tek = Tek::from_bytes([0x44; 16]);
        let file = dcf(1, &tek, b"a file bought for download");
        let (headers, content) = open_download(&mut card(true), &stkm(1, &tek), &file).unwrap();
        assert_eq!(content, b"a file bought for download");
        assert_eq!(headers.content_type, "text/plain");
    }

    #[test]
    fn refusals() {
        let tek = Tek::from_bytes([0x44; 16]);
        let file = dcf(2, &tek, b"content");
        // Another TEK ID than the file names: refused before the card is asked.
        assert!(matches!(open_download(&mut card(true), &stkm(1, &tek), &file), Err(DownloadError::OtherKey { .. })));
        // The card lacks the SEK/PEK.
        assert!(matches!(open_download(&mut card(false), &stkm(2, &tek), &file), Err(DownloadError::Card(_))));
        // The STKM's TEK is not the file's: the signature fails.
        let other = stkm(2, &Tek::from_bytes([0x45; 16]));
        assert!(matches!(
            open_download(&mut card(true), &other, &file),
            Err(DownloadError::Dcf(DcfError::BadSignature))
        ));
        // A tampered file.
        let mut bad = file.clone();
        let last = bad.len() - 30;
        bad[last] ^= 1;
        assert!(matches!(open_download(&mut card(true), &stkm(2, &tek), &bad), Err(DownloadError::Dcf(_))));
    }
}
