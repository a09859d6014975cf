//! `--registry`: a local registry side-container as a containerd mirror for the kind nodes.
//!
//! * A registry container (`registry:2` by default) named [`REGISTRY_NAME`] is started (or
//!   reused) with the engine kind runs on (docker or podman), published on
//!   `127.0.0.1:<port>` and connected to the `kind` network, where the nodes reach it as
//!   `cnpg-ext-registry:5000`.
//! * The kind config carries the containerd patch `config_path = "/etc/containerd/certs.d"`
//!   ([`with_registry_patch`]); after the cluster exists every node gets
//!   `certs.d/localhost:<port>/hosts.toml` (so `localhost:<port>/…` references work as in
//!   kind's local-registry guide) and the `local-registry-hosting` ConfigMap is applied in
//!   `kube-public` (KEP-1755).
//! * Scenario images keep their references. Each image is pushed to the registry under
//!   `localhost:<port>/<source host>/<path>:<tag>` (skopeo, or the engine's load/tag/push),
//!   and every node gets `certs.d/<source host>/hosts.toml` declaring
//!   `http://cnpg-ext-registry:5000/v2/<source host>` as a mirror (`override_path`): a pull
//!   of `ghcr.io/cloudnative-pg/pgvector:0.8.1-18-trixie` is served by the local registry,
//!   so the manifests applied are exactly those users apply. The source host prefix keeps
//!   two registries' `foo/bar:1` apart. containerd reads `hosts.toml` at every pull: no
//!   restart.
//!
//! Every command line is built by a pure function (`*_args`) and snapshot-tested; the
//! `async fn`s only run them. Why the engine CLI and not testcontainers-rs: the registry
//! must outlive the process that starts it (`kind up --registry` exits, the cluster keeps
//! pulling from it, later runs reuse it), while a testcontainers container is removed on
//! drop; it must join kind's `kind` network and is driven the same way kind drives its
//! nodes (docker or podman CLI, honouring `KIND_EXPERIMENTAL_PROVIDER` and the host's
//! engine flags), and testcontainers needs a Docker-API socket, which podman only offers
//! with `podman system service` running.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use cnpg_ext_model::backend::BackendError;
use serde_json::{json, Value};

use crate::options::KindOptions;

pub const REGISTRY_NAME: &str = "cnpg-ext-registry";
pub use crate::options::{DEFAULT_REGISTRY_IMAGE, DEFAULT_REGISTRY_PORT};
/// The port the registry listens on inside its container.
pub const REGISTRY_CONTAINER_PORT: u16 = 5000;
/// The docker/podman network kind puts its nodes on.
pub const KIND_NETWORK: &str = "kind";
pub const CERTS_D: &str = "/etc/containerd/certs.d";
/// Label on the registry container (value: the host port).
pub const REGISTRY_LABEL: &str = "io.cnpg-ext-harness.registry";
/// Extra global engine flags, shared with the container backend.
pub const ENGINE_FLAGS_ENV: &str = "CNPG_EXT_HARNESS_ENGINE_FLAGS";

pub use crate::config::CONTAINERD_PATCH;

fn unusable(m: impl Into<String>) -> BackendError {
    BackendError::Unusable(m.into())
}

/// Where the registry lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    pub name: String,
    pub image: String,
    pub port: u16,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            name: REGISTRY_NAME.into(),
            image: DEFAULT_REGISTRY_IMAGE.into(),
            port: DEFAULT_REGISTRY_PORT,
        }
    }
}

impl RegistryConfig {
    pub fn from_options(opts: &KindOptions) -> Self {
        RegistryConfig {
            name: REGISTRY_NAME.into(),
            image: opts.registry_image.clone(),
            port: opts.registry_port,
        }
    }

    /// `localhost:<port>`: how the host (and KEP-1755 clients) name the registry.
    pub fn host(&self) -> String {
        format!("localhost:{}", self.port)
    }

    /// How containerd on the nodes reaches it (over the `kind` network).
    pub fn endpoint(&self) -> String {
        format!("http://{}:{REGISTRY_CONTAINER_PORT}", self.name)
    }
}

/// The container engine kind runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Docker,
    Podman,
}

impl Engine {
    pub fn program(self) -> &'static str {
        match self {
            Engine::Docker => "docker",
            Engine::Podman => "podman",
        }
    }
}

/// kind's own choice: `KIND_EXPERIMENTAL_PROVIDER` when set, else docker when it answers,
/// else podman.
pub fn select_engine(
    provider: Option<&str>,
    docker_ok: bool,
    podman_ok: bool,
) -> Result<Engine, BackendError> {
    match provider.map(str::trim).filter(|p| !p.is_empty()) {
        Some("docker") if docker_ok => Ok(Engine::Docker),
        Some("podman") if podman_ok => Ok(Engine::Podman),
        Some(p @ ("docker" | "podman")) => Err(unusable(format!(
            "KIND_EXPERIMENTAL_PROVIDER={p} but `{p} info` does not work: install and start {p}"
        ))),
        Some(other) => Err(unusable(format!(
            "KIND_EXPERIMENTAL_PROVIDER={other}: the registry mirror supports docker and podman only"
        ))),
        None if docker_ok => Ok(Engine::Docker),
        None if podman_ok => Ok(Engine::Podman),
        None => Err(unusable(
            "--registry needs a container engine for the registry container: no usable docker (`docker info`) or podman (`podman info`); install one (podman: also export KIND_EXPERIMENTAL_PROVIDER=podman)",
        )),
    }
}

/// An engine with the global flags the host needs (`--runtime runc …`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineCli {
    pub engine: Engine,
    pub flags: Vec<String>,
}

impl EngineCli {
    pub fn new(engine: Engine, flags: Vec<String>) -> Self {
        EngineCli { engine, flags }
    }

    /// Flags from `CNPG_EXT_HARNESS_ENGINE_FLAGS` (whitespace-separated).
    pub fn from_env(engine: Engine) -> Self {
        let flags = std::env::var(ENGINE_FLAGS_ENV)
            .map(|s| s.split_whitespace().map(String::from).collect())
            .unwrap_or_default();
        EngineCli::new(engine, flags)
    }

    /// `[program, flags…, args…]`.
    pub fn argv<S: AsRef<str>>(&self, args: &[S]) -> Vec<String> {
        let mut v = vec![self.engine.program().to_string()];
        v.extend(self.flags.iter().cloned());
        v.extend(args.iter().map(|a| a.as_ref().to_string()));
        v
    }
}

// ---- command lines ----------------------------------------------------------------------

/// `inspect --format {{.State.Running}} <name>`: `true`/`false`, or fails when absent.
pub fn inspect_running_args(cli: &EngineCli, cfg: &RegistryConfig) -> Vec<String> {
    cli.argv(&["inspect", "--format", "{{.State.Running}}", &cfg.name])
}

/// Starts the registry (detached, restarted with the engine, published on loopback only).
pub fn run_args(cli: &EngineCli, cfg: &RegistryConfig) -> Vec<String> {
    cli.argv(&[
        "run".to_string(),
        "-d".into(),
        "--restart=always".into(),
        "--name".into(),
        cfg.name.clone(),
        "--label".into(),
        format!("{REGISTRY_LABEL}={}", cfg.port),
        "-p".into(),
        format!("127.0.0.1:{}:{REGISTRY_CONTAINER_PORT}", cfg.port),
        cfg.image.clone(),
    ])
}

pub fn start_args(cli: &EngineCli, cfg: &RegistryConfig) -> Vec<String> {
    cli.argv(&["start", &cfg.name])
}

/// `port <name> 5000/tcp`: where the registry is published (`127.0.0.1:5001`).
pub fn port_args(cli: &EngineCli, cfg: &RegistryConfig) -> Vec<String> {
    cli.argv(&[
        "port".to_string(),
        cfg.name.clone(),
        format!("{REGISTRY_CONTAINER_PORT}/tcp"),
    ])
}

/// The networks the registry is on (a JSON object keyed by network name).
pub fn networks_args(cli: &EngineCli, cfg: &RegistryConfig) -> Vec<String> {
    cli.argv(&[
        "inspect",
        "--format",
        "{{json .NetworkSettings.Networks}}",
        &cfg.name,
    ])
}

pub fn network_connect_args(cli: &EngineCli, cfg: &RegistryConfig) -> Vec<String> {
    cli.argv(&["network", "connect", KIND_NETWORK, &cfg.name])
}

pub fn remove_args(cli: &EngineCli, cfg: &RegistryConfig) -> Vec<String> {
    cli.argv(&["rm", "-f", &cfg.name])
}

pub fn kind_get_nodes_args(cluster: &str) -> Vec<String> {
    ["kind", "get", "nodes", "--name", cluster]
        .map(String::from)
        .to_vec()
}

/// Writes `hosts.toml` (given on stdin) into `certs.d/<host>/` of a node, atomically.
pub fn write_hosts_toml_args(cli: &EngineCli, node: &str, host: &str) -> Vec<String> {
    let dir = format!("{CERTS_D}/{host}");
    let script = format!(
        "mkdir -p '{dir}' && cat > '{dir}/hosts.toml.tmp.'$$ && mv -f '{dir}/hosts.toml.tmp.'$$ '{dir}/hosts.toml'"
    );
    cli.argv(&["exec", "-i", node, "sh", "-c", &script])
}

/// `skopeo copy` of a docker archive into the registry (plain HTTP on loopback).
pub fn skopeo_push_args(archive: &Path, target: &MirrorTarget) -> Vec<String> {
    vec![
        "skopeo".into(),
        "copy".into(),
        "--dest-tls-verify=false".into(),
        format!("docker-archive:{}", archive.display()),
        format!("docker://{}", target.push),
    ]
}

/// Without skopeo: load the archive into the engine, tag, push, drop the mirror tag.
pub fn engine_push_steps(
    cli: &EngineCli,
    archive: &Path,
    loaded: &str,
    target: &MirrorTarget,
) -> Vec<Vec<String>> {
    let push = match cli.engine {
        Engine::Podman => cli.argv(&["push", "--tls-verify=false", &target.push]),
        // docker treats localhost registries as insecure (plain HTTP) by default.
        Engine::Docker => cli.argv(&["push", &target.push]),
    };
    vec![
        cli.argv(&["load", "-i", &archive.display().to_string()]),
        cli.argv(&["tag", loaded, &target.push]),
        push,
        cli.argv(&["rmi", &target.push]),
    ]
}

// ---- files and objects ------------------------------------------------------------------

/// `certs.d/localhost:<port>/hosts.toml`: `localhost:<port>/…` pulled from the registry.
pub fn hosts_toml_local(cfg: &RegistryConfig) -> String {
    format!(
        "# Written by cnpg-ext-harness: {} is the registry container {} on the kind network.\n[host.\"{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
        cfg.host(),
        cfg.name,
        cfg.endpoint()
    )
}

/// The upstream server of a registry host (`docker.io` is served by `registry-1.docker.io`).
pub fn upstream_server(host: &str) -> String {
    match host {
        "docker.io" => "https://registry-1.docker.io".into(),
        h => format!("https://{h}"),
    }
}

/// `certs.d/<host>/hosts.toml`: pulls of `<host>/…` try the local registry first (where
/// the images live under `<host>/…`), then `<host>` itself.
pub fn hosts_toml_mirror(host: &str, cfg: &RegistryConfig) -> String {
    format!(
        "# Written by cnpg-ext-harness: images of {host} pushed to {} ({}) are pulled from there.\nserver = \"{}\"\n\n[host.\"{}/v2/{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  override_path = true\n",
        cfg.host(),
        cfg.name,
        upstream_server(host),
        cfg.endpoint()
    )
}

/// KEP-1755: how tools find the local registry.
pub fn local_registry_hosting(cfg: &RegistryConfig) -> Value {
    let data = format!(
        "host: \"{}\"\nhostFromContainerRuntime: \"{}:{REGISTRY_CONTAINER_PORT}\"\nhelp: \"https://kind.sigs.k8s.io/docs/user/local-registry/\"\n",
        cfg.host(),
        cfg.name
    );
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "local-registry-hosting",
            "namespace": "kube-public",
            "labels": {"app.kubernetes.io/managed-by": crate::FIELD_MANAGER}
        },
        "data": {"localRegistryHosting.v1": data}
    })
}

/// Adds the containerd `config_path` patch to a kind config unless it has one. A config
/// without `containerdConfigPatches` gets the block appended as text (comments such as
/// `# kind-release:` are kept); otherwise the patch joins the list and the YAML is
/// rewritten.
pub fn with_registry_patch(text: &str) -> Result<String, BackendError> {
    if text.contains("config_path") {
        return Ok(text.to_string());
    }
    let mut v: Value = serde_saphyr::from_str(text)
        .map_err(|e| unusable(format!("not a YAML kind config: {e}")))?;
    let has_patch = |v: &Value| {
        v.get("containerdConfigPatches")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|p| p.as_str() == Some(CONTAINERD_PATCH)))
    };
    if v.get("containerdConfigPatches").is_none() {
        let mut out = text.to_string();
        if !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str("# --registry (added by cnpg-ext-harness): containerd reads registry hosts from certs.d.\ncontainerdConfigPatches:\n  - |-\n");
        for line in CONTAINERD_PATCH.lines() {
            out.push_str(&format!("    {line}\n"));
        }
        if serde_saphyr::from_str::<Value>(&out).is_ok_and(|v| has_patch(&v)) {
            return Ok(out);
        }
    }
    let obj = v
        .as_object_mut()
        .ok_or_else(|| unusable("the kind config is not a mapping"))?;
    let patches = obj
        .entry("containerdConfigPatches")
        .or_insert_with(|| json!([]));
    match patches.as_array_mut() {
        Some(a) => a.push(Value::String(CONTAINERD_PATCH.into())),
        None => return Err(unusable("containerdConfigPatches is not a list")),
    }
    Ok(crate::apply::to_yaml(&v))
}

// ---- references ---------------------------------------------------------------------------

/// Where an image reference is pushed, and which registry host it is pulled from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorTarget {
    pub reference: String,
    /// Registry host of the reference (`ghcr.io`, `docker.io`, `localhost`, `host:port`).
    pub host: String,
    /// `localhost:<port>/<host>/<path>:<tag>`.
    pub push: String,
    /// Set when the reference pins a digest: pulls by digest only work if the archive's
    /// manifest has that digest.
    pub note: Option<String>,
}

/// Splits an image reference as the container runtimes do: (host, path, tag, digest).
pub fn split_reference(
    reference: &str,
) -> Result<(String, String, Option<String>, Option<String>), BackendError> {
    let bad = |why: &str| BackendError::Failed(format!("image reference `{reference}`: {why}"));
    let (name_tag, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d.to_string())),
        None => (reference, None),
    };
    let (name, tag) = match name_tag.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, Some(t.to_string())),
        _ => (name_tag, None),
    };
    if name.is_empty() {
        return Err(bad("no repository"));
    }
    let (host, path) = match name.split_once('/') {
        Some((h, rest)) if h.contains('.') || h.contains(':') || h == "localhost" => {
            (h.to_string(), rest.to_string())
        }
        Some(_) => ("docker.io".to_string(), name.to_string()),
        None => ("docker.io".to_string(), format!("library/{name}")),
    };
    if path.is_empty() || path.starts_with('/') || path.ends_with('/') {
        return Err(bad("empty path component"));
    }
    Ok((host, path, tag, digest))
}

pub fn mirror_target(reference: &str, cfg: &RegistryConfig) -> Result<MirrorTarget, BackendError> {
    mirror_target_at(reference, &cfg.host())
}

/// [`mirror_target`] for a registry this machine reaches at `registry_host` (`host:port`).
pub fn mirror_target_at(reference: &str, registry_host: &str) -> Result<MirrorTarget, BackendError> {
    let (host, path, tag, digest) = split_reference(reference)?;
    let tag = match (&tag, &digest) {
        (Some(t), _) => t.clone(),
        (None, Some(d)) => d.replace(':', "-"),
        (None, None) => "latest".into(),
    };
    let note = digest.map(|d| {
        format!(
            "{reference} pins {d}: it is pushed as tag `{tag}`; a pull by digest from the mirror works only if the archive's manifest has that digest"
        )
    });
    Ok(MirrorTarget {
        reference: reference.into(),
        push: format!("{registry_host}/{host}/{path}:{tag}"),
        host,
        note,
    })
}

/// The distinct registry hosts of `targets`, each with its `hosts.toml`.
pub fn mirror_hosts_files(targets: &[MirrorTarget], cfg: &RegistryConfig) -> Vec<(String, String)> {
    let hosts: BTreeSet<&str> = targets.iter().map(|t| t.host.as_str()).collect();
    hosts
        .into_iter()
        .map(|h| (h.to_string(), hosts_toml_mirror(h, cfg)))
        .collect()
}

/// The image name `docker load` / `podman load` reports (`Loaded image: <ref>` or
/// `Loaded image(s): <ref>`).
pub fn parse_loaded_image(output: &str) -> Option<String> {
    output.lines().find_map(|l| {
        let (_, rest) = l.split_once("Loaded image")?;
        let rest = rest
            .trim_start_matches("(s)")
            .trim_start_matches(':')
            .trim();
        rest.split(',')
            .next()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    })
}

/// Is the registry published where the config says (`port` output)?
pub fn published_on(port_output: &str, port: u16) -> bool {
    port_output.lines().any(|l| {
        l.trim()
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.trim() == port.to_string())
    })
}

// ---- running them -------------------------------------------------------------------------

/// The output of one command; an error when it cannot be started (exit 3: not installed).
pub async fn run(
    argv: &[String],
    stdin: Option<&str>,
) -> Result<std::process::Output, BackendError> {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| {
        unusable(format!(
            "cannot run `{}` ({e}): is it installed and on PATH?",
            argv[0]
        ))
    })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .await
            .map_err(|e| BackendError::Failed(format!("writing to `{}`: {e}", argv.join(" "))))?;
    }
    child
        .wait_with_output()
        .await
        .map_err(|e| BackendError::Failed(format!("`{}`: {e}", argv.join(" "))))
}

/// Runs a command that must succeed; its stdout.
pub async fn run_ok(argv: &[String], stdin: Option<&str>) -> Result<String, BackendError> {
    let out = run(argv, stdin).await?;
    if !out.status.success() {
        return Err(BackendError::Failed(format!(
            "`{}` failed: {}",
            argv.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn answers(argv: &[&str]) -> bool {
    let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
    run(&argv, None).await.is_ok_and(|o| o.status.success())
}

/// Detects the engine kind uses (see [`select_engine`]) with the host's engine flags.
pub async fn detect_engine() -> Result<EngineCli, BackendError> {
    let provider = std::env::var("KIND_EXPERIMENTAL_PROVIDER").ok();
    let flags = |e: Engine| EngineCli::from_env(e);
    let docker_ok = answers(&["docker", "info", "--format", "{{.ServerVersion}}"]).await;
    let podman_ok = if docker_ok && provider.as_deref() != Some("podman") {
        false
    } else {
        let p = flags(Engine::Podman);
        let argv = p.argv(&["info", "--format", "{{.Version.Version}}"]);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        answers(&argv).await
    };
    let engine = select_engine(provider.as_deref(), docker_ok, podman_ok)?;
    Ok(flags(engine))
}

/// The registry container, running (started or reused).
#[derive(Debug, Clone)]
pub struct LocalRegistry {
    pub cli: EngineCli,
    pub cfg: RegistryConfig,
}

/// Starts the registry container, or reuses it when it exists (started again if stopped);
/// a reused one must be published on the requested port.
pub async fn ensure_registry(
    cli: &EngineCli,
    cfg: &RegistryConfig,
) -> Result<(LocalRegistry, bool), BackendError> {
    let state = run(&inspect_running_args(cli, cfg), None).await?;
    let running = String::from_utf8_lossy(&state.stdout).trim().to_string();
    let created = if !state.status.success() {
        let out = run(&run_args(cli, cfg), None).await?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
            return Err(unusable(format!(
                "cannot start the registry container `{}` from {} on 127.0.0.1:{}: {err}. The image must be present or pullable (pull it, or pass --registry-image with a local one); the port must be free (--registry-port)",
                cfg.name, cfg.image, cfg.port
            )));
        }
        true
    } else {
        if running != "true" {
            run_ok(&start_args(cli, cfg), None).await?;
        }
        false
    };
    let port = run_ok(&port_args(cli, cfg), None).await.unwrap_or_default();
    if !published_on(&port, cfg.port) {
        return Err(unusable(format!(
            "the existing registry container `{}` is published on `{}`, not 127.0.0.1:{}: pass --registry-port to match, or remove it (`{}`)",
            cfg.name,
            port.trim(),
            cfg.port,
            remove_args(cli, cfg).join(" ")
        )));
    }
    Ok((
        LocalRegistry {
            cli: cli.clone(),
            cfg: cfg.clone(),
        },
        created,
    ))
}

impl LocalRegistry {
    /// Connects the registry to the `kind` network unless it is on it.
    pub async fn connect_kind_network(&self) -> Result<(), BackendError> {
        let nets = run_ok(&networks_args(&self.cli, &self.cfg), None).await?;
        let on_kind = serde_json::from_str::<Value>(nets.trim())
            .ok()
            .and_then(|v| v.as_object().map(|o| o.contains_key(KIND_NETWORK)))
            .unwrap_or(false);
        if !on_kind {
            run_ok(&network_connect_args(&self.cli, &self.cfg), None).await?;
        }
        Ok(())
    }

    /// Writes `certs.d/<host>/hosts.toml` into every node of `cluster`.
    pub async fn configure_nodes(
        &self,
        cluster: &str,
        files: &[(String, String)],
    ) -> Result<Vec<String>, BackendError> {
        let nodes: Vec<String> = run_ok(&kind_get_nodes_args(cluster), None)
            .await?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        if nodes.is_empty() {
            return Err(unusable(format!(
                "kind cluster `{cluster}` has no nodes (`kind get nodes --name {cluster}`)"
            )));
        }
        for node in &nodes {
            for (host, text) in files {
                run_ok(&write_hosts_toml_args(&self.cli, node, host), Some(text)).await?;
            }
        }
        Ok(nodes)
    }

    /// Pushes every (reference, docker archive) to the registry; the targets pushed.
    pub async fn push_images(
        &self,
        images: &[(String, PathBuf)],
    ) -> Result<Vec<MirrorTarget>, BackendError> {
        let targets = images
            .iter()
            .map(|(reference, archive)| Ok((mirror_target(reference, &self.cfg)?, archive.clone())))
            .collect::<Result<Vec<_>, BackendError>>()?;
        push_with(&targets, Some(&self.cli)).await?;
        Ok(targets.into_iter().map(|(t, _)| t).collect())
    }

    /// Applies the `local-registry-hosting` ConfigMap (server-side apply).
    pub async fn publish_configmap(&self, client: &kube::Client) -> Result<(), BackendError> {
        use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("", "v1", "ConfigMap"),
            "configmaps",
        );
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "kube-public", &ar);
        crate::apply::server_side_apply(&api, "ConfigMap", &local_registry_hosting(&self.cfg))
            .await?;
        Ok(())
    }
}

/// Pushes each docker archive to its target: skopeo when installed, else the container
/// engine (detected only then).
pub async fn push_archives(targets: &[(MirrorTarget, PathBuf)]) -> Result<(), BackendError> {
    push_with(targets, None).await
}

async fn push_with(targets: &[(MirrorTarget, PathBuf)], engine: Option<&EngineCli>) -> Result<(), BackendError> {
    if targets.is_empty() {
        return Ok(());
    }
    let skopeo = answers(&["skopeo", "--version"]).await;
    let detected;
    let cli = match (skopeo, engine) {
        (true, _) => None,
        (false, Some(cli)) => Some(cli),
        (false, None) => {
            detected = detect_engine().await.map_err(|e| {
                unusable(format!("pushing images to the cluster's registry needs skopeo or a container engine: {e}"))
            })?;
            Some(&detected)
        }
    };
    for (target, archive) in targets {
        if let Some(n) = &target.note {
            tracing::warn!("{n}");
        }
        match cli {
            None => {
                run_ok(&skopeo_push_args(archive, target), None).await?;
            }
            Some(cli) => {
                let load = cli.argv(&["load", "-i", &archive.display().to_string()]);
                let loaded = parse_loaded_image(&run_ok(&load, None).await?).unwrap_or_else(|| target.reference.clone());
                for step in engine_push_steps(cli, archive, &loaded, target).into_iter().skip(1) {
                    run_ok(&step, None).await?;
                }
            }
        }
    }
    Ok(())
}

/// For a run with `--registry` on kind cluster `cluster`: the engine, the registry (started
/// or reused, on the `kind` network) and the nodes' `localhost:<port>` mirror. Exit 3 with
/// what to install when kind or an engine is missing.
pub async fn prepare_registry(opts: &KindOptions) -> Result<LocalRegistry, BackendError> {
    let Some(cluster) = opts.kind_cluster.as_deref() else {
        return Err(unusable(
            "--registry needs --kind-cluster <name>: the harness writes the mirror configuration into the kind nodes (on another cluster, make the images pullable and drop --registry)",
        ));
    };
    tokio::process::Command::new("kind")
        .arg("version")
        .output()
        .await
        .map_err(|e| {
            unusable(format!(
                "--registry: `kind` is not installed ({e}); install kind v0.31.0 (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)"
            ))
        })?;
    let cli = detect_engine().await?;
    let cfg = RegistryConfig::from_options(opts);
    let (reg, created) = ensure_registry(&cli, &cfg).await?;
    if created {
        tracing::info!(
            "started registry container {} ({}) on {}",
            cfg.name,
            cfg.image,
            cfg.host()
        );
    }
    reg.connect_kind_network().await?;
    reg.configure_nodes(cluster, &[(cfg.host(), hosts_toml_local(&cfg))])
        .await?;
    Ok(reg)
}
