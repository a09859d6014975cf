//! Waits: small composable conditions with a deadline and a description of what is
//! awaited (kube-rs `runtime::wait::Condition` style). A timeout says what was awaited and
//! the last state seen.
//!
//! These waits poll (`get`) once per `Timeouts::poll`: they wait for one state (ready,
//! applied), and missing an intermediate one costs nothing. Rollouts, where every
//! intermediate pod matters, are watched instead (`crate::watch`). Time is `tokio::time`,
//! so tests run with paused time.

use std::future::Future;
use std::time::Duration;

use cnpg_ext_model::backend::BackendError;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DynamicObject};
use serde_json::Value;

use crate::errors::kube_error;

/// What a probe saw: done (with a value), or not yet (with the state to report).
#[derive(Debug, Clone, PartialEq)]
pub enum Probe<T> {
    Done(T),
    Pending(String),
}

type Check<K> = Box<dyn Fn(Option<&K>) -> bool + Send + Sync>;
type State<K> = Box<dyn Fn(Option<&K>) -> String + Send + Sync>;

/// A condition on an object of type `K` (absent objects are `None`).
pub struct Condition<K> {
    pub description: String,
    check: Check<K>,
    state: State<K>,
}

impl<K: 'static> Condition<K> {
    pub fn new(
        description: impl Into<String>,
        check: impl Fn(Option<&K>) -> bool + Send + Sync + 'static,
        state: impl Fn(Option<&K>) -> String + Send + Sync + 'static,
    ) -> Self {
        Condition {
            description: description.into(),
            check: Box::new(check),
            state: Box::new(state),
        }
    }
    pub fn matches(&self, obj: Option<&K>) -> bool {
        (self.check)(obj)
    }
    pub fn state(&self, obj: Option<&K>) -> String {
        (self.state)(obj)
    }
    /// Both conditions; the state shows both.
    #[cfg(feature = "testing")]
    pub fn and(self, other: Condition<K>) -> Condition<K> {
        let description = format!("{} and {}", self.description, other.description);
        let (c1, c2, s1, s2) = (self.check, other.check, self.state, other.state);
        Condition {
            description,
            check: Box::new(move |o| c1(o) && c2(o)),
            state: Box::new(move |o| {
                let (a, b) = (s1(o), s2(o));
                if a == b {
                    a
                } else {
                    format!("{a}; {b}")
                }
            }),
        }
    }
}

/// Polls `probe` every `poll` until it is done or `timeout` passes.
pub async fn poll_until<T, F, Fut>(
    what: &str,
    timeout: Duration,
    poll: Duration,
    mut probe: F,
) -> Result<T, BackendError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Probe<T>, BackendError>>,
{
    let start = tokio::time::Instant::now();
    let deadline = start + timeout;
    loop {
        let last = match probe().await? {
            Probe::Done(v) => return Ok(v),
            Probe::Pending(s) => s,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(BackendError::Failed(format!(
                "timed out after {}s waiting for {what}; last state: {last}",
                timeout.as_secs_f64()
            )));
        }
        tokio::time::sleep(poll.max(Duration::from_millis(1))).await;
    }
}

/// Runs `request` again while it fails with a 403 that clears by itself (see
/// [`crate::errors::Forbidden`]), every second, for at most `retry`; any other result at
/// once. The last error is returned when the time is up.
pub async fn retry_forbidden<T, F, Fut>(
    what: &str,
    retry: Duration,
    mut request: F,
) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let deadline = tokio::time::Instant::now() + retry;
    loop {
        match request().await {
            Err(e) => match crate::errors::transient_forbidden(&e) {
                Some(kind) if tokio::time::Instant::now() < deadline => {
                    tracing::info!("{what}: {kind:?} ({e}); retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                _ => return Err(e),
            },
            ok => return ok,
        }
    }
}

/// Waits until `cond` holds for the object `name` read through `api`.
pub async fn await_object<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    cond: &Condition<K>,
    timeout: Duration,
    poll: Duration,
) -> Result<K, BackendError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + 'static,
{
    let desc = format!("{what}: {}", cond.description);
    poll_until(&desc, timeout, poll, || async {
        let obj = api
            .get_opt(name)
            .await
            .map_err(|e| kube_error(format!("reading {what}"), e))?;
        if cond.matches(obj.as_ref()) {
            Ok(Probe::Done(obj.expect(
                "a condition that matches an absent object is not used with await_object",
            )))
        } else {
            Ok(Probe::Pending(cond.state(obj.as_ref())))
        }
    })
    .await
}

pub const HEALTHY: &str = "Cluster in healthy state";

fn status_field<'a>(o: &'a DynamicObject, f: &str) -> Option<&'a Value> {
    o.data.get("status").and_then(|s| s.get(f))
}

/// `status.readyInstances == instances` and `status.phase == "Cluster in healthy state"`.
pub fn cluster_ready(instances: u32) -> Condition<DynamicObject> {
    Condition::new(
        format!("{instances} ready instance(s) and phase \"{HEALTHY}\""),
        move |o| {
            o.is_some_and(|o| {
                status_field(o, "readyInstances").and_then(Value::as_u64) == Some(instances as u64)
                    && status_field(o, "phase").and_then(Value::as_str) == Some(HEALTHY)
            })
        },
        move |o| cluster_state(o, instances),
    )
}

pub fn cluster_state(o: Option<&DynamicObject>, instances: u32) -> String {
    match o {
        None => "the Cluster does not exist".into(),
        Some(o) => {
            let phase = status_field(o, "phase")
                .and_then(Value::as_str)
                .unwrap_or("<no phase yet>");
            let ready = status_field(o, "readyInstances")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let reason = status_field(o, "phaseReason")
                .and_then(Value::as_str)
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            format!("phase \"{phase}\"{reason}, readyInstances {ready}/{instances}")
        }
    }
}

/// Where a Database stands, as the operator writes its status (cloudnative-pg
/// `api/v1/database_funcs.go`): success sets `applied: true`, clears `message` and sets
/// `observedGeneration`; failure sets `applied: false` and `message` and leaves
/// `observedGeneration` alone (`internal/management/controller/database_controller.go`
/// then requeues the Database every 30 s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseState {
    /// Applied for the current generation.
    Applied,
    /// `applied: false` with this message (possibly about an earlier generation).
    Failing(String),
    /// Not reconciled yet; the state for messages.
    Pending(String),
}

pub fn database_state_of(o: Option<&DynamicObject>) -> DatabaseState {
    let Some(obj) = o else {
        return DatabaseState::Pending(database_state(o));
    };
    let gen = obj.metadata.generation.unwrap_or(0);
    let observed = status_field(obj, "observedGeneration")
        .and_then(Value::as_i64)
        .unwrap_or(-1);
    let applied = status_field(obj, "applied").and_then(Value::as_bool);
    let message = status_field(obj, "message")
        .and_then(Value::as_str)
        .unwrap_or("");
    match applied {
        Some(true) if observed >= gen => DatabaseState::Applied,
        Some(false) if !message.is_empty() => DatabaseState::Failing(message.to_string()),
        _ => DatabaseState::Pending(database_state(o)),
    }
}

/// Waits for a Database to be applied for its current generation. A failure is final once
/// it has been reported for `retry` (longer than the operator's 30 s requeue, so the
/// operator has retried the current generation at least once and failed again): the
/// object is returned and the caller reports the operator's message. A success in
/// between wins. Nothing at all within `timeout` is a timeout naming the last state.
pub async fn await_database(
    api: &Api<DynamicObject>,
    name: &str,
    what: &str,
    timeout: Duration,
    retry: Duration,
    poll: Duration,
) -> Result<DynamicObject, BackendError> {
    let start = tokio::time::Instant::now();
    let mut failing_since: Option<(tokio::time::Instant, String)> = None;
    loop {
        let obj = api
            .get_opt(name)
            .await
            .map_err(|e| kube_error(format!("reading {what}"), e))?;
        let now = tokio::time::Instant::now();
        let last = match database_state_of(obj.as_ref()) {
            DatabaseState::Applied => return Ok(obj.expect("applied implies present")),
            DatabaseState::Failing(msg) => {
                let since = match &failing_since {
                    Some((t, m)) if *m == msg => *t,
                    _ => {
                        failing_since = Some((now, msg.clone()));
                        now
                    }
                };
                if now.duration_since(since) >= retry {
                    return Ok(obj.expect("failing implies present"));
                }
                database_state(obj.as_ref())
            }
            DatabaseState::Pending(state) => {
                failing_since = None;
                state
            }
        };
        if now.duration_since(start) >= timeout {
            return Err(BackendError::Failed(format!(
                "timed out after {}s waiting for {what}: status.applied for the current generation; last state: {last}",
                timeout.as_secs_f64()
            )));
        }
        tokio::time::sleep(poll.max(Duration::from_millis(1))).await;
    }
}

pub fn database_state(o: Option<&DynamicObject>) -> String {
    match o {
        None => "the Database does not exist".into(),
        Some(o) => {
            let applied = status_field(o, "applied")
                .map(|v| v.to_string())
                .unwrap_or_else(|| "unset".into());
            let msg = status_field(o, "message")
                .and_then(Value::as_str)
                .unwrap_or("");
            let observed = status_field(o, "observedGeneration")
                .map(|v| v.to_string())
                .unwrap_or_else(|| "unset".into());
            format!(
                "applied={applied}, observedGeneration={observed}, generation={}, message \"{msg}\"",
                o.metadata.generation.unwrap_or(0)
            )
        }
    }
}

/// Deployment rolled out and available (all replicas updated and available).
pub fn deployment_available() -> Condition<Deployment> {
    Condition::new(
        "all replicas updated and available",
        |o: Option<&Deployment>| {
            o.is_some_and(|d| {
                let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                let st = d.status.clone().unwrap_or_default();
                st.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
                    && st.updated_replicas.unwrap_or(0) >= want
                    && st.available_replicas.unwrap_or(0) >= want
                    && st.unavailable_replicas.unwrap_or(0) == 0
            })
        },
        |o: Option<&Deployment>| match o {
            None => "the Deployment does not exist".into(),
            Some(d) => {
                let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                let st = d.status.clone().unwrap_or_default();
                let conds: Vec<String> = st
                    .conditions
                    .unwrap_or_default()
                    .into_iter()
                    .map(|c| {
                        format!(
                            "{}={}{}",
                            c.type_,
                            c.status,
                            c.message.map(|m| format!(" ({m})")).unwrap_or_default()
                        )
                    })
                    .collect();
                format!(
                    "replicas wanted {want}, updated {}, available {}; conditions: [{}]",
                    st.updated_replicas.unwrap_or(0),
                    st.available_replicas.unwrap_or(0),
                    conds.join(", ")
                )
            }
        },
    )
}
