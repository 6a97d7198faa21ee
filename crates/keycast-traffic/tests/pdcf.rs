//! The adapted PDCF (profile P-9): a recording written by `PdcfWriter` read back sample for
//! sample, against a committed byte-for-byte vector (tests/vectors/pdcf_small.hex) and an
//! independent standard-library Python box walker (tests/vectors/pdcf_walk.py); interrupted
//! recordings; one test per rejection; property tests.

mod python_oracle;

use core::time::Duration;

use keycast_crypto::keys::Tek;
use keycast_traffic::ismacryp::{IsmacrypError, IsmacrypKey, IsmacrypReceiver, IsmacrypSender};
use keycast_traffic::pdcf::{
    CommonHeaders, Event, FourCc, HEADER_GLOBAL_PURCHASE_ITEM_ID, HEADER_PURCHASE_DATA_ID, KeyInfo, MediaTrack,
    PdcfError, PdcfHeader, PdcfWriter, Recording, StkmTrackInfo,
};
use keycast_traffic::srtp::Mki;
use proptest::prelude::*;

const DOMAIN: [u8; 3] = [0x00, 0xf1, 0x10];

fn key(tek_id: u16) -> IsmacrypKey {
    let fill = tek_id as u8;
    IsmacrypKey::new(Mki::new(0x0001_0001, tek_id), Tek::from_bytes([0x10 * fill; 16]), [0x22 + fill; 8])
}

fn header() -> PdcfHeader {
    let mut h = PdcfHeader::new(MediaTrack::audio(*b"mp4a", 48_000, 2));
    h.headers = CommonHeaders {
        content_id: "cid:rec-1@bsm.example.net".into(),
        rights_issuer_url: "https://bsm.example.net/bcast".into(),
        textual_headers: vec![
            ("GlobalPurchaseItemID".into(), "gpi-1".into()),
            ("PurchaseDataID".into(), "pd-7".into()),
        ],
        key_info: vec![KeyInfo { tbk_id: Some(77), ..KeyInfo::bcast(DOMAIN, Mki::new(0x0001_0001, 1)) }],
    };
    h.stkm_track = StkmTrackInfo {
        sample_version: 1,
        sample_type: 0,
        terminal_binding_key_id: 77,
        rights_issuer_uri: "https://bsm.example.net/bcast".into(),
    };
    h
}

/// What was pushed, in push order.
#[derive(Debug, Clone, PartialEq)]
enum Pushed {
    Stkm(Duration, Vec<u8>),
    Media(Duration, u32, Vec<u8>, Vec<u8>),
}

struct Small {
    file: Vec<u8>,
    /// File length after the init chunk and after each fragment (the last one includes mfra).
    ends: Vec<usize>,
    /// Media samples in each fragment.
    media_per_fragment: Vec<usize>,
    pushed: Vec<Pushed>,
}

/// Two fragments: STKM 1 and three 5-byte samples under TEK 1, then STKM 2 and two samples
/// under TEK 2; 20 ms audio frames at 48 kHz.
fn small() -> Small {
    let (mut w, init) = PdcfWriter::new(&header()).unwrap();
    let mut file = init;
    let mut ends = vec![file.len()];
    let mut pushed = Vec::new();
    let mut tx = IsmacrypSender::new(&key(1));
    let mut rtp = 1000u32;
    let mut push_media = |w: &mut PdcfWriter, tx: &mut IsmacrypSender, ms: u64, pushed: &mut Vec<Pushed>| {
        let plain: Vec<u8> = (0..5).map(|i| (ms as u8).wrapping_add(i)).collect();
        let mut s = plain.clone();
        tx.protect(&mut s).unwrap();
        w.push_media(Duration::from_millis(ms), rtp, &s).unwrap();
        pushed.push(Pushed::Media(Duration::from_millis(ms), rtp, s, plain));
        rtp += 960;
    };
    w.push_stkm(Duration::ZERO, b"stkm-1").unwrap();
    pushed.push(Pushed::Stkm(Duration::ZERO, b"stkm-1".to_vec()));
    for ms in [5, 25, 45] {
        push_media(&mut w, &mut tx, ms, &mut pushed);
    }
    file.extend(w.flush_fragment());
    ends.push(file.len());
    assert!(w.flush_fragment().is_empty(), "nothing new, nothing to append");
    w.push_stkm(Duration::from_millis(50), b"stkm-2").unwrap();
    pushed.push(Pushed::Stkm(Duration::from_millis(50), b"stkm-2".to_vec()));
    tx.set_key(&key(2));
    for ms in [65, 85] {
        push_media(&mut w, &mut tx, ms, &mut pushed);
    }
    file.extend(w.finish());
    ends.push(file.len());
    Small { file, ends, media_per_fragment: vec![3, 2], pushed }
}

fn vector_path() -> std::path::PathBuf {
    python_oracle::vectors_dir().join("pdcf_small.hex")
}

#[test]
fn small_file_matches_committed_vector() {
    let s = small();
    if std::env::var_os("KEYCAST_WRITE_VECTORS").is_some() {
        std::fs::write(vector_path(), hex::encode(&s.file) + "\n").unwrap();
    }
    let committed = std::fs::read_to_string(vector_path()).unwrap();
    assert_eq!(hex::encode(&s.file), committed.trim(), "writer output changed; the wire layout is fixed");
    // And the committed bytes read back.
    let rec = Recording::parse(&hex::decode(committed.trim()).unwrap()).unwrap().header;
    assert_eq!(rec, header());
}

#[test]
fn small_file_reads_back_sample_for_sample() {
    let s = small();
    let rec = Recording::parse(&s.file).unwrap();
    assert!(rec.finished);
    assert_eq!(rec.complete_len, s.file.len());
    assert_eq!(rec.header, header());
    assert_eq!(rec.scheme_version, 0x0000_0300);
    assert_eq!(rec.header.headers.textual_header(HEADER_GLOBAL_PURCHASE_ITEM_ID), Some("gpi-1"));
    assert_eq!(rec.header.headers.textual_header(HEADER_PURCHASE_DATA_ID), Some("pd-7"));
    assert_eq!(rec.header.headers.rights_issuer_url, "https://bsm.example.net/bcast");
    assert_eq!(rec.stkm_timescale, 1000);
    let media: Vec<_> =
        s.pushed.iter().filter_map(|p| if let Pushed::Media(_, _, s, _) = p { Some(s) } else { None }).collect();
    assert_eq!(
        rec.media.iter().map(|m| m.sample.to_vec()).collect::<Vec<_>>(),
        media.into_iter().cloned().collect::<Vec<_>>()
    );
    // First sample at its reception time (5 ms = 240 ticks), then one 20 ms frame (960) apart.
    assert_eq!(rec.media.iter().map(|m| m.decode_time).collect::<Vec<_>>(), [240, 1200, 2160, 3120, 4080]);
    assert!(rec.media.iter().all(|m| m.composition_offset == 0));
    assert_eq!(rec.media[3].header.key_indicator, Mki::new(0x0001_0001, 2));
    assert_eq!(rec.media[1].header.iv, 5);
    assert_eq!(
        rec.stkms.iter().map(|s| (s.time(), s.stkm)).collect::<Vec<_>>(),
        [(Duration::ZERO, &b"stkm-1"[..]), (Duration::from_millis(50), &b"stkm-2"[..])]
    );
    // Play-back: events in time order; each STKM yields its TEK before its samples.
    let order: Vec<_> = rec.events().map(|e| (matches!(e, Event::Stkm(_)), e.time())).collect();
    let ms = |v: u64| Duration::from_millis(v);
    assert_eq!(
        order,
        [
            (true, ms(0)),
            (false, ms(5)),
            (false, ms(25)),
            (false, ms(45)),
            (true, ms(50)),
            (false, ms(65)),
            (false, ms(85))
        ]
    );
    let mut rx = IsmacrypReceiver::new();
    let mut plain = Vec::new();
    for e in rec.events() {
        match e {
            Event::Stkm(s) => _ = rx.add_key(&key(if s.stkm == b"stkm-1" { 1 } else { 2 })),
            Event::Media(m) => {
                let mut v = m.sample.to_vec();
                rx.unprotect(&mut v).unwrap();
                plain.push(v);
            }
        }
    }
    let want: Vec<_> = s
        .pushed
        .iter()
        .filter_map(|p| if let Pushed::Media(_, _, _, p) = p { Some(p.clone()) } else { None })
        .collect();
    assert_eq!(plain, want);
}

#[test]
fn key_info_names_the_key_in_base64() {
    let k = KeyInfo::bcast(DOMAIN, Mki::new(0x0001_0001, 1));
    assert_eq!(k.key_id_type, 2);
    // base64(00 f1 10 ‖ 00 01 00 01 ‖ 00 01)
    assert_eq!(k.key_id, b"APEQAAEAAQAB");
    assert_eq!(k.bcast_key(), Some((DOMAIN, Mki::new(0x0001_0001, 1))));
}

#[test]
fn python_walker_reads_the_same_boxes() {
    let Some(py) = python_oracle::python_with(&["struct"]) else { return };
    let s = small();
    let script = python_oracle::vectors_dir().join("pdcf_walk.py");
    let out = python_oracle::run(&py, &[script.to_str().unwrap(), "-"], &hex::encode(&s.file));
    let has = |needle: &str| assert!(out.contains(needle), "walker output lacks {needle:?}:\n{out}");
    has("ftyp size=28 major=opf2 minor=0 compatible=opf2,isom,iso6");
    has("frma size=12 format=mp4a");
    has("schm size=20 scheme=odkm version=0x00000300");
    has(
        "method=2 padding=0 plaintext=0 cid=cid:rec-1@bsm.example.net ri=https://bsm.example.net/bcast text=GlobalPurchaseItemID:gpi-1|PurchaseDataID:pd-7",
    );
    has("obki size=32 flags=0x20 type=2 key_id=APEQAAEAAQAB tbk=77");
    has("odaf size=15 selective=0 kil=6 ivl=8");
    has("oslt size=21 bits=64 salt=0000000000000000");
    has("oksd size=53 version=1 type=0 tbk=77 uri=https://bsm.example.net/bcast");
    has("mdhd size=32 timescale=48000");
    has("mdhd size=32 timescale=1000");
    has("tfdt size=20 base=3120");
    has(&format!("mfro size=16 size={}", mfra_len(&s.file)));
    // The walker finds each sample's bytes through the trun data offsets by itself.
    let mut media = Vec::new();
    let mut stkms = Vec::new();
    for line in out.lines().map(str::trim).filter(|l| l.starts_with("sample ")) {
        let data = hex::decode(line.rsplit_once("data=").unwrap().1).unwrap();
        if line.contains("track=1 ") { media.push(data) } else { stkms.push(data) }
    }
    let want_media: Vec<_> = s
        .pushed
        .iter()
        .filter_map(|p| if let Pushed::Media(_, _, s, _) = p { Some(s.clone()) } else { None })
        .collect();
    let want_stkms: Vec<_> =
        s.pushed.iter().filter_map(|p| if let Pushed::Stkm(_, s) = p { Some(s.clone()) } else { None }).collect();
    assert_eq!(media, want_media);
    assert_eq!(stkms, want_stkms);
}

#[test]
fn every_prefix_is_refused_strictly_and_read_up_to_complete_fragments() {
    let s = small();
    for cut in 0..s.file.len() {
        let part = &s.file[..cut];
        assert!(Recording::parse(part).is_err(), "prefix of {cut} bytes accepted as finished");
        match Recording::parse_interrupted(part) {
            Err(e) => assert!(cut < s.ends[0], "cut {cut} after the header refused: {e}"),
            Ok(rec) => {
                assert!(cut >= s.ends[0], "cut {cut} inside the header accepted");
                let complete = s.ends[1..].iter().filter(|&&e| e <= cut).count();
                // The last chunk is the second fragment plus mfra: its fragment is complete
                // once its mdat is, before the mfra.
                let fragments = if cut >= s.ends[2] - mfra_len(&s.file) { 2 } else { complete };
                let want: usize = s.media_per_fragment[..fragments].iter().sum();
                assert_eq!(rec.media.len(), want, "cut {cut}");
                assert_eq!(rec.stkms.len(), fragments, "cut {cut}");
                assert!(!rec.finished);
                assert!(rec.complete_len <= cut);
            }
        }
    }
}

fn mfra_len(file: &[u8]) -> usize {
    u32::from_be_bytes(file[file.len() - 4..].try_into().unwrap()) as usize
}

/// Offset of the first occurrence of a box type (its type field − 4 = its size field).
fn find_box(file: &[u8], kind: &[u8; 4]) -> usize {
    file.windows(4).position(|w| w == kind).unwrap() - 4
}

#[test]
fn rejects_bogus_box_size() {
    let s = small();
    let mut f = s.file.clone();
    let moov = find_box(&f, b"moov");
    f[moov..moov + 4].copy_from_slice(&0x7fff_ffffu32.to_be_bytes());
    assert!(matches!(Recording::parse(&f), Err(PdcfError::Truncated { offset: 36, .. })));
    f[moov..moov + 4].copy_from_slice(&3u32.to_be_bytes());
    assert!(matches!(Recording::parse(&f), Err(PdcfError::BadBoxSize { size: 3, .. })));
    assert!(matches!(Recording::parse_interrupted(&f), Err(PdcfError::MissingBox { .. })));
}

#[test]
fn rejects_deep_nesting() {
    let s = small();
    let mut inner = Vec::new();
    for _ in 0..100 {
        let mut b = ((inner.len() + 8) as u32).to_be_bytes().to_vec();
        b.extend_from_slice(b"trak");
        b.extend_from_slice(&inner);
        inner = b;
    }
    let mut f = s.file[..s.ends[0]].to_vec();
    let moov = find_box(&f, b"moov");
    f.extend_from_slice(&inner);
    let len = f.len() - moov;
    f[moov..moov + 4].copy_from_slice(&(len as u32).to_be_bytes());
    assert!(matches!(Recording::parse_interrupted(&f), Err(PdcfError::TooDeep { .. })));
}

#[test]
fn rejects_other_scheme() {
    let mut f = small().file;
    let at = f.windows(4).position(|w| w == b"odkm").unwrap();
    f[at..at + 4].copy_from_slice(b"cenc");
    assert!(matches!(Recording::parse(&f), Err(PdcfError::Unsupported { field: "schm scheme_type", .. })));
}

#[test]
fn rejects_other_sample_format() {
    let mut f = small().file;
    let odaf = find_box(&f, b"odaf");
    f[odaf + 13] = 4;
    assert!(matches!(Recording::parse(&f), Err(PdcfError::Unsupported { field: "odaf sample format", .. })));
}

#[test]
fn rejects_sample_outside_its_mdat() {
    let mut f = small().file;
    let trun = find_box(&f, b"trun");
    // data_offset of the first trun, moved past the fragment.
    f[trun + 16..trun + 20].copy_from_slice(&10_000i32.to_be_bytes());
    assert!(matches!(
        Recording::parse(&f),
        Err(PdcfError::BadValue { field: "sample data outside the fragment's mdat", .. })
    ));
}

#[test]
fn rejects_unfinished_recording_strictly() {
    let s = small();
    let part = &s.file[..s.ends[1]];
    assert_eq!(Recording::parse(part), Err(PdcfError::Unfinished));
    let rec = Recording::parse_interrupted(part).unwrap();
    assert_eq!((rec.media.len(), rec.stkms.len(), rec.complete_len), (3, 1, s.ends[1]));
}

#[test]
fn rejects_short_media_sample() {
    let (mut w, _) = PdcfWriter::new(&header()).unwrap();
    let err = w.push_media(Duration::ZERO, 0, &[0; 13]).unwrap_err();
    assert_eq!(err, PdcfError::Sample { index: 0, source: IsmacrypError::TooShort { needed: 14, len: 13 } });
}

#[test]
fn rejects_bad_header_values() {
    let mut h = header();
    h.media.clock_rate = 0;
    assert!(matches!(PdcfWriter::new(&h), Err(PdcfError::InvalidArgument(_))));
    let mut h = header();
    h.headers.textual_headers.push(("a:b".into(), "c".into()));
    assert!(matches!(PdcfWriter::new(&h), Err(PdcfError::InvalidArgument(_))));
    let mut h = header();
    h.headers.content_id = "x".repeat(70_000);
    assert!(matches!(PdcfWriter::new(&h), Err(PdcfError::TooLong { field: "ContentID", .. })));
    let mut h = header();
    h.media.codec_config = vec![0, 0, 0, 9, b'e', b's', b'd', b's'];
    assert!(matches!(PdcfWriter::new(&h), Err(PdcfError::Truncated { .. })));
}

#[test]
fn video_track_with_codec_config_round_trips() {
    let mut h = header();
    h.media = MediaTrack::video(*b"avc1", 90_000, 320, 240);
    h.media.codec_config = [&[0u8, 0, 0, 11][..], b"avcC", &[1, 2, 3]].concat();
    let (mut w, mut f) = PdcfWriter::new(&h).unwrap();
    let mut tx = IsmacrypSender::new(&key(1));
    let mut s = vec![9; 50];
    tx.protect(&mut s).unwrap();
    w.push_media(Duration::from_secs(1), 0, &s).unwrap();
    f.extend(w.finish());
    let rec = Recording::parse(&f).unwrap();
    assert_eq!(rec.header, h);
    assert_eq!(rec.media[0].decode_time, 0, "the recording starts at the first push");
    assert_eq!(rec.header.media.original_format, FourCc(*b"avc1"));
}

#[test]
fn rtp_wraparound_and_reordering_keep_rtp_timing() {
    let (mut w, mut f) = PdcfWriter::new(&header()).unwrap();
    let mut tx = IsmacrypSender::new(&key(1));
    let stamps = [u32::MAX - 1000, u32::MAX - 40, 920, 500, 2000, 1500];
    for (i, &ts) in stamps.iter().enumerate() {
        let mut s = vec![i as u8; 3];
        tx.protect(&mut s).unwrap();
        w.push_media(Duration::from_millis(i as u64), ts, &s).unwrap();
        if i == 3 {
            f.extend(w.flush_fragment());
        }
    }
    f.extend(w.finish());
    let rec = Recording::parse(&f).unwrap();
    let pres: Vec<u64> = rec.media.iter().map(|m| m.presentation_time()).collect();
    for (i, &ts) in stamps.iter().enumerate() {
        assert_eq!(ts.wrapping_sub(stamps[0]) as u64, pres[i], "sample {i}");
    }
    assert!(rec.media.windows(2).all(|p| p[0].decode_time <= p[1].decode_time));
    assert_eq!(rec.media[3].composition_offset, -420);
}

#[test]
fn long_stkm_gap_starts_a_new_fragment() {
    let (mut w, mut f) = PdcfWriter::new(&header()).unwrap();
    w.push_stkm(Duration::ZERO, b"a").unwrap();
    w.push_stkm(Duration::from_secs(60 * 86_400), b"b").unwrap();
    w.push_stkm(Duration::from_secs(60 * 86_400 + 1), b"c").unwrap();
    f.extend(w.finish());
    let rec = Recording::parse(&f).unwrap();
    let t: Vec<_> = rec.stkms.iter().map(|s| s.time().as_secs()).collect();
    assert_eq!(t, [0, 60 * 86_400, 60 * 86_400 + 1]);
}

#[test]
fn stkm_clock_going_back_is_held() {
    let (mut w, mut f) = PdcfWriter::new(&header()).unwrap();
    w.push_stkm(Duration::from_secs(10), b"a").unwrap();
    w.push_stkm(Duration::from_secs(12), b"b").unwrap();
    w.push_stkm(Duration::from_secs(11), b"c").unwrap();
    f.extend(w.finish());
    let t: Vec<_> = Recording::parse(&f).unwrap().stkms.iter().map(|s| s.decode_time).collect();
    assert_eq!(t, [0, 2000, 2000]);
}

/// The committed seeds of the `pdcf_read` fuzz target are valid recordings (finished or
/// interrupted) and go through the fuzz entry point.
#[cfg(feature = "fuzzing")]
#[test]
fn fuzz_seeds_are_recordings() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus/pdcf_read");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(Recording::parse_interrupted(&data).is_ok());
        keycast_traffic::pdcf::fuzzing::read(&data);
        n += 1;
    }
    assert!(n >= 3);
}

/// Writes the seed corpus of the `pdcf_read` fuzz target (run with KEYCAST_WRITE_VECTORS=1).
#[test]
fn fuzz_seed_corpus() {
    let Some(_) = std::env::var_os("KEYCAST_WRITE_VECTORS") else { return };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/pdcf_read");
    std::fs::create_dir_all(&dir).unwrap();
    let s = small();
    std::fs::write(dir.join("small-finished.mp4"), &s.file).unwrap();
    std::fs::write(dir.join("small-interrupted.mp4"), &s.file[..s.ends[1] + 40]).unwrap();
    std::fs::write(dir.join("header-only.mp4"), &s.file[..s.ends[0]]).unwrap();
    let (mut w, mut f) = PdcfWriter::new(&header()).unwrap();
    let mut tx = IsmacrypSender::new(&key(1));
    for (i, ts) in [10u32, 5, 20].into_iter().enumerate() {
        let mut v = vec![1; 4];
        tx.protect(&mut v).unwrap();
        w.push_media(Duration::from_millis(i as u64), ts, &v).unwrap();
    }
    f.extend(w.finish());
    std::fs::write(dir.join("reordered-cto.mp4"), &f).unwrap();
}

#[derive(Debug, Clone)]
enum Op {
    Stkm { dt_ms: u64, len: usize },
    Media { dt_ms: u64, step: i32, len: usize },
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0u64..2000, 1usize..80).prop_map(|(dt_ms, len)| Op::Stkm { dt_ms, len }),
        4 => (0u64..50, -3000i32..90_000, 0usize..300).prop_map(|(dt_ms, step, len)| Op::Media { dt_ms, step, len }),
        1 => Just(Op::Flush),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever is pushed reads back: the same bytes, in order, with the RTP timing and the
    /// reception times; every prefix reads as an interrupted recording or is refused.
    #[test]
    fn round_trip_arbitrary_recordings(ops in proptest::collection::vec(op(), 0..40), rtp0 in any::<u32>()) {
        let (mut w, mut f) = PdcfWriter::new(&header()).unwrap();
        let mut tx = IsmacrypSender::new(&key(1));
        let (mut now, mut rtp) = (Duration::ZERO, rtp0);
        let (mut media, mut stkms) = (Vec::new(), Vec::new());
        let mut epoch = None;
        let mut first_media_ticks = None;
        for (i, op) in ops.iter().enumerate() {
            if let Op::Stkm { dt_ms, .. } | Op::Media { dt_ms, .. } = op {
                epoch.get_or_insert(now + Duration::from_millis(*dt_ms));
            }
            match *op {
                Op::Stkm { dt_ms, len } => {
                    now += Duration::from_millis(dt_ms);
                    let s = vec![i as u8; len];
                    w.push_stkm(now, &s).unwrap();
                    stkms.push((now, s));
                }
                Op::Media { dt_ms, step, len } => {
                    now += Duration::from_millis(dt_ms);
                    rtp = rtp.wrapping_add_signed(step);
                    let mut s = vec![i as u8; len];
                    tx.protect(&mut s).unwrap();
                    w.push_media(now, rtp, &s).unwrap();
                    first_media_ticks.get_or_insert(((now - epoch.unwrap()).as_millis() * 48) as u64);
                    media.push((rtp, s));
                }
                Op::Flush => f.extend(w.flush_fragment()),
            }
        }
        f.extend(w.finish());
        let rec = Recording::parse(&f).unwrap();
        prop_assert_eq!(rec.media.len(), media.len());
        // The model of the module docs: target = reception offset of the first sample (48 kHz
        // ticks since the first push) + the unrolled RTP distance; presentation = target.
        let mut target = i128::from(first_media_ticks.unwrap_or(0));
        let mut last = media.first().map_or(0, |m| m.0);
        for (m, (ts, s)) in rec.media.iter().zip(&media) {
            prop_assert_eq!(m.sample, &s[..]);
            target += i128::from(ts.wrapping_sub(last) as i32);
            last = *ts;
            if target >= 0 {
                prop_assert_eq!(i128::from(m.presentation_time()), target);
            }
        }
        prop_assert!(rec.media.windows(2).all(|p| p[0].decode_time <= p[1].decode_time));
        prop_assert_eq!(rec.stkms.len(), stkms.len());
        for (s, (_, b)) in rec.stkms.iter().zip(&stkms) {
            prop_assert_eq!(s.stkm, &b[..]);
        }
        prop_assert!(rec.stkms.windows(2).all(|p| p[0].decode_time <= p[1].decode_time));
        prop_assert_eq!(rec.events().count(), media.len() + stkms.len());
    }

    /// Arbitrary bytes never panic either reader.
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Recording::parse(&data);
        let _ = Recording::parse_interrupted(&data);
    }

    /// A valid file with a few bytes changed never panics either reader.
    #[test]
    fn mutated_file_never_panics(edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)) {
        let mut f = small().file;
        for (i, b) in edits {
            let at = i.index(f.len());
            f[at] = b;
        }
        let _ = Recording::parse(&f);
        if let Ok(rec) = Recording::parse_interrupted(&f) {
            let _ = rec.events().count();
        }
    }
}

#[test]
fn rejects_empty_stkm() {
    let (mut w, _) = PdcfWriter::new(&header()).unwrap();
    assert_eq!(w.push_stkm(Duration::ZERO, b""), Err(PdcfError::InvalidArgument("empty STKM")));
}
