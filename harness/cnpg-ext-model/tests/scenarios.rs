//! Every scenario directory of the repository loads, and the plan derived from each of its
//! Cluster manifests is pinned by a snapshot (under `snapshots/plans/`).

use std::path::{Path, PathBuf};

use cnpg_ext_model::{ClusterPlan, CnpgVersion, PlanOptions, Scenario};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

#[rstest::rstest]
fn derived_plans(#[files("../../scenarios/*/scenario.yaml")] file: PathBuf) {
    let s = Scenario::load(&file, CnpgVersion::DEFAULT).unwrap_or_else(|e| panic!("{e}"));
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(repo().join("snapshots/plans"));
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| {
        for c in s.clusters() {
            let plan = ClusterPlan::derive(&c.cluster, &PlanOptions::default());
            let name = c.file.file_stem().unwrap().to_string_lossy().into_owned();
            insta::assert_yaml_snapshot!(format!("{}__{}", s.id, name), plan);
        }
    });
}

#[test]
fn volume_names_differ_by_release() {
    let file = repo().join("scenarios/single-extension/scenario.yaml");
    let s = Scenario::load(&file, CnpgVersion::DEFAULT).unwrap();
    let c = s.clusters().next().unwrap();
    let old = ClusterPlan::derive(&c.cluster, &PlanOptions { cnpg: CnpgVersion::new(1, 27, 0), ..Default::default() });
    let new = ClusterPlan::derive(&c.cluster, &PlanOptions::default());
    assert_eq!(old.extensions[0].volume_name, "pgvector");
    assert_eq!(new.extensions[0].volume_name, "ext-pgvector");
}
