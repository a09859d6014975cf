//! The real node, end to end (ignored: it builds Kubernetes from Go modules when the cache is
//! cold and needs root). `cargo test -p cnpg-ext-node -- --ignored`.
//!
//! Skip rule (the project's one rule, as `harness/cnpg-ext-harness/tests/common.rs`): a test
//! that cannot run here says so on stderr and passes, unless `CI=true` or
//! `CNPG_EXT_HARNESS_REQUIRE_K8S` is set (then the skip is a failure).

use std::path::{Path, PathBuf};
use std::process::Command;

const REQUIRE: &str = "CNPG_EXT_HARNESS_REQUIRE_K8S";

/// The project's one skip rule (`cnpg_ext_testutil::cannot_run`).
fn cannot_run(why: &str) {
    cnpg_ext_testutil::cannot_run(why, Some(REQUIRE));
}

fn node() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cnpg-ext-node"))
}

fn usable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root".into());
    }
    for p in ["/usr/sbin/runc", "/usr/lib/cni/bridge", "/usr/bin/docker-registry", "/usr/bin/unshare"] {
        if !Path::new(p).exists() {
            return Some(format!("{p} is missing"));
        }
    }
    if Command::new(cnpg_ext_node::components::go_binary()).arg("version").output().is_err() {
        return Some("no Go toolchain".into());
    }
    None
}

fn state_dir() -> PathBuf {
    cnpg_ext_node::paths::Paths::from_env().unwrap().state()
}

/// Everything a node could leave behind, described.
fn leftovers(state: &Path) -> Vec<String> {
    let mut v = Vec::new();
    let needle = state.display().to_string();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(&needle) {
            v.push(format!("process {pid}: {cmd}"));
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for l in mounts.lines().filter(|l| l.contains(&needle)) {
        v.push(format!("mount: {l}"));
    }
    if Path::new("/sys/class/net").join(cnpg_ext_node::config::HOST_VETH).exists() {
        v.push(format!("veth {}", cnpg_ext_node::config::HOST_VETH));
    }
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let c = h.path().join(cnpg_ext_node::config::CGROUP_ROOT);
        if c.exists() {
            v.push(format!("cgroup {}", c.display()));
        }
    }
    if state.exists() {
        v.push(format!("state directory {}", state.display()));
    }
    let routes = Command::new("ip").args(["route", "show", cnpg_ext_node::config::POD_CIDR]).output().unwrap();
    if !routes.stdout.is_empty() {
        v.push(format!("route {}", String::from_utf8_lossy(&routes.stdout).trim()));
    }
    v
}

#[test]
#[ignore = "starts a real single-node Kubernetes (root, Go toolchain, minutes when cold)"]
fn up_reaches_ready_and_down_leaves_nothing() {
    if let Some(why) = usable() {
        return cannot_run(&why);
    }
    let state = state_dir();
    let up = node().args(["k8s", "up"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&up.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&up.stderr).into_owned();
    let kubeconfig = stdout.lines().last().unwrap_or("").to_string();
    let ok = up.status.success() && Path::new(&kubeconfig).is_file();
    let status = node().args(["k8s", "status"]).output().unwrap();
    let down = node().args(["k8s", "down"]).output().unwrap();
    let left = leftovers(&state);
    assert!(ok, "k8s up failed ({}):\n{stdout}\n{stderr}", up.status);
    assert!(status.status.success(), "k8s status: {}", String::from_utf8_lossy(&status.stdout));
    assert!(down.status.success(), "k8s down: {}", String::from_utf8_lossy(&down.stderr));
    assert!(left.is_empty(), "left behind after down:\n{}", left.join("\n"));
}

#[test]
#[ignore = "starts a real single-node Kubernetes (root, Go toolchain, minutes when cold)"]
fn killed_supervisor_takes_the_node_with_it() {
    if let Some(why) = usable() {
        return cannot_run(&why);
    }
    let state = state_dir();
    let up = node().args(["k8s", "up"]).output().unwrap();
    assert!(up.status.success(), "k8s up failed: {}", String::from_utf8_lossy(&up.stderr));
    let pid: i32 = std::fs::read_to_string(state.join("supervisor.pid")).unwrap().trim().parse().unwrap();
    let inner: i32 = std::fs::read_to_string(state.join("inner.pid")).unwrap().trim().parse().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL).unwrap();
    // The node's PID 1 dies with the supervisor (parent-death signal), and with it every
    // process of the node's PID namespace.
    let gone = (0..200).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        !Path::new(&format!("/proc/{inner}")).exists()
    });
    let processes: Vec<String> = leftovers(&state).into_iter().filter(|l| l.starts_with("process")).collect();
    let down = node().args(["k8s", "down"]).output().unwrap();
    assert!(gone, "the node's PID 1 ({inner}) outlived its SIGKILLed supervisor");
    assert!(processes.is_empty(), "processes outlived the supervisor:\n{}", processes.join("\n"));
    assert!(down.status.success(), "k8s down: {}", String::from_utf8_lossy(&down.stderr));
    let left = leftovers(&state);
    assert!(left.is_empty(), "left behind after down:\n{}", left.join("\n"));
}
