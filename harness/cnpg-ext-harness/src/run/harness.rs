//! The library entry point for other crates' `cargo test`: run scenario directories on a
//! backend and get the report back.
//!
//! ```no_run
//! # async fn demo() -> Result<(), cnpg_ext_harness::error::HarnessError> {
//! let report = cnpg_ext_harness::Harness::local().jobs(2).run(["tests/scenarios"]).await?;
//! assert!(report.passed(), "{}", report.failures());
//! # Ok(()) }
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use cnpg_ext_backend::Backend;
use cnpg_ext_model::CnpgVersion;
use cnpg_ext_pg::OperandFlavor;

use crate::error::HarnessError;
use crate::plumbing::engine::EngineOptions;
use crate::reports::run::RunReport;
use crate::reports::run::Status;
use crate::run::app::{self, BackendKind, BackendWrap, RunOptions};

/// A configured run; `run` executes it. Defaults: every CPU, the `minimal` operand, the
/// modelled CNPG release, PostgreSQL from `PG_CONFIG`/`PATH`/the pinned wheel, no report files.
#[derive(Debug, Clone)]
pub struct Harness {
    opts: RunOptions,
}

impl Harness {
    /// Real PostgreSQL processes on this machine.
    pub fn local() -> Harness {
        Harness { opts: RunOptions { backend: BackendKind::Local, ..RunOptions::default() } }
    }

    /// Containers of podman or docker ≥ 28 with image mounts; engine settings from the
    /// environment unless [`Harness::engine`] says otherwise.
    pub fn container() -> Harness {
        Harness {
            opts: RunOptions {
                backend: BackendKind::Container,
                engine: EngineOptions::from_env(),
                ..RunOptions::default()
            },
        }
    }

    /// The real CloudNativePG operator on a Kubernetes cluster: a kind cluster the harness
    /// loads images into (`options.kind_cluster`), or any existing cluster whose nodes can
    /// pull the images (`kind_cluster: None`, the kubeconfig's context).
    #[cfg(feature = "kind")]
    pub fn kind(options: cnpg_ext_kind::KindOptions) -> Harness {
        Harness { opts: RunOptions { backend: BackendKind::Kind, kind: options, ..RunOptions::default() } }
    }

    pub fn jobs(mut self, n: usize) -> Harness {
        self.opts.jobs = n.max(1);
        self
    }

    /// Also write report.json, junit.xml and summary.md there.
    pub fn report_dir(mut self, dir: impl Into<PathBuf>) -> Harness {
        self.opts.report_dir = Some(dir.into());
        self
    }

    pub fn operand(mut self, flavor: OperandFlavor) -> Harness {
        self.opts.operand = flavor;
        self
    }

    pub fn cnpg(mut self, version: CnpgVersion) -> Harness {
        self.opts.cnpg = version;
        self
    }

    pub fn pg_config(mut self, path: impl Into<PathBuf>) -> Harness {
        self.opts.pg_config = Some(path.into());
        self
    }

    /// Parent of the run's work directory.
    pub fn workdir(mut self, dir: impl Into<PathBuf>) -> Harness {
        self.opts.workdir = Some(dir.into());
        self
    }

    /// Pull from `registry` (`HOST` or `HOST:PORT`) over plain HTTP, for this run only.
    pub fn insecure_registry(mut self, registry: impl Into<String>) -> Harness {
        self.opts.registries.insecure.push(registry.into());
        self
    }

    pub fn keep(mut self, keep: bool) -> Harness {
        self.opts.keep = keep;
        self
    }

    pub fn engine(mut self, engine: EngineOptions) -> Harness {
        self.opts.engine = engine;
        self
    }

    /// Retries a scenario that failed on infrastructure (image-pull, container-create,
    /// timeout) up to `n` more times; a pass after a retry is `flaky`.
    pub fn retries(mut self, n: usize) -> Harness {
        self.opts.retries = n;
        self
    }

    /// Wraps each scenario's backend, e.g. to inject faults in the harness's own tests.
    pub fn wrap_backend(
        mut self,
        f: impl Fn(&str, Box<dyn Backend>) -> Box<dyn Backend> + Send + Sync + 'static,
    ) -> Harness {
        self.opts.wrap = Some(BackendWrap(Arc::new(f)));
        self
    }

    /// The options as `app::run` takes them.
    pub fn options(&self) -> &RunOptions {
        &self.opts
    }

    /// Runs every scenario under `paths` (directories or `scenario.yaml` files). `Err` is
    /// invalid input or an unusable environment; failed scenarios are in the report.
    pub async fn run<P: Into<PathBuf>>(
        mut self,
        paths: impl IntoIterator<Item = P>,
    ) -> Result<RunReport, HarnessError> {
        self.opts.paths = paths.into_iter().map(Into::into).collect();
        Ok(app::run(self.opts).await?.report)
    }
}

impl RunReport {
    /// Every scenario passed.
    pub fn passed(&self) -> bool {
        !self.scenarios.is_empty() && self.scenarios.iter().all(|s| s.status == Status::Passed)
    }

    /// The failure summaries of every failed scenario, one block each.
    pub fn failures(&self) -> String {
        self.scenarios
            .iter()
            .filter(|s| s.status != Status::Passed)
            .map(|s| format!("FAIL {}\n{}", s.id, s.failure_summary().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}
