//! Environment overrides: `SWITCHYARD__SERVER__LISTEN=0.0.0.0:8080` sets
//! `server.listen`. Segments are lower-cased; values are read as TOML
//! (numbers, booleans, inline tables) and fall back to a plain string.

use super::ConfigError;

/// Prefix of override variables.
pub const ENV_PREFIX: &str = "SWITCHYARD__";

/// Apply every `SWITCHYARD__…` variable of `env` to `table`.
pub fn apply_env_overrides(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    vars.sort();
    for (key, raw) in vars {
        let path: Vec<String> = key[ENV_PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError(format!("{key}: empty path segment")));
        }
        let value = parse_value(&raw);
        let (last, parents) = path.split_last().unwrap_or((&path[0], &[]));
        let mut cursor = &mut *table;
        for segment in parents {
            let entry = cursor
                .entry(segment.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            cursor = entry.as_table_mut().ok_or_else(|| {
                ConfigError(format!(
                    "{key}: `{segment}` is not a table, cannot override inside it"
                ))
            })?;
        }
        cursor.insert(last.clone(), value);
    }
    Ok(())
}

fn parse_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}
