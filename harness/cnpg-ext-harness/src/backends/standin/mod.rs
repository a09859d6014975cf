//! The stand-in operator: what CloudNativePG does to a Cluster's instances, written once for
//! every backend that has no operator, over an [`InstanceRuntime`] (local postmasters,
//! containers). It creates the primary then streaming replicas, classifies every applied
//! change with the model's one classifier ([`cnpg_ext_model::Change`]) and acts on it
//! (rolling replacement replicas-first, reload, or nothing), reconciles `Database` resources,
//! and reports what it did; it never judges.

mod operator;
mod runtime;

use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use cnpg_ext_backend::Backend;
use cnpg_ext_model::backend::{
    ApplyOutcome, BackendError, InstanceObservation, InstanceRef, InstanceRestart, Role, RolloutRecord,
};
use cnpg_ext_model::plan::{ClusterPlan, PlanOptions};
use cnpg_ext_model::{Change, Cluster, ClusterDoc, CnpgVersion, DatabaseDoc};

pub(crate) use operator::{classify, operator_conf, reconcile_database, Action, INSTANCE_CONF};
// Used by the container backend (cargo feature `container`).
#[cfg_attr(not(feature = "container"), allow(unused_imports))]
pub(crate) use runtime::{environ_map, fatal_reason, ld_library_path_of, InstanceRuntime, Slot};

/// How long an instance may take to accept connections after a start.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A [`Backend`] made of the stand-in operator and one runtime.
pub(crate) struct StandIn<R: InstanceRuntime> {
    runtime: R,
    cnpg: CnpgVersion,
    cluster: Option<Cluster>,
    slots: Vec<Slot>,
}

impl<R: InstanceRuntime> StandIn<R> {
    pub(crate) fn new(runtime: R, cnpg: CnpgVersion) -> StandIn<R> {
        StandIn { runtime, cnpg, cluster: None, slots: Vec::new() }
    }

    fn plan(&self, cluster: &Cluster, slot: &Slot) -> ClusterPlan {
        ClusterPlan::derive(cluster, &PlanOptions { mount_root: self.runtime.mount_root(slot), cnpg: self.cnpg })
    }

    fn slot(&self, name: &str) -> Result<&Slot, BackendError> {
        self.slots.iter().find(|s| s.name == name).ok_or_else(|| failed(format!("no instance named `{name}`")))
    }

    async fn start(&mut self, idx: usize, cluster: &Cluster) -> Result<(), BackendError> {
        let slot = self.slots[idx].clone();
        let plan = self.plan(cluster, &slot);
        self.runtime.start(&slot, &plan).await?;
        self.wait_ready(&slot).await
    }

    /// Until the instance answers SQL (a standby accepts connections before it is consistent),
    /// failing fast with the instance's own log when it stops while starting.
    async fn wait_ready(&mut self, slot: &Slot) -> Result<(), BackendError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let cfg = runtime::conn_config(&self.runtime.socket_dir(slot), "postgres", "postgres");
        let poll = self.runtime.exit_poll_interval();
        let mut next_poll = Instant::now() + poll;
        let mut last = String::new();
        loop {
            match cfg.connect(tokio_postgres::NoTls).await {
                Ok((client, conn)) => {
                    tokio::spawn(conn);
                    if client.simple_query("SELECT 1").await.is_ok() {
                        return Ok(());
                    }
                }
                Err(e) => last = e.to_string(),
            }
            if Instant::now() >= next_poll {
                next_poll = Instant::now() + poll;
                if let Some(why) = self.runtime.stopped(slot).await {
                    let log = self.runtime.log_tail(slot).await;
                    // The postmaster's own reason first: its last FATAL/PANIC line.
                    let reason = runtime::fatal_reason(&log).unwrap_or_else(|| why.clone());
                    return Err(failed(format!("{} could not start: {reason}\n({why}; its log:)\n{log}", slot.name)));
                }
            }
            if Instant::now() >= deadline {
                return Err(failed(format!(
                    "waited {}s for {} to accept connections; last error: {last}; log:\n{}",
                    READY_TIMEOUT.as_secs(),
                    slot.name,
                    self.runtime.log_tail(slot).await
                )));
            }
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    }

    /// The primary, then each replica from a base backup of the running primary.
    async fn create(&mut self, cluster: &Cluster) -> Result<(), BackendError> {
        self.slots = (1..=cluster.spec.instances)
            .map(|ordinal| Slot {
                name: format!("{}-{ordinal}", cluster.metadata.name),
                ordinal,
                role: if ordinal == 1 { Role::Primary } else { Role::Replica },
            })
            .collect();
        for slot in &self.slots {
            check_socket_path(&self.runtime.socket_dir(slot))?;
        }
        let primary = self.slots[0].clone();
        for idx in 0..self.slots.len() {
            let slot = self.slots[idx].clone();
            self.runtime.provision(&slot, &primary).await?;
            self.start(idx, cluster).await?;
        }
        Ok(())
    }

    /// Replicas first (highest ordinal first), then the primary: the operator's order.
    fn rollout_order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.slots.len()).filter(|i| self.slots[*i].role == Role::Replica).collect();
        order.sort_by_key(|i| std::cmp::Reverse(self.slots[*i].ordinal));
        order.extend((0..self.slots.len()).filter(|i| self.slots[*i].role == Role::Primary));
        order
    }

    async fn rolling_restart(&mut self, cluster: &Cluster) -> Result<RolloutRecord, BackendError> {
        let mut record = RolloutRecord::default();
        let planned = self.rollout_order();
        let mut order = planned.clone();
        let lie = crate::plumbing::supervisor::rollout_primary_first();
        if lie {
            order.rotate_right(1);
        }
        for idx in order {
            let slot = self.slots[idx].clone();
            let old_id = self.runtime.identity(&slot);
            for _ in 0..crate::plumbing::supervisor::rollout_restarts_of(&slot.name) {
                self.runtime.stop(&slot).await?;
                self.start(idx, cluster).await?;
            }
            record.restarts.push(InstanceRestart {
                instance: slot.name.clone(),
                role: slot.role,
                old_id,
                new_id: self.runtime.identity(&slot),
                at: Utc::now(),
            });
        }
        if lie {
            let position = |name: &str| planned.iter().position(|i| self.slots[*i].name == name);
            record.restarts.sort_by_key(|r| position(&r.instance));
        }
        Ok(record)
    }

    async fn reload_all(&mut self, cluster: &Cluster) -> Result<(), BackendError> {
        for slot in self.slots.clone() {
            let plan = self.plan(cluster, &slot);
            self.runtime.write_settings(&slot, &plan)?;
            let client = self.connect(&slot.name, "postgres", "postgres").await?;
            client.simple_query("SELECT pg_reload_conf()").await.map_err(|e| {
                failed(format!("reload of {}: {}", slot.name, crate::plumbing::sql::describe_error(&e)))
            })?;
        }
        // The postmaster applies a reload asynchronously: until a fresh session of every
        // instance shows the new search paths (what is shown then is the verifier's to judge).
        for slot in self.slots.clone() {
            let plan = self.plan(cluster, &slot);
            let want = [plan.extension_control_path.clone(), plan.dynamic_library_path.clone()];
            let start = Instant::now();
            loop {
                let shown = self.search_paths(&slot.name).await;
                if shown.as_ref() == Some(&want) || start.elapsed() >= READY_TIMEOUT {
                    tracing::debug!("{}: reload seen after {:?}: {shown:?}", slot.name, start.elapsed());
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    /// `extension_control_path` and `dynamic_library_path` as a new session sees them.
    async fn search_paths(&self, instance: &str) -> Option<[String; 2]> {
        let client = self.connect(instance, "postgres", "postgres").await.ok()?;
        let mut out = [String::new(), String::new()];
        for (i, guc) in ["extension_control_path", "dynamic_library_path"].into_iter().enumerate() {
            let rows = crate::plumbing::sql::query_text(&client, &format!("SHOW {guc}")).await.ok()?;
            out[i] = rows.first().and_then(|r| r.first().cloned().flatten())?;
        }
        Some(out)
    }
}

/// Longest path a unix socket can have (`sun_path` is 108 bytes with its terminating NUL).
const SOCKET_PATH_MAX: usize = 107;

/// A socket PostgreSQL could not create (and a client would wait a minute for) is refused
/// before anything starts, naming the path and what to do.
fn check_socket_path(dir: &std::path::Path) -> Result<(), BackendError> {
    let socket = dir.join(".s.PGSQL.5432");
    let len = socket.as_os_str().len();
    if len > SOCKET_PATH_MAX {
        return Err(BackendError::Unusable(format!(
            "the instance socket {} is {len} bytes long, over the {SOCKET_PATH_MAX} a unix socket path may have: use a shorter --workdir (or shorter scenario and cluster names)",
            socket.display()
        )));
    }
    Ok(())
}

fn failed(msg: impl Into<String>) -> BackendError {
    BackendError::Failed(msg.into())
}

#[async_trait]
impl<R: InstanceRuntime> Backend for StandIn<R> {
    fn name(&self) -> &'static str {
        self.runtime.name()
    }

    fn plan_for(&self, cluster: &Cluster, instance: &str) -> ClusterPlan {
        match self.slots.iter().find(|s| s.name == instance) {
            Some(slot) => self.plan(cluster, slot),
            None => ClusterPlan::derive(cluster, &PlanOptions { mount_root: "/extensions".into(), cnpg: self.cnpg }),
        }
    }

    async fn apply_cluster(&mut self, doc: &ClusterDoc) -> Result<ApplyOutcome, BackendError> {
        let cluster = &doc.cluster;
        let action = classify(self.cluster.as_ref(), cluster, self.cnpg, self.runtime.name())?;
        // Stored even when nothing happens now: an `ld_library_path` change waits for a restart.
        let first = self.cluster.replace(cluster.clone()).is_none();
        match action {
            Action::Create => match self.create(cluster).await {
                Ok(()) => Ok(ApplyOutcome::Created),
                Err(e) => {
                    if first {
                        self.cluster = None;
                    }
                    Err(e)
                }
            },
            Action::Update(Change::PodSpecRollout | Change::RestartRequired) => {
                Ok(ApplyOutcome::RolledOut { record: self.rolling_restart(cluster).await? })
            }
            Action::Update(Change::SearchPathReload) => {
                self.reload_all(cluster).await?;
                Ok(ApplyOutcome::Reloaded)
            }
            Action::Update(Change::EnvironmentOnly | Change::Nothing) => Ok(ApplyOutcome::Unchanged),
        }
    }

    async fn apply_database(&mut self, doc: &DatabaseDoc) -> Result<Vec<String>, BackendError> {
        let primary = self.slots.first().ok_or_else(|| failed("no cluster yet: apply a Cluster first"))?.name.clone();
        reconcile_database(&*self, &primary, &doc.database).await
    }

    async fn restart(&mut self) -> Result<RolloutRecord, BackendError> {
        let cluster = self.cluster.clone().ok_or_else(|| failed("no cluster to restart: apply a Cluster first"))?;
        self.rolling_restart(&cluster).await
    }

    async fn instances(&self) -> Result<Vec<InstanceRef>, BackendError> {
        Ok(self.slots.iter().map(|s| InstanceRef { name: s.name.clone(), role: s.role }).collect())
    }

    async fn connect(
        &self,
        instance: &str,
        database: &str,
        user: &str,
    ) -> Result<tokio_postgres::Client, BackendError> {
        let slot = self.slot(instance)?;
        let (client, conn) = runtime::conn_config(&self.runtime.socket_dir(slot), database, user)
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| {
                failed(format!(
                    "cannot connect to {instance}/{database} as {user}: {}",
                    crate::plumbing::sql::describe_error(&e)
                ))
            })?;
        tokio::spawn(conn);
        Ok(client)
    }

    async fn inspect(&self, instance: &str, plan: &ClusterPlan) -> Result<InstanceObservation, BackendError> {
        let slot = self.slot(instance)?.clone();
        let client = self.connect(instance, "postgres", "postgres").await?;
        self.runtime.observe(&slot, plan, &client).await
    }

    async fn server_log(&self, instance: &str) -> Option<String> {
        let slot = self.slot(instance).ok()?;
        self.runtime.server_log(slot).await
    }

    async fn teardown(&mut self, keep: bool) -> Result<(), BackendError> {
        let mut slots = self.slots.clone();
        slots.reverse();
        self.runtime.teardown(&slots, keep).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_paths_longer_than_a_unix_socket_allows_are_refused() {
        // 107 bytes with the socket's file name: accepted; one more: refused, naming the path.
        let dir = format!("/{}", "d".repeat(107 - "/.s.PGSQL.5432".len() - 1));
        assert!(check_socket_path(std::path::Path::new(&dir)).is_ok());
        let longer = format!("{dir}x");
        let err = check_socket_path(std::path::Path::new(&longer)).unwrap_err().to_string();
        assert!(err.contains("108 bytes") && err.contains(&longer) && err.contains("--workdir"), "{err}");
    }
}
