//! Snapshots of every generated manifest and kind config, and the offline checks on them.

mod common;

use std::path::Path;

use cnpg_ext_kind::apply::{namespace_doc, namespace_for, namespaced_cluster, restart_patch, restart_stamp};
use cnpg_ext_kind::config::{self, all_configs, check_kind_config, check_kind_version, parse_kind_version};
use cnpg_ext_kind::operator::{apply_order, describe, parse_manifest, webhook_probe_cluster};
use cnpg_ext_kind::preflight::image_volume_probe_pod;
use cnpg_ext_kind::render::{render_dry_run, to_yaml};
use cnpg_ext_kind::versions::{check_manifest, sha256_hex, OperatorRelease, VersionsFile};
use cnpg_ext_kind::KindOptions;
use cnpg_ext_model::backend::BackendError;
use cnpg_ext_model::scenario::Scenario;
use cnpg_ext_model::CnpgVersion;
use common::*;

#[test]
fn kind_configs_snapshot_and_match_committed_files() {
    let dir = cnpg_ext_kind::kind_config_dir();
    for (name, text) in all_configs() {
        snap!(insta::assert_snapshot!(format!("kind-config__{name}"), text));
        let path = dir.join(&name);
        if std::env::var_os("UPDATE_KIND_CONFIG").is_some() {
            std::fs::write(&path, &text).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            committed,
            text,
            "{} differs from render_kind_config(); rerun with UPDATE_KIND_CONFIG=1",
            path.display()
        );
        // The harness accepts its own configs as pinned.
        let info = check_kind_config(&path, &committed, false).unwrap();
        assert!(info.pinned);
        let k8s = info.kubernetes.as_deref().unwrap();
        assert!(name.contains(k8s));
        let image = config::NODE_IMAGES.iter().find(|i| i.kubernetes == k8s).unwrap();
        assert_eq!(info.kind_release.as_deref(), Some(image.kind_release));
    }
}

#[test]
fn registry_variant_patches_containerd() {
    let text = config::render_kind_config("1.33", config::Topology::Single, true).unwrap();
    snap!(insta::assert_snapshot!("kind-config__registry-variant", text));
}

#[test]
fn unpinned_node_image_is_refused_unless_allowed() {
    let text = "# digest: unverified\nkind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nfeatureGates: {ImageVolume: true}\nnodes:\n  - role: control-plane\n    image: kindest/node:v1.34.3\n";
    let err = check_kind_config(Path::new("kind-x.yaml"), text, false).unwrap_err();
    assert!(
        matches!(&err, BackendError::Unusable(m) if m.contains("kind-x.yaml") && m.contains("not pinned by digest") && m.contains("--allow-unpinned")),
        "{err}"
    );
    let ok = check_kind_config(Path::new("kind-x.yaml"), text, true).unwrap();
    assert!(!ok.pinned);
    assert_eq!(ok.warnings.len(), 1);
}

#[test]
fn image_volume_gate_must_be_on_before_1_35() {
    let text = "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnodes:\n  - role: control-plane\n    image: kindest/node:v1.33.7@sha256:d26ef333bdb2cbe9862a0f7c3803ecc7b4303d8cea8e814b481b09949d353040\n";
    let err = check_kind_config(Path::new("k.yaml"), text, false).unwrap_err();
    assert!(err.to_string().contains("featureGates.ImageVolume is not set"), "{err}");
    let off = text.replace("nodes:", "featureGates: {ImageVolume: false}\nnodes:");
    assert!(check_kind_config(Path::new("k.yaml"), &off, false).unwrap_err().to_string().contains("is false"));
    let on_135 = text.replace(
        "v1.33.7@sha256:d26ef333bdb2cbe9862a0f7c3803ecc7b4303d8cea8e814b481b09949d353040",
        "v1.35.0@sha256:452d707d4862f52530247495d180205e029056831160e22870e37e3f6c1ac31f",
    );
    assert!(check_kind_config(Path::new("k.yaml"), &on_135, false).is_ok());
}

#[test]
fn kind_version_is_checked() {
    assert_eq!(parse_kind_version("kind v0.31.0 go1.25.5 linux/amd64").unwrap(), (0, 31, 0));
    assert_eq!(parse_kind_version("kind v0.32.0-alpha+abc go1.26 linux/arm64").unwrap(), (0, 32, 0));
    assert!(parse_kind_version("nothing here").is_err());
    let old = check_kind_version("kind v0.27.0 go1.24 linux/amd64", Some("v0.31.0")).unwrap_err();
    assert!(matches!(&old, BackendError::Unusable(m) if m.contains("too old") && m.contains("v0.31.0")), "{old}");
    assert_eq!(check_kind_version("kind v0.31.0 go1.25.5 linux/amd64", Some("v0.31.0")).unwrap(), None);
    let warn = check_kind_version("kind v0.29.0 go1.24 linux/amd64", Some("v0.31.0")).unwrap().unwrap();
    assert!(warn.contains("v0.31.0"));
}

#[test]
fn namespaced_cluster_after_defaults() {
    let doc = cluster_doc(CLUSTER_YAML);
    let ns = namespace_for("pgvector_basic");
    assert_eq!(ns, "cnpg-ext-pgvector-basic");
    let applied = namespaced_cluster(&doc.raw, &ns, &KindOptions::default());
    snap!(insta::assert_snapshot!("cluster-namespaced-defaults", to_yaml(&applied)));
    // An explicit pullPolicy and enableSuperuserAccess are kept.
    assert_eq!(applied["spec"]["postgresql"]["extensions"][1]["image"]["pullPolicy"], "Never");
    let off = CLUSTER_YAML.replace("  instances: 3\n", "  instances: 3\n  enableSuperuserAccess: false\n");
    let applied = namespaced_cluster(&cluster_doc(&off).raw, &ns, &KindOptions::default());
    assert_eq!(applied["spec"]["enableSuperuserAccess"], false);
}

#[test]
fn namespace_names_are_dns_labels() {
    assert_eq!(namespace_for("Weird_ID.x"), "cnpg-ext-weird-id-x");
    let long = namespace_for(&"a".repeat(100));
    assert_eq!(long.len(), 63);
    snap!(insta::assert_snapshot!("namespace", to_yaml(&namespace_doc("cnpg-ext-demo"))));
}

#[test]
fn probe_pod_snapshot() {
    let pod = serde_json::to_value(image_volume_probe_pod("default")).unwrap();
    snap!(insta::assert_snapshot!("imagevolume-probe-pod", to_yaml(&pod)));
}

#[test]
fn restart_patch_body() {
    let at = chrono::DateTime::parse_from_rfc3339("2026-05-04T03:02:01Z").unwrap().to_utc();
    let stamp = restart_stamp(None, at);
    let body = restart_patch(&stamp);
    snap!(insta::assert_json_snapshot!("restart-merge-patch", body));
    assert_eq!(body["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"], "2026-05-04T03:02:01.000000000Z");
}

/// Two restarts within one second: `kubectl cnpg restart`'s whole-second value would repeat
/// and the second patch would change nothing. The stamps differ, and a clock that reads
/// the same instant again (or goes back) still gives a later value.
#[test]
fn restart_stamps_never_repeat() {
    let t = chrono::DateTime::parse_from_rfc3339("2026-05-04T03:02:01.250Z").unwrap().to_utc();
    let first = restart_stamp(None, t);
    let second = restart_stamp(Some(&first), t + chrono::Duration::milliseconds(300));
    assert_ne!(first, second);
    assert_eq!(&first[..19], &second[..19], "same second");
    let again = restart_stamp(Some(&second), t);
    assert!(again > second, "{again} after {second}");
    // The operator compares strings; a whole-second value from kubectl is followed too.
    assert_eq!(restart_stamp(Some("2026-05-04T03:02:01Z"), t), "2026-05-04T03:02:01.250000000Z");
}

#[test]
fn webhook_probe_cluster_doc() {
    snap!(insta::assert_snapshot!("webhook-probe-cluster", to_yaml(&webhook_probe_cluster("default"))));
}

#[test]
fn operator_objects_apply_order() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/operator-sample.yaml")).unwrap();
    let docs = apply_order(parse_manifest(&text).unwrap());
    let order = describe(&docs);
    snap!(insta::assert_yaml_snapshot!("operator-apply-order", order));
    assert_eq!(order.first().unwrap(), "Namespace cnpg-system");
    assert!(order.last().unwrap().contains("WebhookConfiguration"));
    let deploy = order.iter().position(|o| o.starts_with("Deployment")).unwrap();
    let first_webhook = order.iter().position(|o| o.contains("WebhookConfiguration")).unwrap();
    assert!(deploy < first_webhook);
}

#[test]
fn built_in_versions_file_covers_1_27_to_1_30_with_sources() {
    let f = VersionsFile::embedded();
    for v in ["1.27.0", "1.27.4", "1.28.2", "1.29.2", "1.30.0"] {
        let r = f.find(v.parse().unwrap()).unwrap();
        assert!(r.manifest.ends_with(&format!("/v{v}/cnpg-{v}.yaml")));
        assert!(!r.source.is_empty());
    }
    assert_eq!(f.default_version(), CnpgVersion::DEFAULT);
    let err = f.find(CnpgVersion::new(1, 26, 0)).unwrap_err();
    assert!(err.to_string().contains("1.26.0 is not in"), "{err}");
}

fn release(sha: Option<&str>) -> OperatorRelease {
    OperatorRelease {
        version: "1.28.2".into(),
        manifest: "https://github.com/cloudnative-pg/cloudnative-pg/releases/download/v1.28.2/cnpg-1.28.2.yaml".into(),
        sha256: sha.map(String::from),
        source: "test".into(),
    }
}

#[test]
fn operator_manifest_pins_are_enforced() {
    let body = b"apiVersion: v1\nkind: Namespace\nmetadata: {name: cnpg-system}\n";
    let good = sha256_hex(body);
    assert!(check_manifest(&release(Some(&good)), body, false).unwrap().pinned);
    let bad = check_manifest(&release(Some(&"0".repeat(64))), body, false).unwrap_err();
    assert!(matches!(&bad, BackendError::Unusable(m) if m.contains(&good) && m.contains("refusing")), "{bad}");
    let unpinned = check_manifest(&release(None), body, false).unwrap_err();
    assert!(
        matches!(&unpinned, BackendError::Unusable(m) if m.contains("--allow-unpinned-operator") && m.contains(&good)),
        "{unpinned}"
    );
    let allowed = check_manifest(&release(None), body, true).unwrap();
    assert!(!allowed.pinned);
    assert!(allowed.notice.unwrap().contains(&good));
}

#[test]
fn versions_file_rejects_bad_entries() {
    let text = "default: \"1.28.2\"\nversions:\n  - version: \"1.28.2\"\n    manifest: https://example.invalid/cnpg.yaml\n    sha256: null\n    source: x\n";
    let err = VersionsFile::parse(Path::new("v.yaml"), text).unwrap_err();
    assert!(err.to_string().contains("versions[0].manifest"), "{err}");
    let text = "default: \"1.28.2\"\nversions:\n  - version: \"1.28.2\"\n    manifest: https://github.com/cloudnative-pg/cloudnative-pg/releases/download/v1.28.2/cnpg-1.28.2.yaml\n    sha256: ABC\n    source: x\n";
    assert!(VersionsFile::parse(Path::new("v.yaml"), text).unwrap_err().to_string().contains("versions[0].sha256"));
}

#[test]
fn dry_run_renders_everything_the_run_applies() {
    let tmp = tempfile::tempdir().unwrap();
    let sdir = tmp.path().join("scenarios/pgvector");
    std::fs::create_dir_all(sdir.join("fixture")).unwrap();
    std::fs::write(sdir.join("cluster.yaml"), CLUSTER_YAML).unwrap();
    std::fs::write(
        sdir.join("database.yaml"),
        "apiVersion: postgresql.cnpg.io/v1\nkind: Database\nmetadata: {name: app}\nspec:\n  name: app\n  owner: app\n  cluster: {name: c}\n  extensions:\n    - {name: vector, ensure: present}\n",
    )
    .unwrap();
    std::fs::write(
        sdir.join("scenario.yaml"),
        "images:\n  - reference: ghcr.io/cloudnative-pg/pgvector:0.8.1-18-trixie\n    fixture: fixture\n  - reference: localhost/my-ext:1\n    fixture: fixture\nsteps:\n  - apply: {file: cluster.yaml}\n  - apply: {file: database.yaml}\n  - restart: {}\n  - verify: {}\n",
    )
    .unwrap();
    let scenario = Scenario::load(&sdir, CnpgVersion::DEFAULT).unwrap();
    let out = tmp.path().join("reports/manifests");
    let files = render_dry_run(&scenario, &KindOptions::default(), &out).unwrap();
    let mut listing = String::new();
    for f in &files {
        let rel = f.strip_prefix(&out).unwrap().display().to_string();
        listing.push_str(&format!("### {rel}\n{}\n", std::fs::read_to_string(f).unwrap()));
    }
    snap!(insta::assert_snapshot!("dry-run", listing));
    // The ImageVolume probe goes where the preflight sends it, once per run.
    let probe = std::fs::read_to_string(out.join("preflight-imagevolume-probe-pod.dry-run.yaml")).unwrap();
    assert!(probe.contains("namespace: default"), "{probe}");
    assert!(!out.join("pgvector/00-imagevolume-probe-pod.dry-run.yaml").exists());
    // The origin expectations of the applied Cluster, and how SQL gets a superuser.
    let origin = files
        .iter()
        .find(|f| f.file_name().unwrap().to_string_lossy().ends_with("-origin-c.yaml"))
        .expect("an origin file for Cluster c");
    let origin = std::fs::read_to_string(origin).unwrap();
    for want in [
        "/extensions/pgvector/share/extension/",
        "/extensions/pgvector/lib/",
        "/extensions/my_ext/share/extension/",
        "spec.enableSuperuserAccess: true added by the harness",
        "volume: ext-pgvector",
    ] {
        assert!(origin.contains(want), "{want} missing from:\n{origin}");
    }
    let applied = std::fs::read_to_string(out.join("pgvector/01-apply-cluster-c.yaml")).unwrap();
    assert!(applied.contains("enableSuperuserAccess: true"), "{applied}");

    // --registry: the same scenario documents (references unchanged), plus what is written
    // into the nodes and kube-public.
    let reg_out = tmp.path().join("reports-registry/manifests");
    let reg_opts = KindOptions { registry: true, ..Default::default() };
    let reg_files = render_dry_run(&scenario, &reg_opts, &reg_out).unwrap();
    let mut reg_listing = String::new();
    for f in &reg_files {
        let rel = f.strip_prefix(&reg_out).unwrap().display().to_string();
        let text = std::fs::read_to_string(f).unwrap();
        if rel.starts_with("registry-") || rel == "kind-config.yaml" {
            reg_listing.push_str(&format!("### {rel}\n{text}\n"));
        } else if rel != "operator-release.yaml" {
            let plain = std::fs::read_to_string(out.join(&rel)).unwrap();
            assert_eq!(text, plain, "{rel}: a registry run applies the same document");
        }
    }
    snap!(insta::assert_snapshot!("dry-run-registry", reg_listing));
}
