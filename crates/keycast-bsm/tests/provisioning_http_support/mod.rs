//! The BSM's provisioning routes (`bsm_app`) served on loopback over a SQLite store, with keys
//! from the real BSF over Zn; a terminal's Digest POST to any path; `xmllint` against the
//! provisioning crate's schemas.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keycast_bsm::http::UaGuard;
use keycast_bsm::http::provisioning::{IntentSink, ProvisioningState, SubmitFuture, bsm_app};
use keycast_bsm::keys::KeyCache;
use keycast_bsm::service::{DeliveryIntent, Provisioning, ProvisioningConfig};
use keycast_bsm::store::sql::SqliteStore;
use keycast_bsm::ua::{UaAuthenticator, UaConfig};
use keycast_bsm::zn_client::{ZnClient, ZnClientConfig, ZnCredential};
use keycast_crypto::at_rest::StorageKey;
use keycast_gba::client::http::{HttpClient, UbTransport as _};
use keycast_gba::client::{HttpRequest, HttpResponse, NafCredentials};
use keycast_provisioning::digest::{AuthenticationInfo, Challenge, Qop};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::service_support;
use crate::ua_support::{BSF_DOMAIN, BSM, Counting, RunningBsf, TestClock, USER_AGENT, ZN_TOKEN};

/// Collects the intents the routes hand over.
#[derive(Default)]
pub struct Collect(pub Mutex<Vec<DeliveryIntent>>);

impl IntentSink for Collect {
    fn submit(&self, intents: Vec<DeliveryIntent>) -> SubmitFuture<'_> {
        self.0.lock().unwrap().extend(intents);
        Box::pin(std::future::ready(Ok(())))
    }
}

pub struct RunningProvisioning {
    pub addr: SocketAddr,
    pub state: Arc<ProvisioningState<SqliteStore>>,
    pub intents: Arc<Collect>,
    _dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl RunningProvisioning {
    /// `bsm_app` over a filled store (see `service_support::fill`), keys over Zn from `bsf`.
    pub async fn start(bsf: &RunningBsf, clock: &TestClock) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("bsm.db"), StorageKey::from_bytes([7; 16])).await.unwrap();
        service_support::fill(&store).await;
        let zn = ZnClient::new(ZnClientConfig::new(
            &bsf.addr.to_string(),
            BSF_DOMAIN,
            BSM,
            ZnCredential::Bearer(ZN_TOKEN.to_owned().into()),
        ));
        let cache = Arc::new(KeyCache::new(Counting { inner: zn, calls: AtomicUsize::new(0) }, 1024));
        let authenticator = UaAuthenticator::new(&UaConfig::new(BSM, [9; 32])).unwrap();
        let guard = Arc::new(UaGuard::new(authenticator, cache).with_clock(clock.clock()));
        let intents = Arc::new(Collect::default());
        let state = Arc::new(
            ProvisioningState::new(Provisioning::new(store, ProvisioningConfig::new(BSM)), guard)
                .with_intents(intents.clone())
                .with_clock(clock.clock()),
        );
        let app = bsm_app(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        RunningProvisioning { addr, state, intents, _dir: dir, stop: Some(tx), task }
    }

    pub fn take_intents(&self) -> Vec<DeliveryIntent> {
        std::mem::take(&mut *self.intents.0.lock().unwrap())
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(15), self.task).await;
    }
}

fn request(uri: &str, content_type: &str, body: &[u8], authorization: Option<String>) -> HttpRequest {
    let mut headers = vec![
        ("Host".to_owned(), BSM.to_owned()),
        ("User-Agent".to_owned(), USER_AGENT.to_owned()),
        ("Content-Type".to_owned(), content_type.to_owned()),
    ];
    if let Some(a) = authorization {
        headers.push(("Authorization".to_owned(), a));
    }
    HttpRequest { method: "POST".into(), uri: uri.into(), headers, body: body.to_vec() }
}

/// The terminal's Ua exchange to `uri`: POST, 401, POST with Digest (auth-int), and the answer's
/// `rspauth` checked whenever the layer let the request through.
pub async fn digest_post(
    addr: SocketAddr,
    creds: &NafCredentials,
    uri: &str,
    content_type: &str,
    body: &[u8],
) -> HttpResponse {
    let mut client = HttpClient::plain(addr.to_string()).with_timeout(Duration::from_secs(10));
    let first = client.send(&request(uri, content_type, body, None)).await.unwrap();
    assert_eq!(first.status, 401, "{first:?}");
    let challenge = Challenge::parse(first.header("WWW-Authenticate").unwrap()).unwrap();
    let mut digest = creds.digest_client(challenge, &[Qop::AuthInt, Qop::Auth]).expect("realm is the BSM's");
    let sent = digest.authorize("POST", uri, body, &[0x5a; 8]).unwrap();
    let authorization = sent.credentials().to_header_value().unwrap();
    let response = client.send(&request(uri, content_type, body, Some(authorization))).await.unwrap();
    if response.status != 401 {
        let info = AuthenticationInfo::parse(response.header("Authentication-Info").expect("Authentication-Info"));
        digest.check_authentication_info(&sent, &info.unwrap(), &response.body).expect("rspauth verifies");
    }
    response
}

/// `keycast-provisioning/schemas/<name>`.
pub fn schema(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../keycast-provisioning/schemas").join(name)
}

/// Validates `xml` against the schema with xmllint; `false` (after printing why) when xmllint is
/// not installed, so callers skip.
pub fn xmllint(schema_name: &str, xml: &[u8]) -> bool {
    if !Command::new("xmllint").arg("--version").output().is_ok_and(|o| o.status.success()) {
        println!("skipped: xmllint not installed");
        return false;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("answer.xml");
    std::fs::write(&file, xml).unwrap();
    let out = Command::new("xmllint")
        .arg("--noout")
        .arg("--nonet")
        .arg("--schema")
        .arg(schema(schema_name))
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{schema_name}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    true
}
