//! Replays of frames **recorded from the real cluster** (the node of `cnpg-ext-harness k8s
//! up`, CloudNativePG 1.30.0, Kubernetes v1.36.1) by the backend itself with
//! `CNPG_EXT_KIND_RECORD=<dir>` while it ran the scenarios; how they were recorded and reduced
//! is in `tests/fixtures/recorded/README.md`. Where these cover a case, they replace the
//! hand-written frames: the operator's real order of events, its real phases and the
//! kubelet's real container states, not what the source suggested.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cnpg_ext_backend::Backend;
use cnpg_ext_kind::options::Timeouts;
use cnpg_ext_kind::testing::fixtures::{self, instance_states};
use cnpg_ext_kind::testing::recorded::{self, Frame};
use cnpg_ext_kind::testing::{query_param, FakeApi, FakeExec, RecordedRequest};
use cnpg_ext_kind::{KindBackend, KindOptions};
use cnpg_ext_model::backend::ApplyOutcome;
use cnpg_ext_model::judge::verify_rollout;
use cnpg_ext_model::plan::{ClusterPlan, PlanOptions};
use cnpg_ext_model::CnpgVersion;
use common::cluster_doc;
use serde_json::{json, Value};

const APPLY: &str = "application/apply-patch+yaml";
/// The release the frames were recorded with.
const RECORDED_CNPG: CnpgVersion = CnpgVersion::new(1, 30, 0);

fn dir(scenario: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/recorded").join(scenario)
}

fn scenario_file(scenario: &str, file: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios").join(scenario).join(file);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn opts(report: &Path) -> KindOptions {
    KindOptions {
        report_dir: report.to_path_buf(),
        cnpg_version: RECORDED_CNPG,
        timeouts: Timeouts {
            operator: Duration::from_secs(30),
            cluster_ready: Duration::from_secs(60),
            rollout: Duration::from_secs(120),
            database: Duration::from_secs(60),
            database_retry: Duration::from_secs(35),
            forbidden_retry: Duration::from_secs(10),
            poll: Duration::from_millis(500),
        },
        ..Default::default()
    }
}

fn plan(yaml: &str) -> ClusterPlan {
    ClusterPlan::derive(&cluster_doc(yaml).cluster, &PlanOptions { cnpg: RECORDED_CNPG, ..PlanOptions::default() })
}

/// What a recorded pod's postmaster would have answered the probe (exec is not recorded):
/// started with its `postgres` container, showing the settings of the plan its volumes
/// belong to (with the extension's image volume: `with`, else `without`).
fn with_postmaster(mut pod: Value, without: &BTreeMap<String, String>, with: &BTreeMap<String, String>) -> Value {
    let started = pod
        .pointer("/status/containerStatuses/0/state/running/startedAt")
        .or_else(|| pod.pointer("/metadata/creationTimestamp"))
        .and_then(Value::as_str)
        .unwrap_or("2026-01-01T00:00:00Z")
        .replace('Z', ".000000Z");
    let has_image = pod
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .is_some_and(|v| v.iter().any(|v| v.get("image").is_some()));
    let settings = if has_image { with } else { without };
    pod = fixtures::with_postmaster(pod, &fixtures::postmaster(&started, settings));
    pod
}

/// The real operator's rollout of `add-extension` (3 instances, pgvector added): replicas
/// `-3` then `-2` deleted and recreated with the image volume, then the primary `-1`
/// deleted and recreated ("Primary instance is being restarted without a switchover"). The
/// backend follows it from the recorded watches to the end, names the instances in that
/// order, and the one verifier passes it.
#[tokio::test(start_paused = true)]
async fn add_extension_rollout_recorded_on_the_real_cluster() {
    let ns = "cnpg-ext-add-extension";
    let frames: Vec<Frame> = recorded::load(&dir("add-extension"));
    let before = plan(&scenario_file("add-extension", "cluster.yaml"));
    let after_yaml = scenario_file("add-extension", "cluster-with-pgvector.yaml");
    let after = plan(&after_yaml);
    let (without, with) = (fixtures::settings_of(&before), fixtures::settings_of(&after));
    let annotate = |o: Value| with_postmaster(o, &without, &with);

    let api = FakeApi::new();
    api.on(
        "PATCH",
        &format!("/api/v1/namespaces/{ns}"),
        vec![json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})],
    );
    let cpath = fixtures::cluster_path(ns, "cluster-add");
    let existing =
        frames.iter().find(|f| f.path == cpath).and_then(|f| f.body.clone()).expect("the recorded Cluster GET");
    api.on("GET", &cpath, vec![existing]);
    let applied = |r: &RecordedRequest| {
        r.method == "PATCH" && r.content_type == APPLY && r.path.ends_with("/clusters/cluster-add")
    };
    let (clusters, cluster_events) = recorded::session(&frames, &fixtures::clusters_path(ns), 0);
    let last_cluster = cluster_events.last().expect("recorded Cluster events").1.clone();
    api.serve_collection_after(&fixtures::clusters_path(ns), "ClusterList", clusters, cluster_events, applied);
    let (pods, pod_events) = recorded::session(&frames, &fixtures::pods_path(ns), 0);
    let first_pods: Vec<Value> = pods.iter().cloned().map(annotate).collect();
    let pod_events: Vec<_> = pod_events.into_iter().map(|(t, o)| (t, annotate(o))).collect();
    let mut last_pods: BTreeMap<String, Value> = BTreeMap::new();
    for p in first_pods.iter().chain(pod_events.iter().map(|(_, o)| o)) {
        last_pods.insert(p.pointer("/metadata/name").and_then(Value::as_str).unwrap().to_string(), p.clone());
    }
    api.serve_collection_after(&fixtures::pods_path(ns), "PodList", first_pods.clone(), pod_events, applied);
    api.on("PATCH", &cpath, vec![last_cluster]);

    let tmp = tempfile::tempdir().unwrap();
    let exec = Arc::new(FakeExec::with_postmasters(&api, with.clone()));
    let mut b = KindBackend::new(api.client(), ns, opts(tmp.path())).with_exec(exec);
    let outcome = b.apply_cluster(&cluster_doc(&after_yaml)).await.unwrap();
    let ApplyOutcome::RolledOut { record } = outcome else { panic!("expected a rollout, got {outcome:?}") };
    let order: Vec<&str> = record.restarts.iter().map(|r| r.instance.as_str()).collect();
    assert_eq!(order, ["cluster-add-3", "cluster-add-2", "cluster-add-1"]);
    // The baseline was listed before the apply that caused the rollout, and watched from
    // the resourceVersion of those lists.
    let log = api.requests();
    let apply_at = log.iter().position(applied).expect("the apply");
    for path in [fixtures::pods_path(ns), fixtures::clusters_path(ns)] {
        let list_at = log.iter().position(|r| r.method == "GET" && !r.is_watch() && r.path == path).expect("a list");
        assert!(list_at < apply_at, "list of {path} at {list_at}, apply at {apply_at}");
        let watch = log.iter().find(|r| r.is_watch() && r.path == path).expect("a watch");
        assert_eq!(query_param(&watch.query, "resourceVersion").as_deref(), Some("100"), "{path}");
    }
    let last: Vec<Value> = last_pods.into_values().collect();
    let checks = verify_rollout(&record, &instance_states(&first_pods), &instance_states(&last), &Default::default());
    let failed: Vec<_> = checks.iter().filter(|c| !c.ok).collect();
    assert!(failed.is_empty(), "{failed:?}");
}

/// The real creation of `single-extension`'s Cluster, as the backend polled it: 404, then
/// the phases the operator went through (setting up the primary, …) until `Cluster in
/// healthy state` with its one instance ready. Replayed, the backend waits through every
/// recorded phase and reports the Cluster created.
#[tokio::test(start_paused = true)]
async fn single_extension_creation_recorded_on_the_real_cluster() {
    let ns = "cnpg-ext-single-extension";
    let frames = recorded::load(&dir("single-extension"));
    let cpath = fixtures::cluster_path(ns, "cluster-pgvector");
    let gets: Vec<(u16, Value)> =
        frames.iter().filter(|f| f.path == cpath).map(|f| (f.status, f.body.clone().unwrap_or(Value::Null))).collect();
    assert_eq!(gets.first().map(|g| g.0), Some(404), "the first GET found no Cluster");
    let phases: Vec<&str> =
        gets.iter().filter_map(|(_, b)| b.pointer("/status/phase").and_then(Value::as_str)).collect();
    assert_eq!(phases.last(), Some(&"Cluster in healthy state"), "{phases:?}");
    assert!(phases.len() >= 2, "the operator went through phases before healthy: {phases:?}");

    let api = FakeApi::new();
    api.on(
        "PATCH",
        &format!("/api/v1/namespaces/{ns}"),
        vec![json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})],
    );
    api.on_responses("GET", &cpath, gets.clone());
    let created = gets.last().unwrap().1.clone();
    api.on("PATCH", &cpath, vec![created]);
    let tmp = tempfile::tempdir().unwrap();
    let mut b = KindBackend::new(api.client(), ns, opts(tmp.path()));
    let outcome = b.apply_cluster(&cluster_doc(&scenario_file("single-extension", "cluster.yaml"))).await.unwrap();
    assert!(matches!(outcome, ApplyOutcome::Created), "{outcome:?}");
    // Every recorded answer was needed: the backend polled until the last one.
    assert!(api.requests_to("GET", &cpath).len() >= gets.len(), "{}", api.requests_to("GET", &cpath).len());
}
