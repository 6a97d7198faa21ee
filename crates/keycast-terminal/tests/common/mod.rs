//! Shared by the sans-IO tests: an emulated card holding a MUK for the test BSM, LTKMs sealed
//! under that MUK, and a stand-in BSM that challenges and signs its answers (Digest with the
//! same SRK as the terminal).
#![allow(dead_code)]

use keycast_card::usim::{Usim, UsimIdentity};
use keycast_card::{ApduCard, Emulator};
use keycast_crypto::keys::{Opc, SekPek, Smk, Srk, SubscriberKey};
use keycast_gba::client::{HttpRequest, HttpResponse, NafCredentials};
use keycast_mikey::{KeyDomainId, KeyValidity, LtkmContent, SekPekId, SolicitedPull};
use keycast_provisioning::digest::{Algorithm, Challenge, Credentials, GbaRealmPrefix, Password, Qop};
use keycast_provisioning::time::UtcTime;

pub const BSM: &str = "bmsc.example.org";
pub const BTID: &str = "btid-1@bsf.example.org";
pub const BTID2: &str = "btid-2@bsf.example.org";
pub const T0: u64 = 1_780_272_000;

pub fn now() -> UtcTime {
    UtcTime::from_unix_seconds(T0).unwrap()
}

pub fn at(secs: u64) -> UtcTime {
    UtcTime::from_unix_seconds(secs).unwrap()
}

pub fn kd() -> KeyDomainId {
    KeyDomainId::from_mcc_mnc("001", "01").unwrap()
}

pub fn smk() -> Smk {
    Smk::from_bytes([0x11; 32])
}

/// An emulated card whose MUK for [`BSM`] is [`smk`] under `btid`.
pub fn card_with_muk(btid: &str) -> ApduCard<Emulator> {
    let id =
        UsimIdentity { imsi: "001010000000001".into(), impi: "user@ims".into(), iccid: "8900100000000000001".into() };
    let mut usim = Usim::new(id, SubscriberKey::from_bytes([1; 16]), Opc::from_bytes([2; 16]));
    usim.mbms.install_muk(BSM, btid, smk()).unwrap();
    ApduCard::new(Emulator::new(usim))
}

/// A download-form LTKM (no extension) for SEK/PEK (group, number), sealed under [`smk`].
pub fn ltkm(btid: &str, group: u16, number: u16, ts: u32, v: bool) -> Vec<u8> {
    LtkmContent {
        csb_id: 0x0102_0304,
        verification_requested: v,
        srtp_cs: None,
        key_domain_id: kd(),
        sek_pek_id: SekPekId { key_group: group, key_number: number },
        ts,
        rand: [0x5a; 16],
        idi: BSM.into(),
        idr: btid.into(),
        srtp_policy: None,
        ext: None,
        key: Some(SekPek::from_bytes([0x22; 16])),
        validity: KeyValidity::TekIdWindow { seq_l: 0, seq_u: 100 },
    }
    .seal(&smk())
    .unwrap()
}

/// A solicited pull for `group`, sealed under [`smk`].
pub fn pull(btid: &str, group: u16, ts: u32) -> Vec<u8> {
    SolicitedPull {
        csb_id: 7,
        key_domain_id: kd(),
        key_group: group,
        ts,
        rand: [0x33; 16],
        idi: BSM.into(),
        idr: btid.into(),
    }
    .seal(&smk())
    .unwrap()
}

pub fn srk(n: u8) -> Srk {
    Srk::from_bytes([n; 32])
}

pub fn creds(btid: &str, n: u8) -> NafCredentials {
    NafCredentials {
        b_tid: btid.into(),
        srk: srk(n),
        realm_prefix: GbaRealmPrefix::Bootstrapping,
        naf_fqdn: BSM.into(),
    }
}

/// The stand-in BSM: its challenge, and answers signed with the SRK it believes in.
pub struct FakeBsm {
    pub nonce: String,
    pub realm: String,
    pub qop: Vec<Qop>,
}

impl FakeBsm {
    pub fn new() -> Self {
        FakeBsm {
            nonce: "bm9uY2UtMQ==".into(),
            realm: GbaRealmPrefix::Bootstrapping.realm(BSM),
            qop: vec![Qop::Auth, Qop::AuthInt],
        }
    }

    pub fn challenge(&self, stale: bool) -> HttpResponse {
        let c = Challenge {
            realm: self.realm.clone(),
            nonce: self.nonce.clone(),
            opaque: None,
            algorithm: Some(Algorithm::Md5),
            qop: self.qop.clone(),
            stale,
            other: vec![],
        };
        HttpResponse {
            status: 401,
            headers: vec![("WWW-Authenticate".into(), c.to_header_value().unwrap())],
            body: b"authentication required".to_vec(),
        }
    }

    /// Checks the request's Digest answer with SRK `n` and answers 200 with `body`, signed.
    pub fn answer(&self, request: &HttpRequest, n: u8, content_type: &str, body: &[u8]) -> HttpResponse {
        let authz = Credentials::parse(request.header("Authorization").expect("Authorization")).unwrap();
        let password = Password::base64_of_key(&[n; 32]);
        authz.verify_response(&password, "POST", &request.body).expect("Digest answer verifies");
        let info = authz.authentication_info(&password, body, None).unwrap().to_header_value().unwrap();
        HttpResponse {
            status: 200,
            headers: vec![("Content-Type".into(), content_type.into()), ("Authentication-Info".into(), info)],
            body: body.to_vec(),
        }
    }
}
