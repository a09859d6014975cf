//! Objects for replays, shaped after what CloudNativePG and the API server write. They are
//! **hand-written**, not recorded from a cluster (no cluster can run where this was
//! written); each item names the upstream source it follows (cloudnative-pg paths unless
//! said otherwise).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value};

use super::{FakeApi, RecordedRequest, WatchType};
use crate::postmaster::PostmasterState;
use cnpg_ext_model::backend::Role;
use cnpg_ext_model::judge::InstanceState;

// Cluster phases: `api/v1/cluster_types.go` (PhaseHealthy, PhaseUpgrade,
// PhaseWaitingForInstancesToBeActive, PhaseSwitchover, PhaseInplaceDeletePrimaryRestart).
pub const HEALTHY: &str = "Cluster in healthy state";
pub const UPGRADING: &str = "Upgrading cluster";
pub const WAITING: &str = "Waiting for the instances to become active";
pub const SWITCHOVER: &str = "Switchover in progress";
pub const PRIMARY_RESTART: &str = "Primary instance is being restarted without a switchover";
// PhaseInplacePrimaryRestart, PhaseWaitingForUser.
pub const PRIMARY_INPLACE: &str = "Primary instance is being restarted in-place";
pub const WAITING_FOR_USER: &str = "Waiting for user action";

/// The annotation in which a fake pod carries what its postmaster answers to the probe
/// (the probe's own output, [`PostmasterState::to_output`]). Fake only: a real pod says
/// this through SQL.
pub const POSTMASTER: &str = "fake.cnpg-ext.test/postmaster";

/// A postmaster as [`crate::postmaster::probe`] reads it: `started` is also its
/// configuration load time; `settings` as `(name, value)`.
pub fn postmaster(started: &str, settings: &BTreeMap<String, String>) -> PostmasterState {
    PostmasterState {
        started: started.to_string(),
        conf_loaded: started.to_string(),
        settings: settings.clone(),
        pending_restart: Vec::new(),
    }
}

/// `pod` with its postmaster in the [`POSTMASTER`] annotation.
pub fn with_postmaster(mut pod: Value, pm: &PostmasterState) -> Value {
    pod["metadata"]["annotations"][POSTMASTER] = json!(pm.to_output());
    pod
}

/// What the pod's postmaster answers: the [`POSTMASTER`] annotation, else a postmaster
/// started with the container ([`started_at`] of its uid) showing `settings`.
pub fn postmaster_of(pod: &Value, settings: &BTreeMap<String, String>) -> PostmasterState {
    let name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("?");
    if let Some(text) = pod.pointer("/metadata/annotations").and_then(|a| a.get(POSTMASTER)).and_then(Value::as_str) {
        return PostmasterState::parse(name, text).expect("a fake postmaster annotation");
    }
    let uid = pod.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("");
    postmaster(&started_at(uid).replace('Z', ".000000Z"), settings)
}

/// The settings the plan asks every postmaster to show (what a converged instance shows).
pub fn settings_of(plan: &cnpg_ext_model::plan::ClusterPlan) -> BTreeMap<String, String> {
    [
        ("extension_control_path", plan.extension_control_path.clone()),
        ("dynamic_library_path", plan.dynamic_library_path.clone()),
        ("shared_preload_libraries", plan.shared_preload_libraries.join(",")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Edits the pod objects of a frame (frame index, pod) before the events are derived.
pub type PodEdit<'e> = &'e dyn Fn(usize, &mut Value);

/// A Cluster with the status fields the harness reads (`api/v1/cluster_types.go`,
/// ClusterStatus: phase, readyInstances, instances).
pub fn cluster(ns: &str, name: &str, instances: u32, ready: u32, phase: &str) -> Value {
    json!({
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": {"name": name, "namespace": ns, "generation": 2, "uid": format!("cluster-{name}")},
        "spec": {"instances": instances},
        "status": {"phase": phase, "readyInstances": ready, "instances": instances}
    })
}

/// An extension image volume: (volume name, image reference, mount path).
#[derive(Debug, Clone)]
pub struct Vol<'a> {
    pub volume: &'a str,
    pub image: &'a str,
    pub mount: &'a str,
    /// `false`: the stored spec lost the image volume and its mount (gate off; as
    /// issue 12 describes the API server's behaviour, not checked against its source).
    pub keep_image: bool,
}

/// When the container of the pod with this uid started: the uid's last character is
/// its generation (`…a` the first pod of an instance, `…b` its replacement, …), and
/// each generation starts one minute after the previous one.
pub fn started_at(uid: &str) -> String {
    let generation = uid.chars().last().filter(|c| c.is_ascii_lowercase()).map(|c| c as u32 - 'a' as u32).unwrap_or(0);
    format!("2026-01-01T00:{generation:02}:00Z")
}

/// An instance pod. Labels: `pkg/utils/labels_annotations.go` (cnpg.io/cluster,
/// cnpg.io/instanceName, cnpg.io/instanceRole, the older `role`, cnpg.io/podRole).
/// Owned by its Cluster (`api/v1/cluster_funcs.go`, SetInheritedDataAndOwnership).
/// Extension volumes and mounts: `pkg/specs/volumes.go` (CreateExtensionVolumes: an
/// `image` source; CreateExtensionVolumeMounts: `/extensions/<name>`, no readOnly
/// flag, image volumes are read-only anyway). Container status: the kubelet's
/// (`ready`, `started`, `state.running.startedAt`, see [`started_at`]).
pub fn pod(ns: &str, cluster: &str, name: &str, uid: &str, role: &str, ready: bool, vols: &[Vol]) -> Value {
    let volumes: Vec<Value> = vols
        .iter()
        .filter(|v| v.keep_image)
        .map(|v| json!({"name": v.volume, "image": {"reference": v.image, "pullPolicy": "IfNotPresent"}}))
        .chain(std::iter::once(json!({"name": "pgdata", "persistentVolumeClaim": {"claimName": name}})))
        .collect();
    let mut mounts: Vec<Value> =
        vols.iter().filter(|v| v.keep_image).map(|v| json!({"name": v.volume, "mountPath": v.mount})).collect();
    mounts.push(json!({"name": "pgdata", "mountPath": "/var/lib/postgresql/data"}));
    let image = "ghcr.io/cloudnative-pg/postgresql:18-minimal-trixie";
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name, "namespace": ns, "uid": uid,
            "labels": {
                "cnpg.io/cluster": cluster,
                "cnpg.io/instanceName": name,
                "cnpg.io/instanceRole": role,
                "cnpg.io/podRole": "instance",
                "role": role
            },
            "ownerReferences": [{
                "apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster", "name": cluster,
                "uid": format!("cluster-{cluster}"), "controller": true
            }]
        },
        "spec": {
            "containers": [{"name": "postgres", "image": image, "volumeMounts": mounts}],
            "volumes": volumes
        },
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
            "containerStatuses": [{
                "name": "postgres", "image": image, "ready": ready, "started": true,
                "restartCount": 0,
                "state": {"running": {"startedAt": started_at(uid)}}
            }]
        }
    })
}

/// The state the one verifier (`cnpg_ext_model::judge`) compares, read from instance
/// pods: role label and the postgres container's start time.
pub fn instance_states(pods: &[Value]) -> std::collections::BTreeMap<String, InstanceState> {
    pods.iter()
        .filter(|p| p.pointer("/metadata/labels/cnpg.io~1podRole").and_then(Value::as_str) == Some("instance"))
        .map(|p| {
            let name = p.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("?").to_string();
            let role = match p.pointer("/metadata/labels/cnpg.io~1instanceRole").and_then(Value::as_str) {
                Some("primary") => Role::Primary,
                _ => Role::Replica,
            };
            let started = p
                .pointer("/status/containerStatuses/0/state/running/startedAt")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            (name, InstanceState { role, started })
        })
        .collect()
}

pub fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": format!("{kind}List"), "metadata": {"resourceVersion": "1"}, "items": items})
}

pub fn pods_path(ns: &str) -> String {
    format!("/api/v1/namespaces/{ns}/pods")
}

pub fn cluster_path(ns: &str, name: &str) -> String {
    format!("/apis/postgresql.cnpg.io/v1/namespaces/{ns}/clusters/{name}")
}

pub fn database_path(ns: &str, name: &str) -> String {
    format!("/apis/postgresql.cnpg.io/v1/namespaces/{ns}/databases/{name}")
}

/// One frame of a rolling update: the Cluster phase and each pod as
/// (name, uid, role, ready).
pub struct Frame<'a> {
    pub phase: &'a str,
    pub ready: u32,
    pub pods: Vec<(&'a str, &'a str, &'a str, bool)>,
}

pub fn clusters_path(ns: &str) -> String {
    format!("/apis/postgresql.cnpg.io/v1/namespaces/{ns}/clusters")
}

/// The watch events that turn one list of objects into the next (by name). A pod that
/// goes away is first `MODIFIED` with `metadata.deletionTimestamp` (graceful deletion),
/// then `DELETED`; a new uid under the same name is `ADDED` after that; any other
/// change is `MODIFIED`.
pub fn diff_events(prev: &[Value], next: &[Value]) -> Vec<(WatchType, Value)> {
    let name = |o: &Value| o.pointer("/metadata/name").cloned();
    let uid = |o: &Value| o.pointer("/metadata/uid").cloned();
    let mut out = Vec::new();
    for p in prev {
        let gone = match next.iter().find(|n| name(n) == name(p)) {
            None => true,
            Some(n) => uid(n) != uid(p),
        };
        if gone {
            let mut terminating = p.clone();
            terminating["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:30Z");
            terminating["metadata"]["deletionGracePeriodSeconds"] = json!(1800);
            out.push((WatchType::Modified, terminating.clone()));
            out.push((WatchType::Deleted, terminating));
        }
    }
    for n in next {
        match prev.iter().find(|p| name(p) == name(n)) {
            None => out.push((WatchType::Added, n.clone())),
            Some(p) if uid(p) != uid(n) => out.push((WatchType::Added, n.clone())),
            Some(p) if p != n => out.push((WatchType::Modified, n.clone())),
            Some(_) => {}
        }
    }
    out
}

/// Watch events in order.
pub type Events = Vec<(WatchType, Value)>;

/// The Cluster objects and pod lists of `frames`, and the watch events between them.
pub fn frame_objects(
    ns: &str,
    cluster_name: &str,
    instances: u32,
    frames: &[Frame],
    vols: &[Vol],
) -> (Vec<Value>, Events, Vec<Vec<Value>>, Events) {
    frame_objects_with(ns, cluster_name, instances, frames, vols, &|_, _| {})
}

/// [`frame_objects`] with each pod object edited by `edit` (frame index, pod).
pub fn frame_objects_with(
    ns: &str,
    cluster_name: &str,
    instances: u32,
    frames: &[Frame],
    vols: &[Vol],
    edit: PodEdit,
) -> (Vec<Value>, Events, Vec<Vec<Value>>, Events) {
    let clusters: Vec<Value> = frames.iter().map(|f| cluster(ns, cluster_name, instances, f.ready, f.phase)).collect();
    let pods: Vec<Vec<Value>> = frames
        .iter()
        .enumerate()
        .map(|(i, f)| {
            f.pods
                .iter()
                .map(|(n, u, r, ok)| {
                    let mut p = pod(ns, cluster_name, n, u, r, *ok, vols);
                    edit(i, &mut p);
                    p
                })
                .collect()
        })
        .collect();
    let mut cluster_events = Vec::new();
    for w in clusters.windows(2) {
        if w[0] != w[1] {
            cluster_events.push((WatchType::Modified, w[1].clone()));
        }
    }
    let mut pod_events = Vec::new();
    for w in pods.windows(2) {
        pod_events.extend(diff_events(&w[0], &w[1]));
    }
    (clusters, cluster_events, pods, pod_events)
}

/// Serves the Cluster and its pods as collections (list, watch, get) whose events take
/// them through `frames` in order: a watcher sees every change between two frames.
pub fn serve_frames(api: &FakeApi, ns: &str, cluster_name: &str, instances: u32, frames: &[Frame], vols: &[Vol]) {
    serve_frames_with(api, ns, cluster_name, instances, frames, vols, &|_, _| {})
}

/// [`serve_frames`] with each pod object edited by `edit` (frame index, pod).
pub fn serve_frames_with(
    api: &FakeApi,
    ns: &str,
    cluster_name: &str,
    instances: u32,
    frames: &[Frame],
    vols: &[Vol],
    edit: PodEdit,
) {
    let (clusters, cluster_events, pods, pod_events) =
        frame_objects_with(ns, cluster_name, instances, frames, vols, edit);
    api.serve_collection(
        &clusters_path(ns),
        "ClusterList",
        clusters.first().cloned().into_iter().collect(),
        cluster_events,
    );
    api.serve_collection(&pods_path(ns), "PodList", pods.first().cloned().unwrap_or_default(), pod_events);
}

/// [`serve_frames`] for a rollout caused by a request: the first frame is the state
/// before, pods are `vols_before` in it and `vols_after` in every later frame, and
/// nothing moves until a request for which `cause` is true has arrived.
#[allow(clippy::too_many_arguments)]
pub fn serve_frames_after(
    api: &FakeApi,
    ns: &str,
    cluster_name: &str,
    instances: u32,
    frames: &[Frame],
    vols_before: &[Vol],
    vols_after: &[Vol],
    cause: impl Fn(&RecordedRequest) -> bool + Send + Sync + 'static,
) {
    serve_frames_after_with(api, ns, cluster_name, instances, frames, vols_before, vols_after, &|_, _| {}, cause)
}

/// [`serve_frames_after`] with each pod object edited by `edit` (frame index, pod).
#[allow(clippy::too_many_arguments)]
pub fn serve_frames_after_with(
    api: &FakeApi,
    ns: &str,
    cluster_name: &str,
    instances: u32,
    frames: &[Frame],
    vols_before: &[Vol],
    vols_after: &[Vol],
    edit: PodEdit,
    cause: impl Fn(&RecordedRequest) -> bool + Send + Sync + 'static,
) {
    let (clusters, cluster_events, _, _) = frame_objects(ns, cluster_name, instances, frames, vols_after);
    // Pods: the ones of the first frame carry the old volumes; a pod keeps the volumes
    // it was created with (a uid seen in the first frame keeps `vols_before`).
    let first_uids: Vec<&str> = frames[0].pods.iter().map(|p| p.1).collect();
    let pods: Vec<Vec<Value>> = frames
        .iter()
        .enumerate()
        .map(|(i, f)| {
            f.pods
                .iter()
                .map(|(n, u, r, ok)| {
                    let v = if first_uids.contains(u) { vols_before } else { vols_after };
                    let mut p = pod(ns, cluster_name, n, u, r, *ok, v);
                    edit(i, &mut p);
                    p
                })
                .collect()
        })
        .collect();
    let mut pod_events = Vec::new();
    for w in pods.windows(2) {
        pod_events.extend(diff_events(&w[0], &w[1]));
    }
    let cause = Arc::new(cause);
    let c2 = cause.clone();
    api.serve_collection_after(
        &clusters_path(ns),
        "ClusterList",
        clusters.first().cloned().into_iter().collect(),
        cluster_events,
        move |r| cause(r),
    );
    api.serve_collection_after(
        &pods_path(ns),
        "PodList",
        pods.first().cloned().unwrap_or_default(),
        pod_events,
        move |r| c2(r),
    );
}

/// A 3-instance rolling update of the pod spec as `internal/controller/cluster_upgrade.go`
/// runs it with the default `primaryUpdateMethod: restart`: replicas replaced one at a
/// time (phase "Upgrading cluster", then "Waiting for the instances to become active"
/// between them), then the primary c-1 deleted and recreated (a pod-spec change cannot be
/// applied in place: phase "Primary instance is being restarted without a switchover").
/// `rolloutRequiredInstances` walks the instance list from its end, and the list is
/// sorted primary first, then by received and replayed LSN, then by pod name
/// (`pkg/postgres/status.go`, `PostgresqlStatusList.Less`): with replicas in step, c-3 goes
/// before c-2. Hand-written frames.
pub fn three_instance_rollout<'a>() -> Vec<Frame<'a>> {
    let p = |n, u, r, ok| (n, u, r, ok);
    vec![
        Frame {
            phase: HEALTHY,
            ready: 3,
            pods: vec![
                p("c-1", "uid-1a", "primary", true),
                p("c-2", "uid-2a", "replica", true),
                p("c-3", "uid-3a", "replica", true),
            ],
        },
        Frame {
            phase: UPGRADING,
            ready: 2,
            pods: vec![p("c-1", "uid-1a", "primary", true), p("c-2", "uid-2a", "replica", true)],
        },
        Frame {
            phase: UPGRADING,
            ready: 2,
            pods: vec![
                p("c-1", "uid-1a", "primary", true),
                p("c-2", "uid-2a", "replica", true),
                p("c-3", "uid-3b", "replica", false),
            ],
        },
        Frame {
            phase: WAITING,
            ready: 3,
            pods: vec![
                p("c-1", "uid-1a", "primary", true),
                p("c-2", "uid-2a", "replica", true),
                p("c-3", "uid-3b", "replica", true),
            ],
        },
        Frame {
            phase: UPGRADING,
            ready: 2,
            pods: vec![
                p("c-1", "uid-1a", "primary", true),
                p("c-2", "uid-2b", "replica", false),
                p("c-3", "uid-3b", "replica", true),
            ],
        },
        Frame {
            phase: UPGRADING,
            ready: 3,
            pods: vec![
                p("c-1", "uid-1a", "primary", true),
                p("c-2", "uid-2b", "replica", true),
                p("c-3", "uid-3b", "replica", true),
            ],
        },
        Frame {
            phase: PRIMARY_RESTART,
            ready: 2,
            pods: vec![p("c-3", "uid-3b", "replica", true), p("c-2", "uid-2b", "replica", true)],
        },
        Frame {
            phase: PRIMARY_RESTART,
            ready: 2,
            pods: vec![
                p("c-1", "uid-1b", "primary", false),
                p("c-2", "uid-2b", "replica", true),
                p("c-3", "uid-3b", "replica", true),
            ],
        },
        Frame {
            phase: HEALTHY,
            ready: 3,
            pods: vec![
                p("c-1", "uid-1b", "primary", true),
                p("c-2", "uid-2b", "replica", true),
                p("c-3", "uid-3b", "replica", true),
            ],
        },
    ]
}
