//! [`GatewayConfigBuilder`]: one gateway configuration for the in-process runs of the tests
//! and of `surge`, written as TOML and loaded like a deployed one.

use std::path::{Path, PathBuf};

use anyhow::Context;
use gateway::config::GatewayConfig;

/// What the harness's gateway looks like; the defaults fit a small test population.
#[derive(Debug, Clone)]
pub struct GatewayConfigBuilder {
    /// `host:port` of the SMSC every bind connects to.
    pub smsc_addr: String,
    pub system_id: String,
    pub password: String,
    /// Binds of the one operator (at least one).
    pub binds: u32,
    /// SMPP window of each bind (absent: the gateway's default).
    pub window: Option<u32>,
    /// `response_timeout_secs` of each bind (absent: the gateway's default).
    pub response_timeout_secs: Option<u32>,
    /// `max_submits_per_sec` of each bind (absent: unpaced).
    pub max_submits_per_sec: Option<u32>,
    /// The API client's id and bearer token.
    pub client_id: String,
    pub token: String,
    /// The API client's rate limit and burst.
    pub rate_limit_per_sec: u32,
    /// `[limits] max_in_flight` (absent: the gateway's default).
    pub max_in_flight: Option<u32>,
    /// The operator's number ranges.
    pub ranges: Vec<String>,
    /// The generated subscriber registry: seed, count, MSISDN of subscriber 0, applet share.
    pub seed: u64,
    pub count: u64,
    pub msisdn_base: u64,
    pub applet_share: f64,
    /// `[policy]`.
    pub loa3_over_ussd: bool,
    pub submit_timeout_secs: Option<u64>,
    pub default_expiry_secs: Option<u64>,
    pub stk_answer_timeout_secs: Option<u64>,
    /// `[store]` TTL of ended authorizations and idempotency keys, and the purge interval
    /// (absent: the gateway's defaults).
    pub terminal_ttl_secs: Option<u64>,
    pub purge_interval_secs: Option<u64>,
    /// `[store] durable_commit_interval_ms` (absent: the gateway's default).
    pub durable_commit_interval_ms: Option<u64>,
    /// Directory of the store, the audit log and the pepper file.
    pub dir: PathBuf,
    /// The PIN pepper written to `dir/pepper`.
    pub pepper: String,
    /// Serve `/metrics` (on `metrics_listen`, or a free port).
    pub metrics: bool,
    /// Fixed listen addresses of the API and of `/metrics` (absent: a free port each), for a
    /// gateway that must come back on the same addresses after a restart.
    pub api_listen: Option<String>,
    pub metrics_listen: Option<String>,
    /// `[store] backend = "redis"` at this URL with this key prefix (absent: the embedded
    /// store in `dir`).
    pub redis: Option<(String, String)>,
    /// `[store] backend = "journal"` in `dir` (unless `redis` is set).
    pub journal: bool,
    /// `[store] node_id` (absent: derived from the store path).
    pub node_id: Option<String>,
    /// `[log]` format and filter (absent: the gateway's default).
    pub log: Option<(String, String)>,
}

impl GatewayConfigBuilder {
    /// One operator `sim` with one bind to `smsc_addr` (account `gw`/`pw`), ranges `48600`, a
    /// registry of 64 subscribers from seed 42 at 48600000000 with half the SIMs carrying the
    /// applet, the store in `dir`, API on a free port, no metrics listener.
    pub fn new(smsc_addr: impl Into<String>, dir: impl Into<PathBuf>) -> Self {
        Self {
            smsc_addr: smsc_addr.into(),
            system_id: "gw".into(),
            password: "pw".into(),
            binds: 1,
            window: None,
            response_timeout_secs: None,
            max_submits_per_sec: None,
            client_id: "test".into(),
            token: "test-token".into(),
            rate_limit_per_sec: 1000,
            max_in_flight: None,
            ranges: vec!["48600".into()],
            seed: 42,
            count: 64,
            msisdn_base: 48_600_000_000,
            applet_share: 0.5,
            loa3_over_ussd: false,
            submit_timeout_secs: None,
            default_expiry_secs: None,
            stk_answer_timeout_secs: None,
            terminal_ttl_secs: None,
            purge_interval_secs: None,
            durable_commit_interval_ms: None,
            dir: dir.into(),
            pepper: "harness pin pepper, long enough".into(),
            metrics: false,
            api_listen: None,
            metrics_listen: None,
            redis: None,
            journal: false,
            node_id: None,
            log: None,
        }
    }

    /// Where the store lives (the journal's directory, or the redb file).
    pub fn store_path(&self) -> PathBuf {
        if self.journal && self.redis.is_none() {
            self.dir.join("store.journal")
        } else {
            self.dir.join("store.redb")
        }
    }

    fn pepper_path(&self) -> PathBuf {
        self.dir.join("pepper")
    }

    /// The configuration as TOML (the pepper file is written by [`Self::build`]).
    pub fn toml(&self) -> String {
        let mut t = String::new();
        let line = |t: &mut String, s: String| {
            t.push_str(&s);
            t.push('\n');
        };
        let api = self.api_listen.as_deref().unwrap_or("127.0.0.1:0");
        line(&mut t, format!("[api]\nlisten = \"{api}\""));
        line(
            &mut t,
            format!(
                "[[api.clients]]\nid = \"{}\"\ntoken = \"{}\"\nrate_limit_per_sec = {}\nrate_limit_burst = {}\n# The tests' callback receivers listen on loopback.\ncallback_allow = [\"127.0.0.1\", \"localhost\"]",
                self.client_id, self.token, self.rate_limit_per_sec, self.rate_limit_per_sec
            ),
        );
        if let Some(n) = self.max_in_flight {
            line(&mut t, format!("[limits]\nmax_in_flight = {}", n.max(1)));
        }
        let ranges: Vec<String> = self.ranges.iter().map(|r| format!("\"{r}\"")).collect();
        line(
            &mut t,
            format!(
                "[[operators]]\nname = \"sim\"\nranges = [{}]\ndialect = \"spec-default\"\nservice_code = \"*123#\"\nsms_source_address = \"4800\"",
                ranges.join(", ")
            ),
        );
        for _ in 0..self.binds.max(1) {
            line(
                &mut t,
                format!(
                    "[[operators.binds]]\naddress = \"{}\"\nsystem_id = \"{}\"\npassword = \"{}\"",
                    self.smsc_addr, self.system_id, self.password
                ),
            );
            if let Some(w) = self.window {
                line(&mut t, format!("window = {}", w.max(1)));
            }
            if let Some(s) = self.response_timeout_secs {
                line(&mut t, format!("response_timeout_secs = {s}"));
            }
            if let Some(r) = self.max_submits_per_sec {
                line(&mut t, format!("max_submits_per_sec = {r}"));
            }
        }
        line(
            &mut t,
            format!(
                "[subscribers]\npepper_file = \"{}\"\n[subscribers.generate]\nseed = {}\ncount = {}\nmsisdn_base = {}\napplet_share = {}",
                toml_path(&self.pepper_path()),
                self.seed,
                self.count,
                self.msisdn_base,
                self.applet_share
            ),
        );
        line(
            &mut t,
            format!("[policy]\nloa3_over_ussd = {}", self.loa3_over_ussd),
        );
        for (key, value) in [
            ("submit_timeout_secs", self.submit_timeout_secs),
            ("default_expiry_secs", self.default_expiry_secs),
            ("stk_answer_timeout_secs", self.stk_answer_timeout_secs),
        ] {
            if let Some(v) = value {
                line(&mut t, format!("{key} = {v}"));
            }
        }
        line(
            &mut t,
            format!("[store]\npath = \"{}\"", toml_path(&self.store_path())),
        );
        if let Some((url, prefix)) = &self.redis {
            line(
                &mut t,
                format!("backend = \"redis\"\nurl = \"{url}\"\nkey_prefix = \"{prefix}\""),
            );
        } else if self.journal {
            line(&mut t, "backend = \"journal\"".into());
        }
        if let Some(id) = &self.node_id {
            line(&mut t, format!("node_id = \"{id}\""));
        }
        for (key, value) in [
            ("terminal_ttl_secs", self.terminal_ttl_secs),
            ("purge_interval_secs", self.purge_interval_secs),
            (
                "durable_commit_interval_ms",
                self.durable_commit_interval_ms,
            ),
        ] {
            if let Some(v) = value {
                line(&mut t, format!("{key} = {v}"));
            }
        }
        if self.metrics {
            let listen = self.metrics_listen.as_deref().unwrap_or("127.0.0.1:0");
            line(&mut t, format!("[metrics]\nlisten = \"{listen}\""));
        }
        // The tests' callback receivers and realms listen on plain http on loopback.
        line(&mut t, "[outbound]\nallow_http = true".into());
        if let Some((format, filter)) = &self.log {
            line(
                &mut t,
                format!("[log]\nformat = \"{format}\"\nfilter = \"{filter}\""),
            );
        }
        t
    }

    /// Writes the pepper file and loads the configuration (validated as `gateway serve` does).
    pub fn build(&self) -> anyhow::Result<GatewayConfig> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        std::fs::write(self.pepper_path(), &self.pepper).context("writing the pepper file")?;
        GatewayConfig::from_toml(&self.toml(), &[])
            .map_err(|e| anyhow::anyhow!("harness gateway config: {e}"))
    }
}

/// A path inside a TOML string (forward slashes, so Windows paths need no escaping).
fn toml_path(p: &Path) -> String {
    p.display().to_string().replace('\\', "/")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_load_and_describe_the_population() {
        let dir = std::env::temp_dir().join(format!("harness-config-{}", std::process::id()));
        let b = GatewayConfigBuilder::new("127.0.0.1:2775", &dir);
        let c = b.build().unwrap();
        assert_eq!(c.operators.len(), 1);
        assert_eq!(c.operators[0].binds.len(), 1);
        let g = c.subscribers.generate.as_ref().unwrap();
        assert_eq!((g.seed, g.count, g.msisdn_base), (42, 64, 48_600_000_000));
        assert_eq!(c.store.path, b.store_path());
        assert!(c.metrics.listen.is_none());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn every_setting_reaches_the_loaded_configuration() {
        let dir = std::env::temp_dir().join(format!("harness-config-all-{}", std::process::id()));
        let mut b = GatewayConfigBuilder::new("127.0.0.1:2775", &dir);
        b.binds = 3;
        b.window = Some(7);
        b.max_in_flight = Some(12);
        b.ranges = vec!["48600000000..48600000099".into()];
        b.loa3_over_ussd = true;
        b.submit_timeout_secs = Some(2);
        b.default_expiry_secs = Some(30);
        b.metrics = true;
        b.log = Some(("json".into(), "warn".into()));
        b.durable_commit_interval_ms = Some(2);
        let c = b.build().unwrap();
        assert_eq!(c.operators[0].binds.len(), 3);
        assert!(c.operators[0].binds.iter().all(|x| x.window == 7));
        assert_eq!(c.limits.max_in_flight, 12);
        assert!(c.policy.loa3_over_ussd);
        assert_eq!(c.policy.submit_timeout_secs, 2);
        assert_eq!(c.policy.default_expiry_secs, 30);
        assert!(c.metrics.listen.is_some());
        assert_eq!(c.store.durable_commit_interval_ms, 2);
        let _ = std::fs::remove_dir_all(dir);
    }
}
