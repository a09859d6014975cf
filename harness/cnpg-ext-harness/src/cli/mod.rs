//! The command line: `run`, `list`, `plan`, `image …`; the commands behind it
//! (`commands`).

pub(crate) mod bundle;
mod bundle_certify;
pub(crate) mod commands;
mod diff;
mod entry;

pub use entry::main;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use cnpg_ext_model::CnpgVersion;

use crate::run::app::BackendKind;

/// The arguments of a subcommand this build does not have: taken whole, so that the error
/// says which feature is missing rather than that the subcommand does not exist.
#[cfg(not(feature = "kind"))]
#[derive(Debug, clap::Args)]
pub struct NotBuilt {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub args: Vec<String>,
}

#[derive(Debug, Parser)]
#[command(name = "cnpg-ext-harness", version, about = "Conformance harness for CloudNativePG image-volume extensions")]
pub struct Cli {
    /// More logging (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// A registry (HOST or HOST:PORT) to pull from over plain HTTP (repeatable; only for
    /// registries named here). Also: CNPG_EXT_HARNESS_INSECURE_REGISTRY, comma-separated.
    #[arg(
        long = "insecure-registry",
        value_name = "HOST[:PORT]",
        global = true,
        env = "CNPG_EXT_HARNESS_INSECURE_REGISTRY",
        value_delimiter = ','
    )]
    pub insecure_registry: Vec<String>,
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run scenarios. Exit 0 all passed, 1 a scenario failed, 2 invalid input, 3 environment unusable.
    Run(RunArgs),
    /// List the scenarios found under PATHs (validates them).
    List {
        #[arg(default_value = "scenarios")]
        paths: Vec<PathBuf>,
        #[arg(long, value_parser = parse_cnpg, default_value_t = CnpgVersion::DEFAULT)]
        cnpg_version: CnpgVersion,
    },
    /// Print what the operator derives from a scenario's Cluster manifests, or from plain
    /// manifest files (GUCs, mounts, volumes, the postmaster's environment). `--format json`
    /// prints it in the shape of `oracle/cnpg-plan` (oracle/README.md), refusals included.
    Plan {
        /// A scenario directory or `scenario.yaml`, or one or more manifest files (Clusters,
        /// image catalogs).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[arg(long, value_parser = parse_cnpg, default_value_t = CnpgVersion::DEFAULT)]
        cnpg_version: CnpgVersion,
        /// `text` (the plan per Cluster) or `json` (the oracle's shape).
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        format: String,
        /// NAME=VALUE of the instance manager's own environment (e.g. the operand image's
        /// LD_LIBRARY_PATH and PATH), which the operator appends to; repeatable.
        #[arg(long = "inherited-env", value_name = "NAME=VALUE")]
        inherited_env: Vec<String>,
    },
    /// Create, delete or show a kind cluster for the kind backend (ImageVolume gate on).
    #[cfg(feature = "kind")]
    #[command(subcommand)]
    Kind(cnpg_ext_kind::cli::KindCommand),
    /// Not in this build (cargo feature `kind`, on by default).
    #[cfg(not(feature = "kind"))]
    Kind(NotBuilt),
    /// A single-node Kubernetes built here from Go modules, with the real CloudNativePG
    /// operator: `k8s build|up|status|push|down` (docs/k8s-node.md). `up` prints the
    /// kubeconfig path as its last line, for `run --backend kind --kubeconfig`.
    #[cfg(feature = "kind")]
    K8s(cnpg_ext_node::cli::K8sArgs),
    /// Not in this build (cargo feature `kind`, on by default).
    #[cfg(not(feature = "kind"))]
    K8s(NotBuilt),
    /// Build, unpack or lint extension images.
    #[command(subcommand)]
    Image(cnpg_ext_images::cli::ImageCommand),
    /// Run a compatibility matrix (backend × PostgreSQL × CNPG × Kubernetes × scenarios). Exit 0 all
    /// cells passed or unsupported, 1 a cell failed, 2 invalid matrix file, 3 no cell could run.
    Matrix(crate::matrix::MatrixArgs),
    /// Certify an extension image: lint, mount, CREATE/ALTER UPDATE/DROP every extension it ships.
    /// Exit 0 only when it passes.
    Certify(crate::certify::CertifyArgs),
    /// Results bundles written by `--bundle`: `bundle show FILE`.
    #[command(subcommand)]
    Bundle(bundle::BundleCommand),
    /// Compare two runs or matrices (report.json files, their directories, or bundles):
    /// what regressed, got fixed, appeared, vanished, changed category or got slower, as
    /// Markdown. Exit 0 no regression, 1 a regression, 2 unreadable input.
    Diff(diff::DiffArgs),
}

// The field docs are clap help text, not markdown.
#[allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Scenario directories, `scenario.yaml` files, or directories of scenarios.
    #[arg(default_value = "scenarios")]
    pub paths: Vec<PathBuf>,
    #[arg(long, value_enum, default_value_t = BackendKind::Local)]
    pub backend: BackendKind,
    /// Scenarios run at once (default: number of CPUs).
    #[arg(long, short = 'j')]
    pub jobs: Option<usize>,
    /// Where report.json and junit.xml are written.
    #[arg(long)]
    pub report_dir: Option<PathBuf>,
    /// Leave the work directory (data directories, logs, unpacked images) behind.
    #[arg(long)]
    pub keep: bool,
    /// CloudNativePG release whose behaviour is modelled (volume names, name rules).
    #[arg(long, value_parser = parse_cnpg, default_value_t = CnpgVersion::DEFAULT)]
    pub cnpg_version: CnpgVersion,
    /// pg_config of the PostgreSQL ≥ 18 to use (also: PG_CONFIG); default: PATH, else the pinned wheel.
    #[arg(long, env = "PG_CONFIG")]
    pub pg_config: Option<PathBuf>,
    /// Unprivileged user PostgreSQL runs as when the harness runs as root.
    #[arg(long, default_value = "nobody")]
    pub run_as: String,
    /// Parent of the run's work directory (default: the system temp dir).
    #[arg(long, env = "CNPG_EXT_HARNESS_WORKDIR")]
    pub workdir: Option<PathBuf>,
    /// No progress bars even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
    /// Which CNPG operand image the local and container stand-ins imitate: `minimal` (core +
    /// contrib) or `standard` (also pgvector, pgaudit, pg_failover_slots where the install has them).
    #[arg(long, value_parser = parse_operand, default_value = "minimal")]
    pub operand: cnpg_ext_pg::OperandFlavor,
    /// kind backend: the kind cluster to use (images are loaded into its nodes).
    #[arg(long)]
    pub kind_cluster: Option<String>,
    /// kind backend, existing-cluster mode: kubeconfig of the cluster under test (one file;
    /// default: kube's own lookup, which merges a `:`-separated $KUBECONFIG).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// kind backend: kubeconfig context.
    #[arg(long)]
    pub context: Option<String>,
    /// kind backend: the operator is already installed (vendor clusters).
    #[arg(long)]
    pub skip_operator_install: bool,
    /// kind backend: replace an installed operator newer than --cnpg-version (or of unknown release).
    #[arg(long)]
    pub allow_operator_downgrade: bool,
    /// kind backend: apply an operator manifest that has no sha256 pin (prints its hash).
    #[arg(long)]
    pub allow_unpinned_operator: bool,
    /// kind backend: render every manifest into <report-dir>/manifests/ and contact nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// kind backend: a local registry mirror instead of `kind load` (--registry, --registry-port, --registry-image).
    #[cfg(feature = "kind")]
    #[command(flatten)]
    pub registry: cnpg_ext_kind::cli::RegistryArgs,
    /// Container engine of `--backend container`: podman or docker ≥ 28 (or a path); default: podman, then docker.
    #[arg(long, env = "CNPG_EXT_HARNESS_ENGINE")]
    pub engine: Option<String>,
    /// PostgreSQL operand image for `--backend container` (pulled if missing); default: one built from the local PostgreSQL.
    #[arg(long, env = "CNPG_EXT_HARNESS_PG_IMAGE")]
    pub pg_image: Option<String>,
    /// Global engine flags, split like a shell, e.g. "--runtime runc --cgroup-manager cgroupfs".
    #[arg(long, env = "CNPG_EXT_HARNESS_ENGINE_FLAGS", allow_hyphen_values = true)]
    pub engine_flags: Option<String>,
    /// Host flags of every container, split like a shell, e.g. "--ulimit nofile=20000:20000":
    /// --ulimit, --security-opt, --cap-add, --cap-drop, --shm-size, --pids-limit, --memory, --device, --network.
    #[arg(long, env = "CNPG_EXT_HARNESS_RUN_FLAGS", allow_hyphen_values = true)]
    pub engine_run_flags: Option<String>,
    /// Retry a scenario that failed on infrastructure (image-pull, container-create, timeout)
    /// up to N more times, never an assertion; a pass after a retry is reported `flaky`.
    #[arg(long, default_value_t = 0)]
    pub retries: usize,
    /// Also write a results bundle: the reports, every log, the environment, the image
    /// digests, the scenarios and fixture recipes as run and the command, in one .tar.gz
    /// (layout: docs/report-schema.md → Bundle).
    #[arg(long, value_name = "FILE.tar.gz")]
    pub bundle: Option<PathBuf>,
    /// Rerun the scenarios of a bundle (as they were run, against the same image digests)
    /// and say whether its verdict reproduced. The scenario PATHs are not used. A `certify`
    /// bundle: its certification again, with its recorded command, against the image digest
    /// it recorded (exit as `certify`).
    #[arg(long, value_name = "FILE.tar.gz")]
    pub from_bundle: Option<PathBuf>,
    /// The image mounted under REF comes from SOURCE instead: a registry reference (pulled and
    /// verified), `fixture:DIR` or `oci:PATH`; repeatable. The report records the digest that ran.
    #[arg(long = "image", value_name = "REF=SOURCE")]
    pub images: Vec<String>,
    /// Set from the global `--insecure-registry`: this command's registries.
    #[arg(skip)]
    pub registries: crate::images::pull::Registries,
}

fn parse_operand(s: &str) -> Result<cnpg_ext_pg::OperandFlavor, String> {
    cnpg_ext_pg::OperandFlavor::parse(s).ok_or_else(|| format!("`{s}` is not an operand: use minimal or standard"))
}

fn parse_cnpg(s: &str) -> Result<CnpgVersion, String> {
    s.parse()
}
