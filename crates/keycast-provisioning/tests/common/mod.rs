//! Shared by the integration tests: proptest strategies for every message, and `xmllint`.
#![allow(dead_code)]

use keycast_provisioning::mbms::{self, FecProtection, KeyId, KeyManagement, MediaFlow, MskRef, ResponseCode};
use keycast_provisioning::sprov::*;
use keycast_provisioning::time::UtcTime;
use proptest::prelude::*;
use std::path::{Path, PathBuf};
use std::process::Command;

// ------------------------------------------------------------------------------------ strings

/// Free text that survives XML unchanged (no controls, no surrounding white space).
pub fn value() -> impl Strategy<Value = String> {
    "[!-~\u{e9}]([ -~\u{e9}]{0,30}[!-~])?"
}

/// A URI-like identifier that `xs:anyURI` accepts.
pub fn uri() -> impl Strategy<Value = String> {
    "[a-z]{1,6}:[A-Za-z0-9._~:/-]{1,24}"
}

// --------------------------------------------------------------------------------------- MBMS

pub fn mbms_msk() -> impl Strategy<Value = MskRef> {
    (any::<[u8; 3]>(), any::<[u8; 4]>()).prop_map(|(key_domain_id, msk_id)| MskRef { key_domain_id, msk_id })
}

pub fn mbms_code() -> impl Strategy<Value = ResponseCode> {
    prop_oneof![
        (100u16..=999).prop_map(ResponseCode::new),
        (100u16..=999, value()).prop_map(|(code, r)| ResponseCode { code, reason: r.into() }),
    ]
}

pub fn security_description() -> impl Strategy<Value = mbms::SecurityDescription> {
    let km = (prop::collection::vec(uri(), 1..4), any::<u64>(), any::<u64>(), any::<bool>()).prop_map(
        |(server_uris, offset_time, random_time_period, uicc_key_management)| KeyManagement {
            server_uris,
            offset_time,
            random_time_period,
            uicc_key_management,
        },
    );
    let flow = (value(), mbms_msk()).prop_map(|(flow_id, msk)| MediaFlow { flow_id, msk });
    let key_id = prop::collection::vec(flow, 1..4).prop_map(|media_flows| KeyId { media_flows });
    let fec = (any::<u64>(), prop::option::of(any::<u64>()), prop::option::of(value()))
        .prop_map(|(a, b, c)| FecProtection { fec_encoding_id: a, fec_instance_id: b, fec_oti_extension: c });
    (prop::option::of(km), prop::collection::vec(key_id, 1..3), prop::option::of(fec)).prop_map(
        |(key_management, key_ids, fec_protection)| mbms::SecurityDescription {
            key_management,
            key_ids,
            fec_protection,
        },
    )
}

/// Every MBMS document kind, encoded, with the schema file it must validate against.
pub fn mbms_documents() -> impl Strategy<Value = (&'static str, String)> {
    let services = || prop::collection::vec(uri(), 1..4);
    prop_oneof![
        security_description().prop_map(|d| ("3gpp-26346-security.xsd", d.to_xml().unwrap())),
        services().prop_map(|service_ids| (
            "3gpp-26346-security-registration.xsd",
            mbms::RegisterRequest { service_ids }.to_xml().unwrap()
        )),
        services().prop_map(|service_ids| (
            "3gpp-26346-security-deregistration.xsd",
            mbms::DeregisterRequest { service_ids }.to_xml().unwrap()
        )),
        prop::collection::vec(mbms_msk(), 1..4)
            .prop_map(|msks| ("3gpp-26346-msk-request.xsd", mbms::MskRequest { msks }.to_xml().unwrap())),
        prop::collection::vec((uri(), mbms_code()), 1..4).prop_map(|v| (
            "3gpp-26346-security-registration-response.xsd",
            mbms::RegisterResponse {
                responses: v
                    .into_iter()
                    .map(|(service_id, response_code)| mbms::ServiceStatus { service_id, response_code })
                    .collect()
            }
            .to_xml()
            .unwrap()
        )),
        prop::collection::vec((mbms_msk(), mbms_code()), 1..4).prop_map(|v| (
            "3gpp-26346-msk-response.xsd",
            mbms::MskResponse {
                responses: v.into_iter().map(|(msk, response_code)| mbms::MskStatus { msk, response_code }).collect()
            }
            .to_xml()
            .unwrap()
        )),
    ]
}

// -------------------------------------------------------------------------------------- sprov

pub fn status() -> impl Strategy<Value = StatusCode> {
    prop_oneof![
        (0u16..=29).prop_map(StatusCode::from),
        Just(StatusCode::InsufficientCharge),
        any::<u16>().prop_map(StatusCode::from)
    ]
}

pub fn client() -> impl Strategy<Value = Option<ClientIdentity>> {
    prop::option::of(prop_oneof![
        "[0-9]{6,15}".prop_map(ClientIdentity::Imsi),
        uri().prop_map(ClientIdentity::Uri),
        value().prop_map(ClientIdentity::Impi),
        value().prop_map(ClientIdentity::Btid),
    ])
}

pub fn item_ref() -> impl Strategy<Value = PurchaseItemRef> {
    (uri(), prop::option::of(uri()))
        .prop_map(|(global_id_ref, purchase_data_id_ref)| PurchaseItemRef { global_id_ref, purchase_data_id_ref })
}

pub fn price() -> impl Strategy<Value = Option<Price>> {
    prop::option::of(
        ("[0-9]{1,15}(\\.[0-9]{1,6})?", "[A-Z]{3}").prop_map(|(amount, currency)| Price { amount, currency }),
    )
}

pub fn item_status() -> impl Strategy<Value = ItemStatus> {
    (item_ref(), status()).prop_map(|(item, status)| ItemStatus { item, status })
}

pub fn key() -> impl Strategy<Value = BcastKeyId> {
    any::<[u8; 7]>().prop_map(BcastKeyId::from_bytes)
}

pub fn time() -> impl Strategy<Value = Option<UtcTime>> {
    prop::option::of((0..=UtcTime::MAX.unix_seconds()).prop_map(|s| UtcTime::from_unix_seconds(s).unwrap()))
}

pub fn ltkms() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 1..60), 0..3)
}

fn items<T: std::fmt::Debug>(s: impl Strategy<Value = T>, min: usize) -> impl Strategy<Value = Vec<T>> {
    prop::collection::vec(s, min..4)
}

/// Any of the fourteen messages, with every optional part sometimes present.
pub fn sprov_message() -> impl Strategy<Value = SprovMessage> {
    let rid = any::<u32>();
    prop_oneof![
        (rid, client(), items((item_ref(), price()), 1)).prop_map(|(request_id, client, v)| {
            ServiceRequest {
                request_id,
                client,
                items: v.into_iter().map(|(item, price)| PurchaseRequestItem { item, price }).collect(),
            }
            .into()
        }),
        (rid, status(), desc(), any::<bool>(), items(item_status(), 0), ltkms()).prop_map(
            |(request_id, status, description, registration_required, items, ltkms)| {
                ServiceResponse { request_id, status, description, registration_required, items, ltkms }.into()
            }
        ),
        (rid, client(), items((key(), prop::option::of(uri()), prop::option::of(any::<u32>()), price()), 1)).prop_map(
            |(request_id, client, v)| {
                TokenPurchaseRequest {
                    request_id,
                    client,
                    items: v
                        .into_iter()
                        .map(|(key_id, global_id_ref, number_of_tokens, price)| TokenPurchaseItem {
                            key_id,
                            global_id_ref,
                            number_of_tokens,
                            price,
                        })
                        .collect(),
                }
                .into()
            }
        ),
        (rid, status(), desc(), items((key(), status(), prop::option::of(any::<u32>())), 0), ltkms()).prop_map(
            |(request_id, status, description, v, ltkms)| {
                TokenPurchaseResponse {
                    request_id,
                    status,
                    description,
                    items: v
                        .into_iter()
                        .map(|(key_id, status, number_of_tokens)| TokenStatus { key_id, status, number_of_tokens })
                        .collect(),
                    ltkms,
                }
                .into()
            }
        ),
        (rid, client(), items(item_ref(), 1)).prop_map(|(request_id, client, items)| UnsubscribeRequest {
            request_id,
            client,
            items
        }
        .into()),
        (rid, status(), desc(), items(item_status(), 0)).prop_map(|(request_id, status, description, items)| {
            UnsubscribeResponse { request_id, status, description, items }.into()
        }),
        (rid, client(), items(item_ref(), 1)).prop_map(|(request_id, client, items)| RegistrationRequest {
            request_id,
            client,
            items
        }
        .into()),
        (rid, status(), desc(), items(item_status(), 0), ltkms()).prop_map(
            |(request_id, status, description, items, ltkms)| {
                RegistrationResponse { request_id, status, description, items, ltkms }.into()
            }
        ),
        (rid, client(), items(item_ref(), 1)).prop_map(|(request_id, client, items)| DeregistrationRequest {
            request_id,
            client,
            items
        }
        .into()),
        (rid, status(), desc(), items(item_status(), 0)).prop_map(|(request_id, status, description, items)| {
            DeregistrationResponse { request_id, status, description, items }.into()
        }),
        (rid, client(), items((key(), time(), time()), 1)).prop_map(|(request_id, client, v)| {
            LtkmRequest {
                request_id,
                client,
                keys: v
                    .into_iter()
                    .map(|(key, valid_from, valid_until)| LtkmKeyRequest { key, valid_from, valid_until })
                    .collect(),
            }
            .into()
        }),
        (rid, status(), desc(), items((key(), status()), 0), ltkms()).prop_map(
            |(request_id, status, description, v, ltkms)| {
                LtkmResponse {
                    request_id,
                    status,
                    description,
                    keys: v.into_iter().map(|(key, status)| KeyStatus { key, status }).collect(),
                    ltkms,
                }
                .into()
            }
        ),
        (rid, client(), inquiry_type(), items(item_ref(), 0)).prop_map(|(request_id, client, inquiry_type, items)| {
            AccountInquiry { request_id, client, inquiry_type, items }.into()
        }),
        (
            rid,
            status(),
            desc(),
            items((item_ref(), prop::option::of(status()), time(), time(), price()), 0),
            prop::option::of(value())
        )
            .prop_map(|(request_id, status, description, v, billing_info)| {
                AccountInquiryResponse {
                    request_id,
                    status,
                    description,
                    items: v
                        .into_iter()
                        .map(|(item, status, valid_from, valid_until, price)| AccountItem {
                            item,
                            status,
                            valid_from,
                            valid_until,
                            price,
                        })
                        .collect(),
                    billing_info,
                }
                .into()
            }),
    ]
}

fn desc() -> impl Strategy<Value = Option<String>> {
    prop::option::of(value())
}

pub fn inquiry_type() -> impl Strategy<Value = InquiryType> {
    prop_oneof![
        Just(InquiryType::PurchaseItem),
        Just(InquiryType::ServiceGuide),
        Just(InquiryType::BillingInfo),
        Just(InquiryType::Purchase),
        Just(InquiryType::PurchaseFragment),
    ]
}

// ------------------------------------------------------------------------------------ xmllint

/// The crate's `schemas/` directory.
pub fn schema_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")
}

/// The crate's `tests/data/` directory.
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("data")
}

/// True when `xmllint` can be run; otherwise prints the skip notice.
pub fn have_xmllint() -> bool {
    let ok = Command::new("xmllint").arg("--version").output().is_ok_and(|o| o.status.success());
    if !ok {
        println!("skipped: xmllint not installed");
    }
    ok
}

/// Runs `xmllint --noout --schema <schema> <file>`; Ok when it validates, Err with its output.
pub fn xmllint(schema: &Path, file: &Path) -> Result<(), String> {
    let out = Command::new("xmllint")
        .arg("--noout")
        .arg("--nonet")
        .arg("--schema")
        .arg(schema)
        .arg(file)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

/// `n` deterministic samples of a strategy.
pub fn samples<S: Strategy>(s: S, n: usize, seed: u8) -> Vec<S::Value> {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let mut runner = TestRunner::new_with_rng(Config::default(), TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]));
    (0..n).map(|_| s.new_tree(&mut runner).unwrap().current()).collect()
}
