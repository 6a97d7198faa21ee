//! Bench-only crate: Keycast's SRTP (`keycast_traffic::srtp`) against Debian's libsrtp2 in the
//! same criterion run (issue 6), and an interop check between the two.
//!
//! **This is the one crate in the workspace allowed `unsafe`**: it holds hand-written
//! `extern "C"` declarations of the few libsrtp2 2.x functions and structs it needs (checked
//! against `/usr/include/srtp2/srtp.h` of Debian 12's libsrtp2-dev 2.5.0) and a small safe
//! wrapper, [`libsrtp::Session`]. Every other crate keeps `#![forbid(unsafe_code)]`. It is not
//! published and nothing in Keycast depends on it.
//!
//! `build.rs` looks for libsrtp2 (pkg-config, else `/usr/lib*/libsrtp2.so` with the header) and
//! sets `cfg(have_libsrtp2)`. Without the library the crate still builds; [`HAVE_LIBSRTP2`] is
//! false, and the bench and the interop test print that they were skipped.
//!
//! Debian's libsrtp2 is built against NSS (not OpenSSL), so its AES-CM and HMAC-SHA-1 are
//! NSS's; the figures compare Keycast with that build.

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

use keycast_crypto::keys::{Tek, TekSalt};
use keycast_traffic::srtp::{MKI_LEN, Mki, SrtpMasterKey};

/// Whether libsrtp2 was found and linked when this crate was built.
pub const HAVE_LIBSRTP2: bool = cfg!(have_libsrtp2);

/// The master key used by the bench and the interop check.
pub const MASTER_KEY: [u8; 16] =
    [0xe1, 0xf9, 0x7a, 0x0d, 0x3e, 0x01, 0x8b, 0xe0, 0xd6, 0x4f, 0xa3, 0x2c, 0x06, 0xde, 0x41, 0x39];
/// The master salt used by the bench and the interop check.
pub const MASTER_SALT: [u8; 14] = [0x0e, 0xc6, 0x75, 0xad, 0x49, 0x8a, 0xfe, 0xeb, 0xb6, 0x96, 0x0b, 0x3a, 0xab, 0xe6];
/// The MKI: SEK/PEK ID 0x00010002 ‖ TEK ID 1.
pub const MKI: Mki = Mki::new(0x0001_0002, 1);
/// SSRC of the test stream.
pub const SSRC: u32 = 0xcafe_babe;
/// Bytes an SRTP packet grows by: MKI (6) + HMAC-SHA-1-80 tag (10).
pub const OVERHEAD: usize = MKI_LEN + 10;

/// The Keycast master key for [`MASTER_KEY`], [`MASTER_SALT`] and [`MKI`].
#[must_use]
pub fn keycast_key() -> SrtpMasterKey {
    SrtpMasterKey::new(MKI, Tek::from_bytes(MASTER_KEY), TekSalt::from_bytes(MASTER_SALT))
}

/// An RTP packet of `len` bytes in all (12-byte header, PT 96, [`SSRC`], payload 0xa5…).
///
/// # Panics
/// If `len` < 12.
#[must_use]
pub fn rtp_packet(seq: u16, len: usize) -> Vec<u8> {
    assert!(len >= 12, "an RTP packet has at least 12 bytes");
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&u32::from(seq).wrapping_mul(160).to_be_bytes());
    p.extend_from_slice(&SSRC.to_be_bytes());
    p.extend((0..len - 12).map(|i| 0xa5 ^ (i as u8)));
    p
}

#[cfg(have_libsrtp2)]
pub mod libsrtp;

#[cfg(have_libsrtp2)]
pub use check::cross_check;

#[cfg(have_libsrtp2)]
mod check {
    use keycast_traffic::srtp::{SrtpPolicy, SrtpReceiver, SrtpSender};

    use crate::libsrtp::Session;
    use crate::{MASTER_KEY, MASTER_SALT, MKI, OVERHEAD, keycast_key, rtp_packet};

    /// Interop check for RTP packets of `len` bytes and sequence numbers `seqs`: libsrtp's
    /// protected packet must equal Keycast's byte for byte, Keycast must unprotect libsrtp's
    /// packet and libsrtp Keycast's, both giving the original RTP packet back.
    ///
    /// # Errors
    /// A description of the first difference.
    pub fn cross_check(len: usize, seqs: impl IntoIterator<Item = u16>) -> Result<(), String> {
        let key = keycast_key();
        let mki = MKI.to_bytes();
        let mut k_tx = SrtpSender::new(SrtpPolicy::rfc3711(), &key);
        let mut k_rx = SrtpReceiver::new(SrtpPolicy::rfc3711());
        k_rx.add_key(&key);
        let mut l_tx = Session::sender(&MASTER_KEY, &MASTER_SALT, &mki).map_err(|e| format!("srtp_create: {e}"))?;
        let mut l_rx = Session::receiver(&MASTER_KEY, &MASTER_SALT, &mki).map_err(|e| format!("srtp_create: {e}"))?;
        for seq in seqs {
            let plain = rtp_packet(seq, len);
            let mut ours = vec![0; len + Session::TRAILER_ROOM];
            ours[..len].copy_from_slice(&plain);
            let n = k_tx.protect_in(&mut ours, len).map_err(|e| format!("Keycast protect seq {seq}: {e}"))?;
            ours.truncate(n);
            let mut theirs = vec![0; len + Session::TRAILER_ROOM];
            theirs[..len].copy_from_slice(&plain);
            let m = l_tx.protect(&mut theirs, len).map_err(|e| format!("libsrtp protect seq {seq}: error {e}"))?;
            theirs.truncate(m);
            if n != len + OVERHEAD || ours != theirs {
                return Err(format!(
                    "seq {seq}: protected packets differ (Keycast {n} bytes, libsrtp {m} bytes; trailers {:02x?} vs {:02x?})",
                    &ours[n.saturating_sub(OVERHEAD)..],
                    &theirs[m.saturating_sub(OVERHEAD)..]
                ));
            }
            let mut a = theirs.clone();
            let r = k_rx.unprotect_in(&mut a).map_err(|e| format!("Keycast unprotect of libsrtp's seq {seq}: {e}"))?;
            if a[..r] != plain[..] {
                return Err(format!("seq {seq}: Keycast decrypted libsrtp's packet to something else"));
            }
            let mut b = ours;
            let r =
                l_rx.unprotect(&mut b).map_err(|e| format!("libsrtp unprotect of Keycast's seq {seq}: error {e}"))?;
            if b[..r] != plain[..] {
                return Err(format!("seq {seq}: libsrtp decrypted Keycast's packet to something else"));
            }
        }
        Ok(())
    }
}
