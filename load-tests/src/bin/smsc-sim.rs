//! `smsc-sim`: the simulated SMSC as a process.
//!
//! The command line names the listen address and the first account; a TOML file (`--config`)
//! holds the rest (see `SmscConfig::from_file_text`). A bad file names the key and the line and
//! exits 64. SIGINT or SIGTERM unbinds every bind, then the process exits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use load_tests::smsc::{self, AccountConfig, EchoNetwork, SmscConfig};

/// EX_CONFIG from sysexits.h.
const EXIT_CONFIG: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "smsc-sim",
    about = "Simulated SMSC (SMPP server) for tests and load runs"
)]
struct Cli {
    /// Address to listen on, e.g. 127.0.0.1:2775.
    #[arg(long)]
    listen: SocketAddr,
    /// system_id of the account the command line defines.
    #[arg(long)]
    system_id: String,
    /// Password of that account.
    #[arg(long)]
    password: String,
    /// Simulated handsets behind the SMSC (needs the handset population network).
    #[arg(long)]
    population: Option<u64>,
    /// Submits per second per bind of that account.
    #[arg(long)]
    throttle_tps: Option<u32>,
    /// TOML file with the remaining settings.
    #[arg(long)]
    config: Option<PathBuf>,
}

fn load(cli: &Cli) -> anyhow::Result<SmscConfig> {
    let text = match &cli.config {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        }
        None => String::new(),
    };
    if cli.system_id.is_empty() || cli.system_id.len() > 15 {
        anyhow::bail!("--system-id must be 1 to 15 characters");
    }
    if cli.password.len() > 8 {
        anyhow::bail!("--password must be at most 8 characters");
    }
    if cli.throttle_tps == Some(0) {
        anyhow::bail!("--throttle-tps must be at least 1");
    }
    if let Some(n) = cli.population {
        // Refuse rather than run on the echo network: a load test on the wrong network is
        // worse than none.
        anyhow::bail!(
            "--population {n}: the handset population network is not available yet; \
             run without --population for the echo network"
        );
    }
    let account = AccountConfig::new(cli.system_id.clone(), cli.password.clone());
    let config = SmscConfig::from_file_text(cli.listen, account, cli.throttle_tps, &text);
    match (&cli.config, config) {
        (_, Ok(c)) => Ok(c),
        (Some(path), Err(e)) => {
            Err(anyhow::Error::new(e).context(format!("in {}", path.display())))
        }
        (None, Err(e)) => Err(e.into()),
    }
}

async fn run(config: SmscConfig) -> anyhow::Result<()> {
    let network = Box::new(EchoNetwork::new(config.echo.clone()));
    let smsc = smsc::start(config.clone(), network)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    eprintln!("smsc-sim listening on {}", smsc.local_addr());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT")?,
        _ = term.recv() => {}
    }
    eprintln!("smsc-sim shutting down: unbinding");
    smsc.shutdown().await;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("smsc-sim: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("smsc-sim: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("smsc-sim: {e:#}");
            ExitCode::FAILURE
        }
    }
}
