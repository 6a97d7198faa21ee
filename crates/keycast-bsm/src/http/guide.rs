//! The published Service Guide ([`crate::guide`]) over HTTP, public (no authentication: it is
//! the data the broadcast carries to everyone), on the provisioning listener:
//!
//! | route | body |
//! |---|---|
//! | `GET /guide/v1/index.json` | `{"version", "fragments": [{"id", "type", "version", "url"}], "usd": [{"service", "version", "url"}], "spd": [...]}` |
//! | `GET /guide/v1/fragments/{id}.xml` | one fragment |
//! | `GET /guide/v1/usd/{service}.xml` | the service's MBMS User Service Bundle Description |
//! | `GET /guide/v1/spd/{service}.xml` | the service's Service Protection Description |
//!
//! Every answer carries `ETag: "<version>"` and honours `If-None-Match` (304); an unknown id is
//! 404. The guide is rebuilt from the store's catalogue when the catalogue changes (the SQL
//! stores cache the catalogue, so a request that finds it unchanged costs no round trip beyond
//! the stamp check).
//!
//! **Versions \[chosen\].** A fragment (or USD, SPD) keeps its version while its content is
//! unchanged; a changed or new one gets `max(now in Unix seconds, highest version given + 1)`,
//! so versions rise across restarts as long as the clock does (the first build after a start
//! re-stamps everything, which terminals take as an update). The index's version is the highest
//! of all.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use keycast_guide::spd::{SECURITY_DESCRIPTION_CONTENT_TYPE, spd_to_xml};
use keycast_guide::usd::USD_CONTENT_TYPE;

use crate::guide::{CatalogueSnapshot, GUIDE_PATH, GuideConfig, build, set_versions};
use crate::store::BsmStore;

/// Media type of a fragment \[chosen\] (OMA BCAST names no registered type for one fragment).
pub const FRAGMENT_CONTENT_TYPE: &str = "application/xml";

/// One published document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Fragment type (`Service`, `Access`, …, or `USD`, `SPD`).
    pub kind: &'static str,
    /// Its version.
    pub version: u32,
    /// The XML.
    pub xml: String,
}

/// The guide as published at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The highest version of all documents.
    pub version: u32,
    /// Fragments by id.
    pub fragments: BTreeMap<String, Document>,
    /// USDs by service id.
    pub usds: BTreeMap<String, Document>,
    /// Service Protection Descriptions by service id.
    pub spds: BTreeMap<String, Document>,
}

impl Snapshot {
    /// The `index.json` body.
    #[must_use]
    pub fn index(&self, base: &str) -> serde_json::Value {
        let list = |m: &BTreeMap<String, Document>, key: &str, dir: &str| -> Vec<serde_json::Value> {
            m.iter()
                .map(|(id, d)| {
                    serde_json::json!({ key: id, "type": d.kind, "version": d.version, "url": format!("{base}/{dir}/{id}.xml") })
                })
                .collect()
        };
        serde_json::json!({
            "version": self.version,
            "fragments": list(&self.fragments, "id", "fragments"),
            "usd": list(&self.usds, "service", "usd"),
            "spd": list(&self.spds, "service", "spd"),
        })
    }
}

#[derive(Default)]
struct PubState {
    catalogue: Option<CatalogueSnapshot>,
    current: Arc<Snapshot>,
    /// Key (`fragment:<id>`, `usd:<id>`, `spd:<id>`) → (content without version, version).
    versions: HashMap<String, (String, u32)>,
    highest: u32,
}

/// Builds and holds the published guide for one store.
pub struct GuidePublisher<S> {
    store: S,
    config: GuideConfig,
    clock: Arc<dyn Fn() -> u64 + Send + Sync>,
    state: Mutex<PubState>,
}

impl<S> core::fmt::Debug for GuidePublisher<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("GuidePublisher").field("config", &self.config).finish_non_exhaustive()
    }
}

/// Why the guide cannot be served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The guide cannot be built.
    #[error(transparent)]
    Build(#[from] crate::guide::GuideBuildError),
    /// A Service Protection Description cannot be written.
    #[error(transparent)]
    Guide(#[from] keycast_guide::GuideError),
}

impl<S: BsmStore + Send + Sync + 'static> GuidePublisher<S> {
    /// A publisher over `store`, with the system clock.
    #[must_use]
    pub fn new(store: S, config: GuideConfig) -> Self {
        let clock: Arc<dyn Fn() -> u64 + Send + Sync> =
            Arc::new(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()));
        GuidePublisher { store, config, clock, state: Mutex::new(PubState::default()) }
    }

    /// Uses `clock` (Unix seconds) for new versions.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Fn() -> u64 + Send + Sync>) -> Self {
        self.clock = clock;
        self
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &GuideConfig {
        &self.config
    }

    /// The guide as it stands now (rebuilt when the catalogue changed).
    ///
    /// # Errors
    /// [`PublishError`].
    pub async fn snapshot(&self) -> Result<Arc<Snapshot>, PublishError> {
        let catalogue = CatalogueSnapshot::read(&self.store).await?;
        {
            let st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if st.catalogue.as_ref() == Some(&catalogue) {
                return Ok(st.current.clone());
            }
        }
        // Build at version 0 to compare contents, then stamp.
        let mut published = build(&catalogue, &self.config, 0)?;
        let mut docs: Vec<(String, &'static str, String)> = Vec::new();
        for f in fragments(&published.guide) {
            docs.push((format!("fragment:{}", f.0), f.1, f.2));
        }
        for (s, u) in &published.usds {
            docs.push((format!("usd:{s}"), "USD", u.to_xml()));
        }
        for (s, d) in &published.spds {
            docs.push((format!("spd:{s}"), "SPD", spd_to_xml(d)?));
        }
        let now = u32::try_from((self.clock)()).unwrap_or(u32::MAX);
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut new_version = None;
        let mut versions = HashMap::with_capacity(docs.len());
        for (key, _, xml) in &docs {
            let v = match st.versions.get(key) {
                Some((old, v)) if old == xml => *v,
                _ => *new_version.get_or_insert_with(|| now.max(st.highest.saturating_add(1))),
            };
            versions.insert(key.clone(), (xml.clone(), v));
        }
        if let Some(v) = new_version {
            st.highest = v;
        }
        let version_of = |key: &str| versions.get(key).map_or(0, |(_, v)| *v);
        set_versions(&mut published.guide, |id| version_of(&format!("fragment:{id}")));
        let mut snap = Snapshot::default();
        for (id, kind, xml) in fragments(&published.guide) {
            snap.fragments.entry(id.clone()).or_insert(Document {
                kind,
                version: version_of(&format!("fragment:{id}")),
                xml,
            });
        }
        for (s, u) in &published.usds {
            snap.usds
                .insert(s.clone(), Document { kind: "USD", version: version_of(&format!("usd:{s}")), xml: u.to_xml() });
        }
        for (s, d) in &published.spds {
            snap.spds.insert(
                s.clone(),
                Document { kind: "SPD", version: version_of(&format!("spd:{s}")), xml: spd_to_xml(d)? },
            );
        }
        snap.version = versions.values().map(|(_, v)| *v).max().unwrap_or(0);
        let snap = Arc::new(snap);
        st.versions = versions;
        st.catalogue = Some(catalogue);
        st.current = snap.clone();
        Ok(snap)
    }
}

/// Every fragment as (id, type, XML), in the guide's fixed order.
fn fragments(g: &keycast_guide::Guide) -> Vec<(String, &'static str, String)> {
    let mut v = Vec::new();
    v.extend(g.services.values().map(|f| (f.id.clone(), "Service", f.to_xml())));
    v.extend(g.contents.values().map(|f| (f.id.clone(), "Content", f.to_xml())));
    v.extend(g.accesses.values().map(|f| (f.id.clone(), "Access", f.to_xml())));
    v.extend(g.purchase_items.values().map(|f| (f.id.clone(), "PurchaseItem", f.to_xml())));
    v.extend(g.purchase_data.values().map(|f| (f.id.clone(), "PurchaseData", f.to_xml())));
    v.extend(g.purchase_channels.values().map(|f| (f.id.clone(), "PurchaseChannel", f.to_xml())));
    v
}

fn etag(version: u32) -> String {
    format!("\"{version}\"")
}

fn answer(headers: &HeaderMap, version: u32, content_type: &'static str, body: String) -> Response {
    let tag = etag(version);
    let hdrs = [(ETAG, tag.clone()), (CACHE_CONTROL, "no-cache".to_owned())];
    let matches = headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    if matches {
        return (StatusCode::NOT_MODIFIED, hdrs).into_response();
    }
    (StatusCode::OK, hdrs, [(CONTENT_TYPE, content_type)], body).into_response()
}

fn unavailable(e: &PublishError) -> Response {
    tracing::error!(error = %e, "guide: cannot publish");
    (StatusCode::SERVICE_UNAVAILABLE, [(CONTENT_TYPE, "text/plain; charset=utf-8")], "guide unavailable\n")
        .into_response()
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, [(CONTENT_TYPE, "text/plain; charset=utf-8")], "no such document\n").into_response()
}

async fn index<S: BsmStore + Send + Sync + 'static>(
    State(p): State<Arc<GuidePublisher<S>>>,
    headers: HeaderMap,
) -> Response {
    match p.snapshot().await {
        Ok(s) => answer(&headers, s.version, "application/json", s.index(&p.config.guide_url).to_string()),
        Err(e) => unavailable(&e),
    }
}

async fn document<S: BsmStore + Send + Sync + 'static>(
    p: &GuidePublisher<S>,
    headers: &HeaderMap,
    name: &str,
    pick: fn(&Snapshot) -> &BTreeMap<String, Document>,
    content_type: &'static str,
) -> Response {
    let Some(id) = name.strip_suffix(".xml") else { return not_found() };
    match p.snapshot().await {
        Ok(s) => match pick(&s).get(id) {
            Some(d) => answer(headers, d.version, content_type, d.xml.clone()),
            None => not_found(),
        },
        Err(e) => unavailable(&e),
    }
}

async fn fragment<S: BsmStore + Send + Sync + 'static>(
    State(p): State<Arc<GuidePublisher<S>>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    document(&p, &headers, &name, |s| &s.fragments, FRAGMENT_CONTENT_TYPE).await
}

async fn usd<S: BsmStore + Send + Sync + 'static>(
    State(p): State<Arc<GuidePublisher<S>>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    document(&p, &headers, &name, |s| &s.usds, USD_CONTENT_TYPE).await
}

async fn spd<S: BsmStore + Send + Sync + 'static>(
    State(p): State<Arc<GuidePublisher<S>>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    document(&p, &headers, &name, |s| &s.spds, SECURITY_DESCRIPTION_CONTENT_TYPE).await
}

/// The public guide routes (merge them into the provisioning router).
pub fn guide_app<S: BsmStore + Send + Sync + 'static>(publisher: Arc<GuidePublisher<S>>) -> Router {
    Router::new()
        .route(&format!("{GUIDE_PATH}/index.json"), get(index::<S>))
        .route(&format!("{GUIDE_PATH}/fragments/{{name}}"), get(fragment::<S>))
        .route(&format!("{GUIDE_PATH}/usd/{{name}}"), get(usd::<S>))
        .route(&format!("{GUIDE_PATH}/spd/{{name}}"), get(spd::<S>))
        .with_state(publisher)
}
