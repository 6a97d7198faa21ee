//! OMA DRM v2 DCF for download delivery (TS 33.246 §6.6.3, profile P-9 "Download (DCF)"):
//! one content object encrypted with AES-128-CBC under a key derived from the TEK, and an
//! HMAC-SHA1 signature over the container. profile: P-9
//!
//! # Layout
//!
//! ```text
//! ftyp  major 'odcf', minor 0x00000002, compatible 'odcf'           TS 33.246 §6.6.3.2 (minor), [chosen] brands
//! odrm  FullBox v0 (OMADRMContainer)                                           facts-ietf-oma.md §8.1
//!   odhe  FullBox v0 · ContentTypeLength (1) · ContentType · boxes:           (OMADRMDiscreteHeaders)
//!     ohdr  EncryptionMethod 1 (AES-128-CBC) · PaddingScheme 1 (RFC 2630) · PlaintextLength
//!           · ContentID · RightsIssuerURL · TextualHeaders                    facts §8.1 [code Bento4]
//!       obki  KeyIDType 0x02, KeyID = base64(Key Domain ID ‖ SEK/PEK ID ‖ TEK ID)     TS 33.246 §6.6.3.2
//!   odda  FullBox v0 · EncryptedDataLength (8) · IV (16) ‖ AES-128-CBC(content ‖ padding)
//! mdri  (mutable DRM information)                                                 TS 33.246 §6.6.3.2
//!   odfs  FullBox v0 · SignatureMethod 0x01 (HMAC-SHA1) · signature (20)        TS 33.246 §6.6.3.2
//! ```
//!
//! # Keys \[chosen where marked\]
//!
//! Both keys come from the TEK with the MIKEY PRF and the RFC 3830 §4.1.3 labels, cs_id 0
//! (TS 33.246 §6.5.4, profile P-9):
//!
//! ```text
//! encryption key     = PRF(TEK, 0x15798CEF ‖ 0x00 ‖ CSB ID (4) ‖ RAND), 16 bytes
//! authentication key = PRF(TEK, 0x1B5C7973 ‖ 0x00 ‖ CSB ID (4) ‖ RAND), 20 bytes
//! ```
//!
//! Which CSB ID and RAND enter the label is left open by 33.246 (facts-3gpp.md §3.13).
//! [`DcfKeys::for_key`] \[chosen\] uses CSB ID = the SEK/PEK ID and an empty RAND, so a terminal
//! needs nothing beyond the TEK and the `obki` key ID (the same pattern as the ESP
//! authentication key); [`DcfKeys::derive`] takes any CSB ID and RAND.
//!
//! # Encryption and integrity \[chosen where marked\]
//!
//! - AES-128-CBC with a caller-given IV (sans-IO: the caller draws it at random), written in
//!   front of the ciphertext; RFC 2630 padding: 1 to 16 bytes, each holding the pad length.
//! - The signature is HMAC-SHA1 under the authentication key over the whole `odrm` box, header
//!   included \[chosen: the DCF spec's exact range could not be read\]. [`open_dcf`] checks it
//!   in constant time **before** decrypting, and refuses a file without it; a wrong key is
//!   therefore always [`DcfError::BadSignature`].
//!
//! ```
//! use keycast_crypto::keys::Tek;
//! use keycast_traffic::dcf::{Dcf, DcfHeaders, DcfKeys, open_dcf, seal_dcf};
//! use keycast_traffic::srtp::Mki;
//!
//! let key = Mki::new(0x0001_0002, 9);
//! let keys = DcfKeys::for_key(&Tek::from_bytes([5; 16]), key);
//! let headers = DcfHeaders::new("video/mp4", [0x00, 0xf1, 0x10], key);
//! let file = seal_dcf(&headers, &keys, [0xa5; 16], b"a downloaded file").unwrap();
//!
//! // The terminal reads which key it needs, asks the card for the TEK, then opens the file.
//! let dcf = Dcf::parse(&file).unwrap();
//! assert_eq!(dcf.key(), Some(([0x00, 0xf1, 0x10], key)));
//! let (read, content) = open_dcf(&file, &keys).unwrap();
//! assert_eq!((read, &content[..]), (headers, &b"a downloaded file"[..]));
//! ```

use core::fmt;

use aes::Aes128;
use cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use keycast_crypto::hmac::{HmacSha1Key, ct_eq};
use keycast_crypto::keys::Tek;
use keycast_crypto::mikey::{TGK_AUTH, TGK_ENCR, derive_tgk_key};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::pdcf::{
    CommonHeaders, ENCRYPTION_AES_128_CBC, FourCc, KeyInfo, Next, Node, PADDING_RFC2630, PdcfError, PutBe, RawBox,
    Reader, next_box, node, put_box, put_full,
};
use crate::srtp::Mki;

/// DCF brand. TS 33.246 §6.6.3.2
pub const BRAND_DCF: FourCc = FourCc(*b"odcf");
/// DCF `ftyp` minor version. TS 33.246 §6.6.3.2
pub const DCF_MINOR_VERSION: u32 = 0x0000_0002;
/// `odfs` SignatureMethod HMAC-SHA1. TS 33.246 §6.6.3.2
pub const SIGNATURE_HMAC_SHA1: u8 = 0x01;
/// cs_id of the DCF key labels. profile P-9
pub const DCF_CS_ID: u8 = 0;
/// Length of the CBC IV in front of the ciphertext.
pub const IV_LEN: usize = 16;
const BLOCK: usize = 16;
const SIG_LEN: usize = 20;
/// Largest content [`seal_dcf`] takes: every box stays below 4 GiB. \[chosen\]
pub const MAX_CONTENT_LEN: usize = 1 << 31;

/// Why a DCF was not sealed or not opened. Carries no key bytes.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DcfError {
    /// The file's syntax is wrong, or a header value does not fit.
    #[error(transparent)]
    Format(#[from] PdcfError),
    /// The file has no HMAC-SHA1 signature (`mdri`/`odfs`).
    #[error("the DCF is not signed with HMAC-SHA1")]
    NotSigned,
    /// The signature does not verify: wrong key, or the file was altered.
    #[error("DCF signature does not verify (wrong key or altered file)")]
    BadSignature,
    /// The decrypted padding is not RFC 2630 padding, or the ciphertext length is wrong.
    #[error("bad DCF padding or ciphertext length")]
    BadPadding,
    /// The decrypted length is not the header's PlaintextLength.
    #[error("plaintext length {actual} differs from the header's {declared}")]
    LengthMismatch {
        /// PlaintextLength in `ohdr`.
        declared: u64,
        /// Bytes decrypted.
        actual: usize,
    },
}

/// The headers of a DCF: the content type and the OMA common headers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DcfHeaders {
    /// MIME type of the content (at most 255 bytes).
    pub content_type: String,
    /// ContentID, RightsIssuerURL, textual headers and the `obki` key entries.
    pub headers: CommonHeaders,
}

impl DcfHeaders {
    /// Headers naming the key per P-9: one `obki` entry, type 0x02, KeyID =
    /// base64(Key Domain ID ‖ SEK/PEK ID ‖ TEK ID).
    #[must_use]
    pub fn new(content_type: &str, key_domain_id: [u8; 3], key: Mki) -> Self {
        Self {
            content_type: content_type.to_owned(),
            headers: CommonHeaders { key_info: vec![KeyInfo::bcast(key_domain_id, key)], ..CommonHeaders::default() },
        }
    }
}

/// The two DCF keys derived from a TEK; wiped on drop, `Debug` prints nothing.
#[derive(Clone)]
pub struct DcfKeys {
    aes: Aes128,
    mac: HmacSha1Key,
}

impl fmt::Debug for DcfKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DcfKeys(…)")
    }
}

impl DcfKeys {
    /// Keys from `tek` with the RFC 3830 §4.1.3 labels, cs_id 0, and this CSB ID and RAND.
    #[must_use]
    pub fn derive(tek: &Tek, csb_id: u32, rand: &[u8]) -> Self {
        let mut enc = Zeroizing::new([0u8; 16]);
        let mut auth = Zeroizing::new([0u8; SIG_LEN]);
        derive_tgk_key(tek.expose_secret(), TGK_ENCR, DCF_CS_ID, csb_id, rand, &mut enc[..]);
        derive_tgk_key(tek.expose_secret(), TGK_AUTH, DCF_CS_ID, csb_id, rand, &mut auth[..]);
        Self { aes: Aes128::new((&*enc).into()), mac: HmacSha1Key::new(&auth[..]) }
    }

    /// Keycast's keys for the TEK named `key` (SEK/PEK ID ‖ TEK ID): CSB ID = SEK/PEK ID, empty
    /// RAND. \[chosen\] profile: P-9
    #[must_use]
    pub fn for_key(tek: &Tek, key: Mki) -> Self {
        Self::derive(tek, key.sek_pek_id(), &[])
    }
}

/// Seals `content` into a DCF: AES-128-CBC with `iv` (draw it at random for each file), RFC 2630
/// padding, HMAC-SHA1 signature.
pub fn seal_dcf(headers: &DcfHeaders, keys: &DcfKeys, iv: [u8; IV_LEN], content: &[u8]) -> Result<Vec<u8>, DcfError> {
    headers.headers.check()?;
    if headers.content_type.len() > usize::from(u8::MAX) {
        return Err(PdcfError::TooLong { field: "ContentType", len: headers.content_type.len(), max: 255 }.into());
    }
    if content.len() > MAX_CONTENT_LEN {
        return Err(PdcfError::TooLong { field: "content", len: content.len(), max: MAX_CONTENT_LEN }.into());
    }
    // RFC 2630 padding: always 1..=16 bytes, each the pad length.
    let pad = BLOCK - content.len() % BLOCK;
    let mut data = Vec::with_capacity(IV_LEN + content.len() + pad);
    data.extend_from_slice(&iv);
    data.extend_from_slice(content);
    // pad is 1..=16.
    data.resize(IV_LEN + content.len() + pad, pad as u8);
    cbc_encrypt(&keys.aes, &iv, &mut data[IV_LEN..]);

    let mut out = Vec::new();
    put_box(&mut out, b"ftyp", |o| {
        o.extend_from_slice(&BRAND_DCF.0);
        DCF_MINOR_VERSION.put(o);
        o.extend_from_slice(&BRAND_DCF.0);
    });
    let odrm_start = out.len();
    put_full(&mut out, b"odrm", 0, 0, |o| {
        put_full(o, b"odhe", 0, 0, |o| {
            // Checked above to fit one byte.
            (headers.content_type.len() as u8).put(o);
            o.extend_from_slice(headers.content_type.as_bytes());
            headers.headers.encode_ohdr(o, ENCRYPTION_AES_128_CBC, PADDING_RFC2630, content.len() as u64);
        });
        put_full(o, b"odda", 0, 0, |o| {
            (data.len() as u64).put(o);
            o.extend_from_slice(&data);
        });
    });
    let sig = keys.mac.mac(&[&out[odrm_start..]]);
    put_box(&mut out, b"mdri", |o| {
        put_full(o, b"odfs", 0, 0, |o| {
            SIGNATURE_HMAC_SHA1.put(o);
            o.extend_from_slice(&sig);
        });
    });
    Ok(out)
}

/// A DCF parsed but not yet opened: enough to learn which key it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dcf<'a> {
    /// The headers.
    pub headers: DcfHeaders,
    /// PlaintextLength from `ohdr`.
    pub plaintext_len: u64,
    /// `odda`'s EncryptedData: IV ‖ ciphertext.
    pub encrypted: &'a [u8],
    /// The whole `odrm` box (what the signature covers).
    signed: &'a [u8],
    /// The HMAC-SHA1 signature, when the file has one.
    signature: Option<&'a [u8]>,
}

impl<'a> Dcf<'a> {
    /// Parses a DCF with one `odrm` container (Keycast writes one \[chosen\]).
    pub fn parse(data: &'a [u8]) -> Result<Self, DcfError> {
        let mut r = Reader::new(data, 0);
        let mut top: Vec<RawBox<'a>> = Vec::new();
        while let Next::Box(b) = next_box(&mut r)? {
            top.push(b);
        }
        let file = FourCc(*b"file");
        let ftyp = top.first().ok_or(PdcfError::MissingBox { parent: file, kind: FourCc(*b"ftyp") })?;
        if ftyp.kind.0 != *b"ftyp" {
            return Err(PdcfError::UnexpectedBox { offset: ftyp.start, kind: ftyp.kind }.into());
        }
        let mut fr = ftyp.reader();
        let major = FourCc(fr.array("ftyp major_brand")?);
        fr.u32("ftyp minor_version")?;
        let mut ok = major == BRAND_DCF;
        while fr.left() >= 4 {
            ok |= FourCc(fr.array("ftyp compatible_brands")?) == BRAND_DCF;
        }
        fr.expect_empty("ftyp")?;
        if !ok {
            return Err(PdcfError::BadValue { offset: ftyp.start + 8, field: "ftyp brands (no 'odcf')" }.into());
        }
        let mut odrm = None;
        let mut mdri = None;
        for b in &top[1..] {
            let slot = match &b.kind.0 {
                b"odrm" => &mut odrm,
                b"mdri" => &mut mdri,
                b"free" | b"skip" => continue,
                _ => return Err(PdcfError::UnexpectedBox { offset: b.start, kind: b.kind }.into()),
            };
            if slot.replace(node(*b, 0)?).is_some() {
                return Err(PdcfError::UnexpectedBox { offset: b.start, kind: b.kind }.into());
            }
        }
        let odrm = odrm.ok_or(PdcfError::MissingBox { parent: file, kind: FourCc(*b"odrm") })?;
        let (headers, plaintext_len, encrypted) = read_odrm(&odrm)?;
        let signature = match &mdri {
            Some(m) => read_signature(m)?,
            None => None,
        };
        Ok(Self { headers, plaintext_len, encrypted, signed: odrm.raw.whole, signature })
    }

    /// The Key Domain ID and SEK/PEK ID ‖ TEK ID of the first `obki` entry, if it is a P-9 key
    /// ID: what to ask the card for.
    #[must_use]
    pub fn key(&self) -> Option<([u8; 3], Mki)> {
        self.headers.headers.key_info.first().and_then(KeyInfo::bcast_key)
    }

    /// Checks the signature, then decrypts and unpads the content.
    pub fn open(&self, keys: &DcfKeys) -> Result<Vec<u8>, DcfError> {
        let sig = self.signature.ok_or(DcfError::NotSigned)?;
        if !ct_eq(&keys.mac.mac(&[self.signed]), sig) {
            return Err(DcfError::BadSignature);
        }
        let Some((iv, ct)) = self.encrypted.split_first_chunk::<IV_LEN>() else {
            return Err(DcfError::BadPadding);
        };
        if ct.is_empty() || ct.len() % BLOCK != 0 {
            return Err(DcfError::BadPadding);
        }
        let mut plain = ct.to_vec();
        cbc_decrypt(&keys.aes, iv, &mut plain);
        // RFC 2630: the last byte n (1..=16) and n bytes of value n.
        let n = usize::from(plain[plain.len() - 1]);
        if n == 0 || n > BLOCK || !plain[plain.len() - n..].iter().all(|&b| usize::from(b) == n) {
            return Err(DcfError::BadPadding);
        }
        plain.truncate(plain.len() - n);
        if plain.len() as u64 != self.plaintext_len {
            return Err(DcfError::LengthMismatch { declared: self.plaintext_len, actual: plain.len() });
        }
        Ok(plain)
    }
}

/// Parses, verifies and decrypts a DCF: its headers and content.
pub fn open_dcf(data: &[u8], keys: &DcfKeys) -> Result<(DcfHeaders, Vec<u8>), DcfError> {
    let dcf = Dcf::parse(data)?;
    let content = dcf.open(keys)?;
    Ok((dcf.headers, content))
}

type Odrm<'a> = (DcfHeaders, u64, &'a [u8]);

fn read_odrm<'a>(odrm: &Node<'a>) -> Result<Odrm<'a>, DcfError> {
    let mut r = odrm.fields();
    full_v0(&mut r, "odrm version")?;
    let odhe = odrm.child(b"odhe")?;
    let mut r = odhe.fields();
    full_v0(&mut r, "odhe version")?;
    let n = r.u8("odhe ContentTypeLength")?;
    let content_type = r.string(n.into(), "odhe ContentType")?;
    r.expect_empty("odhe")?;
    let ohdr = odhe.child(b"ohdr")?;
    let (headers, method, padding, plaintext_len) = CommonHeaders::read_ohdr(ohdr)?;
    let at = ohdr.raw.start + ohdr.raw.header_len + 4;
    if method != ENCRYPTION_AES_128_CBC {
        return Err(PdcfError::Unsupported { offset: at, field: "ohdr EncryptionMethod", value: method.into() }.into());
    }
    if padding != PADDING_RFC2630 {
        return Err(
            PdcfError::Unsupported { offset: at + 1, field: "ohdr PaddingScheme", value: padding.into() }.into()
        );
    }
    let odda = odrm.child(b"odda")?;
    let mut r = odda.fields();
    full_v0(&mut r, "odda version")?;
    let at = r.offset();
    let len = r.u64("odda EncryptedDataLength")?;
    let encrypted = r.rest();
    if len != encrypted.len() as u64 {
        return Err(PdcfError::BadValue { offset: at, field: "odda EncryptedDataLength" }.into());
    }
    Ok((DcfHeaders { content_type, headers }, plaintext_len, encrypted))
}

fn read_signature<'a>(mdri: &Node<'a>) -> Result<Option<&'a [u8]>, DcfError> {
    let Some(odfs) = mdri.children_of(b"odfs").next() else { return Ok(None) };
    let mut r = odfs.fields();
    let at = r.offset();
    // The signature box is outside what it signs: refuse any bit it does not define.
    let flags = full_v0(&mut r, "odfs version")?;
    if flags != 0 {
        return Err(PdcfError::Unsupported { offset: at, field: "odfs flags", value: flags.into() }.into());
    }
    let at = r.offset();
    match r.u8("odfs SignatureMethod")? {
        // NULL: no signature.
        0 => Ok(None),
        SIGNATURE_HMAC_SHA1 => {
            let sig = r.take(SIG_LEN, "odfs signature")?;
            r.expect_empty("odfs")?;
            Ok(Some(sig))
        }
        m => Err(PdcfError::Unsupported { offset: at, field: "odfs SignatureMethod", value: m.into() }.into()),
    }
}

fn full_v0(r: &mut Reader<'_>, field: &'static str) -> Result<u32, PdcfError> {
    crate::pdcf::full_v0(r, field)
}

fn cbc_encrypt(aes: &Aes128, iv: &[u8; BLOCK], data: &mut [u8]) {
    let mut prev = *iv;
    for chunk in data.chunks_exact_mut(BLOCK) {
        chunk.iter_mut().zip(prev).for_each(|(c, p)| *c ^= p);
        let block: &mut [u8; BLOCK] = chunk.try_into().expect("chunks_exact gives BLOCK bytes");
        aes.encrypt_block(block.into());
        prev = *block;
    }
}

fn cbc_decrypt(aes: &Aes128, iv: &[u8; BLOCK], data: &mut [u8]) {
    let mut prev = *iv;
    for chunk in data.chunks_exact_mut(BLOCK) {
        let block: &mut [u8; BLOCK] = chunk.try_into().expect("chunks_exact gives BLOCK bytes");
        let saved = *block;
        aes.decrypt_block(block.into());
        block.iter_mut().zip(prev).for_each(|(c, p)| *c ^= p);
        prev = saved;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_fills_whole_block_for_aligned_content() {
        let key = Mki::new(1, 1);
        let keys = DcfKeys::for_key(&Tek::from_bytes([1; 16]), key);
        let h = DcfHeaders::new("a/b", [0, 0xf1, 0x10], key);
        let file = seal_dcf(&h, &keys, [0; 16], &[7; 32]).unwrap();
        let dcf = Dcf::parse(&file).unwrap();
        assert_eq!(dcf.encrypted.len(), 16 + 48);
        assert_eq!(dcf.open(&keys).unwrap(), [7; 32]);
    }
}
