//! `matrix`: the example matrix produces the page, JUnit and JSON; a broken cell is failed in
//! all three with expected vs actual; `--rerun-failed` reruns only failed cells; PostgreSQL < 18
//! is an `unsupported` cell; an invalid matrix file exits 2 naming file, line and field.

mod common;

use std::path::{Path, PathBuf};

use common::*;

fn fake_pg15(dir: &Path) -> PathBuf {
    let fake = dir.join("pg15").join("bin").join("pg_config");
    std::fs::create_dir_all(fake.parent().unwrap()).unwrap();
    std::fs::write(&fake, "#!/bin/sh\nfor a in \"$@\"; do case \"$a\" in --version) echo 'PostgreSQL 15.18';; *) echo /nonexistent;; esac; done\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    fake
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn cell<'a>(report: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    report["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no cell {id}: {report:#}"))
}

/// A container engine that can run the container backend here: answering is not enough (a
/// podman whose default runtime cannot create containers answers), so the smallest scenario
/// runs on it; exit 3 (environment unusable) means no.
fn engine_available() -> bool {
    if !cnpg_ext_harness::testing::engine_available(&cnpg_ext_harness::EngineOptions::from_env()) {
        return false;
    }
    let scratch = tempfile::tempdir().unwrap();
    let o = bin()
        .args(["run", "--no-progress", "--backend", "container", "--report-dir", scratch.path().to_str().unwrap()])
        .arg(repo().join("scenarios/custom-path"))
        .output()
        .unwrap();
    o.status.code() != Some(3)
}

/// Opens `index.html` in headless Chromium and keeps the screenshot next to it. Skipped
/// (with a message) when Chromium is not installed, unless `CI=true` or
/// CNPG_EXT_HARNESS_REQUIRE_CHROMIUM is set (`common::cannot_run`).
fn screenshot(report_dir: &Path) -> Option<PathBuf> {
    let chromium = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| std::process::Command::new(c).arg("--version").output().map(|o| o.status.success()).unwrap_or(false));
    let Some(chromium) = chromium else {
        cannot_run("chromium is not installed: the matrix page screenshot", Some("CNPG_EXT_HARNESS_REQUIRE_CHROMIUM"));
        return None;
    };
    let profile = tempfile::tempdir().unwrap();
    let png = report_dir.join("index.png");
    let _ = std::fs::remove_file(&png);
    let o = std::process::Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"])
        .args(["--disable-component-update", "--disable-sync", "--window-size=1280,900"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", report_dir.join("index.html").display()))
        .output()
        .unwrap();
    assert!(png.is_file(), "no screenshot: {}", text(&o));
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 20_000, "screenshot too small: {} bytes", bytes.len());
    Some(png)
}

/// The page is self-contained: no scripts, nothing fetched from the network.
fn assert_self_contained(html: &str) {
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(!html.contains("<script"), "the page must not need JavaScript");
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"http") && !html.contains("@import"),
        "the page must not load anything"
    );
    assert!(html.contains("<style>"));
}

#[test]
fn the_example_matrix_writes_the_page_junit_and_json() {
    // The checked-in example, made runnable where postgresql-15 or a container engine is missing.
    let scratch = tempfile::tempdir().unwrap();
    let mut yaml = std::fs::read_to_string(repo().join("matrix/example.yaml")).unwrap();
    yaml = yaml.replace("../scenarios", repo().join("scenarios").to_str().unwrap());
    let pg15 = Path::new("/usr/lib/postgresql/15/bin/pg_config");
    if !pg15.is_file() {
        // Said, and a failure under CI: the cell then judges a stand-in that only answers --version.
        cannot_run("no PostgreSQL 15 (apt-get install postgresql-15): its cell runs against a fake pg_config", None);
        yaml = yaml.replace(pg15.to_str().unwrap(), fake_pg15(scratch.path()).to_str().unwrap());
    }
    let with_engine = engine_available();
    if !with_engine {
        cannot_run(
            "no usable container engine: the example's container cells",
            Some("CNPG_EXT_HARNESS_REQUIRE_ENGINE"),
        );
        yaml = yaml.replace("backend: [local, container]", "backend: [local]");
    }
    let file = scratch.path().join("example.yaml");
    std::fs::write(&file, yaml).unwrap();
    let reports = repo().join("target/test-reports/matrix-example");
    let _ = std::fs::remove_dir_all(&reports);
    let o = bin()
        .args([
            "matrix",
            file.to_str().unwrap(),
            "--jobs",
            "2",
            "--no-progress",
            "--report-dir",
            reports.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");

    let report = json(&reports.join("report.json"));
    assert_eq!(report["kind"], "cnpg-ext-harness/matrix");
    let cells = report["cells"].as_array().unwrap();
    assert_eq!(cells.len(), if with_engine { 4 } else { 2 }, "{report:#}");
    let local = cell(&report, "local_wheel_cnpg-1.30.1_seed");
    assert_eq!(local["status"], "passed", "{local:#}");
    // Every scenario directory of the repository is in the seed set of the example matrix.
    let scenario_dirs = std::fs::read_dir(repo().join("scenarios"))
        .unwrap()
        .flatten()
        .filter(|d| d.path().join("scenario.yaml").is_file())
        .count();
    assert_eq!(local["scenarios"].as_array().unwrap().len(), scenario_dirs, "{local:#}");
    let pg15 = cell(&report, "local_pg15_cnpg-1.30.1_seed");
    assert_eq!(pg15["status"], "unsupported", "{pg15:#}");
    assert!(pg15["reason"].as_str().unwrap().starts_with("unsupported: PostgreSQL < 18"), "{pg15:#}");
    if with_engine {
        assert_eq!(cell(&report, "container_wheel_cnpg-1.30.1_seed")["status"], "passed", "{out}");
        assert_eq!(cell(&report, "container_pg15_cnpg-1.30.1_seed")["status"], "unsupported");
    }
    // Each cell has its own record.
    for c in cells {
        let dir = reports.join(c["dir"].as_str().unwrap());
        assert!(dir.join("output.log").is_file(), "{}", dir.display());
        assert!(dir.join("summary.md").is_file(), "{}", dir.display());
        if c["status"] == "passed" {
            for f in ["report.json", "junit.xml", "index.html"] {
                assert!(dir.join(f).is_file(), "{}/{f}", dir.display());
            }
        }
    }
    // JUnit: one testsuite per cell; unsupported cells are skipped, not failed.
    let junit = std::fs::read_to_string(reports.join("junit.xml")).unwrap();
    assert_eq!(junit.matches("<testsuite ").count(), cells.len(), "{junit}");
    assert!(junit.contains("name=\"local_wheel_cnpg-1.30.1_seed\""), "{junit}");
    assert!(junit.contains("<skipped message=\"unsupported: PostgreSQL &lt; 18"), "{junit}");
    assert!(!junit.contains("<failure"), "{junit}");
    // The page: a coloured cell per cell, links to each cell's summary and log.
    let html = std::fs::read_to_string(reports.join("index.html")).unwrap();
    assert_self_contained(&html);
    // The grid: a row per scenario, a column per backend × PostgreSQL.
    let columns = if with_engine { 2 } else { 1 };
    assert_eq!(html.matches("<td class=\"g s-passed\"").count(), scenario_dirs * columns);
    assert_eq!(html.matches("<td class=\"g s-unsupported\"").count(), scenario_dirs * columns);
    assert!(html.contains("href=\"cells/local_wheel_cnpg-1.30.1_seed/summary.md\""));
    assert!(html.contains("href=\"cells/local_pg15_cnpg-1.30.1_seed/output.log\""));
    assert!(html.contains("unsupported: PostgreSQL &lt; 18"));
    if let Some(png) = screenshot(&reports) {
        eprintln!("screenshot: {}", png.display());
    }
}

#[test]
fn a_broken_cell_fails_everywhere_and_rerun_failed_reruns_only_it() {
    let (good_root, _) = scenario_copy("custom-path");
    let (bad_root, bad) = scenario_copy("single-extension");
    let file = bad.join("scenario.yaml");
    let original = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, original.replace("5.196152422706632", "5.2")).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let matrix = scratch.path().join("matrix.yaml");
    std::fs::write(
        &matrix,
        format!(
            "axes:\n  backend: [local]\n  postgres: [wheel]\n  scenarios:\n    - {{name: good, paths: [{}]}}\n    - {{name: broken, paths: [{}]}}\n",
            good_root.path().join("scenarios/custom-path").display(),
            bad.display()
        ),
    )
    .unwrap();
    let first = scratch.path().join("first");
    let o = bin()
        .args(["matrix", matrix.to_str().unwrap(), "--no-progress", "--report-dir", first.to_str().unwrap()])
        .output()
        .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("FAIL local_wheel_cnpg-1.30.1_broken"), "{out}");
    assert!(out.contains("expected: rows on cluster-pgvector-1: [5.2]"), "{out}");

    // JSON: the failed cell with the step and expected vs actual.
    let report = json(&first.join("report.json"));
    let broken = cell(&report, "local_wheel_cnpg-1.30.1_broken");
    assert_eq!(broken["status"], "failed");
    let f = &broken["scenarios"][0]["failure"];
    assert!(f["locator"].as_str().unwrap().ends_with("scenario.yaml:16 step 5 (L2 distance)"), "{f:#}");
    assert_eq!(f["expected"], "rows on cluster-pgvector-1: [5.2]");
    assert_eq!(f["actual"], "rows on cluster-pgvector-1: [5.196152422706632]");
    assert_eq!(cell(&report, "local_wheel_cnpg-1.30.1_good")["status"], "passed");
    // The local backend kept the failing instance's postgres.log tail.
    let logs: Vec<&str> = broken["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .filter(|f| f.contains("/logs/"))
        .collect();
    assert!(!logs.is_empty(), "{broken:#}");
    assert!(std::fs::read_to_string(first.join(logs[0])).unwrap().contains("database system is ready"), "{}", logs[0]);
    // JUnit: a failure in the broken cell's suite, expected vs actual in it.
    let junit = std::fs::read_to_string(first.join("junit.xml")).unwrap();
    assert_eq!(junit.matches("<failure").count(), 1, "{junit}");
    assert!(junit.contains("expected: rows on cluster-pgvector-1: [5.2]"), "{junit}");
    assert!(junit.contains("actual:   rows on cluster-pgvector-1: [5.196152422706632]"), "{junit}");
    // HTML: a red cell and the failure with expected vs actual.
    let html = std::fs::read_to_string(first.join("index.html")).unwrap();
    assert_self_contained(&html);
    assert_eq!(html.matches("<td class=\"g s-failed\"").count(), 1);
    assert_eq!(html.matches("<td class=\"g s-passed\"").count(), 1);
    assert!(html.contains("<span class=\"cat\">assertion</span>"), "{html}");
    assert!(html.contains("expected: rows on cluster-pgvector-1: [5.2]"), "{html}");
    assert!(html.contains("actual:   rows on cluster-pgvector-1: [5.196152422706632]"));

    // Fix the scenario; rerun only the failed cell into a new directory.
    std::fs::write(&file, &original).unwrap();
    let second = scratch.path().join("second");
    let o = bin()
        .args(["matrix", matrix.to_str().unwrap(), "--no-progress", "--report-dir", second.to_str().unwrap()])
        .args(["--rerun-failed", first.join("report.json").to_str().unwrap()])
        .output()
        .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("1 cell(s) to run, 1 carried over"), "{out}");
    let again = json(&second.join("report.json"));
    let (good_before, good_after) =
        (cell(&report, "local_wheel_cnpg-1.30.1_good"), cell(&again, "local_wheel_cnpg-1.30.1_good"));
    assert_eq!(good_after["started_at"], good_before["started_at"], "the passed cell must not run again");
    assert_eq!(good_after["duration_ms"], good_before["duration_ms"]);
    assert!(good_after["carried_over_from"].as_str().unwrap().ends_with("first/report.json"));
    // Its files were carried over too; its own run record is the first run's.
    let run_before = json(&first.join("cells/local_wheel_cnpg-1.30.1_good/report.json"));
    let run_after = json(&second.join("cells/local_wheel_cnpg-1.30.1_good/report.json"));
    assert_eq!(run_before["started_at"], run_after["started_at"]);
    let broken_after = cell(&again, "local_wheel_cnpg-1.30.1_broken");
    assert_eq!(broken_after["status"], "passed");
    assert_ne!(broken_after["started_at"], broken["started_at"], "the failed cell must run again");
    assert!(broken_after.get("carried_over_from").is_none());
    assert_eq!(again["rerun_of"].as_str().unwrap(), first.join("report.json").to_str().unwrap());
    drop(bad_root);
}

#[test]
fn postgres_older_than_18_is_an_unsupported_cell() {
    let scratch = tempfile::tempdir().unwrap();
    let fake = fake_pg15(scratch.path());
    let matrix = scratch.path().join("m.yaml");
    let scen = repo().join("scenarios/custom-path");
    std::fs::write(
        &matrix,
        format!(
            "axes:\n  backend: [local]\n  postgres: [wheel, {}]\n  scenarios: [{}]\n",
            fake.display(),
            scen.display()
        ),
    )
    .unwrap();
    let dir = scratch.path().join("r");
    let o = bin()
        .args(["matrix", matrix.to_str().unwrap(), "--no-progress", "--report-dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "unsupported by design is not a failure: {out}");
    let report = json(&dir.join("report.json"));
    let c = cell(&report, "local_pg15_cnpg-1.30.1_custom-path");
    assert_eq!(c["status"], "unsupported");
    assert_eq!(c["reason"], "unsupported: PostgreSQL < 18 (found PostgreSQL 15.18)");
    assert_eq!(c["exit_code"], 3);
    assert_eq!(cell(&report, "local_wheel_cnpg-1.30.1_custom-path")["status"], "passed");
    assert_eq!(report["totals"]["unsupported"], 1);

    // Only unsupported cells: no cell could run → 3.
    std::fs::write(
        &matrix,
        format!("axes:\n  backend: [local]\n  postgres: [{}]\n  scenarios: [{}]\n", fake.display(), scen.display()),
    )
    .unwrap();
    let o = bin()
        .args(["matrix", matrix.to_str().unwrap(), "--no-progress", "--report-dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(dir.join("index.html").is_file());
}

#[test]
fn an_invalid_matrix_file_names_file_line_and_field() {
    let scratch = tempfile::tempdir().unwrap();
    let m = scratch.path().join("bad.yaml");
    let scen = repo().join("scenarios/custom-path");
    let run = |yaml: String| {
        std::fs::write(&m, yaml).unwrap();
        let o = bin()
            .args(["matrix", m.to_str().unwrap(), "--no-progress", "--report-dir"])
            .arg(scratch.path().join("r"))
            .output()
            .unwrap();
        (o.status.code(), text(&o))
    };
    let (code, out) =
        run(format!("axes:\n  backend: [local]\n  scenarios: [{}]\n  postgress: [wheel]\n", scen.display()));
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("bad.yaml:4: postgress: unknown field `postgress`"), "{out}");
    let (code, out) = run(format!("axes:\n  backend:\n    - local\n    - lokal\n  scenarios: [{}]\n", scen.display()));
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("bad.yaml:4: axes.backend[1]: `lokal`: expected local, container or kind"), "{out}");
    let (code, out) = run("axes:\n  backend: [local]\n  scenarios:\n    - no/such/dir\n".into());
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("bad.yaml:4: axes.scenarios[0]:") && out.contains("no/such/dir does not exist"), "{out}");
    let (code, out) =
        run(format!("axes:\n  backend: [local]\n  cnpg: [\"1.2x\"]\n  scenarios: [{}]\n", scen.display()));
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("bad.yaml:3: axes.cnpg[0]"), "{out}");
    assert!(!scratch.path().join("r/report.json").exists());
}
