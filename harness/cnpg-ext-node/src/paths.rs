//! Where things live: `<cache>/k8s/` (the harness cache, `CNPG_EXT_HARNESS_CACHE`, else
//! `$XDG_CACHE_HOME/cnpg-ext-harness`, else `~/.cache/cnpg-ext-harness`).
//!
//! * `src/<component>-<key>/`, `bin/<component>-<key>/` — build modules and binaries;
//! * `go-build/` — the Go build cache (`GOCACHE`);
//! * `images/` — OCI layouts built for the node (pause, operator);
//! * `node/` — the running node's state (PKI, configs, logs, data); `down` removes it.

use crate::{NodeError, Result};
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct Paths {
    pub root: PathBuf,
}

/// The node's state directory can be moved with this variable (tests).
pub const ENV_STATE: &str = "CNPG_EXT_NODE_STATE";

impl Paths {
    pub fn from_env() -> Result<Self> {
        let cache = cnpg_ext_pg::ProvisionOptions::from_env().cache_dir.ok_or_else(|| {
            NodeError::env("no cache directory: set CNPG_EXT_HARNESS_CACHE (or HOME / XDG_CACHE_HOME)")
        })?;
        Ok(Paths { root: cache.join("k8s") })
    }
    pub fn src(&self, component: &str, key: &str) -> PathBuf {
        self.root.join("src").join(format!("{component}-{key}"))
    }
    pub fn bin(&self, component: &str, key: &str) -> PathBuf {
        self.root.join("bin").join(format!("{component}-{key}"))
    }
    pub fn gocache(&self) -> PathBuf {
        self.root.join("go-build")
    }
    pub fn images(&self) -> PathBuf {
        self.root.join("images")
    }
    pub fn state(&self) -> PathBuf {
        match std::env::var_os(ENV_STATE).filter(|v| !v.is_empty()) {
            Some(p) => PathBuf::from(p),
            None => self.root.join("node"),
        }
    }
}
