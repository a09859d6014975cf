//! One scenario of a run, on a fresh backend, `jobs` at a time: its steps driven
//! ([`ScenarioRun`]), its logs kept for the bundle, its instances removed, and an
//! infrastructure failure tried again (`--retries`; a pass after a retry is `flaky`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use cnpg_ext_backend::Backend;
use cnpg_ext_model::{CnpgVersion, Scenario};

use super::options::BackendWrap;
use super::prepared::Prepared;
use crate::images::store::ImageStore;
use crate::plumbing::progress::Progress;
use crate::reports::category::Category;
use crate::reports::run::{Attempt, ScenarioResult, Status, StepResult};
use crate::run::runner::ScenarioRun;

/// What every scenario of a run shares.
pub(super) struct Shared {
    /// `jobs` slots.
    pub sem: tokio::sync::Semaphore,
    pub store: Arc<ImageStore>,
    pub prepared: Arc<Prepared>,
    pub progress: Arc<Progress>,
    /// `server_version` as the instances answered it (environment.postgresql).
    pub measured: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// The operand's extensions as the instances list them (environment.operand).
    pub measured_operand: std::sync::Mutex<Option<Vec<String>>>,
    pub cnpg: CnpgVersion,
    pub keep: bool,
    pub wrap: Option<BackendWrap>,
    pub retries: usize,
    pub logs_dir: Option<PathBuf>,
}

/// The scenario, tried until it passes, fails on anything but infrastructure, or has used
/// its retries.
pub(super) async fn run_scenario(shared: Arc<Shared>, scenario: Scenario, dir: PathBuf) -> ScenarioResult {
    // From the first attempt's start (a slot free), not from the run's: the wait for a slot
    // is no part of the scenario's duration.
    let mut first: Option<Instant> = None;
    let mut attempts: Vec<Attempt> = Vec::new();
    loop {
        // A retry gets fresh instances in a directory of its own.
        let here = match attempts.len() {
            0 => dir.clone(),
            n => dir.with_file_name(format!("{}.retry{n}", scenario.id)),
        };
        let (tried, steps, error) = attempt(&shared, &scenario, &here).await;
        let t = *first.get_or_insert(tried);
        let failed = error.is_some() || steps.iter().any(|s| s.status == Status::Failed);
        let category = steps
            .iter()
            .find(|s| s.status == Status::Failed)
            .and_then(|s| s.category)
            .or_else(|| error.as_deref().map(crate::run::evidence::of_error));
        let mut result = ScenarioResult {
            id: scenario.id.clone(),
            file: scenario.file.display().to_string(),
            description: scenario.description.clone(),
            status: if failed { Status::Failed } else { Status::Passed },
            duration_ms: t.elapsed().as_millis() as u64,
            error,
            steps,
            category: if failed { category } else { None },
            attempts: Vec::new(),
        };
        if failed && retried(&shared, &scenario, &mut attempts, category, tried, &result) {
            continue;
        }
        if !failed && !attempts.is_empty() {
            result.status = Status::Flaky;
            result.category = attempts.last().and_then(|a| a.category);
        }
        result.attempts = attempts;
        let line = format!("{} {} ({} ms)", verdict_line(&result), scenario.id, result.duration_ms);
        shared.progress.scenario_finished(&scenario.id, &line);
        return result;
    }
}

/// One attempt in `here`: when it got its slot, the steps, and an error of the backend (made,
/// torn down) if any.
async fn attempt(shared: &Shared, scenario: &Scenario, here: &Path) -> (Instant, Vec<StepResult>, Option<String>) {
    let permit = shared.sem.acquire().await.expect("semaphore");
    let started = Instant::now();
    shared.progress.scenario_started(&scenario.id);
    let made = shared.prepared.backend(&shared.store, shared.cnpg, here.to_path_buf(), scenario);
    let made = match &shared.wrap {
        Some(w) => made.map(|b| (w.0)(&scenario.id, b)),
        None => made,
    };
    let mut backend = match made {
        Ok(b) => b,
        Err(e) => return (started, Vec::new(), Some(e)),
    };
    let on_step = |title: &str| shared.progress.step(&scenario.id, title);
    let steps = ScenarioRun::new(scenario, &shared.store, backend.as_mut()).run(&on_step).await;
    if let Some(v) = server_version(backend.as_ref()).await {
        shared.measured.lock().unwrap().insert(v);
    }
    if shared.measured_operand.lock().unwrap().is_none() {
        let listed = crate::verify::operand_extensions(backend.as_ref()).await;
        shared.measured_operand.lock().unwrap().get_or_insert_with(|| listed.unwrap_or_default());
    }
    // The slot goes to the next scenario now: removing this one's instances (awaited here,
    // its errors this scenario's) overlaps that one's start.
    drop(permit);
    if let Some(logs) = &shared.logs_dir {
        let name = here.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        collect_logs(backend.as_ref(), here, &logs.join(name)).await;
    }
    let teardown = backend.teardown(shared.keep).await;
    (started, steps, teardown.err().map(|e| format!("teardown: {e}")))
}

/// Whether a failed attempt is tried again: only infrastructure (`--retries`), never an
/// assertion. Records the attempt when it is.
fn retried(
    shared: &Shared,
    scenario: &Scenario,
    attempts: &mut Vec<Attempt>,
    category: Option<Category>,
    tried: Instant,
    result: &ScenarioResult,
) -> bool {
    if attempts.len() >= shared.retries || !category.is_some_and(|c| c.is_infrastructure()) {
        return false;
    }
    let c = category.map(|c| c.name()).unwrap_or_default();
    shared.progress.line(&format!(
        "RETRY {} ({c}, attempt {} of {})",
        scenario.id,
        attempts.len() + 2,
        shared.retries + 1
    ));
    attempts.push(Attempt {
        status: Status::Failed,
        category,
        duration_ms: tried.elapsed().as_millis() as u64,
        failure: result.failure_summary(),
    });
    true
}

/// Every `*.log` under a scenario's directory (local: each instance's `postgres.log`), else
/// each instance's whole server log as the backend reads it (container: every container's log).
async fn collect_logs(backend: &dyn Backend, dir: &std::path::Path, dest: &std::path::Path) {
    let mut copied = 0;
    for e in walkdir::WalkDir::new(dir).into_iter().flatten() {
        if e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "log") {
            if let Ok(rel) = e.path().strip_prefix(dir) {
                let to = dest.join(rel);
                if to.parent().is_some_and(|p| std::fs::create_dir_all(p).is_ok())
                    && std::fs::copy(e.path(), &to).is_ok()
                {
                    copied += 1;
                }
            }
        }
    }
    if copied == 0 {
        for inst in backend.instances().await.unwrap_or_default() {
            if let Some(log) = backend.server_log(&inst.name).await {
                if std::fs::create_dir_all(dest).is_ok() {
                    let _ = std::fs::write(dest.join(format!("{}.log", inst.name)), log + "\n");
                }
            }
        }
    }
}

/// `PASS` / `FAIL` / `SKIP`; the finish line is `<verdict> <id> (<ms> ms)`.
pub(crate) fn verdict_line(r: &ScenarioResult) -> String {
    match r.status {
        Status::Passed => "PASS".into(),
        Status::Skipped => "SKIP".into(),
        Status::Failed => "FAIL".into(),
        Status::Flaky => "FLAKY".into(),
    }
}

/// `server_version` of the first instance a backend runs, if one answers.
async fn server_version(backend: &dyn Backend) -> Option<String> {
    let first = backend.instances().await.ok()?.into_iter().next()?;
    let client = backend.connect(&first.name, "postgres", "postgres").await.ok()?;
    let rows = crate::plumbing::sql::query_text(&client, "SELECT 'PostgreSQL ' || current_setting('server_version')")
        .await
        .ok()?;
    rows.first().and_then(|r| r.first().cloned().flatten())
}
