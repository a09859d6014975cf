//! The Go build modules (`k8s/build/<component>/`, embedded at compile time) and their
//! cached build.
//!
//! Cache key: the first 16 hex digits of the sha256 of a format tag, the Go version
//! (`go env GOVERSION`), the build flags and every file (name, length, bytes) of the module.
//! `bin/<component>-<key>/.complete` marks a finished build; a build goes to a temporary
//! directory renamed into place, so an interrupted build is never taken for a cached one.

use crate::paths::Paths;
use crate::util;
use crate::{NodeError, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// One command a component builds: the Go package, the file name `go build -o <dir>/` gives
/// it, and the name we install it under.
#[derive(Debug)]
pub struct Tool {
    pub package: &'static str,
    pub built_as: &'static str,
    pub binary: &'static str,
}

#[derive(Debug)]
pub struct Component {
    pub name: &'static str,
    pub files: &'static [(&'static str, &'static str)],
    pub tools: &'static [Tool],
    /// `-ldflags` (Kubernetes: the version the binaries report).
    pub ldflags: &'static str,
}

macro_rules! module_files {
    ($c:literal: $($f:literal),+) => {
        &[$(($f, include_str!(concat!("../../../k8s/build/", $c, "/", $f)))),+]
    };
}

const fn tool(package: &'static str, built_as: &'static str, binary: &'static str) -> Tool {
    Tool { package, built_as, binary }
}

/// The Kubernetes release (must match `k8s/build/kubernetes/go.mod`).
pub const KUBERNETES_VERSION: &str = "v1.36.1";
/// The CloudNativePG release built (must match `k8s/build/cnpg/go.mod`).
pub const CNPG_VERSION: &str = "1.30.0";

const K8S_LDFLAGS: &str = "-X k8s.io/component-base/version.gitVersion=v1.36.1 \
-X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=36 \
-X k8s.io/component-base/version.gitTreeState=clean \
-X k8s.io/client-go/pkg/version.gitVersion=v1.36.1 \
-X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=36";

pub const COMPONENTS: &[Component] = &[
    Component {
        name: "kubernetes",
        files: module_files!("kubernetes": "go.mod", "go.sum"),
        tools: &[
            tool("k8s.io/kubernetes/cmd/kube-apiserver", "kube-apiserver", "kube-apiserver"),
            tool("k8s.io/kubernetes/cmd/kube-controller-manager", "kube-controller-manager", "kube-controller-manager"),
            tool("k8s.io/kubernetes/cmd/kube-scheduler", "kube-scheduler", "kube-scheduler"),
            tool("k8s.io/kubernetes/cmd/kubelet", "kubelet", "kubelet"),
            tool("k8s.io/kubernetes/cmd/kube-proxy", "kube-proxy", "kube-proxy"),
            tool("k8s.io/kubernetes/cmd/kubectl", "kubectl", "kubectl"),
        ],
        ldflags: K8S_LDFLAGS,
    },
    Component {
        name: "etcd",
        files: module_files!("etcd": "go.mod", "go.sum"),
        tools: &[tool("go.etcd.io/etcd/server/v3", "server", "etcd")],
        ldflags: "",
    },
    Component {
        name: "containerd",
        files: module_files!("containerd": "go.mod", "go.sum"),
        tools: &[
            tool("github.com/containerd/containerd/v2/cmd/containerd", "containerd", "containerd"),
            tool(
                "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2",
                "containerd-shim-runc-v2",
                "containerd-shim-runc-v2",
            ),
            tool("github.com/containerd/containerd/v2/cmd/ctr", "ctr", "ctr"),
        ],
        ldflags: "",
    },
    Component {
        name: "cnpg",
        files: module_files!("cnpg": "go.mod", "go.sum"),
        tools: &[tool("github.com/cloudnative-pg/cloudnative-pg/cmd/manager", "manager", "manager")],
        ldflags: "",
    },
    Component {
        name: "coredns",
        files: module_files!("coredns": "go.mod", "go.sum"),
        tools: &[tool("github.com/coredns/coredns", "coredns", "coredns")],
        ldflags: "",
    },
    Component {
        name: "cri-tools",
        files: module_files!("cri-tools": "go.mod", "go.sum"),
        tools: &[tool("sigs.k8s.io/cri-tools/cmd/crictl", "crictl", "crictl")],
        ldflags: "",
    },
    Component {
        name: "pause",
        files: module_files!("pause": "go.mod", "go.sum", "main.go"),
        tools: &[tool("cnpg-ext-harness/k8s/build/pause", "pause", "pause")],
        ldflags: "",
    },
];

/// The flags every build uses (part of the key).
const GO_FLAGS: &[&str] = &["-trimpath"];

pub fn find(name: &str) -> Option<&'static Component> {
    COMPONENTS.iter().find(|c| c.name == name)
}

/// The `go` binary: `CNPG_EXT_NODE_GO`, else `go` on PATH, else `/usr/local/go/bin/go`.
pub fn go_binary() -> PathBuf {
    if let Some(g) = std::env::var_os("CNPG_EXT_NODE_GO").filter(|v| !v.is_empty()) {
        return PathBuf::from(g);
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("go")).find(|g| g.is_file()))
        .unwrap_or(None);
    on_path.unwrap_or_else(|| PathBuf::from("/usr/local/go/bin/go"))
}

pub fn go_version(go: &Path) -> Result<String> {
    let out = util::run(Command::new(go).args(["env", "GOVERSION"])).map_err(|e| {
        NodeError::env(format!(
            "no usable Go toolchain at {} ({e}); install Go >= 1.26 or set CNPG_EXT_NODE_GO",
            go.display()
        ))
    })?;
    Ok(out.trim().to_string())
}

/// The cache key of `c` built with Go `go_version`.
pub fn key(c: &Component, go_version: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"cnpg-ext-node go build v1\0");
    h.update(go_version.as_bytes());
    h.update(b"\0");
    for f in GO_FLAGS {
        h.update(f.as_bytes());
        h.update(b"\0");
    }
    h.update(c.ldflags.as_bytes());
    h.update(b"\0");
    for (name, text) in c.files {
        h.update(name.as_bytes());
        h.update(b"\0");
        h.update(text.len().to_string().as_bytes());
        h.update(b"\0");
        h.update(text.as_bytes());
    }
    for t in c.tools {
        h.update(t.package.as_bytes());
        h.update(b"\0");
        h.update(t.binary.as_bytes());
        h.update(b"\0");
    }
    hex::encode(&h.finalize()[..8])
}

/// Where a component's binaries are, once built.
#[derive(Debug, Clone)]
pub struct Built {
    pub name: &'static str,
    pub dir: PathBuf,
    pub cached: bool,
    pub seconds: f64,
}

/// Builds `c` unless its cached build exists.
pub fn build(paths: &Paths, go: &Path, go_version: &str, c: &Component) -> Result<Built> {
    let start = Instant::now();
    let key = key(c, go_version);
    let dir = paths.bin(c.name, &key);
    if dir.join(".complete").is_file() && c.tools.iter().all(|t| dir.join(t.binary).is_file()) {
        return Ok(Built { name: c.name, dir, cached: true, seconds: start.elapsed().as_secs_f64() });
    }
    let src = paths.src(c.name, &key);
    for (name, text) in c.files {
        util::write(&src.join(name), text)?;
    }
    let tmp = dir.with_file_name(format!("{}-{key}.tmp-{}", c.name, std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    util::mkdir(&tmp)?;
    let log = paths.root.join("bin").join(format!("{}-{key}.log", c.name));
    let log_file = std::fs::File::create(&log).map_err(|e| NodeError::io("create", &log, e))?;
    let mut cmd = Command::new(go);
    cmd.current_dir(&src)
        .arg("build")
        .args(GO_FLAGS)
        .arg(format!("-ldflags={}", c.ldflags))
        .arg("-o")
        .arg(format!("{}/", tmp.display()))
        .args(c.tools.iter().map(|t| t.package))
        .env("GOCACHE", paths.gocache())
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0")
        .env("GOFLAGS", "")
        .stdout(log_file.try_clone().map_err(|e| NodeError::io("open", &log, e))?)
        .stderr(log_file);
    eprintln!("k8s build: {} ({}) ...", c.name, util::describe(&cmd));
    let status = cmd.status().map_err(|e| NodeError::env(format!("cannot run {}: {e}", go.display())))?;
    if !status.success() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(NodeError::failed(format!(
            "go build of {} failed ({status}); module in {}, log {}:\n{}",
            c.name,
            src.display(),
            log.display(),
            util::tail(&log, 20)
        )));
    }
    for t in c.tools {
        if t.built_as != t.binary {
            std::fs::rename(tmp.join(t.built_as), tmp.join(t.binary))
                .map_err(|e| NodeError::io("rename the built", &tmp.join(t.built_as), e))?;
        }
    }
    util::write(&tmp.join(".complete"), go_version)?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir).map_err(|e| NodeError::io("move into place", &dir, e))?;
    Ok(Built { name: c.name, dir, cached: false, seconds: start.elapsed().as_secs_f64() })
}

/// Builds every component (cached ones are skipped); returns them in [`COMPONENTS`] order.
pub fn build_all(paths: &Paths) -> Result<Vec<Built>> {
    let go = go_binary();
    let version = go_version(&go)?;
    COMPONENTS.iter().map(|c| build(paths, &go, &version, c)).collect()
}

/// The binary `name` among the built components.
pub fn binary(built: &[Built], name: &str) -> PathBuf {
    for b in built {
        let c = find(b.name).expect("a built component is known");
        if c.tools.iter().any(|t| t.binary == name) {
            return b.dir.join(name);
        }
    }
    panic!("no component builds {name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_changes_with_go_version_and_files() {
        let k = find("pause").unwrap();
        let a = key(k, "go1.26.8");
        assert_eq!(a.len(), 16);
        assert_eq!(a, key(k, "go1.26.8"));
        assert_ne!(a, key(k, "go1.26.9"));
        assert_ne!(a, key(find("etcd").unwrap(), "go1.26.8"));
    }

    #[test]
    fn every_module_declares_the_tools_we_install() {
        for c in COMPONENTS {
            let gomod = c.files.iter().find(|(n, _)| *n == "go.mod").unwrap().1;
            for t in c.tools {
                if c.name != "pause" {
                    assert!(gomod.contains(t.package), "{}: go.mod has no tool {}", c.name, t.package);
                }
            }
        }
        let k = find("kubernetes").unwrap().files[0].1;
        assert!(k.contains(&format!("k8s.io/kubernetes {KUBERNETES_VERSION}")));
        let c = find("cnpg").unwrap().files[0].1;
        assert!(c.contains(&format!("github.com/cloudnative-pg/cloudnative-pg v{CNPG_VERSION}")));
    }
}
