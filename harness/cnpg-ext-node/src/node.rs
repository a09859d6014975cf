//! `k8s up`, `k8s status`, `k8s down`.

use crate::args::UpArgs;
use crate::components::{self, CNPG_VERSION};
use crate::config::{self, NODE_IP};
use crate::paths::Paths;
use crate::supervisor::{self, NodeSpec, INNER_PID, SUPERVISOR_PID};
use crate::util::{self, wait_for};
use crate::{images, operand, pki, provisioner, NodeError, Result};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The operator pins (`kind-config/cnpg-versions.yaml`), compiled in.
const CNPG_VERSIONS: &str = include_str!("../../../kind-config/cnpg-versions.yaml");

/// The Debian packages the node uses from the host.
const HOST_TOOLS: &[(&str, &str)] = &[
    ("/usr/sbin/runc", "runc"),
    ("/usr/lib/cni/bridge", "containernetworking-plugins"),
    ("/usr/lib/cni/host-local", "containernetworking-plugins"),
    ("/usr/lib/cni/loopback", "containernetworking-plugins"),
    ("/usr/lib/cni/portmap", "containernetworking-plugins"),
    ("/usr/bin/docker-registry", "docker-registry"),
    ("/usr/bin/unshare", "util-linux"),
    ("/usr/sbin/ip", "iproute2"),
    ("/usr/sbin/iptables", "iptables"),
];

fn preflight() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err(NodeError::env("k8s up needs root (network namespace, mounts, cgroups)"));
    }
    let missing: Vec<String> = HOST_TOOLS
        .iter()
        .filter(|(p, _)| !Path::new(p).exists())
        .map(|(p, pkg)| format!("{p} (Debian package {pkg})"))
        .collect();
    if !missing.is_empty() {
        return Err(NodeError::env(format!("missing on this host: {}; install them and retry", missing.join(", "))));
    }
    Ok(())
}

/// The sha256 pinned for `version` in `kind-config/cnpg-versions.yaml`.
pub fn pinned_sha256(versions_yaml: &str, version: &str) -> Option<String> {
    let mut in_entry = false;
    for line in versions_yaml.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("- version:") {
            in_entry = v.trim().trim_matches('"') == version;
        } else if in_entry {
            if let Some(h) = t.strip_prefix("sha256:") {
                let h = h.trim();
                return (h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())).then(|| h.to_string());
            }
        }
    }
    None
}

/// `releases/cnpg-<v>.yaml` from the Go module cache (downloaded with `go mod download` if
/// absent), refused unless its sha256 equals the pin.
fn release_manifest(paths: &Paths) -> Result<PathBuf> {
    let go = components::go_binary();
    let modcache = util::run(Command::new(&go).args(["env", "GOMODCACHE"]))?.trim().to_string();
    let file = PathBuf::from(modcache)
        .join(format!("github.com/cloudnative-pg/cloudnative-pg@v{CNPG_VERSION}/releases/cnpg-{CNPG_VERSION}.yaml"));
    if !file.is_file() {
        let c = components::find("cnpg").expect("cnpg component");
        let src = paths.src("cnpg", &components::key(c, &components::go_version(&go)?));
        util::run(Command::new(&go).current_dir(&src).env("GOTOOLCHAIN", "local").args([
            "mod",
            "download",
            &format!("github.com/cloudnative-pg/cloudnative-pg@v{CNPG_VERSION}"),
        ]))?;
    }
    let bytes = std::fs::read(&file).map_err(|e| NodeError::io("read the operator manifest", &file, e))?;
    let got = hex::encode(Sha256::digest(&bytes));
    let pin = pinned_sha256(CNPG_VERSIONS, CNPG_VERSION).ok_or_else(|| {
        NodeError::input(format!("kind-config/cnpg-versions.yaml pins no sha256 for {CNPG_VERSION}; pin it first"))
    })?;
    if got != pin {
        return Err(NodeError::env(format!(
            "{}: sha256 {got} differs from the pin {pin} in kind-config/cnpg-versions.yaml; refusing to install it",
            file.display()
        )));
    }
    Ok(file)
}

fn kubectl(spec: &NodeSpec, state: &Path) -> Command {
    let mut c = Command::new(spec.bin("kubectl"));
    c.arg(format!("--kubeconfig={}", state.join("kubeconfig/admin").display()));
    c
}

fn quiet_ok(mut c: Command) -> bool {
    c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

fn apply_stdin(spec: &NodeSpec, state: &Path, args: &[&str], input: &[u8]) -> Result<String> {
    let mut c = kubectl(spec, state);
    c.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().map_err(|e| NodeError::env(format!("cannot run kubectl: {e}")))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(input)
        .map_err(|e| NodeError::failed(format!("kubectl stdin: {e}")))?;
    let out = child.wait_with_output().map_err(|e| NodeError::failed(format!("kubectl: {e}")))?;
    if !out.status.success() {
        return Err(NodeError::failed(format!(
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A minimal Cluster the operator's validating webhook must accept (server-side dry run).
const PROBE_CLUSTER: &str = r#"{"apiVersion":"postgresql.cnpg.io/v1","kind":"Cluster",
"metadata":{"name":"cnpg-ext-node-probe","namespace":"default"},
"spec":{"instances":1,"storage":{"size":"1Gi"}}}"#;

pub fn up(args: &UpArgs) -> Result<i32> {
    let t0 = Instant::now();
    preflight()?;
    let paths = Paths::from_env()?;
    let state = paths.state();
    if let Some(pid) = supervisor::read_pid(&state, SUPERVISOR_PID).filter(|p| util::alive(*p)) {
        return Err(NodeError::input(format!(
            "a node is already running (supervisor pid {pid}, state {}); run `k8s down` first",
            state.display()
        )));
    }
    if state.exists() {
        eprintln!("k8s up: removing what a previous node left in {}", state.display());
        teardown(&state)?;
    }
    let built = components::build_all(&paths)?;
    let t_build = t0.elapsed();
    let manifest = release_manifest(&paths)?;
    let go_version = components::go_version(&components::go_binary())?;
    let key_of = |n: &str| components::key(components::find(n).expect("component"), &go_version);
    let pause = images::pause_image(&paths.images(), &key_of("pause"), &components::binary(&built, "pause"))?;
    let operator =
        images::operator_image(&paths.images(), &key_of("cnpg"), CNPG_VERSION, &components::binary(&built, "manager"))?;
    let pg = operand::operand_postgres(args.operand_pg_config.as_deref())?;
    let operand = match operand::unusable_reason(&pg) {
        None => Some(operand::operand_image(&paths.images(), &pg)?),
        Some(why) => {
            eprintln!("k8s up: WARNING: the operand image {} is not served: {why}", operand::OPERAND_REFERENCE);
            None
        }
    };

    // State directory: PKI, kubeconfigs, configuration files.
    util::mkdir(&state)?;
    pki::generate(&state.join("pki"))?;
    let host_server = format!("https://127.0.0.1:{}", args.api_port);
    util::write(&state.join("kubeconfig/admin"), config::kubeconfig(&state, &host_server, "admin"))?;
    for (file, client) in [
        ("admin-internal", "admin"),
        ("controller-manager", "controller-manager"),
        ("scheduler", "scheduler"),
        ("kubelet", "kubelet-client"),
        ("kube-proxy", "kube-proxy"),
    ] {
        util::write(
            &state.join("kubeconfig").join(file),
            config::kubeconfig(&state, &config::internal_server(), client),
        )?;
    }
    util::write(&state.join("kubelet.yaml"), config::kubelet_config(&state))?;
    util::write(&state.join("kube-proxy.yaml"), config::kube_proxy_config(&state))?;
    util::write(&state.join("Corefile"), config::corefile(&state))?;
    util::write(&state.join("registry.yml"), config::registry_config(&state))?;
    util::write(&state.join("resolv.conf"), config::resolv_conf())?;
    util::write(&state.join("cni/net.d/10-cnpg-ext-node.conflist"), config::cni_conflist(&state))?;
    for host in config::MIRRORED_HOSTS {
        util::write(&state.join("containerd/certs.d").join(host).join("hosts.toml"), config::hosts_toml(host))?;
    }
    util::write(
        &state.join(format!("containerd/certs.d/localhost:{}/hosts.toml", args.registry_port)),
        config::hosts_toml_local(),
    )?;
    let mut bins = std::collections::BTreeMap::new();
    for c in components::COMPONENTS {
        for t in c.tools {
            bins.insert(t.binary.to_string(), components::binary(&built, t.binary));
        }
    }
    let spec = NodeSpec {
        bins,
        api_port: args.api_port,
        registry_port: args.registry_port,
        pause_archive: pause.archive.clone(),
        runc: "/usr/sbin/runc".into(),
        cni_bin: "/usr/lib/cni".into(),
        registry_bin: "/usr/bin/docker-registry".into(),
    };
    util::write(&state.join("node.json"), serde_json::to_vec_pretty(&spec).expect("spec serializes"))?;

    let served: Vec<&images::NodeImage> = std::iter::once(&operator).chain(operand.as_ref()).collect();
    let result = start_and_wait(args, &state, &spec, &served, &manifest, t0);
    match result {
        Ok(()) => {
            eprintln!("k8s up: components {:.1} s; total {:.1} s", t_build.as_secs_f64(), t0.elapsed().as_secs_f64());
            println!("{}", state.join("kubeconfig/admin").display());
            Ok(0)
        }
        Err(e) => {
            if args.keep {
                eprintln!(
                    "k8s up: failed; the node is left running (--keep): logs in {}",
                    state.join("logs").display()
                );
            } else {
                let _ = teardown(&state);
            }
            Err(e)
        }
    }
}

fn supervisor_logs(state: &Path) -> String {
    let mut s = String::new();
    for f in ["supervisor", "inner"] {
        s.push_str(&format!("\n--- logs/{f}.log ---\n{}", util::tail(&state.join(format!("logs/{f}.log")), 15)));
    }
    s
}

fn start_and_wait(
    args: &UpArgs,
    state: &Path,
    spec: &NodeSpec,
    served: &[&images::NodeImage],
    manifest: &Path,
    t0: Instant,
) -> Result<()> {
    let deadline = t0 + Duration::from_secs(args.timeout);
    let exe = std::env::current_exe().map_err(|e| NodeError::env(format!("cannot find this executable: {e}")))?;
    let log = std::fs::File::create(state.join("logs/supervisor.log"))
        .or_else(|_| {
            util::mkdir(&state.join("logs")).ok();
            std::fs::File::create(state.join("logs/supervisor.log"))
        })
        .map_err(|e| NodeError::io("create", &state.join("logs/supervisor.log"), e))?;
    let mut cmd = Command::new(&exe);
    cmd.args(["k8s", "__node", "--state"])
        .arg(state)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| NodeError::failed(e.to_string()))?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| NodeError::env(format!("cannot start the supervisor: {e}")))?;
    let sup = child.id() as i32;
    // Not waited for: it outlives `up`. Reaped by init when `up` exits.
    std::mem::forget(child);
    let t_start = Instant::now();
    let left = || deadline.saturating_duration_since(Instant::now());
    let dead =
        |what: &str| NodeError::failed(format!("the node stopped while waiting for {what}{}", supervisor_logs(state)));
    let step = |what: &str, check: &mut dyn FnMut() -> bool| -> Result<f64> {
        let ok = wait_for(left(), Duration::from_millis(250), || {
            if !util::alive(sup) {
                return Some(false);
            }
            check().then_some(true)
        });
        match ok {
            Some(true) => {
                let s = t_start.elapsed().as_secs_f64();
                eprintln!("k8s up: {what} after {s:.1} s");
                Ok(s)
            }
            Some(false) => Err(dead(what)),
            None => Err(NodeError::failed(format!(
                "timed out after {} s waiting for {what}{}",
                args.timeout,
                supervisor_logs(state)
            ))),
        }
    };
    step("API server ready", &mut || {
        let mut c = kubectl(spec, state);
        c.args(["get", "--raw", "/readyz"]);
        quiet_ok(c)
    })?;
    step("node Ready", &mut || {
        let mut c = kubectl(spec, state);
        c.args(["wait", "--for=condition=Ready", &format!("node/{}", config::NODE_NAME), "--timeout=2s"]);
        quiet_ok(c)
    })?;
    let registry = format!("127.0.0.1:{}", args.registry_port);
    for image in served {
        images::push(&registry, &image.layout, &image.reference)?;
        eprintln!("k8s up: pushed {} to the node's registry", image.reference);
    }
    apply_stdin(spec, state, &["apply", "-f", "-"], provisioner::storage_class().to_string().as_bytes())?;
    apply_stdin(spec, state, &["apply", "-f", "-"], config::local_registry_hosting(args.registry_port).as_bytes())?;
    let mut c = kubectl(spec, state);
    c.args(["apply", "--server-side", "--force-conflicts", "-f"]).arg(manifest);
    util::run(&mut c)?;
    step("operator deployment available", &mut || {
        let mut c = kubectl(spec, state);
        c.args([
            "-n",
            "cnpg-system",
            "wait",
            "--for=condition=Available",
            "deployment/cnpg-controller-manager",
            "--timeout=2s",
        ]);
        quiet_ok(c)
    })?;
    step("operator webhook answering", &mut || {
        apply_stdin(spec, state, &["create", "--dry-run=server", "-f", "-"], PROBE_CLUSTER.as_bytes()).is_ok()
    })?;
    Ok(())
}

pub fn status() -> Result<i32> {
    let paths = Paths::from_env()?;
    let state = paths.state();
    let Some(pid) = supervisor::read_pid(&state, SUPERVISOR_PID).filter(|p| util::alive(*p)) else {
        println!("not running");
        return Ok(1);
    };
    let spec = NodeSpec::read(&state)?;
    let mut c = kubectl(&spec, &state);
    c.args(["get", &format!("node/{}", config::NODE_NAME), "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.status.nodeInfo.kubeletVersion} {.status.nodeInfo.containerRuntimeVersion}"]);
    let node = util::run(&mut c).unwrap_or_default();
    let mut o = kubectl(&spec, &state);
    o.args([
        "-n",
        "cnpg-system",
        "get",
        "deployment/cnpg-controller-manager",
        "-o",
        "jsonpath={.status.availableReplicas}",
    ]);
    let operator = util::run(&mut o).unwrap_or_default();
    let ready = node.starts_with("True ");
    let operator_ok = operator.trim() == "1";
    println!("supervisor pid {pid}; inner pid {}", supervisor::read_pid(&state, INNER_PID).unwrap_or(0));
    println!("node {}: {}", config::NODE_NAME, if node.is_empty() { "unreachable".into() } else { node.clone() });
    println!("operator: {}", if operator_ok { "available" } else { "not available" });
    println!("debug: nsenter -t {} -n -m -p <cmd>", supervisor::read_pid(&state, INNER_PID).unwrap_or(0));
    println!("{}", state.join("kubeconfig/admin").display());
    Ok(if ready && operator_ok { 0 } else { 1 })
}

pub fn push(args: &crate::args::PushArgs) -> Result<i32> {
    let state = Paths::from_env()?.state();
    if supervisor::read_pid(&state, SUPERVISOR_PID).filter(|p| util::alive(*p)).is_none() {
        return Err(NodeError::input("no node is running; run `k8s up` first"));
    }
    if args.reference.is_some() && args.layouts.len() != 1 {
        return Err(NodeError::input("--reference names one image: give exactly one layout with it"));
    }
    let spec = NodeSpec::read(&state)?;
    let registry = format!("127.0.0.1:{}", spec.registry_port);
    if args.layouts.is_empty() && args.scenarios.is_empty() {
        return Err(NodeError::input("nothing to push: give OCI layouts or --scenario DIR"));
    }
    for layout in &args.layouts {
        let reference = match &args.reference {
            Some(r) => r.clone(),
            None => images::layout_reference(layout)?,
        };
        images::push(&registry, layout, &reference)?;
        println!("{reference}");
    }
    for dir in &args.scenarios {
        for (reference, layout, _keep) in images::scenario_images(dir)? {
            images::push(&registry, &layout, &reference)?;
            println!("{reference}");
        }
    }
    Ok(0)
}

pub fn down() -> Result<i32> {
    let paths = Paths::from_env()?;
    let state = paths.state();
    if !nix::unistd::geteuid().is_root() {
        return Err(NodeError::env("k8s down needs root"));
    }
    teardown(&state)?;
    println!("down");
    Ok(0)
}

/// Stops the supervisor (SIGTERM, then SIGKILL after 40 s) and removes what the node left:
/// cgroups, the host veth, the state directory. Errors name what is left.
pub fn teardown(state: &Path) -> Result<()> {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let sup = supervisor::read_pid(state, SUPERVISOR_PID).filter(|p| util::alive(*p));
    let inner = supervisor::read_pid(state, INNER_PID).filter(|p| util::alive(*p));
    if let Some(pid) = sup {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        if wait_for(Duration::from_secs(40), Duration::from_millis(50), || (!util::alive(pid)).then_some(())).is_none()
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    if let Some(pid) = inner {
        // A supervisor that died alone left `unshare` running; PID 1's death ends the rest.
        if util::alive(pid) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = wait_for(Duration::from_secs(10), Duration::from_millis(50), || (!util::alive(pid)).then_some(()));
    }
    let left = supervisor::remove_cgroups();
    if Path::new("/sys/class/net").join(config::HOST_VETH).exists() {
        let _ = Command::new("ip").args(["link", "del", config::HOST_VETH]).status();
    }
    if state.exists() {
        std::fs::remove_dir_all(state).map_err(|e| NodeError::io("remove the node's state", state, e))?;
    }
    if !left.is_empty() {
        return Err(NodeError::failed(format!(
            "cgroups still in use after the node stopped: {}",
            left.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        )));
    }
    let _ = NODE_IP;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_is_read_for_the_built_release() {
        let pin = pinned_sha256(CNPG_VERSIONS, CNPG_VERSION).unwrap();
        assert_eq!(pin.len(), 64);
        assert_eq!(pinned_sha256(CNPG_VERSIONS, "0.0.0"), None);
        let y = "versions:\n  - version: \"1.0.0\"\n    sha256: null\n";
        assert_eq!(pinned_sha256(y, "1.0.0"), None);
    }
}
