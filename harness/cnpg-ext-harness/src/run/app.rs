//! A whole run: load and check every scenario, prepare PostgreSQL and the images once, run
//! the scenarios in parallel on fresh backends, write the report, clean up.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use cnpg_ext_model::{CnpgVersion, Scenario};
use cnpg_ext_pg::{PgInstall, ProvisionOptions};

use super::attempts::{run_scenario, Shared};
pub use super::options::{BackendKind, BackendWrap, RunOptions, WrapFn};
use super::prepared::{prepare, report_swept, Prepared};
use crate::error::HarnessError;
use crate::images::store::ImageStore;
use crate::plumbing::progress::Progress;
use crate::plumbing::run_as::RunAs;
use crate::plumbing::{fsutil, procs};
use crate::reports::run::{Environment, ImageRecord, OperandRecord, RunReport, ScenarioResult, Status};

pub struct RunOutcome {
    pub report: RunReport,
    pub report_files: Vec<PathBuf>,
    /// Kept work directory (with `--keep`).
    pub kept: Option<PathBuf>,
}

/// Loads every scenario under `paths`; the first invalid one stops the run (exit 2).
pub(crate) fn load_scenarios(paths: &[PathBuf], cnpg: CnpgVersion) -> Result<Vec<Scenario>, HarnessError> {
    let files = cnpg_ext_model::scenario::discover(paths)?;
    let mut out: Vec<Scenario> = Vec::new();
    for f in files {
        let s = Scenario::load(&f, cnpg)?;
        if let Some(other) = out.iter().find(|o| o.id == s.id) {
            return Err(HarnessError::Input(format!(
                "{}: scenario id `{}` is already used by {}",
                s.file.display(),
                s.id,
                other.file.display()
            )));
        }
        out.push(s);
    }
    Ok(out)
}

pub fn locate_postgres(pg_config: Option<PathBuf>) -> Result<PgInstall, HarnessError> {
    let mut opts = ProvisionOptions::from_env();
    if pg_config.is_some() {
        opts.pg_config = pg_config;
    }
    Ok(cnpg_ext_pg::locate(&opts)?)
}

pub async fn run(opts: RunOptions) -> Result<RunOutcome, HarnessError> {
    let started_at = chrono::Utc::now();
    let t0 = Instant::now();
    let scenarios = load_scenarios(&opts.paths, opts.cnpg)?;
    #[cfg(not(feature = "kind"))]
    if opts.backend == BackendKind::Kind {
        return Err(super::prepared::not_built("kind", "kind"));
    }
    #[cfg(not(feature = "container"))]
    if opts.backend == BackendKind::Container {
        return Err(super::prepared::not_built("container", "container"));
    }
    let progress = Arc::new(Progress::new(opts.progress));
    let run_as = RunAs::resolve(opts.run_as.as_deref()).map_err(HarnessError::Environment)?;
    let (workdir, guard) = make_workdir(&opts)?;

    let pg_config = opts.pg_config.clone();
    let pg = tokio::task::spawn_blocking(move || locate_postgres(pg_config)).await.expect("locate task")?;
    progress.line(&format!(
        "running {} scenario(s) on the {} backend, {} from {}",
        scenarios.len(),
        opts.backend.name(),
        pg.version.text,
        describe_origin(&pg)
    ));
    let operand = pg.operand(opts.operand).map_err(|e| {
        HarnessError::Environment(format!("cannot list the extensions of {}: {e}", pg.extension_dir().display()))
    })?;
    let (store, prepared) = prepare(&opts, &scenarios, &pg, &operand.exclusions, &workdir, run_as, &progress).await?;
    let (store, prepared) = (Arc::new(store), Arc::new(prepared));

    let shared = Arc::new(Shared {
        sem: tokio::sync::Semaphore::new(opts.jobs.max(1)),
        store: store.clone(),
        prepared: prepared.clone(),
        progress,
        measured: Default::default(),
        measured_operand: Default::default(),
        cnpg: opts.cnpg,
        keep: opts.keep,
        wrap: opts.wrap.clone(),
        retries: opts.retries,
        logs_dir: opts.logs_dir.clone(),
    });
    let results = run_all(&shared, scenarios, &workdir).await;
    let measured = shared.measured.lock().unwrap().iter().cloned().collect::<Vec<_>>();
    let report = RunReport {
        schema_version: crate::reports::run::REPORT_SCHEMA_VERSION,
        harness_version: env!("CARGO_PKG_VERSION").to_string(),
        git_revision: crate::plumbing::shell::git_revision(),
        started_at: started_at.to_rfc3339(),
        duration_ms: t0.elapsed().as_millis() as u64,
        command: opts.command.clone(),
        environment: Environment {
            backend: opts.backend.name().into(),
            postgresql: if measured.is_empty() {
                format!("{} (not measured: no instance ran; the install the harness found)", pg.version.text)
            } else {
                measured.join(", ")
            },
            postgresql_source: describe_origin(&pg),
            cnpg_modelled: prepared.cnpg_modelled(opts.cnpg).to_string(),
            kubernetes: prepared.kubernetes(),
            runtime: prepared.runtime(),
            operand: (opts.backend != BackendKind::Kind)
                .then(|| operand_record(opts.backend, &opts.engine, &operand, &shared.measured_operand)),
        },
        images: image_records(&store, &prepared, &opts),
        totals: RunReport::totals_of(&results),
        scenarios: results,
    };
    let report_files = match &opts.report_dir {
        Some(dir) => report
            .write(dir)
            .map_err(|e| HarnessError::Environment(format!("cannot write the report into {}: {e}", dir.display())))?,
        None => Vec::new(),
    };
    prepared.finish(opts.keep);
    drop(shared);
    drop(prepared);
    drop(store);
    let kept = guard.finish();
    Ok(RunOutcome { report, report_files, kept })
}

/// The run's work directory, claimed (removed by the supervisor if the harness dies) and
/// removed by the guard unless `--keep`; stale ones of dead runs swept first.
fn make_workdir(opts: &RunOptions) -> Result<(PathBuf, WorkdirGuard), HarnessError> {
    let parent = opts.workdir.clone().unwrap_or_else(default_workdir_parent);
    std::fs::create_dir_all(&parent).map_err(|e| HarnessError::Environment(format!("{}: {e}", parent.display())))?;
    report_swept(&crate::plumbing::supervisor::sweep_stale(std::slice::from_ref(&parent)));
    let workdir = tempfile::Builder::new()
        .prefix("cnpg-ext-")
        .tempdir_in(&parent)
        .map_err(|e| HarnessError::Environment(format!("cannot create a work directory in {}: {e}", parent.display())))?
        .keep();
    crate::plumbing::procs::claim_dir(&workdir)
        .map_err(|e| HarnessError::Environment(format!("{}: {e}", workdir.display())))?;
    if opts.keep {
        crate::plumbing::supervisor::keep_files();
    }
    let guard = WorkdirGuard { dir: workdir.clone(), keep: opts.keep };
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&workdir, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| HarnessError::Environment(e.to_string()))?;
    }
    Ok((workdir, guard))
}

/// Every scenario on a fresh backend, `jobs` at a time; a task that panicked is a failure.
async fn run_all(shared: &Arc<Shared>, scenarios: Vec<Scenario>, workdir: &std::path::Path) -> Vec<ScenarioResult> {
    let mut tasks = Vec::new();
    for scenario in scenarios {
        let (id, file, description) =
            (scenario.id.clone(), scenario.file.display().to_string(), scenario.description.clone());
        let dir = workdir.join("s").join(&scenario.id);
        let handle = tokio::spawn(run_scenario(shared.clone(), scenario, dir));
        tasks.push((id, file, description, handle));
    }
    let mut results = Vec::new();
    for (id, file, description, handle) in tasks {
        match handle.await {
            Ok(r) => results.push(r),
            Err(e) => results.push(ScenarioResult {
                id,
                file,
                description,
                status: Status::Failed,
                duration_ms: 0,
                error: Some(format!("the harness panicked while running this scenario: {e}")),
                steps: Vec::new(),
                category: Some(crate::reports::category::Category::OperationFailed),
                attempts: Vec::new(),
            }),
        }
    }
    results
}

/// What report.json records of every image: its digest, where it came from, what the engine
/// holds, the lint findings.
fn image_records(store: &ImageStore, prepared: &Prepared, opts: &RunOptions) -> Vec<ImageRecord> {
    store
        .all()
        .map(|i| ImageRecord {
            reference: i.reference.clone(),
            manifest_digest: i.manifest_digest.clone(),
            engine_image_id: prepared.engine_image_id(&i.reference),
            source: i.source.display().to_string(),
            substituted_by: opts.image_sources.get(&i.reference).cloned(),
            findings: i.compat.clone(),
            binaries: i.binaries.clone(),
        })
        .collect()
}

/// Data directories are copied for every instance: in memory (`/dev/shm`) when it is there
/// and writable, the system temp dir otherwise. `--workdir` overrides.
fn default_workdir_parent() -> PathBuf {
    let shm = PathBuf::from("/dev/shm");
    let writable = nix::unistd::access(&shm, nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK).is_ok();
    if shm.is_dir() && writable {
        shm
    } else {
        std::env::temp_dir()
    }
}

/// Removes the work directory when the run ends (also on error), unless `--keep`.
struct WorkdirGuard {
    dir: PathBuf,
    keep: bool,
}

impl WorkdirGuard {
    fn finish(self) -> Option<PathBuf> {
        if self.keep {
            Some(self.dir.clone())
        } else {
            None
        }
    }
}

impl Drop for WorkdirGuard {
    fn drop(&mut self) {
        // Interrupted: tasks still running may write here after this removal; the directory
        // stays registered so that the final sweep after they end removes it again.
        if !procs::interrupted() {
            procs::unregister_dir(&self.dir);
        }
        if !self.keep {
            let _ = fsutil::remove_tree(&self.dir);
        }
    }
}

/// environment.operand: the flavour, or the `--pg-image` the instances ran from, and the
/// extensions measured on an instance (the install's list only when no instance answered).
fn operand_record(
    backend: BackendKind,
    engine: &crate::EngineOptions,
    operand: &cnpg_ext_pg::OperandContents,
    measured: &std::sync::Mutex<Option<Vec<String>>>,
) -> OperandRecord {
    let pg_image = (backend == BackendKind::Container).then(|| engine.resolved().pg_image).flatten();
    let measured = measured.lock().unwrap().clone().filter(|m| !m.is_empty());
    OperandRecord {
        flavor: match &pg_image {
            Some(image) => format!("image {image} (--pg-image)"),
            None => operand.flavor.as_str().into(),
        },
        extensions: measured.unwrap_or_else(|| operand.extensions.clone()),
    }
}

pub(crate) fn describe_origin(pg: &PgInstall) -> String {
    match &pg.origin {
        cnpg_ext_pg::PgOrigin::PgConfig(p) => format!("PG_CONFIG {}", p.display()),
        cnpg_ext_pg::PgOrigin::Path(p) => format!("{} on PATH", p.display()),
        cnpg_ext_pg::PgOrigin::Wheel { wheel_sha256, .. } => {
            format!("{} (sha256 {wheel_sha256})", cnpg_ext_pg::WHEEL_SPEC)
        }
    }
}
