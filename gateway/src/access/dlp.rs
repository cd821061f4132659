//! DLP: find secrets and personal data in prompts (and, optionally,
//! answers) and redact, block or log them, by detector.
//!
//! One pass of a [`RegexSet`] over each text says which detectors match at
//! all; a text that matches none (nearly all of them) costs that one scan.
//! Only the detectors that matched run again to find their spans, and
//! candidates with a checksum (card numbers: Luhn; IBANs: ISO 7064
//! mod 97) are kept only when it holds. Patterns are ASCII-only
//! (`(?-u)`), which keeps the set on the lazy DFA even over non-ASCII
//! text.

use std::collections::BTreeMap;

use regex::bytes::{Regex, RegexSet};

use crate::config::{CustomDetectorConfig, DlpAction, DlpConfig};

/// A built-in detector: name, pattern, default action, checksum.
struct Builtin {
    name: &'static str,
    pattern: &'static str,
    default: DlpAction,
    check: Option<fn(&[u8]) -> bool>,
}

/// Earlier detectors win where two match the same text (Anthropic's
/// `sk-ant-…` before OpenAI's `sk-…`).
const BUILTINS: &[Builtin] = &[
    Builtin {
        name: "private_key",
        pattern: r"-----BEGIN[ A-Z0-9]*PRIVATE KEY-----(?s:.*?)(?:-----END[ A-Z0-9]*PRIVATE KEY-----|\z)",
        default: DlpAction::Redact,
        check: None,
    },
    Builtin {
        name: "anthropic_key",
        pattern: r"\bsk-ant-[a-z]{3,8}[0-9]{2}-[A-Za-z0-9_\-]{20,}",
        default: DlpAction::Redact,
        check: None,
    },
    Builtin {
        name: "openai_key",
        pattern: r"\bsk-(?:proj-|svcacct-|admin-|None-)?[A-Za-z0-9_\-]{20,}",
        default: DlpAction::Redact,
        check: None,
    },
    Builtin {
        name: "aws_access_key",
        pattern: r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b",
        default: DlpAction::Redact,
        check: None,
    },
    Builtin {
        name: "aws_secret_key",
        pattern: r"(?i:aws_?secret_?access_?key|aws_?secret)\s*[:=]\s*[\x22']?[A-Za-z0-9/+=]{40}\b",
        default: DlpAction::Redact,
        check: None,
    },
    Builtin {
        name: "github_token",
        pattern: r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b",
        default: DlpAction::Redact,
        check: None,
    },
    Builtin {
        name: "slack_token",
        pattern: r"\bxox[abposr]-[A-Za-z0-9\-]{10,250}",
        default: DlpAction::Redact,
        check: None,
    },
    Builtin {
        name: "google_api_key",
        pattern: r"\bAIza[0-9A-Za-z_\-]{35}",
        default: DlpAction::Redact,
        check: None,
    },
    Builtin {
        name: "stripe_key",
        pattern: r"\b(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{16,}",
        default: DlpAction::Redact,
        check: None,
    },
    Builtin {
        name: "jwt",
        pattern: r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",
        default: DlpAction::Redact,
        check: None,
    },
    Builtin {
        name: "email",
        pattern: r"\b[A-Za-z0-9._%+\-]{1,64}@[A-Za-z0-9\-]{1,63}(?:\.[A-Za-z0-9\-]{1,63})*\.[A-Za-z]{2,24}\b",
        default: DlpAction::Off,
        check: None,
    },
    Builtin {
        name: "credit_card",
        pattern: r"\b[0-9](?:[ \-]?[0-9]){12,18}\b",
        default: DlpAction::Off,
        check: Some(luhn),
    },
    Builtin {
        name: "iban",
        pattern: r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}\b",
        default: DlpAction::Off,
        check: Some(iban),
    },
    Builtin {
        name: "phone",
        pattern: r"\+[1-9][0-9]{0,2}[ .\-]?(?:\([0-9]{1,4}\)|[0-9]{1,4})(?:[ .\-]?[0-9]{2,4}){2,4}\b|\([0-9]{3}\) ?[0-9]{3}[.\-][0-9]{4}\b|\b[0-9]{3}[.\-][0-9]{3}[.\-][0-9]{4}\b",
        default: DlpAction::Off,
        check: None,
    },
];

/// Names of the built-in detectors.
pub fn builtin_names() -> impl Iterator<Item = &'static str> {
    BUILTINS.iter().map(|b| b.name)
}

/// The built-in detectors' (name, pattern), as compiled (for benchmarks
/// that compare scanning strategies).
pub fn builtin_patterns() -> impl Iterator<Item = (&'static str, String)> {
    BUILTINS
        .iter()
        .map(|b| (b.name, format!("(?-u){}", b.pattern)))
}

/// Luhn checksum over the digits of a candidate card number.
fn luhn(s: &[u8]) -> bool {
    let digits: Vec<u32> = s
        .iter()
        .filter(|b| b.is_ascii_digit())
        .map(|b| u32::from(b - b'0'))
        .collect();
    if !(13..=19).contains(&digits.len()) || digits.iter().all(|&d| d == digits[0]) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                if d * 2 > 9 { d * 2 - 9 } else { d * 2 }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// ISO 13616 IBAN check: move the first four characters to the end,
/// letters to numbers (A = 10), the whole mod 97 must be 1.
fn iban(s: &[u8]) -> bool {
    let chars: Vec<u8> = s.iter().copied().filter(|b| *b != b' ').collect();
    if !(15..=34).contains(&chars.len()) {
        return false;
    }
    let mut rem: u32 = 0;
    for &c in chars[4..].iter().chain(&chars[..4]) {
        let v = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// A detector, built-in or custom.
#[derive(Debug)]
struct Detector {
    name: String,
    regex: Regex,
    check: Option<fn(&[u8]) -> bool>,
}

/// Actions by detector index, resolved for one (tenant, model group).
#[derive(Debug, Clone, PartialEq)]
pub struct Policy(Vec<DlpAction>);

impl Policy {
    pub fn is_off(&self) -> bool {
        self.0.iter().all(|a| *a == DlpAction::Off)
    }

    /// The policy for answers: `block` masks like `redact` (the answer is
    /// already paid for; withholding it helps no one), `log` stays `log`.
    pub fn for_answers(&self) -> Policy {
        Policy(
            self.0
                .iter()
                .map(|a| match a {
                    DlpAction::Block => DlpAction::Redact,
                    other => *other,
                })
                .collect(),
        )
    }
}

/// The compiled detectors and the configured default policy.
#[derive(Debug)]
pub struct Dlp {
    set: RegexSet,
    detectors: Vec<Detector>,
    defaults: Policy,
    pub responses: bool,
}

/// What scanning found and did.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    /// Detector names that matched with action `block` (the request must
    /// be refused).
    pub blocked: Option<String>,
    /// Detector names whose matches were redacted.
    pub redacted: Vec<String>,
    /// Detector names that matched with action `log`.
    pub logged: Vec<String>,
}

impl Outcome {
    fn note(list: &mut Vec<String>, name: &str) {
        if !list.iter().any(|n| n == name) {
            list.push(name.to_owned());
        }
    }
}

impl Dlp {
    pub fn build(config: &DlpConfig) -> Result<Option<Self>, String> {
        if !config.enabled {
            return Ok(None);
        }
        let mut patterns = Vec::new();
        let mut detectors = Vec::new();
        let mut defaults = Vec::new();
        for b in BUILTINS {
            let p = format!("(?-u){}", b.pattern);
            detectors.push(Detector {
                name: b.name.into(),
                regex: Regex::new(&p).map_err(|e| format!("dlp detector {}: {e}", b.name))?,
                check: b.check,
            });
            patterns.push(p);
            defaults.push(b.default);
        }
        for CustomDetectorConfig {
            name,
            pattern,
            action,
        } in &config.custom
        {
            if detectors.iter().any(|d| d.name == *name) {
                return Err(format!("dlp.custom: detector `{name}` is defined twice"));
            }
            let regex = Regex::new(pattern).map_err(|e| format!("dlp.custom `{name}`: {e}"))?;
            detectors.push(Detector {
                name: name.clone(),
                regex,
                check: None,
            });
            patterns.push(pattern.clone());
            defaults.push(*action);
        }
        let set = RegexSet::new(&patterns).map_err(|e| format!("dlp: {e}"))?;
        let mut dlp = Self {
            set,
            detectors,
            defaults: Policy(defaults),
            responses: config.responses,
        };
        dlp.defaults = dlp.policy(&[&config.actions])?;
        Ok(Some(dlp))
    }

    /// The default policy overridden by `layers`, later layers winning.
    pub fn policy(&self, layers: &[&BTreeMap<String, DlpAction>]) -> Result<Policy, String> {
        let mut p = self.defaults.clone();
        for layer in layers {
            for (name, action) in *layer {
                let i = self
                    .detectors
                    .iter()
                    .position(|d| d.name == *name)
                    .ok_or_else(|| {
                        format!(
                            "unknown DLP detector `{name}` (built-in: {})",
                            builtin_names().collect::<Vec<_>>().join(", ")
                        )
                    })?;
                p.0[i] = *action;
            }
        }
        Ok(p)
    }

    /// Scan one text under `policy`; redactions replace it. Returns early
    /// at a `block`.
    pub fn scan(&self, text: &mut String, policy: &Policy, out: &mut Outcome) {
        let hay = text.as_bytes();
        let matched = self.set.matches(hay);
        if !matched.matched_any() {
            return;
        }
        // (start, end, detector) of every validated match to redact.
        let mut spans: Vec<(usize, usize, usize)> = Vec::new();
        for i in matched.iter() {
            let action = policy.0[i];
            if action == DlpAction::Off {
                continue;
            }
            let d = &self.detectors[i];
            let mut found = false;
            for m in d.regex.find_iter(hay) {
                if d.check.is_some_and(|c| !c(m.as_bytes())) {
                    continue;
                }
                found = true;
                if action == DlpAction::Redact {
                    spans.push((m.start(), m.end(), i));
                }
            }
            if !found {
                continue;
            }
            match action {
                DlpAction::Block => {
                    out.blocked = Some(d.name.clone());
                    return;
                }
                DlpAction::Log => Outcome::note(&mut out.logged, &d.name),
                DlpAction::Redact | DlpAction::Off => {}
            }
        }
        if spans.is_empty() {
            return;
        }
        // Earlier start first; at the same start, the earlier detector.
        spans.sort_unstable();
        let mut redacted = String::with_capacity(text.len());
        let mut at = 0;
        for (start, end, i) in spans {
            if start < at {
                continue; // overlaps a span already redacted
            }
            // Custom patterns may stop inside a UTF-8 sequence: widen.
            let start = (0..=start)
                .rev()
                .find(|&s| text.is_char_boundary(s))
                .unwrap_or(0);
            let end = (end..=text.len())
                .find(|&e| text.is_char_boundary(e))
                .unwrap_or(text.len());
            redacted.push_str(&text[at..start]);
            redacted.push_str("[REDACTED:");
            redacted.push_str(&self.detectors[i].name);
            redacted.push(']');
            Outcome::note(&mut out.redacted, &self.detectors[i].name);
            at = end;
        }
        redacted.push_str(&text[at..]);
        *text = redacted;
    }

    /// Scan every prompt text of a request body in place: chat message
    /// contents (strings and text parts, tool results included), tool-call
    /// arguments, completion prompts, embedding inputs.
    pub fn scan_request(&self, body: &mut serde_json::Value, policy: &Policy) -> Outcome {
        let mut out = Outcome::default();
        if policy.is_off() {
            return out;
        }
        let Some(obj) = body.as_object_mut() else {
            return out;
        };
        if let Some(messages) = obj.get_mut("messages").and_then(|m| m.as_array_mut()) {
            for m in messages {
                if let Some(c) = m.get_mut("content") {
                    self.scan_content(c, policy, &mut out);
                }
                if let Some(calls) = m.get_mut("tool_calls").and_then(|c| c.as_array_mut()) {
                    for call in calls {
                        if let Some(serde_json::Value::String(a)) =
                            call.pointer_mut("/function/arguments")
                        {
                            self.scan(a, policy, &mut out);
                        }
                    }
                }
                if out.blocked.is_some() {
                    return out;
                }
            }
        }
        for field in ["prompt", "input"] {
            if let Some(v) = obj.get_mut(field) {
                self.scan_strings(v, policy, &mut out);
            }
        }
        out
    }

    /// A chat message's `content`: a string, or parts with `text`.
    fn scan_content(&self, c: &mut serde_json::Value, policy: &Policy, out: &mut Outcome) {
        match c {
            serde_json::Value::String(s) => self.scan(s, policy, out),
            serde_json::Value::Array(parts) => {
                for p in parts {
                    if let Some(serde_json::Value::String(s)) = p.get_mut("text") {
                        self.scan(s, policy, out);
                    }
                }
            }
            _ => {}
        }
    }

    /// A string or an array of strings (token arrays are left alone).
    fn scan_strings(&self, v: &mut serde_json::Value, policy: &Policy, out: &mut Outcome) {
        match v {
            serde_json::Value::String(s) => self.scan(s, policy, out),
            serde_json::Value::Array(items) => {
                for item in items {
                    if let serde_json::Value::String(s) = item {
                        self.scan(s, policy, out);
                    }
                }
            }
            _ => {}
        }
    }

    /// Scan the answers of a non-streamed chat or completion response.
    pub fn scan_response(&self, body: &mut serde_json::Value, policy: &Policy) -> Outcome {
        let mut out = Outcome::default();
        if let Some(choices) = body.get_mut("choices").and_then(|c| c.as_array_mut()) {
            for choice in choices {
                if let Some(c) = choice.pointer_mut("/message/content") {
                    self.scan_content(c, policy, &mut out);
                }
                if let Some(serde_json::Value::String(t)) = choice.get_mut("text") {
                    self.scan(t, policy, &mut out);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
