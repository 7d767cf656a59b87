//! The channels that carry a consent prompt to the subscriber and bring the answer back.
//!
//! Data flow: a caller asks [`Authorizer::authorize`] (the tokio shell in [`driver`]) for one
//! authorization; it waits for a slot (a `Semaphore` bounds authorizations in flight), then the
//! driver task hands it to the sans-IO [`router`], which starts a machine for the channel: a
//! [`ussd::UssdDialog`] (USSD push in the operator's dialect) or a [`stk::StkPush`] (secured
//! SMS-PP to the SIM applet). The router says what to submit, routes each MO `deliver_sm` to
//! the machine it answers (USSD by MSISDN plus session key, SMS-PP by MSISDN after reassembly,
//! receipts by `message_id`), wakes machines at their deadlines, and gives each authorization
//! exactly one [`AuthResult`]; the driver moves the submissions to the binds and the results to
//! the callers.

pub mod admission;
pub mod driver;
pub mod router;
pub mod stk;
pub mod ussd;

pub use driver::{
    Adoption, AuthChannel, AuthRequest, AuthResult, Authorizer, AuthorizerConfig, PinVerifier,
    StrayAnswers, StraySlot,
};
pub use router::StrayAnswer;
pub use stk::{CardProof, SimFailure, StkOutcome, StkParams, StkPush};
pub use ussd::{UssdDialog, UssdOutcome, UssdPrompt};
