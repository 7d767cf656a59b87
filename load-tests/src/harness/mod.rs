//! The harness every integration test and `surge` use to bring the system up on loopback.
//!
//! Data flow: [`network::start_smsc`] starts the simulated SMSC with a seeded handset
//! population (optionally recording every MT and MO in a [`network::NetworkLog`] a test can
//! assert on); [`config::GatewayConfigBuilder`] writes the gateway's configuration as TOML, so
//! it goes through the same loading and validation as a deployed one, pointing at that SMSC
//! and generating the subscriber registry from the population's seed; `gateway::serve::start`
//! runs it in-process; [`client::ApiClient`] speaks the native north API over keep-alive
//! HTTP/1.1 (hyper-util's pooled client).

pub mod client;
pub mod config;
pub mod network;
