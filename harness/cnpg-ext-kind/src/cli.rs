//! `cnpg-ext-harness kind up|down|status`.
//!
//! Exit codes: 0 ok, 1 the command failed, 3 environment unusable (kind or a container
//! engine missing, config refused, cluster unreachable) with what to install or change.

use std::path::PathBuf;

use cnpg_ext_model::backend::BackendError;

use crate::config::{
    check_kind_config, check_kind_version, config_file_name, Topology, DEFAULT_KUBERNETES,
};
use crate::options::KindOptions;

pub const DEFAULT_NAME: &str = "cnpg-ext";

#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum KindCommand {
    /// Create a kind cluster (ImageVolume gate on, node image pinned by digest).
    Up {
        #[arg(long, default_value = DEFAULT_NAME)]
        name: String,
        /// A kind config, e.g. kind-config/kind-1.34-3nodes.yaml (default kind-config/kind-1.33.yaml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Accept node images not pinned by digest.
        #[arg(long)]
        allow_unpinned: bool,
    },
    /// Delete the kind cluster.
    Down {
        #[arg(long, default_value = DEFAULT_NAME)]
        name: String,
    },
    /// Show whether the cluster exists and can run image-volume extensions.
    Status {
        #[arg(long, default_value = DEFAULT_NAME)]
        name: String,
    },
}

fn exit_code(e: &BackendError) -> i32 {
    match e {
        BackendError::Unusable(_) => 3,
        _ => 1,
    }
}

async fn run_tool(program: &str, args: &[&str]) -> Result<std::process::Output, std::io::Error> {
    tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
}

/// `kind` and a container engine (docker or podman) are there. Returns `kind version`.
pub async fn check_tools() -> Result<String, BackendError> {
    let kind = run_tool("kind", &["version"]).await.map_err(|e| {
        BackendError::Unusable(format!(
            "`kind` not found ({e}): install kind v0.31.0 (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)"
        ))
    })?;
    let docker = run_tool("docker", &["info", "--format", "{{.ServerVersion}}"]).await;
    let podman = run_tool("podman", &["info", "--format", "{{.Version.Version}}"]).await;
    let ok = |r: &Result<std::process::Output, std::io::Error>| {
        r.as_ref().is_ok_and(|o| o.status.success())
    };
    if !ok(&docker) && !ok(&podman) {
        return Err(BackendError::Unusable(
            "no usable container engine: kind needs a running Docker (`docker info` must work) or Podman \
             (then export KIND_EXPERIMENTAL_PROVIDER=podman); install one and start it"
                .into(),
        ));
    }
    Ok(String::from_utf8_lossy(&kind.stdout).into_owned())
}

pub async fn run(cmd: KindCommand) -> i32 {
    let r = match cmd {
        KindCommand::Up {
            name,
            config,
            allow_unpinned,
        } => up(&name, config, allow_unpinned).await,
        KindCommand::Down { name } => down(&name).await,
        KindCommand::Status { name } => status(&name).await,
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            exit_code(&e)
        }
    }
}

async fn up(name: &str, config: Option<PathBuf>, allow_unpinned: bool) -> Result<(), BackendError> {
    let kind_version = check_tools().await?;
    let path = config.unwrap_or_else(|| {
        crate::kind_config_dir().join(config_file_name(DEFAULT_KUBERNETES, Topology::Single))
    });
    let text = std::fs::read_to_string(&path).map_err(|e| {
        BackendError::Unusable(format!(
            "{}: cannot read the kind config: {e}",
            path.display()
        ))
    })?;
    let info = check_kind_config(&path, &text, allow_unpinned)?;
    for w in &info.warnings {
        eprintln!("warning: {w}");
    }
    if let Some(w) = check_kind_version(&kind_version, info.kind_release.as_deref())? {
        eprintln!("warning: {w}");
    }
    let path_s = path.to_string_lossy().into_owned();
    eprintln!(
        "creating kind cluster `{name}` from {path_s} ({})",
        info.images.join(", ")
    );
    let out = tokio::process::Command::new("kind")
        .args([
            "create", "cluster", "--name", name, "--config", &path_s, "--wait", "180s",
        ])
        .status()
        .await
        .map_err(|e| BackendError::Unusable(format!("cannot run kind: {e}")))?;
    if !out.success() {
        return Err(BackendError::Failed(format!(
            "`kind create cluster --name {name} --config {path_s}` failed (see its output above)"
        )));
    }
    println!("cluster `{name}` is up (context kind-{name}); run scenarios with `--backend kind --kind-cluster {name}`");
    Ok(())
}

async fn down(name: &str) -> Result<(), BackendError> {
    check_tools().await?;
    let out = tokio::process::Command::new("kind")
        .args(["delete", "cluster", "--name", name])
        .status()
        .await
        .map_err(|e| BackendError::Unusable(format!("cannot run kind: {e}")))?;
    if !out.success() {
        return Err(BackendError::Failed(format!(
            "`kind delete cluster --name {name}` failed"
        )));
    }
    Ok(())
}

async fn status(name: &str) -> Result<(), BackendError> {
    let kind_version = check_tools().await?;
    println!("kind: {}", kind_version.trim());
    let clusters = run_tool("kind", &["get", "clusters"])
        .await
        .map_err(|e| BackendError::Unusable(format!("cannot run kind: {e}")))?;
    let list = String::from_utf8_lossy(&clusters.stdout);
    if !list.lines().any(|l| l.trim() == name) {
        return Err(BackendError::Unusable(format!(
            "no kind cluster `{name}`: create it with `cnpg-ext-harness kind up --name {name}`"
        )));
    }
    let opts = KindOptions {
        kind_cluster: Some(name.to_string()),
        ..Default::default()
    };
    let client = crate::backend::connect(&opts).await?;
    let report = crate::preflight::run(&client, "default").await?;
    println!(
        "cluster `{name}`: Kubernetes {}, ImageVolume gate on",
        report.server_version
    );
    for (node, rt) in &report.nodes {
        println!("  node {node}: {rt}");
    }
    match crate::operator::installed_operator(&client).await? {
        Some(op) => println!(
            "CloudNativePG: {} ({}/{})",
            op.version
                .map(|v| v.to_string())
                .unwrap_or_else(|| op.image.clone()),
            op.namespace,
            op.deployment
        ),
        None => println!("CloudNativePG: not installed (a run installs --cnpg-version)"),
    }
    Ok(())
}
