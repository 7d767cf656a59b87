//! Authorizations: the contract with the north API ([`service`]) and what implements
//! it.
//!
//! Data flow: the API calls [`AuthorizationManager`] (an [`AuthorizationService`]); it routes and
//! admits the request, records each step in the store by compare-and-set ([`state`] holds the
//! state machine's rules and the mapping of channel results to one terminal status), runs the
//! prompt through the operator's channel, and publishes the one ending, once it is durable, to
//! long-pollers and metrics; the deliveries it owes (the callback URL, Keycloak, the audit log
//! ([`audit`])) are written with it and sent by the [`outbox`]. [`pin`] is the gateway's check
//! of PINs typed over USSD, with the lockout kept in the store.
//!
//! [`AuthorizationService`]: service::AuthorizationService

pub mod audit;
pub mod manager;
pub mod outbox;
pub mod pin;
pub mod service;
pub mod state;

pub use audit::AuditLog;
pub use manager::{
    AuthorizationManager, ChannelPort, ManagerDeps, ManagerSettings, Operator, Recovered,
};
pub use outbox::{DeliveryReport, Outbox, OutboxObservers};
pub use pin::{system_clock, UnixClock, UssdPinCheck};

#[cfg(test)]
mod tests;
