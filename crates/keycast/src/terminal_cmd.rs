//! `keycast terminal …`: the terminal as its own process. For now one subcommand, `watch`: STKMs
//! and SRTP in, the card (a card file, as `keycast card` makes them) gives the TEKs, clear RTP
//! out to a local player, with an SDP file describing it; missing SEK/PEKs are asked for at the
//! BSM when one is configured. (A full TOML configuration comes with issue 7.)
//!
//! ```text
//! keycast card new --file card.kc --imsi … --impi … --iccid … < keys
//! keycast terminal watch --card card.kc --srtp 239.1.1.1:5004 --sdp watch.sdp --rtpmap H264/90000
//! ffplay -protocol_whitelist file,udp,rtp -i watch.sdp
//! ```

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use keycast_card::persist::{CardFile, PersistentCard};
use keycast_gba::bsf::RandomSource as _;
use keycast_gba::client::{BootstrapConfig, GbaMode};
use keycast_terminal::ltkm_intake::Interface;
use keycast_terminal::media::sdp::ClearStream;
use keycast_terminal::media::shell::{Keys, STKM_PORT, WatchOptions, WatchSockets, WatchSummary, watch};
use keycast_terminal::media::srtp::{RccMode, SrtpPolicy};
use keycast_terminal::media::{DEFAULT_CARD_RECHECK, NoTap, WatchConfig};
use keycast_terminal::provisioning::ClientConfig;
use keycast_terminal::shell::{OsRandom, ShellConfig, TerminalShell, system_clock};

/// `keycast terminal`.
#[derive(Debug, Args)]
pub struct TerminalArgs {
    /// What the terminal does.
    #[command(subcommand)]
    pub command: TerminalCommand,
}

/// The terminal subcommands.
#[derive(Debug, Subcommand)]
pub enum TerminalCommand {
    /// Watch a protected stream live: STKMs (UDP, port 2269) give TEKs through the card, SRTP
    /// (and SRTCP on the next port) is opened and forwarded as clear RTP (and RTCP) to a local
    /// address, which a player opens through the SDP file.
    Watch(WatchArgs),
}

/// SRTP authentication of the stream (profile P-9, P-11.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RccArg {
    /// Plain RFC 3711: an 80-bit HMAC-SHA-1 tag on every packet.
    Rfc3711,
    /// No tag (the STKMs' traffic_authentication_flag is 0).
    None,
    /// RFC 4771 RCCm1: ROC ‖ MAC every R packets, nothing on the others.
    Rccm1,
    /// RFC 4771 RCCm2 (Keycast's default with R): ROC ‖ MAC every R packets, the normal tag on
    /// the others.
    Rccm2,
    /// RFC 4771 RCCm3: only the ROC every R packets, no integrity.
    Rccm3,
}

/// Options of `terminal watch`.
#[derive(Debug, Args)]
#[command(after_help = "The card file holds the SEK/PEKs (from LTKMs); STKMs whose key the card lacks are \
refused with 6A88 and, with --bsm and --bsf, asked for with an LTKM Request (the terminal bootstraps first). \
A resend of a TEK already held skips the card for --card-recheck seconds; stale STKMs never reach it.\n\n\
Stops on ctrl-c, after --duration or after --packets clear RTP packets, and prints a summary to standard \
output. Logs go to standard error (RUST_LOG sets the level).")]
pub struct WatchArgs {
    /// The card file (see `keycast card new`); its state is saved as the card changes.
    #[arg(long, value_name = "PATH")]
    pub card: PathBuf,
    /// UDP port of the STKMs (on the --srtp address).
    #[arg(long, value_name = "PORT", default_value_t = STKM_PORT)]
    pub stkm_port: u16,
    /// Where SRTP arrives (SRTCP on the next port); a multicast group is joined.
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:5004")]
    pub srtp: SocketAddr,
    /// Where clear RTP goes (clear RTCP to the next port).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:5006")]
    pub rtp_out: SocketAddr,
    /// Write an SDP file describing the clear stream (for ffplay, VLC, GStreamer).
    #[arg(long, value_name = "PATH")]
    pub sdp: Option<PathBuf>,
    /// Media type in the SDP (`video`, `audio`, …).
    #[arg(long, default_value = "video")]
    pub media: String,
    /// RTP payload type in the SDP.
    #[arg(long, value_name = "PT", default_value_t = 96, value_parser = clap::value_parser!(u8).range(0..=127))]
    pub payload_type: u8,
    /// `encoding/clock[/channels]` for the SDP's a=rtpmap (e.g. H264/90000, MP4A-LATM/48000/2).
    #[arg(long, value_name = "MAP")]
    pub rtpmap: Option<String>,
    /// Format parameters for the SDP's a=fmtp.
    #[arg(long, value_name = "PARAMS")]
    pub fmtp: Option<String>,
    /// SRTP authentication.
    #[arg(long, value_enum, default_value_t = RccArg::Rfc3711)]
    pub rcc: RccArg,
    /// ROC transmission rate R of RFC 4771 (the LTKM SP's parameter 13); needed by --rcc rccm1/2/3.
    #[arg(long, value_name = "R")]
    pub roc_rate: Option<NonZeroU16>,
    /// Seconds a resend of a held TEK may skip the card (0: every fresh STKM goes to the card).
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_CARD_RECHECK.as_secs())]
    pub card_recheck: u64,
    /// The BSM's provisioning URL (http://host:port) for LTKM Requests; needs --bsf.
    #[arg(long, value_name = "URL", requires = "bsf")]
    pub bsm: Option<String>,
    /// The BSM's FQDN (NAF_Id, Digest realm) when it differs from the host of --bsm.
    #[arg(long, value_name = "NAME", requires = "bsm")]
    pub bsm_fqdn: Option<String>,
    /// The BSF's URL (http://host:port) for bootstrapping; needs --bsm.
    #[arg(long, value_name = "URL", requires = "bsm")]
    pub bsf: Option<String>,
    /// The BSF's host name when it differs from the host of --bsf.
    #[arg(long, value_name = "NAME", requires = "bsf")]
    pub bsf_host: Option<String>,
    /// Ask over the 3GPP MBMS interface (MSK request) instead of the OMA BCAST LTKM Request.
    #[arg(long)]
    pub mbms: bool,
    /// Stop after this many clear RTP packets.
    #[arg(long, value_name = "N")]
    pub packets: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
}

/// Runs `keycast terminal …`.
pub fn run(args: &TerminalArgs) -> Result<ExitCode> {
    match &args.command {
        TerminalCommand::Watch(a) => run_watch(a),
    }
}

/// The SRTP policy of `--rcc` and `--roc-rate`.
fn policy(a: &WatchArgs) -> Result<SrtpPolicy> {
    let rate = || a.roc_rate.with_context(|| format!("--rcc {:?} needs --roc-rate", a.rcc));
    Ok(match a.rcc {
        RccArg::Rfc3711 => SrtpPolicy::rfc3711(),
        RccArg::None => SrtpPolicy::unauthenticated(),
        RccArg::Rccm1 => SrtpPolicy::rcc(RccMode::Rccm1, rate()?),
        RccArg::Rccm2 => SrtpPolicy::rcc(RccMode::Rccm2, rate()?),
        RccArg::Rccm3 => SrtpPolicy::rcc(RccMode::Rccm3, rate()?),
    })
}

/// `host:port` and host of an `http://host:port[/…]` URL.
fn http_host(url: &str, what: &str) -> Result<(String, String)> {
    let Some(rest) = url.strip_prefix("http://") else {
        bail!("{what} must be an http:// URL, got {url:?}");
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        bail!("{what} has no host: {url:?}");
    }
    let host = match authority.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => h,
        _ => authority,
    };
    let address = if authority.len() == host.len() { format!("{authority}:80") } else { authority.to_owned() };
    Ok((address, host.trim_start_matches('[').trim_end_matches(']').to_owned()))
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::builder()
        .with_default_directive(tracing::level_filters::LevelFilter::INFO.into())
        .from_env_lossy();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

fn run_watch(a: &WatchArgs) -> Result<ExitCode> {
    init_logging();
    let config = WatchConfig {
        srtp_policy: policy(a)?,
        card_recheck: Duration::from_secs(a.card_recheck),
        ..WatchConfig::default()
    };
    let duration = match a.duration {
        Some(d) if !(d.is_finite() && d > 0.0) => bail!("--duration must be a positive number of seconds"),
        d => d.map(Duration::from_secs_f64),
    };
    let mut stkm_bind = a.srtp;
    stkm_bind.set_port(a.stkm_port);
    let options = WatchOptions {
        stkm_bind,
        srtp_bind: a.srtp,
        rtp_out: a.rtp_out,
        config,
        max_packets: a.packets,
        duration,
        key_interface: if a.mbms { Interface::Mbms } else { Interface::OmaBcast },
    };
    let card = PersistentCard::open(CardFile::new(&a.card))
        .with_context(|| format!("opening the card file {}", a.card.display()))?;
    if let Some(path) = &a.sdp {
        let sdp = ClearStream {
            rtp_out: a.rtp_out,
            media: a.media.clone(),
            payload_type: a.payload_type,
            rtpmap: a.rtpmap.clone(),
            fmtp: a.fmtp.clone(),
        };
        std::fs::write(path, sdp.to_string()).with_context(|| format!("writing {}", path.display()))?;
    }
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the tokio runtime")?;
    let summary = runtime.block_on(async {
        let sockets = WatchSockets::bind(&options).await.context("binding the watch sockets")?;
        eprintln!(
            "watching: STKMs on {}, SRTP on {}, SRTCP on {}; clear RTP to {}",
            sockets.stkm_addr()?,
            sockets.srtp_addr()?,
            sockets.srtcp_addr()?,
            options.rtp_out
        );
        let shutdown = async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        let mut tap = NoTap;
        match (&a.bsm, &a.bsf) {
            (Some(bsm), Some(bsf)) => {
                let (bsm_address, bsm_host) = http_host(bsm, "--bsm")?;
                let (bsf_address, bsf_host) = http_host(bsf, "--bsf")?;
                let impi = card.usim().identity.impi.clone();
                let user_agent = format!("Keycast-terminal/{}", env!("CARGO_PKG_VERSION"));
                let bootstrap = BootstrapConfig {
                    bsf_host: a.bsf_host.clone().unwrap_or(bsf_host),
                    impi,
                    user_agent: user_agent.clone(),
                    mode: GbaMode::GbaU,
                };
                let client = ClientConfig::new(a.bsm_fqdn.as_deref().unwrap_or(&bsm_host), &user_agent);
                let mut shell_config = ShellConfig::new(&bsm_address, &bsf_address, bootstrap, client);
                // The watch takes no LTKM pushes (yet): no push sockets.
                shell_config.oma_bcast_udp = None;
                shell_config.mbms_udp = None;
                // Fail early when the OS random generator does not work.
                OsRandom.fill(&mut [0u8; 1]);
                let mut shell = TerminalShell::new(shell_config, card, system_clock(), Box::new(OsRandom)).await?;
                watch(sockets, Keys::Shell(&mut shell), &options, shutdown, &mut tap).await.map_err(anyhow::Error::from)
            }
            _ => {
                let mut card = card;
                watch(sockets, Keys::Holder(&mut card), &options, shutdown, &mut tap).await.map_err(anyhow::Error::from)
            }
        }
    })?;
    print_summary(&summary);
    Ok(ExitCode::SUCCESS)
}

fn print_summary(summary: &WatchSummary) {
    println!("{summary}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_hosts() {
        assert_eq!(
            http_host("http://127.0.0.1:8080/sprov", "x").unwrap(),
            ("127.0.0.1:8080".into(), "127.0.0.1".into())
        );
        assert_eq!(
            http_host("http://bsm.example.org", "x").unwrap(),
            ("bsm.example.org:80".into(), "bsm.example.org".into())
        );
        assert_eq!(http_host("http://[::1]:80", "x").unwrap(), ("[::1]:80".into(), "::1".into()));
        assert!(http_host("https://a", "x").is_err());
        assert!(http_host("http://", "x").is_err());
    }
}
