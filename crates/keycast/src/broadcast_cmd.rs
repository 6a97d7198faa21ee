//! `keycast serve broadcast`: the broadcaster (BSD/A) of [`keycast_broadcast`] from one TOML
//! configuration file. It fetches the live SEK/PEKs of its key group from the BSM's broadcaster
//! API, draws a TEK per crypto period, sends STKMs (profile P-6) to the destination address on
//! the STKM port at least once a second and on every TEK change (P-8), and turns the RTP it
//! reads (e.g. from GStreamer or ffmpeg) into SRTP, or ESP (P-9).
//!
//! # Configuration
//!
//! The conventions of `serve bsm` hold: relative paths are relative to the configuration file's
//! directory; the token lives in a file of its own (an inline token is refused); unknown keys are
//! refused with the key named.
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `key_group` | (required) | the SEK/PEK Key Group whose keys protect the STKMs |
//! | `crypto_period_secs` | `10` | how long one TEK protects the content (whole seconds) |
//! | `lead_secs` | `2` | how long before a TEK switch the next TEK is announced (whole seconds, below the period) |
//! | `refresh_secs` | `30` | how often the live keys are fetched again (sooner near a key's end) |
//! | `rtp_listen` | `"127.0.0.1:5004"` | where RTP arrives (RTCP on port + 1) |
//! | `destination` | (required) | where SRTP goes (`host:port`; SRTCP to port + 1): unicast, multicast or loopback |
//! | `multicast_ttl` | `16` | TTL of multicast packets |
//! | `stkm_port` | `2269` | STKMs go to the destination address on this port (P-8) |
//! | `mode` | `"srtp"` | `"srtp"` or `"esp"` (P-9) |
//! | `rcc` | `"rfc3711"` | SRTP integrity: `"rfc3711"`, or RFC 4771 `"rccm1"`, `"rccm2"`, `"rccm3"` |
//! | `roc_rate` | `64` | RFC 4771 ROC transmission rate R (with an `rccm*` mode; must match the LTKMs' SP) |
//! | `traffic_authentication` | `true` | SRTP tags on RTP packets (`false`: none; STKM flag 0) |
//! | `protection_after_reception` | `"service-protection"` | `"service-protection"` (3), `"may-record"` (0) or `"must-not-record"` (1) |
//! | `program_id` | (none) | program ID access criterion in every STKM (pay-per-view PEKs) |
//! | `[bsm] url` | (required) | the BSM's admin listener, `http://host:port` |
//! | `[bsm] token_file` | (required) | the broadcaster token (the BSM's `[broadcast] token_file`) |
//! | `[sdp] path` | (none: no SDP) | where the session description is written |
//! | `[sdp] session_name` | `"Keycast"` | its `s=` |
//! | `[sdp] media` | `"video"` | `m=` media type |
//! | `[sdp] payload_type` | `96` | RTP payload type |
//! | `[sdp] rtpmap` | `"H264/90000"` | `a=rtpmap` encoding |
//! | `[sdp] fmtp` | (none) | `a=fmtp` parameters |
//! | `[metrics] listen` | `"127.0.0.1:9093"` | Prometheus `GET /metrics` |
//! | `[log] format` | `"text"` | `"text"` or `"json"`; level from `RUST_LOG` (default `info`) |
//!
//! SIGINT or SIGTERM stops it cleanly (exit 0). Logs carry key IDs and TEK IDs, never a key.
//!
//! # File mode: `keycast broadcast package`
//!
//! With the same configuration file, `keycast broadcast package --config PATH --in FILE --out
//! FILE.dcf --stkm-out FILE.stkm` protects one file for download delivery: it fetches the live
//! keys, seals the file as an OMA DRM DCF under a fresh TEK and writes the download-form STKM
//! that carries the TEK (`keycast_broadcast::download`); `--send` also sends that STKM to the
//! destination address on the STKM port. Every file under one SEK/PEK needs a higher TEK ID
//! than the one before (`--tek-id`; default one above the key's SEQl), so files use a Key Group
//! of their own.

use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use keycast_broadcast::ScheduleConfig;
use keycast_broadcast::sdp::SessionDescription;
use keycast_broadcast::shell::{BroadcastConfig, Broadcaster, BsmSource};
use keycast_broadcast::{DownloadSettings, OsRandom, StkmSettings, TrafficMode, package_download};
use keycast_gba::bsf::http::{install_prometheus, metrics_app, serve};
use keycast_mikey::{ProtectionAfterReception, TrafficProtectionProtocol};
use keycast_traffic::srtp::{RccMode, SrtpPolicy};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use zeroize::Zeroizing;

use crate::bsf_cmd::{
    LogFormat, RawLog, init_service_logging, inline_secret, read_secret_file, shutdown_signal, stopped,
};

/// Options of `serve broadcast`.
#[derive(Debug, Args)]
#[command(after_help = "The configuration keys are listed in the keycast library documentation \
(module broadcast_cmd). Log level: RUST_LOG (default info).")]
pub struct ServeBroadcastArgs {
    /// The TOML configuration file.
    #[arg(long, value_name = "PATH", env = "KEYCAST_BROADCAST_CONFIG")]
    pub config: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    key_group: u16,
    crypto_period_secs: Option<u64>,
    lead_secs: Option<u64>,
    refresh_secs: Option<u64>,
    rtp_listen: Option<String>,
    destination: String,
    multicast_ttl: Option<u32>,
    stkm_port: Option<u16>,
    mode: Option<String>,
    rcc: Option<String>,
    roc_rate: Option<u16>,
    traffic_authentication: Option<bool>,
    protection_after_reception: Option<String>,
    program_id: Option<u32>,
    bsm: RawBsm,
    sdp: Option<RawSdp>,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    log: RawLog,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBsm {
    url: String,
    token_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSdp {
    path: PathBuf,
    session_name: Option<String>,
    media: Option<String>,
    payload_type: Option<u8>,
    rtpmap: Option<String>,
    fmtp: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<String>,
}

/// The broadcaster's configuration, checked, with paths resolved; the token is still in its file.
#[derive(Debug, Clone)]
pub struct BroadcastSettings {
    /// The configuration file.
    pub path: PathBuf,
    /// The BSM URL.
    pub bsm_url: String,
    /// The broadcaster token file.
    pub token_file: PathBuf,
    /// Key group.
    pub key_group: u16,
    /// TEK schedule.
    pub schedule: ScheduleConfig,
    /// Key refresh interval.
    pub refresh: Duration,
    /// RTP listener.
    pub rtp_listen: SocketAddr,
    /// SRTP destination.
    pub destination: SocketAddr,
    /// Multicast TTL.
    pub multicast_ttl: u32,
    /// STKM port.
    pub stkm_port: u16,
    /// STKM extension and interval.
    pub stkm: StkmSettings,
    /// Traffic protection.
    pub mode: TrafficMode,
    /// SDP file and contents.
    pub sdp: Option<(PathBuf, SessionDescription)>,
    /// Metrics listener.
    pub metrics_listen: String,
    /// Log format.
    pub log_format: LogFormat,
}

impl BroadcastSettings {
    /// Reads and checks the configuration file.
    ///
    /// # Errors
    /// Unreadable file, TOML errors (unknown keys named), an inline token, bad values.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text, path)
    }

    /// Checks configuration text; `path` names the file in messages and anchors relative paths.
    ///
    /// # Errors
    /// As [`BroadcastSettings::load`].
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let table: toml::Table = toml::from_str(text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        if table.get("bsm").and_then(toml::Value::as_table).is_some_and(|b| b.contains_key("token")) {
            return Err(inline_secret(path, "bsm.token", "token_file"));
        }
        let raw: RawConfig = toml::from_str(text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let resolve = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { base.join(p) };
        let token_file = raw
            .bsm
            .token_file
            .as_deref()
            .map(resolve)
            .ok_or_else(|| anyhow!("{}: `[bsm] token_file` is required", path.display()))?;
        if raw.key_group == 0 {
            bail!("{}: key_group 0 is not allowed (P-1)", path.display());
        }
        let period = raw.crypto_period_secs.unwrap_or(10).saturating_mul(1000);
        let lead = raw.lead_secs.unwrap_or(2).saturating_mul(1000);
        let schedule = ScheduleConfig::new(period, lead)
            .ok_or_else(|| anyhow!("{}: lead_secs must be above 0 and below crypto_period_secs", path.display()))?;
        let addr = |text: &str, key: &str| {
            text.parse::<SocketAddr>()
                .map_err(|_| anyhow!("{}: `{key}` must be an IP address and port", path.display()))
        };
        let rtp_listen = addr(raw.rtp_listen.as_deref().unwrap_or("127.0.0.1:5004"), "rtp_listen")?;
        let destination = addr(&raw.destination, "destination")?;
        let traffic_authentication = raw.traffic_authentication.unwrap_or(true);
        let roc_rate = raw.roc_rate.unwrap_or(64);
        let rate =
            NonZeroU16::new(roc_rate).ok_or_else(|| anyhow!("{}: roc_rate must be at least 1", path.display()))?;
        let policy = match (raw.rcc.as_deref().unwrap_or("rfc3711"), traffic_authentication) {
            (_, false) => SrtpPolicy::unauthenticated(),
            ("rfc3711", true) => SrtpPolicy::rfc3711(),
            ("rccm1", true) => SrtpPolicy::rcc(RccMode::Rccm1, rate),
            ("rccm2", true) => SrtpPolicy::rcc(RccMode::Rccm2, rate),
            ("rccm3", true) => SrtpPolicy::rcc(RccMode::Rccm3, rate),
            _ => bail!("{}: rcc must be \"rfc3711\", \"rccm1\", \"rccm2\" or \"rccm3\"", path.display()),
        };
        let (mode, protocol) = match raw.mode.as_deref().unwrap_or("srtp") {
            "srtp" => (TrafficMode::Srtp(policy), TrafficProtectionProtocol::Srtp),
            "esp" => (TrafficMode::Esp, TrafficProtectionProtocol::IpsecEsp),
            _ => bail!("{}: mode must be \"srtp\" or \"esp\"", path.display()),
        };
        let protection_after_reception = match raw.protection_after_reception.as_deref().unwrap_or("service-protection")
        {
            "service-protection" => ProtectionAfterReception::ServiceProtectionOnly,
            "may-record" => ProtectionAfterReception::MayRecord,
            "must-not-record" => ProtectionAfterReception::MustNotRecord,
            _ => bail!(
                "{}: protection_after_reception must be \"service-protection\", \"may-record\" or \"must-not-record\"",
                path.display()
            ),
        };
        let stkm = StkmSettings {
            protection_after_reception,
            protocol,
            // ESP always carries its ICV.
            traffic_authentication: traffic_authentication || mode == TrafficMode::Esp,
            program_id: raw.program_id,
            parental_rating: None,
        };
        let stkm_port = raw.stkm_port.unwrap_or(2269);
        let sdp = raw.sdp.map(|s| {
            (
                resolve(&s.path),
                SessionDescription {
                    session_name: s.session_name.unwrap_or_else(|| "Keycast".into()),
                    origin: rtp_listen.ip(),
                    destination,
                    ttl: u8::try_from(raw.multicast_ttl.unwrap_or(16)).unwrap_or(u8::MAX),
                    media: s.media.unwrap_or_else(|| "video".into()),
                    payload_type: s.payload_type.unwrap_or(96),
                    rtpmap: s.rtpmap.unwrap_or_else(|| "H264/90000".into()),
                    fmtp: s.fmtp,
                    stkm_port,
                    srtp: matches!(mode, TrafficMode::Srtp(_)),
                },
            )
        });
        Ok(Self {
            path: path.to_path_buf(),
            bsm_url: raw.bsm.url,
            token_file,
            key_group: raw.key_group,
            schedule,
            refresh: Duration::from_secs(raw.refresh_secs.unwrap_or(30).max(1)),
            rtp_listen,
            destination,
            multicast_ttl: raw.multicast_ttl.unwrap_or(16),
            stkm_port,
            stkm,
            mode,
            sdp,
            metrics_listen: raw.metrics.listen.unwrap_or_else(|| "127.0.0.1:9093".into()),
            log_format: raw.log.format,
        })
    }

    /// The broadcaster configuration, reading the token file.
    ///
    /// # Errors
    /// Unreadable or short token, bad URL.
    pub fn broadcast_config(&self) -> Result<BroadcastConfig> {
        let token = Zeroizing::new(read_secret_file(&self.token_file, "broadcast token")?.trim().to_owned());
        if token.is_empty() {
            bail!("{}: the broadcast token file is empty", self.token_file.display());
        }
        let bsm = BsmSource::from_url(&self.bsm_url, token, self.key_group)
            .map_err(|e| anyhow!("{}: {e}", self.path.display()))?;
        Ok(BroadcastConfig {
            bsm,
            schedule: self.schedule,
            stkm: self.stkm.clone(),
            mode: self.mode,
            rtp_listen: self.rtp_listen,
            destination: self.destination,
            stkm_port: self.stkm_port,
            multicast_ttl: self.multicast_ttl,
            sdp: self.sdp.clone(),
            refresh: self.refresh,
        })
    }
}

/// `keycast broadcast …`: one-shot broadcaster jobs.
#[derive(Debug, Args)]
pub struct BroadcastArgs {
    /// What to do.
    #[command(subcommand)]
    pub what: BroadcastCommand,
}

/// The one-shot broadcaster jobs.
#[derive(Debug, clap::Subcommand)]
pub enum BroadcastCommand {
    /// Protect a file for download: an OMA DRM DCF under a fresh TEK, and the STKM carrying it.
    Package(PackageArgs),
}

/// Options of `broadcast package`.
#[derive(Debug, Args)]
pub struct PackageArgs {
    /// The broadcaster's TOML configuration (its `[bsm]` section and `key_group` are used).
    #[arg(long, value_name = "PATH", env = "KEYCAST_BROADCAST_CONFIG")]
    pub config: PathBuf,
    /// The file to protect.
    #[arg(long = "in", value_name = "FILE")]
    pub input: PathBuf,
    /// Where the DCF goes.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Where the STKM goes (raw bytes).
    #[arg(long, value_name = "FILE")]
    pub stkm_out: PathBuf,
    /// MIME type of the content.
    #[arg(long, default_value = "application/octet-stream")]
    pub content_type: String,
    /// The BSM's provisioning URL, written into the DCF for terminals without the key.
    #[arg(long, value_name = "URL", default_value = "")]
    pub rights_issuer_url: String,
    /// TEK ID of the file's TEK (above every TEK ID used before under the key); default SEQl + 1.
    #[arg(long, value_name = "N")]
    pub tek_id: Option<u16>,
    /// Also send the STKM to the destination address on the STKM port.
    #[arg(long)]
    pub send: bool,
}

/// Runs `keycast broadcast …`.
///
/// # Errors
/// Configuration, the BSM, the files.
pub fn run_broadcast(args: &BroadcastArgs) -> Result<ExitCode> {
    match &args.what {
        BroadcastCommand::Package(a) => package(a),
    }
}

fn package(args: &PackageArgs) -> Result<ExitCode> {
    let settings = BroadcastSettings::load(&args.config)?;
    let config = settings.broadcast_config()?;
    let content = std::fs::read(&args.input).with_context(|| format!("reading {}", args.input.display()))?;
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the tokio runtime")?;
    let keys = runtime
        .block_on(keycast_broadcast::shell::fetch_live(&config.bsm))
        .map_err(|e| anyhow!("fetching the live keys from {}: {e}", settings.bsm_url))?;
    let now_ms = u64::try_from(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).context("the clock")?.as_millis(),
    )?;
    let key = keys
        .iter()
        .find(|k| k.covers(now_ms))
        .ok_or_else(|| anyhow!("the BSM has no key of group {} valid now", settings.key_group))?;
    let download = DownloadSettings {
        content_type: args.content_type.clone(),
        rights_issuer_url: args.rights_issuer_url.clone(),
        tek_id: args.tek_id.unwrap_or(key.tek_id_low.saturating_add(1)),
        csb_id: u32::from_be_bytes(random_bytes()?),
        protection_after_reception: settings.stkm.protection_after_reception,
    };
    let pkg = package_download(key, &download, &content, now_ms, &mut OsRandom)?;
    std::fs::write(&args.out, &pkg.dcf).with_context(|| format!("writing {}", args.out.display()))?;
    std::fs::write(&args.stkm_out, &pkg.stkm).with_context(|| format!("writing {}", args.stkm_out.display()))?;
    if args.send {
        let to = SocketAddr::new(settings.destination.ip(), settings.stkm_port);
        let socket = std::net::UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })
            .context("binding the STKM socket")?;
        socket.send_to(&pkg.stkm, to).with_context(|| format!("sending the STKM to {to}"))?;
    }
    println!(
        "{} ({} octets) -> {} ({} octets) under SEK/PEK {} TEK ID {}; STKM (TS {}) -> {}",
        args.input.display(),
        content.len(),
        args.out.display(),
        pkg.dcf.len(),
        hex::encode(key.sek_pek_id.to_bytes()),
        pkg.key.tek_id(),
        pkg.ts,
        args.stkm_out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| anyhow!("no randomness: {e}"))?;
    Ok(b)
}

/// Runs `keycast serve broadcast`.
///
/// # Errors
/// Configuration, token file, sockets.
pub fn run_serve_broadcast(args: &ServeBroadcastArgs) -> Result<ExitCode> {
    let settings = BroadcastSettings::load(&args.config)?;
    init_service_logging(settings.log_format)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("keycast-broadcast")
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(serve_broadcast(&settings))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve_broadcast(settings: &BroadcastSettings) -> Result<()> {
    let config = settings.broadcast_config()?;
    let handle = install_prometheus().map_err(|_| anyhow!("another metrics recorder is installed"))?;
    metrics::describe_counter!("keycast_broadcast_packets_in_total", "RTP/RTCP packets read");
    metrics::describe_counter!("keycast_broadcast_packets_out_total", "Protected packets sent");
    metrics::describe_counter!("keycast_broadcast_packets_dropped_total", "Packets dropped instead of sent");
    metrics::describe_counter!("keycast_broadcast_stkms_sent_total", "STKMs sent");
    metrics::describe_counter!("keycast_broadcast_tek_switches_total", "TEKs taken into use");
    metrics::describe_counter!("keycast_broadcast_key_fetches_total", "Live-key fetches from the BSM");
    let metrics_listener = TcpListener::bind(&settings.metrics_listen)
        .await
        .with_context(|| format!("listening for metrics on {}", settings.metrics_listen))?;
    let broadcaster = Broadcaster::bind(config).await.map_err(|e| anyhow!("{}: {e}", settings.path.display()))?;
    tracing::info!(
        rtp = %broadcaster.rtp_addr().map_err(|e| anyhow!("{e}"))?,
        metrics = %metrics_listener.local_addr().context("metrics listener address")?,
        bsm = %settings.bsm_url,
        "broadcaster starting"
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let signals = tokio::spawn(async move {
        let which = shutdown_signal().await;
        tracing::info!(signal = which, "shutting down");
        let _ = stop_tx.send(true);
    });
    let (result, ()) = tokio::join!(
        broadcaster.run(stopped(stop_rx.clone())),
        serve(metrics_listener, metrics_app(handle), None, stopped(stop_rx)),
    );
    signals.abort();
    result.map_err(|e| anyhow!("broadcaster: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<BroadcastSettings> {
        BroadcastSettings::parse(text, Path::new("/etc/keycast/broadcast.toml"))
    }

    const MIN: &str = "key_group = 1\ndestination = \"239.1.1.1:5004\"\n[bsm]\nurl = \"http://127.0.0.1:9092\"\n\
                       token_file = \"b.token\"\n";

    #[test]
    fn defaults() {
        let s = parse(MIN).unwrap();
        assert_eq!(s.schedule, ScheduleConfig::new(10_000, 2_000).unwrap());
        assert_eq!(s.stkm_port, 2269);
        assert_eq!(s.mode, TrafficMode::Srtp(SrtpPolicy::rfc3711()));
        assert_eq!(s.token_file, Path::new("/etc/keycast/b.token"));
        assert_eq!(s.stkm.protection_after_reception, ProtectionAfterReception::ServiceProtectionOnly);
        assert!(s.sdp.is_none());
    }

    #[test]
    fn refusals() {
        assert!(parse(&MIN.replace("token_file = \"b.token\"", "token = \"x\"")).is_err());
        assert!(parse(&format!("lead_secs = 20\n{MIN}")).is_err());
        assert!(parse(&format!("bogus = 1\n{MIN}")).is_err());
        assert!(parse(&MIN.replace("key_group = 1", "key_group = 0")).is_err());
        assert!(parse(&format!("rcc = \"rccm9\"\n{MIN}")).is_err());
        assert!(parse(&format!("crypto_period_secs = 1.5\n{MIN}")).is_err());
        let esp = parse(&format!("mode = \"esp\"\nrcc = \"rccm2\"\nroc_rate = 8\n{MIN}")).unwrap();
        assert_eq!(esp.mode, TrafficMode::Esp);
        assert_eq!(esp.stkm.protocol, TrafficProtectionProtocol::IpsecEsp);
    }
}
