//! Holding a model group's false-hit rate on live traffic: an answer-side
//! check in the spirit of vCache (Schroeder et al., 2025), kept simple
//! enough to reason about.
//!
//! With `audit_rate` above 0, a fraction of the group's semantic hits are
//! *audited*: the request is not answered from the cache but sent upstream
//! as a miss (the client gets the fresh answer), and once that answer is
//! complete it is compared with the cached one. Candidates the current
//! threshold turned away but the configured one would have served (the
//! *near band*) are compared too, at no extra cost: they were misses anyway.
//! Each comparison is one outcome, (similarity, agreed), kept in a window of
//! the last [`WINDOW`].
//!
//! The group's effective similarity threshold is the lowest one, on a grid
//! of 0.01 from the configured `similarity` up, that the outcomes do not
//! refute: a threshold is refuted when, among outcomes at or above it, the
//! 95% Wilson lower bound of the disagreement rate exceeds
//! `target_error_rate`: a threshold stands until the outcomes show, with
//! 95% confidence, that it breaks the target. So one disagreement at
//! similarity 0.8 with nothing else known moves the threshold above 0.8 at
//! once (1 of 1 has a lower bound of 0.21), while 1 of 18 (0.009) would not;
//! a sustained 5% is caught after about 100 outcomes (5 of 100: 0.022). The
//! threshold never goes below the configured one: auditing only ever turns
//! hits into misses, never the other way.
//!
//! Agreement ([`agree`]): the answers' texts are equal once case,
//! punctuation and spacing are set aside; or their embeddings' cosine is at
//! least `audit_agreement` and the verifier finds no changed number,
//! negation, entity or order between them. Strict on purpose: a false
//! disagreement costs some hits, a false agreement would keep a bad
//! threshold.
//!
//! With a [`Journal`], every outcome is also written to disk and a group's
//! window is read back when the gateway starts, so its threshold survives a
//! restart.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::verify::Verifier;

mod journal;
pub use journal::{Journal, Saved};

/// Outcomes kept per group.
pub const WINDOW: usize = 1000;
/// Step of the threshold grid.
const STEP: f32 = 0.01;
/// z of the 95% Wilson score interval.
const Z: f64 = 1.96;

/// One group's audit settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AuditSettings {
    /// Fraction of semantic hits re-asked upstream (0: off).
    pub rate: f64,
    /// The disagreement rate the threshold is held to.
    pub target_error_rate: f64,
    /// Least cosine between two answers that can agree.
    pub agreement: f32,
}

/// A group's audit state.
#[derive(Debug)]
pub struct Auditor {
    settings: AuditSettings,
    /// The configured similarity: the threshold's floor.
    floor: f32,
    state: Mutex<State>,
    /// Where outcomes are saved, and the group they are saved under.
    journal: Option<(Arc<Journal>, String)>,
}

#[derive(Debug)]
struct State {
    outcomes: VecDeque<(f32, bool)>,
    threshold: f32,
    agreed: u64,
    disagreed: u64,
    /// Resets so far: an audit begun before a reset is not recorded after
    /// it.
    generation: u64,
}

/// What `/admin/cache/stats` shows of a group's audits.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct AuditStats {
    pub rate: f64,
    pub target_error_rate: f64,
    pub configured_similarity: f32,
    pub similarity: f32,
    pub agreed: u64,
    pub disagreed: u64,
}

impl Auditor {
    /// An auditor whose outcomes live in memory only.
    pub fn new(settings: AuditSettings, floor: f32) -> Self {
        Self::from_saved(settings, floor, Saved::default(), None)
    }

    /// Model group `group`'s auditor, starting from the outcomes `journal`
    /// saved, and saving each new one there.
    pub fn restore(
        settings: AuditSettings,
        floor: f32,
        group: &str,
        journal: Arc<Journal>,
    ) -> rusqlite::Result<Self> {
        let saved = journal.load(group)?;
        Ok(Self::from_saved(
            settings,
            floor,
            saved,
            Some((journal, group.to_owned())),
        ))
    }

    fn from_saved(
        settings: AuditSettings,
        floor: f32,
        saved: Saved,
        journal: Option<(Arc<Journal>, String)>,
    ) -> Self {
        let threshold = threshold(&saved.outcomes, floor, settings.target_error_rate);
        Self {
            settings,
            floor,
            state: Mutex::new(State {
                outcomes: saved.outcomes,
                threshold,
                agreed: saved.agreed,
                disagreed: saved.disagreed,
                generation: 0,
            }),
            journal,
        }
    }

    pub fn settings(&self) -> AuditSettings {
        self.settings
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The similarity a semantic candidate needs now.
    pub fn threshold(&self) -> f32 {
        self.state().threshold
    }

    /// Whether to audit this semantic hit (drawn at `rate`).
    pub fn draw(&self) -> bool {
        self.settings.rate > 0.0 && rand::random::<f64>() < self.settings.rate
    }

    /// Records one comparison and returns the new threshold. With a
    /// journal this writes to disk: call it off the async threads. A failed
    /// write is logged; the outcome still counts in memory.
    pub fn record(&self, similarity: f32, agreed: bool) -> f32 {
        let generation = self.generation();
        self.record_since(generation, similarity, agreed)
            .unwrap_or_else(|| self.threshold())
    }

    /// The auditor's resets so far: take it when an audit begins, and
    /// record its outcome with [`Self::record_since`].
    pub fn generation(&self) -> u64 {
        self.state().generation
    }

    /// [`Self::record`] for an audit begun at `generation`: `None`, and
    /// nothing recorded, when the auditor was reset since (the evidence it
    /// carries is what the reset set aside).
    pub fn record_since(&self, generation: u64, similarity: f32, agreed: bool) -> Option<f32> {
        let _serial = self.journal.as_ref().map(|(j, _)| j.serial());
        let threshold = {
            let mut s = self.state();
            if s.generation != generation {
                return None;
            }
            if s.outcomes.len() == WINDOW {
                s.outcomes.pop_front();
            }
            s.outcomes.push_back((similarity, agreed));
            if agreed {
                s.agreed += 1;
            } else {
                s.disagreed += 1;
            }
            s.threshold = threshold(&s.outcomes, self.floor, self.settings.target_error_rate);
            s.threshold
        };
        // After the state's lock (lookups read the threshold meanwhile),
        // before the serial one (a reset waits for the write).
        if let Some((journal, group)) = &self.journal {
            let at = super::http::now_secs();
            if let Err(e) = journal.append(group, similarity, agreed, at) {
                tracing::warn!(group, error = %e, "cache audit: outcome not saved");
            }
        }
        Some(threshold)
    }

    /// Forgets every outcome: the threshold is the configured similarity
    /// again. The caller resets the journal, holding [`Journal::serial`].
    pub fn forget(&self) {
        let mut s = self.state();
        s.outcomes.clear();
        s.agreed = 0;
        s.disagreed = 0;
        s.threshold = self.floor;
        s.generation += 1;
    }

    pub fn stats(&self) -> AuditStats {
        let s = self.state();
        AuditStats {
            rate: self.settings.rate,
            target_error_rate: self.settings.target_error_rate,
            configured_similarity: self.floor,
            similarity: s.threshold,
            agreed: s.agreed,
            disagreed: s.disagreed,
        }
    }
}

/// The lowest grid threshold from `floor` that `outcomes` do not refute
/// (see the module docs); above 1 when every one is refuted, so no
/// semantic candidate passes.
fn threshold(outcomes: &VecDeque<(f32, bool)>, floor: f32, target: f64) -> f32 {
    let steps = ((1.0 - floor) / STEP).round().max(0.0) as u32;
    for k in 0..=steps {
        // From the floor, each step computed afresh (no accumulated error),
        // the last one exactly 1.
        let t = if k == steps {
            1.0
        } else {
            floor + k as f32 * STEP
        };
        let (n, errors) = outcomes
            .iter()
            .filter(|(s, _)| *s >= t)
            .fold((0u64, 0u64), |(n, e), &(_, agreed)| {
                (n + 1, e + u64::from(!agreed))
            });
        if n == 0 || wilson_lower(errors, n) <= target {
            return t;
        }
    }
    1.0 + STEP
}

/// The lower end of the 95% Wilson score interval for `errors` of `n`.
fn wilson_lower(errors: u64, n: u64) -> f64 {
    if n == 0 {
        return 0.0;
    }
    let n = n as f64;
    let p = errors as f64 / n;
    let z2 = Z * Z;
    let centre = p + z2 / (2.0 * n);
    let spread = Z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - spread) / (1.0 + z2 / n)).max(0.0)
}

/// The text of a stored or fresh chat completion: every choice's content
/// and tool calls, in order.
pub fn answer_text(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let mut parts = Vec::new();
    for choice in value.get("choices")?.as_array()? {
        let message = choice.get("message")?;
        if let Some(text) = message.get("content").and_then(Value::as_str) {
            parts.push(text.to_owned());
        }
        for call in message
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(f) = call.get("function") {
                parts.push(f.to_string());
            }
        }
    }
    Some(parts.join("\n"))
}

/// The most of each answer compared (characters): bounds the verifier's
/// word-by-word work; the embedder truncates to its own limit anyway.
pub const COMPARED_CHARS: usize = 4096;

/// `text` cut to [`COMPARED_CHARS`] characters.
pub fn bounded(text: &str) -> &str {
    text.char_indices()
        .nth(COMPARED_CHARS)
        .map_or(text, |(at, _)| &text[..at])
}

/// Lower case, letters and digits only, single spaces.
fn normalized(text: &str) -> String {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The answers' text check: `Some(true)` when they are equal but for case,
/// punctuation and spacing (agreed, nothing more to do), `Some(false)` when
/// the verifier finds a difference (disagreed), `None` when only their
/// embeddings can tell. CPU work: run it off the async threads.
pub fn text_check(cached: &str, fresh: &str, verifier: Verifier) -> Option<bool> {
    if normalized(cached) == normalized(fresh) {
        Some(true)
    } else if verifier.check(cached, fresh).is_err() {
        Some(false)
    } else {
        None
    }
}

/// Whether two answers agree (see the module docs); `cosine` is their
/// embeddings' similarity, computed only when the texts cannot tell.
/// `None` when that was needed and the embedder failed: no outcome, so an
/// overloaded embedder cannot pass for disagreement.
pub async fn agree<F, Fut>(text: Option<bool>, agreement: f32, cosine: F) -> Option<bool>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Option<f32>>,
{
    match text {
        Some(decided) => Some(decided),
        None => cosine().await.map(|c| c >= agreement),
    }
}

#[cfg(test)]
mod tests;
