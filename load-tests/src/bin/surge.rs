//! `surge`: replays the renewal day against the gateway as an open workload (see
//! docs/load-testing.md and `load_tests::surge`).
//!
//! The command line is parsed here into a plain `SurgeConfig`; the run, the report and the
//! capacity search live in the library. Exit status: 0 when every SLO given (and `lost == 0`)
//! is met, 1 when one is missed, 2 when the run could not be made.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use load_tests::surge::capacity::CapacityConfig;
use load_tests::surge::profile::DailyProfile;
use load_tests::surge::schedule::parse_window_hours;
use load_tests::surge::{self, GatewayMode, ProgressMode, RetryModel, Slo, SmscMode, SurgeConfig};
use sim_applet_model::handset::user::UserParams;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Progress {
    Auto,
    Plain,
    Off,
}

#[derive(Debug, Parser)]
#[command(
    name = "surge",
    about = "Replay the renewal day against the gateway (open workload, time-compressed)"
)]
struct Cli {
    // --- the day ---
    /// Daily profile CSV (`hour,...,renewals_in_hour`); default: the shipped 31 Oct 2023 curve.
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Renewals of the whole day before scaling.
    #[arg(long, default_value_t = 800_000.0)]
    day_renewals: f64,
    /// Fraction of the day's renewals to offer.
    #[arg(long, default_value_t = 0.01)]
    scale: f64,
    /// Time compression: profile seconds per real second (x1000: the day in 86.4 s).
    #[arg(long, default_value_t = 1000.0)]
    compress: f64,
    /// Slice of the day to replay, hours FROM-TO (e.g. 19-21).
    #[arg(long, default_value = "0-24", value_parser = parse_window_hours)]
    window_hours: (f64, f64),
    /// Stop scheduling arrivals after this many real seconds.
    #[arg(long)]
    duration_limit: Option<f64>,
    /// Seed of the arrivals, subscriber choice and LoA draw.
    #[arg(long, default_value_t = 1)]
    seed: u64,

    // --- the authorizations ---
    /// Share of LoA 3 (PIN) requests; the rest LoA 2.
    #[arg(long, default_value_t = 0.3)]
    loa3_share: f64,
    /// Authorization lifetime asked for (10..600 s); default: the gateway's.
    #[arg(long)]
    expiry_secs: Option<u64>,
    /// "Send again": a user whose prompt has not arrived after N whole seconds presses again.
    #[arg(long)]
    retry_after_secs: Option<u64>,
    /// ... with this probability per check.
    #[arg(long, default_value_t = 0.5)]
    retry_probability: f64,
    /// ... at most this many times.
    #[arg(long, default_value_t = 2)]
    retry_max: u32,

    // --- the population and its users (channel mix = applet share) ---
    #[arg(long, default_value_t = 100_000)]
    population: u32,
    #[arg(long, default_value_t = 48_600_000_000)]
    msisdn_base: u64,
    /// Share of SIMs with the applet (STK channel); the rest are reached over USSD.
    #[arg(long, default_value_t = 0.7)]
    applet_share: f64,
    /// Seed of the population (applet draw, user behaviour, card secrets).
    #[arg(long, default_value_t = 1)]
    population_seed: u64,
    #[arg(long)]
    read_mean_ms: Option<f64>,
    #[arg(long)]
    decide_mean_ms: Option<f64>,
    #[arg(long)]
    pin_mean_ms: Option<f64>,
    #[arg(long)]
    think_sigma: Option<f64>,
    #[arg(long)]
    p_ignore: Option<f64>,
    #[arg(long)]
    p_deny: Option<f64>,
    #[arg(long)]
    p_wrong_pin: Option<f64>,
    /// Run handset think times and UI timers at the same compression as the arrivals.
    #[arg(long)]
    compress_think: bool,
    /// Handset time compression (overrides --compress-think); default 1 (real seconds).
    #[arg(long)]
    think_compression: Option<f64>,

    // --- the system under test ---
    /// A running gateway's base URL (http://host:port) instead of the in-process one.
    #[arg(long)]
    gateway: Option<String>,
    /// Bearer token for --gateway.
    #[arg(long, env = "SURGE_TOKEN", default_value = "")]
    token: String,
    /// The running gateway's metrics URL (http://host:port/metrics), for SMPP figures.
    #[arg(long)]
    gateway_metrics: Option<String>,
    /// A running SMSC (host:port) for the in-process gateway, instead of the in-process one.
    #[arg(long)]
    smsc: Option<String>,
    #[arg(long, default_value = "surge")]
    smsc_system_id: String,
    #[arg(long, default_value = "secret")]
    smsc_password: String,
    /// SMPP binds of the in-process gateway.
    #[arg(long, default_value_t = 2)]
    binds: u32,
    /// Window of each bind.
    #[arg(long, default_value_t = 10)]
    bind_window: u32,
    /// The gateway's own submit rate limit per bind.
    #[arg(long)]
    max_submits_per_sec: Option<u32>,
    /// The in-process SMSC's submit throttle for the gateway's account (ESME_RTHROTTLED).
    #[arg(long)]
    smsc_throttle_tps: Option<u32>,
    /// The in-process SMSC's window towards the gateway.
    #[arg(long, default_value_t = 10)]
    smsc_window: usize,
    /// The gateway's admission cap (`[limits] max_in_flight`).
    #[arg(long, default_value_t = 10_000)]
    max_in_flight: u32,
    /// Let the in-process gateway ask a PIN over USSD (LoA 3 without the applet).
    #[arg(long)]
    loa3_over_ussd: bool,

    // --- the driver ---
    /// Longest wait for stragglers after the last arrival, seconds.
    #[arg(long, default_value_t = 180)]
    drain_secs: u64,
    /// Lateness of a dispatch that counts as a late start, ms.
    #[arg(long, default_value_t = 10)]
    late_ms: u64,
    /// Most authorizations followed at once (beyond: counted `driver_saturated`).
    #[arg(long, default_value_t = 100_000)]
    max_outstanding: usize,
    #[arg(long, value_enum, default_value_t = Progress::Auto)]
    progress: Progress,
    /// Poll every N ms after a start until the prompt is out, for gateways whose views carry
    /// no `gateway_ms` (ours do); 0, the default, turns the probe off: near saturation it
    /// costs as much CPU as the gateway itself.
    #[arg(long, default_value_t = 0)]
    prompt_probe_ms: u64,
    /// Chaos plan: ACTION@SECONDS[:ARG],... with kill-gateway, smsc-outage:SECS,
    /// throttle-storm:SECS, malformed:COUNT (see docs/load-testing.md). Turns on --verify.
    #[arg(long)]
    chaos: Option<String>,
    /// Gateway nodes started here, their binds all to the SMSC; API calls are spread over them
    /// (more than one needs --store redis).
    #[arg(long, default_value_t = 1)]
    nodes: u32,
    /// The nodes' store: embedded (redb), journal (append-only), redis (a redis-server started
    /// here) or redis=URL.
    #[arg(long, default_value = "embedded")]
    store: load_tests::surge::StoreChoice,
    /// The gateway's `[store] durable_commit_interval_ms`: shortest time between two fsynced
    /// commits under load (0: each commit as soon as the previous one is done).
    #[arg(long)]
    durable_commit_interval_ms: Option<u64>,
    /// Run the in-process gateway in a child process (implied by kill-gateway).
    #[arg(long)]
    gateway_process: bool,
    /// Check every result twice: callbacks to a receiver here, and a re-read after the
    /// drain; the report's `duplicates` counts disagreements.
    #[arg(long)]
    verify: bool,
    /// How each authorization is followed to its end: long-poll (a task and a connection
    /// each while it waits) or callbacks (the gateway POSTs the ending to a receiver here;
    /// a map entry each, for millions in flight). Callbacks cannot carry --retry-after-secs.
    #[arg(long, value_enum, default_value_t = load_tests::surge::config::Follow::LongPoll)]
    follow: load_tests::surge::config::Follow,
    /// Longest wait for callbacks after the drain, seconds.
    #[arg(long, default_value_t = 60)]
    callback_wait_secs: u64,
    /// Tracing filter for the driver and the in-process gateway.
    #[arg(long, default_value = "warn")]
    log: String,

    // --- output and SLOs ---
    /// Write the report as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw rate and latency over the run (SVG).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Write the report as one self-contained HTML page: summary and SLO verdicts, outcomes,
    /// rates, in flight, latency over time, SMPP window.
    #[arg(long)]
    html: Option<PathBuf>,
    /// SLO: end-to-end p99, ms.
    #[arg(long)]
    slo_p99_ms: Option<u64>,
    /// SLO: the gateway's own p99, ms.
    #[arg(long)]
    slo_gateway_p99_ms: Option<u64>,
    /// SLO: highest error rate (refused, failed by the system, lost; over offered).
    #[arg(long)]
    slo_error_rate: Option<f64>,
    /// SLO: lowest achieved rate, per second.
    #[arg(long)]
    slo_min_rate: Option<f64>,

    // --- capacity search ---
    /// Ramp the compression until the gateway's p99 or the error rate crosses its threshold.
    #[arg(long)]
    capacity: bool,
    #[arg(long, default_value_t = 2.0)]
    capacity_factor: f64,
    #[arg(long, default_value_t = 8)]
    capacity_steps: u32,
    #[arg(long, default_value_t = 2)]
    capacity_refine: u32,
    #[arg(long, default_value_t = 2_000)]
    capacity_p99_ms: u64,
    #[arg(long, default_value_t = 0.01)]
    capacity_error_rate: f64,
}

impl Cli {
    fn config(&self) -> anyhow::Result<SurgeConfig> {
        let profile = match &self.profile {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading {}", p.display()))?;
                DailyProfile::from_csv(&text).with_context(|| format!("in {}", p.display()))?
            }
            None => DailyProfile::shipped(),
        };
        let d = UserParams::default();
        let user = UserParams {
            read_mean_ms: self.read_mean_ms.unwrap_or(d.read_mean_ms),
            decide_mean_ms: self.decide_mean_ms.unwrap_or(d.decide_mean_ms),
            pin_entry_mean_ms: self.pin_mean_ms.unwrap_or(d.pin_entry_mean_ms),
            sigma: self.think_sigma.unwrap_or(d.sigma),
            p_ignore: self.p_ignore.unwrap_or(d.p_ignore),
            p_deny: self.p_deny.unwrap_or(d.p_deny),
            p_wrong_pin: self.p_wrong_pin.unwrap_or(d.p_wrong_pin),
            ..d
        };
        let think_compression = self.think_compression.unwrap_or(if self.compress_think {
            self.compress
        } else {
            1.0
        });
        let gateway = match &self.gateway {
            Some(url) => GatewayMode::External {
                url: url.clone(),
                token: self.token.clone(),
                metrics_url: self.gateway_metrics.clone(),
            },
            None => GatewayMode::InProcess {
                smsc: match &self.smsc {
                    Some(addr) => SmscMode::External {
                        addr: addr.clone(),
                        system_id: self.smsc_system_id.clone(),
                        password: self.smsc_password.clone(),
                    },
                    None => SmscMode::InProcess {
                        throttle_tps: self.smsc_throttle_tps,
                        window: self.smsc_window,
                    },
                },
                binds: self.binds,
                window: self.bind_window,
                max_submits_per_sec: self.max_submits_per_sec,
                max_in_flight: self.max_in_flight,
                loa3_over_ussd: self.loa3_over_ussd,
            },
        };
        if self.follow == load_tests::surge::config::Follow::Callbacks
            && self.retry_after_secs.is_some()
        {
            anyhow::bail!(
                "--retry-after-secs needs --follow long-poll (the press-again model watches \
                 each prompt)"
            );
        }
        Ok(SurgeConfig {
            profile,
            day_renewals: self.day_renewals,
            scale: self.scale,
            compress: self.compress,
            window_secs: self.window_hours,
            duration_limit: self.duration_limit.map(Duration::from_secs_f64),
            seed: self.seed,
            loa3_share: self.loa3_share,
            population: self.population,
            msisdn_base: self.msisdn_base,
            applet_share: self.applet_share,
            population_seed: self.population_seed,
            user,
            think_compression,
            expiry_secs: self.expiry_secs,
            retry: self.retry_after_secs.map(|s| RetryModel {
                late_after: Duration::from_secs(s),
                probability: self.retry_probability,
                max_presses: self.retry_max,
            }),
            drain: Duration::from_secs(self.drain_secs),
            late_threshold: Duration::from_millis(self.late_ms),
            max_outstanding: self.max_outstanding,
            gateway,
            progress: match self.progress {
                Progress::Auto => ProgressMode::Auto,
                Progress::Plain => ProgressMode::Plain,
                Progress::Off => ProgressMode::Off,
            },
            prompt_probe: (self.prompt_probe_ms > 0)
                .then(|| Duration::from_millis(self.prompt_probe_ms)),
            slo: Slo {
                p99_ms: self.slo_p99_ms,
                gateway_p99_ms: self.slo_gateway_p99_ms,
                max_error_rate: self.slo_error_rate,
                min_achieved_per_s: self.slo_min_rate,
            },
            client_name: "Surge Bank".into(),
            chaos: match &self.chaos {
                Some(plan) => load_tests::surge::chaos::parse_plan(plan)
                    .map_err(|e| anyhow::anyhow!("--chaos: {e}"))?,
                None => Vec::new(),
            },
            gateway_process: self.gateway_process,
            verify: self.verify,
            follow: self.follow,
            callback_wait: Duration::from_secs(self.callback_wait_secs),
            nodes: self.nodes,
            store: self.store.clone(),
            durable_commit_interval_ms: self.durable_commit_interval_ms,
        })
    }
}

async fn run(cli: Cli) -> anyhow::Result<bool> {
    let config = cli.config()?;
    if cli.capacity {
        let search = CapacityConfig {
            start_compress: cli.compress,
            factor: cli.capacity_factor,
            max_steps: cli.capacity_steps,
            refine_steps: cli.capacity_refine,
            p99_limit_ms: cli.capacity_p99_ms,
            error_rate_limit: cli.capacity_error_rate,
        };
        let result = surge::capacity_search(&config, &search).await?;
        print!("{}", result.to_text());
        if let Some(path) = &cli.json {
            let text = serde_json::to_string_pretty(&result)?;
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        return Ok(result.best.is_some());
    }
    let report = surge::run(&config).await?;
    print!("{}", report.to_text());
    if let Some(path) = &cli.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    let title = format!(
        "surge: scale {} x{} seed {}",
        config.scale, config.compress, config.seed
    );
    if let Some(path) = &cli.plot {
        surge::plot::write_svg(path, &report.timeline, &title)?;
    }
    if let Some(path) = &cli.html {
        surge::html::write_html(path, &report, &title)?;
    }
    Ok(report.slo.values().all(|ok| *ok))
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // A chaos run's gateway is this executable in a child process.
    if let Some(code) = load_tests::surge::gateway_process::serve_if_child() {
        return code;
    }
    let cli = Cli::parse();
    let log = gateway::config::LogConfig {
        format: gateway::config::LogFormat::Pretty,
        filter: cli.log.clone(),
    };
    if let Err(e) = gateway::serve::init_logging(&log) {
        eprintln!("warning: logging not set up: {e:#}");
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("surge: an SLO was missed (see the report)");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
