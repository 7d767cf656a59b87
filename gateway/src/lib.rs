//! USSD and SIM-toolkit authenticator gateway between an OIDC provider and operators' SMSCs.
//!
//! How a request flows: the north API ([`api`]: native JSON, Keycloak CIBA) hands a start to
//! the authorization manager ([`authorization`]), which routes the number to an operator ([`routing`]),
//! looks the subscriber up ([`subscribers`]), records every step in the durable [`store`], and
//! runs the authorization on a channel ([`channel`]: a USSD dialog or a push to the SIM applet)
//! over the operator's SMPP binds ([`smpp`]). The result goes back to long-pollers and
//! callbacks ([`callback`]); everything is counted in [`metrics`]. [`serve`] wires it all from
//! the [`config`]; [`tls`] holds the rustls setup shared by binds and the API.
//!
//! Modules:
//! - [`api`]: north HTTP API (native JSON, OpenAPI, Keycloak CIBA, bearer clients, limits).
//! - [`authorization`]: the authorization state machine and the service the API calls.
//! - [`channel`]: one authorization over USSD or the SIM applet (sans-IO dialogs) and the
//!   tokio driver that runs them over the binds.
//! - [`smpp`]: the ESME side of SMPP (framing and PDU decoding, the sans-IO session per bind,
//!   the tokio shell, the USSD dialects and SMS-PP secured-packet transport).
//! - [`routing`], [`subscribers`]: number ranges and portability; the subscriber registry, PIN
//!   verifiers, lockout policy, provisioning.
//! - [`store`]: durable state (OTA counters, PIN failures, authorizations, idempotency).
//! - [`callback`], [`metrics`], [`config`], [`serve`], [`tls`].

pub mod api;
pub mod authorization;
pub mod callback;
pub mod channel;
pub mod config;
pub mod metrics;
pub mod routing;
pub mod secret;
pub mod serve;
pub mod smpp;
pub mod store;
pub mod subscribers;
pub mod tls;
