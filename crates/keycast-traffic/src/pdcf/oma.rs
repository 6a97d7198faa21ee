//! The OMA DRM / OMA BCAST boxes shared by the adapted PDCF and the DCF: `ohdr` with its `obki`
//! extended header, `odaf`, `oslt` and the `oksd` STKM sample entry fields
//! (facts-ietf-oma.md §8.1).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::PdcfError;
use super::codec::{Node, PutBe, Reader, put_full};
use crate::srtp::Mki;

/// `ohdr` EncryptionMethod: AES-128-CBC (DCF download). facts-ietf-oma.md §8.1 (Bento4)
pub const ENCRYPTION_AES_128_CBC: u8 = 1;
/// `ohdr` EncryptionMethod: AES-128-CTR (PDCF recordings). facts-ietf-oma.md §8.1 (Bento4)
pub const ENCRYPTION_AES_128_CTR: u8 = 2;
/// `ohdr` PaddingScheme: none. facts-ietf-oma.md §8.1
pub const PADDING_NONE: u8 = 0;
/// `ohdr` PaddingScheme: RFC 2630 (each pad byte holds the pad length). facts-ietf-oma.md §8.1
pub const PADDING_RFC2630: u8 = 1;
/// `obki` KeyIDType for 3GPP MBMS / BCAST keys: base64(Key Domain ID ‖ SEK/PEK ID ‖ TEK ID).
/// TS 33.246 §6.6.3.2, profile P-9
pub const KEY_ID_TYPE_MBMS: u8 = 0x02;

/// Textual header naming the purchase item, for the Token Purchase Request at play-back
/// (seed §6.7.1: MBMS User Service ID = GlobalPurchaseItemID ‖ PurchaseDataID). \[chosen name\]
pub const HEADER_GLOBAL_PURCHASE_ITEM_ID: &str = "GlobalPurchaseItemID";
/// Textual header naming the purchase data (see [`HEADER_GLOBAL_PURCHASE_ITEM_ID`]). \[chosen name\]
pub const HEADER_PURCHASE_DATA_ID: &str = "PurchaseDataID";

// `obki` per-key flag bits, MSB first [unconfirmed order, facts-ietf-oma.md §8.1].
const KEY_ISSUER_PRESENT: u8 = 0x80;
const STKM_PRESENT: u8 = 0x40;
const TBK_PRESENT: u8 = 0x20;
const TBK_ISSUER_URL_PRESENT: u8 = 0x10;

/// One key entry of the `obki` OMABCASTKeyInfo box (TS 33.246 §6.6.3.2 names;
/// layout facts-ietf-oma.md §8.1 \[code NexStreaming\]):
///
/// ```text
/// flags (1: KeyIssuerPresent, STKMPresent, TBKPresent, TBKIssuerURLPresent, 4 reserved; MSB first)
/// key_ID_type (1) · key_ID_length (1) · key_ID
/// [key_issuer_URL_length (2) · URL]   if KeyIssuerPresent
/// [STKM_length (2) · STKM]            if STKMPresent
/// [TBK_id (4)]                        if TBKPresent
/// [TBK_issuer_URL_length (2) · URL]   if TBKIssuerURLPresent
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    /// key_ID_type; [`KEY_ID_TYPE_MBMS`] for Keycast.
    pub key_id_type: u8,
    /// key_ID as written in the box (for type 2, base64 text as bytes).
    pub key_id: Vec<u8>,
    /// Where the key can be got (KeyIssuerPresent).
    pub key_issuer_url: Option<String>,
    /// An STKM carried inline (STKMPresent).
    pub stkm: Option<Vec<u8>>,
    /// The terminal binding key the TEK is wrapped under (TBKPresent; P-11.5).
    pub tbk_id: Option<u32>,
    /// Where the TBK can be got (TBKIssuerURLPresent).
    pub tbk_issuer_url: Option<String>,
}

impl KeyInfo {
    /// The Keycast key entry (P-9): KeyIDType 0x02, KeyID = base64(Key Domain ID ‖ SEK/PEK ID ‖
    /// TEK ID), no optional parts.
    #[must_use]
    pub fn bcast(key_domain_id: [u8; 3], key: Mki) -> Self {
        let mut raw = [0u8; 9];
        raw[..3].copy_from_slice(&key_domain_id);
        raw[3..].copy_from_slice(&key.to_bytes());
        Self {
            key_id_type: KEY_ID_TYPE_MBMS,
            key_id: BASE64.encode(raw).into_bytes(),
            key_issuer_url: None,
            stkm: None,
            tbk_id: None,
            tbk_issuer_url: None,
        }
    }

    /// The Key Domain ID and SEK/PEK ID ‖ TEK ID of a type-2 key ID, if it is one.
    #[must_use]
    pub fn bcast_key(&self) -> Option<([u8; 3], Mki)> {
        if self.key_id_type != KEY_ID_TYPE_MBMS {
            return None;
        }
        let raw = BASE64.decode(&self.key_id).ok()?;
        let raw: [u8; 9] = raw.try_into().ok()?;
        let mut domain = [0u8; 3];
        domain.copy_from_slice(&raw[..3]);
        let mut mki = [0u8; 6];
        mki.copy_from_slice(&raw[3..]);
        Some((domain, Mki::from_bytes(mki)))
    }

    fn check(&self) -> Result<(), PdcfError> {
        too_long(self.key_id.len(), u8::MAX.into(), "key_ID")?;
        too_long(self.key_issuer_url.as_ref().map_or(0, String::len), u16::MAX.into(), "key_issuer_URL")?;
        too_long(self.stkm.as_ref().map_or(0, Vec::len), u16::MAX.into(), "STKM")?;
        too_long(self.tbk_issuer_url.as_ref().map_or(0, String::len), u16::MAX.into(), "TBK_issuer_URL")
    }

    // Lengths were checked by `check` before any byte is written.
    #[allow(clippy::cast_possible_truncation)]
    fn encode(&self, out: &mut Vec<u8>) {
        let flags = self.key_issuer_url.as_ref().map_or(0, |_| KEY_ISSUER_PRESENT)
            | self.stkm.as_ref().map_or(0, |_| STKM_PRESENT)
            | self.tbk_id.map_or(0, |_| TBK_PRESENT)
            | self.tbk_issuer_url.as_ref().map_or(0, |_| TBK_ISSUER_URL_PRESENT);
        flags.put(out);
        self.key_id_type.put(out);
        (self.key_id.len() as u8).put(out);
        out.extend_from_slice(&self.key_id);
        if let Some(u) = &self.key_issuer_url {
            (u.len() as u16).put(out);
            out.extend_from_slice(u.as_bytes());
        }
        if let Some(s) = &self.stkm {
            (s.len() as u16).put(out);
            out.extend_from_slice(s);
        }
        if let Some(id) = self.tbk_id {
            id.put(out);
        }
        if let Some(u) = &self.tbk_issuer_url {
            (u.len() as u16).put(out);
            out.extend_from_slice(u.as_bytes());
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, PdcfError> {
        // Reserved flag bits are ignored (the layout is [unconfirmed]).
        let flags = r.u8("obki flags")?;
        let key_id_type = r.u8("obki key_ID_type")?;
        let len = r.u8("obki key_ID_length")?;
        let key_id = r.take(len.into(), "obki key_ID")?.to_vec();
        let key_issuer_url =
            if flags & KEY_ISSUER_PRESENT != 0 { Some(r.string_u16("obki key_issuer_URL")?) } else { None };
        let stkm = if flags & STKM_PRESENT != 0 {
            let n = r.u16("obki STKM_length")?;
            Some(r.take(n.into(), "obki STKM")?.to_vec())
        } else {
            None
        };
        let tbk_id = if flags & TBK_PRESENT != 0 { Some(r.u32("obki TBK_id")?) } else { None };
        let tbk_issuer_url =
            if flags & TBK_ISSUER_URL_PRESENT != 0 { Some(r.string_u16("obki TBK_issuer_URL")?) } else { None };
        Ok(Self { key_id_type, key_id, key_issuer_url, stkm, tbk_id, tbk_issuer_url })
    }
}

/// The OMADRMCommonHeaders (`ohdr`) fields a caller chooses; the encryption method, padding
/// and plaintext length are fixed by the format (PDCF: AES-128-CTR, none, 0; DCF: AES-128-CBC,
/// RFC 2630, the content length).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommonHeaders {
    /// ContentID (e.g. `cid:` URI of the service or content item).
    pub content_id: String,
    /// RightsIssuerURL: the BSM's URL, where play-back sends a Token Purchase Request when the
    /// card lacks the SEK/PEK (seed §6.7.1).
    pub rights_issuer_url: String,
    /// TextualHeaders as `(name, value)` pairs, e.g. `("GlobalPurchaseItemID", …)`,
    /// `("PurchaseDataID", …)`. Names hold no `:` and no NUL; values no NUL.
    pub textual_headers: Vec<(String, String)>,
    /// The `obki` key entries (ExtendedHeaders); empty means no `obki` box.
    pub key_info: Vec<KeyInfo>,
}

impl CommonHeaders {
    /// The value of the first textual header with this name.
    #[must_use]
    pub fn textual_header(&self, name: &str) -> Option<&str> {
        self.textual_headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// TextualHeaders bytes \[chosen\]: each header is `name:value` followed by one NUL.
    fn textual_bytes(&self) -> Vec<u8> {
        let mut t = Vec::new();
        for (n, v) in &self.textual_headers {
            t.extend_from_slice(n.as_bytes());
            t.push(b':');
            t.extend_from_slice(v.as_bytes());
            t.push(0);
        }
        t
    }

    /// Refuses values that do not fit their length fields or break the textual syntax.
    pub(crate) fn check(&self) -> Result<(), PdcfError> {
        too_long(self.content_id.len(), u16::MAX.into(), "ContentID")?;
        too_long(self.rights_issuer_url.len(), u16::MAX.into(), "RightsIssuerURL")?;
        too_long(self.textual_bytes().len(), u16::MAX.into(), "TextualHeaders")?;
        too_long(self.key_info.len(), u8::MAX.into(), "obki key_infos_number")?;
        for (n, v) in &self.textual_headers {
            if n.is_empty() || n.contains([':', '\0']) || v.contains('\0') {
                return Err(PdcfError::InvalidArgument("textual header name or value"));
            }
        }
        self.key_info.iter().try_for_each(KeyInfo::check)
    }

    /// Writes `ohdr` (FullBox v0), with `obki` as its extended header when there are key
    /// entries:
    ///
    /// ```text
    /// EncryptionMethod (1) · PaddingScheme (1) · PlaintextLength (8) · ContentIDLength (2)
    /// · RightsIssuerURLLength (2) · TextualHeadersLength (2) · ContentID · RightsIssuerURL
    /// · TextualHeaders · ExtendedHeaders (boxes)
    /// ```
    /// facts-ietf-oma.md §8.1 (Bento4 `Ap4OhdrAtom.cpp`). Call [`Self::check`] first.
    // Lengths were checked by `check`.
    #[allow(clippy::cast_possible_truncation)]
    pub(crate) fn encode_ohdr(&self, out: &mut Vec<u8>, method: u8, padding: u8, plaintext_len: u64) {
        let textual = self.textual_bytes();
        put_full(out, b"ohdr", 0, 0, |o| {
            method.put(o);
            padding.put(o);
            plaintext_len.put(o);
            (self.content_id.len() as u16).put(o);
            (self.rights_issuer_url.len() as u16).put(o);
            (textual.len() as u16).put(o);
            o.extend_from_slice(self.content_id.as_bytes());
            o.extend_from_slice(self.rights_issuer_url.as_bytes());
            o.extend_from_slice(&textual);
            if !self.key_info.is_empty() {
                // obki: FullBox v0 [chosen] · key_infos_number (1) · entries.
                put_full(o, b"obki", 0, 0, |o| {
                    (self.key_info.len() as u8).put(o);
                    self.key_info.iter().for_each(|k| k.encode(o));
                });
            }
        });
    }

    /// Reads an `ohdr` node: the headers, EncryptionMethod, PaddingScheme and PlaintextLength.
    pub(crate) fn read_ohdr(node: &Node<'_>) -> Result<(Self, u8, u8, u64), PdcfError> {
        let mut r = node.fields();
        full_v0(&mut r, "ohdr")?;
        let method = r.u8("ohdr EncryptionMethod")?;
        let padding = r.u8("ohdr PaddingScheme")?;
        let plaintext_len = r.u64("ohdr PlaintextLength")?;
        let cid_len = r.u16("ohdr ContentIDLength")?;
        let ri_len = r.u16("ohdr RightsIssuerURLLength")?;
        let th_len = r.u16("ohdr TextualHeadersLength")?;
        let content_id = r.string(cid_len.into(), "ohdr ContentID")?;
        let rights_issuer_url = r.string(ri_len.into(), "ohdr RightsIssuerURL")?;
        let at = r.offset();
        let th = r.take(th_len.into(), "ohdr TextualHeaders")?;
        r.expect_empty("ohdr")?;
        let mut textual_headers = Vec::new();
        let bad = PdcfError::BadValue { offset: at, field: "ohdr TextualHeaders" };
        let text = core::str::from_utf8(th).map_err(|_| bad.clone())?;
        // Each header ends with a NUL; a missing final NUL is accepted.
        for h in text.strip_suffix('\0').unwrap_or(text).split('\0').filter(|_| !text.is_empty()) {
            let (n, v) = h.split_once(':').ok_or_else(|| bad.clone())?;
            textual_headers.push((n.to_owned(), v.to_owned()));
        }
        let mut key_info = Vec::new();
        if let Some(obki) = node.children.iter().find(|c| c.kind().0 == *b"obki") {
            let mut r = obki.fields();
            full_v0(&mut r, "obki")?;
            let n = r.u8("obki key_infos_number")?;
            for _ in 0..n {
                key_info.push(KeyInfo::read(&mut r)?);
            }
            r.expect_empty("obki")?;
        }
        Ok((Self { content_id, rights_issuer_url, textual_headers, key_info }, method, padding, plaintext_len))
    }
}

/// The fields of the `oksd` sample entry of the STKM track, after the SampleEntry base
/// (`reserved (6) ‖ data_reference_index (2)`, \[chosen\] to make it a regular sample entry):
///
/// ```text
/// sample_version (1) · sample_type (1) · terminal_binding_key_ID (4) · rights_issuer_URI_length (2) · URI
/// ```
/// facts-ietf-oma.md §8.1 \[code NexStreaming\].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StkmTrackInfo {
    /// sample_version (Keycast writes 1 \[chosen\]).
    pub sample_version: u8,
    /// sample_type (Keycast writes 0: an STKM, i.e. a MIKEY MTK message \[chosen\]).
    pub sample_type: u8,
    /// terminal_binding_key_ID from the Service Guide (0 when no TBK applies).
    pub terminal_binding_key_id: u32,
    /// rights_issuer_URI: the BSM's URL.
    pub rights_issuer_uri: String,
}

impl StkmTrackInfo {
    pub(crate) fn check(&self) -> Result<(), PdcfError> {
        too_long(self.rights_issuer_uri.len(), u16::MAX.into(), "oksd rights_issuer_URI")
    }

    // Length checked by `check`.
    #[allow(clippy::cast_possible_truncation)]
    pub(crate) fn encode_fields(&self, out: &mut Vec<u8>) {
        self.sample_version.put(out);
        self.sample_type.put(out);
        self.terminal_binding_key_id.put(out);
        (self.rights_issuer_uri.len() as u16).put(out);
        out.extend_from_slice(self.rights_issuer_uri.as_bytes());
    }

    pub(crate) fn read_fields(r: &mut Reader<'_>) -> Result<Self, PdcfError> {
        let sample_version = r.u8("oksd sample_version")?;
        let sample_type = r.u8("oksd sample_type")?;
        let terminal_binding_key_id = r.u32("oksd terminal_binding_key_ID")?;
        let rights_issuer_uri = r.string_u16("oksd rights_issuer_URI")?;
        r.expect_empty("oksd")?;
        Ok(Self { sample_version, sample_type, terminal_binding_key_id, rights_issuer_uri })
    }
}

/// Reads a FullBox header and requires version 0.
pub(crate) fn full_v0(r: &mut Reader<'_>, field: &'static str) -> Result<u32, PdcfError> {
    let at = r.offset();
    let (version, flags) = r.full_header()?;
    if version != 0 {
        return Err(PdcfError::Unsupported { offset: at, field, value: version.into() });
    }
    Ok(flags)
}

pub(crate) fn too_long(len: usize, max: usize, field: &'static str) -> Result<(), PdcfError> {
    if len > max { Err(PdcfError::TooLong { field, len, max }) } else { Ok(()) }
}
