//! The system under test for one run: a running gateway given by URL, or one brought up here
//! on loopback with the harness (the simulated SMSC with the handset population, the gateway
//! in-process with its registry generated from the same seed).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;

use super::config::{GatewayMode, SmscMode, StoreChoice, SurgeConfig};
use super::gateway_process::{free_loopback_addr, GatewayProcess};
use super::target::{self, HttpTarget, MultiTarget, Target};
use crate::harness::config::GatewayConfigBuilder;
use crate::harness::network::{start_smsc, SmscSpec};
use crate::smsc::population::PopulationConfig;
use crate::smsc::{AccountConfig, Fault, SmscHandle};

/// Token of the in-process gateway's API client.
const TOKEN: &str = "surge-load-token";
const SMSC_SYSTEM_ID: &str = "surge";
const SMSC_PASSWORD: &str = "secret";

/// The system under test, brought up for one run.
pub(super) struct Environment {
    pub(super) target: Arc<dyn Target>,
    pub(super) metrics_url: Option<String>,
    pub(super) smsc: Option<SmscHandle>,
    /// The in-process gateway nodes.
    pub(super) gateways: Vec<gateway::serve::ServeHandle>,
    /// The gateway when it runs in a child process (chaos runs kill it).
    pub(super) gateway_process: Option<tokio::sync::Mutex<GatewayProcess>>,
    /// The API of every node started here, in-process or child.
    pub(super) api_addrs: Vec<std::net::SocketAddr>,
    /// Every node's `/metrics`, for the per-node figures.
    pub(super) node_metrics: Vec<String>,
    /// The Redis started here for the nodes' shared store.
    pub(super) redis: Option<gateway::store::LocalRedis>,
    pub(super) temp_dir: Option<PathBuf>,
}

impl Environment {
    pub(super) async fn start(c: &SurgeConfig) -> anyhow::Result<Self> {
        match &c.gateway {
            GatewayMode::External {
                url,
                token,
                metrics_url,
            } => Ok(Self {
                target: Arc::new(HttpTarget::new(url, token)?),
                metrics_url: metrics_url.clone(),
                smsc: None,
                gateways: Vec::new(),
                gateway_process: None,
                api_addrs: Vec::new(),
                node_metrics: metrics_url.iter().cloned().collect(),
                redis: None,
                temp_dir: None,
            }),
            GatewayMode::InProcess {
                smsc,
                binds,
                window,
                max_submits_per_sec,
                max_in_flight,
                loa3_over_ussd,
            } => {
                let (smsc_handle, smsc_addr, system_id, password) = match smsc {
                    SmscMode::InProcess {
                        throttle_tps,
                        window,
                    } => {
                        let mut account = AccountConfig::new(SMSC_SYSTEM_ID, SMSC_PASSWORD);
                        account.max_binds = (*binds as usize * c.nodes.max(1) as usize).max(1);
                        account.throttle_tps = *throttle_tps;
                        let population = PopulationConfig {
                            size: c.population,
                            applet_share: c.applet_share,
                            seed: c.population_seed,
                            msisdn_base: c.msisdn_base,
                            user: c.user.clone(),
                            time_compression: c.think_compression,
                            ..PopulationConfig::default()
                        };
                        let spec = SmscSpec {
                            account,
                            window: Some(*window),
                            seed: Some(c.seed),
                            record: false,
                            ..SmscSpec::new(population)
                        };
                        let (h, _) = start_smsc(spec).await?;
                        let addr = h.local_addr().to_string();
                        (
                            Some(h),
                            addr,
                            SMSC_SYSTEM_ID.to_owned(),
                            SMSC_PASSWORD.to_owned(),
                        )
                    }
                    SmscMode::External {
                        addr,
                        system_id,
                        password,
                    } => (None, addr.clone(), system_id.clone(), password.clone()),
                };
                let dir = std::env::temp_dir().join(format!(
                    "surge-{}-{}",
                    std::process::id(),
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos())
                ));
                match start_nodes(
                    c,
                    &smsc_addr,
                    &dir,
                    (&system_id, &password),
                    (
                        *binds,
                        *window,
                        *max_submits_per_sec,
                        *max_in_flight,
                        *loa3_over_ussd,
                    ),
                )
                .await
                {
                    Ok(nodes) => {
                        let env = Self {
                            target: Arc::new(MultiTarget::new(&nodes.api_addrs, TOKEN)?),
                            metrics_url: nodes.metrics.first().cloned(),
                            smsc: smsc_handle,
                            gateways: nodes.gateways,
                            gateway_process: nodes.process.map(tokio::sync::Mutex::new),
                            api_addrs: nodes.api_addrs,
                            node_metrics: nodes.metrics,
                            redis: nodes.redis,
                            temp_dir: Some(dir),
                        };
                        env.wait_ready().await;
                        Ok(env)
                    }
                    Err(e) => {
                        if let Some(s) = smsc_handle {
                            s.shutdown().await;
                        }
                        let _ = std::fs::remove_dir_all(&dir);
                        Err(e)
                    }
                }
            }
        }
    }

    /// Waits (bounded) until the gateway says it is ready, so the first arrivals do not meet
    /// binds still coming up.
    async fn wait_ready(&self) -> bool {
        let mut all = true;
        for api in &self.api_addrs {
            all &= Self::node_ready(*api).await;
        }
        all
    }

    async fn node_ready(api: std::net::SocketAddr) -> bool {
        let client = target::http_client();
        let url = format!("http://{api}/readyz");
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            let req = axum::http::Request::builder()
                .uri(&url)
                .body(http_body_util::Full::new(bytes::Bytes::new()));
            if let Ok(req) = req {
                if let Ok(resp) = client.request(req).await {
                    if resp.status().is_success() {
                        return true;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::warn!("gateway not ready after 10 s; starting anyway");
        false
    }

    /// The shared Redis of the run, if any (started here or given).
    pub(super) fn redis_url(&self, c: &SurgeConfig) -> Option<String> {
        match (&self.redis, &c.store) {
            (Some(r), _) => Some(r.url()),
            (None, StoreChoice::Redis(Some(url))) => Some(url.clone()),
            _ => None,
        }
    }

    /// The gateway child's process id, when there is one.
    pub(super) async fn gateway_pid(&self) -> Option<u32> {
        self.gateway_process.as_ref()?.lock().await.pid()
    }

    /// The gateway child's CPU seconds so far and peak resident set, when there is one.
    pub(super) async fn gateway_process_figures(&self) -> Option<(f64, u64)> {
        self.gateway_process.as_ref()?.lock().await.figures()
    }

    /// SIGKILLs the gateway child and starts it again on the same store; returns how long
    /// the API was gone (until `/readyz` said ready again).
    pub(super) async fn kill_gateway(&self) -> anyhow::Result<Duration> {
        let Some(process) = &self.gateway_process else {
            anyhow::bail!("the gateway is not a child process of this run");
        };
        let started = Instant::now();
        process.lock().await.kill_and_restart().await?;
        if !self.wait_ready().await {
            anyhow::bail!("the restarted gateway was not ready within 10 s");
        }
        Ok(started.elapsed())
    }

    /// Injects a fault into the SMSC started here.
    pub(super) fn inject(&self, fault: Fault) -> anyhow::Result<()> {
        let Some(smsc) = &self.smsc else {
            anyhow::bail!("the SMSC is not run by this surge");
        };
        smsc.inject(fault);
        Ok(())
    }

    pub(super) async fn shutdown(self) {
        for g in self.gateways {
            g.shutdown().await;
        }
        if let Some(p) = self.gateway_process {
            p.into_inner().stop(Duration::from_secs(15)).await;
        }
        if let Some(s) = self.smsc {
            s.shutdown().await;
        }
        drop(self.redis);
        if let Some(d) = self.temp_dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// The nodes started for one run.
struct Nodes {
    gateways: Vec<gateway::serve::ServeHandle>,
    process: Option<GatewayProcess>,
    api_addrs: Vec<std::net::SocketAddr>,
    metrics: Vec<String>,
    redis: Option<gateway::store::LocalRedis>,
}

/// Starts `c.nodes` gateway nodes on the run's store (Redis for more than one: the URL given,
/// or a `redis-server` started in `dir`), their binds to `smsc_addr`.
async fn start_nodes(
    c: &SurgeConfig,
    smsc_addr: &str,
    dir: &std::path::Path,
    (system_id, password): (&str, &str),
    (binds, window, max_submits_per_sec, max_in_flight, loa3_over_ussd): (
        u32,
        u32,
        Option<u32>,
        u32,
        bool,
    ),
) -> anyhow::Result<Nodes> {
    let nodes = c.nodes.max(1);
    if nodes > 1 && matches!(c.store, StoreChoice::Embedded | StoreChoice::Journal) {
        anyhow::bail!("--nodes {nodes} needs --store redis: embedded stores are not shared");
    }
    if nodes > 1 && c.wants_gateway_process() {
        anyhow::bail!("a gateway in a child process (kill-gateway) runs with --nodes 1 only");
    }
    let (redis, redis_url) = match &c.store {
        StoreChoice::Embedded | StoreChoice::Journal => (None, None),
        StoreChoice::Redis(Some(url)) => (None, Some(url.clone())),
        StoreChoice::Redis(None) => {
            let server = gateway::store::LocalRedis::start(&dir.join("redis"))
                .context("starting redis-server for --store redis")?;
            let url = server.url();
            (Some(server), Some(url))
        }
    };
    let mut out = Nodes {
        gateways: Vec::new(),
        process: None,
        api_addrs: Vec::new(),
        metrics: Vec::new(),
        redis,
    };
    for i in 0..nodes {
        let mut builder = gateway_builder(c, smsc_addr.to_owned(), &dir.join(format!("node-{i}")));
        builder.system_id = system_id.to_owned();
        builder.password = password.to_owned();
        builder.binds = binds;
        builder.window = Some(window);
        builder.max_submits_per_sec = max_submits_per_sec;
        builder.max_in_flight = Some(max_in_flight);
        builder.loa3_over_ussd = loa3_over_ussd;
        builder.journal = c.store == StoreChoice::Journal;
        if let Some(url) = &redis_url {
            // A fresh prefix per run: a Redis given by URL may hold an earlier run's keys.
            let prefix = format!("surge-{}-{}", std::process::id(), c.seed);
            builder.redis = Some((url.clone(), prefix));
            builder.node_id = Some(format!("node-{i}"));
        }
        if c.wants_gateway_process() {
            let (process, metrics) =
                start_child(&mut builder, &dir.join(format!("node-{i}"))).await?;
            out.api_addrs.push(process.api_addr);
            out.metrics
                .extend(metrics.map(|a| format!("http://{a}/metrics")));
            out.process = Some(process);
        } else {
            let handle = match builder.build() {
                Ok(config) => gateway::serve::start(config)
                    .await
                    .with_context(|| format!("starting gateway node {i}"))?,
                Err(e) => return Err(e),
            };
            out.api_addrs.push(handle.api_addr);
            out.metrics
                .extend(handle.metrics_addr.map(|a| format!("http://{a}/metrics")));
            out.gateways.push(handle);
        }
    }
    Ok(out)
}

/// Starts the gateway of `builder` as a child process of this executable, on fixed loopback
/// addresses so a restart comes back where the driver looks; returns it and its metrics
/// address.
async fn start_child(
    builder: &mut GatewayConfigBuilder,
    dir: &std::path::Path,
) -> anyhow::Result<(GatewayProcess, Option<std::net::SocketAddr>)> {
    let api = free_loopback_addr()?;
    let metrics = builder.metrics.then(free_loopback_addr).transpose()?;
    builder.api_listen = Some(api.to_string());
    builder.metrics_listen = metrics.map(|m| m.to_string());
    // Validates the configuration and writes the pepper file next to it.
    builder.build()?;
    let path = dir.join("gateway.toml");
    std::fs::write(&path, builder.toml()).with_context(|| format!("writing {}", path.display()))?;
    let program = std::env::current_exe().context("finding this executable")?;
    let process = GatewayProcess::spawn(&program, &path).await?;
    Ok((process, metrics))
}

/// The in-process gateway's configuration for run `c`: the operator serves exactly the
/// population's numbers, the registry is generated from its seed, every start gets the run's
/// expiry, and logs stay quiet.
fn gateway_builder(
    c: &SurgeConfig,
    smsc_addr: String,
    dir: &std::path::Path,
) -> GatewayConfigBuilder {
    let lo = c.msisdn_base;
    let hi = c.msisdn_base + u64::from(c.population.max(1)) - 1;
    let expiry = c.expiry_secs.unwrap_or(120);
    let mut b = GatewayConfigBuilder::new(smsc_addr, dir);
    b.client_id = "surge".into();
    b.token = TOKEN.into();
    b.rate_limit_per_sec = 1_000_000;
    b.response_timeout_secs = Some(10);
    b.ranges = vec![format!("{lo}..{hi}")];
    b.seed = c.population_seed;
    b.count = u64::from(c.population);
    b.msisdn_base = c.msisdn_base;
    b.applet_share = c.applet_share;
    b.default_expiry_secs = Some(expiry);
    b.stk_answer_timeout_secs = Some(expiry.min(90));
    b.pepper = "surge-load-test-pepper-32-octets!".into();
    b.metrics = true;
    b.log = Some(("pretty".into(), "warn".into()));
    b.durable_commit_interval_ms = c.durable_commit_interval_ms;
    b
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_in_process_gateway_config_loads_and_matches_the_population() {
        let c = SurgeConfig {
            population: 5_000,
            expiry_secs: Some(20),
            ..SurgeConfig::default()
        };
        let dir = std::env::temp_dir().join(format!("surge-config-test-{}", std::process::id()));
        let mut b = gateway_builder(&c, "127.0.0.1:2775".into(), &dir);
        b.binds = 2;
        b.max_in_flight = Some(300);
        b.max_submits_per_sec = Some(50);
        let g = b.build().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let generate = g.subscribers.generate.unwrap();
        assert_eq!(generate.count, 5_000);
        assert_eq!(generate.msisdn_base, c.msisdn_base);
        assert_eq!(generate.seed, c.population_seed);
        assert_eq!(g.limits.max_in_flight, 300);
        assert_eq!(g.operators[0].binds.len(), 2);
        assert!(g.operators[0]
            .binds
            .iter()
            .all(|b| b.max_submits_per_sec == Some(50)));
        assert_eq!(g.policy.default_expiry_secs, 20);
        assert!(g.metrics.listen.is_some());
    }
}
