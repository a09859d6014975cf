//! The aggregate record of a matrix: cells, totals, report.json / junit.xml / summary.md.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Exit;
use crate::reports::view::Failure;

/// Marks an aggregate matrix report (vs a run's `report.json`).
pub const MATRIX_REPORT_KIND: &str = "cnpg-ext-harness/matrix";

/// An axis value: a short name (used in cell ids and exclusions) and what it stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Named {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScenarioSet {
    pub name: String,
    /// Absolute scenario paths.
    pub paths: Vec<String>,
}

/// One cell: a point of the product of the axes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellSpec {
    pub id: String,
    pub backend: String,
    /// `value` is `wheel` or the path of a pg_config.
    pub postgres: Named,
    pub cnpg: String,
    /// kind cells only: the kind config file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<Named>,
    /// `axes.images`: the image substitutions of this cell (`--image REF=SOURCE` each).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageAxis>,
    #[serde(rename = "scenario_set")]
    pub scenarios: ScenarioSet,
}

/// A value of the image axis: a name and what it substitutes (REF → SOURCE).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageAxis {
    pub name: String,
    #[serde(default)]
    pub substitute: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CellStatus {
    Passed,
    Failed,
    Unsupported,
    Error,
    /// Killed after `--cell-timeout` (or the matrix file's `cell_timeout`).
    Timeout,
    /// Every scenario passed, one only after a retry (`--retries`).
    Flaky,
}

impl CellStatus {
    /// What `matrix --rerun-failed` runs again: failed, errored, timed out and flaky cells.
    pub fn rerun(self) -> bool {
        matches!(self, CellStatus::Failed | CellStatus::Error | CellStatus::Timeout | CellStatus::Flaky)
    }

    pub fn name(self) -> &'static str {
        match self {
            CellStatus::Passed => "passed",
            CellStatus::Failed => "failed",
            CellStatus::Unsupported => "unsupported",
            CellStatus::Error => "error",
            CellStatus::Timeout => "timeout",
            CellStatus::Flaky => "flaky",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CellScenario {
    pub id: String,
    pub status: String,
    pub duration_ms: u64,
    /// Schema 2: why it failed (or was retried, when flaky).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<crate::reports::category::Category>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CellTotals {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    #[serde(default)]
    pub flaky: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CellResult {
    #[serde(flatten)]
    pub spec: CellSpec,
    pub status: CellStatus,
    /// Why a cell is unsupported or errored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub started_at: String,
    pub duration_ms: u64,
    /// The cell's report directory, relative to the matrix report directory.
    pub dir: String,
    /// Files of the cell (report.json, junit.xml, summary.md, output.log, logs/…), relative to
    /// the matrix report directory.
    #[serde(default)]
    pub files: Vec<String>,
    /// The harness command line the cell ran (re-run it by hand).
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgresql: Option<String>,
    #[serde(default)]
    pub totals: CellTotals,
    #[serde(default)]
    pub scenarios: Vec<CellScenario>,
    /// Set when `--rerun-failed` carried this cell over from an earlier report unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carried_over_from: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MatrixTotals {
    pub passed: usize,
    pub failed: usize,
    pub unsupported: usize,
    pub error: usize,
    #[serde(default)]
    pub timeout: usize,
    #[serde(default)]
    pub flaky: usize,
}

impl MatrixTotals {
    /// `, N timeout` when a cell timed out (nothing otherwise: the summary lines stay as they were).
    pub fn timeout_text(&self) -> String {
        let mut out = String::new();
        if self.timeout > 0 {
            out += &format!(", {} timeout", self.timeout);
        }
        if self.flaky > 0 {
            out += &format!(", {} flaky", self.flaky);
        }
        out
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MatrixReport {
    pub kind: String,
    pub schema_version: u32,
    pub harness_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_revision: Option<String>,
    pub matrix_file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub started_at: String,
    pub duration_ms: u64,
    /// Cells run at once.
    pub jobs: usize,
    /// Sum of the durations of the cells run by this invocation (not carried over).
    pub cell_time_ms: u64,
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun_of: Option<String>,
    pub totals: MatrixTotals,
    pub cells: Vec<CellResult>,
}

impl MatrixReport {
    pub fn totals_of(cells: &[CellResult]) -> MatrixTotals {
        let n = |s: CellStatus| cells.iter().filter(|c| c.status == s).count();
        MatrixTotals {
            passed: n(CellStatus::Passed),
            failed: n(CellStatus::Failed),
            unsupported: n(CellStatus::Unsupported),
            error: n(CellStatus::Error),
            timeout: n(CellStatus::Timeout),
            flaky: n(CellStatus::Flaky),
        }
    }

    /// 0 all passed or unsupported, 1 a cell failed, errored or timed out, 3 no cell ran at all.
    pub fn exit_code(&self) -> Exit {
        let t = &self.totals;
        if t.passed + t.flaky + t.failed + t.timeout == 0 {
            // Every cell errored or is unsupported: nothing ran.
            Exit::Environment
        } else if t.failed + t.error + t.timeout > 0 {
            Exit::Failed
        } else {
            Exit::Passed
        }
    }

    pub fn load(path: &Path) -> Result<MatrixReport, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let r: MatrixReport =
            serde_json::from_slice(&bytes).map_err(|e| format!("{}: not a matrix report: {e}", path.display()))?;
        if r.kind != MATRIX_REPORT_KIND {
            return Err(format!("{}: not a matrix report (kind `{}`)", path.display(), r.kind));
        }
        Ok(r)
    }

    /// `report.json`, `junit.xml` and `summary.md` into `dir` (the page, `index.html`, is
    /// [`crate::reports::html::matrix_page`], written by the caller as for a run).
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

    /// One testsuite per cell, one testcase per scenario (a cell that did not run is one
    /// testcase: skipped when unsupported, an error otherwise).
    pub fn junit(&self) -> quick_junit::Report {
        use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
        let mut report = Report::new("cnpg-ext-harness matrix");
        for c in &self.cells {
            let mut suite = TestSuite::new(c.spec.id.clone());
            suite.add_property(quick_junit::Property::new("backend", c.spec.backend.clone()));
            suite.add_property(quick_junit::Property::new("postgres", c.spec.postgres.value.clone()));
            suite.add_property(quick_junit::Property::new("cnpg", c.spec.cnpg.clone()));
            if let Some(k) = &c.spec.kubernetes {
                suite.add_property(quick_junit::Property::new("kubernetes", k.value.clone()));
            }
            if let Some(i) = &c.spec.image {
                suite.add_property(quick_junit::Property::new("images", i.name.clone()));
            }
            suite.add_property(quick_junit::Property::new("status", c.status.name()));
            if c.scenarios.is_empty() {
                let status = match c.status {
                    CellStatus::Passed | CellStatus::Flaky => TestCaseStatus::success(),
                    CellStatus::Unsupported => {
                        let mut s = TestCaseStatus::skipped();
                        if let TestCaseStatus::Skipped { message, .. } = &mut s {
                            *message = c.reason.clone().map(Into::into);
                        }
                        s
                    }
                    CellStatus::Failed | CellStatus::Error | CellStatus::Timeout => {
                        let kind =
                            if c.status == CellStatus::Error { NonSuccessKind::Error } else { NonSuccessKind::Failure };
                        let mut s = TestCaseStatus::non_success(kind);
                        if let TestCaseStatus::NonSuccess { message, ty, .. } = &mut s {
                            *message = c.reason.clone().map(Into::into);
                            if c.status == CellStatus::Timeout {
                                *ty = Some("timeout".into());
                            }
                        }
                        s
                    }
                };
                let mut case = TestCase::new("cell", status);
                case.set_classname(c.spec.id.clone());
                case.set_time(std::time::Duration::from_millis(c.duration_ms));
                suite.add_test_case(case);
            }
            for s in &c.scenarios {
                let status = match s.status.as_str() {
                    "passed" | "flaky" => TestCaseStatus::success(),
                    "skipped" => TestCaseStatus::skipped(),
                    _ => {
                        let mut st = TestCaseStatus::non_success(NonSuccessKind::Failure);
                        if let TestCaseStatus::NonSuccess { message, description, ty, .. } = &mut st {
                            *message = s.failure.as_ref().map(|f| f.locator.clone().into());
                            *description = s.failure.as_ref().map(|f| f.text().into());
                            *ty = s.category.map(|c| c.name().into());
                        }
                        st
                    }
                };
                let mut case = TestCase::new(s.id.clone(), status);
                case.set_classname(c.spec.id.clone());
                case.set_time(std::time::Duration::from_millis(s.duration_ms));
                suite.add_test_case(case);
            }
            report.add_test_suite(suite);
        }
        report
    }

    pub fn summary_markdown(&self) -> String {
        let t = &self.totals;
        let mut md = format!(
            "## cnpg-ext-harness matrix: {} passed, {} failed, {} unsupported, {} error{} ({} cells)\n\n",
            t.passed,
            t.failed,
            t.unsupported,
            t.error,
            t.timeout_text(),
            self.cells.len()
        );
        md += "| cell | backend | PostgreSQL | CNPG | scenarios | status | time |\n| --- | --- | --- | --- | --- | --- | --- |\n";
        for c in &self.cells {
            let mark = match c.status {
                CellStatus::Passed => "✅ passed".to_string(),
                CellStatus::Failed => {
                    format!("❌ failed ({}/{})", c.totals.failed, c.scenarios.len())
                }
                CellStatus::Unsupported => {
                    format!("⚪ {}", c.reason.as_deref().unwrap_or("unsupported"))
                }
                CellStatus::Error => "⚠️ error".to_string(),
                CellStatus::Timeout => "⏱️ timeout".to_string(),
                CellStatus::Flaky => "⚠️ flaky (passed after a retry)".to_string(),
            };
            let backend = match &c.spec.kubernetes {
                Some(k) => format!("{} ({})", c.spec.backend, k.name),
                None => c.spec.backend.clone(),
            };
            md += &format!(
                "| [`{}`]({}/summary.md) | {backend} | {} | {} | {} | {mark} | {} ms |\n",
                c.spec.id, c.dir, c.spec.postgres.name, c.spec.cnpg, c.spec.scenarios.name, c.duration_ms
            );
        }
        for c in self
            .cells
            .iter()
            .filter(|c| matches!(c.status, CellStatus::Failed | CellStatus::Error | CellStatus::Timeout))
        {
            md += &format!("\n### `{}`\n\n", c.spec.id);
            if let Some(r) = &c.reason {
                md += &format!("{r}\n\n");
            }
            for s in c.scenarios.iter().filter(|s| s.failure.is_some()) {
                md += &format!("```\n{}: {}\n```\n", s.id, s.failure.as_ref().map(Failure::text).unwrap_or_default());
            }
        }
        md
    }
}

#[cfg(test)]
mod rerun_tests {
    use super::CellStatus;

    #[test]
    fn rerun_failed_reruns_failed_errored_timed_out_and_flaky_cells() {
        let rerun: Vec<&str> = [
            CellStatus::Passed,
            CellStatus::Failed,
            CellStatus::Unsupported,
            CellStatus::Error,
            CellStatus::Timeout,
            CellStatus::Flaky,
        ]
        .into_iter()
        .filter(|s| s.rerun())
        .map(CellStatus::name)
        .collect();
        assert_eq!(rerun, ["failed", "error", "timeout", "flaky"]);
    }
}
