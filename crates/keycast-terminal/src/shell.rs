//! The terminal's network shell (tokio): it moves the bytes of [`ProvisioningClient`] and
//! [`crate::ltkm_intake`] and does nothing else.
//!
//! - **HTTP** to the BSM and the BSF through keycast-gba's hyper client
//!   ([`keycast_gba::client::http::HttpClient`]: one keep-alive connection, reopened when closed),
//!   each request bounded by [`ShellConfig::http_timeout`]. Plain HTTP by default;
//!   [`TerminalShell::use_bsm_tls`] switches to HTTPS (with the terminal's client certificate,
//!   TS 33.222 §5.5, when the configuration has one: see [`bsm_tls_config`]), which the
//!   BCAST_Client_ID needs (seed §6.9.2, [`crate::provisioning`]).
//! - **UDP**: one socket per interface for LTKM pushes ([`ShellConfig::oma_bcast_udp`],
//!   [`ShellConfig::mbms_udp`]; by default ports 4359 and 2269 on all addresses); a verification
//!   message leaves from the socket that received its LTKM.
//! - **Bootstrapping** (keycast-gba `bootstrap`, through [`key_holder::bootstrap`]) when no B-TID
//!   is held, when its lifetime ends, and when the BSM refuses the B-TID (a 401 to a Digest
//!   answer); then `naf_keys` ([`MbmsKeyHolder::naf_keys`]) derives the SRK and installs the SMK
//!   where LTKMs are processed.
//! - **Registration** at start ([`TerminalShell::connect`]) and after the interactive network
//!   comes back ([`TerminalShell::reconnected`]) (seed §6.4: "SHALL always be sent … after it
//!   powers on or after it re-establishes connectivity").
//! - **Follow-ups**: key requests that LTKMs ask for ([`IntakeAction::RequestKeys`]) are sent at
//!   once, \[chosen\] at most [`MAX_FOLLOW_UPS`] per trigger so that a chain of answers cannot keep
//!   the terminal busy.
//!
//! The terminal's keys are in its [`MbmsKeyHolder`] (TS 33.246 §6.1):
//! - **GBA_U**: the card itself (`TerminalShell<C>` for any [`Card`](keycast_card::card::Card)):
//!   AKA in the GBA context, Ks, the SMK and the SEK/PEKs in the UICC, which processes LTKMs and
//!   STKMs;
//! - **GBA_ME**: a [`GbaMeKeyHolder`] (`TerminalShell<GbaMeKeyHolder<C>>`): AKA in the USIM's 3G
//!   context, Ks = CK ‖ IK, the SMK (Ks_NAF) and the SEK/PEKs in the ME's `GbaMeStore`, which
//!   processes LTKMs and STKMs with the card's rules; the BSM gets Ks_NAF over Zn.
//!
//! [`ShellConfig::bootstrap`]'s mode must suit the holder ([`MbmsKeyHolder::accepts_mode`]),
//! which [`TerminalShell::new`] checks ([`ShellError::GbaModeMismatch`]).
//!
//! [`GbaMeKeyHolder`]: crate::key_holder::GbaMeKeyHolder

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keycast_crypto::gba::GbaType;
use keycast_gba::bsf::RandomSource;
use keycast_gba::client::http::{HttpClient, HttpClientError, RetryPolicy, RunError, UbTransport as _};
use keycast_gba::client::{BootstrapConfig, BootstrapState, GbaMode, NafKeyError};
use keycast_mikey::MAX_MESSAGE_LEN;
use keycast_provisioning::sprov::{BcastKeyId, PurchaseRequestItem};
use keycast_provisioning::time::UtcTime;
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::UdpSocket;

use crate::key_holder::{self, MbmsKeyHolder};
use crate::ltkm_intake::{
    IntakeAction, IntakeError, IntakeReport, Interface, LtkmOrigin, MBMS_LTKM_PORT, OMA_BCAST_LTKM_PORT,
    VerificationTarget,
};
use crate::provisioning::{Answer, ClientConfig, ProvisioningClient, ProvisioningError, Request, Step};

/// Most key requests sent on behalf of one trigger (an answer or a datagram) \[chosen\].
pub const MAX_FOLLOW_UPS: usize = 4;
/// Default bound of one HTTP request and its answer \[chosen\].
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(15);
/// Octets of the `cnonce` random (hex-encoded to 32 characters).
const CNONCE_LEN: usize = 16;
/// Most steps of one exchange: two challenges, one bootstrap and its retry, the answer.
const MAX_STEPS: usize = 8;

/// The wall clock as a [`UtcTime`]; tests inject their own.
pub type Clock = Arc<dyn Fn() -> UtcTime + Send + Sync>;

/// `SystemTime::now()` (clamped to the range [`UtcTime`] can hold).
#[must_use]
pub fn system_clock() -> Clock {
    Arc::new(|| {
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        UtcTime::from_unix_seconds(secs).unwrap_or(UtcTime::MAX)
    })
}

/// The operating system's random generator (`getrandom`).
#[derive(Debug, Clone, Copy, Default)]
pub struct OsRandom;

impl RandomSource for OsRandom {
    fn fill(&mut self, buf: &mut [u8]) {
        // Without the OS generator no cnonce can be made; continuing with predictable octets
        // would be worse than stopping, and it is no input from the network.
        getrandom::fill(buf).expect("the operating system's random generator failed");
    }
}

/// Where and how the terminal talks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellConfig {
    /// The BSM's address, `host:port` (the BSM FQDN, `Host` and realm, is in `client`).
    pub bsm_address: String,
    /// The BSF's address, `host:port` (its name is in `bootstrap`).
    pub bsf_address: String,
    /// Bootstrapping: BSF host, IMPI, User-Agent, mode (GBA_U or GBA_ME, as the key holder).
    pub bootstrap: BootstrapConfig,
    /// The provisioning client's configuration.
    pub client: ClientConfig,
    /// The interface the terminal registers on.
    pub registration_interface: Interface,
    /// Local address of the OMA BCAST LTKM socket (`None`: none is opened).
    pub oma_bcast_udp: Option<SocketAddr>,
    /// Local address of the MBMS LTKM socket (`None`: none is opened).
    pub mbms_udp: Option<SocketAddr>,
    /// The BSM's LTKM ports, where verification messages for LTKMs from HTTP answers go.
    pub bsm_ltkm_ports: (u16, u16),
    /// Bound of one HTTP request and its answer.
    pub http_timeout: Duration,
    /// Bootstrapping runs and the pause between them.
    pub bootstrap_retry: RetryPolicy,
}

impl ShellConfig {
    /// Defaults: register on OMA BCAST, sockets on `0.0.0.0:4359` and `0.0.0.0:2269`,
    /// [`DEFAULT_HTTP_TIMEOUT`], keycast-gba's bootstrap retry policy.
    #[must_use]
    pub fn new(bsm_address: &str, bsf_address: &str, bootstrap: BootstrapConfig, client: ClientConfig) -> Self {
        ShellConfig {
            bsm_address: bsm_address.to_owned(),
            bsf_address: bsf_address.to_owned(),
            bootstrap,
            client,
            registration_interface: Interface::OmaBcast,
            oma_bcast_udp: Some(SocketAddr::from(([0, 0, 0, 0], OMA_BCAST_LTKM_PORT))),
            mbms_udp: Some(SocketAddr::from(([0, 0, 0, 0], MBMS_LTKM_PORT))),
            bsm_ltkm_ports: (OMA_BCAST_LTKM_PORT, MBMS_LTKM_PORT),
            http_timeout: DEFAULT_HTTP_TIMEOUT,
            bootstrap_retry: RetryPolicy::default(),
        }
    }
}

/// A rustls client configuration for the BSM (aws-lc-rs, TLS 1.2 and 1.3, ALPN `http/1.1`):
/// trusts `roots`, and presents `client_certificate` (chain and key) when the BSM asks for one.
///
/// # Errors
/// rustls's, when the key does not fit the certificate or cannot be used.
pub fn bsm_tls_config(
    roots: RootCertStore,
    client_certificate: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match client_certificate {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Why a shell operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShellError {
    /// The provisioning exchange failed.
    #[error(transparent)]
    Provisioning(#[from] ProvisioningError),
    /// Bootstrapping failed.
    #[error("bootstrapping: {0}")]
    Bootstrap(#[from] RunError),
    /// The NAF keys could not be derived.
    #[error("NAF keys: {0}")]
    NafKeys(#[from] NafKeyError),
    /// The BSM could not be reached or did not answer in time.
    #[error("BSM: {0}")]
    Http(#[from] HttpClientError),
    /// A socket failed.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// An exchange did not end within its step bound.
    #[error("the exchange did not end")]
    Runaway,
    /// The configured bootstrapping mode does not leave the keys in the terminal's key holder
    /// (e.g. GBA_ME with a bare card, or GBA_U with a GBA_ME store).
    #[error("bootstrapping mode {mode:?} does not suit a {} key holder", holder.as_str())]
    GbaModeMismatch {
        /// The mode of [`ShellConfig::bootstrap`].
        mode: GbaMode,
        /// The holder's GBA type.
        holder: GbaType,
    },
}

/// One LTKM datagram and what came of it.
#[derive(Debug)]
pub struct Received {
    /// The interface whose socket received it.
    pub interface: Interface,
    /// Its source.
    pub from: SocketAddr,
    /// The intake's report (or why the datagram was not an LTKM).
    pub report: Result<IntakeReport, IntakeError>,
    /// Answers of the key requests it caused.
    pub follow_ups: Vec<Result<Answer, ShellError>>,
}

/// The terminal: its key holder (the card for GBA_U, [`key_holder::GbaMeKeyHolder`] for GBA_ME),
/// bootstrap record, provisioning client and sockets.
pub struct TerminalShell<C: MbmsKeyHolder + Send> {
    config: ShellConfig,
    card: C,
    state: BootstrapState,
    client: ProvisioningClient,
    bsm: HttpClient,
    oma_socket: Option<UdpSocket>,
    mbms_socket: Option<UdpSocket>,
    clock: Clock,
    rng: Box<dyn RandomSource + Send>,
}

impl<C: MbmsKeyHolder + Send> core::fmt::Debug for TerminalShell<C> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TerminalShell")
            .field("bsm_address", &self.config.bsm_address)
            .field("gba", &self.card.gba_type())
            .field("b_tid", &self.client.b_tid())
            .finish_non_exhaustive()
    }
}

impl<C> TerminalShell<C>
where
    C: MbmsKeyHolder + Send,
    C::Card: Send,
{
    /// A terminal with `card`, where its keys live (a [`Card`](keycast_card::card::Card) for
    /// GBA_U, a [`key_holder::GbaMeKeyHolder`] for GBA_ME); binds the LTKM sockets of `config`.
    ///
    /// # Errors
    /// [`ShellError::GbaModeMismatch`] when `config.bootstrap.mode` does not suit `card`;
    /// [`ShellError::Io`] when a socket cannot be bound.
    pub async fn new(
        config: ShellConfig,
        card: C,
        clock: Clock,
        rng: Box<dyn RandomSource + Send>,
    ) -> Result<Self, ShellError> {
        if !card.accepts_mode(config.bootstrap.mode) {
            return Err(ShellError::GbaModeMismatch { mode: config.bootstrap.mode, holder: card.gba_type() });
        }
        let oma_socket = match config.oma_bcast_udp {
            Some(a) => Some(UdpSocket::bind(a).await?),
            None => None,
        };
        let mbms_socket = match config.mbms_udp {
            Some(a) => Some(UdpSocket::bind(a).await?),
            None => None,
        };
        let bsm = HttpClient::plain(config.bsm_address.clone()).with_timeout(config.http_timeout);
        let client = ProvisioningClient::new(config.client.clone());
        Ok(TerminalShell {
            config,
            card,
            state: BootstrapState::new(),
            client,
            bsm,
            oma_socket,
            mbms_socket,
            clock,
            rng,
        })
    }

    /// Talks to the BSM over HTTPS from now on, verifying it as `server_name` (its FQDN) with
    /// `tls` (e.g. from [`bsm_tls_config`]). When `tls` carries a client certificate the
    /// provisioning client may send the BCAST_Client_ID
    /// ([`ProvisioningClient::set_mutual_tls`]).
    pub fn use_bsm_tls(&mut self, tls: Arc<rustls::ClientConfig>, server_name: ServerName<'static>) {
        let mutual = tls.client_auth_cert_resolver.has_certs();
        self.bsm =
            HttpClient::tls(self.config.bsm_address.clone(), server_name, tls).with_timeout(self.config.http_timeout);
        self.client.set_mutual_tls(mutual);
    }

    /// The key holder: the card (GBA_U) or the USIM with the ME's store (GBA_ME).
    pub fn card(&self) -> &C {
        &self.card
    }

    /// The key holder, mutably (e.g. for STKMs: [`MbmsKeyHolder::mtk_generation`]).
    pub fn card_mut(&mut self) -> &mut C {
        &mut self.card
    }

    /// The provisioning client (purchase list, B-TID).
    pub fn client(&self) -> &ProvisioningClient {
        &self.client
    }

    /// The provisioning client, mutably.
    pub fn client_mut(&mut self) -> &mut ProvisioningClient {
        &mut self.client
    }

    /// The bootstrap record.
    pub fn bootstrap_state(&self) -> &BootstrapState {
        &self.state
    }

    /// Takes over a bootstrap made by an earlier run (from [`crate::state`]): no new bootstrap
    /// while it has time left; the Ua credentials are derived again at the next request.
    pub fn restore_bootstrap(&mut self, bootstrapped: keycast_gba::client::Bootstrapped) {
        self.state.record(bootstrapped);
        self.client.clear_credentials();
    }

    /// The local address of an interface's LTKM socket.
    #[must_use]
    pub fn udp_addr(&self, interface: Interface) -> Option<SocketAddr> {
        self.socket(interface).and_then(|s| s.local_addr().ok())
    }

    fn socket(&self, interface: Interface) -> Option<&UdpSocket> {
        match interface {
            Interface::OmaBcast => self.oma_socket.as_ref(),
            Interface::Mbms => self.mbms_socket.as_ref(),
        }
    }

    fn cnonce(&mut self) -> [u8; CNONCE_LEN] {
        let mut c = [0u8; CNONCE_LEN];
        self.rng.fill(&mut c);
        c
    }

    /// Bootstraps with the BSF and derives the Ua credentials for the BSM.
    ///
    /// # Errors
    /// [`ShellError::Bootstrap`], [`ShellError::NafKeys`].
    pub async fn bootstrap(&mut self) -> Result<(), ShellError> {
        let mut transport = HttpClient::plain(self.config.bsf_address.clone()).with_timeout(self.config.http_timeout);
        let clock = self.clock.clone();
        let now = move || clock();
        let outcome = key_holder::bootstrap(
            &mut transport,
            &self.config.bootstrap,
            &mut self.card,
            &now,
            &mut *self.rng,
            self.config.bootstrap_retry,
        )
        .await?;
        self.state.record(outcome.bootstrapped);
        self.client.clear_credentials();
        self.derive_credentials()
    }

    fn derive_credentials(&mut self) -> Result<(), ShellError> {
        let creds = self.card.naf_keys(&self.state, &self.config.client.bsm_fqdn, &self.config.bootstrap.impi)?;
        tracing::info!(btid = %creds.b_tid, bsm = %creds.naf_fqdn, "Ua credentials derived");
        self.client.set_credentials(creds);
        Ok(())
    }

    /// Makes sure a B-TID with time left and its Ua credentials are held.
    ///
    /// # Errors
    /// As [`TerminalShell::bootstrap`].
    pub async fn ensure_credentials(&mut self) -> Result<(), ShellError> {
        if self.state.needs_bootstrap((self.clock)()) {
            return self.bootstrap().await;
        }
        if self.client.b_tid().is_none() {
            self.derive_credentials()?;
        }
        Ok(())
    }

    /// Start of the terminal (power-on): credentials, then registration of the valid purchase
    /// items on the configured interface. `Ok(None)` when there is nothing to register.
    ///
    /// # Errors
    /// [`ShellError`].
    pub async fn connect(&mut self) -> Result<Option<Answer>, ShellError> {
        self.ensure_credentials().await?;
        let now = (self.clock)();
        let request = match self.config.registration_interface {
            Interface::OmaBcast => self.client.registration(now),
            Interface::Mbms => self.client.mbms_register(now),
        };
        match request {
            Ok(r) => self.execute(r).await.map(Some),
            Err(ProvisioningError::NothingToRequest(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The interactive network is back: register again (as at start).
    ///
    /// # Errors
    /// [`ShellError`].
    pub async fn reconnected(&mut self) -> Result<Option<Answer>, ShellError> {
        self.connect().await
    }

    /// Subscribes to `items` (Service Request, each with its expected validity); registers too
    /// when the BSM asks for it.
    ///
    /// # Errors
    /// [`ShellError`].
    pub async fn subscribe(
        &mut self,
        items: Vec<(PurchaseRequestItem, Option<UtcTime>)>,
    ) -> Result<Answer, ShellError> {
        let request = self.client.service_request(items)?;
        let answer = self.execute(request).await?;
        if answer.response.registration_required() {
            self.connect().await?;
        }
        Ok(answer)
    }

    /// Asks for `keys` on `interface` (LTKM Request or MSK request).
    ///
    /// # Errors
    /// [`ShellError`].
    pub async fn request_keys(&mut self, interface: Interface, keys: &[BcastKeyId]) -> Result<Answer, ShellError> {
        let request = self.client.key_request(interface, keys)?;
        self.execute(request).await
    }

    /// Runs one request to its answer (Digest, a new bootstrap when the BSM refuses the B-TID),
    /// feeds the answer's LTKMs to the card, sends their verification messages and the key
    /// requests they ask for.
    ///
    /// # Errors
    /// [`ShellError`].
    pub async fn execute(&mut self, request: Request) -> Result<Answer, ShellError> {
        let answer = self.exchange(request).await?;
        let actions: Vec<IntakeAction> =
            answer.ltkms.iter().filter_map(|r| r.as_ref().ok()).flat_map(|r| r.actions.iter().cloned()).collect();
        // Follow-ups' own failures do not undo this answer; they are logged.
        for result in self.carry_out(actions, None).await {
            if let Err(e) = result {
                tracing::warn!(error = %e, "key request after an answer failed");
            }
        }
        Ok(answer)
    }

    /// One exchange, without carrying out what its LTKMs ask for.
    async fn exchange(&mut self, request: Request) -> Result<Answer, ShellError> {
        self.ensure_credentials().await?;
        let name = request.name();
        let cnonce = self.cnonce();
        let mut http = self.client.start(request, &cnonce)?;
        for _ in 0..MAX_STEPS {
            let response = match self.bsm.send(&http).await {
                Ok(r) => r,
                Err(e) => {
                    self.client.abort();
                    return Err(e.into());
                }
            };
            let cnonce = self.cnonce();
            let now = (self.clock)();
            match self.client.handle_response(response, &mut self.card, now, &cnonce)? {
                Step::Send(next) => http = next,
                Step::Rebootstrap => {
                    tracing::info!(request = name, "the BSM refused the B-TID; bootstrapping again");
                    if let Err(e) = self.bootstrap().await {
                        self.client.abort();
                        return Err(e);
                    }
                    let cnonce = self.cnonce();
                    http = self.client.resume(&cnonce)?;
                }
                Step::Done(answer) => {
                    tracing::info!(request = name, refused = answer.response.refused_items().len(), "answered");
                    return Ok(*answer);
                }
            }
        }
        self.client.abort();
        Err(ShellError::Runaway)
    }

    /// Sends verification messages and key requests, and then what the answers' LTKMs ask for,
    /// up to [`MAX_FOLLOW_UPS`] key requests in all (a work list, not recursion, so that a chain
    /// of answers stays bounded). `reply_from` is the socket that received the LTKM when it came
    /// over UDP.
    async fn carry_out(
        &mut self,
        actions: Vec<IntakeAction>,
        reply_from: Option<Interface>,
    ) -> Vec<Result<Answer, ShellError>> {
        let mut queue: std::collections::VecDeque<(IntakeAction, Option<Interface>)> =
            actions.into_iter().map(|a| (a, reply_from)).collect();
        let mut answers = Vec::new();
        while let Some((action, from)) = queue.pop_front() {
            match action {
                IntakeAction::SendVerification { to, message } => {
                    if let Err(e) = self.send_verification(to, from, &message).await {
                        tracing::warn!(error = %e, "verification message not sent");
                    }
                }
                IntakeAction::RequestKeys { interface, keys } => {
                    if answers.len() >= MAX_FOLLOW_UPS {
                        tracing::warn!("follow-up limit reached; key request dropped");
                        continue;
                    }
                    let result = match self.client.key_request(interface, &keys) {
                        Ok(request) => self.exchange(request).await,
                        Err(e) => Err(e.into()),
                    };
                    match &result {
                        Ok(answer) => {
                            let more = answer.ltkms.iter().filter_map(|r| r.as_ref().ok());
                            queue.extend(more.flat_map(|r| r.actions.iter().cloned()).map(|a| (a, None)));
                        }
                        Err(_) => {
                            // Let the next trigger ask again at once.
                            for k in &keys {
                                self.client.intake_mut().forget_request(k);
                            }
                        }
                    }
                    answers.push(result);
                }
            }
        }
        answers
    }

    async fn send_verification(
        &self,
        to: VerificationTarget,
        reply_from: Option<Interface>,
        message: &[u8],
    ) -> Result<(), ShellError> {
        let (addr, interface) = match to {
            VerificationTarget::ReplyTo { to, interface } => (to, interface),
            VerificationTarget::Bsm(interface) => {
                let port = match interface {
                    Interface::OmaBcast => self.config.bsm_ltkm_ports.0,
                    Interface::Mbms => self.config.bsm_ltkm_ports.1,
                };
                let host = tokio::net::lookup_host(self.config.bsm_address.as_str())
                    .await?
                    .next()
                    .ok_or_else(|| std::io::Error::other("the BSM address does not resolve"))?;
                (SocketAddr::new(host.ip(), port), interface)
            }
        };
        let socket = self.socket(reply_from.unwrap_or(interface));
        match socket {
            Some(s) => {
                s.send_to(message, addr).await?;
            }
            None => {
                let local: SocketAddr = if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
                UdpSocket::bind(local).await?.send_to(message, addr).await?;
            }
        }
        tracing::debug!(%addr, "verification message sent");
        Ok(())
    }

    /// Waits up to `timeout` for one LTKM datagram on either socket, runs the intake on it and
    /// carries out what it asks for. `Ok(None)` when nothing arrived in time.
    ///
    /// # Errors
    /// [`ShellError::Io`] when a socket fails.
    pub async fn recv_ltkm(&mut self, timeout: Duration) -> Result<Option<Received>, ShellError> {
        let mut oma_buf = vec![0u8; MAX_MESSAGE_LEN + 1];
        let mut mbms_buf = vec![0u8; MAX_MESSAGE_LEN + 1];
        let oma = self.oma_socket.as_ref();
        let mbms = self.mbms_socket.as_ref();
        let received = tokio::time::timeout(timeout, async {
            tokio::select! {
                r = recv_on(oma, &mut oma_buf) => r.map(|(n, from)| (Interface::OmaBcast, n, from)),
                r = recv_on(mbms, &mut mbms_buf) => r.map(|(n, from)| (Interface::Mbms, n, from)),
            }
        })
        .await;
        let (interface, len, from) = match received {
            Err(_) => return Ok(None),
            Ok(r) => r?,
        };
        let datagram = match interface {
            Interface::OmaBcast => &oma_buf[..len],
            Interface::Mbms => &mbms_buf[..len],
        };
        let now = (self.clock)();
        let b_tid = self.client.b_tid().map(str::to_owned);
        let origin = LtkmOrigin::Udp { from, interface };
        let report = self.client.intake_mut().handle(&mut self.card, datagram, origin, b_tid.as_deref(), now);
        match &report {
            Ok(r) => tracing::info!(%from, event = ?r.event, "LTKM"),
            Err(e) => tracing::info!(%from, error = %e, "datagram dropped"),
        }
        let actions = report.as_ref().map(|r| r.actions.clone()).unwrap_or_default();
        let follow_ups = self.carry_out(actions, Some(interface)).await;
        Ok(Some(Received { interface, from, report, follow_ups }))
    }
}

/// Receives on `socket`, or never when there is none.
async fn recv_on(socket: Option<&UdpSocket>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match socket {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}
