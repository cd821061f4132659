//! Secrets are configured by location, never by value, and held as
//! [`SecretString`] so they cannot be printed by accident.

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// Where a secret lives: `{ env = "NAME" }` or `{ file = "/path" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum SecretRef {
    /// The value of this environment variable.
    Env(String),
    /// The contents of this file, with surrounding whitespace trimmed.
    File(std::path::PathBuf),
}

impl SecretRef {
    /// Read the secret; the error names the location, never a value.
    pub fn resolve(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<SecretString, String> {
        let value = match self {
            Self::Env(name) => {
                env(name).ok_or_else(|| format!("environment variable {name} is not set"))?
            }
            Self::File(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?
                .trim()
                .to_owned(),
        };
        if value.is_empty() {
            return Err(format!("{} is empty", self.location()));
        }
        Ok(SecretString::from(value))
    }

    /// A printable description of where the secret is read from.
    pub fn location(&self) -> String {
        match self {
            Self::Env(name) => format!("environment variable {name}"),
            Self::File(path) => format!("file {}", path.display()),
        }
    }
}
