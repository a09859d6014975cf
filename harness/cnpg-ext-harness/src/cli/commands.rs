//! What each subcommand prints and which exit code it returns.

use std::path::{Path, PathBuf};

use cnpg_ext_model::{ClusterPlan, CnpgVersion, PlanOptions, Scenario};

use crate::cli::RunArgs;
use crate::error::Exit;
use crate::reports::run::Status;
use crate::run::app::{self, RunOptions};

pub(crate) async fn run(mut args: RunArgs) -> Exit {
    if args.dry_run {
        return dry_run(&args);
    }
    // `--from-bundle` of a `certify` bundle: the certification again (`bundle_certify`).
    if let Some((path, b)) = args.from_bundle.as_deref().and_then(crate::cli::bundle::certify_bundle) {
        return crate::cli::bundle_certify::rerun(&path, b, &args).await;
    }
    match prepare_run(&mut args) {
        Ok((opts, run)) => match app::run(opts).await {
            Ok(out) => after_run(&args, &run, &out),
            Err(e) => {
                eprintln!("error: {e}");
                e.exit_code()
            }
        },
        Err(exit) => exit,
    }
}

/// What `run` keeps beside the options for after the run.
struct RunContext {
    /// `--from-bundle`: the bundle rerun, to compare the verdict with.
    from: Option<crate::cli::bundle::FromBundle>,
    /// A report directory made only for the bundle (removed when dropped).
    scratch: Option<tempfile::TempDir>,
    /// The scenarios as loaded, for the bundle.
    bundle_scenarios: Vec<Scenario>,
}

/// The run's options from its flags (and from the bundle it reruns); an error is printed and
/// its exit code returned.
fn prepare_run(args: &mut RunArgs) -> Result<(RunOptions, RunContext), Exit> {
    let from = match &args.from_bundle {
        Some(path) => Some(from_bundle(args, &path.clone())?),
        None => None,
    };
    let image_sources = image_sources(&args.images)?;
    // A bundle needs the report files: into a scratch directory when none is named.
    let scratch = match (&args.bundle, &args.report_dir) {
        (Some(_), None) => match tempfile::Builder::new().prefix("cnpg-ext-reports-").tempdir() {
            Ok(d) => Some(d),
            Err(e) => {
                eprintln!("error: cannot create a report directory for the bundle: {e}");
                return Err(Exit::Environment);
            }
        },
        _ => None,
    };
    if let Some(d) = &scratch {
        args.report_dir = Some(d.path().to_path_buf());
    }
    let bundle_scenarios = match &args.bundle {
        Some(_) => app::load_scenarios(&args.paths, args.cnpg_version).map_err(|e| {
            eprintln!("error: {e}");
            e.exit_code()
        })?,
        None => Vec::new(),
    };
    let opts = RunOptions {
        paths: args.paths.clone(),
        backend: args.backend,
        jobs: args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)),
        report_dir: args.report_dir.clone(),
        keep: args.keep,
        cnpg: args.cnpg_version,
        pg_config: args.pg_config.clone(),
        run_as: Some(args.run_as.clone()),
        workdir: args.workdir.clone(),
        progress: !args.no_progress,
        command: std::env::args().collect(),
        #[cfg(feature = "kind")]
        kind: kind_options(args),
        operand: args.operand,
        wrap: None,
        registries: args.registries.clone(),
        retries: args.retries,
        logs_dir: args.bundle.as_ref().and(args.report_dir.as_ref()).map(|d| d.join("logs")),
        image_sources,
        engine: crate::plumbing::engine::EngineOptions {
            engine: args.engine.clone(),
            pg_image: args.pg_image.clone(),
            engine_flags: args.engine_flags.clone(),
            run_flags: args.engine_run_flags.clone(),
            pg_bindir: None,
        },
    };
    Ok((opts, RunContext { from, scratch, bundle_scenarios }))
}

/// `--from-bundle`: the bundle's scenarios (and fixtures) as they were run, its release,
/// pulled images pinned to the digests it recorded.
fn from_bundle(args: &mut RunArgs, path: &Path) -> Result<crate::cli::bundle::FromBundle, Exit> {
    let f = crate::cli::bundle::FromBundle::open(path).map_err(|e| {
        eprintln!("error: {e}");
        Exit::Invalid
    })?;
    args.paths = f.paths();
    if let Some(c) = f.cnpg() {
        args.cnpg_version = c;
    }
    for (r, pinned) in f.pinned() {
        if !args.images.iter().any(|i| i.starts_with(&format!("{r}="))) {
            println!("image {r} from {pinned} (as in the bundle)");
            args.images.push(format!("{r}={pinned}"));
        }
    }
    println!(
        "rerunning {} scenario(s) of {} (verdict then: {}; CNPG {})",
        f.bundle.manifest.scenarios.len(),
        path.display(),
        f.bundle.manifest.verdict,
        args.cnpg_version
    );
    Ok(f)
}

/// `--image REF=SOURCE`, every one.
fn image_sources(images: &[String]) -> Result<std::collections::BTreeMap<String, String>, Exit> {
    images
        .iter()
        .map(|i| {
            crate::run::substitute::parse_pair(i).map_err(|e| {
                eprintln!("error: --image {e}");
                Exit::Invalid
            })
        })
        .collect()
}

/// After the run: the failures in full, the page, the report files, the totals, the bundle,
/// and (`--from-bundle`) whether the verdict reproduced.
fn after_run(args: &RunArgs, run: &RunContext, out: &app::RunOutcome) -> Exit {
    let r = &out.report;
    print_failures(r);
    // The run's page beside its records (failures with category and evidence).
    let mut files = out.report_files.clone();
    if let Some(dir) = &args.report_dir {
        let view = crate::reports::view::RunView::of(r);
        let page = dir.join("index.html");
        if let Err(e) = std::fs::write(&page, crate::reports::html::run_page(&view, "cnpg-ext-harness run")) {
            eprintln!("error: {}: {e}", page.display());
            return Exit::Environment;
        }
        files.push(page);
    }
    // A scratch report directory (only for the bundle) is not worth naming.
    for f in files.iter().filter(|_| run.scratch.is_none()) {
        println!("report: {}", f.display());
    }
    if let Some(dir) = &out.kept {
        println!("kept: {}", dir.display());
    }
    if r.totals.flaky > 0 {
        println!(
            "{} passed, {} failed, {} flaky (passed after a retry)",
            r.totals.passed, r.totals.failed, r.totals.flaky
        );
    } else {
        println!("{} passed, {} failed", r.totals.passed, r.totals.failed);
    }
    let exit = if r.totals.failed == 0 { Exit::Passed } else { Exit::Failed };
    if let (Some(bundle), Some(dir)) = (&args.bundle, &args.report_dir) {
        if let Err(e) = crate::cli::bundle::write_run_bundle(bundle, r, dir, &run.bundle_scenarios, exit) {
            eprintln!("error: {e}");
            return Exit::Environment;
        }
    }
    if let Some(f) = &run.from {
        let (same, lines) = f.compare(r);
        for l in &lines {
            println!("  {l}");
        }
        if same {
            println!("verdict reproduced: {} as in the bundle", if exit == Exit::Passed { "passed" } else { "failed" });
        } else {
            println!("verdict NOT reproduced (differences above)");
        }
    }
    exit
}

/// Verdicts were printed as scenarios finished; the failures once more, in full.
fn print_failures(r: &crate::reports::run::RunReport) {
    let failed: Vec<_> = r.scenarios.iter().filter(|s| matches!(s.status, Status::Failed | Status::Skipped)).collect();
    if !failed.is_empty() {
        println!();
        for s in failed {
            println!("FAIL {} ({} ms)", s.id, s.duration_ms);
            if let Some(f) = s.failure_summary() {
                println!("  {}", f.replace('\n', "\n  "));
            }
        }
    }
    println!();
}

/// `plan`: a scenario (its manifests in step order) or plain manifest files, derived as
/// CloudNativePG `cnpg` would.
pub(crate) fn plan(paths: &[PathBuf], cnpg: CnpgVersion, json: bool, inherited_env: &[String]) -> Exit {
    let mut inherited = std::collections::BTreeMap::new();
    for kv in inherited_env {
        match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                inherited.insert(k.to_string(), v.to_string());
            }
            _ => {
                eprintln!("error: --inherited-env `{kv}`: write NAME=VALUE");
                return Exit::Invalid;
            }
        }
    }
    let is_scenario =
        |p: &Path| p.is_dir() || p.file_name().is_some_and(|n| n == cnpg_ext_model::scenario::SCENARIO_FILE);
    let docs = if paths.len() == 1 && is_scenario(&paths[0]) {
        match Scenario::load(&paths[0], cnpg) {
            Ok(s) => {
                for u in &s.unsupported {
                    eprintln!("unsupported: {u}");
                }
                // The manifests as written: the derivation resolves catalogs itself.
                let mut docs = Vec::new();
                for ls in &s.steps {
                    if let cnpg_ext_model::scenario::Step::Apply(a) = &ls.step {
                        match cnpg_ext_model::Manifest::load_file(&s.dir.join(&a.file)) {
                            Ok(ms) => docs.extend(ms.into_iter().map(|m| (a.file.clone(), m))),
                            Err(e) => {
                                eprintln!("error: {e}");
                                return Exit::Invalid;
                            }
                        }
                    }
                }
                docs
            }
            Err(e) => {
                eprintln!("error: {e}");
                return Exit::Invalid;
            }
        }
    } else {
        let files: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
        match cnpg_ext_model::derivation::load_documents(&files) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("error: {e}");
                return Exit::Invalid;
            }
        }
    };
    if !docs.iter().any(|(_, d)| matches!(d, cnpg_ext_model::Manifest::Cluster(_))) {
        eprintln!(
            "error: no postgresql.cnpg.io/v1 Cluster in {}",
            paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        );
        return Exit::Invalid;
    }
    let derived = cnpg_ext_model::derivation::derive_documents(&docs, cnpg, &inherited);
    if json {
        println!("{}", serde_json::to_string_pretty(&derived).expect("JSON"));
        return Exit::Passed;
    }
    let catalogs: Vec<&cnpg_ext_model::CatalogDoc> = docs
        .iter()
        .filter_map(|(_, d)| if let cnpg_ext_model::Manifest::Catalog(c) = d { Some(c) } else { None })
        .collect();
    let mut refused = false;
    for (file, d) in &docs {
        let cnpg_ext_model::Manifest::Cluster(c) = d else { continue };
        println!("# {file}: Cluster {}", c.cluster.metadata.name);
        let resolved = c.validate(cnpg).and_then(|()| c.resolve_extensions(&catalogs, cnpg));
        match resolved {
            Ok(exts) => {
                let mut cluster = c.cluster.clone();
                cluster.spec.postgresql.extensions = exts;
                let plan = ClusterPlan::derive(&cluster, &PlanOptions { cnpg, ..PlanOptions::default() });
                println!("{}", serde_json::to_string_pretty(&plan).expect("plan serializes"));
            }
            Err(e) => {
                refused = true;
                println!("refused: {e}");
            }
        }
    }
    if refused {
        Exit::Invalid
    } else {
        Exit::Passed
    }
}

#[cfg(feature = "kind")]
fn kind_options(args: &RunArgs) -> cnpg_ext_kind::KindOptions {
    let mut opts = cnpg_ext_kind::KindOptions {
        kind_cluster: args.kind_cluster.clone(),
        kubeconfig: args.kubeconfig.clone(),
        context: args.context.clone(),
        cnpg_version: args.cnpg_version,
        cnpg_version_explicit: args.from_bundle.is_some()
            || cnpg_ext_kind::cli::flag_given(std::env::args_os(), "--cnpg-version"),
        allow_unpinned_operator: args.allow_unpinned_operator,
        skip_operator_install: args.skip_operator_install,
        allow_operator_downgrade: args.allow_operator_downgrade,
        keep: args.keep,
        report_dir: args.report_dir.clone().unwrap_or_else(|| "reports".into()),
        ..Default::default()
    };
    args.registry.apply(&mut opts);
    opts
}

/// `--dry-run` in a build without the kind backend.
#[cfg(not(feature = "kind"))]
fn dry_run(_: &RunArgs) -> Exit {
    eprintln!(
        "error: --dry-run renders the kind backend's manifests, and this cnpg-ext-harness was built without it \
         (cargo feature `kind`, on by default)"
    );
    Exit::Environment
}

/// `--dry-run`: the manifests the kind backend would apply, written out; no cluster contacted.
#[cfg(feature = "kind")]
fn dry_run(args: &RunArgs) -> Exit {
    let scenarios = match app::load_scenarios(&args.paths, args.cnpg_version) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return e.exit_code();
        }
    };
    let opts = kind_options(args);
    let out = opts.report_dir.join("manifests");
    for s in &scenarios {
        match cnpg_ext_kind::render::render_dry_run(s, &opts, &out) {
            Ok(files) => {
                for f in files {
                    println!("{}", f.display());
                }
            }
            Err(e) => {
                eprintln!("error: {}: {e}", s.file.display());
                return Exit::Invalid;
            }
        }
    }
    // `--dry-run --bundle`: what would be applied, with the scenarios, as one bundle.
    if let Some(bundle) = &args.bundle {
        if let Err(e) = crate::cli::bundle::write_rendered_bundle(bundle, &opts.report_dir, &scenarios, args) {
            eprintln!("error: {e}");
            return Exit::Environment;
        }
    }
    Exit::Passed
}
