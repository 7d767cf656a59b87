//! The simulated network and the load drivers.
//!
//! - [`smsc`]: the simulated SMSC, an SMPP server hosting a simulated radio network
//!   (binary `smsc-sim`).

pub mod smsc;
pub mod surge;
