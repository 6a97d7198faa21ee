//! Property tests: generated fragments, USDs and SDPs survive encode → decode unchanged, and no
//! input — random text or a randomly damaged example — makes a decoder panic; whatever decodes
//! also round-trips.

mod common;

use common::{FRAGMENTS, data};
use keycast_guide::fragments::{
    Access, AccessType, BroadcastServiceDelivery, Content, DescriptionRef, EncryptionType, FileDescription, Fragment,
    KeyManagementSystem, KmsType, MonetaryPrice, PermissionsIssuerUri, PortalUrl, PriceInfo, ProtectionKeyId,
    ProtectionType, PurchaseChannel, PurchaseData, PurchaseItem, Service, ServiceType, SessionDescription,
    TerminalBindingKeyId, TotalNumberToken, Validity,
};
use keycast_guide::sdp::{Connection, RtpMap, Sdp, SdpMedia};
use keycast_guide::usd::{DeliveryMethod, UsdName, UserServiceBundle, UserServiceDescription};
use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;

/// Identifiers and URIs.
fn ident() -> impl Strategy<Value = String> {
    "[A-Za-z0-9:/._-]{1,24}"
}

/// Free text with the characters XML must escape, a non-ASCII letter and an inner line break.
fn text() -> impl Strategy<Value = String> {
    "[A-Za-z0-9&<>\"'é]([A-Za-z0-9 &<>\"'é\n]{0,10}[A-Za-z0-9&<>\"'é])?"
}

fn validity() -> impl Strategy<Value = Validity> {
    (of(any::<u32>()), of(any::<u32>())).prop_map(|(a, b)| match (a, b) {
        (Some(a), Some(b)) => Validity { valid_from: Some(a.min(b)), valid_to: Some(a.max(b)) },
        (a, b) => Validity { valid_from: a, valid_to: b },
    })
}

fn pkid() -> impl Strategy<Value = ProtectionKeyId> {
    prop_oneof![
        (any::<[u8; 3]>(), any::<u16>()).prop_map(|(kd, kg)| ProtectionKeyId::smartcard(kd, kg)),
        (1u8..=255, vec(any::<u8>(), 0..8), of(any::<u64>()), of(any::<u64>()))
            .prop_map(|(kind, value, min, max)| ProtectionKeyId { kind, value, min, max }),
    ]
}

fn service() -> impl Strategy<Value = Service> {
    (
        ident(),
        any::<u32>(),
        validity(),
        of(ident()),
        of(ident()),
        vec(pkid(), 0..3),
        vec(text(), 0..3),
        vec(any::<u8>(), 0..3),
    )
        .prop_map(|(id, version, validity, g, b, pk, names, types)| Service {
            id,
            version,
            validity,
            global_service_id: g,
            base_cid: b,
            protection_key_ids: pk,
            names,
            service_types: types.into_iter().map(ServiceType::from).collect(),
        })
}

fn content() -> impl Strategy<Value = Content> {
    (ident(), any::<u32>(), validity(), of(ident()), vec(ident(), 0..3), vec(pkid(), 0..2), vec(text(), 0..3)).prop_map(
        |(id, version, validity, g, refs, pk, names)| Content {
            id,
            version,
            validity,
            global_content_id: g,
            service_refs: refs,
            protection_key_ids: pk,
            names,
        },
    )
}

fn kms_type() -> impl Strategy<Value = KmsType> {
    prop_oneof![
        Just(KmsType::GbaUMbms),
        Just(KmsType::GbaMeMbms),
        Just(KmsType::DrmPki),
        Just(KmsType::ProvBcmcs),
        "x-[a-z]{1,8}".prop_map(KmsType::Other),
    ]
}

fn kms() -> impl Strategy<Value = KeyManagementSystem> {
    (kms_type(), of(any::<u8>()), vec(pkid(), 0..3), of((ident(), of(any::<bool>()))), of((text(), of(ident()))))
        .prop_map(|(kms_type, pt, pk, pi, tbk)| KeyManagementSystem {
            kms_type,
            protection_type: pt.map(ProtectionType::from),
            protection_key_ids: pk,
            permissions_issuer_uri: pi.map(|(uri, kind)| PermissionsIssuerUri { uri, kind }),
            terminal_binding_key_id: tbk.map(|(id, t)| TerminalBindingKeyId { id, tbk_permissions_issuer_uri: t }),
        })
}

fn dref() -> impl Strategy<Value = DescriptionRef> {
    (ident(), of(ident())).prop_map(|(uri, id_ref)| DescriptionRef { uri, id_ref })
}

fn access() -> impl Strategy<Value = Access> {
    let sd = (of(text()), vec(dref(), 0..2), vec(dref(), 0..2), vec(dref(), 0..2))
        .prop_map(|(sdp, a, b, c)| SessionDescription { sdp, sdp_refs: a, usbd_refs: b, adp_refs: c });
    let at = prop_oneof![
        Just(AccessType::Unicast),
        (of(any::<u8>()), of(sd), of(of(ident()))).prop_map(|(bds_type, sd, fd)| AccessType::Broadcast(
            BroadcastServiceDelivery {
                bds_type,
                session_description: sd,
                file_description: fd.map(|uri| FileDescription { uri }),
            }
        )),
    ];
    (ident(), any::<u32>(), validity(), vec(kms(), 0..3), of(any::<u8>()), at, vec(ident(), 0..3)).prop_map(
        |(id, version, validity, k, e, access_type, refs)| Access {
            id,
            version,
            validity,
            key_management_systems: k,
            encryption_type: e.map(EncryptionType::from),
            access_type,
            service_refs: refs,
        },
    )
}

fn purchase_item() -> impl Strategy<Value = PurchaseItem> {
    (
        ident(),
        any::<u32>(),
        validity(),
        ident(),
        vec(ident(), 0..3),
        vec(ident(), 0..3),
        vec(pkid(), 0..2),
        vec(text(), 0..2),
        of(any::<bool>()),
    )
        .prop_map(|(id, version, validity, g, s, c, pk, names, closed)| PurchaseItem {
            id,
            version,
            validity,
            global_purchase_item_id: g,
            service_refs: s,
            content_refs: c,
            protection_key_ids: pk,
            names,
            closed,
        })
}

fn purchase_data() -> impl Strategy<Value = PurchaseData> {
    let price =
        ("[A-Z]{3}", "[0-9]{1,4}(\\.[0-9]{1,2})?").prop_map(|(currency, amount)| MonetaryPrice { currency, amount });
    let tokens = (any::<u64>(), of(ident()), of(any::<u64>()), of(ident()), of(any::<u64>())).prop_map(
        |(count, token_type, consumption_amount, consumption_unit, max_replay)| TotalNumberToken {
            count,
            token_type,
            consumption_amount,
            consumption_unit,
            max_replay,
        },
    );
    let info = (of(any::<u8>()), vec(price, 0..3), of("P[0-9]{1,2}[DMY]"), of(tokens)).prop_map(
        |(subscription_type, prices, subscription_period, tokens)| PriceInfo {
            subscription_type,
            prices,
            subscription_period,
            tokens,
        },
    );
    (ident(), any::<u32>(), validity(), vec(text(), 0..2), of(info), ident(), vec(ident(), 0..3)).prop_map(
        |(id, version, validity, d, p, pi, pc)| PurchaseData {
            id,
            version,
            validity,
            descriptions: d,
            price_info: p,
            purchase_item_ref: pi,
            purchase_channel_refs: pc,
        },
    )
}

fn purchase_channel() -> impl Strategy<Value = PurchaseChannel> {
    (
        ident(),
        any::<u32>(),
        validity(),
        of(ident()),
        vec(text(), 0..2),
        vec((ident(), of(ident())), 0..2),
        vec(ident(), 0..2),
    )
        .prop_map(|(id, version, validity, ri, names, portals, purchase)| PurchaseChannel {
            id,
            version,
            validity,
            rights_issuer_uri: ri,
            names,
            portal_urls: portals.into_iter().map(|(url, s)| PortalUrl { url, supported_service: s }).collect(),
            purchase_urls: purchase,
        })
}

fn fragment() -> impl Strategy<Value = Fragment> {
    prop_oneof![
        service().prop_map(Fragment::Service),
        content().prop_map(Fragment::Content),
        access().prop_map(Fragment::Access),
        purchase_item().prop_map(Fragment::PurchaseItem),
        purchase_data().prop_map(Fragment::PurchaseData),
        purchase_channel().prop_map(Fragment::PurchaseChannel),
    ]
}

fn usd() -> impl Strategy<Value = UserServiceBundle> {
    let dm = (ident(), of(ident()), of(ident())).prop_map(|(s, p, a)| DeliveryMethod {
        session_description_uri: s,
        protection_description_uri: p,
        associated_procedure_description_uri: a,
    });
    let one = (ident(), vec((text(), of("[a-z]{2}")), 0..2), vec("[a-z]{2}", 0..2), vec(dm, 1..3)).prop_map(
        |(service_id, names, langs, dms)| UserServiceDescription {
            service_id,
            names: names.into_iter().map(|(name, lang)| UsdName { name, lang }).collect(),
            service_languages: langs,
            delivery_methods: dms,
        },
    );
    (of(ident()), vec(one, 1..3))
        .prop_map(|(fec_description_uri, services)| UserServiceBundle { fec_description_uri, services })
}

fn sdp() -> impl Strategy<Value = Sdp> {
    let conn = ("[0-9.]{1,15}", of(any::<u8>())).prop_map(|(address, ttl)| Connection {
        addr_type: "IP4".into(),
        address,
        ttl,
        count: None,
    });
    let rtpmap = (0u8..=127, "[A-Za-z0-9-]{1,8}", any::<u32>(), of("[0-9]{1,2}")).prop_map(
        |(payload_type, encoding, clock_rate, parameters)| RtpMap { payload_type, encoding, clock_rate, parameters },
    );
    let media = (
        "(audio|video|application)",
        any::<u16>(),
        "(RTP/AVP|RTP/SAVP|UDP)",
        vec("[0-9]{1,3}", 1..3),
        of(conn.clone()),
        vec(rtpmap, 0..3),
        of(vec(any::<u8>(), 1..16)),
        vec("fmtp:[a-z0-9=;-]{1,12}", 0..2),
    )
        .prop_map(|(media, port, proto, formats, connection, rtpmaps, mikey, attributes)| SdpMedia {
            media,
            port,
            port_count: None,
            proto,
            formats,
            connection,
            rtpmaps,
            mikey,
            attributes,
            other: Vec::new(),
        });
    ("[A-Za-z0-9 ]{0,6}[A-Za-z0-9]", of(conn), of(vec(any::<u8>(), 1..16)), vec(media, 0..4)).prop_map(
        |(session_name, connection, mikey, media)| Sdp {
            origin: Some("- 1 1 IN IP4 192.0.2.1".into()),
            session_name,
            connection,
            timing: Some("0 0".into()),
            mikey,
            attributes: Vec::new(),
            other: Vec::new(),
            media,
        },
    )
}

/// A damaged copy of `doc`: a few characters replaced, removed or inserted.
fn damaged(doc: &'static str) -> impl Strategy<Value = String> {
    vec((any::<prop::sample::Index>(), 0u8..3, any::<char>()), 1..6).prop_map(move |edits| {
        let mut chars: Vec<char> = doc.chars().collect();
        for (at, op, c) in edits {
            if chars.is_empty() {
                break;
            }
            let i = at.index(chars.len());
            match op {
                0 => chars[i] = c,
                1 => {
                    chars.remove(i);
                }
                _ => chars.insert(i, c),
            }
        }
        chars.into_iter().collect()
    })
}

fn examples() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = FRAGMENTS.iter().map(|f| &*Box::leak(data(f).into_boxed_str())).collect();
    v.push(Box::leak(data("usd.xml").into_boxed_str()));
    v.push(Box::leak(data("news24.sdp").into_boxed_str()));
    v
}

/// Decodes `s` every way there is; whatever decodes must round-trip.
fn decode_everything(s: &str) {
    if let Ok(f) = Fragment::from_xml(s) {
        assert_eq!(Fragment::from_xml(&f.to_xml()).unwrap(), f);
    }
    if let Ok(b) = UserServiceBundle::from_xml(s) {
        assert_eq!(UserServiceBundle::from_xml(&b.to_xml()).unwrap(), b);
    }
    if let Ok(p) = Sdp::parse(s) {
        assert_eq!(Sdp::parse(&p.to_sdp()).unwrap(), p);
    }
    let _ = keycast_guide::spd::parse_spd(s);
}

proptest! {
    #[test]
    fn fragments_round_trip(f in fragment()) {
        let xml = f.to_xml();
        prop_assert_eq!(Fragment::from_xml(&xml).unwrap(), f);
    }

    #[test]
    fn usd_round_trips(b in usd()) {
        prop_assert_eq!(UserServiceBundle::from_xml(&b.to_xml()).unwrap(), b);
    }

    #[test]
    fn sdp_round_trips(s in sdp()) {
        prop_assert_eq!(Sdp::parse(&s.to_sdp()).unwrap(), s);
    }

    #[test]
    fn random_text_never_panics(s in "\\PC{0,300}") {
        decode_everything(&s);
    }

    #[test]
    fn damaged_examples_never_panic_and_round_trip(
        doc in proptest::sample::select(examples()).prop_flat_map(damaged)
    ) {
        decode_everything(&doc);
    }
}
