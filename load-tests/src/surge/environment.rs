//! The system under test for one run: a running gateway given by URL, or one brought up here
//! on loopback with the harness (the simulated SMSC with the handset population, the gateway
//! in-process with its registry generated from the same seed).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;

use super::config::{GatewayMode, SmscMode, SurgeConfig};
use super::gateway_process::{free_loopback_addr, GatewayProcess};
use super::target::{self, HttpTarget, Target};
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
    pub(super) gateway: Option<gateway::serve::ServeHandle>,
    /// The gateway when it runs in a child process (chaos runs kill it).
    pub(super) gateway_process: Option<tokio::sync::Mutex<GatewayProcess>>,
    /// The API of the gateway started here, in-process or child.
    pub(super) api_addr: Option<std::net::SocketAddr>,
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
                gateway: None,
                gateway_process: None,
                api_addr: None,
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
                        account.max_binds = (*binds as usize).max(1);
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
                let mut builder = gateway_builder(c, smsc_addr, &dir);
                builder.system_id = system_id;
                builder.password = password;
                builder.binds = *binds;
                builder.window = Some(*window);
                builder.max_submits_per_sec = *max_submits_per_sec;
                builder.max_in_flight = Some(*max_in_flight);
                builder.loa3_over_ussd = *loa3_over_ussd;
                let started = if c.wants_gateway_process() {
                    start_child(&mut builder, &dir)
                        .await
                        .map(|(p, metrics)| (None, Some(p), metrics))
                } else {
                    match builder.build() {
                        Ok(config) => gateway::serve::start(config)
                            .await
                            .context("starting the in-process gateway")
                            .map(|h| {
                                let metrics = h.metrics_addr;
                                (Some(h), None, metrics)
                            }),
                        Err(e) => Err(e),
                    }
                };
                let (handle, process, metrics_addr) = match started {
                    Ok(h) => h,
                    Err(e) => {
                        if let Some(s) = smsc_handle {
                            s.shutdown().await;
                        }
                        let _ = std::fs::remove_dir_all(&dir);
                        return Err(e);
                    }
                };
                let api_addr = match (&handle, &process) {
                    (Some(h), _) => h.api_addr,
                    (None, Some(p)) => p.api_addr,
                    (None, None) => unreachable!("one of the two was started"),
                };
                let target = HttpTarget::new(&format!("http://{api_addr}"), TOKEN)?;
                let metrics_url = metrics_addr.map(|a| format!("http://{a}/metrics"));
                let env = Self {
                    target: Arc::new(target),
                    metrics_url,
                    smsc: smsc_handle,
                    gateway: handle,
                    gateway_process: process.map(tokio::sync::Mutex::new),
                    api_addr: Some(api_addr),
                    temp_dir: Some(dir),
                };
                env.wait_ready().await;
                Ok(env)
            }
        }
    }

    /// Waits (bounded) until the gateway says it is ready, so the first arrivals do not meet
    /// binds still coming up.
    async fn wait_ready(&self) -> bool {
        let Some(api) = self.api_addr else {
            return true;
        };
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
        if let Some(g) = self.gateway {
            g.shutdown().await;
        }
        if let Some(p) = self.gateway_process {
            p.into_inner().stop(Duration::from_secs(15)).await;
        }
        if let Some(s) = self.smsc {
            s.shutdown().await;
        }
        if let Some(d) = self.temp_dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
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
