//! Group commit: the embedded store's one writer thread.
//!
//! Every write of [`super::EmbeddedStore`] is a job for one thread that owns all writes. A
//! caller hands its job over a bounded channel and waits for its answer. The writer blocks for
//! the first job, takes every other job already waiting (no timer: jobs that arrive during a
//! commit form the next batch, as in PostgreSQL's group commit), applies them in arrival order
//! in one write transaction, commits once, with an fsync when any of them needs durability, and
//! only then answers them all. So under load one fsync carries many operations, and an
//! operation is never acknowledged before the commit that carries it.
//!
//! **Pacing.** On a fast disk (an fsync in 0.5 ms) the writer is idle most of the time even at
//! 1 000 authorizations/s, so batches stay small and nearly every durable operation costs an
//! fsync of its own, which spends the disk's IOPS and the CPU's time. So while several callers
//! write at once (the last durable commit, or the batch at hand, carried more than one durable
//! operation), a durable commit never starts sooner than `durable_interval` after the previous
//! durable commit started: the writer collects what arrives meanwhile (at most one fsync per
//! interval, 200/s at the default 5 ms). A lone caller, or a store that has been quiet for an
//! interval, commits at once. Latency under load grows by at most the interval. Zero turns
//! pacing off.
//!
//! A job's expected refusal (already exists, conflict, counters exhausted, a corrupt record) is
//! its answer and leaves the batch alone: such refusals are decided before the job writes
//! anything. A job that fails inside the backend (I/O) may have written half its change, so the
//! batch is aborted: none of it is applied and every job in it gets the error. A failed commit
//! or an aborted batch marks the store failed: from then on every write is refused at once (no
//! silent retry on a broken disk) and [`Writer::failure`] says why, for `/readyz`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use redb::{Database, Durability, WriteTransaction};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::mpsc::{channel, Receiver, Sender};
use tokio::sync::oneshot;

use super::StoreError;

/// Jobs waiting for the writer at most; more callers wait to hand theirs over.
const QUEUE: usize = 4096;
/// Jobs in one transaction at most, so one commit never holds a caller for long.
const MAX_BATCH: usize = 1024;

/// What the writer has done, for tests and benchmarks (monotonic counters); Prometheus gets
/// its figures per commit through a [`CommitObserver`].
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Transactions committed.
    pub commits: AtomicU64,
    /// Of those, committed with an fsync.
    pub durable_commits: AtomicU64,
    /// Jobs answered after a commit (refusals included).
    pub operations: AtomicU64,
}

/// A snapshot of [`WriterStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterFigures {
    pub commits: u64,
    pub durable_commits: u64,
    pub operations: u64,
}

impl WriterStats {
    /// The counters now.
    pub fn figures(&self) -> WriterFigures {
        WriterFigures {
            commits: self.commits.load(Ordering::Relaxed),
            durable_commits: self.durable_commits.load(Ordering::Relaxed),
            operations: self.operations.load(Ordering::Relaxed),
        }
    }
}

/// Told of every commit and of the failure, if one comes (metrics); called on the writer
/// thread, so it must be quick.
pub trait CommitObserver: Send + Sync {
    /// A transaction of `operations` jobs committed, with an fsync when `durable`, in `took`.
    fn committed(&self, operations: usize, durable: bool, took: std::time::Duration);
    /// The store failed and refuses writes from now on.
    fn failed(&self);
    /// The journal store completed a compaction.
    fn compacted(&self) {}
}

/// Answers a caller once its batch's fate is known: `None` when it committed, else why not.
type Answer = Box<dyn FnOnce(Option<&str>) + Send>;

/// What applying one job left to do once its batch's fate is known.
struct Applied {
    /// The job failed inside the backend: its batch must not commit.
    broken: Option<String>,
    answer: Answer,
}

struct Job {
    durable: bool,
    apply: Box<dyn FnOnce(&WriteTransaction) -> Applied + Send>,
    /// Answers the caller when the job is never applied.
    refuse: Box<dyn FnOnce(StoreError) + Send>,
}

/// Whether an error is a job's own answer (decided before it wrote) rather than a backend
/// failure that may have left half a change in the transaction.
fn is_answer(error: &StoreError) -> bool {
    match error {
        StoreError::Io(_) | StoreError::Backend(_) => false,
        // redb's own corruption report (see `embedded::backend`), not a record that failed to
        // decode before the job wrote anything.
        StoreError::Corrupt { table, .. } => *table != "(file)",
        _ => true,
    }
}

/// The store is failed; the message says why.
fn failed(why: &str) -> StoreError {
    StoreError::Backend(format!("store failed, writes refused: {why}"))
}

/// The caller's side of the writer thread.
pub(super) struct Writer {
    jobs: Option<Sender<Job>>,
    failure: Arc<Mutex<Option<String>>>,
    is_failed: Arc<AtomicBool>,
    stats: Arc<WriterStats>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer thread on `db`, telling `observer` of its commits.
    pub(super) fn start(
        db: Arc<Database>,
        observer: Option<Arc<dyn CommitObserver>>,
        durable_interval: std::time::Duration,
    ) -> Result<Self, StoreError> {
        let (jobs, queue) = channel(QUEUE);
        let failure = Arc::new(Mutex::new(None));
        let is_failed = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(WriterStats::default());
        let thread = {
            let failure = failure.clone();
            let is_failed = is_failed.clone();
            let stats = stats.clone();
            std::thread::Builder::new()
                .name("store-writer".into())
                .spawn(move || {
                    run(
                        &db,
                        queue,
                        durable_interval,
                        &failure,
                        &is_failed,
                        &stats,
                        observer.as_deref(),
                    )
                })
                .map_err(StoreError::Io)?
        };
        Ok(Self {
            jobs: Some(jobs),
            failure,
            is_failed,
            stats,
            thread: Some(thread),
        })
    }

    /// Why the store stopped taking writes, if it did.
    pub(super) fn failure(&self) -> Option<String> {
        if self.is_failed.load(Ordering::Acquire) {
            return lock(&self.failure).clone();
        }
        // A writer that is gone (it cannot end otherwise while the store lives) takes no writes.
        self.thread
            .as_ref()
            .is_some_and(JoinHandle::is_finished)
            .then(|| "the store writer thread has stopped".to_owned())
    }

    pub(super) fn stats(&self) -> &Arc<WriterStats> {
        &self.stats
    }

    /// Runs `body` in the writer's next transaction and waits until that transaction committed
    /// (with an fsync when `durable`). `body`'s refusals come back as they are; nothing is
    /// acknowledged before its commit. Waits without blocking the runtime: for room in the
    /// queue, then for the answer.
    pub(super) async fn write<T: Send + 'static>(
        &self,
        durable: bool,
        body: impl FnOnce(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        if let Some(why) = self.failure() {
            return Err(failed(&why));
        }
        let Some(jobs) = &self.jobs else {
            return Err(StoreError::Backend("the store is closed".into()));
        };
        let (reply, answer) = oneshot::channel::<Result<T, StoreError>>();
        // Exactly one of `apply` and `refuse` runs; both hold the reply.
        let reply = Arc::new(Mutex::new(Some(reply)));
        let refusal = reply.clone();
        let job = Job {
            durable,
            apply: Box::new(move |txn| {
                let result = body(txn);
                let broken = match &result {
                    Err(e) if !is_answer(e) => Some(e.to_string()),
                    _ => None,
                };
                Applied {
                    broken,
                    answer: Box::new(move |batch_failure| {
                        let answer = match (batch_failure, result) {
                            (None, result) => result,
                            // Its own backend error says more than the batch's.
                            (Some(_), Err(own)) if !is_answer(&own) => Err(own),
                            (Some(why), _) => {
                                Err(StoreError::Backend(format!("not committed: {why}")))
                            }
                        };
                        if let Some(reply) = lock(&reply).take() {
                            let _ = reply.send(answer);
                        }
                    }),
                }
            }),
            refuse: Box::new(move |error| {
                if let Some(reply) = lock(&refusal).take() {
                    let _ = reply.send(Err(error));
                }
            }),
        };
        jobs.send(job)
            .await
            .map_err(|_| StoreError::Backend("the store writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Backend("the store writer has stopped".into()))?
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the queue ends the thread after the jobs already in it; joining releases the
        // database file before the store is gone, so it can be reopened at once.
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Moves every job already waiting into `batch`, up to [`MAX_BATCH`].
fn drain(queue: &mut Receiver<Job>, batch: &mut Vec<Job>) {
    while batch.len() < MAX_BATCH {
        match queue.try_recv() {
            Ok(job) => batch.push(job),
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
        }
    }
}

fn run(
    db: &Database,
    mut queue: Receiver<Job>,
    durable_interval: std::time::Duration,
    failure: &Mutex<Option<String>>,
    is_failed: &AtomicBool,
    stats: &WriterStats,
    observer: Option<&dyn CommitObserver>,
) {
    let fail = |why: String| {
        tracing::error!(error = %why, "store write failed; the store refuses writes from now on");
        *lock(failure) = Some(why);
        is_failed.store(true, Ordering::Release);
        if let Some(o) = observer {
            o.failed();
        }
    };
    let mut last_durable: Option<Instant> = None;
    // Durable operations in the last durable commit: more than one means other callers are
    // writing at the same time, so waiting gathers more of them.
    let mut last_durable_ops = 0usize;
    while let Some(first) = queue.blocking_recv() {
        let mut batch = vec![first];
        drain(&mut queue, &mut batch);
        let durable_ops = batch.iter().filter(|j| j.durable).count();
        let busy = last_durable_ops > 1 || durable_ops > 1;
        if let Some(last) = last_durable.filter(|_| durable_ops > 0 && busy) {
            let due = last + durable_interval;
            let now = Instant::now();
            if due > now && batch.len() < MAX_BATCH {
                // Under load: let this interval's durable operations share one fsync.
                std::thread::sleep(due - now);
                drain(&mut queue, &mut batch);
            }
        }
        if let Some(why) = lock(failure).clone() {
            for job in batch {
                (job.refuse)(failed(&why));
            }
            continue;
        }
        let mut txn = match db.begin_write() {
            Ok(txn) => txn,
            Err(e) => {
                let why = format!("begin write: {e}");
                fail(why.clone());
                for job in batch {
                    (job.refuse)(failed(&why));
                }
                continue;
            }
        };
        let durable_in_batch = batch.iter().filter(|j| j.durable).count();
        let durable = durable_in_batch > 0;
        if let Err(e) = txn.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        }) {
            let why = format!("set durability: {e}");
            drop(txn);
            fail(why.clone());
            for job in batch {
                (job.refuse)(failed(&why));
            }
            continue;
        }
        let size = batch.len() as u64;
        let mut applied = Vec::with_capacity(batch.len());
        let mut pending = batch.into_iter();
        let mut broken = None;
        for job in pending.by_ref() {
            let a = (job.apply)(&txn);
            let stop = a.broken.clone();
            applied.push(a);
            if let Some(why) = stop {
                broken = Some(why);
                break;
            }
        }
        if let Some(why) = broken {
            // Dropping the transaction aborts it: nothing of this batch is applied.
            drop(txn);
            let why = format!("a write failed in the backend: {why}");
            fail(why.clone());
            for a in applied {
                (a.answer)(Some(&why));
            }
            for job in pending {
                (job.refuse)(failed(&why));
            }
            continue;
        }
        let started = Instant::now();
        if durable {
            last_durable = Some(started);
            last_durable_ops = durable_in_batch;
        }
        let committed = txn.commit();
        let took = started.elapsed();
        match committed {
            Ok(()) => {
                if let Some(o) = observer {
                    o.committed(applied.len(), durable, took);
                }
                stats.commits.fetch_add(1, Ordering::Relaxed);
                if durable {
                    stats.durable_commits.fetch_add(1, Ordering::Relaxed);
                }
                stats.operations.fetch_add(size, Ordering::Relaxed);
                for a in applied {
                    (a.answer)(None);
                }
            }
            Err(e) => {
                let why = format!("commit: {e}");
                fail(why.clone());
                for a in applied {
                    (a.answer)(Some(&why));
                }
            }
        }
    }
}
