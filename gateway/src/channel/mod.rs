//! The channels that carry a consent prompt to the subscriber and bring the answer back.
//!
//! Data flow: a caller asks [`Authorizer::authorize`] (the tokio shell in [`driver`]) for one
//! authorization; it waits for a slot (a `Semaphore` bounds authorizations in flight), then the
//! driver task starts a sans-IO state machine for the channel: a [`ussd::UssdDialog`] (USSD
//! push in the operator's dialect) or a [`stk::StkPush`] (secured SMS-PP to the SIM applet).
//! The driver sends what the machine queues through the SMPP binds, routes each MO
//! `deliver_sm` to the machine it answers (USSD by MSISDN plus session key, SMS-PP by MSISDN
//! plus OTA counter after reassembly), wakes machines at their deadlines, and hands each
//! caller exactly one [`AuthResult`].

pub mod driver;
pub mod stk;
pub mod ussd;

pub use driver::{AuthChannel, AuthRequest, AuthResult, Authorizer, AuthorizerConfig, PinVerifier};
pub use stk::{CardProof, SimFailure, StkOutcome, StkParams, StkPush};
pub use ussd::{UssdDialog, UssdOutcome, UssdPrompt};
