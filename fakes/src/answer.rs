//! Deterministic answers: what the fake "model" says to a prompt.

use serde_json::{Map, Value, json};

/// Text of a message `content`: a string, or the text parts of an array of
/// content parts / content blocks. Other parts (images) count as `[image]`.
pub(crate) fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .map(|p| match p.get("text").and_then(Value::as_str) {
                Some(t) => t.to_owned(),
                None => match p.get("content") {
                    Some(c) => content_text(c),
                    None => "[image]".to_owned(),
                },
            })
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// Number of "tokens" (whitespace-separated words) in a text.
pub(crate) fn count_tokens(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// The answer words to a prompt, cut to `max_tokens`; the flag says whether
/// the cut happened (finish reason "length").
pub(crate) fn answer_words(prompt: &str, max_tokens: Option<u64>) -> (Vec<String>, bool) {
    let words: Vec<String> = format!("Fake answer to: {prompt}")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    match max_tokens {
        Some(max) if (words.len() as u64) > max => {
            (words.into_iter().take(max as usize).collect(), true)
        }
        _ => (words, false),
    }
}

/// Arguments for a tool call that fit the tool's JSON schema: every string
/// property gets the prompt, numbers 1, booleans true.
pub(crate) fn tool_arguments(schema: Option<&Value>, prompt: &str) -> Value {
    let mut args = Map::new();
    if let Some(props) = schema
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object)
    {
        for (name, prop) in props {
            let value = match prop.get("type").and_then(Value::as_str) {
                Some("string") => json!(prompt),
                Some("number") | Some("integer") => json!(1),
                Some("boolean") => json!(true),
                Some("array") => json!([]),
                Some("object") => json!({}),
                _ => Value::Null,
            };
            args.insert(name.clone(), value);
        }
    }
    Value::Object(args)
}

/// A deterministic embedding: `dims` pseudo-random values seeded by a hash
/// of the text, normalised to unit length.
pub(crate) fn embedding(text: &str, dims: usize) -> Vec<f32> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut v: Vec<f32> = (0..dims.max(1))
        .map(|_| {
            // xorshift64*
            h ^= h >> 12;
            h ^= h << 25;
            h ^= h >> 27;
            let x = h.wrapping_mul(0x2545_f491_4f6c_dd1d);
            (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    let norm = v
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::MIN_POSITIVE);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}
