//! What an instance's postmaster says about itself, read through SQL (`psql` in the
//! `postgres` container, as `kubectl cnpg psql` runs it: `-U postgres` over the local
//! socket the pod's `PGHOST` names; peer authentication, no password).
//!
//! The rollout watcher needs it where the pods do not change: CloudNativePG restarts a
//! primary *in its pod* (`primaryUpdateMethod: restart`, phase "Primary instance is being
//! restarted in-place"; the instance manager restarts the postmaster, the container keeps
//! running) and demotes it in place after a switchover; the instance managers apply a
//! reload-only change by a SIGHUP. Only `pg_postmaster_start_time()`,
//! `pg_conf_load_time()` and the settings show those.

use std::collections::BTreeMap;

use cnpg_ext_model::backend::BackendError;
use cnpg_ext_model::plan::ClusterPlan;

use crate::exec::PodExec;
use crate::inspect::POSTGRES_CONTAINER;

/// Times as `verify` reads them (UTC, microseconds), so they compare as text.
const TIME: &str = r#"'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'"#;

/// The settings the probe reads (PostgreSQL 18: `extension_control_path` exists).
pub const SETTINGS: [&str; 3] = ["extension_control_path", "dynamic_library_path", "shared_preload_libraries"];

/// One row, tab-separated: postmaster start, configuration load, [`SETTINGS`], the
/// settings with `pending_restart`.
pub fn probe_sql() -> String {
    let settings: Vec<String> =
        SETTINGS.iter().map(|s| format!("coalesce(current_setting('{s}', true), '')")).collect();
    format!(
        "SELECT to_char(pg_postmaster_start_time() AT TIME ZONE 'UTC', {TIME}), \
         to_char(pg_conf_load_time() AT TIME ZONE 'UTC', {TIME}), {}, \
         coalesce((SELECT string_agg(name, ',' ORDER BY name) FROM pg_settings WHERE pending_restart), '')",
        settings.join(", ")
    )
}

/// The command run in the `postgres` container.
pub fn probe_command() -> Vec<String> {
    ["psql", "-U", "postgres", "-d", "postgres", "-XAtq", "-v", "ON_ERROR_STOP=1", "-F", "\t", "-c"]
        .iter()
        .map(|s| s.to_string())
        .chain(std::iter::once(probe_sql()))
        .collect()
}

/// One instance's postmaster, as of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostmasterState {
    /// `pg_postmaster_start_time()`.
    pub started: String,
    /// `pg_conf_load_time()`.
    pub conf_loaded: String,
    /// [`SETTINGS`] by name.
    pub settings: BTreeMap<String, String>,
    /// Settings changed in the configuration that wait for a restart (`pending_restart`).
    pub pending_restart: Vec<String>,
}

impl PostmasterState {
    /// Parses the probe's output (one line, tab-separated).
    pub fn parse(pod: &str, stdout: &str) -> Result<PostmasterState, BackendError> {
        let line = stdout.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() != 3 + SETTINGS.len() || fields[0].is_empty() {
            return Err(BackendError::Failed(format!(
                "pod {pod}: the postmaster probe (psql in container {POSTGRES_CONTAINER}) printed {line:?}, not {} tab-separated fields",
                3 + SETTINGS.len()
            )));
        }
        let settings = SETTINGS.iter().zip(&fields[2..2 + SETTINGS.len()]).map(|(k, v)| (k.to_string(), v.to_string()));
        let pending = fields[2 + SETTINGS.len()];
        Ok(PostmasterState {
            started: fields[0].to_string(),
            conf_loaded: fields[1].to_string(),
            settings: settings.collect(),
            pending_restart: pending.split(',').filter(|s| !s.is_empty()).map(String::from).collect(),
        })
    }

    /// The probe's output for this state (the fake exec answers with it).
    #[cfg(any(test, feature = "testing"))]
    pub fn to_output(&self) -> String {
        let mut fields = vec![self.started.clone(), self.conf_loaded.clone()];
        fields.extend(SETTINGS.iter().map(|s| self.settings.get(*s).cloned().unwrap_or_default()));
        fields.push(self.pending_restart.join(","));
        fields.join("\t") + "\n"
    }
}

/// How long one probe may take.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads `pod`'s postmaster.
pub async fn probe(exec: &dyn PodExec, namespace: &str, pod: &str) -> Result<PostmasterState, BackendError> {
    let out = tokio::time::timeout(PROBE_TIMEOUT, exec.exec(namespace, pod, POSTGRES_CONTAINER, &probe_command()))
        .await
        .map_err(|_| {
            BackendError::Failed(format!(
                "pod {namespace}/{pod}: the postmaster probe (psql in container {POSTGRES_CONTAINER}) did not answer within {}s",
                PROBE_TIMEOUT.as_secs()
            ))
        })??;
    if !out.success {
        return Err(BackendError::Failed(format!(
            "pod {namespace}/{pod}: the postmaster probe (psql in container {POSTGRES_CONTAINER}) failed: {} {}",
            out.message.unwrap_or_default(),
            out.stderr.trim()
        )));
    }
    PostmasterState::parse(&format!("{namespace}/{pod}"), &out.stdout)
}

/// The settings an applied Cluster asks every postmaster to show, from its plan:
/// the search paths exactly; `shared_preload_libraries` listing the plan's libraries (the
/// operator may add its own) and none of those the previous Cluster preloaded and this one
/// does not.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SettingsTarget {
    pub exact: Vec<(String, String)>,
    pub preload: Vec<String>,
    pub preload_dropped: Vec<String>,
}

impl SettingsTarget {
    /// From the plan of the applied Cluster and, if there was one, the previous plan.
    pub fn of(plan: &ClusterPlan, previous: Option<&ClusterPlan>) -> SettingsTarget {
        let dropped = previous
            .map(|p| {
                p.shared_preload_libraries
                    .iter()
                    .filter(|l| !plan.shared_preload_libraries.contains(l))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        SettingsTarget {
            exact: vec![
                ("extension_control_path".into(), plan.extension_control_path.clone()),
                ("dynamic_library_path".into(), plan.dynamic_library_path.clone()),
            ],
            preload: plan.shared_preload_libraries.clone(),
            preload_dropped: dropped,
        }
    }

    /// `Ok` when `state` shows the target and waits for no restart; else what differs.
    pub fn check(&self, state: &PostmasterState) -> Result<(), String> {
        let mut off = Vec::new();
        let get = |k: &str| state.settings.get(k).map(String::as_str).unwrap_or("");
        for (k, want) in &self.exact {
            if get(k) != want {
                off.push(format!("{k} = {:?}, want {want:?}", get(k)));
            }
        }
        let listed: Vec<&str> = get("shared_preload_libraries").split(',').map(str::trim).collect();
        let missing: Vec<&str> = self.preload.iter().map(String::as_str).filter(|l| !listed.contains(l)).collect();
        let kept: Vec<&str> = self.preload_dropped.iter().map(String::as_str).filter(|l| listed.contains(l)).collect();
        if !missing.is_empty() || !kept.is_empty() {
            off.push(format!(
                "shared_preload_libraries = {:?}, want {:?} listed{}",
                get("shared_preload_libraries"),
                self.preload.join(","),
                if self.preload_dropped.is_empty() {
                    String::new()
                } else {
                    format!(" and {:?} not", self.preload_dropped.join(","))
                }
            ));
        }
        if !state.pending_restart.is_empty() {
            off.push(format!("pending_restart for {}", state.pending_restart.join(",")));
        }
        if off.is_empty() {
            Ok(())
        } else {
            Err(off.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(spl: &str, pending: &[&str]) -> PostmasterState {
        PostmasterState {
            started: "2026-01-01T00:00:00.000000Z".into(),
            conf_loaded: "2026-01-01T00:00:00.000000Z".into(),
            settings: [
                ("extension_control_path", "$system:/extensions/a/share"),
                ("dynamic_library_path", "$libdir:/extensions/a/lib"),
                ("shared_preload_libraries", spl),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            pending_restart: pending.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn output_round_trips_and_garbage_is_an_error() {
        let s = state("a,b", &["shared_preload_libraries"]);
        assert_eq!(PostmasterState::parse("p", &s.to_output()).unwrap(), s);
        let e = PostmasterState::parse("ns/p", "psql: error\n").unwrap_err().to_string();
        assert!(e.contains("ns/p") && e.contains("psql: error"), "{e}");
        assert!(probe_sql().contains("pg_conf_load_time()") && probe_sql().contains("pending_restart"));
    }

    #[test]
    fn target_wants_exact_paths_listed_libraries_and_no_pending_restart() {
        let t = SettingsTarget {
            exact: vec![("extension_control_path".into(), "$system:/extensions/a/share".into())],
            preload: vec!["a".into()],
            preload_dropped: vec!["old".into()],
        };
        assert_eq!(t.check(&state("a,extra", &[])), Ok(()));
        assert!(t.check(&state("extra", &[])).unwrap_err().contains("shared_preload_libraries"));
        assert!(t.check(&state("a,old", &[])).unwrap_err().contains("\"old\" not"));
        assert!(t.check(&state("a", &["shared_preload_libraries"])).unwrap_err().contains("pending_restart"));
        let mut other = state("a", &[]);
        other.settings.insert("extension_control_path".into(), "$system".into());
        assert!(t.check(&other).unwrap_err().contains("want \"$system:/extensions/a/share\""));
    }
}
