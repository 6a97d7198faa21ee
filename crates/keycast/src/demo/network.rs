//! The network half of `keycast demo`: keycast-gba's BSF, in process on a loopback port with a
//! SQLite store in a temporary directory, the terminals' Ub client and the BSM's Zn client.
//!
//! The demo is synchronous, so [`Network`] owns a current-thread tokio runtime and enters it for
//! each exchange; the server task only runs while the demo waits on a client, which is all it
//! has to do. Everything that could vary between runs is fixed: the clock, the BSF's random
//! source (seeded, with the test-set RANDs queued by the caller), the `cnonce`s, the server
//! secret and the storage key. The port and the temporary path never reach the narration.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use keycast_card::Card;
use keycast_card::CardOpError;
use keycast_card::gba_me::GbaMeStore;
use keycast_card::mbms::{AuditCounters, TekOut};
use keycast_card::sac::LocalKeyStatus;
use keycast_card::usim::{AkaAnswer, LocalKeyRequest};
use keycast_crypto::gba::NafId;
use keycast_crypto::keys::{KsExtNaf, KsIntNaf, KsNaf};
use keycast_gba::bsf::http::{BsfState, Clock, ZN_PATH, ZnAuth, ZnToken, app, serve};
use keycast_gba::bsf::{
    Bsf, BsfConfig, BsfMetrics, BsfStore, RandomSource, SeededRandom, SqliteStore, SqnScheme, StorageKey, Subscriber,
};
use keycast_gba::client::http::{HttpClient, HttpClientError, Outcome, RetryPolicy, RunError, UbTransport, bootstrap};
use keycast_gba::client::{BootstrapConfig, HttpRequest, HttpResponse};
use keycast_mikey::{KeyDomainId, SekPekId};
use keycast_provisioning::bootstrapping::BootstrappingInfo;
use keycast_provisioning::digest::{Challenge, Credentials};
use keycast_provisioning::time::UtcTime;
use keycast_provisioning::zn as zn_wire;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

use super::{BSF, BSM_FQDN, CardReader};

/// Key lifetime the BSF gives with each B-TID (one day, as the narration's LIFETIME says).
const KEY_LIFETIME: u64 = 86_400;
/// Bound on every HTTP exchange: loopback answers in milliseconds, so a hang is a failure.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on the server's graceful stop at the end of the demo.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// Locks a log or the random source; a panic elsewhere cannot leave either half-written in a way
/// that matters to the narration, so a poisoned lock is used as is.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// 32 bytes for one of the BSF's or the clients' fixed secrets, from the demo seed.
fn derived(seed: u64, label: &str) -> [u8; 32] {
    keycast_crypto::hmac::hmac_sha256(&seed.to_be_bytes(), &[b"keycast-demo network ", label.as_bytes()])
}

/// The BSF's random source, shared with the demo so that it can queue the RAND the next
/// challenge must carry (the core draws exactly one RAND per challenge, nothing else).
#[derive(Clone)]
struct SharedRandom(Arc<Mutex<SeededRandom>>);

impl RandomSource for SharedRandom {
    fn fill(&mut self, buf: &mut [u8]) {
        lock(&self.0).fill(buf);
    }
}

/// One event of a bootstrapping run, in the order it happened.
#[derive(Debug, Clone)]
pub(super) enum Entry {
    /// A Ub request the terminal sent.
    Request(HttpRequest),
    /// The BSF's answer.
    Response(HttpResponse),
    /// The card's answer to an AUTHENTICATE the client sent it.
    Aka(AkaAnswer),
    /// One APDU exchange with the card.
    Apdu { command: Vec<u8>, answer: Vec<u8> },
}

/// What a bootstrapping run left behind: its result and everything seen on the way.
pub(super) struct Run {
    pub result: Result<Outcome, RunError>,
    pub log: Vec<Entry>,
}

impl Run {
    /// (RAND, AUTN or AUTN*) of every 401 the BSF sent, in order; `None` for a 401 whose
    /// challenge does not parse (the client then failed, and says why).
    pub fn challenges(&self) -> Vec<Option<([u8; 16], [u8; 16])>> {
        self.log
            .iter()
            .filter_map(|e| match e {
                Entry::Response(r) if r.status == 401 => Some(rand_autn(r)),
                _ => None,
            })
            .collect()
    }

    /// The card's AUTHENTICATE answers, in order.
    pub fn answers(&self) -> Vec<&AkaAnswer> {
        self.log
            .iter()
            .filter_map(|e| match e {
                Entry::Aka(a) => Some(a),
                _ => None,
            })
            .collect()
    }

    /// Whether the terminal sent an AUTS to the BSF.
    pub fn sent_auts(&self) -> bool {
        self.log.iter().any(|e| match e {
            Entry::Request(r) => {
                r.header("Authorization").and_then(|a| Credentials::parse(a).ok()).is_some_and(|c| c.auts.is_some())
            }
            _ => false,
        })
    }

    /// The BootstrappingInfo of the BSF's 200, if there was one and it parses.
    pub fn bootstrapping_info(&self) -> Option<BootstrappingInfo> {
        self.log.iter().rev().find_map(|e| match e {
            Entry::Response(r) if r.status == 200 => BootstrappingInfo::from_xml(&r.body).ok(),
            _ => None,
        })
    }
}

fn rand_autn(response: &HttpResponse) -> Option<([u8; 16], [u8; 16])> {
    let challenge = Challenge::parse(response.header("WWW-Authenticate")?).ok()?;
    let raw = BASE64.decode(challenge.nonce.trim()).ok()?;
    let rand = raw.get(..16)?.try_into().ok()?;
    let autn = raw.get(16..32)?.try_into().ok()?;
    Some((rand, autn))
}

/// The terminal's Ub transport, logging each request and answer.
struct Recorder<'a> {
    client: HttpClient,
    log: &'a Mutex<Vec<Entry>>,
}

impl UbTransport for Recorder<'_> {
    async fn send(&mut self, request: &HttpRequest) -> Result<HttpResponse, HttpClientError> {
        lock(self.log).push(Entry::Request(request.clone()));
        let response = self.client.send(request).await?;
        lock(self.log).push(Entry::Response(response.clone()));
        Ok(response)
    }
}

/// The card as the client sees it, logging its AKA answers and the APDUs of every operation, so
/// the narration can tell what the card said without asking it again.
struct Witness<'a> {
    card: &'a mut CardReader,
    log: &'a Mutex<Vec<Entry>>,
}

impl Witness<'_> {
    fn op<R>(&mut self, f: impl FnOnce(&mut CardReader) -> R) -> R {
        let r = f(self.card);
        let apdus = core::mem::take(&mut self.card.transport_mut().log);
        lock(self.log).extend(apdus.into_iter().map(|(command, answer)| Entry::Apdu { command, answer }));
        r
    }

    fn aka(
        &mut self,
        f: impl FnOnce(&mut CardReader) -> Result<AkaAnswer, CardOpError>,
    ) -> Result<AkaAnswer, CardOpError> {
        let r = self.op(f);
        if let Ok(answer) = &r {
            lock(self.log).push(Entry::Aka(answer.clone()));
        }
        r
    }
}

impl Card for Witness<'_> {
    fn authenticate_3g(&mut self, rand: &[u8; 16], autn: &[u8; 16]) -> Result<AkaAnswer, CardOpError> {
        self.aka(|c| c.authenticate_3g(rand, autn))
    }
    fn gba_bootstrap(&mut self, rand: &[u8; 16], autn: &[u8; 16]) -> Result<AkaAnswer, CardOpError> {
        self.aka(|c| c.gba_bootstrap(rand, autn))
    }
    fn write_gba_bp(&mut self, b_tid: &str, lifetime: &str) -> Result<(), CardOpError> {
        self.op(|c| c.write_gba_bp(b_tid, lifetime))
    }
    fn gba_naf_derivation(&mut self, naf_id: &[u8], impi: &str) -> Result<KsExtNaf, CardOpError> {
        self.op(|c| c.gba_naf_derivation(naf_id, impi))
    }
    fn msk_update(&mut self, ltkm: &[u8]) -> Result<Option<Vec<u8>>, CardOpError> {
        self.op(|c| c.msk_update(ltkm))
    }
    fn mtk_generation(&mut self, stkm: &[u8]) -> Result<TekOut, CardOpError> {
        self.op(|c| c.mtk_generation(stkm))
    }
    fn msk_deletion(&mut self, key_domain_id: KeyDomainId, key_group: u16) -> Result<(), CardOpError> {
        self.op(|c| c.msk_deletion(key_domain_id, key_group))
    }
    fn muk_deletion(&mut self, idi: &str, idr: &str) -> Result<(), CardOpError> {
        self.op(|c| c.muk_deletion(idi, idr))
    }
    fn local_key_establishment(&mut self, req: &LocalKeyRequest) -> Result<[u8; 16], CardOpError> {
        self.op(|c| c.local_key_establishment(req))
    }
    fn local_key_available(
        &mut self,
        naf_id: &[u8],
        terminal_id: &[u8],
        terminal_appli_id: &[u8],
        uicc_appli_id: &[u8],
    ) -> Result<LocalKeyStatus, CardOpError> {
        self.op(|c| c.local_key_available(naf_id, terminal_id, terminal_appli_id, uicc_appli_id))
    }
    fn audit(&mut self, key_domain_id: KeyDomainId, sek_pek_id: SekPekId) -> Result<AuditCounters, CardOpError> {
        self.op(|c| c.audit(key_domain_id, sek_pek_id))
    }
    fn parental_limit(&mut self) -> Result<Option<u8>, CardOpError> {
        self.op(|c| c.parental_limit())
    }
    fn set_parental_limit(&mut self, limit: Option<u8>) -> Result<(), CardOpError> {
        self.op(|c| c.set_parental_limit(limit))
    }
}

/// The NAF keys of a Zn answer.
pub(super) enum ZnNafKeys {
    /// GBA_ME session.
    Me(KsNaf),
    /// GBA_U session (Ks_int_NAF only for a GBA_U-aware NAF).
    U { ks_ext_naf: KsExtNaf, ks_int_naf: Option<KsIntNaf> },
}

/// A 200 on Zn.
pub(super) struct ZnGranted {
    pub impi: String,
    pub gba_type: String,
    pub lifetime: String,
    pub keys: ZnNafKeys,
}

/// The BSF's answer on Zn.
pub(super) enum ZnReply {
    Granted(ZnGranted),
    /// Any other status, with the `error` member of its body.
    Refused {
        status: u16,
        error: String,
    },
}

/// The Zn exchange, for `--wire`: request body and answer status (the keys stay out of it).
pub(super) struct ZnExchange {
    pub request_body: String,
    pub reply: Result<ZnReply, String>,
    pub status: Option<u16>,
}

fn parse_zn(response: &HttpResponse) -> Result<ZnReply, String> {
    if response.status != 200 {
        let error = zn_wire::Refusal::from_json(&response.body).map(|r| r.error).unwrap_or_default();
        return Ok(ZnReply::Refused { status: response.status, error });
    }
    let answer = zn_wire::KeyAnswer::from_json(&response.body).map_err(|e| e.to_string())?;
    let gba_type = answer.gba_type().to_owned();
    let keys = match answer.keys {
        zn_wire::NafKeys::Me { ks_naf } => ZnNafKeys::Me(KsNaf::from_bytes(*ks_naf.expose_secret())),
        zn_wire::NafKeys::U { ks_ext_naf, ks_int_naf } => ZnNafKeys::U {
            ks_ext_naf: KsExtNaf::from_bytes(*ks_ext_naf.expose_secret()),
            ks_int_naf: ks_int_naf.map(|k| KsIntNaf::from_bytes(*k.expose_secret())),
        },
    };
    Ok(ZnReply::Granted(ZnGranted { impi: answer.impi, gba_type, lifetime: answer.lifetime.to_string(), keys }))
}

/// The running BSF and what the clients need to reach it.
pub(super) struct Network {
    runtime: tokio::runtime::Runtime,
    state: Arc<BsfState<SqliteStore>>,
    addr: SocketAddr,
    rng: SharedRandom,
    zn_token: Zeroizing<String>,
    sqn: SqnScheme,
    now: UtcTime,
    seed: u64,
    runs: u32,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    // Declared last so that it is removed after the store has been closed.
    _dir: tempfile::TempDir,
}

impl Network {
    /// Starts the BSF of the demo's domain on `127.0.0.1:0` with an empty SQLite store, its
    /// clock fixed at `now` (Unix seconds) and every secret derived from `seed`.
    pub fn start(seed: u64, now: u64) -> Result<Self, String> {
        // `block_on` cannot nest: refuse rather than panic when called from async code.
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err("the demo runs its own tokio runtime: call it outside one".to_owned());
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        let now_utc = UtcTime::from_unix_seconds(now).map_err(|e| format!("clock: {e}"))?;
        let dir = tempfile::Builder::new()
            .prefix("keycast-demo-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        let rng = SharedRandom(Arc::new(Mutex::new(SeededRandom::new(derived(seed, "BSF random")))));
        let zn_token = Zeroizing::new(hex::encode(&derived(seed, "Zn token")[..16]));
        let mut config = BsfConfig::new(BSF, derived(seed, "BSF server secret"));
        config.key_lifetime = KEY_LIFETIME;
        config.authorised_nafs = vec![BSM_FQDN.to_owned()];
        let sqn = config.sqn;
        let bsf = Bsf::new(config).map_err(|e| format!("BSF configuration: {e}"))?;
        let zn_auth = ZnAuth {
            tokens: vec![ZnToken { naf: BSM_FQDN.to_owned(), token: zn_token.clone() }],
            allowed_naf_cert_names: Vec::new(),
        };
        let storage_key = derived(seed, "storage key");
        let storage_key = StorageKey::from_bytes(core::array::from_fn(|i| storage_key[i]));
        let db = dir.path().join("bsf.db");
        let clock: Clock = Arc::new(move || now);
        let (state, addr, stop, server) = runtime.block_on(async {
            let store = SqliteStore::open(&db, storage_key).await.map_err(|e| e.to_string())?;
            let state = Arc::new(BsfState::new(bsf, Arc::new(store), zn_auth).with_rng(rng.clone()).with_clock(clock));
            let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| format!("listen on loopback: {e}"))?;
            let addr = listener.local_addr().map_err(|e| format!("listen on loopback: {e}"))?;
            let (stop, stopped) = oneshot::channel::<()>();
            let server = tokio::spawn(serve(listener, app(state.clone()), None, async {
                let _ = stopped.await;
            }));
            Ok::<_, String>((state, addr, stop, server))
        })?;
        Ok(Network {
            runtime,
            state,
            addr,
            rng,
            zn_token,
            sqn,
            now: now_utc,
            seed,
            runs: 0,
            stop: Some(stop),
            server: Some(server),
            _dir: dir,
        })
    }

    /// Runs `f` on the demo's runtime, where the BSF serves: the BSM section runs its servers,
    /// its push worker and the terminals' shells there too, so that every task moves only while
    /// the demo waits on one of them.
    pub fn block_on<F: core::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// The BSF's loopback address (for the BSM's Zn client and the terminals; never narrated).
    pub fn bsf_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bearer token the BSF knows the BSM by on Zn.
    pub fn zn_token(&self) -> Zeroizing<String> {
        self.zn_token.clone()
    }

    /// Provisions a subscriber into the BSF's store (the HSS role).
    pub fn add_subscriber(&self, subscriber: &Subscriber) -> Result<(), String> {
        self.runtime.block_on(self.state.store().add_subscriber(subscriber)).map_err(|e| e.to_string())
    }

    /// SQN_HE of `impi` as the store holds it.
    pub fn sqn_he(&self, impi: &str) -> Result<u64, String> {
        match self.runtime.block_on(self.state.store().subscriber(impi)) {
            Ok(Some(s)) => Ok(s.sqn),
            Ok(None) => Err(format!("no subscriber {impi}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Sets SQN_HE of `impi` (the store's administration call).
    pub fn set_sqn_he(&self, impi: &str, new: u64) -> Result<(), String> {
        match self.runtime.block_on(self.state.store().set_sqn(impi, new)) {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!("no subscriber {impi}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// How the BSF advances SQN.
    pub fn sqn_scheme(&self) -> SqnScheme {
        self.sqn
    }

    /// The BSF core's counters.
    pub fn metrics(&self) -> BsfMetrics {
        self.runtime.block_on(self.state.core_metrics())
    }

    /// The RAND the BSF draws for its next challenge.
    pub fn queue_rand(&self, rand: &[u8; 16]) {
        lock(&self.rng.0).queue(rand);
    }

    /// One bootstrapping run of a terminal against the BSF: keycast-gba's client over a fresh
    /// loopback connection, the card behind a [`Witness`]. No retries: a failure must show.
    pub fn bootstrap(
        &mut self,
        config: &BootstrapConfig,
        card: &mut CardReader,
        gba_me: Option<&mut GbaMeStore>,
    ) -> Run {
        self.runs += 1;
        let log = Mutex::new(Vec::new());
        let mut transport =
            Recorder { client: HttpClient::plain(self.addr.to_string()).with_timeout(HTTP_TIMEOUT), log: &log };
        let mut witness = Witness { card, log: &log };
        let mut cnonces = SeededRandom::new(derived(self.seed, &format!("cnonce {}", self.runs)));
        let now = self.now;
        let clock = move || now;
        let policy = RetryPolicy { attempts: 1, backoff: Duration::ZERO };
        let result = self.runtime.block_on(bootstrap(
            &mut transport,
            config,
            &mut witness,
            gba_me,
            &clock,
            &mut cnonces,
            policy,
        ));
        drop(transport);
        Run { result, log: log.into_inner().unwrap_or_else(PoisonError::into_inner) }
    }

    /// The BSM asks the BSF for the NAF keys of `btid` over Zn (bearer token, from loopback),
    /// declaring itself GBA_U-aware.
    pub fn zn(&self, btid: &str) -> ZnExchange {
        let body = zn_wire::KeyRequest {
            btid: btid.to_owned(),
            naf_id: NafId::mbms(BSM_FQDN).as_bytes().to_vec(),
            gba_u_aware: true,
        }
        .to_json();
        let request = HttpRequest {
            method: "POST".to_owned(),
            uri: ZN_PATH.to_owned(),
            headers: vec![
                ("Host".to_owned(), BSF.to_owned()),
                ("Content-Type".to_owned(), "application/json".to_owned()),
                ("Authorization".to_owned(), format!("Bearer {}", self.zn_token.as_str())),
            ],
            body: body.clone().into_bytes(),
        };
        let mut client = HttpClient::plain(self.addr.to_string()).with_timeout(HTTP_TIMEOUT);
        match self.runtime.block_on(client.send(&request)) {
            Ok(response) => {
                ZnExchange { request_body: body, status: Some(response.status), reply: parse_zn(&response) }
            }
            Err(e) => ZnExchange { request_body: body, status: None, reply: Err(format!("Zn request failed: {e}")) },
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            // The timer must be created inside the runtime, hence the async block.
            let _ = self.runtime.block_on(async { tokio::time::timeout(STOP_TIMEOUT, server).await });
        }
        self.runtime.block_on(self.state.store().close());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, body: &str) -> HttpResponse {
        HttpResponse { status, headers: Vec::new(), body: body.as_bytes().to_vec() }
    }

    #[test]
    fn zn_answers_are_read_strictly() {
        let key = BASE64.encode([7u8; 32]);
        let times = r#""bootstrapped_at":"2025-03-03T14:13:20Z","lifetime":"2025-03-04T14:13:20Z""#;
        let me = parse_zn(&response(200, &format!(r#"{{"impi":"i","gba_type":"gba-me",{times},"ks_naf":"{key}"}}"#)));
        assert!(matches!(me, Ok(ZnReply::Granted(ZnGranted { keys: ZnNafKeys::Me(_), .. }))));
        let u = parse_zn(&response(
            200,
            &format!(r#"{{"impi":"i","gba_type":"gba-u",{times},"ks_ext_naf":"{key}","ks_int_naf":"{key}"}}"#),
        ));
        assert!(matches!(u, Ok(ZnReply::Granted(ZnGranted { keys: ZnNafKeys::U { ks_int_naf: Some(_), .. }, .. }))));
        let refused = parse_zn(&response(404, r#"{"error":"unknown-btid"}"#));
        assert!(matches!(refused, Ok(ZnReply::Refused { status: 404, error }) if error == "unknown-btid"));
        assert!(parse_zn(&response(200, &format!(r#"{{"ks_naf":"{key}","ks_ext_naf":"{key}"}}"#))).is_err());
        assert!(parse_zn(&response(200, r#"{"ks_naf":"AAAA"}"#)).is_err());
        assert!(parse_zn(&response(200, "not json")).is_err());
    }
}
