//! `gateway serve --config FILE [--set key=value]...`: load the configuration (environment
//! overrides `GATEWAY_<SECTION>_<KEY>`, then the flags), set up logging, run
//! [`gateway::serve::start`] until SIGINT or SIGTERM, then shut down gracefully.
//!
//! A configuration that does not load prints the key, the line (or the variable or flag) and
//! the problem, and exits 64; nothing falls back to defaults.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};

use gateway::config::{GatewayConfig, LogFormat, Override};

/// Run the gateway.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Configuration file (TOML).
    #[arg(long)]
    pub config: PathBuf,
    /// Override one key, e.g. `--set limits.max_in_flight=500` (repeatable, applied last).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Log format (overrides `[log] format`).
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormatArg>,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    Json,
    Pretty,
}

pub fn run(args: ServeArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let mut overrides = Override::from_env(std::env::vars());
    for arg in &args.set {
        match Override::from_flag(arg) {
            Ok(o) => overrides.push(o),
            Err(e) => return Ok(config_error(&e, out)),
        }
    }
    let mut config = match GatewayConfig::load(&args.config, &overrides) {
        Ok(c) => c,
        Err(e) => return Ok(config_error(&e, out)),
    };
    if let Some(f) = args.log_format {
        config.log.format = match f {
            LogFormatArg::Json => LogFormat::Json,
            LogFormatArg::Pretty => LogFormat::Pretty,
        };
    }
    gateway::serve::init_logging(&config.log)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let handle = gateway::serve::start(config).await?;
        writeln!(out, "api listening on http://{}", handle.api_addr)?;
        if let Some(m) = handle.metrics_addr {
            writeln!(out, "metrics on http://{m}")?;
        }
        out.flush()?;
        wait_for_signal().await?;
        handle.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}

fn config_error(e: &gateway::config::ConfigError, out: &mut dyn Write) -> ExitCode {
    let _ = out.flush();
    eprintln!("error: {e}");
    ExitCode::from(e.exit_code())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    Ok(())
}
