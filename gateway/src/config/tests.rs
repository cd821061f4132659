use std::collections::HashMap;

use super::*;

const MINIMAL: &str = r#"
[providers.openai]
type = "openai_compat"
base_url = "https://api.openai.com/v1"
api_key = { env = "OPENAI_API_KEY" }

[[model_groups]]
name = "gpt-4o-mini"
[[model_groups.deployments]]
provider = "openai"
model = "gpt-4o-mini"
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Vec::new())
}

fn err(text: &str) -> String {
    match parse(text) {
        Ok(_) => String::from("<parsed without error>"),
        Err(e) => e.0,
    }
}

#[test]
fn minimal_config_gets_documented_defaults() {
    let c = parse(MINIMAL).unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.server.max_body_bytes, 8 * 1024 * 1024);
    assert_eq!(c.retry.max_retries, 2);
    assert_eq!(c.breaker.failure_threshold, 5);
    let d = &c.model_groups[0].deployments[0];
    assert_eq!(d.timeouts.ttft_ms, 60_000);
}

#[test]
fn unknown_fields_are_rejected_with_their_path() {
    let e = err(&format!(
        "{MINIMAL}\n[server]\nlisten = \"127.0.0.1:1\"\nmax_bdy = 3\n"
    ));
    assert!(e.contains("server") && e.contains("max_bdy"), "{e}");
    let e = err(&MINIMAL.replace("model = \"gpt-4o-mini\"", "model = \"x\"\nwieght = 2"));
    assert!(
        e.contains("model_groups[0].deployments[0]") && e.contains("wieght"),
        "{e}"
    );
    let e = err(&MINIMAL.replace(
        "type = \"openai_compat\"",
        "type = \"openai_compat\"\nbase = 1",
    ));
    assert!(e.contains("providers.openai") && e.contains("base"), "{e}");
}

#[test]
fn wrong_types_and_values_name_the_field() {
    let e = err(&format!(
        "{MINIMAL}\n[server]\nlisten = \"not an address\"\n"
    ));
    assert!(e.starts_with("server.listen"), "{e}");
    let e = err(&MINIMAL.replace("openai_compat", "openai_compatible"));
    assert!(
        e.contains("providers.openai") && e.contains("openai_compatible"),
        "{e}"
    );
    let e = err(&MINIMAL.replace("https://api.openai.com/v1", "ftp://x"));
    assert!(e.starts_with("providers.openai.base_url"), "{e}");
    let e = err(&MINIMAL.replace("provider = \"openai\"", "provider = \"nope\""));
    assert!(
        e.contains("model_groups[0].deployments[0].provider") && e.contains("nope"),
        "{e}"
    );
    let e = err(&format!(
        "{MINIMAL}\n[[model_groups]]\nname = \"gpt-4o-mini\"\ndeployments = []\n"
    ));
    assert!(e.contains("model_groups[1]"), "{e}");
    let e = err(&MINIMAL.replace(
        "model = \"gpt-4o-mini\"",
        "model = \"x\"\ntimeouts = { ttft_ms = 10, total_ms = 5 }",
    ));
    assert!(e.contains("ttft_ms"), "{e}");
    for (field, value, named) in [
        ("max_entries", "0", "cache: max_entries"),
        ("ttl_secs", "0", "cache: max_entries and ttl_secs"),
        ("max_bytes", "10", "cache.max_bytes"),
        ("max_temperature", "2.5", "cache.max_temperature"),
        ("audit_rate", "1.5", "cache.audit_rate"),
        ("target_error_rate", "-0.1", "cache.target_error_rate"),
        ("audit_agreement", "2.0", "cache.audit_agreement"),
    ] {
        let e = err(&format!("{MINIMAL}\n[cache]\n{field} = {value}\n"));
        assert!(e.starts_with(named), "{field}: {e}");
    }
}

#[test]
fn a_local_backend_names_its_telemetry_source() {
    let local = |fields: &str| {
        err(&MINIMAL.replace(
            "base_url = \"https://api.openai.com/v1\"",
            &format!(
                "base_url = \"https://api.openai.com/v1\"\nlocal = {{ gpu = \"h100\", gpu_hour_usd = 1.0, {fields} }}"
            ),
        ))
    };
    for (fields, says) in [
        (
            "telemetry = \"agent\", gpus = [\"0\"]",
            "providers.openai.local.agent: the node agent's address",
        ),
        (
            "telemetry = \"agent\", agent = \"http://10.0.0.1:9950\"",
            "providers.openai.local.gpus",
        ),
        ("telemetry = \"nvml\"", "providers.openai.local.gpus"),
        (
            "host_kv_gb = -1.0",
            "providers.openai.local.host_kv_gb: must be 0 or more",
        ),
        (
            "telemetry = \"sim\", agent = \"http://10.0.0.1:9950\"",
            "providers.openai.local.agent: only used",
        ),
        (
            "telemetry = \"agent\", agent = \"10.0.0.1:9950\", gpus = [\"0\"]",
            "providers.openai.local.agent",
        ),
        (
            "telemetry = \"agent\", agent = \"grpc://h:1\", gpus = [\"0\"]",
            "must be an http",
        ),
        (
            "telemetry = \"agent\", agent = \"http://h:1\", agent_tls = { ca = \"ca.pem\" }, gpus = [\"0\"]",
            "providers.openai.local.agent_tls: the agent address `http://h:1` must be https://",
        ),
        (
            "telemetry = \"agent\", agent = \"https://h:1\", agent_tls = { key = \"k.pem\" }, gpus = [\"0\"]",
            "providers.openai.local.agent_tls: `cert` and `key` go together",
        ),
        (
            "telemetry = \"nvml\", agent_tls = { ca = \"ca.pem\" }, gpus = [\"0\"]",
            "providers.openai.local.agent_tls: set without an `agent`",
        ),
    ] {
        let e = local(fields);
        assert!(e.starts_with(says) || e.contains(says), "{fields}: {e}");
    }
    let ok = MINIMAL.replace(
        "base_url = \"https://api.openai.com/v1\"",
        "base_url = \"https://api.openai.com/v1\"\nlocal = { gpu = \"h100\", gpu_hour_usd = 1.0, telemetry = \"agent\", agent = \"http://10.0.0.1:9950\", gpus = [\"0\"] }",
    );
    parse(&ok).unwrap();
    parse(&ok.replace("http://10.0.0.1", "https://10.0.0.1")).unwrap();
}

#[test]
fn env_overrides_apply_with_types() {
    let env = vec![
        (
            "SWITCHYARD__SERVER__LISTEN".to_owned(),
            "0.0.0.0:9999".to_owned(),
        ),
        ("SWITCHYARD__SERVER__MAX_N".to_owned(), "4".to_owned()),
        (
            "SWITCHYARD__PROVIDERS__OPENAI__BASE_URL".to_owned(),
            "http://gpu-1:8000/v1".to_owned(),
        ),
        ("UNRELATED".to_owned(), "1".to_owned()),
    ];
    let c = Config::parse(MINIMAL, env).unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(c.server.listen.to_string(), "0.0.0.0:9999");
    assert_eq!(c.server.max_n, 4);
    match &c.providers["openai"] {
        ProviderConfig::OpenaiCompat { base_url, .. } => {
            assert_eq!(base_url, "http://gpu-1:8000/v1")
        }
        other => unreachable!("{other:?}"),
    }
    let bad = vec![("SWITCHYARD__SERVER__MAX_N".to_owned(), "lots".to_owned())];
    let e = Config::parse(MINIMAL, bad)
        .err()
        .map(|e| e.0)
        .unwrap_or_default();
    assert!(e.starts_with("server.max_n"), "{e}");
}

#[test]
fn secrets_resolve_by_location_and_never_print() {
    let vars: HashMap<&str, &str> = HashMap::from([("OPENAI_API_KEY", "sk-very-secret")]);
    let env = |n: &str| vars.get(n).map(|v| (*v).to_owned());
    let s = SecretRef::Env("OPENAI_API_KEY".into());
    let secret = s.resolve(&env).unwrap_or_else(|e| unreachable!("{e}"));
    assert!(!format!("{secret:?}").contains("sk-very-secret"));
    let missing = SecretRef::Env("NOPE".into())
        .resolve(&env)
        .err()
        .unwrap_or_default();
    assert!(missing.contains("NOPE"));
    let dir = std::env::temp_dir().join(format!("sy-secret-{}", std::process::id()));
    std::fs::write(&dir, "  from-file \n").unwrap_or_else(|e| unreachable!("{e}"));
    let from_file = SecretRef::File(dir.clone())
        .resolve(&env)
        .unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&from_file),
        "from-file"
    );
    let _ = std::fs::remove_file(dir);
}

#[test]
fn example_configs_parse() {
    let mut checked = 0;
    for entry in std::fs::read_dir("../examples").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            if let Err(e) = Config::parse(&text, Vec::new()) {
                unreachable!("{}: {e}", path.display());
            }
            checked += 1;
        }
    }
    assert!(checked >= 1, "no example configs found");
}

/// Key paths of a TOML value, arrays collapsed to `[]`.
fn key_paths(v: &toml::Value, prefix: &str, out: &mut std::collections::BTreeSet<String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.insert(p.clone());
                if !matches!(k.as_str(), "api_key" | "master_key") {
                    key_paths(v, &p, out);
                }
            }
        }
        toml::Value::Array(items) => {
            for item in items {
                key_paths(item, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn reference_block_matches_the_code() {
    let doc = std::fs::read_to_string("../docs/configuration.md").unwrap();
    let block = doc
        .split("## Reference")
        .nth(1)
        .and_then(|s| s.split("```toml\n").nth(1))
        .and_then(|s| s.split("```").next())
        .unwrap();
    // Documented ⊆ code: the block parses with unknown fields denied.
    let config = Config::parse(block, Vec::new())
        .unwrap_or_else(|e| unreachable!("docs/configuration.md: {e}"));
    // Code ⊆ documented: every field the code has (defaults filled in) is in the block.
    let mut documented = std::collections::BTreeSet::new();
    key_paths(
        &toml::Value::Table(block.parse().unwrap()),
        "",
        &mut documented,
    );
    let mut actual = std::collections::BTreeSet::new();
    key_paths(&toml::Value::try_from(&config).unwrap(), "", &mut actual);
    let missing: Vec<_> = actual.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "fields missing from docs/configuration.md: {missing:?}"
    );
}
