//! Milenage (TS 35.206) and the AKA values built from it (TS 33.102 §6.3), plus the GBA_U
//! variants of TS 33.220 §5.3.2.
//!
//! [`Milenage`] keeps the expanded AES-128 key schedule of K and OPc, so a full
//! authentication vector costs six AES blocks and no key setup.

use core::fmt;

use aes::Aes128;
use aes::cipher::{Block, BlockCipherEncrypt, KeyInit};
use sha1::{Digest, Sha1};
use zeroize::Zeroizing;

use crate::keys::{Ck, Ik, Op, Opc, Res, SubscriberKey};
use crate::{AutnError, AutsError};

/// AMF used for MAC-S in AUTS: all zeros (TS 33.102 §6.3.3; facts-3gpp.md §7 has it from
/// hostapd, and it reproduces the AUTS of vectors.md §2).
const RESYNC_AMF: [u8; 2] = [0, 0];

/// Rotation amounts r1..r5 in bytes and the last byte of constants c1..c5 (TS 35.206 §4.1).
/// All constants are zero except their last byte, so XOR-ing that one byte is enough.
const R: [usize; 5] = [8, 0, 4, 8, 12];
const C: [u8; 5] = [0, 1, 2, 4, 8];

/// E_K for one block.
fn encrypt(aes: &Aes128, input: [u8; 16]) -> [u8; 16] {
    let mut block = Block::<Aes128>::from(input);
    aes.encrypt_block(&mut block);
    block.into()
}

fn xor16(a: &[u8; 16], b: &[u8; 16]) -> [u8; 16] {
    core::array::from_fn(|i| a[i] ^ b[i])
}

/// rot(x, r) XOR c, with r a whole number of bytes (TS 35.206 §4.1: rotate left, bit 0 leftmost).
fn rot_xor_c(x: &[u8; 16], r_bytes: usize, c_last: u8) -> [u8; 16] {
    let mut out: [u8; 16] = core::array::from_fn(|i| x[(i + r_bytes) % 16]);
    out[15] ^= c_last;
    out
}

impl Opc {
    /// OPc = OP XOR E_K(OP) (TS 35.206 §4.1).
    #[must_use]
    pub fn from_op(k: &SubscriberKey, op: &Op) -> Opc {
        let aes = Aes128::new(k.expose_secret().into());
        let e = Zeroizing::new(encrypt(&aes, *op.expose_secret()));
        Opc::from_bytes(xor16(op.expose_secret(), &e))
    }
}

/// Every Milenage output for one (RAND, SQN, AMF).
pub struct MilenageOutput {
    /// f1: MAC-A, network authentication code.
    pub mac_a: [u8; 8],
    /// f1*: MAC-S, resynchronisation authentication code.
    pub mac_s: [u8; 8],
    /// f2: RES.
    pub res: Res,
    /// f3: CK.
    pub ck: Ck,
    /// f4: IK.
    pub ik: Ik,
    /// f5: AK, anonymity key.
    pub ak: [u8; 6],
    /// f5*: AK*, resynchronisation anonymity key.
    pub ak_star: [u8; 6],
}

impl fmt::Debug for MilenageOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MilenageOutput(…)")
    }
}

/// The result of a successful AUTN check: the values the card now knows.
pub struct AutnCheck {
    /// SQN recovered from AUTN; the caller decides whether it is fresh (see [`SqnWindow`]).
    pub sqn: [u8; 6],
    /// AMF from AUTN.
    pub amf: [u8; 2],
    /// RES to return to the network.
    pub res: Res,
    /// CK.
    pub ck: Ck,
    /// IK.
    pub ik: Ik,
}

impl fmt::Debug for AutnCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AutnCheck").field("sqn", &self.sqn).field("amf", &self.amf).finish_non_exhaustive()
    }
}

/// Milenage keyed with K and OPc. The AES key schedule and OPc are wiped on drop.
#[derive(Clone)]
pub struct Milenage {
    aes: Aes128,
    opc: Opc,
}

impl fmt::Debug for Milenage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Milenage(…)")
    }
}

impl Milenage {
    /// Expands K once and keeps OPc.
    #[must_use]
    pub fn new(k: &SubscriberKey, opc: &Opc) -> Self {
        Self { aes: Aes128::new(k.expose_secret().into()), opc: opc.clone() }
    }

    /// Like [`Milenage::new`], computing OPc from OP first.
    #[must_use]
    pub fn with_op(k: &SubscriberKey, op: &Op) -> Self {
        Self::new(k, &Opc::from_op(k, op))
    }

    fn opc(&self) -> &[u8; 16] {
        self.opc.expose_secret()
    }

    /// TEMP = E_K(RAND XOR OPc).
    fn temp(&self, rand: &[u8; 16]) -> Zeroizing<[u8; 16]> {
        Zeroizing::new(encrypt(&self.aes, xor16(rand, self.opc())))
    }

    /// OUT1 = E_K(TEMP XOR rot(IN1 XOR OPc, r1) XOR c1) XOR OPc.
    fn out1(&self, temp: &[u8; 16], sqn: [u8; 6], amf: [u8; 2]) -> Zeroizing<[u8; 16]> {
        let mut in1 = [0u8; 16];
        in1[..6].copy_from_slice(&sqn);
        in1[6..8].copy_from_slice(&amf);
        in1[8..14].copy_from_slice(&sqn);
        in1[14..].copy_from_slice(&amf);
        let x = rot_xor_c(&xor16(&in1, self.opc()), R[0], C[0]);
        Zeroizing::new(xor16(&encrypt(&self.aes, xor16(&x, temp)), self.opc()))
    }

    /// OUTi = E_K(rot(TEMP XOR OPc, ri) XOR ci) XOR OPc for i = 2..=5.
    fn out_i(&self, temp: &[u8; 16], i: usize) -> Zeroizing<[u8; 16]> {
        let x = rot_xor_c(&xor16(temp, self.opc()), R[i - 1], C[i - 1]);
        Zeroizing::new(xor16(&encrypt(&self.aes, x), self.opc()))
    }

    /// f1: MAC-A.
    #[must_use]
    pub fn f1(&self, rand: &[u8; 16], sqn: [u8; 6], amf: [u8; 2]) -> [u8; 8] {
        first::<8>(&self.out1(&self.temp(rand), sqn, amf)[..8])
    }

    /// f1*: MAC-S.
    #[must_use]
    pub fn f1_star(&self, rand: &[u8; 16], sqn: [u8; 6], amf: [u8; 2]) -> [u8; 8] {
        first::<8>(&self.out1(&self.temp(rand), sqn, amf)[8..])
    }

    /// f2, f3, f4, f5: (RES, CK, IK, AK).
    #[must_use]
    pub fn f2345(&self, rand: &[u8; 16]) -> (Res, Ck, Ik, [u8; 6]) {
        let temp = self.temp(rand);
        let out2 = self.out_i(&temp, 2);
        (
            Res::from_bytes(first::<8>(&out2[8..])),
            Ck::from_bytes(*self.out_i(&temp, 3)),
            Ik::from_bytes(*self.out_i(&temp, 4)),
            first::<6>(&out2[..]),
        )
    }

    /// f5*: AK*.
    #[must_use]
    pub fn f5_star(&self, rand: &[u8; 16]) -> [u8; 6] {
        first::<6>(&self.out_i(&self.temp(rand), 5)[..])
    }

    /// f3 and f4 only: (CK, IK).
    fn ck_ik(&self, temp: &[u8; 16]) -> (Ck, Ik) {
        (Ck::from_bytes(*self.out_i(temp, 3)), Ik::from_bytes(*self.out_i(temp, 4)))
    }

    /// Every function at once: TEMP is computed once and OUT1..OUT5 go through AES together.
    #[must_use]
    pub fn all(&self, rand: &[u8; 16], sqn: [u8; 6], amf: [u8; 2]) -> MilenageOutput {
        let temp = self.temp(rand);
        let opc = self.opc();
        let mut in1 = [0u8; 16];
        in1[..6].copy_from_slice(&sqn);
        in1[6..8].copy_from_slice(&amf);
        in1[8..14].copy_from_slice(&sqn);
        in1[14..].copy_from_slice(&amf);
        let t_opc = Zeroizing::new(xor16(&temp, opc));
        let x1 = rot_xor_c(&xor16(&in1, opc), R[0], C[0]);
        let mut out = Zeroizing::new([[0u8; 16]; 5]);
        out[0] = xor16(&x1, &temp);
        for i in 1..5 {
            out[i] = rot_xor_c(&t_opc, R[i], C[i]);
        }
        self.aes.encrypt_blocks(Block::<Aes128>::cast_slice_from_core_mut(&mut out[..]));
        for block in out.iter_mut() {
            *block = xor16(block, opc);
        }
        MilenageOutput {
            mac_a: first::<8>(&out[0][..8]),
            mac_s: first::<8>(&out[0][8..]),
            res: Res::from_bytes(first::<8>(&out[1][8..])),
            ck: Ck::from_bytes(out[2]),
            ik: Ik::from_bytes(out[3]),
            ak: first::<6>(&out[1][..]),
            ak_star: first::<6>(&out[4][..]),
        }
    }

    /// AUTN = (SQN XOR AK) ‖ AMF ‖ MAC-A (TS 33.102 §6.3.2).
    #[must_use]
    pub fn build_autn(&self, sqn: [u8; 6], amf: [u8; 2], rand: &[u8; 16]) -> [u8; 16] {
        let temp = self.temp(rand);
        let ak = first::<6>(&self.out_i(&temp, 2)[..]);
        let mac_a = first::<8>(&self.out1(&temp, sqn, amf)[..8]);
        let mut autn = [0u8; 16];
        for i in 0..6 {
            autn[i] = sqn[i] ^ ak[i];
        }
        autn[6..8].copy_from_slice(&amf);
        autn[8..].copy_from_slice(&mac_a);
        autn
    }

    /// Checks AUTN on the card side (TS 33.102 §6.3.3): recovers SQN with AK, then compares
    /// MAC-A in constant time. SQN freshness is the caller's decision ([`SqnWindow`]).
    pub fn check_autn(&self, rand: &[u8; 16], autn: &[u8; 16]) -> Result<AutnCheck, AutnError> {
        self.check_autn_inner(rand, autn, false)
    }

    /// Checks an AUTN* of GBA_U (TS 33.220 §5.3.2): MAC = MAC* XOR Trunc(SHA-1(IK)), then as
    /// [`Milenage::check_autn`].
    pub fn check_autn_star(&self, rand: &[u8; 16], autn_star: &[u8; 16]) -> Result<AutnCheck, AutnError> {
        self.check_autn_inner(rand, autn_star, true)
    }

    fn check_autn_inner(&self, rand: &[u8; 16], autn: &[u8; 16], starred: bool) -> Result<AutnCheck, AutnError> {
        let temp = self.temp(rand);
        let out2 = self.out_i(&temp, 2);
        let (ck, ik) = self.ck_ik(&temp);
        let autn = if starred { gba_u_autn_star(autn, &ik) } else { *autn };
        let sqn: [u8; 6] = core::array::from_fn(|i| autn[i] ^ out2[i]);
        let amf = [autn[6], autn[7]];
        let xmac = self.out1(&temp, sqn, amf);
        if !crate::hmac::ct_eq(&xmac[..8], &autn[8..]) {
            return Err(AutnError::MacFailure);
        }
        Ok(AutnCheck { sqn, amf, res: Res::from_bytes(first::<8>(&out2[8..])), ck, ik })
    }

    /// AUTS = (SQN_MS XOR AK*) ‖ MAC-S, MAC-S = f1*(SQN_MS, RAND, AMF = 0000)
    /// (TS 33.102 §6.3.3).
    #[must_use]
    pub fn build_auts(&self, rand: &[u8; 16], sqn_ms: [u8; 6]) -> [u8; 14] {
        let temp = self.temp(rand);
        let ak_star = first::<6>(&self.out_i(&temp, 5)[..]);
        let mac_s = first::<8>(&self.out1(&temp, sqn_ms, RESYNC_AMF)[8..]);
        let mut auts = [0u8; 14];
        for i in 0..6 {
            auts[i] = sqn_ms[i] ^ ak_star[i];
        }
        auts[6..].copy_from_slice(&mac_s);
        auts
    }

    /// Network side of resynchronisation (TS 33.102 §6.3.5): recovers SQN_MS from AUTS and
    /// checks MAC-S in constant time.
    pub fn recover_sqn_ms(&self, rand: &[u8; 16], auts: &[u8; 14]) -> Result<[u8; 6], AutsError> {
        let temp = self.temp(rand);
        let ak_star = self.out_i(&temp, 5);
        let sqn_ms: [u8; 6] = core::array::from_fn(|i| auts[i] ^ ak_star[i]);
        let xmac_s = self.out1(&temp, sqn_ms, RESYNC_AMF);
        if crate::hmac::ct_eq(&xmac_s[8..], &auts[6..]) { Ok(sqn_ms) } else { Err(AutsError::MacFailure) }
    }
}

fn first<const N: usize>(bytes: &[u8]) -> [u8; N] {
    core::array::from_fn(|i| bytes[i])
}

/// Trunc(SHA-1(IK)): the first 64 bits of SHA-1(IK) (TS 33.220 §5.3.2).
fn sha1_ik_trunc(ik: &Ik) -> Zeroizing<[u8; 8]> {
    let digest = Zeroizing::new(<[u8; 20]>::from(Sha1::digest(ik.expose_secret())));
    Zeroizing::new(first::<8>(&digest[..]))
}

/// GBA_U MAC* = MAC XOR Trunc(SHA-1(IK)) (TS 33.220 §5.3.2). The same XOR turns MAC* back
/// into MAC.
#[must_use]
pub fn gba_u_mac_star(mac: &[u8; 8], ik: &Ik) -> [u8; 8] {
    let t = sha1_ik_trunc(ik);
    core::array::from_fn(|i| mac[i] ^ t[i])
}

/// The inverse of [`gba_u_mac_star`]: MAC = MAC* XOR Trunc(SHA-1(IK)).
#[must_use]
pub fn gba_u_mac_from_star(mac_star: &[u8; 8], ik: &Ik) -> [u8; 8] {
    gba_u_mac_star(mac_star, ik)
}

/// Replaces the MAC field of an AUTN by MAC* (AUTN → AUTN*), or back (AUTN* → AUTN).
#[must_use]
pub fn gba_u_autn_star(autn: &[u8; 16], ik: &Ik) -> [u8; 16] {
    let mut out = *autn;
    out[8..].copy_from_slice(&gba_u_mac_star(&first::<8>(&autn[8..]), ik));
    out
}

/// RES with its least significant bit flipped: what a GBA_U UICC returns and what the BSF
/// stores as XRES (TS 33.220 §5.3.2).
#[must_use]
pub fn flip_res_lsb(res: &Res) -> Res {
    let mut bytes = Zeroizing::new(*res.expose_secret());
    bytes[7] ^= 1;
    Res::from_bytes(*bytes)
}

/// SQN as a 48-bit integer.
#[must_use]
pub fn sqn_to_u64(sqn: [u8; 6]) -> u64 {
    sqn.iter().fold(0, |acc, &b| (acc << 8) | u64::from(b))
}

/// The low 48 bits of `value` as an SQN.
#[must_use]
pub fn sqn_from_u64(value: u64) -> [u8; 6] {
    first::<6>(&value.to_be_bytes()[2..])
}

/// A simple SQN freshness rule for the card side: accept SQN when
/// `SQN_MS < SQN ≤ SQN_MS + delta`, SQN_MS being the highest SQN accepted so far.
///
/// This is a simplification of TS 33.102 Annex C (no IND array): a replayed or old SQN, and
/// one that jumps too far ahead, both lead to resynchronisation with AUTS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqnWindow {
    /// Largest accepted step ahead of SQN_MS.
    pub delta: u64,
}

impl Default for SqnWindow {
    /// delta = 2^28 [chosen by Keycast]; the operator sets its own limit.
    fn default() -> Self {
        Self { delta: 1 << 28 }
    }
}

impl SqnWindow {
    /// Whether `sqn` is fresh compared with `sqn_ms`.
    #[must_use]
    pub fn accepts(&self, sqn_ms: [u8; 6], sqn: [u8; 6]) -> bool {
        let (ms, s) = (sqn_to_u64(sqn_ms), sqn_to_u64(sqn));
        s > ms && s - ms <= self.delta
    }
}
