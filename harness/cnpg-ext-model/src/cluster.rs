//! The subset of CloudNativePG's `postgresql.cnpg.io/v1` API that the harness reads.
//!
//! Manifests are parsed leniently (unknown fields are kept in the raw document and ignored
//! here, as `kubectl apply` would accept them) but typed where the harness uses them.
//! [`crate::validate`] rejects what the operator, its webhook and its CRD schema reject.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::InputError;
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
    /// The catalog the operand image (and, from 1.29, extension images) come from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_catalog_ref: Option<ImageCatalogRef>,
    #[serde(default)]
    pub postgresql: PostgresConfiguration,
}

/// `spec.imageCatalogRef`: an `ImageCatalog` (same namespace) or `ClusterImageCatalog`,
/// and the PostgreSQL major whose entry is used.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageCatalogRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_group: Option<String>,
    pub kind: String,
    pub name: String,
    pub major: u32,
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

/// One entry of `spec.postgresql.extensions` (or of a catalog's `images[].extensions`).
/// The path lists keep CNPG's snake_case. An empty `image.reference` means "not given"
/// (from 1.29 a Cluster entry may name only an extension its image catalog declares).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExtensionConfiguration {
    pub name: String,
    #[serde(default)]
    pub image: ImageVolumeSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_control_path: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamic_library_path: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ld_library_path: Option<Vec<String>>,
    /// Directories appended to the postmaster's `PATH` (1.29+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bin_path: Option<Vec<String>>,
    /// Variables set in the postmaster's environment (1.29+); `${image_root}` expands to
    /// the mount path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<ExtensionEnvVar>>,
}

/// One `env` entry of an extension.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtensionEnvVar {
    pub name: String,
    #[serde(default)]
    pub value: String,
}

impl ExtensionConfiguration {
    /// `extension_control_path` with CNPG's default (`share`), which an absent *or empty*
    /// list gets (the operator tests the length).
    pub fn control_paths(&self) -> Vec<String> {
        non_empty(&self.extension_control_path).unwrap_or_else(|| vec!["share".into()])
    }
    /// `dynamic_library_path` with CNPG's default (`lib`), for an absent or empty list.
    pub fn library_paths(&self) -> Vec<String> {
        non_empty(&self.dynamic_library_path).unwrap_or_else(|| vec!["lib".into()])
    }
    /// `ld_library_path` (empty by default).
    pub fn ld_paths(&self) -> Vec<String> {
        self.ld_library_path.clone().unwrap_or_default()
    }
    /// `bin_path` (empty by default).
    pub fn bin_paths(&self) -> Vec<String> {
        self.bin_path.clone().unwrap_or_default()
    }
    /// `env` (empty by default).
    pub fn env_vars(&self) -> &[ExtensionEnvVar] {
        self.env.as_deref().unwrap_or_default()
    }
    /// Whether the entry uses a field CloudNativePG added in 1.29 (`bin_path`, `env`).
    pub fn uses_1_29_fields(&self) -> bool {
        self.bin_path.as_ref().is_some_and(|v| !v.is_empty()) || self.env.as_ref().is_some_and(|v| !v.is_empty())
    }
}

fn non_empty(list: &Option<Vec<String>>) -> Option<Vec<String>> {
    list.clone().filter(|l| !l.is_empty())
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageVolumeSource {
    #[serde(default, skip_serializing_if = "String::is_empty")]
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
    /// An `ImageCatalog` or `ClusterImageCatalog`.
    Catalog(CatalogDoc),
    Other {
        kind: String,
        raw: serde_json::Value,
    },
}

/// `ImageCatalog` (namespaced) or `ClusterImageCatalog`: operand images by PostgreSQL
/// major and, from 1.29, the extensions each image's Clusters may name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageCatalog {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: ImageCatalogSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageCatalogSpec {
    #[serde(default)]
    pub images: Vec<CatalogImage>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CatalogImage {
    pub major: u32,
    pub image: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<ExtensionConfiguration>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CatalogDoc {
    pub catalog: ImageCatalog,
    pub raw: serde_json::Value,
    pub file: PathBuf,
    pub line: u64,
}

impl CatalogDoc {
    /// Whether `r` names this catalog (kind, name, and namespace for an `ImageCatalog`).
    pub fn is_named_by(&self, r: &ImageCatalogRef, cluster_namespace: Option<&str>) -> bool {
        let meta = &self.catalog.metadata;
        r.kind == self.catalog.kind
            && r.name == meta.name
            && (self.catalog.kind == "ClusterImageCatalog" || meta.namespace.as_deref() == cluster_namespace)
    }
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
                "ImageCatalog" | "ClusterImageCatalog" if is_cnpg => {
                    let catalog: ImageCatalog = yaml::parse(path, &doc).map_err(shift)?;
                    out.push(Manifest::Catalog(CatalogDoc { catalog, raw, file: path.to_path_buf(), line }));
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
}

/// The pod volume name's stem: `_` becomes `-` (PR #9386).
pub fn sanitize_name(name: &str) -> String {
    name.replace('_', "-")
}

/// Names of every extension entry, for messages.
pub fn extension_names(c: &Cluster) -> BTreeSet<String> {
    c.spec.postgresql.extensions.iter().map(|e| e.name.clone()).collect()
}
