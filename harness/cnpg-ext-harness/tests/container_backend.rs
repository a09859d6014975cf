//! The seed scenarios on the container backend (podman or docker ≥ 28), through the library.
//!
//! Without a usable engine the test says so and is skipped, unless `CI=true` or
//! `CNPG_EXT_HARNESS_REQUIRE_ENGINE` is set (`common::cannot_run`), where it fails. Engine flags come from `CNPG_EXT_HARNESS_ENGINE_FLAGS` /
//! `CNPG_EXT_HARNESS_RUN_FLAGS` like for the binary.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cnpg_ext_harness::app::{self, BackendKind, RunOptions};
use cnpg_ext_harness::backends::container::{split_flags, EngineOptions, LABEL_RUN};
use cnpg_ext_harness::error::HarnessError;
use cnpg_ext_harness::runner::Status;
use cnpg_ext_model::CnpgVersion;

fn options(paths: Vec<PathBuf>, workdir: &Path, engine: EngineOptions) -> RunOptions {
    RunOptions {
        paths,
        backend: BackendKind::Container,
        jobs: 2,
        report_dir: None,
        keep: false,
        cnpg: CnpgVersion::DEFAULT,
        pg_config: None,
        run_as: None,
        workdir: Some(workdir.to_path_buf()),
        progress: false,
        command: vec!["cargo test".into()],
        engine,
        kind: Default::default(),
        operand: Default::default(),
        wrap: None,
    }
}

/// The engine CLI the harness will pick, with the global flags, for the leftover checks.
fn engine_cli(opts: &EngineOptions) -> Command {
    let program = opts.engine.clone().unwrap_or_else(|| {
        let on_path =
            |p: &str| std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).any(|d| d.join(p).is_file());
        if on_path("podman") {
            "podman".into()
        } else {
            "docker".into()
        }
    });
    let mut c = Command::new(program);
    c.args(split_flags(opts.engine_flags.as_deref().unwrap_or("")).unwrap());
    c
}

fn listed(opts: &EngineOptions, args: &[&str]) -> Vec<String> {
    let out = engine_cli(opts).args(args).output().expect("run the engine");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_scenarios_pass_on_the_container_backend() {
    let engine = EngineOptions::from_env();
    // In memory when possible (instance data lives below the work directory).
    let parent = match tempfile::Builder::new().prefix("cnpg-ext-test-container-").tempdir_in("/dev/shm") {
        Ok(d) => {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            d
        }
        Err(_) => common::workdir_parent("container"),
    };
    // The run id is the name of the work directory the run makes below `parent`.
    let watch_dir = parent.path().to_path_buf();
    let watcher = tokio::spawn(async move {
        loop {
            if let Some(e) = std::fs::read_dir(&watch_dir).ok().and_then(|mut d| d.next()).and_then(Result::ok) {
                return e.file_name().to_string_lossy().into_owned();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let scenarios = common::repo().join("scenarios");
    let result = app::run(options(vec![scenarios], parent.path(), engine.clone())).await;
    let out = match result {
        Err(HarnessError::Environment(msg)) => {
            common::cannot_run(&format!("no usable container engine ({msg})"), Some("CNPG_EXT_HARNESS_REQUIRE_ENGINE"));
            return;
        }
        Err(e) => panic!("the container backend could not run (exit {}): {e}", e.exit_code()),
        Ok(out) => out,
    };
    let run_id = tokio::time::timeout(Duration::from_secs(1), watcher).await.expect("run id").unwrap();
    let r = &out.report;
    assert_eq!(r.environment.backend, "container");
    assert!(r.scenarios.len() >= 5, "seed scenarios found: {}", r.scenarios.len());
    for s in &r.scenarios {
        assert_eq!(s.status, Status::Passed, "{}: {}", s.id, s.failure_summary().unwrap_or_default());
        assert!(s.steps.iter().all(|st| st.status == Status::Passed), "{}", s.id);
        assert!(s.error.is_none(), "{}: {:?}", s.id, s.error);
    }
    // Nothing of the run is left in the engine.
    let filter = format!("label={LABEL_RUN}={run_id}");
    assert_eq!(
        listed(&engine, &["ps", "-aq", "--filter", &filter]),
        Vec::<String>::new(),
        "containers left by {run_id}"
    );
    assert_eq!(
        listed(&engine, &["volume", "ls", "-q", "--filter", &filter]),
        Vec::<String>::new(),
        "volumes left by {run_id}"
    );
    assert!(!parent.path().join(&run_id).exists(), "work directory left behind");
    // The podman API service the run started on its private socket is gone too.
    let socket = parent.path().join(&run_id).join("c/podman.sock");
    assert_eq!(processes_naming(&socket.display().to_string()), Vec::<String>::new(), "API service left running");
}

/// Command lines of live processes that contain `needle`.
fn processes_naming(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if !entry.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let line = String::from_utf8_lossy(&raw).replace('\0', " ");
        if line.contains(needle) {
            found.push(line);
        }
    }
    found
}

#[tokio::test]
async fn a_missing_engine_is_an_environment_error() {
    let parent = common::workdir_parent("container-noengine");
    let engine = EngineOptions { engine: Some("/nonexistent/podman".into()), ..EngineOptions::default() };
    let file = common::repo().join("scenarios/single-extension/scenario.yaml");
    match app::run(options(vec![file], parent.path(), engine)).await {
        Err(e @ HarnessError::Environment(_)) => {
            assert_eq!(e.exit_code(), 3);
            let msg = e.to_string();
            assert!(msg.contains("podman") && msg.contains("CNPG_EXT_HARNESS_ENGINE_FLAGS"), "{msg}");
        }
        Err(e) => panic!("expected an environment error, got {e}"),
        Ok(_) => panic!("a missing engine must not run"),
    }
}
