//! The harness's derivation in the oracle's JSON shape (`oracle/README.md`, schema 1), so
//! that `cnpg-ext-harness plan --format json` and `oracle/cnpg-plan` can be compared field
//! by field by the differential test.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};

use crate::cluster::{CatalogDoc, ClusterDoc, Manifest};
use crate::error::InputError;
use crate::plan::{ClusterPlan, PlanOptions};
use crate::version::CnpgVersion;

/// The schema version of the shared JSON shape.
pub const SCHEMA: u32 = 1;

/// Derives every Cluster in `docs` (catalogs among them are used for resolution) as
/// CloudNativePG `cnpg` would, given the instance manager's inherited environment.
pub fn derive_documents(docs: &[(String, Manifest)], cnpg: CnpgVersion, inherited: &BTreeMap<String, String>) -> Value {
    let catalogs: Vec<&CatalogDoc> = docs
        .iter()
        .filter_map(|(_, d)| match d {
            Manifest::Catalog(c) => Some(c),
            _ => None,
        })
        .collect();
    let clusters: Vec<Value> = docs
        .iter()
        .filter_map(|(file, d)| match d {
            Manifest::Cluster(c) => Some(derive_cluster(file, c, &catalogs, cnpg, inherited)),
            _ => None,
        })
        .collect();
    json!({"schema": SCHEMA, "cnpg_version": cnpg.to_string(), "clusters": clusters})
}

/// Reads manifest files for [`derive_documents`]; each document keeps its file's name as
/// given.
pub fn load_documents(files: &[&Path]) -> Result<Vec<(String, Manifest)>, InputError> {
    let mut out = Vec::new();
    for f in files {
        let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        for m in Manifest::load_file(f)? {
            out.push((name.clone(), m));
        }
    }
    Ok(out)
}

fn derive_cluster(
    file: &str,
    doc: &ClusterDoc,
    catalogs: &[&CatalogDoc],
    cnpg: CnpgVersion,
    inherited: &BTreeMap<String, String>,
) -> Value {
    let meta = &doc.cluster.metadata;
    let head = |accepted: bool, rejections: Vec<Value>| {
        json!({
            "file": file,
            "namespace": meta.namespace.clone().unwrap_or_else(|| "default".into()),
            "cluster": meta.name,
            "accepted": accepted,
            "rejections": rejections,
        })
    };
    let rejections: Vec<Value> = doc
        .rejections(cnpg)
        .into_iter()
        .map(|r| json!({"field": r.field, "message": r.message, "source": r.source}))
        .collect();
    let resolved = match doc.resolve_extensions(catalogs, cnpg) {
        Ok(r) if rejections.is_empty() => r,
        Ok(_) => return with_nulls(head(false, rejections)),
        Err(e) => {
            let mut all = rejections;
            all.push(json!({"field": e.field, "message": e.message, "source": "operator"}));
            return with_nulls(head(false, all));
        }
    };
    // Fields a release does not know are pruned by the API server: its operator never sees them.
    let resolved: Vec<_> = resolved
        .into_iter()
        .map(|mut e| {
            if !cnpg.knows_extension_env_fields() {
                e.bin_path = None;
                e.env = None;
            }
            e
        })
        .collect();
    let mut cluster = doc.cluster.clone();
    cluster.spec.postgresql.extensions = resolved.clone();
    let plan = ClusterPlan::derive(&cluster, &PlanOptions { mount_root: "/extensions".into(), cnpg });
    let mut out = head(true, Vec::new());
    let o = out.as_object_mut().expect("object");
    o.insert("extensions".into(), serde_json::to_value(&resolved).expect("extensions serialize"));
    let written = |v: &str| if plan.writes_search_paths { Value::from(v) } else { Value::Null };
    o.insert(
        "parameters".into(),
        json!({
            "extension_control_path": written(&plan.extension_control_path),
            "dynamic_library_path": written(&plan.dynamic_library_path),
            "shared_preload_libraries": plan.shared_preload_libraries.join(","),
        }),
    );
    let volumes: Vec<Value> = plan
        .extensions
        .iter()
        .map(|e| {
            json!({"name": e.volume_name, "image_reference": e.image, "pull_policy": e.pull_policy.clone().unwrap_or_default()})
        })
        .collect();
    let mounts: Vec<Value> = plan
        .extensions
        .iter()
        .map(|e| json!({"name": e.volume_name, "mount_path": e.mount_path, "read_only": false}))
        .collect();
    o.insert("volumes".into(), Value::Array(volumes));
    o.insert("mounts".into(), Value::Array(mounts));
    o.insert("environment".into(), serde_json::to_value(environment_changes(&plan, inherited)).expect("map"));
    out
}

/// Every variable of the postmaster's environment that is new or differs from `inherited`.
pub fn environment_changes(plan: &ClusterPlan, inherited: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut env = inherited.clone();
    let get = |k: &str| inherited.get(k).map(String::as_str);
    if let Some(ld) = plan.postmaster_ld_library_path(get("LD_LIBRARY_PATH")) {
        env.insert("LD_LIBRARY_PATH".into(), ld);
    }
    if let Some(path) = plan.postmaster_path(get("PATH")) {
        env.insert("PATH".into(), path);
    }
    env.extend(plan.env.clone());
    env.into_iter().filter(|(k, v)| inherited.get(k) != Some(v)).collect()
}

fn with_nulls(mut v: Value) -> Value {
    let o = v.as_object_mut().expect("object");
    for k in ["extensions", "parameters", "volumes", "mounts", "environment"] {
        o.insert(k.into(), Value::Null);
    }
    v
}

/// The form two derivations are compared in: nulls, empty lists and empty strings dropped
/// (Go's `omitempty` against serde's `skip_serializing_if` write "nothing" differently).
pub fn comparable(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null() && **v != Value::Array(vec![]) && **v != Value::String(String::new()))
                .map(|(k, v)| (k.clone(), comparable(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(comparable).collect()),
        other => other.clone(),
    }
}
