//! The run record: `report.json` (versioned schema, see docs/report-schema.md) and
//! `junit.xml` (one testcase per scenario; failures carry the step and expected vs actual).

use std::path::{Path, PathBuf};

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
use serde::Serialize;

use cnpg_ext_model::judge::Check;

use crate::reports::category::{Category, Evidence};

/// How a scenario or a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Passed,
    Failed,
    Skipped,
    /// Passed after a retry of an infrastructure failure (`--retries`): not `passed`.
    Flaky,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Passed => "passed",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
            Status::Flaky => "flaky",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StepResult {
    pub index: usize,
    pub line: u64,
    pub kind: String,
    pub title: String,
    pub status: Status,
    pub duration_ms: u64,
    /// What the step expected and what was seen, when they differ (or the error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Every comparison the step made.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<Check>,
    /// Failed steps: why, as a stable name (docs/report-schema.md → Categories).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<Category>,
    /// Failed steps: what decided the category (log lines, `SHOW` values, mounts, …).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<Evidence>,
}

impl StepResult {
    /// `file:line step N (title)`: where to look.
    pub fn locator(&self, scenario_file: &str) -> String {
        format!("{scenario_file}:{} step {} ({})", self.line, self.index, self.title)
    }
}

pub const REPORT_SCHEMA_VERSION: u32 = 2;

#[derive(Debug, Clone, Serialize)]
pub struct ImageRecord {
    pub reference: String,
    pub manifest_digest: String,
    /// Container backend: the engine's id of the image mounted under `reference`, checked
    /// against the verified image (its config digest, or for a pull its manifest) before any
    /// container started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine_image_id: Option<String>,
    pub source: String,
    /// `--image REF=SOURCE` (a matrix's `axes.images`): the SOURCE this reference came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub substituted_by: Option<String>,
    /// Compatibility findings read from the image's binaries while preparing it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<cnpg_ext_images::lint::Finding>,
    /// What its binaries say: PostgreSQL major per module, newest glibc needs, architectures.
    pub binaries: cnpg_ext_images::lint::Binaries,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub id: String,
    pub file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub status: Status,
    pub duration_ms: u64,
    /// Why the scenario could not run at all (its steps are then skipped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub steps: Vec<StepResult>,
    /// Failed (or flaky) scenarios: the category of the failure (of the first failed step,
    /// or of the error that kept the scenario from running).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<Category>,
    /// Earlier attempts when `--retries` retried an infrastructure failure, oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<Attempt>,
}

/// An attempt that failed and was retried.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<Category>,
    pub duration_ms: u64,
    /// Its first failure, as the console prints it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

impl ScenarioResult {
    /// The first failure: `file:line step N (title)` and what differed.
    pub fn failure_summary(&self) -> Option<String> {
        if let Some(e) = &self.error {
            return Some(format!("{}: {e}", self.file));
        }
        let step = self.steps.iter().find(|s| s.status == Status::Failed)?;
        let mut out = step.locator(&self.file);
        if let Some(c) = step.category {
            out += &format!(" [{c}]");
        }
        if let (Some(e), Some(a)) = (&step.expected, &step.actual) {
            out += &format!("\n  expected: {}\n  actual:   {}", indent(e), indent(a));
        }
        if let Some(m) = &step.message {
            if step.expected.is_none() {
                out += &format!("\n  error: {}", indent(m));
            }
        }
        Some(out)
    }
}

fn indent(s: &str) -> String {
    s.replace('\n', "\n            ")
}

#[derive(Debug, Clone, Serialize)]
pub struct Environment {
    pub backend: String,
    pub postgresql: String,
    pub postgresql_source: String,
    pub cnpg_modelled: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// The stand-in operand (local, container): which CNPG image it imitates and the
    /// extensions it ships — an image carrying one of these is shadowed by it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operand: Option<OperandRecord>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OperandRecord {
    pub flavor: String,
    pub extensions: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Totals {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Passed only after a retry.
    pub flaky: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub schema_version: u32,
    pub harness_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub git_revision: Option<String>,
    pub started_at: String,
    pub duration_ms: u64,
    pub command: Vec<String>,
    pub environment: Environment,
    pub images: Vec<ImageRecord>,
    pub totals: Totals,
    pub scenarios: Vec<ScenarioResult>,
}

impl RunReport {
    pub fn totals_of(scenarios: &[ScenarioResult]) -> Totals {
        let count = |s: Status| scenarios.iter().filter(|r| r.status == s).count();
        Totals {
            passed: count(Status::Passed),
            failed: count(Status::Failed),
            skipped: count(Status::Skipped),
            flaky: count(Status::Flaky),
        }
    }

    /// Writes `report.json` and `junit.xml` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let json = dir.join("report.json");
        std::fs::write(&json, serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
        let junit = dir.join("junit.xml");
        std::fs::write(&junit, self.junit().to_string().map_err(std::io::Error::other)?)?;
        let summary = dir.join("summary.md");
        std::fs::write(&summary, self.summary_markdown())?;
        Ok(vec![json, junit, summary])
    }

    /// A GitHub step summary: the verdict table, each failure's expected vs actual, and how
    /// to reproduce the run.
    pub fn summary_markdown(&self) -> String {
        let flaky = if self.totals.flaky > 0 { format!(", {} flaky", self.totals.flaky) } else { String::new() };
        let mut md = format!(
            "## cnpg-ext-harness: {}/{} passed{flaky} ({} backend)\n\n| scenario | status | time |\n| --- | --- | --- |\n",
            self.totals.passed,
            self.scenarios.len(),
            self.environment.backend
        );
        for s in &self.scenarios {
            let mark = match s.status {
                Status::Passed => "✅ passed",
                Status::Failed => "❌ failed",
                Status::Skipped => "⏭ skipped",
                Status::Flaky => "⚠️ flaky",
            };
            let category = s.category.map(|c| format!(" `{c}`")).unwrap_or_default();
            md += &format!("| `{}` | {mark}{category} | {} ms |\n", s.id, s.duration_ms);
        }
        for s in self.scenarios.iter().filter(|s| s.status == Status::Failed) {
            md += &format!("\n### `{}`\n\n```\n{}\n```\n", s.id, s.failure_summary().unwrap_or_default());
            if let Some(step) = s.steps.iter().find(|x| x.status == Status::Failed) {
                for e in &step.evidence {
                    let on = e.instance.as_deref().map(|i| format!(" ({i})")).unwrap_or_default();
                    md += &format!(
                        "\n<details><summary>{}{on}</summary>\n\n```\n{}\n```\n</details>\n",
                        e.source, e.text
                    );
                }
            }
        }
        for s in self.scenarios.iter().filter(|s| s.status == Status::Flaky) {
            md += &format!("\n### `{}` (flaky)\n\npassed on attempt {}; earlier:\n\n```\n", s.id, s.attempts.len() + 1);
            for a in &s.attempts {
                md += &format!(
                    "{} [{}] {}\n",
                    a.status.name(),
                    a.category.map(Category::name).unwrap_or("-"),
                    a.failure.as_deref().unwrap_or("")
                );
            }
            md += "```\n";
        }
        md += "\n### Reproduce\n\n```sh\n";
        md += &self.command.iter().map(|a| crate::plumbing::shell::shell_quote(a)).collect::<Vec<_>>().join(" ");
        md += "\n```\n\n";
        md += &format!(
            "- harness {} ({})\n- PostgreSQL: {} from {}\n- CloudNativePG behaviour modelled: {}\n",
            self.harness_version,
            self.git_revision.as_deref().unwrap_or("unknown revision"),
            self.environment.postgresql,
            self.environment.postgresql_source,
            self.environment.cnpg_modelled
        );
        for i in &self.images {
            md += &format!("- image `{}` @ `{}`\n", i.reference, i.manifest_digest);
        }
        md
    }

    pub fn junit(&self) -> Report {
        let mut report = Report::new("cnpg-ext-harness");
        let mut suite = TestSuite::new(format!("scenarios ({})", self.environment.backend));
        for s in &self.scenarios {
            let status = match s.status {
                Status::Passed => TestCaseStatus::success(),
                Status::Flaky => {
                    // Passed, with the failed attempts as flaky runs (the JUnit flakyFailure).
                    let mut st = TestCaseStatus::success();
                    if let TestCaseStatus::Success { flaky_runs } = &mut st {
                        for a in &s.attempts {
                            let mut run = quick_junit::TestRerun::new(NonSuccessKind::Failure);
                            run.ty = Some(a.category.map(Category::name).unwrap_or("failure").into());
                            if let Some(f) = &a.failure {
                                run.message = Some(f.lines().next().unwrap_or_default().into());
                                run.description = Some(f.as_str().into());
                            }
                            flaky_runs.push(run);
                        }
                    }
                    st
                }
                Status::Skipped => TestCaseStatus::skipped(),
                Status::Failed => {
                    let mut st = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    if let TestCaseStatus::NonSuccess { message, description, kind, ty, .. } = &mut st {
                        let failed = s.steps.iter().find(|x| x.status == Status::Failed);
                        *message = Some(match failed {
                            Some(step) => format!("step {} ({}) failed", step.index, step.title).into(),
                            None => s.error.clone().unwrap_or_default().into(),
                        });
                        *description = s.failure_summary().map(Into::into);
                        *kind = NonSuccessKind::Failure;
                        // The category is the failure's type: CI groups by it.
                        *ty = s.category.map(|c| c.name().into());
                    }
                    st
                }
            };
            let mut case = TestCase::new(s.id.clone(), status);
            case.set_classname(format!("{}.{}", self.environment.backend, s.id));
            case.set_time(std::time::Duration::from_millis(s.duration_ms));
            let steps: Vec<String> = s
                .steps
                .iter()
                .map(|x| format!("{:?} step {} {} ({} ms)", x.status, x.index, x.title, x.duration_ms).to_lowercase())
                .collect();
            case.set_system_out(steps.join("\n"));
            suite.add_test_case(case);
        }
        report.add_test_suite(suite);
        report
    }
}
