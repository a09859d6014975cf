//! `--bundle` for `run` (what goes in), `bundle show`, and `run --from-bundle`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cnpg_ext_model::scenario::ImageOrigin;
use cnpg_ext_model::Scenario;

use crate::error::Exit;
use crate::reports::bundle::{self, Bundle, BundleImage, BundleInput};
use crate::reports::matrix::MatrixReport;
use crate::reports::run::RunReport;
use crate::reports::view::RunView;

/// `bundle …`
#[derive(Debug, clap::Subcommand)]
pub enum BundleCommand {
    /// Print a bundle's verdict, environment, images and failures (with category and
    /// evidence). Exit 0 when it was read, 2 when it is not a valid bundle.
    Show {
        /// A .tar.gz written by `--bundle`.
        file: PathBuf,
        /// Also list every file of the bundle with its size.
        #[arg(long)]
        files: bool,
    },
}

pub(crate) fn command(cmd: BundleCommand) -> Exit {
    match cmd {
        BundleCommand::Show { file, files } => match Bundle::open(&file) {
            Ok(b) => {
                print!("{}", show(&file, &b, files));
                Exit::Passed
            }
            Err(e) => {
                eprintln!("error: {e}");
                Exit::Invalid
            }
        },
    }
}

/// What `bundle show` prints.
pub(crate) fn show(path: &Path, b: &Bundle, list_files: bool) -> String {
    let m = &b.manifest;
    let mut out = format!(
        "bundle {}: {} · {} · harness {} ({})\nverdict: {} (exit {})\ncommand: {}\n",
        path.display(),
        m.of,
        m.created_at,
        m.harness_version,
        m.git_revision.as_deref().unwrap_or("unknown revision"),
        m.verdict,
        m.exit_code,
        m.command.iter().map(|a| crate::plumbing::shell::shell_quote(a)).collect::<Vec<_>>().join(" ")
    );
    for (k, v) in &m.environment {
        out += &format!("  {k}: {v}\n");
    }
    for i in &m.images {
        out += &format!("image {} @ {} ({})\n", i.reference, i.manifest_digest, i.origin);
    }
    let report = b.report_json().unwrap_or_default();
    if m.of == "matrix" {
        if let Ok(r) = serde_json::from_slice::<MatrixReport>(report) {
            for c in &r.cells {
                out += &format!("{} {}", c.status.name().to_uppercase(), c.spec.id);
                if let Some(reason) =
                    c.reason.as_ref().filter(|_| c.status != crate::reports::matrix::CellStatus::Passed)
                {
                    out += &format!(": {reason}");
                }
                out += "\n";
                for s in c.scenarios.iter().filter(|s| s.failure.is_some()) {
                    let f = s.failure.as_ref().map(|f| f.text()).unwrap_or_default();
                    out += &format!("  {}: {}\n", s.id, f.replace('\n', "\n  "));
                }
            }
        }
    } else if let Ok(v) = serde_json::from_slice::<RunView>(report) {
        for s in &v.scenarios {
            let cat = s.category.map(|c| format!(" [{c}]")).unwrap_or_default();
            out += &format!("{} {}{cat} ({} ms)\n", s.status.to_uppercase(), s.id, s.duration_ms);
            if s.status == "failed" {
                if let Some(f) = s.failure() {
                    out += &format!("  {}\n", f.text().replace('\n', "\n  "));
                    for e in &f.evidence {
                        let on = e.instance.as_deref().map(|i| format!(" {i}")).unwrap_or_default();
                        let lines: Vec<&str> = e.text.lines().collect();
                        let shown = &lines[lines.len().saturating_sub(8)..];
                        out += &format!("  evidence {}{on}:\n    {}\n", e.source, shown.join("\n    "));
                    }
                }
            }
        }
    }
    out += &format!("{} file(s)", b.files.len());
    if list_files {
        out += ":\n";
        for (path, data) in &b.files {
            out += &format!("  {:>9}  {path}\n", data.len());
        }
    } else {
        out += " (--files lists them)\n";
    }
    out
}

/// What the scenarios bring into a bundle: their directories, the fixture recipes they build
/// and where each image comes from.
#[derive(Default)]
struct Parts {
    dirs: Vec<(String, PathBuf)>,
    fixtures: Vec<PathBuf>,
    origins: BTreeMap<String, ImageOrigin>,
}

fn scenario_parts(scenarios: &[Scenario]) -> Parts {
    let Parts { mut dirs, mut fixtures, mut origins } = Parts::default();
    for s in scenarios {
        dirs.push((s.id.clone(), s.dir.clone()));
        for i in &s.images {
            if let ImageOrigin::Fixture(p) = &i.origin {
                let p = if p.is_absolute() { p.clone() } else { s.dir.join(p) };
                let p = beside(&s.dir, &p);
                if !fixtures.contains(&p) {
                    fixtures.push(p);
                }
            }
            origins.insert(i.reference.clone(), i.origin.clone());
        }
    }
    Parts { dirs, fixtures, origins }
}

/// The fixture `fixture` (resolved, symlinks followed) as the scenario in `dir` reaches it:
/// through the nearest ancestor of `dir` under which a tail of its path leads to it (a
/// scenario copy with a `fixtures` symlink reaches the repository's fixtures that way), so
/// that the bundle keeps the scenario's relative `fixture:` path working.
fn beside(dir: &Path, fixture: &Path) -> PathBuf {
    let Ok(target) = fixture.canonicalize() else { return fixture.to_path_buf() };
    let parts: Vec<_> = target.components().collect();
    let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    for ancestor in abs.ancestors() {
        for k in 1..parts.len() {
            let tail: PathBuf = parts[parts.len() - k..].iter().collect();
            let candidate = ancestor.join(&tail);
            if candidate.canonicalize().is_ok_and(|c| c == target) {
                return candidate;
            }
        }
    }
    fixture.to_path_buf()
}

fn origin_text(o: Option<&ImageOrigin>) -> String {
    match o {
        Some(ImageOrigin::Fixture(p)) => format!("fixture {}", p.display()),
        Some(ImageOrigin::Oci(p)) => format!("archive {}", p.display()),
        Some(ImageOrigin::Pull) => "pull".into(),
        None => "unknown".into(),
    }
}

/// `run … --bundle FILE`: the run's report directory, logs, scenarios, fixtures, environment.
pub(crate) fn write_run_bundle(
    out: &Path,
    report: &RunReport,
    report_dir: &Path,
    scenarios: &[Scenario],
    exit: Exit,
) -> Result<(), String> {
    let Parts { dirs, fixtures, origins } = scenario_parts(scenarios);
    let mut environment = bundle::host_environment();
    let e = &report.environment;
    environment.insert("backend".into(), e.backend.clone());
    environment.insert("postgresql".into(), format!("{} from {}", e.postgresql, e.postgresql_source));
    environment.insert("cnpg_modelled".into(), e.cnpg_modelled.clone());
    if let Some(k) = &e.kubernetes {
        environment.insert("kubernetes".into(), k.clone());
    }
    if let Some(r) = &e.runtime {
        environment.insert("runtime".into(), r.clone());
    }
    if let Some(o) = &e.operand {
        environment.insert("operand".into(), format!("{} ({})", o.flavor, o.extensions.join(", ")));
    }
    let images = report
        .images
        .iter()
        .map(|i| BundleImage {
            reference: i.reference.clone(),
            manifest_digest: i.manifest_digest.clone(),
            origin: match &i.substituted_by {
                Some(src) => format!("substituted {src}"),
                None => origin_text(origins.get(&i.reference)),
            },
        })
        .collect();
    let t = &report.totals;
    let verdict = if t.failed > 0 {
        "failed"
    } else if t.flaky > 0 {
        "flaky"
    } else {
        "passed"
    };
    let input = BundleInput {
        of: "run".into(),
        verdict: verdict.into(),
        exit_code: exit.code(),
        command: report.command.clone(),
        environment,
        images,
        report_dir: report_dir.to_path_buf(),
        scenarios: dirs,
        fixtures,
        extra: Vec::new(),
    };
    write_and_say(&input, out)?;
    Ok(())
}

/// `run --backend kind --dry-run --bundle FILE`: the rendered manifests and the scenarios
/// (verdict `rendered`: nothing ran).
#[cfg(feature = "kind")]
pub(crate) fn write_rendered_bundle(
    out: &Path,
    report_dir: &Path,
    scenarios: &[Scenario],
    args: &crate::cli::RunArgs,
) -> Result<(), String> {
    let Parts { dirs, fixtures, origins } = scenario_parts(scenarios);
    let mut environment = bundle::host_environment();
    environment.insert("backend".into(), "kind (rendered, --dry-run)".into());
    environment.insert("cnpg_modelled".into(), args.cnpg_version.to_string());
    let images = origins
        .iter()
        .map(|(r, o)| BundleImage {
            reference: r.clone(),
            manifest_digest: "not built (--dry-run)".into(),
            origin: origin_text(Some(o)),
        })
        .collect();
    let input = BundleInput {
        of: "run".into(),
        verdict: "rendered".into(),
        exit_code: Exit::Passed.code(),
        command: std::env::args().collect(),
        environment,
        images,
        report_dir: report_dir.to_path_buf(),
        scenarios: dirs,
        fixtures,
        extra: Vec::new(),
    };
    write_and_say(&input, out)?;
    Ok(())
}

/// `matrix … --bundle FILE`: the aggregate and every cell, the matrix file, every scenario set.
pub(crate) fn write_matrix_bundle(
    out: &Path,
    report: &MatrixReport,
    report_dir: &Path,
    matrix_file: &Path,
    exit: Exit,
) -> Result<(), String> {
    let mut scenarios = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for c in &report.cells {
        let paths: Vec<PathBuf> = c.spec.scenarios.paths.iter().map(PathBuf::from).collect();
        let cnpg = c.spec.cnpg.parse().unwrap_or(cnpg_ext_model::CnpgVersion::DEFAULT);
        if let Ok(list) = crate::run::app::load_scenarios(&paths, cnpg) {
            for s in list {
                if seen.insert(s.dir.clone()) {
                    scenarios.push(s);
                }
            }
        }
    }
    let Parts { dirs, fixtures, .. } = scenario_parts(&scenarios);
    let mut environment = bundle::host_environment();
    let mut images: Vec<BundleImage> = Vec::new();
    for c in &report.cells {
        if let Ok(v) = RunView::load(&report_dir.join(&c.dir).join("report.json")) {
            environment
                .entry("backends".into())
                .and_modify(|b: &mut String| {
                    if !b.split(", ").any(|x| x == v.environment.backend) {
                        *b += &format!(", {}", v.environment.backend);
                    }
                })
                .or_insert(v.environment.backend.clone());
            for i in v.images {
                if !images.iter().any(|x| x.reference == i.reference && x.manifest_digest == i.manifest_digest) {
                    images.push(BundleImage {
                        reference: i.reference,
                        manifest_digest: i.manifest_digest,
                        origin: format!("cell {}", c.spec.id),
                    });
                }
            }
        }
    }
    let t = &report.totals;
    let verdict = if t.failed + t.error + t.timeout > 0 {
        "failed"
    } else if t.flaky > 0 {
        "flaky"
    } else {
        "passed"
    };
    let input = BundleInput {
        of: "matrix".into(),
        verdict: verdict.into(),
        exit_code: exit.code(),
        command: report.command.clone(),
        environment,
        images,
        report_dir: report_dir.to_path_buf(),
        scenarios: dirs,
        fixtures,
        extra: vec![matrix_file.to_path_buf()],
    };
    write_and_say(&input, out)?;
    Ok(())
}

/// `matrix … --bundle FILE`, once the matrix wrote its report into `dir`.
pub(crate) fn after_matrix(out: &Path, dir: &Path, matrix_file: &Path, exit: Exit) -> Exit {
    let written =
        MatrixReport::load(&dir.join("report.json")).and_then(|r| write_matrix_bundle(out, &r, dir, matrix_file, exit));
    match written {
        Ok(()) => exit,
        Err(e) => {
            eprintln!("error: {e}");
            Exit::Environment
        }
    }
}

/// `certify … --bundle FILE`: the certification record and the scenario it generated.
pub(crate) fn after_certify(out: &Path, dir: &Path, exit: Exit) -> Exit {
    let written = (|| -> Result<(), String> {
        let report = std::fs::read(dir.join("report.json")).map_err(|e| format!("{}: {e}", dir.display()))?;
        let raw: serde_json::Value = serde_json::from_slice(&report).map_err(|e| e.to_string())?;
        let view: RunView = serde_json::from_value(raw.clone()).map_err(|e| e.to_string())?;
        let mut environment = bundle::host_environment();
        environment.insert("backend".into(), view.environment.backend.clone());
        environment.insert(
            "postgresql".into(),
            format!("{} from {}", view.environment.postgresql, view.environment.postgresql_source),
        );
        environment.insert("cnpg_modelled".into(), view.environment.cnpg_modelled.clone());
        let record: serde_json::Value = std::fs::read(dir.join("certification.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let verdict =
            record["verdict"].as_str().or(raw["certification"]["verdict"].as_str()).unwrap_or("unknown").to_string();
        let images = view
            .images
            .iter()
            .map(|i| BundleImage {
                reference: i.reference.clone(),
                manifest_digest: i.manifest_digest.clone(),
                origin: "certified".into(),
            })
            .collect();
        let input = BundleInput {
            of: "certify".into(),
            verdict,
            exit_code: exit.code(),
            command: view.command.clone(),
            environment,
            images,
            // The generated scenario is in the report directory (`scenario/`).
            report_dir: dir.to_path_buf(),
            ..BundleInput::default()
        };
        write_and_say(&input, out)?;
        Ok(())
    })();
    match written {
        Ok(()) => exit,
        Err(e) => {
            eprintln!("error: {e}");
            Exit::Environment
        }
    }
}

/// The bundle at `path` when it is a `certify` bundle (`run --from-bundle` reruns the
/// certification).
pub(crate) fn certify_bundle(path: &Path) -> Option<(PathBuf, Bundle)> {
    Bundle::open(path).ok().filter(|b| b.manifest.of == "certify").map(|b| (path.to_path_buf(), b))
}

/// The scenarios of an unpacked bundle, and whether a new run reproduced its verdict.
pub(crate) struct FromBundle {
    pub bundle: Bundle,
    pub dir: tempfile::TempDir,
}

impl FromBundle {
    pub(crate) fn open(path: &Path) -> Result<FromBundle, String> {
        let bundle = Bundle::open(path)?;
        if bundle.manifest.of != "run" {
            return Err(format!(
                "{}: a bundle of a `{}`; --from-bundle reruns `run` and `certify` bundles (a matrix: `matrix --rerun-failed`)",
                path.display(),
                bundle.manifest.of
            ));
        }
        if bundle.manifest.scenarios.is_empty() {
            return Err(format!("{}: the bundle holds no scenario", path.display()));
        }
        let dir = tempfile::Builder::new().prefix("cnpg-ext-bundle-").tempdir().map_err(|e| e.to_string())?;
        bundle.extract(dir.path())?;
        Ok(FromBundle { bundle, dir })
    }

    pub(crate) fn paths(&self) -> Vec<PathBuf> {
        self.bundle.manifest.scenarios.iter().map(|s| self.dir.path().join(&s.dir)).collect()
    }

    /// The CloudNativePG release the bundled run modelled.
    pub(crate) fn cnpg(&self) -> Option<cnpg_ext_model::CnpgVersion> {
        self.bundle.manifest.environment.get("cnpg_modelled").and_then(|v| v.parse().ok())
    }

    /// `REF=SOURCE` for every image the bundled run did not build from a bundled fixture:
    /// pulled images (by their reference or a substitution) pinned to the digest the bundle
    /// recorded (`repo@sha256:…`), other substitutions as they were given.
    pub(crate) fn pinned(&self) -> BTreeMap<String, String> {
        let by_digest = |reference: &str, digest: &str| {
            let repo = reference.split('@').next().unwrap_or(reference);
            let name_end = repo.rfind(':').filter(|c| !repo[*c..].contains('/')).unwrap_or(repo.len());
            format!("{}@{digest}", &repo[..name_end])
        };
        let mut out = BTreeMap::new();
        for i in &self.bundle.manifest.images {
            let pinned = match i.origin.strip_prefix("substituted ") {
                Some(src) => match crate::run::substitute::parse_source(src) {
                    crate::run::substitute::Source::Pull(r) if i.manifest_digest.starts_with("sha256:") => {
                        by_digest(&r, &i.manifest_digest)
                    }
                    _ => src.to_string(),
                },
                None if i.origin == "pull" && i.manifest_digest.starts_with("sha256:") => {
                    by_digest(&i.reference, &i.manifest_digest)
                }
                None => continue,
            };
            out.insert(i.reference.clone(), pinned);
        }
        out
    }

    /// Compares the new report with the bundled one: `(reproduced, lines)`.
    pub(crate) fn compare(&self, new: &RunReport) -> (bool, Vec<String>) {
        let old: RunView = self.bundle.report_json().and_then(|r| serde_json::from_slice(r).ok()).unwrap_or_default();
        let mut lines = Vec::new();
        let mut same = true;
        for s in &old.scenarios {
            match new.scenarios.iter().find(|n| n.id == s.id) {
                None => {
                    same = false;
                    lines.push(format!("{}: {} in the bundle, not run now", s.id, s.status));
                }
                Some(n) => {
                    let (was, now) = (s.category.map(|c| c.to_string()), n.category.map(|c| c.to_string()));
                    if n.status.name() != s.status || was != now {
                        same = false;
                        lines.push(format!(
                            "{}: {}{} in the bundle, {}{} now",
                            s.id,
                            s.status,
                            was.map(|c| format!(" [{c}]")).unwrap_or_default(),
                            n.status.name(),
                            now.map(|c| format!(" [{c}]")).unwrap_or_default()
                        ));
                    } else {
                        lines.push(format!("{}: {} as in the bundle", s.id, s.status));
                    }
                }
            }
        }
        for i in &old.images {
            match new.images.iter().find(|n| n.reference == i.reference) {
                Some(n) if n.manifest_digest == i.manifest_digest => {}
                Some(n) => {
                    same = false;
                    lines.push(format!(
                        "image {}: {} in the bundle, {} now",
                        i.reference, i.manifest_digest, n.manifest_digest
                    ));
                }
                None => {
                    same = false;
                    lines.push(format!("image {}: in the bundle, not used now", i.reference));
                }
            }
        }
        (same, lines)
    }
}

/// Write the bundle and say where, with every file it holds.
fn write_and_say(input: &BundleInput, out: &Path) -> Result<(), String> {
    let m = bundle::write(input, out)?;
    println!("bundle: {} ({} files)", out.display(), m.files.len() + bundle::GENERATED.len());
    Ok(())
}
