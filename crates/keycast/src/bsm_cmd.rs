//! `keycast serve bsm`: the BSM of [`keycast_bsm`] as an operator runs it, from one TOML
//! configuration file — the OMA BCAST provisioning interface (`POST /sprov`) and the 3GPP MBMS
//! key-management interface (`POST /keymanagement?requesttype=…`) behind HTTP Digest with keys
//! from the BSF over Zn (profile P-7), and Prometheus metrics.
//!
//! # Configuration
//!
//! The conventions of `serve bsf` hold: relative paths are relative to the configuration file's
//! directory; secrets live in files of their own (an inline secret, or a password in a PostgreSQL
//! URL, is refused); unknown keys are refused with the key named.
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `fqdn` | (required) | the BSM's FQDN: the Digest realm host, the NAF_Id sent on Zn, the IDi of every LTKM |
//! | `listen` | `"127.0.0.1:8081"` | provisioning listener (`host:port`) |
//! | `storage_key_file` | (required) | 32 hex digits: the key that wraps SEK/PEKs at rest |
//! | `ua_secret_file` | (required) | 64 hex digits: Digest nonce and replay keys; shared by all BSM instances behind one name |
//! | `registration_required` | `false` | the Service Response's registrationRequired; `false` registers the terminal implicitly |
//! | `client_id_policy` | `"ignore"` | `"request"`: a Registration over mutual TLS without a BCAST_Client_ID gets `403 send_BCAST_Client_ID` (seed 6.9.2); needs `[tls] client_ca` |
//! | `[tls] cert`, `key` | (plain HTTP) | PEM certificate chain and private key: provisioning over HTTPS |
//! | `[tls] client_ca` | (none) | PEM roots of terminal client certificates (mutual TLS) |
//! | `[tls] client_certificates` | `"required"` with a `client_ca` | `"required"` or `"optional"` |
//! | `[store] url` | `bsm.db` next to the configuration | `sqlite:///abs/path.db`, `sqlite://rel.db`, or `postgres://user@host/db` |
//! | `[bsf] address` | (required) | the BSF's Zn listener, `host:port` |
//! | `[bsf] host` | the host of `address` | the BSF's name (the HTTP `Host`) |
//! | `[bsf] token_file` | (required) | the bearer token the BSF knows this BSM by (loopback only, see `serve bsf`) |
//! | `[metrics] listen` | `"127.0.0.1:9091"` | Prometheus `GET /metrics` |
//! | `[push] listen` | `"127.0.0.1:0"` | the UDP socket LTKMs are pushed from and verification messages come back to: set it to the BSM's public address (e.g. `"0.0.0.0:2269"`) |
//! | `[push] spread_secs` | `600` | a key campaign's pushes (a new key, a moved key end) are spread over this many seconds from its start, never past the new key's start |
//! | `[push] mbms_port` | `2269` | the port LTKMs are pushed to for terminals registered through the 3GPP MBMS interface (profile P-8) |
//! | `[push] oma_bcast_port` | `4359` | the port LTKMs are pushed to for terminals registered through the OMA BCAST interface (profile P-8) |
//! | `[push] campaign_page` | `2000` | terminals per campaign page: each page's deliveries and the campaign's cursor are one transaction |
//! | `[admin] listen` | `"127.0.0.1:9092"` | the JSON administration API ([`keycast_bsm::http::admin`]) |
//! | `[admin] token_file` | (none: no admin API) | its bearer token (accepted from loopback peers only) |
//! | `[broadcast] token_file` | (none: no broadcaster API) | bearer token of the broadcasters' internal API ([`keycast_bsm::http::broadcaster`]: live SEK/PEKs with their bytes), served on the admin listener from loopback peers only; needs `[admin]` |
//! | `[key_center] tbk_secret_file` | (required in `[key_center]`) | 64 hex digits: the secret TBKs are derived from (share it with the broadcaster that wraps TEKs); a `[key_center]` section serves the NAF Key Center and TBK routes ([`keycast_bsm::http::key_center`], profile P-10, P-11.5) on the provisioning listener, mutual TLS only, so it needs `[tls] client_ca` |
//! | `[key_center] counter_limit` | `65536` | the Counter Limit of every Ks_local (TEKs one channel may carry) |
//! | `[key_center] key_lifetime_secs` | `86400` | how long a Ks_local may be used (never past the bootstrapping session) |
//! | `[key_center] tbk_bindings` | `[]` | `[{ key_group = 1, tbk_id = 1911 }, …]`: the LTKMs of these key groups carry tbk_flag and the ID, and their buyers may fetch that TBK |
//! | `[guide] base_url` | `http(s)://<fqdn>:<listen port>` | how terminals reach the provisioning listener: the published Service Guide's PurchaseURL (`…/sprov`), key management server (`…/keymanagement`) and description URLs (`…/guide/v1/…`); the guide itself is served publicly there ([`keycast_bsm::http::guide`]) |
//! | `[guide] portal_url` | (none) | a PortalURL in the guide's PurchaseChannel: terminals send users there instead of sending a Service Request |
//! | `[log] format` | `"text"` | `"text"` or `"json"`; level from `RUST_LOG` (default `info`) |
//!
//! # Service
//!
//! A multi-thread tokio runtime with 2 workers serves the provisioning routes on `listen` and
//! `/metrics` on `[metrics] listen`; SIGINT or SIGTERM stops it cleanly (exit 0). Logs carry
//! B-TIDs, IMPIs and outcomes, never a key. The provisioning answers' delivery intents are
//! written to the store and a push worker ([`keycast_bsm::push`]) sends the LTKMs over UDP,
//! retries, triggers solicited pulls and takes verification messages. A campaign runner
//! ([`keycast_bsm::campaign`]) turns every new key and moved key end into deliveries for the
//! entitled registered terminals, resuming after a crash where it stopped. With `[admin]
//! token_file` it also serves the admin API (`keycast bsm …` drives it).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use keycast_bsm::campaign::CampaignRunner;
use keycast_bsm::client_id::BcastClientIdPolicy;
use keycast_bsm::guide::GuideConfig;
use keycast_bsm::http::UaGuard;
use keycast_bsm::http::admin::{AdminState, admin_app};
use keycast_bsm::http::broadcaster::{BroadcasterState, broadcaster_app};
use keycast_bsm::http::guide::{GuidePublisher, guide_app};
use keycast_bsm::http::intents::{IntentWriter, StoreIntents};
use keycast_bsm::http::key_center::{KeyCenterConfig, KeyCenterState, key_center_app};
use keycast_bsm::http::provisioning::{ProvisioningState, bsm_app};
use keycast_bsm::http::tls::{ClientCertificates, tls_server_config};
use keycast_bsm::keys::{KeyCache, KeySource};
use keycast_bsm::push::{OsRandom, PushConfig, PushService, PushWorker, system_push_clock};
use keycast_bsm::service::{Provisioning, ProvisioningConfig};
use keycast_bsm::store::BsmStore;
use keycast_bsm::store::sql::{PgStore, SqliteStore};
use keycast_bsm::ua::{UaAuthenticator, UaConfig};
use keycast_bsm::zn_client::{ZnClient, ZnClientConfig, ZnCredential};
use keycast_crypto::at_rest::StorageKey;
use keycast_gba::bsf::http::{install_prometheus, metrics_app, serve};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use zeroize::Zeroizing;

use crate::bsf_cmd::{
    LogFormat, RawLog, RawStore, StoreLocation, init_service_logging, inline_secret, read_identity, read_roots,
    read_secret_file, shutdown_signal, stopped, store_location,
};

/// Default `[push] spread_secs`: the scheduler's spread window.
const DEFAULT_SPREAD_SECS: u64 = 600;

/// How often the campaign runner looks for new campaigns.
const CAMPAIGN_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Key-cache entries (B-TIDs whose Zn answer is kept until its lifetime ends).
const KEY_CACHE_CAPACITY: usize = 65_536;

/// Options of `serve bsm`.
#[derive(Debug, Args)]
#[command(after_help = "The configuration keys are listed in the keycast library documentation \
(module bsm_cmd). Log level: RUST_LOG (default info).")]
pub struct ServeBsmArgs {
    /// The TOML configuration file.
    #[arg(long, value_name = "PATH", env = "KEYCAST_BSM_CONFIG")]
    pub config: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    fqdn: String,
    #[serde(default = "default_listen")]
    listen: String,
    storage_key_file: Option<PathBuf>,
    ua_secret_file: Option<PathBuf>,
    #[serde(default)]
    registration_required: bool,
    client_id_policy: Option<String>,
    tls: Option<RawTls>,
    #[serde(default)]
    store: RawStore,
    bsf: Option<RawBsf>,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    broadcast: RawBroadcast,
    #[serde(default)]
    push: RawPush,
    #[serde(default)]
    log: RawLog,
    key_center: Option<RawKeyCenter>,
    #[serde(default)]
    guide: RawGuide,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGuide {
    base_url: Option<String>,
    portal_url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeyCenter {
    tbk_secret_file: Option<PathBuf>,
    counter_limit: Option<u64>,
    key_lifetime_secs: Option<u64>,
    #[serde(default)]
    tbk_bindings: Vec<RawTbkBinding>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTbkBinding {
    key_group: u16,
    tbk_id: u32,
}

/// The `[key_center]` section, checked (profile P-10, P-11.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCenterSettings {
    /// File of the TBK secret (64 hex digits).
    pub tbk_secret_file: PathBuf,
    /// Counter Limit of every Ks_local.
    pub counter_limit: u128,
    /// Ks_local lifetime, seconds.
    pub key_lifetime: u64,
    /// Key group → terminal_binding_key_id.
    pub tbk_bindings: std::collections::BTreeMap<u16, u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    client_certificates: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPush {
    listen: Option<String>,
    spread_secs: Option<u64>,
    campaign_page: Option<u32>,
    mbms_port: Option<u16>,
    oma_bcast_port: Option<u16>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Option<String>,
    token_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBroadcast {
    token_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBsf {
    address: String,
    host: Option<String>,
    token_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    #[serde(default = "default_metrics_listen")]
    listen: String,
}

impl Default for RawMetrics {
    fn default() -> Self {
        RawMetrics { listen: default_metrics_listen() }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8081".into()
}

fn default_metrics_listen() -> String {
    "127.0.0.1:9091".into()
}

/// The provisioning listener's TLS files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BsmTls {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM roots of terminal client certificates, and whether one is required.
    pub client_ca: Option<(PathBuf, bool)>,
}

/// The BSM's configuration, checked, with paths resolved; secrets are still in their files.
#[derive(Debug, Clone)]
pub struct BsmSettings {
    /// The configuration file.
    pub path: PathBuf,
    /// The BSM FQDN.
    pub fqdn: String,
    /// Provisioning listener.
    pub listen: String,
    /// Storage key file.
    pub storage_key_file: PathBuf,
    /// Digest secret file.
    pub ua_secret_file: PathBuf,
    /// registrationRequired of Service Responses.
    pub registration_required: bool,
    /// What the BSM does about BCAST_Client_IDs.
    pub client_id_policy: BcastClientIdPolicy,
    /// HTTPS toward terminals: certificate chain, key, client CA and whether a client certificate
    /// is required.
    pub tls: Option<BsmTls>,
    /// The store.
    pub store: StoreLocation,
    /// The BSF's Zn address.
    pub bsf_address: String,
    /// The BSF's name.
    pub bsf_host: String,
    /// The Zn token file.
    pub zn_token_file: PathBuf,
    /// Metrics listener.
    pub metrics_listen: String,
    /// Admin API listener and token file (no admin API without a token file).
    pub admin: Option<(String, PathBuf)>,
    /// Broadcaster API token file (served on the admin listener).
    pub broadcast_token_file: Option<PathBuf>,
    /// The push socket's address.
    pub push_listen: SocketAddr,
    /// The window a key campaign's pushes are spread over.
    pub push_spread: std::time::Duration,
    /// Destination ports of LTKM pushes, per registration interface (`profile: P-8`).
    pub push_ports: keycast_bsm::delivery::PushPorts,
    /// Terminals per campaign page (one transaction each).
    pub campaign_page: u32,
    /// Log format.
    pub log_format: LogFormat,
    /// The NAF Key Center and TBK routes, when configured.
    pub key_center: Option<KeyCenterSettings>,
    /// `[guide] base_url` and `portal_url`.
    pub guide: (Option<String>, Option<String>),
}

impl BsmSettings {
    /// Reads and checks the configuration file.
    ///
    /// # Errors
    /// Unreadable file, TOML errors (unknown keys named), inline secrets, missing keys.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text, path)
    }

    /// Checks configuration text; `path` names the file in messages and anchors relative paths.
    ///
    /// # Errors
    /// As [`BsmSettings::load`].
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let table: toml::Table = toml::from_str(text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let bsf = table.get("bsf").and_then(toml::Value::as_table);
        for (key, has, instead) in [
            ("storage_key", table.contains_key("storage_key"), "storage_key_file"),
            ("ua_secret", table.contains_key("ua_secret"), "ua_secret_file"),
            ("bsf.token", bsf.is_some_and(|b| b.contains_key("token")), "token_file"),
            (
                "admin.token",
                table.get("admin").and_then(toml::Value::as_table).is_some_and(|a| a.contains_key("token")),
                "token_file",
            ),
            (
                "broadcast.token",
                table.get("broadcast").and_then(toml::Value::as_table).is_some_and(|a| a.contains_key("token")),
                "token_file",
            ),
        ] {
            if has {
                return Err(inline_secret(path, key, instead));
            }
        }
        let raw: RawConfig = toml::from_str(text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let resolve = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { base.join(p) };
        let required = |value: Option<&PathBuf>, key: &str, what: &str| {
            value.map(|p| resolve(p)).ok_or_else(|| anyhow!("{}: `{key}` is required ({what})", path.display()))
        };
        let storage_key_file =
            required(raw.storage_key_file.as_ref(), "storage_key_file", "a file holding the 32-hex-digit storage key")?;
        let ua_secret_file = required(raw.ua_secret_file.as_ref(), "ua_secret_file", "a file holding 64 hex digits")?;
        let bsf =
            raw.bsf.ok_or_else(|| anyhow!("{}: a [bsf] section (address, token_file) is required", path.display()))?;
        let zn_token_file = required(bsf.token_file.as_ref(), "[bsf] token_file", "the Zn bearer token")?;
        let bsf_host = match bsf.host {
            Some(h) => h,
            None => bsf
                .address
                .rsplit_once(':')
                .map(|(h, _)| h.trim_matches(['[', ']']).to_owned())
                .ok_or_else(|| anyhow!("{}: [bsf] address must be host:port", path.display()))?,
        };
        if raw.fqdn.is_empty() {
            bail!("{}: `fqdn` must name the BSM", path.display());
        }
        let client_id_policy = match raw.client_id_policy.as_deref() {
            None => BcastClientIdPolicy::default(),
            Some(p) => BcastClientIdPolicy::parse(p)
                .ok_or_else(|| anyhow!("{}: client_id_policy must be \"ignore\" or \"request\"", path.display()))?,
        };
        let tls = match raw.tls {
            None => None,
            Some(t) => {
                if t.key.to_string_lossy().contains("-----BEGIN") {
                    return Err(inline_secret(path, "tls.key", "tls.key = \"<path of the PEM file>\""));
                }
                let required = match t.client_certificates.as_deref() {
                    None | Some("required") => true,
                    Some("optional") => false,
                    Some(_) => {
                        bail!("{}: [tls] client_certificates must be \"required\" or \"optional\"", path.display())
                    }
                };
                Some(BsmTls {
                    cert: resolve(&t.cert),
                    key: resolve(&t.key),
                    client_ca: t.client_ca.as_deref().map(|c| (resolve(c), required)),
                })
            }
        };
        if client_id_policy == BcastClientIdPolicy::Request && tls.as_ref().is_none_or(|t| t.client_ca.is_none()) {
            bail!(
                "{}: client_id_policy = \"request\" needs [tls] client_ca: the ID is only taken over mutual TLS, so no \
                 Registration could succeed",
                path.display()
            );
        }
        let key_center = match raw.key_center {
            None => None,
            Some(k) => {
                if tls.as_ref().is_none_or(|t| t.client_ca.is_none()) {
                    bail!(
                        "{}: [key_center] needs [tls] client_ca: the key center answers over mutual TLS only",
                        path.display()
                    );
                }
                let mut tbk_bindings = std::collections::BTreeMap::new();
                for b in &k.tbk_bindings {
                    if b.key_group == 0 || tbk_bindings.insert(b.key_group, b.tbk_id).is_some() {
                        bail!(
                            "{}: [key_center] tbk_bindings: key group {} is 0 or repeated",
                            path.display(),
                            b.key_group
                        );
                    }
                }
                Some(KeyCenterSettings {
                    tbk_secret_file: required(
                        k.tbk_secret_file.as_ref(),
                        "[key_center] tbk_secret_file",
                        "64 hex digits",
                    )?,
                    counter_limit: match k.counter_limit {
                        Some(0) => bail!("{}: [key_center] counter_limit must be at least 1", path.display()),
                        Some(n) => u128::from(n),
                        None => keycast_bsm::http::key_center::DEFAULT_COUNTER_LIMIT,
                    },
                    key_lifetime: k.key_lifetime_secs.unwrap_or(keycast_bsm::http::key_center::DEFAULT_KEY_LIFETIME),
                    tbk_bindings,
                })
            }
        };
        if raw.broadcast.token_file.is_some() && raw.admin.token_file.is_none() {
            bail!("{}: [broadcast] token_file needs [admin] (its API is served on the admin listener)", path.display());
        }
        Ok(BsmSettings {
            path: path.to_path_buf(),
            fqdn: raw.fqdn,
            listen: raw.listen,
            storage_key_file,
            ua_secret_file,
            registration_required: raw.registration_required,
            client_id_policy,
            tls,
            store: store_location(raw.store.url.as_deref(), path, "bsm.db")?,
            bsf_address: bsf.address,
            bsf_host,
            zn_token_file,
            metrics_listen: raw.metrics.listen,
            admin: raw
                .admin
                .token_file
                .as_deref()
                .map(|f| (raw.admin.listen.clone().unwrap_or_else(|| "127.0.0.1:9092".into()), resolve(f))),
            broadcast_token_file: raw.broadcast.token_file.as_deref().map(resolve),
            push_listen: raw.push.listen.as_deref().unwrap_or("127.0.0.1:0").parse().map_err(|_| {
                anyhow!("{}: [push] listen must be an IP address and port, e.g. \"0.0.0.0:2269\"", path.display())
            })?,
            push_spread: std::time::Duration::from_secs(raw.push.spread_secs.unwrap_or(DEFAULT_SPREAD_SECS)),
            push_ports: {
                let default = keycast_bsm::delivery::PushPorts::default();
                let port = |p: Option<u16>, d: u16, key: &str| match p {
                    Some(0) => bail!("{}: [push] {key} must not be 0", path.display()),
                    Some(p) => Ok(p),
                    None => Ok(d),
                };
                keycast_bsm::delivery::PushPorts {
                    mbms: port(raw.push.mbms_port, default.mbms, "mbms_port")?,
                    oma_bcast: port(raw.push.oma_bcast_port, default.oma_bcast, "oma_bcast_port")?,
                }
            },
            campaign_page: match raw.push.campaign_page {
                Some(0) => bail!("{}: [push] campaign_page must be at least 1", path.display()),
                Some(n) => n,
                None => keycast_bsm::campaign::DEFAULT_PAGE,
            },
            log_format: raw.log.format,
            key_center,
            guide: (raw.guide.base_url, raw.guide.portal_url),
        })
    }

    fn key_center_config(&self, k: &KeyCenterSettings) -> Result<KeyCenterConfig> {
        let text = read_secret_file(&k.tbk_secret_file, "TBK secret")?;
        let mut secret = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text.trim(), &mut secret[..])
            .map_err(|_| anyhow!("{}: the TBK secret must be 64 hex digits", k.tbk_secret_file.display()))?;
        let mut config = KeyCenterConfig::new(&self.fqdn, secret);
        config.counter_limit = k.counter_limit;
        config.key_lifetime = k.key_lifetime;
        config.tbk_bindings.clone_from(&k.tbk_bindings);
        Ok(config)
    }

    fn storage_key(&self) -> Result<StorageKey> {
        let text = read_secret_file(&self.storage_key_file, "storage key")?;
        StorageKey::from_hex(&text).map_err(|e| anyhow!("{}: {e}", self.storage_key_file.display()))
    }

    fn ua_config(&self) -> Result<UaConfig> {
        let text = read_secret_file(&self.ua_secret_file, "Digest secret")?;
        let mut secret = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text.trim(), &mut secret[..])
            .map_err(|_| anyhow!("{}: the Digest secret must be 64 hex digits", self.ua_secret_file.display()))?;
        Ok(UaConfig::new(&self.fqdn, *secret))
    }

    fn zn_client(&self) -> Result<ZnClient> {
        let text = read_secret_file(&self.zn_token_file, "Zn token")?;
        let token = Zeroizing::new(text.trim().to_owned());
        if token.is_empty() {
            bail!("{}: the Zn token file is empty", self.zn_token_file.display());
        }
        let config = ZnClientConfig::new(&self.bsf_address, &self.bsf_host, &self.fqdn, ZnCredential::Bearer(token));
        Ok(ZnClient::new(config))
    }
}

/// The provisioning listener's TLS configuration from its files.
fn bsm_tls_config(files: &BsmTls) -> Result<Arc<rustls::ServerConfig>> {
    let (chain, key) = read_identity(&files.cert, &files.key)?;
    let clients = match &files.client_ca {
        None => ClientCertificates::None,
        Some((path, true)) => ClientCertificates::Required(read_roots(path, "client CA")?),
        Some((path, false)) => ClientCertificates::Optional(read_roots(path, "client CA")?),
    };
    Ok(Arc::new(tls_server_config(chain, key, clients).context("TLS configuration")?))
}

/// Runs `keycast serve bsm`.
///
/// # Errors
/// Configuration, store and listener errors.
pub fn run_serve_bsm(args: &ServeBsmArgs) -> Result<ExitCode> {
    let settings = BsmSettings::load(&args.config)?;
    init_service_logging(settings.log_format)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("keycast-bsm")
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(serve_bsm(&settings))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve_bsm(settings: &BsmSettings) -> Result<()> {
    let key = settings.storage_key()?;
    let opened = |e: keycast_bsm::store::StoreError| match e {
        keycast_bsm::store::StoreError::WrongStorageKey => anyhow!(
            "{e}: the storage key in {} is not the one this store was created with",
            settings.storage_key_file.display()
        ),
        e => anyhow!(e),
    };
    match &settings.store {
        StoreLocation::Sqlite(path) => {
            let store = SqliteStore::open(path, key)
                .await
                .map_err(opened)
                .with_context(|| format!("opening the SQLite store {}", path.display()))?;
            run(settings, store.clone(), &format!("sqlite {}", path.display())).await?;
            store.close().await;
        }
        StoreLocation::SqliteUrl(url) => {
            let store = SqliteStore::open_url(url, key).await.map_err(opened).context("opening the SQLite store")?;
            run(settings, store.clone(), "sqlite (URL)").await?;
            store.close().await;
        }
        StoreLocation::Postgres(url) => {
            let store = PgStore::open(url, key).await.map_err(opened).context("opening the PostgreSQL store")?;
            run(settings, store.clone(), "postgres").await?;
            store.close().await;
        }
    }
    Ok(())
}

async fn run<S: BsmStore + Clone + Send + Sync + 'static>(
    settings: &BsmSettings,
    store: S,
    store_kind: &str,
) -> Result<()> {
    let authenticator =
        UaAuthenticator::new(&settings.ua_config()?).map_err(|e| anyhow!("{}: {e}", settings.path.display()))?;
    let keys: Arc<dyn KeySource> = Arc::new(KeyCache::new(settings.zn_client()?, KEY_CACHE_CAPACITY));
    let guard = Arc::new(UaGuard::new(authenticator, keys.clone()));
    let mut config = ProvisioningConfig::new(settings.fqdn.clone());
    config.registration_required = settings.registration_required;
    let key_center = settings.key_center.as_ref().map(|k| settings.key_center_config(k)).transpose()?;
    if let Some(k) = &settings.key_center {
        config.tbk_bindings.clone_from(&k.tbk_bindings);
    }
    let admin = match &settings.admin {
        None => None,
        Some((listen, file)) => {
            let token = Zeroizing::new(read_secret_file(file, "admin token")?.trim().to_owned());
            if token.len() < 16 {
                bail!("{}: the admin token must be at least 16 characters", file.display());
            }
            let listener =
                TcpListener::bind(listen).await.with_context(|| format!("listening for the admin API on {listen}"))?;
            let state = AdminState::new(store.clone(), token).with_campaign_spread(settings.push_spread);
            let broadcaster = match &settings.broadcast_token_file {
                None => None,
                Some(file) => {
                    let token = Zeroizing::new(read_secret_file(file, "broadcast token")?.trim().to_owned());
                    if token.len() < 16 {
                        bail!("{}: the broadcast token must be at least 16 characters", file.display());
                    }
                    Some(Arc::new(BroadcasterState::new(store.clone(), token)))
                }
            };
            Some((listener, Arc::new(state), broadcaster))
        }
    };
    // Pushes: intents from the answers go to the store; the worker sends what is due.
    let worker_id = format!("{}/{}/{}", settings.fqdn, std::process::id(), crate::bsf_cmd::unix_now());
    let mut push_config = PushConfig::new(worker_id, settings.fqdn.clone());
    push_config.scheduler.spread_window = settings.push_spread;
    push_config.scheduler.ports = settings.push_ports;
    let writer = Arc::new(IntentWriter::new(store.clone(), push_config.scheduler, OsRandom));
    let intents = StoreIntents::new(writer, system_push_clock());
    let worker = PushWorker::bind(store.clone(), keys.clone(), push_config, settings.push_listen, OsRandom)
        .await
        .with_context(|| format!("binding the push socket {}", settings.push_listen))?;
    let push_addr = worker.local_addr().context("push socket address")?;
    let push = PushService::spawn(worker, system_push_clock());
    let tls = settings.tls.as_ref().map(bsm_tls_config).transpose()?;
    let runner = Arc::new(
        CampaignRunner::new(Provisioning::new(store.clone(), config.clone()), OsRandom)
            .with_page(settings.campaign_page),
    );
    let key_center = key_center.map(|c| Arc::new(KeyCenterState::new(store.clone(), guard.clone(), c)));
    let guide_store = store.clone();
    let state = Arc::new(
        ProvisioningState::new(Provisioning::new(store, config), guard)
            .with_intents(Arc::new(intents))
            .with_client_id_policy(settings.client_id_policy),
    );

    let handle = install_prometheus().map_err(|_| anyhow!("another metrics recorder is installed"))?;
    let listener =
        TcpListener::bind(&settings.listen).await.with_context(|| format!("listening on {}", settings.listen))?;
    let metrics_listener = TcpListener::bind(&settings.metrics_listen)
        .await
        .with_context(|| format!("listening for metrics on {}", settings.metrics_listen))?;
    let addr = listener.local_addr().context("listener address")?;
    let metrics_addr = metrics_listener.local_addr().context("metrics listener address")?;
    // The public Service Guide, built from the catalogue (issue 7 "Publishing").
    let scheme = if settings.tls.is_some() { "https" } else { "http" };
    let base = settings.guide.0.clone().unwrap_or_else(|| format!("{scheme}://{}:{}", settings.fqdn, addr.port()));
    let mut guide_config = GuideConfig::new(&settings.fqdn, &base);
    guide_config.portal_url.clone_from(&settings.guide.1);
    let guide = Arc::new(GuidePublisher::new(guide_store, guide_config));
    tracing::info!(
        fqdn = %settings.fqdn,
        %addr,
        tls = settings.tls.is_some(),
        client_id_policy = settings.client_id_policy.as_str(),
        %metrics_addr,
        store = %store_kind,
        bsf = %settings.bsf_address,
        push = %push_addr,
        "BSM serving"
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let campaigns = tokio::spawn(run_campaigns(runner, stop_rx.clone()));
    let signals = tokio::spawn(async move {
        let which = shutdown_signal().await;
        tracing::info!(signal = which, "shutting down");
        let _ = stop_tx.send(true);
    });
    // The BSM's own serve gives the routes the source address (the push address, P-8) and the
    // TLS channel (BCAST_Client_ID rules), with or without TLS.
    // The key center (P-10, P-11.5) shares the listener; its own layer refuses all but mutual TLS.
    let app = key_center.into_iter().fold(bsm_app(state), |app, k| app.merge(key_center_app(k)));
    let app = app.merge(guide_app(guide));
    let provisioning = keycast_bsm::http::tls::serve(listener, app, tls, stopped(stop_rx.clone()));
    let admin_api = async {
        if let Some((listener, state, broadcaster)) = admin {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, "BSM admin API serving");
            }
            let mut app = admin_app(state);
            if let Some(b) = broadcaster {
                app = app.merge(broadcaster_app(b));
            }
            let app = app.into_make_service_with_connect_info::<SocketAddr>();
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stopped(stop_rx.clone())).await {
                tracing::error!(error = %e, "admin listener failed");
            }
        }
    };
    tokio::join!(provisioning, admin_api, serve(metrics_listener, metrics_app(handle), None, stopped(stop_rx.clone())));
    signals.abort();
    // A campaign stopped mid-page loses that page's uncommitted transaction only; the next start
    // resumes after the last stored page.
    let _ = campaigns.await;
    push.stop().await;
    tracing::info!("BSM stopped");
    Ok(())
}

/// Runs open key campaigns until the service stops: now, then every [`CAMPAIGN_POLL`].
async fn run_campaigns<S, R>(runner: Arc<CampaignRunner<S, R>>, stop: watch::Receiver<bool>)
where
    S: BsmStore + Send + Sync + 'static,
    R: keycast_bsm::rng::RandomSource + Send + 'static,
{
    loop {
        let round = runner.run_open(crate::bsf_cmd::unix_now(), |c| {
            tracing::debug!(campaign = c.id, terminals = c.terminals, queued = c.queued, "campaign page stored");
        });
        tokio::select! {
            result = round => {
                if let Err(e) = result {
                    tracing::warn!(error = %e, "key campaign interrupted; it resumes at the next round");
                }
            }
            () = stopped(stop.clone()) => return,
        }
        tokio::select! {
            () = tokio::time::sleep(CAMPAIGN_POLL) => {}
            () = stopped(stop.clone()) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<BsmSettings> {
        BsmSettings::parse(text, Path::new("/etc/keycast/bsm.toml"))
    }

    const MINIMAL: &str = "fqdn = \"bmsc.example.org\"\nstorage_key_file = \"storage.key\"\n\
        ua_secret_file = \"ua.secret\"\n[bsf]\naddress = \"127.0.0.1:8080\"\ntoken_file = \"zn.token\"\n";

    #[test]
    fn defaults_fill_what_the_file_omits() {
        let s = parse(MINIMAL).unwrap();
        assert_eq!((s.listen.as_str(), s.metrics_listen.as_str()), ("127.0.0.1:8081", "127.0.0.1:9091"));
        assert_eq!(s.store, StoreLocation::Sqlite("/etc/keycast/bsm.db".into()));
        assert_eq!(s.zn_token_file, PathBuf::from("/etc/keycast/zn.token"));
        assert_eq!(s.bsf_host, "127.0.0.1");
        assert!(!s.registration_required);
    }

    #[test]
    fn guide_section() {
        assert_eq!(parse(MINIMAL).unwrap().guide, (None, None));
        let s = parse(&format!("{MINIMAL}[guide]\nbase_url = \"http://b:1\"\nportal_url = \"https://p\"\n")).unwrap();
        assert_eq!(s.guide, (Some("http://b:1".into()), Some("https://p".into())));
        assert!(parse(&format!("{MINIMAL}[guide]\nportal = \"x\"\n")).is_err());
    }

    #[test]
    fn inline_secrets_missing_keys_and_unknown_keys_are_refused() {
        let e = parse(&format!("{MINIMAL}token = \"x\"\n")).unwrap_err().to_string();
        assert!(e.contains("bsf.token") && e.contains("token_file"), "{e}");
        let e = parse(&format!("ua_secret = \"00\"\n{MINIMAL}")).unwrap_err().to_string();
        assert!(e.contains("inline secret `ua_secret`"), "{e}");
        let e = parse("fqdn = \"b\"\nstorage_key_file = \"k\"\nua_secret_file = \"u\"\n").unwrap_err().to_string();
        assert!(e.contains("[bsf]"), "{e}");
        let e = parse(&MINIMAL.replace("ua_secret_file = \"ua.secret\"\n", "")).unwrap_err().to_string();
        assert!(e.contains("ua_secret_file"), "{e}");
        let e = parse(&format!("listen_addr = \"x\"\n{MINIMAL}")).unwrap_err().to_string();
        assert!(e.contains("listen_addr"), "{e}");
        let e = parse(&format!("{MINIMAL}[store]\nurl = \"postgres://bsm:hunter2@db/bsm\"\n")).unwrap_err().to_string();
        assert!(e.contains("password") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn tls_and_client_id_policy() {
        let s = parse(&format!("client_id_policy = \"request\"\n{MINIMAL}[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\nclient_ca = \"ca.pem\"\n"))
            .unwrap();
        assert_eq!(s.client_id_policy, BcastClientIdPolicy::Request);
        let tls = s.tls.unwrap();
        assert_eq!(tls.client_ca, Some((PathBuf::from("/etc/keycast/ca.pem"), true)), "required by default");
        let e = parse(&format!("client_id_policy = \"request\"\n{MINIMAL}")).unwrap_err().to_string();
        assert!(e.contains("client_ca"), "{e}");
        let e = parse(&format!("client_id_policy = \"always\"\n{MINIMAL}")).unwrap_err().to_string();
        assert!(e.contains("ignore"), "{e}");
        let optional = parse(&format!(
            "{MINIMAL}[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\nclient_ca = \"ca.pem\"\nclient_certificates = \"optional\"\n"
        ))
        .unwrap();
        assert!(!optional.tls.unwrap().client_ca.unwrap().1, "optional");
        let e = parse(&format!("{MINIMAL}[tls]\ncert = \"c.pem\"\nkey = \"-----BEGIN PRIVATE KEY-----\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("inline secret"), "{e}");
    }

    #[test]
    fn key_center_section() {
        const TLS: &str = "[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\nclient_ca = \"ca.pem\"\n";
        assert!(parse(&format!("{MINIMAL}{TLS}")).unwrap().key_center.is_none(), "off unless configured");
        let s = parse(&format!(
            "{MINIMAL}{TLS}[key_center]\ntbk_secret_file = \"tbk.secret\"\ncounter_limit = 5\n\
             tbk_bindings = [{{ key_group = 1, tbk_id = 1911 }}]\n"
        ))
        .unwrap();
        let k = s.key_center.unwrap();
        assert_eq!(k.tbk_secret_file, PathBuf::from("/etc/keycast/tbk.secret"));
        assert_eq!(k.counter_limit, 5);
        assert_eq!(k.key_lifetime, keycast_bsm::http::key_center::DEFAULT_KEY_LIFETIME);
        assert_eq!(k.tbk_bindings.get(&1), Some(&1911));
        let e = parse(&format!("{MINIMAL}[key_center]\ntbk_secret_file = \"t\"\n")).unwrap_err().to_string();
        assert!(e.contains("client_ca"), "{e}");
        let e = parse(&format!("{MINIMAL}{TLS}[key_center]\ncounter_limit = 5\n")).unwrap_err().to_string();
        assert!(e.contains("tbk_secret_file"), "{e}");
        let e = parse(&format!(
            "{MINIMAL}{TLS}[key_center]\ntbk_secret_file = \"t\"\n\
             tbk_bindings = [{{ key_group = 1, tbk_id = 1 }}, {{ key_group = 1, tbk_id = 2 }}]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("repeated"), "{e}");
    }
}
