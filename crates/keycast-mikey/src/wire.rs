//! Wire code points of MIKEY and its MBMS / OMA BCAST extensions, each once, with its clause.

/// Declares a wire enum over an integer type that keeps unknown values (`Unknown(raw)`), so that
/// decoding loses nothing and policy code decides what to refuse.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident : $repr:ty {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal => $spec:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A value this implementation does not know.
            Unknown($repr),
        }

        impl From<$repr> for $name {
            fn from(raw: $repr) -> Self {
                match raw {
                    $( $value => Self::$variant, )+
                    other => Self::Unknown(other),
                }
            }
        }

        impl From<$name> for $repr {
            fn from(value: $name) -> $repr {
                match value {
                    $( $name::$variant => $value, )+
                    $name::Unknown(raw) => raw,
                }
            }
        }

        impl $name {
            /// The name the specification gives this value.
            pub fn spec_name(self) -> &'static str {
                match self {
                    $( Self::$variant => $spec, )+
                    Self::Unknown(_) => "Unknown",
                }
            }
        }

        impl core::fmt::Debug for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                match self {
                    $( Self::$variant => f.write_str(stringify!($variant)), )+
                    Self::Unknown(raw) => write!(f, "Unknown({raw:#x})"),
                }
            }
        }

        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                match self {
                    Self::Unknown(raw) => write!(f, "Unknown ({raw})"),
                    known => write!(f, "{} ({})", known.spec_name(), <$repr>::from(*known)),
                }
            }
        }
    };
}

wire_enum! {
    /// Next-payload / payload type (RFC 3830 §6.1, IANA MIKEY "Next payload"; IDR: RFC 6043).
    pub enum PayloadType: u8 {
        /// No further payload.
        Last = 0 => "Last payload",
        /// Key data transport (RFC 3830 §6.2).
        Kemac = 1 => "KEMAC",
        /// Envelope data (§6.3).
        Pke = 2 => "PKE",
        /// Diffie-Hellman data (§6.4).
        Dh = 3 => "DH",
        /// Signature (§6.5).
        Sign = 4 => "SIGN",
        /// Timestamp (§6.6).
        T = 5 => "T",
        /// Identity (§6.7).
        Id = 6 => "ID",
        /// Certificate (§6.7).
        Cert = 7 => "CERT",
        /// Certificate hash (§6.8).
        Chash = 8 => "CHASH",
        /// Verification (§6.9).
        V = 9 => "V",
        /// Security policy (§6.10).
        Sp = 10 => "SP",
        /// Random value (§6.11).
        Rand = 11 => "RAND",
        /// Error (§6.12).
        Err = 12 => "ERR",
        /// Identity with role (RFC 6043 §6.6).
        Idr = 14 => "IDR",
        /// Key data sub-payload, inside KEMAC (§6.13).
        KeyData = 20 => "Key data",
        /// General extension (§6.15).
        GeneralExt = 21 => "General Extension",
    }
}

wire_enum! {
    /// HDR data type (RFC 3830 §6.1; IANA).
    pub enum DataType: u8 {
        /// Pre-shared key, initiator.
        PskInit = 0 => "Pre-shared",
        /// Pre-shared key, verification.
        PskVerification = 1 => "PSK verification msg",
        /// Public key, initiator.
        PkInit = 2 => "Public key",
        /// Public key, verification.
        PkVerification = 3 => "PK verification msg",
        /// Diffie-Hellman, initiator.
        DhInit = 4 => "D-H init",
        /// Diffie-Hellman, responder.
        DhResponse = 5 => "D-H resp",
        /// Error message.
        Error = 6 => "Error",
    }
}

wire_enum! {
    /// CS ID map type in HDR (RFC 3830 §6.1; empty map: RFC 4563 §5).
    pub enum CsIdMapType: u8 {
        /// One `policy ‖ SSRC ‖ ROC` entry per crypto session.
        SrtpId = 0 => "SRTP-ID",
        /// No map information (RFC 4563).
        Empty = 1 => "Empty map",
    }
}

wire_enum! {
    /// Timestamp type in T (RFC 3830 §6.6; NTP-UTC-32: RFC 6043).
    pub enum TsType: u8 {
        /// 64-bit NTP-UTC.
        NtpUtc = 0 => "NTP-UTC",
        /// 64-bit NTP.
        Ntp = 1 => "NTP",
        /// 32-bit counter (TS 33.246 §6.4.3).
        Counter = 2 => "COUNTER",
        /// 32-bit NTP-UTC (RFC 6043).
        NtpUtc32 = 3 => "NTP-UTC-32",
    }
}

impl TsType {
    /// Length of the timestamp value, when the type is known.
    pub fn value_len(self) -> Option<usize> {
        match self {
            Self::NtpUtc | Self::Ntp => Some(8),
            Self::Counter | Self::NtpUtc32 => Some(4),
            Self::Unknown(_) => None,
        }
    }
}

wire_enum! {
    /// ID type in ID / IDR (RFC 3830 §6.7; byte string: RFC 6043).
    pub enum IdType: u8 {
        /// Network access identifier.
        Nai = 0 => "NAI",
        /// URI.
        Uri = 1 => "URI",
        /// Byte string.
        ByteString = 2 => "Byte string",
    }
}

wire_enum! {
    /// KEMAC encryption algorithm (RFC 3830 §6.2).
    pub enum EncrAlg: u8 {
        /// No encryption.
        Null = 0 => "NULL",
        /// AES counter mode, 128-bit key.
        AesCm128 = 1 => "AES-CM-128",
        /// AES key wrap, 128-bit key.
        AesKw128 = 2 => "AES-KW-128",
    }
}

wire_enum! {
    /// KEMAC MAC algorithm and V authentication algorithm (RFC 3830 §6.2, §6.9).
    pub enum MacAlg: u8 {
        /// No MAC.
        Null = 0 => "NULL",
        /// HMAC-SHA-1, 160-bit tag.
        HmacSha1_160 = 1 => "HMAC-SHA-1-160",
    }
}

impl MacAlg {
    /// Length of the MAC field, when the algorithm is known.
    pub fn mac_len(self) -> Option<usize> {
        match self {
            Self::Null => Some(0),
            Self::HmacSha1_160 => Some(20),
            Self::Unknown(_) => None,
        }
    }
}

wire_enum! {
    /// Key data type, high nibble of the key data sub-payload (RFC 3830 §6.13).
    pub enum KeyDataType: u8 {
        /// TEK generation key.
        Tgk = 0 => "TGK",
        /// TGK followed by a salt.
        TgkSalt = 1 => "TGK+SALT",
        /// Traffic encryption key.
        Tek = 2 => "TEK",
        /// TEK followed by a salt.
        TekSalt = 3 => "TEK+SALT",
    }
}

impl KeyDataType {
    /// Whether a salt length and salt follow the key.
    pub fn has_salt(self) -> bool {
        matches!(self, Self::TgkSalt | Self::TekSalt)
    }
}

wire_enum! {
    /// Key validity type, low nibble of the key data sub-payload (RFC 3830 §6.13).
    pub enum KvType: u8 {
        /// No validity data.
        Null = 0 => "Null",
        /// Security parameter index / MKI.
        SpiMki = 1 => "SPI/MKI",
        /// Validity interval.
        Interval = 2 => "Interval",
    }
}

wire_enum! {
    /// Hash function in CHASH (RFC 3830 §6.8).
    pub enum HashFunc: u8 {
        /// SHA-1, 20 bytes.
        Sha1 = 0 => "SHA-1",
        /// MD5, 16 bytes.
        Md5 = 1 => "MD5",
    }
}

wire_enum! {
    /// Diffie-Hellman group in DH (RFC 3830 §6.4).
    pub enum DhGroup: u8 {
        /// OAKLEY 5, 1536 bits.
        Oakley5 = 0 => "OAKLEY 5",
        /// OAKLEY 1, 768 bits.
        Oakley1 = 1 => "OAKLEY 1",
        /// OAKLEY 2, 1024 bits.
        Oakley2 = 2 => "OAKLEY 2",
    }
}

impl DhGroup {
    /// Length of the DH value in bytes, when the group is known.
    pub fn value_len(self) -> Option<usize> {
        match self {
            Self::Oakley5 => Some(192),
            Self::Oakley1 => Some(96),
            Self::Oakley2 => Some(128),
            Self::Unknown(_) => None,
        }
    }
}

wire_enum! {
    /// General extension type (RFC 3830 §6.15, IANA; Key ID: RFC 4563; OMA BCAST: RFC 5410).
    pub enum ExtType: u8 {
        /// Vendor ID.
        VendorId = 0 => "Vendor ID",
        /// SDP IDs.
        SdpIds = 1 => "SDP IDs",
        /// TESLA I-Key.
        TeslaIKey = 2 => "TESLA I-Key",
        /// MBMS Key ID (RFC 4563 §4).
        KeyId = 3 => "Key ID",
        /// CSB ID.
        CsbId = 4 => "CSB_ID",
        /// OMA BCAST (RFC 5410 §3).
        OmaBcast = 5 => "OMA BCAST",
    }
}

wire_enum! {
    /// Key ID type inside the Key ID extension (RFC 4563 §4; TS 33.246 §6.4.4).
    pub enum KeyIdType: u8 {
        /// MBMS Key Domain ID, 3 bytes.
        KeyDomainId = 0 => "Key Domain ID",
        /// MBMS MSK ID = SEK/PEK ID, 4 bytes.
        MskId = 1 => "MSK ID",
        /// MBMS MTK ID = TEK ID, 2 bytes.
        MtkId = 2 => "MTK ID",
    }
}

wire_enum! {
    /// OMA BCAST extension subtype (RFC 5410 §3).
    pub enum OmaBcastSubtype: u8 {
        /// LTKM extension (profile P-4).
        Ltkm = 1 => "LTKM",
        /// STKM extension (profile P-6).
        Stkm = 2 => "STKM",
        /// LTKM reporting.
        LtkmReporting = 3 => "LTKM Reporting",
        /// Parental control.
        ParentalControl = 4 => "Parental Control",
    }
}

wire_enum! {
    /// Security policy protocol type in SP (RFC 3830 §6.10).
    pub enum ProtType: u8 {
        /// SRTP.
        Srtp = 0 => "SRTP",
    }
}

wire_enum! {
    /// SRTP policy parameter type in SP (RFC 3830 Table 6.10.1.a; RFC 4771 §4).
    pub enum SrtpParam: u8 {
        /// Encryption algorithm (0 NULL, 1 AES-CM, 2 AES-F8).
        EncrAlg = 0 => "Encryption algorithm",
        /// Session encryption key length.
        EncrKeyLen = 1 => "Session Encr. key length",
        /// Authentication algorithm (0 NULL, 1 HMAC-SHA-1, 2-4 RCCm1-3).
        AuthAlg = 2 => "Authentication algorithm",
        /// Session authentication key length.
        AuthKeyLen = 3 => "Session Auth. key length",
        /// Session salt key length.
        SaltKeyLen = 4 => "Session Salt key length",
        /// SRTP pseudo-random function.
        Prf = 5 => "SRTP Pseudo Random Function",
        /// Key derivation rate.
        KeyDerivationRate = 6 => "Key derivation rate",
        /// SRTP encryption on/off.
        SrtpEncryption = 7 => "SRTP encryption off/on",
        /// SRTCP encryption on/off.
        SrtcpEncryption = 8 => "SRTCP encryption off/on",
        /// Sender's FEC order.
        FecOrder = 9 => "Sender's FEC order",
        /// SRTP authentication on/off.
        SrtpAuthentication = 10 => "SRTP authentication off/on",
        /// Authentication tag length.
        AuthTagLen = 11 => "Authentication tag length",
        /// SRTP prefix length.
        PrefixLen = 12 => "SRTP prefix length",
        /// ROC transmission rate R (RFC 4771).
        RocTransmissionRate = 13 => "ROC transmission rate",
        /// SRTP authentication algorithm (RFC 4771).
        SrtpAuthAlg = 14 => "SRTP Auth. algorithm",
        /// SRTCP authentication algorithm (RFC 4771).
        SrtcpAuthAlg = 15 => "SRTCP Auth. algorithm",
        /// SRTP session authentication key length (RFC 4771).
        SrtpAuthKeyLen = 16 => "SRTP Session Auth. key length",
        /// SRTCP session authentication key length (RFC 4771).
        SrtcpAuthKeyLen = 17 => "SRTCP Session Auth. key length",
        /// SRTP authentication tag length (RFC 4771).
        SrtpAuthTagLen = 18 => "SRTP Auth. tag length",
        /// SRTCP authentication tag length (RFC 4771).
        SrtcpAuthTagLen = 19 => "SRTCP Auth. tag length",
    }
}

wire_enum! {
    /// MIKEY error number in ERR (RFC 3830 §6.12).
    pub enum ErrorNo: u8 {
        /// Authentication failure.
        AuthFailure = 0 => "Auth failure",
        /// Invalid timestamp.
        InvalidTs = 1 => "Invalid TS",
        /// Invalid PRF function.
        InvalidPrf = 2 => "Invalid PRF",
        /// Invalid MAC algorithm.
        InvalidMac = 3 => "Invalid MAC",
        /// Invalid encryption algorithm.
        InvalidEa = 4 => "Invalid EA",
        /// Invalid hash function.
        InvalidHa = 5 => "Invalid HA",
        /// Invalid DH group.
        InvalidDh = 6 => "Invalid DH",
        /// Invalid ID.
        InvalidId = 7 => "Invalid ID",
        /// Invalid certificate.
        InvalidCert = 8 => "Invalid Cert",
        /// Invalid SP payload.
        InvalidSp = 9 => "Invalid SP",
        /// Invalid SP parameter.
        InvalidSpPar = 10 => "Invalid SPpar",
        /// Invalid data type.
        InvalidDt = 11 => "Invalid DT",
        /// Unspecified error.
        Unspecified = 12 => "Unspecified error",
    }
}

/// MIKEY version carried in every HDR (RFC 3830 §6.1).
pub const MIKEY_VERSION: u8 = 1;
/// PRF function MIKEY-1 (RFC 3830 §6.1).
pub const PRF_MIKEY_1: u8 = 0;
/// UDP port for MIKEY (IANA; TS 33.246 §6.4.1: MSK/MTK messages).
pub const UDP_PORT_MIKEY: u16 = 2269;
/// UDP port `omabcastltkm` (IANA), profile P-8: LTKM push to OMA BCAST terminals.
pub const UDP_PORT_OMA_BCAST_LTKM: u16 = 4359;
