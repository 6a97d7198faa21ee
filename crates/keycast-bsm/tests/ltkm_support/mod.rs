//! Fixtures shared by the LTKM issue, scheduler and verification tests.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use keycast_bsm::delivery::{
    Action, Delivery, DeliveryKey, PushAddress, RegistrationInterface, RetryPolicy, Scheduler, SchedulerConfig, Time,
};
use keycast_bsm::issue::{LtkmCounter, LtkmKind, LtkmTs, SekPekRecord, StreamingPolicy, TerminalKeys};
use keycast_bsm::rng::SeededRandom;
use keycast_card::mbms::MbmsStore;
use keycast_crypto::keys::{SekPek, Smk};
use keycast_mikey::{KeyDomainId, KeyValidity, LtkmExt, SecurityPolicy, SecurityPolicyExt, SekPekId};

pub const FQDN: &str = "bsm.keycast.example";
/// NTP seconds somewhere in 2026.
pub const T0: u32 = 3_980_000_000;

pub fn kd() -> KeyDomainId {
    KeyDomainId::from_mcc_mnc("001", "01").expect("valid MCC/MNC")
}

/// A streaming SEK with pay-per-time policy: TS window, SP payload.
pub fn streaming_key() -> SekPekRecord {
    SekPekRecord {
        key_domain_id: kd(),
        sek_pek_id: SekPekId { key_group: 7, key_number: 1 },
        key: SekPek::from_bytes([0x5e; 16]),
        rand: [0xa1; 16],
        csb_id: 0x0a0b_0c0d,
        validity: KeyValidity::TsWindow { ts_low: T0, ts_high: T0 + 3_600 },
        ext: Some(LtkmExt {
            security_policy: Some(SecurityPolicyExt {
                policy: SecurityPolicy::PayPerTime,
                play_back_counter: 0,
                view_counter: 0,
            }),
            tbk_id: None,
            consumption_reporting: false,
        }),
        streaming: Some(StreamingPolicy::keycast(Some(16))),
    }
}

/// A download PEK without the OMA BCAST extension: TEK ID window, no SP.
pub fn download_key() -> SekPekRecord {
    SekPekRecord {
        key_domain_id: kd(),
        sek_pek_id: SekPekId { key_group: 9, key_number: 3 },
        key: SekPek::from_bytes([0x3c; 16]),
        rand: [0xb2; 16],
        csb_id: 0x1122_3344,
        validity: KeyValidity::TekIdWindow { seq_l: 0, seq_u: 500 },
        ext: None,
        streaming: None,
    }
}

pub fn terminal(btid: &str, smk: u8) -> TerminalKeys {
    TerminalKeys { btid: btid.to_owned(), smk: Smk::from_bytes([smk; 32]), bsm_fqdn: FQDN.to_owned() }
}

/// A card holding the terminal's MUK for this BSM.
pub fn card(t: &TerminalKeys) -> MbmsStore {
    let mut store = MbmsStore::default();
    store.install_muk(FQDN, &t.btid, t.smk.clone()).expect("room for one MUK");
    store
}

/// Reserve, "persist" (nothing to do in a test) and use the next TS.
pub fn next_ts(counter: &mut LtkmCounter, t: &TerminalKeys) -> LtkmTs {
    let r = counter.reserve(&t.btid);
    r.persisted()
}

pub fn delivery(i: u32, kind: LtkmKind, interface: RegistrationInterface) -> Delivery {
    Delivery {
        key: DeliveryKey {
            terminal: format!("impi-{i}@ims.example"),
            key_domain_id: kd(),
            sek_pek_id: SekPekId { key_group: 7, key_number: 1 },
            version: 1,
        },
        kind,
        to: PushAddress { ip: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)), interface },
    }
}

pub fn simple(i: u32) -> Delivery {
    delivery(i, streaming_key().delivery(), RegistrationInterface::OmaBcast)
}

pub fn retry(initial_s: u64, factor: u32, max_s: u64, attempts: u32, pull: bool, pull_wait_s: u64) -> RetryPolicy {
    RetryPolicy {
        initial: Duration::from_secs(initial_s),
        factor,
        max_backoff: Duration::from_secs(max_s),
        max_attempts: attempts,
        solicited_pull: pull,
        pull_wait: Duration::from_secs(pull_wait_s),
    }
}

pub fn quiet_config() -> SchedulerConfig {
    SchedulerConfig {
        spread_window: Duration::ZERO,
        jitter: Duration::ZERO,
        rate: None,
        retry: retry(10, 2, 25, 4, true, 60),
        ..SchedulerConfig::default()
    }
}

pub fn scheduler(config: SchedulerConfig, seed: u64) -> Scheduler<SeededRandom> {
    Scheduler::new(config, SeededRandom::new(seed)).expect("valid config")
}

pub const START: Time = Time::from_secs(1_800_000_000);

/// Runs the scheduler from `from` by jumping to each `poll_timeout` (never past `until`), and
/// calls `on` for every action. Returns the actions with the time they were handed out.
pub fn drive(
    s: &mut Scheduler<SeededRandom>,
    from: Time,
    until: Time,
    mut on: impl FnMut(&mut Scheduler<SeededRandom>, Time, &Action),
) -> Vec<(Time, Action)> {
    let mut out = Vec::new();
    let mut now = from;
    for _ in 0..10_000_000 {
        for a in s.poll(now) {
            on(s, now, &a);
            out.push((now, a));
        }
        match s.poll_timeout() {
            Some(t) if t <= until => now = now.max(t),
            _ => return out,
        }
    }
    panic!("the scheduler never went idle");
}
