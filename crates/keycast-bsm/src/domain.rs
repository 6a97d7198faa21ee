//! The BSM's domain as plain data and the rules over it (sans-IO): the catalogue (services,
//! programs, purchase items and their purchase data), the SEK/PEK key groups with their windows,
//! rollover schedule and history, and the purchases that entitle a terminal to keys.
//!
//! Storage persists these values; the services call the rules with values read from storage and
//! the time passed in. Nothing here reads a clock or touches I/O.
//!
//! # Keys (profile P-3, P-6; issue 5 "Domain")
//! A **key group** (the Key Group of the SEK/PEK ID) is a sequence of keys, each valid for a
//! window `[from, until)` of Unix seconds (carried in LTKMs as NTP-second TS bounds, P-6). The
//! group's [`KeySchedule`] says how long a key lives and how long **before** the current key ends
//! the next one must exist, so that it reaches every terminal in time ([`KeyGroup::rollover_due`]).
//! At most two keys of a group are live at any instant: the current one and the next
//! ([`KeyGroup::live`]). Every key ever made stays in the group's history, so a recording made
//! under an old key can still be played back after a Token Purchase ([`KeyGroup::covering`]).
//! Key Number 0 is never allocated (it means "the current key" in a solicited pull, P-3); after
//! 65 535 keys the numbers wrap to 1 \[chosen\], so history lookups go by window, and by number only
//! among the live keys.
//!
//! # Entitlements (issue 5 "Domain")
//! A [`Purchase`] gives one terminal the keys of a purchase item for a window: a subscription
//! the service keys (SEK) overlapping it, pay-per-view the program's key (PEK), pay-per-time the
//! service keys of the bought period, tokens the service keys for as long as tokens last (the
//! card counts views, P-4). [`keys_to_deliver`] lists what a terminal must hold now;
//! [`keys_to_invalidate`] what an unsubscribe takes away — only keys no other purchase of the same
//! terminal still needs.

use std::collections::{BTreeMap, BTreeSet};

use keycast_mikey::{KeyDomainId, SekPekId};
use keycast_provisioning::sprov::Price;

/// Seconds between the NTP epoch (1900) and the Unix epoch (1970).
pub const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// Unix seconds as the 32-bit NTP seconds of LTKM/STKM TS fields (P-6), or `None` past 2036
/// (the first NTP era's end; era 1 is not supported \[chosen\]).
#[must_use]
pub fn ntp_seconds(unix: u64) -> Option<u32> {
    u32::try_from(unix.checked_add(NTP_UNIX_OFFSET)?).ok()
}

/// A half-open window `[from, until)` of Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Window {
    /// First second inside.
    pub from: u64,
    /// First second after.
    pub until: u64,
}

impl Window {
    /// `[from, until)`; `None` when empty or inverted.
    #[must_use]
    pub fn new(from: u64, until: u64) -> Option<Self> {
        (from < until).then_some(Window { from, until })
    }

    /// Whether `t` is inside.
    #[must_use]
    pub fn contains(&self, t: u64) -> bool {
        self.from <= t && t < self.until
    }

    /// Whether the two windows share at least one second.
    #[must_use]
    pub fn overlaps(&self, other: &Window) -> bool {
        self.from < other.until && other.from < self.until
    }
}

/// A service's identifier (the Service Guide's globalServiceID).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceId(pub String);

/// A program's identifier (pay-per-view events; carried as the STKM's program ID).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProgramId(pub String);

/// The BSM's identity of a terminal: the subscriber's IMPI, which stays the same across
/// bootstraps (the B-TID changes with each).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TerminalId(pub String);

/// A protected service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// globalServiceID.
    pub id: ServiceId,
    /// Name shown to users.
    pub name: String,
    /// Key Domain ID of its keys.
    pub key_domain: KeyDomainId,
    /// Key Group of its SEKs.
    pub key_group: u16,
    /// Streaming (SRTP, LTKMs carry an SP payload) or download (file delivery).
    pub streaming: bool,
}

/// A pay-per-view program of a service, protected by a PEK of its own key group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    /// Program ID.
    pub id: ProgramId,
    /// The service that broadcasts it.
    pub service: ServiceId,
    /// Key Group of its PEKs.
    pub key_group: u16,
    /// When it is on air.
    pub window: Window,
}

/// What a purchase buys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurchaseKind {
    /// A subscription for a period: the services' SEKs.
    Subscription,
    /// One program: its PEK.
    PayPerView(ProgramId),
    /// A bought stretch of time: the services' SEKs for it.
    PayPerTime,
    /// Tokens: each new program watched takes one (the card counts them, P-4 code 0x04).
    Tokens(u32),
}

/// A purchase item (the Service Guide's PurchaseItem, by GlobalPurchaseItemID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurchaseItem {
    /// GlobalPurchaseItemID.
    pub global_id: String,
    /// Name shown to users.
    pub name: String,
    /// The services it gives access to.
    pub services: Vec<ServiceId>,
}

/// One offer for a purchase item (the Service Guide's PurchaseData).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurchaseData {
    /// PurchaseData ID.
    pub id: String,
    /// The purchase item offered.
    pub item: String,
    /// Price.
    pub price: Price,
    /// What is bought.
    pub kind: PurchaseKind,
    /// Subscription period or bought time, seconds (ignored for pay-per-view: the program's
    /// window counts).
    pub period: u64,
    /// Play-backs of a recording the bought key allows (profile P-4 play_back_counter): with a
    /// pay-per-time offer the key's policy becomes 0x01, with a pay-per-view offer 0x03; 0 for
    /// live use only. Subscriptions (0x05) play back within their window anyway, and tokens have
    /// no play-back code, so those offers carry 0.
    pub play_backs: u16,
}

/// How a key group rolls over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySchedule {
    /// How long each key is valid, seconds.
    pub key_lifetime: u64,
    /// How long before the current key ends its successor must exist (and start being
    /// delivered), seconds; less than `key_lifetime`.
    pub lead: u64,
}

impl KeySchedule {
    /// `None` when a lifetime is zero or the lead is not shorter than the lifetime (then more
    /// than two keys would be live at once).
    #[must_use]
    pub fn new(key_lifetime: u64, lead: u64) -> Option<Self> {
        (key_lifetime > 0 && lead < key_lifetime).then_some(KeySchedule { key_lifetime, lead })
    }
}

/// One SEK/PEK as the domain sees it; the key bytes and RAND live in storage, wrapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    /// SEK/PEK ID.
    pub id: SekPekId,
    /// Validity window.
    pub window: Window,
    /// When an unsubscribe of every holder or an operator revoked it for good, if ever (a revoked
    /// key is not delivered again).
    pub revoked_at: Option<u64>,
}

/// A key that [`KeyGroup::rollover_due`] says must be made now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewKey {
    /// Its SEK/PEK ID.
    pub id: SekPekId,
    /// Its window.
    pub window: Window,
}

/// A key group's keys, oldest first: its history and its live keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyGroup {
    group: u16,
    keys: Vec<KeyEntry>,
}

/// Why a key cannot join a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyGroupError {
    /// Key Group 0 is not a key group.
    #[error("Key Group 0 is reserved")]
    GroupZero,
    /// The key belongs to another group.
    #[error("key {key:?} is not of Key Group {group}")]
    OtherGroup {
        /// The group.
        group: u16,
        /// The key.
        key: SekPekId,
    },
    /// Key Number 0 is reserved for solicited pulls.
    #[error("Key Number 0 is reserved")]
    KeyNumberZero,
    /// The key's window starts before the latest key's window ends (keys of a group follow each
    /// other without overlap).
    #[error("key {key:?} overlaps the group's latest key")]
    Overlap {
        /// The key.
        key: SekPekId,
    },
}

impl KeyGroup {
    /// An empty group.
    ///
    /// # Errors
    /// [`KeyGroupError::GroupZero`].
    pub fn new(group: u16) -> Result<Self, KeyGroupError> {
        if group == 0 {
            return Err(KeyGroupError::GroupZero);
        }
        Ok(KeyGroup { group, keys: Vec::new() })
    }

    /// The group with these keys (from storage), checked as [`KeyGroup::push`] checks them.
    ///
    /// # Errors
    /// As [`KeyGroup::push`].
    pub fn with_keys(group: u16, keys: impl IntoIterator<Item = KeyEntry>) -> Result<Self, KeyGroupError> {
        let mut g = KeyGroup::new(group)?;
        let mut keys: Vec<KeyEntry> = keys.into_iter().collect();
        keys.sort_by_key(|k| k.window.from);
        for k in keys {
            g.push(k)?;
        }
        Ok(g)
    }

    /// Key Group.
    #[must_use]
    pub fn group(&self) -> u16 {
        self.group
    }

    /// Every key, oldest first.
    #[must_use]
    pub fn keys(&self) -> &[KeyEntry] {
        &self.keys
    }

    /// Appends a key after the latest one.
    ///
    /// # Errors
    /// [`KeyGroupError`].
    pub fn push(&mut self, key: KeyEntry) -> Result<(), KeyGroupError> {
        if key.id.key_group != self.group {
            return Err(KeyGroupError::OtherGroup { group: self.group, key: key.id });
        }
        if key.id.key_number == 0 {
            return Err(KeyGroupError::KeyNumberZero);
        }
        if self.keys.last().is_some_and(|last| key.window.from < last.window.until) {
            return Err(KeyGroupError::Overlap { key: key.id });
        }
        self.keys.push(key);
        Ok(())
    }

    /// The key valid at `now`, if any (and not revoked).
    #[must_use]
    pub fn current(&self, now: u64) -> Option<&KeyEntry> {
        self.keys.iter().rev().find(|k| k.window.contains(now) && k.revoked_at.is_none())
    }

    /// The keys a terminal should hold at `now`: the current key and the next one if it already
    /// exists — at most two.
    pub fn live(&self, now: u64) -> impl Iterator<Item = &KeyEntry> {
        let live: Vec<&KeyEntry> =
            self.keys.iter().filter(|k| k.window.until > now && k.revoked_at.is_none()).take(2).collect();
        live.into_iter()
    }

    /// The keys whose windows overlap `window`, revoked or not (history, for play-back of
    /// recordings).
    pub fn covering(&self, window: Window) -> impl Iterator<Item = &KeyEntry> {
        self.keys.iter().filter(move |k| k.window.overlaps(&window))
    }

    /// The live key with this ID (numbers repeat after a wrap, so older keys are found by
    /// window, see [`KeyGroup::covering`]).
    #[must_use]
    pub fn live_key(&self, id: SekPekId, now: u64) -> Option<&KeyEntry> {
        self.live(now).find(|k| k.id == id)
    }

    /// The key that must be made at `now`, if any: the first key of an empty group (valid from
    /// `now`), a key after a gap (from `now`), or the successor of the latest key once that key
    /// has less than `schedule.lead` left (from the latest key's end). Never a third live key.
    #[must_use]
    pub fn rollover_due(&self, schedule: KeySchedule, now: u64) -> Option<NewKey> {
        let latest = self.keys.iter().rev().find(|k| k.revoked_at.is_none());
        let from = match latest {
            None => now,
            Some(k) if k.window.until <= now => now,
            // The latest key is still ahead: with the current one that makes two live keys.
            Some(k) if !k.window.contains(now) => return None,
            Some(k) if k.window.until - now <= schedule.lead => k.window.until,
            Some(_) => return None,
        };
        // A revoked key may still hold the time after `from`: never overlap any key.
        let from = from.max(self.keys.last().map_or(0, |k| k.window.until));
        let until = from.checked_add(schedule.key_lifetime)?;
        // Numbers follow the last key made, revoked or not, and skip 0.
        let number = match self.keys.last().map(|k| k.id.key_number) {
            None | Some(u16::MAX) => 1,
            Some(n) => n + 1,
        };
        Some(NewKey { id: SekPekId { key_group: self.group, key_number: number }, window: Window { from, until } })
    }
}

/// One terminal's purchase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purchase {
    /// The terminal.
    pub terminal: TerminalId,
    /// The purchase item bought.
    pub item: String,
    /// The offer it was bought under.
    pub purchase_data: String,
    /// What was bought.
    pub kind: PurchaseKind,
    /// When it gives access.
    pub window: Window,
}

/// The key groups a purchase draws on, with the window it needs them for: the services' SEK
/// groups over the purchase window, or the program's PEK group over the program's window (cut
/// to the purchase window).
fn groups_of(
    purchase: &Purchase,
    items: &BTreeMap<String, PurchaseItem>,
    services: &BTreeMap<ServiceId, Service>,
    programs: &BTreeMap<ProgramId, Program>,
) -> Vec<(u16, Window)> {
    match &purchase.kind {
        PurchaseKind::PayPerView(program) => programs
            .get(program)
            .and_then(|p| {
                let from = p.window.from.max(purchase.window.from);
                let until = p.window.until.min(purchase.window.until);
                Window::new(from, until).map(|w| (p.key_group, w))
            })
            .into_iter()
            .collect(),
        PurchaseKind::Subscription | PurchaseKind::PayPerTime | PurchaseKind::Tokens(_) => items
            .get(&purchase.item)
            .map(|item| {
                item.services.iter().filter_map(|s| services.get(s)).map(|s| (s.key_group, purchase.window)).collect()
            })
            .unwrap_or_default(),
    }
}

/// The catalogue the entitlement rules read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalogue {
    /// Purchase items by GlobalPurchaseItemID.
    pub items: BTreeMap<String, PurchaseItem>,
    /// Services by ID.
    pub services: BTreeMap<ServiceId, Service>,
    /// Programs by ID.
    pub programs: BTreeMap<ProgramId, Program>,
    /// Key groups by Key Group.
    pub groups: BTreeMap<u16, KeyGroup>,
}

impl Catalogue {
    /// The live keys (at `now`) of every group `purchase` draws on whose windows overlap the
    /// part of the purchase that has not ended.
    fn live_keys_of(&self, purchase: &Purchase, now: u64) -> BTreeSet<SekPekId> {
        let mut out = BTreeSet::new();
        for (group, window) in groups_of(purchase, &self.items, &self.services, &self.programs) {
            let Some(remaining) = Window::new(window.from.max(now), window.until) else { continue };
            if let Some(g) = self.groups.get(&group) {
                out.extend(g.live(now).filter(|k| k.window.overlaps(&remaining)).map(|k| k.id));
            }
        }
        out
    }
}

/// The keys `purchases` (one terminal's) entitle it to hold at `now`: the live keys of every
/// group they draw on that overlap the rest of a purchase's window.
#[must_use]
pub fn keys_to_deliver(catalogue: &Catalogue, purchases: &[Purchase], now: u64) -> BTreeSet<SekPekId> {
    purchases.iter().flat_map(|p| catalogue.live_keys_of(p, now)).collect()
}

/// The keys to invalidate at the terminal when `removed` is unsubscribed at `now`: its live keys
/// that none of the terminal's `remaining` purchases still needs.
#[must_use]
pub fn keys_to_invalidate(
    catalogue: &Catalogue,
    removed: &Purchase,
    remaining: &[Purchase],
    now: u64,
) -> BTreeSet<SekPekId> {
    let still = keys_to_deliver(catalogue, remaining, now);
    catalogue.live_keys_of(removed, now).into_iter().filter(|k| !still.contains(k)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;
    const T0: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z

    fn key(group: u16, number: u16, from: u64, until: u64) -> KeyEntry {
        KeyEntry {
            id: SekPekId { key_group: group, key_number: number },
            window: Window { from, until },
            revoked_at: None,
        }
    }

    fn schedule() -> KeySchedule {
        KeySchedule::new(30 * DAY, 2 * DAY).unwrap()
    }

    #[test]
    fn windows_and_ntp() {
        assert_eq!(Window::new(5, 5), None);
        let w = Window::new(10, 20).unwrap();
        assert!(w.contains(10) && !w.contains(20));
        assert!(w.overlaps(&Window { from: 19, until: 30 }) && !w.overlaps(&Window { from: 20, until: 30 }));
        assert_eq!(ntp_seconds(0), Some(2_208_988_800));
        assert_eq!(ntp_seconds(T0), Some(3_976_214_400));
        assert_eq!(ntp_seconds(u64::from(u32::MAX)), None, "past the first NTP era");
    }

    #[test]
    fn schedule_validation() {
        assert!(KeySchedule::new(0, 0).is_none());
        assert!(KeySchedule::new(10, 10).is_none(), "a lead as long as the key would make three live keys");
        assert!(KeySchedule::new(10, 9).is_some());
    }

    #[test]
    fn a_group_rolls_over_ahead_of_the_end_with_at_most_two_live_keys() {
        let mut g = KeyGroup::new(1).unwrap();
        let first = g.rollover_due(schedule(), T0).unwrap();
        assert_eq!(
            first,
            NewKey { id: SekPekId { key_group: 1, key_number: 1 }, window: Window { from: T0, until: T0 + 30 * DAY } }
        );
        g.push(KeyEntry { id: first.id, window: first.window, revoked_at: None }).unwrap();
        assert_eq!(g.rollover_due(schedule(), T0 + 27 * DAY), None, "more than the lead left");
        let next = g.rollover_due(schedule(), T0 + 28 * DAY).unwrap();
        assert_eq!(next.id.key_number, 2);
        assert_eq!(next.window, Window { from: T0 + 30 * DAY, until: T0 + 60 * DAY }, "starts where the current ends");
        g.push(KeyEntry { id: next.id, window: next.window, revoked_at: None }).unwrap();
        assert_eq!(g.rollover_due(schedule(), T0 + 29 * DAY), None, "never a third live key");
        let live: Vec<u16> = g.live(T0 + 29 * DAY).map(|k| k.id.key_number).collect();
        assert_eq!(live, [1, 2]);
        assert_eq!(g.current(T0 + 29 * DAY).unwrap().id.key_number, 1);
        assert_eq!(g.current(T0 + 30 * DAY).unwrap().id.key_number, 2);
        let live: Vec<u16> = g.live(T0 + 31 * DAY).map(|k| k.id.key_number).collect();
        assert_eq!(live, [2], "the old key is history now");
        assert_eq!(g.covering(Window { from: T0 + DAY, until: T0 + 2 * DAY }).count(), 1, "history stays");
    }

    #[test]
    fn after_a_gap_the_new_key_starts_now() {
        let g = KeyGroup::with_keys(1, [key(1, 7, T0, T0 + DAY)]).unwrap();
        let k = g.rollover_due(schedule(), T0 + 5 * DAY).unwrap();
        assert_eq!((k.id.key_number, k.window.from), (8, T0 + 5 * DAY));
    }

    #[test]
    fn key_numbers_wrap_past_zero() {
        let g = KeyGroup::with_keys(1, [key(1, u16::MAX, T0, T0 + DAY)]).unwrap();
        assert_eq!(g.rollover_due(schedule(), T0 + DAY - 1).unwrap().id.key_number, 1);
    }

    #[test]
    fn a_revoked_key_is_not_live_and_is_replaced_without_overlap() {
        let mut k = key(1, 1, T0, T0 + 30 * DAY);
        k.revoked_at = Some(T0 + DAY);
        let g = KeyGroup::with_keys(1, [k]).unwrap();
        assert_eq!(g.live(T0 + 2 * DAY).count(), 0);
        let new = g.rollover_due(schedule(), T0 + 2 * DAY).unwrap();
        assert_eq!(new.id.key_number, 2);
        assert_eq!(new.window.from, T0 + 30 * DAY, "after the revoked key's window: no overlap, and the group is dark");
    }

    #[test]
    fn groups_refuse_bad_keys() {
        assert_eq!(KeyGroup::new(0), Err(KeyGroupError::GroupZero));
        let mut g = KeyGroup::with_keys(1, [key(1, 1, T0, T0 + 10)]).unwrap();
        assert!(matches!(g.push(key(2, 2, T0 + 10, T0 + 20)), Err(KeyGroupError::OtherGroup { .. })));
        assert_eq!(g.push(key(1, 0, T0 + 10, T0 + 20)), Err(KeyGroupError::KeyNumberZero));
        assert!(matches!(g.push(key(1, 2, T0 + 5, T0 + 20)), Err(KeyGroupError::Overlap { .. })));
        assert!(g.push(key(1, 2, T0 + 10, T0 + 20)).is_ok());
    }

    fn catalogue() -> Catalogue {
        let kd = KeyDomainId::from_mcc_mnc("001", "01").unwrap();
        let service = |id: &str, group| Service {
            id: ServiceId(id.into()),
            name: id.into(),
            key_domain: kd,
            key_group: group,
            streaming: true,
        };
        let mut c = Catalogue::default();
        for (id, group) in [("news", 1), ("sport", 2)] {
            c.services.insert(ServiceId(id.into()), service(id, group));
        }
        let item = |id: &str, services: &[&str]| PurchaseItem {
            global_id: id.into(),
            name: id.into(),
            services: services.iter().map(|s| ServiceId((*s).into())).collect(),
        };
        c.items.insert("basic".into(), item("basic", &["news"]));
        c.items.insert("all".into(), item("all", &["news", "sport"]));
        c.programs.insert(
            ProgramId("final".into()),
            Program {
                id: ProgramId("final".into()),
                service: ServiceId("sport".into()),
                key_group: 100,
                window: Window { from: T0 + 10 * DAY, until: T0 + 10 * DAY + 7200 },
            },
        );
        c.groups.insert(
            1,
            KeyGroup::with_keys(1, [key(1, 1, T0, T0 + 30 * DAY), key(1, 2, T0 + 30 * DAY, T0 + 60 * DAY)]).unwrap(),
        );
        c.groups.insert(2, KeyGroup::with_keys(2, [key(2, 1, T0, T0 + 30 * DAY)]).unwrap());
        c.groups.insert(100, KeyGroup::with_keys(100, [key(100, 1, T0 + 10 * DAY, T0 + 10 * DAY + 7200)]).unwrap());
        c
    }

    fn purchase(item: &str, kind: PurchaseKind, from: u64, until: u64) -> Purchase {
        Purchase {
            terminal: TerminalId("t@x".into()),
            item: item.into(),
            purchase_data: format!("{item}-offer"),
            kind,
            window: Window { from, until },
        }
    }

    fn ids(set: &BTreeSet<SekPekId>) -> Vec<(u16, u16)> {
        set.iter().map(|k| (k.key_group, k.key_number)).collect()
    }

    #[test]
    fn a_subscription_gets_the_live_keys_it_overlaps() {
        let c = catalogue();
        let month = purchase("basic", PurchaseKind::Subscription, T0, T0 + 30 * DAY);
        assert_eq!(
            ids(&keys_to_deliver(&c, std::slice::from_ref(&month), T0 + DAY)),
            [(1, 1)],
            "the next key starts after it ends"
        );
        let two = purchase("basic", PurchaseKind::Subscription, T0, T0 + 45 * DAY);
        assert_eq!(ids(&keys_to_deliver(&c, &[two], T0 + 29 * DAY)), [(1, 1), (1, 2)]);
        assert!(keys_to_deliver(&c, &[month], T0 + 31 * DAY).is_empty(), "an ended purchase gives nothing");
    }

    #[test]
    fn pay_per_view_gets_the_program_key_only() {
        let c = catalogue();
        let ppv = purchase("all", PurchaseKind::PayPerView(ProgramId("final".into())), T0, T0 + 60 * DAY);
        assert_eq!(ids(&keys_to_deliver(&c, &[ppv], T0 + DAY)), [(100, 1)]);
        let unknown = purchase("all", PurchaseKind::PayPerView(ProgramId("none".into())), T0, T0 + DAY);
        assert!(keys_to_deliver(&c, &[unknown], T0).is_empty());
    }

    #[test]
    fn unsubscribe_invalidates_only_keys_no_other_purchase_needs() {
        let c = catalogue();
        let all = purchase("all", PurchaseKind::Subscription, T0, T0 + 30 * DAY);
        let basic = purchase("basic", PurchaseKind::PayPerTime, T0, T0 + 30 * DAY);
        assert_eq!(
            ids(&keys_to_invalidate(&c, &all, std::slice::from_ref(&basic), T0 + DAY)),
            [(2, 1)],
            "news stays for basic"
        );
        assert_eq!(ids(&keys_to_invalidate(&c, &all, &[], T0 + DAY)), [(1, 1), (2, 1)]);
        assert_eq!(ids(&keys_to_invalidate(&c, &basic, &[all], T0 + DAY)), Vec::<(u16, u16)>::new());
    }

    proptest::proptest! {
        /// Run by a clock that ticks more often than the lead, a group never has a gap, never
        /// overlaps, never has more than two live keys, and always has a current key.
        #[test]
        fn rollover_keeps_keys_continuous(
            lifetime in 60u64..(60 * DAY),
            lead_share in 1u64..100,
            ticks in 1usize..400,
            tick_share in 1u64..100,
        ) {
            let lead = (lifetime * lead_share / 100).clamp(1, lifetime - 1);
            let schedule = KeySchedule::new(lifetime, lead).unwrap();
            let step = (lead * tick_share / 100).max(1);
            let mut g = KeyGroup::new(9).unwrap();
            let mut now = T0;
            for _ in 0..ticks {
                if let Some(k) = g.rollover_due(schedule, now) {
                    g.push(KeyEntry { id: k.id, window: k.window, revoked_at: None }).unwrap();
                }
                proptest::prop_assert!(g.current(now).is_some());
                proptest::prop_assert!(g.live(now).count() <= 2);
                now += step;
            }
            for pair in g.keys().windows(2) {
                proptest::prop_assert_eq!(pair[0].window.until, pair[1].window.from);
                proptest::prop_assert_ne!(pair[1].id.key_number, 0);
            }
        }
    }
}
