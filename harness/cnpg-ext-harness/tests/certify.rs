//! `certify`: passes on the pgvector fixture image; fails with reasons when the module is
//! missing or an update script is wrong; walks CREATE → ALTER EXTENSION UPDATE → DROP.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;

fn pg() -> cnpg_ext_pg::PgInstall {
    cnpg_ext_harness::run::locate_postgres(None).expect("PostgreSQL 18")
}

fn layout(tree: &Path, reference: &str, labels: BTreeMap<String, String>, out: &Path) -> PathBuf {
    let mut opts = cnpg_ext_images::BuildOptions::new(reference);
    opts.labels = labels;
    cnpg_ext_images::build_layout(tree, &opts, out).unwrap();
    out.to_path_buf()
}

/// The pgvector fixture tree, changed by `edit` before it is packed.
fn pgvector_image(scratch: &Path, edit: impl FnOnce(&Path)) -> PathBuf {
    pgvector_image_as(scratch, edit, "ghcr.io/cloudnative-pg/pgvector:0.8.6-18-trixie", true)
}

/// [`pgvector_image`] under another reference, with or without the fixture's labels.
fn pgvector_image_as(scratch: &Path, edit: impl FnOnce(&Path), reference: &str, labels: bool) -> PathBuf {
    let tree = scratch.join("tree");
    let built =
        cnpg_ext_images::fixture::build_fixture(&repo().join("fixtures/pgvector"), &pg().fixture_target(), &tree)
            .unwrap();
    edit(&tree);
    let labels = if labels { built.labels } else { BTreeMap::new() };
    layout(&tree, reference, labels, &scratch.join("oci"))
}

/// A SQL-only extension with versions 1.0 and 1.1, an update script 1.0 → 1.1.
fn sql_only_image(scratch: &Path, update_script: &str) -> PathBuf {
    let tree = scratch.join("tree");
    let ext = tree.join("share/extension");
    std::fs::create_dir_all(&ext).unwrap();
    std::fs::create_dir_all(tree.join("licenses")).unwrap();
    std::fs::write(tree.join("licenses/LICENSE"), "test fixture\n").unwrap();
    std::fs::write(
        ext.join("certdemo.control"),
        "comment = 'certify test'\ndefault_version = '1.1'\nrelocatable = true\n",
    )
    .unwrap();
    std::fs::write(
        ext.join("certdemo--1.0.sql"),
        "CREATE FUNCTION certdemo_version() RETURNS int LANGUAGE sql AS 'SELECT 10';\n",
    )
    .unwrap();
    std::fs::write(
        ext.join("certdemo--1.1.sql"),
        "CREATE FUNCTION certdemo_version() RETURNS int LANGUAGE sql AS 'SELECT 11';\n",
    )
    .unwrap();
    std::fs::write(ext.join("certdemo--1.0--1.1.sql"), update_script).unwrap();
    let labels: BTreeMap<String, String> = [
        (cnpg_ext_images::LABEL_BASE_NAME, "ghcr.io/cloudnative-pg/postgresql:18-minimal-trixie"),
        (cnpg_ext_images::LABEL_BASE_PGMAJOR, "18"),
        (cnpg_ext_images::LABEL_BASE_OS, "trixie"),
        (cnpg_ext_images::LABEL_SQL_VERSION, "1.1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    layout(&tree, "example.com/certdemo:1.1-18-trixie", labels, &scratch.join("oci"))
}

fn certify(image: &Path, report: &Path) -> (Option<i32>, String, serde_json::Value) {
    certify_with(image, report, &[])
}

fn certify_with(image: &Path, report: &Path, extra: &[&str]) -> (Option<i32>, String, serde_json::Value) {
    let o = bin()
        .args(["certify", image.to_str().unwrap(), "--no-progress", "--report-dir", report.to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap();
    let cert = std::fs::read(report.join("certification.json"))
        .map(|b| serde_json::from_slice(&b).unwrap())
        .unwrap_or_default();
    (o.status.code(), text(&o), cert)
}

#[test]
fn the_pgvector_fixture_image_passes() {
    let scratch = tempfile::tempdir().unwrap();
    let image = pgvector_image(scratch.path(), |_| {});
    let report = repo().join("target/test-reports/certify-pgvector");
    let (code, out, cert) = certify(&image, &report);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("verdict: pass"), "{out}");
    assert_eq!(cert["verdict"], "pass");
    assert_eq!(cert["inferred"]["name"], "pgvector");
    assert_eq!(cert["inferred"]["reference"], "ghcr.io/cloudnative-pg/pgvector:0.8.6-18-trixie");
    assert_eq!(cert["inferred"]["extension_control_path"], serde_json::json!(["share"]));
    assert_eq!(cert["inferred"]["dynamic_library_path"], serde_json::json!(["lib"]));
    assert_eq!(cert["inferred"]["extensions"][0]["name"], "vector");
    // pgvector ships one install script and many update scripts: said, not hidden.
    assert!(
        cert["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains("only the default version 0.8.6 has a full install script")),
        "{cert:#}"
    );
    // The record: a re-runnable scenario, the run's report, JUnit with a lint suite, the page.
    let scenario = std::fs::read_to_string(report.join("scenario/scenario.yaml")).unwrap();
    assert!(scenario.contains("CREATE EXTENSION \\\"vector\\\" CASCADE"), "{scenario}");
    assert!(scenario.contains("DROP EXTENSION \\\"vector\\\""), "{scenario}");
    let run: serde_json::Value = serde_json::from_slice(&std::fs::read(report.join("report.json")).unwrap()).unwrap();
    assert_eq!(run["totals"]["passed"], 1);
    let junit = std::fs::read_to_string(report.join("junit.xml")).unwrap();
    assert!(junit.contains("<testsuite name=\"lint\""), "{junit}");
    assert!(!junit.contains("<failure"), "{junit}");
    assert!(std::fs::read_to_string(report.join("summary.md")).unwrap().starts_with("## Certification of"));
    assert!(std::fs::read_to_string(report.join("index.html")).unwrap().contains("verdict: PASS"));
    // The generated scenario runs on its own.
    let o = bin().args(["run", report.join("scenario").to_str().unwrap(), "--no-progress"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[test]
fn a_missing_module_fails_with_reasons() {
    let scratch = tempfile::tempdir().unwrap();
    let image = pgvector_image(scratch.path(), |tree| std::fs::remove_file(tree.join("lib/vector.so")).unwrap());
    let report = scratch.path().join("report");
    let (code, out, cert) = certify(&image, &report);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("verdict: fail"), "{out}");
    assert_eq!(cert["verdict"], "fail");
    let reasons: Vec<&str> = cert["reasons"].as_array().unwrap().iter().filter_map(|r| r.as_str()).collect();
    assert!(reasons.iter().any(|r| r.starts_with("lint missing-module")), "{reasons:#?}");
    assert!(
        reasons.iter().any(|r| r.contains("module `vector.so` named by a module_pathname is not in the image")),
        "{reasons:#?}"
    );
    let junit = std::fs::read_to_string(report.join("junit.xml")).unwrap();
    assert!(junit.contains("<failure"), "{junit}");
    assert!(std::fs::read_to_string(report.join("index.html")).unwrap().contains("verdict: FAIL"));
}

#[test]
fn a_module_that_is_not_a_library_fails_when_created() {
    let scratch = tempfile::tempdir().unwrap();
    let image =
        pgvector_image(scratch.path(), |tree| std::fs::write(tree.join("lib/vector.so"), b"not an ELF file").unwrap());
    let report = scratch.path().join("report");
    let (code, out, cert) = certify(&image, &report);
    assert_eq!(code, Some(1), "{out}");
    let reasons: Vec<&str> = cert["reasons"].as_array().unwrap().iter().filter_map(|r| r.as_str()).collect();
    assert!(reasons.iter().any(|r| r.starts_with("lint not-elf")), "{reasons:#?}");
    // The real CREATE EXTENSION failed, with PostgreSQL's own words and the step.
    assert!(
        reasons.iter().any(
            |r| r.contains("step 5 (vector: CREATE EXTENSION (version 0.8.6, CASCADE))") && r.contains("vector.so")
        ),
        "{reasons:#?}"
    );
    // The failing instance's postgres.log tail is kept.
    assert!(report.join("logs").is_dir(), "{out}");
    // Both were found; the image's own defect decided, before its consequence.
    let kinds: Vec<&str> = cert["findings"].as_array().unwrap().iter().filter_map(|f| f["kind"].as_str()).collect();
    assert!(kinds.contains(&"create-extension-failed"), "{kinds:?}");
    assert_eq!(cert["decided_by"]["kind"], "image-layout", "{cert:#}");
}

#[test]
fn a_label_less_working_image_certifies_unless_labels_are_required() {
    let scratch = tempfile::tempdir().unwrap();
    let image = pgvector_image_as(scratch.path(), |_| {}, "example.com/vendor/pgvector:0.8.6", false);
    let report = scratch.path().join("report");
    let (code, out, cert) = certify(&image, &report);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(cert["verdict"], "pass");
    assert!(cert.get("decided_by").is_none(), "{cert:#}");
    let warned: Vec<&serde_json::Value> =
        cert["lint"]["findings"].as_array().unwrap().iter().filter(|f| f["code"] == "missing-label").collect();
    assert_eq!(warned.len(), 4, "{cert:#}");
    assert!(warned.iter().all(|f| f["severity"] == "warning"));
    // What the labels would have said, read from the binaries.
    assert_eq!(cert["lint"]["binaries"]["pg_majors"]["lib/vector.so"], 18, "{cert:#}");
    assert!(out.contains("binaries: PostgreSQL 18"), "{out}");
    let run: serde_json::Value = serde_json::from_slice(&std::fs::read(report.join("report.json")).unwrap()).unwrap();
    assert_eq!(run["certification"]["verdict"], "pass", "{run:#}");

    let report = scratch.path().join("report-required");
    let (code, out, cert) = certify_with(&image, &report, &["--require-labels"]);
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(cert["decided_by"]["kind"], "missing-label", "{cert:#}");
    assert!(out.contains("decided by: missing-label"), "{out}");

    let (code, out, _) = certify_with(&image, &scratch.path().join("r3"), &["--os", "alpine"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("alpine") && out.contains("bookworm"), "{out}");
}

/// Patch the built `lib/vector.so`'s magic block to say PostgreSQL 15.
fn magic_says_15(tree: &Path) {
    let so = tree.join("lib/vector.so");
    let mut b = std::fs::read(&so).unwrap();
    // version 1800, funcmaxargs 100, indexmaxkeys 32, namedatalen 64 (little-endian ints)
    let pat: Vec<u8> = [1800u32, 100, 32, 64].iter().flat_map(|v| v.to_le_bytes()).collect();
    let at = b.windows(pat.len()).position(|w| w == pat.as_slice()).expect("magic block");
    b[at..at + 4].copy_from_slice(&1500u32.to_le_bytes());
    std::fs::write(&so, b).unwrap();
}

/// `run` with an image built for another major: the finding is shown while the images are
/// prepared and recorded next to the image in report.json, and the run goes on, so the
/// scenario can assert the error users would see.
#[test]
fn run_shows_and_records_compat_findings_without_aborting() {
    let scratch = tempfile::tempdir().unwrap();
    let reference = "example.com/pgvector-for-15:0.8.6";
    let image = pgvector_image_as(scratch.path(), magic_says_15, reference, false);
    let dir = scratch.path().join("scenario");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("cluster.yaml"),
        format!("apiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata: {{name: c}}\nspec:\n  instances: 1\n  postgresql:\n    extensions:\n      - name: pgvector\n        image: {{reference: \"{reference}\"}}\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("scenario.yaml"),
        format!("images:\n  - reference: \"{reference}\"\n    oci: {}\nsteps:\n  - apply: {{file: cluster.yaml}}\n  - sql: {{query: CREATE EXTENSION vector, error: 'incompatible library'}}\n", image.display()),
    )
    .unwrap();
    let reports = scratch.path().join("reports");
    let o = bin()
        .args(["run", dir.to_str().unwrap(), "--no-progress", "--report-dir", reports.to_str().unwrap()])
        .output()
        .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("module-pg-major-mismatch") && out.contains("lib/vector.so"), "{out}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(reports.join("report.json")).unwrap()).unwrap();
    let img = &report["images"][0];
    assert_eq!(img["reference"], reference);
    assert_eq!(img["binaries"]["pg_majors"]["lib/vector.so"], 15, "{img:#}");
    assert!(
        img["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["code"] == "module-pg-major-mismatch" && f["severity"] == "error"),
        "{img:#}"
    );
}

/// pgvector whose magic block is patched (in the built copy) to say PostgreSQL 15.
#[test]
fn a_module_built_for_another_major_is_refused_as_such() {
    let scratch = tempfile::tempdir().unwrap();
    let image = pgvector_image(scratch.path(), magic_says_15);
    let report = scratch.path().join("report");
    let (code, out, cert) = certify(&image, &report);
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(cert["decided_by"]["kind"], "pg-major-mismatch", "{cert:#}");
    let reason = cert["decided_by"]["reason"].as_str().unwrap();
    assert!(reason.contains("lib/vector.so") && reason.contains("PostgreSQL 15"), "{reason}");
    // PostgreSQL itself refuses it too.
    let kinds: Vec<&str> = cert["findings"].as_array().unwrap().iter().filter_map(|f| f["kind"].as_str()).collect();
    assert!(kinds.contains(&"create-extension-failed"), "{kinds:?}");
    let summary = std::fs::read_to_string(report.join("summary.md")).unwrap();
    assert!(summary.contains("decided by: `pg-major-mismatch`"), "{summary}");
    let run: serde_json::Value = serde_json::from_slice(&std::fs::read(report.join("report.json")).unwrap()).unwrap();
    assert_eq!(run["certification"]["decided_by"]["kind"], "pg-major-mismatch");
}

#[test]
fn update_scripts_are_walked_and_a_wrong_one_fails() {
    let good = tempfile::tempdir().unwrap();
    let image = sql_only_image(
        good.path(),
        "CREATE OR REPLACE FUNCTION certdemo_version() RETURNS int LANGUAGE sql AS 'SELECT 11';\n",
    );
    let report = good.path().join("report");
    let (code, out, cert) = certify(&image, &report);
    assert_eq!(code, Some(0), "{out}");
    let e = &cert["inferred"]["extensions"][0];
    assert_eq!(e["create_version"], "1.0", "{cert:#}");
    assert_eq!(e["update_path"], serde_json::json!(["1.1"]));
    assert_eq!(cert["inferred"]["name"], "certdemo");
    assert_eq!(cert["inferred"]["reference"], "example.com/certdemo:1.1-18-trixie");
    let run: serde_json::Value = serde_json::from_slice(&std::fs::read(report.join("report.json")).unwrap()).unwrap();
    let titles: Vec<&str> =
        run["scenarios"][0]["steps"].as_array().unwrap().iter().map(|s| s["title"].as_str().unwrap()).collect();
    assert!(titles.contains(&"certdemo: ALTER EXTENSION UPDATE TO 1.1"), "{titles:#?}");
    assert!(titles.contains(&"certdemo: installed version is 1.0"), "{titles:#?}");

    let bad = tempfile::tempdir().unwrap();
    let image = sql_only_image(bad.path(), "CREATE OR REPLACE FUNCTION certdemo_version( RETURNS int;\n");
    let report = bad.path().join("report");
    let (code, out, cert) = certify(&image, &report);
    assert_eq!(code, Some(1), "{out}");
    let reasons = cert["reasons"].to_string();
    assert!(reasons.contains("ALTER EXTENSION UPDATE TO 1.1") && reasons.contains("syntax error"), "{reasons}");
}

/// The pgvector image passes against the minimal operand (which lacks pgvector) and is
/// refused against the standard one (which ships it): PostgreSQL would load the operand's
/// copy. Lint warns, the run's origin check reports it shadowed, the verdict is decided by
/// the shadowing.
#[test]
fn an_image_the_operand_shadows_is_refused() {
    let scratch = tempfile::tempdir().unwrap();
    let image = pgvector_image(scratch.path(), |_| {});
    let report = scratch.path().join("report");
    let (code, out, cert) = certify_with(&image, &report, &["--operand", "standard"]);
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(cert["verdict"], "fail", "{cert:#}");
    assert_eq!(cert["decided_by"]["kind"], "shadowed-by-operand", "{cert:#}");
    let reasons = cert["reasons"].to_string();
    assert!(reasons.contains("lint shadowed-by-operand"), "{reasons}");
    assert!(reasons.contains("would load the operand's copy"), "{reasons}");
    assert!(reasons.contains("shadowed"), "{reasons}");
    // The same image, linted: a warning, not an error (another operand may lack it).
    let o = bin().args(["image", "lint", image.to_str().unwrap(), "--operand", "standard"]).output().unwrap();
    let lint = text(&o);
    assert_eq!(o.status.code(), Some(0), "{lint}");
    assert!(lint.contains("warning") && lint.contains("shadowed-by-operand"), "{lint}");
    let o = bin().args(["image", "lint", image.to_str().unwrap(), "--operand", "full"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

/// A layout given a Cluster reference that names a digest cannot reach a container engine
/// (only a registry pull records a digest there): exit 2 before anything runs, saying what
/// to do instead.
#[test]
fn a_digest_reference_for_a_layout_is_refused_on_the_container_backend() {
    let scratch = tempfile::tempdir().unwrap();
    let image = sql_only_image(scratch.path(), "SELECT 1;\n");
    let report = scratch.path().join("report");
    let pinned = format!("example.com/certdemo@sha256:{}", "ab".repeat(32));
    let (code, out, _) = certify_with(&image, &report, &["--reference", &pinned, "--backend", "container"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains(&pinned) && out.contains("give --reference a tag"), "{out}");
    assert!(!report.join("report.json").exists(), "a run was started: {out}");
}

/// A passing certification of a SQL-only image in `scratch`, bundled: the image, the bundle,
/// the output and `certification.json`.
fn bundled_certification(scratch: &Path) -> (PathBuf, PathBuf, String, serde_json::Value) {
    let image = sql_only_image(scratch, "SELECT 1;");
    let bundle = scratch.join("certify.tar.gz");
    let (code, out, cert) = certify_with(&image, &scratch.join("report"), &["--bundle", bundle.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}");
    (image, bundle, out, cert)
}

#[test]
fn a_certification_is_bundled_with_its_generated_scenario() {
    let scratch = tempfile::tempdir().unwrap();
    let (_, bundle, out, cert) = bundled_certification(scratch.path());
    assert_eq!(cert["verdict"], "pass");
    assert!(out.contains(&format!("bundle: {}", bundle.display())), "{out}");
    let o = bin().args(["bundle", "show", bundle.to_str().unwrap(), "--files"]).output().unwrap();
    let shown = text(&o);
    assert_eq!(o.status.code(), Some(0), "{shown}");
    assert!(shown.contains(": certify ·") && shown.contains("verdict: pass (exit 0)"), "{shown}");
    assert!(shown.contains("image example.com/certdemo:1.1-18-trixie @ sha256:"), "{shown}");
    for f in ["reports/certification.json", "reports/report.json", "reports/scenario/scenario.yaml", "command.txt"] {
        assert!(shown.contains(&format!("  {f}\n")), "{f}:\n{shown}");
    }
}

/// `run --from-bundle` of a certify bundle: the certification again with the recorded
/// command; the same image reproduces the verdict, another build at the same path is named
/// as a different digest and verdict, and an image that is gone is invalid input.
#[test]
fn a_certify_bundle_is_rerun_against_its_recorded_digest() {
    let scratch = tempfile::tempdir().unwrap();
    let (image, bundle, _, cert) = bundled_certification(scratch.path());
    let digest = cert["manifest_digest"].as_str().unwrap().to_string();
    assert!(digest.starts_with("sha256:"), "{cert:#}");
    let rerun = |dir: &str| {
        let again = scratch.path().join(dir);
        let o = bin()
            .args(["run", "--from-bundle", bundle.to_str().unwrap(), "--no-progress"])
            .args(["--report-dir", again.to_str().unwrap()])
            .output()
            .unwrap();
        (o.status.code(), text(&o), again)
    };

    let (code, out, again) = rerun("again");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("image: {digest} as in the bundle")), "{out}");
    assert!(out.contains("verdict reproduced: pass as in the bundle"), "{out}");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(again.join("certification.json")).unwrap()).unwrap();
    assert_eq!(record["verdict"], "pass");
    assert_eq!(record["manifest_digest"], digest.as_str());

    // Another build where the image was: a different digest, and its verdict.
    std::fs::remove_dir_all(scratch.path().join("tree")).unwrap();
    std::fs::remove_dir_all(scratch.path().join("oci")).unwrap();
    let rebuilt = sql_only_image(scratch.path(), "CREATE OR REPLACE FUNCTION certdemo_version( RETURNS int;\n");
    assert_eq!(rebuilt, image);
    let (code, out, _) = rerun("changed");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("verdict: pass in the bundle, fail now"), "{out}");
    assert!(out.contains(&format!("image: {digest} in the bundle, sha256:")), "{out}");
    assert!(out.contains("verdict NOT reproduced (differences above)"), "{out}");

    // The image gone: exit 2, naming the digest the bundle recorded.
    std::fs::remove_dir_all(scratch.path().join("oci")).unwrap();
    let (code, out, _) = rerun("gone");
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("is not here; the bundle records only its digest") && out.contains(&digest), "{out}");
}
