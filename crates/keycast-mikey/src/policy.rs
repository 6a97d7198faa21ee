//! The SRTP security policy an LTKM of a streaming service carries in its SP payload
//! (RFC 3830 §6.10.1, RFC 4771 §4; profile P-11.1).

use crate::codec::EncodeError;
use crate::payload::{Sp, encode_sp_params};
use crate::wire::{ProtType, SrtpParam};

/// An SRTP policy: a policy number and its parameters in wire order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SrtpPolicy {
    /// Policy number (the SRTP-ID map entry names it).
    pub policy_no: u8,
    /// Parameters as `(type, value)`, in the order they are written.
    pub params: Vec<(u8, Vec<u8>)>,
}

impl SrtpPolicy {
    /// Keycast's policy (profile P-11.1): policy 0, AES-CM, HMAC-SHA-1, key derivation rate 0,
    /// 80-bit tag, and the RFC 4771 ROC transmission rate R only when the transform is used.
    pub fn keycast(roc_rate: Option<u16>) -> Self {
        let mut params = vec![
            (SrtpParam::EncrAlg.into(), vec![1]),
            (SrtpParam::AuthAlg.into(), vec![1]),
            (SrtpParam::KeyDerivationRate.into(), vec![0, 0, 0, 0]),
            (SrtpParam::AuthTagLen.into(), vec![10]),
        ];
        if let Some(r) = roc_rate {
            params.push((SrtpParam::RocTransmissionRate.into(), r.to_be_bytes().to_vec()));
        }
        Self { policy_no: 0, params }
    }

    /// Copies a decoded SP payload.
    pub fn from_sp(sp: &Sp<'_>) -> Self {
        Self { policy_no: sp.policy_no, params: sp.params().map(|(t, v)| (t, v.to_vec())).collect() }
    }

    /// The value of parameter `ty`, as an unsigned integer of any width up to 8 bytes.
    pub fn param_uint(&self, ty: SrtpParam) -> Option<u64> {
        let ty = u8::from(ty);
        let (_, v) = self.params.iter().find(|(t, _)| *t == ty)?;
        (v.len() <= 8).then(|| v.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    /// RFC 4771 ROC transmission rate R; `None` means plain RFC 3711 (profile P-11.2).
    pub fn roc_rate(&self) -> Option<u16> {
        self.param_uint(SrtpParam::RocTransmissionRate).and_then(|r| u16::try_from(r).ok())
    }

    /// Appends the SP payload body (after its next-payload byte).
    pub(crate) fn encode_body(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let params: Vec<(u8, &[u8])> = self.params.iter().map(|(t, v)| (*t, v.as_slice())).collect();
        let raw = encode_sp_params(&params)?;
        out.extend_from_slice(&[self.policy_no, ProtType::Srtp.into()]);
        crate::codec::put_prefixed(out, 2, "Policy param", &raw)
    }
}
