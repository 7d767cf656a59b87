//! The system under test for one run: a running gateway given by URL, or one brought up here
//! on loopback with the harness (the simulated SMSC with the handset population, the gateway
//! in-process with its registry generated from the same seed).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;

use super::config::{GatewayMode, SmscMode, SurgeConfig};
use super::target::{self, HttpTarget, Target};
use crate::harness::config::GatewayConfigBuilder;
use crate::harness::network::{start_smsc, SmscSpec};
use crate::smsc::population::PopulationConfig;
use crate::smsc::{AccountConfig, SmscHandle};

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
                let started = match builder.build() {
                    Ok(config) => gateway::serve::start(config)
                        .await
                        .context("starting the in-process gateway"),
                    Err(e) => Err(e),
                };
                let handle = match started {
                    Ok(h) => h,
                    Err(e) => {
                        if let Some(s) = smsc_handle {
                            s.shutdown().await;
                        }
                        let _ = std::fs::remove_dir_all(&dir);
                        return Err(e);
                    }
                };
                let target = HttpTarget::new(&format!("http://{}", handle.api_addr), TOKEN)?;
                let metrics_url = handle.metrics_addr.map(|a| format!("http://{a}/metrics"));
                let env = Self {
                    target: Arc::new(target),
                    metrics_url,
                    smsc: smsc_handle,
                    gateway: Some(handle),
                    temp_dir: Some(dir),
                };
                env.wait_ready().await;
                Ok(env)
            }
        }
    }

    /// Waits (bounded) until the gateway says it is ready, so the first arrivals do not meet
    /// binds still coming up.
    async fn wait_ready(&self) {
        let Some(gw) = &self.gateway else { return };
        let client = target::http_client();
        let url = format!("http://{}/readyz", gw.api_addr);
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            let req = axum::http::Request::builder()
                .uri(&url)
                .body(http_body_util::Full::new(bytes::Bytes::new()));
            if let Ok(req) = req {
                if let Ok(resp) = client.request(req).await {
                    if resp.status().is_success() {
                        return;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::warn!("gateway not ready after 10 s; starting anyway");
    }

    pub(super) async fn shutdown(self) {
        if let Some(g) = self.gateway {
            g.shutdown().await;
        }
        if let Some(s) = self.smsc {
            s.shutdown().await;
        }
        if let Some(d) = self.temp_dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
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
