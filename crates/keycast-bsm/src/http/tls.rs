//! Serving the BSM's routes over HTTPS with client certificates (TS 33.222 §5.5, the tunnel of
//! seed §6.9.2.1) or over plain HTTP, and telling every request which it came on.
//!
//! - [`tls_server_config`] builds the rustls configuration (aws-lc-rs, TLS 1.2 and 1.3, ALPN
//!   `http/1.1`) from the BSM's certificate chain and key and a [`ClientCertificates`] choice:
//!   none asked for, asked for and optional, or required, each verified by rustls's
//!   `WebPkiClientVerifier` against the configured CA.
//! - [`serve`] runs a router on a listener, TLS or not, and puts two extensions into every
//!   request: a [`Transport`] (peer address, TLS or not, the verified client certificate's names)
//!   and axum's `ConnectInfo<SocketAddr>`, so that the provisioning routes
//!   ([`super::provisioning::bsm_app`]) read the source address (the push address, `profile:
//!   P-8`) exactly as under `into_make_service_with_connect_info`.
//! - [`channel_of`] turns the extensions into the [`Channel`] the BCAST_Client_ID rules need. A
//!   request without a [`Transport`] (a router served some other way, or behind a proxy that
//!   terminates TLS) counts as plain HTTP: the BSM vouches only for what it saw itself.
//!
//! \[chosen\] (`profile: P-8`) **Client certificates on the provisioning listener.** Seed §6.9.2.1
//! makes the mutually authenticated tunnel a MAY, needed only when the terminal sends a
//! BCAST_Client_ID. [`ClientCertificates::Required`] (refuse the handshake without a certificate)
//! suits a BSM that asks every terminal for its ID
//! ([`crate::client_id::BcastClientIdPolicy::Request`]): a terminal without a certificate could
//! never register there anyway, and is told so at the handshake. [`ClientCertificates::Optional`]
//! suits a BSM that also serves terminals without certificates over HTTPS; an ID from one of them
//! is refused by the rules, not by TLS. Either way a certificate, when presented, must chain to the
//! configured CA, or the handshake fails.
//!
//! The certificate authenticates the terminal's equipment, not its subscriber: it is not bound to
//! the B-TID of the Digest layer, which still authenticates every request (`profile: P-7`).
//!
//! Limits per connection: request head ≤ [`MAX_HEADER_SIZE`] octets and ≤ [`MAX_HEADERS`] fields
//! (else 431 and the connection closes), head within [`HEADER_READ_TIMEOUT`], TLS handshake
//! within [`TLS_HANDSHAKE_TIMEOUT`]; request bodies are bounded by the routes' own layers.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::Extensions;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt as _;

use crate::client_id::Channel;

/// Largest request head (request line and header fields), octets.
pub const MAX_HEADER_SIZE: usize = 16 * 1024;
/// Most header fields in one request.
pub const MAX_HEADERS: usize = 64;
/// Time allowed to receive a request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for a TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`serve`] lets open connections finish after the shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` (e.g. out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Whether the listener asks clients for certificates, and which CA they must chain to.
#[derive(Debug, Clone)]
pub enum ClientCertificates {
    /// No client certificate is asked for: every request is [`Channel::Tls`].
    None,
    /// Asked for; a client without one is admitted ([`Channel::Tls`]), one with a certificate
    /// that chains to these roots is [`Channel::MutualTls`], any other is refused.
    Optional(RootCertStore),
    /// Required: the handshake fails without a certificate that chains to these roots.
    Required(RootCertStore),
}

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// rustls refused the certificate chain, the key or the protocol versions.
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built (e.g. an empty CA store).
    #[error("TLS client-certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The rustls server configuration of a BSM listener: this chain and key, client certificates as
/// `clients` says.
///
/// # Errors
/// [`TlsSetupError`].
pub fn tls_server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    clients: ClientCertificates,
) -> Result<rustls::ServerConfig, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let versions =
        rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let verifier =
        |roots: RootCertStore| WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    let with_verifier = match clients {
        ClientCertificates::None => versions.with_no_client_auth(),
        ClientCertificates::Optional(roots) => {
            versions.with_client_cert_verifier(verifier(roots).allow_unauthenticated().build()?)
        }
        ClientCertificates::Required(roots) => versions.with_client_cert_verifier(verifier(roots).build()?),
    };
    let mut config = with_verifier.with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A client certificate that rustls verified during the handshake.
#[derive(Clone)]
pub struct PeerCertificate {
    /// Its subject common names and SAN DNS names, in that order (empty when it names none, or
    /// does not parse beyond what rustls checked).
    pub names: Vec<String>,
    /// The certificate itself (the end-entity one).
    pub der: CertificateDer<'static>,
}

impl core::fmt::Debug for PeerCertificate {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PeerCertificate").field("names", &self.names).finish_non_exhaustive()
    }
}

impl PeerCertificate {
    fn new(der: CertificateDer<'static>) -> Self {
        let mut names = Vec::new();
        if let Ok((_, cert)) = x509_parser::parse_x509_certificate(&der) {
            names.extend(cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok().map(str::to_owned)));
            if let Ok(Some(san)) = cert.subject_alternative_name() {
                names.extend(san.value.general_names.iter().filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                    _ => None,
                }));
            }
        }
        PeerCertificate { names, der }
    }
}

/// What [`serve`] saw of a request's connection; in every request's extensions.
#[derive(Debug, Clone)]
pub struct Transport {
    /// The peer's address.
    pub peer: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The verified client certificate, if the client presented one.
    pub client_certificate: Option<PeerCertificate>,
}

impl Transport {
    /// The channel the BCAST_Client_ID rules see.
    #[must_use]
    pub fn channel(&self) -> Channel {
        match (self.tls, &self.client_certificate) {
            (false, _) => Channel::PlainHttp,
            (true, None) => Channel::Tls,
            (true, Some(_)) => Channel::MutualTls,
        }
    }
}

/// The channel of a request from its extensions; [`Channel::PlainHttp`] without a [`Transport`].
#[must_use]
pub fn channel_of(extensions: &Extensions) -> Channel {
    extensions.get::<Transport>().map_or(Channel::PlainHttp, Transport::channel)
}

/// Serves `app` on `listener` (HTTP/1.1; TLS with `tls`) until `shutdown` completes, then lets
/// open connections finish for up to [`SHUTDOWN_GRACE`]. Every request carries a [`Transport`]
/// and a `ConnectInfo<SocketAddr>`. A failed handshake or `accept` is logged and ends only that
/// connection.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let connections = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                tokio::spawn(connection(tcp, peer, acceptor.clone(), app.clone(), connections.watcher()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, connections.shutdown()).await.is_err() {
        tracing::warn!("connections still open after the shutdown grace period");
    }
}

/// One connection: the TLS handshake if any, then HTTP/1.1 until either side closes.
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    watcher: Watcher,
) {
    let Some(acceptor) = acceptor else {
        let transport = Transport { peer, tls: false, client_certificate: None };
        return http(TokioIo::new(tcp), app, transport, watcher).await;
    };
    let stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            // A client without an acceptable certificate ends here (ClientCertificates::Required).
            tracing::info!(%peer, error = %e, "TLS handshake refused");
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let client_certificate =
        stream.get_ref().1.peer_certificates().and_then(<[_]>::first).map(|c| PeerCertificate::new(c.clone()));
    if let Some(cert) = &client_certificate {
        tracing::debug!(%peer, names = ?cert.names, "client certificate verified");
    }
    let transport = Transport { peer, tls: true, client_certificate };
    http(TokioIo::new(stream), app, transport, watcher).await;
}

/// HTTP/1.1 over `io`, each request handed to `app` with the connection's extensions.
async fn http<I>(io: TokioIo<I>, app: Router, transport: Transport, watcher: Watcher)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let peer = transport.peer;
    let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(transport.clone());
        request.extensions_mut().insert(ConnectInfo(transport.peer));
        app.clone().oneshot(request.map(axum::body::Body::new))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_header_size(MAX_HEADER_SIZE)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    if let Err(e) = watcher.watch(builder.serve_connection(io, service)).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
