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

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use cnpg_ext_images::control::parse_control;
use cnpg_ext_images::lint::{LintOptions, LintReport, Severity};
use cnpg_ext_model::CnpgVersion;
use serde::Serialize;

use crate::app::{self, BackendKind, RunOptions};
use crate::error::{HarnessError, EXIT_ENVIRONMENT, EXIT_FAILED, EXIT_INVALID, EXIT_PASSED};
use crate::reports::view::RunView;
use crate::sql::{quote_ident, quote_literal};

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
}

/// What can decide a certification verdict. When several are found, the first in this
/// order decides: the most fundamental cause first (a module for another architecture also
/// makes CREATE EXTENSION fail; the architecture is what the vendor must fix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    /// An ELF file or the image config is for another architecture, or the image mixes them.
    ArchitectureMismatch,
    /// A module's magic block names another PostgreSQL major (or, with no module, the label).
    PgMajorMismatch,
    /// A binary needs a newer glibc / libstdc++ than the operand's distribution has.
    OsMismatch,
    /// A DT_NEEDED library is neither in the image nor in the operand.
    UnresolvableNeeded,
    /// The postgres user (uid 26) cannot read a file or traverse a directory.
    NotReadable,
    /// An io.cloudnativepg.image.* label is missing and `--require-labels` was given.
    MissingLabel,
    /// Any other lint error, or an image whose extensions cannot be inferred.
    ImageLayout,
    /// The operand already ships the extension, so the image's copy is never used.
    /// From lint (`shadowed-by-operand`) and from the run's origin check.
    ShadowedByOperand,
    /// The module PostgreSQL loaded is not the image's file.
    /// From the run's origin check (`/proc/self/maps`).
    ModuleNotLoadedFromImage,
    /// CREATE EXTENSION failed in the generated scenario.
    CreateExtensionFailed,
    /// Another step of the generated scenario failed (ALTER EXTENSION UPDATE, DROP, …).
    ScenarioFailed,
    /// The extension could not be run here: the verdict is inconclusive, not a failure.
    EnvironmentUnusable,
}

impl FindingKind {
    /// The kind of an error-severity lint finding.
    pub fn of_lint_code(code: &str) -> FindingKind {
        use cnpg_ext_images::lint::codes as c;
        match code {
            c::ARCH_MISMATCH | c::WRONG_ARCH | c::WRONG_ELF_CLASS | c::MIXED_ARCH => FindingKind::ArchitectureMismatch,
            c::MODULE_PG_MAJOR_MISMATCH | c::PG_MAJOR_MISMATCH => FindingKind::PgMajorMismatch,
            c::GLIBC_TOO_NEW | c::LIBSTDCXX_TOO_NEW => FindingKind::OsMismatch,
            c::MISSING_NEEDED_LIBRARY => FindingKind::UnresolvableNeeded,
            c::NOT_READABLE_BY_POSTGRES => FindingKind::NotReadable,
            c::MISSING_LABEL => FindingKind::MissingLabel,
            _ => FindingKind::ImageLayout,
        }
    }

    /// The verdict this finding alone gives.
    pub fn verdict(self) -> Verdict {
        match self {
            FindingKind::EnvironmentUnusable => Verdict::Inconclusive,
            _ => Verdict::Fail,
        }
    }
}

/// One reason the verdict is not `pass`.
#[derive(Debug, Clone, Serialize)]
pub struct VerdictFinding {
    pub kind: FindingKind,
    /// The reason as a line of text (`lint <code>: <path>: <message>`, `run: …`).
    pub reason: String,
}

/// The verdict and the finding that decided it ([`FindingKind`] order); `pass` when none.
pub fn decide(findings: &[VerdictFinding]) -> (Verdict, Option<&VerdictFinding>) {
    match findings.iter().min_by_key(|f| f.kind) {
        Some(f) => (f.kind.verdict(), Some(f)),
        None => (Verdict::Pass, None),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    Inconclusive,
}

impl Verdict {
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Pass => EXIT_PASSED,
            Verdict::Fail => EXIT_FAILED,
            Verdict::Inconclusive => EXIT_ENVIRONMENT,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

/// One extension of the image and the path the certification takes through its versions.
#[derive(Debug, Clone, Serialize)]
pub struct ExtensionPlan {
    pub name: String,
    pub control_file: String,
    pub default_version: Option<String>,
    pub requires: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module_pathname: Option<String>,
    /// Versions with a full install script (`<name>--<v>.sql`).
    pub install_versions: Vec<String>,
    /// Update scripts shipped (`<name>--<from>--<to>.sql`).
    pub update_scripts: Vec<(String, String)>,
    /// Created at this version, then updated along `update_path` to the default.
    pub create_version: Option<String>,
    pub update_path: Vec<String>,
}

/// What the image looks like to CNPG: the settings a Cluster needs to mount it.
#[derive(Debug, Clone, Serialize)]
pub struct Inferred {
    pub name: String,
    pub reference: String,
    pub extension_control_path: Vec<String>,
    pub dynamic_library_path: Vec<String>,
    pub ld_library_path: Vec<String>,
    pub extensions: Vec<ExtensionPlan>,
    /// The generated Cluster's operand image (`…:18-minimal-<distribution>`).
    pub image_name: String,
}

/// CloudNativePG's operand image for a distribution.
pub fn operand_image(os: &str) -> String {
    format!("ghcr.io/cloudnative-pg/postgresql:18-minimal-{os}")
}

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

fn rel_str(p: &Path) -> String {
    p.display().to_string()
}

/// `1.10.2` > `1.9`: numeric runs compare as numbers.
fn version_key(v: &str) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut num = String::new();
    let mut txt = String::new();
    for c in v.chars() {
        if c.is_ascii_digit() {
            if !txt.is_empty() {
                out.push((u64::MAX, std::mem::take(&mut txt)));
            }
            num.push(c);
        } else {
            if !num.is_empty() {
                out.push((num.parse().unwrap_or(u64::MAX), String::new()));
                num.clear();
            }
            if c != '.' {
                txt.push(c);
            }
        }
    }
    if !num.is_empty() {
        out.push((num.parse().unwrap_or(u64::MAX), String::new()));
    }
    if !txt.is_empty() {
        out.push((u64::MAX, txt));
    }
    out
}

/// Shortest chain of update scripts from `from` to `to` (versions after `from`).
fn update_path(edges: &[(String, String)], from: &str, to: &str) -> Option<Vec<String>> {
    let mut prev: BTreeMap<&str, &str> = BTreeMap::new();
    let mut q = VecDeque::from([from]);
    let mut seen = BTreeSet::from([from]);
    while let Some(v) = q.pop_front() {
        if v == to {
            let mut path = vec![to.to_string()];
            let mut cur = to;
            while let Some(p) = prev.get(cur) {
                if *p == from {
                    break;
                }
                path.push(p.to_string());
                cur = p;
            }
            path.reverse();
            return Some(path);
        }
        for (a, b) in edges {
            if a == v && seen.insert(b.as_str()) {
                prev.insert(b.as_str(), v);
                q.push_back(b.as_str());
            }
        }
    }
    None
}

/// A CNPG extension name: lowercase letters, digits and `-`.
fn cnpg_name(s: &str) -> String {
    let n: String = s.to_ascii_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let n = n.trim_matches('-').to_string();
    if n.is_empty() {
        "extension".into()
    } else {
        n
    }
}

/// Reads the unpacked image: where control files, modules and system libraries live, and
/// each extension's install and update scripts.
pub fn infer(
    rootfs: &Path,
    labels: &BTreeMap<String, String>,
    ref_names: &[String],
    reference: Option<&str>,
    notes: &mut Vec<String>,
    problems: &mut Vec<String>,
) -> Inferred {
    let files = crate::fsutil::list_files(rootfs);
    let mut control_prefixes: Vec<String> = Vec::new();
    let mut extensions = Vec::new();
    let mut modules_wanted: Vec<String> = Vec::new();
    for f in files.iter().filter(|f| f.ends_with(".control")) {
        let p = Path::new(f);
        let ext = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let dir = p.parent().unwrap_or(Path::new(""));
        if dir.file_name().map(|n| n != "extension").unwrap_or(true) {
            problems.push(format!(
                "{f}: a control file must be in an `extension` directory (PostgreSQL looks in <extension_control_path entry>/extension)"
            ));
            continue;
        }
        let prefix = dir.parent().map(rel_str).unwrap_or_default();
        if !prefix.is_empty() && !control_prefixes.contains(&prefix) {
            control_prefixes.push(prefix.clone());
        }
        let text = std::fs::read_to_string(rootfs.join(f)).unwrap_or_default();
        let control = match parse_control(&text) {
            Ok(c) => c,
            Err(e) => {
                problems.push(format!("{f}: {e}"));
                continue;
            }
        };
        if let Some(m) = control.module_pathname() {
            let base = m.rsplit('/').next().unwrap_or(m).trim_end_matches(".so").to_string();
            modules_wanted.push(base);
        }
        // Scripts next to the control file.
        let mut install = Vec::new();
        let mut updates = Vec::new();
        let head = format!("{}/{ext}--", dir.display());
        for s in files.iter().filter(|s| s.starts_with(&head) && s.ends_with(".sql")) {
            let v = &s[head.len()..s.len() - 4];
            match v.split_once("--") {
                Some((a, b)) => updates.push((a.to_string(), b.to_string())),
                None => install.push(v.to_string()),
            }
        }
        install.sort_by_key(|v| version_key(v));
        updates
            .sort_by(|a, b| version_key(&a.0).cmp(&version_key(&b.0)).then(version_key(&a.1).cmp(&version_key(&b.1))));
        let dv = control.default_version().map(str::to_string);
        let (mut create_version, mut path) = (dv.clone(), Vec::new());
        if let Some(dv) = &dv {
            if control.directory().is_some() {
                notes.push(format!(
                    "{ext}: the control file sets `directory`; scripts were looked for next to the control file"
                ));
            }
            // The oldest installable version from which the update scripts reach the default.
            let start =
                install.iter().filter(|v| *v != dv).find_map(|v| update_path(&updates, v, dv).map(|p| (v.clone(), p)));
            match start {
                Some((v, p)) => {
                    create_version = Some(v);
                    path = p;
                }
                None if !updates.is_empty() && install.iter().all(|v| v == dv) => notes.push(format!(
                    "{ext}: only the default version {dv} has a full install script; its {} update script(s) cannot be exercised from an older install and were not run",
                    updates.len()
                )),
                None if !updates.is_empty() => notes.push(format!(
                    "{ext}: no chain of update scripts leads from an installable version to the default {dv}; update scripts not run"
                )),
                None => {}
            }
            let used: BTreeSet<(String, String)> = {
                let mut from = create_version.clone().unwrap_or_default();
                path.iter()
                    .map(|to| {
                        let e = (from.clone(), to.clone());
                        from = to.clone();
                        e
                    })
                    .collect()
            };
            let unused: Vec<String> =
                updates.iter().filter(|e| !used.contains(*e)).map(|(a, b)| format!("{a}--{b}")).collect();
            if !path.is_empty() && !unused.is_empty() {
                notes.push(format!("{ext}: update scripts not on the path taken: {}", unused.join(", ")));
            }
        }
        extensions.push(ExtensionPlan {
            name: ext.clone(),
            control_file: f.clone(),
            default_version: dv,
            requires: control.requires(),
            module_pathname: control.module_pathname().map(str::to_string),
            install_versions: install,
            update_scripts: updates,
            create_version,
            update_path: path,
        });
    }
    // Module directories: where the modules named by module_pathname are, else every
    // directory with a `*.so` outside system/.
    let so_dirs = |pred: &dyn Fn(&str) -> bool| -> Vec<String> {
        let mut v: Vec<String> = files
            .iter()
            .filter(|f| f.ends_with(".so") && pred(f))
            .filter_map(|f| Path::new(f).parent().map(rel_str))
            .filter(|d| !d.is_empty())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let mut lib_dirs = so_dirs(&|f: &str| {
        let stem = Path::new(f).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        modules_wanted.contains(&stem)
    });
    if lib_dirs.is_empty() {
        lib_dirs = so_dirs(&|f: &str| !f.starts_with("system/"));
    }
    for m in &modules_wanted {
        if !files
            .iter()
            .any(|f| Path::new(f).file_name().map(|n| n.to_string_lossy() == format!("{m}.so")).unwrap_or(false))
        {
            problems.push(format!("module `{m}.so` named by a module_pathname is not in the image"));
        }
    }
    let default_first = |mut v: Vec<String>, dflt: &str| {
        v.sort_by_key(|d| (d != dflt, d.clone()));
        if v.is_empty() {
            v.push(dflt.to_string());
        }
        v
    };
    let control_path = default_first(control_prefixes, "share");
    let lib_path = default_first(lib_dirs, "lib");
    let ld_path: Vec<String> =
        if files.iter().any(|f| f.starts_with("system/")) { vec!["system".into()] } else { Vec::new() };

    let label_name = labels.get(cnpg_ext_images::LABEL_BASE_NAME).filter(|n| !n.trim().is_empty());
    let name = cnpg_name(
        label_name.map(String::as_str).or(extensions.first().map(|e| e.name.as_str())).unwrap_or("extension"),
    );
    let reference = match reference {
        Some(r) => r.to_string(),
        None => {
            let full = ref_names.iter().find(|r| r.contains('/') && cnpg_ext_images::validate_reference(r).is_ok());
            match full {
                Some(r) => r.clone(),
                None => {
                    let tag = ref_names
                        .iter()
                        .find(|r| {
                            !r.contains('/') && !r.contains(':') && cnpg_ext_images::validate_reference(r).is_ok()
                        })
                        .cloned()
                        .or_else(|| {
                            labels.get(cnpg_ext_images::LABEL_SQL_VERSION).map(|v| cnpg_name(v).replace('-', "."))
                        })
                        .unwrap_or_else(|| "latest".into());
                    let r = format!("localhost/cnpg-ext-certify/{name}:{tag}");
                    notes.push(format!("the image records no full reference; the Cluster uses the synthetic `{r}`"));
                    r
                }
            }
        }
    };
    let os = ref_names
        .iter()
        .find_map(|r| cnpg_ext_images::compat::distro_from_reference(r))
        .map(|d| d.name)
        .unwrap_or("trixie");
    Inferred {
        name,
        reference,
        extension_control_path: control_path,
        dynamic_library_path: lib_path,
        ld_library_path: ld_path,
        extensions,
        image_name: operand_image(os),
    }
}

fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).expect("string serializes")
}

/// `cluster.yaml`: one instance, one extension entry with the inferred paths.
pub fn cluster_yaml(inf: &Inferred) -> String {
    let list = |v: &[String]| format!("[{}]", v.iter().map(|s| yaml_str(s)).collect::<Vec<_>>().join(", "));
    let mut y = format!(
        "apiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata:\n  name: certify-{name}\nspec:\n  instances: 1\n  imageName: {image_name}\n  storage:\n    size: 1Gi\n  postgresql:\n    extensions:\n      - name: {name}\n        image:\n          reference: {reference}\n        extension_control_path: {ecp}\n        dynamic_library_path: {dlp}\n",
        name = inf.name,
        image_name = inf.image_name,
        reference = yaml_str(&inf.reference),
        ecp = list(&inf.extension_control_path),
        dlp = list(&inf.dynamic_library_path),
    );
    if !inf.ld_library_path.is_empty() {
        y += &format!("        ld_library_path: {}\n", list(&inf.ld_library_path));
    }
    y
}

/// `scenario.yaml`: per extension, its own database; available → CREATE (at the oldest
/// installable version) → ALTER EXTENSION UPDATE TO each version on the path → DROP.
pub fn scenario_yaml(inf: &Inferred, image: &Path) -> String {
    let mut y = format!(
        "# Generated by `cnpg-ext-harness certify`; re-run with `cnpg-ext-harness run <this directory>`.\nid: certify-{}\ndescription: {}\nimages:\n  - reference: {}\n    oci: {}\nsteps:\n  - apply: {{file: cluster.yaml, name: mount the image}}\n  - verify: {{name: \"GUCs, LD_LIBRARY_PATH and mounted files as the operator derives them\"}}\n",
        inf.name,
        yaml_str(&format!("certification of {}", image.display())),
        yaml_str(&inf.reference),
        yaml_str(&image.display().to_string()),
    );
    let sql = |y: &mut String, name: &str, db: &str, query: &str, rows: Option<Vec<&str>>| {
        *y += &format!(
            "  - sql:\n      name: {}\n      database: {}\n      query: {}\n",
            yaml_str(name),
            yaml_str(db),
            yaml_str(query)
        );
        if let Some(r) = rows {
            *y += &format!("      rows: [[{}]]\n", r.iter().map(|v| yaml_str(v)).collect::<Vec<_>>().join(", "));
        }
    };
    for e in &inf.extensions {
        let Some(dv) = &e.default_version else {
            continue;
        };
        let db = format!(
            "certify_{}",
            e.name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect::<String>()
        );
        let ext = quote_ident(&e.name);
        let version_q = format!("SELECT extversion FROM pg_extension WHERE extname = {}", quote_literal(&e.name));
        sql(
            &mut y,
            &format!("{}: database for the test", e.name),
            "postgres",
            &format!("CREATE DATABASE {}", quote_ident(&db)),
            None,
        );
        sql(
            &mut y,
            &format!("{}: available from the image at default version {dv}", e.name),
            &db,
            &format!(
                "SELECT name, default_version FROM pg_available_extensions WHERE name = {}",
                quote_literal(&e.name)
            ),
            Some(vec![e.name.as_str(), dv.as_str()]),
        );
        let start = e.create_version.clone().unwrap_or_else(|| dv.clone());
        let create = if e.update_path.is_empty() {
            format!("CREATE EXTENSION {ext} CASCADE")
        } else {
            format!("CREATE EXTENSION {ext} VERSION {} CASCADE", quote_literal(&start))
        };
        sql(&mut y, &format!("{}: CREATE EXTENSION (version {start}, CASCADE)", e.name), &db, &create, None);
        sql(&mut y, &format!("{}: installed version is {start}", e.name), &db, &version_q, Some(vec![start.as_str()]));
        for v in &e.update_path {
            sql(
                &mut y,
                &format!("{}: ALTER EXTENSION UPDATE TO {v}", e.name),
                &db,
                &format!("ALTER EXTENSION {ext} UPDATE TO {}", quote_literal(v)),
                None,
            );
            sql(&mut y, &format!("{}: installed version is {v}", e.name), &db, &version_q, Some(vec![v.as_str()]));
        }
        sql(&mut y, &format!("{}: DROP EXTENSION", e.name), &db, &format!("DROP EXTENSION {ext}"), None);
        sql(
            &mut y,
            &format!("{}: dropped", e.name),
            &db,
            &format!("SELECT count(*) FROM pg_extension WHERE extname = {}", quote_literal(&e.name)),
            Some(vec!["0"]),
        );
    }
    y
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
    // `certify <registry reference>`: pulled into the cache, certified from its layout, and
    // the Cluster names the reference as given.
    let mut pulled_args = args.clone();
    if let Some(r) = args.image.to_str().filter(|r| cnpg_ext_registry::looks_like_reference(r)) {
        pulled_args.image = crate::pull::pull(r, !args.no_progress).await?.layout;
        pulled_args.reference.get_or_insert_with(|| r.to_string());
    }
    let args = &pulled_args;
    let image = args.image.canonicalize().map_err(|e| HarnessError::Input(format!("{}: {e}", args.image.display())))?;
    let report_dir = args.report_dir.clone();
    std::fs::create_dir_all(&report_dir)
        .map_err(|e| HarnessError::Environment(format!("{}: {e}", report_dir.display())))?;
    let report_dir = report_dir.canonicalize().unwrap_or(report_dir);
    for stale in ["report.json", "junit.xml", "summary.md", "index.html", "certification.json", "lint.json"] {
        let _ = std::fs::remove_file(report_dir.join(stale));
    }
    let _ = crate::fsutil::remove_tree(&report_dir.join("logs"));

    // Read the image (hardened unpack into a scratch dir).
    let summary =
        cnpg_ext_images::inspect(&image, None).map_err(|e| HarnessError::Input(format!("{}: {e}", image.display())))?;
    let scratch = tempfile::Builder::new()
        .prefix("cnpg-ext-certify-")
        .tempdir()
        .map_err(|e| HarnessError::Environment(e.to_string()))?;
    // Removed by the run's supervisor if the harness dies before the TempDir drops.
    let _ = crate::supervisor::claim_dir(scratch.path());
    let rootfs = scratch.path().join("rootfs");
    cnpg_ext_images::unpack(&image, &rootfs, &cnpg_ext_images::UnpackOptions::default())
        .map_err(|e| HarnessError::Input(format!("{}: {e}", image.display())))?;

    let (mut notes, mut problems) = (Vec::new(), Vec::new());
    let mut inferred = infer(
        &rootfs,
        &summary.config.labels,
        &summary.reference_names,
        args.reference.as_deref(),
        &mut notes,
        &mut problems,
    );
    drop(scratch);
    if let Some(os) = &args.os {
        inferred.image_name = operand_image(&os.to_ascii_lowercase());
    }

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
    let lint = cnpg_ext_images::lint::lint(&image, &lint_opts)
        .map_err(|e| HarnessError::Input(format!("{}: {e}", image.display())))?;
    std::fs::write(report_dir.join("lint.json"), lint.to_json())
        .map_err(|e| HarnessError::Environment(e.to_string()))?;

    let mut findings: Vec<VerdictFinding> = Vec::new();
    let mut found = |kind: FindingKind, reason: String| findings.push(VerdictFinding { kind, reason });
    for f in lint.findings.iter().filter(|f| f.severity == Severity::Error) {
        found(
            FindingKind::of_lint_code(&f.code),
            format!("lint {}: {}{}", f.code, f.path.as_ref().map(|p| format!("{p}: ")).unwrap_or_default(), f.message),
        );
    }
    // Shadowing is a warning for `image lint` (the image may target another operand) but
    // certify judges against the chosen operand: the image's copy would never be used.
    for f in lint.findings.iter().filter(|f| f.code == cnpg_ext_images::lint::codes::SHADOWED_BY_OPERAND) {
        found(
            FindingKind::ShadowedByOperand,
            format!("lint {}: {}{}", f.code, f.path.as_ref().map(|p| format!("{p}: ")).unwrap_or_default(), f.message),
        );
    }
    for p in &problems {
        found(FindingKind::ImageLayout, p.clone());
    }
    let certifiable: Vec<&ExtensionPlan> = inferred.extensions.iter().filter(|e| e.default_version.is_some()).collect();
    if inferred.extensions.is_empty() {
        found(
            FindingKind::ImageLayout,
            "the image declares no extension (no usable `<name>.control` in an `extension` directory)".into(),
        );
    }
    for e in inferred.extensions.iter().filter(|e| e.default_version.is_none()) {
        found(FindingKind::ImageLayout, format!("{}: the control file has no default_version", e.control_file));
    }

    // Generate and run the scenario.
    let scen_dir = report_dir.join("scenario");
    let _ = crate::fsutil::remove_tree(&scen_dir);
    std::fs::create_dir_all(&scen_dir).map_err(|e| HarnessError::Environment(e.to_string()))?;
    let mut run_summary = None;
    let mut run_view: Option<RunView> = None;
    let mut scenario_written = None;
    if !certifiable.is_empty() {
        std::fs::write(scen_dir.join("cluster.yaml"), cluster_yaml(&inferred))
            .map_err(|e| HarnessError::Environment(e.to_string()))?;
        std::fs::write(scen_dir.join("scenario.yaml"), scenario_yaml(&inferred, &image))
            .map_err(|e| HarnessError::Environment(e.to_string()))?;
        scenario_written = Some(scen_dir.display().to_string());
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
            paths: vec![scen_dir.clone()],
            backend: args.backend,
            jobs: 1,
            report_dir: Some(report_dir.clone()),
            keep: keep_parent.is_some(),
            cnpg: args.cnpg_version,
            pg_config: args.pg_config.clone(),
            run_as: Some("nobody".into()),
            workdir: keep_parent.as_ref().map(|k| k.path().to_path_buf()),
            progress: !args.no_progress,
            command: command.clone(),
            engine: crate::backends::container::EngineOptions::from_env(),
            kind: Default::default(),
            operand: args.operand,
            wrap: None,
        };
        match app::run(opts).await {
            Ok(out) => {
                let view = RunView::of(&out.report);
                let failed = view.count("failed");
                if failed > 0 {
                    for s in &view.scenarios {
                        if let Some(f) = s.failure() {
                            let text = f.text();
                            let kind = if text.contains("shadowed") {
                                FindingKind::ShadowedByOperand
                            } else if text.contains("origin of ") && text.contains("(/proc/self/maps)") {
                                FindingKind::ModuleNotLoadedFromImage
                            } else if f.locator.contains("CREATE EXTENSION") {
                                FindingKind::CreateExtensionFailed
                            } else {
                                FindingKind::ScenarioFailed
                            };
                            found(kind, format!("run: {}", f.text()));
                        }
                    }
                    if let Some(k) = &keep_parent {
                        crate::matrix::keep_log_tails(k.path(), &report_dir.join("logs"));
                    }
                }
                run_summary = Some(RunSummary {
                    backend: view.environment.backend.clone(),
                    postgresql: view.environment.postgresql.clone(),
                    passed: view.count("passed"),
                    failed,
                    duration_ms: view.duration_ms,
                });
                run_view = Some(view);
                if let Some(kept) = &out.kept {
                    let _ = crate::fsutil::remove_tree(kept);
                }
            }
            Err(HarnessError::Environment(m)) => found(
                FindingKind::EnvironmentUnusable,
                format!("the extension could not be run here: environment unusable: {m}"),
            ),
            Err(HarnessError::Input(m)) => {
                // The generated scenario was refused: the image cannot be mounted as inferred.
                found(
                    FindingKind::ImageLayout,
                    format!("the image cannot be mounted by CloudNativePG as inferred: {m}"),
                )
            }
        }
        if let Some(k) = keep_parent {
            let _ = crate::fsutil::remove_tree(k.path());
        }
    }
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
        scenario: scenario_written,
        run: run_summary,
    };
    let files = write_record(&report_dir, &cert, run_view.as_ref())?;
    Ok(CertifyOutcome { certification: cert, files })
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

/// The kebab-case name of a finding kind, as in certification.json.
pub fn kind_name(k: FindingKind) -> String {
    serde_json::to_value(k).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
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

fn write_record(dir: &Path, c: &Certification, view: Option<&RunView>) -> Result<Vec<PathBuf>, HarnessError> {
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

/// `cnpg-ext-harness certify`: the verdict, its reasons, and where the record is.
pub async fn command(args: CertifyArgs) -> i32 {
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
            match e {
                HarnessError::Input(_) => EXIT_INVALID,
                HarnessError::Environment(_) => EXIT_ENVIRONMENT,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(kind: FindingKind) -> VerdictFinding {
        VerdictFinding { kind, reason: kind_name(kind) }
    }

    #[test]
    fn the_most_fundamental_finding_decides() {
        assert_eq!(decide(&[]).0, Verdict::Pass);
        let all = [
            f(FindingKind::CreateExtensionFailed),
            f(FindingKind::EnvironmentUnusable),
            f(FindingKind::ArchitectureMismatch),
            f(FindingKind::PgMajorMismatch),
        ];
        let (v, d) = decide(&all);
        assert_eq!((v, d.map(|d| d.kind)), (Verdict::Fail, Some(FindingKind::ArchitectureMismatch)));
        // Only an unusable environment: inconclusive; with any image defect: fail.
        assert_eq!(decide(&[f(FindingKind::EnvironmentUnusable)]).0, Verdict::Inconclusive);
        let two = [f(FindingKind::EnvironmentUnusable), f(FindingKind::ImageLayout)];
        let (v, d) = decide(&two);
        assert_eq!((v, d.map(|d| d.kind)), (Verdict::Fail, Some(FindingKind::ImageLayout)));
        // The hook points fail the verdict like any other finding.
        assert_eq!(decide(&[f(FindingKind::ShadowedByOperand)]).0, Verdict::Fail);
        assert_eq!(decide(&[f(FindingKind::ModuleNotLoadedFromImage)]).0, Verdict::Fail);
    }

    #[test]
    fn lint_codes_map_to_kinds() {
        use cnpg_ext_images::lint::codes as c;
        for (code, kind) in [
            (c::WRONG_ARCH, FindingKind::ArchitectureMismatch),
            (c::MIXED_ARCH, FindingKind::ArchitectureMismatch),
            (c::ARCH_MISMATCH, FindingKind::ArchitectureMismatch),
            (c::MODULE_PG_MAJOR_MISMATCH, FindingKind::PgMajorMismatch),
            (c::GLIBC_TOO_NEW, FindingKind::OsMismatch),
            (c::LIBSTDCXX_TOO_NEW, FindingKind::OsMismatch),
            (c::MISSING_NEEDED_LIBRARY, FindingKind::UnresolvableNeeded),
            (c::NOT_READABLE_BY_POSTGRES, FindingKind::NotReadable),
            (c::MISSING_LABEL, FindingKind::MissingLabel),
            (c::MISSING_MODULE, FindingKind::ImageLayout),
        ] {
            assert_eq!(FindingKind::of_lint_code(code), kind, "{code}");
        }
        assert_eq!(kind_name(FindingKind::PgMajorMismatch), "pg-major-mismatch");
    }
}

fn parse_operand(s: &str) -> Result<cnpg_ext_pg::OperandFlavor, String> {
    cnpg_ext_pg::OperandFlavor::parse(s).ok_or_else(|| format!("`{s}` is not an operand: use minimal or standard"))
}
