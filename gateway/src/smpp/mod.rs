//! The ESME side of SMPP towards operators' SMSCs.
//!
//! Data flows bottom-up: [`pdu`] frames bytes and decodes each frame into a `rusmpp::Command`
//! (undecodable frames become a `generic_nack` instead of ending the stream); the sans-IO
//! [`session`] runs one bind (bind state, sequence numbers, window, timers, throttle back-off)
//! and is driven by the tokio shell in [`bind`], which owns the socket and reconnects (a pool spreading
//! submissions over several binds of one operator is not written yet). [`dialect`] builds and parses the
//! USSD `submit_sm`/`deliver_sm` of one operator's flavour, [`smspp`] the SMS-PP secured packets
//! for SIM applets.

pub mod bind;
pub mod dialect;
pub mod pdu;
pub mod session;
pub mod smspp;
