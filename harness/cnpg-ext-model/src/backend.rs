//! The contract between the runner and an environment (local processes, containers, kind).
//!
//! A backend *does* (deploy, update, restart) and *reports what it observes*; it never
//! judges. Judging is the verification layer's job, written once for every backend.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::cluster::{Cluster, ClusterDoc, DatabaseDoc};
use crate::plan::ClusterPlan;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Primary,
    Replica,
}

/// One PostgreSQL instance (a pod, a container, a local postmaster).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceRef {
    pub name: String,
    pub role: Role,
}

/// One instance replaced or restarted during a rollout, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceRestart {
    pub instance: String,
    /// The role the instance held when the rollout began.
    pub role: Role,
    /// Identity before and after: a pod UID, a container id, a postmaster pid.
    pub old_id: String,
    pub new_id: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct RolloutRecord {
    pub restarts: Vec<InstanceRestart>,
    /// Cluster phases seen while it happened (kind); empty where there is no operator.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<String>,
}

/// What an apply did to the running instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum ApplyOutcome {
    Created,
    RolledOut {
        record: RolloutRecord,
    },
    /// Only reloadable settings changed.
    Reloaded,
    Unchanged,
}

/// What is inside one mounted image volume, as seen from the instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MountObservation {
    pub name: String,
    pub path: String,
    pub present: bool,
    /// Regular files below the mount, relative, sorted.
    pub files: Vec<String>,
    /// `Some(true)` when a write into the mount was refused; `None` when not checked.
    pub read_only: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceObservation {
    pub instance: String,
    /// `LD_LIBRARY_PATH` from the postmaster's environment (`/proc/<pid>/environ`).
    pub ld_library_path: Option<String>,
    /// The postmaster's whole environment (`/proc/<pid>/environ`): `PATH` and the
    /// extensions' `env` are judged from it.
    pub environment: std::collections::BTreeMap<String, String>,
    pub mounts: Vec<MountObservation>,
}

/// Errors of the environment (exit 3) or of a backend operation (a failed step).
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The environment cannot run this backend at all: what to install or set.
    #[error("environment unusable: {0}")]
    Unusable(String),
    /// An operation failed; the message says what was attempted and the last state seen.
    #[error("{0}")]
    Failed(String),
    /// The operator (or its stand-in) rejected the input.
    #[error("rejected: {0}")]
    Rejected(String),
}

#[async_trait]
pub trait Backend: Send + Sync {
    fn name(&self) -> &'static str;

    /// The plan of `cluster` as this backend mounts it on `instance` (mount roots differ:
    /// `/extensions` in a pod, a directory per instance locally).
    fn plan_for(&self, cluster: &Cluster, instance: &str) -> ClusterPlan;

    /// Create the cluster, or update it to `doc`. The backend (or the operator behind it)
    /// decides whether instances roll; the record says what happened. A real cluster gets
    /// `doc.raw`, the document as written; local stand-ins read the typed `doc.cluster`.
    async fn apply_cluster(&mut self, doc: &ClusterDoc) -> Result<ApplyOutcome, BackendError>;

    /// Reconcile a `Database` resource; returns the per-extension status messages.
    async fn apply_database(&mut self, doc: &DatabaseDoc) -> Result<Vec<String>, BackendError>;

    /// `kubectl cnpg restart`: restart every instance, replicas first.
    async fn restart(&mut self) -> Result<RolloutRecord, BackendError>;

    async fn instances(&self) -> Result<Vec<InstanceRef>, BackendError>;

    /// A SQL session on `instance`.
    async fn connect(&self, instance: &str, database: &str, user: &str)
        -> Result<tokio_postgres::Client, BackendError>;

    /// Environment and mounts of `instance`, as the instance sees them.
    async fn inspect(&self, instance: &str, plan: &ClusterPlan) -> Result<InstanceObservation, BackendError>;

    /// Stop and remove everything the backend started, unless `keep`.
    async fn teardown(&mut self, keep: bool) -> Result<(), BackendError>;
}
