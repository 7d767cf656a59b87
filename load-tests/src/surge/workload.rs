//! The open workload: every arrival dispatched at its scheduled instant, whatever happened to
//! earlier ones, to a task that starts the authorization through the [`Target`] and long-polls
//! it to its terminal status (pressing "send again" under the retry model); the tasks write
//! into the report's recorder, latency counting from the scheduled instant.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::callbacks::CallbackReceiver;
use super::chaos::{ChaosAction, ChaosRecord};
use super::config::{Follow, Slo, SurgeConfig};
use super::environment::Environment;
use super::following::Awaiting;
use super::progress::{lock_w, progress, scrape_windows, WindowSamples};
use super::report::{Classified, Recorder, Report, SmppFigures, Verification};
use super::schedule::{self, Arrival, Rng};
use super::target::{self, StartOutcome, StartParams, Target};
use crate::smsc::{Fault, StatsSnapshot};

/// How long the prompt probe polls before falling back to long-polls only.
const PROMPT_PROBE_LIMIT: Duration = Duration::from_secs(10);

pub(super) fn lock(r: &Mutex<Recorder>) -> MutexGuard<'_, Recorder> {
    r.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the driver tasks share.
pub(super) struct Shared {
    pub(super) target: Arc<dyn Target>,
    pub(super) rec: Mutex<Recorder>,
    pub(super) t0: Instant,
    pub(super) deadline: Instant,
    pub(super) config: SurgeConfig,
    pub(super) tracker: TaskTracker,
    /// Given as every start's `callback_url` when verification is on or when following by
    /// callback.
    pub(super) callback_url: Option<String>,
    /// Following by callback: the authorizations waiting for theirs.
    pub(super) awaiting: Option<Arc<Awaiting>>,
}

impl Shared {
    pub(super) fn rel(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.t0)
    }
}

/// Runs one surge: brings the system up (or connects to it), replays the schedule, drains and
/// reports. SLO results are in the report's `slo`.
pub async fn run(config: &SurgeConfig) -> anyhow::Result<Report> {
    let schedule = schedule::build(&config.profile, &config.schedule_config())?;
    let env = Environment::start(config).await?;
    let smsc_before = env.smsc.as_ref().map(|s| s.stats().snapshot());
    let redis_url = env.redis_url(config);
    let redis_cpu_before = match &redis_url {
        Some(url) => super::nodes::redis_cpu_seconds(url).await,
        None => None,
    };
    let gateway_before = env.gateway_process_figures().await;
    let result = drive(config, &schedule, &env).await;
    let gateway_after = env.gateway_process_figures().await;
    let smsc_after = env.smsc.as_ref().map(|s| s.stats().snapshot());
    let nodes = super::nodes::scrape_nodes(&env.node_metrics).await;
    let redis_cpu_after = match &redis_url {
        Some(url) => super::nodes::redis_cpu_seconds(url).await,
        None => None,
    };
    env.shutdown().await;
    let mut report = result?;
    if config.nodes > 1 || redis_url.is_some() {
        let completed: u64 = report.completed.values().sum();
        report.cross_node_answers = Some(nodes.iter().map(|n| n.0.cross_node_answers).sum());
        if redis_url.is_some() {
            let round_trips: u64 = nodes.iter().map(|n| n.1).sum();
            report.redis = Some(super::report::RedisFigures {
                round_trips,
                round_trips_per_authorization: (completed > 0)
                    .then(|| ((round_trips as f64 / completed as f64) * 100.0).round() / 100.0),
                cpu_seconds: match (redis_cpu_before, redis_cpu_after) {
                    (Some(a), Some(b)) => Some(((b - a) * 100.0).round() / 100.0),
                    _ => None,
                },
            });
        }
        report.nodes = nodes.into_iter().map(|n| n.0).collect();
    }
    if let (Some(a), Some(b)) = (smsc_before, smsc_after) {
        fill_smsc(&mut report.smpp, &a, &b);
    }
    // A chaos kill restarts the child and its counters: the figures then cover the last one.
    if let (Some((cpu_a, _)), Some((cpu_b, rss))) = (gateway_before, gateway_after) {
        let completed: u64 = report.completed.values().sum();
        let cpu = (cpu_b - cpu_a).max(0.0);
        report.gateway_process = Some(super::report::GatewayProcessFigures {
            cpu_seconds: (cpu * 100.0).round() / 100.0,
            cpu_us_per_authorization: (completed > 0)
                .then(|| (cpu * 1e6 / completed as f64).round()),
            peak_rss_bytes: rss,
        });
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
    s.outage_refusals = Some(after.outage_refusals.saturating_sub(before.outage_refusals));
    s.malformed_sent = Some(after.malformed_sent.saturating_sub(before.malformed_sent));
    s.malformed_answered = Some(
        after
            .malformed_answered
            .saturating_sub(before.malformed_answered),
    );
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
    if let Some(v) = &report.verification {
        report
            .slo
            .insert("duplicates == 0".into(), report.duplicates == 0);
        report
            .slo
            .insert("callbacks missing == 0".into(), v.callbacks_missing == 0);
    }
    report.slo.values().all(|ok| *ok)
}

async fn drive(
    config: &SurgeConfig,
    schedule: &[Arrival],
    env: &Environment,
) -> anyhow::Result<Report> {
    let verify = config.verify || !config.chaos.is_empty();
    let by_callback = config.follow == Follow::Callbacks;
    let receiver = if verify || by_callback {
        Some(CallbackReceiver::start_with(verify).await?)
    } else {
        None
    };
    let mut recorder = Recorder::new();
    if verify {
        recorder.terminal_seen = Some(Default::default());
    }
    let lead = Duration::from_millis(100);
    let t0 = Instant::now() + lead;
    let span = schedule.last().map_or(Duration::ZERO, |a| a.at);
    let shared = Arc::new(Shared {
        target: env.target.clone(),
        rec: Mutex::new(recorder),
        t0,
        deadline: t0 + span + config.drain,
        config: config.clone(),
        tracker: TaskTracker::new(),
        callback_url: receiver.as_ref().map(CallbackReceiver::url),
        awaiting: by_callback.then(Arc::default),
    });
    if let (Some(receiver), Some(awaiting)) = (&receiver, shared.awaiting.clone()) {
        // Weak: the receiver's task may outlive this run by a moment.
        let weak = Arc::downgrade(&shared);
        receiver.set_sink(Arc::new(move |id, view| {
            let now = Instant::now();
            if let (Some((scheduled, view)), Some(s)) =
                (awaiting.arrive(id, view, now), weak.upgrade())
            {
                finish(&s, id, &view, scheduled, now, None);
            }
        }));
    }
    let stop = CancellationToken::new();
    let side = TaskTracker::new();
    side.spawn(progress(
        shared.clone(),
        schedule.len() as u64,
        stop.clone(),
    ));
    let memory = tokio::spawn(super::memory::sample(
        shared.clone(),
        env.gateway_pid().await,
        stop.clone(),
    ));
    let window_samples = Arc::new(Mutex::new(WindowSamples::default()));
    if let Some(url) = env.metrics_url.clone() {
        side.spawn(scrape_windows(
            url,
            window_samples.clone(),
            t0,
            stop.clone(),
        ));
    }

    let chaos_done = CancellationToken::new();
    let chaos = run_chaos(config, env, t0, chaos_done.clone());
    let arrivals = dispatch(config, schedule, &shared);
    let (chaos_log, (arrival_phase, drained)) = tokio::join!(chaos, async {
        let r = arrivals.await;
        chaos_done.cancel();
        r
    });
    let duration = Instant::now().saturating_duration_since(t0);
    stop.cancel();
    side.close();
    side.wait().await;
    let memory = memory.await.ok();

    let verification = match &receiver {
        Some(receiver) if verify => Some(verify_results(&shared, receiver).await),
        _ => None,
    };
    let rec = lock(&shared.rec);
    let mut report = Report::build(&rec, arrival_phase, duration);
    if let Some((v, duplicates)) = verification {
        report.verification = Some(v);
        report.duplicates = duplicates;
    }
    report.chaos = chaos_log;
    report.memory = memory;
    report.late_threshold_ms = config.late_threshold.as_millis() as u64;
    report.drain_timed_out = !drained || report.lost > 0;
    report.settings = config.settings_json();
    let w = lock_w(&window_samples);
    report.smpp.window_occupancy_peak = w.peak;
    report.smpp.window_occupancy_mean = (w.samples > 0).then(|| w.sum / w.samples as f64);
    report.smpp.window_size = w.size;
    fill_window_series(&mut report.timeline, &w.series);
    report.smpp.gateway_throttles = w.throttles;
    report.smpp.gateway_reconnects = w.reconnects;
    report.store.commits = w.store_commits;
    report.store.fsyncs = w.store_fsyncs;
    let completed: u64 = report.completed.values().sum();
    report.store.fsyncs_per_authorization = w
        .store_fsyncs
        .filter(|_| completed > 0)
        .map(|f| ((f as f64 / completed as f64) * 1000.0).round() / 1000.0);
    Ok(report)
}

/// Puts the scraped SMPP window samples into the timeline: the highest occupancy sampled in
/// each second, and the throttles counted since the previous sample.
fn fill_window_series(
    timeline: &mut [super::report::TimelinePoint],
    series: &[(u64, u64, Option<u64>)],
) {
    let mut last_throttles = None;
    for &(second, occupancy, throttles) in series {
        let Some(point) = timeline.get_mut(second as usize) else {
            continue;
        };
        point.smpp_window = Some(point.smpp_window.unwrap_or(0).max(occupancy));
        if let Some(t) = throttles {
            let new = t.saturating_sub(last_throttles.unwrap_or(t));
            point.smpp_throttles = Some(point.smpp_throttles.unwrap_or(0) + new);
            last_throttles = Some(t);
        }
    }
}

/// Dispatches every arrival at its instant and waits for the followers (bounded by the
/// drain deadline); returns the arrival phase's length and whether every follower ended.
async fn dispatch(
    config: &SurgeConfig,
    schedule: &[Arrival],
    shared: &Arc<Shared>,
) -> (Duration, bool) {
    let t0 = shared.t0;
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
    let mut drained = tokio::time::timeout_at(
        shared.deadline + Duration::from_secs(5),
        shared.tracker.wait(),
    )
    .await
    .is_ok();
    if let Some(awaiting) = &shared.awaiting {
        drained &= drain_callbacks(shared, awaiting).await;
    }
    (arrival_phase, drained)
}

/// Following by callback: waits for the callbacks still due until the drain deadline, then
/// reads each authorization still waiting once (its callback may have been lost); one that is
/// not terminal then is lost. Whether every callback came in time.
async fn drain_callbacks(shared: &Arc<Shared>, awaiting: &Awaiting) -> bool {
    while !awaiting.is_empty() && Instant::now() < shared.deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left = awaiting.take_all();
    let all_in = left.is_empty();
    use futures_util::StreamExt as _;
    let reads = futures_util::stream::iter(left).for_each_concurrent(64, |(id, scheduled)| {
        let s = shared.clone();
        async move {
            match s.target.poll(&id, Duration::ZERO).await {
                Ok(v) if v.is_terminal() => finish(&s, &id, &v, scheduled, Instant::now(), None),
                Ok(v) => {
                    let step = v.step.unwrap_or_else(|| "pending".into());
                    tracing::warn!(%id, %step, "authorization not terminal at the drain deadline");
                    lock(&s.rec).abandon(&step);
                }
                Err(e) => {
                    tracing::warn!(%id, error = %e, "authorization not readable at the drain deadline");
                    lock(&s.rec).abandon("unreadable");
                }
            }
        }
    });
    reads.await;
    all_in
}

/// Carries out the chaos plan against the environment, each fault at its second from `t0`;
/// faults planned after the run ended (`done` cancelled) are recorded as skipped.
async fn run_chaos(
    config: &SurgeConfig,
    env: &Environment,
    t0: Instant,
    done: CancellationToken,
) -> Vec<ChaosRecord> {
    let mut log = Vec::with_capacity(config.chaos.len());
    for event in &config.chaos {
        let mut record = ChaosRecord {
            action: event.action.name().to_owned(),
            planned_s: event.at.as_secs_f64(),
            at_s: 0.0,
            outcome: "skipped (run over)".into(),
            downtime_ms: None,
        };
        let run_over = tokio::select! {
            _ = done.cancelled() => true,
            _ = tokio::time::sleep_until(t0 + event.at) => false,
        };
        if run_over {
            log.push(record);
            continue;
        }
        record.at_s = Instant::now().saturating_duration_since(t0).as_secs_f64();
        let result = match event.action {
            ChaosAction::KillGateway => env.kill_gateway().await.map(|down| {
                record.downtime_ms = Some(down.as_millis() as u64);
            }),
            ChaosAction::SmscOutage(d) => env.inject(Fault::Outage(d)),
            ChaosAction::ThrottleStorm(d) => env.inject(Fault::ThrottleStorm(d)),
            ChaosAction::Malformed(n) => env.inject(Fault::MalformedPdus { count: n }),
        };
        record.outcome = match result {
            Ok(()) => "done".into(),
            Err(e) => format!("failed: {e:#}"),
        };
        tracing::info!(action = %record.action, at_s = record.at_s, outcome = %record.outcome, "chaos");
        log.push(record);
    }
    log
}

/// After the drain: reads every terminal result again and waits (bounded) for the callbacks
/// still owed; returns the checks and the number of authorizations whose client-visible
/// result was not one and the same.
async fn verify_results(shared: &Arc<Shared>, receiver: &CallbackReceiver) -> (Verification, u64) {
    use futures_util::stream::{self, StreamExt};
    let seen = lock(&shared.rec).terminal_seen.clone().unwrap_or_default();
    let mut v = Verification {
        callbacks_expected: seen.len() as u64,
        ..Verification::default()
    };
    let mut changed = std::collections::HashSet::new();
    let mut truth = std::collections::HashMap::with_capacity(seen.len());
    let target = shared.target.clone();
    let mut reads = stream::iter(seen.iter())
        .map(|(id, first)| {
            let target = target.clone();
            async move { (id, first, target.poll(id, Duration::ZERO).await) }
        })
        .buffer_unordered(32);
    while let Some((id, first, read)) = reads.next().await {
        v.reread += 1;
        match read {
            Ok(view) if view.is_terminal() => {
                let now = (
                    view.status.unwrap_or_default(),
                    view.reason.unwrap_or_default(),
                );
                if &now != first {
                    tracing::warn!(%id, ?first, ?now, "terminal result changed");
                    v.reread_changed += 1;
                    changed.insert(id.clone());
                }
                truth.insert(id.clone(), now);
            }
            Ok(view) => {
                tracing::warn!(%id, ?first, state = %view.state, "terminal result went back to pending");
                v.reread_changed += 1;
                changed.insert(id.clone());
            }
            Err(e) => {
                tracing::warn!(%id, error = %e, "re-reading a terminal result failed");
                v.reread_errors += 1;
                truth.insert(id.clone(), first.clone());
            }
        }
    }
    let until = Instant::now() + shared.config.callback_wait;
    while !receiver.has_all(seen.keys()) && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (id, calls) in receiver.calls() {
        v.callbacks_received += calls.len() as u64;
        let mut events = std::collections::HashSet::new();
        for c in &calls {
            if !events.insert(c.event_id.as_str()) {
                v.callback_redeliveries += 1;
            }
        }
        let Some(expected) = truth.get(&id) else {
            v.callbacks_for_unseen_ids += 1;
            continue;
        };
        if calls
            .iter()
            .any(|c| (&c.status, &c.reason) != (&expected.0, &expected.1))
        {
            tracing::warn!(%id, ?expected, ?calls, "a callback disagrees with GET");
            v.callbacks_disagreeing += 1;
            changed.insert(id);
        }
    }
    let calls = receiver.calls();
    v.callbacks_missing = seen.keys().filter(|id| !calls.contains_key(*id)).count() as u64;
    v.callbacks_malformed = receiver.malformed();
    (v, changed.len() as u64)
}

/// One arrival: start, then follow to the end.
async fn one(s: &Arc<Shared>, a: Arrival) {
    let scheduled = s.t0 + a.at;
    let params = StartParams {
        msisdn: (s.config.msisdn_base + u64::from(a.index)).to_string(),
        loa3: a.loa3,
        client_name: s.config.client_name.clone(),
        expiry_secs: s.config.expiry_secs,
        callback_url: s.callback_url.clone(),
    };
    match s.target.start(params.clone()).await {
        Ok(StartOutcome::Started { id }) => {
            lock(&s.rec).start(s.rel(Instant::now()));
            match &s.awaiting {
                // Its callback came ahead of this answer, or it waits for it, holding nothing.
                Some(awaiting) => {
                    if let Some(view) = awaiting.register(&id, scheduled) {
                        finish(s, &id, &view, scheduled, Instant::now(), None);
                    }
                }
                None => follow(s.clone(), id, scheduled, Some((params, a.n))).await,
            }
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
                        &id,
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
                finish(&s, &id, &v, scheduled, Instant::now(), prompted_after);
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
    id: &str,
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
    if let Some(seen) = rec.terminal_seen.as_mut() {
        seen.insert(
            id.to_owned(),
            (status.to_owned(), v.reason.clone().unwrap_or_default()),
        );
    }
    let key = format!("{status}/{}", v.reason.as_deref().unwrap_or("-"));
    *rec.reasons.entry(key).or_default() += 1;
    let e2e = end.saturating_duration_since(scheduled);
    rec.complete(s.rel(end), status, e2e, gateway_ms);
    rec.classify(Classified {
        status,
        channel: v.channel.as_deref(),
        operator: v.operator.as_deref(),
        scheduled: s.rel(scheduled),
        now: s.rel(end),
        e2e,
        gateway_ms,
    });
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::surge::config::{ProgressMode, RetryModel};
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
            gateways: Vec::new(),
            gateway_process: None,
            api_addrs: Vec::new(),
            node_metrics: Vec::new(),
            redis: None,
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

    /// Shows every authorization `approved` on its first poll and `denied` ever after: a
    /// result that changes under the client's eyes.
    #[derive(Default)]
    struct Fickle {
        polls: Mutex<HashMap<String, u32>>,
    }

    impl Target for Fickle {
        fn start(
            &self,
            p: StartParams,
        ) -> futures_util::future::BoxFuture<'_, Result<StartOutcome, TargetError>> {
            Box::pin(async move { Ok(StartOutcome::Started { id: p.msisdn }) })
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
                let status = if n == 1 { "approved" } else { "denied" };
                Ok(Observed {
                    state: "terminal".into(),
                    status: Some(status.into()),
                    reason: Some(format!("user_{status}")),
                    gateway_ms: Some(5),
                    ..Observed::default()
                })
            })
        }
    }

    #[tokio::test]
    async fn verification_counts_a_changed_result_and_a_missing_callback() {
        let config = SurgeConfig {
            verify: true,
            callback_wait: Duration::from_millis(300),
            progress: ProgressMode::Off,
            prompt_probe: None,
            drain: Duration::from_secs(5),
            ..SurgeConfig::default()
        };
        let mut r = drive(&config, &arrivals(3), &env(Arc::new(Fickle::default())))
            .await
            .unwrap();
        assert_eq!(r.started, 3);
        assert_eq!(r.lost, 0);
        assert_eq!(r.duplicates, 3);
        let v = r.verification.clone().unwrap();
        assert_eq!(v.reread, 3);
        assert_eq!(v.reread_changed, 3);
        assert_eq!(v.callbacks_expected, 3);
        assert_eq!(v.callbacks_missing, 3);
        assert!(!check_slo(&mut r, &Slo::default()));
        assert_eq!(r.slo.get("duplicates == 0"), Some(&false));
        assert_eq!(r.slo.get("callbacks missing == 0"), Some(&false));
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
}
