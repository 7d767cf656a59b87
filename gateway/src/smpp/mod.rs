//! The ESME side of SMPP towards operators' SMSCs.
//!
//! Data flows bottom-up: [`framing`] cuts the byte stream into frames, which the shared wire
//! layer (`sim_applet_model::smpp`: PDU decoding, USSD dialects, SMS-PP) decodes into
//! `rusmpp::Command`s (undecodable frames become a `generic_nack` instead of ending the
//! stream); the sans-IO [`session`] runs one bound connection (bind state, sequence numbers,
//! window, timers, throttle back-off) and is driven by the tokio shell in [`bind`], which owns
//! the socket and reconnects. An operator's several binds are used together by the channel
//! driver (`crate::channel`), which hands each submission to the least loaded bind.

pub mod bind;
pub mod framing;
pub mod session;
