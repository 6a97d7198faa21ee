//! (i) of `keycast demo`: layer 4, the protected stream, on what section (h) left running.
//!
//! The broadcaster is keycast-broadcast's sans-IO core ([`TekSchedule`], [`StkmStream`],
//! [`Protector`]) under SEKs it fetches from the real BSM's broadcaster API
//! (`GET /internal/v1/key-groups/{g}/live`, served on the admin listener with a token of its
//! own). The terminal is keycast-terminal's sans-IO [`Watcher`] with terminal B's card (section
//! (h)) as key holder. They talk over real loopback UDP: STKMs to one socket of the terminal
//! (the stand-in for port 2269), SRTP to another.
//!
//! What keeps the run fast and reproducible: one media clock in milliseconds, moved by the demo
//! (a packet every [`PACKET_MS`], no sleeping); the watcher's `Instant`s are that clock added to
//! one base instant and never printed; TEKs, salts, CSB IDs, SSRCs and payloads come from the
//! demo's seed. Both broadcasters run all the time; the terminal "tunes" to one service by
//! having only that service's datagrams delivered (what joining its multicast groups does).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use keycast_broadcast::protect::ESP_NEXT_HEADER;
use keycast_broadcast::shell::{BsmSource, fetch_live};
use keycast_broadcast::{
    LiveKey, OutStkm, Protector, RandomSource as _, ScheduleConfig, SeededRandom, StkmSettings, StkmStream,
    TekSchedule, TrafficMode,
};
use keycast_bsm::delivery::AckOutcome;
use keycast_bsm::push::Intake;
use keycast_card::CardOpError;
use keycast_crypto::keys::{Tek, TekSalt};
use keycast_mikey::{KeyDomainId, SekPekId};
use keycast_provisioning::sprov::{PurchaseItemRef, PurchaseRequestItem, StatusCode};
use keycast_provisioning::time::UtcTime;
use keycast_terminal::ltkm_intake::LtkmEvent;
use keycast_terminal::media::{Event, Packet, WatchConfig, Watcher};
use keycast_terminal::provisioning::Response;
use keycast_traffic::esp::{EspKey, EspReceiver, EspSender, Spi};
use keycast_traffic::srtp::{Mki, SrtpError, SrtpMasterKey, SrtpPolicy, SrtpSender};
use tokio::net::UdpSocket;

use super::bsm::{Bsm, Shell, WAIT, Worker, answer_ltkms, shell_apdus, status_of};
use super::{DemoRng, Narrator, id_hex};

/// One RTP packet every 20 ms (50 packets a second, a common audio/video packet rate).
const PACKET_MS: u64 = 20;
/// Packets of the first run on the first service.
const FIRST_RUN: u32 = 200;
/// The two services of this section: name, Key Group, and the broadcaster's crypto period and
/// lead (whole seconds, see [`ScheduleConfig`]). They differ so that, at the zapping instants
/// below, neither service's STKM round is busy announcing a next TEK.
const SERVICES: [(&str, u16, u64, u64); 2] = [("sport", 4, 3_000, 2_000), ("music", 5, 4_000, 1_000)];
/// Clear payload bytes of each RTP packet.
const PAYLOAD: usize = 160;
/// RTP payload type of the stream (dynamic, RFC 3551 §3).
const PAYLOAD_TYPE: u8 = 96;
/// Largest datagram read.
const MAX_DATAGRAM: usize = 2_048;

/// One service's broadcaster: the keycast-broadcast core under the key group's live SEKs.
struct Channel {
    name: &'static str,
    schedule: TekSchedule<SeededRandom>,
    stkms: StkmStream,
    protector: Protector<SeededRandom>,
    payloads: SeededRandom,
    ssrc: u32,
}

/// What one channel put out at one tick.
struct Tick {
    stkms: Vec<OutStkm>,
    rtp: Vec<u8>,
    srtp: Vec<u8>,
    mki: Mki,
}

impl Channel {
    fn new(name: &'static str, keys: Vec<LiveKey>, config: ScheduleConfig, rng: &mut DemoRng) -> Result<Self, String> {
        let seed = |rng: &mut DemoRng, label: &str| u64::from_be_bytes(rng.bytes(label));
        let mut schedule = TekSchedule::new(config, SeededRandom::new(seed(rng, "broadcaster TEKs")));
        schedule.set_keys(keys);
        let stkms =
            StkmStream::new(StkmSettings::default(), rng.u32("broadcaster CSB ID")).map_err(|e| e.to_string())?;
        let protector =
            Protector::new(TrafficMode::Srtp(SrtpPolicy::rfc3711()), SeededRandom::new(seed(rng, "broadcaster IVs")));
        let payloads = SeededRandom::new(seed(rng, "RTP payloads"));
        Ok(Channel { name, schedule, stkms, protector, payloads, ssrc: rng.u32("RTP SSRC") })
    }

    /// One shell tick at `now` (keycast-broadcast's documented order): advance the schedule,
    /// switch the protector's TEK, poll the STKM stream; then one RTP packet protected.
    fn tick(&mut self, now: u64, seq: u16) -> Result<Tick, String> {
        self.schedule.advance(now).map_err(|e| e.to_string())?;
        let current = self.schedule.current().ok_or("no TEK")?;
        self.protector.set_tek(current);
        let mki = current.mki();
        let stkms = self.stkms.poll(now, &self.schedule).map_err(|e| e.to_string())?;
        let mut rtp = vec![0x80, PAYLOAD_TYPE];
        rtp.extend_from_slice(&seq.to_be_bytes());
        // 90 kHz media clock (RFC 3551 §5 for video): 1800 ticks per 20 ms packet.
        rtp.extend_from_slice(&(u32::from(seq).wrapping_mul(1_800)).to_be_bytes());
        rtp.extend_from_slice(&self.ssrc.to_be_bytes());
        let mut payload = [0u8; PAYLOAD];
        self.payloads.fill(&mut payload).map_err(|e| e.to_string())?;
        rtp.extend_from_slice(&payload);
        let mut srtp = rtp.clone();
        self.protector.protect_rtp(&mut srtp).map_err(|e| e.to_string())?;
        Ok(Tick { stkms, rtp, srtp, mki })
    }
}

/// What happened to one packet at the terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Opened, byte-identical to what went in, with this key.
    Clear(Mki),
    /// Opened, but not to the bytes that went in.
    Differs,
    /// Dropped by the watcher.
    Dropped(SrtpError),
}

/// The loopback link and the terminal's watcher.
struct Link {
    broadcaster: UdpSocket,
    stkm_socket: UdpSocket,
    media_socket: UdpSocket,
    stkm_addr: SocketAddr,
    media_addr: SocketAddr,
    watcher: Watcher,
    /// The media clock's start (Unix ms) and the instant that stands for it.
    start_ms: u64,
    base: Instant,
}

impl Link {
    async fn open(start_ms: u64, config: WatchConfig) -> Result<Self, String> {
        let bind = || async {
            let s = UdpSocket::bind("127.0.0.1:0").await.map_err(|e| format!("UDP on loopback: {e}"))?;
            let a = s.local_addr().map_err(|e| format!("UDP on loopback: {e}"))?;
            Ok::<_, String>((s, a))
        };
        let (broadcaster, _) = bind().await?;
        let (stkm_socket, stkm_addr) = bind().await?;
        let (media_socket, media_addr) = bind().await?;
        let watcher = Watcher::new(config);
        Ok(Link {
            broadcaster,
            stkm_socket,
            media_socket,
            stkm_addr,
            media_addr,
            watcher,
            start_ms,
            base: Instant::now(),
        })
    }

    fn at(&self, now: u64) -> Instant {
        self.base + Duration::from_millis(now.saturating_sub(self.start_ms))
    }

    async fn send(&self, bytes: &[u8], to: SocketAddr) -> Result<(), String> {
        self.broadcaster.send_to(bytes, to).await.map(|_| ()).map_err(|e| format!("UDP send: {e}"))
    }

    async fn recv(socket: &UdpSocket) -> Result<Vec<u8>, String> {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        match tokio::time::timeout(WAIT, socket.recv(&mut buf)).await {
            Ok(Ok(len)) => {
                buf.truncate(len);
                Ok(buf)
            }
            Ok(Err(e)) => Err(format!("UDP receive: {e}")),
            Err(_) => Err("no datagram arrived".to_owned()),
        }
    }

    /// STKMs over UDP to the terminal, which hands each to its watcher with the card.
    async fn stkms(
        &mut self,
        n: &mut Narrator,
        b: &mut Shell,
        stkms: &[OutStkm],
        now: u64,
    ) -> Result<Vec<Event>, String> {
        for s in stkms {
            self.send(&s.bytes, self.stkm_addr).await?;
        }
        let mut events = Vec::with_capacity(stkms.len());
        for _ in stkms {
            let bytes = Self::recv(&self.stkm_socket).await?;
            let event = self.watcher.handle_stkm(b.card_mut(), &bytes, self.at(now));
            shell_apdus(n, b);
            events.push(event);
        }
        Ok(events)
    }

    /// One SRTP packet over UDP; the terminal's watcher opens it; compared with `rtp`.
    async fn packet(&mut self, srtp: &[u8], rtp: &[u8], now: u64) -> Result<Fate, String> {
        self.send(srtp, self.media_addr).await?;
        let mut bytes = Self::recv(&self.media_socket).await?;
        let at = self.at(now);
        Ok(match self.watcher.handle_srtp(&mut bytes, at) {
            Packet::Clear { len, mki } if bytes[..len] == *rtp => Fate::Clear(mki),
            Packet::Clear { .. } => Fate::Differs,
            Packet::Dropped(e) => Fate::Dropped(e),
        })
    }
}

/// A run of ticks: every packet's fate and every STKM's event, with the tick (time since the
/// media clock's start, ms).
#[derive(Default)]
struct Played {
    packets: Vec<(u64, Mki, Fate)>,
    events: Vec<(u64, Event)>,
}

impl Played {
    fn clear(&self) -> usize {
        self.packets.iter().filter(|(_, _, f)| matches!(f, Fate::Clear(_))).count()
    }
}

/// The stream: both channels, the link, which one is delivered, the next tick.
struct Stream {
    channels: Vec<Channel>,
    link: Link,
    tick: u64,
}

impl Stream {
    fn now(&self) -> u64 {
        self.link.start_ms + self.tick * PACKET_MS
    }

    /// `count` ticks with channel `tuned` delivered; the others run undelivered.
    async fn play(&mut self, n: &mut Narrator, b: &mut Shell, tuned: usize, count: u64) -> Result<Played, String> {
        let mut played = Played::default();
        for _ in 0..count {
            let now = self.now();
            let seq = u16::try_from(self.tick).unwrap_or(u16::MAX);
            let mut delivered = None;
            for (i, c) in self.channels.iter_mut().enumerate() {
                let t = c.tick(now, seq)?;
                if i == tuned {
                    delivered = Some(t);
                }
            }
            let t = delivered.ok_or("no such service")?;
            for e in self.link.stkms(n, b, &t.stkms, now).await? {
                played.events.push((now - self.link.start_ms, e));
            }
            let fate = self.link.packet(&t.srtp, &t.rtp, now).await?;
            played.packets.push((now - self.link.start_ms, t.mki, fate));
            self.tick += 1;
        }
        Ok(played)
    }
}

fn secs(ms: u64) -> String {
    format!("+{}.{:02} s", ms / 1000, ms % 1000 / 10)
}

fn mki_text(mki: Mki) -> String {
    format!("{:08x}‖{:04x}", mki.sek_pek_id(), mki.tek_id())
}

/// When the watcher installed `mki` (the card released its TEK), ms since the start.
fn installed_at(played: &Played, mki: Mki) -> Option<u64> {
    played.events.iter().find_map(|(t, e)| match e {
        Event::TekInstalled { mki: m, .. } if *m == mki => Some(*t),
        _ => None,
    })
}

/// The MKIs in the order the packets used them, with how many packets each.
fn mkis_used(played: &Played) -> Vec<(Mki, usize)> {
    let mut used: Vec<(Mki, usize)> = Vec::new();
    for (_, mki, _) in &played.packets {
        match used.last_mut() {
            Some((m, count)) if m == mki => *count += 1,
            _ => used.push((*mki, 1)),
        }
    }
    used
}

/// (i): see the module docs. Runs after (h) on its BSM, push worker and terminal B.
pub(super) async fn run_stream(n: &mut Narrator, rng: &mut DemoRng, bsm: &Bsm, worker: &Worker, b: &mut Shell) {
    n.heading("(i) Layer 4: SRTP from the broadcaster core to terminal B's watcher over UDP, TEK switch, zapping, invalidation");
    let kd = KeyDomainId::from_mcc_mnc("001", "01").expect("constant MCC/MNC");
    let seks: Vec<SekPekId> = SERVICES.iter().map(|s| SekPekId { key_group: s.1, key_number: 1 }).collect();
    if !operator(n, bsm, &seks).await {
        return;
    }
    // Terminal B buys the two services; the keys come in the answer.
    let until = UtcTime::from_unix_seconds(bsm.clock.now() + 30 * 86_400).ok();
    let item = PurchaseItemRef::new("extra", Some("extra-month"));
    let answer = b.subscribe(vec![(PurchaseRequestItem { item, price: None }, until)]).await;
    shell_apdus(n, b);
    let r = status_of(&answer).and_then(|answer| match &answer.response {
        Response::Service(s) if s.status == StatusCode::Success => {
            answer_ltkms(n, "ServiceResponse", answer, &seks, kd)
        }
        other => Err(format!("answer {other:?}")),
    });
    let ok = r.is_ok();
    n.check("terminal B subscribes (ServiceRequest extra / extra-month)", r);
    if !ok {
        return;
    }
    match bsm.write_intents().await {
        Ok(r) if r.queued == 0 => {}
        Ok(r) => n.check("no push after B's subscription", Err(format!("{r:?}"))),
        Err(e) => n.check("BSM writes the answer's intents", Err(e)),
    }
    // The ServiceRequest registered B on the OMA BCAST interface, whose push port is terminal
    // A's socket here (see (h)): B registers on the MBMS interface again, and its keys come pushed.
    let r = b.reconnected().await;
    shell_apdus(n, b);
    let r = match (r, bsm.write_intents().await) {
        (Ok(Some(_)), Ok(report)) => pushes(n, bsm, worker, b).await.and_then(|(pushed, taken, stale)| {
            if seks.iter().all(|s| taken.contains(s)) {
                Ok(format!(
                    "{} pushes queued, {pushed} LTKMs (V = 1) sent; the card takes SEK {}, each verification goes back; {stale} datagram(s) B left unread in (h) refused as replays",
                    report.queued,
                    ids_text(&taken)
                ))
            } else {
                Err(format!("the card took {taken:?}"))
            }
        }),
        (Ok(None), _) => Err("nothing registered".to_owned()),
        (Err(e), _) => Err(e.to_string()),
        (_, Err(e)) => Err(e),
    };
    let ok = r.is_ok();
    n.check("terminal B registers again on the 3GPP MBMS interface; the push worker sends its keys", r);
    if !ok {
        return;
    }
    // The broadcaster fetches each group's live keys from the BSM.
    let mut channels = Vec::new();
    for ((name, group, period, lead), sek) in SERVICES.into_iter().zip(&seks) {
        let source =
            match BsmSource::from_url(&format!("http://{}", bsm.admin_addr), bsm.broadcaster_token.clone(), group) {
                Ok(s) => s,
                Err(e) => return n.check("broadcaster's BSM source", Err(e.to_string())),
            };
        let r = fetch_live(&source).await.map_err(|e| e.to_string()).and_then(|keys| match keys.as_slice() {
            [k] if k.sek_pek_id == *sek => Ok(keys),
            other => Err(format!("keys {other:?}")),
        });
        let keys = match r {
            Ok(keys) => keys,
            Err(e) => return n.check(&format!("broadcaster fetches Key Group {group}'s live keys"), Err(e)),
        };
        let k = &keys[0];
        n.demo_key(
            &format!("SEK {} (broadcaster, from the BSM's broadcaster API)", id_hex(*sek)),
            k.key.expose_secret(),
        );
        let detail = format!(
            "200: SEK {}, its RAND, window [T0 + {} s, T0 + {} s), TEK IDs {}..={}",
            id_hex(*sek),
            k.from - super::UNIX_T0,
            k.until - super::UNIX_T0,
            k.tek_id_low + 1,
            k.tek_id_high
        );
        n.check(
            &format!("broadcaster: GET /internal/v1/key-groups/{group}/live (broadcaster token, from loopback)"),
            Ok(detail),
        );
        let config = ScheduleConfig::new(period, lead).expect("constant whole-second schedule");
        match Channel::new(name, keys, config, rng) {
            Ok(c) => channels.push(c),
            Err(e) => return n.check("broadcaster core starts", Err(e)),
        }
    }
    for c in &channels {
        let config = c.schedule.config();
        n.info(format!(
            "{}: crypto period {} s, next TEK announced {} s ahead; SRTP (AES-CM, HMAC-SHA-1-80), MKI = SEK ID ‖ TEK ID",
            c.name,
            config.crypto_period_ms / 1000,
            config.lead_ms / 1000
        ));
    }
    // The stream starts on the next whole second of the BSM's clock.
    let start_ms = (bsm.clock.now() + 1) * 1000;
    // Every fresh STKM goes to the card (no resend skips the card): the card's resend rule is
    // exercised, and a refusal shows at the next STKM.
    let config = WatchConfig { card_recheck: Duration::ZERO, ..WatchConfig::default() };
    let link = match Link::open(start_ms, config).await {
        Ok(l) => l,
        Err(e) => return n.check("terminal B's STKM and media sockets", Err(e)),
    };
    n.check(
        "broadcaster core (keycast-broadcast) and terminal B's watcher (keycast-terminal) on 127.0.0.1:<port>",
        Ok("STKMs and SRTP over UDP; terminal B's card is the key holder; media clock driven by the demo".to_owned()),
    );
    let mut stream = Stream { channels, link, tick: 0 };
    if let Err(e) = walk(n, rng, bsm, worker, b, &mut stream, &seks).await {
        n.check("the stream runs", Err(e));
    }
}

/// The operator adds two services of their own Key Groups in one purchase item, and makes
/// their first SEKs.
async fn operator(n: &mut Narrator, bsm: &Bsm, seks: &[SekPekId]) -> bool {
    let mut calls: Vec<(String, String, String)> = SERVICES
        .iter()
        .map(|(name, group, ..)| {
            (
                "PUT".to_owned(),
                format!("/admin/v1/services/{name}"),
                format!(r#"{{"name":"{name}","mcc":"001","mnc":"01","key_group":{group},"streaming":true}}"#),
            )
        })
        .collect();
    calls.push((
        "PUT".to_owned(),
        "/admin/v1/purchase-items/extra".to_owned(),
        r#"{"name":"Extra","services":["sport","music"]}"#.to_owned(),
    ));
    calls.push((
        "PUT".to_owned(),
        "/admin/v1/offers/extra-month".to_owned(),
        r#"{"item":"extra","amount":"2.99","currency":"EUR","kind":"subscription","period_secs":2592000}"#.to_owned(),
    ));
    let body = r#"{"mcc":"001","mnc":"01","key_lifetime_secs":7200,"lead_secs":3600}"#;
    for (_, group, ..) in SERVICES {
        calls.push(("POST".to_owned(), format!("/admin/v1/key-groups/{group}/rollover"), body.to_owned()));
    }
    let mut r = Ok(());
    for (method, path, body) in &calls {
        let want = if method == "POST" { 201 } else { 204 };
        match bsm.admin(method, path, body).await {
            Ok((status, _)) if status == want => {}
            Ok((status, body)) => r = Err(format!("{method} {path}: {status} {body}")),
            Err(e) => r = Err(e),
        }
        if r.is_err() {
            break;
        }
    }
    let ok = r.is_ok();
    let ids: Vec<String> = seks.iter().map(|s| id_hex(*s)).collect();
    n.check(
        "operator: services sport (Key Group 4) and music (Key Group 5) in item extra, their first SEKs (admin API)",
        r.map(|()| format!("204 each; rollovers 201: SEK {}", ids.join(" and "))),
    );
    ok
}

/// The steps of (i) once both ends run.
#[allow(clippy::too_many_arguments)]
async fn walk(
    n: &mut Narrator,
    rng: &mut DemoRng,
    bsm: &Bsm,
    worker: &Worker,
    b: &mut Shell,
    stream: &mut Stream,
    seks: &[SekPekId],
) -> Result<(), String> {
    let (sport, music) = (0, 1);
    // 1. The first run on sport: 200 packets, across a TEK switch.
    let played = stream.play(n, b, sport, u64::from(FIRST_RUN)).await?;
    let clear = played.clear();
    let used = mkis_used(&played);
    n.check(
        &format!(
            "terminal B opens {FIRST_RUN} SRTP packets of {}, each byte-identical to the RTP that went in",
            stream.channels[sport].name
        ),
        if clear == played.packets.len() && clear == FIRST_RUN as usize {
            Ok(format!(
                "{clear} of {} over UDP; RTP {} bytes each, SRTP + 6 (MKI) + 10 (tag); {} STKMs over UDP with them",
                played.packets.len(),
                12 + PAYLOAD,
                played.events.len()
            ))
        } else {
            Err(format!(
                "{clear} of {} clear; first other: {:?}",
                played.packets.len(),
                played.packets.iter().find(|p| !matches!(p.2, Fate::Clear(_)))
            ))
        },
    );
    let r = match used.as_slice() {
        [(first, a), (second, c), ..] if second.tek_id() == first.tek_id() + 1 => {
            let switch = played.packets.iter().find(|p| p.1 == *second).map_or(0, |p| p.0);
            match installed_at(&played, *second) {
                Some(t) if t < switch => Ok(format!(
                    "MKI {} for {a} packets, then {} from {} for {c}; TEK ID {} was announced and in the card at {}, no packet lost",
                    mki_text(*first),
                    mki_text(*second),
                    secs(switch),
                    second.tek_id(),
                    secs(t)
                )),
                other => Err(format!("TEK ID {} installed at {other:?}, switch at {switch}", second.tek_id())),
            }
        }
        other => Err(format!("MKIs used: {other:?}")),
    };
    n.check("TEK switch mid-stream with the next TEK announced ahead", r);
    let confirmed = played.events.iter().filter(|(_, e)| matches!(e, Event::TekConfirmed { .. })).count();
    let stale = played.events.iter().filter(|(_, e)| matches!(e, Event::Stale { .. })).count();
    n.info(format!(
        "STKMs: {} TEKs installed, {confirmed} resends the card answered with the same TEK, {stale} STKMs of the old TEK dropped before the card",
        played.events.iter().filter(|(_, e)| matches!(e, Event::TekInstalled { .. })).count()
    ));

    // 2. A packet under the wrong key, and a tampered one, then the genuine one.
    let now = stream.now();
    let seq = u16::try_from(stream.tick).unwrap_or(u16::MAX);
    let mut genuine = None;
    for (i, c) in stream.channels.iter_mut().enumerate() {
        let t = c.tick(now, seq)?;
        if i == sport {
            genuine = Some(t);
        }
    }
    let t = genuine.ok_or("no sport tick")?;
    stream.tick += 1;
    for e in stream.link.stkms(n, b, &t.stkms, now).await? {
        if let Event::Refused { .. } | Event::Malformed(_) = e {
            return Err(format!("STKM: {e:?}"));
        }
    }
    let wrong = SrtpMasterKey::new(
        t.mki,
        Tek::from_bytes(rng.bytes("wrong TEK")),
        TekSalt::from_bytes(rng.bytes("wrong salt")),
    );
    let mut forged = t.rtp.clone();
    SrtpSender::new(SrtpPolicy::rfc3711(), &wrong).protect(&mut forged).map_err(|e| e.to_string())?;
    let fate = stream.link.packet(&forged, &t.rtp, now).await?;
    n.check(
        &format!("terminal B drops a packet with MKI {} protected under another TEK", mki_text(t.mki)),
        match fate {
            Fate::Dropped(SrtpError::AuthFailed) => {
                Ok("authentication tag wrong (HMAC-SHA-1, RFC 3711 §3.3)".to_owned())
            }
            other => Err(format!("{other:?}")),
        },
    );
    let mut tampered = t.srtp.clone();
    tampered[12 + PAYLOAD / 2] ^= 0x01;
    let fate = stream.link.packet(&tampered, &t.rtp, now).await?;
    n.check(
        "terminal B drops the genuine packet with one payload bit flipped",
        match fate {
            Fate::Dropped(SrtpError::AuthFailed) => Ok("authentication tag wrong".to_owned()),
            other => Err(format!("{other:?}")),
        },
    );
    let fate = stream.link.packet(&t.srtp, &t.rtp, now).await?;
    n.check(
        "terminal B opens the genuine packet after them",
        match fate {
            Fate::Clear(_) => Ok("the drops left the replay window and the key as they were".to_owned()),
            other => Err(format!("{other:?}")),
        },
    );

    // 3. Zapping: sport on to +4.5 s, music until +5.2 s, sport again.
    stream.play(n, b, sport, 24).await?;
    let zap_ms = stream.now() - stream.link.start_ms;
    let played = stream.play(n, b, music, 35).await?;
    let first_clear = played.packets.iter().position(|p| matches!(p.2, Fate::Clear(_)));
    let r = match first_clear {
        Some(i) if played.packets[i..].iter().all(|p| matches!(p.2, Fate::Clear(_))) => Ok(format!(
            "zapped at {}: {i} packet(s) dropped until its STKM of the next second, then {} of {} opened (MKI {})",
            secs(zap_ms),
            played.packets.len() - i,
            played.packets.len() - i,
            mki_text(played.packets[i].1)
        )),
        _ => Err(format!("{} of {} clear", played.clear(), played.packets.len())),
    };
    n.check(&format!("zap to {}: the card opens its STKM, the stream decrypts", stream.channels[music].name), r);
    let back_ms = stream.now() - stream.link.start_ms;
    let held: Vec<Mki> = stream.link.watcher.mkis().collect();
    let played = stream.play(n, b, sport, 50).await?;
    let confirmed = played.events.iter().find_map(|(t, e)| match e {
        Event::TekConfirmed { mki, .. } if held.contains(mki) => Some((*t, *mki)),
        _ => None,
    });
    let used = mkis_used(&played);
    let r = match (played.clear() == played.packets.len(), confirmed) {
        (true, Some((t, mki))) => Ok(format!(
            "back at {}: {} of {} packets opened at once with the TEKs kept ({}); at {} the card, shown TEK ID {} again, answered the same TEK (resend rule)",
            secs(back_ms),
            played.clear(),
            played.packets.len(),
            used.iter().map(|(m, c)| format!("{} ×{c}", mki_text(*m))).collect::<Vec<_>>().join(", "),
            secs(t),
            mki.tek_id()
        )),
        (all, _) => Err(format!("all clear: {all}; events {:?}", played.events)),
    };
    n.check(&format!("zap back to {}: no packet lost, the TEKs reused", stream.channels[sport].name), r);

    // IPsec ESP (the profile's other traffic protection, P-9) with the TEK the card released.
    let r = esp_round_trip(rng, stream).await;
    n.check("one ESP packet under the current TEK: SPI = Key Group ‖ TEK ID, the card's TEK opens it", r);

    // 4. Terminal B gives the extra services up: the pushed invalidations stop the stream.
    bsm.clock.set(stream.now() / 1000);
    let request = b.client_mut().unsubscribe(Some(vec![PurchaseItemRef::new("extra", None)]));
    let answer = b.execute(request).await;
    shell_apdus(n, b);
    let r = status_of(&answer).and_then(|answer| match &answer.response {
        Response::Unsubscribe(u) if u.status == StatusCode::Success => Ok(()),
        other => Err(format!("answer {other:?}")),
    });
    let r = match (r, bsm.write_intents().await) {
        (Ok(()), Ok(report)) => pushes(n, bsm, worker, b).await.and_then(|(_, taken, _)| {
            if taken.len() == seks.len() && seks.iter().all(|s| taken.contains(s)) {
                Ok(format!(
                    "success; {} pushes: the invalidations of SEK {}, applied by the card, verified back",
                    report.queued,
                    ids_text(&taken)
                ))
            } else {
                Err(format!("the card took {taken:?}"))
            }
        }),
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    let ok = r.is_ok();
    n.check("terminal B unsubscribes (UnsubscribeRequest extra); the push worker sends the invalidations", r);
    if !ok {
        return Ok(());
    }
    let played = stream.play(n, b, sport, 60).await?;
    let refused = played.events.iter().find_map(|(t, e)| match e {
        Event::Refused { error: CardOpError::Card(c), withdrawn, tek_id, .. } => {
            Some((*t, c.status_word(), withdrawn.clone(), *tek_id))
        }
        _ => None,
    });
    let r = match refused {
        Some((t, 0x6985, withdrawn, tek_id)) if !withdrawn.is_empty() => {
            let before = played.packets.iter().filter(|p| p.0 < t && matches!(p.2, Fate::Clear(_))).count();
            let after: Vec<&(u64, Mki, Fate)> = played.packets.iter().filter(|p| p.0 >= t).collect();
            let opened_after = after.iter().filter(|p| matches!(p.2, Fate::Clear(_))).count();
            if !after.is_empty() && opened_after == 0 {
                let w: Vec<String> = withdrawn.iter().map(|m| mki_text(*m)).collect();
                Ok(format!(
                    "at {} the card refuses TEK ID {tek_id} with SW 6985 (key invalidated); the watcher withdraws {}; {before} packet(s) before it opened, 0 of the {} after",
                    secs(t),
                    w.join(" and "),
                    after.len()
                ))
            } else {
                Err(format!("{opened_after} of {} packets opened after the refusal", after.len()))
            }
        }
        other => Err(format!("refusal {other:?}; events {:?}", played.events)),
    };
    n.check(
        &format!(
            "after the invalidation the card refuses {}'s STKM and the stream stops decrypting",
            stream.channels[sport].name
        ),
        r,
    );
    Ok(())
}

/// The broadcaster protects one RTP packet as an ESP payload with the current TEK of the first
/// channel (keycast-traffic's ESP); the terminal opens it with the TEK its watcher got from the
/// card for the same TEK ID.
async fn esp_round_trip(rng: &mut DemoRng, stream: &mut Stream) -> Result<String, String> {
    let channel = &mut stream.channels[0];
    let entry = channel.schedule.current().ok_or("no TEK")?;
    let (mki, key_group) = (entry.mki(), entry.key.sek_pek_id.key_group);
    let mut sender = EspSender::new(&entry.esp_key());
    let mut clear = vec![0x80, PAYLOAD_TYPE, 0, 0, 0, 0, 0, 0];
    clear.extend_from_slice(&channel.ssrc.to_be_bytes());
    clear.extend_from_slice(b"one RTP packet in ESP");
    let mut packet = clear.clone();
    sender.protect(&mut packet, ESP_NEXT_HEADER, rng.bytes("ESP IV")).map_err(|e| e.to_string())?;
    stream.link.send(&packet, stream.link.media_addr).await?;
    let mut received = Link::recv(&stream.link.media_socket).await?;
    let tek = stream.link.watcher.master_key(mki).ok_or("the watcher holds no TEK for that MKI")?.key().clone();
    let mut receiver = EspReceiver::new();
    receiver.add_key(&EspKey::new(Spi::new(key_group, mki.tek_id()), tek));
    let info = receiver.unprotect(&mut received).map_err(|e| e.to_string())?;
    if received == clear && info.next_header == ESP_NEXT_HEADER {
        Ok(format!(
            "SPI {:08x}, sequence number {}, AES-128-CBC + HMAC-SHA1-96; {} bytes over UDP, the payload byte-identical",
            info.spi.to_u32(),
            info.seq,
            packet.len()
        ))
    } else {
        Err(format!("opened to other bytes (next header {})", info.next_header))
    }
}

/// One push round of the worker, and terminal B's MBMS socket read until every LTKM of it is in
/// the card, each verification message taken by the BSM. Datagrams the card refuses as replays
/// are skipped: (h) left two pushes in that socket while B was "out of coverage".
/// Ok: (LTKMs pushed, keys the card took, stale datagrams skipped).
async fn pushes(
    n: &mut Narrator,
    bsm: &Bsm,
    worker: &Worker,
    b: &mut Shell,
) -> Result<(usize, Vec<SekPekId>, usize), String> {
    let round = worker.run_once(bsm.clock.push_time()).await.map_err(|e| e.to_string())?;
    let pushed = round.pushed as usize;
    let (mut taken, mut stale) = (Vec::new(), 0);
    // Bounded: the pushes, plus what (h) may have left unread.
    for _ in 0..pushed + 4 {
        if taken.len() == pushed {
            break;
        }
        let received = b.recv_ltkm(WAIT).await;
        shell_apdus(n, b);
        let report = match received {
            Ok(Some(rx)) => rx.report.map_err(|e| e.to_string())?,
            Ok(None) => return Err(format!("{} of {pushed} pushed LTKMs arrived", taken.len())),
            Err(e) => return Err(e.to_string()),
        };
        match report.event {
            LtkmEvent::Accepted { key } => {
                let intake = tokio::time::timeout(WAIT, worker.receive_once(bsm.clock.push_time())).await;
                if !matches!(intake, Ok(Ok(Intake::Acknowledged { outcome: AckOutcome::Acknowledged, .. }))) {
                    return Err(format!("verification message: {intake:?}"));
                }
                taken.push(SekPekId::from_bytes(key.sek_pek_id));
            }
            LtkmEvent::Replay => stale += 1,
            other => return Err(format!("the card's outcome {other:?}")),
        }
    }
    if taken.len() == pushed {
        Ok((pushed, taken, stale))
    } else {
        Err(format!("{} of {pushed} pushed LTKMs taken", taken.len()))
    }
}

fn ids_text(ids: &[SekPekId]) -> String {
    let mut v: Vec<String> = ids.iter().map(|s| id_hex(*s)).collect();
    v.sort();
    v.join(", ")
}
