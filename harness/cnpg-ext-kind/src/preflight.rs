//! What the cluster must offer before anything is applied. Every failure is
//! [`BackendError::Unusable`] (exit 3) and says what to change.

use cnpg_ext_model::backend::BackendError;
use cnpg_ext_model::{Cluster, CnpgVersion};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::version::Info;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

use crate::errors::kube_error;

/// Where the preflight sends its probe (server-side dry run: nothing is created).
pub const PREFLIGHT_NAMESPACE: &str = "default";
pub const PROBE_POD: &str = "cnpg-ext-imagevolume-probe";
pub const PROBE_IMAGE: &str = "registry.k8s.io/pause:3.10";

/// Kubernetes ≥ 1.33 (image volumes beta). Minor versions like `33+` are accepted.
pub fn check_server_version(info: &Info) -> Result<(u32, u32), BackendError> {
    let num = |s: &str| s.trim_end_matches('+').parse::<u32>().ok();
    let (Some(major), Some(minor)) = (num(&info.major), num(&info.minor)) else {
        return Err(BackendError::Unusable(format!(
            "cannot read the Kubernetes version from the API server (major {:?}, minor {:?}, gitVersion {})",
            info.major, info.minor, info.git_version
        )));
    };
    if (major, minor) < (1, 33) {
        return Err(BackendError::Unusable(format!(
            "Kubernetes {} is too old: image volumes need 1.33 or later with the ImageVolume feature gate \
             (use a kind-config/kind-1.36.yaml cluster (or 1.33+ with the ImageVolume gate))",
            info.git_version
        )));
    }
    Ok((major, minor))
}

/// A pod with one image volume, sent as a server-side dry-run create: if the API server
/// returns it without the volume's `image` source, the ImageVolume gate is off.
pub fn image_volume_probe_pod(namespace: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": PROBE_POD,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": crate::FIELD_MANAGER}
        },
        "spec": {
            "containers": [{
                "name": "probe",
                "image": PROBE_IMAGE,
                "volumeMounts": [{"name": "ext-probe", "mountPath": "/extensions/probe", "readOnly": true}]
            }],
            "volumes": [{
                "name": "ext-probe",
                "image": {"reference": PROBE_IMAGE, "pullPolicy": "IfNotPresent"}
            }]
        }
    }))
    .expect("static probe pod")
}

/// Did the API server keep the probe's image volume?
pub fn probe_kept_image_volume(returned: &Pod) -> bool {
    returned
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|vs| {
            vs.iter().any(|v| {
                v.name == "ext-probe"
                    && v.image.as_ref().and_then(|i| i.reference.as_deref()) == Some(PROBE_IMAGE)
            })
        })
}

/// Sends the probe; a 403 that clears by itself (the namespace's `default` ServiceAccount
/// not created yet, right after `kind create cluster`) is retried for `retry`.
pub async fn check_image_volume_gate(
    client: &kube::Client,
    namespace: &str,
    retry: std::time::Duration,
) -> Result<(), BackendError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pp = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let what = format!("server-side dry-run create of pod {namespace}/{PROBE_POD} (image volume probe)");
    let probe = image_volume_probe_pod(namespace);
    let returned = crate::wait::retry_forbidden(&what, retry, || pods.create(&pp, &probe))
        .await
        .map_err(|e| kube_error(&what, e))?;
    if probe_kept_image_volume(&returned) {
        Ok(())
    } else {
        Err(BackendError::Unusable(format!(
            "the ImageVolume feature gate is off: a server-side dry-run create of pod {namespace}/{PROBE_POD} came back \
             without its `image` volume (the API server drops it silently). Enable `ImageVolume=true` on the API server \
             and every kubelet (kind: `featureGates: {{ImageVolume: true}}`, see kind-config/)"
        )))
    }
}

/// containerd ≥ 2.1 or CRI-O ≥ 1.31 (`status.nodeInfo.containerRuntimeVersion`).
pub fn check_runtime(node: &str, runtime: &str) -> Result<(), String> {
    let (name, version) = runtime.split_once("://").unwrap_or((runtime, ""));
    let core = version
        .trim_start_matches('v')
        .split(['-', '+', '~'])
        .next()
        .unwrap_or("");
    let mut it = core.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let v = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    let need = match name {
        "containerd" => (2, 1),
        "cri-o" => (1, 31),
        other => {
            return Err(format!(
                "node {node} runs `{other}` ({runtime}): image volumes need containerd ≥ 2.1 or CRI-O ≥ 1.31"
            ))
        }
    };
    if v < need {
        return Err(format!(
            "node {node} runs {runtime}: image volumes need {name} ≥ {}.{} (kind: use kind ≥ v0.28 and a node image from it)",
            need.0, need.1
        ));
    }
    Ok(())
}

pub async fn check_nodes(client: &kube::Client) -> Result<Vec<(String, String)>, BackendError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let list = nodes
        .list(&ListParams::default())
        .await
        .map_err(|e| kube_error("listing nodes", e))?;
    let mut seen = Vec::new();
    let mut problems = Vec::new();
    for n in &list.items {
        let name = n.metadata.name.clone().unwrap_or_default();
        let rt = n
            .status
            .as_ref()
            .and_then(|s| s.node_info.as_ref())
            .map(|i| i.container_runtime_version.clone())
            .unwrap_or_default();
        if let Err(p) = check_runtime(&name, &rt) {
            problems.push(p);
        }
        seen.push((name, rt));
    }
    if list.items.is_empty() {
        return Err(BackendError::Unusable("the cluster has no nodes".into()));
    }
    if !problems.is_empty() {
        return Err(BackendError::Unusable(problems.join("; ")));
    }
    Ok(seen)
}

/// The operator must be a release with image-volume extensions and with what the
/// scenario's Clusters use (underscore names need 1.27.3 / 1.28.1).
pub fn check_operator_for(
    installed: CnpgVersion,
    clusters: &[&Cluster],
) -> Result<(), BackendError> {
    if installed < CnpgVersion::FIRST_WITH_EXTENSIONS {
        return Err(BackendError::Unusable(format!(
            "CloudNativePG {installed} has no image-volume extensions: install 1.27.0 or later (--cnpg-version)"
        )));
    }
    for c in clusters {
        for e in &c.spec.postgresql.extensions {
            if e.name.contains('_') && !installed.allows_underscore_names() {
                return Err(BackendError::Unusable(format!(
                    "Cluster {}: extension `{}` has an underscore, which CloudNativePG {installed} rejects: \
                     install 1.27.3 / 1.28.1 or later (--cnpg-version)",
                    c.metadata.name, e.name
                )));
            }
        }
    }
    Ok(())
}

/// What preflight found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreflightReport {
    pub server_version: String,
    pub nodes: Vec<(String, String)>,
}

/// Server version, ImageVolume gate (dry-run probe in `namespace`), node runtimes.
pub async fn run(
    client: &kube::Client,
    namespace: &str,
    forbidden_retry: std::time::Duration,
) -> Result<PreflightReport, BackendError> {
    let info = client.apiserver_version().await.map_err(|e| {
        BackendError::Unusable(format!(
            "cannot reach the Kubernetes API server: {e}; check --kubeconfig/--context"
        ))
    })?;
    check_server_version(&info)?;
    check_image_volume_gate(client, namespace, forbidden_retry).await?;
    let nodes = check_nodes(client).await?;
    Ok(PreflightReport {
        server_version: info.git_version,
        nodes,
    })
}
