//! USSD and SIM-toolkit authenticator gateway between an OIDC provider and operators' SMSCs.
//!
//! Modules:
//! - [`smpp`]: the ESME side of SMPP (framing and PDU decoding, the sans-IO session per bind,
//!   the tokio shell, the USSD dialects and SMS-PP secured-packet transport).
//! - [`channel`]: one authorization over USSD or the SIM applet (sans-IO dialogs) and the
//!   tokio driver that runs them over the binds.

pub mod api;
pub mod callback;
pub mod channel;
pub mod config;
pub mod metrics;
pub mod routing;
pub mod serve;
pub mod session;
pub mod smpp;
pub mod store;
pub mod subscribers;
