//! `surge`: replays the renewal day against the gateway as an open workload and reports what
//! the whole system did (binary `surge`, docs/load-testing.md).
//!
//! Data flow: [`profile`] turns the day's CSV into a rate curve; [`schedule`] draws the seeded
//! Poisson arrivals over a window of it, compressed in time, each with its subscriber and LoA.
//! [`run`] brings up the system under test ([`environment`]: by default in-process on
//! loopback through the [`crate::harness`], or a running gateway and/or SMSC), then the
//! [`workload`] dispatches every arrival at its scheduled instant to a task that starts the
//! authorization through the [`target`] and long-polls it to its terminal status, writing
//! into the [`report`] recorder; latency counts from the scheduled instant. [`progress`]
//! prints offered vs achieved and samples the gateway's SMPP windows. At the end the
//! [`report`] is built (stdout, JSON) and [`plot`] draws it. [`capacity`] repeats runs at
//! rising compression to find the sustainable rate. [`config`] holds the settings.
//!
//! Chaos runs: [`chaos`] parses a plan of faults (gateway SIGKILL and restart, SMSC outage,
//! throttle storm, malformed PDUs) carried out during the run; the gateway then runs in a
//! child process ([`gateway_process`]), every start asks for a callback to the
//! [`callbacks`] receiver, and after the drain every terminal result is read again:
//! `duplicates` counts results that were not one and the same.

pub mod callbacks;
pub mod capacity;
pub mod chaos;
pub mod config;
pub mod environment;
pub mod following;
pub mod gateway_process;
pub mod html;
pub mod memory;
pub mod nodes;
pub mod plot;
pub mod profile;
pub mod progress;
pub mod report;
pub mod schedule;
pub mod target;
pub mod workload;

pub use capacity::capacity_search;
pub use config::{GatewayMode, ProgressMode, RetryModel, Slo, SmscMode, StoreChoice, SurgeConfig};
pub use workload::{check_slo, run};
