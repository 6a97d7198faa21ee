//! The published Service Guide (issue 7 "Publishing"): a catalogue in a real SQLite store →
//! fragments that hold together, ProtectionKeyIDs that name the services' key groups, prices,
//! periods and tokens as offered, the PortalURL case, versions that rise when the catalogue
//! changes; the public HTTP routes on 127.0.0.1 serve the same XML with ETags and 404 for
//! unknown ids; `xmllint --noout` accepts every document when it is installed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use keycast_bsm::domain::{
    Program, ProgramId, PurchaseData, PurchaseItem, PurchaseKind, Service, ServiceId, Window, ntp_seconds,
};
use keycast_bsm::guide::{
    CatalogueSnapshot, GuideBuildError, GuideConfig, PURCHASE_CHANNEL_ID, ServiceDelivery, build,
};
use keycast_bsm::http::guide::{GuidePublisher, guide_app};
use keycast_bsm::store::BsmStore;
use keycast_bsm::store::sql::SqliteStore;
use keycast_crypto::at_rest::StorageKey;
use keycast_gba::client::HttpRequest;
use keycast_gba::client::http::{HttpClient, UbTransport as _};
use keycast_guide::fragments::{EncryptionType, Fragment, KeyGroupRef, KmsType, ProtectionType};
use keycast_guide::spd::parse_spd;
use keycast_guide::usd::UserServiceBundle;
use keycast_mikey::KeyDomainId;
use keycast_provisioning::sprov::Price;

const KD: [u8; 3] = [0x00, 0xf1, 0x10];
const T0: u64 = 1_780_272_000;
const DAY: u64 = 86_400;

async fn store(dir: &tempfile::TempDir) -> SqliteStore {
    let store = SqliteStore::open(dir.path().join("bsm.db"), StorageKey::from_bytes([7; 16])).await.unwrap();
    let svc = |id: &str, group, streaming| Service {
        id: ServiceId(id.into()),
        name: format!("{id} channel"),
        key_domain: KeyDomainId(KD),
        key_group: group,
        streaming,
    };
    store.put_service(&svc("news", 1, true)).await.unwrap();
    store.put_service(&svc("files", 2, false)).await.unwrap();
    store
        .put_program(&Program {
            id: ProgramId("final".into()),
            service: ServiceId("news".into()),
            key_group: 7,
            window: Window { from: T0, until: T0 + 7200 },
        })
        .await
        .unwrap();
    store
        .put_purchase_item(&PurchaseItem {
            global_id: "urn:kc:basic".into(),
            name: "Basic".into(),
            services: vec![ServiceId("news".into()), ServiceId("files".into())],
        })
        .await
        .unwrap();
    let offer = |id: &str, amount: &str, kind, period| PurchaseData {
        id: id.into(),
        item: "urn:kc:basic".into(),
        price: Price { amount: amount.into(), currency: "EUR".into() },
        kind,
        period,
        play_backs: 0,
    };
    store.put_purchase_data(&offer("month", "4.99", PurchaseKind::Subscription, 30 * DAY)).await.unwrap();
    store.put_purchase_data(&offer("tokens", "2.50", PurchaseKind::Tokens(10), 90 * DAY)).await.unwrap();
    store
        .put_purchase_data(&PurchaseData {
            play_backs: 2,
            ..offer("final-ppv", "1.00", PurchaseKind::PayPerView(ProgramId("final".into())), 0)
        })
        .await
        .unwrap();
    store
}

fn config() -> GuideConfig {
    GuideConfig::new("bmsc.example.org", "http://bmsc.example.org:8081")
}

fn xmllint(xml: &str) {
    if std::process::Command::new("xmllint").arg("--version").output().is_err() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doc.xml");
    std::fs::write(&path, xml).unwrap();
    let out = std::process::Command::new("xmllint").arg("--noout").arg(&path).output().unwrap();
    assert!(out.status.success(), "xmllint: {}\n{xml}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn catalogue_to_a_consistent_guide() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let catalogue = CatalogueSnapshot::read(&store).await.unwrap();
    let published = build(&catalogue, &config(), 5).unwrap();
    let g = &published.guide;
    g.check().unwrap();
    assert_eq!(g.services.len(), 2);
    assert_eq!(g.accesses.len(), 2);
    assert_eq!(g.contents.len(), 1);
    assert_eq!(g.purchase_items.len(), 1);
    assert_eq!(g.purchase_data.len(), 3);
    assert_eq!(g.purchase_channels.len(), 1);

    // Every fragment reads back to itself (and is well-formed XML).
    for xml in g.to_xml_fragments() {
        xmllint(&xml);
        let f = Fragment::from_xml(&xml).unwrap();
        assert_eq!(f.to_xml(), xml);
    }

    // Access: both Smartcard Profile systems, service protection, ProtectionKeyID = KD ‖ group.
    let news = &g.accesses["acc-news"];
    let kms: Vec<&KmsType> = news.key_management_systems.iter().map(|k| &k.kms_type).collect();
    assert_eq!(kms, [&KmsType::GbaUMbms, &KmsType::GbaMeMbms]);
    for k in &news.key_management_systems {
        assert_eq!(k.protection_type, Some(ProtectionType::ServiceProtection));
        let groups: Vec<KeyGroupRef> = k.key_groups().collect();
        assert_eq!(
            groups,
            [KeyGroupRef { key_domain_id: KD, key_group: 1 }, KeyGroupRef { key_domain_id: KD, key_group: 7 }]
        );
        assert_eq!(
            k.permissions_issuer_uri.as_ref().unwrap().uri,
            "http://bmsc.example.org:8081/guide/v1/spd/news.xml"
        );
    }
    assert_eq!(news.encryption_type, Some(EncryptionType::Srtp));
    assert_eq!(g.accesses["acc-files"].encryption_type, Some(EncryptionType::Dcf));
    let fk: Vec<KeyGroupRef> = g.accesses["acc-files"].key_management_systems[0].key_groups().collect();
    assert_eq!(fk, [KeyGroupRef { key_domain_id: KD, key_group: 2 }]);

    // Offers: prices, periods, tokens, pay-per-view window; all through the one channel.
    let month = &g.purchase_data["month"];
    let pi = month.price_info.as_ref().unwrap();
    assert_eq!((pi.prices[0].amount.as_str(), pi.prices[0].currency.as_str()), ("4.99", "EUR"));
    assert_eq!(pi.subscription_period.as_deref(), Some("PT2592000S"));
    assert_eq!(month.purchase_channel_refs, [PURCHASE_CHANNEL_ID]);
    let tokens = g.purchase_data["tokens"].price_info.as_ref().unwrap();
    assert_eq!(tokens.tokens.as_ref().unwrap().count, 10);
    assert_eq!(tokens.prices[0].amount, "2.50");
    let ppv = &g.purchase_data["final-ppv"];
    assert_eq!(ppv.validity.valid_from, ntp_seconds(T0));
    assert_eq!(ppv.validity.valid_to, ntp_seconds(T0 + 7200));
    assert_eq!(ppv.descriptions, ["pay-per-view final", "recordings play back 2 times"]);
    assert!(g.purchase_data["month"].descriptions.is_empty(), "no play-backs, no description");
    let ch = &g.purchase_channels[PURCHASE_CHANNEL_ID];
    assert_eq!(ch.purchase_urls, ["http://bmsc.example.org:8081/sprov"]);
    assert!(ch.portal_urls.is_empty());

    // Services with offers: both services are sold by the three offers of the one item.
    let so = g.services_with_offers();
    assert_eq!(so.len(), 2);
    for s in &so {
        assert_eq!(s.offers.len(), 3);
        assert_eq!(s.accesses.len(), 1);
    }
    assert!(g.offer_by_user_service_id("urn:kc:basicmonth").is_some());

    // MBMS: USD and SPD for the streaming service only; the SPD names the key management
    // server and the MSK (KD, group 1, number 0); both read back.
    assert_eq!(published.usds.keys().collect::<Vec<_>>(), ["news"]);
    assert_eq!(published.spds.keys().collect::<Vec<_>>(), ["news"]);
    let usd_xml = published.usds["news"].to_xml();
    xmllint(&usd_xml);
    let usd = UserServiceBundle::from_xml(&usd_xml).unwrap();
    let spd_xml = keycast_guide::spd::spd_to_xml(&published.spds["news"]).unwrap();
    xmllint(&spd_xml);
    let spd = parse_spd(&spd_xml).unwrap();
    let resolved = keycast_guide::via_usd(usd.service("urn:kc:basic").unwrap(), &spd).unwrap();
    assert_eq!(resolved.key_management_servers, ["http://bmsc.example.org:8081/keymanagement"]);
    assert_eq!(resolved.key_groups, [KeyGroupRef { key_domain_id: KD, key_group: 1 }]);
    assert_eq!(resolved.msks[0].msk_id, [0, 1, 0, 0]);

    // Entry point via the session description: the Access fragment's inline SDP with the SPD.
    let item = &g.purchase_items["pi-urn:kc:basic"];
    let sdp = keycast_guide::sdp::Sdp::parse(news.session_description().unwrap().sdp.as_deref().unwrap()).unwrap();
    let ps = keycast_guide::via_session_description(
        news,
        item,
        month,
        &sdp,
        &spd,
        &news.key_management_systems[0].permissions_issuer_uri.as_ref().unwrap().uri,
    )
    .unwrap();
    assert_eq!(ps.user_service_ids, ["urn:kc:basicmonth"]);
    assert_eq!(ps.flows[0].sdp_media, Some(0));

    // Without a configured SDP the USD points at the Access fragment carrying the SDP inline.
    assert_eq!(
        usd.services[0].delivery_methods[0].session_description_uri,
        "http://bmsc.example.org:8081/guide/v1/fragments/acc-news.xml"
    );

    // The broadcaster's SDP, when configured: inline, referenced, and its flows in the SPD.
    let mut with_sdp = config();
    with_sdp.deliveries.insert(
        "news".into(),
        ServiceDelivery {
            sdp: Some(
                "v=0\r\no=- 7 1 IN IP4 192.0.2.1\r\ns=News\r\nc=IN IP4 239.1.2.3/16\r\nt=0 0\r\n\
                 m=video 6000 RTP/SAVP 96\r\na=rtpmap:96 H264/90000\r\n\
                 m=audio 6002 RTP/SAVP 97\r\na=rtpmap:97 MP4A-LATM/48000\r\n"
                    .into(),
            ),
            sdp_uri: Some("http://broadcaster.example.org/news.sdp".into()),
        },
    );
    let b = build(&catalogue, &with_sdp, 5).unwrap();
    let flows: Vec<&str> = b.spds["news"].key_ids[0].media_flows.iter().map(|f| f.flow_id.as_str()).collect();
    assert_eq!(flows, ["239.1.2.3/6000", "239.1.2.3/6002"]);
    let sd = b.guide.accesses["acc-news"].session_description().unwrap();
    assert_eq!(sd.sdp_refs[0].uri, "http://broadcaster.example.org/news.sdp");
    assert!(sd.sdp.as_deref().unwrap().contains("m=audio 6002"));
    assert_eq!(
        b.usds["news"].services[0].delivery_methods[0].session_description_uri,
        "http://broadcaster.example.org/news.sdp"
    );
    let bad = GuideConfig {
        deliveries: [("news".to_owned(), ServiceDelivery { sdp: Some("not an sdp".into()), sdp_uri: None })].into(),
        ..config()
    };
    assert!(matches!(build(&catalogue, &bad, 5), Err(GuideBuildError::BadSdp { .. })));

    // PortalURL case.
    let mut with_portal = config();
    with_portal.portal_url = Some("https://shop.example.org/buy".into());
    let p = build(&catalogue, &with_portal, 5).unwrap();
    assert_eq!(p.guide.purchase_channels[PURCHASE_CHANNEL_ID].portal_urls[0].url, "https://shop.example.org/buy");
}

async fn get(client: &mut HttpClient, path: &str, etag: Option<&str>) -> (u16, Option<String>, String) {
    let mut headers = vec![("Host".to_owned(), "bmsc.example.org".to_owned())];
    if let Some(t) = etag {
        headers.push(("If-None-Match".to_owned(), t.to_owned()));
    }
    let r =
        client.send(&HttpRequest { method: "GET".into(), uri: path.into(), headers, body: Vec::new() }).await.unwrap();
    (r.status, r.header("etag").map(str::to_owned), String::from_utf8(r.body).unwrap())
}

#[tokio::test]
async fn http_routes_serve_the_guide_and_versions_rise() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let now = Arc::new(AtomicU64::new(T0));
    let clock = now.clone();
    let publisher = Arc::new(
        GuidePublisher::new(store.clone(), config()).with_clock(Arc::new(move || clock.load(Ordering::SeqCst))),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let app = guide_app(publisher.clone());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let mut client = HttpClient::plain(addr.to_string());

    let (status, etag, body) = get(&mut client, "/guide/v1/index.json", None).await;
    assert_eq!(status, 200);
    let index: serde_json::Value = serde_json::from_str(&body).unwrap();
    let v1 = index["version"].as_u64().unwrap();
    assert_eq!(v1, T0);
    assert_eq!(etag.as_deref(), Some(format!("\"{v1}\"").as_str()));
    let fragments = index["fragments"].as_array().unwrap();
    assert_eq!(fragments.len(), 10);

    // Each listed fragment is served as built, with its version as ETag; 304 on a match.
    let snap = publisher.snapshot().await.unwrap();
    for f in fragments {
        let id = f["id"].as_str().unwrap();
        assert_eq!(f["url"].as_str().unwrap(), format!("http://bmsc.example.org:8081/guide/v1/fragments/{id}.xml"));
        let (status, etag, body) = get(&mut client, &format!("/guide/v1/fragments/{id}.xml"), None).await;
        assert_eq!(status, 200, "{id}");
        assert_eq!(body, snap.fragments[id].xml);
        let parsed = Fragment::from_xml(&body).unwrap();
        assert_eq!(parsed.id(), id);
        let etag = etag.unwrap();
        assert_eq!(etag, format!("\"{}\"", f["version"]));
        let (status, _, body) = get(&mut client, &format!("/guide/v1/fragments/{id}.xml"), Some(&etag)).await;
        assert_eq!((status, body.as_str()), (304, ""));
    }
    let (status, _, usd) = get(&mut client, "/guide/v1/usd/news.xml", None).await;
    assert_eq!(status, 200);
    UserServiceBundle::from_xml(&usd).unwrap();
    let (status, _, spd) = get(&mut client, "/guide/v1/spd/news.xml", None).await;
    assert_eq!(status, 200);
    parse_spd(&spd).unwrap();
    for unknown in [
        "/guide/v1/fragments/nope.xml",
        "/guide/v1/fragments/svc-news",
        "/guide/v1/usd/files.xml",
        "/guide/v1/spd/x.xml",
    ] {
        assert_eq!(get(&mut client, unknown, None).await.0, 404, "{unknown}");
    }

    // A price change: that PurchaseData's version rises, the others keep theirs.
    now.store(T0 + 60, Ordering::SeqCst);
    store
        .put_purchase_data(&PurchaseData {
            id: "month".into(),
            item: "urn:kc:basic".into(),
            price: Price { amount: "5.49".into(), currency: "EUR".into() },
            kind: PurchaseKind::Subscription,
            period: 30 * DAY,
            play_backs: 0,
        })
        .await
        .unwrap();
    let (_, _, body) = get(&mut client, "/guide/v1/index.json", None).await;
    let index: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(index["version"].as_u64().unwrap(), T0 + 60);
    for f in index["fragments"].as_array().unwrap() {
        let want = if f["id"] == "month" { T0 + 60 } else { T0 };
        assert_eq!(f["version"].as_u64().unwrap(), want, "{}", f["id"]);
    }
    let (status, etag, body) = get(&mut client, "/guide/v1/fragments/month.xml", Some(&format!("\"{T0}\""))).await;
    assert_eq!(status, 200);
    assert_eq!(etag.unwrap(), format!("\"{}\"", T0 + 60));
    assert!(body.contains("5.49"));

    // A change within the same clock second still gives a higher version.
    store
        .put_service(&Service {
            id: ServiceId("files".into()),
            name: "Files renamed".into(),
            key_domain: KeyDomainId(KD),
            key_group: 2,
            streaming: false,
        })
        .await
        .unwrap();
    let snap = publisher.snapshot().await.unwrap();
    assert_eq!(u64::from(snap.version), T0 + 61);
    assert_eq!(u64::from(snap.fragments["svc-files"].version), T0 + 61);
    assert_eq!(u64::from(snap.fragments["month"].version), T0 + 60);
    server.abort();
}
