//! The admin API over a SQLite store: authentication (token and loopback), catalogue edits with
//! their refusals, key rollover by the group's schedule, and no key bytes in any answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use keycast_bsm::http::admin::{AdminState, KeyMaterial, NoRandomness, admin_app};
use keycast_bsm::store::BsmStore;
use keycast_bsm::store::sql::SqliteStore;
use keycast_crypto::at_rest::StorageKey;
use keycast_mikey::SekPekId;
use tower::ServiceExt as _;
use zeroize::Zeroizing;

const TOKEN: &str = "an-admin-token-for-tests";
const T0: u64 = 1_767_225_600;
const DAY: u64 = 86_400;

/// Key bytes 0x5a…, RAND 0x5a…, CSB ID 0x5a5a5a5a: easy to look for in answers.
struct Fixed;

impl KeyMaterial for Fixed {
    fn fill(&self, buf: &mut [u8]) -> Result<(), NoRandomness> {
        buf.fill(0x5a);
        Ok(())
    }
}

struct Api {
    _dir: tempfile::TempDir,
    store: SqliteStore,
    now: Arc<AtomicU64>,
    local: axum::Router,
    remote: axum::Router,
}

async fn api() -> Api {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("bsm.db"), StorageKey::from_bytes([1; 16])).await.unwrap();
    let now = Arc::new(AtomicU64::new(T0));
    let clock_now = Arc::clone(&now);
    let state = Arc::new(
        AdminState::new(store.clone(), Zeroizing::new(TOKEN.to_owned()))
            .with_clock(Arc::new(move || clock_now.load(Ordering::Relaxed)))
            .with_material(Arc::new(Fixed)),
    );
    let app = admin_app(state);
    let local = app.clone().layer(MockConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    let remote = app.layer(MockConnectInfo(SocketAddr::from(([192, 0, 2, 7], 40000))));
    Api { _dir: dir, store, now, local, remote }
}

async fn call(app: &axum::Router, method: &str, path: &str, token: Option<&str>, body: &str) -> (StatusCode, String) {
    let mut request = Request::builder().method(method).uri(path).header("content-type", "application/json");
    if let Some(t) = token {
        request = request.header("authorization", format!("Bearer {t}"));
    }
    let response = app.clone().oneshot(request.body(Body::from(body.to_owned())).unwrap()).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn only_the_token_from_loopback_gets_in() {
    let a = api().await;
    assert_eq!(call(&a.local, "GET", "/admin/v1/services", None, "").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(call(&a.local, "GET", "/admin/v1/services", Some("wrong"), "").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(call(&a.remote, "GET", "/admin/v1/services", Some(TOKEN), "").await.0, StatusCode::UNAUTHORIZED);
    let (status, body) = call(&a.local, "GET", "/admin/v1/services", Some(TOKEN), "").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "[]"));
}

#[tokio::test]
async fn catalogue_edits_and_refusals() {
    let a = api().await;
    let put = |path: &'static str, body: &'static str| call(&a.local, "PUT", path, Some(TOKEN), body);
    let service = r#"{"name":"News","mcc":"001","mnc":"01","key_group":1,"streaming":true}"#;
    assert_eq!(put("/admin/v1/services/news", service).await.0, StatusCode::NO_CONTENT);
    let (_, listed) = call(&a.local, "GET", "/admin/v1/services", Some(TOKEN), "").await;
    assert_eq!(listed, r#"[{"id":"news","name":"News","mcc":"001","mnc":"01","key_group":1,"streaming":true}]"#);
    assert_eq!(
        put("/admin/v1/services/x", r#"{"name":"X","mcc":"1","mnc":"01","key_group":1,"streaming":true}"#).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        put("/admin/v1/services/x", r#"{"name":"X","mcc":"001","mnc":"01","key_group":0,"streaming":true}"#).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(put("/admin/v1/services/x", r#"{"name":"X","bogus":1}"#).await.0, StatusCode::BAD_REQUEST);

    assert_eq!(
        put("/admin/v1/purchase-items/basic", r#"{"name":"Basic","services":["news"]}"#).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        put("/admin/v1/purchase-items/bad", r#"{"name":"Bad","services":["none"]}"#).await.0,
        StatusCode::NOT_FOUND
    );
    let offer = r#"{"item":"basic","amount":"4.99","currency":"EUR","kind":"subscription","period_secs":2592000}"#;
    assert_eq!(put("/admin/v1/offers/basic-month", offer).await.0, StatusCode::NO_CONTENT);
    let ppv_without_program = r#"{"item":"basic","amount":"1","currency":"EUR","kind":"ppv","period_secs":0}"#;
    assert_eq!(put("/admin/v1/offers/o", ppv_without_program).await.0, StatusCode::BAD_REQUEST);
    let unknown_item = r#"{"item":"none","amount":"1","currency":"EUR","kind":"ppt","period_secs":60}"#;
    assert_eq!(put("/admin/v1/offers/o", unknown_item).await.0, StatusCode::NOT_FOUND);
    // Play-backs (P-4 codes 0x01, 0x03) on pay-per-time and pay-per-view only.
    let ppt_rec = r#"{"item":"basic","amount":"2","currency":"EUR","kind":"ppt","period_secs":3600,"play_backs":2}"#;
    assert_eq!(put("/admin/v1/offers/basic-2h-rec", ppt_rec).await.0, StatusCode::NO_CONTENT);
    let sub_rec =
        r#"{"item":"basic","amount":"2","currency":"EUR","kind":"subscription","period_secs":60,"play_backs":2}"#;
    let (status, why) = put("/admin/v1/offers/o", sub_rec).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(why.contains("play_backs is for ppt and ppv"), "{why}");
    let too_many = r#"{"item":"basic","amount":"2","currency":"EUR","kind":"ppt","period_secs":60,"play_backs":70000}"#;
    assert_eq!(put("/admin/v1/offers/o", too_many).await.0, StatusCode::BAD_REQUEST);
    let program = r#"{"service":"news","key_group":100,"from":1767225600,"until":1767232800}"#;
    assert_eq!(put("/admin/v1/programs/final", program).await.0, StatusCode::NO_CONTENT);
    assert_eq!(
        put("/admin/v1/programs/x", r#"{"service":"news","key_group":100,"from":5,"until":5}"#).await.0,
        StatusCode::BAD_REQUEST
    );

    let (_, offers) = call(&a.local, "GET", "/admin/v1/offers", Some(TOKEN), "").await;
    assert!(offers.contains(r#""id":"basic-month""#) && offers.contains(r#""kind":"subscription""#), "{offers}");
    assert!(offers.contains(r#""period_secs":3600,"play_backs":2"#), "{offers}");
    assert_eq!(offers.matches("play_backs").count(), 1, "shown only where not 0: {offers}");
    assert_eq!(a.store.purchase_items().await.unwrap()[0].services[0].0, "news");
    assert_eq!(call(&a.local, "GET", "/admin/v1/terminals/nobody", Some(TOKEN), "").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn rollover_follows_the_schedule_and_never_shows_key_bytes() {
    let a = api().await;
    let schedule = format!(r#"{{"mcc":"001","mnc":"01","key_lifetime_secs":{},"lead_secs":{}}}"#, 30 * DAY, 2 * DAY);
    let rollover = || call(&a.local, "POST", "/admin/v1/key-groups/1/rollover", Some(TOKEN), &schedule);
    let (status, first) = rollover().await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(
        first,
        format!(r#"{{"key_group":1,"key_number":1,"from":{T0},"until":{},"campaign":1}}"#, T0 + 30 * DAY),
        "the key comes with the campaign that pushes it"
    );
    assert_eq!(rollover().await, (StatusCode::OK, r#"{"due":false}"#.to_owned()));
    a.now.store(T0 + 28 * DAY, Ordering::Relaxed);
    let (status, second) = rollover().await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(
        second.contains(r#""key_number":2"#) && second.contains(&format!(r#""from":{}"#, T0 + 30 * DAY)),
        "{second}"
    );
    let (_, group) = call(&a.local, "GET", "/admin/v1/key-groups/1", Some(TOKEN), "").await;
    assert_eq!(group.matches("key_number").count(), 2, "{group}");
    for answer in [&first, &second, &group] {
        assert!(!answer.to_ascii_lowercase().contains("5a5a") && !answer.contains("1515870810"), "{answer}");
    }
    let key = a.store.key(SekPekId { key_group: 1, key_number: 1 }, T0).await.unwrap().unwrap();
    assert_eq!((key.key.expose_secret(), key.rand, key.csb_id), (&[0x5a; 16], [0x5a; 16], 0x5a5a_5a5a));
    let bad = r#"{"mcc":"001","mnc":"01","key_lifetime_secs":10,"lead_secs":10}"#;
    assert_eq!(
        call(&a.local, "POST", "/admin/v1/key-groups/1/rollover", Some(TOKEN), bad).await.0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn imports_key_ends_and_campaigns() {
    let a = api().await;
    let put = |path: &'static str, body: &'static str| call(&a.local, "PUT", path, Some(TOKEN), body);
    let post = |path: &'static str, body: String| {
        let local = a.local.clone();
        async move { call(&local, "POST", path, Some(TOKEN), &body).await }
    };
    assert_eq!(
        put("/admin/v1/services/news", r#"{"name":"News","mcc":"001","mnc":"01","key_group":1,"streaming":true}"#)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        put("/admin/v1/purchase-items/basic", r#"{"name":"Basic","services":["news"]}"#).await.0,
        StatusCode::NO_CONTENT
    );
    let offer = r#"{"item":"basic","amount":"4.99","currency":"EUR","kind":"subscription","period_secs":2592000}"#;
    assert_eq!(put("/admin/v1/offers/basic-month", offer).await.0, StatusCode::NO_CONTENT);

    let subscriber = |n: u32, item: &str| {
        format!(
            r#"{{"impi":"imp-{n}@ims.example.org","registration":{{"address":"10.0.0.{n}:4000","interface":"oma-bcast","at":{T0}}},"purchases":[{{"item":"{item}","offer":"basic-month","kind":"subscription","from":{T0},"until":{}}}]}}"#,
            T0 + 60 * DAY
        )
    };
    let imports = "/admin/v1/terminals/import";
    let (status, answer) = post(imports, format!("[{},{}]", subscriber(1, "basic"), subscriber(2, "none"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "an unknown item refuses the whole batch: {answer}");
    assert_eq!(a.store.subscribers().await, Ok(0));
    let bad_interface = subscriber(1, "basic").replace("oma-bcast", "carrier-pigeon");
    assert_eq!(post(imports, format!("[{bad_interface}]")).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(post(imports, "{".into()).await.0, StatusCode::BAD_REQUEST);
    let (status, answer) = post(imports, format!("[{},{}]", subscriber(1, "basic"), subscriber(2, "basic"))).await;
    assert_eq!((status, answer.as_str()), (StatusCode::OK, r#"{"imported":2}"#));
    assert_eq!(a.store.subscribers().await, Ok(2));

    let schedule = format!(r#"{{"mcc":"001","mnc":"01","key_lifetime_secs":{},"lead_secs":{}}}"#, 30 * DAY, 2 * DAY);
    assert_eq!(post("/admin/v1/key-groups/1/rollover", schedule).await.0, StatusCode::CREATED);
    let (status, list) = call(&a.local, "GET", "/admin/v1/campaigns", Some(TOKEN), "").await;
    assert_eq!(status, StatusCode::OK);
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list[0]["kind"], "deliver");
    assert_eq!((list[0]["subscribers"].as_u64(), list[0]["terminals"].as_u64()), (Some(2), Some(0)));
    assert!(list[0].get("finished_at").is_none(), "it runs in the service's campaign runner");

    let end = |number: u16, body: String| {
        let local = a.local.clone();
        async move { call(&local, "PUT", &format!("/admin/v1/key-groups/1/keys/{number}/until"), Some(TOKEN), &body).await }
    };
    let (status, moved) = end(1, format!(r#"{{"until":{}}}"#, T0 + 20 * DAY)).await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    assert_eq!(
        moved,
        format!(r#"{{"key_group":1,"key_number":1,"from":{T0},"until":{},"campaign":2}}"#, T0 + 20 * DAY)
    );
    assert_eq!(a.store.key_entries(1).await.unwrap()[0].window.until, T0 + 20 * DAY);
    assert_eq!(end(1, format!(r#"{{"until":{T0}}}"#)).await.0, StatusCode::CONFLICT, "not after now");
    assert_eq!(end(7, format!(r#"{{"until":{}}}"#, T0 + DAY)).await.0, StatusCode::NOT_FOUND);
    assert_eq!(end(1, r#"{"until":"soon"}"#.into()).await.0, StatusCode::BAD_REQUEST);
    let (status, one) = call(&a.local, "GET", "/admin/v1/campaigns/2", Some(TOKEN), "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(one.contains(r#""kind":"update""#) && one.contains(&format!(r#""until":{}"#, T0 + 20 * DAY)), "{one}");
    assert_eq!(call(&a.local, "GET", "/admin/v1/campaigns/99", Some(TOKEN), "").await.0, StatusCode::NOT_FOUND);
}
