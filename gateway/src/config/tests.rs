#![allow(clippy::unwrap_used)]

use super::*;

const MINIMAL: &str = r#"[api]
listen = "127.0.0.1:8080"

[[api.clients]]
id = "kc"
token = "t"

[[operators]]
name = "red"
ranges = ["48600"]
service_code = "*123#"
sms_source_address = "4800"

[[operators.binds]]
address = "127.0.0.1:2775"
system_id = "gw"
password = "pw"
window = 10

[subscribers]
file = "subs.jsonl"
pepper_env = "PEPPER"

[store]
path = "store.redb"
"#;

fn load(text: &str, overrides: &[Override]) -> Result<GatewayConfig, ConfigError> {
    GatewayConfig::from_toml(text, overrides)
}

fn flag(s: &str) -> Override {
    Override::from_flag(s).unwrap()
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn minimal_config_loads_with_defaults() {
    let c = load(MINIMAL, &[]).unwrap();
    assert_eq!(c.limits, LimitsConfig::default());
    assert_eq!(c.policy.ussd_pin_max_failures, 3);
    assert_eq!(c.policy.ussd_lockout_secs, 900);
    assert!(!c.policy.loa3_over_ussd);
    assert!(c.policy.fallback_stk_to_ussd);
    assert_eq!(
        c.operators[0].dialect.resolve(),
        Some(Dialect::spec_default())
    );
    assert_eq!(c.operators[0].binds[0].bind_kind, BindKind::Transceiver);
    assert_eq!(c.log.format, LogFormat::Pretty);
    assert!(c.keycloak.is_none());
}

#[test]
fn example_config_loads() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/gateway.example.toml");
    let c = GatewayConfig::load(&path, &[]).unwrap();
    assert_eq!(c.operators.len(), 2);
    assert_eq!(c.operators[0].dialect.resolve().unwrap().name, "spec");
    let blue = c.operators[1].dialect.resolve().unwrap();
    assert_eq!(blue.name, "blue-ussd");
    assert_eq!(blue.ops.mo_abort, Some(0x81));
    assert_eq!(
        c.operators[0].binds[1].password_source(),
        Some(SecretSource::Env("GATEWAY_SMPP_PASSWORD_RED".into()))
    );
    assert_eq!(c.subscribers.generate.as_ref().unwrap().applet_share, 0.7);
    // The example's routing is usable as is.
    let router = crate::serve::router(&c).unwrap();
    let m = crate::routing::Msisdn::parse("48600700000").unwrap();
    assert_eq!(
        router.operator_name(router.route(&m).unwrap()),
        Some("blue")
    );
}

#[test]
fn unknown_key_is_named_with_its_line() {
    let text = MINIMAL.replace("window = 10", "window = 10\nwindw = 3");
    let e = load(&text, &[]).unwrap_err();
    assert_eq!(e.key, "operators[0].binds[0].windw");
    assert_eq!(e.line, Some(line_of(&text, "windw")));
    assert!(e.message.contains("unknown field"), "{e}");
    assert_eq!(e.exit_code(), 64);
}

#[test]
fn unknown_section_is_named() {
    let text = format!("{MINIMAL}\n[polcy]\nx = 1\n");
    let e = load(&text, &[]).unwrap_err();
    assert_eq!(e.key, "polcy");
    assert_eq!(e.line, Some(line_of(&text, "[polcy]")));
}

#[test]
fn wrong_type_is_named_with_its_line() {
    let text = MINIMAL.replace("window = 10", "window = \"ten\"");
    let e = load(&text, &[]).unwrap_err();
    assert_eq!(e.key, "operators[0].binds[0].window");
    assert_eq!(e.line, Some(line_of(&text, "window")));
    assert!(e.message.contains("invalid type"), "{e}");
}

#[test]
fn bad_values_are_named_with_their_line() {
    let text = MINIMAL.replace("listen = \"127.0.0.1:8080\"", "listen = \"localhost\"");
    let e = load(&text, &[]).unwrap_err();
    assert_eq!((e.key.as_str(), e.line), ("api.listen", Some(2)));

    let text = MINIMAL.replace("ranges = [\"48600\"]", "ranges = [\"48600\", \"486x\"]");
    let e = load(&text, &[]).unwrap_err();
    // serde does not locate array elements; the message quotes the bad one.
    assert_eq!(e.key, "operators[0].ranges");
    assert_eq!(e.line, Some(line_of(&text, "486x")));
    assert!(e.message.contains("\"486x\" has a non-digit"), "{e}");

    let text = MINIMAL.replace("[[operators]]", "[[operators]]\ndialect = \"nokia\"");
    let e = load(&text, &[]).unwrap_err();
    assert_eq!(e.key, "operators[0].dialect");
    assert!(e.message.contains("unknown dialect"), "{e}");
}

#[test]
fn validation_errors_are_named_with_their_line() {
    let text = MINIMAL.replace("window = 10", "window = 0");
    let e = load(&text, &[]).unwrap_err();
    assert_eq!(e.key, "operators[0].binds[0].window");
    assert_eq!(e.line, Some(line_of(&text, "window = 0")));
    assert!(e.to_string().contains(&format!(
        ":{}: key `operators[0].binds[0].window`",
        e.line.unwrap()
    )));

    let text = MINIMAL.replace(
        "password = \"pw\"",
        "password = \"pw\"\npassword_env = \"X\"",
    );
    let e = load(&text, &[]).unwrap_err();
    assert_eq!(e.key, "operators[0].binds[0].password_env");
    assert_eq!(e.line, Some(line_of(&text, "password_env")));
}

#[test]
fn missing_binds_are_refused() {
    let text = MINIMAL.replace(
        "[[operators.binds]]\naddress = \"127.0.0.1:2775\"\nsystem_id = \"gw\"\npassword = \"pw\"\nwindow = 10\n",
        "binds = []\n",
    );
    let e = load(&text, &[]).unwrap_err();
    assert_eq!(e.key, "operators[0].binds");
    assert_eq!(e.line, Some(line_of(&text, "binds = []")));
}

#[test]
fn missing_required_key_is_named() {
    let text = MINIMAL.replace("[store]\npath = \"store.redb\"\n", "");
    let e = load(&text, &[]).unwrap_err();
    assert_eq!(e.key, "store");
    assert!(e.message.contains("missing field"), "{e}");

    let text = MINIMAL.replace("system_id = \"gw\"\n", "");
    let e = load(&text, &[]).unwrap_err();
    assert_eq!(e.key, "operators[0].binds[0].system_id");
    assert_eq!(e.line, Some(line_of(&text, "[[operators.binds]]")));
}

#[test]
fn overlapping_ranges_across_operators_are_refused() {
    let text = format!(
        "{MINIMAL}\n[[operators]]\nname = \"blue\"\nranges = [\"48700\", \"48600500000..48600599999\"]\nservice_code = \"1\"\nsms_source_address = \"2\"\n[[operators.binds]]\naddress = \"h:1\"\nsystem_id = \"b\"\npassword = \"p\"\n"
    );
    let e = load(&text, &[]).unwrap_err();
    assert_eq!(e.key, "operators[1].ranges[1]");
    assert_eq!(e.line, Some(line_of(&text, "48600500000..")));
    assert!(e.message.contains("overlaps"), "{e}");
}

#[test]
fn syntax_errors_name_the_line() {
    let text = MINIMAL.replace("window = 10", "window = = 10");
    let e = load(&text, &[]).unwrap_err();
    assert_eq!(e.line, Some(line_of(&text, "window = =")));
    assert_eq!(e.key, "window");
}

#[test]
fn flags_override_the_file() {
    let c = load(
        MINIMAL,
        &[
            flag("limits.max_in_flight=77"),
            flag("operators[0].binds[0].window=3"),
            flag("operators.0.service_code=*555#"),
            flag("policy.loa3_over_ussd=true"),
            flag("log.format=json"),
            flag("operators[0].dialect=umr-op-end"),
        ],
    )
    .unwrap();
    assert_eq!(c.limits.max_in_flight, 77);
    assert_eq!(c.operators[0].binds[0].window, 3);
    assert_eq!(c.operators[0].service_code, "*555#");
    assert!(c.policy.loa3_over_ussd);
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(
        c.operators[0].dialect.resolve(),
        Some(Dialect::vendor_umr_op_end())
    );
}

#[test]
fn string_keys_keep_digits_as_text() {
    // `sms_source_address` holds a string in the file, so "4812" stays a string.
    let c = load(MINIMAL, &[flag("operators.0.sms_source_address=4812")]).unwrap();
    assert_eq!(c.operators[0].sms_source_address, "4812");
}

#[test]
fn environment_overrides_and_flags_win() {
    let env = Override::from_env(vec![
        ("GATEWAY_LIMITS_MAX_IN_FLIGHT".to_string(), "50".to_string()),
        (
            "GATEWAY_POLICY_USSD_LOCKOUT_SECS".to_string(),
            "60".to_string(),
        ),
        (
            "GATEWAY_OPERATORS__0__BINDS__0__WINDOW".to_string(),
            "4".to_string(),
        ),
        (
            "GATEWAY_PIN_PEPPER".to_string(),
            "not an override".to_string(),
        ),
        ("HOME".to_string(), "/root".to_string()),
        // A section's name alone is no override (it would replace the whole section).
        ("GATEWAY_STORE".to_string(), "journal".to_string()),
        ("GATEWAY_STORE_".to_string(), "journal".to_string()),
    ]);
    assert_eq!(env.len(), 3);
    let mut all = env.clone();
    all.push(flag("limits.max_in_flight=60"));
    let c = load(MINIMAL, &all).unwrap();
    assert_eq!(c.limits.max_in_flight, 60);
    assert_eq!(c.policy.ussd_lockout_secs, 60);
    assert_eq!(c.operators[0].binds[0].window, 4);
    let c = load(MINIMAL, &env).unwrap();
    assert_eq!(c.limits.max_in_flight, 50);
}

#[test]
fn bad_override_names_the_variable_and_key() {
    let env = Override::from_env(vec![(
        "GATEWAY_LIMITS_MAX_IN_FLIGHT".to_string(),
        "lots".to_string(),
    )]);
    let e = load(MINIMAL, &env).unwrap_err();
    assert_eq!(e.key, "limits.max_in_flight");
    assert_eq!(e.origin, Origin::Env("GATEWAY_LIMITS_MAX_IN_FLIGHT".into()));
    assert_eq!(e.line, None);
    assert!(
        e.to_string().contains("GATEWAY_LIMITS_MAX_IN_FLIGHT"),
        "{e}"
    );

    let e = load(MINIMAL, &[flag("limits.max_in_fligt=3")]).unwrap_err();
    assert_eq!(e.key, "limits.max_in_fligt");
    assert_eq!(e.origin, Origin::Flag("limits.max_in_fligt=3".into()));

    let e = load(MINIMAL, &[flag("operators[0].binds[0].window=0")]).unwrap_err();
    assert_eq!(e.key, "operators[0].binds[0].window");
    assert_eq!(
        e.origin,
        Origin::Flag("operators[0].binds[0].window=0".into())
    );

    let e = load(MINIMAL, &[flag("operators[3].name=x")]).unwrap_err();
    assert_eq!(e.key, "operators[3].name");
    assert!(e.message.contains("index"), "{e}");

    assert!(Override::from_flag("no-equals").is_err());
    assert!(Override::from_flag("a..b=1").is_err());
}

#[test]
fn directly_built_config_validates() {
    let mut c = load(MINIMAL, &[]).unwrap();
    assert!(c.validate().is_ok());
    c.limits.max_in_flight = 0;
    assert_eq!(c.validate().unwrap_err().key, "limits.max_in_flight");
}

#[test]
fn secrets_resolve_and_never_print() {
    let c = load(MINIMAL, &[]).unwrap();
    let pw = c.operators[0].binds[0].password_source().unwrap();
    assert!(!format!("{c:?}").contains("\"pw\""));
    assert_eq!(pw.resolve(|_| None).unwrap().expose(), "pw");
    let env = c.subscribers.pepper_source().unwrap();
    assert!(matches!(
        env.resolve(|_| None),
        Err(SecretError::EnvMissing(_))
    ));
    assert_eq!(
        env.resolve(|k| (k == "PEPPER").then(|| "x".to_string()))
            .unwrap()
            .expose(),
        "x"
    );
    let session = c.operators[0].binds[0].session_config(&Secret::new("pw"));
    assert_eq!(session.window, 10);
    assert_eq!(session.system_id, "gw");
}

#[test]
fn unreadable_file_is_reported() {
    let e =
        GatewayConfig::load(std::path::Path::new("/nonexistent/gateway.toml"), &[]).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/gateway.toml"));
}

#[test]
fn bind_tls_keys_come_in_pairs_and_the_ca_file_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not checked here").unwrap();
    let with = |extra: &str| MINIMAL.replace("window = 10", &format!("window = 10\n{extra}"));

    let c = load(
        &with(&format!(
            "tls_ca_file = {:?}\ntls_server_name = \"localhost\"",
            ca
        )),
        &[],
    )
    .unwrap();
    let tls = c.operators[0].binds[0].tls_settings().unwrap();
    assert_eq!(
        (tls.ca_file, tls.server_name.as_str()),
        (ca.clone(), "localhost")
    );
    assert!(load(MINIMAL, &[]).unwrap().operators[0].binds[0]
        .tls_settings()
        .is_none());

    let text = with(&format!("tls_ca_file = {:?}", ca));
    let e = load(&text, &[]).unwrap_err();
    assert_eq!(e.key, "operators[0].binds[0].tls_server_name");

    let text = with("tls_server_name = \"localhost\"");
    let e = load(&text, &[]).unwrap_err();
    assert_eq!(e.key, "operators[0].binds[0].tls_ca_file");

    let missing = dir.path().join("missing.pem");
    let text = with(&format!(
        "tls_ca_file = {:?}\ntls_server_name = \"localhost\"",
        missing
    ));
    let e = load(&text, &[]).unwrap_err();
    assert_eq!(e.key, "operators[0].binds[0].tls_ca_file");
    assert_eq!(e.line, Some(line_of(&text, "tls_ca_file")));
    assert!(e.message.contains("missing.pem"), "{e}");

    let text = with(&format!(
        "tls_ca_file = {:?}\ntls_server_name = \"not a name!\"",
        ca
    ));
    let e = load(&text, &[]).unwrap_err();
    assert_eq!(e.key, "operators[0].binds[0].tls_server_name");
}

#[test]
fn api_tls_files_must_exist() {
    let text = MINIMAL.replace(
        "[[api.clients]]",
        "[api.tls]\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\n\n[[api.clients]]",
    );
    let e = load(&text, &[]).unwrap_err();
    assert_eq!(e.key, "api.tls.cert");
    assert_eq!(e.line, Some(line_of(&text, "cert = ")));
}

#[test]
fn store_ttl_and_purge_interval_default_and_a_zero_is_refused_with_its_key() {
    let c = load(MINIMAL, &[]).unwrap();
    assert_eq!(
        (c.store.terminal_ttl_secs, c.store.purge_interval_secs),
        (86_400, 300)
    );
    let text = MINIMAL.replace(
        "path = \"store.redb\"",
        "path = \"store.redb\"\nterminal_ttl_secs = 0",
    );
    let e = load(&text, &[]).unwrap_err();
    assert_eq!(e.key, "store.terminal_ttl_secs");
    let e = load(MINIMAL, &[flag("store.purge_interval_secs=0")]).unwrap_err();
    assert_eq!(e.key, "store.purge_interval_secs");
    let e = load(MINIMAL, &[flag("store.durable_commit_interval_ms=500")]).unwrap_err();
    assert_eq!(e.key, "store.durable_commit_interval_ms");
    let c = load(MINIMAL, &[flag("store.durable_commit_interval_ms=0")]).unwrap();
    assert_eq!(c.store.durable_commit_interval_ms, 0);
    assert_eq!(load(MINIMAL, &[]).unwrap().store.cache_mb, 128);
    let e = load(MINIMAL, &[flag("store.cache_mb=0")]).unwrap_err();
    assert_eq!(e.key, "store.cache_mb");
}

#[test]
fn outbound_targets_load_and_a_bad_one_is_named() {
    let ca = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../load-tests/tests/fixtures/tls/ca.pem")
        .display()
        .to_string()
        .replace('\\', "/");
    let text = format!(
        "{MINIMAL}\n[outbound]\n[[outbound.targets]]\nhost = \"sso.example\"\nca_file = \"{ca}\"\n"
    );
    let c = load(&text, &[]).unwrap();
    let settings = c.outbound.settings();
    assert_eq!(settings.targets.len(), 1);
    assert_eq!(settings.targets[0].host, "sso.example");

    let twice = format!("{text}[[outbound.targets]]\nhost = \"SSO.example\"\nca_file = \"{ca}\"\n");
    let e = load(&twice, &[]).unwrap_err();
    assert_eq!(e.key, "outbound.targets[1].host");

    let missing = format!(
        "{MINIMAL}\n[outbound]\n[[outbound.targets]]\nhost = \"sso.example\"\nca_file = \"/nonexistent/ca.pem\"\n"
    );
    let e = load(&missing, &[]).unwrap_err();
    assert_eq!(e.key, "outbound.targets[0].ca_file");

    let url = format!(
        "{MINIMAL}\n[outbound]\n[[outbound.targets]]\nhost = \"https://sso.example/\"\nca_file = \"{ca}\"\n"
    );
    let e = load(&url, &[]).unwrap_err();
    assert_eq!(e.key, "outbound.targets[0].host");
}

#[test]
fn the_redis_backend_needs_a_redis_url_and_a_plain_prefix() {
    let with = |extra: &str| MINIMAL.replace("[store]\n", &format!("[store]\n{extra}\n"));
    let c = load(
        &with("backend = \"redis\"\nurl = \"redis://127.0.0.1:6379/0\""),
        &[],
    )
    .unwrap();
    let settings = c.store.redis_settings().unwrap();
    assert_eq!(settings.url, "redis://127.0.0.1:6379/0");
    assert_eq!(settings.prefix, "gw");
    assert!(load(MINIMAL, &[]).unwrap().store.redis_settings().is_none());

    let e = load(&with("backend = \"redis\""), &[]).unwrap_err();
    assert_eq!(e.key, "store.url");
    let e = load(&with("backend = \"redis\"\nurl = \"http://x\""), &[]).unwrap_err();
    assert_eq!(e.key, "store.url");
    let e = load(
        &with("backend = \"redis\"\nurl = \"redis://x\"\nkey_prefix = \"a{b}\""),
        &[],
    )
    .unwrap_err();
    assert_eq!(e.key, "store.key_prefix");
    let e = load(&with("backend = \"postgres\""), &[]).unwrap_err();
    assert_eq!(e.key, "store.backend");
}

#[test]
fn redis_over_tls_takes_a_rediss_url_and_an_optional_ca_file() {
    let with = |extra: &str| MINIMAL.replace("[store]\n", &format!("[store]\n{extra}\n"));
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not checked here").unwrap();
    let c = load(
        &with(&format!(
            "backend = \"redis\"\nurl = \"rediss://127.0.0.1:6380\"\nca_file = {:?}",
            ca.display().to_string()
        )),
        &[],
    )
    .unwrap();
    let settings = c.store.redis_settings().unwrap();
    assert_eq!(settings.url, "rediss://127.0.0.1:6380");
    assert_eq!(settings.ca_file.as_deref(), Some(ca.as_path()));

    let e = load(
        &with(&format!(
            "backend = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\nca_file = {:?}",
            ca.display().to_string()
        )),
        &[],
    )
    .unwrap_err();
    assert_eq!(e.key, "store.ca_file");
    assert!(e.to_string().contains("rediss://"), "{e}");
    let e = load(
        &with("backend = \"redis\"\nurl = \"rediss://h:1\"\nca_file = \"/nonexistent/ca.pem\""),
        &[],
    )
    .unwrap_err();
    assert_eq!(e.key, "store.ca_file");
}
