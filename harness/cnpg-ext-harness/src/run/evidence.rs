//! After a step fails: its category, and the evidence a person would otherwise dig for — the
//! postmaster's log lines around the failure, the instances' `SHOW` values, the mounts they
//! see, the library or symbol named, and on kind the pod's events and where the pod's
//! diagnostics were written.

use cnpg_ext_backend::Backend;
use cnpg_ext_model::Cluster;

use crate::reports::category::{self, Category, Evidence, FailureFacts};
use crate::reports::run::StepResult;

/// The settings that decide where extensions come from.
const SHOWN: &[&str] =
    &["server_version", "extension_control_path", "dynamic_library_path", "shared_preload_libraries"];

/// Lines of log on each side of the line that names the failure.
const AROUND: usize = 6;

/// Classifies the failed step `r` and attaches its evidence. `unusable`: the step ended in
/// `BackendError::Unusable`.
pub(crate) async fn attach(r: &mut StepResult, unusable: bool, backend: &dyn Backend, applied: Option<&Cluster>) {
    let failing: Vec<(&str, &str)> =
        r.checks.iter().filter(|c| !c.ok).map(|c| (c.what.as_str(), c.actual.as_str())).collect();
    let error = if r.checks.is_empty() { r.message.as_deref() } else { None };
    let category = category::classify(&FailureFacts { unusable, error, failing_checks: failing.clone() });
    r.category = Some(category);
    let mut ev = Vec::new();

    let text: String = match error {
        Some(e) => e.to_string(),
        None => failing.iter().map(|(w, a)| format!("{w}: {a}")).collect::<Vec<_>>().join("\n"),
    };
    if !failing.is_empty() {
        let lines: Vec<String> = r
            .checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| {
                let on = c.instance.as_deref().map(|i| format!(" on {i}")).unwrap_or_default();
                format!("{}{on}\n  expected: {}\n  actual:   {}", c.what, c.expected, c.actual)
            })
            .collect();
        ev.push(Evidence::new("checks", None, lines.join("\n")));
    } else if let Some(e) = error {
        ev.push(Evidence::new("error", None, e));
    }
    if let Some(lib) = category::missing_library(&text) {
        ev.push(Evidence::new("library", None, format!("{lib} (not found by the dynamic loader)")));
    }
    if let Some(sym) = category::undefined_symbol(&text) {
        ev.push(Evidence::new("symbol", None, sym));
    }
    if let Some(dir) = diagnostics_dir(&text) {
        if let Some(events) = pod_events(std::path::Path::new(&dir)) {
            ev.push(Evidence::new("events", None, events));
        }
        ev.push(Evidence::new("diagnostics", None, dir));
    }
    if category == Category::EnvironmentUnsupported {
        r.evidence = ev;
        return;
    }
    let instances = backend.instances().await.unwrap_or_default();
    let needles: Vec<&str> =
        category::phrases(category).iter().copied().chain(["ERROR:", "FATAL:", "PANIC:"]).collect();
    for inst in &instances {
        if let Some(log) = backend.server_log(&inst.name).await.filter(|l| !l.trim().is_empty()) {
            ev.push(Evidence::new("postmaster-log", Some(&inst.name), category::log_excerpt(&log, &needles, AROUND)));
        }
        let session = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            backend.connect(&inst.name, "postgres", "postgres"),
        )
        .await;
        let session = match session {
            Ok(Ok(client)) => Some(client),
            _ => None,
        };
        if session.is_none() {
            // No session of our own (kind: the port-forward failed): as the postmaster says.
            if let Some(settings) = backend.settings(&inst.name).await {
                let shown: Vec<String> = settings.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                ev.push(Evidence::new("show", Some(&inst.name), shown.join("\n")));
            }
        }
        if let Some(client) = session {
            let mut shown = Vec::new();
            for guc in SHOWN {
                if let Ok(rows) = client.simple_query(&format!("SHOW {guc}")).await {
                    let value = rows.iter().find_map(|m| match m {
                        tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
                        _ => None,
                    });
                    shown.push(format!("{guc} = {}", value.unwrap_or_default()));
                }
            }
            if !shown.is_empty() {
                ev.push(Evidence::new("show", Some(&inst.name), shown.join("\n")));
            }
        }
        if let Some(cluster) = applied {
            let plan = backend.plan_for(cluster, &inst.name);
            if let Ok(Ok(obs)) =
                tokio::time::timeout(std::time::Duration::from_secs(10), backend.inspect(&inst.name, &plan)).await
            {
                let mounts: Vec<String> = obs
                    .mounts
                    .iter()
                    .map(|m| {
                        let ro = m.read_only.map(|b| b.to_string()).unwrap_or_else(|| "not checked".into());
                        format!("{} (present: {}, {} files, read-only: {ro})", m.path, m.present, m.files.len())
                    })
                    .collect();
                if !mounts.is_empty() {
                    ev.push(Evidence::new("mounts", Some(&inst.name), mounts.join("\n")));
                }
            }
        }
    }
    r.evidence = ev;
}

/// `(diagnostics: DIR)`, as the kind backend notes where it collected the pod's events,
/// previous-container logs and volumes.
fn diagnostics_dir(text: &str) -> Option<String> {
    let at = text.find("(diagnostics: ")?;
    let rest = &text[at + "(diagnostics: ".len()..];
    rest.find(')').map(|end| rest[..end].to_string())
}

/// The pod events of a kind failure's diagnostics (`events.txt`: one line per event, oldest
/// first), the last [`EVENTS`] of them.
fn pod_events(dir: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("events.txt")).ok()?;
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(" Pod/")).collect();
    let shown = &lines[lines.len().saturating_sub(EVENTS)..];
    (!shown.is_empty()).then(|| shown.join("\n"))
}

/// Most pod events in the evidence.
const EVENTS: usize = 20;

/// The category of a scenario that could not run at all (its error text).
pub(crate) fn of_error(error: &str) -> Category {
    if error.starts_with("environment unusable") {
        return Category::EnvironmentUnsupported;
    }
    category::classify(&FailureFacts { error: Some(error), ..FailureFacts::default() })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_diagnostics_directory_is_read_from_the_message() {
        assert_eq!(
            super::diagnostics_dir("pod x-1 not ready (diagnostics: reports/diagnostics/ns-1) after 300s").as_deref(),
            Some("reports/diagnostics/ns-1")
        );
        assert_eq!(super::diagnostics_dir("no"), None);
    }
}
