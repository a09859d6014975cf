//! The subset of CloudNativePG's `postgresql.cnpg.io/v1` API that the harness reads.
//!
//! Manifests are parsed leniently (unknown fields are kept in the raw document and ignored
//! here, as `kubectl apply` would accept them) but typed where the harness uses them.
//! [`ClusterDoc::validate`] rejects what the operator's webhook rejects.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::InputError;
use crate::version::CnpgVersion;
use crate::yaml;

pub const API_VERSION: &str = "postgresql.cnpg.io/v1";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: ClusterSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    #[serde(default = "one")]
    pub instances: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_update_strategy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_update_method: Option<String>,
    #[serde(default)]
    pub postgresql: PostgresConfiguration,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostgresConfiguration {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
    /// CNPG keeps this field's snake_case name (`json:"shared_preload_libraries"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty", rename = "shared_preload_libraries")]
    pub shared_preload_libraries: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<ExtensionConfiguration>,
}

/// One entry of `spec.postgresql.extensions`. The three path lists keep CNPG's snake_case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExtensionConfiguration {
    pub name: String,
    pub image: ImageVolumeSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_control_path: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamic_library_path: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ld_library_path: Option<Vec<String>>,
}

impl ExtensionConfiguration {
    /// `extension_control_path` with CNPG's default (`share`).
    pub fn control_paths(&self) -> Vec<String> {
        self.extension_control_path.clone().unwrap_or_else(|| vec!["share".into()])
    }
    /// `dynamic_library_path` with CNPG's default (`lib`).
    pub fn library_paths(&self) -> Vec<String> {
        self.dynamic_library_path.clone().unwrap_or_else(|| vec!["lib".into()])
    }
    /// `ld_library_path` (empty by default).
    pub fn ld_paths(&self) -> Vec<String> {
        self.ld_library_path.clone().unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageVolumeSource {
    pub reference: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<String>,
}

/// `Database` CR (`spec.extensions` with `ensure: present|absent`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Database {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: DatabaseSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    pub name: String,
    pub owner: String,
    pub cluster: LocalObjectReference,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<DatabaseExtension>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalObjectReference {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatabaseExtension {
    pub name: String,
    #[serde(default = "present")]
    pub ensure: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
}

fn present() -> String {
    "present".into()
}

/// A Cluster document as read from a file, with the source lines of its extension entries.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterDoc {
    pub cluster: Cluster,
    /// The document exactly as written: what gets applied to a real cluster.
    pub raw: serde_json::Value,
    pub file: PathBuf,
    /// 1-based line where the document starts.
    pub line: u64,
    /// 1-based line of each `spec.postgresql.extensions[i]` entry.
    pub extension_lines: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseDoc {
    pub database: Database,
    pub raw: serde_json::Value,
    pub file: PathBuf,
    pub line: u64,
}

impl DatabaseDoc {
    /// A document made from a typed Database: `raw` is its serialization.
    pub fn from_typed(database: Database) -> DatabaseDoc {
        let raw = serde_json::to_value(&database).expect("Database serializes");
        DatabaseDoc { database, raw, file: PathBuf::from("(generated)"), line: 1 }
    }
}

/// One document of a manifest file: typed where the harness understands it, raw otherwise.
#[derive(Debug, Clone, PartialEq)]
pub enum Manifest {
    Cluster(ClusterDoc),
    Database(DatabaseDoc),
    Other { kind: String, raw: serde_json::Value },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Head {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
}

// Shadow of the Cluster shape that keeps source lines of each extension entry, so that
// validation errors point at the entry the user wrote.
#[derive(Deserialize, Default)]
struct LocDoc {
    #[serde(default)]
    spec: LocSpec,
}
#[derive(Deserialize, Default)]
struct LocSpec {
    #[serde(default)]
    postgresql: LocPg,
}
#[derive(Deserialize, Default)]
struct LocPg {
    #[serde(default)]
    extensions: Vec<serde_saphyr::Spanned<serde::de::IgnoredAny>>,
}

impl Manifest {
    /// Reads every document of a YAML file (`---` separated).
    pub fn load_file(path: &Path) -> Result<Vec<Manifest>, InputError> {
        let text = yaml::read(path)?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Vec<Manifest>, InputError> {
        let mut out = Vec::new();
        for (doc, first_line) in split_documents(text) {
            let shift = |mut e: InputError| {
                e.at.line = e.at.line.map(|l| l + first_line);
                e
            };
            let raw: serde_json::Value = yaml::parse(path, &doc).map_err(shift)?;
            if raw.is_null() {
                continue;
            }
            let head: Head = yaml::parse(path, &doc).map_err(shift)?;
            let line = first_line + 1;
            let is_cnpg = head.api_version == API_VERSION;
            match head.kind.as_str() {
                "Cluster" if is_cnpg => {
                    let cluster: Cluster = yaml::parse(path, &doc).map_err(shift)?;
                    let loc: LocDoc = yaml::parse(path, &doc).unwrap_or_default();
                    let extension_lines =
                        loc.spec.postgresql.extensions.iter().map(|s| s.referenced.line() + first_line).collect();
                    out.push(Manifest::Cluster(ClusterDoc {
                        cluster,
                        raw,
                        file: path.to_path_buf(),
                        line,
                        extension_lines,
                    }));
                }
                "Database" if is_cnpg => {
                    let database: Database = yaml::parse(path, &doc).map_err(shift)?;
                    out.push(Manifest::Database(DatabaseDoc { database, raw, file: path.to_path_buf(), line }));
                }
                "" => {
                    return Err(InputError::new(
                        path,
                        Some(line),
                        "kind",
                        "every manifest document needs `apiVersion` and `kind`",
                    ))
                }
                other => out.push(Manifest::Other { kind: other.to_string(), raw }),
            }
        }
        Ok(out)
    }
}

/// Splits a multi-document YAML text at `---` lines; returns each document with the number
/// of lines before it, so per-document errors can be shifted back to file lines.
fn split_documents(text: &str) -> Vec<(String, u64)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start = 0u64;
    for (i, line) in text.lines().enumerate() {
        let is_sep = line == "---" || line.starts_with("--- ") || line.starts_with("---\t");
        if is_sep {
            if !current.trim().is_empty() {
                docs.push((std::mem::take(&mut current), start));
            }
            current.clear();
            start = i as u64 + 1;
            continue;
        }
        // Keep line numbers aligned inside the document.
        current.push_str(line);
        current.push('\n');
    }
    if !current.trim().is_empty() {
        docs.push((current, start));
    }
    docs
}

impl ClusterDoc {
    /// A document made from a typed Cluster (tests, generated scenarios): `raw` is its serialization.
    pub fn from_typed(cluster: Cluster) -> ClusterDoc {
        let raw = serde_json::to_value(&cluster).expect("Cluster serializes");
        ClusterDoc { cluster, raw, file: PathBuf::from("(generated)"), line: 1, extension_lines: Vec::new() }
    }

    /// Checks what CloudNativePG's webhook checks for `spec.postgresql.extensions` (and the
    /// harness's own preconditions), for the operator version `cnpg`.
    pub fn validate(&self, cnpg: CnpgVersion) -> Result<(), InputError> {
        let c = &self.cluster;
        let err = |line: u64, field: String, msg: String| InputError::new(&self.file, Some(line), field, msg);
        if c.metadata.name.is_empty() {
            return Err(err(self.line, "metadata.name".into(), "a Cluster needs a name".into()));
        }
        if c.spec.instances == 0 {
            return Err(err(self.line, "spec.instances".into(), "must be at least 1".into()));
        }
        let exts = &c.spec.postgresql.extensions;
        if !exts.is_empty() && cnpg < CnpgVersion::FIRST_WITH_EXTENSIONS {
            return Err(err(
                self.line,
                "spec.postgresql.extensions".into(),
                format!("CloudNativePG {cnpg} has no image-volume extensions (needs 1.27.0 or later)"),
            ));
        }
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        for (i, e) in exts.iter().enumerate() {
            let line = self.extension_lines.get(i).copied().unwrap_or(self.line);
            let f = |sub: &str| format!("spec.postgresql.extensions[{i}]{sub}");
            check_name(&e.name, cnpg).map_err(|m| err(line, f(".name"), m))?;
            let sanitized = sanitize_name(&e.name);
            if let Some(first) = seen.insert(sanitized.clone(), e.name.clone()) {
                let msg = if first == e.name {
                    format!("duplicate extension name `{}`", e.name)
                } else {
                    format!("`{}` and `{}` both become volume name `{}`; rename one of them", first, e.name, sanitized)
                };
                return Err(err(line, f(".name"), msg));
            }
            if e.image.reference.trim().is_empty() {
                return Err(err(line, f(".image.reference"), "an image reference is required".into()));
            }
            for (field, list) in [
                ("extension_control_path", &e.extension_control_path),
                ("dynamic_library_path", &e.dynamic_library_path),
                ("ld_library_path", &e.ld_library_path),
            ] {
                for (j, p) in list.iter().flatten().enumerate() {
                    check_relative(p).map_err(|m| err(line, f(&format!(".{field}[{j}]")), m))?;
                }
            }
        }
        Ok(())
    }
}

/// Lowercase alphanumerics and `-` (and `_` where the operator allows it), starting and
/// ending with an alphanumeric, at most 63 characters once prefixed for the volume name.
fn check_name(name: &str, cnpg: CnpgVersion) -> Result<(), String> {
    if name.is_empty() {
        return Err("an extension needs a name".into());
    }
    let underscore_ok = cnpg.allows_underscore_names();
    for ch in name.chars() {
        let ok = ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-' || (ch == '_' && underscore_ok);
        if !ok {
            let hint = if ch == '_' {
                format!(" (underscores need CloudNativePG 1.27.3 / 1.28.1 or later; this run models {cnpg})")
            } else {
                String::new()
            };
            return Err(format!("`{name}` has `{ch}`: use lowercase letters, digits and `-`{hint}"));
        }
    }
    let first = name.chars().next().unwrap();
    let last = name.chars().last().unwrap();
    if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
        return Err(format!("`{name}` must start and end with a letter or digit"));
    }
    if name.len() > 59 {
        return Err(format!("`{name}` is longer than 59 characters (volume names are `ext-<name>`, at most 63)"));
    }
    Ok(())
}

/// The pod volume name's stem: `_` becomes `-` (PR #9386).
pub fn sanitize_name(name: &str) -> String {
    name.replace('_', "-")
}

/// Paths in the three lists are relative to the image root.
fn check_relative(p: &str) -> Result<(), String> {
    if p.trim().is_empty() {
        return Err("empty path; use a directory relative to the image root, e.g. `share`".into());
    }
    if p.starts_with('/') {
        return Err(format!("`{p}` is absolute; paths are relative to the image root, e.g. `share`"));
    }
    if p.split('/').any(|c| c == "..") {
        return Err(format!("`{p}` leaves the image root with `..`"));
    }
    Ok(())
}

/// Names of every extension entry, for messages.
pub fn extension_names(c: &Cluster) -> BTreeSet<String> {
    c.spec.postgresql.extensions.iter().map(|e| e.name.clone()).collect()
}
