//! What is watched while a run goes: the progress line (an indicatif bar on a terminal, plain
//! lines on stderr otherwise) and the gateway's SMPP windows sampled from its `/metrics`.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::config::ProgressMode;
use super::target;
use super::workload::{lock, Shared};

#[derive(Debug, Default)]
pub(super) struct WindowSamples {
    pub(super) peak: Option<u64>,
    pub(super) sum: f64,
    pub(super) samples: u64,
    pub(super) size: Option<u64>,
    pub(super) throttles: Option<u64>,
    /// Reconnects of the gateway's binds (a bind lost and made again).
    pub(super) reconnects: Option<u64>,
    /// The store's group commits and fsyncs so far (embedded store).
    pub(super) store_commits: Option<u64>,
    pub(super) store_fsyncs: Option<u64>,
    /// Each sample: the second of the run, the window occupancy, the throttles so far.
    pub(super) series: Vec<(u64, u64, Option<u64>)>,
}

pub(super) fn lock_w(w: &Mutex<WindowSamples>) -> MutexGuard<'_, WindowSamples> {
    w.lock().unwrap_or_else(|p| p.into_inner())
}

/// Samples the gateway's SMPP window occupancy twice a second, and once more when stopped
/// (so the store's commit counters cover the whole run).
pub(super) async fn scrape_windows(
    url: String,
    out: Arc<Mutex<WindowSamples>>,
    t0: Instant,
    stop: CancellationToken,
) {
    let client = target::http_client();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let stopped = tokio::select! {
            _ = stop.cancelled() => true,
            _ = tick.tick() => false,
        };
        if let Ok(text) = target::scrape(&client, &url).await {
            let second = Instant::now().saturating_duration_since(t0).as_secs();
            sample(&text, &out, second);
        }
        if stopped {
            break;
        }
    }
}

fn sample(text: &str, out: &Mutex<WindowSamples>, second: u64) {
    // The gateway registers under the `gateway_` prefix; accept the bare names too.
    let metric = |name: &str| {
        target::metric_sum(text, &format!("gateway_{name}"))
            .or_else(|| target::metric_sum(text, name))
    };
    let mut w = lock_w(out);
    let throttles = metric("smpp_throttles_total").map(|t| t as u64);
    if let Some(occ) = metric("smpp_window_occupancy") {
        let occ = occ.max(0.0) as u64;
        w.peak = Some(w.peak.unwrap_or(0).max(occ));
        w.sum += occ as f64;
        w.samples += 1;
        w.series.push((second, occ, throttles));
    }
    if let Some(size) = metric("smpp_window_size") {
        w.size = Some(size as u64);
    }
    if let Some(r) = metric("smpp_reconnects_total") {
        w.reconnects = Some(r as u64);
    }
    if let Some(t) = metric("smpp_throttles_total") {
        w.throttles = Some(t as u64);
    }
    if let Some(c) = metric("store_commits_total") {
        w.store_commits = Some(c as u64);
    }
    if let Some(f) = metric("store_fsyncs_total") {
        w.store_fsyncs = Some(f as u64);
    }
}

/// Progress: an indicatif bar on a terminal, plain lines on stderr every 5 s otherwise.
pub(super) async fn progress(s: Arc<Shared>, total: u64, stop: CancellationToken) {
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
