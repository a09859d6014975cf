//! [`KindEnvironment`]: what a run prepares once on a cluster ([`prepare`]): the client,
//! preflight, the operator installed or adopted, a registry mirror, images on the nodes; it
//! makes one [`KindBackend`] per scenario.

use std::path::PathBuf;

use cnpg_ext_model::backend::BackendError;
use cnpg_ext_model::scenario::Scenario;
use cnpg_ext_model::Cluster;

use crate::apply::namespace_for;
use crate::operator::{self, InstalledOperator};
use crate::options::KindOptions;
use crate::preflight::{self, PreflightReport, PREFLIGHT_NAMESPACE};
use crate::node_mirror::{prepare_registry, LocalRegistry};
use crate::registry_hosting::AdvertisedMirror;
use crate::versions::{fetch_manifest, VersionsFile};

use crate::backend::KindBackend;

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
