//! [`KindBackend`]: the model's `Backend` on a Kubernetes cluster with CloudNativePG, one
//! namespace per scenario (the cluster prepared once by `environment`).

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use cnpg_ext_backend::Backend;
use cnpg_ext_model::backend::{ApplyOutcome, BackendError, InstanceObservation, InstanceRef, RolloutRecord};
use cnpg_ext_model::plan::{ClusterPlan, PlanOptions};
use cnpg_ext_model::{Cluster, ClusterDoc, DatabaseDoc};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
};
use serde_json::Value;

use crate::apply::{
    cluster_resource, database_resource, namespace_doc, namespaced,
    namespaced_cluster, restart_patch, restart_stamp, server_side_apply,
    server_side_apply_within, RESTART_ANNOTATION,
};
use crate::errors::{is_not_found, kube_error};
use crate::exec::{KubeExec, PodExec};
use crate::inspect::{check_pod_spec, inspect_command, parse_inspect_output, POSTGRES_CONTAINER};
use crate::options::KindOptions;
use crate::wait::{await_database, await_object, cluster_ready, poll_until, Probe};
use crate::watch::{snapshot, Expect, Observed, RolloutWatch};

/// One scenario's view of the cluster.
///
/// Images are not its business: [`crate::environment::KindEnvironment::load_images`] puts every archive of the
/// run into the nodes once, before the scenarios start. `opts.cnpg_version` is the release
/// modelled (pod volume names): [`crate::environment::KindEnvironment::backend`] sets it to the installed one.
pub struct KindBackend {
    client: kube::Client,
    namespace: String,
    opts: KindOptions,
    exec: Arc<dyn PodExec>,
    namespace_ready: bool,
    cluster: Option<Cluster>,
    last_diagnostics: Option<PathBuf>,
    /// `ClusterImageCatalog`s this backend applied: cluster-scoped, so not removed with the
    /// namespace; teardown deletes them.
    cluster_catalogs: Vec<String>,
}

impl KindBackend {
    pub fn new(client: kube::Client, namespace: impl Into<String>, opts: KindOptions) -> Self {
        let exec: Arc<dyn PodExec> = Arc::new(KubeExec {
            client: client.clone(),
        });
        KindBackend {
            client,
            namespace: namespace.into(),
            opts,
            exec,
            namespace_ready: false,
            cluster: None,
            last_diagnostics: None,
            cluster_catalogs: Vec::new(),
        }
    }

    /// Replaces the exec implementation (tests).
    pub fn with_exec(mut self, exec: Arc<dyn PodExec>) -> Self {
        self.exec = exec;
        self
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Where the last failure's diagnostics were written.
    pub fn last_diagnostics(&self) -> Option<&PathBuf> {
        self.last_diagnostics.as_ref()
    }

    fn plan_options(&self) -> PlanOptions {
        PlanOptions {
            mount_root: "/extensions".into(),
            cnpg: self.opts.cnpg_version,
        }
    }

    fn clusters(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.namespace, &cluster_resource())
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }


    /// Collects diagnostics and notes where they are.
    async fn failed(&mut self, e: BackendError) -> BackendError {
        match crate::diagnostics::collect(&self.client, &self.namespace, &self.opts.report_dir)
            .await
        {
            Ok(dir) => {
                let note = format!(" (diagnostics: {})", dir.display());
                self.last_diagnostics = Some(dir);
                match e {
                    BackendError::Failed(m) => BackendError::Failed(m + &note),
                    BackendError::Rejected(m) => BackendError::Rejected(m + &note),
                    BackendError::Unusable(m) => BackendError::Unusable(m + &note),
                }
            }
            Err(_) => e,
        }
    }

    /// Creates the scenario's namespace. One left terminating by an earlier run (same
    /// scenario id) is waited out first: objects created in it would be refused with a
    /// 403, and the namespace would vanish under the scenario.
    async fn ensure_namespace(&mut self) -> Result<(), BackendError> {
        if self.namespace_ready {
            return Ok(());
        }
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let ns = self.namespace.clone();
        let t = self.opts.timeouts.clone();
        poll_until(
            &format!("namespace {ns} (left terminating by an earlier run) to be deleted"),
            t.forbidden_retry,
            t.poll,
            || async {
                let got = namespaces
                    .get_opt(&ns)
                    .await
                    .map_err(|e| kube_error(format!("reading namespace {ns}"), e))?;
                Ok(match got {
                    Some(n) if is_terminating(&n) => Probe::Pending(format!(
                        "namespace {ns} is terminating (deletionTimestamp {})",
                        n.metadata
                            .deletion_timestamp
                            .as_ref()
                            .map(|t| t.0.to_string())
                            .unwrap_or_else(|| "unset, phase Terminating".into())
                    )),
                    _ => Probe::Done(()),
                })
            },
        )
        .await?;
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("", "v1", "Namespace"),
            "namespaces",
        );
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &ar);
        server_side_apply(&api, "Namespace", &namespace_doc(&self.namespace)).await?;
        self.namespace_ready = true;
        Ok(())
    }

    fn cluster_name(&self) -> Result<String, BackendError> {
        self.cluster
            .as_ref()
            .map(|c| c.metadata.name.clone())
            .ok_or_else(|| {
                BackendError::Failed("no Cluster has been applied in this scenario yet".into())
            })
    }

    async fn apply_cluster_inner(
        &mut self,
        applied: &ClusterDoc,
    ) -> Result<ApplyOutcome, BackendError> {
        self.ensure_namespace().await?;
        let cluster = &applied.cluster;
        let name = cluster.metadata.name.clone();
        let doc = namespaced_cluster(&applied.raw, &self.namespace, &self.opts);
        if self.opts.registry {
            for e in &cluster.spec.postgresql.extensions {
                if e.image.pull_policy.as_deref() == Some("Never") {
                    tracing::warn!(
                        "Cluster {name}: extension `{}` has pullPolicy Never: with --registry the image is pulled from the local mirror, not loaded into the nodes, so it will not be found",
                        e.name
                    );
                }
            }
        }
        let clusters = self.clusters();
        let pods = self.pods();
        let t = self.opts.timeouts.clone();
        let existing = clusters
            .get_opt(&name)
            .await
            .map_err(|e| kube_error(format!("reading Cluster {}/{name}", self.namespace), e))?;
        let what = format!("Cluster {}/{name}", self.namespace);
        if existing.is_none() {
            server_side_apply_within(&clusters, "Cluster", &doc, t.forbidden_retry).await?;
            await_object(
                &clusters,
                &name,
                &what,
                &cluster_ready(cluster.spec.instances),
                t.cluster_ready,
                t.poll,
            )
            .await?;
            self.cluster = Some(cluster.clone());
            return Ok(ApplyOutcome::Created);
        }
        // Watches first: their initial lists are the baseline, and every event after them
        // (the operator reacting to the apply) is seen.
        // The postmasters are read before the apply too: a restart inside a pod (the
        // primary's in-place restart) and a reload show only there.
        let watch = RolloutWatch::start(&clusters, &pods, &name, t.rollout)
            .await?
            .with_postmasters(self.exec.clone(), t.poll)
            .await?;
        server_side_apply_within(&clusters, "Cluster", &doc, t.forbidden_retry).await?;
        // No guess from a plan diff: wait until the pods carry what the applied Cluster
        // asks for and every postmaster shows its settings (a rollout, however late it
        // starts, is followed to its end; a reload is waited for), then report what was
        // seen.
        let previous = self.cluster.as_ref().map(|c| ClusterPlan::derive(c, &self.plan_options()));
        let expect = Expect::converge_with(&ClusterPlan::derive(cluster, &self.plan_options()), previous.as_ref());
        let seen = watch.finish_observed(expect, t.rollout).await?;
        self.cluster = Some(cluster.clone());
        Ok(match seen {
            Observed { record, .. } if !record.restarts.is_empty() => ApplyOutcome::RolledOut { record },
            Observed { reloaded: true, .. } => ApplyOutcome::Reloaded,
            _ => ApplyOutcome::Unchanged,
        })
    }

    async fn apply_database_inner(
        &mut self,
        applied: &DatabaseDoc,
    ) -> Result<Vec<String>, BackendError> {
        self.ensure_namespace().await?;
        let name = applied.database.metadata.name.clone();
        let doc = namespaced(&applied.raw, &self.namespace);
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &self.namespace, &database_resource());
        let t = self.opts.timeouts.clone();
        server_side_apply_within(&api, "Database", &doc, t.forbidden_retry).await?;
        let what = format!("Database {}/{name}", self.namespace);
        let obj = await_database(&api, &name, &what, t.database, t.database_retry, t.poll).await?;
        database_outcome(&what, &obj)
    }

    async fn restart_inner(&mut self) -> Result<RolloutRecord, BackendError> {
        let name = self.cluster_name()?;
        let clusters = self.clusters();
        let pods = self.pods();
        let t = self.opts.timeouts.clone();
        let what = format!(
            "restart (merge patch of {RESTART_ANNOTATION}) of Cluster {}/{name}",
            self.namespace
        );
        let before = clusters
            .get(&name)
            .await
            .map_err(|e| kube_error(format!("reading Cluster {}/{name}", self.namespace), e))?;
        let previous = before
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(RESTART_ANNOTATION))
            .cloned();
        let stamp = restart_stamp(previous.as_deref(), Utc::now());
        let watch = RolloutWatch::start(&clusters, &pods, &name, t.rollout)
            .await?
            .with_postmasters(self.exec.clone(), t.poll)
            .await?;
        let after = clusters
            .patch(&name, &PatchParams::default(), &Patch::Merge(&restart_patch(&stamp)))
            .await
            .map_err(|e| kube_error(&what, e))?;
        check_restart_took(&what, &before, &after, &stamp)?;
        watch.finish(Expect::Rollout, t.rollout).await
    }

    async fn inspect_inner(
        &self,
        instance: &str,
        plan: &ClusterPlan,
    ) -> Result<InstanceObservation, BackendError> {
        let pod = self
            .pods()
            .get(instance)
            .await
            .map_err(|e| kube_error(format!("reading pod {}/{instance}", self.namespace), e))?;
        check_pod_spec(&pod, plan)?;
        let out = self
            .exec
            .exec(
                &self.namespace,
                instance,
                POSTGRES_CONTAINER,
                &inspect_command(plan),
            )
            .await?;
        if !out.success {
            return Err(BackendError::Failed(format!(
                "inspecting pod {}/{instance}: the inspection script failed: {} {}",
                self.namespace,
                out.message.unwrap_or_default(),
                out.stderr.trim()
            )));
        }
        parse_inspect_output(instance, plan, &out.stdout)
    }
}

/// Fails at once when the restart patch changed nothing (the same resourceVersion came
/// back, or the annotation does not hold the value sent): no rollout would follow and the
/// wait would only run out its timeout.
pub fn check_restart_took(
    what: &str,
    before: &DynamicObject,
    after: &DynamicObject,
    stamp: &str,
) -> Result<(), BackendError> {
    let now = after
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(RESTART_ANNOTATION))
        .map(String::as_str);
    let rv_before = before.metadata.resource_version.as_deref();
    let rv_after = after.metadata.resource_version.as_deref();
    if now != Some(stamp) {
        return Err(BackendError::Failed(format!(
            "{what}: the Cluster came back with {RESTART_ANNOTATION} = {now:?}, not the value sent ({stamp:?}): the restart was not recorded, no rollout will follow"
        )));
    }
    if rv_before.is_some() && rv_before == rv_after {
        return Err(BackendError::Failed(format!(
            "{what}: the patch changed nothing (resourceVersion {} before and after; {RESTART_ANNOTATION} was already {stamp:?}): no rollout will follow",
            rv_before.unwrap_or_default()
        )));
    }
    Ok(())
}

fn is_terminating(n: &Namespace) -> bool {
    n.metadata.deletion_timestamp.is_some()
        || n.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating")
}

/// Per-extension messages of a reconciled Database; an error with the operator's own
/// message when `status.applied` is false.
pub fn database_outcome(what: &str, obj: &DynamicObject) -> Result<Vec<String>, BackendError> {
    let status = obj.data.get("status").cloned().unwrap_or(Value::Null);
    let exts: Vec<String> = status
        .get("extensions")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| {
                    let n = e.get("name").and_then(Value::as_str).unwrap_or("?");
                    let applied = e.get("applied").and_then(Value::as_bool).unwrap_or(false);
                    let msg = e.get("message").and_then(Value::as_str).unwrap_or("");
                    if msg.is_empty() {
                        format!("{n}: applied={applied}")
                    } else {
                        format!("{n}: applied={applied}: {msg}")
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    if status.get("applied").and_then(Value::as_bool) == Some(true) {
        Ok(exts)
    } else {
        let msg = status.get("message").and_then(Value::as_str).unwrap_or("");
        Err(BackendError::Failed(format!(
            "{what} was not applied: the operator reports \"{msg}\" (still so after its 30 s retry); extensions: [{}]",
            exts.join("; ")
        )))
    }
}

#[async_trait]
impl Backend for KindBackend {
    fn name(&self) -> &'static str {
        "kind"
    }

    fn plan_for(&self, cluster: &Cluster, _instance: &str) -> ClusterPlan {
        ClusterPlan::derive(cluster, &self.plan_options())
    }

    async fn apply_cluster(&mut self, doc: &ClusterDoc) -> Result<ApplyOutcome, BackendError> {
        match self.apply_cluster_inner(doc).await {
            Ok(o) => Ok(o),
            Err(e) => {
                // A first apply that failed still names the pods whose logs are the evidence.
                self.cluster.get_or_insert_with(|| doc.cluster.clone());
                Err(self.failed(e).await)
            }
        }
    }

    async fn apply_catalog(&mut self, doc: &cnpg_ext_model::CatalogDoc) -> Result<(), BackendError> {
        self.ensure_namespace().await?;
        let kind = doc.catalog.kind.as_str();
        let plural = if kind == "ClusterImageCatalog" { "clusterimagecatalogs" } else { "imagecatalogs" };
        let resource = kube::discovery::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("postgresql.cnpg.io", "v1", kind),
            plural,
        );
        let t = self.opts.timeouts.clone();
        if kind == "ClusterImageCatalog" {
            let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource);
            server_side_apply_within(&api, kind, &doc.raw, t.forbidden_retry).await?;
            if !self.cluster_catalogs.contains(&doc.catalog.metadata.name) {
                self.cluster_catalogs.push(doc.catalog.metadata.name.clone());
            }
        } else {
            let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &self.namespace, &resource);
            server_side_apply_within(&api, kind, &namespaced(&doc.raw, &self.namespace), t.forbidden_retry).await?;
        }
        Ok(())
    }

    async fn apply_database(&mut self, doc: &DatabaseDoc) -> Result<Vec<String>, BackendError> {
        match self.apply_database_inner(doc).await {
            Ok(o) => Ok(o),
            Err(e) => Err(self.failed(e).await),
        }
    }

    async fn restart(&mut self) -> Result<RolloutRecord, BackendError> {
        match self.restart_inner().await {
            Ok(o) => Ok(o),
            Err(e) => Err(self.failed(e).await),
        }
    }

    async fn instances(&self) -> Result<Vec<InstanceRef>, BackendError> {
        let name = self.cluster_name()?;
        let (_, views) = snapshot(&self.clusters(), &self.pods(), &name).await?;
        views
            .into_iter()
            .map(|v| match v.role {
                Some(role) => Ok(InstanceRef { name: v.name, role }),
                None => Err(BackendError::Failed(format!(
                    "pod {}/{} has no `cnpg.io/instanceRole` (or `role`) label yet",
                    self.namespace, v.name
                ))),
            })
            .collect()
    }

    async fn connect(
        &self,
        instance: &str,
        database: &str,
        user: &str,
    ) -> Result<tokio_postgres::Client, BackendError> {
        let cluster = self.cluster_name()?;
        crate::sql::connect(
            &self.client,
            &self.namespace,
            &cluster,
            instance,
            database,
            user,
        )
        .await
    }

    async fn inspect(
        &self,
        instance: &str,
        plan: &ClusterPlan,
    ) -> Result<InstanceObservation, BackendError> {
        self.inspect_inner(instance, plan).await
    }

    async fn server_log(&self, instance: &str) -> Option<String> {
        crate::podlog::server_log(&self.client, &self.namespace, instance).await
    }

    async fn settings(&self, instance: &str) -> Option<Vec<(String, String)>> {
        crate::podlog::settings(self.exec.as_ref(), &self.namespace, instance).await
    }

    async fn teardown(&mut self, keep: bool) -> Result<(), BackendError> {
        if keep || self.opts.keep {
            tracing::info!("keeping namespace {} (--keep)", self.namespace);
            return Ok(());
        }
        if !self.namespace_ready {
            return Ok(());
        }
        let resource = kube::discovery::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("postgresql.cnpg.io", "v1", "ClusterImageCatalog"),
            "clusterimagecatalogs",
        );
        let catalogs: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource);
        for name in std::mem::take(&mut self.cluster_catalogs) {
            match catalogs.delete(&name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(kube_error(format!("deleting ClusterImageCatalog {name}"), e)),
            }
        }
        let api: Api<Namespace> = Api::all(self.client.clone());
        match api
            .delete(&self.namespace, &DeleteParams::background())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(kube_error(
                format!("deleting namespace {}", self.namespace),
                e,
            )),
        }
    }
}
