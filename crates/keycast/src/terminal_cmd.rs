//! `keycast terminal …`: the terminal as its own process. `watch`: STKMs and SRTP in, the card
//! (a card file, as `keycast card` makes them) gives the TEKs, clear RTP out to a local player,
//! with an SDP file describing it; missing SEK/PEKs are asked for at the BSM when one is
//! configured. `record`: the same, and the stream is written to an adapted PDCF (ISMACryp
//! samples + STKM track, profile P-9). `play`: a recording read back through the card, clear
//! samples out to an elementary stream file and/or as RTP. `open`: a downloaded file (an OMA
//! DRM DCF) opened with the TEK the card takes from its STKM. (A full TOML configuration comes
//! with issue 7.)
//!
//! ```text
//! keycast card new --file card.kc --imsi … --impi … --iccid … < keys
//! keycast terminal watch --card card.kc --srtp 239.1.1.1:5004 --sdp watch.sdp --rtpmap H264/90000
//! ffplay -protocol_whitelist file,udp,rtp -i watch.sdp
//! keycast terminal record --card card.kc --out rec.mp4 --media audio --rtpmap L16/8000 --duration 60
//! keycast terminal play rec.mp4 --card card.kc --es out.raw --rtp-out 127.0.0.1:5006
//! ```

use keycast_terminal::download::DownloadError;
use std::io::{IsTerminal as _, Write as _};
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
use keycast_terminal::media::play::{ClearSample, Pace, PlayError, Player, play};
use keycast_terminal::media::record::{RecordConfig, RecordError, Recorder};
use keycast_terminal::media::sdp::ClearStream;
use keycast_terminal::media::shell::{Keys, STKM_PORT, WatchOptions, WatchSockets, WatchSummary, watch};
use keycast_terminal::media::srtp::{RccMode, SrtpPolicy};
use keycast_terminal::media::{DEFAULT_CARD_RECHECK, MediaTap, NoTap, WatchConfig};
use keycast_terminal::provisioning::ClientConfig;
use keycast_terminal::shell::{OsRandom, ShellConfig, TerminalShell, system_clock};
use keycast_traffic::pdcf::MediaTrack;

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
    /// Watch and record: as `watch`, and the stream goes into an adapted PDCF file (samples
    /// ISMACryp-encrypted under their TEK, every STKM in the STKM track).
    Record(RecordArgs),
    /// Play a recording back: every STKM goes to the card (which decides whether play-back is
    /// allowed), samples are decrypted and written out.
    Play(PlayArgs),
    /// Open a downloaded file: the card takes the STKM that carries the file's TEK (the DCF
    /// names which), and the file is checked and decrypted.
    Open(OpenArgs),
}

/// Options of `terminal open`.
#[derive(Debug, Args)]
#[command(after_help = "Exit code 3 when the card refuses the STKM (for example \"key not found\": the \
SEK/PEK must be bought or requested first) or the STKM carries another key than the file needs.")]
pub struct OpenArgs {
    /// The downloaded file (an OMA DRM DCF).
    pub file: PathBuf,
    /// The STKM carrying the file's TEK (raw bytes, as `keycast broadcast package` writes it).
    #[arg(long, value_name = "PATH")]
    pub stkm: PathBuf,
    /// The card file.
    #[arg(long, value_name = "PATH")]
    pub card: PathBuf,
    /// Where the content goes.
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
}

/// Options of `terminal record`.
#[derive(Debug, Args)]
#[command(after_help = "Records what `terminal watch` opens. The file starts with the first STKM the card \
accepts; a stream whose STKMs say protection_after_reception = 1 is not recorded (exit code 3, no file \
content). A fragment is appended every second, so a recording cut short stays playable up to there. Stops \
on ctrl-c, after --duration or after --packets clear RTP packets, and finishes the file.")]
pub struct RecordArgs {
    /// The recording to write (an adapted PDCF, ISO base media).
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
    /// The BSM's provisioning URL written as the RightsIssuerURL (where play-back asks for a
    /// missing key).
    #[arg(long, value_name = "URL")]
    pub rights_issuer_url: Option<String>,
    /// GlobalPurchaseItemID textual header (for the Token Purchase Request at play-back).
    #[arg(long, value_name = "ID")]
    pub global_purchase_item_id: Option<String>,
    /// PurchaseDataID textual header.
    #[arg(long, value_name = "ID")]
    pub purchase_data_id: Option<String>,
    /// The original sample entry type (4 characters); default from --rtpmap's encoding (H264
    /// avc1, H265 hvc1, MP4A-LATM/MPEG4-GENERIC mp4a, L16 twos).
    #[arg(long, value_name = "FOURCC")]
    pub format: Option<String>,
    /// The watch options.
    #[command(flatten)]
    pub watch: WatchArgs,
}

/// Pace of `terminal play`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PaceArg {
    /// At the pace the samples were received.
    Original,
    /// As fast as possible.
    Fast,
}

/// Options of `terminal play`.
#[derive(Debug, Args)]
#[command(after_help = "Each STKM of the recording goes to the card; a refusal (no play-back right left, \
outside the key's window, …) stops play-back with the card's reason (exit code 3). When the card lacks the \
key and --bsm/--bsf are given, an LTKM Request and then a Token Purchase Request (from the SEK/PEK history) \
are sent and play-back continues.")]
pub struct PlayArgs {
    /// The recording.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The card file; its state is saved as the card changes.
    #[arg(long, value_name = "PATH")]
    pub card: PathBuf,
    /// Write the clear samples, one after the other, to this file (elementary stream).
    #[arg(long, value_name = "PATH")]
    pub es: Option<PathBuf>,
    /// Send the clear samples as RTP to this address.
    #[arg(long, value_name = "ADDR:PORT")]
    pub rtp_out: Option<SocketAddr>,
    /// RTP payload type of --rtp-out.
    #[arg(long, value_name = "PT", default_value_t = 96, value_parser = clap::value_parser!(u8).range(0..=127))]
    pub payload_type: u8,
    /// Pace (default: original with --rtp-out, fast otherwise).
    #[arg(long, value_enum)]
    pub pace: Option<PaceArg>,
    /// The BSM's provisioning URL (http://host:port) for key requests; needs --bsf.
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
        TerminalCommand::Record(a) => run_record(a),
        TerminalCommand::Play(a) => run_play(a),
        TerminalCommand::Open(a) => run_open(a),
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
    let summary = watch_with(a, &mut NoTap)?;
    print_summary(&summary);
    Ok(ExitCode::SUCCESS)
}

/// The shell of `terminal watch`: the card file, the sockets, the BSM when configured, `tap`
/// watching.
fn watch_with(a: &WatchArgs, tap: &mut dyn MediaTap) -> Result<WatchSummary> {
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
    runtime.block_on(async {
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
        match (&a.bsm, &a.bsf) {
            (Some(bsm), Some(bsf)) => {
                let bsm = BsmOptions { bsm, bsm_fqdn: a.bsm_fqdn.as_deref(), bsf, bsf_host: a.bsf_host.as_deref() };
                let mut shell = bsm_shell(card, &bsm).await?;
                watch(sockets, Keys::Shell(&mut shell), &options, shutdown, tap).await.map_err(anyhow::Error::from)
            }
            _ => {
                let mut card = card;
                watch(sockets, Keys::Holder(&mut card), &options, shutdown, tap).await.map_err(anyhow::Error::from)
            }
        }
    })
}

fn print_summary(summary: &WatchSummary) {
    println!("{summary}");
}

/// Where the BSM and the BSF are (`--bsm`, `--bsm-fqdn`, `--bsf`, `--bsf-host`).
struct BsmOptions<'a> {
    bsm: &'a str,
    bsm_fqdn: Option<&'a str>,
    bsf: &'a str,
    bsf_host: Option<&'a str>,
}

/// A terminal shell around the card file for key requests at the BSM (GBA_U, no push sockets).
async fn bsm_shell(card: PersistentCard, o: &BsmOptions<'_>) -> Result<TerminalShell<PersistentCard>> {
    let (bsm_address, bsm_host) = http_host(o.bsm, "--bsm")?;
    let (bsf_address, bsf_host) = http_host(o.bsf, "--bsf")?;
    let impi = card.usim().identity.impi.clone();
    let user_agent = format!("Keycast-terminal/{}", env!("CARGO_PKG_VERSION"));
    let bootstrap = BootstrapConfig {
        bsf_host: o.bsf_host.map_or(bsf_host, str::to_owned),
        impi,
        user_agent: user_agent.clone(),
        mode: GbaMode::GbaU,
    };
    let client = ClientConfig::new(o.bsm_fqdn.unwrap_or(&bsm_host), &user_agent);
    let mut shell_config = ShellConfig::new(&bsm_address, &bsf_address, bootstrap, client);
    // The terminal takes no LTKM pushes here (yet): no push sockets.
    shell_config.oma_bcast_udp = None;
    shell_config.mbms_udp = None;
    // Fail early when the OS random generator does not work.
    OsRandom.fill(&mut [0u8; 1]);
    Ok(TerminalShell::new(shell_config, card, system_clock(), Box::new(OsRandom)).await?)
}

/// The sample entry type of a recording: `--format`, or from the encoding of `--rtpmap`.
fn original_format(format: Option<&str>, rtpmap: Option<&str>) -> Result<[u8; 4]> {
    if let Some(f) = format {
        return f.as_bytes().try_into().with_context(|| format!("--format must be 4 characters, got {f:?}"));
    }
    let encoding = rtpmap.and_then(|m| m.split('/').next()).unwrap_or_default().to_ascii_uppercase();
    Ok(match encoding.as_str() {
        "H264" => *b"avc1",
        "H265" => *b"hvc1",
        "MP4A-LATM" | "MPEG4-GENERIC" => *b"mp4a",
        // 16-bit big-endian PCM (QuickTime 'twos').
        "L16" => *b"twos",
        "" => bail!("give --rtpmap (encoding/clock) or --format"),
        other => bail!("no sample entry type known for {other}: give --format"),
    })
}

/// The media track of a recording from the watch options.
fn media_track(a: &RecordArgs) -> Result<MediaTrack> {
    let w = &a.watch;
    let format = original_format(a.format.as_deref(), w.rtpmap.as_deref())?;
    let mut parts = w.rtpmap.as_deref().unwrap_or_default().split('/').skip(1);
    let clock_rate: u32 = match parts.next() {
        Some(c) => c.parse().with_context(|| format!("bad clock rate in --rtpmap {:?}", w.rtpmap))?,
        None => bail!("--rtpmap encoding/clock is needed to record (the RTP clock rate is the media timescale)"),
    };
    if clock_rate == 0 {
        bail!("the clock rate in --rtpmap must not be 0");
    }
    Ok(match w.media.as_str() {
        "audio" => {
            let channels = parts.next().map(str::parse).transpose().context("bad channel count in --rtpmap")?;
            MediaTrack::audio(format, clock_rate, channels.unwrap_or(1))
        }
        // Width and height are not known from the RTP stream: 0 [chosen].
        _ => MediaTrack::video(format, clock_rate, 0, 0),
    })
}

/// Exit code of a recording or play-back the content rules refused.
const REFUSED: u8 = 3;

fn run_record(a: &RecordArgs) -> Result<ExitCode> {
    init_logging();
    let mut config = RecordConfig::new(media_track(a)?);
    config.rights_issuer_url = a.rights_issuer_url.clone().unwrap_or_default();
    config.global_purchase_item_id = a.global_purchase_item_id.clone();
    config.purchase_data_id = a.purchase_data_id.clone();
    let file = std::fs::File::create(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut recorder = Recorder::new(config, std::io::BufWriter::new(file));
    let summary = watch_with(&a.watch, &mut recorder)?;
    print_summary(&summary);
    match recorder.finish() {
        Ok((_, stats)) => {
            println!(
                "recorded {} samples and {} STKMs in {} fragments ({} bytes) to {}",
                stats.samples,
                stats.stkms,
                stats.fragments,
                stats.bytes,
                a.out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ RecordError::NotAllowed { .. }) => {
            eprintln!("not recorded: {e}");
            Ok(ExitCode::from(REFUSED))
        }
        Err(e) => Err(anyhow::Error::from(e).context(format!("recording to {}", a.out.display()))),
    }
}

/// Where `terminal play` sends each clear sample.
struct PlayOut {
    es: Option<std::io::BufWriter<std::fs::File>>,
    rtp: Option<(std::net::UdpSocket, SocketAddr)>,
    payload_type: u8,
    seq: u16,
    ssrc: u32,
    error: Option<std::io::Error>,
}

impl PlayOut {
    fn sample(&mut self, s: &ClearSample) {
        if self.error.is_some() {
            return;
        }
        if let Some(es) = &mut self.es
            && let Err(e) = es.write_all(&s.data)
        {
            self.error = Some(e);
        }
        if let Some((socket, to)) = &self.rtp {
            // RFC 3550 §5.1 header: V=2, no padding/extension/CSRC, M=0.
            let mut p = Vec::with_capacity(12 + s.data.len());
            p.extend_from_slice(&[0x80, self.payload_type]);
            p.extend_from_slice(&self.seq.to_be_bytes());
            // The recording's RTP timing, from 0 at its start (32-bit wrap as RTP does).
            p.extend_from_slice(&(s.rtp_time as u32).to_be_bytes());
            p.extend_from_slice(&self.ssrc.to_be_bytes());
            p.extend_from_slice(&s.data);
            self.seq = self.seq.wrapping_add(1);
            if let Err(e) = socket.send_to(&p, *to) {
                self.error = Some(e);
            }
        }
    }
}

fn run_play(a: &PlayArgs) -> Result<ExitCode> {
    init_logging();
    let data = std::fs::read(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    let mut player = Player::open(&data).with_context(|| format!("opening the recording {}", a.file.display()))?;
    let card = PersistentCard::open(CardFile::new(&a.card))
        .with_context(|| format!("opening the card file {}", a.card.display()))?;
    let es = match &a.es {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => None,
    };
    let rtp = match a.rtp_out {
        Some(to) => {
            let bind: SocketAddr = if to.is_ipv4() { "0.0.0.0:0".parse()? } else { "[::]:0".parse()? };
            Some((std::net::UdpSocket::bind(bind).context("binding the RTP socket")?, to))
        }
        None => None,
    };
    let mut ssrc = [0u8; 4];
    OsRandom.fill(&mut ssrc);
    let mut out =
        PlayOut { es, rtp, payload_type: a.payload_type, seq: 0, ssrc: u32::from_be_bytes(ssrc), error: None };
    let pace = match a.pace {
        Some(PaceArg::Original) => Pace::Original,
        Some(PaceArg::Fast) => Pace::Fast,
        None if a.rtp_out.is_some() => Pace::Original,
        None => Pace::Fast,
    };
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the tokio runtime")?;
    let result = runtime.block_on(async {
        let mut sink = |s: &ClearSample| out.sample(s);
        match (&a.bsm, &a.bsf) {
            (Some(bsm), Some(bsf)) => {
                let o = BsmOptions { bsm, bsm_fqdn: a.bsm_fqdn.as_deref(), bsf, bsf_host: a.bsf_host.as_deref() };
                let mut shell = bsm_shell(card, &o).await?;
                Ok::<_, anyhow::Error>(play(&mut player, Keys::Shell(&mut shell), None, pace, &mut sink).await)
            }
            _ => {
                let mut card = card;
                Ok(play(&mut player, Keys::Holder(&mut card), None, pace, &mut sink).await)
            }
        }
    })?;
    if let Some(e) = out.error.take() {
        return Err(anyhow::Error::from(e).context("writing the clear samples"));
    }
    if let Some(es) = &mut out.es {
        es.flush().context("writing the elementary stream")?;
    }
    let stats = player.stats();
    let finished = if player.recording().finished { "" } else { " (the recording was cut short)" };
    match result {
        Ok(summary) => {
            println!(
                "played {} samples ({} bytes), {} STKMs accepted by the card, {} LTKM Requests, {} Token Purchase Requests{finished}",
                stats.samples, stats.bytes, stats.stkms, summary.stats.ltkm_requests, summary.stats.token_purchases
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ (PlayError::Refused { .. } | PlayError::KeyMissing { .. } | PlayError::KeyNotDelivered { .. })) => {
            println!("played {} samples ({} bytes) before stopping{finished}", stats.samples, stats.bytes);
            eprintln!("play-back stopped: {e}");
            Ok(ExitCode::from(REFUSED))
        }
        Err(e) => Err(anyhow::Error::from(e).context("play-back")),
    }
}

fn run_open(a: &OpenArgs) -> Result<ExitCode> {
    let dcf = std::fs::read(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    let stkm = std::fs::read(&a.stkm).with_context(|| format!("reading {}", a.stkm.display()))?;
    let mut card = PersistentCard::open(CardFile::new(&a.card))
        .with_context(|| format!("opening the card file {}", a.card.display()))?;
    match keycast_terminal::download::open_download(&mut card, &stkm, &dcf) {
        Ok((headers, content)) => {
            std::fs::write(&a.out, &content).with_context(|| format!("writing {}", a.out.display()))?;
            println!("{} ({}, {} bytes) -> {}", a.file.display(), headers.content_type, content.len(), a.out.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ (DownloadError::Card(_) | DownloadError::OtherKey { .. } | DownloadError::Unusable)) => {
            eprintln!("not opened: {e}");
            Ok(ExitCode::from(REFUSED))
        }
        Err(e) => Err(anyhow::Error::from(e).context(format!("opening {}", a.file.display()))),
    }
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
