//! Installing the CloudNativePG operator from its pinned release manifest: parse, order,
//! server-side apply through kube-rs, then wait for the deployment and its webhook.

use std::time::Duration;

use cnpg_ext_model::backend::BackendError;
use cnpg_ext_model::CnpgVersion;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use serde_json::{json, Value};

use crate::apply::{cluster_resource, server_side_apply};
use crate::errors::kube_error;
use crate::options::Timeouts;
use crate::wait::{await_object, deployment_available, poll_until, Probe};

pub const OPERATOR_NAMESPACE: &str = "cnpg-system";
pub const OPERATOR_DEPLOYMENT: &str = "cnpg-controller-manager";
pub const OPERATOR_LABEL: &str = "app.kubernetes.io/name=cloudnative-pg";

/// Every document of the release manifest (empty documents dropped).
pub fn parse_manifest(text: &str) -> Result<Vec<Value>, BackendError> {
    let docs: Vec<Value> = serde_saphyr::from_multiple_with_options(
        text,
        serde_saphyr::options! {
            budget: serde_saphyr::budget! { max_documents: 10_000, max_nodes: 5_000_000, max_depth: 256, max_events: 20_000_000 },
        },
    )
    .map_err(|e| BackendError::Unusable(format!("the operator manifest is not valid YAML: {e}")))?;
    let docs: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
    for (i, d) in docs.iter().enumerate() {
        if d.get("kind").and_then(Value::as_str).is_none()
            || d.pointer("/metadata/name")
                .and_then(Value::as_str)
                .is_none()
        {
            return Err(BackendError::Unusable(format!(
                "operator manifest document {i} has no kind or metadata.name"
            )));
        }
    }
    Ok(docs)
}

fn rank(kind: &str) -> u8 {
    match kind {
        "Namespace" => 0,
        "CustomResourceDefinition" => 1,
        "ServiceAccount" => 2,
        "ClusterRole" | "Role" => 3,
        "ClusterRoleBinding" | "RoleBinding" => 4,
        "ConfigMap" | "Secret" => 5,
        "Service" => 6,
        "Deployment" => 7,
        "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration" => 9,
        _ => 8,
    }
}

/// Apply order: namespace, CRDs, RBAC, config, service, deployment, then webhooks (a
/// webhook registered before its service answers would block the rest). Stable.
pub fn apply_order(mut docs: Vec<Value>) -> Vec<Value> {
    docs.sort_by_key(|d| rank(d.get("kind").and_then(Value::as_str).unwrap_or("")));
    docs
}

/// `Kind namespace/name` per document, for snapshots and logs.
pub fn describe(docs: &[Value]) -> Vec<String> {
    docs.iter()
        .map(|d| {
            let kind = d.get("kind").and_then(Value::as_str).unwrap_or("?");
            let name = d
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("?");
            match d.pointer("/metadata/namespace").and_then(Value::as_str) {
                Some(ns) => format!("{kind} {ns}/{name}"),
                None => format!("{kind} {name}"),
            }
        })
        .collect()
}

/// The API resource of a manifest document: a table for what release manifests hold,
/// discovery for anything else.
pub async fn resource_of(
    client: &kube::Client,
    doc: &Value,
) -> Result<(ApiResource, bool), BackendError> {
    let api_version = doc.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("");
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    let known: Option<(&str, bool)> = match (group, kind) {
        ("", "Namespace") => Some(("namespaces", false)),
        ("", "ServiceAccount") => Some(("serviceaccounts", true)),
        ("", "ConfigMap") => Some(("configmaps", true)),
        ("", "Secret") => Some(("secrets", true)),
        ("", "Service") => Some(("services", true)),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            Some(("customresourcedefinitions", false))
        }
        ("rbac.authorization.k8s.io", "ClusterRole") => Some(("clusterroles", false)),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => Some(("clusterrolebindings", false)),
        ("rbac.authorization.k8s.io", "Role") => Some(("roles", true)),
        ("rbac.authorization.k8s.io", "RoleBinding") => Some(("rolebindings", true)),
        ("apps", "Deployment") => Some(("deployments", true)),
        ("admissionregistration.k8s.io", "MutatingWebhookConfiguration") => {
            Some(("mutatingwebhookconfigurations", false))
        }
        ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration") => {
            Some(("validatingwebhookconfigurations", false))
        }
        _ => None,
    };
    let gvk = GroupVersionKind::gvk(group, version, kind);
    if let Some((plural, namespaced)) = known {
        return Ok((ApiResource::from_gvk_with_plural(&gvk, plural), namespaced));
    }
    let (ar, caps) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .map_err(|e| kube_error(format!("discovering the API of {api_version} {kind}"), e))?;
    Ok((ar, caps.scope == kube::discovery::Scope::Namespaced))
}

/// Applies the ordered documents; waits for CRDs to be established before going on.
pub async fn apply_manifest(
    client: &kube::Client,
    docs: &[Value],
    timeouts: &Timeouts,
) -> Result<(), BackendError> {
    let mut crds = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        let (ar, namespaced) = resource_of(client, doc).await?;
        let api: Api<DynamicObject> = if namespaced {
            let ns = doc
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or(OPERATOR_NAMESPACE);
            Api::namespaced_with(client.clone(), ns, &ar)
        } else {
            Api::all_with(client.clone(), &ar)
        };
        server_side_apply(&api, &ar.kind, doc).await?;
        if ar.kind == "CustomResourceDefinition" {
            crds.push(
                doc.pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            );
        }
        let next_is_crd = docs
            .get(i + 1)
            .and_then(|d| d.get("kind"))
            .and_then(Value::as_str)
            == Some("CustomResourceDefinition");
        if !crds.is_empty() && !next_is_crd {
            wait_crds(client, &crds, timeouts).await?;
            crds.clear();
        }
    }
    Ok(())
}

async fn wait_crds(
    client: &kube::Client,
    names: &[String],
    timeouts: &Timeouts,
) -> Result<(), BackendError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let cond = crate::wait::Condition::new(
        "condition Established=True",
        |o: Option<&CustomResourceDefinition>| {
            o.and_then(|c| c.status.as_ref())
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                })
        },
        |o: Option<&CustomResourceDefinition>| match o {
            None => "not found".into(),
            Some(_) => "not established yet".into(),
        },
    );
    for n in names {
        await_object(
            &api,
            n,
            &format!("CustomResourceDefinition {n}"),
            &cond,
            timeouts.operator,
            timeouts.poll,
        )
        .await?;
    }
    Ok(())
}

/// A Cluster that only exists to be sent, dry-run, through the operator's webhooks.
pub fn webhook_probe_cluster(namespace: &str) -> Value {
    json!({
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": {"name": "cnpg-ext-webhook-probe", "namespace": namespace},
        "spec": {"instances": 1, "storage": {"size": "1Gi"}}
    })
}

/// Waits for the operator deployment to be available, then for its webhook to answer a
/// server-side dry-run create of a Cluster (a rejection also proves it answers).
pub async fn wait_operator_ready(
    client: &kube::Client,
    namespace: &str,
    timeouts: &Timeouts,
) -> Result<(), BackendError> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    await_object(
        &deployments,
        OPERATOR_DEPLOYMENT,
        &format!("Deployment {namespace}/{OPERATOR_DEPLOYMENT}"),
        &deployment_available(),
        timeouts.operator,
        timeouts.poll,
    )
    .await?;
    let clusters: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &cluster_resource());
    let probe = webhook_probe_cluster("default");
    let obj: DynamicObject = serde_json::from_value(probe).expect("static probe object");
    let pp = PostParams {
        dry_run: true,
        ..Default::default()
    };
    poll_until(
        "the CloudNativePG webhook to answer (server-side dry-run create of a Cluster)",
        timeouts.operator,
        timeouts.poll.max(Duration::from_secs(0)),
        || async {
            match clusters.create(&pp, &obj).await {
                Ok(_) => Ok(Probe::Done(())),
                Err(kube::Error::Api(s)) if crate::errors::is_rejection(&s) => Ok(Probe::Done(())),
                Err(e) => Ok(Probe::Pending(e.to_string())),
            }
        },
    )
    .await
}

/// The operator found in the cluster: namespace and version (from the image tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledOperator {
    pub namespace: String,
    pub deployment: String,
    pub image: String,
    pub version: Option<CnpgVersion>,
}

pub fn version_from_image(image: &str) -> Option<CnpgVersion> {
    let no_digest = image.split('@').next()?;
    let (_, tag) = no_digest.rsplit_once(':')?;
    let core = tag.split(['-', '+']).next()?;
    if core.split('.').count() != 3 {
        return None;
    }
    core.parse().ok()
}

pub async fn installed_operator(
    client: &kube::Client,
) -> Result<Option<InstalledOperator>, BackendError> {
    let api: Api<Deployment> = Api::all(client.clone());
    let list = api
        .list(&ListParams::default().labels(OPERATOR_LABEL))
        .await
        .map_err(|e| kube_error("listing CloudNativePG operator deployments", e))?;
    Ok(list.items.into_iter().next().map(|d| {
        let image = d
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|s| s.containers.first())
            .and_then(|c| c.image.clone())
            .unwrap_or_default();
        InstalledOperator {
            namespace: d.metadata.namespace.clone().unwrap_or_default(),
            deployment: d.metadata.name.clone().unwrap_or_default(),
            version: version_from_image(&image),
            image,
        }
    }))
}
