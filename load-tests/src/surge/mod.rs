//! `surge`: replays the renewal day against the gateway as an open workload and reports what
//! the whole system did (binary `surge`, docs/load-testing.md).
//!
//! Data flow: [`profile`] turns the day's CSV into a rate curve; [`schedule`] draws the seeded
//! Poisson arrivals over a window of it, compressed in time, each with its subscriber and LoA.
//! [`run`] brings up the system under test (by default in-process on loopback: the simulated
//! SMSC hosting the handset population, and the gateway with an embedded store and a
//! subscriber registry generated from the same seed; or a running gateway and/or SMSC), then
//! dispatches every arrival at its scheduled instant, whatever happened to earlier ones, to a
//! task that starts the authorization through the [`target`] and long-polls it to its terminal
//! status. The tasks write into the [`report`] recorder; latency counts from the scheduled
//! instant. A progress task prints offered vs achieved; a scraper task samples the gateway's
//! SMPP windows. At the end the [`report`] is built (stdout, JSON) and [`plot`] draws it.
//! [`capacity`] repeats runs at rising compression to find the sustainable rate.

pub mod capacity;
pub mod plot;
pub mod profile;
pub mod report;
pub mod schedule;
pub mod target;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sim_applet_model::handset::user::UserParams;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::smsc::network::{HandsetNetwork, PopulationConfig};
use crate::smsc::{AccountConfig, SmscConfig, SmscHandle, StatsSnapshot};

use profile::DailyProfile;
use report::{Recorder, Report, SmppFigures};
use schedule::{Arrival, Rng, ScheduleConfig};
use target::{HttpTarget, StartOutcome, StartParams, Target};

/// "Send again": a user whose prompt has not arrived after `late_after` presses the button
/// again with `probability`, at most `max_presses` times.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryModel {
    /// Whole seconds (the long-poll's unit).
    pub late_after: Duration,
    pub probability: f64,
    pub max_presses: u32,
}

/// Where the SMSC is, for an in-process gateway.
#[derive(Debug, Clone, PartialEq)]
pub enum SmscMode {
    /// Started here with the handset population.
    InProcess {
        /// The SMSC's submit rate limit for the gateway's account.
        throttle_tps: Option<u32>,
        /// The SMSC's window for MO / receipts towards the gateway.
        window: usize,
    },
    /// A running SMSC (e.g. `smsc-sim --population`, with the same population settings).
    External {
        addr: String,
        system_id: String,
        password: String,
    },
}

/// The gateway under test.
#[derive(Debug, Clone, PartialEq)]
pub enum GatewayMode {
    /// Started here (`gateway::serve::start`) on loopback, store in a temporary directory.
    InProcess {
        smsc: SmscMode,
        /// SMPP binds to the SMSC and the window of each.
        binds: u32,
        window: u32,
        /// The gateway's own submit rate limit per bind.
        max_submits_per_sec: Option<u32>,
        /// Admission cap (`[limits] max_in_flight`).
        max_in_flight: u32,
        /// Policy: allow LoA 3 (PIN) over USSD (off in the shipped policy: such requests for
        /// subscribers without the applet are refused `policy_refused`).
        loa3_over_ussd: bool,
    },
    /// A running gateway: its base URL (`http://host:port`), a client token, and optionally
    /// its Prometheus endpoint for the SMPP figures.
    External {
        url: String,
        token: String,
        metrics_url: Option<String>,
    },
}

/// How progress is shown while running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A bar on a terminal, plain lines every few seconds otherwise.
    Auto,
    /// Plain lines only.
    Plain,
    Off,
}

/// SLOs checked at the end; a miss makes the binary exit non-zero.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Slo {
    pub p99_ms: Option<u64>,
    pub gateway_p99_ms: Option<u64>,
    pub max_error_rate: Option<f64>,
    pub min_achieved_per_s: Option<f64>,
}

/// Everything a run needs; the binary fills it from flags, tests build it directly.
#[derive(Debug, Clone)]
pub struct SurgeConfig {
    pub profile: DailyProfile,
    /// Renewals of the whole day before scaling.
    pub day_renewals: f64,
    pub scale: f64,
    pub compress: f64,
    pub window_secs: (f64, f64),
    pub duration_limit: Option<Duration>,
    pub seed: u64,
    pub loa3_share: f64,
    /// Population (must match the gateway's subscribers).
    pub population: u32,
    pub msisdn_base: u64,
    pub applet_share: f64,
    pub population_seed: u64,
    pub user: UserParams,
    /// Handset think times and UI timers run this many times faster than real time.
    pub think_compression: f64,
    pub expiry_secs: Option<u64>,
    pub retry: Option<RetryModel>,
    /// Longest wait for stragglers after the last arrival.
    pub drain: Duration,
    /// An arrival dispatched later than this after its scheduled instant is a late start.
    pub late_threshold: Duration,
    /// Most authorizations the driver follows at once; beyond, arrivals are counted refused
    /// (`driver_saturated`) rather than queued.
    pub max_outstanding: usize,
    pub gateway: GatewayMode,
    pub progress: ProgressMode,
    /// Poll (`wait=0`) this often after a start until the view says `prompted`, to measure
    /// the gateway's part when views carry no `gateway_ms`; `None`: long-polls only.
    pub prompt_probe: Option<Duration>,
    pub slo: Slo,
    pub client_name: String,
}

impl Default for SurgeConfig {
    fn default() -> Self {
        Self {
            profile: DailyProfile::shipped(),
            day_renewals: profile::DAY_RENEWALS,
            scale: 0.01,
            compress: 1000.0,
            window_secs: (0.0, profile::DAY_SECS),
            duration_limit: None,
            seed: 1,
            loa3_share: 0.3,
            population: 100_000,
            msisdn_base: 48_600_000_000,
            applet_share: 0.7,
            population_seed: 1,
            user: UserParams::default(),
            think_compression: 1.0,
            expiry_secs: None,
            retry: None,
            drain: Duration::from_secs(180),
            late_threshold: Duration::from_millis(10),
            max_outstanding: 100_000,
            gateway: GatewayMode::InProcess {
                smsc: SmscMode::InProcess {
                    throttle_tps: None,
                    window: 10,
                },
                binds: 2,
                window: 10,
                max_submits_per_sec: None,
                max_in_flight: 10_000,
                loa3_over_ussd: false,
            },
            progress: ProgressMode::Auto,
            prompt_probe: None,
            slo: Slo::default(),
            client_name: "Surge Bank".into(),
        }
    }
}

impl SurgeConfig {
    pub fn schedule_config(&self) -> ScheduleConfig {
        ScheduleConfig {
            day_renewals: self.day_renewals,
            scale: self.scale,
            compress: self.compress,
            window_secs: self.window_secs,
            loa3_share: self.loa3_share,
            population: self.population,
            seed: self.seed,
            duration_limit: self.duration_limit,
        }
    }

    fn settings_json(&self) -> serde_json::Value {
        let gateway = match &self.gateway {
            GatewayMode::InProcess {
                smsc,
                binds,
                window,
                max_submits_per_sec,
                max_in_flight,
                loa3_over_ussd,
            } => serde_json::json!({
                "mode": "in-process",
                "smsc": match smsc {
                    SmscMode::InProcess { throttle_tps, window } =>
                        serde_json::json!({"mode": "in-process", "throttle_tps": throttle_tps, "window": window}),
                    SmscMode::External { addr, .. } => serde_json::json!({"mode": "external", "addr": addr}),
                },
                "binds": binds, "window": window,
                "max_submits_per_sec": max_submits_per_sec, "max_in_flight": max_in_flight,
                "loa3_over_ussd": loa3_over_ussd,
            }),
            GatewayMode::External { url, .. } => {
                serde_json::json!({"mode": "external", "url": url})
            }
        };
        serde_json::json!({
            "scale": self.scale,
            "compress": self.compress,
            "window_hours": [self.window_secs.0 / 3600.0, self.window_secs.1 / 3600.0],
            "duration_limit_s": self.duration_limit.map(|d| d.as_secs_f64()),
            "seed": self.seed,
            "loa3_share": self.loa3_share,
            "population": self.population,
            "msisdn_base": self.msisdn_base,
            "applet_share": self.applet_share,
            "population_seed": self.population_seed,
            "think_compression": self.think_compression,
            "user": {
                "read_mean_ms": self.user.read_mean_ms,
                "decide_mean_ms": self.user.decide_mean_ms,
                "pin_entry_mean_ms": self.user.pin_entry_mean_ms,
                "p_ignore": self.user.p_ignore,
                "p_deny": self.user.p_deny,
                "p_wrong_pin": self.user.p_wrong_pin,
            },
            "expiry_secs": self.expiry_secs,
            "retry": self.retry.as_ref().map(|r| serde_json::json!({
                "late_after_s": r.late_after.as_secs(), "probability": r.probability, "max_presses": r.max_presses
            })),
            "drain_s": self.drain.as_secs_f64(),
            "gateway": gateway,
        })
    }
}

/// How long the prompt probe polls before falling back to long-polls only.
const PROMPT_PROBE_LIMIT: Duration = Duration::from_secs(10);

/// Token of the in-process gateway's API client.
const TOKEN: &str = "surge-load-token";
const SMSC_SYSTEM_ID: &str = "surge";
const SMSC_PASSWORD: &str = "secret";

/// The system under test, brought up for one run.
struct Environment {
    target: Arc<dyn Target>,
    metrics_url: Option<String>,
    smsc: Option<SmscHandle>,
    gateway: Option<gateway::serve::ServeHandle>,
    temp_dir: Option<PathBuf>,
}

impl Environment {
    async fn start(c: &SurgeConfig) -> anyhow::Result<Self> {
        match &c.gateway {
            GatewayMode::External {
                url,
                token,
                metrics_url,
            } => Ok(Self {
                target: Arc::new(HttpTarget::new(url, token)?),
                metrics_url: metrics_url.clone(),
                smsc: None,
                gateway: None,
                temp_dir: None,
            }),
            GatewayMode::InProcess {
                smsc,
                binds,
                window,
                max_submits_per_sec,
                max_in_flight,
                loa3_over_ussd,
            } => {
                let (smsc_handle, smsc_addr, system_id, password) = match smsc {
                    SmscMode::InProcess {
                        throttle_tps,
                        window,
                    } => {
                        let mut account = AccountConfig::new(SMSC_SYSTEM_ID, SMSC_PASSWORD);
                        account.max_binds = (*binds as usize).max(1);
                        account.throttle_tps = *throttle_tps;
                        let mut sc = SmscConfig::new(
                            std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                            account,
                        );
                        sc.window = (*window).max(1);
                        sc.seed = c.seed;
                        let pop = PopulationConfig {
                            size: c.population,
                            applet_share: c.applet_share,
                            seed: c.population_seed,
                            msisdn_base: c.msisdn_base,
                            user: c.user.clone(),
                            time_compression: c.think_compression,
                            ..PopulationConfig::default()
                        };
                        let network = HandsetNetwork::new(pop, std::time::Instant::now())
                            .context("building the handset population")?;
                        let h = crate::smsc::start(sc, Box::new(network))
                            .await
                            .context("starting the simulated SMSC")?;
                        let addr = h.local_addr().to_string();
                        (
                            Some(h),
                            addr,
                            SMSC_SYSTEM_ID.to_owned(),
                            SMSC_PASSWORD.to_owned(),
                        )
                    }
                    SmscMode::External {
                        addr,
                        system_id,
                        password,
                    } => (None, addr.clone(), system_id.clone(), password.clone()),
                };
                let dir = std::env::temp_dir().join(format!(
                    "surge-{}-{}",
                    std::process::id(),
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos())
                ));
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                std::fs::write(dir.join("pepper"), "surge-load-test-pepper-32-octets!")
                    .context("writing the pepper file")?;
                let toml = gateway_toml(
                    c,
                    &GatewayToml {
                        smsc_addr: &smsc_addr,
                        system_id: &system_id,
                        password: &password,
                        binds: *binds,
                        window: *window,
                        max_submits_per_sec: *max_submits_per_sec,
                        max_in_flight: *max_in_flight,
                        loa3_over_ussd: *loa3_over_ussd,
                        dir: &dir,
                    },
                );
                let config = gateway::config::GatewayConfig::from_toml(&toml, &[])
                    .map_err(|e| anyhow::anyhow!("in-process gateway config: {e}"))?;
                let handle = match gateway::serve::start(config).await {
                    Ok(h) => h,
                    Err(e) => {
                        if let Some(s) = smsc_handle {
                            s.shutdown().await;
                        }
                        let _ = std::fs::remove_dir_all(&dir);
                        return Err(e.context("starting the in-process gateway"));
                    }
                };
                let target = HttpTarget::new(&format!("http://{}", handle.api_addr), TOKEN)?;
                let metrics_url = handle.metrics_addr.map(|a| format!("http://{a}/metrics"));
                let env = Self {
                    target: Arc::new(target),
                    metrics_url,
                    smsc: smsc_handle,
                    gateway: Some(handle),
                    temp_dir: Some(dir),
                };
                env.wait_ready().await;
                Ok(env)
            }
        }
    }

    /// Waits (bounded) until the gateway says it is ready, so the first arrivals do not meet
    /// binds still coming up.
    async fn wait_ready(&self) {
        let Some(gw) = &self.gateway else { return };
        let client = target::http_client();
        let url = format!("http://{}/readyz", gw.api_addr);
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            let req = axum::http::Request::builder()
                .uri(&url)
                .body(http_body_util::Full::new(bytes::Bytes::new()));
            if let Ok(req) = req {
                if let Ok(resp) = client.request(req).await {
                    if resp.status().is_success() {
                        return;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::warn!("gateway not ready after 10 s; starting anyway");
    }

    async fn shutdown(self) {
        if let Some(g) = self.gateway {
            g.shutdown().await;
        }
        if let Some(s) = self.smsc {
            s.shutdown().await;
        }
        if let Some(d) = self.temp_dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

struct GatewayToml<'a> {
    smsc_addr: &'a str,
    system_id: &'a str,
    password: &'a str,
    binds: u32,
    window: u32,
    max_submits_per_sec: Option<u32>,
    max_in_flight: u32,
    loa3_over_ussd: bool,
    dir: &'a std::path::Path,
}

/// The in-process gateway's configuration, as TOML so it goes through the same loading and
/// validation as a deployed one.
fn gateway_toml(c: &SurgeConfig, g: &GatewayToml<'_>) -> String {
    let lo = c.msisdn_base;
    let hi = c.msisdn_base + u64::from(c.population.max(1)) - 1;
    let expiry = c.expiry_secs.unwrap_or(120);
    let mut binds = String::new();
    for _ in 0..g.binds.max(1) {
        binds.push_str(&format!(
            "[[operators.binds]]\naddress = \"{}\"\nbind_kind = \"transceiver\"\nsystem_id = \"{}\"\npassword = \"{}\"\nwindow = {}\nresponse_timeout_secs = 10\n{}\n",
            g.smsc_addr,
            g.system_id,
            g.password,
            g.window.max(1),
            g.max_submits_per_sec
                .map(|r| format!("max_submits_per_sec = {r}"))
                .unwrap_or_default()
        ));
    }
    let dir = g.dir.display().to_string().replace('\\', "/");
    format!(
        r#"[api]
listen = "127.0.0.1:0"

[[api.clients]]
id = "surge"
token = "{TOKEN}"
rate_limit_per_sec = 1000000
rate_limit_burst = 1000000

[limits]
max_in_flight = {max_in_flight}
per_msisdn_concurrent = 1
retry_after_secs = 1

[[operators]]
name = "sim"
ranges = ["{lo}..{hi}"]
dialect = "spec-default"
service_code = "*123#"
sms_source_address = "4800"

{binds}
[subscribers]
pepper_file = "{dir}/pepper"

[subscribers.generate]
seed = {seed}
count = {count}
msisdn_base = {base}
applet_share = {share}

[policy]
loa3_over_ussd = {loa3_over_ussd}
default_expiry_secs = {expiry}
stk_answer_timeout_secs = {stk}

[store]
path = "{dir}/store.redb"

[metrics]
listen = "127.0.0.1:0"
path = "/metrics"

[log]
format = "pretty"
filter = "warn"
"#,
        max_in_flight = g.max_in_flight.max(1),
        seed = c.population_seed,
        count = c.population,
        base = c.msisdn_base,
        share = c.applet_share,
        stk = expiry.min(90),
        loa3_over_ussd = g.loa3_over_ussd,
    )
}

/// Locks the recorder; a task that panicked while holding it leaves counts that are still
/// the best we have.
fn lock(r: &Mutex<Recorder>) -> MutexGuard<'_, Recorder> {
    r.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the driver tasks share.
struct Shared {
    target: Arc<dyn Target>,
    rec: Mutex<Recorder>,
    t0: Instant,
    deadline: Instant,
    config: SurgeConfig,
    tracker: TaskTracker,
}

impl Shared {
    fn rel(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.t0)
    }
}

/// Runs one surge: brings the system up (or connects to it), replays the schedule, drains and
/// reports. SLO results are in the report's `slo`.
pub async fn run(config: &SurgeConfig) -> anyhow::Result<Report> {
    let schedule = schedule::build(&config.profile, &config.schedule_config())?;
    let env = Environment::start(config).await?;
    let smsc_before = env.smsc.as_ref().map(|s| s.stats().snapshot());
    let result = drive(config, &schedule, &env).await;
    let smsc_after = env.smsc.as_ref().map(|s| s.stats().snapshot());
    env.shutdown().await;
    let mut report = result?;
    if let (Some(a), Some(b)) = (smsc_before, smsc_after) {
        fill_smsc(&mut report.smpp, &a, &b);
    }
    check_slo(&mut report, &config.slo);
    Ok(report)
}

fn fill_smsc(s: &mut SmppFigures, before: &StatsSnapshot, after: &StatsSnapshot) {
    s.submits = Some(after.submits.saturating_sub(before.submits));
    s.throttles = Some(after.throttled.saturating_sub(before.throttled));
    s.retries = Some(after.deliver_retries.saturating_sub(before.deliver_retries));
    s.receipts = Some(after.receipts.saturating_sub(before.receipts));
    s.mo_delivered = Some(after.mo_delivered.saturating_sub(before.mo_delivered));
    s.generic_nacks = Some(after.nacks.saturating_sub(before.nacks));
}

/// Fills `report.slo`; returns whether every SLO was met.
pub fn check_slo(report: &mut Report, slo: &Slo) -> bool {
    if let Some(l) = slo.p99_ms {
        report
            .slo
            .insert(format!("p99 <= {l} ms"), report.latency_ms.p99 <= l);
    }
    if let Some(l) = slo.gateway_p99_ms {
        report.slo.insert(
            format!("gateway p99 <= {l} ms"),
            report.gateway_latency_ms.p99 <= l,
        );
    }
    if let Some(l) = slo.max_error_rate {
        let rate = report.error_rate();
        report.slo.insert(format!("error rate <= {l}"), rate <= l);
    }
    if let Some(l) = slo.min_achieved_per_s {
        report
            .slo
            .insert(format!("achieved >= {l}/s"), report.achieved_per_s >= l);
    }
    report.slo.insert("lost == 0".into(), report.lost == 0);
    report.slo.values().all(|ok| *ok)
}

async fn drive(
    config: &SurgeConfig,
    schedule: &[Arrival],
    env: &Environment,
) -> anyhow::Result<Report> {
    let lead = Duration::from_millis(100);
    let t0 = Instant::now() + lead;
    let span = schedule.last().map_or(Duration::ZERO, |a| a.at);
    let shared = Arc::new(Shared {
        target: env.target.clone(),
        rec: Mutex::new(Recorder::new()),
        t0,
        deadline: t0 + span + config.drain,
        config: config.clone(),
        tracker: TaskTracker::new(),
    });
    let stop = CancellationToken::new();
    let side = TaskTracker::new();
    side.spawn(progress(
        shared.clone(),
        schedule.len() as u64,
        stop.clone(),
    ));
    let window_samples = Arc::new(Mutex::new(WindowSamples::default()));
    if let Some(url) = env.metrics_url.clone() {
        side.spawn(scrape_windows(url, window_samples.clone(), stop.clone()));
    }

    let outstanding = Arc::new(Semaphore::new(config.max_outstanding.max(1)));
    for a in schedule {
        let due = t0 + a.at;
        tokio::time::sleep_until(due).await;
        let now = Instant::now();
        let late = now.saturating_duration_since(due) > config.late_threshold;
        lock(&shared.rec).offer(a.at, late);
        match outstanding.clone().try_acquire_owned() {
            Ok(permit) => {
                let s = shared.clone();
                let a = *a;
                shared.tracker.spawn(async move {
                    one(&s, a).await;
                    drop(permit);
                });
            }
            Err(_) => lock(&shared.rec).refuse(shared.rel(now), "driver_saturated"),
        }
    }
    let arrival_phase = Instant::now().saturating_duration_since(t0);
    lock(&shared.rec).arrivals_done = true;
    shared.tracker.close();
    // Tasks stop polling at the deadline themselves; the margin covers a last poll in flight.
    let drained = tokio::time::timeout_at(
        shared.deadline + Duration::from_secs(5),
        shared.tracker.wait(),
    )
    .await
    .is_ok();
    let duration = Instant::now().saturating_duration_since(t0);
    stop.cancel();
    side.close();
    side.wait().await;

    let rec = lock(&shared.rec);
    let mut report = Report::build(&rec, arrival_phase, duration);
    report.late_threshold_ms = config.late_threshold.as_millis() as u64;
    report.drain_timed_out = !drained || report.lost > 0;
    report.settings = config.settings_json();
    let w = lock_w(&window_samples);
    report.smpp.window_occupancy_peak = w.peak;
    report.smpp.window_occupancy_mean = (w.samples > 0).then(|| w.sum / w.samples as f64);
    report.smpp.window_size = w.size;
    report.smpp.gateway_throttles = w.throttles;
    Ok(report)
}

/// One arrival: start, then follow to the end.
async fn one(s: &Arc<Shared>, a: Arrival) {
    let scheduled = s.t0 + a.at;
    let params = StartParams {
        msisdn: (s.config.msisdn_base + u64::from(a.index)).to_string(),
        loa3: a.loa3,
        client_name: s.config.client_name.clone(),
        expiry_secs: s.config.expiry_secs,
    };
    match s.target.start(params.clone()).await {
        Ok(StartOutcome::Started { id }) => {
            lock(&s.rec).start(s.rel(Instant::now()));
            follow(s.clone(), id, scheduled, Some((params, a.n))).await;
        }
        Ok(StartOutcome::Refused { code }) => lock(&s.rec).refuse(s.rel(Instant::now()), &code),
        Err(e) => {
            tracing::debug!(error = %e, "start failed");
            lock(&s.rec).start_error(s.rel(Instant::now()));
        }
    }
}

/// Long-polls authorization `id` until it is terminal or the drain deadline passes. With the
/// retry model and `retry` set, a late prompt may make the user press "send again".
fn follow(
    s: Arc<Shared>,
    id: String,
    scheduled: Instant,
    retry: Option<(StartParams, u64)>,
) -> futures_util::future::BoxFuture<'static, ()> {
    Box::pin(follow_inner(s, id, scheduled, retry))
}

async fn follow_inner(
    s: Arc<Shared>,
    id: String,
    scheduled: Instant,
    retry: Option<(StartParams, u64)>,
) {
    let mut rng = Rng::new(s.config.seed ^ retry.as_ref().map_or(0, |r| r.1).wrapping_mul(0x9E37));
    let mut presses = 0u32;
    let mut last_step = String::from("unpolled");
    // Time to `prompted`, the gateway's part when the view carries no `gateway_ms`.
    let mut prompted_after: Option<Duration> = None;
    if let Some(every) = s.config.prompt_probe {
        let until = (Instant::now() + PROMPT_PROBE_LIMIT).min(s.deadline);
        while Instant::now() < until {
            match s.target.poll(&id, Duration::ZERO).await {
                Ok(v) if v.is_terminal() => {
                    let end = Instant::now();
                    finish(
                        &s,
                        &v,
                        scheduled,
                        end,
                        Some(end.saturating_duration_since(scheduled)),
                    );
                    return;
                }
                Ok(v) => {
                    if matches!(v.step.as_deref(), Some("prompted" | "answered")) {
                        prompted_after = Some(Instant::now().saturating_duration_since(scheduled));
                        break;
                    }
                    last_step = v.step.unwrap_or_else(|| "pending".into());
                }
                Err(_) => lock(&s.rec).poll_errors += 1,
            }
            tokio::time::sleep(every).await;
        }
    }
    loop {
        let now = Instant::now();
        if now >= s.deadline {
            tracing::warn!(%id, step = %last_step, "authorization not terminal at the drain deadline");
            lock(&s.rec).abandon(&last_step);
            return;
        }
        let remaining = s.deadline - now;
        let model =
            s.config.retry.as_ref().filter(|m| {
                retry.is_some() && presses < m.max_presses && m.late_after.as_secs() >= 1
            });
        let wait = match model {
            Some(m) => m.late_after,
            None => Duration::from_secs(30),
        }
        .min(Duration::from_secs(remaining.as_secs()));
        if wait.is_zero() {
            // Under a second left: one last look after it.
            tokio::time::sleep(remaining).await;
        }
        match s.target.poll(&id, wait).await {
            Ok(v) if v.is_terminal() => {
                finish(&s, &v, scheduled, Instant::now(), prompted_after);
                return;
            }
            Ok(v) => {
                last_step = v.step.clone().unwrap_or_else(|| "pending".into());
                let not_prompted = matches!(v.step.as_deref(), Some("created" | "routed"));
                if let (Some(m), Some((params, _))) = (model, retry.as_ref()) {
                    presses += 1;
                    if not_prompted && rng.uniform() < m.probability {
                        press_again(&s, params.clone(), scheduled).await;
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "poll failed");
                lock(&s.rec).poll_errors += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Records a terminal view seen at `end`.
fn finish(
    s: &Shared,
    v: &target::Observed,
    scheduled: Instant,
    end: Instant,
    prompted_after: Option<Duration>,
) {
    let status = v.status.as_deref().unwrap_or("unknown");
    let mut rec = lock(&s.rec);
    let gateway_ms = match (v.gateway_ms, prompted_after) {
        (Some(ms), _) => {
            rec.gateway_from_view += 1;
            Some(ms)
        }
        (None, Some(d)) => {
            rec.gateway_from_prompt += 1;
            Some(d.as_millis() as u64)
        }
        (None, None) => {
            rec.gateway_missing += 1;
            None
        }
    };
    let key = format!("{status}/{}", v.reason.as_deref().unwrap_or("-"));
    *rec.reasons.entry(key).or_default() += 1;
    rec.complete(
        s.rel(end),
        status,
        end.saturating_duration_since(scheduled),
        gateway_ms,
    );
}

/// The user presses "send again": a second start for the same MSISDN. The gateway should
/// answer `already_in_progress`; if it starts another authorization, that one is followed too
/// (and counted started) so nothing goes unaccounted.
async fn press_again(s: &Arc<Shared>, params: StartParams, scheduled: Instant) {
    match s.target.start(params).await {
        Ok(StartOutcome::Started { id }) => {
            {
                let mut rec = lock(&s.rec);
                rec.retry("started");
                rec.start(s.rel(Instant::now()));
            }
            s.tracker.spawn(follow(s.clone(), id, scheduled, None));
        }
        Ok(StartOutcome::Refused { code }) => lock(&s.rec).retry(&code),
        Err(_) => lock(&s.rec).retry("transport_error"),
    }
}

#[derive(Debug, Default)]
struct WindowSamples {
    peak: Option<u64>,
    sum: f64,
    samples: u64,
    size: Option<u64>,
    throttles: Option<u64>,
}

fn lock_w(w: &Mutex<WindowSamples>) -> MutexGuard<'_, WindowSamples> {
    w.lock().unwrap_or_else(|p| p.into_inner())
}

/// Samples the gateway's SMPP window occupancy twice a second.
async fn scrape_windows(url: String, out: Arc<Mutex<WindowSamples>>, stop: CancellationToken) {
    let client = target::http_client();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let Ok(text) = target::scrape(&client, &url).await else {
            continue;
        };
        // The gateway registers under the `gateway_` prefix; accept the bare names too.
        let metric = |name: &str| {
            target::metric_sum(&text, &format!("gateway_{name}"))
                .or_else(|| target::metric_sum(&text, name))
        };
        let mut w = lock_w(&out);
        if let Some(occ) = metric("smpp_window_occupancy") {
            let occ = occ.max(0.0) as u64;
            w.peak = Some(w.peak.unwrap_or(0).max(occ));
            w.sum += occ as f64;
            w.samples += 1;
        }
        if let Some(size) = metric("smpp_window_size") {
            w.size = Some(size as u64);
        }
        if let Some(t) = metric("smpp_throttles_total") {
            w.throttles = Some(t as u64);
        }
    }
}

/// Progress: an indicatif bar on a terminal, plain lines on stderr every 5 s otherwise.
async fn progress(s: Arc<Shared>, total: u64, stop: CancellationToken) {
    let mode = s.config.progress;
    if mode == ProgressMode::Off {
        return;
    }
    let bar = (mode == ProgressMode::Auto && std::io::stderr().is_terminal()).then(|| {
        let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        if let Ok(style) =
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
        {
            b.set_style(style.progress_chars("=> "));
        }
        b
    });
    let period = if bar.is_some() {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(5)
    };
    let mut tick = tokio::time::interval_at(Instant::now() + period, period);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let line = {
            let rec = lock(&s.rec);
            let now = s.rel(Instant::now()).as_secs() as usize;
            // The last complete second.
            let last = now.checked_sub(1).and_then(|i| rec.seconds.get(i));
            let errors: u64 = rec.refused.values().sum::<u64>() + rec.start_errors;
            let p99 = if rec.e2e.is_empty() {
                0
            } else {
                rec.e2e.value_at_quantile(0.99)
            };
            let line = format!(
                "offered {}/s achieved {}/s | in flight {} | p99 {} ms | done {} | errors {}",
                last.map_or(0, |x| x.offered),
                last.map_or(0, |x| x.completed),
                rec.in_flight,
                p99,
                rec.completed_total(),
                errors
            );
            (rec.offered, line)
        };
        match &bar {
            Some(b) => {
                b.set_position(line.0);
                b.set_message(line.1);
            }
            None => eprintln!(
                "[{:>6.1} s] {}/{} {}",
                s.rel(Instant::now()).as_secs_f64(),
                line.0,
                total,
                line.1
            ),
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
}

/// Runs the capacity search: the same slice of the day at rising compression.
pub async fn capacity_search(
    base: &SurgeConfig,
    search: &capacity::CapacityConfig,
) -> anyhow::Result<capacity::CapacityResult> {
    let result = capacity::search(search, |compress| {
        let c = SurgeConfig {
            compress,
            ..base.clone()
        };
        async move {
            let r = run(&c).await?;
            let step = capacity::Step {
                compress,
                offered_per_s: r.offered_per_s,
                achieved_per_s: r.achieved_per_s,
                gateway_p99_ms: r.gateway_latency_ms.p99,
                error_rate: r.error_rate(),
                lost: r.lost,
                sustained: false,
            };
            eprintln!(
                "capacity step x{compress:.1}: offered {:.2}/s achieved {:.2}/s gateway p99 {} ms errors {:.2} %",
                step.offered_per_s, step.achieved_per_s, step.gateway_p99_ms, step.error_rate * 100.0
            );
            anyhow::Ok(step)
        }
    })
    .await?;
    Ok(result)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};
    use target::{Observed, TargetError};

    /// A gateway that answers a repeated MSISDN `already_in_progress`, shows each
    /// authorization `created` on the first poll and `approved` on the second.
    #[derive(Default)]
    struct Fake {
        seen: Mutex<HashSet<String>>,
        polls: Mutex<HashMap<String, u32>>,
    }

    impl Target for Fake {
        fn start(
            &self,
            p: StartParams,
        ) -> futures_util::future::BoxFuture<'_, Result<StartOutcome, TargetError>> {
            let fresh = self.seen.lock().unwrap().insert(p.msisdn.clone());
            Box::pin(async move {
                Ok(if fresh {
                    StartOutcome::Started { id: p.msisdn }
                } else {
                    StartOutcome::Refused {
                        code: "already_in_progress".into(),
                    }
                })
            })
        }

        fn poll<'a>(
            &'a self,
            id: &'a str,
            _wait: Duration,
        ) -> futures_util::future::BoxFuture<'a, Result<Observed, TargetError>> {
            let n = {
                let mut polls = self.polls.lock().unwrap();
                let n = polls.entry(id.to_owned()).or_default();
                *n += 1;
                *n
            };
            Box::pin(async move {
                Ok(if n == 1 {
                    Observed {
                        state: "pending".into(),
                        step: Some("created".into()),
                        ..Observed::default()
                    }
                } else {
                    Observed {
                        state: "terminal".into(),
                        status: Some("approved".into()),
                        reason: Some("user_approved".into()),
                        gateway_ms: Some(5),
                        ..Observed::default()
                    }
                })
            })
        }
    }

    fn env(target: Arc<dyn Target>) -> Environment {
        Environment {
            target,
            metrics_url: None,
            smsc: None,
            gateway: None,
            temp_dir: None,
        }
    }

    fn arrivals(n: u64) -> Vec<Arrival> {
        (0..n)
            .map(|i| Arrival {
                n: i,
                at: Duration::from_millis(10 * i),
                index: i as u32,
                loa3: false,
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_prompt_makes_users_press_again_and_the_refusals_are_counted() {
        let config = SurgeConfig {
            retry: Some(RetryModel {
                late_after: Duration::from_secs(1),
                probability: 1.0,
                max_presses: 1,
            }),
            progress: ProgressMode::Off,
            prompt_probe: None,
            ..SurgeConfig::default()
        };
        let r = drive(&config, &arrivals(3), &env(Arc::new(Fake::default())))
            .await
            .unwrap();
        assert_eq!(r.offered, 3);
        assert_eq!(r.started, 3);
        assert_eq!(r.completed.get("approved"), Some(&3));
        assert_eq!(r.lost, 0);
        assert_eq!(r.retries, 3);
        assert_eq!(r.retry_outcomes.get("already_in_progress"), Some(&3));
        assert_eq!(r.gateway_latency_ms.max, 5);
        assert_eq!(r.gateway_latency_source.get("view"), Some(&3));
    }

    /// Never ends anything: every started authorization must come out lost.
    struct Stuck;

    impl Target for Stuck {
        fn start(
            &self,
            p: StartParams,
        ) -> futures_util::future::BoxFuture<'_, Result<StartOutcome, TargetError>> {
            Box::pin(async move { Ok(StartOutcome::Started { id: p.msisdn }) })
        }

        fn poll<'a>(
            &'a self,
            _id: &'a str,
            wait: Duration,
        ) -> futures_util::future::BoxFuture<'a, Result<Observed, TargetError>> {
            Box::pin(async move {
                tokio::time::sleep(wait).await;
                Ok(Observed {
                    state: "pending".into(),
                    step: Some("prompted".into()),
                    ..Observed::default()
                })
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn authorizations_still_pending_at_the_drain_deadline_are_lost_with_their_step() {
        let config = SurgeConfig {
            drain: Duration::from_secs(5),
            progress: ProgressMode::Off,
            prompt_probe: None,
            ..SurgeConfig::default()
        };
        let r = drive(&config, &arrivals(4), &env(Arc::new(Stuck)))
            .await
            .unwrap();
        assert_eq!(r.started, 4);
        assert_eq!(r.lost, 4);
        assert!(r.drain_timed_out);
        assert_eq!(r.lost_steps.get("prompted"), Some(&4));
        let mut r = r;
        assert!(!check_slo(&mut r, &Slo::default()));
    }

    #[test]
    fn the_in_process_gateway_config_loads_and_matches_the_population() {
        let c = SurgeConfig {
            population: 5_000,
            expiry_secs: Some(20),
            ..SurgeConfig::default()
        };
        let toml = gateway_toml(
            &c,
            &GatewayToml {
                smsc_addr: "127.0.0.1:2775",
                system_id: "surge",
                password: "secret",
                binds: 2,
                window: 10,
                max_submits_per_sec: Some(50),
                max_in_flight: 300,
                loa3_over_ussd: false,
                dir: std::path::Path::new("/tmp/surge-test"),
            },
        );
        let g = gateway::config::GatewayConfig::from_toml(&toml, &[]).unwrap();
        let generate = g.subscribers.generate.unwrap();
        assert_eq!(generate.count, 5_000);
        assert_eq!(generate.msisdn_base, c.msisdn_base);
        assert_eq!(generate.seed, c.population_seed);
        assert_eq!(g.limits.max_in_flight, 300);
        assert_eq!(g.operators[0].binds.len(), 2);
        assert_eq!(g.policy.default_expiry_secs, 20);
    }
}
