//! The CI recipe users copy (examples/ci/): the workflow runs `examples/ci/nightly.sh`, which
//! is run here night after night on the local backend (the kind matrix it names is loaded and
//! its manifests rendered, never applied: kind is not available here). `.ci/run` lints the
//! workflow with actionlint.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn nightly(out: &Path, matrix: &Path, previous: &Path) -> std::process::Output {
    Command::new(repo().join("examples/ci/nightly.sh"))
        .current_dir(repo())
        .env("HARNESS", env!("CARGO_BIN_EXE_cnpg-ext-harness"))
        .env("MATRIX", matrix)
        .env("OUT", out)
        .env("PREVIOUS", previous)
        .env("RETRIES", "1")
        .env_remove("PG_CONFIG")
        .output()
        .unwrap()
}

#[test]
fn the_workflow_runs_the_script_with_every_variable_it_reads() {
    let wf = std::fs::read_to_string(repo().join("examples/ci/nightly.yml")).unwrap();
    let script = std::fs::read_to_string(repo().join("examples/ci/nightly.sh")).unwrap();
    assert!(wf.contains("run: examples/ci/nightly.sh"), "the workflow must run the tested script");
    assert!(wf.contains("cargo build --release --locked -p cnpg-ext-harness"));
    assert!(wf.contains("HARNESS: target/release/cnpg-ext-harness"));
    for var in ["HARNESS", "MATRIX", "OUT", "PREVIOUS", "RETRIES"] {
        assert!(script.contains(&format!("{var}=${{{var}:-")), "nightly.sh reads {var}");
        assert!(wf.contains(&format!("      {var}: ")), "the workflow sets {var}");
    }
    // What the workflow uploads and posts is what the script writes.
    assert!(wf.contains("path: out/nightly.tar.gz") && script.contains("--bundle \"$OUT/nightly.tar.gz\""));
    assert!(wf.contains("out/comment.md") && script.contains("> \"$OUT/comment.md\""));
    assert!(wf.contains("--dir previous") && wf.contains("PREVIOUS: previous/nightly.tar.gz"));
}

#[test]
fn the_nightly_matrix_is_valid_and_renders_for_kind() {
    let file = repo().join("examples/ci/nightly-matrix.yaml");
    let m = cnpg_ext_harness::matrix::Matrix::load(&file).unwrap();
    let ids: Vec<&str> = m.cells.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids.len(), 8, "2 Kubernetes × 2 CNPG × 2 image builds: {ids:?}");
    assert!(ids.contains(&"kind_k8s-1.36_wheel_cnpg-1.30.1_img-upstream_pgvector"), "{ids:?}");
    let upstream = m.cells.iter().find(|c| c.image.as_ref().is_some_and(|i| i.name == "upstream")).unwrap();
    assert_eq!(
        upstream.image.as_ref().unwrap().substitute["ghcr.io/cloudnative-pg/pgvector:0.8.6-18-trixie"],
        "ghcr.io/cloudnative-pg/pgvector:0.8.1-18-trixie"
    );
    // The kind manifests of its scenarios, rendered (nothing contacted).
    let out = tempfile::tempdir().unwrap();
    let mut args = vec!["run".to_string()];
    args.extend(upstream.scenarios.paths.iter().cloned());
    args.extend(["--backend", "kind", "--dry-run", "--cnpg-version", "1.28.4", "--report-dir"].map(String::from));
    args.push(out.path().display().to_string());
    let bundle = out.path().join("rendered.tar.gz");
    args.extend(["--bundle".to_string(), bundle.display().to_string()]);
    let o = bin().args(&args).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let rendered = walk(out.path());
    assert!(rendered.iter().any(|f| f.contains("single-extension")), "{rendered:?}");
    // The rendering as a bundle: the manifests that would be applied, the scenarios.
    let o = bin().args(["bundle", "show", bundle.to_str().unwrap(), "--files"]).output().unwrap();
    let shown = text(&o);
    assert_eq!(o.status.code(), Some(0), "{shown}");
    assert!(
        shown.contains("verdict: rendered (exit 0)") && shown.contains("backend: kind (rendered, --dry-run)"),
        "{shown}"
    );
    assert!(
        shown.contains("  reports/manifests/") && shown.contains("  scenarios/single-extension/cluster.yaml"),
        "{shown}"
    );
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path().display().to_string());
        }
    }
    out
}

#[test]
fn two_nights_of_the_script_bundle_diff_and_catch_a_regression() {
    let (_root, dir) = scenario_copy("custom-path");
    let scratch = tempfile::tempdir().unwrap();
    let matrix = scratch.path().join("m.yaml");
    std::fs::write(&matrix, format!("axes:\n  backend: [local]\n  scenarios: [{}]\n", dir.display())).unwrap();

    // Night 1: nothing to compare with.
    let night1 = scratch.path().join("night1");
    let o = nightly(&night1, &matrix, &scratch.path().join("previous/nightly.tar.gz"));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    for f in ["nightly.tar.gz", "bundle.txt", "diff.md", "comment.md", "matrix/report.json", "matrix/index.html"] {
        assert!(night1.join(f).is_file(), "{f}");
    }
    assert!(std::fs::read_to_string(night1.join("diff.md")).unwrap().contains("No earlier bundle"));
    let shown = std::fs::read_to_string(night1.join("bundle.txt")).unwrap();
    assert!(shown.contains(": matrix ·") && shown.contains("verdict: passed (exit 0)"), "{shown}");

    // Night 2: the extension changed behaviour; the diff against night 1 says so.
    let f = dir.join("scenario.yaml");
    std::fs::write(&f, std::fs::read_to_string(&f).unwrap().replace("hello from a custom path", "hello")).unwrap();
    let night2 = scratch.path().join("night2");
    let o = nightly(&night2, &matrix, &night1.join("nightly.tar.gz"));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let diff = std::fs::read_to_string(night2.join("diff.md")).unwrap();
    assert!(diff.contains("❌ regression"), "{diff}");
    assert!(diff.contains("| `local_wheel_cnpg-1.30.1_custom-path / custom-path` | passed ("), "{diff}");
    assert!(diff.contains("failed `assertion`"), "{diff}");
    let comment = std::fs::read_to_string(night2.join("comment.md")).unwrap();
    assert!(comment.starts_with("## cnpg-ext-harness matrix:") && comment.contains("❌ regression"), "{comment}");
}
