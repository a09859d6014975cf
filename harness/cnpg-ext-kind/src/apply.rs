//! The documents the harness applies (namespaced, defaults filled) and their server-side
//! apply with field manager `cnpg-ext-harness`.

use cnpg_ext_model::backend::BackendError;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{json, Value};

use crate::errors::kube_error;
use crate::options::KindOptions;
use crate::FIELD_MANAGER;

/// A document as YAML (what `--dry-run` writes).
pub fn to_yaml(v: &Value) -> String {
    serde_saphyr::to_string(v).unwrap_or_else(|e| format!("# cannot render YAML: {e}\n{v:#}\n"))
}

pub fn cluster_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("postgresql.cnpg.io", "v1", "Cluster"),
        "clusters",
    )
}

pub fn database_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("postgresql.cnpg.io", "v1", "Database"),
        "databases",
    )
}

/// A namespace name for a scenario: `cnpg-ext-<id>`, DNS-1123, at most 63 characters.
pub fn namespace_for(scenario_id: &str) -> String {
    let mut s: String = scenario_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    s = format!("cnpg-ext-{s}");
    s.truncate(63);
    s.trim_end_matches('-').to_string()
}

pub fn namespace_doc(namespace: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": namespace,
            "labels": {"app.kubernetes.io/managed-by": FIELD_MANAGER}
        }
    })
}

/// The Cluster document as applied: the raw manifest with `metadata.namespace` set,
/// `pullPolicy` filled for extension images that have none, and (when the manifest says
/// nothing) `enableSuperuserAccess: true` so that SQL steps can use `postgres`.
pub fn namespaced_cluster(raw: &Value, namespace: &str, opts: &KindOptions) -> Value {
    let mut doc = raw.clone();
    set_namespace(&mut doc, namespace);
    if let Some(exts) = doc
        .pointer_mut("/spec/postgresql/extensions")
        .and_then(Value::as_array_mut)
    {
        for e in exts {
            if let Some(img) = e.get_mut("image").and_then(Value::as_object_mut) {
                img.entry("pullPolicy")
                    .or_insert_with(|| Value::String(opts.pull_policy.clone()));
            }
        }
    }
    if opts.superuser_access {
        if let Some(spec) = doc.get_mut("spec").and_then(Value::as_object_mut) {
            spec.entry("enableSuperuserAccess")
                .or_insert(Value::Bool(true));
        }
    }
    doc
}

/// Any other namespaced document (Database, …): `metadata.namespace` set.
pub fn namespaced(raw: &Value, namespace: &str) -> Value {
    let mut doc = raw.clone();
    set_namespace(&mut doc, namespace);
    doc
}

fn set_namespace(doc: &mut Value, namespace: &str) {
    if let Some(obj) = doc.as_object_mut() {
        let meta = obj.entry("metadata").or_insert_with(|| json!({}));
        if let Some(m) = meta.as_object_mut() {
            m.insert("namespace".into(), Value::String(namespace.into()));
            m.remove("resourceVersion");
            m.remove("uid");
        }
    }
}

/// The restart annotation's key. The operator restarts every pod whose copy of it differs,
/// as a string, from the Cluster's (`checkClusterHasDifferentRestartAnnotation` in
/// cloudnative-pg `internal/controller/cluster_upgrade.go`).
pub const RESTART_ANNOTATION: &str = "kubectl.kubernetes.io/restartedAt";

/// The value for a restart requested at `now`: RFC 3339 with nanoseconds (`kubectl cnpg
/// restart` writes whole seconds, so two restarts within one second wrote the same value
/// and the second changed nothing), and never equal to the `previous` value.
pub fn restart_stamp(previous: Option<&str>, now: chrono::DateTime<chrono::Utc>) -> String {
    let fmt = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let mut at = now;
    if let Some(prev) = previous.and_then(|p| chrono::DateTime::parse_from_rfc3339(p).ok()) {
        let prev = prev.to_utc();
        if at <= prev {
            at = prev + chrono::Duration::nanoseconds(1);
        }
    }
    let mut value = fmt(at);
    while Some(value.as_str()) == previous {
        at += chrono::Duration::nanoseconds(1);
        value = fmt(at);
    }
    value
}

/// `kubectl cnpg restart`: the merge patch on the Cluster.
pub fn restart_patch(stamp: &str) -> Value {
    let mut annotations = serde_json::Map::new();
    annotations.insert(RESTART_ANNOTATION.into(), Value::String(stamp.into()));
    json!({"metadata": {"annotations": annotations}})
}

fn name_of(doc: &Value) -> Result<String, BackendError> {
    doc.pointer("/metadata/name")
        .and_then(Value::as_str)
        .map(String::from)
        .ok_or_else(|| BackendError::Failed(format!("document without metadata.name: {doc}")))
}

/// Server-side apply (forced: the harness owns these objects) of one document.
pub async fn server_side_apply(
    api: &Api<DynamicObject>,
    kind: &str,
    doc: &Value,
) -> Result<DynamicObject, BackendError> {
    server_side_apply_within(api, kind, doc, std::time::Duration::ZERO).await
}

/// [`server_side_apply`], retrying for `retry` a 403 that clears by itself (a namespace
/// still terminating, a `default` ServiceAccount not created yet).
pub async fn server_side_apply_within(
    api: &Api<DynamicObject>,
    kind: &str,
    doc: &Value,
    retry: std::time::Duration,
) -> Result<DynamicObject, BackendError> {
    let name = name_of(doc)?;
    let ns = doc
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .map(|n| format!("{n}/"))
        .unwrap_or_default();
    let what = format!("server-side apply of {kind} {ns}{name}");
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let patch = Patch::Apply(doc);
    crate::wait::retry_forbidden(&what, retry, || api.patch(&name, &pp, &patch))
        .await
        .map_err(|e| kube_error(&what, e))
}
