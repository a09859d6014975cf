//! Run-to-run differences: two runs or two matrices (their `report.json`, or bundles of
//! them) flattened into entries — a scenario of a run, a scenario of a cell, or a cell that
//! did not run scenarios — and compared: regressed, fixed, appeared, vanished, changed
//! category, got slower.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::reports::category::Category;
use crate::reports::matrix::{MatrixReport, MATRIX_REPORT_KIND};
use crate::reports::view::RunView;

/// One comparable thing: `scenario` (run) or `cell / scenario` (matrix).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub status: String,
    pub category: Option<Category>,
    pub duration_ms: u64,
}

/// A report read for comparison.
#[derive(Debug, Clone, Default)]
pub struct Side {
    /// `run` or `matrix`.
    pub of: String,
    pub entries: BTreeMap<String, Entry>,
}

/// Reads a run or matrix `report.json`'s bytes.
pub fn side_of(json: &[u8]) -> Result<Side, String> {
    let value: serde_json::Value = serde_json::from_slice(json).map_err(|e| format!("not JSON: {e}"))?;
    if value.get("kind").and_then(|k| k.as_str()) == Some(MATRIX_REPORT_KIND) {
        let m: MatrixReport = serde_json::from_value(value).map_err(|e| format!("not a matrix report: {e}"))?;
        let mut entries = BTreeMap::new();
        for c in &m.cells {
            if c.scenarios.is_empty() {
                entries.insert(
                    c.spec.id.clone(),
                    Entry { status: c.status.name().into(), category: None, duration_ms: c.duration_ms },
                );
            }
            for s in &c.scenarios {
                let category = s.category.or(s.failure.as_ref().and_then(|f| f.category));
                entries.insert(
                    format!("{} / {}", c.spec.id, s.id),
                    Entry { status: s.status.clone(), category, duration_ms: s.duration_ms },
                );
            }
        }
        return Ok(Side { of: "matrix".into(), entries });
    }
    if value.get("scenarios").is_none() {
        return Err("neither a run report (no `scenarios`) nor a matrix report".into());
    }
    let v: RunView = serde_json::from_value(value).map_err(|e| format!("not a run report: {e}"))?;
    let entries = v
        .scenarios
        .iter()
        .map(|s| {
            // Only a failure (or a flake) has a category.
            let category = match s.status.as_str() {
                "passed" | "skipped" => None,
                _ => s.category.or_else(|| s.failure().and_then(|f| f.category)),
            };
            (s.id.clone(), Entry { status: s.status.clone(), category, duration_ms: s.duration_ms })
        })
        .collect();
    Ok(Side { of: "run".into(), entries })
}

/// What changed for one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Change {
    Regressed,
    Fixed,
    Appeared,
    Vanished,
    CategoryChanged,
    Slower,
    /// Now passes only after a retry (was a clean pass).
    BecameFlaky,
}

impl Change {
    fn title(self) -> &'static str {
        match self {
            Change::Regressed => "Regressed",
            Change::Fixed => "Fixed",
            Change::Appeared => "Appeared",
            Change::Vanished => "Vanished",
            Change::CategoryChanged => "Category changed",
            Change::Slower => "Slower",
            Change::BecameFlaky => "Became flaky",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    pub change: Change,
    pub key: String,
    pub old: Option<Entry>,
    pub new: Option<Entry>,
}

/// When a duration counts as slower.
#[derive(Debug, Clone, Copy)]
pub struct Slowness {
    /// Percent over the old duration.
    pub percent: u64,
    /// And at least this many milliseconds more (small numbers jitter).
    pub min_ms: u64,
}

impl Default for Slowness {
    fn default() -> Self {
        Slowness { percent: 50, min_ms: 1000 }
    }
}

fn good(status: &str) -> bool {
    matches!(status, "passed" | "flaky" | "unsupported")
}

fn bad(status: &str) -> bool {
    matches!(status, "failed" | "error" | "timeout")
}

pub fn compare(old: &Side, new: &Side, slow: Slowness) -> Vec<Difference> {
    let mut out = Vec::new();
    let mut push = |change, key: &String, o: Option<&Entry>, n: Option<&Entry>| {
        out.push(Difference { change, key: key.clone(), old: o.cloned(), new: n.cloned() })
    };
    for (k, o) in &old.entries {
        let Some(n) = new.entries.get(k) else {
            push(Change::Vanished, k, Some(o), None);
            continue;
        };
        if good(&o.status) && bad(&n.status) {
            push(Change::Regressed, k, Some(o), Some(n));
        } else if bad(&o.status) && good(&n.status) {
            push(Change::Fixed, k, Some(o), Some(n));
        } else if bad(&o.status) && bad(&n.status) && o.category != n.category {
            push(Change::CategoryChanged, k, Some(o), Some(n));
        } else if o.status == "passed" && n.status == "flaky" {
            push(Change::BecameFlaky, k, Some(o), Some(n));
        }
        if good(&n.status)
            && n.duration_ms > o.duration_ms + slow.min_ms
            && n.duration_ms * 100 > o.duration_ms * (100 + slow.percent)
        {
            push(Change::Slower, k, Some(o), Some(n));
        }
    }
    for (k, n) in &new.entries {
        if !old.entries.contains_key(k) {
            push(Change::Appeared, k, None, Some(n));
        }
    }
    out.sort_by(|a, b| (a.change, &a.key).cmp(&(b.change, &b.key)));
    out
}

/// A regression: something that passed now fails, or something new fails.
pub fn has_regression(diffs: &[Difference]) -> bool {
    diffs.iter().any(|d| {
        d.change == Change::Regressed
            || (d.change == Change::Appeared && d.new.as_ref().is_some_and(|n| bad(&n.status)))
    })
}

fn describe(e: &Option<Entry>) -> String {
    match e {
        None => "—".into(),
        Some(e) => {
            let cat = e.category.map(|c| format!(" `{c}`")).unwrap_or_default();
            format!("{}{cat} ({})", e.status, crate::reports::html::fmt_ms(e.duration_ms))
        }
    }
}

/// Markdown for a CI comment.
pub fn markdown(old_name: &str, new_name: &str, old: &Side, new: &Side, diffs: &[Difference]) -> String {
    let count = |c: Change| diffs.iter().filter(|d| d.change == c).count();
    let verdict = if has_regression(diffs) { "❌ regression" } else { "✅ no regression" };
    let mut md = format!(
        "## cnpg-ext-harness diff: {verdict}\n\n`{old_name}` ({} entries) → `{new_name}` ({} entries): {} regressed, {} fixed, {} appeared, {} vanished, {} changed category, {} slower, {} became flaky\n",
        old.entries.len(),
        new.entries.len(),
        count(Change::Regressed),
        count(Change::Fixed),
        count(Change::Appeared),
        count(Change::Vanished),
        count(Change::CategoryChanged),
        count(Change::Slower),
        count(Change::BecameFlaky),
    );
    if old.of != new.of {
        md += &format!("\nNote: comparing a {} with a {}.\n", old.of, new.of);
    }
    let mut last = None;
    for d in diffs {
        if last != Some(d.change) {
            md += &format!(
                "\n### {}\n\n| {} | before | after |\n| --- | --- | --- |\n",
                d.change.title(),
                if new.of == "matrix" { "cell / scenario" } else { "scenario" }
            );
            last = Some(d.change);
        }
        md += &format!("| `{}` | {} | {} |\n", d.key, describe(&d.old), describe(&d.new));
    }
    if diffs.is_empty() {
        md += "\nNo differences.\n";
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(of: &str, e: &[(&str, &str, Option<Category>, u64)]) -> Side {
        Side {
            of: of.into(),
            entries: e
                .iter()
                .map(|(k, s, c, d)| (k.to_string(), Entry { status: s.to_string(), category: *c, duration_ms: *d }))
                .collect(),
        }
    }

    #[test]
    fn every_kind_of_change_is_found() {
        let old = side(
            "run",
            &[
                ("a", "passed", None, 1000),
                ("b", "failed", Some(Category::Assertion), 1000),
                ("c", "failed", Some(Category::Timeout), 1000),
                ("d", "passed", None, 1000),
                ("e", "passed", None, 1000),
                ("f", "passed", None, 1000),
            ],
        );
        let new = side(
            "run",
            &[
                ("a", "failed", Some(Category::MissingSharedLibrary), 1000),
                ("b", "passed", None, 900),
                ("c", "failed", Some(Category::ImagePull), 1000),
                ("d", "passed", None, 5000),
                ("e", "flaky", Some(Category::Timeout), 1100),
                ("g", "passed", None, 10),
            ],
        );
        let d = compare(&old, &new, Slowness::default());
        let got: Vec<(Change, &str)> = d.iter().map(|d| (d.change, d.key.as_str())).collect();
        assert_eq!(
            got,
            [
                (Change::Regressed, "a"),
                (Change::Fixed, "b"),
                (Change::Appeared, "g"),
                (Change::Vanished, "f"),
                (Change::CategoryChanged, "c"),
                (Change::Slower, "d"),
                (Change::BecameFlaky, "e"),
            ]
        );
        assert!(has_regression(&d));
        let md = markdown("old.json", "new.json", &old, &new, &d);
        assert!(md.contains("❌ regression"), "{md}");
        assert!(md.contains("| `a` | passed (1.0 s) | failed `missing-shared-library` (1.0 s) |"), "{md}");
        // Small jitter is not "slower"; a fix alone is no regression.
        let calm = side("run", &[("d", "passed", None, 1400), ("b", "passed", None, 1)]);
        let d2 =
            compare(&side("run", &[("d", "passed", None, 1000), ("b", "failed", None, 1)]), &calm, Slowness::default());
        assert_eq!(d2.len(), 1);
        assert!(!has_regression(&d2));
    }
}
