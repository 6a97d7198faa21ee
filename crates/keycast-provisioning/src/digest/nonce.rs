//! Server-side nonce management without IO: stateless, authenticated nonces ([`NonceIssuer`]) and
//! a bounded replay guard for the nonce count ([`NcTracker`]).
//!
//! Layout of the decoded nonce (all base64, standard alphabet with padding):
//!
//! ```text
//! Ub: RAND (16) ‖ AUTN (16) ‖ kind 0x01 ‖ issued_at (8, big-endian Unix seconds) ‖ tag (16)
//! Ua: random (16)           ‖ kind 0x02 ‖ issued_at (8)                          ‖ tag (16)
//! tag = first 16 octets of HMAC-SHA-256(server secret, "keycast-digest-nonce-v1" ‖ all preceding octets)
//! ```
//! For Ub the first 32 octets are RAND ‖ AUTN as TS 24.109 §4 and RFC 3310 §3.2 require
//! (facts-3gpp.md §2.1); what follows is the "server-specific data", whose form is ours.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::collections::{BTreeSet, HashMap};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::header::NonceCount;

const LABEL: &[u8] = b"keycast-digest-nonce-v1";
const TAG_LEN: usize = 16;
const KIND_UB: u8 = 0x01;
const KIND_UA: u8 = 0x02;
const UB_LEN: usize = 32 + 1 + 8 + TAG_LEN;
const UA_LEN: usize = 16 + 1 + 8 + TAG_LEN;
/// Longest nonce text worth decoding (the Ub form is 76 characters).
const MAX_NONCE_TEXT: usize = 128;

/// Why a nonce was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NonceError {
    /// Not base64, wrong length or unknown kind: not a nonce of ours.
    #[error("nonce is malformed")]
    Malformed,
    /// Well-formed, but the tag does not verify: not issued with this secret, or altered.
    #[error("nonce is not authentic")]
    Forged,
    /// Authentic but older than the lifetime: answer with a new challenge and `stale=true`.
    #[error("nonce expired (issued at {issued_at})")]
    Expired {
        /// When it was issued (Unix seconds).
        issued_at: u64,
    },
    /// Authentic but issued later than `now` (beyond the allowed clock step).
    #[error("nonce issued in the future (at {issued_at})")]
    NotYetValid {
        /// When it claims to have been issued (Unix seconds).
        issued_at: u64,
    },
}

/// What kind of nonce was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceKind {
    /// A Ub nonce carrying the AKA challenge.
    Ub {
        /// RAND, octets 0..16.
        rand: [u8; 16],
        /// AUTN (AUTN* for GBA_U), octets 16..32.
        autn: [u8; 16],
    },
    /// A Ua nonce.
    Ua,
}

/// A nonce that passed [`NonceIssuer::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NonceInfo {
    /// Ub (with RAND and AUTN) or Ua.
    pub kind: NonceKind,
    /// When it was issued (Unix seconds).
    pub issued_at: u64,
    /// A unique identifier of this nonce (its tag), used by [`NcTracker`].
    pub id: [u8; TAG_LEN],
}

/// Creates and checks authenticated nonces. Holds the server secret; its `Debug` shows nothing.
pub struct NonceIssuer {
    secret: Zeroizing<[u8; 32]>,
    lifetime: u64,
    max_future: u64,
}

impl std::fmt::Debug for NonceIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonceIssuer").field("lifetime", &self.lifetime).finish_non_exhaustive()
    }
}

impl NonceIssuer {
    /// Default tolerance for nonces dated after `now` (a server clock stepped back): 5 s.
    pub const DEFAULT_MAX_FUTURE: u64 = 5;

    /// An issuer with a 32-octet secret (from the caller's RNG or configuration) and a nonce
    /// lifetime in seconds.
    #[must_use]
    pub fn new(secret: [u8; 32], lifetime_secs: u64) -> Self {
        NonceIssuer { secret: Zeroizing::new(secret), lifetime: lifetime_secs, max_future: Self::DEFAULT_MAX_FUTURE }
    }

    /// Sets how far in the future an issue time may lie (seconds).
    #[must_use]
    pub fn with_max_future(mut self, secs: u64) -> Self {
        self.max_future = secs;
        self
    }

    /// The nonce lifetime in seconds.
    #[must_use]
    pub fn lifetime(&self) -> u64 {
        self.lifetime
    }

    fn tag(&self, data: &[u8]) -> [u8; TAG_LEN] {
        // HMAC accepts keys of any length; a 32-octet key cannot be refused.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.secret[..]).expect("HMAC takes any key length");
        mac.update(LABEL);
        mac.update(data);
        let full: [u8; 32] = mac.finalize().into_bytes().into();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }

    fn seal(&self, mut data: Vec<u8>, kind: u8, now: u64) -> String {
        data.push(kind);
        data.extend_from_slice(&now.to_be_bytes());
        let tag = self.tag(&data);
        data.extend_from_slice(&tag);
        STANDARD.encode(data)
    }

    /// A Ub nonce: base64(RAND ‖ AUTN ‖ server data) (24.109 §4, RFC 3310 §3.2).
    #[must_use]
    pub fn issue_ub(&self, rand: &[u8; 16], autn: &[u8; 16], now: u64) -> String {
        let mut data = Vec::with_capacity(UB_LEN);
        data.extend_from_slice(rand);
        data.extend_from_slice(autn);
        self.seal(data, KIND_UB, now)
    }

    /// A Ua nonce from 16 random octets supplied by the caller.
    #[must_use]
    pub fn issue_ua(&self, random: &[u8; 16], now: u64) -> String {
        self.seal(random.to_vec(), KIND_UA, now)
    }

    /// Checks a received nonce: form, authenticity (constant time), then age.
    ///
    /// # Errors
    /// [`NonceError`]; `Expired` means the client should get a new challenge with `stale=true`.
    pub fn check(&self, nonce: &str, now: u64) -> Result<NonceInfo, NonceError> {
        if nonce.len() > MAX_NONCE_TEXT {
            return Err(NonceError::Malformed);
        }
        let data = STANDARD.decode(nonce).map_err(|_| NonceError::Malformed)?;
        let (prefix_len, kind_byte) = match data.len() {
            UB_LEN => (32, KIND_UB),
            UA_LEN => (16, KIND_UA),
            _ => return Err(NonceError::Malformed),
        };
        if data[prefix_len] != kind_byte {
            return Err(NonceError::Malformed);
        }
        let (signed, tag) = data.split_at(data.len() - TAG_LEN);
        let expected = self.tag(signed);
        if !bool::from(expected.ct_eq(tag)) {
            return Err(NonceError::Forged);
        }
        let mut time = [0u8; 8];
        time.copy_from_slice(&signed[prefix_len + 1..]);
        let issued_at = u64::from_be_bytes(time);
        if issued_at > now.saturating_add(self.max_future) {
            return Err(NonceError::NotYetValid { issued_at });
        }
        if now.saturating_sub(issued_at) > self.lifetime {
            return Err(NonceError::Expired { issued_at });
        }
        let kind = if kind_byte == KIND_UB {
            let mut rand = [0u8; 16];
            let mut autn = [0u8; 16];
            rand.copy_from_slice(&data[..16]);
            autn.copy_from_slice(&data[16..32]);
            NonceKind::Ub { rand, autn }
        } else {
            NonceKind::Ua
        };
        Ok(NonceInfo { kind, issued_at, id: expected })
    }
}

/// How nonce counts are policed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NcPolicy {
    /// A nonce may be answered once (Ub: one AKA challenge, one answer).
    SingleUse,
    /// Each answer must carry a higher `nc` than every earlier one (Ua).
    Increasing,
}

/// Why a nonce count was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NcError {
    /// The `nc` is not above the highest one seen for this nonce (replay or reordering).
    #[error("nonce count {nc} not above {highest}")]
    NotIncreasing {
        /// The received count.
        nc: NonceCount,
        /// The highest count accepted so far.
        highest: NonceCount,
    },
    /// A single-use nonce was already answered.
    #[error("nonce already used")]
    AlreadyUsed,
    /// The nonce is no newer than one the tracker had to forget; it cannot be told apart from a
    /// replay, so the client must get a fresh nonce (`stale=true`).
    #[error("nonce too old to be tracked")]
    Forgotten,
}

/// Remembers, per nonce, the highest `nc` accepted, in bounded memory.
///
/// When full, entries of expired nonces go first; then the oldest entry (by issue time) is
/// evicted, and every nonce issued at or before that time is refused from then on
/// ([`NcError::Forgotten`]), so that forgetting never opens a replay.
///
/// Call [`NcTracker::accept`] only after the response has verified: otherwise anyone could burn a
/// nonce or raise its count.
#[derive(Debug)]
pub struct NcTracker {
    policy: NcPolicy,
    capacity: usize,
    lifetime: u64,
    /// Highest accepted count per nonce id.
    entries: HashMap<[u8; TAG_LEN], NonceCount>,
    /// (issued_at, insertion sequence, id): eviction order.
    order: BTreeSet<(u64, u64, [u8; TAG_LEN])>,
    next_seq: u64,
    forgotten_up_to: Option<u64>,
}

impl NcTracker {
    /// A tracker for at most `capacity` nonces (at least 1) whose nonces live `lifetime_secs`
    /// (the [`NonceIssuer`] lifetime).
    #[must_use]
    pub fn new(policy: NcPolicy, capacity: usize, lifetime_secs: u64) -> Self {
        NcTracker {
            policy,
            capacity: capacity.max(1),
            lifetime: lifetime_secs,
            entries: HashMap::new(),
            order: BTreeSet::new(),
            next_seq: 0,
            forgotten_up_to: None,
        }
    }

    /// Number of nonces remembered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no nonce is remembered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records an answer to a checked nonce with count `nc`, or refuses it.
    ///
    /// # Errors
    /// [`NcError`].
    pub fn accept(&mut self, nonce: &NonceInfo, nc: NonceCount, now: u64) -> Result<(), NcError> {
        if let Some(highest) = self.entries.get_mut(&nonce.id) {
            return match self.policy {
                NcPolicy::SingleUse => Err(NcError::AlreadyUsed),
                NcPolicy::Increasing if nc <= *highest => Err(NcError::NotIncreasing { nc, highest: *highest }),
                NcPolicy::Increasing => {
                    *highest = nc;
                    Ok(())
                }
            };
        }
        if self.forgotten_up_to.is_some_and(|t| nonce.issued_at <= t) {
            return Err(NcError::Forgotten);
        }
        if self.policy == NcPolicy::Increasing && nc.0 == 0 {
            return Err(NcError::NotIncreasing { nc, highest: NonceCount(0) });
        }
        self.make_room(now);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.insert(nonce.id, nc);
        self.order.insert((nonce.issued_at, seq, nonce.id));
        Ok(())
    }

    fn make_room(&mut self, now: u64) {
        // Expired nonces are refused by the issuer anyway: drop them without raising the mark.
        while let Some(&(issued_at, seq, id)) = self.order.first() {
            if now.saturating_sub(issued_at) <= self.lifetime {
                break;
            }
            self.order.remove(&(issued_at, seq, id));
            self.entries.remove(&id);
        }
        while self.entries.len() >= self.capacity {
            let Some((issued_at, _, id)) = self.order.pop_first() else { break };
            self.entries.remove(&id);
            self.forgotten_up_to = Some(self.forgotten_up_to.map_or(issued_at, |t| t.max(issued_at)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAND: [u8; 16] =
        [0x23, 0x55, 0x3c, 0xbe, 0x96, 0x37, 0xa8, 0x9d, 0x21, 0x8a, 0xe6, 0x4d, 0xae, 0x47, 0xbf, 0x35];
    const AUTN: [u8; 16] =
        [0x55, 0xf3, 0x28, 0xb4, 0x35, 0x77, 0xb9, 0xb9, 0x4a, 0x9f, 0xfa, 0xc3, 0x54, 0xdf, 0xaf, 0xb3];
    const T0: u64 = 1_767_182_400;

    fn issuer() -> NonceIssuer {
        NonceIssuer::new([7; 32], 300)
    }

    #[test]
    fn ub_nonce_starts_with_rand_and_autn() {
        let n = issuer().issue_ub(&RAND, &AUTN, T0);
        let raw = STANDARD.decode(&n).unwrap();
        assert_eq!(&raw[..16], &RAND);
        assert_eq!(&raw[16..32], &AUTN);
        // vectors.md §2: base64(RAND ‖ AUTN) = I1U8vpY3qJ0hiuZNrke/NVXzKLQ1d7m5Sp/6w1Tfr7M=
        assert!(n.starts_with("I1U8vpY3qJ0hiuZNrke/NVXzKLQ1d7m5Sp/6w1Tfr7"));
        let info = issuer().check(&n, T0 + 10).unwrap();
        assert_eq!(info.kind, NonceKind::Ub { rand: RAND, autn: AUTN });
        assert_eq!(info.issued_at, T0);
    }

    #[test]
    fn ua_nonce_checks() {
        let n = issuer().issue_ua(&[9; 16], T0);
        let info = issuer().check(&n, T0 + 300).unwrap();
        assert_eq!(info.kind, NonceKind::Ua);
    }

    #[test]
    fn rejects_expired() {
        let n = issuer().issue_ua(&[9; 16], T0);
        assert_eq!(issuer().check(&n, T0 + 301), Err(NonceError::Expired { issued_at: T0 }));
    }

    #[test]
    fn rejects_future() {
        let n = issuer().issue_ua(&[9; 16], T0 + 6);
        assert_eq!(issuer().check(&n, T0), Err(NonceError::NotYetValid { issued_at: T0 + 6 }));
        let n = issuer().issue_ua(&[9; 16], T0 + 5);
        assert!(issuer().check(&n, T0).is_ok());
    }

    #[test]
    fn rejects_every_flipped_byte() {
        let n = issuer().issue_ub(&RAND, &AUTN, T0);
        let raw = STANDARD.decode(&n).unwrap();
        for i in 0..raw.len() {
            let mut bad = raw.clone();
            bad[i] ^= 0x01;
            let r = issuer().check(&STANDARD.encode(&bad), T0);
            // The kind byte makes it malformed; every other byte breaks the tag.
            let expect = if i == 32 { NonceError::Malformed } else { NonceError::Forged };
            assert_eq!(r, Err(expect), "byte {i}");
        }
    }

    #[test]
    fn rejects_other_secret() {
        let n = NonceIssuer::new([8; 32], 300).issue_ua(&[9; 16], T0);
        assert_eq!(issuer().check(&n, T0), Err(NonceError::Forged));
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["", "!!!!", "AAAA", &"A".repeat(200), "I1U8vpY3qJ0hiuZNrke/NVXzKLQ1d7m5Sp/6w1Tfr7M="] {
            assert_eq!(issuer().check(bad, T0), Err(NonceError::Malformed), "{bad}");
        }
    }

    fn info(n: &str, now: u64) -> NonceInfo {
        issuer().check(n, now).unwrap()
    }

    #[test]
    fn increasing_refuses_replay_and_decrease() {
        let mut t = NcTracker::new(NcPolicy::Increasing, 8, 300);
        let i = info(&issuer().issue_ua(&[1; 16], T0), T0);
        assert_eq!(
            t.accept(&i, NonceCount(0), T0),
            Err(NcError::NotIncreasing { nc: NonceCount(0), highest: NonceCount(0) })
        );
        assert_eq!(t.accept(&i, NonceCount(1), T0), Ok(()));
        assert_eq!(
            t.accept(&i, NonceCount(1), T0),
            Err(NcError::NotIncreasing { nc: NonceCount(1), highest: NonceCount(1) })
        );
        assert_eq!(t.accept(&i, NonceCount(3), T0), Ok(()));
        assert_eq!(
            t.accept(&i, NonceCount(2), T0),
            Err(NcError::NotIncreasing { nc: NonceCount(2), highest: NonceCount(3) })
        );
        assert_eq!(t.accept(&i, NonceCount(4), T0), Ok(()));
    }

    #[test]
    fn single_use() {
        let mut t = NcTracker::new(NcPolicy::SingleUse, 8, 300);
        let i = info(&issuer().issue_ub(&RAND, &AUTN, T0), T0);
        assert_eq!(t.accept(&i, NonceCount(1), T0), Ok(()));
        assert_eq!(t.accept(&i, NonceCount(2), T0), Err(NcError::AlreadyUsed));
        assert_eq!(t.accept(&i, NonceCount(1), T0), Err(NcError::AlreadyUsed));
    }

    #[test]
    fn eviction_is_bounded_and_never_reopens_a_replay() {
        let mut t = NcTracker::new(NcPolicy::SingleUse, 3, 300);
        let nonces: Vec<NonceInfo> =
            (0..5u8).map(|k| info(&issuer().issue_ua(&[k; 16], T0 + u64::from(k)), T0 + 10)).collect();
        for n in &nonces {
            assert_eq!(t.accept(n, NonceCount(1), T0 + 10), Ok(()));
            assert!(t.len() <= 3);
        }
        assert_eq!(t.len(), 3);
        // The two oldest were evicted: answering them again is refused, not accepted.
        assert_eq!(t.accept(&nonces[0], NonceCount(1), T0 + 10), Err(NcError::Forgotten));
        assert_eq!(t.accept(&nonces[1], NonceCount(1), T0 + 10), Err(NcError::Forgotten));
        assert_eq!(t.accept(&nonces[4], NonceCount(1), T0 + 10), Err(NcError::AlreadyUsed));
        // A fresh nonce still gets in.
        let fresh = info(&issuer().issue_ua(&[9; 16], T0 + 20), T0 + 20);
        assert_eq!(t.accept(&fresh, NonceCount(1), T0 + 20), Ok(()));
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn expired_entries_leave_first_without_forgetting() {
        let mut t = NcTracker::new(NcPolicy::Increasing, 2, 300);
        let old = info(&issuer().issue_ua(&[1; 16], T0), T0);
        let mid = info(&issuer().issue_ua(&[2; 16], T0 + 100), T0 + 100);
        t.accept(&old, NonceCount(1), T0).unwrap();
        t.accept(&mid, NonceCount(1), T0 + 100).unwrap();
        let later = T0 + 350;
        let new = info(&issuer().issue_ua(&[3; 16], later), later);
        t.accept(&new, NonceCount(1), later).unwrap();
        assert_eq!(t.len(), 2);
        // `old` expired and was dropped quietly; `mid` is still tracked.
        assert_eq!(
            t.accept(&mid, NonceCount(1), later),
            Err(NcError::NotIncreasing { nc: NonceCount(1), highest: NonceCount(1) })
        );
        assert_eq!(t.forgotten_up_to, None);
    }
}
