//! Checks serde cannot express: one secret source out of several, value ranges, SMPP field
//! lengths, number ranges that two operators both claim, and that files named for TLS exist. Each failure names the key path
//! the way [`super::ConfigError::key`] does; the loader adds the line.

use std::collections::HashSet;

use tokio_rustls::rustls::pki_types::ServerName;

use super::{ConfigError, GatewayConfig, StoreBackend};
use crate::routing::ranges::ranges_overlap;

fn one_of(key: &str, given: &[(&str, bool)]) -> Result<(), ConfigError> {
    let n = given.iter().filter(|(_, set)| *set).count();
    if n == 1 {
        return Ok(());
    }
    let names: Vec<&str> = given.iter().map(|(n, _)| *n).collect();
    let (at, what) = if n == 0 {
        (key.to_owned(), "none is given")
    } else {
        let second = given
            .iter()
            .filter(|(_, set)| *set)
            .nth(1)
            .map_or("", |(n, _)| *n);
        (format!("{key}.{second}"), "more than one is given")
    };
    Err(ConfigError::at(
        at,
        format!("exactly one of {} is required; {what}", names.join(", ")),
    ))
}

fn nonzero(key: String, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        Err(ConfigError::at(key, "must be at least 1"))
    } else {
        Ok(())
    }
}

fn smpp_field(key: String, value: &str, max: usize) -> Result<(), ConfigError> {
    if value.len() > max || !value.is_ascii() {
        Err(ConfigError::at(
            key,
            format!("must be ASCII of at most {max} characters"),
        ))
    } else {
        Ok(())
    }
}

impl GatewayConfig {
    /// Check what deserialization cannot; the error's key names the offending value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // [api]
        if self.api.clients.is_empty() {
            return Err(ConfigError::at(
                "api.clients",
                "at least one client is required",
            ));
        }
        let mut ids = HashSet::new();
        for (i, c) in self.api.clients.iter().enumerate() {
            let key = format!("api.clients[{i}]");
            if c.id.is_empty() {
                return Err(ConfigError::at(format!("{key}.id"), "must not be empty"));
            }
            if !ids.insert(c.id.as_str()) {
                return Err(ConfigError::at(
                    format!("{key}.id"),
                    format!("duplicate client id {:?}", c.id),
                ));
            }
            one_of(
                &key,
                &[
                    ("token", c.token.is_some()),
                    ("token_file", c.token_file.is_some()),
                    ("token_env", c.token_env.is_some()),
                ],
            )?;
            nonzero(
                format!("{key}.rate_limit_per_sec"),
                c.rate_limit_per_sec.into(),
            )?;
            if c.rate_limit_burst < c.rate_limit_per_sec {
                return Err(ConfigError::at(
                    format!("{key}.rate_limit_burst"),
                    "must be at least rate_limit_per_sec",
                ));
            }
        }

        if let Some(tls) = &self.api.tls {
            for (name, path) in [("cert", &tls.cert), ("key", &tls.key)] {
                if !path.is_file() {
                    return Err(ConfigError::at(
                        format!("api.tls.{name}"),
                        format!("{} is not a readable file", path.display()),
                    ));
                }
            }
        }

        // [outbound]
        let mut hosts = HashSet::new();
        for (i, t) in self.outbound.targets.iter().enumerate() {
            let key = format!("outbound.targets[{i}]");
            if t.host.trim().is_empty() || t.host.contains(['/', ' ']) {
                return Err(ConfigError::at(
                    format!("{key}.host"),
                    "must be a host name or an IP address (no scheme, path or spaces)",
                ));
            }
            if !hosts.insert(t.host.to_ascii_lowercase()) {
                return Err(ConfigError::at(
                    format!("{key}.host"),
                    format!("duplicate host {:?}", t.host),
                ));
            }
            if !t.ca_file.is_file() {
                return Err(ConfigError::at(
                    format!("{key}.ca_file"),
                    format!("{} is not a readable file", t.ca_file.display()),
                ));
            }
        }

        // [store]
        if self.store.backend == StoreBackend::Redis {
            match self.store.url.as_deref() {
                Some(url) if url.starts_with("redis://") || url.starts_with("rediss://") => {}
                Some(_) => {
                    return Err(ConfigError::at(
                        "store.url",
                        "must be a redis:// URL, or rediss:// for TLS",
                    ))
                }
                None => {
                    return Err(ConfigError::at(
                        "store.url",
                        "is required with backend = \"redis\"",
                    ))
                }
            }
            if let Some(ca) = &self.store.ca_file {
                if !self
                    .store
                    .url
                    .as_deref()
                    .is_some_and(|u| u.starts_with("rediss://"))
                {
                    return Err(ConfigError::at(
                        "store.ca_file",
                        "is only used with a rediss:// (TLS) URL",
                    ));
                }
                if !ca.is_file() {
                    return Err(ConfigError::at(
                        "store.ca_file",
                        format!("{} is not a readable file", ca.display()),
                    ));
                }
            }
            if self.store.key_prefix.is_empty()
                || self
                    .store
                    .key_prefix
                    .chars()
                    .any(|c| c == '{' || c == '}' || c.is_whitespace() || c.is_control())
            {
                return Err(ConfigError::at(
                    "store.key_prefix",
                    "must be non-empty, without braces or spaces",
                ));
            }
            if let Some(id) = &self.store.node_id {
                if id.is_empty()
                    || id.len() > 64
                    || id.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    return Err(ConfigError::at(
                        "store.node_id",
                        "must be 1 to 64 characters without spaces",
                    ));
                }
            }
            nonzero(
                "store.response_timeout_ms".into(),
                self.store.response_timeout_ms,
            )?;
            nonzero(
                "store.connect_timeout_ms".into(),
                self.store.connect_timeout_ms,
            )?;
        }
        nonzero(
            "store.terminal_ttl_secs".into(),
            self.store.terminal_ttl_secs,
        )?;
        nonzero(
            "store.purge_interval_secs".into(),
            self.store.purge_interval_secs,
        )?;
        if self.store.durable_commit_interval_ms > 100 {
            // Every durable write would wait up to this long under load.
            return Err(ConfigError::at(
                "store.durable_commit_interval_ms",
                "must be at most 100",
            ));
        }
        if !(1..=65_536).contains(&self.store.cache_mb) {
            return Err(ConfigError::at(
                "store.cache_mb",
                "must be 1 to 65536 (MiB)",
            ));
        }

        // [limits]
        nonzero(
            "limits.max_in_flight".into(),
            self.limits.max_in_flight.into(),
        )?;
        nonzero(
            "limits.per_msisdn_concurrent".into(),
            self.limits.per_msisdn_concurrent.into(),
        )?;

        // [[operators]]
        if self.operators.is_empty() {
            return Err(ConfigError::at(
                "operators",
                "at least one operator is required",
            ));
        }
        let mut names = HashSet::new();
        for (i, op) in self.operators.iter().enumerate() {
            let key = format!("operators[{i}]");
            if op.name.is_empty() || op.name.contains(',') {
                return Err(ConfigError::at(
                    format!("{key}.name"),
                    "must be non-empty, without commas",
                ));
            }
            if !names.insert(op.name.as_str()) {
                return Err(ConfigError::at(
                    format!("{key}.name"),
                    format!("duplicate operator {:?}", op.name),
                ));
            }
            if op.ranges.is_empty() {
                return Err(ConfigError::at(
                    format!("{key}.ranges"),
                    "at least one number range is required",
                ));
            }
            if op.binds.is_empty() {
                return Err(ConfigError::at(
                    format!("{key}.binds"),
                    "at least one bind is required",
                ));
            }
            nonzero(format!("{key}.max_prompt_wait_ms"), op.max_prompt_wait_ms)?;
            smpp_field(format!("{key}.service_code"), &op.service_code, 20)?;
            if op.service_code.is_empty() {
                return Err(ConfigError::at(
                    format!("{key}.service_code"),
                    "must not be empty",
                ));
            }
            smpp_field(
                format!("{key}.sms_source_address"),
                &op.sms_source_address,
                20,
            )?;
            if op.sms_source_address.is_empty() {
                return Err(ConfigError::at(
                    format!("{key}.sms_source_address"),
                    "must not be empty",
                ));
            }
            if let super::DialectChoice::Inline(d) = &op.dialect {
                nonzero(format!("{key}.dialect.max_octets"), d.max_octets as u64)?;
                nonzero(
                    format!("{key}.dialect.step_timeout_secs"),
                    d.step_timeout_secs,
                )?;
                if d.session_timeout_secs < d.step_timeout_secs {
                    return Err(ConfigError::at(
                        format!("{key}.dialect.session_timeout_secs"),
                        "must be at least step_timeout_secs",
                    ));
                }
            }
            for (j, b) in op.binds.iter().enumerate() {
                let key = format!("{key}.binds[{j}]");
                if b.address
                    .rsplit_once(':')
                    .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
                {
                    return Err(ConfigError::at(
                        format!("{key}.address"),
                        "expected host:port",
                    ));
                }
                smpp_field(format!("{key}.system_id"), &b.system_id, 15)?;
                smpp_field(format!("{key}.system_type"), &b.system_type, 12)?;
                one_of(
                    &key,
                    &[
                        ("password", b.password.is_some()),
                        ("password_env", b.password_env.is_some()),
                    ],
                )?;
                if let Some(p) = &b.password {
                    smpp_field(format!("{key}.password"), p.expose(), 8)?;
                }
                nonzero(format!("{key}.window"), b.window.into())?;
                nonzero(format!("{key}.enquire_link_secs"), b.enquire_link_secs)?;
                nonzero(
                    format!("{key}.response_timeout_secs"),
                    b.response_timeout_secs,
                )?;
                if let Some(rate) = b.max_submits_per_sec {
                    nonzero(format!("{key}.max_submits_per_sec"), rate.into())?;
                }
                if b.throttle_backoff_max_ms < b.throttle_backoff_initial_ms {
                    return Err(ConfigError::at(
                        format!("{key}.throttle_backoff_max_ms"),
                        "must be at least throttle_backoff_initial_ms",
                    ));
                }
                match (&b.tls_ca_file, &b.tls_server_name) {
                    (None, None) => {}
                    (Some(_), None) => {
                        return Err(ConfigError::at(
                            format!("{key}.tls_server_name"),
                            "is required with tls_ca_file",
                        ))
                    }
                    (None, Some(_)) => {
                        return Err(ConfigError::at(
                            format!("{key}.tls_ca_file"),
                            "is required with tls_server_name",
                        ))
                    }
                    (Some(ca), Some(name)) => {
                        if !ca.is_file() {
                            return Err(ConfigError::at(
                                format!("{key}.tls_ca_file"),
                                format!("{} is not a readable file", ca.display()),
                            ));
                        }
                        if ServerName::try_from(name.as_str()).is_err() {
                            return Err(ConfigError::at(
                                format!("{key}.tls_server_name"),
                                "must be a DNS name or an IP address",
                            ));
                        }
                    }
                }
            }
        }
        // Ranges two operators both claim (exceptions go to the portability file).
        for (i, a) in self.operators.iter().enumerate() {
            for (j, b) in self.operators.iter().enumerate().skip(i + 1) {
                for ra in &a.ranges {
                    for (k, rb) in b.ranges.iter().enumerate() {
                        if ranges_overlap(ra, rb) {
                            return Err(ConfigError::at(
                                format!("operators[{j}].ranges[{k}]"),
                                format!(
                                    "range {rb} of {:?} overlaps range {ra} of {:?} (operators[{i}])",
                                    b.name, a.name
                                ),
                            ));
                        }
                    }
                }
            }
        }

        // [routing]
        nonzero(
            "routing.portability_max_entries".into(),
            self.routing.portability_max_entries as u64,
        )?;

        // [subscribers]
        let s = &self.subscribers;
        one_of(
            "subscribers",
            &[
                ("file", s.file.is_some()),
                ("generate", s.generate.is_some()),
            ],
        )?;
        one_of(
            "subscribers",
            &[
                ("pepper_env", s.pepper_env.is_some()),
                ("pepper_file", s.pepper_file.is_some()),
            ],
        )?;
        if let Some(g) = &s.generate {
            if !(0.0..=1.0).contains(&g.applet_share) {
                return Err(ConfigError::at(
                    "subscribers.generate.applet_share",
                    "must be within 0..=1",
                ));
            }
            crate::subscribers::provision::check_params(g.count, g.msisdn_base)
                .map_err(|m| ConfigError::at("subscribers.generate.msisdn_base", m))?;
        }

        // [policy]
        let p = &self.policy;
        nonzero(
            "policy.ussd_pin_max_failures".into(),
            p.ussd_pin_max_failures.into(),
        )?;
        nonzero("policy.ussd_lockout_secs".into(), p.ussd_lockout_secs)?;
        nonzero("policy.default_expiry_secs".into(), p.default_expiry_secs)?;
        nonzero(
            "policy.stk_answer_timeout_secs".into(),
            p.stk_answer_timeout_secs,
        )?;
        nonzero("policy.submit_timeout_secs".into(), p.submit_timeout_secs)?;
        if let Some(t) = p.ussd_step_timeout_secs {
            nonzero("policy.ussd_step_timeout_secs".into(), t)?;
        }

        // [keycloak]
        if let Some(k) = &self.keycloak {
            if !(k.realm_url.starts_with("https://") || k.realm_url.starts_with("http://")) {
                return Err(ConfigError::at(
                    "keycloak.realm_url",
                    "must be an http(s) URL",
                ));
            }
            one_of(
                "keycloak",
                &[
                    ("jwks_file", k.jwks_file.is_some()),
                    ("jwks_url", k.jwks_url.is_some()),
                ],
            )?;
            one_of(
                "keycloak",
                &[
                    ("username_map_file", k.username_map_file.is_some()),
                    ("usernames_are_msisdn", k.usernames_are_msisdn),
                ],
            )?;
            if k.audience.is_empty() {
                return Err(ConfigError::at("keycloak.audience", "must not be empty"));
            }
        }

        // [metrics]
        if !self.metrics.path.starts_with('/') {
            return Err(ConfigError::at("metrics.path", "must start with '/'"));
        }
        Ok(())
    }
}
