//! GBA, MBMS and Ks_local derivations against the worked example of vectors.md §2
//! (built on TS 35.208 set 1; formulas of TS 33.220 Annex B, TS 33.246 Annex F).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use keycast_crypto::KdfError;
use keycast_crypto::gba::{
    FC_GBA, GbaMode, LocalKeyParams, NafId, UA_PROTOCOL_HTTP_DIGEST, UA_PROTOCOL_MBMS, b_tid, kdf, ks_ext_naf,
    ks_from_ck_ik, ks_int_naf, ks_local, ks_naf, mbms_keys, mbms_srk, mrk, tmpi,
};
use keycast_crypto::hmac::hmac_sha256;
use keycast_crypto::keys::{Ck, Ik, Ks, KsIntNaf};

const IMPI: &str = "001010000000001@ims.mnc001.mcc001.3gppnetwork.org";
const BSF: &str = "bsf.example.org";
const BMSC: &str = "bmsc.example.org";
const KS_NAF: &str = "79d8098e4b9ef12c858a0da3471f6b2d29b4cbb549500dcb3c88154562de340d";
const KS_INT_NAF: &str = "5ecf80629e0becb2def8d9b3cb80ae3f99ab18f9c50f49fd5da0e6cfb6d0ee5f";
const MRK: &str = "06e4f3af25528d00c8739a646ea497dce1d98a7eb6f55f80b7b6a20e62e53623";

fn h<const N: usize>(s: &str) -> [u8; N] {
    hex::decode(s).unwrap().try_into().unwrap()
}

fn rand() -> [u8; 16] {
    h("23553cbe9637a89d218ae64dae47bf35")
}

fn ks() -> Ks {
    ks_from_ck_ik(
        &Ck::from_bytes(h("b40ba9a3c58b2a05bbf0d987b21bf8cb")),
        &Ik::from_bytes(h("f769bcd751044604127672711c6d3441")),
    )
}

#[test]
fn ks_is_ck_then_ik() {
    assert_eq!(ks().expose_secret(), &h::<32>("b40ba9a3c58b2a05bbf0d987b21bf8cbf769bcd751044604127672711c6d3441"));
}

#[test]
fn b_tid_of_example() {
    assert_eq!(b_tid(&rand(), BSF), "I1U8vpY3qJ0hiuZNrke/NQ==@bsf.example.org");
}

#[test]
fn kdf_input_s_for_gba_me() {
    // S of vectors.md §2; the KDF is HMAC-SHA-256(Ks, S). Erratum: the printed S has one
    // "30" too many in the IMPI (16 digits before "@" against L2 = 0x31 = 49 bytes); the
    // printed Ks_NAF matches the S with the real 15-digit IMPI used here.
    let s = hex::decode(concat!(
        "01",
        "6762612d6d65",
        "0006",
        "23553cbe9637a89d218ae64dae47bf35",
        "0010",
        "30303130313030303030303030303140696d732e6d6e633030312e6d63633030312e336770706e6574776f726b2e6f7267",
        "0031",
        "626d73632e6578616d706c652e6f7267",
        "0100000001",
        "0015",
    ))
    .unwrap();
    let naf_id = NafId::mbms(BMSC);
    let ours = kdf(ks().expose_secret(), FC_GBA, &[b"gba-me", &rand(), IMPI.as_bytes(), naf_id.as_bytes()]).unwrap();
    assert_eq!(*ours, hmac_sha256(ks().expose_secret(), &[&s]));
    assert_eq!(*ours, h::<32>(KS_NAF));
}

#[test]
fn naf_id_layout() {
    let naf_id = NafId::new(BMSC, UA_PROTOCOL_MBMS);
    assert_eq!(naf_id, NafId::mbms(BMSC));
    assert_eq!(naf_id.fqdn(), BMSC);
    assert_eq!(naf_id.ua_protocol(), [1, 0, 0, 0, 1]);
    assert_eq!(naf_id.as_bytes(), b"bmsc.example.org\x01\x00\x00\x00\x01");
    assert_eq!(UA_PROTOCOL_HTTP_DIGEST, [1, 0, 0, 0, 2]);
}

#[test]
fn naf_keys_of_example() {
    let naf_id = NafId::mbms(BMSC);
    let ks_naf = ks_naf(&ks(), &rand(), IMPI, &naf_id).unwrap();
    let ks_ext = ks_ext_naf(&ks(), &rand(), IMPI, &naf_id).unwrap();
    let ks_int = ks_int_naf(&ks(), &rand(), IMPI, &naf_id).unwrap();
    assert_eq!(ks_naf.expose_secret(), &h::<32>(KS_NAF));
    assert_eq!(ks_ext.expose_secret(), &h::<32>(KS_NAF));
    assert_eq!(ks_int.expose_secret(), &h::<32>(KS_INT_NAF));
    assert_eq!(BASE64.encode(ks_ext.expose_secret()), "edgJjkue8SyFig2jRx9rLSm0y7VJUA3LPIgVRWLeNA0=");
}

#[test]
fn naf_key_for_http_digest_protocol() {
    let naf_id = NafId::new(BMSC, UA_PROTOCOL_HTTP_DIGEST);
    assert_eq!(
        ks_naf(&ks(), &rand(), IMPI, &naf_id).unwrap().expose_secret(),
        &h::<32>("f44955937d0db165de245ab9db1e55fdde8d75fe651f79275b4253dc3218c1c5")
    );
}

#[test]
fn mrk_of_example() {
    let srk = mrk(&h(KS_NAF));
    assert_eq!(srk.expose_secret(), &h::<32>(MRK));
    assert_eq!(BASE64.encode(srk.expose_secret()), "BuTzryVSjQDIc5pkbqSX3OHZin629V+At7aiDmLlNiM=");
    // S = 01 ‖ "mbms-mrk" ‖ 0008 (TS 33.246 Annex F).
    assert_eq!(srk.expose_secret(), &hmac_sha256(&h::<32>(KS_NAF), &[&hex::decode("016d626d732d6d726b0008").unwrap()]));
}

#[test]
fn tmpi_of_example() {
    assert_eq!(tmpi(&ks(), &rand(), IMPI, BSF).unwrap(), "pklG4GYrUI2nw1xTNSS2Q/qrJkRfWnhw@tmpi.bsf.3gppnetwork.org");
}

#[test]
fn mbms_keys_per_gba_mode() {
    let naf_id = NafId::mbms(BMSC);
    let (smk, srk) = mbms_keys(GbaMode::GbaUMbmsCard, &ks(), &rand(), IMPI, &naf_id).unwrap();
    assert_eq!(smk.expose_secret(), &h::<32>(KS_INT_NAF));
    assert_eq!(srk.expose_secret(), &h::<32>(KS_NAF));

    for mode in [GbaMode::GbaUNonMbmsCard, GbaMode::GbaMe] {
        let (smk, srk) = mbms_keys(mode, &ks(), &rand(), IMPI, &naf_id).unwrap();
        assert_eq!(smk.expose_secret(), &h::<32>(KS_NAF), "{mode:?}");
        assert_eq!(srk.expose_secret(), &h::<32>(MRK), "{mode:?}");
        assert_eq!(mbms_srk(mode, &h(KS_NAF)), srk);
    }
    assert_eq!(mbms_srk(GbaMode::GbaUMbmsCard, &h(KS_NAF)).expose_secret(), &h::<32>(KS_NAF));
}

#[test]
fn ks_local_follows_profile_p10() {
    let key = KsIntNaf::from_bytes(h(KS_INT_NAF));
    let counter_limit = [0x11; 16];
    let p = LocalKeyParams {
        b_tid: "I1U8vpY3qJ0hiuZNrke/NQ==@bsf.example.org",
        terminal_id: b"3542810000",
        iccid: &h::<10>("98001010000000000010"),
        terminal_appli_id: b"platform",
        uicc_appli_id: b"platform",
        randx: &[0xa5; 16],
        counter_limit: &counter_limit,
    };
    // S built by hand: FC ‖ P0 ‖ L0 ‖ … ‖ P6 ‖ L6.
    let mut s = vec![0x01];
    for part in
        [p.b_tid.as_bytes(), p.terminal_id, p.iccid, p.terminal_appli_id, p.uicc_appli_id, p.randx, &counter_limit[..]]
    {
        s.extend_from_slice(part);
        s.extend_from_slice(&u16::try_from(part.len()).unwrap().to_be_bytes());
    }
    let ks_local = ks_local(&key, &p).unwrap();
    assert_eq!(ks_local.expose_secret(), &hmac_sha256(&h::<32>(KS_INT_NAF), &[&s]));
}

#[test]
fn rejects_kdf_parameter_longer_than_65535() {
    let long = vec![b'a'; 65536];
    assert_eq!(
        kdf(b"key", FC_GBA, &[b"gba-me", &long]).unwrap_err(),
        KdfError::ParameterTooLong { index: 1, len: 65536 }
    );
    let impi = String::from_utf8(long).unwrap();
    assert!(ks_naf(&ks(), &rand(), &impi, &NafId::mbms(BMSC)).is_err());
    // 65535 bytes still fit.
    assert!(kdf(b"key", FC_GBA, &[&[0u8; 65535]]).is_ok());
}
