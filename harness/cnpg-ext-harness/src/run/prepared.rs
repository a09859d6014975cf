//! What a run prepares once for its backend, before any scenario: the images (pulled,
//! unpacked, checked), then the local stand-in's operand, the container engine (images
//! loaded, the run's containers watched by the supervisor) or the kind cluster (operator,
//! images on the nodes). `Prepared` then makes one backend per scenario.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cnpg_ext_backend::Backend;
use cnpg_ext_model::{CnpgVersion, Scenario};
use cnpg_ext_pg::PgInstall;

use super::options::{BackendKind, RunOptions};
#[cfg(feature = "container")]
use crate::backends::container::{ContainerBackend, ContainerEnv};
use crate::backends::local::{LocalBackend, LocalEnv};
use crate::error::HarnessError;
use crate::images::store::ImageStore;
use crate::plumbing::progress::Progress;
use crate::plumbing::run_as::RunAs;

/// What a run prepared once for its backend; makes one backend per scenario.
pub(super) enum Prepared {
    Local(Arc<LocalEnv>),
    #[cfg(feature = "container")]
    Container(Arc<ContainerEnv>),
    #[cfg(feature = "kind")]
    Kind {
        env: Option<Arc<cnpg_ext_kind::KindEnvironment>>,
        archives: Vec<(String, PathBuf)>,
    },
}

impl Prepared {
    pub(super) fn backend(
        &self,
        store: &Arc<ImageStore>,
        cnpg: CnpgVersion,
        dir: PathBuf,
        scenario: &Scenario,
    ) -> Result<Box<dyn Backend>, String> {
        Ok(match self {
            Prepared::Local(env) => Box::new(LocalBackend::local(env.clone(), store.clone(), cnpg, dir)),
            #[cfg(feature = "container")]
            // A retry (`<id>.retryN`) gets containers, volumes and directories of its own.
            Prepared::Container(env) => {
                let attempt = dir.file_name().map(|n| n.to_string_lossy().into_owned());
                Box::new(ContainerBackend::container(env.clone(), cnpg, attempt.as_deref().unwrap_or(&scenario.id)))
            }
            #[cfg(feature = "kind")]
            Prepared::Kind { env, .. } => {
                let env = env.as_ref().ok_or("the kind environment was not prepared")?;
                env.check_scenario(scenario).map_err(|e| e.to_string())?;
                Box::new(env.backend(scenario))
            }
        })
    }

    /// The engine's id of the image mounted under `reference` (container backend).
    pub(super) fn engine_image_id(&self, reference: &str) -> Option<String> {
        match self {
            #[cfg(feature = "container")]
            Prepared::Container(env) => env.engine_image_id(reference),
            _ => None,
        }
    }

    /// The container runtime the instances ran on, as the environment reported it when
    /// probed: the engine and its version, or the kind nodes' runtimes.
    pub(super) fn runtime(&self) -> Option<String> {
        match self {
            #[cfg(feature = "container")]
            Prepared::Container(env) => Some(env.runtime_description()),
            #[cfg(feature = "kind")]
            Prepared::Kind { env: Some(env), .. } => {
                let mut runtimes: Vec<&str> = env.preflight.nodes.iter().map(|(_, r)| r.as_str()).collect();
                runtimes.sort_unstable();
                runtimes.dedup();
                Some(runtimes.join(", ")).filter(|r| !r.is_empty())
            }
            _ => None,
        }
    }

    /// The CloudNativePG release the backend modelled: on kind, the installed operator's
    /// (existing-cluster mode adopts it), else the run's.
    pub(super) fn cnpg_modelled(&self, asked: CnpgVersion) -> CnpgVersion {
        match self {
            #[cfg(feature = "kind")]
            Prepared::Kind { env: Some(env), .. } => env.operator_version(),
            _ => asked,
        }
    }

    /// The API server's version (kind), as it answered.
    pub(super) fn kubernetes(&self) -> Option<String> {
        match self {
            #[cfg(feature = "kind")]
            Prepared::Kind { env: Some(env), .. } => Some(env.preflight.server_version.clone()),
            _ => None,
        }
    }

    pub(super) fn finish(&self, keep: bool) {
        #[cfg(feature = "container")]
        if let Prepared::Container(env) = self {
            env.finish(keep);
        }
        let _ = keep;
    }
}

/// The images and the backend's environment, prepared once for the run.
pub(super) async fn prepare(
    opts: &RunOptions,
    scenarios: &[Scenario],
    pg: &PgInstall,
    without: &cnpg_ext_pg::Exclusions,
    workdir: &Path,
    run_as: RunAs,
    progress: &Progress,
) -> Result<(ImageStore, Prepared), HarnessError> {
    let specs: Vec<_> = scenarios.iter().flat_map(|s| s.images.iter().cloned()).collect();
    let (pg, dir, without) = (pg.clone(), workdir.to_path_buf(), without.clone());
    let (backend, engine) = (opts.backend, opts.engine.clone());
    let (sources, registries) = (opts.image_sources.clone(), opts.registries.clone());
    let (store, prepared) = tokio::task::spawn_blocking(move || -> Result<(ImageStore, Prepared), HarnessError> {
        let specs = crate::run::substitute::apply(specs, &sources, &registries)?;
        let store = ImageStore::prepare(&specs, &pg, &dir.join("images"), &registries)?;
        let prepared = match backend {
            BackendKind::Local => Prepared::Local(Arc::new(
                LocalEnv::prepare(&pg, &without, &dir, run_as).map_err(HarnessError::Environment)?,
            )),
            #[cfg(not(feature = "kind"))]
            BackendKind::Kind => return Err(not_built("kind", "kind")),
            #[cfg(feature = "kind")]
            BackendKind::Kind => Prepared::Kind { env: None, archives: kind_archives(&store, &dir)? },
            #[cfg(not(feature = "container"))]
            BackendKind::Container => return Err(not_built("container", "container")),
            #[cfg(feature = "container")]
            BackendKind::Container => {
                let run_id = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                watch_containers(&dir, &engine)?;
                Prepared::Container(Arc::new(ContainerEnv::prepare(&pg, &store, &without, &dir, &run_id, &engine)?))
            }
        };
        Ok((store, prepared))
    })
    .await
    .expect("prepare task")?;
    // Shown, recorded in report.json, never fatal: a scenario may use a broken image on purpose.
    for img in store.all() {
        for f in img.compat.iter().filter(|f| f.severity != cnpg_ext_images::lint::Severity::Info) {
            let path = f.path.as_ref().map(|p| format!("{p}: ")).unwrap_or_default();
            progress.line(&format!("image {}: {:?} {}: {path}{}", img.reference, f.severity, f.code, f.message));
        }
    }
    let prepared = match prepared {
        #[cfg(feature = "kind")]
        Prepared::Kind { archives, .. } => connect_kind(opts, archives).await?,
        other => other,
    };
    Ok((store, prepared))
}

/// Docker archives of every image for `kind load image-archive`; the cluster is contacted
/// later ([`connect_kind`]).
#[cfg(feature = "kind")]
fn kind_archives(store: &ImageStore, dir: &Path) -> Result<Vec<(String, PathBuf)>, HarnessError> {
    let mut archives = Vec::new();
    for (n, img) in store.all().enumerate() {
        let tar = dir.join("images").join(format!("{n}.docker.tar"));
        cnpg_ext_images::write_docker_archive(&img.source, &img.reference, &tar)
            .map_err(|e| HarnessError::Input(format!("image `{}`: {e}", img.reference)))?;
        archives.push((img.reference.clone(), tar));
    }
    Ok(archives)
}

/// The cluster checked and the operator installed (or found), every archive into the nodes
/// once, before any scenario starts.
#[cfg(feature = "kind")]
async fn connect_kind(opts: &RunOptions, archives: Vec<(String, PathBuf)>) -> Result<Prepared, HarnessError> {
    let mut kopts = opts.kind.clone();
    kopts.cnpg_version = opts.cnpg;
    kopts.keep = opts.keep;
    if let Some(dir) = &opts.report_dir {
        kopts.report_dir = dir.clone();
    }
    let env = cnpg_ext_kind::prepare(&kopts).await.map_err(|e| match e {
        cnpg_ext_model::backend::BackendError::Unusable(m) => HarnessError::Environment(m),
        other => HarnessError::Environment(other.to_string()),
    })?;
    env.load_images(&archives).await.map_err(|e| HarnessError::Environment(e.to_string()))?;
    Ok(Prepared::Kind { env: Some(Arc::new(env)), archives })
}

/// Tells the supervisor (and the owner record) which engine holds this run's containers.
#[cfg(feature = "container")]
fn watch_containers(
    workdir: &std::path::Path,
    engine: &crate::backends::container::EngineOptions,
) -> Result<(), HarnessError> {
    let o = engine.resolved();
    let global = crate::backends::container::split_flags(o.engine_flags.as_deref().unwrap_or(""))
        .map_err(|e| HarnessError::Input(format!("{}: {e}", crate::plumbing::engine::ENV_ENGINE_FLAGS)))?;
    let on_path =
        |p: &str| std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).any(|d| d.join(p).is_file());
    let program = o.engine.unwrap_or_else(|| {
        if on_path("podman") || !on_path("docker") {
            "podman".into()
        } else {
            "docker".into()
        }
    });
    let target = crate::plumbing::supervisor::EngineTarget {
        program: program.into(),
        global,
        run_id: crate::plumbing::supervisor::run_id_of(workdir),
    };
    // Containers and volumes labelled with a dead owner (beside the run's): in the background.
    let (p, g) = (target.program.clone(), target.global.clone());
    std::thread::spawn(move || report_swept(&crate::plumbing::supervisor::sweep_stale_engine(&p, &g)));
    crate::plumbing::supervisor::watch_engine(workdir, target)
        .map_err(|e| HarnessError::Environment(format!("{}: {e}", workdir.display())))
}

pub(super) fn report_swept(s: &crate::plumbing::supervisor::Swept) {
    for d in &s.dirs {
        eprintln!("removed {} (left by a run whose harness died)", d.display());
    }
    if s.containers + s.volumes > 0 {
        eprintln!("removed {} container(s) and {} volume(s) left by runs whose harness died", s.containers, s.volumes);
    }
}

/// `--backend <backend>` asked of a build without it (cargo feature `feature`).
#[cfg(not(all(feature = "kind", feature = "container")))]
pub(super) fn not_built(backend: &str, feature: &str) -> HarnessError {
    HarnessError::Environment(format!(
        "this cnpg-ext-harness was built without the {backend} backend (cargo feature `{feature}`, on by default): \
         build it with the default features, e.g. `cargo run --release -p cnpg-ext-harness -- run …`"
    ))
}
