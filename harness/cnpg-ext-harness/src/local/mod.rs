//! The `local` backend: real PostgreSQL 18 processes on this machine.
//!
//! Each Cluster instance is a postmaster with its own data directory; image volumes are the
//! unpacked images placed read-only at `<instance>/extensions/<name>`; a rolling update is a
//! restart of each instance, replicas first, with the new mounts, GUCs and environment —
//! what the operator does to pods. Replicas are streaming standbys made by `pg_basebackup -R`.

mod env;
mod postmaster;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use cnpg_ext_model::backend::{
    ApplyOutcome, Backend, BackendError, InstanceObservation, InstanceRef, InstanceRestart, MountObservation, Role,
    RolloutRecord,
};
use cnpg_ext_model::plan::{ClusterPlan, PlanOptions};
use cnpg_ext_model::{Cluster, ClusterDoc, CnpgVersion, DatabaseDoc};

pub use env::LocalEnv;
use postmaster::{Postmaster, StartSpec};

use crate::{fsutil, standin};
use crate::store::ImageStore;

const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_GRACE: Duration = Duration::from_secs(20);

struct Instance {
    name: String,
    ordinal: u32,
    role: Role,
    dir: PathBuf,
    process: Option<Postmaster>,
    /// The plan this instance was last (re)started with.
    started_with: Option<ClusterPlan>,
}

impl Instance {
    fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }
    fn data(&self) -> PathBuf {
        self.run_dir().join("data")
    }
    fn mount_root(&self) -> PathBuf {
        self.dir.join("extensions")
    }
    fn pid(&self) -> String {
        self.process.as_ref().map(|p| p.pid.to_string()).unwrap_or_default()
    }
}

pub struct LocalBackend {
    env: Arc<LocalEnv>,
    images: Arc<ImageStore>,
    cnpg: CnpgVersion,
    dir: PathBuf,
    cluster: Option<Cluster>,
    instances: Vec<Instance>,
}

impl LocalBackend {
    /// A backend whose instances live under `dir` (created, removed by `teardown`).
    pub fn new(env: Arc<LocalEnv>, images: Arc<ImageStore>, cnpg: CnpgVersion, dir: PathBuf) -> LocalBackend {
        LocalBackend { env, images, cnpg, dir, cluster: None, instances: Vec::new() }
    }

    fn plan(&self, cluster: &Cluster, inst: &Instance) -> ClusterPlan {
        ClusterPlan::derive(
            cluster,
            &PlanOptions { mount_root: inst.mount_root().display().to_string(), cnpg: self.cnpg },
        )
    }

    /// Places every image of `plan` at its mount path, read-only (what kubelet does for the pod).
    fn mount(&self, inst: &Instance, plan: &ClusterPlan) -> Result<(), BackendError> {
        let root = inst.mount_root();
        fsutil::remove_tree(&root).map_err(|e| failed(format!("cannot clear {}: {e}", root.display())))?;
        std::fs::create_dir_all(&root).map_err(|e| failed(format!("{}: {e}", root.display())))?;
        for ext in &plan.extensions {
            let image = self.images.get(&ext.image).ok_or_else(|| {
                BackendError::Failed(format!("image `{}` of extension `{}` was not prepared", ext.image, ext.name))
            })?;
            let dest = Path::new(&ext.mount_path);
            fsutil::link_or_copy_tree(&image.rootfs, dest)
                .map_err(|e| failed(format!("cannot mount {} at {}: {e}", ext.image, dest.display())))?;
            fsutil::make_read_only(dest).map_err(|e| failed(format!("{}: {e}", dest.display())))?;
        }
        Ok(())
    }

    /// The operator's settings for this instance, in the file `postgresql.conf` includes.
    fn write_conf(&self, inst: &Instance, plan: &ClusterPlan) -> Result<(), BackendError> {
        let path = inst.data().join("cnpg-ext.conf");
        let text = format!("# written by cnpg-ext-harness as the operator would\n{}", standin::operator_conf(plan));
        std::fs::write(&path, text).map_err(|e| failed(format!("{}: {e}", path.display())))?;
        self.env.run_as.own(&path).map_err(|e| failed(format!("{}: {e}", path.display())))
    }

    async fn start(&mut self, idx: usize, plan: ClusterPlan) -> Result<(), BackendError> {
        let inst = &self.instances[idx];
        self.mount(inst, &plan)?;
        self.write_conf(inst, &plan)?;
        let run_dir = inst.run_dir();
        let log = run_dir.join("postgres.log");
        let pm = Postmaster::start(&StartSpec {
            postgres: &self.env.pg.bin("postgres"),
            data: &inst.data(),
            socket_dir: &run_dir,
            log: &log,
            ld_library_path: plan.ld_library_path.as_deref(),
            run_as: &self.env.run_as,
        })
        .map_err(BackendError::Failed)?;
        let inst = &mut self.instances[idx];
        inst.process = Some(pm);
        inst.started_with = Some(plan);
        wait_ready(inst).await
    }

    fn stop(&mut self, idx: usize) {
        if let Some(mut p) = self.instances[idx].process.take() {
            p.stop(STOP_GRACE);
        }
    }

    async fn create(&mut self, cluster: &Cluster) -> Result<(), BackendError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| failed(format!("{}: {e}", self.dir.display())))?;
        for ordinal in 1..=cluster.spec.instances {
            let dir = self.dir.join(ordinal.to_string());
            let run = dir.join("run");
            std::fs::create_dir_all(&run).map_err(|e| failed(format!("{}: {e}", run.display())))?;
            self.env.run_as.own(&run).map_err(|e| failed(format!("{}: {e}", run.display())))?;
            self.instances.push(Instance {
                name: format!("{}-{}", cluster.metadata.name, ordinal),
                ordinal,
                role: if ordinal == 1 { Role::Primary } else { Role::Replica },
                dir,
                process: None,
                started_with: None,
            });
        }
        // The primary from the initdb template, then each replica by streaming base backup.
        self.env.new_data_dir(&self.instances[0].data()).map_err(BackendError::Failed)?;
        let plan = self.plan(cluster, &self.instances[0]);
        self.start(0, plan).await?;
        for idx in 1..self.instances.len() {
            self.base_backup(idx).await?;
            let plan = self.plan(cluster, &self.instances[idx]);
            self.start(idx, plan).await?;
        }
        Ok(())
    }

    async fn base_backup(&self, idx: usize) -> Result<(), BackendError> {
        let primary = &self.instances[0];
        let inst = &self.instances[idx];
        let mut cmd = std::process::Command::new(self.env.pg.bin("pg_basebackup"));
        cmd.arg("-D")
            .arg(inst.data())
            .arg("-h")
            .arg(primary.run_dir())
            .args(["-p", "5432", "-U", "postgres", "-R", "-X", "stream", "-c", "fast", "--no-sync"])
            .env_clear()
            .env("PATH", "/usr/bin:/bin");
        self.env.run_as.apply(&mut cmd);
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .map_err(|e| failed(e.to_string()))?
            .map_err(|e| failed(format!("cannot run pg_basebackup: {e}")))?;
        if !out.status.success() {
            return Err(failed(format!(
                "pg_basebackup for {} failed: {}",
                inst.name,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    /// Replicas first (highest ordinal first), then the primary: the operator's order.
    fn rollout_order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.instances.len()).filter(|i| self.instances[*i].role == Role::Replica).collect();
        order.sort_by_key(|i| std::cmp::Reverse(self.instances[*i].ordinal));
        order.extend((0..self.instances.len()).filter(|i| self.instances[*i].role == Role::Primary));
        order
    }

    async fn rolling_restart(&mut self, cluster: &Cluster) -> Result<RolloutRecord, BackendError> {
        let mut record = RolloutRecord::default();
        for idx in self.rollout_order() {
            let old_id = self.instances[idx].pid();
            self.stop(idx);
            let plan = self.plan(cluster, &self.instances[idx]);
            self.start(idx, plan).await?;
            let inst = &self.instances[idx];
            record.restarts.push(InstanceRestart {
                instance: inst.name.clone(),
                role: inst.role,
                old_id,
                new_id: inst.pid(),
                at: Utc::now(),
            });
        }
        Ok(record)
    }

    fn instance(&self, name: &str) -> Result<&Instance, BackendError> {
        self.instances
            .iter()
            .find(|i| i.name == name)
            .ok_or_else(|| failed(format!("no instance named `{name}`")))
    }

    async fn reload_all(&mut self, cluster: &Cluster) -> Result<(), BackendError> {
        for idx in 0..self.instances.len() {
            let plan = self.plan(cluster, &self.instances[idx]);
            self.write_conf(&self.instances[idx], &plan)?;
            let client = self.connect(&self.instances[idx].name.clone(), "postgres", "postgres").await?;
            client
                .simple_query("SELECT pg_reload_conf()")
                .await
                .map_err(|e| failed(format!("reload of {}: {e}", self.instances[idx].name)))?;
        }
        // The postmaster applies the reload asynchronously; give its children a moment.
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(())
    }
}

fn failed(msg: impl Into<String>) -> BackendError {
    BackendError::Failed(msg.into())
}

fn conn_config(run_dir: &Path, database: &str, user: &str) -> tokio_postgres::Config {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host_path(run_dir).port(5432).user(user).dbname(database).application_name("cnpg-ext-harness");
    cfg.connect_timeout(Duration::from_secs(10));
    cfg
}

async fn wait_ready(inst: &mut Instance) -> Result<(), BackendError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let cfg = conn_config(&inst.run_dir(), "postgres", "postgres");
    let mut last = String::new();
    loop {
        let pm = inst.process.as_mut().expect("started");
        if let Some(status) = pm.exited() {
            return Err(failed(format!(
                "postgres of {} exited ({status}) while starting; log:\n{}",
                inst.name,
                pm.log_tail(15)
            )));
        }
        match cfg.connect(tokio_postgres::NoTls).await {
            Ok((client, conn)) => {
                tokio::spawn(conn);
                // A standby accepts connections before it has replayed to consistency.
                if client.simple_query("SELECT 1").await.is_ok() {
                    return Ok(());
                }
            }
            Err(e) => last = e.to_string(),
        }
        if Instant::now() >= deadline {
            return Err(failed(format!(
                "waited {}s for {} to accept connections; last error: {last}; log:\n{}",
                READY_TIMEOUT.as_secs(),
                inst.name,
                pm_tail(inst)
            )));
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
}

fn pm_tail(inst: &Instance) -> String {
    inst.process.as_ref().map(|p| p.log_tail(15)).unwrap_or_default()
}

#[async_trait]
impl Backend for LocalBackend {
    fn name(&self) -> &'static str {
        "local"
    }

    fn plan_for(&self, cluster: &Cluster, instance: &str) -> ClusterPlan {
        match self.instances.iter().find(|i| i.name == instance) {
            Some(inst) => self.plan(cluster, inst),
            None => ClusterPlan::derive(cluster, &PlanOptions { mount_root: "/extensions".into(), cnpg: self.cnpg }),
        }
    }

    async fn apply_cluster(&mut self, doc: &ClusterDoc) -> Result<ApplyOutcome, BackendError> {
        let cluster = &doc.cluster;
        let change = standin::classify(self.cluster.as_ref(), cluster, self.cnpg, "local")?;
        // Stored even when nothing happens now: an `ld_library_path` change waits for a restart.
        let first = self.cluster.replace(cluster.clone()).is_none();
        match change {
            standin::Change::Create => {
                if let Err(e) = self.create(cluster).await {
                    if first {
                        self.cluster = None;
                    }
                    return Err(e);
                }
                Ok(ApplyOutcome::Created)
            }
            standin::Change::Rollout => Ok(ApplyOutcome::RolledOut { record: self.rolling_restart(cluster).await? }),
            standin::Change::Reload => {
                self.reload_all(cluster).await?;
                Ok(ApplyOutcome::Reloaded)
            }
            standin::Change::Nothing => Ok(ApplyOutcome::Unchanged),
        }
    }

    async fn apply_database(&mut self, doc: &DatabaseDoc) -> Result<Vec<String>, BackendError> {
        let primary = self.instances.first().ok_or_else(|| failed("no cluster yet: apply a Cluster first"))?.name.clone();
        standin::reconcile_database(&*self, &primary, &doc.database).await
    }

    async fn restart(&mut self) -> Result<RolloutRecord, BackendError> {
        let cluster = self.cluster.clone().ok_or_else(|| failed("no cluster to restart: apply a Cluster first"))?;
        self.rolling_restart(&cluster).await
    }

    async fn instances(&self) -> Result<Vec<InstanceRef>, BackendError> {
        Ok(self.instances.iter().map(|i| InstanceRef { name: i.name.clone(), role: i.role }).collect())
    }

    async fn connect(&self, instance: &str, database: &str, user: &str) -> Result<tokio_postgres::Client, BackendError> {
        let inst = self.instance(instance)?;
        let (client, conn) = conn_config(&inst.run_dir(), database, user)
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| failed(format!("cannot connect to {instance}/{database} as {user}: {}", crate::sql::describe_error(&e))))?;
        tokio::spawn(conn);
        Ok(client)
    }

    async fn inspect(&self, instance: &str, plan: &ClusterPlan) -> Result<InstanceObservation, BackendError> {
        let inst = self.instance(instance)?;
        let pid = inst.pid();
        let environ = std::fs::read(format!("/proc/{pid}/environ"))
            .map_err(|e| failed(format!("cannot read the environment of {instance} (pid {pid}): {e}")))?;
        let env: BTreeMap<String, String> = environ
            .split(|b| *b == 0)
            .filter_map(|kv| {
                let s = String::from_utf8_lossy(kv);
                s.split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect();
        let mounts = plan
            .extensions
            .iter()
            .map(|ext| {
                let path = Path::new(&ext.mount_path);
                MountObservation {
                    name: ext.name.clone(),
                    path: ext.mount_path.clone(),
                    present: path.is_dir(),
                    files: fsutil::list_files(path),
                    read_only: path.is_dir().then(|| fsutil::read_only_for(path, self.env.run_as.uid)),
                }
            })
            .collect();
        Ok(InstanceObservation { instance: instance.to_string(), ld_library_path: env.get("LD_LIBRARY_PATH").cloned(), mounts })
    }

    async fn teardown(&mut self, keep: bool) -> Result<(), BackendError> {
        for idx in (0..self.instances.len()).rev() {
            self.stop(idx);
        }
        if !keep {
            fsutil::remove_tree(&self.dir).map_err(|e| failed(format!("cannot remove {}: {e}", self.dir.display())))?;
        }
        Ok(())
    }
}

impl Drop for LocalBackend {
    fn drop(&mut self) {
        // Postmasters stop in their own Drop; make sure replicas go before the primary.
        for idx in (0..self.instances.len()).rev() {
            self.stop(idx);
        }
    }
}


