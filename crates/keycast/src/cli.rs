//! The command line: `keycast demo`, `keycast inspect`, `keycast derive …`, `keycast card …`,
//! `keycast serve bsf`, `keycast bsf subscriber …`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use keycast_crypto::keys::{SekPek, Smk, Tbk};
use serde_json::json;

use crate::demo::{self, DemoOptions};
use crate::derive;
use crate::input::{HexArg, InputSpec, hex_arg};
use crate::inspect::{self, InspectKeys};
use crate::report::Node;

/// Keycast: the OMA BCAST Smartcard Profile on 3GPP MBMS security.
#[derive(Debug, Parser)]
#[command(name = "keycast", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run GBA bootstrapping, LTKM and STKM handling in one process and narrate every step.
    ///
    /// Exit status 0 only when every expectation held.
    Demo(DemoArgs),
    /// Decode a MIKEY message (LTKM, STKM, verification message, solicited pull) field by field,
    /// check it against the Keycast profile and, given keys, verify and decrypt it.
    ///
    /// Exit status 1 when a message is malformed, refused by the profile, or fails its MAC.
    Inspect(InspectArgs),
    /// Key derivations, printing every intermediate value.
    Derive(DeriveArgs),
    /// Emulated cards in card files: new, show, apdu, reset-counters.
    Card(crate::card_cmd::CardArgs),
    /// Run a network service: `serve bsf --config PATH` (Ub, Zn, metrics) or `serve bsm --config PATH`
    /// (service provisioning, LTKM pushes, admin API, metrics).
    Serve(crate::bsf_cmd::ServeArgs),
    /// Administer the BSF: `bsf subscriber add|import|show|delete --config PATH`.
    Bsf(crate::bsf_cmd::BsfArgs),
    /// Administer a running BSM over its admin API: `bsm --config PATH apply|show|keys|rollover|terminal`.
    Bsm(crate::bsm_admin::BsmArgs),
    /// Measure a role at scale: `bench rollover --subscribers N [--postgres URL]`.
    Bench(crate::bench_cmd::BenchArgs),
    /// One-shot broadcaster jobs: `broadcast package --config PATH --in FILE …` protects a file for
    /// download (OMA DRM DCF + the STKM carrying its TEK).
    Broadcast(crate::broadcast_cmd::BroadcastArgs),
    /// The terminal: `terminal watch --card PATH` (STKMs and SRTP in, clear RTP and an SDP out).
    Terminal(crate::terminal_cmd::TerminalArgs),
}

/// Options of `keycast demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Seed for the generated CSB IDs, RANDs, SEK, TEKs and salts (output is reproducible).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Also print every message on the wire in hex (feed it to `keycast inspect`).
    #[arg(long)]
    pub wire: bool,
}

/// Options of `keycast inspect`.
#[derive(Debug, Args)]
#[command(after_help = "Input: a positional argument is a file (raw message, hex or base64 text, or a pcap/pcapng \
capture), `-` for standard input, or hex / base64 text. In captures every UDP datagram with source or \
destination port 2269, 4359 or a --port is decoded and shown with its frame number.\n\n\
JSON (--json): one object per message with the keys frame, src, dst (captures only), length, hdr, payloads, \
verdict and ok; captures give {\"capture\": {...}, \"messages\": [...]}. Code points are {\"code\", \"name\"} \
objects and byte strings are lowercase hex.")]
pub struct InspectArgs {
    /// A file, `-` (standard input), or hex / base64 text.
    #[arg(value_name = "INPUT")]
    pub input: Option<String>,
    /// The message in hex (whitespace allowed).
    #[arg(long, value_name = "HEX")]
    pub hex: Option<String>,
    /// The message in base64.
    #[arg(long, value_name = "BASE64")]
    pub base64: Option<String>,
    /// A file holding the raw message (a capture is recognised by its magic number).
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// A pcap or pcapng capture.
    #[arg(long, value_name = "PATH")]
    pub pcap: Option<PathBuf>,
    /// Another UDP port to decode in captures, besides 2269 and 4359 (repeatable).
    #[arg(long = "port", value_name = "N")]
    pub ports: Vec<u16>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// SMK (32 bytes hex): verify and decrypt an LTKM or solicited pull, or (with --ltkm) check
    /// a verification message.
    #[arg(long, value_name = "HEX", value_parser = hex_arg, env = "KEYCAST_SMK", hide_env_values = true)]
    pub smk: Option<HexArg>,
    /// SEK/PEK (16 bytes hex): verify and decrypt an STKM; needs --rand.
    #[arg(long, value_name = "HEX", value_parser = hex_arg, requires = "rand", env = "KEYCAST_SEK", hide_env_values = true)]
    pub sek: Option<HexArg>,
    /// RAND stored with the SEK/PEK (16 bytes hex; the RAND of the LTKM that delivered it).
    #[arg(long, value_name = "HEX", value_parser = hex_arg, requires = "sek")]
    pub rand: Option<HexArg>,
    /// TBK (16 bytes hex): unwrap a terminal-bound TEK.
    #[arg(long, value_name = "HEX", value_parser = hex_arg, env = "KEYCAST_TBK", hide_env_values = true)]
    pub tbk: Option<HexArg>,
    /// The LTKM (hex) a verification message answers; needs --smk.
    #[arg(long, value_name = "HEX", value_parser = hex_arg, requires = "smk")]
    pub ltkm: Option<HexArg>,
}

/// `keycast derive`.
#[derive(Debug, Args)]
pub struct DeriveArgs {
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Which derivation.
    #[command(subcommand)]
    pub what: DeriveCommand,
}

/// The derivations.
#[derive(Debug, Subcommand)]
pub enum DeriveCommand {
    /// Milenage f1–f5*, AUTN, AUTS (TS 35.206, TS 33.102) and the GBA_U AUTN* / RES.
    Milenage(MilenageArgs),
    /// GBA: Ks, B-TID, the KDF inputs, Ks_(ext/int)_NAF, MRK, and SMK/SRK per GBA mode.
    Gba(GbaArgs),
    /// MIKEY PRF: the keys that protect a message (pre-shared key), or TEK/salt from a TGK.
    MikeyKeys(MikeyKeysArgs),
    /// SRTP and SRTCP session keys from a master key and salt (RFC 3711 §4.3).
    Srtp(SrtpArgs),
}

/// Options of `derive milenage`.
#[derive(Debug, Args)]
pub struct MilenageArgs {
    /// Subscriber key K (16 bytes hex).
    #[arg(long, value_name = "HEX", value_parser = hex_arg)]
    pub k: HexArg,
    /// OP (16 bytes hex); OPc is computed from it.
    #[arg(long, value_name = "HEX", value_parser = hex_arg, required_unless_present = "opc", conflicts_with = "opc")]
    pub op: Option<HexArg>,
    /// OPc (16 bytes hex).
    #[arg(long, value_name = "HEX", value_parser = hex_arg)]
    pub opc: Option<HexArg>,
    /// RAND (16 bytes hex).
    #[arg(long, value_name = "HEX", value_parser = hex_arg)]
    pub rand: HexArg,
    /// SQN (6 bytes hex); with --amf gives f1, f1* and AUTN.
    #[arg(long, value_name = "HEX", value_parser = hex_arg, requires = "amf")]
    pub sqn: Option<HexArg>,
    /// AMF (2 bytes hex).
    #[arg(long, value_name = "HEX", value_parser = hex_arg, requires = "sqn")]
    pub amf: Option<HexArg>,
    /// SQN_MS (6 bytes hex): also compute AUTS for resynchronisation.
    #[arg(long, value_name = "HEX", value_parser = hex_arg)]
    pub sqn_ms: Option<HexArg>,
}

/// Options of `derive gba`.
#[derive(Debug, Args)]
pub struct GbaArgs {
    /// CK (16 bytes hex), with --ik.
    #[arg(long, value_name = "HEX", value_parser = hex_arg, requires = "ik", required_unless_present = "ks")]
    pub ck: Option<HexArg>,
    /// IK (16 bytes hex), with --ck.
    #[arg(long, value_name = "HEX", value_parser = hex_arg, requires = "ck")]
    pub ik: Option<HexArg>,
    /// Ks (32 bytes hex), instead of --ck and --ik.
    #[arg(long, value_name = "HEX", value_parser = hex_arg, conflicts_with_all = ["ck", "ik"])]
    pub ks: Option<HexArg>,
    /// RAND of the bootstrapping run (16 bytes hex).
    #[arg(long, value_name = "HEX", value_parser = hex_arg)]
    pub rand: HexArg,
    /// IMPI of the subscriber.
    #[arg(long, value_name = "STR")]
    pub impi: String,
    /// FQDN of the NAF (the BSM).
    #[arg(long, value_name = "STR")]
    pub naf_fqdn: String,
    /// Ua security protocol identifier (5 bytes hex); 0100000001 is MBMS (profile P-7).
    #[arg(long, value_name = "HEX", value_parser = hex_arg, default_value = "0100000001")]
    pub ua_protocol: HexArg,
    /// BSF name: also print B-TID and TMPI.
    #[arg(long, value_name = "STR")]
    pub bsf: Option<String>,
}

/// Options of `derive mikey-keys`.
#[derive(Debug, Args)]
pub struct MikeyKeysArgs {
    /// inkey: the pre-shared key (SMK for LTKMs, SEK/PEK for STKMs) or, with --tgk, the TGK (hex).
    #[arg(long, value_name = "HEX", value_parser = hex_arg)]
    pub key: HexArg,
    /// CSB ID (4 bytes hex).
    #[arg(long, value_name = "HEX", value_parser = hex_arg)]
    pub csb_id: HexArg,
    /// RAND (hex).
    #[arg(long, value_name = "HEX", value_parser = hex_arg)]
    pub rand: HexArg,
    /// Timestamp (4-byte COUNTER or 8-byte NTP, hex): also print the KEMAC IV.
    #[arg(long, value_name = "HEX", value_parser = hex_arg, conflicts_with = "tgk")]
    pub t: Option<HexArg>,
    /// Derive TEK and salt from a TGK (RFC 3830 §4.1.3) instead of the pre-shared-key keys.
    #[arg(long)]
    pub tgk: bool,
    /// cs_id for --tgk.
    #[arg(long, value_name = "N", default_value_t = 1, requires = "tgk")]
    pub cs_id: u8,
    /// TEK length in bytes for --tgk.
    #[arg(long, value_name = "N", default_value_t = 16, requires = "tgk")]
    pub tek_len: usize,
    /// Salt length in bytes for --tgk.
    #[arg(long, value_name = "N", default_value_t = 14, requires = "tgk")]
    pub salt_len: usize,
}

/// Options of `derive srtp`.
#[derive(Debug, Args)]
pub struct SrtpArgs {
    /// Master key (16 bytes hex; in Keycast the TEK).
    #[arg(long, value_name = "HEX", value_parser = hex_arg)]
    pub master_key: HexArg,
    /// Master salt (14 bytes hex; in Keycast the STKM salt).
    #[arg(long, value_name = "HEX", value_parser = hex_arg)]
    pub master_salt: HexArg,
    /// Length of the authentication keys (labels 1 and 4) in bytes.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub auth_len: usize,
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Demo(a) => {
            let r = demo::run(DemoOptions { seed: a.seed, show_wire: a.wire });
            print!("{}", r.text);
            Ok(if r.failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Inspect(a) => run_inspect(&a),
        Command::Card(a) => crate::card_cmd::run(&a),
        Command::Serve(a) => crate::bsf_cmd::run_serve(&a),
        Command::Bsf(a) => crate::bsf_cmd::run_bsf(&a),
        Command::Bsm(a) => crate::bsm_admin::run_bsm(&a),
        Command::Bench(a) => crate::bench_cmd::run_bench(&a),
        Command::Broadcast(a) => crate::broadcast_cmd::run_broadcast(&a),
        Command::Terminal(a) => crate::terminal_cmd::run(&a),
        Command::Derive(a) => {
            let node = match &a.what {
                DeriveCommand::Milenage(m) => derive::milenage(&derive::MilenageInput {
                    k: m.k.clone(),
                    op: m.op.clone(),
                    opc: m.opc.clone(),
                    rand: m.rand.clone(),
                    sqn: m.sqn.clone(),
                    amf: m.amf.clone(),
                    sqn_ms: m.sqn_ms.clone(),
                })?,
                DeriveCommand::Gba(g) => derive::gba(&derive::GbaInput {
                    ck: g.ck.clone(),
                    ik: g.ik.clone(),
                    ks: g.ks.clone(),
                    rand: g.rand.clone(),
                    impi: g.impi.clone(),
                    naf_fqdn: g.naf_fqdn.clone(),
                    ua_protocol: g.ua_protocol.clone(),
                    bsf: g.bsf.clone(),
                })?,
                DeriveCommand::MikeyKeys(m) => derive::mikey_keys(&derive::MikeyKeysInput {
                    key: m.key.clone(),
                    csb_id: m.csb_id.clone(),
                    rand: m.rand.clone(),
                    t: m.t.clone(),
                    tgk: m.tgk,
                    cs_id: m.cs_id,
                    tek_len: m.tek_len,
                    salt_len: m.salt_len,
                })?,
                DeriveCommand::Srtp(s) => derive::srtp(&s.master_key, &s.master_salt, s.auth_len)?,
            };
            emit(&node, a.json)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn emit(node: &Node, json: bool) -> Result<()> {
    let text = if json { format!("{:#}\n", node.to_json()) } else { node.to_text() };
    write_stdout(&text)
}

fn write_stdout(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).context("writing to standard output")?;
    out.flush().context("writing to standard output")
}

fn inspect_keys(a: &InspectArgs) -> Result<InspectKeys> {
    Ok(InspectKeys {
        smk: a.smk.as_ref().map(|k| k.array::<32>("--smk").map(|b| Smk::from_bytes(*b))).transpose()?,
        sek: match (&a.sek, &a.rand) {
            (Some(s), Some(r)) => Some((SekPek::from_bytes(*s.array::<16>("--sek")?), *r.array::<16>("--rand")?)),
            _ => None,
        },
        tbk: a.tbk.as_ref().map(|k| k.array::<16>("--tbk").map(|b| Tbk::from_bytes(*b))).transpose()?,
        ltkm: a.ltkm.as_ref().map(|l| l.bytes().to_vec()),
    })
}

fn run_inspect(a: &InspectArgs) -> Result<ExitCode> {
    let keys = inspect_keys(a)?;
    let spec = InputSpec {
        positional: a.input.clone(),
        hex: a.hex.clone(),
        base64: a.base64.clone(),
        file: a.file.clone(),
        pcap: a.pcap.clone(),
        ports: a.ports.clone(),
    };
    let loaded = spec.load()?;
    let results: Vec<_> = loaded.sources.iter().map(|s| inspect::inspect(&s.bytes, s.origin.as_ref(), &keys)).collect();
    let failed = results.iter().filter(|r| !r.ok()).count();
    if a.json {
        let value = match &loaded.capture {
            None => results[0].node.to_json(),
            Some(c) => json!({
                "capture": {"frames": c.frames, "skipped": c.skipped, "ports": c.ports, "messages": results.len(), "failed": failed},
                "messages": results.iter().map(|r| r.node.to_json()).collect::<Vec<_>>(),
            }),
        };
        write_stdout(&format!("{value:#}\n"))?;
    } else {
        let mut text = String::new();
        for (i, r) in results.iter().enumerate() {
            if i > 0 {
                text.push('\n');
            }
            text.push_str(&r.node.to_text());
        }
        if let Some(c) = &loaded.capture {
            let ports: Vec<String> = c.ports.iter().map(u16::to_string).collect();
            text.push_str(&format!(
                "\n{} MIKEY messages on UDP ports {} in {} frames ({} other frames skipped), {} failed\n",
                results.len(),
                ports.join(", "),
                c.frames,
                c.skipped,
                failed
            ));
        }
        write_stdout(&text)?;
    }
    for (r, s) in results.iter().zip(&loaded.sources) {
        for e in &r.errors {
            match &s.origin {
                Some(o) => eprintln!("error: frame {}: {e}", o.frame),
                None => eprintln!("error: {e}"),
            }
        }
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
