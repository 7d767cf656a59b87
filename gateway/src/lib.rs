//! USSD and SIM-toolkit authenticator gateway between an OIDC provider and operators' SMSCs.
//!
//! Modules:
//! - [`smpp`]: the ESME side of SMPP (framing and PDU decoding, the sans-IO session per bind,
//!   the tokio shell, the USSD dialects and SMS-PP secured-packet transport).

pub mod smpp;
