//! `--retries` on the container backend, through the binary: an instance container the engine
//! refuses to create once (`CNPG_EXT_HARNESS_FAULT=fail-container-create=<scenario>`) is
//! retried and the scenario is `flaky` in report.json and junit; an assertion failure in the
//! same run is never retried; and a matrix cell that was flaky is what `matrix --rerun-failed`
//! runs again, the passed cell carried over.
//!
//! Without a usable engine each test says so and is skipped, unless `CI=true` or
//! `CNPG_EXT_HARNESS_REQUIRE_ENGINE` is set (then it fails). Engine flags come from
//! `CNPG_EXT_HARNESS_ENGINE_FLAGS` / `CNPG_EXT_HARNESS_RUN_FLAGS`.

mod common;

use std::path::Path;

use common::*;

const FAULT: &str = "CNPG_EXT_HARNESS_FAULT";

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

/// Exit 3 (no usable engine): skipped by the one skip rule; `true` when the test may go on.
fn engine_usable(o: &std::process::Output) -> bool {
    if o.status.code() == Some(3) {
        cannot_run(&format!("no usable container engine:\n{}", text(o)), Some("CNPG_EXT_HARNESS_REQUIRE_ENGINE"));
        return false;
    }
    true
}

#[test]
fn a_refused_container_create_is_retried_and_flaky_and_an_assertion_is_not() {
    // custom-path: its first container create is refused. single-extension (a copy with a
    // wrong expected distance): an assertion failure, which must run once.
    let (_root, broken) = scenario_copy("single-extension");
    let file = broken.join("scenario.yaml");
    let yaml = std::fs::read_to_string(&file).unwrap();
    let edited = yaml.replace("5.196152422706632", "5.2");
    assert_ne!(yaml, edited);
    std::fs::write(&file, edited).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let reports = scratch.path().join("r");
    let parent = workdir_parent("flaky-container");
    let o = bin()
        .args(["run", "scenarios/custom-path", broken.to_str().unwrap(), "--backend", "container"])
        .args(["--retries", "1", "--no-progress", "--jobs", "2"])
        .args(["--report-dir", reports.to_str().unwrap(), "--workdir", parent.path().to_str().unwrap()])
        .env(FAULT, "fail-container-create=custom-path")
        .output()
        .unwrap();
    if !engine_usable(&o) {
        return;
    }
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "the assertion failure decides the exit: {out}");
    assert!(out.contains("RETRY custom-path (container-create, attempt 2 of 2)"), "{out}");
    assert!(!out.contains("RETRY single-extension"), "an assertion must not be retried: {out}");
    assert!(out.contains("FLAKY custom-path"), "{out}");
    assert!(out.contains("1 passed, 1 failed, 1 flaky") || out.contains("0 passed, 1 failed, 1 flaky"), "{out}");

    let r = json(&reports.join("report.json"));
    assert_eq!(r["environment"]["backend"], "container");
    let by_id = |id: &str| r["scenarios"].as_array().unwrap().iter().find(|s| s["id"] == id).unwrap().clone();
    let flaky = by_id("custom-path");
    assert_eq!(flaky["status"], "flaky", "{flaky:#}");
    assert_eq!(flaky["category"], "container-create", "{flaky:#}");
    let attempts = flaky["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{flaky:#}");
    assert_eq!(attempts[0]["category"], "container-create");
    assert!(attempts[0]["failure"].as_str().unwrap().contains("injected refusal of the engine"), "{flaky:#}");
    // The retry ran on fresh instances: every step passed.
    assert!(flaky["steps"].as_array().unwrap().iter().all(|s| s["status"] == "passed"), "{flaky:#}");
    let failed = by_id("single-extension");
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["category"], "assertion");
    assert!(failed.get("attempts").is_none_or(|a| a.as_array().is_some_and(Vec::is_empty)), "{failed:#}");
    assert_eq!(r["totals"]["flaky"], 1);
    assert_eq!(r["totals"]["failed"], 1);

    let junit = std::fs::read_to_string(reports.join("junit.xml")).unwrap();
    assert_eq!(junit.matches("<flakyFailure").count(), 1, "{junit}");
    assert!(junit.contains("type=\"container-create\""), "{junit}");
    assert!(junit.contains("type=\"assertion\""), "{junit}");

    assert!(processes_mentioning(parent.path().to_str().unwrap()).is_empty(), "processes left behind");
    assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0, "work directory left behind");
}

#[test]
fn a_flaky_container_cell_is_rerun_by_rerun_failed() {
    let scratch = tempfile::tempdir().unwrap();
    let matrix = scratch.path().join("m.yaml");
    let scen = |id: &str| repo().join("scenarios").join(id).display().to_string();
    std::fs::write(
        &matrix,
        format!(
            "axes:\n  backend: [container]\n  scenarios:\n    - {{name: pathprobe, paths: [{}]}}\n    - {{name: vector, paths: [{}]}}\n",
            scen("custom-path"),
            scen("single-extension")
        ),
    )
    .unwrap();
    let first = scratch.path().join("first");
    let o = bin()
        .args(["matrix", matrix.to_str().unwrap(), "--no-progress", "--retries", "1"])
        .args(["--report-dir", first.to_str().unwrap()])
        .env(FAULT, "fail-container-create=custom-path")
        .output()
        .unwrap();
    let out = text(&o);
    let report = json(&first.join("report.json"));
    let cell = |r: &serde_json::Value, suffix: &str| {
        r["cells"].as_array().unwrap().iter().find(|c| c["id"].as_str().unwrap().ends_with(suffix)).unwrap().clone()
    };
    if cell(&report, "_pathprobe")["status"] == "error" && out.contains("environment unusable") {
        cannot_run(&format!("no usable container engine:\n{out}"), Some("CNPG_EXT_HARNESS_REQUIRE_ENGINE"));
        return;
    }
    assert_eq!(o.status.code(), Some(0), "a flaky cell is not a failed matrix: {out}");
    let flaky = cell(&report, "_pathprobe");
    assert_eq!(flaky["status"], "flaky", "{flaky:#}\n{out}");
    let flaky_id = flaky["id"].as_str().unwrap().to_string();
    assert!(out.contains(&format!("FLAKY {flaky_id}")), "{out}");
    assert_eq!(cell(&report, "_vector")["status"], "passed", "{out}");
    assert_eq!(report["totals"]["flaky"], 1);
    let cell_report = json(&first.join("cells").join(&flaky_id).join("report.json"));
    assert_eq!(cell_report["scenarios"][0]["attempts"][0]["category"], "container-create", "{cell_report:#}");

    // Without the fault: only the flaky cell runs again, and passes; the other is carried over.
    let second = scratch.path().join("second");
    let o = bin()
        .args(["matrix", matrix.to_str().unwrap(), "--no-progress", "--report-dir", second.to_str().unwrap()])
        .args(["--rerun-failed", first.join("report.json").to_str().unwrap()])
        .env_remove(FAULT)
        .output()
        .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("1 cell(s) to run, 1 carried over"), "{out}");
    let again = json(&second.join("report.json"));
    let rerun = cell(&again, "_pathprobe");
    assert_eq!(rerun["status"], "passed", "{rerun:#}");
    assert_ne!(rerun["started_at"], flaky["started_at"], "the flaky cell must run again");
    assert!(rerun.get("carried_over_from").is_none());
    let kept = cell(&again, "_vector");
    assert_eq!(kept["started_at"], cell(&report, "_vector")["started_at"], "the passed cell must not run again");
    assert!(kept["carried_over_from"].as_str().unwrap().ends_with("first/report.json"));
    assert_eq!(again["totals"]["flaky"], 0);
}
