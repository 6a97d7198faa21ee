//! (m) of `keycast demo`: a purchase whose window has ended is purged at Deregistration.
//!
//! The BSM's rule (keycast-bsm's `Provisioning::deregistration`): a DeregistrationRequest ends
//! the terminal's registration and purges its purchases whose window has ended. The operator
//! adds a short program with a pay-per-view offer; terminal B (restarted in (l)) buys it, the
//! program ends, B deregisters naming what it still holds, and the admin API no longer lists
//! the ended purchase while the running subscription stays.

use keycast_mikey::{KeyDomainId, SekPekId};
use keycast_provisioning::sprov::{PurchaseItemRef, PurchaseRequestItem, StatusCode};
use keycast_provisioning::time::UtcTime;
use keycast_terminal::provisioning::Response;

use super::bsm::{Bsm, IMPI_B, Shell, answer_ltkms, shell_apdus, status_of};
use super::{Narrator, UNIX_T0};

/// Key Group of the short program's PEKs (groups 3–8 are (h)–(k)'s).
const PROGRAM_GROUP: u16 = 9;
/// How long the short program is on air.
const ON_AIR: u64 = 600;

/// (m): see the module docs. Runs after (l) on terminal B's restarted shell.
pub(super) async fn run_purge(n: &mut Narrator, bsm: &Bsm, b: &mut Shell) {
    n.heading("(m) Purge at Deregistration: a purchase whose window has ended is removed by the BSM");
    let kd = KeyDomainId::from_mcc_mnc("001", "01").expect("constant MCC/MNC");
    let pek = SekPekId { key_group: PROGRAM_GROUP, key_number: 1 };
    let now = bsm.clock.now();
    let until = now + ON_AIR;
    let calls = [
        (
            "PUT",
            "/admin/v1/programs/short".to_owned(),
            format!(r#"{{"service":"events","key_group":{PROGRAM_GROUP},"from":{now},"until":{until}}}"#),
        ),
        (
            "PUT",
            "/admin/v1/offers/short-ppv".to_owned(),
            r#"{"item":"events","amount":"0.99","currency":"EUR","kind":"ppv","program":"short","period_secs":0}"#
                .to_owned(),
        ),
        (
            "POST",
            format!("/admin/v1/key-groups/{PROGRAM_GROUP}/rollover"),
            r#"{"mcc":"001","mnc":"01","key_lifetime_secs":7200,"lead_secs":3600}"#.to_owned(),
        ),
    ];
    let mut r = Ok(());
    for (method, path, body) in &calls {
        match bsm.admin(method, path, body).await {
            Ok((204 | 201, _)) => {}
            Ok((status, body)) => r = Err(format!("{method} {path}: {status} {body}")),
            Err(e) => r = Err(e),
        }
        if r.is_err() {
            break;
        }
    }
    let ok = r.is_ok();
    n.check(
        "operator: program short (on air 600 s, PEKs in Key Group 9), offer short-ppv, its first PEK (admin API)",
        r.map(|()| "204, 204, 201: PEK 00090001".to_owned()),
    );
    if !ok {
        return;
    }
    let item = PurchaseItemRef::new("events", Some("short-ppv"));
    let answer =
        b.subscribe(vec![(PurchaseRequestItem { item, price: None }, UtcTime::from_unix_seconds(until).ok())]).await;
    shell_apdus(n, b);
    let r = status_of(&answer).and_then(|answer| match &answer.response {
        Response::Service(s) if s.status == StatusCode::Success => {
            answer_ltkms(n, "ServiceResponse", answer, &[pek], kd)
        }
        other => Err(format!("answer {other:?}")),
    });
    let ok = r.is_ok();
    n.check("terminal B buys the pay-per-view of program short (ServiceRequest events / short-ppv)", r);
    if !ok {
        return;
    }
    // The intents of the answer (B registered implicitly on the OMA BCAST interface).
    if let Err(e) = bsm.write_intents().await {
        n.check("BSM writes the answer's intents", Err(e));
    }
    let purchases = listed(bsm).await;
    n.check(
        "admin API lists B's purchases",
        match &purchases {
            Ok(items) if items.iter().any(|(i, _)| i == "basic") && items.iter().any(|(i, _)| i == "events") => {
                Ok(describe(items))
            }
            Ok(items) => Err(describe(items)),
            Err(e) => Err(e.clone()),
        },
    );
    bsm.clock.set(until + 60);
    n.info(format!("clock: T0 + {} s, program short ended 60 s ago", bsm.clock.now() - UNIX_T0));
    let now = UtcTime::from_unix_seconds(bsm.clock.now()).unwrap_or(UtcTime::MAX);
    let held_before = b.client().purchases().len();
    let request = b.client_mut().deregistration(now);
    let answer = match request {
        Ok(request) => b.execute(request).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    shell_apdus(n, b);
    let r = answer.as_ref().map_err(Clone::clone).and_then(|answer| match &answer.response {
        Response::Deregistration(d) if d.status == StatusCode::Success => {
            let named: Vec<&str> = d.items.iter().map(|i| i.item.global_id_ref.as_str()).collect();
            Ok(format!("success for {} (the items B still holds)", named.join(", ")))
        }
        other => Err(format!("answer {other:?}")),
    });
    n.check("terminal B deregisters (DeregistrationRequest)", r);
    if let Err(e) = bsm.write_intents().await {
        n.check("BSM writes the answer's intents", Err(e));
    }
    let purchases = listed(bsm).await;
    n.check(
        "the BSM purged the ended purchase: the admin API no longer lists it",
        match &purchases {
            Ok(items) if items.iter().all(|(i, _)| i != "events") && items.iter().any(|(i, _)| i == "basic") => {
                Ok(format!("{}; the running subscription stays", describe(items)))
            }
            Ok(items) => Err(describe(items)),
            Err(e) => Err(e.clone()),
        },
    );
    // The terminal keeps the same rule: building the request purged its ended purchase.
    let purged = b.client_mut().purchases_mut().purge_expired(now);
    let held = b.client().purchases().len();
    n.check(
        "terminal B's own purchase list dropped it too",
        if held_before == 2 && held == 1 && purged.is_empty() {
            Ok("2 purchases before the Deregistration, 1 after".to_owned())
        } else {
            Err(format!("{held_before} before, {held} after, {} more purged", purged.len()))
        },
    );
}

/// `GET /admin/v1/terminals/{B}`: (item, offer) of each purchase.
async fn listed(bsm: &Bsm) -> Result<Vec<(String, String)>, String> {
    let (status, body) = bsm.admin("GET", &format!("/admin/v1/terminals/{IMPI_B}"), "").await?;
    if status != 200 {
        return Err(format!("{status} {body}"));
    }
    let json: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    let items = json["purchases"].as_array().ok_or("no purchases list")?;
    Ok(items
        .iter()
        .map(|p| (p["item"].as_str().unwrap_or("?").to_owned(), p["offer"].as_str().unwrap_or("-").to_owned()))
        .collect())
}

fn describe(items: &[(String, String)]) -> String {
    let names: Vec<String> = items.iter().map(|(i, o)| format!("{i} / {o}")).collect();
    format!("{} purchase(s): {}", items.len(), names.join(", "))
}
