//! The simulated SMSC with a seeded handset population, started on a free loopback port, and
//! a [`NetworkLog`] of what crossed the radio side, for tests to assert on.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context;
use sim_applet_model::udh;

use crate::smsc::network::{HandsetNetwork, MoMessage, MtMessage, MtOutcome, Network, SmFields};
use crate::smsc::population::PopulationConfig;
use crate::smsc::{self, AccountConfig, SmscConfig, SmscHandle};

/// What to start.
#[derive(Debug, Clone)]
pub struct SmscSpec {
    /// The handsets.
    pub population: PopulationConfig,
    /// The one ESME account (system id, password, bind limit, throttle).
    pub account: AccountConfig,
    /// The SMSC's `deliver_sm` window per bind.
    pub window: Option<usize>,
    /// Seed of the SMSC's own draws (message ids, faults).
    pub seed: Option<u64>,
    /// How long the SMSC waits for an answer (shutdown waits this long for `unbind_resp`).
    pub response_timeout: Option<Duration>,
    /// Delivery attempts of an MO refused with a temporary error, and the pause between them.
    pub mo_retries: Option<(u32, Duration)>,
    /// Keep a [`NetworkLog`] of every MT and MO (off for load runs: it holds every message).
    pub record: bool,
}

impl SmscSpec {
    /// Account `gw`/`pw`, the SMSC's defaults, recording on.
    pub fn new(population: PopulationConfig) -> Self {
        Self {
            population,
            account: AccountConfig::new("gw", "pw"),
            window: None,
            seed: None,
            response_timeout: None,
            mo_retries: None,
            record: true,
        }
    }
}

/// What went through the radio side.
#[derive(Debug, Default)]
pub struct NetworkLog {
    mt: Mutex<Vec<MtMessage>>,
    mo: Mutex<Vec<MoMessage>>,
    /// MO from these MSISDNs are dropped (a handset gone silent).
    muted: Mutex<HashSet<String>>,
    /// Counts MT, so a test can wait for one without sleeping.
    mt_seen: tokio::sync::watch::Sender<usize>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl NetworkLog {
    /// Every MT so far.
    pub fn mt(&self) -> Vec<MtMessage> {
        lock(&self.mt).clone()
    }

    /// Prompts sent to `msisdn`: USSR requests (op 2) and SIM data downloads (PID 0x7F), a
    /// concatenated download counted once (by its first segment).
    pub fn prompts_to(&self, msisdn: &str) -> usize {
        lock(&self.mt)
            .iter()
            .filter(|m| m.sm.destination.addr == msisdn)
            .filter(|m| {
                m.sm.ussd_service_op == Some(2)
                    || (m.sm.protocol_id == 0x7F && concat_part(&m.sm) <= 1)
            })
            .count()
    }

    /// MO from `msisdn` seen so far (the muted ones included).
    pub fn mo_from(&self, msisdn: &str) -> Vec<MoMessage> {
        lock(&self.mo)
            .iter()
            .filter(|m| m.sm.source.addr == msisdn)
            .cloned()
            .collect()
    }

    /// Waits until `msisdn` got at least `n` prompts.
    pub async fn wait_prompts(&self, msisdn: &str, n: usize) {
        let mut rx = self.mt_seen.subscribe();
        // The sender lives as long as `self`.
        let _ = rx.wait_for(|_| self.prompts_to(msisdn) >= n).await;
    }

    /// From now on the handset `msisdn` answers nothing (its MO are logged, not delivered).
    pub fn mute(&self, msisdn: &str) {
        lock(&self.muted).insert(msisdn.to_owned());
    }
}

/// Part number of a concatenated message, 0 when it is not concatenated.
fn concat_part(sm: &SmFields) -> u8 {
    if sm.esm_class & 0x40 == 0 {
        return 0;
    }
    udh::parse(&sm.short_message)
        .ok()
        .and_then(|h| h.concat)
        .map_or(0, |c| c.seq)
}

/// The population behind a recorder.
struct Recording {
    inner: HandsetNetwork,
    log: Arc<NetworkLog>,
}

impl Network for Recording {
    fn handle_mt(&mut self, now: Instant, mt: MtMessage) -> MtOutcome {
        lock(&self.log.mt).push(mt.clone());
        self.log.mt_seen.send_modify(|n| *n += 1);
        self.inner.handle_mt(now, mt)
    }

    fn poll_mo(&mut self, now: Instant) -> Option<MoMessage> {
        loop {
            let mo = self.inner.poll_mo(now)?;
            lock(&self.log.mo).push(mo.clone());
            if !lock(&self.log.muted).contains(&mo.sm.source.addr) {
                return Some(mo);
            }
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.inner.poll_timeout()
    }
}

/// Starts the SMSC on a free loopback port; the log is empty when `spec.record` is off.
pub async fn start_smsc(spec: SmscSpec) -> anyhow::Result<(SmscHandle, Arc<NetworkLog>)> {
    let population = HandsetNetwork::new(spec.population, tokio::time::Instant::now().into_std())
        .context("building the handset population")?;
    let log = Arc::new(NetworkLog::default());
    let network: Box<dyn Network> = if spec.record {
        Box::new(Recording {
            inner: population,
            log: log.clone(),
        })
    } else {
        Box::new(population)
    };
    let mut config = SmscConfig::new(
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        spec.account,
    );
    if let Some(w) = spec.window {
        config.window = w.max(1);
    }
    if let Some(seed) = spec.seed {
        config.seed = seed;
    }
    if let Some(t) = spec.response_timeout {
        config.response_timeout = t;
    }
    if let Some((attempts, delay)) = spec.mo_retries {
        config.mo_max_attempts = attempts;
        config.mo_retry_delay = delay;
    }
    let smsc = smsc::start(config, network)
        .await
        .context("starting the simulated SMSC")?;
    Ok((smsc, log))
}
