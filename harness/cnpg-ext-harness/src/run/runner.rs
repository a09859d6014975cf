//! Runs one scenario's steps against a backend and records, for each step, what was expected
//! and what was seen. The first failing step fails the scenario; later steps are skipped.

use std::time::Instant;

use cnpg_ext_backend::Backend;

use cnpg_ext_model::backend::{ApplyOutcome, BackendError, Role};
use cnpg_ext_model::cluster::Manifest;
use cnpg_ext_model::scenario::{ApplyStep, DatabaseExpect, LocatedStep, Rollout, SqlStep, Step, Target};
use cnpg_ext_model::{Change, Cluster, ClusterDoc, ClusterPlan, DatabaseDoc, PlanOptions, Scenario};

use super::serverlogs;
use crate::images::store::ImageStore;
use crate::plumbing::sql;
use crate::reports::run::{Status, StepResult};
use crate::verify::{self, origin, Check};

/// What a step produced before it is judged.
#[derive(Default)]
struct Outcome {
    checks: Vec<Check>,
    message: Option<String>,
}

impl Outcome {
    fn check(&mut self, c: Check) {
        self.checks.push(c);
    }
    fn checks(&mut self, cs: impl IntoIterator<Item = Check>) {
        self.checks.extend(cs);
    }
}

/// Drives one scenario on one backend.
pub(crate) struct ScenarioRun<'a> {
    pub scenario: &'a Scenario,
    pub images: &'a ImageStore,
    pub backend: &'a mut dyn Backend,
    applied: Option<Cluster>,
    /// Instances of the running SQL step and their extensions before it.
    pending_origin: Vec<(String, Role, Vec<origin::Installed>)>,
}

impl<'a> ScenarioRun<'a> {
    pub(crate) fn new(scenario: &'a Scenario, images: &'a ImageStore, backend: &'a mut dyn Backend) -> Self {
        ScenarioRun { scenario, images, backend, applied: None, pending_origin: Vec::new() }
    }

    /// Runs every step; `on_step` is told each step's title as it starts.
    pub(crate) async fn run(&mut self, on_step: &(dyn Fn(&str) + Send + Sync)) -> Vec<StepResult> {
        let mut results = Vec::new();
        // What the modelled release ignores (1.29 fields against 1.28, …) cannot pass there:
        // one clear finding, and nothing runs.
        let mut failed = !self.scenario.unsupported.is_empty();
        if failed {
            let findings: Vec<String> = self.scenario.unsupported.iter().map(ToString::to_string).collect();
            results.push(StepResult {
                index: 0,
                line: 1,
                kind: "unsupported".into(),
                title: "the scenario uses what this CloudNativePG release ignores".into(),
                status: Status::Failed,
                duration_ms: 0,
                expected: Some("every field the scenario uses is applied by the operator".into()),
                actual: Some(findings.join("; ")),
                message: Some(findings.join("\n")),
                checks: Vec::new(),
                category: Some(crate::reports::category::Category::EnvironmentUnsupported),
                evidence: vec![crate::reports::category::Evidence::new("unsupported", None, findings.join("\n"))],
            });
        }
        for ls in &self.scenario.steps {
            let title = ls.step.title();
            let mut r = StepResult {
                index: ls.index,
                line: ls.line,
                kind: ls.step.kind().into(),
                title: title.clone(),
                status: Status::Skipped,
                duration_ms: 0,
                expected: None,
                actual: None,
                message: None,
                checks: Vec::new(),
                category: None,
                evidence: Vec::new(),
            };
            if failed {
                results.push(r);
                continue;
            }
            on_step(&title);
            let started = Instant::now();
            let outcome = self.step(ls).await;
            r.duration_ms = started.elapsed().as_millis() as u64;
            let unusable = matches!(outcome, Err(BackendError::Unusable(_)));
            match outcome {
                Ok(o) if o.checks.is_empty() => {
                    r.status = Status::Failed;
                    r.message = Some(format!(
                        "the step made no check{}: a step that proves nothing cannot pass",
                        o.message.map(|m| format!(" ({m})")).unwrap_or_default()
                    ));
                }
                Ok(o) => {
                    let bad: Vec<&Check> = o.checks.iter().filter(|c| !c.ok).collect();
                    if bad.is_empty() {
                        r.status = Status::Passed;
                    } else {
                        r.status = Status::Failed;
                        r.expected = Some(bad.iter().map(|c| line_of(c, &c.expected)).collect::<Vec<_>>().join("\n"));
                        r.actual = Some(bad.iter().map(|c| line_of(c, &c.actual)).collect::<Vec<_>>().join("\n"));
                    }
                    r.message = o.message;
                    r.checks = o.checks;
                }
                Err(e) => {
                    r.status = Status::Failed;
                    r.message = Some(e.to_string());
                }
            }
            failed = r.status == Status::Failed;
            if failed {
                super::evidence::attach(&mut r, unusable, &*self.backend, self.applied.as_ref()).await;
            }
            results.push(r);
        }
        results
    }

    async fn step(&mut self, ls: &LocatedStep) -> Result<Outcome, BackendError> {
        match &ls.step {
            Step::Apply(a) => self.apply(a).await,
            Step::Sql(s) => self.sql(s).await,
            Step::Restart(_) => self.restart().await,
            Step::Verify(_) => {
                let cluster = self.applied.clone().ok_or_else(|| BackendError::Failed("nothing applied yet".into()))?;
                let mut o = Outcome::default();
                o.checks(verify::verify_plan(&*self.backend, &cluster, self.images).await?);
                Ok(o)
            }
        }
    }

    async fn apply(&mut self, a: &ApplyStep) -> Result<Outcome, BackendError> {
        let mut o = Outcome::default();
        let docs = self.scenario.manifests.get(&a.file).cloned().unwrap_or_default();
        for doc in docs {
            match doc {
                Manifest::Cluster(c) => {
                    match &a.error {
                        None => self.apply_cluster(&c, a.rollout, &mut o).await?,
                        Some(want) => {
                            let result = self.backend.apply_cluster(&c).await;
                            self.applied = Some(c.cluster.clone());
                            let expected = format!("the apply fails with an error containing {want:?}");
                            o.check(match result {
                                Ok(outcome) => Check::that(
                                    "apply fails",
                                    None,
                                    expected,
                                    format!("it succeeded: {}", outcome_name(&outcome)),
                                    false,
                                ),
                                Err(e) => {
                                    let msg = e.to_string();
                                    Check::that("apply fails", None, expected, msg.clone(), msg.contains(want.as_str()))
                                }
                            });
                        }
                    }
                    self.note_pull_policy(&c.cluster, &mut o);
                }
                Manifest::Database(d) => self.apply_database(&d, a.expect.as_ref(), &mut o).await?,
                // Catalogs are resolved into each Cluster's extension list when the scenario
                // loads (as the operator resolves them); the stand-in has nothing to apply.
                // A real cluster gets the catalog; the stand-ins resolved it when the scenario
                // loaded.
                Manifest::Catalog(c) => self.backend.apply_catalog(&c).await?,
                Manifest::Other { .. } => {}
            }
        }
        Ok(o)
    }

    /// A Database reconciled by the operator (or its stand-in): the status it ends in is
    /// judged against `expect` (default: applied), then the origin of what it created.
    async fn apply_database(
        &mut self,
        d: &DatabaseDoc,
        expect: Option<&DatabaseExpect>,
        o: &mut Outcome,
    ) -> Result<(), BackendError> {
        let db = d.database.spec.name.clone();
        let name = &d.database.metadata.name;
        // A database the reconciliation creates starts as a copy of template1.
        let before = match self.installed_on_primary(&db).await {
            Ok(b) => b,
            Err(_) => self.installed_on_primary("template1").await.unwrap_or_default(),
        };
        let result = self.backend.apply_database(d).await;
        let what = format!("Database {name} status");
        match (result, expect) {
            (Ok(messages), None | Some(DatabaseExpect { applied: true, .. })) => {
                // Measured, not taken from the backend's word: the database is there.
                let primary = verify::primary(&*self.backend).await?;
                let client = self.backend.connect(&primary, "postgres", "postgres").await?;
                let q = format!(
                    "SELECT count(*) FROM pg_database WHERE datname = {}",
                    crate::plumbing::sql::quote_literal(&db)
                );
                let rows = crate::plumbing::sql::query_text(&client, &q)
                    .await
                    .map_err(|e| BackendError::Failed(crate::plumbing::sql::describe_error(&e)))?;
                let exists = rows.first().and_then(|r| r.first().cloned().flatten()).as_deref() == Some("1");
                let actual = if exists {
                    "applied: true".to_string()
                } else {
                    format!("reported applied, but database {db} does not exist on {primary}")
                };
                o.check(Check::new(what, None, "applied: true", actual));
                o.message = Some(messages.join("; "));
            }
            (Ok(messages), Some(DatabaseExpect { applied: false, message })) => {
                let want = message.clone().unwrap_or_default();
                o.check(Check::that(
                    what,
                    None,
                    format!("applied: false, message containing {want:?}"),
                    format!("applied: true ({})", messages.join("; ")),
                    false,
                ));
            }
            (Err(BackendError::Unusable(m)), _) => return Err(BackendError::Unusable(m)),
            (Err(e), Some(DatabaseExpect { applied: false, message })) => {
                let (want, got) = (message.clone().unwrap_or_default(), e.to_string());
                o.check(Check::that(
                    what,
                    None,
                    format!("applied: false, message containing {want:?}"),
                    format!("applied: false, message: {got}"),
                    got.contains(&want),
                ));
                if got.contains(&want) {
                    o.message = Some(format!("reconciliation failed as expected: {got}"));
                }
                return Ok(());
            }
            (Err(e), _) => {
                o.check(Check::that(what, None, "applied: true", format!("applied: false, message: {e}"), false));
                return Ok(());
            }
        }
        let after = self.installed_on_primary(&db).await?;
        let created: Vec<String> = origin::changed(&before, &after).into_iter().map(|e| e.name).collect();
        let primary = verify::primary(&*self.backend).await?;
        o.checks(self.origin_checks(&primary, &db, &created).await?);
        Ok(())
    }

    /// `pullPolicy` is kubelet's: on backends that never pull, say so instead of ignoring it.
    fn note_pull_policy(&self, cluster: &Cluster, o: &mut Outcome) {
        if self.backend.name() == "kind" {
            return;
        }
        let set: Vec<String> = cluster
            .spec
            .postgresql
            .extensions
            .iter()
            .filter_map(|e| e.image.pull_policy.as_ref().map(|p| format!("{}: {p}", e.name)))
            .collect();
        if !set.is_empty() {
            let note = format!(
                "pullPolicy ({}) does not apply on the {} backend: images are prepared by the harness, never pulled",
                set.join(", "),
                self.backend.name()
            );
            o.message = Some(match o.message.take() {
                Some(m) => format!("{m}; {note}"),
                None => note,
            });
        }
    }

    async fn apply_cluster(
        &mut self,
        doc: &ClusterDoc,
        rollout: Option<Rollout>,
        o: &mut Outcome,
    ) -> Result<(), BackendError> {
        let cluster = &doc.cluster;
        let Some(prev) = self.applied.clone() else {
            let outcome = self.backend.apply_cluster(doc).await?;
            o.check(Check::new("cluster created", None, "created", outcome_name(&outcome)));
            self.applied = Some(cluster.clone());
            return Ok(());
        };
        let derive = |c: &Cluster| ClusterPlan::derive(c, &PlanOptions::default());
        let change = Change::between(&derive(&prev), &derive(cluster));
        let expected = rollout.unwrap_or(if change.restarts() { Rollout::Expected } else { Rollout::None });
        let before = verify::start_times(&*self.backend).await?;
        let logs_before = serverlogs::read(&*self.backend).await?;
        let token = format!("{}-{}", self.scenario.id, chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default());
        verify::write_sentinel(&*self.backend, &token).await?;
        let outcome = self.backend.apply_cluster(doc).await?;
        self.applied = Some(cluster.clone());
        let after = verify::start_times(&*self.backend).await?;
        let starts = serverlogs::starts(&logs_before, &serverlogs::read(&*self.backend).await?);
        match (expected, &outcome) {
            (Rollout::Expected, ApplyOutcome::RolledOut { record }) => {
                o.checks(verify::verify_rollout(record, &before, &after, &starts));
                o.message = Some(describe_rollout(record));
            }
            (Rollout::Expected, other) => {
                o.check(Check::new("rolling update", None, "rolled_out", outcome_name(other)));
                let none = cnpg_ext_model::backend::RolloutRecord::default();
                o.checks(verify::verify_rollout(&none, &before, &after, &starts));
            }
            (Rollout::None, ApplyOutcome::RolledOut { record }) => {
                o.check(Check::new("no rolling update", None, "no restart", describe_rollout(record)));
            }
            (Rollout::None, _) => {
                o.message = Some(format!("applied: {}", outcome_name(&outcome)));
                o.checks(verify::verify_no_restart(&before, &after, &starts));
            }
        }
        o.checks(verify::check_sentinel(&*self.backend, &token).await?);
        Ok(())
    }

    async fn restart(&mut self) -> Result<Outcome, BackendError> {
        let mut o = Outcome::default();
        let before = verify::start_times(&*self.backend).await?;
        let logs_before = serverlogs::read(&*self.backend).await?;
        let token =
            format!("{}-restart-{}", self.scenario.id, chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default());
        verify::write_sentinel(&*self.backend, &token).await?;
        let record = self.backend.restart().await?;
        let after = verify::start_times(&*self.backend).await?;
        let starts = serverlogs::starts(&logs_before, &serverlogs::read(&*self.backend).await?);
        o.checks(verify::verify_rollout(&record, &before, &after, &starts));
        o.checks(verify::check_sentinel(&*self.backend, &token).await?);
        o.message = Some(describe_rollout(&record));
        Ok(o)
    }

    async fn sql(&mut self, s: &SqlStep) -> Result<Outcome, BackendError> {
        let mut o = self.sql_statement(s).await?;
        let (skip, expect_failure) = match &s.origin {
            Some(spec) => (spec.skip.clone(), spec.expect_failure.clone()),
            None => (None, None),
        };
        if let Some(reason) = skip {
            o.message = Some(format!("origin not checked: {reason}"));
            return Ok(o);
        }
        let mut checks = Vec::new();
        for (inst, role, before) in std::mem::take(&mut self.pending_origin) {
            let after = {
                let client = self.backend.connect(&inst, &s.database, "postgres").await?;
                origin::installed(&client).await?
            };
            let names: Vec<String> = if role == Role::Primary {
                origin::changed(&before, &after).into_iter().map(|e| e.name).collect()
            } else if s.error.is_none() {
                // A replica creates nothing: prove where what it just used comes from.
                self.claimed_by_images(&inst, after.iter().map(|e| e.name.clone()))
            } else {
                Vec::new()
            };
            checks.extend(self.origin_checks(&inst, &s.database, &names).await?);
        }
        match expect_failure {
            None => o.checks(checks),
            Some(want) => {
                let (check, message) = expected_origin_failure(&checks, &want);
                if message.is_some() {
                    o.message = message;
                }
                o.check(check);
            }
        }
        Ok(o)
    }

    /// The extensions of `database` on the primary (empty when the database does not exist yet).
    async fn installed_on_primary(&self, database: &str) -> Result<Vec<origin::Installed>, BackendError> {
        let primary = verify::primary(&*self.backend).await?;
        let client = self.backend.connect(&primary, database, "postgres").await?;
        origin::installed(&client).await
    }

    /// Names among `names` whose control file an image of the applied Cluster ships.
    fn claimed_by_images(&self, instance: &str, names: impl Iterator<Item = String>) -> Vec<String> {
        let Some(cluster) = &self.applied else { return Vec::new() };
        let plan = self.backend.plan_for(cluster, instance);
        let files = |r: &str| self.images.get(r).map(|i| i.files.clone());
        names.filter(|n| origin::expected_control(&plan, &files, n).is_some()).collect()
    }

    async fn origin_checks(
        &self,
        instance: &str,
        database: &str,
        names: &[String],
    ) -> Result<Vec<Check>, BackendError> {
        let Some(cluster) = &self.applied else { return Ok(Vec::new()) };
        let plan = self.backend.plan_for(cluster, instance);
        origin::check_origins(&*self.backend, &plan, self.images, instance, database, names).await
    }

    /// The statement itself on every target instance.
    async fn sql_statement(&mut self, s: &SqlStep) -> Result<Outcome, BackendError> {
        let mut o = Outcome::default();
        let targets: Vec<_> = self
            .backend
            .instances()
            .await?
            .into_iter()
            .filter(|i| match s.on {
                Target::Primary => i.role == Role::Primary,
                Target::Replicas => i.role == Role::Replica,
                Target::All => true,
            })
            .collect();
        if targets.is_empty() {
            o.check(Check::new("instances to run on", None, format!("{:?}", s.on).to_lowercase(), "none"));
        }
        for inst in &targets {
            // What the database holds before: the extensions this step creates are those new after it.
            if s.origin.as_ref().is_none_or(|o| o.skip.is_none()) {
                let before = match inst.role {
                    Role::Primary => match self.backend.connect(&inst.name, &s.database, "postgres").await {
                        Ok(client) => origin::installed(&client).await.unwrap_or_default(),
                        Err(_) => Vec::new(),
                    },
                    Role::Replica => Vec::new(),
                };
                self.pending_origin.push((inst.name.clone(), inst.role, before));
            }
        }
        for inst in targets {
            // Replicas may still be replaying what the primary just wrote.
            let patience = if inst.role == Role::Replica { 10_000 } else { 0 };
            let deadline = Instant::now() + std::time::Duration::from_millis(patience);
            loop {
                let client = self.backend.connect(&inst.name, &s.database, &s.user).await?;
                let result = sql::query_text(&client, &s.query).await;
                let check = judge_sql(s, &inst.name, result);
                if check.ok || Instant::now() >= deadline {
                    o.check(check);
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
        Ok(o)
    }
}

fn judge_sql(s: &SqlStep, instance: &str, result: Result<sql::Rows, tokio_postgres::Error>) -> Check {
    let inst = Some(instance);
    match (result, &s.rows, &s.error) {
        (Ok(rows), Some(want), _) => Check::new("rows", inst, sql::render_rows(want), sql::render_rows(&rows)),
        (Ok(rows), None, Some(want)) => Check::that(
            "error",
            inst,
            format!("an error containing {want:?}"),
            format!("success: {}", sql::render_rows(&rows)),
            false,
        ),
        (Ok(_), None, None) => Check::new("statement succeeded", inst, "success", "success"),
        (Err(e), _, Some(want)) => {
            let msg = sql::describe_error(&e);
            let ok = msg.contains(want.as_str());
            Check::that("error", inst, format!("an error containing {want:?}"), msg, ok)
        }
        (Err(e), Some(want), None) => Check::that("rows", inst, sql::render_rows(want), sql::describe_error(&e), false),
        (Err(e), None, None) => Check::that("statement succeeded", inst, "success", sql::describe_error(&e), false),
    }
}

/// An origin check that must fail with `want`: every origin failure contains it (one match
/// must not hide another failure). The check, and the step's message when it held.
fn expected_origin_failure(checks: &[Check], want: &str) -> (Check, Option<String>) {
    let failing: Vec<&Check> = checks.iter().filter(|c| !c.ok).collect();
    let other = failing.iter().find(|c| !c.actual.contains(want));
    let hit = failing.iter().find(|c| c.actual.contains(want)).filter(|_| other.is_none());
    let actual = match (hit, other.or(failing.first())) {
        (Some(c), _) => line_of(c, &c.actual),
        (None, Some(c)) => format!("another origin failure: {}", line_of(c, &c.actual)),
        (None, None) if checks.is_empty() => "no origin was checked (no extension created)".into(),
        (None, None) => "origin proven: the image under test was used".into(),
    };
    let message = hit.map(|c| format!("origin check failed as expected: {}", line_of(c, &c.actual)));
    let check = Check::that(
        "origin check fails",
        None,
        format!("an origin failure containing {want:?}"),
        actual,
        hit.is_some(),
    );
    (check, message)
}

fn line_of(c: &Check, value: &str) -> String {
    let at = c.instance.as_deref().map(|i| format!(" on {i}")).unwrap_or_default();
    if value.contains('\n') {
        format!("{}{at}:\n  {}", c.what, value.replace('\n', "\n  "))
    } else {
        format!("{}{at}: {value}", c.what)
    }
}

fn outcome_name(o: &ApplyOutcome) -> String {
    match o {
        ApplyOutcome::Created => "created".into(),
        ApplyOutcome::RolledOut { record } => format!("rolled_out ({})", describe_rollout(record)),
        ApplyOutcome::Reloaded => "reloaded (no restart)".into(),
        ApplyOutcome::Unchanged => "unchanged (no restart)".into(),
    }
}

fn describe_rollout(r: &cnpg_ext_model::backend::RolloutRecord) -> String {
    let parts: Vec<String> = r
        .restarts
        .iter()
        .map(|x| format!("{} ({:?}) {}→{}", x.instance, x.role, x.old_id, x.new_id).to_lowercase())
        .collect();
    format!("restarted in order: {}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(actual: &str, ok: bool) -> Check {
        Check::that("origin of vector: control file", Some("c-1"), "x", actual, ok)
    }

    #[test]
    fn every_origin_failure_must_be_the_expected_one() {
        let (check, message) = expected_origin_failure(&[c("/a — shadowed", false), c("ok", true)], "shadowed");
        assert!(check.ok, "{check:?}");
        assert_eq!(check.actual, "origin of vector: control file on c-1: /a — shadowed");
        assert_eq!(
            message.as_deref(),
            Some("origin check failed as expected: origin of vector: control file on c-1: /a — shadowed")
        );
        // The expected failure, and another one beside it: not masked.
        let (check, message) =
            expected_origin_failure(&[c("/a — shadowed", false), c("no control file found", false)], "shadowed");
        assert!(!check.ok, "{check:?}");
        assert!(
            check.actual.starts_with("another origin failure: ") && check.actual.ends_with("no control file found")
        );
        assert_eq!(message, None);
        let (check, _) = expected_origin_failure(&[c("fine", true)], "shadowed");
        assert!(!check.ok && check.actual == "origin proven: the image under test was used", "{check:?}");
        let (check, _) = expected_origin_failure(&[], "shadowed");
        assert!(!check.ok && check.actual.starts_with("no origin was checked"), "{check:?}");
        assert_eq!(check.expected, "an origin failure containing \"shadowed\"");
    }
}
