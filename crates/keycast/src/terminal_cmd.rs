//! `keycast terminal …`: the terminal as its own process. `watch`: STKMs and SRTP in, the card
//! (a card file, as `keycast card` makes them) gives the TEKs, clear RTP out to a local player,
//! with an SDP file describing it; missing SEK/PEKs are asked for at the BSM when one is
//! configured. `record`: the same, and the stream is written to an adapted PDCF (ISMACryp
//! samples + STKM track, profile P-9). `play`: a recording read back through the card, clear
//! samples out to an elementary stream file and/or as RTP. `open`: a downloaded file (an OMA
//! DRM DCF) opened with the TEK the card takes from its STKM. The account commands (`status`,
//! `subscribe`, `buy`, `unsubscribe`, `register`, `deregister`, `keys --request`) talk to the BSM
//! (bootstrapping first when no valid B-TID is held) and keep the terminal state file
//! ([`keycast_terminal::state`]: B-TID and lifetime, purchases, request ID counter,
//! registration, terminal binding keys) next to the card file, so that a restart neither bootstraps again while the
//! B-TID is valid nor forgets what was bought.
//!
//! # Configuration (`keycast terminal --config terminal.toml …`)
//!
//! Every key is optional; command-line options override it; relative paths are taken from the
//! configuration file's directory.
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `card` | — | the card file (`--card`) |
//! | `state` | `<card>.state` | the terminal state file (`--state`) \[chosen\] |
//! | `gba` | `"gba-u"` | GBA mode: `"gba-u"` (the card holds Ks and the keys) or `"gba-me"` (the card runs AKA only; Ks, SMKs and SEK/PEKs are in the ME's key store) |
//! | `me_store` | `<card>.me` | the GBA_ME key store file (`gba = "gba-me"` only; created on first use, mode 0600) \[chosen\] |
//! | `[bsf] url` | — | the BSF, `http://host:port` (`--bsf`); `[bsf]` and `[bsm]` go together |
//! | `[bsf] host` | host of `url` | the BSF's name (`--bsf-host`) |
//! | `[bsm] url` | — | the BSM's provisioning URL, `http://` or `https://` (`--bsm`) |
//! | `[bsm] fqdn` | host of `url` | the BSM's FQDN: NAF_Id, Digest realm, TLS name (`--bsm-fqdn`) |
//! | `[bsm] ca_file` | — | PEM roots trusted for an `https://` BSM |
//! | `[bsm] client_cert_file`, `client_key_file` | — | PEM chain and key for mutual TLS (TS 33.222 §5.5) |
//! | `[bsm] interface` | `"oma-bcast"` | `"oma-bcast"` or `"mbms"`: registration and key requests |
//! | `[bsm] ltkm_listen` | none | UDP address LTKM pushes are taken on by account commands, e.g. `"0.0.0.0:4359"` |
//! | `[bsm] push_wait_secs` | `0`, `2` for `unsubscribe` with a listener | seconds pushes are taken after an answer (`--wait`) |
//! | `[media] srtp`, `stkm_port`, `rtp_out`, `sdp`, `media`, `rtpmap`, `fmtp` | as the options | defaults of `watch`/`record` |
//!
//! With a configuration naming a BSM, `watch` and `record` register the state file's valid
//! purchases at start (seed §6.4) and save the state at the end.
//!
//! # Content protection (`terminal protect`, profile P-10, P-11.5)
//!
//! Streams whose STKMs say protection_after_reception 0 or 1 get their TEK from the card only
//! over the secure authenticated channel (SAC); with 2 the TEK is wrapped under a terminal
//! binding key (TBK). \[chosen\] One command sets both up, once, and every later `watch`,
//! `record` and `play` uses what it left, without the network: `keycast terminal protect`
//! (an https:// BSM with `[bsm] ca_file`, `client_cert_file`, `client_key_file`: the key center
//! answers over mutual TLS only) bootstraps when no valid B-TID is held, establishes the channel
//! (Ks_local from the key center, the card's Local Key Establishment, its verification value
//! checked) and fetches the TBKs named by the LTKMs of the keys in the card (or `--tbk-id N`).
//! What persists, and where:
//!
//! - the channel: the card keeps its half (K_sac, Counter Limit, use count) and counts the TEKs
//!   it releases; the terminal keeps its own half — K_sac as the key center's Ks_local gave it,
//!   never read from the card — in the terminal state file (format version 2, mode 0600,
//!   [`keycast_terminal::state`]). When the Counter Limit is used up, `protect` again.
//! - the TBKs: in the terminal state file (format version 2, mode 0600,
//!   [`keycast_terminal::state`]), zeroized in memory.
//!
//! `watch`, `record` and `play` always run with the protection state (a channel-wrapped TEK is
//! unwrapped with the state file's K_sac, a TBK-wrapped one with the state file's TBK the STKM
//! names); when a stream needs the channel or a TBK that is not set up, they say so once on
//! standard error ("… run `keycast terminal protect`") and the key stays unusable.
//! \[chosen\] The unwrap is done in the key holder the media path calls (`ProtectedCard`),
//! because `keycast_terminal::media::shell::watch` builds its watcher itself and offers no hook
//! for `Watcher::set_protection`.
//!
//! ```text
//! keycast card new --file card.kc --imsi … --impi … --iccid … < keys
//! keycast terminal watch --card card.kc --srtp 239.1.1.1:5004 --sdp watch.sdp --rtpmap H264/90000
//! ffplay -protocol_whitelist file,udp,rtp -i watch.sdp
//! keycast terminal record --card card.kc --out rec.mp4 --media audio --rtpmap L16/8000 --duration 60
//! keycast terminal play rec.mp4 --card card.kc --es out.raw --rtp-out 127.0.0.1:5006
//! keycast terminal --config terminal.toml subscribe --item news --offer news-month
//! keycast terminal --config terminal.toml status
//! keycast terminal --config terminal.toml protect
//! ```

use keycast_terminal::download::DownloadError;
use keycast_terminal::guide_client::GuideClient;
use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use keycast_card::mbms::MbmsStore;
use keycast_card::persist::gba_me::GbaMeFile;
use keycast_card::persist::{CardFile, CardFileError};
use keycast_gba::bsf::RandomSource as _;
use keycast_gba::client::{BootstrapConfig, GbaMode};
use keycast_mikey::KeyValidity;
use keycast_provisioning::sprov::{BcastKeyId, PurchaseItemRef, PurchaseRequestItem, StatusCode, TokenPurchaseItem};
use keycast_provisioning::time::UtcTime;
use keycast_terminal::key_holder::MbmsKeyHolder;
use keycast_terminal::ltkm_intake::Interface;
use keycast_terminal::media::play::{ClearSample, Pace, PlayError, Player, play};
use keycast_terminal::media::record::{RecordConfig, RecordError, Recorder};
use keycast_terminal::media::sdp::ClearStream;
use keycast_terminal::media::shell::{Keys, STKM_PORT, WatchOptions, WatchSockets, WatchSummary, watch};
use keycast_terminal::media::srtp::{RccMode, SrtpPolicy};
use keycast_terminal::media::{DEFAULT_CARD_RECHECK, MediaTap, NoTap, WatchConfig};
use keycast_terminal::protection::{ProtectionState, SacIdentity};
use keycast_terminal::provisioning::ClientConfig;
use keycast_terminal::provisioning::{Answer, ProvisioningError, Purchase};
use keycast_terminal::shell::{OsRandom, ShellConfig, TerminalShell, system_clock};
use keycast_terminal::state::{Registration, StateFile, TerminalState};
use keycast_traffic::pdcf::MediaTrack;
use serde::Deserialize;

mod keys;
use keys::{KeysHolder, ProtectedCard, TerminalKeys, protected_card};

/// `keycast terminal`.
#[derive(Debug, Args)]
pub struct TerminalArgs {
    /// The terminal configuration (TOML, see `keycast terminal --help` and the module docs);
    /// command-line options override it.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
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
    Watch(Box<WatchArgs>),
    /// Watch and record: as `watch`, and the stream goes into an adapted PDCF file (samples
    /// ISMACryp-encrypted under their TEK, every STKM in the STKM track).
    Record(Box<RecordArgs>),
    /// Play a recording back: every STKM goes to the card (which decides whether play-back is
    /// allowed), samples are decrypted and written out.
    Play(Box<PlayArgs>),
    /// Open a downloaded file: the card takes the STKM that carries the file's TEK (the DCF
    /// names which), and the file is checked and decrypted.
    Open(OpenArgs),
    /// The terminal's state: card identity, B-TID, purchases, registration, keys in the card
    /// (never key bytes). No network.
    Status(StatusArgs),
    /// The Service Guide the BSM publishes: services and their offers with prices, periods and
    /// tokens, and for each offer whether it is bought here or at a portal.
    Services(ServicesArgs),
    /// Subscribe (Service Request) to a purchase item with an offer (subscription, pay-per-view,
    /// pay-per-time); the LTKMs of the answer go to the card.
    Subscribe(SubscribeArgs),
    /// Buy: tokens for a key (Token Purchase Request, with --group) or a pay-per-view /
    /// pay-per-time offer (Service Request, without --group).
    Buy(Box<BuyArgs>),
    /// Unsubscribe (Unsubscribe Request) from a purchase item; invalidation LTKMs the BSM pushes
    /// are taken for --wait seconds.
    Unsubscribe(UnsubscribeArgs),
    /// Register (Registration Request) the valid purchase items.
    Register(AccountArgs),
    /// Deregister (Deregistration Request).
    Deregister(AccountArgs),
    /// Ask for keys (LTKM Request, or MSK request with `interface = "mbms"`).
    Keys(KeysArgs),
    /// Set up content protection (P-10, P-11.5): the secure authenticated channel with the card
    /// (through the BSM's key center, mutual TLS) and the terminal binding keys, kept for later
    /// `watch`, `record` and `play`.
    Protect(ProtectArgs),
}

/// Options of `terminal open`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "Exit code 3 when the card refuses the STKM (for example \"key not found\": the \
SEK/PEK must be bought or requested first) or the STKM carries another key than the file needs.")]
pub struct OpenArgs {
    /// The downloaded file (an OMA DRM DCF).
    pub file: PathBuf,
    /// The STKM carrying the file's TEK (raw bytes, as `keycast broadcast package` writes it).
    #[arg(long, value_name = "PATH")]
    pub stkm: PathBuf,
    /// The card file (default: the configuration's `card`).
    #[arg(long, value_name = "PATH")]
    pub card: Option<PathBuf>,
    /// Where the content goes.
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
    /// The GBA_ME key store (from the configuration only: `gba = "gba-me"`).
    #[arg(skip)]
    pub me_store: Option<PathBuf>,
}

/// Options of `terminal record`.
#[derive(Debug, Clone, Args)]
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
#[derive(Debug, Clone, Args)]
#[command(after_help = "Each STKM of the recording goes to the card; a refusal (no play-back right left, \
outside the key's window, …) stops play-back with the card's reason (exit code 3). When the card lacks the \
key and --bsm/--bsf are given, an LTKM Request and then a Token Purchase Request (from the SEK/PEK history) \
are sent and play-back continues.")]
pub struct PlayArgs {
    /// The recording.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The terminal state file, for its TBKs (from the configuration only; default
    /// `<card>.state`).
    #[arg(skip)]
    pub state: Option<PathBuf>,
    /// The GBA_ME key store (from the configuration only: `gba = "gba-me"`).
    #[arg(skip)]
    pub me_store: Option<PathBuf>,
    /// TLS toward an https:// BSM (from the configuration's `[bsm]`).
    #[arg(skip)]
    pub bsm_tls: BsmTlsFiles,
    /// The card file; its state is saved as the card changes (default: the configuration's
    /// `card`).
    #[arg(long, value_name = "PATH")]
    pub card: Option<PathBuf>,
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
#[derive(Debug, Clone, Args)]
#[command(after_help = "The card file holds the SEK/PEKs (from LTKMs); STKMs whose key the card lacks are \
refused with 6A88 and, with --bsm and --bsf, asked for with an LTKM Request (the terminal bootstraps first). \
A resend of a TEK already held skips the card for --card-recheck seconds; stale STKMs never reach it.\n\n\
Stops on ctrl-c, after --duration or after --packets clear RTP packets, and prints a summary to standard \
output. Logs go to standard error (RUST_LOG sets the level).")]
pub struct WatchArgs {
    /// The card file (see `keycast card new`); its state is saved as the card changes (default:
    /// the configuration's `card`).
    #[arg(long, value_name = "PATH")]
    pub card: Option<PathBuf>,
    /// UDP port of the STKMs (on the --srtp address) [default: 2269].
    #[arg(long, value_name = "PORT")]
    pub stkm_port: Option<u16>,
    /// Where SRTP arrives (SRTCP on the next port); a multicast group is joined [default:
    /// 0.0.0.0:5004].
    #[arg(long, value_name = "ADDR:PORT")]
    pub srtp: Option<SocketAddr>,
    /// Where clear RTP goes (clear RTCP to the next port) [default: 127.0.0.1:5006].
    #[arg(long, value_name = "ADDR:PORT")]
    pub rtp_out: Option<SocketAddr>,
    /// Write an SDP file describing the clear stream (for ffplay, VLC, GStreamer).
    #[arg(long, value_name = "PATH")]
    pub sdp: Option<PathBuf>,
    /// Media type in the SDP (`video`, `audio`, …) [default: video].
    #[arg(long)]
    pub media: Option<String>,
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
    /// The terminal state file (from the configuration only): with a BSM, the valid purchases
    /// are registered at start and the state is saved at the end; its TBKs unwrap terminal-bound
    /// TEKs (default `<card>.state`).
    #[arg(skip)]
    pub state: Option<PathBuf>,
    /// The GBA_ME key store (from the configuration only: `gba = "gba-me"`).
    #[arg(skip)]
    pub me_store: Option<PathBuf>,
    /// TLS toward an https:// BSM (from the configuration's `[bsm]`).
    #[arg(skip)]
    pub bsm_tls: BsmTlsFiles,
}

/// The PEM files of `[bsm]` for an https:// BSM.
#[derive(Debug, Clone, Default)]
pub struct BsmTlsFiles {
    ca_file: Option<PathBuf>,
    client_cert_file: Option<PathBuf>,
    client_key_file: Option<PathBuf>,
}

impl BsmTlsFiles {
    /// PEM roots, and a client certificate chain and key for mutual TLS.
    pub(crate) fn new(ca_file: PathBuf, client_cert_file: Option<PathBuf>, client_key_file: Option<PathBuf>) -> Self {
        BsmTlsFiles { ca_file: Some(ca_file), client_cert_file, client_key_file }
    }

    fn of(section: Option<&BsmSection>) -> Self {
        section.map_or_else(BsmTlsFiles::default, |s| BsmTlsFiles {
            ca_file: s.ca_file.clone(),
            client_cert_file: s.client_cert_file.clone(),
            client_key_file: s.client_key_file.clone(),
        })
    }

    /// The TLS client configuration: the roots of `ca_file`, the client certificate when given.
    pub(crate) fn client_config(&self) -> Result<std::sync::Arc<rustls::ClientConfig>> {
        use rustls_pki_types::pem::PemObject as _;
        let ca = self.ca_file.as_ref().context("an https:// BSM needs [bsm] ca_file")?;
        let mut roots = rustls::RootCertStore::empty();
        for c in
            rustls_pki_types::CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))?
        {
            roots.add(c.with_context(|| format!("reading {}", ca.display()))?)?;
        }
        let client_cert = match (&self.client_cert_file, &self.client_key_file) {
            (Some(cert), Some(key)) => {
                let chain = rustls_pki_types::CertificateDer::pem_file_iter(cert)
                    .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                    .with_context(|| format!("reading {}", cert.display()))?;
                let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key)
                    .with_context(|| format!("reading {}", key.display()))?;
                Some((chain, key))
            }
            (None, None) => None,
            _ => bail!("[bsm] client_cert_file and client_key_file go together"),
        };
        Ok(keycast_terminal::shell::bsm_tls_config(roots, client_cert)?)
    }
}

/// Runs `keycast terminal …`.
pub fn run(args: &TerminalArgs) -> Result<ExitCode> {
    let cfg = match &args.config {
        Some(path) => TerminalConfig::load(path)?,
        None => TerminalConfig::default(),
    };
    match &args.command {
        TerminalCommand::Watch(a) => run_watch(&cfg.resolve_watch(a)?),
        TerminalCommand::Record(a) => {
            let mut a = RecordArgs { watch: cfg.resolve_watch(&a.watch)?, ..(**a).clone() };
            a.rights_issuer_url = a.rights_issuer_url.or_else(|| cfg.bsm.as_ref().map(|b| b.url.clone()));
            run_record(&a)
        }
        TerminalCommand::Play(a) => run_play(&cfg.resolve_play(a)?),
        TerminalCommand::Open(a) => {
            let card = cfg.card_path(a.card.as_ref())?;
            run_open(&OpenArgs { me_store: cfg.me_store_path(&card), card: Some(card), ..a.clone() })
        }
        TerminalCommand::Status(a) => run_status(&cfg, a),
        TerminalCommand::Services(a) => run_services(&cfg, a),
        TerminalCommand::Subscribe(a) => run_account(&cfg, &a.account, Action::Subscribe(a)),
        TerminalCommand::Buy(a) => run_account(&cfg, &a.account, Action::Buy(a)),
        TerminalCommand::Unsubscribe(a) => run_account(&cfg, &a.account, Action::Unsubscribe(a)),
        TerminalCommand::Register(a) => run_account(&cfg, a, Action::Register),
        TerminalCommand::Deregister(a) => run_account(&cfg, a, Action::Deregister),
        TerminalCommand::Keys(a) => run_account(&cfg, &a.account, Action::Keys(a)),
        TerminalCommand::Protect(a) => run_protect(&cfg, a),
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
    let srtp = a.srtp.unwrap_or(DEFAULT_SRTP);
    let rtp_out = a.rtp_out.unwrap_or(DEFAULT_RTP_OUT);
    let mut stkm_bind = srtp;
    stkm_bind.set_port(a.stkm_port.unwrap_or(STKM_PORT));
    let options = WatchOptions {
        stkm_bind,
        srtp_bind: srtp,
        rtp_out,
        config,
        max_packets: a.packets,
        duration,
        key_interface: if a.mbms { Interface::Mbms } else { Interface::OmaBcast },
    };
    let card = protected_card(a.card.as_ref(), a.state.as_ref(), a.me_store.as_deref())?;
    if let Some(path) = &a.sdp {
        let sdp = ClearStream {
            rtp_out,
            media: a.media.clone().unwrap_or_else(|| DEFAULT_MEDIA.to_owned()),
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
                let mut shell = bsm_shell(card, &bsm, &a.bsm_tls).await?;
                // Registration at start (seed §6.4) when a state file names purchases.
                let state = match &a.state {
                    Some(path) => Some(register_at_start(&mut shell, &StateFile::new(path)).await?),
                    None => None,
                };
                let result = watch(sockets, Keys::Shell(&mut shell), &options, shutdown, tap).await;
                if let (Some(path), Some(mut state)) = (&a.state, state) {
                    capture_state(&mut shell, &mut state)?;
                    StateFile::new(path).save(&state).context("saving the terminal state")?;
                }
                result.map_err(anyhow::Error::from)
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

/// A terminal shell around the card file for key requests at the BSM (GBA_U, no push sockets);
/// TLS with `tls` for an https:// BSM.
async fn bsm_shell(card: ProtectedCard, o: &BsmOptions<'_>, tls: &BsmTlsFiles) -> Result<TerminalShell<ProtectedCard>> {
    let https = o.bsm.strip_prefix("https://");
    let plain_url = https.map(|rest| format!("http://{rest}"));
    let (bsm_address, bsm_host) = http_host(plain_url.as_deref().unwrap_or(o.bsm), "--bsm")?;
    let (bsf_address, bsf_host) = http_host(o.bsf, "--bsf")?;
    let impi = card.keys.usim().identity.impi.clone();
    let user_agent = format!("Keycast-terminal/{}", env!("CARGO_PKG_VERSION"));
    let bootstrap = BootstrapConfig {
        bsf_host: o.bsf_host.map_or(bsf_host, str::to_owned),
        impi,
        user_agent: user_agent.clone(),
        mode: card.keys.mode(),
    };
    let fqdn = o.bsm_fqdn.unwrap_or(&bsm_host).to_owned();
    let client = ClientConfig::new(&fqdn, &user_agent);
    let mut shell_config = ShellConfig::new(&bsm_address, &bsf_address, bootstrap, client);
    // The terminal takes no LTKM pushes here (yet): no push sockets.
    shell_config.oma_bcast_udp = None;
    shell_config.mbms_udp = None;
    // Fail early when the OS random generator does not work.
    OsRandom.fill(&mut [0u8; 1]);
    let mut shell = TerminalShell::new(shell_config, card, system_clock(), Box::new(OsRandom)).await?;
    if https.is_some() {
        let name = rustls_pki_types::ServerName::try_from(fqdn.clone())
            .with_context(|| format!("{fqdn:?} is no server name"))?;
        shell.use_bsm_tls(tls.client_config()?, name);
    }
    Ok(shell)
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
    Ok(match w.media.as_deref().unwrap_or(DEFAULT_MEDIA) {
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
    let card = protected_card(a.card.as_ref(), a.state.as_ref(), a.me_store.as_deref())?;
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
                let mut shell = bsm_shell(card, &o, &a.bsm_tls).await?;
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

fn run_services(cfg: &TerminalConfig, a: &ServicesArgs) -> Result<ExitCode> {
    let url = a.bsm.clone().or_else(|| cfg.bsm.as_ref().map(|b| b.url.clone())).context("give --bsm or [bsm]")?;
    let https = url.strip_prefix("https://").map(|rest| format!("http://{rest}"));
    let (address, host) = http_host(https.as_deref().unwrap_or(&url), "--bsm")?;
    let section = cfg.bsm.as_ref();
    let http = if https.is_some() {
        // The guide comes over the BSM's TLS listener like everything else: its name is
        // `[bsm] fqdn` (else the URL's host), its roots `[bsm] ca_file`, and the client
        // certificate is shown when one is configured (mutual TLS).
        let fqdn = section.and_then(|b| b.fqdn.clone()).unwrap_or_else(|| host.clone());
        let name = rustls_pki_types::ServerName::try_from(fqdn.clone())
            .with_context(|| format!("{fqdn:?} is no server name"))?;
        keycast_gba::client::http::HttpClient::tls(address, name, BsmTlsFiles::of(section).client_config()?)
    } else {
        keycast_gba::client::http::HttpClient::plain(address)
    };
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the tokio runtime")?;
    let mut client = GuideClient::new(http, &host);
    let guide = runtime.block_on(client.load()).with_context(|| format!("loading the Service Guide from {url}"))?;
    let services = guide.offers();
    if a.json {
        let list: Vec<serde_json::Value> = services
            .iter()
            .map(|s| {
                let offers: Vec<serde_json::Value> = s
                    .offers
                    .iter()
                    .map(|o| {
                        serde_json::json!({
                            "user_service_id": o.user_service_id,
                            "item": o.global_purchase_item_id,
                            "offer": o.purchase_data_id,
                            "prices": o.prices.iter().map(|p| format!("{} {}", p.amount, p.currency)).collect::<Vec<_>>(),
                            "period": o.subscription_period,
                            "tokens": o.tokens.as_ref().map(|t| t.count),
                            "portal": o.portal_url,
                        })
                    })
                    .collect();
                serde_json::json!({"service": s.service_id, "name": s.name, "offers": offers})
            })
            .collect();
        println!("{}", serde_json::json!({"version": guide.version, "services": list}));
        return Ok(ExitCode::SUCCESS);
    }
    for s in &services {
        println!("{} {}", s.service_id, s.name.as_deref().unwrap_or(""));
        for o in &s.offers {
            let prices: Vec<String> = o.prices.iter().map(|p| format!("{} {}", p.amount, p.currency)).collect();
            let period = o.subscription_period.as_deref().map(|p| format!(" per {p}")).unwrap_or_default();
            let tokens = o.tokens.as_ref().map(|t| format!(", {} tokens", t.count)).unwrap_or_default();
            let how = o.portal_url.as_deref().map_or_else(
                || format!("terminal subscribe --item {} --offer {}", o.global_purchase_item_id, o.purchase_data_id),
                |p| format!("buy at {p}"),
            );
            println!("  {}{period}{tokens}: {how}", prices.join(" / "));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn run_open(a: &OpenArgs) -> Result<ExitCode> {
    let dcf = std::fs::read(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    let stkm = std::fs::read(&a.stkm).with_context(|| format!("reading {}", a.stkm.display()))?;
    let mut card = TerminalKeys::open(a.card.as_ref(), a.me_store.as_deref())?;
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

// ---------------------------------------------------------------------------------------------
// Configuration

/// Default `--srtp`.
const DEFAULT_SRTP: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 5004));
/// Default `--rtp-out`.
const DEFAULT_RTP_OUT: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 5006));
/// Default `--media`.
const DEFAULT_MEDIA: &str = "video";
/// Default wait for pushed LTKMs after an Unsubscribe Request, with a push listener \[chosen\].
const DEFAULT_UNSUBSCRIBE_WAIT_SECS: f64 = 2.0;

/// The terminal configuration file (see the module docs).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TerminalConfig {
    card: Option<PathBuf>,
    state: Option<PathBuf>,
    gba: Option<String>,
    me_store: Option<PathBuf>,
    bsf: Option<BsfSection>,
    bsm: Option<BsmSection>,
    #[serde(default)]
    media: MediaSection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BsfSection {
    url: String,
    host: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BsmSection {
    url: String,
    fqdn: Option<String>,
    ca_file: Option<PathBuf>,
    client_cert_file: Option<PathBuf>,
    client_key_file: Option<PathBuf>,
    ltkm_listen: Option<SocketAddr>,
    interface: Option<String>,
    push_wait_secs: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MediaSection {
    srtp: Option<SocketAddr>,
    stkm_port: Option<u16>,
    rtp_out: Option<SocketAddr>,
    sdp: Option<PathBuf>,
    media: Option<String>,
    rtpmap: Option<String>,
    fmtp: Option<String>,
}

impl TerminalConfig {
    /// Reads `path`; relative paths in it are taken from its directory.
    ///
    /// # Errors
    /// Unreadable file, TOML errors (unknown keys named), refused values.
    pub fn load(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut c: TerminalConfig = toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
        let abs = |p: &mut Option<PathBuf>| {
            if let Some(x) = p.as_mut()
                && x.is_relative()
            {
                *x = dir.join(&*x);
            }
        };
        abs(&mut c.card);
        abs(&mut c.state);
        abs(&mut c.me_store);
        abs(&mut c.media.sdp);
        if let Some(b) = c.bsm.as_mut() {
            abs(&mut b.ca_file);
            abs(&mut b.client_cert_file);
            abs(&mut b.client_key_file);
        }
        match c.gba.as_deref() {
            None | Some("gba-u") if c.me_store.is_some() => {
                bail!("{}: me_store is the key store of gba = \"gba-me\"", path.display())
            }
            None | Some("gba-u" | "gba-me") => {}
            Some(other) => bail!("{}: gba must be \"gba-u\" or \"gba-me\", got {other:?}", path.display()),
        }
        if let Some(i) = c.bsm.as_ref().and_then(|b| b.interface.as_deref())
            && !matches!(i, "oma-bcast" | "mbms")
        {
            bail!("{}: [bsm] interface must be \"oma-bcast\" or \"mbms\", got {i:?}", path.display());
        }
        if c.bsm.is_some() != c.bsf.is_some() {
            bail!("{}: [bsm] and [bsf] go together", path.display());
        }
        Ok(c)
    }

    /// The card file: the command line's, else the configuration's.
    ///
    /// # Errors
    /// Neither names one.
    pub fn card_path(&self, cli: Option<&PathBuf>) -> Result<PathBuf> {
        cli.or(self.card.as_ref()).cloned().context("give --card or a configuration with `card`")
    }

    /// The GBA_ME key store (`gba = "gba-me"` only): the configuration's `me_store`, or
    /// `<card>.me` \[chosen\].
    fn me_store_path(&self, card: &std::path::Path) -> Option<PathBuf> {
        (self.gba.as_deref() == Some("gba-me")).then(|| {
            self.me_store.clone().unwrap_or_else(|| {
                let mut name = card.as_os_str().to_owned();
                name.push(".me");
                PathBuf::from(name)
            })
        })
    }

    /// The state file: `--state`, the configuration's `state`, or `<card>.state` \[chosen\].
    fn state_path(&self, cli: Option<&PathBuf>, card: &std::path::Path) -> PathBuf {
        cli.or(self.state.as_ref()).cloned().unwrap_or_else(|| {
            let mut name = card.as_os_str().to_owned();
            name.push(".state");
            PathBuf::from(name)
        })
    }

    fn resolve_watch(&self, a: &WatchArgs) -> Result<WatchArgs> {
        let mut w = a.clone();
        let m = &self.media;
        w.card = Some(self.card_path(a.card.as_ref())?);
        w.srtp = w.srtp.or(m.srtp);
        w.stkm_port = w.stkm_port.or(m.stkm_port);
        w.rtp_out = w.rtp_out.or(m.rtp_out);
        w.sdp = w.sdp.or_else(|| m.sdp.clone());
        w.media = w.media.or_else(|| m.media.clone());
        w.rtpmap = w.rtpmap.or_else(|| m.rtpmap.clone());
        w.fmtp = w.fmtp.or_else(|| m.fmtp.clone());
        if w.bsm.is_none()
            && let (Some(bsm), Some(bsf)) = (&self.bsm, &self.bsf)
        {
            w.bsm = Some(bsm.url.clone());
            w.bsm_fqdn = bsm.fqdn.clone();
            w.bsf = Some(bsf.url.clone());
            w.bsf_host = bsf.host.clone();
            w.bsm_tls = BsmTlsFiles::of(Some(bsm));
            if self.bsm.as_ref().is_some_and(|b| b.interface.as_deref() == Some("mbms")) {
                w.mbms = true;
            }
        }
        if self.card.is_some() || self.state.is_some() {
            let card = w.card.clone().unwrap_or_default();
            w.state = Some(self.state_path(None, &card));
        }
        w.me_store = w.card.as_deref().and_then(|c| self.me_store_path(c));
        Ok(w)
    }

    fn resolve_play(&self, a: &PlayArgs) -> Result<PlayArgs> {
        let mut p = a.clone();
        p.card = Some(self.card_path(a.card.as_ref())?);
        if p.bsm.is_none()
            && let (Some(bsm), Some(bsf)) = (&self.bsm, &self.bsf)
        {
            p.bsm = Some(bsm.url.clone());
            p.bsm_fqdn = bsm.fqdn.clone();
            p.bsf = Some(bsf.url.clone());
            p.bsf_host = bsf.host.clone();
            p.bsm_tls = BsmTlsFiles::of(Some(bsm));
        }
        if self.card.is_some() || self.state.is_some() {
            let card = p.card.clone().unwrap_or_default();
            p.state = Some(self.state_path(None, &card));
        }
        p.me_store = p.card.as_deref().and_then(|c| self.me_store_path(c));
        Ok(p)
    }
}

// ---------------------------------------------------------------------------------------------
// Account commands

/// Options every account command takes (each overrides the configuration).
#[derive(Debug, Clone, Args)]
pub struct AccountArgs {
    /// The card file (default: the configuration's `card`).
    #[arg(long, value_name = "PATH")]
    pub card: Option<PathBuf>,
    /// The terminal state file (default: the configuration's `state`, else `<card>.state`).
    #[arg(long, value_name = "PATH")]
    pub state: Option<PathBuf>,
    /// The BSM's provisioning URL (http://host:port or https://host:port).
    #[arg(long, value_name = "URL")]
    pub bsm: Option<String>,
    /// The BSM's FQDN (NAF_Id, Digest realm) when it differs from the host of --bsm.
    #[arg(long, value_name = "NAME")]
    pub bsm_fqdn: Option<String>,
    /// The BSF's URL (http://host:port).
    #[arg(long, value_name = "URL")]
    pub bsf: Option<String>,
    /// The BSF's host name when it differs from the host of --bsf.
    #[arg(long, value_name = "NAME")]
    pub bsf_host: Option<String>,
    /// Where LTKM pushes are taken (UDP), e.g. 0.0.0.0:4359 (default: `[bsm] ltkm_listen`, else
    /// none).
    #[arg(long, value_name = "ADDR:PORT")]
    pub ltkm_listen: Option<SocketAddr>,
    /// Seconds to take LTKM pushes after the answer (needs a push listener).
    #[arg(long, value_name = "SECS")]
    pub wait: Option<f64>,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Options of `terminal status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// The card file (default: the configuration's `card`).
    #[arg(long, value_name = "PATH")]
    pub card: Option<PathBuf>,
    /// The terminal state file.
    #[arg(long, value_name = "PATH")]
    pub state: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Options of `terminal services`.
#[derive(Debug, Clone, Args)]
pub struct ServicesArgs {
    /// The BSM's provisioning URL (`http://host:port`; default: the configuration's `[bsm] url`),
    /// which also serves the guide (`/guide/v1/…`).
    #[arg(long, value_name = "URL")]
    pub bsm: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Options of `terminal subscribe`.
#[derive(Debug, Clone, Args)]
pub struct SubscribeArgs {
    /// The purchase item (globalIDRef).
    #[arg(long, value_name = "ID")]
    pub item: String,
    /// The offer (purchaseDataIDRef); may be left out when the item has one offer.
    #[arg(long, value_name = "ID")]
    pub offer: Option<String>,
    /// The account options.
    #[command(flatten)]
    pub account: AccountArgs,
}

/// Options of `terminal buy`.
#[derive(Debug, Clone, Args)]
pub struct BuyArgs {
    /// The purchase item (globalIDRef).
    #[arg(long, value_name = "ID")]
    pub item: String,
    /// The offer (purchaseDataIDRef; Service Request only).
    #[arg(long, value_name = "ID")]
    pub offer: Option<String>,
    /// Number of tokens (Token Purchase; must be the offer's count when given).
    #[arg(long, value_name = "N")]
    pub tokens: Option<u32>,
    /// Key Group of the key the tokens are for: makes this a Token Purchase Request.
    #[arg(long, value_name = "N")]
    pub group: Option<u16>,
    /// Key Number (0: the group's current key).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub number: u16,
    /// Key Domain ID (6 hex digits; default: the card's record for --group).
    #[arg(long, value_name = "HEX")]
    pub key_domain: Option<String>,
    /// The account options.
    #[command(flatten)]
    pub account: AccountArgs,
}

/// Options of `terminal unsubscribe`.
#[derive(Debug, Clone, Args)]
pub struct UnsubscribeArgs {
    /// The purchase item (globalIDRef); leave out for every item.
    #[arg(long, value_name = "ID")]
    pub item: Option<String>,
    /// The account options.
    #[command(flatten)]
    pub account: AccountArgs,
}

/// Options of `terminal keys`.
#[derive(Debug, Clone, Args)]
pub struct KeysArgs {
    /// Send a key request (the only action for now).
    #[arg(long, required = true)]
    pub request: bool,
    /// Key Group.
    #[arg(long, value_name = "N")]
    pub group: u16,
    /// Key Number (0: the group's current key).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub number: u16,
    /// Key Domain ID (6 hex digits; default: the card's record for --group).
    #[arg(long, value_name = "HEX")]
    pub key_domain: Option<String>,
    /// The account options.
    #[command(flatten)]
    pub account: AccountArgs,
}

/// Options of `terminal protect`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "Needs an https:// BSM with [bsm] ca_file, client_cert_file and client_key_file: the \
BSM's key center answers over mutual TLS only. The channel is kept in the card file, the TBKs in the terminal \
state file; `watch`, `record` and `play` then open streams with protection_after_reception 0, 1 (channel) and \
2 (TBK). Run it again when the Counter Limit is used up, after a new bootstrap, or after buying a \
terminal-bound service. Exit code 3 when the key center refuses a TBK.")]
pub struct ProtectArgs {
    /// A terminal binding key to fetch (repeatable) [default: every ID the LTKMs of the keys in
    /// the card name].
    #[arg(long = "tbk-id", value_name = "N")]
    pub tbk_id: Vec<u32>,
    /// The Terminal_ID of the channel (Ks_local derivation, TS 33.110 Annex A).
    #[arg(long, value_name = "ID", default_value = DEFAULT_TERMINAL_ID)]
    pub terminal_id: String,
    /// Only fetch TBKs; leave the card's channel as it is.
    #[arg(long)]
    pub no_channel: bool,
    /// The account options.
    #[command(flatten)]
    pub account: AccountArgs,
}

/// Default `--terminal-id` \[chosen\]: a terminal without an IMEI of its own.
const DEFAULT_TERMINAL_ID: &str = "keycast-terminal";

/// The TBK IDs the LTKMs of the keys in `card` name (their tbk_flag, profile P-4).
fn card_tbk_ids(mbms: &MbmsStore) -> std::collections::BTreeSet<u32> {
    mbms.msks.iter().flat_map(|r| r.keys.iter()).filter_map(|k| k.ext.as_ref().and_then(|e| e.tbk_id)).collect()
}

fn run_protect(cfg: &TerminalConfig, a: &ProtectArgs) -> Result<ExitCode> {
    init_logging();
    let acc = &a.account;
    let card_path = cfg.card_path(acc.card.as_ref())?;
    let state_file = StateFile::new(cfg.state_path(acc.state.as_ref(), &card_path));
    let mut state = state_file.load_or_default().context("reading the terminal state")?;
    let card = TerminalKeys::open(Some(&card_path), cfg.me_store_path(&card_path).as_deref())?;
    if card.mode() == GbaMode::GbaMe && !a.no_channel {
        // TS 33.110 derives Ks_local from the card's Ks_int_NAF: GBA_U only. A GBA_ME terminal
        // holds its keys in the ME, so there is no card channel to set up.
        bail!(
            "gba = \"gba-me\": the secure channel with the card needs GBA_U (Ks_local comes from the card's \
             Ks_int_NAF); give --no-channel to fetch terminal binding keys only"
        );
    }
    let bsm_url = acc.bsm.clone().or_else(|| cfg.bsm.as_ref().map(|b| b.url.clone())).context("give --bsm or [bsm]")?;
    let bsf_url = acc.bsf.clone().or_else(|| cfg.bsf.as_ref().map(|b| b.url.clone())).context("give --bsf or [bsf]")?;
    let Some(rest) = bsm_url.strip_prefix("https://") else {
        bail!(
            "the BSM's key center answers over mutual TLS only: give an https:// BSM with [bsm] ca_file, \
             client_cert_file and client_key_file (got {bsm_url:?})"
        );
    };
    let section = cfg.bsm.as_ref();
    if section.is_none_or(|s| s.client_cert_file.is_none()) {
        bail!("the BSM's key center needs a client certificate: [bsm] client_cert_file and client_key_file");
    }
    let (bsm_address, bsm_host) = http_host(&format!("http://{rest}"), "--bsm")?;
    let fqdn = acc.bsm_fqdn.clone().or_else(|| section.and_then(|b| b.fqdn.clone())).unwrap_or(bsm_host);
    let o = BsmOptions {
        bsm: &bsm_url,
        bsm_fqdn: Some(&fqdn),
        bsf: &bsf_url,
        bsf_host: acc.bsf_host.as_deref().or_else(|| cfg.bsf.as_ref().and_then(|b| b.host.as_deref())),
    };
    let tbk_ids: std::collections::BTreeSet<u32> =
        if a.tbk_id.is_empty() { card_tbk_ids(card.mbms()) } else { a.tbk_id.iter().copied().collect() };
    let tls = BsmTlsFiles::of(section).client_config()?;
    let server =
        rustls_pki_types::ServerName::try_from(fqdn.clone()).with_context(|| format!("{fqdn:?} is no server name"))?;
    // The Ua user agent carries the GBA token (TS 33.220 §5.3.0, profile P-7).
    let user_agent = format!("Keycast-terminal/{} 3gpp-gba", env!("CARGO_PKG_VERSION"));
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the tokio runtime")?;
    let mut refused = 0usize;
    runtime.block_on(async {
        let mut shell = account_shell(card, &o, section, Interface::OmaBcast, None, state.next_request_id).await?;
        restore_state(&mut shell, &state);
        let result = async {
            shell.ensure_credentials().await.context("bootstrapping")?;
            let bootstrap = shell.bootstrap_state().clone();
            let identity = shell.card().usim().identity.clone();
            let creds = MbmsKeyHolder::naf_keys(shell.card_mut(), &bootstrap, &fqdn, &identity.impi)
                .context("deriving the Ua credentials")?;
            let mut https =
                keycast_gba::client::http::HttpClient::tls(bsm_address.clone(), server.clone(), tls.clone())
                    .with_timeout(Duration::from_secs(30));
            let mut protection = ProtectionState::new();
            if !a.no_channel {
                let mut randx = [0u8; 16];
                let mut cnonce = [0u8; 16];
                OsRandom.fill(&mut randx);
                OsRandom.fill(&mut cnonce);
                let ids = SacIdentity::platform(a.terminal_id.as_bytes(), identity.iccid.as_bytes());
                let sac = protection
                    .establish_sac(&mut https, &creds, &user_agent, &mut shell.card_mut().card, &ids, randx, &cnonce)
                    .await
                    .context("establishing the secure authenticated channel")?;
                let until =
                    UtcTime::from_unix_seconds(sac.expires).map(time_text).unwrap_or_else(|_| sac.expires.to_string());
                // The terminal's half of the channel, for later processes (state file, 0600).
                state.sac = Some(sac.clone());
                println!(
                    "secure channel established with the card: Counter Limit {}, until {until}",
                    sac.counter_limit
                );
            }
            for id in &tbk_ids {
                let mut cnonce = [0u8; 16];
                OsRandom.fill(&mut cnonce);
                match protection.fetch_tbk(&mut https, &creds, &user_agent, *id, &cnonce).await {
                    Ok(tbk) => {
                        state.tbks.insert(*id, tbk.clone());
                        println!("terminal binding key {id} received");
                    }
                    Err(e) => {
                        refused += 1;
                        eprintln!("terminal binding key {id}: {e}");
                    }
                }
            }
            if tbk_ids.is_empty() {
                println!("no terminal binding key named by the keys in the card");
            }
            Ok::<_, anyhow::Error>(())
        }
        .await;
        capture_state(&mut shell, &mut state)?;
        // Saved whatever the outcome: a bootstrap made here must not be lost.
        state_file.save(&state).context("saving the terminal state")?;
        result
    })?;
    Ok(if refused > 0 { ExitCode::from(REFUSED) } else { ExitCode::SUCCESS })
}

/// One account command.
enum Action<'a> {
    Subscribe(&'a SubscribeArgs),
    Buy(&'a BuyArgs),
    Unsubscribe(&'a UnsubscribeArgs),
    Register,
    Deregister,
    Keys(&'a KeysArgs),
}

impl Action<'_> {
    fn name(&self) -> &'static str {
        match self {
            Action::Subscribe(_) => "subscribe",
            Action::Buy(_) => "buy",
            Action::Unsubscribe(_) => "unsubscribe",
            Action::Register => "register",
            Action::Deregister => "deregister",
            Action::Keys(_) => "keys",
        }
    }
}

/// The current Unix time as a [`UtcTime`].
fn now() -> UtcTime {
    (system_clock())()
}

/// Copies what the shell holds into `state`, after saving what a bootstrap put in a GBA_ME key
/// store (the state file then never names a B-TID whose Ks is not saved).
fn capture_state<K: KeysHolder>(shell: &mut TerminalShell<K>, state: &mut TerminalState) -> Result<()> {
    shell.card_mut().keys_mut().save().context("saving the GBA_ME key store")?;
    state.bootstrap = shell.bootstrap_state().current().cloned();
    state.next_request_id = shell.client().next_request_id();
    state.purchases = shell.client().purchases().clone();
    Ok(())
}

/// Loads `file` into `shell`: the bootstrap (when the card still holds that B-TID), the request
/// ID counter, the purchases.
fn restore_state<K: KeysHolder>(shell: &mut TerminalShell<K>, state: &TerminalState) {
    let keys = shell.card().keys();
    let held = keys.b_tid().map(str::to_owned);
    let mode = keys.mode();
    if let Some(b) = &state.bootstrap
        && held.as_deref() == Some(b.b_tid.as_str())
        && b.mode == mode
    {
        shell.restore_bootstrap(b.clone());
    }
    for p in state.purchases.iter() {
        shell.client_mut().purchases_mut().insert(p.clone());
    }
}

/// Registration at start of `watch`/`record` when the state names purchases; the state.
async fn register_at_start<K: KeysHolder>(shell: &mut TerminalShell<K>, file: &StateFile) -> Result<TerminalState> {
    let state = file.load_or_default().context("reading the terminal state")?;
    restore_state(shell, &state);
    if !state.purchases.is_empty() {
        match shell.connect().await {
            Ok(Some(a)) => eprintln!("registered: {}", answer_line(&a)),
            Ok(None) => {}
            // Watching goes on without: the keys may already be in the card.
            Err(e) => eprintln!("registration at start failed: {e}"),
        }
    }
    Ok(state)
}

fn status_number(c: StatusCode) -> u16 {
    u16::from(c)
}

fn answer_line(a: &Answer) -> String {
    let status = a.response.global_status().map_or_else(|| "-".to_owned(), |c| status_number(c).to_string());
    let ok = a.ltkms.iter().filter(|r| r.is_ok()).count();
    let refused: Vec<String> = a.response.refused_items().iter().map(|(i, c)| format!("{i} ({c})")).collect();
    let refused = if refused.is_empty() { String::new() } else { format!(", refused: {}", refused.join(", ")) };
    format!("status {status}, {ok} of {} LTKMs taken by the card{refused}", a.ltkms.len())
}

fn answer_json(a: &Answer) -> serde_json::Value {
    serde_json::json!({
        "status": a.response.global_status().map(status_number),
        "refused": a.response.refused_items().iter().map(|(i, c)| serde_json::json!({"item": i, "status": c})).collect::<Vec<_>>(),
        "ltkms": a.ltkms.len(),
        "ltkms_taken": a.ltkms.iter().filter(|r| r.is_ok()).count(),
        "rebootstraps": a.rebootstraps,
    })
}

/// The Key Domain ID of `--key-domain`, else of the card's record for `group`.
fn key_domain(hex_text: Option<&str>, mbms: &MbmsStore, group: u16) -> Result<[u8; 3]> {
    if let Some(h) = hex_text {
        let b = hex::decode(h).with_context(|| format!("--key-domain {h:?} is not hex"))?;
        return b.try_into().map_err(|_| anyhow::anyhow!("--key-domain must be 3 octets (6 hex digits)"));
    }
    mbms.msks
        .iter()
        .find(|r| r.key_group == group)
        .map(|r| r.key_domain_id.0)
        .with_context(|| format!("the card holds no key of Key Group {group}: give --key-domain"))
}

fn key_id(domain: [u8; 3], group: u16, number: u16) -> BcastKeyId {
    let g = group.to_be_bytes();
    let n = number.to_be_bytes();
    BcastKeyId { key_domain_id: domain, sek_pek_id: [g[0], g[1], n[0], n[1]] }
}

fn run_account(cfg: &TerminalConfig, a: &AccountArgs, action: Action<'_>) -> Result<ExitCode> {
    init_logging();
    let card_path = cfg.card_path(a.card.as_ref())?;
    let state_file = StateFile::new(cfg.state_path(a.state.as_ref(), &card_path));
    let mut state = state_file.load_or_default().context("reading the terminal state")?;
    let card = TerminalKeys::open(Some(&card_path), cfg.me_store_path(&card_path).as_deref())?;
    let bsm_url = a.bsm.clone().or_else(|| cfg.bsm.as_ref().map(|b| b.url.clone())).context("give --bsm or [bsm]")?;
    let bsf_url = a.bsf.clone().or_else(|| cfg.bsf.as_ref().map(|b| b.url.clone())).context("give --bsf or [bsf]")?;
    let section = cfg.bsm.as_ref();
    let interface = match section.and_then(|b| b.interface.as_deref()) {
        Some("mbms") => Interface::Mbms,
        _ => Interface::OmaBcast,
    };
    let listen = a.ltkm_listen.or_else(|| section.and_then(|b| b.ltkm_listen));
    let wait = a.wait.or_else(|| section.and_then(|b| b.push_wait_secs)).unwrap_or(match (&action, listen) {
        (Action::Unsubscribe(_), Some(_)) => DEFAULT_UNSUBSCRIBE_WAIT_SECS,
        _ => 0.0,
    });
    if !(wait.is_finite() && wait >= 0.0) {
        bail!("--wait must be a number of seconds");
    }
    let o = BsmOptions {
        bsm: &bsm_url,
        bsm_fqdn: a.bsm_fqdn.as_deref().or_else(|| section.and_then(|b| b.fqdn.as_deref())),
        bsf: &bsf_url,
        bsf_host: a.bsf_host.as_deref().or_else(|| cfg.bsf.as_ref().and_then(|b| b.host.as_deref())),
    };
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the tokio runtime")?;
    let name = action.name();
    let json = a.json;
    let outcome = runtime.block_on(async {
        let mut shell = account_shell(card, &o, section, interface, listen, state.next_request_id).await?;
        restore_state(&mut shell, &state);
        let btid_before = shell.bootstrap_state().b_tid().map(str::to_owned);
        let result = account_action(&mut shell, &action, interface).await;
        let mut pushes = 0usize;
        if result.is_ok() && wait > 0.0 && shell.udp_addr(interface).is_some() {
            let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(wait);
            loop {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if left.is_zero() {
                    break;
                }
                match shell.recv_ltkm(left).await {
                    Ok(Some(r)) if r.report.is_ok() => pushes += 1,
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        eprintln!("LTKM socket: {e}");
                        break;
                    }
                }
            }
        }
        let btid_after = shell.bootstrap_state().b_tid().map(str::to_owned);
        let bootstrapped = btid_after.is_some() && btid_after != btid_before;
        capture_state(&mut shell, &mut state)?;
        match (&action, &result) {
            (Action::Register, Ok(Some(_))) => {
                state.registration = Some(Registration {
                    interface,
                    bsm_address: http_host(&bsm_url.replacen("https://", "http://", 1), "--bsm")
                        .map(|h| h.0)
                        .unwrap_or_default(),
                    at: now(),
                })
            }
            (Action::Deregister, Ok(_)) => state.registration = None,
            _ => {}
        }
        // Saved whatever the outcome: a bootstrap or a request ID spent must not be reused.
        state_file.save(&state).context("saving the terminal state")?;
        Ok::<_, anyhow::Error>((result, bootstrapped, btid_after, pushes))
    })?;
    let (result, bootstrapped, b_tid, pushes) = outcome;
    let answer = result.with_context(|| format!("terminal {name}"))?;
    if json {
        let v = serde_json::json!({
            "command": name,
            "bootstrapped": bootstrapped,
            "b_tid": b_tid,
            "answer": answer.as_ref().map(answer_json),
            "pushed_ltkms": pushes,
            "purchases": state.purchases.iter().map(purchase_json).collect::<Vec<_>>(),
        });
        println!("{v:#}");
    } else {
        let boot = if bootstrapped { "bootstrapped" } else { "B-TID reused" };
        match &answer {
            Some(x) => println!("{name}: {} ({boot}; {pushes} LTKMs pushed)", answer_line(x)),
            None => println!("{name}: nothing to send ({boot})"),
        }
    }
    let refused = answer.as_ref().and_then(|x| x.response.global_status()).is_some_and(|c| !c.is_success());
    Ok(if refused { ExitCode::from(REFUSED) } else { ExitCode::SUCCESS })
}

/// A shell for an account command: the card, the push listener when configured, TLS.
async fn account_shell(
    card: TerminalKeys,
    o: &BsmOptions<'_>,
    section: Option<&BsmSection>,
    interface: Interface,
    listen: Option<SocketAddr>,
    first_request_id: u32,
) -> Result<TerminalShell<TerminalKeys>> {
    let https = o.bsm.strip_prefix("https://");
    let plain_url = https.map(|rest| format!("http://{rest}"));
    let (bsm_address, bsm_host) = http_host(plain_url.as_deref().unwrap_or(o.bsm), "--bsm")?;
    let (bsf_address, bsf_host) = http_host(o.bsf, "--bsf")?;
    let impi = card.usim().identity.impi.clone();
    let user_agent = format!("Keycast-terminal/{}", env!("CARGO_PKG_VERSION"));
    let bootstrap = BootstrapConfig {
        bsf_host: o.bsf_host.map_or(bsf_host, str::to_owned),
        impi,
        user_agent: user_agent.clone(),
        mode: card.mode(),
    };
    let fqdn = o.bsm_fqdn.unwrap_or(&bsm_host).to_owned();
    let mut client = ClientConfig::new(&fqdn, &user_agent);
    client.first_request_id = first_request_id;
    let mut shell_config = ShellConfig::new(&bsm_address, &bsf_address, bootstrap, client);
    shell_config.registration_interface = interface;
    shell_config.oma_bcast_udp = None;
    shell_config.mbms_udp = None;
    match interface {
        Interface::OmaBcast => shell_config.oma_bcast_udp = listen,
        Interface::Mbms => shell_config.mbms_udp = listen,
    }
    OsRandom.fill(&mut [0u8; 1]);
    let mut shell = TerminalShell::new(shell_config, card, system_clock(), Box::new(OsRandom)).await?;
    if https.is_some() {
        let tls = BsmTlsFiles::of(section).client_config()?;
        let name = rustls_pki_types::ServerName::try_from(fqdn.clone())
            .with_context(|| format!("{fqdn:?} is no server name"))?;
        shell.use_bsm_tls(tls, name);
    }
    Ok(shell)
}

/// Sends the request of `action`; `Ok(None)` when there was nothing to send.
async fn account_action(
    shell: &mut TerminalShell<TerminalKeys>,
    action: &Action<'_>,
    interface: Interface,
) -> Result<Option<Answer>> {
    let item = |id: &str, offer: Option<&String>| PurchaseRequestItem {
        item: PurchaseItemRef::new(id, offer.map(String::as_str)),
        price: None,
    };
    Ok(match action {
        Action::Subscribe(s) => Some(shell.subscribe(vec![(item(&s.item, s.offer.as_ref()), None)]).await?),
        Action::Buy(b) => match b.group {
            None => Some(shell.subscribe(vec![(item(&b.item, b.offer.as_ref()), None)]).await?),
            Some(group) => {
                let domain = key_domain(b.key_domain.as_deref(), shell.card().mbms(), group)?;
                let request = shell.client_mut().token_purchase(vec![TokenPurchaseItem {
                    key_id: key_id(domain, group, b.number),
                    global_id_ref: Some(b.item.clone()),
                    number_of_tokens: b.tokens,
                    price: None,
                }])?;
                Some(shell.execute(request).await?)
            }
        },
        Action::Unsubscribe(u) => {
            let items = u.item.as_ref().map(|i| vec![PurchaseItemRef::new(i, None)]);
            let request = shell.client_mut().unsubscribe(items);
            Some(shell.execute(request).await?)
        }
        Action::Register => shell.connect().await?,
        Action::Deregister => {
            shell.ensure_credentials().await?;
            let request = match interface {
                Interface::OmaBcast => shell.client_mut().deregistration(now()),
                Interface::Mbms => shell.client_mut().mbms_deregister(now()),
            };
            match request {
                Ok(r) => Some(shell.execute(r).await?),
                Err(ProvisioningError::NothingToRequest(_)) => None,
                Err(e) => return Err(e.into()),
            }
        }
        Action::Keys(k) => {
            let domain = key_domain(k.key_domain.as_deref(), shell.card().mbms(), k.group)?;
            Some(shell.request_keys(interface, &[key_id(domain, k.group, k.number)]).await?)
        }
    })
}

fn time_text(t: UtcTime) -> String {
    let (y, mo, d, h, mi, s) = t.fields();
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

fn purchase_json(p: &Purchase) -> serde_json::Value {
    serde_json::json!({
        "item": p.item.global_id_ref,
        "offer": p.item.purchase_data_id_ref,
        "valid_until": p.valid_until.map(time_text),
    })
}

fn run_status(cfg: &TerminalConfig, a: &StatusArgs) -> Result<ExitCode> {
    let card_path = cfg.card_path(a.card.as_ref())?;
    let state_path = cfg.state_path(a.state.as_ref(), &card_path);
    let state = StateFile::new(&state_path).load_or_default().context("reading the terminal state")?;
    let usim = CardFile::new(&card_path).load().with_context(|| format!("reading {}", card_path.display()))?;
    // A GBA_ME terminal's keys are in the ME's key store; nothing there yet is an empty store.
    let me_path = cfg.me_store_path(&card_path);
    let mbms = match &me_path {
        Some(p) => match GbaMeFile::new(p).load() {
            Ok(store) => store.mbms,
            Err(CardFileError::Io { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => {
                MbmsStore::default()
            }
            Err(e) => return Err(anyhow::Error::from(e).context("reading the GBA_ME key store")),
        },
        None => usim.mbms.clone(),
    };
    let t = now();
    let bootstrap = state.bootstrap.as_ref().map(|b| {
        serde_json::json!({
            "b_tid": b.b_tid,
            "lifetime": time_text(b.lifetime),
            "valid": b.lifetime.unix_seconds() > t.unix_seconds(),
        })
    });
    let mut groups = Vec::new();
    for r in &mbms.msks {
        let keys: Vec<serde_json::Value> = r
            .keys
            .iter()
            .map(|e| {
                let window = match e.validity {
                    KeyValidity::TekIdWindow { seq_l, seq_u } => serde_json::json!({"tek_id": [seq_l, seq_u]}),
                    KeyValidity::TsWindow { ts_low, ts_high } => serde_json::json!({"ts": [ts_low, ts_high]}),
                };
                serde_json::json!({
                    "key_number": e.id.key_number,
                    "window": window,
                    "invalidated": e.is_invalidated(),
                    "views_left": e.rights.views_left,
                    "play_backs_left": e.rights.play_backs_left,
                })
            })
            .collect();
        groups.push(serde_json::json!({
            "key_domain": hex::encode(r.key_domain_id.0),
            "key_group": r.key_group,
            "keys": keys,
        }));
    }
    let v = serde_json::json!({
        "card": {
            "file": card_path.display().to_string(),
            "impi": usim.identity.impi,
            "imsi": usim.identity.imsi,
            "iccid": usim.identity.iccid,
        },
        "state_file": state_path.display().to_string(),
        "gba": if me_path.is_some() { "gba-me" } else { "gba-u" },
        "me_store": me_path.as_ref().map(|p| p.display().to_string()),
        "bootstrap": bootstrap,
        "next_request_id": state.next_request_id,
        "purchases": state.purchases.iter().map(purchase_json).collect::<Vec<_>>(),
        "registration": state.registration.as_ref().map(|r| serde_json::json!({
            "interface": match r.interface { Interface::OmaBcast => "oma-bcast", Interface::Mbms => "mbms" },
            "bsm": r.bsm_address,
            "at": time_text(r.at),
        })),
        "key_groups": groups,
        // Content protection: IDs and counters only, never K_sac or a TBK.
        "protection": serde_json::json!({
            "channel": usim.mbms.sac.as_ref().map(|c| serde_json::json!({
                "counter_limit": c.counter_limit.to_string(),
                "used": c.used.to_string(),
            })),
            "tbk_ids": state.tbks.keys().collect::<Vec<_>>(),
        }),
    });
    if a.json {
        println!("{v:#}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("card {}: IMPI {}, IMSI {}", card_path.display(), usim.identity.impi, usim.identity.imsi);
    match &state.bootstrap {
        Some(b) => {
            let valid = if b.lifetime.unix_seconds() > t.unix_seconds() { "valid" } else { "expired" };
            println!("B-TID {} until {} ({valid})", b.b_tid, time_text(b.lifetime));
        }
        None => println!("not bootstrapped"),
    }
    match &state.registration {
        Some(r) => println!("registered with {} at {}", r.bsm_address, time_text(r.at)),
        None => println!("not registered"),
    }
    match &usim.mbms.sac {
        Some(c) => println!("secure channel with the card: {} of {} TEKs used", c.used, c.counter_limit),
        None => println!("no secure channel with the card"),
    }
    let tbk_ids: Vec<String> = state.tbks.keys().map(u32::to_string).collect();
    println!("terminal binding keys: {}", if tbk_ids.is_empty() { "none".to_owned() } else { tbk_ids.join(", ") });
    println!("{} purchases", state.purchases.len());
    for p in state.purchases.iter() {
        let until = p.valid_until.map_or_else(|| "no end known".to_owned(), |u| format!("until {}", time_text(u)));
        println!("  {} offer {} {until}", p.item.global_id_ref, p.item.purchase_data_id_ref.as_deref().unwrap_or("-"));
    }
    if let Some(p) = &me_path {
        println!("GBA_ME: the keys are in the ME's key store {}", p.display());
    }
    for r in &mbms.msks {
        println!("Key Domain {} / Key Group {}:", hex::encode(r.key_domain_id.0), r.key_group);
        for e in &r.keys {
            let window = match e.validity {
                KeyValidity::TekIdWindow { seq_l, seq_u } => format!("TEK ID {seq_l}..{seq_u}"),
                KeyValidity::TsWindow { ts_low, ts_high } => format!("TS {ts_low}..={ts_high}"),
            };
            let state = if e.is_invalidated() { "invalidated" } else { "usable" };
            println!(
                "  key {} {window} {state}, views left {}, play-backs left {}",
                e.id.key_number, e.rights.views_left, e.rights.play_backs_left
            );
        }
    }
    Ok(ExitCode::SUCCESS)
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

    fn config(text: &str) -> Result<TerminalConfig> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("terminal.toml");
        std::fs::write(&path, text).unwrap();
        TerminalConfig::load(&path)
    }

    #[test]
    fn configuration_paths_defaults_and_refusals() {
        let c = config(
            "card = \"card.kc\"\n[bsf]\nurl = \"http://127.0.0.1:1\"\n[bsm]\nurl = \"http://127.0.0.1:2\"\n\
             fqdn = \"bmsc.example.org\"\n[media]\nsrtp = \"239.1.1.1:5004\"\nrtpmap = \"H264/90000\"\n",
        )
        .unwrap();
        let card = c.card_path(None).unwrap();
        assert!(card.is_absolute() && card.ends_with("card.kc"), "{card:?}");
        // The state file defaults to <card>.state; an option wins over the configuration.
        assert!(c.state_path(None, &card).to_string_lossy().ends_with("card.kc.state"));
        let other = PathBuf::from("/x/other.kc");
        assert_eq!(c.card_path(Some(&other)).unwrap(), other);
        let w = WatchArgs {
            card: None,
            stkm_port: None,
            srtp: Some("0.0.0.0:6000".parse().unwrap()),
            rtp_out: None,
            sdp: None,
            media: None,
            payload_type: 96,
            rtpmap: None,
            fmtp: None,
            rcc: RccArg::Rfc3711,
            roc_rate: None,
            card_recheck: 1,
            bsm: None,
            bsm_fqdn: None,
            bsf: None,
            bsf_host: None,
            mbms: false,
            packets: None,
            duration: None,
            state: None,
            me_store: None,
            bsm_tls: BsmTlsFiles::default(),
        };
        let r = c.resolve_watch(&w).unwrap();
        assert_eq!(r.srtp, Some("0.0.0.0:6000".parse().unwrap()), "the option wins");
        assert_eq!(r.rtpmap.as_deref(), Some("H264/90000"), "the configuration fills in");
        assert_eq!(r.bsm.as_deref(), Some("http://127.0.0.1:2"));
        assert_eq!(r.bsm_fqdn.as_deref(), Some("bmsc.example.org"));
        assert!(r.state.is_some());
        assert!(r.me_store.is_none(), "GBA_U: no ME key store");

        assert!(config("card = \"c\"\nbogus = 1\n").is_err(), "unknown keys are refused");
        // GBA_ME: the ME's key store defaults to <card>.me; `me_store` is for GBA_ME only.
        let me = config("card = \"card.kc\"\ngba = \"gba-me\"\n").unwrap();
        assert!(me.me_store_path(&card).unwrap().to_string_lossy().ends_with("card.kc.me"));
        assert!(me.resolve_watch(&w).unwrap().me_store.is_some());
        let me = config("gba = \"gba-me\"\nme_store = \"keys/me.ks\"\n").unwrap();
        let p = me.me_store_path(&card).unwrap();
        assert!(p.is_absolute() && p.ends_with("keys/me.ks"), "{p:?}");
        assert!(config("me_store = \"x\"\n").unwrap_err().to_string().contains("gba-me"));
        assert!(config("gba = \"gba-2\"\n").is_err());
        assert!(config("[bsm]\nurl = \"http://a:1\"\n").unwrap_err().to_string().contains("go together"));
        assert!(config("[bsf]\nurl = \"http://a:1\"\n[bsm]\nurl = \"http://b:1\"\ninterface = \"x\"\n").is_err());
        assert!(TerminalConfig::default().card_path(None).is_err());
    }
}
