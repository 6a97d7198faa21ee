//! The USIM emulator: the 3G and GBA security contexts (TS 31.102 §7.1.1.4, §7.1.2; TS 33.220
//! §5.3.2 for GBA_U), Local Key Establishment (TS 33.110 Annex B; profile P-10) and the MBMS
//! context ([`crate::mbms`]), as typed operations. The APDU layer ([`crate::apdu`]) calls these.

use core::fmt;

use keycast_crypto::gba::{self, LocalKeyParams, NafId, UA_PROTOCOL_MBMS};
use keycast_crypto::hmac::{ct_eq, hmac_sha256};
use keycast_crypto::keys::Ks;
use keycast_crypto::keys::{Ck, Ik, KsExtNaf, KsIntNaf, Opc, Res, Smk, SubscriberKey};
use keycast_crypto::milenage::{Milenage, SqnWindow, flip_res_lsb, sqn_to_u64};
use keycast_mikey::{KeyDomainId, SekPekId};

use crate::error::CardError;
use crate::mbms::{AuditCounters, MbmsStore, MskUpdate, MtkAnswer};
use crate::sac::{LocalKeyIds, LocalKeyStatus, SecureChannel};

/// Who the card is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsimIdentity {
    /// IMSI.
    pub imsi: String,
    /// IMPI (the GBA user identity).
    pub impi: String,
    /// ICCID (digits).
    pub iccid: String,
}

/// The answer of an AUTHENTICATE in the 3G or GBA bootstrapping context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AkaAnswer {
    /// 3G context: RES, CK and IK ('DB' answer).
    Success3g {
        /// RES.
        res: Res,
        /// CK.
        ck: Ck,
        /// IK.
        ik: Ik,
    },
    /// GBA context: RES with its least significant bit flipped; CK and IK stay in the card.
    SuccessGba {
        /// RES (LSB flipped, TS 33.220 §5.3.2).
        res: Res,
    },
    /// Synchronisation failure ('DC' answer): AUTS for the network to resynchronise SQN.
    SyncFailure {
        /// AUTS.
        auts: [u8; 14],
    },
}

/// The GBA_U bootstrapped set (EF_GBABP and the Ks the card keeps).
#[derive(Clone, PartialEq, Eq)]
pub struct GbaContext {
    /// Ks = CK ‖ IK; never leaves the card.
    pub ks: Ks,
    /// RAND of the bootstrapping run.
    pub rand: [u8; 16],
    /// B-TID, written by the ME after a successful run.
    pub b_tid: Option<String>,
    /// Key lifetime (as the BSF sent it), written by the ME.
    pub lifetime: Option<String>,
}

impl fmt::Debug for GbaContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GbaContext").field("rand", &self.rand).field("b_tid", &self.b_tid).finish_non_exhaustive()
    }
}

/// A Ks_int_NAF kept by the card (EF_GBANL record and the key behind it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NafKeyRecord {
    /// NAF_Id = FQDN ‖ Ua security protocol identifier.
    pub naf_id: Vec<u8>,
    /// B-TID of the Ks it was derived from.
    pub b_tid: String,
    /// The key.
    pub ks_int_naf: KsIntNaf,
    /// Use stamp for least-recently-used replacement.
    pub last_use: u64,
}

/// What the terminal sends to derive Ks_local on the card (TS 33.110 Annex B; profile P-10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalKeyRequest {
    /// NAF_Id of the key center (the BSM).
    pub naf_id: Vec<u8>,
    /// Terminal_ID.
    pub terminal_id: Vec<u8>,
    /// Terminal_appli_ID.
    pub terminal_appli_id: Vec<u8>,
    /// UICC_appli_ID.
    pub uicc_appli_id: Vec<u8>,
    /// RANDx.
    pub randx: Vec<u8>,
    /// Counter Limit.
    pub counter_limit: [u8; 16],
    /// HMAC-SHA-256(Ks_local, NAF_ID ‖ Terminal_ID ‖ ICCID ‖ Terminal_appli_ID ‖ UICC_appli_ID ‖
    /// RANDx ‖ Counter Limit), first 16 bytes.
    pub mac: [u8; 16],
}

impl LocalKeyRequest {
    /// The identifiers the Ks_local is established for.
    pub fn ids(&self) -> LocalKeyIds {
        LocalKeyIds {
            naf_id: self.naf_id.clone(),
            terminal_id: self.terminal_id.clone(),
            terminal_appli_id: self.terminal_appli_id.clone(),
            uicc_appli_id: self.uicc_appli_id.clone(),
        }
    }
}

/// The card's answer when Ks_local was derived and the terminal's MAC verified:
/// HMAC-SHA-256(Ks_local, "verification successful"), first 16 bytes.
pub fn local_key_verification(ks_local: &keycast_crypto::keys::KsLocal) -> [u8; 16] {
    let full = hmac_sha256(ks_local.expose_secret(), &[b"verification successful"]);
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

/// The terminal-side MAC of a [`LocalKeyRequest`] (profile P-10).
pub fn local_key_request_mac(
    ks_local: &keycast_crypto::keys::KsLocal,
    req: &LocalKeyRequest,
    iccid: &[u8],
) -> [u8; 16] {
    let full = hmac_sha256(
        ks_local.expose_secret(),
        &[
            &req.naf_id,
            &req.terminal_id,
            iccid,
            &req.terminal_appli_id,
            &req.uicc_appli_id,
            &req.randx,
            &req.counter_limit,
        ],
    );
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

/// RES, CK and IK of a verified AUTN, or AUTS when SQN was not fresh.
type AkaOutcome = Result<(Res, Ck, Ik), [u8; 14]>;

/// Default number of EF_GBANL records.
pub const NAF_KEY_RECORDS: usize = 8;

/// The emulated USIM.
#[derive(Clone, PartialEq, Eq)]
pub struct Usim {
    /// Identity.
    pub identity: UsimIdentity,
    k: SubscriberKey,
    opc: Opc,
    /// Highest SQN accepted (SQN_MS).
    pub sqn_ms: [u8; 6],
    /// Freshness window for SQN.
    pub sqn_window: u64,
    /// GBA_U bootstrapped set.
    pub gba: Option<GbaContext>,
    /// Ks_int_NAF keys (EF_GBANL).
    pub naf_keys: Vec<NafKeyRecord>,
    /// Monotonic stamp for least-recently-used replacement of NAF keys.
    pub use_counter: u64,
    /// The MBMS security context.
    pub mbms: MbmsStore,
}

impl fmt::Debug for Usim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Usim")
            .field("identity", &self.identity)
            .field("sqn_ms", &self.sqn_ms)
            .field("gba", &self.gba)
            .field("naf_keys", &self.naf_keys.len())
            .finish_non_exhaustive()
    }
}

impl Usim {
    /// A fresh card for a subscriber.
    pub fn new(identity: UsimIdentity, k: SubscriberKey, opc: Opc) -> Self {
        Self {
            identity,
            k,
            opc,
            sqn_ms: [0; 6],
            sqn_window: SqnWindow::default().delta,
            gba: None,
            naf_keys: Vec::new(),
            use_counter: 0,
            mbms: MbmsStore::default(),
        }
    }

    /// The subscriber key and OPc, for persistence only.
    pub fn expose_subscriber_keys(&self) -> (&SubscriberKey, &Opc) {
        (&self.k, &self.opc)
    }

    fn milenage(&self) -> Milenage {
        Milenage::new(&self.k, &self.opc)
    }

    /// Checks AUTN (or AUTN* for GBA_U) and SQN; on a stale SQN answers AUTS.
    fn aka(&mut self, rand: &[u8; 16], autn: &[u8; 16], gba_u: bool) -> Result<AkaOutcome, CardError> {
        let m = self.milenage();
        let check = if gba_u { m.check_autn_star(rand, autn) } else { m.check_autn(rand, autn) };
        let check = check.map_err(|_| CardError::Mac)?;
        if !(SqnWindow { delta: self.sqn_window }).accepts(self.sqn_ms, check.sqn) {
            return Ok(Err(m.build_auts(rand, self.sqn_ms)));
        }
        self.sqn_ms = check.sqn;
        debug_assert!(sqn_to_u64(self.sqn_ms) > 0);
        Ok(Ok((check.res, check.ck, check.ik)))
    }

    /// AUTHENTICATE, 3G context (used by GBA_ME terminals): RES, CK, IK or AUTS.
    pub fn authenticate_3g(&mut self, rand: &[u8; 16], autn: &[u8; 16]) -> Result<AkaAnswer, CardError> {
        Ok(match self.aka(rand, autn, false)? {
            Ok((res, ck, ik)) => AkaAnswer::Success3g { res, ck, ik },
            Err(auts) => AkaAnswer::SyncFailure { auts },
        })
    }

    /// AUTHENTICATE, GBA context, bootstrapping mode: checks AUTN* (MAC modified with IK),
    /// keeps Ks = CK ‖ IK and RAND, answers RES with its LSB flipped (TS 33.220 §5.3.2).
    pub fn gba_bootstrap(&mut self, rand: &[u8; 16], autn_star: &[u8; 16]) -> Result<AkaAnswer, CardError> {
        Ok(match self.aka(rand, autn_star, true)? {
            Ok((res, ck, ik)) => {
                // A new bootstrap replaces Ks, B-TID, lifetime and RAND.
                self.gba =
                    Some(GbaContext { ks: gba::ks_from_ck_ik(&ck, &ik), rand: *rand, b_tid: None, lifetime: None });
                AkaAnswer::SuccessGba { res: flip_res_lsb(&res) }
            }
            Err(auts) => AkaAnswer::SyncFailure { auts },
        })
    }

    /// The ME writes B-TID and key lifetime into EF_GBABP after a successful bootstrap.
    pub fn write_gba_bp(&mut self, b_tid: &str, lifetime: &str) -> Result<(), CardError> {
        let gba = self.gba.as_mut().ok_or(CardError::ConditionsOfUse("no bootstrapped key"))?;
        gba.b_tid = Some(b_tid.to_owned());
        gba.lifetime = Some(lifetime.to_owned());
        Ok(())
    }

    /// AUTHENTICATE, GBA context, NAF derivation mode: answers Ks_ext_NAF, keeps Ks_int_NAF
    /// (TS 31.102 §7.1.1.5). For an MBMS NAF_Id the Ks_int_NAF becomes the BSM's new MUK.
    pub fn gba_naf_derivation(&mut self, naf_id: &[u8], impi: &str) -> Result<KsExtNaf, CardError> {
        let gba = self.gba.as_ref().ok_or(CardError::ConditionsOfUse("no bootstrapped key"))?;
        let b_tid = gba.b_tid.clone().ok_or(CardError::ConditionsOfUse("B-TID not written yet"))?;
        if naf_id.len() < 6 {
            return Err(CardError::ConditionsOfUse("NAF_ID shorter than FQDN ‖ 5-byte protocol identifier"));
        }
        let (fqdn, proto) = naf_id.split_at(naf_id.len() - 5);
        let fqdn = core::str::from_utf8(fqdn).map_err(|_| CardError::ConditionsOfUse("NAF FQDN is not UTF-8"))?;
        let proto: [u8; 5] = proto.try_into().expect("split at len - 5");
        let id = NafId::new(fqdn, proto);
        let too_long = |_| CardError::ConditionsOfUse("IMPI or NAF_ID too long for the KDF");
        let ext = gba::ks_ext_naf(&gba.ks, &gba.rand, impi, &id).map_err(too_long)?;
        let int = gba::ks_int_naf(&gba.ks, &gba.rand, impi, &id).map_err(too_long)?;
        if proto == UA_PROTOCOL_MBMS {
            self.mbms.install_muk(fqdn, &b_tid, Smk::from_bytes(*int.expose_secret()))?;
        }
        self.use_counter += 1;
        let record = NafKeyRecord { naf_id: naf_id.to_vec(), b_tid, ks_int_naf: int, last_use: self.use_counter };
        if let Some(slot) = self.naf_keys.iter_mut().find(|r| r.naf_id == naf_id) {
            *slot = record;
        } else if self.naf_keys.len() < NAF_KEY_RECORDS {
            self.naf_keys.push(record);
        } else {
            // Replace the least recently used record; a key serving as MUK stays in the MBMS store.
            let lru = self.naf_keys.iter_mut().min_by_key(|r| r.last_use).expect("records are full");
            *lru = record;
        }
        Ok(ext)
    }

    /// AUTHENTICATE, MBMS context, MSK update (LTKM).
    pub fn msk_update(&mut self, ltkm: &[u8]) -> Result<MskUpdate, CardError> {
        self.mbms.msk_update(ltkm)
    }

    /// AUTHENTICATE, MBMS context, MTK generation (STKM).
    pub fn mtk_generation(&mut self, stkm: &[u8]) -> Result<MtkAnswer, CardError> {
        self.mbms.mtk_generation(stkm)
    }

    /// AUTHENTICATE, MBMS context, MSK deletion.
    pub fn msk_deletion(&mut self, key_domain_id: KeyDomainId, key_group: u16) -> Result<(), CardError> {
        self.mbms.delete_msks(key_domain_id, key_group)
    }

    /// AUTHENTICATE, MBMS context, MUK deletion: also deletes the NAF keys of that NAF and the
    /// Ks with the same B-TID (TS 31.102 §7.1.1.10, TS 33.246 Annex D.5).
    pub fn muk_deletion(&mut self, idi: &str, idr: &str) -> Result<(), CardError> {
        self.mbms.delete_muk(idi, idr)?;
        self.naf_keys
            .retain(|r| !(r.naf_id.starts_with(idi.as_bytes()) && r.naf_id.len() == idi.len() + 5 && r.b_tid == idr));
        if self.gba.as_ref().is_some_and(|g| g.b_tid.as_deref() == Some(idr)) {
            self.gba = None;
        }
        Ok(())
    }

    /// AUTHENTICATE, Local Key Establishment, key derivation (TS 33.110 Annex B; profile P-10):
    /// derives Ks_local from the Ks_int_NAF of the key center, checks the terminal's MAC, and
    /// establishes the secure channel. Answers the 16-byte verification value.
    pub fn local_key_establishment(&mut self, req: &LocalKeyRequest) -> Result<[u8; 16], CardError> {
        let record = self.naf_keys.iter().find(|r| r.naf_id == req.naf_id).ok_or(CardError::KeyNotFound)?;
        let iccid = self.identity.iccid.as_bytes();
        let params = LocalKeyParams {
            b_tid: &record.b_tid,
            terminal_id: &req.terminal_id,
            iccid,
            terminal_appli_id: &req.terminal_appli_id,
            uicc_appli_id: &req.uicc_appli_id,
            randx: &req.randx,
            counter_limit: &req.counter_limit,
        };
        let ks_local = gba::ks_local(&record.ks_int_naf, &params)
            .map_err(|_| CardError::ConditionsOfUse("parameters too long"))?;
        if !ct_eq(&local_key_request_mac(&ks_local, req, iccid), &req.mac) {
            return Err(CardError::Mac);
        }
        self.mbms.sac = Some(SecureChannel::new(&ks_local, req.counter_limit).with_ids(req.ids()));
        Ok(local_key_verification(&ks_local))
    }

    /// AUTHENTICATE, Local Key Establishment, availability check (TS 33.110 Annex B; profile
    /// P-10): whether a Ks_local established for exactly these identifiers is held, and whether
    /// its Counter Limit still allows use. 6A88 when the card holds no Ks_int_NAF for `naf_id`
    /// (no Ks_local can be established for it: the terminal runs a NAF derivation first), as for
    /// the key establishment itself. Changes nothing.
    pub fn local_key_available(
        &self,
        naf_id: &[u8],
        terminal_id: &[u8],
        terminal_appli_id: &[u8],
        uicc_appli_id: &[u8],
    ) -> Result<LocalKeyStatus, CardError> {
        if !self.naf_keys.iter().any(|r| r.naf_id == naf_id) {
            return Err(CardError::KeyNotFound);
        }
        let ids = LocalKeyIds {
            naf_id: naf_id.to_vec(),
            terminal_id: terminal_id.to_vec(),
            terminal_appli_id: terminal_appli_id.to_vec(),
            uicc_appli_id: uicc_appli_id.to_vec(),
        };
        Ok(self.mbms.sac.as_ref().map_or(LocalKeyStatus::NotEstablished, |sac| sac.status_for(&ids)))
    }

    /// OMA BCAST audit: the counters of a held SEK/PEK (profile P-4); 6A88 when it is absent.
    pub fn audit(&self, key_domain_id: KeyDomainId, sek_pek_id: SekPekId) -> Result<AuditCounters, CardError> {
        self.mbms.audit(key_domain_id, sek_pek_id)
    }

    /// The card's parental setting: the highest minimum age the holder may watch (`None`: no
    /// restriction).
    pub fn parental_limit(&self) -> Option<u8> {
        self.mbms.parental_limit
    }

    /// The terminal sets the parental setting (`None`: no restriction). Refused with 6982 unless
    /// a secure channel is established and its Counter Limit not used up: only the terminal that
    /// authenticated itself through Local Key Establishment may change it (profile P-10, a
    /// Keycast choice; the OMA BCAST text could not be read). Setting it does not count against
    /// the Counter Limit, which counts released TEKs. Provisioning writes
    /// `mbms.parental_limit` directly.
    pub fn set_parental_limit(&mut self, limit: Option<u8>) -> Result<(), CardError> {
        match &self.mbms.sac {
            Some(sac) if !sac.is_exhausted() => {
                self.mbms.parental_limit = limit;
                Ok(())
            }
            Some(_) => Err(CardError::SecurityStatus("secure channel counter limit reached")),
            None => Err(CardError::SecurityStatus("secure channel required to set the parental limit")),
        }
    }
}
