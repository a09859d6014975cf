//! `plan`: a scenario or plain manifest files; `--format json` in the oracle's shape, checked
//! against the oracle's committed expectations (`oracle/testdata/expected/`, produced by the
//! operator's own code), so this runs without Go.

mod common;

use cnpg_ext_model::derivation::comparable;
use common::*;
use serde_json::Value;

#[rstest::rstest]
#[case("1.30.0", "basic")]
#[case("1.30.0", "user-params")]
#[case("1.30.0", "catalog")]
#[case("1.27.0", "basic")]
#[case("1.27.0", "user-params")]
fn json_matches_the_operator(#[case] version: &str, #[case] name: &str) {
    let root = repo();
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join(format!("oracle/testdata/expected/{version}/{name}.json"))).unwrap(),
    )
    .unwrap();
    let out = run(&["plan", "--cnpg-version", version, "--format", "json", &format!("oracle/testdata/{name}.yaml")]);
    assert!(out.status.success(), "{}", text(&out));
    let ours: Value = serde_json::from_slice(&out.stdout).unwrap();
    let theirs = expected["clusters"].as_array().unwrap();
    let mine = ours["clusters"].as_array().unwrap();
    assert_eq!(mine.len(), theirs.len());
    for (m, t) in mine.iter().zip(theirs) {
        assert_eq!(m["cluster"], t["cluster"]);
        if !t["accepted"].as_bool().unwrap() {
            assert_eq!(m["accepted"], false, "{m}");
            continue;
        }
        for field in ["accepted", "extensions", "parameters", "volumes", "mounts", "environment"] {
            assert_eq!(
                comparable(&m[field]),
                comparable(&t[field]),
                "{name} at {version}: {field} of {}",
                t["cluster"]
            );
        }
    }
}

#[test]
fn a_plain_manifest_with_a_refused_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.yaml");
    std::fs::write(
        &file,
        "apiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata: {name: c}\nspec:\n  postgresql:\n    extensions:\n      - name: x\n        image: {reference: example.com/x:1}\n        extension_control_path: [share, share]\n",
    )
    .unwrap();
    let out = run(&["plan", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("extension_control_path[1]"), "{}", text(&out));
    let out = run(&["plan", "--format", "json", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["clusters"][0]["accepted"], false);
    assert_eq!(v["clusters"][0]["rejections"][0]["source"], "webhook");
}

#[test]
fn a_scenario_directory_still_works() {
    let out = run(&["plan", "scenarios/single-extension"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("/extensions/pgvector/share"), "{}", text(&out));
}
