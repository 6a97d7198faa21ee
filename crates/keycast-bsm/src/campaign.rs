//! Key campaigns (issue 5; `profile: P-3, P-8`): when a SEK/PEK is made, or its window is moved,
//! every registered terminal entitled to it gets a push, spread over a window so that a million
//! terminals do not all answer at once (seed: manage network congestion).
//!
//! A campaign is a store row made in the same transaction as its cause
//! ([`BsmStore::add_key_campaign`], [`BsmStore::update_key_until`]), so a key is never made
//! without its pushes. [`CampaignRunner`] walks the terminals with purchases in IMPI order, a page
//! at a time; each page's deliveries and the campaign's cursor are stored in one transaction
//! ([`BsmStore::advance_campaign`]). A runner killed mid-campaign therefore resumes after the last
//! stored page, and a page stored twice by two runners is refused to the second
//! ([`StoreError::NotClaimed`]): every terminal ends with exactly one delivery of the key. The
//! push worker ([`crate::push`]) then sends the rows when they are due.
//!
//! # What a terminal gets \[chosen\]
//! - **Deliver** (a new key): the key with the terminal's window (the key's window cut to its
//!   purchases) and the P-4 policy of its purchase, as a Service Request's answer would carry it;
//!   a terminal whose purchases do not reach into the key's window gets nothing.
//! - **Update validity** (the key's end moved): an LTKM with the new window, only to terminals
//!   whose window changes (a purchase ending before both ends leaves it as it was); a terminal
//!   that never had a delivery of the key gets the key itself.
//! - Due times are spaced evenly over `[created, created + spread)` in the order the terminals are
//!   walked (the k-th of n terminals at `k/n` of the spread, n counted when the run starts), plus
//!   up to [`JITTER`] of random delay; the spread is cut so that a new key arrives before its
//!   window opens when the campaign starts ahead of it. Evenly spaced rather than drawn at random
//!   because the push rate is then flat, and because rows whose due times follow their insertion
//!   order are cheap to index (a million random due times cost the store several times more).
//! - Metrics: `keycast_bsm_campaign_terminals_total` (terminals looked at),
//!   `keycast_bsm_campaign_deliveries_total` (rows stored), `keycast_bsm_campaigns_finished_total`.
//! - Entitlement is judged at the later of now and the key's start, with the catalogue as it is
//!   when the runner starts (or resumes) the campaign.

use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use crate::delivery::{Delivery, DeliveryKey, DeliveryRow, DeliveryState, PushAddress, RegistrationInterface, Time};
use crate::issue::LtkmKind;
use crate::rng::RandomSource;
use crate::service::{Provisioning, ServiceError, View, entitlements, ts_window};
use crate::store::{BsmStore, Campaign, CampaignKind, CampaignTarget, Interface, LtkmForm, StoreError};

/// Terminals per page \[chosen\]: large enough for multi-row statements to pay off, small enough
/// that a crash loses little work and a page's transaction stays short.
pub const DEFAULT_PAGE: u32 = 2_000;

/// Most random delay added to a campaign delivery's slot.
pub const JITTER: Duration = Duration::from_secs(1);

/// Why a campaign could not go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CampaignError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The catalogue could not be read, or a window cannot be carried.
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// Runs key campaigns over a store (module docs).
pub struct CampaignRunner<S, R> {
    provisioning: Provisioning<S>,
    page: u32,
    rng: Mutex<R>,
}

impl<S, R> core::fmt::Debug for CampaignRunner<S, R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CampaignRunner").field("page", &self.page).finish_non_exhaustive()
    }
}

impl<S: BsmStore + Sync, R: RandomSource + Send> CampaignRunner<S, R> {
    /// A runner over the provisioning logic's store and configuration (its ROC rate shapes
    /// streaming keys' LTKMs), drawing due times from `rng`.
    #[must_use]
    pub fn new(provisioning: Provisioning<S>, rng: R) -> Self {
        Self { provisioning, page: DEFAULT_PAGE, rng: Mutex::new(rng) }
    }

    /// Terminals per page (at least 1).
    #[must_use]
    pub fn with_page(mut self, page: u32) -> Self {
        self.page = page.max(1);
        self
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &S {
        self.provisioning.store()
    }

    /// Runs every open campaign to its end, oldest first; `progress` sees each campaign after
    /// every page. Returns the campaigns as they ended.
    ///
    /// # Errors
    /// [`CampaignError`]: what was stored before stays stored; the next run resumes there.
    pub async fn run_open(
        &self,
        now: u64,
        mut progress: impl FnMut(&Campaign),
    ) -> Result<Vec<Campaign>, CampaignError> {
        let mut open = self.store().campaigns(true).await?;
        open.reverse();
        let mut done = Vec::with_capacity(open.len());
        for c in open {
            done.push(self.run(c, now, &mut progress).await?);
        }
        Ok(done)
    }

    /// Runs one campaign from its cursor to its end (module docs).
    ///
    /// # Errors
    /// [`CampaignError`]: what was stored before stays stored; the next run resumes there.
    pub async fn run(
        &self,
        mut campaign: Campaign,
        now: u64,
        mut progress: impl FnMut(&Campaign),
    ) -> Result<Campaign, CampaignError> {
        let view = self.provisioning.view().await?;
        let total = self.store().subscribers().await?.max(1);
        while campaign.finished_at.is_none() {
            match self.page(&view, &campaign, now, total).await {
                Ok(next) => {
                    campaign = next;
                    progress(&campaign);
                }
                Err(CampaignError::Store(StoreError::NotClaimed(why))) => {
                    // Another runner stored this page: carry on from where it got. Each refusal
                    // means that runner moved the cursor, so this loop ends with the campaign.
                    tracing::debug!(campaign = campaign.id, %why, "campaign page taken by another runner");
                    let fresh = self.store().campaigns(false).await?.into_iter().find(|c| c.id == campaign.id);
                    match fresh {
                        Some(fresh) if fresh.cursor != campaign.cursor || fresh.finished_at.is_some() => {
                            campaign = fresh;
                        }
                        _ => return Err(StoreError::NotClaimed(why).into()),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        tracing::info!(
            campaign = campaign.id,
            key_group = campaign.key.id.key_group,
            key_number = campaign.key.id.key_number,
            terminals = campaign.terminals,
            queued = campaign.queued,
            "campaign finished"
        );
        Ok(campaign)
    }

    /// Stores one page; returns the campaign after it.
    async fn page(&self, view: &View, campaign: &Campaign, now: u64, total: u64) -> Result<Campaign, CampaignError> {
        let after = campaign.cursor.as_deref();
        let page = self.store().campaign_page(campaign, after, self.page).await?;
        let mut rows = Vec::with_capacity(page.targets.len());
        // The page's terminals take the slots after those already walked; a page's registered
        // terminals share its span of slots evenly.
        let first = campaign.terminals;
        let count = page.targets.len().max(1) as u64;
        for (k, target) in page.targets.iter().enumerate() {
            let position = first + page.looked_at * k as u64 / count;
            if let Some(row) = self.row(view, campaign, target, now, (position, total))? {
                rows.push(row);
            }
        }
        let finished = page.last.is_none().then_some(now);
        let last = page.last.as_deref().or(after);
        let stored = self.store().advance_campaign(campaign.id, after, last, &rows, page.looked_at, finished).await?;
        metrics::counter!("keycast_bsm_campaign_terminals_total").increment(page.looked_at);
        metrics::counter!("keycast_bsm_campaign_deliveries_total").increment(stored);
        if finished.is_some() {
            metrics::counter!("keycast_bsm_campaigns_finished_total").increment(1);
        }
        let mut next = campaign.clone();
        next.cursor = last.map(str::to_owned);
        next.terminals += page.looked_at;
        next.queued += stored;
        next.finished_at = finished;
        Ok(next)
    }

    /// The delivery one terminal gets, if any (module docs).
    fn row(
        &self,
        view: &View,
        campaign: &Campaign,
        target: &CampaignTarget,
        now: u64,
        slot: (u64, u64),
    ) -> Result<Option<(DeliveryRow, LtkmForm)>, CampaignError> {
        let key = &campaign.key;
        if key.revoked_at.is_some() || key.window.until <= now {
            return Ok(None);
        }
        let at = now.max(key.window.from);
        let grants = entitlements(view, &target.purchases, at);
        let Some(grant) = grants.get(&key.id) else { return Ok(None) };
        let validity = ts_window(grant.window)?;
        let kind = match (campaign.kind, target.latest_version) {
            (CampaignKind::Deliver, _) | (CampaignKind::UpdateValidity { .. }, None) => LtkmKind::Deliver { validity },
            (CampaignKind::UpdateValidity { old_until }, Some(_)) => {
                let end = grant.window.until;
                // The terminal's old end was min(old key end, its purchases' end); when the new
                // end is cut by its purchases, that end is `end` itself.
                let changed = if end < key.window.until { old_until < end } else { old_until != key.window.until };
                if !changed {
                    return Ok(None);
                }
                LtkmKind::UpdateValidity { validity }
            }
        };
        let Some(ip) = ip_of(&target.registration.address) else {
            tracing::warn!(terminal = %target.terminal.0, "stored registration address does not parse; no push");
            return Ok(None);
        };
        let interface = match target.registration.interface {
            Interface::Mbms => RegistrationInterface::Mbms,
            Interface::OmaBcast => RegistrationInterface::OmaBcast,
        };
        let version = target
            .latest_version
            .unwrap_or(0)
            .checked_add(1)
            .ok_or_else(|| StoreError::Conflict(format!("delivery versions of {} exhausted", target.terminal.0)))?;
        let delivery = Delivery {
            key: DeliveryKey {
                terminal: target.terminal.0.clone(),
                key_domain_id: campaign.key_domain,
                sek_pek_id: key.id,
                version,
            },
            kind,
            to: PushAddress { ip, interface },
        };
        let row = DeliveryRow {
            delivery,
            state: DeliveryState::Pending,
            due: Some(self.due(campaign, slot)),
            sent: Vec::new(),
        };
        let form = LtkmForm {
            ext: Some(self.provisioning.config().ext_for(key.id.key_group, grant.policy)),
            streaming: self.provisioning.streaming_of(view, key.id.key_group),
        };
        Ok(Some((row, form)))
    }

    /// The due time of slot `position` of `total` (module docs).
    fn due(&self, campaign: &Campaign, (position, total): (u64, u64)) -> Time {
        let mut spread = campaign.spread;
        if campaign.key.window.from > campaign.created_at {
            spread = spread.min(Duration::from_secs(campaign.key.window.from - campaign.created_at));
        }
        let span = spread.as_micros();
        let offset = span * u128::from(position.min(total)) / u128::from(total.max(1));
        let jitter = u64::try_from(JITTER.min(spread).as_micros()).unwrap_or(0);
        let jitter = if jitter == 0 {
            0
        } else {
            // The generator is left whole by every draw, so a poisoned lock still guards a usable one.
            let mut rng = self.rng.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            rng.next_u64() % jitter
        };
        let due = Time::from_secs(campaign.created_at)
            .after(Duration::from_micros(u64::try_from(offset).unwrap_or(u64::MAX)))
            .after(Duration::from_micros(jitter));
        // Never past the end of the spread.
        let end = Time::from_secs(campaign.created_at).after(spread);
        if spread.is_zero() || due < end {
            due
        } else {
            Time::from_micros(end.as_micros().saturating_sub(1).max(Time::from_secs(campaign.created_at).as_micros()))
        }
    }
}

/// The IP of a stored registration address (`ip:port` or a bare IP).
fn ip_of(address: &str) -> Option<IpAddr> {
    address.parse::<SocketAddr>().map(|a| a.ip()).or_else(|_| address.parse::<IpAddr>()).ok()
}
