//! (h) of `keycast demo`: the real BSM of keycast-bsm on loopback, with two card terminals.
//!
//! Everything here runs on the network's current-thread runtime ([`Network::block_on`]), next to
//! the BSF: the BSM's provisioning routes (Ua Digest, keys from the BSF over Zn) and its admin API,
//! each on a loopback port, its SQLite store in a temporary directory, and its UDP push worker.
//! The terminals are keycast-terminal's [`TerminalShell`]s around the demo's APDU-driven cards.
//!
//! What keeps the run reproducible: one clock for the BSM, the admin API and the terminals, moved
//! only by the demo; key bytes, RANDs and CSB IDs of the admin API's rollovers from the seed; the
//! answers' delivery intents collected by [`CollectedIntents`] and written by the demo at that
//! clock (the service's [`keycast_bsm::http::intents::StoreIntents`] writes them at the wall
//! clock's time, which the narration could not name); push rounds and verification intake stepped by the
//! demo ([`PushWorker::run_once`], [`PushWorker::receive_once`]) instead of the service loop.
//!
//! The two terminals share 127.0.0.1, and a push goes to the registered address on the port of the
//! terminal's interface (profile P-8). So terminal A registers on the OMA BCAST interface and
//! terminal B on the 3GPP MBMS interface, and the worker's two push ports are their sockets'
//! ports: loopback stand-ins for 4359 and 2269.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use keycast_bsm::delivery::{AckOutcome, DeliveryKey, DeliveryState, PushPorts, RetryPolicy, SchedulerConfig, Time};
use keycast_bsm::http::UaGuard;
use keycast_bsm::http::admin::{AdminState, KeyMaterial, NoRandomness, admin_app};
use keycast_bsm::http::broadcaster::{BroadcasterState, broadcaster_app};
use keycast_bsm::http::intents::{IntentReport, IntentWriter};
use keycast_bsm::http::provisioning::{IntentSink, ProvisioningState, SubmitFuture, bsm_app};
use keycast_bsm::push::{Intake, PushConfig, PushWorker};
use keycast_bsm::rng::SeededRandom as BsmRandom;
use keycast_bsm::service::{DeliveryIntent, Provisioning, ProvisioningConfig};
use keycast_bsm::store::sql::SqliteStore;
use keycast_bsm::store::{BsmStore, StoredKey};
use keycast_bsm::ua::{UaAuthenticator, UaConfig};
use keycast_bsm::zn_client::{ZnClient, ZnClientConfig, ZnCredential};
use keycast_card::Card as _;
use keycast_crypto::at_rest::StorageKey;
use keycast_crypto::keys::{Opc, SubscriberKey};
use keycast_gba::bsf::{GbaType, SeededRandom as GbaRandom, Subscriber};
use keycast_gba::client::GbaMode as TerminalMode;
use keycast_gba::client::HttpRequest;
use keycast_gba::client::http::{HttpClient, RetryPolicy as UbRetry, UbTransport as _};
use keycast_mikey::{KeyDomainId, ProtectionAfterReception, SekPekId};
use keycast_provisioning::sprov::{PurchaseItemRef, PurchaseRequestItem, StatusCode};
use keycast_provisioning::time::UtcTime;
use keycast_terminal::ltkm_intake::{Interface, LtkmEvent, bcast_key, on_stkm_refusal};
use keycast_terminal::provisioning::{Answer, ClientConfig, Response};
use keycast_terminal::shell::{ShellConfig, ShellError, TerminalShell};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

use super::network::Network;
use super::{
    BSF, BSM_FQDN, Broadcaster, CardReader, DemoRng, Narrator, UNIX_T0, clear_tek, id_hex, insert_card, op_failed,
    provision, refused, terminal, unhex,
};

/// The subscriber of terminal B (a demo choice in the form of the others).
pub(super) const IMPI_B: &str = "001010000000003@ims.mnc001.mcc001.3gppnetwork.org";
const IMSI_B: &str = "001010000000003";
/// The SQN the BSF's first vector for terminal B carries (any value a step above zero works).
const SQN_B: &str = "000000001000";
/// Key Group of the BSM's service: apart from the groups (a)–(g) left on terminal A's card.
pub(super) const KEY_GROUP: u16 = 3;
/// Lifetime of each SEK the admin API makes, and how long before its end the next one is made.
pub(super) const KEY_LIFETIME: u64 = 7_200;
const KEY_LEAD: u64 = 3_600;
/// Subscription period of the offer.
const PERIOD: u64 = 30 * 86_400;
/// Bound on one wait for a datagram or an HTTP exchange: loopback answers in milliseconds.
pub(super) const WAIT: Duration = Duration::from_secs(5);
/// Bound on the servers' graceful stop.
const STOP_WAIT: Duration = Duration::from_secs(2);
/// Seconds between the NTP and Unix epochs (STKM TS are NTP seconds, profile P-6).
const NTP_UNIX: u64 = 2_208_988_800;

/// The terminal shell around one of the demo's cards.
pub(super) type Shell = TerminalShell<CardReader>;
/// The push worker of the demo: SQLite, keys over Zn, a seeded generator for jitter and pulls.
pub(super) type Worker = PushWorker<SqliteStore, Arc<ZnClient>, BsmRandom>;

/// The demo's one clock for the BSM, its admin API and the terminals (Unix seconds).
#[derive(Clone)]
pub(super) struct DemoClock(Arc<AtomicU64>);

impl DemoClock {
    pub(super) fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
    pub(super) fn set(&self, unix: u64) {
        self.0.store(unix, Ordering::SeqCst);
    }
    fn unix(&self) -> Arc<dyn Fn() -> u64 + Send + Sync> {
        let t = self.0.clone();
        Arc::new(move || t.load(Ordering::SeqCst))
    }
    fn utc(&self) -> Arc<dyn Fn() -> UtcTime + Send + Sync> {
        let t = self.0.clone();
        // The demo's times are all in 2025, well inside what UtcTime holds.
        Arc::new(move || UtcTime::from_unix_seconds(t.load(Ordering::SeqCst)).unwrap_or(UtcTime::MAX))
    }
    pub(super) fn push_time(&self) -> Time {
        Time::from_secs(self.now())
    }
}

/// Key bytes, RAND and CSB ID of the admin API's new keys, from the seed (never for real keys).
struct SeededMaterial {
    seed: [u8; 8],
    calls: AtomicU32,
}

impl KeyMaterial for SeededMaterial {
    fn fill(&self, buf: &mut [u8]) -> Result<(), NoRandomness> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        for (block, chunk) in (0u32..).zip(buf.chunks_mut(32)) {
            let out = keycast_crypto::hmac::hmac_sha256(
                &self.seed,
                &[b"keycast-demo BSM key material ", &call.to_be_bytes(), &block.to_be_bytes()],
            );
            chunk.copy_from_slice(&out[..chunk.len()]);
        }
        Ok(())
    }
}

/// The routes' intent sink: keeps each answer's intents until the demo writes them.
#[derive(Default)]
struct CollectedIntents(Mutex<Vec<DeliveryIntent>>);

impl IntentSink for CollectedIntents {
    fn submit(&self, intents: Vec<DeliveryIntent>) -> SubmitFuture<'_> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).extend(intents);
        Box::pin(std::future::ready(Ok(())))
    }
}

impl CollectedIntents {
    fn take(&self) -> Vec<DeliveryIntent> {
        core::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// One server task and the sender that stops it.
pub(super) struct Served {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Served {
    pub(super) async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(STOP_WAIT, self.task).await;
    }
}

/// Serves `app` on `listener` with the peer address available (P-8, and the admin API's loopback
/// check), until stopped.
fn serve(listener: TcpListener, app: axum::Router) -> Served {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let service = app.into_make_service_with_connect_info::<SocketAddr>();
        let _ = axum::serve(listener, service)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
    });
    Served { stop, task }
}

/// The running BSM.
pub(super) struct Bsm {
    pub(super) store: SqliteStore,
    /// The provisioning listener (a restarting terminal's state names it, section (l)).
    pub(super) addr: SocketAddr,
    /// The admin listener, which also serves the broadcaster API (section (i)).
    pub(super) admin_addr: SocketAddr,
    admin_token: Zeroizing<String>,
    /// The broadcaster API's token (section (i)).
    pub(super) broadcaster_token: Zeroizing<String>,
    intents: Arc<CollectedIntents>,
    writer: IntentWriter<SqliteStore, BsmRandom>,
    /// Its Zn client (section (k) seals a key under a terminal's SMK from it).
    pub(super) keys: Arc<ZnClient>,
    pub(super) clock: DemoClock,
    servers: Vec<Served>,
    /// The provisioning routes' Ua guard (section (n) serves the routes over mutual TLS too).
    guard: Arc<UaGuard>,
    /// The routes' intent sink.
    sink: Arc<CollectedIntents>,
}

/// 32 bytes for one of the BSM's fixed secrets, from the demo seed.
fn secret(seed: u64, label: &str) -> [u8; 32] {
    keycast_crypto::hmac::hmac_sha256(&seed.to_be_bytes(), &[b"keycast-demo BSM ", label.as_bytes()])
}

/// The scheduler of the demo: no spread, jitter or rate limit, so a push is due the moment its
/// intent is written; a retry only after a day, so that no retry falls inside the demo's few
/// hours and every datagram narrated is one the demo asked for.
fn scheduler(ports: PushPorts) -> SchedulerConfig {
    SchedulerConfig {
        spread_window: Duration::ZERO,
        jitter: Duration::ZERO,
        rate: None,
        retry: RetryPolicy {
            initial: Duration::from_secs(86_400),
            factor: 2,
            max_backoff: Duration::from_secs(86_400),
            max_attempts: 2,
            solicited_pull: true,
            pull_wait: Duration::from_secs(3_600),
        },
        ports,
    }
}

impl Bsm {
    /// Opens the store and serves the provisioning routes and the admin API on loopback.
    async fn start(
        seed: u64,
        bsf: SocketAddr,
        zn_token: Zeroizing<String>,
        clock: DemoClock,
    ) -> Result<(Self, tempfile::TempDir), String> {
        let dir = tempfile::Builder::new()
            .prefix("keycast-demo-bsm-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        let storage = secret(seed, "storage key");
        let storage = StorageKey::from_bytes(core::array::from_fn(|i| storage[i]));
        let store = SqliteStore::open(dir.path().join("bsm.db"), storage).await.map_err(|e| e.to_string())?;
        let keys = Arc::new(ZnClient::new(ZnClientConfig::new(
            &bsf.to_string(),
            BSF,
            BSM_FQDN,
            ZnCredential::Bearer(zn_token),
        )));
        let authenticator =
            UaAuthenticator::new(&UaConfig::new(BSM_FQDN, secret(seed, "Ua secret"))).map_err(|e| e.to_string())?;
        // No key cache: a B-TID the BSF replaced is refused at once (the cache would serve it
        // until its lifetime ends), and the demo's terminals bootstrap more than once.
        let guard = Arc::new(UaGuard::new(authenticator, keys.clone()).with_clock(clock.unix()));
        let intents = Arc::new(CollectedIntents::default());
        let state =
            ProvisioningState::new(Provisioning::new(store.clone(), ProvisioningConfig::new(BSM_FQDN)), guard.clone())
                .with_clock(clock.unix())
                .with_intents(intents.clone());
        let admin_token = Zeroizing::new(hex::encode(&secret(seed, "admin token")[..16]));
        let material = SeededMaterial { seed: seed.to_be_bytes(), calls: AtomicU32::new(0) };
        let admin = AdminState::new(store.clone(), admin_token.clone())
            .with_clock(clock.unix())
            .with_material(Arc::new(material));
        let broadcaster_token = Zeroizing::new(hex::encode(&secret(seed, "broadcaster token")[..16]));
        let broadcaster = BroadcasterState::new(store.clone(), broadcaster_token.clone()).with_clock(clock.unix());
        let bind = |what: &'static str| async move {
            let l = TcpListener::bind("127.0.0.1:0").await.map_err(|e| format!("{what} on loopback: {e}"))?;
            let a = l.local_addr().map_err(|e| format!("{what} on loopback: {e}"))?;
            Ok::<_, String>((l, a))
        };
        let (listener, addr) = bind("provisioning").await?;
        let (admin_listener, admin_addr) = bind("admin API").await?;
        let servers = vec![
            serve(listener, bsm_app(Arc::new(state))),
            serve(admin_listener, admin_app(Arc::new(admin)).merge(broadcaster_app(Arc::new(broadcaster)))),
        ];
        // The writer's scheduler only draws jitter, which the demo's scheduler has none of.
        let writer = IntentWriter::new(store.clone(), scheduler(PushPorts::default()), BsmRandom::new(seed));
        let sink = intents.clone();
        let bsm = Bsm {
            store,
            addr,
            admin_addr,
            admin_token,
            broadcaster_token,
            intents,
            writer,
            keys,
            clock,
            servers,
            guard,
            sink,
        };
        Ok((bsm, dir))
    }

    /// Serves the provisioning routes once more on a loopback port over TLS with client
    /// certificates required, asking for the BCAST_Client_ID at Registration (section (n)).
    pub(super) async fn serve_mutual_tls(&self, tls: rustls::ServerConfig) -> Result<(SocketAddr, Served), String> {
        let state = ProvisioningState::new(
            Provisioning::new(self.store.clone(), ProvisioningConfig::new(BSM_FQDN)),
            self.guard.clone(),
        )
        .with_clock(self.clock.unix())
        .with_intents(self.sink.clone())
        .with_client_id_policy(keycast_bsm::client_id::BcastClientIdPolicy::Request);
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| format!("TLS listener: {e}"))?;
        let addr = listener.local_addr().map_err(|e| format!("TLS listener: {e}"))?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(keycast_bsm::http::tls::serve(
            listener,
            bsm_app(Arc::new(state)),
            Some(Arc::new(tls)),
            async {
                let _ = stopped.await;
            },
        ));
        Ok((addr, Served { stop, task }))
    }

    async fn stop(self) {
        for s in self.servers {
            s.stop().await;
        }
        self.store.close().await;
    }

    /// One admin API call: (status, body).
    pub(super) async fn admin(&self, method: &str, path: &str, body: &str) -> Result<(u16, String), String> {
        let request = HttpRequest {
            method: method.to_owned(),
            uri: path.to_owned(),
            headers: vec![
                ("Host".to_owned(), BSM_FQDN.to_owned()),
                ("Content-Type".to_owned(), "application/json".to_owned()),
                ("Authorization".to_owned(), format!("Bearer {}", self.admin_token.as_str())),
            ],
            body: body.as_bytes().to_vec(),
        };
        let mut client = HttpClient::plain(self.admin_addr.to_string()).with_timeout(WAIT);
        let r = client.send(&request).await.map_err(|e| format!("admin API: {e}"))?;
        Ok((r.status, String::from_utf8_lossy(&r.body).into_owned()))
    }

    /// Writes the intents the routes collected since the last call, at the demo's clock.
    pub(super) async fn write_intents(&self) -> Result<IntentReport, String> {
        self.writer.write(self.intents.take(), self.clock.push_time()).await.map_err(|e| e.to_string())
    }

    /// The SEK as the store holds it now (the broadcaster's read, with its RAND).
    async fn sek(&self, id: SekPekId) -> Result<StoredKey, String> {
        match self.store.key(id, self.clock.now()).await {
            Ok(Some(k)) => Ok(k),
            Ok(None) => Err(format!("the store holds no SEK {}", id_hex(id))),
            Err(e) => Err(e.to_string()),
        }
    }
}

pub(super) fn ntp(unix: u64) -> u32 {
    // The demo's clock stays within hours of T0, far inside the first NTP era.
    u32::try_from(unix + NTP_UNIX).unwrap_or(u32::MAX)
}

/// Prints, with `--wire`, the APDUs a shell operation exchanged with its card.
pub(super) fn shell_apdus(n: &mut Narrator, shell: &mut Shell) {
    let log = core::mem::take(&mut shell.card_mut().transport_mut().log);
    if n.show_wire {
        for (command, answer) in log {
            n.info(format!("  apdu > {}", hex::encode(command)));
            n.info(format!("  apdu < {}", hex::encode(answer)));
        }
    }
}

/// A shell for `card`, bootstrapping as `impi` and registering on `interface`, whose one LTKM
/// socket is a loopback port of that interface.
async fn new_shell(
    bsm: &Bsm,
    bsf: SocketAddr,
    card: CardReader,
    impi: &str,
    interface: Interface,
    rng: &mut DemoRng,
) -> Result<Shell, String> {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    new_shell_at((bsm, bsm.addr), bsf, card, impi, (interface, loopback), demo_client(), rng).await
}

/// The terminals' provisioning client configuration.
pub(super) fn demo_client() -> ClientConfig {
    ClientConfig::new(BSM_FQDN, "Keycast-demo")
}

/// [`new_shell`] toward the BSM's listener at `addr`, with the LTKM socket bound to `loopback` and `client`'s
/// configuration (a terminal restarting from its state file, section (l); over TLS, (n)).
pub(super) async fn new_shell_at(
    (bsm, addr): (&Bsm, SocketAddr),
    bsf: SocketAddr,
    card: CardReader,
    impi: &str,
    (interface, loopback): (Interface, SocketAddr),
    client: ClientConfig,
    rng: &mut DemoRng,
) -> Result<Shell, String> {
    let mut config = ShellConfig::new(&addr.to_string(), &bsf.to_string(), terminal(impi, TerminalMode::GbaU), client);
    config.registration_interface = interface;
    config.oma_bcast_udp = (interface == Interface::OmaBcast).then_some(loopback);
    config.mbms_udp = (interface == Interface::Mbms).then_some(loopback);
    config.http_timeout = WAIT;
    // One run: a failure must show, not be retried away.
    config.bootstrap_retry = UbRetry { attempts: 1, backoff: Duration::ZERO };
    let cnonces = GbaRandom::new(rng.bytes("terminal cnonces"));
    TerminalShell::new(config, card, bsm.clock.utc(), Box::new(cnonces)).await.map_err(|e| e.to_string())
}

/// The LTKMs of an answer: each shown (with `--wire`) and each the card took, for `want`.
pub(super) fn answer_ltkms(
    n: &mut Narrator,
    what: &str,
    answer: &Answer,
    want: &[SekPekId],
    kd: KeyDomainId,
) -> Result<String, String> {
    for bytes in answer.response.ltkms() {
        n.wire(&format!("LTKM in the {what}"), bytes);
    }
    let events: Vec<Option<LtkmEvent>> =
        answer.ltkms.iter().map(|r| r.as_ref().ok().map(|r| r.event.clone())).collect();
    let expected: Vec<Option<LtkmEvent>> =
        want.iter().map(|id| Some(LtkmEvent::Accepted { key: bcast_key(kd, *id) })).collect();
    if events == expected {
        let ids: Vec<String> = want.iter().map(|id| id_hex(*id)).collect();
        Ok(format!("V = 0 (the answer is the acknowledgement); the card stores SEK {}", ids.join(" and ")))
    } else {
        Err(format!("the card's outcomes: {:?}", answer.ltkms))
    }
}

pub(super) fn status_of(answer: &Result<Answer, ShellError>) -> Result<&Answer, String> {
    answer.as_ref().map_err(|e| e.to_string())
}

/// (h): see the module docs. `card_a` is the card of (a)–(g).
pub(super) fn run_bsm(n: &mut Narrator, net: &mut Network, rng: &mut DemoRng, card_a: CardReader, seed: u64) {
    n.heading("(h) The real BSM on loopback: admin API, two card terminals, pushes over UDP, rollover, unsubscribe");
    let k = SubscriberKey::from_bytes(rng.bytes("terminal B K"));
    let opc = Opc::from_bytes(rng.bytes("terminal B OPc"));
    n.demo_key("K of terminal B's subscriber (seeded)", k.expose_secret());
    n.demo_key("OPc of terminal B's subscriber (seeded)", opc.expose_secret());
    let sqn: [u8; 6] = unhex(SQN_B);
    let subscriber = Subscriber {
        impi: IMPI_B.to_owned(),
        imsi: IMSI_B.to_owned(),
        k: k.clone(),
        opc: opc.clone(),
        sqn: 0,
        amf: unhex(super::set1::AMF),
        gba_type: GbaType::GbaU,
    };
    if !provision(n, net, subscriber, "GBA_U subscriber of terminal B", sqn) {
        return;
    }
    let card_b = insert_card(IMSI_B, IMPI_B, "8900100000000000003", k, opc, sqn);
    let (bsf, zn_token) = (net.bsf_addr(), net.zn_token());
    net.block_on(scenario(n, rng, seed, bsf, zn_token, card_a, card_b));
}

async fn scenario(
    n: &mut Narrator,
    rng: &mut DemoRng,
    seed: u64,
    bsf: SocketAddr,
    zn_token: Zeroizing<String>,
    card_a: CardReader,
    card_b: CardReader,
) {
    let clock = DemoClock(Arc::new(AtomicU64::new(UNIX_T0)));
    let (bsm, dir) = match Bsm::start(seed, bsf, zn_token, clock.clone()).await {
        Ok(started) => started,
        Err(e) => {
            n.check("BSM starts on 127.0.0.1", Err(e));
            return;
        }
    };
    n.check(
        "BSM serves provisioning (/sprov, /keymanagement) and its admin API on 127.0.0.1:<port>",
        Ok("keycast-bsm over SQLite in a temporary directory; Ua Digest with keys from the BSF over Zn; clock at T0"
            .to_owned()),
    );
    let shells = async {
        let a = new_shell(&bsm, bsf, card_a, super::IMPI, Interface::OmaBcast, rng).await?;
        let b = new_shell(&bsm, bsf, card_b, IMPI_B, Interface::Mbms, rng).await?;
        let socket = UdpSocket::bind("127.0.0.1:0").await.map_err(|e| format!("push socket: {e}"))?;
        let ports = PushPorts {
            oma_bcast: a.udp_addr(Interface::OmaBcast).map_or(0, |a| a.port()),
            mbms: b.udp_addr(Interface::Mbms).map_or(0, |a| a.port()),
        };
        let mut config = PushConfig::new("keycast-demo", BSM_FQDN);
        config.scheduler = scheduler(ports);
        let worker = PushWorker::new(bsm.store.clone(), bsm.keys.clone(), config, socket, BsmRandom::new(seed ^ 1))
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((a, b, worker))
    };
    match shells.await {
        Ok((mut a, mut b, worker)) => {
            n.check(
                "two terminal shells (keycast-terminal) and the BSM's push worker are up",
                Ok("A: the card of (a), OMA BCAST socket; B: a new card, MBMS socket; the push ports are theirs"
                    .to_owned()),
            );
            let failed = n.failed;
            walk(n, rng, &bsm, &worker, &mut a, &mut b).await;
            // (i) runs on what (h) left: the BSM, its push worker and terminal B.
            if n.failed == failed {
                super::stream::run_stream(n, rng, &bsm, &worker, &mut b).await;
            }
            // (j) on the same BSM, with terminal A (its basic subscription ended in (h)).
            if n.failed == failed {
                super::ppv::run_ppv(n, rng, &bsm, &mut a).await;
            }
            // (k) with terminal A: its own key, sealed on the BSM's side (see the module).
            if n.failed == failed {
                super::playback::run_playback(n, rng, &bsm, &mut a).await;
            }
            // (l) terminal B restarts from its card and state while a key rolls over.
            let mut b = if n.failed == failed {
                super::reboot::run_reboot(n, rng, &bsm, &worker, bsf, b).await
            } else {
                Some(b)
            };
            // (m) the restarted B buys a short program and deregisters after it ended.
            if let Some(b) = b.as_mut()
                && n.failed == failed
            {
                super::purge::run_purge(n, &bsm, b).await;
            }
            // (n) B's card in a device with a client certificate, toward the BSM over mutual TLS.
            if n.failed == failed
                && let Some(b) = b.take()
            {
                super::client_id::run_client_id(n, rng, &bsm, bsf, b).await;
            }
            // The shells hold keep-alive connections to the BSM: closed before the servers stop.
            drop((a, b, worker));
        }
        Err(e) => n.check("terminal shells and push worker start", Err(e)),
    }
    bsm.stop().await;
    drop(dir);
}

/// Steps of (h) after everything started.
async fn walk(n: &mut Narrator, rng: &mut DemoRng, bsm: &Bsm, worker: &Worker, a: &mut Shell, b: &mut Shell) {
    let kd = KeyDomainId::from_mcc_mnc("001", "01").expect("constant MCC/MNC");
    let sek1 = SekPekId { key_group: KEY_GROUP, key_number: 1 };
    let sek2 = SekPekId { key_group: KEY_GROUP, key_number: 2 };
    if !catalogue(n, bsm, sek1).await {
        return;
    }
    // Power-on: both terminals bootstrap; nothing is bought yet, so nothing to register.
    for (name, shell) in [("A", &mut *a), ("B", &mut *b)] {
        let r = shell.connect().await;
        shell_apdus(n, shell);
        let r = match (r, shell.client().b_tid()) {
            (Ok(None), Some(b_tid)) => {
                Ok(format!("bootstrapped through the BSF: B-TID {b_tid}; nothing bought, nothing to register"))
            }
            (Ok(Some(_)), _) => Err("it registered, with nothing bought".to_owned()),
            (Ok(None), None) => Err("no B-TID".to_owned()),
            (Err(e), _) => Err(e.to_string()),
        };
        let ok = r.is_ok();
        n.check(&format!("terminal {name} powers on"), r);
        if !ok {
            return;
        }
    }
    let item = PurchaseItemRef::new("basic", Some("basic-month"));
    let until = UtcTime::from_unix_seconds(bsm.clock.now() + PERIOD).ok();
    for (name, shell) in [("A", &mut *a), ("B", &mut *b)] {
        let answer = shell.subscribe(vec![(PurchaseRequestItem { item: item.clone(), price: None }, until)]).await;
        shell_apdus(n, shell);
        let r = status_of(&answer).and_then(|answer| match &answer.response {
            Response::Service(s) if s.status == StatusCode::Success => {
                answer_ltkms(n, "ServiceResponse", answer, &[sek1], kd)
            }
            other => Err(format!("answer {other:?}")),
        });
        let ok = r.is_ok();
        n.check(&format!("terminal {name} subscribes (ServiceRequest basic / basic-month, Digest with its SRK)"), r);
        if !ok {
            return;
        }
    }
    // The answers only registered the terminals and closed nothing: no push is queued.
    match bsm.write_intents().await {
        Ok(r) if r.queued == 0 => n.info(
            "BSM: both terminals registered implicitly (OMA BCAST); no push queued, the keys went in the answers",
        ),
        Ok(r) => n.check("no push after the subscriptions", Err(format!("{r:?}"))),
        Err(e) => n.check("BSM writes the answers' intents", Err(e)),
    }
    // Terminal B moves to the MBMS interface: its keys are pushed, not answered.
    let r = b.connect().await;
    shell_apdus(n, b);
    let r = match r {
        Ok(Some(answer)) => match &answer.response {
            Response::MbmsRegister(reg)
                if !reg.responses.is_empty() && reg.responses.iter().all(|s| s.response_code.is_success()) =>
            {
                Ok("200 for its service; the MBMS answer carries status codes only".to_owned())
            }
            other => Err(format!("answer {other:?}")),
        },
        Ok(None) => Err("nothing registered".to_owned()),
        Err(e) => Err(e.to_string()),
    };
    n.check("terminal B registers on the 3GPP MBMS interface", r);
    if !push_and_verify(n, bsm, worker, b, "B", &[sek1], kd, "the card stores it").await {
        return;
    }
    // The broadcaster: STKMs under the SEK the store holds.
    let bc = Broadcaster { csb_id: rng.u32("BSM STKM CSB ID"), key_domain_id: kd };
    let service_only = Some(ProtectionAfterReception::ServiceProtectionOnly);
    let Ok(stored1) = broadcaster_key(n, bsm, sek1).await else { return };
    let ts = ntp(bsm.clock.now() + 60);
    let st = bc.seal(rng, &stored1.key, sek1, &stored1.rand, 1, ts, service_only);
    n.wire(&format!("STKM TEK ID 1 under SEK {}, TS {ts}", id_hex(sek1)), &st.bytes);
    for (name, shell) in [("A", &mut *a), ("B", &mut *b)] {
        let r = match shell.card_mut().mtk_generation(&st.bytes) {
            Ok(answer) => {
                clear_tek(&answer, &st.tek, &st.salt).map(|()| "TEK ‖ salt match the broadcaster's".to_owned())
            }
            Err(e) => Err(op_failed(&e)),
        };
        shell_apdus(n, shell);
        n.check(&format!("terminal {name}'s card opens STKM TEK ID 1 under SEK {}", id_hex(sek1)), r);
    }

    // Rollover.
    bsm.clock.set(UNIX_T0 + KEY_LEAD);
    n.info(format!("clock: T0 + {KEY_LEAD} s, SEK {} has {} s left", id_hex(sek1), KEY_LIFETIME - KEY_LEAD));
    let r = rollover(bsm, sek2, UNIX_T0 + KEY_LIFETIME).await;
    let ok = r.is_ok();
    n.check("operator: rollover of Key Group 3 makes the next SEK (admin API)", r);
    if !ok {
        return;
    }
    let answer = a.reconnected().await;
    shell_apdus(n, a);
    let answer = answer.map_err(|e| e.to_string()).and_then(|a| a.ok_or_else(|| "nothing registered".to_owned()));
    let r = answer.as_ref().map_err(Clone::clone).and_then(|answer| match &answer.response {
        Response::Registration(reg) if reg.status == StatusCode::Success => {
            answer_ltkms(n, "RegistrationResponse", answer, &[sek1, sek2], kd)
        }
        other => Err(format!("answer {other:?}")),
    });
    n.check("terminal A registers again (OMA BCAST RegistrationRequest): the answer brings the next SEK", r);
    match bsm.write_intents().await {
        Ok(r) if r.queued == 0 => {}
        Ok(r) => n.check("no push after A's registration", Err(format!("{r:?}"))),
        Err(e) => n.check("BSM writes the answer's intents", Err(e)),
    }
    let r = b.reconnected().await;
    shell_apdus(n, b);
    let r = match (r, bsm.write_intents().await) {
        (Ok(Some(_)), Ok(report)) if report.queued == 2 => {
            Ok("two pushes queued: SEK 00030001 again and SEK 00030002".to_owned())
        }
        (Ok(Some(_)), Ok(report)) => Err(format!("{report:?}")),
        (Ok(None), _) => Err("nothing registered".to_owned()),
        (Err(e), _) => Err(e.to_string()),
        (_, Err(e)) => Err(e),
    };
    n.check("terminal B registers again on the MBMS interface", r);
    let r = match worker.run_once(bsm.clock.push_time()).await {
        Ok(round) if round.pushed == 2 => {
            Ok("two LTKMs (V = 1) to B's socket, which B does not read: it was out of coverage".to_owned())
        }
        Ok(round) => Err(format!("{round:?}")),
        Err(e) => Err(e.to_string()),
    };
    n.check("push worker sends B both keys over UDP", r);

    // SEK 2's window opens; the broadcaster switches.
    bsm.clock.set(UNIX_T0 + KEY_LIFETIME + 60);
    n.info(format!("clock: T0 + {} s, inside SEK {}'s window", KEY_LIFETIME + 60, id_hex(sek2)));
    let Ok(stored2) = broadcaster_key(n, bsm, sek2).await else { return };
    let ts = ntp(bsm.clock.now());
    let st = bc.seal(rng, &stored2.key, sek2, &stored2.rand, 1, ts, service_only);
    n.wire(&format!("STKM TEK ID 1 under SEK {}, TS {ts}", id_hex(sek2)), &st.bytes);
    let r = match a.card_mut().mtk_generation(&st.bytes) {
        Ok(answer) => clear_tek(&answer, &st.tek, &st.salt).map(|()| "TEK ‖ salt match the broadcaster's".to_owned()),
        Err(e) => Err(op_failed(&e)),
    };
    shell_apdus(n, a);
    n.check(&format!("terminal A's card opens STKM TEK ID 1 under SEK {}", id_hex(sek2)), r);
    let refusal = b.card_mut().mtk_generation(&st.bytes);
    shell_apdus(n, b);
    let missing = match &refusal {
        Err(e) => on_stkm_refusal(&st.bytes, e),
        Ok(_) => None,
    };
    n.check(
        &format!("terminal B's card refuses it under SEK {}", id_hex(sek2)),
        refused(refusal, 0x6a88, "B missed the push that carried the key"),
    );
    let Some(missing) = missing else { return };
    let answer = b.request_keys(Interface::OmaBcast, &[missing]).await;
    shell_apdus(n, b);
    let r = status_of(&answer).and_then(|answer| match &answer.response {
        Response::Ltkm(l) if l.status == StatusCode::Success => answer_ltkms(n, "LTKMResponse", answer, &[sek2], kd),
        other => Err(format!("answer {other:?}")),
    });
    n.check(&format!("terminal B sends an LTKM Request for SEK {}", id_hex(sek2)), r);
    n.check(
        "BSM closes B's pushed copy of that key",
        match bsm.write_intents().await {
            Ok(r) if r.acknowledged == 1 && r.queued == 0 => {
                Ok("the answer carried the key: the delivery row is acknowledged, no retry".to_owned())
            }
            Ok(r) => Err(format!("{r:?}")),
            Err(e) => Err(e),
        },
    );
    // B's card already held SEK 1, so the copy pushed with SEK 2 just waits for its retry.
    let copy = DeliveryKey { terminal: IMPI_B.to_owned(), key_domain_id: kd, sek_pek_id: sek1, version: 2 };
    n.check(
        &format!("B's missed push of SEK {} stays open for a retry", id_hex(sek1)),
        match bsm.store.delivery(&copy).await {
            Ok(Some((_, row))) if matches!(row.state, DeliveryState::Sent { attempt: 1, .. }) => Ok(format!(
                "delivery version 2: sent once, unanswered; the worker tries again after {} s, then sends a solicited pull",
                scheduler(PushPorts::default()).retry.initial.as_secs()
            )),
            Ok(other) => Err(format!("{other:?}")),
            Err(e) => Err(e.to_string()),
        },
    );
    let r = match b.card_mut().mtk_generation(&st.bytes) {
        Ok(answer) => clear_tek(&answer, &st.tek, &st.salt).map(|()| "the same TEK ‖ salt as on terminal A".to_owned()),
        Err(e) => Err(op_failed(&e)),
    };
    shell_apdus(n, b);
    n.check("terminal B's card now opens the STKM", r);

    // Terminal A leaves.
    let request = a.client_mut().unsubscribe(Some(vec![PurchaseItemRef::new("basic", None)]));
    let answer = a.execute(request).await;
    shell_apdus(n, a);
    let r = status_of(&answer).and_then(|answer| match &answer.response {
        Response::Unsubscribe(u) if u.status == StatusCode::Success => Ok(()),
        other => Err(format!("answer {other:?}")),
    });
    let r = match (r, bsm.write_intents().await) {
        (Ok(()), Ok(report)) if report.queued == 1 => Ok(format!(
            "success; one push queued: the invalidation of SEK {} (no other purchase needs it)",
            id_hex(sek2)
        )),
        (Ok(()), Ok(report)) => Err(format!("{report:?}")),
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    n.check("terminal A unsubscribes (UnsubscribeRequest basic)", r);
    if !push_and_verify(n, bsm, worker, a, "A", &[sek2], kd, "the card applies the invalidation").await {
        return;
    }
    let st = bc.seal(rng, &stored2.key, sek2, &stored2.rand, 2, ts + 10, service_only);
    let r = a.card_mut().mtk_generation(&st.bytes);
    shell_apdus(n, a);
    n.check(
        &format!("terminal A's card refuses STKM TEK ID 2 under SEK {}", id_hex(sek2)),
        refused(r, 0x6985, "the key is invalidated"),
    );
    let r = match b.card_mut().mtk_generation(&st.bytes) {
        Ok(answer) => {
            clear_tek(&answer, &st.tek, &st.salt).map(|()| "B is still subscribed: TEK ‖ salt match".to_owned())
        }
        Err(e) => Err(op_failed(&e)),
    };
    shell_apdus(n, b);
    n.check("terminal B's card opens the same STKM", r);
    let answer = a.request_keys(Interface::OmaBcast, &[bcast_key(kd, sek2)]).await;
    shell_apdus(n, a);
    let r = status_of(&answer).and_then(|answer| match &answer.response {
        Response::Ltkm(l) if l.status == StatusCode::NoSubscription && answer.ltkms.is_empty() => {
            Ok("NoSubscription, no LTKM".to_owned())
        }
        other => Err(format!("answer {other:?}")),
    });
    n.check(&format!("BSM refuses terminal A's LTKM Request for SEK {}", id_hex(sek2)), r);
}

/// The operator sets up the catalogue through the admin API and makes the first SEK.
async fn catalogue(n: &mut Narrator, bsm: &Bsm, sek1: SekPekId) -> bool {
    let calls = [
        (
            "/admin/v1/services/news",
            format!(r#"{{"name":"News","mcc":"001","mnc":"01","key_group":{KEY_GROUP},"streaming":true}}"#),
        ),
        ("/admin/v1/purchase-items/basic", r#"{"name":"Basic","services":["news"]}"#.to_owned()),
        (
            "/admin/v1/offers/basic-month",
            format!(
                r#"{{"item":"basic","amount":"4.99","currency":"EUR","kind":"subscription","period_secs":{PERIOD}}}"#
            ),
        ),
    ];
    let r = admin_puts(bsm, &calls).await;
    let ok = r.is_ok();
    n.check(
        "operator: catalogue through the admin API (bearer token, from loopback)",
        r.map(|()| "service news (Key Group 3, streaming), item basic, offer basic-month (subscription, 30 days, 4.99 EUR): 204 each".to_owned()),
    );
    if !ok {
        return false;
    }
    let r = rollover(bsm, sek1, UNIX_T0).await;
    let ok = r.is_ok();
    n.check("operator: rollover of the empty Key Group 3 makes its first SEK (admin API)", r);
    ok
}

/// `PUT`s each `(path, body)` through the admin API in order; stops at the first answer other
/// than 204.
pub(super) async fn admin_puts(bsm: &Bsm, calls: &[(&str, String)]) -> Result<(), String> {
    for (path, body) in calls {
        match bsm.admin("PUT", path, body).await? {
            (204, _) => {}
            (status, body) => return Err(format!("PUT {path}: {status} {body}")),
        }
    }
    Ok(())
}

/// `POST …/rollover`; expects 201 for `want`, valid from `from` for KEY_LIFETIME.
pub(super) async fn rollover(bsm: &Bsm, want: SekPekId, from: u64) -> Result<String, String> {
    let body = format!(r#"{{"mcc":"001","mnc":"01","key_lifetime_secs":{KEY_LIFETIME},"lead_secs":{KEY_LEAD}}}"#);
    let (status, answer) = bsm.admin("POST", &format!("/admin/v1/key-groups/{KEY_GROUP}/rollover"), &body).await?;
    let json: serde_json::Value = serde_json::from_str(&answer).map_err(|e| format!("{status}: {e}"))?;
    let until = from + KEY_LIFETIME;
    let made = (json["key_group"].as_u64(), json["key_number"].as_u64(), json["from"].as_u64(), json["until"].as_u64());
    if status == 201 && made == (Some(want.key_group.into()), Some(want.key_number.into()), Some(from), Some(until)) {
        Ok(format!(
            "201: SEK {}, window [T0 + {} s, T0 + {} s), key bytes, RAND and CSB ID from the seeded source",
            id_hex(want),
            from - UNIX_T0,
            until - UNIX_T0
        ))
    } else {
        Err(format!("{status} {answer}"))
    }
}

/// The broadcaster reads the SEK (and its RAND) from the BSM's store.
pub(super) async fn broadcaster_key(n: &mut Narrator, bsm: &Bsm, id: SekPekId) -> Result<StoredKey, ()> {
    match bsm.sek(id).await {
        Ok(k) => {
            n.demo_key(&format!("SEK {} (broadcaster, from the BSM's store)", id_hex(id)), k.key.expose_secret());
            Ok(k)
        }
        Err(e) => {
            n.check(&format!("broadcaster gets SEK {} from the BSM's store", id_hex(id)), Err(e));
            Err(())
        }
    }
}

/// One push round, the terminal's socket read once per key, the verification messages taken in.
/// `effect` says what the card did with each LTKM (stored the key, applied an invalidation).
#[allow(clippy::too_many_arguments)]
pub(super) async fn push_and_verify(
    n: &mut Narrator,
    bsm: &Bsm,
    worker: &Worker,
    shell: &mut Shell,
    name: &str,
    keys: &[SekPekId],
    kd: KeyDomainId,
    effect: &str,
) -> bool {
    let queued = match bsm.write_intents().await {
        Ok(r) => r.queued,
        Err(e) => {
            n.check("BSM writes the answer's intents", Err(e));
            return false;
        }
    };
    let r = match worker.run_once(bsm.clock.push_time()).await {
        Ok(round) if round.pushed as usize == keys.len() && queued as usize <= keys.len() => {
            Ok(format!("{} LTKM datagram(s), V = 1, to terminal {name}'s registered address", round.pushed))
        }
        Ok(round) => Err(format!("{round:?}")),
        Err(e) => Err(e.to_string()),
    };
    let ok = r.is_ok();
    n.check("push worker claims the due delivery rows and sends them over UDP", r);
    if !ok {
        return false;
    }
    for id in keys {
        let received = shell.recv_ltkm(WAIT).await;
        shell_apdus(n, shell);
        let r = match received {
            Ok(Some(rx)) => match rx.report {
                Ok(report) if report.event == (LtkmEvent::Accepted { key: bcast_key(kd, *id) }) => {
                    Ok(format!("SEK {}: {effect}; the terminal sends the verification message back", id_hex(*id)))
                }
                Ok(report) => Err(format!("{:?}", report.event)),
                Err(e) => Err(e.to_string()),
            },
            Ok(None) => Err("nothing arrived".to_owned()),
            Err(e) => Err(e.to_string()),
        };
        let ok = r.is_ok();
        n.check(&format!("terminal {name}'s socket receives the pushed LTKM"), r);
        if !ok {
            return false;
        }
        let intake = tokio::time::timeout(WAIT, worker.receive_once(bsm.clock.push_time())).await;
        let r = match intake {
            Ok(Ok(Intake::Acknowledged { outcome: AckOutcome::Acknowledged, .. })) => {
                Ok("matched by (B-TID, TS), MAC checked, the delivery row acknowledged".to_owned())
            }
            Ok(Ok(other)) => Err(format!("{other:?}")),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no verification message arrived".to_owned()),
        };
        let ok = r.is_ok();
        n.check("BSM takes the verification message on its push socket", r);
        if !ok {
            return false;
        }
    }
    true
}
