//! kind + CloudNativePG backend for the conformance harness.
//!
//! What callers use: [`prepare`] (connect, preflight, operator) → [`KindEnvironment`]
//! ([`KindEnvironment::load_images`] once per run, [`KindEnvironment::backend`] per
//! scenario) → [`KindBackend`] (the model's `Backend`); [`KindOptions`] / [`Timeouts`];
//! [`render::render_dry_run`] (`--dry-run`); [`cli`] (`kind up|down|status` and the
//! `--registry` flags).
//!
//! Inside, from the bottom up (no module imports one above it):
//!
//! * `options`, `errors`: the run's options; kube errors mapped to the model's
//!   `BackendError`.
//! * `config`: kind cluster configs (`kind-config/`), node image pins, `kind version`.
//! * `versions`: the pinned CloudNativePG release manifests.
//! * `apply`: namespaced Cluster/Database documents, server-side apply, YAML output.
//! * `wait`, `watch`: polled conditions with deadlines; rollout observation from watches.
//! * `operator`: order and server-side apply of the release manifest, readiness, the
//!   installed version.
//! * `preflight`: what the cluster must offer. `inspect`, `exec`: what every instance pod
//!   really has. `sql`: SQL sessions through a port-forward.
//! * `registry`: `--registry`, a local registry container as the nodes' containerd mirror.
//! * `diagnostics`: the failure bundle. `render`: `--dry-run`.
//! * `backend`: [`KindBackend`], [`KindEnvironment`], [`prepare`]. `cli`: the subcommands.
//!
//! With the `testing` feature (this crate's tests and benchmark only) the internal modules
//! are public and `testing` holds an in-process fake Kubernetes API.

// Internal modules: public only to this crate's own tests (feature `testing`).
macro_rules! internal {
    ($($m:ident),* $(,)?) => {
        $(
            #[cfg(feature = "testing")]
            pub mod $m;
            #[cfg(not(feature = "testing"))]
            mod $m;
        )*
    };
}

internal!(
    apply,
    backend,
    config,
    diagnostics,
    errors,
    exec,
    inspect,
    operator,
    options,
    preflight,
    registry,
    sql,
    versions,
    wait,
    watch,
);

pub mod cli;
pub mod render;
#[cfg(feature = "testing")]
pub mod testing;

pub use backend::{prepare, KindBackend, KindEnvironment};
pub use options::{KindOptions, Timeouts};

/// Field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "cnpg-ext-harness";

/// The repository's `kind-config/` directory (data files shipped with the harness).
pub fn kind_config_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../kind-config")
}
