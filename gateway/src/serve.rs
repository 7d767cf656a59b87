//! `gateway serve` as a library call: [`start`] wires a validated [`GatewayConfig`] into a
//! running gateway and returns a [`ServeHandle`]; tests and the load driver call it in-process.
//!
//! Wiring, in order: secrets (PIN pepper, API tokens, bind passwords) -> subscriber registry
//! (file or generated) -> router -> embedded store -> metrics registry -> one channel
//! [`Authorizer`] per operator with its binds (and the USSD PIN check) -> [`AuthorizationManager`],
//! which first ends whatever the last run left in flight -> north API (native routes, Keycloak
//! route if configured) on `[api] listen` (HTTPS with `[api.tls]`, rustls), metrics on
//! `[metrics] listen`. Port 0 is allowed; the handle reports the real addresses.
//!
//! [`ServeHandle::shutdown`]: refuse new authorizations, let running ones finish for the drain
//! time, end the rest with a definite status (long-pollers and callbacks get it), stop the
//! listeners, unbind the binds, and close the store (every acknowledged terminal state is
//! already durable; dropping the database closes it cleanly).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::jwt::{JwksSource, JwtConfig, JwtVerifier};
use crate::api::keycloak::{self, KeycloakChannel, SubscriberMap};
use crate::api::{self, ApiOptions, ApiState, ClientCredential};
use crate::authorization::service::AuthorizationService;
use crate::authorization::{
    system_clock, AuditLog, AuthorizationManager, ChannelPort, ManagerDeps, ManagerSettings,
    Operator, UssdPinCheck,
};
use crate::callback::CallbackClient;
use crate::channel::admission::Admission;
use crate::channel::{
    AuthRequest, AuthResult, Authorizer, AuthorizerConfig, PinVerifier, StraySlot,
};
use crate::config::{GatewayConfig, LogConfig, LogFormat, StoreBackend};
use crate::metrics::smpp::{BindMetrics, BindState};
use crate::metrics::Metrics;
use crate::routing::{NumberRange, Router};
use crate::smpp::bind::{tls_server_config, BindConfig};
use crate::store::{
    EmbeddedStore, JournalStore, LockoutPolicy, ObservedStore, RedisStore, Store, StoreOptions,
};
use crate::subscribers::{Pepper, SubscriberRegistry};

/// Time running authorizations get to finish at shutdown before they are ended.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(10);
/// Most subscriber records read from a file.
const MAX_SUBSCRIBERS: u64 = 50_000_000;

/// A running gateway.
pub struct ServeHandle {
    /// Where the north API listens.
    pub api_addr: SocketAddr,
    /// Where `/metrics` listens, when configured.
    pub metrics_addr: Option<SocketAddr>,
    /// Drain time used by [`shutdown`](Self::shutdown).
    pub drain: Duration,
    manager: AuthorizationManager,
    authorizers: Vec<(Authorizer, JoinHandle<()>)>,
    stop_listeners: CancellationToken,
    listeners: TaskTracker,
}

impl std::fmt::Debug for ServeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeHandle")
            .field("api_addr", &self.api_addr)
            .field("metrics_addr", &self.metrics_addr)
            .finish_non_exhaustive()
    }
}

impl ServeHandle {
    /// The authorization layer (what the API calls), for in-process drivers.
    pub fn service(&self) -> Arc<dyn AuthorizationService> {
        Arc::new(self.manager.clone())
    }

    /// Graceful stop; see the module documentation.
    pub async fn shutdown(self) {
        tracing::info!("shutting down");
        self.manager.shutdown(self.drain).await;
        self.stop_listeners.cancel();
        self.listeners.close();
        if tokio::time::timeout(Duration::from_secs(5), self.listeners.wait())
            .await
            .is_err()
        {
            tracing::warn!("HTTP connections still open at shutdown");
        }
        for (authorizer, join) in self.authorizers {
            authorizer.shutdown().await;
            let _ = join.await;
        }
        drop(self.manager);
        tracing::info!("stopped");
    }
}

/// One operator's channel: its authorizer, and its binds' states for readiness.
struct OperatorChannel {
    authorizer: Authorizer,
    binds: Vec<Arc<BindMetrics>>,
    ussd_key_range: u32,
}

impl ChannelPort for OperatorChannel {
    fn authorize(&self, request: AuthRequest) -> BoxFuture<'static, AuthResult> {
        let authorizer = self.authorizer.clone();
        async move { authorizer.authorize(request).await }.boxed()
    }

    fn authorize_notifying(
        &self,
        request: AuthRequest,
        accepted: tokio::sync::oneshot::Sender<()>,
    ) -> BoxFuture<'static, AuthResult> {
        let authorizer = self.authorizer.clone();
        async move {
            authorizer
                .authorize_notifying(request, Some(accepted))
                .await
        }
        .boxed()
    }

    fn resume(&self, request: AuthRequest) -> BoxFuture<'static, AuthResult> {
        let authorizer = self.authorizer.clone();
        async move { authorizer.resume(request).await }.boxed()
    }

    fn ussd_key_range(&self) -> u32 {
        self.ussd_key_range
    }

    fn admit(&self, awaiting_prompts: usize, expiry: Duration) -> Admission {
        self.authorizer.admit(awaiting_prompts, expiry)
    }

    fn binds_up(&self) -> (usize, usize) {
        let up = self
            .binds
            .iter()
            .filter(|b| b.state() == Some(BindState::Bound))
            .count();
        (up, self.binds.len())
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

// The wiring below translates the configuration into each part's own settings: no domain
// module reads `crate::config`, so each can be built and tested from plain values.

/// The router of a validated configuration, reading its portability file if any.
pub fn router(config: &GatewayConfig) -> Result<Router, crate::routing::RouterBuildError> {
    let operators: Vec<(String, Vec<NumberRange>)> = config
        .operators
        .iter()
        .map(|o| (o.name.clone(), o.ranges.clone()))
        .collect();
    match &config.routing.portability_file {
        Some(path) => {
            Router::with_portability_file(&operators, path, config.routing.portability_max_entries)
        }
        None => Router::new(&operators, crate::routing::PortabilityTable::new()),
    }
}

/// The store's USSD PIN lockout rule from `[policy]`.
fn lockout_policy(config: &GatewayConfig) -> LockoutPolicy {
    LockoutPolicy {
        max_failures: u32::from(config.policy.ussd_pin_max_failures.max(1)),
        lockout_ms: config.policy.ussd_lockout_secs.saturating_mul(1000),
        ..LockoutPolicy::default()
    }
}

/// The authorization manager's settings from `[limits]` and `[policy]`.
fn manager_settings(config: &GatewayConfig) -> ManagerSettings {
    let p = &config.policy;
    ManagerSettings {
        max_in_flight: config.limits.max_in_flight.max(1) as usize,
        per_msisdn: config.limits.per_msisdn_concurrent.max(1) as usize,
        retry_after: Duration::from_secs(u64::from(config.limits.retry_after_secs.max(1))),
        loa3_over_ussd: p.loa3_over_ussd,
        fallback_stk_to_ussd: p.fallback_stk_to_ussd,
        lockout: lockout_policy(config),
        overrun: Duration::from_secs(p.stk_answer_timeout_secs + p.submit_timeout_secs + 15),
        // A key never outlives the record it points at by much: both go with the store's TTL.
        idempotency_ttl: Duration::from_secs(config.store.terminal_ttl_secs.max(1)),
        node_id: config.store.node_id(),
        ..ManagerSettings::default()
    }
}

/// Starts the gateway described by `config` (validated here again).
pub async fn start(config: GatewayConfig) -> anyhow::Result<ServeHandle> {
    config.validate().context("configuration")?;
    // Read before anything else starts, so a bad certificate or key fails fast.
    let api_tls = match &config.api.tls {
        Some(t) => Some(tokio_rustls::TlsAcceptor::from(
            tls_server_config(&t.cert, &t.key).context("[api.tls]")?,
        )),
        None => None,
    };

    // Secrets and registry.
    let pepper_source = config
        .subscribers
        .pepper_source()
        .context("[subscribers]: exactly one of pepper_env / pepper_file")?;
    let pepper = pepper_source
        .resolve(env)
        .context("reading the PIN pepper")?;
    let pepper = Pepper::new(pepper.expose().as_bytes()).context("PIN pepper")?;
    let subscribers = match (&config.subscribers.file, &config.subscribers.generate) {
        (Some(path), _) => SubscriberRegistry::load(path, MAX_SUBSCRIBERS)
            .with_context(|| format!("loading subscribers from {}", path.display()))?,
        (None, Some(params)) => SubscriberRegistry::generate(params, &pepper)
            .context("generating the subscriber population")?,
        (None, None) => bail!("[subscribers]: give `file` or [subscribers.generate]"),
    };
    let subscribers = Arc::new(subscribers);
    let router = Arc::new(router(&config).context("building the router")?);

    let (metrics, exposition) = Metrics::standalone();
    // Closed while a shared store cannot be reached: the binds then refuse answers with a
    // temporary error instead of acknowledging what cannot be applied.
    let mo_gate = crate::smpp::session::MoGate::default();
    let options = StoreOptions {
        terminal_ttl_ms: config.store.terminal_ttl_secs.saturating_mul(1000),
        durable_commit_interval: Duration::from_millis(config.store.durable_commit_interval_ms),
        cache_bytes: usize::try_from(config.store.cache_mb)
            .unwrap_or(usize::MAX / (1 << 20))
            .saturating_mul(1 << 20),
        ..StoreOptions::default()
    };
    let backend: Arc<dyn Store> = match config.store.redis_settings() {
        None if config.store.backend == StoreBackend::Journal => Arc::new(
            JournalStore::open_observed(&config.store.path, options, Some(metrics.store.writer()))
                .with_context(|| format!("opening the journal {}", config.store.path.display()))?,
        ),
        None => Arc::new(
            EmbeddedStore::open_observed(&config.store.path, options, Some(metrics.store.writer()))
                .with_context(|| format!("opening the store {}", config.store.path.display()))?,
        ),
        Some(settings) => Arc::new(
            RedisStore::connect_observed(
                &settings,
                options,
                crate::store::RedisObservers {
                    round_trips: Some(metrics.store.round_trips()),
                    up: Some(metrics.store.shared_up()),
                    mo_gate: Some(mo_gate.clone()),
                },
            )
            .await
            .context("connecting to the Redis store ([store] url)")?,
        ),
    };
    let store: Arc<dyn Store> = Arc::new(ObservedStore::new(backend, metrics.store.clone()));
    let clock = system_clock();
    let (store_for_purge, clock_for_purge) = (store.clone(), clock.clone());
    let pin_check: Arc<dyn PinVerifier> = Arc::new(UssdPinCheck::new(
        store.clone(),
        subscribers.clone(),
        pepper,
        lockout_policy(&config),
        clock.clone(),
    ));

    let shared_store = config.store.redis_settings().is_some();
    let mut stray_slots = Vec::new();
    // Channels, one authorizer per operator.
    let mut operators = Vec::with_capacity(config.operators.len());
    let mut authorizers = Vec::with_capacity(config.operators.len());
    for (i, op) in config.operators.iter().enumerate() {
        let mut binds = Vec::with_capacity(op.binds.len());
        let mut bind_metrics = Vec::with_capacity(op.binds.len());
        for (j, b) in op.binds.iter().enumerate() {
            let password = b
                .password_source()
                .with_context(|| format!("operators[{i}].binds[{j}]: password"))?
                .resolve(env)
                .with_context(|| format!("operators[{i}].binds[{j}]: password"))?;
            let m = Arc::new(metrics.smpp.bind(&op.name, &b.system_id));
            bind_metrics.push(m.clone());
            let mut bind = BindConfig::new(b.address.clone(), {
                let mut session = b.session_config(&password);
                session.mo_gate = mo_gate.clone();
                // With a shared store an answer may be another node's: it is acknowledged once
                // it is checked and applied (see the channel driver).
                session.defer_mo_ack = shared_store;
                session
            })
            .with_metrics(m);
            if let Some(tls) = b.tls_settings() {
                bind = bind.with_tls(tls);
            }
            binds.push(bind);
        }
        let dialect = op
            .dialect
            .resolve()
            .with_context(|| format!("operators[{i}].dialect"))?;
        let mut dialect = dialect;
        if let Some(step) = config.policy.ussd_step_timeout_secs {
            // The policy may only shorten what the operator's network allows per USSD step.
            dialect.step_timeout_secs = dialect.step_timeout_secs.min(step.max(1));
        }
        let mut ac = AuthorizerConfig::new(binds);
        ac.dialect = dialect;
        ac.service_code = op.service_code.clone();
        ac.ota_originator = op.sms_source_address.clone();
        ac.max_in_flight = config.limits.max_in_flight.max(1) as usize;
        ac.submit_timeout = Duration::from_secs(config.policy.submit_timeout_secs.max(1));
        ac.admission = op.admission_policy();
        let operator_metrics = metrics.authorization.operator(&op.name);
        ac.ignored_answers = Some((
            operator_metrics.answers_ignored_counter(crate::metrics::authorization::Channel::Ussd),
            operator_metrics.answers_ignored_counter(crate::metrics::authorization::Channel::Stk),
        ));
        if shared_store {
            // Several nodes: an answer to another node's prompt is taken here.
            let slot = StraySlot::default();
            ac.strays = Some(slot.clone());
            ac.cross_node_answers = Some(operator_metrics.cross_node_answers_counter());
            stray_slots.push(slot);
        }
        let ussd_key_range = crate::channel::router::session_key_range(&ac.dialect);
        let (authorizer, join) = Authorizer::start(ac, Some(pin_check.clone()));
        operators.push(Operator {
            name: op.name.clone(),
            channel: Arc::new(OperatorChannel {
                authorizer: authorizer.clone(),
                binds: bind_metrics,
                ussd_key_range,
            }),
            metrics: Some(operator_metrics),
        });
        authorizers.push((authorizer, join));
    }

    let audit_path = AuditLog::beside_store(&config.store.path);
    let audit = AuditLog::open(&audit_path)
        .with_context(|| format!("opening the audit log {}", audit_path.display()))?;
    let settings = manager_settings(&config);
    let callbacks =
        CallbackClient::new(settings.callback_retry.clone(), &config.outbound.settings())
            .context("outbound HTTPS client ([outbound] ca_files)")?;
    let manager = AuthorizationManager::new(ManagerDeps {
        store,
        router,
        subscribers,
        operators,
        settings,
        audit: Some(audit),
        clock,
        outbox_observers: Some(crate::authorization::OutboxObservers {
            outbox: metrics.outbox.clone(),
            callbacks: metrics.callback.clone(),
        }),
        callbacks,
    });
    for (i, slot) in stray_slots.iter().enumerate() {
        let _ = slot.0.set(manager.stray_answers(i));
    }
    manager
        .recover()
        .await
        .context("ending authorizations left in flight")?;
    manager.follow_nodes();
    let service: Arc<dyn AuthorizationService> = Arc::new(manager.clone());

    // North API.
    let mut clients = Vec::with_capacity(config.api.clients.len());
    for c in &config.api.clients {
        let token = c
            .token_source()
            .with_context(|| format!("api.clients `{}`: token", c.id))?
            .resolve(env)
            .with_context(|| format!("api.clients `{}`: token", c.id))?;
        clients.push(ClientCredential {
            id: c.id.clone(),
            token,
            rate_per_sec: c.rate_limit_per_sec,
            burst: c.rate_limit_burst,
            callback_allow: c.callback_allow.clone(),
        });
    }
    let options = ApiOptions {
        clients,
        default_expiry: Duration::from_secs(config.policy.default_expiry_secs.max(1)),
        allow_http_callbacks: config.outbound.allow_http,
        ..ApiOptions::default()
    };
    let state = ApiState::new(service.clone(), options);
    let keycloak = match &config.keycloak {
        Some(kc) => Some(Arc::new(
            keycloak_channel(kc, service.clone(), &config.outbound.settings()).await?,
        )),
        None => None,
    };
    let extra = keycloak.map(keycloak::routes::<ApiState>);
    let app = api::router(state, extra).layer(axum::middleware::from_fn_with_state(
        metrics.api.clone(),
        crate::metrics::api::track,
    ));

    let stop_listeners = CancellationToken::new();
    let listeners = TaskTracker::new();
    let api_listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("listening on {} ([api] listen)", config.api.listen))?;
    let api_addr = api_listener.local_addr()?;
    match api_tls {
        None => serve_http(&listeners, &stop_listeners, api_listener, app, "api"),
        Some(acceptor) => {
            let tls = TlsListener::spawn(
                api_listener,
                api_addr,
                acceptor,
                &listeners,
                &stop_listeners,
            );
            serve_http(&listeners, &stop_listeners, tls, app, "api");
        }
    }

    let metrics_addr = match config.metrics.listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr} ([metrics] listen)"))?;
            let bound = listener.local_addr()?;
            let app: axum::Router = exposition.routes(&config.metrics.path);
            serve_http(&listeners, &stop_listeners, listener, app, "metrics");
            Some(bound)
        }
        None => None,
    };
    listeners.spawn(purge_on_schedule(
        store_for_purge,
        config.store.path.clone(),
        Duration::from_secs(config.store.purge_interval_secs.max(1)),
        metrics.store.clone(),
        clock_for_purge,
        stop_listeners.clone(),
    ));
    tracing::info!(%api_addr, ?metrics_addr, operators = config.operators.len(), "gateway serving");
    Ok(ServeHandle {
        api_addr,
        metrics_addr,
        drain: DEFAULT_DRAIN,
        manager,
        authorizers,
        stop_listeners,
        listeners,
    })
}

/// Removes ended authorizations and idempotency claims past their TTL every `every`, until
/// `stop`; counts what it removed and the store file's size. A failed purge is logged and
/// repeated by the next one (purging is not durable by itself, and loses nothing).
async fn purge_on_schedule(
    store: Arc<dyn Store>,
    path: std::path::PathBuf,
    every: Duration,
    metrics: Arc<crate::metrics::store::StoreMetrics>,
    clock: crate::authorization::UnixClock,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let report = store.purge_expired(clock()).await;
        let path = path.clone();
        let bytes = tokio::task::spawn_blocking(move || store_bytes(&path))
            .await
            .ok()
            .flatten();
        match report {
            Ok(report) => {
                metrics.purged(
                    report.authorizations as u64,
                    report.idempotency_keys as u64,
                    bytes,
                );
                if report.authorizations + report.idempotency_keys > 0 {
                    tracing::debug!(?report, "store purged");
                }
            }
            Err(e) => tracing::warn!(error = %e, "store purge failed"),
        }
    }
}

/// The store's size on disk: the redb file, or the sum of the journal's segments.
fn store_bytes(path: &std::path::Path) -> Option<u64> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return Some(meta.len());
    }
    let entries = std::fs::read_dir(path).ok()?;
    Some(
        entries
            .filter_map(|e| e.ok()?.metadata().ok())
            .filter(std::fs::Metadata::is_file)
            .map(|m| m.len())
            .sum(),
    )
}

/// TLS handshakes in front of a TCP listener, for `axum::serve`. Each handshake runs in its
/// own task, bounded in time and in number, so a slow or silent client holds up nobody;
/// finished ones queue for axum. The accepting task ends with the listeners' stop token.
struct TlsListener {
    ready: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
}

/// Time a client gets to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; further connections wait in the kernel's accept queue.
const TLS_MAX_HANDSHAKES: usize = 256;

impl TlsListener {
    fn spawn(
        listener: tokio::net::TcpListener,
        local_addr: SocketAddr,
        acceptor: tokio_rustls::TlsAcceptor,
        tracker: &TaskTracker,
        stop: &CancellationToken,
    ) -> Self {
        let (tx, ready) = tokio::sync::mpsc::channel(64);
        let stop = stop.clone();
        let limit = Arc::new(tokio::sync::Semaphore::new(TLS_MAX_HANDSHAKES));
        tracker.spawn(async move {
            loop {
                let permit = tokio::select! {
                    _ = stop.cancelled() => return,
                    p = limit.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => return,
                    },
                };
                let accepted = tokio::select! {
                    _ = stop.cancelled() => return,
                    a = listener.accept() => a,
                };
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends pass; the listener must not die of them.
                        tracing::warn!(error = %e, "API accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "API TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "API TLS handshake timed out"),
                    }
                    drop(permit);
                });
            }
        });
        Self { ready, local_addr }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accepting task stopped (shutdown): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

fn serve_http<L: axum::serve::Listener<Addr = SocketAddr>>(
    tracker: &TaskTracker,
    stop: &CancellationToken,
    listener: L,
    app: axum::Router,
    what: &'static str,
) {
    let stop = stop.clone();
    tracker.spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, server = what, "HTTP server failed");
        }
    });
}

async fn keycloak_channel(
    kc: &crate::config::KeycloakConfig,
    service: Arc<dyn AuthorizationService>,
    outbound: &crate::outbound::OutboundSettings,
) -> anyhow::Result<KeycloakChannel> {
    let mut jwt = JwtConfig::for_realm(&kc.realm_url);
    jwt.audience = vec![kc.audience.clone()];
    let source = match (&kc.jwks_file, &kc.jwks_url) {
        (Some(path), _) => JwksSource::File(path.clone()),
        (None, Some(url)) => JwksSource::Url(url.clone()),
        (None, None) => bail!("[keycloak]: give jwks_file or jwks_url"),
    };
    let verifier = JwtVerifier::load(jwt, source, outbound)
        .await
        .context("[keycloak]: loading the realm keys")?;
    let map = match &kc.username_map_file {
        Some(path) => SubscriberMap::load(path, kc.usernames_are_msisdn)
            .with_context(|| format!("[keycloak]: reading {}", path.display()))?,
        None => SubscriberMap::new(HashMap::new(), kc.usernames_are_msisdn),
    };
    Ok(KeycloakChannel::new(
        keycloak::KeycloakConfig::for_realm(&kc.realm_url),
        Arc::new(verifier),
        map,
        service,
    ))
}

/// Installs the global `tracing` subscriber: `format` json or pretty, `filter` a directive
/// such as `info,gateway::smpp=debug`; logs go to stderr. Safe to call twice (the second call does nothing).
pub fn init_logging(log: &LogConfig) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&log.filter)
        .with_context(|| format!("log filter `{}`", log.filter))?;
    // stderr: the CLI holds the stdout lock for its own output while the server runs.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    if result.is_err() {
        tracing::debug!("a tracing subscriber was already installed");
    }
    Ok(())
}
