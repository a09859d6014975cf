//! What the runner and an environment (local processes, containers, kind) exchange: roles,
//! instances, what an apply or a rollout did, what an instance shows, and the errors. The
//! `Backend` trait itself, with its database client, is the `cnpg-ext-backend` crate: this
//! crate stays pure.
//!
//! A backend *does* (deploy, update, restart) and *reports what it observes*; it never
//! judges. Judging is the verification layer's job, written once for every backend.

use chrono::{DateTime, Utc};
use serde::Serialize;

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
