//! The BSM's internal API for broadcasters (BSD/A): the live SEK/PEKs of a key group **with
//! their bytes**, so a broadcaster can seal STKMs (profile P-6) under them.
//!
//! It is served on the admin listener (the shell merges [`broadcaster_app`] into the admin
//! router) but has a token of its own \[chosen\]: the admin token can make keys but never reads
//! their bytes, and the broadcaster token can read the live keys of a group and change nothing,
//! so neither holder gets both powers. Like the admin API: `Authorization: Bearer <token>`,
//! compared in constant time, accepted only from a loopback peer (serve with
//! `ConnectInfo<SocketAddr>`); anything else is 401. Key bytes appear only in answers, never in
//! logs.
//!
//! | method and path | answer |
//! |---|---|
//! | `GET /internal/v1/key-groups/{group}/live` | 200 [`LiveAnswer`]: the current key and the next one if it exists (at most two, oldest first); 404 for a group that has no key at all |
//!
//! Each key carries what an STKM needs (profile P-1, P-2, P-6): the Key Domain ID, the SEK/PEK
//! ID, the key, the RAND an STKM under it is sealed with (the RAND of the LTKMs that deliver it,
//! the same for every terminal, P-3), its window in Unix seconds and as the inclusive TS window
//! in NTP seconds (the bounds of LTKMs with a security policy), and the TEK ID window
//! SEQl < TEK ID ≤ SEQu the BSM gives terminals in LTKMs without one.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::domain::{KeyGroup, ntp_seconds};
use crate::http::auth::Clock;
use crate::store::BsmStore;

/// The TEK ID window of LTKMs without a security policy: every TEK ID a key can have (SEQu
/// 0xFFFF is never used; profile P-1, P-11.11). Mirrors what the provisioning service issues.
pub const TEK_ID_WINDOW: (u16, u16) = (0, 0xfffe);

/// The broadcaster API's state: the store, the token and the clock.
pub struct BroadcasterState<S> {
    store: S,
    token: Zeroizing<String>,
    clock: Clock,
}

impl<S> core::fmt::Debug for BroadcasterState<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BroadcasterState").finish_non_exhaustive()
    }
}

impl<S> BroadcasterState<S> {
    /// State over `store`, accepting `token` (an empty token accepts nothing), with the system
    /// clock.
    #[must_use]
    pub fn new(store: S, token: Zeroizing<String>) -> Self {
        BroadcasterState { store, token, clock: crate::http::auth::system_clock() }
    }

    /// Replaces the clock (tests).
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }
}

/// One live SEK/PEK as a broadcaster gets it. Hex strings are lower case.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveKeyJson {
    /// Key Domain ID, 3 bytes in hex (profile P-1).
    pub key_domain_id: String,
    /// Key Group.
    pub key_group: u16,
    /// Key Number.
    pub key_number: u16,
    /// The SEK/PEK, 16 bytes in hex.
    pub key: String,
    /// The RAND STKMs under this key are sealed with, 16 bytes in hex (profile P-2).
    pub rand: String,
    /// Start of the key's window, Unix seconds.
    pub from: u64,
    /// End of the key's window (exclusive), Unix seconds.
    pub until: u64,
    /// TS low: `from` in NTP seconds (profile P-6).
    pub ts_low: u32,
    /// TS high: the last second of the window in NTP seconds.
    pub ts_high: u32,
    /// SEQl: TEK IDs under this key must be greater.
    pub tek_id_low: u16,
    /// SEQu: TEK IDs under this key must not be greater.
    pub tek_id_high: u16,
}

impl core::fmt::Debug for LiveKeyJson {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LiveKeyJson")
            .field("key_group", &self.key_group)
            .field("key_number", &self.key_number)
            .field("from", &self.from)
            .field("until", &self.until)
            .finish_non_exhaustive()
    }
}

/// The answer of `GET /internal/v1/key-groups/{group}/live`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveAnswer {
    /// The BSM's time of the answer, Unix seconds.
    pub now: u64,
    /// Whether a service of this key group is a streaming service (its STKMs carry TEK + salt).
    pub streaming: bool,
    /// The current key, then the next one if it exists (at most two).
    pub keys: Vec<LiveKeyJson>,
}

fn error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    (status, [(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The broadcaster router. Serve it with `into_make_service_with_connect_info::<SocketAddr>()`
/// (e.g. merged into the admin router).
pub fn broadcaster_app<S: BsmStore + Send + Sync + 'static>(state: Arc<BroadcasterState<S>>) -> Router {
    Router::new()
        .route("/internal/v1/key-groups/{group}/live", get(live::<S>))
        .layer(axum::middleware::from_fn_with_state(state.clone(), require_token::<S>))
        .with_state(state)
}

fn authorised<S>(state: &BroadcasterState<S>, peer: SocketAddr, headers: &HeaderMap) -> bool {
    super::admin::bearer_from_loopback(&state.token, peer, headers)
}

async fn require_token<S: Send + Sync + 'static>(
    State(state): State<Arc<BroadcasterState<S>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if !authorised(&state, peer, request.headers()) {
        tracing::info!(%peer, "broadcaster API: unauthenticated request refused");
        let mut r = error(StatusCode::UNAUTHORIZED, "unauthenticated");
        r.headers_mut().insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
        return r;
    }
    next.run(request).await
}

async fn live<S: BsmStore + Send + Sync + 'static>(
    State(state): State<Arc<BroadcasterState<S>>>,
    Path(group): Path<u16>,
) -> Response {
    let now = (state.clock)();
    let failed = |e: crate::store::StoreError| {
        tracing::error!(error = %e, group, "broadcaster API: store failed");
        error(StatusCode::INTERNAL_SERVER_ERROR, "store failure")
    };
    let entries = match state.store.key_entries(group).await {
        Ok(e) => e,
        Err(e) => return failed(e),
    };
    if entries.is_empty() {
        return error(StatusCode::NOT_FOUND, "unknown key group");
    }
    let keys = match KeyGroup::with_keys(group, entries) {
        Ok(g) => g,
        Err(e) => {
            tracing::error!(error = %e, group, "broadcaster API: stored key group is inconsistent");
            return error(StatusCode::INTERNAL_SERVER_ERROR, "inconsistent key group");
        }
    };
    let streaming = match state.store.services().await {
        Ok(list) => list.iter().any(|s| s.key_group == group && s.streaming),
        Err(e) => return failed(e),
    };
    let mut out = Vec::with_capacity(2);
    for entry in keys.live(now) {
        let stored = match state.store.key(entry.id, entry.window.from).await {
            Ok(Some(k)) => k,
            Ok(None) => continue,
            Err(e) => return failed(e),
        };
        let (Some(ts_low), Some(ts_high)) =
            (ntp_seconds(entry.window.from), ntp_seconds(entry.window.until.saturating_sub(1)))
        else {
            continue;
        };
        out.push(LiveKeyJson {
            key_domain_id: to_hex(&stored.key_domain.0),
            key_group: entry.id.key_group,
            key_number: entry.id.key_number,
            key: to_hex(stored.key.expose_secret()),
            rand: to_hex(&stored.rand),
            from: entry.window.from,
            until: entry.window.until,
            ts_low,
            ts_high,
            tek_id_low: TEK_ID_WINDOW.0,
            tek_id_high: TEK_ID_WINDOW.1,
        });
    }
    tracing::debug!(group, keys = out.len(), "broadcaster API: live keys served");
    let answer = LiveAnswer { now, streaming, keys: out };
    match serde_json::to_vec(&answer) {
        Ok(body) => (StatusCode::OK, [(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed"),
    }
}

fn to_hex(bytes: &[u8]) -> String {
    use core::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::extract::connect_info::MockConnectInfo;
    use axum::http::Request;
    use http_body_util::BodyExt as _;
    use keycast_crypto::at_rest::StorageKey;
    use keycast_crypto::keys::SekPek;
    use keycast_mikey::{KeyDomainId, SekPekId};
    use tower::ServiceExt as _;

    use super::*;
    use crate::domain::{KeyEntry, Service, ServiceId, Window};
    use crate::store::StoredKey;
    use crate::store::sql::SqliteStore;

    const TOKEN: &str = "a-broadcaster-token-for-tests";
    const T0: u64 = 1_767_225_600;

    fn stored(number: u16, from: u64, until: u64, byte: u8) -> StoredKey {
        StoredKey {
            entry: KeyEntry {
                id: SekPekId { key_group: 7, key_number: number },
                window: Window::new(from, until).unwrap(),
                revoked_at: None,
            },
            key_domain: KeyDomainId::from_mcc_mnc("001", "01").unwrap(),
            key: SekPek::from_bytes([byte; 16]),
            rand: [byte ^ 0xff; 16],
            csb_id: 1,
        }
    }

    async fn app(peer: [u8; 4]) -> (tempfile::TempDir, Router) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("bsm.db"), StorageKey::from_bytes([1; 16])).await.unwrap();
        store
            .put_service(&Service {
                id: ServiceId("news".into()),
                name: "News".into(),
                key_domain: KeyDomainId::from_mcc_mnc("001", "01").unwrap(),
                key_group: 7,
                streaming: true,
            })
            .await
            .unwrap();
        store.add_key(&stored(1, T0 - 100, T0 + 100, 0x11)).await.unwrap();
        store.add_key(&stored(2, T0 + 100, T0 + 300, 0x22)).await.unwrap();
        store.add_key(&stored(3, T0 + 300, T0 + 500, 0x33)).await.unwrap();
        let state = BroadcasterState::new(store, Zeroizing::new(TOKEN.to_owned())).with_clock(Arc::new(|| T0));
        let app = broadcaster_app(Arc::new(state)).layer(MockConnectInfo(SocketAddr::from((peer, 40000))));
        (dir, app)
    }

    async fn get(app: &Router, path: &str, token: Option<&str>) -> (StatusCode, String) {
        let mut request = Request::builder().uri(path);
        if let Some(t) = token {
            request = request.header("authorization", format!("Bearer {t}"));
        }
        let response = app.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn token_from_loopback_required() {
        let (_d, local) = app([127, 0, 0, 1]).await;
        let path = "/internal/v1/key-groups/7/live";
        assert_eq!(get(&local, path, None).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(get(&local, path, Some("wrong-token")).await.0, StatusCode::UNAUTHORIZED);
        let (_d2, remote) = app([192, 0, 2, 7]).await;
        assert_eq!(get(&remote, path, Some(TOKEN)).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(get(&local, path, Some(TOKEN)).await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn unknown_group_is_404() {
        let (_d, local) = app([127, 0, 0, 1]).await;
        assert_eq!(get(&local, "/internal/v1/key-groups/8/live", Some(TOKEN)).await.0, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn answers_the_stored_current_and_next_keys() {
        let (_d, local) = app([127, 0, 0, 1]).await;
        let (status, body) = get(&local, "/internal/v1/key-groups/7/live", Some(TOKEN)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let a: LiveAnswer = serde_json::from_str(&body).unwrap();
        assert!(a.streaming);
        assert_eq!(a.now, T0);
        assert_eq!(a.keys.len(), 2, "current and next only");
        let (k1, k2) = (&a.keys[0], &a.keys[1]);
        assert_eq!((k1.key_group, k1.key_number, k2.key_number), (7, 1, 2));
        assert_eq!(k1.key, "11".repeat(16));
        assert_eq!(k1.rand, "ee".repeat(16));
        assert_eq!(k2.key, "22".repeat(16));
        assert_eq!(k1.key_domain_id, "00f110");
        assert_eq!((k1.from, k1.until), (T0 - 100, T0 + 100));
        assert_eq!(u64::from(k1.ts_low), T0 - 100 + crate::domain::NTP_UNIX_OFFSET);
        assert_eq!(u64::from(k1.ts_high), T0 + 99 + crate::domain::NTP_UNIX_OFFSET);
        assert_eq!((k1.tek_id_low, k1.tek_id_high), (0, 0xfffe));
        assert!(!format!("{k1:?}").contains("1111"), "Debug shows no key");
    }
}
