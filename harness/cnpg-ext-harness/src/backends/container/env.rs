//! What every container cluster of a run shares (`ContainerEnv`): the engine and its API
//! service, the operand image, the loaded extension images, and their removal at the end.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cnpg_ext_pg::{Exclusions, PgInstall};

use super::api::{self, ApiService};
use super::argv::{self, LABEL_RUN};
use super::engine::{self, strings, Engine};
use super::engine::{split_flags, ENV_ENGINE_FLAGS, ENV_RUN_FLAGS};
use super::hostflags;
use super::images::{engine_reference, load_images, LoadedImage};
use super::operand;
use super::template::{extract_template, probe};
use super::EngineOptions;
use crate::error::HarnessError;
use crate::images::store::ImageStore;

/// What every container cluster of a run shares: the engine, the operand image, the loaded
/// extension images. Removes what it created when finished.
pub(crate) struct ContainerEnv {
    pub(super) engine: Engine,
    pub(super) run_id: String,
    pub(super) operand: operand::Operand,
    /// Host directories of the instances (sockets, configuration).
    pub(super) root: PathBuf,
    pub(super) loaded: Arc<Mutex<Vec<LoadedImage>>>,
    /// Host copy of the image's data directory template (`<dir>/pgdata`, owned by uid 26),
    /// made when running as root: instance volumes are then bind-backed by a directory of the
    /// work dir, filled from it (fast), instead of filled by the engine's copy-up (slow where
    /// creating files in the engine's storage is slow).
    pub(super) template: Option<PathBuf>,
    pub(super) hook: Mutex<Option<u64>>,
    pub(super) finished: std::sync::atomic::AtomicBool,
    /// The podman API service of the run (docker: none), stopped by `finish`.
    pub(super) service: Arc<Mutex<Option<api::ApiService>>>,
    /// The run flags' host settings, for instance containers made through the API.
    pub(super) host: hostflags::HostFlags,
}

impl ContainerEnv {
    pub(crate) fn prepare(
        pg: &PgInstall,
        store: &ImageStore,
        without: &Exclusions,
        workdir: &Path,
        run_id: &str,
        opts: &EngineOptions,
    ) -> Result<ContainerEnv, HarnessError> {
        let opts = opts.resolved();
        let (engine, host) = engine_of(&opts)?;
        tracing::info!(engine = engine.name(), version = %engine.version, "container engine");
        let run_id = argv::sanitize(run_id);
        let root = workdir.join("c");
        std::fs::create_dir_all(&root).map_err(|e| HarnessError::Environment(format!("{}: {e}", root.display())))?;

        let loaded: Arc<Mutex<Vec<LoadedImage>>> = Arc::default();
        let service: Arc<Mutex<Option<api::ApiService>>> = Arc::default();
        // From here on, Ctrl-C removes whatever the run created.
        let hook = {
            let (engine, run_id, loaded, service) = (engine.clone(), run_id.clone(), loaded.clone(), service.clone());
            crate::plumbing::procs::register_cleanup(Box::new(move |keep| {
                engine::set_stopping();
                engine::wait_idle(Duration::from_secs(15));
                if !keep {
                    let images = loaded.lock().map(|l| l.clone()).unwrap_or_default();
                    sweep(&engine, &run_id, &images);
                }
                if let Some(s) = service.lock().ok().and_then(|mut s| s.take()) {
                    s.stop();
                }
            }))
        };
        let env_unusable = |what: &str, e: String| {
            HarnessError::Environment(format!(
                "{} {} cannot {what}: {e}\n(hint: {})",
                engine.name(),
                engine.version,
                engine::ENGINE_HINT
            ))
        };
        let result = (|| -> Result<(operand::Operand, Option<PathBuf>), HarnessError> {
            let op = operand::ensure(
                &engine,
                pg,
                without,
                &root,
                &run_id,
                opts.pg_image.as_deref(),
                opts.pg_bindir.as_deref(),
            )
            .map_err(|e| env_unusable("provide the PostgreSQL image", e))?;
            tracing::info!(image = %op.image, built = op.built, "PostgreSQL operand image");
            // Loading the extension images, the runtime probe and the template copy overlap.
            let (loads, probed, template, api) = std::thread::scope(|s| {
                let loads = s.spawn(|| load_images(&engine, &run_id, store, &root, &loaded));
                // This thread ends at once; the service is forked by a thread that lives as
                // long as it does (its parent-death signal is tied to that thread).
                let api = s.spawn(|| api::ApiService::start(&engine));
                let template = s.spawn(|| {
                    if !nix::unistd::Uid::effective().is_root() {
                        return None;
                    }
                    let dir = root.join("template");
                    match extract_template(&engine, &run_id, &op, &dir) {
                        Ok(()) => Some(dir),
                        Err(e) => {
                            tracing::info!(
                                "no host copy of the data directory template (volumes are filled by the engine): {e}"
                            );
                            None
                        }
                    }
                });
                let probed = probe(&engine, &run_id, &op);
                let api = api.join().expect("API service thread");
                (loads.join().expect("image loading thread"), probed, template.join().expect("template thread"), api)
            });
            match api {
                Ok(svc) => *service.lock().unwrap() = svc,
                Err(e) => return Err(env_unusable("serve the Engine API", e)),
            }
            probed.map_err(|e| env_unusable("run a container with an image mount", e))?;
            loads?;
            Ok((op, template))
        })();
        let mut env = ContainerEnv {
            engine,
            run_id,
            operand: operand::Operand { image: String::new(), bindir: String::new(), built: false },
            root,
            loaded,
            template: None,
            hook: Mutex::new(Some(hook)),
            finished: false.into(),
            service,
            host,
        };
        match result {
            Ok((op, template)) => {
                env.operand = op;
                env.template = template;
                Ok(env)
            }
            Err(e) => {
                env.finish(false);
                Err(e)
            }
        }
    }

    /// The engine the instances run on and its version, as its probe answered.
    pub(crate) fn runtime_description(&self) -> String {
        format!("{} {}", self.engine.name(), self.engine.version)
    }

    /// The engine's id (`sha256:…`) of the image loaded or pulled under `reference`, checked
    /// against the image the harness verified before any container started.
    pub(crate) fn engine_image_id(&self, reference: &str) -> Option<String> {
        let reference = engine_reference(&self.run_id, reference);
        let loaded = self.loaded.lock().ok()?;
        loaded
            .iter()
            .find(|l| l.reference == reference)
            .and_then(|l| l.loaded.as_ref())
            .map(|id| format!("sha256:{id}"))
    }

    /// Removes containers, volumes and loaded images of the run, unless `keep`.
    pub(crate) fn finish(&self, keep: bool) {
        if self.finished.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        if let Some(id) = self.hook.lock().unwrap().take() {
            crate::plumbing::procs::unregister_cleanup(id);
        }
        let images = self.loaded.lock().map(|l| l.clone()).unwrap_or_default();
        if keep {
            let e = &self.engine;
            tracing::warn!(
                "kept the containers, volumes and images of run {id}; remove them with:\n  {n} rm -f $({n} ps -aq --filter label={LABEL_RUN}={id}); {n} volume rm $({n} volume ls -q --filter label={LABEL_RUN}={id}); {n} rmi {refs}",
                id = self.run_id,
                n = e.name(),
                refs = images.iter().filter(|i| i.previous.is_none()).map(|i| i.reference.as_str()).collect::<Vec<_>>().join(" ")
            );
        } else {
            sweep(&self.engine, &self.run_id, &images);
        }
        if let Some(s) = self.service.lock().ok().and_then(|mut s| s.take()) {
            s.stop();
        }
    }
}

impl Drop for ContainerEnv {
    fn drop(&mut self) {
        // A run that ended early (error before `finish`) still cleans up.
        self.finish(false);
    }
}

/// The engine of `opts` (already resolved) and the instance containers' host settings from
/// its run flags: exit 2 for flags that cannot be read, 3 when no engine is usable.
pub(super) fn engine_of(opts: &EngineOptions) -> Result<(Engine, hostflags::HostFlags), HarnessError> {
    let flags = |what: &str, v: &Option<String>| -> Result<Vec<String>, HarnessError> {
        v.as_deref()
            .map(split_flags)
            .transpose()
            .map(Option::unwrap_or_default)
            .map_err(|e| HarnessError::Input(format!("{what}: {e}")))
    };
    let global = flags(ENV_ENGINE_FLAGS, &opts.engine_flags)?;
    let run_flags = flags(ENV_RUN_FLAGS, &opts.run_flags)?;
    let input = |e: String| HarnessError::Input(format!("{ENV_RUN_FLAGS} / --engine-run-flags: {e}"));
    let host = hostflags::HostFlags::parse(&run_flags).map_err(input)?;
    let engine = engine::detect(opts.engine.as_deref(), global, run_flags).map_err(HarnessError::Environment)?;
    let host = host.for_engine(engine.kind).map_err(input)?;
    Ok((engine, host))
}

/// Leases the Engine API service exactly as a container run does — podman: `system service`
/// on `cnpg-ext-api-<pid>/podman.sock`, shared by the process's runs and tied to this process
/// (see [`ApiService`]); docker: `None` once its API answers — with this process's
/// `DOCKER_HOST` pointed at it. For tests of its lifetime.
pub fn start_api_service(opts: &EngineOptions) -> Result<Option<ApiService>, HarnessError> {
    let (engine, _) = engine_of(&opts.resolved())?;
    ApiService::start(&engine).map_err(HarnessError::Environment)
}

/// Removes every container and volume of the run, and the images it loaded.
pub(super) fn sweep(engine: &Engine, run_id: &str, images: &[LoadedImage]) {
    std::thread::scope(|s| {
        s.spawn(|| {
            let run = |args: &[&str]| engine.run_quiet(&strings(args));
            crate::plumbing::engine::remove_run_objects(&run, engine.kind, run_id, SWEEP_BUDGET);
        });
        s.spawn(|| remove_images(engine, images));
    });
    crate::plumbing::supervisor::kill_orphaned_monitors(run_id);
}

/// How long a run's own cleanup keeps asking the engine for what is left.
pub(super) const SWEEP_BUDGET: std::time::Duration = std::time::Duration::from_secs(20);

pub(super) fn remove_images(engine: &Engine, images: &[LoadedImage]) {
    crate::plumbing::supervisor::restore_images(images, |args| engine.run_quiet(args).is_some());
}
