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

/// What an applied Cluster changes in the postmasters' settings, from its plan and the
/// previous Cluster's: the settings whose planned value changes (all of them when there is
/// no previous Cluster), and the values the plan asks for — the search paths exactly;
/// `shared_preload_libraries` listing the plan's libraries (the operator may add its own)
/// and none of those the previous Cluster preloaded and this one does not.
///
/// Only a changed setting is waited for, and it is there when it shows something else than
/// before the change or the planned value: a setting the plan does not change is never
/// waited for, so a model that disagrees with the operator on a value makes `verify` fail
/// with both values, not every apply wait out its timeout.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SettingsTarget {
    /// Names (of [`SETTINGS`]) whose planned value the applied Cluster changes.
    pub changed: Vec<String>,
    pub exact: Vec<(String, String)>,
    pub preload: Vec<String>,
    pub preload_dropped: Vec<String>,
}

const PRELOAD: &str = "shared_preload_libraries";

impl SettingsTarget {
    /// From the plan of the applied Cluster and, if there was one, the previous plan.
    pub fn of(plan: &ClusterPlan, previous: Option<&ClusterPlan>) -> SettingsTarget {
        let exact: Vec<(String, String)> = vec![
            ("extension_control_path".into(), plan.extension_control_path.clone()),
            ("dynamic_library_path".into(), plan.dynamic_library_path.clone()),
        ];
        let changed = match previous {
            None => SETTINGS.iter().map(|s| s.to_string()).collect(),
            Some(p) => {
                let mut c: Vec<String> = exact
                    .iter()
                    .zip([&p.extension_control_path, &p.dynamic_library_path])
                    .filter(|((_, now), before)| now != *before)
                    .map(|((k, _), _)| k.clone())
                    .collect();
                if p.shared_preload_libraries != plan.shared_preload_libraries {
                    c.push(PRELOAD.into());
                }
                c
            }
        };
        let dropped = previous
            .map(|p| {
                p.shared_preload_libraries
                    .iter()
                    .filter(|l| !plan.shared_preload_libraries.contains(l))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        SettingsTarget { changed, exact, preload: plan.shared_preload_libraries.clone(), preload_dropped: dropped }
    }

    fn get<'s>(state: &'s PostmasterState, name: &str) -> &'s str {
        state.settings.get(name).map(String::as_str).unwrap_or("")
    }

    /// Whether `state` shows the planned value of `name`.
    fn at_plan(&self, name: &str, state: &PostmasterState) -> bool {
        let value = Self::get(state, name);
        if name == PRELOAD {
            let listed: Vec<&str> = value.split(',').map(str::trim).collect();
            self.preload.iter().all(|l| listed.contains(&l.as_str()))
                && !self.preload_dropped.iter().any(|l| listed.contains(&l.as_str()))
        } else {
            self.exact.iter().find(|(k, _)| k == name).is_none_or(|(_, want)| value == want)
        }
    }

    fn planned(&self, name: &str) -> String {
        if name == PRELOAD {
            let mut s = format!("{:?} listed", self.preload.join(","));
            if !self.preload_dropped.is_empty() {
                s.push_str(&format!(" and {:?} not", self.preload_dropped.join(",")));
            }
            s
        } else {
            self.exact.iter().find(|(k, _)| k == name).map(|(_, v)| format!("{v:?}")).unwrap_or_default()
        }
    }

    /// `Ok` when the postmaster read as `now` (and as `before` the change, if it was) has
    /// taken the change: no setting waits for a restart, every changed setting shows
    /// something else than before or the planned value, and — when one did not already
    /// show its planned value before — the configuration was loaded again since. Else what
    /// is missing.
    pub fn check(&self, before: Option<&PostmasterState>, now: &PostmasterState) -> Result<(), String> {
        let mut off = Vec::new();
        if !now.pending_restart.is_empty() {
            off.push(format!("pending_restart for {}", now.pending_restart.join(",")));
        }
        for name in &self.changed {
            let moved = before.is_none_or(|b| Self::get(b, name) != Self::get(now, name));
            if !moved && !self.at_plan(name, now) {
                off.push(format!(
                    "{name} still {:?} as before the change (the applied Cluster asks for {})",
                    Self::get(now, name),
                    self.planned(name)
                ));
            }
        }
        if let Some(b) = before {
            let needed = self.changed.iter().any(|n| !self.at_plan(n, b));
            if needed && now.conf_loaded <= b.conf_loaded {
                off.push(format!("configuration not loaded again (pg_conf_load_time() {} as before the change)", now.conf_loaded));
            }
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
    fn only_changed_settings_are_waited_for_and_a_reload_is_needed() {
        let t = SettingsTarget {
            changed: vec!["shared_preload_libraries".into()],
            exact: vec![("extension_control_path".into(), "$system:/extensions/a/share".into())],
            preload: vec!["a".into()],
            preload_dropped: vec!["old".into()],
        };
        let before = state("old", &[]);
        // Not there yet: the old value, or a restart pending.
        assert!(t.check(Some(&before), &before).unwrap_err().contains("still \"old\" as before"));
        let mut pending = state("old", &["shared_preload_libraries"]);
        assert!(t.check(Some(&before), &pending).unwrap_err().contains("pending_restart"));
        // Restarted: a new value and a later configuration load.
        let mut after = state("a,extra", &[]);
        after.conf_loaded = "2026-01-01T00:01:00.000000Z".into();
        assert_eq!(t.check(Some(&before), &after), Ok(()));
        // A new value without a new load cannot be (the load time is checked too).
        assert!(t.check(Some(&before), &state("a", &[])).unwrap_err().contains("not loaded again"));
        // An unchanged setting that disagrees with the plan is never waited for.
        let mut other = after.clone();
        other.settings.insert("extension_control_path".into(), "$system".into());
        assert_eq!(t.check(Some(&before), &other), Ok(()));
        // Already at the plan before the change: nothing to wait for.
        assert_eq!(t.check(Some(&after), &after), Ok(()));
        // No reading before the change (a pod that was not there): any value is new.
        pending.pending_restart.clear();
        assert_eq!(t.check(None, &pending), Ok(()));
    }

    #[test]
    fn changed_settings_come_from_the_two_plans() {
        let mut p = ClusterPlan::derive(
            &match cnpg_ext_model::Manifest::parse(
                std::path::Path::new("c.yaml"),
                "apiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata: {name: c}\nspec:\n  instances: 1\n  postgresql:\n    extensions:\n      - name: e\n        image: {reference: x/e:1}\n",
            )
            .unwrap()
            .remove(0)
            {
                cnpg_ext_model::Manifest::Cluster(d) => d.cluster,
                _ => unreachable!(),
            },
            &cnpg_ext_model::plan::PlanOptions::default(),
        );
        assert_eq!(SettingsTarget::of(&p, Some(&p)).changed, Vec::<String>::new());
        assert_eq!(SettingsTarget::of(&p, None).changed.len(), 3);
        let before = p.clone();
        p.shared_preload_libraries = vec!["e".into()];
        p.dynamic_library_path.push_str(":/x");
        let t = SettingsTarget::of(&p, Some(&before));
        assert_eq!(t.changed, ["dynamic_library_path", "shared_preload_libraries"]);
    }
}
