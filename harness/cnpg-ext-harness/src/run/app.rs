//! A whole run: load and check every scenario, prepare PostgreSQL and the images once, run
//! the scenarios in parallel on fresh backends, write the report, clean up.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use cnpg_ext_model::{CnpgVersion, Scenario};
use cnpg_ext_pg::{OperandFlavor, PgInstall, ProvisionOptions};

use cnpg_ext_backend::Backend;

use crate::backends::container::{ContainerBackend, ContainerEnv, EngineOptions};
use crate::backends::local::{LocalBackend, LocalEnv};
use crate::error::HarnessError;
use crate::images::store::ImageStore;
use crate::plumbing::progress::Progress;
use crate::plumbing::run_as::RunAs;
use crate::plumbing::{fsutil, procs};
use crate::reports::run::Status;
use crate::reports::run::{Attempt, Environment, ImageRecord, OperandRecord, RunReport, ScenarioResult};
use crate::run::runner::ScenarioRun;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    Local,
    Container,
    Kind,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Local => "local",
            BackendKind::Container => "container",
            BackendKind::Kind => "kind",
        }
    }
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub paths: Vec<PathBuf>,
    pub backend: BackendKind,
    pub jobs: usize,
    pub report_dir: Option<PathBuf>,
    pub keep: bool,
    pub cnpg: CnpgVersion,
    pub pg_config: Option<PathBuf>,
    pub run_as: Option<String>,
    pub workdir: Option<PathBuf>,
    pub progress: bool,
    pub command: Vec<String>,
    pub engine: EngineOptions,
    pub kind: cnpg_ext_kind::KindOptions,
    /// The CNPG operand image the stand-ins imitate (local, container).
    pub operand: OperandFlavor,
    /// Wraps every scenario's backend (tests: a backend that tampers with what it runs).
    pub wrap: Option<BackendWrap>,
    /// How images named by reference are pulled (`--insecure-registry`).
    pub registries: crate::images::pull::Registries,
    /// Attempts after the first for a scenario that failed on infrastructure (`image-pull`,
    /// `container-create`, `timeout`); a pass after a retry is `flaky`.
    pub retries: usize,
    /// Every instance's server log is copied here (`<scenario>/<file>`) before teardown
    /// (`--bundle`).
    pub logs_dir: Option<PathBuf>,
    /// `--image REF=SOURCE`: the image mounted under REF comes from SOURCE (a registry
    /// reference, `fixture:DIR`, `oci:PATH`).
    pub image_sources: std::collections::BTreeMap<String, String>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            paths: Vec::new(),
            backend: BackendKind::Local,
            jobs: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            report_dir: None,
            keep: false,
            cnpg: CnpgVersion::DEFAULT,
            pg_config: None,
            run_as: None,
            workdir: None,
            progress: false,
            command: vec!["cnpg-ext-harness (library)".into()],
            engine: EngineOptions::default(),
            kind: Default::default(),
            operand: OperandFlavor::default(),
            wrap: None,
            registries: Default::default(),
            retries: 0,
            logs_dir: None,
            image_sources: Default::default(),
        }
    }
}

/// Wraps the backend of a scenario, given the scenario id (e.g. to tamper with it in tests).
pub type WrapFn = dyn Fn(&str, Box<dyn Backend>) -> Box<dyn Backend> + Send + Sync;

/// A function that wraps the backend of each scenario (given the scenario id).
#[derive(Clone)]
pub struct BackendWrap(pub Arc<WrapFn>);

impl std::fmt::Debug for BackendWrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BackendWrap(..)")
    }
}

/// What a run prepared once for its backend; makes one backend per scenario.
enum Prepared {
    Local(Arc<LocalEnv>),
    Container(Arc<ContainerEnv>),
    Kind { env: Option<Arc<cnpg_ext_kind::KindEnvironment>>, archives: Vec<(String, PathBuf)> },
}

impl Prepared {
    fn backend(
        &self,
        store: &Arc<ImageStore>,
        cnpg: CnpgVersion,
        dir: PathBuf,
        scenario: &Scenario,
    ) -> Result<Box<dyn Backend>, String> {
        Ok(match self {
            Prepared::Local(env) => Box::new(LocalBackend::local(env.clone(), store.clone(), cnpg, dir)),
            Prepared::Container(env) => Box::new(ContainerBackend::container(env.clone(), cnpg, &scenario.id)),
            Prepared::Kind { env, .. } => {
                let env = env.as_ref().ok_or("the kind environment was not prepared")?;
                env.check_scenario(scenario).map_err(|e| e.to_string())?;
                Box::new(env.backend(scenario))
            }
        })
    }

    /// The engine's id of the image mounted under `reference` (container backend).
    fn engine_image_id(&self, reference: &str) -> Option<String> {
        match self {
            Prepared::Container(env) => env.engine_image_id(reference),
            _ => None,
        }
    }

    /// The container runtime the instances ran on, as the environment reported it when
    /// probed: the engine and its version, or the kind nodes' runtimes.
    fn runtime(&self) -> Option<String> {
        match self {
            Prepared::Container(env) => Some(env.runtime_description()),
            Prepared::Kind { env: Some(env), .. } => {
                let mut runtimes: Vec<&str> = env.preflight.nodes.iter().map(|(_, r)| r.as_str()).collect();
                runtimes.sort_unstable();
                runtimes.dedup();
                Some(runtimes.join(", ")).filter(|r| !r.is_empty())
            }
            _ => None,
        }
    }

    /// The API server's version (kind), as it answered.
    fn kubernetes(&self) -> Option<String> {
        match self {
            Prepared::Kind { env: Some(env), .. } => Some(env.preflight.server_version.clone()),
            _ => None,
        }
    }

    fn finish(&self, keep: bool) {
        if let Prepared::Container(env) = self {
            env.finish(keep);
        }
    }
}

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
    let progress = Arc::new(Progress::new(opts.progress));
    let run_as = RunAs::resolve(opts.run_as.as_deref()).map_err(HarnessError::Environment)?;

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
    let specs: Vec<_> = scenarios.iter().flat_map(|s| s.images.iter().cloned()).collect();
    let (store, prepared) = {
        let pg = pg.clone();
        let dir = workdir.clone();
        let run_as = run_as.clone();
        let (backend, engine) = (opts.backend, opts.engine.clone());
        let without = operand.exclusions.clone();
        let sources = opts.image_sources.clone();
        tokio::task::spawn_blocking(move || -> Result<(ImageStore, Prepared), HarnessError> {
            let specs = crate::run::substitute::apply(specs, &sources, &opts.registries)?;
            let store = ImageStore::prepare(&specs, &pg, &dir.join("images"), &opts.registries)?;
            let prepared = match backend {
                BackendKind::Local => Prepared::Local(Arc::new(
                    LocalEnv::prepare(&pg, &without, &dir, run_as).map_err(HarnessError::Environment)?,
                )),
                BackendKind::Kind => {
                    // Docker archives for `kind load image-archive`; the cluster is contacted below.
                    let mut archives = Vec::new();
                    for (n, img) in store.all().enumerate() {
                        let tar = dir.join("images").join(format!("{n}.docker.tar"));
                        cnpg_ext_images::write_docker_archive(&img.source, &img.reference, &tar)
                            .map_err(|e| HarnessError::Input(format!("image `{}`: {e}", img.reference)))?;
                        archives.push((img.reference.clone(), tar));
                    }
                    Prepared::Kind { env: None, archives }
                }
                BackendKind::Container => {
                    let run_id = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                    watch_containers(&dir, &engine)?;
                    Prepared::Container(Arc::new(ContainerEnv::prepare(&pg, &store, &without, &dir, &run_id, &engine)?))
                }
            };
            Ok((store, prepared))
        })
        .await
        .expect("prepare task")?
    };
    // Shown, recorded in report.json, never fatal: a scenario may use a broken image on purpose.
    for img in store.all() {
        for f in img.compat.iter().filter(|f| f.severity != cnpg_ext_images::lint::Severity::Info) {
            let path = f.path.as_ref().map(|p| format!("{p}: ")).unwrap_or_default();
            progress.line(&format!("image {}: {:?} {}: {path}{}", img.reference, f.severity, f.code, f.message));
        }
    }
    let store = Arc::new(store);
    let prepared = match prepared {
        Prepared::Kind { archives, .. } => {
            let mut kopts = opts.kind.clone();
            kopts.cnpg_version = opts.cnpg;
            kopts.keep = opts.keep;
            if let Some(dir) = &opts.report_dir {
                kopts.report_dir = dir.clone();
            }
            let env = cnpg_ext_kind::prepare(&kopts).await.map_err(|e| match e {
                cnpg_ext_model::backend::BackendError::Unusable(m) => HarnessError::Environment(m),
                other => HarnessError::Environment(other.to_string()),
            })?;
            // Every archive into the nodes once, before any scenario starts.
            env.load_images(&archives).await.map_err(|e| HarnessError::Environment(e.to_string()))?;
            Prepared::Kind { env: Some(Arc::new(env)), archives }
        }
        other => other,
    };
    let prepared = Arc::new(prepared);

    let sem = Arc::new(tokio::sync::Semaphore::new(opts.jobs.max(1)));
    // `server_version` as the instances answered it (environment.postgresql).
    let measured: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>> = Arc::default();
    // The operand's extensions as the instances list them (environment.operand).
    let measured_operand: Arc<std::sync::Mutex<Option<Vec<String>>>> = Arc::default();
    let mut tasks = Vec::new();
    for scenario in scenarios {
        let (sem, store, prepared, progress) = (sem.clone(), store.clone(), prepared.clone(), progress.clone());
        let dir = workdir.join("s").join(&scenario.id);
        let (cnpg, keep) = (opts.cnpg, opts.keep);
        let id = scenario.id.clone();
        let file = scenario.file.display().to_string();
        let description = scenario.description.clone();
        let wrap = opts.wrap.clone();
        let measured = measured.clone();
        let measured_operand = measured_operand.clone();
        let retries = opts.retries;
        let logs_dir = opts.logs_dir.clone();
        let handle = tokio::spawn(async move {
            let t = Instant::now();
            let mut attempts: Vec<Attempt> = Vec::new();
            loop {
                let permit = sem.clone().acquire_owned().await.expect("semaphore");
                progress.scenario_started(&scenario.id);
                let tried = Instant::now();
                // A retry gets fresh instances in a directory of its own.
                let here = match attempts.len() {
                    0 => dir.clone(),
                    n => dir.with_file_name(format!("{}.retry{n}", scenario.id)),
                };
                let made = prepared.backend(&store, cnpg, here.clone(), &scenario);
                let made = match &wrap {
                    Some(w) => made.map(|b| (w.0)(&scenario.id, b)),
                    None => made,
                };
                let (steps, error) = match made {
                    Ok(mut backend) => {
                        let on_step = |title: &str| progress.step(&scenario.id, title);
                        let steps = ScenarioRun::new(&scenario, &store, backend.as_mut()).run(&on_step).await;
                        if let Some(v) = server_version(backend.as_ref()).await {
                            measured.lock().unwrap().insert(v);
                        }
                        if measured_operand.lock().unwrap().is_none() {
                            let listed = crate::verify::operand_extensions(backend.as_ref()).await;
                            measured_operand.lock().unwrap().get_or_insert_with(|| listed.unwrap_or_default());
                        }
                        // The slot goes to the next scenario now: removing this one's instances
                        // (awaited here, its errors this scenario's) overlaps that one's start.
                        drop(permit);
                        if let Some(logs) = &logs_dir {
                            let name = here.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                            collect_logs(backend.as_ref(), &here, &logs.join(name)).await;
                        }
                        let teardown = backend.teardown(keep).await;
                        (steps, teardown.err().map(|e| format!("teardown: {e}")))
                    }
                    Err(e) => (Vec::new(), Some(e)),
                };
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
                // Only infrastructure is retried (`--retries`): never an assertion.
                if failed && attempts.len() < retries && category.is_some_and(|c| c.is_infrastructure()) {
                    let c = category.map(|c| c.name()).unwrap_or_default();
                    progress.line(&format!(
                        "RETRY {} ({c}, attempt {} of {})",
                        scenario.id,
                        attempts.len() + 2,
                        retries + 1
                    ));
                    attempts.push(Attempt {
                        status: Status::Failed,
                        category,
                        duration_ms: tried.elapsed().as_millis() as u64,
                        failure: result.failure_summary(),
                    });
                    continue;
                }
                if !failed && !attempts.is_empty() {
                    result.status = Status::Flaky;
                    result.category = attempts.last().and_then(|a| a.category);
                }
                result.attempts = attempts;
                let line = format!("{} {} ({} ms)", verdict_line(&result), scenario.id, result.duration_ms);
                progress.scenario_finished(&scenario.id, &line);
                break result;
            }
        });
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

    let report = RunReport {
        schema_version: crate::reports::run::REPORT_SCHEMA_VERSION,
        harness_version: env!("CARGO_PKG_VERSION").to_string(),
        git_revision: crate::plumbing::shell::git_revision(),
        started_at: started_at.to_rfc3339(),
        duration_ms: t0.elapsed().as_millis() as u64,
        command: opts.command.clone(),
        environment: Environment {
            backend: opts.backend.name().into(),
            postgresql: {
                let measured = measured.lock().unwrap();
                if measured.is_empty() {
                    format!("{} (not measured: no instance ran; the install the harness found)", pg.version.text)
                } else {
                    measured.iter().cloned().collect::<Vec<_>>().join(", ")
                }
            },
            postgresql_source: describe_origin(&pg),
            cnpg_modelled: opts.cnpg.to_string(),
            kubernetes: prepared.kubernetes(),
            runtime: prepared.runtime(),
            operand: (opts.backend != BackendKind::Kind)
                .then(|| operand_record(opts.backend, &opts.engine, &operand, &measured_operand)),
        },
        images: store
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
            .collect(),
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
    drop(prepared);
    drop(store);
    let kept = guard.finish();
    Ok(RunOutcome { report, report_files, kept })
}

/// Every `*.log` under a scenario's directory (local: each instance's `postgres.log`), else
/// each instance's server log as the backend reads it (container: the engine's log).
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

/// Tells the supervisor (and the owner record) which engine holds this run's containers.
fn watch_containers(
    workdir: &std::path::Path,
    engine: &crate::backends::container::EngineOptions,
) -> Result<(), HarnessError> {
    let o = engine.resolved();
    let global = crate::backends::container::split_flags(o.engine_flags.as_deref().unwrap_or(""))
        .map_err(|e| HarnessError::Input(format!("{}: {e}", crate::backends::container::ENV_ENGINE_FLAGS)))?;
    let on_path =
        |p: &str| std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).any(|d| d.join(p).is_file());
    let program = o.engine.unwrap_or_else(|| {
        if on_path("podman") || !on_path("docker") {
            "podman".into()
        } else {
            "docker".into()
        }
    });
    let target = crate::plumbing::supervisor::EngineTarget {
        program: program.into(),
        global,
        run_id: crate::plumbing::supervisor::run_id_of(workdir),
    };
    // Containers and volumes labelled with a dead owner (beside the run's): in the background.
    let (p, g) = (target.program.clone(), target.global.clone());
    std::thread::spawn(move || report_swept(&crate::plumbing::supervisor::sweep_stale_engine(&p, &g)));
    crate::plumbing::supervisor::watch_engine(workdir, target)
        .map_err(|e| HarnessError::Environment(format!("{}: {e}", workdir.display())))
}

fn report_swept(s: &crate::plumbing::supervisor::Swept) {
    for d in &s.dirs {
        eprintln!("removed {} (left by a run whose harness died)", d.display());
    }
    if s.containers + s.volumes > 0 {
        eprintln!("removed {} container(s) and {} volume(s) left by runs whose harness died", s.containers, s.volumes);
    }
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

/// `PASS` / `FAIL` / `SKIP`; the finish line is `<verdict> <id> (<ms> ms)`.
pub(crate) fn verdict_line(r: &ScenarioResult) -> String {
    match r.status {
        Status::Passed => "PASS".into(),
        Status::Skipped => "SKIP".into(),
        Status::Failed => "FAIL".into(),
        Status::Flaky => "FLAKY".into(),
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

/// `server_version` of the first instance a backend runs, if one answers.
async fn server_version(backend: &dyn Backend) -> Option<String> {
    let first = backend.instances().await.ok()?.into_iter().next()?;
    let client = backend.connect(&first.name, "postgres", "postgres").await.ok()?;
    let rows = crate::plumbing::sql::query_text(&client, "SELECT 'PostgreSQL ' || current_setting('server_version')")
        .await
        .ok()?;
    rows.first().and_then(|r| r.first().cloned().flatten())
}
