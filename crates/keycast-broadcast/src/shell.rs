//! The tokio shell around the core: the live SEK/PEKs from the BSM's broadcaster API, RTP and
//! RTCP in over UDP, SRTP/SRTCP (or ESP) out to the destination, STKMs to the destination
//! address on the STKM port (2269 by P-8), the SDP file, and metrics.
//!
//! - **Keys**: `GET /internal/v1/key-groups/{group}/live` with the broadcaster token (HTTP/1.1
//!   over TCP; the API answers loopback peers only). Fetched at start, then every `refresh` and
//!   at the latest halfway to the end of the current key while no next key is known; on an
//!   error again after 1 s, doubling up to 30 s, while the broadcaster keeps serving with the
//!   keys it has. Key bytes are never logged.
//! - **Packets**: RTP on `rtp_listen`, RTCP on its port + 1; each is protected with the TEK of
//!   the instant it is handled and sent to `destination` (RTCP to its port + 1). Without a TEK a
//!   packet is dropped, never sent in the clear.
//! - **Metrics** (`metrics` crate; the binary installs the Prometheus recorder):
//!   `keycast_broadcast_packets_in_total{kind}`, `keycast_broadcast_packets_out_total{kind}`,
//!   `keycast_broadcast_packets_dropped_total{reason}`, `keycast_broadcast_stkms_sent_total`,
//!   `keycast_broadcast_tek_switches_total`, `keycast_broadcast_key_fetches_total{outcome}`.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keycast_crypto::keys::SekPek;
use keycast_mikey::{KeyDomainId, SekPekId};
use serde::Deserialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::watch;
use zeroize::{Zeroize as _, Zeroizing};

use crate::keys::{LiveKey, OsRandom, RandomSource as _};
use crate::protect::{Protector, TrafficMode};
use crate::schedule::{ScheduleConfig, TekSchedule};
use crate::sdp::SessionDescription;
use crate::stream::{StkmSettings, StkmStream};

/// Largest answer of the BSM accepted, octets.
const MAX_ANSWER: usize = 64 * 1024;
/// Time allowed for one key fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// First retry delay after a failed fetch.
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// Longest retry delay.
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Largest UDP payload read.
const MAX_DATAGRAM: usize = 65_535;

/// Where the live keys come from.
#[derive(Clone)]
pub struct BsmSource {
    /// `host:port` of the BSM's admin listener.
    pub address: String,
    /// The HTTP `Host`.
    pub host: String,
    /// The broadcaster token.
    pub token: Zeroizing<String>,
    /// The key group.
    pub key_group: u16,
}

impl core::fmt::Debug for BsmSource {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BsmSource")
            .field("address", &self.address)
            .field("key_group", &self.key_group)
            .finish_non_exhaustive()
    }
}

impl BsmSource {
    /// From an `http://host:port[/]` URL (plain HTTP: the API serves loopback peers only).
    ///
    /// # Errors
    /// [`BroadcastError::Config`] for another scheme or a missing port.
    pub fn from_url(url: &str, token: Zeroizing<String>, key_group: u16) -> Result<Self, BroadcastError> {
        let rest = url
            .strip_prefix("http://")
            .ok_or(BroadcastError::Config("the BSM URL must be http://host:port (the API is loopback only)"))?;
        let authority = rest.split('/').next().unwrap_or_default();
        let host = authority
            .rsplit_once(':')
            .filter(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
            .map(|(h, _)| h.to_owned())
            .ok_or(BroadcastError::Config("the BSM URL needs host:port"))?;
        Ok(Self { address: authority.to_owned(), host, token, key_group })
    }
}

/// Why the broadcaster failed or a fetch went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BroadcastError {
    /// The configuration cannot work.
    #[error("configuration: {0}")]
    Config(&'static str),
    /// A socket failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// The BSM answered with an error status.
    #[error("BSM answered {0}")]
    Status(u16),
    /// The BSM's answer could not be understood.
    #[error("invalid BSM answer: {0}")]
    Answer(String),
    /// The fetch took too long.
    #[error("BSM did not answer in time")]
    Timeout,
    /// The STKM settings are unusable.
    #[error(transparent)]
    Stream(#[from] crate::stream::StreamError),
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> BroadcastError {
    move |source| BroadcastError::Io { what, source }
}

#[derive(Deserialize)]
struct Answer {
    keys: Vec<AnswerKey>,
}

#[derive(Deserialize)]
struct AnswerKey {
    key_domain_id: String,
    key_group: u16,
    key_number: u16,
    key: String,
    rand: String,
    from: u64,
    until: u64,
    ts_low: u32,
    ts_high: u32,
    tek_id_low: u16,
    tek_id_high: u16,
}

impl Drop for AnswerKey {
    fn drop(&mut self) {
        self.key.zeroize();
        self.rand.zeroize();
    }
}

fn hex_array<const N: usize>(text: &str, what: &str) -> Result<Zeroizing<[u8; N]>, BroadcastError> {
    let mut out = Zeroizing::new([0u8; N]);
    hex::decode_to_slice(text, &mut out[..]).map_err(|_| BroadcastError::Answer(format!("{what}: {N} hex bytes")))?;
    Ok(out)
}

/// Parses the broadcaster API's JSON answer.
///
/// # Errors
/// [`BroadcastError::Answer`].
pub fn parse_live(body: &[u8]) -> Result<Vec<LiveKey>, BroadcastError> {
    let answer: Answer = serde_json::from_slice(body).map_err(|e| BroadcastError::Answer(e.to_string()))?;
    answer
        .keys
        .iter()
        .map(|k| {
            let kd = hex_array::<3>(&k.key_domain_id, "key_domain_id")?;
            if k.key_group == 0 || k.key_number == 0 || k.from >= k.until {
                return Err(BroadcastError::Answer("key group, number or window out of range".into()));
            }
            Ok(LiveKey {
                key_domain_id: KeyDomainId(*kd),
                sek_pek_id: SekPekId { key_group: k.key_group, key_number: k.key_number },
                key: SekPek::from_bytes(*hex_array::<16>(&k.key, "key")?),
                rand: *hex_array::<16>(&k.rand, "rand")?,
                from: k.from,
                until: k.until,
                ts_low: k.ts_low,
                ts_high: k.ts_high,
                tek_id_low: k.tek_id_low,
                tek_id_high: k.tek_id_high,
            })
        })
        .collect()
}

/// One fetch of the group's live keys.
///
/// # Errors
/// [`BroadcastError`] (transport, status, answer, timeout).
pub async fn fetch_live(source: &BsmSource) -> Result<Vec<LiveKey>, BroadcastError> {
    tokio::time::timeout(FETCH_TIMEOUT, fetch_inner(source)).await.map_err(|_| BroadcastError::Timeout)?
}

async fn fetch_inner(source: &BsmSource) -> Result<Vec<LiveKey>, BroadcastError> {
    let mut stream = TcpStream::connect(&source.address).await.map_err(io("connecting to the BSM"))?;
    let request = Zeroizing::new(format!(
        "GET /internal/v1/key-groups/{}/live HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Accept: application/json\r\nConnection: close\r\n\r\n",
        source.key_group,
        source.host,
        source.token.as_str()
    ));
    stream.write_all(request.as_bytes()).await.map_err(io("sending to the BSM"))?;
    let mut answer = Zeroizing::new(Vec::with_capacity(4096));
    let mut limited = (&mut stream).take(MAX_ANSWER as u64 + 1);
    limited.read_to_end(&mut answer).await.map_err(io("reading the BSM's answer"))?;
    if answer.len() > MAX_ANSWER {
        return Err(BroadcastError::Answer("too long".into()));
    }
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| BroadcastError::Answer("no end of header".into()))?;
    let head = std::str::from_utf8(&answer[..split]).map_err(|_| BroadcastError::Answer("header not UTF-8".into()))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| BroadcastError::Answer("no status".into()))?;
    if status != 200 {
        return Err(BroadcastError::Status(status));
    }
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return Err(BroadcastError::Answer("chunked answers are not supported".into()));
    }
    parse_live(&answer[split + 4..])
}

/// When to fetch again after a good answer at `now` (Unix s): `refresh`, but while no next key
/// is known at the latest halfway to the end of the current one (at least 1 s).
#[must_use]
pub fn refresh_after(keys: &[LiveKey], now: u64, refresh: Duration) -> Duration {
    if keys.len() >= 2 {
        return refresh;
    }
    let left = keys.first().map_or(0, |k| k.until.saturating_sub(now));
    refresh.min(Duration::from_secs(left / 2)).max(Duration::from_secs(1))
}

/// The broadcaster's configuration.
#[derive(Debug, Clone)]
pub struct BroadcastConfig {
    /// Where the keys come from.
    pub bsm: BsmSource,
    /// TEK crypto period and lead.
    pub schedule: ScheduleConfig,
    /// STKM extension and interval.
    pub stkm: StkmSettings,
    /// SRTP policy or ESP.
    pub mode: TrafficMode,
    /// Where RTP arrives (RTCP on port + 1).
    pub rtp_listen: SocketAddr,
    /// Where protected RTP goes (RTCP to port + 1); unicast, multicast or loopback.
    pub destination: SocketAddr,
    /// STKM port on the destination address (2269 by P-8).
    pub stkm_port: u16,
    /// Multicast TTL.
    pub multicast_ttl: u32,
    /// The SDP file and what it says.
    pub sdp: Option<(PathBuf, SessionDescription)>,
    /// Key refresh interval.
    pub refresh: Duration,
}

/// The broadcaster with its sockets bound.
#[derive(Debug)]
pub struct Broadcaster {
    config: BroadcastConfig,
    rtp: UdpSocket,
    rtcp: UdpSocket,
    out: UdpSocket,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Broadcaster {
    /// Binds the RTP and RTCP sockets and the sending socket.
    ///
    /// # Errors
    /// [`BroadcastError::Io`].
    pub async fn bind(config: BroadcastConfig) -> Result<Self, BroadcastError> {
        let rtp = UdpSocket::bind(config.rtp_listen).await.map_err(io("binding the RTP port"))?;
        let rtp_addr = rtp.local_addr().map_err(io("RTP address"))?;
        let rtcp_port =
            rtp_addr.port().checked_add(1).ok_or(BroadcastError::Config("the RTP port must leave room for RTCP"))?;
        let rtcp =
            UdpSocket::bind(SocketAddr::new(rtp_addr.ip(), rtcp_port)).await.map_err(io("binding the RTCP port"))?;
        let any = match config.destination.ip() {
            IpAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            IpAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
        };
        let out = UdpSocket::bind(any).await.map_err(io("binding the sending socket"))?;
        if config.destination.is_ipv4() {
            out.set_multicast_ttl_v4(config.multicast_ttl).map_err(io("multicast TTL"))?;
        }
        Ok(Self { config, rtp, rtcp, out })
    }

    /// Where RTP is read.
    ///
    /// # Errors
    /// [`BroadcastError::Io`].
    pub fn rtp_addr(&self) -> Result<SocketAddr, BroadcastError> {
        self.rtp.local_addr().map_err(io("RTP address"))
    }

    /// Runs until `stop` resolves.
    ///
    /// # Errors
    /// [`BroadcastError`] for a configuration that cannot work or a failing socket.
    pub async fn run(self, stop: impl Future<Output = ()>) -> Result<(), BroadcastError> {
        let Broadcaster { config, rtp, rtcp, out } = self;
        if let Some((path, sdp)) = &config.sdp {
            tokio::fs::write(path, sdp.protected()).await.map_err(io("writing the SDP file"))?;
        }
        let mut csb = [0u8; 4];
        OsRandom.fill(&mut csb).map_err(|_| BroadcastError::Config("no randomness"))?;
        let mut stream = StkmStream::new(config.stkm.clone(), u32::from_be_bytes(csb))?;
        let mut schedule = TekSchedule::new(config.schedule, OsRandom);
        let mut protector = Protector::new(config.mode, OsRandom);
        let (keys_tx, mut keys_rx) = watch::channel::<Option<Arc<Vec<LiveKey>>>>(None);
        let fetcher = tokio::spawn(fetch_loop(config.bsm.clone(), config.refresh, keys_tx));
        let rtp_dest = config.destination;
        let rtcp_dest = SocketAddr::new(rtp_dest.ip(), rtp_dest.port().wrapping_add(1));
        let stkm_dest = SocketAddr::new(rtp_dest.ip(), config.stkm_port);
        tracing::info!(
            rtp = %config.rtp_listen, destination = %rtp_dest, stkm = %stkm_dest, group = config.bsm.key_group,
            "broadcaster serving"
        );
        let mut rtp_buf = vec![0u8; MAX_DATAGRAM];
        let mut rtcp_buf = vec![0u8; MAX_DATAGRAM];
        let mut stop = std::pin::pin!(stop);
        let mut tick = Tick { out: &out, stkm_dest };
        loop {
            let wake = [schedule.next_event(), stream.next_due()].into_iter().flatten().min();
            let sleep = wake.map_or(Duration::from_millis(500), |w| Duration::from_millis(w.saturating_sub(now_ms())));
            tokio::select! {
                () = &mut stop => break,
                changed = keys_rx.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let keys = keys_rx.borrow_and_update().clone();
                    if let Some(keys) = keys {
                        schedule.set_keys(keys.iter().cloned());
                    }
                }
                r = rtp.recv_from(&mut rtp_buf) => {
                    let len = match r {
                        Ok((len, _)) => len,
                        Err(e) => {
                            // A failed read (e.g. a truncated datagram) loses one packet, not the service.
                            tracing::warn!(error = %e, "reading RTP failed");
                            continue;
                        }
                    };
                    tick.run(&mut schedule, &mut stream, &mut protector).await;
                    metrics::counter!("keycast_broadcast_packets_in_total", "kind" => "rtp").increment(1);
                    let mut packet = rtp_buf[..len].to_vec();
                    match protector.protect_rtp(&mut packet) {
                        Ok(()) => {
                            if let Err(e) = out.send_to(&packet, rtp_dest).await {
                                tracing::warn!(error = %e, "sending SRTP failed");
                            } else {
                                metrics::counter!("keycast_broadcast_packets_out_total", "kind" => "rtp").increment(1);
                            }
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "RTP packet dropped");
                            metrics::counter!("keycast_broadcast_packets_dropped_total", "reason" => drop_reason(&e)).increment(1);
                        }
                    }
                }
                r = rtcp.recv_from(&mut rtcp_buf) => {
                    let len = match r {
                        Ok((len, _)) => len,
                        Err(e) => {
                            // A failed read (e.g. a truncated datagram) loses one packet, not the service.
                            tracing::warn!(error = %e, "reading RTCP failed");
                            continue;
                        }
                    };
                    tick.run(&mut schedule, &mut stream, &mut protector).await;
                    metrics::counter!("keycast_broadcast_packets_in_total", "kind" => "rtcp").increment(1);
                    let mut packet = rtcp_buf[..len].to_vec();
                    match protector.protect_rtcp(&mut packet) {
                        Ok(()) => {
                            if let Err(e) = out.send_to(&packet, rtcp_dest).await {
                                tracing::warn!(error = %e, "sending SRTCP failed");
                            } else {
                                metrics::counter!("keycast_broadcast_packets_out_total", "kind" => "rtcp").increment(1);
                            }
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "RTCP packet dropped");
                            metrics::counter!("keycast_broadcast_packets_dropped_total", "reason" => drop_reason(&e)).increment(1);
                        }
                    }
                }
                () = tokio::time::sleep(sleep) => {}
            }
            tick.run(&mut schedule, &mut stream, &mut protector).await;
        }
        fetcher.abort();
        tracing::info!("broadcaster stopped");
        Ok(())
    }
}

fn drop_reason(e: &crate::protect::ProtectError) -> &'static str {
    match e {
        crate::protect::ProtectError::NoKey => "no_key",
        _ => "invalid",
    }
}

/// Moves the core to now and sends the STKMs due.
struct Tick<'a> {
    out: &'a UdpSocket,
    stkm_dest: SocketAddr,
}

impl Tick<'_> {
    async fn run(
        &mut self,
        schedule: &mut TekSchedule<OsRandom>,
        stream: &mut StkmStream,
        protector: &mut Protector<OsRandom>,
    ) {
        let now = now_ms();
        if schedule.keys().is_empty() {
            return;
        }
        if let Err(e) = schedule.advance(now) {
            tracing::warn!(error = %e, "TEK schedule cannot move on; keeping the current TEK");
        }
        if let Some(current) = schedule.current()
            && protector.set_tek(current)
        {
            metrics::counter!("keycast_broadcast_tek_switches_total").increment(1);
            tracing::info!(sek_pek = %format!("{:08x}", current.key.id_u32()), tek_id = current.tek_id, "TEK in use");
        }
        match stream.poll(now, schedule) {
            Ok(stkms) => {
                for s in stkms {
                    match self.out.send_to(&s.bytes, self.stkm_dest).await {
                        Ok(_) => metrics::counter!("keycast_broadcast_stkms_sent_total").increment(1),
                        Err(e) => tracing::warn!(error = %e, "sending an STKM failed"),
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "building STKMs failed"),
        }
    }
}

async fn fetch_loop(source: BsmSource, refresh: Duration, tx: watch::Sender<Option<Arc<Vec<LiveKey>>>>) {
    let mut backoff = RETRY_FIRST;
    loop {
        let delay = match fetch_live(&source).await {
            Ok(keys) => {
                metrics::counter!("keycast_broadcast_key_fetches_total", "outcome" => "ok").increment(1);
                backoff = RETRY_FIRST;
                let ids: Vec<String> =
                    keys.iter().map(|k| format!("{:08x}", u32::from_be_bytes(k.sek_pek_id.to_bytes()))).collect();
                tracing::debug!(keys = ?ids, "live keys fetched");
                let delay = refresh_after(&keys, now_ms() / 1000, refresh);
                if tx.send(Some(Arc::new(keys))).is_err() {
                    return;
                }
                delay
            }
            Err(e) => {
                metrics::counter!("keycast_broadcast_key_fetches_total", "outcome" => "error").increment(1);
                tracing::warn!(error = %e, retry_in = ?backoff, "fetching the live keys failed; serving with the keys held");
                let d = backoff;
                backoff = (backoff * 2).min(RETRY_MAX);
                d
            }
        };
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = tx.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let s = BsmSource::from_url("http://127.0.0.1:9092/", Zeroizing::new("t".into()), 1).unwrap();
        assert_eq!((s.address.as_str(), s.host.as_str()), ("127.0.0.1:9092", "127.0.0.1"));
        assert!(BsmSource::from_url("https://x:1", Zeroizing::new("t".into()), 1).is_err());
        assert!(BsmSource::from_url("http://x", Zeroizing::new("t".into()), 1).is_err());
    }

    #[test]
    fn parses_the_bsm_answer_and_refuses_bad_keys() {
        let body = format!(
            r#"{{"now":1,"streaming":true,"keys":[{{"key_domain_id":"00f110","key_group":1,"key_number":2,
            "key":"{}","rand":"{}","from":10,"until":20,"ts_low":5,"ts_high":6,"tek_id_low":0,"tek_id_high":65534}}]}}"#,
            "11".repeat(16),
            "22".repeat(16)
        );
        let keys = parse_live(body.as_bytes()).unwrap();
        assert_eq!(keys[0].key, SekPek::from_bytes([0x11; 16]));
        assert_eq!(keys[0].rand, [0x22; 16]);
        assert_eq!(keys[0].sek_pek_id, SekPekId { key_group: 1, key_number: 2 });
        assert!(parse_live(body.replace("\"11", "\"1").as_bytes()).is_err());
        assert!(parse_live(b"{}").is_err());
    }

    #[test]
    fn refresh_before_the_key_ends() {
        let k = crate::schedule::tests::key(1, 100, 200);
        assert_eq!(refresh_after(std::slice::from_ref(&k), 150, Duration::from_secs(60)), Duration::from_secs(25));
        assert_eq!(refresh_after(&[k.clone(), k], 150, Duration::from_secs(60)), Duration::from_secs(60));
        assert_eq!(refresh_after(&[], 150, Duration::from_secs(60)), Duration::from_secs(1));
    }

    /// A fake BSM that fails the first fetch and then fails again once `fail_after` answers
    /// were given: the broadcaster retries, then keeps sending STKMs with the keys it holds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retries_then_keeps_serving_without_the_bsm() {
        use std::sync::atomic::{AtomicUsize, Ordering};

        let bsm = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let bsm_addr = bsm.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let body = format!(
            r#"{{"now":{now},"streaming":true,"keys":[{{"key_domain_id":"00f110","key_group":3,"key_number":1,
            "key":"{}","rand":"{}","from":{},"until":{},"ts_low":{},"ts_high":{},"tek_id_low":0,"tek_id_high":65534}}]}}"#,
            "11".repeat(16),
            "22".repeat(16),
            now - 10,
            now + 3600,
            crate::keys::ntp_seconds((now - 10) * 1000).unwrap(),
            crate::keys::ntp_seconds((now + 3599) * 1000).unwrap(),
        );
        let counter = hits.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut c, _)) = bsm.accept().await else { return };
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = c.read(&mut buf).await;
                let answer = if n == 1 {
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                } else {
                    "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
                };
                let _ = c.write_all(answer.as_bytes()).await;
            }
        });
        let dest = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let stkm = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let config = BroadcastConfig {
            bsm: BsmSource::from_url(&format!("http://{bsm_addr}"), Zeroizing::new("t".repeat(20)), 3).unwrap(),
            schedule: ScheduleConfig::new(2_000, 1_000).unwrap(),
            stkm: StkmSettings::default(),
            mode: TrafficMode::Srtp(keycast_traffic::srtp::SrtpPolicy::rfc3711()),
            rtp_listen: "127.0.0.1:0".parse().unwrap(),
            destination: dest.local_addr().unwrap(),
            stkm_port: stkm.local_addr().unwrap().port(),
            multicast_ttl: 1,
            sdp: None,
            refresh: Duration::from_secs(1),
        };
        let b = Broadcaster::bind(config).await.unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(b.run(async move {
            let _ = stop_rx.await;
        }));
        let mut buf = [0u8; 2048];
        // First fetch 503, the retry 1 s later succeeds.
        let first = tokio::time::timeout(Duration::from_secs(5), stkm.recv(&mut buf)).await.unwrap().unwrap();
        assert!(keycast_mikey::Stkm::decode(&buf[..first]).is_ok());
        assert!(hits.load(Ordering::SeqCst) >= 2);
        // Later fetches fail; STKMs keep coming, with TEK switches.
        let mut teks = std::collections::BTreeSet::new();
        let until = tokio::time::Instant::now() + Duration::from_secs(4);
        while tokio::time::Instant::now() < until {
            if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(500), stkm.recv(&mut buf)).await {
                teks.insert(keycast_mikey::Stkm::decode(&buf[..n]).unwrap().tek_id());
            }
        }
        assert!(hits.load(Ordering::SeqCst) >= 3, "fetched again and failed");
        assert!(teks.len() >= 2, "still serving new TEKs: {teks:?}");
        let _ = stop_tx.send(());
        run.await.unwrap().unwrap();
    }
}
