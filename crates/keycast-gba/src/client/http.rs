//! The terminal's network shell for [`Bootstrapper`]: sends its requests to the BSF over a real
//! connection (plain TCP or TLS) and feeds the answers back, restarting the run on transport
//! failures and server errors.
//!
//! The HTTP/1.1 client is hyper's connection-level client (`hyper::client::conn::http1`) over a
//! tokio `TcpStream`, optionally wrapped by tokio-rustls: hyper is already in the graph for the
//! BSF, so this costs no new crate (no connection pool, resolver or reqwest), and it frames
//! messages correctly (chunked, `Content-Length`, keep-alive) where a hand-written client would
//! have to re-implement that. One connection is kept alive and reopened when the BSF closed it.
//!
//! Ub requests are not idempotent (a nonce answers once), so a request is resent on a fresh
//! connection only when hyper gives it back unsent; any other failure ends the attempt and
//! [`bootstrap`] starts a new run from [`Bootstrapper::start`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use keycast_card::card::Card;
use keycast_card::gba_me::GbaMeStore;
use keycast_provisioning::time::UtcTime;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use zeroize::Zeroizing;

use super::{BootstrapConfig, BootstrapError, Bootstrapped, Bootstrapper, HttpRequest, HttpResponse, Step};
use crate::bsf::RandomSource;

/// Largest response body accepted, octets (a BootstrappingInfo is a few hundred).
pub const MAX_RESPONSE_BODY: usize = 64 * 1024;
/// Default time allowed for connecting plus one request and its response.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// A transport failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpClientError {
    /// The TCP connection or the TLS handshake failed.
    #[error("connect: {0}")]
    Connect(std::io::Error),
    /// HTTP failed (connection closed, malformed response, …).
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    /// The request could not be built from the core's [`HttpRequest`].
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The response body exceeded [`MAX_RESPONSE_BODY`] or could not be read.
    #[error("response body: {0}")]
    Body(String),
    /// No answer within the timeout.
    #[error("timed out")]
    Timeout,
}

/// Sends one request and returns the response. Implemented by [`HttpClient`]; tests wrap it.
pub trait UbTransport {
    /// Sends `request` and waits for the response.
    fn send(&mut self, request: &HttpRequest) -> impl Future<Output = Result<HttpResponse, HttpClientError>> + Send;
}

/// An HTTP/1.1 client for one server, keeping one connection alive.
pub struct HttpClient {
    address: String,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    sender: Option<SendRequest<Full<Bytes>>>,
    timeout: Duration,
}

impl core::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HttpClient")
            .field("address", &self.address)
            .field("tls", &self.tls.as_ref().map(|(_, name)| name))
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// A plain-HTTP client for `address` (`host:port`).
    #[must_use]
    pub fn plain(address: impl Into<String>) -> Self {
        HttpClient { address: address.into(), tls: None, sender: None, timeout: DEFAULT_TIMEOUT }
    }

    /// An HTTPS client for `address`, verifying the server as `server_name` with `config`
    /// (which may carry a client certificate).
    #[must_use]
    pub fn tls(
        address: impl Into<String>,
        server_name: ServerName<'static>,
        config: Arc<rustls::ClientConfig>,
    ) -> Self {
        HttpClient {
            address: address.into(),
            tls: Some((tokio_rustls::TlsConnector::from(config), server_name)),
            sender: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Sets the per-request timeout (connect, send, whole response).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, HttpClientError> {
        let tcp = TcpStream::connect(&self.address).await.map_err(HttpClientError::Connect)?;
        tcp.set_nodelay(true).map_err(HttpClientError::Connect)?;
        match &self.tls {
            None => {
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
                tokio::spawn(conn);
                Ok(sender)
            }
            Some((connector, name)) => {
                let stream = connector.connect(name.clone(), tcp).await.map_err(HttpClientError::Connect)?;
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                tokio::spawn(conn);
                Ok(sender)
            }
        }
    }

    async fn exchange(&mut self, request: &HttpRequest) -> Result<HttpResponse, HttpClientError> {
        let mut builder = hyper::Request::builder().method(request.method.as_str()).uri(request.uri.as_str());
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let outgoing = builder
            .body(Full::new(Bytes::from(request.body.clone())))
            .map_err(|e| HttpClientError::InvalidRequest(e.to_string()))?;

        let (mut sender, reused) = match self.sender.take() {
            Some(s) if !s.is_closed() => (s, true),
            _ => (self.connect().await?, false),
        };
        let (mut sender, reused) = match sender.ready().await {
            Ok(()) => (sender, reused),
            Err(_) => (self.connect().await?, false),
        };
        let response = match sender.try_send_request(outgoing).await {
            Ok(r) => r,
            Err(mut e) => match e.take_message() {
                // Never written: safe to send on a fresh connection.
                Some(unsent) if reused => {
                    sender = self.connect().await?;
                    sender.send_request(unsent).await?
                }
                _ => return Err(HttpClientError::Http(e.into_error())),
            },
        };
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BODY)
            .collect()
            .await
            .map_err(|e| HttpClientError::Body(e.to_string()))?
            .to_bytes()
            .to_vec();
        self.sender = Some(sender);
        Ok(HttpResponse { status, headers, body })
    }
}

impl UbTransport for HttpClient {
    async fn send(&mut self, request: &HttpRequest) -> Result<HttpResponse, HttpClientError> {
        match tokio::time::timeout(self.timeout, self.exchange(request)).await {
            Ok(r) => r,
            Err(_) => {
                self.sender = None;
                Err(HttpClientError::Timeout)
            }
        }
    }
}

/// How often [`bootstrap`] starts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Runs at most (at least 1).
    pub attempts: u32,
    /// Pause before a new run.
    pub backoff: Duration,
}

impl Default for RetryPolicy {
    /// 3 runs, 1 s apart [chosen by Keycast].
    fn default() -> Self {
        RetryPolicy { attempts: 3, backoff: Duration::from_secs(1) }
    }
}

/// Why [`bootstrap`] failed (after its retries).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The Ub exchange failed ([`BootstrapError`]).
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    /// The BSF could not be reached or did not answer.
    #[error(transparent)]
    Transport(#[from] HttpClientError),
}

impl RunError {
    /// Whether a new run may help: transport failures and 408/5xx answers. Never after a
    /// network authentication failure or a wrong `rspauth` (the BSF is not authentic).
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            RunError::Transport(_) => true,
            RunError::Bootstrap(BootstrapError::BsfRejected(status)) => *status == 408 || *status >= 500,
            RunError::Bootstrap(_) => false,
        }
    }
}

/// A successful [`bootstrap`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// What the card (or the GBA_ME store) now holds.
    pub bootstrapped: Bootstrapped,
    /// Runs made (1 when the first succeeded).
    pub attempts: u32,
}

/// Bootstraps over `transport`: drives a [`Bootstrapper`] to the end, and starts a new run from
/// [`Bootstrapper::start`] after a retryable failure ([`RunError::is_retryable`]), up to
/// `policy.attempts` runs. `clock` gives the time checked against the key lifetime; `rng`
/// draws each `cnonce` (16 octets).
///
/// # Errors
/// The last run's [`RunError`].
#[allow(clippy::too_many_arguments)]
pub async fn bootstrap<T: UbTransport + Send, C: Card + Send>(
    transport: &mut T,
    config: &BootstrapConfig,
    card: &mut C,
    mut gba_me: Option<&mut GbaMeStore>,
    clock: &(dyn Fn() -> UtcTime + Send + Sync),
    rng: &mut (dyn RandomSource + Send),
    policy: RetryPolicy,
) -> Result<Outcome, RunError> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        match run_once(transport, config, card, gba_me.as_deref_mut(), clock, rng).await {
            Ok(bootstrapped) => {
                tracing::info!(impi = ?config.impi, btid = ?bootstrapped.b_tid, attempts, "bootstrapped");
                return Ok(Outcome { bootstrapped, attempts });
            }
            Err(e) if e.is_retryable() && attempts < policy.attempts.max(1) => {
                tracing::info!(impi = ?config.impi, error = %e, attempts, "bootstrapping run failed; starting over");
                tokio::time::sleep(policy.backoff).await;
            }
            Err(e) => {
                tracing::warn!(impi = ?config.impi, error = %e, attempts, "bootstrapping failed");
                return Err(e);
            }
        }
    }
}

async fn run_once<T: UbTransport + Send, C: Card + Send>(
    transport: &mut T,
    config: &BootstrapConfig,
    card: &mut C,
    mut gba_me: Option<&mut GbaMeStore>,
    clock: &(dyn Fn() -> UtcTime + Send + Sync),
    rng: &mut (dyn RandomSource + Send),
) -> Result<Bootstrapped, RunError> {
    let mut client = Bootstrapper::new(config.clone());
    let mut request = client.start();
    // Ends: every 401 is a round and the Bootstrapper allows MAX_ROUNDS; other answers end it.
    loop {
        let response = transport.send(&request).await?;
        let mut cnonce = Zeroizing::new([0u8; 16]);
        rng.fill(&mut cnonce[..]);
        match client.handle(response, card, gba_me.as_deref_mut(), clock(), &cnonce[..])? {
            Step::Send(next) => request = next,
            Step::Done(done) => return Ok(done),
        }
    }
}
