//! Recording and play-back (profile P-4, P-6, P-9; seed §6.7.1): a stream of STKMs and SRTP
//! (sealed and protected here with keys delivered to the card emulator by LTKMs) is recorded
//! into a real file in a temporary directory, over real UDP through `media::shell::watch` or
//! through the sans-IO watcher, then played back through the card: the clear samples must equal
//! the RTP payloads sent, the file must not hold them in the clear, and the card's play-back
//! rules decide under each security policy code. A card that lost its SEK gets it again from
//! the real BSM (loopback BSF + BSM) during play-back.

mod loopback;

use std::collections::HashMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use keycast_card::card::{Card, CardOpError};
use keycast_card::usim::{Usim, UsimIdentity};
use keycast_card::{ApduCard, CardError, Emulator};
use keycast_crypto::keys::{Opc, SekPek, Smk, SubscriberKey, Tek, TekSalt};
use keycast_mikey::{
    KeyDomainId, KeyValidity, LtkmContent, LtkmExt, ProtectionAfterReception, SecurityPolicy, SecurityPolicyExt,
    SekPekId, StkmContent, StkmExt, TekField, TrafficProtectionProtocol,
};
use keycast_terminal::key_holder::MbmsKeyHolder;
use keycast_terminal::media::play::{ClearSample, Output, Pace, PlayError, Player, play};
use keycast_terminal::media::record::{RecordConfig, RecordError, RecordStats, Recorder};
use keycast_terminal::media::shell::{Keys, WatchOptions, WatchSockets, watch};
use keycast_terminal::media::srtp::{Mki, SrtpMasterKey, SrtpPolicy, SrtpSender};
use keycast_terminal::media::{MediaTap, Packet, WatchConfig, Watcher};
use keycast_traffic::pdcf::{HEADER_GLOBAL_PURCHASE_ITEM_ID, MediaTrack, Recording};
use tokio::net::UdpSocket;
use tokio::sync::oneshot;

const BSM_NAME: &str = "bmsc.example.org";
const BTID: &str = "btid-1@bsf.example.org";
const TS0: u32 = 3_989_000_000;
const SEK: [u8; 16] = [0x12; 16];
const RAND: [u8; 16] = [0x21; 16];
const CSB: u32 = 0x0102_0304;
const RIGHTS_ISSUER: &str = "http://bmsc.example.org:8080/sprov";

fn kd() -> KeyDomainId {
    KeyDomainId::from_mcc_mnc("001", "01").unwrap()
}

const SEK_ID: SekPekId = SekPekId { key_group: 1, key_number: 2 };

fn smk() -> Smk {
    Smk::from_bytes([0x11; 32])
}

/// An LTKM for the SEK: `policy` None means no OMA BCAST extension (MBMS form, TEK ID window);
/// `key` None makes it a key-validity update.
fn ltkm(ts: u32, policy: Option<SecurityPolicyExt>, validity: KeyValidity, key: bool) -> Vec<u8> {
    LtkmContent {
        csb_id: CSB,
        verification_requested: false,
        srtp_cs: None,
        key_domain_id: kd(),
        sek_pek_id: SEK_ID,
        ts,
        rand: RAND,
        idi: BSM_NAME.into(),
        idr: BTID.into(),
        srtp_policy: None,
        ext: policy.map(|p| LtkmExt { security_policy: Some(p), tbk_id: None, consumption_reporting: false }),
        key: key.then(|| SekPek::from_bytes(SEK)),
        validity,
    }
    .seal(&smk())
    .unwrap()
}

fn window() -> KeyValidity {
    KeyValidity::TsWindow { ts_low: TS0, ts_high: TS0 + 1000 }
}

/// The card with a MUK and the SEK under `policy` (None: no extension, the implicit play-once).
fn card_with(policy: Option<SecurityPolicyExt>) -> ApduCard<Emulator> {
    let ident =
        UsimIdentity { imsi: "001010000000001".into(), impi: "user@ims".into(), iccid: "8900100000000000001".into() };
    let mut usim = Usim::new(ident, SubscriberKey::from_bytes([1; 16]), Opc::from_bytes([2; 16]));
    usim.mbms.install_muk(BSM_NAME, BTID, smk()).unwrap();
    let validity = if policy.is_some() { window() } else { KeyValidity::TekIdWindow { seq_l: 0, seq_u: 100 } };
    usim.mbms.msk_update(&ltkm(1, policy, validity, true)).unwrap();
    ApduCard::new(Emulator::new(usim))
}

fn policy(policy: SecurityPolicy, play_back_counter: u16, view_counter: u16) -> Option<SecurityPolicyExt> {
    Some(SecurityPolicyExt { policy, play_back_counter, view_counter })
}

fn master_of(sek: SekPekId, tek_id: u16) -> SrtpMasterKey {
    let b = u8::try_from(tek_id).unwrap().wrapping_mul(17);
    SrtpMasterKey::new(
        Mki::new(u32::from_be_bytes(sek.to_bytes()), tek_id),
        Tek::from_bytes([b; 16]),
        TekSalt::from_bytes([b ^ 0x5a; 14]),
    )
}

fn ext(par: ProtectionAfterReception) -> Option<StkmExt> {
    Some(StkmExt {
        protection_after_reception: par,
        traffic_protection_protocol: TrafficProtectionProtocol::Srtp,
        traffic_authentication: true,
        tbk_id: None,
        access_criteria: None,
    })
}

fn stkm_of(sek: SekPekId, sek_key: [u8; 16], rand: [u8; 16], tek_id: u16, ts: u32, ext: Option<StkmExt>) -> Vec<u8> {
    let m = master_of(sek, tek_id);
    StkmContent {
        csb_id: 0x0a0b_0c0d,
        key_domain_id: kd(),
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

/// A service-protection-only STKM (no secure channel needed) of the test's SEK.
fn stkm(tek_id: u16, ts: u32) -> Vec<u8> {
    stkm_of(SEK_ID, SEK, RAND, tek_id, ts, ext(ProtectionAfterReception::ServiceProtectionOnly))
}

fn rtp(seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 960).to_be_bytes());
    p.extend_from_slice(&0x5151_5151u32.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

fn payload(seq: u16) -> Vec<u8> {
    let len = 80 + usize::from(seq) * 37 % 300;
    (0..len).map(|i| (i as u8).wrapping_mul(31) ^ (seq as u8)).collect()
}

/// One input of a recorded stream.
#[derive(Clone)]
enum Input {
    Stkm(Vec<u8>),
    /// An RTP packet under TEK ID `.0` with sequence number `.1`.
    Rtp(u16, u16),
}

/// The standard stream: STKM TEK 1, packets, a resend, packets, a TEK switch, packets.
fn stream() -> Vec<Input> {
    let mut s = vec![Input::Stkm(stkm(1, TS0 + 1))];
    s.extend((1..=5).map(|q| Input::Rtp(1, q)));
    s.push(Input::Stkm(stkm(1, TS0 + 2)));
    s.extend((6..=10).map(|q| Input::Rtp(1, q)));
    s.push(Input::Stkm(stkm(2, TS0 + 3)));
    s.extend((11..=15).map(|q| Input::Rtp(2, q)));
    s
}

fn payloads(inputs: &[Input]) -> Vec<Vec<u8>> {
    inputs.iter().filter_map(|i| if let Input::Rtp(_, q) = i { Some(payload(*q)) } else { None }).collect()
}

fn config() -> RecordConfig {
    let mut c = RecordConfig::new(MediaTrack::audio(*b"mp4a", 48_000, 2));
    c.rights_issuer_url = RIGHTS_ISSUER.into();
    c.global_purchase_item_id = Some("basic".into());
    c.purchase_data_id = Some("basic-month".into());
    c.flush_samples = 4;
    c
}

/// Records `inputs` through the sans-IO watcher (every fresh STKM shown to the card), 20 ms
/// apart, into `path`.
fn record<K: MbmsKeyHolder + ?Sized>(
    holder: &mut K,
    path: &Path,
    inputs: &[Input],
) -> Result<RecordStats, RecordError> {
    record_key(holder, path, inputs, SEK_ID)
}

/// Plays the file through `holder` with the sans-IO player: the clear samples, or the error.
fn play_file<K: MbmsKeyHolder + ?Sized>(holder: &mut K, path: &Path) -> Result<Vec<Vec<u8>>, PlayError> {
    let data = std::fs::read(path).unwrap();
    let mut player = Player::open(&data)?;
    let mut out = Vec::new();
    while let Some(step) = player.next(holder)? {
        if let Output::Sample(s) = step {
            out.push(s.data);
        }
    }
    Ok(out)
}

fn assert_refused_fresh(r: Result<Vec<Vec<u8>>, PlayError>, what: &str) {
    match r {
        Err(PlayError::Refused { index: 0, error: CardOpError::Card(CardError::Freshness(_)), .. }) => {}
        other => panic!("{what}: play-back must be refused at the first STKM with 9865, got {other:?}"),
    }
}

#[test]
fn recorded_samples_are_encrypted_and_play_back_to_the_payloads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rec.mp4");
    let mut card = card_with(policy(SecurityPolicy::UnlimitedWithinWindow, 0, 0));
    let inputs = stream();
    let stats = record(&mut card, &path, &inputs).unwrap();
    assert_eq!((stats.stkms, stats.samples), (3, 15), "{stats:?}");
    assert!(stats.fragments >= 4, "flushed every 4 samples: {stats:?}");

    let data = std::fs::read(&path).unwrap();
    let rec = Recording::parse(&data).unwrap();
    assert_eq!(rec.header.headers.rights_issuer_url, RIGHTS_ISSUER);
    assert_eq!(rec.header.headers.textual_header(HEADER_GLOBAL_PURCHASE_ITEM_ID), Some("basic"));
    assert_eq!(rec.header.headers.key_info[0].bcast_key(), Some((kd().0, master_of(SEK_ID, 1).mki())));
    assert_eq!(rec.stkms.len(), 3);
    // Stored samples: IV = byte offset in the track, key indicator = MKI, encrypted AU.
    let want = payloads(&inputs);
    let mut offset = 0u64;
    for (i, (m, clear)) in rec.media.iter().zip(&want).enumerate() {
        assert_eq!(m.header.iv, offset, "sample {i}");
        assert_eq!(m.header.key_indicator, master_of(SEK_ID, if i < 10 { 1 } else { 2 }).mki());
        assert_ne!(&m.sample[14..], &clear[..], "sample {i} is not stored in the clear");
        assert_eq!(m.sample.len(), 14 + clear.len());
        offset += clear.len() as u64;
    }
    assert!(!data.windows(want[3].len()).any(|w| w == want[3]), "no clear payload anywhere in the file");
    // The RTP timing comes back.
    assert_eq!(rec.media[5].presentation_time() - rec.media[0].presentation_time(), 5 * 960);

    assert_eq!(play_file(&mut card, &path).unwrap(), want);
}

#[test]
fn an_interrupted_recording_plays_up_to_its_last_fragment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rec.mp4");
    let mut card = card_with(policy(SecurityPolicy::UnlimitedWithinWindow, 0, 0));
    let inputs = stream();
    record(&mut card, &path, &inputs).unwrap();
    let mut data = std::fs::read(&path).unwrap();
    // Cut inside the last fragment / the mfra: as after a power loss.
    data.truncate(data.len() - 1000);
    let cut = dir.path().join("cut.mp4");
    std::fs::write(&cut, &data).unwrap();
    let got = play_file(&mut card, &cut).unwrap();
    assert!(!got.is_empty() && got.len() < 15, "{} samples", got.len());
    assert_eq!(got, payloads(&inputs)[..got.len()]);
}

#[test]
fn recording_is_refused_when_protection_after_reception_is_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rec.mp4");
    let mut card = card_with(policy(SecurityPolicy::UnlimitedWithinWindow, 0, 0));
    let no_record = stkm_of(SEK_ID, SEK, RAND, 1, TS0 + 1, ext(ProtectionAfterReception::MustNotRecord));
    let inputs = [Input::Stkm(no_record), Input::Rtp(1, 1), Input::Rtp(1, 2)];
    match record(&mut card, &path, &inputs) {
        Err(RecordError::NotAllowed { sek_pek_id, partial: false, .. }) => assert_eq!(sek_pek_id, SEK_ID),
        other => panic!("refused expected, got {other:?}"),
    }
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "nothing written");

    // A forged STKM with the flag (wrong SEK) does not stop a recording.
    let forged = stkm_of(SEK_ID, [0x66; 16], RAND, 1, TS0 + 2, ext(ProtectionAfterReception::MustNotRecord));
    let mut inputs = stream();
    inputs.insert(3, Input::Stkm(forged));
    let stats = record(&mut card_with(policy(SecurityPolicy::UnlimitedWithinWindow, 0, 0)), &path, &inputs).unwrap();
    assert_eq!((stats.stkms, stats.stkms_ignored, stats.samples), (3, 1, 15));

    // Switching to 1 mid-stream: what was allowed is kept, finished, and nothing more.
    let mut inputs = stream();
    inputs[6] = Input::Stkm(stkm_of(SEK_ID, SEK, RAND, 1, TS0 + 2, ext(ProtectionAfterReception::MustNotRecord)));
    match record(&mut card_with(policy(SecurityPolicy::UnlimitedWithinWindow, 0, 0)), &path, &inputs) {
        Err(RecordError::NotAllowed { partial: true, .. }) => {}
        other => panic!("refused mid-stream expected, got {other:?}"),
    }
    let data = std::fs::read(&path).unwrap();
    let rec = Recording::parse(&data).expect("a finished file");
    assert_eq!(rec.media.len(), 5);
}

#[test]
fn play_back_under_each_policy_code() {
    use SecurityPolicy::*;
    let dir = tempfile::tempdir().unwrap();
    let inputs = stream();
    let want = payloads(&inputs);
    // Codes 0, 2, 4 and no extension (the implicit play-once right): live only.
    for (name, p) in [
        ("no extension", None),
        ("0x00 PPT", policy(PayPerTime, 0, 0)),
        ("0x02 PPV", policy(PayPerView, 0, 0)),
        ("0x04 user PPV", policy(UserPayPerView, 0, 3)),
    ] {
        let path = dir.path().join(format!("{name}.mp4"));
        let mut card = card_with(p);
        let stats = record(&mut card, &path, &inputs).unwrap();
        assert_eq!(stats.samples, 15, "{name}: recorded live");
        assert_refused_fresh(play_file(&mut card, &path), name);
    }
    // Codes 1 and 3: one play-back session per play-back, counted down, refused at 0.
    for (name, p) in
        [("0x01 PPT+PB", policy(PayPerTimeWithPlayBack, 2, 0)), ("0x03 PPV+PB", policy(PayPerViewWithPlayBack, 2, 0))]
    {
        let path = dir.path().join(format!("{name}.mp4"));
        let mut card = card_with(p);
        record(&mut card, &path, &inputs).unwrap();
        let audit = |card: &mut ApduCard<Emulator>| Card::audit(card, kd(), SEK_ID).unwrap();
        assert_eq!(audit(&mut card).play_backs_left, 2);
        for (live_ts, left) in [(TS0 + 10, 1), (TS0 + 11, 0)] {
            assert_eq!(play_file(&mut card, &path).unwrap(), want, "{name}");
            let a = audit(&mut card);
            assert_eq!((a.play_backs_left, a.play_back_sessions), (left, u32::from(2 - left)), "{name}");
            // A live STKM ends the play-back session.
            MbmsKeyHolder::mtk_generation(&mut card, &stkm(3, live_ts)).unwrap();
        }
        assert_refused_fresh(play_file(&mut card, &path), &format!("{name} with no play-back left"));
    }
    // Code 5: plays as often as wanted inside the window, not once the window leaves the recording.
    let path = dir.path().join("unlimited.mp4");
    let mut card = card_with(policy(UnlimitedWithinWindow, 0, 0));
    record(&mut card, &path, &inputs).unwrap();
    for _ in 0..3 {
        assert_eq!(play_file(&mut card, &path).unwrap(), want);
    }
    let shortened = KeyValidity::TsWindow { ts_low: TS0 + 3, ts_high: TS0 + 1000 };
    Card::msk_update(&mut card, &ltkm(2, policy(UnlimitedWithinWindow, 0, 0), shortened, false)).unwrap();
    assert_refused_fresh(play_file(&mut card, &path), "0x05 outside the window");
}

#[test]
fn play_back_without_the_key_stops_with_key_missing_and_the_ts_window() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rec.mp4");
    let mut card = card_with(policy(SecurityPolicy::UnlimitedWithinWindow, 0, 0));
    record(&mut card, &path, &stream()).unwrap();
    MbmsKeyHolder::msk_deletion(&mut card, kd(), SEK_ID.key_group).unwrap();
    match play_file(&mut card, &path) {
        Err(PlayError::KeyMissing { index: 0, sek_pek_id, ts_low, ts_high, .. }) => {
            assert_eq!((sek_pek_id, ts_low, ts_high), (SEK_ID, TS0 + 1, TS0 + 3));
        }
        other => panic!("key missing expected, got {other:?}"),
    }
}

#[tokio::test]
async fn recorded_over_udp_and_played_back_at_the_original_pace() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rec.mp4");
    let mut card = card_with(policy(SecurityPolicy::UnlimitedWithinWindow, 0, 0));
    let sink = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let opts = WatchOptions {
        stkm_bind: "127.0.0.1:0".parse().unwrap(),
        srtp_bind: "127.0.0.1:0".parse().unwrap(),
        rtp_out: sink.local_addr().unwrap(),
        config: WatchConfig { card_recheck: Duration::ZERO, ..WatchConfig::default() },
        duration: Some(Duration::from_secs(60)),
        ..WatchOptions::default()
    };
    let sockets = WatchSockets::bind(&opts).await.unwrap();
    let (stkm_to, srtp_to): (SocketAddr, SocketAddr) = (sockets.stkm_addr().unwrap(), sockets.srtp_addr().unwrap());
    let mut recorder = Recorder::new(config(), File::create(&path).unwrap());
    let inputs = stream();
    let to_send = inputs.clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let script = async move {
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut senders: HashMap<u16, SrtpSender> = HashMap::new();
        let mut buf = [0u8; 2048];
        for input in to_send {
            match input {
                Input::Stkm(b) => {
                    tx.send_to(&b, stkm_to).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
                Input::Rtp(tek, seq) => {
                    let s = senders
                        .entry(tek)
                        .or_insert_with(|| SrtpSender::new(SrtpPolicy::rfc3711(), &master_of(SEK_ID, tek)));
                    let mut p = rtp(seq, &payload(seq));
                    s.protect(&mut p).unwrap();
                    tx.send_to(&p, srtp_to).await.unwrap();
                    // Wait for the clear packet: the watcher (and the recorder) had it.
                    let (n, _) =
                        tokio::time::timeout(Duration::from_secs(5), sink.recv_from(&mut buf)).await.unwrap().unwrap();
                    assert_eq!(&buf[..n], &rtp(seq, &payload(seq))[..]);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        let _ = stop.send(());
    };
    let shutdown = async {
        let _ = stopped.await;
    };
    let (summary, ()) = tokio::join!(watch(sockets, Keys::Holder(&mut card), &opts, shutdown, &mut recorder), script);
    assert_eq!(summary.unwrap().stats.packets_out, 15);
    let (_, stats) = recorder.finish().unwrap();
    assert_eq!((stats.stkms, stats.samples), (3, 15));

    let data = std::fs::read(&path).unwrap();
    let mut player = Player::open(&data).unwrap();
    let last = player.recording().media.last().unwrap().time();
    assert!(last >= Duration::from_millis(15 * 20), "recorded at the pace received: {last:?}");
    let mut got: Vec<ClearSample> = Vec::new();
    let started = Instant::now();
    let summary =
        play(&mut player, Keys::Holder(&mut card), None, Pace::Original, &mut |s: &ClearSample| got.push(s.clone()))
            .await
            .unwrap();
    assert!(started.elapsed() >= last, "paced: {:?} < {last:?}", started.elapsed());
    assert_eq!(got.iter().map(|s| s.data.clone()).collect::<Vec<_>>(), payloads(&inputs));
    assert!(got.windows(2).all(|w| w[0].time <= w[1].time && w[0].rtp_time < w[1].rtp_time));
    assert_eq!((summary.stats.samples, summary.stats.stkms), (15, 3));
    assert!(summary.finished && summary.keys_requested.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_without_the_sek_gets_it_from_the_bsm_during_play_back() {
    use keycast_gba::bsf::GbaType;
    use keycast_gba::client::GbaMode;
    use keycast_provisioning::sprov::{PurchaseItemRef, PurchaseRequestItem};
    use keycast_provisioning::time::UtcTime;
    use loopback::*;
    tokio::time::timeout(Duration::from_secs(90), async {
        let clock = TestClock::new();
        let bsf = start_bsf(&clock, GbaType::GbaU).await;
        let bsm = start_bsm(bsf.addr, &clock).await;
        let mut terminal = start_terminal(bsf.addr, bsm.running.addr, &clock, card(), GbaMode::GbaU).await;
        let item = PurchaseItemRef::new("basic", Some("basic-month"));
        let until = UtcTime::from_unix_seconds(T0 + 30 * DAY).unwrap();
        terminal.subscribe(vec![(PurchaseRequestItem { item, price: None }, Some(until))]).await.unwrap();

        // Record the BSM's service (SEK (1,2) as the BSM holds it) while the card has the key.
        let sek = SekPekId { key_group: 1, key_number: 2 };
        let at = |tek, t| Input::Stkm(stkm_of(sek, loopback::SEK, SEK_RAND, tek, ntp(T0 + 60 + t), None));
        let mut inputs = vec![at(1, 1)];
        inputs.extend((1..=6).map(|q| Input::Rtp(1, q)));
        inputs.push(at(2, 2));
        inputs.extend((7..=12).map(|q| Input::Rtp(2, q)));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rec.mp4");
        let stats = record_key(terminal.card_mut(), &path, &inputs, sek).unwrap();
        assert_eq!(stats.samples, 12);

        // The card loses the SEK (a card swap): play-back asks the BSM and continues.
        MbmsKeyHolder::msk_deletion(terminal.card_mut(), kd(), 1).unwrap();
        let data = std::fs::read(&path).unwrap();
        let mut player = Player::open(&data).unwrap();
        let mut got = Vec::new();
        let summary = play(&mut player, Keys::Shell(&mut terminal), None, Pace::Fast, &mut |s: &ClearSample| {
            got.push(s.data.clone())
        })
        .await
        .unwrap();
        assert_eq!(got, payloads(&inputs));
        assert_eq!(summary.keys_requested.len(), 1);
        assert_eq!(summary.stats.ltkm_requests, 1, "{summary:?}");
        assert_eq!(summary.stats.token_purchases, 0, "{summary:?}");
        bsm.running.stop().await;
        bsf.stop().await;
    })
    .await
    .expect("the scenario ends in time");
}

/// [`record`] for a stream under another SEK/PEK (the BSM's).
fn record_key<K: MbmsKeyHolder + ?Sized>(
    holder: &mut K,
    path: &Path,
    inputs: &[Input],
    sek: SekPekId,
) -> Result<RecordStats, RecordError> {
    let mut watcher = Watcher::new(WatchConfig { card_recheck: Duration::ZERO, ..WatchConfig::default() });
    let mut recorder = Recorder::new(config(), File::create(path).unwrap());
    let mut senders: HashMap<u16, SrtpSender> = HashMap::new();
    let t0 = Instant::now();
    for (i, input) in inputs.iter().enumerate() {
        let now = t0 + Duration::from_millis(20 * i as u64);
        match input {
            Input::Stkm(bytes) => {
                let event = watcher.handle_stkm(holder, bytes, now);
                recorder.stkm(now, bytes, &event);
            }
            Input::Rtp(tek, seq) => {
                let sender = senders
                    .entry(*tek)
                    .or_insert_with(|| SrtpSender::new(SrtpPolicy::rfc3711(), &master_of(sek, *tek)));
                let mut p = rtp(*seq, &payload(*seq));
                sender.protect(&mut p).unwrap();
                if let Packet::Clear { len, mki } = watcher.handle_srtp(&mut p, now) {
                    recorder.rtp(now, &p[..len], watcher.master_key(mki).unwrap());
                }
            }
        }
    }
    recorder.finish().map(|(_, stats)| stats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_past_its_window_comes_from_the_bsm_history_by_token_purchase() {
    use keycast_bsm::domain::{PurchaseData, PurchaseKind};
    use keycast_bsm::store::BsmStore;
    use keycast_gba::bsf::GbaType;
    use keycast_gba::client::GbaMode;
    use keycast_provisioning::sprov::{Price, PurchaseItemRef, PurchaseRequestItem};
    use keycast_provisioning::time::UtcTime;
    use loopback::*;
    tokio::time::timeout(Duration::from_secs(90), async {
        let clock = TestClock::new();
        let bsf = start_bsf(&clock, GbaType::GbaU).await;
        let bsm = start_bsm(bsf.addr, &clock).await;
        // The catalogue sells tokens for the item too.
        bsm.state
            .service()
            .store()
            .put_purchase_data(&PurchaseData {
                id: "basic-tokens".into(),
                item: "basic".into(),
                price: Price { amount: "1.00".into(), currency: "EUR".into() },
                kind: PurchaseKind::Tokens(3),
                period: 30 * DAY,
                play_backs: 0,
            })
            .await
            .unwrap();
        let mut terminal = start_terminal(bsf.addr, bsm.running.addr, &clock, card(), GbaMode::GbaU).await;
        let item = PurchaseItemRef::new("basic", Some("basic-month"));
        let until = UtcTime::from_unix_seconds(T0 + 30 * DAY).unwrap();
        terminal.subscribe(vec![(PurchaseRequestItem { item, price: None }, Some(until))]).await.unwrap();

        let sek = SekPekId { key_group: 1, key_number: 2 };
        let at = |tek, t| Input::Stkm(stkm_of(sek, loopback::SEK, SEK_RAND, tek, ntp(T0 + 60 + t), None));
        let mut inputs = vec![at(1, 1)];
        inputs.extend((1..=8).map(|q| Input::Rtp(1, q)));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rec.mp4");
        assert_eq!(record_key(terminal.card_mut(), &path, &inputs, sek).unwrap().samples, 8);

        // Weeks later the SEK's window (until T0 + 20 days) is over and the card lost it: an
        // LTKM Request gets nothing (no live key), the Token Purchase Request gets it from the
        // history, and the recording plays.
        clock.advance(21 * DAY);
        MbmsKeyHolder::msk_deletion(terminal.card_mut(), kd(), 1).unwrap();
        let data = std::fs::read(&path).unwrap();
        let mut player = Player::open(&data).unwrap();
        let mut got = Vec::new();
        let summary = play(&mut player, Keys::Shell(&mut terminal), None, Pace::Fast, &mut |s: &ClearSample| {
            got.push(s.data.clone())
        })
        .await
        .unwrap();
        assert_eq!(got, payloads(&inputs));
        assert_eq!((summary.stats.ltkm_requests, summary.stats.token_purchases), (1, 1), "{summary:?}");
        // Policy 0x04 with the tokens bought: the recording's program took one.
        let audit = Card::audit(terminal.card_mut(), kd(), sek).unwrap();
        assert_eq!(audit.views_left, 2, "{audit:?}");
        bsm.running.stop().await;
        bsf.stop().await;
    })
    .await
    .expect("the scenario ends in time");
}

#[test]
fn a_terminal_bound_recording_names_its_tbk_and_plays_only_with_it() {
    use keycast_crypto::key_wrap::wrap_16;
    use keycast_crypto::keys::Tbk;
    use keycast_terminal::protection::ProtectionState;
    const TBK_ID: u32 = 77;
    const TBK: [u8; 16] = [0x7b; 16];
    let bound = |tek_id: u16, ts: u32| {
        let m = master_of(SEK_ID, tek_id);
        StkmContent {
            csb_id: 0x0a0b_0c0d,
            key_domain_id: kd(),
            sek_pek_id: SEK_ID,
            tek_id,
            ts,
            ext: Some(StkmExt {
                protection_after_reception: ProtectionAfterReception::TerminalBound,
                traffic_protection_protocol: TrafficProtectionProtocol::Srtp,
                traffic_authentication: true,
                tbk_id: Some(TBK_ID),
                access_criteria: None,
            }),
            tek: TekField::WrappedByTbk(wrap_16(&TBK, m.key().expose_secret())),
            salt: Some(m.salt().clone()),
        }
        .seal(&SekPek::from_bytes(SEK), &RAND)
        .unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bound.mp4");
    let mut card = card_with(policy(SecurityPolicy::UnlimitedWithinWindow, 0, 0));
    // The watcher cannot open this stream without the TBK (the card answers TBK-wrapped), but
    // the card checked the STKM, so the recorder keeps it; the packets are handed in as a
    // terminal holding the TBK would open them.
    let mut watcher = Watcher::new(WatchConfig { card_recheck: Duration::ZERO, ..WatchConfig::default() });
    let mut recorder = Recorder::new(config(), File::create(&path).unwrap());
    let t0 = Instant::now();
    let stkm_bytes = bound(1, TS0 + 1);
    let event = watcher.handle_stkm(&mut card, &stkm_bytes, t0);
    assert!(matches!(event, keycast_terminal::media::Event::Unusable { .. }), "{event:?}");
    recorder.stkm(t0, &stkm_bytes, &event);
    for seq in 1..=6u16 {
        let at = t0 + Duration::from_millis(20 * u64::from(seq));
        recorder.rtp(at, &rtp(seq, &payload(seq)), &master_of(SEK_ID, 1));
    }
    let (_, stats) = recorder.finish().unwrap();
    assert_eq!((stats.stkms, stats.samples), (1, 6));
    let data = std::fs::read(&path).unwrap();
    let rec = Recording::parse(&data).unwrap();
    assert_eq!(rec.header.headers.key_info[0].tbk_id, Some(TBK_ID), "obki names the TBK");
    assert_eq!(rec.header.stkm_track.terminal_binding_key_id, TBK_ID, "oksd names the TBK");

    let play_with = |card: &mut ApduCard<Emulator>, state: Option<&ProtectionState>| {
        let mut player = Player::open(&data).unwrap();
        let mut out = Vec::new();
        while let Some(step) = player.next_with(card, state)? {
            if let Output::Sample(s) = step {
                out.push(s.data);
            }
        }
        Ok::<_, PlayError>(out)
    };
    assert!(matches!(play_with(&mut card, None), Err(PlayError::TbkWrapped { index: 0 })));
    let mut other = ProtectionState::new();
    other.insert_tbk(TBK_ID, Tbk::from_bytes([0x01; 16]));
    assert!(
        matches!(play_with(&mut card, Some(&other)), Err(PlayError::Unwrap { index: 0 })),
        "another terminal's TBK"
    );
    let mut mine = ProtectionState::new();
    mine.insert_tbk(TBK_ID, Tbk::from_bytes(TBK));
    assert_eq!(play_with(&mut card, Some(&mine)).unwrap(), (1..=6).map(payload).collect::<Vec<_>>());
}

#[test]
fn play_back_rejects_a_file_that_is_not_a_recording_and_a_tampered_stkm() {
    assert!(matches!(Player::open(b"not a recording at all"), Err(PlayError::Pdcf(_))));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rec.mp4");
    let mut card = card_with(policy(SecurityPolicy::UnlimitedWithinWindow, 0, 0));
    record(&mut card, &path, &stream()).unwrap();
    let mut data = std::fs::read(&path).unwrap();
    // Flip the last byte (inside the MAC) of the first STKM where it sits in the file.
    let first = stkm(1, TS0 + 1);
    let at = data.windows(first.len()).position(|w| w == first).expect("the STKM is stored as received");
    data[at + first.len() - 1] ^= 1;
    let tampered = dir.path().join("tampered.mp4");
    std::fs::write(&tampered, &data).unwrap();
    match play_file(&mut card, &tampered) {
        Err(PlayError::Refused { index: 0, error: CardOpError::Card(CardError::Mac), .. }) => {}
        other => panic!("9862 expected, got {other:?}"),
    }
}
