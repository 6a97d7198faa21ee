//! Why the card refused a command, and the status word each refusal answers with.

/// A refusal by the card. [`CardError::status_word`] maps each to its TS 31.102 §7.3 word in one
/// place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CardError {
    /// 6A88: referenced data (key) not found.
    #[error("key not found")]
    KeyNotFound,
    /// 6985: conditions of use not satisfied.
    #[error("conditions of use not satisfied: {0}")]
    ConditionsOfUse(&'static str),
    /// 9862: authentication error, incorrect MAC.
    #[error("authentication error: incorrect MAC")]
    Mac,
    /// 9862 as well: the MIKEY message fails validation before its MAC can be checked (malformed,
    /// or not what the profile allows); MGV-F cannot validate it.
    #[error("MIKEY message validation failed: {0}")]
    Malformed(String),
    /// 9865: key freshness failure.
    #[error("key freshness failure: {0}")]
    Freshness(&'static str),
    /// 9866: no memory space available.
    #[error("no memory space available")]
    NoMemory,
    /// 9867: no memory space available in EF_MUK.
    #[error("no memory space available in EF_MUK")]
    NoMukMemory,
    /// 6982: security status not satisfied (e.g. a TEK that needs the secure channel).
    #[error("security status not satisfied: {0}")]
    SecurityStatus(&'static str),
    /// 9864: security context not supported (the card has no such context or mode).
    #[error("security context not supported")]
    ContextNotSupported,
    /// An error word the card answered that this library does not model.
    #[error("card answered status word {0:04X}")]
    Other(u16),
}

impl CardError {
    /// The status word (TS 31.102 §7.3; ISO 7816-4 for 6982, 6985, 6A88).
    pub fn status_word(&self) -> u16 {
        match self {
            Self::KeyNotFound => 0x6a88,
            Self::ConditionsOfUse(_) => 0x6985,
            Self::Mac | Self::Malformed(_) => 0x9862,
            Self::Freshness(_) => 0x9865,
            Self::NoMemory => 0x9866,
            Self::NoMukMemory => 0x9867,
            Self::SecurityStatus(_) => 0x6982,
            Self::ContextNotSupported => 0x9864,
            Self::Other(sw) => *sw,
        }
    }

    /// The refusal a status word stands for, as seen by a terminal talking to a card.
    pub fn from_status_word(sw: u16) -> Self {
        match sw {
            0x6a88 => Self::KeyNotFound,
            0x6985 => Self::ConditionsOfUse("card refused (6985)"),
            0x9862 => Self::Mac,
            0x9865 => Self::Freshness("card reported a key freshness failure (9865)"),
            0x9866 => Self::NoMemory,
            0x9867 => Self::NoMukMemory,
            0x6982 => Self::SecurityStatus("card refused (6982)"),
            0x9864 => Self::ContextNotSupported,
            other => Self::Other(other),
        }
    }
}
