//! kind + CloudNativePG backend for the conformance harness.
//!
//! What callers use: [`prepare`] (connect, preflight, operator) → [`KindEnvironment`]
//! ([`KindEnvironment::load_images`] once per run, [`KindEnvironment::backend`] per
//! scenario) → [`KindBackend`] (the model's `Backend`); [`KindOptions`] / [`Timeouts`];
//! [`render::render_dry_run`] (`--dry-run`); [`cli`] (`kind up|down|status` and the
//! `--registry` flags).
//!
//! Inside, from the bottom up (a module imports only modules listed before it):
//!
//! * `options`, `errors`, `config`, `versions`, `inspect`: the run's options; kube errors
//!   mapped to the model's `BackendError` (and the 403s that clear by themselves); kind
//!   cluster configs and node image pins; the pinned CloudNativePG release manifests; what
//!   an instance pod's spec and inspection output say.
//! * `wait`: polled conditions with deadlines, the Database wait, 403 retries.
//! * `apply`: namespaced Cluster/Database documents, server-side apply, the restart
//!   annotation, YAML output.
//! * `exec`: commands in pods. `postmaster`: what each postmaster says about itself
//!   (start, configuration load, settings), through `psql` in the pod.
//! * `pods`: what an instance pod says (role, readiness, image volumes, container).
//!   `observer`: the pure rollout observer and what a wait expects. `watch`: the observer
//!   fed from watches and postmaster readings. `sql`: SQL through a port-forward.
//! * `operator`: order and server-side apply of the release manifest, readiness, the
//!   installed version. `preflight`: what the cluster must offer.
//! * `node_mirror`: `--registry`, a local registry container as the nodes' containerd mirror
//!   (not the registry client: that is the `cnpg-ext-registry` crate). `registry_hosting`:
//!   existing-cluster mode, the mirror a cluster advertises (KEP-1755 ConfigMap + annotation),
//!   images pushed there.
//! * `record`: `CNPG_EXT_KIND_RECORD=<dir>`, every GET and watch response written as JSON
//!   frames (what the fake API's recorded replays read).
//! * `diagnostics`: the failure bundle. `podlog`: an instance's server log (the pod log
//!   API, the instance manager's JSON records as PostgreSQL lines) and settings as evidence.
//!   `render`: `--dry-run`.
//! * `backend`: [`KindBackend`]. `environment`: [`KindEnvironment`], [`prepare`]. `cli`: the
//!   subcommands.
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
    environment,
    errors,
    exec,
    inspect,
    node_mirror,
    observer,
    operator,
    options,
    pods,
    podlog,
    postmaster,
    preflight,
    record,
    registry_hosting,
    sql,
    versions,
    wait,
    watch,
);

pub mod cli;
pub mod render;
#[cfg(feature = "testing")]
pub mod testing;

pub use backend::KindBackend;
pub use environment::{prepare, KindEnvironment};
pub use options::{KindOptions, Timeouts};

/// Field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "cnpg-ext-harness";

/// The repository's `kind-config/` directory (data files shipped with the harness).
pub fn kind_config_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../kind-config")
}
