//! Following authorizations by callback (`--follow callbacks`): each start asks the gateway to
//! POST the terminal view to the receiver here, and waits for nothing. An authorization in
//! flight costs the driver one small map entry, not a task and a long-poll connection, so a
//! million can be pending at once.
//!
//! A callback can overtake the start's answer (a fast ending): it is kept until the start
//! registers its id. A callback for an id already finished (the gateway delivers at least
//! once) is dropped the same way after [`EARLY_KEPT`]. After the drain deadline the ids still
//! waiting are read once with GET: terminal then (a callback lost on the way), or lost.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::target::Observed;

/// How long a callback that matches no started id is kept for its start's answer.
pub const EARLY_KEPT: Duration = Duration::from_secs(60);

/// The authorizations waiting for their callback.
#[derive(Debug, Default)]
pub struct Awaiting {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Started, callback not yet here: id -> the arrival's scheduled instant.
    waiting: HashMap<Box<str>, Instant>,
    /// Callbacks before their start's answer: id -> (view, when received).
    early: HashMap<Box<str>, (Observed, Instant)>,
    /// When `early` was last swept.
    swept: Option<Instant>,
}

impl Awaiting {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A start answered with `id`: `Some(view)` when its callback came first (it is finished
    /// now), else it waits.
    pub fn register(&self, id: &str, scheduled: Instant) -> Option<Observed> {
        let mut inner = self.lock();
        if let Some((view, _)) = inner.early.remove(id) {
            return Some(view);
        }
        inner.waiting.insert(id.into(), scheduled);
        None
    }

    /// A terminal view arrived by callback: `Some((scheduled, view))` when `id` was waiting
    /// (it is finished now); otherwise it is kept for its start, or was a repeat.
    pub fn arrive(&self, id: &str, view: Observed, now: Instant) -> Option<(Instant, Observed)> {
        let mut inner = self.lock();
        if let Some(scheduled) = inner.waiting.remove(id) {
            return Some((scheduled, view));
        }
        if inner
            .swept
            .is_none_or(|at| now.duration_since(at) >= EARLY_KEPT)
        {
            inner
                .early
                .retain(|_, (_, at)| now.duration_since(*at) < EARLY_KEPT);
            inner.swept = Some(now);
        }
        inner.early.insert(id.into(), (view, now));
        None
    }

    /// Ids still waiting.
    pub fn len(&self) -> usize {
        self.lock().waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes every id still waiting, with its scheduled instant.
    pub fn take_all(&self) -> Vec<(Box<str>, Instant)> {
        self.lock().waiting.drain().collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn view(status: &str) -> Observed {
        serde_json::from_value(serde_json::json!({
            "state": "terminal", "status": status, "reason": "r", "gateway_ms": 3
        }))
        .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_callback_finds_its_start_in_either_order_and_a_repeat_finishes_nothing() {
        let a = Awaiting::default();
        let t = Instant::now();
        assert_eq!(a.register("one", t), None);
        assert_eq!(a.len(), 1);
        assert_eq!(
            a.arrive("one", view("approved"), t),
            Some((t, view("approved")))
        );
        assert!(a.is_empty());
        // A repeat of a finished one is kept a while, then swept.
        assert_eq!(a.arrive("one", view("approved"), t), None);

        // A callback ahead of its start's answer.
        assert_eq!(a.arrive("two", view("denied"), t), None);
        let early = a.register("two", t).unwrap();
        assert_eq!(early.status.as_deref(), Some("denied"));
        assert!(a.is_empty());

        let later = t + EARLY_KEPT + Duration::from_secs(1);
        assert_eq!(a.arrive("three", view("expired"), later), None);
        assert_eq!(a.lock().early.len(), 1, "the old repeat is swept");
        assert_eq!(a.register("four", later), None);
        assert_eq!(a.take_all().len(), 1);
        assert!(a.is_empty());
    }
}
