//! `gateway provision`: write the subscriber file of a simulated population.
//!
//! The file holds OTA keys, so it is created with mode 0600; the PIN pepper comes from an
//! environment variable or a file, never from the command line (which `ps` shows).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use gateway::config::{ProvisionParams, SecretSource};
use gateway::subscribers::provision::write_file;
use gateway::subscribers::Pepper;

/// Generate the subscriber registry from a population seed.
#[derive(Debug, Args)]
pub struct ProvisionArgs {
    /// Population seed (the simulated network must use the same).
    #[arg(long)]
    pub seed: u64,
    /// Number of subscribers.
    #[arg(long)]
    pub count: u64,
    /// MSISDN of subscriber 0 (E.164 without '+'); subscriber i is base + i.
    #[arg(long, default_value_t = 48_600_000_000)]
    pub msisdn_base: u64,
    /// Share of subscribers whose SIM has the applet, in [0, 1].
    #[arg(long, default_value_t = 0.7)]
    pub applet_share: f64,
    /// Output file (JSON lines, created with mode 0600).
    #[arg(long)]
    pub out: PathBuf,
    /// Environment variable holding the PIN pepper.
    #[arg(
        long,
        default_value = "GATEWAY_PIN_PEPPER",
        conflicts_with = "pepper_file"
    )]
    pub pepper_env: String,
    /// File holding the PIN pepper.
    #[arg(long)]
    pub pepper_file: Option<PathBuf>,
    /// Replace an existing output file.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: ProvisionArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let source = match &args.pepper_file {
        Some(p) => SecretSource::File(p.clone()),
        None => SecretSource::Env(args.pepper_env.clone()),
    };
    let secret = source
        .resolve(|k| std::env::var(k).ok())
        .context("reading the PIN pepper")?;
    let pepper = Pepper::new(secret.expose().as_bytes())?;
    let params = ProvisionParams {
        seed: args.seed,
        count: args.count,
        msisdn_base: args.msisdn_base,
        applet_share: args.applet_share,
    };
    let n = write_file(&args.out, &params, &pepper, args.force)
        .with_context(|| format!("writing {}", args.out.display()))?;
    writeln!(
        out,
        "wrote {n} subscribers to {} (mode 0600: it holds OTA keys)",
        args.out.display()
    )?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn provision_writes_a_loadable_file() {
        let dir = tempfile::tempdir().unwrap();
        let pepper = dir.path().join("pepper");
        std::fs::write(&pepper, "a pepper of sixteen octets or more\n").unwrap();
        let path = dir.path().join("subs.jsonl");
        let args = ProvisionArgs {
            seed: 9,
            count: 20,
            msisdn_base: 48_600_000_000,
            applet_share: 0.5,
            out: path.clone(),
            pepper_env: "UNUSED".into(),
            pepper_file: Some(pepper),
            force: false,
        };
        let mut out = Vec::new();
        run(args, &mut out).unwrap();
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("wrote 20 subscribers"));
        let reg = gateway::subscribers::SubscriberRegistry::load(&path, 100).unwrap();
        assert_eq!(reg.len(), 20);
    }
}
