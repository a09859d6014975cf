//! The pure judgments of the verification layer: a [`Check`] (expected vs actual) and the
//! rules a rolling update must satisfy. Every backend's observations — local postmasters,
//! containers, kind pods recorded offline — are judged by these functions and no copy of them.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::backend::{Role, RolloutRecord};
use crate::serverlog::{LoggedStart, MeasuredStarts};

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
/// "Exactly once" is measured too: the postmaster starts each instance's server log shows
/// across the rollout (`starts`), which the record must agree with; an instance whose log
/// could not be read falls back to the record's entries, and its check says so.
pub fn verify_rollout(
    record: &RolloutRecord,
    before: &BTreeMap<String, InstanceState>,
    after: &BTreeMap<String, InstanceState>,
    starts: &BTreeMap<String, MeasuredStarts>,
) -> Vec<Check> {
    let mut checks = observed(record.restarts.iter().map(|r| &r.instance).chain(starts.keys()), before);
    for (name, state) in before {
        let recorded = record.restarts.iter().filter(|r| &r.instance == name).count();
        checks.push(exactly_once(name, recorded, &starts_of(starts, name)));
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

/// The per-instance checks judge the instances observed before the operation; one that the
/// observation left out (or an observation of none) must fail, not make its checks vanish.
/// `named` are the instances the record or the server logs speak of.
fn observed<'a>(named: impl Iterator<Item = &'a String>, before: &BTreeMap<String, InstanceState>) -> Vec<Check> {
    let mut checks = Vec::new();
    if before.is_empty() {
        checks.push(Check::that("instances observed before the operation", None, "at least one", "none", false));
    }
    let missing: BTreeSet<&String> = named.filter(|n| !before.contains_key(*n)).collect();
    for name in missing {
        checks.push(Check::that(
            "postmaster start time observed before the operation",
            Some(name),
            "observed",
            "not observed (named by the record or the server logs)",
            false,
        ));
    }
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

/// "restarted exactly once" for `name`: one postmaster start in its server log, and a record
/// that lists it once; without a log, the record's entries, saying that nothing was measured.
fn exactly_once(name: &str, recorded: usize, starts: &MeasuredStarts) -> Check {
    let (actual, ok) = match starts {
        MeasuredStarts::Logged(logged) => {
            let mut actual = logged_count(logged);
            if recorded != logged.len() {
                actual += &format!("; the backend's record lists {recorded}");
            }
            (actual, logged.len() == 1 && recorded == 1)
        }
        MeasuredStarts::NotMeasured(why) => {
            (format!("{recorded} in the backend's record (not measured: {why})"), recorded == 1)
        }
    };
    Check::that("restarted exactly once", Some(name), "1", actual, ok)
}

/// What is known of `name`'s postmaster starts: `starts`' entry, else that its log was not read.
fn starts_of(starts: &BTreeMap<String, MeasuredStarts>, name: &str) -> MeasuredStarts {
    starts.get(name).cloned().unwrap_or_else(|| MeasuredStarts::NotMeasured("its server log was not read".into()))
}

/// `N`, then when each start was logged.
fn logged_count(logged: &[LoggedStart]) -> String {
    if logged.is_empty() {
        return "0".to_string();
    }
    let when: Vec<String> = logged.iter().map(LoggedStart::describe).collect();
    format!("{} (logged: {})", logged.len(), when.join(", "))
}

/// No rollout: every postmaster kept its start time, and no postmaster start shows in the
/// server log across the operation (where it was read: otherwise the check says so).
pub fn verify_no_restart(
    before: &BTreeMap<String, InstanceState>,
    after: &BTreeMap<String, InstanceState>,
    starts: &BTreeMap<String, MeasuredStarts>,
) -> Vec<Check> {
    let mut checks = observed(starts.keys(), before);
    for (name, state) in before {
        let now = after.get(name).map(|s| s.started.clone()).unwrap_or_else(|| "(gone)".into());
        checks.push(Check::new(
            "not restarted (pg_postmaster_start_time unchanged)",
            Some(name),
            state.started.clone(),
            now,
        ));
        let (actual, ok) = match starts_of(starts, name) {
            MeasuredStarts::Logged(logged) => (logged_count(&logged), logged.is_empty()),
            MeasuredStarts::NotMeasured(why) => (format!("not measured: {why}"), true),
        };
        checks.push(Check::that("no postmaster start in the server log", Some(name), "0", actual, ok));
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::InstanceRestart;
    use chrono::Utc;

    /// An observation that left instances out fails; it does not make their checks vanish.
    #[test]
    fn instances_left_out_of_the_observation_fail() {
        let record = RolloutRecord { restarts: vec![restart("c-1", Role::Primary)], ..RolloutRecord::default() };
        let none = BTreeMap::new();
        let failed = |checks: Vec<Check>| -> Vec<(String, Option<String>)> {
            checks.into_iter().filter(|c| !c.ok).map(|c| (c.what, c.instance)).collect()
        };
        let rollout = failed(verify_rollout(&record, &none, &none, &BTreeMap::new()));
        assert!(rollout.contains(&("instances observed before the operation".into(), None)), "{rollout:?}");
        assert!(
            rollout.contains(&("postmaster start time observed before the operation".into(), Some("c-1".into()))),
            "{rollout:?}"
        );
        let starts = BTreeMap::from([("c-2".to_string(), MeasuredStarts::Logged(Vec::new()))]);
        let quiet = failed(verify_no_restart(&none, &none, &starts));
        assert!(quiet.contains(&("instances observed before the operation".into(), None)), "{quiet:?}");
        assert!(
            quiet.contains(&("postmaster start time observed before the operation".into(), Some("c-2".into()))),
            "{quiet:?}"
        );
        // Observed: no such check.
        let before = BTreeMap::from([("c-1".to_string(), state(Role::Primary, "2026-01-01 00:00:00"))]);
        let ok = failed(verify_no_restart(&before, &before, &BTreeMap::new()));
        assert!(ok.is_empty(), "{ok:?}");
    }

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

    /// No instance's server log read.
    fn unread() -> BTreeMap<String, MeasuredStarts> {
        BTreeMap::new()
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
        assert!(verify_rollout(&rec, &before(), &later(), &unread()).iter().all(|c| c.ok));
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
        let bad: Vec<_> = verify_rollout(&rec, &before(), &after, &unread()).into_iter().filter(|c| !c.ok).collect();
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
        assert!(verify_rollout(&rec, &before(), &switched, &unread()).iter().all(|c| c.ok));
        // Equal start times (seconds from the kubelet) contradict nothing.
        let tie: BTreeMap<String, InstanceState> = [
            ("c-1".to_string(), at(Role::Primary, "2026-01-01 00:00:06+00")),
            ("c-2".to_string(), at(Role::Replica, "2026-01-01 00:00:06+00")),
        ]
        .into();
        assert!(verify_rollout(&rec, &before(), &tie, &unread()).iter().all(|c| c.ok));
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
            let checks = verify_rollout(
                &rec,
                &one(role, "2026-01-01 00:00:00+00"),
                &one(role, "2026-01-01 00:00:01+00"),
                &unread(),
            );
            assert!(checks.iter().all(|c| c.ok), "{checks:#?}");
        }
    }

    #[test]
    fn a_record_in_the_wrong_order_fails_too() {
        let rec = RolloutRecord {
            restarts: vec![restart("c-1", Role::Primary), restart("c-2", Role::Replica)],
            phases: vec![],
        };
        let bad: Vec<_> = verify_rollout(&rec, &before(), &later(), &unread()).into_iter().filter(|c| !c.ok).collect();
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
        assert!(verify_rollout(&rec, &before(), &later(), &unread())
            .iter()
            .any(|c| !c.ok && c.instance.as_deref() == Some("c-2")));
        let none = RolloutRecord::default();
        assert!(verify_rollout(&none, &before(), &before(), &unread()).iter().filter(|c| !c.ok).count() >= 4);
    }

    /// The start-time checks of `verify_no_restart` (every other one is the log's).
    fn start_time_checks(checks: &[Check]) -> Vec<&Check> {
        checks.iter().filter(|c| c.what == "not restarted (pg_postmaster_start_time unchanged)").collect()
    }

    #[test]
    fn unchanged_start_time_is_no_restart() {
        let same = verify_no_restart(&before(), &before(), &unread());
        assert_eq!(same.len(), 4, "{same:#?}");
        assert!(same.iter().all(|c| c.ok));
        let moved = verify_no_restart(&before(), &later(), &unread());
        let moved = start_time_checks(&moved);
        assert_eq!(moved.len(), 2, "{moved:#?}");
        assert!(moved.iter().all(|c| !c.ok));
        assert_eq!(moved[0].actual, "2026-01-01 00:00:05+00");
        let gone = verify_no_restart(&before(), &BTreeMap::new(), &unread());
        assert!(start_time_checks(&gone).iter().all(|c| !c.ok && c.actual == "(gone)"), "{gone:#?}");
    }

    /// `n` postmaster starts, as a server log records them (seconds `0..n`, pids `100+i`).
    fn starts(n: usize) -> MeasuredStarts {
        let log: String = (0..n)
            .map(|i| format!("2026-01-01 00:00:0{i}.000 UTC [{}] LOG:  starting PostgreSQL 18.1 on x\n", 100 + i))
            .collect();
        MeasuredStarts::Logged(crate::serverlog::logged_starts(&log))
    }

    fn measured(c1: MeasuredStarts, c2: MeasuredStarts) -> BTreeMap<String, MeasuredStarts> {
        [("c-1".to_string(), c1), ("c-2".to_string(), c2)].into()
    }

    fn good_record() -> RolloutRecord {
        RolloutRecord { restarts: vec![restart("c-2", Role::Replica), restart("c-1", Role::Primary)], phases: vec![] }
    }

    /// The checks that failed, as (what, instance, expected, actual).
    fn failing(checks: Vec<Check>) -> Vec<(String, Option<String>, String, String)> {
        checks.into_iter().filter(|c| !c.ok).map(|c| (c.what, c.instance, c.expected, c.actual)).collect()
    }

    fn once(name: &str, actual: &str) -> (String, Option<String>, String, String) {
        ("restarted exactly once".into(), Some(name.into()), "1".into(), actual.into())
    }

    #[test]
    fn restarted_exactly_once_is_the_starts_the_server_log_shows() {
        let checks = verify_rollout(&good_record(), &before(), &later(), &measured(starts(1), starts(1)));
        assert!(checks.iter().all(|c| c.ok), "{checks:#?}");
        assert_eq!(checks[0].actual, "1 (logged: 2026-01-01 00:00:00.000 UTC [100])");
        // Started twice, recorded once: the record does not hide it.
        let twice = verify_rollout(&good_record(), &before(), &later(), &measured(starts(1), starts(2)));
        assert_eq!(
            failing(twice),
            [once(
                "c-2",
                "2 (logged: 2026-01-01 00:00:00.000 UTC [100], 2026-01-01 00:00:01.000 UTC [101]); \
                 the backend's record lists 1"
            )]
        );
        // Recorded, never started: the log shows no start.
        let never = verify_rollout(&good_record(), &before(), &later(), &measured(starts(0), starts(1)));
        assert_eq!(failing(never), [once("c-1", "0; the backend's record lists 1")]);
        // Started once, recorded twice or not at all: the record and the log disagree.
        let mut rec = good_record();
        rec.restarts.insert(0, restart("c-2", Role::Replica));
        let recorded_twice = verify_rollout(&rec, &before(), &later(), &measured(starts(1), starts(1)));
        assert_eq!(
            failing(recorded_twice),
            [once("c-2", "1 (logged: 2026-01-01 00:00:00.000 UTC [100]); the backend's record lists 2")]
        );
        let rec = RolloutRecord { restarts: vec![restart("c-2", Role::Replica)], phases: vec![] };
        let unrecorded = verify_rollout(&rec, &before(), &later(), &measured(starts(1), starts(1)));
        assert_eq!(
            failing(unrecorded),
            [once("c-1", "1 (logged: 2026-01-01 00:00:00.000 UTC [100]); the backend's record lists 0")]
        );
    }

    #[test]
    fn without_a_server_log_the_record_counts_and_the_check_says_so() {
        let why = || MeasuredStarts::NotMeasured("server log before: none".into());
        let checks = verify_rollout(&good_record(), &before(), &later(), &measured(why(), starts(1)));
        assert!(checks.iter().all(|c| c.ok), "{checks:#?}");
        assert_eq!(checks[0].actual, "1 in the backend's record (not measured: server log before: none)");
        let unread = verify_rollout(&good_record(), &before(), &later(), &unread());
        assert!(unread.iter().all(|c| c.ok), "{unread:#?}");
        assert_eq!(unread[2].actual, "1 in the backend's record (not measured: its server log was not read)");
        let mut rec = good_record();
        rec.restarts.insert(0, restart("c-2", Role::Replica));
        let twice = verify_rollout(&rec, &before(), &later(), &measured(starts(1), why()));
        assert_eq!(failing(twice), [once("c-2", "2 in the backend's record (not measured: server log before: none)")]);
    }

    #[test]
    fn no_restart_shows_no_start_in_the_server_log() {
        let log_checks = |m| -> Vec<Check> {
            verify_no_restart(&before(), &before(), &m)
                .into_iter()
                .filter(|c| c.what == "no postmaster start in the server log")
                .collect()
        };
        let none = log_checks(measured(starts(0), starts(0)));
        assert_eq!(none.len(), 2);
        assert!(none.iter().all(|c| c.ok && c.expected == "0" && c.actual == "0"), "{none:#?}");
        let one = log_checks(measured(starts(0), starts(1)));
        assert_eq!(
            failing(one),
            [(
                "no postmaster start in the server log".into(),
                Some("c-2".into()),
                "0".into(),
                "1 (logged: 2026-01-01 00:00:00.000 UTC [100])".into()
            )]
        );
        let unknown = log_checks(measured(MeasuredStarts::NotMeasured("no log".into()), starts(0)));
        assert!(unknown[0].ok && unknown[0].actual == "not measured: no log", "{unknown:#?}");
        let unread = log_checks(unread());
        assert!(unread.iter().all(|c| c.ok && c.actual == "not measured: its server log was not read"), "{unread:#?}");
    }
}
