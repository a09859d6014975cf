//! Orchestration and observation against an in-process fake Kubernetes API replaying
//! object sequences shaped after the operator's source (hand-written, see
//! `cnpg_ext_kind::testing::fixtures`). Every "bad sequence" test shows the failure, and
//! rollouts are judged by the one verifier (`cnpg_ext_model::judge`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use cnpg_ext_backend::Backend;
use cnpg_ext_kind::apply::cluster_resource;
use cnpg_ext_kind::inspect::{inspect_script, parse_inspect_output};
use cnpg_ext_kind::options::Timeouts;
use cnpg_ext_kind::preflight::{check_image_volume_gate, check_operator_for, check_runtime, check_server_version};
use cnpg_ext_kind::testing::fixtures::{self, instance_states, Frame, Vol, HEALTHY};
use cnpg_ext_kind::testing::FakeExec;
use cnpg_ext_kind::testing::{query_param, status_body, FakeApi, RecordedRequest};
use cnpg_ext_kind::watch::{snapshot, Expect, RolloutObserver, RolloutWatch};
use cnpg_ext_kind::{KindBackend, KindOptions};
use cnpg_ext_model::backend::{ApplyOutcome, BackendError, Role, RolloutRecord};
use cnpg_ext_model::judge::{verify_rollout, Check};
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
        database: Duration::from_secs(120),
        database_retry: Duration::from_secs(35),
        forbidden_retry: Duration::from_secs(10),
        poll: Duration::from_millis(500),
    }
}

fn opts(report: &std::path::Path) -> KindOptions {
    KindOptions { report_dir: report.to_path_buf(), timeouts: fast_timeouts(), ..Default::default() }
}

fn plan() -> ClusterPlan {
    ClusterPlan::derive(&cluster_doc(CLUSTER_YAML).cluster, &PlanOptions::default())
}

const PGVECTOR: &str = "ghcr.io/cloudnative-pg/pgvector:0.8.1-18-trixie";

fn vols(keep_image: bool) -> Vec<Vol<'static>> {
    vols_with(PGVECTOR, keep_image)
}

fn vols_with(pgvector: &'static str, keep_image: bool) -> Vec<Vol<'static>> {
    vec![
        Vol { volume: "ext-pgvector", image: pgvector, mount: "/extensions/pgvector", keep_image },
        Vol { volume: "ext-my-ext", image: "localhost/my-ext:1", mount: "/extensions/my_ext", keep_image },
    ]
}

/// The checks of the one verifier that failed.
fn failed(checks: Vec<Check>) -> Vec<Check> {
    checks.into_iter().filter(|c| !c.ok).collect()
}

/// The rollout judged by the one verifier, with the instances' states read from the pods
/// of the first and the last frame.
fn judge_frames(record: &RolloutRecord, frames: &[Frame], vols: &[Vol]) -> Vec<Check> {
    let pods = |f: &Frame| -> Vec<Value> {
        f.pods.iter().map(|(n, u, r, ok)| fixtures::pod(NS, "c", n, u, r, *ok, vols)).collect()
    };
    let before = instance_states(&pods(&frames[0]));
    let after = instance_states(&pods(frames.last().unwrap()));
    verify_rollout(record, &before, &after, &Default::default())
}

async fn observe(api: &FakeApi, timeout: Duration) -> Result<RolloutRecord, BackendError> {
    let client = api.client();
    let clusters: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &cluster_resource());
    let pods: Api<Pod> = Api::namespaced(client, NS);
    let watch = RolloutWatch::start(&clusters, &pods, "c", timeout).await?;
    watch.finish(Expect::Rollout, timeout).await
}

#[tokio::test(start_paused = true)]
async fn rollout_replicas_then_primary_is_recorded_in_order() {
    let api = FakeApi::new();
    fixtures::serve_frames(&api, NS, "c", 3, &fixtures::three_instance_rollout(), &vols(true));
    let record = observe(&api, Duration::from_secs(60)).await.unwrap();
    let order: Vec<(&str, Role, &str, &str)> =
        record.restarts.iter().map(|r| (r.instance.as_str(), r.role, r.old_id.as_str(), r.new_id.as_str())).collect();
    assert_eq!(
        order,
        vec![
            ("c-3", Role::Replica, "uid-3a", "uid-3b"),
            ("c-2", Role::Replica, "uid-2a", "uid-2b"),
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
    let frames = fixtures::three_instance_rollout();
    let checks = judge_frames(&record, &frames, &vols(true));
    // Per instance: restarted once, start time moved; the record's order; the measured order.
    assert_eq!(checks.len(), 8, "{checks:?}");
    assert!(failed(checks).is_empty());
}

/// Hand-written wrong order: the operator switches the primary over to c-2 (phase
/// "Switchover in progress", roles swapped, same pods) and replaces c-1, the primary when
/// the rollout began, before the replicas. The verifier must refuse it.
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
            phase: fixtures::SWITCHOVER,
            ready: 3,
            pods: vec![
                p("c-1", "1a", "replica", true),
                p("c-2", "2a", "primary", true),
                p("c-3", "3a", "replica", true),
            ],
        },
        Frame {
            phase: fixtures::UPGRADING,
            ready: 2,
            pods: vec![
                p("c-1", "1b", "replica", false),
                p("c-2", "2a", "primary", true),
                p("c-3", "3a", "replica", true),
            ],
        },
        Frame {
            phase: fixtures::UPGRADING,
            ready: 2,
            pods: vec![
                p("c-1", "1b", "replica", true),
                p("c-2", "2a", "primary", true),
                p("c-3", "3b", "replica", false),
            ],
        },
        Frame {
            phase: fixtures::UPGRADING,
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
    assert_eq!(record.restarts[0].role, Role::Primary, "the role is the one held when the rollout began");
    assert_eq!(record.phases, [HEALTHY, fixtures::SWITCHOVER, fixtures::UPGRADING, HEALTHY]);
    let bad = failed(judge_frames(&record, &frames, &vols(true)));
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!(bad[0].what, "replicas restarted before the primary");
    assert!(bad[0].actual.starts_with("c-1(primary)"), "{}", bad[0].actual);
}

#[tokio::test(start_paused = true)]
async fn rollout_that_never_finishes_times_out_naming_what_and_last_state() {
    let mut frames = fixtures::three_instance_rollout();
    frames.truncate(4); // c-3 replaced, then nothing more happens
    let api = FakeApi::new();
    fixtures::serve_frames(&api, NS, "c", 3, &frames, &vols(true));
    let err = observe(&api, Duration::from_secs(30)).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, BackendError::Failed(_)));
    assert!(msg.contains("timed out after 30s waiting for the rolling update of Cluster cnpg-ext-t/c"), "{msg}");
    assert!(msg.contains("last state: phase \"Waiting for the instances to become active\""), "{msg}");
    assert!(msg.contains("replaced [c-3]; not yet replaced [c-1, c-2]"), "{msg}");
}

/// Pods that already carry what the applied Cluster asks for: nothing to wait for, no
/// window to sit out.
#[tokio::test(start_paused = true)]
async fn converge_on_pods_that_already_match_ends_at_once_with_no_restart() {
    let api = FakeApi::new();
    let frames = fixtures::three_instance_rollout();
    fixtures::serve_frames(&api, NS, "c", 3, &frames[..1], &vols(true));
    let client = api.client();
    let clusters: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &cluster_resource());
    let pods: Api<Pod> = Api::namespaced(client, NS);
    let watch = RolloutWatch::start(&clusters, &pods, "c", Duration::from_secs(60)).await.unwrap();
    let t0 = tokio::time::Instant::now();
    let rec = watch.finish(Expect::converge_on(&plan()), Duration::from_secs(60)).await.unwrap();
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert!(rec.restarts.is_empty());
}

/// Pods that do not match and never change: a timeout naming the pods still on the old
/// spec (the old 15 s window would have reported "nothing restarted" instead).
#[tokio::test(start_paused = true)]
async fn converge_on_pods_that_never_change_times_out_naming_them() {
    let api = FakeApi::new();
    let frames = fixtures::three_instance_rollout();
    fixtures::serve_frames(&api, NS, "c", 3, &frames[..1], &vols_with("old/pgvector:1", true));
    let client = api.client();
    let clusters: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &cluster_resource());
    let pods: Api<Pod> = Api::namespaced(client, NS);
    let watch = RolloutWatch::start(&clusters, &pods, "c", Duration::from_secs(60)).await.unwrap();
    let err = watch.finish(Expect::converge_on(&plan()), Duration::from_secs(60)).await.unwrap_err().to_string();
    assert!(
        err.contains(
            "timed out after 60s waiting for the operator of Cluster cnpg-ext-t/c to act on the applied Cluster"
        ),
        "{err}"
    );
    assert!(err.contains("pods without the applied image volumes [c-1, c-2, c-3]"), "{err}");
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
    let initial =
        vec![pod("c-1", "1a", "primary", true), pod("c-2", "2a", "replica", true), pod("c-3", "3a", "replica", true)];
    let api = FakeApi::new();
    api.serve_collection(&fixtures::pods_path(NS), "PodList", initial, pod_events);
    let phase = |p: &str, ready| (Modified, fixtures::cluster(NS, "c", 3, ready, p));
    api.serve_collection(
        &fixtures::clusters_path(NS),
        "ClusterList",
        vec![fixtures::cluster(NS, "c", 3, 3, HEALTHY)],
        vec![
            phase("Upgrading cluster", 2),
            phase("Primary instance is being restarted without a switchover", 2),
            phase(HEALTHY, 3),
        ],
    );
    let client = api.client();
    let clusters: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &cluster_resource());
    let pods: Api<Pod> = Api::namespaced(client, NS);

    // What a poller sees: one list before the rollout, one after.
    let (phase0, before) = snapshot(&clusters, &pods, "c").await.unwrap();
    let mut poller = RolloutObserver::new(&before, phase0.as_deref());

    let watch = RolloutWatch::start(&clusters, &pods, "c", Duration::from_secs(60)).await.unwrap();
    let record = watch.finish(Expect::Rollout, Duration::from_secs(60)).await.unwrap();
    let (phase1, after) = snapshot(&clusters, &pods, "c").await.unwrap();
    poller.observe(phase1.as_deref(), &after, chrono::Utc::now());
    assert_eq!(
        poller.record().restarts.iter().map(|r| r.instance.as_str()).collect::<Vec<_>>(),
        ["c-1", "c-2", "c-3"],
        "two lists show c-2 replaced once (2a → 2c)"
    );

    let seen: Vec<(&str, &str, &str)> =
        record.restarts.iter().map(|r| (r.instance.as_str(), r.old_id.as_str(), r.new_id.as_str())).collect();
    assert_eq!(
        seen,
        [("c-2", "2a", "2b"), ("c-2", "2b", "2c"), ("c-3", "3a", "3b"), ("c-1", "1a", "1b")],
        "every UID change in order; the job pod and the other Cluster's pod are not instances"
    );
    let before = instance_states(&[
        pod("c-1", "1a", "primary", true),
        pod("c-2", "2a", "replica", true),
        pod("c-3", "3a", "replica", true),
    ]);
    let after = instance_states(&[
        pod("c-1", "1b", "primary", true),
        pod("c-2", "2c", "replica", true),
        pod("c-3", "3b", "replica", true),
    ]);
    let bad = failed(verify_rollout(&record, &before, &after, &Default::default()));
    assert_eq!(bad.len(), 2, "{bad:?}");
    assert_eq!(
        (bad[0].what.as_str(), bad[0].instance.as_deref(), bad[0].expected.as_str(), bad[0].actual.as_str()),
        (
            "restarted exactly once",
            Some("c-2"),
            "1",
            "2 in the backend's record (not measured: its server log was not read)"
        )
    );
    // Its second replacement started after the primary's: the measured order says so too.
    assert_eq!(bad[1].what, "replicas restarted before the primary (measured start times)");

    // The pods were watched with the Cluster's label, the Cluster by name, each from the
    // resourceVersion of its initial list.
    let watches: Vec<_> = api.requests().into_iter().filter(|r| r.is_watch()).collect();
    let pod_watch = watches.iter().find(|r| r.path == fixtures::pods_path(NS)).expect("a pod watch");
    assert_eq!(query_param(&pod_watch.query, "labelSelector").as_deref(), Some("cnpg.io/cluster=c"));
    assert_eq!(query_param(&pod_watch.query, "resourceVersion").as_deref(), Some("100"));
    let cluster_watch = watches.iter().find(|r| r.path == fixtures::clusters_path(NS)).expect("a Cluster watch");
    assert_eq!(query_param(&cluster_watch.query, "fieldSelector").as_deref(), Some("metadata.name=c"));
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
        image_volumes: vec![],
        crash_looping: None,
        restart_count: 0,
    };
    let mut o = RolloutObserver::new(&[view("c-1", "a", true), view("c-2", "b", true)], Some(HEALTHY));
    let now = chrono::Utc::now();
    o.pod_gone(&view("c-2", "b", true));
    assert!(!o.settled(2));
    // A relist (after the watch lost its place) shows c-1 replaced and c-2 back.
    o.replace_pods(&[view("c-1", "a2", true), view("c-2", "b", true)], now);
    assert_eq!(o.record().restarts.len(), 1);
    assert!(o.settled(2));
    o.replace_pods(&[view("c-1", "a2", true)], now);
    assert!(!o.settled(2), "c-2 is gone after a relist without it");
    assert!(o.summary().contains("pods [c-1 replica ready uid a2]"), "{}", o.summary());
}

fn ready_cluster() -> Value {
    fixtures::cluster(NS, "c", 3, 3, HEALTHY)
}

/// A pod exec whose postmasters answer from the pods the fake serves, showing the settings
/// of `CLUSTER_YAML`'s plan.
fn postmasters(api: &FakeApi) -> Arc<FakeExec> {
    Arc::new(FakeExec::with_postmasters(api, fixtures::settings_of(&plan())))
}

fn backend(api: &FakeApi, report: &std::path::Path, exec: Arc<FakeExec>) -> KindBackend {
    KindBackend::new(api.client(), NS, opts(report)).with_exec(exec)
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
            (404, status_body(404, "NotFound", "clusters.postgresql.cnpg.io \"c\" not found")),
            (200, fixtures::cluster(NS, "c", 3, 1, "Setting up primary")),
            (200, fixtures::cluster(NS, "c", 3, 2, "Creating a new replica")),
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
    assert!(p.query.contains("fieldManager=cnpg-ext-harness") && p.query.contains("force=true"), "{}", p.query);
    assert_eq!(p.content_type, "application/apply-patch+yaml");
    let body = p.body.as_ref().unwrap();
    assert_eq!(body["metadata"]["namespace"], NS);
    assert_eq!(body["spec"]["storage"]["size"], "1Gi", "fields outside the typed model are applied too");
    assert_eq!(body["spec"]["postgresql"]["extensions"][0]["image"]["pullPolicy"], "IfNotPresent");
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
    let err = b.apply_cluster(&cluster_doc(CLUSTER_YAML)).await.unwrap_err().to_string();
    assert!(err.contains("timed out after 30s waiting for Cluster cnpg-ext-t/c: 3 ready instance(s) and phase \"Cluster in healthy state\""), "{err}");
    assert!(err.contains("last state: phase \"Setting up primary\", readyInstances 1/3"), "{err}");
    assert!(err.contains("diagnostics:"), "{err}");
    assert!(tmp.path().join("diagnostics").join(NS).join("errors.txt").exists());
}

#[tokio::test(start_paused = true)]
async fn webhook_rejection_is_rejected_with_the_webhook_message() {
    let api = FakeApi::new();
    route_namespace(&api);
    let cpath = fixtures::cluster_path(NS, "c");
    api.on_responses("GET", &cpath, vec![(404, status_body(404, "NotFound", "not found"))]);
    let msg = "admission webhook \"vcluster.cnpg.io\" denied the request: Cluster.postgresql.cnpg.io \"c\" is invalid: spec.postgresql.extensions[1].name: Invalid value: \"my_ext\": must be a DNS-1123 label";
    api.on_responses("PATCH", &cpath, vec![(400, status_body(400, "BadRequest", msg))]);
    let tmp = tempfile::tempdir().unwrap();
    let mut b = backend(&api, tmp.path(), Arc::new(FakeExec::default()));
    let err = b.apply_cluster(&cluster_doc(CLUSTER_YAML)).await.unwrap_err();
    match &err {
        BackendError::Rejected(m) => {
            assert!(m.contains(msg), "{m}");
            assert!(m.contains("server-side apply of Cluster cnpg-ext-t/c"), "{m}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert!(b.last_diagnostics().is_some());
}

const MERGE: &str = "application/merge-patch+json";

/// The baseline of the rollout watch was taken before the request that caused the
/// rollout: the Cluster and its pods were listed before it, and watched from the
/// resourceVersion of those lists (the API server replays every later event).
fn assert_listed_before(api: &FakeApi, cause: impl Fn(&RecordedRequest) -> bool) {
    let log = api.requests();
    let cause_at = log.iter().position(cause).expect("the causing request");
    for path in [fixtures::pods_path(NS), fixtures::clusters_path(NS)] {
        let list_at = log.iter().position(|r| r.method == "GET" && !r.is_watch() && r.path == path).expect("a list");
        assert!(list_at < cause_at, "list of {path} at {list_at}, cause at {cause_at}");
        let watch = log.iter().find(|r| r.is_watch() && r.path == path).expect("a watch");
        assert_eq!(
            query_param(&watch.query, "resourceVersion").as_deref(),
            Some("100"),
            "{path} watched from its list's resourceVersion"
        );
    }
}

/// The Cluster PATCH as the API server answers it: a merge patch comes back with the
/// annotations sent and a new resourceVersion; an apply with the ready Cluster.
fn route_cluster_patch(api: &FakeApi) {
    api.on_fn("PATCH", &fixtures::cluster_path(NS, "c"), |r: &RecordedRequest| {
        let mut c = ready_cluster();
        if r.content_type == MERGE {
            c["metadata"]["annotations"] = r.body.as_ref().unwrap()["metadata"]["annotations"].clone();
            c["metadata"]["resourceVersion"] = json!("900");
        }
        (200, c)
    });
}

#[tokio::test(start_paused = true)]
async fn restart_merge_patches_the_annotation_and_records_the_rollout() {
    let api = FakeApi::new();
    route_namespace(&api);
    let frames = fixtures::three_instance_rollout();
    let cpath = fixtures::cluster_path(NS, "c");
    api.on_responses("GET", &cpath, vec![(404, status_body(404, "NotFound", "not found")), (200, ready_cluster())]);
    // The pods move only once the restart annotation has been patched.
    fixtures::serve_frames_after(&api, NS, "c", 3, &frames, &vols(true), &vols(true), |r| {
        r.method == "PATCH" && r.content_type == MERGE
    });
    route_cluster_patch(&api);
    let tmp = tempfile::tempdir().unwrap();
    let mut b = backend(&api, tmp.path(), postmasters(&api));
    b.apply_cluster(&cluster_doc(CLUSTER_YAML)).await.unwrap();
    let record = b.restart().await.unwrap();
    let merge: Vec<_> = api.requests_to("PATCH", &cpath).into_iter().filter(|r| r.content_type == MERGE).collect();
    assert_eq!(merge.len(), 1);
    let at = merge[0].body.as_ref().unwrap()["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(chrono::DateTime::parse_from_rfc3339(&at).is_ok(), "{at}");
    assert_eq!(at.len(), "2026-01-01T00:00:00.000000000Z".len(), "nanoseconds: {at}");
    assert_eq!(record.restarts.iter().map(|r| r.instance.as_str()).collect::<Vec<_>>(), ["c-3", "c-2", "c-1"]);
    assert!(failed(judge_frames(&record, &frames, &vols(true))).is_empty());
    assert_listed_before(&api, |r| r.content_type == MERGE);
    let inst = b.instances().await.unwrap();
    assert_eq!(
        inst.iter().map(|i| (i.name.as_str(), i.role)).collect::<Vec<_>>(),
        [("c-1", Role::Primary), ("c-2", Role::Replica), ("c-3", Role::Replica)]
    );
}

/// A restart patch that comes back without the value sent (here: the object unchanged,
/// same resourceVersion) fails at once instead of waiting out the rollout timeout.
#[tokio::test(start_paused = true)]
async fn restart_patch_that_changes_nothing_fails_fast() {
    let api = FakeApi::new();
    route_namespace(&api);
    let cpath = fixtures::cluster_path(NS, "c");
    let mut before = ready_cluster();
    before["metadata"]["resourceVersion"] = json!("100");
    before["metadata"]["annotations"] = json!({"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"});
    api.on_responses("GET", &cpath, vec![(404, status_body(404, "NotFound", "not found")), (200, before.clone())]);
    fixtures::serve_frames(&api, NS, "c", 3, &fixtures::three_instance_rollout()[..1], &vols(true));
    api.on("PATCH", &cpath, vec![before]);
    let tmp = tempfile::tempdir().unwrap();
    let mut b = backend(&api, tmp.path(), postmasters(&api));
    b.apply_cluster(&cluster_doc(CLUSTER_YAML)).await.unwrap();
    let t0 = tokio::time::Instant::now();
    let err = b.restart().await.unwrap_err().to_string();
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    assert!(err.contains("no rollout will follow"), "{err}");
    assert!(err.contains("not the value sent"), "{err}");
}

// The update path (a changed Cluster applied to a running one, the rollout followed to its
// end, the baseline listed before the apply) is replayed from frames recorded on the real
// cluster: `tests/recorded.rs`, `add_extension_rollout_recorded_on_the_real_cluster`.

/// The same rollout started by the operator 30 s after the apply (a loaded runner):
/// still followed, where a fixed 15 s window saw nothing and reported "no restart".
#[tokio::test(start_paused = true)]
async fn rollout_the_operator_starts_late_is_still_observed() {
    const NEW: &str = "ghcr.io/cloudnative-pg/pgvector:0.8.2-18-trixie";
    let api = FakeApi::new();
    route_namespace(&api);
    let frames = fixtures::three_instance_rollout();
    fixtures::serve_frames_after(&api, NS, "c", 3, &frames, &vols(true), &vols_with(NEW, true), |r| {
        r.path == "/late-operator"
    });
    route_cluster_patch(&api);
    let late = api.client();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        let _ = late.request_text(http::Request::get("/late-operator").body(Vec::new()).unwrap()).await;
    });
    let tmp = tempfile::tempdir().unwrap();
    let mut b = backend(&api, tmp.path(), postmasters(&api));
    let t0 = tokio::time::Instant::now();
    let outcome = b.apply_cluster(&cluster_doc(&CLUSTER_YAML.replace(PGVECTOR, NEW))).await.unwrap();
    assert!(t0.elapsed() >= Duration::from_secs(30));
    assert!(matches!(&outcome, ApplyOutcome::RolledOut { record } if record.restarts.len() == 3), "{outcome:?}");
}

/// A Cluster applied again unchanged: the pods already match, nothing restarts, and the
/// backend says so (no `Reloaded` guessed from a plan diff).
#[tokio::test(start_paused = true)]
async fn unchanged_cluster_reports_nothing_restarted() {
    let api = FakeApi::new();
    route_namespace(&api);
    let frames = fixtures::three_instance_rollout();
    fixtures::serve_frames(&api, NS, "c", 3, &frames[..1], &vols(true));
    route_cluster_patch(&api);
    let tmp = tempfile::tempdir().unwrap();
    let mut b = backend(&api, tmp.path(), postmasters(&api));
    // The postmaster's environment changed only (the operator restarts nothing for it):
    // still nothing restarted, and that is what is reported. (A search-path change waits
    // for the reload: tests/postmasters.rs.)
    let yaml = CLUSTER_YAML.replace("ld_library_path: [system]", "ld_library_path: [system, lib]");
    assert_eq!(b.apply_cluster(&cluster_doc(&yaml)).await.unwrap(), ApplyOutcome::Unchanged);
}

fn serve_pod(api: &FakeApi, keep_image: bool) {
    api.on(
        "GET",
        &format!("{}/c-1", fixtures::pods_path(NS)),
        vec![fixtures::pod(NS, "c", "c-1", "uid-1", "primary", true, &vols(keep_image))],
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
    assert!(m.contains("pod cnpg-ext-t/c-1 has no volume `ext-pgvector`"), "{m}");
    assert!(m.contains("ImageVolume feature gate is off"), "{m}");
}

#[tokio::test]
async fn preflight_probe_detects_the_gate_off() {
    let api = FakeApi::new();
    let mut dropped = serde_json::to_value(cnpg_ext_kind::preflight::image_volume_probe_pod("default")).unwrap();
    // Gate off: the stored pod lost the image volume and its mount (hand-written after
    // issue 12's description of the API server).
    dropped["spec"]["volumes"] = json!([]);
    dropped["spec"]["containers"][0]["volumeMounts"] = json!([]);
    api.on("POST", "/api/v1/namespaces/default/pods", vec![dropped]);
    let err = check_image_volume_gate(&api.client(), "default", Duration::ZERO).await.unwrap_err();
    assert!(
        matches!(&err, BackendError::Unusable(m) if m.contains("ImageVolume feature gate is off") && m.contains("default/cnpg-ext-imagevolume-probe")),
        "{err}"
    );
    let req = &api.requests()[0];
    assert!(req.query.contains("dryRun=All"), "{}", req.query);

    let on = FakeApi::new();
    let kept = serde_json::to_value(cnpg_ext_kind::preflight::image_volume_probe_pod("default")).unwrap();
    on.on("POST", "/api/v1/namespaces/default/pods", vec![kept]);
    check_image_volume_gate(&on.client(), "default", Duration::ZERO).await.unwrap();
}

/// Right after `kind create cluster` the `default` namespace may not have its `default`
/// ServiceAccount yet: the ServiceAccount admission plugin answers 403 (message as in
/// kubernetes `plugin/pkg/admission/serviceaccount/admission.go`, hand-written). Retried;
/// an RBAC 403 is not, and is reported with the API server's message.
#[tokio::test(start_paused = true)]
async fn forbidden_probe_is_retried_only_when_it_clears_by_itself() {
    let path = "/api/v1/namespaces/default/pods";
    let kept = serde_json::to_value(cnpg_ext_kind::preflight::image_volume_probe_pod("default")).unwrap();
    let no_sa = status_body(403, "Forbidden", "pods \"cnpg-ext-imagevolume-probe\" is forbidden: error looking up service account default/default: serviceaccount \"default\" not found");
    let api = FakeApi::new();
    api.on_responses("POST", path, vec![(403, no_sa.clone()), (403, no_sa), (200, kept)]);
    check_image_volume_gate(&api.client(), "default", Duration::from_secs(30)).await.unwrap();
    assert_eq!(api.requests_to("POST", path).len(), 3);

    let rbac = FakeApi::new();
    let msg = "pods is forbidden: User \"dev\" cannot create resource \"pods\" in API group \"\" in the namespace \"default\"";
    rbac.on_responses("POST", path, vec![(403, status_body(403, "Forbidden", msg))]);
    let err = check_image_volume_gate(&rbac.client(), "default", Duration::from_secs(30)).await.unwrap_err();
    assert_eq!(rbac.requests_to("POST", path).len(), 1);
    assert!(matches!(&err, BackendError::Unusable(m) if m.contains(msg) && m.contains("needs rights")), "{err}");
}

/// A namespace left terminating by an earlier run with the same scenario id: waited out
/// before the scenario's namespace is applied again.
#[tokio::test(start_paused = true)]
async fn namespace_still_terminating_is_waited_out() {
    let api = FakeApi::new();
    route_namespace(&api);
    let nspath = format!("/api/v1/namespaces/{NS}");
    let terminating = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": NS, "deletionTimestamp": "2026-01-01T00:00:00Z"},
        "status": {"phase": "Terminating"}});
    api.on_responses(
        "GET",
        &nspath,
        vec![
            (200, terminating.clone()),
            (200, terminating),
            (404, status_body(404, "NotFound", "namespaces \"cnpg-ext-t\" not found")),
        ],
    );
    let cpath = fixtures::cluster_path(NS, "c");
    api.on_responses("GET", &cpath, vec![(404, status_body(404, "NotFound", "not found")), (200, ready_cluster())]);
    api.on("PATCH", &cpath, vec![ready_cluster()]);
    let tmp = tempfile::tempdir().unwrap();
    let mut b = backend(&api, tmp.path(), Arc::new(FakeExec::default()));
    b.apply_cluster(&cluster_doc(CLUSTER_YAML)).await.unwrap();
    let log = api.requests();
    let gets = log.iter().filter(|r| r.method == "GET" && r.path == nspath).count();
    let apply_at = log.iter().position(|r| r.method == "PATCH" && r.path == nspath).unwrap();
    let last_get = log.iter().rposition(|r| r.method == "GET" && r.path == nspath).unwrap();
    assert_eq!(gets, 3);
    assert!(last_get < apply_at);
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
    assert!(obs.mounts.iter().all(|m| m.present && m.files.is_empty() && m.read_only == Some(true)));
    assert_eq!(obs.ld_library_path, None);
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
    assert_eq!(obs.ld_library_path.as_deref(), Some("/extensions/my_ext/system"));
    assert_eq!(obs.mounts[0].files, ["lib/vector.so", "share/extension/vector.control"]);
    assert_eq!(obs.mounts[1].read_only, Some(false));
    assert_eq!(obs.mounts[1].files, ["system/libgreet.so.1"]);
}

#[test]
fn inspect_output_without_a_postmaster_is_an_error() {
    let err = parse_inspect_output("c-2", &plan(), "@@pid \n").unwrap_err();
    assert!(err.to_string().contains("instance c-2: no postmaster pid"), "{err}");
    let absent =
        parse_inspect_output("c-2", &plan(), "@@pid 5\n@@environ read\n@@mount absent /extensions/pgvector\n").unwrap();
    assert!(!absent.mounts[0].present);
}

#[test]
fn inspect_script_snapshot() {
    snap!(insta::assert_snapshot!("inspect-script", inspect_script(&plan())));
}

fn database() -> cnpg_ext_model::DatabaseDoc {
    cnpg_ext_model::DatabaseDoc::from_typed(cnpg_ext_model::Database {
        api_version: "postgresql.cnpg.io/v1".into(),
        kind: "Database".into(),
        metadata: cnpg_ext_model::cluster::ObjectMeta { name: "app".into(), ..Default::default() },
        spec: cnpg_ext_model::cluster::DatabaseSpec {
            name: "app".into(),
            owner: "app".into(),
            cluster: cnpg_ext_model::cluster::LocalObjectReference { name: "c".into() },
            extensions: vec![],
        },
    })
}

/// A Database status as the operator writes it (cloudnative-pg
/// `api/v1/database_funcs.go`: SetAsReady sets applied, clears the message and sets
/// observedGeneration; SetAsFailed sets applied false and the message and leaves
/// observedGeneration alone; an extension that fails makes the top message "database
/// object reconciliation failed" with the SQL error on the extension,
/// `internal/management/controller/database_controller.go` and `database_objects.go`).
/// `None`: not reconciled yet. The SQL error text is hand-written.
fn db_status(state: Option<bool>) -> Value {
    let meta = json!({"name": "app", "namespace": NS, "generation": 1});
    let spec = json!({"name": "app", "owner": "app", "cluster": {"name": "c"}});
    let status = match state {
        None => json!({}),
        Some(true) => json!({"applied": true, "observedGeneration": 1,
                             "extensions": [{"name": "vector", "applied": true}]}),
        Some(false) => json!({"applied": false, "message": "database object reconciliation failed",
                              "extensions": [{"name": "vector", "applied": false,
                                              "message": "extension \"vector\" is not available"}]}),
    };
    json!({"apiVersion": "postgresql.cnpg.io/v1", "kind": "Database", "metadata": meta, "spec": spec, "status": status})
}

#[tokio::test(start_paused = true)]
async fn database_applied() {
    let api = FakeApi::new();
    route_namespace(&api);
    let dpath = fixtures::database_path(NS, "app");
    api.on("PATCH", &dpath, vec![db_status(None)]);
    api.on("GET", &dpath, vec![db_status(None), db_status(Some(true))]);
    let tmp = tempfile::tempdir().unwrap();
    let mut b = backend(&api, tmp.path(), Arc::new(FakeExec::default()));
    assert_eq!(b.apply_database(&database()).await.unwrap(), ["vector: applied=true"]);
}

/// The operator's failure (no observedGeneration) is final once it has lasted across one
/// 30 s retry, and is reported with the operator's messages: not a 120 s timeout.
#[tokio::test(start_paused = true)]
async fn database_failure_is_reported_with_the_operators_message_not_as_a_timeout() {
    let api = FakeApi::new();
    route_namespace(&api);
    let dpath = fixtures::database_path(NS, "app");
    api.on("PATCH", &dpath, vec![db_status(None)]);
    api.on("GET", &dpath, vec![db_status(None), db_status(Some(false))]);
    let tmp = tempfile::tempdir().unwrap();
    let mut b = backend(&api, tmp.path(), Arc::new(FakeExec::default()));
    let t0 = tokio::time::Instant::now();
    let err = b.apply_database(&database()).await.unwrap_err().to_string();
    let took = t0.elapsed();
    assert!(took >= Duration::from_secs(35) && took < Duration::from_secs(40), "{took:?}");
    assert!(!err.contains("timed out"), "{err}");
    assert!(
        err.contains(
            "Database cnpg-ext-t/app was not applied: the operator reports \"database object reconciliation failed\""
        ),
        "{err}"
    );
    assert!(err.contains("vector: applied=false: extension \"vector\" is not available"), "{err}");
}

/// A failure left from an earlier attempt that the operator's retry turns into a success
/// is a success.
#[tokio::test(start_paused = true)]
async fn database_failure_that_the_retry_fixes_is_a_success() {
    let api = FakeApi::new();
    route_namespace(&api);
    let dpath = fixtures::database_path(NS, "app");
    api.on("PATCH", &dpath, vec![db_status(Some(false))]);
    let mut seq = vec![db_status(Some(false)); 40]; // 20 s of failure at 0.5 s polls
    seq.push(db_status(Some(true)));
    api.on("GET", &dpath, seq);
    let tmp = tempfile::tempdir().unwrap();
    let mut b = backend(&api, tmp.path(), Arc::new(FakeExec::default()));
    assert_eq!(b.apply_database(&database()).await.unwrap(), ["vector: applied=true"]);
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
    cnpg_ext_kind::operator::wait_operator_ready(&api.client(), "cnpg-system", &fast_timeouts()).await.unwrap();
    assert_eq!(api.requests_to("POST", probe_path).len(), 2);
    assert!(api.requests_to("POST", probe_path)[0].query.contains("dryRun=All"));

    let never = FakeApi::new();
    never.on("GET", dpath, vec![dep(0)]);
    let err = cnpg_ext_kind::operator::wait_operator_ready(&never.client(), "cnpg-system", &fast_timeouts())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("waiting for Deployment cnpg-system/cnpg-controller-manager: all replicas updated and available"),
        "{err}"
    );
    assert!(err.contains("available 0") && err.contains("Available=False"), "{err}");
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
    let op = cnpg_ext_kind::operator::installed_operator(&api.client()).await.unwrap().unwrap();
    assert_eq!(op.version, Some(CnpgVersion::new(1, 27, 2)));
    assert!(
        api.requests()[0].query.contains("labelSelector=app.kubernetes.io%2Fname%3Dcloudnative-pg"),
        "{}",
        api.requests()[0].query
    );
    // Too old for underscore names: exit-3 error naming the Cluster and extension.
    let c = cluster_doc(CLUSTER_YAML).cluster;
    let err = check_operator_for(op.version.unwrap(), &[&c]).unwrap_err();
    assert!(matches!(&err, BackendError::Unusable(m) if m.contains("`my_ext`") && m.contains("1.27.3")), "{err}");
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
    assert!(matches!(&old, BackendError::Unusable(m) if m.contains("v1.32.0 is too old")), "{old}");
    assert_eq!(check_server_version(&info("33+")).unwrap(), (1, 33));
    assert!(check_runtime("n", "containerd://2.1.1").is_ok());
    assert!(check_runtime("n", "containerd://2.0.5").unwrap_err().contains("containerd ≥ 2.1"));
    assert!(check_runtime("n", "cri-o://1.31.2").is_ok());
    assert!(check_runtime("n", "cri-o://1.30.9").is_err());
    assert!(check_runtime("n", "docker://27.0.0").unwrap_err().contains("node n runs `docker`"));
}

/// Apply first (the namespace is created), then teardown sends exactly one DELETE of the
/// namespace, in the background propagation; a kept backend sends none.
#[tokio::test(start_paused = true)]
async fn teardown_deletes_the_namespace_unless_kept() {
    let nspath = format!("/api/v1/namespaces/{NS}");
    let setup = || {
        let api = FakeApi::new();
        route_namespace(&api);
        let cpath = fixtures::cluster_path(NS, "c");
        api.on_responses("GET", &cpath, vec![(404, status_body(404, "NotFound", "not found")), (200, ready_cluster())]);
        api.on("PATCH", &cpath, vec![ready_cluster()]);
        api.on("DELETE", &nspath, vec![json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})]);
        api
    };
    let tmp = tempfile::tempdir().unwrap();
    let api = setup();
    let mut b = backend(&api, tmp.path(), Arc::new(FakeExec::default()));
    b.apply_cluster(&cluster_doc(CLUSTER_YAML)).await.unwrap();
    assert!(api.requests().iter().all(|r| r.method != "DELETE"));
    b.teardown(false).await.unwrap();
    let deletes: Vec<_> = api.requests().into_iter().filter(|r| r.method == "DELETE").collect();
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert_eq!(deletes[0].path, nspath);
    assert_eq!(
        deletes[0].body.as_ref().and_then(|b| b.get("propagationPolicy")).and_then(Value::as_str),
        Some("Background")
    );

    let api = setup();
    let mut kept = backend(&api, tmp.path(), Arc::new(FakeExec::default()));
    kept.apply_cluster(&cluster_doc(CLUSTER_YAML)).await.unwrap();
    kept.teardown(true).await.unwrap();
    assert!(api.requests().iter().all(|r| r.method != "DELETE"));

    // Nothing created: nothing to delete.
    let api = setup();
    let mut fresh = backend(&api, tmp.path(), Arc::new(FakeExec::default()));
    fresh.teardown(false).await.unwrap();
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
    let docs = cnpg_ext_kind::operator::apply_order(cnpg_ext_kind::operator::parse_manifest(&text).unwrap());
    let order = cnpg_ext_kind::operator::describe(&docs);
    eprintln!(
        "{} documents in {:?} (sha256 {}):\n{}",
        docs.len(),
        t.elapsed(),
        cnpg_ext_kind::versions::sha256_hex(text.as_bytes()),
        order.join("\n")
    );
    assert_eq!(order[0], "Namespace cnpg-system");
    assert!(order.iter().any(|o| o == "Deployment cnpg-system/cnpg-controller-manager"));
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
        &PlanOptions { mount_root: root.display().to_string(), cnpg: CnpgVersion::DEFAULT },
    );
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .env("LD_LIBRARY_PATH", "/extensions/my_ext/system")
        .spawn()
        .unwrap();
    let pgdata = tmp.path().join("pgdata");
    std::fs::create_dir_all(&pgdata).unwrap();
    std::fs::write(pgdata.join("postmaster.pid"), format!("{}\n{}\n", child.id(), pgdata.display())).unwrap();
    let out =
        std::process::Command::new("sh").arg("-c").arg(inspect_script(&plan)).env("PGDATA", &pgdata).output().unwrap();
    child.kill().unwrap();
    let _ = child.wait();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let obs = parse_inspect_output("c-1", &plan, &stdout).unwrap();
    assert_eq!(obs.ld_library_path.as_deref(), Some("/extensions/my_ext/system"), "{stdout}");
    assert_eq!(obs.mounts[0].files, ["lib/vector.so", "share/extension/vector.control"], "{stdout}");
    assert!(obs.mounts[1].present && obs.mounts[1].files.is_empty(), "{stdout}");
    // A writable directory (here) is reported as such; image volumes refuse the write.
    assert_eq!(obs.mounts[0].read_only, Some(false));
    assert!(!root.join("pgvector/.cnpg-ext-write-probe").exists());
}

/// Which operator is used and which release is modelled, from what is installed.
#[test]
fn installed_operator_is_modelled_and_never_silently_downgraded() {
    use cnpg_ext_kind::environment::{operator_action, OperatorAction};
    use cnpg_ext_kind::operator::InstalledOperator;
    let op = |v: Option<CnpgVersion>| InstalledOperator {
        namespace: "cnpg-system".into(),
        deployment: "cnpg-controller-manager".into(),
        image: "ghcr.io/cloudnative-pg/cloudnative-pg:x".into(),
        version: v,
    };
    let want = |v: CnpgVersion| KindOptions { cnpg_version: v, ..Default::default() };
    let (old, new) = (CnpgVersion::new(1, 28, 1), CnpgVersion::new(1, 28, 2));
    // Newer installed: refused, saying what to do.
    let err = operator_action(Some(&op(Some(new))), &want(old)).unwrap_err();
    assert!(
        matches!(&err, BackendError::Unusable(m) if m.contains("operator 1.28.2 is installed") && m.contains("refusing to downgrade") && m.contains("--allow-operator-downgrade")),
        "{err}"
    );
    let allowed = KindOptions { allow_operator_downgrade: true, ..want(old) };
    assert!(
        matches!(operator_action(Some(&op(Some(new))), &allowed).unwrap(), OperatorAction::Install { notice: Some(n) } if n.contains("downgrading"))
    );
    // Unknown release: refused too (it may be newer).
    assert!(operator_action(Some(&op(None)), &want(old)).is_err());
    // Older installed: upgraded; same: used; none: installed.
    assert!(
        matches!(operator_action(Some(&op(Some(old))), &want(new)).unwrap(), OperatorAction::Install { notice: Some(n) } if n.contains("upgrading"))
    );
    assert_eq!(
        operator_action(Some(&op(Some(new))), &want(new)).unwrap(),
        OperatorAction::UseInstalled { notice: None }
    );
    assert_eq!(operator_action(None, &want(new)).unwrap(), OperatorAction::Install { notice: None });
    // --skip-operator-install across the `ext-` boundary: the installed 1.28.1 is used and
    // named; the environment then models it (bare volume names), see below.
    let skip = KindOptions { skip_operator_install: true, ..want(new) };
    assert!(
        matches!(operator_action(Some(&op(Some(old))), &skip).unwrap(), OperatorAction::UseInstalled { notice: Some(n) } if n.contains("modelling the installed 1.28.1"))
    );
    assert!(operator_action(None, &skip).is_err());
    // Existing-cluster mode without --cnpg-version: the installed operator is adopted,
    // older or newer, and named; of unknown release: refused, saying what to pass.
    let adopt = KindOptions { cnpg_version_explicit: false, ..want(new) };
    for have in [old, CnpgVersion::new(1, 29, 0)] {
        assert!(
            matches!(operator_action(Some(&op(Some(have))), &adopt).unwrap(), OperatorAction::UseInstalled { notice: Some(n) } if n.contains(&format!("installed operator {have}"))),
        );
    }
    let err = operator_action(Some(&op(None)), &adopt).unwrap_err();
    assert!(matches!(&err, BackendError::Unusable(m) if m.contains("--cnpg-version")), "{err}");
    // None installed: the requested release is installed as before.
    assert_eq!(operator_action(None, &adopt).unwrap(), OperatorAction::Install { notice: None });
    // A kind cluster the harness manages keeps the requested release (upgraded to it).
    let kind = KindOptions { kind_cluster: Some("x".into()), ..adopt.clone() };
    assert!(matches!(operator_action(Some(&op(Some(old))), &kind).unwrap(), OperatorAction::Install { .. }));
}

/// The backend models the installed operator: across 1.28.1 → 1.28.2 the pod volume names
/// gained the `ext-` prefix (cloudnative-pg `pkg/specs/volumes.go`,
/// SanitizeExtensionNameForVolume), and a backend for 1.28.2 requested but 1.28.1 installed
/// must look for the bare names.
#[tokio::test]
async fn environment_backend_uses_the_installed_release() {
    let api = FakeApi::new();
    let env = cnpg_ext_kind::KindEnvironment {
        client: api.client(),
        opts: KindOptions {
            cnpg_version: CnpgVersion::new(1, 28, 2),
            skip_operator_install: true,
            ..Default::default()
        },
        preflight: cnpg_ext_kind::preflight::PreflightReport { server_version: "v1.33.7".into(), nodes: vec![] },
        operator: cnpg_ext_kind::operator::InstalledOperator {
            namespace: "cnpg-system".into(),
            deployment: "cnpg-controller-manager".into(),
            image: "ghcr.io/cloudnative-pg/cloudnative-pg:1.28.1".into(),
            version: Some(CnpgVersion::new(1, 28, 1)),
        },
        notices: vec![],
        registry: None,
        advertised: None,
    };
    let tmp = tempfile::tempdir().unwrap();
    let sdir = tmp.path().join("s");
    std::fs::create_dir_all(sdir.join("fixture")).unwrap();
    std::fs::write(sdir.join("cluster.yaml"), CLUSTER_YAML).unwrap();
    std::fs::write(
        sdir.join("scenario.yaml"),
        "images:\n  - reference: ghcr.io/cloudnative-pg/pgvector:0.8.1-18-trixie\n    fixture: fixture\n  - reference: localhost/my-ext:1\n    fixture: fixture\nsteps:\n  - apply: {file: cluster.yaml}\n",
    )
    .unwrap();
    let scenario = cnpg_ext_model::scenario::Scenario::load(&sdir, CnpgVersion::new(1, 28, 2)).unwrap();
    let c = cluster_doc(CLUSTER_YAML).cluster;
    // What --cnpg-version alone would model, and what the installed 1.28.1 writes.
    let requested = KindBackend::new(api.client(), NS, env.opts.clone());
    assert_eq!(requested.plan_for(&c, "c-1").extensions[0].volume_name, "ext-pgvector");
    assert_eq!(env.operator_version(), CnpgVersion::new(1, 28, 1));
    let b = env.backend(&scenario);
    assert_eq!(b.plan_for(&c, "c-1").extensions[0].volume_name, "pgvector");
    assert_eq!(b.namespace(), "cnpg-ext-s");
}

/// SQL as `postgres` (what the origin checks need: `pg_read_file` is superuser-only) uses
/// the `<cluster>-superuser` secret the operator creates when `enableSuperuserAccess` is on
/// (cloudnative-pg `internal/controller/cluster_create.go`); without it, the error says
/// what to set.
#[tokio::test]
async fn sql_as_postgres_reads_the_superuser_secret() {
    let api = FakeApi::new();
    api.on(
        "GET",
        &format!("/api/v1/namespaces/{NS}/secrets/c-superuser"),
        vec![json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "c-superuser", "namespace": NS},
                    "type": "kubernetes.io/basic-auth",
                    "data": {"username": "cG9zdGdyZXM=", "password": "c2VjcmV0"}})],
    );
    let (user, password) = cnpg_ext_kind::sql::credentials(&api.client(), NS, "c", "postgres").await.unwrap();
    assert_eq!((user.as_str(), password.as_str()), ("postgres", "secret"));
    let err = cnpg_ext_kind::sql::credentials(&api.client(), NS, "other", "postgres").await.unwrap_err().to_string();
    assert!(
        err.contains("secret cnpg-ext-t/other-superuser not found") && err.contains("enableSuperuserAccess: true"),
        "{err}"
    );
}
