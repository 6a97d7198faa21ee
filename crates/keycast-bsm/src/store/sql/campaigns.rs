//! The SQL of key campaigns and bulk imports ([`super::BsmStore::add_key_campaign`] and the
//! methods after it): statements and the mapping of a `campaigns` row.

use std::time::Duration;

use super::{from_db, to_db, u16_from_db};
use crate::domain::{KeyEntry, Window};
use crate::store::{Campaign, CampaignKind, StoreError};
use keycast_mikey::{KeyDomainId, SekPekId};

pub(super) const SQL_INSERT: &str = "INSERT INTO campaigns (key_group, key_from, kind, old_until, created_at, \
     spread_secs) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id";

/// A campaign with its key (`WHERE`/`ORDER BY` appended by the caller).
pub(super) const SQL_SELECT: &str = "SELECT c.id, c.key_group, c.key_from, c.kind, c.old_until, c.created_at, \
     c.spread_secs, c.resume_after, c.terminals, c.queued, c.finished_at, \
     k.key_number, k.window_until, k.revoked_at, k.key_domain \
     FROM campaigns c JOIN keys k ON k.key_group = c.key_group AND k.window_from = c.key_from";

pub(super) const SQL_KEY_AT: &str =
    "SELECT key_number, window_until, revoked_at FROM keys WHERE key_group = $1 AND window_from = $2";
pub(super) const SQL_NEXT_KEY_START: &str =
    "SELECT min(window_from) AS next FROM keys WHERE key_group = $1 AND window_from > $2";
pub(super) const SQL_SET_UNTIL: &str = "UPDATE keys SET window_until = $3 WHERE key_group = $1 AND window_from = $2";

/// The next page's terminals: those with purchases after the cursor (or from the start).
pub(super) const SQL_PAGE_IDS_AFTER: &str =
    "SELECT DISTINCT terminal FROM purchases WHERE terminal > $1 ORDER BY terminal LIMIT $2";
pub(super) const SQL_PAGE_IDS_FIRST: &str = "SELECT DISTINCT terminal FROM purchases ORDER BY terminal LIMIT $1";
/// The registered terminals of a page with every purchase of each. The range is stated on both
/// tables: PostgreSQL does not carry it across the join, and would scan every purchase.
pub(super) const SQL_PAGE_TARGETS: &str = "SELECT t.impi, t.reg_address, t.reg_interface, t.reg_at, \
     p.terminal, p.item, p.purchase_data, p.kind, p.program, p.tokens, p.window_from, p.window_until \
     FROM terminals t JOIN purchases p ON p.terminal = t.impi \
     WHERE t.impi >= $1 AND t.impi <= $2 AND p.terminal >= $1 AND p.terminal <= $2 \
     AND t.reg_address IS NOT NULL ORDER BY t.impi, p.item";
/// The latest delivery version of the campaign's key for each terminal of a page.
pub(super) const SQL_PAGE_VERSIONS: &str = "SELECT terminal, max(version) AS version FROM deliveries \
     WHERE terminal >= $1 AND terminal <= $2 AND key_domain = $3 AND key_group = $4 AND key_number = $5 \
     GROUP BY terminal";

pub(super) const SQL_DELIVERY_SUMMARY: &str = "SELECT count(*) AS n, count(DISTINCT terminal) AS terminals, \
     coalesce(max(version), 0) AS max_version, \
     CAST(coalesce(sum(CASE WHEN state = 'pending' THEN 1 ELSE 0 END), 0) AS BIGINT) AS pending, \
     CAST(coalesce(sum(CASE WHEN state = 'sent' THEN 1 ELSE 0 END), 0) AS BIGINT) AS sent, \
     CAST(coalesce(sum(CASE WHEN state = 'pull-solicited' THEN 1 ELSE 0 END), 0) AS BIGINT) AS pulled, \
     CAST(coalesce(sum(CASE WHEN state = 'acknowledged' THEN 1 ELSE 0 END), 0) AS BIGINT) AS acknowledged, \
     CAST(coalesce(sum(CASE WHEN state = 'failed' THEN 1 ELSE 0 END), 0) AS BIGINT) AS failed \
     FROM deliveries WHERE key_group = $1 AND key_number = $2";
pub(super) const SQL_SUBSCRIBERS: &str = "SELECT count(DISTINCT terminal) AS n FROM purchases";

/// The campaign's cursor and end, read before a page is stored (`FOR UPDATE` appended on PostgreSQL).
pub(super) const SQL_STATE: &str = "SELECT resume_after, finished_at FROM campaigns WHERE id = $1";
pub(super) const SQL_ADVANCE: &str = "UPDATE campaigns SET resume_after = $2, terminals = terminals + $3, \
     queued = queued + $4, finished_at = $5 WHERE id = $1";

/// Columns of a terminal row written by an import, in bind order.
pub(super) const IMPORT_TERMINAL_HEAD: &str =
    "INSERT INTO terminals (impi, last_seen, reg_address, reg_interface, reg_at) VALUES ";
pub(super) const IMPORT_TERMINAL_ARITY: usize = 5;
/// A terminal imported again keeps its B-TID, last-seen time and BCAST_Client_ID.
pub(super) const IMPORT_TERMINAL_TAIL: &str = " ON CONFLICT (impi) DO UPDATE SET reg_address = excluded.reg_address, \
     reg_interface = excluded.reg_interface, reg_at = excluded.reg_at";
pub(super) const IMPORT_PURCHASE_HEAD: &str = "INSERT INTO purchases \
     (terminal, item, purchase_data, kind, program, tokens, window_from, window_until) VALUES ";
pub(super) const IMPORT_PURCHASE_ARITY: usize = 8;
pub(super) const IMPORT_PURCHASE_TAIL: &str = " ON CONFLICT (terminal, item) DO UPDATE SET \
     purchase_data = excluded.purchase_data, kind = excluded.kind, program = excluded.program, \
     tokens = excluded.tokens, window_from = excluded.window_from, window_until = excluded.window_until";

/// A `campaigns` row joined with its key, as read.
pub(super) struct RawCampaign {
    pub id: i64,
    pub key_group: i64,
    pub key_from: i64,
    pub kind: String,
    pub old_until: Option<i64>,
    pub created_at: i64,
    pub spread_secs: i64,
    pub resume_after: Option<String>,
    pub terminals: i64,
    pub queued: i64,
    pub finished_at: Option<i64>,
    pub key_number: i64,
    pub key_until: i64,
    pub revoked_at: Option<i64>,
    pub key_domain: Vec<u8>,
}

pub(super) fn kind_columns(kind: CampaignKind) -> (&'static str, Option<i64>) {
    match kind {
        CampaignKind::Deliver => ("deliver", None),
        CampaignKind::UpdateValidity { old_until } => ("update", Some(to_db(old_until))),
    }
}

pub(super) fn decode(raw: RawCampaign) -> Result<Campaign, StoreError> {
    let kind = match (raw.kind.as_str(), raw.old_until) {
        ("deliver", _) => CampaignKind::Deliver,
        ("update", Some(old)) => CampaignKind::UpdateValidity { old_until: from_db(old, "old key end")? },
        (k, _) => return Err(StoreError::Corrupt(format!("campaign kind {k:?}"))),
    };
    let from = from_db(raw.key_from, "key start")?;
    let until = from_db(raw.key_until, "key end")?;
    let key_domain: [u8; 3] = raw
        .key_domain
        .as_slice()
        .try_into()
        .map_err(|_| StoreError::Corrupt("Key Domain ID is not 3 octets".into()))?;
    Ok(Campaign {
        id: from_db(raw.id, "campaign id")?,
        key: KeyEntry {
            id: SekPekId {
                key_group: u16_from_db(raw.key_group, "Key Group")?,
                key_number: u16_from_db(raw.key_number, "Key Number")?,
            },
            window: Window::new(from, until).ok_or_else(|| StoreError::Corrupt("empty key window".into()))?,
            revoked_at: raw.revoked_at.map(|r| from_db(r, "revocation time")).transpose()?,
        },
        key_domain: KeyDomainId(key_domain),
        kind,
        created_at: from_db(raw.created_at, "campaign start")?,
        spread: Duration::from_secs(from_db(raw.spread_secs, "campaign spread")?),
        cursor: raw.resume_after,
        terminals: from_db(raw.terminals, "campaign terminals")?,
        queued: from_db(raw.queued, "campaign deliveries")?,
        finished_at: raw.finished_at.map(|f| from_db(f, "campaign end")).transpose()?,
    })
}
