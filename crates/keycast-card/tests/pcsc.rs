//! The PC/SC path end to end, without hardware: the emulator is served to pcscd's vsmartcard
//! vpcd driver as a virtual card, and the terminal side drives it through `PcscCard`.
//!
//! Needs pcscd running with the vpcd driver (`.ci/pcsc-setup`); without them every test here
//! prints `skipped: …` and passes.
#![cfg(feature = "pcsc")]

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{AMF, BTID, IDI, IMPI, LIFETIME, SQN, k, opc, rand, usim};
use keycast_card::apdu::{EfGbabp, EfMskRecord};
use keycast_card::mbms::TekOut;
use keycast_card::pcsc_backend::{PcscCard, ReaderStatus, list_readers};
use keycast_card::usim::AkaAnswer;
use keycast_card::vpcd::{DEFAULT_ATR, DEFAULT_VPCD_ADDR, VpcdError, VpcdExit, serve_vpcd_with};
use keycast_card::{ApduCard, Card, Emulator, Transport, TransportError};
use keycast_crypto::gba::{self, NafId};
use keycast_crypto::keys::{SekPek, Smk, Tek, TekSalt};
use keycast_crypto::milenage::{Milenage, gba_u_autn_star};
use keycast_mikey::{
    KeyDomainId, KeyValidity, LtkmContent, ProtectionAfterReception, SekPekId, SrtpCs, SrtpPolicy, StkmContent,
    StkmExt, TekField, TrafficProtectionProtocol,
};

const SKIPPED: &str = "skipped: pcscd with vpcd not available (run .ci/pcsc-setup)";
const VIRTUAL_READER: &str = "Virtual PCD";
const WAIT: Duration = Duration::from_secs(10);

/// One virtual card at a time: every test uses the first vpcd slot.
static VPCD_SLOT: Mutex<()> = Mutex::new(());

/// The first vpcd reader (slot 0, port 35963), when pcscd runs and has loaded vpcd.
fn vpcd_reader() -> Option<ReaderStatus> {
    list_readers().ok()?.into_iter().find(|r| r.name.starts_with(VIRTUAL_READER))
}

/// Polls `check` every 50 ms until it holds or [`WAIT`] is over.
fn wait_until(mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// A transport served to vpcd on its own thread; stopped and joined on drop at the latest.
struct Served<T: Transport + Send + 'static> {
    reader: String,
    apdus: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<(T, Result<VpcdExit, VpcdError>)>>,
}

impl<T: Transport + Send + 'static> Served<T> {
    /// Serves `card` (running `after_apdu` after each command) and waits until pcscd sees it;
    /// `None` when pcscd or vpcd is missing.
    fn start(mut card: T, mut after_apdu: impl FnMut(&mut T) + Send + 'static) -> Option<Self> {
        let Some(reader) = vpcd_reader() else {
            println!("{SKIPPED}");
            return None;
        };
        // A card from an earlier test may still be listed until pcscd polls the slot again.
        assert!(
            wait_until(|| vpcd_reader().is_some_and(|r| !r.card_present)),
            "{} keeps a card: is another virtual card connected to {DEFAULT_VPCD_ADDR}?",
            reader.name
        );
        let stop = Arc::new(AtomicBool::new(false));
        let apdus = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (stop, apdus) = (Arc::clone(&stop), Arc::clone(&apdus));
            thread::spawn(move || {
                let exit = serve_vpcd_with(&mut card, DEFAULT_VPCD_ADDR, DEFAULT_ATR, &stop, |card| {
                    apdus.fetch_add(1, Ordering::Relaxed);
                    after_apdu(card);
                });
                (card, exit)
            })
        };
        let mut served = Self { reader: reader.name.clone(), apdus, stop, thread: Some(thread) };
        let present = wait_until(|| {
            served.thread.as_ref().is_some_and(|t| t.is_finished()) || vpcd_reader().is_some_and(|r| r.card_present)
        });
        if served.thread.as_ref().is_some_and(|t| t.is_finished()) {
            let (_, exit) = served.finish();
            panic!("the virtual card stopped before pcscd saw it: {exit:?}");
        }
        assert!(present, "pcscd did not see the virtual card in {} within {WAIT:?}", served.reader);
        Some(served)
    }

    fn connect(&self) -> PcscCard {
        let card = PcscCard::connect(Some(&self.reader)).expect("connect to the virtual card");
        assert_eq!(card.reader(), self.reader);
        assert_eq!(card.atr().unwrap(), DEFAULT_ATR);
        card
    }

    /// Stops the serving thread and hands back the card and how serving ended.
    fn finish(&mut self) -> (T, Result<VpcdExit, VpcdError>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().expect("finished once").join().expect("the serving thread panicked")
    }
}

impl<T: Transport + Send + 'static> Drop for Served<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Answers like a T=0 card: a command with response data gets '61XX' first, the data comes with
/// GET RESPONSE, and a READ BINARY with the wrong Le gets '6CXX'.
#[derive(Default)]
struct T0Card {
    pending: Vec<u8>,
    log: Vec<Vec<u8>>,
}

impl Transport for T0Card {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        self.log.push(command.to_vec());
        Ok(match command {
            // GET RESPONSE: at most Le bytes, '61XX' while more wait.
            [_, 0xC0, 0, 0, le] => {
                let n = usize::from(*le).min(self.pending.len());
                let mut out: Vec<u8> = self.pending.drain(..n).collect();
                match self.pending.len() {
                    0 => out.extend([0x90, 0x00]),
                    left => out.extend([0x61, left.min(255) as u8]),
                }
                out
            }
            // READ BINARY: exactly 8 bytes.
            [_, 0xB0, _, _, 8] => (1..=8).chain([0x90, 0x00]).collect(),
            [_, 0xB0, _, _, _] => vec![0x6C, 8],
            // Anything else: 300 bytes of response data, in chunks of at most 255.
            _ => {
                self.pending = (0..300u16).map(|i| i as u8).collect();
                vec![0x61, 0xFF]
            }
        })
    }
}

#[test]
fn t0_get_response_and_wrong_le_are_transparent() {
    let _slot = VPCD_SLOT.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut served) = Served::start(T0Card::default(), |_| {}) else { return };
    let mut pcsc = served.connect();

    let answer = pcsc.transmit(&[0x00, 0x88, 0x00, 0x81, 0x02, 0xAA, 0xBB, 0x00]).unwrap();
    let expected: Vec<u8> = (0..300u16).map(|i| i as u8).chain([0x90, 0x00]).collect();
    assert_eq!(answer, expected);

    let answer = pcsc.transmit(&[0x00, 0xB0, 0x00, 0x00, 0x00]).unwrap();
    assert_eq!(answer, [1, 2, 3, 4, 5, 6, 7, 8, 0x90, 0x00]);

    let apdus = served.apdus.load(Ordering::Relaxed);
    pcsc.disconnect().unwrap();
    let (card, exit) = served.finish();
    assert_eq!(exit.unwrap(), VpcdExit::Stopped);
    assert_eq!(
        card.log,
        [
            vec![0x00, 0x88, 0x00, 0x81, 0x02, 0xAA, 0xBB, 0x00],
            vec![0x00, 0xC0, 0x00, 0x00, 0xFF],
            vec![0x00, 0xC0, 0x00, 0x00, 0x2D],
            vec![0x00, 0xB0, 0x00, 0x00, 0x00],
            vec![0x00, 0xB0, 0x00, 0x00, 0x08],
        ]
    );
    assert_eq!(apdus, card.log.len(), "the callback runs once per APDU");
}

// ------------------------------------------------------------------ the emulator over PC/SC

/// The RAND of the MSK (LTKM), which also keys its STKMs.
const MSK_RAND: [u8; 16] =
    [0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf];

fn key_domain() -> KeyDomainId {
    KeyDomainId::from_mcc_mnc("001", "01").unwrap()
}

fn sek() -> SekPek {
    SekPek::from_bytes(*b"sixteen byte sek")
}

/// The SMK the BSM uses for this card: Ks_int_NAF for NAF_Id = "bmsc.example.org" ‖ 01 00 00 00 01,
/// derived here the network's way (Ks = CK ‖ IK from the same AKA run).
fn smk() -> Smk {
    let (_, ck, ik, _) = Milenage::new(&k(), &opc()).f2345(&rand());
    let ks = gba::ks_from_ck_ik(&ck, &ik);
    let ks_int_naf = gba::ks_int_naf(&ks, &rand(), IMPI, &NafId::mbms(IDI)).unwrap();
    assert_eq!(
        hex::encode(ks_int_naf.expose_secret()),
        "5ecf80629e0becb2def8d9b3cb80ae3f99ab18f9c50f49fd5da0e6cfb6d0ee5f",
        "reference vectors §2: Ks_int_NAF"
    );
    Smk::from_bytes(*ks_int_naf.expose_secret())
}

/// A streaming LTKM for SEK (1, 1), verification requested, no OMA BCAST extension, valid for
/// TEK IDs 1 to 1000.
fn ltkm() -> Vec<u8> {
    LtkmContent {
        csb_id: 0x01020304,
        verification_requested: true,
        srtp_cs: Some(SrtpCs { policy_no: 0, ssrc: 0, roc: 0 }),
        key_domain_id: key_domain(),
        sek_pek_id: SekPekId { key_group: 1, key_number: 1 },
        ts: 7,
        rand: MSK_RAND,
        idi: IDI.into(),
        idr: BTID.into(),
        srtp_policy: Some(SrtpPolicy::keycast(Some(1))),
        ext: None,
        key: Some(sek()),
        validity: KeyValidity::TekIdWindow { seq_l: 0, seq_u: 1000 },
    }
    .seal(&smk())
    .unwrap()
}

/// An STKM under that SEK: TEK ID 1, service protection only, so the TEK leaves in the clear.
fn stkm() -> Vec<u8> {
    StkmContent {
        csb_id: 0x0a0b0c0d,
        key_domain_id: key_domain(),
        sek_pek_id: SekPekId { key_group: 1, key_number: 1 },
        tek_id: 1,
        ts: 3_900_000_001,
        ext: Some(StkmExt {
            protection_after_reception: ProtectionAfterReception::ServiceProtectionOnly,
            traffic_protection_protocol: TrafficProtectionProtocol::Srtp,
            traffic_authentication: true,
            tbk_id: None,
            access_criteria: None,
        }),
        tek: TekField::Clear(Tek::from_bytes([0x11; 16])),
        salt: Some(TekSalt::from_bytes([0x22; 14])),
    }
    .seal(&sek(), &MSK_RAND)
    .unwrap()
}

#[test]
fn emulator_through_pcscd_bootstraps_and_releases_a_tek() {
    let _slot = VPCD_SLOT.lock().unwrap_or_else(|e| e.into_inner());
    // The shell would write the card file here; the test counts the saves.
    let saves = Arc::new(AtomicUsize::new(0));
    let after_apdu = {
        let saves = Arc::clone(&saves);
        move |emulator: &mut Emulator| {
            if emulator.take_dirty() {
                saves.fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    let Some(mut served) = Served::start(Emulator::new(usim()), after_apdu) else { return };
    let mut card = ApduCard::new(served.connect());

    card.select_usim().unwrap();

    // GBA_U bootstrap with Milenage test set 1: AUTN* carries MAC* = MAC xor the IK-derived mask.
    let (_, _, ik, _) = Milenage::new(&k(), &opc()).f2345(&rand());
    let autn_star = gba_u_autn_star(&Milenage::new(&k(), &opc()).build_autn(SQN, AMF, &rand()), &ik);
    let AkaAnswer::SuccessGba { res } = card.gba_bootstrap(&rand(), &autn_star).unwrap() else {
        panic!("expected RES from the GBA context")
    };
    assert_eq!(hex::encode(res.expose_secret()), "a54211d5e3ba50be", "reference vectors §2: RES, LSB flipped");
    card.write_gba_bp(BTID, LIFETIME).unwrap();
    assert_eq!(
        card.read_gba_bp().unwrap(),
        Some(EfGbabp { rand: rand(), b_tid: Some(BTID.into()), lifetime: Some(LIFETIME.into()) })
    );
    let ks_ext_naf = card.gba_naf_derivation(NafId::mbms(IDI).as_bytes(), IMPI).unwrap();
    assert_eq!(
        hex::encode(ks_ext_naf.expose_secret()),
        "79d8098e4b9ef12c858a0da3471f6b2d29b4cbb549500dcb3c88154562de340d",
        "reference vectors §2: Ks_ext_NAF"
    );

    // MSK update under the card's Ks_int_NAF, then MTK generation under the new MSK.
    let verification = card.msk_update(&ltkm()).unwrap().expect("the LTKM asked for a verification message");
    assert!(!verification.is_empty());
    assert_eq!(
        card.read_msk_records().unwrap(),
        [EfMskRecord { key_domain_id: key_domain(), pairs: vec![(SekPekId { key_group: 1, key_number: 1 }, 0)] }]
    );
    let tek = card.mtk_generation(&stkm()).unwrap();
    assert_eq!(tek, TekOut::Clear { tek: Tek::from_bytes([0x11; 16]), salt: Some(TekSalt::from_bytes([0x22; 14])) });
    // The same STKM again is a replay: refused with '9865' (key freshness failure).
    let replay = card.mtk_generation(&stkm()).unwrap_err();
    assert!(matches!(&replay, keycast_card::CardOpError::Card(e) if e.status_word() == 0x9865), "{replay:?}");

    card.into_transport().disconnect().unwrap();
    let (emulator, exit) = served.finish();
    assert_eq!(exit.unwrap(), VpcdExit::Stopped);
    let usim = emulator.usim();
    assert_eq!(usim.gba.as_ref().and_then(|g| g.b_tid.as_deref()), Some(BTID));
    assert_eq!(usim.naf_keys.len(), 1);
    // Bootstrap, EF_GBABP, NAF derivation, MSK update, MTK generation: each one a save.
    assert!(saves.load(Ordering::Relaxed) >= 5, "saves: {}", saves.load(Ordering::Relaxed));
}
