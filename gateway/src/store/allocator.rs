//! [`OtaCounterAllocator`]: OTA counters for the hot path, one durable write per block.
//!
//! The allocator keeps, per counter key, the unused rest of a block reserved with
//! [`Store::reserve_ota_counters`]. `next` takes the lowest unused counter of the block without
//! I/O and reserves a new block only when the block is used up, so with a block of 64 one fsync
//! serves 64 messages. A crash loses the unused rest of each block; the store's high-water mark
//! guarantees the counters after the restart are above every counter handed out before.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{OtaCounterKey, Store, StoreError};

/// Default number of counters reserved per durable write.
pub const DEFAULT_BLOCK: u64 = 64;

/// Default number of keys whose blocks are kept in memory.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// Callers for the same key queue on its slot while a block is reserved (an async lock: the
/// reservation awaits a commit).
type Slot = Arc<tokio::sync::Mutex<Range<u64>>>;

/// Thread-safe; share it behind an `Arc`. Counters for one key come out strictly increasing,
/// except around [`discard`](Self::discard) or an eviction racing a `next` for the same key, when
/// one counter from the old block may follow one from the new block (never a duplicate).
pub struct OtaCounterAllocator {
    store: Arc<dyn Store>,
    block: u64,
    capacity: usize,
    blocks: Mutex<HashMap<OtaCounterKey, Slot>>,
}

impl std::fmt::Debug for OtaCounterAllocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtaCounterAllocator")
            .field("block", &self.block)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded values are replaced whole, never left half-updated, so a panic elsewhere
    // cannot leave them inconsistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl OtaCounterAllocator {
    /// `block` counters per durable write (at least 1); at most `capacity` keys keep a block in
    /// memory (an evicted key loses the rest of its block, which only skips counters).
    pub fn new(store: Arc<dyn Store>, block: u64, capacity: usize) -> Self {
        Self {
            store,
            block: block.max(1),
            capacity: capacity.max(1),
            blocks: Mutex::new(HashMap::new()),
        }
    }

    pub fn with_defaults(store: Arc<dyn Store>) -> Self {
        Self::new(store, DEFAULT_BLOCK, DEFAULT_CAPACITY)
    }

    /// The next counter for `key`. Does I/O (a durable write) once per block; callers for other
    /// keys are not held up meanwhile, callers for the same key wait for it.
    pub async fn next(&self, key: &OtaCounterKey) -> Result<u64, StoreError> {
        let slot = self.slot(key);
        let mut range = slot.lock().await;
        if let Some(counter) = range.next() {
            return Ok(counter);
        }
        let mut fresh = self.store.reserve_ota_counters(key, self.block).await?;
        let counter = fresh.next().ok_or_else(|| {
            StoreError::Backend("store returned an empty block of OTA counters".into())
        })?;
        *range = fresh;
        Ok(counter)
    }

    /// Forgets the cached block of `key`, e.g. after [`Store::raise_ota_counter_floor`]: the
    /// next counter comes from a fresh reservation above the new floor.
    pub fn discard(&self, key: &OtaCounterKey) {
        lock(&self.blocks).remove(key);
    }

    fn slot(&self, key: &OtaCounterKey) -> Slot {
        let mut blocks = lock(&self.blocks);
        if let Some(slot) = blocks.get(key) {
            return Arc::clone(slot);
        }
        if blocks.len() >= self.capacity {
            // Arbitrary victim: cheap, and eviction only costs skipped counters.
            if let Some(victim) = blocks.keys().next().cloned() {
                blocks.remove(&victim);
            }
        }
        let slot: Slot = Arc::new(tokio::sync::Mutex::new(0..0));
        blocks.insert(key.clone(), Arc::clone(&slot));
        slot
    }
}
