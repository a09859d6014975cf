//! The contract every backend implements (local and container stand-ins, kind): it *does*
//! (deploy, update, restart), gives SQL sessions and *reports what it observes*; it never
//! judges. The data it exchanges is `cnpg_ext_model::backend`; this crate adds only the
//! trait and the database client it hands out, so that the model stays pure.

use async_trait::async_trait;
use cnpg_ext_model::backend::{ApplyOutcome, BackendError, InstanceObservation, InstanceRef, RolloutRecord};
use cnpg_ext_model::{CatalogDoc, Cluster, ClusterDoc, ClusterPlan, DatabaseDoc};

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

    /// Create or update an `ImageCatalog` / `ClusterImageCatalog`. A real cluster gets
    /// `doc.raw`; the stand-ins have nothing to do (catalog extensions are resolved into each
    /// Cluster's list when the scenario loads, as the operator resolves them).
    async fn apply_catalog(&mut self, doc: &CatalogDoc) -> Result<(), BackendError> {
        let _ = doc;
        Ok(())
    }

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

    /// `instance`'s server log (the postmaster's, whole where the backend can read it
    /// whole), when the backend can read it: the evidence of a failure. Default: not
    /// available.
    async fn server_log(&self, instance: &str) -> Option<String> {
        let _ = instance;
        None
    }

    /// The extension settings (`extension_control_path`, `dynamic_library_path`,
    /// `shared_preload_libraries`) as `instance`'s postmaster has them, read without a SQL
    /// session of the harness's own (kind: `psql` in the pod), for evidence when no session
    /// can be opened. Default: not available.
    async fn settings(&self, instance: &str) -> Option<Vec<(String, String)>> {
        let _ = instance;
        None
    }

    /// Stop and remove everything the backend started, unless `keep`.
    async fn teardown(&mut self, keep: bool) -> Result<(), BackendError>;
}
