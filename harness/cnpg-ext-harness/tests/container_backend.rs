//! The seed scenarios on the container backend (podman or docker ≥ 28), through the library.
//!
//! Without a usable engine the test says so and is skipped, unless `CI=true` or
//! `CNPG_EXT_HARNESS_REQUIRE_ENGINE` is set (`common::cannot_run`), where it fails. Engine flags come from `CNPG_EXT_HARNESS_ENGINE_FLAGS` /
//! `CNPG_EXT_HARNESS_RUN_FLAGS` like for the binary.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cnpg_ext_harness::error::HarnessError;
use cnpg_ext_harness::run::Status;
use cnpg_ext_harness::run::{self as app, BackendKind, RunOptions};
use cnpg_ext_harness::testing::{split_flags, LABEL_RUN};
use cnpg_ext_harness::EngineOptions;
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
        operand: Default::default(),
        wrap: None,
        registries: Default::default(),
        ..RunOptions::default()
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

/// The engine-run flags reach instance containers through the Engine API: each effect is read
/// back inside the container by the postgres process itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_run_flags_reach_the_instance_containers() {
    let base = EngineOptions::from_env();
    let flags = format!(
        "{} --shm-size 256m --security-opt no-new-privileges -m 1g --pids-limit=2048 \
         --device /dev/null:/dev/cnpg-ext-test --cap-add SYS_PTRACE --cap-drop=CHOWN",
        base.run_flags.clone().unwrap_or_default()
    );
    let engine = EngineOptions { run_flags: Some(flags), ..base };
    let (_root, dir) = common::scenario_copy("single-extension");
    let either = |v2: &str, v1: &str| {
        format!("SELECT trim(coalesce(pg_read_file('{v2}', true), pg_read_file('{v1}', true)), E'\\n')")
    };
    let checks = [
        (
            "/dev/shm is 256m (--shm-size)",
            r"SELECT (regexp_match(pg_read_file('/proc/self/mountinfo'), '/dev/shm [^\n]*size=(\d+k)'))[1]".to_string(),
            "262144k",
        ),
        (
            "no new privileges (--security-opt)",
            r"SELECT (regexp_match(pg_read_file('/proc/self/status'), 'NoNewPrivs:\s+(\d)'))[1]".into(),
            "1",
        ),
        ("memory limit 1 GiB (-m)", either("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"), "1073741824"),
        ("pids limit (--pids-limit)", either("/sys/fs/cgroup/pids.max", "/sys/fs/cgroup/pids/pids.max"), "2048"),
        ("the device is there (--device)", "SELECT (pg_stat_file('/dev/cnpg-ext-test')).size IS NOT NULL".into(), "t"),
        (
            "bounding set: SYS_PTRACE (bit 19) added, CHOWN (bit 0) dropped",
            r"SELECT format('%s,%s', (b >> 19) & 1, b & 1) FROM (SELECT ('x' || (regexp_match(pg_read_file('/proc/self/status'), 'CapBnd:\s+([0-9a-f]+)'))[1])::bit(64)::bigint AS b) caps".into(),
            "1,0",
        ),
    ];
    let q = |s: &str| serde_json::to_string(s).unwrap();
    let mut yaml = String::from(
        "description: engine-run flags reach the instance containers\nimages:\n  - reference: ghcr.io/cloudnative-pg/pgvector:0.8.6-18-trixie\n    fixture: ../../fixtures/pgvector\nsteps:\n  - apply: {file: cluster.yaml}\n",
    );
    for (name, query, value) in &checks {
        yaml +=
            &format!("  - sql:\n      name: {}\n      query: {}\n      rows: [[{}]]\n", q(name), q(query), q(value));
    }
    std::fs::write(dir.join("scenario.yaml"), yaml).unwrap();
    let parent = common::workdir_parent("container-flags");
    let out = match app::run(options(vec![dir], parent.path(), engine)).await {
        Err(HarnessError::Environment(msg)) => {
            common::cannot_run(&format!("no usable container engine ({msg})"), Some("CNPG_EXT_HARNESS_REQUIRE_ENGINE"));
            return;
        }
        Err(e) => panic!("the run could not start (exit {}): {e}", e.exit_code()),
        Ok(out) => out,
    };
    let s = &out.report.scenarios[0];
    assert_eq!(s.status, Status::Passed, "{}", s.failure_summary().unwrap_or_default());
    let passed: Vec<&str> =
        s.steps.iter().filter(|st| st.status == Status::Passed).map(|st| st.title.as_str()).collect();
    for (name, _, _) in &checks {
        assert!(passed.contains(name), "{name}: {passed:?}");
    }
}

/// A flag the API path cannot honour is refused (exit 2), naming the variable, the flag and
/// what is understood, before anything is started.
#[tokio::test]
async fn an_unknown_engine_run_flag_is_invalid_input() {
    let parent = common::workdir_parent("container-badflag");
    let engine =
        EngineOptions { run_flags: Some("--ulimit nofile=1024 --privileged".into()), ..EngineOptions::from_env() };
    let file = common::repo().join("scenarios/single-extension/scenario.yaml");
    match app::run(options(vec![file], parent.path(), engine)).await {
        Err(e @ HarnessError::Input(_)) => {
            assert_eq!(e.exit_code(), 2);
            let msg = e.to_string();
            for part in ["CNPG_EXT_HARNESS_RUN_FLAGS", "`--privileged`", "--cap-add", "--shm-size", "--device"] {
                assert!(msg.contains(part), "{part}: {msg}");
            }
        }
        Err(e) => panic!("expected invalid input, got (exit {}) {e}", e.exit_code()),
        Ok(_) => panic!("a run with an unknown engine-run flag must not start"),
    }
}

/// The engine refuses an extension image, or holds another image under the run's reference
/// when the harness checks it (`CNPG_EXT_HARNESS_FAULT`, through the binary so that the fault
/// stays in its process): a product failure, exit 1, never exit 3 ("no usable engine", which a
/// test may skip). The engine is probed first, so that an exit 3 cannot hide here.
#[rstest::rstest]
#[case::archive_refused(
    "image-archive-truncated",
    "cannot load image `ghcr.io/cloudnative-pg/pgvector:0.8.6-18-trixie`"
)]
#[case::another_image_under_the_reference("image-replaced-after-load", "not the image the harness verified")]
#[test]
fn an_image_the_engine_does_not_hold_as_verified_fails_the_run(#[case] fault: &str, #[case] says: &str) {
    let engine = EngineOptions::from_env();
    let probe = engine_cli(&engine).args(["info", "--format", "{{.Host.Arch}}"]).output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        common::cannot_run(&format!("no usable container engine ({probe:?})"), Some("CNPG_EXT_HARNESS_REQUIRE_ENGINE"));
        return;
    }
    let parent = common::workdir_parent("container-image-fault");
    let child = common::bin()
        .args(["run", "--backend", "container", "--jobs", "1", "--no-progress", "--workdir"])
        .arg(parent.path())
        .arg(common::repo().join("scenarios/single-extension"))
        .env(cnpg_ext_harness::testing::ENV_FAULT, fault)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let o = child.wait_with_output().unwrap();
    let out = common::text(&o);
    assert_eq!(o.status.code(), Some(1), "{fault}: {out}");
    assert!(out.contains(says), "{fault}: {out}");
    // Nothing of the run is left: no image under its private names, no work directory.
    let private = format!("cnpg-ext-run/{pid}-");
    let images = listed(&engine, &["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(images.iter().all(|i| !i.contains(&private)), "{fault}: images left: {images:?}");
    let left: Vec<_> = std::fs::read_dir(parent.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "{fault}: work directory left: {left:?}");
}

/// Under `--pg-image` the report's `environment.operand` describes the image the instances
/// ran from, measured on them: an image made here from the harness's own operand plus one
/// control file the local install does not have; that extension must be listed, and the
/// flavour names the image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_describes_the_pg_image_that_ran() {
    let engine = EngineOptions::from_env();
    let probe = engine_cli(&engine).args(["info", "--format", "{{.Host.Arch}}"]).output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        common::cannot_run(&format!("no usable container engine ({probe:?})"), Some("CNPG_EXT_HARNESS_REQUIRE_ENGINE"));
        return;
    }
    let operands = |prefix: &str| -> Vec<String> {
        listed(&engine, &["images", "--format", "{{.Repository}}:{{.Tag}}"])
            .into_iter()
            .filter(|i| i.strip_prefix("localhost/cnpg-ext-harness/postgres:").is_some_and(|t| t.starts_with(prefix)))
            .collect()
    };
    // The operand image a run of the harness builds from the local install (made by a first run).
    let built =
        || operands("").into_iter().find(|i| i.rsplit(':').next().is_some_and(|t| t.starts_with(char::is_numeric)));
    if built().is_none() {
        let parent = common::workdir_parent("container-pgimage-first");
        let file = common::repo().join("scenarios/single-extension");
        app::run(options(vec![file], parent.path(), engine.clone())).await.expect("a first run builds the operand");
    }
    let base = built().expect("the harness's operand image");
    let control = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(control.path(), "comment = 'only in this image'\ndefault_version = '1.0'\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(control.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let pid = std::process::id();
    let (name, image) = (format!("cnpg-ext-test-pgimage-{pid}"), format!("localhost/cnpg-ext-test/pg-image:{pid}"));
    // Where the operand image keeps its control files, as the image says.
    let run_flags = split_flags(engine.run_flags.as_deref().unwrap_or("")).unwrap();
    let found = engine_cli(&engine)
        .args(["run", "--rm"])
        .args(&run_flags)
        .args(["--entrypoint", "/usr/bin/find", &base, "/", "-name", "plpgsql.control", "-path", "*/extension/*"])
        .output()
        .unwrap();
    let found = String::from_utf8_lossy(&found.stdout).trim().to_string();
    let sharedir =
        found.strip_suffix("/plpgsql.control").unwrap_or_else(|| panic!("no plpgsql.control in {base}: {found:?}"));
    let target = format!("{name}:{sharedir}/cnpgexttestonly.control");
    let from_before = operands("from-");
    let run_flags_ref: Vec<&str> = run_flags.iter().map(String::as_str).collect();
    let mkdir = std::fs::canonicalize("/bin/mkdir").unwrap().display().to_string();
    let made = (|| -> Result<(), String> {
        for args in [
            // Without the data directory the harness baked into its own operand: a CNPG image
            // has none.
            [
                &["run", "--name", &name, "--user", "0"][..],
                &run_flags_ref,
                &[&base, "/usr/bin/find", "/var/lib/postgresql/data/pgdata", "-delete"],
            ]
            .concat(),
            vec!["cp", control.path().to_str().unwrap(), &target],
            // A CNPG image ships coreutils, which `--pg-image` relies on; the harness's own
            // operand has only find and cat (their libraries cover this host's mkdir).
            vec!["cp", &mkdir, &format!("{name}:/usr/bin/mkdir")],
            vec!["commit", "-q", "--change", "USER 26:26", &name, &image],
        ] {
            let o = engine_cli(&engine).args(&args).output().unwrap();
            if !o.status.success() {
                return Err(format!("{args:?}: {}", String::from_utf8_lossy(&o.stderr)));
            }
        }
        Ok(())
    })();
    let _ = engine_cli(&engine).args(["rm", "-f", &name]).output();
    if let Err(e) = made {
        let _ = engine_cli(&engine).args(["rmi", &image]).output();
        panic!("{e}");
    }
    let parent = common::workdir_parent("container-pgimage");
    let file = common::repo().join("scenarios/single-extension");
    let with_image = EngineOptions { pg_image: Some(image.clone()), ..engine.clone() };
    let result = app::run(options(vec![file], parent.path(), with_image)).await;
    // What this test made goes whatever the run said: the image, and the operand derived from it.
    let made: Vec<String> = operands("from-").into_iter().filter(|i| !from_before.contains(i)).collect();
    for i in made.iter().chain(std::iter::once(&image)) {
        let _ = engine_cli(&engine).args(["rmi", i]).output();
    }
    let out = result.unwrap_or_else(|e| panic!("the run with --pg-image {image} failed (exit {}): {e}", e.exit_code()));
    let r = &out.report;
    assert!(r.passed(), "{}", r.failures());
    let operand = r.environment.operand.as_ref().expect("environment.operand");
    assert_eq!(operand.flavor, format!("image {image} (--pg-image)"));
    assert!(operand.extensions.iter().any(|e| e == "cnpgexttestonly"), "{operand:?}");
    assert!(operand.extensions.iter().any(|e| e == "plpgsql"), "{operand:?}");
    assert!(r.environment.postgresql.starts_with("PostgreSQL 18."), "{:?}", r.environment);
}
