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
mod hostflags;
mod operand;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cnpg_ext_model::backend::{BackendError, InstanceObservation, MountObservation, Role};
use cnpg_ext_model::{ClusterPlan, CnpgVersion};
use cnpg_ext_pg::{Exclusions, PgInstall};

pub use api::ApiService;
pub use argv::LABEL_RUN;
pub(crate) use argv::LABEL_SCENARIO;
pub use engine::split_flags;
pub(crate) use engine::{Engine, EngineKind, ENV_ENGINE, ENV_ENGINE_FLAGS, ENV_PG_BINDIR, ENV_PG_IMAGE, ENV_RUN_FLAGS};

/// Whether an engine the backend accepts is installed (podman >= 4, or docker >= 28 with a
/// daemon), with the flags of `opts`. Whether it can run containers is probed at run time.
pub fn engine_available(opts: &EngineOptions) -> bool {
    let o = opts.resolved();
    let flags = |f: &Option<String>| split_flags(f.as_deref().unwrap_or("")).unwrap_or_default();
    engine::detect(o.engine.as_deref(), flags(&o.engine_flags), flags(&o.run_flags)).is_ok()
}

use argv::{ImageMount, InstanceRun, LABEL_INSTANCE, MOUNT_ROOT, PG_UID};
use engine::strings;

use crate::backends::standin::{InstanceRuntime, Slot, StandIn};
use crate::error::HarnessError;
use crate::plumbing::sql::quote_literal;
use crate::images::store::ImageStore;

/// How long a stopped instance gets after SIGINT (fast shutdown) before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(20);

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

/// An extension image this run loaded into the engine (also known to the run's supervisor).
/// `loaded`: the id (bare hex) the engine holds under the reference once loaded and checked.
type LoadedImage = crate::plumbing::supervisor::EngineImage;

/// What every container cluster of a run shares: the engine, the operand image, the loaded
/// extension images. Removes what it created when finished.
pub(crate) struct ContainerEnv {
    engine: Engine,
    run_id: String,
    operand: operand::Operand,
    /// Host directories of the instances (sockets, configuration).
    root: PathBuf,
    loaded: Arc<Mutex<Vec<LoadedImage>>>,
    /// Host copy of the image's data directory template (`<dir>/pgdata`, owned by uid 26),
    /// made when running as root: instance volumes are then bind-backed by a directory of the
    /// work dir, filled from it (fast), instead of filled by the engine's copy-up (slow where
    /// creating files in the engine's storage is slow).
    template: Option<PathBuf>,
    hook: Mutex<Option<u64>>,
    finished: std::sync::atomic::AtomicBool,
    /// The podman API service of the run (docker: none), stopped by `finish`.
    service: Arc<Mutex<Option<api::ApiService>>>,
    /// The run flags' host settings, for instance containers made through the API.
    host: hostflags::HostFlags,
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
fn engine_of(opts: &EngineOptions) -> Result<(Engine, hostflags::HostFlags), HarnessError> {
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
fn sweep(engine: &Engine, run_id: &str, images: &[LoadedImage]) {
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
const SWEEP_BUDGET: std::time::Duration = std::time::Duration::from_secs(20);

fn remove_images(engine: &Engine, images: &[LoadedImage]) {
    crate::plumbing::supervisor::restore_images(images, |args| engine.run_quiet(args).is_some());
}

/// Loads every image of the store from an archive the harness writes (a pulled `@sha256:`
/// reference: pulled by the engine from the same registry), several at once.
fn load_images(
    engine: &Engine,
    run_id: &str,
    store: &ImageStore,
    root: &Path,
    loaded: &Mutex<Vec<LoadedImage>>,
) -> Result<(), HarnessError> {
    let dir = root.join("archives");
    std::fs::create_dir_all(&dir).map_err(|e| HarnessError::Environment(format!("{}: {e}", dir.display())))?;
    let images: Vec<_> = store.all().collect();
    let present = engine.image_ids();
    let results: Vec<Result<(), HarnessError>> = std::thread::scope(|s| {
        let handles: Vec<_> = images
            .iter()
            .enumerate()
            .map(|(n, img)| {
                let dir = &dir;
                let reference = engine_reference(run_id, &img.reference);
                let previous = if reference.contains('@') {
                    // The listing has tags only.
                    held_by_digest(engine, &reference)
                } else {
                    match &present {
                        Some(map) => map.get(&normalize_reference(&reference)).cloned(),
                        None => engine.image_id(&reference),
                    }
                };
                s.spawn(move || load_one(engine, run_id, img, previous, &dir.join(format!("{n}.tar")), loaded))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("image load thread")).collect()
    });
    results.into_iter().collect()
}

/// The name under which the engine holds the image a scenario calls `reference` for this run.
///
/// An image loaded from an archive gets a name private to the run
/// (`localhost/cnpg-ext-run/<pid>-<run>:<hash of the reference>`): runs sharing an engine
/// (two tests of one process, a matrix's cells, two CI jobs on one host) never see, replace or
/// remove each other's images, and a user's image under the scenario's reference is never
/// touched. The mounts name it; what is mounted is checked to be the verified image either
/// way. A `…@sha256:` pin pulled by the engine keeps its own name: only a pull records it.
pub(crate) fn engine_reference(run_id: &str, reference: &str) -> String {
    engine_reference_of(std::process::id(), run_id, reference)
}

/// [`engine_reference`] as the harness process `pid` names it.
pub fn engine_reference_of(pid: u32, run_id: &str, reference: &str) -> String {
    use sha2::Digest;
    if reference.contains('@') {
        return reference.to_string();
    }
    let hash = hex::encode(sha2::Sha256::digest(reference.as_bytes()));
    format!("localhost/cnpg-ext-run/{pid}-{}:{}", run_id.to_ascii_lowercase(), &hash[..16])
}

fn load_one(
    engine: &Engine,
    run_id: &str,
    img: &crate::images::store::StoredImage,
    previous: Option<String>,
    archive: &Path,
    loaded: &Mutex<Vec<LoadedImage>>,
) -> Result<(), HarnessError> {
    // A pulled `…@sha256:` reference is named by its digest, which only a pull from the
    // registry records in the engine; anything else is loaded from an archive of its layout.
    let pull = img.origin == cnpg_ext_model::scenario::ImageOrigin::Pull && img.reference.contains('@');
    let reference = engine_reference(run_id, &img.reference);
    if !pull {
        cnpg_ext_images::write_docker_archive(&img.source, &reference, archive)
            .map_err(|e| HarnessError::Input(format!("image `{}` ({}): {e}", img.reference, img.source.display())))?;
    }
    // Recorded (here and with the supervisor) before loading, so that an interrupted load is
    // cleaned up too, even if the harness dies.
    let mut record = LoadedImage {
        run_id: run_id.to_string(),
        reference: reference.clone(),
        previous: previous.clone(),
        loaded: None,
    };
    crate::plumbing::supervisor::watch_image(&record);
    loaded.lock().unwrap().push(record.clone());
    if pull {
        let mut args = strings(&["pull", "-q"]);
        if engine.kind == EngineKind::Podman && img.insecure_registry {
            args.push("--tls-verify=false".into());
        }
        args.push(img.reference.clone());
        engine.run_sync(&args).map_err(|e| {
            HarnessError::Environment(format!("cannot pull image `{}` into {}: {e}", img.reference, engine.name()))
        })?;
    } else {
        engine.run_sync(&strings(&["load", "-q", "-i", &archive.display().to_string()])).map_err(|e| {
            HarnessError::Environment(format!("cannot load image `{}` into {}: {e}", img.reference, engine.name()))
        })?;
    }
    // Proof of origin: what the engine now holds under the reference — and so what every
    // image mount of it shows — is the image the harness verified, unpacked and judges.
    let (id, engine_manifest) = engine_image(engine, &reference).map_err(|e| {
        HarnessError::Environment(format!(
            "image `{}` is not in {} after loading it: {e}",
            img.reference,
            engine.name()
        ))
    })?;
    let verified = (img.config_digest.as_str(), img.manifest_digest.as_str());
    if let Err(e) = same_image(engine.kind, pull, &reference, &id, engine_manifest.as_deref(), verified) {
        return Err(HarnessError::Environment(format!(
            "{e}: a container would mount another image than the one judged; remove it (`{} rmi {}`) and run again",
            engine.name(),
            reference
        )));
    }
    // Recorded for the report, and to give the reference back to a user's image afterwards
    // (bare hex, as `previous` is).
    record.loaded = Some(id.trim_start_matches("sha256:").to_string());
    crate::plumbing::supervisor::watch_image(&record);
    if let Some(l) = loaded.lock().unwrap().iter_mut().find(|l| l.reference == reference) {
        l.loaded = record.loaded.clone();
    }
    if previous.is_some() {
        tracing::warn!(reference = %img.reference, "an image with this reference existed before the run; it is re-tagged back afterwards");
    }
    let _ = std::fs::remove_file(archive);
    Ok(())
}

/// The engine's image under `reference`: its id and (podman) the digest of the manifest it
/// was stored with.
fn engine_image(engine: &Engine, reference: &str) -> Result<(String, Option<String>), String> {
    let format = match engine.kind {
        EngineKind::Podman => "{{.Id}} {{.Digest}}",
        EngineKind::Docker => "{{.Id}}",
    };
    let out = engine.run_sync(&strings(&["image", "inspect", "--format", format, reference]))?;
    let mut words = out.split_whitespace();
    let id = words.next().ok_or_else(|| format!("`image inspect {reference}` printed no id"))?;
    let digest = |w: &str| format!("sha256:{}", w.trim_start_matches("sha256:"));
    Ok((digest(id), words.next().map(digest)))
}

/// Whether the engine's image (`id`, and the manifest digest podman stored it with) is the
/// image the harness verified: the same config (an image id is its config's digest: podman,
/// docker's classic store), or for a pulled image the same manifest (podman's id differs for
/// partially pulled zstd:chunked layers; docker's containerd store names an image by its
/// manifest, or by the index a pin names). Docker's containerd store gives a loaded archive
/// an id of its own making: not comparable, only recorded.
fn same_image(
    kind: EngineKind,
    pulled: bool,
    reference: &str,
    id: &str,
    engine_manifest: Option<&str>,
    (config, manifest): (&str, &str),
) -> Result<(), String> {
    let pin = reference.split_once('@').map(|(_, d)| d);
    let same = id == config
        || match kind {
            EngineKind::Podman => pulled && engine_manifest == Some(manifest),
            EngineKind::Docker => !pulled || id == manifest || Some(id) == pin,
        };
    if same {
        Ok(())
    } else {
        Err(format!(
            "image `{reference}` in {} is {id}{}, not the image the harness verified (config {config}, manifest {manifest})",
            kind.name(),
            engine_manifest.map(|m| format!(" (manifest {m})")).unwrap_or_default(),
        ))
    }
}

/// The id of the image the engine holds under the digest reference `reference` itself, if
/// any. Not `image inspect` alone: podman resolves `any/name@sha256:D` to any image whose
/// digest is D, whatever its names (e.g. the same image loaded earlier under a tag); the
/// reference must be among the image's repo digests.
fn held_by_digest(engine: &Engine, reference: &str) -> Option<String> {
    let format = "{{.Id}} {{json .RepoDigests}}";
    let out = engine.run_quiet(&strings(&["image", "inspect", "--format", format, reference]))?;
    let (id, digests) = out.trim().split_once(' ')?;
    let digests: Vec<String> = serde_json::from_str(digests).ok()?;
    let wanted = normalize_reference(reference);
    digests.iter().any(|d| normalize_reference(d) == wanted).then(|| id.trim_start_matches("sha256:").to_string())
}

/// `registry/repo:tag` as engines list it (`docker.io/library/` and `:latest` made explicit).
fn normalize_reference(r: &str) -> String {
    let last = r.rsplit('/').next().unwrap_or(r);
    let mut out = if last.contains(':') || r.contains('@') { r.to_string() } else { format!("{r}:latest") };
    let first = out.split('/').next().unwrap_or("");
    let has_registry = out.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if !has_registry {
        out = if out.contains('/') { format!("docker.io/{out}") } else { format!("docker.io/library/{out}") };
    }
    out
}

/// Copies the data directory template out of the operand image into `dest/pgdata`.
fn extract_template(engine: &Engine, run_id: &str, op: &operand::Operand, dest: &Path) -> Result<(), String> {
    use std::process::{Command, Stdio};
    if engine.kind == EngineKind::Podman {
        // Rootful podman mounts the image on the host: copy straight from it.
        if let Ok(out) = engine.run_sync(&strings(&["image", "mount", &op.image])) {
            let mounted = PathBuf::from(out.trim());
            let copied = copy_tree_owned(&mounted.join(argv::PGDATA.trim_start_matches('/')), &dest.join("pgdata"));
            engine.run_quiet(&strings(&["image", "unmount", &op.image]));
            match copied {
                Ok(()) if dest.join("pgdata/PG_VERSION").is_file() => return Ok(()),
                Ok(()) => return Err(format!("{} has no data directory template at {}", op.image, argv::PGDATA)),
                Err(e) => {
                    tracing::debug!("copying the template from the mounted image: {e}");
                    let _ = crate::plumbing::fsutil::remove_tree(dest);
                }
            }
        }
    }
    let name = argv::sanitize(&format!("{run_id}-template"));
    let (owner_key, owner) = crate::plumbing::supervisor::owner_label();
    let mut create = strings(&[
        "create",
        "--name",
        &name,
        "--label",
        &format!("{LABEL_RUN}={run_id}"),
        "--label",
        &format!("{owner_key}={owner}"),
    ]);
    create.push(op.image.clone());
    create.push(op.program("postgres"));
    engine.run_sync(&create)?;
    std::fs::create_dir_all(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    let result = (|| -> Result<(), String> {
        let mut cp = Command::new(&engine.program)
            .args(&engine.global)
            .args(["cp", &format!("{name}:{}", argv::PGDATA), "-"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let tar = Command::new("tar")
            .args(["-x", "--numeric-owner", "--same-owner", "--same-permissions", "-C"])
            .arg(dest)
            .stdin(cp.stdout.take().expect("piped"))
            .output()
            .map_err(|e| format!("cannot run tar: {e}"))?;
        let cp = cp.wait_with_output().map_err(|e| e.to_string())?;
        if !cp.status.success() || !tar.status.success() {
            return Err(format!(
                "copying the template out of {}: {}{}",
                op.image,
                String::from_utf8_lossy(&cp.stderr).trim(),
                String::from_utf8_lossy(&tar.stderr).trim()
            ));
        }
        if !dest.join("pgdata/PG_VERSION").is_file() {
            return Err(format!("{} has no data directory template at {}", op.image, argv::PGDATA));
        }
        Ok(())
    })();
    engine.run_quiet(&strings(&["rm", "-f", &name]));
    result
}

/// Copies a tree keeping modes and owners (we are root).
fn copy_tree_owned(src: &Path, dst: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut dirs = Vec::new();
    for entry in walkdir::WalkDir::new(src).follow_links(false) {
        let entry = entry.map_err(std::io::Error::other)?;
        let rel = entry.path().strip_prefix(src).map_err(std::io::Error::other)?;
        let target = dst.join(rel);
        let meta = entry.path().symlink_metadata()?;
        let ft = meta.file_type();
        if ft.is_dir() {
            std::fs::create_dir_all(&target)?;
            dirs.push((target.clone(), meta.mode()));
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
        std::os::unix::fs::lchown(&target, Some(meta.uid()), Some(meta.gid()))?;
    }
    for (d, mode) in dirs.into_iter().rev() {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode & 0o7777))?;
    }
    Ok(())
}

/// One short container with an image mount: the engine and runtime really can do it.
fn probe(engine: &Engine, run_id: &str, op: &operand::Operand) -> Result<(), String> {
    let source = op.image.clone();
    let name = argv::sanitize(&format!("{run_id}-probe"));
    let labels = vec![(LABEL_RUN.to_string(), run_id.to_string()), crate::plumbing::supervisor::owner_label()];
    let mut args = argv::oneoff_run_args(
        engine.kind,
        &engine.run_flags,
        &name,
        &labels,
        false,
        &op.image,
        &[op.program("postgres"), "--version".into()],
    );
    args.insert(1, "--rm".into());
    let image_at = args.iter().position(|a| a == &op.image).expect("image in args");
    let m = ImageMount { reference: source, destination: "/cnpg-ext-harness-probe".into() };
    args.insert(image_at, argv::image_mount_arg(engine.kind, &m));
    args.insert(image_at, "--mount".into());
    let out = engine.run_sync(&args)?;
    if !out.contains("PostgreSQL") {
        return Err(format!("`postgres --version` in the operand image printed {out:?}"));
    }
    Ok(())
}

struct Instance {
    name: String,
    role: Role,
    /// Host directory: `run/` (socket) and `conf/`.
    dir: PathBuf,
    /// Volume name, and the name of the instance's first container.
    cname: String,
    /// How many containers of the instance were replaced: each gets a name of its own, so that
    /// a replaced container is removed while its successor starts.
    generation: u32,
    /// Id of the running container.
    container: Option<String>,
    /// The running container, removed when dropped.
    handle: Option<api::Handle>,
    /// Whether its volume was created.
    volume: bool,
    /// A replica whose first container runs the base backup into its empty volume first.
    bootstrap: bool,
}

impl Instance {
    fn socket_dir(&self) -> PathBuf {
        self.dir.join("run")
    }
    fn conf_dir(&self) -> PathBuf {
        self.dir.join("conf")
    }
    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }
    /// The name of the instance's current (or next) container.
    fn container_name(&self) -> String {
        match self.generation {
            0 => self.cname.clone(),
            g => format!("{}-{g}", self.cname),
        }
    }
    fn short_id(&self) -> String {
        self.container.as_deref().map(|c| c.chars().take(12).collect()).unwrap_or_default()
    }
}

/// The container backend: the stand-in operator over engine containers.
pub(crate) type ContainerBackend = StandIn<ContainerRuntime>;

impl ContainerBackend {
    pub(crate) fn container(env: Arc<ContainerEnv>, cnpg: CnpgVersion, scenario_id: &str) -> ContainerBackend {
        let dir = env.root.join(argv::sanitize(scenario_id));
        let runtime = ContainerRuntime {
            env,
            scenario: scenario_id.to_string(),
            dir,
            instances: BTreeMap::new(),
            removals: Vec::new(),
        };
        StandIn::new(runtime, cnpg)
    }
}

pub(crate) struct ContainerRuntime {
    env: Arc<ContainerEnv>,
    scenario: String,
    dir: PathBuf,
    /// By instance name.
    instances: BTreeMap<String, Instance>,
    /// Removals of replaced (stopped) containers, off the rollout's critical path; awaited by
    /// teardown before the volumes go.
    removals: Vec<tokio::task::JoinHandle<Result<(), String>>>,
}

impl ContainerRuntime {
    fn engine(&self) -> &Engine {
        &self.env.engine
    }

    fn inst(&self, slot: &Slot) -> Result<&Instance, BackendError> {
        self.instances.get(&slot.name).ok_or_else(|| failed(format!("no instance named `{}`", slot.name)))
    }

    fn labels(&self, inst: &Instance) -> Vec<(String, String)> {
        vec![
            (LABEL_RUN.to_string(), self.env.run_id.clone()),
            (LABEL_SCENARIO.to_string(), argv::sanitize(&self.scenario)),
            (LABEL_INSTANCE.to_string(), inst.name.clone()),
            // Whose run this is: a later run removes it when that owner is dead.
            crate::plumbing::supervisor::owner_label(),
        ]
    }

    /// The container's last lines; PostgreSQL logs to standard error.
    async fn logs(&self, id: &str) -> String {
        api::log_tail(id, 15).await
    }

    /// `volume create` of an instance. With a host template (root), the volume is backed by
    /// the instance's `data/` directory, filled here: the template for the primary, an empty
    /// PGDATA owned by the postgres uid for a replica. Otherwise a plain engine volume that
    /// the engine fills by copy-up from the image.
    async fn create_volume(&self, inst: &Instance) -> Result<(), BackendError> {
        let mut device = None;
        if let Some(template) = self.env.template.clone() {
            let data = inst.data_dir();
            let pgdata = data.join("pgdata");
            let primary = inst.role == Role::Primary;
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                std::fs::create_dir_all(&data)?;
                if primary {
                    copy_tree_owned(&template.join("pgdata"), &pgdata)
                } else {
                    make_owned_dir(&pgdata)
                }
            })
            .await
            .map_err(|e| failed(e.to_string()))?
            .map_err(|e| failed(format!("preparing the data of {}: {e}", inst.name)))?;
            device = Some(inst.data_dir());
        }
        api::create_volume(&inst.cname, &self.labels(inst), device.as_deref())
            .await
            .map_err(|e| failed(format!("creating the volume of {}: {e}", inst.name)))
    }

    async fn base_backup(&self, slot: &Slot, primary: &Slot) -> Result<(), BackendError> {
        // The volume is first mounted on the image's empty standby directory (the engine's
        // copy-up gives it the postgres uid as owner), then at its place in the instance.
        let mount_at = argv::STANDBY_MOUNT;
        let inst = self.inst(slot)?;
        let primary_socket = self.inst(primary)?.socket_dir();
        let labels = self.labels(inst);
        let args = argv::base_backup_args(
            self.engine().kind,
            &self.engine().run_flags,
            &format!("{}-basebackup", inst.cname),
            &labels,
            &self.env.operand.image,
            &self.env.operand.bindir,
            &inst.cname,
            mount_at,
            &primary_socket,
        );
        self.engine().run(&args).await.map_err(|e| failed(format!("pg_basebackup for {}: {e}", inst.name)))?;
        Ok(())
    }

    /// `LD_LIBRARY_PATH` of the postmaster, read from `/proc/<pid>/environ` inside the
    /// container (through PostgreSQL itself, else `cat` in the container) — never from the
    /// container's configuration, which says what was asked, not what the process has.
    async fn postmaster_ld_path(
        &self,
        inst: &Instance,
        client: &tokio_postgres::Client,
    ) -> Result<Option<String>, BackendError> {
        const SQL: &str = "SELECT pg_read_binary_file('/proc/' || split_part(pg_read_file('postmaster.pid'), E'\\n', 1) || '/environ')";
        let environ: Option<Vec<u8>> = match client.query_one(SQL, &[]).await {
            Ok(row) => row.try_get::<_, Vec<u8>>(0).ok(),
            Err(e) => {
                tracing::debug!("reading the postmaster environment through SQL: {}", crate::plumbing::sql::describe_error(&e));
                None
            }
        };
        let id = inst.container.clone().unwrap_or_default();
        let environ = match environ {
            Some(e) => e,
            // The container's first process is the postmaster (`exec postgres`).
            None => self
                .engine()
                .run(&strings(&["exec", &id, "cat", "/proc/1/environ"]))
                .await
                .map(String::into_bytes)
                .map_err(|e| failed(format!("cannot read the postmaster's environment in {}: {e}", inst.name)))?,
        };
        Ok(crate::backends::standin::ld_library_path_of(&environ))
    }

    /// Regular files below each mount, listed inside the container as the postgres uid;
    /// unreadable ones are reported as such (so that the comparison with the image fails).
    async fn list_mounts(
        &self,
        inst: &Instance,
        plan: &ClusterPlan,
        client: &tokio_postgres::Client,
    ) -> BTreeMap<String, Option<Vec<String>>> {
        if plan.extensions.is_empty() {
            return BTreeMap::new();
        }
        if let Some(out) = self.list_mounts_from_host(inst, plan, client).await {
            return out;
        }
        self.list_mounts_exec(inst, plan).await
    }

    /// As root with a local engine: the container's own view of its mounts through
    /// `/proc/<postmaster pid>/root` (its mount namespace), and readability checked by the
    /// postgres process itself opening every file. `None` when that view is not reachable.
    async fn list_mounts_from_host(
        &self,
        inst: &Instance,
        plan: &ClusterPlan,
        client: &tokio_postgres::Client,
    ) -> Option<BTreeMap<String, Option<Vec<String>>>> {
        if !nix::unistd::Uid::effective().is_root() {
            return None;
        }
        let id = inst.container.clone()?;
        let (_, pid) = api::state(&id).await.ok()?;
        let pid: u32 = u32::try_from(pid).ok().filter(|p| *p > 0)?;
        let root = PathBuf::from(format!("/proc/{pid}/root"));
        std::fs::read_dir(&root).ok()?;
        let mut out = BTreeMap::new();
        let mut all: Vec<String> = Vec::new();
        for ext in &plan.extensions {
            let dir = root.join(ext.mount_path.trim_start_matches('/'));
            let listed = dir.is_dir().then(|| crate::plumbing::fsutil::list_files(&dir));
            if let Some(files) = &listed {
                all.extend(files.iter().map(|f| format!("{}/{f}", ext.mount_path)));
            }
            out.insert(ext.mount_path.clone(), listed);
        }
        if all.is_empty() {
            return Some(out);
        }
        let array = all.iter().map(|f| quote_literal(f)).collect::<Vec<_>>().join(",");
        let sql = format!(
            "DO $$DECLARE f text; bad text[] := '{{}}'; BEGIN \
             FOREACH f IN ARRAY ARRAY[{array}]::text[] LOOP \
             BEGIN PERFORM pg_read_binary_file(f, 0, 1); EXCEPTION WHEN OTHERS THEN bad := bad || f; END; \
             END LOOP; \
             IF cardinality(bad) > 0 THEN RAISE EXCEPTION 'cnpg-ext-unreadable:%', array_to_string(bad, E'\\n'); END IF; END$$"
        );
        if let Err(e) = client.batch_execute(&sql).await {
            let msg = crate::plumbing::sql::describe_error(&e);
            let Some(list) = msg.split("cnpg-ext-unreadable:").nth(1) else {
                tracing::debug!("readability check in {}: {msg}", inst.name);
                return None;
            };
            let bad: Vec<&str> = list.lines().map(str::trim).collect();
            for ext in &plan.extensions {
                if let Some(Some(files)) = out.get_mut(&ext.mount_path) {
                    for f in files.iter_mut() {
                        if bad.contains(&format!("{}/{f}", ext.mount_path).as_str()) {
                            *f = format!("{f} (not readable by uid {PG_UID})");
                        }
                    }
                }
            }
        }
        Some(out)
    }

    /// `find` run inside the container as the postgres uid.
    async fn list_mounts_exec(&self, inst: &Instance, plan: &ClusterPlan) -> BTreeMap<String, Option<Vec<String>>> {
        let mut out: BTreeMap<String, Option<Vec<String>>> = BTreeMap::new();
        let id = inst.container.clone().unwrap_or_default();
        let mut args = strings(&["exec", "--user", &format!("{PG_UID}:{PG_UID}"), &id, "find"]);
        args.extend(plan.extensions.iter().map(|e| e.mount_path.clone()));
        args.extend(strings(&[
            "-type",
            "f",
            "(",
            "-readable",
            "-printf",
            "r\\t%H\\t%P\\n",
            "-o",
            "-printf",
            "u\\t%H\\t%P\\n",
            ")",
        ]));
        let text = match self.engine().run(&args).await {
            Ok(t) => t,
            // find exits 1 when a starting point is missing; what it printed is still right.
            Err(e) => {
                tracing::debug!("find in {}: {e}", inst.name);
                e
            }
        };
        for line in text.lines() {
            let mut parts = line.splitn(3, '\t');
            let (Some(flag), Some(start), Some(rel)) = (parts.next(), parts.next(), parts.next()) else { continue };
            let entry = out.entry(start.to_string()).or_insert_with(|| Some(Vec::new()));
            if let Some(files) = entry {
                files.push(if flag == "r" { rel.to_string() } else { format!("{rel} (not readable by uid {PG_UID})") });
            }
        }
        for ext in &plan.extensions {
            if !out.contains_key(&ext.mount_path) {
                // Nothing listed: an empty mount, or none at all (checked below).
                let present = self
                    .engine()
                    .run(&strings(&[
                        "exec",
                        "--user",
                        &format!("{PG_UID}:{PG_UID}"),
                        &id,
                        "find",
                        &ext.mount_path,
                        "-maxdepth",
                        "0",
                        "-type",
                        "d",
                    ]))
                    .await
                    .is_ok_and(|s| !s.trim().is_empty());
                out.insert(ext.mount_path.clone(), present.then(Vec::new));
            }
        }
        for files in out.values_mut().flatten() {
            files.sort();
        }
        out
    }
}

fn prepare_dirs(inst: &Instance) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let (run, conf) = (inst.socket_dir(), inst.conf_dir());
    for d in [&run, &conf] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    // The postgres uid of the container creates its socket here.
    if nix::unistd::Uid::effective().is_root() {
        nix::unistd::chown(&run, Some(nix::unistd::Uid::from_raw(PG_UID)), Some(nix::unistd::Gid::from_raw(PG_UID)))
            .map_err(|e| format!("{}: {e}", run.display()))?;
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).map_err(|e| e.to_string())?;
    } else {
        // Rootless engines map uid 26 to a subordinate uid.
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o777)).map_err(|e| e.to_string())?;
    }
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
    Ok(())
}

fn make_owned_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir(dir)?;
    std::os::unix::fs::chown(dir, Some(PG_UID), Some(PG_UID))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

fn failed(msg: impl Into<String>) -> BackendError {
    BackendError::Failed(msg.into())
}

#[async_trait]
impl InstanceRuntime for ContainerRuntime {
    fn name(&self) -> &'static str {
        "container"
    }

    fn mount_root(&self, _slot: &Slot) -> String {
        MOUNT_ROOT.into()
    }

    async fn provision(&mut self, slot: &Slot, primary: &Slot) -> Result<(), BackendError> {
        let inst = Instance {
            cname: argv::sanitize(&format!("{}-{}-{}", self.env.run_id, self.scenario, slot.name)),
            name: slot.name.clone(),
            role: slot.role,
            dir: self.dir.join(slot.ordinal.to_string()),
            container: None,
            handle: None,
            volume: false,
            bootstrap: false,
            generation: 0,
        };
        prepare_dirs(&inst).map_err(failed)?;
        let created = self.create_volume(&inst).await;
        let volume = created.is_ok();
        // With a host template the replica's volume holds an empty PGDATA owned by the
        // postgres uid: its first container runs the base backup itself.
        let bootstrap = slot.role == Role::Replica && self.env.template.is_some();
        self.instances.insert(slot.name.clone(), Instance { volume, bootstrap, ..inst });
        created.map_err(|e| failed(format!("creating the volume of {}: {e}", slot.name)))?;
        if slot.role == Role::Replica && !bootstrap {
            self.base_backup(slot, primary).await?;
        }
        Ok(())
    }

    async fn start(&mut self, slot: &Slot, plan: &ClusterPlan) -> Result<(), BackendError> {
        let primary_socket = self.instances.values().find(|i| i.role == Role::Primary).map(|p| p.socket_dir());
        let inst = self.inst(slot)?;
        let conf = inst.conf_dir().join("postgresql.conf");
        std::fs::write(&conf, argv::postgresql_conf(plan)).map_err(|e| failed(format!("{}: {e}", conf.display())))?;
        let labels = self.labels(inst);
        let mounts: Vec<ImageMount> = plan
            .extensions
            .iter()
            .map(|e| ImageMount {
                reference: engine_reference(&self.env.run_id, &e.image),
                destination: e.mount_path.clone(),
            })
            .collect();
        let bootstrap = inst.bootstrap.then(|| argv::base_backup_command(&self.env.operand.bindir, argv::DATA_MOUNT));
        let primary_socket = (inst.role == Role::Replica).then_some(primary_socket).flatten();
        let (socket_dir, conf_dir) = (inst.socket_dir(), inst.conf_dir());
        let cname = inst.container_name();
        let run = InstanceRun {
            container: &cname,
            labels: &labels,
            image: &self.env.operand.image,
            bindir: &self.env.operand.bindir,
            volume: &inst.cname,
            socket_dir: &socket_dir,
            conf_dir: &conf_dir,
            primary_socket_dir: primary_socket.as_deref(),
            mounts: &mounts,
            ld_library_path: plan.ld_library_path.as_deref(),
            bootstrap: bootstrap.as_deref(),
        };
        let spec = argv::instance_spec(&run, &self.env.host);
        if engine::stopping() {
            return Err(failed(format!("starting {}: interrupted", slot.name)));
        }
        // podman 4.3 can lose the race between two containers mounting the same image
        // (`error mounting …/merged … no such file or directory`): a transient failure of the
        // engine, retried a few times; any other failure is the instance's own.
        let mut started = api::start(&spec).await;
        for _ in 0..3 {
            match &started {
                Err(e) if e.contains("error mounting") && e.contains("no such file or directory") => {
                    tracing::warn!("{}: retrying a start the engine failed to mount: {e}", slot.name);
                    let _ = self.engine().run(&strings(&["rm", "-f", &cname])).await;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    started = api::start(&spec).await;
                }
                _ => break,
            }
        }
        let handle = match started {
            Ok(h) => h,
            Err(e) => {
                // A postmaster that stops at once (a preload library that cannot load) makes
                // the start itself fail; its own words are in the container's log.
                let log = api::log_tail(&cname, 15).await;
                let _ = self.engine().run(&strings(&["rm", "-f", &cname])).await;
                let reason = crate::backends::standin::fatal_reason(&e)
                    .or_else(|| crate::backends::standin::fatal_reason(&log))
                    .unwrap_or_else(|| e.clone());
                return Err(failed(format!(
                    "{} could not start: {reason}\n(starting its container: {e}; its log:)\n{log}",
                    slot.name
                )));
            }
        };
        let inst = self.instances.get_mut(&slot.name).expect("provisioned");
        inst.container = Some(handle.id().to_string());
        inst.handle = Some(handle);
        inst.bootstrap = false;
        Ok(())
    }

    async fn stopped(&mut self, slot: &Slot) -> Option<String> {
        let id = self.instances.get(&slot.name)?.container.clone()?;
        let (state, _) = api::state(&id).await.unwrap_or_default();
        let state = state.as_str();
        matches!(state, "exited" | "dead" | "stopped")
            .then(|| format!("its container {} is {state}", &id[..id.len().min(12)]))
    }

    fn exit_poll_interval(&self) -> Duration {
        // Each look is one inspect request to the Engine API (a few milliseconds).
        Duration::from_millis(250)
    }

    async fn log_tail(&self, slot: &Slot) -> String {
        let id = self.instances.get(&slot.name).and_then(|i| i.container.clone()).unwrap_or_default();
        self.logs(&id).await
    }

    /// Stops the container (fast shutdown, SIGKILL after the grace); the volume stays. The
    /// stopped container is removed in the background while the next one starts under a
    /// name of its own; teardown waits for that removal.
    async fn stop(&mut self, slot: &Slot) -> Result<(), BackendError> {
        let Some(inst) = self.instances.get_mut(&slot.name) else { return Ok(()) };
        let (Some(id), handle) = (inst.container.take(), inst.handle.take()) else { return Ok(()) };
        let name = slot.name.clone();
        api::stop(&id, STOP_GRACE).await.map_err(|e| failed(format!("stopping {name}: {e}")))?;
        inst.generation += 1;
        if let Some(h) = handle {
            self.removals.push(tokio::spawn(async move {
                h.rm().await.map_err(|e| format!("removing the replaced container of {name}: {e}"))
            }));
        }
        Ok(())
    }

    fn identity(&self, slot: &Slot) -> String {
        self.instances.get(&slot.name).map(Instance::short_id).unwrap_or_default()
    }

    fn socket_dir(&self, slot: &Slot) -> PathBuf {
        self.instances
            .get(&slot.name)
            .map(Instance::socket_dir)
            .unwrap_or_else(|| self.dir.join(slot.ordinal.to_string()).join("run"))
    }

    fn write_settings(&self, slot: &Slot, plan: &ClusterPlan) -> Result<(), BackendError> {
        let path = self.inst(slot)?.conf_dir().join("postgresql.conf");
        std::fs::write(&path, argv::postgresql_conf(plan)).map_err(|e| failed(format!("{}: {e}", path.display())))
    }

    async fn observe(
        &self,
        slot: &Slot,
        plan: &ClusterPlan,
        client: &tokio_postgres::Client,
    ) -> Result<InstanceObservation, BackendError> {
        let inst = self.inst(slot)?;
        let ld_library_path = self.postmaster_ld_path(inst, client).await?;
        let listed = self.list_mounts(inst, plan, client).await;
        let mut mounts = Vec::new();
        for ext in &plan.extensions {
            let files = listed.get(&ext.mount_path).cloned().flatten();
            let present = files.is_some();
            // A write attempt by the postgres process itself, inside the container.
            let read_only = if present {
                let probe = format!("{}/.cnpg-ext-harness-write-probe", ext.mount_path);
                match client.batch_execute(&format!("COPY (SELECT 1) TO {}", quote_literal(&probe))).await {
                    Ok(()) => Some(false),
                    Err(e) => {
                        let msg = crate::plumbing::sql::describe_error(&e);
                        if msg.contains("Read-only file system") || msg.contains("Permission denied") {
                            Some(true)
                        } else {
                            tracing::debug!("write probe in {}: {msg}", ext.mount_path);
                            None
                        }
                    }
                }
            } else {
                None
            };
            mounts.push(MountObservation {
                name: ext.name.clone(),
                path: ext.mount_path.clone(),
                present,
                files: files.unwrap_or_default(),
                read_only,
            });
        }
        Ok(InstanceObservation { instance: slot.name.clone(), ld_library_path, mounts })
    }

    async fn teardown(&mut self, slots: &[Slot], keep: bool) -> Result<(), BackendError> {
        let mut handles = Vec::new();
        for s in slots {
            if let Some(inst) = self.instances.get_mut(&s.name) {
                if let (Some(id), Some(h)) = (inst.container.clone(), inst.handle.take()) {
                    handles.push((id, h));
                }
            }
        }
        let vols: Vec<String> = self.instances.values().filter(|i| i.volume).map(|i| i.cname.clone()).collect();
        let mut problems = Vec::new();
        for removal in std::mem::take(&mut self.removals) {
            match removal.await {
                Ok(Err(e)) => problems.push(e),
                Err(e) => problems.push(format!("removing a replaced container: {e}")),
                Ok(Ok(())) => {}
            }
        }
        if keep {
            for (id, h) in handles {
                let _ = api::stop(&id, STOP_GRACE).await;
                // Kept for inspection: not removed on drop (the run's label finds it).
                std::mem::forget(h);
            }
            return Ok(());
        }
        // Containers first (removing a volume in use deadlocks on podman 4.3); no grace, the
        // data is being thrown away.
        let removed = futures::future::join_all(
            handles
                .into_iter()
                .map(|(id, h)| async move { h.rm().await.map_err(|e| format!("removing container {id}: {e}")) }),
        )
        .await;
        problems.extend(removed.into_iter().filter_map(Result::err));
        let removed = futures::future::join_all(vols.iter().map(|v| api::remove_volume(v))).await;
        problems.extend(removed.into_iter().filter_map(Result::err));
        for i in self.instances.values_mut() {
            i.container = None;
            i.volume = false;
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(failed(problems.join("; ")))
        }
    }
}

impl Drop for ContainerRuntime {
    /// Containers still running are removed by their handles; outside a tokio runtime (a
    /// backend dropped after its runtime), one is made for that.
    fn drop(&mut self) {
        let handles: Vec<api::Handle> = self.instances.values_mut().filter_map(|i| i.handle.take()).collect();
        if handles.is_empty() {
            return;
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            drop(handles);
        } else if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
            let _guard = rt.enter();
            drop(handles);
        } else {
            // Without a runtime the handles cannot act; the run's label sweep removes them.
            handles.into_iter().for_each(std::mem::forget);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{same_image, EngineKind};

    const CONFIG: &str = "sha256:c0";
    const MANIFEST: &str = "sha256:m0";
    const PINNED: &str = "127.0.0.1:5000/ext/x@sha256:i0";

    fn check(kind: EngineKind, pulled: bool, id: &str, engine_manifest: Option<&str>) -> Result<(), String> {
        same_image(kind, pulled, PINNED, id, engine_manifest, (CONFIG, MANIFEST))
    }

    #[test]
    fn podman_holds_the_verified_image_when_its_id_is_the_config_digest() {
        assert!(check(EngineKind::Podman, true, CONFIG, Some("sha256:other")).is_ok());
        assert!(check(EngineKind::Podman, false, CONFIG, None).is_ok());
        // A partial (zstd:chunked) pull has an id of its own; the stored manifest decides.
        assert!(check(EngineKind::Podman, true, "sha256:x", Some(MANIFEST)).is_ok());
        // A loaded archive has no registry manifest to fall back on.
        assert!(check(EngineKind::Podman, false, "sha256:x", Some(MANIFEST)).is_err());
        let e = check(EngineKind::Podman, true, "sha256:x", Some("sha256:y")).unwrap_err();
        for part in [PINNED, "podman", "sha256:x", "sha256:y", CONFIG, MANIFEST] {
            assert!(e.contains(part), "{part}: {e}");
        }
    }

    #[test]
    fn docker_ids_may_name_the_manifest_or_the_pinned_index() {
        assert!(check(EngineKind::Docker, true, CONFIG, None).is_ok());
        assert!(check(EngineKind::Docker, true, MANIFEST, None).is_ok());
        assert!(check(EngineKind::Docker, true, "sha256:i0", None).is_ok());
        assert!(check(EngineKind::Docker, true, "sha256:x", None).is_err());
        // A loaded archive: an id docker's containerd store made up, only recorded.
        assert!(check(EngineKind::Docker, false, "sha256:x", None).is_ok());
    }
}
