//! `media::shell::watch` over real UDP on 127.0.0.1: the test sends STKMs and SRTP (sealed and
//! protected with keys it chose and delivered to the card by LTKMs), receives the clear RTP the
//! watcher forwards and compares it byte for byte; a TEK switch, dropped packets, zapping between
//! two services; and a key the card lacks, asked for at the real BSM (loopback BSF + BSM), which
//! delivers it so that the stream opens.

mod loopback;

use std::net::SocketAddr;
use std::time::Duration;

use keycast_card::usim::{Usim, UsimIdentity};
use keycast_card::{ApduCard, Emulator};
use keycast_crypto::keys::{Opc, SekPek, Smk, SubscriberKey, Tek, TekSalt};
use keycast_gba::bsf::GbaType;
use keycast_gba::client::GbaMode;
use keycast_mikey::{
    KeyDomainId, KeyValidity, LtkmContent, LtkmExt, ProtectionAfterReception, SecurityPolicy, SecurityPolicyExt,
    SekPekId, StkmContent, StkmExt, TekField, TrafficProtectionProtocol,
};
use keycast_provisioning::sprov::{PurchaseItemRef, PurchaseRequestItem};
use keycast_provisioning::time::UtcTime;
use keycast_terminal::key_holder::MbmsKeyHolder;
use keycast_terminal::ltkm_intake::bcast_key;
use keycast_terminal::media::shell::{Keys, WatchOptions, WatchSockets, WatchSummary, watch};
use keycast_terminal::media::srtp::{Mki, SrtpMasterKey, SrtpPolicy, SrtpSender};
use keycast_terminal::media::{Event, MediaTap, NoTap, WatchConfig};
use tokio::net::UdpSocket;
use tokio::sync::oneshot;

const BSM_NAME: &str = "bmsc.example.org";
const BTID: &str = "btid-1@bsf.example.org";
const TS0: u32 = 3_989_000_000;
const SEK_A: [u8; 16] = [0x12; 16];
const SEK_B: [u8; 16] = [0x34; 16];

fn key_domain() -> KeyDomainId {
    KeyDomainId::from_mcc_mnc("001", "01").unwrap()
}

fn id(group: u16, number: u16) -> SekPekId {
    SekPekId { key_group: group, key_number: number }
}

/// The card with a MUK and SEKs A = (1,2), B = (2,1), each from an LTKM sealed here.
fn card_with_seks() -> ApduCard<Emulator> {
    let ident =
        UsimIdentity { imsi: "001010000000001".into(), impi: "user@ims".into(), iccid: "8900100000000000001".into() };
    let mut usim = Usim::new(ident, SubscriberKey::from_bytes([1; 16]), Opc::from_bytes([2; 16]));
    let smk = Smk::from_bytes([0x11; 32]);
    usim.mbms.install_muk(BSM_NAME, BTID, smk.clone()).unwrap();
    for (n, (sek, key)) in [(id(1, 2), SEK_A), (id(2, 1), SEK_B)].into_iter().enumerate() {
        let ltkm = LtkmContent {
            csb_id: 0x0102_0304,
            verification_requested: false,
            srtp_cs: None,
            key_domain_id: key_domain(),
            sek_pek_id: sek,
            ts: u32::try_from(n).unwrap() + 1,
            rand: [u8::try_from(sek.key_group).unwrap(); 16],
            idi: BSM_NAME.into(),
            idr: BTID.into(),
            srtp_policy: None,
            ext: Some(LtkmExt {
                security_policy: Some(SecurityPolicyExt {
                    policy: SecurityPolicy::PayPerTime,
                    play_back_counter: 0,
                    view_counter: 0,
                }),
                tbk_id: None,
                consumption_reporting: false,
            }),
            key: Some(SekPek::from_bytes(key)),
            validity: KeyValidity::TsWindow { ts_low: TS0, ts_high: TS0 + 100_000 },
        }
        .seal(&smk)
        .unwrap();
        usim.mbms.msk_update(&ltkm).unwrap();
    }
    ApduCard::new(Emulator::new(usim))
}

/// The TEK (and salt) the test broadcasts under `sek` with `tek_id`.
fn master(sek: SekPekId, tek_id: u16) -> SrtpMasterKey {
    let b = u8::try_from(sek.key_group * 16 + tek_id).unwrap();
    SrtpMasterKey::new(
        Mki::new(u32::from_be_bytes(sek.to_bytes()), tek_id),
        Tek::from_bytes([b; 16]),
        TekSalt::from_bytes([b ^ 0xff; 14]),
    )
}

/// An STKM for `master(sek, tek_id)`, sealed under `sek_key` with `rand`.
fn stkm(
    kd: KeyDomainId,
    sek: SekPekId,
    sek_key: [u8; 16],
    rand: [u8; 16],
    tek_id: u16,
    ts: u32,
    ext: Option<StkmExt>,
) -> Vec<u8> {
    let m = master(sek, tek_id);
    StkmContent {
        csb_id: 0x0a0b_0c0d,
        key_domain_id: kd,
        sek_pek_id: sek,
        tek_id,
        ts,
        ext,
        tek: TekField::Clear(m.key().clone()),
        salt: Some(m.salt().clone()),
    }
    .seal(&SekPek::from_bytes(sek_key), &rand)
    .unwrap()
}

fn srtp_ext() -> Option<StkmExt> {
    Some(StkmExt {
        protection_after_reception: ProtectionAfterReception::ServiceProtectionOnly,
        traffic_protection_protocol: TrafficProtectionProtocol::Srtp,
        traffic_authentication: true,
        tbk_id: None,
        access_criteria: None,
    })
}

fn stkm_a(tek_id: u16, ts: u32) -> Vec<u8> {
    stkm(key_domain(), id(1, 2), SEK_A, [1; 16], tek_id, ts, srtp_ext())
}

fn stkm_b(tek_id: u16, ts: u32) -> Vec<u8> {
    stkm(key_domain(), id(2, 1), SEK_B, [2; 16], tek_id, ts, srtp_ext())
}

fn rtp(ssrc: u32, seq: u16, size: usize) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..size).map(|i| (i as u8).wrapping_mul(7) ^ (seq as u8)));
    p
}

/// A UDP socket at 127.0.0.1:P whose P+1 is free too (for RTCP), bound there as well.
async fn player() -> (UdpSocket, UdpSocket) {
    for _ in 0..50 {
        let rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = rtp.local_addr().unwrap().port();
        if let Some(next) = port.checked_add(1)
            && let Ok(rtcp) = UdpSocket::bind(("127.0.0.1", next)).await
        {
            return (rtp, rtcp);
        }
    }
    panic!("no two adjacent free ports");
}

fn options(rtp_out: SocketAddr, config: WatchConfig) -> WatchOptions {
    WatchOptions {
        stkm_bind: "127.0.0.1:0".parse().unwrap(),
        srtp_bind: "127.0.0.1:0".parse().unwrap(),
        rtp_out,
        config,
        max_packets: None,
        duration: Some(Duration::from_secs(60)),
        ..WatchOptions::default()
    }
}

/// The test's broadcaster: sends to the watcher's sockets and reads what it forwards.
struct Peer {
    tx: UdpSocket,
    stkm_to: SocketAddr,
    srtp_to: SocketAddr,
    srtcp_to: SocketAddr,
    player: UdpSocket,
    player_rtcp: UdpSocket,
}

impl Peer {
    async fn new(sockets: &WatchSockets, player: (UdpSocket, UdpSocket)) -> Peer {
        Peer {
            tx: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            stkm_to: sockets.stkm_addr().unwrap(),
            srtp_to: sockets.srtp_addr().unwrap(),
            srtcp_to: sockets.srtcp_addr().unwrap(),
            player: player.0,
            player_rtcp: player.1,
        }
    }

    async fn stkm(&self, stkm: &[u8]) {
        self.tx.send_to(stkm, self.stkm_to).await.unwrap();
        // Let the watcher take it before the packets that need its TEK.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }

    /// Sends `rtp` protected by `sender`; returns the clear packet the player got, if any
    /// within `wait`.
    async fn packet(&self, sender: &mut SrtpSender, rtp: &[u8], wait: Duration) -> Option<Vec<u8>> {
        let mut p = rtp.to_vec();
        sender.protect(&mut p).unwrap();
        self.tx.send_to(&p, self.srtp_to).await.unwrap();
        let mut buf = vec![0u8; 2048];
        match tokio::time::timeout(wait, self.player.recv_from(&mut buf)).await {
            Ok(r) => Some(buf[..r.unwrap().0].to_vec()),
            Err(_) => None,
        }
    }

    /// As [`Peer::packet`], and the player must get exactly `rtp`.
    async fn delivered(&self, sender: &mut SrtpSender, rtp: &[u8]) {
        let got = self.packet(sender, rtp, Duration::from_secs(5)).await.expect("the clear packet reaches the player");
        assert_eq!(got, rtp, "byte-identical clear RTP");
    }

    async fn not_delivered(&self, sender: &mut SrtpSender, rtp: &[u8]) {
        assert!(self.packet(sender, rtp, Duration::from_millis(200)).await.is_none(), "the packet is dropped");
    }
}

/// Runs `watch` with `keys` while `script` drives the peer; `script` ends the watch.
async fn run<K, F>(keys: Keys<'_, K>, opts: WatchOptions, script: impl FnOnce(Peer) -> F) -> WatchSummary
where
    K: MbmsKeyHolder + Send,
    K::Card: Send,
    F: std::future::Future<Output = ()>,
{
    run_tapped(keys, opts, &mut NoTap, script).await
}

/// As [`run`], with `tap` watching.
async fn run_tapped<K, F>(
    keys: Keys<'_, K>,
    opts: WatchOptions,
    tap: &mut dyn MediaTap,
    script: impl FnOnce(Peer) -> F,
) -> WatchSummary
where
    K: MbmsKeyHolder + Send,
    K::Card: Send,
    F: std::future::Future<Output = ()>,
{
    let player = player().await;
    let mut opts = opts;
    opts.rtp_out = player.0.local_addr().unwrap();
    let sockets = WatchSockets::bind(&opts).await.unwrap();
    let peer = Peer::new(&sockets, player).await;
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async {
        let _ = stopped.await;
    };
    let script = async move {
        script(peer).await;
        let _ = stop.send(());
    };
    let (summary, ()) = tokio::join!(watch(sockets, keys, &opts, shutdown, tap), script);
    summary.unwrap()
}

#[tokio::test]
async fn clear_rtp_is_forwarded_byte_identical_across_a_tek_switch() {
    let mut card = card_with_seks();
    let opts = options("127.0.0.1:9".parse().unwrap(), WatchConfig::default());
    let summary = run(Keys::Holder(&mut card), opts, |peer| async move {
        let (mut t1, mut t2) = (
            SrtpSender::new(SrtpPolicy::rfc3711(), &master(id(1, 2), 1)),
            SrtpSender::new(SrtpPolicy::rfc3711(), &master(id(1, 2), 2)),
        );
        // Before any STKM: the MKI is unknown, nothing comes out.
        peer.not_delivered(&mut t1, &rtp(0x51, 1, 100)).await;
        peer.stkm(&stkm_a(1, TS0 + 1)).await;
        for seq in 2..12 {
            peer.delivered(&mut t1, &rtp(0x51, seq, 1000)).await;
        }
        peer.stkm(&stkm_a(1, TS0 + 2)).await;
        // TEK switch mid-stream.
        peer.stkm(&stkm_a(2, TS0 + 3)).await;
        for seq in 12..20 {
            peer.delivered(&mut t2, &rtp(0x51, seq, 700)).await;
        }
        peer.delivered(&mut t1, &rtp(0x51, 20, 300)).await; // late, under the previous TEK
        // Right MKI, wrong key: dropped; an MKI nobody holds: dropped.
        let forged =
            SrtpMasterKey::new(master(id(1, 2), 2).mki(), Tek::from_bytes([0; 16]), TekSalt::from_bytes([0; 14]));
        peer.not_delivered(&mut SrtpSender::new(SrtpPolicy::rfc3711(), &forged), &rtp(0x51, 21, 100)).await;
        peer.not_delivered(&mut SrtpSender::new(SrtpPolicy::rfc3711(), &master(id(7, 7), 1)), &rtp(0x51, 22, 100))
            .await;
        // SRTCP under the current TEK reaches the RTCP port.
        let rtcp = [&[0x80, 200, 0, 6][..], &0x51u32.to_be_bytes(), &[3; 20]].concat();
        let mut p = rtcp.clone();
        t2.protect_rtcp(&mut p).unwrap();
        peer.tx.send_to(&p, peer.srtcp_to).await.unwrap();
        let mut buf = [0u8; 256];
        let (n, _) =
            tokio::time::timeout(Duration::from_secs(5), peer.player_rtcp.recv_from(&mut buf)).await.unwrap().unwrap();
        assert_eq!(&buf[..n], &rtcp[..]);
        // Garbage on the STKM port changes nothing.
        peer.stkm(b"not an stkm").await;
        peer.delivered(&mut t2, &rtp(0x51, 23, 50)).await;
    })
    .await;
    let s = summary.stats;
    assert_eq!(s.packets_out, 20, "{summary}");
    assert_eq!((s.dropped_unknown_mki, s.dropped_auth), (2, 1), "{summary}");
    assert_eq!((s.stkms_accepted, s.stkms_skipped, s.stkms_malformed, s.teks_installed), (2, 1, 1, 2), "{summary}");
    assert_eq!((s.rtcp_in, s.rtcp_out), (1, 1));
    assert_eq!(summary.mkis, [master(id(1, 2), 2).mki(), master(id(1, 2), 1).mki()]);
    assert!(summary.to_string().contains("20 out"), "{summary}");
}

/// A clear packet with the MKI, TEK and salt it was opened with.
type KeyedPacket = (Vec<u8>, Mki, [u8; 16], [u8; 14]);

/// What a recorder would keep.
#[derive(Default)]
struct Recorded {
    stkms: Vec<(std::time::Instant, Vec<u8>, Event)>,
    rtp: Vec<KeyedPacket>,
    rtcp: usize,
}

impl MediaTap for Recorded {
    fn stkm(&mut self, at: std::time::Instant, stkm: &[u8], event: &Event) {
        self.stkms.push((at, stkm.to_vec(), event.clone()));
    }
    fn rtp(&mut self, _at: std::time::Instant, rtp: &[u8], key: &SrtpMasterKey) {
        self.rtp.push((rtp.to_vec(), key.mki(), *key.key().expose_secret(), *key.salt().expose_secret()));
    }
    fn rtcp(&mut self, _at: std::time::Instant, _rtcp: &[u8], _key: &SrtpMasterKey) {
        self.rtcp += 1;
    }
}

#[tokio::test]
async fn a_tap_sees_every_stkm_and_each_clear_packet_with_its_key() {
    let mut card = card_with_seks();
    let mut rec = Recorded::default();
    let opts = options("127.0.0.1:9".parse().unwrap(), WatchConfig::default());
    let sent = vec![stkm_a(1, TS0 + 1), stkm_a(1, TS0 + 2), stkm_a(2, TS0 + 3)];
    let to_send = sent.clone();
    run_tapped(Keys::Holder(&mut card), opts, &mut rec, |peer| async move {
        let mut t1 = SrtpSender::new(SrtpPolicy::rfc3711(), &master(id(1, 2), 1));
        let mut t2 = SrtpSender::new(SrtpPolicy::rfc3711(), &master(id(1, 2), 2));
        peer.stkm(&to_send[0]).await;
        peer.delivered(&mut t1, &rtp(1, 1, 100)).await;
        peer.stkm(&to_send[1]).await;
        peer.stkm(&to_send[2]).await;
        peer.delivered(&mut t2, &rtp(1, 2, 100)).await;
        peer.not_delivered(&mut SrtpSender::new(SrtpPolicy::rfc3711(), &master(id(9, 9), 1)), &rtp(1, 3, 100)).await;
    })
    .await;
    // Every STKM, in arrival order, with its time and what it led to.
    assert_eq!(rec.stkms.iter().map(|s| s.1.clone()).collect::<Vec<_>>(), sent);
    assert!(rec.stkms.windows(2).all(|w| w[0].0 <= w[1].0));
    assert!(matches!(rec.stkms[0].2, Event::TekInstalled { .. }));
    assert!(matches!(rec.stkms[1].2, Event::ResendSkipped { .. }));
    assert!(matches!(rec.stkms[2].2, Event::TekInstalled { .. }));
    // Each clear packet with the MKI, TEK and salt it was opened with; dropped ones not at all.
    assert_eq!(rec.rtp.len(), 2);
    for ((clear, mki, tek, salt), (want, tek_id)) in rec.rtp.iter().zip([(rtp(1, 1, 100), 1), (rtp(1, 2, 100), 2)]) {
        let m = master(id(1, 2), tek_id);
        assert_eq!((clear, *mki), (&want, m.mki()));
        assert_eq!((tek, salt), (m.key().expose_secret(), m.salt().expose_secret()));
    }
    assert_eq!(rec.rtcp, 0);
}

#[tokio::test]
async fn zapping_between_two_services() {
    let mut card = card_with_seks();
    // One service's key state at a time, as a terminal that tunes away: coming back to A goes
    // to the card, which gives A's TEK again for the same TEK ID (resend rule, P-6 step 5).
    let config = WatchConfig { max_services: 1, ..WatchConfig::default() };
    let opts = options("127.0.0.1:9".parse().unwrap(), config);
    let summary = run(Keys::Holder(&mut card), opts, |peer| async move {
        let mut a = SrtpSender::new(SrtpPolicy::rfc3711(), &master(id(1, 2), 1));
        let mut b = SrtpSender::new(SrtpPolicy::rfc3711(), &master(id(2, 1), 4));
        peer.stkm(&stkm_a(1, TS0 + 1)).await;
        for seq in 0..5 {
            peer.delivered(&mut a, &rtp(0xa, seq, 400)).await;
        }
        peer.stkm(&stkm_b(4, TS0 + 2)).await;
        for seq in 0..5 {
            peer.delivered(&mut b, &rtp(0xb, seq, 400)).await;
        }
        peer.not_delivered(&mut a, &rtp(0xa, 5, 400)).await;
        peer.stkm(&stkm_a(1, TS0 + 3)).await;
        for seq in 6..10 {
            peer.delivered(&mut a, &rtp(0xa, seq, 400)).await;
        }
    })
    .await;
    let s = summary.stats;
    assert_eq!((s.stkms_accepted, s.teks_installed, s.packets_out), (3, 3, 14), "{summary}");
    assert_eq!(summary.mkis, [master(id(1, 2), 1).mki()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_key_is_requested_from_the_bsm_and_the_stream_then_opens() {
    use loopback::*;
    tokio::time::timeout(Duration::from_secs(90), async {
        let clock = TestClock::new();
        let bsf = start_bsf(&clock, GbaType::GbaU).await;
        let bsm = start_bsm(bsf.addr, &clock).await;
        let mut terminal = start_terminal(bsf.addr, bsm.running.addr, &clock, card(), GbaMode::GbaU).await;
        let item = PurchaseItemRef::new("basic", Some("basic-month"));
        let until = UtcTime::from_unix_seconds(T0 + 30 * DAY).unwrap();
        terminal.subscribe(vec![(PurchaseRequestItem { item, price: None }, Some(until))]).await.unwrap();
        // The card loses the SEK (1,2) (as after a card swap or an eviction): STKMs find no key.
        let sek = SekPekId { key_group: 1, key_number: 2 };
        MbmsKeyHolder::msk_deletion(terminal.card_mut(), kd(), 1).unwrap();
        assert!(MbmsKeyHolder::mtk_generation(terminal.card_mut(), &sample_stkm()).is_err());

        let opts = options("127.0.0.1:9".parse().unwrap(), WatchConfig::default());
        let summary = run(Keys::Shell(&mut terminal), opts, |peer| async move {
            let mut s = SrtpSender::new(SrtpPolicy::rfc3711(), &master(sek, 1));
            let stkm_at = |ts| stkm(kd(), sek, SEK, SEK_RAND, 1, ts, None);
            // The first STKM: 6A88, LTKM Request, the answer's LTKM, the same STKM again.
            peer.stkm(&stkm_at(ntp(T0 + 61))).await;
            let mut seq = 0;
            let mut opened = None;
            for i in 0..50 {
                seq += 1;
                if let Some(got) = peer.packet(&mut s, &rtp(0x77, seq, 500), Duration::from_millis(200)).await {
                    opened = Some((i, got));
                    break;
                }
                // Keep the STKM stream going, as a broadcaster does.
                peer.stkm(&stkm_at(ntp(T0 + 62 + i))).await;
            }
            let (_, got) = opened.expect("the stream opens once the key is delivered");
            assert_eq!(got, rtp(0x77, seq, 500));
            for _ in 0..5 {
                seq += 1;
                peer.delivered(&mut s, &rtp(0x77, seq, 500)).await;
            }
        })
        .await;
        assert_eq!(summary.key_requests.len(), 1, "{summary}");
        assert_eq!(summary.key_requests[0].key, bcast_key(kd(), sek));
        assert_eq!(summary.key_requests[0].outcome, Ok(1), "{summary}");
        assert_eq!(summary.stats.key_requests, 1);
        assert!(summary.stats.packets_out >= 6, "{summary}");
        assert_eq!(summary.mkis, [master(sek, 1).mki()]);
        bsm.running.stop().await;
        bsf.stop().await;
    })
    .await
    .expect("the scenario ends in time");
}
