//! The pure judgments of the verification layer: a [`Check`] (expected vs actual) and the
//! rules a rolling update must satisfy. Every backend's observations — local postmasters,
//! containers, kind pods recorded offline — are judged by these functions and no copy of them.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::backend::{Role, RolloutRecord};

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
    pub fn new(
        what: impl Into<String>,
        instance: Option<&str>,
        expected: impl Into<String>,
        actual: impl Into<String>,
    ) -> Check {
        let (expected, actual) = (expected.into(), actual.into());
        Check { what: what.into(), instance: instance.map(str::to_string), ok: expected == actual, expected, actual }
    }

    pub fn that(
        what: impl Into<String>,
        instance: Option<&str>,
        expected: impl Into<String>,
        actual: impl Into<String>,
        ok: bool,
    ) -> Check {
        Check {
            what: what.into(),
            instance: instance.map(str::to_string),
            expected: expected.into(),
            actual: actual.into(),
            ok,
        }
    }
}

/// What an instance looked like before an operation that may restart it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceState {
    pub role: Role,
    pub started: String,
}

/// A rollout: every instance restarted exactly once, each postmaster start time moved
/// forward, and replicas before the primary — in the backend's record and, since a stand-in
/// writes its own record, in the start times measured on the instances after the rollout.
/// "Exactly once" counts the record's entries; that every instance restarted at all is
/// measured (its start time moved).
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
    let order: Vec<String> =
        record.restarts.iter().map(|r| format!("{}({:?})", r.instance, r.role).to_lowercase()).collect();
    // No replica after the first primary entry.
    let ok = record.restarts.iter().skip_while(|r| r.role != Role::Primary).all(|r| r.role != Role::Replica);
    checks.push(Check::that(
        "replicas restarted before the primary",
        None,
        "replicas first, primary last",
        order.join(" → "),
        ok,
    ));
    checks.push(measured_order(before, after));
    checks
}

/// The order as measured on the instances: each one's new postmaster start time, with the
/// role it had when the rollout began (the operator switches the primary over during one).
/// No replica may have started after the primary; equal times (a coarse clock) say nothing.
fn measured_order(before: &BTreeMap<String, InstanceState>, after: &BTreeMap<String, InstanceState>) -> Check {
    let mut started: Vec<(&String, Role, &str)> = before
        .iter()
        .filter_map(|(name, was)| after.get(name).map(|now| (name, was.role, now.started.as_str())))
        .collect();
    started.sort_by(|a, b| a.2.cmp(b.2));
    let order: Vec<String> = started
        .iter()
        .map(|(name, role, at)| format!("{name} ({}) {at}", format!("{role:?}").to_lowercase()))
        .collect();
    let of = |role: Role| started.iter().filter(move |s| s.1 == role).map(|s| s.2);
    let ok = match (of(Role::Replica).max(), of(Role::Primary).min()) {
        (Some(replica), Some(primary)) => replica <= primary,
        _ => true,
    };
    Check::that(
        "replicas restarted before the primary (measured start times)",
        None,
        "no replica started after the primary",
        order.join(" → "),
        ok,
    )
}

/// No rollout: every postmaster kept its start time.
pub fn verify_no_restart(
    before: &BTreeMap<String, InstanceState>,
    after: &BTreeMap<String, InstanceState>,
) -> Vec<Check> {
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
    use crate::backend::InstanceRestart;
    use chrono::Utc;

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
        let rec = RolloutRecord {
            restarts: vec![restart("c-2", Role::Replica), restart("c-1", Role::Primary)],
            phases: vec![],
        };
        assert!(verify_rollout(&rec, &before(), &later()).iter().all(|c| c.ok));
    }

    fn at(role: Role, t: &str) -> InstanceState {
        state(role, t)
    }

    #[test]
    fn primary_first_fails_whatever_the_record_says() {
        let rec = RolloutRecord {
            restarts: vec![restart("c-2", Role::Replica), restart("c-1", Role::Primary)],
            phases: vec![],
        };
        // The primary's new postmaster started before the replica's.
        let after: BTreeMap<String, InstanceState> = [
            ("c-1".to_string(), at(Role::Primary, "2026-01-01 00:00:05+00")),
            ("c-2".to_string(), at(Role::Replica, "2026-01-01 00:00:06+00")),
        ]
        .into();
        let bad: Vec<_> = verify_rollout(&rec, &before(), &after).into_iter().filter(|c| !c.ok).collect();
        assert_eq!(bad.len(), 1, "{bad:#?}");
        assert_eq!(bad[0].what, "replicas restarted before the primary (measured start times)");
        assert_eq!(bad[0].expected, "no replica started after the primary");
        assert_eq!(bad[0].actual, "c-1 (primary) 2026-01-01 00:00:05+00 → c-2 (replica) 2026-01-01 00:00:06+00");
        // The role is the one held before: after a switchover the old primary is a replica.
        let switched: BTreeMap<String, InstanceState> = [
            ("c-1".to_string(), at(Role::Replica, "2026-01-01 00:00:07+00")),
            ("c-2".to_string(), at(Role::Primary, "2026-01-01 00:00:06+00")),
        ]
        .into();
        assert!(verify_rollout(&rec, &before(), &switched).iter().all(|c| c.ok));
        // Equal start times (seconds from the kubelet) contradict nothing.
        let tie: BTreeMap<String, InstanceState> = [
            ("c-1".to_string(), at(Role::Primary, "2026-01-01 00:00:06+00")),
            ("c-2".to_string(), at(Role::Replica, "2026-01-01 00:00:06+00")),
        ]
        .into();
        assert!(verify_rollout(&rec, &before(), &tie).iter().all(|c| c.ok));
        // An instance gone after the rollout has no place in the measured order.
        let gone: BTreeMap<String, InstanceState> =
            [("c-2".to_string(), at(Role::Replica, "2026-01-01 00:00:06+00"))].into();
        let c = measured_order(&before(), &gone);
        assert!(c.ok && c.actual == "c-2 (replica) 2026-01-01 00:00:06+00", "{c:?}");
    }

    #[test]
    fn only_replicas_or_only_a_primary_has_no_order_to_break() {
        let one =
            |role: Role, t: &str| -> BTreeMap<String, InstanceState> { [("c-1".to_string(), at(role, t))].into() };
        let rec = RolloutRecord { restarts: vec![restart("c-1", Role::Primary)], phases: vec![] };
        for role in [Role::Primary, Role::Replica] {
            let checks =
                verify_rollout(&rec, &one(role, "2026-01-01 00:00:00+00"), &one(role, "2026-01-01 00:00:01+00"));
            assert!(checks.iter().all(|c| c.ok), "{checks:#?}");
        }
    }

    #[test]
    fn a_record_in_the_wrong_order_fails_too() {
        let rec = RolloutRecord {
            restarts: vec![restart("c-1", Role::Primary), restart("c-2", Role::Replica)],
            phases: vec![],
        };
        let bad: Vec<_> = verify_rollout(&rec, &before(), &later()).into_iter().filter(|c| !c.ok).collect();
        assert_eq!(bad.len(), 1, "{bad:#?}");
        assert_eq!(bad[0].what, "replicas restarted before the primary");
        assert_eq!(bad[0].actual, "c-1(primary) → c-2(replica)");
    }

    #[test]
    fn twice_or_never_fails() {
        let rec = RolloutRecord {
            restarts: vec![restart("c-2", Role::Replica), restart("c-2", Role::Replica), restart("c-1", Role::Primary)],
            phases: vec![],
        };
        assert!(verify_rollout(&rec, &before(), &later())
            .iter()
            .any(|c| !c.ok && c.instance.as_deref() == Some("c-2")));
        let none = RolloutRecord::default();
        assert!(verify_rollout(&none, &before(), &before()).iter().filter(|c| !c.ok).count() >= 4);
    }

    #[test]
    fn unchanged_start_time_is_no_restart() {
        let same = verify_no_restart(&before(), &before());
        assert_eq!(same.len(), 2, "{same:#?}");
        assert!(same.iter().all(|c| c.ok));
        let moved = verify_no_restart(&before(), &later());
        assert_eq!(moved.len(), 2, "{moved:#?}");
        assert!(moved.iter().all(|c| !c.ok));
        assert_eq!(moved[0].actual, "2026-01-01 00:00:05+00");
        let gone = verify_no_restart(&before(), &BTreeMap::new());
        assert!(gone.iter().all(|c| !c.ok && c.actual == "(gone)"), "{gone:#?}");
    }
}
