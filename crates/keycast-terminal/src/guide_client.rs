//! Loading the Service Guide the BSM publishes (`GET /guide/v1/…`, see keycast-bsm
//! `http::guide`) and deciding what to do for a chosen offer.
//!
//! [`GuideClient::load`] fetches the index, every fragment it lists and every Service
//! Protection Description and USD, over keycast-gba's HTTP client (the one the shell uses);
//! parses them with keycast-guide and runs [`Guide::check`]. [`LoadedGuide::offers`] answers
//! "which services can I buy, at what price"; [`LoadedGuide::resolve`] turns a chosen offer into
//! an [`Action`]: the user goes to the portal when the offer's PurchaseChannel has a PortalURL
//! **\[chosen\]** (the portal then handles the purchase), else a Service Request to the
//! channel's PurchaseURL, with what the entry point via the session description (seed §6.8.1.2,
//! [`keycast_guide::via_session_description`]) says about the keys.
//!
//! \[chosen\] Documents are fetched by the path of the URL the index lists, from the address
//! the client was made for (the BSM's provisioning listener): the URLs' host part names the
//! BSM as terminals outside see it, which need not resolve where the terminal runs. At most
//! [`MAX_DOCUMENTS`] documents are fetched.

use std::collections::BTreeMap;

use keycast_gba::client::HttpRequest;
use keycast_gba::client::http::{HttpClient, HttpClientError, UbTransport as _};
use keycast_guide::fragments::{MonetaryPrice, TotalNumberToken};
use keycast_guide::sdp::Sdp;
use keycast_guide::spd::{SecurityDescription, parse_spd};
use keycast_guide::usd::UserServiceBundle;
use keycast_guide::{Guide, GuideError, ProtectedService, via_session_description};
use keycast_provisioning::sprov::{Price, PurchaseItemRef, PurchaseRequestItem};

/// Path of the guide index on the BSM.
pub const INDEX_PATH: &str = "/guide/v1/index.json";
/// Most documents one load fetches \[chosen\].
pub const MAX_DOCUMENTS: usize = 4096;

/// Why the guide cannot be loaded or an offer resolved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GuideClientError {
    /// The HTTP exchange failed.
    #[error("guide: {0}")]
    Http(#[from] HttpClientError),
    /// The BSM answered with another status than 200.
    #[error("guide: GET {path}: status {status}")]
    Status {
        /// The path.
        path: String,
        /// The status.
        status: u16,
    },
    /// The index is not what the publisher writes.
    #[error("guide index: {0}")]
    Index(String),
    /// A document does not parse.
    #[error("guide: {0}")]
    Guide(#[from] GuideError),
    /// The fragments do not hold together.
    #[error("guide: {} dangling reference(s), first: {}", .0.len(), .0.first().map(ToString::to_string).unwrap_or_default())]
    Inconsistent(Vec<GuideError>),
    /// No offer has this User Service ID.
    #[error("guide: no offer `{0}`")]
    UnknownOffer(String),
    /// The offer covers no service with a Smartcard Profile Access fragment.
    #[error("guide: offer `{0}` names no service with a Smartcard Profile Access fragment")]
    NoAccess(String),
    /// The Access fragment names a Service Protection Description the guide does not hold, or
    /// carries no SDP.
    #[error("guide: Access `{0}` lacks its session or protection description")]
    NoDescription(String),
    /// The offer's PurchaseChannel has neither a PortalURL nor a PurchaseURL.
    #[error("guide: offer `{0}` has no PurchaseURL or PortalURL")]
    NoPurchaseChannel(String),
}

/// What to do for a chosen offer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Send a Service Request for the offer to `purchase_url`.
    ServiceRequest {
        /// The PurchaseChannel's PurchaseURL (the BSM's provisioning URL).
        purchase_url: String,
        /// GlobalPurchaseItemID.
        global_purchase_item_id: String,
        /// PurchaseDataID.
        purchase_data_id: String,
        /// The price shown (the first MonetaryPrice), if any.
        price: Option<Price>,
        /// What the entry point via the session description gives (key management servers,
        /// MSKs, key groups, the User Service ID).
        service: Box<ProtectedService>,
    },
    /// Send the user to this portal instead.
    Portal(String),
}

impl Action {
    /// The Service Request item of a [`Action::ServiceRequest`].
    #[must_use]
    pub fn purchase_request_item(&self) -> Option<PurchaseRequestItem> {
        match self {
            Action::ServiceRequest { global_purchase_item_id, purchase_data_id, price, .. } => {
                Some(PurchaseRequestItem {
                    item: PurchaseItemRef::new(global_purchase_item_id, Some(purchase_data_id)),
                    price: price.clone(),
                })
            }
            Action::Portal(_) => None,
        }
    }
}

/// One offer as a user picks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferSummary {
    /// GlobalPurchaseItemID ‖ PurchaseDataID (what [`LoadedGuide::resolve`] takes).
    pub user_service_id: String,
    /// GlobalPurchaseItemID.
    pub global_purchase_item_id: String,
    /// PurchaseDataID.
    pub purchase_data_id: String,
    /// Prices.
    pub prices: Vec<MonetaryPrice>,
    /// SubscriptionPeriod (xs:duration), if any.
    pub subscription_period: Option<String>,
    /// Tokens, if a token offer.
    pub tokens: Option<TotalNumberToken>,
    /// PortalURL of its channel, if any.
    pub portal_url: Option<String>,
}

/// A service with its offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSummary {
    /// Service fragment id.
    pub service_id: String,
    /// globalServiceID.
    pub global_service_id: Option<String>,
    /// First Name.
    pub name: Option<String>,
    /// Its offers.
    pub offers: Vec<OfferSummary>,
}

/// The loaded, checked guide with its descriptions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadedGuide {
    /// The fragments.
    pub guide: Guide,
    /// Service Protection Descriptions by the URL the index lists.
    pub spds: BTreeMap<String, SecurityDescription>,
    /// USDs by the URL the index lists.
    pub usds: BTreeMap<String, UserServiceBundle>,
    /// The index version.
    pub version: u64,
}

impl LoadedGuide {
    /// Every service with its offers and prices, ordered by service id.
    #[must_use]
    pub fn offers(&self) -> Vec<ServiceSummary> {
        self.guide
            .services_with_offers()
            .into_iter()
            .map(|s| ServiceSummary {
                service_id: s.service.id.clone(),
                global_service_id: s.service.global_service_id.clone(),
                name: s.service.names.first().cloned(),
                offers: s
                    .offers
                    .iter()
                    .map(|o| {
                        let pi = o.purchase_data.price_info.clone().unwrap_or_default();
                        OfferSummary {
                            user_service_id: o.user_service_id.clone(),
                            global_purchase_item_id: o.purchase_item.global_purchase_item_id.clone(),
                            purchase_data_id: o.purchase_data.id.clone(),
                            prices: pi.prices,
                            subscription_period: pi.subscription_period,
                            tokens: pi.tokens,
                            portal_url: o.channels.iter().flat_map(|c| &c.portal_urls).next().map(|p| p.url.clone()),
                        }
                    })
                    .collect(),
            })
            .collect()
    }

    /// What to do for the offer `user_service_id` (GlobalPurchaseItemID ‖ PurchaseDataID).
    ///
    /// # Errors
    /// [`GuideClientError::UnknownOffer`], [`GuideClientError::NoPurchaseChannel`],
    /// [`GuideClientError::NoAccess`], [`GuideClientError::NoDescription`], or what
    /// [`via_session_description`] finds.
    pub fn resolve(&self, user_service_id: &str) -> Result<Action, GuideClientError> {
        let offer = self
            .guide
            .offer_by_user_service_id(user_service_id)
            .ok_or_else(|| GuideClientError::UnknownOffer(user_service_id.to_owned()))?;
        if let Some(p) = offer.channels.iter().flat_map(|c| &c.portal_urls).next() {
            return Ok(Action::Portal(p.url.clone()));
        }
        let purchase_url = offer
            .channels
            .iter()
            .flat_map(|c| &c.purchase_urls)
            .next()
            .ok_or_else(|| GuideClientError::NoPurchaseChannel(user_service_id.to_owned()))?
            .clone();
        // The first service of the item with a Smartcard Profile Access fragment.
        let access = offer
            .purchase_item
            .service_refs
            .iter()
            .flat_map(|s| self.guide.accesses_for_service(s))
            .find(|a| a.smartcard_systems().next().is_some())
            .ok_or_else(|| GuideClientError::NoAccess(user_service_id.to_owned()))?;
        let no_description = || GuideClientError::NoDescription(access.id.clone());
        let rights_issuer = access
            .smartcard_systems()
            .find_map(|k| k.permissions_issuer_uri.as_ref())
            .ok_or_else(no_description)?
            .uri
            .as_str();
        let spd = self.spds.get(rights_issuer).ok_or_else(no_description)?;
        let sdp_text = access.session_description().and_then(|sd| sd.sdp.as_deref()).ok_or_else(no_description)?;
        let sdp = Sdp::parse(sdp_text)?;
        let service =
            via_session_description(access, offer.purchase_item, offer.purchase_data, &sdp, spd, rights_issuer)?;
        let price = offer
            .purchase_data
            .price_info
            .as_ref()
            .and_then(|p| p.prices.first())
            .map(|p| Price { amount: p.amount.clone(), currency: p.currency.clone() });
        Ok(Action::ServiceRequest {
            purchase_url,
            global_purchase_item_id: offer.purchase_item.global_purchase_item_id.clone(),
            purchase_data_id: offer.purchase_data.id.clone(),
            price,
            service: Box::new(service),
        })
    }
}

/// Fetches the guide from a BSM's provisioning listener.
#[derive(Debug)]
pub struct GuideClient {
    http: HttpClient,
    host: String,
}

/// The path (and query) of an absolute or relative URL.
fn path_of(url: &str) -> &str {
    match url.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => url,
    }
}

impl GuideClient {
    /// A client over `http`, sending `Host: host`.
    #[must_use]
    pub fn new(http: HttpClient, host: &str) -> Self {
        GuideClient { http, host: host.to_owned() }
    }

    async fn get(&mut self, path: &str) -> Result<String, GuideClientError> {
        let request = HttpRequest {
            method: "GET".into(),
            uri: path.to_owned(),
            headers: vec![("Host".into(), self.host.clone())],
            body: Vec::new(),
        };
        let r = self.http.send(&request).await?;
        if r.status != 200 {
            return Err(GuideClientError::Status { path: path.to_owned(), status: r.status });
        }
        String::from_utf8(r.body).map_err(|_| GuideClientError::Index(format!("{path}: not UTF-8")))
    }

    /// Loads the index and every document it lists, and checks the fragments.
    ///
    /// # Errors
    /// [`GuideClientError`].
    pub async fn load(&mut self) -> Result<LoadedGuide, GuideClientError> {
        let index: serde_json::Value =
            serde_json::from_str(&self.get(INDEX_PATH).await?).map_err(|e| GuideClientError::Index(e.to_string()))?;
        let urls = |list: &str| -> Vec<String> {
            index
                .get(list)
                .and_then(serde_json::Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|e| e.get("url").and_then(serde_json::Value::as_str).map(str::to_owned))
                .collect()
        };
        let (fragments, spds, usds) = (urls("fragments"), urls("spd"), urls("usd"));
        if fragments.len() + spds.len() + usds.len() > MAX_DOCUMENTS {
            return Err(GuideClientError::Index(format!("more than {MAX_DOCUMENTS} documents")));
        }
        let mut out = LoadedGuide {
            version: index.get("version").and_then(serde_json::Value::as_u64).unwrap_or(0),
            ..LoadedGuide::default()
        };
        for url in &fragments {
            let xml = self.get(path_of(url)).await?;
            out.guide.insert_xml(&xml)?;
        }
        out.guide.check().map_err(GuideClientError::Inconsistent)?;
        for url in spds {
            let xml = self.get(path_of(&url)).await?;
            out.spds.insert(url, parse_spd(&xml)?);
        }
        for url in usds {
            let xml = self.get(path_of(&url)).await?;
            out.usds.insert(url, UserServiceBundle::from_xml(&xml)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::path_of;

    #[test]
    fn paths_of_urls() {
        assert_eq!(path_of("http://bsm.example.org:8081/guide/v1/x.xml"), "/guide/v1/x.xml");
        assert_eq!(path_of("https://bsm"), "/");
        assert_eq!(path_of("/guide/v1/index.json"), "/guide/v1/index.json");
    }
}
