//! The matrix file: axes, exclusions, cells; strict parsing with file:line errors.

use std::path::{Component, Path, PathBuf};

use cnpg_ext_model::{CnpgVersion, InputError};
use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::error::HarnessError;
use crate::reports::matrix::{CellSpec, ImageAxis, Named, ScenarioSet};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MatrixFile {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    jobs_per_cell: Option<usize>,
    /// Default of `--cell-timeout`: `90s`, `20m`, `1h`, or seconds.
    #[serde(default)]
    cell_timeout: Option<Spanned<String>>,
    axes: AxesFile,
    #[serde(default)]
    exclude: Vec<Spanned<ExcludeFile>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AxesFile {
    backend: Vec<Spanned<String>>,
    #[serde(default)]
    postgres: Vec<Spanned<PgEntry>>,
    #[serde(default)]
    cnpg: Vec<Spanned<String>>,
    #[serde(default)]
    kubernetes: Vec<Spanned<K8sEntry>>,
    scenarios: Vec<Spanned<ScenarioEntry>>,
    /// Image substitutions per cell: `{name, substitute: {REF: SOURCE}}` (no `substitute`:
    /// the scenarios' own images).
    #[serde(default)]
    images: Vec<Spanned<ImagesEntry>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ImagesEntry {
    name: String,
    #[serde(default)]
    substitute: std::collections::BTreeMap<String, String>,
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
    name: String,
    pg_config: String,
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
    name: String,
    kind_config: String,
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
    name: String,
    paths: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExcludeFile {
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
    #[serde(default)]
    images: Option<String>,
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

impl Matrix {
    /// Reads and checks a matrix file; every scenario set is loaded (and so validated) for
    /// every modelled CNPG release. Errors name the file, the line and the field (exit 2).
    pub fn load(file: &Path) -> Result<Matrix, HarnessError> {
        let text =
            std::fs::read_to_string(file).map_err(|e| invalid(file, None, "(file)", format!("cannot read: {e}")))?;
        let parsed: MatrixFile = serde_saphyr::from_str(&text).map_err(|e| yaml_error(file, &e))?;
        let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = if base.as_os_str().is_empty() { PathBuf::from(".") } else { base };
        let line = |l: &serde_saphyr::Location| Some(l.line()).filter(|l| *l > 0);

        let cell_timeout = match &parsed.cell_timeout {
            Some(t) => parse_duration(&t.value).map_err(|e| invalid(file, line(&t.referenced), "cell_timeout", e))?,
            None => None,
        };
        let jobs_per_cell = parsed.jobs_per_cell.unwrap_or(1);
        if jobs_per_cell == 0 {
            return Err(invalid(file, None, "jobs_per_cell", "must be at least 1"));
        }

        // backend
        if parsed.axes.backend.is_empty() {
            return Err(invalid(file, None, "axes.backend", "give at least one backend (local, container, kind)"));
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
            postgres.push(Named { name: PG_WHEEL.into(), value: PG_WHEEL.into() });
        }

        // cnpg
        let mut cnpg: Vec<(String, CnpgVersion)> = Vec::new();
        for (i, c) in parsed.axes.cnpg.iter().enumerate() {
            let v: CnpgVersion = c.value.trim().parse().map_err(|e: String| {
                invalid(file, line(&c.referenced), format!("axes.cnpg[{i}]"), format!("`{}`: {e}", c.value))
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
            kubernetes.push(Named { name, value: p.display().to_string() });
        }
        if backends.iter().any(|b| b == "kind") && kubernetes.is_empty() {
            let dflt = base.join("../kind-config/kind-1.36.yaml");
            kubernetes.push(Named {
                name: "k8s-1.36".into(),
                value: dflt.canonicalize().unwrap_or(dflt).display().to_string(),
            });
        }

        // scenarios
        if parsed.axes.scenarios.is_empty() {
            return Err(invalid(file, None, "axes.scenarios", "give at least one scenario path or set"));
        }
        let mut sets: Vec<ScenarioSet> = Vec::new();
        for (i, e) in parsed.axes.scenarios.iter().enumerate() {
            let field = format!("axes.scenarios[{i}]");
            let (name, paths) = match &e.value {
                ScenarioEntry::Plain(p) => (set_name(p), vec![p.clone()]),
                ScenarioEntry::Named(n) => (n.name.clone(), n.paths.clone()),
            };
            if paths.is_empty() {
                return Err(invalid(file, line(&e.referenced), format!("{field}.paths"), "give at least one path"));
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
                    return Err(invalid(file, line(&e.referenced), f, format!("{} does not exist", a.display())));
                }
                abs.push(a);
            }
            for (_, v) in &cnpg {
                crate::run::app::load_scenarios(&abs, *v).map_err(|err| {
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
            sets.push(ScenarioSet { name, paths: abs.iter().map(|p| p.display().to_string()).collect() });
        }

        // exclusions: by names that exist
        let mut images: Vec<ImageAxis> = Vec::new();
        for (i, e) in parsed.axes.images.iter().enumerate() {
            let field = format!("axes.images[{i}]");
            let v = &e.value;
            if !valid_name(&v.name) || images.iter().any(|x| x.name == v.name) {
                return Err(invalid(
                    file,
                    line(&e.referenced),
                    format!("{field}.name"),
                    format!("`{}`: names must be unique letters, digits, `.`, `_`, `-`", v.name),
                ));
            }
            let mut substitute = std::collections::BTreeMap::new();
            for (r, src) in &v.substitute {
                // Paths are relative to the matrix file, like every other path in it.
                let src = match crate::run::substitute::parse_source(src) {
                    crate::run::substitute::Source::Fixture(p) | crate::run::substitute::Source::Oci(p) => {
                        let a = absolute(&base, &p.to_string_lossy());
                        if !a.exists() {
                            return Err(invalid(
                                file,
                                line(&e.referenced),
                                format!("{field}.substitute.{r}"),
                                format!("{} does not exist", a.display()),
                            ));
                        }
                        let prefix = if src.starts_with("fixture:") { "fixture:" } else { "oci:" };
                        format!("{prefix}{}", a.display())
                    }
                    crate::run::substitute::Source::Pull(reference) => reference,
                };
                substitute.insert(r.clone(), src);
            }
            images.push(ImageAxis { name: v.name.clone(), substitute });
        }

        let mut excludes = Vec::new();
        for (i, x) in parsed.exclude.iter().enumerate() {
            let l = line(&x.referenced);
            let check = |axis: &str, v: &Option<String>, names: Vec<String>| -> Result<(), HarnessError> {
                match v {
                    Some(v) if !names.contains(v) => Err(invalid(
                        file,
                        l,
                        format!("exclude[{i}].{axis}"),
                        format!("`{v}` is not a value of axes.{axis} (values: {})", names.join(", ")),
                    )),
                    _ => Ok(()),
                }
            };
            let e = &x.value;
            check("backend", &e.backend, backends.clone())?;
            check("postgres", &e.postgres, postgres.iter().map(|p| p.name.clone()).collect())?;
            check("cnpg", &e.cnpg, cnpg.iter().map(|c| c.0.clone()).collect())?;
            check("kubernetes", &e.kubernetes, kubernetes.iter().map(|k| k.name.clone()).collect())?;
            check("scenarios", &e.scenarios, sets.iter().map(|s| s.name.clone()).collect())?;
            check("images", &e.images, images.iter().map(|s| s.name.clone()).collect())?;
            if e.images.is_none()
                && e.backend.is_none()
                && e.postgres.is_none()
                && e.cnpg.is_none()
                && e.kubernetes.is_none()
                && e.scenarios.is_none()
            {
                return Err(invalid(file, l, format!("exclude[{i}]"), "an empty exclusion would exclude every cell"));
            }
            excludes.push(e);
        }

        let mut cells = Vec::new();
        let image_values: Vec<Option<&ImageAxis>> =
            if images.is_empty() { vec![None] } else { images.iter().map(Some).collect() };
        for b in &backends {
            let k8s: Vec<Option<&Named>> = if b == "kind" { kubernetes.iter().map(Some).collect() } else { vec![None] };
            for pg in &postgres {
                for (c, _) in &cnpg {
                    for k in &k8s {
                        for img in &image_values {
                            for s in &sets {
                                let excluded = excludes.iter().any(|x| {
                                    x.backend.as_ref().is_none_or(|v| v == b)
                                        && x.postgres.as_ref().is_none_or(|v| *v == pg.name)
                                        && x.cnpg.as_ref().is_none_or(|v| v == c)
                                        && x.kubernetes.as_ref().is_none_or(|v| k.map(|k| &k.name) == Some(v))
                                        && x.scenarios.as_ref().is_none_or(|v| *v == s.name)
                                        && x.images.as_ref().is_none_or(|v| img.map(|i| &i.name) == Some(v))
                                });
                                if excluded {
                                    continue;
                                }
                                let mut parts = vec![b.clone()];
                                if let Some(k) = k {
                                    parts.push(k.name.clone());
                                }
                                parts.extend([pg.name.clone(), format!("cnpg-{c}")]);
                                if let Some(i) = img {
                                    parts.push(format!("img-{}", i.name));
                                }
                                parts.push(s.name.clone());
                                cells.push(CellSpec {
                                    id: parts.join("_"),
                                    backend: b.clone(),
                                    postgres: pg.clone(),
                                    cnpg: c.clone(),
                                    kubernetes: k.cloned(),
                                    image: img.cloned(),
                                    scenarios: s.clone(),
                                });
                            }
                        }
                    }
                }
            }
        }
        if cells.is_empty() {
            return Err(invalid(file, None, "exclude", "every cell is excluded"));
        }
        Ok(Matrix { file: file.to_path_buf(), description: parsed.description, jobs_per_cell, cell_timeout, cells })
    }
}
