//! Sans-IO model of the handset side of the authenticator, and the wire formats the gateway
//! shares with it.
//!
//! - [`text`]: GSM 03.38 7-bit and UCS2 text, SMS segmentation, USSD limits.
//! - [`ota`]: TS 102 225 / TS 31.115 secured command and response packets.
//! - [`cat`]: TS 102 223 proactive commands, terminal responses and envelopes.
//! - [`applet`]: our Mobile Connect authenticator applet (see `docs/stk-applet-protocol.md`).
//! - [`handset`]: a handset with its SIM and its user, on a virtual clock.
//! - [`udh`]: the SMS user data header and the bounded reassembly of concatenated messages,
//!   shared by every reader.
//! - [`smpp`]: the SMPP wire layer the gateway and the simulated SMSC share: PDU decoding that
//!   never ends the stream, per-operator USSD dialects, SMS-PP to SIM applets.
//!
//! `fuzzing` (hidden from the docs) holds the fuzz targets' checks, so that `cargo test`
//! replays their seed corpus without libFuzzer.
//!
//! Nothing here performs I/O or reads a clock: inputs are bytes and instants, outputs are bytes,
//! actions and the next instant to wake at.

pub mod applet;
pub mod cat;
#[doc(hidden)]
pub mod fuzzing;
pub mod handset;
pub mod ota;
pub mod smpp;
pub mod text;
pub mod udh;
