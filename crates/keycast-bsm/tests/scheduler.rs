//! The push scheduler's timing and state rules (issue 5; profile P-3, P-8), on a virtual clock.

mod ltkm_support;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use keycast_bsm::delivery::{
    AckOutcome, Action, Attempt, DeliveryError, DeliveryId, DeliveryState, FailReason, PushPorts, RateLimit,
    RegistrationInterface, SchedulerConfig, SendResult, Time,
};
use keycast_bsm::rng::SeededRandom;
use ltkm_support::*;
use proptest::prelude::*;

fn secs(s: u64) -> Time {
    START.after(Duration::from_secs(s))
}

fn sends(actions: &[(Time, Action)]) -> Vec<Time> {
    actions.iter().filter(|(_, a)| !matches!(a, Action::GiveUp { .. })).map(|(t, _)| *t).collect()
}

/// Largest number of datagrams in any half-open window [t, t + 1 s).
fn max_per_second(times: &[Time]) -> usize {
    let mut times: Vec<u64> = times.iter().map(|t| t.as_micros()).collect();
    times.sort_unstable();
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..times.len() {
        while times[hi] - times[lo] >= 1_000_000 {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

#[test]
fn campaign_is_spread_uniformly_over_the_window_with_bounded_jitter() {
    let jitter = Duration::from_millis(500);
    let config = SchedulerConfig { spread_window: Duration::from_secs(100), jitter, ..quiet_config() };
    let mut s = scheduler(config, 1);
    let ids = s.enqueue_campaign((0..200).map(simple).collect(), START).unwrap();
    let end = secs(100);
    let mut jitters = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let due = s.row(*id).unwrap().due.unwrap();
        let nominal = START.after(Duration::from_millis(500 * i as u64));
        assert!(due >= nominal && due <= end, "slot {i}: {due:?} outside [{nominal:?}, {end:?}]");
        let j = due.since(nominal);
        assert!(j <= jitter, "jitter {j:?} above {jitter:?}");
        jitters.push(j);
    }
    assert!(jitters.iter().collect::<HashSet<_>>().len() > 100, "jitter actually varies");
    // Every first push happens at its due time (no rate limit here).
    let actions = drive(&mut s, START, end, |_, _, _| {});
    let first: HashMap<DeliveryId, Time> = actions
        .iter()
        .filter_map(|(t, a)| match a {
            Action::Send { id, attempt: 1, .. } => Some((*id, *t)),
            _ => None,
        })
        .collect();
    assert_eq!(first.len(), 200);
    assert!(first.values().all(|t| *t >= START && *t <= end));
}

#[test]
fn without_jitter_slots_are_exact() {
    let config = SchedulerConfig { spread_window: Duration::from_secs(10), ..quiet_config() };
    let mut s = scheduler(config, 1);
    let ids = s.enqueue_campaign((0..4).map(simple).collect(), START).unwrap();
    let dues: Vec<_> = ids.iter().map(|id| s.row(*id).unwrap().due.unwrap()).collect();
    assert_eq!(
        dues,
        vec![START, START.after(Duration::from_millis(2_500)), secs(5), START.after(Duration::from_millis(7_500))]
    );
}

#[test]
fn rate_limit_is_never_exceeded_in_any_second() {
    for (per_second, burst) in [(100, 1), (100, 5), (7, 1), (1, 1)] {
        let config = SchedulerConfig { rate: Some(RateLimit { per_second, burst }), ..quiet_config() };
        let mut s = scheduler(config, 2);
        // All due at once, with retries: the limiter alone spaces them.
        s.enqueue_campaign((0..300).map(simple).collect(), START).unwrap();
        let actions = drive(&mut s, START, secs(3_600), |_, _, _| {});
        let times = sends(&actions);
        assert!(times.len() >= 300);
        let bound = (per_second + burst - 1) as usize;
        assert!(
            max_per_second(&times) <= bound,
            "{per_second}/s burst {burst}: {} in one second",
            max_per_second(&times)
        );
        if burst == 1 {
            assert_eq!(max_per_second(&times), per_second as usize, "the limit is also reached");
        }
    }
}

#[test]
fn poll_timeout_waits_for_a_token() {
    let config = SchedulerConfig { rate: Some(RateLimit { per_second: 4, burst: 1 }), ..quiet_config() };
    let mut s = scheduler(config, 3);
    s.enqueue_campaign((0..3).map(simple).collect(), START).unwrap();
    assert_eq!(s.poll(START).len(), 1, "one token at the start");
    assert_eq!(s.poll_timeout(), Some(START.after(Duration::from_millis(250))));
    assert!(s.poll(START.after(Duration::from_millis(249))).is_empty());
    assert_eq!(s.poll(START.after(Duration::from_millis(250))).len(), 1);
}

#[test]
fn backoff_then_one_solicited_pull_then_give_up() {
    let mut s = scheduler(quiet_config(), 4);
    let id = s.enqueue(delivery(1, streaming_key().delivery(), RegistrationInterface::Mbms), START).unwrap();
    let actions = drive(&mut s, START, secs(10_000), |_, _, _| {});
    let seen: Vec<(u64, &str, u32)> = actions
        .iter()
        .map(|(t, a)| {
            let at = t.since(START).as_secs();
            match a {
                Action::Send { attempt, .. } => (at, "send", *attempt),
                Action::SolicitedPull { .. } => (at, "pull", 0),
                Action::GiveUp { .. } => (at, "give up", 0),
            }
        })
        .collect();
    // Waits 10, 20, 25 (capped), 25 (capped), then the pull waits 60.
    assert_eq!(
        seen,
        vec![(0, "send", 1), (10, "send", 2), (30, "send", 3), (55, "send", 4), (80, "pull", 0), (140, "give up", 0)]
    );
    assert_eq!(
        s.row(id).unwrap().state,
        DeliveryState::Failed { at: secs(140), reason: FailReason::NoAcknowledgement }
    );
    assert_eq!(s.row(id).unwrap().due, None);
    assert_eq!(s.poll_timeout(), None);
    let Action::SolicitedPull { key_group, to, .. } = &actions[4].1 else { panic!("a pull") };
    assert_eq!((*key_group, to.port()), (7, 2269));
}

#[test]
fn without_pull_it_gives_up_after_the_last_wait() {
    let config = SchedulerConfig { retry: retry(5, 3, 1_000, 3, false, 60), ..quiet_config() };
    let mut s = scheduler(config, 5);
    s.enqueue(simple(1), START).unwrap();
    let at: Vec<u64> =
        drive(&mut s, START, secs(10_000), |_, _, _| {}).iter().map(|(t, _)| t.since(START).as_secs()).collect();
    assert_eq!(at, vec![0, 5, 20, 65], "waits 5, 15, 45, then give up");
}

#[test]
fn retries_are_jittered_within_bounds() {
    let jitter = Duration::from_millis(300);
    let config = SchedulerConfig { jitter, ..quiet_config() };
    let mut s = scheduler(config, 6);
    let id = s.enqueue(simple(1), START).unwrap();
    let first = s.row(id).unwrap().due.unwrap();
    assert!(first.since(START) <= jitter);
    let actions = drive(&mut s, START, secs(10_000), |_, _, _| {});
    let t: Vec<Time> = actions.iter().map(|(t, _)| *t).collect();
    for (k, want) in [(1usize, 10u64), (2, 20), (3, 25), (4, 25)] {
        let gap = t[k].since(t[k - 1]);
        assert!(gap >= Duration::from_secs(want) && gap <= Duration::from_secs(want) + jitter, "wait {k}: {gap:?}");
    }
}

#[test]
fn ports_follow_the_registration_interface_and_are_configurable() {
    let mut s = scheduler(quiet_config(), 7);
    s.enqueue(delivery(1, streaming_key().delivery(), RegistrationInterface::Mbms), START).unwrap();
    s.enqueue(delivery(2, streaming_key().delivery(), RegistrationInterface::OmaBcast), START).unwrap();
    let ports: HashSet<u16> = s
        .poll(START)
        .iter()
        .map(|a| match a {
            Action::Send { to, .. } => to.port(),
            _ => 0,
        })
        .collect();
    assert_eq!(ports, HashSet::from([2269, 4359]));

    let config = SchedulerConfig { ports: PushPorts { mbms: 12269, oma_bcast: 14359 }, ..quiet_config() };
    let mut s = scheduler(config, 7);
    s.enqueue(delivery(3, streaming_key().delivery(), RegistrationInterface::OmaBcast), START).unwrap();
    let Action::Send { to, kind, attempt, .. } = &s.poll(START)[0] else { panic!("a send") };
    assert_eq!(*to, SocketAddr::from(([10, 0, 0, 3], 14359)));
    assert_eq!((*kind, *attempt), (streaming_key().delivery(), 1));
}

#[test]
fn ack_stops_retries_and_a_second_ack_is_harmless() {
    let mut s = scheduler(quiet_config(), 8);
    let id = s.enqueue(simple(1), START).unwrap();
    assert_eq!(s.poll(START).len(), 1);
    s.send_result(id, Attempt::Push(1), SendResult::Sent { btid: "b".into(), ts: 1 }, START).unwrap();
    assert_eq!(s.acknowledged(id, secs(3)), Ok(AckOutcome::Acknowledged));
    let row = s.row(id).unwrap().clone();
    assert_eq!(row.state, DeliveryState::Acknowledged { at: secs(3) });
    assert_eq!(s.acknowledged(id, secs(4)), Ok(AckOutcome::AlreadyAcknowledged));
    assert_eq!(s.row(id).unwrap(), &row, "nothing changed");
    assert_eq!(s.poll_timeout(), None);
    assert!(drive(&mut s, START, secs(10_000), |_, _, _| {}).is_empty());
}

#[test]
fn unknown_ack_is_an_error_and_late_ack_after_give_up_counts() {
    let mut s = scheduler(quiet_config(), 9);
    assert_eq!(s.acknowledged(DeliveryId(42), START), Err(DeliveryError::Unknown));
    assert_eq!(
        s.send_result(DeliveryId(42), Attempt::Push(1), SendResult::NotSent, START),
        Err(DeliveryError::Unknown)
    );
    let id = s.enqueue(simple(1), START).unwrap();
    drive(&mut s, START, secs(10_000), |_, _, _| {});
    assert!(matches!(s.row(id).unwrap().state, DeliveryState::Failed { .. }));
    assert_eq!(s.acknowledged(id, secs(20_000)), Ok(AckOutcome::AfterGiveUp));
}

#[test]
fn abandon_fails_at_once() {
    let mut s = scheduler(quiet_config(), 10);
    let id = s.enqueue(simple(1), START).unwrap();
    let _ = s.poll(START);
    s.send_result(id, Attempt::Push(1), SendResult::Abandon, START).unwrap();
    assert_eq!(s.row(id).unwrap().state, DeliveryState::Failed { at: START, reason: FailReason::Abandoned });
    assert!(drive(&mut s, START, secs(10_000), |_, _, _| {}).is_empty());
}

#[test]
fn not_sent_still_counts_as_an_attempt() {
    let mut s = scheduler(quiet_config(), 11);
    let id = s.enqueue(simple(1), START).unwrap();
    let actions = drive(&mut s, START, secs(10_000), |s, now, a| {
        if let Action::Send { id, attempt, .. } = a {
            s.send_result(*id, Attempt::Push(*attempt), SendResult::NotSent, now).unwrap();
        }
    });
    assert_eq!(actions.len(), 6, "4 pushes, a pull, give up");
    assert!(s.row(id).unwrap().sent.is_empty());
}

#[test]
fn duplicates_are_refused_and_campaigns_are_all_or_nothing() {
    let mut s = scheduler(quiet_config(), 12);
    let id = s.enqueue(simple(1), START).unwrap();
    assert_eq!(s.enqueue(simple(1), START), Err(DeliveryError::Duplicate(Some(id))));
    assert_eq!(s.enqueue_campaign(vec![simple(2), simple(1)], START), Err(DeliveryError::Duplicate(Some(id))));
    assert_eq!(s.enqueue_campaign(vec![simple(3), simple(3)], START), Err(DeliveryError::Duplicate(None)));
    assert_eq!(s.len(), 1, "nothing of the refused campaigns was added");
    // Another version of the same key for the same terminal is another delivery.
    let mut v2 = simple(1);
    v2.key.version = 2;
    assert!(s.enqueue(v2, START).is_ok());
}

#[test]
fn a_ts_reported_twice_is_refused() {
    let mut s = scheduler(quiet_config(), 13);
    let a = s.enqueue(simple(1), START).unwrap();
    let b = s.enqueue(simple(2), START).unwrap();
    let _ = s.poll(START);
    s.send_result(a, Attempt::Push(1), SendResult::Sent { btid: "x".into(), ts: 5 }, START).unwrap();
    assert_eq!(
        s.send_result(b, Attempt::Push(1), SendResult::Sent { btid: "x".into(), ts: 5 }, START),
        Err(DeliveryError::TsReused)
    );
    // The pull trigger asks for no verification: its TS is not indexed.
    s.send_result(b, Attempt::SolicitedPull, SendResult::Sent { btid: "x".into(), ts: 6 }, START).unwrap();
    assert!(s.find_sent("x", 6).is_none());
    assert_eq!(s.find_sent("x", 5).map(|(id, _, sent)| (id, sent.attempt)), Some((a, 1)));
}

#[test]
fn bad_configurations_are_refused() {
    let mut c = quiet_config();
    c.retry.max_attempts = 0;
    assert!(matches!(keycast_bsm::delivery::Scheduler::new(c, SeededRandom::new(0)), Err(DeliveryError::BadConfig(_))));
    let c = SchedulerConfig { rate: Some(RateLimit { per_second: 0, burst: 1 }), ..quiet_config() };
    assert!(matches!(keycast_bsm::delivery::Scheduler::new(c, SeededRandom::new(0)), Err(DeliveryError::BadConfig(_))));
    let mut c = quiet_config();
    c.retry.factor = 0;
    assert!(matches!(keycast_bsm::delivery::Scheduler::new(c, SeededRandom::new(0)), Err(DeliveryError::BadConfig(_))));
}

#[test]
fn restored_rows_resume_where_they_stopped() {
    let config = SchedulerConfig { spread_window: Duration::from_secs(30), ..quiet_config() };
    let mut a = scheduler(config, 14);
    a.enqueue_campaign((0..20).map(simple).collect(), START).unwrap();
    let early = drive(&mut a, START, secs(12), |s, now, act| {
        if let Action::Send { id, attempt, .. } = act {
            let ts = u32::try_from(id.0).unwrap() * 10 + attempt;
            s.send_result(*id, Attempt::Push(*attempt), SendResult::Sent { btid: "b".into(), ts }, now).unwrap();
        }
    });
    assert!(!early.is_empty());
    let rows: Vec<_> = a.rows().map(|(id, r)| (id, r.clone())).collect();
    let mut b = keycast_bsm::delivery::Scheduler::restore(config, SeededRandom::new(99), rows).unwrap();
    assert_eq!(b.len(), 20);
    assert!(b.find_sent("b", 11).is_some(), "sent LTKMs are matchable after a restart");
    let rest_a = drive(&mut a, secs(12), secs(10_000), |_, _, _| {});
    let rest_b = drive(&mut b, secs(12), secs(10_000), |_, _, _| {});
    let key = |v: &[(Time, Action)]| {
        let mut v: Vec<String> = v.iter().map(|(t, a)| format!("{t:?} {a:?}")).collect();
        v.sort();
        v
    };
    assert_eq!(key(&rest_a), key(&rest_b));
}

#[test]
fn restore_refuses_inconsistent_rows() {
    let mut a = scheduler(quiet_config(), 16);
    let id = a.enqueue(simple(1), START).unwrap();
    let row = a.row(id).unwrap().clone();
    let restore = |rows: Vec<(DeliveryId, keycast_bsm::delivery::DeliveryRow)>| {
        keycast_bsm::delivery::Scheduler::restore(quiet_config(), SeededRandom::new(0), rows).map(|_| ())
    };
    assert_eq!(restore(vec![(id, row.clone()), (id, row.clone())]), Err(DeliveryError::Duplicate(Some(id))));
    assert_eq!(restore(vec![(id, row.clone()), (DeliveryId(7), row.clone())]), Err(DeliveryError::Duplicate(Some(id))));
    assert!(matches!(restore(vec![(DeliveryId(u64::MAX), row)]), Err(DeliveryError::BadRow(_))));
}

#[test]
fn forget_drops_a_final_delivery() {
    let mut s = scheduler(quiet_config(), 15);
    let id = s.enqueue(simple(1), START).unwrap();
    let _ = s.poll(START);
    s.send_result(id, Attempt::Push(1), SendResult::Sent { btid: "b".into(), ts: 1 }, START).unwrap();
    s.acknowledged(id, START).unwrap();
    assert!(s.forget(id).is_some());
    assert!(s.is_empty() && s.find_sent("b", 1).is_none() && s.id_of(&simple(1).key).is_none());
    assert!(s.enqueue(simple(1), START).is_ok(), "the key can be scheduled again");
}

/// One step of a random interaction with the scheduler.
#[derive(Debug, Clone)]
enum Op {
    Campaign(u8),
    Advance(u16),
    Ack(u8),
    Abandon(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1u8..40).prop_map(Op::Campaign),
        (0u16..5_000).prop_map(Op::Advance),
        any::<u8>().prop_map(Op::Ack),
        any::<u8>().prop_map(Op::Abandon),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever happens, no delivery is pushed after it was acknowledged (or failed), and no
    /// one-second slice holds more datagrams than the rate allows.
    #[test]
    fn never_sends_after_ack_and_never_exceeds_the_rate(
        seed in any::<u64>(),
        per_second in 1u32..50,
        burst in 1u32..4,
        jitter_ms in 0u64..3_000,
        window_s in 0u64..60,
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let config = SchedulerConfig {
            spread_window: Duration::from_secs(window_s),
            jitter: Duration::from_millis(jitter_ms),
            rate: Some(RateLimit { per_second, burst }),
            retry: retry(2, 2, 10, 3, true, 5),
            ..SchedulerConfig::default()
        };
        let mut s = scheduler(config, seed);
        let mut now = START;
        let mut next = 0u32;
        let mut ids: Vec<DeliveryId> = Vec::new();
        let mut closed: HashSet<DeliveryId> = HashSet::new();
        let mut datagrams: Vec<Time> = Vec::new();
        let run = |s: &mut keycast_bsm::delivery::Scheduler<SeededRandom>, now: Time, closed: &HashSet<DeliveryId>, datagrams: &mut Vec<Time>| -> Result<(), TestCaseError> {
            for a in s.poll(now) {
                match a {
                    Action::Send { id, .. } | Action::SolicitedPull { id, .. } => {
                        prop_assert!(!closed.contains(&id), "datagram for a closed delivery");
                        datagrams.push(now);
                    }
                    Action::GiveUp { id, .. } => prop_assert!(!closed.contains(&id)),
                }
            }
            Ok(())
        };
        for op in ops {
            match op {
                Op::Campaign(n) => {
                    let batch: Vec<_> = (next..next + u32::from(n)).map(simple).collect();
                    next += u32::from(n);
                    ids.extend(s.enqueue_campaign(batch, now).unwrap());
                }
                Op::Advance(ms) => {
                    // Step through every deadline on the way, as a real shell would.
                    let target = now.after(Duration::from_millis(u64::from(ms)));
                    while let Some(t) = s.poll_timeout().filter(|t| *t <= target) {
                        now = now.max(t);
                        run(&mut s, now, &closed, &mut datagrams)?;
                    }
                    now = target;
                    run(&mut s, now, &closed, &mut datagrams)?;
                }
                Op::Ack(i) if !ids.is_empty() => {
                    let id = ids[usize::from(i) % ids.len()];
                    prop_assert!(s.acknowledged(id, now).is_ok());
                    closed.insert(id);
                }
                Op::Abandon(i) if !ids.is_empty() => {
                    let id = ids[usize::from(i) % ids.len()];
                    s.send_result(id, Attempt::Push(1), SendResult::Abandon, now).unwrap();
                    if matches!(s.row(id).unwrap().state, DeliveryState::Failed { .. }) {
                        closed.insert(id);
                    }
                }
                Op::Ack(_) | Op::Abandon(_) => {}
            }
        }
        // Drain to the end.
        while let Some(t) = s.poll_timeout() {
            now = now.max(t);
            run(&mut s, now, &closed, &mut datagrams)?;
        }
        let bound = (per_second + burst - 1) as usize;
        prop_assert!(max_per_second(&datagrams) <= bound);
        for id in ids {
            prop_assert!(s.row(id).unwrap().state.is_final(), "every delivery ends");
        }
    }
}
