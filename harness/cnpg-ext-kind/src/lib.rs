//! kind + CloudNativePG backend for the conformance harness.
//!
//! * [`config`]: kind cluster configs (`kind-config/`), node image pins, `kind version` check.
//! * [`versions`]: the pinned CloudNativePG release manifests (`kind-config/cnpg-versions.yaml`).
//! * [`operator`]: order and server-side apply of the release manifest, operator readiness.
//! * [`preflight`]: what the cluster must offer (Kubernetes ≥ 1.33, ImageVolume gate,
//!   containerd ≥ 2.1 / CRI-O ≥ 1.31, an operator recent enough for the scenario).
//! * [`apply`]: namespaced Cluster/Database documents and their server-side apply.
//! * [`wait`]: small conditions with a deadline and a description of what is awaited.
//! * [`watch`]: rolling-update observation from watches (every pod UID change, Cluster phases).
//! * [`inspect`], [`exec`]: what every instance pod really has (volumes, files, env).
//! * [`sql`]: SQL sessions through a port-forward.
//! * [`registry`]: `--registry`, a local registry container as the nodes' containerd mirror.
//! * [`diagnostics`]: the failure bundle. [`render`]: `--dry-run`.
//! * [`backend`]: [`KindBackend`] (the model's `Backend`), [`prepare`].
//! * [`cli`]: `kind up|down|status`. [`testing`]: an in-process fake Kubernetes API.

pub mod apply;
pub mod backend;
pub mod cli;
pub mod config;
pub mod diagnostics;
pub mod errors;
pub mod exec;
pub mod inspect;
pub mod operator;
pub mod options;
pub mod preflight;
pub mod registry;
pub mod render;
pub mod sql;
pub mod testing;
pub mod versions;
pub mod wait;
pub mod watch;

pub use backend::{prepare, KindBackend, KindEnvironment};
pub use options::{KindOptions, Timeouts};

/// Field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "cnpg-ext-harness";

/// The repository's `kind-config/` directory (data files shipped with the harness).
pub fn kind_config_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../kind-config")
}
