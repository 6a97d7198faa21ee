//! The terminal loads the Service Guide the real BSM publishes from its own catalogue
//! (keycast-bsm `http::guide` over the loopback BSM's SQLite store, on 127.0.0.1), lists the
//! offers with their prices, resolves the offer to a Service Request that the real BSM accepts
//! (the subscription's LTKM reaches the card); through the other entry point the published USD
//! and SPD lead to an MBMS registration the real BSM accepts; and, with a PortalURL in the
//! PurchaseChannel, the same offer resolves to the portal.

mod loopback;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use keycast_bsm::guide::GuideConfig;
use keycast_bsm::http::guide::{GuidePublisher, guide_app};
use keycast_gba::bsf::GbaType;
use keycast_gba::client::GbaMode;
use keycast_gba::client::http::HttpClient;
use keycast_guide::RegistrationInterface;
use keycast_guide::fragments::{KeyGroupRef, KmsType};
use keycast_mikey::SekPekId;
use keycast_provisioning::mbms::RegisterRequest;
use keycast_provisioning::sprov::{Price, StatusCode};
use keycast_provisioning::time::UtcTime;
use keycast_terminal::guide_client::{Action, GuideClient, GuideClientError};
use keycast_terminal::ltkm_intake::{LtkmEvent, bcast_key};
use keycast_terminal::provisioning::{Request, Response};
use loopback::*;

/// Serves `config`'s guide over the BSM's store on a listener of its own.
async fn serve_guide(bsm: &Bsm, portal: Option<&str>) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let mut config = GuideConfig::new(BSM, &format!("http://{}", bsm.running.addr));
    config.portal_url = portal.map(str::to_owned);
    let publisher = Arc::new(GuidePublisher::new(bsm.state.service().store().clone(), config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = guide_app(publisher);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_loads_the_guide_and_buys_through_it() {
    tokio::time::timeout(Duration::from_secs(90), scenario()).await.expect("the scenario ends in time");
}

async fn scenario() {
    let clock = TestClock::new();
    let bsf = start_bsf(&clock, GbaType::GbaU).await;
    let bsm = start_bsm(bsf.addr, &clock).await;
    let (guide_addr, guide_task) = serve_guide(&bsm, None).await;

    // Load: the one service, its one offer at its price.
    let mut client = GuideClient::new(HttpClient::plain(guide_addr.to_string()), BSM);
    let loaded = client.load().await.unwrap();
    loaded.guide.check().unwrap();
    let services = loaded.offers();
    assert_eq!(services.len(), 1);
    assert_eq!(services[0].global_service_id.as_deref(), Some("news"));
    assert_eq!(services[0].name.as_deref(), Some("News"));
    let offer = &services[0].offers[0];
    assert_eq!(services[0].offers.len(), 1);
    assert_eq!(offer.user_service_id, "basicbasic-month");
    assert_eq!((offer.prices[0].amount.as_str(), offer.prices[0].currency.as_str()), ("4.99", "EUR"));
    assert_eq!(offer.subscription_period.as_deref(), Some("PT2592000S"));
    assert_eq!(offer.portal_url, None);
    assert_eq!(loaded.spds.len(), 1);
    assert_eq!(loaded.usds.len(), 1);

    // Resolve: a Service Request to the BSM's provisioning URL, GBA_U, key group (kd, 1).
    let action = loaded.resolve(&offer.user_service_id).unwrap();
    let Action::ServiceRequest { purchase_url, global_purchase_item_id, purchase_data_id, price, service } = &action
    else {
        panic!("{action:?}")
    };
    assert_eq!(purchase_url, &format!("http://{}/sprov", bsm.running.addr));
    assert_eq!((global_purchase_item_id.as_str(), purchase_data_id.as_str()), ("basic", "basic-month"));
    assert_eq!(price, &Some(Price { amount: "4.99".into(), currency: "EUR".into() }));
    assert_eq!(service.registration, RegistrationInterface::BcastServiceRequest);
    assert_eq!(service.user_service_ids, ["basicbasic-month"]);
    assert_eq!(service.kms_type, Some(KmsType::GbaUMbms));
    assert_eq!(service.key_groups, [KeyGroupRef { key_domain_id: kd().0, key_group: 1 }]);
    assert_eq!(service.key_management_servers, [format!("http://{}/keymanagement", bsm.running.addr)]);
    assert!(matches!(loaded.resolve("basicnope"), Err(GuideClientError::UnknownOffer(_))));

    // The real BSM accepts the Service Request the guide led to: the SEK's LTKM reaches the card.
    let mut terminal = start_terminal(bsf.addr, bsm.running.addr, &clock, card(), GbaMode::GbaU).await;
    let item = action.purchase_request_item().unwrap();
    let until = UtcTime::from_unix_seconds(T0 + 30 * DAY).unwrap();
    let answer = terminal.subscribe(vec![(item.clone(), Some(until))]).await.unwrap();
    let Response::Service(sr) = &answer.response else { panic!("{answer:?}") };
    assert_eq!(sr.status, StatusCode::Success);
    assert_eq!(answer.ltkms.len(), 1);
    let sek = bcast_key(kd(), SekPekId { key_group: 1, key_number: 2 });
    assert_eq!(answer.ltkms[0].as_ref().unwrap().event, LtkmEvent::Accepted { key: sek });
    assert_eq!(terminal.client().purchases().active(clock.utc()()), [item.item]);

    // The other entry point (seed 6.8.1.1): the MBMS USD and its SPD lead to an MBMS User
    // Service Registration at the key management server the SPD names, which the real BSM
    // accepts for the USD's serviceId now that the item is bought, and refuses for another.
    let (usd_bundle, spd) = (loaded.usds.values().next().unwrap(), loaded.spds.values().next().unwrap());
    let usd = &usd_bundle.services[0];
    let via_usd = keycast_guide::via_usd(usd, spd).unwrap();
    assert_eq!(via_usd.registration, RegistrationInterface::MbmsUserServiceRegistration);
    assert_eq!(via_usd.key_management_servers, [format!("http://{}/keymanagement", bsm.running.addr)]);
    assert_eq!(via_usd.key_groups, [KeyGroupRef { key_domain_id: kd().0, key_group: 1 }]);
    let ids = [via_usd.user_service_ids.clone(), vec!["nosuchservice".to_owned()]].concat();
    let answer = terminal.execute(Request::MbmsRegister(RegisterRequest { service_ids: ids.clone() })).await.unwrap();
    let Response::MbmsRegister(register) = &answer.response else { panic!("{answer:?}") };
    let codes: Vec<(&str, u16)> =
        register.responses.iter().map(|r| (r.service_id.as_str(), r.response_code.code)).collect();
    assert_eq!(codes, [(ids[0].as_str(), 200), ("nosuchservice", 403)]);

    // With a PortalURL in the PurchaseChannel the same offer sends the user to the portal.
    let (portal_addr, portal_task) = serve_guide(&bsm, Some("https://shop.example.org/buy")).await;
    let mut client = GuideClient::new(HttpClient::plain(portal_addr.to_string()), BSM);
    let loaded = client.load().await.unwrap();
    assert_eq!(loaded.offers()[0].offers[0].portal_url.as_deref(), Some("https://shop.example.org/buy"));
    let action = loaded.resolve("basicbasic-month").unwrap();
    assert_eq!(action, Action::Portal("https://shop.example.org/buy".into()));
    assert_eq!(action.purchase_request_item(), None);

    guide_task.abort();
    portal_task.abort();
    bsm.running.stop().await;
    bsf.stop().await;
}
