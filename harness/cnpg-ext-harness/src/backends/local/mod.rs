//! The `local` runtime: real PostgreSQL 18 processes on this machine, under the stand-in
//! operator.
//!
//! Each instance is a postmaster with its own data directory; image volumes are the unpacked
//! images placed read-only at `<instance>/extensions/<name>`; replacing an instance is
//! restarting its postmaster with the new mounts, GUCs and environment. Replicas are
//! streaming standbys made by `pg_basebackup -R`.

mod env;
mod postmaster;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cnpg_ext_model::backend::{BackendError, InstanceObservation, MountObservation, Role};
use cnpg_ext_model::plan::ClusterPlan;
use cnpg_ext_model::CnpgVersion;

pub(crate) use env::LocalEnv;
use postmaster::{Postmaster, StartSpec};

use crate::backends::standin::{self, InstanceRuntime, Slot, StandIn};
use crate::images::store::ImageStore;
use crate::plumbing::fsutil;

const STOP_GRACE: Duration = Duration::from_secs(20);

/// The local backend: the stand-in operator over local postmasters.
pub(crate) type LocalBackend = StandIn<LocalRuntime>;

impl LocalBackend {
    /// A backend whose instances live under `dir` (created, removed by `teardown`).
    pub(crate) fn local(env: Arc<LocalEnv>, images: Arc<ImageStore>, cnpg: CnpgVersion, dir: PathBuf) -> LocalBackend {
        StandIn::new(LocalRuntime { env, images, dir, running: BTreeMap::new() }, cnpg)
    }
}

pub(crate) struct LocalRuntime {
    env: Arc<LocalEnv>,
    images: Arc<ImageStore>,
    dir: PathBuf,
    /// The postmaster of each instance, by instance name.
    running: BTreeMap<String, Postmaster>,
}

impl LocalRuntime {
    fn inst_dir(&self, slot: &Slot) -> PathBuf {
        self.dir.join(slot.ordinal.to_string())
    }
    fn run_dir(&self, slot: &Slot) -> PathBuf {
        self.inst_dir(slot).join("run")
    }
    fn data(&self, slot: &Slot) -> PathBuf {
        self.run_dir(slot).join("data")
    }
    fn mounts(&self, slot: &Slot) -> PathBuf {
        self.inst_dir(slot).join("extensions")
    }

    /// Places every image of `plan` at its mount path, read-only (what kubelet does for the pod).
    fn mount(&self, slot: &Slot, plan: &ClusterPlan) -> Result<(), BackendError> {
        let root = self.mounts(slot);
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

    fn stop_now(&mut self, name: &str) {
        if let Some(mut p) = self.running.remove(name) {
            p.stop(STOP_GRACE);
        }
    }

    async fn base_backup(&self, slot: &Slot, primary: &Slot) -> Result<(), BackendError> {
        let mut cmd = std::process::Command::new(self.env.pg.bin("pg_basebackup"));
        cmd.arg("-D")
            .arg(self.data(slot))
            .arg("-h")
            .arg(self.run_dir(primary))
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
                slot.name,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }
}

fn failed(msg: impl Into<String>) -> BackendError {
    BackendError::Failed(msg.into())
}

#[async_trait]
impl InstanceRuntime for LocalRuntime {
    fn name(&self) -> &'static str {
        "local"
    }

    fn mount_root(&self, slot: &Slot) -> String {
        self.mounts(slot).display().to_string()
    }

    async fn provision(&mut self, slot: &Slot, primary: &Slot) -> Result<(), BackendError> {
        let run = self.run_dir(slot);
        std::fs::create_dir_all(&run).map_err(|e| failed(format!("{}: {e}", run.display())))?;
        self.env.run_as.own(&run).map_err(|e| failed(format!("{}: {e}", run.display())))?;
        if slot.role == Role::Primary {
            self.env.new_data_dir(&self.data(slot)).map_err(BackendError::Failed)
        } else {
            self.base_backup(slot, primary).await
        }
    }

    async fn start(&mut self, slot: &Slot, plan: &ClusterPlan) -> Result<(), BackendError> {
        self.mount(slot, plan)?;
        self.write_settings(slot, plan)?;
        let run_dir = self.run_dir(slot);
        let pm = Postmaster::start(&StartSpec {
            postgres: &self.env.pg.bin("postgres"),
            data: &self.data(slot),
            socket_dir: &run_dir,
            log: &run_dir.join("postgres.log"),
            ld_library_path: plan.ld_library_path.as_deref(),
            bin_path: plan.bin_path.as_deref(),
            env: &plan.env,
            run_as: &self.env.run_as,
        })
        .map_err(BackendError::Failed)?;
        self.running.insert(slot.name.clone(), pm);
        Ok(())
    }

    async fn stopped(&mut self, slot: &Slot) -> Option<String> {
        match self.running.get_mut(&slot.name) {
            Some(pm) => pm.exited().map(|status| format!("postgres exited: {status}")),
            None => Some("not started".into()),
        }
    }

    fn exit_poll_interval(&self) -> Duration {
        Duration::ZERO
    }

    async fn log_tail(&self, slot: &Slot) -> String {
        postmaster::log_tail(&self.run_dir(slot).join("postgres.log"), 15)
    }

    /// `postgres.log`, which every postmaster of the instance appends to.
    async fn server_log(&self, slot: &Slot) -> Option<String> {
        std::fs::read_to_string(self.run_dir(slot).join("postgres.log")).ok()
    }

    async fn stop(&mut self, slot: &Slot) -> Result<(), BackendError> {
        self.stop_now(&slot.name);
        Ok(())
    }

    fn identity(&self, slot: &Slot) -> String {
        self.running.get(&slot.name).map(|p| p.pid.to_string()).unwrap_or_default()
    }

    fn socket_dir(&self, slot: &Slot) -> PathBuf {
        self.run_dir(slot)
    }

    /// The operator's settings, in the file `postgresql.conf` includes.
    fn write_settings(&self, slot: &Slot, plan: &ClusterPlan) -> Result<(), BackendError> {
        let path = self.data(slot).join("cnpg-ext.conf");
        let text = format!("# written by cnpg-ext-harness as the operator would\n{}", standin::operator_conf(plan));
        std::fs::write(&path, text).map_err(|e| failed(format!("{}: {e}", path.display())))?;
        self.env.run_as.own(&path).map_err(|e| failed(format!("{}: {e}", path.display())))
    }

    async fn observe(
        &self,
        slot: &Slot,
        plan: &ClusterPlan,
        _client: &tokio_postgres::Client,
    ) -> Result<InstanceObservation, BackendError> {
        let instance = &slot.name;
        let pid = self.identity(slot);
        let environ = std::fs::read(format!("/proc/{pid}/environ"))
            .map_err(|e| failed(format!("cannot read the environment of {instance} (pid {pid}): {e}")))?;
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
                    read_only: path.is_dir().then(|| fsutil::no_write_permission(path)),
                }
            })
            .collect();
        Ok(InstanceObservation {
            instance: instance.clone(),
            ld_library_path: standin::ld_library_path_of(&environ),
            environment: standin::environ_map(&environ),
            mounts,
        })
    }

    async fn teardown(&mut self, slots: &[Slot], keep: bool) -> Result<(), BackendError> {
        for slot in slots {
            self.stop_now(&slot.name);
        }
        if !keep {
            fsutil::remove_tree(&self.dir).map_err(|e| failed(format!("cannot remove {}: {e}", self.dir.display())))?;
        }
        Ok(())
    }
}

impl Drop for LocalRuntime {
    fn drop(&mut self) {
        // Postmasters stop in their own Drop; replicas (higher ordinals) before the primary.
        let names: Vec<String> = self.running.keys().rev().cloned().collect();
        for name in names {
            self.stop_now(&name);
        }
    }
}
