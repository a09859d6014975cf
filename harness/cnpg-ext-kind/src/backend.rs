//! [`KindBackend`]: the model's `Backend` on a Kubernetes cluster with CloudNativePG, one
//! namespace per scenario; [`prepare`]: connect, preflight, install the operator.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use cnpg_ext_backend::Backend;
use cnpg_ext_model::backend::{ApplyOutcome, BackendError, InstanceObservation, InstanceRef, RolloutRecord};
use cnpg_ext_model::plan::{ClusterPlan, PlanOptions};
use cnpg_ext_model::scenario::Scenario;
use cnpg_ext_model::{Cluster, ClusterDoc, DatabaseDoc};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
};
use serde_json::Value;

use crate::apply::{
    cluster_resource, database_resource, namespace_doc, namespace_for, namespaced,
    namespaced_cluster, restart_patch, restart_stamp, server_side_apply,
    server_side_apply_within, RESTART_ANNOTATION,
};
use crate::errors::{is_not_found, kube_error};
use crate::exec::{KubeExec, PodExec};
use crate::inspect::{check_pod_spec, inspect_command, parse_inspect_output, POSTGRES_CONTAINER};
use crate::operator::{self, InstalledOperator};
use crate::options::KindOptions;
use crate::preflight::{self, PreflightReport, PREFLIGHT_NAMESPACE};
use crate::node_mirror::{prepare_registry, LocalRegistry};
use crate::registry_hosting::AdvertisedMirror;
use crate::versions::{fetch_manifest, VersionsFile};
use crate::wait::{await_database, await_object, cluster_ready, poll_until, Probe};
use crate::watch::{snapshot, Expect, Observed, RolloutWatch};

/// One scenario's view of the cluster.
///
/// Images are not its business: [`KindEnvironment::load_images`] puts every archive of the
/// run into the nodes once, before the scenarios start. `opts.cnpg_version` is the release
/// modelled (pod volume names): [`KindEnvironment::backend`] sets it to the installed one.
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

/// A connected, checked cluster with the operator installed.
pub struct KindEnvironment {
    pub client: kube::Client,
    pub opts: KindOptions,
    pub preflight: PreflightReport,
    pub operator: InstalledOperator,
    /// Warnings and notices to show the user (kind version, unpinned manifest hash, …).
    pub notices: Vec<String>,
    /// The local registry mirror (`--registry`).
    pub registry: Option<LocalRegistry>,
    /// Existing-cluster mode: the mirror the cluster advertises (see `registry_hosting`);
    /// the run's images are pushed there.
    pub advertised: Option<AdvertisedMirror>,
}

impl KindEnvironment {
    /// The operator release the scenarios run against: the installed one when its image
    /// tag says which, else the requested one.
    pub fn operator_version(&self) -> cnpg_ext_model::CnpgVersion {
        self.operator.version.unwrap_or(self.opts.cnpg_version)
    }

    /// Checks that the installed operator supports what the scenario's Clusters use.
    pub fn check_scenario(&self, scenario: &Scenario) -> Result<(), BackendError> {
        let clusters: Vec<&Cluster> = scenario.clusters().map(|c| &c.cluster).collect();
        preflight::check_operator_for(self.operator_version(), &clusters)
    }

    /// Puts the run's extension images into the nodes, each archive once (the same
    /// archive listed twice is loaded once), before any scenario starts: `kind load
    /// image-archive`, or with `--registry` a push to the local mirror and the nodes'
    /// `hosts.toml`. Existing-cluster mode pushes them to the registry the cluster advertises
    /// as its nodes' mirror (`registry_hosting`), else loads nothing (the nodes must pull them).
    pub async fn load_images(&self, images: &[(String, PathBuf)]) -> Result<(), BackendError> {
        let mut unique: Vec<(String, PathBuf)> = Vec::new();
        for (r, p) in images {
            if !unique.iter().any(|(_, q)| q == p) {
                unique.push((r.clone(), p.clone()));
            }
        }
        if unique.is_empty() {
            return Ok(());
        }
        match (&self.opts.kind_cluster, &self.registry) {
            (Some(name), Some(reg)) => {
                let targets = reg.push_images(&unique).await?;
                let files = crate::node_mirror::mirror_hosts_files(&targets, &reg.cfg);
                reg.configure_nodes(name, &files).await?;
                Ok(())
            }
            (Some(name), None) => load_images(name, &unique).await,
            (None, _) if self.advertised.is_some() => {
                let mirror = self.advertised.as_ref().expect("checked");
                let pushed = mirror.push(&unique).await?;
                tracing::info!(
                    "pushed {} image(s) to {}, the registry the cluster pulls {} through",
                    pushed.len(),
                    mirror.host,
                    mirror.mirrors.join(", ")
                );
                Ok(())
            }
            (None, _) => {
                tracing::warn!(
                    "existing-cluster mode: {} extension image(s) are not loaded by the harness; the nodes must be able to pull them",
                    unique.len()
                );
                Ok(())
            }
        }
    }

    /// A backend for one scenario, in namespace `cnpg-ext-<scenario id>`, modelling the
    /// installed operator's release.
    pub fn backend(&self, scenario: &Scenario) -> KindBackend {
        let mut opts = self.opts.clone();
        opts.cnpg_version = self.operator_version();
        KindBackend::new(self.client.clone(), namespace_for(&scenario.id), opts)
    }
}

/// The client configuration from `--kubeconfig`/`--context` (default context
/// `kind-<name>` with `--kind-cluster`). Without `--kubeconfig`, kube-rs reads
/// `$KUBECONFIG` itself, merging every file of a `:`-separated list, else
/// `~/.kube/config`.
pub async fn kube_config(opts: &KindOptions) -> Result<kube::Config, BackendError> {
    let options = kube::config::KubeConfigOptions {
        context: opts.effective_context(),
        ..Default::default()
    };
    match &opts.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| BackendError::Unusable(format!("{}: cannot read kubeconfig: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kc, &options).await
        }
        None => kube::Config::from_kubeconfig(&options).await,
    }
    .map_err(|e| {
        let source = match (&opts.kubeconfig, std::env::var("KUBECONFIG")) {
            (Some(p), _) => format!(" ({})", p.display()),
            (None, Ok(v)) if !v.is_empty() => format!(" (KUBECONFIG={v})"),
            _ => " (~/.kube/config)".into(),
        };
        BackendError::Unusable(format!(
            "no usable kubeconfig{source}{}: {e}. Create a cluster (`cnpg-ext-harness kind up`) or pass --kubeconfig/--context",
            opts.effective_context().map(|c| format!(" for context `{c}`")).unwrap_or_default()
        ))
    })
}

/// A client from [`kube_config`]; a recording one (see the `record` module) when
/// `CNPG_EXT_KIND_RECORD` names a directory.
pub async fn connect(opts: &KindOptions) -> Result<kube::Client, BackendError> {
    let config = kube_config(opts).await?;
    if let Some(dir) = std::env::var_os(crate::record::ENV_RECORD).filter(|d| !d.is_empty()) {
        tracing::info!("recording the API server's GET and watch responses into {}", dir.to_string_lossy());
        return crate::record::recording_client(config, std::path::Path::new(&dir))
            .map_err(|e| BackendError::Unusable(format!("cannot build a recording Kubernetes client: {e}")));
    }
    kube::Client::try_from(config)
        .map_err(|e| BackendError::Unusable(format!("cannot build a Kubernetes client: {e}")))
}

/// `kind load image-archive <tar> --name <cluster>` for every image (all nodes).
pub async fn load_images(
    kind_cluster: &str,
    images: &[(String, PathBuf)],
) -> Result<(), BackendError> {
    for (reference, archive) in images {
        let out = tokio::process::Command::new("kind")
            .arg("load")
            .arg("image-archive")
            .arg(archive)
            .arg("--name")
            .arg(kind_cluster)
            .output()
            .await
            .map_err(|e| {
                BackendError::Unusable(format!(
                    "cannot run `kind` to load {reference}: {e}; install kind v0.31.0"
                ))
            })?;
        if !out.status.success() {
            return Err(BackendError::Failed(format!(
                "`kind load image-archive {} --name {kind_cluster}` ({reference}) failed: {}",
                archive.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    }
    Ok(())
}

/// Connect, preflight (version, ImageVolume gate, runtimes), install or check the
/// operator, wait for it.
pub async fn prepare(opts: &KindOptions) -> Result<KindEnvironment, BackendError> {
    let mut notices = Vec::new();
    if opts.kind_cluster.is_some() {
        let out = tokio::process::Command::new("kind").arg("version").output().await.map_err(|e| {
            BackendError::Unusable(format!("`kind` is not installed ({e}): install kind v0.31.0 (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)"))
        })?;
        let preferred = crate::config::NODE_IMAGES.first().map(|n| n.kind_release);
        if let Some(w) =
            crate::config::check_kind_version(&String::from_utf8_lossy(&out.stdout), preferred)?
        {
            notices.push(w);
        }
    }
    // Before contacting the cluster: a missing engine is exit 3 with what to install.
    let registry = if opts.registry {
        let reg = prepare_registry(opts).await?;
        notices.push(format!(
            "images go through the local registry {} ({}, mirror for their own registry hosts)",
            reg.cfg.host(),
            reg.cfg.name
        ));
        Some(reg)
    } else {
        None
    };
    let client = connect(opts).await?;
    let report = preflight::run(&client, PREFLIGHT_NAMESPACE, opts.timeouts.forbidden_retry).await?;
    if let Some(reg) = &registry {
        reg.publish_configmap(&client).await?;
    }
    let operator = ensure_operator(&client, opts, &mut notices).await?;
    let advertised = match (&opts.kind_cluster, &registry) {
        (None, None) => crate::registry_hosting::discover(&client).await?,
        _ => None,
    };
    if let Some(m) = &advertised {
        notices.push(format!(
            "images go to {}, the registry the cluster pulls {} through (ConfigMap kube-public/local-registry-hosting)",
            m.host,
            m.mirrors.join(", ")
        ));
    }
    Ok(KindEnvironment {
        client,
        opts: opts.clone(),
        preflight: report,
        operator,
        notices,
        registry,
        advertised,
    })
}

/// What to do about the operator, given what is installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorAction {
    /// Use the installed operator (and model its release).
    UseInstalled { notice: Option<String> },
    /// Apply the requested release manifest.
    Install { notice: Option<String> },
}

/// Decides from the installed operator (if any) and the options. An installed operator
/// newer than the requested release, or of a release its image tag does not tell, is
/// not replaced (a forced server-side apply would silently downgrade it) unless
/// `--allow-operator-downgrade`.
pub fn operator_action(
    installed: Option<&InstalledOperator>,
    opts: &KindOptions,
) -> Result<OperatorAction, BackendError> {
    let want = opts.cnpg_version;
    if let Some(op) = installed {
        if op.version == Some(want) {
            return Ok(OperatorAction::UseInstalled { notice: None });
        }
        // Existing-cluster mode without --cnpg-version: the cluster's operator is the one
        // under test, whatever its release (never replaced by the harness's default).
        if opts.kind_cluster.is_none() && !opts.cnpg_version_explicit {
            let place = format!("{}/{}", op.namespace, op.deployment);
            return match op.version {
                Some(have) => Ok(OperatorAction::UseInstalled {
                    notice: Some(format!(
                        "existing cluster: testing and modelling the installed operator {have} ({place}); pass --cnpg-version to require a release"
                    )),
                }),
                None => Err(BackendError::Unusable(format!(
                    "existing cluster: the installed operator's image {} ({place}) does not tell its release; pass it as --cnpg-version (with --skip-operator-install to use the operator as is)",
                    op.image
                ))),
            };
        }
    }
    if opts.skip_operator_install {
        return match installed {
            Some(op) => Ok(OperatorAction::UseInstalled {
                notice: Some(match op.version {
                    Some(have) => format!(
                        "operator {have} installed, {want} requested: testing and modelling the installed {have} (--skip-operator-install)"
                    ),
                    None => format!(
                        "operator image {} does not tell its release: modelling the requested {want} (--skip-operator-install); pass the installed release as --cnpg-version",
                        op.image
                    ),
                }),
            }),
            None => Err(BackendError::Unusable(
                "CloudNativePG is not installed (no deployment labelled app.kubernetes.io/name=cloudnative-pg) and --skip-operator-install was given".into(),
            )),
        };
    }
    let Some(op) = installed else {
        return Ok(OperatorAction::Install { notice: None });
    };
    let place = format!("{}/{}", op.namespace, op.deployment);
    match op.version {
        Some(have) if have < want => Ok(OperatorAction::Install {
            notice: Some(format!("upgrading the installed operator {have} ({place}) to {want}")),
        }),
        Some(have) if opts.allow_operator_downgrade => Ok(OperatorAction::Install {
            notice: Some(format!("downgrading the installed operator {have} ({place}) to {want} (--allow-operator-downgrade)")),
        }),
        Some(have) => Err(BackendError::Unusable(format!(
            "operator {have} is installed ({place}), newer than the requested {want}: refusing to downgrade it. \
             Pass --cnpg-version {have} to test it, --skip-operator-install to use it as is, or --allow-operator-downgrade to replace it with {want}"
        ))),
        None if opts.allow_operator_downgrade => Ok(OperatorAction::Install {
            notice: Some(format!("replacing the installed operator {} ({place}, release unknown) with {want} (--allow-operator-downgrade)", op.image)),
        }),
        None => Err(BackendError::Unusable(format!(
            "an operator of unknown release is installed ({place}, image {}): refusing to replace it with {want}, which may be a downgrade. \
             Pass --skip-operator-install to use it (with its release as --cnpg-version), or --allow-operator-downgrade to replace it",
            op.image
        ))),
    }
}

/// Installs the requested release unless it is already there (or `skip_operator_install`),
/// never silently downgrading one (see [`operator_action`]).
pub async fn ensure_operator(
    client: &kube::Client,
    opts: &KindOptions,
    notices: &mut Vec<String>,
) -> Result<InstalledOperator, BackendError> {
    let installed = operator::installed_operator(client).await?;
    let want = opts.cnpg_version;
    match operator_action(installed.as_ref(), opts)? {
        OperatorAction::UseInstalled { notice } => {
            notices.extend(notice);
            let op = installed.expect("UseInstalled implies an installed operator");
            operator::wait_operator_ready(client, &op.namespace, &opts.timeouts).await?;
            return Ok(op);
        }
        OperatorAction::Install { notice } => notices.extend(notice),
    }
    let versions = match &opts.versions_file {
        Some(p) => VersionsFile::load(p)?,
        None => VersionsFile::embedded(),
    };
    let release = versions.find(want)?;
    let (text, check) = fetch_manifest(
        release,
        opts.operator_manifest.as_deref(),
        opts.allow_unpinned_operator,
    )
    .await?;
    if let Some(n) = check.notice {
        notices.push(n);
    }
    let docs = operator::apply_order(operator::parse_manifest(&text)?);
    operator::apply_manifest(client, &docs, &opts.timeouts).await?;
    operator::wait_operator_ready(client, operator::OPERATOR_NAMESPACE, &opts.timeouts).await?;
    operator::installed_operator(client).await?.ok_or_else(|| {
        BackendError::Failed("the operator deployment is gone right after installing it".into())
    })
}
