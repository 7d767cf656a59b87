//! Configuration of the simulated SMSC.
//!
//! [`SmscConfig`] is the plain struct the server runs on; tests build it directly. The binary
//! builds it from its command line plus an optional TOML file ([`FileConfig`], unknown keys
//! refused) through [`SmscConfig::from_file_text`]. A bad file gives a [`ConfigError`] naming
//! the key and the line; nothing falls back to defaults silently.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::faults::Fault;
use super::network::EchoConfig;

/// One ESME account: who may bind and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountConfig {
    pub system_id: String,
    pub password: String,
    /// Binds of this account open at once; one more is refused with ESME_RBINDFAIL.
    pub max_binds: usize,
    /// Submits per second per bind; `None` is unlimited.
    pub throttle_tps: Option<u32>,
}

impl AccountConfig {
    pub fn new(system_id: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            system_id: system_id.into(),
            password: password.into(),
            max_binds: 8,
            throttle_tps: None,
        }
    }
}

/// Everything the server needs.
#[derive(Debug, Clone, PartialEq)]
pub struct SmscConfig {
    pub listen: SocketAddr,
    pub accounts: Vec<AccountConfig>,
    /// TCP connections served at once (bound or not); more wait in the accept queue.
    pub max_connections: usize,
    /// Outstanding `deliver_sm` per bind.
    pub window: usize,
    /// A bind silent for this long gets an `enquire_link` from the SMSC.
    pub enquire_link_interval: Duration,
    /// How long the SMSC waits for a response (`enquire_link_resp`, `deliver_sm_resp`,
    /// `unbind_resp`) before giving up on it.
    pub response_timeout: Duration,
    /// Wait between attempts of a `deliver_sm` the ESME answered with an error.
    pub mo_retry_delay: Duration,
    /// Attempts per `deliver_sm` before it is dropped (counted in `mo_failed`).
    pub mo_max_attempts: u32,
    /// Deliveries held per account while it has no receiver bound; more are dropped.
    pub pending_capacity: usize,
    /// Account for MO messages whose destination no account has used yet; `None`: the first.
    pub mo_account: Option<String>,
    /// Faults active from the start.
    pub faults: Vec<Fault>,
    /// Seed of the fault randomness.
    pub seed: u64,
    pub echo: EchoConfig,
    /// SMPP over TLS on the listen address; `None` is plain TCP.
    pub tls: Option<TlsServerSettings>,
}

/// The SMSC's TLS identity (PEM files); ESMEs are not asked for certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsServerSettings {
    /// Certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// Private key of the leaf certificate.
    pub key_file: PathBuf,
}

impl SmscConfig {
    /// Defaults for one account, listening on `listen`.
    pub fn new(listen: SocketAddr, account: AccountConfig) -> Self {
        Self {
            listen,
            accounts: vec![account],
            max_connections: 256,
            window: 10,
            enquire_link_interval: Duration::from_secs(30),
            response_timeout: Duration::from_secs(5),
            mo_retry_delay: Duration::from_secs(1),
            mo_max_attempts: 3,
            pending_capacity: 10_000,
            mo_account: None,
            faults: Vec::new(),
            seed: 1,
            echo: EchoConfig::default(),
            tls: None,
        }
    }

    /// Builds the config from the command-line account and the text of a TOML file (may be
    /// empty). CLI values win over the file's `throttle_tps`.
    pub fn from_file_text(
        listen: SocketAddr,
        mut account: AccountConfig,
        cli_throttle_tps: Option<u32>,
        text: &str,
    ) -> Result<Self, ConfigError> {
        let file: FileConfig =
            toml::from_str(text).map_err(|e| ConfigError::from_toml(text, &e))?;
        let invalid = |key: &str, message: &str| ConfigError {
            key: key.to_owned(),
            line: line_of_key(text, key),
            message: message.to_owned(),
        };
        let mut c = Self::new(listen, account.clone());
        if let Some(v) = file.max_connections {
            if v == 0 {
                return Err(invalid("max_connections", "must be at least 1"));
            }
            c.max_connections = v;
        }
        if let Some(v) = file.window {
            if v == 0 {
                return Err(invalid("window", "must be at least 1"));
            }
            c.window = v;
        }
        if let Some(v) = file.enquire_link_interval_ms {
            if v == 0 {
                return Err(invalid("enquire_link_interval_ms", "must be at least 1"));
            }
            c.enquire_link_interval = Duration::from_millis(v);
        }
        if let Some(v) = file.response_timeout_ms {
            if v == 0 {
                return Err(invalid("response_timeout_ms", "must be at least 1"));
            }
            c.response_timeout = Duration::from_millis(v);
        }
        if let Some(v) = file.mo_retry_delay_ms {
            c.mo_retry_delay = Duration::from_millis(v);
        }
        if let Some(v) = file.mo_max_attempts {
            if v == 0 {
                return Err(invalid("mo_max_attempts", "must be at least 1"));
            }
            c.mo_max_attempts = v;
        }
        if let Some(v) = file.pending_capacity {
            c.pending_capacity = v;
        }
        if let Some(v) = file.seed {
            c.seed = v;
        }
        if let Some(v) = file.max_binds {
            if v == 0 {
                return Err(invalid("max_binds", "must be at least 1"));
            }
            account.max_binds = v;
        }
        if file.throttle_tps == Some(0) {
            return Err(invalid(
                "throttle_tps",
                "must be at least 1 (omit it for no limit)",
            ));
        }
        account.throttle_tps = cli_throttle_tps.or(file.throttle_tps);
        c.accounts = vec![account];
        for a in file.accounts {
            if a.system_id.is_empty() || a.system_id.len() > 15 {
                return Err(invalid("system_id", "must be 1 to 15 characters"));
            }
            if a.password.len() > 8 {
                return Err(invalid("password", "must be at most 8 characters"));
            }
            if c.accounts.iter().any(|x| x.system_id == a.system_id) {
                return Err(invalid("system_id", "duplicate account"));
            }
            if a.throttle_tps == Some(0) || a.max_binds == Some(0) {
                return Err(invalid(
                    "accounts",
                    "throttle_tps and max_binds must be at least 1",
                ));
            }
            c.accounts.push(AccountConfig {
                system_id: a.system_id,
                password: a.password,
                max_binds: a.max_binds.unwrap_or(8),
                throttle_tps: a.throttle_tps,
            });
        }
        if let Some(id) = file.mo_account {
            if !c.accounts.iter().any(|a| a.system_id == id) {
                return Err(invalid("mo_account", "names no account"));
            }
            c.mo_account = Some(id);
        }
        if let Some(e) = file.echo {
            if let Some(v) = e.ussd_reply_delay_ms {
                c.echo.ussd_reply_delay = Duration::from_millis(v);
            }
            if let Some(v) = e.ussd_reply_text {
                c.echo.ussd_reply_text = v;
            }
        }
        if let Some(f) = file.faults {
            if let Some(v) = f.delay_responses_ms {
                c.faults
                    .push(Fault::DelayResponses(Duration::from_millis(v)));
            }
            if let Some(p) = f.drop_response_probability {
                if !(0.0..=1.0).contains(&p) {
                    return Err(invalid("drop_response_probability", "must be in 0.0..=1.0"));
                }
                c.faults.push(Fault::DropResponses { probability: p });
            }
            if let Some(n) = f.generic_nack_count {
                c.faults.push(Fault::GenericNack { count: n });
            }
            if let Some(v) = f.throttle_storm_ms {
                c.faults
                    .push(Fault::ThrottleStorm(Duration::from_millis(v)));
            }
        }
        Ok(c)
    }
}

/// The TOML file: everything not on the command line. All keys optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub max_connections: Option<usize>,
    pub window: Option<usize>,
    pub enquire_link_interval_ms: Option<u64>,
    pub response_timeout_ms: Option<u64>,
    pub mo_retry_delay_ms: Option<u64>,
    pub mo_max_attempts: Option<u32>,
    pub pending_capacity: Option<usize>,
    pub seed: Option<u64>,
    /// Max binds of the command-line account.
    pub max_binds: Option<usize>,
    /// Throttle of the command-line account (`--throttle-tps` wins).
    pub throttle_tps: Option<u32>,
    pub mo_account: Option<String>,
    #[serde(default)]
    pub accounts: Vec<FileAccount>,
    pub echo: Option<FileEcho>,
    pub faults: Option<FileFaults>,
}

/// `[[accounts]]`: more accounts besides the command-line one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAccount {
    pub system_id: String,
    pub password: String,
    pub max_binds: Option<usize>,
    pub throttle_tps: Option<u32>,
}

/// `[echo]`: the stand-in network.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEcho {
    pub ussd_reply_delay_ms: Option<u64>,
    pub ussd_reply_text: Option<String>,
}

/// `[faults]`: faults active from the start.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileFaults {
    pub delay_responses_ms: Option<u64>,
    pub drop_response_probability: Option<f64>,
    pub generic_nack_count: Option<u32>,
    pub throttle_storm_ms: Option<u64>,
}

/// A configuration file the SMSC will not run on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config key `{key}` (line {line}): {message}")]
pub struct ConfigError {
    /// The offending key as written (or the table header), empty if unknown.
    pub key: String,
    /// 1-based line; 0 if the key does not appear in the file.
    pub line: usize,
    pub message: String,
}

impl ConfigError {
    fn from_toml(text: &str, e: &toml::de::Error) -> Self {
        let (line, key) = match e.span() {
            Some(span) => {
                let start = span.start.min(text.len());
                let line = text[..start].matches('\n').count() + 1;
                let line_text = text.lines().nth(line - 1).unwrap_or("");
                let key = line_text
                    .split('=')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .trim_matches(|c| c == '[' || c == ']')
                    .to_owned();
                (line, key)
            }
            None => (0, String::new()),
        };
        Self {
            key,
            line,
            message: e.message().to_owned(),
        }
    }
}

/// The first line where `key` is assigned, 1-based; 0 if none.
fn line_of_key(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map_or(0, |i| i + 1)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<SmscConfig, ConfigError> {
        let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
        SmscConfig::from_file_text(listen, AccountConfig::new("gw", "pw"), None, text)
    }

    #[test]
    fn the_example_config_loads() {
        let c = load(include_str!("../../smsc-sim.example.toml")).unwrap();
        assert_eq!(c.accounts.len(), 2);
        assert_eq!(c.accounts[0].throttle_tps, Some(100));
        assert_eq!(c.echo.ussd_reply_delay, Duration::from_millis(800));
    }

    #[test]
    fn an_empty_file_gives_the_defaults() {
        let c = load("").unwrap();
        assert_eq!(c.window, 10);
        assert_eq!(c.accounts.len(), 1);
        assert!(c.faults.is_empty());
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let e = load("window = 5\nwindw = 3\n").unwrap_err();
        assert_eq!(e.key, "windw");
        assert_eq!(e.line, 2);
        assert!(e.message.contains("unknown field"), "{}", e.message);
    }

    #[test]
    fn an_unknown_key_in_a_table_is_named_with_its_line() {
        let e = load("[faults]\ndelay_responses_ms = 5\nstorm = 1\n").unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("storm", 3));
    }

    #[test]
    fn a_wrong_type_names_the_key() {
        let e = load("window = \"ten\"\n").unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("window", 1));
    }

    #[test]
    fn an_invalid_value_names_the_key_and_line() {
        let e = load("\n\nwindow = 0\n").unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("window", 3));
    }

    #[test]
    fn the_command_line_throttle_wins_over_the_file() {
        let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let c = SmscConfig::from_file_text(
            listen,
            AccountConfig::new("gw", "pw"),
            Some(50),
            "throttle_tps = 10\n",
        )
        .unwrap();
        assert_eq!(c.accounts[0].throttle_tps, Some(50));
    }

    #[test]
    fn accounts_echo_and_faults_are_read() {
        let c = load(
            "max_binds = 2\n[[accounts]]\nsystem_id = \"other\"\npassword = \"x\"\nthrottle_tps = 5\n\
             [echo]\nussd_reply_delay_ms = 10\n[faults]\nthrottle_storm_ms = 1000\n",
        )
        .unwrap();
        assert_eq!(c.accounts[0].max_binds, 2);
        assert_eq!(c.accounts[1].system_id, "other");
        assert_eq!(c.accounts[1].throttle_tps, Some(5));
        assert_eq!(c.echo.ussd_reply_delay, Duration::from_millis(10));
        assert_eq!(c.faults, vec![Fault::ThrottleStorm(Duration::from_secs(1))]);
    }
}
