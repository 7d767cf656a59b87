//! [`JournalStore`]: the embedded store as an append-only journal, its state in memory.
//!
//! Every change is applied to maps in memory under one lock and, under the same lock, appended
//! to the journal as one frame holding the new value of everything it touched (a whole record,
//! a claim, a counter mark, or a removal). Frames are numbered (the LSN) in the order they were
//! applied. One writer thread hands the frames to the file in batches and fsyncs them when a
//! durable operation waits, with the same pacing as [`super::writer`]: under load, the durable
//! operations of one `durable_commit_interval` share one fsync; a quiet store syncs at once. A
//! durable commit is one `write` and one `fdatasync` of the batch's bytes, not a copy-on-write
//! B-tree's pages (BENCHMARKS §15: redb's commit was a fifth of the gateway's CPU).
//!
//! **Nothing is published before it is durable.** A durable operation returns once the frame
//! that carries it is fsynced. Every authorization and outbox entry keeps the LSN of the last
//! durable change that made it what it is, and a reader that sees it waits until that LSN is
//! on disk, so no reader acts on an ending (or a creation) that a crash could still undo. A
//! scan (`list_in_flight`, `in_flight_for_msisdn`) waits for every durable change applied
//! before it. Non-durable steps ride on the next fsync, as in the module table of
//! [`super`].
//!
//! **Files.** The journal is a directory of segments `NNNNNNNN.journal` and snapshots
//! `NNNNNNNN.snapshot`. A frame is `[length u32 LE][CRC-32 of the payload u32 LE][payload:
//! JSON array of entries]`; a snapshot is frames too. On open, the newest snapshot is loaded and
//! the segments from its number on are replayed in order (without a snapshot: every segment from
//! the first). A torn frame at the end of the last segment (a crash mid-write) is cut off; a bad
//! frame anywhere else is reported as corruption.
//!
//! **Compaction.** When the segment being written has grown past `journal_compact_bytes`
//! ([`COMPACT_MIN_BYTES`] by default) and past the last snapshot, the writer fsyncs it and
//! starts segment N+1, and a compaction thread dumps the live state into `N+1.snapshot`, a few
//! hundred values per lock hold, while operations go on into segment N+1. Each value is dumped
//! as it is at that moment, so the snapshot is fuzzy, and that is enough: every entry is a
//! key's whole new value, so replaying all of segment N+1 over the snapshot ends with every
//! key's latest value (a change before the dump point is applied again, then every later one).
//! The snapshot is written to a temporary name, fsynced and renamed, and only then are the
//! older segments and snapshots deleted. A crash before the rename leaves the older snapshot
//! and segments, and replay uses them. The dump goes to its own file, so the fsyncs that
//! durable operations wait for never carry it.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::ops::{Bound, Range};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::records::{apply_ending, apply_update, CasRefusal, IdempotencyEntry};
use super::writer::{CommitObserver, WriterStats};
use super::{
    advance_high_water, check_change, check_creation, check_key, exhausted, expiry, outbox_for,
    sort_outbox, AuthState, AuthorizationRecord, AuthorizationUpdate, Creation, Ended, LockState,
    LockoutPolicy, OtaCounterKey, OutboxEntry, OutboxPolicy, PinAttempt, PinRecord, PurgeReport,
    Store, StoreError, StoreOptions, OTA_COUNTER_FIRST, OTA_COUNTER_MAX,
};

/// Default [`StoreOptions::journal_compact_bytes`]: the segment being written is compacted
/// only past this size, so a small store never is.
pub const COMPACT_MIN_BYTES: u64 = 64 * 1024 * 1024;
/// Values dumped per lock hold during a compaction: short enough not to stall operations.
const DUMP_CHUNK: usize = 256;
/// A snapshot being written is flushed to disk every this many bytes.
const SNAPSHOT_SYNC_BYTES: u64 = 1 << 20;
/// A compaction rests this many times as long as each chunk took.
const DUMP_IDLE_FACTOR: u32 = 3;
/// Longest frame accepted on replay; anything longer is a damaged length field.
const MAX_FRAME: usize = 16 * 1024 * 1024;
const FRAME_HEADER: usize = 8;
/// Longest a non-durable change waits in memory for a durable one to carry it to the file.
const LAZY_FLUSH: Duration = Duration::from_millis(50);
/// Pending bytes that wake the writer even without a durable operation.
const FLUSH_BYTES: usize = 1 << 20;

/// One value in the journal: the new state of one key, or its removal.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
// Entries live only while a frame is encoded or replayed; boxing the record would cost an
// allocation per replayed record for nothing.
#[allow(clippy::large_enum_variant)]
enum Entry<'a> {
    /// An OTA counter key's high-water mark.
    Ota { key: Cow<'a, str>, mark: u64 },
    /// A subscriber's PIN failures (`None`: forgotten).
    Pin {
        msisdn: Cow<'a, str>,
        record: Option<Cow<'a, PinRecord>>,
    },
    /// An authorization record; `expires_ms` once it is terminal (purge order).
    Auth {
        record: Cow<'a, AuthorizationRecord>,
        expires_ms: Option<u64>,
    },
    /// A terminal record purged.
    AuthGone { id: Cow<'a, str> },
    /// An idempotency claim of (client, key) (`None`: purged).
    Claim {
        client: Cow<'a, str>,
        key: Cow<'a, str>,
        entry: Option<Cow<'a, IdempotencyEntry>>,
    },
    /// An outbox entry (`None`: delivered or given up).
    Outbox {
        event_id: Cow<'a, str>,
        entry: Option<Cow<'a, OutboxEntry>>,
    },
}

/// An authorization with the LSN of the last durable change a reader must not see early.
#[derive(Debug)]
struct Slot {
    record: AuthorizationRecord,
    expires_ms: Option<u64>,
    publish: u64,
}

#[derive(Debug, Default)]
struct Tables {
    ota: BTreeMap<String, u64>,
    pin: BTreeMap<String, PinRecord>,
    auth: BTreeMap<String, Slot>,
    /// In-flight records by subscriber, for correlation.
    in_flight: BTreeSet<(String, String)>,
    /// Terminal records by expiry time.
    auth_expiry: BTreeSet<(u64, String)>,
    claims: BTreeMap<(String, String), IdempotencyEntry>,
    /// Entries with the LSN of the ending that wrote them.
    outbox: BTreeMap<String, (OutboxEntry, u64)>,
}

impl Tables {
    /// Applies one replayed entry.
    fn replay(&mut self, entry: Entry<'_>) {
        match entry {
            Entry::Ota { key, mark } => {
                self.ota.insert(key.into_owned(), mark);
            }
            Entry::Pin { msisdn, record } => match record {
                Some(r) => {
                    self.pin.insert(msisdn.into_owned(), r.into_owned());
                }
                None => {
                    self.pin.remove(msisdn.as_ref());
                }
            },
            Entry::Auth { record, expires_ms } => {
                let record = record.into_owned();
                self.put_auth(record, expires_ms, 0);
            }
            Entry::AuthGone { id } => self.remove_auth(&id),
            Entry::Claim { client, key, entry } => {
                let slot = (client.into_owned(), key.into_owned());
                match entry {
                    Some(e) => {
                        self.claims.insert(slot, e.into_owned());
                    }
                    None => {
                        self.claims.remove(&slot);
                    }
                }
            }
            Entry::Outbox { event_id, entry } => match entry {
                Some(e) => {
                    self.outbox
                        .insert(event_id.into_owned(), (e.into_owned(), 0));
                }
                None => {
                    self.outbox.remove(event_id.as_ref());
                }
            },
        }
    }

    /// The high-water mark of an OTA counter key, by its storage key.
    fn ota_mark(&self, storage: &str) -> u64 {
        self.ota.get(storage).copied().unwrap_or(OTA_COUNTER_FIRST)
    }

    /// Sets the mark of `storage`; returns the entry that logs it.
    fn set_ota_mark(&mut self, storage: String, mark: u64) -> Entry<'static> {
        self.ota.insert(storage.clone(), mark);
        Entry::Ota {
            key: Cow::Owned(storage),
            mark,
        }
    }

    /// Reserves `n` (at least one) counters of `key`: the range, and the entry that logs the new
    /// mark.
    fn reserve_ota(
        &mut self,
        key: &OtaCounterKey,
        n: u64,
    ) -> Result<(Range<u64>, Entry<'static>), StoreError> {
        let storage = key.storage_key();
        let start = self.ota_mark(&storage).max(OTA_COUNTER_FIRST);
        let next = advance_high_water(key, start, n)?;
        Ok((start..next, self.set_ota_mark(storage, next)))
    }

    /// The record `id`, or [`StoreError::NotFound`].
    fn slot_mut(&mut self, id: &str) -> Result<&mut Slot, StoreError> {
        self.auth.get_mut(id).ok_or_else(|| StoreError::NotFound {
            table: "authorizations",
            key: id.to_owned(),
        })
    }

    /// Stores `record`, keeping the indexes in step with its state.
    fn put_auth(&mut self, record: AuthorizationRecord, expires_ms: Option<u64>, publish: u64) {
        let id = record.id.clone();
        if let Some(old) = self.auth.get(&id) {
            if let Some(at) = old.expires_ms {
                self.auth_expiry.remove(&(at, id.clone()));
            }
            self.in_flight
                .remove(&(old.record.msisdn.clone(), id.clone()));
        }
        match expires_ms {
            Some(at) => {
                self.auth_expiry.insert((at, id.clone()));
            }
            None => {
                self.in_flight.insert((record.msisdn.clone(), id.clone()));
            }
        }
        let publish = self
            .auth
            .get(&id)
            .map_or(publish, |s| s.publish.max(publish));
        self.auth.insert(
            id,
            Slot {
                record,
                expires_ms,
                publish,
            },
        );
    }

    fn remove_auth(&mut self, id: &str) {
        if let Some(old) = self.auth.remove(id) {
            if let Some(at) = old.expires_ms {
                self.auth_expiry.remove(&(at, id.to_owned()));
            }
            self.in_flight.remove(&(old.record.msisdn, id.to_owned()));
        }
    }
}

/// Tables and the frames not yet handed to the file, under one lock: the file's order is the
/// order the changes were applied in.
#[derive(Debug, Default)]
struct State {
    tables: Tables,
    /// Encoded frames waiting for the writer.
    pending: Vec<u8>,
    /// Frames waiting (operations, for the commit figures).
    pending_frames: usize,
    /// Durable operations among them.
    pending_durable: usize,
    /// LSN of the last frame appended.
    last_lsn: u64,
    /// Highest LSN a durable operation (or a reader) waits to see on disk.
    wanted: u64,
    /// Why the store refuses writes, once it does.
    failure: Option<String>,
    /// The store is being dropped: the writer finishes what is pending and ends.
    closing: bool,
    /// Compact now, whatever the segment's size (tests); cleared when the snapshot is done.
    compact_now: bool,
}

impl State {
    /// Appends one frame of `entries` and returns its LSN.
    fn append(&mut self, entries: &[Entry<'_>], durable: bool) -> Result<u64, StoreError> {
        encode_frame(&mut self.pending, entries)?;
        self.pending_frames += 1;
        self.last_lsn += 1;
        if durable {
            self.pending_durable += 1;
            self.wanted = self.last_lsn;
        }
        Ok(self.last_lsn)
    }
}

/// Appends one frame to `out`.
fn encode_frame(out: &mut Vec<u8>, entries: &[Entry<'_>]) -> Result<(), StoreError> {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER]);
    // Our entry types always serialise; an error here is a programming error surfaced as one.
    if let Err(e) = serde_json::to_writer(&mut *out, entries) {
        out.truncate(start);
        return Err(StoreError::Backend(e.to_string()));
    }
    let payload = &out[start + FRAME_HEADER..];
    let len = u32::try_from(payload.len())
        .map_err(|_| StoreError::Backend("journal frame larger than 4 GiB".into()))?;
    let crc = crc32fast::hash(payload);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// What the writer has made durable, for the waiting operations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Progress {
    durable: u64,
    failed: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the writer: frames are pending, or the store closes.
    work: Condvar,
    /// LSN fsynced so far (the fast path of [`JournalStore::published`]).
    durable: AtomicU64,
    /// The writer waits for work (set under the state lock before it waits).
    writer_idle: AtomicBool,
    progress: tokio::sync::watch::Sender<Progress>,
    options: StoreOptions,
    stats: Arc<WriterStats>,
    observer: Option<Arc<dyn CommitObserver>>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // Every change leaves the tables consistent before anything can panic, so a poisoned lock
    // still guards valid data.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The journal-backed store. One per directory and process.
pub struct JournalStore {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for JournalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalStore")
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}

fn segment_name(n: u64) -> String {
    format!("{n:08}.journal")
}

fn snapshot_name(n: u64) -> String {
    format!("{n:08}.snapshot")
}

/// The segments in `dir`, oldest first.
fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    numbered(dir, ".journal")
}

/// The complete snapshots in `dir`, oldest first.
fn snapshots(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    numbered(dir, ".snapshot")
}

/// Files `NNNNNNNN{suffix}` in `dir`, by number.
fn numbered(dir: &Path, suffix: &str) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|s| s.strip_suffix(suffix))
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        out.push((n, entry.path()));
    }
    out.sort();
    Ok(out)
}

fn corrupt(path: &Path, offset: u64, detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        table: "journal",
        key: format!("{}@{offset}", path.display()),
        detail: detail.into(),
    }
}

/// Replays the frames of one file into `tables`; returns the length of its sound prefix. A bad
/// frame is an error unless `torn_tail_allowed` (the last segment: a crash mid-write).
fn replay_file(
    path: &Path,
    tables: &mut Tables,
    torn_tail_allowed: bool,
) -> Result<u64, StoreError> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let mut at = 0usize;
    while at < bytes.len() {
        let bad = |detail: &str| corrupt(path, at as u64, detail);
        let Some(header) = bytes.get(at..at + FRAME_HEADER) else {
            if torn_tail_allowed {
                break;
            }
            return Err(bad("truncated frame header"));
        };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let payload = match bytes.get(at + FRAME_HEADER..at + FRAME_HEADER + len) {
            Some(p) if len <= MAX_FRAME && crc32fast::hash(p) == crc => p,
            _ if torn_tail_allowed => break,
            _ => return Err(bad("frame length or checksum wrong")),
        };
        let entries: Vec<Entry<'_>> = serde_json::from_slice(payload)
            .map_err(|e| bad(&format!("frame does not decode: {e}")))?;
        for entry in entries {
            tables.replay(entry);
        }
        at += FRAME_HEADER + len;
    }
    Ok(at as u64)
}

/// The open segment the writer appends to.
struct Segment {
    number: u64,
    file: File,
    bytes: u64,
}

fn create_segment(dir: &Path, number: u64) -> Result<Segment, StoreError> {
    let file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(dir.join(segment_name(number)))?;
    // The new name must survive a crash before anything relies on the segment.
    File::open(dir)?.sync_all()?;
    Ok(Segment {
        number,
        file,
        bytes: 0,
    })
}

impl JournalStore {
    /// Opens the journal in directory `dir` (created if missing), replaying it.
    pub fn open(dir: impl AsRef<Path>, options: StoreOptions) -> Result<Self, StoreError> {
        Self::open_observed(dir, options, None)
    }

    /// [`JournalStore::open`], telling `observer` of every group commit (metrics).
    pub fn open_observed(
        dir: impl AsRef<Path>,
        options: StoreOptions,
        observer: Option<Arc<dyn CommitObserver>>,
    ) -> Result<Self, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)?;
        let mut tables = Tables::default();
        let found = segments(&dir)?;
        // The newest snapshot, then the segments from its number on.
        let base = snapshots(&dir)?.pop();
        let first = base.as_ref().map_or(0, |(n, _)| *n);
        let mut snapshot_bytes = 0;
        if let Some((_, path)) = &base {
            snapshot_bytes = replay_file(path, &mut tables, false)?;
        }
        let replayed: Vec<&(u64, PathBuf)> = found.iter().filter(|(n, _)| *n >= first).collect();
        if let Some((n, _)) = replayed.first() {
            let expected = if base.is_some() { first } else { 1 };
            if *n != expected {
                return Err(corrupt(
                    &dir,
                    0,
                    format!("segment {expected} is missing (the first is {n})"),
                ));
            }
        }
        let mut segment = None;
        for (i, (n, path)) in replayed.iter().enumerate() {
            let last = i + 1 == replayed.len();
            let sound = replay_file(path, &mut tables, last)?;
            if last {
                let file = OpenOptions::new().append(true).open(path)?;
                // A torn frame at the end is cut off, so new frames follow sound ones.
                if file.metadata()?.len() != sound {
                    file.set_len(sound)?;
                    file.sync_all()?;
                }
                segment = Some(Segment {
                    number: *n,
                    file,
                    bytes: sound,
                });
            }
        }
        remove_older(&dir, first)?;
        let segment = match segment {
            Some(s) => s,
            None => create_segment(&dir, first.max(1))?,
        };
        let (progress, _) = tokio::sync::watch::channel(Progress::default());
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                tables,
                ..State::default()
            }),
            work: Condvar::new(),
            durable: AtomicU64::new(0),
            writer_idle: AtomicBool::new(false),
            progress,
            options,
            stats: Arc::new(WriterStats::default()),
            observer,
        });
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("store-journal".into())
                .spawn(move || {
                    Writer {
                        shared,
                        dir,
                        segment,
                        snapshot_bytes: Arc::new(AtomicU64::new(snapshot_bytes)),
                        compaction: None,
                    }
                    .run();
                })
                .map_err(StoreError::Io)?
        };
        Ok(Self {
            shared,
            writer: Some(writer),
        })
    }

    /// What the writer has done (commits, fsyncs, operations per commit).
    pub fn writer_stats(&self) -> Arc<WriterStats> {
        self.shared.stats.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.shared.state)
    }

    /// The state for a change: refused once the store has failed.
    fn lock_for_write(&self) -> Result<MutexGuard<'_, State>, StoreError> {
        let state = self.lock();
        match &state.failure {
            Some(why) => Err(failed(why)),
            None if state.closing => Err(StoreError::Backend("the store is closed".into())),
            None => Ok(state),
        }
    }

    /// Wakes the writer for a durable operation just appended (a non-durable one waits for
    /// the next durable one, or for [`LAZY_FLUSH`]): no futex wake-up when it is awake anyway.
    fn kick(&self) {
        if self.shared.writer_idle.swap(false, Ordering::AcqRel) {
            self.shared.work.notify_one();
        }
    }

    /// Appends a frame that needs no fsync of its own; it rides on the next durable flush (or
    /// [`LAZY_FLUSH`]), and wakes the writer only once the pending bytes are many.
    fn append_lazily(
        &self,
        mut state: MutexGuard<'_, State>,
        entries: &[Entry<'_>],
    ) -> Result<(), StoreError> {
        state.append(entries, false)?;
        let wake = state.pending.len() >= FLUSH_BYTES;
        drop(state);
        if wake {
            self.kick();
        }
        Ok(())
    }

    /// Waits until every frame up to `lsn` is fsynced; an error if the store failed first.
    async fn published(&self, lsn: u64) -> Result<(), StoreError> {
        if self.shared.durable.load(Ordering::Acquire) >= lsn {
            return Ok(());
        }
        let mut progress = self.shared.progress.subscribe();
        let reached = progress
            .wait_for(|p| p.failed || p.durable >= lsn)
            .await
            .map(|p| *p)
            .map_err(|_| StoreError::Backend("the store writer has stopped".into()))?;
        if reached.durable >= lsn {
            return Ok(());
        }
        let why = self.lock().failure.clone().unwrap_or_default();
        Err(StoreError::Backend(format!("not committed: {why}")))
    }

    /// Waits for every durable change applied so far (a scan's results are published).
    async fn published_all(&self) -> Result<(), StoreError> {
        let wanted = self.lock().wanted;
        self.published(wanted).await
    }
}

fn failed(why: &str) -> StoreError {
    StoreError::Backend(format!("store failed, writes refused: {why}"))
}

impl Drop for JournalStore {
    fn drop(&mut self) {
        self.lock().closing = true;
        self.kick();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// Removes the segments and snapshots numbered below `first`, and unfinished snapshots.
fn remove_older(dir: &Path, first: u64) -> Result<(), StoreError> {
    for (n, path) in segments(dir)?.into_iter().chain(snapshots(dir)?) {
        if n < first {
            std::fs::remove_file(path)?;
        }
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let unfinished = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.ends_with(".snapshot.tmp"));
        if unfinished {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

struct Writer {
    shared: Arc<Shared>,
    dir: PathBuf,
    segment: Segment,
    /// Size of the last snapshot: the segment must outgrow it before the next compaction.
    snapshot_bytes: Arc<AtomicU64>,
    compaction: Option<JoinHandle<()>>,
}

impl Writer {
    fn run(mut self) {
        let interval = self.shared.options.durable_commit_interval;
        let mut spare = Vec::new();
        let mut last_sync: Option<Instant> = None;
        let mut last_sync_ops = 0usize;
        loop {
            let mut state = lock(&self.shared.state);
            while !state.closing && state.pending_durable == 0 && state.pending.len() < FLUSH_BYTES
            {
                self.shared.writer_idle.store(true, Ordering::Release);
                let (next, waited) = self
                    .shared
                    .work
                    .wait_timeout(state, LAZY_FLUSH)
                    .unwrap_or_else(PoisonError::into_inner);
                state = next;
                self.shared.writer_idle.store(false, Ordering::Release);
                if waited.timed_out() && (!state.pending.is_empty() || state.compact_now) {
                    break;
                }
            }
            if state.pending.is_empty() && state.closing {
                break;
            }
            let wants_sync = state.wanted > self.shared.durable.load(Ordering::Acquire);
            let busy = last_sync_ops > 1 || state.pending_durable > 1;
            if let Some(last) = last_sync.filter(|_| wants_sync && busy && !state.closing) {
                let due = last + interval;
                let now = Instant::now();
                if due > now {
                    // Under load: let this interval's durable operations share one fsync.
                    drop(state);
                    std::thread::sleep(due - now);
                    state = lock(&self.shared.state);
                }
            }
            if state.failure.is_some() {
                // Nothing more reaches the file; the waiters learn why from the failure.
                state.pending.clear();
                state.pending_frames = 0;
                state.pending_durable = 0;
                drop(state);
                self.publish_failure();
                continue;
            }
            let compact_now = state.compact_now;
            let wants_sync = state.wanted > self.shared.durable.load(Ordering::Acquire);
            spare.clear();
            std::mem::swap(&mut state.pending, &mut spare);
            let upto = state.last_lsn;
            let operations = std::mem::take(&mut state.pending_frames);
            let durable_ops = std::mem::take(&mut state.pending_durable);
            drop(state);
            let started = Instant::now();
            if let Err(e) = self.write(&spare, wants_sync) {
                let why = format!("journal write: {e}");
                tracing::error!(error = %why, "store write failed; the store refuses writes from now on");
                lock(&self.shared.state).failure = Some(why);
                if let Some(o) = &self.shared.observer {
                    o.failed();
                }
                self.publish_failure();
                continue;
            }
            let took = started.elapsed();
            if wants_sync {
                last_sync = Some(started);
                last_sync_ops = durable_ops;
                self.shared.durable.store(upto, Ordering::Release);
                self.shared.progress.send_replace(Progress {
                    durable: upto,
                    failed: false,
                });
            }
            if operations > 0 {
                let stats = &self.shared.stats;
                stats.commits.fetch_add(1, Ordering::Relaxed);
                if wants_sync {
                    stats.durable_commits.fetch_add(1, Ordering::Relaxed);
                }
                stats
                    .operations
                    .fetch_add(operations as u64, Ordering::Relaxed);
                if let Some(o) = &self.shared.observer {
                    o.committed(operations, wants_sync, took);
                }
            }
            if self
                .compaction
                .as_ref()
                .is_some_and(JoinHandle::is_finished)
            {
                if let Some(done) = self.compaction.take() {
                    let _ = done.join();
                }
            }
            let outgrown = self.segment.bytes
                > self
                    .shared
                    .options
                    .journal_compact_bytes
                    .max(self.snapshot_bytes.load(Ordering::Acquire));
            if self.compaction.is_none() && (compact_now || outgrown) {
                if let Err(e) = self.start_compaction() {
                    tracing::warn!(error = %e, "journal compaction not started");
                }
            }
        }
        if let Some(compaction) = self.compaction.take() {
            let _ = compaction.join();
        }
    }

    fn write(&mut self, bytes: &[u8], sync: bool) -> std::io::Result<()> {
        if !bytes.is_empty() {
            self.segment.file.write_all(bytes)?;
            self.segment.bytes += bytes.len() as u64;
        }
        if sync {
            self.segment.file.sync_data()?;
        }
        Ok(())
    }

    fn publish_failure(&self) {
        let durable = self.shared.durable.load(Ordering::Acquire);
        self.shared.progress.send_replace(Progress {
            durable,
            failed: true,
        });
    }

    /// Starts segment N+1 (segment N fsynced first: everything in it is in the state the
    /// snapshot will read) and the thread that writes snapshot N+1.
    fn start_compaction(&mut self) -> Result<(), StoreError> {
        self.segment.file.sync_data()?;
        self.segment = create_segment(&self.dir, self.segment.number + 1)?;
        let (shared, dir, number) = (self.shared.clone(), self.dir.clone(), self.segment.number);
        let snapshot_bytes = self.snapshot_bytes.clone();
        let thread = std::thread::Builder::new()
            .name("store-compaction".into())
            .spawn(move || compact(&shared, &dir, number, &snapshot_bytes))
            .map_err(StoreError::Io)?;
        self.compaction = Some(thread);
        Ok(())
    }
}

/// Writes snapshot `number`, then removes what it replaces.
fn compact(shared: &Shared, dir: &Path, number: u64, snapshot_bytes: &AtomicU64) {
    let tmp = dir.join(format!("{}.tmp", snapshot_name(number)));
    match write_snapshot(shared, dir, &tmp, number) {
        Ok(Some(bytes)) => {
            snapshot_bytes.store(bytes, Ordering::Release);
            if let Err(e) = remove_older(dir, number) {
                tracing::warn!(error = %e, "journal files a snapshot replaced not removed; removed at the next start");
            }
            lock(&shared.state).compact_now = false;
            if let Some(o) = &shared.observer {
                o.compacted();
            }
            tracing::info!(snapshot = number, bytes, "journal compacted");
        }
        // The store is closing: the segments stay, the next start replays them.
        Ok(None) => {
            let _ = std::fs::remove_file(&tmp);
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(error = %e, "journal compaction failed; the segments stay and the next one tries again");
        }
    }
}

/// A snapshot being written: frames of entries, like a segment.
struct SnapshotFile {
    file: File,
    buf: Vec<u8>,
    bytes: u64,
    unsynced: u64,
}

impl SnapshotFile {
    fn frame(&mut self, entries: &[Entry<'_>]) -> Result<(), StoreError> {
        self.buf.clear();
        encode_frame(&mut self.buf, entries)?;
        self.file.write_all(&self.buf)?;
        self.bytes += self.buf.len() as u64;
        self.unsynced += self.buf.len() as u64;
        if self.unsynced >= SNAPSHOT_SYNC_BYTES {
            // Flushed a little at a time: one fsync of the whole snapshot at the end would
            // hold the disk, and the journal's fsyncs behind it, for tens of milliseconds.
            self.file.sync_data()?;
            self.unsynced = 0;
        }
        Ok(())
    }
}

/// Dumps every table into `tmp`, fsyncs it and renames it to snapshot `number`; its size, or
/// `None` when the store began closing meanwhile.
fn write_snapshot(
    shared: &Shared,
    dir: &Path,
    tmp: &Path,
    number: u64,
) -> Result<Option<u64>, StoreError> {
    let mut out = SnapshotFile {
        file: File::create(tmp)?,
        buf: Vec::new(),
        bytes: 0,
        unsynced: 0,
    };
    let done = dump_table(
        shared,
        &mut out,
        |t| &t.ota,
        |k, mark| Entry::Ota {
            key: Cow::Owned(k.clone()),
            mark: *mark,
        },
    )? && dump_table(
        shared,
        &mut out,
        |t| &t.pin,
        |k, record| Entry::Pin {
            msisdn: Cow::Owned(k.clone()),
            record: Some(Cow::Owned(record.clone())),
        },
    )? && dump_table(
        shared,
        &mut out,
        |t| &t.auth,
        |_, slot| Entry::Auth {
            record: Cow::Owned(slot.record.clone()),
            expires_ms: slot.expires_ms,
        },
    )? && dump_table(
        shared,
        &mut out,
        |t| &t.claims,
        |(client, key), claim| Entry::Claim {
            client: Cow::Owned(client.clone()),
            key: Cow::Owned(key.clone()),
            entry: Some(Cow::Owned(claim.clone())),
        },
    )? && dump_table(
        shared,
        &mut out,
        |t| &t.outbox,
        |k, (entry, _)| Entry::Outbox {
            event_id: Cow::Owned(k.clone()),
            entry: Some(Cow::Owned(entry.clone())),
        },
    )?;
    if !done {
        return Ok(None);
    }
    out.file.sync_all()?;
    std::fs::rename(tmp, dir.join(snapshot_name(number)))?;
    File::open(dir)?.sync_all()?;
    Ok(Some(out.bytes))
}

/// Dumps one table, [`DUMP_CHUNK`] values per lock hold (copied under the lock, encoded and
/// written outside it); `false` when the store began closing.
fn dump_table<K: Ord + Clone, V>(
    shared: &Shared,
    out: &mut SnapshotFile,
    table: impl Fn(&Tables) -> &BTreeMap<K, V>,
    entry: impl Fn(&K, &V) -> Entry<'static>,
) -> Result<bool, StoreError> {
    let mut after: Option<K> = None;
    loop {
        let chunk_started = Instant::now();
        let (entries, last) = {
            let state = lock(&shared.state);
            if state.closing {
                return Ok(false);
            }
            let map = table(&state.tables);
            let range = match &after {
                Some(k) => map.range((Bound::Excluded(k.clone()), Bound::Unbounded)),
                None => map.range::<K, _>(..),
            };
            let mut last = None;
            let entries: Vec<Entry<'static>> = range
                .take(DUMP_CHUNK)
                .map(|(k, v)| {
                    last = Some(k);
                    entry(k, v)
                })
                .collect();
            (entries, last.cloned())
        };
        if !entries.is_empty() {
            out.frame(&entries)?;
        }
        // A compaction is background work: at most a quarter of one core, so a large dump
        // does not take the CPU from the operations it runs beside.
        std::thread::sleep(chunk_started.elapsed() * DUMP_IDLE_FACTOR);
        match last {
            Some(k) if entries.len() == DUMP_CHUNK => after = Some(k),
            _ => return Ok(true),
        }
    }
}

#[async_trait::async_trait]
impl Store for JournalStore {
    async fn reserve_ota_counters(
        &self,
        key: &OtaCounterKey,
        n: u64,
    ) -> Result<Range<u64>, StoreError> {
        check_key("msisdn", &key.msisdn)?;
        let (range, lsn) = {
            let mut state = self.lock_for_write()?;
            if n == 0 {
                let mark = state.tables.ota_mark(&key.storage_key());
                return Ok(mark..mark);
            }
            let (range, entry) = state.tables.reserve_ota(key, n)?;
            (range, state.append(&[entry], true)?)
        };
        self.kick();
        self.published(lsn).await?;
        Ok(range)
    }

    async fn raise_ota_counter_floor(
        &self,
        key: &OtaCounterKey,
        floor: u64,
    ) -> Result<u64, StoreError> {
        check_key("msisdn", &key.msisdn)?;
        if floor > OTA_COUNTER_MAX + 1 {
            return Err(exhausted(key));
        }
        let (mark, lsn) = {
            let mut state = self.lock_for_write()?;
            let storage = key.storage_key();
            let mark = state.tables.ota_mark(&storage).max(floor);
            let entry = state.tables.set_ota_mark(storage, mark);
            (mark, state.append(&[entry], true)?)
        };
        self.kick();
        self.published(lsn).await?;
        Ok(mark)
    }

    async fn ota_high_water(&self, key: &OtaCounterKey) -> Result<u64, StoreError> {
        check_key("msisdn", &key.msisdn)?;
        let mark = self.lock().tables.ota_mark(&key.storage_key());
        self.published_all().await?;
        Ok(mark)
    }

    async fn count_pin_attempt(
        &self,
        msisdn: &str,
        now_ms: u64,
        policy: &LockoutPolicy,
    ) -> Result<PinAttempt, StoreError> {
        check_key("msisdn", msisdn)?;
        let (attempt, lsn) = {
            let mut state = self.lock_for_write()?;
            let mut record = state.tables.pin.get(msisdn).cloned().unwrap_or_default();
            let attempt = record.count_attempt(now_ms, policy);
            let lsn = state.append(
                &[Entry::Pin {
                    msisdn: Cow::Borrowed(msisdn),
                    record: Some(Cow::Borrowed(&record)),
                }],
                true,
            )?;
            state.tables.pin.insert(msisdn.to_owned(), record);
            (attempt, lsn)
        };
        self.kick();
        self.published(lsn).await?;
        Ok(attempt)
    }

    async fn reset_pin_failures(&self, msisdn: &str) -> Result<(), StoreError> {
        check_key("msisdn", msisdn)?;
        let mut state = self.lock_for_write()?;
        if state.tables.pin.remove(msisdn).is_none() {
            return Ok(());
        }
        self.append_lazily(
            state,
            &[Entry::Pin {
                msisdn: Cow::Borrowed(msisdn),
                record: None,
            }],
        )
    }

    async fn lock_state(&self, msisdn: &str, now_ms: u64) -> Result<LockState, StoreError> {
        check_key("msisdn", msisdn)?;
        Ok(self
            .lock()
            .tables
            .pin
            .get(msisdn)
            .map_or(LockState::Open { failures: 0 }, |r| r.state(now_ms)))
    }

    async fn create_authorization(
        &self,
        record: &AuthorizationRecord,
        now_ms: u64,
        idempotency_ttl_ms: u64,
        ota: Option<&OtaCounterKey>,
    ) -> Result<Creation, StoreError> {
        check_creation(record, ota)?;
        let (creation, lsn) = 'apply: {
            let mut state = self.lock_for_write()?;
            let tables = &mut state.tables;
            if tables.auth.contains_key(&record.id) {
                return Err(StoreError::AlreadyExists {
                    table: "authorizations",
                    key: record.id.clone(),
                });
            }
            let existing = record.idempotency_key.as_ref().and_then(|key| {
                let entry = tables
                    .claims
                    .get(&(record.client_id.clone(), key.clone()))?;
                let other = tables.auth.get(&entry.auth_id)?;
                (entry.expires_ms > now_ms).then(|| (other.record.clone(), other.publish))
            });
            if let Some((other, publish)) = existing {
                break 'apply (Creation::Existing(Box::new(other)), publish);
            }
            let mut record = record.clone();
            let mut entries = Vec::with_capacity(3);
            let ota_counter = match ota {
                Some(key) => {
                    let (reserved, entry) = tables.reserve_ota(key, 1)?;
                    entries.push(entry);
                    record.stk_counter = Some(reserved.start);
                    Some(reserved.start)
                }
                None => None,
            };
            let claim = record.idempotency_key.as_ref().map(|key| {
                (
                    (record.client_id.clone(), key.clone()),
                    IdempotencyEntry {
                        auth_id: record.id.clone(),
                        expires_ms: expiry(now_ms, idempotency_ttl_ms),
                    },
                )
            });
            if let Some(((client, key), entry)) = &claim {
                entries.push(Entry::Claim {
                    client: Cow::Borrowed(client),
                    key: Cow::Borrowed(key),
                    entry: Some(Cow::Borrowed(entry)),
                });
            }
            entries.push(Entry::Auth {
                record: Cow::Borrowed(&record),
                expires_ms: None,
            });
            let lsn = state.append(&entries, true)?;
            drop(entries);
            if let Some((slot, entry)) = claim {
                state.tables.claims.insert(slot, entry);
            }
            state.tables.put_auth(record, None, lsn);
            (Creation::Created { ota_counter }, lsn)
        };
        self.kick();
        self.published(lsn).await?;
        Ok(creation)
    }

    async fn update_authorization_state(
        &self,
        id: &str,
        expected: &AuthState,
        update: &AuthorizationUpdate,
    ) -> Result<AuthorizationRecord, StoreError> {
        check_change(id, update, false)?;
        let (result, publish) = 'apply: {
            let mut state = self.lock_for_write()?;
            let slot = state.tables.slot_mut(id)?;
            let publish = slot.publish;
            let applied = apply_update(&mut slot.record, expected, update);
            if let Err(CasRefusal::Conflict(actual)) = applied {
                let conflict = StoreError::Conflict {
                    id: id.to_owned(),
                    actual,
                };
                break 'apply (Err(conflict), publish);
            }
            let record = slot.record.clone();
            self.append_lazily(
                state,
                &[Entry::Auth {
                    record: Cow::Borrowed(&record),
                    expires_ms: None,
                }],
            )?;
            (Ok(record), publish)
        };
        self.published(publish).await?;
        result
    }

    async fn end_authorization(
        &self,
        id: &str,
        update: &AuthorizationUpdate,
        outbox: &OutboxPolicy,
    ) -> Result<Ended, StoreError> {
        check_change(id, update, true)?;
        let (ended, lsn) = 'apply: {
            let mut state = self.lock_for_write()?;
            let slot = state.tables.slot_mut(id)?;
            let mut record = slot.record.clone();
            if !apply_ending(&mut record, update) {
                let lost = Ended {
                    record,
                    won: false,
                    outbox: Vec::new(),
                };
                break 'apply (lost, slot.publish);
            }
            let at = expiry(update.now_ms, self.shared.options.terminal_ttl_ms);
            let entries_owed = outbox_for(&record, outbox, update.now_ms);
            let mut entries = Vec::with_capacity(1 + entries_owed.len());
            entries.push(Entry::Auth {
                record: Cow::Borrowed(&record),
                expires_ms: Some(at),
            });
            for e in &entries_owed {
                entries.push(Entry::Outbox {
                    event_id: Cow::Borrowed(&e.event_id),
                    entry: Some(Cow::Borrowed(e)),
                });
            }
            let lsn = state.append(&entries, true)?;
            drop(entries);
            for e in &entries_owed {
                state
                    .tables
                    .outbox
                    .insert(e.event_id.clone(), (e.clone(), lsn));
            }
            state.tables.put_auth(record.clone(), Some(at), lsn);
            (
                Ended {
                    record,
                    won: true,
                    outbox: entries_owed,
                },
                lsn,
            )
        };
        self.kick();
        self.published(lsn).await?;
        Ok(ended)
    }

    async fn get_authorization(&self, id: &str) -> Result<Option<AuthorizationRecord>, StoreError> {
        check_key("authorization id", id)?;
        let found = self
            .lock()
            .tables
            .auth
            .get(id)
            .map(|s| (s.record.clone(), s.publish));
        match found {
            Some((record, publish)) => {
                self.published(publish).await?;
                Ok(Some(record))
            }
            None => Ok(None),
        }
    }

    async fn list_in_flight(&self) -> Result<Vec<AuthorizationRecord>, StoreError> {
        let mut records: Vec<_> = {
            let state = self.lock();
            state
                .tables
                .auth
                .values()
                .filter(|s| !s.record.state.is_terminal())
                .map(|s| s.record.clone())
                .collect()
        };
        self.published_all().await?;
        records.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(records)
    }

    async fn in_flight_for_msisdn(
        &self,
        msisdn: &str,
    ) -> Result<Vec<AuthorizationRecord>, StoreError> {
        check_key("msisdn", msisdn)?;
        let records: Vec<_> = {
            let state = self.lock();
            let t = &state.tables;
            t.in_flight
                .range((msisdn.to_owned(), String::new())..)
                .take_while(|(m, _)| m == msisdn)
                .filter_map(|(_, id)| t.auth.get(id).map(|s| s.record.clone()))
                .collect()
        };
        self.published_all().await?;
        Ok(records)
    }

    async fn outbox_pending(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        let (mut entries, publish) = {
            let state = self.lock();
            let publish = state.tables.outbox.values().map(|(_, l)| *l).max();
            let entries: Vec<_> = state
                .tables
                .outbox
                .values()
                .map(|(e, _)| e.clone())
                .collect();
            (entries, publish.unwrap_or(0))
        };
        self.published(publish).await?;
        sort_outbox(&mut entries);
        Ok(entries)
    }

    async fn outbox_remove(&self, event_id: &str) -> Result<(), StoreError> {
        let mut state = self.lock_for_write()?;
        if state.tables.outbox.remove(event_id).is_none() {
            return Ok(());
        }
        self.append_lazily(
            state,
            &[Entry::Outbox {
                event_id: Cow::Borrowed(event_id),
                entry: None,
            }],
        )
    }

    async fn purge_expired(&self, now_ms: u64) -> Result<PurgeReport, StoreError> {
        let mut state = self.lock_for_write()?;
        let due: Vec<(u64, String)> = state
            .tables
            .auth_expiry
            .range(..(now_ms.saturating_add(1), String::new()))
            .cloned()
            .collect();
        let claims: Vec<(String, String)> = state
            .tables
            .claims
            .iter()
            .filter(|(_, e)| e.expires_ms <= now_ms)
            .map(|(k, _)| k.clone())
            .collect();
        let report = PurgeReport {
            authorizations: due.len(),
            idempotency_keys: claims.len(),
        };
        if due.is_empty() && claims.is_empty() {
            return Ok(report);
        }
        let mut entries = Vec::with_capacity(due.len() + claims.len());
        for (_, id) in due {
            state.tables.remove_auth(&id);
            entries.push(Entry::AuthGone { id: Cow::Owned(id) });
        }
        for (client, key) in claims {
            state.tables.claims.remove(&(client.clone(), key.clone()));
            entries.push(Entry::Claim {
                client: Cow::Owned(client),
                key: Cow::Owned(key),
                entry: None,
            });
        }
        self.append_lazily(state, &entries)?;
        Ok(report)
    }

    fn failure(&self) -> Option<String> {
        if let Some(why) = self.lock().failure.clone() {
            return Some(why);
        }
        self.writer
            .as_ref()
            .is_some_and(JoinHandle::is_finished)
            .then(|| "the store writer thread has stopped".to_owned())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::conformance::OPTIONS;
    use crate::store::records::tests::sample;
    use std::time::Duration;

    fn record(id: &str) -> AuthorizationRecord {
        AuthorizationRecord {
            id: id.into(),
            idempotency_key: Some(format!("key-{id}")),
            ..sample()
        }
    }

    #[tokio::test]
    async fn records_counters_claims_and_outbox_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let k = OtaCounterKey::new("46700000001", [0xB0, 0x00, 0x10], 1);
        {
            let store = JournalStore::open(dir.path(), OPTIONS).unwrap();
            assert_eq!(store.reserve_ota_counters(&k, 10).await.unwrap(), 1..11);
            store
                .create_authorization(&record("a1"), 0, 60_000, Some(&k))
                .await
                .unwrap();
            store
                .create_authorization(&record("a2"), 0, 60_000, None)
                .await
                .unwrap();
            store
                .update_authorization_state(
                    "a2",
                    &AuthState::Created,
                    &AuthorizationUpdate::to(AuthState::Routed, 5),
                )
                .await
                .unwrap();
            let ended = store
                .end_authorization(
                    "a1",
                    &AuthorizationUpdate::to(
                        AuthState::terminal(crate::store::TerminalStatus::Approved, None),
                        10,
                    ),
                    &OutboxPolicy {
                        audit: true,
                        callback_window_ms: 60_000,
                    },
                )
                .await
                .unwrap();
            assert!(ended.won);
            assert!(!ended.outbox.is_empty());
            store
                .count_pin_attempt("46700000001", 0, &LockoutPolicy::default())
                .await
                .unwrap();
        }
        let store = JournalStore::open(dir.path(), OPTIONS).unwrap();
        assert_eq!(store.ota_high_water(&k).await.unwrap(), 12);
        let a1 = store.get_authorization("a1").await.unwrap().unwrap();
        assert!(a1.state.is_terminal());
        assert_eq!(a1.stk_counter, Some(11));
        let in_flight = store.list_in_flight().await.unwrap();
        assert_eq!(in_flight.len(), 1);
        assert_eq!(in_flight[0].state, AuthState::Routed);
        assert!(!store.outbox_pending().await.unwrap().is_empty());
        assert_eq!(
            store.lock_state("46700000001", 0).await.unwrap(),
            LockState::Open { failures: 1 }
        );
        // The claim still names the first record.
        let again = store
            .create_authorization(&record("a2"), 1, 60_000, None)
            .await;
        assert!(matches!(again, Err(StoreError::AlreadyExists { .. })));
        let claimed = AuthorizationRecord {
            id: "a3".into(),
            ..record("a1")
        };
        match store
            .create_authorization(&claimed, 1, 60_000, None)
            .await
            .unwrap()
        {
            Creation::Existing(r) => assert_eq!(r.id, "a1"),
            other => panic!("expected the claimed record, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_torn_last_frame_is_cut_off_and_the_journal_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = JournalStore::open(dir.path(), OPTIONS).unwrap();
            store
                .create_authorization(&record("a1"), 0, 60_000, None)
                .await
                .unwrap();
        }
        let (_, path) = segments(dir.path()).unwrap().pop().unwrap();
        let sound = std::fs::metadata(&path).unwrap().len();
        // Half a frame, as a crash in the middle of a write leaves it.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, b'[', b'{'])
            .unwrap();
        drop(file);
        {
            let store = JournalStore::open(dir.path(), OPTIONS).unwrap();
            assert_eq!(std::fs::metadata(&path).unwrap().len(), sound);
            assert!(store.get_authorization("a1").await.unwrap().is_some());
            store
                .create_authorization(&record("a2"), 0, 60_000, None)
                .await
                .unwrap();
        }
        let store = JournalStore::open(dir.path(), OPTIONS).unwrap();
        assert!(store.get_authorization("a2").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_damaged_frame_before_the_last_segment_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = JournalStore::open(dir.path(), OPTIONS).unwrap();
            store
                .create_authorization(&record("a1"), 0, 60_000, None)
                .await
                .unwrap();
        }
        let (_, path) = segments(dir.path()).unwrap().pop().unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 0xFF;
        std::fs::write(&path, &bytes).unwrap();
        // A newer, empty segment makes the damaged one not the last.
        std::fs::write(dir.path().join(segment_name(2)), b"").unwrap();
        let err = JournalStore::open(dir.path(), OPTIONS).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn compaction_keeps_the_live_state_and_drops_old_segments() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(JournalStore::open(dir.path(), OPTIONS).unwrap());
        let k = OtaCounterKey::new("46700000001", [0xB0, 0x00, 0x10], 1);
        for i in 0..600 {
            store
                .create_authorization(&record(&format!("c{i:04}")), 0, 60_000, None)
                .await
                .unwrap();
        }
        let end = |store: Arc<JournalStore>, range: std::ops::Range<usize>| async move {
            for i in range {
                store
                    .end_authorization(
                        &format!("c{i:04}"),
                        &AuthorizationUpdate::to(
                            AuthState::terminal(crate::store::TerminalStatus::Denied, None),
                            1,
                        ),
                        &OutboxPolicy::default(),
                    )
                    .await
                    .unwrap();
            }
        };
        end(store.clone(), 0..300).await;
        assert_eq!(segments(dir.path()).unwrap().len(), 1);
        // A compaction asked for by hand (the size threshold is 64 MiB), with endings and
        // counters racing its dump.
        compact_now(&store);
        let racing = tokio::spawn(end(store.clone(), 300..400));
        for _ in 0..50 {
            store.reserve_ota_counters(&k, 2).await.unwrap();
        }
        racing.await.unwrap();
        wait_until(|| segments(dir.path()).unwrap().len() == 1 && dump_done(&store)).await;
        assert_eq!(segments(dir.path()).unwrap()[0].0, 2);
        assert_eq!(snapshots(dir.path()).unwrap()[0].0, 2);
        drop(Arc::into_inner(store).unwrap());
        let store = JournalStore::open(dir.path(), OPTIONS).unwrap();
        assert_eq!(store.list_in_flight().await.unwrap().len(), 200);
        for i in [0, 299, 300, 399] {
            let r = store
                .get_authorization(&format!("c{i:04}"))
                .await
                .unwrap()
                .unwrap();
            assert!(r.state.is_terminal(), "c{i:04}");
        }
        assert_eq!(store.ota_high_water(&k).await.unwrap(), 101);
    }

    #[tokio::test]
    async fn a_crash_mid_compaction_replays_the_older_segment_and_drops_the_unfinished_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = JournalStore::open(dir.path(), OPTIONS).unwrap();
            for i in 0..3 {
                store
                    .create_authorization(&record(&format!("m{i}")), 0, 60_000, None)
                    .await
                    .unwrap();
            }
        }
        // A second segment whose dump never completed: one newer value, no `dump_complete`.
        let mut frame = Vec::new();
        let mut newer = record("m1");
        newer.state = AuthState::Routed;
        encode_frame(
            &mut frame,
            &[Entry::Auth {
                record: Cow::Borrowed(&newer),
                expires_ms: None,
            }],
        )
        .unwrap();
        std::fs::write(dir.path().join(segment_name(2)), &frame).unwrap();
        // Its snapshot was being written: half a frame under the temporary name.
        let unfinished = dir.path().join(format!("{}.tmp", snapshot_name(2)));
        std::fs::write(&unfinished, &frame[..frame.len() / 2]).unwrap();
        let store = JournalStore::open(dir.path(), OPTIONS).unwrap();
        assert!(!unfinished.exists());
        let in_flight = store.list_in_flight().await.unwrap();
        assert_eq!(in_flight.len(), 3);
        assert_eq!(in_flight[1].state, AuthState::Routed);
        assert_eq!(segments(dir.path()).unwrap().len(), 2);
    }

    #[tokio::test]
    async fn after_a_failure_writes_are_refused_and_waiters_get_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = JournalStore::open(dir.path(), OPTIONS).unwrap();
        store
            .create_authorization(&record("f1"), 0, 60_000, None)
            .await
            .unwrap();
        // A durable change the writer never gets to write: the disk failed first.
        let lsn = {
            let mut state = lock(&store.shared.state);
            let lsn = state
                .append(
                    &[Entry::Ota {
                        key: "k".into(),
                        mark: 9,
                    }],
                    true,
                )
                .unwrap();
            state.failure = Some("injected: disk gone".into());
            lsn
        };
        store.shared.work.notify_one();
        let waited = tokio::time::timeout(Duration::from_secs(5), store.published(lsn))
            .await
            .expect("a waiter is told of the failure, not left waiting");
        assert!(waited.is_err());
        assert!(store.failure().unwrap().contains("disk gone"));
        let refused = store
            .create_authorization(&record("f2"), 0, 60_000, None)
            .await
            .unwrap_err();
        assert!(refused.to_string().contains("writes refused"), "{refused}");
        // What was durable before the failure is still read.
        assert!(store.get_authorization("f1").await.unwrap().is_some());
    }

    /// Asks the writer for a compaction now, whatever the segment's size.
    fn compact_now(store: &JournalStore) {
        lock(&store.shared.state).compact_now = true;
        store.shared.work.notify_one();
    }

    fn dump_done(store: &JournalStore) -> bool {
        !lock(&store.shared.state).compact_now
    }

    async fn wait_until(mut done: impl FnMut() -> bool) {
        for _ in 0..500 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the journal did not get there within 5 s");
    }
}
