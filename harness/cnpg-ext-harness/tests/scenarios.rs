//! Every scenario directory, on the local backend: one test case each.

mod common;

use std::path::PathBuf;

use cnpg_ext_harness::app::{self, BackendKind, RunOptions};
use cnpg_ext_harness::runner::Status;
use cnpg_ext_model::CnpgVersion;

pub fn options(paths: Vec<PathBuf>) -> RunOptions {
    RunOptions {
        paths,
        backend: BackendKind::Local,
        jobs: 2,
        report_dir: None,
        keep: false,
        cnpg: CnpgVersion::DEFAULT,
        pg_config: None,
        run_as: None,
        workdir: None,
        progress: false,
        command: vec!["cargo test".into()],
        engine: Default::default(),
        kind: Default::default(),
        operand: Default::default(),
    }
}

#[rstest::rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_passes_on_local(#[files("../../scenarios/*/scenario.yaml")] file: PathBuf) {
    let out = app::run(options(vec![file.clone()])).await.unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let s = &out.report.scenarios[0];
    assert_eq!(s.status, Status::Passed, "{}", s.failure_summary().unwrap_or_default());
    assert!(s.steps.iter().all(|st| st.status == Status::Passed));
}
