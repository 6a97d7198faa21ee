//! Layer 3 on the air: the broadcaster (BSD/A) of the OMA BCAST Smartcard Profile. It draws a
//! fresh TEK every crypto period, announces each in STKMs sealed under the live SEK/PEK it gets
//! from the BSM, and protects the RTP it is given with the current TEK (profile P-6, P-8, P-9).
//!
//! The core is sans-IO and reads no clock: every time is an argument (Unix milliseconds) and
//! randomness comes from an injected [`RandomSource`].
//!
//! | module | what |
//! |---|---|
//! | [`download`] | file mode: a file sealed as an OMA DRM DCF under a fresh TEK, and the download-form STKM that carries the TEK |
//! | [`keys`] | [`LiveKey`]: a SEK/PEK as the BSM's broadcaster API gives it; [`RandomSource`]; NTP seconds |
//! | [`schedule`] | [`TekSchedule`]: TEK IDs rising from SEQl + 1, a fresh TEK and salt per crypto period, the next TEK announced `lead` ahead, the switch to the next SEK/PEK at its start |
//! | [`stream`] | [`StkmStream`]: STKMs per P-6 (Key ID and OMA BCAST STKM extensions), TS strictly increasing per SEK/PEK, one round a second and at once on every change |
//! | [`protect`] | [`Protector`]: RTP in, SRTP/SRTCP out with MKI = SEK/PEK ID ‖ TEK ID (RFC 3711 or RFC 4771), or ESP |
//! | [`sdp`] | the session description the broadcaster writes |
//! | [`shell`] | the tokio shell: BSM client with refresh and backoff, UDP in and out, STKMs to port 2269, metrics |
//!
//! One tick of the shell, in order: [`TekSchedule::advance`] with the time, then
//! [`Protector::set_tek`] when the current TEK changed, then [`StkmStream::poll`]; wake again at
//! the earlier of [`TekSchedule::next_event`] and [`StkmStream::next_due`], or when a packet
//! arrives.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod download;
pub mod keys;
pub mod protect;
pub mod schedule;
pub mod sdp;
pub mod shell;
pub mod stream;

pub use download::{DownloadError, DownloadPackage, DownloadSettings, package_download};
pub use keys::{LiveKey, NoRandomness, OsRandom, RandomSource, SeededRandom};
pub use protect::{ProtectError, Protector, TrafficMode};
pub use schedule::{ScheduleConfig, ScheduleError, TekEntry, TekSchedule};
pub use stream::{OutStkm, StkmSettings, StkmStream};
