//! `keycast serve bsf` and `keycast bsf subscriber add|import|show|delete`: the BSF of
//! [`keycast_gba::bsf`] as an operator runs it, from one TOML configuration file.
//!
//! # Configuration
//!
//! Relative paths are relative to the directory of the configuration file. Secrets are never
//! written in the TOML itself: the storage key, the server secret and the Zn tokens live in files
//! of their own (mode 0600; a file readable by group or others is warned about), and an inline
//! `storage_key`, `server_secret`, `token`, PEM text in `[tls] key` or a password in a
//! PostgreSQL URL is refused. Unknown keys are refused with the key named.
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `domain` | (required) | BSF name: the Ub realm and the domain of every B-TID |
//! | `listen` | `"127.0.0.1:8080"` | Ub and Zn listener (`host:port`) |
//! | `storage_key_file` | (required) | 32 hex digits: the key that wraps K, OPc and Ks at rest |
//! | `server_secret_file` | (required by `serve bsf`) | 64 hex digits: nonce, opaque and fake-vector keys; shared by all instances on one store |
//! | `key_lifetime_secs` | `86400` | Ks / B-TID lifetime |
//! | `nonce_lifetime_secs` | `300` | how long a challenge may be answered |
//! | `max_failures` | `3` | consecutive wrong answers per IMPI before 403 |
//! | `failure_window_secs` | `3600` | failures further apart are not consecutive |
//! | `fake_amf` | `"8000"` | AMF of the fake vectors sent to unknown IMPIs: set it to your subscribers' AMF |
//! | `[tls] cert`, `key` | (no TLS) | PEM certificate chain and private key: Ub and Zn over HTTPS |
//! | `[tls] naf_client_ca` | (none) | PEM roots of NAF client certificates (mutual TLS on Zn); a certificate must name one of `[zn] authorised_nafs` |
//! | `[store] url` | `bsf.db` next to the configuration | `sqlite:///abs/path.db`, `sqlite://rel.db`, or `postgres://user@host/db` (password from `PGPASSWORD` or `~/.pgpass`) |
//! | `[zn] authorised_nafs` | `[]` | NAF FQDNs that may get keys on Zn |
//! | `[[zn.tokens]] naf`, `token_file` | (none) | a bearer token (in a file) standing for one NAF; accepted from loopback peers only |
//! | `[metrics] listen` | `"127.0.0.1:9090"` | Prometheus `GET /metrics` |
//! | `[log] format` | `"text"` | `"text"` or `"json"` (one object per line, on standard error); the level comes from `RUST_LOG` (default `info`) |
//!
//! # Service
//!
//! `serve bsf` runs a multi-thread tokio runtime with 2 workers, serves Ub (`GET /`) and Zn
//! (`POST /zn/v1/naf-keys`) on `listen` and `/metrics` on `[metrics] listen`, purges expired
//! sessions and pending challenges every minute, and on SIGINT (Ctrl-C) or SIGTERM stops
//! accepting, lets open requests finish (up to 10 s) and exits 0. Logs carry IMPIs, B-TIDs,
//! statuses and causes, never a key, RES or token. Metrics: `keycast_bsf_bootstraps_total{gba_type}`,
//! `keycast_bsf_ub_failures_total{cause}`, `keycast_bsf_resyncs_total`,
//! `keycast_bsf_challenges_total{known_impi}`, `keycast_bsf_zn_answers_total{outcome}` and
//! `keycast_bsf_purged_total{kind}`.
//!
//! # Subscribers
//!
//! - `add`: K and OP/OPc from standard input (`K=<hex>`, `OP=<hex>` or `OPC=<hex>` lines) or
//!   from `--keys-file` holding the same lines; never from the command line.
//! - `import FILE.csv`: a header row naming the columns `impi,imsi,k,opc` (or `op` instead of
//!   `opc`), `amf`, `gba_type` and optionally `sqn` (hex, default 0), in any order; blank lines
//!   and `#` comments are skipped; fields are not quoted. **All or nothing**: every row is
//!   checked first (syntax, IMSI/IMPI form, key lengths, IMPIs repeated in the file or already
//!   in the store), and any bad row is reported with its line number before anything is written;
//!   then the rows are inserted with a progress bar (on standard error, only when it is a
//!   terminal). Should an insert still fail (a concurrent `add` of the same IMPI, a lost
//!   database), the rows this run inserted are deleted again.
//! - `show [--impi …] [--json]`: IMPI, IMSI, SQN, AMF and GBA type; never K or OPc.
//! - `delete --impi …`: the subscriber and its bootstrapping session.

use std::collections::{HashMap, HashSet};
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use keycast_crypto::keys::{Op, Opc, SubscriberKey};
use keycast_gba::bsf::http::{
    BsfState, ZnAuth, ZnToken, app, install_prometheus, metrics_app, serve, tls_server_config,
};
use keycast_gba::bsf::{
    Bsf, BsfConfig, BsfStore, GbaType, MAX_IMPI_LEN, PgStore, SqliteStore, StorageKey, StoreError, Subscriber,
    SubscriberSummary,
};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use zeroize::Zeroizing;

use crate::card_cmd::{KeySlots, key16, read_stdin_secret, refuse_keys_in_argv, valid_impi, valid_imsi};
use crate::input::parse_hex;

/// How often `serve bsf` purges expired sessions and pending challenges.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Command line

/// `keycast serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Which service.
    #[command(subcommand)]
    pub service: ServeCommand,
}

/// The services.
#[derive(Debug, Subcommand)]
pub enum ServeCommand {
    /// The BSF: Ub (HTTP Digest AKA bootstrapping), Zn (NAF keys) and Prometheus metrics, until
    /// SIGINT or SIGTERM.
    Bsf(ServeBsfArgs),
    /// The BSM: OMA BCAST service provisioning and the MBMS key-management interface behind HTTP
    /// Digest with keys from the BSF over Zn, and Prometheus metrics, until SIGINT or SIGTERM.
    Bsm(crate::bsm_cmd::ServeBsmArgs),
    /// The broadcaster (BSD/A): TEK schedule, STKMs on UDP 2269 and RTP in, SRTP (or ESP) out, with
    /// keys from the BSM's broadcaster API, and Prometheus metrics, until SIGINT or SIGTERM.
    Broadcast(crate::broadcast_cmd::ServeBroadcastArgs),
}

/// Options of `serve bsf`.
#[derive(Debug, Args)]
#[command(after_help = "The configuration keys are listed in the keycast library documentation \
(module bsf_cmd). Log level: RUST_LOG (default info).")]
pub struct ServeBsfArgs {
    /// The TOML configuration file.
    #[arg(long, value_name = "PATH", env = "KEYCAST_BSF_CONFIG")]
    pub config: PathBuf,
}

/// `keycast bsf`.
#[derive(Debug, Args)]
pub struct BsfArgs {
    /// What to administer.
    #[command(subcommand)]
    pub command: BsfCommand,
}

/// The BSF administration commands.
#[derive(Debug, Subcommand)]
pub enum BsfCommand {
    /// Subscribers of the BSF's store (the HSS role): add, import, show, delete.
    Subscriber(SubscriberArgs),
}

/// `keycast bsf subscriber`.
#[derive(Debug, Args)]
pub struct SubscriberArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: SubscriberCommand,
}

/// The subscriber commands.
#[derive(Debug, Subcommand)]
pub enum SubscriberCommand {
    /// Add one subscriber. K and OP (or OPc) are read from standard input as `K=<hex>` and
    /// `OP=<hex>` / `OPC=<hex>` lines, or from --keys-file; never from the command line.
    Add(AddArgs),
    /// Import subscribers from a CSV file (header `impi,imsi,k,opc|op,amf,gba_type[,sqn]`);
    /// all or nothing: a bad row is reported with its line number and nothing is imported.
    Import(ImportArgs),
    /// List the subscribers, or show one: IMPI, IMSI, SQN, AMF, GBA type (never K or OPc).
    Show(SubscriberShowArgs),
    /// Delete a subscriber and its bootstrapping session.
    Delete(DeleteArgs),
}

/// GBA type on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GbaTypeArg {
    /// GBA_U: a GBA-aware UICC.
    #[value(name = "gba-u")]
    GbaU,
    /// GBA_ME: a plain USIM.
    #[value(name = "gba-me")]
    GbaMe,
}

impl From<GbaTypeArg> for GbaType {
    fn from(t: GbaTypeArg) -> Self {
        match t {
            GbaTypeArg::GbaU => GbaType::GbaU,
            GbaTypeArg::GbaMe => GbaType::GbaMe,
        }
    }
}

/// Options of `bsf subscriber add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// The BSF's TOML configuration file (its store and storage key are used).
    #[arg(long, value_name = "PATH", env = "KEYCAST_BSF_CONFIG")]
    pub config: PathBuf,
    /// IMPI (the Ub username).
    #[arg(long)]
    pub impi: String,
    /// IMSI (6 to 15 digits).
    #[arg(long)]
    pub imsi: String,
    /// AMF (4 hex digits).
    #[arg(long, value_name = "HEX", default_value = "8000")]
    pub amf: String,
    /// GBA type of the subscriber's card.
    #[arg(long, value_enum, default_value = "gba-u")]
    pub gba_type: GbaTypeArg,
    /// SQN_HE, the last SQN issued (up to 12 hex digits); the first vector takes SQN + 32.
    #[arg(long, value_name = "HEX", default_value = "0")]
    pub sqn: String,
    /// A file of `K=<hex>` and `OP=<hex>` / `OPC=<hex>` lines; otherwise they come from stdin.
    #[arg(long, value_name = "FILE")]
    pub keys_file: Option<PathBuf>,
    /// Refused: keys on the command line end up in `ps` output and shell history.
    #[arg(long = "k", value_name = "HEX", hide = true)]
    pub k_in_argv: Option<String>,
    /// Refused, as --k.
    #[arg(long = "op", value_name = "HEX", hide = true)]
    pub op_in_argv: Option<String>,
    /// Refused, as --k.
    #[arg(long = "opc", value_name = "HEX", hide = true)]
    pub opc_in_argv: Option<String>,
}

/// Options of `bsf subscriber import`.
#[derive(Debug, Args)]
#[command(after_help = "CSV: a header row naming the columns impi, imsi, k, opc (or op), amf, gba_type \
(gba-u or gba-me) and optionally sqn (hex, default 0), in any order; one subscriber per row; no quoting; \
blank lines and # comments are skipped. Every row is checked before anything is written: a bad row, an IMPI \
repeated in the file or already in the store is reported with its line number and nothing is imported.")]
pub struct ImportArgs {
    /// The BSF's TOML configuration file.
    #[arg(long, value_name = "PATH", env = "KEYCAST_BSF_CONFIG")]
    pub config: PathBuf,
    /// The CSV file.
    #[arg(value_name = "FILE.csv")]
    pub file: PathBuf,
}

/// Options of `bsf subscriber show`.
#[derive(Debug, Args)]
pub struct SubscriberShowArgs {
    /// The BSF's TOML configuration file.
    #[arg(long, value_name = "PATH", env = "KEYCAST_BSF_CONFIG")]
    pub config: PathBuf,
    /// Show this subscriber only (exit status 1 when there is none).
    #[arg(long)]
    pub impi: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Options of `bsf subscriber delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The BSF's TOML configuration file.
    #[arg(long, value_name = "PATH", env = "KEYCAST_BSF_CONFIG")]
    pub config: PathBuf,
    /// The subscriber's IMPI.
    #[arg(long)]
    pub impi: String,
}

// ---------------------------------------------------------------------------------------------
// Configuration file

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    domain: String,
    #[serde(default = "default_listen")]
    listen: String,
    storage_key_file: Option<PathBuf>,
    server_secret_file: Option<PathBuf>,
    #[serde(default = "default_key_lifetime")]
    key_lifetime_secs: u64,
    #[serde(default = "default_nonce_lifetime")]
    nonce_lifetime_secs: u64,
    #[serde(default = "default_max_failures")]
    max_failures: u32,
    #[serde(default = "default_failure_window")]
    failure_window_secs: u64,
    #[serde(default = "default_amf")]
    fake_amf: String,
    tls: Option<RawTls>,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    zn: RawZn,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    log: RawLog,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
    naf_client_ca: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStore {
    pub(crate) url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawZn {
    #[serde(default)]
    authorised_nafs: Vec<String>,
    #[serde(default)]
    tokens: Vec<RawToken>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    naf: String,
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLog {
    #[serde(default)]
    pub(crate) format: LogFormat,
}

/// Log output format (`[log] format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_metrics_listen() -> String {
    "127.0.0.1:9090".into()
}
fn default_key_lifetime() -> u64 {
    86_400
}
fn default_nonce_lifetime() -> u64 {
    300
}
fn default_max_failures() -> u32 {
    3
}
fn default_failure_window() -> u64 {
    3600
}
fn default_amf() -> String {
    "8000".into()
}

/// Where the subscriber store is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A SQLite file (created when missing).
    Sqlite(PathBuf),
    /// A `sqlite:` URL with options (`?mode=…`), handed to sqlx as it is.
    SqliteUrl(String),
    /// A PostgreSQL URL (no password in it).
    Postgres(String),
}

/// TLS files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM roots of NAF client certificates.
    pub naf_client_ca: Option<PathBuf>,
}

/// The configuration file, checked, with paths resolved; secrets are still in their files.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The configuration file.
    pub path: PathBuf,
    /// BSF name.
    pub domain: String,
    /// Ub/Zn listener.
    pub listen: String,
    /// Storage key file.
    pub storage_key_file: PathBuf,
    /// Server secret file.
    pub server_secret_file: Option<PathBuf>,
    /// Key lifetime, seconds.
    pub key_lifetime: u64,
    /// Nonce lifetime, seconds.
    pub nonce_lifetime: u64,
    /// Consecutive failures before 403.
    pub max_failures: u32,
    /// Failure window, seconds.
    pub failure_window: u64,
    /// AMF of fake vectors.
    pub fake_amf: [u8; 2],
    /// TLS, if any.
    pub tls: Option<TlsFiles>,
    /// The store.
    pub store: StoreLocation,
    /// NAFs allowed on Zn.
    pub authorised_nafs: Vec<String>,
    /// Zn bearer tokens: NAF and token file.
    pub zn_tokens: Vec<(String, PathBuf)>,
    /// Metrics listener.
    pub metrics_listen: String,
    /// Log format.
    pub log_format: LogFormat,
}

pub(crate) fn inline_secret(config: &Path, key: &str, instead: &str) -> anyhow::Error {
    anyhow!(
        "{}: inline secret `{key}` refused: secrets never go into the configuration file; put it in a file \
         of its own (mode 0600) and name that file with `{instead}`",
        config.display()
    )
}

/// A PostgreSQL URL with a password in it (user info `user:password@`, or `password=` in the query).
pub(crate) fn url_has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let userinfo_password = authority.rsplit_once('@').is_some_and(|(user, _)| user.contains(':'));
    let query_password = url
        .split_once('?')
        .is_some_and(|(_, q)| q.split('&').any(|kv| kv.to_ascii_lowercase().starts_with("password=")));
    userinfo_password || query_password
}

/// Where a service's store is, from its `[store] url` (`None`: `default_file` next to the
/// configuration file `path`); relative SQLite paths are relative to that directory.
///
/// # Errors
/// A PostgreSQL URL holding a password, a URL that is neither `sqlite:` nor `postgres://`.
pub(crate) fn store_location(url: Option<&str>, path: &Path, default_file: &str) -> Result<StoreLocation> {
    let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let resolve = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { base.join(p) };
    Ok(match url {
        None => StoreLocation::Sqlite(base.join(default_file)),
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            if url_has_password(url) {
                bail!(
                    "{}: [store] url holds a password: secrets never go into the configuration file; give \
                     the password by PGPASSWORD or ~/.pgpass (PGPASSFILE)",
                    path.display()
                );
            }
            StoreLocation::Postgres(url.to_owned())
        }
        Some(url) if url.starts_with("sqlite:") => {
            if url.contains('?') || url.starts_with("sqlite::memory:") {
                StoreLocation::SqliteUrl(url.to_owned())
            } else {
                let file = url.trim_start_matches("sqlite:");
                // sqlite:///abs → /abs; sqlite://rel and sqlite:rel → rel.
                let file = file.strip_prefix("//").unwrap_or(file);
                if file.is_empty() {
                    bail!("{}: [store] url names no file", path.display());
                }
                StoreLocation::Sqlite(resolve(Path::new(file)))
            }
        }
        Some(other) => bail!(
            "{}: [store] url {other:?} is neither sqlite:… nor postgres://… (e.g. \"sqlite:///var/lib/keycast/{default_file}\")",
            path.display()
        ),
    })
}

impl Settings {
    /// Reads and checks the configuration file.
    ///
    /// # Errors
    /// Unreadable file, TOML errors (unknown keys named), inline secrets, bad values.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text, path)
    }

    /// Checks configuration text; `path` names the file in messages and anchors relative paths.
    ///
    /// # Errors
    /// As [`Settings::load`].
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        // Inline secrets first, so that they get a better answer than "unknown field".
        let table: toml::Table = toml::from_str(text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let section = |name: &str| table.get(name).and_then(toml::Value::as_table);
        for (key, has) in [
            ("storage_key", table.contains_key("storage_key")),
            ("store.storage_key", section("store").is_some_and(|t| t.contains_key("storage_key"))),
        ] {
            if has {
                return Err(inline_secret(path, key, "storage_key_file"));
            }
        }
        if table.contains_key("server_secret") {
            return Err(inline_secret(path, "server_secret", "server_secret_file"));
        }
        let tokens = section("zn").and_then(|z| z.get("tokens")).and_then(toml::Value::as_array);
        if tokens.is_some_and(|t| t.iter().any(|t| t.as_table().is_some_and(|t| t.contains_key("token")))) {
            return Err(inline_secret(path, "zn.tokens.token", "token_file"));
        }
        let raw: RawConfig = toml::from_str(text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let resolve = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { base.join(p) };

        let storage_key_file = raw.storage_key_file.as_deref().map(resolve).ok_or_else(|| {
            anyhow!("{}: `storage_key_file` is required (a file holding the 32-hex-digit storage key)", path.display())
        })?;
        let tls = match raw.tls {
            None => None,
            Some(t) => {
                if t.key.to_string_lossy().contains("-----BEGIN") {
                    return Err(inline_secret(path, "tls.key", "tls.key = \"<path of the PEM file>\""));
                }
                Some(TlsFiles {
                    cert: resolve(&t.cert),
                    key: resolve(&t.key),
                    naf_client_ca: t.naf_client_ca.as_deref().map(resolve),
                })
            }
        };
        let store = store_location(raw.store.url.as_deref(), path, "bsf.db")?;
        let fake_amf = parse_amf(&raw.fake_amf).with_context(|| format!("{}: fake_amf", path.display()))?;
        let mut zn_tokens = Vec::new();
        for t in raw.zn.tokens {
            let file = t
                .token_file
                .as_deref()
                .map(resolve)
                .ok_or_else(|| anyhow!("{}: [[zn.tokens]] for {} needs `token_file`", path.display(), t.naf))?;
            zn_tokens.push((t.naf, file));
        }
        Ok(Settings {
            path: path.to_path_buf(),
            domain: raw.domain,
            listen: raw.listen,
            storage_key_file,
            server_secret_file: raw.server_secret_file.as_deref().map(resolve),
            key_lifetime: raw.key_lifetime_secs,
            nonce_lifetime: raw.nonce_lifetime_secs,
            max_failures: raw.max_failures,
            failure_window: raw.failure_window_secs,
            fake_amf,
            tls,
            store,
            authorised_nafs: raw.zn.authorised_nafs,
            zn_tokens,
            metrics_listen: raw.metrics.listen,
            log_format: raw.log.format,
        })
    }

    /// The BSF core's configuration, with the server secret read from its file.
    ///
    /// # Errors
    /// No `server_secret_file`, unreadable file, not 64 hex digits.
    pub fn bsf_config(&self) -> Result<BsfConfig> {
        let file = self.server_secret_file.as_deref().ok_or_else(|| {
            anyhow!("{}: `server_secret_file` is required to serve (a file holding 64 hex digits)", self.path.display())
        })?;
        let text = read_secret_file(file, "server secret")?;
        let mut secret = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text.trim(), &mut secret[..])
            .map_err(|_| anyhow!("{}: the server secret must be 64 hex digits (32 bytes)", file.display()))?;
        let mut c = BsfConfig::new(&self.domain, *secret);
        c.key_lifetime = self.key_lifetime;
        c.nonce_lifetime = self.nonce_lifetime;
        c.max_failures = self.max_failures;
        c.failure_window = self.failure_window;
        c.fake_amf = self.fake_amf;
        c.authorised_nafs = self.authorised_nafs.clone();
        Ok(c)
    }

    /// The storage key, read from its file.
    ///
    /// # Errors
    /// Unreadable file, not 32 hex digits.
    pub fn storage_key(&self) -> Result<StorageKey> {
        let file = &self.storage_key_file;
        let text = read_secret_file(file, "storage key")?;
        StorageKey::from_hex(&text).map_err(|e| anyhow!("{}: {e}", file.display()))
    }

    /// Who may call Zn: the token files read, and (with `[tls] naf_client_ca`) certificates
    /// naming an authorised NAF.
    ///
    /// # Errors
    /// Unreadable or unusable token file.
    pub fn zn_auth(&self) -> Result<ZnAuth> {
        let mut tokens = Vec::new();
        for (naf, file) in &self.zn_tokens {
            let text = read_secret_file(file, "Zn token")?;
            let token = text.trim();
            if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
                bail!("{}: a Zn token must be at least 16 visible ASCII characters", file.display());
            }
            tokens.push(ZnToken { naf: naf.clone(), token: Zeroizing::new(token.to_owned()) });
        }
        let mtls = self.tls.as_ref().is_some_and(|t| t.naf_client_ca.is_some());
        Ok(ZnAuth { tokens, allowed_naf_cert_names: if mtls { self.authorised_nafs.clone() } else { Vec::new() } })
    }
}

/// Reads a secret file into a buffer wiped on drop; warns when group or others may read it.
pub(crate) fn read_secret_file(path: &Path, what: &str) -> Result<Zeroizing<String>> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("reading the {what} file {}", path.display()))?,
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(file = %path.display(), "the {what} file is readable by group or others; chmod 600 it");
        }
    }
    Ok(text)
}

// ---------------------------------------------------------------------------------------------
// Field parsing (shared by `add` and `import`)

fn parse_amf(text: &str) -> Result<[u8; 2]> {
    let t = text.trim();
    let mut amf = [0u8; 2];
    if t.len() != 4 || hex::decode_to_slice(t, &mut amf).is_err() {
        bail!("AMF must be 4 hex digits, got {t:?}");
    }
    Ok(amf)
}

fn parse_sqn(text: &str) -> Result<u64> {
    let t = text.trim();
    let t = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")).unwrap_or(t);
    if t.is_empty() || t.len() > 12 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("SQN must be 1 to 12 hex digits (48 bits), got {text:?}");
    }
    u64::from_str_radix(t, 16).context("SQN")
}

fn parse_gba_type(text: &str) -> Result<GbaType> {
    match text.trim().to_ascii_lowercase().as_str() {
        "gba-u" | "gba_u" => Ok(GbaType::GbaU),
        "gba-me" | "gba_me" => Ok(GbaType::GbaMe),
        other => bail!("GBA type must be gba-u or gba-me, got {other:?}"),
    }
}

fn check_impi(impi: &str) -> Result<()> {
    if !valid_impi(impi) || impi.len() > MAX_IMPI_LEN || impi.contains(char::is_whitespace) {
        bail!("IMPI must be 1 to {MAX_IMPI_LEN} octets without spaces or control characters, got {impi:?}");
    }
    Ok(())
}

fn check_imsi(imsi: &str) -> Result<()> {
    if !valid_imsi(imsi) {
        bail!("IMSI must be 6 to 15 digits, got {imsi:?}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Stores

/// An opened store of either backend.
enum Opened {
    Sqlite(SqliteStore),
    Pg(PgStore),
}

async fn open_store(settings: &Settings) -> Result<Opened> {
    let key = settings.storage_key()?;
    let wrong_key = |e: StoreError| match e {
        StoreError::WrongStorageKey => anyhow!(
            "{e}: the storage key in {} is not the one this store was created with",
            settings.storage_key_file.display()
        ),
        e => anyhow!(e),
    };
    Ok(match &settings.store {
        StoreLocation::Sqlite(path) => Opened::Sqlite(
            SqliteStore::open(path, key)
                .await
                .map_err(wrong_key)
                .with_context(|| format!("opening the SQLite store {}", path.display()))?,
        ),
        StoreLocation::SqliteUrl(url) => Opened::Sqlite(
            SqliteStore::open_url(url, key).await.map_err(wrong_key).context("opening the SQLite store")?,
        ),
        StoreLocation::Postgres(url) => {
            Opened::Pg(PgStore::open(url, key).await.map_err(wrong_key).context("opening the PostgreSQL store")?)
        }
    })
}

/// Runs `$body` with `$s` bound to the opened store (either backend), then closes it.
macro_rules! with_store {
    ($settings:expr, $s:ident => $body:expr) => {
        match open_store($settings).await? {
            Opened::Sqlite(store) => {
                let $s = Arc::new(store);
                let out = $body;
                $s.close().await;
                out
            }
            Opened::Pg(store) => {
                let $s = Arc::new(store);
                let out = $body;
                $s.close().await;
                out
            }
        }
    };
}

pub(crate) fn current_thread_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the tokio runtime")
}

/// Warnings (e.g. a secret file readable by others) to standard error for the admin commands.
pub(crate) fn init_cli_logging() {
    let filter = tracing_subscriber::EnvFilter::builder()
        .with_default_directive(tracing::level_filters::LevelFilter::WARN.into())
        .from_env_lossy();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .try_init();
}

// ---------------------------------------------------------------------------------------------
// bsf subscriber …

/// Runs `keycast bsf …`.
///
/// # Errors
/// Configuration, store and input errors.
pub fn run_bsf(args: &BsfArgs) -> Result<ExitCode> {
    init_cli_logging();
    let BsfCommand::Subscriber(s) = &args.command;
    match &s.command {
        SubscriberCommand::Add(a) => add(a),
        SubscriberCommand::Import(a) => import(a),
        SubscriberCommand::Show(a) => show(a),
        SubscriberCommand::Delete(a) => delete(a),
    }
}

fn duplicate(e: StoreError) -> anyhow::Error {
    match e {
        StoreError::DuplicateSubscriber(impi) => anyhow!("subscriber {impi} already exists"),
        e => anyhow!(e),
    }
}

fn add(a: &AddArgs) -> Result<ExitCode> {
    if a.k_in_argv.is_some() || a.op_in_argv.is_some() || a.opc_in_argv.is_some() {
        return Err(refuse_keys_in_argv("--keys-file"));
    }
    let settings = Settings::load(&a.config)?;
    check_impi(&a.impi).context("--impi")?;
    check_imsi(&a.imsi).context("--imsi")?;
    let amf = parse_amf(&a.amf).context("--amf")?;
    let sqn = parse_sqn(&a.sqn).context("--sqn")?;
    let mut slots = KeySlots::default();
    match &a.keys_file {
        Some(path) => {
            let text =
                Zeroizing::new(std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?);
            slots.add_lines(&text, &path.display().to_string())?;
        }
        None => slots.add_lines(&read_stdin_secret()?, "standard input")?,
    }
    let secrets = slots.into_secrets(
        "K=<32 hex digits> on standard input or in --keys-file",
        "OP=<hex> or OPC=<hex> on standard input or in --keys-file",
    )?;
    let subscriber = Subscriber {
        impi: a.impi.clone(),
        imsi: a.imsi.clone(),
        k: secrets.k,
        opc: secrets.opc,
        sqn,
        amf,
        gba_type: a.gba_type.into(),
    };
    current_thread_runtime()?.block_on(async {
        with_store!(&settings, store => store.add_subscriber(&subscriber).await.map_err(duplicate))
    })?;
    println!(
        "added subscriber {} (IMSI {}, {}, AMF {}, SQN {:012x})",
        subscriber.impi,
        subscriber.imsi,
        subscriber.gba_type.as_str(),
        hex::encode(amf),
        sqn
    );
    Ok(ExitCode::SUCCESS)
}

/// The columns of an import file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Column {
    Impi,
    Imsi,
    K,
    Opc,
    Op,
    Amf,
    GbaType,
    Sqn,
}

impl Column {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "impi" => Column::Impi,
            "imsi" => Column::Imsi,
            "k" => Column::K,
            "opc" => Column::Opc,
            "op" => Column::Op,
            "amf" => Column::Amf,
            "gba_type" | "gba-type" => Column::GbaType,
            "sqn" => Column::Sqn,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Column::Impi => "impi",
            Column::Imsi => "imsi",
            Column::K => "k",
            Column::Opc => "opc",
            Column::Op => "op",
            Column::Amf => "amf",
            Column::GbaType => "gba_type",
            Column::Sqn => "sqn",
        }
    }
}

/// One checked row: its line number and the subscriber (whose keys print as `SubscriberKey(…)`).
#[derive(Debug)]
struct Row {
    line: usize,
    subscriber: Subscriber,
}

/// Most bad rows listed in one refusal.
const MAX_REPORTED_ERRORS: usize = 20;

/// Parses an import file. `Err` holds every problem found (up to [`MAX_REPORTED_ERRORS`]),
/// each starting with `line N:`.
fn parse_csv(text: &str) -> Result<Vec<Row>, Vec<String>> {
    let mut lines =
        text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())).filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
    let Some((header_line, header)) = lines.next() else {
        return Err(vec!["the file is empty: expected a header row impi,imsi,k,opc,amf,gba_type[,sqn]".into()]);
    };
    let mut columns: Vec<Column> = Vec::new();
    for name in header.split(',').map(|n| n.trim().to_ascii_lowercase()) {
        let Some(c) = Column::from_name(&name) else {
            return Err(vec![format!(
                "line {header_line}: unknown column {name:?} (columns: impi, imsi, k, opc or op, amf, gba_type, sqn)"
            )]);
        };
        if columns.contains(&c) {
            return Err(vec![format!("line {header_line}: column {name:?} given twice")]);
        }
        columns.push(c);
    }
    for required in [Column::Impi, Column::Imsi, Column::K, Column::Amf, Column::GbaType] {
        if !columns.contains(&required) {
            return Err(vec![format!("line {header_line}: header lacks the column {:?}", required.name())]);
        }
    }
    match (columns.contains(&Column::Opc), columns.contains(&Column::Op)) {
        (true, true) => return Err(vec![format!("line {header_line}: give an opc or an op column, not both")]),
        (false, false) => return Err(vec![format!("line {header_line}: header lacks an opc (or op) column")]),
        _ => {}
    }

    let mut rows = Vec::new();
    let mut errors = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (line, text) in lines {
        match parse_row(&columns, text) {
            Ok(subscriber) => {
                if let Some(first) = seen.get(&subscriber.impi) {
                    errors.push(format!("line {line}: IMPI {} repeats line {first}", subscriber.impi));
                } else {
                    seen.insert(subscriber.impi.clone(), line);
                    rows.push(Row { line, subscriber });
                }
            }
            Err(e) => errors.push(format!("line {line}: {e:#}")),
        }
        if errors.len() >= MAX_REPORTED_ERRORS {
            errors.push("(further lines not checked)".into());
            break;
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    if rows.is_empty() {
        return Err(vec!["the file has a header but no subscriber rows".into()]);
    }
    Ok(rows)
}

fn parse_row(columns: &[Column], text: &str) -> Result<Subscriber> {
    if text.contains('"') {
        bail!("quoted fields are not supported");
    }
    let fields: Vec<&str> = text.split(',').map(str::trim).collect();
    if fields.len() != columns.len() {
        bail!("expected {} fields, got {}", columns.len(), fields.len());
    }
    let field = |c: Column| columns.iter().position(|x| *x == c).map(|i| fields[i]);
    let impi = field(Column::Impi).unwrap_or_default();
    check_impi(impi)?;
    let imsi = field(Column::Imsi).unwrap_or_default();
    check_imsi(imsi)?;
    let key = |c: Column, name: &str| -> Result<Zeroizing<[u8; 16]>> {
        let text = field(c).unwrap_or_default();
        let bytes = Zeroizing::new(parse_hex(text).with_context(|| name.to_owned())?);
        key16(&bytes, name, "this row")
    };
    let k = SubscriberKey::from_bytes(*key(Column::K, "K")?);
    let opc = if columns.contains(&Column::Op) {
        Opc::from_op(&k, &Op::from_bytes(*key(Column::Op, "OP")?))
    } else {
        Opc::from_bytes(*key(Column::Opc, "OPc")?)
    };
    let amf = parse_amf(field(Column::Amf).unwrap_or_default())?;
    let gba_type = parse_gba_type(field(Column::GbaType).unwrap_or_default())?;
    let sqn = match field(Column::Sqn) {
        None | Some("") => 0,
        Some(s) => parse_sqn(s)?,
    };
    Ok(Subscriber { impi: impi.to_owned(), imsi: imsi.to_owned(), k, opc, sqn, amf, gba_type })
}

/// A progress bar on standard error (hidden when that is not a terminal), labelled `what`.
pub(crate) fn progress_bar(len: u64, what: &str) -> ProgressBar {
    let target =
        if std::io::stderr().is_terminal() { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
    let bar = ProgressBar::with_draw_target(Some(len), target);
    let template = format!("{what} {{bar:40.cyan/blue}} {{pos}}/{{len}} ({{per_sec}}, {{eta}} left)");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar
}

/// Inserts every row or none: checks against the store first, removes what it inserted when an
/// insert fails.
async fn import_rows<S: BsfStore>(store: &S, rows: &[Row], source: &str) -> Result<()> {
    let existing: HashSet<String> = store.list_subscribers().await?.into_iter().map(|s| s.impi).collect();
    let clashes: Vec<String> = rows
        .iter()
        .filter(|r| existing.contains(&r.subscriber.impi))
        .take(MAX_REPORTED_ERRORS)
        .map(|r| format!("line {}: subscriber {} already exists in the store", r.line, r.subscriber.impi))
        .collect();
    if !clashes.is_empty() {
        bail!("{source}: {} — nothing imported", clashes.join("; "));
    }
    let bar = progress_bar(rows.len() as u64, "importing");
    let mut inserted: Vec<&str> = Vec::with_capacity(rows.len());
    for row in rows {
        if let Err(e) = store.add_subscriber(&row.subscriber).await {
            bar.abandon();
            let mut undo_failures = 0;
            for impi in &inserted {
                if store.delete_subscriber(impi).await.is_err() {
                    undo_failures += 1;
                }
            }
            let e = duplicate(e);
            if undo_failures > 0 {
                bail!(
                    "{source} line {}: {e}; removing the {} rows inserted before failed for {undo_failures} of them",
                    row.line,
                    inserted.len()
                );
            }
            bail!(
                "{source} line {}: {e}; the {} rows inserted before were removed: nothing imported",
                row.line,
                inserted.len()
            );
        }
        inserted.push(&row.subscriber.impi);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(())
}

fn import(a: &ImportArgs) -> Result<ExitCode> {
    let settings = Settings::load(&a.config)?;
    let source = a.file.display().to_string();
    let text = Zeroizing::new(std::fs::read_to_string(&a.file).with_context(|| format!("reading {source}"))?);
    let rows = match parse_csv(&text) {
        Ok(rows) => rows,
        Err(errors) => bail!("{source}: {} — nothing imported", errors.join("; ")),
    };
    current_thread_runtime()?
        .block_on(async { with_store!(&settings, store => import_rows(&*store, &rows, &source).await) })?;
    println!("imported {} subscribers from {source}", rows.len());
    Ok(ExitCode::SUCCESS)
}

fn summary_json(s: &SubscriberSummary) -> serde_json::Value {
    json!({
        "impi": s.impi,
        "imsi": s.imsi,
        "sqn": format!("{:012x}", s.sqn),
        "amf": hex::encode(s.amf),
        "gba_type": s.gba_type.as_str(),
    })
}

fn summary_table(list: &[SubscriberSummary]) -> String {
    let width = list.iter().map(|s| s.impi.len()).max().unwrap_or(0).max(4);
    let mut out = format!("{:<width$}  {:<15}  {:<12}  {:<4}  GBA type\n", "IMPI", "IMSI", "SQN", "AMF");
    for s in list {
        out.push_str(&format!(
            "{:<width$}  {:<15}  {:012x}  {}  {}\n",
            s.impi,
            s.imsi,
            s.sqn,
            hex::encode(s.amf),
            s.gba_type.as_str()
        ));
    }
    out
}

fn show(a: &SubscriberShowArgs) -> Result<ExitCode> {
    let settings = Settings::load(&a.config)?;
    let list = current_thread_runtime()?.block_on(async {
        with_store!(&settings, store => match &a.impi {
            None => store.list_subscribers().await.map_err(anyhow::Error::from),
            Some(impi) => match store.subscriber(impi).await {
                Ok(Some(s)) => Ok(vec![SubscriberSummary::from(&s)]),
                Ok(None) => Err(anyhow!("no subscriber {impi}")),
                Err(e) => Err(e.into()),
            },
        })
    })?;
    let text = match (a.json, &a.impi) {
        (true, Some(_)) => format!("{:#}\n", summary_json(&list[0])),
        (true, None) => format!(
            "{:#}\n",
            json!({ "count": list.len(), "subscribers": list.iter().map(summary_json).collect::<Vec<_>>() })
        ),
        (false, Some(_)) => summary_table(&list),
        (false, None) => {
            let n = list.len();
            format!("{}{n} subscriber{}\n", summary_table(&list), if n == 1 { "" } else { "s" })
        }
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

fn delete(a: &DeleteArgs) -> Result<ExitCode> {
    let settings = Settings::load(&a.config)?;
    let deleted = current_thread_runtime()?.block_on(async {
        with_store!(&settings, store => store.delete_subscriber(&a.impi).await.map_err(anyhow::Error::from))
    })?;
    if !deleted {
        bail!("no subscriber {}", a.impi);
    }
    println!("deleted subscriber {} and its bootstrapping session", a.impi);
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------------
// serve bsf

/// Runs `keycast serve …`.
///
/// # Errors
/// Configuration, secret files, store, TLS files, listeners.
pub fn run_serve(args: &ServeArgs) -> Result<ExitCode> {
    let a = match &args.service {
        ServeCommand::Bsf(a) => a,
        ServeCommand::Bsm(a) => return crate::bsm_cmd::run_serve_bsm(a),
        ServeCommand::Broadcast(a) => return crate::broadcast_cmd::run_serve_broadcast(a),
    };
    let settings = Settings::load(&a.config)?;
    init_service_logging(settings.log_format)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("keycast-bsf")
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(serve_bsf(&settings))?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn init_service_logging(format: LogFormat) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::builder()
        .with_default_directive(tracing::level_filters::LevelFilter::INFO.into())
        .from_env()
        .context("RUST_LOG")?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
    }
    .map_err(|e| anyhow!("installing the logger: {e}"))
}

/// A server's certificate chain and private key from their PEM files.
pub(crate) fn read_identity(cert: &Path, key: &Path) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading the certificate chain {}", cert.display()))?;
    if chain.is_empty() {
        bail!("{}: no certificate in it", cert.display());
    }
    let key =
        PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading the private key {}", key.display()))?;
    Ok((chain, key))
}

/// The CA certificates of a PEM file as trust roots; `what` names them in messages.
pub(crate) fn read_roots(path: &Path, what: &str) -> Result<rustls::RootCertStore> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading the {what} {}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        bail!("{}: no usable CA certificate in it", path.display());
    }
    Ok(roots)
}

pub(crate) fn tls_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>> {
    let (chain, key) = read_identity(&files.cert, &files.key)?;
    let roots = files.naf_client_ca.as_deref().map(|path| read_roots(path, "NAF client CA")).transpose()?;
    Ok(Arc::new(tls_server_config(chain, key, roots).context("TLS configuration")?))
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Resolves when SIGINT (Ctrl-C) or SIGTERM arrives; says which.
pub(crate) async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        r = tokio::signal::ctrl_c() => {
            if let Err(e) = r {
                tracing::warn!(error = %e, "cannot watch Ctrl-C");
                std::future::pending::<()>().await;
            }
            "SIGINT"
        }
        () = term => "SIGTERM",
    }
}

pub(crate) async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn serve_bsf(settings: &Settings) -> Result<()> {
    let config = settings.bsf_config()?;
    let zn_auth = settings.zn_auth()?;
    let tls = settings.tls.as_ref().map(tls_config).transpose()?;
    let bsf = Bsf::new(config).map_err(|e| anyhow!("{}: {e}", settings.path.display()))?;
    let store_kind = match &settings.store {
        StoreLocation::Sqlite(p) => format!("sqlite {}", p.display()),
        StoreLocation::SqliteUrl(_) => "sqlite (URL)".to_owned(),
        StoreLocation::Postgres(_) => "postgres".to_owned(),
    };
    with_store!(settings, store => run_service(settings, store.clone(), bsf, zn_auth, tls, &store_kind).await)
}

async fn run_service<S: BsfStore + Send + Sync + 'static>(
    settings: &Settings,
    store: Arc<S>,
    bsf: Bsf,
    zn_auth: ZnAuth,
    tls: Option<Arc<rustls::ServerConfig>>,
    store_kind: &str,
) -> Result<()> {
    let handle = install_prometheus().map_err(|_| anyhow!("another metrics recorder is installed"))?;
    metrics::describe_counter!("keycast_bsf_purged_total", "Expired sessions and pending challenges purged");
    let listener =
        TcpListener::bind(&settings.listen).await.with_context(|| format!("listening on {}", settings.listen))?;
    let metrics_listener = TcpListener::bind(&settings.metrics_listen)
        .await
        .with_context(|| format!("listening for metrics on {}", settings.metrics_listen))?;
    let addr = listener.local_addr().context("listener address")?;
    let metrics_addr = metrics_listener.local_addr().context("metrics listener address")?;
    tracing::info!(
        domain = %settings.domain,
        %addr,
        tls = tls.is_some(),
        %metrics_addr,
        store = %store_kind,
        authorised_nafs = ?settings.authorised_nafs,
        zn_tokens = zn_auth.tokens.len(),
        "BSF serving"
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let signals = tokio::spawn(async move {
        let which = shutdown_signal().await;
        tracing::info!(signal = which, "shutting down");
        let _ = stop_tx.send(true);
    });
    let purge_store = store.clone();
    let purge_stop = stop_rx.clone();
    let purge = tokio::spawn(async move {
        let mut tick = tokio::time::interval(PURGE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stop = std::pin::pin!(stopped(purge_stop));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = &mut stop => break,
            }
            match purge_store.purge_expired(unix_now()).await {
                Ok(p) => {
                    metrics::counter!("keycast_bsf_purged_total", "kind" => "sessions").increment(p.sessions);
                    metrics::counter!("keycast_bsf_purged_total", "kind" => "pending").increment(p.pending);
                    if p.sessions + p.pending > 0 {
                        tracing::info!(sessions = p.sessions, pending = p.pending, "purged expired entries");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "purging expired entries failed"),
            }
        }
    });

    let state = Arc::new(BsfState::new(bsf, store, zn_auth));
    tokio::join!(
        serve(listener, app(state), tls, stopped(stop_rx.clone())),
        serve(metrics_listener, metrics_app(handle), None, stopped(stop_rx)),
    );
    signals.abort();
    let _ = purge.await;
    tracing::info!("BSF stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Settings> {
        Settings::parse(text, Path::new("/etc/keycast/bsf.toml"))
    }

    #[test]
    fn defaults_fill_what_the_file_omits() {
        let s = parse("domain = \"bsf.example.org\"\nstorage_key_file = \"storage.key\"\n").unwrap();
        assert_eq!(s.listen, "127.0.0.1:8080");
        assert_eq!(s.metrics_listen, "127.0.0.1:9090");
        assert_eq!(s.store, StoreLocation::Sqlite("/etc/keycast/bsf.db".into()));
        assert_eq!(s.storage_key_file, PathBuf::from("/etc/keycast/storage.key"));
        assert_eq!((s.key_lifetime, s.nonce_lifetime, s.fake_amf), (86_400, 300, [0x80, 0]));
        assert_eq!(s.log_format, LogFormat::Text);
        assert!(s.tls.is_none() && s.server_secret_file.is_none());
    }

    #[test]
    fn store_urls() {
        let with = |url: &str| parse(&format!("domain = \"d\"\nstorage_key_file = \"k\"\n[store]\nurl = \"{url}\"\n"));
        assert_eq!(
            with("sqlite:///var/lib/keycast/bsf.db").unwrap().store,
            StoreLocation::Sqlite("/var/lib/keycast/bsf.db".into())
        );
        assert_eq!(with("sqlite://x.db").unwrap().store, StoreLocation::Sqlite("/etc/keycast/x.db".into()));
        assert_eq!(with("sqlite:x.db").unwrap().store, StoreLocation::Sqlite("/etc/keycast/x.db".into()));
        assert_eq!(
            with("postgres://bsf@db.example.org/bsf").unwrap().store,
            StoreLocation::Postgres("postgres://bsf@db.example.org/bsf".into())
        );
        let e = with("postgres://bsf:hunter2@db/bsf").unwrap_err().to_string();
        assert!(e.contains("password") && !e.contains("hunter2"), "{e}");
        assert!(with("postgresql://db/bsf?password=x").is_err());
        assert!(with("mysql://db/bsf").is_err());
    }

    #[test]
    fn unknown_keys_and_inline_secrets_are_refused() {
        let e = parse("domain = \"d\"\nstorage_key_file = \"k\"\nlisten_addr = \"x\"\n").unwrap_err().to_string();
        assert!(e.contains("listen_addr"), "{e}");
        let e = parse("domain = \"d\"\nstorage_key = \"00112233445566778899aabbccddeeff\"\n").unwrap_err().to_string();
        assert!(e.contains("inline secret `storage_key`") && !e.contains("0011"), "{e}");
        let e = parse("domain = \"d\"\nstorage_key_file = \"k\"\n[[zn.tokens]]\nnaf = \"n\"\ntoken = \"t\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("token_file"), "{e}");
    }

    #[test]
    fn csv_checks() {
        let k = "465b5ce8b199b49faa5f0a2ee238a6bc";
        let good = format!("impi,imsi,k,op,amf,gba_type\n# comment\na@x,001010000000001,{k},{k},8000,gba-me\n");
        let rows = parse_csv(&good).unwrap();
        assert_eq!((rows.len(), rows[0].line), (1, 3));
        let bad = format!(
            "impi,imsi,k,opc,amf,gba_type,sqn\na@x,001010000000001,{k},{k},8000,gba-u,20\nb@x,1,{k},{k},8000,gba-u,\n"
        );
        let e = parse_csv(&bad).unwrap_err();
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("line 3: IMSI"), "{e:?}");
        let dup = format!(
            "impi,imsi,k,opc,amf,gba_type\na@x,001010000000001,{k},{k},8000,gba-u\na@x,001010000000002,{k},{k},8000,gba-u\n"
        );
        assert_eq!(parse_csv(&dup).unwrap_err(), vec!["line 3: IMPI a@x repeats line 2".to_owned()]);
        assert!(parse_csv("impi,imsi,k,amf,gba_type\n").unwrap_err()[0].contains("opc"));
    }
}
