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
