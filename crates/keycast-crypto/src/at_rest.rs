//! Keys at rest: how the services' databases keep secret keys (K, OPc, Ks, SEK/PEK, …) so that a
//! copied database file gives none of them away.
//!
//! Each key is AES-key-wrapped (RFC 3394) under a key-encryption key derived from the service's
//! [`StorageKey`] and bound to the database (`scope`), the column and the row:
//! `KEK = HMAC-SHA-256(storage key, scope ‖ " " ‖ column ‖ (0x00 ‖ row id part)*)[..16]`.
//! Equal keys of two rows therefore do not show as equal columns, and a wrapped key copied into
//! another row or column fails its integrity check on unwrap. A service recognises its storage key
//! by a wrapped check value ([`StorageKey::check_value`], [`StorageKey::opens`]) kept in the
//! database, before it unwraps anything.

use zeroize::Zeroizing;

use crate::hmac::hmac_sha256;
use crate::key_wrap;

/// The key that protects secret keys at rest (16 bytes, from the service's configuration).
/// Every instance sharing a database must have the same one. Prints as `StorageKey(…)`.
#[derive(Clone)]
pub struct StorageKey(Zeroizing<[u8; 16]>);

impl core::fmt::Debug for StorageKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("StorageKey(…)")
    }
}

/// A storage key that is not 32 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("storage key must be 32 hex digits (16 bytes)")]
pub struct StorageKeyError;

/// A wrapped key that does not unwrap under its column and row: altered, moved, or wrapped under
/// another storage key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("wrapped key fails its integrity check")]
pub struct IntegrityError;

impl StorageKey {
    /// A storage key from its bytes.
    #[must_use]
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        StorageKey(Zeroizing::new(bytes))
    }

    /// A storage key from 32 hex digits (as written in a configuration file).
    ///
    /// # Errors
    /// [`StorageKeyError`].
    pub fn from_hex(text: &str) -> Result<Self, StorageKeyError> {
        let mut bytes = Zeroizing::new([0u8; 16]);
        hex::decode_to_slice(text.trim(), &mut bytes[..]).map_err(|_| StorageKeyError)?;
        Ok(StorageKey(bytes))
    }

    /// The KEK for one column of one row of the database `scope`.
    fn kek(&self, scope: &str, column: &str, row: &[&str]) -> Zeroizing<[u8; 16]> {
        let mut parts: Vec<&[u8]> = vec![scope.as_bytes(), b" ", column.as_bytes()];
        for id in row {
            parts.push(&[0]);
            parts.push(id.as_bytes());
        }
        let mac = Zeroizing::new(hmac_sha256(&self.0[..], &parts));
        Zeroizing::new(core::array::from_fn(|i| mac[i]))
    }

    /// `key` wrapped for `column` of the row identified by `row` (RFC 3394: 8 bytes longer).
    ///
    /// # Errors
    /// [`crate::KeyWrapError`] when `key` is not a multiple of 8 bytes of at least 16.
    pub fn wrap(&self, scope: &str, column: &str, row: &[&str], key: &[u8]) -> Result<Vec<u8>, crate::KeyWrapError> {
        key_wrap::wrap(&self.kek(scope, column, row), key)
    }

    /// The key wrapped by [`StorageKey::wrap`] for the same scope, column and row.
    ///
    /// # Errors
    /// [`IntegrityError`].
    pub fn unwrap(
        &self,
        scope: &str,
        column: &str,
        row: &[&str],
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, IntegrityError> {
        key_wrap::unwrap(&self.kek(scope, column, row), wrapped).map_err(|_| IntegrityError)
    }

    /// The value a database of `scope` keeps to recognise its storage key.
    #[must_use]
    pub fn check_value(&self, scope: &str) -> Vec<u8> {
        // Sixteen zero bytes always wrap.
        key_wrap::wrap(&self.kek(scope, "check", &[]), &[0u8; 16]).unwrap_or_default()
    }

    /// Whether `stored` is this key's [`StorageKey::check_value`] for `scope`.
    #[must_use]
    pub fn opens(&self, scope: &str, stored: &[u8]) -> bool {
        key_wrap::unwrap(&self.kek(scope, "check", &[]), stored).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keks_are_bound_to_scope_column_and_row() {
        let key = StorageKey::from_bytes([1; 16]);
        assert_ne!(*key.kek("s", "K", &["a"]), *key.kek("s", "OPc", &["a"]));
        assert_ne!(*key.kek("s", "K", &["a"]), *key.kek("s", "K", &["b"]));
        assert_ne!(*key.kek("s", "K", &["a"]), *key.kek("t", "K", &["a"]));
        assert_ne!(*key.kek("s", "Ks", &["ab", "c"]), *key.kek("s", "Ks", &["a", "bc"]));
        let wrapped = key.wrap("s", "K", &["a"], &[7; 16]).unwrap();
        assert_eq!(&key.unwrap("s", "K", &["a"], &wrapped).unwrap()[..], &[7; 16]);
        assert_eq!(key.unwrap("s", "K", &["b"], &wrapped), Err(IntegrityError));
        assert_eq!(key.unwrap("t", "K", &["a"], &wrapped), Err(IntegrityError));
    }

    #[test]
    fn check_values_recognise_the_key() {
        let key = StorageKey::from_bytes([1; 16]);
        let check = key.check_value("s");
        assert!(key.opens("s", &check));
        assert!(!StorageKey::from_bytes([2; 16]).opens("s", &check));
        assert!(!key.opens("t", &check));
    }

    #[test]
    fn storage_key_from_hex_and_debug() {
        let key = StorageKey::from_hex("000102030405060708090a0b0c0d0e0f").unwrap();
        assert_eq!(*key.0, core::array::from_fn::<u8, 16, _>(|i| i as u8));
        assert_eq!(format!("{key:?}"), "StorageKey(…)");
        assert_eq!(StorageKey::from_hex("0001").unwrap_err(), StorageKeyError);
        assert_eq!(StorageKey::from_hex("zz0102030405060708090a0b0c0d0e0f").unwrap_err(), StorageKeyError);
    }

    /// The derivation is the one the BSF used before this module existed (label
    /// "keycast-bsf-store " then the column), so its databases still open.
    #[test]
    fn bsf_scope_is_unchanged() {
        let key = StorageKey::from_bytes([0x5a; 16]);
        let kek = key.kek("keycast-bsf-store", "K", &["a@x"]);
        let mut parts: Vec<&[u8]> = vec![b"keycast-bsf-store ", b"K"];
        parts.push(&[0]);
        parts.push(b"a@x");
        assert_eq!(&kek[..], &hmac_sha256(&[0x5a; 16], &parts)[..16]);
    }
}
