//! Instance containers over the Docker Engine API, through `testcontainers` (bollard below).
//!
//! Docker ≥ 28 answers on `DOCKER_HOST` or its default socket. Podman answers through its API
//! service, which the harness starts on a private socket of its process (with the same global
//! flags as the CLI, so both see one store), shared by the runs of the process, and stops when
//! the last of them ends ([`ApiService`]).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::StreamExt;
use testcontainers::bollard::models::VolumeCreateRequest;
use testcontainers::bollard::query_parameters::{
    InspectContainerOptions, KillContainerOptionsBuilder, LogsOptionsBuilder, RemoveVolumeOptions,
};
use testcontainers::bollard::Docker;
use testcontainers::core::client::docker_client_instance;
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

use super::argv::InstanceSpec;
use super::engine::{Engine, EngineKind};

/// A started instance container; removed (with `rm -f`) when dropped.
pub(crate) type Handle = ContainerAsync<GenericImage>;

/// Longest wait for a freshly started podman service to answer.
const SERVICE_READY: Duration = Duration::from_secs(20);

/// A run's use of the podman API service (none for docker).
///
/// One service serves the whole process: testcontainers makes one Engine API client per
/// process (from `DOCKER_HOST`, read once), so every run in a process (a library user's
/// tests, this repo's) must talk to the same socket. The first run starts the service in a
/// directory of the process's own (`cnpg-ext-api-<pid>` beside the work directories, never
/// inside one run's), later runs lease it, and the last to stop stops it.
///
/// It dies with the harness in two ways: `PR_SET_PDEATHSIG` (SIGKILL), set in the child
/// before `exec`, kills it as soon as the harness process dies, whatever the cause; and the
/// run's supervisor (`plumbing::supervisor`) kills every process the harness started.
pub struct ApiService {
    socket: PathBuf,
    pid: Option<u32>,
    stopped: std::sync::atomic::AtomicBool,
}

/// The running service and how many [`ApiService`] leases hold it.
struct Shared {
    /// Program and global flags: one engine configuration per process.
    key: Vec<String>,
    users: usize,
    service: Service,
}

static SHARED: Mutex<Option<Shared>> = Mutex::new(None);

/// The `podman system service` process.
struct Service {
    child: Mutex<Option<Child>>,
    /// The thread that forked the service; it must outlive the service (see [`spawn_tied`]).
    keeper: Mutex<Option<Keeper>>,
    socket: PathBuf,
    /// The directory of the socket and the service's log (removed with the service).
    dir: PathBuf,
}

/// The thread that forked a process tied to this one, parked until released.
struct Keeper {
    release: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

/// Spawns `cmd` so that it is SIGKILLed when this process dies (`PR_SET_PDEATHSIG`).
///
/// Linux sends the parent-death signal when the *thread* that forked the child ends, not
/// when the process does. Callers of [`ApiService::start`] are short-lived threads (the
/// scoped thread of `ContainerEnv::prepare`, itself on a tokio blocking-pool thread, which
/// ends after 10 s idle): forked there, the service would be killed mid-run. So the fork
/// happens on a thread of its own that does nothing but wait until it is released, which
/// [`ApiService::stop`] does only after the service has exited. The thread therefore lives
/// exactly as long as the service, and only the death of the process can end it earlier.
///
/// In the child, after `prctl`, the parent pid is compared with this process: if the harness
/// died between `fork` and `prctl`, no signal would ever come, and the child gives up instead
/// of exec'ing (only async-signal-safe calls there: two system calls, no allocation).
fn spawn_tied(mut cmd: Command) -> std::io::Result<(Child, Keeper)> {
    use std::os::unix::process::CommandExt;
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs between fork and exec; it makes two system calls and builds
    // an io::Error from an errno, which does not allocate.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
            if nix::unistd::getppid() != parent {
                return Err(nix::errno::Errno::ESRCH.into());
            }
            Ok(())
        });
    }
    let (spawned_tx, spawned) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::Builder::new().name("api-service".into()).spawn(move || {
        let _ = spawned_tx.send(cmd.spawn());
        // Returns when released or when the sender is dropped (the service is gone then).
        let _ = released.recv();
    })?;
    match spawned.recv() {
        Ok(Ok(child)) => Ok((child, Keeper { release, thread })),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => Err(std::io::Error::other("the thread starting the service ended without an answer")),
    }
}

impl ApiService {
    /// A lease on the process's podman API service, started if none runs
    /// (`podman <global flags> system service --time=0 unix://<dir>/podman.sock`, with
    /// `DOCKER_HOST` of this process pointed at it); for docker, checks that its API answers.
    /// Any thread may call this: the service is forked by a thread of its own ([`spawn_tied`]).
    pub fn start(engine: &Engine) -> Result<Option<ApiService>, String> {
        if engine.kind == EngineKind::Docker {
            ping().map_err(|e| {
                format!("the Docker Engine API does not answer (DOCKER_HOST or /var/run/docker.sock): {e}")
            })?;
            return Ok(None);
        }
        let key: Vec<String> =
            std::iter::once(engine.program.display().to_string()).chain(engine.global.iter().cloned()).collect();
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = shared.as_mut() {
            if s.service.running() {
                if s.key != key {
                    return Err(format!(
                        "this process already drives `{}` through its API service; one engine configuration per process (testcontainers keeps one client)",
                        s.key.join(" ")
                    ));
                }
                s.users += 1;
                return Ok(Some(ApiService {
                    socket: s.service.socket.clone(),
                    pid: s.service.pid(),
                    stopped: false.into(),
                }));
            }
        }
        if let Some(old) = shared.take() {
            old.service.stop();
        }
        let service = Service::start(engine)?;
        let lease = ApiService { socket: service.socket.clone(), pid: service.pid(), stopped: false.into() };
        *shared = Some(Shared { key, users: 1, service });
        Ok(Some(lease))
    }

    /// The service's process id.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The socket the service answers on.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Ends this lease (idempotent); the last lease stops the service.
    pub fn stop(&self) {
        if self.stopped.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = shared.as_mut() {
            s.users = s.users.saturating_sub(1);
            if s.users == 0 {
                if let Some(s) = shared.take() {
                    s.service.stop();
                }
            }
        }
    }
}

impl Drop for ApiService {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Service {
    fn start(engine: &Engine) -> Result<Service, String> {
        let parent = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
        let dir = parent.join(format!("cnpg-ext-api-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        // Removed by the supervisor if the harness dies, and by a later run's sweep.
        let _ = crate::plumbing::procs::claim_dir(&dir);
        let root = dir.as_path();
        let socket = root.join("podman.sock");
        let _ = std::fs::remove_file(&socket);
        let log = root.join("podman-service.log");
        let err = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let url = format!("unix://{}", socket.display());
        let mut cmd = Command::new(&engine.program);
        cmd.args(&engine.global)
            .args(["system", "service", "--time=0", &url])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err);
        let (child, keeper) = spawn_tied(cmd).map_err(|e| {
            format!(
                "cannot start `{}`: {e}",
                engine.describe(&["system".into(), "service".into(), "--time=0".into(), url.clone()])
            )
        })?;
        let service = Service {
            child: Mutex::new(Some(child)),
            keeper: Mutex::new(Some(keeper)),
            socket: socket.clone(),
            dir: dir.clone(),
        };
        let deadline = Instant::now() + SERVICE_READY;
        loop {
            if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                break;
            }
            let exited = service.child.lock().unwrap().as_mut().and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                service.stop();
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect();
                return Err(format!(
                    "the podman API service did not come up on {} ({}): {}",
                    socket.display(),
                    exited
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| format!("no answer in {}s", SERVICE_READY.as_secs())),
                    tail.join(" | ")
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        // testcontainers reads DOCKER_HOST when it makes its client; this process's engine
        // is the private service from now on.
        std::env::set_var("DOCKER_HOST", &url);
        if let Err(e) = ping() {
            service.stop();
            return Err(format!("the podman API service on {} does not answer: {e}", socket.display()));
        }
        tracing::debug!(socket = %socket.display(), "podman API service");
        Ok(service)
    }

    fn pid(&self) -> Option<u32> {
        self.child.lock().unwrap().as_ref().map(Child::id)
    }

    fn running(&self) -> bool {
        self.child.lock().unwrap().as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Stops the service (idempotent): SIGTERM, SIGKILL after 5 s, then releases the thread
    /// that forked it (its end would otherwise SIGKILL the service first), and removes its
    /// directory.
    fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(&self.socket);
        }
        if let Some(k) = self.keeper.lock().unwrap().take() {
            let _ = k.release.send(());
            let _ = k.thread.join();
        }
        if self.dir.exists() {
            let _ = crate::plumbing::fsutil::remove_tree(&self.dir);
        }
        crate::plumbing::procs::unregister_dir(&self.dir);
    }
}

/// `GET /_ping` from a runtime of its own (callers may be on a blocking thread or none).
fn ping() -> Result<(), String> {
    std::thread::spawn(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        rt.block_on(async {
            let docker = client().await?;
            tokio::time::timeout(Duration::from_secs(10), docker.ping())
                .await
                .map_err(|_| "no answer in 10s".to_string())?
                .map_err(|e| e.to_string())
                .map(|_| ())
        })
    })
    .join()
    .map_err(|_| "the API check panicked".to_string())?
}

async fn client() -> Result<Docker, String> {
    docker_client_instance().await.map_err(|e| format!("no Engine API client: {e}"))
}

/// `name[:tag]` split the way `GenericImage` wants it (a digest stays whole: `name@sha256`
/// + `:hex` joins back to the same reference).
fn split_reference(reference: &str) -> (String, String) {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    match last.rfind(':') {
        Some(i) => {
            let cut = reference.len() - last.len() + i;
            (reference[..cut].to_string(), reference[cut + 1..].to_string())
        }
        None => (reference.to_string(), "latest".to_string()),
    }
}

/// Creates and starts the container of `spec`.
pub(crate) async fn start(spec: &InstanceSpec) -> Result<Handle, String> {
    // A cleanup waits for this: a create that lands after it would leave a container (and
    // an unlabelled volume the engine makes for the name).
    let _in_flight = super::engine::InFlight::enter();
    // Containers are removed explicitly (stop, teardown, the run's label sweep); a container
    // whose start failed must stay until its log is read, so testcontainers removes nothing
    // on drop. Read by testcontainers when its client is first made, which is below.
    std::env::set_var("TESTCONTAINERS_COMMAND", "keep");
    let (name, tag) = split_reference(&spec.image);
    let mounts = spec.mounts.clone();
    let host = spec.host.clone();
    let network = spec.network_mode.clone();
    let mut req = GenericImage::new(name, tag)
        .with_container_name(spec.name.clone())
        .with_user(spec.user.clone())
        .with_labels(spec.labels.clone())
        .with_cmd(spec.cmd.clone())
        .with_startup_timeout(Duration::from_secs(120));
    for (k, v) in &spec.env {
        req = req.with_env_var(k.clone(), v.clone());
    }
    let req = req.with_host_config_modifier(move |hc| {
        hc.mounts = Some(mounts.clone());
        host.apply(hc);
        hc.network_mode = Some(network.clone());
        // testcontainers publishes every exposed port by default; there is no network.
        hc.publish_all_ports = None;
        hc.port_bindings = None;
    });
    match req.start().await {
        Ok(h) => Ok(h),
        Err(e) => {
            // A postmaster that stops at once makes the start fail; the container stays
            // (`TESTCONTAINERS_COMMAND=keep`), so its log says why (its FATAL line).
            let log = log_tail(&spec.name, 15).await;
            Err(format!("creating container {} from {}: {e}\n{}", spec.name, spec.image, log.trim_end()))
        }
    }
}

/// The container's state (`running`, `exited`, …) and its main process id.
pub(crate) async fn state(id: &str) -> Result<(String, i64), String> {
    match client().await?.inspect_container(id, None::<InspectContainerOptions>).await {
        Ok(info) => {
            let st = info.state.unwrap_or_default();
            Ok((st.status.map(|s| s.to_string()).unwrap_or_default(), st.pid.unwrap_or(0)))
        }
        Err(e) => {
            let msg = e.to_string();
            // podman 4.3 says `"Status": "stopped"`, which Docker's schema (and so bollard)
            // does not know: the whole answer fails to decode, naming the state it saw.
            unknown_state(&msg).map(|s| (s, 0)).ok_or(msg)
        }
    }
}

/// The state named by a decoding error of an inspect answer (`unknown variant `stopped``).
fn unknown_state(msg: &str) -> Option<String> {
    let rest = msg.split("unknown variant `").nth(1)?;
    let state = rest.split('`').next()?;
    (!state.is_empty() && state.chars().all(|c| c.is_ascii_lowercase())).then(|| state.to_string())
}

/// Sends SIGINT (PostgreSQL's fast shutdown) and waits up to `grace` for the exit; the
/// container is left stopped (removal is the caller's: drop or `rm`).
pub(crate) async fn stop(id: &str, grace: Duration) -> Result<(), String> {
    let docker = client().await?;
    let kill = docker.kill_container(id, Some(KillContainerOptionsBuilder::new().signal("SIGINT").build())).await;
    if let Err(e) = kill {
        // Already stopped is fine.
        if matches!(state(id).await, Ok((s, _)) if s == "running") {
            return Err(format!("SIGINT to {id}: {e}"));
        }
        return Ok(());
    }
    let deadline = Instant::now() + grace;
    loop {
        match state(id).await {
            Ok((s, _)) if s != "running" => return Ok(()),
            Err(e) => return Err(e),
            _ if Instant::now() > deadline => {
                // Past the grace: SIGKILL, as the engine's stop would.
                let _ =
                    docker.kill_container(id, Some(KillContainerOptionsBuilder::new().signal("SIGKILL").build())).await;
                return Ok(());
            }
            // One inspect request is a few milliseconds; a fast shutdown is tens.
            _ => tokio::time::sleep(Duration::from_millis(15)).await,
        }
    }
}

/// The last `lines` lines of the container's output (stdout and stderr as they came).
pub(crate) async fn log_tail(id: &str, lines: usize) -> String {
    logs(id, &lines.to_string()).await
}

/// The container's whole output (stdout and stderr as they came): its server log.
pub(crate) async fn log_all(id: &str) -> String {
    logs(id, "all").await
}

async fn logs(id: &str, tail: &str) -> String {
    let docker = match client().await {
        Ok(d) => d,
        Err(e) => return e,
    };
    let opts = LogsOptionsBuilder::new().stdout(true).stderr(true).tail(tail).build();
    let mut stream = docker.logs(id, Some(opts));
    let mut out = String::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) => out.push_str(&String::from_utf8_lossy(&chunk.into_bytes())),
            Err(e) => {
                out.push_str(&log_error(id, &e));
                break;
            }
        }
    }
    out
}

/// What stands in a message where a container's log could not be read: a container the
/// engine never created (its create failed) has no log, which is said as such, not as the
/// engine's 404.
fn log_error(id: &str, e: &testcontainers::bollard::errors::Error) -> String {
    match e {
        testcontainers::bollard::errors::Error::DockerResponseServerError { status_code: 404, .. } => {
            format!("(no log: container {id} was never created)")
        }
        e => format!("(logs of {id}: {e})"),
    }
}

/// `POST /volumes/create` with labels, and bind-backed by `device` when given.
pub(crate) async fn create_volume(
    name: &str,
    labels: &[(String, String)],
    device: Option<&Path>,
) -> Result<(), String> {
    let _in_flight = super::engine::InFlight::enter();
    let driver_opts = device.map(|d| {
        [("type", "none"), ("o", "bind")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain([("device".to_string(), d.display().to_string())])
            .collect()
    });
    let req = VolumeCreateRequest {
        name: Some(name.to_string()),
        driver: Some("local".into()),
        driver_opts,
        labels: Some(labels.iter().cloned().collect()),
        ..Default::default()
    };
    client().await?.create_volume(req).await.map(|_| ()).map_err(|e| e.to_string())
}

pub(crate) async fn remove_volume(name: &str) -> Result<(), String> {
    client()
        .await?
        .remove_volume(name, Some(RemoveVolumeOptions { force: true }))
        .await
        .map_err(|e| format!("removing volume {name}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::{log_error, split_reference, unknown_state};

    /// A container whose create failed has no log: said so, not as the engine's 404 (seen in a
    /// create-failure message: "(logs of X: … 404 … no such container)").
    #[test]
    fn a_container_never_created_has_no_log_said_plainly() {
        let gone = testcontainers::bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            message: "no container with name or ID \"c-1\" found: no such container".into(),
        };
        assert_eq!(log_error("c-1", &gone), "(no log: container c-1 was never created)");
        let other = testcontainers::bollard::errors::Error::DockerResponseServerError {
            status_code: 500,
            message: "boom".into(),
        };
        let text = log_error("c-1", &other);
        assert!(text.starts_with("(logs of c-1: ") && text.contains("boom"), "{text}");
    }

    #[test]
    fn podman_only_states_are_read_from_the_decoding_error() {
        let msg = "Failed to deserialize JSON: unknown variant `stopped`, expected one of ``, `created`, `running` at line 1 column 404";
        assert_eq!(unknown_state(msg).as_deref(), Some("stopped"));
        assert_eq!(unknown_state("No such container: abc"), None);
        assert_eq!(unknown_state("unknown variant ``, expected"), None);
    }

    #[test]
    fn references_split_into_name_and_tag() {
        let s = |r: &str| {
            let (n, t) = split_reference(r);
            (n, t)
        };
        assert_eq!(s("localhost/x/postgres:18.6-ab"), ("localhost/x/postgres".into(), "18.6-ab".into()));
        assert_eq!(s("localhost:5000/pg"), ("localhost:5000/pg".into(), "latest".into()));
        assert_eq!(s("pg@sha256:abc"), ("pg@sha256".into(), "abc".into()));
        for r in ["localhost/x/postgres:18.6-ab", "pg@sha256:abc", "localhost:5000/pg:1"] {
            let (n, t) = split_reference(r);
            assert_eq!(format!("{n}:{t}"), r);
        }
    }
}
