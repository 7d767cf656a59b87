//! The ESME side of SMPP towards operators' SMSCs.
//!
//! Data flows bottom-up: [`framing`] cuts the byte stream into frames, which the shared wire
//! layer (`sim_applet_model::smpp`: PDU decoding, USSD dialects, SMS-PP) decodes into
//! `rusmpp::Command`s (undecodable frames become a `generic_nack` instead of ending the
//! stream); the sans-IO [`session`] runs one connection (bind state, sequence numbers, window,
//! timers, throttle back-off); the sans-IO [`bind_machine`] runs one configured bind across its
//! connections (when to reconnect, the queue carried across reconnects, deadlines, what is
//! re-sent); the tokio shell in [`bind`] only connects, reads, writes and sleeps for it. An operator's several binds are used together by the channel
//! driver (`crate::channel`), which hands each submission to the least loaded bind.

pub mod bind;
pub mod bind_machine;
pub mod framing;
pub mod pacer;
pub mod session;
