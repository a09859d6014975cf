//! The certification record: `certification.json`, and the verdict added to the run's
//! `report.json`, `summary.md`, `junit.xml` (plus a `lint` suite) and `index.html`.

use std::path::{Path, PathBuf};

use cnpg_ext_images::lint::{LintReport, Severity};
use serde::Serialize;

use super::infer::Inferred;
use super::verdict::{kind_name, Verdict, VerdictFinding};
use crate::error::HarnessError;
use crate::reports::view::RunView;

#[derive(Debug, Clone, Serialize)]
pub struct Certification {
    pub image: String,
    pub manifest_digest: String,
    pub verdict: Verdict,
    /// The finding that decided the verdict (none when it passed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<VerdictFinding>,
    /// Every finding against the image, in the order found.
    pub findings: Vec<VerdictFinding>,
    /// Why the verdict is not `pass`.
    pub reasons: Vec<String>,
    /// Worth knowing, not failures (e.g. only the default version has an install script).
    pub notes: Vec<String>,
    pub inferred: Option<Inferred>,
    pub lint: LintReport,
    /// The generated scenario directory (re-run with `cnpg-ext-harness run <dir>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scenario: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<RunSummary>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub backend: String,
    pub postgresql: String,
    pub passed: usize,
    pub failed: usize,
    pub duration_ms: u64,
}

fn certification_markdown(c: &Certification) -> String {
    let mark = match c.verdict {
        Verdict::Pass => "✅ PASS",
        Verdict::Fail => "❌ FAIL",
        Verdict::Inconclusive => "⚪ INCONCLUSIVE",
    };
    let mut md = format!("## Certification of `{}`: {mark}\n\n- manifest: `{}`\n", c.image, c.manifest_digest);
    if let Some(d) = &c.decided_by {
        md += &format!("- decided by: `{}` — {}\n", kind_name(d.kind), d.reason.lines().next().unwrap_or(""));
    }
    md += &format!("- {}\n", c.lint.binaries.to_text());
    if let Some(i) = &c.inferred {
        md += &format!(
            "- mounted as `{}` from `{}` with extension_control_path {:?}, dynamic_library_path {:?}, ld_library_path {:?}\n",
            i.name, i.reference, i.extension_control_path, i.dynamic_library_path, i.ld_library_path
        );
        for e in &i.extensions {
            let path = if e.update_path.is_empty() {
                format!("created at {}", e.default_version.as_deref().unwrap_or("?"))
            } else {
                format!(
                    "created at {}, updated to {}",
                    e.create_version.as_deref().unwrap_or("?"),
                    e.update_path.join(" → ")
                )
            };
            md += &format!("- extension `{}`: {path}, dropped\n", e.name);
        }
    }
    if !c.reasons.is_empty() {
        md += "\n### Reasons\n\n";
        for r in &c.reasons {
            md += &format!("```\n{r}\n```\n");
        }
    }
    if !c.notes.is_empty() {
        md += "\n### Notes\n\n";
        for n in &c.notes {
            md += &format!("- {n}\n");
        }
    }
    md += &format!("\n### Lint: {} error(s), {} warning(s)\n\n", c.lint.errors(), c.lint.warnings());
    for f in &c.lint.findings {
        md += &format!(
            "- {:?} `{}` {}{}\n",
            f.severity,
            f.code,
            f.path.as_ref().map(|p| format!("`{p}`: ")).unwrap_or_default(),
            f.message
        )
        .to_string();
    }
    if let Some(s) = &c.scenario {
        md += &format!("\nRe-run: `cnpg-ext-harness run {s}`\n");
    }
    md
}

/// Adds `certification: {verdict, decided_by}` to the run's report.json, so the run's own
/// record says which finding decided the verdict.
fn annotate_run_report(path: &Path, c: &Certification) -> std::io::Result<()> {
    let Ok(bytes) = std::fs::read(path) else {
        return Ok(()); // no run, no report
    };
    let mut v: serde_json::Value = serde_json::from_slice(&bytes).map_err(std::io::Error::other)?;
    if let Some(obj) = v.as_object_mut() {
        obj.insert(
            "certification".into(),
            serde_json::json!({
                "verdict": c.verdict,
                "decided_by": c.decided_by,
                "binaries": c.lint.binaries,
            }),
        );
    }
    std::fs::write(path, serde_json::to_vec_pretty(&v).map_err(std::io::Error::other)?)
}

pub(super) fn write_record(
    dir: &Path,
    c: &Certification,
    view: Option<&RunView>,
) -> Result<Vec<PathBuf>, HarnessError> {
    let io = |e: std::io::Error| {
        HarnessError::Environment(format!("cannot write the certification into {}: {e}", dir.display()))
    };
    let json = dir.join("certification.json");
    std::fs::write(&json, serde_json::to_vec_pretty(c).expect("serializes")).map_err(io)?;
    if view.is_some() {
        annotate_run_report(&dir.join("report.json"), c).map_err(io)?;
    }
    // summary.md: the verdict first, then the run's own summary.
    let summary = dir.join("summary.md");
    let run_md = std::fs::read_to_string(&summary).unwrap_or_default();
    std::fs::write(&summary, format!("{}\n{run_md}", certification_markdown(c))).map_err(io)?;
    // junit.xml: the run's suites plus one `lint` suite.
    let junit = dir.join("junit.xml");
    let mut report = quick_junit::Report::new("cnpg-ext-harness certify");
    if let Some(v) = view {
        let mut suite = quick_junit::TestSuite::new(format!("certify ({})", v.environment.backend));
        for s in &v.scenarios {
            let status = if s.status == "passed" {
                quick_junit::TestCaseStatus::success()
            } else {
                let mut st = quick_junit::TestCaseStatus::non_success(quick_junit::NonSuccessKind::Failure);
                if let quick_junit::TestCaseStatus::NonSuccess { message, description, .. } = &mut st {
                    let f = s.failure();
                    *message = f.as_ref().map(|f| f.locator.clone().into());
                    *description = f.map(|f| f.text().into());
                }
                st
            };
            let mut case = quick_junit::TestCase::new(s.id.clone(), status);
            case.set_time(std::time::Duration::from_millis(s.duration_ms));
            case.set_system_out(
                s.steps
                    .iter()
                    .map(|x| format!("{} step {} {} ({} ms)", x.status, x.index, x.title, x.duration_ms))
                    .collect::<Vec<_>>()
                    .join("\n"),
            );
            suite.add_test_case(case);
        }
        report.add_test_suite(suite);
    }
    let mut lint_suite = quick_junit::TestSuite::new("lint");
    let errors: Vec<&cnpg_ext_images::lint::Finding> =
        c.lint.findings.iter().filter(|f| f.severity == Severity::Error).collect();
    let status = if errors.is_empty() {
        quick_junit::TestCaseStatus::success()
    } else {
        let mut st = quick_junit::TestCaseStatus::non_success(quick_junit::NonSuccessKind::Failure);
        if let quick_junit::TestCaseStatus::NonSuccess { message, description, .. } = &mut st {
            *message = Some(format!("{} lint error(s)", errors.len()).into());
            *description = Some(c.lint.to_text().into());
        }
        st
    };
    lint_suite.add_test_case(quick_junit::TestCase::new("lint", status));
    let mut verdict_case = quick_junit::TestCase::new(
        "verdict",
        match c.verdict {
            Verdict::Pass => quick_junit::TestCaseStatus::success(),
            Verdict::Inconclusive => quick_junit::TestCaseStatus::skipped(),
            Verdict::Fail => {
                let mut st = quick_junit::TestCaseStatus::non_success(quick_junit::NonSuccessKind::Failure);
                if let quick_junit::TestCaseStatus::NonSuccess { message, description, .. } = &mut st {
                    *message = Some(
                        match &c.decided_by {
                            Some(d) => format!("certification failed: decided by {}", kind_name(d.kind)),
                            None => "certification failed".into(),
                        }
                        .into(),
                    );
                    *description = Some(c.reasons.join("\n").into());
                }
                st
            }
        },
    );
    verdict_case.set_system_out(c.reasons.join("\n"));
    lint_suite.add_test_case(verdict_case);
    report.add_test_suite(lint_suite);
    std::fs::write(&junit, report.to_string().map_err(|e| io(std::io::Error::other(e)))?).map_err(io)?;
    // index.html: the verdict, reasons, notes, lint findings and the run.
    let mut extra = String::new();
    extra += "<section class=\"card\"><h2>Certification</h2>";
    if let Some(d) = &c.decided_by {
        extra += &format!("<p>Decided by <code>{}</code></p>", crate::reports::html::esc(&kind_name(d.kind)));
    }
    extra += &format!("<p class=\"muted\">{}</p>", crate::reports::html::esc(&c.lint.binaries.to_text()));
    if let Some(i) = &c.inferred {
        extra += &format!(
            "<p>Mounted as <code>{}</code> from <code>{}</code>: extension_control_path <code>{}</code>, dynamic_library_path <code>{}</code>, ld_library_path <code>{}</code></p>",
            crate::reports::html::esc(&i.name),
            crate::reports::html::esc(&i.reference),
            crate::reports::html::esc(&i.extension_control_path.join(", ")),
            crate::reports::html::esc(&i.dynamic_library_path.join(", ")),
            crate::reports::html::esc(&if i.ld_library_path.is_empty() { "(none)".to_string() } else { i.ld_library_path.join(", ") }),
        );
    }
    for r in &c.reasons {
        extra += &format!("<pre>{}</pre>", crate::reports::html::esc(r));
    }
    for n in &c.notes {
        extra += &format!("<p class=\"muted\">note: {}</p>", crate::reports::html::esc(n));
    }
    extra += "<h3>Lint</h3><table>";
    for f in &c.lint.findings {
        extra += &format!(
            "<tr><td><span class=\"dot d-{}\"></span>{:?}</td><td><code>{}</code></td><td>{}</td></tr>",
            if f.severity == Severity::Error { "failed" } else { "error" },
            f.severity,
            crate::reports::html::esc(&f.code),
            crate::reports::html::esc(&format!(
                "{}{}",
                f.path.as_ref().map(|p| format!("{p}: ")).unwrap_or_default(),
                f.message
            )),
        );
    }
    if c.lint.findings.is_empty() {
        extra += "<tr><td>no findings</td></tr>";
    }
    extra += "</table><p class=\"muted\"><a href=\"certification.json\">certification.json</a> · <a href=\"lint.json\">lint.json</a> · <a href=\"scenario/scenario.yaml\">scenario.yaml</a> · <a href=\"scenario/cluster.yaml\">cluster.yaml</a></p></section>";
    let (class, text) = match c.verdict {
        Verdict::Pass => ("passed", "verdict: PASS"),
        Verdict::Fail => ("failed", "verdict: FAIL"),
        Verdict::Inconclusive => ("unsupported", "verdict: INCONCLUSIVE"),
    };
    let empty = RunView::default();
    let html = crate::reports::html::run_page_with(
        view.unwrap_or(&empty),
        &format!("Certification of {}", c.image),
        Some((class, text)),
        &extra,
    );
    let index = dir.join("index.html");
    std::fs::write(&index, html).map_err(io)?;
    let mut files = vec![json, summary, junit, index, dir.join("lint.json")];
    if view.is_some() {
        files.push(dir.join("report.json"));
    }
    Ok(files)
}
