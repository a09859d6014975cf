//! The operator's own code judges the model: for every scenario manifest, every Cluster
//! example in the README and the oracle's corpus of edge cases, at every release the oracle
//! builds, the harness's derivation must equal what CloudNativePG's packages derive
//! (`oracle/cnpg-plan`, see `oracle/README.md`), field by field.
//!
//! Compared: acceptance (the oracle runs only the operator's exported code, so a refusal
//! that comes from the CRD schema, the admission webhook or Kubernetes is the harness's
//! alone and is not a disagreement), then for inputs both accept the resolved extensions,
//! the GUCs, volumes, mounts and the postmaster's environment.
//!
//! Needs Go and `oracle/`; without them the test is skipped, except under `CI=true` or
//! `CNPG_EXT_HARNESS_REQUIRE_ORACLE=1`, where it fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use cnpg_ext_model::derivation::{comparable, derive_documents, load_documents};
use cnpg_ext_model::CnpgVersion;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// One comparison unit: files read together (a scenario's manifests, so its catalogs
/// resolve), with the inherited environment the oracle is given.
struct Group {
    name: String,
    files: Vec<PathBuf>,
    inherited: BTreeMap<String, String>,
}

fn groups(tmp: &Path) -> Vec<Group> {
    let root = repo();
    let mut out = Vec::new();
    let yaml = |dir: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml") && !p.ends_with("scenario.yaml"))
            .collect();
        v.sort();
        v
    };
    let mut dirs: Vec<PathBuf> =
        std::fs::read_dir(root.join("scenarios")).unwrap().flatten().map(|e| e.path()).collect();
    dirs.sort();
    for d in dirs.into_iter().filter(|d| d.join("scenario.yaml").is_file()) {
        // Each file alone too: a scenario applies them one after another.
        for f in yaml(&d) {
            out.push(Group {
                name: format!(
                    "scenarios/{}/{}",
                    d.file_name().unwrap().to_string_lossy(),
                    f.file_name().unwrap().to_string_lossy()
                ),
                files: vec![f],
                inherited: BTreeMap::new(),
            });
        }
    }
    // README examples: every ```yaml block holding a Cluster.
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    for (i, block) in readme.split("```yaml").skip(1).enumerate() {
        let body = block.split("```").next().unwrap_or("");
        if body.contains("kind: Cluster") && body.contains("apiVersion: postgresql.cnpg.io/v1") {
            let p = tmp.join(format!("readme-{i}.yaml"));
            std::fs::write(&p, body).unwrap();
            out.push(Group { name: format!("README.md example {i}"), files: vec![p], inherited: BTreeMap::new() });
        }
    }
    // The edge-case corpus, with its inherited environment (`<name>.args`).
    for f in yaml(&root.join("oracle/testdata")) {
        let mut inherited = BTreeMap::new();
        if let Ok(args) = std::fs::read_to_string(f.with_extension("args")) {
            for kv in args.lines().filter(|l| l.contains('=')) {
                let (k, v) = kv.split_once('=').unwrap();
                inherited.insert(k.to_string(), v.to_string());
            }
        }
        out.push(Group {
            name: format!("oracle/testdata/{}", f.file_name().unwrap().to_string_lossy()),
            files: vec![f],
            inherited,
        });
    }
    out
}

fn oracle(cnpg: &str, g: &Group) -> Result<Value, String> {
    let mut cmd = Command::new(repo().join("oracle/cnpg-plan"));
    cmd.args(["--cnpg-version", cnpg]);
    for (k, v) in &g.inherited {
        cmd.arg("--inherited-env").arg(format!("{k}={v}"));
    }
    cmd.args(&g.files);
    let out = cmd.output().map_err(|e| format!("cannot run oracle/cnpg-plan: {e}"))?;
    if !out.status.success() {
        return Err(format!("oracle exit {:?}: {}", out.status.code(), String::from_utf8_lossy(&out.stderr)));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("oracle JSON: {e}"))
}

fn compare(version: &str, group: &str, ours: &Value, theirs: &Value, failures: &mut Vec<String>) -> usize {
    let key = |c: &Value| format!("{}/{}", c["namespace"].as_str().unwrap_or(""), c["cluster"].as_str().unwrap_or(""));
    let ours: BTreeMap<String, &Value> = ours["clusters"].as_array().unwrap().iter().map(|c| (key(c), c)).collect();
    let mut compared = 0;
    for t in theirs["clusters"].as_array().unwrap() {
        let name = key(t);
        let Some(o) = ours.get(&name) else {
            failures.push(format!("{version} {group} {name}: the oracle derives this Cluster, the harness does not"));
            continue;
        };
        compared += 1;
        let fail = |field: &str, h: &Value, op: &Value| {
            format!(
                "CloudNativePG {version}, {group}, Cluster {name}, {field}:\n    harness: {}\n    operator: {}",
                h, op
            )
        };
        let their_ok = t["accepted"].as_bool().unwrap_or(false);
        let our_ok = o["accepted"].as_bool().unwrap_or(false);
        // Refusals the oracle cannot see: CRD schema, webhook, Kubernetes, harness.
        let admission_only = o["rejections"].as_array().is_some_and(|r| r.iter().all(|r| r["source"] != "operator"));
        match (our_ok, their_ok) {
            (true, true) => {}
            (false, false) => continue,
            (false, true) if admission_only => continue,
            _ => {
                failures.push(fail("accepted", &o["rejections"], &t["rejections"]));
                continue;
            }
        }
        for field in ["extensions", "parameters", "volumes", "mounts", "environment"] {
            let (h, op) = (comparable(&o[field]), comparable(&t[field]));
            if h != op {
                failures.push(fail(field, &h, &op));
            }
        }
    }
    compared
}

#[test]
fn the_model_agrees_with_the_operator_at_every_release() {
    let root = repo();
    let wrapper = root.join("oracle/cnpg-plan");
    let go = Command::new("go").arg("version").output().is_ok_and(|o| o.status.success());
    if !wrapper.is_file() || !go {
        let why = if go {
            "oracle/cnpg-plan is missing"
        } else {
            "Go is not installed (the oracle is built from the operator's Go module)"
        };
        cnpg_ext_testutil::cannot_run(why, Some("CNPG_EXT_HARNESS_REQUIRE_ORACLE"));
        return;
    }
    let versions = Command::new(&wrapper).arg("--list-versions").output().expect("oracle --list-versions");
    assert!(versions.status.success(), "oracle --list-versions: {}", String::from_utf8_lossy(&versions.stderr));
    let versions: Vec<String> = String::from_utf8_lossy(&versions.stdout).lines().map(str::to_string).collect();
    assert!(!versions.is_empty(), "the oracle supports no release");
    let tmp = tempfile::tempdir().unwrap();
    let groups = groups(tmp.path());
    let started = Instant::now();
    // One thread per release (each oracle run is a separate Go process).
    let per_version: Vec<(Vec<String>, usize, usize)> = std::thread::scope(|scope| {
        let handles: Vec<_> = versions
            .iter()
            .map(|version| {
                let groups = &groups;
                scope.spawn(move || {
                    let cnpg: CnpgVersion = version.parse().unwrap();
                    let (mut failures, mut compared, mut runs) = (Vec::new(), 0usize, 0usize);
                    for g in groups {
                        let paths: Vec<&Path> = g.files.iter().map(PathBuf::as_path).collect();
                        let docs = load_documents(&paths).unwrap_or_else(|e| panic!("{}: {e}", g.name));
                        if !docs.iter().any(|(_, d)| matches!(d, cnpg_ext_model::Manifest::Cluster(_))) {
                            continue;
                        }
                        let theirs = match oracle(version, g) {
                            Ok(v) => v,
                            Err(e) => {
                                failures.push(format!("CloudNativePG {version}, {}: {e}", g.name));
                                continue;
                            }
                        };
                        runs += 1;
                        let ours = derive_documents(&docs, cnpg, &g.inherited);
                        compared += compare(version, &g.name, &ours, &theirs, &mut failures);
                    }
                    (failures, compared, runs)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a release's comparison panicked")).collect()
    });
    let mut failures: Vec<String> = Vec::new();
    let (mut compared, mut runs) = (0usize, 0usize);
    for (f, c, r) in per_version {
        failures.extend(f);
        compared += c;
        runs += r;
    }
    eprintln!(
        "differential: {} releases × {} inputs: {runs} oracle runs, {compared} Clusters compared in {:.1} s",
        versions.len(),
        groups.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(compared > 0, "nothing was compared");
    assert!(failures.is_empty(), "{} disagreements with the operator:\n{}", failures.len(), failures.join("\n"));
}
