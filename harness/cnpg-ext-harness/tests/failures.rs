//! The harness fails loudly and precisely: a wrong expectation fails exactly that scenario with
//! expected vs actual; bad input exits 2; an unusable PostgreSQL exits 3; nothing is left behind.

mod common;

use common::*;

#[test]
fn a_broken_expectation_fails_exactly_that_scenario() {
    let (root, dir) = scenario_copy("single-extension");
    let file = dir.join("scenario.yaml");
    let yaml = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, yaml.replace("5.196152422706632", "5.2")).unwrap();
    std::fs::rename(&dir, root.path().join("scenarios/broken-copy")).unwrap();
    let (good_root, _) = scenario_copy("custom-path");
    let reports = tempfile::tempdir().unwrap();
    let parent = workdir_parent("broken");
    let o = run(&[
        "run",
        root.path().join("scenarios/broken-copy").to_str().unwrap(),
        good_root.path().join("scenarios/custom-path").to_str().unwrap(),
        "--no-progress",
        "--report-dir",
        reports.path().to_str().unwrap(),
        "--workdir",
        parent.path().to_str().unwrap(),
    ]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("FAIL broken-copy"), "{out}");
    assert!(out.contains("PASS custom-path"), "{out}");
    assert!(out.contains("scenario.yaml:16 step 5 (L2 distance)"), "{out}");
    assert!(out.contains("expected: rows on cluster-pgvector-1: [5.2]"), "{out}");
    assert!(out.contains("actual:   rows on cluster-pgvector-1: [5.196152422706632]"), "{out}");
    assert!(out.contains("1 passed, 1 failed"), "{out}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(reports.path().join("report.json")).unwrap()).unwrap();
    let failed: Vec<_> = report["scenarios"].as_array().unwrap().iter().filter(|s| s["status"] == "failed").collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["id"], "broken-copy");
    let junit = std::fs::read_to_string(reports.path().join("junit.xml")).unwrap();
    assert!(junit.contains("failures=\"1\""), "{junit}");
    assert!(junit.contains("5.196152422706632"), "{junit}");
    // Nothing left: no postgres of this run, no work directory.
    assert!(processes_mentioning(parent.path().to_str().unwrap()).is_empty());
    assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0, "work directory left behind");
}

#[test]
fn an_unknown_step_is_invalid_input() {
    let (_root, dir) = scenario_copy("custom-path");
    let file = dir.join("scenario.yaml");
    let yaml = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, yaml.replace("  - verify: {}", "  - verfiy: {}")).unwrap();
    let o = run(&["run", dir.to_str().unwrap(), "--no-progress"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(out.contains("scenario.yaml:10: verfiy: unknown variant `verfiy`"), "{out}");
}

#[test]
fn a_missing_scenario_path_is_invalid_input() {
    let o = run(&["run", "no/such/dir", "--no-progress"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("no/such/dir"));
}

#[test]
fn postgres_older_than_18_is_an_unusable_environment() {
    // A pg_config that reports PostgreSQL 15: the harness must refuse it, not fall back.
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("pg_config");
    std::fs::write(&fake, "#!/bin/sh\nfor a in \"$@\"; do case \"$a\" in --version) echo 'PostgreSQL 15.18';; *) echo /nonexistent;; esac; done\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = bin().args(["run", "scenarios/custom-path", "--no-progress"]).env("PG_CONFIG", &fake).output().unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(3), "{out}");
    assert!(out.contains("15.18"), "{out}");
    assert!(out.contains("PG_CONFIG"), "{out}");
}

#[test]
fn ctrl_c_stops_every_postgres_and_removes_the_work_directory() {
    let parent = workdir_parent("sigint");
    let mut child = bin()
        .args(["run", "scenarios/add-extension", "--no-progress", "--workdir", parent.path().to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let needle = parent.path().to_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while processes_mentioning(&needle).iter().filter(|p| **p != child.id()).count() < 2 {
        assert!(std::time::Instant::now() < deadline, "no postgres started");
        assert!(child.try_wait().unwrap().is_none(), "the harness ended before postgres started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(processes_mentioning(&needle).is_empty(), "postgres left running");
    assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0, "work directory left behind");
}

#[test]
fn keep_leaves_the_work_directory_and_stops_processes() {
    let parent = workdir_parent("keep");
    let o =
        run(&["run", "scenarios/custom-path", "--no-progress", "--keep", "--workdir", parent.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("kept: "));
    let kept: Vec<_> = std::fs::read_dir(parent.path()).unwrap().flatten().collect();
    assert_eq!(kept.len(), 1);
    assert!(kept[0].path().join("s/custom-path/1/run/postgres.log").exists());
    assert!(processes_mentioning(parent.path().to_str().unwrap()).is_empty());
    cnpg_ext_harness::testing::remove_tree(&kept[0].path()).unwrap();
}

#[test]
fn a_module_the_image_names_but_lacks_is_not_taken_from_the_base_install() {
    // pgvector's control and SQL files without vector.so: the base install ships vector.so,
    // which must not stand in for the missing module.
    let pg = cnpg_ext_harness::run::locate_postgres(None).unwrap();
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    cnpg_ext_images::fixture::build_fixture(&repo().join("fixtures/pgvector"), &pg.fixture_target(), &tree).unwrap();
    std::fs::remove_file(tree.join("lib/vector.so")).unwrap();
    let dir = work.path().join("no-module");
    std::fs::create_dir(&dir).unwrap();
    let reference = "example.com/broken-pgvector:1";
    cnpg_ext_images::build_layout(&tree, &cnpg_ext_images::BuildOptions::new(reference), &dir.join("image")).unwrap();
    std::fs::write(
        dir.join("cluster.yaml"),
        format!("apiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata: {{name: c}}\nspec:\n  instances: 1\n  postgresql:\n    extensions:\n      - name: pgvector\n        image: {{reference: \"{reference}\"}}\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("scenario.yaml"),
        format!("images:\n  - reference: \"{reference}\"\n    oci: image\nsteps:\n  - apply: {{file: cluster.yaml}}\n  - sql: {{query: CREATE EXTENSION vector, error: 'could not access file \"vector\": No such file or directory'}}\n"),
    )
    .unwrap();
    let o = run(&["run", dir.to_str().unwrap(), "--no-progress"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

/// A broken copy of each lifecycle scenario (a wrong expected message, a wrong version) fails
/// that step with expected vs actual, naming the file and line.
#[rstest::rstest]
#[case::database_message(
    "declarative-database",
    "scenario.yaml",
    "nor update path for version \"9.9.9\"",
    "nor update path for version \"9.9.8\"",
    &["step 7", "expected: Database vectors status: applied: false, message containing", "9.9.8", "actual:   Database vectors status: applied: false, message:", "9.9.9"]
)]
#[case::database_version(
    "declarative-database",
    "database-bad-version.yaml",
    "version: \"9.9.9\"",
    "version: \"0.8.6\"",
    &["step 7", "expected: Database vectors status: applied: false", "actual:   Database vectors status: applied: true"]
)]
#[case::remove_error(
    "remove-extension",
    "scenario.yaml",
    "could not access file \"vector\"",
    "could not open file \"vector\"",
    &["step 6", "could not open file", "actual:   error on cluster-remove-1: ERROR: could not access file \"vector\""]
)]
#[case::upgrade_version(
    "upgrade-image",
    "scenario.yaml",
    "rows: [[\"1.1\"]]",
    "rows: [[\"1.2\"]]",
    &["step 8", "expected: rows on cluster-upgrade-1: [1.2]", "actual:   rows on cluster-upgrade-1: [1.1]"]
)]
#[case::preload_message(
    "preload-library",
    "scenario.yaml",
    "error: could not access file \"preloadprobe\"",
    "error: could not load library \"preloadprobe\"",
    &["step 4", "could not load library", "could not access file \"preloadprobe\""]
)]
fn a_broken_lifecycle_scenario_fails_with_expected_vs_actual(
    #[case] id: &str,
    #[case] file: &str,
    #[case] from: &str,
    #[case] to: &str,
    #[case] wanted: &[&str],
) {
    let (_root, dir) = scenario_copy(id);
    let path = dir.join(file);
    let original = std::fs::read_to_string(&path).unwrap();
    assert!(original.contains(from), "{file} lacks {from:?}");
    std::fs::write(&path, original.replace(from, to)).unwrap();
    let parent = workdir_parent("broken-lifecycle");
    let o = run(&["run", dir.to_str().unwrap(), "--no-progress", "--workdir", parent.path().to_str().unwrap()]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains(&format!("FAIL {id}")), "{out}");
    for w in wanted {
        assert!(out.contains(w), "missing {w:?} in:\n{out}");
    }
    assert!(processes_mentioning(parent.path().to_str().unwrap()).is_empty());
    assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0, "work directory left behind");
}

/// A scenario that uses what the modelled release ignores (`bin_path` before 1.29) is one
/// clear finding, never a pass and never a confusing failure; on 1.29+ the same field loads.
#[test]
fn fields_a_release_ignores_are_a_clear_finding() {
    let (root, dir) = scenario_copy("single-extension");
    let cluster = dir.join("cluster.yaml");
    let yaml = std::fs::read_to_string(&cluster).unwrap();
    let patched = yaml.replace(
        "          reference: ghcr.io/cloudnative-pg/pgvector:0.8.6-18-trixie\n",
        "          reference: ghcr.io/cloudnative-pg/pgvector:0.8.6-18-trixie\n        bin_path: [bin]\n",
    );
    assert_ne!(patched, yaml, "the test must add bin_path to {}", cluster.display());
    std::fs::write(&cluster, patched).unwrap();
    let reports = tempfile::tempdir().unwrap();
    let parent = workdir_parent("unsupported");
    let o = run(&[
        "run",
        dir.to_str().unwrap(),
        "--cnpg-version",
        "1.28.2",
        "--no-progress",
        "--report-dir",
        reports.path().to_str().unwrap(),
        "--workdir",
        parent.path().to_str().unwrap(),
    ]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("ignored by CloudNativePG 1.28.2"), "{out}");
    assert!(out.contains("bin_path"), "{out}");
    assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0, "work directory left behind");
    drop(root);
}
