//! The container runtime under the stand-in operator: one container per instance, its volume,
//! configuration and socket directories, start, stop, replacement and observation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cnpg_ext_model::backend::{BackendError, InstanceObservation, MountObservation, Role};
use cnpg_ext_model::{ClusterPlan, CnpgVersion};

use super::api;
use super::argv::{self, ImageMount, InstanceRun, LABEL_INSTANCE, LABEL_RUN, LABEL_SCENARIO, MOUNT_ROOT, PG_UID};
use super::engine::{self, strings, Engine};
use super::env::ContainerEnv;
use super::images::engine_reference;
use super::template::copy_tree_owned;
use crate::backends::standin::{InstanceRuntime, Slot, StandIn};
use crate::plumbing::sql::quote_literal;

/// How long a stopped instance gets after SIGINT (fast shutdown) before SIGKILL.
pub(super) const STOP_GRACE: Duration = Duration::from_secs(20);

pub(super) struct Instance {
    pub(super) name: String,
    pub(super) role: Role,
    /// Host directory: `run/` (socket) and `conf/`.
    pub(super) dir: PathBuf,
    /// Volume name, and the name of the instance's first container.
    pub(super) cname: String,
    /// How many containers of the instance were replaced: each gets a name of its own, so that
    /// a replaced container is removed while its successor starts.
    pub(super) generation: u32,
    /// Id of the running container.
    pub(super) container: Option<String>,
    /// The running container, removed when dropped.
    pub(super) handle: Option<api::Handle>,
    /// Whether its volume was created.
    pub(super) volume: bool,
    /// A replica whose first container runs the base backup into its empty volume first.
    pub(super) bootstrap: bool,
}

impl Instance {
    pub(super) fn socket_dir(&self) -> PathBuf {
        self.dir.join("run")
    }
    pub(super) fn conf_dir(&self) -> PathBuf {
        self.dir.join("conf")
    }
    pub(super) fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }
    /// The name of the instance's current (or next) container.
    pub(super) fn container_name(&self) -> String {
        match self.generation {
            0 => self.cname.clone(),
            g => format!("{}-{g}", self.cname),
        }
    }
    pub(super) fn short_id(&self) -> String {
        self.container.as_deref().map(|c| c.chars().take(12).collect()).unwrap_or_default()
    }
}

/// The container backend: the stand-in operator over engine containers.
pub(crate) type ContainerBackend = StandIn<ContainerRuntime>;

impl ContainerBackend {
    pub(crate) fn container(env: Arc<ContainerEnv>, cnpg: CnpgVersion, scenario_id: &str) -> ContainerBackend {
        let dir = env.root.join(argv::sanitize(scenario_id));
        let runtime = ContainerRuntime {
            env,
            scenario: scenario_id.to_string(),
            dir,
            instances: BTreeMap::new(),
            removals: Vec::new(),
        };
        StandIn::new(runtime, cnpg)
    }
}

pub(crate) struct ContainerRuntime {
    pub(super) env: Arc<ContainerEnv>,
    pub(super) scenario: String,
    pub(super) dir: PathBuf,
    /// By instance name.
    pub(super) instances: BTreeMap<String, Instance>,
    /// Removals of replaced (stopped) containers, off the rollout's critical path; awaited by
    /// teardown before the volumes go.
    pub(super) removals: Vec<tokio::task::JoinHandle<Result<(), String>>>,
}

impl ContainerRuntime {
    pub(super) fn engine(&self) -> &Engine {
        &self.env.engine
    }

    pub(super) fn inst(&self, slot: &Slot) -> Result<&Instance, BackendError> {
        self.instances.get(&slot.name).ok_or_else(|| failed(format!("no instance named `{}`", slot.name)))
    }

    pub(super) fn labels(&self, inst: &Instance) -> Vec<(String, String)> {
        vec![
            (LABEL_RUN.to_string(), self.env.run_id.clone()),
            (LABEL_SCENARIO.to_string(), argv::sanitize(&self.scenario)),
            (LABEL_INSTANCE.to_string(), inst.name.clone()),
            // Whose run this is: a later run removes it when that owner is dead.
            crate::plumbing::supervisor::owner_label(),
        ]
    }

    /// The container's last lines; PostgreSQL logs to standard error.
    pub(super) async fn logs(&self, id: &str) -> String {
        api::log_tail(id, 15).await
    }

    /// `volume create` of an instance. With a host template (root), the volume is backed by
    /// the instance's `data/` directory, filled here: the template for the primary, an empty
    /// PGDATA owned by the postgres uid for a replica. Otherwise a plain engine volume that
    /// the engine fills by copy-up from the image.
    pub(super) async fn create_volume(&self, inst: &Instance) -> Result<(), BackendError> {
        let mut device = None;
        if let Some(template) = self.env.template.clone() {
            let data = inst.data_dir();
            let pgdata = data.join("pgdata");
            let primary = inst.role == Role::Primary;
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                std::fs::create_dir_all(&data)?;
                if primary {
                    copy_tree_owned(&template.join("pgdata"), &pgdata)
                } else {
                    make_owned_dir(&pgdata)
                }
            })
            .await
            .map_err(|e| failed(e.to_string()))?
            .map_err(|e| failed(format!("preparing the data of {}: {e}", inst.name)))?;
            device = Some(inst.data_dir());
        }
        api::create_volume(&inst.cname, &self.labels(inst), device.as_deref())
            .await
            .map_err(|e| failed(format!("creating the volume of {}: {e}", inst.name)))
    }

    pub(super) async fn base_backup(&self, slot: &Slot, primary: &Slot) -> Result<(), BackendError> {
        // The volume is first mounted on the image's empty standby directory (the engine's
        // copy-up gives it the postgres uid as owner), then at its place in the instance.
        let mount_at = argv::STANDBY_MOUNT;
        let inst = self.inst(slot)?;
        let primary_socket = self.inst(primary)?.socket_dir();
        let labels = self.labels(inst);
        let args = argv::base_backup_args(
            self.engine().kind,
            &self.engine().run_flags,
            &format!("{}-basebackup", inst.cname),
            &labels,
            &self.env.operand.image,
            &self.env.operand.bindir,
            &inst.cname,
            mount_at,
            &primary_socket,
        );
        self.engine().run(&args).await.map_err(|e| failed(format!("pg_basebackup for {}: {e}", inst.name)))?;
        Ok(())
    }

    /// The postmaster's environment, read from `/proc/<pid>/environ` inside the
    /// container (through PostgreSQL itself, else `cat` in the container) — never from the
    /// container's configuration, which says what was asked, not what the process has.
    pub(super) async fn postmaster_environment(
        &self,
        inst: &Instance,
        client: &tokio_postgres::Client,
    ) -> Result<std::collections::BTreeMap<String, String>, BackendError> {
        const SQL: &str = "SELECT pg_read_binary_file('/proc/' || split_part(pg_read_file('postmaster.pid'), E'\\n', 1) || '/environ')";
        let environ: Option<Vec<u8>> = match client.query_one(SQL, &[]).await {
            Ok(row) => row.try_get::<_, Vec<u8>>(0).ok(),
            Err(e) => {
                tracing::debug!(
                    "reading the postmaster environment through SQL: {}",
                    crate::plumbing::sql::describe_error(&e)
                );
                None
            }
        };
        let id = inst.container.clone().unwrap_or_default();
        let environ = match environ {
            Some(e) => e,
            // The container's first process is the postmaster (`exec postgres`).
            None => self
                .engine()
                .run(&strings(&["exec", &id, "cat", "/proc/1/environ"]))
                .await
                .map(String::into_bytes)
                .map_err(|e| failed(format!("cannot read the postmaster's environment in {}: {e}", inst.name)))?,
        };
        Ok(crate::backends::standin::environ_map(&environ))
    }
}

/// An instance after its volume was (or failed to be) created: whether teardown must remove
/// the volume, and whether a replica's first container runs its own base backup (with a
/// host template its volume holds an empty PGDATA owned by the postgres uid).
fn provisioned(inst: Instance, volume_created: bool, host_template: bool) -> Instance {
    let bootstrap = inst.role == Role::Replica && host_template;
    Instance { volume: volume_created, bootstrap, ..inst }
}

pub(super) fn prepare_dirs(inst: &Instance) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let (run, conf) = (inst.socket_dir(), inst.conf_dir());
    for d in [&run, &conf] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    // The postgres uid of the container creates its socket here.
    if nix::unistd::Uid::effective().is_root() {
        nix::unistd::chown(&run, Some(nix::unistd::Uid::from_raw(PG_UID)), Some(nix::unistd::Gid::from_raw(PG_UID)))
            .map_err(|e| format!("{}: {e}", run.display()))?;
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).map_err(|e| e.to_string())?;
    } else {
        // Rootless engines map uid 26 to a subordinate uid.
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o777)).map_err(|e| e.to_string())?;
    }
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
    Ok(())
}

pub(super) fn make_owned_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir(dir)?;
    std::os::unix::fs::chown(dir, Some(PG_UID), Some(PG_UID))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// What a write probe's outcome says: written → writable; `EROFS` → read-only; any other
/// refusal → nothing.
pub(super) fn write_probe_answer(outcome: Result<(), String>) -> Option<bool> {
    match outcome {
        Ok(()) => Some(false),
        Err(msg) if msg.contains("Read-only file system") => Some(true),
        Err(msg) => {
            tracing::debug!("write probe: {msg}");
            None
        }
    }
}

pub(super) fn failed(msg: impl Into<String>) -> BackendError {
    BackendError::Failed(msg.into())
}

#[async_trait]
impl InstanceRuntime for ContainerRuntime {
    fn name(&self) -> &'static str {
        "container"
    }

    fn mount_root(&self, _slot: &Slot) -> String {
        MOUNT_ROOT.into()
    }

    async fn provision(&mut self, slot: &Slot, primary: &Slot) -> Result<(), BackendError> {
        let inst = Instance {
            cname: argv::sanitize(&format!("{}-{}-{}", self.env.run_id, self.scenario, slot.name)),
            name: slot.name.clone(),
            role: slot.role,
            dir: self.dir.join(slot.ordinal.to_string()),
            container: None,
            handle: None,
            volume: false,
            bootstrap: false,
            generation: 0,
        };
        prepare_dirs(&inst).map_err(failed)?;
        let created = self.create_volume(&inst).await;
        let inst = provisioned(inst, created.is_ok(), self.env.template.is_some());
        let bootstrap = inst.bootstrap;
        self.instances.insert(slot.name.clone(), inst);
        created.map_err(|e| failed(format!("creating the volume of {}: {e}", slot.name)))?;
        if slot.role == Role::Replica && !bootstrap {
            self.base_backup(slot, primary).await?;
        }
        Ok(())
    }

    async fn start(&mut self, slot: &Slot, plan: &ClusterPlan) -> Result<(), BackendError> {
        let primary_socket = self.instances.values().find(|i| i.role == Role::Primary).map(|p| p.socket_dir());
        let inst = self.inst(slot)?;
        let conf = inst.conf_dir().join("postgresql.conf");
        std::fs::write(&conf, argv::postgresql_conf(plan)).map_err(|e| failed(format!("{}: {e}", conf.display())))?;
        let labels = self.labels(inst);
        let mounts: Vec<ImageMount> = plan
            .extensions
            .iter()
            .map(|e| ImageMount {
                reference: engine_reference(&self.env.run_id, &e.image),
                destination: e.mount_path.clone(),
            })
            .collect();
        let bootstrap = inst.bootstrap.then(|| argv::base_backup_command(&self.env.operand.bindir, argv::DATA_MOUNT));
        let primary_socket = (inst.role == Role::Replica).then_some(primary_socket).flatten();
        let (socket_dir, conf_dir) = (inst.socket_dir(), inst.conf_dir());
        let cname = inst.container_name();
        let run = InstanceRun {
            container: &cname,
            labels: &labels,
            image: &self.env.operand.image,
            bindir: &self.env.operand.bindir,
            volume: &inst.cname,
            socket_dir: &socket_dir,
            conf_dir: &conf_dir,
            primary_socket_dir: primary_socket.as_deref(),
            mounts: &mounts,
            ld_library_path: plan.ld_library_path.as_deref(),
            bin_path: plan.bin_path.as_deref(),
            env: &plan.env,
            bootstrap: bootstrap.as_deref(),
        };
        let spec = argv::instance_spec(&run, &self.env.host);
        if engine::stopping() {
            return Err(failed(format!("starting {}: interrupted", slot.name)));
        }
        // podman 4.3 can lose the race between two containers mounting the same image
        // (`error mounting …/merged … no such file or directory`): a transient failure of the
        // engine, retried a few times; any other failure is the instance's own.
        let mut started = match crate::plumbing::supervisor::container_create_refused(&self.scenario, &cname) {
            Some(refused) => Err(refused),
            None => api::start(&spec).await,
        };
        for _ in 0..3 {
            match &started {
                Err(e) if e.contains("error mounting") && e.contains("no such file or directory") => {
                    tracing::warn!("{}: retrying a start the engine failed to mount: {e}", slot.name);
                    let _ = self.engine().run(&strings(&["rm", "-f", &cname])).await;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    started = api::start(&spec).await;
                }
                _ => break,
            }
        }
        let handle = match started {
            Ok(h) => h,
            Err(e) => {
                // A postmaster that stops at once (a preload library that cannot load) makes
                // the start itself fail; its own words are in the container's log.
                let log = api::log_tail(&cname, 15).await;
                super::logs::keep(&self.inst(slot)?.dir, self.inst(slot)?.generation, &cname).await;
                let _ = self.engine().run(&strings(&["rm", "-f", &cname])).await;
                let reason = crate::backends::standin::fatal_reason(&e)
                    .or_else(|| crate::backends::standin::fatal_reason(&log))
                    .unwrap_or_else(|| e.clone());
                return Err(failed(format!(
                    "{} could not start: {reason}\n(starting its container: {e}; its log:)\n{log}",
                    slot.name
                )));
            }
        };
        let inst = self.instances.get_mut(&slot.name).expect("provisioned");
        inst.container = Some(handle.id().to_string());
        inst.handle = Some(handle);
        inst.bootstrap = false;
        Ok(())
    }

    async fn stopped(&mut self, slot: &Slot) -> Option<String> {
        let id = self.instances.get(&slot.name)?.container.clone()?;
        let (state, _) = api::state(&id).await.unwrap_or_default();
        let state = state.as_str();
        matches!(state, "exited" | "dead" | "stopped")
            .then(|| format!("its container {} is {state}", &id[..id.len().min(12)]))
    }

    fn exit_poll_interval(&self) -> Duration {
        // Each look is one inspect request to the Engine API (a few milliseconds).
        Duration::from_millis(250)
    }

    async fn log_tail(&self, slot: &Slot) -> String {
        let id = self.instances.get(&slot.name).and_then(|i| i.container.clone()).unwrap_or_default();
        self.logs(&id).await
    }

    async fn server_log(&self, slot: &Slot) -> Option<String> {
        let inst = self.instances.get(&slot.name)?;
        let name = inst.container_name();
        let running = inst.container.as_deref().map(|id| (id, name.as_str()));
        super::logs::whole_log(&inst.dir, &inst.cname, inst.generation, running).await
    }

    /// Stops the container (fast shutdown, SIGKILL after the grace); the volume stays. The
    /// stopped container is removed in the background while the next one starts under a
    /// name of its own; teardown waits for that removal.
    async fn stop(&mut self, slot: &Slot) -> Result<(), BackendError> {
        let Some(inst) = self.instances.get_mut(&slot.name) else { return Ok(()) };
        let (Some(id), handle) = (inst.container.take(), inst.handle.take()) else { return Ok(()) };
        let name = slot.name.clone();
        api::stop(&id, STOP_GRACE).await.map_err(|e| failed(format!("stopping {name}: {e}")))?;
        super::logs::keep(&inst.dir, inst.generation, &id).await;
        inst.generation += 1;
        if let Some(h) = handle {
            self.removals.push(tokio::spawn(async move {
                h.rm().await.map_err(|e| format!("removing the replaced container of {name}: {e}"))
            }));
        }
        Ok(())
    }

    fn identity(&self, slot: &Slot) -> String {
        self.instances.get(&slot.name).map(Instance::short_id).unwrap_or_default()
    }

    fn socket_dir(&self, slot: &Slot) -> PathBuf {
        self.instances
            .get(&slot.name)
            .map(Instance::socket_dir)
            .unwrap_or_else(|| self.dir.join(slot.ordinal.to_string()).join("run"))
    }

    fn write_settings(&self, slot: &Slot, plan: &ClusterPlan) -> Result<(), BackendError> {
        let path = self.inst(slot)?.conf_dir().join("postgresql.conf");
        std::fs::write(&path, argv::postgresql_conf(plan)).map_err(|e| failed(format!("{}: {e}", path.display())))
    }

    async fn observe(
        &self,
        slot: &Slot,
        plan: &ClusterPlan,
        client: &tokio_postgres::Client,
    ) -> Result<InstanceObservation, BackendError> {
        let inst = self.inst(slot)?;
        let environment = self.postmaster_environment(inst, client).await?;
        let ld_library_path = environment.get("LD_LIBRARY_PATH").cloned();
        let listed = self.list_mounts(inst, plan, client).await;
        let mut mounts = Vec::new();
        for ext in &plan.extensions {
            let files = listed.get(&ext.mount_path).cloned().flatten();
            let present = files.is_some();
            // A write attempt by the postgres process itself, inside the container: only the
            // kernel's EROFS says read-only ("Permission denied" is what a writable mount of
            // root-owned files answers too). The verifier judges from the mount itself first.
            let read_only = if present {
                let probe = format!("{}/.cnpg-ext-harness-write-probe", ext.mount_path);
                let answer = client.batch_execute(&format!("COPY (SELECT 1) TO {}", quote_literal(&probe))).await;
                write_probe_answer(answer.map_err(|e| crate::plumbing::sql::describe_error(&e)))
            } else {
                None
            };
            mounts.push(MountObservation {
                name: ext.name.clone(),
                path: ext.mount_path.clone(),
                present,
                files: files.unwrap_or_default(),
                read_only,
            });
        }
        Ok(InstanceObservation { instance: slot.name.clone(), ld_library_path, environment, mounts })
    }

    async fn teardown(&mut self, slots: &[Slot], keep: bool) -> Result<(), BackendError> {
        let mut handles = Vec::new();
        for s in slots {
            if let Some(inst) = self.instances.get_mut(&s.name) {
                if let (Some(id), Some(h)) = (inst.container.clone(), inst.handle.take()) {
                    handles.push((id, h));
                }
            }
        }
        let vols: Vec<String> = self.instances.values().filter(|i| i.volume).map(|i| i.cname.clone()).collect();
        let mut problems = Vec::new();
        for removal in std::mem::take(&mut self.removals) {
            match removal.await {
                Ok(Err(e)) => problems.push(e),
                Err(e) => problems.push(format!("removing a replaced container: {e}")),
                Ok(Ok(())) => {}
            }
        }
        if keep {
            for (id, h) in handles {
                let _ = api::stop(&id, STOP_GRACE).await;
                // Kept for inspection: not removed on drop (the run's label finds it).
                std::mem::forget(h);
            }
            return Ok(());
        }
        // Containers first (removing a volume in use deadlocks on podman 4.3); no grace, the
        // data is being thrown away.
        let removed = futures::future::join_all(
            handles
                .into_iter()
                .map(|(id, h)| async move { h.rm().await.map_err(|e| format!("removing container {id}: {e}")) }),
        )
        .await;
        problems.extend(removed.into_iter().filter_map(Result::err));
        let removed = futures::future::join_all(vols.iter().map(|v| api::remove_volume(v))).await;
        problems.extend(removed.into_iter().filter_map(Result::err));
        for i in self.instances.values_mut() {
            i.container = None;
            i.volume = false;
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(failed(problems.join("; ")))
        }
    }
}

impl Drop for ContainerRuntime {
    /// Containers still running are removed by their handles; outside a tokio runtime (a
    /// backend dropped after its runtime), one is made for that.
    fn drop(&mut self) {
        let handles: Vec<api::Handle> = self.instances.values_mut().filter_map(|i| i.handle.take()).collect();
        if handles.is_empty() {
            return;
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            drop(handles);
        } else if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
            let _guard = rt.enter();
            drop(handles);
        } else {
            // Without a runtime the handles cannot act; the run's label sweep removes them.
            handles.into_iter().for_each(std::mem::forget);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{provisioned, write_probe_answer, Instance};
    use cnpg_ext_model::backend::Role;

    fn fresh(role: Role) -> Instance {
        Instance {
            name: "c-2".into(),
            role,
            dir: "/w/2".into(),
            cname: "run-s-c-2".into(),
            generation: 0,
            container: None,
            handle: None,
            volume: false,
            bootstrap: false,
        }
    }

    #[test]
    fn a_provisioned_instance_knows_its_volume_and_who_runs_the_base_backup() {
        for (role, template, created) in [Role::Replica, Role::Primary]
            .into_iter()
            .flat_map(|r| [(r, true, true), (r, true, false), (r, false, true), (r, false, false)])
        {
            let i = provisioned(fresh(role), created, template);
            // Teardown removes the volume exactly when it was created.
            assert_eq!(i.volume, created, "{role:?} template={template} created={created}");
            // Only a replica over a host template runs its own base backup.
            assert_eq!(i.bootstrap, role == Role::Replica && template, "{role:?} template={template}");
            assert_eq!((i.name.as_str(), i.role, i.cname.as_str(), i.generation), ("c-2", role, "run-s-c-2", 0));
        }
    }

    #[test]
    fn only_erofs_says_read_only() {
        assert_eq!(write_probe_answer(Ok(())), Some(false));
        let erofs = "could not open file \"/extensions/a/x\" for writing: Read-only file system";
        assert_eq!(write_probe_answer(Err(erofs.into())), Some(true));
        let eacces = "could not open file \"/extensions/a/x\" for writing: Permission denied";
        assert_eq!(write_probe_answer(Err(eacces.into())), None);
    }
}
