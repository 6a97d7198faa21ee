//! How a [`DeliveryRow`] maps to the `deliveries` and `delivery_sends` tables (the schema is
//! described in `migrations/*/0001_init.sql`), the SQL text of the delivery methods, and a small
//! builder for multi-row statements.
//!
//! The mapping is plain code over column values, so both backends share it and every stored
//! value is checked on the way back: a row the code did not write (or that was altered) gives
//! [`StoreError::Corrupt`], never a panic.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::LazyLock;

use keycast_mikey::{KeyDomainId, KeyValidity, SekPekId};
use sqlx::{Arguments, Encode, Type};

use keycast_mikey::{LtkmExt, SrtpCs, SrtpPolicy};

use super::{StoreError, from_db, to_db};
use crate::delivery::{
    Delivery, DeliveryId, DeliveryKey, DeliveryRow, DeliveryState, FailReason, PushAddress, RegistrationInterface,
    SentLtkm, Time,
};
use crate::issue::{LtkmKind, StreamingPolicy};
use crate::store::LtkmForm;

/// The columns an INSERT writes, in bind order ([`Encoded`] has one field per column).
pub(super) const INSERT_COLUMNS: &str = "terminal, key_domain, key_group, key_number, version, kind, window_form, \
     window_low, window_high, push_ip, push_interface, state, attempt, state_at, fail_reason, due, ext, srtp";
/// Number of columns in [`INSERT_COLUMNS`].
pub(super) const INSERT_ARITY: usize = 18;

/// `id` and the insert columns, each prefixed by `d.`: what the readers select.
pub(super) static SELECT_COLUMNS: LazyLock<String> = LazyLock::new(|| {
    let mut s = String::from("d.id");
    for c in INSERT_COLUMNS.split(", ") {
        let _ = write!(s, ", d.{c}");
    }
    s
});

/// The sent attempts joined to their delivery (NULL columns for a delivery with none).
pub(super) const SENT_COLUMNS: &str =
    "s.attempt AS s_attempt, s.btid AS s_btid, s.ts AS s_ts, s.sent_at AS s_at, s.acknowledged AS s_ack";

/// Selects a delivery by its name (binds 1 to 5, see [`bind_key`]).
pub(super) const KEY_MATCH: &str =
    "terminal = $1 AND key_domain = $2 AND key_group = $3 AND key_number = $4 AND version = $5";

/// Every open delivery (or one, with `AND` + [`KEY_MATCH`] on `d.`), with its sent attempts, in
/// one statement so that a delivery and its attempts come from one snapshot.
pub(super) static SELECT_OPEN: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {}, {SENT_COLUMNS} FROM deliveries d LEFT JOIN delivery_sends s ON s.delivery = d.id \
         WHERE d.due IS NOT NULL ORDER BY d.id, s.attempt",
        *SELECT_COLUMNS
    )
});

/// One delivery by name, with its sent attempts.
pub(super) static SELECT_ONE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {}, {SENT_COLUMNS} FROM deliveries d LEFT JOIN delivery_sends s ON s.delivery = d.id \
         WHERE d.terminal = $1 AND d.key_domain = $2 AND d.key_group = $3 AND d.key_number = $4 AND d.version = $5 \
         ORDER BY s.attempt",
        *SELECT_COLUMNS
    )
});

/// The claim: up to `$4` rows that are due at `$3` and not under a live lease get the lease of
/// worker `$1` until `$2`. `lock` follows the subquery's LIMIT (PostgreSQL: `FOR UPDATE SKIP
/// LOCKED`, so concurrent claimers pass over each other's rows instead of waiting).
pub(super) fn claim_sql(lock: &str) -> String {
    let returning = SELECT_COLUMNS.replace("d.", "");
    format!(
        "UPDATE deliveries SET claimed_by = $1, claim_until = $2 WHERE id IN (SELECT id FROM deliveries \
         WHERE due <= $3 AND (claim_until IS NULL OR claim_until <= $3) ORDER BY due, id LIMIT $4 {lock}) \
         RETURNING {returning}"
    )
}

/// A delivery's LTKM form (`ext`, `srtp` columns).
pub(super) static SQL_FORM: LazyLock<String> =
    LazyLock::new(|| format!("SELECT ext, srtp FROM deliveries WHERE {KEY_MATCH}"));

/// The highest version queued for (terminal, Key Domain ID, SEK/PEK ID), NULL when none.
pub(super) const SQL_LATEST_VERSION: &str = "SELECT max(version) AS v FROM deliveries \
     WHERE terminal = $1 AND key_domain = $2 AND key_group = $3 AND key_number = $4";

/// A terminal's live deliveries with their sent attempts.
pub(super) static SELECT_LIVE_OF: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {}, {SENT_COLUMNS} FROM deliveries d LEFT JOIN delivery_sends s ON s.delivery = d.id \
         WHERE d.terminal = $1 AND d.due IS NOT NULL ORDER BY d.id, s.attempt",
        *SELECT_COLUMNS
    )
});

/// The delivery whose sent LTKM is (B-TID `$1`, TS `$2`), with every sent attempt and its form.
pub(super) static SELECT_BY_SENT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {}, {SENT_COLUMNS}, d.ext AS f_ext, d.srtp AS f_srtp FROM deliveries d \
         LEFT JOIN delivery_sends s ON s.delivery = d.id \
         WHERE d.id = (SELECT delivery FROM delivery_sends WHERE btid = $1 AND ts = $2) ORDER BY s.attempt",
        *SELECT_COLUMNS
    )
});

/// Marks the sent LTKM (B-TID, TS) answered, once: no row back when it already was (or is unknown).
pub(super) const SQL_SENT_ANSWER: &str =
    "UPDATE delivery_sends SET acknowledged = 1 WHERE btid = $1 AND ts = $2 AND acknowledged = 0 RETURNING delivery";
/// Whether a sent LTKM (B-TID, TS) exists (tells a replay from an unknown LTKM).
pub(super) const SQL_SENT_EXISTS: &str = "SELECT count(*) AS n FROM delivery_sends WHERE btid = $1 AND ts = $2";
/// The state of a delivery by id (`lock`: PostgreSQL's `FOR UPDATE`).
pub(super) fn state_by_id_sql(lock: &str) -> String {
    format!("SELECT state FROM deliveries WHERE id = $1 {lock}")
}
/// Acknowledged by id, from any state but itself; the lease ends with the work.
pub(super) const SQL_ACK_BY_ID: &str = "UPDATE deliveries SET state = 'acknowledged', state_at = $2, \
     fail_reason = NULL, due = NULL, claimed_by = NULL, claim_until = NULL WHERE id = $1 AND state <> 'acknowledged'";

/// The row `record_send` locks and checks (`lock`: PostgreSQL's `FOR UPDATE`).
pub(super) fn send_check_sql(lock: &str) -> String {
    format!("SELECT id, state, attempt, claimed_by, claim_until FROM deliveries WHERE {KEY_MATCH} {lock}")
}

/// One sent attempt: (delivery id, push number, B-TID, TS, when, acknowledged 0/1).
pub(super) const SQL_SEND_INSERT: &str =
    "INSERT INTO delivery_sends (delivery, attempt, btid, ts, sent_at, acknowledged) VALUES ($1, $2, $3, $4, $5, $6)";
/// The delivery after a send: (id, state, pushes, state time, next due); the claim ends.
pub(super) const SQL_SEND_UPDATE: &str = "UPDATE deliveries SET state = $2, attempt = $3, state_at = $4, due = $5, \
     claimed_by = NULL, claim_until = NULL WHERE id = $1";
/// Acknowledged: from any state but itself; the lease ends with the work.
pub(super) static SQL_OUTCOME_ACK: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE deliveries SET state = 'acknowledged', state_at = $6, fail_reason = NULL, due = NULL, \
         claimed_by = NULL, claim_until = NULL WHERE {KEY_MATCH} AND state <> 'acknowledged'"
    )
});
/// Failed: only from a live state (an acknowledgement is never taken back).
pub(super) static SQL_OUTCOME_FAIL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE deliveries SET state = 'failed', state_at = $6, fail_reason = $7, due = NULL, \
         claimed_by = NULL, claim_until = NULL WHERE {KEY_MATCH} AND state NOT IN ('acknowledged', 'failed')"
    )
});
/// Another live state: only from a live state; a claim in progress stays with its worker. A state
/// that names no push count (`pull-solicited`) keeps the stored one.
pub(super) static SQL_OUTCOME_LIVE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE deliveries SET state = $6, attempt = COALESCE($7, attempt), state_at = $8, due = $9 \
         WHERE {KEY_MATCH} AND state NOT IN ('acknowledged', 'failed')"
    )
});
/// Whether a delivery exists (tells "unknown" from "unchanged" after an UPDATE touched nothing).
pub(super) static SQL_EXISTS: LazyLock<String> =
    LazyLock::new(|| format!("SELECT count(*) AS n FROM deliveries WHERE {KEY_MATCH}"));

/// The key's five columns, to bind as `$1` … `$5` of [`KEY_MATCH`].
pub(super) fn key_columns(key: &DeliveryKey) -> (&str, &[u8], i64, i64, i64) {
    (
        key.terminal.as_str(),
        key.key_domain_id.0.as_slice(),
        i64::from(key.sek_pek_id.key_group),
        i64::from(key.sek_pek_id.key_number),
        i64::from(key.version),
    )
}

/// State names as stored.
pub(super) const PENDING: &str = "pending";
pub(super) const SENT: &str = "sent";
pub(super) const PULL_SOLICITED: &str = "pull-solicited";
pub(super) const ACKNOWLEDGED: &str = "acknowledged";
pub(super) const FAILED: &str = "failed";

/// A state as columns: (state, attempt if the state names one, state_at, fail_reason).
pub(super) fn state_columns(state: &DeliveryState) -> (&'static str, Option<i64>, Option<i64>, Option<&'static str>) {
    let at = |t: Time| Some(to_db(t.as_micros()));
    match *state {
        DeliveryState::Pending => (PENDING, Some(0), None, None),
        DeliveryState::Sent { attempt, at: t } => (SENT, Some(i64::from(attempt)), at(t), None),
        DeliveryState::PullSolicited { at: t } => (PULL_SOLICITED, None, at(t), None),
        DeliveryState::Acknowledged { at: t } => (ACKNOWLEDGED, None, at(t), None),
        DeliveryState::Failed { at: t, reason } => (FAILED, None, at(t), Some(fail_reason_name(reason))),
    }
}

fn fail_reason_name(reason: FailReason) -> &'static str {
    match reason {
        FailReason::NoAcknowledgement => "no-ack",
        FailReason::Abandoned => "abandoned",
        FailReason::Stopped => "stopped",
        FailReason::Superseded => "superseded",
    }
}

fn interface_name(interface: RegistrationInterface) -> &'static str {
    // The same names as the terminals table's registrations (`store::Interface`).
    match interface {
        RegistrationInterface::Mbms => "mbms",
        RegistrationInterface::OmaBcast => "oma-bcast",
    }
}

/// One `deliveries` row as bound by an INSERT, in [`INSERT_COLUMNS`] order.
pub(super) struct Encoded<'a> {
    pub terminal: &'a str,
    pub key_domain: &'a [u8],
    pub key_group: i64,
    pub key_number: i64,
    pub version: i64,
    pub kind: &'static str,
    pub window_form: Option<&'static str>,
    pub window_low: Option<i64>,
    pub window_high: Option<i64>,
    pub push_ip: String,
    pub push_interface: &'static str,
    pub state: &'static str,
    pub attempt: i64,
    pub state_at: Option<i64>,
    pub fail_reason: Option<&'static str>,
    pub due: Option<i64>,
    pub ext: Option<Vec<u8>>,
    pub srtp: Option<Vec<u8>>,
}

/// The columns of a row to insert. A live row needs a due time (a worker must pick it up some
/// day); a final row's due time is not stored.
pub(super) fn encode<'a>(row: &'a DeliveryRow, form: &LtkmForm) -> Result<Encoded<'a>, StoreError> {
    let d = &row.delivery;
    let due = match (row.state.is_final(), row.due) {
        (true, _) => None,
        (false, Some(due)) => Some(to_db(due.as_micros())),
        (false, None) => {
            return Err(StoreError::Invalid(format!("live delivery for {} without a due time", d.key.terminal)));
        }
    };
    let (kind, window) = match d.kind {
        LtkmKind::Deliver { validity } => ("deliver", Some(validity)),
        LtkmKind::UpdateValidity { validity } => ("update", Some(validity)),
        LtkmKind::Invalidate => ("invalidate", None),
    };
    let (window_form, window_low, window_high) = match window {
        None => (None, None, None),
        Some(KeyValidity::TsWindow { ts_low, ts_high }) => (Some("ts"), Some(ts_low.into()), Some(ts_high.into())),
        Some(KeyValidity::TekIdWindow { seq_l, seq_u }) => (Some("tek"), Some(seq_l.into()), Some(seq_u.into())),
    };
    let (state, attempt, state_at, fail_reason) = state_columns(&row.state);
    // States that name no push count keep the highest push that left, for the operator's view.
    let pushes = row.sent.iter().map(|s| s.attempt).max().unwrap_or(0);
    let (terminal, key_domain, key_group, key_number, version) = key_columns(&d.key);
    Ok(Encoded {
        terminal,
        key_domain,
        key_group,
        key_number,
        version,
        kind,
        window_form,
        window_low,
        window_high,
        push_ip: d.to.ip.to_string(),
        push_interface: interface_name(d.to.interface),
        state,
        attempt: attempt.unwrap_or(i64::from(pushes)),
        state_at,
        fail_reason,
        due,
        ext: form.ext.as_ref().map(encode_ext),
        srtp: form.streaming.as_ref().map(encode_streaming).transpose()?,
    })
}

/// `profile: P-2`: OMA BCAST extension subtype 1 is the LTKM's; the column holds subtype and body
/// as the LTKM carries them (P-4).
const LTKM_SUBTYPE: u8 = 1;

fn encode_ext(ext: &LtkmExt) -> Vec<u8> {
    let mut out = Vec::with_capacity(10);
    ext.encode(&mut out);
    out
}

/// The `srtp` column: the SRTP-ID map entry (policy no ‖ SSRC (4) ‖ ROC (4)), then the SP payload's
/// policy number and its parameters as `type ‖ length ‖ value`, in order (lossless: the LTKM must
/// be rebuilt byte for byte to check its verification message).
fn encode_streaming(s: &StreamingPolicy) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(16 + 4 * s.srtp_policy.params.len());
    out.push(s.srtp_cs.policy_no);
    out.extend_from_slice(&s.srtp_cs.ssrc.to_be_bytes());
    out.extend_from_slice(&s.srtp_cs.roc.to_be_bytes());
    out.push(s.srtp_policy.policy_no);
    for (ty, value) in &s.srtp_policy.params {
        let len = u8::try_from(value.len())
            .map_err(|_| StoreError::Invalid(format!("SRTP parameter {ty} longer than 255 octets")))?;
        out.push(*ty);
        out.push(len);
        out.extend_from_slice(value);
    }
    Ok(out)
}

/// A form read back; anything the code did not write is [`StoreError::Corrupt`].
pub(super) fn decode_form(ext: Option<Vec<u8>>, srtp: Option<Vec<u8>>) -> Result<LtkmForm, StoreError> {
    let ext = match ext.as_deref() {
        None => None,
        Some([LTKM_SUBTYPE, body @ ..]) => {
            Some(LtkmExt::read(body, 1).map_err(|e| corrupt(format!("delivery extension: {e}")))?)
        }
        Some(_) => return Err(corrupt("delivery extension: not an LTKM extension")),
    };
    let streaming = srtp.as_deref().map(decode_streaming).transpose()?;
    Ok(LtkmForm { ext, streaming })
}

fn decode_streaming(b: &[u8]) -> Result<StreamingPolicy, StoreError> {
    let bad = || corrupt("delivery SRTP policy truncated");
    let (head, mut rest) = b.split_at_checked(10).ok_or_else(bad)?;
    let word = |i: usize| u32::from_be_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
    let srtp_cs = SrtpCs { policy_no: head[0], ssrc: word(1), roc: word(5) };
    let mut params = Vec::new();
    while let [ty, len, tail @ ..] = rest {
        let (value, next) = tail.split_at_checked(usize::from(*len)).ok_or_else(bad)?;
        params.push((*ty, value.to_vec()));
        rest = next;
    }
    if !rest.is_empty() {
        return Err(bad());
    }
    Ok(StreamingPolicy { srtp_cs, srtp_policy: SrtpPolicy { policy_no: head[9], params } })
}

/// One `deliveries` row as read, before its checks.
#[derive(Debug)]
pub(super) struct Raw {
    pub id: i64,
    pub terminal: String,
    pub key_domain: Vec<u8>,
    pub key_group: i64,
    pub key_number: i64,
    pub version: i64,
    pub kind: String,
    pub window_form: Option<String>,
    pub window_low: Option<i64>,
    pub window_high: Option<i64>,
    pub push_ip: String,
    pub push_interface: String,
    pub state: String,
    pub attempt: i64,
    pub state_at: Option<i64>,
    pub fail_reason: Option<String>,
    pub due: Option<i64>,
}

/// One `delivery_sends` row as read (all `None` when a LEFT JOIN found none).
#[derive(Debug)]
pub(super) struct RawSent {
    pub attempt: Option<i64>,
    pub btid: Option<String>,
    pub ts: Option<i64>,
    pub at: Option<i64>,
    pub acknowledged: Option<i64>,
}

fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt(what.into())
}

fn u32_of(v: i64, what: &str) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| corrupt(format!("{what} {v} out of range")))
}

fn u16_of(v: i64, what: &str) -> Result<u16, StoreError> {
    u16::try_from(v).map_err(|_| corrupt(format!("{what} {v} out of range")))
}

fn time_of(v: i64, what: &str) -> Result<Time, StoreError> {
    Ok(Time::from_micros(from_db(v, what)?))
}

/// A stored row back as the scheduler's row (without its sent attempts).
pub(super) fn decode(raw: Raw) -> Result<(DeliveryId, DeliveryRow), StoreError> {
    let id = DeliveryId(from_db(raw.id, "delivery id")?);
    let window = match (raw.window_form.as_deref(), raw.window_low, raw.window_high) {
        (None, None, None) => None,
        (Some("ts"), Some(low), Some(high)) => {
            Some(KeyValidity::TsWindow { ts_low: u32_of(low, "TS low")?, ts_high: u32_of(high, "TS high")? })
        }
        (Some("tek"), Some(low), Some(high)) => {
            Some(KeyValidity::TekIdWindow { seq_l: u16_of(low, "SEQl")?, seq_u: u16_of(high, "SEQu")? })
        }
        (form, _, _) => return Err(corrupt(format!("delivery {}: window form {form:?} without its bounds", raw.id))),
    };
    let kind = match (raw.kind.as_str(), window) {
        ("deliver", Some(validity)) => LtkmKind::Deliver { validity },
        ("update", Some(validity)) => LtkmKind::UpdateValidity { validity },
        ("invalidate", None) => LtkmKind::Invalidate,
        (k, _) => return Err(corrupt(format!("delivery {}: kind {k:?} with the wrong window", raw.id))),
    };
    let interface = match raw.push_interface.as_str() {
        "mbms" => RegistrationInterface::Mbms,
        "oma-bcast" => RegistrationInterface::OmaBcast,
        other => return Err(corrupt(format!("delivery {}: interface {other:?}", raw.id))),
    };
    let ip: IpAddr = raw.push_ip.parse().map_err(|_| corrupt(format!("delivery {}: push address", raw.id)))?;
    let at =
        || raw.state_at.map(|t| time_of(t, "state time")).transpose()?.ok_or_else(|| corrupt("state without its time"));
    let state = match (raw.state.as_str(), raw.fail_reason.as_deref()) {
        (PENDING, None) => DeliveryState::Pending,
        (SENT, None) => DeliveryState::Sent { attempt: u32_of(raw.attempt, "attempt")?, at: at()? },
        (PULL_SOLICITED, None) => DeliveryState::PullSolicited { at: at()? },
        (ACKNOWLEDGED, None) => DeliveryState::Acknowledged { at: at()? },
        (FAILED, Some("no-ack")) => DeliveryState::Failed { at: at()?, reason: FailReason::NoAcknowledgement },
        (FAILED, Some("abandoned")) => DeliveryState::Failed { at: at()?, reason: FailReason::Abandoned },
        (FAILED, Some("stopped")) => DeliveryState::Failed { at: at()?, reason: FailReason::Stopped },
        (FAILED, Some("superseded")) => DeliveryState::Failed { at: at()?, reason: FailReason::Superseded },
        (s, r) => return Err(corrupt(format!("delivery {}: state {s:?} with reason {r:?}", raw.id))),
    };
    let due = raw.due.map(|d| time_of(d, "due time")).transpose()?;
    if state.is_final() == due.is_some() {
        return Err(corrupt(format!("delivery {}: a due time exactly when live", raw.id)));
    }
    let key = DeliveryKey {
        terminal: raw.terminal,
        key_domain_id: KeyDomainId(
            raw.key_domain.as_slice().try_into().map_err(|_| corrupt("Key Domain ID is not 3 bytes"))?,
        ),
        sek_pek_id: SekPekId {
            key_group: u16_of(raw.key_group, "Key Group")?,
            key_number: u16_of(raw.key_number, "Key Number")?,
        },
        version: u32_of(raw.version, "version")?,
    };
    let delivery = Delivery { key, kind, to: PushAddress { ip, interface } };
    Ok((id, DeliveryRow { delivery, state, due, sent: Vec::new() }))
}

/// A sent attempt back; `None` for the NULL columns of a delivery with none.
pub(super) fn decode_sent(raw: RawSent) -> Result<Option<SentLtkm>, StoreError> {
    match raw {
        RawSent { attempt: None, btid: None, ts: None, at: None, acknowledged: None } => Ok(None),
        RawSent { attempt: Some(attempt), btid: Some(btid), ts: Some(ts), at: Some(at), acknowledged: Some(ack) } => {
            Ok(Some(SentLtkm {
                attempt: u32_of(attempt, "sent attempt")?,
                btid,
                ts: u32_of(ts, "sent TS")?,
                at: time_of(at, "sent time")?,
                acknowledged: match ack {
                    0 => false,
                    1 => true,
                    v => return Err(corrupt(format!("acknowledged flag {v}"))),
                },
            }))
        }
        _ => Err(corrupt("sent attempt with missing columns")),
    }
}

/// Groups joined rows (ordered by delivery) into deliveries with their sent attempts.
pub(super) fn group(
    rows: impl IntoIterator<Item = Result<(Raw, RawSent), StoreError>>,
) -> Result<Vec<(DeliveryId, DeliveryRow)>, StoreError> {
    let mut out: Vec<(DeliveryId, DeliveryRow)> = Vec::new();
    for row in rows {
        let (raw, sent) = row?;
        let id = from_db(raw.id, "delivery id")?;
        if out.last().is_none_or(|(last, _)| last.0 != id) {
            out.push(decode(raw)?);
        }
        if let (Some(sent), Some((_, row))) = (decode_sent(sent)?, out.last_mut()) {
            row.sent.push(sent);
        }
    }
    Ok(out)
}

/// A statement whose text grows with its arguments: the placeholders come from the backend's
/// own [`Arguments::format_placeholder`] (`?` for SQLite, `$n` for PostgreSQL), so one builder
/// serves both.
pub(super) struct Statement<A> {
    pub sql: String,
    pub args: A,
}

impl<A: Arguments> Statement<A> {
    pub(super) fn new(head: &str) -> Self {
        Self { sql: head.to_owned(), args: A::default() }
    }

    pub(super) fn text(&mut self, text: &str) -> &mut Self {
        self.sql.push_str(text);
        self
    }

    /// Appends a placeholder bound to `value`.
    pub(super) fn bind<'t, T>(&mut self, value: T) -> Result<&mut Self, StoreError>
    where
        T: Encode<'t, A::Database> + Type<A::Database>,
    {
        self.args.add(value).map_err(|e| StoreError::Backend(format!("bind: {e}")))?;
        self.args.format_placeholder(&mut self.sql).map_err(|e| StoreError::Backend(format!("placeholder: {e}")))?;
        Ok(self)
    }
}
