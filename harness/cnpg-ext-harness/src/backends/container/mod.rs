//! The `container` backend: instances are containers of a real OCI engine (podman, docker ≥ 28),
//! created through the Docker Engine API (`testcontainers`, see `api`),
//! with one image mount (`Mount { Type: image }`) per extension, the mechanism kubelet asks of the runtime.
//!
//! Each instance is a container of the PostgreSQL operand image running as uid 26, with its
//! data in an engine volume (so that a rolling update *replaces* the container and keeps the
//! data), its `postgresql.conf` in a host directory mounted read-only (rewritten and reloaded
//! on a search-path change) and its unix socket in a host directory (no network at all:
//! `--network none`; replicas stream from the primary through its socket directory). The
//! stand-in operator (`backends::standin`) decides; this module only runs containers.

mod api;
mod argv;
mod engine;
mod env;
mod hostflags;
mod images;
mod logs;
mod mounts;
mod operand;
mod runtime;
mod template;

pub use api::ApiService;
pub use argv::LABEL_RUN;
pub use engine::split_flags;
pub(crate) use engine::{ENV_ENGINE, ENV_ENGINE_FLAGS, ENV_PG_BINDIR, ENV_PG_IMAGE, ENV_RUN_FLAGS};
pub use env::start_api_service;
pub(crate) use env::ContainerEnv;
pub use images::engine_reference_of;
pub(crate) use runtime::ContainerBackend;

/// Whether an engine the backend accepts is installed (podman >= 4, or docker >= 28 with a
/// daemon), with the flags of `opts`. Whether it can run containers is probed at run time.
pub fn engine_available(opts: &EngineOptions) -> bool {
    let o = opts.resolved();
    let flags = |f: &Option<String>| split_flags(f.as_deref().unwrap_or("")).unwrap_or_default();
    engine::detect(o.engine.as_deref(), flags(&o.engine_flags), flags(&o.run_flags)).is_ok()
}

/// Engine selection and flags (see README: some hosts need extra flags). `None` fields are
/// read from the environment (`CNPG_EXT_HARNESS_ENGINE`, `…_PG_IMAGE`, `…_ENGINE_FLAGS`,
/// `…_RUN_FLAGS`, `…_PG_BINDIR`).
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// `podman`, `docker` or a path to either; default: podman, then docker.
    pub engine: Option<String>,
    /// PostgreSQL operand image to use (pulled when missing) instead of building one.
    pub pg_image: Option<String>,
    /// Global engine flags, split like a shell: `--runtime runc --cgroup-manager cgroupfs`.
    pub engine_flags: Option<String>,
    /// Flags added to every `run`, split like a shell: `--ulimit nofile=20000:20000`.
    pub run_flags: Option<String>,
    /// Directory of the PostgreSQL programs inside `pg_image` (default: its PATH).
    pub pg_bindir: Option<String>,
}

impl EngineOptions {
    /// Every field from its environment variable.
    pub fn from_env() -> EngineOptions {
        EngineOptions::default().resolved()
    }

    /// Fills unset fields from the environment.
    pub fn resolved(&self) -> EngineOptions {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        EngineOptions {
            engine: self.engine.clone().or_else(|| var(ENV_ENGINE)),
            pg_image: self.pg_image.clone().or_else(|| var(ENV_PG_IMAGE)),
            engine_flags: self.engine_flags.clone().or_else(|| var(ENV_ENGINE_FLAGS)),
            run_flags: self.run_flags.clone().or_else(|| var(ENV_RUN_FLAGS)),
            pg_bindir: self.pg_bindir.clone().or_else(|| var(ENV_PG_BINDIR)),
        }
    }
}
