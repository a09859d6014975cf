//! What a run is asked to do: the backend, the paths, the per-run options (engine, kind,
//! registries, retries, image substitutions) and a wrapper tests put around each backend.

use std::path::PathBuf;
use std::sync::Arc;

use cnpg_ext_backend::Backend;
use cnpg_ext_model::CnpgVersion;
use cnpg_ext_pg::OperandFlavor;

use crate::plumbing::engine::EngineOptions;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    Local,
    Container,
    Kind,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Local => "local",
            BackendKind::Container => "container",
            BackendKind::Kind => "kind",
        }
    }
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub paths: Vec<PathBuf>,
    pub backend: BackendKind,
    pub jobs: usize,
    pub report_dir: Option<PathBuf>,
    pub keep: bool,
    pub cnpg: CnpgVersion,
    pub pg_config: Option<PathBuf>,
    pub run_as: Option<String>,
    pub workdir: Option<PathBuf>,
    pub progress: bool,
    pub command: Vec<String>,
    pub engine: EngineOptions,
    #[cfg(feature = "kind")]
    pub kind: cnpg_ext_kind::KindOptions,
    /// The CNPG operand image the stand-ins imitate (local, container).
    pub operand: OperandFlavor,
    /// Wraps every scenario's backend (tests: a backend that tampers with what it runs).
    pub wrap: Option<BackendWrap>,
    /// How images named by reference are pulled (`--insecure-registry`).
    pub registries: crate::images::pull::Registries,
    /// Attempts after the first for a scenario that failed on infrastructure (`image-pull`,
    /// `container-create`, `timeout`); a pass after a retry is `flaky`.
    pub retries: usize,
    /// Every instance's server log is copied here (`<scenario>/<file>`) before teardown
    /// (`--bundle`).
    pub logs_dir: Option<PathBuf>,
    /// `--image REF=SOURCE`: the image mounted under REF comes from SOURCE (a registry
    /// reference, `fixture:DIR`, `oci:PATH`).
    pub image_sources: std::collections::BTreeMap<String, String>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            paths: Vec::new(),
            backend: BackendKind::Local,
            jobs: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            report_dir: None,
            keep: false,
            cnpg: CnpgVersion::DEFAULT,
            pg_config: None,
            run_as: None,
            workdir: None,
            progress: false,
            command: vec!["cnpg-ext-harness (library)".into()],
            engine: EngineOptions::default(),
            #[cfg(feature = "kind")]
            kind: Default::default(),
            operand: OperandFlavor::default(),
            wrap: None,
            registries: Default::default(),
            retries: 0,
            logs_dir: None,
            image_sources: Default::default(),
        }
    }
}

/// Wraps the backend of a scenario, given the scenario id (e.g. to tamper with it in tests).
pub type WrapFn = dyn Fn(&str, Box<dyn Backend>) -> Box<dyn Backend> + Send + Sync;

/// A function that wraps the backend of each scenario (given the scenario id).
#[derive(Clone)]
pub struct BackendWrap(pub Arc<WrapFn>);

impl std::fmt::Debug for BackendWrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BackendWrap(..)")
    }
}
