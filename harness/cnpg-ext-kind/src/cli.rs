//! `cnpg-ext-harness kind up|down|status`.
//!
//! Exit codes: 0 ok, 1 the command failed, 3 environment unusable (kind or a container
//! engine missing, config refused, cluster unreachable) with what to install or change.

use cnpg_ext_exit::Exit;
use std::path::PathBuf;

use cnpg_ext_model::backend::BackendError;

use crate::config::{check_kind_config, check_kind_version, config_file_name, Topology, DEFAULT_KUBERNETES};
use crate::node_mirror::{
    self, hosts_toml_local, with_registry_patch, RegistryConfig, DEFAULT_REGISTRY_IMAGE, DEFAULT_REGISTRY_PORT,
};
use crate::options::KindOptions;

pub const DEFAULT_NAME: &str = "cnpg-ext";

/// `--registry [--registry-port N] [--registry-image REF]`, for `kind up` and for
/// `run --backend kind` (flatten it into the run arguments and call [`RegistryArgs::apply`]).
// The field docs are clap help text, not markdown.
#[allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct RegistryArgs {
    /// A local registry container (`cnpg-ext-registry`) as the nodes' containerd mirror:
    /// images are pushed to it (keeping their references) instead of `kind load`.
    #[arg(long)]
    pub registry: bool,
    /// Host port the registry is published on (127.0.0.1:<port>).
    #[arg(long, default_value_t = DEFAULT_REGISTRY_PORT, value_name = "PORT")]
    pub registry_port: u16,
    /// Image of the registry container (present locally or pullable).
    #[arg(long, default_value = DEFAULT_REGISTRY_IMAGE, value_name = "REF")]
    pub registry_image: String,
}

impl Default for RegistryArgs {
    fn default() -> Self {
        RegistryArgs {
            registry: false,
            registry_port: DEFAULT_REGISTRY_PORT,
            registry_image: DEFAULT_REGISTRY_IMAGE.into(),
        }
    }
}

impl RegistryArgs {
    pub fn apply(&self, opts: &mut KindOptions) {
        opts.registry = self.registry;
        opts.registry_port = self.registry_port;
        opts.registry_image = self.registry_image.clone();
    }

    pub fn config(&self) -> RegistryConfig {
        RegistryConfig {
            name: node_mirror::REGISTRY_NAME.into(),
            image: self.registry_image.clone(),
            port: self.registry_port,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum KindCommand {
    /// Create a kind cluster (ImageVolume gate on, node image pinned by digest).
    Up {
        #[arg(long, default_value = DEFAULT_NAME)]
        name: String,
        /// A kind config, e.g. kind-config/kind-1.34-3nodes.yaml (default kind-config/kind-1.36.yaml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Accept node images not pinned by digest.
        #[arg(long)]
        allow_unpinned: bool,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Delete the kind cluster.
    Down {
        #[arg(long, default_value = DEFAULT_NAME)]
        name: String,
        /// Also remove the local registry container (`cnpg-ext-registry`).
        #[arg(long)]
        registry: bool,
    },
    /// Show whether the cluster exists and can run image-volume extensions.
    Status {
        #[arg(long, default_value = DEFAULT_NAME)]
        name: String,
    },
}

fn exit_code(e: &BackendError) -> Exit {
    match e {
        BackendError::Unusable(_) => Exit::Environment,
        _ => Exit::Failed,
    }
}

async fn run_tool(program: &str, args: &[&str]) -> Result<std::process::Output, std::io::Error> {
    tokio::process::Command::new(program).args(args).output().await
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
    let ok = |r: &Result<std::process::Output, std::io::Error>| r.as_ref().is_ok_and(|o| o.status.success());
    if !ok(&docker) && !ok(&podman) {
        return Err(BackendError::Unusable(
            "no usable container engine: kind needs a running Docker (`docker info` must work) or Podman \
             (then export KIND_EXPERIMENTAL_PROVIDER=podman); install one and start it"
                .into(),
        ));
    }
    Ok(String::from_utf8_lossy(&kind.stdout).into_owned())
}

pub async fn run(cmd: KindCommand) -> Exit {
    let r = match cmd {
        KindCommand::Up { name, config, allow_unpinned, registry } => {
            up(&name, config, allow_unpinned, &registry).await
        }
        KindCommand::Down { name, registry } => down(&name, registry).await,
        KindCommand::Status { name } => status(&name).await,
    };
    match r {
        Ok(()) => Exit::Passed,
        Err(e) => {
            eprintln!("error: {e}");
            exit_code(&e)
        }
    }
}

async fn up(
    name: &str,
    config: Option<PathBuf>,
    allow_unpinned: bool,
    reg_args: &RegistryArgs,
) -> Result<(), BackendError> {
    let kind_version = check_tools().await?;
    let path =
        config.unwrap_or_else(|| crate::kind_config_dir().join(config_file_name(DEFAULT_KUBERNETES, Topology::Single)));
    let text = std::fs::read_to_string(&path)
        .map_err(|e| BackendError::Unusable(format!("{}: cannot read the kind config: {e}", path.display())))?;
    let info = check_kind_config(&path, &text, allow_unpinned)?;
    for w in &info.warnings {
        eprintln!("warning: {w}");
    }
    if let Some(w) = check_kind_version(&kind_version, info.kind_release.as_deref())? {
        eprintln!("warning: {w}");
    }
    let path_s = path.to_string_lossy().into_owned();
    // The registry first (as kind's local-registry guide does), then the cluster with the
    // containerd patch, then the registry joins the `kind` network.
    let mut patched: Option<PathBuf> = None;
    let reg = if reg_args.registry {
        let cli = node_mirror::detect_engine().await?;
        let (reg, created) = node_mirror::ensure_registry(&cli, &reg_args.config()).await?;
        eprintln!(
            "{} registry container {} ({}) on 127.0.0.1:{}",
            if created { "started" } else { "reusing" },
            reg.cfg.name,
            reg.cfg.image,
            reg.cfg.port
        );
        let with_patch = with_registry_patch(&text)?;
        if with_patch != text {
            let p = std::env::temp_dir().join(format!("cnpg-ext-kind-{name}-{}.yaml", std::process::id()));
            std::fs::write(&p, &with_patch)
                .map_err(|e| BackendError::Failed(format!("writing {}: {e}", p.display())))?;
            patched = Some(p);
        }
        Some(reg)
    } else {
        None
    };
    let config_s = patched.as_ref().map(|p| p.to_string_lossy().into_owned()).unwrap_or_else(|| path_s.clone());
    eprintln!(
        "creating kind cluster `{name}` from {path_s}{} ({})",
        if patched.is_some() { " + containerd config_path patch" } else { "" },
        info.images.join(", ")
    );
    let out = tokio::process::Command::new("kind")
        .args(["create", "cluster", "--name", name, "--config", &config_s, "--wait", "180s"])
        .status()
        .await
        .map_err(|e| BackendError::Unusable(format!("cannot run kind: {e}")));
    if let Some(p) = &patched {
        let _ = std::fs::remove_file(p);
    }
    if !out?.success() {
        return Err(BackendError::Failed(format!(
            "`kind create cluster --name {name} --config {path_s}` failed (see its output above)"
        )));
    }
    if let Some(reg) = &reg {
        reg.connect_kind_network().await?;
        let nodes = reg.configure_nodes(name, &[(reg.cfg.host(), hosts_toml_local(&reg.cfg))]).await?;
        let opts = KindOptions { kind_cluster: Some(name.to_string()), ..Default::default() };
        let client = crate::environment::connect(&opts).await?;
        reg.publish_configmap(&client).await?;
        println!(
            "registry {} (container {} on the kind network) is the containerd mirror of {} node(s); ConfigMap kube-public/local-registry-hosting written",
            reg.cfg.host(),
            reg.cfg.name,
            nodes.len()
        );
    }
    let flag = if reg_args.registry {
        if reg_args.registry_port == DEFAULT_REGISTRY_PORT {
            " --registry".to_string()
        } else {
            format!(" --registry --registry-port {}", reg_args.registry_port)
        }
    } else {
        String::new()
    };
    println!(
        "cluster `{name}` is up (context kind-{name}); run scenarios with `--backend kind --kind-cluster {name}{flag}`"
    );
    Ok(())
}

async fn down(name: &str, remove_registry: bool) -> Result<(), BackendError> {
    check_tools().await?;
    if remove_registry {
        let cli = node_mirror::detect_engine().await?;
        let argv = node_mirror::remove_args(&cli, &RegistryArgs::default().config());
        // `rm -f` of an absent container fails; nothing to remove then.
        let _ = node_mirror::run(&argv, None).await?;
    }
    let out = tokio::process::Command::new("kind")
        .args(["delete", "cluster", "--name", name])
        .status()
        .await
        .map_err(|e| BackendError::Unusable(format!("cannot run kind: {e}")))?;
    if !out.success() {
        return Err(BackendError::Failed(format!("`kind delete cluster --name {name}` failed")));
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
    let opts = KindOptions { kind_cluster: Some(name.to_string()), ..Default::default() };
    let client = crate::environment::connect(&opts).await?;
    let report = crate::preflight::run(
        &client,
        crate::preflight::PREFLIGHT_NAMESPACE,
        crate::options::Timeouts::default().forbidden_retry,
    )
    .await?;
    println!("cluster `{name}`: Kubernetes {}, ImageVolume gate on", report.server_version);
    for (node, rt) in &report.nodes {
        println!("  node {node}: {rt}");
    }
    if let Ok(cli) = node_mirror::detect_engine().await {
        let cfg = RegistryArgs::default().config();
        let state = node_mirror::run(&node_mirror::inspect_running_args(&cli, &cfg), None).await;
        match state {
            Ok(o) if o.status.success() => {
                let port = node_mirror::run_ok(&node_mirror::port_args(&cli, &cfg), None).await.unwrap_or_default();
                println!(
                    "registry: {} running={} published on {}",
                    cfg.name,
                    String::from_utf8_lossy(&o.stdout).trim(),
                    port.trim()
                );
            }
            _ => println!("registry: none (`kind up --registry` starts {})", cfg.name),
        }
    }
    match crate::operator::installed_operator(&client).await? {
        Some(op) => println!(
            "CloudNativePG: {} ({}/{})",
            op.version.map(|v| v.to_string()).unwrap_or_else(|| op.image.clone()),
            op.namespace,
            op.deployment
        ),
        None => println!("CloudNativePG: not installed (a run installs --cnpg-version)"),
    }
    Ok(())
}

/// Whether the command line gives `flag` (`--flag value` or `--flag=value`) before a `--`:
/// tells a value the user chose from a clap default (e.g. `--cnpg-version`, see
/// [`crate::KindOptions::cnpg_version_explicit`]).
pub fn flag_given<I, S>(args: I, flag: &str) -> bool
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let with_value = format!("{flag}=");
    args.into_iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .take_while(|a| a != "--")
        .any(|a| a == flag || a.starts_with(&with_value))
}

#[cfg(test)]
mod flag_tests {
    use super::flag_given;

    #[test]
    fn flags_given_or_not() {
        let f = |args: &[&str]| flag_given(args.iter(), "--cnpg-version");
        assert!(f(&["h", "run", "--cnpg-version", "1.30.0", "s/"]));
        assert!(f(&["h", "run", "--cnpg-version=1.30.0"]));
        assert!(!f(&["h", "run", "s/", "--backend", "kind"]));
        assert!(!f(&["h", "run", "--cnpg-versions-file", "x"]));
        assert!(!f(&["h", "run", "--", "--cnpg-version"]));
    }
}
