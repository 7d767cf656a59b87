//! The simulated network and the load drivers.
//!
//! - [`smsc`]: the simulated SMSC, an SMPP server hosting a simulated radio network of handsets,
//!   SIM applets and users (binary `smsc-sim`).
//! - [`surge`]: the open-workload replay of the renewal day against the gateway (binary
//!   `surge`), in-process or against running processes.
//!
//! - [`harness`]: what every integration test and `surge` use to bring the system up on
//!   loopback: the gateway's configuration, the SMSC with its population, an API client.
//!
//! The binary `smpp-throughput` measures one ESME bind against the simulated SMSC.

pub mod harness;
pub mod smsc;
pub mod surge;
