//! The Guide bundle: reference checks and the lookups a terminal needs.

mod common;

use common::{data, example_guide};
use keycast_guide::GuideError;
use keycast_guide::fragments::{Fragment, Service};

#[test]
fn example_guide_is_consistent() {
    let g = example_guide();
    g.check().unwrap();
    assert_eq!(g.services.len(), 1);
    assert_eq!(g.accesses.len(), 2);
    assert_eq!(g.purchase_data.len(), 2);
}

#[test]
fn services_with_offers_and_prices() {
    let g = example_guide();
    let all = g.services_with_offers();
    assert_eq!(all.len(), 1);
    let s = &all[0];
    assert_eq!(s.service.names[0], "News 24");
    assert_eq!(s.accesses.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(), ["acc-news24-sdp", "acc-news24-usd"]);
    let offers: Vec<_> = s
        .offers
        .iter()
        .map(|o| {
            let p = &o.purchase_data.price_info.as_ref().unwrap().prices[0];
            (o.user_service_id.as_str(), p.currency.as_str(), p.amount.as_str(), o.channels[0].id.as_str())
        })
        .collect();
    assert_eq!(
        offers,
        [
            ("urn:operator.example:pi:news24pd-news24-month", "EUR", "4.99", "pc-operator"),
            ("urn:operator.example:pi:news24pd-news24-tokens", "EUR", "1.00", "pc-operator"),
        ]
    );
    let back = g.offer_by_user_service_id("urn:operator.example:pi:news24pd-news24-tokens").unwrap();
    assert_eq!(back.purchase_data.id, "pd-news24-tokens");
    assert!(g.offer_by_user_service_id("urn:nothing").is_none());
}

#[test]
fn offers_reach_a_service_through_content() {
    let mut g = example_guide();
    let item = g.purchase_items.get_mut("pi-news24").unwrap();
    item.service_refs.clear();
    // Still covered through Content cnt-evening, which belongs to svc-news24.
    assert_eq!(g.offers_for_service("svc-news24").len(), 2);
    g.purchase_items.get_mut("pi-news24").unwrap().content_refs.clear();
    assert!(g.offers_for_service("svc-news24").is_empty());
}

#[test]
fn check_reports_every_dangling_reference() {
    let mut g = example_guide();
    g.purchase_channels.clear();
    g.services.clear();
    let errors = g.check().unwrap_err();
    let mut found: Vec<(String, String)> = errors
        .iter()
        .map(|e| match e {
            GuideError::DanglingReference { fragment, element, target, .. } => {
                (format!("{fragment}/{element}"), target.clone())
            }
            other => panic!("{other:?}"),
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            ("Access/ServiceReference".to_owned(), "svc-news24".to_owned()),
            ("Access/ServiceReference".to_owned(), "svc-news24".to_owned()),
            ("Content/ServiceReference".to_owned(), "svc-news24".to_owned()),
            ("PurchaseData/PurchaseChannelReference".to_owned(), "pc-operator".to_owned()),
            ("PurchaseData/PurchaseChannelReference".to_owned(), "pc-operator".to_owned()),
            ("PurchaseItem/ServiceReference".to_owned(), "svc-news24".to_owned()),
        ]
    );
}

#[test]
fn check_reports_a_missing_purchase_item() {
    let mut g = example_guide();
    g.purchase_items.clear();
    let errors = g.check().unwrap_err();
    assert!(errors.iter().any(|e| e.to_string()
        == "PurchaseData `pd-news24-month`: PurchaseItemReference `pi-news24` resolves to no fragment"));
    assert!(g.offers().is_empty());
}

#[test]
fn newer_versions_replace_older_ones_only() {
    let mut g = example_guide();
    let mut s: Service = Service::from_xml(&data("service.xml")).unwrap();
    s.version = 2;
    s.names = vec!["Old".into()];
    assert!(!g.insert(Fragment::Service(s.clone())));
    assert_eq!(g.services["svc-news24"].names[0], "News 24");
    s.version = 4;
    assert!(g.insert(Fragment::Service(s)));
    assert_eq!(g.services["svc-news24"].names, ["Old"]);
}

#[test]
fn fragments_round_trip_through_the_guide() {
    let g = example_guide();
    let mut again = keycast_guide::Guide::new();
    for xml in g.to_xml_fragments() {
        again.insert_xml(&xml).unwrap();
    }
    assert_eq!(again, g);
}
