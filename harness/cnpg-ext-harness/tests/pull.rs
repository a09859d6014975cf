//! Images pulled by reference from a real registry on 127.0.0.1: `run` with a reference-only
//! `images:` entry, `certify <reference>`, `image unpack|lint <reference>`, and the exit codes
//! of a bad reference (2) and an unusable registry (3).

mod common;

use std::path::{Path, PathBuf};

use cnpg_ext_testutil::registry::{free_port, multi_arch_layout, require, Registry, TOOLS};
use common::*;

const REPO: &str = "cloudnative-pg/pgvector";
const TAG: &str = "0.8.6-18-trixie";

/// The pgvector fixture image, built against the provisioned PostgreSQL, pushed to `reg`.
fn push_pgvector(reg: &Registry, scratch: &Path) -> (String, String) {
    let pg = cnpg_ext_harness::run::locate_postgres(None).expect("PostgreSQL 18");
    let tree = scratch.join("tree");
    let built = cnpg_ext_images::fixture::build_fixture(&repo().join("fixtures/pgvector"), &pg.fixture_target(), &tree)
        .unwrap();
    let mut opts = cnpg_ext_images::BuildOptions::new(format!("{}/{REPO}:{TAG}", reg.addr));
    opts.labels = built.labels;
    let layout = scratch.join("oci");
    let digest = cnpg_ext_images::build_layout(&tree, &opts, &layout).unwrap().manifest_digest;
    reg.push(&layout, REPO, TAG);
    (format!("{}/{REPO}:{TAG}", reg.addr), digest)
}

fn harness(args: &[&str], insecure: Option<&str>) -> (Option<i32>, String) {
    let mut c = bin();
    if let Some(i) = insecure {
        c.args(["--insecure-registry", i]);
    }
    let o = c.args(args).env_remove("REGISTRY_AUTH_FILE").output().unwrap();
    (o.status.code(), text(&o))
}

/// The seed scenario `single-extension`, its image named by `reference` alone.
fn pulled_scenario(reference: &str) -> (tempfile::TempDir, PathBuf) {
    let (root, dir) = scenario_copy("single-extension");
    let seed = "ghcr.io/cloudnative-pg/pgvector:0.8.6-18-trixie";
    let scenario = std::fs::read_to_string(dir.join("scenario.yaml")).unwrap();
    let scenario = scenario.replace(
        &format!("  - reference: {seed}\n    fixture: ../../fixtures/pgvector\n"),
        &format!("  - reference: {reference}\n"),
    );
    assert!(scenario.contains(reference) && !scenario.contains("fixture:"), "{scenario}");
    std::fs::write(dir.join("scenario.yaml"), scenario).unwrap();
    let cluster = std::fs::read_to_string(dir.join("cluster.yaml")).unwrap().replace(seed, reference);
    std::fs::write(dir.join("cluster.yaml"), cluster).unwrap();
    (root, dir)
}

#[test]
fn run_certify_and_image_commands_pull_by_reference() {
    let Some(()) = require(TOOLS) else { return };
    let reg = Registry::start(None);
    let scratch = tempfile::tempdir().unwrap();
    let (reference, _) = push_pgvector(&reg, scratch.path());

    // `run`: a scenario whose only source for the image is its reference.
    let (_root, dir) = pulled_scenario(&reference);
    let (code, out) = run_scenario(&dir, "local", scratch.path(), &reg.addr);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("PASS single-extension"), "{out}");

    // `image unpack|lint <reference>`.
    let dest = scratch.path().join("rootfs");
    let (code, out) = harness(&["image", "unpack", &reference, dest.to_str().unwrap()], Some(&reg.addr));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("pulled {reference}")), "{out}");
    assert!(dest.join("share/extension/vector.control").is_file() || walk_has(&dest, "vector.control"), "{out}");
    let (code, out) = harness(&["image", "lint", &reference], Some(&reg.addr));
    assert!(code == Some(0) || code == Some(1), "lint ran on the pulled image: {out}");
    assert!(out.contains("pulled"), "{out}");

    // `certify <reference>`: the generated Cluster names the reference.
    let cert_dir = scratch.path().join("certify");
    let (code, out) =
        harness(&["certify", &reference, "--no-progress", "--report-dir", cert_dir.to_str().unwrap()], Some(&reg.addr));
    assert_eq!(code, Some(0), "{out}");
    let cluster = std::fs::read_to_string(cert_dir.join("scenario/cluster.yaml")).unwrap();
    assert!(cluster.contains(&reference), "{cluster}");
}

fn walk_has(dir: &Path, name: &str) -> bool {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten().any(|e| {
                let p = e.path();
                e.file_name() == name || (p.is_dir() && !p.is_symlink() && walk_has(&p, name))
            })
        })
        .unwrap_or(false)
}

#[test]
fn bad_references_exit_2_and_unusable_registries_exit_3() {
    let Some(()) = require(TOOLS) else { return };
    let reg = Registry::start(None);
    let scratch = tempfile::tempdir().unwrap();
    let dest = scratch.path().join("d");
    let d = dest.to_str().unwrap();

    let unknown = format!("{}/ext/none:1", reg.addr);
    let (code, out) = harness(&["image", "unpack", &unknown, d], Some(&reg.addr));
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains(&unknown) && out.contains("MANIFEST_UNKNOWN"), "{out}");

    // Plain HTTP without --insecure-registry: refused, and the hint says what to pass.
    let (code, out) = harness(&["image", "lint", &unknown], None);
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains(&format!("--insecure-registry {}", reg.addr)), "{out}");

    let gone = format!("127.0.0.1:{}", free_port());
    let (code, out) = harness(&["certify", &format!("{gone}/ext/x:1"), "--report-dir", d], Some(&gone));
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains(&gone), "{out}");

    // A reference-only entry must name its registry: file, line and field.
    let (_root, dir) = pulled_scenario("pgvector:1");
    let (code, out) = harness(&["list", dir.to_str().unwrap()], None);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("scenario.yaml:") && out.contains("images[0].reference") && out.contains("no registry host"),
        "{out}"
    );
}

/// Set to make a missing or unusable container engine a failure (as `CI=true` does).
const ENGINE_REQUIRED: &str = "CNPG_EXT_HARNESS_REQUIRE_ENGINE";

/// podman is on `PATH` (these tests drive it directly); else says why the test cannot run,
/// by the project's one skip rule.
fn podman_here() -> Option<()> {
    let on_path =
        |p: &str| std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).any(|d| d.join(p).is_file());
    if on_path("podman") {
        return Some(());
    }
    common::cannot_run("podman is not installed", Some(ENGINE_REQUIRED));
    None
}

/// `run <dir> --backend <backend>` in a fresh work directory, reports under `scratch/report`.
fn run_scenario(dir: &Path, backend: &str, scratch: &Path, registry: &str) -> (Option<i32>, String) {
    let work = workdir_parent(&format!("pull-{backend}"));
    let report = scratch.join("report");
    harness(
        &[
            "run",
            dir.to_str().unwrap(),
            "--backend",
            backend,
            "--no-progress",
            "--workdir",
            work.path().to_str().unwrap(),
            "--report-dir",
            report.to_str().unwrap(),
        ],
        Some(registry),
    )
}

/// The container backend mounts a pulled image named by its digest: the engine pulls it from
/// the same registry (`--tls-verify=false` for an `--insecure-registry`).
#[test]
fn container_backend_mounts_a_pinned_pulled_image() {
    let Some(()) = require(TOOLS) else { return };
    let Some(()) = podman_here() else { return };
    let reg = Registry::start(None);
    let scratch = tempfile::tempdir().unwrap();
    let (_, digest) = push_pgvector(&reg, scratch.path());
    let pinned = format!("{}/{REPO}@{digest}", reg.addr);
    let (_root, dir) = pulled_scenario(&pinned);
    let (code, out) = run_scenario(&dir, "container", scratch.path(), &reg.addr);
    if code == Some(3) {
        common::cannot_run(&format!("the container engine is not usable here (exit 3):\n{out}"), Some(ENGINE_REQUIRED));
        return;
    }
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("PASS single-extension"), "{out}");
}

/// The config digest of the one image of an OCI layout (an engine's id for that image).
fn config_digest(layout: &Path) -> String {
    let read = |p: PathBuf| serde_json::from_slice::<serde_json::Value>(&std::fs::read(p).unwrap()).unwrap();
    let blob = |d: &str| layout.join("blobs/sha256").join(d.trim_start_matches("sha256:"));
    let index = read(layout.join("index.json"));
    let manifest = read(blob(index["manifests"][0]["digest"].as_str().unwrap()));
    manifest["config"]["digest"].as_str().unwrap().to_string()
}

/// `certify HOST/REPO@sha256:… --backend container`: the scenario names the pin alone, the
/// engine pulls exactly that manifest, and the image it mounts is the one certified — while
/// the repository's tag has moved on to another image, which a mount by name would get.
#[test]
fn certify_by_digest_on_the_container_backend_mounts_the_pinned_image() {
    let Some(()) = require(TOOLS) else { return };
    let Some(()) = podman_here() else { return };
    let reg = Registry::start(None);
    let scratch = tempfile::tempdir().unwrap();
    let (_, pinned_digest) = push_pgvector(&reg, scratch.path());
    let pinned_config = config_digest(&scratch.path().join("oci"));
    // The same tag, pushed again with one more file: the tag no longer names the pin.
    std::fs::create_dir_all(scratch.path().join("tree/licenses")).unwrap();
    std::fs::write(scratch.path().join("tree/licenses/NOTICE"), "a later image\n").unwrap();
    let mut opts = cnpg_ext_images::BuildOptions::new(format!("{}/{REPO}:{TAG}", reg.addr));
    opts.labels = cnpg_ext_images::inspect(&scratch.path().join("oci"), None).unwrap().config.labels;
    let later = scratch.path().join("oci-later");
    let later_digest =
        cnpg_ext_images::build_layout(&scratch.path().join("tree"), &opts, &later).unwrap().manifest_digest;
    reg.push(&later, REPO, TAG);
    assert_ne!(later_digest, pinned_digest);
    let later_config = config_digest(&later);
    assert_ne!(later_config, pinned_config);

    let pinned = format!("{}/{REPO}@{pinned_digest}", reg.addr);
    let cert = scratch.path().join("certify");
    let (code, out) = harness(
        &["certify", &pinned, "--backend", "container", "--no-progress", "--report-dir", cert.to_str().unwrap()],
        Some(&reg.addr),
    );
    if code == Some(3) {
        common::cannot_run(&format!("the container engine is not usable here (exit 3):\n{out}"), Some(ENGINE_REQUIRED));
        return;
    }
    assert_eq!(code, Some(0), "{out}");
    eprintln!("{out}");
    let read = |f: &str| std::fs::read_to_string(cert.join(f)).unwrap();
    let certification: serde_json::Value = serde_json::from_str(&read("certification.json")).unwrap();
    assert_eq!(certification["verdict"], "pass", "{certification:#}");
    assert_eq!(certification["run"]["backend"], "container", "{certification:#}");
    assert_eq!(certification["run"]["failed"], 0, "{certification:#}");
    assert!(certification["run"]["passed"].as_u64().unwrap() >= 1, "{certification:#}");
    // The scenario names the pin alone (no layout to load), the Cluster mounts the pin.
    let scenario = read("scenario/scenario.yaml");
    assert!(scenario.contains(&format!("reference: \"{pinned}\"")) && !scenario.contains("oci:"), "{scenario}");
    assert!(read("scenario/cluster.yaml").contains(&pinned));
    // What the engine held under the pin, and so mounted: the pinned image, not the tag's.
    let report: serde_json::Value = serde_json::from_str(&read("report.json")).unwrap();
    let images = report["images"].as_array().unwrap();
    assert_eq!(images.len(), 1, "{report:#}");
    assert_eq!(images[0]["reference"], pinned.as_str());
    assert_eq!(images[0]["manifest_digest"], pinned_digest.as_str());
    assert_eq!(images[0]["engine_image_id"], pinned_config.as_str(), "later image: {later_config}");
    // The name the run pulled into the engine goes with the run (podman resolves a digest
    // reference to any image with that digest, e.g. one built from the same fixture: the
    // name itself must be gone from the repo digests).
    let flags = std::env::var("CNPG_EXT_HARNESS_ENGINE_FLAGS").unwrap_or_default();
    let names = std::process::Command::new("podman")
        .args(flags.split_whitespace())
        .args(["image", "inspect", "--format", "{{json .RepoDigests}}", &pinned])
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&names.stdout);
    assert!(!names.contains(&pinned), "the run left {pinned} in podman: {names}");
}

#[test]
fn image_unpack_picks_the_platform_asked_for_from_a_pulled_index() {
    let Some(()) = require(TOOLS) else { return };
    let reg = Registry::start(None);
    let scratch = tempfile::tempdir().unwrap();
    let host = cnpg_ext_images::host_arch();
    let other = if host == "arm64" { "s390x" } else { "arm64" };
    reg.push(&multi_arch_layout(scratch.path(), "multi", &[other, &host]), "ext/multi", "1");
    let reference = format!("{}/ext/multi:1", reg.addr);
    // Each arch's image holds `lib/multi-<arch>.data` with its arch name as content.
    for (platform, arch) in [(None, host.as_str()), (Some(format!("linux/{other}")), other)] {
        let dest = scratch.path().join(format!("rootfs-{arch}"));
        let mut args = vec!["image".to_string(), "unpack".into(), reference.clone(), dest.display().to_string()];
        if let Some(p) = platform {
            args.extend(["--platform".into(), p]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out) = harness(&args, Some(&reg.addr));
        assert_eq!(code, Some(0), "{out}");
        assert!(out.contains(&format!("linux/{arch}")), "{out}");
        let payload = std::fs::read(dest.join(format!("lib/multi-{arch}.data"))).unwrap();
        assert_eq!(payload, arch.as_bytes(), "{out}");
    }
}

/// A matrix cell is a child harness process: `--insecure-registry` reaches it.
#[test]
fn matrix_cells_pull_with_the_insecure_registry_of_the_matrix() {
    let Some(()) = require(TOOLS) else { return };
    let reg = Registry::start(None);
    let scratch = tempfile::tempdir().unwrap();
    let (reference, _) = push_pgvector(&reg, scratch.path());
    let (_root, dir) = pulled_scenario(&reference);
    let matrix = scratch.path().join("matrix.yaml");
    std::fs::write(
        &matrix,
        format!(
            "description: pulled image\naxes:\n  backend: [local]\n  postgres: [wheel]\n  cnpg: [\"1.28.2\"]\n  scenarios:\n    - {{name: pulled, paths: [{}]}}\n",
            dir.display()
        ),
    )
    .unwrap();
    let report = scratch.path().join("matrix-report");
    let (code, out) =
        harness(&["matrix", matrix.to_str().unwrap(), "--report-dir", report.to_str().unwrap()], Some(&reg.addr));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("1 passed"), "{out}");
}
