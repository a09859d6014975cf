//! Faults leave nothing behind: SIGKILL, SIGTERM and a panic mid-run on the local backend, an
//! interrupted container run, and the sweep of what dead runs left (never a live run's).

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use cnpg_ext_harness::testing::{read_record, EngineTarget, Owner, OwnerRecord, OWNER_FILE};
use common::{bin, processes_mentioning, text, workdir_parent};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Starts `run <scenario>` in `parent`; returns once a stderr line contains `marker`
/// (the harness prints `[scenario] step title` for every step), with the child.
fn start_until(args: &[&str], parent: &Path, marker: &str, env: &[(&str, &str)]) -> Child {
    try_start_until(args, parent, marker, env)
        .unwrap_or_else(|(_, seen)| panic!("the run never reached `{marker}`:\n{seen}"))
}

/// [`start_until`], or the run's exit code and what it printed when it ended (or 300 s went
/// by) without reaching `marker`.
fn try_start_until(
    args: &[&str],
    parent: &Path,
    marker: &str,
    env: &[(&str, &str)],
) -> Result<Child, (Option<i32>, String)> {
    let mut cmd = bin();
    cmd.args(["run", "--no-progress", "--workdir", parent.to_str().unwrap()])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) if line.contains(marker) => break,
            Ok(line) => seen.push(line),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
            Err(_) => {
                let _ = child.kill();
                let code = child.wait().ok().and_then(|s| s.code());
                return Err((code, seen.join("\n")));
            }
        }
    }
    // Keep draining stderr so that the harness never blocks on a full pipe.
    std::thread::spawn(move || while rx.recv().is_ok() {});
    Ok(child)
}

/// How long a cleanup may take here before it counts as not happening: generous, since a
/// loaded 2-core machine stretches every step. How fast it is is measured (printed here, and
/// in `benches/cleanup.rs`), not asserted.
const DEADLINE: Duration = Duration::from_secs(120);

/// Waits up to `limit` for `done`, polling; returns how long it took (also printed), or None.
fn within(limit: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    loop {
        if done() {
            eprintln!("condition met after {} ms", t0.elapsed().as_millis());
            return Some(t0.elapsed());
        }
        if t0.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// `/dev/shm/PostgreSQL.*` files the processes map, and System V segments they created.
fn shared_memory_of(pids: &[u32]) -> (Vec<std::path::PathBuf>, Vec<String>) {
    let mut files = Vec::new();
    for p in pids {
        for line in std::fs::read_to_string(format!("/proc/{p}/maps")).unwrap_or_default().lines() {
            if let Some(at) = line.find("/dev/shm/PostgreSQL.") {
                let f = std::path::PathBuf::from(line[at..].trim_end_matches(" (deleted)").trim());
                if !files.contains(&f) {
                    files.push(f);
                }
            }
        }
    }
    let table = std::fs::read_to_string("/proc/sysvipc/shm").unwrap_or_default();
    let ids = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            let cpid: u32 = c.get(4)?.parse().ok()?;
            pids.contains(&cpid).then(|| c.get(1).map(|s| s.to_string())).flatten()
        })
        .collect();
    (files, ids)
}

fn sysv_ids() -> Vec<String> {
    std::fs::read_to_string("/proc/sysvipc/shm")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect()
}

/// How many of the processes mentioning `needle` are postgres.
fn postgres_mentioning(needle: &str) -> usize {
    processes_mentioning(needle)
        .into_iter()
        .filter(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "postgres"))
        .count()
}

fn supervisors_of(pid: u32) -> Vec<u32> {
    processes_mentioning(&format!("__supervise {pid}:"))
}

/// A process that existed and is gone (its pid and start time name nobody now).
fn dead_owner() -> Owner {
    let mut c = std::process::Command::new("sleep").arg("0.2").spawn().unwrap();
    let o = Owner::of(c.id() as i32).unwrap();
    c.wait().unwrap();
    assert!(!o.alive());
    o
}

fn plant(parent: &Path, name: &str, record: Option<&OwnerRecord>) -> std::path::PathBuf {
    let d = parent.join(name);
    std::fs::create_dir_all(d.join("s/x")).unwrap();
    std::fs::write(d.join("s/x/file"), "data").unwrap();
    if let Some(r) = record {
        std::fs::write(d.join(OWNER_FILE), serde_json::to_vec(r).unwrap()).unwrap();
    }
    d
}

#[test]
fn sigkill_mid_rollout_leaves_nothing_and_the_next_run_sweeps_only_dead_owners() {
    let parent = workdir_parent("sigkill");
    let needle = parent.path().to_str().unwrap().to_string();
    let mut child =
        start_until(&["scenarios/add-extension"], parent.path(), "adding the extension rolls the cluster", &[]);
    let harness = child.id();
    assert!(!processes_mentioning(&needle).is_empty(), "no postgres running mid-rollout");
    // The run's own record names the harness and its supervisor.
    let dirs = entries(parent.path());
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let record = read_record(&parent.path().join(&dirs[0])).expect("owner record in the work directory");
    assert_eq!(record.owner.pid, harness as i32);
    let sup = record.supervisor.expect("a supervisor is recorded");
    assert!(sup.alive());

    // The shared memory of the postmasters: PostgreSQL removes it on shutdown, not when killed.
    let postmasters: Vec<u32> = processes_mentioning(&needle)
        .into_iter()
        .filter(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "postgres"))
        .collect();
    let (dsm, sysv) = shared_memory_of(&postmasters);
    assert!(!dsm.is_empty() && !sysv.is_empty(), "no shared memory found for postmasters {postmasters:?}");

    kill(Pid::from_raw(harness as i32), Signal::SIGKILL).unwrap();
    let _ = child.wait();
    let took = within(DEADLINE, || {
        processes_mentioning(&needle).is_empty()
            && entries(parent.path()).is_empty()
            && dsm.iter().all(|f| !f.exists())
            && sysv.iter().all(|id| !sysv_ids().contains(id))
    });
    assert!(
        took.is_some(),
        "{DEADLINE:?} after SIGKILL: processes {:?}, entries {:?}, shared memory files left {:?}, System V segments left {:?}",
        processes_mentioning(&needle),
        entries(parent.path()),
        dsm.iter().filter(|f| f.exists()).collect::<Vec<_>>(),
        sysv.iter().filter(|id| sysv_ids().contains(id)).collect::<Vec<_>>()
    );
    eprintln!("everything gone {} ms after SIGKILL", took.unwrap().as_millis());
    assert!(within(DEADLINE, || !sup.alive()).is_some(), "the supervisor did not exit");

    // A dead run's directory is swept; a live one's, and one without a record, are not.
    let dead = OwnerRecord { owner: dead_owner(), supervisor: Some(dead_owner()), engine: None, images: Vec::new() };
    let live = OwnerRecord { owner: Owner::me(), supervisor: None, engine: None, images: Vec::new() };
    let live_supervisor =
        OwnerRecord { owner: dead_owner(), supervisor: Some(Owner::me()), engine: None, images: Vec::new() };
    let stale = plant(parent.path(), "cnpg-ext-stale1", Some(&dead));
    let kept = plant(parent.path(), "cnpg-ext-live1", Some(&live));
    let cleaning = plant(parent.path(), "cnpg-ext-cleaning1", Some(&live_supervisor));
    let unknown = plant(parent.path(), "cnpg-ext-norecord", None);
    let other = plant(parent.path(), "something-else", Some(&dead));
    let o = bin()
        .args(["run", "scenarios/custom-path", "--no-progress", "--workdir", parent.path().to_str().unwrap()])
        .output()
        .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(!stale.exists(), "the dead run's directory was not swept");
    assert!(out.contains("cnpg-ext-stale1"), "the sweep is not reported: {out}");
    for d in [&kept, &cleaning, &unknown, &other] {
        assert!(d.join("s/x/file").exists(), "{} was touched", d.display());
    }
}

#[test]
fn sigterm_stops_every_postgres_and_removes_the_work_directory() {
    let parent = workdir_parent("sigterm");
    let needle = parent.path().to_str().unwrap().to_string();
    let mut child =
        start_until(&["scenarios/add-extension"], parent.path(), "adding the extension rolls the cluster", &[]);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(processes_mentioning(&needle).is_empty(), "postgres left running");
    assert!(entries(parent.path()).is_empty(), "work directory left behind: {:?}", entries(parent.path()));
}

#[test]
fn a_panic_mid_run_is_reported_and_leaves_nothing() {
    let parent = workdir_parent("panic");
    let needle = parent.path().to_str().unwrap().to_string();
    // The panic hits right after the second postmaster started, before its handle exists:
    // only the registration knows about that process.
    let o = bin()
        .args(["run", "scenarios/add-extension", "--no-progress", "--workdir", parent.path().to_str().unwrap()])
        .env(cnpg_ext_harness::testing::ENV_FAULT, "panic-after-postmasters=2")
        .output()
        .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("panicked") && out.contains("injected panic"), "{out}");
    let gone = within(DEADLINE, || processes_mentioning(&needle).is_empty() && entries(parent.path()).is_empty());
    assert!(
        gone.is_some(),
        "after a panic: processes {:?}, entries {:?}",
        processes_mentioning(&needle),
        entries(parent.path())
    );
}

// ---------------------------------------------------------------------------------------
// Container backend.

fn engine_target() -> Option<EngineTarget> {
    let opts = cnpg_ext_harness::EngineOptions::from_env();
    if !cnpg_ext_harness::testing::engine_available(&opts) {
        return None;
    }
    let on_path =
        |p: &str| std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).any(|d| d.join(p).is_file());
    let program =
        opts.engine.clone().unwrap_or_else(|| if on_path("podman") { "podman".into() } else { "docker".into() });
    let global = cnpg_ext_harness::testing::split_flags(opts.engine_flags.as_deref().unwrap_or("")).unwrap();
    Some(EngineTarget { program: program.into(), global, run_id: String::new() })
}

fn engine_list(t: &EngineTarget, args: &[&str]) -> Vec<String> {
    let o = std::process::Command::new(&t.program).args(&t.global).args(args).output().unwrap();
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).split_whitespace().map(str::to_string).collect()
}

/// The run's containers (by label) and volumes (by label, or by name: a volume an engine made
/// for a container by itself has no label).
fn run_objects(t: &EngineTarget, run_id: &str) -> (Vec<String>, Vec<String>) {
    let filter = format!("label=io.cnpg-ext-harness.run={run_id}");
    let mut volumes = listing(t, &["volume", "ls", "-q", "--filter", &filter]);
    let prefix = format!("{run_id}-");
    volumes.extend(listing(t, &["volume", "ls", "-q"]).into_iter().filter(|v| v.starts_with(&prefix)));
    volumes.sort();
    volumes.dedup();
    (listing(t, &["ps", "-aq", "--filter", &filter]), volumes)
}

/// [`engine_list`] of a listing taken while the engine removes things: podman 4.3 fails a
/// whole `volume ls --filter` when a volume goes meanwhile, so a failed listing is taken
/// again (up to 10 times) before it counts as a failure.
fn listing(t: &EngineTarget, args: &[&str]) -> Vec<String> {
    for _ in 0..9 {
        let o = std::process::Command::new(&t.program).args(&t.global).args(args).output().unwrap();
        if o.status.success() {
            return String::from_utf8_lossy(&o.stdout).split_whitespace().map(str::to_string).collect();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    engine_list(t, args)
}

/// Runs the rollout scenario on the container backend, interrupts it with `signal` once an
/// instance container runs, and checks that its containers, volumes and work directory go.
fn interrupt_container_run(signal: Signal, limit: Duration) {
    let Some(t) = engine_target() else {
        common::cannot_run(
            "no usable container engine for the container interruption test",
            Some("CNPG_EXT_HARNESS_REQUIRE_ENGINE"),
        );
        return;
    };
    // In memory like a default run: removing instance data from a disk with online discard
    // (this host's /tmp) alone can take longer than the 5 s.
    let name = format!("container-{}", signal.as_str().to_lowercase());
    let parent = match tempfile::Builder::new().prefix(&format!("cnpg-ext-test-{name}-")).tempdir_in("/dev/shm") {
        Ok(d) => {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            d
        }
        Err(_) => workdir_parent(&name),
    };
    // The scenario under an image reference of its own: the engine must never hold it (a run
    // loads its images under names of its own), while the run's own name is there mid-run.
    let reference =
        format!("localhost/cnpg-ext-faults/pgvector-{}-{}:1", signal.as_str().to_lowercase(), std::process::id());
    let scenario =
        own_image_copy(parent.path(), "add-extension", "ghcr.io/cloudnative-pg/pgvector:0.8.6-18-trixie", &reference);
    let scenario_named = || !engine_list(&t, &["images", "-q", &reference]).is_empty();
    let started = try_start_until(
        &[scenario.to_str().unwrap(), "--backend", "container", "--jobs", "1"],
        parent.path(),
        "adding the extension rolls the cluster",
        &[],
    );
    let mut child = match started {
        Ok(child) => child,
        // The engine is there but cannot run the backend here (the harness says why, exit 3):
        // the same rule as every container test.
        Err((Some(3), seen)) => {
            common::cannot_run(
                &format!("the container backend is unusable here (exit 3):\n{seen}"),
                Some("CNPG_EXT_HARNESS_REQUIRE_ENGINE"),
            );
            return;
        }
        Err((code, seen)) => panic!("the run never reached the rollout (exit {code:?}):\n{seen}"),
    };
    let dirs: Vec<String> = entries(parent.path()).into_iter().filter(|d| d.starts_with("cnpg-ext-")).collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let run_id = dirs[0].clone();
    let private = cnpg_ext_harness::testing::engine_reference_of(child.id(), &run_id, &reference);
    let image_present = || !engine_list(&t, &["images", "-q", &private]).is_empty();
    assert!(image_present(), "{private} (the run's name for {reference}) was not loaded mid-run");
    assert!(!scenario_named(), "the engine holds the scenario's own name {reference}");
    let (containers, volumes) = run_objects(&t, &run_id);
    assert!(!containers.is_empty() && !volumes.is_empty(), "nothing of {run_id} in the engine mid-run");
    let harness = child.id();
    kill(Pid::from_raw(harness as i32), signal).unwrap();
    let status = child.wait().unwrap();
    if signal == Signal::SIGKILL {
        assert_eq!(status.code(), None);
    } else {
        assert_eq!(status.code(), Some(130));
    }
    // A container monitor (`conmon -n <run id>-…`) and what it watches must go too: a kill
    // between an engine's create and start leaves a `runc init` waiting for ever.
    let monitors = || processes_mentioning(&format!("-n {run_id}-"));
    let work_dirs = || entries(parent.path()).into_iter().filter(|d| d.starts_with("cnpg-ext-")).collect::<Vec<_>>();
    let took = within(limit, || {
        let (c, v) = run_objects(&t, &run_id);
        c.is_empty() && v.is_empty() && work_dirs().is_empty() && !image_present() && monitors().is_empty()
    });
    assert!(
        took.is_some(),
        "{signal}: left {:?}, {:?}, image present: {}, monitors {:?}",
        run_objects(&t, &run_id),
        work_dirs(),
        image_present(),
        monitors()
    );
    eprintln!("{signal}: containers, volumes, image and work directory gone after {} ms", took.unwrap().as_millis());
    assert!(within(DEADLINE, || supervisors_of(harness).is_empty()).is_some(), "the supervisor did not exit");
}

/// A copy of `scenarios/<id>` in `parent/own` whose image is named `to` instead of
/// `from` (fixture paths made absolute).
fn own_image_copy(parent: &Path, id: &str, from: &str, to: &str) -> std::path::PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios").join(id).canonicalize().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures").canonicalize().unwrap();
    // Short: the instances' socket paths (work dir + scenario id) must stay under 108 bytes.
    let dst = parent.join("own");
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(&src).unwrap().flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap();
        let text = text.replace(from, to).replace("../../fixtures", fixtures.to_str().unwrap());
        std::fs::write(dst.join(e.file_name()), text).unwrap();
    }
    dst
}

#[test]
fn container_run_interrupted_by_sigint_removes_its_containers_and_volumes() {
    interrupt_container_run(Signal::SIGINT, DEADLINE);
}

#[test]
fn container_run_killed_by_sigkill_removes_its_containers_and_volumes() {
    interrupt_container_run(Signal::SIGKILL, DEADLINE);
}

#[test]
fn the_sweep_removes_labelled_containers_and_volumes_of_dead_owners_only() {
    let _one_sweep = ENGINE_SWEEP.lock().unwrap_or_else(|e| e.into_inner());
    let Some(t) = engine_target() else {
        common::cannot_run(
            "no usable container engine for the owner-label sweep test",
            Some("CNPG_EXT_HARNESS_REQUIRE_ENGINE"),
        );
        return;
    };
    let key = cnpg_ext_harness::testing::LABEL_OWNER;
    let tag = format!("cnpg-ext-test-sweep-{}", std::process::id());
    let (dead, live) = (dead_owner().token(), Owner::me().token());
    for (name, owner) in [("dead", &dead), ("live", &live)] {
        let label = format!("{key}={owner}");
        let n = format!("{tag}-{name}");
        engine_list(&t, &["volume", "create", "--label", &label, &n]);
    }
    // And one an engine made by itself for a container of a run killed meanwhile: no label.
    engine_list(&t, &["volume", "create", &format!("{tag}-unlabelled")]);
    let before = engine_list(&t, &["volume", "ls", "-q", "--filter", &format!("label={key}")]);
    assert!(before.contains(&format!("{tag}-dead")) && before.contains(&format!("{tag}-live")), "{before:?}");
    let swept = cnpg_ext_harness::testing::sweep_stale_engine(&t.program, &t.global);
    let all_after = engine_list(&t, &["volume", "ls", "-q"]);
    let _ = std::process::Command::new(&t.program)
        .args(&t.global)
        .args(["volume", "rm", "-f", &format!("{tag}-unlabelled")])
        .output();
    assert!(!all_after.contains(&format!("{tag}-unlabelled")), "the unlabelled harness volume is still there");
    let after = engine_list(&t, &["volume", "ls", "-q", "--filter", &format!("label={key}")]);
    let _ = std::process::Command::new(&t.program)
        .args(&t.global)
        .args(["volume", "rm", "-f", &format!("{tag}-live")])
        .output();
    assert!(!after.contains(&format!("{tag}-dead")), "the dead owner's volume is still there");
    assert!(after.contains(&format!("{tag}-live")), "the live owner's volume was removed");
    assert!(swept.volumes >= 1, "{swept:?}");
}

/// A dead run's work directory whose record names an image it loaded: the sweep removes that
/// name, and only that name.
#[test]
fn the_sweep_undoes_the_images_of_a_dead_run() {
    let Some(mut t) = engine_target() else {
        common::cannot_run(
            "no usable container engine for the image sweep test",
            Some("CNPG_EXT_HARNESS_REQUIRE_ENGINE"),
        );
        return;
    };
    // A one-file image under a name of the test's, also tagged as the dead run's.
    let pid = std::process::id();
    let parent = workdir_parent("image-sweep");
    let base = tiny_image(&t, parent.path(), &format!("localhost/cnpg-ext-faults/base-{pid}:1"));
    let ours = format!("localhost/cnpg-ext-faults/swept-{pid}:1");
    engine_list(&t, &["tag", &base, &ours]);
    let run_id = format!("cnpg-ext-imgsweep{pid}");
    t.run_id = run_id.clone();
    let image = |reference: &str| cnpg_ext_harness::testing::EngineImage {
        run_id: run_id.clone(),
        reference: reference.into(),
        previous: None,
        loaded: None,
    };
    let record = OwnerRecord {
        owner: dead_owner(),
        supervisor: Some(dead_owner()),
        engine: Some(t.clone()),
        images: vec![image(&ours)],
    };
    let dir = plant(parent.path(), &run_id, Some(&record));
    cnpg_ext_harness::testing::sweep_stale(&[parent.path().to_path_buf()]);
    let left = engine_list(&t, &["images", "-q", &ours]);
    let base_left = engine_list(&t, &["images", "-q", &base]);
    let _ = std::process::Command::new(&t.program).args(&t.global).args(["rmi", "-f", &ours, &base]).output();
    assert!(!dir.exists(), "the dead run's directory is still there");
    assert!(left.is_empty(), "{ours}, loaded by the dead run, is still in the engine");
    assert!(!base_left.is_empty(), "the image itself (still tagged {base}) was removed");
}

/// The tests that call the engine sweep themselves, one at a time: each counts what its own
/// sweep removed.
static ENGINE_SWEEP: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A container monitor of the harness (`conmon -c <id> -n cnpg-ext-…`) whose container the
/// engine no longer knows is killed by the next run's engine sweep, with what it watches; one
/// whose container the engine knows is left alone. Stand-in monitors: a script named `conmon`.
#[test]
fn the_sweep_kills_monitors_left_without_their_container() {
    let _one_sweep = ENGINE_SWEEP.lock().unwrap_or_else(|e| e.into_inner());
    let Some(t) = engine_target() else {
        common::cannot_run(
            "no usable container engine for the monitor sweep test",
            Some("CNPG_EXT_HARNESS_REQUIRE_ENGINE"),
        );
        return;
    };
    let dir = workdir_parent("monitor-sweep");
    let script = dir.path().join("conmon");
    std::fs::write(&script, "#!/bin/sh\nsleep 600 &\nwait\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A container the engine knows (created, never started).
    let pid = std::process::id();
    let known_name = format!("cnpg-ext-monitor-known-{pid}");
    let image = tiny_image(&t, dir.path(), &format!("localhost/cnpg-ext-faults/monitor-{pid}:1"));
    let created =
        engine_list(&t, &["create", "--name", &known_name, "--network", "none", "--entrypoint", "/x", &image]);
    let known_id = created.last().cloned().unwrap();
    let root = engine_list(&t, &["info", "--format", "{{.Store.GraphRoot}}"]).join(" ");
    let spawn = |id: &str, name: &str, store: &str| {
        std::process::Command::new(&script)
            .args(["-c", id, "-n", name, "--exit-command-arg", "--root", "--exit-command-arg", store])
            .stdin(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut orphan = spawn(&"0".repeat(64), &format!("cnpg-ext-monitor-orphan-{pid}-x"), &root);
    let mut kept = spawn(&known_id, &known_name, &root);
    // Another store's monitor: its container is not in this engine's listing, and it stays.
    let mut elsewhere = spawn(&"1".repeat(64), &format!("cnpg-ext-monitor-other-{pid}-x"), "/elsewhere/storage");
    // Until the shell has started its `sleep` (the monitor's "container").
    assert!(within(DEADLINE, || common::processes_mentioning("sleep 600").len() >= 3).is_some());
    cnpg_ext_harness::testing::sweep_stale_engine(&t.program, &t.global);
    let orphan_gone = within(DEADLINE, || orphan.try_wait().unwrap().is_some()).is_some();
    let kept_alive = kept.try_wait().unwrap().is_none();
    let elsewhere_alive = elsewhere.try_wait().unwrap().is_none();
    for c in [&mut kept, &mut elsewhere] {
        let _ = c.kill();
        let _ = c.wait();
    }
    let _ = orphan.kill();
    let _ = orphan.wait();
    let _ = std::process::Command::new(&t.program).args(&t.global).args(["rm", "-f", &known_name]).output();
    let _ = std::process::Command::new(&t.program).args(&t.global).args(["rmi", "-f", &image]).output();
    for p in common::processes_mentioning("sleep 600") {
        let _ = kill(Pid::from_raw(p as i32), Signal::SIGKILL);
    }
    assert!(orphan_gone, "the monitor of a container the engine does not know still runs");
    assert!(kept_alive, "the monitor of a container the engine knows was killed");
    assert!(elsewhere_alive, "the monitor of another store's container was killed");
}

/// A one-file image named `name`, imported from a tar made in `dir`.
fn tiny_image(t: &EngineTarget, dir: &Path, name: &str) -> String {
    let rootfs = dir.join("rootfs.tar");
    std::fs::write(dir.join("file"), "x").unwrap();
    let tarred = std::process::Command::new("tar")
        .args(["-C", dir.to_str().unwrap(), "-cf", rootfs.to_str().unwrap(), "file"])
        .status()
        .unwrap();
    assert!(tarred.success());
    engine_list(t, &["import", "-q", rootfs.to_str().unwrap(), name]);
    name.to_string()
}

// ---------------------------------------------------------------------------------------
// The podman API service of a container run.

/// Set in the child process of [`the_podman_api_service_dies_with_its_harness_on_its_own`]:
/// the directory of the service's socket.
const SERVICE_CHILD: &str = "CNPG_EXT_TEST_SERVICE_CHILD";

/// This host's engine settings when the engine is podman (docker has no service to start).
fn podman_options(what: &str) -> Option<cnpg_ext_harness::EngineOptions> {
    let Some(t) = engine_target() else {
        common::cannot_run(&format!("no usable container engine for {what}"), Some("CNPG_EXT_HARNESS_REQUIRE_ENGINE"));
        return None;
    };
    if !t.program.file_name().is_some_and(|n| n.to_string_lossy().contains("podman")) {
        common::cannot_run(
            &format!("{what}: the engine is not podman (docker has no API service to start)"),
            Some("CNPG_EXT_HARNESS_REQUIRE_ENGINE"),
        );
        return None;
    }
    Some(cnpg_ext_harness::EngineOptions::from_env())
}

/// Whether `o` still runs `podman system service` on `socket`.
fn serving(o: Owner, socket: &Path) -> bool {
    o.alive()
        && std::fs::read(format!("/proc/{}/cmdline", o.pid)).is_ok_and(|c| {
            let cmd = String::from_utf8_lossy(&c).replace('\0', " ");
            cmd.contains("system service") && cmd.contains(&socket.display().to_string())
        })
}

/// `GET /_ping` on `socket` answers `200 OK`.
fn pings(socket: &Path) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(socket) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    if s.write_all(b"GET /_ping HTTP/1.0\r\nHost: podman\r\n\r\n").is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.") && answer.lines().next().is_some_and(|l| l.contains(" 200")) && answer.ends_with("OK")
}

/// The service is started by the harness's own code path in a child process whose cleanup
/// supervisor (started when the lease registers the service's directory) is then killed;
/// SIGKILL of that child must take the service with it: only its parent-death signal can.
#[test]
fn the_podman_api_service_dies_with_its_harness_on_its_own() {
    if std::env::var(SERVICE_CHILD).is_ok() {
        let opts = cnpg_ext_harness::EngineOptions::from_env();
        let svc = cnpg_ext_harness::testing::start_api_service(&opts)
            .expect("start the API service")
            .expect("podman has an API service");
        if let Some(sup) = cnpg_ext_harness::testing::supervisor() {
            kill(Pid::from_raw(sup.pid), Signal::SIGKILL).unwrap();
            // Gone (or a zombie, whose command line is empty) before the parent looks.
            let cmdline = format!("/proc/{}/cmdline", sup.pid);
            let deadline = Instant::now() + Duration::from_secs(5);
            while std::fs::read(&cmdline).is_ok_and(|c| !c.is_empty()) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        println!("service-pid {} {}", svc.pid().expect("running"), svc.socket().display());
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    let Some(_) = podman_options("the API service lifetime test") else { return };
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "the_podman_api_service_dies_with_its_harness_on_its_own", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(SERVICE_CHILD, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    let (pid, socket) = loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            // libtest's `test <name> ... ` may precede it on the same line.
            Ok(line) => match line.split_once("service-pid ").and_then(|(_, rest)| rest.trim().split_once(' ')) {
                Some((p, sock)) => break (p.parse::<i32>().unwrap(), std::path::PathBuf::from(sock)),
                None => seen.push(line),
            },
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the child never started the service:\n{}", seen.join("\n"));
            }
        }
    };
    std::thread::spawn(move || while rx.recv().is_ok() {});
    let service = Owner::of(pid).expect("the service runs");
    assert!(serving(service, &socket) && pings(&socket), "the service does not answer on {}", socket.display());
    assert!(supervisors_of(child.id()).is_empty(), "the child has a supervisor: the test would prove nothing");
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
    child.wait().unwrap();
    let took = within(DEADLINE, || !service.alive());
    if took.is_none() {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        panic!("`podman system service` ({pid}) still runs {DEADLINE:?} after its harness was SIGKILLed");
    }
    eprintln!("the API service was gone {} ms after its harness was SIGKILLed", took.unwrap().as_millis());
    // Its directory is left for a later run's sweep (harness and supervisor are dead): the
    // test removes it itself, unless a run of another test has already swept it.
    match std::fs::remove_dir_all(socket.parent().unwrap()) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => panic!("{}: {e}", socket.display()),
        _ => {}
    }
}

/// A run asks for the service from a scoped thread that ends at once, itself on a tokio
/// blocking-pool thread (which ends after 10 s idle, mid-run). The parent-death signal follows
/// the thread that forks, so the service must outlive every thread of that call path: here
/// the same path, on a runtime that is then shut down, so that all its threads are gone.
#[test]
fn the_podman_api_service_outlives_the_threads_that_started_it() {
    let Some(opts) = podman_options("the API service thread test") else { return };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("svc-test-rt")
        .enable_all()
        .build()
        .unwrap();
    let svc = rt
        .block_on(rt.spawn_blocking(move || {
            std::thread::scope(|s| s.spawn(|| cnpg_ext_harness::testing::start_api_service(&opts)).join().unwrap())
        }))
        .unwrap()
        .expect("start the API service")
        .expect("podman has an API service");
    rt.shutdown_timeout(Duration::from_secs(10));
    let threads = || -> usize {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .flatten()
            .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with("svc-test-rt")))
            .count()
    };
    assert!(within(DEADLINE, || threads() == 0).is_some(), "the runtime's threads did not end");
    let service = Owner::of(svc.pid().unwrap() as i32).expect("the service runs");
    let socket = svc.socket().to_path_buf();
    // The signal would come as the forking thread ends; give it ample time to arrive.
    std::thread::sleep(Duration::from_secs(2));
    let up = serving(service, &socket) && pings(&socket);
    svc.stop();
    // The service pointed this process's DOCKER_HOST at itself; it is gone now.
    std::env::remove_var("DOCKER_HOST");
    assert!(up, "the API service died with a thread that started it");
    assert!(within(DEADLINE, || !service.alive()).is_some(), "stop() left the service running");
}

// ---------------------------------------------------------------------------------------
// Matrix cell timeout.

#[test]
fn a_hung_matrix_cell_times_out_and_leaves_nothing() {
    let scratch = tempfile::tempdir().unwrap();
    // A pg_config that never answers: the cell's harness hangs while locating PostgreSQL.
    let marker = format!("cnpg-ext-test-hang-{}", std::process::id());
    let bindir = scratch.path().join("pg/bin");
    std::fs::create_dir_all(&bindir).unwrap();
    let pg_config = bindir.join("pg_config");
    std::fs::write(&pg_config, format!("#!/bin/bash\nexec -a {marker} sleep 600\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pg_config, std::fs::Permissions::from_mode(0o755)).unwrap();
    let matrix = scratch.path().join("hang.yaml");
    std::fs::write(
        &matrix,
        format!(
            "cell_timeout: 1h\naxes:\n  backend: [local]\n  postgres: [{}]\n  scenarios: [{}]\n",
            pg_config.display(),
            common::repo().join("scenarios/custom-path").display()
        ),
    )
    .unwrap();
    let reports = scratch.path().join("reports");
    let cells_before: Vec<String> = std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("cnpg-ext-cell-"))
                .collect()
        })
        .unwrap_or_default();
    let t0 = Instant::now();
    // --cell-timeout overrides the file's hour.
    let o = bin()
        .args([
            "matrix",
            matrix.to_str().unwrap(),
            "--no-progress",
            "--cell-timeout",
            "2s",
            "--report-dir",
            reports.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let out = text(&o);
    eprintln!("matrix with a hung cell ended after {} ms", t0.elapsed().as_millis());
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("TIMEOUT"), "{out}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(reports.join("report.json")).unwrap()).unwrap();
    let cell = &report["cells"][0];
    assert_eq!(cell["status"], "timeout", "{report:#}");
    assert!(cell["reason"].as_str().unwrap().contains("2 s"), "{report:#}");
    assert_eq!(report["totals"]["timeout"], 1);
    let junit = std::fs::read_to_string(reports.join("junit.xml")).unwrap();
    assert!(junit.contains("type=\"timeout\""), "{junit}");
    let html = std::fs::read_to_string(reports.join("index.html")).unwrap();
    assert!(html.contains("s-timeout") && html.contains("1 timeout"), "index.html does not show the timeout");
    // Nothing of the cell is left: not the hung helper, not the cell's work directory.
    assert!(within(DEADLINE, || processes_mentioning(&marker).is_empty()).is_some(), "the hung pg_config still runs");
    let cells_after: Vec<String> = std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("cnpg-ext-cell-"))
                .collect()
        })
        .unwrap_or_default();
    let new: Vec<&String> = cells_after.iter().filter(|n| !cells_before.contains(n)).collect();
    // Another test's matrix may run at the same time: only directories of this matrix count.
    let ours: Vec<&&String> =
        new.iter().filter(|n| read_record(&Path::new("/dev/shm").join(n)).is_some_and(|r| !r.anyone_alive())).collect();
    assert!(ours.is_empty(), "cell work directories left: {ours:?}");
}

#[test]
fn cell_timeout_values_are_checked() {
    use cnpg_ext_harness::testing::parse_duration;
    assert_eq!(parse_duration("90").unwrap(), Some(Duration::from_secs(90)));
    assert_eq!(parse_duration("20m").unwrap(), Some(Duration::from_secs(1200)));
    assert_eq!(parse_duration("1h").unwrap(), Some(Duration::from_secs(3600)));
    assert_eq!(parse_duration("0").unwrap(), None);
    assert!(parse_duration("5d").unwrap_err().contains("unknown unit"));
    assert!(parse_duration("soon").is_err());
    let scratch = tempfile::tempdir().unwrap();
    let f = scratch.path().join("m.yaml");
    std::fs::write(
        &f,
        format!(
            "cell_timeout: forever\naxes:\n  backend: [local]\n  scenarios: [{}]\n",
            common::repo().join("scenarios/custom-path").display()
        ),
    )
    .unwrap();
    let o = bin().args(["matrix", f.to_str().unwrap(), "--no-progress"]).output().unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(out.contains("m.yaml") && out.contains("cell_timeout") && out.contains("forever"), "{out}");
    let o = bin().args(["matrix", f.to_str().unwrap(), "--cell-timeout", "soon"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--cell-timeout"), "{}", text(&o));
}

#[test]
fn sigkill_of_a_matrix_stops_its_cells_and_leaves_nothing() {
    let scratch = tempfile::tempdir().unwrap();
    let matrix = scratch.path().join("m.yaml");
    std::fs::write(
        &matrix,
        format!(
            "axes:\n  backend: [local]\n  scenarios: [{}]\n",
            common::repo().join("scenarios/add-extension").display()
        ),
    )
    .unwrap();
    let reports = scratch.path().join("reports");
    let mut child = bin()
        .args(["matrix", matrix.to_str().unwrap(), "--no-progress", "--report-dir", reports.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let me = child.id() as i32;
    // The cell's work directory is the one whose owner record names this matrix.
    let mut cell_dir = None;
    let found = within(Duration::from_secs(240), || {
        if cell_dir.is_none() {
            cell_dir = std::fs::read_dir("/dev/shm")
                .ok()
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .find(|p| read_record(p).is_some_and(|r| r.owner.pid == me));
        }
        cell_dir.as_ref().is_some_and(|d| postgres_mentioning(d.to_str().unwrap()) >= 2)
    });
    assert!(found.is_some(), "the matrix cell never started postgres (cell dir {cell_dir:?})");
    let cell_dir = cell_dir.unwrap();
    let needle = cell_dir.to_str().unwrap().to_string();
    // The cell's harness runs with `--workdir <cell dir>`: it is among them.
    assert!(processes_mentioning(&needle).len() > postgres_mentioning(&needle), "no cell harness running");

    kill(Pid::from_raw(me), Signal::SIGKILL).unwrap();
    let _ = child.wait();
    let took = within(DEADLINE, || processes_mentioning(&needle).is_empty() && !cell_dir.exists());
    assert!(
        took.is_some(),
        "{DEADLINE:?} after SIGKILL of the matrix: processes {:?}, cell dir exists: {}",
        processes_mentioning(&needle),
        cell_dir.exists()
    );
    eprintln!("matrix: everything gone {} ms after SIGKILL", took.unwrap().as_millis());
}
