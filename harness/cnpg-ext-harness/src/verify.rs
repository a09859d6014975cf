//! The verification layer, written once for every backend: it compares what a backend
//! observes with the derived plan and with what a rolling update must look like.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cnpg_ext_model::backend::{Backend, BackendError, InstanceRef, Role, RolloutRecord};
use cnpg_ext_model::Cluster;
use serde::Serialize;

use crate::sql;
use crate::store::ImageStore;

/// One comparison; a step fails when any of its checks is not `ok`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub what: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    pub expected: String,
    pub actual: String,
    pub ok: bool,
}

impl Check {
    pub fn new(what: impl Into<String>, instance: Option<&str>, expected: impl Into<String>, actual: impl Into<String>) -> Check {
        let (expected, actual) = (expected.into(), actual.into());
        Check { what: what.into(), instance: instance.map(str::to_string), ok: expected == actual, expected, actual }
    }

    pub fn that(what: impl Into<String>, instance: Option<&str>, expected: impl Into<String>, actual: impl Into<String>, ok: bool) -> Check {
        Check { what: what.into(), instance: instance.map(str::to_string), expected: expected.into(), actual: actual.into(), ok }
    }
}

fn db(e: tokio_postgres::Error) -> BackendError {
    BackendError::Failed(sql::describe_error(&e))
}

/// On every instance: both search-path GUCs, the postmaster's `LD_LIBRARY_PATH`, and the
/// files inside every image mount equal what the plan and the image say.
pub async fn verify_plan(backend: &dyn Backend, cluster: &Cluster, images: &ImageStore) -> Result<Vec<Check>, BackendError> {
    let mut checks = Vec::new();
    for inst in backend.instances().await? {
        let name = inst.name.as_str();
        let plan = backend.plan_for(cluster, name);
        let client = backend.connect(name, "postgres", "postgres").await?;
        for (guc, want) in [
            ("extension_control_path", &plan.extension_control_path),
            ("dynamic_library_path", &plan.dynamic_library_path),
        ] {
            let rows = sql::query_text(&client, &format!("SHOW {guc}")).await.map_err(db)?;
            let got = rows.first().and_then(|r| r.first().cloned().flatten()).unwrap_or_default();
            checks.push(Check::new(format!("SHOW {guc}"), Some(name), want.clone(), got));
        }
        let obs = backend.inspect(name, &plan).await?;
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(unset)".into());
        checks.push(Check::new("postmaster LD_LIBRARY_PATH", Some(name), show(&plan.ld_library_path), show(&obs.ld_library_path)));
        for ext in &plan.extensions {
            let Some(m) = obs.mounts.iter().find(|m| m.name == ext.name) else {
                checks.push(Check::new(format!("mount {}", ext.mount_path), Some(name), "present", "not reported"));
                continue;
            };
            checks.push(Check::new(format!("mount {}", m.path), Some(name), "present", if m.present { "present" } else { "missing" }));
            let want = images.get(&ext.image).map(|i| i.files.clone()).unwrap_or_default();
            let summary = |files: &[String]| format!("{} files: {}", files.len(), preview(files));
            // An empty mount (seen with some runtimes) must fail even if the image were empty.
            let ok = !m.files.is_empty() && m.files == want;
            checks.push(Check::that(format!("files in {}", m.path), Some(name), summary(&want), summary(&m.files), ok));
            if let Some(ro) = m.read_only {
                checks.push(Check::new(format!("{} read-only", m.path), Some(name), "read-only", if ro { "read-only" } else { "writable" }));
            }
        }
    }
    Ok(checks)
}

fn preview(files: &[String]) -> String {
    let mut s: Vec<&str> = files.iter().take(4).map(String::as_str).collect();
    if files.len() > 4 {
        s.push("…");
    }
    s.join(", ")
}

/// Fixed-width UTC text, so that later times compare greater as strings.
const START_TIME_SQL: &str =
    "SELECT to_char(pg_postmaster_start_time() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')";

/// What an instance looked like before an operation that may restart it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceState {
    pub role: Role,
    pub started: String,
}

/// `pg_postmaster_start_time()` of every instance.
pub async fn start_times(backend: &dyn Backend) -> Result<BTreeMap<String, InstanceState>, BackendError> {
    let mut out = BTreeMap::new();
    for InstanceRef { name, role } in backend.instances().await? {
        let client = backend.connect(&name, "postgres", "postgres").await?;
        let rows = sql::query_text(&client, START_TIME_SQL).await.map_err(db)?;
        let started = rows.first().and_then(|r| r.first().cloned().flatten()).unwrap_or_default();
        out.insert(name, InstanceState { role, started });
    }
    Ok(out)
}

/// A row that must survive every rollout.
pub async fn write_sentinel(backend: &dyn Backend, token: &str) -> Result<(), BackendError> {
    let primary = primary(backend).await?;
    let client = backend.connect(&primary, "app", "postgres").await?;
    client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS cnpg_ext_harness_sentinel (token text PRIMARY KEY, at timestamptz DEFAULT now());
             INSERT INTO cnpg_ext_harness_sentinel(token) VALUES ({}) ON CONFLICT DO NOTHING",
            sql::quote_literal(token)
        ))
        .await
        .map_err(db)
}

pub async fn primary(backend: &dyn Backend) -> Result<String, BackendError> {
    backend
        .instances()
        .await?
        .into_iter()
        .find(|i| i.role == Role::Primary)
        .map(|i| i.name)
        .ok_or_else(|| BackendError::Failed("no primary instance".into()))
}

/// The sentinel row on every instance (replicas get a few seconds to replay).
pub async fn check_sentinel(backend: &dyn Backend, token: &str) -> Result<Vec<Check>, BackendError> {
    let mut checks = Vec::new();
    let q = format!("SELECT count(*) FROM cnpg_ext_harness_sentinel WHERE token = {}", sql::quote_literal(token));
    for inst in backend.instances().await? {
        let deadline = Instant::now() + Duration::from_secs(10);
        let got = loop {
            let got = match backend.connect(&inst.name, "app", "postgres").await {
                Ok(c) => match sql::query_text(&c, &q).await {
                    Ok(rows) => rows.first().and_then(|r| r.first().cloned().flatten()).unwrap_or_default(),
                    Err(e) => sql::describe_error(&e),
                },
                Err(e) => e.to_string(),
            };
            if got == "1" || Instant::now() >= deadline {
                break got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        checks.push(Check::new("row written before the update", Some(&inst.name), "1", got));
    }
    Ok(checks)
}

/// A rollout: every instance restarted exactly once, replicas before the primary, each
/// postmaster start time moved forward.
pub fn verify_rollout(
    record: &RolloutRecord,
    before: &BTreeMap<String, InstanceState>,
    after: &BTreeMap<String, InstanceState>,
) -> Vec<Check> {
    let mut checks = Vec::new();
    for (name, state) in before {
        let times = record.restarts.iter().filter(|r| &r.instance == name).count();
        checks.push(Check::new("restarted exactly once", Some(name), "1", times.to_string()));
        let now = after.get(name).map(|s| s.started.clone()).unwrap_or_else(|| "(gone)".into());
        let moved = now != "(gone)" && now > state.started;
        checks.push(Check::that(
            "pg_postmaster_start_time() moved forward",
            Some(name),
            format!("later than {}", state.started),
            now,
            moved,
        ));
    }
    let order: Vec<String> = record.restarts.iter().map(|r| format!("{}({:?})", r.instance, r.role).to_lowercase()).collect();
    let first_primary = record.restarts.iter().position(|r| r.role == Role::Primary);
    let last_replica = record.restarts.iter().rposition(|r| r.role == Role::Replica);
    let ok = match (first_primary, last_replica) {
        (Some(p), Some(r)) => r < p,
        _ => true,
    };
    checks.push(Check::that("replicas restarted before the primary", None, "replicas first, primary last", order.join(" → "), ok));
    checks
}

/// No rollout: every postmaster kept its start time.
pub fn verify_no_restart(before: &BTreeMap<String, InstanceState>, after: &BTreeMap<String, InstanceState>) -> Vec<Check> {
    before
        .iter()
        .map(|(name, state)| {
            let now = after.get(name).map(|s| s.started.clone()).unwrap_or_else(|| "(gone)".into());
            Check::new("not restarted (pg_postmaster_start_time unchanged)", Some(name), state.started.clone(), now)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use cnpg_ext_model::backend::InstanceRestart;

    fn state(role: Role, t: &str) -> InstanceState {
        InstanceState { role, started: t.into() }
    }

    fn restart(name: &str, role: Role) -> InstanceRestart {
        InstanceRestart { instance: name.into(), role, old_id: "1".into(), new_id: "2".into(), at: Utc::now() }
    }

    fn before() -> BTreeMap<String, InstanceState> {
        [("c-1", Role::Primary), ("c-2", Role::Replica)]
            .into_iter()
            .map(|(n, r)| (n.to_string(), state(r, "2026-01-01 00:00:00+00")))
            .collect()
    }

    fn later() -> BTreeMap<String, InstanceState> {
        before().into_iter().map(|(n, s)| (n, state(s.role, "2026-01-01 00:00:05+00"))).collect()
    }

    #[test]
    fn a_good_rollout_passes() {
        let rec = RolloutRecord { restarts: vec![restart("c-2", Role::Replica), restart("c-1", Role::Primary)], phases: vec![] };
        assert!(verify_rollout(&rec, &before(), &later()).iter().all(|c| c.ok));
    }

    #[test]
    fn primary_first_fails() {
        let rec = RolloutRecord { restarts: vec![restart("c-1", Role::Primary), restart("c-2", Role::Replica)], phases: vec![] };
        let bad: Vec<_> = verify_rollout(&rec, &before(), &later()).into_iter().filter(|c| !c.ok).collect();
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].what, "replicas restarted before the primary");
    }

    #[test]
    fn twice_or_never_fails() {
        let rec = RolloutRecord {
            restarts: vec![restart("c-2", Role::Replica), restart("c-2", Role::Replica), restart("c-1", Role::Primary)],
            phases: vec![],
        };
        assert!(verify_rollout(&rec, &before(), &later()).iter().any(|c| !c.ok && c.instance.as_deref() == Some("c-2")));
        let none = RolloutRecord::default();
        assert!(verify_rollout(&none, &before(), &before()).iter().filter(|c| !c.ok).count() >= 4);
    }

    #[test]
    fn unchanged_start_time_is_no_restart() {
        assert!(verify_no_restart(&before(), &before()).iter().all(|c| c.ok));
        assert!(verify_no_restart(&before(), &later()).iter().all(|c| !c.ok));
    }
}
