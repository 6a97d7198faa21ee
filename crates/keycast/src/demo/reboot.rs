//! (l) of `keycast demo`: terminal B restarts, and the BSM delivers what it missed meanwhile.
//!
//! Terminal B's shell writes its state (keycast-terminal's state file format, kept in memory:
//! the bootstrap, the purchases, the next request ID, the registration) and is dropped with its
//! card taken out (keycast-terminal's shell has no way to hand its card back, so a blank card is
//! swapped into its slot first). While B is off the operator rolls its service's Key Group over.
//! B comes back as a new shell around the same card, restored from the state it wrote: the
//! B-TID still has time left, so it does not bootstrap again; it registers on the MBMS interface
//! on the same loopback port (the push port of that interface, profile P-8), the BSM pushes the
//! keys its purchase entitles it to, the new one among them, and B's card opens the
//! broadcaster's first STKM under the new SEK.

use std::collections::BTreeMap;

use keycast_card::Card as _;
use keycast_mikey::{KeyDomainId, ProtectionAfterReception, SekPekId};
use keycast_provisioning::time::UtcTime;
use keycast_terminal::ltkm_intake::Interface;
use keycast_terminal::provisioning::Response;
use keycast_terminal::state::{self, Registration, TerminalState};

use super::bsm::{
    Bsm, IMPI_B, KEY_GROUP, KEY_LIFETIME, Shell, Worker, broadcaster_key, demo_client, new_shell_at, ntp,
    push_and_verify, rollover, shell_apdus,
};
use super::{Broadcaster, DemoRng, Narrator, UNIX_T0, clear_tek, id_hex, op_failed};

/// (l): see the module docs. Takes terminal B's shell and gives back the one that replaced it
/// (none when B could not restart).
pub(super) async fn run_reboot(
    n: &mut Narrator,
    rng: &mut DemoRng,
    bsm: &Bsm,
    worker: &Worker,
    bsf: std::net::SocketAddr,
    mut b: Shell,
) -> Option<Shell> {
    n.heading("(l) A reboot: terminal B is switched off, its key rolls over meanwhile, B restarts from its card and state and registers");
    let kd = KeyDomainId::from_mcc_mnc("001", "01").expect("constant MCC/MNC");
    let current = SekPekId { key_group: KEY_GROUP, key_number: 2 };
    let next = SekPekId { key_group: KEY_GROUP, key_number: 3 };
    let (Some(b_tid), Some(port)) = (b.client().b_tid().map(str::to_owned), b.udp_addr(Interface::Mbms)) else {
        n.check("terminal B holds a B-TID and an MBMS socket", Err("no".to_owned()));
        return Some(b);
    };
    let saved = TerminalState {
        bootstrap: b.bootstrap_state().current().cloned(),
        next_request_id: b.client().next_request_id(),
        purchases: b.client().purchases().clone(),
        registration: Some(Registration {
            interface: Interface::Mbms,
            bsm_address: bsm.addr.to_string(),
            at: UtcTime::from_unix_seconds(bsm.clock.now()).unwrap_or(UtcTime::MAX),
        }),
        tbks: BTreeMap::new(),
        sac: None,
    };
    let file = state::encode(&saved);
    // Power off: the card leaves the shell (a blank card takes its slot), the shell is dropped.
    let card = super::client_id::take_card(&mut b);
    drop(b);
    n.check(
        "terminal B powers off: it writes its state, the card leaves the shell",
        Ok(format!(
            "state file of {} bytes (keycast-terminal's format): B-TID {b_tid}, {} purchase(s), next request ID {}",
            file.len(),
            saved.purchases.len(),
            saved.next_request_id
        )),
    );

    // Meanwhile the operator rolls the key over.
    let at = UNIX_T0 + 2 * KEY_LIFETIME - 3_600;
    if bsm.clock.now() < at {
        bsm.clock.set(at);
    }
    n.info(format!("clock: T0 + {} s, SEK {} has 3600 s left", bsm.clock.now() - UNIX_T0, id_hex(current)));
    let r = rollover(bsm, next, UNIX_T0 + 2 * KEY_LIFETIME).await;
    let ok = r.is_ok();
    n.check("operator: while B is off, rollover of Key Group 3 makes the next SEK (admin API)", r);

    // Power on: a new shell around the same card, from the state file, on the same port.
    let restored = match state::decode(&file) {
        Ok(s) => s,
        Err(e) => {
            n.check("terminal B reads its state back", Err(e.to_string()));
            return None;
        }
    };
    let mut client = demo_client();
    client.first_request_id = restored.next_request_id;
    let mut shell = match new_shell_at((bsm, bsm.addr), bsf, card, IMPI_B, (Interface::Mbms, port), client, rng).await {
        Ok(s) => s,
        Err(e) => {
            n.check("terminal B's new shell starts on its old MBMS port", Err(e));
            return None;
        }
    };
    if let Some(bootstrapped) = restored.bootstrap.clone() {
        shell.restore_bootstrap(bootstrapped);
    }
    for p in restored.purchases.iter() {
        shell.client_mut().purchases_mut().insert(p.clone());
    }
    n.check(
        "terminal B powers on: a new keycast-terminal shell around the same card, restored from the state",
        if restored == saved {
            Ok("the state reads back equal; the MBMS socket is on the same loopback port (the BSM's push port)"
                .to_owned())
        } else {
            Err("the state read back differs".to_owned())
        },
    );
    if !ok {
        return Some(shell);
    }
    let r = shell.connect().await;
    shell_apdus(n, &mut shell);
    let r = match r {
        Ok(Some(answer)) => match &answer.response {
            Response::MbmsRegister(reg)
                if !reg.responses.is_empty() && reg.responses.iter().all(|s| s.response_code.is_success()) =>
            {
                if shell.client().b_tid() == Some(b_tid.as_str()) {
                    Ok(format!("200; no new bootstrap: B-TID {b_tid} from the state still has time left"))
                } else {
                    Err(format!("it bootstrapped again: {:?}", shell.client().b_tid()))
                }
            }
            other => Err(format!("answer {other:?}")),
        },
        Ok(None) => Err("nothing registered".to_owned()),
        Err(e) => Err(e.to_string()),
    };
    let ok = r.is_ok();
    n.check("terminal B registers on the MBMS interface after the restart", r);
    if !ok {
        return Some(shell);
    }
    if !push_and_verify(n, bsm, worker, &mut shell, "B", &[current, next], kd, "the card stores it").await {
        return Some(shell);
    }
    // The new key's window opens; the broadcaster switches to it.
    bsm.clock.set(UNIX_T0 + 2 * KEY_LIFETIME + 60);
    n.info(format!("clock: T0 + {} s, inside SEK {}'s window", 2 * KEY_LIFETIME + 60, id_hex(next)));
    let Ok(stored) = broadcaster_key(n, bsm, next).await else { return Some(shell) };
    let bc = Broadcaster { csb_id: rng.u32("reboot STKM CSB ID"), key_domain_id: kd };
    let ts = ntp(bsm.clock.now());
    let st =
        bc.seal(rng, &stored.key, next, &stored.rand, 1, ts, Some(ProtectionAfterReception::ServiceProtectionOnly));
    n.wire(&format!("STKM TEK ID 1 under SEK {}, TS {ts}", id_hex(next)), &st.bytes);
    let r = match shell.card_mut().mtk_generation(&st.bytes) {
        Ok(answer) => clear_tek(&answer, &st.tek, &st.salt)
            .map(|()| "the key rolled over while B was off: TEK ‖ salt match the broadcaster's".to_owned()),
        Err(e) => Err(op_failed(&e)),
    };
    shell_apdus(n, &mut shell);
    n.check(&format!("terminal B's card opens STKM TEK ID 1 under SEK {}", id_hex(next)), r);
    Some(shell)
}
