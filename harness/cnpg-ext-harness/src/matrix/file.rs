//! The matrix file as written (axes, exclusions) and the helpers its loader (`load`) shares:
//! names, paths, durations, file:line errors.

use std::path::{Component, Path, PathBuf};

use cnpg_ext_model::InputError;
use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::error::HarnessError;
use crate::reports::matrix::CellSpec;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MatrixFile {
    #[serde(default)]
    pub(super) description: Option<String>,
    #[serde(default)]
    pub(super) jobs_per_cell: Option<usize>,
    /// Default of `--cell-timeout`: `90s`, `20m`, `1h`, or seconds.
    #[serde(default)]
    pub(super) cell_timeout: Option<Spanned<String>>,
    pub(super) axes: AxesFile,
    #[serde(default)]
    pub(super) exclude: Vec<Spanned<ExcludeFile>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AxesFile {
    pub(super) backend: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) postgres: Vec<Spanned<PgEntry>>,
    #[serde(default)]
    pub(super) cnpg: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) kubernetes: Vec<Spanned<K8sEntry>>,
    pub(super) scenarios: Vec<Spanned<ScenarioEntry>>,
    /// Image substitutions per cell: `{name, substitute: {REF: SOURCE}}` (no `substitute`:
    /// the scenarios' own images).
    #[serde(default)]
    pub(super) images: Vec<Spanned<ImagesEntry>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ImagesEntry {
    pub(super) name: String,
    #[serde(default)]
    pub(super) substitute: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum PgEntry {
    Plain(String),
    Named(NamedPg),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NamedPg {
    pub(super) name: String,
    pub(super) pg_config: String,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum K8sEntry {
    Plain(String),
    Named(NamedK8s),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NamedK8s {
    pub(super) name: String,
    pub(super) kind_config: String,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum ScenarioEntry {
    Plain(String),
    Named(NamedScenarios),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NamedScenarios {
    pub(super) name: String,
    pub(super) paths: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExcludeFile {
    #[serde(default)]
    pub(super) backend: Option<String>,
    #[serde(default)]
    pub(super) postgres: Option<String>,
    #[serde(default)]
    pub(super) cnpg: Option<String>,
    #[serde(default)]
    pub(super) kubernetes: Option<String>,
    #[serde(default)]
    pub(super) scenarios: Option<String>,
    #[serde(default)]
    pub(super) images: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Matrix {
    pub file: PathBuf,
    pub description: Option<String>,
    pub jobs_per_cell: usize,
    /// A cell still running after this long is killed and reported `timeout`.
    pub cell_timeout: Option<std::time::Duration>,
    pub cells: Vec<CellSpec>,
}

/// `90`, `90s`, `20m`, `1h` (a whole number and an optional unit); `0` means no limit.
pub fn parse_duration(text: &str) -> Result<Option<std::time::Duration>, String> {
    let t = text.trim();
    let (digits, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = digits.parse().map_err(|_| format!("`{text}`: expected a duration like 90s, 20m or 1h"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        other => return Err(format!("`{text}`: unknown unit `{other}` (use s, m or h)")),
    };
    Ok((secs > 0).then(|| std::time::Duration::from_secs(secs)))
}

/// The value `wheel` of the postgres axis.
pub const PG_WHEEL: &str = "wheel";

pub(crate) fn invalid(
    file: &Path,
    line: Option<u64>,
    field: impl Into<String>,
    message: impl Into<String>,
) -> HarnessError {
    HarnessError::Input(InputError::new(file, line, field, message).to_string())
}

/// serde-saphyr's error as `file:line: field: message`.
pub(crate) fn yaml_error(file: &Path, err: &serde_saphyr::Error) -> HarnessError {
    let line = err.location().map(|l| l.line()).filter(|l| *l > 0);
    let rendered = err.to_string();
    let first = rendered.lines().find(|l| !l.trim().is_empty()).unwrap_or("invalid YAML").trim();
    let message = match first.strip_prefix("error: ").and_then(|m| m.split_once(": ")) {
        Some((loc, rest)) if loc.starts_with("line ") => rest.to_string(),
        _ => first.to_string(),
    };
    let mut field = "(document)".to_string();
    for marker in ["unknown field `", "missing field `", "unknown variant `", "duplicate field `"] {
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
pub(crate) fn sanitize(s: &str) -> String {
    let out: String = s.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '-' }).collect();
    out.trim_matches('-').to_string()
}

pub(crate) fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// `/usr/lib/postgresql/15/bin/pg_config` → `pg15`; `/opt/pg18/bin/pg_config` → `pg18`.
pub(crate) fn pg_name(path: &str) -> String {
    let p = Path::new(path);
    let mut dir = p.parent().unwrap_or(Path::new(""));
    if dir.file_name().map(|n| n == "bin").unwrap_or(false) {
        dir = dir.parent().unwrap_or(Path::new(""));
    }
    let base = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "pg".into());
    let base = sanitize(&base);
    if base.chars().all(|c| c.is_ascii_digit() || c == '.') {
        format!("pg{base}")
    } else {
        base
    }
}

/// `kind-1.33.yaml` → `k8s-1.33`.
pub(crate) fn k8s_name(path: &str) -> String {
    let stem = Path::new(path).file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let stem = stem.strip_prefix("kind-").unwrap_or(&stem);
    format!("k8s-{}", sanitize(stem))
}

pub(crate) fn set_name(path: &str) -> String {
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

pub(crate) fn absolute(base: &Path, p: &str) -> PathBuf {
    let joined = base.join(p);
    joined.canonicalize().unwrap_or(joined)
}
