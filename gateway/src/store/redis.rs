//! [`RedisStore`]: the [`Store`] contract on a Redis server shared by several gateway nodes.
//!
//! Every read-check-write is one Lua script run with EVALSHA (the `redis` crate loads it on
//! first use), so no WATCH/MULTI is held on the shared, multiplexed connection. The rules that
//! change records stay in Rust ([`records`](super::records)), as in the other backends: the
//! scripts only compare and set.
//!
//! # Keys
//!
//! Every key starts with `{prefix}:`. The braces make the prefix a hash tag, so all of them live
//! in one slot of a Redis Cluster and the multi-key scripts are valid there. That buys
//! correctness on a cluster, not sharding: one deployment's keys are served by one shard.
//!
//! | Key | Type | Holds |
//! |---|---|---|
//! | `{p}:auth:<id>` | hash | `rec` (the record as JSON), `ver` (bumped by every write), `ota` (the counter reserved at creation), `terminal` (`1` once ended); `PEXPIRE`d at the ending by the terminal TTL |
//! | `{p}:inflight` | set | ids of every authorization in flight (recovery) |
//! | `{p}:inflight:<msisdn>` | set | ids in flight for one subscriber |
//! | `{p}:idem:<client>:<key>` | string | `<id>|<expiry ms>`: the authorization an idempotency key names until then; `PEXPIRE`d a minute after |
//! | `{p}:ota:<msisdn>:<tar>:<key set>` | string | the OTA high-water mark |
//! | `{p}:pin:<msisdn>` | string | the PIN record as JSON |
//! | `{p}:outbox` | hash | event id -> outbox entry as JSON |
//! | `{p}:node:<id>` | string | a node's lease, `PEXPIRE`d: renewed every second while it runs |
//! | `{p}:ended` | pub/sub channel | `<handle>|<id>` of every ending: a hint to wake the prompting node |
//!
//! # Compare-and-set
//!
//! A change of an authorization is computed in Rust from the record and its `ver`, and the
//! script writes it only if `ver` is unchanged; otherwise it answers with the current record,
//! and the change is computed again from that. The node keeps the record and `ver` of the
//! authorizations it wrote last, so its own next change costs one round trip; a change made
//! meanwhile by another node costs one more. PIN records are compared by value the same way.
//!
//! # Durability
//!
//! What survives a crash of Redis is what its persistence keeps: `appendonly yes` with
//! `appendfsync always` makes every acknowledged write durable (PIN lockouts, OTA counters);
//! `everysec` can lose the last second. Replication to replicas is asynchronous: a failover can
//! lose acknowledged writes unless `WAIT` is used (docs/deploy.md).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;

use super::records::{apply_ending, apply_update, CasRefusal};
use super::{
    check_change, check_creation, check_key, exhausted, expiry, outbox_for, sort_outbox, AuthState,
    AuthorizationRecord, AuthorizationUpdate, Creation, Ended, LockState, LockoutPolicy,
    OtaCounterKey, OutboxEntry, OutboxPolicy, PinAttempt, PinRecord, PurgeReport, Store,
    StoreError, StoreOptions, OTA_COUNTER_FIRST, OTA_COUNTER_MAX,
};

/// How often a compare-and-set is tried again after another writer got there first before
/// the caller is told. Every lost round is someone else's write, so the writers as a whole
/// always progress; the jittered pause after a loss ([`contended`]) spreads out a crowd on one
/// record (in practice: one subscriber's PIN attempts, a handful at most).
const CAS_ATTEMPTS: usize = 256;

/// Pauses after the `round`-th lost compare-and-set: a random share of up to `round` × 250 µs,
/// at most 10 ms.
async fn contended(round: usize) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let ceiling_us = (round as u64 * 250).min(10_000);
    let pause = u64::from(nanos) % ceiling_us.max(1);
    tokio::time::sleep(Duration::from_micros(pause)).await;
}

/// How long after its end an idempotency claim stays in Redis before its `PEXPIRE` takes it.
const CLAIM_GC_SLACK_MS: u64 = 60_000;

/// Most records the node remembers for its next compare-and-set.
const MAX_CACHED: usize = 1 << 20;

/// Connection settings of the Redis backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS.
    pub url: String,
    /// With `rediss://`: the PEM file of the only CA trusted for the server's certificate
    /// (`None`: the system's roots).
    pub ca_file: Option<std::path::PathBuf>,
    /// Every key starts with `{prefix}:`.
    pub prefix: String,
    /// Longest wait for one command's answer.
    pub response_timeout: Duration,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
}

/// What the Redis backend reports, when measured.
#[derive(Debug, Clone, Default)]
pub struct RedisObservers {
    /// Requests sent (commands, scripts, pipelines), health pings excluded.
    pub round_trips: Option<prometheus_client::metrics::counter::Counter>,
    /// 1 while Redis answers, 0 while it cannot be reached.
    pub up: Option<prometheus_client::metrics::gauge::Gauge>,
    /// Closed while Redis cannot be reached: the binds then answer `deliver_sm` with a
    /// temporary error, so the SMSC delivers the answers again once they can be applied.
    pub mo_gate: Option<crate::smpp::session::MoGate>,
}

/// Creates an authorization with its idempotency claim and its OTA counter in one step.
const CREATE: &str = r#"
-- KEYS: auth, idem, inflight, inflight:msisdn, ota
-- ARGV: json, id, has_idem, idem_gc_ms, has_ota, ota_first, ota_max, auth_key_prefix,
--       now_ms, claim_expires_ms
if ARGV[3] == '1' then
  local claim = redis.call('GET', KEYS[2])
  if claim then
    local other, expires = string.match(claim, '^(.*)|(%d+)$')
    if other and tonumber(expires) > tonumber(ARGV[9]) then
      local found = redis.call('HMGET', ARGV[8] .. other, 'rec', 'ota', 'ver')
      if found[1] then
        return {'existing', found[1], found[2] or '', found[3] or '0'}
      end
    end
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {'exists'}
end
local counter = ''
if ARGV[5] == '1' then
  local first = tonumber(ARGV[6])
  local mark = tonumber(redis.call('GET', KEYS[5]) or ARGV[6])
  if mark < first then mark = first end
  if mark + 1 > tonumber(ARGV[7]) + 1 then
    return {'exhausted'}
  end
  redis.call('SET', KEYS[5], string.format('%.0f', mark + 1))
  counter = string.format('%.0f', mark)
end
redis.call('HSET', KEYS[1], 'rec', ARGV[1], 'ver', '1', 'ota', counter, 'terminal', '0')
redis.call('SADD', KEYS[3], ARGV[2])
redis.call('SADD', KEYS[4], ARGV[2])
if ARGV[3] == '1' then
  redis.call('SET', KEYS[2], ARGV[2] .. '|' .. ARGV[10], 'PX', ARGV[4])
end
return {'created', counter}
"#;

/// Writes a changed record if nobody wrote it since `ver`; an ending also leaves the in-flight
/// sets, writes its outbox entries and starts the record's TTL.
const CHANGE: &str = r#"
-- KEYS: auth, inflight, inflight:msisdn, outbox
-- ARGV: expected_ver, json, terminal, ttl_ms, id, hint_channel, hint, [event_id, entry_json]...
local cur = redis.call('HMGET', KEYS[1], 'rec', 'ver', 'ota', 'terminal')
if not cur[1] then
  return {'missing'}
end
if cur[4] == '1' then
  return {'terminal', cur[1], cur[3] or '', cur[2]}
end
if cur[2] ~= ARGV[1] then
  return {'stale', cur[1], cur[3] or '', cur[2]}
end
local ver = tostring(tonumber(cur[2]) + 1)
redis.call('HSET', KEYS[1], 'rec', ARGV[2], 'ver', ver)
if ARGV[3] == '1' then
  redis.call('HSET', KEYS[1], 'terminal', '1')
  redis.call('SREM', KEYS[2], ARGV[5])
  redis.call('SREM', KEYS[3], ARGV[5])
  for i = 8, #ARGV, 2 do
    redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1])
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  redis.call('PUBLISH', ARGV[6], ARGV[7])
end
return {'ok', ver}
"#;

/// Advances an OTA high-water mark by `n` (or raises it to a floor) and answers the mark
/// before the change, or `exhausted`.
const OTA: &str = r#"
-- KEYS: ota
-- ARGV: mode ('reserve' n | 'floor' floor), value, first, max
local first = tonumber(ARGV[3])
local mark = tonumber(redis.call('GET', KEYS[1]) or ARGV[3])
if mark < first then mark = first end
local value = tonumber(ARGV[2])
if ARGV[1] == 'reserve' then
  if mark + value > tonumber(ARGV[4]) + 1 then
    return 'exhausted'
  end
  redis.call('SET', KEYS[1], string.format('%.0f', mark + value))
  return string.format('%.0f', mark)
end
if value > mark then
  redis.call('SET', KEYS[1], string.format('%.0f', value))
  mark = value
end
return string.format('%.0f', mark)
"#;

/// The records whose ids a set holds, in one round trip: `id, json, ota` per record still
/// stored (a member whose record expired is skipped).
const MEMBERS: &str = r#"
-- KEYS: set
-- ARGV: auth_key_prefix
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local r = redis.call('HMGET', ARGV[1] .. id, 'rec', 'ota')
  if r[1] then
    out[#out + 1] = id
    out[#out + 1] = r[1]
    out[#out + 1] = r[2] or ''
  end
end
return out
"#;

/// Sets a value if it still is what the caller read (`''`: absent).
const SWAP: &str = r#"
local cur = redis.call('GET', KEYS[1]) or ''
if cur ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"#;

/// PINGs Redis every [`HEALTH_INTERVAL`] until `stop`, noting the outcome.
async fn health(
    connection: ConnectionManager,
    failure: std::sync::Arc<Mutex<Option<String>>>,
    up: Option<prometheus_client::metrics::gauge::Gauge>,
    gate: Option<crate::smpp::session::MoGate>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(HEALTH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut con = connection.clone();
        let result: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut con).await;
        note(&failure, gate.as_ref(), &result);
        if let Some(up) = &up {
            up.set(i64::from(lock(&failure).is_none()));
        }
    }
}

/// What the compare-and-set script did.
enum Changed {
    /// Written; the record's new version.
    Written { ver: String },
    /// Someone wrote it since the version given: the current record, to compute again from.
    Stale(Versioned),
    /// It has ended already: the terminal record.
    Ended(Versioned),
    /// No such authorization.
    Missing,
}

/// One record as stored: the record and the version the next compare-and-set expects.
#[derive(Debug, Clone)]
struct Versioned {
    record: AuthorizationRecord,
    ver: String,
}

/// The shared store. Cheap to clone the connection; one value per gateway process.
pub struct RedisStore {
    options: StoreOptions,
    prefix: String,
    connection: ConnectionManager,
    create: Script,
    change: Script,
    ota: Script,
    swap: Script,
    members: Script,
    /// The record and version this node wrote last, per authorization in flight.
    cache: Mutex<HashMap<String, Versioned>>,
    /// The last connection failure, cleared by the next success: `/readyz` says not ready
    /// and starts are refused while Redis cannot be reached. A PING every
    /// [`HEALTH_INTERVAL`] keeps it current when no traffic does.
    failure: std::sync::Arc<Mutex<Option<String>>>,
    stop_health: tokio_util::sync::CancellationToken,
    /// Ids ended through other handles (other nodes), from the hint channel.
    hints: tokio::sync::broadcast::Sender<String>,
    /// Tags this handle's hints, so it does not hear its own endings.
    instance: String,
    round_trips: Option<prometheus_client::metrics::counter::Counter>,
    mo_gate: Option<crate::smpp::session::MoGate>,
}

/// How often an idle node checks that Redis answers.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);

/// Ending hints a slow reader may fall behind by before it loses some (it then relies on the
/// waiters' own re-read).
const HINT_BACKLOG: usize = 4096;

/// Subscribes to the ending hints until `stop`, forwarding the ids other handles (`own`
/// excepted) ended; resubscribes after a lost connection (hints published meanwhile are lost:
/// they are hints).
async fn follow_hints(
    client: redis::Client,
    channel: String,
    own: String,
    hints: tokio::sync::broadcast::Sender<String>,
    stop: tokio_util::sync::CancellationToken,
) {
    use futures_util::StreamExt;
    loop {
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            redis::RedisResult::Ok(pubsub)
        };
        let pubsub = tokio::select! {
            () = stop.cancelled() => return,
            p = subscribed => p,
        };
        match pubsub {
            Ok(mut pubsub) => {
                let mut messages = pubsub.on_message();
                loop {
                    let message = tokio::select! {
                        () = stop.cancelled() => return,
                        m = messages.next() => m,
                    };
                    let Some(message) = message else { break };
                    let Ok(hint) = message.get_payload::<String>() else {
                        continue;
                    };
                    if let Some((from, id)) = hint.split_once('|') {
                        if from != own {
                            let _ = hints.send(id.to_owned());
                        }
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "ending hints: subscribing failed"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(HEALTH_INTERVAL) => {}
        }
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.stop_health.cancel();
    }
}

/// Notes one round trip's outcome in `failure` and in the answers' gate.
fn note<T>(
    failure: &Mutex<Option<String>>,
    gate: Option<&crate::smpp::session::MoGate>,
    result: &redis::RedisResult<T>,
) {
    note_failure(failure, result);
    if let Some(gate) = gate {
        gate.set_closed(lock(failure).is_some());
    }
}

fn note_failure<T>(failure: &Mutex<Option<String>>, result: &redis::RedisResult<T>) {
    match result {
        Ok(_) => {
            let mut failure = lock(failure);
            if failure.is_some() {
                tracing::info!("Redis reachable again");
                *failure = None;
            }
        }
        Err(e)
            if e.is_io_error()
                || e.is_timeout()
                || e.is_connection_dropped()
                || e.is_connection_refusal() =>
        {
            let mut failure = lock(failure);
            if failure.is_none() {
                tracing::error!(error = %e, "Redis unreachable");
            }
            *failure = Some(format!("Redis: {e}"));
        }
        Err(_) => {}
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// The client for `settings`: plain TCP for `redis://`, TLS for `rediss://` (checked against
/// `ca_file` alone when one is given, so a private CA is not trusted for anything else).
fn client_for(settings: &RedisSettings) -> Result<redis::Client, StoreError> {
    let url = settings.url.as_str();
    let client = match &settings.ca_file {
        Some(path) if url.starts_with("rediss://") => {
            let root_cert = std::fs::read(path).map_err(|e| {
                StoreError::Backend(format!("Redis CA file {}: {e}", path.display()))
            })?;
            redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                },
            )
        }
        Some(_) => {
            return Err(StoreError::Backend(
                "a Redis CA file needs a rediss:// URL".into(),
            ))
        }
        None => redis::Client::open(url),
    };
    client.map_err(|e| StoreError::Backend(format!("Redis URL: {e}")))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl RedisStore {
    /// Connects (the first connection must succeed: a gateway that starts without its store
    /// would accept nothing) and checks that the prefix is usable as a hash tag.
    pub async fn connect(
        settings: &RedisSettings,
        options: StoreOptions,
    ) -> Result<Self, StoreError> {
        Self::connect_observed(settings, options, RedisObservers::default()).await
    }

    /// [`Self::connect`], feeding `observers`.
    pub async fn connect_observed(
        settings: &RedisSettings,
        options: StoreOptions,
        observers: RedisObservers,
    ) -> Result<Self, StoreError> {
        if settings.prefix.is_empty()
            || settings
                .prefix
                .chars()
                .any(|c| c == '{' || c == '}' || c.is_control() || c.is_whitespace())
        {
            return Err(StoreError::Backend(
                "the Redis key prefix must be non-empty, without braces or spaces".into(),
            ));
        }
        let client = client_for(settings)?;
        let hint_client = client.clone();
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(settings.response_timeout))
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let connection = ConnectionManager::new_with_config(hint_client, config)
            .await
            .map_err(|e| StoreError::Backend(format!("connecting to Redis: {e}")))?;
        let failure = std::sync::Arc::new(Mutex::new(None));
        let stop_health = tokio_util::sync::CancellationToken::new();
        tokio::spawn(health(
            connection.clone(),
            failure.clone(),
            observers.up,
            observers.mo_gate.clone(),
            stop_health.clone(),
        ));
        let (hints, _) = tokio::sync::broadcast::channel(HINT_BACKLOG);
        let channel = format!("{{{}}}:ended", settings.prefix);
        let instance = hex::encode(rand::random::<[u8; 8]>());
        tokio::spawn(follow_hints(
            client,
            channel,
            instance.clone(),
            hints.clone(),
            stop_health.clone(),
        ));
        Ok(Self {
            options,
            prefix: settings.prefix.clone(),
            connection,
            create: Script::new(CREATE),
            change: Script::new(CHANGE),
            ota: Script::new(OTA),
            swap: Script::new(SWAP),
            members: Script::new(MEMBERS),
            cache: Mutex::new(HashMap::new()),
            failure,
            stop_health,
            hints,
            instance,
            round_trips: observers.round_trips,
            mo_gate: observers.mo_gate,
        })
    }

    fn key(&self, parts: &[&str]) -> String {
        let mut k = format!("{{{}}}", self.prefix);
        for p in parts {
            k.push(':');
            k.push_str(p);
        }
        k
    }

    fn auth_key(&self, id: &str) -> String {
        self.key(&["auth", id])
    }

    fn inflight_key(&self) -> String {
        self.key(&["inflight"])
    }

    fn inflight_msisdn_key(&self, msisdn: &str) -> String {
        self.key(&["inflight", msisdn])
    }

    /// The pub/sub channel endings are announced on.
    fn hint_channel(&self) -> String {
        self.key(&["ended"])
    }

    fn outbox_key(&self) -> String {
        self.key(&["outbox"])
    }

    fn ota_key(&self, key: &OtaCounterKey) -> String {
        self.key(&[&key.storage_key()])
    }

    fn pin_key(&self, msisdn: &str) -> String {
        self.key(&["pin", msisdn])
    }

    /// Notes the outcome of a round trip for [`Store::failure`].
    fn seen<T>(&self, result: redis::RedisResult<T>) -> Result<T, StoreError> {
        if let Some(c) = &self.round_trips {
            c.inc();
        }
        note(&self.failure, self.mo_gate.as_ref(), &result);
        result.map_err(|e| StoreError::Backend(format!("Redis: {e}")))
    }

    fn decode_record(
        &self,
        json: &str,
        ota: &str,
        id: &str,
    ) -> Result<AuthorizationRecord, StoreError> {
        let mut record: AuthorizationRecord =
            serde_json::from_str(json).map_err(|e| StoreError::Corrupt {
                table: "authorizations",
                key: id.to_owned(),
                detail: e.to_string(),
            })?;
        if record.stk_counter.is_none() && !ota.is_empty() {
            record.stk_counter = Some(ota.parse().map_err(|_| StoreError::Corrupt {
                table: "authorizations",
                key: id.to_owned(),
                detail: "OTA counter is not a number".into(),
            })?);
        }
        Ok(record)
    }

    fn encode<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
        serde_json::to_string(value).map_err(|e| StoreError::Backend(e.to_string()))
    }

    /// The record and its version from Redis.
    async fn fetch(&self, id: &str) -> Result<Option<Versioned>, StoreError> {
        let mut con = self.connection.clone();
        let found: (Option<String>, Option<String>, Option<String>) = self.seen(
            redis::cmd("HMGET")
                .arg(self.auth_key(id))
                .arg("rec")
                .arg("ver")
                .arg("ota")
                .query_async(&mut con)
                .await,
        )?;
        match found {
            (Some(json), ver, ota) => Ok(Some(Versioned {
                record: self.decode_record(&json, ota.as_deref().unwrap_or(""), id)?,
                ver: ver.unwrap_or_else(|| "0".into()),
            })),
            _ => Ok(None),
        }
    }

    /// The record to compute a change from: the one this node wrote last, or Redis's.
    async fn current(&self, id: &str) -> Result<(Versioned, bool), StoreError> {
        if let Some(v) = lock(&self.cache).get(id).cloned() {
            return Ok((v, true));
        }
        match self.fetch(id).await? {
            Some(v) => Ok((v, false)),
            None => Err(StoreError::NotFound {
                table: "authorizations",
                key: id.to_owned(),
            }),
        }
    }

    fn remember(&self, id: &str, v: Versioned) {
        let mut cache = lock(&self.cache);
        if cache.len() >= MAX_CACHED && !cache.contains_key(id) {
            // Only a cost: the next change of a forgotten record reads it first.
            cache.clear();
        }
        cache.insert(id.to_owned(), v);
    }

    fn forget(&self, id: &str) {
        lock(&self.cache).remove(id);
    }

    /// Runs the compare-and-set script and reads its answer.
    async fn change(
        &self,
        record: &AuthorizationRecord,
        expected_ver: &str,
        terminal: bool,
        entries: &[OutboxEntry],
    ) -> Result<Changed, StoreError> {
        let json = Self::encode(record)?;
        let mut invocation = self.change.prepare_invoke();
        invocation
            .key(self.auth_key(&record.id))
            .key(self.inflight_key())
            .key(self.inflight_msisdn_key(&record.msisdn))
            .key(self.outbox_key())
            .arg(expected_ver)
            .arg(json)
            .arg(if terminal { "1" } else { "0" })
            .arg(self.options.terminal_ttl_ms.max(1))
            .arg(&record.id)
            .arg(self.hint_channel())
            .arg(format!("{}|{}", self.instance, record.id));
        for entry in entries {
            invocation.arg(&entry.event_id).arg(Self::encode(entry)?);
        }
        let mut con = self.connection.clone();
        let answer: Vec<String> = self.seen(invocation.invoke_async(&mut con).await)?;
        let current = || match answer.as_slice() {
            [_, json, ota, ver, ..] => Ok(Versioned {
                record: self.decode_record(json, ota, &record.id)?,
                ver: ver.clone(),
            }),
            _ => Err(StoreError::Backend(
                "short answer from the compare-and-set".into(),
            )),
        };
        match answer.first().map(String::as_str) {
            Some("ok") => Ok(Changed::Written {
                ver: answer.get(1).cloned().unwrap_or_default(),
            }),
            Some("stale") => Ok(Changed::Stale(current()?)),
            Some("terminal") => Ok(Changed::Ended(current()?)),
            Some("missing") => Ok(Changed::Missing),
            other => Err(StoreError::Backend(format!(
                "compare-and-set answered {other:?}"
            ))),
        }
    }

    /// The in-flight records whose ids the set `key` holds, sorted by id.
    async fn records_in(&self, key: String) -> Result<Vec<AuthorizationRecord>, StoreError> {
        let mut con = self.connection.clone();
        let flat: Vec<String> = self.seen(
            self.members
                .key(key)
                .arg(self.key(&["auth", ""]))
                .invoke_async(&mut con)
                .await,
        )?;
        let mut records = Vec::with_capacity(flat.len() / 3);
        for triple in flat.chunks_exact(3) {
            let record = self.decode_record(&triple[1], &triple[2], &triple[0])?;
            if !record.state.is_terminal() {
                records.push(record);
            }
        }
        records.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(records)
    }

    async fn ota_script(
        &self,
        key: &OtaCounterKey,
        mode: &str,
        value: u64,
    ) -> Result<u64, StoreError> {
        let mut con = self.connection.clone();
        let answer: String = self.seen(
            self.ota
                .key(self.ota_key(key))
                .arg(mode)
                .arg(value)
                .arg(OTA_COUNTER_FIRST)
                .arg(OTA_COUNTER_MAX)
                .invoke_async(&mut con)
                .await,
        )?;
        if answer == "exhausted" {
            return Err(exhausted(key));
        }
        answer
            .parse()
            .map_err(|_| StoreError::Backend(format!("OTA script answered {answer:?}")))
    }

    async fn pin_record(&self, msisdn: &str) -> Result<(String, PinRecord), StoreError> {
        let mut con = self.connection.clone();
        let raw: Option<String> = self.seen(
            redis::cmd("GET")
                .arg(self.pin_key(msisdn))
                .query_async(&mut con)
                .await,
        )?;
        let raw = raw.unwrap_or_default();
        let record = if raw.is_empty() {
            PinRecord::default()
        } else {
            serde_json::from_str(&raw).map_err(|e| StoreError::Corrupt {
                table: "pin",
                key: msisdn.to_owned(),
                detail: e.to_string(),
            })?
        };
        Ok((raw, record))
    }
}

#[async_trait::async_trait]
impl Store for RedisStore {
    async fn reserve_ota_counters(
        &self,
        key: &OtaCounterKey,
        n: u64,
    ) -> Result<Range<u64>, StoreError> {
        check_key("msisdn", &key.msisdn)?;
        if n == 0 {
            let mark = self.ota_high_water(key).await?;
            return Ok(mark..mark);
        }
        let start = self.ota_script(key, "reserve", n).await?;
        Ok(start..start + n)
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
        self.ota_script(key, "floor", floor).await
    }

    async fn ota_high_water(&self, key: &OtaCounterKey) -> Result<u64, StoreError> {
        check_key("msisdn", &key.msisdn)?;
        let mut con = self.connection.clone();
        let mark: Option<u64> = self.seen(
            redis::cmd("GET")
                .arg(self.ota_key(key))
                .query_async(&mut con)
                .await,
        )?;
        Ok(mark.unwrap_or(OTA_COUNTER_FIRST).max(OTA_COUNTER_FIRST))
    }

    async fn count_pin_attempt(
        &self,
        msisdn: &str,
        now_ms: u64,
        policy: &LockoutPolicy,
    ) -> Result<PinAttempt, StoreError> {
        check_key("msisdn", msisdn)?;
        for round in 0..CAS_ATTEMPTS {
            if round > 0 {
                contended(round).await;
            }
            let (raw, mut record) = self.pin_record(msisdn).await?;
            let attempt = record.count_attempt(now_ms, policy);
            let next = Self::encode(&record)?;
            if next == raw {
                // Refused while locked: nothing changed, nothing to write.
                return Ok(attempt);
            }
            let mut con = self.connection.clone();
            let swapped: i64 = self.seen(
                self.swap
                    .key(self.pin_key(msisdn))
                    .arg(&raw)
                    .arg(&next)
                    .invoke_async(&mut con)
                    .await,
            )?;
            if swapped == 1 {
                return Ok(attempt);
            }
        }
        Err(StoreError::Backend(
            "the PIN record kept changing under concurrent attempts".into(),
        ))
    }

    async fn reset_pin_failures(&self, msisdn: &str) -> Result<(), StoreError> {
        check_key("msisdn", msisdn)?;
        let mut con = self.connection.clone();
        let _: i64 = self.seen(
            redis::cmd("DEL")
                .arg(self.pin_key(msisdn))
                .query_async(&mut con)
                .await,
        )?;
        Ok(())
    }

    async fn lock_state(&self, msisdn: &str, now_ms: u64) -> Result<LockState, StoreError> {
        check_key("msisdn", msisdn)?;
        let (_, record) = self.pin_record(msisdn).await?;
        Ok(record.state(now_ms))
    }

    async fn create_authorization(
        &self,
        record: &AuthorizationRecord,
        now_ms: u64,
        idempotency_ttl_ms: u64,
        ota: Option<&OtaCounterKey>,
    ) -> Result<Creation, StoreError> {
        check_creation(record, ota)?;
        let mut stored = record.clone();
        if ota.is_some() {
            // The counter is reserved by the script and kept beside the record.
            stored.stk_counter = None;
        }
        let json = Self::encode(&stored)?;
        let idem_key = match &record.idempotency_key {
            Some(k) => self.key(&["idem", &record.client_id, k]),
            None => self.key(&["idem"]),
        };
        let ota_key = match ota {
            Some(k) => self.ota_key(k),
            None => self.key(&["ota"]),
        };
        let mut con = self.connection.clone();
        let answer: Vec<String> = self.seen(
            self.create
                .key(self.auth_key(&record.id))
                .key(idem_key)
                .key(self.inflight_key())
                .key(self.inflight_msisdn_key(&record.msisdn))
                .key(ota_key)
                .arg(json)
                .arg(&record.id)
                .arg(if record.idempotency_key.is_some() {
                    "1"
                } else {
                    "0"
                })
                // The claim's life is judged on the callers' clock (`now_ms`); Redis's own
                // expiry only collects it, a minute after.
                .arg(idempotency_ttl_ms.saturating_add(CLAIM_GC_SLACK_MS))
                .arg(if ota.is_some() { "1" } else { "0" })
                .arg(OTA_COUNTER_FIRST)
                .arg(OTA_COUNTER_MAX)
                .arg(self.key(&["auth", ""]))
                .arg(now_ms)
                .arg(expiry(now_ms, idempotency_ttl_ms))
                .invoke_async(&mut con)
                .await,
        )?;
        match answer.first().map(String::as_str) {
            Some("created") => {
                let counter = match answer.get(1).map(String::as_str) {
                    Some("") | None => None,
                    Some(c) => Some(c.parse::<u64>().map_err(|_| {
                        StoreError::Backend(format!("creation answered counter {c:?}"))
                    })?),
                };
                let mut kept = record.clone();
                if ota.is_some() {
                    kept.stk_counter = counter;
                }
                self.remember(
                    &record.id,
                    Versioned {
                        record: kept,
                        ver: "1".into(),
                    },
                );
                Ok(Creation::Created {
                    ota_counter: counter,
                })
            }
            Some("existing") => match answer.as_slice() {
                [_, json, ota, ..] => {
                    let other = self.decode_record(json, ota, &record.id)?;
                    Ok(Creation::Existing(Box::new(other)))
                }
                _ => Err(StoreError::Backend("short answer from the creation".into())),
            },
            Some("exists") => Err(StoreError::AlreadyExists {
                table: "authorizations",
                key: record.id.clone(),
            }),
            Some("exhausted") => Err(ota.map_or_else(
                || StoreError::Backend("counters exhausted without an OTA key".into()),
                exhausted,
            )),
            other => Err(StoreError::Backend(format!("creation answered {other:?}"))),
        }
    }

    async fn update_authorization_state(
        &self,
        id: &str,
        expected: &AuthState,
        update: &AuthorizationUpdate,
    ) -> Result<AuthorizationRecord, StoreError> {
        check_change(id, update, false)?;
        let (mut current, mut from_cache) = self.current(id).await?;
        for round in 0..CAS_ATTEMPTS {
            let mut next = current.record.clone();
            if let Err(CasRefusal::Conflict(actual)) = apply_update(&mut next, expected, update) {
                if from_cache {
                    // Another node may have moved it on: judge on what Redis holds.
                    self.forget(id);
                    current = self.current(id).await?.0;
                    from_cache = false;
                    continue;
                }
                return Err(StoreError::Conflict {
                    id: id.to_owned(),
                    actual,
                });
            }
            match self.change(&next, &current.ver, false, &[]).await? {
                Changed::Written { ver } => {
                    self.remember(
                        id,
                        Versioned {
                            record: next.clone(),
                            ver,
                        },
                    );
                    return Ok(next);
                }
                Changed::Stale(now) => {
                    current = now;
                    from_cache = false;
                    contended(round + 1).await;
                }
                Changed::Ended(ended) => {
                    self.forget(id);
                    return Err(StoreError::Conflict {
                        id: id.to_owned(),
                        actual: ended.record.state,
                    });
                }
                Changed::Missing => {
                    self.forget(id);
                    return Err(StoreError::NotFound {
                        table: "authorizations",
                        key: id.to_owned(),
                    });
                }
            }
        }
        Err(StoreError::Backend(format!(
            "authorization {id} kept changing under concurrent writers"
        )))
    }

    async fn end_authorization(
        &self,
        id: &str,
        update: &AuthorizationUpdate,
        outbox: &OutboxPolicy,
    ) -> Result<Ended, StoreError> {
        check_change(id, update, true)?;
        let (mut current, _) = self.current(id).await?;
        for round in 0..CAS_ATTEMPTS {
            let mut next = current.record.clone();
            if !apply_ending(&mut next, update) {
                if current.record.state.is_terminal() {
                    self.forget(id);
                    return Ok(Ended {
                        record: current.record,
                        won: false,
                        outbox: Vec::new(),
                    });
                }
                return Err(StoreError::Backend("an ending must be terminal".into()));
            }
            let entries = outbox_for(&next, outbox, update.now_ms);
            match self.change(&next, &current.ver, true, &entries).await? {
                Changed::Written { .. } => {
                    self.forget(id);
                    return Ok(Ended {
                        record: next,
                        won: true,
                        outbox: entries,
                    });
                }
                Changed::Stale(now) => {
                    current = now;
                    contended(round + 1).await;
                }
                Changed::Ended(ended) => {
                    self.forget(id);
                    return Ok(Ended {
                        record: ended.record,
                        won: false,
                        outbox: Vec::new(),
                    });
                }
                Changed::Missing => {
                    self.forget(id);
                    return Err(StoreError::NotFound {
                        table: "authorizations",
                        key: id.to_owned(),
                    });
                }
            }
        }
        Err(StoreError::Backend(format!(
            "authorization {id} kept changing under concurrent writers"
        )))
    }

    async fn get_authorization(&self, id: &str) -> Result<Option<AuthorizationRecord>, StoreError> {
        check_key("authorization id", id)?;
        Ok(self.fetch(id).await?.map(|v| v.record))
    }

    async fn list_in_flight(&self) -> Result<Vec<AuthorizationRecord>, StoreError> {
        self.records_in(self.inflight_key()).await
    }

    async fn in_flight_for_msisdn(
        &self,
        msisdn: &str,
    ) -> Result<Vec<AuthorizationRecord>, StoreError> {
        check_key("msisdn", msisdn)?;
        self.records_in(self.inflight_msisdn_key(msisdn)).await
    }

    async fn outbox_pending(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut con = self.connection.clone();
        let values: Vec<String> = self.seen(
            redis::cmd("HVALS")
                .arg(self.outbox_key())
                .query_async(&mut con)
                .await,
        )?;
        let mut entries = Vec::with_capacity(values.len());
        for v in values {
            entries.push(serde_json::from_str::<OutboxEntry>(&v).map_err(|e| {
                StoreError::Corrupt {
                    table: "outbox",
                    key: String::new(),
                    detail: e.to_string(),
                }
            })?);
        }
        sort_outbox(&mut entries);
        Ok(entries)
    }

    async fn outbox_remove(&self, event_id: &str) -> Result<(), StoreError> {
        let mut con = self.connection.clone();
        let _: i64 = self.seen(
            redis::cmd("HDEL")
                .arg(self.outbox_key())
                .arg(event_id)
                .query_async(&mut con)
                .await,
        )?;
        Ok(())
    }

    async fn purge_expired(&self, _now_ms: u64) -> Result<PurgeReport, StoreError> {
        // Terminal records and idempotency claims carry their own PEXPIRE.
        Ok(PurgeReport::default())
    }

    fn failure(&self) -> Option<String> {
        lock(&self.failure).clone()
    }

    fn ended_hints(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        Some(self.hints.subscribe())
    }

    async fn renew_lease(&self, node: &str, ttl_ms: u64) -> Result<(), StoreError> {
        check_key("node id", node)?;
        let mut con = self.connection.clone();
        let _: () = self.seen(
            redis::cmd("SET")
                .arg(self.key(&["node", node]))
                .arg("alive")
                .arg("PX")
                .arg(ttl_ms.max(1))
                .query_async(&mut con)
                .await,
        )?;
        Ok(())
    }

    async fn lease_alive(&self, node: &str) -> Result<bool, StoreError> {
        check_key("node id", node)?;
        let mut con = self.connection.clone();
        let n: i64 = self.seen(
            redis::cmd("EXISTS")
                .arg(self.key(&["node", node]))
                .query_async(&mut con)
                .await,
        )?;
        Ok(n == 1)
    }
}

/// A `redis-server` of our own on loopback: for tests, demos and `surge --store redis`, which
/// need a real server and must not depend on one being up. Stopped (SIGKILL) when dropped.
#[derive(Debug)]
pub struct LocalRedis {
    child: std::process::Child,
    port: u16,
    tls_port: Option<u16>,
    dir: std::path::PathBuf,
}

impl LocalRedis {
    /// Starts `redis-server` (from `PATH`) on a free loopback port with its files in `dir`:
    /// append-only file with `appendfsync always`, so every acknowledged write survives a kill
    /// of the server. Fails with a clear message when the binary is missing or the server does
    /// not answer PING within 10 s.
    pub fn start(dir: &std::path::Path) -> Result<Self, StoreError> {
        Self::start_on(dir, None)
    }

    /// The same on a given port (a restart on the same files and address).
    pub fn start_on(dir: &std::path::Path, port: Option<u16>) -> Result<Self, StoreError> {
        Self::launch(dir, port, None)
    }

    /// [`Self::start`], with a TLS port besides (server certificate and key in PEM, no client
    /// certificates asked for); see [`Self::tls_url`].
    pub fn start_with_tls(
        dir: &std::path::Path,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Result<Self, StoreError> {
        Self::launch(dir, None, Some((cert, key)))
    }

    fn launch(
        dir: &std::path::Path,
        port: Option<u16>,
        tls: Option<(&std::path::Path, &std::path::Path)>,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)?;
        let free_port = || -> Result<u16, StoreError> {
            Ok(std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port())
        };
        let port = match port {
            Some(p) => p,
            None => free_port()?,
        };
        let mut command = std::process::Command::new("redis-server");
        let mut tls_port = None;
        if let Some((cert, key)) = tls {
            let p = free_port()?;
            tls_port = Some(p);
            command
                .args(["--tls-port", &p.to_string(), "--tls-auth-clients", "no"])
                .arg("--tls-cert-file")
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key);
        }
        let child = command
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .args([
                "--protected-mode",
                "yes",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ])
            .arg("--dir")
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .map_err(|e| {
                StoreError::Backend(format!(
                    "starting redis-server (Debian package redis-server; scripts/test.sh \
                     installs it): {e}"
                ))
            })?;
        let server = Self {
            child,
            port,
            tls_port,
            dir: dir.to_owned(),
        };
        let until = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if server.ping() {
                return Ok(server);
            }
            if std::time::Instant::now() > until {
                return Err(StoreError::Backend(format!(
                    "redis-server on port {port} did not answer PING within 10 s"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `rediss://localhost:<tls port>/` when started with TLS (the name the test certificate
    /// is issued for).
    pub fn tls_url(&self) -> Option<String> {
        self.tls_port.map(|p| format!("rediss://localhost:{p}/"))
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// SIGKILL and wait: nothing flushed beyond what `appendfsync always` already wrote.
    pub fn kill(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for LocalRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use super::super::conformance::{redis_server, redis_settings, OPTIONS};
    use super::super::records::tests::sample;
    use super::super::TerminalStatus;
    use super::*;

    const POLICY: LockoutPolicy = LockoutPolicy {
        max_failures: 3,
        lockout_ms: 60_000,
        permanent_after_lockouts: None,
    };

    async fn handle(server: &LocalRedis) -> Arc<RedisStore> {
        Arc::new(
            RedisStore::connect(&redis_settings(server, "race"), OPTIONS)
                .await
                .unwrap(),
        )
    }

    async fn raw(server: &LocalRedis, args: &[&str]) -> redis::Value {
        let client = redis::Client::open(server.url()).unwrap();
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query_async(&mut con).await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_nodes_racing_one_cas_one_pin_counter_and_one_key_agree() {
        let dir = tempfile::tempdir().unwrap();
        let server = redis_server(&dir);
        let (a, b) = (handle(&server).await, handle(&server).await);
        let shared = AuthorizationRecord {
            id: "shared".into(),
            idempotency_key: None,
            ..sample()
        };
        a.create_authorization(&shared, 0, 1_000, None)
            .await
            .unwrap();
        // Node B read it (it did not write it: no cached version), node A wrote it last.
        assert!(b.get_authorization("shared").await.unwrap().is_some());
        let step = AuthorizationUpdate::to(AuthState::Prompted, 1);
        let mut tasks = Vec::new();
        for store in [a.clone(), b.clone(), a.clone(), b.clone()] {
            let step = step.clone();
            let expected = shared.state.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .update_authorization_state("shared", &expected, &step)
                    .await
                    .is_ok()
            }));
        }
        let mut won = 0;
        for t in tasks {
            won += usize::from(t.await.unwrap());
        }
        assert_eq!(won, 1, "one compare-and-set of the same step wins");

        // PIN attempts of one subscriber from both nodes: every one counted.
        let mut tasks = Vec::new();
        for i in 0..2u64 {
            let store = if i == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                store
                    .count_pin_attempt("48600000001", 10, &POLICY)
                    .await
                    .unwrap()
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(
            b.lock_state("48600000001", 10).await.unwrap(),
            LockState::Open { failures: 2 }
        );
        a.count_pin_attempt("48600000001", 11, &POLICY)
            .await
            .unwrap();
        assert!(matches!(
            b.lock_state("48600000001", 12).await.unwrap(),
            LockState::Locked { .. }
        ));

        // One idempotency key from both nodes: one creation, the other pointed at it.
        let keyed = |id: &str| AuthorizationRecord {
            id: id.into(),
            idempotency_key: Some("req-7".into()),
            ..sample()
        };
        let (from_a, from_b) = (keyed("from-a"), keyed("from-b"));
        let (x, y) = tokio::join!(
            a.create_authorization(&from_a, 0, 60_000, None),
            b.create_authorization(&from_b, 0, 60_000, None)
        );
        let outcomes = [x.unwrap(), y.unwrap()];
        let created = outcomes
            .iter()
            .filter(|c| matches!(c, Creation::Created { .. }))
            .count();
        assert_eq!(created, 1, "{outcomes:?}");
        let existing: Vec<_> = outcomes
            .iter()
            .filter_map(|c| match c {
                Creation::Existing(r) => Some(r.id.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(existing.len(), 1);
        assert!(a.get_authorization(&existing[0]).await.unwrap().is_some());

        // Both nodes end the shared one: one ending wins, both see the same terminal record.
        let ending = |s: TerminalStatus| AuthorizationUpdate::to(AuthState::terminal(s, None), 5);
        let (approve, deny) = (
            ending(TerminalStatus::Approved),
            ending(TerminalStatus::Denied),
        );
        let quiet = OutboxPolicy::default();
        let (ea, eb) = tokio::join!(
            a.end_authorization("shared", &approve, &quiet),
            b.end_authorization("shared", &deny, &quiet)
        );
        let (ea, eb) = (ea.unwrap(), eb.unwrap());
        assert_eq!(u8::from(ea.won) + u8::from(eb.won), 1);
        assert_eq!(ea.record.state, eb.record.state);
    }

    #[tokio::test]
    async fn ended_records_and_claims_expire_by_themselves_and_in_flight_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let server = redis_server(&dir);
        let store = handle(&server).await;
        for id in ["ends", "stays"] {
            let r = AuthorizationRecord {
                id: id.into(),
                idempotency_key: Some(format!("k-{id}")),
                ..sample()
            };
            store
                .create_authorization(&r, 0, 60_000, None)
                .await
                .unwrap();
        }
        store
            .end_authorization(
                "ends",
                &AuthorizationUpdate::to(AuthState::terminal(TerminalStatus::Expired, None), 1),
                &OutboxPolicy::default(),
            )
            .await
            .unwrap();
        let ttl = |key: String| {
            let server = &server;
            async move {
                match raw(server, &["PTTL", &key]).await {
                    redis::Value::Int(n) => n,
                    other => panic!("{other:?}"),
                }
            }
        };
        let ended = ttl(store.auth_key("ends")).await;
        assert!(
            ended > 0 && ended <= OPTIONS.terminal_ttl_ms as i64,
            "{ended}"
        );
        assert_eq!(ttl(store.auth_key("stays")).await, -1, "in flight: no TTL");
        let claim = ttl(store.key(&["idem", &sample().client_id, "k-stays"])).await;
        assert!(claim > 60_000, "{claim}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lockouts_and_ota_counters_survive_a_redis_kill_and_the_outage_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let server = redis_server(&dir);
        let port = server.port();
        let store = handle(&server).await;
        let card = OtaCounterKey::new("48600000002", [0xB0, 0, 0x10], 1);
        assert_eq!(store.reserve_ota_counters(&card, 10).await.unwrap(), 1..11);
        for t in 0..3 {
            store
                .count_pin_attempt("48600000002", 100 + t, &POLICY)
                .await
                .unwrap();
        }
        server.kill();
        // Redis is gone: a clear error, and the store says it is not usable.
        let err = store.ota_high_water(&card).await.unwrap_err();
        assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
        assert!(store.failure().is_some());

        let again = LocalRedis::start_on(dir.path(), Some(port)).unwrap();
        // The connection manager reconnects on its own; allow it a few tries.
        let mut mark = None;
        for _ in 0..50 {
            if let Ok(m) = store.ota_high_water(&card).await {
                mark = Some(m);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(mark, Some(11), "the OTA counter survived");
        assert!(store.failure().is_none(), "reachable again");
        assert!(matches!(
            store.lock_state("48600000002", 200).await.unwrap(),
            LockState::Locked { .. }
        ));
        assert_eq!(store.reserve_ota_counters(&card, 1).await.unwrap(), 11..12);
        drop(again);
    }

    /// The test certificates shared with the HTTPS tests (see their README).
    fn tls_fixture(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../load-tests/tests/fixtures/tls")
            .join(name)
    }

    #[tokio::test]
    async fn over_tls_the_store_works_through_its_ca_and_refuses_another_ca() {
        let dir = tempfile::tempdir().unwrap();
        let server = LocalRedis::start_with_tls(
            dir.path(),
            &tls_fixture("server.pem"),
            &tls_fixture("server.key"),
        )
        .unwrap_or_else(|e| panic!("redis-server with TLS (scripts/test.sh installs it): {e}"));
        let url = server.tls_url().unwrap();
        let settings = |ca: &str| RedisSettings {
            url: url.clone(),
            ca_file: Some(tls_fixture(ca)),
            connect_timeout: Duration::from_secs(2),
            ..redis_settings(&server, "tls")
        };

        let store = RedisStore::connect(&settings("ca.pem"), OPTIONS)
            .await
            .unwrap();
        let record = AuthorizationRecord {
            id: "over-tls".into(),
            ..sample()
        };
        store
            .create_authorization(&record, 0, 1_000, None)
            .await
            .unwrap();
        let back = store.get_authorization("over-tls").await.unwrap().unwrap();
        assert_eq!(back.msisdn, record.msisdn);
        // The plain port sees what went through TLS: one server, not a stand-in.
        assert_eq!(
            raw(&server, &["EXISTS", &store.auth_key("over-tls")]).await,
            redis::Value::Int(1)
        );

        let refused = RedisStore::connect(&settings("other-ca.pem"), OPTIONS).await;
        let err = refused.expect_err("a server certificate from another CA is refused");
        assert!(err.to_string().contains("connecting to Redis"), "{err}");
    }
}
