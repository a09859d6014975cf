//! Every scenario directory, on the local backend: one test case each.

mod common;

use std::path::PathBuf;

use cnpg_ext_harness::run::Status;
use cnpg_ext_harness::Harness;

#[rstest::rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_passes_on_local(#[files("../../scenarios/*/scenario.yaml")] file: PathBuf) {
    // The library entry point, as a downstream crate's test would use it.
    let report = Harness::local().jobs(2).run([&file]).await.unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    assert!(report.passed(), "{}", report.failures());
    let s = &report.scenarios[0];
    assert_eq!(s.status, Status::Passed, "{}", s.failure_summary().unwrap_or_default());
    assert!(s.steps.iter().all(|st| st.status == Status::Passed));
}

/// A scenario's duration is its own, not the wait for a slot. One at a time, the scenarios
/// run in disjoint stretches of the run, so their durations add up to less than the run's.
/// They once counted from the run's start: waiting scenarios carried the others' time, and
/// three scenarios added up to more than the run (2122 ms in a 1509 ms run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_at_a_time_each_duration_is_the_scenarios_own() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scenarios");
    let paths = ["single-extension", "multi-extension-image", "custom-path"].map(|s| root.join(s));
    let report = Harness::local().jobs(1).run(paths).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(report.passed(), "{}", report.failures());
    let each: Vec<_> = report.scenarios.iter().map(|s| (s.id.as_str(), s.duration_ms)).collect();
    let sum: u64 = each.iter().map(|(_, d)| d).sum();
    assert!(sum <= report.duration_ms, "scenarios {each:?} add up to {sum} ms; the run took {} ms", report.duration_ms);
}
