//! Model prices, read from LiteLLM's `model_prices_and_context_window.json`
//! (the ecosystem's de-facto catalog; a copy ships as `models/litellm_prices.json`), so
//! a newer copy can be dropped in without a rebuild.
//!
//! Only the fields a cost policy needs are read, all in USD per token:
//! `input_cost_per_token`, `output_cost_per_token`,
//! `cache_read_input_token_cost`, and the batch prices
//! `input_cost_per_token_batches` / `output_cost_per_token_batches`. Entries
//! without input and output prices (image, audio and search models, the
//! `sample_spec` template) are skipped.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// What one model costs, USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    /// Cached input tokens; the input price when the catalog has none.
    pub cached_input: f64,
    /// Batch prices; the interactive prices when the catalog has none.
    pub batch_input: f64,
    pub batch_output: f64,
}

impl Price {
    /// USD for a request's tokens.
    pub fn cost(&self, input: u64, cached_input: u64, output: u64, batch: bool) -> f64 {
        let uncached = input.saturating_sub(cached_input) as f64;
        let (i, o) = if batch {
            (self.batch_input, self.batch_output)
        } else {
            (self.input, self.output)
        };
        (uncached * i + cached_input.min(input) as f64 * self.cached_input + output as f64 * o)
            / 1e6
    }
}

/// Model name → price, plus the provider LiteLLM files it under.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    models: HashMap<String, (Price, Option<String>)>,
}

#[derive(Deserialize)]
struct Entry {
    input_cost_per_token: Option<f64>,
    output_cost_per_token: Option<f64>,
    cache_read_input_token_cost: Option<f64>,
    input_cost_per_token_batches: Option<f64>,
    output_cost_per_token_batches: Option<f64>,
    litellm_provider: Option<String>,
}

impl Catalog {
    /// Parses the catalog's JSON text. Entries that are not objects of the
    /// expected shape are skipped, not fatal: the file grows new kinds of
    /// entry all the time.
    pub fn from_litellm_json(text: &str) -> Result<Self, String> {
        let all: HashMap<String, serde_json::Value> =
            serde_json::from_str(text).map_err(|e| format!("price catalog: {e}"))?;
        let mut models = HashMap::with_capacity(all.len());
        for (name, value) in all {
            if name == "sample_spec" {
                continue;
            }
            let Ok(e) = serde_json::from_value::<Entry>(value) else {
                continue;
            };
            let (Some(input), Some(output)) = (e.input_cost_per_token, e.output_cost_per_token)
            else {
                continue;
            };
            let per_million = |v: f64| v * 1e6;
            let price = Price {
                input: per_million(input),
                output: per_million(output),
                cached_input: per_million(e.cache_read_input_token_cost.unwrap_or(input)),
                batch_input: per_million(e.input_cost_per_token_batches.unwrap_or(input)),
                batch_output: per_million(e.output_cost_per_token_batches.unwrap_or(output)),
            };
            models.insert(name, (price, e.litellm_provider));
        }
        Ok(Self { models })
    }

    /// Reads a catalog file.
    pub fn load(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::from_litellm_json(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The price of `model`, looked up as given and then as
    /// `provider/model` (the catalog names many models both ways).
    pub fn price(&self, provider: &str, model: &str) -> Option<Price> {
        self.models
            .get(model)
            .or_else(|| self.models.get(&format!("{provider}/{model}")))
            .map(|(p, _)| *p)
    }

    /// Sets or replaces a price (config overrides).
    pub fn set(&mut self, model: &str, price: Price) {
        self.models.insert(model.to_owned(), (price, None));
    }

    pub fn len(&self) -> usize {
        self.models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{
        "sample_spec": {"input_cost_per_token": 0.0, "output_cost_per_token": 0.0},
        "gpt-4o-mini": {"input_cost_per_token": 1.5e-07, "output_cost_per_token": 6e-07,
            "cache_read_input_token_cost": 7.5e-08, "input_cost_per_token_batches": 7.5e-08,
            "output_cost_per_token_batches": 3e-07, "litellm_provider": "openai"},
        "together_ai/meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo":
            {"input_cost_per_token": 1.8e-07, "output_cost_per_token": 1.8e-07},
        "dall-e-3": {"output_cost_per_image": 0.04},
        "odd": {"input_cost_per_token": "free", "output_cost_per_token": 1}
    }"#;

    #[test]
    fn reads_litellm_prices_per_million_tokens() {
        let c = Catalog::from_litellm_json(SAMPLE).unwrap();
        assert_eq!(c.len(), 2, "images, templates and odd shapes are skipped");
        let mini = c.price("openai", "gpt-4o-mini").unwrap();
        assert!((mini.input - 0.15).abs() < 1e-9);
        assert!((mini.output - 0.6).abs() < 1e-9);
        assert!((mini.cached_input - 0.075).abs() < 1e-9);
        assert!((mini.batch_output - 0.3).abs() < 1e-9);
        // 1M input of which 400k cached, 100k output.
        let cost = mini.cost(1_000_000, 400_000, 100_000, false);
        assert!((cost - (0.6 * 0.15 + 0.4 * 0.075 + 0.1 * 0.6)).abs() < 1e-9);
        let batch = mini.cost(1_000_000, 0, 1_000_000, true);
        assert!((batch - (0.075 + 0.3)).abs() < 1e-9);
        let llama = c
            .price("together_ai", "meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo")
            .unwrap();
        assert_eq!(llama.cached_input, llama.input, "no cached price: full");
        assert_eq!(llama.batch_input, llama.input, "no batch price: full");
        assert!(c.price("openai", "gpt-9").is_none());
        assert!(Catalog::from_litellm_json("[1, 2]").is_err());
    }

    #[test]
    fn reads_the_shipped_catalog() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/litellm_prices.json");
        let c = Catalog::load(&path).unwrap();
        assert!(c.len() > 1000, "{}", c.len());
        let mini = c.price("openai", "gpt-4o-mini").unwrap();
        assert!(mini.input > 0.0 && mini.output > mini.input);
    }
}
