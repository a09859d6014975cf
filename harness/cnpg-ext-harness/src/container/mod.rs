//! The `container` backend: instances are containers of a real OCI engine (podman, docker ≥ 28)
//! with one `--mount type=image` per extension, the mechanism kubelet asks of the runtime.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use cnpg_ext_model::backend::{ApplyOutcome, Backend, BackendError, InstanceObservation, InstanceRef, RolloutRecord};
use cnpg_ext_model::{Cluster, ClusterPlan, CnpgVersion, Database};
use cnpg_ext_pg::PgInstall;

use crate::error::HarnessError;
use crate::store::ImageStore;

/// Engine selection and flags (see README: some hosts need extra flags).
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    pub engine: Option<String>,
    pub pg_image: Option<String>,
}

/// What every container cluster of a run shares: the engine, the operand image, the loaded
/// extension images. Removes what it created when finished.
pub struct ContainerEnv {}

impl ContainerEnv {
    pub fn prepare(
        _pg: &PgInstall,
        _store: &ImageStore,
        _workdir: &Path,
        _run_id: &str,
        _opts: &EngineOptions,
    ) -> Result<ContainerEnv, HarnessError> {
        Err(HarnessError::Environment("the container backend is not built yet".into()))
    }

    /// Removes images/volumes/networks the run created, unless `keep`.
    pub fn finish(&self, _keep: bool) {}
}

pub struct ContainerBackend {}

impl ContainerBackend {
    pub fn new(_env: Arc<ContainerEnv>, _store: Arc<ImageStore>, _cnpg: CnpgVersion, _scenario_id: &str) -> ContainerBackend {
        ContainerBackend {}
    }
}

#[async_trait]
impl Backend for ContainerBackend {
    fn name(&self) -> &'static str {
        "container"
    }
    fn plan_for(&self, cluster: &Cluster, _instance: &str) -> ClusterPlan {
        ClusterPlan::derive(cluster, &Default::default())
    }
    async fn apply_cluster(&mut self, _cluster: &Cluster) -> Result<ApplyOutcome, BackendError> {
        Err(BackendError::Unusable("not built".into()))
    }
    async fn apply_database(&mut self, _database: &Database) -> Result<Vec<String>, BackendError> {
        Err(BackendError::Unusable("not built".into()))
    }
    async fn restart(&mut self) -> Result<RolloutRecord, BackendError> {
        Err(BackendError::Unusable("not built".into()))
    }
    async fn instances(&self) -> Result<Vec<InstanceRef>, BackendError> {
        Ok(Vec::new())
    }
    async fn connect(&self, _i: &str, _d: &str, _u: &str) -> Result<tokio_postgres::Client, BackendError> {
        Err(BackendError::Unusable("not built".into()))
    }
    async fn inspect(&self, _i: &str, _p: &ClusterPlan) -> Result<InstanceObservation, BackendError> {
        Err(BackendError::Unusable("not built".into()))
    }
    async fn teardown(&mut self, _keep: bool) -> Result<(), BackendError> {
        Ok(())
    }
}
