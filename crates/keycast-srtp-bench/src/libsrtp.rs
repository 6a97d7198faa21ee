//! A minimal safe wrapper over libsrtp2 2.x: one session with one master key and an MKI,
//! AES_CM_128_HMAC_SHA1_80 for SRTP and SRTCP, any SSRC, the default 128-packet replay window.
//!
//! The declarations below follow `/usr/include/srtp2/srtp.h` of libsrtp 2.5.0 (the layout has
//! been the same since 2.1, which added `keys`/`num_master_keys`); `build.rs` refuses versions
//! other than 2.1 to 2.x when pkg-config reports one, and the layout is asserted at compile time.

use core::ffi::{c_int, c_uint, c_void};
use std::sync::OnceLock;

mod ffi {
    use core::ffi::{c_int, c_uint, c_ulong, c_void};

    /// `srtp_crypto_policy_t`.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub(super) struct CryptoPolicy {
        pub cipher_type: u32,
        pub cipher_key_len: c_int,
        pub auth_type: u32,
        pub auth_key_len: c_int,
        pub auth_tag_len: c_int,
        /// `srtp_sec_serv_t` (a C enum: int-sized).
        pub sec_serv: c_int,
    }

    /// `srtp_ssrc_t`.
    #[repr(C)]
    pub(super) struct Ssrc {
        /// `srtp_ssrc_type_t`.
        pub kind: c_int,
        pub value: c_uint,
    }

    /// `srtp_master_key_t`.
    #[repr(C)]
    pub(super) struct MasterKey {
        pub key: *mut u8,
        pub mki_id: *mut u8,
        pub mki_size: c_uint,
    }

    /// `srtp_policy_t`.
    #[repr(C)]
    pub(super) struct Policy {
        pub ssrc: Ssrc,
        pub rtp: CryptoPolicy,
        pub rtcp: CryptoPolicy,
        pub key: *mut u8,
        pub keys: *mut *mut MasterKey,
        pub num_master_keys: c_ulong,
        pub deprecated_ekt: *mut c_void,
        pub window_size: c_ulong,
        pub allow_repeat_tx: c_int,
        pub enc_xtn_hdr: *mut c_int,
        pub enc_xtn_hdr_count: c_int,
        pub next: *mut Policy,
    }

    /// `srtp_ssrc_type_t` values.
    pub(super) const SSRC_ANY_INBOUND: c_int = 2;
    pub(super) const SSRC_ANY_OUTBOUND: c_int = 3;

    #[link(name = "srtp2")]
    unsafe extern "C" {
        pub(super) fn srtp_init() -> c_int;
        pub(super) fn srtp_crypto_policy_set_rtp_default(p: *mut CryptoPolicy);
        pub(super) fn srtp_crypto_policy_set_rtcp_default(p: *mut CryptoPolicy);
        pub(super) fn srtp_create(session: *mut *mut c_void, policy: *const Policy) -> c_int;
        pub(super) fn srtp_protect_mki(
            ctx: *mut c_void,
            rtp_hdr: *mut c_void,
            pkt_octet_len: *mut c_int,
            use_mki: c_uint,
            mki_index: c_uint,
        ) -> c_int;
        pub(super) fn srtp_unprotect_mki(
            ctx: *mut c_void,
            srtp_hdr: *mut c_void,
            len_ptr: *mut c_int,
            use_mki: c_uint,
        ) -> c_int;
        pub(super) fn srtp_dealloc(s: *mut c_void) -> c_int;
    }
}

/// A libsrtp error: the `srtp_err_status_t` value (7 auth_fail, 9 replay_fail, 10
/// replay_old, 25 bad_mki, …).
pub type SrtpStatus = c_int;

static INIT: OnceLock<c_int> = OnceLock::new();

fn init() -> Result<(), SrtpStatus> {
    // SAFETY: srtp_init takes no arguments; OnceLock runs it exactly once, before any other
    // libsrtp call (every other entry point goes through `init`).
    match *INIT.get_or_init(|| unsafe { ffi::srtp_init() }) {
        0 => Ok(()),
        e => Err(e),
    }
}

/// One libsrtp session (`srtp_t`): a sender (any outbound SSRC) or a receiver (any inbound
/// SSRC) with one 16-byte master key, 14-byte master salt and MKI.
pub struct Session {
    ctx: *mut c_void,
}

// SAFETY: an srtp_t has no thread affinity; it is only used through &mut self.
unsafe impl Send for Session {}

impl Session {
    /// Room to leave after the packet for [`protect`](Self::protect)
    /// (`SRTP_MAX_TRAILER_LEN` = 16-byte tag + 128-byte MKI).
    pub const TRAILER_ROOM: usize = 144;

    /// A sending session.
    ///
    /// # Errors
    /// libsrtp's status when `srtp_init` or `srtp_create` fail.
    pub fn sender(key: &[u8; 16], salt: &[u8; 14], mki: &[u8]) -> Result<Self, SrtpStatus> {
        Self::new(ffi::SSRC_ANY_OUTBOUND, key, salt, mki)
    }

    /// A receiving session.
    ///
    /// # Errors
    /// libsrtp's status when `srtp_init` or `srtp_create` fail.
    pub fn receiver(key: &[u8; 16], salt: &[u8; 14], mki: &[u8]) -> Result<Self, SrtpStatus> {
        Self::new(ffi::SSRC_ANY_INBOUND, key, salt, mki)
    }

    fn new(ssrc_kind: c_int, key: &[u8; 16], salt: &[u8; 14], mki: &[u8]) -> Result<Self, SrtpStatus> {
        init()?;
        // libsrtp's master key is key ‖ salt (30 bytes for AES-128-CM).
        let mut material = [0u8; 30];
        material[..16].copy_from_slice(key);
        material[16..].copy_from_slice(salt);
        let mut mki_id = mki.to_vec();
        let mut master = ffi::MasterKey {
            key: material.as_mut_ptr(),
            mki_id: mki_id.as_mut_ptr(),
            mki_size: c_uint::try_from(mki.len()).map_err(|_| 2)?,
        };
        let mut keys = [&raw mut master];
        let zero = ffi::CryptoPolicy {
            cipher_type: 0,
            cipher_key_len: 0,
            auth_type: 0,
            auth_key_len: 0,
            auth_tag_len: 0,
            sec_serv: 0,
        };
        let mut policy = ffi::Policy {
            ssrc: ffi::Ssrc { kind: ssrc_kind, value: 0 },
            rtp: zero,
            rtcp: zero,
            key: core::ptr::null_mut(),
            keys: keys.as_mut_ptr(),
            num_master_keys: 1,
            deprecated_ekt: core::ptr::null_mut(),
            window_size: 128,
            allow_repeat_tx: 0,
            enc_xtn_hdr: core::ptr::null_mut(),
            enc_xtn_hdr_count: 0,
            next: core::ptr::null_mut(),
        };
        let mut ctx: *mut c_void = core::ptr::null_mut();
        // SAFETY: the policy pointers are valid, writable crypto-policy structs of the header's
        // layout; `policy` and everything it points to (keys, master, material, mki_id) live
        // until after srtp_create returns, which copies what it keeps; `ctx` is a valid out
        // pointer.
        let status = unsafe {
            ffi::srtp_crypto_policy_set_rtp_default(&raw mut policy.rtp);
            ffi::srtp_crypto_policy_set_rtcp_default(&raw mut policy.rtcp);
            ffi::srtp_create(&raw mut ctx, &raw const policy)
        };
        material.fill(0);
        match status {
            0 if !ctx.is_null() => Ok(Self { ctx }),
            0 => Err(1),
            e => Err(e),
        }
    }

    /// Protects the RTP packet in `buf[..len]` with MKI 0 (`srtp_protect_mki(.., use_mki = 1,
    /// mki_index = 0)`); returns the protected length.
    ///
    /// # Errors
    /// libsrtp's status; `2` (bad_param) when `buf` lacks [`TRAILER_ROOM`](Self::TRAILER_ROOM)
    /// bytes after `len`.
    pub fn protect(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpStatus> {
        if buf.len() < len.saturating_add(Self::TRAILER_ROOM) {
            return Err(2);
        }
        let mut n = c_int::try_from(len).map_err(|_| 2)?;
        // SAFETY: ctx is a live session; buf holds `len` packet bytes followed by at least
        // SRTP_MAX_TRAILER_LEN writable bytes, the most libsrtp appends; n is a valid in/out.
        let status = unsafe { ffi::srtp_protect_mki(self.ctx, buf.as_mut_ptr().cast(), &raw mut n, 1, 0) };
        match status {
            0 => usize::try_from(n).map_err(|_| 1),
            e => Err(e),
        }
    }

    /// Checks and decrypts the SRTP packet that fills `buf` (`srtp_unprotect_mki(.., use_mki =
    /// 1)`); returns the RTP packet's length.
    ///
    /// # Errors
    /// libsrtp's status.
    pub fn unprotect(&mut self, buf: &mut [u8]) -> Result<usize, SrtpStatus> {
        let mut n = c_int::try_from(buf.len()).map_err(|_| 2)?;
        // SAFETY: ctx is a live session; libsrtp reads and writes only within the `n` bytes of
        // buf and only shortens n.
        let status = unsafe { ffi::srtp_unprotect_mki(self.ctx, buf.as_mut_ptr().cast(), &raw mut n, 1) };
        match status {
            0 => usize::try_from(n).map_err(|_| 1),
            e => Err(e),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // SAFETY: ctx came from srtp_create and is deallocated exactly once, here.
        unsafe { ffi::srtp_dealloc(self.ctx) };
    }
}

// The layout of the header on LP64 (x86_64, aarch64 Linux), as gcc reports it for libsrtp
// 2.5.0 (sizeof / offsetof over /usr/include/srtp2/srtp.h).
#[cfg(target_pointer_width = "64")]
const _: () = {
    use core::mem::offset_of;
    assert!(size_of::<ffi::CryptoPolicy>() == 24);
    assert!(size_of::<ffi::MasterKey>() == 24);
    assert!(size_of::<ffi::Policy>() == 128);
    assert!(offset_of!(ffi::Policy, rtp) == 8);
    assert!(offset_of!(ffi::Policy, rtcp) == 32);
    assert!(offset_of!(ffi::Policy, key) == 56);
    assert!(offset_of!(ffi::Policy, keys) == 64);
    assert!(offset_of!(ffi::Policy, num_master_keys) == 72);
    assert!(offset_of!(ffi::Policy, deprecated_ekt) == 80);
    assert!(offset_of!(ffi::Policy, window_size) == 88);
    assert!(offset_of!(ffi::Policy, allow_repeat_tx) == 96);
    assert!(offset_of!(ffi::Policy, enc_xtn_hdr) == 104);
    assert!(offset_of!(ffi::Policy, enc_xtn_hdr_count) == 112);
    assert!(offset_of!(ffi::Policy, next) == 120);
};
