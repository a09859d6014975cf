//! The whole server log of each container instance in a bundle (not the engine's last lines):
//! a failed container run's bundle lists each instance's log, and it holds both the
//! postmaster's first lines and the failing ERROR line, with more than a tail's worth of
//! lines between them.
//!
//! Without a usable engine the test says so and is skipped, unless `CI=true` or
//! `CNPG_EXT_HARNESS_REQUIRE_ENGINE` is set (then it fails).

mod common;

use common::*;

#[test]
fn a_failed_container_runs_bundle_holds_each_instances_whole_server_log() {
    let (_root, dir) = scenario_copy("custom-path");
    let file = dir.join("scenario.yaml");
    let mut yaml = std::fs::read_to_string(&file).unwrap();
    // Forty lines of log after the start, then a statement that fails.
    yaml += r#"  - sql:
      query: "DO $$ BEGIN FOR i IN 1..40 LOOP RAISE LOG 'cnpg-ext filler line %', i; END LOOP; END $$"
  - sql:
      query: SELECT cnpg_ext_no_such_function()
      rows: [["never"]]
"#;
    std::fs::write(&file, yaml).unwrap();
    let Some(FailedRun { _scratch, reports, bundle, parent, .. }) = failed_container_run(&dir, "container-logs") else {
        return;
    };

    let o = run(&["bundle", "show", bundle.to_str().unwrap(), "--files"]);
    let shown = text(&o);
    assert_eq!(o.status.code(), Some(0), "{shown}");
    let logs: Vec<&str> = shown
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|p| p.starts_with("reports/logs/custom-path/") && p.ends_with(".log"))
        .collect();
    assert_eq!(logs, ["reports/logs/custom-path/cluster-custom-path-1.log"], "{shown}");

    let log = std::fs::read_to_string(reports.join(logs[0].trim_start_matches("reports/"))).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    let first = lines.iter().position(|l| l.contains("starting PostgreSQL")).unwrap_or_else(|| panic!("{log}"));
    let error = lines
        .iter()
        .position(|l| l.contains("ERROR:") && l.contains("cnpg_ext_no_such_function() does not exist"))
        .unwrap_or_else(|| panic!("the failing ERROR line: {log}"));
    assert!(error > first + 40, "the whole log, not a tail: lines {first}..{error}\n{log}");
    assert_eq!(log.matches("LOG:  cnpg-ext filler line").count(), 40, "{log}");

    assert!(processes_mentioning(parent.path().to_str().unwrap()).is_empty(), "processes left behind");
    assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0, "work directory left behind");
}

/// A rolling update replaces every container: each instance's log in the bundle still begins
/// with its first container's (kept before that container was removed), headed, then the
/// running one's with the failing ERROR line.
#[test]
fn a_replaced_containers_log_stays_in_the_instances_log() {
    let (_root, dir) = scenario_copy("add-extension");
    let file = dir.join("scenario.yaml");
    let mut yaml = std::fs::read_to_string(&file).unwrap();
    yaml += "  - sql:\n      query: SELECT cnpg_ext_no_such_function()\n      rows: [[\"never\"]]\n";
    std::fs::write(&file, yaml).unwrap();
    let Some(FailedRun { _scratch, reports, parent, out, .. }) = failed_container_run(&dir, "container-logs-rollout")
    else {
        return;
    };
    let logs_dir = reports.join("logs/add-extension");
    let mut logs: Vec<(String, String)> = std::fs::read_dir(&logs_dir)
        .unwrap_or_else(|e| panic!("{}: {e}\n{out}", logs_dir.display()))
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read_to_string(e.path()).unwrap()))
        .collect();
    logs.sort();
    assert_eq!(logs.len(), 3, "one log per instance: {logs:?}");
    for (name, log) in &logs {
        let removed = log.find(" (removed) --").unwrap_or_else(|| panic!("{name}: no replaced container:\n{log}"));
        let running = log.find(" (running) --").unwrap_or_else(|| panic!("{name}: no running container:\n{log}"));
        assert!(removed < running, "{name}:\n{log}");
        assert_eq!(log.matches("LOG:  starting PostgreSQL").count(), 2, "both containers' starts, {name}:\n{log}");
    }
    assert!(
        logs.iter().any(|(_, l)| l.rfind("cnpg_ext_no_such_function() does not exist") > l.find(" (running) --")),
        "the ERROR line in a running container's part: {logs:?}"
    );
    assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0, "work directory left behind");
}

/// A container run of the scenario in `dir` that must fail (exit 1), with its reports and a
/// bundle; `None` when no engine is usable (skipped, or failed under CI).
struct FailedRun {
    _scratch: tempfile::TempDir,
    reports: std::path::PathBuf,
    bundle: std::path::PathBuf,
    parent: tempfile::TempDir,
    out: String,
}

fn failed_container_run(dir: &std::path::Path, name: &str) -> Option<FailedRun> {
    let scratch = tempfile::tempdir().unwrap();
    let reports = scratch.path().join("r");
    let bundle = scratch.path().join("run.tar.gz");
    let parent = workdir_parent(name);
    let o = bin()
        .args(["run", dir.to_str().unwrap(), "--backend", "container", "--no-progress"])
        .args(["--report-dir", reports.to_str().unwrap(), "--workdir", parent.path().to_str().unwrap()])
        .args(["--bundle", bundle.to_str().unwrap()])
        .output()
        .unwrap();
    let out = text(&o);
    if o.status.code() == Some(3) {
        cannot_run(&format!("no usable container engine:\n{out}"), Some("CNPG_EXT_HARNESS_REQUIRE_ENGINE"));
        return None;
    }
    assert_eq!(o.status.code(), Some(1), "{out}");
    Some(FailedRun { _scratch: scratch, reports, bundle, parent, out })
}
