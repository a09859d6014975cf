//! Certification of an extension image nobody here wrote: lint it, infer how CNPG must mount
//! it, generate a real scenario (`<report-dir>/scenario/{scenario.yaml,cluster.yaml}`) that
//! creates every extension its control files declare (CASCADE), walks the update scripts it
//! ships with `ALTER EXTENSION … UPDATE TO`, and drops it — run through [`app::run`] so the
//! same verification layer judges — and give a verdict: pass, fail or inconclusive.
//!
//! Files: `certification.json` (verdict, reasons, what was inferred, notes, lint findings),
//! `lint.json`, the run's `report.json` / `junit.xml` (plus a `lint` testsuite) /
//! `summary.md` (verdict first) / `index.html`, and `logs/` (postgres.log tails on failure,
//! local backend). Re-run by hand: `cnpg-ext-harness run <report-dir>/scenario`.

mod infer;
mod record;
mod scenario;
mod verdict;

use std::path::{Path, PathBuf};

use cnpg_ext_images::lint::{LintOptions, Severity};
use cnpg_ext_model::CnpgVersion;

pub use infer::{infer, operand_image, ExtensionPlan, Inferred};
pub use record::{Certification, RunSummary};
pub use scenario::{cluster_yaml, scenario_yaml};
pub use verdict::{decide, kind_name, FindingKind, Verdict, VerdictFinding};

use crate::error::{Exit, HarnessError};
use crate::reports::view::RunView;
use crate::run::app::{self, BackendKind, RunOptions};
use record::write_record;

// The field docs are clap help text, not markdown.
#[allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]
#[derive(Debug, Clone, clap::Args)]
pub struct CertifyArgs {
    /// The image: an OCI layout directory, an OCI archive, a docker archive, or a registry
    /// reference (HOST[:PORT]/REPO[:TAG][@sha256:…]), which is pulled.
    pub image: PathBuf,
    #[arg(long, value_enum, default_value_t = BackendKind::Local)]
    pub backend: BackendKind,
    /// PostgreSQL major the image must be built for.
    #[arg(long, default_value_t = 18)]
    pub pg_major: u32,
    /// Where the certification record is written.
    #[arg(long, default_value = "reports/certify")]
    pub report_dir: PathBuf,
    /// pg_config of the PostgreSQL ≥ 18 to run on (also: PG_CONFIG); default as `run`.
    #[arg(long, env = "PG_CONFIG")]
    pub pg_config: Option<PathBuf>,
    /// CloudNativePG release whose behaviour is modelled.
    #[arg(long, default_value_t = CnpgVersion::DEFAULT, value_parser = |s: &str| s.parse::<CnpgVersion>())]
    pub cnpg_version: CnpgVersion,
    /// Use this image reference in the Cluster instead of the image's own (or a synthetic) one.
    #[arg(long)]
    pub reference: Option<String>,
    /// No progress bars even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
    /// Missing io.cloudnativepg.image.* labels fail the verdict (default: warnings; the
    /// operator reads none of them).
    #[arg(long)]
    pub require_labels: bool,
    /// Which CNPG operand image the image is certified against (`minimal`: core + contrib;
    /// `standard`: also pgvector, pgaudit, pg_failover_slots). An extension the operand
    /// already ships is shadowed: PostgreSQL would load the operand's copy.
    #[arg(long, value_parser = parse_operand, default_value = "minimal")]
    pub operand: cnpg_ext_pg::OperandFlavor,
    /// Operand distribution (bullseye, bookworm, trixie) the image must run on: its glibc
    /// and libstdc++ symbol versions are judged against it, and the generated Cluster's
    /// imageName uses it. Default: the distribution in the image's tag, else trixie.
    #[arg(long)]
    pub os: Option<String>,
    /// Also write the certification record, its generated scenario, logs, environment and
    /// image digest into one .tar.gz (layout: docs/report-schema.md → Bundle).
    #[arg(long, value_name = "FILE.tar.gz")]
    pub bundle: Option<PathBuf>,
    /// Set from the global `--insecure-registry`: this command's registries.
    #[arg(skip)]
    pub registries: crate::images::pull::Registries,
}

pub struct CertifyOutcome {
    pub certification: Certification,
    pub files: Vec<PathBuf>,
}

pub async fn certify(args: &CertifyArgs, command: Vec<String>) -> Result<CertifyOutcome, HarnessError> {
    if let Some(os) = &args.os {
        if cnpg_ext_images::compat::distro(os).is_none() {
            return Err(HarnessError::Input(format!(
                "--os {os:?} is not a known operand distribution; use one of {}",
                cnpg_ext_images::compat::distro_names()
            )));
        }
    }
    let (args, pinned) = &resolve_image(args).await?;
    let image = args.image.canonicalize().map_err(|e| HarnessError::Input(format!("{}: {e}", args.image.display())))?;
    let report_dir = fresh_report_dir(&args.report_dir)?;
    let (mut inferred, notes, problems) = read_image(&image, args)?;
    if let Some(os) = &args.os {
        inferred.image_name = operand_image(&os.to_ascii_lowercase());
    }
    let lint = lint_image(&image, &inferred, args, &report_dir)?;
    let mut findings = static_findings(&lint, &problems, &inferred);
    let generated = if inferred.extensions.iter().any(|e| e.default_version.is_some()) {
        let generated = generate_scenario(&inferred, &image, pinned.as_deref(), args, &report_dir)?;
        Some((generated.clone(), run_scenario(&generated, args, &report_dir, command, &mut findings).await))
    } else {
        None
    };
    let (scenario, (run_summary, run_view)) = match generated {
        Some((dir, run)) => (Some(dir.display().to_string()), run),
        None => (None, (None, None)),
    };
    let (verdict, decided_by) = decide(&findings);
    let decided_by = decided_by.cloned();
    let reasons = findings.iter().map(|f| f.reason.clone()).collect();
    let cert = Certification {
        image: image.display().to_string(),
        manifest_digest: lint.manifest_digest.clone(),
        verdict,
        decided_by,
        findings,
        reasons,
        notes,
        inferred: Some(inferred),
        lint,
        scenario,
        run: run_summary,
    };
    let files = write_record(&report_dir, &cert, run_view.as_ref())?;
    Ok(CertifyOutcome { certification: cert, files })
}

/// `certify <registry reference>`: pulled into the cache, certified from its layout, and the
/// Cluster names the reference as given. Also the reference when it pins a digest.
async fn resolve_image(args: &CertifyArgs) -> Result<(CertifyArgs, Option<String>), HarnessError> {
    let mut pulled = args.clone();
    let mut pinned = None;
    if let Some(r) = args.image.to_str().filter(|r| cnpg_ext_registry::looks_like_reference(r)) {
        pulled.image = args.registries.pull(r, !args.no_progress).await?.layout;
        pulled.reference.get_or_insert_with(|| r.to_string());
        pinned = r.contains('@').then(|| r.to_string());
    }
    Ok((pulled, pinned))
}

/// The report directory, without the records of an earlier certification.
fn fresh_report_dir(dir: &Path) -> Result<PathBuf, HarnessError> {
    std::fs::create_dir_all(dir).map_err(|e| HarnessError::Environment(format!("{}: {e}", dir.display())))?;
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    for stale in ["report.json", "junit.xml", "summary.md", "index.html", "certification.json", "lint.json"] {
        let _ = std::fs::remove_file(dir.join(stale));
    }
    let _ = crate::plumbing::fsutil::remove_tree(&dir.join("logs"));
    Ok(dir)
}

/// The image unpacked (hardened) into a scratch directory and read: how CNPG must mount it,
/// with notes and layout problems.
fn read_image(image: &Path, args: &CertifyArgs) -> Result<(Inferred, Vec<String>, Vec<String>), HarnessError> {
    let summary =
        cnpg_ext_images::inspect(image, None).map_err(|e| HarnessError::Input(format!("{}: {e}", image.display())))?;
    let scratch = tempfile::Builder::new()
        .prefix("cnpg-ext-certify-")
        .tempdir()
        .map_err(|e| HarnessError::Environment(e.to_string()))?;
    // Removed by the run's supervisor if the harness dies before the TempDir drops.
    let _ = crate::plumbing::procs::claim_dir(scratch.path());
    let rootfs = scratch.path().join("rootfs");
    cnpg_ext_images::unpack(image, &rootfs, &cnpg_ext_images::UnpackOptions::default())
        .map_err(|e| HarnessError::Input(format!("{}: {e}", image.display())))?;
    let (mut notes, mut problems) = (Vec::new(), Vec::new());
    let inferred = infer(
        &rootfs,
        &summary.config.labels,
        &summary.reference_names,
        args.reference.as_deref(),
        &mut notes,
        &mut problems,
    );
    Ok((inferred, notes, problems))
}

/// The image linted as inferred, against the chosen operand; `lint.json` written.
fn lint_image(
    image: &Path,
    inferred: &Inferred,
    args: &CertifyArgs,
    report_dir: &Path,
) -> Result<cnpg_ext_images::lint::LintReport, HarnessError> {
    let lint_opts = LintOptions {
        pg_major: args.pg_major,
        extension_control_path: inferred.extension_control_path.clone(),
        dynamic_library_path: inferred.dynamic_library_path.clone(),
        ld_library_path: if inferred.ld_library_path.is_empty() {
            vec!["system".into()]
        } else {
            inferred.ld_library_path.clone()
        },
        operand_image: Some(inferred.image_name.clone()),
        require_labels: args.require_labels,
        operand: args.operand.as_str().to_string(),
        ..LintOptions::default()
    };
    let lint = cnpg_ext_images::lint::lint(image, &lint_opts)
        .map_err(|e| HarnessError::Input(format!("{}: {e}", image.display())))?;
    std::fs::write(report_dir.join("lint.json"), lint.to_json())
        .map_err(|e| HarnessError::Environment(e.to_string()))?;
    Ok(lint)
}

/// What decides before anything runs: lint errors, shadowing by the chosen operand (a
/// warning for `image lint`, which may target another operand; here the image's copy would
/// never be used), layout problems, extensions without a default version.
fn static_findings(
    lint: &cnpg_ext_images::lint::LintReport,
    problems: &[String],
    inferred: &Inferred,
) -> Vec<VerdictFinding> {
    let mut findings: Vec<VerdictFinding> = Vec::new();
    let mut found = |kind: FindingKind, reason: String| findings.push(VerdictFinding { kind, reason });
    let text = |f: &cnpg_ext_images::lint::Finding| {
        format!("lint {}: {}{}", f.code, f.path.as_ref().map(|p| format!("{p}: ")).unwrap_or_default(), f.message)
    };
    for f in lint.findings.iter().filter(|f| f.severity == Severity::Error) {
        found(FindingKind::of_lint_code(&f.code), text(f));
    }
    for f in lint.findings.iter().filter(|f| f.code == cnpg_ext_images::lint::codes::SHADOWED_BY_OPERAND) {
        found(FindingKind::ShadowedByOperand, text(f));
    }
    for p in problems {
        found(FindingKind::ImageLayout, p.clone());
    }
    if inferred.extensions.is_empty() {
        found(
            FindingKind::ImageLayout,
            "the image declares no extension (no usable `<name>.control` in an `extension` directory)".into(),
        );
    }
    for e in inferred.extensions.iter().filter(|e| e.default_version.is_none()) {
        found(FindingKind::ImageLayout, format!("{}: the control file has no default_version", e.control_file));
    }
    findings
}

/// `<report-dir>/scenario/{cluster.yaml,scenario.yaml}` for the extensions that can be
/// created. A Cluster naming the image by digest can only mount a pulled pin off the local
/// backend.
fn generate_scenario(
    inferred: &Inferred,
    image: &Path,
    pinned: Option<&str>,
    args: &CertifyArgs,
    report_dir: &Path,
) -> Result<PathBuf, HarnessError> {
    let scen_dir = report_dir.join("scenario");
    let _ = crate::plumbing::fsutil::remove_tree(&scen_dir);
    std::fs::create_dir_all(&scen_dir).map_err(|e| HarnessError::Environment(e.to_string()))?;
    std::fs::write(scen_dir.join("cluster.yaml"), cluster_yaml(inferred))
        .map_err(|e| HarnessError::Environment(e.to_string()))?;
    // The pulled pin is named by reference alone (see `scenario_yaml`). Any other digest
    // reference can only come from the layout, which no engine loads under a digest.
    let by_reference = pinned == Some(inferred.reference.as_str());
    if !by_reference && inferred.reference.contains('@') && args.backend != BackendKind::Local {
        return Err(HarnessError::Input(format!(
            "the Cluster's image reference `{r}` names a digest: the {b} backend mounts an image named by digest only by pulling it from its registry; certify that reference itself (`certify {r} --backend {b}`) or give --reference a tag",
            r = inferred.reference,
            b = args.backend.name(),
        )));
    }
    let source = (!by_reference).then_some(image);
    std::fs::write(scen_dir.join("scenario.yaml"), scenario_yaml(inferred, source))
        .map_err(|e| HarnessError::Environment(e.to_string()))?;
    Ok(scen_dir)
}

/// The generated scenario run through the same pipeline as `run`; what failed becomes a
/// finding (and, local backend, the failed instances' log tails are kept).
async fn run_scenario(
    scen_dir: &Path,
    args: &CertifyArgs,
    report_dir: &Path,
    command: Vec<String>,
    findings: &mut Vec<VerdictFinding>,
) -> (Option<RunSummary>, Option<RunView>) {
    let keep_parent = if args.backend == BackendKind::Local {
        let parent = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
        tempfile::Builder::new().prefix("cnpg-ext-certify-run-").tempdir_in(parent).ok()
    } else {
        None
    };
    if let Some(k) = &keep_parent {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(k.path(), std::fs::Permissions::from_mode(0o755));
    }
    let opts = RunOptions {
        paths: vec![scen_dir.to_path_buf()],
        backend: args.backend,
        jobs: 1,
        report_dir: Some(report_dir.to_path_buf()),
        keep: keep_parent.is_some(),
        cnpg: args.cnpg_version,
        pg_config: args.pg_config.clone(),
        run_as: Some("nobody".into()),
        workdir: keep_parent.as_ref().map(|k| k.path().to_path_buf()),
        progress: !args.no_progress,
        command,
        engine: crate::plumbing::engine::EngineOptions::from_env(),
        operand: args.operand,
        wrap: None,
        registries: args.registries.clone(),
        ..RunOptions::default()
    };
    let mut found = |kind: FindingKind, reason: String| findings.push(VerdictFinding { kind, reason });
    let outcome = match app::run(opts).await {
        Ok(out) => {
            let view = RunView::of(&out.report);
            let failed = view.count("failed");
            if failed > 0 {
                for f in view.scenarios.iter().filter_map(|s| s.failure()) {
                    found(failure_kind(&f), format!("run: {}", f.text()));
                }
                if let Some(k) = &keep_parent {
                    crate::matrix::keep_log_tails(k.path(), &report_dir.join("logs"));
                }
            }
            if let Some(kept) = &out.kept {
                let _ = crate::plumbing::fsutil::remove_tree(kept);
            }
            let summary = RunSummary {
                backend: view.environment.backend.clone(),
                postgresql: view.environment.postgresql.clone(),
                passed: view.count("passed"),
                failed,
                duration_ms: view.duration_ms,
            };
            (Some(summary), Some(view))
        }
        Err(e) => {
            let (kind, reason) = match e {
                HarnessError::Environment(m) => (
                    FindingKind::EnvironmentUnusable,
                    format!("the extension could not be run here: environment unusable: {m}"),
                ),
                // The engine answered its probe, then refused or mangled the image: a failure.
                HarnessError::Failed(m) => (FindingKind::ScenarioFailed, format!("run failed: {m}")),
                // The generated scenario was refused: the image cannot be mounted as inferred.
                HarnessError::Input(m) => {
                    (FindingKind::ImageLayout, format!("the image cannot be mounted by CloudNativePG as inferred: {m}"))
                }
            };
            found(kind, reason);
            (None, None)
        }
    };
    if let Some(k) = keep_parent {
        let _ = crate::plumbing::fsutil::remove_tree(k.path());
    }
    outcome
}

/// What a failed step of the generated scenario says about the image.
fn failure_kind(f: &crate::reports::view::Failure) -> FindingKind {
    let text = f.text();
    if text.contains("shadowed") {
        FindingKind::ShadowedByOperand
    } else if text.contains("origin of ") && text.contains("(/proc/self/maps)") {
        FindingKind::ModuleNotLoadedFromImage
    } else if f.locator.contains("CREATE EXTENSION") {
        FindingKind::CreateExtensionFailed
    } else {
        FindingKind::ScenarioFailed
    }
}

/// `cnpg-ext-harness certify`: the verdict, its reasons, and where the record is.
pub async fn command(args: CertifyArgs) -> Exit {
    match certify(&args, std::env::args().collect()).await {
        Ok(out) => {
            let c = &out.certification;
            println!();
            if let Some(i) = &c.inferred {
                println!(
                    "image {} → extension entry `{}` ({}), extension_control_path {:?}, dynamic_library_path {:?}, ld_library_path {:?}",
                    c.image, i.name, i.reference, i.extension_control_path, i.dynamic_library_path, i.ld_library_path
                );
            }
            println!("lint: {} error(s), {} warning(s)", c.lint.errors(), c.lint.warnings());
            for r in &c.reasons {
                println!("  {}", r.replace('\n', "\n  "));
            }
            for n in &c.notes {
                println!("note: {n}");
            }
            println!("{}", c.lint.binaries.to_text());
            if let Some(d) = &c.decided_by {
                println!("decided by: {}", kind_name(d.kind));
            }
            println!("verdict: {}", c.verdict.name());
            for f in &out.files {
                println!("report: {}", f.display());
            }
            c.verdict.exit_code()
        }
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

fn parse_operand(s: &str) -> Result<cnpg_ext_pg::OperandFlavor, String> {
    cnpg_ext_pg::OperandFlavor::parse(s).ok_or_else(|| format!("`{s}` is not an operand: use minimal or standard"))
}
