//! Bad input is rejected with the file, the line and the field.

use std::path::Path;

use cnpg_ext_model::{CnpgVersion, InputError, Scenario};

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

const CLUSTER: &str = "apiVersion: postgresql.cnpg.io/v1
kind: Cluster
metadata:
  name: c
spec:
  instances: 1
  postgresql:
    extensions:
      - name: NAME
        image:
          reference: example/x:1
        PATHS
";

fn load(scenario: &str, cluster: &str) -> Result<Scenario, InputError> {
    load_at(scenario, cluster, CnpgVersion::DEFAULT)
}

fn load_at(scenario: &str, cluster: &str, cnpg: CnpgVersion) -> Result<Scenario, InputError> {
    let dir = tempfile::Builder::new().prefix("scn").tempdir().unwrap();
    std::fs::create_dir(dir.path().join("fx")).unwrap();
    write(dir.path(), "scenario.yaml", scenario);
    write(dir.path(), "cluster.yaml", cluster);
    Scenario::load(dir.path(), cnpg)
}

fn v(s: &str) -> CnpgVersion {
    s.parse().unwrap()
}

const SCENARIO: &str = "images:
  - reference: example/x:1
    fixture: fx
steps:
  - apply: {file: cluster.yaml}
";

fn cluster(name: &str, paths: &str) -> String {
    CLUSTER.replace("NAME", name).replace("PATHS", paths)
}

#[test]
fn a_valid_scenario_loads() {
    let s = load(SCENARIO, &cluster("x", "")).unwrap();
    assert_eq!(s.steps.len(), 1);
}

#[test]
fn unknown_step_names_line_and_variant() {
    let e = load(&format!("{SCENARIO}  - sleep: {{seconds: 1}}\n"), &cluster("x", "")).unwrap_err();
    assert_eq!(e.at.line, Some(6), "{e}");
    assert_eq!(e.field, "sleep", "{e}");
    assert!(e.to_string().contains("scenario.yaml:6"), "{e}");
}

#[test]
fn unknown_field_in_a_step() {
    let e = load(&format!("{SCENARIO}  - sql: {{query: SELECT 1, rowz: []}}\n"), &cluster("x", "")).unwrap_err();
    assert_eq!(e.field, "rowz", "{e}");
    assert_eq!(e.at.line, Some(6), "{e}");
}

#[test]
fn rows_and_error_together() {
    let e =
        load(&format!("{SCENARIO}  - sql: {{query: SELECT 1, rows: [], error: x}}\n"), &cluster("x", "")).unwrap_err();
    assert_eq!(e.field, "steps[1].sql");
    assert_eq!(e.at.line, Some(6));
}

#[test]
fn missing_fixture_directory() {
    let e = load(&SCENARIO.replace("fixture: fx", "fixture: nope"), &cluster("x", "")).unwrap_err();
    assert_eq!(e.field, "images[0].fixture");
    assert!(e.message.contains("does not exist"));
}

#[test]
fn image_not_listed_in_scenario() {
    let e = load(SCENARIO, &cluster("x", "").replace("example/x:1", "example/other:2")).unwrap_err();
    assert_eq!(e.field, "spec.postgresql.extensions[0].image.reference");
    assert_eq!(e.at.line, Some(9), "{e}");
}

#[rstest::rstest]
#[case::uppercase("Vector", "", "spec.postgresql.extensions[0].name")]
#[case::dot("a.b", "", "spec.postgresql.extensions[0].name")]
#[case::duplicate_path(
    "x",
    "extension_control_path: [share, share]",
    "spec.postgresql.extensions[0].extension_control_path[1]"
)]
#[case::duplicate_ld("x", "ld_library_path: [a, a]", "spec.postgresql.extensions[0].ld_library_path[1]")]
#[case::duplicate_bin("x", "bin_path: [bin, bin]", "spec.postgresql.extensions[0].bin_path[1]")]
#[case::reserved_env("x", "env: [{name: PGDATA, value: x}]", "spec.postgresql.extensions[0].env[0].name")]
#[case::dedicated_env("x", "env: [{name: PATH, value: x}]", "spec.postgresql.extensions[0].env[0].name")]
#[case::placeholder("x", "env: [{name: A, value: '${nope}'}]", "spec.postgresql.extensions[0].env[0].value")]
#[case::sixty("a123456789b123456789c123456789d123456789e123456789f123456789", "", "spec.postgresql.extensions[0].name")]
#[case::dotdot("x", "dynamic_library_path: [lib/../../etc]", "spec.postgresql.extensions[0].dynamic_library_path[0]")]
#[case::empty("x", "ld_library_path: ['']", "spec.postgresql.extensions[0].ld_library_path[0]")]
fn operator_rules(#[case] name: &str, #[case] paths: &str, #[case] field: &str) {
    let e = load(SCENARIO, &cluster(name, paths)).unwrap_err();
    assert_eq!(e.field, field, "{e}");
    assert_eq!(e.at.line, Some(9), "{e}");
    assert!(e.at.file.ends_with("cluster.yaml"));
}

#[test]
fn names_colliding_after_sanitizing() {
    let two = "apiVersion: postgresql.cnpg.io/v1
kind: Cluster
metadata: {name: c}
spec:
  postgresql:
    extensions:
      - name: my-ext
        image: {reference: example/x:1}
      - name: my_ext
        image: {reference: example/x:1}
";
    let e = load(SCENARIO, two).unwrap_err();
    assert_eq!(e.field, "spec.postgresql.extensions[1].name");
    assert_eq!(e.at.line, Some(9));
    assert!(e.message.contains("ext-my-ext") || e.message.contains("my-ext"), "{e}");
}

#[test]
fn underscores_before_the_release_that_allows_them() {
    let dir = tempfile::Builder::new().prefix("scn").tempdir().unwrap();
    std::fs::create_dir(dir.path().join("fx")).unwrap();
    write(dir.path(), "scenario.yaml", SCENARIO);
    write(dir.path(), "cluster.yaml", &cluster("my_ext", ""));
    assert!(Scenario::load(dir.path(), CnpgVersion::new(1, 28, 1)).is_ok());
    let e = Scenario::load(dir.path(), CnpgVersion::new(1, 28, 0)).unwrap_err();
    assert!(e.message.contains("1.27.3 / 1.28.1"), "{e}");
}

#[test]
fn invalid_yaml_in_a_later_document_points_at_its_line() {
    let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n---\napiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata: {name: c}\nspec:\n  instances: [oops\n";
    let e = load(SCENARIO, text).unwrap_err();
    assert!(e.at.line.unwrap_or(0) >= 9, "{e}");
}

const PULLED: &str = "images:
  - reference: REF
steps:
  - apply: {file: cluster.yaml}
";

#[test]
fn a_reference_alone_is_pulled() {
    let r = "127.0.0.1:5000/ext/x:1";
    let s = load(&PULLED.replace("REF", r), &cluster("x", "").replace("example/x:1", r)).unwrap();
    assert_eq!(s.images[0].origin, cnpg_ext_model::scenario::ImageOrigin::Pull);
    let pinned = format!("ghcr.io/org/x@sha256:{}", "a".repeat(64));
    load(&PULLED.replace("REF", &pinned), &cluster("x", "").replace("example/x:1", &pinned)).unwrap();
}

#[rstest::rstest]
#[case::no_host("example/x:1", "no registry host")]
#[case::bare("x", "no registry host")]
#[case::uppercase("ghcr.io/Org/x:1", "invalid repository")]
#[case::tag("ghcr.io/org/x:bad tag", "invalid tag")]
#[case::digest("ghcr.io/org/x@sha256:abc", "sha256:<64 lowercase hex>")]
fn a_pulled_reference_must_be_complete(#[case] r: &str, #[case] why: &str) {
    let e = load(&PULLED.replace("REF", &format!("'{r}'")), &cluster("x", "").replace("example/x:1", r)).unwrap_err();
    assert_eq!(e.field, "images[0].reference", "{e}");
    assert_eq!(e.at.line, Some(2), "{e}");
    assert!(e.message.contains(why) && e.message.contains(r), "{e}");
}

#[test]
fn fixture_and_oci_together() {
    let e = load(&SCENARIO.replace("fixture: fx", "fixture: fx\n    oci: fx"), &cluster("x", "")).unwrap_err();
    assert_eq!(e.field, "images[0].fixture", "{e}");
    assert!(e.message.contains("at most one"), "{e}");
}

const DATABASE: &str = "apiVersion: postgresql.cnpg.io/v1
kind: Database
metadata: {name: d}
spec:
  name: d
  owner: app
  cluster: {name: c}
  extensions: [{name: x, ensure: present}]
";

fn load_with_database(steps: &str) -> Result<Scenario, InputError> {
    let dir = tempfile::Builder::new().prefix("scn").tempdir().unwrap();
    std::fs::create_dir(dir.path().join("fx")).unwrap();
    write(dir.path(), "scenario.yaml", &format!("{SCENARIO}{steps}"));
    write(dir.path(), "cluster.yaml", &cluster("x", ""));
    write(dir.path(), "db.yaml", DATABASE);
    Scenario::load(dir.path(), CnpgVersion::DEFAULT)
}

#[test]
fn database_expectations_load_and_are_strict() {
    let ok =
        load_with_database("  - apply: {file: db.yaml, expect: {applied: false, message: no such version}}\n").unwrap();
    assert_eq!(ok.steps.len(), 2);
    let e = load_with_database("  - apply: {file: db.yaml, expect: {applied: false, mesage: x}}\n").unwrap_err();
    assert_eq!((e.field.as_str(), e.at.line), ("mesage", Some(6)), "{e}");
    let e = load_with_database("  - apply: {file: db.yaml, expect: {applied: false}}\n").unwrap_err();
    assert_eq!((e.field.as_str(), e.at.line), ("steps[1].apply.expect", Some(6)), "{e}");
    let e = load_with_database("  - apply: {file: cluster.yaml, expect: {applied: true}}\n").unwrap_err();
    assert_eq!(e.field, "steps[1].apply.expect", "{e}");
    assert!(e.message.contains("no Database"), "{e}");
}

#[test]
fn origin_opt_outs_need_exactly_one_reason() {
    let ok = load(
        &format!("{SCENARIO}  - sql: {{query: SELECT 1, origin: {{skip: the image is checked elsewhere}}}}\n"),
        &cluster("x", ""),
    );
    assert!(ok.is_ok(), "{ok:?}");
    for bad in ["origin: {}", "origin: {skip: ''}", "origin: {skip: a, expect_failure: b}"] {
        let e = load(&format!("{SCENARIO}  - sql: {{query: SELECT 1, {bad}}}\n"), &cluster("x", "")).unwrap_err();
        assert_eq!((e.field.as_str(), e.at.line), ("steps[1].sql.origin", Some(6)), "{bad}: {e}");
    }
    let e = load(&format!("{SCENARIO}  - sql: {{query: SELECT 1, origin: {{skipp: x}}}}\n"), &cluster("x", ""))
        .unwrap_err();
    assert_eq!(e.field, "skipp", "{e}");
}

#[test]
fn an_apply_that_must_fail_cannot_also_expect_no_rollout() {
    let e = load(&format!("{SCENARIO}  - apply: {{file: cluster.yaml, error: x, rollout: none}}\n"), &cluster("x", ""))
        .unwrap_err();
    assert_eq!((e.field.as_str(), e.at.line), ("steps[1].apply", Some(6)), "{e}");
}

/// What the operator accepts is accepted: absolute paths (joined onto the mount), `./x/`,
/// `a/../b`, an explicitly empty list (the default), 59-character names.
#[rstest::rstest]
#[case::absolute("x", "extension_control_path: [/usr/share]")]
#[case::dotted("x", "dynamic_library_path: [./lib/, a/../b]")]
#[case::empty_list("x", "extension_control_path: []")]
#[case::fifty_nine("a23456789b123456789c123456789d123456789e123456789f123456789", "")]
fn operator_accepts(#[case] name: &str, #[case] paths: &str) {
    load(SCENARIO, &cluster(name, paths)).unwrap_or_else(|e| panic!("{e}"));
}

/// Rules that changed between releases, each checked on both sides of the change.
#[rstest::rstest]
#[case::dotdot_before_1_29("dynamic_library_path: [../other]", "1.28.2", true)]
#[case::dotdot_from_1_29("dynamic_library_path: [../other]", "1.29.0", false)]
#[case::dup_ld_before_1_29("ld_library_path: [a, a]", "1.28.2", true)]
#[case::empty_ld_before_1_29("ld_library_path: ['']", "1.27.4", true)]
#[case::dup_control_always("extension_control_path: [a, a]", "1.27.0", false)]
fn release_rules(#[case] paths: &str, #[case] cnpg: &str, #[case] accepted: bool) {
    let r = load_at(SCENARIO, &cluster("x", paths), v(cnpg));
    assert_eq!(r.is_ok(), accepted, "{r:?}");
}

#[test]
fn sixty_character_names_by_release() {
    let name = "a123456789b123456789c123456789d123456789e123456789f123456789";
    // 1.29.1 has no length limit in its CRD, but the volume name `ext-<name>` is over 63:
    // Kubernetes refuses the pod.
    let e = load_at(SCENARIO, &cluster(name, ""), v("1.29.1")).unwrap_err();
    assert!(e.message.contains("63") && e.message.contains("Kubernetes"), "{e}");
    let e = load_at(SCENARIO, &cluster(name, ""), v("1.29.2")).unwrap_err();
    assert!(e.message.contains("59") && e.message.contains("CRD"), "{e}");
    // Without the prefix (1.28.1), 60 characters make a valid volume name.
    load_at(SCENARIO, &cluster(name, ""), v("1.28.1")).unwrap();
}

#[test]
fn shared_preload_libraries_is_a_fixed_parameter() {
    let text =
        cluster("x", "").replace("  postgresql:\n", "  postgresql:\n    parameters: {shared_preload_libraries: x}\n");
    let e = load(SCENARIO, &text).unwrap_err();
    assert_eq!(e.field, "spec.postgresql.parameters.shared_preload_libraries", "{e}");
}

#[test]
fn fields_of_1_29_are_reported_as_ignored_before() {
    let text = cluster("x", "bin_path: [bin]");
    let s = load_at(SCENARIO, &text, v("1.28.2")).unwrap();
    assert_eq!(s.unsupported.len(), 1, "{:?}", s.unsupported);
    assert!(s.unsupported[0].message.contains("ignored by CloudNativePG 1.28.2"), "{}", s.unsupported[0]);
    assert!(load_at(SCENARIO, &text, v("1.29.0")).unwrap().unsupported.is_empty());
}

const CATALOG_SCENARIO: &str = "images:
  - reference: example/x:1
    fixture: fx
steps:
  - apply: {file: catalog.yaml}
  - apply: {file: cluster.yaml}
";

#[test]
fn extensions_from_an_image_catalog() {
    let dir = tempfile::Builder::new().prefix("scn").tempdir().unwrap();
    std::fs::create_dir(dir.path().join("fx")).unwrap();
    write(dir.path(), "scenario.yaml", CATALOG_SCENARIO);
    write(
        dir.path(),
        "catalog.yaml",
        "apiVersion: postgresql.cnpg.io/v1\nkind: ClusterImageCatalog\nmetadata: {name: pg}\nspec:\n  images:\n    - major: 18\n      image: example/pg:18\n      extensions:\n        - name: x\n          image: {reference: example/x:1}\n",
    );
    write(
        dir.path(),
        "cluster.yaml",
        "apiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata: {name: c}\nspec:\n  imageCatalogRef: {apiGroup: postgresql.cnpg.io, kind: ClusterImageCatalog, name: pg, major: 18}\n  postgresql:\n    extensions:\n      - name: x\n        ld_library_path: [system]\n",
    );
    let s = Scenario::load(dir.path(), v("1.30.0")).unwrap();
    let c = s.clusters().next().unwrap();
    let e = &c.cluster.spec.postgresql.extensions[0];
    assert_eq!(
        (e.image.reference.as_str(), e.ld_library_path.as_deref()),
        ("example/x:1", Some(&["system".to_string()][..]))
    );
    // 1.28 knows no catalog extensions: reported as unsupported, not run.
    let old = Scenario::load(dir.path(), v("1.28.2")).unwrap();
    assert_eq!(old.unsupported.len(), 1, "{:?}", old.unsupported);
    assert!(old.unsupported[0].message.contains("1.29.0"), "{}", old.unsupported[0]);
}
