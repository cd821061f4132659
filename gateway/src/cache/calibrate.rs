//! `switchyard cache calibrate`: hit rate against false-hit rate on labelled
//! prompt pairs, for every setting of the semantic tier, and the setting to
//! use for a target false-hit rate.
//!
//! The pairs file is the cache-eval format: tab-separated, a header line,
//! then `id`, `category`, `label` (1: the cached answer to `prompt_a` also
//! answers `prompt_b`), `prompt_a` (cached), `prompt_b` (incoming).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use super::verify::{Reason, Verifier};

/// One labelled pair.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    pub id: String,
    pub category: String,
    pub same_answer: bool,
    pub cached: String,
    pub incoming: String,
}

/// Reads a cache-eval pairs file.
pub fn read_pairs(path: &Path) -> Result<Vec<Pair>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_pairs(&text).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn parse_pairs(text: &str) -> Result<Vec<Pair>, String> {
    let mut lines = text.lines().enumerate();
    let header: Vec<&str> = lines
        .next()
        .map(|(_, l)| l.split('\t').collect())
        .unwrap_or_default();
    if header != ["id", "category", "label", "prompt_a", "prompt_b"] {
        return Err(
            "line 1: expected the header `id category label prompt_a prompt_b` (tab-separated)"
                .into(),
        );
    }
    let mut pairs = Vec::new();
    for (n, line) in lines.filter(|(_, l)| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split('\t').collect();
        let [id, category, label, a, b] = fields[..] else {
            return Err(format!("line {}: expected 5 tab-separated fields", n + 1));
        };
        let same_answer = match label {
            "1" => true,
            "0" => false,
            _ => {
                return Err(format!(
                    "line {}: label must be 0 or 1, not {label:?}",
                    n + 1
                ));
            }
        };
        pairs.push(Pair {
            id: id.to_owned(),
            category: category.to_owned(),
            same_answer,
            cached: a.to_owned(),
            incoming: b.to_owned(),
        });
    }
    if pairs.is_empty() {
        return Err("no pairs".into());
    }
    Ok(pairs)
}

/// A semantic-tier setting: the similarity threshold and the verifier (or
/// none: cosine alone, for comparison).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Setting {
    pub threshold: f32,
    pub verifier: Option<Verifier>,
}

/// How a setting does on a set of pairs.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub setting: Setting,
    /// Pairs with `same_answer` that hit.
    pub hit_rate: f64,
    /// Pairs without `same_answer` that hit.
    pub false_hit_rate: f64,
    pub false_hits: usize,
    /// The same, leaving out the `unrelated` category.
    pub hard_false_hit_rate: f64,
    /// Hits that were right.
    pub precision: f64,
}

/// Whether `pair`, at `similarity`, hits under `setting` (never when a
/// prompt is longer than the semantic tier takes).
pub fn hits(setting: &Setting, pair: &Pair, similarity: f32) -> bool {
    let max = super::SEMANTIC_MAX_BYTES;
    pair.cached.len() <= max
        && pair.incoming.len() <= max
        && similarity >= needed(setting, pair)
        && setting
            .verifier
            .is_none_or(|v| v.check_at(&pair.cached, &pair.incoming, similarity).is_ok())
}

/// The similarity `pair` needs under `setting` (less for a typo variant).
fn needed(setting: &Setting, pair: &Pair) -> f32 {
    setting.verifier.map_or(setting.threshold, |v| {
        v.threshold_for(&pair.cached, &pair.incoming, setting.threshold)
    })
}

fn rate(num: usize, den: usize) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

pub fn evaluate(setting: Setting, pairs: &[Pair], similarities: &[f32]) -> Outcome {
    let (mut hit, mut pos, mut false_hits, mut neg, mut hard_false, mut hard) = (0, 0, 0, 0, 0, 0);
    for (pair, &sim) in pairs.iter().zip(similarities) {
        let h = hits(&setting, pair, sim);
        if pair.same_answer {
            pos += 1;
            hit += usize::from(h);
        } else {
            neg += 1;
            false_hits += usize::from(h);
            if pair.category != "unrelated" {
                hard += 1;
                hard_false += usize::from(h);
            }
        }
    }
    Outcome {
        setting,
        hit_rate: rate(hit, pos),
        false_hit_rate: rate(false_hits, neg),
        false_hits,
        hard_false_hit_rate: rate(hard_false, hard),
        precision: rate(hit, hit + false_hits),
    }
}

/// The settings `calibrate` compares: cosine alone, and the verifier with
/// each substitution limit (and `backstory` as given), at thresholds 0.50
/// to 0.95.
pub fn settings(backstory: bool) -> Vec<Setting> {
    let thresholds = (0..10).map(|i| 0.5 + 0.05 * i as f32);
    let verifiers = (0..=3).map(move |max_substitution| {
        Some(Verifier {
            max_substitution,
            backstory,
            typo_variants: true,
        })
    });
    std::iter::once(None)
        .chain(verifiers)
        .flat_map(|verifier| {
            thresholds.clone().map(move |threshold| Setting {
                threshold,
                verifier,
            })
        })
        .collect()
}

/// The setting with the most hits whose false-hit rate is within `target`;
/// ties go to the stricter setting (higher threshold, then the verifier).
pub fn recommend(outcomes: &[Outcome], target: f64) -> Option<&Outcome> {
    outcomes
        .iter()
        .filter(|o| o.false_hit_rate <= target)
        .max_by(|x, y| {
            x.hit_rate
                .total_cmp(&y.hit_rate)
                .then(x.false_hit_rate.total_cmp(&y.false_hit_rate).reverse())
                .then(
                    x.setting
                        .verifier
                        .is_some()
                        .cmp(&y.setting.verifier.is_some()),
                )
                .then(
                    x.setting
                        .verifier
                        .map(|v| v.max_substitution)
                        .cmp(&y.setting.verifier.map(|v| v.max_substitution)),
                )
                .then(x.setting.threshold.total_cmp(&y.setting.threshold))
        })
}

fn describe(setting: &Setting) -> String {
    match setting.verifier {
        None => format!("cosine ≥ {:.2}, no verifier", setting.threshold),
        Some(v) => format!(
            "cosine ≥ {:.2}, verifier (substitution ≤ {}{})",
            setting.threshold,
            v.max_substitution,
            if v.backstory { "" } else { ", backstory off" }
        ),
    }
}

/// The full report: every setting, the recommendation, and the default
/// setting's per-category table with the verifier's reasons. The verified
/// settings set `backstory` as `default` does.
pub fn report(pairs: &[Pair], similarities: &[f32], default: Setting, target: f64) -> String {
    let backstory = default.verifier.is_none_or(|v| v.backstory);
    let outcomes: Vec<Outcome> = settings(backstory)
        .into_iter()
        .map(|s| evaluate(s, pairs, similarities))
        .collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} pairs ({} same answer, {} different)\n",
        pairs.len(),
        pairs.iter().filter(|p| p.same_answer).count(),
        pairs.iter().filter(|p| !p.same_answer).count()
    );
    let _ = writeln!(
        out,
        "| setting | hit rate | false-hit rate | false hits | hard-negative false-hit rate | precision |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    for o in &outcomes {
        let _ = writeln!(
            out,
            "| {} | {:.3} | {:.3} | {} | {:.3} | {:.3} |",
            describe(&o.setting),
            o.hit_rate,
            o.false_hit_rate,
            o.false_hits,
            o.hard_false_hit_rate,
            o.precision
        );
    }
    let _ = writeln!(out);
    match recommend(&outcomes, target) {
        Some(o) => {
            let _ = writeln!(
                out,
                "recommended for a false-hit rate ≤ {target}: {} (hit rate {:.3}, false-hit rate {:.3})",
                describe(&o.setting),
                o.hit_rate,
                o.false_hit_rate
            );
        }
        None => {
            let _ = writeln!(out, "no setting keeps the false-hit rate ≤ {target}");
        }
    }
    let d = evaluate(default, pairs, similarities);
    let _ = writeln!(
        out,
        "default: {} (hit rate {:.3}, false-hit rate {:.3}, {} false hits)\n",
        describe(&default),
        d.hit_rate,
        d.false_hit_rate,
        d.false_hits
    );
    let _ = writeln!(
        out,
        "| category | same answer | pairs | hits | mean cosine | refused by the verifier (reason: pairs) |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---|");
    let mut by_category: BTreeMap<&str, Vec<(&Pair, f32)>> = BTreeMap::new();
    for (p, &s) in pairs.iter().zip(similarities) {
        by_category.entry(&p.category).or_default().push((p, s));
    }
    for (category, items) in by_category {
        let hit = items.iter().filter(|(p, s)| hits(&default, p, *s)).count();
        let mean = items.iter().map(|(_, s)| f64::from(*s)).sum::<f64>() / items.len() as f64;
        let mut reasons: BTreeMap<Reason, usize> = BTreeMap::new();
        if let Some(v) = default.verifier {
            for (p, s) in &items {
                if let Err(r) = v.check_at(&p.cached, &p.incoming, *s) {
                    *reasons.entry(r).or_default() += 1;
                }
            }
        }
        let reasons: Vec<String> = reasons
            .iter()
            .map(|(r, n)| format!("{}: {n}", r.as_str()))
            .collect();
        let same: Vec<&str> = items
            .iter()
            .map(|(p, _)| if p.same_answer { "yes" } else { "no" })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let _ = writeln!(
            out,
            "| {category} | {} | {} | {hit} | {mean:.3} | {} |",
            same.join("/"),
            items.len(),
            reasons.join(", ")
        );
    }
    out
}

/// The pairs `setting` gets wrong, false hits first: each with its cosine
/// and why it missed (under the threshold, or the verifier's reason), to
/// see what a setting costs on a route's own pairs.
pub fn misjudged(pairs: &[Pair], similarities: &[f32], setting: Setting) -> String {
    listing(pairs, similarities, setting, true)
}

/// Every pair in file order, with `setting`'s decision (`hit`, `false
/// hit`, `missed`, or `refused` for a different-answer pair turned away),
/// its cosine and why it was not a hit, to see which check decides which
/// pairs (`--decisions`).
pub fn decisions(pairs: &[Pair], similarities: &[f32], setting: Setting) -> String {
    listing(pairs, similarities, setting, false)
}

fn listing(pairs: &[Pair], similarities: &[f32], setting: Setting, only_wrong: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n| {} | id | category | cosine | why | cached | incoming |",
        if only_wrong { "misjudged" } else { "decision" }
    );
    let _ = writeln!(out, "|---|---|---|---:|---|---|---|");
    let mut rows: Vec<(&Pair, f32, bool)> = pairs
        .iter()
        .zip(similarities.iter().copied())
        .map(|(p, s)| (p, s, hits(&setting, p, s)))
        .filter(|&(p, _, hit)| !only_wrong || hit != p.same_answer)
        .collect();
    if only_wrong {
        rows.sort_by_key(|(p, _, _)| p.same_answer);
    }
    for (p, s, hit) in rows {
        let why = if hit {
            String::new()
        } else if s < needed(&setting, p) {
            "below the threshold".to_owned()
        } else {
            setting
                .verifier
                .and_then(|v| v.check_at(&p.cached, &p.incoming, s).err())
                .map_or_else(String::new, |r| r.as_str().to_owned())
        };
        let decision = match (hit, p.same_answer) {
            (true, true) => "hit",
            (true, false) => "false hit",
            (false, true) => "missed",
            (false, false) => "refused",
        };
        let cell = |t: &str| t.replace('|', "\\|");
        let _ = writeln!(
            out,
            "| {decision} | {} | {} | {s:.3} | {why} | {} | {} |",
            p.id,
            p.category,
            cell(&p.cached),
            cell(&p.incoming)
        );
    }
    out
}

#[cfg(test)]
mod tests;
