//! Restarts and reloads that leave the pods in place, against the fake API: the operator's
//! in-place primary restart (`primaryUpdateMethod: restart`, the default), the old primary
//! demoted in place after a switchover (`primaryUpdateMethod: switchover`), a supervised
//! update stopping at "Waiting for user action", and a reload-only change. The frames are
//! hand-written after cloudnative-pg v1.30.0 `internal/controller/cluster_upgrade.go`
//! (`rolloutRequiredInstances`: replicas from the end of the list, then `updatePrimaryPod`)
//! and `internal/management/controller/instance_controller.go`
//! (`restartPrimaryInplaceIfRequested`); what the postmasters answer travels with the pods
//! (`fixtures::POSTMASTER`) and is read through the fake pod exec.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cnpg_ext_backend::Backend;
use cnpg_ext_kind::options::Timeouts;
use cnpg_ext_kind::postmaster::PostmasterState;
use cnpg_ext_kind::testing::fixtures::{
    self, Frame, Vol, HEALTHY, PRIMARY_INPLACE, SWITCHOVER, UPGRADING, WAITING, WAITING_FOR_USER,
};
use cnpg_ext_kind::testing::{FakeApi, FakeExec, RecordedRequest};
use cnpg_ext_kind::{KindBackend, KindOptions};
use cnpg_ext_model::backend::{ApplyOutcome, Role, RolloutRecord};
use cnpg_ext_model::judge::{verify_rollout, Check, InstanceState};
use cnpg_ext_model::plan::{ClusterPlan, PlanOptions};
use common::*;
use serde_json::{json, Value};

const NS: &str = "cnpg-ext-t";
const APPLY: &str = "application/apply-patch+yaml";
const ROLLOUT: Duration = Duration::from_secs(60);

fn opts(report: &std::path::Path) -> KindOptions {
    let timeouts = Timeouts {
        operator: Duration::from_secs(30),
        cluster_ready: Duration::from_secs(30),
        rollout: ROLLOUT,
        database: Duration::from_secs(120),
        database_retry: Duration::from_secs(35),
        forbidden_retry: Duration::from_secs(10),
        poll: Duration::from_millis(500),
    };
    KindOptions { report_dir: report.to_path_buf(), timeouts, ..Default::default() }
}

fn vols() -> Vec<Vol<'static>> {
    vec![
        Vol {
            volume: "ext-pgvector",
            image: "ghcr.io/cloudnative-pg/pgvector:0.8.1-18-trixie",
            mount: "/extensions/pgvector",
            keep_image: true,
        },
        Vol { volume: "ext-my-ext", image: "localhost/my-ext:1", mount: "/extensions/my_ext", keep_image: true },
    ]
}

fn yaml(instances: u32, extra: &str) -> String {
    CLUSTER_YAML.replace("instances: 3", &format!("instances: {instances}{extra}"))
}

/// `shared_preload_libraries` gains `vector`: a change that needs a restart.
fn preloaded(instances: u32, method: &str) -> String {
    yaml(instances, &format!("\n  primaryUpdateMethod: {method}"))
        .replace("  postgresql:\n", "  postgresql:\n    shared_preload_libraries: [vector]\n")
}

fn settings(yaml: &str) -> BTreeMap<String, String> {
    fixtures::settings_of(&ClusterPlan::derive(&cluster_doc(yaml).cluster, &PlanOptions::default()))
}

/// The pods' postmasters through the frames: a pod of the first frame shows `before`
/// (with a pending restart for `pending` once the change is applied, frame ≥ 1) until it
/// restarts in place at `(name, frame)` (a later start and `after`); a pod created during
/// the rollout starts with its container and shows `after`.
fn postmasters(
    first: Vec<String>,
    before: BTreeMap<String, String>,
    after: BTreeMap<String, String>,
    pending: Option<&'static str>,
    inplace: Option<(&'static str, usize)>,
) -> impl Fn(usize, &mut Value) {
    move |frame, pod| {
        let name = pod["metadata"]["name"].as_str().unwrap().to_string();
        let uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
        let started = fixtures::started_at(&uid).replace('Z', ".000000Z");
        let pm = if !first.contains(&uid) {
            fixtures::postmaster(&started, &after)
        } else if inplace.is_some_and(|(n, at)| n == name && frame >= at) {
            fixtures::postmaster("2026-01-01T00:30:00.000000Z", &after)
        } else if frame >= 1 && pending.is_some() {
            PostmasterState {
                pending_restart: pending.iter().map(|s| s.to_string()).collect(),
                ..fixtures::postmaster(&started, &before)
            }
        } else {
            fixtures::postmaster(&started, &before)
        };
        *pod = fixtures::with_postmaster(pod.clone(), &pm);
    }
}

fn first_uids(frames: &[Frame]) -> Vec<String> {
    frames[0].pods.iter().map(|p| p.1.to_string()).collect()
}

fn route(api: &FakeApi, instances: u32) {
    api.on(
        "PATCH",
        &format!("/api/v1/namespaces/{NS}"),
        vec![json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})],
    );
    api.on("PATCH", &fixtures::cluster_path(NS, "c"), vec![fixtures::cluster(NS, "c", instances, instances, HEALTHY)]);
}

/// The apply of the Cluster (not the namespace's, which comes first).
fn is_apply(r: &RecordedRequest) -> bool {
    r.method == "PATCH" && r.content_type == APPLY && r.path == fixtures::cluster_path(NS, "c")
}

fn backend(api: &FakeApi, tmp: &std::path::Path, settings: BTreeMap<String, String>) -> KindBackend {
    KindBackend::new(api.client(), NS, opts(tmp)).with_exec(Arc::new(FakeExec::with_postmasters(api, settings)))
}

/// The rollout judged by the one verifier, with each instance's postmaster start time read
/// from the pods of the first and last frame.
fn judge(record: &RolloutRecord, frames: &[Frame], edit: &dyn Fn(usize, &mut Value)) -> Vec<Check> {
    let (_, _, pods, _) = fixtures::frame_objects_with(NS, "c", frames[0].pods.len() as u32, frames, &vols(), edit);
    let states = |pods: &[Value]| -> BTreeMap<String, InstanceState> {
        pods.iter()
            .map(|p| {
                let role = match p["metadata"]["labels"]["cnpg.io/instanceRole"].as_str() {
                    Some("primary") => Role::Primary,
                    _ => Role::Replica,
                };
                let started = fixtures::postmaster_of(p, &BTreeMap::new()).started;
                (p["metadata"]["name"].as_str().unwrap().to_string(), InstanceState { role, started })
            })
            .collect()
    };
    let checks = verify_rollout(record, &states(&pods[0]), &states(pods.last().unwrap()), &BTreeMap::new());
    checks.into_iter().filter(|c| !c.ok).collect()
}

fn order(record: &RolloutRecord) -> Vec<(&str, Role)> {
    record.restarts.iter().map(|r| (r.instance.as_str(), r.role)).collect()
}

fn p<'a>(n: &'a str, u: &'a str, r: &'a str, ok: bool) -> (&'a str, &'a str, &'a str, bool) {
    (n, u, r, ok)
}

/// One instance, `shared_preload_libraries` changed, `primaryUpdateMethod: restart`: the
/// operator restarts the primary in its pod (phase "Primary instance is being restarted
/// in-place"); the pod keeps its uid and its container. Before the postmasters were read,
/// the watch ended at once ("unchanged") and the verifier failed "restarted exactly once".
#[tokio::test(start_paused = true)]
async fn one_instance_restarted_in_place_is_a_restart() {
    let frames = vec![
        Frame { phase: HEALTHY, ready: 1, pods: vec![p("c-1", "uid-1a", "primary", true)] },
        Frame { phase: PRIMARY_INPLACE, ready: 1, pods: vec![p("c-1", "uid-1a", "primary", true)] },
        Frame { phase: PRIMARY_INPLACE, ready: 0, pods: vec![p("c-1", "uid-1a", "primary", false)] },
        Frame { phase: HEALTHY, ready: 1, pods: vec![p("c-1", "uid-1a", "primary", true)] },
    ];
    let (before, after) = (settings(&yaml(1, "")), settings(&preloaded(1, "restart")));
    let edit =
        postmasters(first_uids(&frames), before.clone(), after, Some("shared_preload_libraries"), Some(("c-1", 2)));
    let api = FakeApi::new();
    route(&api, 1);
    fixtures::serve_frames_after_with(&api, NS, "c", 1, &frames, &vols(), &vols(), &edit, is_apply);
    let tmp = tempfile::tempdir().unwrap();
    let mut b = backend(&api, tmp.path(), before);
    let outcome = b.apply_cluster(&cluster_doc(&preloaded(1, "restart"))).await.unwrap();
    let ApplyOutcome::RolledOut { record } = outcome else { panic!("expected a restart, got {outcome:?}") };
    assert_eq!(order(&record), [("c-1", Role::Primary)]);
    assert_eq!(record.restarts[0].old_id, "postmaster started 2026-01-01T00:00:00.000000Z");
    assert!(record.phases.iter().any(|ph| ph == PRIMARY_INPLACE), "{:?}", record.phases);
    assert_eq!(judge(&record, &frames, &edit), Vec::<Check>::new());
}

/// Replicas c-3 then c-2 recreated, then phase "Upgrading cluster" → "Primary instance is
/// being restarted in-place" for c-1 (restart method) or "Switchover in progress" with
/// c-1 demoted in its pod (switchover method): the frames of a 3-instance
/// `shared_preload_libraries` change.
fn three_instances(last: &str) -> Vec<Frame<'static>> {
    let mut frames = vec![
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
            pods: vec![p("c-1", "uid-1a", "primary", true), p("c-3", "uid-3b", "replica", true)],
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
    ];
    match last {
        PRIMARY_INPLACE => frames.extend([
            Frame {
                phase: PRIMARY_INPLACE,
                ready: 3,
                pods: vec![
                    p("c-1", "uid-1a", "primary", true),
                    p("c-2", "uid-2b", "replica", true),
                    p("c-3", "uid-3b", "replica", true),
                ],
            },
            Frame {
                phase: PRIMARY_INPLACE,
                ready: 2,
                pods: vec![
                    p("c-1", "uid-1a", "primary", false),
                    p("c-2", "uid-2b", "replica", true),
                    p("c-3", "uid-3b", "replica", true),
                ],
            },
        ]),
        SWITCHOVER => frames.push(Frame {
            phase: SWITCHOVER,
            ready: 2,
            pods: vec![
                p("c-1", "uid-1a", "replica", false),
                p("c-2", "uid-2b", "primary", true),
                p("c-3", "uid-3b", "replica", true),
            ],
        }),
        WAITING_FOR_USER => {
            frames.push(Frame {
                phase: WAITING_FOR_USER,
                ready: 3,
                pods: vec![
                    p("c-1", "uid-1a", "primary", true),
                    p("c-2", "uid-2b", "replica", true),
                    p("c-3", "uid-3b", "replica", true),
                ],
            });
            return frames;
        }
        other => panic!("{other}"),
    }
    let roles = if last == SWITCHOVER { ["replica", "primary"] } else { ["primary", "replica"] };
    frames.push(Frame {
        phase: HEALTHY,
        ready: 3,
        pods: vec![
            p("c-1", "uid-1a", roles[0], true),
            p("c-2", "uid-2b", roles[1], true),
            p("c-3", "uid-3b", "replica", true),
        ],
    });
    frames
}

async fn three_instance_change(
    method: &str,
    last: &str,
) -> (Vec<Frame<'static>>, Result<ApplyOutcome, String>, Box<dyn Fn(usize, &mut Value)>, Duration) {
    let frames = three_instances(last);
    let (before, after) = (settings(&yaml(3, "")), settings(&preloaded(3, method)));
    let restarted_at = frames.iter().position(|f| f.pods.iter().any(|p| p.0 == "c-1" && !p.3));
    let edit = postmasters(
        first_uids(&frames),
        before.clone(),
        after,
        Some("shared_preload_libraries"),
        restarted_at.map(|i| ("c-1", i)),
    );
    let api = FakeApi::new();
    route(&api, 3);
    fixtures::serve_frames_after_with(&api, NS, "c", 3, &frames, &vols(), &vols(), &edit, is_apply);
    let tmp = tempfile::tempdir().unwrap();
    let mut b = backend(&api, tmp.path(), before);
    let t0 = tokio::time::Instant::now();
    let outcome = b.apply_cluster(&cluster_doc(&preloaded(3, method))).await.map_err(|e| e.to_string());
    (frames, outcome, Box::new(edit), t0.elapsed())
}

/// Three instances, default `primaryUpdateMethod: restart`: replicas recreated from the
/// end of the list, the primary restarted in its pod. Before, the watch waited for c-1's
/// pod to be replaced until the rollout timeout.
#[tokio::test(start_paused = true)]
async fn three_instances_with_the_primary_restarted_in_place() {
    let (frames, outcome, edit, _) = three_instance_change("restart", PRIMARY_INPLACE).await;
    let outcome = outcome.unwrap();
    let ApplyOutcome::RolledOut { record } = outcome else { panic!("expected a rollout, got {outcome:?}") };
    assert_eq!(order(&record), [("c-3", Role::Replica), ("c-2", Role::Replica), ("c-1", Role::Primary)]);
    assert_eq!(judge(&record, &frames, &edit), Vec::<Check>::new());
}

/// `primaryUpdateMethod: switchover`: replicas recreated, then a switchover to c-2; c-1 is
/// demoted in its pod (its postmaster restarts as a standby with the new settings, so
/// the operator has nothing left to roll out). Before, a timeout.
#[tokio::test(start_paused = true)]
async fn three_instances_with_the_old_primary_demoted_in_place() {
    let (frames, outcome, edit, _) = three_instance_change("switchover", SWITCHOVER).await;
    let outcome = outcome.unwrap();
    let ApplyOutcome::RolledOut { record } = outcome else { panic!("expected a rollout, got {outcome:?}") };
    assert_eq!(order(&record), [("c-3", Role::Replica), ("c-2", Role::Replica), ("c-1", Role::Primary)]);
    assert!(record.phases.iter().any(|ph| ph == SWITCHOVER), "{:?}", record.phases);
    assert_eq!(judge(&record, &frames, &edit), Vec::<Check>::new());
}

/// `primaryUpdateStrategy: supervised`: the replicas are recreated and the operator stops
/// at "Waiting for user action". Reported at once as that, not as a timeout.
#[tokio::test(start_paused = true)]
async fn supervised_update_is_reported_as_waiting_for_user_action_at_once() {
    let (_, outcome, _, elapsed) = three_instance_change("restart", WAITING_FOR_USER).await;
    let err = outcome.unwrap_err();
    assert!(err.contains("waiting for user action") && err.contains("supervised"), "{err}");
    assert!(!err.contains("timed out"), "{err}");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
}

/// A reload-only change (`extension_control_path` of one extension): no pod changes, and
/// the instance managers reload 30 s after the apply (a loaded node). The apply returns
/// only once every postmaster has loaded its configuration again and shows the new path;
/// before, it returned at once and the `SHOW` checks after it raced the reload.
#[tokio::test(start_paused = true)]
async fn reload_only_change_waits_for_every_instance_manager_to_reload() {
    let changed = CLUSTER_YAML.replace(
        "ld_library_path: [system]",
        "ld_library_path: [system]\n        extension_control_path: [share, opt]",
    );
    let (before, after) = (settings(CLUSTER_YAML), settings(&changed));
    assert_ne!(before, after);
    let pods = vec![
        p("c-1", "uid-1a", "primary", true),
        p("c-2", "uid-2a", "replica", true),
        p("c-3", "uid-3a", "replica", true),
    ];
    let frames = vec![
        Frame { phase: HEALTHY, ready: 3, pods: pods.clone() },
        Frame { phase: HEALTHY, ready: 3, pods: pods.clone() },
    ];
    let (b2, a2) = (before.clone(), after.clone());
    let edit = move |frame: usize, pod: &mut Value| {
        let mut pm = fixtures::postmaster("2026-01-01T00:00:00.000000Z", if frame == 0 { &b2 } else { &a2 });
        if frame > 0 {
            pm.conf_loaded = "2026-01-01T00:20:00.000000Z".into();
        }
        *pod = fixtures::with_postmaster(pod.clone(), &pm);
    };
    let api = FakeApi::new();
    route(&api, 3);
    fixtures::serve_frames_after_with(&api, NS, "c", 3, &frames, &vols(), &vols(), &edit, |r| r.path == "/late-reload");
    let late = api.client();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        let _ = late.request_text(http::Request::get("/late-reload").body(Vec::new()).unwrap()).await;
    });
    let tmp = tempfile::tempdir().unwrap();
    let mut b = backend(&api, tmp.path(), before);
    let t0 = tokio::time::Instant::now();
    let outcome = b.apply_cluster(&cluster_doc(&changed)).await.unwrap();
    assert!(t0.elapsed() >= Duration::from_secs(30), "returned after {:?}, before the reload", t0.elapsed());
    assert_eq!(outcome, ApplyOutcome::Reloaded, "what was seen: every postmaster reloaded, none restarted");
    // What a SHOW right after the apply reads: the new path on every instance.
    for pod in ["c-1", "c-2", "c-3"] {
        let now = fixtures::postmaster_of(&api.object(&fixtures::pods_path(NS), pod).unwrap(), &BTreeMap::new());
        assert_eq!(now.settings, after, "{pod}");
    }
}

/// The reload never comes: a timeout that names the instances and what they still show.
#[tokio::test(start_paused = true)]
async fn reload_that_never_comes_times_out_naming_the_postmasters() {
    let changed = CLUSTER_YAML.replace(
        "ld_library_path: [system]",
        "ld_library_path: [system]\n        extension_control_path: [share, opt]",
    );
    let pods = vec![p("c-1", "uid-1a", "primary", true), p("c-2", "uid-2a", "replica", true)];
    let frames = vec![Frame { phase: HEALTHY, ready: 2, pods }];
    let api = FakeApi::new();
    route(&api, 2);
    fixtures::serve_frames(&api, NS, "c", 2, &frames, &vols());
    let tmp = tempfile::tempdir().unwrap();
    let mut b = backend(&api, tmp.path(), settings(CLUSTER_YAML));
    let err =
        b.apply_cluster(&cluster_doc(&changed.replace("instances: 3", "instances: 2"))).await.unwrap_err().to_string();
    assert!(err.contains("timed out") && err.contains("postmasters not there yet"), "{err}");
    assert!(err.contains("c-2: extension_control_path"), "{err}");
}

/// The `postgres` container of a pod restarts (the kubelet's `restartCount` grows, same
/// uid): one restart, and the new postmaster read afterwards is not a second one; a later
/// start time of that postmaster is.
#[test]
fn container_restart_counts_once_and_the_next_postmaster_start_is_its_baseline() {
    use cnpg_ext_kind::watch::{PodView, RolloutObserver};
    let view = |count| PodView {
        name: "c-1".into(),
        uid: "uid-1a".into(),
        role: Some(Role::Primary),
        ready: true,
        deleting: false,
        image_volumes: vec![],
        crash_looping: None,
        restart_count: count,
    };
    let now = chrono::Utc::now();
    let pm = |t: &str| fixtures::postmaster(t, &BTreeMap::new());
    let mut o = RolloutObserver::new(&[view(0)], Some(HEALTHY));
    o.postmasters_before([("c-1".to_string(), pm("2026-01-01T00:00:00.000000Z"))].into());
    o.pod_seen(&view(0), now);
    assert!(!o.any_restart());
    o.pod_seen(&view(1), now);
    assert_eq!(o.record().restarts.len(), 1);
    assert_eq!(o.record().restarts[0].new_id, "uid-1a container restarts 1");
    o.postmaster_seen("c-1", pm("2026-01-01T00:05:00.000000Z"), now);
    assert_eq!(o.record().restarts.len(), 1, "the restarted container's postmaster is not a second restart");
    o.postmaster_seen("c-1", pm("2026-01-01T00:09:00.000000Z"), now);
    assert_eq!(o.record().restarts.len(), 2);
    assert_eq!(o.record().restarts[1].old_id, "postmaster started 2026-01-01T00:05:00.000000Z");
    assert!(o.replaced_all());
}

/// The postmasters show search paths the plan does not expect (a model that disagrees with
/// the operator): an apply that does not change them still ends at once — it is `verify`
/// that reports the disagreement, with both values, not every apply that times out.
#[tokio::test(start_paused = true)]
async fn settings_the_change_leaves_alone_are_not_waited_for() {
    let api = FakeApi::new();
    route(&api, 3);
    let cpath = fixtures::cluster_path(NS, "c");
    api.on_responses(
        "GET",
        &cpath,
        vec![
            (404, cnpg_ext_kind::testing::status_body(404, "NotFound", "not found")),
            (200, fixtures::cluster(NS, "c", 3, 3, HEALTHY)),
        ],
    );
    let pods = vec![
        p("c-1", "uid-1a", "primary", true),
        p("c-2", "uid-2a", "replica", true),
        p("c-3", "uid-3a", "replica", true),
    ];
    fixtures::serve_frames(&api, NS, "c", 3, &[Frame { phase: HEALTHY, ready: 3, pods }], &vols());
    let mut wrong = settings(CLUSTER_YAML);
    wrong.insert("dynamic_library_path".into(), "$libdir".into());
    let tmp = tempfile::tempdir().unwrap();
    let mut b = backend(&api, tmp.path(), wrong);
    assert_eq!(b.apply_cluster(&cluster_doc(CLUSTER_YAML)).await.unwrap(), ApplyOutcome::Created);
    let t0 = tokio::time::Instant::now();
    let env_only = CLUSTER_YAML.replace("ld_library_path: [system]", "ld_library_path: [system, lib]");
    assert_eq!(b.apply_cluster(&cluster_doc(&env_only)).await.unwrap(), ApplyOutcome::Unchanged);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
}
