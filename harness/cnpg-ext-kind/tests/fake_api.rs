//! Orchestration and observation against an in-process fake Kubernetes API replaying
//! recorded object sequences. Every "bad sequence" test shows the failure.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cnpg_ext_kind::apply::cluster_resource;
use cnpg_ext_kind::exec::FakeExec;
use cnpg_ext_kind::inspect::{inspect_script, parse_inspect_output};
use cnpg_ext_kind::options::Timeouts;
use cnpg_ext_kind::preflight::{
    check_image_volume_gate, check_operator_for, check_runtime, check_server_version,
};
use cnpg_ext_kind::testing::fixtures::{self, Frame, Vol, HEALTHY};
use cnpg_ext_kind::testing::{query_param, status_body, FakeApi};
use cnpg_ext_kind::watch::{snapshot, Expect, RolloutObserver, RolloutWatch};
use cnpg_ext_kind::{KindBackend, KindOptions};
use cnpg_ext_model::backend::{
    ApplyOutcome, Backend, BackendError, InstanceObservation, Role, RolloutRecord,
};
use cnpg_ext_model::plan::{ClusterPlan, PlanOptions};
use cnpg_ext_model::CnpgVersion;
use common::*;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject};
use serde_json::{json, Value};

const NS: &str = "cnpg-ext-t";

fn fast_timeouts() -> Timeouts {
    Timeouts {
        operator: Duration::from_secs(30),
        cluster_ready: Duration::from_secs(30),
        rollout: Duration::from_secs(60),
        database: Duration::from_secs(30),
        settle: Duration::from_secs(2),
        poll: Duration::from_millis(500),
    }
}

fn opts(report: &std::path::Path) -> KindOptions {
    KindOptions {
        report_dir: report.to_path_buf(),
        timeouts: fast_timeouts(),
        ..Default::default()
    }
}

fn plan() -> ClusterPlan {
    ClusterPlan::derive(&cluster_doc(CLUSTER_YAML).cluster, &PlanOptions::default())
}

fn vols(keep_image: bool) -> Vec<Vol<'static>> {
    vec![
        Vol {
            volume: "ext-pgvector",
            image: "ghcr.io/cloudnative-pg/pgvector:0.8.1-18-trixie",
            mount: "/extensions/pgvector",
            keep_image,
        },
        Vol {
            volume: "ext-my-ext",
            image: "localhost/my-ext:1",
            mount: "/extensions/my_ext",
            keep_image,
        },
    ]
}

/// The verifier's rule, as the shared verification layer states it (`verify_rollout`):
/// every instance restarted exactly once, replicas before the primary.
fn judge(record: &RolloutRecord, instances: usize) -> Result<(), String> {
    let mut counts = std::collections::BTreeMap::new();
    for r in &record.restarts {
        *counts.entry(r.instance.clone()).or_insert(0) += 1;
    }
    for (name, n) in &counts {
        if *n != 1 {
            return Err(format!(
                "restarted exactly once: {name}: expected 1, actual {n}"
            ));
        }
    }
    if counts.len() != instances {
        return Err(format!(
            "{} of {instances} instances restarted",
            counts.len()
        ));
    }
    let primary_at = record.restarts.iter().position(|r| r.role == Role::Primary);
    let last_replica = record
        .restarts
        .iter()
        .rposition(|r| r.role == Role::Replica);
    match (primary_at, last_replica) {
        (Some(p), Some(r)) if p < r => Err(format!(
            "primary {} replaced before replica {}",
            record.restarts[p].instance, record.restarts[r].instance
        )),
        _ => Ok(()),
    }
}

async fn observe(api: &FakeApi, timeout: Duration) -> Result<RolloutRecord, BackendError> {
    let client = api.client();
    let clusters: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), NS, &cluster_resource());
    let pods: Api<Pod> = Api::namespaced(client, NS);
    let watch = RolloutWatch::start(&clusters, &pods, "c", timeout).await?;
    watch.finish(Expect::Rollout, timeout).await
}

#[tokio::test(start_paused = true)]
async fn rollout_replicas_then_primary_is_recorded_in_order() {
    let api = FakeApi::new();
    fixtures::serve_frames(
        &api,
        NS,
        "c",
        3,
        &fixtures::three_instance_rollout(),
        &vols(true),
    );
    let record = observe(&api, Duration::from_secs(60)).await.unwrap();
    let order: Vec<(&str, Role, &str, &str)> = record
        .restarts
        .iter()
        .map(|r| {
            (
                r.instance.as_str(),
                r.role,
                r.old_id.as_str(),
                r.new_id.as_str(),
            )
        })
        .collect();
    assert_eq!(
        order,
        vec![
            ("c-2", Role::Replica, "uid-2a", "uid-2b"),
            ("c-3", Role::Replica, "uid-3a", "uid-3b"),
            ("c-1", Role::Primary, "uid-1a", "uid-1b"),
        ]
    );
    assert_eq!(
        record.phases,
        vec![
            HEALTHY,
            "Upgrading cluster",
            "Waiting for the instances to become active",
            "Upgrading cluster",
            "Primary instance is being restarted without a switchover",
            HEALTHY
        ]
    );
    judge(&record, 3).unwrap();
}

#[tokio::test(start_paused = true)]
async fn primary_replaced_before_replicas_shows_in_the_record_and_fails_the_judge() {
    let p = |n, u, r, ok| (n, u, r, ok);
    let frames = vec![
        Frame {
            phase: HEALTHY,
            ready: 3,
            pods: vec![
                p("c-1", "1a", "primary", true),
                p("c-2", "2a", "replica", true),
                p("c-3", "3a", "replica", true),
            ],
        },
        Frame {
            phase: "Upgrading cluster",
            ready: 2,
            pods: vec![
                p("c-1", "1b", "replica", false),
                p("c-2", "2a", "primary", true),
                p("c-3", "3a", "replica", true),
            ],
        },
        Frame {
            phase: "Upgrading cluster",
            ready: 2,
            pods: vec![
                p("c-1", "1b", "replica", true),
                p("c-2", "2a", "primary", true),
                p("c-3", "3b", "replica", false),
            ],
        },
        Frame {
            phase: "Upgrading cluster",
            ready: 2,
            pods: vec![
                p("c-1", "1b", "replica", true),
                p("c-2", "2b", "primary", false),
                p("c-3", "3b", "replica", true),
            ],
        },
        Frame {
            phase: HEALTHY,
            ready: 3,
            pods: vec![
                p("c-1", "1b", "replica", true),
                p("c-2", "2b", "primary", true),
                p("c-3", "3b", "replica", true),
            ],
        },
    ];
    let api = FakeApi::new();
    fixtures::serve_frames(&api, NS, "c", 3, &frames, &vols(true));
    let record = observe(&api, Duration::from_secs(60)).await.unwrap();
    assert_eq!(record.restarts[0].instance, "c-1");
    assert_eq!(
        record.restarts[0].role,
        Role::Primary,
        "the role is the one held when the rollout began"
    );
    let verdict = judge(&record, 3).unwrap_err();
    assert!(
        verdict.contains("primary c-1 replaced before replica"),
        "{verdict}"
    );
}

#[tokio::test(start_paused = true)]
async fn rollout_that_never_finishes_times_out_naming_what_and_last_state() {
    let mut frames = fixtures::three_instance_rollout();
    frames.truncate(5); // c-2 replaced, then nothing more happens
    let api = FakeApi::new();
    fixtures::serve_frames(&api, NS, "c", 3, &frames, &vols(true));
    let err = observe(&api, Duration::from_secs(30)).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, BackendError::Failed(_)));
    assert!(
        msg.contains("timed out after 30s waiting for the rolling update of Cluster cnpg-ext-t/c"),
        "{msg}"
    );
    assert!(
        msg.contains("last state: phase \"Waiting for the instances to become active\""),
        "{msg}"
    );
    assert!(
        msg.contains("replaced [c-2]; not yet replaced [c-1, c-3]"),
        "{msg}"
    );
}

#[tokio::test(start_paused = true)]
async fn settle_mode_returns_empty_record_when_nothing_rolls() {
    let api = FakeApi::new();
    let frames = fixtures::three_instance_rollout();
    fixtures::serve_frames(&api, NS, "c", 3, &frames[..1], &vols(true));
    let client = api.client();
    let clusters: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), NS, &cluster_resource());
    let pods: Api<Pod> = Api::namespaced(client, NS);
    let watch = RolloutWatch::start(&clusters, &pods, "c", Duration::from_secs(60))
        .await
        .unwrap();
    let t0 = tokio::time::Instant::now();
    let rec = watch
        .finish(
            Expect::MaybeNothing {
                settle: Duration::from_secs(5),
            },
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(
        t0.elapsed(),
        Duration::from_secs(5),
        "returns when the settle time is over"
    );
    assert!(rec.restarts.is_empty());
}

/// A replica replaced twice (2a → 2b → 2c) between two reads of the pod list: a poll sees
/// one change, the watch reports both and the verifier's "restarted exactly once" fails.
#[tokio::test(start_paused = true)]
async fn pod_replaced_twice_between_two_lists_is_recorded_twice() {
    let v = vols(true);
    let pod = |n: &str, u: &str, r: &str, ok: bool| fixtures::pod(NS, "c", n, u, r, ok, &v);
    let mut job = pod("c-1-initdb", "job-1", "primary", true);
    job["metadata"]["labels"] = json!({"cnpg.io/cluster": "c", "cnpg.io/jobRole": "initdb"});
    let other = fixtures::pod(NS, "other", "other-1", "o-1", "primary", true, &v);
    use cnpg_ext_kind::testing::WatchType::{Added, Deleted, Modified};
    let pod_events = vec![
        (Deleted, pod("c-2", "2a", "replica", true)),
        (Added, pod("c-2", "2b", "replica", false)),
        (Added, job.clone()),
        (Modified, pod("c-2", "2b", "replica", true)),
        (Deleted, pod("c-2", "2b", "replica", true)),
        (Added, other.clone()),
        (Added, pod("c-2", "2c", "replica", false)),
        (Modified, pod("c-2", "2c", "replica", true)),
        (Deleted, job),
        (Deleted, pod("c-3", "3a", "replica", true)),
        (Added, pod("c-3", "3b", "replica", true)),
        (Deleted, pod("c-1", "1a", "primary", true)),
        (Added, pod("c-1", "1b", "primary", false)),
        (Modified, pod("c-1", "1b", "primary", true)),
    ];
    let initial = vec![
        pod("c-1", "1a", "primary", true),
        pod("c-2", "2a", "replica", true),
        pod("c-3", "3a", "replica", true),
    ];
    let api = FakeApi::new();
    api.serve_collection(&fixtures::pods_path(NS), "PodList", initial, pod_events);
    let phase = |p: &str, ready| (Modified, fixtures::cluster(NS, "c", 3, ready, p));
    api.serve_collection(
        &fixtures::clusters_path(NS),
        "ClusterList",
        vec![fixtures::cluster(NS, "c", 3, 3, HEALTHY)],
        vec![
            phase("Upgrading cluster", 2),
            phase(
                "Primary instance is being restarted without a switchover",
                2,
            ),
            phase(HEALTHY, 3),
        ],
    );
    let client = api.client();
    let clusters: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), NS, &cluster_resource());
    let pods: Api<Pod> = Api::namespaced(client, NS);

    // What a poller sees: one list before the rollout, one after.
    let (phase0, before) = snapshot(&clusters, &pods, "c").await.unwrap();
    let mut poller = RolloutObserver::new(&before, phase0.as_deref());

    let watch = RolloutWatch::start(&clusters, &pods, "c", Duration::from_secs(60))
        .await
        .unwrap();
    let record = watch
        .finish(Expect::Rollout, Duration::from_secs(60))
        .await
        .unwrap();
    let (phase1, after) = snapshot(&clusters, &pods, "c").await.unwrap();
    poller.observe(phase1.as_deref(), &after, chrono::Utc::now());
    assert_eq!(
        poller
            .record()
            .restarts
            .iter()
            .map(|r| r.instance.as_str())
            .collect::<Vec<_>>(),
        ["c-1", "c-2", "c-3"],
        "two lists show c-2 replaced once (2a → 2c)"
    );

    let seen: Vec<(&str, &str, &str)> = record
        .restarts
        .iter()
        .map(|r| (r.instance.as_str(), r.old_id.as_str(), r.new_id.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("c-2", "2a", "2b"),
            ("c-2", "2b", "2c"),
            ("c-3", "3a", "3b"),
            ("c-1", "1a", "1b")
        ],
        "every UID change in order; the job pod and the other Cluster's pod are not instances"
    );
    assert_eq!(
        judge(&record, 3).unwrap_err(),
        "restarted exactly once: c-2: expected 1, actual 2"
    );

    // The pods were watched with the Cluster's label, the Cluster by name, each from the
    // resourceVersion of its initial list.
    let watches: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.is_watch())
        .collect();
    let pod_watch = watches
        .iter()
        .find(|r| r.path == fixtures::pods_path(NS))
        .expect("a pod watch");
    assert_eq!(
        query_param(&pod_watch.query, "labelSelector").as_deref(),
        Some("cnpg.io/cluster=c")
    );
    assert_eq!(
        query_param(&pod_watch.query, "resourceVersion").as_deref(),
        Some("100")
    );
    let cluster_watch = watches
        .iter()
        .find(|r| r.path == fixtures::clusters_path(NS))
        .expect("a Cluster watch");
    assert_eq!(
        query_param(&cluster_watch.query, "fieldSelector").as_deref(),
        Some("metadata.name=c")
    );
    assert_eq!(record.phases.last().map(String::as_str), Some(HEALTHY));
}

#[test]
fn relist_replaces_the_pod_set_and_records_uid_changes() {
    let view = |n: &str, u: &str, ready| cnpg_ext_kind::watch::PodView {
        name: n.into(),
        uid: u.into(),
        role: Some(Role::Replica),
        ready,
        deleting: false,
    };
    let mut o = RolloutObserver::new(
        &[view("c-1", "a", true), view("c-2", "b", true)],
        Some(HEALTHY),
    );
    let now = chrono::Utc::now();
    o.pod_gone(&view("c-2", "b", true));
    assert!(!o.settled(2));
    // A relist (after the watch lost its place) shows c-1 replaced and c-2 back.
    o.replace_pods(&[view("c-1", "a2", true), view("c-2", "b", true)], now);
    assert_eq!(o.record().restarts.len(), 1);
    assert!(o.settled(2));
    o.replace_pods(&[view("c-1", "a2", true)], now);
    assert!(!o.settled(2), "c-2 is gone after a relist without it");
    assert!(
        o.summary().contains("pods [c-1 replica ready uid a2]"),
        "{}",
        o.summary()
    );
}

fn ready_cluster() -> Value {
    fixtures::cluster(NS, "c", 3, 3, HEALTHY)
}

fn backend(api: &FakeApi, report: &std::path::Path, exec: Arc<FakeExec>) -> KindBackend {
    KindBackend::new(api.client(), NS, vec![], opts(report)).with_exec(exec)
}

fn route_namespace(api: &FakeApi) {
    api.on(
        "PATCH",
        &format!("/api/v1/namespaces/{NS}"),
        vec![json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})],
    );
}

#[tokio::test(start_paused = true)]
async fn apply_creates_by_server_side_apply_and_waits_ready() {
    let api = FakeApi::new();
    route_namespace(&api);
    let cpath = fixtures::cluster_path(NS, "c");
    api.on_responses(
        "GET",
        &cpath,
        vec![
            (
                404,
                status_body(
                    404,
                    "NotFound",
                    "clusters.postgresql.cnpg.io \"c\" not found",
                ),
            ),
            (200, fixtures::cluster(NS, "c", 3, 1, "Setting up primary")),
            (
                200,
                fixtures::cluster(NS, "c", 3, 2, "Creating a new replica"),
            ),
            (200, ready_cluster()),
        ],
    );
    api.on("PATCH", &cpath, vec![ready_cluster()]);
    let tmp = tempfile::tempdir().unwrap();
    let mut b = backend(&api, tmp.path(), Arc::new(FakeExec::default()));
    let outcome = b.apply_cluster(&cluster_doc(CLUSTER_YAML)).await.unwrap();
    assert_eq!(outcome, ApplyOutcome::Created);
    let patches = api.requests_to("PATCH", &cpath);
    assert_eq!(patches.len(), 1);
    let p = &patches[0];
    assert!(
        p.query.contains("fieldManager=cnpg-ext-harness") && p.query.contains("force=true"),
        "{}",
        p.query
    );
    assert_eq!(p.content_type, "application/apply-patch+yaml");
    let body = p.body.as_ref().unwrap();
    assert_eq!(body["metadata"]["namespace"], NS);
    assert_eq!(
        body["spec"]["storage"]["size"], "1Gi",
        "fields outside the typed model are applied too"
    );
    assert_eq!(
        body["spec"]["postgresql"]["extensions"][0]["image"]["pullPolicy"],
        "IfNotPresent"
    );
    assert_eq!(api.requests_to("GET", &cpath).len(), 4);
}

#[tokio::test(start_paused = true)]
async fn cluster_that_never_gets_ready_times_out_with_last_phase() {
    let api = FakeApi::new();
    route_namespace(&api);
    let cpath = fixtures::cluster_path(NS, "c");
    api.on_responses(
        "GET",
        &cpath,
        vec![
            (404, status_body(404, "NotFound", "not found")),
            (200, fixtures::cluster(NS, "c", 3, 1, "Setting up primary")),
        ],
    );
    api.on("PATCH", &cpath, vec![ready_cluster()]);
    let tmp = tempfile::tempdir().unwrap();
    let mut b = backend(&api, tmp.path(), Arc::new(FakeExec::default()));
    let err = b
        .apply_cluster(&cluster_doc(CLUSTER_YAML))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("timed out after 30s waiting for Cluster cnpg-ext-t/c: 3 ready instance(s) and phase \"Cluster in healthy state\""), "{err}");
    assert!(
        err.contains("last state: phase \"Setting up primary\", readyInstances 1/3"),
        "{err}"
    );
    assert!(err.contains("diagnostics:"), "{err}");
    assert!(tmp
        .path()
        .join("diagnostics")
        .join(NS)
        .join("errors.txt")
        .exists());
}

#[tokio::test(start_paused = true)]
async fn webhook_rejection_is_rejected_with_the_webhook_message() {
    let api = FakeApi::new();
    route_namespace(&api);
    let cpath = fixtures::cluster_path(NS, "c");
    api.on_responses(
        "GET",
        &cpath,
        vec![(404, status_body(404, "NotFound", "not found"))],
    );
    let msg = "admission webhook \"vcluster.cnpg.io\" denied the request: Cluster.postgresql.cnpg.io \"c\" is invalid: spec.postgresql.extensions[1].name: Invalid value: \"my_ext\": must be a DNS-1123 label";
    api.on_responses(
        "PATCH",
        &cpath,
        vec![(400, status_body(400, "BadRequest", msg))],
    );
    let tmp = tempfile::tempdir().unwrap();
    let mut b = backend(&api, tmp.path(), Arc::new(FakeExec::default()));
    let err = b
        .apply_cluster(&cluster_doc(CLUSTER_YAML))
        .await
        .unwrap_err();
    match &err {
        BackendError::Rejected(m) => {
            assert!(m.contains(msg), "{m}");
            assert!(
                m.contains("server-side apply of Cluster cnpg-ext-t/c"),
                "{m}"
            );
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert!(b.last_diagnostics().is_some());
}

#[tokio::test(start_paused = true)]
async fn restart_merge_patches_the_annotation_and_records_the_rollout() {
    let api = FakeApi::new();
    route_namespace(&api);
    let frames = fixtures::three_instance_rollout();
    let cpath = fixtures::cluster_path(NS, "c");
    api.on_responses(
        "GET",
        &cpath,
        vec![
            (404, status_body(404, "NotFound", "not found")),
            (200, ready_cluster()),
        ],
    );
    fixtures::serve_frames(&api, NS, "c", 3, &frames, &vols(true));
    api.on("PATCH", &cpath, vec![ready_cluster()]);
    let tmp = tempfile::tempdir().unwrap();
    let mut b = backend(&api, tmp.path(), Arc::new(FakeExec::default()));
    b.apply_cluster(&cluster_doc(CLUSTER_YAML)).await.unwrap();
    let record = b.restart().await.unwrap();
    let merge: Vec<_> = api
        .requests_to("PATCH", &cpath)
        .into_iter()
        .filter(|r| r.content_type == "application/merge-patch+json")
        .collect();
    assert_eq!(merge.len(), 1);
    let at = merge[0].body.as_ref().unwrap()["metadata"]["annotations"]
        ["kubectl.kubernetes.io/restartedAt"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(chrono::DateTime::parse_from_rfc3339(&at).is_ok(), "{at}");
    assert_eq!(
        record
            .restarts
            .iter()
            .map(|r| r.instance.as_str())
            .collect::<Vec<_>>(),
        ["c-2", "c-3", "c-1"]
    );
    let inst = b.instances().await.unwrap();
    assert_eq!(
        inst.iter()
            .map(|i| (i.name.as_str(), i.role))
            .collect::<Vec<_>>(),
        [
            ("c-1", Role::Primary),
            ("c-2", Role::Replica),
            ("c-3", Role::Replica)
        ]
    );
}

fn serve_pod(api: &FakeApi, keep_image: bool) {
    api.on(
        "GET",
        &format!("{}/c-1", fixtures::pods_path(NS)),
        vec![fixtures::pod(
            NS,
            "c",
            "c-1",
            "uid-1",
            "primary",
            true,
            &vols(keep_image),
        )],
    );
}

#[tokio::test]
async fn pod_stored_without_image_volume_is_an_error_naming_the_pod() {
    let api = FakeApi::new();
    serve_pod(&api, false);
    let tmp = tempfile::tempdir().unwrap();
    let b = backend(&api, tmp.path(), Arc::new(FakeExec::with("c-1", "")));
    let err = b.inspect("c-1", &plan()).await.unwrap_err();
    let m = err.to_string();
    assert!(
        m.contains("pod cnpg-ext-t/c-1 has no volume `ext-pgvector`"),
        "{m}"
    );
    assert!(m.contains("ImageVolume feature gate is off"), "{m}");
}

#[tokio::test]
async fn preflight_probe_detects_the_gate_off() {
    let api = FakeApi::new();
    let mut dropped =
        serde_json::to_value(cnpg_ext_kind::preflight::image_volume_probe_pod("default")).unwrap();
    dropped["spec"]["volumes"] = json!([]);
    api.on("POST", "/api/v1/namespaces/default/pods", vec![dropped]);
    let err = check_image_volume_gate(&api.client(), "default")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, BackendError::Unusable(m) if m.contains("ImageVolume feature gate is off") && m.contains("default/cnpg-ext-imagevolume-probe")),
        "{err}"
    );
    let req = &api.requests()[0];
    assert!(req.query.contains("dryRun=All"), "{}", req.query);

    let on = FakeApi::new();
    let kept =
        serde_json::to_value(cnpg_ext_kind::preflight::image_volume_probe_pod("default")).unwrap();
    on.on("POST", "/api/v1/namespaces/default/pods", vec![kept]);
    check_image_volume_gate(&on.client(), "default")
        .await
        .unwrap();
}

fn verify_files(obs: &InstanceObservation) -> Result<(), String> {
    for m in &obs.mounts {
        if !m.present || m.files.is_empty() {
            return Err(format!("{}: mount {} has no files", obs.instance, m.path));
        }
    }
    Ok(())
}

#[tokio::test]
async fn empty_mount_comes_back_present_with_no_files() {
    let api = FakeApi::new();
    serve_pod(&api, true);
    let out = "@@pid 42\n@@environ read\n@@mount present /extensions/pgvector\n@@write refused /extensions/pgvector\n@@mount present /extensions/my_ext\n@@write refused /extensions/my_ext\n";
    let exec = Arc::new(FakeExec::with("c-1", out));
    let tmp = tempfile::tempdir().unwrap();
    let b = backend(&api, tmp.path(), exec.clone());
    let obs = b.inspect("c-1", &plan()).await.unwrap();
    assert!(obs
        .mounts
        .iter()
        .all(|m| m.present && m.files.is_empty() && m.read_only == Some(true)));
    assert_eq!(obs.ld_library_path, None);
    assert!(verify_files(&obs).unwrap_err().contains("has no files"));
    let calls = exec.calls.lock().unwrap();
    assert_eq!(calls[0].1, "postgres");
    assert_eq!(&calls[0].2[..2], ["sh", "-c"]);
}

#[tokio::test]
async fn inspect_reports_files_and_the_postmaster_environment() {
    let api = FakeApi::new();
    serve_pod(&api, true);
    let out = "@@pid 17\n@@env LD_LIBRARY_PATH=/extensions/my_ext/system\n@@environ read\n\
               @@mount present /extensions/pgvector\n@@file /extensions/pgvector share/extension/vector.control\n\
               @@file /extensions/pgvector lib/vector.so\n@@write refused /extensions/pgvector\n\
               @@mount present /extensions/my_ext\n@@file /extensions/my_ext system/libgreet.so.1\n@@write allowed /extensions/my_ext\n";
    let tmp = tempfile::tempdir().unwrap();
    let b = backend(&api, tmp.path(), Arc::new(FakeExec::with("c-1", out)));
    let obs = b.inspect("c-1", &plan()).await.unwrap();
    assert_eq!(
        obs.ld_library_path.as_deref(),
        Some("/extensions/my_ext/system")
    );
    assert_eq!(
        obs.mounts[0].files,
        ["lib/vector.so", "share/extension/vector.control"]
    );
    assert_eq!(obs.mounts[1].read_only, Some(false));
    verify_files(&obs).unwrap();
}

#[test]
fn inspect_output_without_a_postmaster_is_an_error() {
    let err = parse_inspect_output("c-2", &plan(), "@@pid \n").unwrap_err();
    assert!(
        err.to_string().contains("instance c-2: no postmaster pid"),
        "{err}"
    );
    let absent = parse_inspect_output(
        "c-2",
        &plan(),
        "@@pid 5\n@@environ read\n@@mount absent /extensions/pgvector\n",
    )
    .unwrap();
    assert!(!absent.mounts[0].present);
}

#[test]
fn inspect_script_snapshot() {
    snap!(insta::assert_snapshot!(
        "inspect-script",
        inspect_script(&plan())
    ));
}

#[tokio::test(start_paused = true)]
async fn database_applied_and_not_applied() {
    let api = FakeApi::new();
    route_namespace(&api);
    let dpath = fixtures::database_path(NS, "app");
    let db = |applied: bool, msg: &str| {
        json!({"apiVersion": "postgresql.cnpg.io/v1", "kind": "Database", "metadata": {"name": "app", "namespace": NS, "generation": 1},
               "spec": {"name": "app", "owner": "app", "cluster": {"name": "c"}},
               "status": {"applied": applied, "observedGeneration": 1, "message": msg,
                          "extensions": [{"name": "vector", "applied": applied, "message": msg}]}})
    };
    let pending = json!({"apiVersion": "postgresql.cnpg.io/v1", "kind": "Database", "metadata": {"name": "app", "namespace": NS, "generation": 1}, "spec": {}});
    api.on("PATCH", &dpath, vec![pending.clone()]);
    api.on("GET", &dpath, vec![pending.clone(), db(true, "")]);
    let database = cnpg_ext_model::Database {
        api_version: "postgresql.cnpg.io/v1".into(),
        kind: "Database".into(),
        metadata: cnpg_ext_model::cluster::ObjectMeta {
            name: "app".into(),
            ..Default::default()
        },
        spec: cnpg_ext_model::cluster::DatabaseSpec {
            name: "app".into(),
            owner: "app".into(),
            cluster: cnpg_ext_model::cluster::LocalObjectReference { name: "c".into() },
            extensions: vec![],
        },
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut b = backend(&api, tmp.path(), Arc::new(FakeExec::default()));
    assert_eq!(
        b.apply_database(&cnpg_ext_model::DatabaseDoc::from_typed(database.clone()))
            .await
            .unwrap(),
        ["vector: applied=true"]
    );

    let bad = FakeApi::new();
    route_namespace(&bad);
    bad.on("PATCH", &dpath, vec![pending]);
    bad.on(
        "GET",
        &dpath,
        vec![db(false, "extension \"vector\" is not available")],
    );
    let mut b = backend(&bad, tmp.path(), Arc::new(FakeExec::default()));
    let err = b
        .apply_database(&cnpg_ext_model::DatabaseDoc::from_typed(database.clone()))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Database cnpg-ext-t/app was not applied") && err.contains("is not available"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn operator_readiness_waits_for_deployment_and_webhook() {
    let dpath = "/apis/apps/v1/namespaces/cnpg-system/deployments/cnpg-controller-manager";
    let dep = |available: i32| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "cnpg-controller-manager", "namespace": "cnpg-system", "generation": 1},
               "spec": {"replicas": 1, "selector": {}, "template": {}},
               "status": {"observedGeneration": 1, "updatedReplicas": 1, "availableReplicas": available, "replicas": 1,
                          "conditions": [{"type": "Available", "status": if available > 0 {"True"} else {"False"}, "message": "Deployment does not have minimum availability."}]}})
    };
    let api = FakeApi::new();
    api.on("GET", dpath, vec![dep(0), dep(1)]);
    let probe_path = "/apis/postgresql.cnpg.io/v1/namespaces/default/clusters";
    api.on_responses(
        "POST",
        probe_path,
        vec![
            (500, status_body(500, "InternalError", "Internal error occurred: failed calling webhook \"mcluster.cnpg.io\": connect: connection refused")),
            (200, json!({"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster", "metadata": {"name": "cnpg-ext-webhook-probe"}})),
        ],
    );
    cnpg_ext_kind::operator::wait_operator_ready(&api.client(), "cnpg-system", &fast_timeouts())
        .await
        .unwrap();
    assert_eq!(api.requests_to("POST", probe_path).len(), 2);
    assert!(api.requests_to("POST", probe_path)[0]
        .query
        .contains("dryRun=All"));

    let never = FakeApi::new();
    never.on("GET", dpath, vec![dep(0)]);
    let err = cnpg_ext_kind::operator::wait_operator_ready(
        &never.client(),
        "cnpg-system",
        &fast_timeouts(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("waiting for Deployment cnpg-system/cnpg-controller-manager: all replicas updated and available"), "{err}");
    assert!(
        err.contains("available 0") && err.contains("Available=False"),
        "{err}"
    );
}

#[tokio::test]
async fn installed_operator_version_comes_from_the_image_tag() {
    let api = FakeApi::new();
    api.on(
        "GET",
        "/apis/apps/v1/deployments",
        vec![fixtures::list(
            "Deployment",
            vec![json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "cnpg-controller-manager", "namespace": "cnpg-system"},
                        "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "manager", "image": "ghcr.io/cloudnative-pg/cloudnative-pg:1.27.2"}]}}}})],
        )],
    );
    let op = cnpg_ext_kind::operator::installed_operator(&api.client())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(op.version, Some(CnpgVersion::new(1, 27, 2)));
    assert!(
        api.requests()[0]
            .query
            .contains("labelSelector=app.kubernetes.io%2Fname%3Dcloudnative-pg"),
        "{}",
        api.requests()[0].query
    );
    // Too old for underscore names: exit-3 error naming the Cluster and extension.
    let c = cluster_doc(CLUSTER_YAML).cluster;
    let err = check_operator_for(op.version.unwrap(), &[&c]).unwrap_err();
    assert!(
        matches!(&err, BackendError::Unusable(m) if m.contains("`my_ext`") && m.contains("1.27.3")),
        "{err}"
    );
    check_operator_for(CnpgVersion::new(1, 27, 3), &[&c]).unwrap();
    assert!(check_operator_for(CnpgVersion::new(1, 26, 1), &[]).is_err());
}

#[test]
fn server_version_and_runtimes() {
    let info = |minor: &str| k8s_openapi::apimachinery::pkg::version::Info {
        major: "1".into(),
        minor: minor.into(),
        git_version: format!("v1.{}.0", minor.trim_end_matches('+')),
        ..Default::default()
    };
    let old = check_server_version(&info("32")).unwrap_err();
    assert!(
        matches!(&old, BackendError::Unusable(m) if m.contains("v1.32.0 is too old")),
        "{old}"
    );
    assert_eq!(check_server_version(&info("33+")).unwrap(), (1, 33));
    assert!(check_runtime("n", "containerd://2.1.1").is_ok());
    assert!(check_runtime("n", "containerd://2.0.5")
        .unwrap_err()
        .contains("containerd ≥ 2.1"));
    assert!(check_runtime("n", "cri-o://1.31.2").is_ok());
    assert!(check_runtime("n", "cri-o://1.30.9").is_err());
    assert!(check_runtime("n", "docker://27.0.0")
        .unwrap_err()
        .contains("node n runs `docker`"));
}

#[tokio::test]
async fn teardown_deletes_the_namespace_unless_kept() {
    let api = FakeApi::new();
    route_namespace(&api);
    api.on(
        "DELETE",
        &format!("/api/v1/namespaces/{NS}"),
        vec![json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})],
    );
    api.on_responses("GET", &fixtures::database_path(NS, "x"), vec![]);
    let tmp = tempfile::tempdir().unwrap();
    let mut b = backend(&api, tmp.path(), Arc::new(FakeExec::default()));
    // Nothing created yet: nothing to delete.
    b.teardown(false).await.unwrap();
    assert!(api
        .requests_to("DELETE", &format!("/api/v1/namespaces/{NS}"))
        .is_empty());
    let mut kept = backend(&api, tmp.path(), Arc::new(FakeExec::default()));
    kept.teardown(true).await.unwrap();
    assert!(api.requests().is_empty());
}

/// Runs against a real release manifest when one is given (not shipped in the repo):
/// `CNPG_EXT_OPERATOR_MANIFEST=cnpg-1.28.2.yaml cargo test -p cnpg-ext-kind --test fake_api -- --ignored`.
#[test]
#[ignore = "needs CNPG_EXT_OPERATOR_MANIFEST=<a downloaded cnpg-<v>.yaml>"]
fn parses_a_real_release_manifest() {
    let path = std::env::var("CNPG_EXT_OPERATOR_MANIFEST").expect("CNPG_EXT_OPERATOR_MANIFEST");
    let text = std::fs::read_to_string(&path).unwrap();
    let t = std::time::Instant::now();
    let docs = cnpg_ext_kind::operator::apply_order(
        cnpg_ext_kind::operator::parse_manifest(&text).unwrap(),
    );
    let order = cnpg_ext_kind::operator::describe(&docs);
    eprintln!(
        "{} documents in {:?} (sha256 {}):\n{}",
        docs.len(),
        t.elapsed(),
        cnpg_ext_kind::versions::sha256_hex(text.as_bytes()),
        order.join("\n")
    );
    assert_eq!(order[0], "Namespace cnpg-system");
    assert!(order
        .iter()
        .any(|o| o == "Deployment cnpg-system/cnpg-controller-manager"));
}

/// The inspection script really works in a POSIX shell: a stand-in "postmaster" with
/// `LD_LIBRARY_PATH` set, a `postmaster.pid`, one mount with files and one empty.
#[cfg(target_os = "linux")]
#[test]
fn inspect_script_runs_in_sh() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("extensions");
    std::fs::create_dir_all(root.join("pgvector/lib")).unwrap();
    std::fs::create_dir_all(root.join("pgvector/share/extension")).unwrap();
    std::fs::write(root.join("pgvector/lib/vector.so"), b"x").unwrap();
    std::fs::write(root.join("pgvector/share/extension/vector.control"), b"x").unwrap();
    std::fs::create_dir_all(root.join("my_ext")).unwrap();
    let plan = ClusterPlan::derive(
        &cluster_doc(CLUSTER_YAML).cluster,
        &PlanOptions {
            mount_root: root.display().to_string(),
            cnpg: CnpgVersion::DEFAULT,
        },
    );
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .env("LD_LIBRARY_PATH", "/extensions/my_ext/system")
        .spawn()
        .unwrap();
    let pgdata = tmp.path().join("pgdata");
    std::fs::create_dir_all(&pgdata).unwrap();
    std::fs::write(
        pgdata.join("postmaster.pid"),
        format!("{}\n{}\n", child.id(), pgdata.display()),
    )
    .unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(inspect_script(&plan))
        .env("PGDATA", &pgdata)
        .output()
        .unwrap();
    child.kill().unwrap();
    let _ = child.wait();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let obs = parse_inspect_output("c-1", &plan, &stdout).unwrap();
    assert_eq!(
        obs.ld_library_path.as_deref(),
        Some("/extensions/my_ext/system"),
        "{stdout}"
    );
    assert_eq!(
        obs.mounts[0].files,
        ["lib/vector.so", "share/extension/vector.control"],
        "{stdout}"
    );
    assert!(
        obs.mounts[1].present && obs.mounts[1].files.is_empty(),
        "{stdout}"
    );
    // A writable directory (here) is reported as such; image volumes refuse the write.
    assert_eq!(obs.mounts[0].read_only, Some(false));
    assert!(!root.join("pgvector/.cnpg-ext-write-probe").exists());
}
