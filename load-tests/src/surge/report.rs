//! What a run measured: the [`Recorder`] the driver's tasks write into while the run goes, and
//! the [`Report`] made from it at the end (text on stdout, JSON with `--json`).
//!
//! Outcome accounting: every scheduled arrival is `offered`; a start the gateway accepted is
//! `started`, one it refused counts under `refused` by error code, one that never got an HTTP
//! answer under `start_errors`. Every started authorization must be seen in a terminal status
//! (`completed`, by status); `lost = started - completed` and must be 0. Latencies are in
//! milliseconds from the arrival's scheduled time, so a driver that falls behind shows it in
//! the figures instead of hiding it (no coordinated omission).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use base64::Engine;
use hdrhistogram::serialization::{Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency the histograms hold, ms (one hour); above is clamped to it.
const MAX_MS: u64 = 3_600_000;

/// A latency histogram in ms with 3 significant figures.
fn histogram(sigfig: u8) -> Histogram<u64> {
    // Bounds are constants within hdrhistogram's limits, so construction cannot fail; fall
    // back to an auto-resizing one rather than panic.
    Histogram::new_with_bounds(1, MAX_MS, sigfig).unwrap_or_else(|_| {
        let mut h = Histogram::new(sigfig.min(5)).unwrap_or_else(|_| {
            Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant figures are valid"))
        });
        h.auto(true);
        h
    })
}

/// Per-second figures, for the progress line and the chart.
#[derive(Debug, Clone)]
pub struct Second {
    pub offered: u64,
    pub started: u64,
    pub completed: u64,
    pub errors: u64,
    /// Of `errors`, starts the gateway refused.
    pub refused: u64,
    /// Most authorizations in flight during this second.
    pub in_flight: u64,
    /// End-to-end latency of the authorizations that ended in this second.
    pub latency: Histogram<u64>,
    /// ... of those that ended other than `expired` (the users who answered; an expiry's
    /// latency is the expiry time, whatever the system did).
    pub answered: Histogram<u64>,
    /// The gateway's own latency of the authorizations offered in this second.
    pub gateway: Histogram<u64>,
}

impl Second {
    fn new() -> Self {
        Self {
            offered: 0,
            started: 0,
            completed: 0,
            errors: 0,
            refused: 0,
            in_flight: 0,
            latency: histogram(2),
            answered: histogram(2),
            gateway: histogram(2),
        }
    }
}

/// One terminal result, for [`Recorder::classify`].
#[derive(Debug, Clone, Copy)]
pub struct Classified<'a> {
    pub status: &'a str,
    pub channel: Option<&'a str>,
    pub operator: Option<&'a str>,
    /// When it was offered and when it ended, from the start of the run.
    pub scheduled: Duration,
    pub now: Duration,
    pub e2e: Duration,
    pub gateway_ms: Option<u64>,
}

/// Live counters of a run; one per run, behind a mutex.
#[derive(Debug)]
pub struct Recorder {
    pub offered: u64,
    pub started: u64,
    pub completed: BTreeMap<String, u64>,
    /// `status/reason` -> count.
    pub reasons: BTreeMap<String, u64>,
    /// Step last seen of the authorizations given up on at the drain deadline.
    pub lost_steps: BTreeMap<String, u64>,
    pub refused: BTreeMap<String, u64>,
    pub start_errors: u64,
    /// Polls that failed after the start (transport errors, unexpected statuses); retried.
    pub poll_errors: u64,
    pub late_starts: u64,
    /// "Send again" presses and what the gateway answered them.
    pub retries: u64,
    pub retry_outcomes: BTreeMap<String, u64>,
    pub in_flight: u64,
    pub peak_in_flight: u64,
    /// Set when the last arrival has been dispatched; completions before count as achieved.
    pub arrivals_done: bool,
    pub completed_in_phase: u64,
    pub e2e: Histogram<u64>,
    pub gateway: Histogram<u64>,
    /// Where each gateway latency came from: the view's `gateway_ms`, the time from the
    /// scheduled instant to the first view in step `prompted`, or neither (left out).
    pub gateway_from_view: u64,
    pub gateway_from_prompt: u64,
    pub gateway_missing: u64,
    pub seconds: Vec<Second>,
    /// With verification on: the first terminal `(status, reason)` the driver saw, by id.
    pub terminal_seen: Option<HashMap<String, (String, String)>>,
    /// Terminal status counts by channel (`ussd`, `stk`) and by operator.
    pub by_channel: BTreeMap<String, BTreeMap<String, u64>>,
    pub by_operator: BTreeMap<String, BTreeMap<String, u64>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        Self {
            offered: 0,
            started: 0,
            completed: BTreeMap::new(),
            reasons: BTreeMap::new(),
            lost_steps: BTreeMap::new(),
            refused: BTreeMap::new(),
            start_errors: 0,
            poll_errors: 0,
            late_starts: 0,
            retries: 0,
            retry_outcomes: BTreeMap::new(),
            in_flight: 0,
            peak_in_flight: 0,
            arrivals_done: false,
            completed_in_phase: 0,
            e2e: histogram(3),
            gateway: histogram(3),
            gateway_from_view: 0,
            gateway_from_prompt: 0,
            gateway_missing: 0,
            seconds: Vec::new(),
            terminal_seen: None,
            by_channel: BTreeMap::new(),
            by_operator: BTreeMap::new(),
        }
    }

    fn second(&mut self, at: Duration) -> &mut Second {
        let i = at.as_secs() as usize;
        while self.seconds.len() <= i {
            self.seconds.push(Second::new());
        }
        &mut self.seconds[i]
    }

    /// An arrival was dispatched `lag` after its scheduled time.
    pub fn offer(&mut self, scheduled: Duration, late: bool) {
        self.offered += 1;
        if late {
            self.late_starts += 1;
        }
        self.second(scheduled).offered += 1;
    }

    pub fn start(&mut self, now: Duration) {
        self.started += 1;
        self.in_flight += 1;
        self.peak_in_flight = self.peak_in_flight.max(self.in_flight);
        let in_flight = self.in_flight;
        let s = self.second(now);
        s.started += 1;
        s.in_flight = s.in_flight.max(in_flight);
    }

    pub fn refuse(&mut self, now: Duration, code: &str) {
        *self.refused.entry(code.to_owned()).or_default() += 1;
        let s = self.second(now);
        s.errors += 1;
        s.refused += 1;
    }

    pub fn start_error(&mut self, now: Duration) {
        self.start_errors += 1;
        self.second(now).errors += 1;
    }

    /// A started authorization ended with `status`.
    pub fn complete(
        &mut self,
        now: Duration,
        status: &str,
        e2e: Duration,
        gateway_ms: Option<u64>,
    ) {
        *self.completed.entry(status.to_owned()).or_default() += 1;
        if !self.arrivals_done {
            self.completed_in_phase += 1;
        }
        self.in_flight = self.in_flight.saturating_sub(1);
        let e2e_ms = (e2e.as_millis() as u64).clamp(1, MAX_MS);
        let _ = self.e2e.record(e2e_ms);
        if let Some(g) = gateway_ms {
            let _ = self.gateway.record(g.clamp(1, MAX_MS));
        }
        let s = self.second(now);
        s.completed += 1;
        let _ = s.latency.record(e2e_ms);
    }

    /// Where a terminal result falls in the breakdowns and the timeline: by channel and
    /// operator, the gateway's latency in the second it was offered, the end-to-end latency of
    /// an answered one in the second it ended.
    pub fn classify(&mut self, ending: Classified<'_>) {
        let Classified {
            status,
            channel,
            operator,
            scheduled,
            now,
            e2e,
            gateway_ms,
        } = ending;
        *self
            .by_channel
            .entry(channel.unwrap_or("unknown").to_owned())
            .or_default()
            .entry(status.to_owned())
            .or_default() += 1;
        *self
            .by_operator
            .entry(operator.unwrap_or("unknown").to_owned())
            .or_default()
            .entry(status.to_owned())
            .or_default() += 1;
        if let Some(g) = gateway_ms {
            let _ = self.second(scheduled).gateway.record(g.clamp(1, MAX_MS));
        }
        if status != "expired" {
            let e2e_ms = (e2e.as_millis() as u64).clamp(1, MAX_MS);
            let _ = self.second(now).answered.record(e2e_ms);
        }
    }

    /// A started authorization was given up on (drain time over).
    pub fn abandon(&mut self, last_step: &str) {
        self.in_flight = self.in_flight.saturating_sub(1);
        *self.lost_steps.entry(last_step.to_owned()).or_default() += 1;
    }

    pub fn retry(&mut self, outcome: &str) {
        self.retries += 1;
        *self.retry_outcomes.entry(outcome.to_owned()).or_default() += 1;
    }

    pub fn completed_total(&self) -> u64 {
        self.completed.values().sum()
    }
}

fn quantile(h: &Histogram<u64>, q: f64) -> Option<u64> {
    (!h.is_empty()).then(|| h.value_at_quantile(q))
}

/// Percentiles of one latency histogram, ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            mean: (h.mean() * 10.0).round() / 10.0,
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// SMPP figures: the SMSC's counters (in-process SMSC only) and the gateway's binds (scraped
/// from its `/metrics`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SmppFigures {
    /// submit_sm the SMSC accepted or throttled.
    pub submits: Option<u64>,
    /// submit_sm the SMSC answered ESME_RTHROTTLED.
    pub throttles: Option<u64>,
    /// deliver_sm (MO, receipts) the SMSC had to send again.
    pub retries: Option<u64>,
    pub receipts: Option<u64>,
    pub mo_delivered: Option<u64>,
    pub generic_nacks: Option<u64>,
    /// Throttled submits the gateway re-sent after a pause (`smpp_throttles`).
    pub gateway_throttles: Option<u64>,
    /// Reconnects of the gateway's binds over the run (`smpp_reconnects`): a bind lost.
    #[serde(default)]
    pub gateway_reconnects: Option<u64>,
    /// Connections the in-process SMSC closed on accept during an outage.
    #[serde(default)]
    pub outage_refusals: Option<u64>,
    /// Malformed PDUs sent to the gateway, and those it answered (`generic_nack` or an
    /// error response) without losing the bind.
    #[serde(default)]
    pub malformed_sent: Option<u64>,
    #[serde(default)]
    pub malformed_answered: Option<u64>,
    /// Highest sum over binds of unanswered submit_sm seen, and the summed window size.
    pub window_occupancy_peak: Option<u64>,
    pub window_occupancy_mean: Option<f64>,
    pub window_size: Option<u64>,
}

/// The gateway's store over the run (scraped from its `/metrics`; the embedded store only).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreFigures {
    /// Group commits of the store's writer.
    pub commits: Option<u64>,
    /// Of those, fsynced.
    pub fsyncs: Option<u64>,
    /// fsyncs over completed authorizations.
    pub fsyncs_per_authorization: Option<f64>,
}

/// Every result checked twice (runs with verification on): re-read after the drain, and
/// compared with what the callbacks said.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    /// Terminal results read again after the drain; those that differed from the first
    /// terminal view; reads that failed.
    pub reread: u64,
    pub reread_changed: u64,
    pub reread_errors: u64,
    /// Authorizations seen terminal, each owed at least one callback.
    pub callbacks_expected: u64,
    /// Callback deliveries received (at least once: a delivery may repeat).
    pub callbacks_received: u64,
    /// Repeated deliveries of an event already received.
    pub callback_redeliveries: u64,
    /// Authorizations whose callback never came within the wait.
    pub callbacks_missing: u64,
    /// Authorizations with a callback saying something other than GET.
    pub callbacks_disagreeing: u64,
    /// Callbacks for ids the driver never saw started (a start answered by a process that
    /// was killed before its response left).
    pub callbacks_for_unseen_ids: u64,
    /// Callback bodies that were not a terminal view.
    pub callbacks_malformed: u64,
}

/// One gateway node of the run (scraped from its `/metrics` at the end).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeFigures {
    /// Authorizations it admitted.
    pub started: u64,
    /// `deliver_sm` its binds received (answers and receipts).
    pub answers_received: u64,
    /// Consent prompts it submitted.
    pub prompts_sent: u64,
    /// Answers it took for another node's prompts.
    pub cross_node_answers: u64,
}

/// The shared Redis over the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RedisFigures {
    /// Requests the nodes sent (commands, scripts, pipelines; health pings excluded).
    pub round_trips: u64,
    /// ... over completed authorizations.
    pub round_trips_per_authorization: Option<f64>,
    /// CPU the Redis server used (user + system), when it could be read.
    pub cpu_seconds: Option<f64>,
}

/// The gateway child process over the run (`--gateway-process`): the gateway alone, apart
/// from the driver and the SMSC.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GatewayProcessFigures {
    /// CPU it used during the run (user + system).
    pub cpu_seconds: f64,
    /// ... per completed authorization, in microseconds.
    pub cpu_us_per_authorization: Option<f64>,
    /// Its peak resident set.
    pub peak_rss_bytes: u64,
}

/// One second of the run in the JSON timeline.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TimelinePoint {
    pub second: u64,
    pub offered: u64,
    pub started: u64,
    pub completed: u64,
    pub errors: u64,
    /// End-to-end p99 of what ended in this second, expiries included.
    pub p99_ms: u64,
    #[serde(default)]
    pub refused: u64,
    #[serde(default)]
    pub in_flight: u64,
    /// End-to-end p99 of what ended in this second other than `expired`.
    #[serde(default)]
    pub answered_p99_ms: Option<u64>,
    /// The gateway's own latency of what was offered in this second.
    #[serde(default)]
    pub gateway_p50_ms: Option<u64>,
    #[serde(default)]
    pub gateway_p99_ms: Option<u64>,
    #[serde(default)]
    pub gateway_max_ms: Option<u64>,
    /// The gateway's SMPP window occupancy (highest sample) and throttles in this second.
    #[serde(default)]
    pub smpp_window: Option<u64>,
    #[serde(default)]
    pub smpp_throttles: Option<u64>,
}

/// The end-of-run report. Key names are fixed (scripts and tests read them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub offered: u64,
    pub started: u64,
    /// Terminal status -> count.
    pub completed: BTreeMap<String, u64>,
    /// `status/reason` -> count.
    pub reasons: BTreeMap<String, u64>,
    /// Pending step last seen of each lost authorization -> count.
    pub lost_steps: BTreeMap<String, u64>,
    /// Starts refused by the gateway: error code (or `http_<status>`) -> count.
    pub refused: BTreeMap<String, u64>,
    /// Starts that got no HTTP answer.
    pub start_errors: u64,
    pub poll_errors: u64,
    pub lost: u64,
    /// Authorizations whose client-visible terminal result changed (a re-read or a callback
    /// disagreeing with the first terminal view); must be 0. Counted when verification is on.
    #[serde(default)]
    pub duplicates: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// The chaos plan as carried out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chaos: Vec<super::chaos::ChaosRecord>,
    /// Per gateway node started here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeFigures>,
    /// Answers that arrived on a node other than the prompting one, summed over the nodes.
    #[serde(default)]
    pub cross_node_answers: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisFigures>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_process: Option<GatewayProcessFigures>,
    /// Resident sets against the authorizations in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<super::memory::MemoryFigures>,
    /// Arrivals dispatched later than the lateness threshold after their scheduled time.
    pub late_starts: u64,
    pub late_threshold_ms: u64,
    /// Offered per second of the arrival phase.
    pub offered_per_s: f64,
    /// Completed per second while arrivals were being dispatched.
    pub achieved_per_s: f64,
    pub retries: u64,
    pub retry_outcomes: BTreeMap<String, u64>,
    pub latency_ms: Latency,
    pub gateway_latency_ms: Latency,
    /// Sources of `gateway_latency_ms`: `view` (the gateway's `gateway_ms`), `prompted` (time
    /// from the scheduled instant to the first view in step `prompted`, or to the terminal
    /// status when it ended before a prompt), `missing` (left out).
    pub gateway_latency_source: BTreeMap<String, u64>,
    pub peak_in_flight: u64,
    pub cpu_seconds: f64,
    pub peak_rss_bytes: u64,
    pub smpp: SmppFigures,
    #[serde(default)]
    pub store: StoreFigures,
    pub duration_s: f64,
    pub arrival_phase_s: f64,
    pub drain_timed_out: bool,
    /// SLO checks given on the command line: description -> met.
    pub slo: BTreeMap<String, bool>,
    /// HdrHistogram V2 deflate, base64 (`HistogramLogReader` / hdrhistogram crate).
    pub histograms: BTreeMap<String, String>,
    pub timeline: Vec<TimelinePoint>,
    /// Terminal status counts by channel and by operator.
    #[serde(default)]
    pub by_channel: BTreeMap<String, BTreeMap<String, u64>>,
    #[serde(default)]
    pub by_operator: BTreeMap<String, BTreeMap<String, u64>>,
    /// The run's settings, as given.
    pub settings: serde_json::Value,
}

/// Encodes a histogram as base64 V2-deflate, the HdrHistogram interchange format.
pub fn encode_histogram(h: &Histogram<u64>) -> String {
    let mut buf = Vec::new();
    match V2DeflateSerializer::new().serialize(h, &mut buf) {
        Ok(_) => base64::engine::general_purpose::STANDARD.encode(buf),
        Err(_) => String::new(),
    }
}

/// Figures of this process from `/proc` (Linux): CPU seconds (user + system) and peak RSS.
pub fn process_figures() -> (f64, u64) {
    process_figures_of("self")
}

/// [`process_figures`] of process `pid` (`"self"` or a number).
pub fn process_figures_of(pid: &str) -> (f64, u64) {
    let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name in parentheses; utime and stime are 14 and 15.
            let rest = &s[s.rfind(')')? + 1..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ut: f64 = f.get(11)?.parse().ok()?;
            let st: f64 = f.get(12)?.parse().ok()?;
            // USER_HZ is 100 on every Linux platform we run on.
            Some((ut + st) / 100.0)
        })
        .unwrap_or(0.0);
    (cpu, status_bytes(pid, "VmHWM").unwrap_or(0))
}

/// A size field of `/proc/<pid>/status` (`VmHWM`, `VmRSS` ...), in bytes.
pub fn status_bytes(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

impl Report {
    /// Builds the report from the recorder. `arrival_phase` is the schedule's span,
    /// `duration` the whole run (arrivals and drain).
    pub fn build(r: &Recorder, arrival_phase: Duration, duration: Duration) -> Self {
        let completed = r.completed_total();
        let (cpu_seconds, peak_rss_bytes) = process_figures();
        let mut histograms = BTreeMap::new();
        histograms.insert("latency_ms".into(), encode_histogram(&r.e2e));
        histograms.insert("gateway_latency_ms".into(), encode_histogram(&r.gateway));
        // Throughput while the load was offered (the drain tail of timeouts would dilute it).
        let (achieved_n, achieved_secs) = if arrival_phase.as_secs_f64() >= 0.5 {
            (r.completed_in_phase, arrival_phase.as_secs_f64())
        } else {
            (completed, duration.as_secs_f64())
        };
        let timeline = r
            .seconds
            .iter()
            .enumerate()
            .map(|(i, s)| TimelinePoint {
                second: i as u64,
                offered: s.offered,
                started: s.started,
                completed: s.completed,
                errors: s.errors,
                p99_ms: if s.latency.is_empty() {
                    0
                } else {
                    s.latency.value_at_quantile(0.99)
                },
                refused: s.refused,
                in_flight: s.in_flight,
                answered_p99_ms: quantile(&s.answered, 0.99),
                gateway_p50_ms: quantile(&s.gateway, 0.50),
                gateway_p99_ms: quantile(&s.gateway, 0.99),
                gateway_max_ms: (!s.gateway.is_empty()).then(|| s.gateway.max()),
                smpp_window: None,
                smpp_throttles: None,
            })
            .collect();
        let per = |n: u64, secs: f64| {
            if secs > 0.0 {
                (n as f64 / secs * 100.0).round() / 100.0
            } else {
                0.0
            }
        };
        Self {
            offered: r.offered,
            started: r.started,
            completed: r.completed.clone(),
            reasons: r.reasons.clone(),
            lost_steps: r.lost_steps.clone(),
            refused: r.refused.clone(),
            start_errors: r.start_errors,
            poll_errors: r.poll_errors,
            lost: r.started.saturating_sub(completed),
            duplicates: 0,
            verification: None,
            chaos: Vec::new(),
            nodes: Vec::new(),
            cross_node_answers: None,
            redis: None,
            gateway_process: None,
            memory: None,
            late_starts: r.late_starts,
            late_threshold_ms: 0,
            offered_per_s: per(r.offered, arrival_phase.as_secs_f64()),
            achieved_per_s: per(achieved_n, achieved_secs),
            retries: r.retries,
            retry_outcomes: r.retry_outcomes.clone(),
            latency_ms: Latency::of(&r.e2e),
            gateway_latency_ms: Latency::of(&r.gateway),
            gateway_latency_source: [
                ("view".to_owned(), r.gateway_from_view),
                ("prompted".to_owned(), r.gateway_from_prompt),
                ("missing".to_owned(), r.gateway_missing),
            ]
            .into_iter()
            .collect(),
            peak_in_flight: r.peak_in_flight,
            cpu_seconds: (cpu_seconds * 100.0).round() / 100.0,
            peak_rss_bytes,
            smpp: SmppFigures::default(),
            store: StoreFigures::default(),
            duration_s: (duration.as_secs_f64() * 1000.0).round() / 1000.0,
            arrival_phase_s: (arrival_phase.as_secs_f64() * 1000.0).round() / 1000.0,
            drain_timed_out: false,
            slo: BTreeMap::new(),
            histograms,
            timeline,
            by_channel: r.by_channel.clone(),
            by_operator: r.by_operator.clone(),
            settings: serde_json::Value::Null,
        }
    }

    /// Share of offered arrivals the system failed: refusals other than `policy_refused`,
    /// start transport errors, lost, and the terminal statuses that blame the system
    /// (`delivery_error`, `sim_error`, `not_reachable`).
    pub fn error_rate(&self) -> f64 {
        if self.offered == 0 {
            return 0.0;
        }
        let system_fail: u64 = self
            .completed
            .iter()
            .filter(|(k, _)| matches!(k.as_str(), "delivery_error" | "sim_error" | "not_reachable"))
            .map(|(_, v)| v)
            .sum();
        // A policy refusal is the configured answer, not a failure under load.
        let refused: u64 = self
            .refused
            .iter()
            .filter(|(k, _)| k.as_str() != "policy_refused")
            .map(|(_, v)| v)
            .sum();
        (system_fail + refused + self.start_errors + self.lost) as f64 / self.offered as f64
    }

    /// The human-readable summary printed at the end.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let map = |m: &BTreeMap<String, u64>| {
            if m.is_empty() {
                "-".to_owned()
            } else {
                m.iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let lat = |l: &Latency| {
            format!(
                "p50 {} p90 {} p99 {} p99.9 {} max {} ms (n={})",
                l.p50, l.p90, l.p99, l.p999, l.max, l.count
            )
        };
        let opt = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
        let _ = writeln!(s, "surge report");
        let _ = writeln!(
            s,
            "  offered      {} ({:.2}/s over {:.1} s)",
            self.offered, self.offered_per_s, self.arrival_phase_s
        );
        let _ = writeln!(s, "  started      {}", self.started);
        let _ = writeln!(s, "  completed    {}", map(&self.completed));
        let _ = writeln!(s, "  reasons      {}", map(&self.reasons));
        let _ = writeln!(
            s,
            "  refused      {} ; start errors {} ; poll errors {}",
            map(&self.refused),
            self.start_errors,
            self.poll_errors
        );
        let _ = writeln!(
            s,
            "  lost         {} {}{}",
            self.lost,
            if self.lost_steps.is_empty() {
                String::new()
            } else {
                format!("(last seen: {})", map(&self.lost_steps))
            },
            if self.drain_timed_out {
                " (drain time over)"
            } else {
                ""
            }
        );
        if let Some(v) = &self.verification {
            let _ = writeln!(
                s,
                "  duplicates   {} (re-read {} changed {} errors {}; callbacks {}/{} received, \
                 {} missing, {} disagreeing, {} redelivered, {} for unseen ids)",
                self.duplicates,
                v.reread,
                v.reread_changed,
                v.reread_errors,
                v.callbacks_expected - v.callbacks_missing,
                v.callbacks_expected,
                v.callbacks_missing,
                v.callbacks_disagreeing,
                v.callback_redeliveries,
                v.callbacks_for_unseen_ids,
            );
        }
        for c in &self.chaos {
            let _ = writeln!(
                s,
                "  chaos        {} planned {:.1} s, at {:.1} s: {}{}",
                c.action,
                c.planned_s,
                c.at_s,
                c.outcome,
                c.downtime_ms
                    .map_or(String::new(), |d| format!(" (API back after {d} ms)")),
            );
        }
        if let (Some(sent), Some(answered)) =
            (self.smpp.malformed_sent, self.smpp.malformed_answered)
        {
            if sent > 0 {
                let _ = writeln!(
                    s,
                    "  malformed    {answered}/{sent} PDUs answered by the gateway"
                );
            }
        }
        let _ = writeln!(
            s,
            "  late starts  {} (> {} ms behind schedule)",
            self.late_starts, self.late_threshold_ms
        );
        let _ = writeln!(s, "  achieved     {:.2}/s", self.achieved_per_s);
        let _ = writeln!(
            s,
            "  retries      {} ({})",
            self.retries,
            map(&self.retry_outcomes)
        );
        let _ = writeln!(s, "  end to end   {}", lat(&self.latency_ms));
        let _ = writeln!(s, "  gateway      {}", lat(&self.gateway_latency_ms));
        let _ = writeln!(s, "  peak in flight {}", self.peak_in_flight);
        let _ = writeln!(
            s,
            "  smpp         submits {} throttles {} (gateway {}) retries {} window peak {}/{} mean {} reconnects {}",
            opt(self.smpp.submits),
            opt(self.smpp.throttles),
            opt(self.smpp.gateway_throttles),
            opt(self.smpp.retries),
            opt(self.smpp.window_occupancy_peak),
            opt(self.smpp.window_size),
            self.smpp
                .window_occupancy_mean
                .map_or("-".to_owned(), |m| format!("{m:.2}")),
            opt(self.smpp.gateway_reconnects),
        );
        for (i, n) in self.nodes.iter().enumerate() {
            let _ = writeln!(
                s,
                "  node {i}       started {} prompts {} answers received {} cross-node {}",
                n.started, n.prompts_sent, n.answers_received, n.cross_node_answers
            );
        }
        if let Some(r) = &self.redis {
            let _ = writeln!(
                s,
                "  redis        {} round trips ({} per authorization), {} CPU s",
                r.round_trips,
                r.round_trips_per_authorization
                    .map_or("-".to_owned(), |v| format!("{v:.2}")),
                r.cpu_seconds.map_or("-".to_owned(), |v| format!("{v:.2}")),
            );
        }
        if let (Some(commits), Some(fsyncs)) = (self.store.commits, self.store.fsyncs) {
            let _ = writeln!(
                s,
                "  store        {commits} commits, {fsyncs} fsyncs, {} per authorization",
                self.store
                    .fsyncs_per_authorization
                    .map_or("-".to_owned(), |f| format!("{f:.3}")),
            );
        }
        let _ = writeln!(
            s,
            "  process      {:.2} CPU s, peak RSS {:.1} MiB, {:.1} s wall",
            self.cpu_seconds,
            self.peak_rss_bytes as f64 / (1024.0 * 1024.0),
            self.duration_s
        );
        if let Some(g) = &self.gateway_process {
            let _ = writeln!(
                s,
                "  gateway      {:.2} CPU s ({} us per authorization), peak RSS {:.1} MiB (its own process)",
                g.cpu_seconds,
                g.cpu_us_per_authorization
                    .map_or("-".to_owned(), |v| format!("{v:.0}")),
                g.peak_rss_bytes as f64 / (1024.0 * 1024.0),
            );
        }
        if let Some(m) = self
            .memory
            .as_ref()
            .filter(|m| m.driver_bytes_per_in_flight.is_some())
        {
            let per = |b: Option<f64>| b.map_or("-".to_owned(), |v| format!("{v:.0} B"));
            let _ = writeln!(
                s,
                "  memory       at {} in flight: driver {} per authorization, gateway {}",
                m.at_peak.in_flight,
                per(m.driver_bytes_per_in_flight),
                per(m.gateway_bytes_per_in_flight),
            );
        }
        for (k, ok) in &self.slo {
            let _ = writeln!(s, "  SLO {k}: {}", if *ok { "met" } else { "MISSED" });
        }
        s
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn lost_is_started_minus_completed() {
        let mut r = Recorder::new();
        for i in 0..3 {
            r.offer(Duration::from_secs(i), false);
            r.start(Duration::from_secs(i));
        }
        r.complete(
            Duration::from_secs(2),
            "approved",
            Duration::from_millis(900),
            Some(40),
        );
        r.complete(
            Duration::from_secs(2),
            "expired",
            Duration::from_millis(1900),
            Some(30),
        );
        let rep = Report::build(&r, Duration::from_secs(3), Duration::from_secs(4));
        assert_eq!(rep.lost, 1);
        assert_eq!(rep.completed.get("approved"), Some(&1));
        assert_eq!(rep.peak_in_flight, 3);
    }

    #[test]
    fn percentiles_come_from_the_recorded_latencies() {
        let mut r = Recorder::new();
        for ms in 1..=1000u64 {
            r.start(Duration::ZERO);
            r.complete(
                Duration::ZERO,
                "approved",
                Duration::from_millis(ms),
                Some(ms / 10),
            );
        }
        let l = Latency::of(&r.e2e);
        assert!((l.p50 as i64 - 500).abs() <= 1, "{l:?}");
        assert!((l.p99 as i64 - 990).abs() <= 1, "{l:?}");
        assert_eq!(l.max, 1000);
        assert_eq!(Latency::of(&r.gateway).max, 100);
    }

    #[test]
    fn json_has_the_fixed_keys() {
        let r = Recorder::new();
        let v = serde_json::to_value(Report::build(&r, Duration::ZERO, Duration::ZERO)).unwrap();
        for k in [
            "offered",
            "started",
            "completed",
            "lost",
            "achieved_per_s",
            "late_starts",
            "latency_ms",
            "gateway_latency_ms",
            "peak_in_flight",
            "cpu_seconds",
            "peak_rss_bytes",
            "smpp",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        for k in ["p50", "p90", "p99", "p999", "max"] {
            assert!(v["latency_ms"].get(k).is_some(), "missing latency_ms.{k}");
        }
    }

    #[test]
    fn histograms_round_trip_through_the_v2_encoding() {
        let mut r = Recorder::new();
        r.start(Duration::ZERO);
        r.complete(
            Duration::ZERO,
            "approved",
            Duration::from_millis(1234),
            Some(56),
        );
        let b64 = encode_histogram(&r.e2e);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let h: Histogram<u64> = hdrhistogram::serialization::Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .unwrap();
        assert_eq!(h.len(), 1);
        assert!(h.equivalent(h.max(), 1234));
    }

    #[test]
    fn process_figures_are_read_from_proc() {
        let (_cpu, rss) = process_figures();
        assert!(rss > 0);
    }
}
