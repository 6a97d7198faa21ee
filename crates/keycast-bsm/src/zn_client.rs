//! The NAF side of Zn: asks the BSF for the keys of a B-TID and turns the answer into a
//! [`KeyRecord`] (TS 33.220 §4.5.3, profile P-7).
//!
//! The request is keycast-gba's Zn API: `POST /zn/v1/naf-keys` with
//! `{"btid", "naf_id": base64(BSM FQDN ‖ 01 00 00 00 01), "gba_u_aware": true}`. The BSM always
//! declares itself GBA_U-aware, because the Smartcard Profile seals LTKMs with Ks_int_NAF.
//!
//! | BSF answer | result |
//! |---|---|
//! | 200 with `ks_naf` (`gba-me`) or `ks_ext_naf` + `ks_int_naf` (`gba-u`) | [`KeyRecord`] |
//! | 404 `unknown-btid` | [`KeyError::UnknownBtid`] |
//! | 410 `expired` | [`KeyError::Expired`] |
//! | 400, 401, 403 | [`KeyError::Refused`] (this BSM's configuration) |
//! | 5xx, transport failure, timeout | [`KeyError::Unavailable`] |
//! | anything else, or a 200 that does not fit the table | [`KeyError::InvalidAnswer`] |
//!
//! The client authenticates either with a client certificate over TLS (how a BSM on another
//! host must do it) or with a bearer token over plain HTTP (the BSF accepts the token from
//! loopback only). \[chosen\] Each request opens its own connection: Zn is asked once per B-TID
//! and lifetime behind a [`crate::keys::KeyCache`], so pooling would buy little, and separate
//! connections let lookups for different terminals run side by side.
//!
//! The answer body holds keys: it is kept in zeroizing buffers and never logged.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use keycast_crypto::gba::NafId;
use keycast_crypto::keys::{KsExtNaf, KsIntNaf, KsNaf};
use keycast_provisioning::time::UtcTime;
use keycast_provisioning::zn as wire;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use zeroize::Zeroizing;

use crate::keys::{KeyError, KeyFuture, KeyRecord, KeySource, NafKeys};

/// Path of the BSF's Zn key API.
pub const ZN_PATH: &str = wire::PATH;
/// Largest Zn answer body read, octets (a real one is a few hundred).
pub const MAX_ANSWER_BODY: usize = 16 * 1024;
/// Default time for one Zn exchange, connection included \[chosen\].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// How the BSM proves to the BSF that it is the NAF it claims to be.
#[derive(Clone)]
pub enum ZnCredential {
    /// `Authorization: Bearer <token>` over plain HTTP; the BSF accepts it from loopback only.
    Bearer(Zeroizing<String>),
    /// HTTPS whose client configuration carries the BSM's certificate (subject or SAN = the
    /// BSM FQDN); the BSF is verified as `server_name`.
    Tls {
        /// rustls client configuration with the client certificate and the BSF's roots.
        config: Arc<rustls::ClientConfig>,
        /// The name the BSF's certificate must carry.
        server_name: ServerName<'static>,
    },
}

impl core::fmt::Debug for ZnCredential {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ZnCredential::Bearer(_) => f.write_str("Bearer(…)"),
            ZnCredential::Tls { server_name, .. } => f.debug_struct("Tls").field("server_name", server_name).finish(),
        }
    }
}

/// Where the BSF is and who the BSM is.
#[derive(Debug, Clone)]
pub struct ZnClientConfig {
    /// The address to connect to, `host:port`.
    pub bsf_address: String,
    /// The `Host` header value (the BSF's name).
    pub bsf_host: String,
    /// The BSM's FQDN: the NAF_Id sent is this ‖ `01 00 00 00 01` (profile P-7).
    pub naf_fqdn: String,
    /// The BSM's credential toward the BSF.
    pub credential: ZnCredential,
    /// Time allowed for one exchange.
    pub timeout: Duration,
}

impl ZnClientConfig {
    /// A configuration with the default timeout.
    #[must_use]
    pub fn new(bsf_address: &str, bsf_host: &str, naf_fqdn: &str, credential: ZnCredential) -> Self {
        ZnClientConfig {
            bsf_address: bsf_address.to_owned(),
            bsf_host: bsf_host.to_owned(),
            naf_fqdn: naf_fqdn.to_owned(),
            credential,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// The Zn client. Cheap to share: every call opens its own connection.
#[derive(Debug, Clone)]
pub struct ZnClient {
    config: ZnClientConfig,
    naf_id: Vec<u8>,
}

fn invalid(what: &str) -> KeyError {
    KeyError::InvalidAnswer(what.to_owned())
}

/// Reads a 200 answer for `btid` into a record.
fn parse_granted(btid: &str, body: &[u8]) -> Result<KeyRecord, KeyError> {
    let g = wire::KeyAnswer::from_json(body).map_err(|e| invalid(&e.to_string()))?;
    let keys = match &g.keys {
        wire::NafKeys::Me { ks_naf } => NafKeys::Me { ks_naf: KsNaf::from_bytes(*ks_naf.expose_secret()) },
        wire::NafKeys::U { ks_ext_naf, ks_int_naf: Some(int) } => NafKeys::U {
            ks_ext_naf: KsExtNaf::from_bytes(*ks_ext_naf.expose_secret()),
            ks_int_naf: KsIntNaf::from_bytes(*int.expose_secret()),
        },
        wire::NafKeys::U { ks_int_naf: None, .. } => {
            // Without Ks_int_NAF there is no SMK for a Smartcard Profile terminal.
            return Err(invalid("GBA_U answer without Ks_int_NAF (the BSF does not treat this BSM as GBA_U-aware)"));
        }
    };
    Ok(KeyRecord::new(btid, &g.impi, g.bootstrapped_at.unix_seconds(), g.lifetime.unix_seconds(), &keys))
}

/// Maps a refusal to its [`KeyError`].
fn parse_refusal(status: u16, body: &[u8]) -> KeyError {
    let refusal = wire::Refusal::from_json(body);
    let error = refusal.as_ref().map_or("", |r| r.error.as_str());
    match (status, error) {
        (404, wire::ERROR_UNKNOWN_BTID) => KeyError::UnknownBtid,
        (410, wire::ERROR_EXPIRED) => {
            let lifetime = refusal.as_ref().and_then(wire::Refusal::lifetime).map(UtcTime::unix_seconds);
            KeyError::Expired { lifetime: lifetime.unwrap_or(0) }
        }
        (400 | 401 | 403, _) => KeyError::Refused(format!("{status} {error}")),
        (500..=599, _) => KeyError::Unavailable(format!("BSF answered {status} {error}")),
        _ => KeyError::InvalidAnswer(format!("unexpected status {status} {error}")),
    }
}

async fn exchange<IO>(io: IO, request: hyper::Request<Full<Bytes>>) -> Result<(u16, Zeroizing<Vec<u8>>), KeyError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let unavailable = |e: hyper::Error| KeyError::Unavailable(format!("HTTP: {e}"));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(unavailable)?;
    let driver = tokio::spawn(conn);
    let response = sender.send_request(request).await.map_err(unavailable)?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), MAX_ANSWER_BODY)
        .collect()
        .await
        .map_err(|e| KeyError::Unavailable(format!("answer body: {e}")))?
        .to_bytes();
    drop(sender);
    driver.abort();
    Ok((status, Zeroizing::new(body.to_vec())))
}

impl ZnClient {
    /// A client with this configuration.
    #[must_use]
    pub fn new(config: ZnClientConfig) -> Self {
        let naf_id = NafId::mbms(&config.naf_fqdn).as_bytes().to_vec();
        ZnClient { config, naf_id }
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &ZnClientConfig {
        &self.config
    }

    /// Asks the BSF for the keys of `btid`. The BSF checks the lifetime with its own clock.
    ///
    /// # Errors
    /// [`KeyError`], as in the module documentation.
    pub async fn fetch(&self, btid: &str) -> Result<KeyRecord, KeyError> {
        match tokio::time::timeout(self.config.timeout, self.fetch_untimed(btid)).await {
            Ok(r) => r,
            Err(_) => Err(KeyError::Unavailable("Zn request timed out".to_owned())),
        }
    }

    async fn fetch_untimed(&self, btid: &str) -> Result<KeyRecord, KeyError> {
        let body = wire::KeyRequest { btid: btid.to_owned(), naf_id: self.naf_id.clone(), gba_u_aware: true }.to_json();
        let mut builder = hyper::Request::builder()
            .method("POST")
            .uri(ZN_PATH)
            .header(HOST, self.config.bsf_host.as_str())
            .header(CONTENT_TYPE, "application/json");
        if let ZnCredential::Bearer(token) = &self.config.credential {
            builder = builder.header(AUTHORIZATION, format!("Bearer {}", token.as_str()));
        }
        let request = builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| KeyError::Refused(format!("Zn request cannot be built: {e}")))?;
        let tcp = TcpStream::connect(&self.config.bsf_address)
            .await
            .map_err(|e| KeyError::Unavailable(format!("connect to {}: {e}", self.config.bsf_address)))?;
        // Small request, one answer: waiting for Nagle would only add latency.
        let _ = tcp.set_nodelay(true);
        let (status, answer) = match &self.config.credential {
            ZnCredential::Bearer(_) => exchange(tcp, request).await?,
            ZnCredential::Tls { config, server_name } => {
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(server_name.clone(), tcp)
                    .await
                    .map_err(|e| KeyError::Unavailable(format!("TLS: {e}")))?;
                exchange(tls, request).await?
            }
        };
        if status == 200 { parse_granted(btid, &answer) } else { Err(parse_refusal(status, &answer)) }
    }
}

impl KeySource for ZnClient {
    fn keys<'a>(&'a self, btid: &'a str, _now: u64) -> KeyFuture<'a> {
        Box::pin(async move { self.fetch(btid).await.map(Arc::new) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ERERERERERERERERERERERERERERERERERERERERERE=";

    #[test]
    fn granted_answers_are_read_strictly() {
        let me = format!(
            r#"{{"impi":"i@x","gba_type":"gba-me","bootstrapped_at":"2026-06-01T00:00:00Z",{}"#,
            format_args!(r#""lifetime":"2026-06-02T00:00:00Z","ks_naf":"{KEY}"}}"#)
        );
        let r = parse_granted("b@bsf", me.as_bytes()).unwrap();
        assert_eq!((r.btid(), r.impi(), r.lifetime() - r.bootstrapped_at()), ("b@bsf", "i@x", 86_400));

        let u_without_int = me.replace("gba-me", "gba-u").replace("ks_naf", "ks_ext_naf");
        assert!(matches!(parse_granted("b", u_without_int.as_bytes()), Err(KeyError::InvalidAnswer(_))));
        let mixed = me.replace("gba-me", "gba-u");
        assert!(matches!(parse_granted("b", mixed.as_bytes()), Err(KeyError::InvalidAnswer(_))));
        let short = me.replace(KEY, "AAAA");
        assert!(matches!(parse_granted("b", short.as_bytes()), Err(KeyError::InvalidAnswer(_))));
        let bad_time = me.replace("2026-06-02T00:00:00Z", "tomorrow");
        assert!(matches!(parse_granted("b", bad_time.as_bytes()), Err(KeyError::InvalidAnswer(_))));
        assert!(matches!(parse_granted("b", b"not json"), Err(KeyError::InvalidAnswer(_))));
    }

    #[test]
    fn refusals_are_distinct() {
        assert_eq!(parse_refusal(404, br#"{"error":"unknown-btid"}"#), KeyError::UnknownBtid);
        assert_eq!(
            parse_refusal(410, br#"{"error":"expired","lifetime":"1970-01-01T00:01:40Z"}"#),
            KeyError::Expired { lifetime: 100 }
        );
        assert!(matches!(parse_refusal(403, br#"{"error":"unknown-naf"}"#), KeyError::Refused(_)));
        assert!(matches!(parse_refusal(401, b""), KeyError::Refused(_)));
        assert!(matches!(parse_refusal(503, b""), KeyError::Unavailable(_)));
        assert!(matches!(parse_refusal(404, b"<html/>"), KeyError::InvalidAnswer(_)));
    }

    #[test]
    fn debug_hides_the_token() {
        let c = ZnCredential::Bearer(Zeroizing::new("secret-token".to_owned()));
        assert_eq!(format!("{c:?}"), "Bearer(…)");
    }
}
