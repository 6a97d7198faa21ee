//! `keycast card …`: make, show and drive emulated cards kept in card files
//! ([`keycast_card::persist`]).
//!
//! - `new`: a fresh card; K and OP/OPc come from standard input (`K=…`, `OP=…` or `OPC=…` lines)
//!   or from files, never from the command line, where `ps` and the shell history would see them.
//! - `show`: the EF contents decoded, text or JSON; K, OPc, Ks, Ks_int_NAF, MUKs, SEK/PEKs and
//!   K_sac are never shown.
//! - `apdu`: one command APDU to the emulator loaded from the file; the state is saved back.
//! - `reset-counters`: test labs only: every key's TS, TEK ID, play-back and view counters back
//!   to what its LTKM granted.
//! - `serve-vpcd`: the card file as a virtual card behind pcscd (vsmartcard's vpcd driver), so
//!   every PC/SC application — and Keycast built with `--features keycast-card/pcsc` — drives it
//!   like a card in a reader.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use keycast_card::emulator::Emulator;
use keycast_card::mbms::{MskEntry, MukKey, Rights};
use keycast_card::persist::{CardFile, FORMAT_VERSION};
use keycast_card::usim::{Usim, UsimIdentity};
use keycast_card::{CardError, Transport as _};
use keycast_crypto::keys::{Op, Opc, SubscriberKey};
use keycast_mikey::{KeyValidity, SecurityPolicy};
use zeroize::Zeroizing;

use crate::input::parse_hex;
use crate::report::Node;

/// `keycast card`.
#[derive(Debug, Args)]
pub struct CardArgs {
    /// What to do with the card file.
    #[command(subcommand)]
    pub command: CardCommand,
}

/// The card subcommands.
#[derive(Debug, Subcommand)]
pub enum CardCommand {
    /// Create a card file for a subscriber. K and OP (or OPc) are read from standard input as
    /// `K=<hex>` and `OP=<hex>` / `OPC=<hex>` lines, or from files; never from the command line.
    New(NewArgs),
    /// Print the card's files decoded (EF_GBABP, EF_GBANL, EF_MUK, EF_MSK, …); secrets are never
    /// shown.
    Show(ShowArgs),
    /// Send one command APDU (hex) to the emulator loaded from the card file and print the
    /// response; the card's new state is saved.
    Apdu(ApduArgs),
    /// Test labs: reset every key's TS, TEK ID and play-back/view counters to fresh. Card files
    /// only: a card behind a PC/SC reader keeps its counters where nobody may reset them.
    ResetCounters(ResetArgs),
    /// Serve the card file as a virtual card to pcscd through the vsmartcard `vpcd` reader
    /// driver; every command that changes the card is saved before its answer goes out.
    ServeVpcd(ServeVpcdArgs),
}

/// Options of `card serve-vpcd`.
#[derive(Debug, Args)]
pub struct ServeVpcdArgs {
    /// The card file.
    #[arg(long, value_name = "PATH")]
    pub file: PathBuf,
    /// Where the vpcd driver listens (loopback; vpcd's first slot is port 35963).
    #[arg(long, value_name = "HOST:PORT", default_value = keycast_card::vpcd::DEFAULT_VPCD_ADDR)]
    pub addr: String,
    /// Keep serving: reconnect (every second) when pcscd goes away, instead of exiting.
    #[arg(long)]
    pub retry: bool,
}

/// Options of `card new`.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// The card file to create (refused when it exists).
    #[arg(long, value_name = "PATH")]
    pub file: PathBuf,
    /// IMSI (6 to 15 digits).
    #[arg(long)]
    pub imsi: String,
    /// IMPI (the GBA user identity).
    #[arg(long)]
    pub impi: String,
    /// ICCID (digits, up to 20; a trailing F pads an odd length).
    #[arg(long)]
    pub iccid: String,
    /// A file holding K (32 hex digits, optionally as `K=<hex>`); otherwise K comes from stdin.
    #[arg(long, value_name = "FILE")]
    pub k_file: Option<PathBuf>,
    /// A file holding OP (32 hex digits, optionally as `OP=<hex>`); OPc is computed from it.
    #[arg(long, value_name = "FILE", conflicts_with = "opc_file")]
    pub op_hex_file: Option<PathBuf>,
    /// A file holding OPc (32 hex digits, optionally as `OPC=<hex>`).
    #[arg(long, value_name = "FILE")]
    pub opc_file: Option<PathBuf>,
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

/// Options of `card show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The card file.
    #[arg(long, value_name = "PATH")]
    pub file: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Options of `card apdu`.
#[derive(Debug, Args)]
#[command(after_help = "Each invocation is one card session from reset: AUTHENTICATE needs the USIM \
application selected first, so give the SELECT (00A40404 10 A0000000871002FFFFFFFF4B43000100) before it. \
The state is saved when a command changed it.")]
pub struct ApduArgs {
    /// The card file.
    #[arg(long, value_name = "PATH")]
    pub file: PathBuf,
    /// The command APDU in hex (whitespace allowed); several are sent in order in one session.
    #[arg(value_name = "HEX", required = true, num_args = 1..)]
    pub apdus: Vec<String>,
}

/// Options of `card reset-counters`.
#[derive(Debug, Args)]
pub struct ResetArgs {
    /// The card file.
    #[arg(long, value_name = "PATH", required_unless_present = "reader")]
    pub file: Option<PathBuf>,
    /// A PC/SC reader: always refused.
    #[arg(long, value_name = "NAME", conflicts_with = "file")]
    pub reader: Option<String>,
}

/// Runs `keycast card …`.
pub fn run(args: &CardArgs) -> Result<ExitCode> {
    match &args.command {
        CardCommand::New(a) => new(a),
        CardCommand::Show(a) => show(a),
        CardCommand::Apdu(a) => apdu(a),
        CardCommand::ResetCounters(a) => reset_counters(a),
        CardCommand::ServeVpcd(a) => serve_vpcd(a),
    }
}

// ---------------------------------------------------------------------------------------------
// serve-vpcd

fn serve_vpcd(a: &ServeVpcdArgs) -> Result<ExitCode> {
    use keycast_card::vpcd::{DEFAULT_ATR, VpcdError, VpcdExit, serve_vpcd_with};
    use std::sync::atomic::AtomicBool;

    let file = CardFile::new(&a.file);
    let mut card = Emulator::new(file.load()?);
    // Nothing sets the flag: Ctrl-C ends the process, and every change is already on disk.
    let stop = AtomicBool::new(false);
    let mut save_error = None;
    loop {
        eprintln!("serving {} to vpcd at {}", a.file.display(), a.addr);
        let outcome = serve_vpcd_with(&mut card, &a.addr, DEFAULT_ATR, &stop, |card: &mut Emulator| {
            if card.take_dirty()
                && let Err(e) = file.save(card.usim())
            {
                save_error.get_or_insert(e);
            }
        });
        if let Some(e) = save_error.take() {
            return Err(anyhow!(e).context("saving the card file failed; stopped serving"));
        }
        match outcome {
            Ok(VpcdExit::Stopped) => return Ok(ExitCode::SUCCESS),
            Ok(VpcdExit::Closed) if !a.retry => {
                eprintln!("vpcd closed the connection");
                return Ok(ExitCode::SUCCESS);
            }
            Err(e @ VpcdError::Connect { .. }) if !a.retry => return Err(anyhow!(e)),
            Err(e @ (VpcdError::InvalidAtr(_) | VpcdError::Io(_))) if !a.retry => return Err(anyhow!(e)),
            other => {
                eprintln!("{}; reconnecting in 1 s", other.map_or_else(|e| e.to_string(), |_| "vpcd closed".into()))
            }
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
        card.reset();
    }
}

// ---------------------------------------------------------------------------------------------
// new

/// K and OPc, wiped on drop. Shared with `keycast bsf subscriber add|import`.
pub(crate) struct SubscriberSecrets {
    pub(crate) k: SubscriberKey,
    pub(crate) opc: Opc,
}

/// `NAME=hex` lines (names case-insensitive); blank lines and `#` comments are skipped.
fn key_lines(text: &str, source: &str) -> Result<Vec<(String, Zeroizing<Vec<u8>>)>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) =
            line.split_once('=').ok_or_else(|| anyhow!("{source} line {}: expected NAME=<hex>", i + 1))?;
        let name = name.trim().to_ascii_uppercase();
        if !matches!(name.as_str(), "K" | "OP" | "OPC") {
            bail!("{source} line {}: unknown name {name:?} (K, OP or OPC)", i + 1);
        }
        if out.iter().any(|(n, _)| *n == name) {
            bail!("{source}: {name} given twice");
        }
        let bytes = Zeroizing::new(parse_hex(value).with_context(|| format!("{source} line {}: {name}", i + 1))?);
        out.push((name, bytes));
    }
    Ok(out)
}

/// A 16-byte key from a file: bare hex, or one `NAME=hex` line with the expected name.
fn key_file(path: &Path, name: &str) -> Result<Zeroizing<[u8; 16]>> {
    let text = Zeroizing::new(std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?);
    let source = path.display().to_string();
    let bytes = if text.contains('=') {
        let mut lines = key_lines(&text, &source)?;
        match lines.pop() {
            Some((n, b)) if n == name && lines.is_empty() => b,
            _ => bail!("{source}: expected one {name}=<hex> line"),
        }
    } else {
        Zeroizing::new(parse_hex(&text).with_context(|| format!("{source}: {name}"))?)
    };
    key16(&bytes, name, &source)
}

/// Exactly 16 bytes, or an error naming the key and where it came from.
pub(crate) fn key16(bytes: &[u8], name: &str, source: &str) -> Result<Zeroizing<[u8; 16]>> {
    let mut out = Zeroizing::new([0u8; 16]);
    if bytes.len() != 16 {
        bail!("{source}: {name} must be 16 bytes (32 hex digits), got {} bytes", bytes.len());
    }
    out.copy_from_slice(bytes);
    Ok(out)
}

/// The refusal of keys given as command-line options; `alternatives` names the other ways.
pub(crate) fn refuse_keys_in_argv(alternatives: &str) -> anyhow::Error {
    anyhow!(
        "keys are never taken from the command line (ps and shell history would show them): pipe them on \
         standard input as K=<hex> and OP=<hex> or OPC=<hex> lines, or use {alternatives}"
    )
}

/// Standard input, read to the end into a buffer that is wiped on drop.
pub(crate) fn read_stdin_secret() -> Result<Zeroizing<String>> {
    let mut text = Zeroizing::new(String::new());
    std::io::stdin().read_to_string(&mut text).context("reading keys from standard input")?;
    Ok(text)
}

/// K, OP and OPc as they are gathered from files and `NAME=hex` text, before they become
/// [`SubscriberSecrets`].
#[derive(Default)]
pub(crate) struct KeySlots {
    k: Option<Zeroizing<[u8; 16]>>,
    op: Option<Zeroizing<[u8; 16]>>,
    opc: Option<Zeroizing<[u8; 16]>>,
}

impl KeySlots {
    /// Whether K and one of OP/OPc are there.
    pub(crate) fn is_complete(&self) -> bool {
        self.k.is_some() && (self.op.is_some() || self.opc.is_some())
    }

    /// Adds the `K=`, `OP=`, `OPC=` lines of `text`; a key already given is refused.
    pub(crate) fn add_lines(&mut self, text: &str, source: &str) -> Result<()> {
        for (name, bytes) in key_lines(text, source)? {
            let slot = match name.as_str() {
                "K" => &mut self.k,
                "OP" => &mut self.op,
                _ => &mut self.opc,
            };
            if slot.is_some() {
                bail!("{source}: {name} also given by a file");
            }
            *slot = Some(key16(&bytes, &name, source)?);
        }
        Ok(())
    }

    /// K and OPc (computed from OP when OP was given). `k_hint` and `op_hint` say where the
    /// missing key may come from.
    pub(crate) fn into_secrets(self, k_hint: &str, op_hint: &str) -> Result<SubscriberSecrets> {
        let k = SubscriberKey::from_bytes(*self.k.ok_or_else(|| anyhow!("K missing: give {k_hint}"))?);
        let opc = match (self.op, self.opc) {
            (Some(_), Some(_)) => bail!("give OP or OPc, not both"),
            (Some(op), None) => Opc::from_op(&k, &Op::from_bytes(*op)),
            (None, Some(opc)) => Opc::from_bytes(*opc),
            (None, None) => bail!("OP or OPc missing: give {op_hint}"),
        };
        Ok(SubscriberSecrets { k, opc })
    }
}

fn subscriber_secrets(a: &NewArgs) -> Result<SubscriberSecrets> {
    if a.k_in_argv.is_some() || a.op_in_argv.is_some() || a.opc_in_argv.is_some() {
        return Err(refuse_keys_in_argv("--k-file and --op-hex-file / --opc-file"));
    }
    let mut slots = KeySlots {
        k: a.k_file.as_deref().map(|p| key_file(p, "K")).transpose()?,
        op: a.op_hex_file.as_deref().map(|p| key_file(p, "OP")).transpose()?,
        opc: a.opc_file.as_deref().map(|p| key_file(p, "OPC")).transpose()?,
    };
    if !slots.is_complete() {
        slots.add_lines(&read_stdin_secret()?, "standard input")?;
    }
    slots.into_secrets(
        "K=<32 hex digits> on standard input or --k-file",
        "OP=<hex> or OPC=<hex> on standard input, or --op-hex-file / --opc-file",
    )
}

/// An IMSI: 6 to 15 digits.
pub(crate) fn valid_imsi(imsi: &str) -> bool {
    (6..=15).contains(&imsi.len()) && imsi.bytes().all(|b| b.is_ascii_digit())
}

/// An IMPI: non-empty, no control characters.
pub(crate) fn valid_impi(impi: &str) -> bool {
    !impi.trim().is_empty() && !impi.chars().any(char::is_control)
}

fn check_identity(a: &NewArgs) -> Result<UsimIdentity> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !valid_imsi(&a.imsi) {
        bail!("--imsi must be 6 to 15 digits");
    }
    let iccid = a.iccid.strip_suffix(['F', 'f']).unwrap_or(&a.iccid);
    if !digits(iccid) || a.iccid.len() > 20 {
        bail!("--iccid must be up to 20 digits (a trailing F allowed)");
    }
    if !valid_impi(&a.impi) {
        bail!("--impi must be a non-empty identity without control characters");
    }
    Ok(UsimIdentity { imsi: a.imsi.clone(), impi: a.impi.clone(), iccid: a.iccid.clone() })
}

fn new(a: &NewArgs) -> Result<ExitCode> {
    let identity = check_identity(a)?;
    let secrets = subscriber_secrets(a)?;
    let usim = Usim::new(identity, secrets.k, secrets.opc);
    CardFile::create(&a.file, &usim)?;
    println!("created card file {} (IMSI {}, mode 0600)", a.file.display(), usim.identity.imsi);
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------------
// show

fn opt_num(key: &str, label: &str, v: Option<u64>) -> Node {
    match v {
        Some(n) => Node::num(key, label, n),
        None => Node::leaf(key, label, serde_json::Value::Null, "none"),
    }
}

fn opt_text(key: &str, label: &str, v: Option<&str>) -> Node {
    match v {
        Some(s) => Node::text(key, label, s),
        None => Node::leaf(key, label, serde_json::Value::Null, "none"),
    }
}

fn not_shown(key: &str, label: &str) -> Node {
    Node::leaf(key, label, "not shown", "(secret, not shown)")
}

fn policy_name(p: SecurityPolicy) -> &'static str {
    match p {
        SecurityPolicy::PayPerTime => "pay-per-time",
        SecurityPolicy::PayPerTimeWithPlayBack => "pay-per-time with play-back",
        SecurityPolicy::PayPerView => "pay-per-view",
        SecurityPolicy::PayPerViewWithPlayBack => "pay-per-view with play-back",
        SecurityPolicy::UserPayPerView => "user pay-per-view (tokens)",
        SecurityPolicy::UnlimitedWithinWindow => "unlimited within window",
        _ => "unknown",
    }
}

fn program_text(p: Option<u32>) -> String {
    p.map_or_else(|| "(no program ID)".to_owned(), |id| id.to_string())
}

fn muk_node(key: &str, label: &str, m: &MukKey) -> Node {
    Node::group(key, label)
        .with(Node::text("idr", "IDr (B-TID)", m.idr.clone()))
        .with(not_shown("muk", "MUK"))
        .with(opt_num("ts", "TS of the last LTKM", m.ts.map(u64::from)))
}

fn msk_node(e: &MskEntry) -> Node {
    let mut n = Node::group("key", format!("SEK/PEK {}/{}", e.id.key_group, e.id.key_number))
        .with(Node::num("key_group", "Key Group", e.id.key_group.into()))
        .with(Node::num("key_number", "Key Number", e.id.key_number.into()))
        .with(Node::hex("sek_pek_id", "SEK/PEK ID", &e.id.to_bytes()))
        .with(not_shown("sek_pek", "SEK/PEK"))
        .with(Node::hex("rand", "RAND", &e.rand));
    n.push(match e.validity {
        KeyValidity::TekIdWindow { seq_l, seq_u } => Node::group("validity", "Validity")
            .summarised(format!("TEK ID window SEQl {seq_l} < TEK ID <= SEQu {seq_u}"))
            .with(Node::text("form", "", "tek_id_window"))
            .with(Node::num("seq_l", "", seq_l.into()))
            .with(Node::num("seq_u", "", seq_u.into())),
        KeyValidity::TsWindow { ts_low, ts_high } => Node::group("validity", "Validity")
            .summarised(format!("TS window {ts_low} ..= {ts_high}"))
            .with(Node::text("form", "", "ts_window"))
            .with(Node::num("ts_low", "", ts_low.into()))
            .with(Node::num("ts_high", "", ts_high.into())),
    });
    n.push(Node::flag("invalidated", "Invalidated", e.is_invalidated()));
    let spe = e.ext.and_then(|x| x.security_policy);
    n.push(match spe {
        Some(s) => Node::code("policy", "Security policy", s.policy.code().into(), policy_name(s.policy)),
        None => Node::leaf("policy", "Security policy", serde_json::Value::Null, "none (implicit play-once)"),
    });
    if let Some(s) = spe {
        n.push(Node::num("play_back_counter", "Play-backs granted", s.play_back_counter.into()));
        n.push(Node::num("view_counter", "Views granted", s.view_counter.into()));
    }
    n.push(opt_num("tbk_id", "Terminal binding key ID", e.ext.and_then(|x| x.tbk_id).map(u64::from)));
    n.push(Node::flag(
        "consumption_reporting",
        "Consumption reporting",
        e.ext.is_some_and(|x| x.consumption_reporting),
    ));
    n.push(opt_num("ts", "TS of the last live STKM", e.ts.map(u64::from)));
    n.push(opt_num("last_tek_id", "TEK ID of the last live STKM", e.last_tek_id.map(u64::from)));
    let r = &e.rights;
    let mut rights = Node::group("rights", "Rights and counters")
        .with(Node::num("play_backs_left", "Play-backs left", r.play_backs_left.into()))
        .with(Node::num("views_left", "Views left", r.views_left.into()));
    rights.push(match r.ppv_program {
        None => Node::leaf("ppv_program", "Pay-per-view program", serde_json::Value::Null, "not yet locked"),
        Some(p) => Node::leaf("ppv_program", "Pay-per-view program", p, program_text(p)),
    });
    let mut paid = Node::list("paid_programs", "Programs paid with a token");
    if r.paid_programs.is_empty() {
        paid.text = Some("none".into());
    }
    for p in &r.paid_programs {
        paid.push(Node::leaf("program", "Program", *p, program_text(*p)));
    }
    rights.push(paid);
    rights.push(Node::flag("in_play_back", "In a play-back session", r.in_play_back));
    rights.push(Node::num("live_count", "Live STKMs accepted", r.live_count.into()));
    rights.push(Node::num("play_back_sessions", "Play-back sessions", r.play_back_sessions.into()));
    n.push(rights);
    n
}

/// The card's state as a report; no secret bytes enter it.
pub fn card_report(path: &Path, u: &Usim) -> Node {
    let mut root = Node::group("card", format!("Keycast card file {}", path.display())).with(Node::num(
        "format_version",
        "Format version",
        FORMAT_VERSION.into(),
    ));
    root.push(
        Node::group("identity", "Identity")
            .with(Node::text("imsi", "IMSI", u.identity.imsi.clone()))
            .with(Node::text("impi", "IMPI", u.identity.impi.clone()))
            .with(Node::text("iccid", "ICCID", u.identity.iccid.clone()))
            .with(not_shown("k", "K"))
            .with(not_shown("opc", "OPc")),
    );
    let sqn = u.sqn_ms.iter().fold(0u64, |a, b| (a << 8) | u64::from(*b));
    root.push(
        Node::group("aka", "3G security context")
            .with(Node::leaf("sqn_ms", "SQN_MS", hex::encode(u.sqn_ms), format!("{} ({sqn})", hex::encode(u.sqn_ms))))
            .with(Node::num("sqn_window", "SQN window", u.sqn_window)),
    );
    root.push(match &u.gba {
        None => Node::leaf("ef_gbabp", "EF_GBABP", serde_json::Value::Null, "empty (not bootstrapped)"),
        Some(g) => Node::group("ef_gbabp", "EF_GBABP")
            .with(not_shown("ks", "Ks"))
            .with(Node::hex("rand", "RAND", &g.rand))
            .with(opt_text("b_tid", "B-TID", g.b_tid.as_deref()))
            .with(opt_text("lifetime", "Key lifetime", g.lifetime.as_deref())),
    });
    let mut gbanl = Node::list("ef_gbanl", "EF_GBANL");
    gbanl.text = Some(format!("{} NAF keys, use counter {}", u.naf_keys.len(), u.use_counter));
    for r in &u.naf_keys {
        let (fqdn, proto) = r.naf_id.split_at(r.naf_id.len().saturating_sub(5));
        gbanl.push(
            Node::group("naf", format!("NAF {}", String::from_utf8_lossy(fqdn)))
                .with(Node::hex("naf_id", "NAF_Id", &r.naf_id))
                .with(Node::text("fqdn", "NAF FQDN", String::from_utf8_lossy(fqdn)))
                .with(Node::hex("ua_protocol", "Ua security protocol", proto))
                .with(Node::text("b_tid", "B-TID", r.b_tid.clone()))
                .with(not_shown("ks_int_naf", "Ks_int_NAF"))
                .with(Node::num("last_use", "Last use", r.last_use)),
        );
    }
    root.push(gbanl);
    let m = &u.mbms;
    let mut muk = Node::list("ef_muk", "EF_MUK");
    muk.text = Some(format!("{} of {} records", m.muks.len(), m.capacity.muk_records));
    for r in &m.muks {
        let mut n =
            Node::group("record", format!("BSM {}", r.idi)).with(Node::text("idi", "IDi (BSM FQDN)", r.idi.clone()));
        n.push(muk_node("current", "Current MUK", &r.current));
        n.push(match &r.last_used {
            Some(l) => muk_node("last_used", "Last used MUK", l),
            None => Node::leaf("last_used", "Last used MUK", serde_json::Value::Null, "none"),
        });
        muk.push(n);
    }
    root.push(muk);
    let mut msk = Node::list("ef_msk", "EF_MSK");
    msk.text = Some(format!("{} of {} records", m.msks.len(), m.capacity.msk_records));
    for r in &m.msks {
        let kd = &r.key_domain_id;
        let kd_text = match kd.mcc_mnc() {
            Some((mcc, mnc)) => format!("{} (MCC {mcc}, MNC {mnc})", hex::encode(kd.0)),
            None => hex::encode(kd.0),
        };
        let mut n = Node::group("record", format!("Key Domain {} / Key Group {}", hex::encode(kd.0), r.key_group))
            .with(Node::leaf("key_domain_id", "Key Domain ID", hex::encode(kd.0), kd_text))
            .with(Node::num("key_group", "Key Group", r.key_group.into()));
        let mut keys = Node::list("keys", "Keys (newest first)");
        for e in &r.keys {
            keys.push(msk_node(e));
        }
        n.push(keys);
        msk.push(n);
    }
    root.push(msk);
    root.push(opt_num("parental_limit", "Parental limit (highest minimum age)", m.parental_limit.map(u64::from)));
    root.push(match &m.sac {
        None => Node::leaf("secure_channel", "Secure channel", serde_json::Value::Null, "not established"),
        Some(s) => Node::group("secure_channel", "Secure channel")
            .with(not_shown("k_sac", "K_sac"))
            .with(Node::leaf(
                "counter_limit",
                "Counter limit",
                s.counter_limit.to_string(),
                s.counter_limit.to_string(),
            ))
            .with(Node::leaf("used", "TEKs released", s.used.to_string(), s.used.to_string())),
    });
    root
}

fn show(a: &ShowArgs) -> Result<ExitCode> {
    let usim = CardFile::new(&a.file).load()?;
    let node = card_report(&a.file, &usim);
    let text = if a.json { format!("{:#}\n", node.to_json()) } else { node.to_text() };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------------
// apdu

/// What a status word means, for people.
fn status_text(sw: u16) -> String {
    match sw {
        0x9000 => "success".to_owned(),
        0x6100..=0x61ff => format!("{} more bytes available", sw & 0xff),
        0x62f1 => "more data available (response chaining)".to_owned(),
        0x62f3 => "response data available (response chaining)".to_owned(),
        0x63f1 => "more data expected (command chaining)".to_owned(),
        _ => CardError::from_status_word(sw).to_string(),
    }
}

fn apdu(a: &ApduArgs) -> Result<ExitCode> {
    let commands = a
        .apdus
        .iter()
        .enumerate()
        .map(|(i, h)| parse_hex(h).with_context(|| format!("APDU {}", i + 1)))
        .collect::<Result<Vec<_>>>()?;
    let file = CardFile::new(&a.file);
    let mut card = Emulator::new(file.load()?);
    let mut text = String::new();
    for cmd in &commands {
        let resp = card.transmit(cmd).context("the emulator failed")?;
        // The emulator answers at least a status word; anything shorter is a bug reported as such.
        let split = resp.len().checked_sub(2).ok_or_else(|| anyhow!("response without a status word"))?;
        let (data, sw) = resp.split_at(split);
        let sw = u16::from_be_bytes([sw[0], sw[1]]);
        text.push_str(&format!("> {}\n", hex::encode_upper(cmd)));
        if !data.is_empty() {
            text.push_str(&format!("< {}\n", hex::encode_upper(data)));
        }
        text.push_str(&format!("< {sw:04X} ({})\n", status_text(sw)));
    }
    if card.take_dirty() {
        file.save(card.usim())?;
        text.push_str(&format!("card state saved to {}\n", a.file.display()));
    }
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------------
// reset-counters

/// Resets one key to what its LTKM granted; returns whether anything changed.
fn reset_key(e: &mut MskEntry) -> bool {
    let spe = e.ext.and_then(|x| x.security_policy);
    let fresh = Rights {
        play_backs_left: spe.map_or(0, |s| s.play_back_counter),
        views_left: spe.map_or(0, |s| s.view_counter),
        ..Rights::default()
    };
    let changed = e.ts.is_some() || e.last_tek_id.is_some() || e.rights != fresh;
    e.ts = None;
    e.last_tek_id = None;
    e.rights = fresh;
    changed
}

fn reset_counters(a: &ResetArgs) -> Result<ExitCode> {
    if let Some(reader) = &a.reader {
        bail!(
            "reset-counters only works on card files (--file): the card in PC/SC reader {reader:?} keeps its \
             counters in its own memory, and no terminal may reset them"
        );
    }
    let path = a.file.as_ref().ok_or_else(|| anyhow!("--file is required"))?;
    if path.to_string_lossy().starts_with("pcsc:") {
        bail!("reset-counters only works on card files, not on a PC/SC reader ({})", path.display());
    }
    let file = CardFile::new(path);
    let mut usim = file.load()?;
    let mut keys = 0;
    let mut changed = 0;
    for e in usim.mbms.msks.iter_mut().flat_map(|r| r.keys.iter_mut()) {
        keys += 1;
        changed += usize::from(reset_key(e));
    }
    let mut muks = 0;
    for r in &mut usim.mbms.muks {
        for m in std::iter::once(&mut r.current).chain(r.last_used.as_mut()) {
            muks += usize::from(m.ts.take().is_some());
        }
    }
    file.save(&usim)?;
    println!(
        "{}: reset {changed} of {keys} SEK/PEKs (TS, TEK ID, play-back and view counters, program locks) and the \
         LTKM TS of {muks} MUKs; MBMS SEQl and the secure channel counter are unchanged",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}
