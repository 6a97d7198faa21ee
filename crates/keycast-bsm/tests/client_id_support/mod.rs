//! For the BCAST_Client_ID tests: a test CA made with rcgen (the BSM's server certificate, a
//! terminal's client certificate, and a second CA nobody trusts), the provisioning routes served
//! by `keycast_bsm::http::tls::serve` on two listeners sharing one state (HTTPS and plain HTTP),
//! and a terminal's Digest exchange with a User-Agent of the test's choosing.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use keycast_bsm::client_id::BcastClientIdPolicy;
use keycast_bsm::http::UaGuard;
use keycast_bsm::http::provisioning::{ProvisioningState, bsm_app};
use keycast_bsm::http::tls::{ClientCertificates, serve, tls_server_config};
use keycast_bsm::keys::KeyCache;
use keycast_bsm::service::{Provisioning, ProvisioningConfig};
use keycast_bsm::store::sql::SqliteStore;
use keycast_bsm::ua::{UaAuthenticator, UaConfig};
use keycast_bsm::zn_client::{ZnClient, ZnClientConfig, ZnCredential};
use keycast_crypto::at_rest::StorageKey;
use keycast_gba::client::http::{HttpClient, HttpClientError, UbTransport as _};
use keycast_gba::client::{HttpRequest, HttpResponse, NafCredentials};
use keycast_provisioning::digest::{AuthenticationInfo, Challenge, Qop};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::service_support;
use crate::ua_support::{BSF_DOMAIN, BSM, RunningBsf, TestClock, ZN_TOKEN};

/// The name in the terminal's client certificate.
pub const TERMINAL_CERT_NAME: &str = "terminal-0001.devices.example.org";

/// One certificate authority: its certificate and what it signs with.
pub struct TestCa {
    pub cert: CertificateDer<'static>,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        TestCa { cert: issuer.der().clone(), issuer }
    }

    /// An end-entity certificate for `name` with one extended key usage, and its PKCS#8 key.
    pub fn issue(
        &self,
        name: &str,
        usage: ExtendedKeyUsagePurpose,
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (vec![cert.der().clone()], PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())))
    }

    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert.clone()).unwrap();
        roots
    }
}

/// Who a test client is at the TLS layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCert {
    /// No certificate.
    None,
    /// A terminal certificate from the CA the BSM trusts.
    Trusted,
    /// A terminal certificate from a CA the BSM does not know.
    Foreign,
}

/// The test PKI: one CA for the BSM and its terminals, one stranger.
pub struct Pki {
    pub ca: TestCa,
    pub stranger: TestCa,
}

impl Pki {
    pub fn new() -> Self {
        Pki { ca: TestCa::new("Keycast test CA"), stranger: TestCa::new("Unknown CA") }
    }

    pub fn server_config(&self, clients: ClientCertificates) -> Arc<rustls::ServerConfig> {
        let (chain, key) = self.ca.issue(BSM, ExtendedKeyUsagePurpose::ServerAuth);
        Arc::new(tls_server_config(chain, key, clients).unwrap())
    }

    /// A terminal's rustls configuration: trusts the test CA, with the certificate `cert` says.
    pub fn client_config(&self, cert: ClientCert) -> Arc<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(self.ca.roots());
        let issuer = match cert {
            ClientCert::None => return Arc::new(builder.with_no_client_auth()),
            ClientCert::Trusted => &self.ca,
            ClientCert::Foreign => &self.stranger,
        };
        let (chain, key) = issuer.issue(TERMINAL_CERT_NAME, ExtendedKeyUsagePurpose::ClientAuth);
        Arc::new(builder.with_client_auth_cert(chain, key).unwrap())
    }

    pub fn https_client(&self, addr: SocketAddr, cert: ClientCert) -> HttpClient {
        HttpClient::tls(addr.to_string(), ServerName::try_from(BSM).unwrap(), self.client_config(cert))
            .with_timeout(Duration::from_secs(10))
    }
}

/// The provisioning routes over a filled SQLite store on two listeners sharing one state:
/// HTTPS (`https`) and plain HTTP (`http`), both through `http::tls::serve`.
pub struct TlsBsm {
    pub https: SocketAddr,
    pub http: SocketAddr,
    pub state: Arc<ProvisioningState<SqliteStore>>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl TlsBsm {
    pub async fn start(
        bsf: &RunningBsf,
        clock: &TestClock,
        tls: Arc<rustls::ServerConfig>,
        policy: BcastClientIdPolicy,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("bsm.db"), StorageKey::from_bytes([7; 16])).await.unwrap();
        service_support::fill(&store).await;
        let zn = ZnClient::new(ZnClientConfig::new(
            &bsf.addr.to_string(),
            BSF_DOMAIN,
            BSM,
            ZnCredential::Bearer(ZN_TOKEN.to_owned().into()),
        ));
        let authenticator = UaAuthenticator::new(&UaConfig::new(BSM, [9; 32])).unwrap();
        let guard = Arc::new(UaGuard::new(authenticator, Arc::new(KeyCache::new(zn, 64))).with_clock(clock.clock()));
        let state = Arc::new(
            ProvisioningState::new(Provisioning::new(store, ProvisioningConfig::new(BSM)), guard)
                .with_clock(clock.clock())
                .with_client_id_policy(policy),
        );
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut addrs = Vec::new();
        for tls in [Some(tls), None] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.push(listener.local_addr().unwrap());
            let mut stopped = stopped.clone();
            let until_stopped = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            tasks.push(tokio::spawn(serve(listener, bsm_app(state.clone()), tls, until_stopped)));
        }
        TlsBsm { https: addrs[0], http: addrs[1], state, stop, tasks, _dir: dir }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            tokio::time::timeout(Duration::from_secs(15), task).await.expect("listener stops").unwrap();
        }
    }
}

fn request(uri: &str, content_type: &str, body: &[u8], user_agent: &str, authorization: Option<String>) -> HttpRequest {
    let mut headers = vec![
        ("Host".to_owned(), BSM.to_owned()),
        ("User-Agent".to_owned(), user_agent.to_owned()),
        ("Content-Type".to_owned(), content_type.to_owned()),
    ];
    headers.extend(authorization.map(|a| ("Authorization".to_owned(), a)));
    HttpRequest { method: "POST".into(), uri: uri.into(), headers, body: body.to_vec() }
}

/// The terminal's Ua exchange on `client`: POST, 401, POST with Digest (auth-int) and this
/// User-Agent on both; the answer's `rspauth` is checked whatever the status, since the Digest
/// layer signs every answer it let through (the BSM's 403s included). `Err` when the transport
/// fails (e.g. the TLS handshake is refused).
pub async fn ua_exchange(
    client: &mut HttpClient,
    creds: &NafCredentials,
    uri: &str,
    content_type: &str,
    body: &[u8],
    user_agent: &str,
) -> Result<HttpResponse, HttpClientError> {
    let first = client.send(&request(uri, content_type, body, user_agent, None)).await?;
    assert_eq!(first.status, 401, "{first:?}");
    let challenge = Challenge::parse(first.header("WWW-Authenticate").unwrap()).unwrap();
    let mut digest = creds.digest_client(challenge, &[Qop::AuthInt]).expect("realm is the BSM's");
    let sent = digest.authorize("POST", uri, body, &[0x5a; 8]).unwrap();
    let authorization = sent.credentials().to_header_value().unwrap();
    let response = client.send(&request(uri, content_type, body, user_agent, Some(authorization))).await?;
    let info = AuthenticationInfo::parse(response.header("Authentication-Info").expect("Authentication-Info"));
    digest.check_authentication_info(&sent, &info.unwrap(), &response.body).expect("rspauth verifies");
    Ok(response)
}
