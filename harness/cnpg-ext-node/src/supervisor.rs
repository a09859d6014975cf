//! The process that owns a running node.
//!
//! `k8s up` starts `<exe> k8s __node --state <dir>` in a session of its own (the *outer*
//! supervisor, in the host's namespaces). It starts `unshare --pid --fork --mount-proc --net
//! --kill-child` running `<exe> k8s __inner --state <dir>`: PID 1 of a new PID, mount and
//! network namespace, which starts every component in order and reaps orphans.
//!
//! What this buys: when the inner PID 1 exits, the kernel kills every process left in its PID
//! namespace (containers and shims included), and the mount and network namespaces go with
//! their last process (overlay mounts, pod network namespaces, the veth pair, the bridge,
//! kube-proxy's iptables rules). `unshare` runs with a parent-death signal, so a SIGKILLed
//! outer supervisor takes the whole node with it. What remains on the host is the state
//! directory and the (empty) cgroups under [`config::CGROUP_ROOT`], which `down` removes.
//!
//! The outer supervisor also serves the host's only ways in: TCP forwarders on 127.0.0.1 to
//! the API server and the registry, and the hostPath volume provisioner.

use crate::config::{self, NODE_IP};
use crate::util::{self, wait_for};
use crate::{NodeError, Result};
use clap::Args;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The node's state directory (written by `k8s up`).
    #[arg(long)]
    pub state: PathBuf,
}

/// What `up` hands the supervisor (`<state>/node.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeSpec {
    /// Binary name → path.
    pub bins: BTreeMap<String, PathBuf>,
    pub api_port: u16,
    pub registry_port: u16,
    pub pause_archive: PathBuf,
    pub runc: PathBuf,
    pub cni_bin: PathBuf,
    pub registry_bin: PathBuf,
}

impl NodeSpec {
    pub fn read(state: &Path) -> Result<NodeSpec> {
        let p = state.join("node.json");
        let bytes = std::fs::read(&p).map_err(|e| NodeError::io("read", &p, e))?;
        serde_json::from_slice(&bytes).map_err(|e| NodeError::failed(format!("{}: {e}", p.display())))
    }
    pub fn bin<'a>(&'a self, name: &'a str) -> &'a Path {
        self.bins.get(name).map(|p| p.as_path()).unwrap_or(Path::new(name))
    }
}

static TERMINATE: AtomicBool = AtomicBool::new(false);

extern "C" fn on_term(_: libc::c_int) {
    TERMINATE.store(true, Ordering::SeqCst);
}

fn catch_termination() {
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_term as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_term as *const () as libc::sighandler_t);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
}

fn log(msg: &str) {
    eprintln!(
        "[{:>10.3}] {msg}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64() % 100000.0
    );
}

fn logfile(state: &Path, name: &str) -> Result<std::fs::File> {
    let p = state.join("logs").join(format!("{name}.log"));
    util::mkdir(p.parent().unwrap())?;
    std::fs::OpenOptions::new().create(true).append(true).open(&p).map_err(|e| NodeError::io("open", &p, e))
}

/// Pid files in the state directory.
pub const SUPERVISOR_PID: &str = "supervisor.pid";
pub const INNER_PID: &str = "inner.pid";
/// Written by the inner supervisor as its first act: from then on the process the outer one
/// finds under `unshare` is the inner supervisor itself, in the node's namespaces.
pub const INNER_HELLO: &str = "inner.hello";

pub fn read_pid(state: &Path, file: &str) -> Option<i32> {
    std::fs::read_to_string(state.join(file)).ok()?.trim().parse().ok()
}

/// The outer supervisor (host namespaces).
pub fn outer(args: &NodeArgs) -> Result<i32> {
    let state = &args.state;
    catch_termination();
    let spec = NodeSpec::read(state)?;
    util::write(&state.join(SUPERVISOR_PID), std::process::id().to_string())?;
    let exe = std::env::current_exe().map_err(|e| NodeError::env(format!("cannot find this executable: {e}")))?;
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc", "--net", "--propagation", "private", "--kill-child=SIGKILL", "--"])
        .arg(&exe)
        .args(["k8s", "__inner", "--state"])
        .arg(state)
        .stdin(Stdio::null())
        .stdout(logfile(state, "inner")?)
        .stderr(logfile(state, "inner")?);
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let _ = std::fs::remove_file(state.join(INNER_HELLO));
    let mut child = cmd.spawn().map_err(|e| NodeError::env(format!("cannot run unshare (util-linux): {e}")))?;
    let unshare_pid = child.id() as i32;
    // The handshake: the veth end can only be moved into the namespace of the inner
    // supervisor once that process exists as itself (seen under load: a pid taken from
    // `unshare`'s children too early was gone — `RTNETLINK answers: No such process`).
    let hello =
        wait_for(Duration::from_secs(20), Duration::from_millis(20), || state.join(INNER_HELLO).exists().then_some(()));
    let inner = hello.and_then(|_| child_of(unshare_pid));
    let Some(inner) = inner else {
        let _ = child.kill();
        return Err(NodeError::env("the inner supervisor did not start within 20 s (see logs/inner.log)"));
    };
    util::write(&state.join(INNER_PID), inner.to_string())?;
    log(&format!("inner supervisor is pid {inner} (unshare {unshare_pid})"));
    let attempt = retry(3, Duration::from_millis(500), |n| {
        let r = host_network(inner);
        if let Err(e) = &r {
            log(&format!("host network, attempt {n}: {e}"));
        }
        r
    });
    if let Err(e) = attempt {
        let _ = child.kill();
        return Err(e);
    }
    let stop = Arc::new(AtomicBool::new(false));
    forward(spec.api_port, (NODE_IP, config::API_PORT), stop.clone())?;
    forward(spec.registry_port, (NODE_IP, config::REGISTRY_PORT), stop.clone())?;
    let provisioner = {
        let (state, stop, kubectl) = (state.clone(), stop.clone(), spec.bin("kubectl").to_path_buf());
        std::thread::spawn(move || crate::provisioner::run(&state, &kubectl, &stop))
    };
    let mut asked = None::<Instant>;
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| NodeError::failed(format!("waiting for unshare: {e}")))? {
            break s;
        }
        if TERMINATE.load(Ordering::SeqCst) {
            match asked {
                None => {
                    log("stopping the node");
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(inner), nix::sys::signal::SIGTERM);
                    asked = Some(Instant::now());
                }
                Some(t) if t.elapsed() > Duration::from_secs(30) => {
                    log("the node did not stop within 30 s: killing it");
                    let _ = child.kill();
                }
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    stop.store(true, Ordering::SeqCst);
    log(&format!("node exited: {status}"));
    let _ = provisioner.join();
    remove_cgroups();
    let _ = std::fs::remove_file(state.join(INNER_PID));
    let _ = std::fs::remove_file(state.join(SUPERVISOR_PID));
    Ok(if asked.is_some() { 0 } else { 1 })
}

/// `f(1)`, `f(2)`, … until it succeeds or `attempts` have failed (the last error), `pause`
/// between two.
fn retry<T>(attempts: u32, pause: Duration, mut f: impl FnMut(u32) -> Result<T>) -> Result<T> {
    let mut n = 1;
    loop {
        match f(n) {
            Ok(v) => return Ok(v),
            Err(e) if n >= attempts => return Err(e),
            Err(_) => {
                n += 1;
                std::thread::sleep(pause);
            }
        }
    }
}

/// The first child of `pid` (the process `unshare --fork` started).
fn child_of(pid: i32) -> Option<i32> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    children.split_whitespace().next()?.parse().ok()
}

/// The host end of the veth pair; the other end goes into the node's namespace as `eth0`.
fn host_network(inner: i32) -> Result<()> {
    let _ = Command::new("ip").args(["link", "del", config::HOST_VETH]).stderr(Stdio::null()).status();
    let pid = inner.to_string();
    util::run(Command::new("ip").args([
        "link",
        "add",
        config::HOST_VETH,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &pid,
    ]))?;
    util::run(Command::new("ip").args(["addr", "add", &format!("{}/24", config::HOST_IP), "dev", config::HOST_VETH]))?;
    util::run(Command::new("ip").args(["link", "set", config::HOST_VETH, "up"]))?;
    // The pods' addresses are reachable from the host through the node.
    util::run(Command::new("ip").args(["route", "add", config::POD_CIDR, "via", NODE_IP]))?;
    Ok(())
}

/// Accepts on 127.0.0.1:`port` and relays each connection to `to`.
fn forward(port: u16, to: (&'static str, u16), stop: Arc<AtomicBool>) -> Result<()> {
    let l = TcpListener::bind(("127.0.0.1", port))
        .map_err(|e| NodeError::env(format!("cannot listen on 127.0.0.1:{port}: {e}; choose another port")))?;
    std::thread::spawn(move || {
        for conn in l.incoming() {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let Ok(a) = conn else { continue };
            std::thread::spawn(move || {
                let Ok(b) = TcpStream::connect_timeout(
                    &std::net::SocketAddr::new(to.0.parse().expect("an IP address"), to.1),
                    Duration::from_secs(5),
                ) else {
                    return;
                };
                let (Ok(mut a2), Ok(mut b2)) = (a.try_clone(), b.try_clone()) else { return };
                let t = std::thread::spawn(move || {
                    let _ = std::io::copy(&mut a2, &mut b2);
                    let _ = b2.shutdown(std::net::Shutdown::Write);
                });
                let (mut a, mut b) = (a, b);
                let _ = std::io::copy(&mut b, &mut a);
                let _ = a.shutdown(std::net::Shutdown::Write);
                let _ = t.join();
            });
        }
    });
    Ok(())
}

/// The cgroup hierarchies under /sys/fs/cgroup; with `unified`, the v2 one of a hybrid
/// layout too (runc mirrors the kubelet's cgroups there; we create none in it).
fn cgroup_hierarchies(unified: bool) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.is_dir() && (unified || !p.ends_with("unified"))).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Removes [`config::CGROUP_ROOT`] (deepest first) from every hierarchy; retried while the
/// kernel still counts dying tasks. Returns the directories that could not be removed.
pub fn remove_cgroups() -> Vec<PathBuf> {
    let mut left = Vec::new();
    for h in cgroup_hierarchies(true) {
        let root = h.join(config::CGROUP_ROOT);
        if !root.exists() {
            continue;
        }
        let mut dirs: Vec<PathBuf> = Vec::new();
        collect_dirs(&root, &mut dirs);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            let gone = wait_for(Duration::from_secs(5), Duration::from_millis(50), || {
                (std::fs::remove_dir(&d).is_ok() || !d.exists()).then_some(())
            });
            if gone.is_none() {
                left.push(d);
            }
        }
    }
    left
}

fn collect_dirs(d: &Path, out: &mut Vec<PathBuf>) {
    out.push(d.to_path_buf());
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Inner supervisor: PID 1 of the node's namespaces.

struct Proc {
    name: &'static str,
    pid: i32,
}

struct Inner<'a> {
    state: &'a Path,
    spec: NodeSpec,
    procs: Vec<Proc>,
}

impl Inner<'_> {
    fn spawn(&mut self, name: &'static str, bin: &Path, args: &[String]) -> Result<()> {
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(logfile(self.state, name)?)
            .stderr(logfile(self.state, name)?)
            .spawn()
            .map_err(|e| NodeError::env(format!("cannot start {name} ({}): {e}", bin.display())))?;
        log(&format!("started {name} (pid {})", child.id()));
        self.procs.push(Proc { name, pid: child.id() as i32 });
        Ok(())
    }

    /// Waits until `check` holds, failing early when a component died.
    fn await_ready(&mut self, what: &str, timeout: Duration, mut check: impl FnMut() -> bool) -> Result<()> {
        let start = Instant::now();
        loop {
            if let Some(dead) = self.reap() {
                return Err(NodeError::failed(format!("{dead} exited while waiting for {what}")));
            }
            if TERMINATE.load(Ordering::SeqCst) {
                return Err(NodeError::failed(format!("asked to stop while waiting for {what}")));
            }
            if check() {
                log(&format!("{what}: ready after {:.1} s", start.elapsed().as_secs_f64()));
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(NodeError::failed(format!("{what} not ready within {} s", timeout.as_secs())));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Reaps every exited process; returns the name of one of ours that exited.
    fn reap(&mut self) -> Option<&'static str> {
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        let mut ours = None;
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(s) => {
                    if let Some(pid) = s.pid() {
                        if let Some(i) = self.procs.iter().position(|p| p.pid == pid.as_raw()) {
                            let p = self.procs.remove(i);
                            log(&format!("{} exited: {s:?}", p.name));
                            ours = Some(p.name);
                        }
                    }
                }
            }
        }
        ours
    }

    fn start(&mut self) -> Result<()> {
        let st = self.state.to_path_buf();
        let spec = self.spec.clone();
        self.spawn("registry", &spec.registry_bin, &["serve".into(), st.join("registry.yml").display().to_string()])?;
        self.spawn("etcd", spec.bin("etcd"), &config::etcd_args(&st))?;
        self.await_ready("etcd", Duration::from_secs(30), || TcpStream::connect(("127.0.0.1", 2379)).is_ok())?;
        self.spawn("kube-apiserver", spec.bin("kube-apiserver"), &config::apiserver_args(&st))?;
        self.await_ready("kube-apiserver", Duration::from_secs(90), || self_readyz(&spec, &st))?;
        self.spawn(
            "kube-controller-manager",
            spec.bin("kube-controller-manager"),
            &config::controller_manager_args(&st),
        )?;
        self.spawn("kube-scheduler", spec.bin("kube-scheduler"), &config::scheduler_args(&st))?;
        let runc = spec.runc.display().to_string();
        let cni = spec.cni_bin.display().to_string();
        util::write(&st.join("containerd/config.toml"), config::containerd_config(&st, &runc, &cni))?;
        self.spawn(
            "containerd",
            spec.bin("containerd"),
            &["--config".into(), st.join("containerd/config.toml").display().to_string()],
        )?;
        let sock = config::containerd_socket(&st);
        let ctr = |args: &[&str]| {
            Command::new(spec.bin("ctr"))
                .arg("--address")
                .arg(&sock)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        self.await_ready("containerd", Duration::from_secs(30), || ctr(&["version"]))?;
        util::run(
            Command::new(spec.bin("ctr"))
                .arg("--address")
                .arg(&sock)
                .args(["-n", "k8s.io", "images", "import", "--local"])
                .arg(&spec.pause_archive),
        )?;
        log("pause image imported");
        self.spawn("kubelet", spec.bin("kubelet"), &config::kubelet_args(&st))?;
        self.spawn(
            "kube-proxy",
            spec.bin("kube-proxy"),
            &[format!("--config={}", st.join("kube-proxy.yaml").display())],
        )?;
        self.spawn("coredns", spec.bin("coredns"), &["-conf".into(), st.join("Corefile").display().to_string()])?;
        Ok(())
    }

    /// Stops every process in the namespace: our components with SIGTERM, then everything
    /// (containers included) with SIGKILL.
    fn stop(&mut self) {
        for p in self.procs.iter().rev() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.pid), nix::sys::signal::SIGTERM);
        }
        let _ = wait_for(Duration::from_secs(5), Duration::from_millis(50), || {
            self.reap();
            self.procs.is_empty().then_some(())
        });
        // PID 1 of a PID namespace: -1 reaches every other process in it.
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(-1), nix::sys::signal::SIGKILL);
        let _ = wait_for(Duration::from_secs(5), Duration::from_millis(20), || {
            matches!(
                nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG)),
                Err(nix::errno::Errno::ECHILD)
            )
            .then_some(())
        });
    }
}

fn self_readyz(spec: &NodeSpec, st: &Path) -> bool {
    Command::new(spec.bin("kubectl"))
        .arg(format!("--kubeconfig={}", st.join("kubeconfig/admin-internal").display()))
        .args(["get", "--raw", "/readyz"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Mounts, network and cgroup root of the node (inside its namespaces).
fn prepare(state: &Path) -> Result<()> {
    // Private /run and /var/log: containerd's shim sockets, runc state, the pod network
    // namespaces and the kubelet's /var/log/containers links stay inside and vanish with it.
    for dir in ["/run", "/var/log"] {
        util::run(Command::new("mount").args(["-t", "tmpfs", "-o", "mode=0755", "tmpfs", dir]))?;
    }
    // The kubelet wants its root directory on a shared mount for mount propagation.
    let kubelet = state.join("kubelet");
    util::mkdir(&kubelet)?;
    util::run(Command::new("mount").arg("--bind").arg(&kubelet).arg(&kubelet))?;
    util::run(Command::new("mount").arg("--make-rshared").arg(&kubelet))?;
    // Not `/sys/class/net/eth0`: /sys is the host's sysfs (mounted in the host's network
    // namespace), where an `eth0` usually exists — the node then went on before its veth end
    // arrived, failed (`Cannot find device "eth0"`), and took the pair with its namespace
    // (the outer side then saw `RTNETLINK answers: No such process`). /proc/self/net is this
    // namespace's.
    let eth0 = wait_for(Duration::from_secs(10), Duration::from_millis(20), || {
        let dev = std::fs::read_to_string("/proc/self/net/dev").unwrap_or_default();
        has_interface(&dev, "eth0").then_some(())
    });
    if eth0.is_none() {
        return Err(NodeError::failed("the veth end eth0 did not arrive in the node's namespace within 10 s"));
    }
    util::run(Command::new("ip").args(["link", "set", "lo", "up"]))?;
    util::run(Command::new("ip").args(["addr", "add", &format!("{NODE_IP}/24"), "dev", "eth0"]))?;
    util::run(Command::new("ip").args(["link", "set", "eth0", "up"]))?;
    util::run(Command::new("ip").args(["route", "add", "default", "via", config::HOST_IP]))?;
    for (key, value) in [("net/ipv4/ip_forward", "1"), ("net/bridge/bridge-nf-call-iptables", "1")] {
        let p = Path::new("/proc/sys").join(key);
        std::fs::write(&p, value).map_err(|e| NodeError::io("set", &p, e))?;
    }
    for h in cgroup_hierarchies(false) {
        let root = h.join(config::CGROUP_ROOT);
        util::mkdir(&root)?;
        if h.ends_with("cpuset") {
            for f in ["cpuset.cpus", "cpuset.mems"] {
                let v = std::fs::read_to_string(h.join(f)).unwrap_or_default();
                std::fs::write(root.join(f), v.trim()).map_err(|e| NodeError::io("write", &root.join(f), e))?;
            }
        }
    }
    Ok(())
}

/// Whether `/proc/<pid>/net/dev` text lists interface `name` (lines `  name: counters…`).
fn has_interface(net_dev: &str, name: &str) -> bool {
    net_dev.lines().skip(2).any(|l| l.split_once(':').is_some_and(|(n, _)| n.trim() == name))
}

/// The inner supervisor: PID 1 of the node's namespaces.
pub fn inner(args: &NodeArgs) -> Result<i32> {
    catch_termination();
    let state = args.state.as_path();
    // First: the outer supervisor waits for this before wiring the network (see `outer`).
    util::write(&state.join(INNER_HELLO), "")?;
    let spec = NodeSpec::read(state)?;
    let mut node = Inner { state, spec, procs: Vec::new() };
    let started = prepare(state).and_then(|_| node.start());
    if let Err(e) = started {
        log(&format!("cannot start the node: {e}"));
        node.stop();
        return Err(e);
    }
    log("all components started");
    util::write(&state.join("started"), "")?;
    let code = loop {
        if let Some(dead) = node.reap() {
            log(&format!("{dead} exited: stopping the node"));
            break 1;
        }
        if TERMINATE.load(Ordering::SeqCst) {
            break 0;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    node.stop();
    log("node stopped");
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The node waits for its veth end in its own namespace's interface list.
    #[test]
    fn interfaces_are_read_from_proc_net_dev() {
        let dev = "Inter-|   Receive |  Transmit\n face |bytes packets|bytes packets\n    lo: 1 2 3\n  eth0: 4 5 6\nveth1eth0: 7\n";
        assert!(has_interface(dev, "eth0") && has_interface(dev, "lo"));
        assert!(!has_interface(dev, "eth1") && !has_interface(dev, "eth"));
        assert!(!has_interface(&dev.replace("  eth0: 4 5 6\n", ""), "eth0"));
        // This process's own namespace: its loopback is listed.
        assert!(has_interface(&std::fs::read_to_string("/proc/self/net/dev").unwrap(), "lo"));
    }

    /// A step that fails twice (the veth race) succeeds on the third attempt; one that keeps
    /// failing returns its last error after the bounded number of attempts.
    #[test]
    fn retry_is_bounded_and_returns_the_last_error() {
        let mut calls = Vec::new();
        let r = retry(3, Duration::ZERO, |n| {
            calls.push(n);
            if n < 3 {
                Err(NodeError::failed(format!("no such process ({n})")))
            } else {
                Ok(n)
            }
        });
        assert_eq!(r.unwrap(), 3);
        assert_eq!(calls, [1, 2, 3]);
        let mut count = 0;
        let r: Result<()> = retry(3, Duration::ZERO, |n| {
            count += 1;
            Err(NodeError::failed(format!("attempt {n}")))
        });
        assert_eq!(count, 3);
        assert!(r.unwrap_err().to_string().contains("attempt 3"));
    }
}
