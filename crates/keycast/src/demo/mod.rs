//! `keycast demo`: layers 1–4 of the Smartcard Profile in one process, narrated.
//!
//! The card is the `keycast-card` emulator ([`keycast_card::Emulator`]), driven over TS 31.102
//! APDUs by [`keycast_card::ApduCard`] exactly as a terminal drives a real USIM: SELECT,
//! AUTHENTICATE in the 3G, GBA and MBMS contexts, UPDATE BINARY of EF_GBABP and READ of EF_MUK and
//! EF_MSK. The demo sees only the card's answers and status words, never its state.
//!
//! The BSF is keycast-gba's ([`keycast_gba::bsf`]), started in process on a loopback port with a
//! SQLite store in a temporary directory. The terminals bootstrap against it over HTTP with
//! keycast-gba's client ([`keycast_gba::client::http::bootstrap`]), and the BSM gets its NAF keys
//! from it over Zn (`POST /zn/v1/naf-keys`, bearer token from loopback). The demo provisions the
//! subscribers and queues the test-set RANDs in the BSF's seeded random source, then holds what
//! the BSF sends against the published test-set values.
//!
//! (a) GBA_U bootstrapping with an MBMS card (Milenage test set 1): the BSF's 401 carries RAND and
//!     AUTN*, the card checks it and answers RES, the BSF's 200 carries the B-TID, which the
//!     terminal writes into EF_GBABP; the BSM gets SMK = Ks_int_NAF and SRK = Ks_ext_NAF over Zn,
//!     the card keeps its SMK and releases its SRK;
//! (b) the BSM seals an LTKM, the card opens it and answers a verification message;
//! (c) the broadcaster seals STKMs, the card answers TEK ‖ salt (a resend gives the same TEK, a
//!     lower TEK ID is refused);
//! (d) a content-protected TEK without a secure channel (P-10), tampered, replayed, unknown-key and
//!     out-of-window STKMs, a replayed LTKM, an invalidation;
//! (e) a solicited-pull trigger, and the LTKM that answers the terminal's LTKM Request;
//! (f) a GBA_ME terminal (Milenage test set 2, the card used only through its 3G context, Ks in
//!     the terminal's store) bootstraps through the BSF; the BSM gets Ks_NAF over Zn and its store
//!     receives the same SEK, so one STKM gives the same TEK on both terminals;
//! (g) the BSF's SQN_HE of the GBA_U subscriber is set back, so the card answers the next
//!     challenge with AUTS; the BSF resynchronises and the same run succeeds with a new B-TID;
//! (h) the real BSM of keycast-bsm (module `bsm`): the operator sets up the catalogue and makes SEKs
//!     through its admin API; the card of (a) and a second card are keycast-terminal shells that
//!     bootstrap, subscribe (the LTKM comes in the answer), register on the two interfaces
//!     (pushes over UDP, verification messages back), open the broadcaster's STKMs under the
//!     BSM's SEKs, take the next SEK after a rollover (in a registration answer; the terminal that
//!     missed its push asks for it with an LTKM Request), and one unsubscribes: the pushed
//!     invalidation makes its card refuse the next STKM;
//! (i) layer 4 (module `stream`), on what (h) left running: keycast-broadcast's core gets the
//!     SEKs of two new services from the BSM's broadcaster API and sends STKMs and SRTP over
//!     loopback UDP to keycast-terminal's media watcher, with terminal B's card as key holder:
//!     200 RTP packets come out byte-identical across a TEK switch announced ahead, a wrong-key
//!     and a tampered packet are dropped, zapping away and back reuses the TEKs (the card's
//!     resend rule), one ESP packet opens with the card's TEK, and after B unsubscribes the pushed
//!     invalidations make the card refuse the next STKM and the stream stop decrypting.
//! (j) pay-per-view and view tokens (module `ppv`): the operator adds a service, a program with a
//!     PEK Key Group of its own and two offers (the program's pay-per-view, a token pack);
//!     terminal A buys the pay-per-view (ServiceRequest) and its card opens that program's STKMs
//!     under the PEK and refuses another program's; A buys tokens for the service's SEK
//!     (TokenPurchaseRequest) and its card takes one view unit per new program ID (P-4 code 4),
//!     none for a program already paid, and refuses a new program once the units are spent.
//! (k) record and play back (module `playback`): the operator sells an hour of an archive
//!     service whose recordings play back twice (a pay-per-time offer with `play_backs`); terminal
//!     A buys it and its card takes the SEK with P-4 code 1 and play_back_counter 2 from the real
//!     BSM's answer; keycast-terminal's watcher and Recorder record a short stream
//!     of its own into the adapted PDCF, its Player plays it back through the card twice (a live
//!     STKM ends each play-back session), and the third play-back is refused with 9865.
//! (l) a reboot (module `reboot`): terminal B writes its state (keycast-terminal's state file
//!     format, in memory) and its shell is dropped, the card taken out; meanwhile the operator
//!     rolls Key Group 3 over; a new shell around the same card, restored from that state, keeps
//!     the B-TID (no new bootstrap), registers on the MBMS interface on the same port, the BSM
//!     pushes the keys of B's purchase, the new SEK among them, and the card opens its STKM.
//! (m) purge at Deregistration (module `purge`): the operator adds a 600 s program with a
//!     pay-per-view offer; B buys it, the program ends, B deregisters naming what it still holds,
//!     and the BSM's rule purges the ended purchase: the admin API lists only the running
//!     subscription (the terminal's own list dropped it too).
//! (n) BCAST_Client_ID (module `client_id`): the BSM serves its provisioning routes once more
//!     over TLS with client certificates required (a test CA made with rcgen, nothing of it
//!     printed) and asks for the BCAST_Client_ID at Registration; B's card in a device without an
//!     ID reports the 403 send_BCAST_Client_ID, in a device with one the Registration goes again
//!     with the ID and succeeds, and the BSM stores the ID.
//!
//! A summary table ends the narration: one row per section with its expectations held and their
//! total. While it runs, a progress line per section (`[3/14] (c) …`) goes to stderr when stderr
//! is a terminal, so stdout stays the same from run to run.
//!
//! Every expectation is checked and printed as `ok` or `FAILED`. No randomness: every value
//! comes from the Milenage test sets or from a seeded generator, and the BSF's clock is fixed,
//! so the output is reproducible (the loopback port and the temporary path are never printed).

mod bsm;
mod client_id;
mod network;
mod playback;
mod ppv;
mod purge;
mod reboot;
mod stream;

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use keycast_card::apdu::{EfGbabp, EfMskRecord, EfMukRecord};
use keycast_card::gba_me::GbaMeStore;
use keycast_card::mbms::{MskUpdate, MskUpdateEvent, MtkAnswer, TekOut};
use keycast_card::usim::{AkaAnswer, Usim, UsimIdentity};
use keycast_card::{ApduCard, Card, CardOpError, Emulator, Transport, TransportError};
use keycast_crypto::gba::{self, GbaMode, NafId};
use keycast_crypto::keys::{Op, Opc, SekPek, Smk, SubscriberKey, Tek, TekSalt};
use keycast_crypto::milenage::{self, Milenage};
use keycast_gba::bsf::http::ZN_PATH;
use keycast_gba::bsf::{GbaType, Subscriber};
use keycast_gba::client::{BootstrapConfig, GbaMode as TerminalMode};
use keycast_mikey::{
    KeyDomainId, KeyValidity, Ltkm, LtkmContent, LtkmExt, ProtectionAfterReception, SecurityPolicy, SecurityPolicyExt,
    SekPekId, SolicitedPull, SrtpCs, SrtpPolicy, StkmContent, StkmExt, TekField, TrafficProtectionProtocol,
    VerificationMessage,
};
use network::{Entry, Network, Run, ZnExchange, ZnNafKeys, ZnReply};

/// Milenage test set 1 (TS 35.208 §4.3, vectors.md §1): the GBA_U subscriber.
mod set1 {
    pub const K: &str = "465b5ce8b199b49faa5f0a2ee238a6bc";
    pub const RAND: &str = "23553cbe9637a89d218ae64dae47bf35";
    pub const SQN: &str = "ff9bb4d0b607";
    pub const AMF: &str = "b9b9";
    pub const OP: &str = "cdc202d5123e20f62b6d676ac72cb318";
    pub const OPC: &str = "cd63cb71954a9f4e48a5994e37a02baf";
}

/// Milenage test set 2 (TS 35.208 §4.3, vectors.md §1): the GBA_ME subscriber.
mod set2 {
    pub const K: &str = "fec86ba6eb707ed08905757b1bb44b8f";
    pub const RAND: &str = "9f7c8d021accf4db213ccff0c7f71a6a";
    pub const SQN: &str = "9d0277595ffc";
    pub const AMF: &str = "725c";
    pub const OPC: &str = "1006020f0a478bf6b699f15c062e42b3";
    pub const RES: &str = "8011c48c0c214ed2";
    pub const CK: &str = "5dbdbb2954e8f3cde665b046179a5098";
    pub const IK: &str = "59a92d3b476a0443487055cf88b2307b";
}

/// Names of the GBA worked example (vectors.md §2).
const IMPI: &str = "001010000000001@ims.mnc001.mcc001.3gppnetwork.org";
const IMSI: &str = "001010000000001";
/// The GBA_ME subscriber's IMPI (a demo choice in the same form).
const IMPI_ME: &str = "001010000000002@ims.mnc001.mcc001.3gppnetwork.org";
const IMSI_ME: &str = "001010000000002";
const BSF: &str = "bsf.example.org";
const BSM_FQDN: &str = "bmsc.example.org";
/// Key lifetime the BSF sends with the B-TID (the demo's T0 plus one day).
const LIFETIME: &str = "2025-03-04T14:13:20Z";
/// Start of the demo's key window, in NTP seconds (profile P-6: STKM TS = NTP seconds).
const T0: u32 = 3_950_000_000;
/// T0 as Unix seconds (NTP counts from 1900, Unix from 1970): the BSF's and the terminals' fixed
/// clock, so that LIFETIME = T0 + one day on every run.
const UNIX_T0: u64 = T0 as u64 - 2_208_988_800;
/// Length of the SEK's TS window.
const WINDOW: u32 = 3600;

/// Options of `keycast demo`.
#[derive(Debug, Clone, Copy)]
pub struct DemoOptions {
    /// Seed of the generator for CSB IDs, RANDs, SEKs, TEKs and salts.
    pub seed: u64,
    /// Print every message on the wire, and every APDU exchanged with the cards, in hex.
    pub show_wire: bool,
}

/// The narration and the count of expectations.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// The narrated text.
    pub text: String,
    /// Expectations that held.
    pub passed: usize,
    /// Expectations that did not.
    pub failed: usize,
}

/// A deterministic byte source: HMAC-SHA-256(seed, label ‖ counter), never for real keys.
struct DemoRng {
    key: [u8; 8],
    counter: u32,
}

impl DemoRng {
    fn new(seed: u64) -> Self {
        Self { key: seed.to_be_bytes(), counter: 0 }
    }

    fn bytes<const N: usize>(&mut self, label: &str) -> [u8; N] {
        const { assert!(N <= 32) };
        self.counter += 1;
        let out = keycast_crypto::hmac::hmac_sha256(
            &self.key,
            &[b"keycast-demo ", label.as_bytes(), &self.counter.to_be_bytes()],
        );
        core::array::from_fn(|i| out[i])
    }

    fn u32(&mut self, label: &str) -> u32 {
        u32::from_be_bytes(self.bytes(label))
    }
}

/// The emulator behind a link that records every APDU exchange, so `--wire` can show them.
struct TracedLink {
    card: Emulator,
    log: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Transport for TracedLink {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        let answer = self.card.transmit(command)?;
        self.log.push((command.to_vec(), answer.clone()));
        Ok(answer)
    }
}

/// A terminal's view of its card: nothing but APDUs.
type CardReader = ApduCard<TracedLink>;

/// A card for a subscriber whose SQN_MS sits just below `sqn`, so `sqn` is fresh.
fn insert_card(imsi: &str, impi: &str, iccid: &str, k: SubscriberKey, opc: Opc, sqn: [u8; 6]) -> CardReader {
    let identity = UsimIdentity { imsi: imsi.to_owned(), impi: impi.to_owned(), iccid: iccid.to_owned() };
    let mut usim = Usim::new(identity, k, opc);
    usim.sqn_ms = milenage::sqn_from_u64(milenage::sqn_to_u64(sqn) - 32);
    ApduCard::new(TracedLink { card: Emulator::new(usim), log: Vec::new() })
}

/// The demo's sections in the order they run: the label that starts the section's heading, and
/// the short name of its row in the summary table.
const SECTIONS: [(&str, &str); 14] = [
    ("(a)", "GBA_U bootstrapping through the BSF"),
    ("(b)", "LTKM delivery and verification"),
    ("(c)", "STKMs, TEK resend, lower TEK ID"),
    ("(d)", "refusals and revocation"),
    ("(e)", "solicited pull, LTKM Request"),
    ("(f)", "GBA_ME terminal, same SEK"),
    ("(g)", "SQN resynchronisation"),
    ("(h)", "real BSM: subscribe, rollover, unsubscribe"),
    ("(i)", "layer 4: SRTP, TEK switch, zapping"),
    ("(j)", "pay-per-view (PEK) and view tokens"),
    ("(k)", "record, play back within the counter"),
    ("(l)", "reboot, registration, missed rollover"),
    ("(m)", "ended purchase purged at Deregistration"),
    ("(n)", "BCAST_Client_ID over mutual TLS"),
];

/// One row of the summary table: expectations that held and that did not in one section.
#[derive(Debug, Clone, Copy, Default)]
struct SectionTally {
    passed: usize,
    failed: usize,
}

struct Narrator {
    out: String,
    passed: usize,
    failed: usize,
    show_wire: bool,
    /// Tallies per section: index 0 is the set-up before (a), then one per entry of [`SECTIONS`];
    /// `None` for a section that has not started.
    tallies: [Option<SectionTally>; SECTIONS.len() + 1],
    /// Index into `tallies` of the section running now.
    current: usize,
    /// Whether to show a progress line per section on stderr (only when stderr is a terminal,
    /// so the narration on stdout stays the same from run to run).
    progress: bool,
}

impl Narrator {
    fn line(&mut self, s: impl AsRef<str>) {
        // Writing to a String cannot fail.
        writeln!(self.out, "{}", s.as_ref()).expect("write to String");
    }

    fn new(show_wire: bool) -> Self {
        use std::io::IsTerminal as _;
        let mut tallies = [None; SECTIONS.len() + 1];
        tallies[0] = Some(SectionTally::default());
        Self {
            out: String::new(),
            passed: 0,
            failed: 0,
            show_wire,
            tallies,
            current: 0,
            progress: std::io::stderr().is_terminal(),
        }
    }

    /// A heading; one that starts with a section's label opens that section's row of the table.
    fn heading(&mut self, s: &str) {
        self.line("");
        self.line(s);
        if let Some(i) = SECTIONS.iter().position(|(label, _)| s.starts_with(label)) {
            self.current = i + 1;
            self.tallies[i + 1].get_or_insert_with(SectionTally::default);
            if self.progress {
                eprintln!("[{}/{}] {} {}", i + 1, SECTIONS.len(), SECTIONS[i].0, SECTIONS[i].1);
            }
        }
    }

    /// The summary table: one row per section with its expectations held / total.
    fn table(&mut self) {
        self.heading("summary by section:");
        self.line(format!("  {:<48} {:>4} {:>6}  result", "section", "held", "total"));
        let rows: Vec<(String, Option<SectionTally>)> =
            core::iter::once(("set-up: BSF on loopback".to_owned(), self.tallies[0]))
                .chain(
                    SECTIONS.iter().zip(&self.tallies[1..]).map(|((label, name), t)| (format!("{label} {name}"), *t)),
                )
                .collect();
        for (name, tally) in rows {
            let row = match tally {
                Some(t) => {
                    let result = if t.failed == 0 { "ok" } else { "FAILED" };
                    format!("  {name:<48} {:>4} {:>6}  {result}", t.passed, t.passed + t.failed)
                }
                None => format!("  {name:<48} {:>4} {:>6}  FAILED (not run)", 0, 0),
            };
            self.line(row);
        }
    }

    fn info(&mut self, s: impl AsRef<str>) {
        self.line(format!("          {}", s.as_ref()));
    }

    fn demo_key(&mut self, label: &str, bytes: &[u8]) {
        self.info(format!("[demo key] {label} = {}", hex::encode(bytes)));
    }

    fn wire(&mut self, label: &str, bytes: &[u8]) {
        self.info(format!("{label}: {} bytes on the wire", bytes.len()));
        if self.show_wire {
            self.info(format!("  hex: {}", hex::encode(bytes)));
        }
    }

    /// Runs one terminal operation on the card; with `--wire`, prints the APDUs it took.
    fn on_card<R>(&mut self, card: &mut CardReader, op: impl FnOnce(&mut CardReader) -> R) -> R {
        let r = op(card);
        let log = core::mem::take(&mut card.transport_mut().log);
        if self.show_wire {
            for (command, answer) in log {
                self.info(format!("  apdu > {}", hex::encode(command)));
                self.info(format!("  apdu < {}", hex::encode(answer)));
            }
        }
        r
    }

    /// With `--wire`, the HTTP messages and APDUs of a bootstrapping run, in the order they went.
    /// Only the Digest headers and the BootstrappingInfo are shown: the server's `Date` would
    /// make the output differ from run to run.
    fn transcript(&mut self, run: &Run) {
        if !self.show_wire {
            return;
        }
        for entry in &run.log {
            match entry {
                Entry::Request(r) => {
                    let auth = r.header("Authorization").unwrap_or("(none)");
                    self.info(format!("  http > {} {} Authorization: {auth}", r.method, r.uri));
                }
                Entry::Response(r) => {
                    let header = ["WWW-Authenticate", "Authentication-Info"]
                        .into_iter()
                        .find_map(|name| r.header(name).map(|v| format!(" {name}: {v}")))
                        .unwrap_or_default();
                    self.info(format!("  http < {}{header}", r.status));
                    if r.status == 200 {
                        for line in String::from_utf8_lossy(&r.body).lines() {
                            self.info(format!("  http <   {line}"));
                        }
                    }
                }
                // The checks narrate the card's answers; the APDUs below carry them.
                Entry::Aka(_) => {}
                Entry::Apdu { command, answer } => {
                    self.info(format!("  apdu > {}", hex::encode(command)));
                    self.info(format!("  apdu < {}", hex::encode(answer)));
                }
            }
        }
    }

    /// With `--wire`, a Zn exchange: the request body and the answer's status (its keys are
    /// printed, labelled, where they are used).
    fn zn_wire(&mut self, exchange: &ZnExchange) {
        if !self.show_wire {
            return;
        }
        self.info(format!("  http > POST {ZN_PATH} Authorization: Bearer (token) {}", exchange.request_body));
        match exchange.status {
            Some(status) => self.info(format!("  http < {status} application/json")),
            None => self.info("  http < (no answer)"),
        }
    }

    /// Runs one card operation that must be refused with status word `want`.
    fn expect_refusal<T>(
        &mut self,
        card: &mut CardReader,
        what: &str,
        op: impl FnOnce(&mut CardReader) -> Result<T, CardOpError>,
        want: u16,
        why: &str,
    ) {
        let r = self.on_card(card, op);
        self.check(what, refused(r, want, why));
    }

    /// Records one expectation: `Ok(detail)` if it held, `Err(what happened)` if not.
    fn check(&mut self, what: &str, result: Result<String, String>) {
        match result {
            Ok(detail) => {
                self.passed += 1;
                if let Some(t) = &mut self.tallies[self.current] {
                    t.passed += 1;
                }
                let sep = if detail.is_empty() { "" } else { ": " };
                self.line(format!("  ok      {what}{sep}{detail}"));
            }
            Err(why) => {
                self.failed += 1;
                if let Some(t) = &mut self.tallies[self.current] {
                    t.failed += 1;
                }
                self.line(format!("  FAILED  {what}: {why}"));
            }
        }
    }
}

fn unhex<const N: usize>(s: &str) -> [u8; N] {
    let v = hex::decode(s).expect("constant hex");
    v.try_into().expect("constant length")
}

/// What a status word of the card means (TS 31.102 §7.3; ISO 7816-4).
fn sw_meaning(sw: u16) -> &'static str {
    match sw {
        0x9862 => "authentication error, incorrect MAC",
        0x9864 => "security context not supported",
        0x9865 => "key freshness failure",
        0x9866 => "no memory space available",
        0x9867 => "no memory space available in EF_MUK",
        0x6982 => "security status not satisfied",
        0x6985 => "conditions of use not satisfied",
        0x6a88 => "referenced data not found",
        0x6700 => "wrong length",
        _ => "unexpected status word",
    }
}

fn sw_text(sw: u16) -> String {
    format!("SW {sw:04X} ({})", sw_meaning(sw))
}

/// Describes an operation that failed where success was expected.
fn op_failed(e: &CardOpError) -> String {
    match e {
        CardOpError::Card(c) => format!("refused with {}", sw_text(c.status_word())),
        other => other.to_string(),
    }
}

/// Expects a refusal with status word `want`; `why` is the rule behind it.
fn refused<T>(r: Result<T, CardOpError>, want: u16, why: &str) -> Result<String, String> {
    match r {
        Err(CardOpError::Card(e)) if e.status_word() == want => {
            Ok(format!("refused as expected — {}, {why}", sw_text(want)))
        }
        Err(CardOpError::Card(e)) => Err(format!("refused with {}, expected {want:04X}", sw_text(e.status_word()))),
        Err(e) => Err(format!("the link failed: {e}")),
        Ok(_) => Err(format!("accepted, expected a refusal with {want:04X}")),
    }
}

/// The BSM checks a verification message against the LTKM it sent.
fn bsm_verifies(ltkm: &[u8], verification: &[u8], smk: &Smk) -> Result<String, String> {
    Ltkm::decode(ltkm)
        .and_then(|l| VerificationMessage::decode(verification).and_then(|vm| vm.verify(&l, &l.message_keys(smk))))
        .map(|()| "HDR data type 1, the LTKM's CSB ID and TS, IDr = B-TID, HMAC-SHA-1 verified".to_owned())
        .map_err(|e| e.to_string())
}

/// Expects the TEK ‖ salt of `tek` and `salt` in the clear.
fn clear_tek(answer: &TekOut, tek: &Tek, salt: &TekSalt) -> Result<(), String> {
    match answer {
        TekOut::Clear { tek: t, salt: Some(s) } if t == tek && s == salt => Ok(()),
        TekOut::Clear { .. } => Err("TEK ‖ salt differ from the broadcaster's".to_owned()),
        other => Err(format!("TEK released in another form: {other:?}")),
    }
}

/// The broadcaster's side of layer 3: one CSB ID and Key Domain for every STKM it seals.
struct Broadcaster {
    csb_id: u32,
    key_domain_id: KeyDomainId,
}

/// One STKM the broadcaster seals, with the TEK and salt inside.
struct SealedStkm {
    bytes: Vec<u8>,
    tek: Tek,
    salt: TekSalt,
}

impl Broadcaster {
    /// Seals an STKM carrying a fresh TEK ‖ salt under `sek` (the LTKM's `rand` enters the PRF).
    #[allow(clippy::too_many_arguments)]
    fn seal(
        &self,
        rng: &mut DemoRng,
        sek: &SekPek,
        sek_id: SekPekId,
        rand: &[u8; 16],
        tek_id: u16,
        ts: u32,
        par: Option<ProtectionAfterReception>,
    ) -> SealedStkm {
        let tek = Tek::from_bytes(rng.bytes("TEK"));
        let salt = TekSalt::from_bytes(rng.bytes("salt"));
        let content = StkmContent {
            csb_id: self.csb_id,
            key_domain_id: self.key_domain_id,
            sek_pek_id: sek_id,
            tek_id,
            ts,
            ext: par.map(|protection_after_reception| StkmExt {
                protection_after_reception,
                traffic_protection_protocol: TrafficProtectionProtocol::Srtp,
                traffic_authentication: true,
                tbk_id: None,
                access_criteria: None,
            }),
            tek: TekField::Clear(tek.clone()),
            salt: Some(salt.clone()),
        };
        // Sealing fixed, valid content cannot fail; a failure would be a bug in the demo.
        let bytes = content.seal(sek, rand).expect("demo STKM content is valid");
        SealedStkm { bytes, tek, salt }
    }
}

/// An LTKM delivering `sek` as `sek_id` to the terminal with B-TID `idr`: streaming,
/// pay-per-time, TS window [T0, T0 + WINDOW], verification requested.
fn key_ltkm(
    kd: KeyDomainId,
    sek_id: SekPekId,
    sek: &SekPek,
    (csb_id, rand): (u32, [u8; 16]),
    ts: u32,
    idr: &str,
) -> LtkmContent {
    LtkmContent {
        csb_id,
        verification_requested: true,
        srtp_cs: Some(SrtpCs { policy_no: 0, ssrc: 0, roc: 0 }),
        key_domain_id: kd,
        sek_pek_id: sek_id,
        ts,
        rand,
        idi: BSM_FQDN.to_owned(),
        idr: idr.to_owned(),
        srtp_policy: Some(SrtpPolicy::keycast(None)),
        ext: Some(LtkmExt {
            security_policy: Some(SecurityPolicyExt {
                policy: SecurityPolicy::PayPerTime,
                play_back_counter: 0,
                view_counter: 0,
            }),
            tbk_id: None,
            consumption_reporting: false,
        }),
        key: Some(sek.clone()),
        validity: KeyValidity::TsWindow { ts_low: T0, ts_high: T0 + WINDOW },
    }
}

fn id_hex(id: SekPekId) -> String {
    format!("{:04x}{:04x}", id.key_group, id.key_number)
}

/// Runs the scenario.
#[must_use]
pub fn run(opts: DemoOptions) -> DemoReport {
    let mut n = Narrator::new(opts.show_wire);
    let mut rng = DemoRng::new(opts.seed);
    n.line(format!("Keycast demo: OMA BCAST Smartcard Profile, layers 1-4 in one process (seed {})", opts.seed));
    n.line(concat!(
        "Keys marked [demo key] are public test values (Milenage test sets 1 and 2 and seeded values), ",
        "never real keys."
    ));
    n.line("The cards are keycast-card emulators driven over TS 31.102 APDUs (--wire shows every APDU).");
    n.line(concat!(
        "The BSF is keycast-gba's, in this process on 127.0.0.1:<port> over plain HTTP; the terminals bootstrap ",
        "with keycast-gba's client and the BSM fetches its keys over Zn (--wire shows the HTTP messages)."
    ));
    let mut net = match Network::start(opts.seed, UNIX_T0) {
        Ok(net) => {
            n.check(
                "BSF serves Ub and Zn on 127.0.0.1:<port>",
                Ok("SQLite store in a temporary directory, clock fixed at T0, seeded random source".to_owned()),
            );
            net
        }
        Err(e) => {
            n.check("BSF starts on 127.0.0.1", Err(e));
            return finish(n);
        }
    };
    let Some(Layer1 { smk_bsm, b_tid, mut card }) = layer1(&mut n, &mut net) else {
        return finish(n);
    };
    let kd = KeyDomainId::from_mcc_mnc("001", "01").expect("constant MCC/MNC");
    let sek_id = SekPekId { key_group: 1, key_number: 1 };

    // (b) LTKM.
    n.heading("(b) Layer 2: the BSM delivers a SEK in an LTKM; the card stores it and verifies back");
    let sek = SekPek::from_bytes(rng.bytes("SEK"));
    let ltkm_rand: [u8; 16] = rng.bytes("LTKM RAND");
    let ltkm_content = key_ltkm(kd, sek_id, &sek, (rng.u32("LTKM CSB ID"), ltkm_rand), 1, &b_tid);
    n.demo_key("SEK (Key Group 1, Key Number 1)", sek.expose_secret());
    n.info(format!(
        "LTKM: CSB ID 0x{:08x}, TS 1, V = 1, streaming (SP: AES-CM, HMAC-SHA-1, tag 80 bits), pay-per-time, TS window [{T0}, {}]",
        ltkm_content.csb_id,
        T0 + WINDOW
    ));
    let ltkm_bytes = match ltkm_content.seal(&smk_bsm) {
        Ok(b) => {
            n.check("BSM seals the LTKM under the SMK", Ok(String::new()));
            b
        }
        Err(e) => {
            n.check("BSM seals the LTKM under the SMK", Err(e.to_string()));
            return finish(n);
        }
    };
    n.wire("LTKM", &ltkm_bytes);
    let verification = match n.on_card(&mut card, |c| c.msk_update(&ltkm_bytes)) {
        Ok(Some(v)) => {
            n.check(
                "card opens the LTKM (AUTHENTICATE, MBMS context, MSK update)",
                Ok("9000 with a verification message".to_owned()),
            );
            Some(v)
        }
        Ok(None) => {
            n.check(
                "card opens the LTKM (AUTHENTICATE, MBMS context, MSK update)",
                Err("no verification message".into()),
            );
            None
        }
        Err(e) => {
            n.check("card opens the LTKM (AUTHENTICATE, MBMS context, MSK update)", Err(op_failed(&e)));
            None
        }
    };
    if let Some(v) = verification {
        n.wire("verification message", &v);
        n.check("BSM verifies the card's verification message", bsm_verifies(&ltkm_bytes, &v, &smk_bsm));
    }
    let files = n.on_card(&mut card, |c| c.read_muk_records().and_then(|muk| Ok((muk, c.read_msk_records()?))));
    let want_muk = [EfMukRecord { idr: b_tid.clone(), idi: BSM_FQDN.to_owned(), ts: 1 }];
    let want_msk = [EfMskRecord { key_domain_id: kd, pairs: vec![(sek_id, 0)] }];
    n.check(
        "terminal reads EF_MUK and EF_MSK",
        match files {
            Ok((muk, msk)) if muk == want_muk && msk == want_msk => Ok(format!(
                "the MUK of {BSM_FQDN} counts LTKM TS 1; SEK {} is held for Key Domain MCC 001 MNC 01, no STKM yet",
                id_hex(sek_id)
            )),
            Ok((muk, msk)) => Err(format!("EF_MUK {muk:?}, EF_MSK {msk:?}")),
            Err(e) => Err(op_failed(&e)),
        },
    );

    // (c) STKMs.
    n.heading("(c) Layer 3: the broadcaster sends STKMs; the card answers TEK ‖ salt");
    let bc = Broadcaster { csb_id: rng.u32("STKM CSB ID"), key_domain_id: kd };
    let service_only = Some(ProtectionAfterReception::ServiceProtectionOnly);
    let mut tek3 = None;
    for (i, tek_id) in [1u16, 2, 3].into_iter().enumerate() {
        let ts = T0 + 10 * (i as u32 + 1);
        let st = bc.seal(&mut rng, &sek, sek_id, &ltkm_rand, tek_id, ts, service_only);
        n.demo_key(
            &format!("TEK {tek_id} ‖ salt"),
            &[&st.tek.expose_secret()[..], &st.salt.expose_secret()[..]].concat(),
        );
        n.wire(&format!("STKM TEK ID {tek_id}, TS {ts}"), &st.bytes);
        let r = match n.on_card(&mut card, |c| c.mtk_generation(&st.bytes)) {
            Ok(answer) => clear_tek(&answer, &st.tek, &st.salt)
                .map(|()| "MAC, key window, freshness checked; TEK ‖ salt match the broadcaster's".to_owned()),
            Err(e) => Err(op_failed(&e)),
        };
        n.check(&format!("card opens STKM TEK ID {tek_id} (TS {ts})"), r);
        tek3 = Some(st.tek);
    }
    // Fast zapping: the broadcaster repeats TEK 3 in a new STKM with a new TS. The terminal knows
    // it sent TEK ID 3 before; the card must answer the same TEK.
    let tek3 = tek3.expect("three STKMs sealed");
    let resend_salt = TekSalt::from_bytes(rng.bytes("salt"));
    let resend = StkmContent {
        csb_id: bc.csb_id,
        key_domain_id: kd,
        sek_pek_id: sek_id,
        tek_id: 3,
        ts: T0 + 31,
        ext: None,
        tek: TekField::Clear(tek3.clone()),
        salt: Some(resend_salt.clone()),
    }
    .seal(&sek, &ltkm_rand)
    .expect("demo STKM content is valid");
    let r = match n.on_card(&mut card, |c| c.mtk_generation(&resend)) {
        Ok(answer) => clear_tek(&answer, &tek3, &resend_salt)
            .map(|()| "same TEK ID as the last one sent (a resend), the same TEK returned".to_owned()),
        Err(e) => Err(op_failed(&e)),
    };
    n.check(&format!("card opens a resend of TEK ID 3 (TS {})", T0 + 31), r);
    let lower = bc.seal(&mut rng, &sek, sek_id, &ltkm_rand, 2, T0 + 32, service_only);
    n.expect_refusal(
        &mut card,
        &format!("card refuses TEK ID 2 after TEK ID 3 (TS {})", T0 + 32),
        |c| c.mtk_generation(&lower.bytes),
        0x9865,
        "TEK ID below the last accepted",
    );

    // (d) Refusals and revocation.
    n.heading("(d) No secure channel, tampering, replay, an unknown key, an expired window, and revocation");
    let protected = bc.seal(&mut rng, &sek, sek_id, &ltkm_rand, 4, T0 + 35, Some(ProtectionAfterReception::MayRecord));
    n.wire(
        &format!("STKM TEK ID 4, TS {}, protection after reception 0 (content protection, may record)", T0 + 35),
        &protected.bytes,
    );
    n.expect_refusal(
        &mut card,
        "card refuses to release a content-protected TEK in the clear (P-10)",
        |c| c.mtk_generation(&protected.bytes),
        0x6982,
        concat!(
            "no secure channel: the terminal would first run Local Key Establishment (TS 33.110) ",
            "so the TEK leaves wrapped under K_sac"
        ),
    );
    let fresh = bc.seal(&mut rng, &sek, sek_id, &ltkm_rand, 4, T0 + 40, service_only);
    let mut tampered = fresh.bytes.clone();
    // Flip one bit 30 bytes before the end: inside the KEMAC's encrypted key data.
    let at = tampered.len() - 30;
    tampered[at] ^= 0x01;
    n.expect_refusal(
        &mut card,
        &format!("card refuses STKM TEK ID 4 with one bit flipped at byte {at}"),
        |c| c.mtk_generation(&tampered),
        0x9862,
        "MGV-F rejects the MAC",
    );
    let r = match n.on_card(&mut card, |c| c.mtk_generation(&fresh.bytes)) {
        Ok(answer) => {
            clear_tek(&answer, &fresh.tek, &fresh.salt).map(|()| "the refused copies changed nothing".to_owned())
        }
        Err(e) => Err(op_failed(&e)),
    };
    n.check(&format!("card opens the untampered STKM TEK ID 4 (TS {})", T0 + 40), r);
    n.expect_refusal(
        &mut card,
        "card refuses the same STKM bytes again (replay)",
        |c| c.mtk_generation(&fresh.bytes),
        0x9865,
        "TS not above the last accepted and pay-per-time allows no play-back",
    );
    let other_group = SekPekId { key_group: 2, key_number: 1 };
    let unknown_sek = SekPek::from_bytes(rng.bytes("unknown SEK"));
    let unknown = bc.seal(&mut rng, &unknown_sek, other_group, &ltkm_rand, 1, T0 + 41, service_only);
    n.expect_refusal(
        &mut card,
        &format!("card refuses an STKM under SEK {}", id_hex(other_group)),
        |c| c.mtk_generation(&unknown.bytes),
        0x6a88,
        "the card holds no key of Key Group 2",
    );
    let late = T0 + 2 * WINDOW;
    let outside = bc.seal(&mut rng, &sek, sek_id, &ltkm_rand, 5, late, service_only);
    n.expect_refusal(
        &mut card,
        &format!("card refuses STKM TEK ID 5 with TS {late}, outside the key window"),
        |c| c.mtk_generation(&outside.bytes),
        0x9865,
        "TS outside [TS low, TS high]",
    );
    n.expect_refusal(
        &mut card,
        "card refuses the LTKM sent again (replay under the same SMK)",
        |c| c.msk_update(&ltkm_bytes),
        0x9865,
        "LTKM TS 1 not above the last accepted TS of this MUK",
    );
    let invalidation = ltkm_content.invalidation(2);
    match invalidation.seal(&smk_bsm) {
        Ok(bytes) => {
            n.wire("invalidation LTKM (TS 2, TS low > TS high, no key)", &bytes);
            let r = match n.on_card(&mut card, |c| c.msk_update(&bytes)) {
                Ok(Some(v)) => bsm_verifies(&bytes, &v, &smk_bsm)
                    .map(|_| format!("9000, SEK/PEK {} revoked; the BSM verifies the answer", id_hex(sek_id))),
                Ok(None) => Err("no verification message although V = 1".to_owned()),
                Err(e) => Err(op_failed(&e)),
            };
            n.check("card applies the invalidation LTKM", r);
        }
        Err(e) => n.check("BSM seals an invalidation LTKM", Err(e.to_string())),
    }
    let after = bc.seal(&mut rng, &sek, sek_id, &ltkm_rand, 5, T0 + 50, service_only);
    n.expect_refusal(
        &mut card,
        &format!("card refuses STKM TEK ID 5 (TS {}) under the revoked SEK", T0 + 50),
        |c| c.mtk_generation(&after.bytes),
        0x6985,
        "the key is invalidated",
    );

    // (e) Solicited pull, and the answer to the LTKM Request.
    n.heading("(e) Solicited pull, and the LTKM that answers the terminal's LTKM Request");
    let pull = SolicitedPull {
        csb_id: rng.u32("pull CSB ID"),
        key_domain_id: kd,
        key_group: 1,
        ts: 3,
        rand: rng.bytes("pull RAND"),
        idi: BSM_FQDN.to_owned(),
        idr: b_tid.clone(),
    };
    match pull.seal(&smk_bsm) {
        Ok(bytes) => {
            n.wire("solicited-pull trigger (Key Number 0, no key data)", &bytes);
            let typed = Ltkm::decode(&bytes).map(|l| l.is_solicited_pull());
            let r = match (typed, n.on_card(&mut card, |c| c.msk_update(&bytes))) {
                (Ok(true), Ok(None)) => Ok(
                    "MAC verified and TS 3 fresh (9000, no verification message); the terminal sends an LTKM Request for Key Group 1"
                        .to_owned(),
                ),
                (typed, card) => Err(format!("typed decode {typed:?}, card {:?}", card.map_err(|e| op_failed(&e)))),
            };
            n.check("card recognises the solicited-pull trigger", r);
            n.expect_refusal(
                &mut card,
                "card refuses the same trigger again",
                |c| c.msk_update(&bytes),
                0x9865,
                "TS 3 is no longer fresh",
            );
        }
        Err(e) => n.check("BSM seals a solicited-pull trigger", Err(e.to_string())),
    }
    let sek2_id = SekPekId { key_group: 1, key_number: 2 };
    let sek2 = SekPek::from_bytes(rng.bytes("SEK 2"));
    // P-3: one RAND (and CSB ID) per SEK, the same in the LTKM of every terminal that receives it.
    let sek2_delivery = (rng.u32("SEK 2 CSB ID"), rng.bytes::<16>("SEK 2 RAND"));
    n.demo_key(&format!("SEK {} (Key Group 1, Key Number 2)", id_hex(sek2_id)), sek2.expose_secret());
    let sek2_ltkm = key_ltkm(kd, sek2_id, &sek2, sek2_delivery, 4, &b_tid);
    match sek2_ltkm.seal(&smk_bsm) {
        Ok(bytes) => {
            n.wire(&format!("LTKM for SEK {} (TS 4, CSB ID 0x{:08x})", id_hex(sek2_id), sek2_delivery.0), &bytes);
            let r = match n.on_card(&mut card, |c| c.msk_update(&bytes)) {
                Ok(Some(v)) => {
                    bsm_verifies(&bytes, &v, &smk_bsm).map(|_| "stored; the BSM verifies the answer".to_owned())
                }
                Ok(None) => Err("no verification message although V = 1".to_owned()),
                Err(e) => Err(op_failed(&e)),
            };
            n.check(&format!("card opens the LTKM delivering SEK {}", id_hex(sek2_id)), r);
        }
        Err(e) => n.check("BSM seals the LTKM for SEK 2", Err(e.to_string())),
    }

    // (f) A GBA_ME terminal.
    n.heading("(f) A GBA_ME terminal (Milenage test set 2) receives the same SEK");
    let Some(GbaMeTerminal { mut store, smk: smk_me, b_tid: b_tid_me }) = gba_me(&mut n, &mut net) else {
        return finish(n);
    };
    if let Ok(bytes) = sek2_ltkm.seal(&smk_bsm) {
        n.check(
            "GBA_ME store refuses the LTKM sealed for the first terminal",
            refused(
                store.msk_update(&bytes).map_err(CardOpError::from),
                0x6a88,
                "its MUK of this BSM belongs to another B-TID",
            ),
        );
    }
    let me_ltkm = key_ltkm(kd, sek2_id, &sek2, sek2_delivery, 1, &b_tid_me);
    n.info(format!(
        "LTKM for the GBA_ME terminal: SEK {}, the same RAND and CSB ID 0x{:08x} (P-3), TS 1, IDr = {b_tid_me}",
        id_hex(sek2_id),
        sek2_delivery.0
    ));
    match me_ltkm.seal(&smk_me) {
        Ok(bytes) => {
            n.wire(&format!("LTKM for SEK {} to the GBA_ME terminal", id_hex(sek2_id)), &bytes);
            let r = match store.msk_update(&bytes) {
                Ok(MskUpdate { event: MskUpdateEvent::Stored(id), verification: Some(v), .. }) if id == sek2_id => {
                    bsm_verifies(&bytes, &v, &smk_me).map(|_| {
                        format!("SEK {} stored under SMK = Ks_NAF; the BSM verifies the answer", id_hex(sek2_id))
                    })
                }
                Ok(other) => Err(format!("unexpected outcome {other:?}")),
                Err(e) => Err(sw_text(e.status_word())),
            };
            n.check("GBA_ME store opens its LTKM", r);
        }
        Err(e) => n.check("BSM seals the LTKM for the GBA_ME terminal", Err(e.to_string())),
    }
    let ts = T0 + 60;
    let shared = bc.seal(&mut rng, &sek2, sek2_id, &sek2_delivery.1, 1, ts, service_only);
    n.demo_key(
        "TEK 1 ‖ salt under SEK 00010002",
        &[&shared.tek.expose_secret()[..], &shared.salt.expose_secret()[..]].concat(),
    );
    n.wire(&format!("STKM TEK ID 1 under SEK {}, TS {ts}", id_hex(sek2_id)), &shared.bytes);
    let r = match n.on_card(&mut card, |c| c.mtk_generation(&shared.bytes)) {
        Ok(answer) => {
            clear_tek(&answer, &shared.tek, &shared.salt).map(|()| "TEK ‖ salt match the broadcaster's".to_owned())
        }
        Err(e) => Err(op_failed(&e)),
    };
    n.check("GBA_U terminal: the card opens the STKM", r);
    let r = match store.mtk_generation(&shared.bytes) {
        Ok(MtkAnswer { tek, .. }) => {
            clear_tek(&tek, &shared.tek, &shared.salt).map(|()| "the same TEK ‖ salt on both terminals".to_owned())
        }
        Err(e) => Err(sw_text(e.status_word())),
    };
    n.check("GBA_ME terminal: the store opens the same STKM", r);
    resync(&mut n, &mut net, &mut card, &b_tid);
    bsm::run_bsm(&mut n, &mut net, &mut rng, card, opts.seed);
    finish(n)
}

struct Layer1 {
    smk_bsm: Smk,
    b_tid: String,
    card: CardReader,
}

/// The terminal's Ub configuration for `impi`.
fn terminal(impi: &str, mode: TerminalMode) -> BootstrapConfig {
    BootstrapConfig { bsf_host: BSF.to_owned(), impi: impi.to_owned(), user_agent: "Keycast-demo".to_owned(), mode }
}

/// Provisions `subscriber` so that the BSF's next vector carries `sqn`: SQN_HE is the SQN before
/// it in the BSF's scheme. Returns whether the store took it.
fn provision(n: &mut Narrator, net: &Network, mut subscriber: Subscriber, what: &str, sqn: [u8; 6]) -> bool {
    let step = net.sqn_scheme().step;
    let Some(sqn_he) = milenage::sqn_to_u64(sqn).checked_sub(step) else {
        n.check(&format!("BSF provisions the {what}"), Err(format!("SQN {} is below one step", hex::encode(sqn))));
        return false;
    };
    subscriber.sqn = sqn_he;
    let detail = format!(
        "{}, AMF {}, SQN_HE = {sqn_he:012x}: the next vector carries SQN {}",
        subscriber.impi,
        hex::encode(subscriber.amf),
        hex::encode(sqn)
    );
    let r = net.add_subscriber(&subscriber).map(|()| detail);
    let ok = r.is_ok();
    n.check(&format!("BSF provisions the {what} in its SQLite store"), r);
    ok
}

/// Expects the run's `i`-th 401 to carry `rand` and `autn` (named `autn_name`: AUTN or AUTN*).
fn challenge_is(run: &Run, i: usize, rand: &[u8; 16], autn: &[u8; 16], autn_name: &str) -> Result<String, String> {
    match run.challenges().get(i) {
        Some(Some((r, a))) if r == rand && a == autn => Ok(format!(
            "nonce = base64(RAND ‖ {autn_name} ‖ server data): RAND = {}, {autn_name} = {}",
            hex::encode(r),
            hex::encode(a)
        )),
        Some(Some((r, a))) => Err(format!("RAND {}, {autn_name} {}", hex::encode(r), hex::encode(a))),
        Some(None) => Err("the 401 carries no Digest AKA challenge".to_owned()),
        None => Err(run_error(run)),
    }
}

/// Why a run stopped before the step being checked.
fn run_error(run: &Run) -> String {
    match &run.result {
        Err(e) => format!("the run failed: {e}"),
        Ok(_) => "the run ended without it".to_owned(),
    }
}

/// The BSF's 200: the run succeeded and the BootstrappingInfo names `want_b_tid` and LIFETIME.
fn bootstrapped(run: &Run, want_b_tid: &str) -> Result<String, String> {
    let outcome = run.result.as_ref().map_err(ToString::to_string)?;
    let info = run.bootstrapping_info().ok_or("no BootstrappingInfo in the 200")?;
    let (b_tid, lifetime) = (info.btid(), info.lifetime().to_string());
    if b_tid != want_b_tid || outcome.bootstrapped.b_tid != b_tid {
        return Err(format!("B-TID {b_tid}, expected {want_b_tid}"));
    }
    if lifetime != LIFETIME {
        return Err(format!("key lifetime {lifetime}, expected {LIFETIME}"));
    }
    Ok(format!("rspauth verified by the terminal; BootstrappingInfo: B-TID = {b_tid}, key lifetime {lifetime}"))
}

/// The BSM asks the BSF for its keys of `b_tid` over Zn; the answer must be for `impi` and
/// `gba_type` with the run's lifetime.
fn zn_keys(n: &mut Narrator, net: &Network, b_tid: &str, impi: &str, gba_type: &str) -> Option<ZnNafKeys> {
    n.info(format!(
        "BSM → BSF: POST {ZN_PATH} (Bearer token, from loopback): B-TID, NAF_Id of {BSM_FQDN}, GBA_U-aware"
    ));
    let exchange = net.zn(b_tid);
    n.zn_wire(&exchange);
    let what = "BSF answers the BSM on Zn";
    match exchange.reply {
        Ok(ZnReply::Granted(g)) if g.impi == impi && g.gba_type == gba_type && g.lifetime == LIFETIME => {
            n.check(what, Ok(format!("200: IMPI {}, {}, lifetime {}", g.impi, g.gba_type, g.lifetime)));
            Some(g.keys)
        }
        Ok(ZnReply::Granted(g)) => {
            n.check(what, Err(format!("200 for IMPI {}, {}, lifetime {}", g.impi, g.gba_type, g.lifetime)));
            None
        }
        Ok(ZnReply::Refused { status, error }) => {
            n.check(what, Err(format!("{status} {error}")));
            None
        }
        Err(e) => {
            n.check(what, Err(e));
            None
        }
    }
}

/// (a) AKA with GBA_U on the card through the BSF, then SMK and SRK on both sides (profile P-7).
fn layer1(n: &mut Narrator, net: &mut Network) -> Option<Layer1> {
    n.heading("(a) Layer 1: GBA_U bootstrapping with an MBMS card (Milenage test set 1) through the BSF");
    let k = SubscriberKey::from_bytes(unhex(set1::K));
    let op = Op::from_bytes(unhex(set1::OP));
    let rand: [u8; 16] = unhex(set1::RAND);
    let (sqn, amf): ([u8; 6], [u8; 2]) = (unhex(set1::SQN), unhex(set1::AMF));
    let opc = Opc::from_op(&k, &op);
    n.demo_key("K", k.expose_secret());
    n.demo_key("OPc", opc.expose_secret());
    n.check(
        "OPc computed from OP matches test set 1",
        if opc == Opc::from_bytes(unhex(set1::OPC)) { Ok(set1::OPC.to_owned()) } else { Err("differs".to_owned()) },
    );
    let subscriber = Subscriber {
        impi: IMPI.to_owned(),
        imsi: IMSI.to_owned(),
        k: k.clone(),
        opc: opc.clone(),
        sqn: 0,
        amf,
        gba_type: GbaType::GbaU,
    };
    if !provision(n, net, subscriber, "GBA_U subscriber (test set 1)", sqn) {
        return None;
    }
    // The BSF draws RAND from its seeded source; queueing test set 1's makes its vector the
    // published one.
    net.queue_rand(&rand);
    // The published values, to hold the BSF's messages against.
    let hss = Milenage::new(&k, &opc);
    let vector = hss.all(&rand, sqn, amf);
    let autn = hss.build_autn(sqn, amf, &rand);
    let autn_star = milenage::gba_u_autn_star(&autn, &vector.ik);
    let mut card = insert_card(IMSI, IMPI, "8900100000000000001", k, opc, sqn);
    n.info(format!("terminal → BSF: GET / with Authorization: Digest username=\"{IMPI}\", empty nonce and response"));
    let run = net.bootstrap(&terminal(IMPI, TerminalMode::GbaU), &mut card, None);
    n.transcript(&run);
    n.info(format!(
        "test set 1: RAND = {}, AUTN = {}; GBA_U: AUTN* = {} (MAC* = MAC-A ⊕ Trunc(SHA-1(IK)))",
        hex::encode(rand),
        hex::encode(autn),
        hex::encode(autn_star)
    ));
    n.check("BSF's 401 carries test set 1's RAND and AUTN*", challenge_is(&run, 0, &rand, &autn_star, "AUTN*"));
    match run.answers().first() {
        Some(AkaAnswer::SuccessGba { res }) => {
            n.check(
                "card checks AUTN* (AUTHENTICATE, GBA context, bootstrapping)",
                Ok(format!("MAC* verified, SQN {} fresh; Ks = CK ‖ IK stays in the card", set1::SQN)),
            );
            n.demo_key("RES (GBA_U, LSB flipped)", res.expose_secret());
            n.check(
                "card's RES is test set 1's XRES with its LSB flipped",
                if *res == milenage::flip_res_lsb(&vector.res) {
                    Ok("the terminal answers the Digest challenge with it as the password".to_owned())
                } else {
                    Err("differ".to_owned())
                },
            );
        }
        Some(other) => {
            n.check("card checks AUTN*", Err(format!("unexpected answer {other:?}")));
            return None;
        }
        None => {
            n.check("card checks AUTN*", Err(run_error(&run)));
            return None;
        }
    }
    let b_tid = gba::b_tid(&rand, BSF);
    let accepted = bootstrapped(&run, &b_tid);
    let ok = accepted.is_ok();
    n.check("BSF accepts RES (= XRES, LSB flipped) and answers 200 OK", accepted);
    if !ok {
        return None;
    }
    n.demo_key(
        "Ks = CK ‖ IK (test set 1; the BSF keeps it wrapped in its store, the card its own)",
        gba::ks_from_ck_ik(&vector.ck, &vector.ik).expose_secret(),
    );
    let mut forged = autn_star;
    forged[15] ^= 0x80;
    n.expect_refusal(
        &mut card,
        "card refuses an AUTN* with one bit flipped",
        |c| c.gba_bootstrap(&rand, &forged),
        0x9862,
        "MAC* does not verify",
    );
    let gbabp = n.on_card(&mut card, |c| c.read_gba_bp());
    n.check(
        "EF_GBABP holds the bootstrap (the terminal wrote B-TID and lifetime after the 200)",
        match gbabp {
            Ok(Some(EfGbabp { rand: r, b_tid: Some(t), lifetime: Some(l) }))
                if r == rand && t == b_tid && l == LIFETIME =>
            {
                Ok("RAND (written by the card), B-TID and lifetime".to_owned())
            }
            Ok(other) => Err(format!("EF_GBABP reads {other:?}")),
            Err(e) => Err(op_failed(&e)),
        },
    );
    // NAF keys: the BSM gets them from the BSF over Zn; the card derives its own.
    let (smk_bsm, srk_bsm) = match zn_keys(n, net, &b_tid, IMPI, "gba-u")? {
        ZnNafKeys::U { ks_ext_naf, ks_int_naf: Some(int) } => (Smk::from_bytes(*int.expose_secret()), ks_ext_naf),
        ZnNafKeys::U { ks_int_naf: None, .. } => {
            n.check("Zn gives the GBA_U-aware BSM Ks_int_NAF", Err("only Ks_ext_NAF".to_owned()));
            return None;
        }
        ZnNafKeys::Me(_) => {
            n.check("Zn answers GBA_U keys for a GBA_U session", Err("Ks_NAF (GBA_ME)".to_owned()));
            return None;
        }
    };
    let naf_id = NafId::mbms(BSM_FQDN);
    n.info(format!("NAF_Id = \"{BSM_FQDN}\" ‖ 01 00 00 00 01 = {}", hex::encode(naf_id.as_bytes())));
    n.info("BSM: SMK = Ks_int_NAF and SRK = Ks_ext_NAF, as the BSF sent them (profile P-7, GBA_U with an MBMS card)");
    n.demo_key("SMK = Ks_int_NAF (stays in the card)", smk_bsm.expose_secret());
    let ext_card = match n.on_card(&mut card, |c| c.gba_naf_derivation(naf_id.as_bytes(), IMPI)) {
        Ok(ext) => ext,
        Err(e) => {
            n.check("card derives the NAF keys (AUTHENTICATE, GBA context, NAF derivation)", Err(op_failed(&e)));
            return None;
        }
    };
    n.demo_key("SRK = Ks_ext_NAF", ext_card.expose_secret());
    n.info(format!(
        "HTTP Digest toward the BSM: username {b_tid}, password base64(SRK) = {}",
        BASE64.encode(ext_card.expose_secret())
    ));
    n.check(
        "card's Ks_ext_NAF equals the SRK the BSM got over Zn",
        if srk_bsm.expose_secret() == ext_card.expose_secret() {
            Ok("the card and the BSF hold the same Ks; (b) shows the card's Ks_int_NAF is the BSM's SMK".to_owned())
        } else {
            Err("keys differ".to_owned())
        },
    );
    let want = [EfMukRecord { idr: b_tid.clone(), idi: BSM_FQDN.to_owned(), ts: 0 }];
    let muk = n.on_card(&mut card, |c| c.read_muk_records());
    n.check(
        "card keeps SMK = Ks_int_NAF as the BSM's MUK",
        match muk {
            Ok(muk) if muk == want => Ok(format!("EF_MUK: IDi {BSM_FQDN}, IDr {b_tid}, TS 0")),
            Ok(muk) => Err(format!("EF_MUK reads {muk:?}")),
            Err(e) => Err(op_failed(&e)),
        },
    );
    Some(Layer1 { smk_bsm, b_tid, card })
}

/// The GBA_ME terminal after bootstrapping: its key store, and the BSM's copy of its SMK.
struct GbaMeTerminal {
    store: GbaMeStore,
    smk: Smk,
    b_tid: String,
}

/// (f), first half: AKA through the card's 3G context against the BSF; Ks in the terminal's
/// store, SMK = Ks_NAF and SRK = MRK(Ks_NAF) there (profile P-7, GBA_ME); the BSM gets Ks_NAF
/// over Zn.
fn gba_me(n: &mut Narrator, net: &mut Network) -> Option<GbaMeTerminal> {
    let k = SubscriberKey::from_bytes(unhex(set2::K));
    let opc = Opc::from_bytes(unhex(set2::OPC));
    let rand: [u8; 16] = unhex(set2::RAND);
    let (sqn, amf): ([u8; 6], [u8; 2]) = (unhex(set2::SQN), unhex(set2::AMF));
    n.demo_key("K (test set 2)", k.expose_secret());
    n.demo_key("OPc (test set 2)", opc.expose_secret());
    let subscriber = Subscriber {
        impi: IMPI_ME.to_owned(),
        imsi: IMSI_ME.to_owned(),
        k: k.clone(),
        opc: opc.clone(),
        sqn: 0,
        amf,
        gba_type: GbaType::GbaMe,
    };
    if !provision(n, net, subscriber, "GBA_ME subscriber (test set 2)", sqn) {
        return None;
    }
    net.queue_rand(&rand);
    let hss = Milenage::new(&k, &opc);
    let xres = hss.all(&rand, sqn, amf).res;
    let autn = hss.build_autn(sqn, amf, &rand);
    let mut card = insert_card(IMSI_ME, IMPI_ME, "8900100000000000002", k, opc, sqn);
    let mut store = GbaMeStore::default();
    let run = net.bootstrap(&terminal(IMPI_ME, TerminalMode::GbaMe), &mut card, Some(&mut store));
    n.transcript(&run);
    n.info(format!("test set 2: RAND = {}, AUTN = {} (GBA_ME: plain AUTN)", hex::encode(rand), hex::encode(autn)));
    n.check("BSF's 401 carries test set 2's RAND and AUTN", challenge_is(&run, 0, &rand, &autn, "AUTN"));
    match run.answers().first() {
        Some(AkaAnswer::Success3g { res, ck, ik }) => {
            let vectors = hex::encode(res.expose_secret()) == set2::RES
                && hex::encode(ck.expose_secret()) == set2::CK
                && hex::encode(ik.expose_secret()) == set2::IK;
            n.check(
                "card answers RES, CK and IK (AUTHENTICATE, 3G context)",
                if vectors && *res == xres {
                    Ok(format!("RES {} = XRES, CK and IK of test set 2 leave the card", set2::RES))
                } else {
                    Err("RES, CK or IK differ from test set 2".to_owned())
                },
            );
        }
        Some(other) => {
            n.check("card answers RES, CK and IK", Err(format!("unexpected answer {other:?}")));
            return None;
        }
        None => {
            n.check("card answers RES, CK and IK", Err(run_error(&run)));
            return None;
        }
    }
    let b_tid = gba::b_tid(&rand, BSF);
    let accepted = bootstrapped(&run, &b_tid).and_then(|detail| {
        if store.b_tid() == Some(b_tid.as_str()) {
            Ok(format!("{detail}; the terminal's store keeps Ks = CK ‖ IK under it"))
        } else {
            Err(format!("the GBA_ME store holds B-TID {:?}", store.b_tid()))
        }
    });
    let ok = accepted.is_ok();
    n.check("BSF accepts RES and answers 200 OK", accepted);
    if !ok {
        return None;
    }
    let ks_naf = match zn_keys(n, net, &b_tid, IMPI_ME, "gba-me")? {
        ZnNafKeys::Me(ks_naf) => ks_naf,
        ZnNafKeys::U { .. } => {
            n.check("Zn answers Ks_NAF for a GBA_ME session", Err("GBA_U keys".to_owned()));
            return None;
        }
    };
    let smk = Smk::from_bytes(*ks_naf.expose_secret());
    let srk_bsm = gba::mbms_srk(GbaMode::GbaMe, ks_naf.expose_secret());
    let srk = match store.mbms_naf_keys(BSM_FQDN, IMPI_ME) {
        Ok(srk) => srk,
        Err(e) => {
            n.check("GBA_ME store derives the NAF keys", Err(sw_text(e.status_word())));
            return None;
        }
    };
    n.info("BSM: SMK = Ks_NAF as the BSF sent it, SRK = MRK(Ks_NAF) (profile P-7, GBA_ME)");
    n.demo_key("SMK = Ks_NAF (the BSM's from Zn; the terminal's store derives its own)", smk.expose_secret());
    n.demo_key("SRK = MRK(Ks_NAF)", srk.expose_secret());
    n.check(
        "GBA_ME store and BSM derive the same SRK = MRK(Ks_NAF)",
        if srk == srk_bsm {
            Ok(format!("profile P-7, GBA_ME; SMK = Ks_NAF installed as the MUK of {BSM_FQDN}"))
        } else {
            Err("keys differ".to_owned())
        },
    );
    Some(GbaMeTerminal { store, smk, b_tid })
}

/// (g) The GBA_U terminal bootstraps again after the BSF's SQN_HE fell back below the card's
/// SQN_MS: the card answers AUTS, the BSF resynchronises, and the same run succeeds.
fn resync(n: &mut Narrator, net: &mut Network, card: &mut CardReader, first_b_tid: &str) {
    n.heading("(g) SQN resynchronisation: the GBA_U terminal bootstraps again after the BSF's SQN fell back");
    let hss = Milenage::new(&SubscriberKey::from_bytes(unhex(set1::K)), &Opc::from_bytes(unhex(set1::OPC)));
    let sqn: [u8; 6] = unhex(set1::SQN);
    let step = net.sqn_scheme().step;
    let lowered = milenage::sqn_to_u64(sqn).saturating_sub(step);
    let set_back = net.sqn_he(IMPI).and_then(|he| net.set_sqn_he(IMPI, lowered).map(|()| he));
    match set_back {
        Ok(he) => n.check(
            "BSF's SQN_HE of the GBA_U subscriber is set back",
            Ok(format!(
                "from {he:012x} to {lowered:012x}, as after restoring an old backup: its next vector repeats SQN {}",
                set1::SQN
            )),
        ),
        Err(e) => {
            n.check("BSF's SQN_HE of the GBA_U subscriber is set back", Err(e));
            return;
        }
    }
    let resyncs_before = net.metrics().resyncs;
    let run = net.bootstrap(&terminal(IMPI, TerminalMode::GbaU), card, None);
    n.transcript(&run);
    let challenges = run.challenges();
    let answers = run.answers();
    let sqn_ms = match (challenges.first(), answers.first()) {
        (Some(Some((rand, autn))), Some(AkaAnswer::SyncFailure { auts })) => {
            n.info(format!("BSF: 401 with RAND = {}, AUTN* = {}", hex::encode(rand), hex::encode(autn)));
            let r = match hss.recover_sqn_ms(rand, auts) {
                Ok(sqn_ms) if sqn_ms == sqn => Ok(sqn_ms),
                Ok(sqn_ms) => Err(format!("AUTS carries SQN_MS {}", hex::encode(sqn_ms))),
                Err(e) => Err(format!("AUTS does not verify: {e}")),
            };
            let sqn_ms = r.as_ref().ok().copied();
            n.check(
                "card answers AUTS to a challenge repeating its last SQN",
                r.map(|s| format!("SQN not fresh; AUTS conceals SQN_MS = {} under AK* and MAC-S", hex::encode(s))),
            );
            sqn_ms
        }
        (_, Some(other)) => {
            n.check("card answers AUTS", Err(format!("unexpected answer {other:?}")));
            None
        }
        _ => {
            n.check("card answers AUTS", Err(run_error(&run)));
            None
        }
    };
    let Some(sqn_ms) = sqn_ms else { return };
    let next = milenage::sqn_to_u64(sqn_ms).saturating_add(step);
    let after = challenges.get(1).copied().flatten();
    if let Some((rand, autn)) = after {
        n.info(format!("BSF: 401 with RAND = {}, AUTN* = {}", hex::encode(rand), hex::encode(autn)));
    }
    let resynchronised = match after.map(|(rand, autn)| hss.check_autn_star(&rand, &autn)) {
        _ if !run.sent_auts() => Err("the terminal sent no AUTS".to_owned()),
        None => Err(run_error(&run)),
        Some(Err(e)) => Err(format!("the second challenge's AUTN* does not verify: {e}")),
        Some(Ok(check)) if milenage::sqn_to_u64(check.sqn) != next => {
            Err(format!("the second challenge carries SQN {}", hex::encode(check.sqn)))
        }
        Some(Ok(_)) => match (net.metrics().resyncs, net.sqn_he(IMPI)) {
            (count, Ok(he)) if count == resyncs_before + 1 && he == next => Ok(format!(
                "the BSF recovers SQN_MS = {} from AUTS: its next 401 carries SQN {next:012x} = SQN_MS + {step}, \
                 its resync counter reads {count}",
                hex::encode(sqn_ms)
            )),
            (count, he) => {
                let he = he.map_or_else(|e| e, |v| format!("{v:012x}"));
                Err(format!("resync counter {count}, SQN_HE {he}"))
            }
        },
    };
    n.check("BSF resynchronises SQN from the terminal's AUTS", resynchronised);
    let new_b_tid = match (after, answers.get(1)) {
        (Some((rand, _)), Some(AkaAnswer::SuccessGba { .. })) => {
            let b_tid = gba::b_tid(&rand, BSF);
            let r = bootstrapped(&run, &b_tid).and_then(|detail| match &run.result {
                Ok(outcome) if outcome.attempts == 1 => Ok(format!("one run, two challenges; {detail}")),
                Ok(outcome) => Err(format!("{} runs", outcome.attempts)),
                Err(e) => Err(e.to_string()),
            });
            let ok = r.is_ok();
            n.check("card accepts the new challenge and the BSF answers 200 OK", r);
            ok.then_some(b_tid)
        }
        (_, other) => {
            n.check("card accepts the new challenge", Err(format!("card answered {other:?}")));
            None
        }
    };
    let Some(new_b_tid) = new_b_tid else { return };
    let old = net.zn(first_b_tid);
    n.zn_wire(&old);
    n.check(
        "BSF refuses Zn for the first B-TID",
        match old.reply {
            Ok(ZnReply::Refused { status: 404, error }) if error == "unknown-btid" => {
                Ok("404 unknown-btid: the new run replaced the subscriber's session".to_owned())
            }
            Ok(ZnReply::Refused { status, error }) => Err(format!("{status} {error}")),
            Ok(ZnReply::Granted(_)) => Err("200: the old session still answers".to_owned()),
            Err(e) => Err(e),
        },
    );
    let Some(ZnNafKeys::U { ks_ext_naf, .. }) = zn_keys(n, net, &new_b_tid, IMPI, "gba-u") else { return };
    let naf_id = NafId::mbms(BSM_FQDN);
    let r = match n.on_card(card, |c| c.gba_naf_derivation(naf_id.as_bytes(), IMPI)) {
        Ok(ext) if ext == ks_ext_naf => Ok("the BSM follows the terminal to the new Ks".to_owned()),
        Ok(_) => Err("keys differ".to_owned()),
        Err(e) => Err(op_failed(&e)),
    };
    n.check("card's new Ks_ext_NAF equals the one the BSM got over Zn", r);
}

fn finish(mut n: Narrator) -> DemoReport {
    let total = n.passed + n.failed;
    n.table();
    n.heading(format!("summary: {} of {total} expectations held", n.passed).as_str());
    n.line(if n.failed == 0 { "demo: ok" } else { "demo: FAILED" });
    DemoReport { text: n.out, passed: n.passed, failed: n.failed }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_expectation_holds_for_several_seeds() {
        for seed in [0, 1, 2, 0xdead_beef] {
            let r = run(DemoOptions { seed, show_wire: false });
            assert_eq!(r.failed, 0, "seed {seed}:\n{}", r.text);
            assert!(r.passed >= 130, "{}", r.text);
        }
    }

    #[test]
    fn same_seed_same_output() {
        let a = run(DemoOptions { seed: 7, show_wire: true }).text;
        let b = run(DemoOptions { seed: 7, show_wire: true }).text;
        assert_eq!(a, b);
        assert_ne!(a, run(DemoOptions { seed: 8, show_wire: true }).text);
    }

    #[test]
    fn inside_a_tokio_runtime_it_fails_without_panicking() {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let r = runtime.block_on(async { run(DemoOptions { seed: 1, show_wire: false }) });
        assert_eq!((r.passed, r.failed), (0, 1), "{}", r.text);
        assert!(r.text.ends_with("demo: FAILED\n"), "{}", r.text);
    }

    #[test]
    fn wire_shows_the_apdus() {
        let text = run(DemoOptions { seed: 1, show_wire: true }).text;
        // SELECT of the USIM by AID, then AUTHENTICATE in the GBA context.
        assert!(text.contains("apdu > 00a4040c07a0000000871002"), "{text}");
        assert!(text.contains("apdu > 00880084"), "{text}");
        assert!(!run(DemoOptions { seed: 1, show_wire: false }).text.contains("apdu >"));
    }
}
