//! A failing kind scenario's evidence, over the kind backend's fake Kubernetes API: the
//! Cluster never gets ready because the instance's postgres container keeps failing; the
//! failed step carries the postmaster's lines from the pod log API (the previous
//! container's FATAL line), the pod's events and the instance's settings (read by `psql` in
//! the pod, as no port-forward session can be opened here), as report.json writes them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cnpg_ext_kind::testing::{fixtures, status_body, FakeApi, FakeExec};
use cnpg_ext_kind::{KindBackend, KindOptions, Timeouts};
use cnpg_ext_model::{CnpgVersion, Scenario};
use serde_json::{json, Value};

use crate::images::store::ImageStore;
use crate::reports::run::Status;
use crate::run::runner::ScenarioRun;

const NS: &str = "cnpg-ext-evidence";

const FATAL: &str = "could not access file \\\"preloaded\\\": No such file or directory";

/// The instance manager's JSON line for one PostgreSQL record.
fn record(time: &str, severity: &str, message: &str) -> String {
    format!(
        r#"{{"level":"info","ts":"{time}","logger":"postgres","msg":"record","logging_pod":"c-1","record":{{"log_time":"{time}","process_id":"21","error_severity":"{severity}","message":"{message}"}}}}"#
    )
}

fn fake() -> FakeApi {
    let api = FakeApi::new();
    api.on(
        "PATCH",
        &format!("/api/v1/namespaces/{NS}"),
        vec![json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})],
    );
    let cpath = fixtures::cluster_path(NS, "c");
    let stuck = fixtures::cluster(NS, "c", 1, 0, "Setting up primary");
    api.on_responses("GET", &cpath, vec![(404, status_body(404, "NotFound", "not found")), (200, stuck.clone())]);
    api.on("PATCH", &cpath, vec![stuck]);
    let pod = fixtures::pod(NS, "c", "c-1", "uid-1a", "primary", false, &[]);
    api.serve_collection(&fixtures::pods_path(NS), "PodList", vec![pod], vec![]);
    let previous = [
        record("2026-01-01 00:00:01.000 UTC", "LOG", "starting PostgreSQL 18.1"),
        record("2026-01-01 00:00:01.100 UTC", "FATAL", FATAL),
    ]
    .join("\n");
    let current = record("2026-01-01 00:00:09.000 UTC", "LOG", "starting PostgreSQL 18.1");
    api.serve_pod_log(NS, "c-1", &current, Some(&previous));
    let event = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "c-1.1", "namespace": NS},
        "involvedObject": {"kind": "Pod", "name": "c-1", "namespace": NS},
        "type": "Warning", "reason": "BackOff",
        "message": "Back-off restarting failed container postgres in pod c-1",
        "lastTimestamp": "2026-01-01T00:00:08Z"
    });
    api.serve_collection(&format!("/api/v1/namespaces/{NS}/events"), "EventList", vec![event], vec![]);
    api
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_kind_scenario_carries_log_lines_pod_events_and_settings() {
    let api = fake();
    let settings: BTreeMap<String, String> = [
        ("extension_control_path", "$system"),
        ("dynamic_library_path", "$libdir"),
        ("shared_preload_libraries", "preloaded"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let exec = Arc::new(FakeExec::with_postmasters(&api, settings));
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("scenario");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("scenario.yaml"),
        "description: a Cluster that never gets ready\nsteps:\n  - apply: {file: cluster.yaml}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("cluster.yaml"),
        "apiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata:\n  name: c\nspec:\n  instances: 1\n  imageName: ghcr.io/cloudnative-pg/postgresql:18-minimal-trixie\n  storage:\n    size: 1Gi\n",
    )
    .unwrap();
    let scenario = Scenario::load(&dir.join("scenario.yaml"), CnpgVersion::DEFAULT).unwrap();
    let timeouts =
        Timeouts { cluster_ready: Duration::from_secs(1), poll: Duration::from_millis(100), ..Timeouts::default() };
    let opts = KindOptions { report_dir: scratch.path().join("reports"), timeouts, ..KindOptions::default() };
    let mut backend = KindBackend::new(api.client(), NS, opts).with_exec(exec);
    let store = ImageStore::default();
    let steps = ScenarioRun::new(&scenario, &store, &mut backend).run(&|_: &str| {}).await;

    let failed = steps.iter().find(|s| s.status == Status::Failed).expect("the apply step fails");
    let step: Value = serde_json::to_value(failed).unwrap();
    assert_eq!(step["category"], "timeout", "{step:#}");
    let of = |source: &str| -> Vec<(String, String)> {
        step["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["source"] == source)
            .map(|e| (e["instance"].as_str().unwrap_or("").to_string(), e["text"].as_str().unwrap().to_string()))
            .collect()
    };
    let logs = of("postmaster-log");
    assert_eq!(logs.len(), 1, "{step:#}");
    assert_eq!(logs[0].0, "c-1");
    assert!(
        logs[0].1.contains(
            "2026-01-01 00:00:01.100 UTC [21] FATAL:  could not access file \"preloaded\": No such file or directory"
        ),
        "the previous container's FATAL line, as PostgreSQL prints it: {step:#}"
    );
    let events = of("events");
    assert_eq!(events.len(), 1, "{step:#}");
    assert!(events[0].1.contains("Warning Pod/c-1: BackOff Back-off restarting failed container postgres"), "{step:#}");
    let show = of("show");
    assert_eq!(show.len(), 1, "{step:#}");
    assert_eq!(show[0].0, "c-1");
    assert!(show[0].1.contains("shared_preload_libraries = preloaded"), "{step:#}");
    assert!(show[0].1.contains("extension_control_path = $system"), "{step:#}");
    assert!(of("diagnostics")[0].1.ends_with(NS), "{step:#}");
}
