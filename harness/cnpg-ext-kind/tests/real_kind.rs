//! Against a real cluster (kind or any conformant one with the ImageVolume gate on).
//! Not run by default:
//!
//! ```sh
//! cnpg-ext-harness kind up --name cnpg-ext          # or: kind create cluster --config kind-config/kind-1.33.yaml
//! CNPG_EXT_KIND_CLUSTER=cnpg-ext cargo test -p cnpg-ext-kind --test real_kind -- --ignored --test-threads=1
//! ```
//! Environment: `KUBECONFIG` (read by kube-rs; a `:`-separated list is merged),
//! `CNPG_EXT_CONTEXT` (default
//! `kind-$CNPG_EXT_KIND_CLUSTER`), `CNPG_EXT_CNPG_VERSION` (default 1.28.2),
//! `CNPG_EXT_OPERATOR_MANIFEST` (a local copy instead of downloading), `CNPG_EXT_KEEP=1`.

mod common;

use std::path::PathBuf;

use cnpg_ext_backend::Backend;
use cnpg_ext_kind::{prepare, KindBackend, KindOptions};
use cnpg_ext_model::backend::ApplyOutcome;
use cnpg_ext_model::CnpgVersion;

fn options() -> KindOptions {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    KindOptions {
        kind_cluster: env("CNPG_EXT_KIND_CLUSTER"),
        context: env("CNPG_EXT_CONTEXT"),
        cnpg_version: env("CNPG_EXT_CNPG_VERSION")
            .map(|v| v.parse().expect("CNPG_EXT_CNPG_VERSION"))
            .unwrap_or(CnpgVersion::DEFAULT),
        operator_manifest: env("CNPG_EXT_OPERATOR_MANIFEST").map(PathBuf::from),
        keep: env("CNPG_EXT_KEEP").is_some(),
        report_dir: PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("real-kind-report"),
        ..Default::default()
    }
}

#[tokio::test]
#[ignore = "needs a kind cluster"]
async fn preflight_and_operator_install() {
    let env = prepare(&options()).await.unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "server {} nodes {:?} operator {:?} notices {:?}",
        env.preflight.server_version, env.preflight.nodes, env.operator, env.notices
    );
    assert_eq!(env.operator.version, Some(env.opts.cnpg_version));
}

/// One Cluster without extensions (no image to load), then a restart with the rollout
/// observed, then teardown.
#[tokio::test]
#[ignore = "needs a kind cluster"]
async fn cluster_create_restart_teardown() {
    let opts = options();
    let env = prepare(&opts).await.unwrap_or_else(|e| panic!("{e}"));
    let yaml = "apiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata: {name: c}\nspec:\n  instances: 2\n  imageName: ghcr.io/cloudnative-pg/postgresql:18-minimal-trixie\n  storage: {size: 1Gi}\n";
    let doc = common::cluster_doc(yaml);
    let mut b = KindBackend::new(env.client.clone(), "cnpg-ext-real-kind-test", opts.clone());
    let r = async {
        assert_eq!(b.apply_cluster(&doc).await?, ApplyOutcome::Created);
        let inst = b.instances().await?;
        assert_eq!(inst.len(), 2);
        let plan = b.plan_for(&doc.cluster, &inst[0].name);
        let obs = b.inspect(&inst[0].name, &plan).await?;
        eprintln!("{obs:?}");
        let pg = b.connect(&inst[0].name, "app", "postgres").await?;
        let row = pg
            .query_one("SELECT 1::int4", &[])
            .await
            .map_err(|e| cnpg_ext_model::backend::BackendError::Failed(e.to_string()))?;
        assert_eq!(row.get::<_, i32>(0), 1);
        let rec = b.restart().await?;
        eprintln!("{rec:?}");
        assert_eq!(rec.restarts.len(), 2);
        Ok::<_, cnpg_ext_model::backend::BackendError>(())
    }
    .await;
    b.teardown(opts.keep).await.unwrap();
    r.unwrap_or_else(|e| panic!("{e}"));
}

/// Two restarts in quick succession: each must roll every instance (the second one's
/// annotation differs even within the same second), neither may hang.
#[tokio::test]
#[ignore = "needs a kind cluster"]
async fn two_restarts_within_a_second_both_roll() {
    let opts = options();
    let env = prepare(&opts).await.unwrap_or_else(|e| panic!("{e}"));
    let yaml = "apiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata: {name: c}\nspec:\n  instances: 2\n  imageName: ghcr.io/cloudnative-pg/postgresql:18-minimal-trixie\n  storage: {size: 1Gi}\n";
    let doc = common::cluster_doc(yaml);
    let mut b = KindBackend::new(env.client.clone(), "cnpg-ext-real-kind-restarts", opts.clone());
    let r = async {
        b.apply_cluster(&doc).await?;
        let first = b.restart().await?;
        let second = b.restart().await?;
        assert_eq!((first.restarts.len(), second.restarts.len()), (2, 2));
        Ok::<_, cnpg_ext_model::backend::BackendError>(())
    }
    .await;
    b.teardown(opts.keep).await.unwrap();
    r.unwrap_or_else(|e| panic!("{e}"));
}

/// A Database asking for an extension the operand does not have: the operator's failure
/// message comes back (after one of its 30 s retries), not a timeout.
#[tokio::test]
#[ignore = "needs a kind cluster"]
async fn failing_database_reports_the_operators_message() {
    let opts = options();
    let env = prepare(&opts).await.unwrap_or_else(|e| panic!("{e}"));
    let yaml = "apiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata: {name: c}\nspec:\n  instances: 1\n  imageName: ghcr.io/cloudnative-pg/postgresql:18-minimal-trixie\n  storage: {size: 1Gi}\n";
    let doc = common::cluster_doc(yaml);
    let db = match cnpg_ext_model::Manifest::parse(
        std::path::Path::new("db.yaml"),
        "apiVersion: postgresql.cnpg.io/v1\nkind: Database\nmetadata: {name: app}\nspec:\n  name: app\n  owner: app\n  cluster: {name: c}\n  extensions:\n    - {name: no_such_extension, ensure: present}\n",
    )
    .unwrap()
    .remove(0)
    {
        cnpg_ext_model::Manifest::Database(d) => d,
        other => panic!("{other:?}"),
    };
    let mut b = KindBackend::new(env.client.clone(), "cnpg-ext-real-kind-database", opts.clone());
    let r = async {
        b.apply_cluster(&doc).await?;
        let err = b.apply_database(&db).await.unwrap_err().to_string();
        eprintln!("{err}");
        assert!(err.contains("no_such_extension") && !err.contains("timed out"), "{err}");
        Ok::<_, cnpg_ext_model::backend::BackendError>(())
    }
    .await;
    b.teardown(opts.keep).await.unwrap();
    r.unwrap_or_else(|e| panic!("{e}"));
}
