//! [`KindBackend`]: the model's `Backend` on a Kubernetes cluster with CloudNativePG, one
//! namespace per scenario; [`prepare`]: connect, preflight, install the operator.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use cnpg_ext_model::backend::{
    ApplyOutcome, Backend, BackendError, InstanceObservation, InstanceRef, RolloutRecord,
};
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
    namespaced_cluster, restart_patch, server_side_apply,
};
use crate::errors::{is_not_found, kube_error};
use crate::exec::{KubeExec, PodExec};
use crate::inspect::{check_pod_spec, inspect_command, parse_inspect_output, POSTGRES_CONTAINER};
use crate::operator::{self, InstalledOperator};
use crate::options::KindOptions;
use crate::preflight::{self, PreflightReport};
use crate::registry::{prepare_registry, LocalRegistry};
use crate::versions::{fetch_manifest, VersionsFile};
use crate::wait::{await_object, cluster_ready, database_reconciled};
use crate::watch::{snapshot, Expect, RolloutWatch};

/// One scenario's view of the cluster.
pub struct KindBackend {
    client: kube::Client,
    namespace: String,
    images: Vec<(String, PathBuf)>,
    opts: KindOptions,
    exec: Arc<dyn PodExec>,
    images_loaded: bool,
    namespace_ready: bool,
    cluster: Option<Cluster>,
    last_diagnostics: Option<PathBuf>,
    registry: Option<LocalRegistry>,
}

impl KindBackend {
    /// `images`: (reference, docker-archive tar) pairs loaded into the kind nodes before
    /// the first apply (only with `opts.kind_cluster`).
    pub fn new(
        client: kube::Client,
        namespace: impl Into<String>,
        images: Vec<(String, PathBuf)>,
        opts: KindOptions,
    ) -> Self {
        let exec: Arc<dyn PodExec> = Arc::new(KubeExec {
            client: client.clone(),
        });
        KindBackend {
            client,
            namespace: namespace.into(),
            images,
            opts,
            exec,
            images_loaded: false,
            namespace_ready: false,
            cluster: None,
            last_diagnostics: None,
            registry: None,
        }
    }

    /// Replaces the exec implementation (tests).
    pub fn with_exec(mut self, exec: Arc<dyn PodExec>) -> Self {
        self.exec = exec;
        self
    }

    /// Images go through this local registry mirror instead of `kind load` (`--registry`).
    pub fn with_registry(mut self, registry: Option<LocalRegistry>) -> Self {
        self.registry = registry;
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

    async fn ensure_namespace(&mut self) -> Result<(), BackendError> {
        if self.namespace_ready {
            return Ok(());
        }
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("", "v1", "Namespace"),
            "namespaces",
        );
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &ar);
        server_side_apply(&api, "Namespace", &namespace_doc(&self.namespace)).await?;
        self.namespace_ready = true;
        Ok(())
    }

    async fn ensure_images(&mut self) -> Result<(), BackendError> {
        if self.images_loaded || self.images.is_empty() {
            return Ok(());
        }
        match (&self.opts.kind_cluster, &self.registry) {
            (Some(name), Some(reg)) => {
                let targets = reg.push_images(&self.images).await?;
                let files = crate::registry::mirror_hosts_files(&targets, &reg.cfg);
                reg.configure_nodes(name, &files).await?;
            }
            (Some(name), None) => load_images(name, &self.images).await?,
            (None, _) => tracing::warn!(
                "existing-cluster mode: {} extension image(s) are not loaded by the harness; the nodes must be able to pull them",
                self.images.len()
            ),
        }
        self.images_loaded = true;
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
        self.ensure_images().await?;
        let cluster = &applied.cluster;
        let name = cluster.metadata.name.clone();
        let doc = namespaced_cluster(&applied.raw, &self.namespace, &self.opts);
        if self.registry.is_some() {
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
            server_side_apply(&clusters, "Cluster", &doc).await?;
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
        let watch = RolloutWatch::start(&clusters, &pods, &name, t.rollout).await?;
        server_side_apply(&clusters, "Cluster", &doc).await?;
        let new_plan = ClusterPlan::derive(cluster, &self.plan_options());
        let old_plan = self
            .cluster
            .as_ref()
            .map(|c| ClusterPlan::derive(c, &self.plan_options()));
        let expect = match &old_plan {
            Some(old) if old.pod_spec_fingerprint() == new_plan.pod_spec_fingerprint() => {
                Expect::MaybeNothing { settle: t.settle }
            }
            Some(_) => Expect::Rollout,
            None => Expect::MaybeNothing { settle: t.settle },
        };
        let record = watch.finish(expect, t.rollout).await?;
        self.cluster = Some(cluster.clone());
        Ok(if !record.restarts.is_empty() {
            ApplyOutcome::RolledOut { record }
        } else if old_plan.is_some_and(|o| {
            o.extension_control_path != new_plan.extension_control_path
                || o.dynamic_library_path != new_plan.dynamic_library_path
        }) {
            ApplyOutcome::Reloaded
        } else {
            ApplyOutcome::Unchanged
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
        server_side_apply(&api, "Database", &doc).await?;
        let t = &self.opts.timeouts;
        let what = format!("Database {}/{name}", self.namespace);
        let obj = await_object(
            &api,
            &name,
            &what,
            &database_reconciled(),
            t.database,
            t.poll,
        )
        .await?;
        database_outcome(&what, &obj)
    }

    async fn restart_inner(&mut self) -> Result<RolloutRecord, BackendError> {
        let name = self.cluster_name()?;
        let clusters = self.clusters();
        let pods = self.pods();
        let t = self.opts.timeouts.clone();
        let watch = RolloutWatch::start(&clusters, &pods, &name, t.rollout).await?;
        let patch = restart_patch(Utc::now());
        clusters
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| kube_error(format!("restart (merge patch of kubectl.kubernetes.io/restartedAt) of Cluster {}/{name}", self.namespace), e))?;
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

/// Per-extension messages of a reconciled Database; an error when `status.applied` is false.
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
            "{what} was not applied: \"{msg}\"; extensions: [{}]",
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
            Err(e) => Err(self.failed(e).await),
        }
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

    async fn teardown(&mut self, keep: bool) -> Result<(), BackendError> {
        if keep || self.opts.keep {
            tracing::info!("keeping namespace {} (--keep)", self.namespace);
            return Ok(());
        }
        if !self.namespace_ready {
            return Ok(());
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
}

impl KindEnvironment {
    /// Checks that the installed operator supports what the scenario's Clusters use.
    pub fn check_scenario(&self, scenario: &Scenario) -> Result<(), BackendError> {
        let clusters: Vec<&Cluster> = scenario.clusters().map(|c| &c.cluster).collect();
        let v = self.operator.version.unwrap_or(self.opts.cnpg_version);
        preflight::check_operator_for(v, &clusters)
    }

    /// A backend for one scenario, in namespace `cnpg-ext-<scenario id>`.
    pub fn backend(&self, scenario: &Scenario, images: Vec<(String, PathBuf)>) -> KindBackend {
        KindBackend::new(self.client.clone(), namespace_for(&scenario.id), images, self.opts.clone())
            .with_registry(self.registry.clone())
    }
}

/// A client from `--kubeconfig`/`--context` (default context `kind-<name>` with
/// `--kind-cluster`).
pub async fn connect(opts: &KindOptions) -> Result<kube::Client, BackendError> {
    let options = kube::config::KubeConfigOptions {
        context: opts.effective_context(),
        ..Default::default()
    };
    let config = match &opts.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| BackendError::Unusable(format!("{}: cannot read kubeconfig: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kc, &options).await
        }
        None => kube::Config::from_kubeconfig(&options).await,
    }
    .map_err(|e| {
        BackendError::Unusable(format!(
            "no usable kubeconfig{}: {e}. Create a cluster (`cnpg-ext-harness kind up`) or pass --kubeconfig/--context",
            opts.effective_context().map(|c| format!(" for context `{c}`")).unwrap_or_default()
        ))
    })?;
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
    let report = preflight::run(&client, "default").await?;
    if let Some(reg) = &registry {
        reg.publish_configmap(&client).await?;
    }
    let operator = ensure_operator(&client, opts, &mut notices).await?;
    Ok(KindEnvironment {
        client,
        opts: opts.clone(),
        preflight: report,
        operator,
        notices,
        registry,
    })
}

/// Installs the requested release unless it is already there (or `skip_operator_install`).
pub async fn ensure_operator(
    client: &kube::Client,
    opts: &KindOptions,
    notices: &mut Vec<String>,
) -> Result<InstalledOperator, BackendError> {
    let installed = operator::installed_operator(client).await?;
    let want = opts.cnpg_version;
    if let Some(op) = &installed {
        if op.version == Some(want) {
            operator::wait_operator_ready(client, &op.namespace, &opts.timeouts).await?;
            return Ok(op.clone());
        }
    }
    if opts.skip_operator_install {
        return match installed {
            Some(op) => {
                let have = op.version.map(|v| v.to_string()).unwrap_or_else(|| format!("unknown ({})", op.image));
                notices.push(format!("operator {have} installed, {want} requested; using the installed one (--skip-operator-install)"));
                operator::wait_operator_ready(client, &op.namespace, &opts.timeouts).await?;
                Ok(op)
            }
            None => Err(BackendError::Unusable(
                "CloudNativePG is not installed (no deployment labelled app.kubernetes.io/name=cloudnative-pg) and --skip-operator-install was given".into(),
            )),
        };
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
