//! Verdicts people can act on (issue 23): a failure's category and its evidence in every
//! report, the results bundle (`--bundle`, `bundle show`, `run --from-bundle`), `diff`,
//! `--retries` telling flakes from failures, and the image axis of a matrix.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use cnpg_ext_backend::Backend;
use cnpg_ext_harness::run::Status;
use cnpg_ext_harness::Harness;
use cnpg_ext_model::backend::{ApplyOutcome, BackendError, InstanceObservation, InstanceRef, RolloutRecord};
use cnpg_ext_model::{Cluster, ClusterDoc, ClusterPlan, DatabaseDoc};
use common::*;

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

/// The system-library scenario with its first expectation removed: `CREATE EXTENSION greet`
/// is now expected to work, and fails because the image's library is not on LD_LIBRARY_PATH.
#[test]
fn a_failure_carries_its_category_and_evidence_into_every_report_and_the_bundle() {
    let (_root, dir) = scenario_copy("system-library");
    let file = dir.join("scenario.yaml");
    let yaml = std::fs::read_to_string(&file).unwrap();
    let edited = yaml.replacen("      error: \"libgreet.so.1: cannot open shared object file\"\n", "", 1);
    assert_ne!(yaml, edited);
    std::fs::write(&file, edited).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let reports = scratch.path().join("reports");
    let bundle = scratch.path().join("run.tar.gz");
    let parent = workdir_parent("category");
    let o = run(&[
        "run",
        dir.to_str().unwrap(),
        "--no-progress",
        "--report-dir",
        reports.to_str().unwrap(),
        "--workdir",
        parent.path().to_str().unwrap(),
        "--bundle",
        bundle.to_str().unwrap(),
    ]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("step 2 (without LD_LIBRARY_PATH the module cannot load) [missing-shared-library]"), "{out}");

    // report.json: the category on the scenario and the step, and the evidence.
    let r = json(&reports.join("report.json"));
    assert_eq!(r["schema_version"], 2);
    let s = &r["scenarios"][0];
    assert_eq!(s["category"], "missing-shared-library", "{s:#}");
    let step = s["steps"].as_array().unwrap().iter().find(|x| x["status"] == "failed").unwrap();
    assert_eq!(step["category"], "missing-shared-library");
    let evidence = step["evidence"].as_array().unwrap();
    let of = |source: &str| -> Vec<&str> {
        evidence.iter().filter(|e| e["source"] == source).map(|e| e["text"].as_str().unwrap()).collect()
    };
    assert_eq!(of("library"), ["libgreet.so.1 (not found by the dynamic loader)"], "{evidence:#?}");
    let logs = of("postmaster-log");
    assert!(
        logs.iter().any(|l| l.contains("libgreet.so.1: cannot open shared object file")),
        "the postmaster's own line must be in the evidence: {evidence:#?}"
    );
    let show = of("show");
    assert_eq!(show.len(), 2, "both instances' SHOW values: {evidence:#?}");
    assert!(show[0].contains("extension_control_path = $system:/") && show[0].contains("dynamic_library_path = "));
    assert!(of("mounts").iter().any(|m| m.contains("present: true")), "{evidence:#?}");

    // junit: the category is the failure's type; summary and page show it with the evidence.
    let junit = std::fs::read_to_string(reports.join("junit.xml")).unwrap();
    assert!(junit.contains("type=\"missing-shared-library\""), "{junit}");
    let md = std::fs::read_to_string(reports.join("summary.md")).unwrap();
    assert!(md.contains("❌ failed `missing-shared-library`"), "{md}");
    assert!(md.contains("<summary>postmaster-log (cluster-greet-1)</summary>"), "{md}");

    // The bundle: documented layout, shown, rerun, diffed.
    let o = run(&["bundle", "show", bundle.to_str().unwrap(), "--files"]);
    let shown = text(&o);
    assert_eq!(o.status.code(), Some(0), "{shown}");
    assert!(shown.contains("verdict: failed (exit 1)"), "{shown}");
    assert!(shown.contains("FAILED system-library [missing-shared-library]"), "{shown}");
    assert!(shown.contains("evidence library:\n    libgreet.so.1"), "{shown}");
    assert!(shown.contains("image ghcr.io/example/greet:1.0-18-trixie @ sha256:"), "{shown}");
    for f in [
        "bundle.json",
        "command.txt",
        "environment.json",
        "images.json",
        "reports/report.json",
        "reports/junit.xml",
        "reports/summary.md",
        "scenarios/system-library/scenario.yaml",
        "scenarios/system-library/cluster-ld.yaml",
        "fixtures/greet/fixture.yaml",
    ] {
        assert!(shown.contains(&format!("  {f}\n")), "{f} missing from the bundle:\n{shown}");
    }
    // Every instance's server log, copied before teardown.
    let logs: Vec<&str> =
        shown.lines().filter(|l| l.contains("  reports/logs/system-library/") && l.ends_with("postgres.log")).collect();
    assert_eq!(logs.len(), 2, "both instances' postgres.log:\n{shown}");
    let o = run(&[
        "run",
        "--from-bundle",
        bundle.to_str().unwrap(),
        "--no-progress",
        "--workdir",
        parent.path().to_str().unwrap(),
    ]);
    let again = text(&o);
    assert_eq!(o.status.code(), Some(1), "{again}");
    assert!(again.contains("verdict reproduced: failed as in the bundle"), "{again}");
    assert!(again.contains("system-library: failed as in the bundle"), "{again}");

    // Diff: the same run twice is no regression; against a passing run it is one.
    let o = run(&["diff", bundle.to_str().unwrap(), reports.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("No differences."), "{}", text(&o));
    let mut passing = r.clone();
    passing["scenarios"][0]["status"] = "passed".into();
    passing["scenarios"][0]["category"] = serde_json::Value::Null;
    let old = scratch.path().join("old.json");
    std::fs::write(&old, serde_json::to_vec(&passing).unwrap()).unwrap();
    let md_out = scratch.path().join("diff.md");
    let o = run(&["diff", old.to_str().unwrap(), bundle.to_str().unwrap(), "--output", md_out.to_str().unwrap()]);
    let d = text(&o);
    assert_eq!(o.status.code(), Some(1), "{d}");
    assert!(d.contains("### Regressed"), "{d}");
    assert!(d.contains("| `system-library` | passed ("), "{d}");
    assert!(d.contains("failed `missing-shared-library`"), "{d}");
    assert_eq!(std::fs::read_to_string(&md_out).unwrap(), String::from_utf8_lossy(&o.stdout));

    // Bad input: clear error, exit 2.
    let o = run(&["bundle", "show", reports.join("report.json").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("not a .tar.gz bundle"), "{}", text(&o));
    let o = run(&["diff", "no/such.json", reports.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));

    assert!(processes_mentioning(parent.path().to_str().unwrap()).is_empty());
    assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0, "work directory left behind");
}

/// A backend that fails its first `apply_cluster` of the whole run the way `fail` says.
struct FailFirst {
    inner: Box<dyn Backend>,
    fail: Option<String>,
}

#[async_trait]
impl Backend for FailFirst {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn plan_for(&self, cluster: &Cluster, instance: &str) -> ClusterPlan {
        self.inner.plan_for(cluster, instance)
    }
    async fn apply_cluster(&mut self, doc: &ClusterDoc) -> Result<ApplyOutcome, BackendError> {
        match self.fail.take() {
            Some(msg) => Err(BackendError::Failed(msg)),
            None => self.inner.apply_cluster(doc).await,
        }
    }
    async fn apply_database(&mut self, doc: &DatabaseDoc) -> Result<Vec<String>, BackendError> {
        self.inner.apply_database(doc).await
    }
    async fn restart(&mut self) -> Result<RolloutRecord, BackendError> {
        self.inner.restart().await
    }
    async fn instances(&self) -> Result<Vec<InstanceRef>, BackendError> {
        self.inner.instances().await
    }
    async fn connect(&self, i: &str, d: &str, u: &str) -> Result<tokio_postgres::Client, BackendError> {
        self.inner.connect(i, d, u).await
    }
    async fn inspect(&self, i: &str, plan: &ClusterPlan) -> Result<InstanceObservation, BackendError> {
        self.inner.inspect(i, plan).await
    }
    async fn server_log(&self, i: &str) -> Option<String> {
        self.inner.server_log(i).await
    }
    async fn teardown(&mut self, keep: bool) -> Result<(), BackendError> {
        self.inner.teardown(keep).await
    }
}

/// Runs custom-path with `--retries 2`, the first backend failing with `message`; returns
/// the report and how many backends were made.
fn with_first_failure(message: &str, scenario: &Path) -> (cnpg_ext_harness::reports::run::RunReport, usize) {
    let made = Arc::new(AtomicUsize::new(0));
    let m = made.clone();
    let message = message.to_string();
    let parent = workdir_parent("retries");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let report = rt
        .block_on(
            Harness::local()
                .jobs(1)
                .retries(2)
                .workdir(parent.path())
                .wrap_backend(move |_, inner| {
                    let first = m.fetch_add(1, Ordering::SeqCst) == 0;
                    Box::new(FailFirst { inner, fail: first.then(|| message.clone()) })
                })
                .run([scenario]),
        )
        .unwrap();
    assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0, "work directory left behind");
    (report, made.load(Ordering::SeqCst))
}

#[test]
fn only_infrastructure_is_retried_and_a_pass_after_a_retry_is_flaky() {
    let scenario = repo().join("scenarios/custom-path");
    // An environment timeout, then a pass: flaky, with the failed attempt recorded.
    let (r, made) = with_first_failure("waited 60s for cluster-1 to accept connections", &scenario);
    assert_eq!(made, 2);
    let s = &r.scenarios[0];
    assert_eq!(s.status, Status::Flaky, "{}", r.failures());
    assert!(!r.passed(), "flaky is not passed");
    assert_eq!(r.totals.flaky, 1);
    assert_eq!(r.totals.passed, 0);
    assert_eq!(s.attempts.len(), 1);
    assert_eq!(s.attempts[0].category.map(|c| c.name()), Some("timeout"));
    assert!(s.attempts[0].failure.as_deref().unwrap().contains("waited 60s"), "{:?}", s.attempts);
    let junit = r.junit().to_string().unwrap();
    assert!(junit.contains("<flakyFailure") && junit.contains("type=\"timeout\""), "{junit}");
    assert!(r.summary_markdown().contains("⚠️ flaky `timeout`"), "{}", r.summary_markdown());
    // Kept for people to look at (the README quotes it).
    let kept = repo().join("target/test-reports/flaky");
    std::fs::create_dir_all(&kept).unwrap();
    r.write(&kept).unwrap();

    // A failure that is not infrastructure is never retried.
    let (r, made) = with_first_failure("rejected by the operator", &scenario);
    assert_eq!(made, 1, "an operation failure must not be retried");
    assert_eq!(r.scenarios[0].status, Status::Failed);
    assert_eq!(r.scenarios[0].category.map(|c| c.name()), Some("operation-failed"));

    // Nor an assertion: a broken expectation with --retries runs once.
    let (_root, dir) = scenario_copy("custom-path");
    let f = dir.join("scenario.yaml");
    std::fs::write(&f, std::fs::read_to_string(&f).unwrap().replace("hello from a custom path", "hello")).unwrap();
    let made = Arc::new(AtomicUsize::new(0));
    let m = made.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let parent = workdir_parent("retries-assert");
    let r = rt
        .block_on(
            Harness::local()
                .retries(3)
                .workdir(parent.path())
                .wrap_backend(move |_, inner| {
                    m.fetch_add(1, Ordering::SeqCst);
                    inner
                })
                .run([&dir]),
        )
        .unwrap();
    assert_eq!(made.load(Ordering::SeqCst), 1, "an assertion must not be retried");
    assert_eq!(r.scenarios[0].category.map(|c| c.name()), Some("assertion"));
    assert!(r.scenarios[0].attempts.is_empty());
}

/// `axes.images`: the same scenario against the image built from its fixture and against a
/// changed build substituted for it; each cell's report records the digest it ran.
#[test]
fn the_image_axis_substitutes_images_per_cell() {
    let scratch = tempfile::tempdir().unwrap();
    let moved = scratch.path().join("moved");
    std::fs::create_dir_all(moved.join("licenses")).unwrap();
    let src = repo().join("fixtures/custom-path");
    for f in ["fixture.yaml", "pathprobe--1.0.sql", "pathprobe.control", "licenses/README.txt"] {
        std::fs::copy(src.join(f), moved.join(f)).unwrap();
    }
    let c = std::fs::read_to_string(src.join("pathprobe.c")).unwrap();
    assert!(c.contains("hello from a custom path"));
    std::fs::write(moved.join("pathprobe.c"), c.replace("hello from a custom path", "hello from another build"))
        .unwrap();
    let matrix = scratch.path().join("m.yaml");
    std::fs::write(
        &matrix,
        format!(
            "axes:\n  backend: [local]\n  images:\n    - {{name: built}}\n    - name: other\n      substitute:\n        ghcr.io/example/pathprobe:1.0-18-trixie: fixture:moved\n  scenarios: [{}]\n",
            repo().join("scenarios/custom-path").display()
        ),
    )
    .unwrap();
    let dir = scratch.path().join("r");
    let o = bin()
        .args(["matrix", matrix.to_str().unwrap(), "--no-progress", "--report-dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("PASS local_wheel_cnpg-1.30.1_img-built_custom-path"), "{out}");
    assert!(out.contains("FAIL local_wheel_cnpg-1.30.1_img-other_custom-path"), "{out}");
    assert!(out.contains("actual:   rows on cluster-custom-path-1: [hello from another build]"), "{out}");
    let built = json(&dir.join("cells/local_wheel_cnpg-1.30.1_img-built_custom-path/report.json"));
    let other = json(&dir.join("cells/local_wheel_cnpg-1.30.1_img-other_custom-path/report.json"));
    let digest = |r: &serde_json::Value| r["images"][0]["manifest_digest"].as_str().unwrap().to_string();
    assert!(digest(&built).starts_with("sha256:") && digest(&other).starts_with("sha256:"));
    assert_ne!(digest(&built), digest(&other), "each cell records the digest it ran");
    assert_eq!(other["images"][0]["reference"], "ghcr.io/example/pathprobe:1.0-18-trixie");
    assert!(other["images"][0]["substituted_by"].as_str().unwrap().ends_with("/moved"), "{other:#}");
    assert!(built["images"][0].get("substituted_by").is_none());
    // A substitution nobody uses is invalid input, not a silent pass.
    let o = run(&[
        "run",
        "scenarios/custom-path",
        "--no-progress",
        "--image",
        "ghcr.io/example/nope:1=fixture:fixtures/custom-path",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("no scenario uses the image `ghcr.io/example/nope:1`"), "{}", text(&o));
}

/// `--image REF=<registry reference>`: pulled through the registry code, the digest recorded;
/// `--from-bundle` pulls it again by that digest and the verdict reproduces.
#[test]
fn a_substituted_image_is_pulled_by_reference_and_rerun_by_digest() {
    use cnpg_ext_testutil::registry::{require, Registry, TOOLS};
    let Some(()) = require(TOOLS) else { return };
    let reg = Registry::start(None);
    let scratch = tempfile::tempdir().unwrap();
    let pg = cnpg_ext_harness::run::locate_postgres(None).expect("PostgreSQL 18");
    let tree = scratch.path().join("tree");
    let built = cnpg_ext_images::fixture::build_fixture(&repo().join("fixtures/pgvector"), &pg.fixture_target(), &tree)
        .unwrap();
    let pulled = format!("{}/vendor/pgvector:0.8.6-rebuilt", reg.addr);
    let mut opts = cnpg_ext_images::BuildOptions::new(pulled.clone());
    opts.labels = built.labels;
    let layout = scratch.path().join("oci");
    let digest = cnpg_ext_images::build_layout(&tree, &opts, &layout).unwrap().manifest_digest;
    reg.push(&layout, "vendor/pgvector", "0.8.6-rebuilt");

    let seed = "ghcr.io/cloudnative-pg/pgvector:0.8.6-18-trixie";
    let bundle = scratch.path().join("pulled.tar.gz");
    let parent = workdir_parent("pulled");
    let o = bin()
        .args(["--insecure-registry", &reg.addr, "run", "scenarios/single-extension", "--no-progress"])
        .args(["--workdir", parent.path().to_str().unwrap(), "--bundle", bundle.to_str().unwrap()])
        .args(["--report-dir", scratch.path().join("r").to_str().unwrap()])
        .arg("--image")
        .arg(format!("{seed}={pulled}"))
        .env_remove("REGISTRY_AUTH_FILE")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let r = json(&scratch.path().join("r/report.json"));
    assert_eq!(r["images"][0]["reference"], seed);
    assert_eq!(r["images"][0]["manifest_digest"], digest.as_str(), "the digest that ran is the pulled one");
    assert_eq!(r["images"][0]["substituted_by"], pulled.as_str());

    let o = bin()
        .args(["--insecure-registry", &reg.addr, "run", "--from-bundle", bundle.to_str().unwrap(), "--no-progress"])
        .args(["--workdir", parent.path().to_str().unwrap()])
        .env_remove("REGISTRY_AUTH_FILE")
        .output()
        .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains(&format!("image {seed} from {}/vendor/pgvector@{digest}", reg.addr)),
        "pinned by digest: {out}"
    );
    assert!(out.contains("verdict reproduced: passed as in the bundle"), "{out}");
}
