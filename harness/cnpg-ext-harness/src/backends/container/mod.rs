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

pub(crate) use crate::plumbing::engine::EngineOptions;
pub use api::ApiService;
pub use argv::LABEL_RUN;
pub(crate) use engine::split_flags;
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
