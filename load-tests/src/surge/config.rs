//! The settings of one surge run: where the system under test is, the workload's shape, the
//! user model, the SLOs.

use std::time::Duration;

use sim_applet_model::handset::user::UserParams;

use super::chaos::ChaosEvent;
use super::profile::{self, DailyProfile};
use super::schedule::ScheduleConfig;

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

/// The gateway's store for a run started here.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StoreChoice {
    /// Each node its own embedded store (one node only).
    #[default]
    Embedded,
    /// Each node its own append-only journal (one node only).
    Journal,
    /// Every node on one Redis: the one at this URL, or a `redis-server` started here.
    Redis(Option<String>),
}

impl std::str::FromStr for StoreChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "embedded" => Ok(Self::Embedded),
            "journal" => Ok(Self::Journal),
            "redis" => Ok(Self::Redis(None)),
            _ => match s.strip_prefix("redis=") {
                Some(url) if url.starts_with("redis://") => Ok(Self::Redis(Some(url.to_owned()))),
                _ => Err(format!(
                    "`{s}`: expected embedded, journal, redis or redis=redis://host:port/"
                )),
            },
        }
    }
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

/// How the driver learns each authorization's ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Follow {
    /// A task per authorization long-polls its view (a connection each while it waits).
    #[default]
    LongPoll,
    /// The gateway POSTs the ending to a receiver here; nothing is held per authorization but
    /// a map entry (see [`super::following`]).
    Callbacks,
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
    /// Faults at chosen seconds of the run (see `chaos`).
    pub chaos: Vec<ChaosEvent>,
    /// Run the gateway started here in a child process (needed to kill it).
    pub gateway_process: bool,
    /// Check every result twice: each start asks for a callback to a receiver here, and
    /// every terminal result is read again after the drain; a disagreement counts in
    /// `duplicates`.
    pub verify: bool,
    /// How each authorization is followed to its end.
    pub follow: Follow,
    /// Longest wait for outstanding callbacks after the drain.
    pub callback_wait: Duration,
    /// Gateway nodes started here (in-process), their binds all to the SMSC; API calls are
    /// spread over them. More than one needs the Redis store.
    pub nodes: u32,
    pub store: StoreChoice,
    /// The embedded store's `durable_commit_interval_ms` (absent: the gateway's default).
    pub durable_commit_interval_ms: Option<u64>,
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
            follow: Follow::LongPoll,
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
            chaos: Vec::new(),
            gateway_process: false,
            verify: false,
            callback_wait: Duration::from_secs(60),
            nodes: 1,
            store: StoreChoice::Embedded,
            durable_commit_interval_ms: None,
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

    /// Whether the gateway started here runs in a child process: asked for, or needed by a
    /// `kill-gateway` in the chaos plan.
    pub fn wants_gateway_process(&self) -> bool {
        self.gateway_process
            || self
                .chaos
                .iter()
                .any(|e| e.action == super::chaos::ChaosAction::KillGateway)
    }

    pub(super) fn settings_json(&self) -> serde_json::Value {
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
            "follow": self.follow,
            "retry": self.retry.as_ref().map(|r| serde_json::json!({
                "late_after_s": r.late_after.as_secs(), "probability": r.probability, "max_presses": r.max_presses
            })),
            "drain_s": self.drain.as_secs_f64(),
            "gateway": gateway,
            "gateway_process": self.wants_gateway_process(),
            "nodes": self.nodes,
            "store": match &self.store {
                StoreChoice::Embedded => "embedded".to_owned(),
                StoreChoice::Journal => "journal".to_owned(),
                StoreChoice::Redis(None) => "redis (started here)".to_owned(),
                StoreChoice::Redis(Some(url)) => format!("redis {url}"),
            },
            "durable_commit_interval_ms": self.durable_commit_interval_ms,
            "verify": self.verify,
            "chaos": self.chaos.iter().map(|e| serde_json::json!({
                "action": e.action.name(), "at_s": e.at.as_secs_f64(),
                "argument": match e.action {
                    super::chaos::ChaosAction::KillGateway => serde_json::Value::Null,
                    super::chaos::ChaosAction::SmscOutage(d)
                    | super::chaos::ChaosAction::ThrottleStorm(d) => d.as_secs_f64().into(),
                    super::chaos::ChaosAction::Malformed(n) => n.into(),
                },
            })).collect::<Vec<_>>(),
        })
    }
}
