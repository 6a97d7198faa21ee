//! [`Guide`]: a set of fragments, the consistency checks across them, and the lookups a
//! terminal needs ("which services can I buy, how, at what price").

use crate::entry::user_service_id;
use crate::error::GuideError;
use crate::fragments::{Access, Content, Fragment, PurchaseChannel, PurchaseData, PurchaseItem, Service};
use std::collections::BTreeMap;

/// A set of Service Guide fragments keyed by `id`.
///
/// A fragment replaces a held one with the same `id` when its `version` is the same or higher;
/// an older version is ignored **\[chosen\]**.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Guide {
    /// Service fragments.
    pub services: BTreeMap<String, Service>,
    /// Content fragments.
    pub contents: BTreeMap<String, Content>,
    /// Access fragments.
    pub accesses: BTreeMap<String, Access>,
    /// PurchaseItem fragments.
    pub purchase_items: BTreeMap<String, PurchaseItem>,
    /// PurchaseData fragments.
    pub purchase_data: BTreeMap<String, PurchaseData>,
    /// PurchaseChannel fragments.
    pub purchase_channels: BTreeMap<String, PurchaseChannel>,
}

/// One way to buy: a PurchaseItem with one of its PurchaseData and the channels to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer<'g> {
    /// The PurchaseItem.
    pub purchase_item: &'g PurchaseItem,
    /// The PurchaseData (price, period, tokens).
    pub purchase_data: &'g PurchaseData,
    /// The PurchaseChannels the PurchaseData names (those the guide holds).
    pub channels: Vec<&'g PurchaseChannel>,
    /// GlobalPurchaseItemID ‖ PurchaseDataID.
    pub user_service_id: String,
}

/// A service with its Access fragments and the offers that include it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceOffers<'g> {
    /// The Service.
    pub service: &'g Service,
    /// Access fragments referring to the service.
    pub accesses: Vec<&'g Access>,
    /// Offers whose PurchaseItem names the service (directly, or through a Content of it).
    pub offers: Vec<Offer<'g>>,
}

fn put<T>(map: &mut BTreeMap<String, T>, id: &str, version: u32, v: T, ver: impl Fn(&T) -> u32) -> bool {
    match map.get(id) {
        Some(old) if ver(old) > version => false,
        _ => {
            map.insert(id.to_owned(), v);
            true
        }
    }
}

impl Guide {
    /// An empty guide.
    #[must_use]
    pub fn new() -> Self {
        Guide::default()
    }

    /// Adds a fragment; returns false (and changes nothing) when a newer version of it is
    /// already held.
    pub fn insert(&mut self, f: Fragment) -> bool {
        match f {
            Fragment::Service(s) => put(&mut self.services, &s.id.clone(), s.version, s, |o| o.version),
            Fragment::Content(s) => put(&mut self.contents, &s.id.clone(), s.version, s, |o| o.version),
            Fragment::Access(s) => put(&mut self.accesses, &s.id.clone(), s.version, s, |o| o.version),
            Fragment::PurchaseItem(s) => put(&mut self.purchase_items, &s.id.clone(), s.version, s, |o| o.version),
            Fragment::PurchaseData(s) => put(&mut self.purchase_data, &s.id.clone(), s.version, s, |o| o.version),
            Fragment::PurchaseChannel(s) => {
                put(&mut self.purchase_channels, &s.id.clone(), s.version, s, |o| o.version)
            }
        }
    }

    /// Decodes a fragment and adds it.
    ///
    /// # Errors
    /// As [`Fragment::from_xml`].
    pub fn insert_xml(&mut self, xml: &str) -> Result<bool, GuideError> {
        Ok(self.insert(Fragment::from_xml(xml)?))
    }

    /// Every fragment, encoded, in a fixed order (services, contents, accesses, purchase
    /// items, purchase data, purchase channels; each by id).
    #[must_use]
    pub fn to_xml_fragments(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        v.extend(self.services.values().map(Service::to_xml));
        v.extend(self.contents.values().map(Content::to_xml));
        v.extend(self.accesses.values().map(Access::to_xml));
        v.extend(self.purchase_items.values().map(PurchaseItem::to_xml));
        v.extend(self.purchase_data.values().map(PurchaseData::to_xml));
        v.extend(self.purchase_channels.values().map(PurchaseChannel::to_xml));
        v
    }

    /// Checks that every reference resolves: PurchaseData → PurchaseItem and PurchaseChannel,
    /// PurchaseItem → Service and Content, Access → Service, Content → Service.
    ///
    /// # Errors
    /// Every [`GuideError::DanglingReference`] found, in a fixed order.
    pub fn check(&self) -> Result<(), Vec<GuideError>> {
        let mut errors = Vec::new();
        let mut dangling = |fragment, id: &str, element, target: &str| {
            errors.push(GuideError::DanglingReference {
                fragment,
                id: id.to_owned(),
                element,
                target: target.to_owned(),
            });
        };
        for d in self.purchase_data.values() {
            if !self.purchase_items.contains_key(&d.purchase_item_ref) {
                dangling("PurchaseData", &d.id, "PurchaseItemReference", &d.purchase_item_ref);
            }
            for c in d.purchase_channel_refs.iter().filter(|c| !self.purchase_channels.contains_key(*c)) {
                dangling("PurchaseData", &d.id, "PurchaseChannelReference", c);
            }
        }
        for p in self.purchase_items.values() {
            for s in p.service_refs.iter().filter(|s| !self.services.contains_key(*s)) {
                dangling("PurchaseItem", &p.id, "ServiceReference", s);
            }
            for c in p.content_refs.iter().filter(|c| !self.contents.contains_key(*c)) {
                dangling("PurchaseItem", &p.id, "ContentReference", c);
            }
        }
        for a in self.accesses.values() {
            for s in a.service_refs.iter().filter(|s| !self.services.contains_key(*s)) {
                dangling("Access", &a.id, "ServiceReference", s);
            }
        }
        for c in self.contents.values() {
            for s in c.service_refs.iter().filter(|s| !self.services.contains_key(*s)) {
                dangling("Content", &c.id, "ServiceReference", s);
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    /// Every offer (PurchaseData with a PurchaseItem the guide holds), ordered by PurchaseData
    /// id.
    #[must_use]
    pub fn offers(&self) -> Vec<Offer<'_>> {
        self.purchase_data
            .values()
            .filter_map(|d| {
                let item = self.purchase_items.get(&d.purchase_item_ref)?;
                Some(Offer {
                    purchase_item: item,
                    purchase_data: d,
                    channels: d.purchase_channel_refs.iter().filter_map(|c| self.purchase_channels.get(c)).collect(),
                    user_service_id: user_service_id(item, d),
                })
            })
            .collect()
    }

    /// The offers that include service `service_id`, directly or through a Content of it.
    #[must_use]
    pub fn offers_for_service(&self, service_id: &str) -> Vec<Offer<'_>> {
        self.offers().into_iter().filter(|o| self.item_covers(o.purchase_item, service_id)).collect()
    }

    fn item_covers(&self, item: &PurchaseItem, service_id: &str) -> bool {
        item.service_refs.iter().any(|s| s == service_id)
            || item
                .content_refs
                .iter()
                .filter_map(|c| self.contents.get(c))
                .any(|c| c.service_refs.iter().any(|s| s == service_id))
    }

    /// The Access fragments of service `service_id`.
    #[must_use]
    pub fn accesses_for_service(&self, service_id: &str) -> Vec<&Access> {
        self.accesses.values().filter(|a| a.service_refs.iter().any(|s| s == service_id)).collect()
    }

    /// Every service with its accesses and offers, ordered by service id.
    #[must_use]
    pub fn services_with_offers(&self) -> Vec<ServiceOffers<'_>> {
        self.services
            .values()
            .map(|s| ServiceOffers {
                service: s,
                accesses: self.accesses_for_service(&s.id),
                offers: self.offers_for_service(&s.id),
            })
            .collect()
    }

    /// The PurchaseItem and PurchaseData whose GlobalPurchaseItemID ‖ PurchaseDataID is
    /// `user_service_id` (the inverse of [`user_service_id`]).
    #[must_use]
    pub fn offer_by_user_service_id(&self, user_service_id: &str) -> Option<Offer<'_>> {
        self.offers().into_iter().find(|o| o.user_service_id == user_service_id)
    }
}
