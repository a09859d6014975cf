//! Every check of the verification layer is made to fail, by a backend wrapper that tampers
//! with what the real (local) backend runs — and each tampering must fail exactly the check
//! it targets, nothing else. A check that no test can make fail proves nothing.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use cnpg_ext_backend::Backend;
use cnpg_ext_harness::reports::run::RunReport;
use cnpg_ext_harness::run::Status;
use cnpg_ext_harness::Harness;
use cnpg_ext_model::backend::{ApplyOutcome, BackendError, InstanceObservation, InstanceRef, Role, RolloutRecord};
use cnpg_ext_model::{Cluster, ClusterDoc, ClusterPlan, DatabaseDoc};
use cnpg_ext_pg::OperandFlavor;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tampering {
    /// After creation: a file disappears from one instance's mount.
    RemoveMountFile,
    /// After creation: one instance's mount becomes writable.
    WritableMount,
    /// `inspect` reports another LD_LIBRARY_PATH than the postmaster has.
    WrongLdLibraryPath,
    /// After the rolling update: the rows written before it are gone.
    TruncateSentinel,
    /// The rolling update happened replica → primary → replica.
    PrimaryBetweenReplicas,
    /// After creation: the operand gets its own copy of the module ($libdir is searched first).
    ModuleInOperand,
    /// After the rolling update: one replica loads libraries from the primary's mount.
    ReplicaLoadsFromElsewhere,
}

struct Tamper {
    inner: Box<dyn Backend>,
    how: Tampering,
    cluster: Mutex<Option<Cluster>>,
    /// The module copied into the operand (`ModuleInOperand`).
    module: PathBuf,
}

impl Tamper {
    fn plan(&self, instance: &str) -> ClusterPlan {
        let c = self.cluster.lock().unwrap().clone().expect("a cluster was applied");
        self.inner.plan_for(&c, instance)
    }

    async fn instances_with(&self, role: Role) -> Vec<String> {
        self.inner.instances().await.unwrap().into_iter().filter(|i| i.role == role).map(|i| i.name).collect()
    }

    async fn sql(&self, instance: &str, db: &str, q: &str) -> String {
        let c = self.inner.connect(instance, db, "postgres").await.unwrap();
        let rows = c.simple_query(q).await.unwrap_or_else(|e| panic!("{q}: {e}"));
        rows.iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                _ => None,
            })
            .unwrap_or_default()
    }

    async fn after_create(&self) {
        let primary = self.instances_with(Role::Primary).await.remove(0);
        let mount = PathBuf::from(&self.plan(&primary).extensions[0].mount_path);
        match self.how {
            Tampering::RemoveMountFile => std::fs::remove_file(mount.join("licenses/README.txt")).unwrap(),
            Tampering::WritableMount => {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&mount, std::fs::Permissions::from_mode(0o777)).unwrap()
            }
            Tampering::ModuleInOperand => {
                let libdir =
                    self.sql(&primary, "postgres", "SELECT setting FROM pg_config WHERE name = 'PKGLIBDIR'").await;
                std::fs::copy(&self.module, Path::new(&libdir).join("vector.so")).unwrap();
            }
            _ => {}
        }
    }

    async fn after_rollout(&self) {
        match self.how {
            Tampering::TruncateSentinel => {
                let primary = self.instances_with(Role::Primary).await.remove(0);
                self.sql(&primary, "app", "TRUNCATE cnpg_ext_harness_sentinel").await;
            }
            Tampering::ReplicaLoadsFromElsewhere => {
                let primary = self.instances_with(Role::Primary).await.remove(0);
                let replica = self.instances_with(Role::Replica).await.remove(0);
                let elsewhere = &self.plan(&primary).extensions[0].library_dirs[0];
                let data = self.sql(&replica, "postgres", "SHOW data_directory").await;
                let conf = Path::new(&data).join("cnpg-ext.conf");
                let mut text = std::fs::read_to_string(&conf).unwrap();
                text += &format!("dynamic_library_path = '$libdir:{elsewhere}'\n");
                std::fs::write(&conf, text).unwrap();
                self.sql(&replica, "postgres", "SELECT pg_reload_conf()").await;
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            _ => {}
        }
    }
}

#[async_trait]
impl Backend for Tamper {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn plan_for(&self, cluster: &Cluster, instance: &str) -> ClusterPlan {
        self.inner.plan_for(cluster, instance)
    }
    async fn apply_cluster(&mut self, doc: &ClusterDoc) -> Result<ApplyOutcome, BackendError> {
        *self.cluster.lock().unwrap() = Some(doc.cluster.clone());
        let mut outcome = self.inner.apply_cluster(doc).await?;
        match &mut outcome {
            ApplyOutcome::Created => self.after_create().await,
            ApplyOutcome::RolledOut { record } => {
                if self.how == Tampering::PrimaryBetweenReplicas {
                    // replicas-first order, highest ordinal first: [r3, r2, p1] → [r3, p1, r2]
                    let primary = record.restarts.pop().unwrap();
                    record.restarts.insert(1, primary);
                }
                self.after_rollout().await;
            }
            _ => {}
        }
        Ok(outcome)
    }
    async fn apply_database(&mut self, doc: &DatabaseDoc) -> Result<Vec<String>, BackendError> {
        self.inner.apply_database(doc).await
    }
    async fn restart(&mut self) -> Result<RolloutRecord, BackendError> {
        self.inner.restart().await
    }
    async fn instances(&self) -> Result<Vec<InstanceRef>, BackendError> {
        self.inner.instances().await
    }
    async fn connect(
        &self,
        instance: &str,
        database: &str,
        user: &str,
    ) -> Result<tokio_postgres::Client, BackendError> {
        self.inner.connect(instance, database, user).await
    }
    async fn inspect(&self, instance: &str, plan: &ClusterPlan) -> Result<InstanceObservation, BackendError> {
        let mut obs = self.inner.inspect(instance, plan).await?;
        if self.how == Tampering::WrongLdLibraryPath {
            obs.ld_library_path = Some("/tampered/lib".into());
        }
        Ok(obs)
    }
    async fn teardown(&mut self, keep: bool) -> Result<(), BackendError> {
        self.inner.teardown(keep).await
    }
}

const SCENARIO: &str = r#"description: target of the tampering tests
images:
  - reference: ghcr.io/cloudnative-pg/pgvector:0.8.6-18-trixie
    fixture: FIXTURE
  - reference: ghcr.io/cloudnative-pg/pgvector:0.8.6-18-trixie-b
    fixture: FIXTURE
steps:
  - apply: {file: cluster-a.yaml}
  - verify: {}
  - sql: {query: CREATE EXTENSION vector}
  - apply: {file: cluster-b.yaml, rollout: expected}
  - sql:
      on: replicas
      query: SELECT '[1,2,3]'::vector <#> '[4,5,6]'
      rows: [["-32"]]
"#;

fn cluster(tag: &str) -> String {
    format!(
        "apiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata:\n  name: tamper\nspec:\n  instances: 3\n  postgresql:\n    extensions:\n      - name: pgvector\n        image:\n          reference: ghcr.io/cloudnative-pg/pgvector:0.8.6-18-trixie{tag}\n"
    )
}

/// A scenario directory with the pgvector fixture (its recipe changed by `edit`).
fn scenario(edit: impl Fn(&str) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let fixture = dir.path().join("fixture");
    std::fs::create_dir_all(fixture.join("licenses")).unwrap();
    let src = common::repo().join("fixtures/pgvector");
    let recipe = std::fs::read_to_string(src.join("fixture.yaml")).unwrap();
    std::fs::write(fixture.join("fixture.yaml"), edit(&recipe)).unwrap();
    std::fs::copy(src.join("licenses/README.txt"), fixture.join("licenses/README.txt")).unwrap();
    let s = dir.path().join("s");
    std::fs::create_dir_all(&s).unwrap();
    std::fs::write(s.join("scenario.yaml"), SCENARIO.replace("FIXTURE", fixture.to_str().unwrap())).unwrap();
    std::fs::write(s.join("cluster-a.yaml"), cluster("")).unwrap();
    std::fs::write(s.join("cluster-b.yaml"), cluster("-b")).unwrap();
    dir
}

/// The full install's pgvector module (what a careless operand would ship).
fn install_module() -> PathBuf {
    let pg = cnpg_ext_harness::run::locate_postgres(None).unwrap();
    pg.pkglibdir.join("vector.so")
}

async fn run(how: Option<Tampering>, dir: &Path, operand: OperandFlavor) -> RunReport {
    let module = install_module();
    let mut h = Harness::local().jobs(1).operand(operand);
    if let Some(how) = how {
        let module = module.clone();
        h = h.wrap_backend(move |_, inner| {
            Box::new(Tamper { inner, how, cluster: Mutex::new(None), module: module.clone() }) as Box<dyn Backend>
        });
    }
    h.run([dir.join("s")]).await.unwrap()
}

/// The failing step (1-based index) and the `what` of each failing check, on which instance.
fn failures(r: &RunReport) -> (usize, Vec<(String, Option<String>)>) {
    let s = &r.scenarios[0];
    let step =
        s.steps.iter().find(|st| st.status == Status::Failed).unwrap_or_else(|| panic!("no step failed: {s:#?}"));
    let bad = step.checks.iter().filter(|c| !c.ok).map(|c| (c.what.clone(), c.instance.clone())).collect();
    (step.index, bad)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untampered_it_passes_with_origin_proven_on_every_instance_it_ran_on() {
    let dir = scenario(|r| r.to_string());
    let r = run(None, dir.path(), OperandFlavor::Minimal).await;
    assert!(r.passed(), "{}", r.failures());
    let origin: Vec<_> = r.scenarios[0]
        .steps
        .iter()
        .flat_map(|s| &s.checks)
        .filter(|c| c.what.starts_with("origin of vector"))
        .collect();
    // CREATE EXTENSION on the primary, then the replicas' query: 3 instances × (control + module).
    assert_eq!(origin.len(), 6, "{origin:#?}");
    assert!(origin.iter().all(|c| c.ok));
    assert!(origin.iter().any(|c| c.actual.ends_with("/extensions/pgvector/lib/vector.so")));
}

#[rstest::rstest]
#[case::mount_file_removed(Tampering::RemoveMountFile, 2, "files in ")]
#[case::mount_writable(Tampering::WritableMount, 2, " read-only")]
#[case::ld_library_path(Tampering::WrongLdLibraryPath, 2, "postmaster LD_LIBRARY_PATH")]
#[case::rows_lost(Tampering::TruncateSentinel, 4, "row written before the update")]
#[case::primary_between_replicas(Tampering::PrimaryBetweenReplicas, 4, "replicas restarted before the primary")]
#[case::module_from_the_operand(Tampering::ModuleInOperand, 3, "origin of vector: module vector.so")]
#[case::replica_loads_from_elsewhere(Tampering::ReplicaLoadsFromElsewhere, 5, "origin of vector: module vector.so")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tampering_fails_exactly_its_check(#[case] how: Tampering, #[case] step: usize, #[case] check: &str) {
    let dir = scenario(|r| r.to_string());
    let r = run(Some(how), dir.path(), OperandFlavor::Minimal).await;
    let (index, bad) = failures(&r);
    assert_eq!(index, step, "{how:?}: {}", r.failures());
    assert!(!bad.is_empty(), "{how:?}: the step failed without a failing check: {}", r.failures());
    assert!(bad.iter().all(|(what, _)| what.contains(check)), "{how:?}: other checks failed too: {bad:#?}");
    if how == Tampering::ReplicaLoadsFromElsewhere {
        // Only the tampered replica: the other replica's origin still holds.
        assert_eq!(bad.len(), 1, "{bad:#?}");
        assert!(bad[0].1.as_deref().is_some_and(|i| i != "tamper-1"), "{bad:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_the_image_lacks_is_not_taken_from_the_operand() {
    // The image's control file names $libdir/vector, but the image has no vector.so; the
    // operand has one: CREATE EXTENSION works — and must not pass.
    let dir = scenario(|r| r.lines().filter(|l| !l.contains("vector.so")).collect::<Vec<_>>().join("\n"));
    let r = run(Some(Tampering::ModuleInOperand), dir.path(), OperandFlavor::Minimal).await;
    let (index, bad) = failures(&r);
    assert_eq!(index, 3, "{}", r.failures());
    assert_eq!(bad.len(), 1, "{bad:#?}");
    let summary = r.failures();
    assert!(summary.contains("the image does not ship vector.so"), "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_file_only_the_operand_has_is_reported() {
    // An image with the module only, on the standard operand (which ships pgvector).
    let dir = scenario(|r| {
        r.lines()
            .filter(|l| !l.contains("vector.control"))
            .map(|l| l.replace("\"${control:vector}\"", "\"0.8.6\""))
            .collect::<Vec<_>>()
            .join("\n")
    });
    let r = run(None, dir.path(), OperandFlavor::Standard).await;
    let (index, bad) = failures(&r);
    assert_eq!(index, 3, "{}", r.failures());
    assert!(bad.iter().any(|(w, _)| w == "origin of vector: control file"), "{bad:#?}");
    assert!(r.failures().contains("only the operand ships vector.control"), "{}", r.failures());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standard_operand_shadows_the_pgvector_image() {
    let dir = scenario(|r| r.to_string());
    let r = run(None, dir.path(), OperandFlavor::Standard).await;
    let (index, bad) = failures(&r);
    assert_eq!(index, 3, "{}", r.failures());
    assert!(bad.iter().all(|(w, _)| w.starts_with("origin of vector")), "{bad:#?}");
    assert!(r.failures().contains("shadowed"), "{}", r.failures());
    let operand = r.environment.operand.as_ref().unwrap();
    assert_eq!(operand.flavor, "standard");
    assert!(operand.extensions.iter().any(|e| e == "vector") && operand.extensions.iter().any(|e| e == "cube"));
}
