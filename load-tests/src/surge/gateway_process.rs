//! The gateway in a process of its own, so a chaos run can SIGKILL it and start it again on
//! the same store and addresses: nothing flushed, nothing said on the way out, as when a
//! host dies.
//!
//! The child is the same executable: [`serve_if_child`], called first thing in `main`, sees
//! [`CONFIG_ENV`] and serves the gateway of that configuration file instead of running the
//! program. It prints `API <addr>` once serving and lives until its stdin closes, so a child
//! never outlives the surge that started it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

/// Names the configuration file the child serves.
pub const CONFIG_ENV: &str = "SURGE_GATEWAY_CONFIG";

/// Longest wait for a child to serve.
const START_LIMIT: Duration = Duration::from_secs(60);

/// In a child started by [`GatewayProcess::spawn`]: serves the gateway until stdin closes and
/// returns the exit code; `None` in any other process.
pub fn serve_if_child() -> Option<ExitCode> {
    let path = std::env::var_os(CONFIG_ENV)?;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gateway child: starting the runtime: {e}");
            return Some(ExitCode::from(2));
        }
    };
    let result = runtime.block_on(async move {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", Path::new(&path).display()))?;
        let config = gateway::config::GatewayConfig::from_toml(&text, &[])?;
        if let Err(e) = gateway::serve::init_logging(&config.log) {
            eprintln!("gateway child: logging not set up: {e:#}");
        }
        let handle = gateway::serve::start(config).await?;
        println!("API {}", handle.api_addr);
        // The parent holds our stdin; its end (exit, crash, kill) closes it.
        let mut sink = [0u8; 64];
        let mut stdin = tokio::io::stdin();
        while matches!(stdin.read(&mut sink).await, Ok(n) if n > 0) {}
        handle.shutdown().await;
        anyhow::Ok(())
    });
    Some(match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway child: {e:#}");
            ExitCode::from(2)
        }
    })
}

/// A gateway child process.
#[derive(Debug)]
pub struct GatewayProcess {
    child: Child,
    program: PathBuf,
    args: Vec<String>,
    config: PathBuf,
    pub api_addr: SocketAddr,
}

impl GatewayProcess {
    /// Starts `program` as a gateway child serving `config`; returns once it serves.
    pub async fn spawn(program: &Path, config: &Path) -> anyhow::Result<Self> {
        Self::spawn_with_args(program, &[], config).await
    }

    /// [`Self::spawn`] with arguments (a test binary re-executing itself names the test that
    /// calls [`serve_if_child`]).
    pub async fn spawn_with_args(
        program: &Path,
        args: &[&str],
        config: &Path,
    ) -> anyhow::Result<Self> {
        let mut child = Command::new(program)
            .args(args)
            .env(CONFIG_ENV, config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} as the gateway", program.display()))?;
        let stdout = child
            .stdout
            .take()
            .context("the gateway child has no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let api_addr = tokio::time::timeout(START_LIMIT, async {
            while let Some(line) = lines.next_line().await? {
                // A re-executed test binary prints libtest's "test name ... " before it.
                if let Some((_, addr)) = line.split_once("API ") {
                    return addr
                        .trim()
                        .parse::<SocketAddr>()
                        .with_context(|| format!("the gateway child printed `{line}`"));
                }
            }
            anyhow::bail!("the gateway child ended before serving (see its log above)")
        })
        .await
        .context("the gateway child did not serve within 60 s")??;
        // Keep reading its stdout so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            child,
            program: program.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            config: config.to_owned(),
            api_addr,
        })
    }

    /// Its process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Its CPU seconds so far and peak resident set (`None` once it has ended).
    pub fn figures(&self) -> Option<(f64, u64)> {
        let pid = self.child.id()?;
        Some(super::report::process_figures_of(&pid.to_string()))
    }

    /// SIGKILL, then a new child on the same configuration (same store, same addresses).
    pub async fn kill_and_restart(&mut self) -> anyhow::Result<()> {
        self.sigkill().await?;
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let next = Self::spawn_with_args(&self.program, &args, &self.config).await?;
        *self = next;
        Ok(())
    }

    /// SIGKILL only: nothing flushed, nothing said on the way out.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.sigkill().await
    }

    async fn sigkill(&mut self) -> anyhow::Result<()> {
        self.child
            .start_kill()
            .context("sending SIGKILL to the gateway")?;
        self.child.wait().await.context("reaping the gateway")?;
        Ok(())
    }

    /// Closes its stdin (a graceful shutdown) and waits for it, bounded; kills it after.
    pub async fn stop(mut self, limit: Duration) {
        drop(self.child.stdin.take());
        if tokio::time::timeout(limit, self.child.wait())
            .await
            .is_err()
        {
            tracing::warn!("the gateway child did not stop in time; killing it");
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
    }
}

/// A free port on loopback, for an address that must stay the same across restarts. The
/// port is free when this returns; another process could take it before the gateway binds
/// it, which the gateway then reports.
pub fn free_loopback_addr() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?)
}
