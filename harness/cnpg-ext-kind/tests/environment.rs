//! What a run prepares once: the kubeconfig (a `:`-separated `KUBECONFIG` merged by
//! kube-rs) and the image archives (each loaded into the nodes once, before the
//! scenarios start). Both change process environment variables (`KUBECONFIG`, `PATH`), so
//! they run in one test in this binary of their own.

use std::path::{Path, PathBuf};

use cnpg_ext_kind::environment::kube_config;
use cnpg_ext_kind::operator::InstalledOperator;
use cnpg_ext_kind::preflight::PreflightReport;
use cnpg_ext_kind::testing::FakeApi;
use cnpg_ext_kind::{KindEnvironment, KindOptions};
use cnpg_ext_model::backend::BackendError;

const CLUSTERS_AND_USERS: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: kind-x\n  cluster:\n    server: https://127.0.0.1:6443\n    insecure-skip-tls-verify: true\nusers:\n- name: kind-x\n  user:\n    token: t0ken\n";
const CONTEXTS: &str = "apiVersion: v1\nkind: Config\ncontexts:\n- name: kind-x\n  context:\n    cluster: kind-x\n    user: kind-x\ncurrent-context: kind-x\n";

fn environment(kind_cluster: Option<&str>) -> KindEnvironment {
    KindEnvironment {
        client: FakeApi::new().client(),
        opts: KindOptions { kind_cluster: kind_cluster.map(String::from), ..Default::default() },
        preflight: PreflightReport { server_version: "v1.33.7".into(), nodes: vec![] },
        operator: InstalledOperator {
            namespace: "cnpg-system".into(),
            deployment: "cnpg-controller-manager".into(),
            image: "ghcr.io/cloudnative-pg/cloudnative-pg:1.28.2".into(),
            version: None,
        },
        notices: vec![],
        registry: None,
        advertised: None,
    }
}

fn stand_in(dir: &Path, name: &str, log: &Path) {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\necho \"{name} $*\" >> {}\n", log.display())).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test]
async fn kubeconfig_lists_are_merged_and_archives_load_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a.yaml"), tmp.path().join("b.yaml"));
    std::fs::write(&a, CLUSTERS_AND_USERS).unwrap();
    std::fs::write(&b, CONTEXTS).unwrap();

    // No --kubeconfig: kube-rs reads `KUBECONFIG=a:b` and merges the two files (the context
    // is in one, the cluster and user in the other).
    std::env::set_var("KUBECONFIG", format!("{}:{}", a.display(), b.display()));
    let cfg = kube_config(&KindOptions::default()).await.unwrap();
    assert_eq!(cfg.cluster_url.to_string(), "https://127.0.0.1:6443/");
    let cfg = kube_config(&KindOptions { kind_cluster: Some("x".into()), ..Default::default() }).await.unwrap();
    assert_eq!(cfg.cluster_url.to_string(), "https://127.0.0.1:6443/");

    // --kubeconfig names one file; alone, a.yaml has no context: an error naming the file.
    let err = kube_config(&KindOptions { kubeconfig: Some(a.clone()), ..Default::default() }).await.unwrap_err();
    assert!(matches!(&err, BackendError::Unusable(m) if m.contains(&a.display().to_string())), "{err}");
    // The whole list passed as one path (what binding --kubeconfig to $KUBECONFIG did) is
    // not a file.
    let err = kube_config(&KindOptions {
        kubeconfig: Some(PathBuf::from(format!("{}:{}", a.display(), b.display()))),
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert!(matches!(err, BackendError::Unusable(_)), "{err}");
    std::env::remove_var("KUBECONFIG");

    // Archives: every one loaded once, however many scenarios list it.
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = tmp.path().join("kind.log");
    stand_in(&bin, "kind", &log);
    let saved = std::env::var_os("PATH");
    std::env::set_var("PATH", &bin);
    let images = vec![
        ("ghcr.io/cloudnative-pg/pgvector:0.8.1-18-trixie".to_string(), tmp.path().join("0.docker.tar")),
        ("localhost/my-ext:1".to_string(), tmp.path().join("1.docker.tar")),
        ("ghcr.io/cloudnative-pg/pgvector:0.8.1-18-trixie".to_string(), tmp.path().join("0.docker.tar")),
    ];
    let r = environment(Some("k")).load_images(&images).await;
    let existing_cluster = environment(None).load_images(&images).await;
    if let Some(p) = saved {
        std::env::set_var("PATH", p);
    }
    r.unwrap();
    existing_cluster.unwrap();
    let lines: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| l.replace(&tmp.path().display().to_string(), "T"))
        .collect();
    assert_eq!(
        lines,
        ["kind load image-archive T/0.docker.tar --name k", "kind load image-archive T/1.docker.tar --name k"],
        "existing-cluster mode loads nothing"
    );
}
