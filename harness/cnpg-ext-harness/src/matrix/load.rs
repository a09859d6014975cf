//! A matrix file read and checked, axis by axis, then expanded into its cells; every error
//! names the file, the line and the field (exit 2).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cnpg_ext_model::CnpgVersion;
use serde_saphyr::{Location, Spanned};

use super::file::{
    absolute, invalid, k8s_name, parse_duration, pg_name, set_name, valid_name, yaml_error, ExcludeFile, ImagesEntry,
    K8sEntry, Matrix, MatrixFile, PgEntry, ScenarioEntry, PG_WHEEL,
};
use crate::error::HarnessError;
use crate::reports::matrix::{CellSpec, ImageAxis, Named, ScenarioSet};
use crate::run::substitute::{parse_source, Source};

/// The file being read: where errors point, and the directory its paths are relative to.
struct At<'a> {
    file: &'a Path,
    base: PathBuf,
}

impl At<'_> {
    /// An invalid-input error at `loc` (no line when the location is unknown).
    fn err(&self, loc: &Location, field: impl Into<String>, message: impl Into<String>) -> HarnessError {
        invalid(self.file, Some(loc.line()).filter(|l| *l > 0), field, message)
    }

    /// An invalid-input error about the file as a whole.
    fn whole(&self, field: &str, message: &str) -> HarnessError {
        invalid(self.file, None, field, message)
    }
}

/// Every value of every axis, checked.
struct Axes {
    backends: Vec<String>,
    postgres: Vec<Named>,
    cnpg: Vec<(String, CnpgVersion)>,
    kubernetes: Vec<Named>,
    sets: Vec<ScenarioSet>,
    images: Vec<ImageAxis>,
}

impl Matrix {
    /// Reads and checks a matrix file; every scenario set is loaded (and so validated) for
    /// every modelled CNPG release. Errors name the file, the line and the field (exit 2).
    pub fn load(file: &Path) -> Result<Matrix, HarnessError> {
        let text =
            std::fs::read_to_string(file).map_err(|e| invalid(file, None, "(file)", format!("cannot read: {e}")))?;
        let parsed: MatrixFile = serde_saphyr::from_str(&text).map_err(|e| yaml_error(file, &e))?;
        let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let at = At { file, base: if base.as_os_str().is_empty() { PathBuf::from(".") } else { base } };
        let cell_timeout = match &parsed.cell_timeout {
            Some(t) => parse_duration(&t.value).map_err(|e| at.err(&t.referenced, "cell_timeout", e))?,
            None => None,
        };
        let jobs_per_cell = parsed.jobs_per_cell.unwrap_or(1);
        if jobs_per_cell == 0 {
            return Err(at.whole("jobs_per_cell", "must be at least 1"));
        }
        let a = &parsed.axes;
        let backends = backends(&at, &a.backend)?;
        let cnpg = cnpg(&at, &a.cnpg)?;
        let axes = Axes {
            postgres: postgres(&at, &a.postgres)?,
            kubernetes: kubernetes(&at, &a.kubernetes, backends.iter().any(|b| b == "kind"))?,
            sets: scenario_sets(&at, &a.scenarios, &cnpg)?,
            images: image_axis(&at, &a.images)?,
            backends,
            cnpg,
        };
        let excludes = exclusions(&at, &parsed.exclude, &axes)?;
        let cells = cells(&axes, &excludes);
        if cells.is_empty() {
            return Err(at.whole("exclude", "every cell is excluded"));
        }
        Ok(Matrix { file: file.to_path_buf(), description: parsed.description, jobs_per_cell, cell_timeout, cells })
    }
}

/// `axes.backend`: at least one of local, container, kind, none twice.
fn backends(at: &At, entries: &[Spanned<String>]) -> Result<Vec<String>, HarnessError> {
    if entries.is_empty() {
        return Err(at.whole("axes.backend", "give at least one backend (local, container, kind)"));
    }
    let mut backends = Vec::new();
    for (i, b) in entries.iter().enumerate() {
        let v = b.value.trim();
        if !["local", "container", "kind"].contains(&v) {
            return Err(at.err(
                &b.referenced,
                format!("axes.backend[{i}]"),
                format!("`{v}`: expected local, container or kind"),
            ));
        }
        if backends.contains(&v.to_string()) {
            return Err(at.err(&b.referenced, format!("axes.backend[{i}]"), format!("`{v}` is listed twice")));
        }
        backends.push(v.to_string());
    }
    Ok(backends)
}

/// `axes.postgres`: `wheel` or a `pg_config` that exists, under unique names; default `wheel`.
fn postgres(at: &At, entries: &[Spanned<PgEntry>]) -> Result<Vec<Named>, HarnessError> {
    let mut postgres: Vec<Named> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let field = format!("axes.postgres[{i}]");
        let (name, value) = match &e.value {
            PgEntry::Plain(v) if v == PG_WHEEL => (PG_WHEEL.to_string(), PG_WHEEL.to_string()),
            PgEntry::Plain(v) => (pg_name(v), v.clone()),
            PgEntry::Named(n) => (n.name.clone(), n.pg_config.clone()),
        };
        let value = if value == PG_WHEEL {
            value
        } else {
            let p = absolute(&at.base, &value);
            if !p.is_file() {
                return Err(at.err(
                    &e.referenced,
                    field,
                    format!("{} is not a file (a pg_config, or `wheel`)", p.display()),
                ));
            }
            p.display().to_string()
        };
        if !valid_name(&name) {
            return Err(at.err(
                &e.referenced,
                format!("{field}.name"),
                format!("`{name}`: use letters, digits, `.`, `_` and `-`"),
            ));
        }
        if postgres.iter().any(|p| p.name == name) {
            return Err(at.err(
                &e.referenced,
                field,
                format!("the name `{name}` is used twice; give this entry `{{name: ..., pg_config: ...}}`"),
            ));
        }
        postgres.push(Named { name, value });
    }
    if postgres.is_empty() {
        postgres.push(Named { name: PG_WHEEL.into(), value: PG_WHEEL.into() });
    }
    Ok(postgres)
}

/// `axes.cnpg`: releases the harness models, none twice; default the harness's default.
fn cnpg(at: &At, entries: &[Spanned<String>]) -> Result<Vec<(String, CnpgVersion)>, HarnessError> {
    let mut cnpg: Vec<(String, CnpgVersion)> = Vec::new();
    for (i, c) in entries.iter().enumerate() {
        let v: CnpgVersion = c
            .value
            .trim()
            .parse()
            .map_err(|e: String| at.err(&c.referenced, format!("axes.cnpg[{i}]"), format!("`{}`: {e}", c.value)))?;
        if cnpg.iter().any(|(_, x)| *x == v) {
            return Err(at.err(&c.referenced, format!("axes.cnpg[{i}]"), format!("`{v}` is listed twice")));
        }
        cnpg.push((v.to_string(), v));
    }
    if cnpg.is_empty() {
        cnpg.push((CnpgVersion::DEFAULT.to_string(), CnpgVersion::DEFAULT));
    }
    Ok(cnpg)
}

/// `axes.kubernetes` (kind cells only): kind configs that exist, under unique names; with a
/// kind backend and none given, the repository's newest kind config.
fn kubernetes(at: &At, entries: &[Spanned<K8sEntry>], kind: bool) -> Result<Vec<Named>, HarnessError> {
    let mut kubernetes: Vec<Named> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let field = format!("axes.kubernetes[{i}]");
        let (name, value) = match &e.value {
            K8sEntry::Plain(v) => (k8s_name(v), v.clone()),
            K8sEntry::Named(n) => (n.name.clone(), n.kind_config.clone()),
        };
        let p = absolute(&at.base, &value);
        if !p.is_file() {
            return Err(at.err(&e.referenced, field, format!("{} is not a file (a kind config)", p.display())));
        }
        if !valid_name(&name) || kubernetes.iter().any(|k| k.name == name) {
            return Err(at.err(
                &e.referenced,
                field,
                format!("`{name}`: names must be unique letters, digits, `.`, `_`, `-`"),
            ));
        }
        kubernetes.push(Named { name, value: p.display().to_string() });
    }
    if kind && kubernetes.is_empty() {
        let dflt = at.base.join("../kind-config/kind-1.36.yaml");
        kubernetes
            .push(Named { name: "k8s-1.36".into(), value: dflt.canonicalize().unwrap_or(dflt).display().to_string() });
    }
    Ok(kubernetes)
}

/// `axes.scenarios`: paths that exist, each set valid for every modelled release, unique names.
fn scenario_sets(
    at: &At,
    entries: &[Spanned<ScenarioEntry>],
    cnpg: &[(String, CnpgVersion)],
) -> Result<Vec<ScenarioSet>, HarnessError> {
    if entries.is_empty() {
        return Err(at.whole("axes.scenarios", "give at least one scenario path or set"));
    }
    let mut sets: Vec<ScenarioSet> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let field = format!("axes.scenarios[{i}]");
        let (name, paths) = match &e.value {
            ScenarioEntry::Plain(p) => (set_name(p), vec![p.clone()]),
            ScenarioEntry::Named(n) => (n.name.clone(), n.paths.clone()),
        };
        if paths.is_empty() {
            return Err(at.err(&e.referenced, format!("{field}.paths"), "give at least one path"));
        }
        let mut abs = Vec::new();
        for (j, p) in paths.iter().enumerate() {
            let a = absolute(&at.base, p);
            if !a.exists() {
                let f = if matches!(e.value, ScenarioEntry::Named(_)) {
                    format!("{field}.paths[{j}]")
                } else {
                    field.clone()
                };
                return Err(at.err(&e.referenced, f, format!("{} does not exist", a.display())));
            }
            abs.push(a);
        }
        for (_, v) in cnpg {
            crate::run::app::load_scenarios(&abs, *v).map_err(|err| {
                at.err(&e.referenced, field.clone(), format!("scenario set `{name}` (CNPG {v}) is invalid: {err}"))
            })?;
        }
        if !valid_name(&name) || sets.iter().any(|s| s.name == name) {
            return Err(at.err(
                &e.referenced,
                field,
                format!("the set name `{name}` is invalid or used twice; give `{{name: ..., paths: [...]}}`"),
            ));
        }
        sets.push(ScenarioSet { name, paths: abs.iter().map(|p| p.display().to_string()).collect() });
    }
    Ok(sets)
}

/// `axes.images`: unique names; substitution sources that are files resolved against the
/// matrix file's directory, like every other path in it.
fn image_axis(at: &At, entries: &[Spanned<ImagesEntry>]) -> Result<Vec<ImageAxis>, HarnessError> {
    let mut images: Vec<ImageAxis> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let field = format!("axes.images[{i}]");
        let v = &e.value;
        if !valid_name(&v.name) || images.iter().any(|x| x.name == v.name) {
            return Err(at.err(
                &e.referenced,
                format!("{field}.name"),
                format!("`{}`: names must be unique letters, digits, `.`, `_`, `-`", v.name),
            ));
        }
        let mut substitute = BTreeMap::new();
        for (r, src) in &v.substitute {
            let src = match parse_source(src) {
                Source::Fixture(p) | Source::Oci(p) => {
                    let a = absolute(&at.base, &p.to_string_lossy());
                    if !a.exists() {
                        return Err(at.err(
                            &e.referenced,
                            format!("{field}.substitute.{r}"),
                            format!("{} does not exist", a.display()),
                        ));
                    }
                    let prefix = if src.starts_with("fixture:") { "fixture:" } else { "oci:" };
                    format!("{prefix}{}", a.display())
                }
                Source::Pull(reference) => reference,
            };
            substitute.insert(r.clone(), src);
        }
        images.push(ImageAxis { name: v.name.clone(), substitute });
    }
    Ok(images)
}

/// `exclude`: each names values that exist on its axes, and at least one axis.
fn exclusions<'a>(
    at: &At,
    entries: &'a [Spanned<ExcludeFile>],
    axes: &Axes,
) -> Result<Vec<&'a ExcludeFile>, HarnessError> {
    let names = |v: &[Named]| v.iter().map(|n| n.name.clone()).collect::<Vec<_>>();
    let mut excludes = Vec::new();
    for (i, x) in entries.iter().enumerate() {
        let check = |axis: &str, v: &Option<String>, names: Vec<String>| -> Result<(), HarnessError> {
            match v {
                Some(v) if !names.contains(v) => Err(at.err(
                    &x.referenced,
                    format!("exclude[{i}].{axis}"),
                    format!("`{v}` is not a value of axes.{axis} (values: {})", names.join(", ")),
                )),
                _ => Ok(()),
            }
        };
        let e = &x.value;
        check("backend", &e.backend, axes.backends.clone())?;
        check("postgres", &e.postgres, names(&axes.postgres))?;
        check("cnpg", &e.cnpg, axes.cnpg.iter().map(|c| c.0.clone()).collect())?;
        check("kubernetes", &e.kubernetes, names(&axes.kubernetes))?;
        check("scenarios", &e.scenarios, axes.sets.iter().map(|s| s.name.clone()).collect())?;
        check("images", &e.images, axes.images.iter().map(|s| s.name.clone()).collect())?;
        if e.images.is_none()
            && e.backend.is_none()
            && e.postgres.is_none()
            && e.cnpg.is_none()
            && e.kubernetes.is_none()
            && e.scenarios.is_none()
        {
            return Err(at.err(&x.referenced, format!("exclude[{i}]"), "an empty exclusion would exclude every cell"));
        }
        excludes.push(e);
    }
    Ok(excludes)
}

/// The product of the axes (Kubernetes for kind cells only), less the excluded cells; a cell's
/// id joins its values' names.
fn cells(axes: &Axes, excludes: &[&ExcludeFile]) -> Vec<CellSpec> {
    let mut cells = Vec::new();
    let image_values: Vec<Option<&ImageAxis>> =
        if axes.images.is_empty() { vec![None] } else { axes.images.iter().map(Some).collect() };
    for b in &axes.backends {
        let k8s: Vec<Option<&Named>> =
            if b == "kind" { axes.kubernetes.iter().map(Some).collect() } else { vec![None] };
        for pg in &axes.postgres {
            for (c, _) in &axes.cnpg {
                for k in &k8s {
                    for img in &image_values {
                        for s in &axes.sets {
                            let excluded = excludes.iter().any(|x| {
                                x.backend.as_ref().is_none_or(|v| v == b)
                                    && x.postgres.as_ref().is_none_or(|v| *v == pg.name)
                                    && x.cnpg.as_ref().is_none_or(|v| v == c)
                                    && x.kubernetes.as_ref().is_none_or(|v| k.map(|k| &k.name) == Some(v))
                                    && x.scenarios.as_ref().is_none_or(|v| *v == s.name)
                                    && x.images.as_ref().is_none_or(|v| img.map(|i| &i.name) == Some(v))
                            });
                            if !excluded {
                                cells.push(cell(b, pg, c, *k, *img, s));
                            }
                        }
                    }
                }
            }
        }
    }
    cells
}

/// One cell of the product.
fn cell(b: &str, pg: &Named, c: &str, k: Option<&Named>, img: Option<&ImageAxis>, s: &ScenarioSet) -> CellSpec {
    let mut parts = vec![b.to_string()];
    if let Some(k) = k {
        parts.push(k.name.clone());
    }
    parts.extend([pg.name.clone(), format!("cnpg-{c}")]);
    if let Some(i) = img {
        parts.push(format!("img-{}", i.name));
    }
    parts.push(s.name.clone());
    CellSpec {
        id: parts.join("_"),
        backend: b.to_string(),
        postgres: pg.clone(),
        cnpg: c.to_string(),
        kubernetes: k.cloned(),
        image: img.cloned(),
        scenarios: s.clone(),
    }
}
