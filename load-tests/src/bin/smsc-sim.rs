//! `smsc-sim`: the simulated SMSC as a process.
//!
//! The command line names the listen address and the first account; a TOML file (`--config`)
//! holds the rest (see `SmscConfig::from_file_text`). A bad file names the key and the line and
//! exits 64. `--tls-cert FILE --tls-key FILE` serve SMPP over TLS. SIGINT or SIGTERM unbinds
//! every bind, then the process exits.
//!
//! Without `--population` (or a `[population]` table with `size`) the SMSC runs the echo
//! network; with it, a seeded population of simulated handsets (`HandsetNetwork`). The
//! `[population]` table is cut out of the file here (its lines blanked, so line numbers of the
//! rest stay right) and read on its own; command-line values win over it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use load_tests::smsc::config::TlsServerSettings;
use load_tests::smsc::network::{HandsetNetwork, PopulationConfig};
use load_tests::smsc::{self, AccountConfig, EchoNetwork, Network, SmscConfig};
use serde::Deserialize;

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
    /// Simulated handsets behind the SMSC (handset population network instead of the echo).
    #[arg(long)]
    population: Option<u32>,
    /// Share of the population's SIMs carrying the applet (default 0.7).
    #[arg(long)]
    applet_share: Option<f64>,
    /// Seed of the population; the gateway derives card secrets from (seed, index).
    #[arg(long)]
    seed: Option<u64>,
    /// MSISDN of handset 0 (handset i is base + i).
    #[arg(long)]
    msisdn_base: Option<u64>,
    /// MO destination when an MT had no source address.
    #[arg(long)]
    service_code: Option<String>,
    /// Virtual ms per real ms for the handsets' think times (1.0 = real time).
    #[arg(long)]
    time_compression: Option<f64>,
    /// Submits per second per bind of that account.
    #[arg(long)]
    throttle_tps: Option<u32>,
    /// TOML file with the remaining settings.
    #[arg(long)]
    config: Option<PathBuf>,
    /// SMPP over TLS: PEM certificate chain of the SMSC (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// SMPP over TLS: PEM private key of that certificate (with --tls-cert).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve Prometheus metrics (`GET /metrics`, `smsc_sim_` prefix) on this address.
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
}

/// `[population]` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePopulation {
    size: Option<u32>,
    applet_share: Option<f64>,
    seed: Option<u64>,
    msisdn_base: Option<u64>,
    service_code: Option<String>,
    time_compression: Option<f64>,
    max_active_dialogs: Option<usize>,
    mo_queue_capacity: Option<usize>,
    /// One of the gateway's built-in dialects: "spec", "dialog-id-cbs", "umr-op-end".
    dialect: Option<String>,
    p_ignore: Option<f64>,
    p_deny: Option<f64>,
    p_wrong_pin: Option<f64>,
    read_mean_ms: Option<f64>,
    decide_mean_ms: Option<f64>,
    pin_entry_mean_ms: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
struct PopulationFile {
    #[serde(default)]
    population: FilePopulation,
}

/// Splits the `[population]` table off: (the rest, the table), each with the other's lines
/// blanked so that line numbers in errors stay those of the file.
fn split_population(text: &str) -> (String, String) {
    let (mut rest, mut pop) = (String::new(), String::new());
    let mut inside = false;
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with('[') {
            inside = t.starts_with("[population]");
        }
        let (to, blank) = if inside {
            (&mut pop, &mut rest)
        } else {
            (&mut rest, &mut pop)
        };
        to.push_str(line);
        to.push('\n');
        blank.push('\n');
    }
    (rest, pop)
}

fn population(cli: &Cli, table: &str) -> anyhow::Result<Option<PopulationConfig>> {
    let file: PopulationFile =
        toml::from_str(table).map_err(|e| anyhow::anyhow!("[population]: {e}"))?;
    let f = file.population;
    let Some(size) = cli.population.or(f.size) else {
        return Ok(None);
    };
    let mut c = PopulationConfig {
        size,
        ..PopulationConfig::default()
    };
    if let Some(v) = cli.applet_share.or(f.applet_share) {
        c.applet_share = v;
    }
    if let Some(v) = cli.seed.or(f.seed) {
        c.seed = v;
    }
    if let Some(v) = cli.msisdn_base.or(f.msisdn_base) {
        c.msisdn_base = v;
    }
    if let Some(v) = cli.service_code.clone().or(f.service_code) {
        c.service_code = v;
    }
    if let Some(v) = cli.time_compression.or(f.time_compression) {
        c.time_compression = v;
    }
    if let Some(v) = f.max_active_dialogs {
        c.max_active_dialogs = v;
    }
    if let Some(v) = f.mo_queue_capacity {
        c.mo_queue_capacity = v;
    }
    if let Some(name) = f.dialect {
        c.dialect = match name.as_str() {
            "spec" => sim_applet_model::smpp::dialect::Dialect::spec_default(),
            "dialog-id-cbs" => sim_applet_model::smpp::dialect::Dialect::vendor_dialog_id_cbs(),
            "umr-op-end" => sim_applet_model::smpp::dialect::Dialect::vendor_umr_op_end(),
            other => anyhow::bail!(
                "[population] dialect `{other}`: expected spec, dialog-id-cbs or umr-op-end"
            ),
        };
    }
    let u = &mut c.user;
    for (field, from, to) in [
        ("p_ignore", f.p_ignore, &mut u.p_ignore),
        ("p_deny", f.p_deny, &mut u.p_deny),
        ("p_wrong_pin", f.p_wrong_pin, &mut u.p_wrong_pin),
    ] {
        if let Some(p) = from {
            if !(0.0..=1.0).contains(&p) {
                anyhow::bail!("[population] {field} = {p}: must be in 0.0..=1.0");
            }
            *to = p;
        }
    }
    for (field, from, to) in [
        ("read_mean_ms", f.read_mean_ms, &mut u.read_mean_ms),
        ("decide_mean_ms", f.decide_mean_ms, &mut u.decide_mean_ms),
        (
            "pin_entry_mean_ms",
            f.pin_entry_mean_ms,
            &mut u.pin_entry_mean_ms,
        ),
    ] {
        if let Some(ms) = from {
            if !(ms.is_finite() && ms > 0.0) {
                anyhow::bail!("[population] {field} = {ms}: must be above 0");
            }
            *to = ms;
        }
    }
    // Validate now, so a bad population exits 64 like any other bad setting.
    HandsetNetwork::new(c.clone(), std::time::Instant::now())
        .map_err(|e| anyhow::anyhow!("population: {e}"))?;
    Ok(Some(c))
}

fn load(cli: &Cli) -> anyhow::Result<(SmscConfig, Option<PopulationConfig>)> {
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
    let (text, table) = split_population(&text);
    let in_file = |e: anyhow::Error| match &cli.config {
        Some(path) => e.context(format!("in {}", path.display())),
        None => e,
    };
    let population = population(cli, &table).map_err(in_file)?;
    let account = AccountConfig::new(cli.system_id.clone(), cli.password.clone());
    let config = SmscConfig::from_file_text(cli.listen, account, cli.throttle_tps, &text);
    let tls = match (&cli.tls_cert, &cli.tls_key) {
        (Some(cert_file), Some(key_file)) => {
            // Load once now so a bad certificate or key exits 64 like any other bad setting.
            gateway::smpp::bind::tls_server_config(cert_file, key_file)
                .context("--tls-cert/--tls-key")?;
            Some(TlsServerSettings {
                cert_file: cert_file.clone(),
                key_file: key_file.clone(),
            })
        }
        _ => None,
    };
    match (&cli.config, config) {
        (_, Ok(mut c)) => {
            c.tls = tls;
            Ok((c, population))
        }
        (Some(path), Err(e)) => {
            Err(anyhow::Error::new(e).context(format!("in {}", path.display())))
        }
        (None, Err(e)) => Err(e.into()),
    }
}

async fn run(
    config: SmscConfig,
    population: Option<PopulationConfig>,
    metrics_listen: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let network: Box<dyn Network> = match population {
        Some(p) => {
            let size = p.size;
            let net = HandsetNetwork::new(p, tokio::time::Instant::now().into_std())
                .context("building the population")?;
            eprintln!("smsc-sim: {size} simulated handsets");
            Box::new(net)
        }
        None => Box::new(EchoNetwork::new(config.echo.clone())),
    };
    let smsc = smsc::start(config.clone(), network)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    eprintln!("smsc-sim listening on {}", smsc.local_addr());
    if let Some(addr) = metrics_listen {
        let bound = smsc
            .serve_metrics(addr)
            .await
            .with_context(|| format!("metrics listener on {addr}"))?;
        eprintln!("smsc-sim metrics on http://{bound}/metrics");
    }
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

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (config, population) = match load(&cli) {
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
    match runtime.block_on(run(config, population, cli.metrics_listen)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("smsc-sim: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        let mut v = vec!["smsc-sim", "--listen", "127.0.0.1:0", "--system-id", "gw"];
        v.extend_from_slice(&["--password", "pw"]);
        v.extend_from_slice(args);
        Cli::try_parse_from(v).unwrap()
    }

    #[test]
    fn the_population_table_is_cut_out_keeping_line_numbers() {
        let text = "window = 5\n[population]\nsize = 10\n[faults]\nthrottle_storm_ms = 1\n";
        let (rest, pop) = split_population(text);
        assert_eq!(rest, "window = 5\n\n\n[faults]\nthrottle_storm_ms = 1\n");
        assert_eq!(pop, "\n[population]\nsize = 10\n\n\n");
    }

    #[test]
    fn command_line_wins_over_the_population_table() {
        let table =
            "[population]\nsize = 10\nseed = 3\napplet_share = 0.5\ndialect = \"umr-op-end\"\n";
        let c = population(&cli(&["--population", "20"]), table)
            .unwrap()
            .unwrap();
        assert_eq!((c.size, c.seed, c.applet_share), (20, 3, 0.5));
        assert_eq!(c.dialect.name, "umr-op-end");
        assert!(population(&cli(&[]), "").unwrap().is_none());
    }

    #[test]
    fn a_bad_population_is_refused() {
        let e = population(&cli(&[]), "[population]\nsize = 10\nsizee = 1\n").unwrap_err();
        assert!(e.to_string().contains("sizee"), "{e}");
        let e = population(&cli(&["--population", "0"]), "").unwrap_err();
        assert!(e.to_string().contains("size"), "{e}");
        assert!(population(&cli(&["--population", "5", "--applet-share", "2"]), "").is_err());
    }
}
