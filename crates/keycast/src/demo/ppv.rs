//! (j) of `keycast demo`: pay-per-view and tokens on one service, through the real BSM.
//!
//! The operator adds a service with a program to the catalogue: the program's PEKs have a Key
//! Group of their own, and the service's purchase item has two offers, the program's
//! pay-per-view and a pack of view tokens. Terminal A buys both (a ServiceRequest naming the
//! pay-per-view offer, then a TokenPurchaseRequest for the service's SEK), and its card enforces
//! what profile P-4 says of each policy: a pay-per-view key (code 2) opens the STKMs of the first
//! program it sees and no other; a token key (code 4) takes one view unit per new program ID and
//! refuses a new program once they are spent, while a program already paid for plays on.

use keycast_card::Card as _;
use keycast_mikey::{
    AccessDescriptor, KeyDomainId, ProtectionAfterReception, SekPekId, StkmContent, StkmExt, TekField,
    TrafficProtectionProtocol,
};
use keycast_provisioning::sprov::{PurchaseItemRef, PurchaseRequestItem, StatusCode, TokenPurchaseItem};
use keycast_provisioning::time::UtcTime;
use keycast_terminal::ltkm_intake::bcast_key;
use keycast_terminal::provisioning::Response;

use super::bsm::{Bsm, Shell, admin_puts, answer_ltkms, broadcaster_key, ntp, shell_apdus, status_of};
use super::{Broadcaster, DemoRng, Narrator, SealedStkm, clear_tek, id_hex, op_failed, refused};
use keycast_bsm::store::StoredKey;
use keycast_crypto::keys::{Tek, TekSalt};

/// Key Group of the events service's SEKs (groups 3–5 are (h)'s and (i)'s).
const SERVICE_GROUP: u16 = 6;
/// Key Group of the program's PEKs.
const PROGRAM_GROUP: u16 = 7;
/// How long the program is on air, and the lifetime of its keys.
const PROGRAM_SECS: u64 = 7_200;
/// View tokens in the token offer.
const TOKENS: u32 = 2;
/// Program IDs the broadcaster puts in its STKMs' access criteria (demo choices).
const FINAL: u32 = 1001;
const OTHER: u32 = 1002;

/// (j): see the module docs. Runs after (i) on its BSM and terminal A.
pub(super) async fn run_ppv(n: &mut Narrator, rng: &mut DemoRng, bsm: &Bsm, a: &mut Shell) {
    n.heading("(j) Pay-per-view and view tokens on one service: the card keeps to the program, and counts views");
    let kd = KeyDomainId::from_mcc_mnc("001", "01").expect("constant MCC/MNC");
    let sek = SekPekId { key_group: SERVICE_GROUP, key_number: 1 };
    let pek = SekPekId { key_group: PROGRAM_GROUP, key_number: 1 };
    let now = bsm.clock.now();
    let until = now + PROGRAM_SECS;
    if !catalogue(n, bsm, now, until).await {
        return;
    }
    for (id, what) in [(sek, "service events"), (pek, "program final")] {
        let kind = if id.key_group == PROGRAM_GROUP { "PEK" } else { "SEK" };
        let r = first_key(bsm, id, PROGRAM_SECS, kind).await;
        let ok = r.is_ok();
        n.check(&format!("operator: rollover of Key Group {} makes the first key of the {what}", id.key_group), r);
        if !ok {
            return;
        }
    }

    // Pay-per-view: a ServiceRequest naming the program's offer; the PEK comes in the answer.
    let item = PurchaseItemRef::new("events", Some("final-ppv"));
    let answer =
        a.subscribe(vec![(PurchaseRequestItem { item, price: None }, UtcTime::from_unix_seconds(until).ok())]).await;
    shell_apdus(n, a);
    let r = status_of(&answer).and_then(|answer| match &answer.response {
        Response::Service(s) if s.status == StatusCode::Success => {
            answer_ltkms(n, "ServiceResponse", answer, &[pek], kd)
        }
        other => Err(format!("answer {other:?}")),
    });
    let ok = r.is_ok();
    n.check("terminal A buys the pay-per-view (ServiceRequest events / final-ppv): the PEK in the answer", r);
    if !ok {
        return;
    }
    let bc = Broadcaster { csb_id: rng.u32("PPV STKM CSB ID"), key_domain_id: kd };
    let Ok(stored_pek) = broadcaster_key(n, bsm, pek).await else { return };
    let ts = ntp(now + 60);
    let st = seal_program(&bc, rng, &stored_pek, 1, ts, FINAL);
    n.wire(&format!("STKM TEK ID 1 under PEK {}, program ID {FINAL}, TS {ts}", id_hex(pek)), &st.bytes);
    let r = opens(a, &st);
    shell_apdus(n, a);
    n.check(&format!("terminal A's card opens the program's STKM (program ID {FINAL})"), r);
    let st = seal_program(&bc, rng, &stored_pek, 2, ts + 10, FINAL);
    let r = opens(a, &st);
    shell_apdus(n, a);
    n.check(&format!("terminal A's card opens the next STKM of the same program (TEK ID 2, TS {})", ts + 10), r);
    let st = seal_program(&bc, rng, &stored_pek, 3, ts + 20, OTHER);
    let r = a.card_mut().mtk_generation(&st.bytes);
    shell_apdus(n, a);
    n.check(
        &format!("terminal A's card refuses an STKM under the same PEK for program ID {OTHER}"),
        refused(r, 0x6985, "a pay-per-view key is for the one program it first opened"),
    );

    // Tokens: a TokenPurchaseRequest for the service's SEK; the key comes with a view counter.
    let request = a.client_mut().token_purchase(vec![TokenPurchaseItem {
        key_id: bcast_key(kd, sek),
        global_id_ref: None,
        number_of_tokens: Some(TOKENS),
        price: None,
    }]);
    let answer = match request {
        Ok(request) => a.execute(request).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    shell_apdus(n, a);
    let r = answer.as_ref().map_err(Clone::clone).and_then(|answer| match &answer.response {
        Response::TokenPurchase(t)
            if t.status == StatusCode::Success && t.items.iter().map(|i| i.number_of_tokens).eq([Some(TOKENS)]) =>
        {
            answer_ltkms(n, "TokenPurchaseResponse", answer, &[sek], kd)
                .map(|s| format!("{TOKENS} tokens; {s} under policy 4 with view counter {TOKENS}"))
        }
        other => Err(format!("answer {other:?}")),
    });
    let ok = r.is_ok();
    n.check(&format!("terminal A buys {TOKENS} view tokens (TokenPurchaseRequest for SEK {})", id_hex(sek)), r);
    if !ok {
        return;
    }
    let Ok(stored_sek) = broadcaster_key(n, bsm, sek).await else { return };
    let bc = Broadcaster { csb_id: rng.u32("token STKM CSB ID"), key_domain_id: kd };
    // (TEK ID, program ID, what the card must do, why)
    let steps: [(u16, u32, Option<&str>); 4] = [
        (1, 2001, None),
        (2, 2001, None),
        (3, 2002, None),
        (4, 2003, Some("both view units are spent and program 2003 is new")),
    ];
    let views = ["one view unit taken, 1 left", "the same program: no unit taken", "one view unit taken, 0 left"];
    for (i, (tek_id, program, refusal)) in steps.into_iter().enumerate() {
        let st = seal_program(&bc, rng, &stored_sek, tek_id, ts + 30 + 10 * u32::from(tek_id), program);
        let what = format!("token key: STKM TEK ID {tek_id} for program ID {program}");
        match refusal {
            None => {
                let r = opens(a, &st).map(|s| format!("{s}; {}", views[i]));
                shell_apdus(n, a);
                n.check(&format!("terminal A's card opens the {what}"), r);
            }
            Some(why) => {
                let r = a.card_mut().mtk_generation(&st.bytes);
                shell_apdus(n, a);
                n.check(&format!("terminal A's card refuses the {what}"), refused(r, 0x6985, why));
            }
        }
    }
}

/// The catalogue additions through the admin API.
async fn catalogue(n: &mut Narrator, bsm: &Bsm, from: u64, until: u64) -> bool {
    let calls = [
        (
            "/admin/v1/services/events",
            format!(r#"{{"name":"Events","mcc":"001","mnc":"01","key_group":{SERVICE_GROUP},"streaming":true}}"#),
        ),
        (
            "/admin/v1/programs/final",
            format!(r#"{{"service":"events","key_group":{PROGRAM_GROUP},"from":{from},"until":{until}}}"#),
        ),
        ("/admin/v1/purchase-items/events", r#"{"name":"Events","services":["events"]}"#.to_owned()),
        (
            "/admin/v1/offers/final-ppv",
            r#"{"item":"events","amount":"2.99","currency":"EUR","kind":"ppv","program":"final","period_secs":0}"#
                .to_owned(),
        ),
        (
            "/admin/v1/offers/events-tokens",
            format!(
                r#"{{"item":"events","amount":"1.50","currency":"EUR","kind":"tokens","tokens":{TOKENS},"period_secs":86400}}"#
            ),
        ),
    ];
    let r = admin_puts(bsm, &calls).await;
    let ok = r.is_ok();
    n.check(
        "operator: service events, program final and their offers through the admin API",
        r.map(|()| {
            format!(
                "service events (Key Group {SERVICE_GROUP}), program final (PEKs in Key Group {PROGRAM_GROUP}, on air {PROGRAM_SECS} s), item events with offers final-ppv (2.99 EUR) and events-tokens ({TOKENS} tokens, 1.50 EUR): 204 each"
            )
        }),
    );
    ok
}

/// `POST …/rollover` of `want`'s empty group with keys of `lifetime_secs`; expects 201 for
/// `want` (`what`: SEK or PEK).
pub(super) async fn first_key(bsm: &Bsm, want: SekPekId, lifetime_secs: u64, what: &str) -> Result<String, String> {
    let body = format!(r#"{{"mcc":"001","mnc":"01","key_lifetime_secs":{lifetime_secs},"lead_secs":3600}}"#);
    let path = format!("/admin/v1/key-groups/{}/rollover", want.key_group);
    let (status, answer) = bsm.admin("POST", &path, &body).await?;
    let json: serde_json::Value = serde_json::from_str(&answer).map_err(|e| format!("{status}: {e}"))?;
    let made = (json["key_group"].as_u64(), json["key_number"].as_u64());
    if status == 201 && made == (Some(want.key_group.into()), Some(want.key_number.into())) {
        Ok(format!("201: {what} {}", id_hex(want)))
    } else {
        Err(format!("{status} {answer}"))
    }
}

/// Seals an STKM under a stored key whose access criteria name `program` (profile P-6).
fn seal_program(
    bc: &Broadcaster,
    rng: &mut DemoRng,
    key: &StoredKey,
    tek_id: u16,
    ts: u32,
    program: u32,
) -> SealedStkm {
    let tek = Tek::from_bytes(rng.bytes("TEK"));
    let salt = TekSalt::from_bytes(rng.bytes("salt"));
    let content = StkmContent {
        csb_id: bc.csb_id,
        key_domain_id: bc.key_domain_id,
        sek_pek_id: key.entry.id,
        tek_id,
        ts,
        ext: Some(StkmExt {
            protection_after_reception: ProtectionAfterReception::ServiceProtectionOnly,
            traffic_protection_protocol: TrafficProtectionProtocol::Srtp,
            traffic_authentication: true,
            tbk_id: None,
            access_criteria: Some(vec![AccessDescriptor::ProgramId(program)]),
        }),
        tek: TekField::Clear(tek.clone()),
        salt: Some(salt.clone()),
    };
    // Sealing fixed, valid content cannot fail; a failure would be a bug in the demo.
    let bytes = content.seal(&key.key, &key.rand).expect("demo STKM content is valid");
    SealedStkm { bytes, tek, salt }
}

/// The card opens `st` and answers its TEK ‖ salt.
fn opens(shell: &mut Shell, st: &SealedStkm) -> Result<String, String> {
    match shell.card_mut().mtk_generation(&st.bytes) {
        Ok(answer) => clear_tek(&answer, &st.tek, &st.salt).map(|()| "TEK ‖ salt match the broadcaster's".to_owned()),
        Err(e) => Err(op_failed(&e)),
    }
}
