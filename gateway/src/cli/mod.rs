//! Command-line interface: clap definitions and dispatch to one module per tool family.
//!
//! Tools write to a caller-supplied writer so that tests read exactly what an operator sees.

mod ota;
mod provision;
mod serve;
mod text;

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// USSD and SIM-toolkit authenticator gateway.
#[derive(Debug, Parser)]
#[command(name = "gateway", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// OTA secured packets (ETSI TS 102 225 / 3GPP TS 31.115): decode captures, build packets.
    #[command(subcommand)]
    Ota(ota::OtaCommand),
    /// GSM 03.38 text: encoding choice, SMS segments, USSD strings.
    #[command(subcommand)]
    Text(text::TextCommand),
    /// Write the subscriber registry of a simulated population (keys inside: mode 0600).
    Provision(provision::ProvisionArgs),
    /// Run the gateway: north API, sessions, SMPP binds (until SIGINT or SIGTERM).
    Serve(serve::ServeArgs),
}

/// Run one parsed command. `Ok(code)` carries the exit status a tool chose (for instance a
/// checksum failure, which is a finding, not a crash).
pub fn run(cli: Cli, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Ota(cmd) => ota::run(cmd, out),
        Command::Text(cmd) => text::run(cmd, out),
        Command::Provision(args) => provision::run(args, out),
        Command::Serve(args) => serve::run(args, out),
    }
}

/// Parse hex given on the command line, tolerating spaces and colons as found in captures.
pub(crate) fn parse_hex(what: &str, s: &str) -> anyhow::Result<Vec<u8>> {
    let clean: String = s
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':')
        .collect();
    let clean = clean
        .strip_prefix("0x")
        .or_else(|| clean.strip_prefix("0X"))
        .unwrap_or(&clean);
    hex::decode(clean).map_err(|e| anyhow::anyhow!("{what}: not valid hex ({e})"))
}

/// Hex with a space between octets, as operators read traces.
pub(crate) fn spaced_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}
