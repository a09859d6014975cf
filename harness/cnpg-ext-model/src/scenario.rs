//! The scenario format: `scenarios/<id>/scenario.yaml` plus plain CNPG manifests.
//!
//! ```yaml
//! description: pgvector from an image volume
//! images:
//!   - reference: ghcr.io/cloudnative-pg/pgvector:0.8.6-18-trixie
//!     fixture: ../../fixtures/pgvector        # or `oci: path/to/layout-or-archive`
//!   - reference: 127.0.0.1:5000/ext/cube:1    # alone: pulled from its registry
//! steps:
//!   - apply: {file: cluster.yaml}
//!   - verify: {}
//!   - sql: {query: "CREATE EXTENSION vector"}
//!   - sql: {query: "SELECT '[1,2,3]'::vector <-> '[4,5,6]'", rows: [["5.196152422706632"]]}
//! ```
//! Scenario files are strict: an unknown field or step is an error with its line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cluster::{CatalogDoc, ClusterDoc, Manifest};
use crate::error::InputError;
use crate::version::CnpgVersion;
use crate::yaml;

pub const SCENARIO_FILE: &str = "scenario.yaml";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    images: Vec<ImageEntry>,
    steps: Vec<Step>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImageEntry {
    reference: String,
    #[serde(default)]
    fixture: Option<String>,
    #[serde(default)]
    oci: Option<String>,
}

// Shadow documents that keep the line of every step and image entry.
#[derive(Deserialize)]
struct Lines {
    #[serde(default)]
    images: Vec<serde_saphyr::Spanned<serde::de::IgnoredAny>>,
    #[serde(default)]
    steps: Vec<serde_saphyr::Spanned<serde::de::IgnoredAny>>,
}

/// One step. Exactly one action per list item, Chainsaw style.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// `kubectl apply -f`: the first apply of a Cluster creates it, later ones update it.
    Apply(ApplyStep),
    /// Run SQL on one or more instances, optionally checking rows or an error.
    Sql(SqlStep),
    /// `kubectl cnpg restart`: a rolling restart of every instance.
    Restart(RestartStep),
    /// On every instance: GUCs, `LD_LIBRARY_PATH` and mounted files equal the derived plan.
    Verify(VerifyStep),
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyStep {
    pub file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What the operator should do to running instances. Default: `expected` when the pod
    /// spec changes (image volumes), `none` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// The apply must fail with an error containing this text (e.g. an instance that cannot
    /// start: the postmaster's own log line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the reconciliation of the file's `Database` must report (default: applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<DatabaseExpect>,
}

/// The status a `Database` reconciliation must end in: `applied: true`, or `applied: false`
/// with a `message` containing the given text (the operator's `status.message`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseExpect {
    pub applied: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rollout {
    Expected,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    #[default]
    Primary,
    Replicas,
    All,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SqlStep {
    pub query: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default = "default_database")]
    pub database: String,
    #[serde(default = "default_user")]
    pub user: String,
    #[serde(default)]
    pub on: Target,
    /// Expected rows, every value as PostgreSQL's text output; `null` is SQL NULL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<Vec<Vec<Option<String>>>>,
    /// The statement must fail with an error containing this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Proof of origin of the extensions this step creates (checked by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<OriginSpec>,
}

/// How a step's proof of origin is treated; the default is "must be proven".
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OriginSpec {
    /// Do not check; the reason is shown in the report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip: Option<String>,
    /// The origin check must fail with a message containing this text (e.g. `shadowed`):
    /// the step then passes and shows the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_failure: Option<String>,
}

fn default_database() -> String {
    "app".into()
}
fn default_user() -> String {
    "postgres".into()
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RestartStep {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyStep {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Step {
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Apply(_) => "apply",
            Step::Sql(_) => "sql",
            Step::Restart(_) => "restart",
            Step::Verify(_) => "verify",
        }
    }

    /// The user's name for the step, or a short description.
    pub fn title(&self) -> String {
        let named = match self {
            Step::Apply(s) => s.name.clone(),
            Step::Sql(s) => s.name.clone(),
            Step::Restart(s) => s.name.clone(),
            Step::Verify(s) => s.name.clone(),
        };
        named.unwrap_or_else(|| match self {
            Step::Apply(s) => format!("apply {}", s.file),
            Step::Sql(s) => {
                let q: String = s.query.split_whitespace().collect::<Vec<_>>().join(" ");
                if q.chars().count() > 60 {
                    format!("sql {}…", q.chars().take(60).collect::<String>())
                } else {
                    format!("sql {q}")
                }
            }
            Step::Restart(_) => "restart".into(),
            Step::Verify(_) => "verify plan on every instance".into(),
        })
    }
}

/// Where an extension image comes from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageOrigin {
    /// Built at test time from a recipe directory (`fixtures/<name>`).
    Fixture(PathBuf),
    /// An OCI layout directory, OCI archive or docker archive.
    Oci(PathBuf),
    /// Pulled from the registry the reference names (`images:` entry with only `reference`).
    Pull,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageSpec {
    pub reference: String,
    pub origin: ImageOrigin,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LocatedStep {
    /// 1-based position in `steps`.
    pub index: usize,
    pub line: u64,
    pub step: Step,
}

/// A loaded, validated scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub id: String,
    pub dir: PathBuf,
    pub file: PathBuf,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub images: Vec<ImageSpec>,
    pub steps: Vec<LocatedStep>,
    /// Every manifest file named by an `apply` step, by the name used in the step. The typed
    /// Cluster of each holds the extension list the operator resolves (image catalogs
    /// applied); `raw` stays as written.
    pub manifests: BTreeMap<String, Vec<Manifest>>,
    /// What the modelled release accepts but ignores (1.29 fields against 1.28, …): the
    /// scenario cannot pass there, and the runner reports it instead of running it.
    pub unsupported: Vec<InputError>,
}

impl Scenario {
    /// Loads `path` (a scenario directory or its `scenario.yaml`), its manifests, and checks
    /// them as the operator release `cnpg` would.
    pub fn load(path: &Path, cnpg: CnpgVersion) -> Result<Scenario, InputError> {
        let file = if path.is_dir() { path.join(SCENARIO_FILE) } else { path.to_path_buf() };
        let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let text = yaml::read(&file)?;
        let parsed: ScenarioFile = yaml::parse(&file, &text)?;
        let lines: Lines = yaml::parse(&file, &text)?;
        let line_of = |v: &[serde_saphyr::Spanned<serde::de::IgnoredAny>], i: usize| {
            v.get(i).map(|s| s.referenced.line()).unwrap_or(1)
        };
        let id = match parsed.id {
            Some(id) => id,
            None => dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "scenario".into()),
        };
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(InputError::new(&file, None, "id", format!("`{id}`: use letters, digits, `-` and `_`")));
        }
        if parsed.steps.is_empty() {
            return Err(InputError::new(&file, None, "steps", "a scenario needs at least one step"));
        }

        let mut images = Vec::new();
        let mut refs = BTreeSet::new();
        for (i, e) in parsed.images.iter().enumerate() {
            let line = Some(line_of(&lines.images, i));
            let field = |f: &str| format!("images[{i}].{f}");
            if !refs.insert(e.reference.clone()) {
                return Err(InputError::new(
                    &file,
                    line,
                    field("reference"),
                    format!("`{}` is listed twice", e.reference),
                ));
            }
            let origin = match (&e.fixture, &e.oci) {
                (Some(f), None) => ImageOrigin::Fixture(dir.join(f)),
                (None, Some(o)) => ImageOrigin::Oci(dir.join(o)),
                (None, None) => {
                    // Pulled: the registry must be explicit, so that a typo is never sent
                    // to Docker Hub.
                    if let Err(reason) = check_pull_reference(&e.reference) {
                        return Err(InputError::new(&file, line, field("reference"), reason));
                    }
                    images.push(ImageSpec { reference: e.reference.clone(), origin: ImageOrigin::Pull });
                    continue;
                }
                (Some(_), Some(_)) => {
                    return Err(InputError::new(
                        &file,
                        line,
                        field("fixture"),
                        "give at most one of `fixture` (a recipe directory) or `oci` (a layout or archive); neither pulls `reference` from its registry",
                    ))
                }
            };
            let path = match &origin {
                ImageOrigin::Fixture(p) | ImageOrigin::Oci(p) => p,
                ImageOrigin::Pull => unreachable!("pulled entries are pushed above"),
            };
            if !path.exists() {
                let which = if matches!(origin, ImageOrigin::Fixture(_)) { "fixture" } else { "oci" };
                return Err(InputError::new(&file, line, field(which), format!("{} does not exist", path.display())));
            }
            // One image may be named from several scenarios: compare sources by real path.
            let origin = match origin {
                ImageOrigin::Fixture(p) => ImageOrigin::Fixture(p.canonicalize().unwrap_or(p)),
                ImageOrigin::Oci(p) => ImageOrigin::Oci(p.canonicalize().unwrap_or(p)),
                ImageOrigin::Pull => ImageOrigin::Pull,
            };
            images.push(ImageSpec { reference: e.reference.clone(), origin });
        }

        let mut steps = Vec::new();
        let mut manifests: BTreeMap<String, Vec<Manifest>> = BTreeMap::new();
        for (i, step) in parsed.steps.into_iter().enumerate() {
            let line = line_of(&lines.steps, i);
            match &step {
                Step::Apply(a) => {
                    if !manifests.contains_key(&a.file) {
                        let mpath = dir.join(&a.file);
                        if !mpath.is_file() {
                            return Err(InputError::new(
                                &file,
                                Some(line),
                                format!("steps[{i}].apply.file"),
                                format!("{} does not exist", mpath.display()),
                            ));
                        }
                        let docs = Manifest::load_file(&mpath)?;
                        for d in &docs {
                            // A Cluster relying on catalog extensions against a release that
                            // ignores them is reported as unsupported, not as invalid input.
                            if let Manifest::Cluster(c) = d {
                                if !relies_on_ignored_catalog(c, cnpg) {
                                    c.validate(cnpg)?;
                                }
                            }
                        }
                        let known = |d: &Manifest| {
                            matches!(d, Manifest::Cluster(_) | Manifest::Database(_) | Manifest::Catalog(_))
                        };
                        if !docs.iter().any(known) {
                            return Err(InputError::new(
                                &mpath,
                                None,
                                "kind",
                                "no postgresql.cnpg.io/v1 Cluster, Database or image catalog in this file",
                            ));
                        }
                        manifests.insert(a.file.clone(), docs);
                    }
                    let has_database = manifests[&a.file].iter().any(|d| matches!(d, Manifest::Database(_)));
                    if a.expect.is_some() && !has_database {
                        return Err(InputError::new(
                            &file,
                            Some(line),
                            format!("steps[{i}].apply.expect"),
                            format!("`expect` judges a Database reconciliation, and {} has no Database", a.file),
                        ));
                    }
                    if let Some(e) = &a.expect {
                        if e.applied == e.message.is_some() {
                            return Err(InputError::new(
                                &file,
                                Some(line),
                                format!("steps[{i}].apply.expect"),
                                "`applied: true` takes no message; `applied: false` needs the `message` text to find",
                            ));
                        }
                    }
                    if a.error.is_some() && a.rollout == Some(Rollout::None) {
                        return Err(InputError::new(
                            &file,
                            Some(line),
                            format!("steps[{i}].apply"),
                            "an apply expected to fail (`error`) cannot also expect `rollout: none`",
                        ));
                    }
                }
                Step::Sql(s) => {
                    if s.rows.is_some() && s.error.is_some() {
                        return Err(InputError::new(
                            &file,
                            Some(line),
                            format!("steps[{i}].sql"),
                            "expect either `rows` or `error`, not both",
                        ));
                    }
                    if let Some(o) = &s.origin {
                        let reason = |v: &Option<String>| v.as_deref().is_some_and(|t| !t.trim().is_empty());
                        if reason(&o.skip) == reason(&o.expect_failure) {
                            return Err(InputError::new(
                                &file,
                                Some(line),
                                format!("steps[{i}].sql.origin"),
                                "give exactly one of `skip: <reason>` or `expect_failure: <text>` (non-empty)",
                            ));
                        }
                    }
                }
                Step::Restart(_) | Step::Verify(_) => {}
            }
            steps.push(LocatedStep { index: i + 1, line, step });
        }
        let unsupported = resolve_clusters(&mut manifests, &refs, cnpg)?;
        if !matches!(steps[0].step, Step::Apply(_)) {
            return Err(InputError::new(
                &file,
                Some(steps[0].line),
                "steps[0]",
                "the first step must `apply` a Cluster",
            ));
        }
        Ok(Scenario {
            id,
            dir,
            file,
            description: parsed.description,
            tags: parsed.tags,
            images,
            steps,
            manifests,
            unsupported,
        })
    }

    /// Every Cluster document the scenario applies, in step order.
    pub fn clusters(&self) -> impl Iterator<Item = &ClusterDoc> {
        self.manifests.values().flatten().filter_map(|m| match m {
            Manifest::Cluster(c) => Some(c),
            _ => None,
        })
    }
}

/// Resolves every Cluster's extensions against the image catalogs the scenario applies,
/// checks their images are listed, and collects what the release ignores.
fn resolve_clusters(
    manifests: &mut BTreeMap<String, Vec<Manifest>>,
    refs: &BTreeSet<String>,
    cnpg: CnpgVersion,
) -> Result<Vec<InputError>, InputError> {
    let catalogs: Vec<CatalogDoc> = manifests
        .values()
        .flatten()
        .filter_map(|m| match m {
            Manifest::Catalog(c) => Some(c.clone()),
            _ => None,
        })
        .collect();
    let catalog_refs: Vec<&CatalogDoc> = catalogs.iter().collect();
    let mut unsupported = Vec::new();
    for doc in manifests.values_mut().flatten() {
        let Manifest::Cluster(c) = doc else { continue };
        unsupported.extend(c.ignored(cnpg));
        if relies_on_ignored_catalog(c, cnpg) {
            unsupported.push(InputError::new(
                &c.file,
                Some(c.line),
                "spec.postgresql.extensions",
                format!(
                    "extensions declared in image catalogs are ignored by CloudNativePG {cnpg} (an entry naming no image is refused there); they need 1.29.0 or later"
                ),
            ));
            continue;
        }
        let resolved = c.resolve_extensions(&catalog_refs, cnpg)?;
        c.cluster.spec.postgresql.extensions = resolved;
        check_images_listed(c, refs)?;
    }
    Ok(unsupported)
}

/// An extension entry without an image, in a Cluster with an image catalog, against a release
/// that does not resolve extensions from catalogs.
fn relies_on_ignored_catalog(c: &ClusterDoc, cnpg: CnpgVersion) -> bool {
    !cnpg.applies_extension_env()
        && c.cluster.spec.image_catalog_ref.is_some()
        && c.cluster.spec.postgresql.extensions.iter().any(|e| e.image.reference.trim().is_empty())
}

/// Image references in a Cluster must come from the scenario's `images`.
fn check_images_listed(c: &ClusterDoc, refs: &BTreeSet<String>) -> Result<(), InputError> {
    for (i, e) in c.cluster.spec.postgresql.extensions.iter().enumerate() {
        if !refs.contains(&e.image.reference) {
            return Err(InputError::new(
                &c.file,
                c.extension_lines.get(i).copied(),
                format!("spec.postgresql.extensions[{i}].image.reference"),
                format!(
                    "`{}` is not among the scenario's `images`; add it there with a `fixture` or `oci` source, or alone to pull it",
                    e.image.reference
                ),
            ));
        }
    }
    Ok(())
}

/// A reference-only (pulled) image: `HOST[:PORT]/REPOSITORY[:TAG][@sha256:HEX]` with an
/// explicit registry host. The registry client parses it fully when pulling.
fn check_pull_reference(r: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "`{r}` is pulled (no `fixture` or `oci`) but {why}; write HOST[:PORT]/REPOSITORY[:TAG][@sha256:DIGEST], e.g. ghcr.io/org/pgvector:0.8.1-18-trixie"
        ))
    };
    let Some((host, rest)) = r.split_once('/') else { return bad("has no registry host") };
    if !(host.contains('.') || host.contains(':') || host == "localhost") {
        return bad("has no registry host (its first part has no `.` or `:`)");
    }
    let name = rest.split('@').next().unwrap_or(rest);
    let repo = match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => {
            if tag.is_empty() || tag.len() > 128 || !tag.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            {
                return bad("has an invalid tag");
            }
            repo
        }
        _ => name,
    };
    if repo.is_empty()
        || !repo.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c))
        || repo.split('/').any(str::is_empty)
    {
        return bad("has an invalid repository (lowercase letters, digits, `.`, `_`, `-`, `/`)");
    }
    if let Some((_, digest)) = r.split_once('@') {
        let hex = digest.strip_prefix("sha256:").unwrap_or("");
        if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)) {
            return bad("has a digest that is not sha256:<64 lowercase hex>");
        }
    }
    Ok(())
}

/// Finds scenario files under `paths`: a `scenario.yaml`, a directory holding one, or a
/// directory whose subdirectories hold them. Sorted, without duplicates.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>, InputError> {
    let mut found = BTreeSet::new();
    for p in paths {
        if p.is_file() {
            found.insert(p.clone());
        } else if p.join(SCENARIO_FILE).is_file() {
            found.insert(p.join(SCENARIO_FILE));
        } else if p.is_dir() {
            let entries = std::fs::read_dir(p)
                .map_err(|e| InputError::new(p, None, "(path)", format!("cannot read directory: {e}")))?;
            let before = found.len();
            for entry in entries.flatten() {
                let candidate = entry.path().join(SCENARIO_FILE);
                if candidate.is_file() {
                    found.insert(candidate);
                }
            }
            if found.len() == before {
                return Err(InputError::new(p, None, "(path)", "no scenario.yaml here or in its subdirectories"));
            }
        } else {
            return Err(InputError::new(p, None, "(path)", "no such scenario file or directory"));
        }
    }
    Ok(found.into_iter().collect())
}
