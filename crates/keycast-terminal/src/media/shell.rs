//! The tokio edge of live watching (`keycast terminal watch`): UDP in, [`Watcher`], UDP out.
//!
//! - **In**: one socket for STKMs (port 2269 by default, TS 33.246 §6.3.3.2 and profile P-8),
//!   one for SRTP and one for SRTCP on the SRTP port + 1 (RFC 3550 §11). A multicast address
//!   is joined on the default interface (the socket binds the wildcard address and that port).
//! - **Out**: clear RTP to [`WatchOptions::rtp_out`], clear RTCP to its port + 1, from one
//!   unbound socket; a player reads them through the SDP of [`super::sdp`].
//! - **Keys**: the key holder alone, or a [`TerminalShell`] around it, which also sends the LTKM
//!   Request (or MBMS MSK request) an [`Event::KeyMissing`] asks for and then feeds the same STKM
//!   in again, so the stream opens as soon as the answer's LTKM is in the card. While that
//!   request runs, datagrams wait in the sockets' buffers.
//! - **Stop**: when `shutdown` resolves (ctrl-c in the CLI), after [`WatchOptions::duration`], or
//!   after [`WatchOptions::max_packets`] clear RTP packets; the [`WatchSummary`] tells what
//!   happened.

use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use keycast_provisioning::sprov::BcastKeyId;
use keycast_traffic::srtp::Mki;
use tokio::net::UdpSocket;

use super::{Event, MediaTap, Packet, WatchConfig, WatchStats, Watcher};
use crate::key_holder::MbmsKeyHolder;
use crate::ltkm_intake::Interface;
use crate::shell::TerminalShell;

/// The STKM port (TS 33.246 §6.3.3.2; profile P-8).
pub const STKM_PORT: u16 = 2269;
/// Default SRTP port of `keycast terminal watch` \[chosen\] (RFC 3551's common RTP port).
pub const DEFAULT_SRTP_PORT: u16 = 5004;
/// Default port of the clear RTP toward the local player \[chosen\] (RTCP on 5007).
pub const DEFAULT_RTP_OUT_PORT: u16 = 5006;
/// Largest datagram taken in (UDP's maximum payload).
const MAX_DATAGRAM: usize = 65_535;

/// Where and how long to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchOptions {
    /// Local address of the STKM socket.
    pub stkm_bind: SocketAddr,
    /// Local address of the SRTP socket (SRTCP: port + 1, or any free port when this is 0).
    pub srtp_bind: SocketAddr,
    /// Where clear RTP goes (clear RTCP: port + 1).
    pub rtp_out: SocketAddr,
    /// The watcher's settings.
    pub config: WatchConfig,
    /// Stop after this many clear RTP packets.
    pub max_packets: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Where key requests go: OMA BCAST LTKM Request, or the MBMS MSK request.
    pub key_interface: Interface,
}

impl Default for WatchOptions {
    /// STKMs on `0.0.0.0:2269`, SRTP on `0.0.0.0:5004`, clear RTP to `127.0.0.1:5006`, LTKM
    /// Requests over OMA BCAST, no limit.
    fn default() -> Self {
        WatchOptions {
            stkm_bind: SocketAddr::from((Ipv4Addr::UNSPECIFIED, STKM_PORT)),
            srtp_bind: SocketAddr::from((Ipv4Addr::UNSPECIFIED, DEFAULT_SRTP_PORT)),
            rtp_out: SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_RTP_OUT_PORT)),
            config: WatchConfig::default(),
            max_packets: None,
            duration: None,
            key_interface: Interface::OmaBcast,
        }
    }
}

/// The port after `port` (RTCP beside RTP); 0 stays 0 (any free port).
fn next_port(port: u16) -> u16 {
    if port == 0 { 0 } else { port.wrapping_add(1) }
}

/// Binds `addr`; a multicast address binds the wildcard address on its port and joins the group.
async fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    match addr {
        SocketAddr::V4(a) if a.ip().is_multicast() => {
            let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, a.port())).await?;
            s.join_multicast_v4(*a.ip(), Ipv4Addr::UNSPECIFIED)?;
            Ok(s)
        }
        SocketAddr::V6(a) if a.ip().is_multicast() => {
            let s = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, a.port())).await?;
            s.join_multicast_v6(a.ip(), 0)?;
            Ok(s)
        }
        a => UdpSocket::bind(a).await,
    }
}

/// The bound sockets of one watch.
#[derive(Debug)]
pub struct WatchSockets {
    stkm: UdpSocket,
    srtp: UdpSocket,
    srtcp: UdpSocket,
    out: UdpSocket,
    rtp_out: SocketAddr,
    rtcp_out: SocketAddr,
}

impl WatchSockets {
    /// Binds the STKM, SRTP and SRTCP sockets of `options` and the sending socket.
    ///
    /// # Errors
    /// When a socket cannot be bound (port in use, no such address) or a group not joined.
    pub async fn bind(options: &WatchOptions) -> std::io::Result<Self> {
        let stkm = bind(options.stkm_bind).await?;
        let srtp = bind(options.srtp_bind).await?;
        let mut rtcp_bind = options.srtp_bind;
        rtcp_bind.set_port(next_port(options.srtp_bind.port()));
        let srtcp = bind(rtcp_bind).await?;
        let any: SocketAddr = if options.rtp_out.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let out = UdpSocket::bind(any).await?;
        let mut rtcp_out = options.rtp_out;
        rtcp_out.set_port(options.rtp_out.port().wrapping_add(1));
        Ok(WatchSockets { stkm, srtp, srtcp, out, rtp_out: options.rtp_out, rtcp_out })
    }

    /// Local address of the STKM socket.
    ///
    /// # Errors
    /// The socket's.
    pub fn stkm_addr(&self) -> std::io::Result<SocketAddr> {
        self.stkm.local_addr()
    }

    /// Local address of the SRTP socket.
    ///
    /// # Errors
    /// The socket's.
    pub fn srtp_addr(&self) -> std::io::Result<SocketAddr> {
        self.srtp.local_addr()
    }

    /// Local address of the SRTCP socket.
    ///
    /// # Errors
    /// The socket's.
    pub fn srtcp_addr(&self) -> std::io::Result<SocketAddr> {
        self.srtcp.local_addr()
    }
}

/// Where the TEKs come from.
pub enum Keys<'a, K: MbmsKeyHolder + Send> {
    /// The key holder alone: a missing key is only reported.
    Holder(&'a mut K),
    /// A terminal shell: a missing key is asked for at the BSM.
    Shell(&'a mut TerminalShell<K>),
}

impl<K: MbmsKeyHolder + Send> core::fmt::Debug for Keys<'_, K> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Keys::Holder(_) => "Keys::Holder",
            Keys::Shell(_) => "Keys::Shell",
        })
    }
}

/// A key request made during the watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRequestRecord {
    /// The key asked for.
    pub key: BcastKeyId,
    /// `Ok` with the number of LTKMs the answer carried, or why the request failed.
    pub outcome: Result<usize, String>,
}

/// What a watch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchSummary {
    /// The watcher's counters.
    pub stats: WatchStats,
    /// TEKs installed at the end.
    pub mkis: Vec<Mki>,
    /// Key requests sent.
    pub key_requests: Vec<KeyRequestRecord>,
    /// Time watched.
    pub elapsed: Duration,
}

impl core::fmt::Display for WatchSummary {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let s = &self.stats;
        writeln!(f, "watched {:.1} s", self.elapsed.as_secs_f64())?;
        writeln!(
            f,
            "SRTP packets: {} in, {} out; SRTCP: {} in, {} out; dropped: {} unknown MKI, {} authentication, {} replay, {} other",
            s.packets_in,
            s.packets_out,
            s.rtcp_in,
            s.rtcp_out,
            s.dropped_unknown_mki,
            s.dropped_auth,
            s.dropped_replay,
            s.dropped_other
        )?;
        writeln!(
            f,
            "STKMs: {} in, {} accepted by the card, {} resends kept from the card, {} stale, {} refused, {} malformed, {} unusable",
            s.stkms_in,
            s.stkms_accepted,
            s.stkms_skipped,
            s.stkms_stale,
            s.stkms_refused,
            s.stkms_malformed,
            s.stkms_unusable
        )?;
        let mkis: Vec<String> = self.mkis.iter().map(ToString::to_string).collect();
        writeln!(
            f,
            "TEKs: {} installed, {} withdrawn; held at the end (MKI): {}",
            s.teks_installed,
            s.teks_withdrawn,
            if mkis.is_empty() { "none".to_owned() } else { mkis.join(", ") }
        )?;
        write!(f, "key requests: {}", self.key_requests.len())?;
        for r in &self.key_requests {
            let key = hex_id(&r.key.to_bytes());
            match &r.outcome {
                Ok(n) => write!(f, "\n  {key}: answered with {n} LTKM(s)")?,
                Err(e) => write!(f, "\n  {key}: failed: {e}")?,
            }
        }
        Ok(())
    }
}

fn hex_id(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// What woke the loop.
enum Input {
    Stkm(usize),
    Srtp(usize),
    Srtcp(usize),
    Stop,
}

/// Watches until `shutdown` resolves or a limit of `options` is reached; see the module
/// documentation. `tap` sees every STKM and clear packet (a recorder hooks in here).
///
/// # Errors
/// When a receiving socket fails. Sends that fail (no player listening) are logged, not fatal.
pub async fn watch<K>(
    sockets: WatchSockets,
    mut keys: Keys<'_, K>,
    options: &WatchOptions,
    shutdown: impl Future<Output = ()>,
    tap: &mut dyn MediaTap,
) -> std::io::Result<WatchSummary>
where
    K: MbmsKeyHolder + Send,
    K::Card: Send,
{
    let mut watcher = Watcher::new(options.config);
    let mut requests = Vec::new();
    let started = Instant::now();
    let deadline = options.duration.map(|d| tokio::time::Instant::now() + d);
    let mut stkm_buf = vec![0u8; MAX_DATAGRAM];
    let mut srtp_buf = vec![0u8; MAX_DATAGRAM];
    let mut srtcp_buf = vec![0u8; MAX_DATAGRAM];
    tokio::pin!(shutdown);
    tracing::info!(
        stkm = ?sockets.stkm.local_addr().ok(),
        srtp = ?sockets.srtp.local_addr().ok(),
        srtcp = ?sockets.srtcp.local_addr().ok(),
        rtp_out = %sockets.rtp_out,
        "watching"
    );
    loop {
        if options.max_packets.is_some_and(|n| watcher.stats().packets_out >= n) {
            break;
        }
        let input = tokio::select! {
            () = &mut shutdown => Input::Stop,
            () = sleep_until(deadline) => Input::Stop,
            r = sockets.stkm.recv_from(&mut stkm_buf) => Input::Stkm(r?.0),
            r = sockets.srtp.recv_from(&mut srtp_buf) => Input::Srtp(r?.0),
            r = sockets.srtcp.recv_from(&mut srtcp_buf) => Input::Srtcp(r?.0),
        };
        let now = Instant::now();
        match input {
            Input::Stop => break,
            Input::Stkm(n) => {
                let stkm = &stkm_buf[..n];
                let event = match &mut keys {
                    Keys::Holder(h) => watcher.handle_stkm(&mut **h, stkm, now),
                    Keys::Shell(s) => watcher.handle_stkm(s.card_mut(), stkm, now),
                };
                log_event(&event);
                tap.stkm(now, stkm, &event);
                if let Some(key) = event.key_request() {
                    let Keys::Shell(shell) = &mut keys else {
                        tracing::warn!(key = %hex_id(&key.to_bytes()), "key missing and no BSM configured");
                        continue;
                    };
                    let outcome = match shell.request_keys(options.key_interface, &[key]).await {
                        Ok(answer) => Ok(answer.ltkms.len()),
                        Err(e) => Err(e.to_string()),
                    };
                    tracing::info!(key = %hex_id(&key.to_bytes()), ?outcome, "key request");
                    let answered = outcome.is_ok();
                    requests.push(KeyRequestRecord { key, outcome });
                    if answered {
                        // The answer's LTKMs are in the card now: the same STKM again.
                        let event = watcher.handle_stkm(shell.card_mut(), stkm, Instant::now());
                        log_event(&event);
                    }
                }
            }
            Input::Srtp(n) => {
                if let Packet::Clear { len, mki } = watcher.handle_srtp(&mut srtp_buf[..n], now) {
                    if let Some(key) = watcher.master_key(mki) {
                        tap.rtp(now, &srtp_buf[..len], key);
                    }
                    if let Err(e) = sockets.out.send_to(&srtp_buf[..len], sockets.rtp_out).await {
                        tracing::debug!(error = %e, "clear RTP not sent");
                    }
                }
            }
            Input::Srtcp(n) => {
                if let Packet::Clear { len, mki } = watcher.handle_srtcp(&mut srtcp_buf[..n], now) {
                    if let Some(key) = watcher.master_key(mki) {
                        tap.rtcp(now, &srtcp_buf[..len], key);
                    }
                    if let Err(e) = sockets.out.send_to(&srtcp_buf[..len], sockets.rtcp_out).await {
                        tracing::debug!(error = %e, "clear RTCP not sent");
                    }
                }
            }
        }
    }
    Ok(WatchSummary {
        stats: watcher.stats(),
        mkis: watcher.mkis().collect(),
        key_requests: requests,
        elapsed: started.elapsed(),
    })
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn log_event(event: &Event) {
    match event {
        Event::ResendSkipped { .. } | Event::Stale { .. } | Event::AwaitingKey { .. } => {
            tracing::debug!(?event, "STKM");
        }
        Event::TekInstalled { .. } | Event::TekConfirmed { .. } | Event::KeyMissing { .. } => {
            tracing::info!(?event, "STKM");
        }
        _ => tracing::warn!(?event, "STKM"),
    }
}
