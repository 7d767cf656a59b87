//! The records the store keeps and the pure rules that change them.
//!
//! Every backend loads a record, applies one of the functions here and writes it back inside one
//! atomic step (a redb write transaction, a mutex, later a Redis Lua script), so the rules for PIN
//! lockout and for authorization state transitions live once, here, and the backends only differ
//! in how they make the read-modify-write atomic and durable. Records are serde types encoded as
//! JSON, which a Redis backend can store as is and an operator can read with `redis-cli`.

use serde::{Deserialize, Serialize};

/// The first counter value handed out for a key set never used before: cards start at 0 and
/// accept only counters above the stored one.
pub const OTA_COUNTER_FIRST: u64 = 1;

/// The largest OTA counter: the CNTR field of a TS 102 225 command packet is 5 bytes.
pub const OTA_COUNTER_MAX: u64 = 0xFF_FFFF_FFFF;

/// Longest MSISDN, client id, authorization id or idempotency key accepted as part of a key.
pub const MAX_KEY_COMPONENT_LEN: usize = 255;

/// Which OTA counter: one per subscriber card, applet (TAR) and key set (KIc/KID version).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OtaCounterKey {
    pub msisdn: String,
    pub tar: [u8; 3],
    pub key_set: u8,
}

impl OtaCounterKey {
    pub fn new(msisdn: impl Into<String>, tar: [u8; 3], key_set: u8) -> Self {
        Self {
            msisdn: msisdn.into(),
            tar,
            key_set,
        }
    }

    /// The key under which the high-water mark is stored, identical in every backend
    /// (`ota:<msisdn>:<tar hex>:<key set hex>`), so a migration is a copy.
    pub fn storage_key(&self) -> String {
        format!(
            "ota:{}:{}:{:02x}",
            self.msisdn,
            hex::encode(self.tar),
            self.key_set
        )
    }
}

/// How a prompt reaches the subscriber.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Ussd,
    Stk,
}

/// Level of assurance: LoA2 is Yes/No consent, LoA3 adds a PIN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Loa {
    Loa2,
    Loa3,
}

/// How an authorization ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TerminalStatus {
    Approved,
    Denied,
    Expired,
    Failed,
}

/// Where an authorization is in its life. Every state but `Terminal` is in flight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthState {
    Created,
    Routed,
    Prompted,
    Answered,
    Terminal {
        status: TerminalStatus,
        /// Machine-readable reason for `failed`/`expired` (e.g. `smsc_unavailable`,
        /// `gateway_restart`); never a PIN or key material.
        reason: Option<String>,
    },
}

impl AuthState {
    pub fn is_terminal(&self) -> bool {
        matches!(self, AuthState::Terminal { .. })
    }

    /// A bounded label, safe for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            AuthState::Created => "created",
            AuthState::Routed => "routed",
            AuthState::Prompted => "prompted",
            AuthState::Answered => "answered",
            AuthState::Terminal { .. } => "terminal",
        }
    }

    pub fn terminal(status: TerminalStatus, reason: Option<&str>) -> Self {
        AuthState::Terminal {
            status,
            reason: reason.map(str::to_owned),
        }
    }
}

/// One authorization as the store keeps it. Holds no PIN and no key: only what is needed to
/// resume or end the authorization after a restart and to answer the client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationRecord {
    /// Opaque, unique, ULID-like (sortable by creation time is convenient, not required).
    pub id: String,
    pub client_id: String,
    pub msisdn: String,
    /// Operator name as in the routing configuration.
    pub operator: String,
    pub channel: Channel,
    pub loa_requested: Loa,
    pub loa_achieved: Option<Loa>,
    pub state: AuthState,
    /// Unix milliseconds.
    pub created_ms: u64,
    pub deadline_ms: u64,
    pub updated_ms: u64,
    /// The OTA counter of the STK command packet, to match the card's response.
    pub stk_counter: Option<u64>,
    /// Transaction id / challenge the card MACs.
    #[serde(with = "hex_bytes")]
    pub challenge: Vec<u8>,
    /// The STK request's transaction id (with `challenge` and `stk_counter`, what checking the
    /// card's answer after a restart needs; the keys come from the subscriber registry).
    #[serde(default, with = "hex_bytes")]
    pub txid: Vec<u8>,
    /// The USSD dialog's session key, stored before the prompt goes out so a restart can still
    /// match the answer.
    #[serde(default)]
    pub ussd_key: Option<u16>,
    /// The card's MAC over the challenge, once answered.
    #[serde(with = "hex_bytes_opt")]
    pub proof: Option<Vec<u8>>,
    pub callback_url: Option<String>,
    pub idempotency_key: Option<String>,
    /// Unix milliseconds when the SMSC accepted the prompt (the step to `Prompted`): with
    /// `created_ms`, the gateway's own part of the way out.
    #[serde(default)]
    pub prompted_ms: Option<u64>,
    /// Where Keycloak waits for the result, when it asked for this authorization: stored with
    /// the record so that its callback is written to the outbox with the terminal state and
    /// goes out after a restart too.
    #[serde(default)]
    pub keycloak: Option<KeycloakFollow>,
    /// The node that created it (several nodes on one store): at start a node takes over its
    /// own in-flight records and those of nodes whose lease ran out, never a live node's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// Keycloak's follow state of one CIBA request: its callback target and the bearer token to
/// call it with, which expires at `deadline_ms`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeycloakFollow {
    pub callback_url: String,
    /// The `auth_req_id` token Keycloak sent; it authorizes the callback.
    pub token: String,
    /// Unix milliseconds: the token's `exp`; no callback after it.
    pub deadline_ms: u64,
    /// Unix milliseconds: Keycloak must have stored the request before it can take the
    /// callback, so none goes out earlier.
    pub not_before_ms: u64,
}

impl std::fmt::Debug for KeycloakFollow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a credential: never in a log line.
        f.debug_struct("KeycloakFollow")
            .field("callback_url", &self.callback_url)
            .field("deadline_ms", &self.deadline_ms)
            .field("not_before_ms", &self.not_before_ms)
            .finish_non_exhaustive()
    }
}

/// Who hears of an ending, written to the outbox in the same atomic step as the terminal state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutboxKind {
    /// The client's `callback_url`.
    Callback,
    /// Keycloak's CIBA callback.
    Keycloak,
    /// The audit log line.
    Audit,
}

impl OutboxKind {
    pub fn name(self) -> &'static str {
        match self {
            OutboxKind::Callback => "callback",
            OutboxKind::Keycloak => "keycloak",
            OutboxKind::Audit => "audit",
        }
    }
}

/// One delivery owed for an ended authorization. The body is rendered from the terminal record
/// at delivery time, so every delivery says what `GET` says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Stable across redeliveries (`<authorization id>:<kind>`): receivers drop duplicates by it.
    pub event_id: String,
    pub authorization_id: String,
    pub kind: OutboxKind,
    /// Unix milliseconds: written with the terminal state.
    pub created_ms: u64,
    /// Unix milliseconds: not delivered before.
    pub not_before_ms: u64,
    /// Unix milliseconds: given up after.
    pub deadline_ms: u64,
}

/// What the outbox gets with a terminal state (the same rule in every backend).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutboxPolicy {
    /// Write an audit entry.
    pub audit: bool,
    /// How long a client callback is tried after the ending.
    pub callback_window_ms: u64,
}

impl Default for OutboxPolicy {
    fn default() -> Self {
        Self {
            audit: false,
            callback_window_ms: 60_000,
        }
    }
}

/// The entries an ending owes under `policy`: the client callback when the record has a URL,
/// Keycloak's when Keycloak follows it, the audit line when auditing.
pub fn outbox_for(
    record: &AuthorizationRecord,
    policy: &OutboxPolicy,
    now_ms: u64,
) -> Vec<OutboxEntry> {
    let entry = |kind: OutboxKind, not_before_ms: u64, deadline_ms: u64| OutboxEntry {
        event_id: format!("{}:{}", record.id, kind.name()),
        authorization_id: record.id.clone(),
        kind,
        created_ms: now_ms,
        not_before_ms,
        deadline_ms,
    };
    let mut entries = Vec::new();
    if record.callback_url.is_some() {
        entries.push(entry(
            OutboxKind::Callback,
            now_ms,
            now_ms.saturating_add(policy.callback_window_ms),
        ));
    }
    if let Some(kc) = &record.keycloak {
        entries.push(entry(
            OutboxKind::Keycloak,
            kc.not_before_ms,
            kc.deadline_ms,
        ));
    }
    if policy.audit {
        // The audit line is owed whatever the delay.
        entries.push(entry(OutboxKind::Audit, now_ms, u64::MAX));
    }
    entries
}

/// Answer of [`Store::create_authorization`](super::Store::create_authorization).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Creation {
    /// Created, with its idempotency claim when it has a key, and the OTA counter reserved
    /// for it when one was asked for.
    Created { ota_counter: Option<u64> },
    /// A live claim of the same (client, key) names this authorization: nothing was written.
    Existing(Box<AuthorizationRecord>),
}

/// Answer of [`Store::end_authorization`](super::Store::end_authorization).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ended {
    /// The terminal record: this ending's, or the earlier one that won.
    pub record: AuthorizationRecord,
    /// Whether this call ended it (and wrote `outbox`).
    pub won: bool,
    /// The outbox entries written with the terminal state (empty unless `won`).
    pub outbox: Vec<OutboxEntry>,
}

/// Answer of [`Store::count_pin_attempt`](super::Store::count_pin_attempt).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinAttempt {
    /// Locked or blocked: the PIN must not be checked, nothing was counted.
    Refused(LockState),
    /// Counted as a failure (durably) before the check; the state if it stays one. A right PIN
    /// then clears the count with [`Store::reset_pin_failures`](super::Store::reset_pin_failures).
    Counted(LockState),
}

/// The change a compare-and-set applies: the new state, the time, and fields learned on the way
/// (`None` leaves a field as it is).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorizationUpdate {
    pub state: AuthState,
    pub now_ms: u64,
    pub loa_achieved: Option<Loa>,
    pub stk_counter: Option<u64>,
    pub proof: Option<Vec<u8>>,
    /// A USSD session key (a fallback prompt's).
    pub ussd_key: Option<u16>,
}

impl AuthorizationUpdate {
    pub fn to(state: AuthState, now_ms: u64) -> Self {
        Self {
            state,
            now_ms,
            loa_achieved: None,
            stk_counter: None,
            proof: None,
            ussd_key: None,
        }
    }

    pub fn with_ussd_key(mut self, key: u16) -> Self {
        self.ussd_key = Some(key);
        self
    }

    pub fn with_loa_achieved(mut self, loa: Loa) -> Self {
        self.loa_achieved = Some(loa);
        self
    }

    pub fn with_stk_counter(mut self, counter: u64) -> Self {
        self.stk_counter = Some(counter);
        self
    }

    pub fn with_proof(mut self, proof: Vec<u8>) -> Self {
        self.proof = Some(proof);
        self
    }
}

/// Why a compare-and-set did not apply, before it becomes a `StoreError`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CasRefusal {
    /// The stored state is not the expected one, or is terminal (terminal states are final).
    Conflict(AuthState),
}

/// The compare-and-set rule shared by all backends: the stored state must equal `expected` and
/// must not be terminal, so each authorization gets exactly one terminal status.
pub(crate) fn apply_update(
    record: &mut AuthorizationRecord,
    expected: &AuthState,
    update: &AuthorizationUpdate,
) -> Result<(), CasRefusal> {
    if record.state != *expected || record.state.is_terminal() {
        return Err(CasRefusal::Conflict(record.state.clone()));
    }
    if update.state == AuthState::Prompted && record.prompted_ms.is_none() {
        record.prompted_ms = Some(update.now_ms);
    }
    record.state = update.state.clone();
    record.updated_ms = record.updated_ms.max(update.now_ms);
    if let Some(loa) = update.loa_achieved {
        record.loa_achieved = Some(loa);
    }
    if let Some(counter) = update.stk_counter {
        record.stk_counter = Some(counter);
    }
    if let Some(proof) = &update.proof {
        record.proof = Some(proof.clone());
    }
    if let Some(key) = update.ussd_key {
        record.ussd_key = Some(key);
    }
    Ok(())
}

/// Ends `record` with the terminal `update` from whatever state it is in; `false` (and no
/// change) when it has ended already: the first ending wins, once.
pub(crate) fn apply_ending(record: &mut AuthorizationRecord, update: &AuthorizationUpdate) -> bool {
    if record.state.is_terminal() || !update.state.is_terminal() {
        return false;
    }
    let expected = record.state.clone();
    apply_update(record, &expected, update).is_ok()
}

/// Lockout rule for PINs checked by the gateway (USSD LoA3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockoutPolicy {
    /// Wrong PINs in a row that lock the subscriber.
    pub max_failures: u32,
    /// How long a temporary lock lasts.
    pub lockout_ms: u64,
    /// After this many temporary locks the subscriber stays blocked until
    /// [`Store::reset_pin_failures`](super::Store::reset_pin_failures) (support desk), so an
    /// attacker does not get `max_failures` guesses per `lockout_ms` forever. `None`: never.
    pub permanent_after_lockouts: Option<u32>,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        Self {
            max_failures: 3,
            lockout_ms: 15 * 60 * 1000,
            permanent_after_lockouts: Some(3),
        }
    }
}

/// What the PIN check may do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockState {
    /// PIN entry allowed; `failures` wrong PINs in a row so far.
    Open { failures: u32 },
    /// Temporarily locked until `until_ms` (unix ms).
    Locked { until_ms: u64 },
    /// Locked until reset by an operator.
    Blocked,
}

impl PinRecord {
    /// The rule of [`PinAttempt`]: refuse while locked, else count this attempt as a failure.
    pub fn count_attempt(&mut self, now_ms: u64, policy: &LockoutPolicy) -> PinAttempt {
        match self.state(now_ms) {
            LockState::Open { .. } => PinAttempt::Counted(self.record_failure(now_ms, policy)),
            closed => PinAttempt::Refused(closed),
        }
    }
}

/// Stored per MSISDN; absent means no failures.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinRecord {
    pub failures: u32,
    pub lockouts: u32,
    pub locked_until_ms: Option<u64>,
    pub blocked: bool,
    pub last_failure_ms: u64,
}

impl PinRecord {
    pub fn state(&self, now_ms: u64) -> LockState {
        if self.blocked {
            return LockState::Blocked;
        }
        match self.locked_until_ms {
            Some(until_ms) if now_ms < until_ms => LockState::Locked { until_ms },
            // The lock ran out: a fresh series of attempts.
            Some(_) => LockState::Open { failures: 0 },
            None => LockState::Open {
                failures: self.failures,
            },
        }
    }

    /// Counts one wrong PIN. While locked nothing changes: the caller should not have checked a
    /// PIN at all, and counting would only lengthen the lock an attacker can trigger on purpose.
    pub fn record_failure(&mut self, now_ms: u64, policy: &LockoutPolicy) -> LockState {
        if !matches!(self.state(now_ms), LockState::Open { .. }) {
            return self.state(now_ms);
        }
        if self.locked_until_ms.is_some() {
            self.locked_until_ms = None;
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        self.last_failure_ms = now_ms;
        if self.failures >= policy.max_failures.max(1) {
            self.lockouts = self.lockouts.saturating_add(1);
            if policy
                .permanent_after_lockouts
                .is_some_and(|limit| self.lockouts >= limit)
            {
                self.blocked = true;
            } else {
                self.locked_until_ms = Some(now_ms.saturating_add(policy.lockout_ms));
            }
        }
        self.state(now_ms)
    }
}

/// Stored per (client, idempotency key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct IdempotencyEntry {
    pub auth_id: String,
    pub expires_ms: u64,
}

/// What [`Store::purge_expired`](super::Store::purge_expired) removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PurgeReport {
    pub authorizations: usize,
    pub idempotency_keys: usize,
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        hex::decode(text).map_err(serde::de::Error::custom)
    }
}

mod hex_bytes_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(bytes) => s.serialize_some(&hex::encode(bytes)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(text) => hex::decode(text)
                .map(Some)
                .map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;

    const POLICY: LockoutPolicy = LockoutPolicy {
        max_failures: 3,
        lockout_ms: 1_000,
        permanent_after_lockouts: Some(2),
    };

    #[test]
    fn third_wrong_pin_locks_until_the_lockout_ends() {
        let mut pin = PinRecord::default();
        assert_eq!(
            pin.record_failure(10, &POLICY),
            LockState::Open { failures: 1 }
        );
        assert_eq!(
            pin.record_failure(20, &POLICY),
            LockState::Open { failures: 2 }
        );
        assert_eq!(
            pin.record_failure(30, &POLICY),
            LockState::Locked { until_ms: 1_030 }
        );
        assert_eq!(pin.state(1_029), LockState::Locked { until_ms: 1_030 });
        assert_eq!(pin.state(1_030), LockState::Open { failures: 0 });
    }

    #[test]
    fn failures_while_locked_do_not_extend_the_lock() {
        let mut pin = PinRecord::default();
        for t in 0..3 {
            pin.record_failure(t, &POLICY);
        }
        assert_eq!(
            pin.record_failure(500, &POLICY),
            LockState::Locked { until_ms: 1_002 }
        );
        assert_eq!(pin.lockouts, 1);
    }

    #[test]
    fn repeated_lockouts_block_permanently() {
        let mut pin = PinRecord::default();
        for t in 0..3 {
            pin.record_failure(t, &POLICY);
        }
        // After the first lock expires, a new series starts from zero.
        assert_eq!(
            pin.record_failure(2_000, &POLICY),
            LockState::Open { failures: 1 }
        );
        pin.record_failure(2_001, &POLICY);
        assert_eq!(pin.record_failure(2_002, &POLICY), LockState::Blocked);
        assert_eq!(pin.state(u64::MAX), LockState::Blocked);
    }

    #[test]
    fn storage_key_is_stable() {
        let key = OtaCounterKey::new("46700000001", [0xB0, 0x00, 0x10], 1);
        assert_eq!(key.storage_key(), "ota:46700000001:b00010:01");
    }

    #[test]
    fn terminal_state_is_final_even_when_expected() {
        let mut record = sample();
        let done = AuthState::terminal(TerminalStatus::Denied, None);
        record.state = done.clone();
        let update =
            AuthorizationUpdate::to(AuthState::terminal(TerminalStatus::Approved, None), 9);
        assert_eq!(
            apply_update(&mut record, &done, &update),
            Err(CasRefusal::Conflict(done))
        );
    }

    #[test]
    fn record_json_round_trips_with_hex_bytes() {
        let mut record = sample();
        record.proof = Some(vec![0xde, 0xad]);
        let json = serde_json::to_string(&record).unwrap();
        assert!(json.contains("\"proof\":\"dead\""), "{json}");
        assert_eq!(
            serde_json::from_str::<AuthorizationRecord>(&json).unwrap(),
            record
        );
    }

    pub(crate) fn sample() -> AuthorizationRecord {
        AuthorizationRecord {
            id: "01HZX0000000000000000000AA".into(),
            client_id: "rp-1".into(),
            msisdn: "46700000001".into(),
            operator: "op-a".into(),
            channel: Channel::Stk,
            loa_requested: Loa::Loa3,
            loa_achieved: None,
            state: AuthState::Created,
            created_ms: 1,
            deadline_ms: 120_001,
            updated_ms: 1,
            stk_counter: None,
            challenge: vec![1, 2, 3, 4],
            txid: Vec::new(),
            ussd_key: None,
            proof: None,
            callback_url: Some("https://rp.example/cb".into()),
            idempotency_key: Some("req-1".into()),
            prompted_ms: None,
            keycloak: None,
            node: None,
        }
    }
}
