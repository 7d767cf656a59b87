//! USSD and SIM-toolkit authenticator gateway between an OIDC provider and operators' SMSCs.
//!
//! How a request flows: the north API ([`api`]: native JSON, Keycloak CIBA) hands a start to
//! the authorization manager ([`authorization`]), which routes the number to an operator
//! ([`routing`]), looks the subscriber up ([`subscribers`]), records every step in the durable
//! [`store`], and runs the authorization on a channel ([`channel`]: a USSD dialog or a push to
//! the SIM applet) over the operator's SMPP binds ([`smpp`]). The result goes back to
//! long-pollers and callbacks ([`callback`]); everything is counted in [`metrics`]. [`serve`]
//! wires it all from the [`config`]; [`tls`] holds the rustls setup shared by binds and the API.
//! `docs/architecture.md` follows one authorization through all of it.
//!
//! Modules:
//! - [`api`]: north HTTP API (native JSON, OpenAPI, Keycloak CIBA, bearer clients, limits).
//! - [`authorization`]: the authorization state machine, the manager and the service the API
//!   calls.
//! - [`channel`]: the sans-IO channel router with its USSD and SIM-applet dialogs, and the
//!   tokio driver that runs it over the binds.
//! - [`smpp`]: the ESME side of SMPP: framing, the sans-IO session (one connection) and bind
//!   machine (one bind across connections), the tokio shell. The wire layer (PDU codec, USSD
//!   dialects, SMS-PP) is shared with the simulated SMSC in `sim_applet_model::smpp`.
//! - [`routing`], [`subscribers`]: number ranges and portability; the subscriber registry, PIN
//!   verifiers, provisioning.
//! - [`store`]: durable state (OTA counters, PIN failures and lockouts, authorizations,
//!   idempotency).
//! - [`callback`], [`metrics`], [`config`], [`secret`], [`serve`], [`tls`].

pub mod api;
pub mod authorization;
pub mod callback;
pub mod channel;
pub mod config;
pub mod metrics;
pub mod outbound;
pub mod routing;
pub mod secret;
pub mod serve;
pub mod smpp;
pub mod store;
pub mod subscribers;
pub mod tls;
