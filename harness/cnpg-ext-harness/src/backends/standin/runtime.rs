//! What the stand-in operator needs from the place instances run: start one from its plan,
//! stop it, tell its identity, reach its socket, observe it. Nothing here decides anything.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use cnpg_ext_model::backend::{BackendError, InstanceObservation, Role};
use cnpg_ext_model::plan::ClusterPlan;

/// One instance of the Cluster, as the operator names it (`<cluster>-<ordinal>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Slot {
    pub name: String,
    pub ordinal: u32,
    pub role: Role,
}

#[async_trait]
pub(crate) trait InstanceRuntime: Send + Sync {
    fn name(&self) -> &'static str;

    /// Where image volumes are mounted, as the instance's postgres sees them.
    fn mount_root(&self, slot: &Slot) -> String;

    /// Storage for a new instance before its first start: the primary's data directory from
    /// the initdb template, a replica's by a base backup from `primary` (running).
    async fn provision(&mut self, slot: &Slot, primary: &Slot) -> Result<(), BackendError>;

    /// Starts the instance with `plan`'s mounts, settings and environment; returns once it
    /// is launched (the stand-in waits for it to answer).
    async fn start(&mut self, slot: &Slot, plan: &ClusterPlan) -> Result<(), BackendError>;

    /// Why the instance is no longer running, if it is not.
    async fn stopped(&mut self, slot: &Slot) -> Option<String>;

    /// How often [`Self::stopped`] is worth asking while waiting for a start.
    fn exit_poll_interval(&self) -> Duration;

    /// The last lines of the instance's server log.
    async fn log_tail(&self, slot: &Slot) -> String;

    /// The instance's whole server log, every replaced process or container included, when
    /// it can be read (evidence, bundles). Default: the last lines.
    async fn server_log(&self, slot: &Slot) -> Option<String> {
        Some(self.log_tail(slot).await)
    }

    /// Stops the instance (fast shutdown, then kill); its data is kept.
    async fn stop(&mut self, slot: &Slot) -> Result<(), BackendError>;

    /// What changes when the instance is replaced: a postmaster pid, a container id.
    fn identity(&self, slot: &Slot) -> String;

    /// The directory holding the instance's unix socket (port 5432).
    fn socket_dir(&self, slot: &Slot) -> PathBuf;

    /// Rewrites the operator's settings of a running instance, for a reload.
    fn write_settings(&self, slot: &Slot, plan: &ClusterPlan) -> Result<(), BackendError>;

    /// The postmaster's environment and the mounts as the instance sees them; `client` is a
    /// superuser session on it.
    async fn observe(
        &self,
        slot: &Slot,
        plan: &ClusterPlan,
        client: &tokio_postgres::Client,
    ) -> Result<InstanceObservation, BackendError>;

    /// Stops every instance (`slots` in stop order) and removes what the runtime made, unless
    /// `keep`.
    async fn teardown(&mut self, slots: &[Slot], keep: bool) -> Result<(), BackendError>;
}

/// A session to an instance over its unix socket.
pub(crate) fn conn_config(socket_dir: &Path, database: &str, user: &str) -> tokio_postgres::Config {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host_path(socket_dir).port(5432).user(user).dbname(database).application_name("cnpg-ext-harness");
    cfg.connect_timeout(Duration::from_secs(10));
    cfg
}

/// The postmaster's own reason for not starting: the last `FATAL:` / `PANIC:` line of its log.
pub(crate) fn fatal_reason(log: &str) -> Option<String> {
    log.lines()
        .rev()
        .find(|l| l.contains("FATAL:") || l.contains("PANIC:"))
        .map(|l| l.split_once("FATAL:").map(|(_, r)| format!("FATAL:{r}")).unwrap_or_else(|| l.trim().to_string()))
}

/// Every variable of a process's `/proc/<pid>/environ` bytes (NUL-separated `K=V`).
pub(crate) fn environ_map(environ: &[u8]) -> std::collections::BTreeMap<String, String> {
    environ
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let s = String::from_utf8_lossy(kv);
            s.split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// `LD_LIBRARY_PATH` from a process's `/proc/<pid>/environ` bytes (NUL-separated `K=V`).
pub(crate) fn ld_library_path_of(environ: &[u8]) -> Option<String> {
    environ.split(|b| *b == 0).find_map(|kv| {
        let s = String::from_utf8_lossy(kv);
        s.strip_prefix("LD_LIBRARY_PATH=").map(str::to_string)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_fatal_line_is_the_reason() {
        let log = "LOG:  starting\n2026 UTC [1] FATAL:  could not access file \"x\": No such file or directory\nLOG:  shut down";
        assert_eq!(
            super::fatal_reason(log).as_deref(),
            Some("FATAL:  could not access file \"x\": No such file or directory")
        );
        assert_eq!(super::fatal_reason("LOG: fine"), None);
    }

    #[test]
    fn ld_library_path_from_environ() {
        let env = b"PATH=/usr/bin\0LD_LIBRARY_PATH=/extensions/a/system:/x\0LANG=C\0";
        assert_eq!(super::ld_library_path_of(env).as_deref(), Some("/extensions/a/system:/x"));
        assert_eq!(super::ld_library_path_of(b"PATH=/usr/bin\0"), None);
        assert_eq!(super::ld_library_path_of(b"MY_LD_LIBRARY_PATH=/no\0"), None);
    }
}
