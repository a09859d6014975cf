//! A read-only view of a run's `report.json` (schema: docs/report-schema.md), for the tools
//! that consume run records instead of producing them: the matrix aggregates cells from the
//! files their runs wrote, the HTML pages render them. Unknown fields are ignored so that
//! newer additive schema fields do not break older readers.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::reports::category::{Category, Evidence};
use crate::reports::run::RunReport;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunView {
    #[serde(default)]
    pub schema_version: u32,
    #[serde(default)]
    pub harness_version: String,
    #[serde(default)]
    pub git_revision: Option<String>,
    #[serde(default)]
    pub started_at: String,
    #[serde(default)]
    pub duration_ms: u64,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub environment: EnvView,
    #[serde(default)]
    pub images: Vec<ImageView>,
    #[serde(default)]
    pub scenarios: Vec<ScenarioView>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EnvView {
    #[serde(default)]
    pub backend: String,
    #[serde(default)]
    pub postgresql: String,
    #[serde(default)]
    pub postgresql_source: String,
    #[serde(default)]
    pub cnpg_modelled: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageView {
    pub reference: String,
    #[serde(default)]
    pub manifest_digest: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScenarioView {
    pub id: String,
    #[serde(default)]
    pub file: String,
    #[serde(default)]
    pub description: Option<String>,
    /// `passed`, `failed` or `skipped`.
    pub status: String,
    #[serde(default)]
    pub duration_ms: u64,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub steps: Vec<StepView>,
    /// Schema 2: why it failed (or, when flaky, why it was retried).
    #[serde(default)]
    pub category: Option<Category>,
    /// Schema 2: earlier attempts retried by `--retries`.
    #[serde(default)]
    pub attempts: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StepView {
    pub index: usize,
    #[serde(default)]
    pub line: u64,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub title: String,
    pub status: String,
    #[serde(default)]
    pub duration_ms: u64,
    #[serde(default)]
    pub expected: Option<String>,
    #[serde(default)]
    pub actual: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub category: Option<Category>,
    #[serde(default)]
    pub evidence: Vec<Evidence>,
}

/// The first failure of a scenario: where, and what differed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Failure {
    /// `file:line step N (title)`, or the file when the scenario could not run.
    pub locator: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Schema 2: the failure's category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<Category>,
    /// Schema 2: what decided it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<Evidence>,
}

impl Failure {
    /// Plain text, as the console prints it.
    pub fn text(&self) -> String {
        let mut out = self.locator.clone();
        if let Some(c) = self.category {
            out += &format!(" [{c}]");
        }
        if let (Some(e), Some(a)) = (&self.expected, &self.actual) {
            out += &format!(
                "\n  expected: {}\n  actual:   {}",
                e.replace('\n', "\n            "),
                a.replace('\n', "\n            ")
            );
        } else if let Some(m) = &self.message {
            out += &format!("\n  error: {}", m.replace('\n', "\n         "));
        }
        out
    }
}

impl ScenarioView {
    pub fn failure(&self) -> Option<Failure> {
        if let Some(e) = &self.error {
            return Some(Failure {
                locator: self.file.clone(),
                message: Some(e.clone()),
                category: self.category,
                ..Failure::default()
            });
        }
        let step = self.steps.iter().find(|s| s.status == "failed")?;
        Some(Failure {
            locator: format!("{}:{} step {} ({})", self.file, step.line, step.index, step.title),
            expected: step.expected.clone(),
            actual: step.actual.clone(),
            message: step.message.clone(),
            category: step.category.or(self.category),
            evidence: step.evidence.clone(),
        })
    }
}

impl RunView {
    pub fn load(path: &Path) -> Result<RunView, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn of(report: &RunReport) -> RunView {
        serde_json::to_value(report).and_then(serde_json::from_value).expect("a run report reads back as a view")
    }

    pub fn count(&self, status: &str) -> usize {
        self.scenarios.iter().filter(|s| s.status == status).count()
    }
}
