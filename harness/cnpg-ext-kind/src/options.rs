//! Options of a kind/Kubernetes run (the CLI flags of `run --backend kind`).

use std::path::PathBuf;
use std::time::Duration;

use cnpg_ext_model::CnpgVersion;

/// `--registry-image` default: the registry container's image.
pub const DEFAULT_REGISTRY_IMAGE: &str = "registry:2";
/// `--registry-port` default (5000 is often taken, e.g. by macOS AirPlay; kind's guide uses
/// 5001 too).
pub const DEFAULT_REGISTRY_PORT: u16 = 5001;

/// Deadlines of the waits. Every wait names what it awaited when it runs out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    /// Operator deployment available and its webhook answering.
    pub operator: Duration,
    /// A new Cluster healthy with every instance ready.
    pub cluster_ready: Duration,
    /// A rolling update (or restart) finished.
    pub rollout: Duration,
    /// A Database resource applied (`status.applied`).
    pub database: Duration,
    /// How long a Database must stay failed (`status.applied: false` with a message) before
    /// the failure is final: the operator retries a failed Database every 30 s
    /// (`databaseReconciliationInterval`), so this spans one retry.
    pub database_retry: Duration,
    /// How long to retry a request refused with a 403 that clears by itself: a namespace
    /// still terminating from a previous run, or a namespace whose `default`
    /// ServiceAccount does not exist yet (right after cluster creation).
    pub forbidden_retry: Duration,
    /// Time between two polls of the API server.
    pub poll: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            operator: Duration::from_secs(300),
            cluster_ready: Duration::from_secs(600),
            rollout: Duration::from_secs(900),
            database: Duration::from_secs(180),
            database_retry: Duration::from_secs(35),
            forbidden_retry: Duration::from_secs(120),
            poll: Duration::from_secs(1),
        }
    }
}

/// Everything the kind backend needs besides the scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct KindOptions {
    /// Name of the kind cluster (`--kind-cluster`): images are loaded into its nodes with
    /// `kind load image-archive`, and the kubeconfig context defaults to `kind-<name>`.
    /// `None`: existing-cluster mode (any conformant cluster; images must be pullable).
    pub kind_cluster: Option<String>,
    /// `--kubeconfig`: one kubeconfig file. `None`: kube-rs's own lookup, which merges every
    /// file of a `:`-separated `$KUBECONFIG`, else `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// `--context` (default: `kind-<kind_cluster>`, else the kubeconfig's current context).
    pub context: Option<String>,
    /// `--cnpg-version`: the operator release to install / expect.
    pub cnpg_version: CnpgVersion,
    /// Whether `cnpg_version` was asked for (`--cnpg-version` given). When not, existing-cluster
    /// mode adopts an installed operator of any release instead of replacing it with the
    /// default release. Default `true` (library callers name the release they want).
    pub cnpg_version_explicit: bool,
    /// `--cnpg-versions-file` (default: the `kind-config/cnpg-versions.yaml` built in).
    pub versions_file: Option<PathBuf>,
    /// `--operator-manifest`: a local copy of the release manifest (checked against the pin).
    pub operator_manifest: Option<PathBuf>,
    /// `--allow-unpinned-operator`: apply a manifest whose version has no sha256 pin.
    pub allow_unpinned_operator: bool,
    /// `--skip-operator-install`: expect the operator to be there (vendor clusters). The
    /// installed release is the one modelled (volume names), whatever `cnpg_version` says.
    pub skip_operator_install: bool,
    /// `--allow-operator-downgrade`: replace an installed operator newer than
    /// `cnpg_version` (or of unknown version) with `cnpg_version`. Refused otherwise.
    pub allow_operator_downgrade: bool,
    /// `--registry`: images reach the nodes through a local registry container used as a
    /// containerd mirror instead of `kind load` (see the `node_mirror` module); needs
    /// `kind_cluster`.
    pub registry: bool,
    /// `--registry-port`: host port of the registry (`127.0.0.1:<port>`), default 5001.
    pub registry_port: u16,
    /// `--registry-image`: the registry container's image, default `registry:2`.
    pub registry_image: String,
    /// `--keep`: leave namespaces (and the cluster) in place.
    pub keep: bool,
    /// `--report-dir`: diagnostics go to `<report_dir>/diagnostics/<namespace>/`.
    pub report_dir: PathBuf,
    /// `pullPolicy` filled into extension images that have none (`IfNotPresent` or `Never`).
    pub pull_policy: String,
    /// Set `spec.enableSuperuserAccess: true` when the manifest does not say, so that SQL
    /// steps can connect as `postgres` (the scenario default user).
    pub superuser_access: bool,
    pub timeouts: Timeouts,
}

impl Default for KindOptions {
    fn default() -> Self {
        KindOptions {
            kind_cluster: None,
            kubeconfig: None,
            context: None,
            cnpg_version: CnpgVersion::DEFAULT,
            cnpg_version_explicit: true,
            versions_file: None,
            operator_manifest: None,
            allow_unpinned_operator: false,
            skip_operator_install: false,
            allow_operator_downgrade: false,
            registry: false,
            registry_port: DEFAULT_REGISTRY_PORT,
            registry_image: DEFAULT_REGISTRY_IMAGE.into(),
            keep: false,
            report_dir: PathBuf::from("reports"),
            pull_policy: "IfNotPresent".into(),
            superuser_access: true,
            timeouts: Timeouts::default(),
        }
    }
}

impl KindOptions {
    /// The kubeconfig context to use.
    pub fn effective_context(&self) -> Option<String> {
        self.context
            .clone()
            .or_else(|| self.kind_cluster.as_ref().map(|n| format!("kind-{n}")))
    }
}
