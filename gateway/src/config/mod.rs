//! The gateway's configuration: typed sections, their defaults, loading and validation.
//!
//! Data flow: [`GatewayConfig::load`] reads the TOML file into a span-keeping document,
//! applies [`Override`]s (environment `GATEWAY_<SECTION>_<KEY>` and repeated
//! `--set section.key=value` flags, flags last) to that document, deserializes it into
//! [`GatewayConfig`] (`deny_unknown_fields` everywhere) and runs [`GatewayConfig::validate`].
//! Every failure is one [`ConfigError`] naming the key, the line (or the environment variable
//! or flag the value came from) and what is wrong; the binary exits with [`EXIT_CONFIG`] (64,
//! `EX_USAGE`). Nothing falls back to defaults on error: a load test on the wrong settings is
//! worse than none.
//!
//! Tests and embedders build [`GatewayConfig`] directly (all fields are public) and may call
//! [`GatewayConfig::validate`] themselves; the parsed CLI stays in `cli`.
//!
//! Secrets (API tokens, bind passwords, the PIN pepper) are given inline, by file or by
//! environment variable name; [`SecretSource::resolve`] reads them when the server starts, and
//! [`Secret`] never prints its value.
//!
//! - [`load`]: document, overrides, error location.
//! - [`validate`]: cross-field checks (overlapping ranges, missing binds, zero windows ...).

mod load;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::routing::NumberRange;
use crate::smpp::session::BindKind;
use sim_applet_model::smpp::dialect::Dialect;

pub use load::{ConfigError, Origin, Override, EXIT_CONFIG};

/// Whole configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// North API.
    pub api: ApiConfig,
    /// Admission limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Mobile operators, in order ([`crate::routing::OperatorId`] is the index).
    pub operators: Vec<OperatorConfig>,
    /// Routing extras.
    #[serde(default)]
    pub routing: RoutingConfig,
    /// Subscriber registry.
    pub subscribers: SubscribersConfig,
    /// Authentication policy.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// Durable store.
    pub store: StoreConfig,
    /// Keycloak integration (absent: native API only).
    #[serde(default)]
    pub keycloak: Option<KeycloakConfig>,
    /// Prometheus endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Outgoing HTTP (callbacks, Keycloak, JWKS): trust and schemes.
    #[serde(default)]
    pub outbound: OutboundConfig,
}

pub use crate::secret::Secret;
pub use crate::subscribers::provision::ProvisionParams;

/// Where a secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// Written in the configuration.
    Inline(Secret),
    /// Contents of a file (trailing newline removed).
    File(PathBuf),
    /// Value of an environment variable.
    Env(String),
}

/// A secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {0} is not set")]
    EnvMissing(String),
    #[error("reading secret file {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("secret is empty")]
    Empty,
}

impl SecretSource {
    /// Read the secret; `env` looks a variable up (`|k| std::env::var(k).ok()` in the server).
    pub fn resolve(&self, env: impl Fn(&str) -> Option<String>) -> Result<Secret, SecretError> {
        let value = match self {
            SecretSource::Inline(s) => s.expose().to_owned(),
            SecretSource::Env(name) => {
                env(name).ok_or_else(|| SecretError::EnvMissing(name.clone()))?
            }
            SecretSource::File(path) => std::fs::read_to_string(path)
                .map_err(|source| SecretError::File {
                    path: path.display().to_string(),
                    source,
                })?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
        };
        if value.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Secret::new(value))
    }
}

/// Pick the one source given among the options (validation guarantees exactly one).
fn secret_source(
    inline: &Option<Secret>,
    file: &Option<PathBuf>,
    env: &Option<String>,
) -> Option<SecretSource> {
    match (inline, file, env) {
        (Some(s), None, None) => Some(SecretSource::Inline(s.clone())),
        (None, Some(p), None) => Some(SecretSource::File(p.clone())),
        (None, None, Some(e)) => Some(SecretSource::Env(e.clone())),
        _ => None,
    }
}

/// `[api]`: the north API the OIDC provider calls.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Listen address, e.g. `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// TLS (absent: plain HTTP, for a local reverse proxy).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Clients allowed to call the API.
    pub clients: Vec<ApiClientConfig>,
}

/// `[api.tls]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// `[[api.clients]]`: one caller with its bearer token (exactly one of `token`, `token_file`,
/// `token_env`) and its rate limit.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiClientConfig {
    /// Client id (appears in logs and metrics labels).
    pub id: String,
    #[serde(default)]
    pub token: Option<Secret>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub token_env: Option<String>,
    /// Sustained requests per second allowed.
    #[serde(default = "default_rate")]
    pub rate_limit_per_sec: u32,
    /// Burst above the sustained rate.
    #[serde(default = "default_burst")]
    pub rate_limit_burst: u32,
    /// Where this client's `callback_url`s may point: URL prefixes (`"https://rp.example/cb/"`)
    /// or host names (`"rp.example"`). Absent or empty: it cannot ask for callbacks.
    #[serde(default)]
    pub callback_allow: Vec<String>,
}

fn default_rate() -> u32 {
    100
}
fn default_burst() -> u32 {
    200
}

impl ApiClientConfig {
    /// Where the token comes from (`None` only if the config was not validated).
    pub fn token_source(&self) -> Option<SecretSource> {
        secret_source(&self.token, &self.token_file, &self.token_env)
    }
}

/// `[limits]`: admission control.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Most authorizations in flight (beyond: 429 / 503 with `Retry-After`).
    pub max_in_flight: u32,
    /// Most concurrent authorizations per MSISDN (a handset shows one prompt at a time).
    pub per_msisdn_concurrent: u32,
    /// `Retry-After` sent when admission is refused.
    pub retry_after_secs: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 10_000,
            per_msisdn_concurrent: 1,
            retry_after_secs: 1,
        }
    }
}

/// `[[operators]]`: one mobile operator.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorConfig {
    /// Name used in logs, metrics and the portability file.
    pub name: String,
    /// Number ranges: `"48600"` (prefix) or `"48600000000..48600999999"` (E.164 without '+').
    pub ranges: Vec<NumberRange>,
    /// SMPP binds to the operator's SMSC.
    pub binds: Vec<BindSettings>,
    /// USSD dialect: a shipped name or an inline table.
    #[serde(default)]
    pub dialect: DialectChoice,
    /// USSD service code the prompts come from (e.g. `"*123#"` or a short code).
    pub service_code: String,
    /// `source_addr` of SMS-PP (OTA) messages.
    pub sms_source_address: String,
    /// Admission: a start is refused (503, `Retry-After`) when its prompt is expected to wait
    /// longer than this for the binds (queued submissions over what the binds carry per second).
    #[serde(default = "default_max_prompt_wait_ms")]
    pub max_prompt_wait_ms: u64,
    /// A prompt is not sent (the authorization ends `expired`, `prompt_not_sent_in_time`) when
    /// less than this is left of the user's time; admission keeps this much too.
    #[serde(default = "default_min_answer_time_ms")]
    pub min_answer_time_ms: u64,
}

fn default_max_prompt_wait_ms() -> u64 {
    2_000
}

fn default_min_answer_time_ms() -> u64 {
    3_000
}

impl OperatorConfig {
    /// The operator's admission settings.
    pub fn admission_policy(&self) -> crate::channel::admission::AdmissionPolicy {
        crate::channel::admission::AdmissionPolicy {
            max_prompt_wait: Duration::from_millis(self.max_prompt_wait_ms),
            min_answer_time: Duration::from_millis(self.min_answer_time_ms),
        }
    }
}

/// `[[operators.binds]]`: one SMPP bind (exactly one of `password`, `password_env`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindSettings {
    /// `host:port` of the SMSC.
    pub address: String,
    /// Bind kind.
    #[serde(default = "default_bind_kind")]
    pub bind_kind: BindKind,
    /// `system_id` (at most 15 characters).
    pub system_id: String,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub password_env: Option<String>,
    /// `system_type` (at most 12 characters).
    #[serde(default)]
    pub system_type: String,
    /// Most unacknowledged submits.
    #[serde(default = "default_window")]
    pub window: u32,
    /// Idle time before an `enquire_link`.
    #[serde(default = "default_enquire")]
    pub enquire_link_secs: u64,
    /// Time allowed for a response PDU.
    #[serde(default = "default_response_timeout")]
    pub response_timeout_secs: u64,
    /// Submits per second the operator allows (absent: only the window limits).
    #[serde(default)]
    pub max_submits_per_sec: Option<u32>,
    /// No longer used: a throttled bind now slows its rate instead of pausing (accepted so
    /// that older configurations still load).
    #[serde(default = "default_throttle_initial")]
    pub throttle_backoff_initial_ms: u64,
    /// No longer used (see `throttle_backoff_initial_ms`).
    #[serde(default = "default_throttle_max")]
    pub throttle_backoff_max_ms: u64,
    /// SMPP over TLS: PEM file of the CA certificates trusted for the SMSC (with
    /// `tls_server_name`; both absent: plain TCP).
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// SMPP over TLS: the DNS name or IP address the SMSC's certificate must carry.
    #[serde(default)]
    pub tls_server_name: Option<String>,
}

fn default_bind_kind() -> BindKind {
    BindKind::Transceiver
}
fn default_window() -> u32 {
    10
}
fn default_enquire() -> u64 {
    30
}
fn default_response_timeout() -> u64 {
    10
}
fn default_throttle_initial() -> u64 {
    200
}
fn default_throttle_max() -> u64 {
    10_000
}

impl BindSettings {
    /// Where the password comes from (`None` only if the config was not validated).
    pub fn password_source(&self) -> Option<SecretSource> {
        secret_source(&self.password, &None, &self.password_env)
    }

    /// The bind's TLS settings (`None`: plain TCP, or both keys absent).
    pub fn tls_settings(&self) -> Option<crate::smpp::bind::TlsClientSettings> {
        match (&self.tls_ca_file, &self.tls_server_name) {
            (Some(ca_file), Some(server_name)) => Some(crate::smpp::bind::TlsClientSettings {
                ca_file: ca_file.clone(),
                server_name: server_name.clone(),
            }),
            _ => None,
        }
    }

    /// The session layer's settings, with the resolved password; other fields keep the
    /// session layer's defaults.
    pub fn session_config(&self, password: &Secret) -> crate::smpp::session::SessionConfig {
        crate::smpp::session::SessionConfig {
            bind_kind: self.bind_kind,
            system_id: self.system_id.clone(),
            password: password.expose().to_owned(),
            system_type: self.system_type.clone(),
            window: self.window as usize,
            response_timeout: Duration::from_secs(self.response_timeout_secs),
            enquire_link_interval: Duration::from_secs(self.enquire_link_secs),
            max_submits_per_sec: self.max_submits_per_sec,
            ..Default::default()
        }
    }
}

/// A constructor of a shipped dialect.
pub type DialectConstructor = fn() -> Dialect;

/// The names of the shipped dialects, with their constructors.
pub const SHIPPED_DIALECTS: &[(&str, DialectConstructor)] = &[
    ("spec-default", Dialect::spec_default),
    ("dialog-id-cbs", Dialect::vendor_dialog_id_cbs),
    ("umr-op-end", Dialect::vendor_umr_op_end),
];

/// An operator's USSD dialect: `dialect = "umr-op-end"` or `[operators.dialect]` with every
/// field of [`Dialect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialectChoice {
    /// A shipped dialect, by name (see [`SHIPPED_DIALECTS`]).
    Named(String),
    /// A dialect written out.
    Inline(Box<Dialect>),
}

impl Default for DialectChoice {
    fn default() -> Self {
        DialectChoice::Named("spec-default".into())
    }
}

impl DialectChoice {
    /// The dialect (`None` for an unknown name, which deserialization already refuses).
    pub fn resolve(&self) -> Option<Dialect> {
        match self {
            DialectChoice::Named(name) => SHIPPED_DIALECTS
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, make)| make()),
            DialectChoice::Inline(d) => Some((**d).clone()),
        }
    }
}

impl<'de> Deserialize<'de> for DialectChoice {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = DialectChoice;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a dialect name (spec-default, dialog-id-cbs, umr-op-end) or a table")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                if SHIPPED_DIALECTS.iter().any(|(n, _)| *n == v) {
                    Ok(DialectChoice::Named(v.to_owned()))
                } else {
                    let names: Vec<&str> = SHIPPED_DIALECTS.iter().map(|(n, _)| *n).collect();
                    Err(E::custom(format!(
                        "unknown dialect {v:?}, expected one of {}",
                        names.join(", ")
                    )))
                }
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                Dialect::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|d| DialectChoice::Inline(Box::new(d)))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// `[routing]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// `msisdn,operator` lines overriding the ranges (number portability).
    pub portability_file: Option<PathBuf>,
    /// Bound on the file's entries.
    pub portability_max_entries: usize,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            portability_file: None,
            portability_max_entries: crate::routing::portability::DEFAULT_MAX_ENTRIES,
        }
    }
}

/// `[subscribers]`: the registry comes from a file written by `gateway provision`, or is
/// generated at start from the same parameters (`[subscribers.generate]`), never both. The
/// PIN pepper (HMAC key of the USSD PIN verifiers) is given by `pepper_env` or `pepper_file`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscribersConfig {
    #[serde(default)]
    pub file: Option<PathBuf>,
    #[serde(default)]
    pub generate: Option<ProvisionParams>,
    #[serde(default)]
    pub pepper_env: Option<String>,
    #[serde(default)]
    pub pepper_file: Option<PathBuf>,
}

impl SubscribersConfig {
    /// Where the pepper comes from (`None` only if the config was not validated).
    pub fn pepper_source(&self) -> Option<SecretSource> {
        secret_source(&None, &self.pepper_file, &self.pepper_env)
    }
}

/// `[policy]`: how authorizations are carried out.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Allow LoA3 (PIN) over USSD, where the PIN crosses the network in clear.
    pub loa3_over_ussd: bool,
    /// When the STK push fails (no applet answer), try USSD.
    pub fallback_stk_to_ussd: bool,
    /// Wrong USSD PINs before the lockout.
    pub ussd_pin_max_failures: u8,
    /// Length of the USSD PIN lockout.
    pub ussd_lockout_secs: u64,
    /// Lifetime of an authorization when the caller gives none.
    pub default_expiry_secs: u64,
    /// Longest wait for the applet's answer SMS.
    pub stk_answer_timeout_secs: u64,
    /// Per-prompt USSD timeout (absent: the operator dialect's).
    pub ussd_step_timeout_secs: Option<u64>,
    /// Longest wait for the SMSC to accept a submit.
    pub submit_timeout_secs: u64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            loa3_over_ussd: false,
            fallback_stk_to_ussd: true,
            ussd_pin_max_failures: 3,
            ussd_lockout_secs: 900,
            default_expiry_secs: 120,
            stk_answer_timeout_secs: 90,
            ussd_step_timeout_secs: None,
            submit_timeout_secs: 10,
        }
    }
}

/// `[outbound]`: every outgoing HTTP call (native callbacks, Keycloak callbacks, the JWKS)
/// is HTTPS trusting the system's roots plus `ca_files`; plain `http://` only with
/// `allow_http = true` (tests, a sidecar on loopback).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    /// PEM files of CA certificates trusted beside the system's roots.
    pub ca_files: Vec<PathBuf>,
    /// Allow plain `http://` targets.
    pub allow_http: bool,
    /// Hosts trusted through their own CA file only.
    pub targets: Vec<OutboundTargetConfig>,
}

/// `[[outbound.targets]]`: one host and the CA file that alone is trusted for it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundTargetConfig {
    /// Host name or IP address, as in the URLs.
    pub host: String,
    /// PEM file of its CA certificates.
    pub ca_file: PathBuf,
}

impl OutboundConfig {
    /// The client settings.
    pub fn settings(&self) -> crate::outbound::OutboundSettings {
        crate::outbound::OutboundSettings {
            ca_files: self.ca_files.clone(),
            allow_http: self.allow_http,
            without_system_roots: false,
            targets: self
                .targets
                .iter()
                .map(|t| crate::outbound::TargetTrust {
                    host: t.host.clone(),
                    ca_file: t.ca_file.clone(),
                })
                .collect(),
        }
    }
}

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `embedded` (one node, a redb file at `path`), `journal` (one node, an append-only
    /// journal in directory `path`) or `redis` (several nodes sharing a Redis server at `url`).
    #[serde(default)]
    pub backend: StoreBackend,
    /// Database file of the embedded store, or the journal's directory. With Redis, this
    /// node's local files (the audit log) are named after it; no database is created there.
    pub path: PathBuf,
    /// Redis: `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS.
    #[serde(default)]
    pub url: Option<String>,
    /// Redis over TLS: the PEM file of the only CA trusted for the server's certificate
    /// (absent: the system's roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Redis: every key starts with `{key_prefix}:` (a hash tag: one Cluster slot).
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// Redis: longest wait for one command's answer.
    #[serde(default = "default_redis_response_timeout_ms")]
    pub response_timeout_ms: u64,
    /// Redis: longest wait for a connection.
    #[serde(default = "default_redis_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// This node's id among the nodes sharing the store; it must stay the same across restarts
    /// (a restarted node takes over what it left in flight). Absent: derived from `path`.
    #[serde(default)]
    pub node_id: Option<String>,
    /// How long an ended authorization stays readable (polls, late callbacks, audits) and an
    /// idempotency key keeps pointing at it, before the purge removes them.
    #[serde(default = "default_terminal_ttl_secs")]
    pub terminal_ttl_secs: u64,
    /// How often the purge runs.
    #[serde(default = "default_purge_interval_secs")]
    pub purge_interval_secs: u64,
    /// Shortest time between two fsynced commits: under load, the durable operations of one
    /// interval share one fsync; a store that was quiet for an interval commits at once. 0:
    /// every commit as soon as the previous one is done.
    #[serde(default = "default_durable_commit_interval_ms")]
    pub durable_commit_interval_ms: u64,
    /// Embedded store: MiB of the database's pages kept in memory (a fixed cost; the OS's
    /// page cache holds the rest of the file).
    #[serde(default = "default_cache_mb")]
    pub cache_mb: u64,
}

fn default_cache_mb() -> u64 {
    (crate::store::DEFAULT_CACHE_BYTES >> 20) as u64
}

fn default_durable_commit_interval_ms() -> u64 {
    5
}

fn default_key_prefix() -> String {
    "gw".into()
}

fn default_redis_response_timeout_ms() -> u64 {
    1_000
}

fn default_redis_connect_timeout_ms() -> u64 {
    2_000
}

/// Which [`crate::store::Store`] backend serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreBackend {
    /// redb file on this node's disk: one node.
    #[default]
    Embedded,
    /// Append-only journal on this node's disk, the state in memory: one node, the cheapest
    /// durable commit (see `store::journal`).
    Journal,
    /// A Redis server shared by every node.
    Redis,
}

impl StoreConfig {
    /// This node's id: `node_id`, or `node-` and a digest of `path` (stable across restarts of
    /// one node, distinct between nodes with their own files).
    pub fn node_id(&self) -> String {
        match &self.node_id {
            Some(id) => id.clone(),
            None => {
                use sha2::Digest;
                let digest = sha2::Sha256::digest(self.path.to_string_lossy().as_bytes());
                format!("node-{}", hex::encode(&digest[..6]))
            }
        }
    }

    /// The Redis connection settings (`None` with the embedded backend).
    pub fn redis_settings(&self) -> Option<crate::store::RedisSettings> {
        (self.backend == StoreBackend::Redis).then(|| crate::store::RedisSettings {
            url: self.url.clone().unwrap_or_default(),
            ca_file: self.ca_file.clone(),
            prefix: self.key_prefix.clone(),
            response_timeout: std::time::Duration::from_millis(self.response_timeout_ms),
            connect_timeout: std::time::Duration::from_millis(self.connect_timeout_ms),
        })
    }
}

fn default_terminal_ttl_secs() -> u64 {
    24 * 60 * 60
}

fn default_purge_interval_secs() -> u64 {
    5 * 60
}

/// `[keycloak]`: tokens from a Keycloak realm (exactly one of `jwks_file`, `jwks_url`; a
/// `username_map_file` or `usernames_are_msisdn = true`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeycloakConfig {
    /// Realm base URL, e.g. `https://sso.example/realms/citizens`.
    pub realm_url: String,
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Expected `aud`.
    pub audience: String,
    /// `username,msisdn` lines.
    #[serde(default)]
    pub username_map_file: Option<PathBuf>,
    /// Usernames are MSISDNs themselves.
    #[serde(default)]
    pub usernames_are_msisdn: bool,
}

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Prometheus listen address (absent: no endpoint).
    pub listen: Option<SocketAddr>,
    /// Path of the scrape endpoint.
    pub path: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: None,
            path: "/metrics".into(),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Json,
    Pretty,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// `tracing` filter directive, e.g. `info,gateway::smpp=debug`.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            filter: "info".into(),
        }
    }
}

#[cfg(test)]
mod tests;
